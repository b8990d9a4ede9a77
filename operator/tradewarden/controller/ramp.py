"""The live capital ramp: how much real money a live bot may use, step by step, like a canary rollout.

Pure policy, no I/O, no clock (``now`` is an argument). Called by
:func:`tradewarden.controller.builders.build_bot_plan` on every reconcile: the step it returns becomes
``status.capital`` and the runtime config's ``capital.liveCapital``.

The rules (DESIGN.md, "Live capital ramps step by step"; the commissioning plan's 100 -> 500 -> 1,000 ->
2,500):

* Not live: no ramp (``status.capital`` is absent). A bot that was live and is not any more (the gate
  failed: stale evidence, a config change, a rejected vote) has its ramp **reset**: the next promotion
  starts again at step 0.
* First promotion: step 0, ``amount = spec.capital.liveSteps[0]``, ``since = now``.
* Advance one step (never more) when all of these hold: the ramp is not paused
  (``spec.capital.rampPaused``); there is a next step; ``now - since >= rampDwellMinutes``; and the
  evidence was gathered *at this step*: the replay finished after ``since`` and every counted vote was
  cast after ``since``. Fresh evidence alone never skips the dwell, and the dwell alone never advances
  without fresh evidence.
* A spec edit that shortens ``liveSteps`` clamps the step to the last one. A lower amount at the same
  step takes effect at once (a stronger brake); a higher one does not: the amount in force never rises
  without the gate (the reviewers judged the amount of the current step), so a raise waits for the next
  step, or for the next promotion.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from tradewarden.api.tradingbot import CapitalSpec, CapitalStatus, ConsensusStatus, ReplayEvidence
from tradewarden.consensus import scoring

START = "start"
ADVANCE = "advance"
RESET = "reset"
PAUSE = "pause"
RESUME = "resume"


@dataclass(frozen=True)
class RampChange:
    """What happened to the ramp in this reconcile, for the Event that records it."""

    kind: str  # start, advance, reset, pause, resume
    message: str


@dataclass(frozen=True)
class Ramp:
    capital: CapitalStatus | None
    change: RampChange | None = None
    #: When the dwell at the current step ends (the reconciler looks again then); None when irrelevant.
    dwell_ends: dt.datetime | None = None


def _fresh_since(replay: ReplayEvidence | None, consensus: ConsensusStatus | None, since: dt.datetime,
                 phase: int) -> bool:
    if replay is None or replay.finished_at is None or replay.finished_at <= since:
        return False
    if consensus is None:
        return False
    counted = scoring.score(consensus.votes, consensus.evidence_hash, phase).votes_used
    return bool(counted) and all(v.at is not None and v.at > since for v in counted)


def next_capital(previous: CapitalStatus | None, live: bool, spec: CapitalSpec, replay: ReplayEvidence | None,
                 consensus: ConsensusStatus | None, phase: int, now: dt.datetime) -> Ramp:
    """The ramp position after this reconcile; ``live`` is the gate's verdict for this reconcile."""
    steps = spec.live_steps
    currency = spec.quote_currency
    if not live:
        if previous is None:
            return Ramp(None)
        return Ramp(None, RampChange(RESET, f"the promotion gate no longer passes at step {previous.step} "
                                            f"({previous.amount:g} {currency}): back to paper; the ramp restarts "
                                            f"at step 0 ({steps[0]:g} {currency}) when the gate passes again"))
    dwell = dt.timedelta(minutes=spec.ramp_dwell_minutes)
    if previous is None or previous.since is None:
        capital = CapitalStatus(step=0, amount=steps[0], since=now, paused=spec.ramp_paused)
        return Ramp(capital, RampChange(START, f"live at step 0 of {len(steps)}: {steps[0]:g} {currency}"),
                    dwell_ends=now + dwell)
    step = min(previous.step, len(steps) - 1)
    amount = min(steps[step], previous.amount) if previous.amount > 0 else steps[step]
    current = CapitalStatus(step=step, amount=amount, since=previous.since, paused=spec.ramp_paused)
    change: RampChange | None = None
    if spec.ramp_paused != previous.paused:
        change = RampChange(PAUSE if spec.ramp_paused else RESUME,
                            f"ramp {'paused' if spec.ramp_paused else 'resumed'} at step {step} "
                            f"({steps[step]:g} {currency})")
    if spec.ramp_paused or step >= len(steps) - 1:
        return Ramp(current, change)
    since = previous.since
    if now - since < dwell:
        return Ramp(current, change, dwell_ends=since + dwell)
    if not _fresh_since(replay, consensus, since, phase):
        return Ramp(current, change)
    nxt = step + 1
    return Ramp(CapitalStatus(step=nxt, amount=steps[nxt], since=now, paused=False),
                RampChange(ADVANCE, f"step {step} -> {nxt}: {steps[step]:g} -> {steps[nxt]:g} {currency} "
                                    f"(fresh passing evidence after {spec.ramp_dwell_minutes} min at step {step})"),
                dwell_ends=now + dwell)
