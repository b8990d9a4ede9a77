"""Deterministic replay: re-run a bot's strategy on its recorded window and compare with the runner.

The operator runs ``python -m tradewarden.replay`` as a subprocess (apart from the live loop) on the
``EvidenceExport`` a runner wrote, and records the ``ReplayReport`` it prints in the bot's status;
:func:`passes` then decides ``ReplayVerified``. Pure: no cluster, no exchange, no ccxt, no clock (an
import-linter contract in pyproject.toml keeps it so).

    report = replay(export)                       # ReplayInputError names a bad field
    ok, reason, message = passes(report, bot.spec.promotion)

Modules: ``loading`` checks the export and converts its bars, ``simulation`` is the loop and fill model,
``alignment`` finds the residuals, ``metrics`` computes PnL, drawdown and Sharpe, ``engine`` ties them
together and hashes the result, ``policy`` is the pass/fail rule, ``cli`` the command line.
"""

from __future__ import annotations

from tradewarden.replay.engine import replay
from tradewarden.replay.loading import ReplayInputError
from tradewarden.replay.policy import FAILED, INSUFFICIENT_TRADES, PASSED, ReplayVerdict, passes

__all__ = ["FAILED", "INSUFFICIENT_TRADES", "PASSED", "ReplayInputError", "ReplayVerdict", "passes", "replay"]
