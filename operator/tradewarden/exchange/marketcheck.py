"""The promotion gate's own look at the market: do an export's bars match the venue's?

The runner's export is otherwise the gate's only source of market data, so a forged export (synthetic
bars on which the strategy wins, with decisions and fills made to match) would replay cleanly. Before a
replay, the operator runs ``python -m tradewarden.exchange.marketcheck`` as a separate process (the
controller never imports ccxt; this is the one door to the exchange), with the bot's venue as
``--exchange '{"id": ..., "sandbox": ..., "apiUrl": ...}'`` and the export (the ConfigMap's gzip+base64
form) on stdin. It fetches the same bars from the venue's public market data, no credentials, and
prints one JSON :class:`~tradewarden.api.evidence.MarketCheck` on stdout: how many bars it compared,
how many differ (a bar the venue does not have counts as different), the first few differences in
words, or the error that kept it from checking (the gate then fails closed).

Bars are compared as closed bars: open, high, low, close and volume within a relative 1e-9 (the
runner recorded them from the same venue through the same client, so they are equal unless changed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable, Sequence

from tradewarden.api.evidence import EvidenceExport, MarketCheck
from tradewarden.api.market import Candle
from tradewarden.exchange.client import ExchangeClient
from tradewarden.exchange.errors import ExchangeError

#: Most differences named in words (the count is always complete).
MAX_NAMED = 5
#: Bars per request: Binance serves at most 1000 klines at once.
PAGE = 1000
FIELDS = ("open", "high", "low", "close", "volume")


def _stamp(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%MZ")


def _differs(a: float, b: float) -> bool:
    return abs(a - b) > 1e-9 * max(1.0, abs(a), abs(b))


def venue_bars(client: ExchangeClient, symbol: str, timeframe: str, first: int, last: int) -> dict[int, Candle]:
    """The venue's closed bars of ``symbol`` from ``first`` to ``last`` (open times, ms), by open time."""
    out: dict[int, Candle] = {}
    since = first
    while since <= last:
        page = client.fetch_ohlcv(symbol, timeframe, since=since, limit=PAGE)
        if not page:
            break
        for candle in page:
            out[candle.ts] = candle
        if page[-1].ts < since:
            break
        since = page[-1].ts + 1
    return out


Fetch = Callable[[str, str, int, int], dict[int, Candle]]


def compare(export: EvidenceExport, fetch: Fetch) -> MarketCheck:
    """Compare every bar of ``export`` with ``fetch(symbol, timeframe, first, last)``'s bars."""
    result = MarketCheck()
    for symbol, rows in sorted(export.candles.items()):
        if not rows:
            continue
        times = [int(r[0]) for r in rows]
        venue = fetch(symbol, export.timeframe, min(times), max(times))
        for row in rows:
            result.checked += 1
            t = int(row[0])
            theirs = venue.get(t)
            problem = ""
            if theirs is None:
                problem = f"{symbol} {_stamp(t)}: no such closed bar at the venue"
            else:
                for name, ours in zip(FIELDS, row[1:6], strict=False):
                    if _differs(float(ours), float(getattr(theirs, name))):
                        problem = (f"{symbol} {_stamp(t)}: {name} {float(ours):g} in the export, "
                                   f"{float(getattr(theirs, name)):g} at the venue")
                        break
            if problem:
                result.mismatches += 1
                if len(result.first) < MAX_NAMED:
                    result.first.append(problem)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tradewarden.exchange.marketcheck",
                                     description="Compare an export's bars (stdin) with the venue's.")
    parser.add_argument("--exchange", required=True, help='{"id": ..., "sandbox": ..., "apiUrl": ...}')
    args = parser.parse_args(argv)
    try:
        venue = json.loads(args.exchange)
        export = EvidenceExport.decode(sys.stdin.read().strip())
    except (ValueError, OSError) as exc:
        print(MarketCheck(error=f"unreadable input: {type(exc).__name__}").model_dump_json())
        return 0
    try:
        with ExchangeClient(str(venue.get("id", "")), sandbox=bool(venue.get("sandbox", False)),
                            api_url=venue.get("apiUrl") or None) as client:
            result = compare(export, lambda s, tf, a, b: venue_bars(client, s, tf, a, b))
    except ExchangeError as exc:
        result = MarketCheck(error=f"the venue's market data could not be read: {exc}")
    print(result.model_dump_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
