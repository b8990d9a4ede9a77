"""``tradewarden runner --bot NS/NAME``: wire the engine, the watches, the Lease and /metrics together.

The same command runs in the runner pod (in-cluster ServiceAccount) and outside the cluster
(placement ``external``: a kubeconfig with the runner ServiceAccount's token). It waits for its first
valid runtime config, resumes from its journal, then ticks until SIGTERM or SIGINT.

Asked to stop, it sends no new entry, ends its tick, cancels its own entry orders still resting on the
venue (``Engine.cancel_resting_entries``; exits stay), renews its Lease once more and closes its journal,
all within ``$TRADEWARDEN_SHUTDOWN_SECONDS`` (default 20 s, inside the pod's 30-s grace period): every
venue call is bounded by a deadline, and a watchdog ends the process if anything else holds it up. The
exit code is 0, or 1 when a resting entry was left open (named in an error) or the watchdog had to act.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import logging
import os
import pathlib
import signal
import threading
import time
from collections.abc import Mapping
from typing import Any

from kubernetes import client, config

from tradewarden.api.evidence import evidence_configmap_name
from tradewarden.api.market import FLAT
from tradewarden.api.runtime import (
    DEFAULT_GATE_KEY_REF,
    GATE_KEY_ENV,
    KillAck,
    RuntimeConfig,
    Telemetry,
    lease_name,
    runtime_configmap_name,
)
from tradewarden.api.tradingbot import KillMode, TradingMode
from tradewarden.exchange import Broker, ExchangeClient, ExchangeError, NeedsHuman, PaperBroker
from tradewarden.logs import REDACTOR, setup_logging
from tradewarden.runner.engine import Engine
from tradewarden.runner.evidence import build_export
from tradewarden.runner.journal import Journal
from tradewarden.runner.kube import (
    ConfigWatcher,
    Contact,
    GateKeySource,
    Heartbeat,
    KillSwitchWatcher,
    report_annotations,
    upload_evidence,
)
from tradewarden.runner.metrics import RunnerMetrics, serve

log = logging.getLogger("tradewarden.runner")

HEARTBEAT_LOG_SECONDS = 60.0
JOURNAL_RETENTION_DAYS = 30

SHUTDOWN_ENV = "TRADEWARDEN_SHUTDOWN_SECONDS"
#: From SIGTERM to exit, everything included: well inside the pod's terminationGracePeriodSeconds (30).
DEFAULT_SHUTDOWN_SECONDS = 20.0
#: Share of the bound after which the tick in progress gets no more venue calls (5 s of 20).
TICK_SHARE = 0.25
#: Kept at the end of the bound for the last Lease renewal and closing the journal (at most 3 s).
FINAL_RESERVE_SHARE, FINAL_RESERVE_MAX = 0.15, 3.0


def shutdown_seconds(environ: Mapping[str, str] = os.environ) -> float:
    """The bound of the whole shutdown, from ``$TRADEWARDEN_SHUTDOWN_SECONDS`` (default 20 s)."""
    raw = environ.get(SHUTDOWN_ENV, "").strip()
    if not raw:
        return DEFAULT_SHUTDOWN_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 1.0 <= value <= 3600.0:
        raise SystemExit(f"${SHUTDOWN_ENV}: expected seconds between 1 and 3600, such as 20 (got {raw!r}); keep "
                         "it below the pod's terminationGracePeriodSeconds (30)")
    return value


def load_api(kubeconfig: str | None) -> client.ApiClient:
    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)
    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        return config.new_client_from_config()


class Runner:
    """Holds the shared state between the main loop and the watch threads."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.namespace, _, self.name = args.bot.partition("/")
        if not self.namespace or not self.name:
            raise SystemExit(f"--bot: expected NAMESPACE/NAME (got {args.bot!r})")
        self.args = args
        self.stop = threading.Event()
        self.api = load_api(args.kubeconfig)
        token = self.api.configuration.api_key.get("authorization", "")
        REDACTOR.add(token, token.removeprefix("Bearer ").strip())
        self.metrics = RunnerMetrics(self.namespace, self.name)
        journal_dir = pathlib.Path(args.journal or os.environ.get("TRADEWARDEN_JOURNAL", "journal"))
        self.journal = Journal(journal_dir / f"{self.namespace}_{self.name}.sqlite")
        self.contact = Contact()
        self._lock = threading.Lock()
        self._pending: RuntimeConfig | None = None
        self._rejected = ""
        self._acks: dict[str, KillAck] = {}
        self.config: RuntimeConfig | None = None
        self.engine: Engine | None = None
        self.market: ExchangeClient | None = None
        key_ref = getattr(args, "gate_key", None) or os.environ.get(GATE_KEY_ENV) or DEFAULT_GATE_KEY_REF
        self.gate_key = GateKeySource(self.api, key_ref, self.namespace)
        self.shutdown_seconds = shutdown_seconds()
        self.exit_code = 0
        self._stop_at: float | None = None
        self._stopped = threading.Event()

    # ---- stopping ----------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """SIGTERM or SIGINT (called from the signal handler: no logging, no I/O). Ends the loop, stops new
        entries, bounds the tick's venue calls and arms the watchdog of the whole shutdown."""
        if self._stop_at is None:
            self._stop_at = time.monotonic()
            threading.Thread(target=self._watchdog, name="shutdown-watchdog", daemon=True).start()
        self.stop.set()
        self._bound_for_stop()

    def _bound_for_stop(self) -> None:
        assert self._stop_at is not None
        tick_end = self._stop_at + self.shutdown_seconds * TICK_SHARE
        if self.market is not None:
            self.market.set_deadline(tick_end)
        if self.engine is not None:
            self.engine.begin_stop()
            if self.engine.broker is not None:
                self.engine.broker.set_deadline(tick_end)

    def stopped(self) -> None:
        """The process is about to exit: the watchdog has nothing left to guard."""
        self._stopped.set()

    def _watchdog(self) -> None:
        if self._stopped.wait(self.shutdown_seconds):
            return
        log.error("the runner did not stop within %g s ($%s): exiting now; resting orders may be left on the "
                  "venue", self.shutdown_seconds, SHUTDOWN_ENV,
                  extra={"fields": {"lane": "main", "shutdown_seconds": self.shutdown_seconds}})
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(1)  # the journal is SQLite in WAL mode: an abrupt exit loses no committed write

    def _shutdown(self) -> None:
        """Cancel the resting entries, renew the Lease once more and close the journal, in the bound."""
        if self._stop_at is None:  # not asked by a signal (a NeedsHuman or an unexpected error)
            self._stop_at = time.monotonic()
            threading.Thread(target=self._watchdog, name="shutdown-watchdog", daemon=True).start()
            self._bound_for_stop()
        bound = self.shutdown_seconds
        log.info("runner stopping (%.1f s since asked; bound %g s)", time.monotonic() - self._stop_at, bound,
                 extra={"fields": {"lane": "main", "shutdown_seconds": bound}})
        try:
            if self.engine is not None:
                deadline = self._stop_at + bound - min(FINAL_RESERVE_MAX, bound * FINAL_RESERVE_SHARE)
                if self.engine.cancel_resting_entries(deadline).left_open:
                    self.exit_code = 1
        except Exception:
            log.exception("canceling the resting entry orders failed; they may be left on the venue")
            self.exit_code = 1
        finally:
            self.heartbeat.renew()
            self.journal.close()
            self._stopped.set()

    # ---- callbacks from the watch threads ----------------------------------------------------------

    def on_config(self, cfg: RuntimeConfig) -> None:
        with self._lock:
            self._pending = cfg
            self._rejected = ""
        self.metrics.reload("accepted")
        if self.engine is not None:
            # The operator's folded kill mode takes effect at once; the rest waits for the next tick.
            self.engine.set_operator_kill(cfg.kill_mode)

    def on_reject(self, reason: str) -> None:
        with self._lock:
            self._rejected = reason[:500]
        self.metrics.reload("rejected")
        self.heartbeat.renew_now()

    def on_kill(self, mode: KillMode, reason: str, acks: dict[str, KillAck]) -> None:
        if self.engine is not None:
            self.engine.set_switch_kill(mode, reason)
        with self._lock:
            self._acks = acks
        self.heartbeat.renew_now()

    def on_reachability(self, lost: bool, silent: float) -> None:
        if self.engine is not None:
            self.engine.set_api_lost(lost, self.grace())
        self.metrics.api_reachable.set(0 if lost else 1)

    def grace(self) -> float:
        return float(self.config.heartbeat_grace_seconds if self.config else 30)

    def labels(self) -> dict[str, str]:
        return dict(self.config.labels) if self.config else {}

    def report(self) -> dict[str, str]:
        eng = self.engine
        now = dt.datetime.now(dt.UTC)
        if eng is None:
            tel = Telemetry(heartbeat=now)
            applied, kill = "", KillMode.OFF
        else:
            t = eng.telemetry
            kill = eng.kill_mode()
            tel = Telemetry(heartbeat=now, effective_mode=eng.mode, kill_mode=kill,
                            strategy_mode=eng.strategy_mode(), equity=round(t.equity, 2), pnl=round(t.pnl, 2),
                            drawdown_pct=round(t.drawdown_pct, 2), open_positions=t.open_positions, flat=t.flat,
                            api_reachable=not eng.kill.api_lost, bot_trip=eng.kill.bot_trip,
                            bot_trip_reason=eng.kill.bot_trip_reason)
            applied = eng.config.config_hash
        self.metrics.heartbeat.set(time.time())
        with self._lock:
            acks, rejected = dict(self._acks), self._rejected
        refused = eng.live_refused if eng is not None else ""
        if not refused and self.gate_key.problem and self.config is not None and \
                self.config.effective_mode == TradingMode.LIVE:
            refused = self.gate_key.problem
        return report_annotations(applied, kill, acks, tel, rejected, refused[:500])

    # ---- brokers ---------------------------------------------------------------------------------------

    def credentials(self, cfg: RuntimeConfig) -> tuple[str | None, str | None, str | None]:
        ref = cfg.exchange.credentials_secret_ref
        if ref is None:
            return None, None, None
        secret = client.CoreV1Api(self.api).read_namespaced_secret(ref.name, self.namespace)
        data = secret.data or {}

        def value(key: str | None) -> str | None:
            if not key or key not in data:
                return None
            return base64.b64decode(data[key]).decode()

        key, sec, pw = value(ref.api_key_key), value(ref.secret_key), value(ref.password_key)
        REDACTOR.add(key, sec, pw)
        if not key or not sec:
            raise NeedsHuman(f"Secret {ref.name}: keys {ref.api_key_key!r} and {ref.secret_key!r} are required")
        return key, sec, pw

    def broker_factory(self, cfg: RuntimeConfig, mode: TradingMode, saved: dict[str, float] | None) -> Broker:
        assert self.market is not None
        if mode == TradingMode.PAPER:
            quote = cfg.capital.quote_currency
            return PaperBroker(starting_quote=cfg.capital.paper_balance, quote_currency=quote, balances=saved,
                               markets=self.market.load_markets())
        key, sec, pw = self.credentials(cfg)
        return ExchangeClient(cfg.exchange.id, sandbox=cfg.exchange.sandbox, api_key=key, secret=sec, password=pw,
                              api_url=cfg.exchange.api_url)

    # ---- the main loop -------------------------------------------------------------------------------------

    def run(self) -> int:
        cfg_watch = ConfigWatcher(self.api, self.namespace, runtime_configmap_name(self.name), self.name,
                                  self.on_config, self.on_reject, self.contact, self.stop)
        self.heartbeat = Heartbeat(self.api, self.namespace, lease_name(self.name), f"{self.namespace}/{self.name}",
                                   self.report, self.contact, self.grace, self.on_reachability, self.stop,
                                   period=float(os.environ.get("TRADEWARDEN_HEARTBEAT_SECONDS", "5")))
        cfg_watch.start()
        self.heartbeat.start()
        log.info("waiting for the runtime config %s/%s", self.namespace, runtime_configmap_name(self.name))
        while not cfg_watch.ready.wait(1.0):
            if self.stop.is_set():
                return 0
        with self._lock:
            first, self._pending = self._pending, None
        assert first is not None
        self.config = first
        self.market = ExchangeClient(first.exchange.id, sandbox=first.exchange.sandbox, api_url=first.exchange.api_url)
        self.engine = Engine(bot_uid=first.bot_uid or f"{self.namespace}/{self.name}", config=first,
                             journal=self.journal, metrics=self.metrics, market=self.market,
                             broker_factory=self.broker_factory, on_kill_change=self.heartbeat.renew_now,
                             gate_key=self.gate_key.get)
        try:
            self._trade(cfg_watch)
        finally:
            self._shutdown()  # also when the loop ends in an error: the resting entries are still canceled
        return self.exit_code

    def _trade(self, cfg_watch: ConfigWatcher) -> None:
        """Resume from the journal, then tick until asked to stop."""
        assert self.engine is not None
        if self.stop.is_set():
            self._bound_for_stop()  # asked to stop while the engine was being built
        ks_watch = KillSwitchWatcher(self.api, self.namespace, self.labels, self.on_kill, self.contact, self.stop)
        ks_watch.start()
        # Asked to stop already: nothing is re-sent; the next runner settles the pending orders.
        settled = 0 if self.stop.is_set() else self.engine.resume_pending()
        log.info("runner started in %s mode; resumed %d pending orders from the journal", self.engine.mode.value,
                 settled, extra={"fields": {"lane": "main", "effective_mode": self.engine.mode.value}})
        tick = self.args.tick_seconds or float(os.environ.get("TRADEWARDEN_TICK_SECONDS", "2"))
        next_log = time.monotonic()
        next_prune = time.monotonic()
        evidence_every = float(os.environ.get("TRADEWARDEN_EVIDENCE_SECONDS", "30"))
        next_evidence = time.monotonic() + evidence_every
        while not self.stop.is_set():
            with self._lock:
                pending, self._pending = self._pending, None
            if pending is not None:
                self.config = pending
                self.engine.apply_config(pending)
                ks_watch.evaluate()  # labels may have changed
                self.heartbeat.renew_now()
            try:
                self.engine.tick()
            except ExchangeError as exc:
                log.warning("tick skipped: %s", exc)
            except Exception:
                log.exception("tick failed; continuing on the next one")
            now = time.monotonic()
            if now >= next_log:
                self._heartbeat_log()
                next_log = now + HEARTBEAT_LOG_SECONDS
            if now >= next_evidence and self.engine.mode != TradingMode.SIGNALS:
                self._export_evidence()
                next_evidence = now + evidence_every
            if now >= next_prune:
                cutoff = int((time.time() - JOURNAL_RETENTION_DAYS * 86400) * 1000)
                self.journal.prune(cutoff)
                next_prune = now + 3600
            self.stop.wait(tick)

    def _export_evidence(self) -> None:
        assert self.engine is not None
        export = build_export(self.engine)
        if export is not None:
            upload_evidence(self.api, self.namespace, evidence_configmap_name(self.name), export.encode())

    def _heartbeat_log(self) -> None:
        eng = self.engine
        assert eng is not None
        assert self.config is not None
        until = self.config.manual_lane.enabled_until
        manual_open = until is not None and dt.datetime.now(dt.UTC) < until
        fields: dict[str, Any] = {"lane": "main", "manual_lane": "open" if manual_open else "closed",
                                  "kill_mode": eng.kill_mode().value, "effective_mode": eng.mode.value,
                                  **eng.counters}
        log.info("heartbeat", extra={"fields": fields})
        for symbol in eng.strategies:
            pos = eng.positions.get(symbol, FLAT)
            if pos.is_open:
                log.info("position %s %g @ %g", symbol, pos.qty, pos.entry_price, extra={"fields": {"lane": "main"}})


def run_runner(args: argparse.Namespace) -> int:
    setup_logging({"bot": args.bot}, logging.DEBUG if os.environ.get("TRADEWARDEN_DEBUG") else logging.INFO)
    runner = Runner(args)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: runner.request_stop())
    if args.metrics_port:
        serve(args.metrics_port, runner.metrics.registry, lambda: not runner.stop.is_set())
    try:
        return runner.run()
    except NeedsHuman as exc:
        log.error("runner cannot continue and needs a human: %s", exc)
        return 2
    finally:
        runner.stopped()
