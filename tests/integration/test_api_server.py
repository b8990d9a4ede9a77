"""The CRDs against a real API server: installed, explained, examples apply, invalid input refused."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from support.kube import REPO, Cluster

INVALID = sorted((REPO / "tests" / "invalid").glob("*.yaml"))
EXAMPLES = sorted(p for p in (REPO / "examples").glob("[0-9][0-9]-*") if p.is_dir())


def test_crds_are_established(cluster: Cluster) -> None:
    for name in ("tradingbots", "strategyconfigs", "killswitches"):
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
    assert len(INVALID) >= 30


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
