"""Attacks on the promotion gate, end to end: a forged status and an editor-written runtime ConfigMap.

Real processes: the operator (a subprocess), a real ``tradewarden runner`` with its own ServiceAccount
token, the in-process exchange emulator. The attackers are ordinary API users, impersonated with
``kubectl --as``: one granted only ``tradingbots/status`` (attack 1), one with the stock ``edit`` role
in the bots' namespace (attack 2, inside the trust boundary of docs/SECURITY.md: it cannot be kept
out, but it must not go unnoticed, and live orders still need the operator).
"""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from support import live
from support.kube import Cluster
from support.operator import OperatorProcess, RunnerStandIn, condition, kill_switch, strategy_config, trading_bot
from support.promotion import bot_of, event_reasons, live_bot, runtime_of, until, wait_runtime
from support.runner import BotEnv
from tradewarden.api.runtime import compute_gate_hash
from tradewarden.controller.leases import POD_REASONS
from tradewarden.emulator import Emulator

pytestmark = pytest.mark.cluster

VENUE_KEY = "VENUEKEY" + uuid.uuid4().hex[:16]
VENUE_SECRET = "VENUESECRET" + uuid.uuid4().hex[:16]


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    yield from live.venue(VENUE_KEY, VENUE_SECRET, {"USDT": "100000"})


@pytest.fixture
def ns(cluster: Cluster, operator: OperatorProcess, request: pytest.FixtureRequest) -> str:
    return live.keyed_namespace(cluster, operator, request, VENUE_KEY, VENUE_SECRET)


def grant(cluster: Cluster, ns: str, user: str, rules: list[dict[str, Any]] | None = None,
          cluster_role: str | None = None) -> None:
    """Bind ``user`` in ``ns`` to a Role of ``rules``, or to an existing ClusterRole."""
    role_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role}
    if rules is not None:
        cluster.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                       "metadata": {"name": f"{user}-role"}, "rules": rules}, namespace=ns)
        role_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{user}-role"}
    cluster.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": f"{user}-binding"}, "roleRef": role_ref,
                   "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]},
                  namespace=ns)


def trading_bot_in_cluster(name: str) -> dict[str, Any]:
    return trading_bot(name, placement="cluster", mode="paper", runner={"heartbeatGraceSeconds": 5})


def forged_gate_status(config_hash: str) -> dict[str, Any]:
    """A replay and a consensus record whose hashes agree with each other and with the bot's config."""
    now = "2099-01-01T00:00:00Z"
    evidence = "sha256:" + "e" * 64
    result = "sha256:" + "a" * 64
    vote = {"reviewer": "nobody-configured", "verdict": "PROCEED", "risk": "LOW", "evidenceHash": evidence,
            "at": now}
    return {"status": {
        "replay": {"configHash": config_hash, "resultHash": result, "dataHash": "sha256:" + "d" * 64,
                   "passed": True, "reason": "Passed", "tradesCompared": 50, "residuals": 0,
                   "finishedAt": now, "exportedAt": now},
        "consensus": {"phase": 1, "thresholdPct": 70, "scorePct": 100, "decision": "Approved",
                      "evidenceHash": evidence, "replayResultHash": result, "votes": [vote, dict(vote, reviewer="b")]},
        "paperSince": "2000-01-01T00:00:00Z",
        "effectiveMode": "live",
        "capital": {"step": 2, "amount": 1000},
    }}


def test_a_hand_written_status_unlocks_nothing(cluster: Cluster, operator: OperatorProcess, ns: str) -> None:
    cluster.apply(strategy_config("fast", params={"fast": 3, "slow": 6}), namespace=ns)
    cluster.apply(live_bot("forged", "fast", promotion={"minPaperMinutes": 600}), namespace=ns)
    wait_runtime(cluster, operator, ns, "forged")
    config_hash = until(operator, lambda: bot_of(cluster, ns, "forged")["status"].get("configHash"),
                        "the bot's config hash in status")
    grant(cluster, ns, "status-writer", rules=[{"apiGroups": ["tradewarden.io"], "resources": ["tradingbots/status"],
                                                "verbs": ["get", "patch", "update"]},
                                               {"apiGroups": ["tradewarden.io"], "resources": ["tradingbots"],
                                                "verbs": ["get"]}])
    patch = json.dumps(forged_gate_status(config_hash))
    # The same forgery by a role granted only the status subresource, and by a cluster admin.
    for who in ("status-writer", None):
        args = ["patch", "tb", "forged", "-n", ns, "--subresource=status", "--type=merge", "-p", patch]
        cluster.kubectl(*args, *(["--as", who] if who else []))

        def restored() -> dict[str, Any]:
            bot = bot_of(cluster, ns, "forged")
            status = bot["status"]
            assert status["effectiveMode"] == "paper", status["effectiveMode"]
            assert not {"replay", "consensus", "capital"} & set(status), status
            assert status.get("paperSince", "") != "2000-01-01T00:00:00Z"
            intact = condition(bot, "Intact")
            assert (intact.get("status"), intact.get("reason")) == ("False", "StatusTampered"), intact
            return bot

        bot = until(operator, restored, f"the forged status ({who or 'admin'}) to be replaced by the ledger's")
        assert condition(bot, "Promoted")["status"] == "False"
        runtime = runtime_of(cluster, ns, "forged")
        assert runtime is not None
        assert runtime.effective_mode.value == "paper"
        assert not runtime.gate_hash
        assert "StatusTampered" in event_reasons(cluster, ns, "forged")
    assert "StatusTampered" in operator.metrics()
    assert re.search(r'integrity_problems_total\{reason="StatusTampered"\} [1-9]', operator.metrics())


def test_an_editor_written_immutable_runtime_configmap_never_trades_live(
        cluster: Cluster, operator: OperatorProcess, emulator: Emulator, ns: str, tmp_path: pathlib.Path) -> None:
    sc = strategy_config("fast", params={"fast": 3, "slow": 6})
    sc["spec"]["timeframe"] = "1m"
    cluster.apply(sc, namespace=ns)
    # A paper bot with credentials: everything a live runner needs but the operator's permission.
    bot = live_bot("victim", "fast", exchange={"sandbox": False, "apiUrl": emulator.url})
    bot["spec"]["mode"] = "paper"
    del bot["spec"]["liveConfirmation"]
    cluster.apply(bot, namespace=ns)
    honest = wait_runtime(cluster, operator, ns, "victim")
    assert honest.signature
    assert honest.effective_mode.value == "paper"
    env = BotEnv(cluster, ns, "victim", tmp_path / "victim", operator_managed=True)
    grant(cluster, ns, "mallory", cluster_role="edit")
    try:
        env.start(tick=0.2)
        until(operator, lambda: (t := env.telemetry()) is not None and t.effective_mode.value == "paper",
              "the runner trading on paper")
        orders_before = emulator.request_count("POST", "/api/v3/order")
        # With the operator down, so that only the runner's own check stands between the forgery and the
        # venue (and the forger's copy is the latest: nothing else writes the ConfigMap meanwhile). One
        # update: a ConfigMap may be made immutable by an update, and then no patch can undo it.
        operator.stop()
        cm = cluster.get_json("configmap", "victim-runtime", "-n", ns)
        doc = json.loads(cm["data"]["runtime.json"])
        doc.update(effectiveMode="live", gateReplayHash="sha256:made-up", gateConsensusHash="sha256:made-up",
                   gateHash=compute_gate_hash(doc["configHash"], "sha256:made-up", "sha256:made-up"))
        doc["capital"]["liveCapital"] = 1000
        cm["data"]["runtime.json"] = json.dumps(doc)
        cm["immutable"] = True
        cm["metadata"].pop("managedFields", None)
        path = tmp_path / "forged.json"
        path.write_text(json.dumps(cm))
        try:
            cluster.kubectl("replace", "-f", str(path), "--as", "mallory")

            def refused() -> str:
                assert "not signed by the operator's gate key" in env.annotations().get(
                    "tradewarden.io/live-refused", "")
                return env.annotations()["tradewarden.io/live-refused"]

            until(operator, refused, "the runner to refuse the forged live permission")
            for _ in range(20):
                emulator.advance(1)
            assert emulator.request_count("POST", "/api/v3/order") == orders_before, "a live order reached the venue"
            telemetry = env.telemetry()
            assert telemetry is not None
            assert telemetry.effective_mode.value == "paper"
        finally:
            operator.start()

        def replaced() -> dict[str, Any]:
            live = cluster.get_json("configmap", "victim-runtime", "-n", ns)
            assert not live.get("immutable"), "still the forged, immutable ConfigMap"
            runtime = runtime_of(cluster, ns, "victim")
            assert runtime is not None
            assert runtime.effective_mode.value == "paper"
            assert runtime.signature
            bot = bot_of(cluster, ns, "victim")
            intact = condition(bot, "Intact")
            assert (intact.get("status"), intact.get("reason")) == ("False", "ForeignWrite"), intact
            return bot

        until(operator, replaced, "the operator to replace the forged ConfigMap and report it", timeout=30)
        for _ in range(20):
            emulator.advance(1)
        until(operator, lambda: (t := env.telemetry()) is not None and t.effective_mode.value == "paper",
              "the runner still on paper")
        assert emulator.request_count("POST", "/api/v3/order") == orders_before, "a live order reached the venue"
        reasons = event_reasons(cluster, ns, "victim")
        assert {"ForeignWrite", "LivePermissionRefused"} <= set(reasons), reasons
        assert "refusing live orders, trading on paper: the live permission is not signed" in env.runners[0].output()
    finally:
        env.close()


def test_a_forged_lease_of_a_runner_pod_is_reported_not_believed(cluster: Cluster, operator: OperatorProcess,
                                                                ns: str) -> None:
    """Attack 4: the runner pod is not running (here it never can: no kubelet runs it), a kill switch is
    engaged, and an ``edit`` user impersonating the runner's ServiceAccount keeps renewing its Lease with
    acknowledgements and healthy telemetry. The operator compares the Lease with the pod it observes."""
    cluster.apply(strategy_config("momentum"), namespace=ns)
    cluster.apply(trading_bot_in_cluster("podbot"), namespace=ns)
    cluster.wait_for(lambda: cluster.kubectl("get", "lease", "podbot-runner", "-n", ns, check=False).returncode == 0,
                     timeout=60, what="the Lease")
    brake = f"{ns}-brake"[:63]
    lost = f"{ns}-lost"[:63]
    grant(cluster, ns, "mallory", cluster_role="edit")
    cluster.apply(kill_switch(brake, "close_only", [ns], reason="drill"))
    cluster.apply(kill_switch(lost, "off", [ns], trigger={"maxRunnersWithoutHeartbeat": 0, "mode": "halt_all"}))
    try:
        forger = RunnerStandIn(cluster, ns, "podbot", account=False)
        forger.kube._api.set_default_header("Impersonate-User", "mallory")
        generation = cluster.get_json("killswitch", brake)["metadata"]["generation"]

        def forge() -> None:
            ack = {brake: {"generation": generation, "mode": "close_only",
                           "at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}}
            forger.renew(acks=ack, telemetry={"killMode": "close_only", "equity": 10000.0, "apiReachable": True},
                         identity={"pod": "podbot-runner-0", "podUid": "forged",
                                   "startedAt": "2026-01-01T00:00:00Z"})

        def reported() -> dict[str, Any]:
            forge()
            bot = bot_of(cluster, ns, "podbot")
            healthy = condition(bot, "RunnerHealthy")
            assert healthy.get("status") == "False", healthy
            # Where a node runs the pod and the pod itself says why it cannot run (its image, say), that
            # reason names RunnerHealthy, and the message still says the Lease is not believed.
            assert healthy.get("reason") == "LeaseContradicted" or (
                healthy.get("reason") in POD_REASONS and "is not believed either" in healthy["message"]), healthy
            assert condition(bot, "Intact").get("reason") == "LeaseContradicted"
            return bot

        bot = until(operator, reported, "the forged Lease to be reported")
        assert "podbot-runner-0" in condition(bot, "RunnerHealthy")["message"]
        assert "LeaseContradicted" in event_reasons(cluster, ns, "podbot")
        for _ in range(3):
            forge()
            time.sleep(1)
        ks = cluster.get_json("killswitch", brake)
        assert f"{ns}/podbot" in ks["status"].get("pendingBots", []), "a forged acknowledgement was believed"
        assert condition(ks, "Acknowledged")["status"] == "False"

        def fired() -> dict[str, Any]:
            forge()
            switch = cluster.get_json("killswitch", lost)
            assert switch["spec"]["mode"] == "halt_all", "the heartbeat trigger stayed off"
            return switch

        until(operator, fired, "the lost-runner trigger to fire despite the forged renewals")
    finally:
        cluster.kubectl("delete", "killswitch", brake, lost, "--ignore-not-found", check=False)


def test_an_edited_runner_workload_is_restored_and_reported(cluster: Cluster, operator: OperatorProcess,
                                                            ns: str) -> None:
    cluster.apply(strategy_config("momentum"), namespace=ns)
    cluster.apply(trading_bot_in_cluster("worker"), namespace=ns)
    sts = until(operator, lambda: cluster.get_json("statefulset", "worker-runner", "-n", ns), "the StatefulSet")
    image = sts["spec"]["template"]["spec"]["containers"][0]["image"]
    # Left alone, the operator leaves it alone: the API server's defaults are not a difference.
    settled_rv = until(operator, lambda: (rv := cluster.get_json("statefulset", "worker-runner", "-n", ns)[
        "metadata"]["resourceVersion"]) and (time.sleep(2) or rv == cluster.get_json(
            "statefulset", "worker-runner", "-n", ns)["metadata"]["resourceVersion"]) and rv, "a settled StatefulSet")
    assert settled_rv
    grant(cluster, ns, "mallory", cluster_role="edit")
    cluster.kubectl("set", "image", "statefulset/worker-runner", "runner=evil.example/miner:1", "-n", ns,
                    "--as", "mallory")

    def restored() -> dict[str, Any]:
        live = cluster.get_json("statefulset", "worker-runner", "-n", ns)
        assert live["spec"]["template"]["spec"]["containers"][0]["image"] == image
        bot = bot_of(cluster, ns, "worker")
        assert condition(bot, "Intact").get("reason") == "ForeignWrite"
        return bot

    bot = until(operator, restored, "the runner image restored and the edit reported")
    assert "StatefulSet" in condition(bot, "Intact")["message"]


def test_a_bot_author_cannot_reach_the_keys_through_the_runner_image_or_the_venue_url(
        cluster: Cluster, operator: OperatorProcess, ns: str) -> None:
    """A bot author may write bots, and so a bot's runner image and venue URL: the operator decides
    both (an image of the author's would run with the runner's ServiceAccount, which reads the keys; a
    venue URL of the author's would receive them)."""
    grant(cluster, ns, "author", rules=[{"apiGroups": ["tradewarden.io"], "resources": ["tradingbots",
                                                                                       "strategyconfigs"],
                                         "verbs": ["get", "list", "create", "patch", "update"]}])
    cluster.apply(strategy_config("momentum"), namespace=ns)
    bot = trading_bot("greedy", placement="cluster", mode="paper", runner={"image": "evil.example/miner:1"},
                      exchange={"id": "binance", "apiUrl": "https://collector.example/api",
                                "credentialsSecretRef": {"name": "venue-keys"}})
    bot["metadata"]["namespace"] = ns
    proc = cluster.kubectl("apply", "-f", "-", "--as", "author", input=json.dumps(bot), check=False)
    assert proc.returncode == 0, proc.stderr

    def refused() -> dict[str, Any]:
        found = bot_of(cluster, ns, "greedy")
        valid = condition(found, "ConfigValid")
        assert (valid.get("status"), valid.get("reason")) == ("False", "FieldRefused"), valid
        return found

    found = until(operator, refused, "the refused fields in status")
    message = condition(found, "ConfigValid")["message"]
    assert "spec.runner.image" in message
    assert "spec.exchange.apiUrl" in message
    sts = until(operator, lambda: cluster.get_json("statefulset", "greedy-runner", "-n", ns), "the StatefulSet")
    assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == "tradewarden/runner:test"
    role = cluster.get_json("role", "greedy-runner", "-n", ns)
    assert not any("secrets" in rule["resources"] for rule in role["rules"]), "the runner may read no keys"
    runtime = runtime_of(cluster, ns, "greedy")
    assert runtime is not None
    assert runtime.exchange.credentials_secret_ref is None


def test_an_immutable_evidence_configmap_is_replaced_so_exports_keep_flowing(
        cluster: Cluster, operator: OperatorProcess, ns: str) -> None:
    cluster.apply(strategy_config("momentum"), namespace=ns)
    cluster.apply(trading_bot("frozen", placement="external", mode="paper"), namespace=ns)
    until(operator, lambda: cluster.get_json("configmap", "frozen-evidence", "-n", ns), "the evidence ConfigMap")
    grant(cluster, ns, "mallory", cluster_role="edit")
    cluster.kubectl("patch", "configmap", "frozen-evidence", "-n", ns, "--type=merge", "-p", '{"immutable":true}',
                    "--as", "mallory")

    def replaced() -> dict[str, Any]:
        live = cluster.get_json("configmap", "frozen-evidence", "-n", ns)
        assert not live.get("immutable"), "still immutable: the runner could never export again"
        bot = bot_of(cluster, ns, "frozen")
        assert condition(bot, "Intact").get("reason") == "ForeignWrite"
        return bot

    bot = until(operator, replaced, "the immutable evidence ConfigMap replaced and reported")
    assert "frozen-evidence was made immutable" in condition(bot, "Intact")["message"]
    assert "ForeignWrite" in event_reasons(cluster, ns, "frozen")


def test_a_forged_fleet_peak_in_a_switch_status_does_not_blind_its_trigger(
        cluster: Cluster, operator: OperatorProcess, ns: str) -> None:
    """The fleetDrawdownPct trigger measures from a peak the operator keeps in its ledger: a status writer
    who resets the peak in the KillSwitch's status (its mirror) does not keep the trigger from firing."""
    cluster.apply(strategy_config("momentum"), namespace=ns)
    names = ("f1", "f2")
    for n in names:
        cluster.apply(trading_bot(n, placement="external"), namespace=ns)
    cluster.wait_for(lambda: all(cluster.kubectl("get", "lease", f"{n}-runner", "-n", ns, check=False).returncode
                                 == 0 for n in names), timeout=60, what="the Leases")
    switch = f"{ns}-fleet"[:63]
    cluster.apply(kill_switch(switch, "off", [ns], trigger={"fleetDrawdownPct": 10, "mode": "close_only"}))
    try:
        runners = {n: RunnerStandIn(cluster, ns, n) for n in names}

        def peaked() -> bool:
            for r in runners.values():
                r.renew(equity=10000.0)
            return (cluster.get_json("killswitch", switch).get("status") or {}).get("fleetEquityPeak") == 20000
        until(operator, peaked, "the fleet's peak recorded")
        forged = json.dumps({"status": {"fleetEquityPeak": 16000, "matchedBots": [f"{ns}/{n}" for n in names]}})

        def fired() -> bool:
            # The fleet loses 20 %, and the forger keeps the mirror's peak at the new equity at once.
            for r in runners.values():
                r.renew(equity=8000.0)
            cluster.kubectl("patch", "killswitch", switch, "--subresource=status", "--type=merge", "-p", forged)
            time.sleep(0.3)
            return cluster.get_json("killswitch", switch)["spec"]["mode"] == "close_only"

        until(operator, fired, "the drawdown trigger to fire despite the forged peak")
        assert "fleetDrawdownPct" in cluster.get_json("killswitch", switch)["status"]["triggeredBy"]
    finally:
        cluster.kubectl("delete", "killswitch", switch, "--ignore-not-found", check=False)


def test_a_forged_valid_spec_never_reaches_a_runner(cluster: Cluster, operator: OperatorProcess, ns: str) -> None:
    """Bots run the spec the operator validated, kept in its ledger: a StrategyConfig status written by
    hand (say, params the strategy's validation refuses) is restored and reported."""
    cluster.apply(strategy_config("momentum", params={"fast": 10, "slow": 30}), namespace=ns)
    cluster.apply(trading_bot("honest", placement="external", mode="paper"), namespace=ns)
    first = wait_runtime(cluster, operator, ns, "honest")
    spec = cluster.get_json("strategyconfig.tradewarden.io", "momentum", "-n", ns)["spec"]
    forged = dict(spec, params={"fast": 50, "slow": 5})  # fast >= slow: never valid
    cluster.kubectl("patch", "strategyconfig.tradewarden.io", "momentum", "-n", ns, "--subresource=status",
                    "--type=merge", "-p", json.dumps({"status": {"validSpec": forged}}))

    def restored() -> dict[str, Any]:
        sc = cluster.get_json("strategyconfig.tradewarden.io", "momentum", "-n", ns)
        assert sc["status"]["validSpec"]["params"]["fast"] == 10, sc["status"]["validSpec"]
        reasons = cluster.kubectl("get", "events", "-n", ns, "--field-selector", "involvedObject.name=momentum",
                                  "-o", "jsonpath={.items[*].reason}").stdout
        assert "StatusTampered" in reasons
        return sc

    until(operator, restored, "the forged validSpec restored and reported")
    time.sleep(1)
    runtime = runtime_of(cluster, ns, "honest")
    assert runtime is not None
    assert runtime.config_hash == first.config_hash, "the forged spec reached the runner's config"
    assert runtime.strategy.params["fast"] == 10


def test_a_deleted_bot_leaves_no_ledger_behind(cluster: Cluster, operator: OperatorProcess, ns: str) -> None:
    cluster.apply(strategy_config("momentum"), namespace=ns)
    cluster.apply(trading_bot("passing", placement="external", mode="paper"), namespace=ns)
    wait_runtime(cluster, operator, ns, "passing")
    uid = bot_of(cluster, ns, "passing")["metadata"]["uid"]
    where = ("configmap", f"gate-{uid}", "-n", operator.ledger_namespace)
    until(operator, lambda: cluster.kubectl("get", *where, check=False).returncode == 0, "the bot's ledger")
    cluster.kubectl("delete", "tb", "passing", "-n", ns)
    until(operator, lambda: cluster.kubectl("get", *where, check=False).returncode != 0,
          "the ledger of the deleted bot removed")
