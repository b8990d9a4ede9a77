"""Run a real runner subprocess against the real API server, authenticated by its own ServiceAccount token.

``BotEnv`` sets up what the operator would for one bot (a real TradingBot object, and from the
operator's own pure builders: its ServiceAccount, Role, RoleBinding and Lease, plus KillSwitch read
access), writes runtime configs into its ConfigMap directly (the contract allows tests to), and starts
``tradewarden runner`` as a process with a kubeconfig holding the ServiceAccount's token.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pathlib
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import urllib.parse
from typing import Any

import yaml

from support.kube import Cluster, poll
from support.operator import ledger_namespace_of_prefix
from tradewarden.api.runtime import (
    ANN_APPLIED_HASH,
    ANN_KILL_ACKS,
    ANN_REJECTED,
    ANN_TELEMETRY,
    GATE_KEY_CONFIGMAP,
    GATE_KEY_ENV,
    RuntimeConfig,
    Telemetry,
    lease_name,
    runner_account_name,
)
from tradewarden.api.tradingbot import TradingBot
from tradewarden.controller import builders, keys

VENV_BIN = pathlib.Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def token_kubeconfig(cluster: Cluster, namespace: str, account: str, path: pathlib.Path,
                     server: str | None = None) -> pathlib.Path:
    """A kubeconfig that authenticates as ``system:serviceaccount:<namespace>:<account>``."""
    token = cluster.kubectl("create", "token", account, "-n", namespace, "--duration=2h").stdout.strip()
    admin = yaml.safe_load(pathlib.Path(cluster.kubeconfig).read_text())
    ctx = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    cl = dict(next(c for c in admin["clusters"] if c["name"] == ctx["cluster"])["cluster"])
    if server:
        cl["server"] = server
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "runner",
              "clusters": [{"name": "c", "cluster": cl}],
              "users": [{"name": account, "user": {"token": token}}],
              "contexts": [{"name": "runner", "context": {"cluster": "c", "user": account, "namespace": namespace}}]}
    path.write_text(json.dumps(config))
    return path


class TcpProxy:
    """A loopback TCP forwarder the test can cut, to take the API server away from one runner: ``cut``
    refuses and resets (a process gone), ``silence`` keeps every connection open and answers nothing
    (a dropped route, a stalled API server)."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target_port = target_port
        self.target_host = target_host
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = int(self.server.getsockname()[1])
        self.open = True
        self.silent = False
        self._conns: list[socket.socket] = []
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.silent:
                self._held.append(client)  # accepted, never answered
                continue
            upstream = socket.create_connection((self.target_host, self.target_port)) if self.open else None
            # Under the lock: a connection accepted while cut() ran must not survive it, or the runner
            # keeps reaching the API server through it and the cut proves nothing.
            with self._lock:
                if not self.open or upstream is None:
                    client.close()
                    if upstream is not None:
                        upstream.close()
                    continue
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                if not self.silent:
                    b.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                b.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        """Refuse new connections and reset the open ones: the API server is gone for this runner."""
        with self._lock:
            self.open = False
            conns, self._conns = self._conns, []
        for conn in conns:
            # shutdown first: a bare close() does not wake a thread blocked in recv() on it, and the
            # connection would stay up (a silent one, not a reset).
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()

    def silence(self) -> None:
        """Forward nothing more, in either direction, and answer no new connection; close nothing."""
        self.silent = True

    def restore(self) -> None:
        self.open = True
        self.silent = False
        held, self._held = self._held, []
        for conn in held:
            with contextlib.suppress(OSError):
                conn.close()


class RunnerProcess:
    def __init__(self, proc: subprocess.Popen[bytes], log: pathlib.Path, metrics_port: int) -> None:
        self.proc, self.log, self.metrics_port = proc, log, metrics_port

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.output().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
        return out

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class BotEnv:
    """One bot's Kubernetes side, as the operator would build it, for a runner under test."""

    def __init__(self, cluster: Cluster, namespace: str, name: str, workdir: pathlib.Path,
                 spec: dict[str, Any] | None = None, labels: dict[str, str] | None = None,
                 operator_managed: bool = False) -> None:
        self.cluster, self.namespace, self.name, self.workdir = cluster, namespace, name, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.runners: list[RunnerProcess] = []
        self.proxy: TcpProxy | None = None
        self.crb = ""
        #: The operator's verifying key for this runner (a test operator's namespace), if an operator runs.
        self.gate_key = ""
        if operator_managed:
            self.gate_key = f"{ledger_namespace_of_prefix(namespace.split('-', 1)[0])}/{GATE_KEY_CONFIGMAP}"
            # A running operator owns the bot's objects: wait for the ServiceAccount it creates.
            self.bot = TradingBot.model_validate(cluster.get_json("tb", name, "-n", namespace))
            cluster.wait_for(lambda: cluster.kubectl("get", "sa", runner_account_name(name), "-n", namespace,
                                                     check=False).returncode == 0,
                             timeout=60, what=f"the operator to create {runner_account_name(name)}")
            return
        # No operator: the runtime configs the test writes are signed with the unit tests' key (the
        # operator's own signing code), published as the operator would publish its verifying key.
        from support.builders import TEST_SIGNER

        cluster.kubectl("create", "namespace", TEST_SIGNER.namespace, check=False)
        for obj in keys.build_public_objects(TEST_SIGNER):
            cluster.apply(obj)
        self.gate_key = f"{TEST_SIGNER.namespace}/{GATE_KEY_CONFIGMAP}"
        body = {"apiVersion": "tradewarden.io/v1alpha1", "kind": "TradingBot",
                "metadata": {"name": name, "labels": labels or {}},
                "spec": spec or {"strategyConfigRef": "unused", "exchange": {"id": "binance"}, "mode": "paper"}}
        cluster.apply(body, namespace=namespace)
        self.bot = TradingBot.model_validate(cluster.get_json("tb", name, "-n", namespace))
        for obj in (builders.build_service_account(self.bot), builders.build_role(self.bot),
                    builders.build_role_binding(self.bot), builders.build_lease(self.bot),
                    builders.build_fleet_cluster_role()):
            cluster.apply(obj)
        # The operator keeps one shared ClusterRoleBinding; tests bind each runner on their own so they
        # never fight with an operator that may run in another test.
        self.crb = f"tw-test-{namespace}-{name}"[:253]
        cluster.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                       "metadata": {"name": self.crb, "labels": {"tradewarden.io/test": "runner"}},
                       "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                   "name": builders.FLEET_RBAC_NAME},
                       "subjects": [{"kind": "ServiceAccount", "name": runner_account_name(name),
                                     "namespace": namespace}]})

    @property
    def uid(self) -> str:
        return self.bot.metadata.uid

    def write_runtime(self, runtime: RuntimeConfig) -> None:
        self.cluster.apply(builders.build_configmap(self.bot, runtime))

    def write_raw_runtime(self, text: str) -> None:
        cm = builders.build_configmap(self.bot, self.last_runtime_placeholder())
        cm["data"]["runtime.json"] = text
        self.cluster.apply(cm)

    def last_runtime_placeholder(self) -> RuntimeConfig:
        from support.builders import make_runtime

        return make_runtime(self.namespace, self.name)

    def start(self, *, via_proxy: bool = False, env: dict[str, str] | None = None,
              tick: float = 0.3) -> RunnerProcess:
        server = None
        if via_proxy:
            api = urllib.parse.urlsplit(yaml.safe_load(pathlib.Path(self.cluster.kubeconfig).read_text())
                                        ["clusters"][0]["cluster"]["server"])
            self.proxy = self.proxy or TcpProxy(int(api.port or 443), api.hostname or "127.0.0.1")
            server = f"https://127.0.0.1:{self.proxy.port}"
        kubeconfig = token_kubeconfig(self.cluster, self.namespace, runner_account_name(self.name),
                                      self.workdir / "kubeconfig", server)
        port = free_port()
        log = self.workdir / f"runner-{len(self.runners)}.log"
        environ = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        environ.update({"TRADEWARDEN_HEARTBEAT_SECONDS": "1", **(env or {})})
        if self.gate_key:
            environ.setdefault(GATE_KEY_ENV, self.gate_key)
        proc = subprocess.Popen(
            [str(VENV_BIN / "tradewarden"), "runner", "--bot", f"{self.namespace}/{self.name}",
             "--journal", str(self.workdir / "journal"), "--metrics-port", str(port),
             "--kubeconfig", str(kubeconfig), "--tick-seconds", str(tick)],
            stdout=log.open("ab"), stderr=subprocess.STDOUT, env=environ)
        runner = RunnerProcess(proc, log, port)
        self.runners.append(runner)
        return runner

    def lease(self) -> dict[str, Any]:
        return self.cluster.get_json("lease", lease_name(self.name), "-n", self.namespace)

    def annotations(self) -> dict[str, str]:
        ann: dict[str, str] = self.lease()["metadata"].get("annotations", {})
        return ann

    def telemetry(self) -> Telemetry | None:
        raw = self.annotations().get(ANN_TELEMETRY)
        return Telemetry.model_validate_json(raw) if raw else None

    def applied_hash(self) -> str:
        return self.annotations().get(ANN_APPLIED_HASH, "")

    def rejected(self) -> str:
        return self.annotations().get(ANN_REJECTED, "")

    def acks(self) -> dict[str, Any]:
        raw = self.annotations().get(ANN_KILL_ACKS)
        return json.loads(raw) if raw else {}

    def journal(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        path = self.workdir / "journal" / f"{self.namespace}_{self.name}.sqlite"
        if not path.exists():
            return []
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                return db.execute(query, args).fetchall()
            finally:
                db.close()
        except sqlite3.OperationalError:
            return []  # the runner is creating the file or its WAL right now; the caller polls again

    def close(self) -> None:
        for runner in self.runners:
            runner.stop()
        if self.crb:
            self.cluster.kubectl("delete", "clusterrolebinding", self.crb, "--ignore-not-found", check=False)


def secret_manifest(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def wait(predicate: Any, timeout: float = 30.0, interval: float = 0.1, what: str = "condition",
         runner: RunnerProcess | None = None) -> Any:
    """Poll ``predicate``; on timeout the failure shows the tail of ``runner``'s log when given."""
    context = (lambda: "runner log:\n" + runner.output()[-4000:]) if runner is not None else None
    return poll(predicate, timeout=timeout, interval=interval, what=what, context=context)
