"""The strategy registry: which strategies exist, what they are, and how to build one.

Called by the controller (validating a StrategyConfig's ``strategy`` and ``params``, and copying the
metadata into its status), by the runner (building one ``SafeStrategy`` per symbol) and by replay (the
same, plus ``version``, which replay evidence is bound to).

The registry holds the five built-in strategies and any third-party strategy installed as a Python
distribution that declares an entry point in the group ``tradewarden.strategies``::

    [project.entry-points."tradewarden.strategies"]
    my_strategy = "my_package.my_module:INFO"     # INFO is a StrategyInfo whose key is "my_strategy"

Plug-ins are loaded once, lazily, on the first registry call. A plug-in that fails to load, loads
something that is not a valid ``StrategyInfo``, or tries to reuse a built-in key is skipped with a
warning (see ``skipped_plugins``): a broken package must never take the built-ins down with it, and a
plug-in must never silently replace a strategy that a bot was promoted with.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from tradewarden.api.conditions import describe_error, without_value
from tradewarden.strategies.base import STRATEGY_API_VERSION, Strategy
from tradewarden.strategies.errors import (
    StrategyError,
    StrategyParamsError,
    UnknownStrategyError,
)
from tradewarden.strategies.safe import SafeStrategy

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "tradewarden.strategies"

RiskLevel = Literal["low", "medium", "high"]
SessionPreference = Literal["any", "london", "ny", "asia"]

RISK_LEVELS: tuple[str, ...] = ("low", "medium", "high")
SESSION_PREFERENCES: tuple[str, ...] = ("any", "london", "ny", "asia")

_KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")
# ccxt's unified spot symbol, BASE/QUOTE; derivatives (BASE/QUOTE:SETTLE) are not traded by the built-ins.
_SYMBOL_RE = re.compile(r"^[A-Z0-9]{1,20}/[A-Z0-9]{1,20}(:[A-Z0-9]{1,20})?$")


@dataclass(frozen=True)
class StrategyInfo:
    """Everything the platform knows about one strategy, and the class that implements it.

    ``version`` is the version of the strategy's *logic*: bump it whenever a change could alter a single
    decision, because replay evidence is bound to it and must go stale. The intended timeframe is stated
    in ``description``; strategies decide on whatever bars they are given.

    The constructor checks the whole record, so that a mistake in a plug-in is found when it is loaded
    (and skipped), not when a bot first calls it.
    """

    key: str
    name: str
    description: str
    instruments: tuple[str, ...]
    params_model: type[BaseModel]
    risk_level: RiskLevel
    session_preference: SessionPreference
    version: str
    strategy_class: type[Strategy[Any]]

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not _KEY_RE.match(self.key):
            raise ValueError(f"key: must match {_KEY_RE.pattern} (got {self.key!r})")
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"{self.key}: name: must be a non-empty string")
        if not isinstance(self.description, str) or not self.description.strip():
            raise ValueError(f"{self.key}: description: must be a non-empty string")
        # A list is accepted for convenience and frozen into a tuple, so the record stays hashable.
        instruments = tuple(self.instruments)
        object.__setattr__(self, "instruments", instruments)
        if not instruments:
            raise ValueError(f"{self.key}: instruments: must name at least one symbol")
        for symbol in instruments:
            if not isinstance(symbol, str) or not _SYMBOL_RE.match(symbol):
                raise ValueError(
                    f"{self.key}: instruments: {symbol!r} is not a ccxt unified symbol like 'BTC/USDT'"
                )
        if self.risk_level not in RISK_LEVELS:
            raise ValueError(
                f"{self.key}: risk_level: must be one of {', '.join(RISK_LEVELS)} (got {self.risk_level!r})"
            )
        if self.session_preference not in SESSION_PREFERENCES:
            raise ValueError(
                f"{self.key}: session_preference: must be one of {', '.join(SESSION_PREFERENCES)} "
                f"(got {self.session_preference!r})"
            )
        if not isinstance(self.version, str) or not _VERSION_RE.match(self.version):
            raise ValueError(f"{self.key}: version: must look like '1.0.0' (got {self.version!r})")
        self._check_params_model()
        self._check_strategy_class()

    def _check_params_model(self) -> None:
        model = self.params_model
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise ValueError(f"{self.key}: params_model: must be a pydantic BaseModel subclass")
        if model.model_config.get("extra") != "forbid":
            raise ValueError(f"{self.key}: params_model: must set extra='forbid' so typos are refused")
        for field_name, field in model.model_fields.items():
            if not field.description:
                raise ValueError(f"{self.key}: params_model: field {field_name!r} has no description")
            if field.is_required():
                raise ValueError(
                    f"{self.key}: params_model: field {field_name!r} has no default; "
                    "every tunable needs one so that empty params are valid"
                )
        try:
            model()
        except ValidationError as exc:
            raise ValueError(f"{self.key}: params_model: its defaults do not validate: {exc}") from exc

    def _check_strategy_class(self) -> None:
        cls = self.strategy_class
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise ValueError(f"{self.key}: strategy_class: must be a subclass of Strategy")
        api_version = getattr(cls, "api_version", None)
        if api_version != STRATEGY_API_VERSION:
            raise ValueError(
                f"{self.key}: strategy_class: written for strategy API version {api_version}, "
                f"this tradewarden speaks version {STRATEGY_API_VERSION}"
            )

    @property
    def tunables(self) -> dict[str, Any]:
        """The default params, as a StrategyConfig would spell them (JSON types, field names)."""
        return self.params_model().model_dump(mode="json")


class _Registry:
    """The loaded strategies. Built once under a lock; read without one afterwards."""

    def __init__(self, strategies: dict[str, StrategyInfo], skipped: dict[str, str]) -> None:
        self.strategies = strategies
        self.skipped = skipped


_lock = threading.Lock()
_loaded: _Registry | None = None


def _builtin_strategies() -> tuple[StrategyInfo, ...]:
    # Imported here, not at the top: the built-in modules import StrategyInfo from this module.
    from tradewarden.strategies.builtin import BUILTIN_STRATEGIES

    return BUILTIN_STRATEGIES


def _plugin_entry_points() -> list[EntryPoint]:
    # `entry_points` is looked up on this module at call time, which is what lets tests substitute it.
    found: Iterable[EntryPoint] = entry_points(group=ENTRY_POINT_GROUP)
    # Sorted so that, should two plug-ins claim one key, the same one wins on every machine.
    return sorted(found, key=lambda ep: (ep.name, ep.value))


def _load() -> _Registry:
    strategies: dict[str, StrategyInfo] = {}
    for info in _builtin_strategies():
        strategies[info.key] = info
    builtin_keys = frozenset(strategies)
    skipped: dict[str, str] = {}

    try:
        eps = _plugin_entry_points()
    except Exception as exc:
        logger.warning("could not list strategy plug-ins (%s); using the built-in strategies only", exc)
        eps = []

    for ep in eps:
        try:
            info = _load_plugin(ep, strategies, builtin_keys)
        except _PluginRefused as refused:
            skipped[ep.name] = refused.reason
            logger.warning("skipping strategy plug-in %s = %s: %s", ep.name, ep.value, refused.reason)
            continue
        strategies[info.key] = info
        logger.info("loaded strategy plug-in %s (version %s)", info.key, info.version)
    return _Registry(dict(sorted(strategies.items())), skipped)


class _PluginRefused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _load_plugin(
    ep: EntryPoint, strategies: Mapping[str, StrategyInfo], builtin_keys: frozenset[str]
) -> StrategyInfo:
    """Load and vet one plug-in; ``_PluginRefused`` says why it cannot be registered."""
    if ep.name in builtin_keys:
        # Checked before loading: a plug-in that shadows a built-in does not even get to run its import.
        raise _PluginRefused(f"may not shadow the built-in strategy {ep.name!r}")
    try:
        info = ep.load()
    except Exception as exc:
        # Any exception: a plug-in's import can fail in any way, including StrategyInfo's own checks.
        raise _PluginRefused(f"failed to load: {type(exc).__name__}: {exc}") from exc
    if not isinstance(info, StrategyInfo):
        raise _PluginRefused(f"loaded a {type(info).__name__}, not a StrategyInfo")
    if info.key in builtin_keys:
        raise _PluginRefused(f"may not shadow the built-in strategy {info.key!r}")
    if info.key != ep.name:
        raise _PluginRefused(f"entry point name {ep.name!r} differs from the strategy key {info.key!r}")
    if info.key in strategies:
        raise _PluginRefused(f"strategy key {info.key!r} is already provided by another plug-in")
    return info


def _registry() -> _Registry:
    loaded = _loaded
    if loaded is not None:
        return loaded
    return _reload()


def reload_registry() -> None:
    """Forget the loaded plug-ins and discover them again (tests; a long-lived process after an install)."""
    _reload()


def _reload() -> _Registry:
    global _loaded
    with _lock:
        loaded = _load()
        _loaded = loaded
        return loaded


def skipped_plugins() -> dict[str, str]:
    """Plug-ins that were refused, by entry point name, with the reason (for logs and status)."""
    return dict(_registry().skipped)


def list_strategies() -> list[StrategyInfo]:
    """Every registered strategy, built-ins and plug-ins, sorted by key."""
    return list(_registry().strategies.values())


def get_strategy(key: str) -> StrategyInfo:
    """The metadata of one strategy; ``UnknownStrategyError`` ("Invalid strategy key: X (known: ...)")."""
    strategies = _registry().strategies
    try:
        return strategies[key]
    except (KeyError, TypeError):
        raise UnknownStrategyError(str(key), strategies) from None


def validate_params(key: str, params: Mapping[str, Any] | None) -> BaseModel:
    """Validate ``params`` against the strategy's params model; missing fields take their defaults.

    Raises ``UnknownStrategyError`` for an unknown key and ``StrategyParamsError`` naming every bad field
    as ``params.<field>: <problem>``.
    """
    info = get_strategy(key)
    model = info.params_model
    try:
        return model.model_validate({} if params is None else params)
    except ValidationError as exc:
        raise StrategyParamsError(key, _describe_errors(exc, model)) from None


def build_strategy(key: str, params: Mapping[str, Any] | None, symbol: str) -> SafeStrategy:
    """Validate ``params`` and build the strategy for ``symbol`` behind a ``SafeStrategy``.

    A constructor that raises becomes a ``StrategyError``, as any other call into strategy code.
    """
    info = get_strategy(key)
    validated = validate_params(key, params)
    try:
        instance = info.strategy_class(validated, symbol)
    except Exception as exc:
        raise StrategyError(key, symbol, f"{type(exc).__name__}: {exc}") from exc
    return SafeStrategy(info, instance, symbol)


_FIELD_PREFIX_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*): (.*)$", re.DOTALL)


def _describe_errors(exc: ValidationError, model: type[BaseModel]) -> list[tuple[str, str]]:
    """Turn pydantic's errors into ``("params.<field>", problem)`` pairs a person can act on.

    Through :func:`tradewarden.api.conditions.describe_error`: these problems end up in status conditions
    and Events, so a refused value is quoted only when it cannot be a secret (a number, a boolean, a short
    lowercase word), and an unknown key is named, never its value.
    """
    problems: list[tuple[str, str]] = []
    for err in exc.errors():
        path, msg = describe_error(err, "params")
        if not err["loc"]:
            # A model validator has no location; ours start their message with the field it is about
            # ("fast: must be < slow (got 30 >= 20)"), which names the field for the user. Its input is
            # the whole params document: take out any string of it the validator may have quoted.
            inputs = err.get("input")
            if isinstance(inputs, Mapping):
                for value in inputs.values():
                    msg = without_value(msg, value)
            match = _FIELD_PREFIX_RE.match(msg)
            if match and match.group(1) in model.model_fields:
                problems.append((f"params.{match.group(1)}", match.group(2)))
            else:
                problems.append(("params", msg))
            continue
        if err["type"] == "extra_forbidden":
            known = ", ".join(model.model_fields) or "none"
            problems.append((path, f"unknown parameter (known: {known})"))
            continue
        problems.append((path, msg))
    return problems
