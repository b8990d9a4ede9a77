"""The global brake is the operator's (--ensure-killswitch, controller/globalswitch.py), against the real
API server: created with mode off when it is missing, and never written again, least of all when on-call
has engaged it.

The chart passes the flag for its ``global`` switch; these tests use switches of their own names, since
``global`` selects every bot of the shared cluster. A switch created by the ensure logic has no selector
(every bot), so it is only ever left off here and deleted afterwards; the engaged one selects a namespace
that does not exist. The retry and reporting logic is unit-tested in
tests/unit/test_controller_globalswitch.py, and the chart's side (no KillSwitch rendered, the flag, the
role) in tests/integration/test_chart.py.
"""

from __future__ import annotations

import pathlib
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from support.kube import Cluster
from support.operator import OperatorProcess, audit_writes, get, kill_switch, until, utc_stamp
from tradewarden.controller import kube as k
from tradewarden.controller.globalswitch import ANN_CREATED_BY, ensure_killswitch

pytestmark = pytest.mark.cluster

REASON = "installed: off, by the test"


@pytest.fixture
def switch_name(cluster: Cluster) -> Iterator[str]:
    name = f"tw-ensure-{uuid.uuid4().hex[:6]}"
    yield name
    cluster.kubectl("delete", "killswitch", name, "--ignore-not-found", "--wait=false", check=False)


@pytest.fixture
def ensuring_operator(cluster: Cluster, tmp_path: pathlib.Path, switch_name: str) -> Iterator[OperatorProcess]:
    """An operator started as the chart's Deployment starts it, for the test's switch (not yet started)."""
    op = OperatorProcess(cluster, tmp_path / "operator",
                         extra_args=("--ensure-killswitch", switch_name, "--ensure-killswitch-reason", REASON))
    yield op
    op.stop()
    op.delete_namespaces()


def untouchable(obj: dict[str, Any]) -> dict[str, Any]:
    """What nobody but on-call may change: the spec (and its generation), the labels and annotations. Not
    the status: a KillSwitch's status is any operator's to report (a cluster-wide one may run beside us)."""
    meta = obj["metadata"]
    return {"spec": obj["spec"], "generation": meta["generation"], "labels": meta.get("labels"),
            "annotations": meta.get("annotations"), "uid": meta["uid"]}


def writes_to(cluster: Cluster, op: OperatorProcess, since: str, name: str) -> list[str]:
    return [f"{w.verb} {w.subresource} -> {w.code}".replace("  ", " ")
            for w in audit_writes(cluster, since, namespace_prefix=op.prefix, names=(name,), instance=op.prefix)
            if w.resource == "killswitches" and w.name == name]


# ------------------------------------------------------------------------------------------ the operator process


def test_the_operator_creates_the_missing_switch_off_and_never_writes_it_again(
        cluster: Cluster, ensuring_operator: OperatorProcess, switch_name: str) -> None:
    op = ensuring_operator
    assert get(cluster, "killswitch", switch_name) is None
    since = utc_stamp()
    op.start()
    ks = until(op, lambda: get(cluster, "killswitch", switch_name), f"the operator creates KillSwitch {switch_name}")
    assert ks["spec"]["mode"] == "off"
    assert ks["spec"]["reason"] == REASON
    assert not (ks["spec"].get("selector") or {}).get("namespaces"), "the global switch selects every bot"
    labels, annotations = ks["metadata"].get("labels") or {}, ks["metadata"].get("annotations") or {}
    assert labels["app.kubernetes.io/managed-by"] == "tradewarden"
    assert "--ensure-killswitch" in annotations[ANN_CREATED_BY]
    assert "app.kubernetes.io/instance" not in labels, "Argo CD must not take it for part of an Application"
    assert not [a for a in annotations if a.startswith("meta.helm.sh/")], "no Helm release owns it"
    until(op, lambda: [e for e in cluster.get_json("events", "-n", "default")["items"]
                       if e["involvedObject"].get("name") == switch_name and e["reason"] == "KillSwitchCreated"
                       and e["involvedObject"].get("uid") == ks["metadata"]["uid"]],
          "the KillSwitchCreated Event")
    assert "created the global KillSwitch" in op.log()

    # A restart (a rollout, a helm upgrade that rolls the pod) reads the switch and writes nothing.
    before = untouchable(ks)
    op.stop()
    op.start()
    until(op, lambda: f"the global KillSwitch {switch_name} exists (mode off): left as it is" in op.log(),
          "the restarted operator finds the switch")
    assert untouchable(cluster.get_json("killswitch", switch_name)) == before
    if cluster.audit_log is not None:
        assert writes_to(cluster, op, since, switch_name) == ["create -> 201"], "one create, ever"
    assert "ERROR" not in op.log()


def test_an_engaged_switch_is_left_exactly_as_on_call_set_it(
        cluster: Cluster, ensuring_operator: OperatorProcess, switch_name: str) -> None:
    op = ensuring_operator
    # Engaged by on-call, with a label of theirs. It selects a namespace that exists nowhere (not even
    # among this operator's), so that it brakes no other test's bot.
    ks = kill_switch(switch_name, "halt_all", namespaces=[f"{op.prefix}x-nobody"], reason="PAGE-42: venue outage")
    ks["metadata"]["labels"] = {"team": "oncall"}
    cluster.apply(ks)
    before = untouchable(cluster.get_json("killswitch", switch_name))
    since = utc_stamp()
    op.start()
    until(op, lambda: f"the global KillSwitch {switch_name} exists (mode halt_all): left as it is" in op.log(),
          "the operator finds the engaged switch")
    after = cluster.get_json("killswitch", switch_name)
    assert untouchable(after) == before
    assert (after["spec"]["mode"], after["spec"]["reason"]) == ("halt_all", "PAGE-42: venue outage")
    if cluster.audit_log is not None:
        assert writes_to(cluster, op, since, switch_name) == [], "not even a refused create"
    assert "ERROR" not in op.log()


def test_a_switch_the_api_server_refuses_is_an_error_not_a_crash(cluster: Cluster, tmp_path: pathlib.Path) -> None:
    # An invalid name stands for every refusal: the operator says so, with the command, and keeps working.
    op = OperatorProcess(cluster, tmp_path / "operator", extra_args=("--ensure-killswitch", "Not_A_Name"))
    try:
        op.start()
        until(op, lambda: "the global KillSwitch Not_A_Name could not be read, or created" in op.log(),
              "the error about the switch")
        line = next(x for x in op.log().splitlines() if "Not_A_Name could not be" in x)
        assert " ERROR " in line, line
        assert "kubectl create -f -" in line, line
        assert op.alive()
        assert "ok" in urllib.request.urlopen(f"http://127.0.0.1:{op.port}/healthz", timeout=5).read().decode()
    finally:
        op.stop()
        op.delete_namespaces()


# ------------------------------------------------------------------------------------------ the function itself


def test_ensure_killswitch_against_the_api_server(cluster: Cluster, switch_name: str) -> None:
    kube = k.Kube.from_environment(kubeconfig=cluster.kubeconfig)
    kube._api.user_agent = "tradewarden-test-ensure/0"  # not counted as the operator's writes

    made = ensure_killswitch(kube, switch_name, REASON)
    assert (made.created, made.mode, made.reason) == (True, "off", REASON)
    assert cluster.get_json("killswitch", switch_name)["spec"]["mode"] == "off"

    # On-call engages it (a merge patch, as the runbook's kubectl patch): the next ensure changes nothing.
    cluster.kubectl("patch", "killswitch", switch_name, "--type", "merge",
                    "-p", '{"spec":{"mode":"halt_all","reason":"PAGE-43","selector":{"namespaces":["tw-nowhere"]}}}')
    before = untouchable(cluster.get_json("killswitch", switch_name))
    again = ensure_killswitch(kube, switch_name, REASON)
    assert (again.created, again.mode, again.reason) == (False, "halt_all", "PAGE-43")
    assert untouchable(cluster.get_json("killswitch", switch_name)) == before

    # Losing a create race (the switch appears between the GET and the POST): the API server's 409
    # AlreadyExists is success, and the winner's switch stands as it is.
    class Racing(k.Kube):
        def get(self, ref: k.ResourceRef, namespace: str | None, name: str) -> k.Manifest | None:
            if not getattr(self, "raced", False):
                self.raced = True
                return None
            return super().get(ref, namespace, name)

    racing = Racing(kube._api)
    racing._api.user_agent = "tradewarden-test-ensure/0"
    raced = ensure_killswitch(racing, switch_name, REASON)
    assert (raced.created, raced.mode, raced.reason) == (False, "halt_all", "PAGE-43")
    assert untouchable(cluster.get_json("killswitch", switch_name)) == before
