"""The operator as a real subprocess, for integration tests and benchmarks.

``OperatorProcess`` starts ``.venv/bin/tradewarden operator`` with the cluster's kubeconfig, waits for
its ``/healthz``, captures its log to a file (printed when a test fails) and stops it (SIGTERM, or
SIGKILL to simulate a crash). It watches only the namespaces matching its own prefix, so it never
touches the objects of other tests (the runner tests, for one, play the operator's part themselves).

Also here: a test plays the runner's part through the real API server (``renew_lease``), and counts the
operator's writes in the API server's audit log (``audit_writes``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import pathlib
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from support.kube import REPO, Cluster, poll
from tradewarden.api.runtime import (
    ANN_APPLIED_HASH,
    ANN_KILL_ACKS,
    ANN_RUNNER_IDENTITY,
    ANN_TELEMETRY,
    GATE_KEY_CONFIGMAP,
    RunnerIdentity,
)
from tradewarden.controller.kube import LEASES, USER_AGENT, Kube

TRADEWARDEN = REPO / ".venv" / "bin" / "tradewarden"
#: User agents of the operator's requests: its own client and kopf's watch client.
OPERATOR_AGENTS = (USER_AGENT.split("/")[0], "kopf/")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ledger_namespace_of_prefix(prefix: str) -> str:
    """The operator namespace of the test operator whose bots live in ``<prefix>-*`` namespaces."""
    return f"{prefix}-system"


def new_prefix() -> str:
    """A namespace prefix of one operator instance: ``two`` + 5 hex digits."""
    return f"two{uuid.uuid4().hex[:5]}"


@dataclass
class OperatorProcess:
    cluster: Cluster
    workdir: pathlib.Path
    prefix: str = field(default_factory=new_prefix)
    extra_args: tuple[str, ...] = ()
    #: The operator's own namespace; by default ``<prefix>-system``, created at start.
    ledger_ns: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    starts: int = 0

    @property
    def ledger_namespace(self) -> str:
        return self.ledger_ns or ledger_namespace_of_prefix(self.prefix)

    @property
    def gate_key_ref(self) -> str:
        return f"{self.ledger_namespace}/{GATE_KEY_CONFIGMAP}"

    @property
    def log_path(self) -> pathlib.Path:
        return self.workdir / f"operator-{self.starts}.log"

    def start(self, timeout: float = 60.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self.port = free_port()
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child owns it for its lifetime
        env = dict(os.environ, KUBECONFIG=self.cluster.kubeconfig, PYTHONUNBUFFERED="1",
                   TRADEWARDEN_INSTANCE=self.prefix)
        # The operator's own namespace (its gate ledger and keys), as the chart's release namespace.
        if self.ledger_ns is None:
            self.cluster.kubectl("create", "namespace", self.ledger_namespace, check=False)
        self.proc = subprocess.Popen(
            [str(TRADEWARDEN), "operator", "--metrics-port", str(self.port), "--namespace", f"{self.prefix}-*",
             "--runner-image", "tradewarden/runner:test", "--ledger-namespace", self.ledger_namespace,
             # The tests' venues are exchange emulators on loopback.
             "--allowed-api-url", "http://127.0.0.1:", "--allowed-api-url", "http://localhost:",
             *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the operator exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError), \
                    urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"the operator did not answer /healthz within {timeout} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        """A crash: SIGKILL, no chance to finish anything."""
        self.stop(signal.SIGKILL)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        texts = []
        for i in range(1, self.starts + 1):
            path = self.workdir / f"operator-{i}.log"
            if path.exists():
                texts.append(f"--- operator run {i} ---\n" + path.read_text(errors="replace"))
        return "\n".join(texts)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
            text: str = resp.read().decode()
        return text

    def namespace(self, name: str) -> str:
        """Create a namespace this operator watches; the caller deletes it (or leaves it to cleanup)."""
        ns = f"{self.prefix}-{name}"[:63].rstrip("-")
        self.cluster.kubectl("create", "namespace", ns)
        return ns

    def delete_namespaces(self) -> None:
        out = self.cluster.kubectl("get", "namespaces", "-o", "name", check=False).stdout.split()
        mine = [n.split("/", 1)[1] for n in out if n.startswith(f"namespace/{self.prefix}-")]
        if mine:
            self.cluster.kubectl("delete", "namespace", *mine, "--wait=false", check=False)


# ------------------------------------------------------------------------------------------ objects


def strategy_config(name: str = "momentum", params: dict[str, Any] | None = None,
                    strategy: str = "momentum") -> dict[str, Any]:
    return {"apiVersion": "tradewarden.io/v1alpha1", "kind": "StrategyConfig", "metadata": {"name": name},
            "spec": {"strategy": strategy, "instruments": ["BTC/USDT"], "timeframe": "5m",
                     "params": params if params is not None else {"fast": 10, "slow": 30}}}


def trading_bot(name: str, config: str = "momentum", labels: dict[str, str] | None = None,
                **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"strategyConfigRef": config, "exchange": {"id": "binance"}}
    body.update(spec)
    return {"apiVersion": "tradewarden.io/v1alpha1", "kind": "TradingBot",
            "metadata": {"name": name, "labels": labels or {}}, "spec": body}


def kill_switch(name: str, mode: str = "off", namespaces: list[str] | None = None,
                **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"mode": mode, "selector": {"namespaces": namespaces or []}}
    body.update(spec)
    return {"apiVersion": "tradewarden.io/v1alpha1", "kind": "KillSwitch", "metadata": {"name": name},
            "spec": body}


def until(op: OperatorProcess, predicate: Callable[[], Any], what: str, timeout: float = 30.0,
          interval: float = 0.25) -> Any:
    """Poll ``predicate`` until it returns something truthy; on timeout show the operator's log."""
    return poll(predicate, timeout=timeout, interval=interval, what=what,
                context=lambda: "operator log:\n" + "\n".join(op.log().splitlines()[-60:]))


def get(cluster: Cluster, *args: str) -> dict[str, Any] | None:
    """``kubectl get ARGS -o json``, or None when it does not exist (or cannot be read)."""
    proc = cluster.kubectl("get", *args, "-o", "json", check=False)
    if proc.returncode != 0:
        return None
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            found: dict[str, Any] = cond
            return found
    return {}


# ------------------------------------------------------------------------------------------ the runner's part


class RunnerStandIn:
    """Plays a runner's Lease side through the real API server, as the runner would (get + update).

    With ``account`` set, requests impersonate the bot's runner ServiceAccount, so the renewal also
    proves that the Role the operator made lets the runner do exactly this.
    """

    def __init__(self, cluster: Cluster, namespace: str, bot: str, account: bool = True) -> None:
        self.namespace, self.bot = namespace, bot
        self.kube = Kube.from_environment(kubeconfig=cluster.kubeconfig)
        # Its own user agent, so the audit log never counts the stand-in's writes as the operator's.
        self.kube._api.user_agent = "tradewarden-test-runner/0"
        if account:
            self.kube._api.set_default_header("Impersonate-User",
                                              f"system:serviceaccount:{namespace}:{bot}-runner")

    def renew(self, *, applied_hash: str | None = None, equity: float = 10000.0, pnl: float = 0.0,
              acks: dict[str, dict[str, Any]] | None = None, when: dt.datetime | None = None,
              telemetry: dict[str, Any] | None = None, identity: dict[str, Any] | None = None) -> dict[str, Any]:
        lease = self.kube.get(LEASES, self.namespace, f"{self.bot}-runner")
        assert lease is not None, f"Lease {self.namespace}/{self.bot}-runner does not exist"
        now = when or dt.datetime.now(dt.UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lease["spec"]["renewTime"] = stamp
        lease["spec"]["holderIdentity"] = f"{self.bot}-runner-test"
        annotations = lease["metadata"].setdefault("annotations", {})
        doc = {"heartbeat": stamp, "equity": equity, "pnl": pnl, **(telemetry or {})}
        annotations[ANN_TELEMETRY] = json.dumps(doc, sort_keys=True)
        if applied_hash is not None:
            annotations[ANN_APPLIED_HASH] = applied_hash
        if acks is not None:
            annotations[ANN_KILL_ACKS] = json.dumps(acks, sort_keys=True)
        if identity is not None:
            annotations[ANN_RUNNER_IDENTITY] = RunnerIdentity.model_validate(identity).model_dump_json(by_alias=True)
        updated: dict[str, Any] = self.kube._request(
            "PUT", LEASES.path(self.namespace, f"{self.bot}-runner"), what="Lease", plural="leases", body=lease)
        return updated


# ------------------------------------------------------------------------------------------ audit log


@dataclass(frozen=True)
class AuditWrite:
    at: str
    verb: str
    resource: str
    subresource: str
    namespace: str
    name: str
    code: int
    agent: str


def audit_writes(cluster: Cluster, since: str, namespace_prefix: str | None = None,
                 names: tuple[str, ...] = (), instance: str | None = None) -> list[AuditWrite]:
    """Writes (create/update/patch/delete) by the operator since ``since`` (RFC 3339, UTC).

    Restricted to objects in namespaces starting with ``namespace_prefix``, or to cluster-scoped objects
    named in ``names``, and (with ``instance``) to the operator started with that instance name, so
    other tests running against the same API server do not count.
    """
    assert cluster.audit_log is not None, "this cluster has no audit log (TRADEWARDEN_CLUSTER=current?)"
    out: list[AuditWrite] = []
    for path in sorted(cluster.audit_log.parent.glob(cluster.audit_log.name + "*")):
        with open(path, errors="replace") as f:
            for line in f:
                if '"userAgent"' not in line:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                agent = event.get("userAgent", "")
                if not agent.startswith(OPERATOR_AGENTS) or event.get("stageTimestamp", "") <= since:
                    continue
                if instance is not None and agent.startswith("tradewarden-operator") and \
                        f"instance/{instance}" not in agent:
                    continue
                if event.get("verb") not in ("create", "update", "patch", "delete", "deletecollection"):
                    continue
                ref = event.get("objectRef") or {}
                ns = ref.get("namespace") or ""
                name = ref.get("name") or ""
                if namespace_prefix is not None and not (ns.startswith(namespace_prefix) or (not ns and name in names)):
                    continue
                out.append(AuditWrite(event["stageTimestamp"], event["verb"], ref.get("resource", ""),
                                      ref.get("subresource", ""), ns, name,
                                      int((event.get("responseStatus") or {}).get("code", 0)), agent))
    return out


def deleted_by_others(cluster: Cluster, since: str, names: tuple[str, ...]) -> set[str]:
    """Cluster-scoped objects among ``names`` that someone other than the operator deleted since ``since``
    (another test's ``helm uninstall``, say): re-creating them is the operator's job, not noise."""
    assert cluster.audit_log is not None
    out: set[str] = set()
    for path in sorted(cluster.audit_log.parent.glob(cluster.audit_log.name + "*")):
        with open(path, errors="replace") as f:
            for line in f:
                if '"delete"' not in line:
                    continue
                event = json.loads(line)
                ref = event.get("objectRef") or {}
                if event.get("verb") == "delete" and event.get("stageTimestamp", "") > since and \
                        ref.get("name") in names and not event.get("userAgent", "").startswith(OPERATOR_AGENTS):
                    out.add(ref["name"])
    return out


def utc_stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
