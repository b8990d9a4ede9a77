"""Unit tests of why a runner pod cannot run (``leases.pod_problem``) and how ``RunnerHealthy`` says it.

Pods are shaped as the kubelet and the scheduler write them (``status.containerStatuses``, the
``PodScheduled`` condition) and go through ``cache.slim_pod`` as the watch cache keeps them. The last tests
run ``Controller.reconcile_bot`` on a real ``Cache`` attached to plain dicts shaped like kopf's indices, with
a Kube that records its writes: the wiring from the cache to the status and the Events.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from support.builders import TEST_SIGNER
from support.controller_objects import DEFAULTS, NOW, make_bot, runner, spec, status, valid_config
from tradewarden.api.conditions import MAX_MESSAGE, get_condition
from tradewarden.api.tradingbot import TradingBot, TradingBotStatus
from tradewarden.controller import leases
from tradewarden.controller.builders import build_bot_plan
from tradewarden.controller.cache import Cache, slim_event, slim_pod
from tradewarden.controller.handlers import Controller
from tradewarden.controller.kube import Kube, Manifest, ResourceRef
from tradewarden.controller.leases import (
    NO_POD_GRACE,
    NO_RUNNER,
    PodProblem,
    RunnerObservation,
    RunnerWorkload,
    pod_problem,
    with_pod,
    workload_facts,
)
from tradewarden.controller.metrics import Metrics
from tradewarden.controller.status import ConfigSource, bot_events, compute_bot_status, next_bot_check

POD = "bot-runner-0"
IMAGE = "tradewarden/runner:unit"
SECRET = "sk9f8A7b6C5d4E3f2G1h0Jk7Lm6Nn5Op"
WORKLOAD = RunnerWorkload(namespace="ns", statefulset="bot-runner", pod=POD, image=IMAGE,
                          created=NOW - dt.timedelta(minutes=5), changed=NOW - dt.timedelta(minutes=5))


def container(name: str = "runner", restarts: int = 0, last: dict[str, Any] | None = None,
              **state: Any) -> dict[str, Any]:
    """A container status as the kubelet writes it; ``state`` is one of running=, waiting=, terminated=."""
    out: dict[str, Any] = {"name": name, "image": IMAGE if name == "runner" else "mesh/proxy:1", "ready": False,
                           "restartCount": restarts, "imageID": "", "started": False,
                           "containerID": "containerd://" + "ab12" * 16, "state": state or {"waiting": {
                               "reason": "ContainerCreating"}}}
    if last is not None:
        out["lastState"] = {"terminated": {"startedAt": "2026-03-01T11:58:00Z",
                                           "finishedAt": "2026-03-01T11:58:05Z", **last}}
    return out


def waiting(reason: str, message: str = "", **kw: Any) -> dict[str, Any]:
    return container(waiting={"reason": reason, **({"message": message} if message else {})}, **kw)


def pod(*containers: dict[str, Any], phase: str = "Pending", scheduled: dict[str, Any] | None = None,
        init: list[dict[str, Any]] | None = None, deleting: bool = False) -> dict[str, Any]:
    """A runner pod as the API server returns it (the parts the operator must not keep included)."""
    meta: dict[str, Any] = {"name": POD, "namespace": "ns", "uid": "pod-uid", "labels": {"tradewarden.io/bot": "bot"},
                            "managedFields": [{"manager": "kubelet"}]}
    if deleting:
        meta["deletionTimestamp"] = "2026-03-01T11:59:00Z"
    conditions = [{"type": "PodScheduled", "status": "True"}]
    if scheduled is not None:
        conditions = [{"type": "PodScheduled", "status": "False", **scheduled}]
    body: dict[str, Any] = {
        "metadata": meta,
        "spec": {"containers": [{"name": "runner", "image": IMAGE, "env": [{"name": "TOKEN", "value": SECRET}]}]},
        "status": {"phase": phase, "conditions": conditions, "containerStatuses": list(containers)},
    }
    if init is not None:
        body["status"]["initContainerStatuses"] = init
    return body


def problem(body: dict[str, Any] | None, workload: RunnerWorkload | None = WORKLOAD,
            now: dt.datetime = NOW) -> PodProblem | None:
    """What the operator decides from the pod as its watch cache keeps it (and the same from the full pod)."""
    found = pod_problem(slim_pod(body) if body is not None else None, workload, now)
    assert found == pod_problem(body, workload, now)
    return found


# ------------------------------------------------------------------------------------------ the pure decision

CRASH_LOG = f"`kubectl logs -n ns {POD} -c runner --previous`"

# (id, pod, reason or None, fragments the message must contain)
CASES: list[tuple[str, dict[str, Any] | None, str | None, list[str]]] = [
    ("running", pod(container(running={"startedAt": "2026-03-01T11:00:00Z"}), phase="Running"), None, []),
    ("creating", pod(waiting("ContainerCreating")), None, []),
    ("not-scheduled-yet", pod(), None, []),
    ("err-image-pull", pod(waiting("ErrImagePull", "rpc error: not found")), "ImagePullFailed",
     [IMAGE, "ErrImagePull/ImagePullBackOff", "spec.runner.image", "load the image onto the node",
      f"kubectl describe pod -n ns {POD}"]),
    ("image-pull-backoff", pod(waiting("ImagePullBackOff", f'Back-off pulling image "{IMAGE}"')), "ImagePullFailed",
     [IMAGE, "spec.runner.image", "load the image onto the node"]),
    ("invalid-image-name", pod(waiting("InvalidImageName", "couldn't parse image name")), "ImagePullFailed",
     [IMAGE, "InvalidImageName", "fix spec.runner.image"]),
    ("err-image-never-pull", pod(waiting("ErrImageNeverPull", "not present with pull policy of Never")),
     "ImagePullFailed", [IMAGE, "ErrImageNeverPull", "load the image onto the node"]),
    ("create-container-config-error", pod(waiting("CreateContainerConfigError", 'secret "bot-keys" not found')),
     "ContainerStartFailed", ["CreateContainerConfigError", 'secret "bot-keys" not found',
                              f"kubectl describe pod -n ns {POD}"]),
    ("create-container-error", pod(waiting("CreateContainerError", "context deadline exceeded")),
     "ContainerStartFailed", ["CreateContainerError", "context deadline exceeded"]),
    ("run-container-error", pod(waiting("RunContainerError", 'exec: "tradewarden": executable file not found')),
     "ContainerStartFailed", ["RunContainerError", "executable file not found"]),
    ("crash-loop", pod(waiting("CrashLoopBackOff", "back-off 40s restarting failed container", restarts=4,
                               last={"exitCode": 1, "reason": "Error"}), phase="Running"),
     "RunnerCrashed", ["exited with code 1 (Error)", "restarted 4 times", "CrashLoopBackOff", CRASH_LOG]),
    ("oom-killed", pod(waiting("CrashLoopBackOff", restarts=2, last={"exitCode": 137, "reason": "OOMKilled"}),
                       phase="Running"),
     "RunnerCrashed", ["exited with code 137 (OOMKilled)", "raise spec.runner.resources.limits.memory", CRASH_LOG]),
    ("terminated-non-zero", pod(container(terminated={"exitCode": 2, "reason": "Error"}), phase="Running"),
     "RunnerCrashed", ["exited with code 2 (Error)", f"`kubectl logs -n ns {POD} -c runner`"]),
    ("terminated-zero", pod(container(terminated={"exitCode": 0, "reason": "Completed"}), phase="Running"), None, []),
    ("unschedulable", pod(scheduled={"reason": "Unschedulable", "message": (
        "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption "
        "victims found for incoming pod.")}),
     "Unschedulable", ["3 Insufficient cpu", "lower them", "spec.runner.resources",
                       f"kubectl describe pod -n ns {POD}"]),
    ("scheduling-gated", pod(scheduled={"reason": "SchedulingGated", "message": "waiting"}), None, []),
    ("terminating", pod(waiting("CrashLoopBackOff", restarts=4, last={"exitCode": 1}), deleting=True), None, []),
    ("init-container-first", pod(waiting("PodInitializing"), init=[
        container("mesh-init", restarts=3, last={"exitCode": 1, "reason": "Error"},
                  waiting={"reason": "CrashLoopBackOff"})]),
     "RunnerCrashed", ["container mesh-init", f"`kubectl logs -n ns {POD} -c mesh-init --previous`"]),
    ("sidecar-image", pod(container(running={"startedAt": "2026-03-01T11:00:00Z"}),
                          container("proxy", waiting={"reason": "ImagePullBackOff"})),
     "ImagePullFailed", ["container proxy", "mesh/proxy:1"]),
    ("no-pod-past-grace", None, "NoRunnerPod",
     ["StatefulSet bot-runner has had no pod bot-runner-0 for more than 30 s", "PodSecurity",
      "`kubectl describe statefulset -n ns bot-runner`"]),
]


@pytest.mark.parametrize(("body", "reason", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_why_the_runner_pod_cannot_run(body: dict[str, Any] | None, reason: str | None,
                                       fragments: list[str]) -> None:
    found = problem(body)
    if reason is None:
        assert found is None, found
        return
    assert found is not None
    assert found.reason == reason
    assert found.reason in leases.POD_REASONS
    for fragment in fragments:
        assert fragment in found.message, (fragment, found.message)
    assert len(found.message) <= MAX_MESSAGE
    assert SECRET not in found.message


def test_the_kubelets_back_off_between_pull_errors_changes_nothing() -> None:
    # The kubelet alternates ErrImagePull and ImagePullBackOff on every back-off: one status, no writes.
    first = problem(pod(waiting("ErrImagePull", "rpc error: code = NotFound")))
    second = problem(pod(waiting("ImagePullBackOff", f'Back-off pulling image "{IMAGE}"')))
    assert first == second


def test_the_kubelets_message_is_truncated_and_never_carries_a_secret() -> None:
    said = f"failed to start: TOKEN={SECRET} then " + "x " * 2000
    found = problem(pod(waiting("RunContainerError", said)))
    assert found is not None
    assert SECRET not in found.message
    assert SECRET[:12] not in found.message
    assert "TOKEN=(not shown)" in found.message
    assert "(truncated)" in found.message
    assert len(found.message) < 700
    assert leases.quoted("") == "(no message)"


def test_a_statefulset_without_a_pod_is_reported_only_after_its_grace() -> None:
    fresh = RunnerWorkload(namespace="ns", statefulset="bot-runner", pod=POD, image=IMAGE,
                           created=NOW - dt.timedelta(minutes=5), changed=NOW - dt.timedelta(seconds=10))
    assert problem(None, fresh) is None  # changed 10 s ago: the controller is still creating the pod
    ends = NOW - dt.timedelta(seconds=10) + NO_POD_GRACE
    assert problem(None, fresh, ends) is None
    late = problem(None, fresh, ends + dt.timedelta(seconds=1))
    assert late is not None
    assert late.reason == "NoRunnerPod"
    assert problem(None, None) is None  # no StatefulSet yet: the operator is about to apply it
    # The reconcile comes back when the grace ends.
    observed = with_pod(NO_RUNNER, None, fresh, NOW)
    assert observed.pod_problem is None
    assert observed.pod_recheck_at == NOW + dt.timedelta(seconds=20)
    assert with_pod(NO_RUNNER, None, WORKLOAD, NOW).pod_recheck_at is None  # past the grace already
    assert with_pod(NO_RUNNER, pod(), fresh, NOW).pod_recheck_at is None


def test_the_latest_failed_create_of_this_statefulset_is_quoted() -> None:
    sts = {"metadata": {"name": "bot-runner", "namespace": "ns", "uid": "sts-2",
                        "creationTimestamp": "2026-03-01T11:00:00Z", "generation": 2},
           "spec": {"template": {"spec": {"containers": [{"name": "runner", "image": IMAGE}]}}}}

    def event(uid: str, at: str, message: str) -> Manifest:
        return slim_event({"metadata": {"name": f"bot-runner.{at}", "namespace": "ns"},
                           "involvedObject": {"kind": "StatefulSet", "name": "bot-runner", "uid": uid},
                           "reason": "FailedCreate", "message": message, "lastTimestamp": at})

    events = [event("sts-1", "2026-03-01T11:59:00Z", "of the StatefulSet before it was re-created"),
              event("sts-2", "2026-03-01T11:10:00Z", "older"),
              event("sts-2", "2026-03-01T11:50:00Z", (
                  'create Pod bot-runner-0 in StatefulSet bot-runner failed error: pods "bot-runner-0" is '
                  'forbidden: exceeded quota: pods, requested: pods=1, used: pods=0, limited: pods=0'))]
    facts = workload_facts(sts, POD, NOW - dt.timedelta(minutes=1), events)
    assert (facts.image, facts.created, facts.statefulset) == (IMAGE, dt.datetime(2026, 3, 1, 11, tzinfo=dt.UTC),
                                                              "bot-runner")
    assert facts.failed_create.endswith("limited: pods=0")
    found = problem(None, facts)
    assert found is not None
    assert found.reason == "NoRunnerPod"
    assert "the latest FailedCreate: create Pod bot-runner-0 in StatefulSet bot-runner failed" in found.message
    assert "exceeded quota" in found.message
    assert workload_facts(sts, POD, None).failed_create == ""


def test_the_cache_keeps_a_slim_pod() -> None:
    body = pod(waiting("CrashLoopBackOff", "y" * 5000, restarts=3, last={"exitCode": 1, "reason": "Error"}),
               scheduled={"reason": "Unschedulable", "message": "z" * 5000}, deleting=True)
    body["status"]["conditions"].append({"type": "Ready", "status": "False", "message": "noise"})
    slim = slim_pod(body)
    assert set(slim) == {"metadata", "status"}
    assert set(slim["metadata"]) == {"name", "namespace", "uid", "deletionTimestamp"}
    assert [c["type"] for c in slim["status"]["conditions"]] == ["PodScheduled"]
    [kept] = slim["status"]["containerStatuses"]
    assert set(kept) == {"name", "image", "restartCount", "state", "lastState"}
    assert kept["lastState"] == {"terminated": {"exitCode": 1, "reason": "Error"}}
    assert len(kept["state"]["waiting"]["message"]) == 1024
    assert len(slim["status"]["conditions"][0]["message"]) == 1024
    assert SECRET not in repr(slim)
    # What the Lease check reads is still there.
    running = slim_pod(pod(container(running={"startedAt": "2026-03-01T11:00:00Z"}), phase="Running"))
    assert running["status"]["containerStatuses"][0]["state"] == {"running": {"startedAt": "2026-03-01T11:00:00Z"}}


# ------------------------------------------------------------------------------------------ RunnerHealthy

CRASHING = PodProblem("RunnerCrashed", "container runner of the runner pod bot-runner-0 exited with code 1")


def source() -> ConfigSource:
    return ConfigSource("momentum", True, True, True, "", valid_config())


def reconcile(bot: TradingBot, run: RunnerObservation, now: dt.datetime = NOW) -> TradingBotStatus:
    plan = build_bot_plan(bot, valid_config(), [], run, DEFAULTS, now)
    return compute_bot_status(bot, source(), plan, run, now)


def healthy(new: TradingBotStatus) -> tuple[str, str, str]:
    cond = get_condition(new.conditions, "RunnerHealthy")
    assert cond is not None
    return cond.status.value, cond.reason, cond.message


def with_problem(run: RunnerObservation, found: PodProblem | None = CRASHING) -> RunnerObservation:
    return replace(run, pod_problem=found)


def test_the_pods_reason_replaces_a_missing_heartbeat() -> None:
    new = reconcile(make_bot(), with_problem(NO_RUNNER))
    assert healthy(new) == ("False", "RunnerCrashed", CRASHING.message)
    assert new.phase.value == "Degraded"
    ready = get_condition(new.conditions, "Ready")
    assert ready is not None
    assert (ready.status.value, ready.reason) == ("False", "RunnerCrashed")


def test_the_pods_reason_replaces_a_stale_heartbeat() -> None:
    stale = runner(renewed=NOW - dt.timedelta(minutes=5))
    assert healthy(reconcile(make_bot(), with_problem(stale)))[:2] == ("False", "RunnerCrashed")


def test_the_pods_reason_replaces_a_contradicted_lease_and_says_it_is_not_believed() -> None:
    doubted = leases.not_believed(runner(), "the Lease was renewed but the runner pod bot-runner-0 is Pending")
    state, reason, message = healthy(reconcile(make_bot(), with_problem(doubted)))
    assert (state, reason) == ("False", "RunnerCrashed")
    assert message.startswith(CRASHING.message)
    assert message.endswith("Lease bot-runner is not believed either (condition Intact)")
    long = with_problem(doubted, PodProblem("RunnerCrashed", "w" * 5000))
    bounded = healthy(reconcile(make_bot(), long))[2]
    assert len(bounded) <= MAX_MESSAGE
    assert bounded.endswith("(condition Intact)")


def test_the_pods_reason_never_turns_a_fresh_believed_heartbeat_unhealthy() -> None:
    assert healthy(reconcile(make_bot(), with_problem(runner())))[:2] == ("True", "HeartbeatFresh")


def test_placement_external_is_never_judged_by_a_pod() -> None:
    bot = make_bot("bot", spec(placement="external"))
    assert healthy(reconcile(bot, with_problem(NO_RUNNER)))[:2] == ("False", "NoHeartbeat")
    assert reconcile(bot, with_problem(NO_RUNNER)).phase.value == "Pending"


def test_a_warning_names_each_reason_entered_once() -> None:
    bot = make_bot()
    pending = reconcile(bot, NO_RUNNER)
    crashed = reconcile(make_bot("bot", status(**pending.to_wire())), with_problem(NO_RUNNER))
    events = {e.reason: e for e in bot_events(pending, crashed)}
    assert events["RunnerCrashed"].type == "Warning"
    assert events["RunnerCrashed"].message == f"RunnerHealthy: {CRASHING.message}"
    assert events["PhaseChanged"].type == "Warning"
    # Another restart (a new message, the same reason): the status says it, no new Event.
    again = reconcile(make_bot("bot", status(**crashed.to_wire())),
                      with_problem(NO_RUNNER, PodProblem("RunnerCrashed", CRASHING.message + ", restarted 5 times")))
    assert [e.reason for e in bot_events(crashed, again)] == []
    pulled = reconcile(make_bot("bot", status(**again.to_wire())),
                       with_problem(NO_RUNNER, PodProblem("ImagePullFailed", "cannot pull")))
    assert [(e.type, e.reason) for e in bot_events(again, pulled)] == [("Warning", "ImagePullFailed")]
    # Back to a reason the pod did not give: no pod Event.
    assert [e.reason for e in bot_events(pulled, reconcile(bot, NO_RUNNER))] == ["PhaseChanged"]


def test_the_reconciler_comes_back_when_a_missing_pods_grace_ends() -> None:
    bot = make_bot()
    run = replace(NO_RUNNER, pod_recheck_at=NOW + dt.timedelta(seconds=12))
    plan = build_bot_plan(bot, valid_config(), [], run, DEFAULTS, NOW)
    assert next_bot_check(bot, plan, run, NOW) == pytest.approx(12.5)


# ------------------------------------------------------------------------------------------ the reconcile


class RecordingKube(Kube):
    """A Kube that records writes and Events and sends nothing."""

    def __init__(self) -> None:
        class _Client:
            user_agent = ""
        super().__init__(_Client())  # type: ignore[arg-type]
        self.patches: list[Manifest] = []
        self.events: list[tuple[str, str, str]] = []
        self._rv = 1000

    def _written(self, manifest: Manifest) -> Manifest:
        self._rv += 1
        out = copy.deepcopy(manifest)
        out.setdefault("metadata", {})["resourceVersion"] = str(self._rv)
        return out

    def apply(self, manifest: Manifest) -> Manifest:
        return self._written(manifest)

    def create(self, manifest: Manifest) -> Manifest:
        return self._written(manifest)

    def merge_patch(self, ref: ResourceRef, namespace: str | None, name: str, patch: Manifest,
                    subresource: str | None = None) -> Manifest:
        self.patches.append(patch)
        return self._written({"metadata": {}})

    def delete(self, ref: ResourceRef, namespace: str | None, name: str, uid: str | None = None) -> bool:
        return True

    def post_event(self, involved: Manifest, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


STATEFULSET = {"apiVersion": "apps/v1", "kind": "StatefulSet",
               "metadata": {"name": "bot-runner", "namespace": "ns", "uid": "sts-uid", "generation": 1,
                            "creationTimestamp": "2026-03-01T11:00:00Z",
                            "labels": {"tradewarden.io/bot": "bot", "app.kubernetes.io/managed-by": "tradewarden"}},
               "spec": {"template": {"spec": {"containers": [{"name": "runner", "image": IMAGE}]}}}}


def controller(bot: TradingBot, the_pod: dict[str, Any] | None, clock: list[dt.datetime],
               events: list[dict[str, Any]] | None = None) -> tuple[Controller, RecordingKube]:
    kube = RecordingKube()
    cache = Cache()
    cache.attach({
        "tw_bots": {("ns", "bot"): [bot.to_wire()]},
        "tw_statefulsets": {("ns", "bot-runner"): [STATEFULSET]},
        "tw_pods": {("ns", POD): [slim_pod(the_pod)]} if the_pod is not None else {},
        "tw_events": {("ns", "bot-runner"): [slim_event(e) for e in events or []]},
    })
    ctl = Controller(kube, DEFAULTS, Metrics(CollectorRegistry()), cache=cache, clock=lambda: clock[0],
                     signer=TEST_SIGNER)
    return ctl, kube


def written_healthy(kube: RecordingKube) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in kube.patches[-1]["status"]["conditions"]
                                   if c["type"] == "RunnerHealthy"]
    assert len(found) == 1
    return found[0]


def test_the_reconcile_reads_the_runner_pod_from_the_cache_and_says_why() -> None:
    ctl, kube = controller(make_bot(), pod(waiting("ImagePullBackOff", "Back-off")), [NOW])
    asyncio.run(ctl.reconcile_bot(("ns", "bot")))
    cond = written_healthy(kube)
    assert (cond["status"], cond["reason"]) == ("False", "ImagePullFailed")
    assert IMAGE in cond["message"]
    assert ("Warning", "ImagePullFailed") in [(t, r) for t, r, _ in kube.events]


def test_the_reconcile_leaves_placement_external_to_the_lease() -> None:
    ctl, kube = controller(make_bot("bot", spec(placement="external")), pod(waiting("ImagePullBackOff")), [NOW])
    asyncio.run(ctl.reconcile_bot(("ns", "bot")))
    assert written_healthy(kube)["reason"] == "NoHeartbeat"
    assert "ImagePullFailed" not in [r for _, r, _ in kube.events]


def test_the_reconcile_reports_a_statefulset_without_a_pod_after_the_grace() -> None:
    refused = {"metadata": {"name": "bot-runner.1", "namespace": "ns"}, "reason": "FailedCreate",
               "involvedObject": {"kind": "StatefulSet", "name": "bot-runner", "uid": "sts-uid"},
               "message": 'pods "bot-runner-0" is forbidden: violates PodSecurity "restricted:latest"',
               "lastTimestamp": "2026-03-01T11:59:50Z"}
    clock = [NOW]
    ctl, kube = controller(make_bot(), None, clock, [refused])
    delay = asyncio.run(ctl.reconcile_bot(("ns", "bot")))
    # The operator just (re)started: the grace runs from now, and the reconcile comes back when it ends.
    assert written_healthy(kube)["reason"] == "NoHeartbeat"
    assert delay == pytest.approx(NO_POD_GRACE.total_seconds() + 0.5)
    clock[0] = NOW + NO_POD_GRACE + dt.timedelta(seconds=1)
    ctl._memory = type(ctl._memory)()  # 31 s later our own writes no longer hold the reconcile back
    asyncio.run(ctl.reconcile_bot(("ns", "bot")))
    cond = written_healthy(kube)
    assert (cond["status"], cond["reason"]) == ("False", "NoRunnerPod")
    assert "kubectl describe statefulset -n ns bot-runner" in cond["message"]
    assert 'violates PodSecurity "restricted:latest"' in cond["message"]
    assert ("Warning", "NoRunnerPod") in [(t, r) for t, r, _ in kube.events]
