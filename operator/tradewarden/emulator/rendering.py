"""Binance spot REST v3 response shapes for the emulator's markets, orders, trades and balances.

Called by ``emulator.serving`` once the engine has answered a request. The field names, string
formatting (eight decimal places) and types follow Binance's documented responses, because ccxt's
``binance`` class parses exactly these fields; the emulator omits only fields ccxt does not read.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tradewarden.emulator.matching import BinanceError, Engine, Order, Trade, parse_int
from tradewarden.emulator.series import BAR_MS, EIGHT_PLACES, Bar, MarketSpec

INTERVAL_MINUTES: dict[str, int] = {
    "1m": 1,
    "3m": 3,
    "5m": 5,
    "15m": 15,
    "30m": 30,
    "1h": 60,
    "2h": 120,
    "4h": 240,
    "6h": 360,
    "8h": 480,
    "12h": 720,
    "1d": 1440,
}

Json = dict[str, Any]


def fmt(value: Decimal) -> str:
    return format(value.quantize(EIGHT_PLACES), "f")


def exchange_info(engine: Engine, market_ids: list[str] | None) -> Json:
    specs = [engine.spec(mid) for mid in market_ids] if market_ids else list(engine.specs.values())
    return {
        "timezone": "UTC",
        "serverTime": engine.now_ms(),
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
        ],
        "exchangeFilters": [],
        "symbols": [symbol_info(spec) for spec in specs],
    }


def symbol_info(spec: MarketSpec) -> Json:
    return {
        "symbol": spec.market_id,
        "status": "TRADING",
        "baseAsset": spec.base,
        "baseAssetPrecision": 8,
        "quoteAsset": spec.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        # Only what the emulator executes; ccxt refuses locally any type not listed here.
        "orderTypes": ["LIMIT", "MARKET"],
        "icebergAllowed": False,
        "ocoAllowed": False,
        "otoAllowed": False,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": fmt(spec.min_price),
                "maxPrice": fmt(spec.max_price),
                "tickSize": fmt(spec.tick_size),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": fmt(spec.min_qty),
                "maxQty": fmt(spec.max_qty),
                "stepSize": fmt(spec.step_size),
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": fmt(spec.min_notional),
                "applyMinToMarket": True,
                "maxNotional": fmt(Decimal("9000000")),
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def _forming_bar(engine: Engine, spec: MarketSpec) -> Bar:
    # The forming bar has only traded at its open so far: the engine's price is the last close.
    series = engine.series[spec.market_id]
    price = series.close_before(engine.index)
    return Bar(
        index=engine.index,
        open_ms=spec_open_ms(engine, engine.index),
        open=price,
        high=price,
        low=price,
        close=price,
        volume=Decimal(0),
        trades=0,
        regime=series.bar(max(engine.index - 1, 0)).regime,
    )


def spec_open_ms(engine: Engine, index: int) -> int:
    return engine.settings.start_ms + index * BAR_MS


def _bars(engine: Engine, spec: MarketSpec, start: int, stop: int) -> list[Bar]:
    """One-minute bars ``start`` to ``stop`` (exclusive), the last one possibly the forming bar."""
    closed_stop = min(stop, engine.index)
    bars = engine.series[spec.market_id].bars(start, closed_stop)
    if stop > engine.index >= start:
        bars.append(_forming_bar(engine, spec))
    return bars


def klines(engine: Engine, spec: MarketSpec, params: dict[str, str]) -> list[list[Any]]:
    """GET /api/v3/klines: oldest first, the last row being the still-forming bar, as on Binance."""
    interval = params.get("interval") or ""
    if not interval:
        raise BinanceError(
            400, -1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed."
        )
    minutes = INTERVAL_MINUTES.get(interval)
    if minutes is None:
        raise BinanceError(400, -1120, "Invalid interval.")
    limit = _int_param(params, "limit", 500)
    if not 1 <= limit <= 1000:
        raise BinanceError(400, -1130, "Invalid data sent for a parameter.")
    span = minutes * BAR_MS
    start_ms = engine.settings.start_ms
    last = engine.index // minutes
    end_time = parse_int(params, "endTime")
    if end_time is not None:
        last = min(last, (end_time - start_ms) // span)
    start_time = parse_int(params, "startTime")
    if start_time is not None:
        first = max(0, -(-(start_time - start_ms) // span))
        last = min(last, first + limit - 1)
    else:
        first = max(0, last - limit + 1)
    rows: list[list[Any]] = []
    for bucket in range(first, last + 1):
        bars = _bars(engine, spec, bucket * minutes, (bucket + 1) * minutes)
        if not bars:
            continue
        open_ms = start_ms + bucket * span
        volume = sum((b.volume for b in bars), Decimal(0))
        quote_volume = sum((b.volume * b.close for b in bars), Decimal(0))
        rows.append(
            [
                open_ms,
                fmt(bars[0].open),
                fmt(max(b.high for b in bars)),
                fmt(min(b.low for b in bars)),
                fmt(bars[-1].close),
                fmt(volume),
                open_ms + span - 1,
                fmt(quote_volume),
                sum(b.trades for b in bars),
                fmt(spec.floor_qty(volume / 2)),
                fmt(spec.floor_qty(volume / 2) * bars[-1].close),
                "0",
            ]
        )
    return rows


def _book_qty(spec: MarketSpec, engine: Engine, level: int) -> Decimal:
    # Deterministic, varied sizes: enough for ccxt to parse a book, no pretence of realism.
    factor = Decimal(1 + (level * 7919 + engine.index * 104729) % 13) / 4
    return max(spec.floor_qty(Decimal(repr(spec.base_volume)) / 20 * factor), spec.min_qty)


def ticker_24hr(engine: Engine, spec: MarketSpec) -> Json:
    now = engine.now_ms()
    window = engine.series[spec.market_id].bars(max(0, engine.index - 1440), engine.index)
    last = engine.price(spec)
    bid, ask = engine.quote(spec)
    open_price = window[0].open if window else last
    volume = sum((b.volume for b in window), Decimal(0))
    quote_volume = sum((b.volume * b.close for b in window), Decimal(0))
    count = sum(b.trades for b in window)
    change = last - open_price
    return {
        "symbol": spec.market_id,
        "priceChange": fmt(change),
        "priceChangePercent": format((change / open_price * 100).quantize(Decimal("0.001")), "f"),
        "weightedAvgPrice": fmt(quote_volume / volume if volume else last),
        "prevClosePrice": fmt(open_price),
        "lastPrice": fmt(last),
        "lastQty": fmt(spec.min_qty),
        "bidPrice": fmt(bid),
        "bidQty": fmt(_book_qty(spec, engine, 0)),
        "askPrice": fmt(ask),
        "askQty": fmt(_book_qty(spec, engine, 1)),
        "openPrice": fmt(open_price),
        "highPrice": fmt(max((b.high for b in window), default=last)),
        "lowPrice": fmt(min((b.low for b in window), default=last)),
        "volume": fmt(volume),
        "quoteVolume": fmt(quote_volume),
        "openTime": now - 86_400_000,
        "closeTime": now,
        "firstId": 0,
        "lastId": max(count - 1, 0),
        "count": count,
    }


def book_ticker(engine: Engine, spec: MarketSpec) -> Json:
    bid, ask = engine.quote(spec)
    return {
        "symbol": spec.market_id,
        "bidPrice": fmt(bid),
        "bidQty": fmt(_book_qty(spec, engine, 0)),
        "askPrice": fmt(ask),
        "askQty": fmt(_book_qty(spec, engine, 1)),
    }


def price_ticker(engine: Engine, spec: MarketSpec) -> Json:
    return {"symbol": spec.market_id, "price": fmt(engine.price(spec))}


def avg_price(engine: Engine, spec: MarketSpec) -> Json:
    bars = engine.series[spec.market_id].bars(max(0, engine.index - 5), engine.index)
    price = sum((b.close for b in bars), Decimal(0)) / len(bars) if bars else engine.price(spec)
    return {"mins": 5, "price": fmt(spec.round_price(price)), "closeTime": engine.now_ms()}


def depth(engine: Engine, spec: MarketSpec, params: dict[str, str]) -> Json:
    limit = _int_param(params, "limit", 100)
    if not 1 <= limit <= 5000:
        raise BinanceError(400, -1130, "Invalid data sent for a parameter.")
    bid, ask = engine.quote(spec)
    levels = min(limit, 500)
    bids = []
    asks = []
    for level in range(levels):
        bid_price = bid - spec.tick_size * level
        if bid_price > 0:
            bids.append([fmt(bid_price), fmt(_book_qty(spec, engine, 2 * level))])
        asks.append([fmt(ask + spec.tick_size * level), fmt(_book_qty(spec, engine, 2 * level + 1))])
    return {"lastUpdateId": engine.index, "bids": bids, "asks": asks}


def order_json(order: Order, response_type: str = "QUERY") -> Json:
    """An order as POST (``ACK``/``RESULT``/``FULL``) or GET (``QUERY``) /api/v3/order render it."""
    base: Json = {
        "symbol": order.spec.market_id,
        "orderId": order.order_id,
        "orderListId": -1,
        "clientOrderId": order.client_order_id,
    }
    if response_type == "ACK":
        base["transactTime"] = order.time
        return base
    base.update(
        {
            "price": fmt(order.price),
            "origQty": fmt(order.orig_qty),
            "executedQty": fmt(order.executed_qty),
            "cummulativeQuoteQty": fmt(order.cum_quote),
            "status": str(order.status),
            "timeInForce": order.time_in_force,
            "type": order.type,
            "side": order.side,
        }
    )
    if response_type == "QUERY":
        base.update(
            {
                "stopPrice": fmt(Decimal(0)),
                "icebergQty": fmt(Decimal(0)),
                "time": order.time,
                "updateTime": order.update_time,
                "isWorking": True,
                "workingTime": order.time,
                "origQuoteOrderQty": fmt(order.orig_quote_qty),
                "selfTradePreventionMode": "EXPIRE_MAKER",
            }
        )
        return base
    base["transactTime"] = order.time
    base["workingTime"] = order.time
    base["origQuoteOrderQty"] = fmt(order.orig_quote_qty)
    base["selfTradePreventionMode"] = "EXPIRE_MAKER"
    if response_type == "FULL":
        base["fills"] = [
            {
                "price": fmt(t.price),
                "qty": fmt(t.qty),
                "commission": fmt(t.commission),
                "commissionAsset": t.commission_asset,
                "tradeId": t.trade_id,
            }
            for t in order.fills
        ]
    return base


def cancel_json(order: Order, cancel_client_id: str, now: int) -> Json:
    return {
        "symbol": order.spec.market_id,
        "origClientOrderId": order.client_order_id,
        "orderId": order.order_id,
        "orderListId": -1,
        "clientOrderId": cancel_client_id,
        "transactTime": now,
        "price": fmt(order.price),
        "origQty": fmt(order.orig_qty),
        "executedQty": fmt(order.executed_qty),
        "cummulativeQuoteQty": fmt(order.cum_quote),
        "status": str(order.status),
        "timeInForce": order.time_in_force,
        "type": order.type,
        "side": order.side,
        "selfTradePreventionMode": "EXPIRE_MAKER",
    }


def trade_json(trade: Trade) -> Json:
    return {
        "symbol": trade.spec.market_id,
        "id": trade.trade_id,
        "orderId": trade.order_id,
        "orderListId": -1,
        "price": fmt(trade.price),
        "qty": fmt(trade.qty),
        "quoteQty": fmt(trade.quote_qty),
        "commission": fmt(trade.commission),
        "commissionAsset": trade.commission_asset,
        "time": trade.time,
        "isBuyer": trade.is_buyer,
        "isMaker": trade.is_maker,
        "isBestMatch": True,
    }


def account_json(engine: Engine, omit_zero: bool) -> Json:
    fee_units = int(engine.settings.fee_rate * 10_000)
    rate = fmt(engine.settings.fee_rate)
    balances = [
        {"asset": asset, "free": fmt(h.free), "locked": fmt(h.locked)}
        for asset, h in engine.iter_assets()
        if not (omit_zero and h.free == 0 and h.locked == 0)
    ]
    return {
        "makerCommission": fee_units,
        "takerCommission": fee_units,
        "buyerCommission": 0,
        "sellerCommission": 0,
        "commissionRates": {
            "maker": rate,
            "taker": rate,
            "buyer": fmt(Decimal(0)),
            "seller": fmt(Decimal(0)),
        },
        "canTrade": True,
        "canWithdraw": False,
        "canDeposit": False,
        "brokered": False,
        "requireSelfTradePrevention": False,
        "preventSor": False,
        "updateTime": engine.now_ms(),
        "accountType": "SPOT",
        "balances": balances,
        "permissions": ["SPOT"],
        "uid": 1,
    }


def state_json(engine: Engine) -> Json:
    """The admin state dump: everything a test or a human needs to see what the emulator did."""
    markets = {}
    for spec in engine.specs.values():
        bid, ask = engine.quote(spec)
        last_bar = engine.series[spec.market_id].bar(engine.index - 1)
        markets[spec.symbol] = {
            "id": spec.market_id,
            "price": fmt(engine.price(spec)),
            "bid": fmt(bid),
            "ask": fmt(ask),
            "regime": str(last_bar.regime),
        }
    return {
        "index": engine.index,
        "time": engine.now_ms(),
        "barSeconds": engine.clock.bar_seconds,
        "markets": markets,
        "balances": {a: {"free": fmt(h.free), "locked": fmt(h.locked)} for a, h in engine.iter_assets()},
        "orders": [order_json(o) for o in engine.orders.values()],
        "trades": [trade_json(t) for t in engine.trades],
    }


def _int_param(params: dict[str, str], name: str, default: int) -> int:
    value = parse_int(params, name)
    return default if value is None else value
