"""The runner's side of the Kubernetes API: watch its runtime ConfigMap and the KillSwitches, renew its Lease.

Three daemon threads, started by ``runner.main``:

* ``ConfigWatcher``: get, then watch, the ``<bot>-runtime`` ConfigMap; every valid new config is handed
  to the main loop, which applies it between ticks; an invalid one is refused, counted and reported in
  the Lease, and the last good config stays.
* ``KillSwitchWatcher``: list, then watch, every KillSwitch; on each event the runner folds the matching
  switches itself (``api.selectors``) and tells the engine at once, then acknowledges through the Lease,
  so a switch works while the operator is down (invariant 3).
* ``Heartbeat``: renews the Lease ``<bot>-runner`` on a period and immediately when asked (an ack); when
  the API server has not answered for longer than the grace period, the engine stops new entries. Each
  renewal has a deadline (:func:`renewal_timeout`): an API server that goes silent (a dropped route, a
  stalled process) must end in a failed renewal, not in a request that waits for ever while entries go on.

The runner only reads what its Role allows: get/watch its own ConfigMap, list/watch KillSwitches,
get/update its own Lease (and get its own credentials Secret, in ``main``).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError
from urllib3.exceptions import HTTPError

from tradewarden.api.base import GROUP, VERSION
from tradewarden.api.evidence import EVIDENCE_KEY
from tradewarden.api.killswitch import KillSwitch
from tradewarden.api.runtime import (
    ANN_APPLIED_HASH,
    ANN_KILL_ACKS,
    ANN_KILL_MODE,
    ANN_LIVE_REFUSED,
    ANN_REJECTED,
    ANN_RUNNER_IDENTITY,
    ANN_TELEMETRY,
    CONFIGMAP_RUNTIME_KEY,
    GateKey,
    KillAck,
    RunnerIdentity,
    RuntimeConfig,
    Telemetry,
)
from tradewarden.api.selectors import effective_kill_mode
from tradewarden.api.tradingbot import KillMode

log = logging.getLogger("tradewarden.runner.kube")

#: How long one watch request stays open before it is renewed (the API server caps it anyway).
WATCH_SECONDS = 240
TRANSIENT = (ApiException, HTTPError, OSError)
#: This process: its pod (from the downward API, in a StatefulSet pod) and when it started.
PROCESS_IDENTITY = RunnerIdentity(pod=os.environ.get("POD_NAME", ""), pod_uid=os.environ.get("POD_UID", ""),
                                  started_at=dt.datetime.now(dt.UTC).replace(microsecond=0))


class Contact:
    """When the API server last answered anything; the Heartbeat judges reachability from it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last = clock()
        self._lock = threading.Lock()

    def ok(self) -> None:
        with self._lock:
            self.last = self.clock()

    def silent_for(self) -> float:
        with self._lock:
            return self.clock() - self.last


def parse_runtime(data: dict[str, str] | None, namespace: str, bot: str) -> RuntimeConfig:
    """Validate a runtime ConfigMap's data; raise ValueError naming what is wrong."""
    if not data or CONFIGMAP_RUNTIME_KEY not in data:
        raise ValueError(f"data.{CONFIGMAP_RUNTIME_KEY}: missing")
    try:
        cfg = RuntimeConfig.model_validate_json(data[CONFIGMAP_RUNTIME_KEY])
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"data.{CONFIGMAP_RUNTIME_KEY}: {where}: {first['msg']}") from None
    if (cfg.namespace, cfg.bot) != (namespace, bot):
        raise ValueError(f"data.{CONFIGMAP_RUNTIME_KEY}: written for {cfg.namespace}/{cfg.bot}, not {namespace}/{bot}")
    cfg.verify()
    return cfg


class ConfigWatcher(threading.Thread):
    def __init__(self, api: client.ApiClient, namespace: str, name: str, bot: str,
                 on_config: Callable[[RuntimeConfig], None], on_reject: Callable[[str], None],
                 contact: Contact, stop: threading.Event) -> None:
        super().__init__(name="config-watch", daemon=True)
        self.core = client.CoreV1Api(api)
        self.namespace, self.name, self.bot = namespace, name, bot
        self.on_config, self.on_reject = on_config, on_reject
        self.contact, self.stop_event = contact, stop
        self.ready = threading.Event()

    def _handle(self, data: dict[str, str] | None) -> None:
        try:
            cfg = parse_runtime(data, self.namespace, self.bot)
        except ValueError as exc:
            log.error("refused runtime config, keeping the last good one: %s", exc)
            self.on_reject(str(exc))
            return
        # Handed over even when the trading content (config hash) is unchanged: mode, kill state or the
        # manual lane may have changed.
        self.on_config(cfg)
        self.ready.set()

    def run(self) -> None:
        backoff = 0.5
        while not self.stop_event.is_set():
            try:
                cm = self.core.read_namespaced_config_map(self.name, self.namespace)
                self.contact.ok()
                self._handle(cm.data)
                rv = cm.metadata.resource_version if cm.metadata else None
                w = watch.Watch()
                for event in w.stream(self.core.list_namespaced_config_map, self.namespace,
                                      field_selector=f"metadata.name={self.name}", resource_version=rv,
                                      timeout_seconds=WATCH_SECONDS, allow_watch_bookmarks=True):
                    self.contact.ok()
                    if self.stop_event.is_set():
                        w.stop()
                        break
                    kind = event["type"]
                    if kind in ("ADDED", "MODIFIED"):
                        self._handle(event["object"].data)
                    elif kind == "DELETED":
                        log.warning("runtime ConfigMap deleted; keeping the last good config")
                backoff = 0.5
            except TRANSIENT as exc:
                if isinstance(exc, ApiException) and exc.status == 404:
                    log.warning("runtime ConfigMap %s/%s not found yet", self.namespace, self.name)
                    self.contact.ok()
                else:
                    log.warning("config watch interrupted: %s", _short(exc))
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 5.0)


class KillSwitchWatcher(threading.Thread):
    def __init__(self, api: client.ApiClient, namespace: str, labels: Callable[[], dict[str, str]],
                 on_mode: Callable[[KillMode, str, dict[str, KillAck]], None], contact: Contact,
                 stop: threading.Event) -> None:
        super().__init__(name="killswitch-watch", daemon=True)
        self.custom = client.CustomObjectsApi(api)
        self.namespace, self.labels, self.on_mode = namespace, labels, on_mode
        self.contact, self.stop_event = contact, stop
        self.switches: dict[str, KillSwitch] = {}
        self.ready = threading.Event()

    def evaluate(self) -> None:
        """Fold the switches that match this bot and acknowledge each of them at its generation."""
        labels = self.labels()
        verdict = effective_kill_mode(self.switches.values(), self.namespace, labels)
        now = dt.datetime.now(dt.UTC)
        acks = {}
        for name, ks in self.switches.items():
            if f"killswitch/{name}" in verdict.sources or ks.spec.mode == KillMode.OFF:
                acks[name] = KillAck(resource_version=ks.metadata.resource_version,
                                     generation=ks.metadata.generation, mode=ks.spec.mode, at=now)
        self.on_mode(verdict.mode, verdict.reason, acks)

    def _store(self, obj: dict[str, Any]) -> None:
        try:
            ks = KillSwitch.model_validate(obj)
        except ValidationError as exc:
            # A switch the runner cannot read is treated as the strongest safe reading: halt.
            name = obj.get("metadata", {}).get("name", "?")
            log.error("KillSwitch %s unreadable (%s); treating it as halt_all", name, exc.errors()[0]["msg"])
            ks = KillSwitch.model_validate({"metadata": obj.get("metadata", {}), "spec": {"mode": "halt_all"}})
        self.switches[ks.metadata.name] = ks

    def run(self) -> None:
        backoff = 0.5
        while not self.stop_event.is_set():
            try:
                listing: dict[str, Any] = self.custom.list_cluster_custom_object(  # type: ignore[assignment]
                    GROUP, VERSION, "killswitches")
                self.contact.ok()
                self.switches = {}
                for item in listing.get("items", []):
                    self._store(item)
                self.evaluate()
                self.ready.set()
                rv = listing["metadata"]["resourceVersion"]
                w = watch.Watch()
                for event in w.stream(self.custom.list_cluster_custom_object, GROUP, VERSION, "killswitches",
                                      resource_version=rv, timeout_seconds=WATCH_SECONDS):
                    self.contact.ok()
                    if self.stop_event.is_set():
                        w.stop()
                        break
                    obj = event["object"]
                    if event["type"] == "DELETED":
                        self.switches.pop(obj["metadata"]["name"], None)
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        self._store(obj)
                    else:
                        continue
                    self.evaluate()
                backoff = 0.5
            except TRANSIENT as exc:
                log.warning("kill switch watch interrupted: %s", _short(exc))
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 5.0)


def renewal_timeout(grace: float) -> float:
    """Seconds one Lease request may take: half the grace period (so a silent API server is noticed
    within about one and a half grace periods), at least 1 s and at most 10 s."""
    return max(1.0, min(grace / 2, 10.0))


class Heartbeat(threading.Thread):
    """Renews the Lease with the runner's report, on a period and on demand."""

    def __init__(self, api: client.ApiClient, namespace: str, lease: str, identity: str,
                 report: Callable[[], dict[str, str]], contact: Contact, grace: Callable[[], float],
                 on_reachability: Callable[[bool, float], None], stop: threading.Event,
                 period: float = 5.0) -> None:
        super().__init__(name="heartbeat", daemon=True)
        # A client of its own without urllib3's retries (three by default): each retry would wait the
        # whole deadline again, and a silent API server would hold one renewal four deadlines long.
        config = copy.copy(api.configuration)
        config.retries = False
        self.coord = client.CoordinationV1Api(client.ApiClient(config))
        self.namespace, self.lease, self.identity = namespace, lease, identity
        self.report, self.contact, self.grace = report, contact, grace
        self.on_reachability, self.stop_event, self.period = on_reachability, stop, period
        self._wake = threading.Event()
        self._lease_lock = threading.Lock()
        self._lease: Any = None
        self.renewals = 0
        self.last_renewed: dt.datetime | None = None

    def renew_now(self) -> None:
        self._wake.set()

    def renew(self) -> bool:
        """Write the report into the Lease with an update (the Role grants get and update, not patch).

        The last written object is kept, so a renewal is one round trip; a conflict (someone else wrote
        the Lease) costs one fresh read.
        """
        now = dt.datetime.now(dt.UTC)
        annotations = self.report()
        timeout = renewal_timeout(self.grace())
        with self._lease_lock:
            for attempt in range(2):
                try:
                    if self._lease is None or attempt > 0:
                        self._lease = self.coord.read_namespaced_lease(self.lease, self.namespace,
                                                                       _request_timeout=timeout)
                    lease = self._lease
                    lease.metadata.annotations = {**(lease.metadata.annotations or {}), **annotations}
                    lease.spec.holder_identity = self.identity
                    lease.spec.renew_time = now
                    lease.spec.lease_duration_seconds = int(self.grace())
                    self._lease = self.coord.replace_namespaced_lease(self.lease, self.namespace, lease,
                                                                      _request_timeout=timeout)
                    break
                except ApiException as exc:
                    self._lease = None
                    if exc.status == 409 and attempt == 0:
                        continue
                    log.warning("lease renewal failed: %s", _short(exc))
                    return False
                except (HTTPError, OSError) as exc:
                    self._lease = None
                    log.warning("lease renewal failed: %s", _short(exc))
                    return False
        self.contact.ok()
        self.renewals += 1
        self.last_renewed = now
        return True

    def run(self) -> None:
        while not self.stop_event.is_set():
            self._wake.clear()
            self.renew()
            silent = self.contact.silent_for()
            self.on_reachability(silent > self.grace(), silent)
            self._wake.wait(self.period)


def report_annotations(applied_hash: str, kill_mode: KillMode, acks: dict[str, KillAck], telemetry: Telemetry,
                       rejected: str, live_refused: str = "", identity: RunnerIdentity | None = None) -> dict[str, str]:
    """The Lease annotations of the runner contract (api.runtime)."""
    return {
        ANN_APPLIED_HASH: applied_hash,
        ANN_KILL_MODE: kill_mode.value,
        ANN_KILL_ACKS: json.dumps({k: v.to_wire() for k, v in sorted(acks.items())}, sort_keys=True),
        ANN_TELEMETRY: json.dumps(telemetry.to_wire(), sort_keys=True),
        ANN_REJECTED: rejected,
        ANN_LIVE_REFUSED: live_refused,
        ANN_RUNNER_IDENTITY: json.dumps((identity or PROCESS_IDENTITY).to_wire(), sort_keys=True),
    }


class GateKeySource:
    """The operator's verifying key, read through the API server from ``namespace/name``.

    The key must live outside the runner's own namespace: whoever may write ConfigMaps there could
    otherwise publish a key of their own. Read at start and again (at most every 10 s) while it could not
    be read; without it, live permissions are refused and the runner trades on paper.
    """

    def __init__(self, api: client.ApiClient, ref: str, own_namespace: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.core = client.CoreV1Api(api)
        self.namespace, _, self.name = ref.partition("/")
        self.own_namespace = own_namespace
        self.clock = clock
        self._key: GateKey | None = None
        self._tried = -1e9
        self.problem = ""

    def get(self, refresh: bool = False) -> GateKey | None:
        """The key; with ``refresh`` (a signed document did not verify: the operator may have a new key),
        read again, at most every 10 s."""
        if (self._key is not None and not refresh) or self.clock() - self._tried < 10.0:
            return self._key
        self._tried = self.clock()
        if not self.namespace or not self.name:
            self.problem = f"--gate-key: expected NAMESPACE/NAME (got {self.namespace}/{self.name})"
        elif self.namespace == self.own_namespace:
            self.problem = (f"--gate-key: the key must live in the operator's namespace, not in the bot's own "
                            f"namespace {self.own_namespace}")
        else:
            try:
                cm = self.core.read_namespaced_config_map(self.name, self.namespace)
                self._key = GateKey.from_data(cm.data)
                self.problem = ""
                log.info("operator gate key %s read from %s/%s", self._key.key_id, self.namespace, self.name)
            except ValueError as exc:
                self.problem = f"ConfigMap {self.namespace}/{self.name}: {exc}"
            except TRANSIENT as exc:
                self.problem = f"ConfigMap {self.namespace}/{self.name} not readable: {_short(exc)}"
        if self.problem:
            log.error("no operator gate key, live permissions are refused: %s", self.problem)
        return self._key


def _short(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def upload_evidence(api: client.ApiClient, namespace: str, name: str, encoded: str) -> bool:
    """Write the encoded export into the evidence ConfigMap the operator created (get + update only)."""
    core = client.CoreV1Api(api)
    try:
        cm = core.read_namespaced_config_map(name, namespace)
        if (cm.binary_data or {}).get(EVIDENCE_KEY) == encoded:
            return True
        cm.binary_data = {**(cm.binary_data or {}), EVIDENCE_KEY: encoded}
        core.replace_namespaced_config_map(name, namespace, cm)
    except TRANSIENT as exc:
        log.warning("evidence export not written to %s: %s", name, _short(exc))
        return False
    return True
