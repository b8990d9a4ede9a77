"""``score(votes, evidence_hash, phase)``: turn reviewer votes into a consensus decision.

Pure and table-tested; called by the operator after :func:`~tradewarden.consensus.voting.run_reviewers`
to fill ``status.consensus`` (:meth:`ConsensusOutcome.to_status`) and to act on the decision: ``Halt``
engages a bot-scoped halt, ``CloseOnly`` a bot-scoped close-only, anything but ``Approved`` keeps the
bot out of live.

Counting:

* A vote whose ``evidence_hash`` is not the current one judged other evidence: ignored (listed in
  ``stale``). Among the rest, one vote per reviewer: the first is kept, later ones are listed in
  ``duplicates`` and ignored, so a reviewer cannot outvote the others by answering twice.
* Agreement: PROCEED counts 1, PROCEED_WITH_CAUTION counts 1/2, HOLD and ABORT count 0, over the votes
  counted (non-answers are HOLD votes, so they count against). Caution counts half because it is
  agreement with reservations: counting it fully would let a panel that is unanimous only in its doubts
  approve at phase 5, counting it as nothing would make it a HOLD.
* The threshold rises with the commissioning phase: 70, 75, 80, 85, 90 %.

Decisions, the first rule that applies wins (the emergency protocol of the commissioning plan first):

1. no vote counted: ``Missing``;
2. any CRITICAL risk: ``Halt``;
3. more than 50 % of the votes at HIGH or worse: ``CloseOnly``;
4. more than 30 % at MEDIUM or worse: ``Held`` (investigate; no promotion);
5. a tie — agreement exactly 50 %, as much for as against — fails: ``Rejected`` (stated apart so that the
   rule holds whatever the threshold);
6. agreement at or above the threshold: ``Approved``; below: ``Rejected``.

Comparisons are done in integers (half-votes), so 80 % against an 80 % threshold is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tradewarden.api.tradingbot import ConsensusStatus, RiskLevel, Verdict, Vote

PHASE_THRESHOLDS: dict[int, int] = {1: 70, 2: 75, 3: 80, 4: 85, 5: 90}

APPROVED = "Approved"
HELD = "Held"
REJECTED = "Rejected"
CLOSE_ONLY = "CloseOnly"
HALT = "Halt"
MISSING = "Missing"

#: Agreement of each verdict in half-votes: PROCEED 2, PROCEED_WITH_CAUTION 1, the others 0.
HALF_VOTES: dict[Verdict, int] = {
    Verdict.PROCEED: 2, Verdict.PROCEED_WITH_CAUTION: 1, Verdict.HOLD: 0, Verdict.ABORT: 0,
}
_SEVERITY: dict[RiskLevel, int] = {RiskLevel.LOW: 0, RiskLevel.MEDIUM: 1, RiskLevel.HIGH: 2, RiskLevel.CRITICAL: 3}
#: ConsensusStatus holds at most this many votes.
MAX_STATUS_VOTES = 32


@dataclass(frozen=True)
class ConsensusOutcome:
    """The decision and everything that led to it; ``reasons[0]`` is the deciding rule."""

    decision: str
    score_pct: float
    threshold_pct: float
    votes_used: list[Vote]
    reasons: list[str]
    stale: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)

    @property
    def approved(self) -> bool:
        return self.decision == APPROVED

    @property
    def message(self) -> str:
        return "; ".join(self.reasons)

    def to_status(self, evidence_hash: str, phase: int) -> ConsensusStatus:
        return ConsensusStatus(phase=phase, threshold_pct=self.threshold_pct, score_pct=self.score_pct,
                               evidence_hash=evidence_hash, decision=self.decision,
                               votes=self.votes_used[:MAX_STATUS_VOTES])


def threshold_for(phase: int) -> int:
    """Agreement needed at a commissioning phase, in percent; ValueError outside 1..5."""
    try:
        return PHASE_THRESHOLDS[phase]
    except KeyError:
        raise ValueError(f"phase: must be 1..5 (got {phase!r}); see spec.promotion.phase") from None


def score(votes: Sequence[Vote], evidence_hash: str, phase: int) -> ConsensusOutcome:
    threshold = threshold_for(phase)
    stale = [v.reviewer for v in votes if v.evidence_hash != evidence_hash]
    used: list[Vote] = []
    seen: set[str] = set()
    duplicates: list[str] = []
    for vote in votes:
        if vote.evidence_hash != evidence_hash:
            continue
        if vote.reviewer in seen:
            duplicates.append(vote.reviewer)
            continue
        seen.add(vote.reviewer)
        used.append(vote)

    notes = []
    if stale:
        notes.append(f"ignored {len(stale)} stale vote(s) on other evidence: {', '.join(stale)}")
    if duplicates:
        notes.append(f"ignored duplicate vote(s) of {', '.join(duplicates)}: the first vote counts")

    def outcome(decision: str, pct: float, first: str) -> ConsensusOutcome:
        return ConsensusOutcome(decision=decision, score_pct=pct, threshold_pct=float(threshold),
                                votes_used=used, reasons=[first, *notes], stale=stale, duplicates=duplicates)

    n = len(used)
    if n == 0:
        return outcome(MISSING, 0.0, "no current vote to count")
    half_votes = sum(HALF_VOTES[v.verdict] for v in used)
    pct = round(100.0 * half_votes / (2 * n), 4)
    tally = (f"agreement {pct:g} % ({half_votes / 2:g} of {n} votes for; caution counts half), "
             f"phase {phase} needs {threshold} %")

    critical = [v.reviewer for v in used if v.risk == RiskLevel.CRITICAL]
    if critical:
        return outcome(HALT, pct, f"CRITICAL risk reported by {', '.join(critical)}: halt the bot; {tally}")
    high = sum(1 for v in used if _SEVERITY[v.risk] >= 2)
    if 2 * high > n:
        return outcome(CLOSE_ONLY, pct, f"{high} of {n} votes at HIGH risk or worse (more than 50 %): "
                                        f"close-only; {tally}")
    medium = sum(1 for v in used if _SEVERITY[v.risk] >= 1)
    if 10 * medium > 3 * n:
        return outcome(HELD, pct, f"{medium} of {n} votes at MEDIUM risk or worse (more than 30 %): "
                                  f"hold and investigate; {tally}")
    if half_votes == n:
        return outcome(REJECTED, pct, f"a tie fails: {tally}")
    # 100 * half_votes / (2n) >= threshold, in integers.
    if 100 * half_votes >= threshold * 2 * n:
        return outcome(APPROVED, pct, tally)
    return outcome(REJECTED, pct, f"below the threshold: {tally}")
