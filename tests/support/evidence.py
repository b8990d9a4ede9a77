"""Builders for replay evidence: recorded bars, and an EvidenceExport with the runner's side filled in.

Used by ``tests/unit/test_replay.py``, ``tests/unit/test_consensus.py`` and ``benchmarks/bench_replay.py``.
``make_export`` plays the runner: it feeds the bars through ``build_strategy`` itself, bar by bar in
(time, symbol) order, and records every non-hold decision and the fills a paper broker would make
(close +/- slippage, fee on the notional, entries sized on the risk to the stop and refused without
the cash). It is written apart from ``tradewarden.replay`` on purpose: a replay that agrees with it
agrees with an independent reading of the same rules, not with itself.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from tradewarden.api.evidence import EvidenceExport, ExportedFill, ExportedPosition, ExportedSignal
from tradewarden.api.market import FLAT, Action, Candle, Position
from tradewarden.api.runtime import RuntimeStrategy
from tradewarden.emulator.series import recorded_candles
from tradewarden.strategies import build_strategy

MINUTE = 60_000


@functools.lru_cache(maxsize=16)
def _bars(symbol: str, n: int, seed: int) -> tuple[Candle, ...]:
    return tuple(recorded_candles(symbol, n, seed=seed))


def bars(symbol: str, n: int, seed: int = 42) -> list[Candle]:
    """``n`` recorded 1-minute bars of an emulated market (cached: generating them is the slow part)."""
    return list(_bars(symbol, n, seed))


def rows_of(candles: Sequence[Candle]) -> list[list[float]]:
    return [[c.ts, c.open, c.high, c.low, c.close, c.volume] for c in candles]


def make_export(key: str = "sma_cross", symbols: Sequence[str] = ("BTC/USDT",), *, warmup: int = 200,
                window: int = 2000, params: dict[str, Any] | None = None, seed: int = 42, mode: str = "paper",
                starting_equity: float = 10_000.0, risk_pct: float = 0.05, fee_bps: float = 10.0,
                slippage_bps: float = 5.0, initial_positions: dict[str, Position] | None = None,
                version: str = "", candles: dict[str, list[Candle]] | None = None) -> EvidenceExport:
    """An export of ``window`` bars after ``warmup`` bars, with the runner's signals and fills."""
    params = params or {}
    series = candles or {s: bars(s, warmup + window, seed) for s in symbols}
    first = series[symbols[0]]
    start, end = first[warmup].ts, first[-1].ts + MINUTE
    positions = {s: (initial_positions or {}).get(s, FLAT) for s in symbols}
    strategies = {s: build_strategy(key, params, s) for s in symbols}

    for s in symbols:
        for c in series[s]:
            if c.ts < start:
                strategies[s].on_candle(c, positions[s])
    last = {s: next((c.close for c in reversed(series[s]) if c.ts < start), positions[s].entry_price)
            for s in symbols}
    cash = starting_equity - sum(positions[s].qty * last[s] for s in symbols)

    signals: list[ExportedSignal] = []
    fills: list[ExportedFill] = []
    window_bars = sorted(((c.ts, s, c) for s in symbols for c in series[s] if start <= c.ts < end),
                         key=lambda e: (e[0], e[1]))
    for t, s, c in window_bars:
        last[s] = c.close
        decision = strategies[s].on_candle(c, positions[s])
        if decision.action is Action.HOLD:
            continue
        signals.append(ExportedSignal(t=t, symbol=s, action=decision.action.value, stop=decision.stop_price))
        if mode == "signals":
            continue
        if decision.action is Action.ENTER_LONG and positions[s].qty == 0.0:
            price = c.close * (1 + slippage_bps / 10_000)
            stop = decision.stop_price
            if stop is None or stop >= price:
                continue
            equity = cash + sum(positions[x].qty * last[x] for x in symbols)
            amount = equity * risk_pct / 100.0 / (price - stop)
            fee = amount * price * fee_bps / 10_000
            if amount * price + fee > cash:
                continue  # the paper broker: insufficient funds
            cash -= amount * price + fee
            positions[s] = Position(amount, price)
            fills.append(ExportedFill(t=t, symbol=s, side="buy", price=price, amount=amount, fee=fee))
        elif decision.action is Action.EXIT_LONG and positions[s].qty > 0.0:
            price = c.close * (1 - slippage_bps / 10_000)
            amount = positions[s].qty
            fee = amount * price * fee_bps / 10_000
            cash += amount * price - fee
            positions[s] = FLAT
            fills.append(ExportedFill(t=t, symbol=s, side="sell", price=price, amount=amount, fee=fee))

    return EvidenceExport(
        namespace="ns", bot="bot", config_hash="sha256:" + "c" * 64,
        strategy=RuntimeStrategy(key=key, version=version, instruments=list(symbols), timeframe="1m", params=params),
        timeframe="1m", window_start=start, window_end=end,
        candles={s: rows_of(series[s]) for s in symbols}, signals=signals, fills=fills,
        initial_positions={s: ExportedPosition(qty=p.qty, entry_price=p.entry_price)
                           for s, p in (initial_positions or {}).items()},
        starting_equity=starting_equity, max_risk_per_trade_pct=risk_pct, fee_bps=fee_bps,
        slippage_bps=slippage_bps, mode=mode, exported_at=end)
