"""GateOverride: an on-call engineer's emergency override of one bot's replay gate (never the consensus).

It is a permission apart from editing bots: RBAC can let an on-call engineer create GateOverrides in a
namespace without letting them edit a single TradingBot. While an override is in force the bot's
``ReplayVerified`` condition is True with reason Overridden and the reviewer consensus votes on the replay
at hand; the consensus itself is never overridden, and nothing else about the bot changes.

An override is short-lived and cannot be stretched: the whole spec is immutable (a CEL transition rule),
so the only way to "extend" one is to delete it and create another, which leaves a trace. ``expiresAt``
must be after the object's ``metadata.creationTimestamp`` and at most :data:`MAX_OVERRIDE_HOURS` after it.
The API server cannot say that: CEL on a custom resource sees only ``metadata.name`` and
``metadata.generateName`` of the metadata (a root rule comparing ``timestamp(self.spec.expiresAt)`` with
``self.metadata.creationTimestamp`` does not compile: "undefined field 'creationTimestamp'", Kubernetes
1.33), and CEL has no clock. So the operator enforces it, with :func:`expiry_problem` and
:func:`effective_until`, and reports a refused override as ``Active=False`` with reason TooLong.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated

from pydantic import Field

from tradewarden.api.base import DateTime, WireModel, visible
from tradewarden.api.conditions import Condition
from tradewarden.api.meta import AGE, ObjectMeta, PrinterColumn, ResourceInfo
from tradewarden.api.tradingbot import BotName

#: The longest an override may last, counted from its metadata.creationTimestamp (enforced by the operator).
MAX_OVERRIDE_HOURS = 4
MAX_OVERRIDE = dt.timedelta(hours=MAX_OVERRIDE_HOURS)

#: The one condition type of a GateOverride's status: True while the override is in force.
CONDITION_ACTIVE = "Active"


class ActiveReason(enum.StrEnum):
    """Reasons of the ``Active`` condition."""

    ACTIVE = "Active"  # True: in force until status.effectiveUntil
    EXPIRED = "Expired"  # False: expiresAt has passed
    TOO_LONG = "TooLong"  # False: expiresAt is not after creation, or more than MAX_OVERRIDE_HOURS after it
    BOT_NOT_FOUND = "BotNotFound"  # False: no TradingBot of that name in the namespace


OverrideReason = Annotated[str, Field(min_length=1, max_length=1024), visible("reason")]
OverrideTicket = Annotated[str, Field(min_length=1, max_length=256), visible("ticket")]

IMMUTABLE_MESSAGE = "a GateOverride cannot be changed; delete it and create a new one"


class GateOverrideSpec(WireModel):
    """Which bot's replay gate to override (never the consensus), why, and until when. Immutable once created."""

    bot_name: str = BotName("Name of the TradingBot in the same namespace whose replay gate is overridden.")
    reason: OverrideReason = Field(
        description="Why the replay gate is overridden (shown in the bot's ReplayVerified condition and "
                    "status.replay.overrideReason); at least one visible character.")
    expires_at: DateTime = Field(
        description=f"When the override ends (RFC 3339). Must be after the object's creation and at most "
                    f"{MAX_OVERRIDE_HOURS} hours after it; the operator refuses a longer one (Active=False, "
                    f"reason TooLong).")
    ticket: OverrideTicket | None = Field(
        default=None, description="Incident or change ticket; when given, at least one visible character.")


class GateOverrideStatus(WireModel):
    """What the operator concluded about the override. Written by the operator only."""

    observed_generation: int = Field(default=0, description="The generation last reconciled.")
    conditions: list[Condition] = Field(
        default_factory=list, max_length=8,
        description="Active: True while the override is in force (reason Active); False with reason Expired, "
                    "TooLong or BotNotFound.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
    effective_until: DateTime | None = Field(
        default=None, description="When the override stops being in force, as the operator computed it.")


class GateOverride(WireModel):
    """A GateOverride object as the API server returns it.

    An on-call engineer's emergency override of one bot's replay gate (never the consensus); a permission
    apart from editing bots. The operator reads ``spec`` and writes ``status``.
    """

    model_config = {"extra": "ignore"}

    api_version: str = "tradewarden.io/v1alpha1"
    kind: str = "GateOverride"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: GateOverrideSpec
    status: GateOverrideStatus = Field(default_factory=GateOverrideStatus)


def expiry_problem(expires_at: dt.datetime, created_at: dt.datetime) -> str | None:
    """Why an override created at ``created_at`` may not expire at ``expires_at`` (reason TooLong), or None."""
    if expires_at <= created_at:
        return "spec.expiresAt must be after the GateOverride's creation"
    if expires_at - created_at > MAX_OVERRIDE:
        return (f"spec.expiresAt may be at most {MAX_OVERRIDE_HOURS} hours after the GateOverride's creation; "
                f"delete it and create one that expires sooner")
    return None


def effective_until(expires_at: dt.datetime, created_at: dt.datetime) -> dt.datetime | None:
    """When an override is in force until, or None when :func:`expiry_problem` refuses it."""
    return None if expiry_problem(expires_at, created_at) else expires_at


GATE_OVERRIDE = ResourceInfo(
    kind="GateOverride",
    plural="gateoverrides",
    singular="gateoverride",
    short_names=("gov",),
    scope="Namespaced",
    description="An on-call engineer's emergency override of one bot's replay gate (never the consensus), for "
                f"at most {MAX_OVERRIDE_HOURS} hours; a permission apart from editing bots. Immutable.",
    printer_columns=(
        PrinterColumn("Bot", ".spec.botName", description="The TradingBot whose replay gate is overridden."),
        PrinterColumn("Expires", ".spec.expiresAt", description="When the override ends."),
        PrinterColumn("Active", '.status.conditions[?(@.type=="Active")].reason',
                      description="Active, Expired, TooLong or BotNotFound."),
        AGE,
    ),
    spec_validations=(
        {"rule": "self == oldSelf", "message": IMMUTABLE_MESSAGE, "reason": "FieldValueForbidden"},
    ),
)
