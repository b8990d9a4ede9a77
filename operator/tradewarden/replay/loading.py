"""Turn an :class:`~tradewarden.api.evidence.EvidenceExport` into what the replay loop needs, checking it.

Called by :func:`tradewarden.replay.engine.replay` once per replay, before the loop. The export comes
from a runner through a ConfigMap, so it is checked field by field here and every problem names the
field (camelCase, as on the wire) and what is wrong; the loop itself then runs on plain ``Candle``
dataclasses without any further checks or pydantic objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tradewarden.api.evidence import EvidenceExport
from tradewarden.api.market import FLAT, Candle, Position
from tradewarden.api.strategyconfig import TIMEFRAME_SECONDS

_INF = math.inf
#: The modes a runner exports from; ``signals`` places no orders, so nothing is simulated for it.
MODES = ("signals", "paper", "live")


class ReplayInputError(ValueError):
    """The export cannot be replayed as it is. ``field`` names the offending field (wire spelling).

    Consequence: no report; the replay gate stays red until the runner exports a sound window.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


@dataclass(frozen=True, slots=True)
class SymbolBars:
    """One symbol's bars, split at ``windowStart``, and its position at the start of the window."""

    symbol: str
    warmup: list[Candle]
    window: list[Candle]
    position: Position


@dataclass(frozen=True, slots=True)
class PreparedExport:
    symbols: tuple[SymbolBars, ...]
    timeframe_seconds: int
    simulate: bool


def prepare(export: EvidenceExport) -> PreparedExport:
    """Check the export and convert its candle rows to ``Candle`` objects, once."""
    seconds = TIMEFRAME_SECONDS.get(export.timeframe)
    if seconds is None:
        known = ", ".join(TIMEFRAME_SECONDS)
        raise ReplayInputError("timeframe", f"unknown timeframe {export.timeframe!r} (known: {known})")
    if export.window_end <= export.window_start:
        raise ReplayInputError(
            "windowEnd", f"must be after windowStart (got {export.window_end} <= {export.window_start})")
    if export.mode not in MODES:
        raise ReplayInputError("mode", f"must be one of {', '.join(MODES)} (got {export.mode!r})")
    simulate = export.mode != "signals"
    if simulate and not (export.starting_equity > 0.0 and math.isfinite(export.starting_equity)):
        raise ReplayInputError(
            "startingEquity", f"must be > 0 in {export.mode} mode (got {export.starting_equity!r}); the runner "
                              "exports its equity at windowStart")
    for name, value in (("maxRiskPerTradePct", export.max_risk_per_trade_pct), ("feeBps", export.fee_bps),
                        ("slippageBps", export.slippage_bps)):
        if not (0.0 <= value < _INF):
            raise ReplayInputError(name, f"must be a finite number >= 0 (got {value!r})")

    instruments = export.strategy.instruments
    if len(set(instruments)) != len(instruments):
        raise ReplayInputError("strategy.instruments", f"lists a symbol twice ({', '.join(instruments)})")
    for symbol in sorted(export.candles):
        if symbol not in instruments:
            raise ReplayInputError(
                f"candles.{symbol}", f"is not an instrument of the strategy ({', '.join(instruments)})")
    for symbol in sorted(export.initial_positions):
        if symbol not in instruments:
            raise ReplayInputError(
                f"initialPositions.{symbol}", f"is not an instrument of the strategy ({', '.join(instruments)})")

    # Sorted by name: the order of the merge, and of everything derived from it, must not depend on
    # the order in which the runner happened to write the symbols.
    symbols = tuple(_symbol_bars(export, symbol) for symbol in sorted(instruments))
    return PreparedExport(symbols=symbols, timeframe_seconds=seconds, simulate=simulate)


def _symbol_bars(export: EvidenceExport, symbol: str) -> SymbolBars:
    # An instrument without bars is replayed with none: whatever the runner did on it then shows as a
    # residual, which fails closed without refusing the whole export.
    rows = export.candles.get(symbol, [])
    start, end = export.window_start, export.window_end
    warmup: list[Candle] = []
    window: list[Candle] = []
    prev_t = -1
    for i, row in enumerate(rows):
        try:
            t_raw, o, h, low, c, v = row
        except ValueError:
            raise ReplayInputError(f"candles.{symbol}[{i}]",
                                   f"must be [t, open, high, low, close, volume] (got {len(row)} values)") from None
        try:
            t = int(t_raw)
        except (ValueError, OverflowError):  # NaN, infinity
            t = -1
        if t != t_raw or t < 0:
            raise ReplayInputError(f"candles.{symbol}[{i}]", f"t must be a whole number of ms >= 0 (got {t_raw!r})")
        if t <= prev_t:
            raise ReplayInputError(f"candles.{symbol}[{i}]", f"t must increase (got {t} after {prev_t})")
        prev_t = t
        # Chained comparisons are False for NaN, so this also refuses non-finite prices.
        if not (0.0 < low <= h < _INF and low <= o <= h and low <= c <= h and 0.0 <= v < _INF):
            raise ReplayInputError(
                f"candles.{symbol}[{i}]",
                f"needs 0 < low <= open, close <= high and volume >= 0, all finite (got {row!r})")
        if t >= end:
            # Bars after the window are not replayed (they are still part of the data hash).
            break
        (warmup if t < start else window).append(Candle(t, o, h, low, c, v))

    exported = export.initial_positions.get(symbol)
    position = FLAT
    if exported is not None:
        if not (0.0 <= exported.qty < _INF and 0.0 <= exported.entry_price < _INF):
            raise ReplayInputError(f"initialPositions.{symbol}",
                                   f"qty and entryPrice must be finite and >= 0 (got {exported.qty!r}, "
                                   f"{exported.entry_price!r})")
        if exported.qty > 0.0:
            position = Position(exported.qty, exported.entry_price)
    return SymbolBars(symbol=symbol, warmup=warmup, window=window, position=position)
