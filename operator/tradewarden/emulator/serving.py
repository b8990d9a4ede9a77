"""The emulator's HTTP face: a loopback server speaking a subset of Binance's spot REST API v3.

Tests start it in-process through ``Emulator`` (``with Emulator(seed=7) as emu: ...``); the demo starts
it with ``python -m tradewarden.emulator``. ccxt's own ``binance`` class talks to it unmodified once its
API URLs point here (``tradewarden.exchange`` does that when given ``api_url``).

Public endpoints: ``GET /api/v3/ping``, ``time``, ``exchangeInfo``, ``klines``, ``ticker/24hr``,
``ticker/bookTicker``, ``ticker/price``, ``avgPrice``, ``depth``, and ``GET /sapi/v1/system/status``.
Any other path gets Binance's HTML 404.

Signed endpoints (HMAC-SHA256 over the query string followed by the body, key in ``X-MBX-APIKEY``):
``POST/GET/DELETE /api/v3/order``, ``POST /api/v3/order/test``, ``GET /api/v3/openOrders``,
``allOrders``, ``myTrades``, ``account``. Errors carry Binance's codes and HTTP statuses: -2014 and
-2015 (401) for a missing or unknown key, -1022 for a bad signature, -1021 for a timestamp outside the
receive window (checked against the real clock, which is what the client signs with), -2010 for
insufficient balance and duplicate client order ids, -2011 and -2013 for unknown orders.

Admin endpoints (unauthenticated JSON, never faulted):

- ``GET /emulator/state``: clock, prices, balances, orders, trades;
- ``POST /emulator/advance`` ``{"bars": n}``: close ``n`` bars now;
- ``GET|POST|DELETE /emulator/faults``: list, arm (``{"kind", "count", "path", "method", "retryAfter",
  "delay"}``, see ``emulator.faults``) or clear faults;
- ``POST /emulator/reset``: back to the starting state;
- ``POST /emulator/balances`` ``{"USDT": "1000", ...}``: set free balances;
- ``GET /emulator/requests``: how many requests each ``METHOD /path`` received.

Clocks: ``/api/v3/time``, kline times and order times are the *market* clock, which starts at
``start_ms + history_bars`` minutes and moves one minute per bar. The server binds loopback only.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import pathlib
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tradewarden.emulator import rendering
from tradewarden.emulator.faults import Fault, FaultKind, FaultPlan
from tradewarden.emulator.matching import BinanceError, Engine, EngineSettings, mandatory
from tradewarden.emulator.series import DEFAULT_MARKETS, MarketSpec

log = logging.getLogger(__name__)

DEFAULT_START_MS = 1_704_067_200_000
"""2024-01-01T00:00:00Z: the open of bar 0 in every market."""

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


def local_bridge_addresses() -> set[str]:
    """The IPv4 addresses of this machine's Linux bridges (a local cluster's pod network, say): pods can
    reach the emulator there, and nothing beyond the machine can."""
    found: set[str] = set()
    for iface in pathlib.Path("/sys/class/net").glob("*/bridge"):
        name = iface.parent.name.encode()[:15]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, contextlib.suppress(OSError):
            packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name))  # SIOCGIFADDR
            found.add(socket.inet_ntoa(packed[20:24]))
    return found
MAX_RECV_WINDOW_MS = 60_000


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
        all_headers = {"Content-Type": "application/json;charset=UTF-8"}
        all_headers.update(headers or {})
        return cls(status, json.dumps(payload, separators=(",", ":")).encode(), all_headers)

    @classmethod
    def error(cls, err: BinanceError, headers: Mapping[str, str] | None = None) -> Response:
        return cls.json(err.status, {"code": err.code, "msg": err.msg}, headers)


@dataclass(frozen=True, slots=True)
class Credentials:
    api_key: str
    secret: str


def _strip_signature(raw: str) -> str:
    return "&".join(part for part in raw.split("&") if part and not part.startswith("signature="))


class Venue:
    """Turns one parsed HTTP request into one response. Independent of the socket layer."""

    def __init__(
        self,
        engine: Engine,
        credentials: Credentials,
        *,
        check_timestamps: bool = True,
        wall_clock_ms: Callable[[], float] = lambda: time.time() * 1000,
    ) -> None:
        self.engine = engine
        self.credentials = credentials
        self.faults = FaultPlan()
        self.check_timestamps = check_timestamps
        self._wall_clock_ms = wall_clock_ms
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self.stopping = threading.Event()

    # ---- entry -------------------------------------------------------------------------------------

    def handle(self, method: str, target: str, body: bytes, headers: Mapping[str, str]) -> Response | None:
        """Answer a request; ``None`` means: close the connection without an answer (a dropped reply)."""
        split = urlsplit(target)
        path = split.path
        raw_query = split.query
        raw_body = body.decode("utf-8", errors="replace")
        if path.startswith("/emulator/"):
            return self._admin(method, path, raw_body)
        with self._counts_lock:
            self._counts[f"{method} {path}"] += 1
        fault = self.faults.take(method, path) if path.startswith("/api/") else None
        if fault is not None and fault.kind is FaultKind.HTTP_429:
            retry_after = f"{fault.retry_after:g}"
            return Response.error(
                BinanceError(
                    429,
                    -1003,
                    "Too many requests; current limit of IP(127.0.0.1) is 6000 requests per "
                    "minute. Please use the websocket for live updates to avoid polling the API.",
                ),
                {"Retry-After": retry_after},
            )
        if fault is not None and fault.kind is FaultKind.HTTP_503:
            return Response.error(
                BinanceError(503, -1001, "Internal error; unable to process your request. Please try again.")
            )
        if fault is not None and fault.kind is FaultKind.SLOW:
            self.stopping.wait(fault.delay)
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        params.update(parse_qsl(raw_body, keep_blank_values=True))
        # One request at a time touches the books: series are generated lazily, and two threads
        # drawing from one market's generator at once would break the same-seed-same-klines promise.
        rest = fault is not None and fault.kind is FaultKind.REST
        with self.engine.lock:
            try:
                self.engine.sync()
                response = self._route(method, path, params, raw_query, raw_body, headers, rest=rest)
            except BinanceError as err:
                response = Response.error(err)
        if fault is not None and fault.kind is FaultKind.DROP:
            log.info("fault: dropping the response to %s %s after executing it", method, path)
            return None
        if fault is not None and fault.kind is FaultKind.STALL:
            self.stopping.wait(fault.delay)
        return response

    def request_counts(self) -> dict[str, int]:
        with self._counts_lock:
            return dict(self._counts)

    # ---- routing -----------------------------------------------------------------------------------

    def _route(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        raw_query: str,
        raw_body: str,
        headers: Mapping[str, str],
        *,
        rest: bool = False,
    ) -> Response:
        engine = self.engine
        public: dict[tuple[str, str], Callable[[dict[str, str]], Any]] = {
            ("GET", "/api/v3/ping"): lambda p: {},
            # ccxt's fetch_status asks the wallet API; it is the one sapi endpoint the emulator answers.
            ("GET", "/sapi/v1/system/status"): lambda p: {"status": 0, "msg": "normal"},
            ("GET", "/api/v3/time"): lambda p: {"serverTime": engine.now_ms()},
            ("GET", "/api/v3/exchangeInfo"): self._exchange_info,
            ("GET", "/api/v3/klines"): lambda p: rendering.klines(engine, engine.spec(p.get("symbol")), p),
            ("GET", "/api/v3/ticker/24hr"): lambda p: self._per_symbol(p, rendering.ticker_24hr),
            ("GET", "/api/v3/ticker/bookTicker"): lambda p: self._per_symbol(p, rendering.book_ticker),
            ("GET", "/api/v3/ticker/price"): lambda p: self._per_symbol(p, rendering.price_ticker),
            ("GET", "/api/v3/avgPrice"): lambda p: rendering.avg_price(engine, engine.spec(p.get("symbol"))),
            ("GET", "/api/v3/depth"): lambda p: rendering.depth(engine, engine.spec(p.get("symbol")), p),
        }
        signed: dict[tuple[str, str], Callable[[dict[str, str]], Any]] = {
            ("POST", "/api/v3/order"): lambda p: self._new_order(p, rest=rest),
            ("POST", "/api/v3/order/test"): self._test_order,
            ("GET", "/api/v3/order"): lambda p: rendering.order_json(engine.get_order(p)),
            ("DELETE", "/api/v3/order"): self._cancel_order,
            ("GET", "/api/v3/openOrders"): lambda p: [
                rendering.order_json(o) for o in engine.open_orders(p.get("symbol") or None)
            ],
            ("GET", "/api/v3/allOrders"): lambda p: [rendering.order_json(o) for o in engine.all_orders(p)],
            ("GET", "/api/v3/myTrades"): lambda p: [rendering.trade_json(t) for t in engine.my_trades(p)],
            ("GET", "/api/v3/account"): lambda p: rendering.account_json(
                engine, p.get("omitZeroBalances", "false").lower() == "true"
            ),
        }
        key = (method, path)
        if key in public:
            return Response.json(200, public[key](params))
        if key in signed:
            self._authenticate(params, raw_query, raw_body, headers)
            return Response.json(200, signed[key](params))
        known_paths = {p for _, p in public} | {p for _, p in signed}
        if path in known_paths:
            return Response(405, b"Method Not Allowed", {"Content-Type": "text/html"})
        # Binance answers unknown paths with an HTML 404, which ccxt reports as ExchangeNotAvailable.
        return Response(
            404, b"<html><body><h1>404 Not Found</h1></body></html>", {"Content-Type": "text/html"}
        )

    def _authenticate(
        self, params: dict[str, str], raw_query: str, raw_body: str, headers: Mapping[str, str]
    ) -> None:
        api_key = next((v for k, v in headers.items() if k.lower() == "x-mbx-apikey"), "")
        if not api_key:
            raise BinanceError(401, -2014, "API-key format invalid.")
        if not hmac.compare_digest(api_key, self.credentials.api_key):
            raise BinanceError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        signature = params.get("signature") or ""
        if not signature:
            raise mandatory("signature")
        # Binance signs "totalParams": the query string immediately followed by the body, no separator.
        total = _strip_signature(raw_query) + _strip_signature(raw_body)
        expected = hmac.new(self.credentials.secret.encode(), total.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise BinanceError(400, -1022, "Signature for this request is not valid.")
        raw_timestamp = params.get("timestamp") or ""
        if not raw_timestamp:
            raise mandatory("timestamp")
        try:
            timestamp = int(raw_timestamp)
            recv_window = int(params.get("recvWindow") or 5000)
        except ValueError:
            raise BinanceError(400, -1100, "Illegal characters found in a parameter.") from None
        if recv_window > MAX_RECV_WINDOW_MS:
            raise BinanceError(400, -1131, "recvWindow must be less than 60000")
        if not self.check_timestamps:
            return
        now = self._wall_clock_ms()
        if timestamp >= now + 1000:
            raise BinanceError(
                400, -1021, "Timestamp for this request was 1000ms ahead of the server's time."
            )
        if now - timestamp > recv_window:
            raise BinanceError(400, -1021, "Timestamp for this request is outside of the recvWindow.")

    def _exchange_info(self, params: dict[str, str]) -> Any:
        ids: list[str] | None = None
        if params.get("symbol"):
            ids = [params["symbol"]]
        elif params.get("symbols"):
            ids = self._symbol_list(params["symbols"])
        return rendering.exchange_info(self.engine, ids)

    def _symbol_list(self, raw: str) -> list[str]:
        try:
            ids = json.loads(raw)
        except ValueError:
            raise BinanceError(400, -1100, "Illegal characters found in parameter 'symbols'.") from None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise BinanceError(400, -1100, "Illegal characters found in parameter 'symbols'.")
        return ids

    def _per_symbol(self, params: dict[str, str], render: Callable[[Engine, MarketSpec], Any]) -> Any:
        engine = self.engine
        if params.get("symbol"):
            return render(engine, engine.spec(params["symbol"]))
        if params.get("symbols"):
            return [render(engine, engine.spec(i)) for i in self._symbol_list(params["symbols"])]
        return [render(engine, spec) for spec in engine.specs.values()]

    def _new_order(self, params: dict[str, str], *, rest: bool = False) -> Any:
        order = self.engine.place_order(params, rest=rest)
        assert order is not None
        response_type = params.get("newOrderRespType") or "FULL"
        if response_type not in ("ACK", "RESULT", "FULL"):
            response_type = "FULL"
        return rendering.order_json(order, response_type)

    def _test_order(self, params: dict[str, str]) -> Any:
        self.engine.place_order(params, test_only=True)
        return {}

    def _cancel_order(self, params: dict[str, str]) -> Any:
        order, cancel_id = self.engine.cancel_order(params)
        return rendering.cancel_json(order, cancel_id, self.engine.now_ms())

    # ---- admin -------------------------------------------------------------------------------------

    def _admin(self, method: str, path: str, raw_body: str) -> Response:
        try:
            body = json.loads(raw_body) if raw_body.strip() else {}
            if not isinstance(body, dict):
                raise ValueError("the request body must be a JSON object")
            with self.engine.lock:
                self.engine.sync()
                return Response.json(200, self._admin_action(method, path, body))
        except KeyError:
            return Response.json(404, {"error": f"no admin endpoint {method} {path}"})
        except (ValueError, TypeError, InvalidOperation) as exc:
            return Response.json(400, {"error": f"{method} {path}: {exc}"})

    def _admin_action(self, method: str, path: str, body: dict[str, Any]) -> Any:
        engine = self.engine
        # The caller holds the engine lock.
        if (method, path) == ("GET", "/emulator/state"):
            state = rendering.state_json(engine)
            state["faults"] = self.faults.pending()
            state["requests"] = self.request_counts()
            return state
        if (method, path) == ("POST", "/emulator/advance"):
            bars = int(body.get("bars", 1))
            engine.advance(bars)
            return {"index": engine.index, "time": engine.now_ms()}
        if (method, path) == ("GET", "/emulator/faults"):
            return {"faults": self.faults.pending()}
        if (method, path) == ("POST", "/emulator/faults"):
            self.faults.add(fault_from_json(body))
            return {"faults": self.faults.pending()}
        if (method, path) == ("DELETE", "/emulator/faults"):
            self.faults.clear()
            return {"faults": []}
        if (method, path) == ("POST", "/emulator/reset"):
            engine.reset()
            self.faults.clear()
            with self._counts_lock:
                self._counts.clear()
            return {"index": engine.index, "time": engine.now_ms()}
        if (method, path) == ("POST", "/emulator/balances"):
            engine.set_balances({str(k): Decimal(str(v)) for k, v in body.items()})
            return {
                a: {"free": rendering.fmt(h.free), "locked": rendering.fmt(h.locked)}
                for a, h in engine.iter_assets()
            }
        if (method, path) == ("GET", "/emulator/requests"):
            return self.request_counts()
        raise KeyError(path)


def fault_from_json(body: Mapping[str, Any]) -> Fault:
    if "kind" not in body:
        raise ValueError("a fault needs a kind")
    return Fault(
        kind=FaultKind.parse(str(body["kind"])),
        count=int(body.get("count", 1)),
        path=body.get("path"),
        method=body.get("method"),
        retry_after=float(body.get("retryAfter", body.get("retry_after", 1.0))),
        delay=float(body.get("delay", 2.0)),
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    venue: Venue


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # HTTP/1.0: one request per connection, so a dropped or slow answer can never leave a half-used
    # keep-alive connection behind in the client's pool.
    protocol_version = "HTTP/1.0"
    server_version = "tradewarden-emulator"
    sys_version = ""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        headers = dict(self.headers.items())
        try:
            response = self.server.venue.handle(method, self.path, body, headers)
        except Exception:  # a bug in the emulator must show up as a 500, not a hung client
            log.exception("emulator: unhandled error answering %s %s", method, self.path)
            response = Response.json(
                500, {"code": -1000, "msg": "An unknown error occurred while processing the request."}
            )
        if response is None:
            self.close_connection = True
            return
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up first (a "slow" fault longer than its timeout): nothing to answer.
            pass

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("emulator %s - %s", self.address_string(), format % args)


class Emulator:
    """A Binance-dialect spot exchange on loopback, for tests and the demo.

    ``start()`` returns the base URL (``http://127.0.0.1:<port>``); as a context manager it starts on
    entry and stops on exit. With ``bar_seconds=None`` (the default) the market moves only through
    ``advance()``, so tests are deterministic; with a number, one one-minute bar closes every that many
    real seconds, for the demo.
    """

    def __init__(
        self,
        *,
        seed: int = 42,
        bar_seconds: float | None = None,
        history_bars: int = 1000,
        start_ms: int = DEFAULT_START_MS,
        markets: tuple[MarketSpec, ...] = DEFAULT_MARKETS,
        balances: Mapping[str, Decimal | float | str] | None = None,
        fee_rate: Decimal | float | str = "0.001",
        slippage_bps: Decimal | float | str = "1",
        spread_bps: Decimal | float | str = "2",
        api_key: str = "emulator-key",
        secret: str = "emulator-secret",  # noqa: S107 - a fixture credential for a local fake venue
        host: str = "127.0.0.1",
        port: int = 0,
        check_timestamps: bool = True,
    ) -> None:
        if host not in LOOPBACK_HOSTS and not host.startswith("127.") and host not in local_bridge_addresses():
            raise ValueError(
                f"host must be a loopback address such as 127.0.0.1, or the address of a Linux bridge of this "
                f"machine such as a local cluster's pod bridge (got {host!r}): the emulator never listens on a "
                "network that reaches beyond this machine"
            )
        self.host = "127.0.0.1" if host == "localhost" else host
        self.port = port
        self.api_key = api_key
        self.secret = secret
        settings = EngineSettings(
            markets=markets,
            seed=seed,
            start_ms=start_ms,
            history_bars=history_bars,
            balances={k: Decimal(str(v)) for k, v in (balances or {"USDT": "10000"}).items()},
            fee_rate=Decimal(str(fee_rate)),
            slippage_bps=Decimal(str(slippage_bps)),
            spread_bps=Decimal(str(spread_bps)),
            bar_seconds=bar_seconds,
        )
        self.engine = Engine(settings)
        self.venue = Venue(self.engine, Credentials(api_key, secret), check_timestamps=check_timestamps)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def __repr__(self) -> str:
        # No credentials here, fake as they are: reprs end up in logs, and logs never carry keys.
        return f"Emulator(url={self.url!r}, seed={self.engine.settings.seed})"

    def start(self) -> str:
        if self._server is not None:
            return self.url
        self.venue.stopping.clear()
        server = _Server((self.host, self.port), _Handler)
        server.venue = self.venue
        self._server = server
        host, port = server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="tradewarden-emulator",
            daemon=True,
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._server is None:
            return
        self.venue.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- the same controls as the admin endpoints, for in-process tests -----------------------------

    def advance(self, bars: int = 1) -> int:
        """Close ``bars`` bars now (filling resting orders they trade through); returns the market time."""
        self.engine.advance(bars)
        return self.engine.now_ms()

    def inject_fault(
        self,
        kind: str,
        count: int = 1,
        *,
        path: str | None = None,
        method: str | None = None,
        retry_after: float = 1.0,
        delay: float = 2.0,
    ) -> None:
        self.venue.faults.add(
            Fault(
                FaultKind.parse(kind),
                count=count,
                path=path,
                method=method,
                retry_after=retry_after,
                delay=delay,
            )
        )

    def clear_faults(self) -> None:
        self.venue.faults.clear()

    def state(self) -> dict[str, Any]:
        response = self.venue.handle("GET", "/emulator/state", b"", {})
        assert response is not None
        result: dict[str, Any] = json.loads(response.body)
        return result

    def reset(self) -> None:
        self.venue.handle("POST", "/emulator/reset", b"", {})

    def set_balances(self, balances: Mapping[str, Decimal | float | str]) -> None:
        self.engine.set_balances({k: Decimal(str(v)) for k, v in balances.items()})

    def request_count(self, method: str, path: str) -> int:
        return self.venue.request_counts().get(f"{method.upper()} {path}", 0)
