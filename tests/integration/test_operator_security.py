"""What the operator grants and what it runs: the runner's RBAC matrix and PodSecurity ``restricted``.

The RBAC matrix is asked of the real authorizer with ``kubectl auth can-i --as`` the runner's
ServiceAccount, allowed and denied cases alike. PodSecurity is checked by the real admission plugin:
in a namespace that enforces ``restricted`` the StatefulSet controller must manage to create the
runner pod, a server-side dry run of the pod template is admitted, and a weakened copy is refused.
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
from typing import Any

import pytest
import yaml

from support.kube import Cluster
from support.operator import OperatorProcess, strategy_config, trading_bot

pytestmark = pytest.mark.cluster


def wait_json(cluster: Cluster, op: OperatorProcess, *args: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = cluster.kubectl("get", *args, "-o", "json", check=False)
        if proc.returncode == 0:
            out: dict[str, Any] = json.loads(proc.stdout)
            return out
        time.sleep(0.2)
    raise AssertionError(f"kubectl get {' '.join(args)} found nothing in {timeout} s\n{op.log()[-3000:]}")


# (verb, resource, namespaced?, expected) for the runner of bot "alpha", whose credentials Secret is
# "alpha-keys"; "beta" is another bot in the same namespace.
RBAC_MATRIX: tuple[tuple[str, str, bool, bool], ...] = (
    ("get", "configmaps/alpha-runtime", True, True),
    ("watch", "configmaps/alpha-runtime", True, True),
    ("get", "configmaps/alpha-evidence", True, True),
    ("update", "configmaps/alpha-evidence", True, True),
    ("get", "secrets/alpha-keys", True, True),
    ("get", "leases.coordination.k8s.io/alpha-runner", True, True),
    ("update", "leases.coordination.k8s.io/alpha-runner", True, True),
    ("list", "killswitches.tradewarden.io", False, True),
    ("watch", "killswitches.tradewarden.io", False, True),
    ("get", "killswitches.tradewarden.io/global", False, True),
    # denied
    ("get", "configmaps/beta-runtime", True, False),
    ("list", "configmaps", True, False),
    ("update", "configmaps/alpha-runtime", True, False),
    ("patch", "configmaps/alpha-runtime", True, False),
    ("patch", "configmaps/alpha-evidence", True, False),
    ("delete", "configmaps/alpha-evidence", True, False),
    ("watch", "configmaps/alpha-evidence", True, False),
    ("get", "configmaps/beta-evidence", True, False),
    ("update", "configmaps/beta-evidence", True, False),
    ("create", "configmaps", True, False),
    ("get", "secrets/other-keys", True, False),
    ("list", "secrets", True, False),
    ("watch", "secrets/alpha-keys", True, False),
    ("get", "pods", True, False),
    ("create", "pods", True, False),
    ("patch", "killswitches.tradewarden.io/global", False, False),
    ("update", "killswitches.tradewarden.io/global", False, False),
    ("update", "tradingbots.tradewarden.io/alpha", True, False),
    ("patch", "tradingbots.tradewarden.io/alpha", True, False),
    ("update", "tradingbots.tradewarden.io/alpha/status", True, False),
    ("get", "leases.coordination.k8s.io/beta-runner", True, False),
    ("update", "leases.coordination.k8s.io/beta-runner", True, False),
    ("delete", "leases.coordination.k8s.io/alpha-runner", True, False),
    ("create", "leases.coordination.k8s.io", True, False),
    ("list", "leases.coordination.k8s.io", True, False),
)


def test_runner_rbac_matrix(cluster: Cluster, operator: OperatorProcess) -> None:
    ns = operator.namespace("rbac")
    cluster.apply(strategy_config(), namespace=ns)
    cluster.apply(trading_bot("alpha", exchange={"id": "binance", "credentialsSecretRef": {"name": "alpha-keys"}}),
                  namespace=ns)
    cluster.apply(trading_bot("beta"), namespace=ns)
    for name in ("alpha", "beta"):
        wait_json(cluster, operator, "rolebinding", f"{name}-runner", "-n", ns)
        wait_json(cluster, operator, "role", f"{name}-runner", "-n", ns)
    crb = "tradewarden-runner-killswitches"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        subjects = wait_json(cluster, operator, "clusterrolebinding", crb).get("subjects", [])
        if {"kind": "ServiceAccount", "name": "alpha-runner", "namespace": ns} in subjects:
            break
        time.sleep(0.2)
    role = wait_json(cluster, operator, "role", "beta-runner", "-n", ns)
    assert all(r["resources"] != ["secrets"] for r in role["rules"]), "a bot without credentials reads no Secret"

    # Ask the authorizer every case at once (kubectl processes in parallel keep this fast on 2 cores).
    account = f"system:serviceaccount:{ns}:alpha-runner"
    procs = []
    for verb, resource, namespaced, _expected in RBAC_MATRIX:
        args = ["kubectl", "auth", "can-i", verb, resource, "--as", account]
        if namespaced:
            args += ["-n", ns]
        procs.append(subprocess.Popen(args, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    wrong = []
    for (verb, resource, _namespaced, expected), proc in zip(RBAC_MATRIX, procs, strict=True):
        out, err = proc.communicate(timeout=60)
        allowed = proc.returncode == 0 and out.strip() == "yes"
        if allowed != expected:
            wrong.append(f"{verb} {resource}: {'allowed' if allowed else 'denied'} ({out.strip()} {err.strip()})")
    assert not wrong, "the runner's RBAC differs from the contract:\n" + "\n".join(wrong)


def test_runner_pod_passes_podsecurity_restricted(cluster: Cluster, operator: OperatorProcess) -> None:
    ns = operator.namespace("restricted")
    cluster.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted",
                    "pod-security.kubernetes.io/enforce-version=latest")
    cluster.apply(strategy_config(), namespace=ns)
    cluster.apply(trading_bot("secure"), namespace=ns)
    sts = wait_json(cluster, operator, "statefulset", "secure-runner", "-n", ns)

    # The StatefulSet controller creates the pod: admission in a restricted namespace lets it through.
    deadline = time.monotonic() + 60
    pods: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not pods:
        pods = wait_json(cluster, operator, "pods", "-n", ns)["items"]
        time.sleep(0.3)
    assert [p["metadata"]["name"] for p in pods] == ["secure-runner-0"], \
        cluster.kubectl("get", "events", "-n", ns, check=False).stdout

    template = sts["spec"]["template"]
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "dry-run-runner", "namespace": ns, "labels": template["metadata"]["labels"]},
        "spec": copy.deepcopy(template["spec"]),
    }
    pod["spec"]["volumes"].append({"name": "journal", "emptyDir": {}})
    admitted = cluster.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(pod), check=False)
    assert admitted.returncode == 0, admitted.stderr

    weakened = copy.deepcopy(pod)
    container = weakened["spec"]["containers"][0]
    container["securityContext"]["allowPrivilegeEscalation"] = True
    del container["securityContext"]["capabilities"]
    weakened["spec"]["securityContext"].pop("runAsNonRoot")
    container["securityContext"].pop("runAsNonRoot")
    refused = cluster.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(weakened), check=False)
    assert refused.returncode != 0
    assert "violates PodSecurity" in refused.stderr
