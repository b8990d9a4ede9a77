"""``run_reviewers``: ask every reviewer at once and collect exactly one vote each, within a deadline.

Called by the operator when a bot's evidence changes (a new replay, a new phase). Reviewers run in
threads because external ones spend their time waiting on the network. A reviewer that raises, returns
something that is not a vote, or has not answered when the deadline passes gets the "no answer" vote,
which counts against (DESIGN.md: non-answers count against; timed-out evidence keeps the bot in paper).

The threads are daemons and a late one is abandoned, not joined: Python cannot stop a thread, and a
stuck endpoint must neither delay the decision nor keep the operator from exiting. Its eventual answer
is dropped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from tradewarden.api.evidence import EvidenceSummary
from tradewarden.api.tradingbot import Vote
from tradewarden.consensus.reviewers import Clock, Reviewer, no_answer_vote, utc_now


class _Slot:
    """Where one reviewer's thread leaves its vote (or the type of its exception)."""

    __slots__ = ("error", "vote")

    def __init__(self) -> None:
        self.vote: object = None
        self.error: str | None = None


def _ask(reviewer: Reviewer, summary: EvidenceSummary, slot: _Slot) -> None:
    try:
        slot.vote = reviewer.review(summary)
    except Exception as exc:
        # The type only: an exception's text may quote a request, a URL or a key.
        slot.error = type(exc).__name__


def run_reviewers(reviewers: Sequence[Reviewer], summary: EvidenceSummary, *, deadline_s: float,
                  clock: Clock = utc_now) -> list[Vote]:
    """One vote per reviewer, in the reviewers' order, within ``deadline_s`` seconds in all."""
    if not deadline_s > 0:
        raise ValueError(f"deadline_s: must be > 0 (got {deadline_s!r})")
    slots = [_Slot() for _ in reviewers]
    threads = []
    for i, (reviewer, slot) in enumerate(zip(reviewers, slots, strict=True)):
        thread = threading.Thread(target=_ask, args=(reviewer, summary, slot), daemon=True,
                                  name=f"reviewer-{i}")
        thread.start()
        threads.append(thread)
    ends = time.monotonic() + deadline_s
    for thread in threads:
        thread.join(max(0.0, ends - time.monotonic()))

    votes: list[Vote] = []
    for reviewer, slot, thread in zip(reviewers, slots, threads, strict=True):
        name = reviewer.name
        if thread.is_alive():
            votes.append(no_answer_vote(name, summary.evidence_hash, f"no vote within {deadline_s:g} s", clock()))
            continue
        # Read only once the thread is known to be done: the slot is final then.
        vote = slot.vote
        if slot.error is not None:
            votes.append(no_answer_vote(name, summary.evidence_hash, f"reviewer raised {slot.error}", clock()))
        elif not isinstance(vote, Vote):
            votes.append(no_answer_vote(name, summary.evidence_hash,
                                        f"reviewer returned {type(vote).__name__}, not a Vote", clock()))
        elif vote.reviewer != name:
            # A vote is the reviewer's own: a reviewer may not vote under another's name.
            votes.append(vote.model_copy(update={"reviewer": name}))
        else:
            votes.append(vote)
    return votes
