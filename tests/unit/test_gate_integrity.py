"""The gate's integrity checks, table by table: the ledger, the runtime signature, the runner's refusal,
the export date and the market data comparison."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from support.builders import TEST_SIGNER, make_runtime
from support.evidence import bars, make_export
from tradewarden.api.evidence import EvidenceExport
from tradewarden.api.market import Candle
from tradewarden.api.runtime import live_refusal
from tradewarden.api.tradingbot import ReplayEvidence, TradingBot, TradingBotStatus, TradingMode
from tradewarden.controller import leases, ledger
from tradewarden.controller.builders import build_configmap
from tradewarden.controller.keys import GateSigner
from tradewarden.controller.promotion import future_refusal
from tradewarden.controller.sealing import runtime_tampering, seal_runtime
from tradewarden.exchange.marketcheck import compare

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def bot(status: TradingBotStatus | None = None, uid: str = "u1") -> TradingBot:
    return TradingBot.model_validate({
        "metadata": {"name": "b", "namespace": "ns", "uid": uid, "generation": 1},
        "spec": {"strategyConfigRef": "s", "exchange": {"id": "binance"}},
        "status": (status or TradingBotStatus()).to_wire()})


PASSED = ReplayEvidence(config_hash="sha256:c", result_hash="sha256:r", passed=True, reason="Passed",
                        trades_compared=9, finished_at=NOW)


# ------------------------------------------------------------------------------------------ ledger


def test_a_status_without_a_ledger_that_holds_evidence_was_forged() -> None:
    forged = TradingBotStatus(replay=PASSED, effective_mode=TradingMode.LIVE)
    assert ledger.tampered_fields(forged, None) == ["effectiveMode", "replay"]
    assert ledger.tampered_fields(TradingBotStatus(), None) == []


def test_the_gate_decides_on_the_ledger_never_on_the_status() -> None:
    held = ledger.GateLedger(bot_uid="u1", namespace="ns", bot="b", effective_mode=TradingMode.PAPER)
    trusted = ledger.trusted(bot(TradingBotStatus(replay=PASSED, effective_mode=TradingMode.LIVE)), held)
    assert trusted.status.replay is None
    assert trusted.status.effective_mode == TradingMode.PAPER
    assert ledger.trusted(bot(TradingBotStatus(replay=PASSED)), None).status.replay is None


def test_a_mirror_write_still_to_come_is_not_tampering() -> None:
    before = ledger.GateLedger(bot_uid="u1", namespace="ns", bot="b")
    status = TradingBotStatus(effective_mode=TradingMode.PAPER, replay=PASSED)
    after = ledger.next_ledger(bot(), before, status, NOW)
    assert after.previous == ledger.fingerprint(before)
    assert ledger.tampered_fields(TradingBotStatus(), after) == []  # the status write has not happened yet
    assert ledger.tampered_fields(status, after) == []  # it has
    other = status.model_copy(update={"replay": PASSED.model_copy(update={"residuals": 0, "trades_compared": 99})})
    assert ledger.tampered_fields(other, after) == ["replay"]


def test_a_ledger_of_another_bot_uid_is_no_ledger() -> None:
    held = ledger.GateLedger(bot_uid="u1", namespace="ns", bot="b", replay=PASSED)
    cm = ledger.ledger_configmap(held, "tw-system")
    assert ledger.read_ledger(ledger.GateLedger, cm, "u1") == held
    assert ledger.read_ledger(ledger.GateLedger, cm, "u2") is None  # a bot deleted and re-created under the same name
    assert cm["metadata"]["namespace"] == "tw-system"
    assert cm["metadata"]["name"] == "gate-u1"


def test_intact_turns_false_on_a_problem_and_back_after_the_hold() -> None:
    held = ledger.next_ledger(bot(), None, TradingBotStatus(), NOW, ("ForeignWrite", "ConfigMap x changed"))
    status, reason, message, until = ledger.integrity(held, NOW + dt.timedelta(minutes=1))
    assert (status, reason) == (False, "ForeignWrite")
    assert "ConfigMap x changed" in message
    assert until == NOW + ledger.INTEGRITY_HOLD
    assert ledger.integrity(held, NOW + ledger.INTEGRITY_HOLD)[0] is True


# ------------------------------------------------------------------------------------------ signatures


def test_an_unchanged_config_keeps_its_signature_and_a_new_one_is_never_older() -> None:
    signer = GateSigner.generate("tw")
    desired = make_runtime(signed=False)
    first = seal_runtime(desired, None, signer, NOW)
    live = build_configmap(bot(), first)
    assert seal_runtime(desired, live, signer, NOW + dt.timedelta(hours=1)) == first
    changed = desired.model_copy(update={"kill_reason": "x"})
    earlier = seal_runtime(changed, live, signer, NOW - dt.timedelta(hours=1))  # the clock stepped back
    assert earlier.issued_at == first.issued_at + 1
    assert runtime_tampering(live, signer.public) is None


@pytest.mark.parametrize(("change", "why"), [
    ({"immutable": True}, "immutable"),
    ({"data": {"runtime.json": "{}"}}, "no readable"),
])
def test_a_runtime_configmap_the_operator_did_not_write_is_told_apart(change: dict[str, object], why: str) -> None:
    live = build_configmap(bot(), TEST_SIGNER.sign(make_runtime(signed=False), 1))
    live.update(change)
    found = runtime_tampering(live, TEST_SIGNER.public)
    assert found is not None
    assert why in found


def test_a_forged_live_document_is_not_signed_by_the_operator() -> None:
    honest = make_runtime(mode="live", live_capital=100.0)
    forged = honest.model_copy(update={"capital": honest.capital.model_copy(update={"live_capital": 1000.0})})
    live = build_configmap(bot(), forged)
    found = runtime_tampering(live, TEST_SIGNER.public)
    assert found is not None
    assert "did not sign" in found


@pytest.mark.parametrize(("case", "expect"), [
    ("honest", None),
    ("unsigned", "not signed"),
    ("other key", "not signed"),
    ("other bot", "another bot"),
    ("replayed", "old permission"),
    ("no key", "not available"),
])
def test_the_runner_accepts_live_only_from_the_operator(case: str, expect: str | None) -> None:
    config = make_runtime("ns", "b", mode="live", live_capital=100.0)
    key = TEST_SIGNER.public
    newest = 0
    if case == "unsigned":
        config = make_runtime("ns", "b", mode="live", live_capital=100.0, signed=False)
    elif case == "other key":
        config = GateSigner.generate("x").sign(config, config.issued_at)
    elif case == "other bot":
        config = TEST_SIGNER.sign(config.model_copy(update={"bot": "other"}), config.issued_at)
    elif case == "replayed":
        newest = config.issued_at + 1
    elif case == "no key":
        key = None  # type: ignore[assignment]
    found = live_refusal(config, key, namespace="ns", bot="b", bot_uid="", newest_issued_at=newest)
    assert (found is None) if expect is None else (found is not None and expect in found), found
    # A move to a weaker mode never needs the operator's signature.
    paper = make_runtime("ns", "b", signed=False)
    assert live_refusal(paper, None, namespace="ns", bot="b", bot_uid="", newest_issued_at=newest) is None


# ------------------------------------------------------------------------------------------ exports


def export() -> EvidenceExport:
    return make_export(seed=1, warmup=20, window=40)


def test_an_export_dated_in_the_future_is_refused() -> None:
    honest = export().model_copy(update={"exported_at": int(NOW.timestamp() * 1000)})
    assert future_refusal(honest, NOW) is None
    ahead = honest.model_copy(update={"exported_at": int((NOW + dt.timedelta(hours=12)).timestamp() * 1000)})
    found = future_refusal(ahead, NOW)
    assert found is not None
    assert "in the future" in found
    late_window = honest.model_copy(update={"window_end": int((NOW + dt.timedelta(hours=1)).timestamp() * 1000)})
    assert future_refusal(late_window, NOW) is not None


def venue_of(candles: list[Candle]) -> object:
    by_t = {c.ts: c for c in candles}
    return lambda symbol, tf, first, last: {t: c for t, c in by_t.items() if first <= t <= last}


def test_bars_that_match_the_venue_pass_and_forged_ones_are_named() -> None:
    venue = venue_of(bars("BTC/USDT", 60, seed=1))
    ok = compare(export(), venue)  # type: ignore[arg-type]
    assert (ok.checked, ok.mismatches, ok.error) == (60, 0, "")
    forged = export()
    rows = [list(r) for r in forged.candles["BTC/USDT"]]
    rows[5][4] *= 1.02
    rows.append([rows[-1][0] + 60_000, 1, 1, 1, 1, 1])
    found = compare(forged.model_copy(update={"candles": {"BTC/USDT": rows}}), venue)  # type: ignore[arg-type]
    assert found.mismatches == 2
    assert found.checked == 61
    assert "close" in found.first[0]
    assert "no such closed bar" in found.first[1]


def test_live_needs_min_paper_minutes_re_checked_at_every_decision() -> None:
    from support.controller_objects import CONFIG_HASH, NOW, consensus_record, live, make_bot, replay_record, status
    from tradewarden.controller.gate import PAPER_TIME_SHORT, evaluate_promotion

    evidence = status(replay=replay_record(), consensus=consensus_record())
    fresh = make_bot("b", live(promotion={"minPaperMinutes": 60}), evidence,
                     status(paperSince=(NOW - dt.timedelta(minutes=59)).isoformat()))
    short = evaluate_promotion(fresh, CONFIG_HASH, NOW)
    assert (short.effective_mode, short.reason) == (TradingMode.PAPER, PAPER_TIME_SHORT)
    assert "minPaperMinutes=60" in short.message
    never = make_bot("b", live(promotion={"minPaperMinutes": 60}), evidence)  # a bot re-created with mode live
    assert evaluate_promotion(never, CONFIG_HASH, NOW).reason == PAPER_TIME_SHORT
    ripe = make_bot("b", live(promotion={"minPaperMinutes": 60}), evidence,
                    status(paperSince=(NOW - dt.timedelta(minutes=61)).isoformat()))
    assert evaluate_promotion(ripe, CONFIG_HASH, NOW).promoted


def test_votes_of_reviewers_not_configured_do_not_count() -> None:
    from support.controller_objects import CONFIG_HASH, NOW, consensus_record, live, make_bot, replay_record, status
    from tradewarden.controller.gate import evaluate_promotion

    b = make_bot("b", live(), status(replay=replay_record(), consensus=consensus_record()))
    voters = {v.reviewer for v in b.status.consensus.votes}  # type: ignore[union-attr]
    assert evaluate_promotion(b, CONFIG_HASH, NOW, frozenset(voters)).promoted
    refused = evaluate_promotion(b, CONFIG_HASH, NOW, frozenset({"someone-else"}))
    assert not refused.promoted
    assert refused.reason == "ConsensusMissing"
    assert "ignored" in refused.message


# ------------------------------------------------------------------------------------------ Leases vs pods

STARTED = "2026-12-01T11:00:00Z"


def pod(phase: str = "Running", uid: str = "pod-uid", started: str | None = STARTED) -> dict[str, object]:
    state = {"running": {"startedAt": started}} if started else {"waiting": {"reason": "ContainerCreating"}}
    return {"metadata": {"name": "b-runner-0", "uid": uid},
            "status": {"phase": phase, "containerStatuses": [{"name": "runner", "state": state}]}}


def renewed(at: str = "2026-12-01T11:05:00Z", pod_uid: str = "pod-uid",
            started_at: str | None = "2026-12-01T11:00:01Z") -> leases.RunnerObservation:
    identity = {"pod": "b-runner-0", "podUid": pod_uid, **({"startedAt": started_at} if started_at else {})}
    return leases.observe_lease({"metadata": {"annotations": {
        "tradewarden.io/runner-identity": json.dumps(identity),
        "tradewarden.io/kill-acks": json.dumps({"global": {"generation": 2, "mode": "close_only", "at": at}})}},
        "spec": {"renewTime": at}})


@pytest.mark.parametrize(("observed", "the_pod", "expect"), [
    (renewed(), pod(), ""),
    (renewed(), None, "does not exist"),
    (renewed(), pod(phase="Pending", started=None), "is Pending"),
    (renewed(pod_uid="someone-else"), pod(), "not by the runner pod"),
    (renewed(), pod(phase="Running", started=None), "container of pod b-runner-0 is not running"),
    (renewed(at="2026-12-01T10:59:00Z"), pod(), "before the runner container"),
    (renewed(started_at="2026-12-01T10:00:00Z"), pod(), "says its runner started"),
    (leases.observe_lease({"metadata": {}, "spec": {"renewTime": "2026-12-01T11:05:00Z"}}), pod(),
     "does not say which pod"),
    (leases.NO_RUNNER, None, ""),  # never renewed: nothing to believe or not
])
def test_a_lease_is_checked_against_the_runner_pod(observed: leases.RunnerObservation,
                                                   the_pod: dict[str, object] | None, expect: str) -> None:
    found = leases.pod_contradiction(observed, the_pod, "b-runner-0")
    assert (found == "") if not expect else (expect in found), found


def test_a_contradicted_lease_acknowledges_nothing_and_has_no_heartbeat() -> None:
    observed = renewed()
    assert observed.kill_acks
    assert observed.heartbeat_fresh(NOW.replace(hour=11, minute=5), 30)
    doubted = leases.not_believed(observed, "the runner pod does not exist")
    assert doubted.kill_acks == {}
    assert doubted.telemetry is None
    assert doubted.heartbeat_stale(NOW.replace(hour=11, minute=5), 30)
    assert not doubted.heartbeat_fresh(NOW.replace(hour=11, minute=5), 30)


# ------------------------------------------------------------------------------------------ admission


def test_a_runner_image_outside_the_allowed_ones_is_not_run() -> None:
    from support.controller_objects import DEFAULTS, make_bot, spec
    from tradewarden.controller.builders import admit, build_statefulset

    for image, allowed in (("tradewarden/runner:other-tag", True), ("tradewarden/runner@sha256:" + "a" * 64, True),
                           ("evil.example/miner:latest", False), ("tradewarden/runner-evil:1", False)):
        admitted, refused = admit(make_bot("b", spec(runner={"image": image})), DEFAULTS)
        sts = build_statefulset(admitted, DEFAULTS)
        ran = sts["spec"]["template"]["spec"]["containers"][0]["image"]
        assert (ran == image) is allowed, image
        assert bool(refused) is not allowed
        if not allowed:
            assert ran == DEFAULTS.runner_image
            assert refused[0].startswith("spec.runner.image:")
    extra = DEFAULTS.__class__(runner_image=DEFAULTS.runner_image, allowed_runner_images=("registry.example/q/",))
    assert admit(make_bot("b", spec(runner={"image": "registry.example/q/runner:2"})), extra)[1] == ()


def test_credentials_go_only_to_allowed_venue_urls_and_such_a_bot_is_never_live() -> None:
    from support.controller_objects import (
        CONFIG_HASH,
        DEFAULTS,
        consensus_record,
        live,
        make_bot,
        replay_record,
        runner,
        spec,
        status,
        valid_config,
    )
    from tradewarden.controller.builders import build_bot_plan

    def bot_at(url: str) -> TradingBot:
        return make_bot("b", live(), spec(exchange={"id": "binance", "apiUrl": url,
                                                    "credentialsSecretRef": {"name": "k"}}),
                        status(replay=replay_record(configHash=CONFIG_HASH), consensus=consensus_record()))

    def reads_secrets(plan: object) -> bool:
        role = next(o for o in plan.objects if o["kind"] == "Role")  # type: ignore[attr-defined]
        return any("secrets" in r["resources"] for r in role["rules"])

    plan = build_bot_plan(bot_at("https://attacker.example/api"), valid_config(), [], runner(), DEFAULTS, NOW)
    assert plan.refused
    assert plan.refused[0].startswith("spec.exchange.apiUrl:")
    assert plan.runtime is not None
    assert plan.runtime.exchange.credentials_secret_ref is None
    assert plan.promotion.effective_mode == TradingMode.PAPER
    assert not reads_secrets(plan)
    allowed = DEFAULTS.__class__(runner_image=DEFAULTS.runner_image, allowed_api_urls=("https://gw.example/",))
    ok = build_bot_plan(bot_at("https://gw.example/binance"), valid_config(), [], runner(), allowed, NOW)
    assert ok.refused == ()
    assert ok.runtime is not None
    assert ok.runtime.exchange.credentials_secret_ref is not None
    assert reads_secrets(ok)


def test_a_raise_of_the_current_ramp_step_waits_for_the_gate_and_a_cut_applies_at_once() -> None:
    from tradewarden.api.tradingbot import CapitalSpec, CapitalStatus
    from tradewarden.controller.ramp import next_capital

    at_step = CapitalStatus(step=0, amount=100.0, since=NOW - dt.timedelta(minutes=5))
    raised = next_capital(at_step, True, CapitalSpec(live_steps=[100000.0, 200000.0], ramp_dwell_minutes=60),
                          None, None, 3, NOW)
    assert raised.capital is not None
    assert raised.capital.amount == 100.0, "a raise written into the spec never reaches the runner by itself"
    cut = next_capital(at_step, True, CapitalSpec(live_steps=[50.0, 500.0], ramp_dwell_minutes=60), None, None, 3, NOW)
    assert cut.capital is not None
    assert cut.capital.amount == 50.0


def test_a_manual_lane_closes_at_most_a_day_after_it_was_set() -> None:
    from support.controller_objects import DEFAULTS, make_bot, runner, spec, valid_config
    from tradewarden.controller.builders import build_bot_plan

    far = make_bot("b", spec(manualLane={"enabledUntil": "8999-12-31T00:00:00Z", "intents": []}))
    set_at = NOW - dt.timedelta(hours=3)
    plan = build_bot_plan(far, valid_config(), [], runner(), DEFAULTS, NOW, lane_since=set_at)
    assert plan.runtime is not None
    assert plan.runtime.manual_lane.enabled_until == set_at + dt.timedelta(hours=24)
    assert plan.notes
    assert "closes at" in plan.notes[0]
    # The ledger keeps when the value was first seen: a later reconcile does not move the end.
    held = ledger.next_ledger(far, None, TradingBotStatus(), set_at)
    assert ledger.lane_since(far, held, NOW) == set_at.replace(microsecond=0)
    near = make_bot("b", spec(manualLane={"enabledUntil": (NOW + dt.timedelta(hours=1)).isoformat(), "intents": []}))
    assert build_bot_plan(near, valid_config(), [], runner(), DEFAULTS, NOW, lane_since=NOW).notes == ()
    assert ledger.lane_since(near, held, NOW) == NOW.replace(microsecond=0), "a new value starts a new day"


def test_the_runner_reads_the_key_again_when_a_document_names_another() -> None:
    import pathlib
    import tempfile

    from tradewarden.runner.engine import Engine
    from tradewarden.runner.journal import Journal
    from tradewarden.runner.metrics import RunnerMetrics

    old, new = GateSigner.generate("tw"), GateSigner.generate("tw")
    asked: list[bool] = []

    def key(refresh: bool = False) -> object:
        asked.append(refresh)
        return new.public if refresh else old.public

    config = new.sign(make_runtime("ns", "b", mode="live", live_capital=100.0, signed=False), 5)
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(bot_uid="u", config=make_runtime("ns", "b"), journal=Journal(pathlib.Path(tmp) / "j"),
                        metrics=RunnerMetrics("ns", "b"), market=None,  # type: ignore[arg-type]
                        broker_factory=lambda *a: None,  # type: ignore[arg-type,return-value]
                        gate_key=key)  # type: ignore[arg-type]
        assert engine._allowed_mode(config) == TradingMode.LIVE
    assert asked[-1] is True


def test_a_strategy_config_status_still_to_be_mirrored_is_not_tampering() -> None:
    from tradewarden.api.strategyconfig import StrategyConfigStatus

    old = StrategyConfigStatus(valid_spec={"strategy": "momentum", "params": {"fast": 10}}, config_hash="sha256:a")
    new = StrategyConfigStatus(valid_spec={"strategy": "momentum", "params": {"fast": 12}}, config_hash="sha256:b")
    first = ledger.next_config_ledger(None, "u", "ns", "sc", old)
    second = ledger.next_config_ledger(first, "u", "ns", "sc", new)
    assert not ledger.config_tampered(new, second)
    assert not ledger.config_tampered(old, second), "the mirror of the last verdict is not written yet"
    forged = StrategyConfigStatus(valid_spec={"strategy": "momentum", "params": {"fast": 99}}, config_hash="sha256:c")
    assert ledger.config_tampered(forged, second)
    assert not ledger.config_tampered(forged, None)
