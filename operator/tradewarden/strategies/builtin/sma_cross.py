"""``sma_cross``: the classic SMA(10)/SMA(30) crossover, long-only, the reference strategy of the benchmarks.

Registered by ``builtin/__init__.py``; run by the runner and replay through ``SafeStrategy``. It is the
strategy ``benchmarks/bench_replay.py`` runs both in our replay and in backtrader, so its rules are the
textbook ones and stay that way: a change here would make the comparison compare something else.

Rules, evaluated on each closed bar:

* Enter long when flat and the fast SMA (default 10 bars) crosses above the slow SMA (default 30): on the
  previous bar fast <= slow, on this one fast > slow. The decision carries a stop at
  ``close - atr_mult * ATR`` (ATR(14) with Wilder's smoothing, default multiple 2). The stop only sizes
  the entry (the runner risks ``maxRiskPerTradePct`` of equity down to it); the strategy never exits on it.
* Exit when long and the fast SMA crosses back below the slow SMA: on the previous bar fast >= slow, on
  this one fast < slow.

No entry is taken while ATR is zero: with no volatility there is no distance to size a position against.
A position the strategy did not open (a restart, a manual order) is exited on the next cross down.
Averages equal up to rounding count as equal (``indicators.spread``), so a run of identical closes never
reads as a crossover.

Intended timeframe: any; the defaults are the textbook 1m to 1h setting, noisy on 1m bars.
"""

from __future__ import annotations

from pydantic import Field

from tradewarden.api.market import HOLD, Action, Candle, Decision, Position
from tradewarden.strategies.base import Strategy, StrategyParams
from tradewarden.strategies.indicators import Atr, Sma, spread
from tradewarden.strategies.registry import StrategyInfo


class SmaCrossParams(StrategyParams):
    fast: int = Field(10, ge=2, le=500, description="Period of the fast SMA, in bars.")
    slow: int = Field(30, ge=3, le=1000, description="Period of the slow SMA, in bars; must exceed fast.")
    atr_period: int = Field(14, ge=2, le=500, description="Period of the ATR used for the sizing stop, in bars.")
    atr_mult: float = Field(
        2.0, gt=0.0, le=20.0, description="Sizing stop distance below the close, in multiples of ATR."
    )

    ordered = (("fast", "slow"),)


class SmaCrossStrategy(Strategy[SmaCrossParams]):
    def __init__(self, params: SmaCrossParams, symbol: str) -> None:
        super().__init__(params, symbol)
        self._fast = Sma(params.fast)
        self._slow = Sma(params.slow)
        self._atr = Atr(params.atr_period)
        self._mult = params.atr_mult
        # One more bar than the slow SMA needs, so that a crossover compares two real values.
        self._warmup = max(params.slow, params.atr_period) + 1
        self._bars = 0
        self._prev_diff: float | None = None
        # Built once: the exit and entry texts are the same on every crossover.
        self._enter_reason = f"sma {params.fast} crossed above sma {params.slow}"
        self._exit_reason = f"sma {params.fast} crossed below sma {params.slow}"

    @property
    def warmup_bars(self) -> int:
        return self._warmup

    def on_candle(self, candle: Candle, position: Position) -> Decision:
        close = candle.close
        fast = self._fast.update(close)
        slow = self._slow.update(close)
        atr = self._atr.update(candle.high, candle.low, close)
        self._bars += 1
        prev_diff = self._prev_diff
        diff = spread(fast, slow, close)
        self._prev_diff = diff

        if self._bars <= self._warmup or diff is None or prev_diff is None or atr is None:
            return HOLD
        if position.qty > 0.0:
            if diff < 0.0 <= prev_diff:
                return Decision(Action.EXIT_LONG, self._exit_reason)
            return HOLD
        if diff > 0.0 >= prev_diff and atr > 0.0:
            return Decision(Action.ENTER_LONG, self._enter_reason, close - self._mult * atr)
        return HOLD


INFO = StrategyInfo(
    key="sma_cross",
    name="SMA crossover (10/30)",
    description=(
        "The classic crossover: enter long when SMA(fast) crosses above SMA(slow), exit when it crosses "
        "back below; the entry's stop at close - k*ATR sizes the position and is never traded. "
        "The reference strategy of the replay benchmark. Intended timeframe: 1m to 1h."
    ),
    instruments=("BTC/USDT", "ETH/USDT"),
    params_model=SmaCrossParams,
    risk_level="medium",
    session_preference="any",
    version="1.0.0",
    strategy_class=SmaCrossStrategy,
)
