"""Unit tests of the pure policies: the promotion gate, the bot and StrategyConfig status, Events.

Each reason of each chain has a row; condition transition times move only on flips; a status computed
twice from the same inputs needs no write.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from support.controller_objects import (
    CONFIG_HASH,
    DEFAULTS,
    NOW,
    consensus_record,
    live,
    make_bot,
    make_switch,
    replay_record,
    runner,
    spec,
    status,
    valid_config,
    vote_record,
)
from tradewarden.api.conditions import get_condition
from tradewarden.api.runtime import compute_gate_hash
from tradewarden.api.strategyconfig import StrategyConfig
from tradewarden.api.tradingbot import TradingBot, TradingBotStatus
from tradewarden.controller.builders import build_bot_plan
from tradewarden.controller.gate import evaluate_promotion
from tradewarden.controller.leases import NO_RUNNER, RunnerObservation, observe_lease
from tradewarden.controller.status import (
    ConfigSource,
    bot_events,
    bot_status_patch,
    compute_bot_status,
    compute_strategyconfig_status,
    config_source,
    next_bot_check,
    runner_status,
    strategyconfig_events,
    strategyconfig_status_patch,
)

LIVE = live()


def as_stored(wire: dict[str, Any]) -> dict[str, Any]:
    """JSON as the API server returns it: numbers without a fraction come back as integers."""
    def number(text: str) -> float | int:
        value = float(text)
        return int(value) if value.is_integer() else value
    out: dict[str, Any] = json.loads(json.dumps(wire), parse_float=number)
    return out


replay = replay_record
vote = vote_record
consensus = consensus_record


# (id, mods, effective mode, promoted, Promoted reason). The pieces of the gate (each condition's reasons,
# the override, the ramp, trips) have their own tables in test_controller_gate.py.
GATE_CASES: list[tuple[str, list[Any], str, bool, str]] = [
    ("signals-stays-signals", [], "signals", False, "LiveNotRequested"),
    ("paper-stays-paper", [spec(mode="paper"), status(replay=replay(), consensus=consensus())], "paper", False,
     "LiveNotRequested"),
    ("replay-missing", [LIVE], "paper", False, "ReplayMissing"),
    ("replay-other-config", [LIVE, status(replay=replay(configHash="sha256:old"), consensus=consensus())],
     "paper", False, "ConfigChanged"),
    ("replay-failed", [LIVE, status(replay=replay(passed=False, reason="Failed"), consensus=consensus())],
     "paper", False, "ReplayFailed"),
    ("replay-too-few-trades", [LIVE, status(replay=replay(tradesCompared=0), consensus=consensus())], "paper",
     False, "ReplayInsufficientTrades"),
    ("replay-residuals", [LIVE, status(replay=replay(residuals=2), consensus=consensus())], "paper", False,
     "ReplayFailed"),
    ("replay-stale", [LIVE, status(replay=replay(finishedAt=(NOW - dt.timedelta(hours=2)).isoformat()),
                                   consensus=consensus())], "paper", False, "ReplayStale"),
    ("consensus-missing", [LIVE, status(replay=replay())], "paper", False, "ConsensusMissing"),
    ("consensus-other-replay", [LIVE, status(replay=replay(), consensus=consensus(replayResultHash="sha256:x"))],
     "paper", False, "ConsensusStale"),
    ("consensus-critical", [LIVE, status(replay=replay(), consensus=consensus(votes=[
        vote(verdict="ABORT", risk="CRITICAL")]))], "paper", False, "ConsensusHalt"),
    ("consensus-below-phase-threshold", [LIVE, status(replay=replay(), consensus=consensus(votes=[
        vote("a"), vote("b"), vote("c", verdict="HOLD")]))], "paper", False, "ConsensusRejected"),
    ("consensus-held", [LIVE, status(replay=replay(), consensus=consensus(votes=[
        vote("a"), vote("b", risk="MEDIUM")]))], "paper", False, "ConsensusHeld"),
    ("consensus-stale", [LIVE, status(replay=replay(), consensus=consensus(votes=[vote(age_minutes=180)]))],
     "paper", False, "ConsensusStale"),
    ("all-green", [LIVE, status(replay=replay(), consensus=consensus())], "live", True, "Promoted"),
]


@pytest.mark.parametrize(("mods", "mode", "promoted", "reason"), [c[1:] for c in GATE_CASES],
                         ids=[c[0] for c in GATE_CASES])
def test_promotion_gate(mods: list[Any], mode: str, promoted: bool, reason: str) -> None:
    decision = evaluate_promotion(make_bot("bot", *mods), CONFIG_HASH, NOW)
    assert decision.effective_mode.value == mode
    assert decision.promoted is promoted
    assert decision.reason == reason
    assert decision.message
    if promoted:
        # Bound to the config, the replay's result and the summary the votes judged.
        assert decision.gate_hash == compute_gate_hash(CONFIG_HASH, "sha256:r", "sha256:e")
        assert decision.expires_at == NOW - dt.timedelta(minutes=10) + dt.timedelta(minutes=60)
    else:
        assert decision.gate_hash == ""


# ------------------------------------------------------------------------------------------ bot status


def source(valid: bool = True, found: bool = True, validated: bool = True, have_last_good: bool = True,
           problem: str = "params.fast: must be < slow (got 30 >= 20)") -> ConfigSource:
    return ConfigSource("momentum", found, validated, valid, "" if valid else problem,
                        valid_config() if (have_last_good and found) else None)


def reconcile(bot: TradingBot, src: ConfigSource, run: RunnerObservation, now: dt.datetime = NOW,
              switches: list[Any] | None = None) -> TradingBotStatus:
    plan = build_bot_plan(bot, src.valid, switches or [], run, DEFAULTS, now)
    return compute_bot_status(bot, src, plan, run, now)


def applied_hash(bot: TradingBot) -> str:
    plan = build_bot_plan(bot, valid_config(), [], NO_RUNNER, DEFAULTS, NOW)
    return plan.config_hash


PHASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("no-strategyconfig", {"src": source(valid=False, found=False)}, "Invalid", "StrategyConfigNotFound"),
    ("never-valid", {"src": source(valid=False, have_last_good=False)}, "Invalid", "StrategyConfigInvalid"),
    ("not-validated-yet", {"src": source(valid=False, validated=False, have_last_good=False)}, "Pending",
     "Pending"),
    ("kill-switch", {"switches": [make_switch(mode="halt_all")]}, "Halted", "KillSwitchEngaged"),
    ("no-heartbeat", {"run": NO_RUNNER}, "Pending", "NoHeartbeat"),
    ("stale-heartbeat", {"run": runner(renewed=NOW - dt.timedelta(seconds=31))}, "Degraded", "HeartbeatStale"),
    ("rejected-config", {"run": runner(applied="sha256:old", rejected="params.x bad")}, "Degraded",
     "ConfigRejected"),
    ("invalid-edit-last-good", {"src": source(valid=False)}, "Degraded", "StrategyConfigInvalid"),
    ("healthy-not-applied", {"run": runner(applied="sha256:old")}, "Running", "ConfigNotApplied"),
    ("ready", {}, "Running", "Ready"),
]


@pytest.mark.parametrize(("setup", "phase", "reason"), [p[1:] for p in PHASES], ids=[p[0] for p in PHASES])
def test_phase_chain(setup: dict[str, Any], phase: str, reason: str) -> None:
    bot = make_bot()
    run = setup.get("run", runner(applied=applied_hash(bot)))
    new = reconcile(bot, setup.get("src", source()), run, switches=setup.get("switches"))
    assert new.phase.value == phase
    ready = get_condition(new.conditions, "Ready")
    assert ready is not None
    assert ready.reason == reason
    assert (ready.status.value == "True") is (reason == "Ready")
    assert new.observed_generation == 3


@pytest.mark.parametrize(("run", "status_", "reason"), [
    (NO_RUNNER, "False", "NoHeartbeat"),
    (runner(renewed=NOW - dt.timedelta(seconds=30)), "True", "HeartbeatFresh"),
    (runner(renewed=NOW - dt.timedelta(seconds=30, milliseconds=1)), "False", "HeartbeatStale"),
])
def test_runner_healthy_from_the_lease(run: RunnerObservation, status_: str, reason: str) -> None:
    cond = get_condition(reconcile(make_bot(), source(), run).conditions, "RunnerHealthy")
    assert cond is not None
    assert (cond.status.value, cond.reason) == (status_, reason)


@pytest.mark.parametrize(("applied", "rejected", "status_", "reason"), [
    ("HASH", "", "True", "Applied"),
    ("", "", "False", "NotReported"),
    ("sha256:old", "", "False", "Pending"),
    ("sha256:old", "params.fast: bad", "False", "Rejected"),
])
def test_config_applied_compares_the_lease_with_the_configmap(applied: str, rejected: str, status_: str,
                                                              reason: str) -> None:
    bot = make_bot()
    run = runner(applied=applied_hash(bot) if applied == "HASH" else applied, rejected=rejected)
    cond = get_condition(reconcile(bot, source(), run).conditions, "ConfigApplied")
    assert cond is not None
    assert (cond.status.value, cond.reason) == (status_, reason)


def test_same_inputs_give_a_byte_identical_status_and_no_write() -> None:
    bot = make_bot()
    first = reconcile(bot, source(), runner(applied=applied_hash(bot)))
    settled = make_bot("bot", status(**first.to_wire()))
    later = NOW + dt.timedelta(seconds=20)
    second = reconcile(settled, source(), runner(renewed=later, applied=applied_hash(bot)), now=later)
    assert bot_status_patch(settled.status, second) is None
    # Round trip through JSON as the API server stores it (2.0 comes back as 2): still no write.
    stored = make_bot("bot", status(**as_stored(first.to_wire())))
    assert bot_status_patch(stored.status, reconcile(stored, source(), runner(applied=applied_hash(bot)))) is None


def test_condition_transition_time_moves_only_on_a_flip() -> None:
    bot = make_bot()
    first = reconcile(bot, source(), runner(applied=applied_hash(bot)))
    healthy = get_condition(first.conditions, "RunnerHealthy")
    assert healthy is not None
    assert healthy.last_transition_time == NOW
    settled = make_bot("bot", status(**first.to_wire()))
    later = NOW + dt.timedelta(minutes=5)
    stale = reconcile(settled, source(), runner(applied=applied_hash(bot)), now=later)
    flipped = get_condition(stale.conditions, "RunnerHealthy")
    assert flipped is not None
    assert flipped.status.value == "False"
    assert flipped.last_transition_time == later
    kept = get_condition(stale.conditions, "ConfigValid")
    assert kept is not None
    assert kept.last_transition_time == NOW


def test_telemetry_is_copied_only_when_more_than_the_heartbeat_changed() -> None:
    first = runner_status(None, runner(equity=10000.004, pnl=1.006))
    assert first is not None
    assert (first.equity, first.pnl) == (10000.0, 1.01)
    assert first.last_heartbeat == NOW
    later = NOW + dt.timedelta(seconds=10)
    same = runner_status(first, runner(renewed=later, equity=10000.001, pnl=1.009))
    assert same is first  # only the heartbeat (and sub-cent noise) changed
    moved = runner_status(first, runner(renewed=later, equity=10100.0, pnl=1.0))
    assert moved is not None
    assert moved.equity == 10100.0
    assert moved.last_heartbeat == later
    assert runner_status(first, NO_RUNNER) is first


def test_events_name_each_transition() -> None:
    bot = make_bot()
    pending = reconcile(bot, source(), NO_RUNNER)
    assert {e.reason for e in bot_events(TradingBotStatus(), pending)} == set()  # Pending -> Pending
    settled = make_bot("bot", status(**pending.to_wire()))
    running = reconcile(settled, source(), runner(applied=applied_hash(bot)))
    reasons = {e.reason for e in bot_events(settled.status, running)}
    assert reasons == {"PhaseChanged", "ConfigApplied"}
    halted = reconcile(settled, source(valid=False), runner(applied=applied_hash(bot)),
                       switches=[make_switch(mode="close_only")])
    events = {e.reason: e for e in bot_events(running, halted)}
    assert set(events) == {"PhaseChanged", "InvalidConfig", "KillSwitchEngaged"}
    assert events["KillSwitchEngaged"].type == "Warning"
    paper = reconcile(make_bot("bot", spec(mode="paper"), status(**running.to_wire())), source(),
                      runner(applied=applied_hash(bot)))
    assert "ModeChanged" in {e.reason for e in bot_events(running, paper)}


def test_next_check_is_when_the_heartbeat_goes_stale() -> None:
    bot = make_bot()
    run = runner(renewed=NOW - dt.timedelta(seconds=10))
    plan = build_bot_plan(bot, valid_config(), [], run, DEFAULTS, NOW)
    assert next_bot_check(bot, plan, run, NOW) == pytest.approx(20.5)
    assert next_bot_check(bot, plan, NO_RUNNER, NOW) is None


def test_config_source_reads_only_the_validated_spec() -> None:
    assert not config_source("ns", "momentum", None).found
    sc = StrategyConfig.model_validate({"metadata": {"name": "momentum", "generation": 2},
                                        "spec": {"strategy": "momentum", "params": {"fast": 99}}})
    pending = config_source("ns", "momentum", sc)
    assert pending.found
    assert not pending.validated
    assert pending.valid is None


# ------------------------------------------------------------------------------------------ StrategyConfig


def make_sc(params: dict[str, Any], strategy: str = "momentum", previous: dict[str, Any] | None = None,
            **spec_extra: Any) -> StrategyConfig:
    return StrategyConfig.model_validate({
        "metadata": {"name": "momentum", "namespace": "ns", "generation": 4},
        "spec": {"strategy": strategy, "params": params, **spec_extra}, "status": previous or {}})


def test_valid_strategyconfig_fills_defaults_and_metadata() -> None:
    new = compute_strategyconfig_status(make_sc({"fast": 10, "slow": 30}), ["b", "a"], NOW)
    valid = get_condition(new.conditions, "Valid")
    assert valid is not None
    assert (valid.status.value, valid.reason) == ("True", "Valid")
    assert new.valid_spec is not None
    assert new.valid_spec["params"] == {"fast": 10, "slow": 30, "atr_period": 14, "atr_mult": 2.0}
    assert new.valid_spec["instruments"]  # the strategy's default instruments
    assert new.config_hash.startswith("sha256:")
    assert new.strategy is not None
    assert new.strategy.version
    assert (new.bots, new.bot_names) == (2, ["a", "b"])
    assert new.observed_generation == 4


@pytest.mark.parametrize(("sc_spec", "reason", "message"), [
    ({"params": {"fast": 30, "slow": 20}}, "InvalidParams", "params.fast: must be < slow (got 30 >= 20)"),
    ({"params": {"fats": 3}}, "InvalidParams", "params.fats: unknown parameter"),
    ({"params": {}, "strategy": "nope"}, "UnknownStrategy", "spec.strategy: Invalid strategy key: nope"),
    ({"params": {}, "modes": {"fallback": {"params": {"fast": 40}}}}, "InvalidParams",
     "modes.fallback: params.fast: must be < slow (got 40 >= 26)"),
])
def test_invalid_edit_keeps_the_last_valid_spec(sc_spec: dict[str, Any], reason: str, message: str) -> None:
    good = compute_strategyconfig_status(make_sc({"fast": 10, "slow": 30}), [], NOW)
    later = NOW + dt.timedelta(minutes=1)
    params = sc_spec.pop("params")
    bad = compute_strategyconfig_status(make_sc(params, previous=good.to_wire(), **sc_spec), [], later)
    valid = get_condition(bad.conditions, "Valid")
    assert valid is not None
    assert (valid.status.value, valid.reason) == ("False", reason)
    assert message in valid.message
    assert valid.last_transition_time == later
    assert bad.valid_spec == good.valid_spec
    assert bad.config_hash == good.config_hash
    events = strategyconfig_events(good, bad)
    assert [(e.type, e.reason) for e in events] == [("Warning", "InvalidConfig")]


def test_strategyconfig_status_round_trip_needs_no_write() -> None:
    new = compute_strategyconfig_status(make_sc({"fast": 10, "slow": 30}), ["a"], NOW)
    stored = as_stored(new.to_wire())
    assert stored["validSpec"]["params"]["atr_mult"] == 2
    assert isinstance(stored["validSpec"]["params"]["atr_mult"], int)
    again = make_sc({"fast": 10, "slow": 30}, previous=stored)
    assert strategyconfig_status_patch(again.status, compute_strategyconfig_status(again, ["a"], NOW)) is None


# ------------------------------------------------------------------------------------------ leases


def test_a_malformed_lease_never_crashes_the_operator() -> None:
    obs = observe_lease({"metadata": {"annotations": {
        "tradewarden.io/telemetry": "{not json", "tradewarden.io/kill-acks": "[1, 2]",
        "tradewarden.io/applied-config-hash": "sha256:x"}}, "spec": {"renewTime": "yesterday"}})
    assert obs.lease_exists
    assert obs.renew_time is None
    assert obs.telemetry is None
    assert obs.applied_hash == "sha256:x"
    assert len(obs.problems) == 2


def test_a_lease_is_parsed() -> None:
    obs = observe_lease({"metadata": {"annotations": {
        "tradewarden.io/telemetry": json.dumps({"heartbeat": "2026-03-01T12:00:00Z", "equity": 5,
                                                "botTrip": "halt_all"}),
        "tradewarden.io/kill-acks": json.dumps({"global": {"generation": 2, "mode": "close_only",
                                                           "at": "2026-03-01T12:00:00.5Z"}})}},
        "spec": {"renewTime": "2026-03-01T12:00:00.123456Z"}})
    assert obs.renew_time == NOW.replace(microsecond=123456)
    assert obs.bot_trip.value == "halt_all"
    assert obs.kill_acks["global"].generation == 2
