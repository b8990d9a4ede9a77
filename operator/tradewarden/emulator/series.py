"""Deterministic synthetic markets for the exchange emulator.

``emulator.matching`` asks this module for the price of a market at a given bar, and ``emulator.serving``
turns its bars into Binance klines and tickers. Nothing here knows about HTTP or orders.

Every market is a chain of one-minute bars drawn from a generator seeded with ``(seed, symbol)``, so the
same seed always yields byte-identical klines, whatever order markets are queried in. The chain moves
through three regimes, each lasting a random number of bars:

- ``trend``: a steady drift up or down with ordinary noise;
- ``range``: mean reversion towards the price at which the regime started;
- ``shock``: one large jump, then volatility that decays back towards normal.

The default markets mirror symbols Binance really lists, so that ccxt's symbol handling is exercised as
it is in production. Gold is ``PAXG/USDT`` (Paxos Gold, one token per fine troy ounce), the way gold
trades on Binance spot; there is no ``XAU/USDT`` market.
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

from tradewarden.api.market import Candle

BAR_MS = 60_000
"""Length of the emulator's base bar. Longer intervals are aggregated from these."""

EIGHT_PLACES = Decimal("0.00000001")


class Regime(enum.StrEnum):
    TREND = "trend"
    RANGE = "range"
    SHOCK = "shock"


@dataclass(frozen=True, slots=True)
class MarketSpec:
    """One emulated spot market and the trading rules Binance would publish for it."""

    symbol: str
    base: str
    quote: str
    start_price: float
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    min_notional: Decimal
    bar_volatility: float
    """Standard deviation of the one-minute log return in a calm regime."""
    base_volume: float
    """Typical one-minute volume, in base units."""
    min_price: Decimal = field(default=Decimal("0"))
    max_price: Decimal = field(default=Decimal("1000000"))

    @property
    def market_id(self) -> str:
        """The exchange's own name for the market, as Binance spells it (``BTCUSDT``)."""
        return self.base + self.quote

    def round_price(self, value: Decimal, rounding: str = ROUND_HALF_EVEN) -> Decimal:
        ticks = (value / self.tick_size).to_integral_value(rounding=rounding)
        return (ticks * self.tick_size).quantize(self.tick_size)

    def floor_qty(self, value: Decimal) -> Decimal:
        steps = (value / self.step_size).to_integral_value(rounding=ROUND_FLOOR)
        return (steps * self.step_size).quantize(self.step_size)


DEFAULT_MARKETS: tuple[MarketSpec, ...] = (
    MarketSpec(
        symbol="BTC/USDT",
        base="BTC",
        quote="USDT",
        start_price=60_000.0,
        tick_size=Decimal("0.01"),
        step_size=Decimal("0.00001"),
        min_qty=Decimal("0.00001"),
        max_qty=Decimal("9000"),
        min_notional=Decimal("5"),
        bar_volatility=0.0008,
        base_volume=12.0,
        min_price=Decimal("0.01"),
    ),
    MarketSpec(
        symbol="ETH/USDT",
        base="ETH",
        quote="USDT",
        start_price=3_000.0,
        tick_size=Decimal("0.01"),
        step_size=Decimal("0.0001"),
        min_qty=Decimal("0.0001"),
        max_qty=Decimal("9000"),
        min_notional=Decimal("5"),
        bar_volatility=0.0010,
        base_volume=150.0,
        min_price=Decimal("0.01"),
    ),
    MarketSpec(
        symbol="PAXG/USDT",
        base="PAXG",
        quote="USDT",
        start_price=2_300.0,
        tick_size=Decimal("0.01"),
        step_size=Decimal("0.0001"),
        min_qty=Decimal("0.0001"),
        max_qty=Decimal("9000"),
        min_notional=Decimal("5"),
        bar_volatility=0.0003,
        base_volume=4.0,
        min_price=Decimal("0.01"),
    ),
    MarketSpec(
        symbol="EUR/USDT",
        base="EUR",
        quote="USDT",
        start_price=1.08,
        tick_size=Decimal("0.0001"),
        step_size=Decimal("0.1"),
        min_qty=Decimal("0.1"),
        max_qty=Decimal("9000000"),
        min_notional=Decimal("5"),
        bar_volatility=0.0001,
        base_volume=50_000.0,
        min_price=Decimal("0.0001"),
        max_price=Decimal("1000"),
    ),
)


@dataclass(frozen=True, slots=True)
class Bar:
    """One closed one-minute bar. Prices are exact multiples of the market's tick size."""

    index: int
    open_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trades: int
    regime: Regime


class Series:
    """The lazily generated bar chain of one market.

    Bar ``i`` opens at ``start_ms + i * BAR_MS``. Bars are produced strictly in order and cached, so a
    bar's content never depends on which bars were asked for first.
    """

    def __init__(self, spec: MarketSpec, seed: int, start_ms: int) -> None:
        self.spec = spec
        self.start_ms = start_ms
        # A string seed goes through SHA-512 inside random.Random, so it is stable across processes and
        # unaffected by PYTHONHASHSEED, unlike hash((seed, symbol)).
        self._rng = random.Random(f"tradewarden-emulator:{seed}:{spec.symbol}")  # noqa: S311 - not crypto
        self._bars: list[Bar] = []
        first = spec.round_price(Decimal(repr(spec.start_price)))
        self._last_close = first
        self._regime = Regime.RANGE
        self._regime_left = 0
        self._drift = 0.0
        self._anchor = math.log(float(first))
        self._kappa = 0.0
        self._vol_mult = 1.0
        self._jump = 0.0

    def bar(self, index: int) -> Bar:
        if index < 0:
            raise IndexError(f"bar index must be >= 0 (got {index})")
        while len(self._bars) <= index:
            self._bars.append(self._generate(len(self._bars)))
        return self._bars[index]

    def bars(self, start: int, stop: int) -> list[Bar]:
        """Bars ``start`` (inclusive) to ``stop`` (exclusive), generating them if needed."""
        if stop <= start:
            return []
        self.bar(stop - 1)
        return self._bars[max(start, 0) : stop]

    def close_before(self, index: int) -> Decimal:
        """The price at the open of bar ``index``: the close of the bar before it."""
        if index <= 0:
            return self.spec.round_price(Decimal(repr(self.spec.start_price)))
        return self.bar(index - 1).close

    def _pick_regime(self) -> None:
        rng = self._rng
        vol = self.spec.bar_volatility
        roll = rng.random()
        if roll < 0.10 and self._regime is not Regime.SHOCK:
            self._regime = Regime.SHOCK
            self._regime_left = rng.randint(15, 60)
            self._jump = rng.choice((-1.0, 1.0)) * rng.uniform(12.0, 30.0) * vol
            self._vol_mult = 3.0
            self._drift = 0.0
        elif roll < 0.50:
            self._regime = Regime.TREND
            self._regime_left = rng.randint(90, 360)
            self._drift = rng.choice((-1.0, 1.0)) * rng.uniform(0.15, 0.45) * vol
            self._vol_mult = 1.0
        else:
            self._regime = Regime.RANGE
            self._regime_left = rng.randint(120, 480)
            self._anchor = math.log(float(self._last_close))
            self._kappa = rng.uniform(0.02, 0.08)
            self._vol_mult = 0.8
            self._drift = 0.0

    def _generate(self, index: int) -> Bar:
        if self._regime_left <= 0:
            self._pick_regime()
        rng = self._rng
        spec = self.spec
        sigma = spec.bar_volatility * self._vol_mult
        open_price = self._last_close
        log_open = math.log(float(open_price))
        noise = rng.gauss(0.0, 1.0)
        if self._regime is Regime.TREND:
            ret = self._drift + sigma * noise
        elif self._regime is Regime.RANGE:
            ret = -self._kappa * (log_open - self._anchor) + sigma * noise
        else:
            ret = self._jump + sigma * noise
            self._jump = 0.0
            self._vol_mult = max(1.2, self._vol_mult * 0.93)
        self._regime_left -= 1

        close_f = math.exp(log_open + ret)
        up = abs(rng.gauss(0.0, 1.0)) * sigma * 0.6
        down = abs(rng.gauss(0.0, 1.0)) * sigma * 0.6
        high_f = max(float(open_price), close_f) * math.exp(up)
        low_f = min(float(open_price), close_f) * math.exp(-down)

        close = max(spec.round_price(Decimal(repr(close_f))), spec.tick_size)
        high = max(spec.round_price(Decimal(repr(high_f)), ROUND_CEILING), open_price, close)
        low = max(min(spec.round_price(Decimal(repr(low_f)), ROUND_FLOOR), open_price, close), spec.tick_size)

        activity = 1.0 + min(4.0, abs(ret) / spec.bar_volatility * 0.5)
        if self._regime is Regime.SHOCK:
            activity *= 2.5
        volume_f = spec.base_volume * math.exp(0.35 * rng.gauss(0.0, 1.0)) * activity
        volume = spec.floor_qty(Decimal(repr(volume_f)))
        trades = 1 + int(volume_f / spec.base_volume * 120)

        self._last_close = close
        return Bar(
            index=index,
            open_ms=self.start_ms + index * BAR_MS,
            open=open_price,
            high=high,
            low=low,
            close=close,
            volume=volume,
            trades=trades,
            regime=self._regime,
        )


def recorded_candles(symbol: str, n: int, seed: int = 42, start_ms: int = 1_704_067_200_000) -> list[Candle]:
    """``n`` one-minute bars of a default market as the runner would have recorded them.

    Used by the benchmarks and the replay tests: the same arguments give the same bars, bit for bit.
    """
    spec = next((m for m in DEFAULT_MARKETS if m.symbol == symbol), None)
    if spec is None:
        known = ", ".join(m.symbol for m in DEFAULT_MARKETS)
        raise ValueError(f"symbol: {symbol!r} is not an emulated market (known: {known})")
    series = Series(spec, seed=seed, start_ms=start_ms)
    return [Candle(b.open_ms, float(b.open), float(b.high), float(b.low), float(b.close), float(b.volume))
            for b in series.bars(0, n)]
