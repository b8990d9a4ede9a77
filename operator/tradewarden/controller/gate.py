"""The promotion gate (DESIGN.md invariant 2): may this bot trade live, with its current config?

Pure policy, no I/O. Called by :func:`tradewarden.controller.builders.build_bot_plan` (the effective
mode and gate hash go into the runtime ConfigMap) and by :mod:`tradewarden.controller.status` (the
``ReplayVerified``, ``ConsensusApproved`` and ``Promoted`` conditions).

Each check is a chain: the first failing link supplies the reason and the message, and the gate fails
closed. ``signals`` stays ``signals`` and ``paper`` stays ``paper``; ``live`` is granted only when
the bot asks for it, a human confirmed it, and the replay and the consensus evidence are present,
passing, fresh (``spec.promotion.maxEvidenceAgeMinutes``) and bound to the *current* config hash.
Anything else gives ``paper``.

How evidence is bound, for now (the replay and consensus work will extend this module):

* the replay is bound to the config by ``status.replay.configHash``;
* the consensus is bound to the replay by ``status.consensus.evidenceHash == status.replay.resultHash``:
  the reviewers judged exactly this replay, and through it this config.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from tradewarden.api.runtime import compute_gate_hash
from tradewarden.api.tradingbot import RiskLevel, TradingBot, TradingMode

#: Agreement needed per commissioning phase (the commissioning-plan seed: 70, 75, 80, 85, 90 %).
PHASE_THRESHOLDS: dict[int, float] = {1: 70.0, 2: 75.0, 3: 80.0, 4: 85.0, 5: 90.0}

#: The consensus decision that approves promotion (ConsensusStatus.decision).
APPROVED = "Approved"


@dataclass(frozen=True)
class Check:
    """The outcome of one chain of checks: ``ok``, or the first failure's reason and message."""

    ok: bool
    reason: str
    message: str
    #: When passing evidence goes stale: the reconciler comes back then. None when nothing expires.
    expires_at: dt.datetime | None = None


@dataclass(frozen=True)
class PromotionDecision:
    """What the gate allows, and why."""

    effective_mode: TradingMode
    promoted: bool
    reason: str
    message: str
    gate_hash: str
    replay: Check
    consensus: Check

    @property
    def expires_at(self) -> dt.datetime | None:
        """The earliest time the decision may change by itself (evidence going stale)."""
        times = [t for t in (self.replay.expires_at, self.consensus.expires_at) if t is not None]
        return min(times) if times else None


def _short(h: str) -> str:
    return h.removeprefix("sha256:")[:12] or "(none)"


def check_replay(bot: TradingBot, config_hash: str, now: dt.datetime) -> Check:
    """``ReplayVerified``: a passing, fresh replay of the current config."""
    replay = bot.status.replay
    promo = bot.spec.promotion
    if replay is None:
        return Check(False, "ReplayMissing",
                     f"no replay evidence yet; the replay gate must run on config {_short(config_hash)}")
    if not config_hash or replay.config_hash != config_hash:
        return Check(False, "ReplayConfigMismatch",
                     f"the replay ran with config {_short(replay.config_hash)} but the bot now runs "
                     f"{_short(config_hash)}; a new replay is needed")
    if not replay.passed:
        return Check(False, "ReplayFailed",
                     f"the replay did not pass ({replay.trades_compared} trades compared, "
                     f"{replay.residuals} residuals)")
    if replay.trades_compared < promo.min_trades:
        return Check(False, "ReplayTooFewTrades",
                     f"the replay compared {replay.trades_compared} trades; spec.promotion.minTrades "
                     f"needs {promo.min_trades}")
    if replay.residuals > promo.max_residuals:
        return Check(False, "ReplayResiduals",
                     f"the replay found {replay.residuals} residuals; spec.promotion.maxResiduals "
                     f"allows {promo.max_residuals}")
    max_age = dt.timedelta(minutes=promo.max_evidence_age_minutes)
    if replay.finished_at is None or now - replay.finished_at > max_age:
        when = replay.finished_at.isoformat() if replay.finished_at else "an unknown time"
        return Check(False, "ReplayStale",
                     f"the replay finished at {when}, more than spec.promotion.maxEvidenceAgeMinutes="
                     f"{promo.max_evidence_age_minutes} ago; a fresh replay is needed")
    return Check(True, "ReplayPassed",
                 f"replay of config {_short(config_hash)} passed: {replay.trades_compared} trades, "
                 f"{replay.residuals} residuals",
                 expires_at=replay.finished_at + max_age)


def check_consensus(bot: TradingBot, now: dt.datetime) -> Check:
    """``ConsensusApproved``: reviewers approved the current replay, above the phase threshold."""
    consensus = bot.status.consensus
    replay = bot.status.replay
    promo = bot.spec.promotion
    if consensus is None or not consensus.votes:
        return Check(False, "ConsensusMissing", "no reviewer consensus yet")
    if replay is None or not consensus.evidence_hash or consensus.evidence_hash != replay.result_hash:
        return Check(False, "ConsensusMismatch",
                     f"the consensus judged evidence {_short(consensus.evidence_hash)}, not the current "
                     f"replay {_short(replay.result_hash if replay else '')}; a new vote is needed")
    critical = [v.reviewer for v in consensus.votes if v.risk == RiskLevel.CRITICAL]
    if critical:
        return Check(False, "ConsensusCritical",
                     f"reviewer(s) {', '.join(sorted(critical))} reported CRITICAL risk")
    threshold = max(consensus.threshold_pct, PHASE_THRESHOLDS.get(promo.phase, 90.0))
    if consensus.decision != APPROVED or consensus.score_pct < threshold:
        return Check(False, "ConsensusNotApproved",
                     f"decision {consensus.decision or '(none)'} with {consensus.score_pct:.1f}% agreement; "
                     f"phase {promo.phase} needs {APPROVED} with at least {threshold:.0f}%")
    times = [v.at for v in consensus.votes]
    max_age = dt.timedelta(minutes=promo.max_evidence_age_minutes)
    oldest = min((t for t in times if t is not None), default=None)
    if oldest is None or any(t is None for t in times) or now - oldest > max_age:
        return Check(False, "ConsensusStale",
                     f"the oldest vote is older than spec.promotion.maxEvidenceAgeMinutes="
                     f"{promo.max_evidence_age_minutes} (or undated); a fresh vote is needed")
    return Check(True, "ConsensusApproved",
                 f"{consensus.score_pct:.1f}% agreement, phase {promo.phase} threshold {threshold:.0f}%",
                 expires_at=oldest + max_age)


def evaluate_promotion(bot: TradingBot, config_hash: str, now: dt.datetime) -> PromotionDecision:
    """The effective mode for ``bot`` running ``config_hash`` at ``now``, failing closed to paper."""
    replay = check_replay(bot, config_hash, now)
    consensus = check_consensus(bot, now)
    requested = bot.spec.mode

    def decide(mode: TradingMode, reason: str, message: str) -> PromotionDecision:
        return PromotionDecision(mode, False, reason, message, "", replay, consensus)

    if requested != TradingMode.LIVE:
        return decide(requested, "LiveNotRequested",
                      f"spec.mode is {requested.value}; live trading was not requested")
    confirmation = bot.spec.live_confirmation
    if confirmation is None or not confirmation.acknowledge_real_money:
        return decide(TradingMode.PAPER, "LiveNotConfirmed",
                      "spec.liveConfirmation.acknowledgeRealMoney must be true; running paper")
    if not replay.ok:
        return decide(TradingMode.PAPER, replay.reason, f"running paper: {replay.message}")
    if not consensus.ok:
        return decide(TradingMode.PAPER, consensus.reason, f"running paper: {consensus.message}")
    replay_evidence, consensus_evidence = bot.status.replay, bot.status.consensus
    if replay_evidence is None or consensus_evidence is None:  # unreachable: the checks above need both
        return decide(TradingMode.PAPER, "EvidenceMissing", "running paper: evidence disappeared")
    gate_hash = compute_gate_hash(config_hash, replay_evidence.result_hash, consensus_evidence.evidence_hash)
    return PromotionDecision(TradingMode.LIVE, True, "Promoted",
                             f"live with config {_short(config_hash)}, confirmed by "
                             f"{confirmation.confirmed_by}; gate {_short(gate_hash)}",
                             gate_hash, replay, consensus)
