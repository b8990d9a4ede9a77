"""The live book's equity: derived from the bot's own journaled live fills, fees included.

A losing live trade must lower equity by what it lost, so that the drawdown halt trips on realised losses
and the exposure cap shrinks with them; a restarted runner must derive the same number from its journal.

The venue is a ``Venue``: a simulated account behind the ``Broker`` protocol that is *not* a
``PaperBroker`` (so the engine treats it as a live door, as it treats ``ExchangeClient``), filling market
orders at the tape's last close moved by slippage, with a fee in the quote currency. Expected figures are
computed here from those documented numbers, not by the code under test.
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Sequence
from typing import Any

import pytest

from support.builders import make_runtime
from tradewarden.api.market import Candle, Fill, OrderRequest, OrderResult, OrderSide, OrderStatus, OrderType, Position
from tradewarden.api.runtime import RuntimeConfig
from tradewarden.api.tradingbot import KillMode, TradingMode
from tradewarden.exchange import Balance, PaperBroker
from tradewarden.runner.engine import Engine
from tradewarden.runner.intents import Intent, IntentKind, Lane
from tradewarden.runner.journal import Journal
from tradewarden.runner.metrics import RunnerMetrics

SYM = "BTC/USDT"
T0 = 1_700_000_000_000
FEE = 0.001  # the venue's fee: 10 bps of the notional, in USDT
SLIP = 0.0005  # 5 bps against the taker
CAPITAL = 1000.0
# Out of the way: these tests place many orders within one (fake) second.
RISK = {"entryOrdersPerMinute": 10000, "entryOrdersPerMinutePerSymbol": 10000, "exitOrdersPerMinute": 10000,
        "maxOpenPositions": 10}


class Tape:
    """The market: one-minute bars whose closes the test chooses, revealed as it pushes them."""

    def __init__(self, closes: Sequence[float] = (100.0,) * 30) -> None:
        self.bars: list[Candle] = []
        for close in closes:
            self.push(close)

    def push(self, close: float) -> None:
        ts = T0 + len(self.bars) * 60_000
        self.bars.append(Candle(ts=ts, open=close, high=close, low=close, close=close, volume=1.0))

    def fetch_ohlcv(self, symbol: str, timeframe: str = "1m", since: int | None = None,
                    limit: int | None = None) -> list[Candle]:
        bars = [b for b in self.bars if since is None or b.ts >= since]
        return bars[-limit:] if limit else bars


class Venue:
    """A venue account as the live door sees it: the paper fill model at the tape's last close."""

    def __init__(self, tape: Tape, quote: float = 100_000.0) -> None:
        self.tape = tape
        self.account = PaperBroker(starting_quote=quote, fee_bps=FEE * 10_000, slippage_bps=SLIP * 10_000)

    def create_order(self, request: OrderRequest) -> OrderResult:
        last = self.tape.bars[-1]
        self.account.update_price(request.symbol, last.close, last.ts)
        return self.account.create_order(request)

    def fetch_order_by_client_id(self, symbol: str, client_order_id: str) -> OrderResult | None:
        return self.account.fetch_order_by_client_id(symbol, client_order_id)

    def cancel_order(self, symbol: str, order_id: str) -> OrderResult:
        return self.account.cancel_order(symbol, order_id)

    def fetch_open_orders(self, symbol: str | None = None) -> list[OrderResult]:
        return self.account.fetch_open_orders(symbol)

    def fetch_balance(self) -> dict[str, Balance]:
        return self.account.fetch_balance()

    def fetch_positions(self, symbols: Sequence[str]) -> dict[str, Position]:
        return self.account.fetch_positions(symbols)

    def quote(self) -> float:
        return self.account.fetch_balance()["USDT"].total


@pytest.fixture(autouse=True)
def gate_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """The live permission is not under test here (test_runner_engine.py tests it): a live config is live."""
    monkeypatch.setattr(Engine, "_allowed_mode", lambda self, config: config.effective_mode)


def live_config(**risk: Any) -> RuntimeConfig:
    # Intents come from the test (source "test"); the strategy's own signals are refused by source.
    return make_runtime(mode="live", live_capital=CAPITAL, risk={**RISK, **risk}, allowed_intent_sources=["test"])


def live_engine(tmp_path: pathlib.Path, cfg: RuntimeConfig, tape: Tape, venue: Venue,
                journal: Journal | None = None) -> Engine:
    def factory(c: RuntimeConfig, mode: TradingMode, saved: dict[str, float] | None) -> Any:
        return venue if mode == TradingMode.LIVE else PaperBroker(starting_quote=c.capital.paper_balance)

    eng = Engine(bot_uid="uid-1", config=cfg, journal=journal or Journal(tmp_path / "j.sqlite"),
                 metrics=RunnerMetrics(cfg.namespace, cfg.bot), market=tape, broker_factory=factory,
                 clock=lambda: T0 / 1000 + 3600)
    assert eng.mode == TradingMode.LIVE
    eng.tick()  # warm-up: the last close is the price
    return eng


def restart(eng: Engine) -> Engine:
    """A new engine on the same journal, venue and market: what a restarted runner process builds."""
    return Engine(bot_uid=eng.bot_uid, config=eng.config, journal=eng.journal,
                  metrics=RunnerMetrics(eng.config.namespace, eng.config.bot), market=eng.market,
                  broker_factory=eng.broker_factory, clock=eng.clock)


def buy(intent_id: str, amount: float | None, stop: float | None = None) -> Intent:
    return Intent(id=intent_id, source="test", lane=Lane.MAIN, symbol=SYM, side=OrderSide.BUY,
                  kind=IntentKind.ENTRY, amount=amount or 0.0, stop_price=stop)


def sell(intent_id: str) -> Intent:
    return Intent(id=intent_id, source="test", lane=Lane.MAIN, symbol=SYM, side=OrderSide.SELL,
                  kind=IntentKind.EXIT, amount=0.0)


def round_trip_loss(amount: float, entry_close: float, exit_close: float) -> float:
    """What buying ``amount`` at one close and selling it at another costs at this venue, fees included."""
    paid = amount * entry_close * (1 + SLIP)
    got = amount * exit_close * (1 - SLIP)
    return paid * (1 + FEE) - got * (1 - FEE)


def losing_trip(eng: Engine, tape: Tape, n: int, amount: float, entry_close: float = 100.0,
                exit_close: float = 98.0) -> float:
    """Buy at ``entry_close``; the price falls to ``exit_close`` and the bot sells all before its next tick,
    so that tick sees realised losses only. Returns the trip's loss."""
    tape.push(entry_close)
    eng.tick()
    assert eng.process_intent(buy(f"in-{n}", amount)) is not None
    tape.push(exit_close)
    assert eng.process_intent(sell(f"out-{n}")) is not None
    eng.tick()
    assert not any(p.is_open for p in eng.positions.values())
    return round_trip_loss(amount, entry_close, exit_close)


def test_losing_round_trips_lower_equity_by_the_losses_and_fees(tmp_path: pathlib.Path) -> None:
    tape = Tape()
    venue = Venue(tape)
    eng = live_engine(tmp_path, live_config(), tape, venue)
    assert eng.telemetry.equity == CAPITAL
    account_before = venue.quote()
    lost = 0.0
    for n, (amount, entry, exit_) in enumerate([(2.0, 100.0, 98.0), (3.0, 99.0, 97.5), (1.5, 101.0, 100.0)]):
        lost += losing_trip(eng, tape, n, amount, entry, exit_)
        assert eng.telemetry.equity == pytest.approx(CAPITAL - lost, abs=1e-9)
        assert eng.telemetry.pnl == pytest.approx(-lost, abs=1e-9)
    assert lost > 10.0
    # The venue account lost exactly as much: the book is the account's change.
    assert account_before - venue.quote() == pytest.approx(lost, abs=1e-9)
    fees = sum(f["fee"] for f in eng.journal.fills(mode="live"))
    assert fees == pytest.approx(sum(FEE * f["price"] * f["amount"] for f in eng.journal.fills(mode="live")))
    assert fees > 0


def test_equity_counts_the_open_position_at_the_last_price(tmp_path: pathlib.Path) -> None:
    tape = Tape()
    venue = Venue(tape)
    eng = live_engine(tmp_path, live_config(), tape, venue)
    lost = losing_trip(eng, tape, 0, 2.0)
    eng.process_intent(buy("open", 1.0))
    tape.push(95.0)
    eng.tick()
    paid = 1.0 * 98.0 * (1 + SLIP) * (1 + FEE)  # bought at the last close, 98
    assert eng.telemetry.equity == pytest.approx(CAPITAL - lost - paid + 1.0 * 95.0, abs=1e-9)


def test_drawdown_halt_trips_at_the_configured_percent_on_realised_losses(tmp_path: pathlib.Path) -> None:
    tape = Tape()
    eng = live_engine(tmp_path, live_config(maxDrawdownPct=5), tape, Venue(tape))
    per_trip = round_trip_loss(5.0, 100.0, 98.0)  # about 1.15 % of the capital
    lost = 0.0
    for n in range(10):
        lost += losing_trip(eng, tape, n, 5.0)
        drawdown = lost * 100 / CAPITAL
        assert eng.risk.drawdown_pct == pytest.approx(drawdown, abs=1e-9)
        assert not any(p.is_open for p in eng.positions.values())  # realised losses alone
        if drawdown >= 5:
            break
        assert eng.kill_mode() == KillMode.OFF, f"tripped at {drawdown:.3f} %"
    assert n == 4, (n, per_trip)
    assert eng.kill.bot_trip == KillMode.HALT_ALL
    assert "reached risk.maxDrawdownPct 5" in eng.kill.bot_trip_reason
    assert eng.telemetry.drawdown_pct >= 5
    eng.process_intent(buy("after-trip", 1.0))
    assert eng.journal.intent_done("after-trip")
    assert [o for o in eng.journal.orders() if o["intent_id"] == "after-trip"] == []


def test_a_loss_of_exactly_the_limit_trips() -> None:
    from tradewarden.api.tradingbot import RiskLimits
    from tradewarden.runner.risk import RiskManager

    rm = RiskManager(RiskLimits(max_drawdown_pct=10))
    assert not rm.observe_equity(100.0)
    assert not rm.observe_equity(90.01)
    assert rm.observe_equity(90.0)  # (1 - 90/100) * 100 is 9.999999999999998 in floats
    assert rm.drawdown_pct == 10.0


def test_the_exposure_cap_and_risk_sizing_shrink_with_realised_losses(tmp_path: pathlib.Path) -> None:
    tape = Tape()
    eng = live_engine(tmp_path, live_config(maxRiskPerTradePct=1.0), tape, Venue(tape))
    lost = sum(losing_trip(eng, tape, n, 4.0) for n in range(3))
    equity = CAPITAL - lost
    tape.push(100.0)
    eng.tick()
    # Risk per trade: 1 % of the equity left, over a stop 2.0 away.
    eng.process_intent(buy("sized", None, stop=98.0))
    assert eng.positions[SYM].qty == pytest.approx(equity * 0.01 / 2.0, rel=1e-9)
    eng.process_intent(sell("sized-out"))
    eng.tick()
    equity = eng.telemetry.equity
    # Notional cap: an entry far larger than the book is clamped to the equity left, not to the capital.
    eng.process_intent(buy("huge", 1_000_000.0))
    assert eng.positions[SYM].qty * 100.0 == pytest.approx(equity, rel=1e-9)
    assert equity < CAPITAL - lost
    # With that position open nothing is left to put at risk.
    eng.process_intent(buy("more", 1.0))
    assert eng.positions[SYM].qty * 100.0 == pytest.approx(equity, rel=1e-9)


def test_winnings_never_raise_the_cap_above_the_ramp_step(tmp_path: pathlib.Path) -> None:
    tape = Tape()
    eng = live_engine(tmp_path, live_config(), tape, Venue(tape))
    eng.process_intent(buy("in", 2.0))
    tape.push(120.0)
    eng.tick()
    eng.process_intent(sell("out"))
    eng.tick()
    assert eng.telemetry.pnl > 30
    eng.process_intent(buy("huge", 1_000_000.0))
    assert eng.positions[SYM].qty * 120.0 == pytest.approx(CAPITAL, rel=1e-9)


def test_a_restarted_runner_derives_the_same_equity_from_its_journal(tmp_path: pathlib.Path) -> None:
    tape = Tape()
    venue = Venue(tape)
    cfg = live_config(maxDrawdownPct=50)
    eng = live_engine(tmp_path, cfg, tape, venue)
    for n in range(3):
        losing_trip(eng, tape, n, 3.0)
    flat_equity = eng.telemetry.equity
    assert flat_equity < CAPITAL
    restarted = restart(eng)
    assert restarted._equity_now() == flat_equity  # before any bar: nothing open, nothing to price
    restarted.tick()
    assert restarted.telemetry.equity == flat_equity
    assert restarted.risk.equity_peak == eng.risk.equity_peak
    # With a position open, both value it at the same last price.
    eng.process_intent(buy("open", 2.0))
    tape.push(97.0)
    eng.tick()
    again = restart(eng)
    again.tick()
    assert again.telemetry.equity == eng.telemetry.equity
    assert again.telemetry.pnl == eng.telemetry.pnl
    assert again.telemetry.drawdown_pct == eng.telemetry.drawdown_pct


def test_paper_fills_never_count_in_the_live_book(tmp_path: pathlib.Path) -> None:
    tape = Tape()
    journal = Journal(tmp_path / "j.sqlite")
    paper = Engine(bot_uid="uid-1", config=make_runtime(risk=RISK, allowed_intent_sources=["test"]),
                   journal=journal, metrics=RunnerMetrics("ns", "bot"), market=tape, clock=lambda: 1.0,
                   broker_factory=lambda c, m, s: PaperBroker(starting_quote=c.capital.paper_balance))
    paper.tick()
    paper.process_intent(buy("paper-in", 10.0))
    tape.push(50.0)
    paper.tick()
    paper.process_intent(sell("paper-out"))  # a large paper loss
    assert paper.telemetry.equity < 10_000 - 400
    eng = live_engine(tmp_path, live_config(), tape, Venue(tape), journal=journal)
    assert eng.telemetry.equity == CAPITAL


def result(fee: float, currency: str, price: float = 100.0, amount: float = 0.5, cid: str = "c1") -> OrderResult:
    return OrderResult(id=cid, client_order_id=cid, symbol=SYM, side=OrderSide.BUY, type=OrderType.MARKET,
                       status=OrderStatus.CLOSED, amount=amount, filled=amount, average=price, price=None, ts=1,
                       fills=(Fill(price=price, amount=amount, fee=fee, fee_currency=currency),))


@pytest.mark.parametrize(("fee", "currency", "journaled"), [
    (0.05, "USDT", 0.05),
    (0.05, "", 0.05),
    (0.0005, "BTC", 0.05),  # in the base currency: converted at the fill's price
    (0.2, "BNB", 0.0),  # a third asset has no price here: reported, not counted
])
def test_fees_are_journaled_in_the_quote_currency(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture,
                                                  fee: float, currency: str, journaled: float) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    caplog.set_level(logging.INFO)
    journal.order_result(result(fee, currency), "live")
    assert journal.fills()[0]["fee"] == pytest.approx(journaled)
    if currency == "BTC":
        assert "converted at the fill price" in caplog.text
    if currency == "BNB":
        assert "not counted" in caplog.text


def test_pruning_keeps_the_live_fills_the_book_is_derived_from(tmp_path: pathlib.Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    journal.order_result(result(0.05, "USDT", cid="live-1"), "live")
    journal.order_result(result(0.05, "USDT", cid="paper-1"), "paper")
    journal.prune(10, keep_orders=False)
    assert [f["client_order_id"] for f in journal.fills()] == ["live-1"]
