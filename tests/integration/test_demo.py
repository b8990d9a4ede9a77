"""`make demo` end to end: the script installs the chart, brings every demo bot to Ready as a runner pod on
the node, and stops what it started; with ``--placement external`` the same with local processes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from support.kube import REPO, Cluster
from support.pods import NODE_SINGLETONS, image_tag
from support.runner import free_port

pytestmark = NODE_SINGLETONS


@pytest.mark.parametrize("placement", ["cluster", "external"])
def test_demo_reaches_ready_and_stops_cleanly(cluster: Cluster, placement: str) -> None:
    env = dict(os.environ, TRADEWARDEN_CLUSTER="current", KUBECONFIG=cluster.kubeconfig,
               TRADEWARDEN_IMAGE_TAG=image_tag(cluster))
    try:
        proc = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--exit-when-ready",
                               "--placement", placement,
                               "--timeout", "150", "--operator-metrics-port", str(free_port())],
                              env=env, capture_output=True, text=True, timeout=420)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out = proc.stdout
        for bot in ("btc-signals", "eth-paper", "btc-paper-v2"):
            assert bot in out
        rows = [line.split() for line in out.splitlines() if line.startswith(("btc-", "eth-"))]
        table = [row for row in rows if not row[0].endswith("-runner-0")]
        pods = [row for row in rows if row[0].endswith("-runner-0")]
        assert {row[0]: (row[1], row[2], row[4]) for row in table} == {
            "btc-signals": ("signals", "signals", "Running"),
            "eth-paper": ("paper", "paper", "Running"),
            "btc-paper-v2": ("paper", "paper", "Running"),
        }
        assert "stopped." in out
        leftovers = subprocess.run(["pgrep", "-f", "tradewarden runner --bot trading-demo/"], capture_output=True)
        assert leftovers.returncode == 1, "the demo left runner processes behind"
        if placement == "cluster":
            # The bots ran as pods of this tree's runner image, and the demo removed them and its release.
            assert sorted(row[0] for row in pods) == ["btc-paper-v2-runner-0", "btc-signals-runner-0",
                                                       "eth-paper-runner-0"], out
            assert all(row[2] == "Running" for row in pods), out
            gone = cluster.kubectl("get", "deployment", "tradewarden-operator", "-n", "tradewarden-system",
                                   check=False)
            assert gone.returncode != 0, "the demo left its operator behind"
    finally:
        cluster.kubectl("delete", "namespace", "trading-demo", "--wait=false", "--ignore-not-found", check=False)
