"""The kill switch end to end with the operator: both paths, the operator down, and its status after.

The operator (a subprocess watching only its own namespaces) builds each bot's RBAC, ConfigMap and
Lease; real runners run with the ServiceAccount tokens it made. Then the operator is stopped, the
switch patched: the runners still halt, through their own watch. The operator comes back and its
KillSwitch and bot status are right.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from support.kube import Cluster
from support.operator import OperatorProcess, condition, kill_switch, strategy_config, trading_bot
from support.runner import BotEnv, wait
from tradewarden.emulator import Emulator


@pytest.fixture
def operator(cluster: Cluster, tmp_path: pathlib.Path) -> Iterator[OperatorProcess]:
    op = OperatorProcess(cluster, tmp_path / "operator")
    op.start()
    yield op
    op.stop()
    op.delete_namespaces()


def test_runners_halt_while_the_operator_is_down_and_status_catches_up(
        cluster: Cluster, operator: OperatorProcess, tmp_path: pathlib.Path) -> None:
    ns = operator.namespace("ks")
    switch = f"{ns}-brake"[:63]
    with Emulator(seed=5, bar_seconds=None) as emu:
        cluster.apply(strategy_config("momentum"), namespace=ns)
        for name, team in (("alpha", "a"), ("beta", "b")):
            cluster.apply(trading_bot(name, labels={"team": team}, mode="paper", placement="external",
                                      exchange={"id": "binance", "sandbox": False, "apiUrl": emu.url}),
                          namespace=ns)
        cluster.apply(kill_switch(switch, "off", namespaces=[ns]))
        envs = [BotEnv(cluster, ns, name, tmp_path / name, operator_managed=True) for name in ("alpha", "beta")]
        try:
            runners = [env.start() for env in envs]

            def ready(env: BotEnv) -> dict[str, Any]:
                cond = condition(cluster.get_json("tb", env.name, "-n", ns), "Ready")
                assert cond.get("status") == "True", cond  # a timeout shows the last Ready condition
                return cond

            for env, runner in zip(envs, runners, strict=True):
                wait(lambda env=env: ready(env), timeout=120, what=f"{env.name} Ready", runner=runner)
            operator.stop()
            assert not operator.alive()
            cluster.kubectl("patch", "killswitch", switch, "--type", "merge", "-p",
                            '{"spec":{"mode":"halt_all","reason":"operator down drill"}}')
            generation = int(cluster.get_json("killswitch", switch)["metadata"]["generation"])
            for env in envs:
                wait(lambda env=env: int(env.acks().get(switch, {}).get("generation", 0)) >= generation,
                     timeout=10, what=f"{env.name} acknowledging with the operator down")
                wait(lambda env=env: (t := env.telemetry()) is not None and t.kill_mode == "halt_all", timeout=10,
                     what=f"{env.name} halted")
            # Nobody judged the new generation meanwhile: the operator is down.
            stale = cluster.get_json("killswitch", switch).get("status") or {}
            assert stale.get("observedGeneration", 0) < generation
            operator.start()

            def settled() -> bool:
                ks = cluster.get_json("killswitch", switch)
                st = ks.get("status") or {}
                return (st.get("matched") == 2 and st.get("acknowledged") == 2 and st.get("pendingBots") == []
                        and condition(ks, "Engaged").get("status") == "True"
                        and condition(ks, "Acknowledged").get("status") == "True")

            wait(settled, timeout=60, what="the KillSwitch status after the operator's restart")
            for env in envs:
                bot = cluster.get_json("tb", env.name, "-n", ns)
                assert bot["status"]["killMode"] == "halt_all"
                assert condition(bot, "KillSwitchEngaged")["status"] == "True"
                cm = cluster.get_json("configmap", f"{env.name}-runtime", "-n", ns)
                assert '"killMode": "halt_all"' in cm["data"]["runtime.json"]
            events = cluster.kubectl("get", "events", "-n", ns, "-o", "jsonpath={.items[*].reason}").stdout
            assert events, "the operator recorded no Event for the transitions"
        finally:
            for env in envs:
                env.close()
            cluster.kubectl("delete", "killswitch", switch, "--ignore-not-found", check=False)
