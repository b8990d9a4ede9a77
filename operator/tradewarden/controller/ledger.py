"""The gate ledger: the promotion gate's state, kept where a status writer cannot forge it.

Anyone who may patch ``tradingbots/status`` (a cluster admin, a role granted that subresource, the
operator's own ServiceAccount) can write any status. So the gate never reads its evidence from status:
each bot's gate state (the effective mode, the replay and consensus records, the capital step,
``paperSince`` and the consensus trip) lives in one ConfigMap ``gate-<bot uid>`` in the operator's own
namespace (``--ledger-namespace``), which only the operator's ServiceAccount (and cluster admins) may
write. ``status`` is a mirror of it, rewritten on every reconcile where they differ.

Pure functions, called by the bot reconcile in :mod:`tradewarden.controller.handlers`:

1. :func:`read_ledger` reads the ledger ConfigMap from the watch cache (bound to the bot's uid: a bot
   deleted and re-created under the same name starts with an empty ledger, and so in paper);
2. :func:`tampered_fields` compares the status with it: gate fields that differ were written by someone
   else (or, once, by an operator version from before the ledger) and are reported, never believed;
3. :func:`trusted` gives the bot with its status' gate fields replaced by the ledger's; every decision is
   taken on that;
4. :func:`next_ledger` is the ledger after the reconcile, written (server-side apply) *before* the
   status, so the status never shows gate state the ledger does not hold.

The same shape keeps two more things a status writer must not decide (:class:`Ledger`, one
:func:`read_ledger` and :func:`ledger_configmap` for all): a KillSwitch's fleet-drawdown peak
(:class:`SwitchLedger`) and a StrategyConfig's verdict (:class:`ConfigLedger`).

The bot's ledger also remembers the last integrity problem found (a forged status, a foreign write to an
owned object, a Lease that contradicts the pod, a live permission the runner refused) for
:data:`INTEGRITY_HOLD`, which the ``Intact`` condition shows: a status writer cannot make it go away.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, ClassVar, TypeVar

from pydantic import Field, ValidationError

from tradewarden.api.base import WireModel
from tradewarden.api.runtime import LABEL_MANAGED_BY, MANAGED_BY, canonical_json, sha256_hex
from tradewarden.api.strategyconfig import StrategyConfigStatus
from tradewarden.api.tradingbot import (
    CapitalStatus,
    ConsensusStatus,
    GateTrip,
    ReplayEvidence,
    TradingBot,
    TradingBotStatus,
    TradingMode,
)
from tradewarden.controller.status import normalize_json

LEDGER_DATA = "gate.json"
LABEL_COMPONENT = "app.kubernetes.io/component"
COMPONENT_LEDGER = "gate-ledger"
#: Annotation naming the bot a ledger belongs to, as ``namespace/name`` (a label value could not hold it).
ANN_LEDGER_OF = "tradewarden.io/ledger-of"
#: The gate's fields of a bot's status, as the models name them.
GATE_FIELDS: tuple[str, ...] = ("effective_mode", "replay", "consensus", "capital", "paper_since", "gate_trip")
#: How long ``Intact=False`` stays after the last integrity problem was found.
INTEGRITY_HOLD = dt.timedelta(minutes=15)


class Ledger(WireModel):
    """What every ledger is: one ConfigMap ``<PREFIX>-<uid>`` in the operator's namespace, bound to the
    uid of the object it belongs to (an object re-created under the same name starts with none)."""

    PREFIX: ClassVar[str] = ""

    @property
    def uid(self) -> str:
        raise NotImplementedError

    @property
    def owner(self) -> str:
        """The object this ledger belongs to, in words (an annotation: a label value could not hold it)."""
        raise NotImplementedError


L = TypeVar("L", bound=Ledger)


def ledger_name(kind: type[Ledger], uid: str) -> str:
    return f"{kind.PREFIX}-{uid}"


def read_ledger(kind: type[L], configmap: dict[str, Any] | None, uid: str) -> L | None:
    """The ledger of the object with ``uid`` held by ``configmap``, or None (none, another object's, or
    unreadable: the operator then starts over, on the safe side)."""
    text = ((configmap or {}).get("data") or {}).get(LEDGER_DATA)
    if not text:
        return None
    try:
        found = kind.model_validate_json(text)
    except (ValidationError, ValueError):
        return None
    return found if found.uid == uid else None


def ledger_configmap(ledger: Ledger, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": ledger_name(type(ledger), ledger.uid),
            "namespace": namespace,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_COMPONENT: COMPONENT_LEDGER},
            "annotations": {ANN_LEDGER_OF: ledger.owner},
        },
        "data": {LEDGER_DATA: json.dumps(ledger.to_wire(), sort_keys=True, indent=1) + "\n"},
    }


class GateLedger(Ledger):
    """One bot's gate state, as only the operator writes it."""

    PREFIX: ClassVar[str] = "gate"

    bot_uid: str
    namespace: str
    bot: str
    effective_mode: TradingMode = TradingMode.SIGNALS
    replay: ReplayEvidence | None = None
    consensus: ConsensusStatus | None = None
    capital: CapitalStatus | None = None
    paper_since: dt.datetime | None = None
    gate_trip: GateTrip | None = None
    #: Fingerprint of the gate fields before the last update: a status that still shows them is one whose
    #: mirror write has not happened yet (it failed, or the operator stopped in between), not a forgery.
    previous: str = ""
    #: spec.manualLane.enabledUntil as last seen, and when it was first seen: the lane closes at most 24 h
    #: after that, however far ahead it says (controller.builders.cap_manual_lane).
    manual_lane_until: dt.datetime | None = None
    manual_lane_since: dt.datetime | None = None
    problem_at: dt.datetime | None = Field(default=None, description="When the last integrity problem was found.")
    problem_reason: str = ""
    problem: str = Field(default="", max_length=1024)

    @property
    def uid(self) -> str:
        return self.bot_uid

    @property
    def owner(self) -> str:
        return f"{self.namespace}/{self.bot}"



def gate_wire(source: TradingBotStatus | GateLedger) -> dict[str, Any]:
    """The gate fields of a status or a ledger, on the wire as the API server returns them (both models
    name them alike, so their wire names agree)."""
    wire = source.model_dump(mode="json", by_alias=True, exclude_none=True, include=set(GATE_FIELDS))
    normalized: dict[str, Any] = normalize_json(wire)
    return normalized


def fingerprint(source: TradingBotStatus | GateLedger) -> str:
    return sha256_hex(canonical_json(gate_wire(source)))


def tampered_fields(status: TradingBotStatus, ledger: GateLedger | None) -> list[str]:
    """The gate fields of ``status`` that the operator did not write (wire names), or [] when it is the
    ledger's mirror (or the one before it, while the mirror write is still to come)."""
    if ledger is None:
        empty = GateLedger(bot_uid="", namespace="", bot="")
        want = gate_wire(empty)
        previous = ""
    else:
        want, previous = gate_wire(ledger), ledger.previous
    have = gate_wire(status)
    if have == want or (previous and fingerprint(status) == previous):
        return []
    return sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))


def trusted(bot: TradingBot, ledger: GateLedger | None) -> TradingBot:
    """``bot`` with its status' gate fields replaced by the ledger's (all empty without a ledger)."""
    source = ledger or GateLedger(bot_uid=bot.metadata.uid, namespace=bot.metadata.namespace or "",
                                  bot=bot.metadata.name)
    update = {name: getattr(source, name) for name in GATE_FIELDS}
    return bot.model_copy(update={"status": bot.status.model_copy(update=update)})


def lane_since(bot: TradingBot, ledger: GateLedger | None, now: dt.datetime) -> dt.datetime | None:
    """When the bot's current ``spec.manualLane.enabledUntil`` was first seen (now, for a new value)."""
    until = bot.spec.manual_lane.enabled_until
    if until is None:
        return None
    if ledger is not None and ledger.manual_lane_until == until and ledger.manual_lane_since is not None:
        return ledger.manual_lane_since
    return now.replace(microsecond=0)


def next_ledger(bot: TradingBot, old: GateLedger | None, status: TradingBotStatus, now: dt.datetime,
                problem: tuple[str, str] | None = None) -> GateLedger:
    """The ledger after a reconcile that computed ``status``; ``problem`` is (reason, message) of an
    integrity problem found by this reconcile."""
    base = old or GateLedger(bot_uid=bot.metadata.uid, namespace=bot.metadata.namespace or "", bot=bot.metadata.name)
    update: dict[str, Any] = {name: getattr(status, name) for name in GATE_FIELDS}
    update.update(manual_lane_until=bot.spec.manual_lane.enabled_until,
                  manual_lane_since=lane_since(bot, old, now))
    candidate = base.model_copy(update=update)
    if gate_wire(candidate) != gate_wire(base):
        update["previous"] = fingerprint(base)
    if problem is not None:
        update.update(problem_at=now.replace(microsecond=0), problem_reason=problem[0], problem=problem[1][:1024])
    return base.model_copy(update=update)


def integrity(ledger: GateLedger | None, now: dt.datetime) -> tuple[bool, str, str, dt.datetime | None]:
    """The ``Intact`` condition: (status, reason, message, when it may turn True by itself)."""
    if ledger is not None and ledger.problem_at is not None and now - ledger.problem_at < INTEGRITY_HOLD:
        until = ledger.problem_at + INTEGRITY_HOLD
        return (False, ledger.problem_reason or "Tampered",
                f"{ledger.problem} (found at {ledger.problem_at.isoformat().replace('+00:00', 'Z')}; shown for "
                f"{int(INTEGRITY_HOLD.total_seconds() // 60)} minutes; see docs/SECURITY.md)", until)
    return (True, "Intact", "nobody but the operator and the runner wrote the gate's state or the bot's objects "
                            "(as far as the operator can observe; see docs/SECURITY.md)", None)


class SwitchLedger(Ledger):
    """A KillSwitch's trigger state, as only the operator writes it: the fleet's equity peak that the
    ``fleetDrawdownPct`` trigger measures from, and the fleet it was measured over. In status they are a
    mirror: a status writer who reset the peak would otherwise keep the trigger from ever firing."""

    PREFIX: ClassVar[str] = "switch"

    switch_uid: str
    name: str
    fleet_equity_peak: float | None = None
    matched_bots: list[str] = Field(default_factory=list)

    @property
    def uid(self) -> str:
        return self.switch_uid

    @property
    def owner(self) -> str:
        return f"KillSwitch/{self.name}"


class ConfigLedger(Ledger):
    """A StrategyConfig's verdict as only the operator writes it: the last spec it validated, the strategy
    it names, and the Valid condition. Bots run ``validSpec``; in status it is a mirror (a status writer
    would otherwise hand a bot's runner a spec nobody validated)."""

    PREFIX: ClassVar[str] = "strategy"

    config_uid: str
    namespace: str
    name: str
    status: StrategyConfigStatus = Field(default_factory=StrategyConfigStatus)
    #: The fields that reach runners as the ledger held them before its last update: a status that still
    #: shows them is one whose mirror write has not happened yet, not a forgery.
    previous: dict[str, Any] = Field(default_factory=dict)

    @property
    def uid(self) -> str:
        return self.config_uid

    @property
    def owner(self) -> str:
        return f"StrategyConfig/{self.namespace}/{self.name}"


#: The StrategyConfig status fields that reach runners.
CONFIG_FIELDS: tuple[str, ...] = ("valid_spec", "strategy", "config_hash")


def config_fields(status: StrategyConfigStatus) -> dict[str, Any]:
    wire = status.model_dump(mode="json", by_alias=True, exclude_none=True, include=set(CONFIG_FIELDS))
    normalized: dict[str, Any] = normalize_json(wire)
    return normalized



def config_tampered(status: StrategyConfigStatus, ledger: ConfigLedger | None) -> bool:
    """Whether a StrategyConfig's status shows a verdict the operator did not write."""
    if ledger is None:
        return False
    have = config_fields(status)
    return have != config_fields(ledger.status) and have != ledger.previous


def next_config_ledger(old: ConfigLedger | None, uid: str, namespace: str, name: str,
                       status: StrategyConfigStatus) -> ConfigLedger:
    previous = config_fields(old.status) if old is not None else {}
    if old is not None and config_fields(old.status) == config_fields(status):
        previous = old.previous
    return ConfigLedger(config_uid=uid, namespace=namespace, name=name, status=status, previous=previous)
