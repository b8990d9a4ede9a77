"""The versioned strategy interface every strategy implements, built-in or plug-in.

The runner and replay never call a ``Strategy`` directly: the registry builds one inside a
``SafeStrategy`` (see ``safe.py``), which is what they hold. Strategy authors subclass ``Strategy`` and
``StrategyParams`` and describe the pair with a ``StrategyInfo`` (see ``registry.py``).

The contract (``STRATEGY_API_VERSION = 1``):

* One instance per (symbol, params): ``Strategy(params, symbol)``. Changing params means a new instance,
  warmed up again; nothing is mutated in place.
* The instance is fed closed bars in time order, one at a time, with ``on_candle(candle, position)``,
  and answers every bar with a ``Decision``. ``position`` is the runner's (or replay's) view of the
  symbol's position *before* acting on this bar's decision; the strategy must not assume that an entry it
  asked for was filled.
* Indicators are incremental: each bar costs O(1), never a pass over the history, because replay runs a
  year of 1-minute bars per strategy per evaluation.
* The first ``warmup_bars`` bars always get a HOLD.
* Deterministic: no wall clock, no randomness, no I/O. The same bars and positions give the same
  decisions bit for bit; replay evidence depends on it.
"""

from __future__ import annotations

import abc
from typing import ClassVar, Generic, Self, TypeVar

from pydantic import BaseModel, ConfigDict, model_validator

from tradewarden.api.market import Candle, Decision, Position

STRATEGY_API_VERSION = 1
"""Bumped when the ``Strategy`` contract changes incompatibly; plug-ins built for another version are
refused by the registry rather than called with the wrong arguments."""


class StrategyParams(BaseModel):
    """Base of the built-in params models: unknown keys are refused, values are not coerced, frozen.

    Strict mode matters for configs written by people: a lax model would accept ``true`` as ``1`` or
    ``"12"`` as ``12`` and hide a typo. Plug-ins need not subclass this, but the registry checks that
    their model forbids extra keys and describes every field.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    #: Pairs of fields that must be strictly increasing, checked in order, e.g. ``(("fast", "slow"),)``.
    #: The first violated pair is refused with a message naming both fields and their values.
    ordered: ClassVar[tuple[tuple[str, str], ...]] = ()

    @model_validator(mode="after")
    def _check_ordered(self) -> Self:
        for low, high in self.ordered:
            a, b = getattr(self, low), getattr(self, high)
            if a >= b:
                raise ValueError(f"{low}: must be < {high} (got {a} >= {b})")
        return self


P = TypeVar("P", bound=BaseModel)


class Strategy(abc.ABC, Generic[P]):
    """An incremental, stateful, deterministic trading strategy for one symbol.

    Subclasses implement ``warmup_bars`` and ``on_candle``; they call ``super().__init__`` first.
    """

    api_version: ClassVar[int] = STRATEGY_API_VERSION

    def __init__(self, params: P, symbol: str) -> None:
        self.params = params
        self.symbol = symbol

    @property
    @abc.abstractmethod
    def warmup_bars(self) -> int:
        """How many bars are answered with HOLD before the first decision that may not be a HOLD."""

    @abc.abstractmethod
    def on_candle(self, candle: Candle, position: Position) -> Decision:
        """Update the indicators with one closed bar and decide what to do with ``symbol``."""
