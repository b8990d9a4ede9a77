"""The tests' ``kubectl get … -o json`` answered through a kept-alive client (support/kubeapi.py) gives
kubectl's own answer, object for object, error for error."""

from __future__ import annotations

import json
import subprocess

import pytest

from support import kubeapi
from support.kube import Cluster
from support.operator import strategy_config, trading_bot

pytestmark = pytest.mark.cluster


def real(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", *args], capture_output=True, text=True, env=cluster.env, timeout=60)


def test_answers_are_kubectls(cluster: Cluster, namespace: str) -> None:
    cluster.apply([strategy_config(), trading_bot("alpha"), trading_bot("beta", labels={"tier": "x"})],
                  namespace=namespace)
    queries = [
        ("get", "tb", "alpha", "-n", namespace, "-o", "json"),                 # a short name, one object
        ("get", "tradingbots.tradewarden.io", "-n", namespace, "-o", "json"),  # plural.group, a list
        ("get", "tradingbot/beta", f"--namespace={namespace}", "-ojson"),      # kind/name
        ("get", "tb", "-n", namespace, "-l", "tier=x", "-o", "json"),          # a label selector
        ("get", "strat", "-A", "-o", "json"),                                  # all namespaces
        ("get", "ns", namespace, "-o", "json"),                                # cluster-scoped, core group
        ("get", "configmaps", "-n", "kube-system", "--field-selector", "metadata.name=kube-root-ca.crt",
         "-o", "json"),
        ("get", "nodes", "-o", "json"),
    ]
    for args in queries:
        mine, theirs = kubeapi.get(cluster.kubeconfig, args), real(cluster, *args)
        assert mine is not None, args
        assert (mine.returncode, theirs.returncode) == (0, 0), (args, theirs.stderr)
        assert json.loads(mine.stdout) == json.loads(theirs.stdout), args
    listed = json.loads(kubeapi.get(cluster.kubeconfig, queries[1]).stdout)  # type: ignore[union-attr]
    assert sorted(i["metadata"]["name"] for i in listed["items"]) == ["alpha", "beta"]


def test_errors_are_kubectls(cluster: Cluster, namespace: str) -> None:
    args = ("get", "tb", "no-such-bot", "-n", namespace, "-o", "json")
    mine, theirs = kubeapi.get(cluster.kubeconfig, args), real(cluster, *args)
    assert mine is not None
    assert mine.returncode == theirs.returncode == 1
    assert mine.stderr.strip() == theirs.stderr.strip()
    assert "(NotFound)" in mine.stderr


def test_what_it_does_not_answer_goes_to_kubectl(cluster: Cluster, namespace: str) -> None:
    for args in [("get", "tb", "-n", namespace, "-o", "yaml"),
                 ("get", "tb,strat", "-n", namespace, "-o", "json"),
                 ("get", "tb", "-n", namespace, "--as", "someone", "-o", "json"),
                 ("get", "no-such-kind", "-o", "json")]:
        assert kubeapi.get(cluster.kubeconfig, args) is None, args
    # And through the tests' Cluster.kubectl, the real kubectl then answers.
    assert cluster.kubectl("get", "no-such-kind", "-o", "json", check=False).stderr.startswith("error:")
