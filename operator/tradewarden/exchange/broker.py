"""The ``Broker`` protocol: what the runner may ask of a venue, live (``ExchangeClient``) or simulated
(``PaperBroker``), plus the small value types both return.

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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from tradewarden.api.market import OrderRequest, OrderResult, Position
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


def split_symbol(symbol: str) -> tuple[str, str]:
    """``("BTC", "USDT")`` for ``"BTC/USDT"`` (and for ``"BTC/USDT:USDT"``); a ``BadSymbol`` otherwise."""
    base, sep, rest = symbol.partition("/")
    quote = rest.split(":", 1)[0]
    if not sep or not base or not quote:
        raise BadSymbol(f"symbol must look like BASE/QUOTE, such as BTC/USDT (got {symbol!r})")
    return base, quote
