"""`make demo` end to end: the script brings every demo bot to Ready and stops what it started."""

from __future__ import annotations

import os
import subprocess
import sys

from support.kube import REPO, Cluster
from support.runner import free_port


def test_demo_reaches_ready_and_stops_cleanly(cluster: Cluster) -> None:
    env = dict(os.environ, TRADEWARDEN_CLUSTER="current", KUBECONFIG=cluster.kubeconfig)
    try:
        proc = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--exit-when-ready",
                               "--timeout", "150", "--operator-metrics-port", str(free_port())],
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out = proc.stdout
        for bot in ("btc-signals", "eth-paper", "btc-paper-v2"):
            assert bot in out
        table = [line.split() for line in out.splitlines() if line.startswith(("btc-", "eth-"))]
        assert {row[0]: (row[1], row[2], row[4]) for row in table} == {
            "btc-signals": ("signals", "signals", "Running"),
            "eth-paper": ("paper", "paper", "Running"),
            "btc-paper-v2": ("paper", "paper", "Running"),
        }
        assert "stopped." in out
        leftovers = subprocess.run(["pgrep", "-f", "tradewarden runner --bot trading-demo/"], capture_output=True)
        assert leftovers.returncode == 1, "the demo left runner processes behind"
    finally:
        cluster.kubectl("delete", "namespace", "trading-demo", "--wait=false", "--ignore-not-found", check=False)
