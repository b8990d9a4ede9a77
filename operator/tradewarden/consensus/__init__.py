"""Consensus: reviewers vote on a bot's evidence, and the votes become a decision.

The operator builds an :class:`~tradewarden.api.evidence.EvidenceSummary` from a replay report
(:func:`summarize`), asks every reviewer at once (:func:`run_reviewers`: the built-in risk policies of
:mod:`.reviewers` and language models behind the OpenAI-compatible chat API, :class:`ExternalReviewer`),
and scores the votes against the commissioning phase's threshold (:func:`score`). Pure apart from the
external reviewers' HTTP calls: no cluster, no exchange (an import-linter contract keeps it so).

    summary = summarize(report, bot="a", strategy="momentum", risk_level="medium", risk=spec.risk,
                        promotion=spec.promotion, requested_capital=100.0, paper_minutes=240.0)
    votes = run_reviewers([*builtin_reviewers(), ExternalReviewer(...)], summary, deadline_s=60)
    outcome = score(votes, summary.evidence_hash, spec.promotion.phase)   # outcome.decision: Approved, ...
"""

from __future__ import annotations

from tradewarden.consensus.external import ExternalReviewer, parse_answer
from tradewarden.consensus.reviewers import (
    DrawdownReviewer,
    EvidenceAmountReviewer,
    PerformanceReviewer,
    ResidualsReviewer,
    Reviewer,
    RiskSettingsReviewer,
    builtin_reviewers,
    no_answer_vote,
)
from tradewarden.consensus.scoring import (
    APPROVED,
    CLOSE_ONLY,
    HALT,
    HELD,
    MISSING,
    PHASE_THRESHOLDS,
    REJECTED,
    ConsensusOutcome,
    score,
    threshold_for,
)
from tradewarden.consensus.summaries import evidence_hash_of, summarize
from tradewarden.consensus.voting import run_reviewers

__all__ = [
    "APPROVED",
    "CLOSE_ONLY",
    "HALT",
    "HELD",
    "MISSING",
    "PHASE_THRESHOLDS",
    "REJECTED",
    "ConsensusOutcome",
    "DrawdownReviewer",
    "EvidenceAmountReviewer",
    "ExternalReviewer",
    "PerformanceReviewer",
    "ResidualsReviewer",
    "Reviewer",
    "RiskSettingsReviewer",
    "builtin_reviewers",
    "evidence_hash_of",
    "no_answer_vote",
    "parse_answer",
    "run_reviewers",
    "score",
    "summarize",
    "threshold_for",
]
