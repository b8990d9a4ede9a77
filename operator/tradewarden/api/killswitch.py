"""KillSwitch: the emergency brake, cluster-scoped.

Runners watch KillSwitches directly (so a switch works while the operator is down); the operator
folds them into each bot's status and runtime ConfigMap and aggregates acknowledgements here.
A kill switch never clears itself.
"""

from __future__ import annotations

import datetime as dt
import enum

from pydantic import Field

from tradewarden.api.base import WireModel
from tradewarden.api.conditions import Condition
from tradewarden.api.meta import AGE, ObjectMeta, PrinterColumn, ResourceInfo
from tradewarden.api.tradingbot import KillMode


class SelectorOperator(enum.StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(WireModel):
    key: str = Field(min_length=1, max_length=317, description="Label key.")
    operator: SelectorOperator = Field(description="In, NotIn, Exists or DoesNotExist.")
    values: list[str] = Field(default_factory=list, max_length=64, description="Values for In and NotIn.",
                              json_schema_extra={"items": {"type": "string", "maxLength": 63}})


class LabelSelector(WireModel):
    """A standard Kubernetes label selector over TradingBot labels."""

    match_labels: dict[str, str] = Field(default_factory=dict, max_length=32, description="Labels that must match.")
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=16, description="Set-based requirements.")


class KillSwitchSelector(WireModel):
    """Which bots the switch applies to. Empty means every bot in the cluster."""

    namespaces: list[str] = Field(
        default_factory=list, max_length=256, description="Namespaces whose bots match; empty means all.",
        json_schema_extra={"items": {"type": "string", "maxLength": 63}})
    bot_selector: LabelSelector = Field(default_factory=LabelSelector,
                                        description="Label selector over TradingBots; empty matches every bot.")


class TriggerSpec(WireModel):
    """Conditions under which the operator engages this switch by itself (it never clears it)."""

    fleet_drawdown_pct: float | None = Field(
        default=None, gt=0.0, le=100.0,
        description="Engage when the matched bots' aggregate drawdown from their combined equity peak exceeds "
                    "this percentage.")
    max_runners_without_heartbeat: int | None = Field(
        default=None, ge=0, le=100000,
        description="Engage when more than this many matched runners have a stale heartbeat.")
    mode: KillMode = Field(default=KillMode.CLOSE_ONLY, description="Mode to engage when a trigger fires.")


class KillSwitchSpec(WireModel):
    """The brake. Patch mode to engage; a reason helps the next human but is never required to engage."""

    mode: KillMode = Field(default=KillMode.OFF,
                           description="off, close_only (block entries, allow exits), halt_all (block every "
                                       "order) or flatten (close every position reduce-only, then close-only).")
    reason: str = Field(default="", max_length=1024, description="Why the switch is engaged.")
    selector: KillSwitchSelector = Field(default_factory=KillSwitchSelector,
                                         description="Which bots it applies to; empty means all.")
    trigger: TriggerSpec | None = Field(default=None, description="Automatic engagement.")


class KillSwitchStatus(WireModel):
    observed_generation: int = Field(default=0, description="The generation last reconciled.")
    conditions: list[Condition] = Field(
        default_factory=list, max_length=16, description="Engaged, Acknowledged.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
    engaged_at: dt.datetime | None = Field(default=None, description="When the current engagement began.")
    triggered_by: str | None = Field(default=None, max_length=1024,
                                     description="The automatic trigger that engaged the switch, if any.")
    matched: int = Field(default=0, ge=0, description="Bots the switch applies to.")
    acknowledged: int = Field(default=0, ge=0, description="Matched runners that acknowledged the mode.")
    matched_bots: list[str] = Field(default_factory=list, max_length=10000,
                                    description="Matched bots as namespace/name.")
    pending_bots: list[str] = Field(default_factory=list, max_length=10000,
                                    description="Matched bots whose runner has not acknowledged yet.")
    max_ack_latency_ms: float | None = Field(
        default=None, ge=0.0, description="Slowest acknowledgement after engagement, in milliseconds.")
    fleet_equity_peak: float | None = Field(
        default=None, ge=0.0,
        description="Peak of the matched bots' aggregate equity, kept for the fleetDrawdownPct trigger. "
                    "Reset when the set of matched bots changes or the switch is released.")


class KillSwitch(WireModel):
    model_config = {"extra": "ignore"}

    api_version: str = "tradewarden.io/v1alpha1"
    kind: str = "KillSwitch"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: KillSwitchSpec = Field(default_factory=KillSwitchSpec)
    status: KillSwitchStatus = Field(default_factory=KillSwitchStatus)


KILL_SWITCH = ResourceInfo(
    kind="KillSwitch",
    plural="killswitches",
    singular="killswitch",
    short_names=("ks",),
    scope="Cluster",
    description="An emergency brake over matching bots: close_only, halt_all or flatten. Never clears itself.",
    printer_columns=(
        PrinterColumn("Mode", ".spec.mode"),
        PrinterColumn("Matched", ".status.matched", "integer"),
        PrinterColumn("Acked", ".status.acknowledged", "integer"),
        PrinterColumn("Reason", ".spec.reason", priority=1),
        AGE,
    ),
)
