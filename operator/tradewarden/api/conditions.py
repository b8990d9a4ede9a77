"""Status conditions: one shape and one helper that sets them.

Every condition any controller writes goes through :func:`set_condition`, which follows the Kubernetes
API conventions: ``lastTransitionTime`` changes only when ``status`` flips, ``observedGeneration``
always records the generation the condition was computed for. Called by the reconcilers in
``tradewarden.controller``.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Sequence

from pydantic import Field

from tradewarden.api.base import WireModel


class ConditionStatus(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(WireModel):
    """One observation of the resource's state, as in the Kubernetes API conventions."""

    type: str = Field(description="The aspect of the resource this condition describes, in CamelCase.",
                      max_length=64, pattern=r"^[A-Z][A-Za-z0-9]*$")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="A CamelCase word that says why, for tools and alerts.",
                        max_length=128, pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    message: str = Field(default="", description="A sentence for humans: what is wrong and what to do.",
                         max_length=4096)
    observed_generation: int = Field(default=0, ge=0,
                                     description="The metadata.generation this condition was computed for.")
    last_transition_time: dt.datetime = Field(
        description="When status last changed (not when the condition was last written).")


def now_utc() -> dt.datetime:
    """The current time, truncated to whole seconds as the API server stores it."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: ConditionStatus | bool,
    reason: str,
    message: str,
    generation: int,
    now: dt.datetime | None = None,
) -> list[Condition]:
    """Return ``conditions`` with the condition ``type_`` set, keeping order and other types.

    ``lastTransitionTime`` is carried over unless the status flips, so re-running a reconcile that
    reaches the same conclusion produces byte-identical status and therefore no write.
    """
    if isinstance(status, bool):
        status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    out: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.type != type_:
            out.append(cond)
            continue
        found = True
        when = cond.last_transition_time if cond.status == status else (now or now_utc())
        out.append(Condition(type=type_, status=status, reason=reason, message=message,
                             observed_generation=generation, last_transition_time=when))
    if not found:
        out.append(Condition(type=type_, status=status, reason=reason, message=message,
                             observed_generation=generation, last_transition_time=now or now_utc()))
    return out


def get_condition(conditions: Iterable[Condition], type_: str) -> Condition | None:
    """The condition of the given type, or None when it has never been set."""
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: Iterable[Condition], type_: str) -> bool:
    cond = get_condition(conditions, type_)
    return cond is not None and cond.status == ConditionStatus.TRUE
