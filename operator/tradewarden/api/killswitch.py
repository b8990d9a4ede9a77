"""KillSwitch: the emergency brake, cluster-scoped.

Runners watch KillSwitches directly (so a switch works while the operator is down); the operator
folds them into each bot's status and runtime ConfigMap and aggregates acknowledgements here.
A kill switch never clears itself.
"""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import ConfigDict, Field, model_validator

from tradewarden.api.base import (
    DNS_LABEL_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    DateTime,
    EachKey,
    Rule,
    WireModel,
    check_model_rules,
    matching,
    model_rules,
)
from tradewarden.api.conditions import Condition
from tradewarden.api.meta import AGE, ObjectMeta, PrinterColumn, ResourceInfo
from tradewarden.api.tradingbot import KillMode


class SelectorOperator(enum.StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


# Label syntax as Kubernetes checks it (apimachinery's IsQualifiedName and IsValidLabelValue).
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
#: A label key: an optional DNS-subdomain prefix and '/', then a name of at most 63 characters.
LABEL_KEY_PATTERN = f"^({DNS_SUBDOMAIN_PATTERN[1:-1]}/)?{_LABEL_NAME}$"
#: The prefix of a label key is at most 253 characters (RE2 has no look-ahead: a second pattern).
LABEL_KEY_PREFIX_PATTERN = r"^([^/]{1,253}/)?[^/]*$"
#: A label value: empty, or at most 63 characters of the name syntax.
LABEL_VALUE_PATTERN = f"^({_LABEL_NAME})?$"

_key_syntax = matching(LABEL_KEY_PATTERN, "")
_key_prefix = matching(LABEL_KEY_PREFIX_PATTERN, "")
LABEL_KEY_RULE = Rule(
    expr=f"{_key_syntax.expr} && {_key_prefix.expr}",
    message="a label key is an optional DNS subdomain prefix (lower case, at most 253 characters) and '/', then "
            "a name of at most 63 characters: letters, digits, '-', '_' and '.', starting and ending with a "
            "letter or digit",
    check=lambda v: _key_syntax.check(v) and _key_prefix.check(v))

#: A label key (matchLabels keys, matchExpressions[].key).
LabelKey = Annotated[str, Field(min_length=1, max_length=317), LABEL_KEY_RULE]
#: A label value (matchLabels values, matchExpressions[].values[]); empty is a value.
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]
#: A namespace name (a DNS-1123 label).
NamespaceName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]

_SET_OPERATORS = (SelectorOperator.IN, SelectorOperator.NOT_IN)
_REQUIREMENT_RULES = (
    Rule(expr="!(self.operator in ['In', 'NotIn']) || (has(self.values) && size(self.values) > 0)",
         message="operators In and NotIn need at least one value",
         check=lambda r: r.operator not in _SET_OPERATORS or len(r.values) > 0,
         field_path=".values", reason="FieldValueRequired"),
    Rule(expr="self.operator in ['In', 'NotIn'] || !has(self.values) || size(self.values) == 0",
         message="operators Exists and DoesNotExist take no values",
         check=lambda r: r.operator in _SET_OPERATORS or len(r.values) == 0,
         field_path=".values", reason="FieldValueForbidden"),
)


class LabelSelectorRequirement(WireModel):
    """One set-based requirement, as in a Kubernetes label selector."""

    model_config = ConfigDict(json_schema_extra=model_rules(*_REQUIREMENT_RULES))

    key: LabelKey = Field(description="Label key, e.g. team or example.com/tier.")
    operator: SelectorOperator = Field(description="In, NotIn, Exists or DoesNotExist.")
    values: list[LabelValue] = Field(
        default_factory=list, max_length=64,
        description="Values for In and NotIn (at least one); none for Exists and DoesNotExist.")

    @model_validator(mode="after")
    def _operator_and_values_agree(self) -> LabelSelectorRequirement:
        check_model_rules(self, _REQUIREMENT_RULES)
        return self


class LabelSelector(WireModel):
    """A standard Kubernetes label selector over TradingBot labels."""

    match_labels: Annotated[dict[str, LabelValue], EachKey(LABEL_KEY_RULE)] = Field(
        default_factory=dict, max_length=32, description="Labels that must match (key: value).")
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=16, description="Set-based requirements.")


class KillSwitchSelector(WireModel):
    """Which bots the switch applies to. Empty means every bot in the cluster."""

    namespaces: list[NamespaceName] = Field(
        default_factory=list, max_length=256, description="Namespaces whose bots match; empty means all.")
    bot_selector: LabelSelector = Field(default_factory=LabelSelector,
                                        description="Label selector over TradingBots; empty matches every bot.")


_TRIGGER_RULES = (
    Rule(expr="!has(self.mode) || self.mode != 'off'",
         message="a trigger with mode off engages nothing: set close_only, halt_all or flatten, or remove the "
                 "trigger",
         check=lambda t: t.mode != KillMode.OFF, field_path=".mode", reason="FieldValueInvalid"),
)


class TriggerSpec(WireModel):
    """Conditions under which the operator engages this switch by itself (it never clears it)."""

    model_config = ConfigDict(json_schema_extra=model_rules(*_TRIGGER_RULES))

    fleet_drawdown_pct: float | None = Field(
        default=None, gt=0.0, le=100.0,
        description="Engage when the matched bots' aggregate drawdown from their combined equity peak exceeds "
                    "this percentage.")
    max_runners_without_heartbeat: int | None = Field(
        default=None, ge=0, le=100000,
        description="Engage when more than this many matched runners have a stale heartbeat.")
    mode: KillMode = Field(default=KillMode.CLOSE_ONLY,
                           description="Mode to engage when a trigger fires: close_only, halt_all or flatten "
                                       "(off is refused: it would engage nothing).")

    @model_validator(mode="after")
    def _engages_something(self) -> TriggerSpec:
        check_model_rules(self, _TRIGGER_RULES)
        return self


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
    engaged_at: DateTime | None = Field(default=None, description="When the current engagement began.")
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
