"""Quiet when nothing changes: N idle bots whose runners heartbeat cost zero writes.

The operator runs as a subprocess; 20 bots share a StrategyConfig and a KillSwitch; the test plays
each bot's runner, renewing its Lease every few seconds with a fresh heartbeat (and the telemetry and
acknowledgement annotations a runner writes). After the fleet has settled, the API server's audit log
must show no write by the operator for a full minute, and the operator's own write counter must agree.
The 100-bot, 5-minute version of this measurement is ``benchmarks/bench_operator_quiet.py``.
"""

from __future__ import annotations

import json
import re
import threading
import time

import pytest

from support.kube import Cluster
from support.operator import (
    OperatorProcess,
    RunnerStandIn,
    audit_writes,
    condition,
    deleted_by_others,
    kill_switch,
    strategy_config,
    trading_bot,
    utc_stamp,
)
from tradewarden.controller.builders import FLEET_RBAC_NAME

pytestmark = pytest.mark.cluster

BOTS = 20
WINDOW_SECONDS = 60.0
RENEW_EVERY = 5.0


def operator_writes_metric(op: OperatorProcess) -> float:
    total = 0.0
    for line in op.metrics().splitlines():
        if line.startswith("tradewarden_operator_api_writes_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_idle_fleet_causes_zero_writes(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> None:
    if cluster.audit_log is None:
        pytest.skip("no audit log on this cluster (TRADEWARDEN_CLUSTER=current)")
    op = OperatorProcess(cluster, tmp_path_factory.mktemp("operator"))
    op.start()
    stop = threading.Event()
    renewer: threading.Thread | None = None
    ks_name = f"{op.prefix}-quiet"
    try:
        ns = op.namespace("quiet")
        names = [f"q{i:02d}" for i in range(BOTS)]
        cluster.apply(strategy_config(), namespace=ns)
        cluster.apply(kill_switch(ks_name, "off", [ns]))
        cluster.apply([trading_bot(n, placement="external") for n in names], namespace=ns)

        def all_configured() -> dict[str, str] | None:
            items = json.loads(cluster.kubectl("get", "cm", "-n", ns, "-l",
                                               "tradewarden.io/bot,app.kubernetes.io/component=runtime-config",
                                               "-o", "json").stdout)["items"]
            hashes = {i["metadata"]["labels"]["tradewarden.io/bot"]: i["data"]["configHash"] for i in items}
            return hashes if len(hashes) == BOTS else None

        hashes = cluster.wait_for(all_configured, timeout=90, what="every bot's runtime ConfigMap")
        ks = json.loads(cluster.kubectl("get", "killswitch", ks_name, "-o", "json").stdout)
        generation = ks["metadata"]["generation"]
        runners = {n: RunnerStandIn(cluster, ns, n) for n in names}

        def renew_all() -> None:
            for name, runner in runners.items():
                runner.renew(applied_hash=hashes[name], equity=10000.0, pnl=12.5,
                             acks={ks_name: {"generation": generation, "mode": "off", "at": "2026-01-01T00:00:00Z"}})

        def renew_forever() -> None:
            while not stop.wait(RENEW_EVERY):
                renew_all()

        renew_all()
        renewer = threading.Thread(target=renew_forever, daemon=True)
        renewer.start()

        def settled() -> bool:
            bots = json.loads(cluster.kubectl("get", "tb", "-n", ns, "-o", "json").stdout)["items"]
            ks = json.loads(cluster.kubectl("get", "killswitch", ks_name, "-o", "json").stdout)
            running = [b for b in bots if condition(b, "Ready").get("status") == "True"]
            return len(running) == BOTS and condition(ks, "Acknowledged").get("status") == "True"

        cluster.wait_for(settled, timeout=90, what="every bot Ready and the switch acknowledged")
        # Settled: no operator write for a few seconds in a row.
        quiet_since = utc_stamp()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(3)
            recent = audit_writes(cluster, quiet_since, ns, names=(ks_name, FLEET_RBAC_NAME),
                                  instance=op.prefix)
            if not recent:
                break
            quiet_since = utc_stamp()

        window_start = utc_stamp()
        counter_before = operator_writes_metric(op)
        time.sleep(WINDOW_SECONDS)
        writes = audit_writes(cluster, window_start, ns, names=(ks_name, FLEET_RBAC_NAME), instance=op.prefix)
        counter_after = operator_writes_metric(op)
        assert op.alive(), op.log()[-3000:]
        # The API server is shared with other tests: a shared object another test deleted (a chart's
        # `helm uninstall`) is re-created by the operator, which is its job, not noise.
        excused = deleted_by_others(cluster, window_start, (FLEET_RBAC_NAME,))
        if excused:
            writes = [w for w in writes if not (w.verb in ("create", "patch") and w.name in excused)]
            counter_after = counter_before
        detail = "\n".join(f"{w.at} {w.verb} {w.resource}/{w.subresource} {w.namespace}/{w.name} {w.code}"
                           for w in writes)
        assert writes == [], f"{len(writes)} operator writes in {WINDOW_SECONDS:.0f} s of idling:\n{detail}"
        assert counter_after == counter_before
        # The heartbeats did reach the operator: every bot is still healthy by its own clock.
        bots = json.loads(cluster.kubectl("get", "tb", "-n", ns, "-o", "json").stdout)["items"]
        assert all(condition(b, "RunnerHealthy").get("status") == "True" for b in bots)
        assert not re.search(r"Traceback", op.log())
    finally:
        stop.set()
        if renewer is not None:
            renewer.join(10)
        op.stop()
        cluster.kubectl("delete", "killswitch", ks_name, "--ignore-not-found", check=False)
        op.delete_namespaces()
