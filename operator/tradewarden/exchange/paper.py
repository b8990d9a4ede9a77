"""``PaperBroker``: simulated fills for paper trading and replay, with the same methods as the live door.

The runner uses it in ``paper`` mode, feeding it the very candles (or prices) its strategy sees through
``update_price``; the replay gate uses it to re-run a window. It is pure Python and deterministic: the
same requests and prices always give the same fills, ids and balances.

Fill model (documented numbers, so tests and replays can predict them):

- A market order fills completely at the last price moved ``slippage_bps`` against the taker (up for a
  buy, down for a sell).
- A limit order that is marketable against the last price fills at once at the better of its limit and
  the slipped last price. Otherwise it rests with its funds locked, and fills completely at its limit
  when a later candle trades through it, or at that candle's open if the candle opened beyond the limit
  (a gap). A plain price update fills it at its limit.
- The fee is ``fee_bps`` of the notional, in the quote currency, for every fill.
- ``client_order_id`` is the idempotency key: the same id twice returns the first order, never a second
  fill. An order the broker refuses (``InsufficientFunds``, ``InvalidOrder``) is not recorded.
- Reduce-only: see ``exchange.broker``; sells are clamped to the free base balance.
- With ``MarketRules`` for a symbol, amounts are floored to the step, prices rounded to the tick, and
  the minimum amount applies; without them, amounts and prices are used as given.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tradewarden.api.market import (
    FLAT,
    Candle,
    Fill,
    OrderRequest,
    OrderResult,
    OrderSide,
    OrderStatus,
    OrderType,
    Position,
)
from tradewarden.exchange.broker import (
    Balance,
    MarketRules,
    fill_cash_flow,
    mark_to_market,
    split_symbol,
)
from tradewarden.exchange.errors import InsufficientFunds, InvalidOrder, OrderNotFound

_EPS = 1e-9


def _clean(value: float) -> float:
    # Float sums drift by a few ulps; a balance of -1e-17 must read as zero, not as a debt.
    return 0.0 if abs(value) < 1e-12 else value


@dataclass(slots=True)
class _PaperOrder:
    request: OrderRequest
    id: str
    amount: float
    price: float | None
    ts: int
    status: OrderStatus = OrderStatus.OPEN
    filled: float = 0.0
    average: float | None = None
    locked_asset: str = ""
    locked: float = 0.0
    fills: list[Fill] = field(default_factory=list)

    def result(self) -> OrderResult:
        return OrderResult(
            id=self.id,
            client_order_id=self.request.client_order_id,
            symbol=self.request.symbol,
            side=self.request.side,
            type=self.request.type,
            status=self.status,
            amount=self.amount,
            filled=self.filled,
            average=self.average,
            price=self.price if self.request.type is OrderType.LIMIT else None,
            ts=self.ts,
            fills=tuple(self.fills),
        )


class PaperBroker:
    """A simulated spot account. Implements the ``Broker`` protocol."""

    def __init__(
        self,
        *,
        starting_quote: float = 10_000.0,
        quote_currency: str = "USDT",
        balances: Mapping[str, float] | None = None,
        fee_bps: float = 10.0,
        slippage_bps: float = 5.0,
        markets: Mapping[str, MarketRules] | None = None,
    ) -> None:
        if fee_bps < 0 or slippage_bps < 0:
            raise ValueError(f"fee_bps and slippage_bps must be >= 0 (got {fee_bps}, {slippage_bps})")
        self.fee_rate = fee_bps / 10_000
        self.slippage = slippage_bps / 10_000
        self._markets = dict(markets or {})
        self._free: dict[str, float] = {quote_currency: float(starting_quote)}
        if balances is not None:
            self._free = {asset: float(amount) for asset, amount in balances.items()}
        self._used: dict[str, float] = {}
        self._orders: dict[str, _PaperOrder] = {}
        self._by_client_id: dict[str, _PaperOrder] = {}
        self._prices: dict[str, float] = {}
        self._times: dict[str, int] = {}
        self._entries: dict[str, float] = {}
        self._sequence = 0
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"PaperBroker(fee_bps={self.fee_rate * 10_000:g}, slippage_bps={self.slippage * 10_000:g})"

    # ---- market data -------------------------------------------------------------------------------

    def update_price(self, symbol: str, candle_or_price: Candle | float, ts: int) -> list[OrderResult]:
        """Record the latest candle or price of ``symbol``; returns the resting orders it filled."""
        split_symbol(symbol)
        with self._lock:
            gap_open: float | None
            if isinstance(candle_or_price, Candle):
                last, low, high, gap_open = (
                    candle_or_price.close,
                    candle_or_price.low,
                    candle_or_price.high,
                    candle_or_price.open,
                )
            else:
                last = low = high = float(candle_or_price)
                gap_open = None
            if not last > 0:
                raise InvalidOrder(f"update_price {symbol}: price must be > 0 (got {last})")
            self._prices[symbol] = last
            self._times[symbol] = ts
            filled: list[OrderResult] = []
            # Dicts keep insertion order: resting orders fill oldest first, as on a venue.
            for order in list(self._orders.values()):
                if order.status is not OrderStatus.OPEN or order.request.symbol != symbol:
                    continue
                limit = order.price
                assert limit is not None
                if order.request.side is OrderSide.BUY and low <= limit:
                    self._fill(order, limit if gap_open is None else min(limit, gap_open))
                    filled.append(order.result())
                elif order.request.side is OrderSide.SELL and high >= limit:
                    self._fill(order, limit if gap_open is None else max(limit, gap_open))
                    filled.append(order.result())
            return filled

    def last_price(self, symbol: str) -> float | None:
        return self._prices.get(symbol)

    # ---- rounding ----------------------------------------------------------------------------------

    def _floor_amount(self, symbol: str, amount: float) -> float:
        rules = self._markets.get(symbol)
        if rules is None or not rules.amount_step:
            return amount
        step = rules.amount_step
        return round(math.floor(amount / step + _EPS) * step, 12)

    def _round_price(self, symbol: str, price: float, direction: int = 0) -> float:
        """``price`` on the tick grid: nearest (0), up (1) or down (-1)."""
        rules = self._markets.get(symbol)
        if rules is None or not rules.price_tick:
            return price
        tick = rules.price_tick
        ticks = price / tick
        whole = (
            math.ceil(ticks - _EPS)
            if direction > 0
            else math.floor(ticks + _EPS)
            if direction < 0
            else round(ticks)
        )
        return round(max(whole, 1) * tick, 12)

    # ---- orders ------------------------------------------------------------------------------------

    def _next_id(self) -> str:
        self._sequence += 1
        return f"paper-{self._sequence}"

    def _record(self, order: _PaperOrder) -> OrderResult:
        self._orders[order.id] = order
        self._by_client_id[order.request.client_order_id] = order
        return order.result()

    def create_order(self, request: OrderRequest) -> OrderResult:
        with self._lock:
            existing = self._by_client_id.get(request.client_order_id)
            if existing is not None:
                return existing.result()
            symbol = request.symbol
            base, quote = split_symbol(symbol)
            context = f"paper create_order {symbol} {request.client_order_id}"
            if not request.amount > 0:
                raise InvalidOrder(f"{context}: amount must be > 0 (got {request.amount})")
            last = self._prices.get(symbol)
            if last is None:
                raise InvalidOrder(f"{context}: no price seen for {symbol} yet; call update_price first")
            ts = self._times.get(symbol, 0)
            amount = request.amount
            if request.reduce_only:
                if request.side is OrderSide.BUY:
                    return self._rejected(request, ts)
                amount = min(amount, self._free.get(base, 0.0))
            amount = self._floor_amount(symbol, amount)
            rules = self._markets.get(symbol)
            min_amount = (rules.min_amount if rules else None) or 0.0
            if amount <= 0 or amount + _EPS < min_amount:
                if request.reduce_only:
                    return self._rejected(request, ts)
                raise InvalidOrder(
                    f"{context}: amount {request.amount:g} is below the minimum {min_amount:g}"
                )

            if request.type is OrderType.MARKET:
                fill_price = self._taker_price(symbol, request.side, last)
                self._check_funds(context, request.side, base, quote, amount, fill_price)
                order = _PaperOrder(request=request, id=self._next_id(), amount=amount, price=None, ts=ts)
                self._fill(order, fill_price)
                return self._record(order)

            if request.price is None or not request.price > 0:
                raise InvalidOrder(f"{context}: a limit order needs a price > 0 (got {request.price})")
            limit = self._round_price(symbol, request.price)
            marketable = limit >= last if request.side is OrderSide.BUY else limit <= last
            if marketable:
                slipped = self._taker_price(symbol, request.side, last)
                fill_price = min(limit, slipped) if request.side is OrderSide.BUY else max(limit, slipped)
                self._check_funds(context, request.side, base, quote, amount, fill_price)
                order = _PaperOrder(request=request, id=self._next_id(), amount=amount, price=limit, ts=ts)
                self._fill(order, fill_price)
                return self._record(order)

            self._check_funds(context, request.side, base, quote, amount, limit)
            order = _PaperOrder(request=request, id=self._next_id(), amount=amount, price=limit, ts=ts)
            if request.side is OrderSide.BUY:
                order.locked_asset, order.locked = quote, amount * limit * (1 + self.fee_rate)
            else:
                order.locked_asset, order.locked = base, amount
            self._free[order.locked_asset] = _clean(self._free.get(order.locked_asset, 0.0) - order.locked)
            self._used[order.locked_asset] = self._used.get(order.locked_asset, 0.0) + order.locked
            return self._record(order)

    def _rejected(self, request: OrderRequest, ts: int) -> OrderResult:
        order = _PaperOrder(
            request=request,
            id=self._next_id(),
            amount=0.0,
            price=request.price,
            ts=ts,
            status=OrderStatus.REJECTED,
        )
        return self._record(order)

    def _taker_price(self, symbol: str, side: OrderSide, last: float) -> float:
        if side is OrderSide.BUY:
            return self._round_price(symbol, last * (1 + self.slippage), direction=1)
        return self._round_price(symbol, last * (1 - self.slippage), direction=-1)

    def _check_funds(
        self, context: str, side: OrderSide, base: str, quote: str, amount: float, price: float
    ) -> None:
        if side is OrderSide.BUY:
            needed = amount * price * (1 + self.fee_rate)
            have = self._free.get(quote, 0.0)
            if have + _EPS < needed:
                raise InsufficientFunds(f"{context}: needs {needed:.8f} {quote} with fees, {have:.8f} free")
        else:
            have = self._free.get(base, 0.0)
            if have + _EPS < amount:
                raise InsufficientFunds(f"{context}: sells {amount:g} {base}, {have:g} free")

    def _fill(self, order: _PaperOrder, price: float) -> None:
        request = order.request
        base, quote = split_symbol(request.symbol)
        if order.locked:
            self._used[order.locked_asset] = _clean(self._used.get(order.locked_asset, 0.0) - order.locked)
            self._free[order.locked_asset] = self._free.get(order.locked_asset, 0.0) + order.locked
            order.locked = 0.0
        amount = order.amount
        notional = amount * price
        fee = notional * self.fee_rate
        held_before = self._free.get(base, 0.0) + self._used.get(base, 0.0)
        flow = fill_cash_flow(request.side, price, amount, fee)
        self._free[quote] = _clean(self._free.get(quote, 0.0) + flow)
        if request.side is OrderSide.BUY:
            self._free[base] = _clean(self._free.get(base, 0.0) + amount)
            entry = self._entries.get(request.symbol, 0.0)
            self._entries[request.symbol] = (entry * held_before + price * amount) / (held_before + amount)
        else:
            self._free[base] = _clean(self._free.get(base, 0.0) - amount)
            if self._free[base] + self._used.get(base, 0.0) <= _EPS:
                self._entries.pop(request.symbol, None)
        order.fills.append(Fill(price=price, amount=amount, fee=fee, fee_currency=quote))
        order.filled = amount
        order.average = price
        order.status = OrderStatus.CLOSED
        order.ts = self._times.get(request.symbol, order.ts)

    def fetch_order_by_client_id(self, symbol: str, client_order_id: str) -> OrderResult | None:
        with self._lock:
            order = self._by_client_id.get(client_order_id)
            return None if order is None or order.request.symbol != symbol else order.result()

    def cancel_order(self, symbol: str, order_id: str) -> OrderResult:
        with self._lock:
            order = self._orders.get(order_id)
            if order is None or order.request.symbol != symbol or order.status is not OrderStatus.OPEN:
                raise OrderNotFound(f"paper cancel_order {symbol} {order_id}: no such open order")
            if order.locked:
                self._used[order.locked_asset] = _clean(
                    self._used.get(order.locked_asset, 0.0) - order.locked
                )
                self._free[order.locked_asset] = self._free.get(order.locked_asset, 0.0) + order.locked
                order.locked = 0.0
            order.status = OrderStatus.CANCELED
            return order.result()

    def fetch_open_orders(self, symbol: str | None = None) -> list[OrderResult]:
        with self._lock:
            return [
                o.result()
                for o in self._orders.values()
                if o.status is OrderStatus.OPEN and (symbol is None or o.request.symbol == symbol)
            ]

    # ---- account -----------------------------------------------------------------------------------

    def fetch_balance(self) -> dict[str, Balance]:
        with self._lock:
            assets = sorted(set(self._free) | set(self._used))
            result = {}
            for asset in assets:
                free = self._free.get(asset, 0.0)
                used = self._used.get(asset, 0.0)
                if free or used:
                    result[asset] = Balance(free=free, used=used, total=free + used)
            return result

    def fetch_positions(self, symbols: Sequence[str]) -> dict[str, Position]:
        with self._lock:
            positions: dict[str, Position] = {}
            for symbol in symbols:
                base, _ = split_symbol(symbol)
                qty = self._free.get(base, 0.0) + self._used.get(base, 0.0)
                rules = self._markets.get(symbol)
                min_amount = (rules.min_amount if rules else None) or 0.0
                if qty <= _EPS or qty + _EPS < min_amount:
                    positions[symbol] = FLAT
                else:
                    positions[symbol] = Position(qty=qty, entry_price=self._entries.get(symbol, 0.0))
            return positions

    def set_deadline(self, deadline: float | None) -> None:
        """Nothing to bound: the paper account is in memory and every call returns at once."""

    def equity(self, quote_currency: str = "USDT") -> float:
        """Quote balance plus every other asset valued at its last ``<ASSET>/<quote>`` price (if seen)."""
        with self._lock:
            balances = self.fetch_balance()
            cash = balances[quote_currency].total if quote_currency in balances else 0.0
            holdings = {
                f"{asset}/{quote_currency}": balance.total
                for asset, balance in balances.items()
                if asset != quote_currency
            }
            return mark_to_market(cash, holdings, self._prices)
