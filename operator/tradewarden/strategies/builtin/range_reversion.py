"""``range``: RSI mean reversion, only while the market is range-bound.

Registered by ``builtin/__init__.py``; run by the runner and replay through ``SafeStrategy``.

Buying oversold dips works in a range and is ruinous in a downtrend, so the rules first decide whether
the market is ranging at all. On each closed bar:

* Range test, both must hold:
  - the close is inside the Bollinger range: ``lower band <= close <= middle band`` (SMA(20) +/- 2
    standard deviations; below the middle because we buy cheap, not below the lower band because a close
    outside the band is a breakdown, not a dip);
  - there is no trend: Kaufman's efficiency ratio over ``trend_bars`` (default 50) — the net move
    divided by the sum of bar-to-bar moves — is at most ``max_efficiency`` (default 0.3). A trend goes
    somewhere (ratio near 1); a range goes back and forth and gets nowhere (ratio near 0).
* Enter long when flat, the range test passes and RSI(14) < ``oversold`` (default 30). The stop is
  ``min(lower band, close) - stop_atr_mult * ATR(14)`` (default 2 ATRs), fixed for the trade.
* Exit when RSI > ``exit_level`` (default 55), or on a close below the stop.
* After a stop-out, wait ``cooldown_bars`` bars (default 10) before the next entry: a dip that ran
  through the stop is usually still running, and buying it again at once doubles the loss.

Intended timeframe: 5m to 1h bars in quiet markets.
"""

from __future__ import annotations

from pydantic import Field

from tradewarden.api.market import HOLD, Action, Candle, Decision, Position
from tradewarden.strategies.base import Strategy, StrategyParams
from tradewarden.strategies.indicators import Atr, EfficiencyRatio, RollingMeanStd, Rsi
from tradewarden.strategies.registry import StrategyInfo


class RangeParams(StrategyParams):
    rsi_period: int = Field(14, ge=2, le=500, description="Period of the RSI, in bars.")
    oversold: float = Field(30.0, gt=0.0, lt=100.0, description="RSI below which a dip is bought.")
    exit_level: float = Field(55.0, gt=0.0, lt=100.0, description="RSI above which the position is sold.")
    band_period: int = Field(20, ge=5, le=1000, description="Period of the Bollinger band SMA, in bars.")
    band_std: float = Field(
        2.0, gt=0.0, le=10.0, description="Bollinger band half-width, in standard deviations."
    )
    trend_bars: int = Field(
        50, ge=5, le=2000, description="Window of the efficiency ratio that detects a trend, in bars."
    )
    max_efficiency: float = Field(
        0.3,
        gt=0.0,
        le=1.0,
        description="Largest efficiency ratio (net move / path length) still counted as a range.",
    )
    atr_period: int = Field(14, ge=2, le=500, description="Period of the ATR used for the stop, in bars.")
    stop_atr_mult: float = Field(
        2.0, ge=0.0, le=20.0, description="Stop distance below the lower band, in ATRs."
    )

    cooldown_bars: int = Field(
        10, ge=0, le=10_000, description="Bars without entries after a stop-out; 0 turns it off."
    )

    ordered = (("oversold", "exit_level"),)


class RangeReversionStrategy(Strategy[RangeParams]):
    def __init__(self, params: RangeParams, symbol: str) -> None:
        super().__init__(params, symbol)
        self._rsi = Rsi(params.rsi_period)
        self._band = RollingMeanStd(params.band_period)
        self._efficiency = EfficiencyRatio(params.trend_bars)
        self._atr = Atr(params.atr_period)
        self._warmup = max(
            params.rsi_period + 1,
            params.band_period,
            params.trend_bars + 1,
            params.atr_period,
        )
        self._bars = 0
        self._stop: float | None = None
        self._pending_stop: float | None = None
        self._cooldown = 0  # bars left without entries after a stop-out

    @property
    def warmup_bars(self) -> int:
        return self._warmup

    def on_candle(self, candle: Candle, position: Position) -> Decision:
        close = candle.close
        rsi = self._rsi.update(close)
        band = self._band
        mean = band.update(close)
        efficiency = self._efficiency.update(close)
        atr = self._atr.update(candle.high, candle.low, close)
        self._bars += 1
        pending = self._pending_stop
        self._pending_stop = None
        std = band.std
        if (
            self._bars <= self._warmup
            or rsi is None
            or mean is None
            or std is None
            or efficiency is None
            or atr is None
        ):
            return HOLD

        params = self.params
        lower = mean - params.band_std * std
        if position.qty > 0.0:
            stop = self._stop
            if stop is None:
                basis = position.entry_price if position.entry_price > 0.0 else close
                stop = pending if pending is not None else min(lower, basis) - params.stop_atr_mult * atr
                self._stop = stop
            if rsi > params.exit_level:
                self._stop = None
                return Decision(Action.EXIT_LONG, f"rsi {rsi:.1f} above {params.exit_level:g}")
            if close < stop:
                self._stop = None
                self._cooldown = params.cooldown_bars
                return Decision(Action.EXIT_LONG, f"close {close:g} below stop {stop:g}")
            return HOLD

        self._stop = None
        if self._cooldown > 0:
            self._cooldown -= 1
            return HOLD
        if rsi >= params.oversold or efficiency > params.max_efficiency or not lower <= close <= mean:
            return HOLD
        stop = min(lower, close) - params.stop_atr_mult * atr
        if stop >= close:
            # Only when ATR and the band are both zero: no distance to size a position against.
            return HOLD
        self._pending_stop = stop
        return Decision(
            Action.ENTER_LONG,
            f"rsi {rsi:.1f} below {params.oversold:g} in a range (efficiency {efficiency:.2f})",
            stop,
        )


INFO = StrategyInfo(
    key="range",
    name="Range mean reversion (RSI)",
    description=(
        "Buy RSI < oversold dips inside the Bollinger range while the efficiency ratio shows no trend; "
        "sell when RSI recovers above the exit level or on a stop below the lower band. "
        "Intended timeframe: 5m to 1h."
    ),
    instruments=("BTC/USDT", "ETH/USDT"),
    params_model=RangeParams,
    risk_level="low",
    session_preference="any",
    version="1.0.0",
    strategy_class=RangeReversionStrategy,
)
