"""The local cluster's node keeps its promises: it listens only on loopback and the pod bridge, the
firewall keeps pod traffic on this machine, and the kubelet has a node's identity, not more."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess

import pytest

from cluster import localcluster, node
from support.kube import Cluster

pytestmark = pytest.mark.cluster


def local_state(cluster: Cluster) -> localcluster.State:
    state = localcluster.State.load(pathlib.Path(cluster.kubeconfig).parent)
    if state is None:
        raise AssertionError("these tests check the local cluster (TRADEWARDEN_CLUSTER=local)")
    return state


def test_every_part_listens_only_on_loopback_or_the_pod_bridge(cluster: Cluster) -> None:
    state = local_state(cluster)
    ours = set(state.pids.values()) | set(node._our_processes(pathlib.Path(state.dir)))
    out = subprocess.run(["ss", "-Hltnup"], capture_output=True, text=True, check=True).stdout
    listening = []
    for line in out.splitlines():
        pids = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if pids & ours:
            listening.append(line.split()[4])
    assert listening, "found no socket of the cluster's parts (the check would prove nothing)"
    allowed = ("127.0.0.1:", "[::1]:", f"{node.BRIDGE_IP}:")
    assert [addr for addr in listening if not addr.startswith(allowed)] == [], listening


def test_the_firewall_drops_what_is_routed_between_the_bridge_and_elsewhere(cluster: Cluster) -> None:
    local_state(cluster)
    # In the mangle table, which a forwarded packet crosses before any ACCEPT of kube-proxy's (filter table).
    forward = subprocess.run(["iptables", "-w", "-t", "mangle", "-S", "FORWARD"], capture_output=True, text=True,
                             check=True).stdout
    assert forward.splitlines()[1] == f"-A FORWARD -j {node.FIREWALL_CHAIN}", forward
    chain = subprocess.run(["iptables", "-w", "-t", "mangle", "-S", node.FIREWALL_CHAIN], capture_output=True,
                           text=True, check=True).stdout
    assert f"-A {node.FIREWALL_CHAIN} -i {node.BRIDGE} ! -o {node.BRIDGE} -j DROP" in chain
    assert f"-A {node.FIREWALL_CHAIN} ! -i {node.BRIDGE} -o {node.BRIDGE} -j DROP" in chain


def test_the_kubelet_is_a_node_and_may_touch_only_its_own_node(cluster: Cluster) -> None:
    state = local_state(cluster)
    kubelet = str(pathlib.Path(state.dir) / "kubelet.kubeconfig")

    def as_kubelet(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kubectl", f"--kubeconfig={kubelet}", *args], capture_output=True, text=True,
                              input=input, env=dict(os.environ), timeout=30)

    me = as_kubelet("auth", "whoami", "-o", "json")
    info = json.loads(me.stdout)["status"]["userInfo"]
    assert info["username"] == f"system:node:{node.NODE_NAME}"
    assert "system:nodes" in info["groups"]
    # NodeRestriction: a node may label itself, never another node; the Node authorizer: no Secrets at large.
    other = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "not-me"}}
    refused = as_kubelet("create", "-f", "-", input=json.dumps(other))
    assert refused.returncode != 0
    assert "forbidden" in refused.stderr.lower(), refused.stderr
    secrets = as_kubelet("get", "secrets", "-A")
    assert secrets.returncode != 0
    assert "forbidden" in secrets.stderr.lower(), secrets.stderr
    mine = as_kubelet("label", "node", node.NODE_NAME, "tradewarden.io/test=yes", "--overwrite")
    assert mine.returncode == 0, mine.stderr
    as_kubelet("label", "node", node.NODE_NAME, "tradewarden.io/test-")
