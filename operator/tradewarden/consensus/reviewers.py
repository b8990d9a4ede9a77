"""The reviewer interface and the built-in, deterministic reviewers.

Called by :func:`tradewarden.consensus.voting.run_reviewers`, which the operator uses to collect one
vote per reviewer on a bot's :class:`~tradewarden.api.evidence.EvidenceSummary`. A built-in reviewer is
a risk policy written down: it looks only at the summary (the bot's limits and promotion settings are in
it, so a vote is a pure function of the evidence it is bound to), and its thresholds are class attributes
documented on the class. External (language-model) reviewers live in :mod:`.external`.

Verdicts and risks mean what the commissioning plan says: PROCEED / PROCEED_WITH_CAUTION count for
promotion, HOLD and ABORT against it; any CRITICAL halts the bot, more than half HIGH makes it
close-only, more than 30 % MEDIUM holds promotion (see :mod:`.scoring`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from tradewarden.api.evidence import EvidenceSummary
from tradewarden.api.tradingbot import RiskLevel, Verdict, Vote

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@runtime_checkable
class Reviewer(Protocol):
    """Anything that votes on a summary. ``review`` must not raise for a bad summary: it votes against."""

    @property
    def name(self) -> str: ...

    def review(self, summary: EvidenceSummary) -> Vote: ...


def no_answer_vote(reviewer: str, evidence_hash: str, cause: str, at: dt.datetime | None = None) -> Vote:
    """The vote of a reviewer that did not answer usably: it counts against (HOLD, MEDIUM).

    ``cause`` must be short and free of secrets and URLs; callers build it from exception types and
    status codes, never from exception text that could echo a request.
    """
    return Vote(reviewer=reviewer, verdict=Verdict.HOLD, risk=RiskLevel.MEDIUM, reason=f"no answer: {cause}"[:2048],
                evidence_hash=evidence_hash, at=at or utc_now())


class _BuiltinReviewer:
    """Shared plumbing: a name, a clock for the vote's time, and building the vote."""

    default_name = "builtin"

    def __init__(self, name: str | None = None, *, clock: Clock = utc_now) -> None:
        self._name = name or self.default_name
        self._clock = clock

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self._name!r})"

    def _vote(self, summary: EvidenceSummary, verdict: Verdict, risk: RiskLevel, reason: str) -> Vote:
        return Vote(reviewer=self._name, verdict=verdict, risk=risk, reason=reason[:2048],
                    evidence_hash=summary.evidence_hash, at=self._clock())


class DrawdownReviewer(_BuiltinReviewer):
    """The replay's max drawdown against the bot's own ``risk.maxDrawdownPct``.

    * at or above the limit: ABORT, CRITICAL — live, the runner would have halted itself;
    * at or above ``NEAR`` (80 %) of it: HOLD, HIGH — one bad day from the halt;
    * at or above ``CAUTION`` (50 %) of it: PROCEED_WITH_CAUTION, LOW;
    * below: PROCEED, LOW.

    With the limit off (0) there is nothing to judge against: PROCEED_WITH_CAUTION, LOW, and the
    risk-settings reviewer objects to the missing limit itself (one finding, one objection).
    """

    default_name = "drawdown"
    NEAR = 0.8
    CAUTION = 0.5

    def review(self, summary: EvidenceSummary) -> Vote:
        limit = summary.risk.get("maxDrawdownPct", 0.0)
        dd = summary.max_drawdown_pct
        if limit <= 0.0:
            return self._vote(summary, Verdict.PROCEED_WITH_CAUTION, RiskLevel.LOW,
                              f"replay drawdown {dd:.2f} % not judged: risk.maxDrawdownPct is 0 (off)")
        ratio = dd / limit
        text = f"replay drawdown {dd:.2f} % is {ratio:.0%} of risk.maxDrawdownPct {limit:g} %"
        if ratio >= 1.0:
            return self._vote(summary, Verdict.ABORT, RiskLevel.CRITICAL,
                              f"{text}: live, the runner would have halted itself")
        if ratio >= self.NEAR:
            return self._vote(summary, Verdict.HOLD, RiskLevel.HIGH,
                              f"{text}: at least {self.NEAR:.0%}, too close to the halt")
        if ratio >= self.CAUTION:
            return self._vote(summary, Verdict.PROCEED_WITH_CAUTION, RiskLevel.LOW,
                              f"{text}: at least {self.CAUTION:.0%}")
        return self._vote(summary, Verdict.PROCEED, RiskLevel.LOW, text)


class EvidenceAmountReviewer(_BuiltinReviewer):
    """Enough paper time and trades: ``promotion.minPaperMinutes`` and ``promotion.minTrades``.

    Too little of either: HOLD, MEDIUM (not a danger, but nothing to judge yet: investigate, wait).
    Both met: PROCEED, LOW. A missing setting is read as its TradingBot default (60 minutes, 1 trade).
    """

    default_name = "evidence-amount"
    DEFAULT_MIN_PAPER_MINUTES = 60.0
    DEFAULT_MIN_TRADES = 1.0

    def review(self, summary: EvidenceSummary) -> Vote:
        min_minutes = summary.promotion.get("minPaperMinutes", self.DEFAULT_MIN_PAPER_MINUTES)
        min_trades = summary.promotion.get("minTrades", self.DEFAULT_MIN_TRADES)
        short = []
        if summary.paper_minutes < min_minutes:
            short.append(f"{summary.paper_minutes:g} minutes in paper, promotion.minPaperMinutes needs {min_minutes:g}")
        if summary.trades_compared < min_trades:
            short.append(f"{summary.trades_compared} trades compared, promotion.minTrades needs {min_trades:g}")
        if short:
            return self._vote(summary, Verdict.HOLD, RiskLevel.MEDIUM, "; ".join(short))
        return self._vote(summary, Verdict.PROCEED, RiskLevel.LOW,
                          f"{summary.paper_minutes:g} minutes in paper and {summary.trades_compared} trades compared")


class ResidualsReviewer(_BuiltinReviewer):
    """The replay must match the runner: any residual is ABORT, HIGH; none is PROCEED, LOW.

    Stricter than ``promotion.maxResiduals`` on purpose: the gate may tolerate residuals, this reviewer
    still says that a runner which does not do what its strategy says is a risk.
    """

    default_name = "replay-residuals"

    def review(self, summary: EvidenceSummary) -> Vote:
        if summary.residuals > 0:
            return self._vote(summary, Verdict.ABORT, RiskLevel.HIGH,
                              f"{summary.residuals} residuals: the runner did not do what the replayed strategy did")
        return self._vote(summary, Verdict.PROCEED, RiskLevel.LOW,
                          f"no residuals over {summary.trades_compared} trades compared")


class RiskSettingsReviewer(_BuiltinReviewer):
    """Sanity of the bot's risk settings for live trading; the worst finding sets the vote.

    * ``maxDrawdownPct`` 0 (off): HOLD, HIGH — live without a drawdown halt;
    * ``maxRiskPerTradePct`` above ``MAX_RISK_PER_TRADE`` (5 %): HOLD, HIGH;
    * ``maxRiskPerTradePct`` above ``CAUTION_RISK_PER_TRADE`` (2 %): PROCEED_WITH_CAUTION, MEDIUM;
    * ``maxDrawdownPct`` above ``LOOSE_DRAWDOWN`` (50 %): PROCEED_WITH_CAUTION, MEDIUM — barely a limit;
    * ``maxOpenPositions`` 0: HOLD, MEDIUM — the bot could never open a position;
    * nothing found: PROCEED, LOW.

    A missing setting is read as the TradingBot default (drawdown 0, risk per trade 1 %, 3 positions).
    """

    default_name = "risk-settings"
    MAX_RISK_PER_TRADE = 5.0
    CAUTION_RISK_PER_TRADE = 2.0
    LOOSE_DRAWDOWN = 50.0

    def review(self, summary: EvidenceSummary) -> Vote:
        risk = summary.risk
        drawdown = risk.get("maxDrawdownPct", 0.0)
        per_trade = risk.get("maxRiskPerTradePct", 1.0)
        positions = risk.get("maxOpenPositions", 3.0)
        findings: list[tuple[int, Verdict, RiskLevel, str]] = []
        if drawdown <= 0.0:
            findings.append((3, Verdict.HOLD, RiskLevel.HIGH,
                             "risk.maxDrawdownPct is 0 (off): live trading without a drawdown halt"))
        elif drawdown > self.LOOSE_DRAWDOWN:
            findings.append((1, Verdict.PROCEED_WITH_CAUTION, RiskLevel.MEDIUM,
                             f"risk.maxDrawdownPct {drawdown:g} % is above {self.LOOSE_DRAWDOWN:g} %: barely a limit"))
        if per_trade > self.MAX_RISK_PER_TRADE:
            findings.append((3, Verdict.HOLD, RiskLevel.HIGH,
                             f"risk.maxRiskPerTradePct {per_trade:g} % is above {self.MAX_RISK_PER_TRADE:g} %"))
        elif per_trade > self.CAUTION_RISK_PER_TRADE:
            findings.append((1, Verdict.PROCEED_WITH_CAUTION, RiskLevel.MEDIUM,
                             f"risk.maxRiskPerTradePct {per_trade:g} % is above {self.CAUTION_RISK_PER_TRADE:g} %"))
        if positions <= 0.0:
            findings.append((2, Verdict.HOLD, RiskLevel.MEDIUM,
                             "risk.maxOpenPositions is 0: the bot could never open a position"))
        if not findings:
            return self._vote(summary, Verdict.PROCEED, RiskLevel.LOW,
                              f"risk settings sane: drawdown halt at {drawdown:g} %, {per_trade:g} % risk per trade")
        # The worst finding decides (max() keeps the first among equals); the reason lists them all.
        worst = max(findings, key=lambda f: f[0])
        return self._vote(summary, worst[1], worst[2], "; ".join(f[3] for f in findings))


class PerformanceReviewer(_BuiltinReviewer):
    """A performance floor: a replay that lost money (PnL <= 0) or has a negative Sharpe ratio is
    HOLD, MEDIUM — no reason to put real money behind it yet; otherwise PROCEED, LOW."""

    default_name = "performance"

    def review(self, summary: EvidenceSummary) -> Vote:
        text = f"replay PnL {summary.pnl:.2f}, Sharpe {summary.sharpe:.2f}"
        if summary.pnl <= 0.0 or summary.sharpe < 0.0:
            return self._vote(summary, Verdict.HOLD, RiskLevel.MEDIUM, f"{text}: no edge shown")
        return self._vote(summary, Verdict.PROCEED, RiskLevel.LOW, text)


def builtin_reviewers(*, clock: Clock = utc_now) -> list[Reviewer]:
    """One of each built-in reviewer, in a fixed order."""
    return [DrawdownReviewer(clock=clock), EvidenceAmountReviewer(clock=clock), ResidualsReviewer(clock=clock),
            RiskSettingsReviewer(clock=clock), PerformanceReviewer(clock=clock)]
