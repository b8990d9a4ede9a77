"""Start the operator: kopf, the reconcilers, and the /healthz and /metrics endpoint.

Called by ``tradewarden operator`` (:mod:`tradewarden.cli`) through :func:`run_operator`.

One replica, standalone (kopf's peering is off). Why:

* Peering would make kopf write to a KopfPeering object every minute, and the operator must write
  nothing when nothing changes.
* The work the operator does is idempotent and level-triggered, and the runners brake by themselves
  (they watch the KillSwitches directly), so an operator that is down for the seconds a Deployment
  needs to replace its pod loses nothing: the next one re-lists everything and converges.
* Two active replicas would race on every status; leader election is what peering would buy, and a
  single replica under a Deployment with ``strategy: Recreate`` gives the same guarantee for free.

kopf is configured to write nothing to the objects it watches on its own: only ``@kopf.on.event``
handlers and indices are registered (no diff-base annotation, no progress storage, no finalizers; kopf
adds a finalizer for any timer or daemon, which is why the periodic re-check is our own task and not a
``@kopf.timer``), handlers return None (kopf would store a result in status), and kopf's posting of
log messages as Kubernetes Events is off. The operator's own Events are posted explicitly, one per
transition, by :mod:`tradewarden.controller.kube`.

Scope: cluster-wide, or the namespaces (kopf globs, ``!`` to exclude) given with ``--namespace``. A
namespaced operator still sees every KillSwitch (they are cluster-scoped) and folds them into its bots,
but writes a switch's status only when the switch's selector names namespaces it watches, and keeps the
subjects of other namespaces in the shared ClusterRoleBinding: two namespaced operators never take
turns rewriting one cluster-scoped object.

The promotion gate's external reviewers come from ``--reviewers FILE`` (see
:mod:`tradewarden.controller.reviewers`); the file is read once at start, and a file that does not parse
stops the operator before it reconciles anything (exit code 2), rather than running with fewer reviewers
than intended. Without the flag, only the built-in reviewers vote.

With ``--ensure-killswitch NAME`` (the chart passes it for its ``global`` switch), the operator creates
that cluster-scoped KillSwitch with mode off when it is missing, in a background task that retries until
it succeeds and never stops the operator; an existing switch is never changed (see
:mod:`tradewarden.controller.globalswitch`).

Environment: ``TRADEWARDEN_RUNNER_IMAGE`` (default runner image when ``--runner-image`` is not given),
``TRADEWARDEN_MANAGE_RUNNER_CLUSTERROLE=false`` (the chart installs the shared ClusterRole; the operator
then leaves it to Helm), ``TRADEWARDEN_INSTANCE`` (appended to the user agent, to tell instances apart
in an audit log), ``TRADEWARDEN_METRICS_HOST`` (bind address of /healthz and /metrics).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

import kopf
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)

from tradewarden import __version__
from tradewarden.api.runtime import GATE_KEY_CONFIGMAP
from tradewarden.consensus import builtin_reviewers
from tradewarden.controller.builders import OperatorDefaults
from tradewarden.controller.cache import Cache
from tradewarden.controller.globalswitch import DEFAULT_REASON, Ensured, ensure_killswitch_until_done
from tradewarden.controller.handlers import Controller, Scope, register
from tradewarden.controller.keys import GateKeyError, ensure_signer
from tradewarden.controller.kube import Kube
from tradewarden.controller.metrics import Metrics
from tradewarden.controller.reviewers import ReviewerConfig, ReviewersFileError, load_reviewers
from tradewarden.logs import setup_logging

logger = logging.getLogger("tradewarden.operator")

#: Every bot, config and switch is re-checked this often even without events (heartbeats going stale
#: are re-checked at the exact moment by the work queue; this is the safety net under everything).
RESYNC_SECONDS = 60.0

DEFAULT_RUNNER_IMAGE = f"ghcr.io/tradewarden/runner:{__version__}"


def ledger_namespace_of(args: argparse.Namespace) -> str:
    """The operator's own namespace: ``--ledger-namespace``, ``$TRADEWARDEN_LEDGER_NAMESPACE``,
    ``$POD_NAMESPACE`` (the chart sets it from the downward API), or ``tradewarden-system``."""
    return str(getattr(args, "ledger_namespace", None) or os.environ.get("TRADEWARDEN_LEDGER_NAMESPACE")
               or os.environ.get("POD_NAMESPACE") or "tradewarden-system")


def build_settings(verbose: bool = False) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # Nothing of kopf's own reaches the API server as an Event; ours are posted explicitly.
    settings.posting.enabled = False
    settings.posting.loggers = False
    settings.peering.standalone = True
    # The handlers are async and do their blocking I/O in asyncio's default thread pool.
    settings.execution.max_workers = 4
    # kopf's per-handler "succeeded" lines would log every Lease renewal: keep them for --verbose.
    if not verbose:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    return settings


def configure_logging(verbose: bool, fmt: str = "text") -> None:
    level = logging.DEBUG if verbose else logging.INFO
    if fmt == "json":
        setup_logging({"component": "operator"}, level)
    else:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    # The official client and aiohttp are chatty at DEBUG and say nothing useful at INFO.
    for noisy in ("urllib3", "kubernetes", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def serve_http(port: int, metrics: Metrics, ready: asyncio.Event, ctl: Controller) -> web.AppRunner:
    """``/healthz`` (200 once kopf has started) and ``/metrics`` (Prometheus text format)."""

    async def healthz(_request: web.Request) -> web.Response:
        if not ready.is_set():
            return web.Response(status=503, text="starting\n")
        return web.Response(text="ok\n" if ctl.indexed.is_set() else "ok (waiting for the first object)\n")

    async def metrics_endpoint(_request: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_endpoint)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    # All interfaces: in a pod the kubelet probes and Prometheus scrapes from outside the container.
    site = web.TCPSite(runner, host=os.environ.get("TRADEWARDEN_METRICS_HOST", "0.0.0.0"), port=port)  # noqa: S104
    await site.start()
    logger.info("serving /healthz and /metrics on port %d", port)
    return runner


async def operate(args: argparse.Namespace, reviewers: list[ReviewerConfig] | None = None) -> None:
    namespaces: list[str] = list(getattr(args, "namespace", None) or [])
    cache = Cache()
    registry = CollectorRegistry()
    process_collector.ProcessCollector(registry=registry)
    platform_collector.PlatformCollector(registry=registry)
    gc_collector.GCCollector(registry=registry)
    metrics = Metrics(registry, cache)
    kube = Kube.from_environment(on_write=metrics.count_write)
    image = getattr(args, "runner_image", None) or os.environ.get("TRADEWARDEN_RUNNER_IMAGE") or DEFAULT_RUNNER_IMAGE
    manage_role = os.environ.get("TRADEWARDEN_MANAGE_RUNNER_CLUSTERROLE", "true").lower() not in ("0", "false", "no")
    ledger_namespace = ledger_namespace_of(args)
    try:
        signer = await asyncio.to_thread(ensure_signer, kube, ledger_namespace)
    except GateKeyError as exc:
        logger.error("%s", exc)
        raise SystemExit(2) from None
    if namespaces and not Scope(tuple(namespaces)).covers(ledger_namespace):
        namespaces.append(ledger_namespace)  # the ledger must be in the watch cache
    voters = frozenset([r.name for r in builtin_reviewers()] + [r.name for r in reviewers or []])
    ctl = Controller(kube, OperatorDefaults(runner_image=image, manage_runner_cluster_role=manage_role,
                                            gate_key_ref=f"{ledger_namespace}/{GATE_KEY_CONFIGMAP}",
                                            reviewer_names=voters,
                                            allowed_runner_images=tuple(getattr(args, "allowed_runner_image", [])),
                                            allowed_api_urls=tuple(getattr(args, "allowed_api_url", []))), metrics,
                     cache=cache, scope=Scope(tuple(namespaces)), reviewers=reviewers or [], signer=signer)
    settings = build_settings(bool(getattr(args, "verbose", False)))
    kopf_registry = kopf.OperatorRegistry()
    register(kopf_registry, settings, ctl)

    ready = asyncio.Event()
    http: web.AppRunner | None = None
    port = int(getattr(args, "metrics_port", 0) or 0)
    if port:
        http = await serve_http(port, metrics, ready, ctl)
    resync = asyncio.create_task(ctl.resync_forever(RESYNC_SECONDS), name="tradewarden resync")
    brake: asyncio.Task[Ensured | None] | None = None
    brake_name = getattr(args, "ensure_killswitch", None)
    if brake_name:  # the cluster-wide brake: created when missing, never changed (globalswitch.py)
        reason = getattr(args, "ensure_killswitch_reason", None)
        brake = asyncio.create_task(
            ensure_killswitch_until_done(kube, brake_name, DEFAULT_REASON if reason is None else reason),
            name="tradewarden ensure killswitch")
    logger.info("tradewarden operator %s starting (%s, runner image %s, %d external reviewer(s))", __version__,
                f"namespaces {', '.join(namespaces)}" if namespaces else "cluster-wide", image, len(reviewers or []))
    try:
        await kopf.operator(
            registry=kopf_registry,
            settings=settings,
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            ready_flag=ready,
        )
    finally:
        resync.cancel()
        if brake is not None:
            brake.cancel()
        if http is not None:
            await http.cleanup()
        logger.info("tradewarden operator stopped")


def run_operator(args: argparse.Namespace) -> int:
    """Run until SIGINT or SIGTERM (kopf installs the signal handlers); return the exit code."""
    configure_logging(bool(getattr(args, "verbose", False)), getattr(args, "log_format", "text"))
    reviewers: list[ReviewerConfig] = []
    path = getattr(args, "reviewers", None)
    if path:
        try:
            reviewers = load_reviewers(path)
        except ReviewersFileError as exc:
            logger.error("%s", exc)
            return 2
    asyncio.run(operate(args, reviewers))
    return 0
