"""A local exchange emulator speaking Binance's spot REST API v3, for tests and the demo.

Integration tests start it in-process (``with Emulator(seed=42) as emu: ...``) and drive the real
``ccxt.binance`` client against it through ``tradewarden.exchange.ExchangeClient(api_url=emu.url)``;
the demo runs ``python -m tradewarden.emulator --port 0 --seed 42 --bar-seconds 1``.

Markets are deterministic synthetic series (same seed, same klines, byte for byte) for ``BTC/USDT``,
``ETH/USDT``, ``PAXG/USDT`` (gold, as Binance lists it) and ``EUR/USDT``. See ``serving`` for the
endpoints, ``matching`` for the fill model and ``faults`` for failure injection. It only ever binds
a loopback address.
"""

from __future__ import annotations

from tradewarden.emulator.faults import Fault, FaultKind
from tradewarden.emulator.series import DEFAULT_MARKETS, MarketSpec
from tradewarden.emulator.serving import DEFAULT_START_MS, Emulator

__all__ = ["DEFAULT_MARKETS", "DEFAULT_START_MS", "Emulator", "Fault", "FaultKind", "MarketSpec"]
