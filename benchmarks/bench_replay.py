"""Replay throughput over one year of 1-minute bars, per built-in strategy, and against backtrader.

For each built-in strategy, ``support.evidence.make_export`` plays a faithful runner over 525,600
recorded 1-minute bars (after a 300-bar warm-up) of the strategy's first instrument that the emulator
has (BTC/USDT, PAXG/USDT, EUR/USDT); the benchmark times ``replay(export)`` end to end — checking and
converting the rows, the data hash, the loop, the alignment, the metrics and the result hash — and
checks that a faithful runner leaves no residual at that scale. The time spent in
``EvidenceExport.data_hash()`` (the contract's canonical JSON of every bar, about 40 % of the total) is
shown apart, since backtrader computes nothing like it. Every number is the best of ``REPEATS`` runs.

Side by side, backtrader runs the same strategy as our ``sma_cross`` (SMA(10)/SMA(30) crossover,
long-only, entries sized on a stop at close - 2*ATR(14), exit on the cross down) on the same BTC/USDT
bars. Choices, so the comparison is fair and reproducible:

* data goes in through a small ``bt.feed.DataBase`` subclass reading pre-built Python lists (no pandas,
  no CSV parsing); the bar times are converted to backtrader's float dates before timing;
* only ``cerebro.run()`` is timed (it includes backtrader's own loading of the feed); ``stdstats=False``
  (no observers we do not need) and the default ``preload=True, runonce=True`` (backtrader's fastest
  mode, indicators computed in vectorised batches);
* cheat-on-close, 10 bps commission and 5 bps slippage, so orders fill at the signal bar's close as ours.

Run with ``make bench`` or::

    .venv/bin/python -m pytest benchmarks/bench_replay.py -m benchmark -s -q -p no:cacheprovider

``TRADEWARDEN_BENCH_BARS`` shortens the year for a quick look (default 525600), ``TRADEWARDEN_BENCH_REPEATS``
sets the runs per measurement (default 2). It takes about three minutes on two cores.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from typing import Any

import pytest

from support.evidence import bars, make_export
from tradewarden.api.market import Candle
from tradewarden.emulator.series import DEFAULT_MARKETS
from tradewarden.replay import replay
from tradewarden.strategies import list_strategies

YEAR = int(os.environ.get("TRADEWARDEN_BENCH_BARS", "525600"))
#: Each measurement is the best of this many runs, ours and backtrader's alike: the machines are shared.
REPEATS = int(os.environ.get("TRADEWARDEN_BENCH_REPEATS", "2"))
WARMUP = 300
EMULATED = {m.symbol for m in DEFAULT_MARKETS}
RISK_PCT = 0.05  # small enough that entries are never refused for lack of cash


def symbol_for(instruments: tuple[str, ...]) -> str:
    return next((s for s in instruments if s in EMULATED), "BTC/USDT")


def time_replay(key: str, symbol: str) -> dict[str, Any]:
    export = make_export(key, (symbol,), warmup=WARMUP, window=YEAR, risk_pct=RISK_PCT)
    elapsed = hashing = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter()
        report = replay(export)
        elapsed = min(elapsed, time.perf_counter() - started)
        started = time.perf_counter()
        export.data_hash()
        hashing = min(hashing, time.perf_counter() - started)
    assert report.bars == YEAR
    assert report.residuals == 0, report.residual_details
    return {"key": key, "symbol": symbol, "bars": report.bars, "decisions": report.decisions,
            "fills": report.trades_compared, "entries": sum(1 for f in export.fills if f.side == "buy"),
            "seconds": elapsed, "hash_seconds": hashing, "rate": report.bars / elapsed,
            "rate_without_hash": report.bars / (elapsed - hashing)}


def time_backtrader(candles: list[Candle]) -> dict[str, Any]:
    import backtrader as bt

    epoch = dt.datetime(1970, 1, 1)
    dates = [bt.date2num(epoch + dt.timedelta(milliseconds=c.ts)) for c in candles]

    class Feed(bt.feed.DataBase):
        """Bars from Python lists: no pandas, no file."""

        def start(self) -> None:
            super().start()
            self._i = 0

        def _load(self) -> bool:
            i = self._i
            if i >= len(candles):
                return False
            c = candles[i]
            lines = self.lines
            lines.datetime[0] = dates[i]
            lines.open[0] = c.open
            lines.high[0] = c.high
            lines.low[0] = c.low
            lines.close[0] = c.close
            lines.volume[0] = c.volume
            lines.openinterest[0] = 0.0
            self._i = i + 1
            return True

    class SmaCross(bt.Strategy):
        """SMA(10)/SMA(30) crossover, long-only, sized on a 2-ATR(14) stop: our sma_cross."""

        def __init__(self) -> None:
            self.fast = bt.indicators.SimpleMovingAverage(self.data.close, period=10)
            self.slow = bt.indicators.SimpleMovingAverage(self.data.close, period=30)
            self.atr = bt.indicators.AverageTrueRange(self.data, period=14)
            self.cross = bt.indicators.CrossOver(self.fast, self.slow)
            self.entries = 0

        def next(self) -> None:
            if not self.position:
                if self.cross[0] > 0 and self.atr[0] > 0:
                    close = self.data.close[0]
                    size = self.broker.getvalue() * RISK_PCT / 100.0 / (2.0 * self.atr[0])
                    if size * close * 1.0015 < self.broker.getcash():
                        self.buy(size=size)
                        self.entries += 1
            elif self.cross[0] < 0:
                self.close()

    elapsed = float("inf")
    for _ in range(REPEATS):
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(Feed(timeframe=bt.TimeFrame.Minutes, compression=1))
        cerebro.addstrategy(SmaCross)
        cerebro.broker.setcash(10_000.0)
        cerebro.broker.setcommission(commission=0.001)
        cerebro.broker.set_slippage_perc(0.0005)
        cerebro.broker.set_coc(True)
        started = time.perf_counter()
        (strategy,) = cerebro.run()
        elapsed = min(elapsed, time.perf_counter() - started)
    return {"bars": len(candles), "entries": strategy.entries, "seconds": elapsed, "rate": len(candles) / elapsed,
            "version": bt.__version__}


@pytest.mark.benchmark
def test_replay_throughput_and_backtrader() -> None:
    rows = []
    for info in list_strategies():
        rows.append(time_replay(info.key, symbol_for(info.instruments)))
    print(f"\nreplay(export) end to end, {YEAR:,} recorded 1m bars after a {WARMUP}-bar warm-up, faithful runner, "
          f"best of {REPEATS}; 'data hash': the part spent in EvidenceExport.data_hash() (canonical JSON)")
    print(f"{'strategy':<18}{'symbol':<12}{'bars':>10}{'decisions':>11}{'fills':>8}{'seconds':>9}{'data hash':>11}"
          f"{'bars/s':>11}{'w/o hash':>11}")
    for r in rows:
        print(f"{r['key']:<18}{r['symbol']:<12}{r['bars']:>10,}{r['decisions']:>11,}{r['fills']:>8,}"
              f"{r['seconds']:>9.2f}{r['hash_seconds']:>11.2f}{r['rate']:>11,.0f}{r['rate_without_hash']:>11,.0f}")

    ours = next(r for r in rows if r["key"] == "sma_cross")
    candles = bars("BTC/USDT", WARMUP + YEAR)
    theirs = time_backtrader(candles)
    print(f"\nSMA(10)/SMA(30) crossover on the same BTC/USDT bars, best of {REPEATS} (backtrader {theirs['version']}: "
          "DataBase feed from lists, cerebro.run() only, stdstats off, runonce)")
    print(f"{'engine':<26}{'bars':>10}{'entries':>9}{'seconds':>9}{'bars/s':>11}")
    print(f"{'tradewarden replay':<26}{ours['bars']:>10,}{ours['entries']:>9,}{ours['seconds']:>9.2f}"
          f"{ours['rate']:>11,.0f}")
    print(f"{'backtrader':<26}{theirs['bars']:>10,}{theirs['entries']:>9,}{theirs['seconds']:>9.2f}"
          f"{theirs['rate']:>11,.0f}")
    ratio = ours["rate"] / theirs["rate"]
    print(f"ratio ours / backtrader: {ratio:.1f}x end to end (target: at least 10x); "
          f"{ours['rate_without_hash'] / theirs['rate']:.1f}x without the data hash, which backtrader does not compute")
    assert all(r["rate"] > 0 for r in rows)
