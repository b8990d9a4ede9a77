"""KillSwitches against real runner processes, with no operator running at all (invariant 3).

Each switch is scoped to the test's namespace, so tests never stop one another's bots. The runners
fold the switches themselves, refuse orders accordingly, and acknowledge through their Leases.
"""

from __future__ import annotations

import datetime as dt
import pathlib
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from support.builders import make_runtime
from support.kube import Cluster
from support.runner import BotEnv, wait
from tradewarden.emulator import Emulator

SYM = "BTC/USDT"


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    emu = Emulator(seed=11, bar_seconds=None, balances={"USDT": 100000})
    emu.start()
    yield emu
    emu.stop()


class Switches:
    """KillSwitches created by one test, deleted after it."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster, self.namespace, self.names = cluster, namespace, set()

    def set(self, name: str, mode: str, reason: str = "test", **selector: Any) -> str:
        full = f"{self.namespace}-{name}"[:63]
        selector.setdefault("namespaces", [self.namespace])
        self.cluster.apply({"apiVersion": "tradewarden.io/v1alpha1", "kind": "KillSwitch", "metadata": {"name": full},
                            "spec": {"mode": mode, "reason": reason, "selector": selector}})
        self.names.add(full)
        return full

    def patch(self, name: str, mode: str) -> None:
        self.cluster.kubectl("patch", "killswitch", f"{self.namespace}-{name}"[:63], "--type", "merge",
                             "-p", f'{{"spec":{{"mode":"{mode}"}}}}')

    def generation(self, full: str) -> int:
        return int(self.cluster.get_json("killswitch", full)["metadata"]["generation"])

    def cleanup(self) -> None:
        for name in self.names:
            self.cluster.kubectl("delete", "killswitch", name, "--ignore-not-found", check=False)


@pytest.fixture
def switches(cluster: Cluster, namespace: str) -> Iterator[Switches]:
    s = Switches(cluster, namespace)
    yield s
    s.cleanup()


def start_bot(cluster: Cluster, namespace: str, tmp_path: pathlib.Path, emu: Emulator, name: str,
              labels: dict[str, str], intents: list[dict[str, Any]] | None = None) -> BotEnv:
    env = BotEnv(cluster, namespace, name, tmp_path / name, labels=labels)
    env.write_runtime(lane_runtime(env, emu, intents or []))
    env.start()
    wait(lambda: (t := env.telemetry()) is not None and t.effective_mode == "paper", what=f"{name} running")
    return env


def lane_runtime(env: BotEnv, emu: Emulator, intents: list[dict[str, Any]]) -> Any:
    lane = {"enabled_until": dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30), "intents": intents}
    return make_runtime(env.namespace, env.name, api_url=emu.url, labels=env.bot.metadata.labels,
                        bot_uid=env.uid, mode="paper", manual_lane=lane)


def verdict(env: BotEnv, intent_id: str) -> str | None:
    rows = env.journal("SELECT verdict FROM intents WHERE id = ?", f"manual:{intent_id}")
    return rows[0][0] if rows else None


def acked(env: BotEnv, full: str, generation: int) -> bool:
    ack = env.acks().get(full)
    return bool(ack) and int(ack["generation"]) >= generation


BUY = {"symbol": SYM, "side": "buy", "amount": 0.02}
SELL = {"symbol": SYM, "side": "sell", "amount": 0.01, "reduceOnly": True}


@pytest.fixture
def bots(cluster: Cluster, namespace: str, tmp_path: pathlib.Path, emulator: Emulator) -> Iterator[list[BotEnv]]:
    made: list[BotEnv] = []
    yield made
    for env in made:
        env.close()


def test_close_only_blocks_entries_and_lets_exits_run(cluster: Cluster, namespace: str, tmp_path: pathlib.Path,
                                                      emulator: Emulator, switches: Switches,
                                                      bots: list[BotEnv]) -> None:
    env = start_bot(cluster, namespace, tmp_path, emulator, "a", {"team": "alpha"}, [{"id": "open", **BUY}])
    bots.append(env)
    wait(lambda: verdict(env, "open") == "executed", what="the position opened")
    full = switches.set("brake", "close_only")
    wait(lambda: acked(env, full, switches.generation(full)), timeout=10, what="the ack")
    assert env.telemetry().kill_mode == "close_only"  # type: ignore[union-attr]
    env.write_runtime(lane_runtime(env, emulator, [{"id": "open", **BUY}, {"id": "more", **BUY},
                                                    {"id": "trim", **SELL}]))
    wait(lambda: verdict(env, "more") is not None and verdict(env, "trim") is not None, what="intents judged")
    assert verdict(env, "more") == "kill_blocked"
    assert verdict(env, "trim") == "executed"


def test_halt_all_blocks_exits_too(cluster: Cluster, namespace: str, tmp_path: pathlib.Path, emulator: Emulator,
                                   switches: Switches, bots: list[BotEnv]) -> None:
    env = start_bot(cluster, namespace, tmp_path, emulator, "a", {}, [{"id": "open", **BUY}])
    bots.append(env)
    wait(lambda: verdict(env, "open") == "executed", what="the position opened")
    full = switches.set("halt", "halt_all")
    wait(lambda: acked(env, full, switches.generation(full)), timeout=10, what="the ack")
    env.write_runtime(lane_runtime(env, emulator, [{"id": "open", **BUY}, {"id": "trim", **SELL}]))
    wait(lambda: verdict(env, "trim") is not None, what="the exit judged")
    assert verdict(env, "trim") == "kill_blocked"


def test_flatten_ends_flat_then_holds_close_only(cluster: Cluster, namespace: str, tmp_path: pathlib.Path,
                                                 emulator: Emulator, switches: Switches,
                                                 bots: list[BotEnv]) -> None:
    env = start_bot(cluster, namespace, tmp_path, emulator, "a", {}, [{"id": "open", **BUY}])
    bots.append(env)
    wait(lambda: (t := env.telemetry()) is not None and t.open_positions == 1, what="an open position")
    switches.set("flat", "flatten")
    wait(lambda: (t := env.telemetry()) is not None and t.flat and t.open_positions == 0, timeout=20,
         what="the runner to report flat")
    rows = env.journal("SELECT side, reduce_only, status FROM orders WHERE intent_id LIKE 'flatten:%'")
    assert rows
    assert all(r == ("sell", 1, "closed") for r in rows)
    env.write_runtime(lane_runtime(env, emulator, [{"id": "open", **BUY}, {"id": "again", **BUY}]))
    wait(lambda: verdict(env, "again") is not None, what="the new entry judged")
    assert verdict(env, "again") == "kill_blocked"


def test_scope_and_strongest_of_two_switches(cluster: Cluster, namespace: str, tmp_path: pathlib.Path,
                                            emulator: Emulator, switches: Switches, bots: list[BotEnv]) -> None:
    alpha = start_bot(cluster, namespace, tmp_path, emulator, "alpha", {"team": "alpha"})
    beta = start_bot(cluster, namespace, tmp_path, emulator, "beta", {"team": "beta"})
    bots += [alpha, beta]
    team = switches.set("team-alpha", "close_only", botSelector={"matchLabels": {"team": "alpha"}})
    wait(lambda: acked(alpha, team, switches.generation(team)), timeout=10, what="alpha's ack")
    time.sleep(1.0)
    assert alpha.telemetry().kill_mode == "close_only"  # type: ignore[union-attr]
    assert beta.telemetry().kill_mode == "off"  # type: ignore[union-attr]
    assert team not in beta.acks()
    wide = switches.set("all-halt", "halt_all")
    wait(lambda: acked(alpha, wide, switches.generation(wide)) and acked(beta, wide, switches.generation(wide)),
         timeout=10, what="both acks")
    assert alpha.telemetry().kill_mode == "halt_all"  # type: ignore[union-attr]
    switches.patch("all-halt", "off")
    wait(lambda: (t := alpha.telemetry()) is not None and t.kill_mode == "close_only", timeout=10,
         what="alpha back to the team switch's close_only")
    wait(lambda: (t := beta.telemetry()) is not None and t.kill_mode == "off", timeout=10, what="beta released")


def test_on_off_on_within_100ms_ends_engaged(cluster: Cluster, namespace: str, tmp_path: pathlib.Path,
                                            emulator: Emulator, switches: Switches, bots: list[BotEnv]) -> None:
    env = start_bot(cluster, namespace, tmp_path, emulator, "a", {})
    bots.append(env)
    full = switches.set("flap", "off")
    name = full
    before = switches.generation(full)
    for mode in ("close_only", "off", "close_only"):
        subprocess.run(["kubectl", "patch", "killswitch", name, "--type", "merge", "-p",
                        f'{{"spec":{{"mode":"{mode}"}}}}'], env=cluster.env, check=True, capture_output=True)
    # Order and outcome, not the machine's speed: three spec changes happened, and the runner ends on the last.
    final = switches.generation(full)
    assert final == before + 3
    wait(lambda: acked(env, full, final), timeout=10, what="the ack of the last generation")
    time.sleep(1.0)
    assert env.telemetry().kill_mode == "close_only"  # type: ignore[union-attr]
    assert env.acks()[full]["mode"] == "close_only"


def test_flapping_faster_than_kubectl(cluster: Cluster, namespace: str, tmp_path: pathlib.Path,
                                      emulator: Emulator, switches: Switches, bots: list[BotEnv]) -> None:
    """on -> off -> on back to back from one client (no process start-up between the writes), so the
    runner's watch sees them as close together as the API server delivers them. How close that is depends
    on the machine: the test asserts the order and the outcome, never the speed."""
    from kubernetes import client, config

    env = start_bot(cluster, namespace, tmp_path, emulator, "a", {})
    bots.append(env)
    full = switches.set("flap2", "off")
    api = client.CustomObjectsApi(config.new_client_from_config(config_file=cluster.kubeconfig))
    before = switches.generation(full)
    for mode in ("halt_all", "off", "halt_all"):
        api.patch_cluster_custom_object("tradewarden.io", "v1alpha1", "killswitches", full, {"spec": {"mode": mode}})
    final = switches.generation(full)
    assert final == before + 3
    wait(lambda: acked(env, full, final), timeout=10, what="the ack of the last generation")
    time.sleep(1.0)
    assert env.telemetry().kill_mode == "halt_all"  # type: ignore[union-attr]
