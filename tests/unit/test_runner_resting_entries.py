"""A runner asked to stop: which resting orders are its entries, and canceling them on the paper broker.

The selection (``intents.resting_entries``) is pure. The engine tests use the real PaperBroker and the
real journal: resting limit orders are placed and journaled the way the engine journals its own orders
(the engine itself sends market orders only, which the paper broker always fills at once).
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import pytest

from support.builders import TEST_SIGNER, make_runtime, trending_candles
from tradewarden.api.market import Candle, OrderRequest, OrderResult, OrderSide, OrderStatus, OrderType
from tradewarden.api.runtime import RuntimeConfig
from tradewarden.api.tradingbot import TradingMode
from tradewarden.exchange import PaperBroker
from tradewarden.runner.engine import Engine
from tradewarden.runner.intents import Intent, IntentKind, Lane, client_order_id, resting_entries
from tradewarden.runner.journal import Journal
from tradewarden.runner.main import DEFAULT_SHUTDOWN_SECONDS, shutdown_seconds
from tradewarden.runner.metrics import RunnerMetrics

SYM = "BTC/USDT"
BOT_UID = "uid-1"


def order(cid: str, side: OrderSide = OrderSide.BUY, status: OrderStatus = OrderStatus.OPEN) -> OrderResult:
    return OrderResult(id=f"v-{cid}", client_order_id=cid, symbol=SYM, side=side, type=OrderType.LIMIT,
                       status=status, amount=0.01, filled=0.0, average=None, price=100.0)


# ---- the pure selection ----------------------------------------------------------------------------------


def test_only_own_entries_are_chosen() -> None:
    entry = client_order_id(BOT_UID, "manual:buy")
    exit_ = client_order_id(BOT_UID, "manual:sell")
    flatten = client_order_id(BOT_UID, "flatten:BTC/USDT:1")
    odd_buy = client_order_id(BOT_UID, "manual:odd-buy")  # a buy journaled reduce-only: never an entry
    odd_sell = client_order_id(BOT_UID, "manual:odd-sell")  # a sell not journaled reduce-only: reduces on spot
    other_bot = client_order_id("uid-2", "manual:buy")  # the same prefix, another bot's journal
    own = {entry: False, exit_: True, flatten: True, odd_buy: True, odd_sell: False,
           "web-12345": False}  # an id of ours without the prefix cannot be one of the runner's
    listed = [order(entry), order(exit_, OrderSide.SELL), order(flatten, OrderSide.SELL), order(odd_buy),
              order(odd_sell, OrderSide.SELL), order(other_bot), order("web-12345"), order("human-1")]
    assert [o.client_order_id for o in resting_entries(listed, own)] == [entry]
    assert resting_entries(listed, {}) == []
    assert resting_entries([], own) == []


# ---- the engine on the paper broker --------------------------------------------------------------------------


class Market:
    def __init__(self, series: dict[str, list[Candle]], visible: int) -> None:
        self.series, self.visible = series, visible

    def fetch_ohlcv(self, symbol: str, timeframe: str = "1m", since: int | None = None,
                    limit: int | None = None) -> list[Candle]:
        bars = self.series[symbol][: self.visible]
        if since is not None:
            bars = [b for b in bars if b.ts >= since]
        return bars[-limit:] if limit else bars


def make_engine(tmp_path: pathlib.Path, mode: str = "paper", **kw: Any) -> Engine:
    cfg = make_runtime(mode=mode, **kw)

    def factory(c: RuntimeConfig, m: TradingMode, saved: dict[str, float] | None) -> PaperBroker:
        return PaperBroker(starting_quote=c.capital.paper_balance, balances=saved, slippage_bps=0)

    eng = Engine(bot_uid=BOT_UID, config=cfg, journal=Journal(tmp_path / "j.sqlite"),
                 metrics=RunnerMetrics(cfg.namespace, cfg.bot), market=Market({SYM: trending_candles(200)}, 60),
                 broker_factory=factory, gate_key=lambda refresh=False: TEST_SIGNER.public)
    eng.tick()  # warm-up: the paper broker now has a price
    return eng


def rest(eng: Engine, intent_id: str, side: OrderSide, price: float, amount: float = 0.02,
         reduce_only: bool = False, journaled: bool = True, cid: str | None = None) -> str:
    """Place a resting limit order on the engine's paper broker, journaled as the engine journals orders."""
    assert eng.broker is not None
    request = OrderRequest(SYM, side, OrderType.LIMIT, amount, cid or client_order_id(BOT_UID, intent_id),
                           price=price, reduce_only=reduce_only)
    if journaled:
        eng.journal.order_pending(intent_id, int(time.time() * 1000), request, eng.mode.value)
    result = eng.broker.create_order(request)
    assert result.status is OrderStatus.OPEN
    if journaled:
        eng.journal.order_result(result, eng.mode.value)
    return request.client_order_id


def sample(eng: Engine, name: str, **labels: str) -> float:
    return eng.metrics.registry.get_sample_value(name, {"namespace": "ns", "bot": "bot", **labels}) or 0.0


def journal_rows(eng: Engine, query: str) -> list[tuple[Any, ...]]:
    with eng.journal._lock:
        return eng.journal._db.execute(query).fetchall()


def test_paper_stop_cancels_own_resting_entries_and_keeps_exits(tmp_path: pathlib.Path) -> None:
    eng = make_engine(tmp_path)
    assert isinstance(eng.broker, PaperBroker)
    price = eng.last_price(SYM)
    assert price is not None
    eng.process_intent(Intent(id="open", source="strategy", lane=Lane.MAIN, symbol=SYM, side=OrderSide.BUY,
                              kind=IntentKind.ENTRY, amount=0.05))
    held = eng.positions[SYM].qty
    assert held == pytest.approx(0.05)
    entry = rest(eng, "manual:rest-buy", OrderSide.BUY, round(price * 0.9, 2))
    exit_ = rest(eng, "manual:rest-sell", OrderSide.SELL, round(price * 1.1, 2), reduce_only=True)
    other_bot = rest(eng, "manual:x", OrderSide.BUY, round(price * 0.8, 2), journaled=False,
                     cid=client_order_id("uid-2", "manual:x"))
    human = rest(eng, "", OrderSide.BUY, round(price * 0.7, 2), amount=0.01, journaled=False, cid="human-1")
    locked_by_others = 0.02 * round(price * 0.8, 2) * 1.001 + 0.01 * round(price * 0.7, 2) * 1.001

    got = eng.cancel_resting_entries(time.monotonic() + 5)

    assert (got.canceled, got.gone, got.left_open, got.exits_kept, got.others) == ([entry], [], {}, 1, 2)
    assert {o.client_order_id for o in eng.broker.fetch_open_orders(SYM)} == {exit_, other_bot, human}
    assert eng.broker.fetch_balance()["USDT"].used == pytest.approx(locked_by_others)
    assert eng.positions[SYM].qty == pytest.approx(held)
    statuses = dict(journal_rows(eng, "SELECT client_order_id, status FROM orders"))
    assert statuses[entry] == "canceled"
    assert statuses[exit_] == "open"
    rows = journal_rows(eng, "SELECT id, source, kind, verdict FROM intents WHERE source = 'shutdown'")
    assert [(r[0].rsplit(":", 1)[0], r[1:]) for r in rows] == [
        (f"shutdown-cancel:{entry}", ("shutdown", "cancel", "canceled"))]
    assert sample(eng, "tradewarden_runner_shutdown_cancels_total", result="canceled") == 1
    assert sample(eng, "tradewarden_runner_orders_total", mode="paper", result="canceled") == 1
    # The paper balances in the journal no longer hold the canceled entry's funds.
    assert eng.journal.get("paper_balances")["USDT"] == pytest.approx(
        eng.broker.fetch_balance()["USDT"].total)


def test_a_cancel_refused_by_a_risk_limit_is_named_and_left_open(tmp_path: pathlib.Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    eng = make_engine(tmp_path, risk={"cancelsPerMinute": 0})
    price = eng.last_price(SYM)
    assert price is not None
    assert eng.broker is not None
    entry = rest(eng, "manual:rest-buy", OrderSide.BUY, round(price * 0.9, 2))
    got = eng.cancel_resting_entries(time.monotonic() + 5)
    assert got.canceled == []
    assert "cancelsPerMinute" in got.left_open[entry]
    assert [o.client_order_id for o in eng.broker.fetch_open_orders(SYM)] == [entry]
    assert sample(eng, "tradewarden_runner_shutdown_cancels_total", result="left_open") == 1
    assert sample(eng, "tradewarden_runner_risk_rejections_total", reason="cancel_rate") == 1
    errors = [r for r in caplog.records if r.levelname == "ERROR" and entry in r.getMessage()]
    assert errors, "each order left open is named in an error"
    assert journal_rows(eng, "SELECT verdict FROM intents WHERE source = 'shutdown'") == [("left_open",)]


def test_no_time_left_leaves_the_entry_open_without_asking(tmp_path: pathlib.Path) -> None:
    eng = make_engine(tmp_path)
    price = eng.last_price(SYM)
    assert price is not None
    assert eng.broker is not None
    entry = rest(eng, "manual:rest-buy", OrderSide.BUY, round(price * 0.9, 2))
    got = eng.cancel_resting_entries(time.monotonic() - 1)
    assert list(got.left_open) == [entry]
    assert "no time left" in got.left_open[entry]


def test_signals_mode_has_nothing_to_cancel(tmp_path: pathlib.Path) -> None:
    eng = make_engine(tmp_path, mode="signals")
    assert eng.broker is None
    got = eng.cancel_resting_entries(time.monotonic() + 5)
    assert (got.canceled, got.left_open, got.exits_kept) == ([], {}, 0)


def test_a_stopping_engine_sends_no_new_entry_but_still_exits(tmp_path: pathlib.Path) -> None:
    eng = make_engine(tmp_path)
    eng.process_intent(Intent(id="open", source="strategy", lane=Lane.MAIN, symbol=SYM, side=OrderSide.BUY,
                              kind=IntentKind.ENTRY, amount=0.05))
    orders = len(eng.journal.orders())
    eng.begin_stop()
    assert eng.process_intent(Intent(id="late", source="strategy", lane=Lane.MAIN, symbol=SYM,
                                     side=OrderSide.BUY, kind=IntentKind.ENTRY, amount=0.01)) is None
    assert len(eng.journal.orders()) == orders
    assert not eng.journal.intent_done("late")  # not recorded as done: a manual one runs in the next runner
    closed = eng.process_intent(Intent(id="close", source="strategy", lane=Lane.MAIN, symbol=SYM,
                                       side=OrderSide.SELL, kind=IntentKind.EXIT))
    assert closed is not None
    assert closed.status is OrderStatus.CLOSED
    assert not eng.positions[SYM].is_open


def test_shutdown_bound_comes_from_the_environment() -> None:
    assert shutdown_seconds({}) == DEFAULT_SHUTDOWN_SECONDS == 20.0
    assert shutdown_seconds({"TRADEWARDEN_SHUTDOWN_SECONDS": "8"}) == 8.0
    for bad in ("0", "-3", "soon", "7200"):
        with pytest.raises(SystemExit, match="TRADEWARDEN_SHUTDOWN_SECONDS"):
            shutdown_seconds({"TRADEWARDEN_SHUTDOWN_SECONDS": bad})
