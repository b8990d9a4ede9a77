"""The pydantic base for every wire model: camelCase on the wire, snake_case in Python.

Everything under ``tradewarden.api`` derives from :class:`WireModel`. The CRD generator
(:mod:`tradewarden.api.crds`) reads these models, so a field's ``description`` becomes its
``kubectl explain`` text and its bounds become the API server's validation.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

#: The API group and version of every tradewarden custom resource.
GROUP = "tradewarden.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


class WireModel(BaseModel):
    """Base of all spec/status models.

    ``extra="forbid"`` makes a typo in a manifest an error in the operator as well, although the API
    server's strict field validation usually catches it first.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=False,
        validate_default=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """Serialise as the API server stores it: camelCase keys, JSON types, no unset optionals."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def Name(description: str, **kwargs: Any) -> Any:
    """A Kubernetes object name (DNS-1123 subdomain), bounded so CEL cost estimation stays small."""
    return Field(
        description=description,
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        **kwargs,
    )


#: A resource quantity such as ``100m``, ``1``, or ``256Mi``: an integer or a string on the wire.
Quantity = Annotated[
    int | str,
    WithJsonSchema({"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}),
]

#: Free-form JSON object kept as the user wrote it (validated elsewhere, e.g. strategy params).
FreeForm = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
