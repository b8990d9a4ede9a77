"""The lost-runner trigger engages a KillSwitch by itself (the fleet-drawdown trigger is covered in
test_operator_lifecycle.py); it never clears it."""

from __future__ import annotations

import pathlib
import time
from collections.abc import Iterator

import pytest

from support.kube import Cluster
from support.operator import OperatorProcess, RunnerStandIn, condition, kill_switch, strategy_config, trading_bot


@pytest.fixture
def operator(cluster: Cluster, tmp_path: pathlib.Path) -> Iterator[OperatorProcess]:
    op = OperatorProcess(cluster, tmp_path / "operator")
    op.start()
    yield op
    op.stop()
    op.delete_namespaces()


def test_more_than_n_silent_runners_engage_the_switch(cluster: Cluster, operator: OperatorProcess) -> None:
    ns = operator.namespace("lost")
    switch = f"{ns}-lost"[:63]
    cluster.apply(strategy_config("momentum"), namespace=ns)
    names = ["a", "b", "c"]
    for name in names:
        cluster.apply(trading_bot(name, placement="external", runner={"heartbeatGraceSeconds": 5}), namespace=ns)
    cluster.apply(kill_switch(switch, "off", [ns], trigger={"maxRunnersWithoutHeartbeat": 1, "mode": "close_only"}))
    try:
        cluster.wait_for(lambda: all(cluster.kubectl("get", "lease", f"{n}-runner", "-n", ns, check=False)
                                     .returncode == 0 for n in names), timeout=60, what="the Leases")
        stand_ins = {n: RunnerStandIn(cluster, ns, n) for n in names}
        for s in stand_ins.values():
            s.renew()
        cluster.wait_for(lambda: all(condition(cluster.get_json("tb", n, "-n", ns), "RunnerHealthy")
                                     .get("status") == "True" for n in names), timeout=30, what="healthy runners")
        time.sleep(2)
        assert cluster.get_json("killswitch", switch)["spec"]["mode"] == "off"
        # One runner goes silent: one is allowed, nothing happens.
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            stand_ins["b"].renew()
            stand_ins["c"].renew()
            time.sleep(1)
        assert cluster.get_json("killswitch", switch)["spec"]["mode"] == "off"
        # A second one goes silent: more than one, the switch engages by itself.
        deadline = time.monotonic() + 30
        engaged = None
        while time.monotonic() < deadline:
            stand_ins["c"].renew()
            ks = cluster.get_json("killswitch", switch)
            if ks["spec"]["mode"] == "close_only" and (ks.get("status") or {}).get("triggeredBy"):
                engaged = ks
                break
            time.sleep(1)
        assert engaged is not None, "the lost-runner trigger did not engage the switch"
        assert "maxRunnersWithoutHeartbeat" in engaged["status"]["triggeredBy"]
        assert condition(engaged, "Engaged")["status"] == "True"
        reasons = cluster.kubectl("get", "events", "-A", "--field-selector", f"involvedObject.name={switch}",
                                  "-o", "jsonpath={.items[*].type}").stdout
        assert "Warning" in reasons
        # Every runner renews again: the switch stays engaged (it never clears itself).
        for _ in range(5):
            for s in stand_ins.values():
                s.renew()
            time.sleep(1)
        assert cluster.get_json("killswitch", switch)["spec"]["mode"] == "close_only"
    finally:
        cluster.kubectl("delete", "killswitch", switch, "--ignore-not-found", check=False)
