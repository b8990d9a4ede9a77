"""Unit tests of the promotion gate's pure policies: each condition's reasons, the override, when a replay
is due, the capital ramp, the consensus trips and their effects, and the Events and writes they cause.

Table-driven, no cluster: ``make_bot(name, *mods)`` states only what a row changes. The integration
tests (tests/integration/test_promotion*.py) run the same policies through the real operator.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from support.controller_objects import (
    CONFIG_HASH,
    DEFAULTS,
    NOW,
    annotations,
    consensus_record,
    gate_override,
    live,
    make_bot,
    make_switch,
    override,
    replay_record,
    runner,
    spec,
    status,
    valid_config,
    vote_record,
)
from tradewarden.api.conditions import get_condition
from tradewarden.api.runtime import compute_gate_hash
from tradewarden.api.tradingbot import (
    CapitalSpec,
    CapitalStatus,
    ConsensusStatus,
    ReplayEvidence,
    TradingBot,
    TradingBotStatus,
    TradingMode,
    Vote,
)
from tradewarden.consensus import score
from tradewarden.controller import gate
from tradewarden.controller.builders import bot_config_hash, build_bot_plan
from tradewarden.controller.ramp import next_capital
from tradewarden.controller.status import (
    ConfigSource,
    bot_events,
    bot_status_patch,
    compute_bot_status,
    next_bot_check,
    ramp_events,
)

MIN = dt.timedelta(minutes=1)
RESET = gate.ANN_RESET_TRIP


def ago(minutes: float) -> str:
    return (NOW - minutes * MIN).isoformat()


# ------------------------------------------------------------------------------------------ ReplayVerified

REPLAY_CASES: list[tuple[str, list[Any], bool, str, str]] = [
    # (id, mods, ok, reason, a phrase of the message)
    ("missing", [], False, "Missing", "no replay evidence yet"),
    ("only-an-override-record", [status(replay={"overrideReason": "old"})], False, "Missing", "no replay"),
    ("config-changed", [status(replay=replay_record(configHash="sha256:old"))], False, "Stale", "config changed"),
    ("failed-residuals", [status(replay=replay_record(passed=False, reason="Failed", residuals=2,
                                                      message="the replay found 2 residuals"))],
     False, "Failed", "2 residuals"),
    ("could-not-run", [status(replay=replay_record(passed=False, reason="Failed", tradesCompared=0, resultHash="",
                                                   message="the replay did not finish within 120 s"))],
     False, "Failed", "did not finish"),
    ("too-few-trades", [status(replay=replay_record(passed=False, reason="InsufficientTrades", tradesCompared=0))],
     False, "InsufficientTrades", "did not pass"),
    ("spec-tightened-residuals", [spec(promotion={"maxResiduals": 0}),
                                  status(replay=replay_record(residuals=1))], False, "Failed", "maxResiduals"),
    ("spec-tightened-trades", [spec(promotion={"minTrades": 5}), status(replay=replay_record())], False,
     "InsufficientTrades", "minTrades needs 5"),
    ("fresh-at-the-limit", [status(replay=replay_record(finishedAt=ago(60)))], True, "Passed", "passed"),
    ("stale-one-second-over", [status(replay=replay_record(
        finishedAt=(NOW - 60 * MIN - dt.timedelta(seconds=1)).isoformat()))], False, "Stale", "maxEvidenceAge"),
    ("passed", [status(replay=replay_record())], True, "Passed", "3 trades, 0 residuals"),
    ("override-without-evidence", [override("exchange outage, INC-42")], True, "Overridden",
     "exchange outage, INC-42 (GateOverride inc, until 2026-03-01T13:00:00Z) (without the override: Missing"),
    ("override-of-a-failure", [override("INC-42"),
                               status(replay=replay_record(passed=False, reason="Failed"))], True, "Overridden",
     "without the override: Failed"),
    ("override-with-a-ticket", [override("INC-42", ticket="CHG-7")], True, "Overridden",
     "INC-42 (GateOverride inc, ticket CHG-7, until"),
    ("too-long-override-not-honoured", [override("INC-42", lasting_hours=4.01),
                                        status(replay=replay_record(passed=False, reason="Failed"))],
     False, "Failed", "GateOverride inc is not honoured: spec.expiresAt may be at most 4 hours"),
    ("expired-override-lapsed", [override("INC-42", minutes_left=-1), status(replay=replay_record())], True,
     "Passed", "3 trades, 0 residuals"),
    ("of-the-two-the-one-ending-first", [override("INC-1", name="later", minutes_left=90),
                                         override("INC-2", name="sooner", minutes_left=30)], True, "Overridden",
     "INC-2 (GateOverride sooner"),
]


@pytest.mark.parametrize(("mods", "ok", "reason", "phrase"), [c[1:] for c in REPLAY_CASES],
                         ids=[c[0] for c in REPLAY_CASES])
def test_replay_verified(mods: list[Any], ok: bool, reason: str, phrase: str) -> None:
    check = gate.check_replay(make_bot("bot", live(), *mods), CONFIG_HASH, NOW)
    assert (check.ok, check.reason) == (ok, reason)
    assert phrase in check.message


def test_replay_reasons_are_the_issues_words() -> None:
    reasons = {c[3] for c in REPLAY_CASES}
    assert reasons == {"Passed", "Failed", "Stale", "Missing", "InsufficientTrades", "Overridden"}


# ------------------------------------------------------------------------------------------ ConsensusApproved

V = vote_record
CONSENSUS_CASES: list[tuple[str, list[Any], bool, str]] = [
    ("missing", [], False, "Missing"),
    ("no-decision", [status(consensus={"phase": 3})], False, "Missing"),
    ("other-replay", [status(consensus=consensus_record(replayResultHash="sha256:older"))], False, "Stale"),
    ("unbound", [status(consensus=consensus_record(replayResultHash=""))], False, "Stale"),
    ("approved", [status(consensus=consensus_record())], True, "Approved"),
    ("below-threshold", [status(consensus=consensus_record(votes=[V("a"), V("b"), V("c", verdict="HOLD")]))], False,
     "Rejected"),
    ("tie-is-rejected", [spec(promotion={"phase": 1}),
                         status(consensus=consensus_record(votes=[V("a"), V("b", verdict="ABORT")]))], False,
     "Rejected"),
    ("held-over-30pct-medium", [status(consensus=consensus_record(votes=[V("a"), V("b", risk="MEDIUM")]))], False,
     "Held"),
    ("close-only-over-half-high", [status(consensus=consensus_record(votes=[
        V("a", risk="HIGH"), V("b", risk="HIGH"), V("c")]))], False, "CloseOnly"),
    ("halt-on-any-critical", [status(consensus=consensus_record(votes=[V("a"), V("b"), V("c", risk="CRITICAL")]))],
     False, "Halt"),
    ("stale-vote-age", [status(consensus=consensus_record(votes=[V(age_minutes=61)]))], False, "Stale"),
    ("undated-vote", [status(consensus=consensus_record(votes=[{**V(), "at": None}]))], False, "Stale"),
    # Votes bound to older evidence are ignored: a CRITICAL one from the last round changes nothing...
    ("stale-critical-vote-ignored", [status(consensus=consensus_record(votes=[
        V("a"), V("b", verdict="ABORT", risk="CRITICAL", evidence="sha256:older")]))], True, "Approved"),
    # ...and when every vote judged older evidence, there is no consensus at all.
    ("only-stale-votes", [status(consensus=consensus_record(votes=[V(evidence="sha256:older")]))], False, "Missing"),
    # One reviewer, one vote: a second one under the same name is ignored, whatever it says.
    ("duplicate-voter-ignored", [status(consensus=consensus_record(votes=[
        V("twin"), V("twin", verdict="ABORT", risk="CRITICAL")]))], True, "Approved"),
    # The gate scores with the phase in the spec now: a raised phase fails a consensus of 75 %.
    ("phase-raised-since", [spec(promotion={"phase": 3}), status(consensus=consensus_record(
        phase=1, thresholdPct=70, scorePct=75, votes=[V("a"), V("b", verdict="PROCEED_WITH_CAUTION")]))], False,
     "Rejected"),
]


@pytest.mark.parametrize(("mods", "ok", "reason"), [c[1:] for c in CONSENSUS_CASES],
                         ids=[c[0] for c in CONSENSUS_CASES])
def test_consensus_approved(mods: list[Any], ok: bool, reason: str) -> None:
    bot = make_bot("bot", live(), status(replay=replay_record()), *mods)
    check = gate.check_consensus(bot, NOW)
    assert (check.ok, check.reason) == (ok, reason), check.message
    assert check.message


def test_consensus_reasons_are_the_issues_words() -> None:
    assert {c[3] for c in CONSENSUS_CASES} == {"Approved", "Rejected", "Held", "CloseOnly", "Halt", "Missing",
                                               "Stale"}


def test_a_tie_is_exactly_fifty_percent_and_fails_at_any_phase() -> None:
    votes = [Vote.model_validate(V("a")), Vote.model_validate(V("b", verdict="HOLD"))]
    for phase in range(1, 6):
        outcome = score(votes, "sha256:e", phase)
        assert (outcome.decision, outcome.score_pct) == ("Rejected", 50.0)
        assert "tie" in outcome.message


# ------------------------------------------------------------------------------------------ the decision


def test_the_override_opens_the_replay_gate_only_never_the_consensus() -> None:
    overridden = [live(), override("INC-42")]
    no_consensus = gate.evaluate_promotion(make_bot("bot", *overridden), CONFIG_HASH, NOW)
    assert (no_consensus.effective_mode.value, no_consensus.reason) == ("paper", "ConsensusMissing")
    rejected = gate.evaluate_promotion(make_bot("bot", *overridden, status(replay=replay_record(
        passed=False, reason="Failed"), consensus=consensus_record(votes=[V("a"), V("b", verdict="HOLD")]))),
        CONFIG_HASH, NOW)
    assert (rejected.effective_mode.value, rejected.reason) == ("paper", "ConsensusRejected")
    approved = gate.evaluate_promotion(make_bot("bot", *overridden, status(replay=replay_record(
        passed=False, reason="Failed"), consensus=consensus_record())), CONFIG_HASH, NOW)
    assert (approved.effective_mode.value, approved.reason) == ("live", "Promoted")
    assert approved.replay.reason == "Overridden"
    assert approved.gate_hash == compute_gate_hash(CONFIG_HASH, "sha256:r", "sha256:e")


def test_a_config_change_drops_a_live_bot_to_paper() -> None:
    bot = make_bot("bot", live(), status(replay=replay_record(), consensus=consensus_record(),
                                         effectiveMode="live"))
    assert gate.evaluate_promotion(bot, CONFIG_HASH, NOW).promoted
    changed = gate.evaluate_promotion(bot, "sha256:" + "d" * 64, NOW)
    assert (changed.effective_mode.value, changed.promoted, changed.reason) == ("paper", False, "ConfigChanged")
    assert changed.replay.reason == "Stale"
    assert changed.consensus.ok, "the consensus itself did not change; the replay it judged is for the old config"


# ------------------------------------------------------------------------------------------ is a replay due?

EXPORT = gate.ExportInfo(config_hash=CONFIG_HASH, exported_at=NOW - MIN, data_hash="sha256:d2")
DUE_CASES: list[tuple[str, list[Any], gate.ExportInfo, str | None]] = [
    ("paper-bot-wants-nothing", [spec(mode="paper")], EXPORT, None),
    ("export-of-another-config", [live()], gate.ExportInfo("sha256:old", NOW, "sha256:d2"), None),
    ("no-replay-yet", [live()], EXPORT, "no replay yet"),
    ("config-changed", [live(), status(replay=replay_record(configHash="sha256:old"))], EXPORT,
     "the config changed"),
    ("same-export-again", [live(), status(replay=replay_record(exportedAt=(NOW - MIN).isoformat()))], EXPORT, None),
    ("new-market-data", [live(), status(replay=replay_record())], EXPORT, "new market data"),
    ("retry-a-replay-that-could-not-run", [live(), status(replay=replay_record(resultHash="", passed=False))],
     EXPORT, "the last replay could not run"),
    ("same-data-young-evidence", [live(), status(replay=replay_record(dataHash="sha256:d2"),
                                                 consensus=consensus_record())], EXPORT, None),
    ("same-data-half-age-refresh", [live(), status(replay=replay_record(dataHash="sha256:d2", finishedAt=ago(30)),
                                                   consensus=consensus_record())], EXPORT,
     "refresh before the evidence goes stale"),
    ("live-in-force-keeps-evidence-fresh", [spec(mode="paper"), status(
        effectiveMode="live", replay=replay_record(dataHash="sha256:d2", finishedAt=ago(31)))], EXPORT,
     "refresh before the evidence goes stale"),
    ("override-needs-a-vote-at-once", [live(), override("INC-1"), status(
        replay=replay_record(dataHash="sha256:d2", passed=False, reason="Failed", exportedAt=(NOW - MIN).isoformat()))],
     EXPORT, "the replay gate is overridden and the consensus has not judged this replay"),
    ("override-with-a-vote-waits-for-data", [live(), override("INC-1"), status(
        replay=replay_record(dataHash="sha256:d2", passed=False, reason="Failed", exportedAt=(NOW - MIN).isoformat()),
        consensus=consensus_record())], EXPORT, None),
    ("failed-same-data-no-vote", [live(), status(replay=replay_record(dataHash="sha256:d2", passed=False,
                                                                      reason="Failed"))], EXPORT, None),
]


@pytest.mark.parametrize(("mods", "export", "why"), [c[1:] for c in DUE_CASES], ids=[c[0] for c in DUE_CASES])
def test_replay_due(mods: list[Any], export: gate.ExportInfo, why: str | None) -> None:
    assert gate.replay_due(make_bot("bot", *mods), export, CONFIG_HASH, NOW) == why


# ------------------------------------------------------------------------------------------ the ramp

STEPS = CapitalSpec(live_steps=[100.0, 500.0, 1000.0], ramp_dwell_minutes=60)


def cap(step: int, since_minutes: float, paused: bool = False, amount: float | None = None) -> CapitalStatus:
    return CapitalStatus(step=step, amount=amount if amount is not None else STEPS.live_steps[step],
                         since=NOW - since_minutes * MIN, paused=paused)


def evidence(replay_minutes: float = 1, vote_minutes: float = 1, evidence_hash: str = "sha256:e"
             ) -> tuple[ReplayEvidence, ConsensusStatus]:
    replay = ReplayEvidence.model_validate(replay_record(finishedAt=ago(replay_minutes)))
    consensus = ConsensusStatus.model_validate(consensus_record(
        evidenceHash=evidence_hash, votes=[V("a", age_minutes=vote_minutes), V("b", age_minutes=vote_minutes)]))
    return replay, consensus


RAMP_CASES: list[tuple[str, CapitalStatus | None, bool, CapitalSpec, tuple[ReplayEvidence, ConsensusStatus],
                       int | None, str | None]] = [
    # (id, previous, live, spec, evidence, step after (None: no ramp), change)
    ("paper-no-ramp", None, False, STEPS, evidence(), None, None),
    ("first-promotion-step-0", None, True, STEPS, evidence(), 0, "start"),
    ("gate-fails-reset", cap(2, 600), False, STEPS, evidence(), None, "reset"),
    ("dwell-not-over", cap(0, 59), True, STEPS, evidence(), 0, None),
    ("dwell-over-but-evidence-from-before-the-step", cap(0, 61), True, STEPS, evidence(62, 62), 0, None),
    ("dwell-over-replay-fresh-votes-old", cap(0, 61), True, STEPS, evidence(1, 62), 0, None),
    ("dwell-over-fresh-evidence-advance", cap(0, 61), True, STEPS, evidence(1, 1), 1, "advance"),
    ("one-step-at-a-time", cap(1, 600), True, STEPS, evidence(1, 1), 2, "advance"),
    ("last-step-stays", cap(2, 600), True, STEPS, evidence(1, 1), 2, None),
    ("paused-holds", cap(0, 600, paused=True), True, STEPS.model_copy(update={"ramp_paused": True}),
     evidence(1, 1), 0, None),
    ("pausing-is-recorded", cap(0, 600), True, STEPS.model_copy(update={"ramp_paused": True}), evidence(1, 1), 0,
     "pause"),
    ("steps-shortened-clamps", cap(2, 5), True, CapitalSpec(live_steps=[100.0, 200.0], ramp_dwell_minutes=60),
     evidence(), 1, None),
    ("dwell-zero-needs-fresh-evidence-still", cap(0, 0.5), True, STEPS.model_copy(update={"ramp_dwell_minutes": 0}),
     evidence(1, 1), 0, None),
    ("dwell-zero-advances-on-fresh-evidence", cap(0, 2), True, STEPS.model_copy(update={"ramp_dwell_minutes": 0}),
     evidence(1, 1), 1, "advance"),
]


@pytest.mark.parametrize(("previous", "is_live", "capital", "found", "step", "change"), [c[1:] for c in RAMP_CASES],
                         ids=[c[0] for c in RAMP_CASES])
def test_ramp(previous: CapitalStatus | None, is_live: bool, capital: CapitalSpec,
              found: tuple[ReplayEvidence, ConsensusStatus], step: int | None, change: str | None) -> None:
    ramp = next_capital(previous, is_live, capital, found[0], found[1], 3, NOW)
    if step is None:
        assert ramp.capital is None
    else:
        assert ramp.capital is not None
        assert ramp.capital.step == step
        assert ramp.capital.amount == capital.live_steps[step]
        assert ramp.capital.paused is capital.ramp_paused
        moved = change in ("start", "advance")
        assert (ramp.capital.since == NOW) is moved
    assert (ramp.change.kind if ramp.change else None) == change


def test_a_new_amount_at_the_same_step_takes_effect() -> None:
    ramp = next_capital(cap(1, 5), True, CapitalSpec(live_steps=[100.0, 250.0, 1000.0]), None, None, 3, NOW)
    assert ramp.capital is not None
    assert (ramp.capital.step, ramp.capital.amount) == (1, 250.0)


# ------------------------------------------------------------------------------------------ the plan and status


def green(*mods: Any) -> TradingBot:
    """A live-requested bot whose evidence passes for the config of valid_config()."""
    config_hash = bot_config_hash(make_bot("bot", live()), valid_config())
    return make_bot("bot", live(capital={"liveSteps": [100, 500, 1000], "rampDwellMinutes": 0}),
                    status(replay=replay_record(configHash=config_hash), consensus=consensus_record()), *mods)


def source() -> ConfigSource:
    return ConfigSource("momentum", True, True, True, "", valid_config())


def reconcile(bot: TradingBot, now: dt.datetime = NOW, switches: list[Any] | None = None
              ) -> tuple[TradingBotStatus, Any]:
    run = runner(renewed=now)
    plan = build_bot_plan(bot, source().valid, switches or [], run, DEFAULTS, now)
    return compute_bot_status(bot, source(), plan, run, now), plan


def settle(bot: TradingBot, new: TradingBotStatus) -> TradingBot:
    """The bot as the cache shows it after the status write."""
    return bot.model_copy(update={"status": TradingBotStatus.model_validate(new.to_wire())})


def test_promotion_puts_the_first_step_into_the_runtime_config_and_the_status() -> None:
    bot = green()
    new, plan = reconcile(bot)
    assert plan.runtime.effective_mode.value == "live"
    assert plan.runtime.gate_hash_matches()
    assert plan.runtime.capital.live_capital == 100.0
    assert new.capital == CapitalStatus(step=0, amount=100.0, since=NOW, paused=False)
    assert [e.reason for e in ramp_events(plan)] == ["RampStep"]
    events = {e.reason: e for e in bot_events(bot.status, new)}
    assert {"Passed", "Approved", "Promoted", "ModeChanged"} <= set(events)
    assert events["Promoted"].type == "Normal"
    assert events["Passed"].message.startswith("ReplayVerified: ")
    # Written once: the same inputs a second later give the same status and no write, no Event.
    later = NOW + dt.timedelta(seconds=1)
    again, plan2 = reconcile(settle(bot, new), later)
    assert bot_status_patch(settle(bot, new).status, again) is None
    assert ramp_events(plan2) == []


def test_fresh_evidence_at_a_step_advances_the_ramp_and_a_failure_resets_it() -> None:
    bot = green()
    first, _ = reconcile(bot)
    at_step_0 = settle(bot, first)
    later = NOW + 2 * MIN
    # A new round after the step began: replay and votes newer than capital.since.
    fresh = gate.record_round(at_step_0, gate.GateRound(
        bot.metadata.uid,
        ReplayEvidence.model_validate(replay_record(configHash=bot.status.replay.config_hash,  # type: ignore[union-attr]
                                                    resultHash="sha256:r2", finishedAt=(NOW + MIN).isoformat())),
        ConsensusStatus.model_validate(consensus_record(replayResultHash="sha256:r2", votes=[
            {**V(), "at": (NOW + MIN).isoformat()}]))))
    second, plan = reconcile(fresh, later)
    assert second.capital is not None
    assert (second.capital.step, second.capital.amount, second.capital.since) == (1, 500.0, later)
    assert plan.runtime.capital.live_capital == 500.0
    assert [e.message for e in ramp_events(plan)] == [
        "step 0 -> 1: 100 -> 500 USDT (fresh passing evidence after 0 min at step 0)"]
    # The evidence goes stale: paper, no ramp, a RampReset Warning and a null for status.capital.
    at_step_1 = settle(fresh, second)
    stale_time = NOW + 3 * 60 * MIN
    third, plan3 = reconcile(at_step_1, stale_time)
    assert third.effective_mode.value == "paper"
    assert third.capital is None
    assert plan3.runtime.capital.live_capital == 0.0
    (reset,) = ramp_events(plan3)
    assert (reset.type, reset.reason) == ("Warning", "RampReset")
    assert "step 1 (500 USDT)" in reset.message
    patch = bot_status_patch(at_step_1.status, third)
    assert patch is not None
    assert patch["status"]["capital"] is None
    promoted = get_condition(third.conditions, "Promoted")
    assert promoted is not None
    assert (promoted.status.value, promoted.reason) == ("False", "ReplayStale")
    events = {e.reason: e for e in bot_events(at_step_1.status, third)}
    assert events["Stale"].type == "Warning"
    assert events["ReplayStale"].type == "Warning"


def test_paper_since_is_kept_through_live_and_cleared_in_signals() -> None:
    bot = green()
    new, _ = reconcile(bot)
    assert new.paper_since == NOW
    settled = settle(bot, new)
    later = NOW + 5 * MIN
    kept, _ = reconcile(settled, later)
    assert kept.paper_since == NOW
    signals = settled.model_copy(update={"spec": settled.spec.model_copy(update={"mode": TradingMode.SIGNALS})})
    cleared, _ = reconcile(signals, later)
    assert cleared.paper_since is None
    assert bot_status_patch(settled.status, cleared)["status"]["paperSince"] is None  # type: ignore[index]


@pytest.mark.parametrize(("decision", "votes", "mode"), [
    ("Halt", [V("a"), V("b", verdict="ABORT", risk="CRITICAL")], "halt_all"),
    ("CloseOnly", [V("a", risk="HIGH"), V("b", risk="HIGH"), V("c")], "close_only"),
])
def test_halt_and_close_only_trip_the_bot_until_the_reset_annotation_changes(
        decision: str, votes: list[dict[str, Any]], mode: str) -> None:
    bot = make_bot("bot", live(), annotations(**{RESET: "r1"}))
    round_ = gate.GateRound(bot.metadata.uid, ReplayEvidence.model_validate(replay_record()),
                            ConsensusStatus.model_validate(consensus_record(decision=decision, votes=votes,
                                                                            message="CRITICAL risk")))
    tripped = gate.record_round(bot, round_)
    trip = tripped.status.gate_trip
    assert trip is not None
    assert (trip.mode.value, trip.reset_annotation, trip.at) == (mode, "r1", NOW - 10 * MIN)
    new, plan = reconcile(tripped)
    assert plan.kill.mode.value == mode
    assert plan.kill.sources == ("consensus",)
    assert plan.runtime.kill_mode.value == mode
    assert new.phase.value == "Halted"
    engaged = get_condition(new.conditions, "KillSwitchEngaged")
    assert engaged is not None
    assert (engaged.status.value, engaged.reason) == ("True", "ConsensusTrip")
    assert RESET in engaged.message
    reasons = {e.reason for e in bot_events(bot.status, new)}
    assert {"TripEngaged", "KillSwitchEngaged", decision} <= reasons
    # The same trip again (the round merged twice before the cache catches up): the same status.
    assert gate.record_round(tripped, round_).status == tripped.status
    # A stronger switch wins over a close-only trip, as everywhere.
    assert reconcile(tripped, switches=[make_switch(mode="flatten")])[1].kill.mode.value == "flatten"
    # A human changes the annotation: released, dropped from the status (null in the patch), an Event.
    settled = settle(tripped, new)
    reset = settled.model_copy(update={"metadata": settled.metadata.model_copy(
        update={"annotations": {RESET: "r2"}})})
    released, plan2 = reconcile(reset)
    assert plan2.kill.mode.value == "off"
    assert released.gate_trip is None
    assert bot_status_patch(settled.status, released)["status"]["gateTrip"] is None  # type: ignore[index]
    assert "TripReset" in {e.reason for e in bot_events(settled.status, released)}
    # The consensus still says so: no promotion until the reviewers judge new evidence.
    assert released.effective_mode.value == "paper"


def test_a_held_decision_holds_promotion_and_trips_nothing() -> None:
    bot = make_bot("bot", live())
    held = gate.record_round(bot, gate.GateRound(bot.metadata.uid, ReplayEvidence.model_validate(replay_record()),
                                                 ConsensusStatus.model_validate(consensus_record(
                                                     decision="Held", votes=[V("a"), V("b", risk="MEDIUM")]))))
    assert held.status.gate_trip is None
    assert reconcile(held)[1].kill.mode.value == "off"


def test_override_events_only_when_it_takes_effect_or_its_reason_changes() -> None:
    bot = green(override("INC-1 exchange outage"))
    first, _ = reconcile(bot)
    assert first.replay is not None
    assert first.replay.override_reason is not None
    assert first.replay.override_reason.startswith("INC-1 exchange outage (GateOverride inc, until ")
    warnings = [e for e in bot_events(bot.status, first) if e.reason == "Overridden"]
    assert len(warnings) == 1
    assert warnings[0].type == "Warning"
    assert "INC-1 exchange outage" in warnings[0].message
    settled = settle(bot, first)
    again, _ = reconcile(settled, NOW + MIN)
    assert "Overridden" not in {e.reason for e in bot_events(settled.status, again)}
    changed_bot = gate.with_override(settled, gate.active_override([gate_override("INC-2")], "bot", NOW))
    changed, _ = reconcile(changed_bot)
    messages = [e.message for e in bot_events(settled.status, changed) if e.reason == "Overridden"]
    assert len(messages) == 1
    assert messages[0].startswith("the replay gate is overridden: INC-2 (GateOverride inc")
    assert messages[0].endswith("; the consensus still has to approve")
    removed_bot = gate.with_override(settled, gate.NO_OVERRIDE)  # deleted, or expired
    removed, _ = reconcile(removed_bot)
    assert removed.replay is not None
    assert removed.replay.override_reason is None
    patch = bot_status_patch(settled.status, removed)
    assert patch is not None
    assert patch["status"]["replay"]["overrideReason"] is None
    assert "OverrideEnded" in {e.reason for e in bot_events(settled.status, removed)}


def test_an_override_that_would_last_too_long_is_not_honoured_with_one_warning() -> None:
    bot = make_bot("bot", live(), override("INC-9", lasting_hours=5))
    first, _ = reconcile(bot)
    assert first.replay is None
    ignored = [e for e in bot_events(bot.status, first) if e.reason == "OverrideIgnored"]
    assert [e.type for e in ignored] == ["Warning"]
    settled = settle(bot, first)
    again, _ = reconcile(settled, NOW + MIN)
    assert bot_status_patch(settled.status, again) is None
    assert bot_events(settled.status, again) == []


def test_signals_and_paper_bots_get_no_gate_events() -> None:
    for mode in ("signals", "paper"):
        bot = make_bot("bot", spec(mode=mode))
        new, _ = reconcile(bot)
        reasons = {e.reason for e in bot_events(bot.status, new)}
        assert not reasons & {"Missing", "LiveNotRequested", "Passed", "Stale"}, reasons


def test_the_reconciler_comes_back_when_the_dwell_ends() -> None:
    bot = make_bot("bot", live(capital={"liveSteps": [100, 500], "rampDwellMinutes": 30}),
                   status(replay=replay_record(configHash=bot_config_hash(make_bot(), valid_config())),
                          consensus=consensus_record(), capital={"step": 0, "amount": 100,
                                                                  "since": ago(20)}))
    _, plan = reconcile(bot)
    assert plan.ramp.dwell_ends == NOW + 10 * MIN
    # Evidence expires 50 minutes from now, the heartbeat in 30 s: the dwell is the next boundary but one.
    assert next_bot_check(bot, plan, runner(renewed=NOW - dt.timedelta(seconds=29)), NOW) == pytest.approx(1.5)
    assert next_bot_check(bot, plan, runner(renewed=None), NOW) == pytest.approx(10 * 60 + 0.5)


def test_a_reconcile_waits_for_the_cache_to_show_its_own_status_write() -> None:
    """A ramp step's start and paperSince are recorded at "now": a reconcile on a cache that does not
    show our last status write yet would record them again, at another time (handlers.reconcile_bot)."""
    from tradewarden.controller.handlers import WriteMemory

    clock = [0.0]
    memory = WriteMemory(clock=lambda: clock[0])
    key = ("status", "TradingBot", "ns", "bot")
    assert not memory.lags(key, "100")
    memory.record(key, "any", "120")
    assert memory.lags(key, "110")
    assert not memory.lags(key, "120")
    assert not memory.lags(key, "130")  # someone wrote after us: the cache is newer, go ahead
    clock[0] = 60.0
    assert not memory.lags(key, "110")  # a watch that never delivers does not block reconciles for ever
