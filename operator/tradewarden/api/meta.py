"""Resource-level facts for CRD generation: names, scope, printer columns, and the object envelope.

Each kind's module declares one :class:`ResourceInfo`; :mod:`tradewarden.api.crds` turns it and the
kind's spec/status models into a CustomResourceDefinition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tradewarden.api.base import GROUP


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: Literal["string", "integer", "number", "boolean", "date"] = "string"
    description: str = ""
    priority: int = 0

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.description:
            out["description"] = self.description
        if self.priority:
            out["priority"] = self.priority
        return out


@dataclass(frozen=True)
class ResourceInfo:
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    scope: Literal["Namespaced", "Cluster"]
    description: str
    printer_columns: tuple[PrinterColumn, ...] = ()
    categories: tuple[str, ...] = ("trading",)
    #: CEL rules on ``spec`` (``self`` is the spec; ``oldSelf`` makes a transition rule).
    spec_validations: tuple[dict[str, str], ...] = field(default_factory=tuple)
    #: CEL rules on the whole object: ``self.metadata.name`` (and ``generateName``) and ``self.spec`` are
    #: visible there; the API server shows no other metadata field to CEL.
    root_validations: tuple[dict[str, str], ...] = field(default_factory=tuple)

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date")


class ObjectMeta(BaseModel):
    """The parts of metadata the operator reads. Everything else is kept but not typed."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = ""
    namespace: str | None = None
    uid: str = ""
    generation: int = Field(default=0)
    resource_version: str = Field(default="", alias="resourceVersion")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    creation_timestamp: str | None = Field(default=None, alias="creationTimestamp")
    deletion_timestamp: str | None = Field(default=None, alias="deletionTimestamp")
