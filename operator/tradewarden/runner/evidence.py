"""Export the runner's recorded evaluation window for replay (api.evidence.EvidenceExport).

Called by the main loop every ``TRADEWARDEN_EVIDENCE_SECONDS`` in paper and live mode. The export is
taken from the journal only (bars, decisions and strategy fills the runner actually recorded), bounded
in size, and written into the ``<bot>-evidence`` ConfigMap the operator created; the operator replays
it in a separate process. The runner never grades itself.
"""

from __future__ import annotations

import time

from tradewarden.api.evidence import (
    MAX_EXPORT_BARS,
    EvidenceExport,
    ExportedFill,
    ExportedPosition,
    ExportedSignal,
)
from tradewarden.api.strategyconfig import TIMEFRAME_SECONDS
from tradewarden.runner.engine import WARMUP_MARGIN, Engine


def _bar_of(intent_id: str) -> int | None:
    """The bar a strategy intent was decided on: ids are ``strategy:SYMBOL:TF:BAR_MS:ACTION``."""
    parts = intent_id.split(":")
    if len(parts) != 5 or parts[0] != "strategy":
        return None
    try:
        return int(parts[3])
    except ValueError:
        return None


def build_export(engine: Engine, now_ms: int | None = None) -> EvidenceExport | None:
    """The current window, or None when there is nothing to export yet (no bars recorded)."""
    cfg = engine.config
    timeframe, params, _, _ = engine._overlay()
    span = TIMEFRAME_SECONDS[timeframe] * 1000
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    latest = max((engine.journal.last_candle_ts(s, timeframe) or 0) for s in cfg.strategy.instruments)
    if latest <= 0:
        return None
    # The window ends at the last closed bar we recorded, minus the lag, so every bar in it is final.
    end = min(latest + span, now_ms) - cfg.evidence_lag_minutes * 60_000
    start = end - cfg.evidence_window_minutes * 60_000
    acting = engine.journal.get("acting_since") or {}
    if acting.get("config_hash") == cfg.config_hash:
        # Bars before the runner acted on this config were warm-up only: nothing to compare there.
        start = max(start, int(acting["t"]))
    if start >= end:
        return None
    warmup = max(s.warmup_bars for s in engine.strategies.values()) + WARMUP_MARGIN if engine.strategies else 0
    candles: dict[str, list[list[float]]] = {}
    for symbol in cfg.strategy.instruments:
        rows = engine.journal.candles(symbol, timeframe, start - warmup * span, end)
        rows = rows[-MAX_EXPORT_BARS:]
        candles[symbol] = [[c.ts, c.open, c.high, c.low, c.close, c.volume] for c in rows]
    signals = [ExportedSignal(t=s["t"], symbol=s["symbol"], action=s["action"], stop=s["stop"])
               for s in engine.journal.signals(start, end) if s["config_hash"] == cfg.config_hash]
    fills: list[ExportedFill] = []
    positions: dict[str, ExportedPosition] = {}
    orders = {o["client_order_id"]: o["intent_id"] for o in engine.journal.orders()}
    for f in engine.journal.fills():
        bar = _bar_of(orders.get(f["client_order_id"], ""))
        if f["t"] < start or (bar is not None and bar < start):
            pos = positions.setdefault(f["symbol"], ExportedPosition())
            if f["side"] == "buy":
                qty = pos.qty + f["amount"]
                pos.entry_price = (pos.qty * pos.entry_price + f["amount"] * f["price"]) / qty if qty else 0.0
                pos.qty = qty
            else:
                pos.qty = max(pos.qty - f["amount"], 0.0)
            continue
        if bar is not None and bar < end:
            fills.append(ExportedFill(t=bar, symbol=f["symbol"], side=f["side"], price=f["price"],
                                      amount=f["amount"], fee=f["fee"]))
    starting = engine.journal.equity_before(start) or cfg.capital.paper_balance
    strategy = cfg.strategy.model_copy(update={"params": params})
    return EvidenceExport(
        namespace=cfg.namespace, bot=cfg.bot, config_hash=cfg.config_hash, strategy=strategy, timeframe=timeframe,
        window_start=start, window_end=end, candles=candles, signals=signals, fills=fills,
        initial_positions={k: v for k, v in positions.items() if v.qty > 0}, starting_equity=starting,
        max_risk_per_trade_pct=cfg.risk.max_risk_per_trade_pct, mode=engine.mode.value, exported_at=now_ms)
