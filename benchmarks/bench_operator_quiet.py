"""Benchmark: how many API writes does the operator make while a fleet of bots idles?

The claim (DESIGN.md, "quiet when nothing changes"): 100 idle bots whose runners heartbeat cause zero
writes over 5 minutes. This script measures it end to end against the local control plane:

1. starts the operator as a subprocess (watching only its own namespace prefix);
2. creates one StrategyConfig, one KillSwitch and N TradingBots, and times how long the fleet takes to
   settle (every runtime ConfigMap written, every bot Ready, the switch acknowledged);
3. plays every runner: renews each Lease every few seconds with a fresh heartbeat, the applied config
   hash, telemetry and the switch acknowledgement, as a runner pod would;
4. counts, in the API server's audit log, the operator's writes during the window, and prints a table
   with the operator's CPU time and memory.

Run: ``.venv/bin/python benchmarks/bench_operator_quiet.py`` (defaults: 100 bots, 300 s), or a short
pass with ``--bots 20 --window 60``. ``make bench`` runs it through pytest (marker ``benchmark``).
Documented in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import pytest  # noqa: E402

from support.kube import Cluster, install_crds  # noqa: E402
from support.operator import (  # noqa: E402
    OperatorProcess,
    RunnerStandIn,
    audit_writes,
    condition,
    kill_switch,
    strategy_config,
    trading_bot,
    utc_stamp,
)
from tradewarden.controller.builders import FLEET_RBAC_NAME  # noqa: E402


def local_cluster() -> Cluster:
    from cluster import localcluster

    state = localcluster.up(localcluster.DEFAULT_DIR)
    cluster = Cluster(kubeconfig=state.kubeconfig, owned=False,
                      audit_log=pathlib.Path(state.dir) / "logs" / "audit.log")
    install_crds(cluster)
    return cluster


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def counter(op: OperatorProcess, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in op.metrics().splitlines()
               if line.startswith(name + "{"))


def run(bots: int, window: float, renew_every: float) -> dict[str, object]:
    cluster = local_cluster()
    op = OperatorProcess(cluster, pathlib.Path(tempfile.mkdtemp(prefix="bench-operator-")))
    op.start()
    ks_name = f"{op.prefix}-bench"
    stop = threading.Event()
    renewals = 0
    try:
        ns = op.namespace("bench")
        names = [f"b{i:03d}" for i in range(bots)]
        started = time.monotonic()
        cluster.apply(strategy_config(), namespace=ns)
        cluster.apply(kill_switch(ks_name, "off", [ns]))
        cluster.apply([trading_bot(n, placement="external") for n in names], namespace=ns)

        def configs() -> dict[str, str] | None:
            items = json.loads(cluster.kubectl("get", "cm", "-n", ns, "-l",
                                               "tradewarden.io/bot,app.kubernetes.io/component=runtime-config",
                                               "-o", "json").stdout)["items"]
            found = {i["metadata"]["labels"]["tradewarden.io/bot"]: i["data"]["configHash"] for i in items}
            return found if len(found) == bots else None

        hashes = cluster.wait_for(configs, timeout=600, interval=1.0, what="every runtime ConfigMap")
        configured = time.monotonic() - started
        generation = json.loads(cluster.kubectl("get", "killswitch", ks_name, "-o", "json").stdout)["metadata"][
            "generation"]
        runners = {n: RunnerStandIn(cluster, ns, n) for n in names}

        def renew_all() -> None:
            nonlocal renewals
            for name, runner in runners.items():
                if stop.is_set():
                    return
                runner.renew(applied_hash=hashes[name], equity=10000.0, pnl=1.5,
                             acks={ks_name: {"generation": generation, "mode": "off", "at": "2026-01-01T00:00:00Z"}})
                renewals += 1

        def renew_forever() -> None:
            while not stop.is_set():
                began = time.monotonic()
                renew_all()
                stop.wait(max(0.0, renew_every - (time.monotonic() - began)))

        thread = threading.Thread(target=renew_forever, daemon=True)
        thread.start()

        def settled() -> bool:
            items = json.loads(cluster.kubectl("get", "tb", "-n", ns, "-o", "json").stdout)["items"]
            ks = json.loads(cluster.kubectl("get", "killswitch", ks_name, "-o", "json").stdout)
            ready = sum(condition(b, "Ready").get("status") == "True" for b in items)
            return ready == bots and condition(ks, "Acknowledged").get("status") == "True"

        cluster.wait_for(settled, timeout=600, interval=1.0, what="every bot Ready")
        ready = time.monotonic() - started
        quiet_since = utc_stamp()
        for _ in range(40):  # let the last writes of settling land (at most 2 minutes)
            time.sleep(3)
            if not audit_writes(cluster, quiet_since, ns, (ks_name, FLEET_RBAC_NAME), instance=op.prefix):
                break
            quiet_since = utc_stamp()

        assert op.proc is not None
        pid = op.proc.pid
        window_start, cpu_before, renewals_before = utc_stamp(), cpu_seconds(pid), renewals
        reconciles_before = counter(op, "tradewarden_operator_reconciles_total")
        writes_before = counter(op, "tradewarden_operator_api_writes_total")
        time.sleep(window)
        writes = audit_writes(cluster, window_start, ns, (ks_name, FLEET_RBAC_NAME), instance=op.prefix)
        result: dict[str, object] = {
            "bots": bots,
            "window_s": window,
            "configmaps_written_s": round(configured, 1),
            "all_ready_s": round(ready, 1),
            "lease_renewals_in_window": renewals - renewals_before,
            "operator_writes_audit": len(writes),
            "operator_writes_metric": counter(op, "tradewarden_operator_api_writes_total") - writes_before,
            "reconciles_in_window": counter(op, "tradewarden_operator_reconciles_total") - reconciles_before,
            "operator_cpu_s": round(cpu_seconds(pid) - cpu_before, 2),
            "operator_rss_mib": round(rss_mib(pid), 1),
            "writes_by_kind": dict(collections.Counter(f"{w.verb} {w.resource}/{w.subresource}".rstrip("/")
                                                       for w in writes)),
        }
        return result
    finally:
        stop.set()
        op.stop()
        cluster.kubectl("delete", "killswitch", ks_name, "--ignore-not-found", check=False)
        op.delete_namespaces()


def print_table(result: dict[str, object]) -> None:
    print()
    print("operator quiet benchmark")
    print("-" * 46)
    for key, value in result.items():
        print(f"{key:<30} {value}")
    print("-" * 46)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bots", type=int, default=100)
    parser.add_argument("--window", type=float, default=300.0, help="Seconds of idling measured.")
    parser.add_argument("--renew-every", type=float, default=10.0, help="Seconds between a runner's renewals.")
    args = parser.parse_args(argv)
    result = run(args.bots, args.window, args.renew_every)
    print_table(result)
    return 0 if result["operator_writes_audit"] == 0 else 1


@pytest.mark.benchmark
def test_operator_quiet_benchmark() -> None:
    result = run(int(os.environ.get("BENCH_BOTS", "100")), float(os.environ.get("BENCH_WINDOW", "300")), 10.0)
    print_table(result)
    assert result["operator_writes_audit"] == 0


if __name__ == "__main__":
    sys.exit(main())
