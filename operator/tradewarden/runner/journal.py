"""The runner's journal: SQLite in WAL mode, one file per bot (DESIGN.md invariant 6, "nothing is lost").

Candles, signals, intents, orders, fills, positions, equity and small state (kv) are written as they
happen, so a restarted runner resumes where it stopped: an order journaled as ``pending`` is looked up
at the venue by its client order id before anything is re-sent, an intent already done is not done
again, and the strategy mode step-down and the equity peak survive. Used by the engine only; replay
reads the exported window.
"""

from __future__ import annotations

import json
import logging
import pathlib
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tradewarden.api.market import Candle, OrderRequest, OrderResult, Position
from tradewarden.exchange.broker import fee_in_quote

log = logging.getLogger("tradewarden.runner.journal")

SCHEMA = """
CREATE TABLE IF NOT EXISTS candles (
    symbol TEXT NOT NULL, interval TEXT NOT NULL, t INTEGER NOT NULL,
    o REAL NOT NULL, h REAL NOT NULL, l REAL NOT NULL, c REAL NOT NULL, v REAL NOT NULL,
    PRIMARY KEY (symbol, interval, t)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS signals (
    id INTEGER PRIMARY KEY, t INTEGER NOT NULL, symbol TEXT NOT NULL, action TEXT NOT NULL,
    reason TEXT NOT NULL, stop REAL, config_hash TEXT NOT NULL, strategy_mode TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS intents (
    id TEXT PRIMARY KEY, t INTEGER NOT NULL, source TEXT NOT NULL, lane TEXT NOT NULL, symbol TEXT NOT NULL,
    side TEXT NOT NULL, kind TEXT NOT NULL, amount REAL NOT NULL, verdict TEXT NOT NULL, reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    client_order_id TEXT PRIMARY KEY, intent_id TEXT NOT NULL, t INTEGER NOT NULL, symbol TEXT NOT NULL,
    side TEXT NOT NULL, type TEXT NOT NULL, amount REAL NOT NULL, reduce_only INTEGER NOT NULL,
    mode TEXT NOT NULL, status TEXT NOT NULL, venue_id TEXT, filled REAL NOT NULL DEFAULT 0,
    average REAL, error TEXT
);
-- price is the order's average fill price; fee is in the quote currency (see order_fee).
CREATE TABLE IF NOT EXISTS fills (
    id INTEGER PRIMARY KEY, client_order_id TEXT NOT NULL, t INTEGER NOT NULL, symbol TEXT NOT NULL,
    side TEXT NOT NULL, price REAL NOT NULL, amount REAL NOT NULL, fee REAL NOT NULL, mode TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS positions (
    symbol TEXT PRIMARY KEY, qty REAL NOT NULL, entry_price REAL NOT NULL, t INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS equity (
    t INTEGER PRIMARY KEY, equity REAL NOT NULL, pnl REAL NOT NULL, drawdown_pct REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS signals_t ON signals (t);
CREATE INDEX IF NOT EXISTS fills_t ON fills (t);
CREATE INDEX IF NOT EXISTS orders_status ON orders (status);
"""


def order_fee(result: OrderResult) -> float:
    """The fees of ``result``'s fills in the quote currency, as the journal records them.

    A fee the venue charged in the base currency is converted at its fill's price (and logged, so the
    conversion is visible); a fee in a third asset (such as BNB) has no price here: it is logged as an
    error and not counted, because the bot's book is kept in the quote currency only.
    """
    total = 0.0
    for fill in result.fills:
        fee = fee_in_quote(fill, result.symbol)
        if fee is None:
            log.error("fee of %g %s on %s %s is in neither currency of the symbol: not counted in the book",
                      fill.fee, fill.fee_currency, result.symbol, result.client_order_id,
                      extra={"fields": {"client_order_id": result.client_order_id, "fee_currency": fill.fee_currency}})
            continue
        if fee != fill.fee:
            log.info("fee of %g %s on %s %s converted at the fill price %g: %g in quote currency", fill.fee,
                     fill.fee_currency, result.symbol, result.client_order_id, fill.price, fee,
                     extra={"fields": {"client_order_id": result.client_order_id, "fee_currency": fill.fee_currency}})
        total += fee
    return total


@dataclass(frozen=True, slots=True)
class PendingOrder:
    client_order_id: str
    intent_id: str
    symbol: str
    side: str
    type: str
    amount: float
    reduce_only: bool
    mode: str


@dataclass(frozen=True, slots=True)
class UnsettledOrder:
    """An order the journal last knew as ``pending`` or ``open``: it may rest on the venue."""

    client_order_id: str
    symbol: str
    side: str
    amount: float
    reduce_only: bool
    status: str


class Journal:
    """A thread-safe handle on the bot's journal file."""

    def __init__(self, path: pathlib.Path | str) -> None:
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash; only an OS crash can lose the last transaction.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ---- kv -------------------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO kv (key, value) VALUES (?, ?) "
                       "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, json.dumps(value)))

    # ---- market data and decisions ---------------------------------------------------------------

    def add_candles(self, symbol: str, interval: str, candles: list[Candle]) -> None:
        with self._tx() as db:
            db.executemany(
                "INSERT OR IGNORE INTO candles (symbol, interval, t, o, h, l, c, v) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(symbol, interval, c.ts, c.open, c.high, c.low, c.close, c.volume) for c in candles])

    def candles(self, symbol: str, interval: str, start: int = 0, end: int | None = None) -> list[Candle]:
        with self._lock:
            rows = self._db.execute(
                "SELECT t, o, h, l, c, v FROM candles WHERE symbol = ? AND interval = ? AND t >= ? AND t < ? "
                "ORDER BY t", (symbol, interval, start, end if end is not None else 2**62)).fetchall()
        return [Candle(*row) for row in rows]

    def last_candle_ts(self, symbol: str, interval: str) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT MAX(t) FROM candles WHERE symbol = ? AND interval = ?",
                                   (symbol, interval)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def add_signal(self, t: int, symbol: str, action: str, reason: str, stop: float | None, config_hash: str,
                   strategy_mode: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO signals (t, symbol, action, reason, stop, config_hash, strategy_mode) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", (t, symbol, action, reason, stop, config_hash, strategy_mode))

    def signals(self, start: int = 0, end: int | None = None) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._db.execute("SELECT t, symbol, action, reason, stop, config_hash, strategy_mode FROM signals "
                                   "WHERE t >= ? AND t < ? ORDER BY t, id", (start, end if end is not None else 2**62))
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    # ---- intents and orders ------------------------------------------------------------------------

    def intent_done(self, intent_id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM intents WHERE id = ?", (intent_id,)).fetchone() is not None

    def add_intent(self, intent_id: str, t: int, source: str, lane: str, symbol: str, side: str, kind: str,
                   amount: float, verdict: str, reason: str) -> bool:
        """Record an intent's outcome once; False when the id was already recorded."""
        with self._tx() as db:
            cur = db.execute("INSERT OR IGNORE INTO intents (id, t, source, lane, symbol, side, kind, amount, verdict, "
                             "reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (intent_id, t, source, lane, symbol, side, kind, amount, verdict, reason))
            return cur.rowcount == 1

    def order_pending(self, intent_id: str, t: int, request: OrderRequest, mode: str) -> None:
        """Written *before* the order is sent: the write-ahead half of exactly-once."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO orders (client_order_id, intent_id, t, symbol, side, type, amount, "
                       "reduce_only, mode, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending')",
                       (request.client_order_id, intent_id, t, request.symbol, request.side.value, request.type.value,
                        request.amount, int(request.reduce_only), mode))

    def order_result(self, result: OrderResult, mode: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE orders SET status = ?, venue_id = ?, filled = ?, average = ? WHERE client_order_id = ?",
                       (result.status.value, result.id, result.filled, result.average, result.client_order_id))
            if result.filled > 0 and result.average:
                fee = order_fee(result)
                db.execute("INSERT INTO fills (client_order_id, t, symbol, side, price, amount, fee, mode) "
                           "SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS "
                           "(SELECT 1 FROM fills WHERE client_order_id = ?)",
                           (result.client_order_id, result.ts, result.symbol, result.side.value, result.average,
                            result.filled, fee, mode, result.client_order_id))

    def order_failed(self, client_order_id: str, error: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE orders SET status = 'failed', error = ? WHERE client_order_id = ?",
                       (error[:500], client_order_id))

    def pending_orders(self) -> list[PendingOrder]:
        with self._lock:
            rows = self._db.execute("SELECT client_order_id, intent_id, symbol, side, type, amount, reduce_only, mode "
                                    "FROM orders WHERE status = 'pending' ORDER BY t").fetchall()
        return [PendingOrder(r[0], r[1], r[2], r[3], r[4], float(r[5]), bool(r[6]), r[7]) for r in rows]

    def unsettled_orders(self) -> list[UnsettledOrder]:
        """Orders last known as ``pending`` or ``open``, oldest first: the only ones of this bot that may
        rest on the venue (every order is journaled before it is sent)."""
        with self._lock:
            rows = self._db.execute("SELECT client_order_id, symbol, side, amount, reduce_only, status FROM orders "
                                    "WHERE status IN ('pending', 'open') ORDER BY t, client_order_id").fetchall()
        return [UnsettledOrder(r[0], r[1], r[2], float(r[3]), bool(r[4]), r[5]) for r in rows]

    def orders(self) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._db.execute("SELECT * FROM orders ORDER BY t, client_order_id")
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def fills(self, start: int = 0, end: int | None = None, mode: str | None = None) -> list[dict[str, Any]]:
        """Fills from ``start`` to ``end`` (ms), oldest first; only those of one trading mode's book with ``mode``."""
        with self._lock:
            cur = self._db.execute("SELECT client_order_id, t, symbol, side, price, amount, fee, mode FROM fills "
                                   "WHERE t >= ? AND t < ? AND (? IS NULL OR mode = ?) ORDER BY t, id",
                                   (start, end if end is not None else 2**62, mode, mode))
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    # ---- positions and equity -------------------------------------------------------------------

    def set_position(self, symbol: str, position: Position, t: int) -> None:
        with self._tx() as db:
            if position.qty <= 0:
                db.execute("DELETE FROM positions WHERE symbol = ?", (symbol,))
            else:
                db.execute("INSERT INTO positions (symbol, qty, entry_price, t) VALUES (?, ?, ?, ?) "
                           "ON CONFLICT(symbol) DO UPDATE SET qty = excluded.qty, entry_price = excluded.entry_price, "
                           "t = excluded.t", (symbol, position.qty, position.entry_price, t))

    def replace_positions(self, positions: dict[str, Position], t: int) -> None:
        """Replace the whole book in one transaction (a change of trading mode)."""
        with self._tx() as db:
            db.execute("DELETE FROM positions")
            db.executemany("INSERT INTO positions (symbol, qty, entry_price, t) VALUES (?, ?, ?, ?)",
                           [(s, p.qty, p.entry_price, t) for s, p in positions.items() if p.qty > 0])

    def positions(self) -> dict[str, Position]:
        with self._lock:
            rows = self._db.execute("SELECT symbol, qty, entry_price FROM positions").fetchall()
        return {r[0]: Position(qty=float(r[1]), entry_price=float(r[2])) for r in rows}

    def add_equity(self, t: int, equity: float, pnl: float, drawdown_pct: float) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO equity (t, equity, pnl, drawdown_pct) VALUES (?, ?, ?, ?)",
                       (t, equity, pnl, drawdown_pct))

    def equity_before(self, t: int) -> float | None:
        """The last equity sample taken before ``t`` (ms), if any."""
        with self._lock:
            row = self._db.execute("SELECT equity FROM equity WHERE t < ? ORDER BY t DESC LIMIT 1", (t,)).fetchone()
        return None if row is None else float(row[0])

    # ---- retention ------------------------------------------------------------------------------

    def prune(self, older_than_ms: int, keep_orders: bool = True) -> int:
        """Bounded retention: drop market data, signals and equity samples older than the cutoff.

        Orders, fills and intents are kept by default: they are the record of what the bot did with money.
        Live fills are never dropped: the live book's equity is derived from them (``Engine._live_book``).
        """
        removed = 0
        with self._tx() as db:
            for table in ("candles", "signals", "equity"):
                removed += db.execute(f"DELETE FROM {table} WHERE t < ?", (older_than_ms,)).rowcount  # noqa: S608
            if not keep_orders:
                removed += db.execute("DELETE FROM intents WHERE t < ?", (older_than_ms,)).rowcount
                removed += db.execute("DELETE FROM fills WHERE t < ? AND mode != 'live'", (older_than_ms,)).rowcount
        return removed
