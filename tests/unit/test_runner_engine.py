"""The runner's engine, risk manager, intent gate and journal, without a cluster or a network.

The market is a list of candles revealed bar by bar; the broker is the real PaperBroker (it implements
the same Broker protocol as the live ExchangeClient).
"""

from __future__ import annotations

import datetime as dt
import logging
import pathlib
from typing import Any

import pytest

import tradewarden.runner.engine as engine_module
from support.builders import TEST_SIGNER, make_runtime, trending_candles
from tradewarden.api.market import Candle, OrderSide
from tradewarden.api.runtime import RuntimeConfig
from tradewarden.api.tradingbot import KillMode, TradingMode
from tradewarden.exchange import PaperBroker
from tradewarden.runner.engine import Engine
from tradewarden.runner.intents import Intent, IntentKind, Lane
from tradewarden.runner.journal import Journal
from tradewarden.runner.metrics import RunnerMetrics
from tradewarden.runner.risk import OrderKind, RejectReason, RiskManager

SYM = "BTC/USDT"


class Market:
    """Reveals a prepared series one bar at a time, like a venue whose clock moves."""

    def __init__(self, series: dict[str, list[Candle]], visible: int) -> None:
        self.series, self.visible, self.calls = series, visible, 0

    def fetch_ohlcv(self, symbol: str, timeframe: str = "1m", since: int | None = None,
                    limit: int | None = None) -> list[Candle]:
        self.calls += 1
        bars = self.series[symbol][: self.visible]
        if since is not None:
            bars = [b for b in bars if b.ts >= since]
        return bars[-limit:] if limit else bars


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_engine(tmp_path: pathlib.Path, cfg: RuntimeConfig, market: Market, clock: Clock | None = None,
                journal: Journal | None = None) -> Engine:
    def factory(c: RuntimeConfig, mode: TradingMode, saved: dict[str, float] | None) -> PaperBroker:
        return PaperBroker(starting_quote=c.capital.paper_balance, balances=saved, slippage_bps=0)

    return Engine(bot_uid="uid-1", config=cfg, journal=journal or Journal(tmp_path / "j.sqlite"),
                  metrics=RunnerMetrics(cfg.namespace, cfg.bot), market=market, broker_factory=factory,
                  clock=clock or Clock(), gate_key=lambda refresh=False: TEST_SIGNER.public)


def run_bars(engine: Engine, market: Market, n: int) -> None:
    for _ in range(n):
        market.visible += 1
        engine.tick()


def sample(engine: Engine, name: str, **labels: str) -> float:
    value = engine.metrics.registry.get_sample_value(name, {"namespace": "ns", "bot": "bot", **labels})
    return value or 0.0


def entry(intent_id: str, amount: float = 0.01, symbol: str = SYM, source: str = "strategy",
          lane: Lane = Lane.MAIN) -> Intent:
    return Intent(id=intent_id, source=source, lane=lane, symbol=symbol, side=OrderSide.BUY, kind=IntentKind.ENTRY,
                  amount=amount)


def exit_(intent_id: str, amount: float = 0.0, symbol: str = SYM) -> Intent:
    return Intent(id=intent_id, source="strategy", lane=Lane.MAIN, symbol=symbol, side=OrderSide.SELL,
                  kind=IntentKind.EXIT, amount=amount)


def verdicts(engine: Engine) -> dict[str, str]:
    with engine.journal._lock:
        return dict(engine.journal._db.execute("SELECT id, verdict FROM intents").fetchall())


@pytest.fixture
def series() -> dict[str, list[Candle]]:
    return {SYM: trending_candles(400), "ETH/USDT": trending_candles(400, start=50.0)}


def warm(tmp_path: pathlib.Path, series: dict[str, list[Candle]], mode: str = "paper",
         **kw: Any) -> tuple[Engine, Market]:
    market = Market(series, visible=60)
    cfg = make_runtime(mode=mode, instruments=tuple(kw.pop("instruments", (SYM,))), **kw)
    eng = make_engine(tmp_path, cfg, market, kw.pop("clock", None) if "clock" in kw else None)
    eng.tick()  # warm-up on history, no action on old bars
    return eng, market


# ---- invariant 1: signals mode never builds an order path -------------------------------------------------


def test_signals_mode_never_builds_an_order(tmp_path: pathlib.Path, series: dict[str, list[Candle]],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*a: Any, **k: Any) -> None:
        raise AssertionError("an OrderRequest was built in signals mode")

    monkeypatch.setattr(engine_module, "OrderRequest", forbidden)
    eng, market = warm(tmp_path, series, mode="signals")
    assert eng.broker is None
    run_bars(eng, market, 300)
    assert eng.journal.signals(), "the strategy produced no signal on a trending series"
    assert eng.journal.orders() == []
    eng.process_intent(entry("manual-try"))
    assert verdicts(eng)["manual-try"] == "signals_mode"


def test_paper_mode_trades_the_signals_with_fills(tmp_path: pathlib.Path, series: dict[str, list[Candle]]) -> None:
    eng, market = warm(tmp_path, series)
    run_bars(eng, market, 300)
    orders = eng.journal.orders()
    assert orders
    assert all(o["status"] == "closed" for o in orders)
    assert {o["side"] for o in orders} == {"buy", "sell"}
    assert len(eng.journal.fills()) == len(orders)
    assert eng.telemetry.equity != 10000.0


def test_live_needs_a_gate_hash_bound_to_the_config(tmp_path: pathlib.Path, series: dict[str, list[Candle]]) -> None:
    good = make_runtime(mode="live", live_capital=100.0)
    eng = make_engine(tmp_path, good, Market(series, 60))
    assert eng.mode == TradingMode.LIVE
    forged = good.model_copy(update={"gate_hash": "sha256:" + "0" * 64})
    eng.apply_config(forged)
    assert eng.mode == TradingMode.PAPER
    stale = good.model_copy(update={"gate_consensus_hash": "another"})
    eng.apply_config(stale)
    assert eng.mode == TradingMode.PAPER


# ---- invariant 4: hot reload ------------------------------------------------------------------------------


def test_hot_reload_swaps_strategy_between_ticks(tmp_path: pathlib.Path, series: dict[str, list[Candle]],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    eng, market = warm(tmp_path, series)
    before = eng.strategies[SYM]
    caplog.set_level(logging.INFO)
    eng.apply_config(make_runtime(strategy="range"))
    assert eng.strategies[SYM] is not before
    assert eng.strategies[SYM].key == "range"
    assert "strategy momentum -> range" in caplog.text
    run_bars(eng, market, 5)  # keeps ticking on the new strategy


# ---- risk limits ------------------------------------------------------------------------------------------


LIMIT_CASES = [
    ("entry_rate", {"entryOrdersPerMinute": 2}, [entry("a"), entry("b"), entry("c", symbol="ETH/USDT")], "c"),
    ("entry_rate_symbol", {"entryOrdersPerMinutePerSymbol": 1}, [entry("a"), entry("b")], "b"),
    ("max_positions", {"maxOpenPositions": 1}, [entry("a"), entry("b", symbol="ETH/USDT")], "b"),
    ("notional_window", {"maxEntryNotionalPerWindow": 1.2}, [entry("a"), entry("b", symbol="ETH/USDT")], "b"),
    ("order_gap", {"minOrderGapMs": 5000}, [entry("a"), entry("b", symbol="ETH/USDT")], "b"),
    ("exit_rate", {"exitOrdersPerMinute": 1}, [entry("a", 0.04), exit_("x1", 0.01), exit_("x2", 0.01)], "x2"),
]


@pytest.mark.parametrize(("reason", "risk", "intents", "refused"), LIMIT_CASES, ids=[c[0] for c in LIMIT_CASES])
def test_each_risk_limit_trips(tmp_path: pathlib.Path, series: dict[str, list[Candle]], reason: str,
                               risk: dict[str, Any], intents: list[Intent], refused: str) -> None:
    eng, _ = warm(tmp_path, series, risk=risk, instruments=(SYM, "ETH/USDT"))
    for intent in intents:
        eng.process_intent(intent)
    got = verdicts(eng)
    assert got[refused] == f"risk_{reason}", got
    assert all(v == "executed" for k, v in got.items() if k != refused), got
    assert sample(eng, "tradewarden_runner_risk_rejections_total", reason=reason) == 1


def test_entries_are_sized_by_risk_per_trade(tmp_path: pathlib.Path, series: dict[str, list[Candle]]) -> None:
    eng, _ = warm(tmp_path, series, risk={"maxRiskPerTradePct": 1.0})
    price = eng.last_price(SYM)
    assert price is not None
    stop = price - 2.0
    eng.process_intent(Intent(id="sized", source="strategy", lane=Lane.MAIN, symbol=SYM, side=OrderSide.BUY,
                              kind=IntentKind.ENTRY, stop_price=stop))
    filled = eng.positions[SYM].qty
    assert filled == pytest.approx(10000 * 0.01 / 2.0, rel=0.01)  # 1 % of equity over a 2.0 stop distance
    eng.process_intent(Intent(id="nostop", source="strategy", lane=Lane.MAIN, symbol="BTC/USDT", side=OrderSide.BUY,
                              kind=IntentKind.ENTRY, stop_price=None))
    assert verdicts(eng)["nostop"] == "risk_no_stop"


def test_drawdown_trips_a_bot_scoped_halt_that_survives_restart(tmp_path: pathlib.Path,
                                                                series: dict[str, list[Candle]]) -> None:
    eng, _ = warm(tmp_path, series, risk={"maxDrawdownPct": 5})
    eng.risk.observe_equity(10000.0)
    eng.telemetry.equity = 10000.0
    assert eng.broker is not None
    eng.broker = PaperBroker(starting_quote=9000.0)  # equity fell 10 %
    eng.tick()
    assert eng.kill_mode() == KillMode.HALT_ALL
    assert eng.kill.bot_trip == KillMode.HALT_ALL
    restarted = make_engine(tmp_path, eng.config, Market(series, 60), journal=eng.journal)
    assert restarted.kill_mode() == KillMode.HALT_ALL
    restarted.apply_config(eng.config.model_copy(update={"trip_reset": "reviewed-by-alice"}))
    assert restarted.kill_mode() == KillMode.OFF


def test_a_new_capital_base_is_not_a_drawdown(tmp_path: pathlib.Path, series: dict[str, list[Candle]]) -> None:
    """Promotion from a 10,000 paper account to a 100 live ramp step, and each later step, measure the
    drawdown from a new peak: without the rebase the first live equity read as a 99 % drawdown."""
    eng, _ = warm(tmp_path, series, risk={"maxDrawdownPct": 30})
    eng._update_equity()
    assert eng.risk.equity_peak == pytest.approx(10000.0)
    paper_factory = eng.broker_factory
    eng.broker_factory = lambda c, m, s: object() if m == TradingMode.LIVE else paper_factory(c, m, s)  # type: ignore[assignment,return-value]
    for capital in (100.0, 500.0):
        eng.apply_config(make_runtime(mode="live", live_capital=capital, risk={"maxDrawdownPct": 30}))
        assert eng.mode == TradingMode.LIVE
        eng._update_equity()
        assert eng.telemetry.equity == capital
        assert eng.risk.drawdown_pct == 0.0
        assert eng.kill_mode() == KillMode.OFF
    # Real losses at one base still count: test_runner_live_pnl.py trips the halt on journaled live fills.


def test_risk_manager_windows_slide() -> None:
    from tradewarden.api.tradingbot import RiskLimits

    rm = RiskManager(RiskLimits(cancels_per_minute=1))
    assert rm.check(OrderKind.CANCEL, SYM, 0, 0.0) is None
    rm.record(OrderKind.CANCEL, SYM, 0, 0.0)
    refused = rm.check(OrderKind.CANCEL, SYM, 0, 30.0)
    assert refused is not None
    assert refused.reason == RejectReason.CANCEL_RATE
    assert rm.check(OrderKind.CANCEL, SYM, 0, 61.0) is None


# ---- kill modes -------------------------------------------------------------------------------------------


def test_close_only_blocks_entries_and_lets_exits_run(tmp_path: pathlib.Path, series: dict[str, list[Candle]]) -> None:
    eng, _ = warm(tmp_path, series)
    eng.process_intent(entry("open", 0.05))
    eng.set_switch_kill(KillMode.CLOSE_ONLY, "test")
    eng.process_intent(entry("blocked", 0.05))
    eng.process_intent(exit_("close"))
    got = verdicts(eng)
    assert got["blocked"] == "kill_blocked"
    assert got["close"] == "executed"
    assert not eng.positions[SYM].is_open


def test_halt_all_blocks_exits_too(tmp_path: pathlib.Path, series: dict[str, list[Candle]]) -> None:
    eng, _ = warm(tmp_path, series)
    eng.process_intent(entry("open", 0.05))
    eng.set_switch_kill(KillMode.HALT_ALL, "test")
    eng.process_intent(exit_("close"))
    assert verdicts(eng)["close"] == "kill_blocked"
    assert eng.positions[SYM].is_open


def test_flatten_closes_everything_reduce_only_then_holds(tmp_path: pathlib.Path,
                                                         series: dict[str, list[Candle]]) -> None:
    eng, market = warm(tmp_path, series, instruments=(SYM, "ETH/USDT"))
    eng.process_intent(entry("a", 0.05))
    eng.process_intent(entry("b", 0.5, symbol="ETH/USDT"))
    assert sum(p.is_open for p in eng.positions.values()) == 2
    eng.set_switch_kill(KillMode.FLATTEN, "flat now")
    run_bars(eng, market, 1)
    assert not any(p.is_open for p in eng.positions.values())
    assert eng.telemetry.flat
    closes = [o for o in eng.journal.orders() if o["intent_id"].startswith("flatten:")]
    assert len(closes) == 2
    assert all(o["reduce_only"] == 1 and o["side"] == "sell" for o in closes)
    eng.process_intent(entry("after", 0.01))
    assert verdicts(eng)["after"] == "kill_blocked"


def test_api_loss_blocks_entries_until_it_answers(tmp_path: pathlib.Path, series: dict[str, list[Candle]]) -> None:
    eng, _ = warm(tmp_path, series)
    eng.set_api_lost(True, 30)
    assert eng.kill_mode() == KillMode.CLOSE_ONLY
    eng.set_api_lost(False, 30)
    assert eng.kill_mode() == KillMode.OFF


def test_strongest_source_wins(tmp_path: pathlib.Path, series: dict[str, list[Candle]]) -> None:
    eng, _ = warm(tmp_path, series, kill_mode="close_only")
    assert eng.kill_mode() == KillMode.CLOSE_ONLY
    eng.set_switch_kill(KillMode.HALT_ALL, "x")
    assert eng.kill_mode() == KillMode.HALT_ALL
    eng.set_switch_kill(KillMode.OFF, "")
    assert eng.kill_mode() == KillMode.CLOSE_ONLY  # the operator's folded mode still applies


def test_mode_steps_down_once_per_kill_event_and_persists(tmp_path: pathlib.Path,
                                                         series: dict[str, list[Candle]]) -> None:
    eng, _ = warm(tmp_path, series, strategy_fields={"auto_step_down": True})
    assert eng.strategy_mode() == "primary"
    eng.set_switch_kill(KillMode.CLOSE_ONLY, "1")
    eng.set_switch_kill(KillMode.HALT_ALL, "still the same event")
    assert eng.strategy_mode() == "fallback"
    eng.set_switch_kill(KillMode.OFF, "")
    eng.set_switch_kill(KillMode.CLOSE_ONLY, "2")
    assert eng.strategy_mode() == "conservative"
    again = make_engine(tmp_path, eng.config, Market(series, 60), journal=eng.journal)
    assert again.strategy_mode() == "conservative"
    strategy = eng.config.strategy.model_copy(update={"active_mode": "fallback"})
    moved = eng.config.model_copy(update={"strategy": strategy})
    again.apply_config(moved)
    assert again.strategy_mode() == "fallback"  # a human choosing a mode resets the step-down


# ---- intents ------------------------------------------------------------------------------------------------


def test_sources_are_allowlisted(tmp_path: pathlib.Path, series: dict[str, list[Candle]]) -> None:
    eng, _ = warm(tmp_path, series)
    eng.process_intent(entry("rogue", source="webhook"))
    assert verdicts(eng)["rogue"] == "blocked_source"
    assert eng.counters["blocked_source"] == 1


def test_manual_lane_runs_each_intent_once_and_closes_itself(tmp_path: pathlib.Path,
                                                            series: dict[str, list[Candle]]) -> None:
    clock = Clock()
    now = dt.datetime.fromtimestamp(clock.t, dt.UTC)
    lane = {"enabled_until": now + dt.timedelta(minutes=20),
            "intents": [{"id": "m1", "symbol": SYM, "side": "buy", "amount": 0.01}]}
    market = Market(series, 60)
    cfg = make_runtime(manual_lane=lane)
    eng = make_engine(tmp_path, cfg, market, clock)
    eng.tick()
    eng.tick()
    assert [o["intent_id"] for o in eng.journal.orders()] == ["manual:m1"]
    assert eng.counters["manual_consumed"] == 1
    clock.t += 21 * 60  # the lane's TTL has passed
    late = dict(lane, intents=[*lane["intents"], {"id": "m2", "symbol": SYM, "side": "buy", "amount": 0.01}])
    eng.apply_config(make_runtime(manual_lane=late))
    eng.tick()
    assert verdicts(eng)["manual:m2"] == "manual_blocked_disabled"
    assert len(eng.journal.orders()) == 1


# ---- invariant 6: restart without duplicates ---------------------------------------------------------------


def test_resume_settles_a_pending_order_without_resending(tmp_path: pathlib.Path,
                                                        series: dict[str, list[Candle]]) -> None:
    eng, _ = warm(tmp_path, series)
    assert isinstance(eng.broker, PaperBroker)
    sent: list[str] = []
    real_create = eng.broker.create_order

    def crash_after_send(request: Any) -> Any:
        sent.append(request.client_order_id)
        real_create(request)
        raise KeyboardInterrupt("process died before the result was journaled")

    eng.broker.create_order = crash_after_send  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        eng.process_intent(entry("crashy", 0.02))
    assert [p.client_order_id for p in eng.journal.pending_orders()] == sent
    eng.broker.create_order = real_create  # type: ignore[method-assign]
    assert eng.resume_pending() == 1
    assert len(eng.broker.fetch_open_orders()) == 0
    assert eng.journal.pending_orders() == []
    assert eng.positions[SYM].qty == pytest.approx(0.02)
    eng.process_intent(entry("crashy", 0.02))  # the same intent again is a duplicate, not a second order
    assert len(eng.journal.orders()) == 1


def test_paper_positions_never_become_live_ones(tmp_path: pathlib.Path, series: dict[str, list[Candle]]) -> None:
    eng, _ = warm(tmp_path, series)
    eng.process_intent(entry("paper-open", 0.05))
    assert eng.positions[SYM].is_open
    eng.apply_config(make_runtime(mode="live", live_capital=1000.0))
    assert eng.mode == TradingMode.LIVE
    assert not any(p.is_open for p in eng.positions.values())  # the live book starts empty
    eng.process_intent(exit_("live-close"))
    assert verdicts(eng)["live-close"] == "nothing_to_exit"
    eng.apply_config(make_runtime(mode="paper"))
    assert eng.positions[SYM].qty == pytest.approx(0.05)  # the paper book is back
    restarted = make_engine(tmp_path, eng.config, Market(series, 60), journal=eng.journal)
    assert restarted.positions[SYM].qty == pytest.approx(0.05)


def test_evidence_window_starts_where_the_runner_began_to_act(tmp_path: pathlib.Path,
                                                              series: dict[str, list[Candle]]) -> None:
    from tradewarden.runner.evidence import build_export

    eng, market = warm(tmp_path, series)
    first_acted = series[SYM][market.visible - 1].ts + 1
    run_bars(eng, market, 30)
    export = build_export(eng, now_ms=series[SYM][market.visible - 1].ts + 60_000)
    assert export is not None
    assert export.window_start == first_acted
    assert all(s.t >= first_acted for s in export.signals)
