"""The promotion gate with real runners: a bot earns live on its own evidence, climbs the capital ramp,
and falls back to paper when its config changes; a CRITICAL vote halts a running runner.

The operator runs as a subprocess with one external reviewer (the local chat-completions server of
support/reviewers.py); runners are real ``tradewarden runner`` processes with the ServiceAccount tokens
the operator made (BotEnv operator_managed), trading against the in-process exchange emulator, whose
clock the test advances bar by bar so the strategy trades. The happy path uses nothing prepared: the
runner journals and exports its window, the operator replays it in a separate process, the reviewers
vote, and the runner trades live with the credentials from a Secret.
"""

from __future__ import annotations

import pathlib
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from support.kube import Cluster
from support.operator import OperatorProcess, condition, strategy_config
from support.promotion import (
    EXPORT_BARS,
    bot_of,
    event_reasons,
    live_bot,
    prepared_export,
    reason,
    runtime_of,
    start_operator_with_reviewers,
    until,
    wait_runtime,
    write_export,
)
from support.reviewers import Answer, ReviewerServer
from support.runner import BotEnv, secret_manifest
from tradewarden.emulator import Emulator

pytestmark = pytest.mark.cluster

VENUE_KEY = "VENUEKEY" + uuid.uuid4().hex[:16]
VENUE_SECRET = "VENUESECRET" + uuid.uuid4().hex[:16]
STEPS = [100, 500, 1000]


@pytest.fixture(scope="module")
def server() -> Iterator[ReviewerServer]:
    srv = ReviewerServer().start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def operator(cluster: Cluster, server: ReviewerServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    op = start_operator_with_reviewers(cluster, tmp_path_factory.mktemp("operator"),
                                       [("alpha", server.url("alpha"), 10)], "sk-test-" + uuid.uuid4().hex)
    yield op
    op.stop()
    op.delete_namespaces()


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    # Quote currency only: the live book starts empty at promotion (paper positions stay on paper), so
    # every live sell closes what the runner bought live.
    emu = Emulator(seed=7, bar_seconds=None, api_key=VENUE_KEY, secret=VENUE_SECRET,
                   balances={"USDT": 100000})
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture
def ns(cluster: Cluster, operator: OperatorProcess, request: pytest.FixtureRequest) -> str:
    name = operator.namespace(re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[5:30])
    cluster.apply(secret_manifest("venue-keys", {"apiKey": VENUE_KEY, "secret": VENUE_SECRET}), namespace=name)
    return name


def exchange(emu: Emulator) -> dict[str, Any]:
    return {"sandbox": False, "apiUrl": emu.url}


def test_a_bot_earns_live_on_its_own_evidence_climbs_the_ramp_and_falls_back_on_a_config_change(
        cluster: Cluster, operator: OperatorProcess, emulator: Emulator, ns: str, tmp_path: pathlib.Path) -> None:
    sc = strategy_config("fast", params={"fast": 3, "slow": 6})
    sc["spec"]["timeframe"] = "1m"
    cluster.apply(sc, namespace=ns)
    # Rate limits out of the way: the test closes a bar every few hundred milliseconds, so the default
    # entries per (real) minute would refuse entries the replay then makes, which is a residual.
    cluster.apply(live_bot("climber", "fast", exchange=exchange(emulator),
                           risk={"entryOrdersPerMinute": 10000, "entryOrdersPerMinutePerSymbol": 10000,
                                 "exitOrdersPerMinute": 10000},
                           promotion={"replayWindowMinutes": 30, "replayLagMinutes": 0}), namespace=ns)
    first = wait_runtime(cluster, operator, ns, "climber")
    assert (first.evidence_window_minutes, first.evidence_lag_minutes) == (30, 0)
    env = BotEnv(cluster, ns, "climber", tmp_path / "climber", operator_managed=True)
    try:
        env.start(env={"TRADEWARDEN_EVIDENCE_SECONDS": "1"}, tick=0.2)
        until(operator, lambda: (t := env.telemetry()) is not None and t.effective_mode.value == "paper",
              "the runner trading on paper")
        orders_before_live = emulator.request_count("POST", "/api/v3/order")
        seen: dict[int, dict[str, Any]] = {}

        def climb() -> bool:
            emulator.advance(1)
            bot = bot_of(cluster, ns, "climber")
            capital = bot["status"].get("capital")
            if bot["status"]["effectiveMode"] == "live" and capital and capital["step"] not in seen:
                runtime = runtime_of(cluster, ns, "climber")
                assert runtime is not None
                if runtime.effective_mode.value == "live":
                    seen[capital["step"]] = {"bot": bot, "runtime": runtime}
            return 2 in seen

        until(operator, climb, "the ramp to reach step 2", timeout=300, interval=0.4)
        for step in (0, 1, 2):
            # Every step on the way was in force, in the status and in the runner's config alike.
            assert step in seen, sorted(seen)
            bot, runtime = seen[step]["bot"], seen[step]["runtime"]
            assert bot["status"]["capital"]["amount"] == STEPS[step]
            assert runtime.gate_hash_matches()
            assert runtime.capital.live_capital == STEPS[step]
            assert runtime.gate_replay_hash == bot["status"]["replay"]["resultHash"]
            assert bot["status"]["replay"]["passed"] is True
            assert bot["status"]["replay"]["residuals"] == 0
            assert reason(bot, "ConsensusApproved") == "Approved"
        # The runner itself went live, with the Secret's credentials: signed orders reached the venue (on
        # paper the runner fills its own orders and sends none).
        assert orders_before_live == 0
        until(operator, lambda: (t := env.telemetry()) is not None and t.effective_mode.value == "live",
              "the runner trading live")

        def live_order() -> bool:
            emulator.advance(1)
            return emulator.request_count("POST", "/api/v3/order") > 0

        until(operator, live_order, "a live order at the venue", timeout=120, interval=0.4)
        assert bot_of(cluster, ns, "climber")["status"]["effectiveMode"] == "live"
        steps = [e for e in event_reasons(cluster, ns, "climber") if e == "RampStep"]
        assert len(steps) >= 3

        # A StrategyConfig edit changes the config hash: the evidence is stale, the bot back on paper.
        cluster.kubectl("patch", "strategyconfig", "fast", "-n", ns, "--type=merge",
                        "-p", '{"spec":{"params":{"fast":4}}}')

        def demoted() -> dict[str, Any] | None:
            bot = bot_of(cluster, ns, "climber")
            runtime = runtime_of(cluster, ns, "climber")
            assert runtime is not None
            assert runtime.strategy.params.get("fast") == 4, "not applied yet"
            assert bot["status"]["effectiveMode"] == "paper", bot["status"]["effectiveMode"]
            return bot

        bot = until(operator, demoted, "the bot back on paper after the config change")
        promoted = condition(bot, "Promoted")
        assert (promoted["status"], promoted["reason"]) == ("False", "ConfigChanged")
        assert reason(bot, "ReplayVerified") == "Stale"
        assert "capital" not in bot["status"]
        runtime = runtime_of(cluster, ns, "climber")
        assert runtime is not None
        assert runtime.effective_mode.value == "paper"
        assert not runtime.gate_hash_matches()
        assert runtime.capital.live_capital == 0.0
        until(operator, lambda: (t := env.telemetry()) is not None and t.effective_mode.value == "paper",
              "the runner back on paper")
        reasons = event_reasons(cluster, ns, "climber")
        assert {"RampReset", "ConfigChanged", "Stale", "ModeChanged"} <= set(reasons)
    finally:
        env.close()


def test_a_critical_vote_halts_the_runner_until_a_human_resets_it(
        cluster: Cluster, operator: OperatorProcess, server: ReviewerServer, ns: str,
        tmp_path: pathlib.Path) -> None:
    server.answers[("alpha", "reckless")] = Answer("ABORT", "CRITICAL", reason="leverage hidden in the params")
    sc = strategy_config("sma", strategy="sma_cross", params={})
    sc["spec"]["timeframe"] = "1m"
    cluster.apply(sc, namespace=ns)
    # The prepared export is of the series with seed 1: its venue is an emulator of that series, past its
    # bars (the gate checks an export's bars against the venue's before it replays them).
    venue = Emulator(seed=1, bar_seconds=None, api_key=VENUE_KEY, secret=VENUE_SECRET, balances={"USDT": 100000})
    venue.start()
    venue.advance(EXPORT_BARS + 10)
    cluster.apply(live_bot("reckless", "sma", exchange=exchange(venue)), namespace=ns)
    cluster.kubectl("annotate", "tb", "reckless", "-n", ns, "tradewarden.io/reset-trip=initial")
    runtime = wait_runtime(cluster, operator, ns, "reckless", lambda r: r.trip_reset == "initial")
    env = BotEnv(cluster, ns, "reckless", tmp_path / "reckless", operator_managed=True)
    try:
        # This runner exports nothing itself: the test writes a prepared export, as the runner would.
        env.start(env={"TRADEWARDEN_EVIDENCE_SECONDS": "100000"}, tick=0.2)
        until(operator, lambda: condition(bot_of(cluster, ns, "reckless"), "Ready").get("status") == "True",
              "the runner Ready")
        write_export(cluster, ns, "reckless", prepared_export(runtime))

        def halted() -> dict[str, Any]:
            bot = bot_of(cluster, ns, "reckless")
            assert reason(bot, "ConsensusApproved") == "Halt", reason(bot, "ConsensusApproved")
            assert bot["status"]["killMode"] == "halt_all"
            return bot

        bot = until(operator, halted, "the CRITICAL vote to halt the bot")
        trip = bot["status"]["gateTrip"]
        assert (trip["mode"], trip["resetAnnotation"]) == ("halt_all", "initial")
        assert "CRITICAL risk reported by alpha" in trip["reason"]
        assert condition(bot, "KillSwitchEngaged")["reason"] == "ConsensusTrip"
        assert bot["status"]["phase"] == "Halted"
        assert bot["status"]["effectiveMode"] == "paper"
        assert runtime_of(cluster, ns, "reckless").kill_mode.value == "halt_all"  # type: ignore[union-attr]
        # The runner halts: its own report says so.
        until(operator, lambda: (t := env.telemetry()) is not None and t.kill_mode.value == "halt_all",
              "the runner halted")
        assert {"Halt", "TripEngaged", "KillSwitchEngaged"} <= set(event_reasons(cluster, ns, "reckless"))
        # It stays halted (no operator restart or resync clears it)...
        time.sleep(2)
        assert bot_of(cluster, ns, "reckless")["status"]["killMode"] == "halt_all"
        # ...until a human changes the reset annotation.
        cluster.kubectl("annotate", "tb", "reckless", "-n", ns, "--overwrite", "tradewarden.io/reset-trip=reviewed")
        bot = until(operator, lambda: (b := bot_of(cluster, ns, "reckless"))["status"]["killMode"] == "off" and b,
                    "the trip released")
        assert "gateTrip" not in bot["status"]
        until(operator, lambda: (t := env.telemetry()) is not None and t.kill_mode.value == "off",
              "the runner released")
        assert "TripReset" in event_reasons(cluster, ns, "reckless")
        # The reviewers' verdict stands until they judge new evidence: still no live trading.
        assert reason(bot, "ConsensusApproved") == "Halt"
        assert bot["status"]["effectiveMode"] == "paper"
    finally:
        venue.stop()
        env.close()
