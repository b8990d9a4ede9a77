"""The exchange door's error mapping and its one retry decorator, without any network.

Table-driven: each ccxt class maps to exactly one of our classes, and its branch (retry later / needs a
human) decides whether ``retrying`` tries again. Sleep and clock are fakes, so no test waits.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import ccxt
import pytest

from tradewarden.exchange import errors
from tradewarden.exchange.errors import (
    CCXT_ERROR_TABLE,
    AccountSuspended,
    AuthenticationFailed,
    BadSymbol,
    DuplicateOrder,
    InsufficientFunds,
    InvalidOrder,
    NeedsHuman,
    OrderNotFound,
    PermissionDenied,
    RateLimited,
    RetryLater,
    VenueUnavailable,
    classify,
    parse_retry_after,
    scrub,
    translate,
)
from tradewarden.exchange.retry import RetryPolicy, call_with_retry, retrying

# ccxt rebinds the name ``ccxt.base`` to a list, so its errors module is reached by its dotted name.
CCXT_ERRORS = importlib.import_module("ccxt.base.errors")

MAPPING = [
    (ccxt.RateLimitExceeded, RateLimited),
    (ccxt.DDoSProtection, RateLimited),
    (ccxt.RequestTimeout, VenueUnavailable),
    (ccxt.ExchangeNotAvailable, VenueUnavailable),
    (ccxt.OnMaintenance, VenueUnavailable),
    (ccxt.InvalidNonce, VenueUnavailable),
    (ccxt.NetworkError, VenueUnavailable),
    (ccxt.BadResponse, VenueUnavailable),
    (ccxt.NullResponse, VenueUnavailable),
    (ccxt.AuthenticationError, AuthenticationFailed),
    (ccxt.PermissionDenied, PermissionDenied),
    (ccxt.AccountNotEnabled, PermissionDenied),
    (ccxt.AccountSuspended, AccountSuspended),
    (ccxt.InsufficientFunds, InsufficientFunds),
    (ccxt.BadSymbol, BadSymbol),
    (ccxt.InvalidOrder, InvalidOrder),
    (ccxt.OrderNotFound, OrderNotFound),
    (ccxt.DuplicateOrderId, DuplicateOrder),
    (ccxt.BadRequest, NeedsHuman),
    (ccxt.ArgumentsRequired, NeedsHuman),
    (ccxt.NotSupported, NeedsHuman),
    (ccxt.MarketClosed, NeedsHuman),
    (ccxt.ExchangeError, NeedsHuman),
]


@pytest.mark.parametrize(("ccxt_class", "ours"), MAPPING, ids=[c.__name__ for c, _ in MAPPING])
def test_ccxt_class_maps_to_our_class(ccxt_class: type[Exception], ours: type[errors.ExchangeError]) -> None:
    assert classify(ccxt_class("boom")) is ours
    translated = translate(ccxt_class("boom"), context="binance fetch_balance")
    assert type(translated) is ours
    assert translated.venue_error == ccxt_class.__name__
    assert str(translated) == f"binance fetch_balance: {ccxt_class.__name__}: boom"


def test_no_table_entry_is_shadowed_by_an_earlier_one() -> None:
    for i, (later, _) in enumerate(CCXT_ERROR_TABLE):
        for earlier, _ in CCXT_ERROR_TABLE[:i]:
            assert not issubclass(later, earlier), (
                f"{later.__name__} is unreachable behind {earlier.__name__}"
            )


def test_every_ccxt_error_class_has_a_branch() -> None:
    classes: list[type[Exception]] = [
        c
        for _, c in inspect.getmembers(CCXT_ERRORS, inspect.isclass)
        if issubclass(c, Exception) and issubclass(c, ccxt.BaseError)
    ]
    assert len(classes) > 30
    for cls in classes:
        ours = classify(cls("x"))
        assert ours is not None, cls
        transient = issubclass(cls, ccxt.NetworkError | ccxt.OperationFailed)
        assert issubclass(ours, RetryLater) == transient, f"{cls.__name__} -> {ours.__name__}"


def test_non_ccxt_exception_is_not_classified() -> None:
    assert classify(ValueError("x")) is None
    assert type(translate(ValueError("x"))) is NeedsHuman


def test_the_two_branches_are_disjoint() -> None:
    assert not issubclass(RetryLater, NeedsHuman)
    assert not issubclass(NeedsHuman, RetryLater)
    for ours in {o for _, o in CCXT_ERROR_TABLE}:
        assert issubclass(ours, RetryLater) != issubclass(ours, NeedsHuman)


def test_duplicate_marker_turns_an_invalid_order_into_duplicate_order() -> None:
    exc = ccxt.InvalidOrder('binance {"code":-2010,"msg":"Duplicate order sent."}')
    assert type(translate(exc, duplicate_markers=("Duplicate order sent",))) is DuplicateOrder
    assert type(translate(exc)) is InvalidOrder
    # Only order errors are reinterpreted: a network error mentioning the text stays transient.
    network = ccxt.NetworkError("Duplicate order sent")
    assert type(translate(network, duplicate_markers=("Duplicate order sent",))) is VenueUnavailable


def test_rate_limit_carries_retry_after() -> None:
    err = translate(ccxt.DDoSProtection("429"), retry_after=3.0)
    assert isinstance(err, RateLimited)
    assert err.retry_after == 3.0


def test_scrub_removes_secrets_and_signatures() -> None:
    text = "GET https://x/api?timestamp=1&signature=abcdef0123 key=MYKEY-123 secret MYSECRET-456 pw=hunter22"
    cleaned = scrub(text, ["MYKEY-123", "MYSECRET-456", "hunter22", None, ""])
    for leaked in ("abcdef0123", "MYKEY-123", "MYSECRET-456", "hunter22"):
        assert leaked not in cleaned
    assert "signature=***" in cleaned


def test_translate_scrubs_the_message() -> None:
    err = translate(ccxt.AuthenticationError("bad key CANARY-KEY in request"), secrets=["CANARY-KEY"])
    assert "CANARY-KEY" not in str(err)
    assert "CANARY-KEY" not in repr(err)
    assert err.__cause__ is None


def test_scrub_truncates_huge_messages() -> None:
    assert len(scrub("x" * 10_000)) <= errors.MAX_MESSAGE_CHARS + 3


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("3", 3.0),
        ("0.25", 0.25),
        ("-4", 0.0),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
        ("soon", None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    now = 1445412480.0  # 2015-10-21T07:28:00Z
    assert parse_retry_after(header, now=now) == expected


# ---- retry -------------------------------------------------------------------------------------------


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def flaky(errors_to_raise: Sequence[Exception], result: str = "ok") -> tuple[list[int], Callable[[], str]]:
    """A function that raises ``errors_to_raise`` one call at a time, then returns ``result``."""
    calls: list[int] = []
    failures = list(errors_to_raise)

    def fn() -> str:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return result

    return calls, fn


def test_backoff_grows_exponentially_then_succeeds() -> None:
    fake = FakeTime()
    calls, fn = flaky([VenueUnavailable("down")] * 3)
    policy = RetryPolicy(max_attempts=5, base_delay=0.5, multiplier=2.0)
    assert call_with_retry(fn, policy, sleep=fake.sleep, clock=fake.clock) == "ok"
    assert len(calls) == 4
    assert fake.sleeps == [0.5, 1.0, 2.0]


def test_backoff_is_capped_by_max_delay() -> None:
    fake = FakeTime()
    _, fn = flaky([VenueUnavailable("down")] * 5)
    policy = RetryPolicy(max_attempts=6, base_delay=1.0, multiplier=3.0, max_delay=5.0)
    call_with_retry(fn, policy, sleep=fake.sleep, clock=fake.clock)
    assert fake.sleeps == [1.0, 3.0, 5.0, 5.0, 5.0]


def test_retry_after_is_honoured_as_a_floor() -> None:
    fake = FakeTime()
    _, fn = flaky([RateLimited("429", retry_after=7.0), RateLimited("429", retry_after=0.1)])
    policy = RetryPolicy(base_delay=0.5)
    call_with_retry(fn, policy, sleep=fake.sleep, clock=fake.clock)
    assert fake.sleeps == [7.0, 1.0]


@pytest.mark.parametrize(
    "error",
    [
        NeedsHuman("no"),
        InsufficientFunds("poor"),
        AuthenticationFailed("who"),
        InvalidOrder("bad"),
        KeyError("bug"),
    ],
)
def test_needs_human_and_foreign_errors_are_never_retried(error: Exception) -> None:
    fake = FakeTime()
    calls, fn = flaky([error])
    with pytest.raises(type(error)):
        call_with_retry(fn, RetryPolicy(max_attempts=5), sleep=fake.sleep, clock=fake.clock)
    assert len(calls) == 1
    assert fake.sleeps == []


def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    fake = FakeTime()
    last = VenueUnavailable("still down")
    calls, fn = flaky([VenueUnavailable("down")] * 2 + [last] + [VenueUnavailable("never reached")])
    with pytest.raises(VenueUnavailable) as caught:
        call_with_retry(fn, RetryPolicy(max_attempts=3, base_delay=0.1), sleep=fake.sleep, clock=fake.clock)
    assert caught.value is last
    assert len(calls) == 3
    assert len(fake.sleeps) == 2
    assert any("gave up after 3 attempts" in note for note in caught.value.__notes__)


def test_gives_up_when_the_next_wait_would_pass_max_elapsed() -> None:
    fake = FakeTime()
    calls, fn = flaky([VenueUnavailable("down")] * 10)
    policy = RetryPolicy(max_attempts=10, base_delay=1.0, multiplier=2.0, max_delay=100.0, max_elapsed=10.0)
    with pytest.raises(VenueUnavailable) as caught:
        call_with_retry(fn, policy, sleep=fake.sleep, clock=fake.clock)
    # 1 + 2 + 4 = 7 s slept; the next wait (8 s) would end at 15 s > 10 s.
    assert fake.sleeps == [1.0, 2.0, 4.0]
    assert len(calls) == 4
    assert any("max_elapsed" in note for note in caught.value.__notes__)


def test_a_retry_after_beyond_max_elapsed_gives_up_at_once() -> None:
    fake = FakeTime()
    _, fn = flaky([RateLimited("429", retry_after=600.0)])
    with pytest.raises(RateLimited):
        call_with_retry(fn, RetryPolicy(max_elapsed=60.0), sleep=fake.sleep, clock=fake.clock)
    assert fake.sleeps == []


def delays_with(policy: RetryPolicy) -> list[float]:
    fake = FakeTime()
    _, fn = flaky([VenueUnavailable("down")] * 5)
    call_with_retry(fn, policy, sleep=fake.sleep, clock=fake.clock)
    return fake.sleeps


def test_seeded_jitter_is_deterministic_and_bounded() -> None:
    policy = RetryPolicy(max_attempts=6, base_delay=1.0, multiplier=2.0, jitter=0.25, jitter_seed=11)
    first = delays_with(policy)
    assert first == delays_with(policy)
    assert first != delays_with(RetryPolicy(max_attempts=6, base_delay=1.0, jitter=0.25, jitter_seed=12))
    for attempt, delay in enumerate(first, start=1):
        nominal = 2.0 ** (attempt - 1)
        assert nominal * 0.75 <= delay <= nominal * 1.25


def test_on_retry_hook_sees_each_failure() -> None:
    fake = FakeTime()
    seen: list[tuple[int, str, float]] = []
    _, fn = flaky([VenueUnavailable("a"), RateLimited("b", retry_after=2.0)])
    call_with_retry(
        fn,
        RetryPolicy(base_delay=0.5),
        sleep=fake.sleep,
        clock=fake.clock,
        on_retry=lambda n, err, d: seen.append((n, str(err), d)),
    )
    assert seen == [(1, "a", 0.5), (2, "b", 2.0)]


def test_decorator_on_a_function() -> None:
    fake = FakeTime()
    failures = [VenueUnavailable("down")]

    @retrying(RetryPolicy(base_delay=0.2), sleep=fake.sleep, clock=fake.clock)
    def add(a: int, b: int = 0) -> int:
        """Adds."""
        if failures:
            raise failures.pop()
        return a + b

    assert add(2, b=3) == 5
    assert add.__name__ == "add"
    assert add.__doc__ == "Adds."
    assert fake.sleeps == [0.2]


def test_decorator_on_a_coroutine_function() -> None:
    slept: list[float] = []
    failures: list[Exception] = [VenueUnavailable("down"), RateLimited("slow down", retry_after=1.5)]

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    @retrying(RetryPolicy(base_delay=0.2), sleep=fake_sleep)
    async def fetch(value: str) -> str:
        if failures:
            raise failures.pop(0)
        return value

    assert asyncio.run(fetch("done")) == "done"
    assert slept == [0.2, 1.5]


def test_decorator_on_a_coroutine_function_does_not_retry_needs_human() -> None:
    calls: list[int] = []

    async def fake_sleep(seconds: float) -> None:
        raise AssertionError("must not sleep")

    @retrying(RetryPolicy(), sleep=fake_sleep)
    async def place() -> None:
        calls.append(1)
        raise InsufficientFunds("poor")

    with pytest.raises(InsufficientFunds):
        asyncio.run(place())
    assert calls == [1]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"base_delay": -1.0},
        {"multiplier": 0.5},
        {"jitter": 1.0},
        {"max_elapsed": -1.0},
    ],
)
def test_policy_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        RetryPolicy(**kwargs)
