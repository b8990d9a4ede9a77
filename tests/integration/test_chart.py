"""The Helm chart (charts/tradewarden): lint, render, validate against the real API server, install, and
run the real operator with nothing but the chart's RBAC.

helm comes from tests/cluster/tools.py (built from the Go module proxy, cached outside the repository).
Rendered objects are validated with server-side dry-run by the API server of the session fixture, except
the monitoring.coreos.com kinds (ServiceMonitor, PodMonitor, PrometheusRule): their CRDs are not installed
here and kubeconform cannot fetch its schemas offline, so their structure is asserted in Python instead
(test_monitoring_objects_point_at_what_exists).

The last test is the one that matters most: it installs the chart with this tree's images, so the
operator runs as the chart's Deployment pod on the node (PodSecurity restricted, nothing but the chart's
ServiceAccount), and checks that a bot from examples/01-signals-bot gets its status, ConfigMap, runner
RBAC, Lease and runner pod, that the operator's log shows no refused request, that `helm upgrade` keeps
an engaged brake engaged and `helm uninstall` keeps the CRDs and the bots' objects and data.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import re
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from cluster import tools
from support.kube import REPO, Cluster
from support.pods import NODE_SINGLETONS

CHART = REPO / "charts" / "tradewarden"
VALUES_ALL = REPO / "tests" / "chart" / "values-all.yaml"
#: Kinds the API server under test does not serve; checked structurally instead of by dry-run.
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
SHARED_RUNNER_ROLE = "tradewarden-runner-killswitches"
ONCALL_ROLE = "tradewarden-killswitch-operator"
Doc = dict[str, Any]
# The first test to ask for helm builds it when the cache is empty (about two minutes on a fresh machine;
# `make test` builds it beforehand): more than pytest's default per-test timeout allows.
pytestmark = [pytest.mark.timeout(900), NODE_SINGLETONS]


# ------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="session")
def helm_bin() -> pathlib.Path:
    return tools.helm()


def run_helm(helm_bin: pathlib.Path, *args: str, kubeconfig: str | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    proc = subprocess.run([str(helm_bin), *args], capture_output=True, text=True, env=env, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def render(helm_bin: pathlib.Path, *args: str, namespace: str = "tw-system", release: str = "tw") -> list[Doc]:
    out = run_helm(helm_bin, "template", release, str(CHART), "-n", namespace, *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def all_flags(namespace: str) -> tuple[str, ...]:
    """values-all.yaml plus the values that must name namespaces which exist."""
    return ("-f", str(VALUES_ALL), "--set-json", f'rbac.credentialsNamespaces=["{namespace}"]',
            "--set", f"metrics.grafanaDashboard.namespace={namespace}")


def by_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def rbac_rules(docs: list[Doc]) -> list[tuple[str, Doc]]:
    return [(f"{d['kind']}/{d['metadata']['name']}", rule)
            for d in docs if d["kind"] in ("Role", "ClusterRole") for rule in d.get("rules") or []]


# ------------------------------------------------------------------------------------------- no cluster


def test_helm_lint_passes_with_default_and_all_flags(helm_bin: pathlib.Path) -> None:
    run_helm(helm_bin, "lint", "--strict", str(CHART))
    run_helm(helm_bin, "lint", "--strict", str(CHART), *all_flags("tw-system"))


def test_values_schema_refuses_unknown_keys_and_bad_values(helm_bin: pathlib.Path) -> None:
    for bad, expected in (
        (("--set", "operatr.verbose=true"), "additional properties 'operatr' not allowed"),
        (("--set", "operator.metricsPort=80"), "minimum"),
        (("--set", "metrics.serviceMonitor.enabled=yes"), "boolean"),
        (("--set", "image.digest=latest"), "pattern"),
    ):
        proc = run_helm(helm_bin, "template", "tw", str(CHART), *bad, check=False)
        assert proc.returncode != 0, f"helm accepted {bad}"
        assert expected in proc.stderr, proc.stderr


def test_every_value_is_commented() -> None:
    """The chart is an API: every value in values.yaml has a comment right above it, or sits inside a
    commented value (the default `resources` map is documented once, not per line)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    ancestors: list[tuple[int, bool]] = []  # (indent, has its own comment) of the enclosing keys
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):(.*)$", line)
        if not match:
            continue
        indent = len(match.group(1))
        while ancestors and ancestors[-1][0] >= indent:
            ancestors.pop()
        commented = i > 0 and lines[i - 1].strip().startswith("#")
        is_section = match.group(3).strip() == ""  # a map whose keys follow
        if not is_section and not commented and not any(c for _, c in ancestors):
            undocumented.append(f"line {i + 1}: {line.strip()}")
        ancestors.append((indent, commented))
    assert undocumented == [], "values without a comment:\n" + "\n".join(undocumented)


def test_no_rbac_rule_uses_a_wildcard(helm_bin: pathlib.Path) -> None:
    for args in ((), all_flags("tw-system")):
        docs = render(helm_bin, *args)
        rules = rbac_rules(docs)
        assert len(rules) >= 10
        for where, rule in rules:
            for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                values = rule.get(key) or []
                assert not any("*" in v for v in values), f"{where}: wildcard in {key}: {rule}"
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), f"{where}: {rule}"


def test_operator_role_never_reads_secrets_by_default(helm_bin: pathlib.Path) -> None:
    # The one exception: the operator's own gate signing key, in the release namespace, read by name.
    gate_key = [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["tradewarden-gate-signing-key"],
                 "verbs": ["get"]}, {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}]
    for where, rule in rbac_rules(render(helm_bin)):
        if where == "Role/tw-tradewarden-operator-gate-key":
            assert rule in gate_key, f"{where} grants more than the gate key: {rule}"
            continue
        assert "secrets" not in rule.get("resources", []), f"{where} grants secrets: {rule}"
    gate_role = next(r for r in by_kind(render(helm_bin), "Role") if r["metadata"]["name"].endswith("-gate-key"))
    assert gate_role["metadata"]["namespace"] == "tw-system"
    assert gate_role["rules"] == gate_key
    roles = by_kind(render(helm_bin, *all_flags("trading-prod")), "Role")
    creds = [r for r in roles if r["metadata"]["name"].endswith("-operator-credentials")]
    assert [r["metadata"]["namespace"] for r in creds] == ["trading-prod"]
    assert creds[0]["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    assert {r["metadata"]["name"] for r in roles} == {"tw-tradewarden-operator-credentials",
                                                      "tw-tradewarden-operator-reviewers",
                                                      "tw-tradewarden-operator-gate-key"}


def test_reviewers_file_and_exactly_their_secrets(helm_bin: pathlib.Path) -> None:
    """values.reviewers becomes the operator's --reviewers file, and `get` on exactly those Secrets."""
    from tradewarden.controller.reviewers import parse_reviewers

    assert not [d for d in render(helm_bin) if "reviewers" in d["metadata"]["name"]], "opt-in"
    docs = render(helm_bin, *all_flags("tw-system"))
    config = one(docs, "ConfigMap", "tw-tradewarden-reviewers")
    reviewers = parse_reviewers(config["data"]["reviewers.yaml"])
    assert [(r.name, r.model, r.timeout_seconds) for r in reviewers] == [("gpt-risk", "gpt-4o-mini", 20.0),
                                                                          ("local-risk", "local-model", 30.0)]
    assert [(r.api_key_secret_ref.namespace, r.api_key_secret_ref.name, r.api_key_secret_ref.key)
            for r in reviewers if r.api_key_secret_ref] == [("tw-system", "openai-reviewer", "apiKey"),
                                                            ("tw-system", "local-llm", "token")]
    role = one(docs, "Role", "tw-tradewarden-operator-reviewers")
    assert role["metadata"]["namespace"] == "tw-system"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"],
                              "resourceNames": ["openai-reviewer", "local-llm"], "verbs": ["get"]}]
    binding = one(docs, "RoleBinding", "tw-tradewarden-operator-reviewers")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == one(docs, "ServiceAccount")["metadata"]["name"]
    pod = one(docs, "Deployment")["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert "--reviewers=/etc/tradewarden/reviewers.yaml" in container["args"]
    assert {"name": "reviewers", "mountPath": "/etc/tradewarden", "readOnly": True} in container["volumeMounts"]
    assert {"name": "reviewers", "configMap": {"name": "tw-tradewarden-reviewers"}} in pod["spec"]["volumes"]
    assert "checksum/reviewers" in pod["metadata"]["annotations"]


def test_sync_waves_order_crds_then_the_rest(helm_bin: pathlib.Path) -> None:
    docs = render(helm_bin, *all_flags("tw-system"))
    for doc in docs:
        wave = (doc["metadata"].get("annotations") or {}).get("argocd.argoproj.io/sync-wave", "0")
        expected = "-10" if doc["kind"] == "CustomResourceDefinition" else "0"
        assert wave == expected, f"{doc['kind']} {doc['metadata']['name']}: sync-wave {wave}, want {expected}"
    assert {d["spec"]["names"]["kind"] for d in by_kind(docs, "CustomResourceDefinition")} == \
        {"TradingBot", "StrategyConfig", "KillSwitch", "GateOverride"}


def _operator_args(docs: list[Doc]) -> list[str]:
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    args: list[str] = container["args"]
    return args


def test_global_killswitch_is_the_operators_not_a_chart_object(helm_bin: pathlib.Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The chart renders no KillSwitch, with every flag: one install works on a cluster without the CRDs
    (Helm maps every object before creating any), and no upgrade, sync or uninstall can reset or delete
    the brake. The operator creates it instead (--ensure-killswitch): its role holds create on
    killswitches, and neither update nor delete (the ensure logic: tests/integration/test_global_killswitch.py)."""
    for args in ((), all_flags("tw-system"), ("--set", "globalKillSwitch.create=false")):
        docs = render(helm_bin, *args)
        assert by_kind(docs, "KillSwitch") == [], args
        assert not [d for d in docs if "helm.sh/hook" in (d["metadata"].get("annotations") or {})], \
            "no Helm hooks: Argo CD re-applies them on every sync"
    args = _operator_args(render(helm_bin, "--set", "globalKillSwitch.name=brake",
                                 "--set", "globalKillSwitch.reason=set up: by the chart"))
    assert "--ensure-killswitch=brake" in args
    assert "--ensure-killswitch-reason=set up: by the chart" in args
    assert "--ensure-killswitch=global" in _operator_args(render(helm_bin))
    assert not [a for a in _operator_args(render(helm_bin, "--set", "globalKillSwitch.create=false"))
                if a.startswith("--ensure-killswitch")]
    role = one(render(helm_bin), "ClusterRole", "tw-tradewarden-operator")
    verbs = {v for rule in role["rules"] if "tradewarden.io" in rule["apiGroups"]
             and "killswitches" in rule["resources"] for v in rule["verbs"]}
    assert verbs == {"get", "list", "watch", "create", "patch"}, "never update or delete a brake"
    # The operator accepts the flags exactly as the chart passes them.
    from tradewarden import cli

    seen: dict[str, Any] = {}
    monkeypatch.setattr("tradewarden.controller.main.run_operator", lambda parsed: seen.update(vars(parsed)) or 0)
    assert cli.main(_operator_args(render(helm_bin))) == 0
    assert (seen["ensure_killswitch"], seen["ensure_killswitch_reason"]) == \
        ("global", "Installed by the tradewarden chart; engage by patching spec.mode.")


def test_crds_are_kept_and_optional(helm_bin: pathlib.Path) -> None:
    crds = render(helm_bin, "--set", "crds.install=false")
    assert by_kind(crds, "CustomResourceDefinition") == []
    for crd in by_kind(render(helm_bin), "CustomResourceDefinition"):
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_operator_deployment_shape(helm_bin: pathlib.Path) -> None:
    docs = render(helm_bin, "--set", "runnerImage.tag=1.2.3")
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["args"][0] == "operator"
    assert "--runner-image=tradewarden/runner:1.2.3" in container["args"]
    assert "--metrics-port=8080" in container["args"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert {"name": "metrics", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    assert container["resources"]["limits"]["memory"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]


def test_someone_always_keeps_the_shared_runner_role(helm_bin: pathlib.Path) -> None:
    """The chart installs the runners' kill-switch ClusterRole and its operator leaves it alone; without
    it (runnerKillSwitchRole.create=false) the operator keeps the role, so no release is left without one."""
    def manage(*args: str) -> str:
        (container,) = one(render(helm_bin, *args), "Deployment")["spec"]["template"]["spec"]["containers"]
        return next(e["value"] for e in container["env"] if e["name"] == "TRADEWARDEN_MANAGE_RUNNER_CLUSTERROLE")

    assert manage() == "false"
    one(render(helm_bin), "ClusterRole", SHARED_RUNNER_ROLE)
    assert manage("--set", "runnerKillSwitchRole.create=false") == "true"
    assert not [d for d in render(helm_bin, "--set", "runnerKillSwitchRole.create=false")
                if d["kind"] == "ClusterRole" and d["metadata"]["name"] == SHARED_RUNNER_ROLE]


def test_shared_runner_role_is_exactly_what_the_operator_applies(helm_bin: pathlib.Path) -> None:
    """The chart and the operator both write this ClusterRole: any difference and they fight forever."""
    from tradewarden.controller.builders import build_fleet_cluster_role

    chart_role = one(render(helm_bin), "ClusterRole", SHARED_RUNNER_ROLE)
    operator_role = build_fleet_cluster_role()
    assert chart_role["rules"] == operator_role["rules"]
    # Whatever metadata the operator applies must already be on the chart's copy (the operator's
    # needs_apply() compares desired fields as a subset of the live object).
    for key in ("labels", "annotations"):
        want = operator_role["metadata"].get(key) or {}
        assert want.items() <= (chart_role["metadata"].get(key) or {}).items(), key
    assert by_kind(render(helm_bin), "ClusterRoleBinding") == [one(render(helm_bin), "ClusterRoleBinding")], \
        "only the operator's own binding: the shared runner binding belongs to the operator"


def test_oncall_role_can_brake_and_look_and_nothing_else(helm_bin: pathlib.Path) -> None:
    docs = render(helm_bin, *all_flags("tw-system"))
    role = one(docs, "ClusterRole", ONCALL_ROLE)
    assert role["rules"] == [
        {"apiGroups": ["tradewarden.io"], "resources": ["killswitches"],
         "verbs": ["get", "list", "watch", "patch", "update"]},
        {"apiGroups": ["tradewarden.io"], "resources": ["tradingbots", "strategyconfigs"],
         "verbs": ["get", "list", "watch"]},
    ]
    binding = one(docs, "ClusterRoleBinding", ONCALL_ROLE)
    assert {(s["kind"], s["name"]) for s in binding["subjects"]} == {("Group", "trading-oncall"),
                                                                      ("User", "alice@example.com")}
    assert by_kind(render(helm_bin), "ClusterRoleBinding")[0]["metadata"]["name"] != ONCALL_ROLE


def test_monitoring_objects_point_at_what_exists(helm_bin: pathlib.Path) -> None:
    """ServiceMonitor, PodMonitor, PrometheusRule and the dashboard, checked without their CRDs."""
    from tradewarden.api.tradingbot import TradingBot
    from tradewarden.controller.builders import OperatorDefaults, build_statefulset

    assert not [d for d in render(helm_bin) if d["kind"] in MONITORING_KINDS], "monitoring must be opt-in"
    docs = render(helm_bin, *all_flags("tw-system"))
    service = one(docs, "Service")
    deployment = one(docs, "Deployment")

    sm = one(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["tw-system"]}
    assert sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in sm["spec"]["endpoints"]] == [p["name"] for p in service["spec"]["ports"]]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()

    pm = one(docs, "PodMonitor")
    assert pm["apiVersion"] == "monitoring.coreos.com/v1"
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    bot = TradingBot.model_validate({
        "metadata": {"name": "probe", "namespace": "ns", "uid": "u1", "generation": 1},
        "spec": {"strategyConfigRef": "momentum", "exchange": {"id": "binance"}}})
    runner = build_statefulset(bot, OperatorDefaults(runner_image="tradewarden/runner:test"))["spec"]["template"]
    assert pm["spec"]["selector"]["matchLabels"].items() <= runner["metadata"]["labels"].items()
    runner_ports = {p["name"] for c in runner["spec"]["containers"] for p in c.get("ports", [])}
    assert {e["port"] for e in pm["spec"]["podMetricsEndpoints"]} <= runner_ports

    rule = one(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    rules_file = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    assert rule["spec"]["groups"] == rules_file["groups"]

    dashboard = one(docs, "ConfigMap", "tw-tradewarden-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["tradewarden.json"]) == \
        json.loads((CHART / "files" / "grafana-dashboard.json").read_text())


# ------------------------------------------------------------------------------------------- the API server


@pytest.mark.cluster
@pytest.mark.parametrize("flags", ["default", "all-flags"])
def test_every_rendered_object_passes_server_side_dry_run(helm_bin: pathlib.Path, cluster: Cluster,
                                                          namespace: str, flags: str) -> None:
    args = () if flags == "default" else all_flags(namespace)
    docs = render(helm_bin, *args, namespace=namespace)
    checked = [d for d in docs if d["kind"] not in MONITORING_KINDS]
    assert len(checked) >= 10
    # Server-side apply in dry-run: the API server runs defaulting, validation (OpenAPI and CEL),
    # admission and RBAC escalation checks, and stores nothing. Fixed-name cluster objects that exist
    # already (the CRDs, the shared runner role) are validated as updates.
    proc = cluster.kubectl("apply", "--server-side", "--dry-run=server", "--force-conflicts",
                           "--field-manager=tradewarden-chart-test", "-f", "-",
                           input=yaml.safe_dump_all(checked), check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("(server dry run)") == len(checked), proc.stdout


def _can_i(cluster: Cluster, account: str, *args: str) -> bool:
    proc = cluster.kubectl("auth", "can-i", *args, "--as", account, check=False)
    return proc.stdout.strip() == "yes"


def _token_kubeconfig(cluster: Cluster, namespace: str, account: str, path: pathlib.Path) -> str:
    """A kubeconfig that authenticates as the ServiceAccount with a short-lived token, nothing else."""
    admin = yaml.safe_load(pathlib.Path(cluster.kubeconfig).read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    server = next(c for c in admin["clusters"] if c["name"] == context["cluster"])["cluster"]
    token = cluster.kubectl("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "chart-sa",
        "clusters": [{"name": "local", "cluster": server}],
        "users": [{"name": "chart-sa", "user": {"token": token}}],
        "contexts": [{"name": "chart-sa", "context": {"cluster": "local", "user": "chart-sa"}}],
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return str(path)


@pytest.fixture
def chart_release(helm_bin: pathlib.Path, cluster: Cluster, namespace: str) -> Iterator[dict[str, str]]:
    from support.pods import image_tag

    image_tag(cluster)  # this tree's images on the node, or a clear failure
    """The chart installed into the test's namespace, the operator watching ``<prefix>-*`` namespaces."""
    suffix = uuid.uuid4().hex[:5]
    release = f"tradewarden-{suffix}"
    prefix = f"twc{suffix}"
    creds_ns = f"{prefix}-creds"
    # Pods admitted in the release namespace must pass PodSecurity "restricted".
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
                    "pod-security.kubernetes.io/enforce-version=latest")
    cluster.kubectl("create", "namespace", creds_ns)
    install = run_helm(
        helm_bin, "install", release, str(CHART), "-n", namespace,
        # The session fixture installed the CRDs. `global` selects every bot of the shared cluster: the
        # operator pod ensures a switch of this test's own name instead (deleted afterwards).
        "--set", "crds.install=false", "--set", f"globalKillSwitch.name={prefix}-global",
        "--set", f"image.tag={cluster.image_tag}", "--set", f"runnerImage.tag={cluster.image_tag}",
        "--set-json", f'operator.namespaces=["{prefix}-*"]',
        "--set-json", f'rbac.credentialsNamespaces=["{creds_ns}"]',
        # The shared runner ClusterRole is every operator's here (other tests' operators run side by side):
        # this release's operator keeps it like them, and its uninstall neither deletes it nor waits on it
        # (the default, chart-installed role is installed for real by the demo and the recovery test).
        "--set", "runnerKillSwitchRole.create=false",
        # A run that crashed may have left the chart's fixed-name access roles behind.
        "--take-ownership",
        kubeconfig=cluster.kubeconfig, check=False)
    try:
        assert install.returncode == 0, install.stderr
        assert "kubectl patch killswitch" in install.stdout  # NOTES.txt
        yield {"release": release, "namespace": namespace, "prefix": prefix, "creds": creds_ns,
               "account": f"{release}-operator", "deployment": f"{release}-operator"}
    finally:
        run_helm(helm_bin, "uninstall", release, "-n", namespace, "--wait=false", kubeconfig=cluster.kubeconfig,
                 check=False)
        cluster.kubectl("delete", "namespace", creds_ns, "--wait=false", check=False)
        cluster.kubectl("delete", "killswitch", f"{prefix}-global", "--ignore-not-found", "--wait=false", check=False)


@pytest.mark.cluster
def test_helm_install_then_the_operator_runs_on_the_charts_rbac(
        cluster: Cluster, chart_release: dict[str, str], helm_bin: pathlib.Path) -> None:
    ns, prefix = chart_release["namespace"], chart_release["prefix"]
    account = f"system:serviceaccount:{ns}:{chart_release['account']}"

    # 1. The Deployment exists and its pod template passes PodSecurity "restricted".
    dep = cluster.get_json("deployment", chart_release["deployment"], "-n", ns)
    template = dep["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "psa-probe", "namespace": ns, "labels": template["metadata"]["labels"]},
           "spec": template["spec"]}
    ok = cluster.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
    assert ok.returncode == 0, f"the operator's pod does not pass PodSecurity restricted:\n{ok.stderr}"
    # Control: the namespace really enforces "restricted" (else the check above proves nothing).
    weak = json.loads(json.dumps(pod))
    del weak["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"]
    refused = cluster.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(weak), check=False)
    assert refused.returncode != 0, "a pod without allowPrivilegeEscalation=false was admitted"
    assert "PodSecurity" in refused.stderr, refused.stderr
    # And the real path: kube-controller-manager's ReplicaSet made the pod.
    selector = ",".join(f"{k}={v}" for k, v in dep["spec"]["selector"]["matchLabels"].items())
    cluster.wait_for(lambda: cluster.get_json("pods", "-n", ns, "-l", selector)["items"], timeout=30,
                     what="the operator pod admitted under PodSecurity restricted")

    # 2. What the chart's ServiceAccount may and may not do.
    bots_ns = f"{prefix}-bots"
    allowed = [
        ("patch", "tradingbots.tradewarden.io", "--subresource=status", "-n", bots_ns),
        ("patch", "killswitches.tradewarden.io/global"),
        ("list", "killswitches.tradewarden.io"),
        ("create", "killswitches.tradewarden.io"),  # --ensure-killswitch
        ("create", "configmaps", "-n", bots_ns),
        # Held to grant each runner get+update on its own evidence ConfigMap (builders.runner_rules).
        ("update", "configmaps", "-n", bots_ns),
        ("get", "configmaps", "-n", bots_ns),
        ("create", "roles.rbac.authorization.k8s.io", "-n", bots_ns),
        ("update", "leases.coordination.k8s.io", "-n", bots_ns),
        ("patch", f"clusterrolebindings.rbac.authorization.k8s.io/{SHARED_RUNNER_ROLE}"),
        ("create", f"clusterrolebindings.rbac.authorization.k8s.io/{SHARED_RUNNER_ROLE}"),
        ("watch", f"clusterroles.rbac.authorization.k8s.io/{SHARED_RUNNER_ROLE}"),
        ("get", "secrets", "-n", chart_release["creds"]),  # rbac.credentialsNamespaces only
    ]
    denied = [
        ("delete", "nodes"),
        ("get", "secrets", "-n", "kube-system"),
        ("get", "secrets", "-n", bots_ns),
        ("list", "secrets", "-n", chart_release["creds"]),
        ("list", "secrets", "--all-namespaces"),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),  # any other name
        ("patch", "clusterroles.rbac.authorization.k8s.io/cluster-admin"),
        ("list", "clusterroles.rbac.authorization.k8s.io"),  # only the shared one, by name
        ("escalate", "roles.rbac.authorization.k8s.io", "-n", bots_ns),
        ("bind", "clusterroles.rbac.authorization.k8s.io"),
        ("create", "pods", "-n", bots_ns),
        ("update", "tradingbots.tradewarden.io", "-n", bots_ns),
        ("delete", "tradingbots.tradewarden.io", "-n", bots_ns),
        ("delete", "killswitches.tradewarden.io/global"),
        ("update", "killswitches.tradewarden.io/global"),
        ("create", "deployments.apps", "-n", bots_ns),
    ]
    wrong = [("allowed", a) for a in allowed if not _can_i(cluster, account, *a)]
    wrong += [("denied", d) for d in denied if _can_i(cluster, account, *d)]
    assert wrong == [], f"the chart's RBAC differs from the intent: {wrong}"

    # 3. The real operator: the chart's own pod, on the node, with nothing but the chart's ServiceAccount.
    pod = cluster.wait_for(lambda: next(iter(
        p for p in cluster.get_json("pods", "-n", ns, "-l", selector)["items"]
        if any(c["type"] == "Ready" and c["status"] == "True" for c in (p.get("status") or {}).get("conditions", []))),
        None), timeout=120, interval=0.5, what="the operator pod Ready (its probes pass)")
    assert pod["spec"]["serviceAccountName"] == chart_release["account"]
    # No credentials but the projected ServiceAccount token: no Secret volume, no env from a Secret.
    assert [v for v in pod["spec"]["volumes"] if "secret" in v] == []
    container = pod["spec"]["containers"][0]
    assert not [e for e in container.get("env", []) if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]]
    assert container["image"] == f"tradewarden/operator:{cluster.image_tag}"
    brake = f"{prefix}-global"
    cluster.kubectl("create", "namespace", bots_ns)

    def operator_log() -> str:
        return cluster.kubectl("logs", "-n", ns, pod["metadata"]["name"], "--tail=2000", check=False).stdout

    try:
        for manifest in sorted((REPO / "examples" / "01-signals-bot").glob("*.yaml")):
            cluster.kubectl("apply", "-n", bots_ns, "-f", str(manifest))

        def reconciled() -> bool:
            bot = cluster.get_json("tradingbot", "btc-signals", "-n", bots_ns)
            cm = cluster.kubectl("get", "configmap", "btc-signals-runtime", "-n", bots_ns, check=False)
            return bool((bot.get("status") or {}).get("phase")) and cm.returncode == 0

        try:
            cluster.wait_for(reconciled, timeout=60, interval=0.5, what="btc-signals status.phase and ConfigMap")
            # The runner's identity and its least-privilege Role: creating them passed the API server's
            # RBAC escalation check, so the chart's role holds everything it grants.
            for kind, name in (("serviceaccount", "btc-signals-runner"), ("role", "btc-signals-runner"),
                               ("rolebinding", "btc-signals-runner"), ("lease", "btc-signals-runner"),
                               ("pvc", "journal-btc-signals-runner-0")):
                cluster.wait_for(lambda k=kind, n=name: cluster.kubectl("get", k, n, "-n", bots_ns,
                                                                          check=False).returncode == 0,
                                 timeout=60, what=f"{kind} {name}")
            cluster.wait_for(lambda: any(
                s.get("namespace") == bots_ns
                for s in cluster.get_json("clusterrolebinding", SHARED_RUNNER_ROLE).get("subjects") or []),
                timeout=30, what="the runner in the shared kill-switch binding")
            # In one step: the operator pod made the chart's global switch (here under this test's name).
            cluster.wait_for(lambda: cluster.kubectl("get", "killswitch", brake, check=False).returncode == 0,
                             timeout=60, what=f"KillSwitch {brake} created under the chart's RBAC")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- operator log ---\n{operator_log()[-6000:]}") from None
        refusal = re.compile(r"forbidden|not enough permissions|\b(?:status|code|HTTP)[ :=]*403\b", re.IGNORECASE)
        refused = [line for line in operator_log().splitlines() if refusal.search(line)]
        assert refused == [], "the operator was refused requests under the chart's RBAC:\n" + "\n".join(refused)

        # 4. helm upgrade: the pod rolls, and a brake on-call engaged stays engaged.
        cluster.kubectl("patch", "killswitch", brake, "--type=merge", "-p",
                        json.dumps({"spec": {"mode": "halt_all", "reason": "on-call, before the upgrade"}}))
        run_helm(helm_bin, "upgrade", chart_release["release"], str(CHART), "-n", ns, "--reuse-values",
                 "--set", "operator.verbose=true", "--wait", "--timeout", "120s", kubeconfig=cluster.kubeconfig)
        rolled = cluster.get_json("deployment", chart_release["deployment"], "-n", ns)
        assert "--verbose" in rolled["spec"]["template"]["spec"]["containers"][0]["args"]
        assert (rolled.get("status") or {}).get("readyReplicas") == 1
        assert cluster.get_json("killswitch", brake)["spec"]["mode"] == "halt_all"

        # 5. helm uninstall: the operator goes; the CRDs, the bots, their data and the brake stay.
        run_helm(helm_bin, "uninstall", chart_release["release"], "-n", ns, "--wait", kubeconfig=cluster.kubeconfig)
        assert cluster.kubectl("get", "deployment", chart_release["deployment"], "-n", ns,
                               check=False).returncode != 0
        for crd in ("tradingbots", "strategyconfigs", "killswitches", "gateoverrides"):
            assert cluster.kubectl("get", "crd", f"{crd}.tradewarden.io", check=False).returncode == 0
        assert cluster.get_json("tradingbot", "btc-signals", "-n", bots_ns)["metadata"]["name"] == "btc-signals"
        assert cluster.get_json("pvc", "journal-btc-signals-runner-0", "-n", bots_ns)["status"]["phase"] == "Bound"
        assert cluster.get_json("killswitch", brake)["spec"]["mode"] == "halt_all"
    finally:
        cluster.kubectl("delete", "namespace", bots_ns, "--wait=false", check=False)


def test_kubeconfig_helper_keeps_no_admin_credentials(tmp_path: pathlib.Path) -> None:
    """The operator must run as the ServiceAccount only: the kubeconfig carries a token and the CA."""
    admin = {"apiVersion": "v1", "kind": "Config", "current-context": "admin",
             "contexts": [{"name": "admin", "context": {"cluster": "c", "user": "admin"}}],
             "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1",
                                                   "certificate-authority-data": base64.b64encode(b"ca").decode()}}],
             "users": [{"name": "admin", "user": {"client-key-data": "secret", "client-certificate-data": "x"}}]}
    path = tmp_path / "admin.kubeconfig"
    path.write_text(yaml.safe_dump(admin))

    class FakeCluster(Cluster):
        def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                    timeout: float = 60) -> subprocess.CompletedProcess[str]:
            return subprocess.CompletedProcess(list(args), 0, "tok\n", "")

    out = pathlib.Path(_token_kubeconfig(FakeCluster(kubeconfig=str(path), owned=False), "ns", "sa",
                                         tmp_path / "sa.kubeconfig"))
    config = yaml.safe_load(out.read_text())
    assert config["users"] == [{"name": "chart-sa", "user": {"token": "tok"}}]
    assert "client-key-data" not in out.read_text()
    assert oct(out.stat().st_mode & 0o777) == "0o600"
