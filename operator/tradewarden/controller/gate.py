"""The promotion gate (DESIGN.md invariant 2): may this bot trade live, with its current config?

Pure policy, no I/O, no clock (``now`` is an argument). Called by
:func:`tradewarden.controller.builders.build_bot_plan` (the effective mode, the gate hash, the kill mode
and the capital ramp go into the runtime ConfigMap), by :mod:`tradewarden.controller.status` (the
``ReplayVerified``, ``ConsensusApproved`` and ``Promoted`` conditions) and by
:mod:`tradewarden.controller.promotion` (when a new replay is due, and recording a consensus round).

Each check is a chain: the first failing link supplies the reason and the message, and the gate fails
closed. ``signals`` stays ``signals`` and ``paper`` stays ``paper``; ``live`` is granted only when the
bot asks for it, a human confirmed it, and the replay and the consensus evidence are present, passing,
fresh (``spec.promotion.maxEvidenceAgeMinutes``) and bound to the *current* config hash. Anything else
gives ``paper``, and ``Promoted=False`` says what is missing.

How evidence is bound:

* the replay to the config by ``status.replay.configHash`` (a config edit makes it ``Stale``);
* the consensus to the replay by ``status.consensus.replayResultHash == status.replay.resultHash``;
* each vote to the summary the reviewers judged by ``vote.evidenceHash == status.consensus.evidenceHash``.
  The gate re-scores the recorded votes itself, against the bot's *current* phase: a vote bound to other
  evidence is ignored, a second vote of one reviewer is ignored, and a status edited by hand gains nothing;
* the live permission to all three by ``gateHash = compute_gate_hash(configHash, replay resultHash,
  consensus evidenceHash)``, which the runner recomputes before any live order.

Reasons, as the promotion issue names them: ``ReplayVerified`` is Passed, Failed, Stale, Missing,
InsufficientTrades or Overridden; ``ConsensusApproved`` is Approved, Rejected (a tie included), Held,
CloseOnly, Halt, Missing or Stale. ``Promoted`` names what is missing: ConfigChanged, Replay<reason>,
Consensus<reason>, LiveNotRequested, LiveNotConfirmed, or Promoted.

The emergency override (a GateOverride naming the bot: a permission apart from editing bots, a visible
reason, at most ``MAX_OVERRIDE_HOURS`` long) opens the *replay* gate only, never the consensus; one that
would last longer is not honoured (and said so); it lapses by itself at ``spec.expiresAt``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from tradewarden.api.gateoverride import GateOverride, expiry_problem
from tradewarden.api.runtime import compute_gate_hash
from tradewarden.api.tradingbot import (
    KILL_STRENGTH,
    ConsensusStatus,
    GateTrip,
    KillMode,
    ReplayEvidence,
    TradingBot,
    TradingMode,
)
from tradewarden.consensus import scoring

#: Bot annotation a human changes to clear a bot-scoped trip (the runner's and the consensus's).
ANN_RESET_TRIP = "tradewarden.io/reset-trip"

# ReplayVerified reasons.
PASSED = "Passed"
FAILED = "Failed"
STALE = "Stale"
MISSING = "Missing"
INSUFFICIENT_TRADES = "InsufficientTrades"
OVERRIDDEN = "Overridden"

# ConsensusApproved reasons (the decisions of consensus.scoring, plus Stale).
APPROVED = scoring.APPROVED
REJECTED = scoring.REJECTED
HELD = scoring.HELD
CLOSE_ONLY = scoring.CLOSE_ONLY
HALT = scoring.HALT

#: Promoted's reason when the replay evidence is for another config than the one the bot runs now.
CONFIG_CHANGED = "ConfigChanged"

#: Consensus decisions that trip a bot-scoped kill, and the mode they engage.
TRIP_MODES: dict[str, KillMode] = {HALT: KillMode.HALT_ALL, CLOSE_ONLY: KillMode.CLOSE_ONLY}


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


@dataclass(frozen=True)
class Override:
    """The replay-gate override in force for a bot, found among its GateOverrides."""

    #: The reason in force (with the GateOverride that says it and until when), or None.
    reason: str | None
    #: A GateOverride names the bot but is not honoured (it would last too long): the status says so.
    ignored: bool
    #: Why the ignored ones are not honoured.
    note: str = ""
    #: When the override in force lapses by itself.
    until: dt.datetime | None = None


NO_OVERRIDE = Override(None, False)


def _short(h: str) -> str:
    return h.removeprefix("sha256:")[:12] or "(none)"


def parse_created(meta_time: str | None) -> dt.datetime | None:
    if not meta_time:
        return None
    try:
        return dt.datetime.fromisoformat(meta_time.replace("Z", "+00:00"))
    except ValueError:
        return None


def active_override(overrides: Sequence[GateOverride], bot_name: str, now: dt.datetime) -> Override:
    """The override of ``bot_name``'s replay gate in force at ``now`` among ``overrides`` (its namespace's).

    One is in force from its creation until ``spec.expiresAt``, which must be at most
    ``MAX_OVERRIDE_HOURS`` after ``metadata.creationTimestamp`` (set by the API server, so it cannot be
    back-dated); a longer one is not honoured at all. Of several in force, the one that lapses first.
    """
    in_force: list[tuple[dt.datetime, GateOverride]] = []
    refused: list[str] = []
    for o in overrides:
        if o.spec.bot_name != bot_name or o.metadata.deletion_timestamp:
            continue
        created = parse_created(o.metadata.creation_timestamp)
        problem = expiry_problem(o.spec.expires_at, created) if created else "it has no creationTimestamp"
        if problem:
            refused.append(f"GateOverride {o.metadata.name} is not honoured: {problem}")
        elif now < o.spec.expires_at:
            in_force.append((o.spec.expires_at, o))
    if in_force:
        until, o = min(in_force, key=lambda pair: (pair[0], pair[1].metadata.name))
        stamp = until.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        ticket = f", ticket {o.spec.ticket}" if o.spec.ticket else ""
        return Override(f"{' '.join(o.spec.reason.split())} (GateOverride {o.metadata.name}{ticket}, until {stamp})",
                        False, until=until)
    if refused:
        return Override(None, True, note="; ".join(refused)[:1024])
    return NO_OVERRIDE


def with_override(bot: TradingBot, override: Override) -> TradingBot:
    """``bot`` carrying the override the operator found for it (see :func:`active_override`)."""
    out = bot.model_copy()
    out._override = override
    return out


def replay_override(bot: TradingBot) -> Override:
    """The override in force for ``bot`` (none unless the operator attached one with :func:`with_override`)."""
    found = bot._override
    return found if isinstance(found, Override) else NO_OVERRIDE


def reset_annotation(bot: TradingBot) -> str:
    return bot.metadata.annotations.get(ANN_RESET_TRIP, "")


def wants_evidence(bot: TradingBot) -> bool:
    """Whether the gate needs fresh evidence for ``bot``: live is requested, or live is in force (the
    ramp needs fresh evidence at every step, and live evidence that goes stale drops the bot to paper)."""
    return bot.spec.mode == TradingMode.LIVE or bot.status.effective_mode == TradingMode.LIVE


# ----------------------------------------------------------------------------------------- ReplayVerified


def _replay_verdict(bot: TradingBot, config_hash: str, now: dt.datetime) -> Check:
    replay = bot.status.replay
    promo = bot.spec.promotion
    if replay is None or replay.finished_at is None:
        return Check(False, MISSING,
                     f"no replay evidence yet for config {_short(config_hash)}: the runner exports its recorded "
                     f"window in paper mode, and the operator replays it")
    if not config_hash or replay.config_hash != config_hash:
        return Check(False, STALE,
                     f"the replay ran with config {_short(replay.config_hash)} but the bot now runs "
                     f"{_short(config_hash)} (the config changed); a replay of the new config is needed")
    if not replay.passed:
        reason = replay.reason if replay.reason in (FAILED, INSUFFICIENT_TRADES) else FAILED
        return Check(False, reason, replay.message or
                     f"the replay did not pass ({replay.trades_compared} trades compared, "
                     f"{replay.residuals} residuals)")
    # The settings may have been tightened since the replay ran: judge it by today's spec.
    if replay.residuals > promo.max_residuals:
        return Check(False, FAILED,
                     f"the replay found {replay.residuals} residuals; spec.promotion.maxResiduals "
                     f"allows {promo.max_residuals}")
    if replay.trades_compared < promo.min_trades:
        return Check(False, INSUFFICIENT_TRADES,
                     f"the replay compared {replay.trades_compared} trades; spec.promotion.minTrades "
                     f"needs {promo.min_trades}")
    max_age = dt.timedelta(minutes=promo.max_evidence_age_minutes)
    if now - replay.finished_at > max_age:
        return Check(False, STALE,
                     f"the replay finished at {replay.finished_at.replace(microsecond=0).isoformat()}, more than "
                     f"spec.promotion.maxEvidenceAgeMinutes={promo.max_evidence_age_minutes} ago, and no newer "
                     f"export was replayed since; a fresh replay is needed")
    return Check(True, PASSED,
                 f"replay of config {_short(config_hash)} passed: {replay.trades_compared} trades, "
                 f"{replay.residuals} residuals, result {_short(replay.result_hash)}",
                 expires_at=replay.finished_at + max_age)


def check_replay(bot: TradingBot, config_hash: str, now: dt.datetime) -> Check:
    """``ReplayVerified``: a passing, fresh replay of the current config, or an override with a reason."""
    verdict = _replay_verdict(bot, config_hash, now)
    override = replay_override(bot)
    if override.reason is not None:
        # Never silent: the message carries the reason and what the replay said on its own.
        return Check(True, OVERRIDDEN,
                     f"the replay gate is overridden: {override.reason} "
                     f"(without the override: {verdict.reason}: {verdict.message})",
                     expires_at=override.until)
    if override.ignored:
        return Check(verdict.ok, verdict.reason, f"{verdict.message} ({override.note})", verdict.expires_at)
    return verdict


# ----------------------------------------------------------------------------------------- ConsensusApproved


def check_consensus(bot: TradingBot, now: dt.datetime, reviewers: frozenset[str] | None = None) -> Check:
    """``ConsensusApproved``: reviewers approved the current replay above the current phase's threshold.

    With ``reviewers`` (the names of the reviewers the operator runs now), a vote of anyone else is
    ignored: a reviewer removed from the configuration no longer counts, whatever it said before.
    """
    consensus = bot.status.consensus
    replay = bot.status.replay
    promo = bot.spec.promotion
    if consensus is None or not consensus.decision:
        return Check(False, MISSING, "no reviewer consensus yet: the reviewers vote after each passing replay")
    current = replay.result_hash if replay is not None else ""
    if not consensus.replay_result_hash or consensus.replay_result_hash != current:
        return Check(False, STALE,
                     f"the consensus judged replay {_short(consensus.replay_result_hash)}, not the current replay "
                     f"{_short(current)}; the reviewers vote again after the next passing replay")
    votes = consensus.votes
    unknown = sorted({v.reviewer for v in votes if reviewers is not None and v.reviewer not in reviewers})
    if unknown:
        votes = [v for v in votes if v.reviewer not in unknown]
    outcome = scoring.score(votes, consensus.evidence_hash, promo.phase)
    if unknown and outcome.decision == scoring.MISSING:
        return Check(False, MISSING, f"no vote of a configured reviewer (ignored: {', '.join(unknown)[:200]})")
    if outcome.decision == scoring.MISSING:
        return Check(False, MISSING, f"no vote bound to evidence {_short(consensus.evidence_hash)}: "
                                     f"{outcome.message}")
    if not outcome.approved:
        return Check(False, outcome.decision, f"{outcome.decision}: {outcome.message}")
    max_age = dt.timedelta(minutes=promo.max_evidence_age_minutes)
    times = [v.at for v in outcome.votes_used]
    oldest = min((t for t in times if t is not None), default=None)
    if oldest is None or any(t is None for t in times) or now - oldest > max_age:
        return Check(False, STALE,
                     f"the oldest vote is older than spec.promotion.maxEvidenceAgeMinutes="
                     f"{promo.max_evidence_age_minutes} (or undated); the reviewers vote again on fresh evidence")
    return Check(True, APPROVED, f"{APPROVED}: {outcome.message}", expires_at=oldest + max_age)


# ----------------------------------------------------------------------------------------- the decision


#: Promoted's reason while the bot has not been in paper for spec.promotion.minPaperMinutes.
PAPER_TIME_SHORT = "PaperTimeShort"


def evaluate_promotion(bot: TradingBot, config_hash: str, now: dt.datetime,
                       reviewers: frozenset[str] | None = None) -> PromotionDecision:
    """The effective mode for ``bot`` running ``config_hash`` at ``now``, failing closed to paper.

    Every link is re-checked at each decision, whatever an earlier decision or a reviewer said: the
    minimum time in paper (``spec.promotion.minPaperMinutes``, from ``paperSince``) included.
    """
    replay = check_replay(bot, config_hash, now)
    consensus = check_consensus(bot, now, reviewers)
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
    evidence = bot.status.replay
    if not replay.ok:
        changed = evidence is not None and evidence.finished_at is not None and evidence.config_hash != config_hash
        return decide(TradingMode.PAPER, CONFIG_CHANGED if changed else f"Replay{replay.reason}",
                      f"running paper: {replay.message}")
    if not consensus.ok:
        return decide(TradingMode.PAPER, f"Consensus{consensus.reason}", f"running paper: {consensus.message}")
    need = dt.timedelta(minutes=bot.spec.promotion.min_paper_minutes)
    since = bot.status.paper_since
    if need and (since is None or now - since < need):
        had = "not yet" if since is None else f"{max(0, int((now - since).total_seconds() // 60))} minutes"
        return decide(TradingMode.PAPER, PAPER_TIME_SHORT,
                      f"running paper: spec.promotion.minPaperMinutes={bot.spec.promotion.min_paper_minutes} "
                      f"in paper are needed before live; the bot has been in paper for {had}")
    agreed = bot.status.consensus
    if evidence is None or agreed is None:  # unreachable: a passing consensus needs both
        return decide(TradingMode.PAPER, f"Replay{MISSING}", "running paper: evidence disappeared")
    gate_hash = compute_gate_hash(config_hash, evidence.result_hash, agreed.evidence_hash)
    return PromotionDecision(TradingMode.LIVE, True, "Promoted",
                             f"live with config {_short(config_hash)}, confirmed by "
                             f"{confirmation.confirmed_by}; gate {_short(gate_hash)}",
                             gate_hash, replay, consensus)


# ----------------------------------------------------------------------------------------- new evidence


@dataclass(frozen=True)
class ExportInfo:
    """What the gate needs to know about the export in a bot's evidence ConfigMap."""

    config_hash: str
    exported_at: dt.datetime
    data_hash: str


def replay_due(bot: TradingBot, export: ExportInfo, config_hash: str, now: dt.datetime) -> str | None:
    """Why the export should be replayed now, or None. ``bot.status`` is the evidence already recorded.

    Only for bots that want evidence (:func:`wants_evidence`), and only an export of the bot's current
    config. Then: no replay yet, or one of another config; else only an export *newer* than the one
    replayed (a runner that stopped exporting gets no refresh: its evidence goes stale), which brings
    new market data, or replaces a replay that could not run, or refreshes evidence older than half of
    ``maxEvidenceAgeMinutes``. The one exception: when the replay gate is overridden, the consensus votes
    on the replay at hand at once (the override opens the replay gate, never the consensus).
    """
    if not wants_evidence(bot) or export.config_hash != config_hash:
        return None
    replay = bot.status.replay
    if replay is None or replay.finished_at is None:
        return "no replay yet"
    if replay.config_hash != config_hash:
        return "the config changed"
    consensus = bot.status.consensus
    bound = consensus is not None and consensus.replay_result_hash == replay.result_hash
    if not bound and replay.result_hash and replay_override(bot).reason is not None:
        # At once, without waiting for the runner's next export: an override must take effect when set.
        return "the replay gate is overridden and the consensus has not judged this replay"
    if replay.exported_at is not None and export.exported_at <= replay.exported_at:
        return None
    if not replay.result_hash:
        return "the last replay could not run"
    if export.data_hash != replay.data_hash:
        return "new market data"
    half = dt.timedelta(minutes=bot.spec.promotion.max_evidence_age_minutes) / 2
    if now - replay.finished_at >= half:
        return "refresh before the evidence goes stale"
    if not bound and replay.passed:
        return "the consensus has not judged this replay"
    return None


# ----------------------------------------------------------------------------------------- rounds


@dataclass(frozen=True)
class GateRound:
    """One finished evaluation of a bot's evidence: the replay, and the consensus when it ran (the
    reviewers vote only on a passing replay, or on one whose gate is overridden)."""

    bot_uid: str
    replay: ReplayEvidence
    consensus: ConsensusStatus | None


def record_round(bot: TradingBot, found: GateRound) -> TradingBot:
    """``bot`` with the round recorded in its status: the evidence, and the trip a Halt or CloseOnly
    decision engages (kept when one at least as strong is already in force: its time and reason stay).

    Deterministic (the trip's time is the round's): merging the same round twice, as a reconcile does
    until the cache shows its write, records the same status."""
    update: dict[str, object] = {"replay": found.replay.model_copy(
        update={"override_reason": bot.status.replay.override_reason if bot.status.replay else None})}
    if found.consensus is not None:
        update["consensus"] = found.consensus
        trip = trip_for(found.consensus, bot, found.replay.finished_at)
        current = active_trip(bot)
        if trip is not None and (current is None or KILL_STRENGTH[trip.mode] > KILL_STRENGTH[current.mode]):
            update["gate_trip"] = trip
    return bot.model_copy(update={"status": bot.status.model_copy(update=update)})


# ----------------------------------------------------------------------------------------- trips


def trip_for(consensus: ConsensusStatus, bot: TradingBot, now: dt.datetime | None) -> GateTrip | None:
    """The bot-scoped trip a fresh consensus decision engages (Halt or CloseOnly), or None."""
    mode = TRIP_MODES.get(consensus.decision)
    if mode is None:
        return None
    return GateTrip(mode=mode, reason=f"consensus {consensus.decision}: {consensus.message}"[:1024],
                    evidence_hash=consensus.evidence_hash, reset_annotation=reset_annotation(bot), at=now)


def active_trip(bot: TradingBot) -> GateTrip | None:
    """The consensus trip in force: recorded, and the reset annotation unchanged since."""
    trip = bot.status.gate_trip
    if trip is None or trip.reset_annotation != reset_annotation(bot):
        return None
    return trip


def replay_is_recorded(recorded: ReplayEvidence | None, candidate: ReplayEvidence) -> bool:
    """Whether ``candidate`` (a finished round) is already what the status holds."""
    return recorded is not None and recorded.finished_at == candidate.finished_at and \
        recorded.result_hash == candidate.result_hash and recorded.exported_at == candidate.exported_at
