"""The kopf handlers (thin) and the reconcilers they trigger, one per kind.

Registered by :func:`register`, which :mod:`tradewarden.controller.main` calls on a fresh
``kopf.OperatorRegistry``. Every handler is an ``@kopf.on.event`` handler: kopf calls it for the initial
listing (resume), for creations, updates and deletions alike, and stores nothing on the object (no
diff-base annotation, no progress, no finalizer; the handlers return None, so no result lands in
status either). A handler only names the objects to reconcile; the reconcile itself:

1. reads the newest state from the watch cache and ``model_validate``\\s it,
2. calls the pure builders and policies (:mod:`~.builders`, :mod:`~.status`, :mod:`~.gate`,
   :mod:`~.switches`),
3. applies only the owned objects whose owned fields differ (:mod:`~.diffs`),
4. writes status with a JSON merge patch only when it changed, and records Events for transitions.

What triggers what (all level-triggered: a reconcile recomputes everything it owns):

* TradingBot: its own events; its runner Lease and owned objects (ConfigMaps, ServiceAccount, Role,
  RoleBinding, StatefulSet); its runner pod and its StatefulSet's FailedCreate Events; a change of the
  StrategyConfig it references; any KillSwitch change; a finished promotion-gate round; a re-check when
  its heartbeat or its promotion evidence goes stale, its ramp dwell ends or its StatefulSet's grace for a
  missing pod ends; a resync every minute.
* PromotionGate (:mod:`~.promotion`): the bot's events and its evidence ConfigMap's. It replays the
  runner's export in a separate process and runs the consensus; the round it finds is handed to the
  bot's reconcile, which records it in the status (the only writer of a bot's status).
* StrategyConfig: its own events, and bot events in its namespace (the count of bots using it).
* KillSwitch: its own events, Lease events (acknowledgements, telemetry), bot label changes.
* The fleet RBAC (the shared ClusterRoleBinding): bot creations and deletions, and its own events.
  A deleted bot leaves nothing behind: the garbage collector removes its namespaced objects, and the
  DELETED event prunes its subject from the binding without a finalizer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import fnmatch
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import kopf
from pydantic import ValidationError

from tradewarden.api.conditions import (
    MAX_MESSAGE,
    Condition,
    ConditionStatus,
    bound_message,
    describe_error,
    list_problems,
    set_condition,
)
from tradewarden.api.evidence import evidence_configmap_name
from tradewarden.api.gateoverride import CONDITION_ACTIVE, ActiveReason, GateOverride, expiry_problem
from tradewarden.api.killswitch import KillSwitch
from tradewarden.api.runtime import (
    CONFIGMAP_HASH_KEY,
    CONFIGMAP_RUNTIME_KEY,
    LABEL_BOT,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    canonical_json,
    lease_name,
    runner_account_name,
    runner_pod_name,
    runtime_configmap_name,
    sha256_hex,
)
from tradewarden.api.strategyconfig import StrategyConfig, StrategyConfigStatus
from tradewarden.api.tradingbot import BotPhase, Placement, TradingBot, TradingMode
from tradewarden.controller import gate
from tradewarden.controller import kube as k
from tradewarden.controller import ledger as ledger_
from tradewarden.controller.builders import (
    COMPONENT_EVIDENCE,
    COMPONENT_RUNTIME,
    FLEET_RBAC_NAME,
    LABEL_COMPONENT,
    OperatorDefaults,
    build_bot_plan,
    build_configmap,
    build_fleet_cluster_role,
    build_fleet_cluster_role_binding,
    keep_immutable_fields,
    render_runtime_json,
)
from tradewarden.controller.cache import (
    IDX_BOTS,
    IDX_EVENTS,
    IDX_GATEOVERRIDES,
    IDX_KILLSWITCHES,
    IDX_LEASES,
    IDX_OWNED,
    IDX_PODS,
    IDX_STRATEGYCONFIGS,
    Cache,
    slim,
    slim_event,
    slim_pod,
)
from tradewarden.controller.diffs import needs_apply
from tradewarden.controller.keys import GateSigner
from tradewarden.controller.leases import (
    NO_RUNNER,
    RunnerObservation,
    RunnerWorkload,
    not_believed,
    observe_lease,
    pod_contradiction,
    with_pod,
    workload_facts,
)
from tradewarden.controller.metrics import Metrics
from tradewarden.controller.promotion import PromotionGate
from tradewarden.controller.reviewers import ReviewerConfig
from tradewarden.controller.sealing import live_runtime, runtime_tampering, seal_runtime
from tradewarden.controller.status import (
    ConfigSource,
    EventSpec,
    bot_events,
    bot_status_patch,
    compute_bot_status,
    compute_strategyconfig_status,
    config_source,
    next_bot_check,
    ramp_events,
    strategyconfig_events,
    strategyconfig_status_patch,
)
from tradewarden.controller.switches import (
    FleetBot,
    compute_killswitch,
    killswitch_events,
    killswitch_status_patch,
    matched_bots,
)
from tradewarden.controller.workqueue import WorkQueue

logger = logging.getLogger(__name__)

BotKey = tuple[str, str]
FLEET_KEY = "fleet"

#: How long after a write the cache may still show the object as it was before it (watch lag).
WRITE_MEMORY_SECONDS = 10.0
#: Lease events reach the KillSwitch reconcilers batched over this long: one reconcile per switch
#: per half second covers any number of runner heartbeats, and acknowledgement latency is measured
#: from the runners' own timestamps, so the batching does not distort it.
LEASE_TO_SWITCH_DELAY = 0.5


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _fingerprint(value: Any) -> str:
    return sha256_hex(canonical_json(value))


def _rv(value: Any) -> int:
    """A resourceVersion as a number: etcd revisions are, and ordering them is only ever used to
    recognise a cache that lags our own write; anything unexpected compares as 'not newer'."""
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return -1


@dataclass(frozen=True)
class Scope:
    """The namespaces this operator watches: all (no patterns), or kopf-style globs (``!`` excludes)."""

    patterns: tuple[str, ...] = ()

    @property
    def clusterwide(self) -> bool:
        return not self.patterns

    def covers(self, namespace: str) -> bool:
        if self.clusterwide:
            return True
        included = [p for p in self.patterns if not p.startswith("!")]
        excluded = [p[1:] for p in self.patterns if p.startswith("!")]
        return any(fnmatch.fnmatchcase(namespace, p) for p in included) and \
            not any(fnmatch.fnmatchcase(namespace, p) for p in excluded)

    def sees_every_bot_of(self, selector_namespaces: Sequence[str]) -> bool:
        """True when every bot a selector over ``selector_namespaces`` can match is in scope."""
        if self.clusterwide:
            return True
        return bool(selector_namespaces) and all(self.covers(ns) for ns in selector_namespaces)


class WriteMemory:
    """What the operator wrote in the last few seconds, so a reconcile that runs before the watch
    delivers our own write does not send the same write again (a harmless but noisy duplicate)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[tuple[str, ...], tuple[str, int, float]] = {}

    def cache_is_behind(self, key: tuple[str, ...], fingerprint: str, live_rv: Any) -> bool:
        entry = self._entries.get(key)
        if entry is None:
            return False
        written, rv, at = entry
        if self._clock() - at > WRITE_MEMORY_SECONDS:
            del self._entries[key]
            return False
        return written == fingerprint and (live_rv is None or _rv(live_rv) < rv)

    def record(self, key: tuple[str, ...], fingerprint: str, rv: Any) -> None:
        self._entries[key] = (fingerprint, _rv(rv), self._clock())

    def lags(self, key: tuple[str, ...], live_rv: Any) -> bool:
        """True when the cache shows an object older than our own recent write of it (any content)."""
        entry = self._entries.get(key)
        if entry is None or self._clock() - entry[2] > WRITE_MEMORY_SECONDS:
            return False
        return _rv(live_rv) < entry[1]


@dataclass
class Write:
    """One write decided on the event loop and carried out in a worker thread."""

    action: str  # apply, create, delete, status, spec
    key: tuple[str, ...]
    fingerprint: str
    manifest: k.Manifest = field(default_factory=dict)
    ref: k.ResourceRef | None = None
    namespace: str | None = None
    name: str = ""
    uid: str | None = None


@dataclass
class Outcome:
    """The writes of one reconcile and the Events to record once its status write succeeded."""

    involved: k.Manifest
    writes: list[Write] = field(default_factory=list)
    events: list[EventSpec] = field(default_factory=list)
    skipped: bool = False  # something was left unwritten because the cache lags our own write


class Controller:
    """The operator's state: the watch cache, the API client, one work queue per kind."""

    def __init__(self, kube: k.Kube, defaults: OperatorDefaults, metrics: Metrics, cache: Cache | None = None,
                 clock: Callable[[], dt.datetime] = utcnow, concurrency: int = 4,
                 scope: Scope | None = None, reviewers: Sequence[ReviewerConfig] = (),
                 signer: GateSigner | None = None) -> None:
        self.kube = kube
        #: Signs every runtime config; its namespace holds the gate ledger (the operator's own namespace).
        self.signer = signer or GateSigner.generate("tradewarden-system")
        self.ledger_namespace = self.signer.namespace
        #: Fingerprint of what the operator last applied to (or found in) each owned object.
        self._applied: dict[tuple[str, ...], str] = {}
        #: The last live-permission refusal each runner reported, so each is reported once.
        self._refusals: dict[BotKey, str] = {}
        #: Ledgers parsed from the cache, by (ConfigMap name, resourceVersion).
        self._ledgers_read: dict[tuple[str, str], ledger_.Ledger | None] = {}
        #: The StrategyConfig verdicts this operator wrote, by config uid (newer than the cache may be).
        self._config_ledgers: dict[str, ledger_.ConfigLedger] = {}
        #: The last failure reported in each object's status, so a retry storm posts one Event.
        self._failures_reported: dict[tuple[str, str, str], str] = {}
        self.scope = scope or Scope()
        self.defaults = defaults
        self.metrics = metrics
        self.cache = cache or Cache()
        self.clock = clock
        self.indexed = asyncio.Event()
        limit = asyncio.Semaphore(concurrency)
        observe = metrics.observe_reconcile
        self.bots: WorkQueue[BotKey] = WorkQueue("TradingBot", self.reconcile_bot, limit, observe,
                                                 on_error=self.report_bot_failure)
        self.configs: WorkQueue[BotKey] = WorkQueue("StrategyConfig", self.reconcile_strategyconfig, limit, observe,
                                                    on_error=self.report_config_failure)
        self.switches: WorkQueue[str] = WorkQueue("KillSwitch", self.reconcile_killswitch, limit, observe)
        self.fleet: WorkQueue[str] = WorkQueue("FleetRBAC", self.reconcile_fleet, limit, observe)
        self.overrides: WorkQueue[BotKey] = WorkQueue("GateOverride", self.reconcile_gateoverride, limit, observe)
        # Its own limit: a round waits for replays and reviewers for seconds, and must never hold up the
        # reconciles (a kill switch's bookkeeping above all). The replays have a tighter limit inside.
        self.gate = PromotionGate(kube, reviewers)
        self.promotions: WorkQueue[BotKey] = WorkQueue("PromotionGate", self.reconcile_gate,
                                                       asyncio.Semaphore(concurrency), observe)
        #: Rounds found by the gate and not yet seen in the cache's status, by bot.
        self._rounds: dict[BotKey, gate.GateRound] = {}
        self._memory = WriteMemory()
        self._observations: dict[tuple[str, str], RunnerObservation] = {}
        self._sc_fanout: dict[BotKey, str] = {}
        self._ks_fanout: dict[str, int] = {}
        self._bot_seen: dict[BotKey, tuple[str, str]] = {}
        #: Each runner StatefulSet's (uid, generation, pod uid) and when this operator first saw it so.
        self._workload_seen: dict[BotKey, tuple[tuple[str, str, str], dt.datetime]] = {}

    # ------------------------------------------------------------------------------ triggers (event loop)

    def mark_indexed(self) -> None:
        """kopf runs no handler before every index has its initial listing: the cache is complete."""
        self.indexed.set()

    def bot_event(self, namespace: str, name: str, event_type: str | None, body: Mapping[str, Any]) -> None:
        key = (namespace, name)
        self.fleet.trigger(FLEET_KEY)
        spec = body.get("spec") or {}
        seen = (str(spec.get("strategyConfigRef", "")), canonical_json((body.get("metadata") or {}).get("labels")))
        if event_type == "DELETED":
            self._bot_seen.pop(key, None)
            self._rounds.pop(key, None)
            self.gate.forget(key)
            self._trigger_configs_in(namespace)
            self._trigger_all_switches()
            return
        # The StrategyConfigs (bot counts) and KillSwitches (matched bots) care only about a bot's
        # existence, reference and labels, not about its status: skip them for status-only events.
        if self._bot_seen.get(key) != seen:
            self._bot_seen[key] = seen
            self._trigger_configs_in(namespace)
            self._trigger_all_switches()
        self.bots.trigger(key)
        self.promotions.trigger(key)

    def evidence_event(self, namespace: str, bot: str) -> None:
        """The runner wrote a new export (or the ConfigMap changed): a replay may be due."""
        self.promotions.trigger((namespace, bot))

    def lease_event(self, namespace: str, bot: str) -> None:
        self.bots.trigger((namespace, bot))
        for ks in self.cache.killswitches():
            self.switches.trigger_after(str(ks["metadata"]["name"]), LEASE_TO_SWITCH_DELAY)

    def _trigger_configs_in(self, namespace: str) -> None:
        for sc in self.cache.strategyconfigs():
            meta = sc.get("metadata") or {}
            if meta.get("namespace") == namespace:
                self.configs.trigger((namespace, str(meta.get("name"))))

    def _trigger_all_switches(self) -> None:
        for ks in self.cache.killswitches():
            self.switches.trigger(str(ks["metadata"]["name"]))

    def _trigger_all_bots(self) -> None:
        for key in self._bot_keys():
            self.bots.trigger(key)

    def _bot_keys(self) -> list[BotKey]:
        return [(str(b["metadata"].get("namespace", "")), str(b["metadata"]["name"])) for b in self.cache.bots()]

    def resync_all(self) -> None:
        """Re-check everything: the safety net under the event-driven triggers. Writes nothing when
        nothing drifted, so it costs CPU only."""
        self._trigger_all_bots()
        for sc in self.cache.strategyconfigs():
            self.configs.trigger((str(sc["metadata"].get("namespace", "")), str(sc["metadata"]["name"])))
        self._trigger_all_switches()
        self.fleet.trigger(FLEET_KEY)

    async def resync_forever(self, period: float) -> None:
        await self.indexed.wait()
        while True:
            await asyncio.sleep(period)
            self.resync_all()

    # ------------------------------------------------------------------------------ shared helpers

    def _observe(self, namespace: str, bot: str) -> RunnerObservation:
        """What the bot's runner says through its Lease, unless it contradicts the runner pod the
        operator observes (placement cluster): then nothing of it is believed."""
        found = self._observe_lease(namespace, bot)
        body = self.cache.bot(namespace, bot) or {}
        if ((body.get("spec") or {}).get("placement") or Placement.CLUSTER.value) != Placement.CLUSTER.value:
            return found
        pod = runner_pod_name(bot)
        why = pod_contradiction(found, self.cache.pod(namespace, pod), pod)
        return not_believed(found, why) if why else found

    def _runner_workload(self, key: BotKey, now: dt.datetime) -> tuple[k.Manifest | None, RunnerWorkload | None]:
        """The runner pod of placement cluster and the facts of its StatefulSet. When the StatefulSet last
        changed or lost its pod is remembered here: the API server records neither."""
        namespace, bot = key
        pod = self.cache.pod(namespace, runner_pod_name(bot))
        sts = self.cache.owned("StatefulSet", namespace, runner_account_name(bot))
        if sts is None:
            self._workload_seen.pop(key, None)
            return pod, None
        meta = sts.get("metadata") or {}
        seen = (str(meta.get("uid")), str(meta.get("generation")), str(((pod or {}).get("metadata") or {}).get("uid")))
        held = self._workload_seen.get(key)
        if held is None or held[0] != seen:
            held = self._workload_seen[key] = (seen, now)
        return pod, workload_facts(sts, runner_pod_name(bot), held[1],
                                   self.cache.failed_creates(namespace, runner_account_name(bot)))

    def _observe_lease(self, namespace: str, bot: str) -> RunnerObservation:
        lease = self.cache.lease(namespace, bot)
        if lease is None:
            return NO_RUNNER
        meta = lease.get("metadata") or {}
        key = (str(meta.get("uid", "")), str(meta.get("resourceVersion", "")))
        found = self._observations.get(key)
        if found is None:
            if len(self._observations) > 10_000:
                self._observations.clear()
            found = self._observations[key] = observe_lease(lease)
            if found.problems:
                logger.warning("Lease %s/%s: %s", namespace, meta.get("name"), "; ".join(found.problems))
        return found

    def _killswitch_models(self) -> list[KillSwitch]:
        """Every KillSwitch; one that does not parse is read as the runners read it: halt_all over every
        bot (the strongest safe reading: a brake is never lost to a parse error)."""
        out: list[KillSwitch] = []
        for body in self.cache.killswitches():
            try:
                out.append(KillSwitch.model_validate(body))
            except ValidationError:
                out.append(unreadable_switch(body))
        return out

    def _foreign_write(self, desired: k.Manifest, live: k.Manifest | None) -> str | None:
        """Why ``live`` (an owned object) was written by someone other than the operator, or None.

        Three signs: a ConfigMap made ``immutable`` (the operator never does that); a runtime ConfigMap
        whose document the operator's key did not sign; an object that no longer carries what the
        operator last applied or saw in it, although what the operator wants did not change since.
        """
        if live is None:
            return None
        meta = desired["metadata"]
        kind, namespace, name = desired["kind"], meta.get("namespace") or "", meta["name"]
        what = f"{kind} {namespace}/{name}"
        if live.get("immutable"):
            return f"{what} was made immutable by someone other than the operator; it is replaced"
        if kind == "ConfigMap" and (meta.get("labels") or {}).get(LABEL_COMPONENT) == COMPONENT_RUNTIME:
            why = runtime_tampering(live, self.signer.public)
            if why is not None:
                return f"{what} {why}; the operator's config is restored"
        key = (kind, namespace, name)
        fp = _fingerprint(desired)
        if self._applied.get(key) == fp and needs_apply(desired, live) and \
                not self._memory.cache_is_behind(key, fp, (live.get("metadata") or {}).get("resourceVersion")):
            return f"{what} was changed by someone other than the operator; the operator's version is restored"
        return None

    def _runner_problems(self, bot: TradingBot, runner: RunnerObservation) -> list[tuple[str, str]]:
        """What points at tampering in what the runner reports: a Lease that contradicts the runner pod, a
        live permission the runner refused. Each distinct one is reported once."""
        key = (bot.metadata.namespace or "", bot.metadata.name)
        found: list[tuple[str, str]] = []
        if runner.contradiction:
            found.append(("LeaseContradicted", f"Lease {lease_name(bot.metadata.name)} is not believed: "
                                               f"{runner.contradiction}; its acknowledgements and telemetry are "
                                               f"ignored"))
        if runner.live_refused:
            found.append(("LivePermissionRefused",
                          f"the runner refused a live permission and trades on paper: {runner.live_refused}"))
        seen = " | ".join(message for _, message in found)
        if seen == self._refusals.get(key, ""):
            return []
        self._refusals[key] = seen
        return found

    def _plan_apply(self, out: Outcome, desired: k.Manifest, live: k.Manifest | None) -> None:
        meta = desired["metadata"]
        key = (desired["kind"], meta.get("namespace") or "", meta["name"])
        fp = _fingerprint(desired)
        if not needs_apply(desired, live):
            self._applied[key] = fp
            return
        if self._memory.cache_is_behind(key, fp, (live or {}).get("metadata", {}).get("resourceVersion")):
            out.skipped = True
            return
        out.writes.append(Write("apply", key, fp, manifest=desired))

    def _plan_status(self, out: Outcome, ref: k.ResourceRef, body: Mapping[str, Any],
                     patch: dict[str, Any] | None, events: Sequence[EventSpec]) -> None:
        if patch is None:
            return
        meta = body["metadata"]
        key = ("status", ref.kind, meta.get("namespace") or "", meta["name"])
        fp = _fingerprint(patch)
        if self._memory.cache_is_behind(key, fp, meta.get("resourceVersion")):
            out.skipped = True
            return
        out.writes.append(Write("status", key, fp, manifest=patch, ref=ref, namespace=meta.get("namespace"),
                                name=meta["name"]))
        out.events.extend(events)

    async def _execute(self, out: Outcome) -> None:
        if out.writes:
            await asyncio.to_thread(self._execute_sync, out)

    def _execute_sync(self, out: Outcome) -> None:
        """Carry out the writes in order (in a worker thread: the client is synchronous)."""
        written_rv: dict[tuple[str, str, str], str] = {}  # (plural, namespace, name) -> our last write
        for w in out.writes:
            result: k.Manifest | None = None
            target = (w.ref.plural if w.ref is not None else "", w.namespace or "", w.name)
            precondition = w.manifest.get("metadata", {}).get("resourceVersion")
            if precondition and target in written_rv:
                # Our own earlier write in this outcome moved the object on; the precondition guards
                # against other writers, so it follows our write, not the version we read.
                w.manifest["metadata"]["resourceVersion"] = written_rv[target]
            if w.action == "apply":
                result = self.kube.apply(w.manifest)
                self._applied[w.key] = w.fingerprint
                logger.info("applied %s %s", w.key[0], "/".join(p for p in w.key[1:] if p))
            elif w.action == "create":
                try:
                    result = self.kube.create(w.manifest)
                    self._applied[w.key] = w.fingerprint
                    logger.info("created %s %s", w.key[0], "/".join(p for p in w.key[1:] if p))
                except k.AlreadyExists:
                    result = None  # another reconcile (or an earlier operator) made it: what we wanted
            elif w.action == "delete" and w.ref is not None:
                if self.kube.delete(w.ref, w.namespace, w.name, uid=w.uid):
                    logger.info("deleted %s %s/%s", w.ref.kind, w.namespace, w.name)
            elif w.action in ("status", "spec") and w.ref is not None:
                result = self.kube.merge_patch(w.ref, w.namespace, w.name, w.manifest,
                                               subresource="status" if w.action == "status" else None)
            if result is not None:
                rv = result.get("metadata", {}).get("resourceVersion")
                self._memory.record(w.key, w.fingerprint, rv)
                if rv:
                    written_rv[target] = rv
        for event in out.events:
            self.kube.post_event(out.involved, event.type, event.reason, event.message)

    # ------------------------------------------------------------------------------ TradingBot

    def _config_source(self, bot: TradingBot) -> ConfigSource:
        namespace, ref = bot.metadata.namespace or "", bot.spec.strategy_config_ref
        sc_body = self.cache.strategyconfig(namespace, ref)
        sc: StrategyConfig | None = None
        if sc_body is not None:
            try:
                sc = self._trusted_config(StrategyConfig.model_validate(sc_body))
            except ValidationError as exc:
                # Treated as missing: the bot says so, and its runner keeps the last good ConfigMap.
                logger.error("StrategyConfig %s/%s does not parse; fix its spec: %s", namespace, ref, exc)
        return config_source(namespace, ref, sc)

    def _config_ledger(self, uid: str) -> ledger_.ConfigLedger | None:
        """The newest of our last write (memory) and the cache: bots must never read an older verdict."""
        mine = self._config_ledgers.get(uid)
        if mine is not None:
            return mine
        return self._read_ledger(ledger_.ConfigLedger, self.cache.owned(
            "ConfigMap", self.ledger_namespace, ledger_.ledger_name(ledger_.ConfigLedger, uid)), uid)

    def _trusted_config(self, sc: StrategyConfig) -> StrategyConfig:
        """``sc`` with its status replaced by the operator's own verdict (empty before the first one)."""
        held = self._config_ledger(sc.metadata.uid)
        return sc.model_copy(update={"status": held.status if held is not None else StrategyConfigStatus()})

    def _with_round(self, key: BotKey, bot: TradingBot) -> TradingBot:
        """``bot`` with the gate's round that the cache does not show yet recorded in its status."""
        found = self._rounds.get(key)
        if found is None:
            return bot
        if found.bot_uid != bot.metadata.uid or gate.replay_is_recorded(bot.status.replay, found.replay):
            del self._rounds[key]  # recorded (our write is in the cache), or the bot was re-created
            return bot
        return gate.record_round(bot, found)

    def _gateoverrides(self, namespace: str) -> list[GateOverride]:
        out: list[GateOverride] = []
        for body in self.cache.gateoverrides(namespace):
            try:
                out.append(GateOverride.model_validate(body))
            except ValidationError:
                continue  # not honoured; its own reconcile says why
        return out

    def _with_override(self, bot: TradingBot, now: dt.datetime) -> TradingBot:
        """``bot`` with the replay-gate override in force among its namespace's GateOverrides."""
        return gate.with_override(bot, gate.active_override(self._gateoverrides(bot.metadata.namespace or ""),
                                                            bot.metadata.name, now))

    def _ledger(self, bot_uid: str) -> tuple[ledger_.GateLedger | None, bool]:
        """The bot's gate ledger from the cache, and whether the cache lags our own last write of it."""
        name = ledger_.ledger_name(ledger_.GateLedger, bot_uid)
        body = self.cache.owned("ConfigMap", self.ledger_namespace, name)
        lags = self._memory.lags(("ConfigMap", self.ledger_namespace, name),
                                 (body or {}).get("metadata", {}).get("resourceVersion"))
        return self._read_ledger(ledger_.GateLedger, body, bot_uid), lags

    def _read_ledger(self, kind: type[LedgerT], body: k.Manifest | None, uid: str) -> LedgerT | None:
        """A ledger from the cache, parsed once per resourceVersion (bots reconcile on every heartbeat)."""
        if body is None:
            return None
        key = (str(body["metadata"].get("name", "")), str(body["metadata"].get("resourceVersion", "")))
        if key not in self._ledgers_read:
            if len(self._ledgers_read) > 10_000:
                self._ledgers_read.clear()
            self._ledgers_read[key] = ledger_.read_ledger(kind, body, uid)
        found = self._ledgers_read[key]
        return found if isinstance(found, kind) else None

    async def _reconcile_unparsed_bot(self, body: k.Manifest, exc: ValidationError) -> None:
        """A bot whose spec the operator cannot read (the API server admitted it under a looser schema):
        never silent, and never in the way of a safer setting.

        Its status says so (``ConfigValid=False`` naming the fields, phase Invalid, the current
        generation observed) with one Warning Event per generation; the runner keeps the last good config,
        except that a move to a weaker mode (live -> paper -> signals) written in the same edit still
        reaches it, signed like any other config.
        """
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace", "")), str(meta["name"])
        generation = int(meta.get("generation", 0))
        problems = spec_problems(exc)
        logger.error("TradingBot %s/%s does not parse: %s", namespace, name, "; ".join(problems)[:500])
        now = self.clock()
        out = Outcome(involved=body)
        weaker = self._weaker_mode_of_unparsed(body, namespace, name, now, out)
        in_force = live_runtime(self.cache.owned("ConfigMap", namespace, runtime_configmap_name(name)))
        mode = weaker or (in_force.effective_mode if in_force is not None else None)
        tail = "; the runner keeps its last good config" + (f", in {mode.value} mode (a move to a weaker mode in "
                                                            f"the same edit still applies)" if mode else "")
        message = f"the spec does not parse: {list_problems(problems, MAX_MESSAGE - len(tail))}{tail}"
        raw_status = body.get("status") or {}
        conditions = [c for c in (_condition_or_none(raw) for raw in raw_status.get("conditions") or [])
                      if c is not None]
        stamp = now.replace(microsecond=0)
        conditions = set_condition(conditions, "ConfigValid", ConditionStatus.FALSE, "SpecInvalid", message,
                                   generation, stamp)
        conditions = set_condition(conditions, "Ready", ConditionStatus.FALSE, "SpecInvalid", message, generation,
                                   stamp)
        status: dict[str, Any] = {"observedGeneration": generation, "phase": BotPhase.INVALID.value,
                                  "conditions": [c.to_wire() for c in conditions]}
        if weaker is not None:
            status["effectiveMode"] = weaker.value
        before = {key: raw_status.get(key) for key in status}
        if canonical_json(before) != canonical_json(status):
            self._plan_status(out, k.TRADINGBOTS, body, {"status": status},
                              [EventSpec("Warning", "SpecInvalid", message)]
                              if raw_status.get("observedGeneration") != generation else [])
        await self._execute(out)

    def _weaker_mode_of_unparsed(self, body: k.Manifest, namespace: str, name: str, now: dt.datetime,
                                 out: Outcome) -> TradingMode | None:
        """Plan the runtime config (and ledger) for a weaker mode asked for by a spec that does not parse."""
        try:
            wanted = TradingMode(str((body.get("spec") or {}).get("mode", "")))
        except ValueError:
            return None
        live_cm = self.cache.owned("ConfigMap", namespace, runtime_configmap_name(name))
        current = live_runtime(live_cm)
        if current is None or MODE_RANK[wanted] >= MODE_RANK[current.effective_mode]:
            return None
        lowered = current.model_copy(update={
            "requested_mode": wanted, "effective_mode": wanted, "gate_hash": "", "gate_replay_hash": "",
            "gate_consensus_hash": "", "capital": current.capital.model_copy(update={"live_capital": 0.0})})
        sealed = seal_runtime(lowered, live_cm, self.signer, now)
        assert live_cm is not None
        desired = {"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {k_: v for k_, v in (live_cm.get("metadata") or {}).items()
                                if k_ in ("name", "namespace", "labels", "ownerReferences")},
                   "data": {CONFIGMAP_RUNTIME_KEY: render_runtime_json(sealed), CONFIGMAP_HASH_KEY: sealed.config_hash}}
        self._plan_apply(out, desired, live_cm)
        uid = str((body.get("metadata") or {}).get("uid", ""))
        ledger, _ = self._ledger(uid)
        if ledger is not None and ledger.effective_mode != wanted:
            moved = ledger.model_copy(update={"effective_mode": wanted, "previous": ledger_.fingerprint(ledger)})
            planned = len(out.writes)
            self._plan_apply(out, ledger_.ledger_configmap(moved, self.ledger_namespace),
                             self.cache.owned("ConfigMap", self.ledger_namespace,
                                              ledger_.ledger_name(ledger_.GateLedger, uid)))
            if len(out.writes) > planned:
                out.writes.insert(0, out.writes.pop())  # the ledger first, as always
        logger.warning("TradingBot %s/%s: applying the move to %s mode although the spec does not parse",
                       namespace, name, wanted.value)
        return wanted

    async def reconcile_bot(self, key: BotKey) -> float | None:
        namespace, name = key
        body = self.cache.bot(namespace, name)
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            self._workload_seen.pop(key, None)
            return None  # the garbage collector removes what the bot owned
        if self._memory.lags(("status", "TradingBot", namespace, name), body["metadata"].get("resourceVersion")):
            # Our last status write has not reached the cache yet. What a reconcile records at "now" (a
            # ramp step's start, paperSince) would be recorded twice, at two times: wait for it.
            return 0.2
        try:
            cached = TradingBot.model_validate(body)
        except ValidationError as exc:
            await self._reconcile_unparsed_bot(body, exc)
            return None
        ledger, lags = self._ledger(cached.metadata.uid)
        if lags:
            return 0.2  # the gate's own record of the last reconcile is not in the cache yet
        now = self.clock()
        problems: list[tuple[str, str]] = []
        forged = ledger_.tampered_fields(cached.status, ledger)
        if forged:
            problems.append(("StatusTampered",
                             f"status fields {', '.join(forged)} were written by someone other than the operator; "
                             f"the gate ignores them (its evidence is kept in its ledger) and restores them"))
        bot = self._with_round(key, self._with_override(ledger_.trusted(cached, ledger), now))
        source = self._config_source(bot)
        runner = self._observe(namespace, name)
        if bot.spec.placement == Placement.CLUSTER:
            runner = with_pod(runner, *self._runner_workload(key, now), now)
        plan = build_bot_plan(bot, source.valid, self._killswitch_models(), runner, self.defaults, now,
                              ledger_.lane_since(bot, ledger, now))
        live_runtime_cm = self.cache.owned("ConfigMap", namespace, runtime_configmap_name(name))
        if plan.runtime is not None:
            sealed = seal_runtime(plan.runtime, live_runtime_cm, self.signer, now)
            plan = dataclasses.replace(plan, runtime=sealed, objects=tuple(
                build_configmap(bot, sealed) if o["kind"] == "ConfigMap" and
                o["metadata"]["name"] == runtime_configmap_name(name) else o for o in plan.objects))
        status = compute_bot_status(bot, source, plan, runner, now)

        out = Outcome(involved=body)
        for desired in plan.objects:
            meta = desired["metadata"]
            live = self.cache.owned(desired["kind"], namespace, meta["name"])
            if desired["kind"] == "StatefulSet":
                desired = keep_immutable_fields(desired, live)
            foreign = self._foreign_write(desired, live)
            if foreign is not None:
                problems.append(("ForeignWrite", foreign))
                if live is not None and live.get("immutable"):
                    # An immutable ConfigMap cannot be patched back: replace it (the runner keeps its last
                    # good config meanwhile; an evidence export is re-sent within a minute).
                    out.writes.append(Write("delete", (desired["kind"], namespace, meta["name"]), "",
                                            ref=k.REFS_BY_KIND[desired["kind"]], namespace=namespace,
                                            name=meta["name"], uid=live["metadata"].get("uid")))
                    out.writes.append(Write("create", (desired["kind"], namespace, meta["name"]),
                                            _fingerprint(desired), manifest=desired))
                    continue
                live = None  # apply regardless of the write memory: the object is not what we wrote
            self._plan_apply(out, desired, live)
        if self.cache.lease(namespace, name) is None:
            lease_key = ("Lease", namespace, lease_name(name))
            fp = _fingerprint(plan.lease)
            if self._memory.cache_is_behind(lease_key, fp, None):
                out.skipped = True
            else:
                out.writes.append(Write("create", lease_key, fp, manifest=plan.lease))
        if plan.delete_statefulset:
            sts = self.cache.owned("StatefulSet", namespace, runner_account_name(name))
            if sts is not None and _owned_by(sts, bot.metadata.uid):
                out.writes.append(Write("delete", ("StatefulSet", namespace, runner_account_name(name)), "",
                                        ref=k.STATEFULSETS, namespace=namespace, name=runner_account_name(name),
                                        uid=sts["metadata"].get("uid")))
        problems.extend(self._runner_problems(bot, runner))
        new_ledger = ledger_.next_ledger(bot, ledger, status, now, problems[0] if problems else None)
        intact, intact_reason, intact_message, intact_until = ledger_.integrity(new_ledger, now)
        status = status.model_copy(update={"conditions": set_condition(
            status.conditions, "Intact", intact, intact_reason, intact_message, bot.metadata.generation,
            now.replace(microsecond=0))})
        if new_ledger != ledger:
            # The ledger before anything else: neither the runner's config nor the status ever shows gate
            # state that the ledger does not hold (a crash in between leaves the safer side).
            planned = len(out.writes)
            self._plan_apply(out, ledger_.ledger_configmap(new_ledger, self.ledger_namespace),
                             self.cache.owned("ConfigMap", self.ledger_namespace,
                                              ledger_.ledger_name(ledger_.GateLedger, bot.metadata.uid)))
            if len(out.writes) > planned:
                out.writes.insert(0, out.writes.pop())
        problem_events = [EventSpec("Warning", reason, message) for reason, message in problems]
        if plan.notes and (ledger is None or ledger.manual_lane_until != bot.spec.manual_lane.enabled_until):
            problem_events.extend(EventSpec("Warning", "ManualLaneCapped", note) for note in plan.notes)
        for reason, message in problems:
            logger.warning("TradingBot %s/%s: %s: %s", namespace, name, reason, message)
            self.metrics.count_integrity(reason)
        # Against what the API server has (the cache), not the merged view: a round is written once.
        patch = bot_status_patch(cached.status, status)
        self._plan_status(out, k.TRADINGBOTS, body, patch,
                          [*bot_events(cached.status, status), *ramp_events(plan), *problem_events] if patch else [])
        if problem_events and not patch:
            out.events.extend(problem_events)
        await self._execute(out)

        self._forget_failure("TradingBot", namespace, name)
        delay = next_bot_check(bot, plan, runner, now)
        if intact_until is not None:
            wake = max(0.5, (intact_until - now).total_seconds() + 0.5)
            delay = wake if delay is None else min(delay, wake)
        if out.skipped:
            delay = min(delay or WRITE_MEMORY_SECONDS, WRITE_MEMORY_SECONDS) + 0.5
        return delay

    # ------------------------------------------------------------------------------ failures, said in status

    async def report_bot_failure(self, key: BotKey, exc: BaseException, requeue: float) -> None:
        """A reconcile of a bot failed: ``Ready=False`` reason ReconcileFailed with what failed, and one
        Warning Event per distinct failure, instead of retrying in silence."""
        await self._report_failure(k.TRADINGBOTS, self.cache.bot(*key), "Ready", ConditionStatus.FALSE, exc,
                                   requeue)

    async def report_config_failure(self, key: BotKey, exc: BaseException, requeue: float) -> None:
        """A reconcile of a StrategyConfig failed: its verdict could not be recorded (``Valid=Unknown``)."""
        await self._report_failure(k.STRATEGYCONFIGS, self.cache.strategyconfig(*key), "Valid",
                                   ConditionStatus.UNKNOWN, exc, requeue)

    async def _report_failure(self, ref: k.ResourceRef, body: k.Manifest | None, type_: str,
                              state: ConditionStatus, exc: BaseException, requeue: float) -> None:
        if body is None:
            return
        meta = body.get("metadata") or {}
        key = (ref.kind, str(meta.get("namespace", "")), str(meta.get("name", "")))
        problem = failure_text(exc)
        message = (f"the operator could not reconcile generation {meta.get('generation', 0)}: {problem}; it tries "
                   f"again in {requeue:.0f} s")
        if self._failures_reported.get(key) == problem:
            return
        self._failures_reported[key] = problem
        conditions = [c for c in (_condition_or_none(raw) for raw in (body.get("status") or {}).get("conditions")
                                  or []) if c is not None]
        conditions = set_condition(conditions, type_, state, "ReconcileFailed", message,
                                   int(meta.get("generation", 0)), self.clock().replace(microsecond=0))
        patch = {"status": {"conditions": [c.to_wire() for c in conditions]}}
        logger.warning("%s %s/%s: %s", ref.kind, key[1], key[2], message)

        def write() -> None:
            try:
                self.kube.merge_patch(ref, key[1] or None, key[2], patch, subresource="status")
            finally:
                self.kube.post_event(body, "Warning", "ReconcileFailed", message)

        await asyncio.to_thread(write)

    def _forget_failure(self, kind: str, namespace: str, name: str) -> None:
        self._failures_reported.pop((kind, namespace, name), None)

    # ------------------------------------------------------------------------------ promotion gate

    async def reconcile_gate(self, key: BotKey) -> float | None:
        """Replay the bot's newest export and run the consensus when they are due; hand the round to the
        bot's reconcile. Writes nothing itself."""
        namespace, name = key
        body = self.cache.bot(namespace, name)
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            self.gate.forget(key)
            return None
        try:
            parsed = TradingBot.model_validate(body)
        except ValidationError:
            return None  # reconcile_bot says why
        ledger, lags = self._ledger(parsed.metadata.uid)
        if lags:
            return 0.5
        bot = self._with_round(key, self._with_override(ledger_.trusted(parsed, ledger), self.clock()))
        if key in self._rounds:
            # One round in flight per bot: a new one would replace the last before the status recorded
            # it, and a Halt in it (a trip) must never be lost. The bot's reconcile records it at once.
            return 0.5
        if not gate.wants_evidence(bot):
            return None
        valid = self._config_source(bot).valid
        if valid is None:
            return None
        evidence = self.cache.owned("ConfigMap", namespace, evidence_configmap_name(name))
        found = await self.gate.evaluate(key, bot, valid, evidence, self.clock)
        if found is not None:
            self._rounds[key] = found
            self.bots.trigger(key)
        return None

    # ------------------------------------------------------------------------------ GateOverride

    async def reconcile_gateoverride(self, key: BotKey) -> float | None:
        """The override's own status (``Active``, ``effectiveUntil``), and its bot re-checked when it starts
        and when it lapses."""
        namespace, name = key
        body = self.cache.gateoverride(namespace, name)
        if body is None:
            return None
        try:
            found = GateOverride.model_validate(body)
        except ValidationError as exc:
            await self._report_unparsed(k.GATEOVERRIDES, body, exc, CONDITION_ACTIVE, ConditionStatus.FALSE,
                                        "it is not honoured; delete it and create a valid one")
            return None
        now = self.clock()
        bot = found.spec.bot_name
        self.bots.trigger((namespace, bot))
        self.promotions.trigger((namespace, bot))
        created = gate.parse_created(found.metadata.creation_timestamp)
        problem = expiry_problem(found.spec.expires_at, created) if created else "it has no creationTimestamp"
        until: dt.datetime | None = None
        if problem:
            state, reason, message = False, ActiveReason.TOO_LONG, problem
        elif now >= found.spec.expires_at:
            state, reason, message = False, ActiveReason.EXPIRED, "spec.expiresAt has passed: the override lapsed"
        elif self.cache.bot(namespace, bot) is None:
            state, reason, message = False, ActiveReason.BOT_NOT_FOUND, \
                f"no TradingBot {bot} in namespace {namespace}: check spec.botName"
            until = found.spec.expires_at
        else:
            state, reason, message = True, ActiveReason.ACTIVE, \
                f"the replay gate of TradingBot {bot} is overridden until spec.expiresAt (the consensus still votes)"
            until = found.spec.expires_at
        conditions = set_condition(found.status.conditions, CONDITION_ACTIVE, state, reason.value, message,
                                   found.metadata.generation, now.replace(microsecond=0))
        status = found.status.model_copy(update={"conditions": conditions, "effective_until": until,
                                                 "observed_generation": found.metadata.generation})
        before, after = found.status.to_wire(), status.to_wire()
        out = Outcome(involved=body)
        if canonical_json(before) != canonical_json(after):
            patch = {"status": {**after, **{k: None for k in before if k not in after}}}
            self._plan_status(out, k.GATEOVERRIDES, body, patch, [])
        await self._execute(out)
        if state:
            wake = (found.spec.expires_at - now).total_seconds() + 0.5
            self.bots.trigger_after((namespace, bot), wake)
            return wake
        return WRITE_MEMORY_SECONDS + 0.5 if out.skipped else None

    # ------------------------------------------------------------------------------ StrategyConfig

    def _bots_referencing(self, namespace: str, name: str) -> list[str]:
        names = []
        for b in self.cache.bots():
            meta = b.get("metadata") or {}
            if meta.get("namespace") == namespace and not meta.get("deletionTimestamp") and \
                    (b.get("spec") or {}).get("strategyConfigRef") == name:
                names.append(str(meta["name"]))
        return sorted(names)

    async def reconcile_strategyconfig(self, key: BotKey) -> float | None:
        namespace, name = key
        users = self._bots_referencing(namespace, name)
        body = self.cache.strategyconfig(namespace, name)
        if body is None:
            # Gone: its bots must say so (ConfigValid=False) and keep their last ConfigMap.
            self._sc_fanout.pop(key, None)
            for bot in users:
                self.bots.trigger((namespace, bot))
            return None
        try:
            sc = StrategyConfig.model_validate(body)
        except ValidationError as exc:
            # Its bots keep the operator's last verdict (the ledger), so their runners keep the last valid spec.
            await self._report_unparsed(k.STRATEGYCONFIGS, body, exc, "Valid", ConditionStatus.FALSE,
                                        "bots keep the last valid config")
            return None
        if self._memory.lags(("status", "StrategyConfig", namespace, name), sc.metadata.resource_version):
            return 0.2  # our last status write has not reached the cache: comparing now would cry wolf
        held = self._config_ledger(sc.metadata.uid)
        trusted = self._trusted_config(sc)
        status = compute_strategyconfig_status(trusted, users, self.clock())
        out = Outcome(involved=body)
        events: list[EventSpec] = []
        if ledger_.config_tampered(sc.status, held):
            message = ("status fields validSpec, strategy or configHash were written by someone other than the "
                       "operator; bots run the spec the operator validated, and the status is restored")
            logger.warning("StrategyConfig %s/%s: StatusTampered: %s", namespace, name, message)
            self.metrics.count_integrity("StatusTampered")
            events.append(EventSpec("Warning", "StatusTampered", message))
        wanted = ledger_.next_config_ledger(held, sc.metadata.uid, namespace, name, status)
        if wanted != held and sc.metadata.uid:
            led_name = ledger_.ledger_name(ledger_.ConfigLedger, sc.metadata.uid)
            self._plan_apply(out, ledger_.ledger_configmap(wanted, self.ledger_namespace),
                             self.cache.owned("ConfigMap", self.ledger_namespace, led_name))
        patch = strategyconfig_status_patch(sc.status, status)
        self._plan_status(out, k.STRATEGYCONFIGS, body, patch,
                          [*strategyconfig_events(sc.status, status), *events] if patch else events)
        if events and not patch:
            out.events.extend(events)
        await self._execute(out)
        if wanted != held and sc.metadata.uid:
            self._config_ledgers[sc.metadata.uid] = wanted
        self._forget_failure("StrategyConfig", namespace, name)
        # Bots read the operator's verdict (the ledger). When it changed since the last fan-out, every
        # user re-reconciles.
        seen = _fingerprint({"valid": status.valid_spec, "conditions": [c.to_wire() for c in status.conditions
                                                                          if c.type == "Valid"],
                             "strategy": status.strategy.to_wire() if status.strategy else None})
        if self._sc_fanout.get(key) != seen:
            self._sc_fanout[key] = seen
            for bot in users:
                self.bots.trigger((namespace, bot))
        return WRITE_MEMORY_SECONDS + 0.5 if out.skipped else None

    # ------------------------------------------------------------------------------ KillSwitch

    def _fleet(self) -> list[FleetBot]:
        fleet: list[FleetBot] = []
        for b in self.cache.bots():
            meta = b.get("metadata") or {}
            if meta.get("deletionTimestamp"):
                continue
            namespace, name = str(meta.get("namespace", "")), str(meta["name"])
            grace = ((b.get("spec") or {}).get("runner") or {}).get("heartbeatGraceSeconds", 30)
            fleet.append(FleetBot(namespace, name, dict(meta.get("labels") or {}), int(grace),
                                  self._observe(namespace, name)))
        return fleet

    async def reconcile_killswitch(self, name: str) -> float | None:
        body = self.cache.killswitch(name)
        if body is None:
            self._ks_fanout.pop(name, None)
            self._trigger_all_bots()  # a deleted switch no longer brakes anyone
            return None
        try:
            ks = KillSwitch.model_validate(body)
        except ValidationError as exc:
            self._trigger_all_bots()
            await self._report_unparsed(k.KILLSWITCHES, body, exc, "Engaged", ConditionStatus.TRUE,
                                        "every runner and the operator read this switch as halt_all over every "
                                        "bot until it is fixed")
            return None
        if self._ks_fanout.get(name) != ks.metadata.generation:
            self._ks_fanout[name] = ks.metadata.generation
            self._trigger_all_bots()
        if not self.scope.sees_every_bot_of(ks.spec.selector.namespaces):
            # A switch can match bots this operator does not watch: its status (and its triggers) are
            # the business of an operator that sees them all. Two namespaced operators would otherwise
            # take turns writing two different truths into one status.
            return None
        uid = ks.metadata.uid
        led_name = ledger_.ledger_name(ledger_.SwitchLedger, uid)
        led_body = self.cache.owned("ConfigMap", self.ledger_namespace, led_name)
        if self._memory.lags(("ConfigMap", self.ledger_namespace, led_name),
                             (led_body or {}).get("metadata", {}).get("resourceVersion")):
            return 0.2
        held = self._read_ledger(ledger_.SwitchLedger, led_body, uid)
        # The trigger's memory comes from the ledger, never from the status (a mirror anyone with
        # killswitches/status may write).
        trusted = ks.model_copy(update={"status": ks.status.model_copy(update={
            "fleet_equity_peak": held.fleet_equity_peak if held else None,
            "matched_bots": list(held.matched_bots) if held else []})})
        now = self.clock()
        fleet = self._fleet()
        plan = compute_killswitch(trusted, fleet, now)
        out = Outcome(involved=body)
        wanted = ledger_.SwitchLedger(switch_uid=uid, name=name, fleet_equity_peak=plan.status.fleet_equity_peak,
                                      matched_bots=list(plan.status.matched_bots))
        if wanted != held and uid:
            self._plan_apply(out, ledger_.ledger_configmap(wanted, self.ledger_namespace), led_body)
        patch = killswitch_status_patch(ks.status, plan.status)
        self._plan_status(out, k.KILLSWITCHES, body, patch,
                          killswitch_events(ks.status, plan.status, ks.spec.mode) if patch else [])
        if plan.engage is not None:
            # The one spec the operator ever writes, and only to engage. It goes after the status write
            # that records triggeredBy: the watch delivers events in write order, so the reconcile the spec
            # change causes already sees triggeredBy in its cache and keeps it. The resourceVersion makes it
            # conditional: if a human changed the switch meanwhile, the patch fails with a conflict and
            # the next reconcile decides again on the newer spec.
            logger.warning("KillSwitch %s: trigger fired, engaging %s: %s", name, plan.engage.value,
                           plan.trigger_message)
            out.writes.append(Write("spec", ("spec", "KillSwitch", "", name), "", ref=k.KILLSWITCHES, name=name,
                                    manifest={"metadata": {"resourceVersion": ks.metadata.resource_version},
                                              "spec": {"mode": plan.engage.value}}))
            out.events.append(EventSpec("Warning", "KillSwitchTriggered",
                                        f"engaging {plan.engage.value}: {plan.trigger_message}"))
        await self._execute(out)
        return self._next_switch_check(ks, fleet, now, out.skipped)

    async def _report_unparsed(self, ref: k.ResourceRef, body: k.Manifest, exc: ValidationError, type_: str,
                               state: ConditionStatus, consequence: str) -> None:
        """An object the operator cannot parse (stored under a looser schema): its condition ``type_`` says
        which fields and what the operator does instead (reason SpecInvalid), with one Warning per
        generation. Never only a log line."""
        meta = body.get("metadata") or {}
        message = f"the spec does not parse ({list_problems(spec_problems(exc), 600)}): {consequence}"
        raw = body.get("status") or {}
        conditions = [c for c in (_condition_or_none(r) for r in raw.get("conditions") or []) if c is not None]
        conditions = set_condition(conditions, type_, state, "SpecInvalid", message, int(meta.get("generation", 0)),
                                   self.clock().replace(microsecond=0))
        status = {"conditions": [c.to_wire() for c in conditions], "observedGeneration": meta.get("generation", 0)}
        if canonical_json({key: raw.get(key) for key in status}) == canonical_json(status):
            return
        logger.error("%s %s: %s", ref.kind, "/".join(str(p) for p in (meta.get("namespace"), meta.get("name")) if p),
                     message)
        out = Outcome(involved=body)
        self._plan_status(out, ref, body, {"status": status}, [EventSpec("Warning", "SpecInvalid", message)])
        await self._execute(out)

    def _next_switch_check(self, ks: KillSwitch, fleet: Sequence[FleetBot], now: dt.datetime,
                           skipped: bool) -> float | None:
        """When a fresh heartbeat of a matched runner would go stale (the lost-runner trigger)."""
        delays: list[float] = [WRITE_MEMORY_SECONDS + 0.5] if skipped else []
        trigger = ks.spec.trigger
        if trigger is not None and trigger.max_runners_without_heartbeat is not None:
            for bot in matched_bots(ks, fleet):
                renew = bot.runner.renew_time
                if renew is not None and bot.runner.heartbeat_fresh(now, bot.heartbeat_grace_seconds):
                    delays.append((renew - now).total_seconds() + bot.heartbeat_grace_seconds + 0.5)
        return min(delays) if delays else None

    # ------------------------------------------------------------------------------ fleet RBAC

    async def reconcile_fleet(self, _key: str) -> float | None:
        bots = []
        for b in self.cache.bots():
            meta = b.get("metadata") or {}
            if not meta.get("deletionTimestamp"):
                bots.append((str(meta.get("namespace", "")), str(meta["name"])))
        live = self.cache.owned("ClusterRoleBinding", None, FLEET_RBAC_NAME) or {}
        # Subjects of namespaces outside this operator's scope belong to whoever watches them.
        foreign = [s for s in live.get("subjects") or [] if not self.scope.covers(str(s.get("namespace", "")))]
        out = Outcome(involved={})
        wanted = [build_fleet_cluster_role_binding(bots, foreign)]
        if self.defaults.manage_runner_cluster_role:
            wanted.insert(0, build_fleet_cluster_role())
        for desired in wanted:
            self._plan_apply(out, desired, self.cache.owned(desired["kind"], None, FLEET_RBAC_NAME))
        self._plan_ledger_cleanup(out)
        await self._execute(out)
        return WRITE_MEMORY_SECONDS + 0.5 if out.skipped else None

    def _plan_ledger_cleanup(self, out: Outcome) -> None:
        """Delete the ledgers of bots, StrategyConfigs and KillSwitches that are gone (a namespaced object
        cannot own one in another namespace, so no garbage collector does it)."""
        alive = {str((o.get("metadata") or {}).get("uid", "")) for o in
                 (*self.cache.bots(), *self.cache.strategyconfigs(), *self.cache.killswitches())}
        for body in self.cache.owned_all("ConfigMap", self.ledger_namespace):
            meta = body.get("metadata") or {}
            if (meta.get("labels") or {}).get(ledger_.LABEL_COMPONENT) != ledger_.COMPONENT_LEDGER:
                continue
            uid = str(meta.get("name", "")).partition("-")[2]
            if uid and uid not in alive:
                self._config_ledgers.pop(uid, None)
                out.writes.append(Write("delete", ("ConfigMap", self.ledger_namespace, str(meta["name"])), "",
                                        ref=k.CONFIGMAPS, namespace=self.ledger_namespace, name=str(meta["name"]),
                                        uid=meta.get("uid")))


LedgerT = TypeVar("LedgerT", bound=ledger_.Ledger)

#: Weaker first: a move to a lower rank is never held up.
MODE_RANK = {TradingMode.SIGNALS: 0, TradingMode.PAPER: 1, TradingMode.LIVE: 2}


def spec_problems(exc: ValidationError) -> list[str]:
    """Each refused field and its rule, never the value (api.conditions.describe_error)."""
    return [": ".join(p for p in describe_error(e) if p) for e in exc.errors()]


def failure_text(exc: BaseException) -> str:
    """What failed, for a status message: the API server's refusal as it said it, or the error's type."""
    if isinstance(exc, k.KubeError):
        return bound_message(str(exc), 600)
    return f"internal error {type(exc).__name__} (see the operator's log)"


def unreadable_switch(body: Mapping[str, Any]) -> KillSwitch:
    """How a KillSwitch that does not parse is read, by the operator as by the runners: halt_all, every bot."""
    meta = body.get("metadata") or {}
    return KillSwitch.model_validate({"metadata": {k_: meta[k_] for k_ in ("name", "uid", "generation",
                                                                           "resourceVersion") if k_ in meta},
                                      "spec": {"mode": "halt_all", "reason": "the switch's spec does not parse"}})


def _condition_or_none(raw: Any) -> Condition | None:
    try:
        return Condition.model_validate(raw)
    except ValidationError:
        return None


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in (obj.get("metadata") or {}).get("ownerReferences") or [])


# ---------------------------------------------------------------------------------------- registration


MANAGED = {LABEL_MANAGED_BY: MANAGED_BY}
#: Owned kinds: (kind, kopf resource selector args, namespaced).
OWNED_RESOURCES: tuple[tuple[str, tuple[str, str] | tuple[str, str, str], bool], ...] = (
    ("ConfigMap", ("v1", "configmaps"), True),
    ("ServiceAccount", ("v1", "serviceaccounts"), True),
    ("Role", ("rbac.authorization.k8s.io", "v1", "roles"), True),
    ("RoleBinding", ("rbac.authorization.k8s.io", "v1", "rolebindings"), True),
    ("StatefulSet", ("apps", "v1", "statefulsets"), True),
    ("ClusterRole", ("rbac.authorization.k8s.io", "v1", "clusterroles"), False),
    ("ClusterRoleBinding", ("rbac.authorization.k8s.io", "v1", "clusterrolebindings"), False),
)
LEASES: tuple[str, str, str] = ("coordination.k8s.io", "v1", "leases")
PODS: tuple[str, str] = ("v1", "pods")
#: Only the FailedCreate Events of StatefulSets (a server-side field selector): why a runner has no pod.
EVENTS: tuple[str, str] = ("v1", "events")
TRADINGBOTS: tuple[str, str, str] = ("tradewarden.io", "v1alpha1", "tradingbots")
STRATEGYCONFIGS: tuple[str, str, str] = ("tradewarden.io", "v1alpha1", "strategyconfigs")
KILLSWITCHES: tuple[str, str, str] = ("tradewarden.io", "v1alpha1", "killswitches")
GATEOVERRIDES: tuple[str, str, str] = ("tradewarden.io", "v1alpha1", "gateoverrides")


def register(registry: kopf.OperatorRegistry, settings: kopf.OperatorSettings, ctl: Controller) -> None:
    """Register every index and handler on ``registry`` and the server-side watch filters on ``settings``."""
    # Server-side label selectors: the operator never even receives ConfigMaps, Roles, ... that are
    # not its own, nor Leases of anything but runners.
    for _kind, selector, namespaced in OWNED_RESOURCES:
        if namespaced:
            settings.watching.label_selectors[selector] = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
        else:
            # The shared ClusterRole may come from the chart with the chart's labels: select it by name.
            settings.watching.field_selectors[selector] = f"metadata.name={FLEET_RBAC_NAME}"
    settings.watching.label_selectors[LEASES] = LABEL_BOT
    settings.watching.label_selectors[PODS] = LABEL_BOT
    settings.watching.field_selectors[EVENTS] = "involvedObject.kind=StatefulSet,reason=FailedCreate"

    @kopf.on.login(registry=registry)
    def login(**kw: Any) -> kopf.ConnectionInfo | None:
        # A registry of our own gets none of kopf's default login handlers: use the official client's
        # configuration (in-cluster ServiceAccount, else $KUBECONFIG), as the API client does.
        return kopf.login_via_client(**kw)

    @kopf.on.startup(registry=registry)
    async def attach_cache(**kw: Any) -> None:
        # Startup handlers receive the (still empty) indices too: keep them; kopf fills them in place.
        ctl.cache.attach(kw)

    # ------------------------------------------------------------------ indices (the watch cache)

    # kopf passes every handler a set of keyword arguments (body, name, namespace, labels, type, ...);
    # each handler takes them all as **kwargs and picks what it needs.

    @kopf.index(*TRADINGBOTS, id=IDX_BOTS, registry=registry)
    def index_bots(**kw: Any) -> dict[Any, Any]:
        return {(kw["namespace"], kw["name"]): slim(kw["body"])}

    @kopf.index(*STRATEGYCONFIGS, id=IDX_STRATEGYCONFIGS, registry=registry)
    def index_strategyconfigs(**kw: Any) -> dict[Any, Any]:
        return {(kw["namespace"], kw["name"]): slim(kw["body"])}

    @kopf.index(*KILLSWITCHES, id=IDX_KILLSWITCHES, registry=registry)
    def index_killswitches(**kw: Any) -> dict[Any, Any]:
        return {kw["name"]: slim(kw["body"])}

    # The runner pods (placement cluster), to check what their Leases say against them.
    @kopf.index(*PODS, id=IDX_PODS, labels={LABEL_BOT: kopf.PRESENT}, registry=registry)
    def index_pods(**kw: Any) -> dict[Any, Any]:
        return {(kw["namespace"], kw["name"]): slim_pod(kw["body"])}

    @kopf.on.event(*PODS, labels={LABEL_BOT: kopf.PRESENT}, registry=registry)
    async def pod_event(**kw: Any) -> None:
        ctl.mark_indexed()
        ctl.lease_event(kw["namespace"], kw["labels"][LABEL_BOT])

    # Why a runner StatefulSet has no pod (the API server refused it): the StatefulSet controller's Events.
    @kopf.index(*EVENTS, id=IDX_EVENTS, registry=registry)
    def index_events(**kw: Any) -> dict[Any, Any]:
        return {(kw["namespace"], str((kw["body"].get("involvedObject") or {}).get("name"))): slim_event(kw["body"])}

    @kopf.on.event(*EVENTS, registry=registry)
    async def statefulset_event(**kw: Any) -> None:
        ctl.mark_indexed()
        sts = ctl.cache.owned("StatefulSet", kw["namespace"], str((kw["body"].get("involvedObject") or {}).get("name")))
        bot = ((sts or {}).get("metadata", {}).get("labels") or {}).get(LABEL_BOT)
        if bot:
            ctl.bots.trigger((kw["namespace"], bot))

    @kopf.index(*GATEOVERRIDES, id=IDX_GATEOVERRIDES, registry=registry)
    def index_gateoverrides(**kw: Any) -> dict[Any, Any]:
        return {(kw["namespace"], kw["name"]): slim(kw["body"])}

    @kopf.index(*LEASES, id=IDX_LEASES, labels={LABEL_BOT: kopf.PRESENT}, registry=registry)
    def index_leases(**kw: Any) -> dict[Any, Any]:
        return {(kw["namespace"], kw["labels"][LABEL_BOT]): slim(kw["body"])}

    def index_owned(**kw: Any) -> dict[Any, Any]:
        body = slim(kw["body"])
        # A runner's export (binaryData of <bot>-evidence) can approach 1 MiB: the cache keeps the
        # ConfigMap without it, and the promotion gate fetches it when a replay may be due.
        body.pop("binaryData", None)
        return {(kw["namespace"] or "", kw["name"]): body}

    for kind, selector, namespaced in OWNED_RESOURCES:
        kopf.index(*selector, id=IDX_OWNED[kind], labels=MANAGED if namespaced else None,
                   registry=registry)(index_owned)

    # ------------------------------------------------------------------ handlers (triggers only)

    @kopf.on.event(*TRADINGBOTS, registry=registry)
    async def tradingbot_event(**kw: Any) -> None:
        ctl.mark_indexed()
        ctl.bot_event(kw["namespace"], kw["name"], kw.get("type"), kw["body"])

    @kopf.on.event(*STRATEGYCONFIGS, registry=registry)
    async def strategyconfig_event(**kw: Any) -> None:
        ctl.mark_indexed()
        ctl.configs.trigger((kw["namespace"], kw["name"]))

    @kopf.on.event(*KILLSWITCHES, registry=registry)
    async def killswitch_event(**kw: Any) -> None:
        ctl.mark_indexed()
        ctl.switches.trigger(kw["name"])

    @kopf.on.event(*GATEOVERRIDES, registry=registry)
    async def gateoverride_event(**kw: Any) -> None:
        ctl.mark_indexed()
        bot = str(((kw["body"].get("spec") or {}).get("botName")) or "")
        if bot:
            ctl.bots.trigger((kw["namespace"], bot))
            ctl.promotions.trigger((kw["namespace"], bot))
        ctl.overrides.trigger((kw["namespace"], kw["name"]))

    @kopf.on.event(*LEASES, labels={LABEL_BOT: kopf.PRESENT}, registry=registry)
    async def lease_event(**kw: Any) -> None:
        ctl.mark_indexed()
        ctl.lease_event(kw["namespace"], kw["labels"][LABEL_BOT])

    async def owned_event(**kw: Any) -> None:
        ctl.mark_indexed()
        namespace, name, labels = kw["namespace"], kw["name"], kw["labels"]
        if namespace is None:
            if name == FLEET_RBAC_NAME:
                ctl.fleet.trigger(FLEET_KEY)
        elif LABEL_BOT in labels:
            ctl.bots.trigger((namespace, labels[LABEL_BOT]))
            if kw["body"].get("kind") == "ConfigMap" and labels.get(LABEL_COMPONENT) == COMPONENT_EVIDENCE:
                ctl.evidence_event(namespace, labels[LABEL_BOT])

    for kind, selector, namespaced in OWNED_RESOURCES:
        kopf.on.event(*selector, id=f"owned_{kind.lower()}_event", labels=MANAGED if namespaced else None,
                      registry=registry)(owned_event)


