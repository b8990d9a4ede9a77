"""The cluster-wide brake: the operator makes sure a KillSwitch exists, and never touches it again.

Called at start by :mod:`tradewarden.controller.main` when the operator runs with ``--ensure-killswitch
NAME`` (the chart passes it while ``globalKillSwitch.create`` is true, the default). Why the operator and
not the chart: a release that creates the CRDs cannot also create a KillSwitch (Helm maps every object
before it creates any, and the kind does not exist yet), and a Helm hook is no answer either, since Argo CD
re-applies a post-install hook on every sync, which would release an engaged brake.

The rules, each one a safety property:

* **Create only.** When the switch is missing it is created with ``mode: off`` and the given reason; a
  switch that exists is left exactly as it is, whatever its mode, reason, labels or owner (a create that
  loses a race, ``AlreadyExists``, is success). Nothing here updates, patches or deletes a KillSwitch, so a
  restart, a ``helm upgrade`` or an Argo CD sync can never release a brake that on-call engaged.
* **Nobody's release.** The switch carries the operator's labels (``app.kubernetes.io/managed-by:
  tradewarden``), never Helm's or Argo CD's tracking labels: ``helm uninstall`` does not delete it and Argo
  CD does not see it as part of an Application (which could prune it).
* **Loud, never fatal.** A switch that cannot be created is retried, with backoff, for as long as the
  operator runs; each failure past a short grace (the CRD may still be getting established during a
  one-step install) is logged at ERROR with the command that creates it by hand, and the first one is also
  a Warning Event ``KillSwitchMissing`` (in namespace ``default``, where the Events of cluster-scoped
  objects go). The operator keeps reconciling meanwhile: the runners brake on any other switch as before.
  A switch it did create gets a Normal Event ``KillSwitchCreated`` (``kubectl describe ks NAME``).
* **At start only.** A switch deleted while the operator runs stays deleted until the next start (on
  purpose: deleting it is a human's decision). Without the flag the operator never creates one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import kopf

from tradewarden import __version__
from tradewarden.api.runtime import LABEL_MANAGED_BY, MANAGED_BY
from tradewarden.controller import kube as k

logger = logging.getLogger(__name__)

LABEL_COMPONENT = "app.kubernetes.io/component"
COMPONENT_KILLSWITCH = "killswitch"
#: Who made the switch and what the operator will (not) do with it, for the human reading it.
ANN_CREATED_BY = "tradewarden.io/created-by"
ANN_DESCRIPTION = "tradewarden.io/description"
DESCRIPTION = ("Created because it was missing, by the tradewarden operator started with --ensure-killswitch. "
               "The operator never changes or deletes it: engage it by patching spec.mode, release it by setting "
               "spec.mode to off.")
DEFAULT_REASON = "Created by the tradewarden operator (--ensure-killswitch); engage by patching spec.mode."

#: Not-served-yet (the CRD is being established) and API-server trouble are not worth an alarm at once.
GRACE_SECONDS = 30.0
FIRST_DELAY_SECONDS = 1.0
MAX_DELAY_SECONDS = 60.0


@dataclass(frozen=True)
class Ensured:
    """What :func:`ensure_killswitch` found: ``created`` true when this call made the switch."""

    name: str
    created: bool
    mode: str
    reason: str
    #: The switch as the API server returned it (empty when it could not be read back).
    live: k.Manifest = field(default_factory=dict, repr=False, compare=False)


def build_killswitch(name: str, reason: str) -> k.Manifest:
    """The switch as created: mode off, no selector (every bot), no trigger."""
    spec: k.Manifest = {"mode": "off"}
    if reason:
        spec["reason"] = reason
    return {
        "apiVersion": k.KILLSWITCHES.api_version,
        "kind": k.KILLSWITCHES.kind,
        "metadata": {
            "name": name,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_COMPONENT: COMPONENT_KILLSWITCH},
            "annotations": {ANN_CREATED_BY: f"tradewarden-operator/{__version__} --ensure-killswitch",
                            ANN_DESCRIPTION: DESCRIPTION},
        },
        "spec": spec,
    }


def create_by_hand(name: str) -> str:
    """The shell command that creates the switch the way the operator would (``create``: never overwrites)."""
    doc = {"apiVersion": k.KILLSWITCHES.api_version, "kind": k.KILLSWITCHES.kind, "metadata": {"name": name},
           "spec": {"mode": "off"}}
    return f"echo '{json.dumps(doc, separators=(',', ':'))}' | kubectl create -f -"


def _found(name: str, live: k.Manifest, created: bool) -> Ensured:
    spec = live.get("spec") or {}
    return Ensured(name, created, str(spec.get("mode", "off")), str(spec.get("reason", "")), live)


def ensure_killswitch(kube: k.Kube, name: str, reason: str = DEFAULT_REASON) -> Ensured:
    """Create the cluster-scoped KillSwitch ``name`` (mode off) unless it exists; never modify one.

    Blocking. A GET first, so that a restart writes nothing when the switch is there. Raises
    :class:`~tradewarden.controller.kube.KubeError` (``NotFound`` when the KillSwitch kind is not served)
    or ``kopf.TemporaryError`` (API server busy or unreachable) when the switch is missing and could not
    be created.
    """
    live = kube.get(k.KILLSWITCHES, None, name)
    if live is not None:
        return _found(name, live, created=False)
    try:
        made = kube.create(build_killswitch(name, reason))
    except k.AlreadyExists:  # someone (another operator, a human) was first: theirs stands, untouched
        live = kube.get(k.KILLSWITCHES, None, name)
        return _found(name, live or {}, created=False)
    return _found(name, made, created=True)


def _retryable(exc: BaseException) -> bool:
    """Worth another attempt: the kind not served yet, the API server busy, or RBAC (which can be fixed
    without restarting the operator). An invalid name or reason (400, 422) will not fix itself."""
    if isinstance(exc, kopf.TemporaryError | k.NotFound):
        return True
    if isinstance(exc, k.KubeError):
        return exc.status in (401, 403)
    return True  # unexpected: keep trying, loudly


def _explain(name: str, exc: BaseException) -> str:
    hint = ""
    if isinstance(exc, k.NotFound):
        hint = " (the KillSwitch CRD is not installed or not established yet)"
    elif isinstance(exc, k.KubeError) and exc.status in (401, 403):
        hint = " (the operator's ServiceAccount needs get and create on killswitches.tradewarden.io)"
    return (f"the global KillSwitch {name} could not be read, or created where missing{hint}: {exc}. While it is "
            f"missing nothing brakes every bot at once; create it by hand: {create_by_hand(name)}")


async def _post_event(kube: k.Kube, involved: k.Manifest, type_: str, reason: str, message: str) -> None:
    try:  # post_event logs its own API errors; nothing about an Event may stop the task
        await asyncio.to_thread(kube.post_event, involved, type_, reason, message)
    except Exception:
        logger.exception("could not record the event %s for KillSwitch %s", reason,
                         (involved.get("metadata") or {}).get("name"))


async def ensure_killswitch_until_done(
        kube: k.Kube, name: str, reason: str = DEFAULT_REASON, *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic) -> Ensured | None:
    """:func:`ensure_killswitch`, retried with backoff until it succeeds or fails for good (None).

    Never raises (but for cancellation): the operator runs this as a background task beside kopf.
    """
    started = clock()
    delay = FIRST_DELAY_SECONDS
    warned = False
    while True:
        try:
            found = await asyncio.to_thread(ensure_killswitch, kube, name, reason)
        except Exception as exc:  # whatever it is, the operator keeps running and says so
            retry = _retryable(exc)
            if isinstance(exc, kopf.TemporaryError | k.NotFound) and clock() - started < GRACE_SECONDS:
                logger.info("KillSwitch %s not ensured yet, retrying in %.0f s: %s", name, delay, exc)
            else:
                logger.error("%s%s", _explain(name, exc), f" (retrying in {delay:.0f} s)" if retry else "")
                if not warned:
                    warned = True
                    await _post_event(kube, {"apiVersion": k.KILLSWITCHES.api_version, "kind": k.KILLSWITCHES.kind,
                                             "metadata": {"name": name}},
                                      "Warning", "KillSwitchMissing", _explain(name, exc))
            if not retry:
                return None
            await sleep(delay)
            delay = min(delay * 2, MAX_DELAY_SECONDS)
            continue
        if found.created:
            logger.info("created the global KillSwitch %s with mode off (it was missing); the operator never "
                        "changes or deletes it", name)
            if found.live:
                await _post_event(kube, found.live, "Normal", "KillSwitchCreated",
                                  f"Created with mode off by the operator (--ensure-killswitch {name}), because it "
                                  "was missing. The operator never changes or deletes it.")
        else:
            logger.info("the global KillSwitch %s exists (mode %s): left as it is", name, found.mode)
        return found
