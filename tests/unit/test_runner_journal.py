"""The runner's SQLite journal: write-ahead orders, idempotent intents and fills, bounded retention."""

from __future__ import annotations

import pathlib

from tradewarden.api.market import Candle, OrderRequest, OrderResult, OrderSide, OrderStatus, OrderType, Position
from tradewarden.runner.journal import Journal


def order(cid: str, status: OrderStatus = OrderStatus.CLOSED, ts: int = 5_000) -> tuple[OrderRequest, OrderResult]:
    req = OrderRequest(symbol="BTC/USDT", side=OrderSide.BUY, type=OrderType.MARKET, amount=0.1, client_order_id=cid)
    res = OrderResult(id="v1", client_order_id=cid, symbol="BTC/USDT", side=OrderSide.BUY, type=OrderType.MARKET,
                      status=status, amount=0.1, filled=0.1, average=100.0, ts=ts)
    return req, res


def test_wal_mode_and_reopen_keeps_everything(tmp_path: pathlib.Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    assert j._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    j.put("mode_step", {"base": "primary", "mode": "fallback"})
    j.set_position("BTC/USDT", Position(0.5, 100.0), 1)
    j.close()
    again = Journal(tmp_path / "j.sqlite")
    assert again.get("mode_step") == {"base": "primary", "mode": "fallback"}
    assert again.positions() == {"BTC/USDT": Position(0.5, 100.0)}


def test_pending_then_result_records_one_fill_even_when_repeated(tmp_path: pathlib.Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    req, res = order("c1")
    j.order_pending("intent-1", 1, req, "paper")
    assert [p.client_order_id for p in j.pending_orders()] == ["c1"]
    j.order_result(res, "paper")
    j.order_result(res, "paper")  # a resumed runner may record the same result again
    assert j.pending_orders() == []
    assert len(j.fills()) == 1


def test_intents_are_recorded_once(tmp_path: pathlib.Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    assert j.add_intent("i", 1, "strategy", "main", "BTC/USDT", "buy", "entry", 0.1, "executed", "")
    assert not j.add_intent("i", 2, "strategy", "main", "BTC/USDT", "buy", "entry", 0.1, "executed", "")
    assert j.intent_done("i")


def test_retention_drops_old_market_data_but_keeps_the_money_record(tmp_path: pathlib.Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    j.add_candles("BTC/USDT", "1m", [Candle(t, 1, 1, 1, 1, 1) for t in (1_000, 2_000, 9_000)])
    j.add_signal(1_000, "BTC/USDT", "enter_long", "x", 0.9, "h", "primary")
    j.add_equity(1_000, 10.0, 0.0, 0.0)
    j.add_equity(9_000, 11.0, 1.0, 0.0)
    req, res = order("old", ts=1_000)
    j.order_pending("i-old", 1_000, req, "paper")
    j.order_result(res, "paper")
    removed = j.prune(5_000)
    assert removed == 4  # two candles, one signal, one equity sample
    assert [c.ts for c in j.candles("BTC/USDT", "1m")] == [9_000]
    assert j.signals() == []
    assert len(j.fills()) == 1
    assert len(j.orders()) == 1
    assert j.equity_before(10_000) == 11.0
