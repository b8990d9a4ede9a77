"""A runner asked to stop cancels its own resting entry orders before it exits, within its bound.

Everything is real: the exchange emulator runs as a process of its own (``python -m tradewarden.emulator``,
driven through its admin HTTP API), the runner is a ``tradewarden runner`` process with its own
ServiceAccount token against the real API server, and the venue's book is read through ccxt
(``ExchangeClient``). The runner sends market orders only, and the emulator fills those at once; its
``rest`` fault makes the venue hold an order unfilled, which is how an entry comes to rest on the book.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from support.builders import make_runtime
from support.kube import Cluster
from support.runner import BotEnv, RunnerProcess, secret_manifest, wait
from tradewarden.api.market import OrderRequest, OrderSide, OrderType
from tradewarden.api.runtime import RuntimeConfig
from tradewarden.api.tradingbot import TradingBot
from tradewarden.controller import builders
from tradewarden.exchange import ExchangeClient
from tradewarden.runner.intents import client_order_id

SYM = "BTC/USDT"
KEY = "shutdown-test-key-0123456789"
SECRET = "shutdown-test-secret-0123456789"
#: The runner's default bound on its whole shutdown ($TRADEWARDEN_SHUTDOWN_SECONDS).
BOUND = 20.0

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class EmulatorProcess:
    """The exchange emulator in a process of its own, its clock moving only when told to."""

    def __init__(self, log: pathlib.Path) -> None:
        env = {**os.environ, "TRADEWARDEN_EMULATOR_API_KEY": KEY, "TRADEWARDEN_EMULATOR_SECRET": SECRET}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tradewarden.emulator", "--port", "0", "--seed", "7", "--bar-seconds", "0",
             "--balance", "USDT=100000"],
            stdout=subprocess.PIPE, stderr=log.open("ab"), text=True, env=env)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), self.url

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)  # noqa: S310 - loopback
        with _OPENER.open(request, timeout=5) as response:
            return json.loads(response.read())

    def fault(self, kind: str, **fields: Any) -> None:
        self.admin("POST", "/emulator/faults", {"kind": kind, **fields})

    def order_status(self, client_id: str) -> str:
        found = [o["status"] for o in self.admin("GET", "/emulator/state")["orders"] if o["clientOrderId"] == client_id]
        assert len(found) == 1, (client_id, found)
        return str(found[0])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def venue(tmp_path: pathlib.Path) -> Iterator[EmulatorProcess]:
    emu = EmulatorProcess(tmp_path / "emulator.log")
    yield emu
    emu.stop()


@pytest.fixture
def account(venue: EmulatorProcess) -> Iterator[ExchangeClient]:
    """The same venue account, read (and written to, as another trader) through ccxt."""
    with ExchangeClient("binance", api_key=KEY, secret=SECRET, api_url=venue.url) as client:
        yield client


@pytest.fixture
def env(cluster: Cluster, namespace: str, tmp_path: pathlib.Path) -> Iterator[BotEnv]:
    bot = BotEnv(cluster, namespace, "bot", tmp_path / "bot", labels={"team": "alpha"})
    # A live bot reads its credentials Secret: its Role must name it.
    cluster.apply({"apiVersion": "tradewarden.io/v1alpha1", "kind": "TradingBot", "metadata": {"name": bot.name},
                   "spec": {"strategyConfigRef": "unused", "mode": "paper",
                            "exchange": {"id": "binance", "credentialsSecretRef": {"name": "venue-keys"}}}},
                  namespace=namespace)
    bot.bot = TradingBot.model_validate(cluster.get_json("tb", bot.name, "-n", namespace))
    cluster.apply(builders.build_role(bot.bot))
    cluster.apply(secret_manifest("venue-keys", {"apiKey": KEY, "secret": SECRET}), namespace=namespace)
    yield bot
    bot.close()


def live_runtime(env: BotEnv, venue: EmulatorProcess, intents: list[dict[str, Any]]) -> RuntimeConfig:
    lane = {"enabled_until": dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10), "intents": intents}
    return make_runtime(env.namespace, env.name, api_url=venue.url, labels={"team": "alpha"}, bot_uid=env.uid,
                        mode="live", live_capital=5000.0, credentials={"name": "venue-keys"}, manual_lane=lane)


def order_of(env: BotEnv, intent_id: str) -> tuple[str, str] | None:
    """(client order id, status) of the order the journal recorded for ``intent_id``."""
    rows = env.journal("SELECT client_order_id, status FROM orders WHERE intent_id = ?", intent_id)
    return (str(rows[0][0]), str(rows[0][1])) if rows else None


def status_of(env: BotEnv, intent_id: str) -> str:
    found = order_of(env, intent_id)
    return found[1] if found else ""


def client_id_of(env: BotEnv, intent_id: str) -> str:
    found = order_of(env, intent_id)
    assert found is not None, intent_id
    return found[0]


def stop_and_time(runner: RunnerProcess, timeout: float) -> tuple[int, float]:
    started = time.monotonic()
    runner.proc.send_signal(signal.SIGTERM)
    code = runner.proc.wait(timeout)
    return code, time.monotonic() - started


def foreign_resting_orders(account: ExchangeClient) -> set[str]:
    """Resting buys on the same account that are not this bot's: another bot's (same prefix) and a human's."""
    low = round(account.fetch_ticker(SYM).last * 0.5, 2)
    ids = {client_order_id("uid-of-another-bot", "manual:buy"), "human-order-1"}
    for cid in ids:
        account.create_order(OrderRequest(SYM, OrderSide.BUY, OrderType.LIMIT, 0.01, cid, price=low))
    return ids


def test_sigterm_cancels_the_resting_entry_and_keeps_the_exit(env: BotEnv, venue: EmulatorProcess,
                                                              account: ExchangeClient) -> None:
    buy = {"id": "buy-1", "symbol": SYM, "side": "buy", "amount": 0.01}
    env.write_runtime(live_runtime(env, venue, [buy]))
    runner = env.start()
    wait(lambda: status_of(env, "manual:buy-1") == "closed", timeout=60, what="the first buy filled", runner=runner)
    # From now on the venue holds the next two orders unfilled: an exit, then an entry, both rest.
    venue.fault("rest", count=2)
    exit_ = {"id": "exit-1", "symbol": SYM, "side": "sell", "amount": 0.004, "reduce_only": True}
    entry = {"id": "entry-2", "symbol": SYM, "side": "buy", "amount": 0.01}
    env.write_runtime(live_runtime(env, venue, [buy, exit_, entry]))
    wait(lambda: status_of(env, "manual:exit-1") == status_of(env, "manual:entry-2") == "open", timeout=30,
         what="an exit and an entry resting on the venue", runner=runner)
    entry_id, exit_id = client_id_of(env, "manual:entry-2"), client_id_of(env, "manual:exit-1")
    others = foreign_resting_orders(account)
    assert {o.client_order_id for o in account.fetch_open_orders(SYM)} == {entry_id, exit_id, *others}

    code, took = stop_and_time(runner, timeout=BOUND + 10)

    assert code == 0, runner.output()[-3000:]
    assert took < BOUND, took
    assert venue.order_status(entry_id) == "CANCELED"
    assert {o.client_order_id for o in account.fetch_open_orders(SYM)} == {exit_id, *others}
    assert order_of(env, "manual:entry-2") == (entry_id, "canceled")
    assert order_of(env, "manual:exit-1") == (exit_id, "open")
    assert env.journal("SELECT verdict FROM intents WHERE source = 'shutdown'") == [("canceled",)]
    lines = runner.lines()
    per_cancel = [ln for ln in lines if ln.get("result") == "canceled" and ln.get("client_order_id") == entry_id]
    assert per_cancel, "one structured line per cancel"
    (summary,) = [ln for ln in lines if "exits_kept" in ln]
    assert (summary["canceled"], summary["left_open"], summary["exits_kept"], summary["others"]) == (1, [], 1, 2)


def test_a_venue_that_refuses_cancels_cannot_hold_the_runner_past_its_bound(
        env: BotEnv, venue: EmulatorProcess, account: ExchangeClient) -> None:
    venue.fault("rest", count=1)
    env.write_runtime(live_runtime(env, venue, [{"id": "entry-1", "symbol": SYM, "side": "buy", "amount": 0.01}]))
    bound = 6.0
    runner = env.start(env={"TRADEWARDEN_SHUTDOWN_SECONDS": str(bound)})
    wait(lambda: status_of(env, "manual:entry-1") == "open", timeout=60, what="an entry resting on the venue")
    entry_id = client_id_of(env, "manual:entry-1")
    venue.fault("503", count=1000, path="/api/v3/order", method="DELETE")

    code, took = stop_and_time(runner, timeout=bound + 10)

    assert took < bound + 1.0, took
    assert code == 1, runner.output()[-3000:]
    assert venue.order_status(entry_id) == "NEW"
    assert venue.admin("GET", "/emulator/requests").get("DELETE /api/v3/order", 0) >= 2  # retried, briefly
    errors = [ln for ln in runner.lines() if ln.get("level") == "error"]
    assert any(ln.get("client_order_id") == entry_id and ln.get("result") == "left_open" for ln in errors), errors
    assert any(entry_id in ln.get("msg", "") and ln.get("left_open") == [entry_id] for ln in errors), errors
    assert env.journal("SELECT verdict FROM intents WHERE source = 'shutdown'") == [("left_open",)]
    assert order_of(env, "manual:entry-1") == (entry_id, "open")


def test_a_venue_that_hangs_mid_tick_cannot_hold_the_runner_past_its_bound(
        env: BotEnv, venue: EmulatorProcess) -> None:
    env.write_runtime(make_runtime(env.namespace, env.name, api_url=venue.url, labels={"team": "alpha"},
                                   bot_uid=env.uid, mode="paper"))
    bound = 5.0
    runner = env.start(env={"TRADEWARDEN_SHUTDOWN_SECONDS": str(bound)})
    wait(lambda: any("runner started" in ln.get("msg", "") for ln in runner.lines()), timeout=60,
         what="the runner ticking")
    # Every market data request now hangs for longer than the client waits (10 s) and the bound.
    before = venue.admin("GET", "/emulator/requests").get("GET /api/v3/klines", 0)
    venue.fault("slow", count=1000, path="/api/v3/klines", delay=30)
    wait(lambda: venue.admin("GET", "/emulator/requests").get("GET /api/v3/klines", 0) > before, timeout=10,
         what="a tick waiting on the venue")

    code, took = stop_and_time(runner, timeout=bound + 10)

    # What matters is the bound. Either the hung call is cut by the shutdown's deadline and the runner
    # ends on its own (0), or the watchdog ends it (1) and says so; which one depends on where the tick
    # was when SIGTERM came (seen both on a loaded machine).
    assert took < bound + 1.0, took
    assert code in (0, 1), runner.output()[-3000:]
    if code == 1:
        assert any("did not stop within" in ln.get("msg", "") for ln in runner.lines()), runner.output()[-3000:]
