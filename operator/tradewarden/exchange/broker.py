"""The ``Broker`` protocol: what the runner may ask of a venue, live (``ExchangeClient``) or simulated
(``PaperBroker``), plus the small value types both return and the accounting both books share: what a
fill does to cash (``fill_cash_flow``), a fee in the quote currency (``fee_in_quote``), and equity marked
at last prices (``mark_to_market``). The paper broker keeps its account with them, and the runner
derives its live book's equity from its journaled live fills with the very same functions.

The runner holds a ``Broker`` and never knows which one it has; the replay gate and tests use
``PaperBroker`` directly. Orders, results and positions are the shared types of
``tradewarden.api.market``.

Contract every broker keeps:

- ``create_order`` is idempotent by ``OrderRequest.client_order_id``: asking twice never trades twice;
  the second call returns the order the first one created.
- ``reduce_only`` on a spot market can only sell what is held: a sell is clamped to the held base
  amount; with nothing to sell (or a reduce-only buy, since spot has no shorts) nothing is sent and the
  result has ``status=REJECTED`` and ``amount=0``.
- Errors are ``tradewarden.exchange.errors`` classes: ``RetryLater`` or ``NeedsHuman``.
- After ``set_deadline(t)`` no call outlasts ``t``: one that cannot finish in time raises ``RetryLater``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from tradewarden.api.market import Fill, OrderRequest, OrderResult, OrderSide, Position
from tradewarden.exchange.errors import BadSymbol


@dataclass(frozen=True, slots=True)
class Balance:
    """One asset's balance: ``free`` can be spent, ``used`` is held by open orders, ``total`` is both."""

    free: float
    used: float
    total: float


@dataclass(frozen=True, slots=True)
class MarketRules:
    """A market's trading rules, as the venue publishes them (``None`` where it does not say).

    ``amount_step`` and ``price_tick`` are increments (0.00001, 0.01), whatever precision mode the
    venue uses natively.
    """

    symbol: str
    base: str
    quote: str
    amount_step: float | None = None
    price_tick: float | None = None
    min_amount: float | None = None
    min_cost: float | None = None


@runtime_checkable
class Broker(Protocol):
    def create_order(self, request: OrderRequest) -> OrderResult:
        """Place an order, or return the existing one with the same client order id."""
        ...

    def fetch_order_by_client_id(self, symbol: str, client_order_id: str) -> OrderResult | None:
        """The order with this client order id, or ``None`` if the venue has none (used on resume)."""
        ...

    def cancel_order(self, symbol: str, order_id: str) -> OrderResult:
        """Cancel an open order by the venue's order id; ``OrderNotFound`` if it is not open."""
        ...

    def fetch_open_orders(self, symbol: str | None = None) -> list[OrderResult]:
        """Open orders of one symbol, or of all symbols."""
        ...

    def fetch_balance(self) -> dict[str, Balance]:
        """Balances by asset code, without assets whose total is zero."""
        ...

    def fetch_positions(self, symbols: Sequence[str]) -> dict[str, Position]:
        """The long position in each of ``symbols`` (flat ones included), derived from base balances."""
        ...

    def set_deadline(self, deadline: float | None) -> None:
        """From now on every call, its retries included, ends by ``deadline`` (a ``time.monotonic()``
        value; ``None`` lifts it). A runner asked to stop uses it to exit within its grace period."""
        ...


def split_symbol(symbol: str) -> tuple[str, str]:
    """``("BTC", "USDT")`` for ``"BTC/USDT"`` (and for ``"BTC/USDT:USDT"``); a ``BadSymbol`` otherwise."""
    base, sep, rest = symbol.partition("/")
    quote = rest.split(":", 1)[0]
    if not sep or not base or not quote:
        raise BadSymbol(f"symbol must look like BASE/QUOTE, such as BTC/USDT (got {symbol!r})")
    return base, quote


# ---- the accounting both books share ----------------------------------------------------------------


def fill_cash_flow(side: OrderSide, price: float, amount: float, fee: float) -> float:
    """Quote currency a fill moves, fees included: what a sell brings in, minus what a buy costs.

    ``fee`` is in the quote currency (see ``fee_in_quote``).
    """
    notional = amount * price
    return notional - fee if side is OrderSide.SELL else -(notional + fee)


def fee_in_quote(fill: Fill, symbol: str) -> float | None:
    """``fill``'s fee in the quote currency of ``symbol``.

    A fee charged in the quote currency (or with no currency named) is taken as it is; a fee charged in
    the base currency (Binance's default on a buy) is converted at the fill's own price. A fee in a third
    asset (a venue token such as BNB) cannot be priced from the fill: ``None``, for the caller to report.
    """
    base, quote = split_symbol(symbol)
    currency = fill.fee_currency
    if not fill.fee or currency in ("", quote):
        return fill.fee
    if currency == base:
        return fill.fee * fill.price
    return None


def mark_to_market(cash: float, holdings: Mapping[str, float], prices: Mapping[str, float]) -> float:
    """Equity in the quote currency: ``cash`` plus each symbol's base holding at its price in ``prices``.

    A holding with no price counts nothing (the caller passes a fallback price where it has one).
    """
    return cash + sum(qty * prices[symbol] for symbol, qty in holdings.items() if qty and symbol in prices)
