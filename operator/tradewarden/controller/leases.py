"""Reading the runner's Lease: the only channel through which a runner reports (DESIGN.md, data flow).

Pure functions, no I/O. Called by the reconcilers in :mod:`tradewarden.controller.handlers` with the
Lease from the watch cache, and by the policies in :mod:`~tradewarden.controller.status` and
:mod:`~tradewarden.controller.switches` through the :class:`RunnerObservation` they get.

The runner is another process, possibly an older or newer version, possibly broken: nothing it writes is
trusted to parse. A malformed annotation is recorded in ``problems`` and otherwise ignored, so a bad
runner can make its own bot look unhealthy but can never crash the operator.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

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


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(document)"
    return f"{loc}: {err['msg']}"
