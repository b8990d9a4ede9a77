"""Unit tests of the operator's half of the kill switch, the work queue, the scope and the metrics.

No cluster: acknowledgements by generation, engagedAt and latency (from the API server's record of the
spec change in managedFields), a switch that matches no bot, the two automatic triggers (which only ever
engage), the coalescing work queue, namespace scoping, and Prometheus naming (checked with
``promtool check metrics`` when promtool is installed).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import subprocess
from typing import Any

import kopf
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from support.controller_objects import NOW, make_switch, runner
from tradewarden.api.conditions import get_condition
from tradewarden.api.killswitch import KillSwitch
from tradewarden.api.runtime import KillAck
from tradewarden.api.tradingbot import KillMode
from tradewarden.controller.cache import Cache, slim
from tradewarden.controller.handlers import Scope, WriteMemory
from tradewarden.controller.leases import NO_RUNNER, RunnerObservation
from tradewarden.controller.metrics import Metrics
from tradewarden.controller.switches import (
    FleetBot,
    ack_latency_ms,
    compute_killswitch,
    killswitch_events,
    killswitch_status_patch,
    spec_changed_at,
)
from tradewarden.controller.workqueue import WorkQueue


def fleet(*bots: tuple[str, RunnerObservation], namespace: str = "ns", labels: dict[str, str] | None = None,
          ) -> list[FleetBot]:
    return [FleetBot(namespace, name, labels or {}, 30, obs) for name, obs in bots]


def ack(generation: int, mode: str = "close_only", at: dt.datetime = NOW) -> dict[str, KillAck]:
    return {"global": KillAck(generation=generation, mode=KillMode(mode), at=at)}


def cond(status: Any, type_: str) -> tuple[str, str]:
    c = get_condition(status.conditions, type_)
    assert c is not None
    return c.status.value, c.reason


def stamp(at: dt.datetime) -> str:
    """A managedFields time as the API server writes it: whole seconds, truncated."""
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def entry(manager: str, at: dt.datetime, fields: dict[str, Any], subresource: str = "",
          operation: str = "Update") -> dict[str, Any]:
    out = {"manager": manager, "operation": operation, "apiVersion": "tradewarden.io/v1alpha1", "time": stamp(at),
           "fieldsType": "FieldsV1", "fieldsV1": fields}
    if subresource:
        out["subresource"] = subresource
    return out


SPEC_MODE = {"f:spec": {"f:mode": {}}}


def with_managed_fields(ks: KillSwitch, *entries: dict[str, Any]) -> KillSwitch:
    body = ks.to_wire()
    body["metadata"]["managedFields"] = list(entries)
    return KillSwitch.model_validate(body)


def spec_changed(ks: KillSwitch, at: dt.datetime) -> KillSwitch:
    """``ks`` as the API server returns it after a ``kubectl patch`` of its spec at ``at``."""
    return with_managed_fields(ks, entry("kubectl-patch", at, SPEC_MODE))


def test_acknowledgements_match_the_current_generation() -> None:
    ks = spec_changed(make_switch(mode="close_only", generation=4, namespaces=["ns"],
                                  status={"engagedAt": (NOW - dt.timedelta(seconds=1)).isoformat()}),
                      NOW - dt.timedelta(seconds=1))
    bots = fleet(("a", runner(acks=ack(4, at=NOW - dt.timedelta(milliseconds=800)))),
                 ("b", runner(acks=ack(3))),                    # acked an older spec
                 ("c", runner(acks=ack(4, mode="halt_all"))),    # a mode it was never asked for
                 ("d", NO_RUNNER))
    plan = compute_killswitch(ks, bots + fleet(("x", runner()), namespace="other"), NOW)
    st = plan.status
    assert (st.matched, st.acknowledged) == (4, 1)
    assert st.matched_bots == ["ns/a", "ns/b", "ns/c", "ns/d"]
    assert st.pending_bots == ["ns/b", "ns/c", "ns/d"]
    assert st.max_ack_latency_ms == pytest.approx(200.0)
    assert cond(st, "Engaged") == ("True", "Engaged")
    assert cond(st, "Acknowledged") == ("False", "Pending")
    assert plan.engage is None


def test_engaged_at_is_set_kept_and_cleared() -> None:
    on = compute_killswitch(make_switch(mode="halt_all"), [], NOW).status
    assert on.engaged_at == NOW
    assert cond(on, "Acknowledged") == ("False", "NoBotsMatched")
    later = NOW + dt.timedelta(minutes=1)
    kept = compute_killswitch(make_switch(mode="flatten", status=on.to_wire()), [], later).status
    assert kept.engaged_at == NOW
    off = compute_killswitch(make_switch(mode="off", status=kept.to_wire()), [], later).status
    assert off.engaged_at is None
    assert off.max_ack_latency_ms is None
    assert cond(off, "Engaged") == ("False", "Off")
    assert [e.reason for e in killswitch_events(kept, off, KillMode.OFF)] == ["KillSwitchReleased"]
    # Engaged again over no bot at all: it says so (a typo in a selector must not look green).
    assert [e.reason for e in killswitch_events(off, on, KillMode.HALT_ALL)] == ["KillSwitchEngaged",
                                                                               "NoBotsMatched"]


def test_all_acknowledged_is_reported_once() -> None:
    ks = make_switch(mode="close_only", generation=2, namespaces=["ns"], status={"engagedAt": NOW.isoformat()})
    pending = compute_killswitch(ks, fleet(("a", runner())), NOW).status
    done = compute_killswitch(ks, fleet(("a", runner(acks=ack(2)))), NOW).status
    assert cond(done, "Acknowledged") == ("True", "AllAcknowledged")
    assert [e.reason for e in killswitch_events(pending, done, KillMode.CLOSE_ONLY)] == ["KillSwitchAcknowledged"]
    settled = make_switch(mode="close_only", generation=2, namespaces=["ns"], status=done.to_wire())
    again = compute_killswitch(settled, fleet(("a", runner(acks=ack(2)))), NOW + dt.timedelta(seconds=30))
    assert killswitch_status_patch(settled.status, again.status) is None


DRAWDOWN = {"fleetDrawdownPct": 10, "mode": "halt_all"}


def test_fleet_drawdown_trigger_engages_over_the_limit() -> None:
    ks = make_switch(namespaces=["ns"], trigger=DRAWDOWN)
    first = compute_killswitch(ks, fleet(("a", runner(equity=6000)), ("b", runner(equity=4000))), NOW)
    assert first.status.fleet_equity_peak == 10000
    assert first.engage is None
    settled = make_switch(namespaces=["ns"], trigger=DRAWDOWN, status=first.status.to_wire())
    small = compute_killswitch(settled, fleet(("a", runner(equity=5500)), ("b", runner(equity=3600))), NOW)
    assert small.engage is None  # 9 % down
    big = compute_killswitch(settled, fleet(("a", runner(equity=5000)), ("b", runner(equity=3900))), NOW)
    assert big.engage == KillMode.HALT_ALL  # 11 % down
    assert big.status.triggered_by is not None
    assert big.status.triggered_by.startswith("fleetDrawdownPct")
    assert big.status.fleet_equity_peak == 10000


@pytest.mark.parametrize(("what", "switch", "bots"), [
    ("the matched set changed", make_switch(namespaces=["ns"], trigger=DRAWDOWN,
                                            status={"fleetEquityPeak": 20000, "matchedBots": ["ns/a", "ns/z"]}),
     fleet(("a", runner(equity=5000)))),
    ("a runner reports no equity", make_switch(namespaces=["ns"], trigger=DRAWDOWN,
                                               status={"fleetEquityPeak": 20000, "matchedBots": ["ns/a", "ns/b"]}),
     fleet(("a", runner(equity=5000)), ("b", NO_RUNNER))),
    ("already stronger", make_switch(mode="flatten", namespaces=["ns"], trigger=DRAWDOWN,
                                     status={"fleetEquityPeak": 20000, "matchedBots": ["ns/a"]}),
     fleet(("a", runner(equity=5000)))),
    ("released by a human", make_switch(mode="off", namespaces=["ns"], trigger=DRAWDOWN,
                                        status={"fleetEquityPeak": 20000, "matchedBots": ["ns/a"],
                                                "engagedAt": NOW.isoformat()}),
     fleet(("a", runner(equity=5000)))),
])
def test_fleet_drawdown_never_fires_on_a_changed_baseline(what: str, switch: Any, bots: list[FleetBot]) -> None:
    assert compute_killswitch(switch, bots, NOW).engage is None, what


def test_lost_runner_trigger_counts_stale_heartbeats_only() -> None:
    trigger = {"maxRunnersWithoutHeartbeat": 1, "mode": "close_only"}
    stale = runner(renewed=NOW - dt.timedelta(minutes=5))
    ks = make_switch(namespaces=["ns"], trigger=trigger)
    # Runners that never started are Pending, not lost: creating bots must not trip the switch.
    assert compute_killswitch(ks, fleet(("a", NO_RUNNER), ("b", NO_RUNNER), ("c", stale)), NOW).engage is None
    fired = compute_killswitch(ks, fleet(("a", stale), ("b", stale), ("c", runner())), NOW)
    assert fired.engage == KillMode.CLOSE_ONLY
    assert "ns/a, ns/b" in fired.trigger_message


def test_a_switch_never_clears_itself() -> None:
    engaged = make_switch(mode="halt_all", namespaces=["ns"], trigger=DRAWDOWN,
                          status={"fleetEquityPeak": 100, "matchedBots": ["ns/a"], "triggeredBy": "x",
                                  "engagedAt": NOW.isoformat()})
    plan = compute_killswitch(engaged, fleet(("a", runner(equity=100))), NOW)
    assert plan.engage is None
    assert plan.status.triggered_by == "x"
    assert cond(plan.status, "Engaged") == ("True", "Triggered")


# ------------------------------------------------------------------------------------------ scope, memory


@pytest.mark.parametrize(("patterns", "namespace", "covered"), [
    ((), "anything", True),
    (("team-*",), "team-a", True),
    (("team-*",), "other", False),
    (("team-*", "!team-secret"), "team-secret", False),
])
def test_scope_matches_kopf_style_globs(patterns: tuple[str, ...], namespace: str, covered: bool) -> None:
    assert Scope(patterns).covers(namespace) is covered


def test_a_namespaced_operator_owns_only_switches_it_fully_sees() -> None:
    scope = Scope(("team-*",))
    assert scope.sees_every_bot_of(["team-a", "team-b"])
    assert not scope.sees_every_bot_of([])  # "every namespace": only a cluster-wide operator sees all
    assert not scope.sees_every_bot_of(["team-a", "prod"])
    assert Scope().sees_every_bot_of([])


def test_write_memory_recognises_a_lagging_cache() -> None:
    clock = [0.0]
    memory = WriteMemory(clock=lambda: clock[0])
    memory.record(("ConfigMap", "ns", "a"), "fp", "120")
    assert memory.cache_is_behind(("ConfigMap", "ns", "a"), "fp", "110")
    assert memory.cache_is_behind(("ConfigMap", "ns", "a"), "fp", None)
    assert not memory.cache_is_behind(("ConfigMap", "ns", "a"), "fp", "120")  # caught up
    assert not memory.cache_is_behind(("ConfigMap", "ns", "a"), "other", "110")  # wants something else
    clock[0] = 60.0
    assert not memory.cache_is_behind(("ConfigMap", "ns", "a"), "fp", "110")  # too old to trust


# ------------------------------------------------------------------------------------------ work queue


def test_work_queue_serialises_and_coalesces() -> None:
    async def scenario() -> tuple[list[str], int]:
        runs: list[str] = []
        running = 0
        peak = 0

        async def reconcile(key: str) -> float | None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            runs.append(key)
            await asyncio.sleep(0.05)
            running -= 1
            return None

        queue: WorkQueue[str] = WorkQueue("Test", reconcile, asyncio.Semaphore(4))
        for _ in range(20):
            queue.trigger("a")
            await asyncio.sleep(0.001)
        queue.trigger("b")
        while queue.busy:
            await asyncio.sleep(0.01)
        return runs, peak

    runs, peak = asyncio.run(scenario())
    assert runs.count("a") == 2  # the first run, and one more for everything that came during it
    assert runs.count("b") == 1
    assert peak == 2  # a and b in parallel, never two of a


def test_work_queue_retries_a_temporary_error_after_its_delay() -> None:
    async def scenario() -> list[float]:
        loop = asyncio.get_running_loop()
        times: list[float] = []

        async def reconcile(key: str) -> float | None:
            times.append(loop.time())
            if len(times) == 1:
                raise kopf.TemporaryError("conflict", delay=0.2)
            return None

        outcomes: list[str] = []
        queue: WorkQueue[str] = WorkQueue("Test", reconcile, asyncio.Semaphore(1),
                                          lambda name, outcome, seconds: outcomes.append(outcome))
        queue.trigger("a")
        await asyncio.sleep(0.5)
        assert outcomes == ["retry", "success"]
        return times

    times = asyncio.run(scenario())
    assert len(times) == 2
    assert times[1] - times[0] >= 0.19


# ------------------------------------------------------------------------------------------ metrics


class FakeIndex(dict[Any, list[dict[str, Any]]]):
    pass


def metrics_text() -> str:
    cache = Cache()
    cache.attach({
        "tw_bots": FakeIndex({("ns", "a"): [{"metadata": {"name": "a"},
                                             "status": {"phase": "Running", "effectiveMode": "paper"}}]}),
        "tw_killswitches": FakeIndex({"global": [{"metadata": {"name": "global"}, "spec": {"mode": "close_only"},
                                                  "status": {"pendingBots": ["ns/a"], "maxAckLatencyMs": 250.0}}]}),
    })
    metrics = Metrics(CollectorRegistry(), cache)
    metrics.observe_reconcile("TradingBot", "success", 0.004)
    metrics.count_write("patch", "configmaps")
    return generate_latest(metrics.registry).decode()


def test_metrics_names_and_values() -> None:
    text = metrics_text()
    assert 'tradewarden_operator_reconciles_total{kind="TradingBot",result="success"} 1.0' in text
    assert 'tradewarden_operator_reconcile_duration_seconds_bucket{kind="TradingBot",le="0.005"} 1.0' in text
    assert 'tradewarden_operator_bots{mode="paper",phase="Running"} 1.0' in text
    assert 'tradewarden_operator_bots{mode="live",phase="Running"} 0.0' in text
    assert 'tradewarden_operator_killswitch_engaged{killswitch="global",mode="close_only"} 1.0' in text
    assert 'tradewarden_operator_killswitch_max_ack_latency_seconds{killswitch="global"} 0.25' in text
    assert 'tradewarden_operator_api_writes_total{resource="configmaps",verb="patch"} 1.0' in text


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (Debian: prometheus)")
def test_metrics_pass_promtool_check() -> None:
    proc = subprocess.run(["promtool", "check", "metrics"], input=metrics_text(), capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------------ ack latency


def test_spec_change_time_is_the_newest_managed_fields_entry_owning_spec() -> None:
    t0, t1 = NOW - dt.timedelta(hours=1), NOW - dt.timedelta(seconds=5)
    ks = with_managed_fields(
        make_switch(mode="close_only"),
        entry("kubectl-client-side-apply", t0, {"f:metadata": {"f:annotations": {}}, "f:spec": {"f:reason": {}}}),
        entry("kubectl-patch", t1, SPEC_MODE),
        entry("tradewarden-operator", NOW, {"f:status": {"f:matched": {}}}, subresource="status"),  # status only
        entry("kubectl-label", NOW, {"f:metadata": {"f:labels": {}}}),  # not the spec
    )
    assert spec_changed_at(ks) == t1
    assert spec_changed_at(make_switch(mode="close_only")) is None
    assert spec_changed_at(with_managed_fields(make_switch(), {"time": "junk", "fieldsV1": "x"}, "x")) is None


def test_the_cache_keeps_a_switchs_spec_change_times_and_nothing_else_of_managed_fields() -> None:
    t1 = NOW - dt.timedelta(seconds=5)
    body = with_managed_fields(make_switch(mode="close_only"), entry("kubectl-patch", t1, SPEC_MODE),
                               entry("tradewarden-operator", NOW, {"f:status": {}}, subresource="status")).to_wire()
    body["kind"] = "KillSwitch"
    cached = slim(body)
    assert cached["metadata"]["managedFields"] == [
        {"manager": "kubectl-patch", "operation": "Update", "time": stamp(t1), "fieldsType": "FieldsV1",
         "fieldsV1": {"f:spec": {}}}]
    assert spec_changed_at(KillSwitch.model_validate(cached)) == t1
    bot = {"kind": "TradingBot", "metadata": {"name": "a", "managedFields": body["metadata"]["managedFields"]}}
    assert "managedFields" not in slim(bot)["metadata"]


def test_latency_counts_from_the_spec_change_not_from_when_the_operator_noticed() -> None:
    # The operator was down for an hour: the switch was patched at CHANGED (the API server records
    # 12:00:00 for a patch at 12:00:00.6), runners acked 0.34 s later, the operator sees it all at once.
    changed = NOW
    acks_at = [NOW + dt.timedelta(milliseconds=600 + 250), NOW + dt.timedelta(milliseconds=600 + 340)]
    ks = spec_changed(make_switch(mode="halt_all", generation=2, namespaces=["ns"],
                                  status=compute_killswitch(make_switch(namespaces=["ns"]), [], NOW).status.to_wire()),
                      changed)
    bots = fleet(("a", runner(acks=ack(2, "halt_all", acks_at[0]))), ("b", runner(acks=ack(2, "halt_all", acks_at[1]))))
    noticed = NOW + dt.timedelta(hours=1)
    st = compute_killswitch(ks, bots, noticed).status
    # An upper bound: the true latency (0.34 s) plus the fraction of a second the record drops (0.6 s).
    assert st.max_ack_latency_ms == pytest.approx(940.0)
    assert 340.0 <= st.max_ack_latency_ms < 340.0 + 1000.0
    assert st.engaged_at == changed  # the engagement began when the spec changed, not when noticed
    assert cond(st, "Acknowledged") == ("True", "AllAcknowledged")
    events = {e.reason: e for e in killswitch_events(ks.status, st, KillMode.HALT_ALL)}
    # The Event quotes the very number status records.
    assert "slowest ack 940 ms after the spec change" in events["KillSwitchAcknowledged"].message
    again = compute_killswitch(with_managed_fields(
        make_switch(mode="halt_all", generation=2, namespaces=["ns"], status=st.to_wire()),
        entry("kubectl-patch", changed, SPEC_MODE)), bots, noticed + dt.timedelta(minutes=1))
    assert killswitch_status_patch(st, again.status) is None  # measured once, the same on every reconcile


@pytest.mark.parametrize(("changed", "acks", "expected"), [
    (NOW, [NOW + dt.timedelta(milliseconds=12.34)], 12.3),
    (NOW, [NOW, NOW + dt.timedelta(seconds=2)], 2000.0),
    (None, [NOW], None),                                    # no record of the change: no figure
    (NOW, [], None),
    (NOW, [NOW - dt.timedelta(seconds=1), NOW + dt.timedelta(seconds=1)], None),  # an ack before the change
])
def test_ack_latency_is_an_upper_bound_or_nothing(changed: dt.datetime | None, acks: list[dt.datetime],
                                                 expected: float | None) -> None:
    assert ack_latency_ms(changed, acks) == expected


def test_each_generation_is_acknowledged_once() -> None:
    # The operator was down across a second spec change (close_only -> halt_all, generation 3 -> 4) and
    # the runners acknowledged it before it came back: the new generation still gets its Event.
    base = make_switch(mode="close_only", generation=3, namespaces=["ns"], status={"engagedAt": NOW.isoformat()})
    gen3 = compute_killswitch(spec_changed(base, NOW), fleet(("a", runner(acks=ack(3)))), NOW).status
    later = NOW + dt.timedelta(minutes=5)
    ks4 = spec_changed(make_switch(mode="halt_all", generation=4, namespaces=["ns"], status=gen3.to_wire()), later)
    gen4 = compute_killswitch(ks4, fleet(("a", runner(acks=ack(4, "halt_all", later + dt.timedelta(seconds=0.2))))),
                              later + dt.timedelta(minutes=1)).status
    assert cond(gen4, "Acknowledged") == ("True", "AllAcknowledged")
    assert gen4.max_ack_latency_ms == pytest.approx(200.0)
    assert [e.reason for e in killswitch_events(gen3, gen4, KillMode.HALT_ALL)] == ["KillSwitchAcknowledged"]
    assert killswitch_events(gen4, gen4, KillMode.HALT_ALL) == []


# ------------------------------------------------------------------------------------------ no bot matched


def test_an_engaged_switch_that_matches_no_bot_says_so() -> None:
    ks = make_switch(name="prod-brake", mode="close_only", namespaces=["prod"], match_labels={"team": "fx"},
                     status=compute_killswitch(make_switch(name="prod-brake", namespaces=["prod"]), [], NOW)
                     .status.to_wire())
    bots = fleet(("a", runner()), namespace="production", labels={"team": "fx"})
    plan = compute_killswitch(ks, bots, NOW)
    st = plan.status
    assert cond(st, "Engaged") == ("True", "Engaged")
    assert cond(st, "Acknowledged") == ("False", "NoBotsMatched")
    message = get_condition(st.conditions, "Acknowledged").message  # type: ignore[union-attr]
    assert "namespaces prod" in message
    assert "team=fx" in message
    assert "none of the 1 TradingBots" in message
    assert "check spec.selector.namespaces" in message
    assert "spec.selector.botSelector" in message
    # MATCHED shows 0, not an empty cell: the field is written, and written as 0.
    assert st.to_wire()["matched"] == 0
    patch = killswitch_status_patch(ks.status, st)
    assert patch is not None
    assert patch["status"]["matched"] == 0
    events = killswitch_events(ks.status, st, KillMode.CLOSE_ONLY)
    assert [(e.type, e.reason) for e in events] == [("Warning", "KillSwitchEngaged"), ("Warning", "NoBotsMatched")]
    assert events[1].message == message
    # Once per flip: the next reconcile, with nothing changed, says nothing.
    settled = make_switch(name="prod-brake", mode="close_only", namespaces=["prod"], match_labels={"team": "fx"},
                          status=st.to_wire())
    again = compute_killswitch(settled, bots, NOW + dt.timedelta(seconds=30)).status
    assert killswitch_status_patch(settled.status, again) is None
    assert killswitch_events(st, again, KillMode.CLOSE_ONLY) == []
    # The selector fixed: the bot is matched, and acknowledges.
    fixed = make_switch(name="prod-brake", mode="close_only", generation=2, namespaces=["production"],
                        status=st.to_wire())
    ok = compute_killswitch(fixed, fleet(("a", runner(acks={"prod-brake": KillAck(
        generation=2, mode=KillMode.CLOSE_ONLY, at=NOW)})), namespace="production"), NOW).status
    assert cond(ok, "Acknowledged") == ("True", "AllAcknowledged")
    assert ok.matched == 1


def test_a_switch_that_is_off_and_matches_nothing_is_quiet() -> None:
    st = compute_killswitch(make_switch(mode="off", namespaces=["nowhere"]), fleet(("a", runner())), NOW).status
    assert cond(st, "Acknowledged") == ("True", "NoMatchedBots")
    assert killswitch_events(make_switch().status, st, KillMode.OFF) == []


def test_no_bots_at_all_is_named() -> None:
    st = compute_killswitch(make_switch(mode="halt_all"), [], NOW).status
    message = get_condition(st.conditions, "Acknowledged").message  # type: ignore[union-attr]
    assert "selector (empty: every bot)" in message
    assert "there are no TradingBots at all" in message
