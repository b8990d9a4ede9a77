"""The runner as a real process: its own ServiceAccount token, the real API server, the exchange emulator.

Each test writes runtime configs into the bot's ConfigMap as the operator would, and reads what the
runner reports through its Lease, its journal and /metrics.
"""

from __future__ import annotations

import datetime as dt
import pathlib
import signal
import time
import urllib.request
from collections.abc import Iterator

import pytest

from support.builders import make_runtime
from support.kube import Cluster
from support.runner import BotEnv, secret_manifest, wait
from tradewarden.api.runtime import compute_config_hash
from tradewarden.emulator import Emulator

SYM = "BTC/USDT"
CANARY_KEY = "CANARYKEY0123456789abcdef"
CANARY_SECRET = "CANARY-SECRET-1f2e3d4c5b6a"


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    emu = Emulator(seed=7, bar_seconds=None, api_key=CANARY_KEY, secret=CANARY_SECRET,
                   balances={"USDT": 100000})
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture
def env(cluster: Cluster, namespace: str, tmp_path: pathlib.Path) -> Iterator[BotEnv]:
    bot = BotEnv(cluster, namespace, "bot", tmp_path / "bot", labels={"team": "alpha"})
    yield bot
    bot.close()


def runtime(env: BotEnv, emu: Emulator, **kw: object) -> object:
    return make_runtime(env.namespace, env.name, api_url=emu.url, labels={"team": "alpha"},
                        bot_uid=env.uid, **kw)


def http_get(port: int, path: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}{path}", timeout=3) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, ""


def test_config_patch_applies_in_flight_without_restart(env: BotEnv, emulator: Emulator) -> None:
    first = runtime(env, emulator, mode="signals")
    env.write_runtime(first)  # type: ignore[arg-type]
    runner = env.start()
    wait(lambda: env.applied_hash() == first.config_hash, what="the first config applied")  # type: ignore[attr-defined]
    pid = runner.proc.pid
    second = runtime(env, emulator, mode="signals", strategy="range", risk={"entryOrdersPerMinute": 5})
    env.write_runtime(second)  # type: ignore[arg-type]
    wait(lambda: env.applied_hash() == second.config_hash, what="the patched config applied")  # type: ignore[attr-defined]
    assert runner.alive()
    assert runner.proc.pid == pid
    assert any("strategy momentum -> range" in line.get("msg", "") for line in runner.lines())
    status, body = http_get(runner.metrics_port, "/metrics")
    assert status == 200
    assert 'tradewarden_runner_config_reloads_total{bot="bot"' in body
    assert http_get(runner.metrics_port, "/healthz")[0] == 200


def test_invalid_config_is_refused_and_the_last_good_kept(env: BotEnv, emulator: Emulator) -> None:
    good = runtime(env, emulator, mode="signals")
    env.write_runtime(good)  # type: ignore[arg-type]
    runner = env.start()
    wait(lambda: env.applied_hash() == good.config_hash, what="the good config applied")  # type: ignore[attr-defined]
    forged = good.model_copy(update={"config_hash": "sha256:" + "f" * 64})  # type: ignore[attr-defined]
    env.write_runtime(forged)
    wait(lambda: "configHash" in env.rejected(), what="the forged config refused")
    env.write_raw_runtime('{"schemaVersion": 1, "namespace": "x"')
    wait(lambda: "runtime.json" in env.rejected(), what="the broken config refused")
    time.sleep(1.5)
    assert env.applied_hash() == good.config_hash  # type: ignore[attr-defined]
    assert runner.alive()
    _, body = http_get(runner.metrics_port, "/metrics")
    assert 'result="rejected"' in body


def test_signals_mode_sends_no_order_to_the_venue(env: BotEnv, emulator: Emulator) -> None:
    env.write_runtime(runtime(env, emulator, mode="signals", params={"fast": 3, "slow": 6, "atr_period": 3}))  # type: ignore[arg-type]
    runner = env.start()
    wait(lambda: env.telemetry() is not None, what="a heartbeat")
    for _ in range(40):
        emulator.advance(5)
        time.sleep(0.1)
    wait(lambda: env.journal("SELECT COUNT(*) FROM signals")[0][0] > 0, timeout=20, what="signals journaled")
    assert env.journal("SELECT COUNT(*) FROM orders")[0][0] == 0
    assert emulator.request_count("POST", "/api/v3/order") == 0
    assert runner.alive()


def test_manual_lane_runs_before_expiry_and_refuses_after(env: BotEnv, emulator: Emulator) -> None:
    now = dt.datetime.now(dt.UTC)
    lane = {"enabled_until": now + dt.timedelta(seconds=6),
            "intents": [{"id": "open-1", "symbol": SYM, "side": "buy", "amount": 0.01}]}
    env.write_runtime(runtime(env, emulator, mode="paper", manual_lane=lane))  # type: ignore[arg-type]
    env.start()
    wait(lambda: env.journal("SELECT verdict FROM intents WHERE id = 'manual:open-1'") == [("executed",)],
         what="the manual intent executed")
    wait(lambda: dt.datetime.now(dt.UTC) > now + dt.timedelta(seconds=7), timeout=10)
    late = {**lane, "intents": [*lane["intents"], {"id": "open-2", "symbol": SYM, "side": "buy", "amount": 0.01}]}
    env.write_runtime(runtime(env, emulator, mode="paper", manual_lane=late))  # type: ignore[arg-type]
    wait(lambda: env.journal("SELECT verdict FROM intents WHERE id = 'manual:open-2'")
         == [("manual_blocked_disabled",)], what="the expired lane refusing")
    assert env.journal("SELECT COUNT(*) FROM orders")[0][0] == 1


def _live(env: BotEnv, emu: Emulator, cluster: Cluster, **kw: object) -> object:
    cluster.apply(secret_manifest("venue-keys", {"apiKey": CANARY_KEY, "secret": CANARY_SECRET}),
                  namespace=env.namespace)
    return runtime(env, emu, mode="live", live_capital=5000.0,
                   credentials={"name": "venue-keys"}, **kw)


def test_restart_in_the_middle_of_an_order_makes_no_duplicate(env: BotEnv, emulator: Emulator,
                                                              cluster: Cluster) -> None:
    # The runner's Role must allow reading the credentials Secret: rebuild RBAC for a bot that names one.
    cluster.apply({"apiVersion": "tradewarden.io/v1alpha1", "kind": "TradingBot", "metadata": {"name": env.name},
                   "spec": {"strategyConfigRef": "unused", "mode": "paper",
                            "exchange": {"id": "binance", "credentialsSecretRef": {"name": "venue-keys"}}}},
                  namespace=env.namespace)
    from tradewarden.api.tradingbot import TradingBot
    from tradewarden.controller import builders

    env.bot = TradingBot.model_validate(cluster.get_json("tb", env.name, "-n", env.namespace))
    cluster.apply(builders.build_role(env.bot))
    # The venue executes the order at once but answers only after 8 s: the runner is killed while it waits.
    emulator.inject_fault("stall", count=1, path="/api/v3/order", method="POST", delay=8.0)
    now = dt.datetime.now(dt.UTC)
    lane = {"enabled_until": now + dt.timedelta(minutes=10),
            "intents": [{"id": "buy-once", "symbol": SYM, "side": "buy", "amount": 0.01}]}
    cfg = _live(env, emulator, cluster, manual_lane=lane)
    env.write_runtime(cfg)  # type: ignore[arg-type]
    first = env.start()
    wait(lambda: env.journal("SELECT status FROM orders") == [("pending",)], timeout=60,
         what="the order journaled as pending", runner=first)
    wait(lambda: emulator.request_count("POST", "/api/v3/order") >= 1, what="the order sent")
    first.stop(signal.SIGKILL)
    assert not first.alive()
    second = env.start()
    wait(lambda: env.journal("SELECT status FROM orders") == [("closed",)], timeout=40,
         what="the pending order settled after the restart")
    orders = emulator.state()["orders"]
    mine = [o for o in orders if o.get("clientOrderId", "").startswith("tw")]
    assert len(mine) == 1, orders
    # The runner says so (its log may land a moment after the journal).
    wait(lambda: any("placed before the restart" in line.get("msg", "") for line in second.lines()),
         what="the runner saying the order was placed before the restart")
    assert not any("was never placed" in line.get("msg", "") for line in second.lines())
    assert env.journal("SELECT COUNT(*) FROM fills")[0][0] == 1
    # Invariant 5: the canary key and secret appear in no log line of either run.
    for runner in (first, second):
        assert CANARY_SECRET not in runner.output()
        assert CANARY_KEY not in runner.output()


@pytest.mark.parametrize("loss", ["refused", "silent"])
def test_entries_stop_within_grace_when_the_api_server_is_unreachable(env: BotEnv, emulator: Emulator,
                                                                     loss: str) -> None:
    """Refused: every request fails at once. Silent: connections stay open and nothing answers (a dropped
    route, a stalled API server), so only a deadline on each Lease renewal ends the wait."""
    grace = 5
    cfg = runtime(env, emulator, mode="paper", heartbeat_grace_seconds=grace)
    env.write_runtime(cfg)  # type: ignore[arg-type]
    runner = env.start(via_proxy=True)
    wait(lambda: (t := env.telemetry()) is not None and t.api_reachable, what="a heartbeat")
    assert env.proxy is not None
    cut_at = time.monotonic()
    if loss == "refused":
        env.proxy.cut()
    else:
        env.proxy.silence()

    def stopped() -> bool:
        return any("stopping new entries on my own" in line.get("msg", "") for line in runner.lines())

    wait(stopped, timeout=grace + 5, what="entries stopped on the runner's own", runner=runner)
    took = time.monotonic() - cut_at
    assert took <= grace + 5
    _, body = http_get(runner.metrics_port, "/metrics")
    assert 'tradewarden_runner_kill_mode{bot="bot",mode="close_only",namespace=' in body.replace(
        f'namespace="{env.namespace}"', "namespace=")
    env.proxy.restore()
    wait(lambda: (t := env.telemetry()) is not None and t.api_reachable and t.kill_mode == "off", timeout=20,
         what="entries allowed again once the API server answers")


def test_config_hash_in_the_lease_matches_the_runtime(env: BotEnv, emulator: Emulator) -> None:
    cfg = runtime(env, emulator, mode="signals")
    env.write_runtime(cfg)  # type: ignore[arg-type]
    env.start()
    wait(lambda: env.applied_hash() == cfg.config_hash, what="applied")  # type: ignore[attr-defined]
    assert cfg.config_hash == compute_config_hash(cfg.strategy, cfg.risk, cfg.exchange)  # type: ignore[attr-defined]
    lease = env.lease()
    assert lease["spec"]["holderIdentity"] == f"{env.namespace}/{env.name}"
    assert lease["spec"]["renewTime"]
