"""Order intents and the gate they pass before risk: allowlisted sources, the manual lane, kill modes.

The intent-executor seed: default deny for sources that are not allowlisted (acknowledged and skipped
with reason ``source_not_allowed``); a manual lane that is honoured only while
``spec.manualLane.enabledUntil`` is in the future ("prevents forget-to-disable"), each intent once by id.
Also which resting orders a stopping runner cancels (``resting_entries``). Pure decisions, called by
the engine; the engine counts the outcomes.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from tradewarden.api.market import OrderResult, OrderSide
from tradewarden.api.tradingbot import KillMode


class Lane(enum.StrEnum):
    MAIN = "main"
    MANUAL = "manual"


class IntentKind(enum.StrEnum):
    ENTRY = "entry"
    EXIT = "exit"


@dataclass(frozen=True, slots=True)
class Intent:
    """A wish to trade, before any check. ``id`` is deterministic, so a replayed bar is recognised."""

    id: str
    source: str
    lane: Lane
    symbol: str
    side: OrderSide
    kind: IntentKind
    amount: float = 0.0  # base amount; 0 means "size it" (entries) or "the whole position" (exits)
    stop_price: float | None = None
    reason: str = ""

    @property
    def reduce_only(self) -> bool:
        return self.kind == IntentKind.EXIT


class Verdict(enum.StrEnum):
    ACCEPT = "accept"
    BLOCKED_SOURCE = "blocked_source"
    MANUAL_BLOCKED_DISABLED = "manual_blocked_disabled"
    DUPLICATE = "duplicate"
    KILL_BLOCKED = "kill_blocked"


#: How every tradewarden client order id begins, whichever bot sent it.
CLIENT_ORDER_ID_PREFIX = "tw"


def client_order_id(bot_uid: str, intent_id: str) -> str:
    """A venue-safe client order id derived from the intent: the same intent always maps to the same id,
    so a runner restarted in the middle of an order asks the venue instead of sending it twice."""
    digest = hashlib.sha256(f"{bot_uid}|{intent_id}".encode()).hexdigest()[:26]
    return f"{CLIENT_ORDER_ID_PREFIX}{digest}"


def resting_entries(open_orders: Iterable[OrderResult], own: Mapping[str, bool]) -> list[OrderResult]:
    """Of a venue's open orders, the ones a stopping runner cancels: resting entries of its own bot.

    ``own`` maps the client order ids the bot's journal recorded to whether each was sent reduce-only.
    An order is chosen only when every rule holds:

    - its client order id has the tradewarden prefix *and* is in ``own``: the prefix is shared by every
      bot (the id is a hash of the bot's uid and the intent), so only the journal tells this bot's orders
      from those of another bot, or of a human, on the same account;
    - it was not sent reduce-only: exits and flatten orders protect the account and stay on the book;
    - it is a buy: on a spot market only a buy opens or adds to a position.
    """
    return [o for o in open_orders
            if o.client_order_id.startswith(CLIENT_ORDER_ID_PREFIX) and own.get(o.client_order_id) is False
            and o.side is OrderSide.BUY]


def admit(intent: Intent, *, allowed_sources: Collection[str], manual_enabled_until: dt.datetime | None,
          now: dt.datetime, already_done: bool, kill_mode: KillMode, entries_blocked: bool) -> Verdict:
    """Decide whether an intent may go on to the risk manager. The first failing rule answers."""
    if already_done:
        return Verdict.DUPLICATE
    if intent.lane == Lane.MANUAL:
        if manual_enabled_until is None or now >= manual_enabled_until:
            return Verdict.MANUAL_BLOCKED_DISABLED
    elif intent.source not in allowed_sources:
        return Verdict.BLOCKED_SOURCE
    if kill_mode == KillMode.HALT_ALL:
        return Verdict.KILL_BLOCKED
    if intent.kind == IntentKind.ENTRY and (entries_blocked or kill_mode != KillMode.OFF):
        return Verdict.KILL_BLOCKED
    return Verdict.ACCEPT
