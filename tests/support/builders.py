"""Builders for test objects: ``make_runtime(...)`` and ``candles(...)``, in the manner of ``make_bot(name, *mods)``."""

from __future__ import annotations

import itertools
import math
import os
from typing import Any

from tradewarden.api.market import Candle
from tradewarden.api.runtime import RuntimeConfig, RuntimeStrategy, compute_config_hash, compute_gate_hash
from tradewarden.api.tradingbot import ExchangeSpec, RiskLimits
from tradewarden.controller.keys import GateSigner

#: The operator's key in unit tests: live configs made here are signed with it, as the operator signs.
#: Each pytest process has its own key, published (support/runner.py) in a namespace of its own: the
#: workers of one run share a cluster, and one worker's key must not replace another's.
TEST_SIGNER = GateSigner.generate(f"tw-test-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}")
_ISSUED = itertools.count(1_800_000_000_000)


def make_runtime(namespace: str = "ns", bot: str = "bot", *, strategy: str = "momentum",
                 instruments: tuple[str, ...] = ("BTC/USDT",), timeframe: str = "1m",
                 params: dict[str, Any] | None = None, mode: str = "paper", risk: dict[str, Any] | None = None,
                 api_url: str | None = None, live_capital: float = 0.0, paper_balance: float = 10000.0,
                 **fields: Any) -> RuntimeConfig:
    """A runtime config as the operator would write it; live mode gets a valid gate hash and is signed
    with :data:`TEST_SIGNER` (``signed=False`` leaves it unsigned, ``signed=True`` signs a paper one)."""
    strat = RuntimeStrategy(key=strategy, instruments=list(instruments), timeframe=timeframe,
                            params=params or {}, **fields.pop("strategy_fields", {}))
    limits = RiskLimits.model_validate(risk or {})
    exchange = ExchangeSpec(id="binance", sandbox=False, api_url=api_url,
                            credentials_secret_ref=fields.pop("credentials", None))
    config_hash = compute_config_hash(strat, limits, exchange)
    gate = {}
    if mode == "live":
        gate = {"gate_replay_hash": "r1", "gate_consensus_hash": "c1",
                "gate_hash": compute_gate_hash(config_hash, "r1", "c1")}
    fields.setdefault("bot_uid", f"uid-{namespace}-{bot}")
    signed = bool(fields.pop("signed", mode == "live"))
    runtime = RuntimeConfig(namespace=namespace, bot=bot, config_hash=config_hash,
                            requested_mode=mode, effective_mode=mode, strategy=strat, exchange=exchange, risk=limits,
                            capital={"paper_balance": paper_balance, "live_capital": live_capital}, **gate, **fields)
    return TEST_SIGNER.sign(runtime, next(_ISSUED)) if signed else runtime


def trending_candles(n: int, start: float = 100.0, step: float = 0.2, t0: int = 1_700_000_000_000,
                     span_ms: int = 60_000, wobble: float = 0.5) -> list[Candle]:
    """A rising series with a little noise: a crossover strategy enters on it."""
    out = []
    price = start
    for i in range(n):
        drift = step if i > n // 3 else -step
        price = max(1.0, price + drift + wobble * math.sin(i / 3.0))
        out.append(Candle(ts=t0 + i * span_ms, open=price - 0.1, high=price + 0.5, low=price - 0.5, close=price,
                          volume=10.0))
    return out
