"""A keyed work queue: one reconcile at a time per object, coalesced triggers, delayed re-checks.

Called by the kopf handlers in :mod:`tradewarden.controller.handlers` (``trigger``) and by the
periodic resync in :mod:`tradewarden.controller.main`. Why not let kopf call the reconcilers directly:

* A bot is reconciled on events of *other* objects too (its Lease, its ConfigMap, its StrategyConfig,
  every KillSwitch). kopf serialises handlers per watched object, not per bot, so two of those events
  could reconcile the same bot at once and race on its status. Here a key runs at most once at a time.
* Triggers that arrive while a key is running are coalesced into one more run, which reads the newest
  cache: a StrategyConfig edit fanning out to 100 bots, or a burst of Lease renewals, costs one
  reconcile per bot, not one per event.
* ``kopf.on.event`` handlers are never retried by kopf, and kopf's timers would add a finalizer to every
  object (kopf needs one to stop a timer on deletion). Retries after a ``kopf.TemporaryError`` and the
  "come back when this heartbeat goes stale" re-checks are therefore scheduled here, in memory, with no
  write to any object.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import kopf

from tradewarden.controller.kube import KubeError

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)

#: A reconcile returns the seconds after which it wants to run again, or None.
Reconcile = Callable[[K], Awaitable[float | None]]
#: Called after every run with (queue name, outcome, seconds): metrics.
Observer = Callable[[str, str, float], None]

#: Backoff after unexpected errors, in seconds; the last value repeats.
ERROR_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class WorkQueue(Generic[K]):
    """Serialises and coalesces the reconciles of one kind, keyed by object."""

    def __init__(self, name: str, reconcile: Reconcile[K], concurrency: asyncio.Semaphore,
                 observer: Observer | None = None,
                 on_error: Callable[[K, BaseException, float], Awaitable[None]] | None = None) -> None:
        self.name = name
        self._reconcile = reconcile
        #: Told of every failed reconcile (not of a conflict retried at once), to say so in status.
        self._on_error = on_error
        self._concurrency = concurrency
        self._observer = observer
        self._running: set[K] = set()
        self._dirty: set[K] = set()
        self._timers: dict[K, tuple[float, asyncio.TimerHandle]] = {}
        self._failures: dict[K, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def trigger(self, key: K) -> None:
        """Reconcile ``key`` soon. Safe to call any number of times: triggers coalesce."""
        if key in self._running:
            self._dirty.add(key)
            return
        self._running.add(key)
        task = asyncio.get_running_loop().create_task(self._run(key), name=f"reconcile {self.name} {key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def trigger_after(self, key: K, delay: float) -> None:
        """Reconcile ``key`` after ``delay`` seconds, unless an earlier re-check is already scheduled."""
        loop = asyncio.get_running_loop()
        due = loop.time() + max(delay, 0.0)
        current = self._timers.get(key)
        if current is not None:
            if current[0] <= due:
                return
            current[1].cancel()
        handle = loop.call_later(max(delay, 0.0), self._fire, key)
        self._timers[key] = (due, handle)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.trigger(key)

    @property
    def busy(self) -> bool:
        return bool(self._running)

    async def _run(self, key: K) -> None:
        try:
            while True:
                self._dirty.discard(key)
                requeue = await self._run_once(key)
                if key not in self._dirty:
                    break
        finally:
            self._running.discard(key)
        if requeue is not None:
            self.trigger_after(key, requeue)

    async def _report(self, key: K, exc: BaseException, requeue: float) -> None:
        if self._on_error is None:
            return
        try:
            await self._on_error(key, exc, requeue)
        except asyncio.CancelledError:
            raise
        except Exception:  # the report is best effort: the retry is what matters
            logger.exception("%s %s: could not report the failure in status", self.name, key)

    async def _run_once(self, key: K) -> float | None:
        started = time.monotonic()
        outcome = "success"
        requeue: float | None = None
        async with self._concurrency:
            try:
                requeue = await self._reconcile(key)
                self._failures.pop(key, None)
            except kopf.TemporaryError as exc:
                outcome = "retry"
                requeue = float(exc.delay or 1.0)
                logger.info("%s %s: %s (again in %.0f s)", self.name, key, exc, requeue)
            except asyncio.CancelledError:
                raise
            except KubeError as exc:
                # The API server refused for a stated reason (a namespace being deleted, RBAC,
                # admission): the message says it all, a traceback would only bury it.
                outcome = "error"
                failures = self._failures.get(key, 0)
                self._failures[key] = failures + 1
                requeue = ERROR_BACKOFF[min(failures, len(ERROR_BACKOFF) - 1)]
                logger.warning("%s %s: %s (again in %.0f s)", self.name, key, exc, requeue)
                await self._report(key, exc, requeue)
            except Exception as exc:
                outcome = "error"
                failures = self._failures.get(key, 0)
                self._failures[key] = failures + 1
                requeue = ERROR_BACKOFF[min(failures, len(ERROR_BACKOFF) - 1)]
                logger.exception("%s %s: reconcile failed (again in %.0f s)", self.name, key, requeue)
                await self._report(key, exc, requeue)
        if self._observer is not None:
            self._observer(self.name, outcome, time.monotonic() - started)
        return requeue
