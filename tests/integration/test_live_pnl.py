"""Realised live losses count: a real runner, promoted to live through the operator's gate, loses money
in closed trades on the exchange emulator until its drawdown halt trips, and the PnL in the bot's
status is what the venue account lost.

The operator runs as a subprocess with one external reviewer (support/reviewers.py); the runner is a
real ``tradewarden runner`` process with the ServiceAccount token the operator made, trading against
the in-process emulator, whose clock the test advances bar by bar until the gate promotes the bot on its
own paper evidence. Then the clock stands still (no new bar: the strategy decides nothing more) and the
test trades through the bot's manual lane (``spec.manualLane``): each buy and its sell are the bot's own
live fills, and each round trip loses the spread, the slippage and two fees. The figures checked are
the venue's own: its account balances, not the runner's journal.
"""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from support import live
from support.kube import Cluster
from support.operator import OperatorProcess, condition, strategy_config
from support.promotion import bot_of, live_bot, until, wait_runtime
from support.reviewers import ReviewerServer
from support.runner import BotEnv
from tradewarden.api.runtime import Telemetry
from tradewarden.emulator import Emulator

pytestmark = pytest.mark.cluster

VENUE_KEY = "VENUEKEY" + uuid.uuid4().hex[:16]
VENUE_SECRET = "VENUESECRET" + uuid.uuid4().hex[:16]
SYMBOL = "BTC/USDT"
LIVE_CAPITAL = 100.0
MAX_DRAWDOWN_PCT = 1.0
START = {"USDT": Decimal(100_000)}


@pytest.fixture(scope="module")
def server() -> Iterator[ReviewerServer]:
    yield from live.reviewer_server()


@pytest.fixture(scope="module")
def operator(cluster: Cluster, server: ReviewerServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    yield from live.operator_with_reviewers(cluster, server, tmp_path_factory.mktemp("operator"))


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    yield from live.venue(VENUE_KEY, VENUE_SECRET, {k: str(v) for k, v in START.items()})


@pytest.fixture
def ns(cluster: Cluster, operator: OperatorProcess, request: pytest.FixtureRequest) -> str:
    return live.keyed_namespace(cluster, operator, request, VENUE_KEY, VENUE_SECRET)


def account_change(emu: Emulator) -> Decimal:
    """How much the venue account gained (negative: lost) since the start, base held valued at the
    market's price (the close of the last closed bar, which the runner values it at too)."""
    state = emu.state()
    price = Decimal(state["markets"][SYMBOL]["price"])
    change = Decimal(0)
    for asset, held in state["balances"].items():
        total = Decimal(held["free"]) + Decimal(held["locked"]) - START.get(asset, Decimal(0))
        change += total if asset == "USDT" else total * price
    return change


def lane(intents: list[dict[str, Any]]) -> dict[str, Any]:
    """A manual lane open for two more hours with these intents."""
    until_ = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).replace(microsecond=0)
    return {"enabledUntil": until_.strftime("%Y-%m-%dT%H:%M:%SZ"), "intents": intents}


def set_lane(cluster: Cluster, ns: str, bot: str, intents: list[dict[str, Any]]) -> None:
    cluster.kubectl("patch", "tb", bot, "-n", ns, "--type=merge", "-p",
                    json.dumps({"spec": {"manualLane": lane(intents)}}))


@pytest.mark.timeout(600)
def test_realised_live_losses_trip_the_drawdown_halt_and_the_status_pnl_is_the_account_change(
        cluster: Cluster, operator: OperatorProcess, emulator: Emulator, ns: str, tmp_path: pathlib.Path) -> None:
    sc = strategy_config("fast", params={"fast": 3, "slow": 6})
    sc["spec"]["timeframe"] = "1m"
    cluster.apply(sc, namespace=ns)
    # One ramp step of 100 USDT; a 1 % drawdown halt; a risk per trade small enough that the paper
    # evidence stays far from that halt. Rate limits out of the way: bars close every few hundred ms.
    risk = {"maxDrawdownPct": MAX_DRAWDOWN_PCT, "maxRiskPerTradePct": 0.05, "entryOrdersPerMinute": 10000,
            "entryOrdersPerMinutePerSymbol": 10000, "exitOrdersPerMinute": 10000}
    cluster.apply(live_bot("loser", "fast", exchange={"sandbox": False, "apiUrl": emulator.url}, risk=risk,
                           capital={"liveSteps": [LIVE_CAPITAL], "rampDwellMinutes": 0},
                           promotion={"replayWindowMinutes": 30, "replayLagMinutes": 0},
                           manualLane=lane([])), namespace=ns)
    wait_runtime(cluster, operator, ns, "loser")
    env = BotEnv(cluster, ns, "loser", tmp_path / "loser", operator_managed=True)

    def telemetry() -> Telemetry:
        found = env.telemetry()
        assert found is not None, "no telemetry in the Lease yet"
        return found

    def runner_pnl() -> float:
        return float(bot_of(cluster, ns, "loser")["status"].get("runner", {}).get("pnl", 0.0))

    try:
        env.start(env={"TRADEWARDEN_EVIDENCE_SECONDS": "1"}, tick=0.2)
        until(operator, lambda: telemetry().effective_mode.value == "paper", "the runner trading on paper")
        assert emulator.request_count("POST", "/api/v3/order") == 0  # paper fills its own orders

        def promoted() -> bool:
            if telemetry().effective_mode.value == "live":
                return True
            emulator.advance(1)
            return False

        until(operator, promoted, "the gate to promote the bot and the runner to trade live", timeout=300,
              interval=0.4)
        assert bot_of(cluster, ns, "loser")["status"]["effectiveMode"] == "live"
        # From here on the market stands still. Once the runner has seen the last bar, close what the
        # strategy may have opened live on the bars before (the journal's positions are the live book).
        last_bar = emulator.engine.now_ms() - 60_000
        until(operator, lambda: env.journal("SELECT MAX(t) FROM candles") == [(last_bar,)],
              "the runner at the last bar")
        intents: list[dict[str, Any]] = []
        if env.journal("SELECT symbol FROM positions"):
            intents.append({"id": "close", "symbol": SYMBOL, "side": "sell", "amount": 1.0})
            set_lane(cluster, ns, "loser", intents)
            until(operator, lambda: not env.journal("SELECT symbol FROM positions"), "the strategy's position closed")

        # Round trips through the manual lane: buy far more than the book allows (the runner clamps it to
        # the equity left), sell it all. Each loses about 0.24 % of what it traded.
        seen: list[tuple[float, float, float]] = []  # (account change, status pnl, runner drawdown) per trip
        peak = LIVE_CAPITAL
        for n in range(12):
            intents += [{"id": f"buy{n}", "symbol": SYMBOL, "side": "buy", "amount": 1.0},
                        {"id": f"sell{n}", "symbol": SYMBOL, "side": "sell", "amount": 1.0}]
            set_lane(cluster, ns, "loser", intents)
            until(operator, lambda n=n: env.journal("SELECT verdict FROM intents WHERE id = ?", f"manual:sell{n}"),
                  f"round trip {n} journaled")
            change = account_change(emulator)
            # The operator mirrors the runner's Lease into the status: wait for this trip to arrive there.
            until(operator, lambda c=change: abs(runner_pnl() - float(c)) <= 0.005,
                  f"status.runner.pnl to show round trip {n} (venue account change {change})", timeout=30)
            t = telemetry()
            seen.append((float(change), runner_pnl(), t.drawdown_pct))
            assert t.open_positions == 0
            equity = LIVE_CAPITAL + float(change)
            venue_drawdown = (peak - equity) * 100 / peak
            if t.bot_trip.value != "off":
                break
            assert venue_drawdown < MAX_DRAWDOWN_PCT, seen
            peak = max(peak, equity)
        else:
            pytest.fail(f"the drawdown halt never tripped: {seen}")

        # It tripped at the configured percent: on the trip that took the venue account's loss to 1 %.
        assert len(seen) >= 2, seen
        assert venue_drawdown >= MAX_DRAWDOWN_PCT, seen
        assert t.bot_trip.value == "halt_all"
        assert f"reached risk.maxDrawdownPct {MAX_DRAWDOWN_PCT:g}" in t.bot_trip_reason
        verdicts = dict(env.journal("SELECT id, verdict FROM intents WHERE id LIKE 'manual:%'"))
        assert all(verdicts[f"manual:{i['id']}"] == "executed" for i in intents), verdicts

        # The operator mirrors the trip: kill mode, phase, KillSwitchEngaged from the bot itself.
        def halted() -> dict[str, Any]:
            bot = bot_of(cluster, ns, "loser")
            assert bot["status"]["killMode"] == "halt_all", bot["status"].get("killMode")
            return bot

        bot = until(operator, halted, "the bot's trip in its status")
        assert bot["status"]["phase"] == "Halted"
        engaged = condition(bot, "KillSwitchEngaged")
        assert (engaged["status"], engaged["reason"]) == ("True", "BotTrip")
        pnl = bot["status"]["runner"]["pnl"]
        change = account_change(emulator)
        assert abs(pnl - float(change)) <= 0.005, (pnl, change)
        assert pnl < -MAX_DRAWDOWN_PCT / 100 * LIVE_CAPITAL + 0.005

        # Halted: the next manual buy reaches no venue.
        orders = emulator.request_count("POST", "/api/v3/order")
        intents.append({"id": "after-trip", "symbol": SYMBOL, "side": "buy", "amount": 1.0})
        set_lane(cluster, ns, "loser", intents)
        until(operator, lambda: env.journal("SELECT verdict FROM intents WHERE id = 'manual:after-trip'"),
              "the intent after the trip journaled")
        assert env.journal("SELECT verdict FROM intents WHERE id = 'manual:after-trip'") == [("kill_blocked",)]
        assert emulator.request_count("POST", "/api/v3/order") == orders
        print(f"status PnL {pnl} vs emulator account change {change} after {len(seen)} losing round trips")
    finally:
        env.close()

