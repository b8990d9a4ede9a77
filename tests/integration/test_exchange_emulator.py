"""The real ``ccxt.binance`` client, through ``ExchangeClient``, against the in-process exchange emulator.

Loopback only. The emulator's clock moves only when a test advances it, and the client's sleep is a
recorder, so retries and rate limits cost no wall time; the whole module runs in a few seconds.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ccxt
import pytest

from tradewarden.api.market import OrderRequest, OrderSide, OrderStatus, OrderType
from tradewarden.emulator import Emulator
from tradewarden.exchange import (
    AuthenticationFailed,
    ExchangeClient,
    InsufficientFunds,
    NeedsHuman,
    OrderNotFound,
    RetryLater,
    RetryPolicy,
)

BTC = "BTC/USDT"
REPO = Path(__file__).resolve().parents[2]
FAST_RETRIES = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05, max_elapsed=30.0)


class SleepRecorder:
    """Stands in for time.sleep: records what the client wanted to wait, waits (almost) nothing."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)


# A loopback opener that ignores any proxy configured in the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback test URL
    with _OPENER.open(request, timeout=5) as response:
        return json.loads(response.read())


def http_bytes(url: str) -> bytes:
    with _OPENER.open(url, timeout=5) as response:
        raw: bytes = response.read()
        return raw


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(seed=42) as emulator:
        yield emulator


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


def make_client(emu: Emulator, sleeps: SleepRecorder, **overrides: Any) -> ExchangeClient:
    kwargs: dict[str, Any] = {
        "api_key": emu.api_key,
        "secret": emu.secret,
        "api_url": emu.url,
        "timeout_ms": 3_000,
        "rate_limit_ms": 1,
        "retry_policy": FAST_RETRIES,
        "sleep": sleeps,
    }
    kwargs.update(overrides)
    return ExchangeClient("binance", **kwargs)


@pytest.fixture
def client(emu: Emulator, sleeps: SleepRecorder) -> Iterator[ExchangeClient]:
    with make_client(emu, sleeps) as built:
        yield built


def buy(cid: str, amount: float = 0.01, **kwargs: Any) -> OrderRequest:
    return OrderRequest(BTC, OrderSide.BUY, kwargs.pop("type", OrderType.MARKET), amount, cid, **kwargs)


def emulator_orders(emu: Emulator) -> list[dict[str, Any]]:
    orders: list[dict[str, Any]] = emu.state()["orders"]
    return orders


# ---- market data -----------------------------------------------------------------------------------


def test_load_markets_reads_the_binance_filters(client: ExchangeClient) -> None:
    markets = client.load_markets()
    assert set(markets) == {"BTC/USDT", "ETH/USDT", "PAXG/USDT", "EUR/USDT"}
    btc = markets[BTC]
    assert (btc.base, btc.quote) == ("BTC", "USDT")
    assert btc.amount_step == pytest.approx(0.00001)
    assert btc.price_tick == pytest.approx(0.01)
    assert btc.min_amount == pytest.approx(0.00001)
    assert btc.min_cost == pytest.approx(5.0)
    assert markets["EUR/USDT"].price_tick == pytest.approx(0.0001)


def test_same_seed_same_klines_byte_for_byte(emu: Emulator, sleeps: SleepRecorder) -> None:
    query = "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1000"
    with Emulator(seed=42) as twin, Emulator(seed=43) as other:
        assert http_bytes(emu.url + query) == http_bytes(twin.url + query)
        assert http_bytes(emu.url + query) != http_bytes(other.url + query)
        hourly = "/api/v3/klines?symbol=ETHUSDT&interval=1h&limit=20"
        assert http_bytes(emu.url + hourly) == http_bytes(twin.url + hourly)
        with make_client(twin, sleeps) as twin_client, make_client(emu, sleeps) as emu_client:
            assert emu_client.fetch_ohlcv(BTC, "1m", limit=300) == twin_client.fetch_ohlcv(
                BTC, "1m", limit=300
            )


def test_fetch_ohlcv_returns_closed_bars_only(emu: Emulator, client: ExchangeClient) -> None:
    candles = client.fetch_ohlcv(BTC, "1m", limit=50)
    assert len(candles) == 50
    now = emu.engine.now_ms()
    assert candles[-1].ts + 60_000 == now  # the forming bar (opened at ``now``) is left out
    assert all(b.ts - a.ts == 60_000 for a, b in itertools.pairwise(candles))
    assert all(c.low <= min(c.open, c.close) and c.high >= max(c.open, c.close) for c in candles)
    emu.advance(3)
    later = client.fetch_ohlcv(BTC, "1m", limit=50)
    assert later[-1].ts == now + 2 * 60_000
    assert later[:-3] == candles[3:]
    since = client.fetch_ohlcv(BTC, "5m", since=candles[0].ts, limit=4)
    assert [c.ts for c in since] == [candles[0].ts + i * 300_000 for i in range(4)]


def test_fetch_ohlcv_refuses_an_unknown_timeframe_or_symbol(client: ExchangeClient) -> None:
    with pytest.raises(NeedsHuman, match="timeframe '7m'"):
        client.fetch_ohlcv(BTC, "7m")
    with pytest.raises(NeedsHuman, match="unknown symbol 'DOGE/USDT'"):
        client.fetch_ohlcv("DOGE/USDT", "1m")


def test_ticker_brackets_the_last_price(emu: Emulator, client: ExchangeClient) -> None:
    ticker = client.fetch_ticker(BTC)
    assert ticker.symbol == BTC
    assert ticker.bid < ticker.last < ticker.ask
    assert ticker.last == pytest.approx(float(emu.state()["markets"][BTC]["price"]))


# ---- orders --------------------------------------------------------------------------------------


def test_market_buy_fills_and_moves_balances(emu: Emulator, client: ExchangeClient) -> None:
    before = client.fetch_balance()
    assert before["USDT"].free == 10_000.0
    assert "BTC" not in before
    result = client.create_order(buy("mkt-1", 0.01))
    assert result.status is OrderStatus.CLOSED
    assert result.client_order_id == "mkt-1"
    assert result.filled == pytest.approx(0.01)
    assert result.average is not None
    (fill,) = result.fills
    assert fill.fee_currency == "USDT"
    assert fill.fee == pytest.approx(0.01 * fill.price * 0.001, abs=1e-8)
    after = client.fetch_balance()
    assert after["BTC"].total == pytest.approx(0.01)
    assert after["USDT"].free == pytest.approx(10_000 - 0.01 * fill.price - fill.fee, abs=1e-8)
    assert client.fetch_positions([BTC, "ETH/USDT"])[BTC].qty == pytest.approx(0.01)
    assert not client.fetch_positions(["ETH/USDT"])["ETH/USDT"].is_open


def test_limit_order_rests_then_fills_after_advance(emu: Emulator, client: ExchangeClient) -> None:
    last = client.fetch_ticker(BTC).last
    limit = round(last * 0.998, 2)
    placed = client.create_order(buy("lim-1", 0.01, type=OrderType.LIMIT, price=limit))
    assert placed.status is OrderStatus.OPEN
    assert placed.price == pytest.approx(limit)
    assert [o.client_order_id for o in client.fetch_open_orders(BTC)] == ["lim-1"]
    assert client.fetch_balance()["USDT"].used == pytest.approx(0.01 * limit * 1.001, abs=1e-6)
    for _ in range(400):
        emu.advance(5)
        if not emu.engine.open_orders("BTCUSDT"):
            break
    filled = client.fetch_order_by_client_id(BTC, "lim-1")
    assert filled is not None
    assert filled.status is OrderStatus.CLOSED
    assert filled.average == pytest.approx(limit)
    assert client.fetch_open_orders() == []
    assert client.fetch_balance()["BTC"].total == pytest.approx(0.01)


def test_cancel_keeps_the_client_order_id_and_frees_funds(emu: Emulator, client: ExchangeClient) -> None:
    limit = round(client.fetch_ticker(BTC).last * 0.5, 2)
    placed = client.create_order(buy("cancel-me", 0.01, type=OrderType.LIMIT, price=limit))
    canceled = client.cancel_order(BTC, placed.id)
    assert canceled.status is OrderStatus.CANCELED
    assert canceled.client_order_id == "cancel-me"
    assert client.fetch_open_orders(BTC) == []
    assert client.fetch_balance()["USDT"].free == 10_000.0
    with pytest.raises(OrderNotFound):
        client.cancel_order(BTC, placed.id)


def test_fetch_by_client_id(client: ExchangeClient) -> None:
    client.create_order(buy("find-me"))
    found = client.fetch_order_by_client_id(BTC, "find-me")
    assert found is not None
    assert (found.client_order_id, found.status) == ("find-me", OrderStatus.CLOSED)
    assert client.fetch_order_by_client_id(BTC, "never-sent") is None


def test_duplicate_client_order_id_is_refused_by_the_venue_and_resolved_by_the_client(
    emu: Emulator, client: ExchangeClient
) -> None:
    first = client.create_order(buy("dup-1"))
    # The venue itself refuses the id, with Binance's code and text (checked on the raw ccxt class).
    raw = ccxt.binance({"apiKey": emu.api_key, "secret": emu.secret, "options": {"fetchCurrencies": False}})
    raw.urls["api"] = client._ex.urls["api"]  # the same rebased URLs
    raw.markets, raw.markets_by_id, raw.symbols = (
        client._ex.markets,
        client._ex.markets_by_id,
        client._ex.symbols,
    )
    raw.session.trust_env = False
    with pytest.raises(ccxt.InvalidOrder, match=r'"code":-2010,"msg":"Duplicate order sent\."'):
        raw.create_order(BTC, "market", "buy", 0.01, None, {"newClientOrderId": "dup-1"})
    # The door turns that answer into the existing order: asking twice never trades twice.
    second = client.create_order(buy("dup-1", 0.02))
    assert second.id == first.id
    assert [o["clientOrderId"] for o in emulator_orders(emu)] == ["dup-1"]


def test_reduce_only_sell_is_clamped_to_the_spot_holding(emu: Emulator, client: ExchangeClient) -> None:
    client.create_order(buy("entry", 0.01))
    exit_order = client.create_order(
        OrderRequest(BTC, OrderSide.SELL, OrderType.MARKET, 1.0, "exit", reduce_only=True)
    )
    assert exit_order.status is OrderStatus.CLOSED
    assert exit_order.amount == pytest.approx(0.01)
    assert "BTC" not in client.fetch_balance()
    posts = emu.request_count("POST", "/api/v3/order")
    again = client.create_order(
        OrderRequest(BTC, OrderSide.SELL, OrderType.MARKET, 1.0, "exit-2", reduce_only=True)
    )
    assert again.status is OrderStatus.REJECTED
    assert again.amount == 0.0
    assert emu.request_count("POST", "/api/v3/order") == posts  # nothing was sent
    # The same reduce-only request again returns the order it made, not a fresh clamp.
    assert (
        client.create_order(
            OrderRequest(BTC, OrderSide.SELL, OrderType.MARKET, 1.0, "exit", reduce_only=True)
        ).id
        == exit_order.id
    )


def test_insufficient_balance_needs_a_human(emu: Emulator, client: ExchangeClient) -> None:
    with pytest.raises(InsufficientFunds) as caught:
        client.create_order(buy("too-big", 1.0))
    assert isinstance(caught.value, NeedsHuman)
    assert emu.request_count("POST", "/api/v3/order") == 1  # not retried
    assert emulator_orders(emu) == []


# ---- authentication --------------------------------------------------------------------------------


def test_bad_signature_needs_a_human(emu: Emulator, sleeps: SleepRecorder) -> None:
    with (
        make_client(emu, sleeps, secret="not-the-secret") as bad,
        pytest.raises(AuthenticationFailed, match="Signature for this request is not valid"),
    ):
        bad.fetch_balance()
    assert sleeps.sleeps == []


def test_unknown_key_needs_a_human(emu: Emulator, sleeps: SleepRecorder) -> None:
    with (
        make_client(emu, sleeps, api_key="someone-else") as bad,
        pytest.raises(AuthenticationFailed, match="-2015"),
    ):
        bad.fetch_balance()


def test_stale_timestamp_is_retried_then_given_up(emu: Emulator, sleeps: SleepRecorder) -> None:
    # ccxt signs ``milliseconds() - timeDifference``: two minutes off is outside any receive window.
    with (
        make_client(emu, sleeps, options={"timeDifference": 120_000}) as skewed,
        pytest.raises(RetryLater, match="recvWindow"),
    ):
        skewed.fetch_balance()
    assert len(sleeps.sleeps) == FAST_RETRIES.max_attempts - 1


# ---- faults --------------------------------------------------------------------------------------


def test_rate_limit_is_retried_after_the_venues_retry_after(
    emu: Emulator, client: ExchangeClient, sleeps: SleepRecorder
) -> None:
    client.load_markets()
    emu.inject_fault("429", count=2, path="/api/v3/account", retry_after=1.5)
    balances = client.fetch_balance()
    assert balances["USDT"].free == 10_000.0
    assert sleeps.sleeps == [1.5, 1.5]
    assert emu.request_count("GET", "/api/v3/account") == 3


def test_unavailable_venue_is_retried(emu: Emulator, client: ExchangeClient, sleeps: SleepRecorder) -> None:
    emu.inject_fault("503", count=1, path="/api/v3/ticker/24hr")
    assert client.fetch_ticker(BTC).last > 0
    assert len(sleeps.sleeps) == 1


def test_persistent_outage_gives_up_with_retry_later(emu: Emulator, client: ExchangeClient) -> None:
    client.load_markets()
    emu.inject_fault("503", count=10, path="/api/v3/ticker/24hr")
    with pytest.raises(RetryLater):
        client.fetch_ticker(BTC)
    assert emu.request_count("GET", "/api/v3/ticker/24hr") == FAST_RETRIES.max_attempts


def test_dropped_answer_to_an_order_never_duplicates_it(emu: Emulator, client: ExchangeClient) -> None:
    client.load_markets()
    emu.inject_fault("drop", count=1, path="/api/v3/order", method="POST")
    result = client.create_order(buy("drop-1", 0.01))
    assert result.status is OrderStatus.CLOSED
    assert result.client_order_id == "drop-1"
    orders = emulator_orders(emu)
    assert len(orders) == 1
    assert orders[0]["clientOrderId"] == "drop-1"
    assert emu.request_count("POST", "/api/v3/order") == 1  # found by lookup, not sent again
    assert emu.request_count("GET", "/api/v3/order") == 1
    assert client.fetch_balance()["BTC"].total == pytest.approx(0.01)


def test_timed_out_order_is_not_duplicated_even_when_it_lands_late(
    emu: Emulator, sleeps: SleepRecorder
) -> None:
    with make_client(emu, sleeps, timeout_ms=500) as impatient:
        impatient.load_markets()
        # The venue sits on the order longer than the client waits, and executes it afterwards.
        emu.inject_fault("slow", count=1, path="/api/v3/order", method="POST", delay=1.2)
        result = impatient.create_order(buy("slow-1", 0.01))
        assert result.status is OrderStatus.CLOSED
        time.sleep(1.2)  # let the slow request finish on the emulator's side
    orders = emulator_orders(emu)
    assert [o["clientOrderId"] for o in orders] == ["slow-1"]
    assert emu.request_count("POST", "/api/v3/order") == 2  # the late twin was refused as a duplicate


def test_rest_fault_holds_an_order_on_the_book_until_it_is_canceled(
    emu: Emulator, client: ExchangeClient
) -> None:
    client.load_markets()
    emu.inject_fault("rest", count=1)  # no path: it waits for the next order placement
    client.fetch_ticker(BTC)
    assert emu.state()["faults"][0]["kind"] == "rest"
    held = client.create_order(buy("held-1", 0.01))
    assert (held.status, held.filled) == (OrderStatus.OPEN, 0.0)
    assert client.fetch_balance()["USDT"].used > 0
    emu.advance(50)  # bars trading through any price never match a held order
    assert [o.client_order_id for o in client.fetch_open_orders(BTC)] == ["held-1"]
    canceled = client.cancel_order(BTC, held.id)
    assert canceled.status is OrderStatus.CANCELED
    assert client.fetch_balance()["USDT"].free == 10_000.0
    assert client.create_order(buy("after", 0.01)).status is OrderStatus.CLOSED  # the fault is used up


def test_a_deadline_bounds_every_call_and_its_retries(emu: Emulator, sleeps: SleepRecorder) -> None:
    patient = RetryPolicy(max_attempts=10, base_delay=5.0, max_delay=5.0, max_elapsed=120.0)
    with make_client(emu, sleeps, retry_policy=patient) as bounded:
        bounded.load_markets()
        bounded.set_deadline(time.monotonic() - 1)
        with pytest.raises(RetryLater, match="deadline has passed"):
            bounded.fetch_ticker(BTC)
        assert emu.request_count("GET", "/api/v3/ticker/24hr") == 0  # not even asked
        # A retry that would start after the deadline is not made.
        emu.inject_fault("503", count=10, path="/api/v3/ticker/24hr")
        bounded.set_deadline(time.monotonic() + 2.0)
        with pytest.raises(RetryLater) as caught:
            bounded.fetch_ticker(BTC)
        assert any("deadline" in note for note in caught.value.__notes__)
        assert emu.request_count("GET", "/api/v3/ticker/24hr") == 1
        assert sleeps.sleeps == []
        emu.clear_faults()
        # An attempt's timeout is cut to the time left: a slow venue cannot hold the call past the deadline.
        emu.inject_fault("slow", count=1, path="/api/v3/ticker/24hr", delay=3.0)
        bounded.set_deadline(time.monotonic() + 0.8)
        started = time.monotonic()
        with pytest.raises(RetryLater):
            bounded.fetch_ticker(BTC)
        assert time.monotonic() - started < 1.5
        bounded.set_deadline(None)
        assert bounded.fetch_ticker(BTC).last > 0


# ---- secrets ---------------------------------------------------------------------------------------


def test_canary_secret_never_appears_in_errors_or_repr(sleeps: SleepRecorder) -> None:
    canary_key = "CANARY-KEY-456"
    canary = "CANARY-SECRET-123"
    messages: list[str] = []
    with Emulator(seed=1, api_key=canary_key, secret=canary) as venue:
        client = make_client(venue, sleeps, api_key=canary_key, secret=canary)
        messages.append(repr(client))
        messages.append(str(client))
        venue.inject_fault("429", count=10, path="/api/v3/account", retry_after=0)
        for action in (
            lambda: client.fetch_balance(),  # rate limited until it gives up
            lambda: client.create_order(buy("canary-big", 5.0)),  # insufficient funds
            lambda: client.fetch_ohlcv("NOPE/USDT"),  # bad symbol
        ):
            with pytest.raises(Exception) as caught:  # noqa: PT011 - any error: its text is what matters
                action()
            err = caught.value
            messages += [str(err), repr(err), *map(str, err.args), *getattr(err, "__notes__", [])]
            assert err.__cause__ is None
        with Emulator(seed=1, api_key=canary_key, secret="other-secret") as strict:
            wrong = make_client(strict, sleeps, api_key=canary_key, secret=canary)
            with pytest.raises(AuthenticationFailed) as auth:
                wrong.fetch_balance()
            messages += [str(auth.value), repr(auth.value), repr(wrong)]
    assert len(messages) > 8
    for message in messages:
        assert canary not in message
        assert canary_key not in message


# ---- the emulator itself -------------------------------------------------------------------------


def test_admin_endpoints(emu: Emulator) -> None:
    state = http("GET", emu.url + "/emulator/state")
    index = state["index"]
    assert set(state["markets"]) == {"BTC/USDT", "ETH/USDT", "PAXG/USDT", "EUR/USDT"}
    assert state["markets"]["BTC/USDT"]["regime"] in {"trend", "range", "shock"}
    moved = http("POST", emu.url + "/emulator/advance", {"bars": 10})
    assert moved["index"] == index + 10
    balances = http("POST", emu.url + "/emulator/balances", {"USDT": "5", "ETH": "2.5"})
    assert balances["ETH"]["free"] == "2.50000000"
    faults = http("POST", emu.url + "/emulator/faults", {"kind": "timeout", "count": 2, "delay": 0.1})
    assert faults["faults"][0]["kind"] == "slow"
    assert http("DELETE", emu.url + "/emulator/faults") == {"faults": []}
    http("POST", emu.url + "/emulator/reset", {})
    state = http("GET", emu.url + "/emulator/state")
    assert state["index"] == index
    assert state["balances"]["USDT"]["free"] == "10000.00000000"
    with pytest.raises(urllib.error.HTTPError) as caught:
        http("POST", emu.url + "/emulator/faults", {"kind": "meteor"})
    assert caught.value.code == 400


def test_unknown_endpoint_is_a_404(emu: Emulator) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        http_bytes(emu.url + "/sapi/v1/capital/config/getall")
    assert caught.value.code == 404


def test_wall_clock_mode_closes_bars_by_itself() -> None:
    with Emulator(seed=3, bar_seconds=0.05) as live:
        first = http("GET", live.url + "/api/v3/time")["serverTime"]
        time.sleep(0.3)
        later = http("GET", live.url + "/api/v3/time")["serverTime"]
    assert later - first >= 4 * 60_000


def test_emulator_refuses_a_non_loopback_host() -> None:
    with pytest.raises(ValueError, match="loopback"):
        Emulator(host="0.0.0.0")  # noqa: S104 - the point is that it is refused


def test_cli_prints_its_url_first() -> None:
    env = {"PYTHONPATH": str(REPO / "operator"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tradewarden.emulator", "--port", "0", "--seed", "42", "--bar-seconds", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert http("GET", url + "/api/v3/ping") == {}
        with Emulator(seed=42) as same_seed:
            query = "/api/v3/klines?symbol=PAXGUSDT&interval=15m&limit=10"
            assert http_bytes(url + query) == http_bytes(same_seed.url + query)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0
