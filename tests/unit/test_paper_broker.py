"""PaperBroker: fees, adverse slippage, idempotency, reduce-only clamping, resting limits, refusals.

Prices are round numbers so every expected balance can be computed by hand in the test.
"""

from __future__ import annotations

from typing import Any

import pytest

from tradewarden.api.market import Candle, OrderRequest, OrderSide, OrderStatus, OrderType
from tradewarden.exchange import Broker, ExchangeClient, MarketRules, PaperBroker
from tradewarden.exchange.errors import BadSymbol, InsufficientFunds, InvalidOrder, NeedsHuman, OrderNotFound

BTC = "BTC/USDT"


def make_broker(**kwargs: Any) -> PaperBroker:
    defaults: dict[str, Any] = {"starting_quote": 10_000.0, "fee_bps": 10.0, "slippage_bps": 10.0}
    defaults.update(kwargs)
    broker = PaperBroker(**defaults)
    broker.update_price(BTC, 100.0, ts=1_000)
    return broker


def order(
    cid: str,
    side: OrderSide = OrderSide.BUY,
    amount: float = 1.0,
    *,
    type: OrderType = OrderType.MARKET,
    price: float | None = None,
    reduce_only: bool = False,
    symbol: str = BTC,
) -> OrderRequest:
    return OrderRequest(symbol, side, type, amount, cid, price=price, reduce_only=reduce_only)


def candle(open: float, high: float, low: float, close: float, ts: int = 60_000) -> Candle:
    return Candle(ts=ts, open=open, high=high, low=low, close=close, volume=1.0)


def test_both_brokers_satisfy_the_protocol() -> None:
    assert isinstance(make_broker(), Broker)
    assert issubclass(ExchangeClient, Broker)


def test_market_buy_pays_slippage_and_fee_in_quote() -> None:
    broker = make_broker()
    result = broker.create_order(order("b1"))
    assert result.status is OrderStatus.CLOSED
    assert result.filled == 1.0
    assert result.average == pytest.approx(100.1)  # 10 bps above the last price: adverse for a buyer
    (fill,) = result.fills
    assert fill.price == pytest.approx(100.1)
    assert fill.fee == pytest.approx(0.1001)
    assert fill.fee_currency == "USDT"
    balances = broker.fetch_balance()
    assert balances["USDT"].free == pytest.approx(10_000 - 100.1 - 0.1001)
    assert balances["BTC"].total == pytest.approx(1.0)
    assert result.ts == 1_000


def test_market_sell_slips_downwards() -> None:
    broker = make_broker(balances={"USDT": 0.0, "BTC": 2.0})
    result = broker.create_order(order("s1", OrderSide.SELL, 2.0))
    assert result.average == pytest.approx(99.9)
    assert broker.fetch_balance()["USDT"].free == pytest.approx(2 * 99.9 * (1 - 0.001))
    assert "BTC" not in broker.fetch_balance()


def test_same_client_order_id_never_fills_twice() -> None:
    broker = make_broker()
    first = broker.create_order(order("same"))
    usdt_after_first = broker.fetch_balance()["USDT"].free
    broker.update_price(BTC, 120.0, ts=2_000)
    second = broker.create_order(order("same", amount=5.0))
    assert second == first
    assert broker.fetch_balance()["USDT"].free == usdt_after_first
    assert broker.fetch_order_by_client_id(BTC, "same") == first
    assert broker.fetch_order_by_client_id(BTC, "other") is None


def test_reduce_only_sell_is_clamped_to_the_holding() -> None:
    broker = make_broker(balances={"USDT": 0.0, "BTC": 0.5})
    result = broker.create_order(order("exit", OrderSide.SELL, 3.0, reduce_only=True))
    assert result.status is OrderStatus.CLOSED
    assert result.amount == pytest.approx(0.5)
    assert result.filled == pytest.approx(0.5)
    assert "BTC" not in broker.fetch_balance()


@pytest.mark.parametrize("side", [OrderSide.SELL, OrderSide.BUY])
def test_reduce_only_with_nothing_to_reduce_is_rejected_without_trading(side: OrderSide) -> None:
    broker = make_broker()
    result = broker.create_order(order("noop", side, 1.0, reduce_only=True))
    assert result.status is OrderStatus.REJECTED
    assert result.amount == 0.0
    assert result.filled == 0.0
    assert broker.fetch_balance()["USDT"].free == 10_000.0
    # Idempotent like any other order: asking again returns the same answer.
    assert broker.create_order(order("noop", side, 1.0, reduce_only=True)) == result


def test_limit_buy_rests_with_funds_locked_then_fills_when_price_crosses() -> None:
    broker = make_broker()
    placed = broker.create_order(order("lim", amount=2.0, type=OrderType.LIMIT, price=95.0))
    assert placed.status is OrderStatus.OPEN
    assert placed.price == 95.0
    locked = 2 * 95.0 * 1.001
    usdt = broker.fetch_balance()["USDT"]
    assert usdt.used == pytest.approx(locked)
    assert usdt.free == pytest.approx(10_000 - locked)
    assert [o.client_order_id for o in broker.fetch_open_orders(BTC)] == ["lim"]

    assert broker.update_price(BTC, candle(100, 101, 96, 97), ts=61_000) == []
    filled = broker.update_price(BTC, candle(97, 98, 94, 96), ts=121_000)
    assert [o.client_order_id for o in filled] == ["lim"]
    result = broker.fetch_order_by_client_id(BTC, "lim")
    assert result is not None
    assert result.status is OrderStatus.CLOSED
    assert result.average == 95.0  # a resting order fills at its limit, no slippage
    assert result.ts == 121_000
    usdt = broker.fetch_balance()["USDT"]
    assert usdt.used == pytest.approx(0.0)
    assert usdt.free == pytest.approx(10_000 - 2 * 95 * 1.001)
    assert broker.fetch_open_orders() == []


def test_limit_sell_fills_at_the_open_when_the_candle_gaps_through_it() -> None:
    broker = make_broker(balances={"USDT": 0.0, "BTC": 1.0})
    broker.create_order(order("tp", OrderSide.SELL, 1.0, type=OrderType.LIMIT, price=110.0))
    assert broker.fetch_balance()["BTC"].used == 1.0
    (filled,) = broker.update_price(BTC, candle(115, 116, 112, 113), ts=61_000)
    assert filled.average == 115.0


def test_plain_price_update_fills_a_resting_limit_at_its_limit() -> None:
    broker = make_broker()
    broker.create_order(order("lim", type=OrderType.LIMIT, price=90.0))
    (filled,) = broker.update_price(BTC, 85.0, ts=2_000)
    assert filled.average == 90.0


def test_marketable_limit_fills_at_once_at_the_better_price() -> None:
    broker = make_broker()
    result = broker.create_order(order("cross", type=OrderType.LIMIT, price=105.0))
    assert result.status is OrderStatus.CLOSED
    assert result.average == pytest.approx(100.1)
    capped = broker.create_order(order("capped", type=OrderType.LIMIT, price=100.05))
    assert capped.average == pytest.approx(100.05)


def test_cancel_releases_locked_funds() -> None:
    broker = make_broker()
    placed = broker.create_order(order("lim", amount=1.0, type=OrderType.LIMIT, price=50.0))
    canceled = broker.cancel_order(BTC, placed.id)
    assert canceled.status is OrderStatus.CANCELED
    assert broker.fetch_balance()["USDT"].free == pytest.approx(10_000.0)
    assert broker.fetch_balance()["USDT"].used == 0.0
    with pytest.raises(OrderNotFound):
        broker.cancel_order(BTC, placed.id)
    with pytest.raises(OrderNotFound):
        broker.cancel_order(BTC, "paper-999")
    # A canceled order no longer fills.
    assert broker.update_price(BTC, 10.0, ts=3_000) == []


def test_an_order_it_cannot_afford_is_refused_and_not_recorded() -> None:
    broker = make_broker(starting_quote=50.0)
    with pytest.raises(InsufficientFunds) as caught:
        broker.create_order(order("big", amount=1.0))
    assert isinstance(caught.value, NeedsHuman)
    assert broker.fetch_balance()["USDT"].free == 50.0
    assert broker.fetch_order_by_client_id(BTC, "big") is None
    with pytest.raises(InsufficientFunds):
        broker.create_order(order("sell", OrderSide.SELL, 1.0))
    with pytest.raises(InsufficientFunds):
        broker.create_order(order("lim", amount=1.0, type=OrderType.LIMIT, price=60.0))


def test_invalid_orders_are_refused() -> None:
    broker = make_broker()
    with pytest.raises(InvalidOrder, match="no price seen for ETH/USDT"):
        broker.create_order(order("e", symbol="ETH/USDT"))
    with pytest.raises(InvalidOrder, match="amount must be > 0"):
        broker.create_order(order("z", amount=0.0))
    with pytest.raises(InvalidOrder, match="needs a price"):
        broker.create_order(order("p", type=OrderType.LIMIT))
    with pytest.raises(BadSymbol):
        broker.update_price("BTCUSDT", 1.0, ts=0)


def test_market_rules_round_amounts_and_prices() -> None:
    rules = MarketRules(BTC, "BTC", "USDT", amount_step=0.001, price_tick=0.5, min_amount=0.01)
    broker = make_broker(markets={BTC: rules})
    result = broker.create_order(order("r", amount=0.12345))
    assert result.amount == pytest.approx(0.123)
    assert result.average == 100.5  # 100.1 rounded up to the tick: away from the buyer
    limit = broker.create_order(order("l", amount=0.05, type=OrderType.LIMIT, price=90.3))
    assert limit.price == 90.5
    with pytest.raises(InvalidOrder, match="below the minimum"):
        broker.create_order(order("tiny", amount=0.005))


def test_positions_track_the_average_entry_and_go_flat() -> None:
    broker = make_broker(slippage_bps=0.0)
    broker.create_order(order("a", amount=1.0))
    broker.update_price(BTC, 110.0, ts=2_000)
    broker.create_order(order("b", amount=1.0))
    position = broker.fetch_positions([BTC, "ETH/USDT"])
    assert position[BTC].qty == pytest.approx(2.0)
    assert position[BTC].entry_price == pytest.approx(105.0)
    assert not position["ETH/USDT"].is_open
    broker.create_order(order("c", OrderSide.SELL, 2.0, reduce_only=True))
    assert not broker.fetch_positions([BTC])[BTC].is_open


def test_equity_values_holdings_at_the_last_price() -> None:
    broker = make_broker(slippage_bps=0.0, fee_bps=0.0)
    broker.create_order(order("a", amount=10.0))
    broker.update_price(BTC, 150.0, ts=2_000)
    assert broker.equity() == pytest.approx(10_000 - 1_000 + 1_500)


def test_same_inputs_give_the_same_outputs() -> None:
    def run() -> list[object]:
        broker = make_broker()
        out: list[object] = [broker.create_order(order("1", amount=0.5))]
        out.append(broker.create_order(order("2", amount=0.5, type=OrderType.LIMIT, price=98.0)))
        out.extend(broker.update_price(BTC, candle(100, 100, 97, 99), ts=5_000))
        out.append(broker.fetch_balance())
        return out

    assert run() == run()


def test_equity_is_the_book_its_own_fills_make() -> None:
    """The paper account and a book derived from its fills alone (as the runner derives its live book)
    agree: one accounting of a fill (``fill_cash_flow``) and one valuation (``mark_to_market``)."""
    from tradewarden.exchange.broker import fill_cash_flow, mark_to_market

    broker = make_broker()
    results = [broker.create_order(order("a", amount=2.0))]
    broker.update_price(BTC, 95.0, ts=2_000)
    results.append(broker.create_order(order("b", OrderSide.SELL, 1.5)))
    broker.update_price(BTC, 97.0, ts=3_000)
    results.append(broker.create_order(order("c", amount=0.25)))
    broker.update_price(BTC, 96.0, ts=4_000)
    cash, held = 10_000.0, 0.0
    for result in results:
        for fill in result.fills:
            cash += fill_cash_flow(result.side, fill.price, fill.amount, fill.fee)
            held += fill.amount if result.side is OrderSide.BUY else -fill.amount
    assert cash == pytest.approx(broker.fetch_balance()["USDT"].total, abs=1e-9)
    assert mark_to_market(cash, {BTC: held}, {BTC: 96.0}) == pytest.approx(broker.equity(), abs=1e-9)
    # By hand: bought 2 at 100.1 and 0.25 at 97.097, sold 1.5 at 94.905, fees 10 bps of each notional.
    spent = 2 * 100.1 * 1.001 + 0.25 * 97.097 * 1.001 - 1.5 * 94.905 * 0.999
    assert broker.equity() == pytest.approx(10_000 - spent + 0.75 * 96.0, abs=1e-9)
