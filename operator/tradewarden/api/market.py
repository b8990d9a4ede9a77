"""Market data and trading decision types shared by strategies, the exchange door, the runner and replay.

These are plain frozen dataclasses, not pydantic models: they sit on the hot path of the tick loop and
of replay, where construction cost matters, and they never cross the Kubernetes API.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

#: Share of the free cash one entry may spend; fees and rounding need the rest. The runner clamps entries
#: to it and replay simulates the same clamp, so the two agree on which entries fill.
ENTRY_CASH_HEADROOM = 0.999


@dataclass(frozen=True, slots=True)
class Candle:
    """One OHLCV bar. ``ts`` is the bar's open time in milliseconds since the epoch (UTC)."""

    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class Action(enum.StrEnum):
    """What a strategy wants for one symbol after seeing a bar.

    Spot venues are long-only, so the built-in strategies enter and exit long positions.
    """

    HOLD = "hold"
    ENTER_LONG = "enter_long"
    EXIT_LONG = "exit_long"


@dataclass(frozen=True, slots=True)
class Position:
    """The runner's view of one symbol's position, handed to the strategy on every bar."""

    qty: float = 0.0
    entry_price: float = 0.0

    @property
    def is_open(self) -> bool:
        return self.qty > 0.0


FLAT = Position()


@dataclass(frozen=True, slots=True)
class Decision:
    """A strategy's answer for one bar.

    ``stop_price`` is where the strategy would give up on an entry; the runner sizes entries so that
    hitting it loses at most ``risk.maxRiskPerTradePct`` of equity. ``reason`` is a short, human text
    recorded in the journal (for example ``"ema 12 crossed above ema 26"``).
    """

    action: Action
    reason: str = ""
    stop_price: float | None = None


HOLD = Decision(Action.HOLD)


class OrderSide(enum.StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(enum.StrEnum):
    MARKET = "market"
    LIMIT = "limit"


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """An order the runner asks the exchange door (or the paper broker) to place.

    ``client_order_id`` is derived deterministically from the intent, so that a runner restarted in the
    middle of placing an order can ask the venue whether it already exists instead of sending it twice.
    """

    symbol: str
    side: OrderSide
    type: OrderType
    amount: float
    client_order_id: str
    price: float | None = None
    reduce_only: bool = False


class OrderStatus(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    CANCELED = "canceled"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Fill:
    """The executed part of an order."""

    price: float
    amount: float
    fee: float = 0.0
    fee_currency: str = ""


@dataclass(frozen=True, slots=True)
class OrderResult:
    """What the venue says about an order after placing or fetching it."""

    id: str
    client_order_id: str
    symbol: str
    side: OrderSide
    type: OrderType
    status: OrderStatus
    amount: float
    filled: float
    average: float | None
    price: float | None = None
    ts: int = 0
    fills: tuple[Fill, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Ticker:
    symbol: str
    bid: float
    ask: float
    last: float
    ts: int
