"""An operator killed in the middle of reconciling converges after a restart, with no duplicates.

Reconciling is idempotent: every owned object has a deterministic name, so a second operator that
re-lists everything can only find, compare and complete what the first one started. The test kills
the operator (SIGKILL, no clean shutdown) right after creating several bots, restarts it, and checks
that each bot ends with exactly one of each owned object and one subject in the shared binding.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from support.kube import Cluster
from support.operator import OperatorProcess, strategy_config, trading_bot
from tradewarden.controller.builders import FLEET_RBAC_NAME

pytestmark = pytest.mark.cluster

KINDS = ("configmap", "serviceaccount", "role", "rolebinding", "lease", "statefulset")
BOTS = [f"r{i}" for i in range(6)]


def test_restart_mid_reconcile_converges_without_duplicates(
        cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> None:
    op = OperatorProcess(cluster, tmp_path_factory.mktemp("operator"))
    op.start()
    try:
        ns = op.namespace("restart")
        cluster.apply(strategy_config(), namespace=ns)
        cluster.apply([trading_bot(name) for name in BOTS], namespace=ns)
        # Kill it as soon as its first write is in the log: in the middle of reconciling, not after.
        deadline = time.monotonic() + 30
        while "applied" not in op.log() and time.monotonic() < deadline:
            time.sleep(0.02)
        op.kill()
        first_run = op.log()
        assert "applied" in first_run
        op.start()

        def converged() -> dict[str, Counter[str]] | None:
            counts: dict[str, Counter[str]] = {}
            for kind in KINDS:
                items = json.loads(cluster.kubectl("get", kind, "-n", ns, "-l", "tradewarden.io/bot", "-o",
                                                   "json").stdout)["items"]
                counts[kind] = Counter(o["metadata"]["labels"]["tradewarden.io/bot"] for o in items)
            bots = json.loads(cluster.kubectl("get", "tb", "-n", ns, "-o", "json").stdout)["items"]
            done = all((b.get("status") or {}).get("configHash") for b in bots) and len(bots) == len(BOTS)
            # Complete once every bot has all its objects (two ConfigMaps: runtime and evidence); the
            # assertion below then checks that nothing exists twice.
            complete = all(set(c) == set(BOTS) and min(c.values()) >= (2 if kind == "configmap" else 1)
                           for kind, c in counts.items())
            return counts if done and complete else None

        deadline = time.monotonic() + 60
        counts = None
        while time.monotonic() < deadline and counts is None:
            counts = converged()
            time.sleep(0.3)
        assert counts is not None, f"did not converge after the restart:\n{op.log()[-4000:]}"
        for kind, per_bot in counts.items():
            # Two ConfigMaps per bot (its runtime config and its evidence), one of everything else.
            want = 2 if kind == "configmap" else 1
            assert all(n == want for n in per_bot.values()), f"duplicate or missing {kind}: {per_bot}"

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            crb = json.loads(cluster.kubectl("get", "clusterrolebinding", FLEET_RBAC_NAME, "-o", "json").stdout)
            mine = [s["name"] for s in crb.get("subjects", []) if s["namespace"] == ns]
            if sorted(mine) == sorted(f"{b}-runner" for b in BOTS):
                break
            time.sleep(0.3)
        assert sorted(mine) == sorted(f"{b}-runner" for b in BOTS), mine
        assert op.log().count("Traceback") == 0, op.log()[-4000:]
    finally:
        op.stop()
        op.delete_namespaces()
