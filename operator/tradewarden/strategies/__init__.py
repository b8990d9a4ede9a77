"""Strategies: the versioned strategy interface, the registry with metadata, the built-in strategies.

Used by the controller (validating StrategyConfigs and publishing strategy metadata), the runner
(building and feeding one ``SafeStrategy`` per symbol) and replay (re-running the same code on recorded
bars). This package is pure: it imports only the standard library, pydantic and ``tradewarden.api`` —
no cluster, no exchange, no clock (an import-linter contract in pyproject.toml keeps it so).

    info = get_strategy("momentum")                 # metadata; UnknownStrategyError if unknown
    params = validate_params("momentum", {"fast": 10})   # StrategyParamsError names bad fields
    strategy = build_strategy("momentum", {"fast": 10}, "BTC/USDT")
    decision = strategy.on_candle(candle, position)     # StrategyError if the strategy misbehaves
"""

from __future__ import annotations

from tradewarden.strategies.base import STRATEGY_API_VERSION, Strategy, StrategyParams
from tradewarden.strategies.errors import (
    StrategyError,
    StrategyLayerError,
    StrategyParamsError,
    UnknownStrategyError,
)
from tradewarden.strategies.registry import (
    ENTRY_POINT_GROUP,
    RISK_LEVELS,
    SESSION_PREFERENCES,
    RiskLevel,
    SessionPreference,
    StrategyInfo,
    build_strategy,
    get_strategy,
    list_strategies,
    reload_registry,
    skipped_plugins,
    validate_params,
)
from tradewarden.strategies.safe import SafeStrategy

__all__ = [
    "ENTRY_POINT_GROUP",
    "RISK_LEVELS",
    "SESSION_PREFERENCES",
    "STRATEGY_API_VERSION",
    "RiskLevel",
    "SafeStrategy",
    "SessionPreference",
    "Strategy",
    "StrategyError",
    "StrategyInfo",
    "StrategyLayerError",
    "StrategyParams",
    "StrategyParamsError",
    "UnknownStrategyError",
    "build_strategy",
    "get_strategy",
    "list_strategies",
    "reload_registry",
    "skipped_plugins",
    "validate_params",
]
