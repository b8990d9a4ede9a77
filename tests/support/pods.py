"""Pods on the local cluster's node: the chart's operator as a Deployment pod, runner pods of real bots,
and an exchange emulator on the pod bridge, where pods reach it and nothing beyond this machine can.

The images are the ones ``tests/cluster/images.py`` built from this tree and the session fixture loaded
onto the node (``Cluster.image_tag``); with ``TRADEWARDEN_CLUSTER=current`` they must be on that
cluster's nodes already and ``TRADEWARDEN_IMAGE_TAG`` names their tag (docs/TESTING.md).
"""

from __future__ import annotations

import base64
import json
import pathlib
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from cluster import node as local_node
from support.kube import REPO, Cluster, poll
from tradewarden.emulator import Emulator

CHART = REPO / "charts" / "tradewarden"
#: The address of the pod bridge: the emulator listens there, pods reach the host there.
BRIDGE_IP = local_node.BRIDGE_IP
SHARED_RUNNER_ROLE = "tradewarden-runner-killswitches"
#: The modules that install the chart (its fixed-name access ClusterRoles) or the demo (a fixed release and
#: namespace) carry this mark: on pytest's workers, never two of them at once.
NODE_SINGLETONS = pytest.mark.xdist_group("node-singletons")
RESTRICTED = ("pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/enforce-version=latest")


def image_tag(cluster: Cluster) -> str:
    """The tag of this tree's images on the node; a pod test never skips for want of them."""
    if not cluster.image_tag:
        raise AssertionError("no images of this tree on the cluster: with TRADEWARDEN_CLUSTER=current, load the "
                             "images built by `make images` onto its nodes and set TRADEWARDEN_IMAGE_TAG")
    return cluster.image_tag


def restricted_namespace(cluster: Cluster, name: str) -> str:
    cluster.kubectl("create", "namespace", name, check=False)
    cluster.kubectl("label", "--overwrite", "namespace", name, *RESTRICTED)
    return name


def bridge_venue(**kwargs: Any) -> Iterator[Emulator]:
    """An exchange emulator on the pod bridge (clock manual unless ``bar_seconds`` is given)."""
    kwargs.setdefault("bar_seconds", None)
    emu = Emulator(host=BRIDGE_IP, **kwargs)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


def helm(helm_bin: pathlib.Path, cluster: Cluster, *args: str, check: bool = True,
         timeout: float = 180) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(helm_bin), *args], capture_output=True, text=True, env=cluster.env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@dataclass
class ChartOperator:
    """The chart installed as release ``release`` in ``namespace``; its operator pod watches ``<prefix>-*``."""

    cluster: Cluster
    helm_bin: pathlib.Path
    release: str
    namespace: str
    prefix: str
    tag: str

    @property
    def deployment(self) -> str:
        """The chart's full name is ``<release>-tradewarden`` unless the release name holds the chart's."""
        return f"{self.release}-tradewarden-operator"

    @property
    def selector(self) -> str:
        return f"app.kubernetes.io/instance={self.release},app.kubernetes.io/component=operator"

    def bots_namespace(self, suffix: str) -> str:
        return restricted_namespace(self.cluster, f"{self.prefix}-{suffix}")

    def pods(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.cluster.get_json("pods", "-n", self.namespace, "-l", self.selector)["items"]
        return items

    def logs(self, tail: int = 200) -> str:
        return self.cluster.kubectl("logs", "-n", self.namespace, f"deployment/{self.deployment}", f"--tail={tail}",
                                    check=False).stdout

    def wait_ready(self, timeout: float = 120) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            for pod in self.pods():
                conds = {c["type"]: c["status"] for c in (pod.get("status") or {}).get("conditions") or []}
                if conds.get("Ready") == "True" and not pod["metadata"].get("deletionTimestamp"):
                    return pod
            return None

        found: dict[str, Any] = poll(ready, timeout=timeout, interval=0.5, what="the operator pod Ready",
                                     context=lambda: self.describe())
        return found

    def scale(self, replicas: int) -> None:
        self.cluster.kubectl("scale", "-n", self.namespace, f"deployment/{self.deployment}", f"--replicas={replicas}")
        if replicas == 0:
            poll(lambda: not self.pods(), timeout=60, interval=0.5, what="the operator pod gone")
        else:
            self.wait_ready()

    def describe(self) -> str:
        return self.cluster.kubectl("describe", "pods", "-n", self.namespace, "-l", self.selector,
                                    check=False).stdout[-3000:]

    def upgrade(self, *sets: str) -> subprocess.CompletedProcess[str]:
        return helm(self.helm_bin, self.cluster, "upgrade", self.release, str(CHART), "-n", self.namespace,
                    "--reuse-values", *sets, "--wait", "--timeout", "120s")


def chart_values(prefix: str, tag: str, *extra: str) -> list[str]:
    return ["--set", f"image.tag={tag}", "--set", f"runnerImage.tag={tag}",
            "--set-json", f'operator.namespaces=["{prefix}-*"]',
            # Bots of these tests trade on the emulator on the pod bridge.
            "--set-json", f'operator.allowedApiUrls=["http://{BRIDGE_IP}:"]',
            *extra]


def install_chart(cluster: Cluster, helm_bin: pathlib.Path, *extra: str,
                  namespace: str | None = None) -> ChartOperator:
    """``helm install`` of the chart with this tree's images, the operator as a pod under PodSecurity
    restricted in its own namespace. CRDs are the session's (kept), so they are not installed again."""
    suffix = uuid.uuid4().hex[:5]
    release, prefix = f"tw-{suffix}", f"twp{suffix}"
    ns = restricted_namespace(cluster, namespace or f"tw-system-{suffix}")
    tag = image_tag(cluster)
    helm(helm_bin, cluster, "install", release, str(CHART), "-n", ns, *chart_values(prefix, tag),
         "--set", "crds.install=false",
         # The shared runner ClusterRole is every operator's here (tests' operators run side by side): the
         # release's operator keeps it like them, and its uninstall neither deletes it nor waits on it.
         "--set", "runnerKillSwitchRole.create=false",
         # A run that crashed may have left the chart's fixed-name access roles behind.
         "--take-ownership", *extra)
    op = ChartOperator(cluster, helm_bin, release, ns, prefix, tag)
    try:
        op.wait_ready()
    except BaseException:
        uninstall_chart(op)
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        raise
    return op


def uninstall_chart(op: ChartOperator) -> None:
    helm(op.helm_bin, op.cluster, "uninstall", op.release, "-n", op.namespace, "--wait=false", check=False)


def runner_pods(cluster: Cluster, ns: str, bot: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json("pods", "-n", ns, "-l", f"tradewarden.io/bot={bot}")["items"]
    return items


def running_pod(cluster: Cluster, ns: str, bot: str, timeout: float = 90, not_uid: str | None = None,
                ) -> dict[str, Any]:
    """The bot's runner pod once it is Running and Ready (a new one, when ``not_uid`` is the old one's)."""
    def ready() -> dict[str, Any] | None:
        for pod in runner_pods(cluster, ns, bot):
            if pod["metadata"]["uid"] == not_uid or pod["metadata"].get("deletionTimestamp"):
                continue
            conds = {c["type"]: c["status"] for c in (pod.get("status") or {}).get("conditions") or []}
            if pod.get("status", {}).get("phase") == "Running" and conds.get("Ready") == "True":
                return pod
        return None

    def describe() -> str:
        return cluster.kubectl("describe", "pods", "-n", ns, "-l", f"tradewarden.io/bot={bot}",
                               check=False).stdout[-3000:]

    found: dict[str, Any] = poll(ready, timeout=timeout, interval=0.5, what=f"the runner pod of {ns}/{bot} Ready",
                                 context=describe)
    return found


def pod_logs(cluster: Cluster, ns: str, pod: str, previous: bool = False) -> list[dict[str, Any]]:
    """The runner's structured log lines (JSON objects), as `kubectl logs` shows them."""
    args = ["logs", "-n", ns, pod] + (["--previous"] if previous else [])
    out = cluster.kubectl(*args, check=False).stdout
    lines = []
    for line in out.splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return lines


def pod_reader(cluster: Cluster, namespace: str, name: str) -> dict[str, str]:
    """A ServiceAccount that may only get, list and watch pods, cluster-wide (what a Prometheus needs for
    ``kubernetes_sd_configs`` role pod); returns the API server URL, a token of it and the CA file."""
    cluster.apply([
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": f"{namespace}-{name}"},
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": f"{namespace}-{name}"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"{namespace}-{name}"},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]},
    ])
    token = cluster.kubectl("create", "token", name, "-n", namespace, "--duration=1h").stdout.strip()
    config = json.loads(cluster.kubectl("config", "view", "--raw", "-o", "json").stdout)
    server = config["clusters"][0]["cluster"]
    ca = pathlib.Path(cluster.kubeconfig).with_name(f"ca-{namespace}.crt")
    ca.write_bytes(base64.b64decode(server["certificate-authority-data"]))
    return {"server": server["server"], "token": token, "ca_file": str(ca)}
