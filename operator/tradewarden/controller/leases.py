"""Reading the runner's Lease (the only channel through which a runner reports, DESIGN.md, data flow) and,
for placement ``cluster``, the runner pod that renews it.

Pure functions, no I/O. Called by the reconcilers in :mod:`tradewarden.controller.handlers` with the
Lease, the runner pod and its StatefulSet from the watch cache, and by the policies in
:mod:`~tradewarden.controller.status` and :mod:`~tradewarden.controller.switches` through the
:class:`RunnerObservation` they get. The pod is checked twice: whether it contradicts the Lease
(:func:`pod_contradiction`, a sign of forgery) and why it cannot run (:func:`pod_problem`: what the kubelet,
the scheduler or the StatefulSet controller say, which ``RunnerHealthy`` names instead of a bare missing
heartbeat).

The runner is another process, possibly an older or newer version, possibly broken: nothing it writes is
trusted to parse. A malformed annotation is recorded in ``problems`` and otherwise ignored, so a bad
runner can make its own bot look unhealthy but can never crash the operator.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pydantic import ValidationError

from tradewarden.api.conditions import bound_message
from tradewarden.api.runtime import (
    ANN_APPLIED_HASH,
    ANN_KILL_ACKS,
    ANN_KILL_MODE,
    ANN_LIVE_REFUSED,
    ANN_REJECTED,
    ANN_RUNNER_IDENTITY,
    ANN_TELEMETRY,
    KillAck,
    RunnerIdentity,
    Telemetry,
)
from tradewarden.api.tradingbot import KillMode


class PodProblem(NamedTuple):
    """Why the runner pod cannot run, as ``RunnerHealthy`` says it: a reason of :data:`POD_REASONS` and a
    message naming the pod's own reason and what to do."""

    reason: str
    message: str


@dataclass(frozen=True)
class RunnerObservation:
    """What one runner has said through its Lease, parsed."""

    lease_exists: bool = False
    renew_time: dt.datetime | None = None
    applied_hash: str = ""
    kill_mode: str = ""
    kill_acks: dict[str, KillAck] = field(default_factory=dict)
    telemetry: Telemetry | None = None
    rejected: str = ""
    #: Why the runner refused a live permission ("" when it did not).
    live_refused: str = ""
    #: Who says it renews the Lease (its pod, or nothing for an external runner).
    identity: RunnerIdentity | None = None
    #: Why this Lease is not believed: it contradicts what the operator observes of the runner's pod.
    #: Its acknowledgements and telemetry are then dropped, and its heartbeat counts as missing.
    contradiction: str = ""
    problems: tuple[str, ...] = ()
    #: Why the runner pod (placement cluster) cannot run, from the pod and its StatefulSet (:func:`with_pod`).
    pod_problem: PodProblem | None = None
    #: When :func:`pod_problem` may change by itself (a StatefulSet without a pod past its grace).
    pod_recheck_at: dt.datetime | None = None

    @property
    def bot_trip(self) -> KillMode:
        return self.telemetry.bot_trip if self.telemetry else KillMode.OFF

    @property
    def bot_trip_reason(self) -> str:
        return self.telemetry.bot_trip_reason if self.telemetry else ""

    def heartbeat_stale(self, now: dt.datetime, grace_seconds: int) -> bool:
        """True when the runner renewed once but not within ``grace_seconds`` of ``now`` (or its Lease is
        not believed)."""
        if self.contradiction:
            return True
        return self.renew_time is not None and (now - self.renew_time).total_seconds() > grace_seconds

    def heartbeat_fresh(self, now: dt.datetime, grace_seconds: int) -> bool:
        if self.contradiction:
            return False
        return self.renew_time is not None and (now - self.renew_time).total_seconds() <= grace_seconds


NO_RUNNER = RunnerObservation()


def parse_time(value: Any) -> dt.datetime | None:
    """An RFC 3339 time as the API server writes it (``...Z``, optionally with microseconds)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def observe_lease(lease: dict[str, Any] | None) -> RunnerObservation:
    """Parse the runner's Lease ``<bot>-runner``; :data:`NO_RUNNER` when there is none."""
    if lease is None:
        return NO_RUNNER
    meta = lease.get("metadata") or {}
    annotations: dict[str, str] = meta.get("annotations") or {}
    spec = lease.get("spec") or {}
    problems: list[str] = []

    telemetry: Telemetry | None = None
    raw_telemetry = annotations.get(ANN_TELEMETRY)
    if raw_telemetry:
        try:
            telemetry = Telemetry.model_validate_json(raw_telemetry)
        except ValidationError as exc:
            problems.append(f"annotation {ANN_TELEMETRY}: not valid telemetry ({_first_error(exc)})")

    acks: dict[str, KillAck] = {}
    raw_acks = annotations.get(ANN_KILL_ACKS)
    if raw_acks:
        try:
            decoded = json.loads(raw_acks)
            if not isinstance(decoded, dict):
                raise ValueError("expected a JSON object keyed by KillSwitch name")
            for name, value in decoded.items():
                acks[str(name)] = KillAck.model_validate(value)
        except (ValueError, ValidationError) as exc:
            problems.append(f"annotation {ANN_KILL_ACKS}: {exc}")

    return RunnerObservation(
        lease_exists=True,
        renew_time=parse_time(spec.get("renewTime")),
        applied_hash=annotations.get(ANN_APPLIED_HASH, ""),
        kill_mode=annotations.get(ANN_KILL_MODE, ""),
        kill_acks=acks,
        telemetry=telemetry,
        rejected=annotations.get(ANN_REJECTED, ""),
        live_refused=annotations.get(ANN_LIVE_REFUSED, "")[:500],
        identity=_identity(annotations.get(ANN_RUNNER_IDENTITY), problems),
        problems=tuple(problems),
    )


def _identity(raw: str | None, problems: list[str]) -> RunnerIdentity | None:
    if not raw:
        return None
    try:
        return RunnerIdentity.model_validate_json(raw)
    except ValidationError as exc:
        problems.append(f"annotation {ANN_RUNNER_IDENTITY}: {_first_error(exc)}")
        return None


#: How much earlier than its container a runner may say it started (clock granularity between the kubelet
#: and the runner: both are whole seconds).
START_SLACK = dt.timedelta(seconds=2)


def pod_contradiction(observed: RunnerObservation, pod: dict[str, Any] | None, pod_name: str) -> str:
    """Why a Lease that a runner pod renews contradicts the pod itself ("" when it does not).

    Called for bots with placement ``cluster`` only, and only for a Lease that was renewed: the pod must
    exist and be Running, be the pod the Lease names, and its runner container must have started before
    the runner process says it started and before the Lease was renewed. A Lease renewed by anyone else
    (someone who may update Leases in the bots' namespace) says what the operator can see is not so.
    """
    if observed.renew_time is None:
        return ""
    if pod is None:
        return f"the Lease was renewed but the runner pod {pod_name} does not exist"
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    if phase != "Running":
        return f"the Lease was renewed but the runner pod {pod_name} is {phase}, not Running"
    identity = observed.identity
    if identity is None or not identity.pod_uid:
        return f"the Lease does not say which pod renews it, although the runner runs in pod {pod_name}"
    if identity.pod_uid != meta.get("uid"):
        return f"the Lease was renewed by pod uid {identity.pod_uid[:36]}, not by the runner pod {pod_name}"
    started = None
    for container in status.get("containerStatuses") or []:
        if container.get("name") == "runner":
            started = parse_time(((container.get("state") or {}).get("running") or {}).get("startedAt"))
    if started is None:
        return f"the Lease was renewed but the runner container of pod {pod_name} is not running"
    if observed.renew_time + START_SLACK < started:
        return (f"the Lease was renewed at {observed.renew_time.isoformat()}, before the runner container of pod "
                f"{pod_name} started ({started.isoformat()})")
    if identity.started_at is not None and identity.started_at + START_SLACK < started:
        return (f"the Lease says its runner started at {identity.started_at.isoformat()}, before the runner "
                f"container of pod {pod_name} started ({started.isoformat()})")
    return ""


def not_believed(observed: RunnerObservation, why: str) -> RunnerObservation:
    """``observed`` with nothing believed: no acknowledgements, no telemetry, no fresh heartbeat."""
    return RunnerObservation(lease_exists=observed.lease_exists, renew_time=observed.renew_time,
                             identity=observed.identity, contradiction=why, problems=observed.problems)


# ----------------------------------------------------------------------------------------- why the pod cannot run

#: How long a runner StatefulSet may be without its pod, after the StatefulSet was created or changed or its
#: last pod went away, before that is reported: the StatefulSet controller creates a pod within seconds.
NO_POD_GRACE = dt.timedelta(seconds=30)
#: The longest part of a kubelet's, the scheduler's or the StatefulSet controller's message that is quoted.
MAX_QUOTED = 300
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

#: ``RunnerHealthy`` reasons taken from the runner pod or its StatefulSet (:func:`pod_problem`).
IMAGE_PULL_FAILED = "ImagePullFailed"
CONTAINER_START_FAILED = "ContainerStartFailed"
RUNNER_CRASHED = "RunnerCrashed"
UNSCHEDULABLE = "Unschedulable"
NO_RUNNER_POD = "NoRunnerPod"
POD_REASONS = frozenset({IMAGE_PULL_FAILED, CONTAINER_START_FAILED, RUNNER_CRASHED, UNSCHEDULABLE, NO_RUNNER_POD})

#: The kubelet alternates between these two while it backs off: one wording for both keeps the status still.
_PULL_BACKOFF = frozenset({"ErrImagePull", "ImagePullBackOff"})
_PULL_OTHER = frozenset({"ImageInspectError", "SignatureValidationFailed", "RegistryUnavailable"})
_START_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError",
                            "PreStartHookError", "PostStartHookError"})
#: A run of 24 or more token characters with a letter and a digit in it: perhaps a key or a token (a quoted
#: message may carry one), or a container id or digest (harmless, but not worth the risk).
_TOKEN_LIKE = re.compile(r"(?=[A-Za-z0-9+_]*[0-9])(?=[A-Za-z0-9+_]*[A-Za-z])[A-Za-z0-9+_]{24,}")


@dataclass(frozen=True)
class RunnerWorkload:
    """What :func:`pod_problem` needs of a bot's runner StatefulSet (:func:`workload_facts`)."""

    namespace: str
    statefulset: str
    pod: str
    #: The runner image of its pod template ("" when it has none).
    image: str = ""
    #: ``metadata.creationTimestamp``.
    created: dt.datetime | None = None
    #: When the operator first saw the StatefulSet's current generation together with its current pod (or
    #: the absence of one): the API server records neither moment, so the operator remembers it.
    changed: dt.datetime | None = None
    #: The message of the newest ``FailedCreate`` Event of this StatefulSet ("" when there is none).
    failed_create: str = ""

    @property
    def settled_at(self) -> dt.datetime | None:
        """When a missing pod starts to count: the grace runs from the later of creation and change."""
        times = [t for t in (self.created, self.changed) if t is not None]
        return max(times) if times else None


def workload_facts(sts: Mapping[str, Any], pod: str, changed: dt.datetime | None,
                   events: Iterable[Mapping[str, Any]] = ()) -> RunnerWorkload:
    """The facts of the StatefulSet ``sts`` (from the watch cache) for :func:`pod_problem`; ``events`` are its
    cached ``FailedCreate`` Events (:func:`tradewarden.controller.cache.slim_event`), of any incarnation."""
    meta, spec = sts.get("metadata") or {}, sts.get("spec") or {}
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    image = next((str(c.get("image") or "") for c in containers if c.get("name") == "runner"), "")
    uid = meta.get("uid")
    newest = max((e for e in events if (e.get("involvedObject") or {}).get("uid") == uid),
                 key=lambda e: parse_time(e.get("time")) or _EPOCH, default=None)
    return RunnerWorkload(namespace=str(meta.get("namespace") or ""), statefulset=str(meta.get("name") or ""),
                          pod=pod, image=image, created=parse_time(meta.get("creationTimestamp")), changed=changed,
                          failed_create=str((newest or {}).get("message") or ""))


def with_pod(observed: RunnerObservation, pod: Mapping[str, Any] | None, workload: RunnerWorkload | None,
             now: dt.datetime) -> RunnerObservation:
    """``observed`` with what the runner pod and its StatefulSet say (placement cluster only)."""
    recheck = None
    if pod is None and workload is not None and (settled := workload.settled_at) is not None \
            and now <= settled + NO_POD_GRACE:
        recheck = settled + NO_POD_GRACE
    return dataclasses.replace(observed, pod_problem=pod_problem(pod, workload, now), pod_recheck_at=recheck)


def pod_problem(pod: Mapping[str, Any] | None, workload: RunnerWorkload | None,
                now: dt.datetime) -> PodProblem | None:
    """Why the runner pod cannot run, from the pod itself (:func:`tradewarden.controller.cache.slim_pod`) and
    its StatefulSet; None when nothing says so (running, starting, or no StatefulSet yet).

    In this order: a pod on its way out says nothing (its successor is judged); the scheduler's Unschedulable;
    each container's own reason, init containers first, then the runner: an image that cannot be pulled, a
    container that cannot be created or started, a crash (CrashLoopBackOff, or terminated with a non-zero
    exit code); and, without a pod, a StatefulSet that has had none for longer than :data:`NO_POD_GRACE`.
    Messages quote the kubelet's and the scheduler's words bounded and without anything token-like.
    """
    if pod is None:
        return _no_pod(workload, now)
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if meta.get("deletionTimestamp"):
        return None
    namespace = str(meta.get("namespace") or (workload.namespace if workload else ""))
    name = str(meta.get("name") or (workload.pod if workload else ""))
    describe = f"`kubectl describe pod -n {namespace} {name}`"
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and \
                cond.get("reason") == "Unschedulable":
            return PodProblem(UNSCHEDULABLE, (
                f"the runner pod {name} cannot be scheduled: {quoted(cond.get('message'))}; when that names "
                f"Insufficient cpu or memory, spec.runner.resources requests more than any node has free: lower "
                f"them (or add capacity); {describe}"))
    init = list(status.get("initContainerStatuses") or [])
    containers = sorted(status.get("containerStatuses") or [], key=lambda c: c.get("name") != "runner")
    for container in (*init, *containers):
        found = _container_problem(container, namespace, name, workload.image if workload else "", describe)
        if found is not None:
            return found
    return None


def quoted(text: Any, limit: int = MAX_QUOTED) -> str:
    """Someone else's message (a kubelet's, the scheduler's) for a condition: on one line, anything that
    may be a secret left out, bounded."""
    words = " ".join(str(text or "").split())[:4 * limit]
    return bound_message(_TOKEN_LIKE.sub("(not shown)", words), limit) or "(no message)"


def _container_problem(container: Mapping[str, Any], namespace: str, pod: str, template_image: str,
                       describe: str) -> PodProblem | None:
    name = str(container.get("name") or "")
    state = container.get("state") or {}
    waiting, terminated = state.get("waiting") or {}, state.get("terminated") or {}
    why = str(waiting.get("reason") or "")
    image = str(container.get("image") or (template_image if name == "runner" else "")) or "(unknown)"
    who = f"container {name} of the runner pod {pod}"
    if why in _PULL_BACKOFF or why in _PULL_OTHER:
        said = "ErrImagePull/ImagePullBackOff" if why in _PULL_BACKOFF else why
        return PodProblem(IMAGE_PULL_FAILED, (
            f"{who} cannot pull its image {image} ({said}): check spec.runner.image (the repository and tag "
            f"exist, the node may pull from that registry), or load the image onto the node; {describe}"))
    if why == "ErrImageNeverPull":
        return PodProblem(IMAGE_PULL_FAILED, (
            f"{who}: its image {image} is not on the node and its pull policy is Never (ErrImageNeverPull): load "
            f"the image onto the node, or check spec.runner.image"))
    if why == "InvalidImageName":
        return PodProblem(IMAGE_PULL_FAILED, (
            f"{who}: {image} is not a valid image reference (InvalidImageName): fix spec.runner.image"))
    if why in _START_REASONS:
        return PodProblem(CONTAINER_START_FAILED, (
            f"{who} cannot be started ({why}): {quoted(waiting.get('message'))}; {describe}"))
    crashed = why == "CrashLoopBackOff"
    if not crashed and not (terminated and terminated.get("exitCode") not in (0, None)):
        return None
    last = terminated or ((container.get("lastState") or {}).get("terminated") or {})
    code = last.get("exitCode")
    exited = f"exited with code {code}" if isinstance(code, int) else "exited"
    if last.get("reason"):
        exited += f" ({quoted(last.get('reason'), 40)})"
    restarts = container.get("restartCount")
    tail = f", restarted {restarts} times" if isinstance(restarts, int) and restarts else ""
    memory = ("; it ran out of memory: raise spec.runner.resources.limits.memory"
              if last.get("reason") == "OOMKilled" else "")
    logs = f"`kubectl logs -n {namespace} {pod} -c {name}{' --previous' if crashed else ''}`"
    return PodProblem(RUNNER_CRASHED, (
        f"{who} {exited}{tail}{' (CrashLoopBackOff)' if crashed else ''}{memory}; its log says why: {logs}"))


def _no_pod(workload: RunnerWorkload | None, now: dt.datetime) -> PodProblem | None:
    if workload is None:
        return None
    settled = workload.settled_at
    if settled is None or now - settled <= NO_POD_GRACE:
        return None
    seconds = int(NO_POD_GRACE.total_seconds())
    message = (f"StatefulSet {workload.statefulset} has had no pod {workload.pod} for more than {seconds} s: the "
               f"API server refuses it or the StatefulSet controller cannot create it (PodSecurity, a ResourceQuota "
               f"or LimitRange, an admission webhook); its Events say which: "
               f"`kubectl describe statefulset -n {workload.namespace} {workload.statefulset}`")
    if workload.failed_create:
        message += f"; the latest FailedCreate: {quoted(workload.failed_create, 2 * MAX_QUOTED)}"
    return PodProblem(NO_RUNNER_POD, message)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(document)"
    return f"{loc}: {err['msg']}"
