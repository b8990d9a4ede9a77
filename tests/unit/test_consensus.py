"""Unit tests of ``tradewarden.consensus``: the scoring rules and their precedence, the built-in
reviewers, running reviewers against a deadline, the summary and its hash, parsing model answers.

Tables first: each row is a panel of votes (or a summary) and the decision (or vote) it must produce.
The external reviewer's HTTP side is tested against a real local server in
``tests/integration/test_external_reviewer.py``.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import pytest

from tradewarden.api.evidence import EvidenceSummary, ReplayReport
from tradewarden.api.tradingbot import PromotionSpec, RiskLevel, RiskLimits, Verdict, Vote
from tradewarden.consensus import (
    APPROVED,
    CLOSE_ONLY,
    HALT,
    HELD,
    MISSING,
    REJECTED,
    DrawdownReviewer,
    EvidenceAmountReviewer,
    ExternalReviewer,
    PerformanceReviewer,
    ResidualsReviewer,
    RiskSettingsReviewer,
    builtin_reviewers,
    evidence_hash_of,
    parse_answer,
    run_reviewers,
    score,
    summarize,
    threshold_for,
)
from tradewarden.consensus.external import _NoAnswer

H = "sha256:" + "e" * 64
AT = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
VERDICTS = {"P": Verdict.PROCEED, "C": Verdict.PROCEED_WITH_CAUTION, "H": Verdict.HOLD, "A": Verdict.ABORT}
RISKS = {"L": RiskLevel.LOW, "M": RiskLevel.MEDIUM, "H": RiskLevel.HIGH, "C": RiskLevel.CRITICAL}


def panel(spec: str, evidence_hash: str = H) -> list[Vote]:
    """``"PL PL CM HH"``: one vote per word, verdict letter then risk letter, reviewers r0, r1, ..."""
    return [Vote(reviewer=f"r{i}", verdict=VERDICTS[w[0]], risk=RISKS[w[1]], reason="", evidence_hash=evidence_hash,
                 at=AT) for i, w in enumerate(spec.split())]


# --- scoring -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("votes", "phase", "decision", "score_pct"),
    [
        # threshold per phase, exactly at and just below it
        ("PL PL PL PL PL PL PL HL HL HL", 1, APPROVED, 70.0),
        ("PL PL PL PL PL PL CL HL HL HL", 1, REJECTED, 65.0),
        ("PL PL PL HL", 2, APPROVED, 75.0),
        ("PL PL PL PL HL", 3, APPROVED, 80.0),
        ("PL PL PL CL HL", 3, REJECTED, 70.0),
        ("PL PL PL PL PL PL CL", 4, APPROVED, 92.8571),
        ("PL PL PL PL PL PL HL", 4, APPROVED, 85.7143),
        ("PL PL PL PL PL PL PL PL PL HL", 5, APPROVED, 90.0),
        ("PL PL PL PL PL PL PL PL HL", 5, REJECTED, 88.8889),
        # caution counts half
        ("PL CL", 1, APPROVED, 75.0),
        ("CL CL", 1, REJECTED, 50.0),
        ("CL CL CL CL", 5, REJECTED, 50.0),
        ("PL PL PL PL PL PL PL PL PL CL", 5, APPROVED, 95.0),
        # unanimous
        ("PL", 5, APPROVED, 100.0),
        ("PL PL PL", 5, APPROVED, 100.0),
        ("AL AL", 1, REJECTED, 0.0),
        # no votes
        ("", 3, MISSING, 0.0),
    ],
)
def test_scoring_table(votes: str, phase: int, decision: str, score_pct: float) -> None:
    outcome = score(panel(votes), H, phase)
    assert outcome.decision == decision, outcome.message
    assert outcome.score_pct == pytest.approx(score_pct, abs=1e-4)
    assert outcome.threshold_pct == threshold_for(phase)
    assert outcome.approved is (decision == APPROVED)


@pytest.mark.parametrize(
    ("votes", "decision", "why"),
    [
        # 1. any CRITICAL halts, even in an otherwise unanimous panel
        ("PC PL PL PL PL PL PL PL PL PL", HALT, "CRITICAL risk reported by r0"),
        ("PL HC HH HH", HALT, "CRITICAL risk reported by r1"),
        # 2. more than half HIGH (or worse): close-only, before the MEDIUM rule
        ("PH PH PL", CLOSE_ONLY, "2 of 3 votes at HIGH risk or worse"),
        ("HH HH HH PM PM", CLOSE_ONLY, "3 of 5 votes at HIGH"),
        # exactly half HIGH is not more than half: the MEDIUM rule takes it (HIGH is at least MEDIUM)
        ("PH PH PL PL", HELD, "2 of 4 votes at MEDIUM risk or worse"),
        # 3. more than 30 % MEDIUM (or worse) holds, even with full agreement
        ("PM PL PL", HELD, "1 of 3 votes at MEDIUM"),
        ("PM PM PM PM PL PL PL PL PL PL", HELD, "4 of 10 votes at MEDIUM"),
        # exactly 30 % is not more than 30 %
        ("PM PM PM PL PL PL PL PL PL PL", APPROVED, "agreement 100 %"),
        ("PH PL PL PL", APPROVED, "agreement 100 %"),
        # 4. a tie fails, stated as such
        ("PL HL", REJECTED, "a tie fails"),
        ("PL PL AL AL", REJECTED, "a tie fails"),
        ("CL CL HL PL", REJECTED, "a tie fails"),
        # 5. below the threshold
        ("PL PL HL", REJECTED, "below the threshold"),
    ],
)
def test_rule_precedence(votes: str, decision: str, why: str) -> None:
    outcome = score(panel(votes), H, 1)
    assert outcome.decision == decision, outcome.message
    assert why in outcome.reasons[0]


def test_a_tie_fails_whatever_the_count() -> None:
    for n in (1, 2, 5, 10):
        outcome = score(panel(" ".join(["PL"] * n + ["HL"] * n)), H, 1)
        assert outcome.decision == REJECTED
        assert outcome.score_pct == 50.0
        assert outcome.reasons[0].startswith("a tie fails")


def test_stale_votes_are_ignored() -> None:
    current = panel("PL PL PL PL")
    stale = [v.model_copy(update={"reviewer": f"old{i}", "evidence_hash": "sha256:old"})
             for i, v in enumerate(panel("AC AC AC AC AC"))]
    outcome = score([*stale, *current], H, 5)
    assert outcome.decision == APPROVED
    assert outcome.votes_used == current
    assert outcome.stale == ["old0", "old1", "old2", "old3", "old4"]
    assert "ignored 5 stale vote(s)" in outcome.message
    assert score(stale, H, 1).decision == MISSING


def test_a_reviewer_votes_once_the_first_vote_counts() -> None:
    votes = panel("PL PL PL PL")
    again = [votes[0].model_copy(update={"verdict": Verdict.ABORT, "risk": RiskLevel.CRITICAL}),
             votes[1].model_copy(update={"verdict": Verdict.HOLD})]
    outcome = score([*votes, *again], H, 5)
    assert outcome.decision == APPROVED
    assert outcome.votes_used == votes
    assert outcome.duplicates == ["r0", "r1"]
    assert "ignored duplicate vote(s) of r0, r1: the first vote counts" in outcome.reasons


def test_a_stale_first_vote_does_not_shadow_a_current_one() -> None:
    current = panel("PL")
    stale = current[0].model_copy(update={"evidence_hash": "sha256:old", "verdict": Verdict.ABORT})
    outcome = score([stale, *current], H, 1)
    assert (outcome.decision, outcome.duplicates, outcome.stale) == (APPROVED, [], ["r0"])


def test_no_answer_votes_count_against() -> None:
    summary = _summary()
    silent = run_reviewers([_Raises()], summary, deadline_s=1.0)
    votes = [*panel("PL PL PL PL", summary.evidence_hash), *silent]
    assert score(votes[:4], summary.evidence_hash, 4).score_pct == 100.0
    # With the non-answer counted: 4 of 5 for (80 %), one MEDIUM (20 %, under the 30 % hold rule).
    assert score(votes, summary.evidence_hash, 3).score_pct == 80.0
    assert score(votes, summary.evidence_hash, 3).decision == APPROVED
    assert score(votes, summary.evidence_hash, 4).decision == REJECTED


@pytest.mark.parametrize("phase", [0, 6, -1])
def test_a_phase_outside_one_to_five_is_refused(phase: int) -> None:
    with pytest.raises(ValueError, match=rf"phase: must be 1..5 \(got {phase}\)"):
        score([], H, phase)


def test_outcome_to_status() -> None:
    outcome = score(panel("PL PL PL PL HL"), H, 3)
    status = outcome.to_status(H, 3)
    assert (status.decision, status.score_pct, status.threshold_pct, status.phase) == (APPROVED, 80.0, 80.0, 3)
    assert status.evidence_hash == H
    assert len(status.votes) == 5


# --- built-in reviewers --------------------------------------------------------------------------------


def _summary(**changes: Any) -> EvidenceSummary:
    risk = {**RiskLimits(max_drawdown_pct=10.0).to_wire(), **changes.pop("risk", {})}
    promotion = {**PromotionSpec().to_wire(), **changes.pop("promotion", {})}
    base: dict[str, Any] = dict(
        bot="a", strategy="momentum", strategy_version="1.0.0", risk_level="medium", phase=3,
        requested_capital=100.0, window_minutes=240, paper_minutes=600.0, trades_compared=12, residuals=0,
        pnl=25.0, max_drawdown_pct=2.0, sharpe=1.4, risk={k: float(v) for k, v in risk.items()},
        promotion={k: float(v) for k, v in promotion.items()}, evidence_hash="")
    base.update(changes)
    unsigned = EvidenceSummary(**base)
    return unsigned.model_copy(update={"evidence_hash": evidence_hash_of(unsigned)})


V, R = Verdict, RiskLevel


@pytest.mark.parametrize(
    ("reviewer", "changes", "verdict", "risk", "reason"),
    [
        (DrawdownReviewer, {}, V.PROCEED, R.LOW, "replay drawdown 2.00 % is 20% of risk.maxDrawdownPct 10 %"),
        (DrawdownReviewer, {"max_drawdown_pct": 5.0}, V.PROCEED_WITH_CAUTION, R.LOW, "at least 50%"),
        (DrawdownReviewer, {"max_drawdown_pct": 8.0}, V.HOLD, R.HIGH, "too close to the halt"),
        (DrawdownReviewer, {"max_drawdown_pct": 10.0}, V.ABORT, R.CRITICAL, "the runner would have halted itself"),
        (DrawdownReviewer, {"max_drawdown_pct": 30.0}, V.ABORT, R.CRITICAL, "300% of risk.maxDrawdownPct"),
        (DrawdownReviewer, {"risk": {"maxDrawdownPct": 0}}, V.PROCEED_WITH_CAUTION, R.LOW, "is 0 (off)"),
        (EvidenceAmountReviewer, {}, V.PROCEED, R.LOW, "600 minutes in paper and 12 trades compared"),
        (EvidenceAmountReviewer, {"paper_minutes": 59.0}, V.HOLD, R.MEDIUM,
         "59 minutes in paper, promotion.minPaperMinutes needs 60"),
        (EvidenceAmountReviewer, {"trades_compared": 4, "promotion": {"minTrades": 5}}, V.HOLD, R.MEDIUM,
         "4 trades compared, promotion.minTrades needs 5"),
        (EvidenceAmountReviewer, {"paper_minutes": 0.0, "trades_compared": 0}, V.HOLD, R.MEDIUM,
         "0 minutes in paper, promotion.minPaperMinutes needs 60; 0 trades compared, promotion.minTrades needs 1"),
        (ResidualsReviewer, {}, V.PROCEED, R.LOW, "no residuals over 12 trades compared"),
        (ResidualsReviewer, {"residuals": 1}, V.ABORT, R.HIGH, "1 residuals"),
        (RiskSettingsReviewer, {}, V.PROCEED, R.LOW, "risk settings sane"),
        (RiskSettingsReviewer, {"risk": {"maxDrawdownPct": 0}}, V.HOLD, R.HIGH,
         "risk.maxDrawdownPct is 0 (off): live trading without a drawdown halt"),
        (RiskSettingsReviewer, {"risk": {"maxRiskPerTradePct": 6}}, V.HOLD, R.HIGH,
         "risk.maxRiskPerTradePct 6 % is above 5 %"),
        (RiskSettingsReviewer, {"risk": {"maxRiskPerTradePct": 5}}, V.PROCEED_WITH_CAUTION, R.MEDIUM,
         "risk.maxRiskPerTradePct 5 % is above 2 %"),
        (RiskSettingsReviewer, {"risk": {"maxDrawdownPct": 60}}, V.PROCEED_WITH_CAUTION, R.MEDIUM, "barely a limit"),
        (RiskSettingsReviewer, {"risk": {"maxOpenPositions": 0}}, V.HOLD, R.MEDIUM, "could never open a position"),
        # several findings: the worst decides, the reason lists them all
        (RiskSettingsReviewer, {"risk": {"maxDrawdownPct": 60, "maxRiskPerTradePct": 8}}, V.HOLD, R.HIGH,
         "barely a limit; risk.maxRiskPerTradePct 8 % is above 5 %"),
        (PerformanceReviewer, {}, V.PROCEED, R.LOW, "replay PnL 25.00, Sharpe 1.40"),
        (PerformanceReviewer, {"pnl": 0.0}, V.HOLD, R.MEDIUM, "no edge shown"),
        (PerformanceReviewer, {"pnl": 10.0, "sharpe": -0.1}, V.HOLD, R.MEDIUM, "no edge shown"),
    ],
)
def test_builtin_reviewers_table(reviewer: type, changes: dict[str, Any], verdict: Verdict, risk: RiskLevel,
                                 reason: str) -> None:
    summary = _summary(**changes)
    vote = reviewer(clock=lambda: AT).review(summary)
    assert (vote.verdict, vote.risk) == (verdict, risk), vote.reason
    assert reason in vote.reason
    assert vote.reviewer == reviewer.default_name
    assert vote.evidence_hash == summary.evidence_hash
    assert vote.at == AT


def test_builtin_panel_on_good_evidence_approves_at_every_phase() -> None:
    summary = _summary()
    votes = [r.review(summary) for r in builtin_reviewers()]
    assert [v.reviewer for v in votes] == ["drawdown", "evidence-amount", "replay-residuals", "risk-settings",
                                           "performance"]
    for phase in range(1, 6):
        assert score(votes, summary.evidence_hash, phase).decision == APPROVED


def test_builtin_panel_halts_on_a_drawdown_breach() -> None:
    summary = _summary(max_drawdown_pct=12.0)
    assert score([r.review(summary) for r in builtin_reviewers()], summary.evidence_hash, 1).decision == HALT


# --- run_reviewers -------------------------------------------------------------------------------------


class _Fixed:
    def __init__(self, name: str, verdict: Verdict = Verdict.PROCEED, delay: float = 0.0) -> None:
        self.name, self.verdict, self.delay = name, verdict, delay

    def review(self, summary: EvidenceSummary) -> Vote:
        time.sleep(self.delay)
        return Vote(reviewer=self.name, verdict=self.verdict, risk=RiskLevel.LOW, evidence_hash=summary.evidence_hash,
                    at=AT)


class _Raises:
    name = "raises"

    def review(self, summary: EvidenceSummary) -> Vote:
        raise RuntimeError("boom with secret sk-should-not-leak")


class _Wrong:
    name = "wrong"

    def review(self, summary: EvidenceSummary) -> Any:
        return {"verdict": "PROCEED"}


class _Impostor:
    name = "impostor"

    def review(self, summary: EvidenceSummary) -> Vote:
        return Vote(reviewer="someone-else", verdict=Verdict.PROCEED, risk=RiskLevel.LOW,
                    evidence_hash=summary.evidence_hash)


def test_run_reviewers_one_vote_each_in_order_with_no_answers_against() -> None:
    summary = _summary()
    reviewers = [_Fixed("fast"), _Fixed("slow", delay=5.0), _Raises(), _Wrong(), _Impostor(),
                 _Fixed("late-ok", delay=0.1)]
    started = time.monotonic()
    votes = run_reviewers(reviewers, summary, deadline_s=0.5, clock=lambda: AT)
    elapsed = time.monotonic() - started
    assert elapsed < 3.0  # the slow reviewer is abandoned at the deadline, not awaited
    assert [v.reviewer for v in votes] == ["fast", "slow", "raises", "wrong", "impostor", "late-ok"]
    assert [v.verdict for v in votes] == [Verdict.PROCEED, Verdict.HOLD, Verdict.HOLD, Verdict.HOLD, Verdict.PROCEED,
                                          Verdict.PROCEED]
    assert votes[1].reason == "no answer: no vote within 0.5 s"
    assert votes[2].reason == "no answer: reviewer raised RuntimeError"
    assert "sk-should-not-leak" not in votes[2].model_dump_json()
    assert votes[3].reason == "no answer: reviewer returned dict, not a Vote"
    assert all(v.evidence_hash == summary.evidence_hash for v in votes)
    assert all(v.risk == RiskLevel.MEDIUM for v in votes[1:4])


def test_run_reviewers_runs_them_concurrently() -> None:
    barrier = threading.Barrier(3, timeout=5)

    class Waits(_Fixed):
        def review(self, summary: EvidenceSummary) -> Vote:
            barrier.wait()  # only returns once all three are running at the same time
            return super().review(summary)

    votes = run_reviewers([Waits("a"), Waits("b"), Waits("c")], _summary(), deadline_s=5.0)
    assert [v.verdict for v in votes] == [Verdict.PROCEED] * 3


def test_run_reviewers_needs_a_positive_deadline() -> None:
    with pytest.raises(ValueError, match="deadline_s: must be > 0"):
        run_reviewers([], _summary(), deadline_s=0)


# --- summarize --------------------------------------------------------------------------------------------


def _report(**changes: Any) -> ReplayReport:
    base: dict[str, Any] = dict(
        config_hash="sha256:" + "c" * 64, data_hash="sha256:" + "d" * 64, strategy_version="1.0.0",
        window_start=1_704_067_200_000, window_end=1_704_067_200_000 + 240 * 60_000, bars=240, decisions=8,
        trades_compared=8, residuals=0, pnl=12.5, max_drawdown_pct=1.25, sharpe=0.9,
        result_hash="sha256:" + "f" * 64)
    base.update(changes)
    return ReplayReport(**base)


def _summarize(report: ReplayReport, **changes: Any) -> EvidenceSummary:
    kwargs: dict[str, Any] = dict(bot="a", strategy="sma_cross", risk_level="medium",
                                  risk=RiskLimits(max_drawdown_pct=10.0), promotion=PromotionSpec(phase=2),
                                  requested_capital=100.0, paper_minutes=300.0)
    kwargs.update(changes)
    return summarize(report, **kwargs)


def test_summarize_copies_numbers_and_binds_its_hash() -> None:
    report = _report()
    summary = _summarize(report)
    assert (summary.bot, summary.strategy, summary.strategy_version, summary.phase) == ("a", "sma_cross", "1.0.0", 2)
    assert (summary.window_minutes, summary.trades_compared, summary.residuals) == (240, 8, 0)
    assert (summary.pnl, summary.max_drawdown_pct, summary.sharpe) == (12.5, 1.25, 0.9)
    assert summary.risk["maxDrawdownPct"] == 10.0
    assert summary.risk["maxRiskPerTradePct"] == 1.0
    assert summary.promotion["minPaperMinutes"] == 60.0
    assert summary.config_hash == report.config_hash
    assert summary.replay_result_hash == report.result_hash
    assert summary.evidence_hash == evidence_hash_of(summary)
    assert summary.evidence_hash.startswith("sha256:")
    # Deterministic, and every field counts.
    assert _summarize(_report()).evidence_hash == summary.evidence_hash
    for other in (_summarize(_report(pnl=12.6)), _summarize(report, paper_minutes=301.0),
                  _summarize(report, risk=RiskLimits(max_drawdown_pct=11.0)),
                  _summarize(report, promotion=PromotionSpec(phase=3)),
                  _summarize(_report(result_hash="sha256:" + "0" * 64)),
                  _summarize(_report(config_hash="sha256:" + "1" * 64))):
        assert other.evidence_hash != summary.evidence_hash


def test_summarize_refuses_nonsense_numbers() -> None:
    with pytest.raises(ValueError, match="requested_capital: must be a finite number >= 0"):
        _summarize(_report(), requested_capital=float("nan"))


def test_the_summary_carries_nothing_secret() -> None:
    wire = _summarize(_report()).to_wire()
    text = str(wire).lower()
    for word in ("secret", "apikey", "password", "http", "credential"):
        assert word not in text


# --- parsing model answers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"verdict": "PROCEED", "risk": "LOW", "reason": "fine"}', (V.PROCEED, R.LOW, "fine")),
        ('```json\n{"verdict": "HOLD", "risk": "MEDIUM", "reason": "wait"}\n```', (V.HOLD, R.MEDIUM, "wait")),
        ('Here you go:\n```\n{"verdict": "ABORT", "risk": "HIGH"}\n```', (V.ABORT, R.HIGH, "")),
        ('{"verdict": "proceed with caution", "risk": "low", "reason": "a\\nb"}',
         (V.PROCEED_WITH_CAUTION, R.LOW, "a b")),
        ('{"verdict": "HOLD_OR_INVESTIGATE", "risk": "CRITICAL", "reason": "x"}', (V.HOLD, R.CRITICAL, "x")),
    ],
)
def test_parse_answer_accepts(content: str, expected: tuple[Verdict, RiskLevel, str]) -> None:
    assert parse_answer(content) == expected


@pytest.mark.parametrize(
    ("content", "cause"),
    [
        ("I think you should proceed.", "unparseable answer"),
        ("[1, 2]", "unparseable answer"),
        ('{"verdict": "MAYBE", "risk": "LOW"}', "verdict 'MAYBE' is not one of PROCEED, PROCEED_WITH_CAUTION"),
        ('{"verdict": "PROCEED", "risk": "EXTREME"}', "risk 'EXTREME' is not one of LOW, MEDIUM, HIGH, CRITICAL"),
        ('{"risk": "LOW"}', "verdict (missing)"),
    ],
)
def test_parse_answer_refuses(content: str, cause: str) -> None:
    with pytest.raises(_NoAnswer) as caught:
        parse_answer(content)
    assert cause in caught.value.cause


def test_external_reviewer_checks_its_settings_without_echoing_secrets() -> None:
    key = "sk-canary-settings-0123456789"
    with pytest.raises(ValueError, match="base_url: must be an http") as caught:
        ExternalReviewer("m", f"ftp://user:{key}@example.test/v1", "gpt", key)
    assert key not in str(caught.value)
    with pytest.raises(ValueError, match="timeout_s: must be > 0"):
        ExternalReviewer("m", "http://127.0.0.1:1/v1", "gpt", key, timeout_s=0)
    reviewer = ExternalReviewer("m", f"https://user:{key}@llm.example.test:8443/v1?token={key}", "gpt", key)
    assert key not in repr(reviewer)
    assert reviewer.url == "https://llm.example.test:8443/v1/chat/completions"
    assert key not in str(reviewer.__dict__)
