"""Unit tests of ``tradewarden.strategies``: indicators, registry, plug-ins, the safe wrapper, built-ins.

Each built-in strategy is fed synthetic candle series built here (trending, ranging, session-timed)
and must enter where its rules say it must and stay out where they say it must not. No cluster, no
network, and no timing assertions: speed belongs in benchmarks.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field, model_validator

from tradewarden.api.market import FLAT, HOLD, Action, Candle, Decision, Position
from tradewarden.strategies import (
    ENTRY_POINT_GROUP,
    STRATEGY_API_VERSION,
    SafeStrategy,
    Strategy,
    StrategyError,
    StrategyInfo,
    StrategyParams,
    StrategyParamsError,
    UnknownStrategyError,
    build_strategy,
    get_strategy,
    list_strategies,
    registry,
    skipped_plugins,
    validate_params,
)
from tradewarden.strategies.builtin.momentum import MomentumStrategy
from tradewarden.strategies.indicators import (
    Atr,
    EfficiencyRatio,
    Ema,
    RollingMax,
    RollingMeanStd,
    RollingMin,
    Rsi,
    spread,
)

BUILTIN_KEYS = ("eur_usd_5m_safe", "gold", "momentum", "momentum_v2", "range", "sma_cross")

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z, a midnight, so bar i of a 1m day opens at minute i
MINUTE = 60_000
FIVE_MINUTES = 5 * MINUTE


# --- builders -------------------------------------------------------------------------------------


def make_candles(
    closes: Sequence[float], *, start: int = T0, step: int = MINUTE, wick: float = 0.1
) -> list[Candle]:
    """Bars that open at the previous close and stick out by ``wick`` on both sides."""
    out: list[Candle] = []
    prev = closes[0]
    for i, close in enumerate(closes):
        out.append(
            Candle(start + i * step, prev, max(prev, close) + wick, min(prev, close) - wick, close, 1.0)
        )
        prev = close
    return out


def run(strategy: SafeStrategy, candles: Iterable[Candle], position: Position = FLAT) -> list[Decision]:
    """Feed bars as the runner would, filling every entry and exit at the bar's close."""
    decisions: list[Decision] = []
    for candle in candles:
        decision = strategy.on_candle(candle, position)
        decisions.append(decision)
        if decision.action is Action.ENTER_LONG:
            position = Position(qty=1.0, entry_price=candle.close)
        elif decision.action is Action.EXIT_LONG:
            position = FLAT
    return decisions


def events(decisions: Sequence[Decision], action: Action) -> list[int]:
    return [i for i, d in enumerate(decisions) if d.action is action]


def minute_of_day(candle: Candle) -> int:
    return (candle.ts % 86_400_000) // MINUTE


def wiggle(i: int) -> float:
    """A small oscillation, period 40 bars, amplitude 0.3: never steep enough to beat a 0.1 wick."""
    return 0.3 * math.sin(i * 2.0 * math.pi / 40.0)


def random_walk(n: int, seed: int, *, step: int = MINUTE) -> list[Candle]:
    """A noisy, slowly drifting market in which every built-in finds something to do."""
    rng = random.Random(seed)
    price = 100.0
    out: list[Candle] = []
    for i in range(n):
        open_ = price
        price *= math.exp(rng.gauss(0.0, 0.002) + 0.0003 * math.sin(i / 500.0))
        high = max(open_, price) * (1.0 + abs(rng.gauss(0.0, 0.001)))
        low = min(open_, price) * (1.0 - abs(rng.gauss(0.0, 0.001)))
        out.append(Candle(T0 + i * step, open_, high, low, price, 1.0))
    return out


def flat_then_up() -> list[Candle]:
    """100 identical closes, then a steady rise of 0.5 per bar."""
    return make_candles([100.0] * 100 + [100.0 + 0.5 * i for i in range(1, 80)])


def flat_up_crash() -> list[Candle]:
    """Flat, a rise to 139.5, then a fall of 1 per bar."""
    closes = [100.0] * 100 + [100.0 + 0.5 * i for i in range(1, 80)] + [139.5 - i for i in range(1, 40)]
    return make_candles(closes)


def downtrend(n: int = 300) -> list[Candle]:
    return make_candles([200.0 - 0.5 * i + wiggle(i) for i in range(n)])


def downtrend_then_bounce() -> list[Candle]:
    """A long decline, a sharp 15-bar bounce that stays far below the 100-bar average, more decline."""
    closes = [200.0 - 0.5 * i + wiggle(i) for i in range(200)]
    closes += [100.0 + wiggle(200 + i) + 0.8 * i for i in range(15)]
    closes += [112.0 - 0.5 * i for i in range(30)]
    return make_candles(closes)


def uptrend_with_pullbacks() -> list[Candle]:
    """Up 1 per bar for 40 bars, down 1 per bar for 15, repeated: a trend with buyable pullbacks."""
    closes = [100.0]
    for i in range(300):
        closes.append(closes[-1] + (1.0 if i % 55 < 40 else -1.0))
    return make_candles(closes, wick=0.3)


def sine_range() -> list[Candle]:
    """A market going nowhere: a sine of amplitude 2 and period 50 around 100."""
    return make_candles([100.0 + 2.0 * math.sin(i * 2.0 * math.pi / 50.0) for i in range(400)], wick=0.4)


def gold_day(breakout_minute: int, *, rise: float = 0.1, rise_bars: int | None = 30) -> list[Candle]:
    """A day of 1m bars near 2000 that starts rising at ``breakout_minute`` by ``rise`` per bar.

    With ``rise_bars`` the rise stops after that many bars (a breakout that fizzles); with ``None`` it
    lasts all day. The wiggle alone never makes a new 20-bar high.
    """
    closes = []
    for i in range(24 * 60):
        climbed = max(0, i - breakout_minute)
        if rise_bars is not None:
            climbed = min(climbed, rise_bars)
        closes.append(2000.0 + wiggle(i) + rise * climbed)
    return make_candles(closes)


def eur_day(turn_bar: int, *, seed: int = 3) -> list[Candle]:
    """A day of 5m EUR/USDT bars: a noisy decline into ``turn_bar``, then a noisy rise."""
    rng = random.Random(seed)
    slope = 0.00005
    closes = [1.1 + slope * abs(i - turn_bar) + rng.gauss(0.0, slope * 1.5) for i in range(288)]
    return make_candles(closes, step=FIVE_MINUTES, wick=0.0001)


# --- test plug-ins and misbehaving strategies -----------------------------------------------------


class OneParam(StrategyParams):
    threshold: float = Field(1.0, ge=0.0, le=10.0, description="A number for the test strategies.")


class EveryTenthBar(Strategy[OneParam]):
    """A well-behaved plug-in strategy: enters on every 10th bar, exits on the next."""

    def __init__(self, params: OneParam, symbol: str) -> None:
        super().__init__(params, symbol)
        self._bars = 0

    @property
    def warmup_bars(self) -> int:
        return 0

    def on_candle(self, candle: Candle, position: Position) -> Decision:
        self._bars += 1
        if position.is_open:
            return Decision(Action.EXIT_LONG, "next bar")
        if self._bars % 10 == 0:
            return Decision(Action.ENTER_LONG, "tenth bar", candle.close - self.params.threshold)
        return HOLD


class Misbehaving(Strategy[OneParam]):
    """Does whatever the test sets in ``behaviour``: the SafeStrategy wrapper must catch all of it."""

    behaviour: Callable[[Candle], Any] = staticmethod(lambda candle: HOLD)

    @property
    def warmup_bars(self) -> int:
        return 0

    def on_candle(self, candle: Candle, position: Position) -> Decision:
        result: Decision = type(self).behaviour(candle)
        return result


class FailsToConstruct(EveryTenthBar):
    def __init__(self, params: OneParam, symbol: str) -> None:
        raise RuntimeError(f"cannot trade {symbol}")


def _info(key: str, cls: type[Strategy[Any]] = EveryTenthBar, **changes: Any) -> StrategyInfo:
    fields: dict[str, Any] = {
        "key": key,
        "name": f"Test {key}",
        "description": "A strategy defined by the tests.",
        "instruments": ("BTC/USDT",),
        "params_model": OneParam,
        "risk_level": "low",
        "session_preference": "any",
        "version": "0.1.0",
        "strategy_class": cls,
    }
    fields.update(changes)
    return StrategyInfo(**fields)


# Entry points point at these module attributes, as an installed plug-in's would.
PLUGIN_INFO = _info("test_plugin")
SHADOW_INFO = _info("momentum")
FAILING_INFO = _info("test_failing", FailsToConstruct)
NOT_AN_INFO = {"key": "test_dict"}


def _entry_point(name: str, attribute: str, module: str | None = None) -> EntryPoint:
    return EntryPoint(name=name, value=f"{module or __name__}:{attribute}", group=ENTRY_POINT_GROUP)


@pytest.fixture(autouse=True)
def _no_installed_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Isolate every test from plug-ins installed in the environment; restore the registry afterwards."""
    monkeypatch.setattr(registry, "entry_points", lambda *, group: [])
    monkeypatch.setattr(registry, "_loaded", None)


def use_plugins(monkeypatch: pytest.MonkeyPatch, *eps: EntryPoint) -> None:
    def fake_entry_points(*, group: str) -> list[EntryPoint]:
        assert group == "tradewarden.strategies"
        return list(eps)

    monkeypatch.setattr(registry, "entry_points", fake_entry_points)
    registry.reload_registry()


# --- indicators -----------------------------------------------------------------------------------


def _naive_ema(values: Sequence[float], period: int) -> list[float | None]:
    out: list[float | None] = [None] * (period - 1)
    value = sum(values[:period]) / period
    out.append(value)
    for x in values[period:]:
        value += 2.0 / (period + 1) * (x - value)
        out.append(value)
    return out


def test_indicators_match_their_definitions_computed_the_slow_way() -> None:
    rng = random.Random(11)
    values = [100.0 + rng.gauss(0.0, 1.0) + i * 0.01 for i in range(3000)]

    ema = Ema(10)
    assert [ema.update(x) for x in values] == pytest.approx(_naive_ema(values, 10), nan_ok=False)

    top, bottom, stats = RollingMax(25), RollingMin(25), RollingMeanStd(25)
    efficiency = EfficiencyRatio(30)
    for i, x in enumerate(values):
        assert top.update(x) == max(values[max(0, i - 24) : i + 1])
        assert bottom.update(x) == min(values[max(0, i - 24) : i + 1])
        mean = stats.update(x)
        er = efficiency.update(x)
        if i >= 24:
            window = values[i - 24 : i + 1]
            assert mean == pytest.approx(statistics.fmean(window), rel=1e-12)
            assert stats.std == pytest.approx(statistics.pstdev(window), rel=1e-6)
        if i >= 30:
            path = sum(abs(values[j] - values[j - 1]) for j in range(i - 29, i + 1))
            assert er == pytest.approx(abs(values[i] - values[i - 30]) / path, rel=1e-9)
        else:
            assert er is None


def test_wilder_indicators_are_bounded_and_ready_on_time() -> None:
    rsi, atr = Rsi(14), Atr(14)
    candles = random_walk(500, seed=2)
    rsi_values = [rsi.update(c.close) for c in candles]
    atr_values = [atr.update(c.high, c.low, c.close) for c in candles]
    assert rsi_values[:14] == [None] * 14  # 14 changes need 15 closes
    assert all(v is not None and 0.0 <= v <= 100.0 for v in rsi_values[14:])
    assert atr_values[:13] == [None] * 13
    assert all(v is not None and v > 0.0 for v in atr_values[13:])
    # Only gains: RSI pins at 100; no change at all: 50.
    up, still = Rsi(3), Rsi(3)
    assert [up.update(float(x)) for x in range(6)][-1] == 100.0
    assert [still.update(1.0) for _ in range(6)][-1] == 50.0


def test_spread_treats_rounding_noise_as_equal() -> None:
    assert spread(None, 1.0, 1.0) is None
    assert spread(1.1 + 4e-16, 1.1, 1.1) == 0.0
    assert spread(1.1 - 4e-16, 1.1, 1.1) == 0.0
    assert spread(1.10001, 1.1, 1.1) == pytest.approx(1e-5)  # one EUR/USD tick is a real difference
    assert spread(99.0, 100.0, 100.0) == -1.0


# --- registry and metadata ------------------------------------------------------------------------


def test_registry_lists_the_builtins_sorted_by_key() -> None:
    assert [info.key for info in list_strategies()] == list(BUILTIN_KEYS)


@pytest.mark.parametrize(
    ("key", "risk_level", "session", "instruments"),
    [
        ("momentum", "medium", "any", ("BTC/USDT", "ETH/USDT")),
        ("momentum_v2", "medium", "any", ("BTC/USDT", "ETH/USDT")),
        ("gold", "high", "london", ("PAXG/USDT", "XAUT/USDT")),
        ("range", "low", "any", ("BTC/USDT", "ETH/USDT")),
        ("eur_usd_5m_safe", "low", "ny", ("EUR/USDT",)),
    ],
)
def test_builtin_metadata(key: str, risk_level: str, session: str, instruments: tuple[str, ...]) -> None:
    info = get_strategy(key)
    assert info.key == key
    assert info.risk_level == risk_level
    assert info.session_preference == session
    assert info.instruments == instruments
    assert info.name
    assert "Intended timeframe" in info.description
    assert info.version == "1.0.0"
    assert info.strategy_class.api_version == STRATEGY_API_VERSION


@pytest.mark.parametrize("key", BUILTIN_KEYS)
def test_params_models_are_strict_described_and_bounded(key: str) -> None:
    info = get_strategy(key)
    model = info.params_model
    assert model.model_config.get("extra") == "forbid"
    for name, field in model.model_fields.items():
        assert field.description, f"{key}.{name} has no description"
        bounds = [m for m in field.metadata if type(m).__name__ in {"Ge", "Gt", "Le", "Lt"}]
        assert len(bounds) >= 2, f"{key}.{name} needs a lower and an upper bound"
    # tunables are the defaults, and validate as they are.
    assert info.tunables == model().model_dump(mode="json")
    assert validate_params(key, info.tunables) == model()
    assert validate_params(key, {}) == model()
    assert validate_params(key, None) == model()


def test_unknown_key_is_refused_with_the_known_keys() -> None:
    with pytest.raises(UnknownStrategyError) as caught:
        get_strategy("nope")
    assert str(caught.value) == (
        "Invalid strategy key: nope (known: eur_usd_5m_safe, gold, momentum, momentum_v2, range, sma_cross)"
    )
    # A ValueError, so that a pydantic validator that calls get_strategy reports it as a field error.
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, LookupError)
    with pytest.raises(UnknownStrategyError, match="Invalid strategy key: nope"):
        build_strategy("nope", {}, "BTC/USDT")
    with pytest.raises(UnknownStrategyError, match="Invalid strategy key: nope"):
        validate_params("nope", {})


@pytest.mark.parametrize(
    ("key", "params", "expected"),
    [
        ("momentum", {"fast": 1}, "params.fast: Input should be greater than or equal to 2 (got 1)"),
        ("momentum", {"atr_mult": 0}, "params.atr_mult: Input should be greater than 0"),
        (
            "momentum",
            {"fsat": 10},
            "params.fsat: unknown parameter (known: fast, slow, atr_period, atr_mult)",
        ),
        ("momentum", {"fast": "12"}, "params.fast: Input should be a valid integer (got a string, not shown)"),
        ("momentum", {"fast": True}, "params.fast: Input should be a valid integer (got True)"),
        ("gold", {"breakout_bars": 0}, "params.breakout_bars: Input should be greater than or equal to 2"),
        ("range", {"oversold": 150.0}, "params.oversold: Input should be less than 100"),
        ("eur_usd_5m_safe", {"max_hold_bars": -1}, "params.max_hold_bars: Input should be greater than"),
        ("momentum_v2", {"min_adx": "high"}, "params.min_adx: Input should be a valid number"),
    ],
)
def test_params_errors_name_the_field(key: str, params: dict[str, Any], expected: str) -> None:
    with pytest.raises(StrategyParamsError) as caught:
        validate_params(key, params)
    assert expected in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert caught.value.key == key


@pytest.mark.parametrize(
    ("key", "params", "message"),
    [
        ("momentum", {"fast": 30, "slow": 20}, "params.fast: must be < slow (got 30 >= 20)"),
        ("momentum", {"fast": 26}, "params.fast: must be < slow (got 26 >= 26)"),
        ("momentum_v2", {"slow": 150}, "params.slow: must be < trend (got 150 >= 100)"),
        ("momentum_v2", {"min_atr_pct": 6.0}, "params.min_atr_pct: must be < max_atr_pct (got 6.0 >= 5.0)"),
        ("range", {"oversold": 60.0}, "params.oversold: must be < exit_level (got 60.0 >= 55.0)"),
        ("eur_usd_5m_safe", {"rsi_min": 80.0}, "params.rsi_min: must be < rsi_max (got 80.0 >= 70.0)"),
        (
            "gold",
            {"session_start_hour": 16},
            "params.session_start_hour: must be < session_end_hour (got 16 >= 16)",
        ),
    ],
)
def test_cross_field_validation(key: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(StrategyParamsError) as caught:
        validate_params(key, params)
    assert str(caught.value) == message


def test_every_bad_field_is_named_at_once() -> None:
    with pytest.raises(StrategyParamsError) as caught:
        validate_params("momentum", {"fast": 1, "slow": 5000, "bogus": 1})
    paths = [path for path, _ in caught.value.problems]
    assert paths == ["params.fast", "params.slow", "params.bogus"]
    assert str(caught.value).count("; ") == 2


def test_params_must_be_a_mapping() -> None:
    with pytest.raises(StrategyParamsError, match=r"^params: "):
        validate_params("momentum", [1, 2])  # type: ignore[arg-type]


def test_build_strategy_applies_params() -> None:
    strategy = build_strategy("momentum", {"fast": 5, "slow": 10}, "ETH/USDT")
    assert isinstance(strategy, SafeStrategy)
    assert (strategy.key, strategy.symbol, strategy.version) == ("momentum", "ETH/USDT", "1.0.0")
    assert isinstance(strategy.strategy, MomentumStrategy)
    assert strategy.strategy.params.fast == 5
    assert strategy.warmup_bars == 15  # max(slow 10, atr_period 14) + 1


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"key": "Bad Key"}, "key: must match"),
        ({"risk_level": "extreme"}, "risk_level: must be one of low, medium, high"),
        ({"session_preference": "tokyo"}, "session_preference: must be one of"),
        ({"instruments": ("BTCUSDT",)}, "is not a ccxt unified symbol"),
        ({"instruments": ()}, "instruments: must name at least one symbol"),
        ({"version": "1.0"}, "version: must look like '1.0.0'"),
        ({"description": " "}, "description: must be a non-empty string"),
        ({"strategy_class": object}, "strategy_class: must be a subclass of Strategy"),
    ],
)
def test_strategy_info_refuses_bad_metadata(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        dataclasses.replace(PLUGIN_INFO, **changes)


def test_strategy_info_refuses_bad_params_models_and_old_api_versions() -> None:
    class Loose(BaseModel):
        x: int = Field(1, description="x")

    class Undescribed(StrategyParams):
        x: int = 1

    class Required(StrategyParams):
        x: int = Field(description="x")

    class BadDefaults(StrategyParams):
        a: int = Field(2, description="a")
        b: int = Field(1, description="b")

        @model_validator(mode="after")
        def _order(self) -> BadDefaults:
            if self.a >= self.b:
                raise ValueError("a: must be < b")
            return self

    class FromTheFuture(EveryTenthBar):
        api_version = STRATEGY_API_VERSION + 1

    with pytest.raises(ValueError, match="extra='forbid'"):
        _info("x", params_model=Loose)
    with pytest.raises(ValueError, match="field 'x' has no description"):
        _info("x", params_model=Undescribed)
    with pytest.raises(ValueError, match="field 'x' has no default"):
        _info("x", params_model=Required)
    with pytest.raises(ValueError, match="its defaults do not validate"):
        _info("x", params_model=BadDefaults)
    with pytest.raises(ValueError, match=f"API version {STRATEGY_API_VERSION + 1}"):
        _info("x", FromTheFuture)


def test_instruments_given_as_a_list_become_a_tuple() -> None:
    info = _info("x", instruments=["BTC/USDT", "BTC/USDT:USDT"])
    assert info.instruments == ("BTC/USDT", "BTC/USDT:USDT")
    assert hash(info)


# --- plug-ins through entry points ----------------------------------------------------------------


def test_test_module_is_importable_by_name() -> None:
    # The entry points below load attributes of this module by its import name.
    assert sys.modules[__name__].PLUGIN_INFO is PLUGIN_INFO


def test_plugin_from_an_entry_point_is_registered_and_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    use_plugins(monkeypatch, _entry_point("test_plugin", "PLUGIN_INFO"))

    assert get_strategy("test_plugin") is PLUGIN_INFO
    assert [info.key for info in list_strategies()] == sorted([*BUILTIN_KEYS, "test_plugin"])
    assert skipped_plugins() == {}
    with pytest.raises(UnknownStrategyError, match=r"\(known: .*momentum_v2, range, sma_cross, test_plugin\)"):
        get_strategy("nope")

    strategy = build_strategy("test_plugin", {"threshold": 2.0}, "BTC/USDT")
    decisions = run(strategy, make_candles([100.0 + i for i in range(30)]))
    assert events(decisions, Action.ENTER_LONG) == [9, 19, 29]
    assert decisions[9].stop_price == 107.0
    with pytest.raises(StrategyParamsError, match=r"params\.threshold"):
        build_strategy("test_plugin", {"threshold": 11.0}, "BTC/USDT")


def test_broken_plugins_are_skipped_and_builtins_survive(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A plug-in whose module raises on import, as a half-installed or buggy package would.
    (tmp_path / "tw_exploding_plugin.py").write_text("raise RuntimeError('plug-in bug at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tw_exploding_plugin", raising=False)

    caplog.set_level(logging.WARNING, logger="tradewarden.strategies.registry")
    use_plugins(
        monkeypatch,
        _entry_point("exploding", "INFO", module="tw_exploding_plugin"),
        _entry_point("missing", "INFO", module="tw_no_such_module_anywhere"),
        _entry_point("not_info", "NOT_AN_INFO"),
        _entry_point("renamed", "PLUGIN_INFO"),  # entry point name differs from the key
        _entry_point("test_plugin", "PLUGIN_INFO"),
    )

    assert [info.key for info in list_strategies()] == sorted([*BUILTIN_KEYS, "test_plugin"])
    skipped = skipped_plugins()
    assert set(skipped) == {"exploding", "missing", "not_info", "renamed"}
    assert skipped["exploding"] == "failed to load: RuntimeError: plug-in bug at import"
    assert skipped["missing"].startswith("failed to load: ModuleNotFoundError")
    assert skipped["not_info"] == "loaded a dict, not a StrategyInfo"
    assert "differs from the strategy key 'test_plugin'" in skipped["renamed"]
    assert any("exploding" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    # The built-ins still build and run.
    assert run(build_strategy("momentum", {}, "BTC/USDT"), flat_then_up())


def test_a_plugin_may_not_shadow_a_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    use_plugins(
        monkeypatch,
        _entry_point("momentum", "SHADOW_INFO"),  # same entry point name as a built-in
        _entry_point("sneaky", "SHADOW_INFO"),  # another name, but the StrategyInfo says "momentum"
    )
    assert get_strategy("momentum").strategy_class is MomentumStrategy
    assert skipped_plugins() == {
        "momentum": "may not shadow the built-in strategy 'momentum'",
        "sneaky": "may not shadow the built-in strategy 'momentum'",
    }
    assert [info.key for info in list_strategies()] == list(BUILTIN_KEYS)


def test_failing_entry_point_discovery_leaves_the_builtins(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_entry_points(*, group: str) -> list[EntryPoint]:
        raise OSError("unreadable site-packages")

    monkeypatch.setattr(registry, "entry_points", broken_entry_points)
    registry.reload_registry()
    assert [info.key for info in list_strategies()] == list(BUILTIN_KEYS)


def test_a_constructor_that_raises_becomes_a_strategy_error(monkeypatch: pytest.MonkeyPatch) -> None:
    use_plugins(monkeypatch, _entry_point("test_failing", "FAILING_INFO"))
    with pytest.raises(StrategyError) as caught:
        build_strategy("test_failing", {}, "SOL/USDT")
    assert caught.value.key == "test_failing"
    assert caught.value.symbol == "SOL/USDT"
    assert caught.value.detail == "RuntimeError: cannot trade SOL/USDT"


# --- the safe wrapper -----------------------------------------------------------------------------


def _raise(candle: Candle) -> Decision:
    raise ZeroDivisionError("float division by zero")


@pytest.mark.parametrize(
    ("behaviour", "detail"),
    [
        (_raise, "ZeroDivisionError: float division by zero"),
        (lambda c: None, "on_candle returned NoneType, not a Decision"),
        (lambda c: "enter_long", "on_candle returned str, not a Decision"),
        (lambda c: Decision("enter_long", "bare str", c.close - 1), "unknown action 'enter_long'"),  # type: ignore[arg-type]
        (lambda c: Decision(Action.ENTER_LONG, "nan", math.nan), "stop_price is not finite: nan"),
        (lambda c: Decision(Action.ENTER_LONG, "inf", -math.inf), "stop_price is not finite: -inf"),
        (lambda c: Decision(Action.HOLD, "inf", math.inf), "stop_price is not finite: inf"),
        (lambda c: Decision(Action.ENTER_LONG, "str", "99"), "stop_price is not a number"),  # type: ignore[arg-type]
        (lambda c: Decision(Action.ENTER_LONG, "above", c.close + 1), "is not below the close"),
        (lambda c: Decision(Action.ENTER_LONG, "equal", c.close), "is not below the close"),
    ],
)
def test_safe_strategy_turns_misbehaviour_into_strategy_error(
    monkeypatch: pytest.MonkeyPatch, behaviour: Callable[[Candle], Any], detail: str
) -> None:
    monkeypatch.setattr(Misbehaving, "behaviour", staticmethod(behaviour))
    info = _info("test_misbehaving", Misbehaving)
    safe = SafeStrategy(info, Misbehaving(OneParam(), "BTC/USDT"), "BTC/USDT")
    candle = make_candles([100.0])[0]
    with pytest.raises(StrategyError) as caught:
        safe.on_candle(candle, FLAT)
    error = caught.value
    assert (error.key, error.symbol) == ("test_misbehaving", "BTC/USDT")
    assert detail in error.detail
    assert str(error).startswith("strategy test_misbehaving on BTC/USDT: ")


def test_safe_strategy_keeps_the_original_exception_as_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Misbehaving, "behaviour", staticmethod(_raise))
    safe = SafeStrategy(_info("x", Misbehaving), Misbehaving(OneParam(), "BTC/USDT"), "BTC/USDT")
    with pytest.raises(StrategyError) as caught:
        safe.on_candle(make_candles([1.0])[0], FLAT)
    assert isinstance(caught.value.__cause__, ZeroDivisionError)


def test_safe_strategy_passes_good_decisions_through(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = Decision(Action.ENTER_LONG, "ok", 99)  # an int stop is a number too
    monkeypatch.setattr(Misbehaving, "behaviour", staticmethod(lambda c: entry))
    safe = SafeStrategy(_info("x", Misbehaving), Misbehaving(OneParam(), "BTC/USDT"), "BTC/USDT")
    assert safe.on_candle(make_candles([100.0])[0], FLAT) is entry
    assert safe.warmup_bars == 0


# --- built-in strategies: behaviour ----------------------------------------------------------------


def test_momentum_enters_on_the_cross_up_with_a_stop_below() -> None:
    candles = flat_then_up()
    decisions = run(build_strategy("momentum", {}, "BTC/USDT"), candles)
    entries = events(decisions, Action.ENTER_LONG)
    assert entries == [100]  # the first rising bar; the 100 identical closes before it never cross
    entry = decisions[100]
    assert entry.reason == "ema 12 crossed above ema 26"
    assert entry.stop_price is not None
    assert entry.stop_price < candles[100].close
    assert events(decisions, Action.EXIT_LONG) == []  # the rise never falls below the trailing stop


@pytest.mark.parametrize(
    "candles",
    [
        pytest.param(downtrend(), id="downtrend"),
        pytest.param(make_candles([100.0] * 300), id="constant"),
    ],
)
def test_momentum_stays_out_without_a_cross_up(candles: list[Candle]) -> None:
    decisions = run(build_strategy("momentum", {}, "BTC/USDT"), candles)
    assert all(d.action is Action.HOLD for d in decisions)


def test_momentum_trails_its_stop_and_exits_on_the_fall() -> None:
    candles = flat_up_crash()
    decisions = run(build_strategy("momentum", {}, "BTC/USDT"), candles)
    assert events(decisions, Action.ENTER_LONG) == [100]
    exits = events(decisions, Action.EXIT_LONG)
    assert len(exits) == 1
    exit_bar = exits[0]
    assert exit_bar > 179  # after the top at bar 179
    assert "below trailing stop" in decisions[exit_bar].reason
    # The stop trailed the rise: the exit is far above both the entry and the initial stop.
    entry_stop = decisions[100].stop_price
    assert entry_stop is not None
    assert candles[exit_bar].close > candles[100].close + 30 > entry_stop


def test_momentum_manages_a_position_it_did_not_open() -> None:
    # A restart, or a manual order: the position is there from the first bar, the decline must end it.
    strategy = build_strategy("momentum", {}, "BTC/USDT")
    warmup = strategy.warmup_bars
    decisions = run(strategy, downtrend(), Position(1.0, 200.0))
    # Its stop starts at entry_price - 2 ATR; the close is already below it on the first warm bar.
    assert events(decisions, Action.EXIT_LONG) == [warmup]
    assert "below trailing stop" in decisions[warmup].reason


def test_momentum_v2_buys_pullbacks_in_an_uptrend() -> None:
    candles = uptrend_with_pullbacks()
    decisions = run(build_strategy("momentum_v2", {}, "BTC/USDT"), candles)
    entries = events(decisions, Action.ENTER_LONG)
    assert entries
    for i in entries:
        assert i >= 100  # after the 100-bar trend EMA warmed up
        assert "close above ema 100" in decisions[i].reason
        stop = decisions[i].stop_price
        assert stop is not None
        assert stop < candles[i].close


def test_momentum_v2_refuses_the_bounce_that_plain_momentum_buys() -> None:
    candles = downtrend_then_bounce()
    plain = run(build_strategy("momentum", {}, "BTC/USDT"), candles)
    filtered = run(build_strategy("momentum_v2", {}, "BTC/USDT"), candles)
    assert events(plain, Action.ENTER_LONG)  # the bounce crosses the EMAs...
    assert events(filtered, Action.ENTER_LONG) == []  # ...but far below the long trend EMA


def test_momentum_v2_stays_out_of_a_downtrend() -> None:
    decisions = run(build_strategy("momentum_v2", {}, "BTC/USDT"), downtrend(400))
    assert all(d.action is Action.HOLD for d in decisions)


@pytest.mark.parametrize(
    ("breakout_hour", "params", "enters"),
    [
        (8, {}, True),  # inside the London session
        (3, {}, False),  # Asia: the breakout fizzles before London opens
        (17, {}, False),  # after London closed
        # Controls: the same breakouts are bought once the session covers them, so the session is
        # what kept the strategy out above.
        (3, {"session_start_hour": 2}, True),
        (17, {"session_end_hour": 24}, True),
    ],
)
def test_gold_breaks_out_only_during_the_session(
    breakout_hour: int, params: dict[str, Any], enters: bool
) -> None:
    candles = gold_day(breakout_hour * 60)
    decisions = run(build_strategy("gold", params, "PAXG/USDT"), candles)
    entries = events(decisions, Action.ENTER_LONG)
    if not enters:
        assert entries == []
        return
    assert len(entries) == 1
    i = entries[0]
    assert breakout_hour * 60 < minute_of_day(candles[i]) < breakout_hour * 60 + 20
    assert "20-bar high" in decisions[i].reason
    stop = decisions[i].stop_price
    assert stop is not None
    assert stop < candles[i].close


def test_gold_is_flat_when_london_closes() -> None:
    # The rise lasts all day, so new highs keep coming after 16:00: none of them may be bought.
    candles = gold_day(8 * 60, rise_bars=None)
    decisions = run(build_strategy("gold", {}, "PAXG/USDT"), candles)
    assert len(events(decisions, Action.ENTER_LONG)) == 1
    exits = events(decisions, Action.EXIT_LONG)
    assert len(exits) == 1
    assert minute_of_day(candles[exits[0]]) == 15 * 60 + 59  # the bar that closes at 16:00
    assert decisions[exits[0]].reason == "london session over"


def test_range_buys_dips_in_a_range_and_sells_the_recovery() -> None:
    candles = sine_range()
    decisions = run(build_strategy("range", {}, "BTC/USDT"), candles)
    entries = events(decisions, Action.ENTER_LONG)
    exits = events(decisions, Action.EXIT_LONG)
    assert len(entries) >= 5  # one per swing once warm
    assert len(exits) >= len(entries) - 1
    for i in entries:
        assert candles[i].close < 100.0  # bought below the middle of the range
        stop = decisions[i].stop_price
        assert stop is not None
        assert stop < candles[i].close
    assert all(decisions[i].reason.startswith("rsi ") and "above 55" in decisions[i].reason for i in exits)


def test_range_does_not_catch_a_falling_knife() -> None:
    decisions = run(build_strategy("range", {}, "BTC/USDT"), downtrend(400))
    assert all(d.action is Action.HOLD for d in decisions)


@pytest.mark.parametrize(
    ("turn_hour", "params", "enters"),
    [
        (13, {}, True),  # the turn, and the cross up that follows, fall in the 12:00-16:00 overlap
        (9, {}, False),  # the cross comes at 10:00; by noon the rise has no new cross to take
        (9, {"session_start_hour": 8}, True),  # control: a window that covers 10:00 takes it
    ],
)
def test_eur_usd_5m_safe_trades_only_the_overlap(
    turn_hour: int, params: dict[str, Any], enters: bool
) -> None:
    candles = eur_day(turn_hour * 12)
    decisions = run(build_strategy("eur_usd_5m_safe", params, "EUR/USDT"), candles)
    entries = events(decisions, Action.ENTER_LONG)
    if not enters:
        assert entries == []
        return
    assert len(entries) == 1
    i = entries[0]
    start_hour = params.get("session_start_hour", 12)
    assert start_hour * 60 <= minute_of_day(candles[i]) < 16 * 60
    assert "rsi" in decisions[i].reason
    stop = decisions[i].stop_price
    assert stop is not None
    assert stop < candles[i].close
    # Out again within the holding limit, and before the overlap ends.
    exits = [j for j in events(decisions, Action.EXIT_LONG) if j > i]
    assert exits
    assert exits[0] - i <= 24
    assert minute_of_day(candles[exits[0]]) <= 15 * 60 + 55


def test_eur_usd_5m_safe_holding_limit() -> None:
    candles = eur_day(13 * 12)
    decisions = run(build_strategy("eur_usd_5m_safe", {"max_hold_bars": 3}, "EUR/USDT"), candles)
    (i,) = events(decisions, Action.ENTER_LONG)
    assert decisions[i + 3] == Decision(Action.EXIT_LONG, "held 3 bars")


# --- all built-ins: warmup, determinism, stops, smoke ----------------------------------------------


@pytest.mark.parametrize("key", BUILTIN_KEYS)
def test_warmup_bars_are_hold(key: str) -> None:
    candles = random_walk(3000, seed=5)
    strategy = build_strategy(key, {}, "BTC/USDT")
    warmup = strategy.warmup_bars
    assert warmup > 0
    decisions = run(strategy, candles)
    assert all(d is HOLD for d in decisions[:warmup])
    # ...also with a position open from the start: nothing may be decided before the indicators are warm.
    held = run(build_strategy(key, {}, "BTC/USDT"), candles[:warmup], Position(1.0, 100.0))
    assert all(d is HOLD for d in held)
    assert any(d.action is not Action.HOLD for d in decisions[warmup:])


@pytest.mark.parametrize("key", BUILTIN_KEYS)
def test_same_bars_give_the_same_decisions(key: str) -> None:
    candles = random_walk(5000, seed=8)
    first = run(build_strategy(key, {}, "BTC/USDT"), candles)
    second = run(build_strategy(key, {}, "BTC/USDT"), candles)
    assert first == second
    # Bit for bit, not merely approximately equal.
    assert [d.stop_price.hex() for d in first if d.stop_price is not None] == [
        d.stop_price.hex() for d in second if d.stop_price is not None
    ]
    assert events(first, Action.ENTER_LONG)


@pytest.mark.parametrize("key", BUILTIN_KEYS)
def test_smoke_ten_thousand_bars(key: str) -> None:
    """Not timed: just ten thousand bars of a random walk through each strategy, behind the wrapper."""
    candles = random_walk(10_000, seed=13)
    decisions = run(build_strategy(key, {}, "BTC/USDT"), candles)
    assert len(decisions) == 10_000
    assert all(type(d) is Decision for d in decisions)
    entries = events(decisions, Action.ENTER_LONG)
    exits = events(decisions, Action.EXIT_LONG)
    assert entries
    # Entries and exits alternate, starting with an entry: the strategy never double-enters.
    sequence = [decisions[i].action for i in sorted(entries + exits)]
    assert sequence[::2] == [Action.ENTER_LONG] * len(sequence[::2])
    assert sequence[1::2] == [Action.EXIT_LONG] * len(sequence[1::2])
    for i in entries:
        stop = decisions[i].stop_price
        assert stop is not None
        assert stop < candles[i].close
