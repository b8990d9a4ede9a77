"""The one retry policy of the exchange door: exponential backoff for ``RetryLater``, nothing else.

``exchange.client`` wraps every ccxt call in ``retrying``; the runner may use it for its own calls
into the door. Only ``RetryLater`` is retried. ``NeedsHuman`` and any other exception go straight
to the caller on the first attempt, because repeating a wrong request cannot make it right.

The delay before retry ``n`` (1-based) is ``min(max_delay, base_delay * multiplier ** (n - 1))``, spread
by ``jitter`` (a fraction: 0.2 means +-20 %), and never shorter than the venue's ``retry_after``. The
loop gives up after ``max_attempts`` attempts, or earlier when the next sleep would carry the total
past ``max_elapsed`` seconds; it then re-raises the last error with a note saying so. Jitter spreads
clients apart after a shared outage; a ``jitter_seed`` makes its sequence reproducible in tests and
replays. Sleep and clock are injected so tests run without waiting.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast

from tradewarden.exchange.errors import RetryLater

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

OnRetry = Callable[[int, RetryLater, float], None]
"""Called before each sleep with the attempt that failed (1-based), its error and the chosen delay."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 30.0
    max_elapsed: float = 120.0
    jitter: float = 0.0
    jitter_seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 (got {self.max_attempts})")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_elapsed < 0:
            raise ValueError("base_delay, max_delay and max_elapsed must be >= 0")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be >= 1 (got {self.multiplier})")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1) (got {self.jitter})")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """The delay after failed attempt ``attempt`` (1-based), before any ``retry_after`` floor."""
        delay = min(self.max_delay, self.base_delay * self.multiplier ** (attempt - 1))
        if self.jitter:
            delay *= 1.0 + self.jitter * rng.uniform(-1.0, 1.0)
        return max(0.0, delay)

    def new_rng(self) -> random.Random:
        # Jitter only spreads retries apart; it is not security relevant.
        return random.Random(self.jitter_seed)  # noqa: S311


DEFAULT_POLICY = RetryPolicy()


class _Attempts:
    """The bookkeeping shared by the sync and async loops: when to stop and how long to wait."""

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float], on_retry: OnRetry | None) -> None:
        self.policy = policy
        self.clock = clock
        self.on_retry = on_retry
        self.rng = policy.new_rng()
        self.started = clock()
        self.attempt = 0

    def next_delay(self, err: RetryLater) -> float | None:
        """Seconds to sleep before the next attempt, or ``None`` to give up (the caller re-raises)."""
        policy = self.policy
        elapsed = self.clock() - self.started
        if self.attempt >= policy.max_attempts:
            err.add_note(f"gave up after {self.attempt} attempts in {elapsed:.1f}s")
            return None
        delay = policy.backoff(self.attempt, self.rng)
        if err.retry_after is not None:
            delay = max(delay, err.retry_after)
        if elapsed + delay > policy.max_elapsed:
            err.add_note(
                f"gave up after {self.attempt} attempts: waiting {delay:.1f}s more would exceed "
                f"max_elapsed={policy.max_elapsed:g}s"
            )
            return None
        if self.on_retry is not None:
            self.on_retry(self.attempt, err, delay)
        else:
            log.warning("attempt %d failed (%s); retrying in %.2fs", self.attempt, err, delay)
        return delay


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy = DEFAULT_POLICY,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_retry: OnRetry | None = None,
) -> T:
    """Call ``fn`` until it returns, raises something other than ``RetryLater``, or the policy gives up."""
    state = _Attempts(policy, clock, on_retry)
    while True:
        state.attempt += 1
        try:
            return fn()
        except RetryLater as err:
            delay = state.next_delay(err)
            if delay is None:
                raise
        sleep(delay)


async def acall_with_retry(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy = DEFAULT_POLICY,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_retry: OnRetry | None = None,
) -> T:
    """The coroutine twin of ``call_with_retry``."""
    state = _Attempts(policy, clock, on_retry)
    while True:
        state.attempt += 1
        try:
            return await fn()
        except RetryLater as err:
            delay = state.next_delay(err)
            if delay is None:
                raise
        await sleep(delay)


def retrying(
    policy: RetryPolicy = DEFAULT_POLICY,
    *,
    sleep: Callable[[float], Any] | None = None,
    clock: Callable[[], float] = time.monotonic,
    on_retry: OnRetry | None = None,
) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Decorator form: ``@retrying(RetryPolicy(max_attempts=3))`` on a sync or an ``async def`` function.

    For a coroutine function ``sleep`` must be awaitable (default ``asyncio.sleep``); for a plain
    function it is blocking (default ``time.sleep``).
    """

    def decorate(fn: Callable[P, T]) -> Callable[P, T]:
        if inspect.iscoroutinefunction(fn):
            async_fn = cast(Callable[P, Awaitable[Any]], fn)
            async_sleep = cast(Callable[[float], Awaitable[None]], sleep or asyncio.sleep)

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await acall_with_retry(
                    lambda: async_fn(*args, **kwargs),
                    policy,
                    sleep=async_sleep,
                    clock=clock,
                    on_retry=on_retry,
                )

            return cast(Callable[P, T], async_wrapper)

        sync_sleep = cast(Callable[[float], None], sleep or time.sleep)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return call_with_retry(
                lambda: fn(*args, **kwargs), policy, sleep=sync_sleep, clock=clock, on_retry=on_retry
            )

        return wrapper

    return decorate
