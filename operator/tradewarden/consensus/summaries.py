"""``summarize``: the redacted :class:`~tradewarden.api.evidence.EvidenceSummary` reviewers judge.

Called by the operator after a replay, with the report and pieces of the bot's spec and status. The
summary is redacted by construction: it copies numbers (replay metrics, risk limits, promotion
settings), the bot's name, the strategy's registry key, version and risk level, and hashes — never a
Secret's name, a key, an exchange URL or free text written by a user. ``evidence_hash`` covers every
other field, so a vote bound to it is bound to exactly these numbers, and through ``configHash`` and
``replayResultHash`` to the config and the replay.
"""

from __future__ import annotations

import math
from typing import Any

from tradewarden.api.evidence import EvidenceSummary, ReplayReport
from tradewarden.api.tradingbot import PromotionSpec, RiskLimits

_HASH_FIELD = "evidenceHash"


def _numbers(wire: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(wire.items())
            if isinstance(v, int | float) and not isinstance(v, bool)}


def evidence_hash_of(summary: EvidenceSummary) -> str:
    """The hash of every field of ``summary`` but ``evidence_hash`` itself."""
    payload = summary.to_wire()
    payload.pop(_HASH_FIELD, None)
    return EvidenceSummary.hash_of(payload)


def summarize(report: ReplayReport, *, bot: str, strategy: str, risk_level: str, risk: RiskLimits,
              promotion: PromotionSpec, requested_capital: float, paper_minutes: float) -> EvidenceSummary:
    """Build the summary of ``report`` for ``bot`` and bind it to its own hash.

    ``strategy`` and ``risk_level`` are the registry key and metadata of the bot's StrategyConfig,
    ``requested_capital`` the live capital asked for (the ramp step), ``paper_minutes`` the time the bot
    has spent in paper mode; the phase is ``promotion.phase``.
    """
    for name, value in (("requested_capital", requested_capital), ("paper_minutes", paper_minutes)):
        if not (math.isfinite(value) and value >= 0.0):
            raise ValueError(f"{name}: must be a finite number >= 0 (got {value!r})")
    unsigned = EvidenceSummary(
        bot=bot,
        strategy=strategy,
        strategy_version=report.strategy_version,
        risk_level=risk_level,
        phase=promotion.phase,
        requested_capital=float(requested_capital),
        window_minutes=max(0, (report.window_end - report.window_start) // 60_000),
        paper_minutes=float(paper_minutes),
        trades_compared=report.trades_compared,
        residuals=report.residuals,
        pnl=report.pnl,
        max_drawdown_pct=report.max_drawdown_pct,
        sharpe=report.sharpe,
        risk=_numbers(risk.to_wire()),
        promotion=_numbers(promotion.to_wire()),
        config_hash=report.config_hash,
        replay_result_hash=report.result_hash,
        evidence_hash="",
    )
    return unsigned.model_copy(update={"evidence_hash": evidence_hash_of(unsigned)})
