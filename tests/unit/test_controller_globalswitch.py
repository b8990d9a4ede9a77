"""Unit tests of --ensure-killswitch (controller/globalswitch.py) with a fake API client: create only when
missing, never a write to an existing switch, retries and their limits, and what a human is told.

The same logic against the real API server, and the operator process with the flag:
tests/integration/test_global_killswitch.py.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
import pytest

from tradewarden.controller import kube as k
from tradewarden.controller.globalswitch import (
    ANN_CREATED_BY,
    GRACE_SECONDS,
    MAX_DELAY_SECONDS,
    build_killswitch,
    create_by_hand,
    ensure_killswitch,
    ensure_killswitch_until_done,
)


class FakeKube:
    """Records every call; ``get_results`` and ``create_results`` are consumed in order (an exception
    is raised, a manifest or None returned)."""

    def __init__(self, get_results: list[Any], create_results: list[Any] | None = None) -> None:
        self.get_results = list(get_results)
        self.create_results = list(create_results or [])
        self.calls: list[tuple[str, Any]] = []
        self.events: list[tuple[str, str, str, str]] = []

    def _next(self, results: list[Any]) -> Any:
        result = results.pop(0) if len(results) > 1 else results[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def get(self, ref: k.ResourceRef, namespace: str | None, name: str) -> k.Manifest | None:
        assert (ref, namespace) == (k.KILLSWITCHES, None)
        self.calls.append(("get", name))
        result: k.Manifest | None = self._next(self.get_results)
        return result

    def create(self, manifest: k.Manifest) -> k.Manifest:
        self.calls.append(("create", manifest))
        result = self._next(self.create_results)
        made: k.Manifest = manifest if result is None else result
        return made

    def post_event(self, involved: k.Manifest, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, involved["metadata"]["name"], message))

    def __getattr__(self, verb: str) -> Any:  # apply, merge_patch, delete, ...: never
        raise AssertionError(f"ensure_killswitch called Kube.{verb}: it may only get and create")


def engaged(name: str = "global") -> k.Manifest:
    return {"apiVersion": "tradewarden.io/v1alpha1", "kind": "KillSwitch",
            "metadata": {"name": name, "uid": "u-1", "resourceVersion": "7"},
            "spec": {"mode": "halt_all", "reason": "PAGE-42 venue outage"}}


def conflict() -> k.AlreadyExists:
    return k.AlreadyExists("POST", "KillSwitch global", 409, "AlreadyExists", 'killswitches "global" already exists')


def error(status: int, reason: str) -> k.KubeError:
    cls = k.NotFound if status == 404 else k.KubeError
    return cls("POST", "KillSwitch global", status, reason, "refused")


class Clock:
    """A fake monotonic clock that the fake sleep advances."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def run(kube: FakeKube, clock: Clock | None = None, name: str = "global") -> Any:
    clock = clock or Clock()
    return asyncio.run(ensure_killswitch_until_done(kube, name, "installed off", sleep=clock.sleep,  # type: ignore[arg-type]
                                                    clock=clock))


# ------------------------------------------------------------------------------------------ the manifest


def test_the_switch_is_created_off_selecting_everything_and_says_who_made_it() -> None:
    ks = build_killswitch("global", "installed off")
    assert ks["spec"] == {"mode": "off", "reason": "installed off"}, "no selector: every bot; no trigger"
    assert ks["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "tradewarden",
                                        "app.kubernetes.io/component": "killswitch"}
    assert "--ensure-killswitch" in ks["metadata"]["annotations"][ANN_CREATED_BY]
    # Neither Helm's nor Argo CD's: no release owns it, no Application may prune it.
    meta = str(ks["metadata"])
    assert "app.kubernetes.io/instance" not in meta
    assert "helm.sh" not in meta
    assert "argocd" not in meta
    assert build_killswitch("global", "")["spec"] == {"mode": "off"}
    assert "kubectl create -f -" in create_by_hand("global")
    assert '"name":"global"' in create_by_hand("global")


# ------------------------------------------------------------------------------------------ one attempt


def test_missing_switch_is_created() -> None:
    kube = FakeKube([None], [None])
    found = ensure_killswitch(kube, "global", "installed off")  # type: ignore[arg-type]
    assert (found.created, found.mode, found.reason) == (True, "off", "installed off")
    assert [c[0] for c in kube.calls] == ["get", "create"]
    assert kube.calls[1][1] == build_killswitch("global", "installed off")


def test_an_existing_engaged_switch_gets_no_write_at_all() -> None:
    kube = FakeKube([engaged()])
    found = ensure_killswitch(kube, "global", "installed off")  # type: ignore[arg-type]
    assert (found.created, found.mode, found.reason) == (False, "halt_all", "PAGE-42 venue outage")
    assert kube.calls == [("get", "global")]


def test_losing_the_create_race_is_success_and_the_winner_stands() -> None:
    kube = FakeKube([None, engaged()], [conflict()])
    found = ensure_killswitch(kube, "global", "installed off")  # type: ignore[arg-type]
    assert (found.created, found.mode) == (False, "halt_all")
    assert [c[0] for c in kube.calls] == ["get", "create", "get"]


# ------------------------------------------------------------------------------------------ retries


def test_created_switch_is_announced_with_an_event() -> None:
    kube = FakeKube([None], [{**build_killswitch("global", "installed off"), "metadata": {"name": "global",
                                                                                          "uid": "u-9"}}])
    found = run(kube)
    assert found.created
    assert [(t, r, n) for t, r, n, _ in kube.events] == [("Normal", "KillSwitchCreated", "global")]


def test_an_existing_switch_is_not_announced() -> None:
    kube = FakeKube([engaged()])
    assert run(kube).mode == "halt_all"
    assert kube.events == []


def test_crd_not_served_yet_is_retried_quietly_then_created(caplog: pytest.LogCaptureFixture) -> None:
    # A one-step install: the operator may start while the KillSwitch CRD is being established.
    kube = FakeKube([None], [error(404, "NotFound"), kopf.TemporaryError("busy", delay=5), None])
    clock = Clock()
    with caplog.at_level(logging.INFO, logger="tradewarden.controller.globalswitch"):
        found = run(kube, clock)
    assert found.created
    assert clock.sleeps == [1.0, 2.0]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "within the grace: no alarm"
    assert [r for _, r, _, _ in kube.events] == ["KillSwitchCreated"]


def test_a_switch_that_stays_missing_is_loud_and_retried_with_capped_backoff(
        caplog: pytest.LogCaptureFixture) -> None:
    attempts = 12
    kube = FakeKube([None], [error(404, "NotFound")] * attempts + [None])
    clock = Clock()
    with caplog.at_level(logging.INFO, logger="tradewarden.controller.globalswitch"):
        found = run(kube, clock)
    assert found.created, "the operator keeps trying for as long as it runs"
    assert max(clock.sleeps) == MAX_DELAY_SECONDS
    assert clock.sleeps[:4] == [1.0, 2.0, 4.0, 8.0]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    quiet = sum(1 for s in range(attempts) if sum(clock.sleeps[:s]) < GRACE_SECONDS)
    assert len(errors) == attempts - quiet >= 1
    assert all("global" in m and "kubectl create -f -" in m and "CRD" in m for m in errors), errors
    warnings = [e for e in kube.events if e[1] == "KillSwitchMissing"]
    assert len(warnings) == 1, "one Warning Event, not one per attempt"
    assert warnings[0][0] == "Warning"
    assert warnings[0][2] == "global"
    assert "kubectl create" in warnings[0][3]


def test_forbidden_is_an_error_at_once_names_the_missing_permission_and_is_retried(
        caplog: pytest.LogCaptureFixture) -> None:
    kube = FakeKube([None], [error(403, "Forbidden"), error(403, "Forbidden"), None])
    with caplog.at_level(logging.INFO, logger="tradewarden.controller.globalswitch"):
        assert run(kube).created
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert "create on killswitches.tradewarden.io" in errors[0]
    assert "retrying" in errors[0]
    assert [r for _, r, _, _ in kube.events] == ["KillSwitchMissing", "KillSwitchCreated"]


def test_an_invalid_switch_is_reported_once_and_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    kube = FakeKube([None], [error(422, "Invalid")])
    clock = Clock()
    with caplog.at_level(logging.INFO, logger="tradewarden.controller.globalswitch"):
        assert run(kube, clock, name="Not_A_Name") is None
    assert clock.sleeps == []
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert [r for _, r, _, _ in kube.events] == ["KillSwitchMissing"]


def test_nothing_stops_the_operator_not_even_an_unexpected_error() -> None:
    class Broken(FakeKube):
        def post_event(self, involved: k.Manifest, type_: str, reason: str, message: str) -> None:
            raise RuntimeError("events broken too")

    kube = Broken([RuntimeError("surprise"), None], [None])
    assert run(kube).created
