"""The trading engine of one bot: bars in, decisions, intents, checks, orders, journal.

Called by the runner's main loop (``tick`` on a timer, ``apply_config`` between ticks) and by the watch
threads (``set_switch_kill``, ``set_api_lost``), which may run at any moment: the kill state is read
under a lock right before every order, so a kill switch that lands in the middle of a tick still stops
the next order.

The order path exists only in paper and live mode: in signals mode the engine has no broker at all and
never builds an ``OrderRequest`` (DESIGN.md invariant 1). Live orders need a runtime config whose gate
hash matches its own content (invariant 2, checked on the runner's side too).

A runner asked to stop calls ``begin_stop`` (no new entry is sent from then on) and, after its last
tick, ``cancel_resting_entries``: its own entry orders still resting on the venue are canceled before it
exits, its exits stay (see ``intents.resting_entries``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tradewarden.api.market import (
    ENTRY_CASH_HEADROOM,
    FLAT,
    Action,
    Candle,
    OrderRequest,
    OrderResult,
    OrderSide,
    OrderStatus,
    OrderType,
    Position,
)
from tradewarden.api.runtime import GateKey, RuntimeConfig, live_refusal, signature_valid
from tradewarden.api.strategyconfig import MODE_STEP_DOWN, StrategyMode
from tradewarden.api.tradingbot import KillMode, TradingMode, strongest_kill_mode
from tradewarden.exchange import Broker, ExchangeError, NeedsHuman, OrderNotFound, PaperBroker, RetryLater
from tradewarden.exchange.broker import fill_cash_flow, mark_to_market
from tradewarden.runner.intents import Intent, IntentKind, Lane, Verdict, admit, client_order_id, resting_entries
from tradewarden.runner.journal import Journal, UnsettledOrder
from tradewarden.runner.metrics import RunnerMetrics
from tradewarden.runner.risk import OrderKind, Rejection, RejectReason, RiskManager
from tradewarden.strategies import SafeStrategy, StrategyError, build_strategy

log = logging.getLogger("tradewarden.runner.engine")

#: How many closed bars to fetch beyond a strategy's warm-up when (re)building it.
WARMUP_MARGIN = 5


#: Journal key: issuedAt of the newest operator-signed runtime config this runner accepted.
JOURNAL_NEWEST_SIGNED = "newest_signed_issued_at"


class MarketData(Protocol):
    def fetch_ohlcv(self, symbol: str, timeframe: str = "1m", since: int | None = None,
                    limit: int | None = None) -> list[Candle]: ...


BrokerFactory = Callable[[RuntimeConfig, TradingMode, dict[str, float] | None], Broker]


@dataclass
class KillState:
    """Every source of a kill mode, folded by ``mode``: the strongest wins."""

    operator: KillMode = KillMode.OFF
    switches: KillMode = KillMode.OFF
    switches_reason: str = ""
    bot_trip: KillMode = KillMode.OFF
    bot_trip_reason: str = ""
    api_lost: bool = False

    @property
    def mode(self) -> KillMode:
        # Losing the API server blocks new entries (close-only) until it answers again.
        lost = KillMode.CLOSE_ONLY if self.api_lost else KillMode.OFF
        return strongest_kill_mode(self.operator, self.switches, self.bot_trip, lost)


@dataclass
class ShutdownCancels:
    """What a stopping runner did with its resting entry orders (client order ids)."""

    canceled: list[str] = field(default_factory=list)
    #: No longer open when the cancel reached the venue (filled or canceled meanwhile): recorded as they are.
    gone: list[str] = field(default_factory=list)
    #: Still resting on the venue, with why.
    left_open: dict[str, str] = field(default_factory=dict)
    #: Own reduce-only orders (exits, flatten) found resting and left on the book on purpose.
    exits_kept: int = 0
    #: Open orders of others (another bot, a human) on the same symbols, never touched.
    others: int = 0


@dataclass
class EngineTelemetry:
    equity: float = 0.0
    pnl: float = 0.0
    drawdown_pct: float = 0.0
    open_positions: int = 0
    flat: bool = True
    counters: dict[str, int] = field(default_factory=dict)


class Engine:
    """One bot's trading state machine. Not thread-safe except for the kill-state setters."""

    def __init__(self, *, bot_uid: str, config: RuntimeConfig, journal: Journal, metrics: RunnerMetrics,
                 market: MarketData, broker_factory: BrokerFactory,
                 clock: Callable[[], float] = time.time,
                 on_kill_change: Callable[[], None] | None = None,
                 gate_key: Callable[..., GateKey | None] = lambda refresh=False: None) -> None:
        self.bot_uid = bot_uid
        #: The operator's verifying key (read from the operator's namespace), or None when unavailable.
        self.gate_key = gate_key
        #: Why the last live permission was refused ("" when none was): reported in the Lease.
        self.live_refused = ""
        self.journal = journal
        self.metrics = metrics
        self.market = market
        self.broker_factory = broker_factory
        self.clock = clock
        self.on_kill_change = on_kill_change
        self._kill_lock = threading.Lock()
        self.kill = KillState()
        trip = journal.get("bot_trip")
        if trip:
            self.kill.bot_trip = KillMode(trip["mode"])
            self.kill.bot_trip_reason = trip["reason"]
        self.config = config
        self.mode = TradingMode.SIGNALS
        self.broker: Broker | None = None
        self.strategies: dict[str, SafeStrategy] = {}
        self.last_bar: dict[str, int] = {}
        self.positions: dict[str, Position] = journal.positions()
        self.risk = RiskManager(config.risk, equity_peak=float(journal.get("equity_peak", 0.0)))
        self.telemetry = EngineTelemetry()
        self.counters: dict[str, int] = {k: 0 for k in (
            "processed", "executed_true", "executed_false", "blocked_source", "manual_consumed",
            "manual_blocked_disabled", "manual_processed", "kill_blocked", "risk_rejected")}
        self._last_kill_mode = KillMode.OFF
        #: Set by ``begin_stop``: no new entry order is sent once the runner is asked to stop.
        self.stopping = False
        self._last_price: dict[str, float] = {}
        self._strategy_key: tuple[Any, ...] = ()
        self._configure(config, first=True)

    # ---- kill state (any thread) ------------------------------------------------------------------

    def kill_mode(self) -> KillMode:
        with self._kill_lock:
            return self.kill.mode

    def set_operator_kill(self, mode: KillMode) -> None:
        """The kill mode the operator folded into a newly received runtime config: effective at once,
        before the rest of that config is applied between ticks."""
        with self._kill_lock:
            changed = self.kill.operator != mode
            self.kill.operator = mode
        if changed:
            self._kill_changed()

    def set_switch_kill(self, mode: KillMode, reason: str) -> None:
        """Called by the KillSwitch watch with the folded mode of every matching switch."""
        with self._kill_lock:
            changed = self.kill.switches != mode
            self.kill.switches, self.kill.switches_reason = mode, reason
        if changed:
            log.warning("kill switch mode now %s", mode.value, extra={"fields": {"kill_mode": mode.value,
                                                                                 "reason": reason}})
            self._kill_changed()

    def set_api_lost(self, lost: bool, grace: float) -> None:
        with self._kill_lock:
            changed = self.kill.api_lost != lost
            self.kill.api_lost = lost
        if changed:
            if lost:
                log.error("API server unreachable for more than %.0f s: stopping new entries on my own", grace,
                          extra={"fields": {"api_reachable": False}})
            else:
                log.warning("API server reachable again: entries allowed unless a kill switch says otherwise",
                            extra={"fields": {"api_reachable": True}})
            self.metrics.api_reachable.set(0 if lost else 1)
            self._kill_changed()

    def _kill_changed(self) -> None:
        mode = self.kill_mode()
        self.metrics.set_kill_mode(mode.value)
        if self._last_kill_mode == KillMode.OFF and mode != KillMode.OFF:
            self._step_down_on_kill()
        self._last_kill_mode = mode
        if self.on_kill_change:
            self.on_kill_change()

    def _trip(self, mode: KillMode, reason: str) -> None:
        with self._kill_lock:
            self.kill.bot_trip, self.kill.bot_trip_reason = mode, reason
        self.journal.put("bot_trip", {"mode": mode.value, "reason": reason, "reset": self.config.trip_reset})
        log.error("bot-scoped %s tripped: %s", mode.value, reason, extra={"fields": {"bot_trip": mode.value}})
        self._kill_changed()

    # ---- configuration ------------------------------------------------------------------------------

    def apply_config(self, config: RuntimeConfig) -> None:
        """Apply a new, already verified runtime config between ticks (hot reload, no restart)."""
        old = self.config
        self._configure(config, first=False)
        if old.strategy.key != config.strategy.key:
            log.info("strategy %s -> %s", old.strategy.key, config.strategy.key,
                     extra={"fields": {"from": old.strategy.key, "to": config.strategy.key}})
        log.info("applied runtime config %s (generation %d)", config.config_hash[:19], config.generation,
                 extra={"fields": {"config_hash": config.config_hash, "effective_mode": self.mode.value}})

    def _configure(self, config: RuntimeConfig, first: bool) -> None:
        self.config = config
        self.risk.update_limits(config.risk)
        with self._kill_lock:
            self.kill.operator = config.kill_mode
        trip = self.journal.get("bot_trip")
        if trip and trip.get("reset", "") != config.trip_reset:
            # A human changed the bot's reset-trip annotation after the trip: clear it.
            self.journal.put("bot_trip", None)
            with self._kill_lock:
                self.kill.bot_trip, self.kill.bot_trip_reason = KillMode.OFF, ""
            log.warning("bot-scoped trip cleared by reset annotation")
        mode = self._allowed_mode(config)
        if mode != self.mode or (self.broker is None and mode != TradingMode.SIGNALS):
            self._switch_mode(mode)
        self._rebase_drawdown(mode, config)
        self._rebuild_strategies_if_needed()
        self.metrics.set_kill_mode(self.kill_mode().value)

    def _rebase_drawdown(self, mode: TradingMode, config: RuntimeConfig) -> None:
        """Measure drawdown from a new peak whenever the capital it is measured on changes.

        Equity is the paper balance in paper mode and the ramp step's capital live: a promotion from a
        10,000 paper account to a 100 live step, or a ramp step, is not a loss. Without the rebase the
        paper peak made the first live equity look like a 99 % drawdown and tripped the halt at once.
        The base is journaled, so a restart keeps the peak it had.
        """
        base = [mode.value, config.capital.live_capital if mode == TradingMode.LIVE else config.capital.paper_balance]
        if self.journal.get("equity_base") == base:
            return
        if self.journal.get("equity_base") is not None:
            log.info("capital base %s -> %s: drawdown measured from a new peak", self.journal.get("equity_base"),
                     base)
        self.journal.put("equity_base", base)
        self.risk.equity_peak = 0.0
        self.risk.drawdown_pct = 0.0
        self.journal.put("equity_peak", 0.0)

    def _allowed_mode(self, config: RuntimeConfig) -> TradingMode:
        mode = config.effective_mode
        # The key is read only when a document is signed or asks for live: a paper bot without an operator
        # (tests, a laptop) never needs it.
        key = self.gate_key() if (config.signature or mode == TradingMode.LIVE) else None
        if key is not None and config.signature and config.key_id != key.key_id:
            key = self.gate_key(refresh=True)  # the operator may have a new key since it was read
        newest = int(self.journal.get(JOURNAL_NEWEST_SIGNED) or 0)
        refusal = live_refusal(config, key, namespace=config.namespace, bot=config.bot, bot_uid="",
                               newest_issued_at=newest)
        if refusal is None and signature_valid(config, key) and config.issued_at > newest:
            # Every signed document moves the mark, paper ones too: a live permission written back after a
            # demotion is older than the demotion, and is refused.
            self.journal.put(JOURNAL_NEWEST_SIGNED, config.issued_at)
        if refusal is not None:
            if refusal != self.live_refused:
                self.metrics.reload("live_refused")
            self.live_refused = refusal
            log.error("refusing live orders, trading on paper: %s", refusal,
                      extra={"fields": {"config_hash": config.config_hash, "live_refused": refusal}})
            return TradingMode.PAPER
        self.live_refused = ""
        if mode == TradingMode.LIVE and config.capital.live_capital <= 0:
            log.error("live mode with no live capital at the current ramp step: trading on paper")
            return TradingMode.PAPER
        return mode

    def _switch_mode(self, mode: TradingMode) -> None:
        log.info("trading mode %s -> %s", self.mode.value, mode.value,
                 extra={"fields": {"from": self.mode.value, "to": mode.value}})
        self.mode = mode
        self.metrics.set_mode(mode.value)
        if mode == TradingMode.SIGNALS:
            self.broker = None  # no order path at all
            return
        saved = self.journal.get(f"{mode.value}_balances") if mode == TradingMode.PAPER else None
        self.broker = self.broker_factory(self.config, mode, saved)
        self._swap_positions(mode)

    def _swap_positions(self, mode: TradingMode) -> None:
        """Each trading mode has its own book: paper positions never become live ones.

        Without this, a bot promoted with an open paper position would send a live exit for base
        currency it never bought live. The journal's positions table holds the book of the mode named
        by ``positions_mode``; the other modes' books wait in the kv store.
        """
        owner = self.journal.get("positions_mode")
        if owner == mode.value:
            return  # a restart: the table already is this mode's book
        if owner is not None:
            self.journal.put(f"positions_{owner}", {s: [p.qty, p.entry_price]
                                                    for s, p in self.positions.items() if p.is_open})
        saved = self.journal.get(f"positions_{mode.value}") or {}
        self.positions = {s: Position(qty=q, entry_price=e) for s, (q, e) in saved.items()}
        self.journal.replace_positions(self.positions, int(self.clock() * 1000))
        self.journal.put("positions_mode", mode.value)

    # ---- strategy modes -------------------------------------------------------------------------------

    def strategy_mode(self) -> StrategyMode:
        base = StrategyMode(self.config.strategy.active_mode)
        stepped = self.journal.get("mode_step")
        if stepped and stepped.get("base") == base.value:
            return StrategyMode(stepped["mode"])
        return base

    def _step_down_on_kill(self) -> None:
        if not self.config.strategy.auto_step_down:
            return
        current = self.strategy_mode()
        idx = MODE_STEP_DOWN.index(current)
        nxt = MODE_STEP_DOWN[min(idx + 1, len(MODE_STEP_DOWN) - 1)]
        self.journal.put("mode_step", {"base": StrategyMode(self.config.strategy.active_mode).value,
                                       "mode": nxt.value})
        if nxt != current:
            log.warning("new kill event: strategy mode steps down %s -> %s", current.value, nxt.value,
                        extra={"fields": {"from": current.value, "to": nxt.value}})

    def _overlay(self) -> tuple[str, dict[str, Any], float, bool]:
        """Timeframe, params, risk scale and whether entries are allowed in the current strategy mode."""
        cfg = self.config.strategy
        mode = self.strategy_mode()
        overlay = getattr(cfg.modes, mode.value)
        timeframe, params, scale, entries = cfg.timeframe.value, dict(cfg.params), 1.0, True
        if overlay is not None:
            timeframe = overlay.timeframe.value if overlay.timeframe else timeframe
            params.update(overlay.params or {})
            scale, entries = overlay.risk_scale, overlay.entries_allowed
        if mode == StrategyMode.FLAT:
            entries = False  # the safety profile never opens a position
        return timeframe, params, scale, entries

    def _rebuild_strategies_if_needed(self) -> None:
        timeframe, params, _, _ = self._overlay()
        key = (self.config.strategy.key, tuple(self.config.strategy.instruments), timeframe,
               sorted(params.items()))
        if key == self._strategy_key:
            return
        self._strategy_key = key
        self.strategies = {s: build_strategy(self.config.strategy.key, params, s)
                           for s in self.config.strategy.instruments}
        self.last_bar = {}
        log.info("strategy %s ready on %s (%s)", self.config.strategy.key,
                 ", ".join(self.config.strategy.instruments), timeframe)

    # ---- the tick -----------------------------------------------------------------------------------------

    def tick(self) -> int:
        """Process every newly closed bar, the manual lane and flatten; return the bars processed."""
        timeframe, _, _, _ = self._overlay()
        processed = 0
        for symbol, strategy in self.strategies.items():
            processed += self._process_symbol(symbol, strategy, timeframe)
        self._manual_lane()
        self._flatten_if_needed()
        self._update_equity()
        if processed and self.last_bar:
            # One equity sample per tick that saw new bars, stamped with the newest bar: replay starts from it.
            t = self.telemetry
            self.journal.add_equity(max(self.last_bar.values()), t.equity, t.pnl, t.drawdown_pct)
        return processed

    def _process_symbol(self, symbol: str, strategy: SafeStrategy, timeframe: str) -> int:
        last = self.last_bar.get(symbol)
        if last is None:
            # (Re)built: warm the strategy up on history without acting on old bars.
            history = self.market.fetch_ohlcv(symbol, timeframe, limit=strategy.warmup_bars + WARMUP_MARGIN)
            for bar in history:
                strategy.on_candle(bar, self.positions.get(symbol, FLAT))
            self.journal.add_candles(symbol, timeframe, history)
            if history:
                self.last_bar[symbol] = history[-1].ts
                self._price(symbol, history[-1])
                self._mark_acting_since(history[-1].ts + 1)
            return 0
        bars = [b for b in self.market.fetch_ohlcv(symbol, timeframe, since=last + 1) if b.ts > last]
        if not bars:
            return 0
        self.journal.add_candles(symbol, timeframe, bars)
        for bar in bars:
            self.last_bar[symbol] = bar.ts
            self._price(symbol, bar)
            position = self.positions.get(symbol, FLAT)
            try:
                decision = strategy.on_candle(bar, position)
            except StrategyError as exc:
                log.error("strategy failed; rebuilding it: %s", exc)
                self._strategy_key = ()
                self._rebuild_strategies_if_needed()
                return 0
            self.metrics.bars.inc()
            if decision.action == Action.HOLD:
                continue
            self.journal.add_signal(bar.ts, symbol, decision.action.value, decision.reason, decision.stop_price,
                                    self.config.config_hash, self.strategy_mode().value)
            log.info("signal %s %s: %s", decision.action.value, symbol, decision.reason,
                     extra={"fields": {"lane": Lane.MAIN.value, "symbol": symbol, "bar": bar.ts}})
            if self.mode == TradingMode.SIGNALS:
                continue  # signals only: journaled, never turned into an order
            kind = IntentKind.ENTRY if decision.action == Action.ENTER_LONG else IntentKind.EXIT
            side = OrderSide.BUY if kind == IntentKind.ENTRY else OrderSide.SELL
            intent = Intent(id=f"strategy:{symbol}:{timeframe}:{bar.ts}:{decision.action.value}",
                            source="strategy", lane=Lane.MAIN, symbol=symbol, side=side, kind=kind,
                            stop_price=decision.stop_price, reason=decision.reason)
            self.process_intent(intent)
        return len(bars)

    def _mark_acting_since(self, t: int) -> None:
        """Record from which bar on this config's decisions were acted upon (after a (re)build's warm-up).

        The evidence export starts its window no earlier: bars the runner only warmed up on were never
        decided on, and replaying them would count as residuals against it.
        """
        current = self.journal.get("acting_since") or {}
        if current.get("config_hash") == self.config.config_hash and current.get("t", 0) >= t:
            return
        self.journal.put("acting_since", {"config_hash": self.config.config_hash, "t": t})

    def _price(self, symbol: str, bar: Candle) -> None:
        self._last_price[symbol] = bar.close
        if isinstance(self.broker, PaperBroker):
            for filled in self.broker.update_price(symbol, bar, bar.ts):
                self._on_result(filled, None)

    def last_price(self, symbol: str) -> float | None:
        return self._last_price.get(symbol)

    # ---- intents ---------------------------------------------------------------------------------------------

    def _manual_lane(self) -> None:
        lane = self.config.manual_lane
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        for mi in lane.intents:
            intent_id = f"manual:{mi.id}"
            if self.journal.intent_done(intent_id):
                continue
            side = OrderSide(mi.side.value)
            kind = IntentKind.EXIT if mi.reduce_only or side == OrderSide.SELL else IntentKind.ENTRY
            intent = Intent(id=intent_id, source="manual", lane=Lane.MANUAL, symbol=mi.symbol, side=side,
                            kind=kind, amount=mi.amount, reason="manual intent")
            if lane.enabled_until is None or now >= lane.enabled_until:
                # Expired: refuse once and remember, so it does not run later if the lane is reopened by mistake.
                self._finish(intent, Verdict.MANUAL_BLOCKED_DISABLED.value, "manual lane closed")
                continue
            self.process_intent(intent)

    def process_intent(self, intent: Intent) -> OrderResult | None:
        """Admit, size, check and place one intent. Every outcome is journaled and counted."""
        self.counters["processed"] += 1
        if intent.lane == Lane.MANUAL:
            self.counters["manual_processed"] += 1
        if self.mode == TradingMode.SIGNALS or self.broker is None:
            self._finish(intent, "signals_mode", "signals mode places no orders")
            return None
        _, _, scale, entries_allowed = self._overlay()
        verdict = admit(intent, allowed_sources=self.config.allowed_intent_sources,
                        manual_enabled_until=self.config.manual_lane.enabled_until,
                        now=dt.datetime.fromtimestamp(self.clock(), dt.UTC),
                        already_done=self.journal.intent_done(intent.id), kill_mode=self.kill_mode(),
                        entries_blocked=not entries_allowed)
        if verdict != Verdict.ACCEPT:
            if verdict != Verdict.DUPLICATE:
                self._finish(intent, verdict.value, f"{verdict.value} (kill mode {self.kill_mode().value})")
            return None
        price = self.last_price(intent.symbol)
        if price is None:
            self._finish(intent, "no_price", f"no market price for {intent.symbol} yet")
            return None
        position = self.positions.get(intent.symbol, FLAT)
        if intent.kind == IntentKind.EXIT:
            amount = min(intent.amount or position.qty, position.qty)
            if amount <= 0:
                self._finish(intent, "nothing_to_exit", f"no open position in {intent.symbol}")
                return None
            order_kind = OrderKind.EXIT
        else:
            # Fresh equity, not the last tick's: a loss realised earlier in this tick shrinks the entry too.
            live_cash, equity = self._live_book() if self.mode == TradingMode.LIVE else (0.0, self._equity_now())
            sized = intent.amount or self.risk.size_entry(equity, price, intent.stop_price)
            if isinstance(sized, Rejection):
                return self._reject(intent, sized)
            amount = sized * (scale if intent.lane == Lane.MAIN else 1.0)
            if isinstance(self.broker, PaperBroker):
                # Never more than the free cash buys: a risk-sized order larger than the account is clamped,
                # not refused (replay.simulation mirrors this with the same headroom).
                free = self.broker.fetch_balance().get(self.config.capital.quote_currency)
                cash = free.free if free is not None else 0.0
                fill_price = price * (1 + self.broker.slippage)
                amount = min(amount, cash * ENTRY_CASH_HEADROOM / (fill_price * (1 + self.broker.fee_rate)))
            if self.mode == TradingMode.LIVE:
                # What the live book may still put at risk: the ramp step's capital, less what it has lost
                # (never more than the step, whatever it has won), less what is already in positions.
                cap = min(self.config.capital.live_capital, equity) - (equity - live_cash)
                amount = min(amount, max(cap, 0.0) / price)
            if amount * price <= 0:
                return self._reject(intent, Rejection(RejectReason.CAPITAL,
                                                      "no live capital left at the current ramp step"))
            order_kind = OrderKind.ENTRY
        notional = amount * price
        now = self.clock()
        open_count = sum(1 for p in self.positions.values() if p.is_open)
        rejection = self.risk.check(order_kind, intent.symbol, notional, now, open_positions=open_count,
                                    opens_position=not position.is_open)
        if rejection is not None:
            return self._reject(intent, rejection)
        return self._place(intent, order_kind, amount, notional, now)

    def _place(self, intent: Intent, order_kind: OrderKind, amount: float, notional: float,
               now: float) -> OrderResult | None:
        # The kill state may have changed while this intent was being sized: look once more.
        mode = self.kill_mode()
        if mode == KillMode.HALT_ALL or (order_kind == OrderKind.ENTRY and mode != KillMode.OFF):
            self._finish(intent, Verdict.KILL_BLOCKED.value, f"kill mode {mode.value}")
            return None
        if self.stopping and order_kind == OrderKind.ENTRY:
            # Not recorded as done: a manual intent runs in the next runner instead.
            log.info("entry for %s not sent: the runner is stopping", intent.symbol,
                     extra={"fields": {"lane": intent.lane.value, "intent": intent.id}})
            return None
        assert self.broker is not None
        request = OrderRequest(symbol=intent.symbol, side=intent.side, type=OrderType.MARKET, amount=amount,
                               client_order_id=client_order_id(self.bot_uid, intent.id),
                               reduce_only=intent.reduce_only)
        self.journal.order_pending(intent.id, int(now * 1000), request, self.mode.value)
        self.risk.record(order_kind, intent.symbol, notional, now)
        try:
            result = self.broker.create_order(request)
        except RetryLater as exc:
            # Left pending: the next tick (or a restarted runner) asks the venue by client order id.
            log.warning("order %s not confirmed, will look it up: %s", request.client_order_id, exc)
            self.metrics.order(self.mode.value, "unconfirmed")
            return None
        except (NeedsHuman, ExchangeError) as exc:
            self.journal.order_failed(request.client_order_id, str(exc))
            self.metrics.order(self.mode.value, "failed")
            self.counters["executed_false"] += 1
            self._finish(intent, "failed", str(exc))
            log.error("order for %s failed and needs a human: %s", intent.symbol, exc,
                      extra={"fields": {"lane": intent.lane.value}})
            return None
        self._on_result(result, intent)
        return result

    def _on_result(self, result: OrderResult, intent: Intent | None) -> None:
        self.journal.order_result(result, self.mode.value)
        status = result.status
        self.metrics.order(self.mode.value, {OrderStatus.CLOSED: "filled", OrderStatus.OPEN: "open"}.get(
            status, status.value))
        if result.filled > 0 and result.average:
            self._apply_fill(result)
        if intent is not None:
            executed = status in (OrderStatus.CLOSED, OrderStatus.OPEN)
            self.counters["executed_true" if executed else "executed_false"] += 1
            if intent.lane == Lane.MANUAL and executed:
                self.counters["manual_consumed"] += 1
            self._finish(intent, "executed" if executed else "rejected", status.value)
            log.info("order %s %s %g %s: %s", result.side.value, result.symbol, result.filled or result.amount,
                     self.mode.value, status.value,
                     extra={"fields": {"lane": intent.lane.value, "client_order_id": result.client_order_id}})
        if isinstance(self.broker, PaperBroker):
            self.journal.put("paper_balances", {a: b.total for a, b in self.broker.fetch_balance().items()})

    def _apply_fill(self, result: OrderResult) -> None:
        pos = self.positions.get(result.symbol, FLAT)
        price = float(result.average or 0.0)
        if result.side == OrderSide.BUY:
            qty = pos.qty + result.filled
            entry = (pos.qty * pos.entry_price + result.filled * price) / qty if qty > 0 else 0.0
            new = Position(qty=qty, entry_price=entry)
        else:
            qty = max(pos.qty - result.filled, 0.0)
            new = Position(qty=qty, entry_price=pos.entry_price if qty > 1e-12 else 0.0)
            if qty <= 1e-12:
                new = FLAT
        self.positions[result.symbol] = new
        self.journal.set_position(result.symbol, new, result.ts)

    def _reject(self, intent: Intent, rejection: Rejection) -> OrderResult | None:
        self.metrics.rejection(rejection.reason.value)
        self.counters["risk_rejected"] += 1
        log.warning("risk limit refused %s %s: %s", intent.kind.value, intent.symbol, rejection.message,
                    extra={"fields": {"lane": intent.lane.value, "reason": rejection.reason.value}})
        self._finish(intent, f"risk_{rejection.reason.value}", rejection.message)
        return None

    def _finish(self, intent: Intent, result: str, reason: str) -> None:
        counter = {"blocked_source": "blocked_source", "manual_blocked_disabled": "manual_blocked_disabled",
                   "kill_blocked": "kill_blocked"}.get(result)
        if counter:
            self.counters[counter] += 1
        self.metrics.intent(intent.lane.value, intent.source, result)
        self.journal.add_intent(intent.id, int(self.clock() * 1000), intent.source, intent.lane.value,
                                intent.symbol, intent.side.value, intent.kind.value, intent.amount, result, reason)

    # ---- flatten, resume, equity ---------------------------------------------------------------------------------

    def _flatten_if_needed(self) -> None:
        if self.kill_mode() != KillMode.FLATTEN or self.broker is None:
            self.telemetry.flat = not any(p.is_open for p in self.positions.values())
            return
        self.resume_pending()
        attempt = int(self.clock())  # one intent id per second: a failed close is retried on later ticks
        for symbol, pos in list(self.positions.items()):
            if not pos.is_open:
                continue
            if self.last_price(symbol) is None:
                continue
            intent = Intent(id=f"flatten:{symbol}:{attempt}", source="killswitch", lane=Lane.MAIN, symbol=symbol,
                            side=OrderSide.SELL, kind=IntentKind.EXIT, amount=pos.qty, reason="flatten")
            self._flatten_order(intent)
        self.telemetry.flat = not any(p.is_open for p in self.positions.values())
        if self.telemetry.flat:
            log.info("flatten: every position is closed; holding close-only")

    def _flatten_order(self, intent: Intent) -> None:
        """A reduce-only close that bypasses the source allowlist (the kill switch is the source) but not
        the exit-rate limit, so a flapping venue cannot turn a flatten into an order storm."""
        price = self.last_price(intent.symbol) or 0.0
        now = self.clock()
        rejection = self.risk.check(OrderKind.EXIT, intent.symbol, intent.amount * price, now)
        if rejection is not None:
            self._reject(intent, rejection)
            return
        assert self.broker is not None
        request = OrderRequest(symbol=intent.symbol, side=OrderSide.SELL, type=OrderType.MARKET,
                               amount=intent.amount, client_order_id=client_order_id(self.bot_uid, intent.id),
                               reduce_only=True)
        self.journal.order_pending(intent.id, int(now * 1000), request, self.mode.value)
        self.risk.record(OrderKind.EXIT, intent.symbol, intent.amount * price, now)
        try:
            result = self.broker.create_order(request)
        except ExchangeError as exc:
            log.warning("flatten order for %s failed, retrying on the next tick: %s", intent.symbol, exc)
            if isinstance(exc, NeedsHuman):
                self.journal.order_failed(request.client_order_id, str(exc))
            return
        self._on_result(result, intent)

    # ---- stopping -----------------------------------------------------------------------------------------------

    def begin_stop(self) -> None:
        """The runner was asked to stop: send no new entry from now on. Safe from any thread or a signal
        handler (one flag; exits and flatten orders still go)."""
        self.stopping = True

    def cancel_resting_entries(self, deadline: float, *, monotonic: Callable[[], float] = time.monotonic,
                               sleep: Callable[[float], None] = time.sleep) -> ShutdownCancels:
        """Cancel this bot's entry orders still resting on the venue, by ``deadline`` (``monotonic()``).

        Called once, after the last tick of a runner asked to stop. Only orders its journal last knew as
        pending or open can rest (every order is journaled before it is sent); with none, the venue is not
        asked at all. Their symbols' open orders are listed, ``intents.resting_entries`` picks this bot's
        entries, and each is canceled through the broker, with an equal share of the time left (the
        broker's own retries fit in it), within the cancel-rate and order-gap limits. Each cancel is
        journaled (the order's new state, and an intent row ``shutdown-cancel:<id>:<ms>``), logged and
        counted; whatever could not be canceled is named in an error. Never raises an ``ExchangeError``.
        """
        result = ShutdownCancels()
        broker = self.broker
        if broker is None:
            log.info("stopping in signals mode: no order to cancel", extra={"fields": {"lane": "main"}})
            return result
        unsettled = {o.client_order_id: o for o in self.journal.unsettled_orders()}
        own = {cid: o.reduce_only for cid, o in unsettled.items()}
        entries: list[OrderResult] = []
        for symbol in sorted({o.symbol for o in unsettled.values()}):
            broker.set_deadline(deadline)
            try:
                listed = broker.fetch_open_orders(symbol)
            except ExchangeError as exc:
                for o in unsettled.values():
                    if o.symbol == symbol and not o.reduce_only and o.side == OrderSide.BUY.value:
                        result.left_open[o.client_order_id] = f"the open orders of {symbol} could not be listed: {exc}"
                continue
            mine = resting_entries(listed, own)
            entries += mine
            kept = sum(1 for o in listed if own.get(o.client_order_id) is True)
            result.exits_kept += kept
            result.others += len(listed) - len(mine) - kept
        for i, order in enumerate(entries):
            left = deadline - monotonic()
            if left <= 0:
                result.left_open[order.client_order_id] = "no time left before the shutdown deadline"
                continue
            broker.set_deadline(monotonic() + left / (len(entries) - i))
            self._cancel_entry(broker, order, unsettled[order.client_order_id], result, deadline, monotonic, sleep)
        broker.set_deadline(None)
        for cid, why in result.left_open.items():
            self._journal_cancel(unsettled[cid], "left_open", why)
            self.metrics.shutdown_cancel("left_open")
            log.error("stopping: resting entry %s left open on the venue: %s", cid, why,
                      extra={"fields": {"lane": "main", "client_order_id": cid, "result": "left_open"}})
        fields = {"lane": "main", "canceled": len(result.canceled), "gone": len(result.gone),
                  "left_open": sorted(result.left_open), "exits_kept": result.exits_kept, "others": result.others}
        if result.left_open:
            log.error("stopping: %d resting entry orders of this bot left open on the venue (%s); canceled %d",
                      len(result.left_open), ", ".join(sorted(result.left_open)), len(result.canceled),
                      extra={"fields": fields})
        else:
            log.info("stopping: canceled %d resting entry orders, %d no longer open; kept %d resting exits",
                     len(result.canceled), len(result.gone), result.exits_kept, extra={"fields": fields})
        return result

    def _cancel_entry(self, broker: Broker, order: OrderResult, journaled: UnsettledOrder, result: ShutdownCancels,
                      deadline: float, monotonic: Callable[[], float], sleep: Callable[[float], None]) -> None:
        cid = order.client_order_id
        wait = self.risk.gap_wait(self.clock())
        if wait > 0:
            if monotonic() + wait >= deadline:
                result.left_open[cid] = f"risk.minOrderGapMs asks for {wait:.1f} s more than the shutdown has left"
                return
            sleep(wait)
        rejection = self.risk.check(OrderKind.CANCEL, order.symbol, 0.0, self.clock())
        if rejection is not None:
            self.metrics.rejection(rejection.reason.value)
            result.left_open[cid] = f"refused by a risk limit: {rejection.message}"
            return
        self.risk.record(OrderKind.CANCEL, order.symbol, 0.0, self.clock())
        try:
            canceled = broker.cancel_order(order.symbol, order.id)
        except OrderNotFound:
            # Filled or canceled since it was listed: record what it has become.
            try:
                found = broker.fetch_order_by_client_id(order.symbol, cid)
            except ExchangeError as exc:
                result.left_open[cid] = f"the venue did not find it to cancel, and could not say what it became: {exc}"
                return
            if found is None or found.status is OrderStatus.OPEN:
                result.left_open[cid] = "the venue refused the cancel of an order it still lists as open"
                return
            self._on_result(found, None)
            result.gone.append(cid)
            self._journal_cancel(journaled, "gone", f"no longer open: {found.status.value}")
            self.metrics.shutdown_cancel("gone")
            log.info("stopping: resting entry %s was %s before the cancel reached the venue", cid,
                     found.status.value, extra={"fields": {"lane": "main", "client_order_id": cid,
                                                           "symbol": order.symbol, "result": "gone",
                                                           "status": found.status.value}})
            return
        except ExchangeError as exc:
            result.left_open[cid] = str(exc)
            return
        self._on_result(canceled, None)
        result.canceled.append(cid)
        self._journal_cancel(journaled, "canceled", "the runner was asked to stop")
        self.metrics.shutdown_cancel("canceled")
        log.info("stopping: canceled resting entry %s: %s %s %g", cid, order.side.value, order.symbol,
                 order.amount - order.filled,
                 extra={"fields": {"lane": "main", "client_order_id": cid, "venue_order_id": order.id,
                                   "symbol": order.symbol, "mode": self.mode.value, "result": "canceled"}})

    def _journal_cancel(self, order: UnsettledOrder, verdict: str, reason: str) -> None:
        """One intent row per shutdown cancel, beside the order's own row (which holds its new state)."""
        now = int(self.clock() * 1000)
        self.journal.add_intent(f"shutdown-cancel:{order.client_order_id}:{now}", now, "shutdown", Lane.MAIN.value,
                                order.symbol, order.side, "cancel", order.amount, verdict, reason[:500])

    def resume_pending(self) -> int:
        """After a restart: settle every order journaled as pending by asking the venue first."""
        if self.broker is None:
            return 0
        settled = 0
        for pending in self.journal.pending_orders():
            try:
                found = self.broker.fetch_order_by_client_id(pending.symbol, pending.client_order_id)
            except ExchangeError as exc:
                log.warning("could not look up pending order %s yet: %s", pending.client_order_id, exc)
                continue
            if found is None:
                request = OrderRequest(symbol=pending.symbol, side=OrderSide(pending.side),
                                       type=OrderType(pending.type), amount=pending.amount,
                                       client_order_id=pending.client_order_id, reduce_only=pending.reduce_only)
                try:
                    found = self.broker.create_order(request)
                except ExchangeError as exc:
                    log.warning("re-sending pending order %s failed: %s", pending.client_order_id, exc)
                    continue
                log.info("pending order %s was never placed; sent it now", pending.client_order_id)
            else:
                log.info("pending order %s was placed before the restart; recorded it, not re-sent",
                         pending.client_order_id)
            self._on_result(found, None)
            self.journal.add_intent(pending.intent_id, int(self.clock() * 1000), "resume", "main", pending.symbol,
                                    pending.side, "resume", pending.amount, "executed", "settled after restart")
            settled += 1
        return settled

    def _live_book(self) -> tuple[float, float]:
        """Cash and equity of the live book, derived from the bot's journaled live fills every time.

        Live equity is measured on the capital allotted to the bot (the ramp step's ``liveCapital``), not
        on the whole venue account: cash is that capital plus what every live fill moved (sells bring in
        price x amount less the fee, buys cost price x amount plus the fee; fees in the quote currency,
        see ``journal.order_fee``), and equity adds the base held at the last price. That is the realised
        PnL of the closed quantity plus the unrealised PnL of what is open, with nothing kept on the side
        that could drift from the fills, and a restarted runner derives the same number. Every live fill
        counts, at whatever ramp step it was made: a loss is not forgiven by a new step. A holding without
        a price yet (a symbol no longer traded) is valued at its position's entry price.
        """
        cash = self.config.capital.live_capital
        holdings: dict[str, float] = {}
        for fill in self.journal.fills(mode=TradingMode.LIVE.value):
            side = OrderSide(fill["side"])
            cash += fill_cash_flow(side, fill["price"], fill["amount"], fill["fee"])
            held = holdings.get(fill["symbol"], 0.0)
            holdings[fill["symbol"]] = held + fill["amount"] if side == OrderSide.BUY else held - fill["amount"]
        prices = {s: self.last_price(s) or self.positions.get(s, FLAT).entry_price for s in holdings}
        return cash, mark_to_market(cash, holdings, prices)

    def _equity_now(self) -> float:
        if self.mode == TradingMode.LIVE:
            return self._live_book()[1]
        if isinstance(self.broker, PaperBroker):
            return self.broker.equity(self.config.capital.quote_currency)
        return self.config.capital.paper_balance

    def _update_equity(self) -> None:
        equity = self._equity_now()
        start = self.config.capital.paper_balance if self.mode != TradingMode.LIVE else self.config.capital.live_capital
        breached = self.risk.observe_equity(equity)
        self.journal.put("equity_peak", self.risk.equity_peak)
        t = self.telemetry
        t.equity, t.pnl, t.drawdown_pct = equity, equity - start, self.risk.drawdown_pct
        t.open_positions = sum(1 for p in self.positions.values() if p.is_open)
        t.counters = dict(self.counters)
        self.metrics.equity.set(equity)
        self.metrics.pnl.set(t.pnl)
        self.metrics.drawdown.set(self.risk.drawdown_pct / 100.0)
        self.metrics.max_drawdown.set(self.config.risk.max_drawdown_pct / 100.0)
        self.metrics.open_positions.set(t.open_positions)
        if breached and self.kill.bot_trip == KillMode.OFF:
            self._trip(KillMode.HALT_ALL, f"drawdown {self.risk.drawdown_pct:.2f} % reached risk.maxDrawdownPct "
                                          f"{self.config.risk.max_drawdown_pct:g}")
