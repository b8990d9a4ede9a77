"""The local node: how long it took to come up, the images' sizes, and pod start latency.

Pod start latency is measured on the running local cluster, one pod at a time so the figure is the
node's, not a queue's: ``kubectl apply`` of a pod of this tree's runner image (command ``python -c``
that serves nothing, with the restricted securityContext our pods use) -> phase Running (the
kubelet's status, polled every 50 ms through the API server) -> deleted. And a TradingBot (paper,
placement cluster) applied to a real operator -> its runner pod Ready (the probe passes, so the runner
is up, has read its config and serves /healthz).

Run with ``make bench`` or::

    .venv/bin/python -m pytest benchmarks/bench_node.py -m benchmark -s -p no:cacheprovider
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import time
import uuid

import pytest

from cluster import images, localcluster
from support.kube import Cluster, install_crds
from support.operator import OperatorProcess, strategy_config, trading_bot
from support.pods import BRIDGE_IP, restricted_namespace, running_pod

SAMPLES = int(os.environ.get("NODE_BENCH_SAMPLES", "10"))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def pod(name: str, image: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                         "seccompProfile": {"type": "RuntimeDefault"}},
                     "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "c", "image": image, "imagePullPolicy": "IfNotPresent",
                                     "command": ["python", "-c", "import time; time.sleep(3600)"],
                                     "resources": {"requests": {"cpu": "5m", "memory": "32Mi"}},
                                     "securityContext": {"allowPrivilegeEscalation": False,
                                                         "readOnlyRootFilesystem": True,
                                                         "capabilities": {"drop": ["ALL"]}}}]}}


def row(label: str, values: list[float]) -> str:
    return (f"{label:<44}{len(values):>8}{statistics.median(values):>10.2f}{percentile(values, 99):>10.2f}"
            f"{max(values):>10.2f}")


@pytest.mark.benchmark
@pytest.mark.timeout(1800)
def test_node_and_pod_start(tmp_path: pathlib.Path) -> None:
    state = localcluster.State.load(localcluster.DEFAULT_DIR)
    if not (state and localcluster.healthy(state)):
        state = localcluster.up(localcluster.DEFAULT_DIR)
    tag = localcluster.ensure_images(state)
    cluster = Cluster(state.kubeconfig, owned=False, image_tag=tag)
    install_crds(cluster)
    print(f"\ncontrol plane ready {state.startup_seconds:.1f} s after start; node Ready "
          f"{state.node_ready_seconds:.1f} s after start (this cluster's own start, state.json)")
    print(f"{'image (docker archive, uncompressed)':<44}{'MiB':>8}")
    for ref, archive in images.build_all().items():
        print(f"{ref:<44}{archive.stat().st_size / 2**20:>8.0f}")

    ns = restricted_namespace(cluster, f"bench-node-{uuid.uuid4().hex[:5]}")
    image = f"tradewarden/runner:{tag}"
    running: list[float] = []
    try:
        for i in range(SAMPLES):
            name = f"p{i}"
            sent = time.monotonic()
            cluster.apply(pod(name, image), namespace=ns)
            while True:
                phase = cluster.kubectl("get", "pod", name, "-n", ns, "-o", "jsonpath={.status.phase}").stdout
                if phase == "Running":
                    running.append(time.monotonic() - sent)
                    break
                assert phase in ("", "Pending"), phase
                time.sleep(0.05)
            cluster.kubectl("delete", "pod", name, "-n", ns, "--wait=true", "--grace-period=1")

        op = OperatorProcess(cluster, tmp_path / "operator",
                             extra_args=("--runner-image", image, "--allowed-api-url", f"http://{BRIDGE_IP}:"))
        op.start()
        bots: list[float] = []
        try:
            from tradewarden.emulator import Emulator

            emu = Emulator(host=BRIDGE_IP, bar_seconds=1)
            emu.start()
            try:
                bns = restricted_namespace(cluster, op.namespace("bots"))
                sc = strategy_config("fast", params={"fast": 3, "slow": 6})
                sc["spec"]["timeframe"] = "1m"
                cluster.apply(sc, namespace=bns)
                for i in range(max(3, SAMPLES // 3)):
                    sent = time.monotonic()
                    cluster.apply(trading_bot(f"b{i}", "fast", mode="paper",
                                              exchange={"id": "binance", "apiUrl": emu.url}), namespace=bns)
                    running_pod(cluster, bns, f"b{i}", timeout=180)
                    bots.append(time.monotonic() - sent)
                    cluster.kubectl("delete", "tradingbot", f"b{i}", "-n", bns, "--wait=true")
            finally:
                emu.stop()
        finally:
            op.stop()
            op.delete_namespaces()
        print(f"\n{'seconds':<44}{'samples':>8}{'p50':>10}{'p99':>10}{'max':>10}")
        print(row("pod apply -> Running (runner image)", running))
        print(row("TradingBot apply -> runner pod Ready", bots))
        print(json.dumps({"pod_running_s": running, "bot_pod_ready_s": bots}))
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
