"""Bots as real pods on the local cluster's node, run by the chart's operator as a pod.

The chart is installed with ``helm install`` (this tree's images, PodSecurity ``restricted`` in the
release namespace and in the bots' namespace, the chart's RBAC only); each TradingBot with placement
``cluster`` becomes a StatefulSet whose pod runs the runner image, reads its runtime ConfigMap and the
KillSwitches through the API server with its own ServiceAccount token, journals to its volume and
renews its Lease. The venue is the exchange emulator on the pod bridge.
"""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cluster import tools
from support import pods
from support.kube import Cluster, poll
from support.operator import condition, get, kill_switch, strategy_config, trading_bot
from support.prom import launch_prometheus, query, stop
from tradewarden.emulator import Emulator

pytestmark = [pytest.mark.cluster, pods.NODE_SINGLETONS]


@pytest.fixture(scope="module")
def helm_bin() -> pathlib.Path:
    return tools.helm()


@pytest.fixture(scope="module")
def venue() -> Iterator[Emulator]:
    # One bar every half second: the runners decide on fresh bars while the tests run.
    yield from pods.bridge_venue(bar_seconds=0.5)


@pytest.fixture(scope="module")
def platform(cluster: Cluster, helm_bin: pathlib.Path) -> Iterator[pods.ChartOperator]:
    op = pods.install_chart(cluster, helm_bin)
    try:
        yield op
    finally:
        pods.uninstall_chart(op)
        for ns in cluster.kubectl("get", "namespaces", "-o", "name").stdout.split():
            if ns.startswith(f"namespace/{op.prefix}-"):
                cluster.kubectl("delete", ns, "--wait=false", check=False)
        cluster.kubectl("delete", "namespace", op.namespace, "--wait=false", check=False)


def paper_bot(name: str, config: str, venue: Emulator, **spec: Any) -> dict[str, Any]:
    return trading_bot(name, config, mode="paper", exchange={"id": "binance", "apiUrl": venue.url},
                       capital={"paperBalance": 10000}, **spec)


def fast_config(name: str, **params: Any) -> dict[str, Any]:
    sc = strategy_config(name, params={"fast": 3, "slow": 6, **params})
    sc["spec"]["timeframe"] = "1m"
    return sc


def status(cluster: Cluster, ns: str, bot: str) -> dict[str, Any]:
    obj = get(cluster, "tradingbot", bot, "-n", ns) or {}
    return obj.get("status") or {}


def applied(cluster: Cluster, ns: str, bot: str) -> str | None:
    st = status(cluster, ns, bot)
    cond = condition({"status": st}, "ConfigApplied") if st.get("conditions") else {}
    if cond.get("status") != "True":
        return None
    return str(st.get("configHash") or "") or None


def test_a_paper_bot_becomes_a_running_pod_and_config_edits_reach_it_without_a_restart(
        cluster: Cluster, platform: pods.ChartOperator, venue: Emulator) -> None:
    ns = platform.bots_namespace("edits")
    cluster.apply(fast_config("fast"), namespace=ns)
    applied_at = time.monotonic()
    cluster.apply(paper_bot("edits", "fast", venue), namespace=ns)
    pod = pods.running_pod(cluster, ns, "edits")
    print(f"pod start latency (apply -> Ready): {time.monotonic() - applied_at:.1f} s")
    # The pod is ours: the runner image of this tree, our ServiceAccount, the journal on its own volume.
    spec = pod["spec"]
    assert spec["containers"][0]["image"] == f"tradewarden/runner:{platform.tag}"
    assert spec["serviceAccountName"] == "edits-runner"
    claim = next(v for v in spec["volumes"] if v["name"] == "journal")["persistentVolumeClaim"]["claimName"]
    pvc = cluster.get_json("pvc", claim, "-n", ns)
    assert pvc["status"]["phase"] == "Bound"
    assert pvc["spec"]["storageClassName"] == "tradewarden-local"

    def healthy() -> dict[str, Any] | None:
        st = status(cluster, ns, "edits")
        conds = {c["type"]: c for c in st.get("conditions") or []}
        ok = conds.get("RunnerHealthy", {}).get("status") == "True" and applied(cluster, ns, "edits")
        return st if ok else None

    first = poll(healthy, timeout=90, interval=0.5, what="RunnerHealthy and ConfigApplied from the pod")
    first_hash = first["configHash"]
    # `kubectl logs` shows the runner's structured log: one JSON object per line, naming the bot.
    lines = pods.pod_logs(cluster, ns, pod["metadata"]["name"])
    assert any(line.get("msg", "").startswith("runner started in paper mode") for line in lines), lines[:5]
    assert all(line.get("bot") == f"{ns}/edits" for line in lines if "bot" in line)
    # The operator pod logs the same way: every line one JSON object.
    op_lines = [line for line in platform.logs(tail=400).splitlines() if line.strip()]
    parsed = [json.loads(line) for line in op_lines]
    assert parsed, "the operator pod logged nothing"
    assert {line["component"] for line in parsed} == {"operator"}
    assert {"ts", "level", "logger", "msg"} <= set(parsed[0])

    # A strategy edit reaches the running pod through its ConfigMap watch: same pod, no restart.
    cluster.kubectl("patch", "strategyconfig", "fast", "-n", ns, "--type=merge", "-p",
                    json.dumps({"spec": {"params": {"fast": 4}}}))
    poll(lambda: (h := applied(cluster, ns, "edits")) and h != first_hash, timeout=60, interval=0.5,
         what="the runner pod applying the edited config")
    same = pods.running_pod(cluster, ns, "edits")
    assert same["metadata"]["uid"] == pod["metadata"]["uid"]
    assert same["status"]["containerStatuses"][0]["restartCount"] == 0

    # A resources edit rolls the pod: the StatefulSet replaces it, and the new one applies the config.
    cluster.kubectl("patch", "tradingbot", "edits", "-n", ns, "--type=merge", "-p", json.dumps(
        {"spec": {"runner": {"resources": {"requests": {"cpu": "60m", "memory": "160Mi"},
                                           "limits": {"cpu": "600m", "memory": "400Mi"}}}}}))
    rolled = pods.running_pod(cluster, ns, "edits", timeout=120, not_uid=pod["metadata"]["uid"])
    assert rolled["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "60m"
    poll(healthy, timeout=90, interval=0.5, what="the rolled pod healthy and applying the config")


def acks(cluster: Cluster, ns: str, bot: str) -> dict[str, Any]:
    lease = get(cluster, "lease", f"{bot}-runner", "-n", ns) or {}
    raw = (lease.get("metadata", {}).get("annotations") or {}).get("tradewarden.io/kill-acks", "{}")
    found: dict[str, Any] = json.loads(raw)
    return found


def test_a_kill_switch_reaches_the_pod_also_with_the_operator_scaled_to_zero(
        cluster: Cluster, platform: pods.ChartOperator, venue: Emulator) -> None:
    ns = platform.bots_namespace("brake")
    cluster.apply(fast_config("fast"), namespace=ns)
    cluster.apply(paper_bot("braked", "fast", venue), namespace=ns)
    pods.running_pod(cluster, ns, "braked")
    poll(lambda: applied(cluster, ns, "braked"), timeout=90, interval=0.5, what="the pod applying its config")
    switch = f"brake-{platform.prefix}"
    cluster.apply(kill_switch(switch, mode="off", namespaces=[ns]))
    try:
        def generation() -> int:
            return int(cluster.get_json("killswitch", switch)["metadata"]["generation"])

        def acked(mode: str) -> bool:
            ack = acks(cluster, ns, "braked").get(switch)
            return bool(ack) and ack.get("mode") == mode and int(ack["generation"]) >= generation()

        cluster.kubectl("patch", "killswitch", switch, "--type=merge", "-p",
                        json.dumps({"spec": {"mode": "halt_all", "reason": "pod test"}}))
        poll(lambda: acked("halt_all"), timeout=30, interval=0.2, what="the pod's ack of halt_all")
        def all_acked() -> bool:
            st = cluster.get_json("killswitch", switch).get("status") or {}
            return st.get("matched") == 1 and st.get("acknowledged") == 1 and not st.get("pendingBots")

        poll(all_acked, timeout=30, interval=0.5, what="the switch's status saying its one bot acked")

        # The brake does not depend on the operator: with its pod gone, the runner pod still obeys.
        platform.scale(0)
        try:
            cluster.kubectl("patch", "killswitch", switch, "--type=merge", "-p",
                            json.dumps({"spec": {"mode": "close_only", "reason": "operator down"}}))
            poll(lambda: acked("close_only"), timeout=30, interval=0.2,
                 what="the pod's ack of close_only with no operator running")
        finally:
            platform.scale(1)
    finally:
        cluster.kubectl("delete", "killswitch", switch, "--wait=false", check=False)


def test_admission_is_real_a_privileged_pod_is_refused_where_ours_run(
        cluster: Cluster, platform: pods.ChartOperator, venue: Emulator) -> None:
    ns = platform.bots_namespace("psa")
    cluster.apply(fast_config("fast"), namespace=ns)
    cluster.apply(paper_bot("ours", "fast", venue), namespace=ns)
    ours = pods.running_pod(cluster, ns, "ours")
    image = ours["spec"]["containers"][0]["image"]

    def pod(name: str, security: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"containers": [{"name": "c", "image": image, "command": ["sleep", "60"],
                                         "securityContext": security}]}}

    privileged = cluster.apply(pod("privileged", {"privileged": True}), namespace=ns, check=False)
    assert privileged.returncode != 0
    assert "privileged" in privileged.stderr, privileged.stderr
    # Not only the API server's --allow-privileged: PodSecurity "restricted" refuses a merely loose pod too.
    loose = cluster.apply(pod("loose", {"runAsUser": 0}), namespace=ns, check=False)
    assert loose.returncode != 0
    assert "PodSecurity" in loose.stderr, loose.stderr
    assert "restricted" in loose.stderr, loose.stderr
    # Only ours is there, and it kept running.
    assert [p["metadata"]["name"] for p in cluster.get_json("pods", "-n", ns)["items"]] == [ours["metadata"]["name"]]
    assert pods.running_pod(cluster, ns, "ours")["metadata"]["uid"] == ours["metadata"]["uid"]


def runner_healthy(cluster: Cluster, ns: str, bot: str) -> dict[str, Any]:
    st = status(cluster, ns, bot)
    return condition({"status": st}, "RunnerHealthy") if st.get("conditions") else {}


def test_a_pod_that_cannot_start_says_why_in_the_bots_status(
        cluster: Cluster, platform: pods.ChartOperator, venue: Emulator) -> None:
    ns = platform.bots_namespace("broken")
    cluster.apply(fast_config("fast"), namespace=ns)
    # An image the node does not have (and no registry to pull it from).
    missing = f"tradewarden/runner:absent-{platform.prefix}"
    cluster.apply(paper_bot("noimage", "fast", venue, runner={"image": missing}), namespace=ns)
    # Resources no node can give: the scheduler leaves the pod Pending.
    too_big = {"resources": {"requests": {"cpu": "64", "memory": "1Gi"}}}
    cluster.apply(paper_bot("toobig", "fast", venue, runner=too_big), namespace=ns)

    def why(bot: str, reason: str) -> dict[str, Any] | None:
        cond = runner_healthy(cluster, ns, bot)
        return cond if cond.get("status") == "False" and cond.get("reason") == reason else None

    image = poll(lambda: why("noimage", "ImagePullFailed"), timeout=90, interval=0.5,
                 what="RunnerHealthy=False ImagePullFailed for the missing image")
    assert missing in image["message"]
    assert "spec.runner.image" in image["message"]
    big = poll(lambda: why("toobig", "Unschedulable"), timeout=90, interval=0.5,
               what="RunnerHealthy=False Unschedulable for resources no node has")
    assert "Insufficient cpu" in big["message"], big["message"]
    assert "spec.runner.resources" in big["message"]
    # The bot says it is degraded, and an Event says why, for `kubectl describe`.
    assert status(cluster, ns, "noimage").get("phase") == "Degraded"
    events = cluster.get_json("events", "-n", ns, "--field-selector", "involvedObject.name=toobig")["items"]
    assert any(e["reason"] == "Unschedulable" and e["type"] == "Warning" for e in events), events
    # A resource value that is not a quantity at all is refused at the door, naming the field.
    bad = cluster.apply(paper_bot("badvalue", "fast", venue, runner={"resources": {"requests": {"cpu": "lots"}}}),
                        namespace=ns, check=False)
    assert bad.returncode != 0
    assert "spec.runner.resources" in bad.stderr, bad.stderr


def operator_metrics(pod: dict[str, Any]) -> str:
    """The operator pod's own /metrics, read from this machine (for a failure's context)."""
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{pod['status']['podIP']}:8080/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return "\n".join(line for line in text.splitlines() if line.startswith("tradewarden_operator_bot"))[:3000]


def test_prometheus_finds_and_scrapes_the_operator_and_runner_pods_through_the_api_server(
        cluster: Cluster, platform: pods.ChartOperator, venue: Emulator, tmp_path: pathlib.Path) -> None:
    ns = platform.bots_namespace("scraped")
    cluster.apply(fast_config("fast"), namespace=ns)
    cluster.apply(paper_bot("scraped", "fast", venue), namespace=ns)
    runner = pods.running_pod(cluster, ns, "scraped")
    operator = platform.wait_ready()
    # Prometheus discovers pods from the real API server with a ServiceAccount that may only list pods.
    scraper = pods.pod_reader(cluster, platform.namespace, "prometheus")
    jobs = []
    for job, namespace, component in (("tradewarden-operator", platform.namespace, "operator"),
                                      ("tradewarden-runners", ns, "runner")):
        jobs.append({
            "job_name": job, "honor_labels": job == "tradewarden-operator",
            "kubernetes_sd_configs": [{"role": "pod", "api_server": scraper["server"],
                                       "namespaces": {"names": [namespace]},
                                       "authorization": {"credentials": scraper["token"]},
                                       "tls_config": {"ca_file": scraper["ca_file"]}}],
            "relabel_configs": [
                {"source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"], "regex": component,
                 "action": "keep"},
                {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": "metrics",
                 "action": "keep"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            ],
        })
    # Debian's prometheus is built without Kubernetes discovery: this one is built from the module proxy.
    proc, url, log = launch_prometheus(tmp_path / "prometheus", jobs, binary=tools.prometheus())
    try:
        def up() -> dict[str, str] | None:
            found = {r["metric"]["pod"]: r["value"][1] for r in query(url, "up")}
            want = {runner["metadata"]["name"], operator["metadata"]["name"]}
            return found if want <= {p for p, v in found.items() if v == "1"} else None

        poll(up, timeout=60, interval=1, what="both pods discovered and up",
             context=lambda: log.read_text(errors="replace")[-2000:])
        # Real series from each pod: the runner's own, and the operator's view of the bot.
        assert query(url, f'tradewarden_runner_bars_total{{pod="{runner["metadata"]["name"]}"}}')
        poll(lambda: query(url, f'tradewarden_operator_bot_info{{namespace="{ns}",bot="scraped"}}'), timeout=30,
             interval=1, what="the operator pod's series for the bot",
             context=lambda: operator_metrics(operator))
    finally:
        stop(proc)
