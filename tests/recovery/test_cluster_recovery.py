"""A local cluster killed with SIGKILL leaves processes, mounts, network namespaces, a bridge and
firewall rules behind; the next ``cluster-up`` must clean them and bring up a working node. That new
cluster has never seen our CRDs: a plain ``helm install`` of the chart must work there in one step, the
``global`` KillSwitch included.

Run by ``make test`` after the main session, alone, because only one node can run on a machine. It takes
over the session's cluster (the one ``localcluster.py run`` started, ``TRADEWARDEN_CLUSTER_STARTED=1``):
kills it, brings it back, and stops it for good at the end, checking that nothing is left. A developer's
cluster (``make cluster-up``) is killed and restarted the same way but left running. With no cluster at
all, the test starts its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import subprocess
import time

import pytest

from cluster import localcluster, node, tools
from support.kube import REPO

pytestmark = pytest.mark.cluster


def kubectl(kubeconfig: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", f"--kubeconfig={kubeconfig}", *args], input=input, capture_output=True,
                          text=True, timeout=60)


def leftovers(state_dir: pathlib.Path) -> dict[str, object]:
    """What of a cluster in ``state_dir`` is still on the machine."""
    roots = (str(state_dir), str(node.KUBELET_ROOT))
    mounts = [line.split()[4] for line in pathlib.Path("/proc/self/mountinfo").read_text().splitlines()
              if line.split()[4].startswith(roots)]
    netns = sorted(p.name for p in pathlib.Path("/var/run/netns").glob("cni-*")) \
        if pathlib.Path("/var/run/netns").is_dir() else []
    bridge = subprocess.run(["ip", "link", "show", node.BRIDGE], capture_output=True).returncode == 0
    chain = subprocess.run(["iptables", "-w", "-t", "mangle", "-n", "-L", node.FIREWALL_CHAIN],
                           capture_output=True).returncode == 0
    procs = node._our_processes(state_dir)
    return {"mounts": mounts, "netns": netns, "bridge": bridge, "chain": chain, "processes": procs}


def run_a_pod(kubeconfig: str, tag: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "after-crash", "namespace": "default"},
           "spec": {"restartPolicy": "Never",
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{"name": "c", "image": f"tradewarden/runner:{tag}",
                                    "command": ["python", "-c", "print('alive')"],
                                    "securityContext": {"allowPrivilegeEscalation": False,
                                                        "capabilities": {"drop": ["ALL"]}}}]}}
    assert kubectl(kubeconfig, "apply", "-f", "-", input=json.dumps(pod)).returncode == 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        out = kubectl(kubeconfig, "get", "pod", "after-crash", "-n", "default", "-o", "jsonpath={.status.phase}")
        if out.stdout == "Succeeded":
            break
        time.sleep(0.5)
    logs = kubectl(kubeconfig, "logs", "after-crash", "-n", "default").stdout
    kubectl(kubeconfig, "delete", "pod", "after-crash", "-n", "default", "--wait=false")
    assert logs.strip() == "alive", logs


def helm_install_in_one_step(kubeconfig: str, tag: str) -> None:
    assert kubectl(kubeconfig, "get", "crd", "tradingbots.tradewarden.io").returncode != 0, "not a fresh cluster"
    kubectl(kubeconfig, "create", "namespace", "tradewarden-system")
    kubectl(kubeconfig, "label", "namespace", "tradewarden-system", "pod-security.kubernetes.io/enforce=restricted")
    proc = subprocess.run([str(tools.helm()), "install", "tradewarden", str(REPO / "charts" / "tradewarden"),
                           "-n", "tradewarden-system", "--set", f"image.tag={tag}", "--set", f"runnerImage.tag={tag}",
                           "--wait", "--timeout", "180s"], capture_output=True, text=True,
                          env=dict(os.environ, KUBECONFIG=kubeconfig), timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    deadline = time.monotonic() + 60
    while kubectl(kubeconfig, "get", "killswitch", "global").returncode != 0:
        assert time.monotonic() < deadline, "the operator pod did not create the global KillSwitch"
        time.sleep(0.5)
    switch = json.loads(kubectl(kubeconfig, "get", "killswitch", "global", "-o", "json").stdout)
    assert switch["spec"]["mode"] == "off"
    # A cluster-wide operator must not stay behind on a developer's cluster that other tests reuse.
    subprocess.run([str(tools.helm()), "uninstall", "tradewarden", "-n", "tradewarden-system", "--wait"],
                   capture_output=True, env=dict(os.environ, KUBECONFIG=kubeconfig), timeout=120, check=False)


@pytest.mark.timeout(600)
def test_cluster_up_after_a_sigkilled_cluster_cleans_up_and_works(tmp_path: pathlib.Path) -> None:
    shared_dir = pathlib.Path(os.environ.get("TRADEWARDEN_CLUSTER_DIR", str(localcluster.DEFAULT_DIR)))
    shared = localcluster.State.load(shared_dir)
    reuse = bool(shared and localcluster.healthy(shared))
    state_dir = shared_dir if reuse else tmp_path / "crashed"
    # Stopped at the end unless it is a developer's cluster, which stays running.
    ours = not reuse or os.environ.get("TRADEWARDEN_CLUSTER_STARTED") == "1"
    state = shared if reuse and shared else localcluster.up(state_dir)
    try:
        tag = localcluster.ensure_images(state)
        run_a_pod(state.kubeconfig, tag)  # a pod ran: a sandbox, its network namespace and mounts exist
        # The crash: every part of the cluster and every container shim at once, no cleanup.
        for pid in [*state.pids.values(), *node._our_processes(state_dir)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(1)
        left = leftovers(state_dir)
        assert left["bridge"], "the bridge should outlive a SIGKILL (else this test proves nothing)"
        assert left["chain"]
        again = localcluster.up(state_dir)
        assert again.node_ready_seconds > 0
        tag = localcluster.ensure_images(again)
        run_a_pod(again.kubeconfig, tag)
        state = again
        helm_install_in_one_step(again.kubeconfig, tag)
    finally:
        if ours:
            localcluster.down(state_dir)
    if ours:
        gone = leftovers(state_dir)
        assert gone == {"mounts": [], "netns": [], "bridge": False, "chain": False, "processes": []}, gone
