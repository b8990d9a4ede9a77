"""The operator against the real API server: create, hot config, invalid edits, heartbeats, delete, kill switch.

One operator subprocess serves the whole module (it watches only this module's namespaces); each test
has its own namespace. The runner's side is played by the test through the real API server, with the
runner ServiceAccount's identity (``RunnerStandIn``), as a runner pod would.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from support.kube import Cluster
from support.operator import (
    OperatorProcess,
    RunnerStandIn,
    condition,
    get,
    kill_switch,
    strategy_config,
    trading_bot,
    until,
)
from tradewarden.api.runtime import RuntimeConfig
from tradewarden.controller.builders import ANN_RUNNER_HASH, FLEET_RBAC_NAME

pytestmark = pytest.mark.cluster


@pytest.fixture
def ns(operator: OperatorProcess, request: pytest.FixtureRequest) -> str:
    return operator.namespace(re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[5:35])


def runtime_of(cluster: Cluster, ns: str, bot: str) -> RuntimeConfig | None:
    cm = get(cluster, "configmap", f"{bot}-runtime", "-n", ns)
    if cm is None:
        return None
    runtime = RuntimeConfig.model_validate_json(cm["data"]["runtime.json"])
    assert runtime.config_hash == cm["data"]["configHash"]
    return runtime


def create_bot(cluster: Cluster, op: OperatorProcess, ns: str, name: str = "bot", **spec: Any) -> dict[str, Any]:
    cluster.apply(trading_bot(name, **spec), namespace=ns)
    bot = until(op, lambda: (b := get(cluster, "tb", name, "-n", ns)) and b.get("status", {}).get("configHash")
                and b, f"TradingBot {ns}/{name} to get a status with a config hash")
    assert isinstance(bot, dict)
    return bot


def events(cluster: Cluster, ns: str, name: str) -> list[dict[str, Any]]:
    out = get(cluster, "events", "-n", ns, "--field-selector", f"involvedObject.name={name}") or {"items": []}
    return list(out["items"])


# ------------------------------------------------------------------------------------------ tests


def test_create_builds_exactly_the_owned_objects(cluster: Cluster, operator: OperatorProcess, ns: str) -> None:
    cluster.apply(strategy_config(), namespace=ns)
    bot = create_bot(cluster, operator, ns, "alpha", exchange={
        "id": "binance", "credentialsSecretRef": {"name": "alpha-keys"}})
    uid = bot["metadata"]["uid"]
    status = bot["status"]
    # No runner yet. The operator's default image (tradewarden/runner:test) is not on the node, so once
    # the kubelet has tried its pod the bot says that instead of "no heartbeat" (RunnerHealthy's pod reasons);
    # on a busy node the pod may not even be scheduled yet, and the bot says that.
    healthy = condition(bot, "RunnerHealthy")
    if status["phase"] == "Degraded":
        assert healthy["reason"] in ("ImagePullFailed", "Unschedulable"), healthy
        assert ("tradewarden/runner:test" if healthy["reason"] == "ImagePullFailed" else "alpha-runner-0") \
            in healthy["message"]
    else:
        assert status["phase"] == "Pending"
        assert healthy["reason"] == "NoHeartbeat"
    assert healthy["status"] == "False"
    assert status["effectiveMode"] == "signals"
    assert status["strategy"] == "momentum"
    assert condition(bot, "ConfigValid")["status"] == "True"
    assert {c["type"] for c in status["conditions"]} == {
        "Ready", "ConfigValid", "ConfigApplied", "RunnerHealthy", "ReplayVerified", "ConsensusApproved",
        "Promoted", "KillSwitchEngaged", "Intact"}
    assert condition(bot, "Intact")["status"] == "True"

    runtime = until(operator, lambda: runtime_of(cluster, ns, "alpha"), "the runtime ConfigMap")
    assert runtime.config_hash == status["configHash"]
    assert runtime.strategy.params == {"fast": 10, "slow": 30, "atr_period": 14, "atr_mult": 2.0}
    assert runtime.effective_mode.value == "signals"
    assert runtime.bot_uid == uid
    # The Secret is only ever named, never read or copied.
    assert runtime.exchange.credentials_secret_ref is not None
    assert runtime.exchange.credentials_secret_ref.name == "alpha-keys"

    for kind, name in (("configmap", "alpha-runtime"), ("configmap", "alpha-evidence"),
                       ("serviceaccount", "alpha-runner"), ("role", "alpha-runner"),
                       ("rolebinding", "alpha-runner"), ("lease", "alpha-runner"), ("statefulset", "alpha-runner")):
        obj = until(operator, lambda k=kind, n=name: get(cluster, k, n, "-n", ns), f"{kind} {name}")
        refs = obj["metadata"]["ownerReferences"]
        assert refs == [{"apiVersion": "tradewarden.io/v1alpha1", "kind": "TradingBot", "name": "alpha",
                         "uid": uid, "controller": True, "blockOwnerDeletion": True}], kind
        assert obj["metadata"]["labels"]["tradewarden.io/bot"] == "alpha"
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "tradewarden"
        # Exactly one of each (two ConfigMaps: the runtime config and the evidence the runner exports
        # into): nothing else carries this bot's label.
        listed = get(cluster, kind, "-n", ns, "-l", "tradewarden.io/bot=alpha")
        assert listed is not None
        assert len(listed["items"]) == (2 if kind == "configmap" else 1), kind

    sts = get(cluster, "statefulset", "alpha-runner", "-n", ns)
    assert sts is not None
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["tradewarden", "runner", "--bot", f"{ns}/alpha", "--journal",
                                    "/var/lib/tradewarden", "--gate-key", operator.gate_key_ref]
    assert container["image"] == "tradewarden/runner:test"
    assert sts["spec"]["template"]["spec"]["serviceAccountName"] == "alpha-runner"
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"

    crb = until(operator, lambda: (c := get(cluster, "clusterrolebinding", FLEET_RBAC_NAME))
                and {"kind": "ServiceAccount", "name": "alpha-runner", "namespace": ns} in c.get("subjects", [])
                and c, "the runner in the shared ClusterRoleBinding")
    assert crb["roleRef"]["name"] == FLEET_RBAC_NAME

    sc = until(operator, lambda: (s := get(cluster, "strategyconfig", "momentum", "-n", ns))
               and s.get("status", {}).get("bots") == 1 and s, "the StrategyConfig to count its bot")
    assert sc["status"]["botNames"] == ["alpha"]
    assert sc["status"]["strategy"]["version"]
    assert condition(sc, "Valid")["reason"] == "Valid"


def test_hot_config_changes_never_roll_the_pod_but_an_image_change_does(
        cluster: Cluster, operator: OperatorProcess, ns: str) -> None:
    cluster.apply(strategy_config(), namespace=ns)
    create_bot(cluster, operator, ns, "hot")
    first = until(operator, lambda: runtime_of(cluster, ns, "hot"), "the runtime ConfigMap")
    sts = until(operator, lambda: get(cluster, "statefulset", "hot-runner", "-n", ns), "the StatefulSet")
    template, generation = sts["spec"]["template"], sts["metadata"]["generation"]

    def changed(check: Callable[[RuntimeConfig], bool], what: str) -> RuntimeConfig:
        runtime: RuntimeConfig = until(operator, lambda: (r := runtime_of(cluster, ns, "hot")) and check(r) and r, what)
        now = get(cluster, "statefulset", "hot-runner", "-n", ns)
        assert now is not None
        assert now["metadata"]["generation"] == generation, f"{what} rolled the runner pod"
        assert now["spec"]["template"] == template
        return runtime

    cluster.apply(strategy_config(params={"fast": 12, "slow": 30}), namespace=ns)
    second = changed(lambda r: r.strategy.params["fast"] == 12, "a StrategyConfig change")
    assert second.config_hash != first.config_hash
    cluster.kubectl("patch", "tb", "hot", "-n", ns, "--type=merge", "-p", '{"spec":{"risk":{"maxOpenPositions":1}}}')
    third = changed(lambda r: r.risk.max_open_positions == 1, "a risk change")
    assert third.config_hash != second.config_hash
    cluster.kubectl("patch", "tb", "hot", "-n", ns, "--type=merge", "-p", '{"spec":{"mode":"paper"}}')
    fourth = changed(lambda r: r.effective_mode.value == "paper", "a mode change")
    assert fourth.config_hash == third.config_hash  # mode is not part of the evidence-bound hash

    cluster.kubectl("patch", "tb", "hot", "-n", ns, "--type=merge", "-p",
                    '{"spec":{"runner":{"image":"tradewarden/runner:next"}}}')
    rolled = until(operator, lambda: (s := get(cluster, "statefulset", "hot-runner", "-n", ns))
                   and s["spec"]["template"]["spec"]["containers"][0]["image"] == "tradewarden/runner:next" and s,
                   "the image change to reach the pod template")
    assert rolled["spec"]["template"]["metadata"]["annotations"][ANN_RUNNER_HASH] != \
        template["metadata"]["annotations"][ANN_RUNNER_HASH]
    cluster.kubectl("patch", "tb", "hot", "-n", ns, "--type=merge", "-p",
                    '{"spec":{"runner":{"resources":{"limits":{"memory":"1Gi"}}}}}')
    until(operator, lambda: (s := get(cluster, "statefulset", "hot-runner", "-n", ns))
          and s["spec"]["template"]["spec"]["containers"][0]["resources"].get("limits") == {"memory": "1Gi"},
          "the resources change to reach the pod template")


def test_invalid_edit_is_refused_and_the_bot_keeps_the_last_good_config(
        cluster: Cluster, operator: OperatorProcess, ns: str) -> None:
    cluster.apply(strategy_config(), namespace=ns)
    create_bot(cluster, operator, ns, "steady")
    good = until(operator, lambda: runtime_of(cluster, ns, "steady"), "the runtime ConfigMap")

    cluster.apply(strategy_config(params={"fast": 30, "slow": 20}), namespace=ns)
    sc = until(operator, lambda: (s := get(cluster, "strategyconfig", "momentum", "-n", ns))
               and condition(s, "Valid").get("status") == "False" and s, "Valid=False on the StrategyConfig")
    valid = condition(sc, "Valid")
    assert valid["reason"] == "InvalidParams"
    assert "params.fast: must be < slow (got 30 >= 20)" in valid["message"]
    assert sc["status"]["validSpec"]["params"]["fast"] == 10  # the last valid spec is kept

    bot = until(operator, lambda: (b := get(cluster, "tb", "steady", "-n", ns))
                and condition(b, "ConfigValid").get("status") == "False" and b, "ConfigValid=False on the bot")
    assert condition(bot, "ConfigValid")["reason"] == "StrategyConfigInvalid"
    assert "params.fast" in condition(bot, "ConfigValid")["message"]
    # The runner's health comes before the invalid edit in the phase chain: no heartbeat yet (Pending), or,
    # once the node has tried this test's unpullable image, a runner pod that says why (Degraded).
    healthy = condition(bot, "RunnerHealthy")
    assert healthy["status"] != "True"
    assert condition(bot, "Ready")["reason"] == healthy["reason"]
    assert bot["status"]["phase"] == ("Pending" if healthy["reason"] == "NoHeartbeat" else "Degraded")
    time.sleep(1.0)
    kept = runtime_of(cluster, ns, "steady")
    assert kept is not None
    assert kept.config_hash == good.config_hash
    assert kept.strategy.params["fast"] == 10
    reasons = {e["reason"] for e in events(cluster, ns, "momentum")}
    assert "InvalidConfig" in reasons

    cluster.apply(strategy_config(strategy="no_such_strategy"), namespace=ns)
    sc = until(operator, lambda: (s := get(cluster, "strategyconfig", "momentum", "-n", ns))
               and condition(s, "Valid").get("reason") == "UnknownStrategy" and s, "UnknownStrategy")
    assert "Invalid strategy key: no_such_strategy" in condition(sc, "Valid")["message"]
    kept = runtime_of(cluster, ns, "steady")
    assert kept is not None
    assert kept.config_hash == good.config_hash

    cluster.apply(strategy_config(params={"fast": 5, "slow": 50}), namespace=ns)
    fixed = until(operator, lambda: (r := runtime_of(cluster, ns, "steady")) and r.strategy.params["fast"] == 5 and r,
                  "the fixed config to reach the runner")
    assert fixed.config_hash != good.config_hash
    until(operator, lambda: condition(get(cluster, "tb", "steady", "-n", ns) or {}, "ConfigValid").get("status")
          == "True", "ConfigValid=True again")


def test_runner_heartbeat_makes_the_bot_healthy_then_stale(
        cluster: Cluster, operator: OperatorProcess, ns: str) -> None:
    cluster.apply(strategy_config(), namespace=ns)
    create_bot(cluster, operator, ns, "beat", placement="external", runner={"heartbeatGraceSeconds": 5})
    runtime = until(operator, lambda: runtime_of(cluster, ns, "beat"), "the runtime ConfigMap")
    runner = RunnerStandIn(cluster, ns, "beat")
    runner.renew(applied_hash=runtime.config_hash, equity=10000.0)
    bot = until(operator, lambda: (b := get(cluster, "tb", "beat", "-n", ns))
                and b["status"].get("phase") == "Running" and b, "phase Running after a renewal")
    assert condition(bot, "RunnerHealthy")["status"] == "True"
    assert condition(bot, "ConfigApplied")["status"] == "True"
    assert condition(bot, "Ready")["status"] == "True"
    assert bot["status"]["runner"]["equity"] == 10000
    assert bot["status"]["runner"]["appliedConfigHash"] == runtime.config_hash

    # Renewals that change nothing but the heartbeat write nothing to the bot.
    time.sleep(0.5)
    settled = get(cluster, "tb", "beat", "-n", ns)
    assert settled is not None
    for _ in range(3):
        runner.renew(applied_hash=runtime.config_hash, equity=10000.001)
        time.sleep(0.4)
    time.sleep(0.5)
    after = get(cluster, "tb", "beat", "-n", ns)
    assert after is not None
    assert after["metadata"]["resourceVersion"] == settled["metadata"]["resourceVersion"]

    # A real change of telemetry is copied (rounded to 2 decimals).
    runner.renew(applied_hash=runtime.config_hash, equity=10123.456)
    until(operator, lambda: (get(cluster, "tb", "beat", "-n", ns) or {}).get("status", {}).get("runner", {})
          .get("equity") == 10123.46, "the new equity in status")

    # No renewal for longer than the grace period: the heartbeat goes stale, by the operator's own clock.
    bot = until(operator, lambda: (b := get(cluster, "tb", "beat", "-n", ns))
                and condition(b, "RunnerHealthy").get("reason") == "HeartbeatStale" and b,
                "RunnerHealthy=False after the grace period", timeout=20)
    assert condition(bot, "RunnerHealthy")["status"] == "False"
    assert bot["status"]["phase"] == "Degraded"
    reasons = [e["reason"] for e in events(cluster, ns, "beat")]
    assert "PhaseChanged" in reasons
    assert "ConfigApplied" in reasons


def test_delete_leaves_nothing_behind(cluster: Cluster, operator: OperatorProcess, ns: str) -> None:
    cluster.apply(strategy_config(), namespace=ns)
    create_bot(cluster, operator, ns, "gone")
    until(operator, lambda: get(cluster, "statefulset", "gone-runner", "-n", ns), "the StatefulSet")
    subject = {"kind": "ServiceAccount", "name": "gone-runner", "namespace": ns}
    until(operator, lambda: subject in (get(cluster, "clusterrolebinding", FLEET_RBAC_NAME) or {}).get("subjects", []),
          "the runner in the shared ClusterRoleBinding")
    cluster.kubectl("delete", "tb", "gone", "-n", ns, "--wait=true")

    def leftovers() -> list[str]:
        left = []
        for kind in ("configmap", "serviceaccount", "role", "rolebinding", "lease", "statefulset"):
            listed = get(cluster, kind, "-n", ns, "-l", "tradewarden.io/bot=gone") or {"items": []}
            left += [f"{kind}/{o['metadata']['name']}" for o in listed["items"]]
        crb = get(cluster, "clusterrolebinding", FLEET_RBAC_NAME) or {}
        if subject in crb.get("subjects", []):
            left.append("clusterrolebinding subject")
        return left

    until(operator, lambda: not leftovers() or None, "the garbage collector and the operator to clean up",
          timeout=45)
    sc = until(operator, lambda: (s := get(cluster, "strategyconfig", "momentum", "-n", ns))
               and s["status"].get("bots") == 0 and s, "the StrategyConfig to count no bot")
    assert sc["status"].get("botNames", []) == []


def test_external_placement_has_no_statefulset(cluster: Cluster, operator: OperatorProcess, ns: str) -> None:
    cluster.apply(strategy_config(), namespace=ns)
    create_bot(cluster, operator, ns, "far")
    until(operator, lambda: get(cluster, "statefulset", "far-runner", "-n", ns), "the StatefulSet")
    cluster.kubectl("patch", "tb", "far", "-n", ns, "--type=merge", "-p", '{"spec":{"placement":"external"}}')
    until(operator, lambda: get(cluster, "statefulset", "far-runner", "-n", ns) is None,
          "the StatefulSet of the old placement to go")
    for kind, name in (("configmap", "far-runtime"), ("serviceaccount", "far-runner"), ("lease", "far-runner"),
                       ("role", "far-runner"), ("rolebinding", "far-runner")):
        assert get(cluster, kind, name, "-n", ns) is not None, kind
    bot = get(cluster, "tb", "far", "-n", ns)
    assert bot is not None
    assert "tradewarden runner --bot" in condition(bot, "RunnerHealthy")["message"]


def test_kill_switch_engages_is_acknowledged_and_triggers(
        cluster: Cluster, operator: OperatorProcess, ns: str) -> None:
    cluster.apply(strategy_config(), namespace=ns)
    for name in ("k1", "k2"):
        # External: the test plays the runners, and a Lease renewed for a pod that is not running is not believed.
        create_bot(cluster, operator, ns, name, placement="external")
    brake, auto = f"{ns}-brake"[:63], f"{ns}-auto"[:63]
    try:
        cluster.apply(kill_switch(brake, "off", [ns]))
        ks = until(operator, lambda: (k := get(cluster, "killswitch", brake))
                   and k.get("status", {}).get("matched") == 2 and k, "the switch to match both bots")
        assert condition(ks, "Engaged")["status"] == "False"

        cluster.kubectl("patch", "killswitch", brake, "--type=merge", "-p",
                        '{"spec":{"mode":"close_only","reason":"drill"}}')
        for name in ("k1", "k2"):
            bot = until(operator, lambda n=name: (b := get(cluster, "tb", n, "-n", ns))
                        and b["status"].get("killMode") == "close_only" and b, f"{name} to fold the switch")
            assert bot["status"]["phase"] == "Halted"
            assert condition(bot, "KillSwitchEngaged")["status"] == "True"
            runtime = until(operator, lambda n=name: (r := runtime_of(cluster, ns, n)) and r.kill_mode.value
                            == "close_only" and r, "close_only in the runtime ConfigMap")
            assert runtime.kill_reason == "drill"
        ks = until(operator, lambda: (k := get(cluster, "killswitch", brake))
                   and condition(k, "Engaged").get("status") == "True" and k, "Engaged=True")
        assert ks["status"]["pendingBots"] == [f"{ns}/k1", f"{ns}/k2"]
        assert condition(ks, "Acknowledged")["status"] == "False"
        assert ks["status"]["engagedAt"]

        generation = ks["metadata"]["generation"]
        for name in ("k1", "k2"):
            ack = {brake: {"generation": generation, "mode": "close_only",
                           "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
            RunnerStandIn(cluster, ns, name).renew(acks=ack)
        ks = until(operator, lambda: (k := get(cluster, "killswitch", brake))
                   and condition(k, "Acknowledged").get("status") == "True" and k, "Acknowledged=True")
        assert ks["status"]["acknowledged"] == 2
        assert ks["status"]["pendingBots"] == []
        assert ks["status"]["maxAckLatencyMs"] >= 0

        # An automatic trigger: the fleet's equity falls 20 % from its peak, the limit is 10 %.
        cluster.apply(kill_switch(auto, "off", [ns], trigger={"fleetDrawdownPct": 10, "mode": "halt_all"}))
        for name in ("k1", "k2"):
            RunnerStandIn(cluster, ns, name).renew(equity=10000.0)
        until(operator, lambda: (get(cluster, "killswitch", auto) or {}).get("status", {}).get("fleetEquityPeak")
              == 20000, "the fleet equity peak")
        for name in ("k1", "k2"):
            RunnerStandIn(cluster, ns, name).renew(equity=8000.0)
        fired = until(operator, lambda: (k := get(cluster, "killswitch", auto)) and k["spec"]["mode"] == "halt_all"
                      and k, "the trigger to engage the switch")
        fired = until(operator, lambda: (k := get(cluster, "killswitch", auto)) and k["status"].get("triggeredBy")
                      and condition(k, "Engaged").get("status") == "True" and k, "triggeredBy in status")
        assert fired["status"]["triggeredBy"].startswith("fleetDrawdownPct")
        assert condition(fired, "Engaged")["reason"] == "Triggered"
        until(operator, lambda: (get(cluster, "tb", "k1", "-n", ns) or {}).get("status", {}).get("killMode")
              == "halt_all", "the strongest mode to win on the bot")
        warnings = get(cluster, "events", "-n", "default", "--field-selector", f"involvedObject.name={auto}")
        assert warnings is not None
        assert "KillSwitchTriggered" in {e["reason"] for e in warnings["items"]}
    finally:
        cluster.kubectl("delete", "killswitch", brake, auto, "--ignore-not-found", check=False)
