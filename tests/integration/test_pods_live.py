"""A live bot as a real pod: promoted through the gate on its own paper evidence, then killed and
recreated, and stopped with an entry order resting on the venue.

The operator runs as a subprocess with one external reviewer (as in test_live_pnl.py) and this tree's
runner image; the runner is the pod its StatefulSet makes, trading with the venue keys the operator
lets it read, against the exchange emulator on the pod bridge. Orders go to the emulator, so its own
order book is the witness: no client order id twice after a pod was deleted mid-run, and nothing of
ours left resting after a pod deletion (SIGTERM).
"""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from support import live, pods
from support.kube import Cluster, poll
from support.operator import OperatorProcess, get, strategy_config
from support.promotion import live_bot, until, wait_runtime
from support.reviewers import ReviewerServer
from support.runner import secret_manifest
from tradewarden.api.runtime import ANN_TELEMETRY
from tradewarden.emulator import Emulator
from tradewarden.emulator.faults import Fault, FaultKind
from tradewarden.runner.intents import client_order_id

pytestmark = [pytest.mark.cluster, pods.NODE_SINGLETONS]

VENUE_KEY = "VENUEKEY" + uuid.uuid4().hex[:16]
VENUE_SECRET = "VENUESECRET" + uuid.uuid4().hex[:16]
SYMBOL = "BTC/USDT"


@pytest.fixture(scope="module")
def server() -> Iterator[ReviewerServer]:
    yield from live.reviewer_server()


@pytest.fixture(scope="module")
def operator(cluster: Cluster, server: ReviewerServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    # This tree's runner image for the bot's StatefulSet; the venue is the emulator on the pod bridge.
    yield from live.operator_with_reviewers(
        cluster, server, tmp_path_factory.mktemp("operator"),
        extra_args=("--runner-image", f"tradewarden/runner:{pods.image_tag(cluster)}",
                    "--allowed-api-url", f"http://{pods.BRIDGE_IP}:"))


@pytest.fixture(scope="module")
def venue() -> Iterator[Emulator]:
    yield from pods.bridge_venue(api_key=VENUE_KEY, secret=VENUE_SECRET, balances={"USDT": "100000"}, seed=7)


def telemetry(cluster: Cluster, ns: str, bot: str) -> dict[str, Any]:
    lease = get(cluster, "lease", f"{bot}-runner", "-n", ns) or {}
    raw = (lease.get("metadata", {}).get("annotations") or {}).get(ANN_TELEMETRY)
    found: dict[str, Any] = json.loads(raw) if raw else {}
    return found


def lane(intents: list[dict[str, Any]]) -> dict[str, Any]:
    until_ = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).replace(microsecond=0)
    return {"enabledUntil": until_.strftime("%Y-%m-%dT%H:%M:%SZ"), "intents": intents}


@pytest.mark.timeout(900)
def test_a_live_runner_pod_survives_deletion_without_a_duplicate_order_and_leaves_nothing_resting(
        cluster: Cluster, operator: OperatorProcess, venue: Emulator, tmp_path: pathlib.Path) -> None:
    ns = pods.restricted_namespace(cluster, operator.namespace("live"))
    cluster.apply(secret_manifest("venue-keys", {"apiKey": VENUE_KEY, "secret": VENUE_SECRET}), namespace=ns)
    sc = strategy_config("fast", params={"fast": 3, "slow": 6})
    sc["spec"]["timeframe"] = "1m"
    cluster.apply(sc, namespace=ns)
    risk = {"maxDrawdownPct": 30, "maxRiskPerTradePct": 0.05, "entryOrdersPerMinute": 10000,
            "entryOrdersPerMinutePerSymbol": 10000, "exitOrdersPerMinute": 10000}
    cluster.apply(live_bot("podlive", "fast", placement="cluster",
                           exchange={"sandbox": False, "apiUrl": venue.url}, risk=risk,
                           capital={"liveSteps": [500], "rampDwellMinutes": 0},
                           promotion={"replayWindowMinutes": 30, "replayLagMinutes": 0}, manualLane=lane([])),
                  namespace=ns)
    wait_runtime(cluster, operator, ns, "podlive")
    first = pods.running_pod(cluster, ns, "podlive", timeout=120)

    def promoted() -> bool:
        if telemetry(cluster, ns, "podlive").get("effectiveMode") == "live":
            return True
        venue.advance(1)
        return False

    # The runner pod exports its paper window every 30 s; the gate replays it and the reviewer votes.
    until(operator, promoted, "the gate to promote the pod's bot and the pod to trade live", timeout=420,
          interval=0.5)

    def set_lane(intents: list[dict[str, Any]]) -> None:
        cluster.kubectl("patch", "tb", "podlive", "-n", ns, "--type=merge", "-p",
                        json.dumps({"spec": {"manualLane": lane(intents)}}))

    # A round trip through the manual lane: the pod's own live orders on the venue.
    # (The strategy trades live too; the manual lane's orders are known by their client order ids.)
    uid = cluster.get_json("tb", "podlive", "-n", ns)["metadata"]["uid"]
    manual_buy = client_order_id(uid, "manual:buy1")

    def sent(cid: str) -> int:
        return len([o for o in venue.engine.orders.values() if o.client_order_id == cid])

    intents = [{"id": "buy1", "symbol": SYMBOL, "side": "buy", "amount": 0.001}]
    set_lane(intents)
    poll(lambda: sent(manual_buy), timeout=60, interval=0.5, what="the pod's manual buy on the venue")
    claim = cluster.get_json("pvc", "journal-podlive-runner-0", "-n", ns)["metadata"]["uid"]

    # 1. The pod is deleted mid-run: the StatefulSet makes a new one on the same journal volume.
    cluster.kubectl("delete", "pod", first["metadata"]["name"], "-n", ns, "--wait=false")
    second = pods.running_pod(cluster, ns, "podlive", timeout=120, not_uid=first["metadata"]["uid"])
    assert cluster.get_json("pvc", "journal-podlive-runner-0", "-n", ns)["metadata"]["uid"] == claim
    logs = pods.pod_logs(cluster, ns, second["metadata"]["name"])
    resumed = [line for line in logs if "resumed" in line.get("msg", "")]
    assert resumed, [line.get("msg") for line in logs[:20]]
    # The journal came back: the manual intent already done is not sent again.
    intents.append({"id": "sell1", "symbol": SYMBOL, "side": "sell", "amount": 0.001, "reduceOnly": True})
    set_lane(intents)
    poll(lambda: sent(client_order_id(uid, "manual:sell1")), timeout=60, interval=0.5,
         what="the new pod's manual sell on the venue")
    time.sleep(2)
    ids = [o.client_order_id for o in venue.engine.orders.values()]
    assert len(ids) == len(set(ids)), f"a client order id was sent twice: {ids}"
    assert sent(manual_buy) == 1
    # The venue refuses a client order id it has seen: a resend would show up as that refusal.
    assert not [line for line in pods.pod_logs(cluster, ns, second["metadata"]["name"])
                if manual_buy in json.dumps(line)], "the buy done before the restart was sent again"

    # 2. An entry rests on the book (the venue holds the next order unfilled); deleting the pod sends
    # SIGTERM and the runner cancels it before it exits, well within the grace period.
    venue.venue.faults.add(Fault(kind=FaultKind.REST, count=1))
    intents.append({"id": "buy2", "symbol": SYMBOL, "side": "buy", "amount": 0.001})
    set_lane(intents)
    poll(lambda: [o for o in venue.engine.orders.values() if o.is_open], timeout=60, interval=0.5,
         what="the entry resting on the venue")
    deleted_at = time.monotonic()
    cluster.kubectl("delete", "pod", second["metadata"]["name"], "-n", ns, "--wait=true", "--timeout=60s")
    took = time.monotonic() - deleted_at
    grace = int(second["spec"]["terminationGracePeriodSeconds"])
    assert took < grace, f"the runner took {took:.0f} s to stop; the grace period is {grace} s"
    assert [o.client_order_id for o in venue.engine.orders.values() if o.is_open] == [], \
        "an order of the runner was left resting on the venue after its pod was deleted"
    pods.running_pod(cluster, ns, "podlive", timeout=120, not_uid=second["metadata"]["uid"])
