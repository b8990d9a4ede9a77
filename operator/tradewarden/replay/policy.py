"""``passes(report, promotion)``: does a replay report satisfy the bot's promotion settings?

Pure policy, called by the operator when it records ``status.replay.passed`` and the ``ReplayVerified``
condition, and by tests. A chain of checks in the house style: the first failure supplies the reason and
a message that names the numbers and the setting to change; nothing here looks at the clock (freshness
is the gate's business, see ``controller.gate``).
"""

from __future__ import annotations

from typing import NamedTuple

from tradewarden.api.evidence import ReplayReport
from tradewarden.api.tradingbot import PromotionSpec

PASSED = "Passed"
FAILED = "Failed"
INSUFFICIENT_TRADES = "InsufficientTrades"


class ReplayVerdict(NamedTuple):
    """A tuple ``(passed, reason, message)``; ``reason`` is one of Passed, Failed, InsufficientTrades."""

    passed: bool
    reason: str
    message: str


def passes(report: ReplayReport, promotion: PromotionSpec) -> ReplayVerdict:
    if report.residuals > promotion.max_residuals:
        first = f"; first: {report.residual_details[0]}" if report.residual_details else ""
        return ReplayVerdict(False, FAILED,
                             f"the replay found {report.residuals} residuals between replay and runner; "
                             f"spec.promotion.maxResiduals allows {promotion.max_residuals}{first}")
    covered = (report.window_end - report.window_start) // 60_000
    if covered < promotion.replay_window_minutes:
        # A runner that (re)started recently exports only the bars it acted on: too little evidence yet.
        return ReplayVerdict(False, INSUFFICIENT_TRADES,
                             f"the replay window covers {covered} minutes; spec.promotion.replayWindowMinutes "
                             f"needs {promotion.replay_window_minutes}: let the runner trade longer")
    if report.trades_compared < promotion.min_trades:
        return ReplayVerdict(False, INSUFFICIENT_TRADES,
                             f"the replay compared {report.trades_compared} trades; spec.promotion.minTrades "
                             f"needs {promotion.min_trades}: let the bot trade longer in paper")
    return ReplayVerdict(True, PASSED,
                         f"the replay matched the runner: {report.trades_compared} trades compared, "
                         f"{report.residuals} residuals (spec.promotion.maxResiduals {promotion.max_residuals}), "
                         f"{report.bars} bars, PnL {report.pnl:.2f}, max drawdown {report.max_drawdown_pct:.2f} %")
