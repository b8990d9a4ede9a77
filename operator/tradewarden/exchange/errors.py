"""The exchange door's own error hierarchy, and the one place ccxt's exceptions are translated into it.

``exchange.client`` raises these from every call into ccxt, ``exchange.paper`` raises the same classes
from simulated orders, ``exchange.retry`` decides from the class alone whether to try again, and the
runner decides from the class alone whether to wait or to stop and call a human. Nothing outside
``tradewarden.exchange`` ever sees a ccxt exception.

Two branches, by consequence:

- ``RetryLater``: the venue could not answer now (network, timeout, maintenance, rate limit). The same
  request may well succeed later; it is retried with backoff, honouring ``retry_after`` when the venue
  gave one.
- ``NeedsHuman``: the request itself, the account or the keys are wrong (authentication, permissions,
  suspended account, insufficient funds, unknown symbol, invalid order). Sending it again cannot help
  and may hurt, so it is never retried: the runner stops trading that intent and reports.

Messages never contain API keys, secrets, passwords or request signatures: ``scrub`` removes them
before an error is built, and translated errors do not chain the original ccxt exception.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Iterable

import ccxt

MAX_MESSAGE_CHARS = 600
REDACTED = "***"
_SIGNATURE_PARAM = re.compile(r"(signature|sign|apiKey|api_key|secret|password|passphrase)=[^&\s\"']+", re.I)


class ExchangeError(Exception):
    """Something went wrong talking to a venue (or the paper broker). Base of the two branches below.

    ``venue_error`` names the venue-side class (ccxt's) the error was translated from, for logs.
    """

    def __init__(self, message: str, *, venue_error: str | None = None) -> None:
        super().__init__(message)
        self.venue_error = venue_error


class RetryLater(ExchangeError):
    """The venue cannot answer now. Consequence: retried with backoff; the request may succeed later.

    ``retry_after`` is how many seconds the venue asked us to wait (a rate limit's ``Retry-After``),
    or ``None`` when it did not say.
    """

    def __init__(
        self, message: str, *, retry_after: float | None = None, venue_error: str | None = None
    ) -> None:
        super().__init__(message, venue_error=venue_error)
        self.retry_after = retry_after


class RateLimited(RetryLater):
    """The venue throttled us (HTTP 429/418, a rate-limit code). Consequence: wait ``retry_after`` or more."""


class VenueUnavailable(RetryLater):
    """Network error, timeout, maintenance or an unusable answer. Consequence: retried with backoff.

    For an order this means *unknown outcome*: the order may or may not exist, so the client looks it up
    by client order id before sending it again.
    """


class NeedsHuman(ExchangeError):
    """The request, the account or the keys are wrong. Consequence: never retried; the runner reports it."""


class AuthenticationFailed(NeedsHuman):
    """The venue rejected the API key or the request signature. Consequence: fix the credentials Secret."""


class PermissionDenied(AuthenticationFailed):
    """The key is valid but lacks a permission (trading, this symbol, this IP). Consequence: fix the key."""


class AccountSuspended(AuthenticationFailed):
    """The venue has disabled the account. Consequence: a human must talk to the venue."""


class InsufficientFunds(NeedsHuman):
    """The order costs more than the free balance. Consequence: not retried; size down or fund the account."""


class BadSymbol(NeedsHuman):
    """The venue does not know the symbol. Consequence: fix the instrument in the StrategyConfig."""


class InvalidOrder(NeedsHuman):
    """The venue refused the order's parameters (size, price, type). Consequence: not retried."""


class DuplicateOrder(InvalidOrder):
    """An order with this client order id already exists. Consequence: look it up instead of re-sending."""


class OrderNotFound(InvalidOrder):
    """The venue knows no such order. Consequence: not retried; a cancel may treat it as already closed."""


# Most specific first: ccxt's tree puts RateLimitExceeded and DDoSProtection under NetworkError,
# PermissionDenied and AccountSuspended under AuthenticationError, OrderNotFound and DuplicateOrderId
# under InvalidOrder, and BadSymbol under BadRequest, so a parent listed earlier would swallow its
# children. A unit test checks that no entry is shadowed by an earlier one.
CCXT_ERROR_TABLE: tuple[tuple[type[BaseException], type[ExchangeError]], ...] = (
    (ccxt.RateLimitExceeded, RateLimited),
    (ccxt.DDoSProtection, RateLimited),
    (ccxt.RequestTimeout, VenueUnavailable),
    (ccxt.OnMaintenance, VenueUnavailable),
    (ccxt.ExchangeNotAvailable, VenueUnavailable),
    (ccxt.InvalidNonce, VenueUnavailable),
    (ccxt.NetworkError, VenueUnavailable),
    (ccxt.OperationFailed, VenueUnavailable),
    (ccxt.AccountSuspended, AccountSuspended),
    (ccxt.PermissionDenied, PermissionDenied),
    (ccxt.AuthenticationError, AuthenticationFailed),
    (ccxt.InsufficientFunds, InsufficientFunds),
    (ccxt.BadSymbol, BadSymbol),
    (ccxt.OrderNotFound, OrderNotFound),
    (ccxt.DuplicateOrderId, DuplicateOrder),
    (ccxt.InvalidOrder, InvalidOrder),
    (ccxt.ExchangeError, NeedsHuman),
    (ccxt.BaseError, NeedsHuman),
)


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` without any of ``secrets`` and without signature/key query parameters, cut to a sane size."""
    cleaned = _SIGNATURE_PARAM.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    # Longest first, so a secret containing another secret is not left half-visible.
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        cleaned = cleaned.replace(secret, REDACTED)
    if len(cleaned) > MAX_MESSAGE_CHARS:
        cleaned = cleaned[:MAX_MESSAGE_CHARS] + "..."
    return cleaned


def classify(exc: BaseException) -> type[ExchangeError] | None:
    """Our class for a ccxt exception, or ``None`` when it is not a ccxt exception."""
    for ccxt_class, ours in CCXT_ERROR_TABLE:
        if isinstance(exc, ccxt_class):
            return ours
    return None


def translate(
    exc: BaseException,
    *,
    context: str = "",
    secrets: Iterable[str | None] = (),
    retry_after: float | None = None,
    duplicate_markers: Iterable[str] = (),
) -> ExchangeError:
    """Our error for a ccxt exception; anything that is not from ccxt becomes a plain ``NeedsHuman``.

    ``duplicate_markers`` are venue texts meaning "this client order id exists already", for venues whose
    duplicate answer ccxt reports as a generic InvalidOrder (Binance: "Duplicate order sent.").
    """
    ours = classify(exc) or NeedsHuman
    raw = str(exc)
    if issubclass(ours, InvalidOrder) and any(marker in raw for marker in duplicate_markers):
        ours = DuplicateOrder
    venue_error = type(exc).__name__
    prefix = f"{context}: " if context else ""
    message = scrub(f"{prefix}{venue_error}: {raw}", secrets)
    if issubclass(ours, RetryLater):
        return ours(message, retry_after=retry_after, venue_error=venue_error)
    return ours(message, venue_error=venue_error)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date; ``None`` if absent."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)
