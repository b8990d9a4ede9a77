"""``replay(export) -> ReplayReport``: the deterministic replay behind the ``ReplayVerified`` gate.

Called by the CLI (``python -m tradewarden.replay``), which the operator runs as a subprocess apart
from the live loop, and directly by tests and benchmarks. It re-runs the bot's strategy config on the
recorded bars of the export with fresh strategies from the registry (the runner never grades itself),
compares its decisions and fills with the runner's, and binds the result to the config hash, the data
hash and the strategy version through ``result_hash``.

Determinism: the strategies are deterministic by contract; symbols are processed in name order and bars
in time order; sums are correctly rounded; metrics are rounded to 10 decimals; the hash input is
canonical JSON, whose floats are Python's shortest round-tripping ``repr``. The same export therefore
gives a bit-identical report in any process, whatever ``PYTHONHASHSEED`` says.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tradewarden.api.evidence import EvidenceExport, ReplayReport
from tradewarden.api.runtime import canonical_json, sha256_hex
from tradewarden.replay.alignment import align
from tradewarden.replay.loading import ReplayInputError, prepare
from tradewarden.replay.metrics import compute_metrics
from tradewarden.replay.simulation import simulate
from tradewarden.strategies import StrategyParamsError, UnknownStrategyError, build_strategy, get_strategy


@contextmanager
def _without_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector, restoring its previous state afterwards.

    A replay allocates a few objects per bar (a ``Candle``, an equity float, a return), none of them
    part of a reference cycle; with the collector on, those allocation bursts trigger collections that
    rescan the heap, the export's millions of row floats included: about a fifth of the replay's time on
    300,000 bars, measured. Reference counting still frees everything as usual.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def replay(export: EvidenceExport) -> ReplayReport:
    """Replay ``export`` and report. Raises ``ReplayInputError`` naming a bad field, or ``StrategyError``."""
    with _without_cyclic_gc():
        return _replay(export)


def _replay(export: EvidenceExport) -> ReplayReport:
    prepared = prepare(export)
    key = export.strategy.key
    try:
        strategies = [build_strategy(key, export.strategy.params, s.symbol) for s in prepared.symbols]
    except UnknownStrategyError as exc:
        raise ReplayInputError("strategy.key", str(exc)) from None
    except StrategyParamsError as exc:
        # Each problem names its field as params.<field>; the first one becomes the error's field.
        problems = [(f"strategy.{path}", problem) for path, problem in exc.problems] or [("strategy.params", str(exc))]
        rest = "".join(f"; {path}: {problem}" for path, problem in problems[1:])
        raise ReplayInputError(problems[0][0], problems[0][1] + rest) from None
    if strategies:
        version = strategies[0].version
    else:
        # No instruments: nothing to replay, but the report still says which code would have run.
        try:
            version = get_strategy(key).version
        except UnknownStrategyError as exc:
            raise ReplayInputError("strategy.key", str(exc)) from None

    sim = simulate(prepared, strategies, starting_equity=export.starting_equity,
                   risk_pct=export.max_risk_per_trade_pct, fee_bps=export.fee_bps,
                   slippage_bps=export.slippage_bps)
    alignment = align(sim.decisions, sim.fills, export.signals, export.fills, slippage_bps=export.slippage_bps,
                      runner_version=export.strategy.version, replay_version=version)
    metrics = compute_metrics(sim.equity, prepared.timeframe_seconds)
    data_hash = export.data_hash()

    summary: dict[str, Any] = {
        "bars": sim.bars,
        "decisions": len(sim.decisions),
        "tradesCompared": len(export.fills),
        "residuals": alignment.residuals,
        "pnl": metrics.pnl,
        "maxDrawdownPct": metrics.max_drawdown_pct,
        "sharpe": metrics.sharpe,
    }
    hashed = {
        "configHash": export.config_hash,
        "dataHash": data_hash,
        "strategy": key,
        "strategyVersion": version,
        "window": [export.window_start, export.window_end],
        "decisions": [list(row) for row in sim.decisions],
        "fills": [list(row) for row in sim.fills],
        "metrics": summary,
    }
    result_hash = "sha256:" + sha256_hex(canonical_json(hashed))
    return ReplayReport(
        config_hash=export.config_hash,
        data_hash=data_hash,
        strategy_version=version,
        window_start=export.window_start,
        window_end=export.window_end,
        bars=sim.bars,
        decisions=len(sim.decisions),
        trades_compared=len(export.fills),
        residuals=alignment.residuals,
        residual_details=alignment.details,
        pnl=metrics.pnl,
        max_drawdown_pct=metrics.max_drawdown_pct,
        sharpe=metrics.sharpe,
        result_hash=result_hash,
    )
