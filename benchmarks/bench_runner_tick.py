"""The runner's tick loop over recorded data, in bars per second (issue: Runner benchmark).

Feeds 20,000 recorded 1-minute bars of the emulator's seeded BTC/USDT series through the real
``Engine.tick`` (strategy, intents, risk, paper broker, SQLite journal), 100 new bars per tick, in
signals and paper mode for each built-in strategy, and prints a table. Run with ``make bench``.
"""

from __future__ import annotations

import pathlib
import time

import pytest

from support.builders import make_runtime
from tradewarden.api.market import Candle
from tradewarden.api.runtime import RuntimeConfig
from tradewarden.api.tradingbot import TradingMode
from tradewarden.emulator.series import recorded_candles
from tradewarden.exchange import PaperBroker
from tradewarden.runner.engine import Engine
from tradewarden.runner.journal import Journal
from tradewarden.runner.metrics import RunnerMetrics
from tradewarden.strategies import list_strategies

BARS = 20_000
PER_TICK = 100


class Recorded:
    def __init__(self, bars: list[Candle]) -> None:
        self.bars, self.visible = bars, 300

    def fetch_ohlcv(self, symbol: str, timeframe: str = "1m", since: int | None = None,
                    limit: int | None = None) -> list[Candle]:
        out = self.bars[: self.visible]
        if since is not None:
            lo = max(0, self.visible - PER_TICK - 1)
            out = [b for b in out[lo:] if b.ts >= since]
        return out[-limit:] if limit else out


def run(tmp: pathlib.Path, key: str, symbol: str, mode: str, bars: list[Candle]) -> float:
    cfg = make_runtime(strategy=key, instruments=(symbol,), mode=mode)

    def factory(c: RuntimeConfig, m: TradingMode, saved: dict[str, float] | None) -> PaperBroker:
        return PaperBroker(starting_quote=c.capital.paper_balance, balances=saved)

    market = Recorded(bars)
    eng = Engine(bot_uid="bench", config=cfg, journal=Journal(tmp / f"{key}-{mode}.sqlite"),
                 metrics=RunnerMetrics("bench", key), market=market, broker_factory=factory)
    eng.tick()
    processed = 0
    started = time.perf_counter()
    while market.visible < len(bars):
        market.visible = min(len(bars), market.visible + PER_TICK)
        processed += eng.tick()
    elapsed = time.perf_counter() - started
    return processed / elapsed


@pytest.mark.benchmark
def test_runner_tick_throughput(tmp_path: pathlib.Path) -> None:
    rows = []
    cache: dict[str, list[Candle]] = {}
    for info in list_strategies():
        symbol = info.instruments[0]
        bars = cache.setdefault(symbol, recorded_candles(symbol, BARS))
        for mode in ("signals", "paper"):
            rows.append((info.key, symbol, mode, run(tmp_path, info.key, symbol, mode, bars)))
    print(f"\nrunner tick loop, {BARS} recorded 1m bars, {PER_TICK} bars per tick (journal on disk)")
    print(f"{'strategy':<18}{'symbol':<12}{'mode':<9}{'bars/s':>10}")
    for key, symbol, mode, rate in rows:
        print(f"{key:<18}{symbol:<12}{mode:<9}{rate:>10,.0f}")
    assert all(rate > 0 for *_, rate in rows)
