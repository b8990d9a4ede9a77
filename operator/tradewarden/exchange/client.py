"""``ExchangeClient``: the live door to a venue, a thin wrapper around one ccxt exchange instance.

The runner builds one per bot in paper-with-live-data and live modes (from the bot's ``spec.exchange``
and its credentials Secret) and talks to it as a ``Broker``; integration tests point it at the local
emulator with ``api_url``. It is the only module in the project that calls ccxt's REST methods.

What it adds to ccxt:

- results in the shared types of ``tradewarden.api.market`` (``Candle``, ``Ticker``, ``OrderResult``);
- every ccxt call goes through ``exchange.retry`` and ``exchange.errors``: callers see ``RetryLater`` or
  ``NeedsHuman``, never a ccxt exception, and never a key, secret or signature in a message;
- safe order retries: an order whose outcome is unknown (timeout, dropped connection) is looked up by
  its client order id before it is sent again, and a "duplicate client order id" answer returns the
  existing order, so one intent is never executed twice;
- spot reduce-only: spot venues have no reduce-only flag, so a reduce-only sell is clamped to the free
  base balance, and one with nothing to sell is not sent (``status=REJECTED``, ``amount=0``);
- amounts and prices rounded with ccxt's ``amount_to_precision``/``price_to_precision``;
- ``fetch_ohlcv`` returns closed bars only, judged against the venue's clock (``fetch_time``);
- a deadline (``set_deadline``): each attempt's timeout is cut to the time left and no retry starts that
  would end after it, so a runner asked to stop is never held up by a slow venue.

``api_url`` replaces the scheme and host of *every* URL in ccxt's ``urls['api']`` (keeping the paths),
so a client aimed at the emulator cannot reach the real venue through an endpoint nobody thought of.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import ccxt
from ccxt.base.decimal_to_precision import DECIMAL_PLACES, TICK_SIZE

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
    Ticker,
)
from tradewarden.exchange.broker import Balance, MarketRules
from tradewarden.exchange.errors import (
    BadSymbol,
    DuplicateOrder,
    ExchangeError,
    InvalidOrder,
    NeedsHuman,
    OrderNotFound,
    RetryLater,
    VenueUnavailable,
    parse_retry_after,
    translate,
)
from tradewarden.exchange.retry import DEFAULT_POLICY, RetryPolicy, call_with_retry
from tradewarden.exchange.venues import quirks_for

log = logging.getLogger(__name__)

# ccxt logs every request with its headers at DEBUG level, and those headers carry the API key.
# Secrets never reach a log line (design invariant 5), so ccxt's own logger stays above DEBUG.
logging.getLogger("ccxt").setLevel(logging.INFO)

T = TypeVar("T")

#: With a deadline set, an attempt is sent only while at least this many seconds are left.
MIN_ATTEMPT_SECONDS = 0.2

_STATUS: Mapping[str, OrderStatus] = {
    "open": OrderStatus.OPEN,
    "canceling": OrderStatus.OPEN,
    "closed": OrderStatus.CLOSED,
    "canceled": OrderStatus.CANCELED,
    "cancelled": OrderStatus.CANCELED,
    "expired": OrderStatus.CANCELED,
    "rejected": OrderStatus.REJECTED,
}


def rebase_urls(urls: Any, base_url: str) -> Any:
    """``urls`` with the scheme and host of every absolute URL replaced by ``base_url`` (paths kept)."""
    if isinstance(urls, str):
        parts = urlsplit(urls)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.netloc:
            rebased = base_url.rstrip("/") + parts.path
            return f"{rebased}?{parts.query}" if parts.query else rebased
        return urls
    if isinstance(urls, dict):
        return {key: rebase_urls(value, base_url) for key, value in urls.items()}
    return urls


def _deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = dict(value) if isinstance(value, Mapping) else value
    return merged


def _float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    return float(value)


class ExchangeClient:
    """One venue account through ccxt. Implements the ``Broker`` protocol."""

    def __init__(
        self,
        exchange_id: str,
        sandbox: bool = False,
        api_key: str | None = None,
        secret: str | None = None,
        password: str | None = None,
        api_url: str | None = None,
        *,
        timeout_ms: int = 10_000,
        rate_limit_ms: float | None = None,
        retry_policy: RetryPolicy = DEFAULT_POLICY,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.exchange_id = exchange_id
        self.sandbox = sandbox
        self.api_url = api_url
        self._secrets: tuple[str, ...] = tuple(s for s in (api_key, secret, password) if s)
        self._quirks = quirks_for(exchange_id)
        self._policy = retry_policy
        self._sleep = sleep
        self._clock = clock
        self._timeout_ms = timeout_ms
        self._deadline: float | None = None
        exchange_class = getattr(ccxt, exchange_id, None) if exchange_id in ccxt.exchanges else None
        if exchange_class is None:
            raise NeedsHuman(
                f"spec.exchange.id: unknown ccxt exchange id {exchange_id!r} (see ccxt.exchanges)"
            )
        config: dict[str, Any] = {
            "enableRateLimit": True,
            "timeout": timeout_ms,
            "options": _deep_merge(self._quirks.options, options or {}),
        }
        if api_key:
            config["apiKey"] = api_key
        if secret:
            config["secret"] = secret
        if password:
            config["password"] = password
        try:
            exchange = exchange_class(config)
            if sandbox:
                exchange.set_sandbox_mode(True)
        except ccxt.BaseError as exc:
            raise self._translate(exc, f"{exchange_id}: configure") from None
        if rate_limit_ms is not None:
            exchange.rateLimit = rate_limit_ms
        if api_url:
            parts = urlsplit(api_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise NeedsHuman(
                    f"api_url must be an http(s) base URL such as http://127.0.0.1:8080 (got {api_url!r})"
                )
            exchange.urls["api"] = rebase_urls(exchange.urls["api"], api_url)
            # An overridden URL is an emulator or a gateway we chose: never let an HTTP proxy from the
            # environment sit in between.
            exchange.session.trust_env = False
        self._ex = exchange

    def __repr__(self) -> str:
        credentials = "set" if self._secrets else "none"
        return (
            f"ExchangeClient(exchange_id={self.exchange_id!r}, sandbox={self.sandbox}, "
            f"api_url={self.api_url!r}, credentials={credentials})"
        )

    def close(self) -> None:
        session = getattr(self._ex, "session", None)
        if session is not None:
            session.close()

    def __enter__(self) -> ExchangeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- plumbing ----------------------------------------------------------------------------------

    def _translate(self, exc: BaseException, context: str) -> ExchangeError:
        retry_after = None
        if isinstance(exc, ccxt.DDoSProtection | ccxt.RateLimitExceeded):
            headers = getattr(self, "_ex", None) and self._ex.last_response_headers
            if headers:
                retry_after = parse_retry_after(headers.get("Retry-After"))
        return translate(
            exc,
            context=context,
            secrets=self._secrets,
            retry_after=retry_after,
            duplicate_markers=self._quirks.duplicate_order_markers,
        )

    def set_deadline(self, deadline: float | None) -> None:
        """Every call from now on, its retries included, ends by ``deadline`` (a value of the client's
        clock, ``time.monotonic`` by default; ``None`` lifts it).

        An attempt's timeout is cut to the time left; an attempt with less than ``MIN_ATTEMPT_SECONDS``
        left is not sent, and a retry that would start after the deadline is not made: the caller gets
        ``RetryLater`` with a note saying so. A call already waiting for an answer keeps the timeout it
        was sent with. A runner asked to stop sets it (from its signal handler too), so a slow venue
        cannot keep it past its grace period.
        """
        self._deadline = deadline

    def _call(self, context: str, fn: Callable[[], T]) -> T:
        """Run one ccxt interaction with error translation, the retry policy and the deadline."""

        def attempt() -> T:
            deadline = self._deadline
            timeout_ms = self._timeout_ms
            if deadline is not None:
                left = deadline - self._clock()
                if left < MIN_ATTEMPT_SECONDS:
                    raise VenueUnavailable(
                        f"{self.exchange_id} {context}: not sent: the caller's deadline has passed"
                    )
                timeout_ms = min(timeout_ms, int(left * 1000))
            self._ex.timeout = timeout_ms
            try:
                return fn()
            except ccxt.BaseError as exc:
                raise self._translate(exc, f"{self.exchange_id} {context}") from None

        def on_retry(attempt_no: int, err: RetryLater, delay: float) -> None:
            deadline = self._deadline
            if deadline is not None and self._clock() + delay > deadline - MIN_ATTEMPT_SECONDS:
                err.add_note(
                    f"gave up after {attempt_no} attempts: the next one would come after the caller's deadline"
                )
                raise err
            self._on_retry(attempt_no, err, delay)

        return call_with_retry(attempt, self._policy, sleep=self._sleep, clock=self._clock, on_retry=on_retry)

    @staticmethod
    def _on_retry(attempt: int, err: RetryLater, delay: float) -> None:
        log.warning("%s (attempt %d); retrying in %.2fs", err, attempt, delay)

    def _ensure_markets(self) -> None:
        if not self._ex.markets:
            self._call("load_markets", lambda: self._ex.load_markets())

    def _market(self, symbol: str) -> dict[str, Any]:
        self._ensure_markets()
        market = self._ex.markets.get(symbol)
        if market is None:
            raise BadSymbol(
                f"{self.exchange_id}: unknown symbol {symbol!r}; the venue lists e.g. "
                f"{', '.join(sorted(self._ex.markets)[:5])}"
            )
        result: dict[str, Any] = market
        return result

    def _rules(self, market: Mapping[str, Any]) -> MarketRules:
        precision = market.get("precision") or {}
        limits = market.get("limits") or {}
        mode = self._ex.precisionMode

        def increment(value: Any) -> float | None:
            if value is None:
                return None
            if mode == TICK_SIZE:
                return float(value)
            if mode == DECIMAL_PLACES:
                return float(10 ** -int(value))
            return None  # significant digits have no fixed increment

        return MarketRules(
            symbol=market["symbol"],
            base=market["base"],
            quote=market["quote"],
            amount_step=increment(precision.get("amount")),
            price_tick=increment(precision.get("price")),
            min_amount=_float((limits.get("amount") or {}).get("min")),
            min_cost=_float((limits.get("cost") or {}).get("min")),
        )

    def _server_time_ms(self) -> int:
        if self._ex.has.get("fetchTime"):
            venue_time = self._call("fetch_time", lambda: self._ex.fetch_time())
            if venue_time:
                return int(venue_time)
        return int(self._ex.milliseconds())

    def _to_result(self, order: Mapping[str, Any], request: OrderRequest | None = None) -> OrderResult:
        info = order.get("info")
        # A Binance cancel answer's clientOrderId is the cancel's own id; the order's is origClientOrderId.
        client_id = (info.get("origClientOrderId") if isinstance(info, dict) else None) or order.get(
            "clientOrderId"
        )
        raw_side = order.get("side")
        raw_type = order.get("type")
        side = (
            OrderSide(raw_side)
            if raw_side in ("buy", "sell")
            else (request.side if request else OrderSide.BUY)
        )
        if raw_type in ("market", "limit"):
            order_type = OrderType(raw_type)
        else:
            order_type = request.type if request else OrderType.LIMIT
        filled = _float(order.get("filled")) or 0.0
        average = _float(order.get("average"))
        cost = _float(order.get("cost"))
        if average is None and filled and cost:
            average = cost / filled
        fills = []
        for trade in order.get("trades") or []:
            fee = trade.get("fee") or {}
            fills.append(
                Fill(
                    price=float(trade["price"]),
                    amount=float(trade["amount"]),
                    fee=_float(fee.get("cost")) or 0.0,
                    fee_currency=fee.get("currency") or "",
                )
            )
        amount = _float(order.get("amount"))
        return OrderResult(
            id=str(order.get("id") or ""),
            client_order_id=str(client_id or (request.client_order_id if request else "")),
            symbol=str(order.get("symbol") or (request.symbol if request else "")),
            side=side,
            type=order_type,
            status=_STATUS.get(str(order.get("status") or ""), OrderStatus.OPEN),
            amount=amount if amount is not None else (request.amount if request else 0.0),
            filled=filled,
            average=average,
            price=_float(order.get("price")) if order_type is OrderType.LIMIT else None,
            ts=int(order.get("timestamp") or 0),
            fills=tuple(fills),
        )

    def _lookup(self, symbol: str, client_order_id: str) -> dict[str, Any] | None:
        """The raw ccxt order with this client order id, ``None`` if the venue has none."""
        try:
            found: dict[str, Any] = self._ex.fetch_order(
                "", symbol, {self._quirks.fetch_by_client_id_param: client_order_id}
            )
        except ccxt.OrderNotFound:
            return None
        return found

    # ---- market data -------------------------------------------------------------------------------

    def load_markets(self, reload: bool = False) -> dict[str, MarketRules]:
        """Load (or reload) the venue's markets; their trading rules by unified symbol."""
        markets = self._call("load_markets", lambda: self._ex.load_markets(reload))
        return {symbol: self._rules(market) for symbol, market in sorted(markets.items())}

    def market_rules(self, symbol: str) -> MarketRules:
        return self._rules(self._market(symbol))

    def fetch_ohlcv(
        self, symbol: str, timeframe: str = "1m", since: int | None = None, limit: int | None = None
    ) -> list[Candle]:
        """Closed bars only, oldest first; with ``limit`` but no ``since``: the latest ``limit`` of them."""
        self._market(symbol)
        if timeframe not in (self._ex.timeframes or {}):
            raise NeedsHuman(
                f"{self.exchange_id}: timeframe {timeframe!r} is not offered; choose one of "
                f"{', '.join(self._ex.timeframes or {})}"
            )
        span_ms = int(self._ex.parse_timeframe(timeframe) * 1000)
        # The venue clock is read *before* the bars: a bar that closes in between is then left out,
        # never included half-formed.
        now = self._server_time_ms()
        # Venues include the forming bar; ask for one more so the caller still gets ``limit`` closed ones.
        wanted = limit + 1 if limit is not None and since is None else limit
        rows = self._call(
            f"fetch_ohlcv {symbol} {timeframe}",
            lambda: self._ex.fetch_ohlcv(symbol, timeframe, since, wanted),
        )
        candles = [
            Candle(
                ts=int(row[0]),
                open=float(row[1]),
                high=float(row[2]),
                low=float(row[3]),
                close=float(row[4]),
                volume=float(row[5] or 0.0),
            )
            for row in rows
            if int(row[0]) + span_ms <= now
        ]
        if limit is not None:
            candles = candles[-limit:] if since is None else candles[:limit]
        return candles

    def fetch_ticker(self, symbol: str) -> Ticker:
        self._market(symbol)
        raw = self._call(f"fetch_ticker {symbol}", lambda: self._ex.fetch_ticker(symbol))
        last = _float(raw.get("last")) or _float(raw.get("close"))
        bid = _float(raw.get("bid")) or last
        ask = _float(raw.get("ask")) or last
        if last is None or bid is None or ask is None:
            raise VenueUnavailable(f"{self.exchange_id} fetch_ticker {symbol}: the venue sent no price")
        return Ticker(
            symbol=symbol,
            bid=bid,
            ask=ask,
            last=last,
            ts=int(raw.get("timestamp") or self._ex.milliseconds()),
        )

    # ---- orders ------------------------------------------------------------------------------------

    def _nothing_to_reduce(self, request: OrderRequest, reason: str) -> OrderResult:
        log.info(
            "%s %s %s: reduce-only order not sent: %s",
            self.exchange_id,
            request.symbol,
            request.client_order_id,
            reason,
        )
        return OrderResult(
            id="",
            client_order_id=request.client_order_id,
            symbol=request.symbol,
            side=request.side,
            type=request.type,
            status=OrderStatus.REJECTED,
            amount=0.0,
            filled=0.0,
            average=None,
            price=request.price,
            ts=int(self._ex.milliseconds()),
        )

    def _precise(self, symbol: str, *, amount: float | None = None, price: float | None = None) -> float:
        """``amount`` or ``price`` rounded the venue's way; ccxt refuses values that round to nothing."""
        try:
            if amount is not None:
                return float(self._ex.amount_to_precision(symbol, amount))
            return float(self._ex.price_to_precision(symbol, price))
        except ccxt.BaseError as exc:
            raise self._translate(exc, f"{self.exchange_id} create_order {symbol}") from None

    def create_order(self, request: OrderRequest) -> OrderResult:
        """Place an order; idempotent by ``request.client_order_id`` (see the module docstring)."""
        symbol = request.symbol
        cid = request.client_order_id
        market = self._market(symbol)
        params: dict[str, Any] = {self._quirks.client_order_id_param: cid}
        amount = request.amount
        if request.reduce_only:
            if self._quirks.reduce_only_param or market.get("contract"):
                params["reduceOnly"] = True
            else:
                # The clamp below reads balances, which an earlier attempt of this very order may have
                # changed: an order that already exists is returned as it is.
                existing = self.fetch_order_by_client_id(symbol, cid)
                if existing is not None:
                    return existing
                if request.side is OrderSide.BUY:
                    return self._nothing_to_reduce(request, "a spot market has no short position to buy back")
                held = self.fetch_balance().get(market["base"])
                free = held.free if held else 0.0
                min_amount = self._rules(market).min_amount or 0.0
                if free <= 0 or free < min_amount:
                    return self._nothing_to_reduce(request, f"{free:g} {market['base']} free to sell")
                amount = min(amount, free)
        amount = self._precise(symbol, amount=amount)
        price: float | None = None
        if request.type is OrderType.LIMIT:
            if request.price is None:
                raise InvalidOrder(f"create_order {symbol} {cid}: a limit order needs a price")
            price = self._precise(symbol, price=request.price)

        sent = False

        def attempt() -> dict[str, Any]:
            nonlocal sent
            if sent:
                # The previous attempt's outcome is unknown: the venue may have executed it.
                existing = self._lookup(symbol, cid)
                if existing is not None:
                    log.info(
                        "%s %s %s: found the order of an earlier attempt; not re-sending",
                        self.exchange_id,
                        symbol,
                        cid,
                    )
                    return existing
            sent = True
            placed: dict[str, Any] = self._ex.create_order(
                symbol, request.type.value, request.side.value, amount, price, dict(params)
            )
            return placed

        try:
            order = self._call(f"create_order {symbol} {cid}", attempt)
        except DuplicateOrder:
            found = self.fetch_order_by_client_id(symbol, cid)
            if found is None:
                raise
            return found
        return self._to_result(order, request)

    def fetch_order_by_client_id(self, symbol: str, client_order_id: str) -> OrderResult | None:
        self._market(symbol)
        raw = self._call(
            f"fetch_order {symbol} {client_order_id}", lambda: self._lookup(symbol, client_order_id)
        )
        return None if raw is None else self._to_result(raw)

    def cancel_order(self, symbol: str, order_id: str) -> OrderResult:
        self._market(symbol)
        attempts = 0

        def attempt() -> dict[str, Any]:
            nonlocal attempts
            attempts += 1
            canceled: dict[str, Any] = self._ex.cancel_order(order_id, symbol)
            return canceled

        try:
            return self._to_result(self._call(f"cancel_order {symbol} {order_id}", attempt))
        except OrderNotFound:
            if attempts < 2:
                raise
            # An earlier attempt may have canceled it before its answer was lost.
            order = self._call(
                f"fetch_order {symbol} {order_id}", lambda: self._ex.fetch_order(order_id, symbol)
            )
            result = self._to_result(order)
            if result.status is not OrderStatus.CANCELED:
                raise
            return result

    def fetch_open_orders(self, symbol: str | None = None) -> list[OrderResult]:
        if symbol is not None:
            self._market(symbol)
        else:
            self._ensure_markets()
        orders = self._call(f"fetch_open_orders {symbol or '*'}", lambda: self._ex.fetch_open_orders(symbol))
        return [self._to_result(o) for o in orders]

    # ---- account -----------------------------------------------------------------------------------

    def fetch_balance(self) -> dict[str, Balance]:
        self._ensure_markets()
        raw = self._call("fetch_balance", lambda: self._ex.fetch_balance())
        free = raw.get("free") or {}
        used = raw.get("used") or {}
        result = {}
        for code, total in sorted((raw.get("total") or {}).items()):
            total_f = _float(total) or 0.0
            if total_f == 0.0:
                continue
            result[code] = Balance(
                free=_float(free.get(code)) or 0.0, used=_float(used.get(code)) or 0.0, total=total_f
            )
        return result

    def fetch_positions(self, symbols: Sequence[str]) -> dict[str, Position]:
        """Spot positions from base balances: ``qty`` is the base total, ``entry_price`` is 0.0 (unknown).

        A spot venue keeps no entry price; the runner's journal does. A balance below the market's minimum
        order amount counts as flat, because it cannot be sold.
        """
        markets = {symbol: self._market(symbol) for symbol in symbols}
        balances = self.fetch_balance()
        positions: dict[str, Position] = {}
        for symbol, market in markets.items():
            held = balances.get(market["base"])
            min_amount = self._rules(market).min_amount or 0.0
            if held is None or held.total <= 0 or held.total < min_amount:
                positions[symbol] = FLAT
            else:
                positions[symbol] = Position(qty=held.total, entry_price=0.0)
        return positions
