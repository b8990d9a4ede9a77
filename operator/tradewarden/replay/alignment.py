"""Compare what the replay did with what the runner says it did: the residuals of the alignment gate.

Called by :func:`tradewarden.replay.engine.replay` after the loop. A residual is one of:

* a decision, keyed by (bar time, symbol, action), taken by one side and not by the other (each
  surplus occurrence counts once, so a decision the runner journaled twice is one residual);
* a runner fill whose (bar time, symbol, side) has no replay fill, or whose price is more than
  ``max(2 * slippageBps, 1)`` bps away from the replay's fill price (the tolerance absorbs tick
  rounding; a real difference in the fill model is larger);
* the runner's strategy version differing from the one replayed (the replay ran other code).

A fill the replay simulated and the runner did not make is not a residual by itself: the runner's risk
limits may have refused it. If the refusal changed what the strategy decided later, that shows as a
decision residual. ``details`` are the first differences in time order, for a person to read.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from tradewarden.api.evidence import ExportedFill, ExportedSignal
from tradewarden.replay.simulation import DecisionRow, FillRow

MAX_DETAILS = 20


@dataclass(frozen=True, slots=True)
class Alignment:
    residuals: int
    details: list[str]


def when(t: int) -> str:
    """A bar time (ms) as a short ISO-8601 UTC string."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t / 1000))


def tolerance_bps(slippage_bps: float) -> float:
    """How far a runner fill may be from the replay's price: ``max(2 * slippageBps, 1)`` bps."""
    return max(2.0 * slippage_bps, 1.0)


def align(decisions: Sequence[DecisionRow], fills: Sequence[FillRow], signals: Sequence[ExportedSignal],
          runner_fills: Sequence[ExportedFill], *, slippage_bps: float, runner_version: str,
          replay_version: str) -> Alignment:
    # (sort key, text) pairs: sorted at the end, so details come in time order whatever was found first.
    found: list[tuple[tuple[int, str, str], str]] = []
    residuals = 0
    if runner_version and runner_version != replay_version:
        residuals += 1
        found.append(((-1, "", ""), f"strategy version: the runner ran {runner_version}, "
                                    f"the replay ran {replay_version}"))

    ours = Counter((t, symbol, action) for t, symbol, action, _ in decisions)
    theirs = Counter((s.t, s.symbol, s.action) for s in signals)
    for key, extra in sorted((theirs - ours).items()):
        residuals += extra
        found.append(((key[0], key[1], key[2]), f"{when(key[0])} {key[1]} {key[2]}: decided by the runner, "
                                                f"not by the replay" + (f" (x{extra})" if extra > 1 else "")))
    for key, extra in sorted((ours - theirs).items()):
        residuals += extra
        found.append(((key[0], key[1], key[2]), f"{when(key[0])} {key[1]} {key[2]}: decided by the replay, "
                                                f"not by the runner" + (f" (x{extra})" if extra > 1 else "")))

    tolerance = tolerance_bps(slippage_bps)
    prices: dict[tuple[int, str, str], float] = {}
    for t, symbol, side, price, _, _ in fills:
        prices.setdefault((t, symbol, side), price)
    for fill in runner_fills:
        key = (fill.t, fill.symbol, fill.side)
        ours_price = prices.get(key)
        if ours_price is None:
            residuals += 1
            found.append(((fill.t, fill.symbol, "fill " + fill.side),
                          f"{when(fill.t)} {fill.symbol} {fill.side} fill {fill.amount:g} at {fill.price:g}: "
                          f"the replay made no {fill.side} on that bar"))
            continue
        apart = abs(fill.price - ours_price) / ours_price * 10_000 if ours_price > 0.0 else float("inf")
        # `not <=` rather than `>`: a NaN price must count as a difference, not slip through.
        if not apart <= tolerance:
            residuals += 1
            found.append(((fill.t, fill.symbol, "fill " + fill.side),
                          f"{when(fill.t)} {fill.symbol} {fill.side} fill at {fill.price:g}: the replay filled "
                          f"at {ours_price:g} ({apart:.1f} bps apart, tolerance {tolerance:g} bps)"))
    found.sort(key=lambda item: item[0])
    return Alignment(residuals=residuals, details=[text for _, text in found[:MAX_DETAILS]])
