"""Status conditions: one shape and one helper that sets them, and the rules of every message.

Every condition any controller writes goes through :func:`set_condition`, which follows the Kubernetes
API conventions: ``lastTransitionTime`` changes only when ``status`` flips, ``observedGeneration``
always records the generation the condition was computed for. Called by the reconcilers in
``tradewarden.controller``.

Messages (of conditions and of Events) follow two rules, enforced here so no caller has to remember:

* **Bounded.** :func:`set_condition` cuts every message to :data:`MAX_MESSAGE`, well below the 4096
  characters the CRDs allow: a message over the API server's limit makes it refuse the whole status patch,
  and the object then keeps showing the previous generation's verdict for good. Lists of problems go
  through :func:`list_problems` (the first few, then "and N more"), so the cut rarely has to happen.
* **No echoed values.** A message names the field and the rule it broke; it quotes the value a user gave
  only when that value cannot be a secret (:func:`echoable`: a number, a boolean, a short lowercase word).
  Everything that turns a pydantic error into words uses :func:`describe_error`, the strategy registry
  included (``api`` imports nothing of ours, so every layer can use it).
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

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


#: The longest message a condition or an Event carries, in characters and in UTF-8 bytes.
MAX_MESSAGE = 1024
#: How many problems :func:`list_problems` spells out before "and N more".
MAX_LISTED = 5
#: The longest single problem in such a list.
MAX_PROBLEM = 240
#: The longest part of a field path a message shows (a params key is whatever the user typed).
MAX_PATH_PART = 40

_TRUNCATED = " ... (truncated)"


def bound_message(message: str, limit: int = MAX_MESSAGE) -> str:
    """``message`` cut to at most ``limit`` characters *and* UTF-8 bytes, saying that it was cut.

    Bytes as well as characters: the CRD's maxLength counts characters, Event notes count bytes.
    """
    if len(message.encode("utf-8")) <= limit:
        return message
    room = max(limit - len(_TRUNCATED), 0)
    head = message.encode("utf-8")[:room].decode("utf-8", "ignore")
    return (head + _TRUNCATED)[:limit]


def list_problems(problems: Sequence[str], limit: int = MAX_MESSAGE, listed: int = MAX_LISTED) -> str:
    """The first few ``problems`` joined with "; ", then "; and N more": under ``limit`` however many.

    Each problem is cut to :data:`MAX_PROBLEM` first, so one enormous problem cannot crowd out the others.
    """
    shown: list[str] = []
    for i, problem in enumerate(problems):
        if len(shown) == listed:
            break
        item = bound_message(problem, MAX_PROBLEM)
        rest = len(problems) - i - 1
        tail = f"; and {rest} more" if rest else ""
        candidate = "; ".join([*shown, item])
        if shown and len((candidate + tail).encode("utf-8")) > limit:
            break
        shown.append(item)
    more = len(problems) - len(shown)
    text = "; ".join(shown) + (f"; and {more} more" if more else "")
    return bound_message(text, limit)


# ----------------------------------------------------------------------------------------- values in messages

#: A value that may be quoted back in a message when it is a string: a short lowercase word, the shape of
#: an enum value (``close_only``, ``paper``). Anything longer or with digits, capitals or symbols may be a
#: key, a token or a password pasted into the wrong field.
_ENUM_WORD = re.compile(r"^[a-z_]{1,16}$")
#: The longest rendering of a number a message quotes.
_MAX_NUMBER = 32


def echoable(value: Any) -> bool:
    """True when ``value`` may appear in a status or an Event: a number, a boolean, null, or a short
    lowercase word (up to 16 characters of ``[a-z_]``)."""
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int | float):
        return len(repr(value)) <= _MAX_NUMBER
    return isinstance(value, str) and bool(_ENUM_WORD.match(value))


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, int | float):
        return "a long number"
    return "a value"


def describe_value(value: Any) -> str:
    """How a message quotes a user's value: ``30``, ``True``, ``'paper'``, or only its kind
    (``a string, not shown``) when it could be a secret."""
    if echoable(value):
        return repr(value)
    return f"{_kind(value)}, not shown"


def without_value(text: str, value: Any) -> str:
    """``text`` with every spelling of ``value`` in it replaced, unless the value may be shown.

    For messages written by validators, which may quote the value they refuse."""
    if echoable(value):
        return text
    for spelling in sorted({str(value), repr(value)}, key=len, reverse=True):
        if len(spelling) >= 4:
            text = text.replace(spelling, "(value not shown)")
    return text


def field_path(loc: Iterable[Any], prefix: str = "") -> str:
    """A pydantic error location as a dotted path (``params.fast``); over-long parts are cut, since a
    key of a free-form map is whatever the user typed."""
    parts = [prefix] if prefix else []
    for part in loc:
        text = str(part)
        if len(text) > MAX_PATH_PART:
            text = f"{text[:12]}...({len(text)} characters)"
        parts.append(text)
    return ".".join(parts)


def describe_error(error: Mapping[str, Any], prefix: str = "") -> tuple[str, str]:
    """One pydantic error (an item of ``ValidationError.errors()``) as ``(field path, problem)``.

    The problem is pydantic's message (without its "Value error, " prefix) and, for a value that was
    refused, ``(got 30)`` when the value may be shown, ``(got a string, not shown)`` when not.
    """
    msg = str(error.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ")
    if "input" in error and error.get("type") != "missing":
        value = error["input"]
        msg = without_value(msg, value)
        if error.get("type") != "extra_forbidden" and not isinstance(value, Mapping):
            msg = f"{msg} (got {describe_value(value)})"
    return field_path(error.get("loc", ()), prefix), msg


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
    reaches the same conclusion produces byte-identical status and therefore no write. The message is
    bounded (:func:`bound_message`): no message can make the API server refuse the status patch.
    """
    message = bound_message(message)
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
