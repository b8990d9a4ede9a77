"""The CRDs against a real API server: installed, explained, examples apply, invalid input refused."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from support.kube import REPO, Cluster

INVALID = sorted((REPO / "tests" / "invalid").glob("*.yaml"))
EXAMPLES = sorted(p for p in (REPO / "examples").glob("[0-9][0-9]-*") if p.is_dir())


def test_crds_are_established(cluster: Cluster) -> None:
    for name in ("tradingbots", "strategyconfigs", "killswitches", "gateoverrides"):
        crd = cluster.get_json("crd", f"{name}.tradewarden.io")
        conds = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conds["Established"] == "True"
        assert conds["NamesAccepted"] == "True"


def test_kubectl_explain_shows_the_model_descriptions(cluster: Cluster) -> None:
    out = cluster.wait_for(lambda: cluster.kubectl("explain", "tradingbot.spec.risk", check=False).stdout,
                           what="kubectl explain to find the CRD")
    assert "maxDrawdownPct" in out
    assert "trips a bot-scoped halt" in out  # the pydantic Field description
    ks = cluster.kubectl("explain", "killswitch.spec.mode").stdout
    assert "close_only" in ks


def test_short_names_and_category(cluster: Cluster, namespace: str) -> None:
    out = cluster.kubectl("api-resources", "--api-group=tradewarden.io", "-o", "wide").stdout
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "tb,bot" in rows["tradingbots"]
    assert "trading" in rows["tradingbots"]
    assert "sc,strat" in rows["strategyconfigs"]
    assert "ks" in rows["killswitches"]
    assert "gov" in rows["gateoverrides"]
    assert "trading" in rows["gateoverrides"]
    cluster.apply(_bot("shorty"), namespace=namespace)
    for short in ("tb", "bot", "trading"):
        assert "shorty" in cluster.kubectl("get", short, "-n", namespace).stdout
    # kubectl resolves `sc` to the built-in StorageClass first; `strat` is ours alone.
    assert cluster.kubectl("get", "strat", "-n", namespace).returncode == 0


def _example_manifests(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in folder.glob("*.yaml") if not p.name.startswith("_"))


@pytest.mark.parametrize("folder", EXAMPLES, ids=lambda p: p.name)
def test_every_example_applies_cleanly(cluster: Cluster, namespace: str, folder: pathlib.Path) -> None:
    manifests = _example_manifests(folder)
    assert manifests, f"{folder.name} has no manifests"
    assert (folder / "README.md").is_file(), f"{folder.name} needs a README.md"
    for path in manifests:
        # Argo CD's kinds (examples/07-argocd) need Argo CD, which this cluster does not run;
        # tests/unit/test_argocd_health.py checks them instead.
        docs = [d for d in yaml.safe_load_all(path.read_text())
                if d and not str(d.get("apiVersion", "")).startswith("argoproj.io/")]
        if not docs:
            continue
        # Cluster-scoped examples (KillSwitches) are renamed so tests never collide with one another.
        for doc in docs:
            if doc["kind"] == "KillSwitch":
                doc["metadata"]["name"] = f"{namespace}-{doc['metadata']['name']}"[:63]
        proc = cluster.apply(docs, namespace=namespace, check=False)
        assert proc.returncode == 0, f"{path.relative_to(REPO)} did not apply:\n{proc.stderr}"
        for doc in docs:
            if doc["kind"] == "KillSwitch":
                cluster.kubectl("delete", "killswitch", doc["metadata"]["name"], "--ignore-not-found")


def test_kubectl_get_shows_the_printer_columns(cluster: Cluster, namespace: str) -> None:
    cluster.apply(_bot("columns"), namespace=namespace)
    header = cluster.kubectl("get", "tb", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "MODE", "EFFECTIVE", "STRATEGY", "PHASE", "REPLAY", "CONSENSUS", "PNL", "AGE"]
    row = cluster.kubectl("get", "tb", "columns", "-n", namespace).stdout.splitlines()[1].split()
    assert row[1] == "signals"  # the API server defaulted spec.mode from the schema
    cluster.apply({"apiVersion": "tradewarden.io/v1alpha1", "kind": "StrategyConfig",
                   "metadata": {"name": "momentum-btc"}, "spec": {"strategy": "momentum"}}, namespace=namespace)
    sc = cluster.kubectl("get", "strategyconfigs", "-n", namespace).stdout.splitlines()
    assert sc[0].split() == ["NAME", "STRATEGY", "VALID", "BOTS", "AGE"]
    assert sc[1].split()[:2] == ["momentum-btc", "momentum"]
    ks_name = f"{namespace}-cols"[:63]
    cluster.apply({"apiVersion": "tradewarden.io/v1alpha1", "kind": "KillSwitch", "metadata": {"name": ks_name},
                   "spec": {"mode": "off", "selector": {"namespaces": [namespace]}}})
    try:
        ks = cluster.kubectl("get", "ks", ks_name).stdout.splitlines()
        assert ks[0].split() == ["NAME", "MODE", "MATCHED", "ACKED", "AGE"]
        assert ks[1].split()[:2] == [ks_name, "off"]
    finally:
        cluster.kubectl("delete", "ks", ks_name, check=False)


def _bot(name: str) -> dict[str, object]:
    return {"apiVersion": "tradewarden.io/v1alpha1", "kind": "TradingBot", "metadata": {"name": name},
            "spec": {"strategyConfigRef": "momentum-btc", "exchange": {"id": "binance"}}}


def test_server_fills_every_default(cluster: Cluster, namespace: str) -> None:
    cluster.apply(_bot("defaults"), namespace=namespace)
    spec = cluster.get_json("tb", "defaults", "-n", namespace)["spec"]
    assert spec["mode"] == "signals"
    assert spec["placement"] == "cluster"
    assert spec["risk"]["entryOrdersPerMinute"] == 30
    assert spec["risk"]["maxDrawdownPct"] == 0
    assert spec["capital"]["liveSteps"] == [100, 500, 1000, 2500]
    assert spec["allowedIntentSources"] == ["strategy"]


def test_invalid_corpus_is_large_enough() -> None:
    assert len(INVALID) >= 86


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_manifest_is_refused_naming_the_field(cluster: Cluster, namespace: str,
                                                      path: pathlib.Path) -> None:
    text = path.read_text()
    expect = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("# expect:"))
    docs = [d for d in yaml.safe_load_all(text) if d]
    *before, bad = docs
    for doc in before:  # transition rules: earlier documents set the old state and must apply
        cluster.apply(doc, namespace=namespace)
    if bad["kind"] == "KillSwitch":
        bad["metadata"]["name"] = f"{namespace}-{bad['metadata']['name']}"[:63]
    proc = cluster.apply(bad, namespace=None if bad["kind"] == "KillSwitch" else namespace, check=False)
    assert proc.returncode != 0, f"{path.name} was accepted but must be refused"
    assert expect in proc.stderr, f"{path.name}: the error does not name {expect!r}:\n{proc.stderr}"


def _gov(name: str, **spec: object) -> dict[str, object]:
    body: dict[str, object] = {"botName": "columns", "reason": "replay workers down, INC-4711",
                               "expiresAt": "2030-01-01T04:00:00Z"}
    body.update(spec)
    return {"apiVersion": "tradewarden.io/v1alpha1", "kind": "GateOverride", "metadata": {"name": name},
            "spec": body}


def test_gate_override_columns_and_immutable_spec(cluster: Cluster, namespace: str) -> None:
    cluster.apply(_gov("outage"), namespace=namespace)
    out = cluster.kubectl("get", "gov", "-n", namespace).stdout.splitlines()
    assert out[0].split() == ["NAME", "BOT", "EXPIRES", "ACTIVE", "AGE"]
    assert out[1].split()[:3] == ["outage", "columns", "2030-01-01T04:00:00Z"]
    # Metadata stays editable (labels, annotations); the spec does not.
    cluster.kubectl("label", "gov", "outage", "-n", namespace, "incident=inc-4711")
    proc = cluster.apply(_gov("outage", expiresAt="2030-01-01T08:00:00Z"), namespace=namespace, check=False)
    assert proc.returncode != 0
    assert "a GateOverride cannot be changed; delete it and create a new one" in proc.stderr
    cluster.kubectl("delete", "gov", "outage", "-n", namespace)


_CONFIRMED = {"acknowledgeRealMoney": True, "confirmedBy": "Zo\u00eb \u00dcnal <zoe@example.com>",
              "ticket": "\u53d8\u66f4-42"}
#: Inputs at the edge of the new rules that must still apply: each (kind, name, spec).
VALID_EDGES: list[tuple[str, str, dict[str, object]]] = [
    ("TradingBot", "b" * 45, {}),  # the longest name that can run
    ("TradingBot", "offset", {"mode": "paper", "manualLane": {"enabledUntil": "2030-01-01T05:30:00+05:30"}}),
    ("TradingBot", "offset-west", {"manualLane": {"enabledUntil": "2030-01-01T00:00:00.123456789-23:59"}}),
    ("TradingBot", "emulator", {"exchange": {"id": "binance", "sandbox": False, "apiUrl": "http://127.0.0.1:8080"}}),
    ("TradingBot", "gateway", {"exchange": {"id": "binance", "apiUrl": "https://gw.example:8443/binance/%7Eapi/v3/"}}),
    ("TradingBot", "ipv6", {"exchange": {"id": "binance", "apiUrl": "http://[::1]:9000"}}),
    ("TradingBot", "keys", {"exchange": {"id": "okx", "credentialsSecretRef": {
        "name": "okx-keys", "apiKeyKey": "api-key.v2_x", "secretKey": ".secret", "passwordKey": "PASS_PHRASE"}}}),
    ("TradingBot", "confirmed", {"mode": "live", "liveConfirmation": _CONFIRMED,
                                 "exchange": {"id": "binance", "credentialsSecretRef": {"name": "keys"}}}),
    ("TradingBot", "runner", {"runner": {"image": "registry.example:5000/tw/runner:1.2",
                                         "journalSize": "1.5Gi", "resources": {"requests": {"cpu": "100m"}}}}),
    ("KillSwitch", "prefixed", {"mode": "off", "selector": {
        "namespaces": ["trading-prod", "a"],
        "botSelector": {"matchLabels": {"example.com/team": "alpha", "tier": "", "T.x_y-z": "A.b_c-1"},
                        "matchExpressions": [{"key": "app.kubernetes.io/part-of", "operator": "In",
                                              "values": ["tradewarden", ""]},
                                             {"key": "pin", "operator": "DoesNotExist"},
                                             {"key": "tradewarden.io/role", "operator": "Exists", "values": []}]}}}),
    ("KillSwitch", "triggered", {"mode": "off", "trigger": {"fleetDrawdownPct": 5, "mode": "flatten"}}),
    ("GateOverride", "offset", {"botName": "columns", "reason": "\u56de\u653e\u6302\u4e86",
                                "expiresAt": "2030-01-01T09:30:00+05:30", "ticket": "INC-1"}),
]


@pytest.mark.parametrize(("kind", "name", "spec"), VALID_EDGES, ids=lambda v: v if isinstance(v, str) else "")
def test_valid_inputs_at_the_edge_of_the_rules_still_apply(cluster: Cluster, namespace: str, kind: str, name: str,
                                                            spec: dict[str, object]) -> None:
    cluster_scoped = kind == "KillSwitch"
    if cluster_scoped:
        name = f"{namespace}-{name}"[:63]
    base: dict[str, object] = {"strategyConfigRef": "momentum-btc", "exchange": {"id": "binance"}} \
        if kind == "TradingBot" else {}
    doc = {"apiVersion": "tradewarden.io/v1alpha1", "kind": kind, "metadata": {"name": name},
           "spec": {**base, **spec}}
    proc = cluster.apply(doc, namespace=None if cluster_scoped else namespace, check=False)
    if cluster_scoped:
        cluster.kubectl("delete", "ks", name, "--ignore-not-found")
    assert proc.returncode == 0, f"{kind} {name} was refused:\n{proc.stderr}"
