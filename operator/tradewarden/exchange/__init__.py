"""The exchange door: the only package of tradewarden that imports ccxt.

The runner trades through a ``Broker``: ``ExchangeClient`` (a real venue through ccxt, or the local
emulator through ``api_url``) or ``PaperBroker`` (simulated fills from the same market data). Errors
are ``RetryLater`` (wait and try again; ``retrying`` does it with backoff) or ``NeedsHuman`` (never
retried). Venue differences live in ``venues`` as data.
"""

from __future__ import annotations

from tradewarden.exchange.broker import Balance, Broker, MarketRules
from tradewarden.exchange.client import ExchangeClient
from tradewarden.exchange.errors import (
    AccountSuspended,
    AuthenticationFailed,
    BadSymbol,
    DuplicateOrder,
    ExchangeError,
    InsufficientFunds,
    InvalidOrder,
    NeedsHuman,
    OrderNotFound,
    PermissionDenied,
    RateLimited,
    RetryLater,
    VenueUnavailable,
)
from tradewarden.exchange.paper import PaperBroker
from tradewarden.exchange.retry import RetryPolicy, call_with_retry, retrying
from tradewarden.exchange.venues import VenueQuirks, quirks_for

__all__ = [
    "AccountSuspended",
    "AuthenticationFailed",
    "BadSymbol",
    "Balance",
    "Broker",
    "DuplicateOrder",
    "ExchangeClient",
    "ExchangeError",
    "InsufficientFunds",
    "InvalidOrder",
    "MarketRules",
    "NeedsHuman",
    "OrderNotFound",
    "PaperBroker",
    "PermissionDenied",
    "RateLimited",
    "RetryLater",
    "RetryPolicy",
    "VenueQuirks",
    "VenueUnavailable",
    "call_with_retry",
    "quirks_for",
    "retrying",
]
