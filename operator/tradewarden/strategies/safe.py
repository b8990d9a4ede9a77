"""The one door into strategy code: ``SafeStrategy`` wraps a ``Strategy`` instance.

Built by ``registry.build_strategy``; held and called by the runner's loop and by replay. Strategy code
may come from a plug-in, so it is not trusted: every call goes through this wrapper, which turns an
exception into a ``StrategyError`` naming the strategy and the symbol, and refuses an answer the runner
could act on wrongly (not a ``Decision``, an unknown action, a non-finite stop, an entry stop that is not
below the close). The checks are a handful of comparisons per bar, cheap next to the strategy itself.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from tradewarden.api.market import Action, Candle, Decision, Position
from tradewarden.strategies.errors import StrategyError

if TYPE_CHECKING:
    from tradewarden.strategies.base import Strategy
    from tradewarden.strategies.registry import StrategyInfo


class SafeStrategy:
    """A strategy instance for one symbol, behind exception and output checks.

    ``key`` and ``version`` come from the registry metadata, so journal lines and replay evidence can
    say which strategy code produced a decision.
    """

    __slots__ = ("_on_candle", "info", "key", "strategy", "symbol", "version")

    def __init__(self, info: StrategyInfo, strategy: Strategy[Any], symbol: str) -> None:
        self.info = info
        self.key = info.key
        self.version = info.version
        self.strategy = strategy
        self.symbol = symbol
        # Bound once: the attribute lookup would otherwise be paid on every bar.
        self._on_candle = strategy.on_candle

    def __repr__(self) -> str:
        return f"SafeStrategy(key={self.key!r}, version={self.version!r}, symbol={self.symbol!r})"

    @property
    def warmup_bars(self) -> int:
        try:
            value = self.strategy.warmup_bars
        except Exception as exc:
            raise self._error(exc) from exc
        if type(value) is not int or value < 0:
            raise StrategyError(self.key, self.symbol, f"warmup_bars must be an int >= 0, got {value!r}")
        return value

    def on_candle(self, candle: Candle, position: Position) -> Decision:
        """Feed one closed bar; return the strategy's checked decision or raise ``StrategyError``."""
        try:
            decision = self._on_candle(candle, position)
        except Exception as exc:
            raise self._error(exc) from exc
        if type(decision) is not Decision:
            raise StrategyError(
                self.key, self.symbol, f"on_candle returned {type(decision).__name__}, not a Decision"
            )
        if type(decision.action) is not Action:
            # A bare "enter_long" string would compare equal to the enum yet fail the runner's `is` checks.
            raise StrategyError(self.key, self.symbol, f"unknown action {decision.action!r}")
        stop = decision.stop_price
        if stop is not None:
            # The runner sizes an entry by (price - stop); anything else would size it wrongly or not at all.
            if type(stop) is not float and type(stop) is not int:
                raise StrategyError(self.key, self.symbol, f"stop_price is not a number: {stop!r}")
            if not math.isfinite(stop):
                raise StrategyError(self.key, self.symbol, f"stop_price is not finite: {stop!r}")
            if decision.action is Action.ENTER_LONG and stop >= candle.close:
                raise StrategyError(
                    self.key,
                    self.symbol,
                    f"entry stop_price {stop!r} is not below the close {candle.close!r}",
                )
        return decision

    def _error(self, exc: Exception) -> StrategyError:
        return StrategyError(self.key, self.symbol, f"{type(exc).__name__}: {exc}")
