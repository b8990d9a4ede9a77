"""Desired state: everything the operator wants to exist for a bot, as plain manifests.

Pure functions, no I/O, no clock (``now`` is an argument). Called by the reconcilers in
:mod:`tradewarden.controller.handlers`, which compare the result with the watch cache and write only
what differs, and by the unit tests, which check these shapes table by table.

For one TradingBot the operator wants:

* the runtime ConfigMap ``<bot>-runtime`` (the runner's whole config, ``runtime.json``, and its hash);
* the evidence ConfigMap ``<bot>-evidence``, created empty: the runner writes its exported window into
  its ``binaryData`` and the operator replays it. The operator sends only metadata, so a server-side
  apply creates the object when it is missing and never touches the runner's export;
* the ServiceAccount ``<bot>-runner`` and a Role + RoleBinding granting it exactly: get+watch on its own
  runtime ConfigMap, get+update on its own evidence ConfigMap, get on its own credentials Secret (only
  when one is referenced), get+update on its own Lease, and nothing else;
* the Lease ``<bot>-runner`` (created once; afterwards it belongs to the runner, which renews it);
* for placement ``cluster``, a single-replica StatefulSet ``<bot>-runner`` whose pod passes PodSecurity
  ``restricted``.

Every namespaced object is owned by the bot (``controller: true``), so deleting the bot lets the
garbage collector remove them all without a finalizer. KillSwitches are cluster-scoped and
cluster-scoped objects cannot have namespaced owners, so the runners' read access to them is one shared
ClusterRole and one ClusterRoleBinding whose subjects are recomputed from the set of bots.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tradewarden.api.evidence import evidence_configmap_name
from tradewarden.api.killswitch import KillSwitch
from tradewarden.api.runtime import (
    CONFIGMAP_HASH_KEY,
    CONFIGMAP_RUNTIME_KEY,
    LABEL_BOT,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    RuntimeCapital,
    RuntimeConfig,
    RuntimeStrategy,
    canonical_json,
    compute_config_hash,
    lease_name,
    runner_account_name,
    runtime_configmap_name,
    sha256_hex,
)
from tradewarden.api.selectors import KillVerdict, effective_kill_mode
from tradewarden.api.strategyconfig import StrategyConfigSpec
from tradewarden.api.tradingbot import (
    KILL_STRENGTH,
    Placement,
    ResourceRequirements,
    TradingBot,
    TradingMode,
)
from tradewarden.controller.gate import ANN_RESET_TRIP, PromotionDecision, active_trip, evaluate_promotion
from tradewarden.controller.kube import Manifest
from tradewarden.controller.leases import RunnerObservation
from tradewarden.controller.ramp import Ramp, next_capital

#: Shared cluster-scoped RBAC giving every runner read access to the KillSwitches.
FLEET_RBAC_NAME = "tradewarden-runner-killswitches"

#: Label on every object of the runner workload, so selectors and dashboards find them.
LABEL_COMPONENT = "app.kubernetes.io/component"
#: Component label values of the two ConfigMaps of a bot.
COMPONENT_RUNTIME = "runtime-config"
COMPONENT_EVIDENCE = "evidence"
LABEL_NAME = "app.kubernetes.io/name"

#: Pod-template annotation: hash of the runner image and resources, the only inputs that roll the pod.
ANN_RUNNER_HASH = "tradewarden.io/runner-hash"
#: StatefulSet annotation: hash of the whole desired spec, compared instead of the defaulted live spec.
ANN_SPEC_HASH = "tradewarden.io/spec-hash"

RUNNER_UID = 10001
RUNNER_PORT = 9100
JOURNAL_PATH = "/var/lib/tradewarden"
DEFAULT_JOURNAL_SIZE = "1Gi"
#: Requests and limits when spec.runner.resources says nothing: a runner is one small Python process.
DEFAULT_RESOURCES: dict[str, dict[str, Any]] = {
    "requests": {"cpu": "50m", "memory": "128Mi"},
    "limits": {"memory": "512Mi"},
}


@dataclass(frozen=True)
class OperatorDefaults:
    """Operator-wide settings that shape the desired objects (from the command line)."""

    runner_image: str
    #: Create the shared ClusterRole when it is missing. Off when the chart installs it (Helm must own
    #: what it installs, or its next install refuses to adopt an object someone else re-created).
    manage_runner_cluster_role: bool = True
    #: The operator's verifying key as ``namespace/name``, handed to runner pods (``$TRADEWARDEN_GATE_KEY``).
    gate_key_ref: str = "tradewarden-system/tradewarden-gate-key"
    #: The reviewers the operator runs (built-in and --reviewers); votes of anyone else never count.
    #: None: no filter (unit tests of other parts).
    reviewer_names: frozenset[str] | None = None
    #: Runner images a bot may name in spec.runner.image, as prefixes (``--allowed-runner-image``); the
    #: repository of ``runner_image`` is always allowed. Anything else runs the default image.
    allowed_runner_images: tuple[str, ...] = ()
    #: Venue URLs (``spec.exchange.apiUrl``) a bot with credentials may use, as prefixes
    #: (``--allowed-api-url``). A bot's credentials are never handed to any other URL.
    allowed_api_urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class ValidConfig:
    """The last valid StrategyConfig spec (``status.validSpec``) and the strategy version it names."""

    name: str
    spec: StrategyConfigSpec
    version: str
    #: The strategy's risk level from the registry (low, medium, high): reviewers are told it.
    risk_level: str = ""


@dataclass(frozen=True)
class BotPlan:
    """The desired state of one bot, ready to compare with the cache and apply."""

    runtime: RuntimeConfig | None
    kill: KillVerdict
    promotion: PromotionDecision
    #: The live capital ramp after this reconcile (status.capital) and what changed.
    ramp: Ramp
    #: Namespaced objects to apply when they differ, in a safe order (the account before the pod).
    objects: tuple[Manifest, ...]
    #: The Lease, created when missing and never updated by the operator.
    lease: Manifest
    #: The StatefulSet must not exist (placement external).
    delete_statefulset: bool
    #: Spec fields the operator refused and worked around, each naming the field (:func:`admit`).
    refused: tuple[str, ...] = ()
    #: What the operator limited without refusing it (a manual lane capped), each naming the field.
    notes: tuple[str, ...] = ()

    @property
    def config_hash(self) -> str:
        return self.runtime.config_hash if self.runtime else ""


# ----------------------------------------------------------------------------------------- helpers


def bot_labels(bot: TradingBot) -> dict[str, str]:
    return {LABEL_BOT: bot.metadata.name, LABEL_MANAGED_BY: MANAGED_BY}


def owner_reference(bot: TradingBot) -> dict[str, Any]:
    """The bot as controlling owner: the garbage collector deletes the object with the bot."""
    return {
        "apiVersion": bot.api_version,
        "kind": bot.kind,
        "name": bot.metadata.name,
        "uid": bot.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(bot: TradingBot, name: str, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": bot.metadata.namespace,
        "labels": {**bot_labels(bot), **(extra_labels or {})},
        "ownerReferences": [owner_reference(bot)],
    }


def hash_of(value: Any) -> str:
    return sha256_hex(canonical_json(value))[:16]


# ----------------------------------------------------------------------------------------- runtime config


def runtime_strategy(valid: ValidConfig) -> RuntimeStrategy:
    """The strategy part of the runtime config: exactly what the operator validated."""
    spec = valid.spec
    return RuntimeStrategy(
        key=spec.strategy,
        version=valid.version,
        instruments=list(spec.instruments),
        timeframe=spec.timeframe,
        params=dict(spec.params),
        active_mode=spec.active_mode,
        auto_step_down=spec.auto_step_down,
        modes=spec.modes,
    )


def bot_config_hash(bot: TradingBot, valid: ValidConfig) -> str:
    """The config hash the bot runs with ``valid``: what replay evidence must be bound to."""
    return compute_config_hash(runtime_strategy(valid), bot.spec.risk, bot.spec.exchange)


def plan_ramp(bot: TradingBot, decision: PromotionDecision, now: dt.datetime) -> Ramp:
    """The live capital ramp after the gate's ``decision`` (see :mod:`tradewarden.controller.ramp`)."""
    return next_capital(bot.status.capital, decision.effective_mode == TradingMode.LIVE, bot.spec.capital,
                        bot.status.replay, bot.status.consensus, bot.spec.promotion.phase, now)


def build_runtime_config(
    bot: TradingBot,
    valid: ValidConfig,
    kill: KillVerdict,
    now: dt.datetime,
    decision: PromotionDecision | None = None,
    ramp: Ramp | None = None,
) -> tuple[RuntimeConfig, PromotionDecision]:
    """The runner's whole config, with the effective mode from the gate, the folded kill mode and the
    live capital of the current ramp step (``decision`` and ``ramp`` are computed when not given)."""
    strategy = runtime_strategy(valid)
    config_hash = compute_config_hash(strategy, bot.spec.risk, bot.spec.exchange)
    if decision is None:
        decision = evaluate_promotion(bot, config_hash, now)
    if ramp is None:
        ramp = plan_ramp(bot, decision, now)
    capital = bot.spec.capital
    live = decision.effective_mode == TradingMode.LIVE
    live_capital = ramp.capital.amount if live and ramp.capital is not None else 0.0
    replay, consensus = bot.status.replay, bot.status.consensus
    runtime = RuntimeConfig(
        namespace=bot.metadata.namespace or "",
        bot=bot.metadata.name,
        bot_uid=bot.metadata.uid,
        generation=bot.metadata.generation,
        config_hash=config_hash,
        requested_mode=bot.spec.mode,
        effective_mode=decision.effective_mode,
        # The runner re-derives the gate hash from these and refuses live orders on a mismatch.
        gate_hash=decision.gate_hash,
        gate_replay_hash=replay.result_hash if live and replay else "",
        gate_consensus_hash=consensus.evidence_hash if live and consensus else "",
        labels=dict(bot.metadata.labels),
        trip_reset=bot.metadata.annotations.get(ANN_RESET_TRIP, ""),
        kill_mode=kill.mode,
        kill_reason=kill.reason,
        strategy=strategy,
        exchange=bot.spec.exchange,
        risk=bot.spec.risk,
        capital=RuntimeCapital(quote_currency=capital.quote_currency, paper_balance=capital.paper_balance,
                               live_capital=live_capital),
        allowed_intent_sources=list(bot.spec.allowed_intent_sources),
        manual_lane=bot.spec.manual_lane,
        heartbeat_grace_seconds=bot.spec.runner.heartbeat_grace_seconds,
        # The window the runner exports is the window the replay judges.
        evidence_window_minutes=bot.spec.promotion.replay_window_minutes,
        evidence_lag_minutes=bot.spec.promotion.replay_lag_minutes,
    )
    return runtime, decision


def render_runtime_json(runtime: RuntimeConfig) -> str:
    """Stable text: sorted keys, so equal configs give byte-identical ConfigMaps (and no write)."""
    return json.dumps(runtime.to_wire(), sort_keys=True, indent=2, ensure_ascii=True) + "\n"


def build_evidence_configmap(bot: TradingBot) -> Manifest:
    """The (initially empty) ConfigMap the runner exports its window into.

    Only metadata: applied with server-side apply, the operator owns the labels and the owner reference
    and nothing else, so the runner's ``binaryData`` is never overwritten, and the object is created when
    it is missing.
    """
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(bot, evidence_configmap_name(bot.metadata.name), {LABEL_COMPONENT: COMPONENT_EVIDENCE}),
    }


def build_configmap(bot: TradingBot, runtime: RuntimeConfig) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(bot, runtime_configmap_name(bot.metadata.name), {LABEL_COMPONENT: COMPONENT_RUNTIME}),
        "data": {CONFIGMAP_RUNTIME_KEY: render_runtime_json(runtime), CONFIGMAP_HASH_KEY: runtime.config_hash},
    }


# ----------------------------------------------------------------------------------------- RBAC


def build_service_account(bot: TradingBot) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(bot, runner_account_name(bot.metadata.name), {LABEL_COMPONENT: "runner"}),
    }


def runner_rules(bot: TradingBot) -> list[dict[str, Any]]:
    """Exactly what one runner may do in its namespace. Every rule names its objects."""
    name = bot.metadata.name
    rules: list[dict[str, Any]] = [
        # get + watch (with a metadata.name field selector) is how the runner follows its config;
        # no list, so it cannot enumerate other ConfigMaps.
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [runtime_configmap_name(name)],
         "verbs": ["get", "watch"]},
        # get + update (a read-modify-write of binaryData) is how the runner exports its window; the
        # operator creates the ConfigMap, so the runner needs no create.
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [evidence_configmap_name(name)],
         "verbs": ["get", "update"]},
    ]
    secret = bot.spec.exchange.credentials_secret_ref
    if secret is not None:
        rules.append({"apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret.name],
                      "verbs": ["get"]})
    rules.append({"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                  "resourceNames": [lease_name(name)], "verbs": ["get", "update"]})
    return rules


def build_role(bot: TradingBot) -> Manifest:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(bot, runner_account_name(bot.metadata.name), {LABEL_COMPONENT: "runner"}),
        "rules": runner_rules(bot),
    }


def build_role_binding(bot: TradingBot) -> Manifest:
    account = runner_account_name(bot.metadata.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(bot, account, {LABEL_COMPONENT: "runner"}),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
        # apiGroup is left out: the API server stores "" for ServiceAccount subjects as absent, and the
        # comparison with the cache must see what we send.
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": bot.metadata.namespace}],
    }


def build_fleet_cluster_role() -> Manifest:
    """Read access to KillSwitches for every runner (they watch them directly, invariant 3).

    The chart renders the same ClusterRole (with its own labels). The operator only wants the rules,
    so it carries no labels here: the comparison then finds nothing to change in the chart's copy and
    the operator and Helm (or Argo CD) never take turns rewriting it. Without the chart, the operator
    creates it.
    """
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": FLEET_RBAC_NAME},
        "rules": [{"apiGroups": ["tradewarden.io"], "resources": ["killswitches"],
                   "verbs": ["get", "list", "watch"]}],
    }


def build_fleet_cluster_role_binding(bots: Iterable[tuple[str, str]],
                                     keep: Iterable[dict[str, Any]] = ()) -> Manifest:
    """One binding for all runners; subjects follow the set of existing bots (level-triggered).

    ``bots`` are (namespace, name) pairs of the bots that exist and are not being deleted. ``keep`` are
    subjects in namespaces this operator does not watch (another operator's, when operators are
    scoped to namespaces): they are carried over untouched. With no subject at all the list is left out
    entirely: the API server stores an empty list as absent.
    """
    ours = {(namespace, runner_account_name(name)) for namespace, name in bots}
    ours |= {(str(s.get("namespace", "")), str(s.get("name", ""))) for s in keep
             if s.get("kind") == "ServiceAccount"}
    subjects = [{"kind": "ServiceAccount", "name": name, "namespace": namespace}
                for namespace, name in sorted(ours)]
    out: Manifest = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": FLEET_RBAC_NAME, "labels": {LABEL_MANAGED_BY: MANAGED_BY}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": FLEET_RBAC_NAME},
    }
    if subjects:
        out["subjects"] = subjects
    return out


# ----------------------------------------------------------------------------------------- Lease


def build_lease(bot: TradingBot) -> Manifest:
    """The runner's Lease, as first created. The runner owns renewTime and the annotations."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": _meta(bot, lease_name(bot.metadata.name), {LABEL_COMPONENT: "runner"}),
        "spec": {"leaseDurationSeconds": bot.spec.runner.heartbeat_grace_seconds},
    }


# ----------------------------------------------------------------------------------------- workload


def runner_resources(resources: ResourceRequirements | None) -> dict[str, Any]:
    if resources is None or (not resources.requests and not resources.limits):
        return {k: dict(v) for k, v in DEFAULT_RESOURCES.items()}
    out: dict[str, Any] = {}
    if resources.requests:
        out["requests"] = {k: str(v) for k, v in sorted(resources.requests.items())}
    if resources.limits:
        out["limits"] = {k: str(v) for k, v in sorted(resources.limits.items())}
    return out


def runner_image(bot: TradingBot, defaults: OperatorDefaults) -> str:
    return bot.spec.runner.image or defaults.runner_image


def _repository(image: str) -> str:
    """``registry/path/name`` of an image reference, without its tag or digest."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


#: The manual lane closes at most this long after its enabledUntil was set, however far ahead it says.
MAX_MANUAL_LANE = dt.timedelta(hours=24)


def cap_manual_lane(bot: TradingBot, since: dt.datetime) -> tuple[TradingBot, str]:
    """``bot`` with ``spec.manualLane.enabledUntil`` at most :data:`MAX_MANUAL_LANE` after ``since`` (when
    the operator first saw that value), and what was capped ("" when nothing was)."""
    until = bot.spec.manual_lane.enabled_until
    cap = since.replace(microsecond=0) + MAX_MANUAL_LANE
    if until is None or until <= cap:
        return bot, ""
    lane = bot.spec.manual_lane.model_copy(update={"enabled_until": cap})
    stamp = cap.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return (bot.model_copy(update={"spec": bot.spec.model_copy(update={"manual_lane": lane})}),
            f"spec.manualLane.enabledUntil is more than {int(MAX_MANUAL_LANE.total_seconds() // 3600)} hours after "
            f"it was set: the manual lane closes at {stamp}")


def admit(bot: TradingBot, defaults: OperatorDefaults) -> tuple[TradingBot, tuple[str, ...]]:
    """``bot`` as the operator will run it, and what of its spec it refused (each names the field).

    Two fields would let whoever may edit a bot reach the exchange keys, so the operator decides them:
    ``spec.runner.image`` (any image would run the bot author's code with the runner's ServiceAccount,
    which reads the credentials Secret) must be the operator's runner repository or an allowed prefix,
    else the default image runs; ``spec.exchange.apiUrl`` with credentials (the runner sends the API key
    to that URL) must match an allowed prefix, else the credentials are not handed to the runner. A bot
    with anything refused stays out of live (:func:`build_bot_plan`).
    """
    refused: list[str] = []
    spec = bot.spec
    image = spec.runner.image
    allowed_images = (f"{_repository(defaults.runner_image)}:", f"{_repository(defaults.runner_image)}@",
                      *defaults.allowed_runner_images)
    if image and not any(image.startswith(p) for p in allowed_images):
        refused.append("spec.runner.image: not an allowed runner image (the operator's runner repository or a "
                       "prefix given with --allowed-runner-image); the default runner image runs instead")
        spec = spec.model_copy(update={"runner": spec.runner.model_copy(update={"image": None})})
    exchange = spec.exchange
    if exchange.api_url and exchange.credentials_secret_ref is not None and \
            not any(exchange.api_url.startswith(p) for p in defaults.allowed_api_urls):
        refused.append("spec.exchange.apiUrl: credentials are handed only to venue URLs the operator allows "
                       "(--allowed-api-url); the runner gets no credentials and the bot stays out of live")
        spec = spec.model_copy(update={"exchange": exchange.model_copy(update={"credentials_secret_ref": None})})
    if not refused:
        return bot, ()
    return bot.model_copy(update={"spec": spec}), tuple(refused)


def runner_pod_hash(image: str, resources: dict[str, Any]) -> str:
    """Hash of the only inputs that may roll the runner pod: its image and its resources."""
    return hash_of({"image": image, "resources": resources})


def build_statefulset(bot: TradingBot, defaults: OperatorDefaults) -> Manifest:
    """A single-replica StatefulSet: one runner per bot, with a journal volume that outlives restarts.

    The pod template depends only on the bot's identity, the image and the resources: strategy, risk
    and mode reach the runner through the ConfigMap it watches, so editing them never restarts it.
    """
    name = bot.metadata.name
    namespace = bot.metadata.namespace or ""
    workload = runner_account_name(name)
    image = runner_image(bot, defaults)
    resources = runner_resources(bot.spec.runner.resources)
    selector = {LABEL_BOT: name, LABEL_NAME: "tradewarden-runner"}
    probe = {"httpGet": {"path": "/healthz", "port": RUNNER_PORT}, "periodSeconds": 10,
             "timeoutSeconds": 2, "failureThreshold": 3}
    # Liveness starts only once the runner has come up: many runners starting at once on a busy node
    # take longer than three liveness periods to import and serve /healthz, and were killed for it (seen
    # with 60 pods on a 2-core node). Up to 3 minutes to start, then the liveness probe above.
    startup = {"httpGet": {"path": "/healthz", "port": RUNNER_PORT}, "periodSeconds": 3,
               "timeoutSeconds": 2, "failureThreshold": 60}
    container = {
        "name": "runner",
        "image": image,
        "command": ["tradewarden", "runner", "--bot", f"{namespace}/{name}", "--journal", JOURNAL_PATH,
                    "--gate-key", defaults.gate_key_ref],
        # Who renews the Lease: the operator compares it with the pod it observes.
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}}],
        "ports": [{"name": "metrics", "containerPort": RUNNER_PORT, "protocol": "TCP"}],
        "resources": resources,
        "startupProbe": startup,
        "livenessProbe": probe,
        "readinessProbe": probe,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": RUNNER_UID,
            "runAsGroup": RUNNER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "journal", "mountPath": JOURNAL_PATH},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir, the only writable scratch
        ],
    }
    template = {
        "metadata": {
            "labels": {**selector, LABEL_MANAGED_BY: MANAGED_BY, LABEL_COMPONENT: "runner"},
            "annotations": {ANN_RUNNER_HASH: runner_pod_hash(image, resources)},
        },
        "spec": {
            "serviceAccountName": workload,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUNNER_UID,
                "runAsGroup": RUNNER_UID,
                "fsGroup": RUNNER_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            # A runner asked to stop cancels its resting entries and flushes its journal within
            # $TRADEWARDEN_SHUTDOWN_SECONDS (20 s by default): 30 s leaves it room.
            "terminationGracePeriodSeconds": 30,
            "containers": [container],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
        },
    }
    journal_size = str(bot.spec.runner.journal_size or DEFAULT_JOURNAL_SIZE)
    spec: dict[str, Any] = {
        "replicas": 1,
        "selector": {"matchLabels": selector},
        "template": template,
        "volumeClaimTemplates": [{
            "metadata": {"name": "journal", "labels": {LABEL_BOT: name}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": journal_size}}},
        }],
        # The journal dies with the bot, not with a restart or a rescheduling.
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"},
    }
    meta = _meta(bot, workload, {LABEL_COMPONENT: "runner"})
    meta["annotations"] = {ANN_SPEC_HASH: hash_of(spec)}
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta, "spec": spec}


def keep_immutable_fields(desired: Manifest, live: Manifest | None) -> Manifest:
    """The StatefulSet to apply over ``live``: the API server refuses any change to
    ``volumeClaimTemplates``, so an existing StatefulSet keeps its journal claim as it was created (a new
    journal size takes effect when the StatefulSet is recreated, e.g. by switching placement)."""
    if live is None:
        return desired
    live_claims = (live.get("spec") or {}).get("volumeClaimTemplates")
    if not live_claims:
        return desired
    claims = []
    for want in desired["spec"]["volumeClaimTemplates"]:
        have = next((c for c in live_claims if (c.get("metadata") or {}).get("name") == want["metadata"]["name"]),
                    None)
        size = (((have or {}).get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage")
        if size is None:
            claims.append(want)
            continue
        claims.append({**want, "spec": {**want["spec"], "resources": {"requests": {"storage": size}}}})
    return {**desired, "spec": {**desired["spec"], "volumeClaimTemplates": claims}}


# ----------------------------------------------------------------------------------------- the plan


def fold_trip(kill: KillVerdict, bot: TradingBot) -> KillVerdict:
    """``kill`` with the consensus trip in force folded in (the strongest mode wins, as everywhere)."""
    trip = active_trip(bot)
    if trip is None:
        return kill
    sources = (*kill.sources, "consensus")
    if KILL_STRENGTH[trip.mode] > KILL_STRENGTH[kill.mode]:
        return KillVerdict(mode=trip.mode, reason=trip.reason, sources=sources)
    return KillVerdict(mode=kill.mode, reason=kill.reason, sources=sources)


def build_bot_plan(
    bot: TradingBot,
    valid: ValidConfig | None,
    switches: Sequence[KillSwitch],
    runner: RunnerObservation,
    defaults: OperatorDefaults,
    now: dt.datetime,
    lane_since: dt.datetime | None = None,
) -> BotPlan:
    """Everything desired for ``bot``. Without a valid config there is no ConfigMap to write: the one
    already there (the last good config) stays, as invariant 4 asks. Fields the operator refuses
    (:func:`admit`) are named in ``refused``, and such a bot is never live; ``lane_since`` is when the
    manual lane's ``enabledUntil`` was first seen (:func:`cap_manual_lane`)."""
    bot, refused = admit(bot, defaults)
    bot, capped = cap_manual_lane(bot, lane_since or now)
    kill = effective_kill_mode(switches, bot.metadata.namespace or "", bot.metadata.labels,
                               bot_trip=runner.bot_trip, bot_trip_reason=runner.bot_trip_reason)
    kill = fold_trip(kill, bot)
    objects: list[Manifest] = [build_service_account(bot), build_role(bot), build_role_binding(bot),
                               build_evidence_configmap(bot)]
    runtime: RuntimeConfig | None = None
    if valid is not None:
        decision = evaluate_promotion(bot, bot_config_hash(bot, valid), now, defaults.reviewer_names)
        if refused and decision.effective_mode == TradingMode.LIVE:
            decision = dataclasses.replace(decision, effective_mode=TradingMode.PAPER, promoted=False,
                                           reason="FieldRefused", gate_hash="",
                                           message=f"running paper: {refused[0]}")
        ramp = plan_ramp(bot, decision, now)
        runtime, _ = build_runtime_config(bot, valid, kill, now, decision, ramp)
        objects.append(build_configmap(bot, runtime))
    else:
        decision = evaluate_promotion(bot, "", now, defaults.reviewer_names)
        ramp = plan_ramp(bot, decision, now)
    cluster = bot.spec.placement == Placement.CLUSTER
    if cluster:
        objects.append(build_statefulset(bot, defaults))
    return BotPlan(runtime=runtime, kill=kill, promotion=decision, ramp=ramp, objects=tuple(objects),
                   lease=build_lease(bot), delete_statefulset=not cluster, refused=refused,
                   notes=(capped,) if capped else ())
