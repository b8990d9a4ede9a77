"""The built-in strategies, one module each; read by ``registry`` when it is first used.

Adding a built-in means a new module with an ``INFO = StrategyInfo(...)`` and a line here. Changing a
built-in's logic means bumping its ``version``, which invalidates replay evidence recorded with it.
"""

from __future__ import annotations

from tradewarden.strategies.builtin import (
    eur_usd_5m_safe,
    gold_breakout,
    momentum,
    momentum_v2,
    range_reversion,
    sma_cross,
)
from tradewarden.strategies.registry import StrategyInfo

BUILTIN_STRATEGIES: tuple[StrategyInfo, ...] = (
    momentum.INFO,
    momentum_v2.INFO,
    gold_breakout.INFO,
    range_reversion.INFO,
    eur_usd_5m_safe.INFO,
    sma_cross.INFO,
)

__all__ = ["BUILTIN_STRATEGIES"]
