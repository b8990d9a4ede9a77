"""Status policies: what the operator says about a TradingBot and a StrategyConfig, and which Events.

Pure functions, no I/O, no clock (``now`` is an argument). Called by the reconcilers in
:mod:`tradewarden.controller.handlers`, which write a status only when :func:`bot_status_patch` or
:func:`strategyconfig_status_patch` returns something.

Quiet when nothing changes: the status computed twice from the same inputs is byte-identical. So no
message carries a moving number (an age, a "seconds ago"), conditions go through
:func:`tradewarden.api.conditions.set_condition` (``lastTransitionTime`` moves only on a flip), and
runner telemetry is copied only when a value other than the heartbeat changes, floats rounded to two
decimals. ``RunnerHealthy`` is computed from the Lease on every reconcile but written only when it
flips; the reconciler schedules itself for the moment a fresh heartbeat would go stale.

The phase is a chain of checks; the first that applies names the phase and the reason:
Invalid (no valid config at all) > Halted (a kill mode applies) > Pending (no heartbeat yet) >
Degraded (stale heartbeat, a runner pod that says why it cannot run, rejected config, invalid edit running
the last good config) > Running.

The promotion gate's record is part of the status this module computes: ``replay`` and ``consensus``
(a round found by :mod:`tradewarden.controller.promotion` is merged in by
:func:`tradewarden.controller.gate.record_round` before this runs), ``capital`` (the ramp), ``paperSince``
(when the bot left signals: the paper time reviewers judge) and ``gateTrip`` (a consensus halt, dropped
once the reset annotation changes). One writer for all of them: a reconcile never races another writer
of the same status. Gate Events are recorded on transitions only (a condition's status or reason, a ramp
step, an override taking effect or changing reason), so a live bot's routine re-checks write nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tradewarden.api.conditions import (
    MAX_MESSAGE,
    Condition,
    ConditionStatus,
    bound_message,
    echoable,
    get_condition,
    list_problems,
    set_condition,
)
from tradewarden.api.gateoverride import MAX_OVERRIDE_HOURS
from tradewarden.api.runtime import canonical_json, lease_name, sha256_hex
from tradewarden.api.strategyconfig import (
    StrategyConfig,
    StrategyConfigSpec,
    StrategyConfigStatus,
    StrategyInfoStatus,
)
from tradewarden.api.tradingbot import (
    BotPhase,
    KillMode,
    Placement,
    ReplayEvidence,
    RunnerStatus,
    TradingBot,
    TradingBotStatus,
    TradingMode,
)
from tradewarden.controller import gate
from tradewarden.controller.builders import BotPlan, ValidConfig
from tradewarden.controller.leases import POD_REASONS, RunnerObservation
from tradewarden.controller.ramp import ADVANCE, PAUSE, RESET, RESUME, START
from tradewarden.strategies import (
    StrategyLayerError,
    StrategyParamsError,
    UnknownStrategyError,
    get_strategy,
    validate_params,
)

#: Condition types of a TradingBot, in the order they are first listed.
BOT_CONDITIONS = ("Ready", "ConfigValid", "ConfigApplied", "RunnerHealthy", "ReplayVerified",
                  "ConsensusApproved", "Promoted", "KillSwitchEngaged")

#: The status fields the operator writes on a TradingBot, all from the bot's reconcile (one writer).
BOT_OWNED_FIELDS = ("observedGeneration", "phase", "effectiveMode", "strategy", "configHash", "killMode",
                    "conditions", "replay", "consensus", "capital", "paperSince", "gateTrip", "runner")
#: The conditions of the promotion gate, whose transitions are recorded as Events.
GATE_CONDITIONS = ("ReplayVerified", "ConsensusApproved", "Promoted")

SC_OWNED_FIELDS = ("observedGeneration", "conditions", "configHash", "validSpec", "strategy", "bots", "botNames")


@dataclass(frozen=True)
class EventSpec:
    """An Event to record about the object being reconciled."""

    type: str  # Normal or Warning
    reason: str
    message: str


def short_hash(value: str) -> str:
    return value.removeprefix("sha256:")[:12] or "(none)"


# ----------------------------------------------------------------------------------------- config source


@dataclass(frozen=True)
class ConfigSource:
    """Where the bot's strategy config stands: found? validated? valid now? and the last valid one."""

    name: str
    found: bool
    validated: bool
    valid_now: bool
    problem: str
    valid: ValidConfig | None


def config_source(namespace: str, ref: str, sc: StrategyConfig | None) -> ConfigSource:
    """Read a StrategyConfig's status the way a bot needs it. The spec is never trusted directly:
    only ``status.validSpec`` (what the operator validated) reaches a runner."""
    if sc is None:
        return ConfigSource(ref, False, False, False,
                            f"spec.strategyConfigRef: StrategyConfig {namespace}/{ref} does not exist; "
                            "create it or fix the reference", None)
    cond = get_condition(sc.status.conditions, "Valid")
    valid: ValidConfig | None = None
    if sc.status.valid_spec is not None:
        version = sc.status.strategy.version if sc.status.strategy else ""
        risk_level = sc.status.strategy.risk_level if sc.status.strategy else ""
        valid = ValidConfig(ref, StrategyConfigSpec.model_validate(sc.status.valid_spec), version, risk_level)
    if cond is None:
        return ConfigSource(ref, True, False, False,
                            f"StrategyConfig {ref} has not been validated yet", valid)
    valid_now = cond.status == ConditionStatus.TRUE
    return ConfigSource(ref, True, True, valid_now, "" if valid_now else cond.message, valid)


# ----------------------------------------------------------------------------------------- runner telemetry


def _round(x: float) -> float:
    return round(float(x), 2)


def runner_status(previous: RunnerStatus | None, runner: RunnerObservation) -> RunnerStatus | None:
    """Runner telemetry for the status, copied only when something other than the heartbeat changed."""
    telemetry = runner.telemetry
    if telemetry is None and not runner.applied_hash and not runner.kill_mode:
        return previous
    candidate = RunnerStatus(
        applied_config_hash=runner.applied_hash,
        kill_mode=runner.kill_mode or (telemetry.kill_mode.value if telemetry else ""),
        equity=_round(telemetry.equity) if telemetry else 0.0,
        pnl=_round(telemetry.pnl) if telemetry else 0.0,
        drawdown_pct=_round(telemetry.drawdown_pct) if telemetry else 0.0,
        open_positions=telemetry.open_positions if telemetry else 0,
        strategy_mode=telemetry.strategy_mode.value if telemetry else "",
    )
    if previous is not None and previous.model_copy(update={"last_heartbeat": None}) == candidate:
        return previous
    beat = telemetry.heartbeat if telemetry else runner.renew_time
    return candidate.model_copy(update={"last_heartbeat": beat.replace(microsecond=0) if beat else None})


# ----------------------------------------------------------------------------------------- bot status


@dataclass(frozen=True)
class _Verdict:
    status: ConditionStatus | bool
    reason: str
    message: str


def _config_valid(source: ConfigSource, plan: BotPlan) -> _Verdict:
    if not source.found:
        return _Verdict(False, "StrategyConfigNotFound", source.problem)
    if not source.validated:
        return _Verdict(ConditionStatus.UNKNOWN, "Pending", source.problem)
    if not source.valid_now:
        tail = (f"; the runner keeps the last valid config {short_hash(plan.config_hash)}" if plan.runtime
                else "; no valid config has been seen yet, so nothing runs")
        head = f"StrategyConfig {source.name}: "
        # The StrategyConfig's own message is bounded already; bound it again here so that what this bot
        # adds around it (above all, what the runner does meanwhile) survives the cut.
        problem = bound_message(source.problem, MAX_MESSAGE - len(head) - len(tail))
        return _Verdict(False, "StrategyConfigInvalid", f"{head}{problem}{tail}")
    assert plan.runtime is not None
    if plan.refused:
        return _Verdict(False, "FieldRefused", list_problems(plan.refused))
    strategy = plan.runtime.strategy
    notes = "".join(f"; {note}" for note in plan.notes)
    return _Verdict(True, "Valid", f"StrategyConfig {source.name}: {strategy.key} {strategy.version}, "
                                   f"config {short_hash(plan.config_hash)}{notes}")


def _config_applied(plan: BotPlan, runner: RunnerObservation) -> _Verdict:
    if plan.runtime is None:
        return _Verdict(False, "NoConfig", "there is no valid config to apply")
    want = plan.runtime.config_hash
    if runner.applied_hash == want:
        return _Verdict(True, "Applied", f"the runner applied config {short_hash(want)}")
    if not runner.applied_hash:
        return _Verdict(False, "NotReported", "the runner has not reported an applied config yet")
    if runner.rejected:
        return _Verdict(False, "Rejected", f"the runner rejected config {short_hash(want)}: "
                                           f"{bound_message(runner.rejected, 512)}")
    return _Verdict(False, "Pending", f"the runner runs config {short_hash(runner.applied_hash)}, "
                                      f"the ConfigMap has {short_hash(want)}")


def _runner_healthy(bot: TradingBot, runner: RunnerObservation, now: dt.datetime) -> _Verdict:
    """From the Lease; an unhealthy runner whose pod says why it cannot run (placement cluster) is named by
    the pod's reason instead (:func:`tradewarden.controller.leases.pod_problem`). The pod only ever explains
    a False verdict: it never turns one True, nor a fresh, believed heartbeat False."""
    verdict = _lease_verdict(bot, runner, now)
    problem = runner.pod_problem
    if problem is None or verdict.status is True or bot.spec.placement != Placement.CLUSTER:
        return verdict
    tail = (f"; Lease {lease_name(bot.metadata.name)} is not believed either (condition Intact)"
            if runner.contradiction else "")
    return _Verdict(False, problem.reason, bound_message(problem.message, MAX_MESSAGE - len(tail)) + tail)


def _lease_verdict(bot: TradingBot, runner: RunnerObservation, now: dt.datetime) -> _Verdict:
    grace = bot.spec.runner.heartbeat_grace_seconds
    lease = lease_name(bot.metadata.name)
    if runner.contradiction:
        return _Verdict(False, "LeaseContradicted", f"Lease {lease} is not believed: {runner.contradiction}")
    if runner.renew_time is None:
        where = (f"check the pod of StatefulSet {lease}" if bot.spec.placement == Placement.CLUSTER
                 else f"start `tradewarden runner --bot {bot.metadata.namespace}/{bot.metadata.name}` where it runs")
        return _Verdict(False, "NoHeartbeat", f"the runner has not renewed its Lease {lease} yet; {where}")
    if runner.heartbeat_stale(now, grace):
        return _Verdict(False, "HeartbeatStale",
                        f"the runner last renewed its Lease {lease} at "
                        f"{runner.renew_time.replace(microsecond=0).isoformat()}, more than "
                        f"spec.runner.heartbeatGraceSeconds={grace} ago")
    return _Verdict(True, "HeartbeatFresh", f"the runner renews its Lease {lease} within {grace} s")


def _kill_engaged(plan: BotPlan) -> _Verdict:
    kill = plan.kill
    if kill.mode == KillMode.OFF:
        return _Verdict(False, "NotEngaged", "no kill switch applies")
    own = [s for s in kill.sources if s in ("bot", "consensus")]
    reason = "KillSwitch"  # a switch among the sources: the switch is the story
    if len(own) == len(kill.sources):
        reason = "ConsensusTrip" if own == ["consensus"] else "BotTrip"
    tail = (f"; change the annotation {gate.ANN_RESET_TRIP} to release the bot's own trip" if own else "")
    return _Verdict(True, reason, f"{kill.mode.value} from {', '.join(kill.sources)}: {kill.reason}{tail}")


def _phase(source: ConfigSource, plan: BotPlan, healthy: _Verdict, applied: _Verdict,
           valid: _Verdict) -> tuple[BotPhase, str, str]:
    """The phase chain; returns (phase, reason, message) of the first check that applies."""
    if plan.runtime is None:
        if source.found and not source.validated:
            return BotPhase.PENDING, valid.reason, valid.message
        return BotPhase.INVALID, valid.reason, valid.message
    if plan.kill.mode != KillMode.OFF:
        return BotPhase.HALTED, "KillSwitchEngaged", f"kill mode {plan.kill.mode.value}: {plan.kill.reason}"
    if healthy.reason == "NoHeartbeat":
        return BotPhase.PENDING, healthy.reason, healthy.message
    if healthy.reason in ("HeartbeatStale", "LeaseContradicted") or healthy.reason in POD_REASONS:
        return BotPhase.DEGRADED, healthy.reason, healthy.message
    if applied.reason == "Rejected":
        return BotPhase.DEGRADED, "ConfigRejected", applied.message
    if valid.status is False:
        return BotPhase.DEGRADED, valid.reason, valid.message
    return BotPhase.RUNNING, "Running", "the runner is healthy"


def compute_bot_status(bot: TradingBot, source: ConfigSource, plan: BotPlan, runner: RunnerObservation,
                       now: dt.datetime) -> TradingBotStatus:
    """The TradingBot's status after this reconcile. Fields not owned here are carried over."""
    gen = bot.metadata.generation
    cond_now = now.replace(microsecond=0)  # conditions record whole seconds, as the API conventions do
    valid = _config_valid(source, plan)
    applied = _config_applied(plan, runner)
    healthy = _runner_healthy(bot, runner, now)
    phase, phase_reason, phase_message = _phase(source, plan, healthy, applied, valid)
    decision = plan.promotion
    if phase != BotPhase.RUNNING:
        ready = _Verdict(False, phase_reason, phase_message)
    elif applied.status is not True:
        ready = _Verdict(False, "ConfigNotApplied", applied.message)
    else:
        ready = _Verdict(True, "Ready", f"running config {short_hash(plan.config_hash)} in "
                                        f"{decision.effective_mode.value} mode")

    verdicts: dict[str, _Verdict] = {
        "Ready": ready,
        "ConfigValid": valid,
        "ConfigApplied": applied,
        "RunnerHealthy": healthy,
        "ReplayVerified": _Verdict(decision.replay.ok, decision.replay.reason, decision.replay.message),
        "ConsensusApproved": _Verdict(decision.consensus.ok, decision.consensus.reason,
                                      decision.consensus.message),
        "Promoted": _Verdict(decision.promoted, decision.reason, decision.message),
        "KillSwitchEngaged": _kill_engaged(plan),
    }
    conditions: list[Condition] = list(bot.status.conditions)
    for type_ in BOT_CONDITIONS:
        v = verdicts[type_]
        conditions = set_condition(conditions, type_, v.status, v.reason, v.message, gen, cond_now)

    strategy = plan.runtime.strategy.key if plan.runtime else bot.status.strategy
    return bot.status.model_copy(update={
        "observed_generation": gen,
        "phase": phase,
        "effective_mode": decision.effective_mode,
        "strategy": strategy,
        "config_hash": plan.config_hash or bot.status.config_hash,
        "kill_mode": plan.kill.mode,
        "conditions": conditions,
        "replay": _replay_record(bot),
        "capital": plan.ramp.capital,
        "paper_since": _paper_since(bot, decision.effective_mode, now),
        "gate_trip": gate.active_trip(bot),
        "runner": runner_status(bot.status.runner, runner),
    })


def _replay_record(bot: TradingBot) -> ReplayEvidence | None:
    """``status.replay`` with ``overrideReason`` set while the override annotation is in force."""
    replay = bot.status.replay
    reason = gate.replay_override(bot).reason
    if reason is not None:
        return (replay or ReplayEvidence()).model_copy(update={"override_reason": reason})
    if replay is None or replay.override_reason is None:
        return replay
    cleared = replay.model_copy(update={"override_reason": None})
    return None if cleared == ReplayEvidence() else cleared


def _paper_since(bot: TradingBot, mode: TradingMode, now: dt.datetime) -> dt.datetime | None:
    """When the bot left signals: kept through paper and live (a live bot falling back to paper has been
    trading all along), cleared in signals. Whole seconds, as the API conventions record times."""
    if mode == TradingMode.SIGNALS:
        return None
    return bot.status.paper_since or now.replace(microsecond=0)


def normalize_json(value: Any) -> Any:
    """JSON as the API server gives it back: it stores numbers, not Python types, so ``2.0`` returns as
    ``2``. Comparing before writing must not see a difference there, or a free-form map with a float
    (a StrategyConfig's params) would be rewritten on every reconcile."""
    if isinstance(value, dict):
        return {k: normalize_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize_json(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _owned(wire: dict[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    return {k: normalize_json(wire[k]) for k in fields if k in wire}


def _with_removals(before: Any, after: Any) -> Any:
    """``after`` plus an explicit null for every map key ``before`` has and ``after`` lacks, at any depth:
    in a JSON merge patch an absent key means "keep", so a field that went away must be sent as null."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return after
    out = {k: _with_removals(before.get(k), v) for k, v in after.items()}
    for key in before:
        if key not in after:
            out[key] = None
    return out


def bot_status_patch(old: TradingBotStatus, new: TradingBotStatus) -> dict[str, Any] | None:
    """The merge patch for ``/status``, or None when the owned fields are byte-identical."""
    before, after = _owned(old.to_wire(), BOT_OWNED_FIELDS), _owned(new.to_wire(), BOT_OWNED_FIELDS)
    if canonical_json(before) == canonical_json(after):
        return None
    return {"status": _with_removals(before, after)}


def _cond_status(conditions: Sequence[Condition], type_: str) -> ConditionStatus | None:
    cond = get_condition(conditions, type_)
    return cond.status if cond else None


def phase_message(status: TradingBotStatus) -> str:
    """What the phase ``status`` is in means, from the condition that decided it.

    Outside Running, ``Ready`` carries the phase chain's own reason and message (see :func:`_phase`).
    In Running, ``Ready`` may still be False for a reason that is not the phase's (the config is not
    applied yet): the phase is then described by what makes it Running, a healthy runner. An Event about
    entering a phase must describe that phase, never what held the bot back before."""
    ready = get_condition(status.conditions, "Ready")
    if status.phase == BotPhase.RUNNING and (ready is None or ready.status != ConditionStatus.TRUE):
        healthy = get_condition(status.conditions, "RunnerHealthy")
        return healthy.message if healthy else "the runner is healthy"
    return ready.message if ready else ""


def bot_events(old: TradingBotStatus, new: TradingBotStatus) -> list[EventSpec]:
    """Events for the transitions between two statuses: one reason per kind of transition.

    Every message describes the state *entered* (the new status's conditions), never the one left."""
    events: list[EventSpec] = []
    T = ConditionStatus.TRUE
    if old.phase != new.phase:
        bad = new.phase in (BotPhase.DEGRADED, BotPhase.INVALID, BotPhase.HALTED)
        events.append(EventSpec("Warning" if bad else "Normal", "PhaseChanged",
                                f"{old.phase.value} -> {new.phase.value}: {phase_message(new)}"))
    healthy = get_condition(new.conditions, "RunnerHealthy")
    if healthy is not None and healthy.reason in POD_REASONS and \
            _cond_reason(old.conditions, "RunnerHealthy") != healthy.reason:
        # Why the runner pod cannot run, once per reason entered (the Event's reason is the condition's).
        events.append(EventSpec("Warning", healthy.reason, f"RunnerHealthy: {healthy.message}"))
    if old.effective_mode != new.effective_mode:
        promoted = get_condition(new.conditions, "Promoted")
        events.append(EventSpec("Normal", "ModeChanged",
                                f"effective mode {old.effective_mode.value} -> {new.effective_mode.value}: "
                                f"{promoted.message if promoted else ''}"))
    if old.config_hash and new.config_hash and old.config_hash != new.config_hash:
        events.append(EventSpec("Normal", "ConfigUpdated",
                                f"runtime config {short_hash(old.config_hash)} -> {short_hash(new.config_hash)}"))
    if _cond_status(old.conditions, "ConfigApplied") != T and _cond_status(new.conditions, "ConfigApplied") == T:
        events.append(EventSpec("Normal", "ConfigApplied",
                                f"the runner applied config {short_hash(new.config_hash)}"))
    if _cond_status(old.conditions, "ConfigValid") != ConditionStatus.FALSE and \
            _cond_status(new.conditions, "ConfigValid") == ConditionStatus.FALSE:
        cond = get_condition(new.conditions, "ConfigValid")
        events.append(EventSpec("Warning", "InvalidConfig", cond.message if cond else ""))
    old_kill, new_kill = _cond_status(old.conditions, "KillSwitchEngaged"), _cond_status(new.conditions,
                                                                                         "KillSwitchEngaged")
    if old_kill != T and new_kill == T:
        cond = get_condition(new.conditions, "KillSwitchEngaged")
        events.append(EventSpec("Warning", "KillSwitchEngaged", cond.message if cond else ""))
    elif old_kill == T and new_kill != T:
        events.append(EventSpec("Normal", "KillSwitchReleased", "no kill switch applies any more"))
    return events + _gate_events(old, new)


#: Gate reasons recorded as Normal Events; every other gate reason is a Warning.
_NORMAL_GATE_REASONS = frozenset({gate.PASSED, gate.APPROVED, gate.MISSING, "Promoted", "LiveNotRequested",
                                  "ReplayMissing", "ConsensusMissing"})
_RAMP_EVENTS = {START: ("Normal", "RampStep"), ADVANCE: ("Normal", "RampStep"), RESET: ("Warning", "RampReset"),
                PAUSE: ("Normal", "RampPaused"), RESUME: ("Normal", "RampResumed")}


def _gate_events(old: TradingBotStatus, new: TradingBotStatus) -> list[EventSpec]:
    """Events of the promotion gate: each change of a gate condition's status or reason (the Event's
    reason is the condition's), the override taking effect or changing reason, trips set and reset.

    Only for bots that want evidence (live requested or in force): the conditions of a signals or paper
    bot say Missing and LiveNotRequested forever, and telling that to every new bot is noise."""
    events: list[EventSpec] = []
    wanted = new.effective_mode == TradingMode.LIVE or old.effective_mode == TradingMode.LIVE or \
        _cond_reason(new.conditions, "Promoted") not in ("", "LiveNotRequested")
    if wanted:
        for type_ in GATE_CONDITIONS:
            before, after = get_condition(old.conditions, type_), get_condition(new.conditions, type_)
            if after is None or (before is not None and (before.status, before.reason) == (after.status,
                                                                                            after.reason)):
                continue
            if after.reason == gate.OVERRIDDEN:
                continue  # the override's own Warning below says it, with its reason
            kind = "Normal" if after.reason in _NORMAL_GATE_REASONS else "Warning"
            events.append(EventSpec(kind, after.reason, f"{type_}: {after.message}"))
    old_override = old.replay.override_reason if old.replay else None
    new_override = new.replay.override_reason if new.replay else None
    if new_override and new_override != old_override:
        events.append(EventSpec("Warning", gate.OVERRIDDEN,
                                f"the replay gate is overridden: {new_override}; the consensus still has to "
                                f"approve"))
    elif old_override and not new_override:
        events.append(EventSpec("Normal", "OverrideEnded",
                                f"the replay gate override ended (it expired or its GateOverride was deleted): "
                                f"the replay gate applies again; it was: {old_override}"))
    ignored = "is not honoured:"
    if ignored in _cond_message(new.conditions, "ReplayVerified") and \
            ignored not in _cond_message(old.conditions, "ReplayVerified"):
        events.append(EventSpec("Warning", "OverrideIgnored",
                                f"a GateOverride names this bot but is not honoured: it may last at most "
                                f"{MAX_OVERRIDE_HOURS} hours from its creation; delete it and create one that "
                                f"expires sooner"))
    if new.gate_trip is not None and new.gate_trip != old.gate_trip:
        events.append(EventSpec("Warning", "TripEngaged",
                                f"bot-scoped {new.gate_trip.mode.value}: {new.gate_trip.reason}; it holds until "
                                f"the annotation {gate.ANN_RESET_TRIP} is changed"))
    elif old.gate_trip is not None and new.gate_trip is None:
        events.append(EventSpec("Normal", "TripReset",
                                f"bot-scoped {old.gate_trip.mode.value} from the consensus released: the annotation "
                                f"{gate.ANN_RESET_TRIP} changed"))
    return events


def ramp_events(plan: BotPlan) -> list[EventSpec]:
    """The Event of a ramp change in this reconcile (a step, a reset, a pause), if any."""
    change = plan.ramp.change
    if change is None:
        return []
    kind, reason = _RAMP_EVENTS[change.kind]
    return [EventSpec(kind, reason, change.message)]


def _cond_reason(conditions: Sequence[Condition], type_: str) -> str:
    cond = get_condition(conditions, type_)
    return cond.reason if cond else ""


def _cond_message(conditions: Sequence[Condition], type_: str) -> str:
    cond = get_condition(conditions, type_)
    return cond.message if cond else ""


def next_bot_check(bot: TradingBot, plan: BotPlan, runner: RunnerObservation, now: dt.datetime) -> float | None:
    """Seconds until this bot's status may change by itself (heartbeat or evidence going stale, a runner
    StatefulSet's grace for its missing pod ending)."""
    times: list[dt.datetime] = []
    grace = bot.spec.runner.heartbeat_grace_seconds
    if runner.heartbeat_fresh(now, grace) and runner.renew_time is not None:
        times.append(runner.renew_time + dt.timedelta(seconds=grace))
    if plan.promotion.expires_at is not None:
        times.append(plan.promotion.expires_at)
    if plan.ramp.dwell_ends is not None:
        times.append(plan.ramp.dwell_ends)
    if runner.pod_recheck_at is not None:
        times.append(runner.pod_recheck_at)
    future = [t for t in times if t > now]
    if not future:
        return None
    # A little past the boundary, so the check that runs then sees it crossed.
    return (min(future) - now).total_seconds() + 0.5


# ----------------------------------------------------------------------------------------- StrategyConfig


def _params_problems(exc: StrategyLayerError, prefix: str = "") -> str:
    """The params problems as one bounded message: the first few, then "and N more" (a config with
    hundreds of unknown keys must still get a status the API server accepts)."""
    if isinstance(exc, StrategyParamsError):
        return list_problems([f"{prefix}{path}: {problem}" for path, problem in exc.problems])
    return bound_message(f"{prefix}{exc}")


def _unknown_strategy(exc: UnknownStrategyError) -> str:
    """The registry's "Invalid strategy key: X", X shown only when it may be (see ``echoable``)."""
    known = ", ".join(exc.known)
    if echoable(exc.key):
        return bound_message(f"spec.strategy: Invalid strategy key: {exc.key} (known: {known})")
    return bound_message(f"spec.strategy: Invalid strategy key (the value is not shown: not a short lowercase "
                         f"word); known keys: {known}")


def _validate_spec(spec: StrategyConfigSpec) -> tuple[dict[str, Any] | None, StrategyInfoStatus | None, str, str]:
    """(validSpec, strategy metadata, reason, message): the registry's verdict on a spec."""
    try:
        info = get_strategy(spec.strategy)
    except UnknownStrategyError as exc:
        return None, None, "UnknownStrategy", _unknown_strategy(exc)
    except StrategyLayerError as exc:
        return None, None, "UnknownStrategy", f"spec.strategy: {bound_message(str(exc))}"
    metadata = StrategyInfoStatus(name=info.name, description=info.description, version=info.version,
                                  risk_level=info.risk_level, session_preference=info.session_preference)
    try:
        params = validate_params(spec.strategy, spec.params).model_dump(mode="json")
    except StrategyLayerError as exc:
        return None, metadata, "InvalidParams", _params_problems(exc)
    # Each mode overlay's params are merged over the base params by the runner: validate the merge now,
    # so switching modes can never hand the strategy params it refuses.
    for mode_name in ("primary", "fallback", "conservative", "flat"):
        overlay = getattr(spec.modes, mode_name)
        if overlay is None or not overlay.params:
            continue
        try:
            validate_params(spec.strategy, {**params, **overlay.params})
        except StrategyLayerError as exc:
            return None, metadata, "InvalidParams", _params_problems(exc, f"modes.{mode_name}: ")
    valid = spec.to_wire()
    valid["params"] = params
    if not valid.get("instruments"):
        valid["instruments"] = list(info.instruments)
    return valid, metadata, "Valid", f"{info.key} {info.version}: settings valid"


def compute_strategyconfig_status(sc: StrategyConfig, bot_names: Sequence[str],
                                  now: dt.datetime) -> StrategyConfigStatus:
    """Validate against the registry; keep the previous validSpec when an edit is invalid."""
    gen = sc.metadata.generation
    valid_spec, metadata, reason, message = _validate_spec(sc.spec)
    status = sc.status
    conditions = set_condition(status.conditions, "Valid", valid_spec is not None, reason, message, gen,
                               now.replace(microsecond=0))
    update: dict[str, Any] = {
        "observed_generation": gen,
        "conditions": conditions,
        "bots": len(bot_names),
        "bot_names": sorted(bot_names),
    }
    if valid_spec is not None:
        update["valid_spec"] = valid_spec
        update["config_hash"] = "sha256:" + sha256_hex(canonical_json(valid_spec))
        update["strategy"] = metadata
    return status.model_copy(update=update)


def strategyconfig_status_patch(old: StrategyConfigStatus, new: StrategyConfigStatus) -> dict[str, Any] | None:
    before, after = _owned(old.to_wire(), SC_OWNED_FIELDS), _owned(new.to_wire(), SC_OWNED_FIELDS)
    if canonical_json(before) == canonical_json(after):
        return None
    return {"status": after}


def strategyconfig_events(old: StrategyConfigStatus, new: StrategyConfigStatus) -> list[EventSpec]:
    events: list[EventSpec] = []
    was, now_ = _cond_status(old.conditions, "Valid"), _cond_status(new.conditions, "Valid")
    cond = get_condition(new.conditions, "Valid")
    if now_ == ConditionStatus.FALSE and was != ConditionStatus.FALSE:
        tail = "; bots keep the last valid config" if new.valid_spec is not None else ""
        events.append(EventSpec("Warning", "InvalidConfig", f"{cond.message if cond else ''}{tail}"))
    elif now_ == ConditionStatus.TRUE and was == ConditionStatus.FALSE:
        events.append(EventSpec("Normal", "ConfigValid", cond.message if cond else ""))
    if old.config_hash and new.config_hash != old.config_hash:
        events.append(EventSpec("Normal", "ConfigChanged",
                                f"config {short_hash(old.config_hash)} -> {short_hash(new.config_hash)}"))
    return events
