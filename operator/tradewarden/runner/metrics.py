"""The runner's Prometheus metrics and its /metrics and /healthz endpoint.

Names follow Prometheus conventions (``_total`` counters, base units); they are listed in
docs/METRICS.md and checked by ``promtool check metrics`` in the tests. Labels never carry secrets.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class RunnerMetrics:
    """One registry per runner, so tests can run several runners in one process."""

    def __init__(self, namespace: str, bot: str) -> None:
        self.registry = CollectorRegistry()
        labels = {"namespace": namespace, "bot": bot}
        names = list(labels)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, names, registry=self.registry)

        self.equity = gauge("tradewarden_runner_equity", "Equity in quote currency.").labels(**labels)
        self.pnl = gauge("tradewarden_runner_pnl", "Profit and loss since start, quote currency.").labels(**labels)
        self.drawdown = gauge("tradewarden_runner_drawdown_ratio",
                              "Drawdown from the equity peak, as a ratio (0.05 = 5 %).").labels(**labels)
        self.max_drawdown = gauge(
            "tradewarden_runner_max_drawdown_ratio",
            "The configured drawdown limit (risk.maxDrawdownPct / 100); reaching it trips a bot-scoped halt.",
        ).labels(**labels)
        self.open_positions = gauge("tradewarden_runner_open_positions",
                                    "Symbols with an open position.").labels(**labels)
        self.heartbeat = gauge("tradewarden_runner_heartbeat_timestamp_seconds",
                               "Unix time of the last successful Lease renewal.").labels(**labels)
        self.kill_mode = Gauge("tradewarden_runner_kill_mode", "1 for the kill mode in force, 0 for the others.",
                               [*names, "mode"], registry=self.registry)
        self.effective_mode = Gauge("tradewarden_runner_mode", "1 for the trading mode in force.",
                                    [*names, "mode"], registry=self.registry)
        self.orders = Counter("tradewarden_runner_orders", "Orders by result (filled, open, rejected, failed).",
                              [*names, "mode", "result"], registry=self.registry)
        self.intents = Counter("tradewarden_runner_intents", "Intents by lane, source and result.",
                               [*names, "lane", "source", "result"], registry=self.registry)
        self.risk_rejections = Counter("tradewarden_runner_risk_rejections", "Orders refused by a risk limit.",
                                       [*names, "reason"], registry=self.registry)
        self.config_reloads = Counter("tradewarden_runner_config_reloads", "Runtime config reloads by result.",
                                      [*names, "result"], registry=self.registry)
        self.shutdown_cancels = Counter(
            "tradewarden_runner_shutdown_cancels",
            "Resting entry orders of this bot found when it was asked to stop, by result (canceled, gone, "
            "left_open).", [*names, "result"], registry=self.registry)
        self.bars = Counter("tradewarden_runner_bars", "Closed bars processed.", names,
                            registry=self.registry).labels(**labels)
        self.api_reachable = gauge(
            "tradewarden_runner_api_reachable",
            "1 while the Kubernetes API server answers, 0 after the grace period.").labels(**labels)
        self._labels = labels

    def set_kill_mode(self, mode: str) -> None:
        for m in ("off", "close_only", "halt_all", "flatten"):
            self.kill_mode.labels(**self._labels, mode=m).set(1 if m == mode else 0)

    def set_mode(self, mode: str) -> None:
        for m in ("signals", "paper", "live"):
            self.effective_mode.labels(**self._labels, mode=m).set(1 if m == mode else 0)

    def order(self, mode: str, result: str) -> None:
        self.orders.labels(**self._labels, mode=mode, result=result).inc()

    def intent(self, lane: str, source: str, result: str) -> None:
        self.intents.labels(**self._labels, lane=lane, source=source, result=result).inc()

    def rejection(self, reason: str) -> None:
        self.risk_rejections.labels(**self._labels, reason=reason).inc()

    def reload(self, result: str) -> None:
        self.config_reloads.labels(**self._labels, result=result).inc()

    def shutdown_cancel(self, result: str) -> None:
        self.shutdown_cancels.labels(**self._labels, result=result).inc()


def serve(port: int, registry: CollectorRegistry, healthy: Callable[[], bool]) -> ThreadingHTTPServer:
    """Serve /metrics and /healthz on loopback-or-pod port ``port`` in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, ctype, code = generate_latest(registry), CONTENT_TYPE_LATEST, 200
            elif self.path == "/healthz":
                ok = healthy()
                body, ctype, code = (b"ok\n" if ok else b"unhealthy\n"), "text/plain", 200 if ok else 503
            else:
                body, ctype, code = b"not found\n", "text/plain", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)  # noqa: S104 - the pod's metrics port
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
