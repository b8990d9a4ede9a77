"""The operator's half of the kill switch: who is matched, who acknowledged, and automatic triggers.

Pure policy, no I/O, no clock (``now`` is an argument). Called by the KillSwitch reconciler in
:mod:`tradewarden.controller.handlers`. The runners do the braking themselves (they watch the switches
directly, invariant 3); this module only reports on it and, when a trigger fires, asks the reconciler to
engage the switch. It never proposes to clear one: a kill switch never clears itself.

Acknowledgements are matched on the switch's ``metadata.generation`` (see ``KillAck`` in
:mod:`tradewarden.api.runtime`): the resourceVersion changes every time the operator records status,
the generation only when a human (or a trigger) changes the spec.

Acknowledgement latency (``status.maxAckLatencyMs``, and the same figure in the
``KillSwitchAcknowledged`` Event) is measured from when the spec changed *as the API server recorded it*,
never from when the operator noticed: the operator may have been down while runners braked on their own
(invariant 3). The API server records that moment in ``metadata.managedFields``: the entry owning
``f:spec`` with the newest ``time`` (:func:`spec_changed_at`). Those times have whole-second precision,
truncated, so the true change happened in ``[time, time + 1 s)`` and the figure is an upper bound that
overstates by less than one second, never an understatement. It compares the runner's clock (the ack's
``at``) with the API server's; an ack that seems to precede the change it answers gives no figure at all.

A switch that is engaged but matches no bot is not acknowledged (``NoBotsMatched``): a selector with a
typo must not look green.

Fleet drawdown is computed over the matched bots' Lease telemetry: aggregate equity against the peak of
that aggregate, kept in ``status.fleetEquityPeak``. The peak is only meaningful for a fixed set of bots,
so it restarts from the current equity whenever the matched set changes, when not every matched runner
reports equity, and when a human releases the switch (else a cleared switch would re-engage at once on
the same old drawdown).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tradewarden.api.conditions import ConditionStatus, get_condition, set_condition
from tradewarden.api.killswitch import KillSwitch, KillSwitchSelector, KillSwitchStatus
from tradewarden.api.runtime import canonical_json
from tradewarden.api.selectors import selector_matches
from tradewarden.api.tradingbot import KILL_STRENGTH, KillMode
from tradewarden.controller.leases import RunnerObservation, parse_time
from tradewarden.controller.status import EventSpec, normalize_json

KS_OWNED_FIELDS = ("observedGeneration", "conditions", "engagedAt", "triggeredBy", "matched", "acknowledged",
                   "matchedBots", "pendingBots", "maxAckLatencyMs", "fleetEquityPeak")

#: How many pending bots a condition message names before it says "and N more".
MAX_NAMED = 5


@dataclass(frozen=True)
class FleetBot:
    """One bot as a kill switch sees it: where it is, its labels, and what its runner reported."""

    namespace: str
    name: str
    labels: dict[str, str]
    heartbeat_grace_seconds: int
    runner: RunnerObservation

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class SwitchPlan:
    """The switch's new status, and whether a trigger asks to engage it (``engage``, never to clear)."""

    status: KillSwitchStatus
    engage: KillMode | None
    trigger_message: str


def matched_bots(ks: KillSwitch, bots: Sequence[FleetBot]) -> list[FleetBot]:
    return sorted((b for b in bots if selector_matches(ks.spec.selector, b.namespace, b.labels)),
                  key=lambda b: b.key)


def _named(keys: Sequence[str]) -> str:
    head = ", ".join(keys[:MAX_NAMED])
    return head + (f" and {len(keys) - MAX_NAMED} more" if len(keys) > MAX_NAMED else "")


def spec_changed_at(ks: KillSwitch) -> dt.datetime | None:
    """When the switch's spec last changed, as the API server recorded it; None when it did not say.

    The ``metadata.managedFields`` entry whose ``fieldsV1`` owns ``f:spec`` with the newest ``time``: the
    API server moves a manager's ``time`` only when that manager's write changed a field, so this is the
    last write that changed the spec (of any manager, the operator's own trigger engagements included).
    Status writes are entries of the ``status`` subresource and own ``f:status`` only. Whole seconds,
    truncated (RFC 3339 as the API server writes it): the change happened within the second after.
    """
    entries = (ks.metadata.model_extra or {}).get("managedFields")
    newest: dt.datetime | None = None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("subresource"):
            continue
        fields = entry.get("fieldsV1")
        if not isinstance(fields, dict) or "f:spec" not in fields:
            continue
        when = parse_time(entry.get("time"))
        if when is not None and (newest is None or when > newest):
            newest = when
    return newest


def ack_latency_ms(changed: dt.datetime | None, acks: Sequence[dt.datetime]) -> float | None:
    """The slowest acknowledgement in milliseconds after the spec change ``changed``, or None.

    ``changed`` is whole seconds, truncated (see :func:`spec_changed_at`), so the figure overstates the
    true latency by less than one second and never understates it. An ack earlier than ``changed`` cannot
    answer that change: either the recorded time is not the spec change's (the same manager later changed
    something else, which moved its entry's time) or the runner's clock is behind the API server's. Either
    way there is no honest figure, so there is none.
    """
    if changed is None or not acks or min(acks) < changed:
        return None
    return round((max(acks) - changed).total_seconds() * 1000.0, 1)


def format_ms(value: float) -> str:
    """A latency as status shows it (``340``, ``3581.9``): the Event quotes the very same number."""
    return f"{value:.1f}".removesuffix(".0")


def describe_selector(selector: KillSwitchSelector) -> str:
    """The selector in words, for a message: ``namespaces prod, stage; labels team=a; tier In (x, y)``."""
    parts: list[str] = []
    if selector.namespaces:
        parts.append(f"namespaces {_named(selector.namespaces)}")
    labels = [f"{k}={v}" for k, v in sorted(selector.bot_selector.match_labels.items())]
    for req in selector.bot_selector.match_expressions:
        values = f" ({_named(req.values)})" if req.values else ""
        labels.append(f"{req.key} {req.operator.value}{values}")
    if labels:
        parts.append(f"labels {_named(labels)}")
    return "; ".join(parts) or "empty: every bot"


def _no_bots_message(ks: KillSwitch, fleet_size: int) -> str:
    selector = ks.spec.selector
    where = ("there are no TradingBots at all" if fleet_size == 0 else
             f"none of the {fleet_size} TradingBots matches")
    checks = []
    if selector.namespaces:
        checks.append("spec.selector.namespaces against the bots' namespaces")
    if selector.bot_selector.match_labels or selector.bot_selector.match_expressions:
        checks.append("spec.selector.botSelector against the bots' labels")
    what = " and ".join(checks) or "that the bots exist"
    return (f"{ks.spec.mode.value} brakes no bot: the selector ({describe_selector(selector)}) matches nothing, "
            f"{where}; check {what} (kubectl get tradingbots -A --show-labels)")


def _acked(ks: KillSwitch, bot: FleetBot) -> bool:
    ack = bot.runner.kill_acks.get(ks.metadata.name)
    return ack is not None and ack.generation == ks.metadata.generation and ack.mode == ks.spec.mode


def _fleet_drawdown(ks: KillSwitch, matched: Sequence[FleetBot], released: bool,
                    ) -> tuple[float | None, str | None]:
    """(new peak, trigger message or None) for the fleetDrawdownPct trigger."""
    trigger = ks.spec.trigger
    if trigger is None or trigger.fleet_drawdown_pct is None:
        return None, None
    telemetry = [b.runner.telemetry for b in matched]
    if not matched or any(t is None for t in telemetry):
        return None, None
    equity = round(sum(t.equity for t in telemetry if t is not None), 2)
    previous = ks.status.fleet_equity_peak
    same_fleet = ks.status.matched_bots == [b.key for b in matched]
    if previous is None or not same_fleet or released:
        previous = equity
    peak = round(max(previous, equity), 2)
    if peak <= 0:
        return peak, None
    drawdown = (peak - equity) / peak * 100.0
    if drawdown > trigger.fleet_drawdown_pct:
        return peak, (f"fleetDrawdownPct: the {len(matched)} matched bots are {drawdown:.2f}% below their "
                      f"combined equity peak ({equity:.2f} vs {peak:.2f}; limit {trigger.fleet_drawdown_pct}%)")
    return peak, None


def _lost_runners(ks: KillSwitch, matched: Sequence[FleetBot], now: dt.datetime) -> str | None:
    """A runner counts as lost when it did renew once but not within its grace period. One that never
    started is Pending, not lost: counting it would trip the switch every time bots are created."""
    trigger = ks.spec.trigger
    if trigger is None or trigger.max_runners_without_heartbeat is None:
        return None
    stale = [b.key for b in matched if b.runner.heartbeat_stale(now, b.heartbeat_grace_seconds)]
    if len(stale) > trigger.max_runners_without_heartbeat:
        return (f"maxRunnersWithoutHeartbeat: {len(stale)} matched runners have a stale heartbeat "
                f"(more than {trigger.max_runners_without_heartbeat} allowed): {_named(stale)}")
    return None


def compute_killswitch(ks: KillSwitch, bots: Sequence[FleetBot], now: dt.datetime) -> SwitchPlan:
    """The switch's status from the fleet's Leases, and whether a trigger fires."""
    gen = ks.metadata.generation
    mode = ks.spec.mode
    # engagedAt keeps sub-second precision (ack latencies are milliseconds); conditions use whole seconds.
    cond_now = now.replace(microsecond=0)
    engaged = mode != KillMode.OFF
    previous = ks.status
    released = not engaged and previous.engaged_at is not None
    matched = matched_bots(ks, bots)
    keys = [b.key for b in matched]
    acked = [b for b in matched if _acked(ks, b)]
    pending = [b.key for b in matched if not _acked(ks, b)]

    changed = spec_changed_at(ks)
    # When the engagement began: the API server's record of the spec change when there is one (the
    # operator may have been down), else when the operator first saw it.
    engaged_at = (previous.engaged_at or changed or now) if engaged else None
    latency = ack_latency_ms(changed, [b.runner.kill_acks[ks.metadata.name].at for b in acked]) if engaged \
        else None

    peak, drawdown_message = _fleet_drawdown(ks, matched, released)
    trigger_message = drawdown_message or _lost_runners(ks, matched, now)
    engage: KillMode | None = None
    trigger = ks.spec.trigger
    if trigger_message and trigger is not None and KILL_STRENGTH[trigger.mode] > KILL_STRENGTH[mode]:
        engage = trigger.mode
    triggered_by = previous.triggered_by if engaged else None
    if engage is not None:
        triggered_by = trigger_message

    conditions = list(previous.conditions)
    if engaged:
        reason = "Triggered" if triggered_by else "Engaged"
        why = triggered_by or ks.spec.reason or "no reason given"
        conditions = set_condition(conditions, "Engaged", True, reason,
                                   f"{mode.value} over {len(matched)} matched bots: {why}", gen, cond_now)
    else:
        conditions = set_condition(conditions, "Engaged", False, "Off", "the switch is off", gen, cond_now)
    if not matched and engaged:
        conditions = set_condition(conditions, "Acknowledged", False, "NoBotsMatched",
                                   _no_bots_message(ks, len(bots)), gen, cond_now)
    elif not matched:
        conditions = set_condition(conditions, "Acknowledged", True, "NoMatchedBots",
                                   "no bot matches the selector", gen, cond_now)
    elif not pending:
        conditions = set_condition(conditions, "Acknowledged", True, "AllAcknowledged",
                                   f"all {len(matched)} matched runners acknowledged {mode.value} "
                                   f"(generation {gen})", gen, cond_now)
    else:
        conditions = set_condition(conditions, "Acknowledged", False, "Pending",
                                   f"{len(acked)}/{len(matched)} runners acknowledged {mode.value} "
                                   f"(generation {gen}); waiting for {_named(pending)}", gen, cond_now)

    status = previous.model_copy(update={
        "observed_generation": gen,
        "conditions": conditions,
        "engaged_at": engaged_at,
        "triggered_by": triggered_by,
        # Explicit even when 0: the MATCHED printer column reads it, and 0 must show as 0.
        "matched": len(matched),
        "acknowledged": len(acked),
        "matched_bots": keys,
        "pending_bots": pending,
        "max_ack_latency_ms": latency,
        "fleet_equity_peak": peak,
    })
    return SwitchPlan(status=status, engage=engage, trigger_message=trigger_message or "")


def killswitch_status_patch(old: KillSwitchStatus, new: KillSwitchStatus) -> dict[str, Any] | None:
    """The merge patch for ``/status`` (explicit nulls remove cleared fields), or None when unchanged."""
    before, after = normalize_json(old.to_wire()), normalize_json(new.to_wire())
    if canonical_json({k: before.get(k) for k in KS_OWNED_FIELDS}) == \
            canonical_json({k: after.get(k) for k in KS_OWNED_FIELDS}):
        return None
    return {"status": {k: after.get(k) for k in KS_OWNED_FIELDS}}


def killswitch_events(old: KillSwitchStatus, new: KillSwitchStatus, mode: KillMode) -> list[EventSpec]:
    """Events for the transitions between two statuses, each once: engaged, released, all acknowledged
    (once per generation: each spec change is acknowledged anew), and no bot matched."""
    events: list[EventSpec] = []
    T = ConditionStatus.TRUE
    was = get_condition(old.conditions, "Engaged")
    now_ = get_condition(new.conditions, "Engaged")
    if now_ is not None and now_.status == T and (was is None or was.status != T):
        events.append(EventSpec("Warning", "KillSwitchEngaged", now_.message))
    elif was is not None and was.status == T and now_ is not None and now_.status != T:
        events.append(EventSpec("Normal", "KillSwitchReleased", "the switch was set to off by a human"))
    ack_was = get_condition(old.conditions, "Acknowledged")
    ack_now = get_condition(new.conditions, "Acknowledged")
    if mode != KillMode.OFF and new.matched and ack_now is not None and ack_now.status == T and \
            (ack_was is None or ack_was.status != T or (was is not None and was.status != T)
             or ack_was.observed_generation != ack_now.observed_generation):
        latency = ""
        if new.max_ack_latency_ms is not None:
            latency = (f"; slowest ack {format_ms(new.max_ack_latency_ms)} ms after the spec change (at most: "
                       f"the API server records the change in whole seconds)")
        events.append(EventSpec("Normal", "KillSwitchAcknowledged", f"{ack_now.message}{latency}"))
    if ack_now is not None and ack_now.reason == "NoBotsMatched" and \
            (ack_was is None or (ack_was.status, ack_was.reason) != (ack_now.status, ack_now.reason)):
        events.append(EventSpec("Warning", "NoBotsMatched", ack_now.message))
    return events
