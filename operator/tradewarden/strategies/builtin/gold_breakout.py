"""``gold``: London-session Donchian breakout on tokenised gold.

Registered by ``builtin/__init__.py``; run by the runner and replay through ``SafeStrategy``.

Gold does most of its daily range while London trades, and breakouts outside those hours tend to fade.
Rules, evaluated on each closed bar (UTC times, by the bar's own timestamp; see ``sessions.py``):

* Enter long when flat, inside the session (default 07:00-16:00 UTC, and not on the session's last
  bar), and the close breaks above the highest high of the previous ``breakout_bars`` bars (default 20,
  the Donchian upper channel, the current bar excluded).
* The stop is the lowest low of the last ``stop_bars`` bars (default 10, current bar included). While
  long it trails up with that channel and never falls.
* Exit on a close below the stop, or on the session's last bar: the strategy is flat when London
  closes and never holds gold overnight.

Instruments are spot gold tokens (PAXG, XAUT), each backed by one troy ounce and tracking XAU; spot is
long-only, which is what the rules assume. Intended timeframe: 1m to 15m bars.
"""

from __future__ import annotations

from pydantic import Field

from tradewarden.api.market import HOLD, Action, Candle, Decision, Position
from tradewarden.strategies.base import Strategy, StrategyParams
from tradewarden.strategies.indicators import RollingMax, RollingMin
from tradewarden.strategies.registry import StrategyInfo
from tradewarden.strategies.sessions import SessionWindow


class GoldParams(StrategyParams):
    breakout_bars: int = Field(
        20, ge=2, le=1000, description="Donchian lookback for the breakout high, in bars (current excluded)."
    )
    stop_bars: int = Field(
        10, ge=1, le=1000, description="Lookback of the lowest low used as (trailing) stop, in bars."
    )
    session_start_hour: int = Field(
        7, ge=0, le=23, description="Start of the London session, hour of day in UTC (inclusive)."
    )
    session_end_hour: int = Field(
        16, ge=1, le=24, description="End of the London session, hour of day in UTC (exclusive)."
    )

    ordered = (("session_start_hour", "session_end_hour"),)


class GoldBreakoutStrategy(Strategy[GoldParams]):
    def __init__(self, params: GoldParams, symbol: str) -> None:
        super().__init__(params, symbol)
        self._highs = RollingMax(params.breakout_bars)
        self._lows = RollingMin(params.stop_bars)
        self._session = SessionWindow(params.session_start_hour, params.session_end_hour)
        # The breakout compares with *previous* bars: the channel needs breakout_bars of them first.
        self._warmup = max(params.breakout_bars, params.stop_bars)
        self._bars = 0
        self._stop: float | None = None
        self._pending_stop: float | None = None

    @property
    def warmup_bars(self) -> int:
        return self._warmup

    def on_candle(self, candle: Candle, position: Position) -> Decision:
        session = self._session
        session.observe(candle.ts)
        channel_high = self._highs.value  # previous bars only: read before pushing this bar
        self._highs.update(candle.high)
        lowest = self._lows.update(candle.low)
        self._bars += 1
        pending = self._pending_stop
        self._pending_stop = None
        if self._bars <= self._warmup or channel_high is None:
            return HOLD

        close = candle.close
        if position.qty > 0.0:
            stop = self._stop
            if stop is None:
                stop = pending if pending is not None else lowest
            if close < stop:
                self._stop = None
                return Decision(Action.EXIT_LONG, f"close {close:g} below channel stop {stop:g}")
            if session.must_be_flat(candle.ts):
                self._stop = None
                return Decision(Action.EXIT_LONG, "london session over")
            self._stop = lowest if lowest > stop else stop
            return HOLD

        self._stop = None
        # lowest < close always holds on a breakout (the previous lows are below the previous highs),
        # the explicit test only guards against a degenerate bar.
        if close > channel_high and lowest < close and session.allows_entry(candle.ts):
            self._pending_stop = lowest
            return Decision(
                Action.ENTER_LONG,
                f"close {close:g} broke the {self.params.breakout_bars}-bar high {channel_high:g}",
                lowest,
            )
        return HOLD


INFO = StrategyInfo(
    key="gold",
    name="Gold London breakout",
    description=(
        "Donchian breakout during the London session (07:00-16:00 UTC): enter on a close above the "
        "N-bar high, stop at the M-bar low (trailing), flat at session end. Intended timeframe: 1m to 15m."
    ),
    instruments=("PAXG/USDT", "XAUT/USDT"),
    params_model=GoldParams,
    risk_level="high",
    session_preference="london",
    version="1.0.0",
    strategy_class=GoldBreakoutStrategy,
)
