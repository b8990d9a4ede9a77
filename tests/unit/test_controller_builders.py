"""Unit tests of the desired-state builders and the owned-field comparison (no cluster).

Table-driven: RBAC rules exactly, the runner pod's security context, which edits roll the pod (only
image and resources), owner references and labels on every object, the runtime ConfigMap.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from support.controller_objects import DEFAULTS, NOW, labels, make_bot, make_switch, runner, spec, valid_config
from tradewarden.api.runtime import RuntimeConfig
from tradewarden.api.tradingbot import TradingBot
from tradewarden.controller.builders import (
    ANN_RUNNER_HASH,
    ANN_SPEC_HASH,
    FLEET_RBAC_NAME,
    build_bot_plan,
    build_configmap,
    build_evidence_configmap,
    build_fleet_cluster_role,
    build_fleet_cluster_role_binding,
    build_lease,
    build_role,
    build_role_binding,
    build_runtime_config,
    build_service_account,
    build_statefulset,
    keep_immutable_fields,
)
from tradewarden.controller.diffs import is_subset, needs_apply
from tradewarden.controller.leases import NO_RUNNER

CONFIGMAP_RULE = {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["bot-runtime"],
                  "verbs": ["get", "watch"]}
EVIDENCE_RULE = {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["bot-evidence"],
                 "verbs": ["get", "update"]}
LEASE_RULE = {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["bot-runner"],
              "verbs": ["get", "update"]}


@pytest.mark.parametrize(("exchange", "rules"), [
    pytest.param({"id": "binance"}, [CONFIGMAP_RULE, EVIDENCE_RULE, LEASE_RULE], id="no-credentials-no-secret-rule"),
    pytest.param({"id": "binance", "credentialsSecretRef": {"name": "keys"}},
                 [CONFIGMAP_RULE, EVIDENCE_RULE, {"apiGroups": [""], "resources": ["secrets"],
                                                  "resourceNames": ["keys"], "verbs": ["get"]}, LEASE_RULE],
                 id="own-secret-get-only"),
])
def test_runner_role_grants_exactly_its_own_objects(exchange: dict[str, Any], rules: list[dict[str, Any]]) -> None:
    role = build_role(make_bot("bot", spec(exchange=exchange)))
    assert role["rules"] == rules
    for rule in role["rules"]:
        assert rule["resourceNames"], "every rule names its objects"
        assert "list" not in rule["verbs"]
        assert "*" not in rule["verbs"]


def test_role_binding_binds_the_runner_account_to_its_role() -> None:
    rb = build_role_binding(make_bot("bot"))
    assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "bot-runner"}
    assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "bot-runner", "namespace": "ns"}]


@pytest.mark.parametrize(("bots", "keep", "subjects"), [
    ([], [], None),
    ([("b", "x"), ("a", "y"), ("a", "y")], [],
     [{"kind": "ServiceAccount", "name": "y-runner", "namespace": "a"},
      {"kind": "ServiceAccount", "name": "x-runner", "namespace": "b"}]),
    ([("a", "y")], [{"kind": "ServiceAccount", "name": "z-runner", "namespace": "other"}],
     [{"kind": "ServiceAccount", "name": "y-runner", "namespace": "a"},
      {"kind": "ServiceAccount", "name": "z-runner", "namespace": "other"}]),
])
def test_fleet_binding_follows_the_set_of_bots(bots: list[tuple[str, str]], keep: list[dict[str, str]],
                                               subjects: list[dict[str, str]] | None) -> None:
    crb = build_fleet_cluster_role_binding(bots, keep)
    assert crb["metadata"]["name"] == FLEET_RBAC_NAME
    assert crb["roleRef"]["kind"] == "ClusterRole"
    assert crb.get("subjects") == subjects


def test_fleet_cluster_role_reads_killswitches_only() -> None:
    role = build_fleet_cluster_role()
    assert role["rules"] == [{"apiGroups": ["tradewarden.io"], "resources": ["killswitches"],
                              "verbs": ["get", "list", "watch"]}]
    assert "labels" not in role["metadata"]  # the chart's copy carries Helm's labels; no fight over them


@pytest.mark.parametrize(("path", "expected"), [
    ("pod.runAsNonRoot", True),
    ("pod.runAsUser", 10001),
    ("pod.seccompProfile", {"type": "RuntimeDefault"}),
    ("container.allowPrivilegeEscalation", False),
    ("container.capabilities", {"drop": ["ALL"]}),
    ("container.readOnlyRootFilesystem", True),
    ("container.runAsNonRoot", True),
    ("container.runAsUser", 10001),
    ("container.seccompProfile", {"type": "RuntimeDefault"}),
])
def test_runner_pod_security_context_passes_restricted(path: str, expected: Any) -> None:
    pod = build_statefulset(make_bot(), DEFAULTS)["spec"]["template"]["spec"]
    where, key = path.split(".")
    context = pod["securityContext"] if where == "pod" else pod["containers"][0]["securityContext"]
    assert context[key] == expected


def test_runner_pod_shape() -> None:
    sts = build_statefulset(make_bot(), DEFAULTS)
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"
    pod = sts["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["tradewarden", "runner", "--bot", "ns/bot", "--journal", "/var/lib/tradewarden",
                                    "--gate-key", "tradewarden-system/tradewarden-gate-key"]
    # The runner reports its pod, so the operator can tell a Lease renewed by another writer.
    assert {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]} == \
        {"POD_NAME": "metadata.name", "POD_UID": "metadata.uid"}
    assert container["image"] == "tradewarden/runner:unit"
    assert pod["serviceAccountName"] == "bot-runner"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": 9100}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "journal", "mountPath": "/var/lib/tradewarden"} in container["volumeMounts"]
    assert pod["volumes"][0]["name"] == "tmp"
    assert "emptyDir" in pod["volumes"][0]
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "journal"


def test_image_comes_from_the_bot_or_the_operator_default() -> None:
    own = build_statefulset(make_bot("bot", spec(runner={"image": "mine:1"})), DEFAULTS)
    assert own["spec"]["template"]["spec"]["containers"][0]["image"] == "mine:1"


# Which edits change the pod template (and so roll the runner)? Only image and resources.
ROLLS: list[tuple[str, Any, bool]] = [
    ("mode", spec(mode="paper"), False),
    ("risk", spec(risk={"maxOpenPositions": 1}), False),
    ("exchange", spec(exchange={"id": "kraken", "sandbox": False}), False),
    ("heartbeat", spec(runner={"heartbeatGraceSeconds": 60}), False),
    ("capital", spec(capital={"paperBalance": 5.0}), False),
    ("labels", labels(team="b"), False),
    ("image", spec(runner={"image": "other:2"}), True),
    ("resources", spec(runner={"resources": {"limits": {"memory": "1Gi"}}}), True),
]


@pytest.mark.parametrize(("what", "mod", "rolls"), ROLLS, ids=[r[0] for r in ROLLS])
def test_only_image_and_resources_roll_the_pod(what: str, mod: Any, rolls: bool) -> None:
    before = build_statefulset(make_bot(), DEFAULTS)
    after = build_statefulset(make_bot("bot", mod), DEFAULTS)
    assert (before["spec"]["template"] != after["spec"]["template"]) is rolls, what
    changed_hash = (before["spec"]["template"]["metadata"]["annotations"][ANN_RUNNER_HASH]
                    != after["spec"]["template"]["metadata"]["annotations"][ANN_RUNNER_HASH])
    assert changed_hash is rolls, what


def test_strategy_changes_only_touch_the_configmap() -> None:
    bot = make_bot()
    first = build_bot_plan(bot, valid_config(), [], NO_RUNNER, DEFAULTS, NOW)
    second = build_bot_plan(bot, valid_config(fast=5), [], NO_RUNNER, DEFAULTS, NOW)
    by_kind = {o["kind"]: o for o in first.objects}
    for obj in second.objects:
        if obj["kind"] == "ConfigMap":
            assert obj != by_kind["ConfigMap"]
        else:
            assert obj == by_kind[obj["kind"]], obj["kind"]


def test_every_owned_object_is_owned_and_labelled() -> None:
    bot = make_bot()
    plan = build_bot_plan(bot, valid_config(), [], NO_RUNNER, DEFAULTS, NOW)
    objects = [*plan.objects, plan.lease]
    assert sorted(o["kind"] for o in objects) == ["ConfigMap", "ConfigMap", "Lease", "Role", "RoleBinding",
                                                   "ServiceAccount", "StatefulSet"]
    for obj in objects:
        meta = obj["metadata"]
        assert meta["namespace"] == "ns"
        assert meta["ownerReferences"] == [{"apiVersion": "tradewarden.io/v1alpha1", "kind": "TradingBot",
                                            "name": "bot", "uid": "uid-bot", "controller": True,
                                            "blockOwnerDeletion": True}]
        assert meta["labels"]["tradewarden.io/bot"] == "bot"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "tradewarden"
    names = {o["kind"]: o["metadata"]["name"] for o in objects}
    assert sorted(o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap") == ["bot-evidence",
                                                                                           "bot-runtime"]
    assert {names[k] for k in ("Lease", "Role", "RoleBinding", "ServiceAccount", "StatefulSet")} == {"bot-runner"}
    assert build_service_account(bot)["metadata"]["name"] == "bot-runner"
    assert build_lease(bot)["spec"] == {"leaseDurationSeconds": 30}


def test_external_placement_wants_no_statefulset() -> None:
    plan = build_bot_plan(make_bot("bot", spec(placement="external")), valid_config(), [], NO_RUNNER, DEFAULTS, NOW)
    assert "StatefulSet" not in [o["kind"] for o in plan.objects]
    assert plan.delete_statefulset


def test_no_valid_config_means_no_configmap_write() -> None:
    plan = build_bot_plan(make_bot(), None, [], NO_RUNNER, DEFAULTS, NOW)
    assert plan.runtime is None
    assert "bot-runtime" not in [o["metadata"]["name"] for o in plan.objects]


def test_evidence_configmap_is_metadata_only_and_never_overwrites_the_export() -> None:
    bot = make_bot()
    plan = build_bot_plan(bot, valid_config(), [], NO_RUNNER, DEFAULTS, NOW)
    desired = next(o for o in plan.objects if o["metadata"]["name"] == "bot-evidence")
    assert desired == build_evidence_configmap(bot)
    # Nothing but metadata: server-side apply then owns no data field, so the runner's export stays.
    assert set(desired) == {"apiVersion", "kind", "metadata"}
    assert desired["metadata"]["labels"]["app.kubernetes.io/component"] == "evidence"
    live = _live(desired, binaryData={"evidence.json.gz": "H4sI..."})
    assert not needs_apply(desired, live), "an export written by the runner is not a difference"
    assert needs_apply(desired, None)
    # Also built without a valid config: the runner may still export the last good config's window.
    assert "bot-evidence" in [o["metadata"]["name"] for o in build_bot_plan(bot, None, [], NO_RUNNER, DEFAULTS,
                                                                             NOW).objects]


def test_configmap_carries_the_whole_runtime_config_and_its_hash() -> None:
    bot = make_bot("bot", spec(mode="paper"), labels(team="a"))
    plan = build_bot_plan(bot, valid_config(), [make_switch(mode="close_only", reason="drill")], NO_RUNNER,
                          DEFAULTS, NOW)
    assert plan.runtime is not None
    cm = build_configmap(bot, plan.runtime)
    runtime = RuntimeConfig.model_validate_json(cm["data"]["runtime.json"])
    runtime.verify()
    assert cm["data"]["configHash"] == runtime.config_hash
    assert runtime.effective_mode.value == "paper"
    assert runtime.kill_mode.value == "close_only"
    assert runtime.kill_reason == "drill"
    assert runtime.bot_uid == "uid-bot"
    assert runtime.labels == {"team": "a"}
    # Same inputs, same bytes: no write on the next reconcile.
    again = build_configmap(bot, build_runtime_config(bot, valid_config(), plan.kill, NOW)[0])
    assert again == cm


def test_live_without_evidence_runs_paper_in_the_configmap() -> None:
    bot = make_bot("bot", spec(mode="live", liveConfirmation={"acknowledgeRealMoney": True, "confirmedBy": "x"},
                               exchange={"id": "binance", "credentialsSecretRef": {"name": "keys"}}))
    runtime, decision = build_runtime_config(bot, valid_config(), build_bot_plan(
        bot, valid_config(), [], NO_RUNNER, DEFAULTS, NOW).kill, NOW)
    assert runtime.requested_mode.value == "live"
    assert runtime.effective_mode.value == "paper"
    assert runtime.gate_hash == ""
    assert not runtime.gate_hash_matches()
    assert decision.reason == "ReplayMissing"


@pytest.mark.parametrize(("switches", "trip", "mode"), [
    ([], "off", "off"),
    ([make_switch(mode="close_only")], "off", "close_only"),
    ([make_switch("a", mode="close_only"), make_switch("b", mode="halt_all")], "off", "halt_all"),
    ([make_switch("a", mode="flatten"), make_switch("b", mode="halt_all")], "off", "flatten"),
    ([make_switch(mode="halt_all", namespaces=["elsewhere"])], "off", "off"),
    ([make_switch(mode="halt_all", match_labels={"team": "b"})], "off", "off"),
    ([make_switch(mode="close_only", match_labels={"team": "a"})], "off", "close_only"),
    ([make_switch(mode="close_only")], "halt_all", "halt_all"),
    ([], "close_only", "close_only"),
])
def test_kill_mode_folds_switches_and_the_bots_own_trip(switches: list[Any], trip: str, mode: str) -> None:
    plan = build_bot_plan(make_bot(), valid_config(), switches, runner(bot_trip=trip), DEFAULTS, NOW)
    assert plan.kill.mode.value == mode
    assert plan.runtime is not None
    assert plan.runtime.kill_mode.value == mode


def test_statefulset_keeps_its_immutable_journal_claim() -> None:
    desired = build_statefulset(make_bot("bot", spec(runner={"journalSize": "5Gi"})), DEFAULTS)
    live = json.loads(json.dumps(build_statefulset(make_bot(), DEFAULTS)))
    merged = keep_immutable_fields(desired, live)
    assert merged["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert keep_immutable_fields(desired, None) is desired


# ------------------------------------------------------------------------------------------ diffs


def _live(desired: dict[str, Any], **extra: Any) -> dict[str, Any]:
    live = json.loads(json.dumps(desired))
    live["metadata"].update({"uid": "x", "resourceVersion": "5", "creationTimestamp": "2026-01-01T00:00:00Z"})
    live["metadata"].setdefault("labels", {})["added-by-someone"] = "yes"
    live.update(extra)
    return live


def _bot() -> TradingBot:
    return make_bot()


@pytest.mark.parametrize(("what", "change", "differs"), [
    ("identical plus foreign labels", lambda d, lv: None, False),
    ("configmap data changed", lambda d, lv: lv["data"].update({"configHash": "other"}), True),
    ("extra configmap key of another manager", lambda d, lv: lv["data"].update({"note": "x"}), False),
    ("owner reference missing", lambda d, lv: lv["metadata"].update({"ownerReferences": []}), True),
    ("label changed", lambda d, lv: lv["metadata"]["labels"].update({"tradewarden.io/bot": "x"}), True),
])
def test_configmap_needs_apply(what: str, change: Any, differs: bool) -> None:
    bot = _bot()
    plan = build_bot_plan(bot, valid_config(), [], NO_RUNNER, DEFAULTS, NOW)
    desired = next(o for o in plan.objects if o["metadata"]["name"] == "bot-runtime")
    live = _live(desired)
    change(desired, live)
    assert needs_apply(desired, live) is differs, what


def test_role_rules_are_compared_exactly() -> None:
    desired = build_role(_bot())
    live = _live(desired)
    assert not needs_apply(desired, live)
    live["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]})
    assert needs_apply(desired, live)
    assert needs_apply(desired, None)


def test_statefulset_is_compared_by_its_spec_hash_not_its_defaulted_spec() -> None:
    desired = build_statefulset(_bot(), DEFAULTS)
    live = _live(desired)
    # What the API server adds (defaults) and canonicalises (quantities) is no difference.
    container = live["spec"]["template"]["spec"]["containers"][0]
    container["terminationMessagePath"] = "/dev/termination-log"
    container["resources"]["limits"]["memory"] = "0.5Gi"
    live["spec"]["revisionHistoryLimit"] = 10
    assert not needs_apply(desired, live)
    live["spec"]["replicas"] = 0
    assert needs_apply(desired, live)
    live["spec"]["replicas"] = 1
    live["metadata"]["annotations"][ANN_SPEC_HASH] = "stale"
    assert needs_apply(desired, live)


def test_subset_semantics() -> None:
    assert is_subset({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2, "c": 3}], "d": 4})
    assert not is_subset({"a": [1]}, {"a": [1, 2]})
    assert not is_subset({"a": 1}, {})
    assert is_subset({"x": 2.0}, {"x": 2})
