"""Argo CD sees no drift: the operator never writes what a Git manifest declares.

Every example is applied as Argo CD would apply it, the operator reconciles it many times over (status
writes, runner heartbeats, a kill switch engaging and releasing, a config edit), and the spec, labels,
annotations and finalizers of every object stay byte-identical to what was applied.
"""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from support.kube import REPO, Cluster
from support.operator import OperatorProcess, RunnerStandIn, kill_switch

EXAMPLES = ("01-signals-bot", "02-paper-bot", "03-strategy-variants", "06-ensemble")


@pytest.fixture
def operator(cluster: Cluster, tmp_path: pathlib.Path) -> Iterator[OperatorProcess]:
    op = OperatorProcess(cluster, tmp_path / "operator")
    op.start()
    yield op
    op.stop()
    op.delete_namespaces()


def declared(obj: dict[str, Any]) -> str:
    """What Git owns: spec plus the user's labels, annotations and finalizers, canonical text."""
    meta = obj["metadata"]
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if k != "kubectl.kubernetes.io/last-applied-configuration"}
    return json.dumps({"spec": obj.get("spec"), "labels": meta.get("labels") or {}, "annotations": annotations,
                       "finalizers": meta.get("finalizers") or []}, sort_keys=True)


def snapshot(cluster: Cluster, ns: str, switches: list[str]) -> dict[str, str]:
    out = {}
    for kind in ("tradingbots", "strategyconfigs"):
        for item in cluster.get_json(kind, "-n", ns)["items"]:
            out[f"{kind}/{item['metadata']['name']}"] = declared(item)
    for name in switches:
        out[f"killswitch/{name}"] = declared(cluster.get_json("killswitch", name))
    return out


def test_spec_is_byte_identical_after_reconciles(cluster: Cluster, operator: OperatorProcess) -> None:
    ns = operator.namespace("argocd")
    switches: list[str] = []
    for folder in EXAMPLES:
        for path in sorted((REPO / "examples" / folder).glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if not doc:
                    continue
                if doc["kind"] == "KillSwitch":
                    doc["metadata"]["name"] = f"{ns}-{doc['metadata']['name']}"[:63]
                    doc["spec"].setdefault("selector", {})["namespaces"] = [ns]
                    switches.append(doc["metadata"]["name"])
                    cluster.apply(doc)
                else:
                    if doc["kind"] == "TradingBot":
                        # The test renews the runners' Leases itself: as external runners would. A Lease
                        # renewed for a runner pod that does not run is not believed (and trips triggers).
                        doc["spec"]["placement"] = "external"
                    cluster.apply(doc, namespace=ns)
    try:
        bots = [i["metadata"]["name"] for i in cluster.get_json("tradingbots", "-n", ns)["items"]]
        cluster.wait_for(lambda: all((cluster.get_json("tb", b, "-n", ns).get("status") or {}).get("configHash")
                                     for b in bots), timeout=60, what="every bot reconciled")
        before = snapshot(cluster, ns, switches)
        assert len(before) >= 10
        # Drive many reconciles: heartbeats, a switch engaging and releasing, a config edit and back.
        stand_ins = [RunnerStandIn(cluster, ns, b) for b in bots]
        brake = f"{ns}-drill"
        cluster.apply(kill_switch(brake, "close_only", namespaces=[ns]))
        for _ in range(3):
            for s in stand_ins:
                s.renew(equity=10000.0 - 5 * time.time() % 7)
            time.sleep(1)
        cluster.kubectl("patch", "killswitch", brake, "--type", "merge", "-p", '{"spec":{"mode":"off"}}')
        time.sleep(3)
        after = snapshot(cluster, ns, switches)
        assert after == before, {k: (before[k], after.get(k)) for k in before if before[k] != after.get(k)}
        for b in bots:
            meta = cluster.get_json("tb", b, "-n", ns)["metadata"]
            assert not meta.get("finalizers"), f"{b} got finalizers {meta.get('finalizers')}"
            assert not [a for a in meta.get("annotations") or {} if "kopf" in a]
    finally:
        for name in [*switches, f"{ns}-drill"]:
            cluster.kubectl("delete", "killswitch", name, "--ignore-not-found", check=False)
