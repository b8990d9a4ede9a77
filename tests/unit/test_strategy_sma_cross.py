"""Unit tests of the ``sma_cross`` built-in and its ``Sma`` indicator.

The strategy is checked against a naive reference written here (averages recomputed from slices on
every bar), on synthetic series with known crossovers and on a long random walk. The generic checks
every built-in gets (warm-up, determinism, smoke, stops below the close) live in ``test_strategies.py``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import pytest

from tradewarden.api.market import FLAT, HOLD, Action, Candle, Decision, Position
from tradewarden.strategies import StrategyParamsError, build_strategy, get_strategy, validate_params
from tradewarden.strategies.builtin.sma_cross import SmaCrossParams
from tradewarden.strategies.indicators import Atr, Sma

T0 = 1_704_067_200_000
MINUTE = 60_000


def candles_from(closes: Sequence[float], wick: float = 0.1) -> list[Candle]:
    out, prev = [], closes[0]
    for i, close in enumerate(closes):
        out.append(Candle(T0 + i * MINUTE, prev, max(prev, close) + wick, min(prev, close) - wick, close, 1.0))
        prev = close
    return out


def run(candles: Sequence[Candle], position: Position = FLAT, **params: object) -> list[Decision]:
    """Feed bars as the runner would, filling every entry and exit at the bar's close."""
    strategy = build_strategy("sma_cross", params, "BTC/USDT")
    decisions = []
    for candle in candles:
        decision = strategy.on_candle(candle, position)
        decisions.append(decision)
        if decision.action is Action.ENTER_LONG:
            position = Position(1.0, candle.close)
        elif decision.action is Action.EXIT_LONG:
            position = FLAT
    return decisions


def reference(candles: Sequence[Candle], fast: int = 10, slow: int = 30) -> list[tuple[int, Action]]:
    """Crossover events from averages recomputed from scratch on every bar."""
    closes = [c.close for c in candles]
    warmup = max(slow, 14) + 1
    events: list[tuple[int, Action]] = []
    long = False
    prev = None
    for i in range(len(closes)):
        diff = None
        if i + 1 >= slow:
            diff = sum(closes[i + 1 - fast : i + 1]) / fast - sum(closes[i + 1 - slow : i + 1]) / slow
        if i + 1 > warmup and diff is not None and prev is not None:
            if long and diff < 0.0 <= prev:
                events.append((i, Action.EXIT_LONG))
                long = False
            elif not long and diff > 0.0 >= prev:
                events.append((i, Action.ENTER_LONG))
                long = True
        prev = diff
    return events


def events_of(decisions: Sequence[Decision]) -> list[tuple[int, Action]]:
    return [(i, d.action) for i, d in enumerate(decisions) if d.action is not Action.HOLD]


# --- the indicator ----------------------------------------------------------------------------------


def test_sma_is_none_until_full_then_the_window_mean() -> None:
    sma = Sma(3)
    assert [sma.update(x) for x in (1.0, 2.0)] == [None, None]
    assert sma.update(3.0) == 2.0
    assert sma.update(10.0) == 5.0
    assert sma.value == 5.0
    with pytest.raises(ValueError, match=r"period: must be >= 1 \(got 0\)"):
        Sma(0)


def test_sma_does_not_drift_over_a_long_run() -> None:
    rng = random.Random(3)
    values = [60_000.0 + rng.uniform(-500.0, 500.0) for _ in range(50_000)]
    sma = Sma(30)
    for i, x in enumerate(values):
        got = sma.update(x)
        if i % 997 == 0 and i >= 29:
            assert got == pytest.approx(math.fsum(values[i - 29 : i + 1]) / 30, rel=1e-13)


# --- metadata and params -----------------------------------------------------------------------------


def test_metadata() -> None:
    info = get_strategy("sma_cross")
    assert info.name == "SMA crossover (10/30)"
    assert info.risk_level == "medium"
    assert info.session_preference == "any"
    assert info.instruments == ("BTC/USDT", "ETH/USDT")
    assert info.version == "1.0.0"
    assert "Intended timeframe" in info.description
    assert info.tunables == {"fast": 10, "slow": 30, "atr_period": 14, "atr_mult": 2.0}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"fast": 30}, "params.fast: must be < slow (got 30 >= 30)"),
        ({"fast": 1}, "params.fast: Input should be greater than or equal to 2"),
        ({"slow": 2000}, "params.slow: Input should be less than or equal to 1000"),
        ({"atr_mult": 0.0}, "params.atr_mult: Input should be greater than 0"),
        ({"fast": "10"}, "params.fast: Input should be a valid integer"),
        ({"stop": 1}, "params.stop: unknown parameter (known: fast, slow, atr_period, atr_mult)"),
    ],
)
def test_bad_params_are_refused_by_field(params: dict[str, object], message: str) -> None:
    with pytest.raises(StrategyParamsError) as caught:
        validate_params("sma_cross", params)
    assert message in str(caught.value)


def test_warmup_is_one_bar_past_the_slow_average() -> None:
    assert build_strategy("sma_cross", {}, "BTC/USDT").warmup_bars == 31
    assert build_strategy("sma_cross", {"slow": 8, "fast": 3}, "BTC/USDT").warmup_bars == 15  # ATR(14) rules
    assert SmaCrossParams().fast == 10


# --- rules --------------------------------------------------------------------------------------------


def test_enters_on_the_cross_up_with_a_two_atr_sizing_stop() -> None:
    closes = [100.0 - 0.2 * i for i in range(60)] + [88.0 + 0.5 * i for i in range(60)]
    candles = candles_from(closes)
    decisions = run(candles)
    expected = reference(candles)
    assert events_of(decisions) == expected
    (i, action), *_ = expected
    assert action is Action.ENTER_LONG
    atr = Atr(14)
    value = None
    for c in candles[: i + 1]:
        value = atr.update(c.high, c.low, c.close)
    assert value is not None
    assert decisions[i] == Decision(Action.ENTER_LONG, "sma 10 crossed above sma 30", candles[i].close - 2.0 * value)


def test_exits_on_the_cross_down_and_only_then() -> None:
    up = [100.0 + 0.5 * i for i in range(80)]
    # One violent bar far below any stop: no exit, because the averages have not crossed.
    crash = [up[-1] - 30.0]
    down = [crash[0] + 1.0 - 0.8 * i for i in range(60)]
    candles = candles_from(up + crash + down)
    decisions = run(candles, Position(1.0, 100.0))
    assert decisions[80] is HOLD
    exits = [i for i, d in enumerate(decisions) if d.action is Action.EXIT_LONG]
    assert len(exits) == 1
    assert exits[0] > 80
    assert decisions[exits[0]] == Decision(Action.EXIT_LONG, "sma 10 crossed below sma 30")


def test_a_cross_down_while_flat_is_a_hold() -> None:
    closes = [100.0 + 0.5 * i for i in range(80)] + [140.0 - 0.8 * i for i in range(80)]
    assert all(d is HOLD for d in run(candles_from(closes)))


def test_identical_closes_never_cross() -> None:
    assert all(d is HOLD for d in run(candles_from([100.0] * 300)))


def test_matches_the_naive_reference_on_a_long_random_walk() -> None:
    rng = random.Random(11)
    price, closes = 100.0, []
    for _ in range(20_000):
        price *= math.exp(rng.gauss(0.0, 0.002))
        closes.append(round(price, 4))
    candles = candles_from(closes, wick=0.01)
    got = events_of(run(candles))
    assert len(got) > 200
    assert got == reference(candles)


def test_other_periods() -> None:
    closes = [100.0 + 5.0 * math.sin(i / 15.0) for i in range(600)]
    candles = candles_from(closes)
    assert events_of(run(candles, fast=5, slow=20)) == reference(candles, 5, 20)
