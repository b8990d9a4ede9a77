"""Who reaches what: the chart's roles for people, asked of the real API server (docs/SECURITY.md).

The roles are rendered with ``helm template`` from charts/tradewarden exactly as a user's values would
render them, bound to users of this test's own (``--as`` needs no real identity), and each role's reach
is a table of (verb, resource[/subresource], where, expected) put to ``kubectl auth can-i``. The stock
``edit`` and ``admin`` ClusterRoles are asked the same questions: they reach the exchange keys, the
runner's ConfigMaps and Lease, and the runners' identities, which is why their holders in a bots'
namespace are inside the trust boundary.

Collisions. The chart's ClusterRoles have fixed names (other releases and users bind them by name), and
tests/integration/test_chart.py installs the whole chart, with ``--take-ownership``, at the same time as
this file may run. So only the chart's access objects (label ``app.kubernetes.io/component: access``) are
applied, and every cluster-scoped one (the ClusterRoles and ClusterRoleBindings, and the bindings'
``roleRef``) gets this run's suffix: the rules under test are the chart's, byte for byte, and nothing
another test or a real install owns is touched. Namespaced bindings live in this file's own namespaces.

GateOverride is being added to the API; until its CRD is served here, kubectl cannot map
``gateoverrides.tradewarden.io`` (it would ask about a resource of that name in the core group), so those
rows go to the API server as the SubjectAccessReview that ``kubectl auth can-i`` sends, with the group
spelled out. Every other row is ``kubectl auth can-i`` itself.
"""

from __future__ import annotations

import concurrent.futures
import json
import pathlib
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from cluster import tools
from support.kube import REPO, Cluster, poll

CHART = REPO / "charts" / "tradewarden"
ROLES = ("tradewarden-bot-author", "tradewarden-oncall", "tradewarden-viewer", "tradewarden-killswitch-reader")
COMPONENT = "app.kubernetes.io/component"
Doc = dict[str, Any]
# helm may have to be built first (about two minutes on a fresh machine).
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

# Where a question is asked: the namespace the role is bound in, a namespace with no binding at all, or
# cluster-wide (the only honest scope for a cluster-scoped kind: a RoleBinding in the namespace of a
# SubjectAccessReview would answer "yes" to a request the API server can never see with a namespace).
NS, OTHER, CLUSTER = "ns", "other", "cluster"


@dataclass(frozen=True)
class Ask:
    verb: str
    resource: str  # "tradingbots.tradewarden.io", "pods/exec", "leases.coordination.k8s.io"
    expected: bool
    where: str = NS

    def __str__(self) -> str:
        return f"{'yes' if self.expected else 'no '} {self.verb} {self.resource} ({self.where})"


def yes(verb: str, resource: str, where: str = NS) -> Ask:
    return Ask(verb, resource, True, where)


def no(verb: str, resource: str, where: str = NS) -> Ask:
    return Ask(verb, resource, False, where)


TB, SC, KS, GO = ("tradingbots.tradewarden.io", "strategyconfigs.tradewarden.io", "killswitches.tradewarden.io",
                  "gateoverrides.tradewarden.io")
LEASES, STS = "leases.coordination.k8s.io", "statefulsets.apps"
ROLE_KINDS = ("roles.rbac.authorization.k8s.io", "rolebindings.rbac.authorization.k8s.io")

#: What is inside the boundary: the exchange keys, the runner's runtime config, evidence and Lease, the
#: runners' identities and code execution in their pods. No role outside the boundary reaches any of it.
BOUNDARY = [
    no("get", "secrets"), no("list", "secrets"), no("watch", "secrets"), no("create", "secrets"),
    no("get", "configmaps"), no("list", "configmaps"), no("create", "configmaps"), no("update", "configmaps"),
    no("patch", "configmaps"), no("delete", "configmaps"),
    no("get", LEASES), no("create", LEASES), no("update", LEASES), no("patch", LEASES),
    no("create", "serviceaccounts"), no("impersonate", "serviceaccounts"), no("create", "serviceaccounts/token"),
    no("impersonate", "users", CLUSTER), no("impersonate", "groups", CLUSTER),
    no("create", "pods"), no("update", "pods"), no("delete", "pods"),
    no("create", "pods/exec"), no("get", "pods/exec"), no("create", "pods/attach"), no("get", "pods/attach"),
    no("create", "pods/portforward"), no("get", "pods/portforward"), no("create", "pods/proxy"),
    no("create", STS), no("update", STS), no("patch", STS), no("delete", STS), no("patch", "statefulsets.apps/scale"),
    no("create", "deployments.apps"), no("create", "jobs.batch"),
    *[no(verb, kind) for kind in ROLE_KINDS for verb in ("create", "update", "patch", "bind", "escalate")],
    no("patch", f"{TB}/status"), no("update", f"{TB}/status"), no("patch", f"{SC}/status"),
    no("patch", f"{KS}/status", CLUSTER), no("delete", KS, CLUSTER),
]

TABLES: dict[str, list[Ask]] = {
    "bot-author": [
        *[yes(verb, kind) for kind in (TB, SC)
          for verb in ("create", "update", "patch", "delete", "get", "list", "watch")],
        yes("get", GO), yes("list", GO), yes("watch", GO),
        yes("get", "pods"), yes("list", "pods"), yes("watch", "pods"), yes("get", "pods/log"),
        yes("list", "events"), yes("watch", "events"), yes("list", "events.events.k8s.io"),
        yes("get", KS, CLUSTER), yes("list", KS, CLUSTER), yes("watch", KS, CLUSTER),
        no("create", GO), no("update", GO), no("patch", GO), no("delete", GO),
        no("patch", KS, CLUSTER), no("update", KS, CLUSTER), no("create", KS, CLUSTER),
        no("create", "events"),
        # Only in the namespaces it is bound in.
        no("create", TB, OTHER), no("list", TB, OTHER), no("get", "pods/log", OTHER),
        *BOUNDARY,
    ],
    "oncall": [
        yes("patch", KS, CLUSTER), yes("update", KS, CLUSTER), yes("get", KS, CLUSTER), yes("list", KS, CLUSTER),
        yes("watch", KS, CLUSTER), yes("create", KS, CLUSTER),
        yes("create", GO), yes("delete", GO), yes("get", GO), yes("list", GO), yes("watch", GO),
        yes("create", GO, OTHER),  # cluster-wide: an incident does not wait for a namespace list
        yes("get", TB), yes("list", TB), yes("watch", TB), yes("list", SC), yes("list", "events"),
        no("update", GO), no("patch", GO),  # an override is immutable: withdraw it and grant a new one
        *[no(verb, kind) for kind in (TB, SC) for verb in ("create", "update", "patch", "delete")],
        no("get", "pods"), no("get", "pods/log"),
        *BOUNDARY,
    ],
    "viewer": [  # bound in one namespace (viewers.bindings)
        *[yes(verb, kind) for kind in (TB, SC, GO) for verb in ("get", "list", "watch")],
        yes("get", f"{TB}/status"), yes("get", f"{SC}/status"), yes("list", "events"),
        yes("get", KS, CLUSTER), yes("list", KS, CLUSTER), yes("watch", KS, CLUSTER),
        *[no(verb, kind) for kind in (TB, SC, GO) for verb in ("create", "update", "patch", "delete")],
        no("create", KS, CLUSTER), no("patch", KS, CLUSTER), no("update", KS, CLUSTER),
        no("get", "pods"), no("get", "pods/log"), no("create", "events"),
        no("list", TB, OTHER), no("list", GO, OTHER),
        *BOUNDARY,
    ],
    "viewer-cluster": [  # bound cluster-wide (viewers.users)
        yes("list", TB, CLUSTER), yes("list", TB, OTHER), yes("list", GO, OTHER), yes("list", KS, CLUSTER),
        yes("get", f"{TB}/status", OTHER),
        *[no(verb, kind, OTHER) for kind in (TB, SC, GO) for verb in ("create", "update", "patch", "delete")],
        no("patch", KS, CLUSTER), no("get", "secrets", OTHER), no("list", "secrets", CLUSTER),
        no("get", "configmaps", OTHER), no("get", "pods", OTHER),
        *BOUNDARY,
    ],
    # The stock roles in a bots' namespace: asserting that they DO reach all this documents the boundary.
    "stock-edit": [
        yes("get", "secrets"), yes("list", "secrets"), yes("update", "configmaps"), yes("create", "configmaps"),
        yes("delete", "configmaps"), yes("update", LEASES), yes("create", LEASES),
        yes("impersonate", "serviceaccounts"), yes("create", "serviceaccounts/token"), yes("create", "pods"),
        yes("create", "pods/exec"), yes("get", "pods/exec"), yes("create", "pods/portforward"),
        yes("patch", STS), yes("create", "serviceaccounts"),
        no("create", "rolebindings.rbac.authorization.k8s.io"), no("get", "secrets", OTHER),
    ],
    "stock-admin": [
        yes("get", "secrets"), yes("update", "configmaps"), yes("update", LEASES),
        yes("impersonate", "serviceaccounts"), yes("create", "serviceaccounts/token"),
        yes("create", "rolebindings.rbac.authorization.k8s.io"), yes("create", "roles.rbac.authorization.k8s.io"),
        no("get", "secrets", OTHER),
    ],
}


# ------------------------------------------------------------------------------------------- helpers


def helm_template(helm_bin: pathlib.Path, values: dict[str, Any], namespace: str) -> list[Doc]:
    proc = subprocess.run([str(helm_bin), "template", "tw", str(CHART), "-n", namespace, "-f", "-"],
                          input=yaml.safe_dump(values), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def access_objects(docs: list[Doc], suffix: str) -> list[Doc]:
    """The chart's access roles and bindings, every cluster-scoped name (and reference) suffixed."""
    picked = [d for d in docs if (d["metadata"].get("labels") or {}).get(COMPONENT) == "access"]
    for doc in picked:
        if doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            doc["metadata"]["name"] += f"-{suffix}"
        if doc["kind"] in ("RoleBinding", "ClusterRoleBinding") and doc["roleRef"]["kind"] == "ClusterRole":
            assert doc["roleRef"]["name"] in ROLES, doc
            doc["roleRef"]["name"] += f"-{suffix}"
    return picked


@dataclass
class Reach:
    """The identities of this run and the namespaces they are asked about."""

    cluster: Cluster
    users: dict[str, str]
    namespace: str
    other: str
    served: set[str]

    def scope_args(self, where: str) -> tuple[str, ...]:
        return {NS: ("-n", self.namespace), OTHER: ("-n", self.other), CLUSTER: ("--all-namespaces",)}[where]

    def can_i(self, who: str, ask: Ask) -> bool:
        resource, _, subresource = ask.resource.partition("/")
        plural, _, group = resource.partition(".")
        if group and resource not in self.served and group == "tradewarden.io":
            return self._review(who, ask.verb, plural, group, subresource, ask.where)
        args = ["auth", "can-i", ask.verb, resource, "--as", self.users[who], *self.scope_args(ask.where)]
        if subresource:
            args.append(f"--subresource={subresource}")
        proc = self.cluster.kubectl(*args, check=False)
        answer = proc.stdout.strip()
        assert answer in ("yes", "no"), f"kubectl {' '.join(args)}: {proc.stdout} {proc.stderr}"
        assert "doesn't have a resource type" not in proc.stderr, proc.stderr
        return answer == "yes"

    def _review(self, who: str, verb: str, plural: str, group: str, subresource: str, where: str) -> bool:
        """What ``kubectl auth can-i`` sends, for a kind the API server does not serve (yet)."""
        attributes = {"verb": verb, "group": group, "resource": plural, "subresource": subresource,
                      "namespace": {NS: self.namespace, OTHER: self.other, CLUSTER: ""}[where]}
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                  "spec": {"user": self.users[who], "groups": ["system:authenticated"],
                           "resourceAttributes": attributes}}
        out = self.cluster.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(review)).stdout
        return bool(json.loads(out)["status"].get("allowed"))

    def wrong(self, who: str, table: list[Ask]) -> list[str]:
        # Each question is its own kubectl process, mostly start-up: ask several at once.
        with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
            answers = list(pool.map(lambda ask: self.can_i(who, ask), table))
        return [f"{who}: expected {ask}" for ask, answer in zip(table, answers, strict=True) if answer != ask.expected]


@pytest.fixture(scope="module")
def helm_bin() -> pathlib.Path:
    return tools.helm()


@pytest.fixture(scope="module")
def reach(cluster: Cluster, helm_bin: pathlib.Path) -> Iterator[Reach]:
    suffix = uuid.uuid4().hex[:6]
    namespace, other = f"t-roles-{suffix}", f"t-roles-{suffix}-other"
    users = {who: f"{who}-{suffix}@tradewarden.test" for who in TABLES}
    values = {
        "botAuthors": {"bindings": [{"namespace": namespace, "users": [users["bot-author"]]}]},
        "oncall": {"users": [users["oncall"]]},
        "viewers": {"users": [users["viewer-cluster"]],
                    "bindings": [{"namespace": namespace, "users": [users["viewer"]]}]},
    }
    objects = access_objects(helm_template(helm_bin, values, namespace), suffix)
    assert sorted(d["metadata"]["name"] for d in objects if d["kind"] == "ClusterRole") == \
        sorted(f"{r}-{suffix}" for r in ROLES)
    stock = [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
              "metadata": {"name": f"stock-{role}", "namespace": namespace},
              "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
              "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": users[f"stock-{role}"]}]}
             for role in ("edit", "admin")]
    cluster_scoped = [(d["kind"], d["metadata"]["name"]) for d in objects if not d["metadata"].get("namespace")]
    for ns in (namespace, other):
        cluster.kubectl("create", "namespace", ns)
    try:
        cluster.apply(objects + stock)
        served = set(cluster.kubectl("api-resources", "--api-group=tradewarden.io", "-o", "name").stdout.split())
        result = Reach(cluster, users, namespace, other, served)
        # The authorizer reads RBAC from its informers: wait until the last binding applied is in force.
        first = [("bot-author", yes("create", TB)), ("bot-author", yes("list", KS, CLUSTER)),
                 ("oncall", yes("patch", KS, CLUSTER)), ("viewer", yes("list", TB)),
                 ("viewer-cluster", yes("list", TB, OTHER)), ("stock-admin", yes("create", ROLE_KINDS[1]))]
        poll(lambda: all(result.can_i(who, ask) for who, ask in first), timeout=30,
             what="the test's bindings in force")
        yield result
    finally:
        for kind, name in cluster_scoped:
            cluster.kubectl("delete", kind.lower(), name, "--wait=false", "--ignore-not-found", check=False)
        for ns in (namespace, other):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


# ------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("who", list(TABLES))
def test_each_role_reaches_exactly_its_table(reach: Reach, who: str) -> None:
    wrong = reach.wrong(who, TABLES[who])
    assert wrong == [], f"{len(wrong)} answers differ from docs/SECURITY.md:\n" + "\n".join(wrong)


def test_the_answers_are_the_api_servers_for_real_requests(reach: Reach) -> None:
    """can-i is a question; this makes the requests. A bot author really creates a bot, and is really
    refused the keys, the runtime ConfigMap and the status; a holder of `edit` really reads the keys."""
    c, ns = reach.cluster, reach.namespace
    author, editor = ("--as", reach.users["bot-author"]), ("--as", reach.users["stock-edit"])
    c.kubectl("create", "secret", "generic", "exchange-keys", "-n", ns, "--from-literal=apiKey=k-123",
              "--from-literal=secret=s-456")
    for manifest in sorted((REPO / "examples" / "01-signals-bot").glob("*.yaml")):
        c.kubectl("apply", "-n", ns, "-f", str(manifest), *author)
    assert c.get_json(TB, "btc-signals", "-n", ns)["metadata"]["name"] == "btc-signals"
    # A ConfigMap like the runner's runtime config (not its name: no operator of another test may own it).
    c.kubectl("create", "configmap", "probe-runtime", "-n", ns, "--from-literal=runtime.json={}")

    def refused(*args: str) -> str:
        proc = c.kubectl(*args, *author, check=False)
        assert proc.returncode != 0, (args, proc.stdout)
        assert "forbidden" in proc.stderr.lower(), (args, proc.stderr)
        return proc.stderr

    refused("get", "secret", "exchange-keys", "-n", ns)
    refused("get", "configmap", "probe-runtime", "-n", ns)
    refused("patch", "configmap", "probe-runtime", "-n", ns, "--type=merge", "-p", '{"data":{"x":"y"}}')
    refused("patch", TB, "btc-signals", "-n", ns, "--subresource=status", "--type=merge",
            "-p", '{"status":{"effectiveMode":"live"}}')
    refused("create", "serviceaccount", "probe", "-n", ns)
    refused("create", "token", "default", "-n", ns)
    # The four attacks of docs/SECURITY.md, each at its first step: a forged status (above), a rewritten
    # runtime ConfigMap (above), a forged evidence export and a forged Lease (below); becoming the runner
    # (impersonating its ServiceAccount, minting its token) is in the tables.
    c.kubectl("create", "configmap", "probe-evidence", "-n", ns)
    refused("create", "configmap", "probe-evidence-2", "-n", ns)
    refused("patch", "configmap", "probe-evidence", "-n", ns, "--type=merge",
            "-p", '{"binaryData":{"evidence.json.gz":"AAAA"}}')
    c.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "probe-runner"},
        "spec": {"holderIdentity": "probe"}}))
    refused("patch", "lease", "probe-runner", "-n", ns, "--type=merge",
            "-p", '{"metadata":{"annotations":{"tradewarden.io/kill-acks":"{}"}}}')
    # The one who holds `edit` reads the exchange keys: inside the boundary, whatever we build.
    key = c.kubectl("get", "secret", "exchange-keys", "-n", ns, "-o", "jsonpath={.data.apiKey}", *editor).stdout
    assert key == "ay0xMjM=", key  # base64 of k-123


def test_no_role_for_people_grants_a_wildcard_or_the_boundary(helm_bin: pathlib.Path) -> None:
    """The rendered rules themselves, with every binding on: no wildcard, and none of the resources or
    verbs of the boundary anywhere (the can-i tables ask about examples; this reads every rule)."""
    values = {"botAuthors": {"bindings": [{"namespace": "a", "groups": ["g"]}]},
              "oncall": {"groups": ["g"]},
              "viewers": {"groups": ["g"], "bindings": [{"namespace": "a", "users": ["u"]}]}}
    docs = [d for d in helm_template(helm_bin, values, "tw-system")
            if (d["metadata"].get("labels") or {}).get(COMPONENT) == "access"]
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}
    assert sorted(roles) == sorted(ROLES)
    forbidden_resources = {"secrets", "configmaps", "leases", "serviceaccounts", "serviceaccounts/token", "pods/exec",
                           "pods/attach", "pods/portforward", "pods/proxy", "statefulsets", "roles", "rolebindings",
                           "clusterroles", "clusterrolebindings", "nodes", "nodes/proxy"}
    for name, role in roles.items():
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert not any("*" in v for v in rule[key]), (name, rule)
            assert not {"impersonate", "escalate", "bind"} & set(rule["verbs"]), (name, rule)
            assert not forbidden_resources & set(rule["resources"]), (name, rule)
            assert not any(r.endswith("/status") for r in rule["resources"]) or \
                set(rule["verbs"]) <= {"get", "list", "watch"}, (name, rule)
    bindings = [d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert {(d["kind"], d["roleRef"]["name"]) for d in bindings} == {
        ("RoleBinding", "tradewarden-bot-author"), ("RoleBinding", "tradewarden-viewer"),
        ("ClusterRoleBinding", "tradewarden-oncall"), ("ClusterRoleBinding", "tradewarden-viewer"),
        ("ClusterRoleBinding", "tradewarden-killswitch-reader")}
    # The bot author may only read what the operator decides and the on-call grants.
    author = roles["tradewarden-bot-author"]["rules"]
    writes = {r for rule in author for r in rule["resources"] if set(rule["verbs"]) - {"get", "list", "watch"}}
    assert writes == {"tradingbots", "strategyconfigs"}
