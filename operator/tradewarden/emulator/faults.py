"""Fault injection for the exchange emulator: the failures a real venue throws at a trading client.

``emulator.serving`` asks the plan, before answering each ``/api/`` request, whether that request should
fail; tests arm faults through ``Emulator.inject_fault`` or ``POST /emulator/faults``. Admin requests
under ``/emulator/`` are never faulted, so a test can always see and repair the emulator's state.

Kinds:

- ``429``: refuse with HTTP 429, Binance's -1003 body and a ``Retry-After`` header (seconds);
- ``503``: refuse with HTTP 503 and Binance's -1001 "internal error" body; nothing is executed;
- ``slow`` (alias ``timeout``): wait ``delay`` seconds, then execute and answer; a client with a shorter
  timeout gives up first, while the request still takes effect, as a slow venue does;
- ``stall``: execute at once, then wait ``delay`` seconds before answering: the order exists while the
  client is still waiting, which is where a process that dies mid-order leaves its journal;
- ``drop``: execute the request, then close the connection without an answer: the order exists but the
  client sees a connection error. This is the case that makes naive retries send duplicate orders;
- ``rest``: accept the next order placed (``POST /api/v3/order``), whatever its type, and leave it
  resting on the book unfilled, its funds locked, until it is canceled: a venue whose matching is
  paused, or that has nothing to match against at that moment, answers ``NEW`` and holds the order.
  Only order placement is affected: a ``rest`` fault waits for the next one, whatever else it names.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import asdict, dataclass, replace
from typing import Any

#: Where orders are placed: the only request a ``rest`` fault hits.
ORDER_PATH = "/api/v3/order"


class FaultKind(enum.StrEnum):
    HTTP_429 = "429"
    HTTP_503 = "503"
    SLOW = "slow"
    STALL = "stall"
    DROP = "drop"
    REST = "rest"

    @classmethod
    def parse(cls, value: str) -> FaultKind:
        normalized = str(value).strip().lower()
        if normalized == "timeout":
            return cls.SLOW
        try:
            return cls(normalized)
        except ValueError:
            choices = ", ".join(k.value for k in cls)
            raise ValueError(f"fault kind must be one of {choices} or timeout (got {value!r})") from None


@dataclass(frozen=True, slots=True)
class Fault:
    """One armed fault: it hits the next ``count`` requests matching ``method`` and ``path`` (if set)."""

    kind: FaultKind
    count: int = 1
    path: str | None = None
    method: str | None = None
    retry_after: float = 1.0
    delay: float = 2.0

    def matches(self, method: str, path: str) -> bool:
        if self.kind is FaultKind.REST and (method, path) != ("POST", ORDER_PATH):
            return False
        return (self.method is None or self.method.upper() == method) and (
            self.path is None or self.path == path
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = self.kind.value
        data["retryAfter"] = data.pop("retry_after")
        return data


class FaultPlan:
    """The armed faults, consumed first-armed first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        if fault.count < 1:
            raise ValueError(f"fault count must be >= 1 (got {fault.count})")
        if fault.retry_after < 0 or fault.delay < 0:
            raise ValueError("fault retryAfter and delay must be >= 0")
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, method: str, path: str) -> Fault | None:
        """The fault that hits this request, if any, using up one of its count."""
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.matches(method, path):
                    if fault.count <= 1:
                        del self._faults[i]
                    else:
                        self._faults[i] = replace(fault, count=fault.count - 1)
                    return fault
            return None

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.to_json() for f in self._faults]
