"""The operator's Prometheus metrics, served on ``/metrics`` by :mod:`tradewarden.controller.main`.

Counters and the reconcile histogram are updated by the work queues and the API client; the gauges
(bots by phase and mode, kill switches, and per bot: conditions, gate evidence and runner telemetry
copied into the status) are computed at scrape time from the watch cache, so they can never drift from
what the operator sees. Names follow the Prometheus conventions that ``promtool check metrics``
enforces: a ``tradewarden_operator_`` prefix, ``_total`` on counters, base units (``_seconds``) and
ratios rather than percentages (``_ratio``). Every metric is listed in docs/METRICS.md; the chart's
alerts and dashboard (charts/tradewarden/files/) use them, and tests/unit/test_grafana_dashboard.py
fails when either names a metric that does not exist.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tradewarden.api.conditions import ConditionStatus
from tradewarden.api.tradingbot import BotPhase, Placement, TradingMode
from tradewarden.controller.cache import Cache
from tradewarden.controller.status import BOT_CONDITIONS

PREFIX = "tradewarden_operator"
#: The work queues' names (controller.handlers), the ``kind`` label of the reconcile metrics.
RECONCILED_KINDS = ("TradingBot", "StrategyConfig", "KillSwitch", "FleetRBAC")
#: Reasons of tradewarden_operator_integrity_problems_total (docs/SECURITY.md).
INTEGRITY_REASONS = ("StatusTampered", "ForeignWrite", "LivePermissionRefused", "LeaseContradicted")


class Metrics:
    """Every metric of one operator process, in its own registry (tests can make several)."""

    def __init__(self, registry: CollectorRegistry, cache: Cache | None = None) -> None:
        self.registry = registry
        self.reconciles = Counter(
            f"{PREFIX}_reconciles", "Reconciles run, by kind and result (success, retry, error).",
            ["kind", "result"], registry=registry)
        self.reconcile_duration = Histogram(
            f"{PREFIX}_reconcile_duration_seconds", "Time one reconcile took, by kind.", ["kind"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry)
        self.api_writes = Counter(
            f"{PREFIX}_api_writes", "Write requests sent to the API server, by verb and resource.",
            ["verb", "resource"], registry=registry)
        self.integrity = Counter(
            f"{PREFIX}_integrity_problems", "Writes by someone other than the operator or the runner that the "
            "operator found (and reverted or refused), by reason.", ["reason"], registry=registry)
        for reason in INTEGRITY_REASONS:
            self.integrity.labels(reason=reason)
        # Every kind and result starts at 0, so rate() sees the first error after a restart too.
        for kind in RECONCILED_KINDS:
            for result in ("success", "retry", "error"):
                self.reconciles.labels(kind=kind, result=result)
        if cache is not None:
            registry.register(CacheCollector(cache))

    def observe_reconcile(self, kind: str, result: str, seconds: float) -> None:
        self.reconciles.labels(kind=kind, result=result).inc()
        self.reconcile_duration.labels(kind=kind).observe(seconds)

    def count_integrity(self, reason: str) -> None:
        self.integrity.labels(reason=reason).inc()

    def count_write(self, verb: str, resource: str) -> None:
        self.api_writes.labels(verb=verb, resource=resource).inc()


class CacheCollector(Collector):
    """Gauges read from the watch cache at scrape time."""

    def __init__(self, cache: Cache) -> None:
        self._cache = cache

    def collect(self) -> Iterator[Metric]:
        bots = GaugeMetricFamily(f"{PREFIX}_bots", "TradingBots by status phase and effective mode.",
                                 labels=["phase", "mode"])
        tally: Tally[tuple[str, str]] = Tally()
        for body in self._cache.bots():
            status = body.get("status") or {}
            tally[(str(status.get("phase", BotPhase.PENDING.value)),
                   str(status.get("effectiveMode", TradingMode.SIGNALS.value)))] += 1
        # Every combination is exported, zeros included, so a dashboard's series never vanish.
        for phase in BotPhase:
            for trading_mode in TradingMode:
                bots.add_metric([phase.value, trading_mode.value], tally.get((phase.value, trading_mode.value), 0))
        yield bots

        engaged = GaugeMetricFamily(f"{PREFIX}_killswitch_engaged",
                                    "1 when the KillSwitch's mode is not off.", labels=["killswitch", "mode"])
        pending = GaugeMetricFamily(f"{PREFIX}_killswitch_pending_bots",
                                    "Matched bots whose runner has not acknowledged the switch.",
                                    labels=["killswitch"])
        latency = GaugeMetricFamily(f"{PREFIX}_killswitch_max_ack_latency_seconds",
                                    "Slowest runner acknowledgement since the switch was engaged.",
                                    labels=["killswitch"])
        for body in self._cache.killswitches():
            name = str(body.get("metadata", {}).get("name", ""))
            mode = str((body.get("spec") or {}).get("mode", "off"))
            status = body.get("status") or {}
            engaged.add_metric([name, mode], 0.0 if mode == "off" else 1.0)
            pending.add_metric([name], float(len(status.get("pendingBots") or [])))
            if status.get("maxAckLatencyMs") is not None:
                latency.add_metric([name], float(status["maxAckLatencyMs"]) / 1000.0)
        yield engaged
        yield pending
        yield latency
        yield from collect_bot_gauges(self._cache.bots())


def _number(value: Any) -> float | None:
    """A status number as a float, or None when absent or not a number (a scrape must never fail)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _section(status: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = status.get(key)
    return value if isinstance(value, Mapping) else {}


def collect_bot_gauges(bodies: Iterable[Mapping[str, Any]]) -> Iterator[Metric]:
    """Per-bot gauges from each TradingBot's status, in the manner of kube-state-metrics.

    Only status fields the operator already wrote are read: a fleet view works without scraping a single
    runner (runners placed outside the cluster often cannot be scraped). Labels are the bot's namespace
    and name, and for conditions the condition type and status: never a secret, never a free text.
    """
    labels = ["namespace", "bot"]
    info = GaugeMetricFamily(
        f"{PREFIX}_bot_info",
        "Always 1: the TradingBot's phase, requested mode (spec.mode), effective mode and placement as labels.",
        labels=[*labels, "phase", "requested_mode", "effective_mode", "placement"])
    condition = GaugeMetricFamily(
        f"{PREFIX}_bot_condition",
        "1 for the current status (True, False or Unknown) of each TradingBot condition, 0 for the others; "
        "a condition not yet written counts as Unknown.",
        labels=[*labels, "condition", "status"])
    score = GaugeMetricFamily(f"{PREFIX}_consensus_score_ratio",
                              "Reviewer agreement reached (status.consensus.scorePct / 100).", labels=labels)
    threshold = GaugeMetricFamily(f"{PREFIX}_consensus_threshold_ratio",
                                  "Reviewer agreement required (status.consensus.thresholdPct / 100).", labels=labels)
    residuals = GaugeMetricFamily(f"{PREFIX}_replay_residuals",
                                  "Decisions or fills of the latest replay that differ from the runner's "
                                  "(status.replay.residuals).", labels=labels)
    drawdown = GaugeMetricFamily(f"{PREFIX}_bot_drawdown_ratio",
                                 "Drawdown from the equity peak reported by the runner (status.runner.drawdownPct "
                                 "/ 100).", labels=labels)
    pnl = GaugeMetricFamily(f"{PREFIX}_bot_pnl",
                            "Profit and loss since start reported by the runner, quote currency "
                            "(status.runner.pnl).", labels=labels)
    statuses = [s.value for s in ConditionStatus]
    for body in bodies:
        meta = _section(body, "metadata")
        spec = _section(body, "spec")
        status = _section(body, "status")
        key = [str(meta.get("namespace", "")), str(meta.get("name", ""))]
        info.add_metric([*key, str(status.get("phase", BotPhase.PENDING.value)),
                         str(spec.get("mode", TradingMode.SIGNALS.value)),
                         str(status.get("effectiveMode", TradingMode.SIGNALS.value)),
                         str(spec.get("placement", Placement.CLUSTER.value))], 1.0)
        current = {str(c.get("type")): str(c.get("status")) for c in status.get("conditions") or []
                   if isinstance(c, Mapping)}
        for type_ in BOT_CONDITIONS:
            now = current.get(type_, ConditionStatus.UNKNOWN.value)
            for status_value in statuses:
                condition.add_metric([*key, type_, status_value], 1.0 if status_value == now else 0.0)
        consensus = _section(status, "consensus")
        for family, field in ((score, "scorePct"), (threshold, "thresholdPct")):
            if (pct := _number(consensus.get(field))) is not None:
                family.add_metric(key, pct / 100.0)
        if (count := _number(_section(status, "replay").get("residuals"))) is not None:
            residuals.add_metric(key, count)
        runner = _section(status, "runner")
        if (pct := _number(runner.get("drawdownPct"))) is not None:
            drawdown.add_metric(key, pct / 100.0)
        if (money := _number(runner.get("pnl"))) is not None:
            pnl.add_metric(key, money)
    yield from (info, condition, score, threshold, residuals, drawdown, pnl)
