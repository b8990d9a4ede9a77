"""The emulated exchange's books: market clock, balances, orders, fills and fees.

``emulator.serving`` parses each HTTP request into a call here and ``emulator.rendering`` turns the
results into Binance's JSON shapes. Every public method takes the engine lock, because the HTTP server
answers requests on several threads.

Fill model, kept simple on purpose so tests can predict every number:

- The *price* of a market is the close of the last closed bar. The quote is ``bid = price - half spread``
  and ``ask = price + half spread`` (at least one tick each side).
- A market order fills at once, completely, at the ask (buy) or bid (sell) moved against the taker by
  the configured slippage and rounded to the tick, away from the taker.
- A limit order that crosses the quote fills at once at the quote (taker). Otherwise it rests, its funds
  locked, and fills completely at its own price when a later bar trades through it (maker). There are
  no partial fills.
- The fee is ``fee_rate`` of the notional, charged in the quote asset for buys and sells alike, as if a
  separate fee asset paid it: a buy of 0.01 BTC yields exactly 0.01 BTC, so selling it back works.
- A newClientOrderId is unique among orders that are open or filled; a canceled or expired order's id
  may be reused, as on Binance.
- An order placed under a ``rest`` fault (``emulator.faults``) is *held*: accepted with its funds locked
  (a market order's at the price it would have filled at), never matched, open until it is canceled.
"""

from __future__ import annotations

import enum
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation

from tradewarden.emulator.series import BAR_MS, EIGHT_PLACES, MarketSpec, Series

CLIENT_ORDER_ID_PATTERN = re.compile(r"^[a-zA-Z0-9\-_]{1,36}$")
DECIMAL_PATTERN = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")


class BinanceError(Exception):
    """An error as Binance reports it: an HTTP status and a ``{"code": ..., "msg": ...}`` body.

    The codes and messages are Binance's own, because ccxt maps them (by code, and for some by exact
    message) to its exception classes; a different text would change which class the client sees.
    """

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(f"{status} {code} {msg}")
        self.status = status
        self.code = code
        self.msg = msg


def mandatory(name: str) -> BinanceError:
    return BinanceError(
        400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


INSUFFICIENT_BALANCE = (400, -2010, "Account has insufficient balance for requested action.")
DUPLICATE_ORDER = (400, -2010, "Duplicate order sent.")
UNKNOWN_ORDER = (400, -2011, "Unknown order sent.")
ORDER_DOES_NOT_EXIST = (400, -2013, "Order does not exist.")
INVALID_SYMBOL = (400, -1121, "Invalid symbol.")


class OrderState(enum.StrEnum):
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"


OPEN_STATES = frozenset({OrderState.NEW, OrderState.PARTIALLY_FILLED})
UNIQUE_ID_STATES = frozenset({OrderState.NEW, OrderState.PARTIALLY_FILLED, OrderState.FILLED})


@dataclass(slots=True)
class Holding:
    free: Decimal = Decimal(0)
    locked: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class Trade:
    trade_id: int
    order_id: int
    spec: MarketSpec
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    time: int
    is_buyer: bool
    is_maker: bool


@dataclass(slots=True)
class Order:
    order_id: int
    client_order_id: str
    spec: MarketSpec
    side: str
    type: str
    time_in_force: str
    price: Decimal
    orig_qty: Decimal
    orig_quote_qty: Decimal
    time: int
    executed_qty: Decimal = Decimal(0)
    cum_quote: Decimal = Decimal(0)
    status: OrderState = OrderState.NEW
    update_time: int = 0
    locked: Decimal = Decimal(0)
    """Funds held for a resting order: quote for a buy (notional plus fee), base for a sell."""
    held: bool = False
    """Placed under a ``rest`` fault: never matched; only a cancel takes it off the book."""
    fills: list[Trade] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATES


def fee_for(notional: Decimal, rate: Decimal) -> Decimal:
    # The venue rounds fees in its own favour, to eight places like Binance's commission field.
    return (notional * rate).quantize(EIGHT_PLACES, rounding=ROUND_CEILING)


def parse_decimal(params: Mapping[str, str], name: str, *, required: bool = True) -> Decimal | None:
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise mandatory(name)
        return None
    if not DECIMAL_PATTERN.match(raw):
        raise BinanceError(
            400,
            -1100,
            f"Illegal characters found in parameter '{name}'; "
            "legal range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'.",
        )
    try:
        return Decimal(raw)
    except InvalidOperation as exc:  # pragma: no cover - the pattern already excludes this
        raise mandatory(name) from exc


def parse_int(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise BinanceError(
            400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
        ) from exc


class MarketClock:
    """Counts bars: explicit advances, plus one bar every ``bar_seconds`` of real time when set.

    With ``bar_seconds=None`` the market only moves when told to, which makes tests deterministic.
    """

    def __init__(self, first_index: int, bar_seconds: float | None, monotonic: Callable[[], float]) -> None:
        if bar_seconds is not None and bar_seconds <= 0:
            bar_seconds = None
        self.bar_seconds = bar_seconds
        self._first = first_index
        self._manual = 0
        self._monotonic = monotonic
        self._t0 = monotonic()

    def position(self) -> tuple[int, float]:
        """The index of the forming bar and how far into it real time has got (0 in manual mode)."""
        if self.bar_seconds is None:
            return self._first + self._manual, 0.0
        elapsed = (self._monotonic() - self._t0) / self.bar_seconds
        whole = int(elapsed)
        return self._first + self._manual + whole, elapsed - whole

    def advance(self, bars: int) -> None:
        self._manual += bars


@dataclass(frozen=True, slots=True)
class EngineSettings:
    markets: tuple[MarketSpec, ...]
    seed: int
    start_ms: int
    history_bars: int
    balances: Mapping[str, Decimal]
    fee_rate: Decimal
    slippage_bps: Decimal
    spread_bps: Decimal
    bar_seconds: float | None


class Engine:
    """All mutable state of one emulated account on one emulated venue."""

    def __init__(self, settings: EngineSettings, monotonic: Callable[[], float] = time.monotonic) -> None:
        if settings.start_ms % 86_400_000:
            raise ValueError(
                f"start_ms must be a UTC midnight so every interval aligns (got {settings.start_ms})"
            )
        if settings.history_bars < 1:
            raise ValueError(f"history_bars must be >= 1 (got {settings.history_bars})")
        self.settings = settings
        self.lock = threading.RLock()
        self._monotonic = monotonic
        self.specs: dict[str, MarketSpec] = {spec.market_id: spec for spec in settings.markets}
        self._init_state()

    def _init_state(self) -> None:
        s = self.settings
        self.series: dict[str, Series] = {
            mid: Series(spec, s.seed, s.start_ms) for mid, spec in self.specs.items()
        }
        self.clock = MarketClock(s.history_bars, s.bar_seconds, self._monotonic)
        self.index = s.history_bars
        self.fraction = 0.0
        self.holdings: dict[str, Holding] = {}
        for spec in self.specs.values():
            self.holdings.setdefault(spec.base, Holding())
            self.holdings.setdefault(spec.quote, Holding())
        for asset, amount in s.balances.items():
            self.holdings[asset] = Holding(free=Decimal(amount))
        self.orders: dict[int, Order] = {}
        self.trades: list[Trade] = []
        self._next_order_id = 1
        self._next_trade_id = 1
        self._next_cancel_id = 1

    # ---- clock -------------------------------------------------------------------------------------

    def sync(self) -> None:
        """Close every bar the clock has passed, filling resting orders on the way."""
        with self.lock:
            target, fraction = self.clock.position()
            while self.index < target:
                self._close_bar(self.index)
                self.index += 1
            self.fraction = fraction

    def advance(self, bars: int) -> None:
        if bars < 0:
            raise ValueError(f"bars must be >= 0 (got {bars})")
        with self.lock:
            self.clock.advance(bars)
            self.sync()

    def now_ms(self) -> int:
        """The market clock: the open of the forming bar, plus elapsed real time in wall-clock mode."""
        return self.settings.start_ms + self.index * BAR_MS + int(self.fraction * BAR_MS)

    def reset(self) -> None:
        with self.lock:
            self._init_state()

    # ---- prices ------------------------------------------------------------------------------------

    def spec(self, market_id: str | None) -> MarketSpec:
        if not market_id:
            raise mandatory("symbol")
        found = self.specs.get(market_id)
        if found is None:
            raise BinanceError(*INVALID_SYMBOL)
        return found

    def price(self, spec: MarketSpec) -> Decimal:
        return self.series[spec.market_id].close_before(self.index)

    def quote(self, spec: MarketSpec) -> tuple[Decimal, Decimal]:
        """The current (bid, ask) around the last price."""
        price = self.price(spec)
        half = spec.round_price(price * self.settings.spread_bps / Decimal(20_000), ROUND_CEILING)
        half = max(half, spec.tick_size)
        return max(price - half, spec.tick_size), price + half

    # ---- balances ----------------------------------------------------------------------------------

    def holding(self, asset: str) -> Holding:
        return self.holdings.setdefault(asset, Holding())

    def set_balances(self, balances: Mapping[str, Decimal]) -> None:
        """Set free balances (tests and the demo use this); locked funds of open orders stay locked."""
        with self.lock:
            for asset, amount in balances.items():
                if amount < 0:
                    raise ValueError(f"balance of {asset} must be >= 0 (got {amount})")
                self.holding(asset).free = amount

    # ---- orders ------------------------------------------------------------------------------------

    def place_order(
        self, params: Mapping[str, str], *, test_only: bool = False, rest: bool = False
    ) -> Order | None:
        """Validate and execute a new order the way POST /api/v3/order does.

        ``test_only`` runs the validation of POST /api/v3/order/test and places nothing. ``rest`` (a
        ``rest`` fault) accepts the order after the same checks and holds it on the book unfilled.
        """
        with self.lock:
            spec = self.spec(params.get("symbol"))
            side = params.get("side") or ""
            order_type = params.get("type") or ""
            if not side:
                raise mandatory("side")
            if not order_type:
                raise mandatory("type")
            if side not in ("BUY", "SELL"):
                raise BinanceError(400, -1117, "Invalid side.")
            if order_type not in ("LIMIT", "MARKET"):
                raise BinanceError(400, -1116, "Invalid orderType.")

            client_order_id = params.get("newClientOrderId") or ""
            if client_order_id and not CLIENT_ORDER_ID_PATTERN.match(client_order_id):
                raise BinanceError(
                    400,
                    -1100,
                    "Illegal characters found in parameter 'newClientOrderId'; "
                    "legal range is '^[a-zA-Z0-9-_]{1,36}$'.",
                )

            bid, ask = self.quote(spec)
            slip = self.settings.slippage_bps / Decimal(10_000)
            price = Decimal(0)
            quote_qty = Decimal(0)
            time_in_force = "GTC"
            if order_type == "LIMIT":
                time_in_force = params.get("timeInForce") or ""
                if not time_in_force:
                    raise mandatory("timeInForce")
                if time_in_force not in ("GTC", "IOC", "FOK"):
                    raise BinanceError(400, -1115, "Invalid timeInForce.")
                price = parse_decimal(params, "price") or Decimal(0)
                qty = parse_decimal(params, "quantity") or Decimal(0)
                self._check_price_filter(spec, price)
                reference = price
            else:
                if params.get("price"):
                    raise BinanceError(400, -1106, "Parameter 'price' sent when not required.")
                reference = (
                    spec.round_price(ask * (1 + slip), ROUND_CEILING)
                    if side == "BUY"
                    else max(spec.round_price(bid * (1 - slip), ROUND_FLOOR), spec.tick_size)
                )
                maybe_qty = parse_decimal(params, "quantity", required=False)
                maybe_quote = parse_decimal(params, "quoteOrderQty", required=False)
                if maybe_qty is None and maybe_quote is None:
                    raise mandatory("quantity")
                if maybe_qty is not None:
                    qty = maybe_qty
                else:
                    assert maybe_quote is not None
                    quote_qty = maybe_quote
                    qty = spec.floor_qty(maybe_quote / reference)
            self._check_lot_size(spec, qty)
            if qty * reference < spec.min_notional:
                raise BinanceError(400, -1013, "Filter failure: NOTIONAL")
            if client_order_id and self._active_with_client_id(spec, client_order_id) is not None:
                raise BinanceError(*DUPLICATE_ORDER)
            if test_only:
                return None

            order_id = self._next_order_id
            now = self.now_ms()
            order = Order(
                order_id=order_id,
                client_order_id=client_order_id or f"emulator-{order_id}",
                spec=spec,
                side=side,
                type=order_type,
                time_in_force=time_in_force,
                price=price,
                orig_qty=qty,
                orig_quote_qty=quote_qty,
                time=now,
                update_time=now,
            )
            base = self.holding(spec.base)
            quote = self.holding(spec.quote)
            if rest:
                return self._hold(order, reference)
            if order_type == "MARKET":
                if side == "BUY":
                    notional = qty * reference
                    if quote.free < notional + fee_for(notional, self.settings.fee_rate):
                        raise BinanceError(*INSUFFICIENT_BALANCE)
                elif base.free < qty:
                    raise BinanceError(*INSUFFICIENT_BALANCE)
                self._register(order)
                self._fill(order, reference, is_maker=False)
                return order

            crosses = price >= ask if side == "BUY" else price <= bid
            if side == "BUY":
                notional = qty * price
                needed = notional + fee_for(notional, self.settings.fee_rate)
                if quote.free < needed:
                    raise BinanceError(*INSUFFICIENT_BALANCE)
            else:
                needed = qty
                if base.free < needed:
                    raise BinanceError(*INSUFFICIENT_BALANCE)
            self._register(order)
            if crosses:
                self._fill(order, ask if side == "BUY" else bid, is_maker=False)
            elif time_in_force in ("IOC", "FOK"):
                order.status = OrderState.EXPIRED
            else:
                held = quote if side == "BUY" else base
                held.free -= needed
                held.locked += needed
                order.locked = needed
            return order

    def _hold(self, order: Order, price: Decimal) -> Order:
        """Accept ``order`` and hold it resting and unmatched, its funds locked at ``price``."""
        spec = order.spec
        if order.side == "BUY":
            notional = order.orig_qty * price
            held, needed = self.holding(spec.quote), notional + fee_for(notional, self.settings.fee_rate)
        else:
            held, needed = self.holding(spec.base), order.orig_qty
        if held.free < needed:
            raise BinanceError(*INSUFFICIENT_BALANCE)
        self._register(order)
        held.free -= needed
        held.locked += needed
        order.locked = needed
        order.held = True
        return order

    def cancel_order(self, params: Mapping[str, str]) -> tuple[Order, str]:
        """Cancel an open order; returns it and the client id Binance assigns to the cancel itself."""
        with self.lock:
            order = self._find(params, missing=UNKNOWN_ORDER)
            if not order.is_open:
                raise BinanceError(*UNKNOWN_ORDER)
            self._release(order)
            order.status = OrderState.CANCELED
            order.update_time = self.now_ms()
            cancel_id = params.get("newClientOrderId") or f"emulator-cancel-{self._next_cancel_id}"
            self._next_cancel_id += 1
            return order, cancel_id

    def get_order(self, params: Mapping[str, str]) -> Order:
        with self.lock:
            return self._find(params, missing=ORDER_DOES_NOT_EXIST)

    def open_orders(self, market_id: str | None) -> list[Order]:
        with self.lock:
            spec = self.spec(market_id) if market_id else None
            return [o for o in self.orders.values() if o.is_open and (spec is None or o.spec is spec)]

    def all_orders(self, params: Mapping[str, str]) -> list[Order]:
        with self.lock:
            spec = self.spec(params.get("symbol"))
            from_id = parse_int(params, "orderId")
            start = parse_int(params, "startTime")
            end = parse_int(params, "endTime")
            limit = min(parse_int(params, "limit") or 500, 1000)
            found = [
                o
                for o in self.orders.values()
                if o.spec is spec
                and (from_id is None or o.order_id >= from_id)
                and (start is None or o.time >= start)
                and (end is None or o.time <= end)
            ]
            return found[:limit] if from_id is not None or start is not None else found[-limit:]

    def my_trades(self, params: Mapping[str, str]) -> list[Trade]:
        with self.lock:
            spec = self.spec(params.get("symbol"))
            order_id = parse_int(params, "orderId")
            from_id = parse_int(params, "fromId")
            start = parse_int(params, "startTime")
            end = parse_int(params, "endTime")
            limit = min(parse_int(params, "limit") or 500, 1000)
            found = [
                t
                for t in self.trades
                if t.spec is spec
                and (order_id is None or t.order_id == order_id)
                and (from_id is None or t.trade_id >= from_id)
                and (start is None or t.time >= start)
                and (end is None or t.time <= end)
            ]
            return found[:limit] if from_id is not None or start is not None else found[-limit:]

    # ---- internals ---------------------------------------------------------------------------------

    def _check_lot_size(self, spec: MarketSpec, qty: Decimal) -> None:
        if qty < spec.min_qty or qty > spec.max_qty or (qty - spec.min_qty) % spec.step_size != 0:
            raise BinanceError(400, -1013, "Filter failure: LOT_SIZE")

    def _check_price_filter(self, spec: MarketSpec, price: Decimal) -> None:
        if price < spec.min_price or price > spec.max_price or (price - spec.min_price) % spec.tick_size != 0:
            raise BinanceError(400, -1013, "Filter failure: PRICE_FILTER")

    def _active_with_client_id(self, spec: MarketSpec, client_order_id: str) -> Order | None:
        for order in self.orders.values():
            if (
                order.spec is spec
                and order.client_order_id == client_order_id
                and order.status in UNIQUE_ID_STATES
            ):
                return order
        return None

    def _find(self, params: Mapping[str, str], *, missing: tuple[int, int, str]) -> Order:
        spec = self.spec(params.get("symbol"))
        order_id = parse_int(params, "orderId")
        client_id = params.get("origClientOrderId") or ""
        if order_id is None and not client_id:
            raise BinanceError(
                400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
            )
        if order_id is not None:
            order = self.orders.get(order_id)
            if order is None or order.spec is not spec or (client_id and order.client_order_id != client_id):
                raise BinanceError(*missing)
            return order
        # A canceled order's id may have been reused: the newest order with that id is the one meant.
        for candidate in reversed(self.orders.values()):
            if candidate.spec is spec and candidate.client_order_id == client_id:
                return candidate
        raise BinanceError(*missing)

    def _register(self, order: Order) -> None:
        self.orders[order.order_id] = order
        self._next_order_id += 1

    def _release(self, order: Order) -> None:
        if order.locked:
            held = self.holding(order.spec.quote if order.side == "BUY" else order.spec.base)
            held.locked -= order.locked
            held.free += order.locked
            order.locked = Decimal(0)

    def _fill(self, order: Order, price: Decimal, *, is_maker: bool, at: int | None = None) -> None:
        spec = order.spec
        qty = order.orig_qty - order.executed_qty
        notional = qty * price
        fee = fee_for(notional, self.settings.fee_rate)
        self._release(order)
        base = self.holding(spec.base)
        quote = self.holding(spec.quote)
        if order.side == "BUY":
            quote.free -= notional + fee
            base.free += qty
        else:
            base.free -= qty
            quote.free += notional - fee
        now = self.now_ms() if at is None else at
        trade = Trade(
            trade_id=self._next_trade_id,
            order_id=order.order_id,
            spec=spec,
            price=price,
            qty=qty,
            quote_qty=notional,
            commission=fee,
            commission_asset=spec.quote,
            time=now,
            is_buyer=order.side == "BUY",
            is_maker=is_maker,
        )
        self._next_trade_id += 1
        self.trades.append(trade)
        order.fills.append(trade)
        order.executed_qty += qty
        order.cum_quote += notional
        order.status = OrderState.FILLED
        order.update_time = now

    def _close_bar(self, index: int) -> None:
        resting = sorted((o for o in self.orders.values() if o.is_open and not o.held), key=lambda o: o.order_id)
        for order in resting:
            bar = self.series[order.spec.market_id].bar(index)
            if (order.side == "BUY" and bar.low <= order.price) or (
                order.side == "SELL" and bar.high >= order.price
            ):
                # The order filled while bar ``index`` traded, so it is stamped with that bar's last
                # millisecond rather than with the clock, which has not moved past the bar yet.
                self._fill(order, order.price, is_maker=True, at=bar.open_ms + BAR_MS - 1)

    def iter_assets(self) -> Iterable[tuple[str, Holding]]:
        return sorted(self.holdings.items())
