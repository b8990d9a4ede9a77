"""The operator's Prometheus metrics, served on ``/metrics`` by :mod:`tradewarden.controller.main`.

Counters and the reconcile histogram are updated by the work queues and the API client; the gauges
(bots by phase and mode, kill switches) are computed at scrape time from the watch cache, so they can
never drift from what the operator sees. Names follow the Prometheus conventions that
``promtool check metrics`` enforces: a ``tradewarden_operator_`` prefix, ``_total`` on counters and
base units (``_seconds``).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tradewarden.api.tradingbot import BotPhase, TradingMode
from tradewarden.controller.cache import Cache

PREFIX = "tradewarden_operator"


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
        if cache is not None:
            registry.register(CacheCollector(cache))

    def observe_reconcile(self, kind: str, result: str, seconds: float) -> None:
        self.reconciles.labels(kind=kind, result=result).inc()
        self.reconcile_duration.labels(kind=kind).observe(seconds)

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
