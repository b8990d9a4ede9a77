"""Command line entry of the exchange emulator: ``python -m tradewarden.emulator``.

Used by the demo and by tests that want the emulator in a separate process. The first line on stdout
is the bound base URL (``http://127.0.0.1:<port>``), so a caller can start it with ``--port 0`` and read
where it listens; everything else goes to stderr. It serves until interrupted (SIGINT or SIGTERM).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from decimal import Decimal, InvalidOperation
from types import FrameType

from tradewarden.emulator.serving import Emulator


def _balance(text: str) -> tuple[str, Decimal]:
    asset, sep, amount = text.partition("=")
    try:
        if not sep or not asset:
            raise InvalidOperation
        value = Decimal(amount)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(
            f"--balance wants ASSET=AMOUNT, such as USDT=10000 (got {text!r})"
        ) from None
    return asset.strip().upper(), value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tradewarden.emulator",
        description="A local exchange emulator speaking Binance spot REST API v3 (loopback, or a bridge of this "
                    "machine).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind: loopback, or a Linux bridge of "
                        "this machine such as the local cluster's pod bridge (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default 0)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the synthetic markets (default 42)")
    parser.add_argument(
        "--bar-seconds",
        type=float,
        default=1.0,
        help="real seconds per one-minute bar; 0: only POST /emulator/advance moves the market (default 1)",
    )
    parser.add_argument(
        "--history-bars", type=int, default=1000, help="closed bars before 'now' (default 1000)"
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("TRADEWARDEN_EMULATOR_API_KEY", "emulator-key"),
        help="API key the emulator accepts (env TRADEWARDEN_EMULATOR_API_KEY, default emulator-key)",
    )
    parser.add_argument(
        "--secret",
        default=os.environ.get("TRADEWARDEN_EMULATOR_SECRET", "emulator-secret"),
        help="API secret the emulator verifies signatures with (env TRADEWARDEN_EMULATOR_SECRET)",
    )
    parser.add_argument(
        "--balance",
        type=_balance,
        action="append",
        default=None,
        metavar="ASSET=AMOUNT",
        help="starting free balance; repeatable (default USDT=10000)",
    )
    parser.add_argument(
        "--fee-bps", type=Decimal, default=Decimal(10), help="fee in basis points (default 10)"
    )
    parser.add_argument(
        "--slippage-bps", type=Decimal, default=Decimal(1), help="market order slippage (default 1)"
    )
    parser.add_argument("--spread-bps", type=Decimal, default=Decimal(2), help="bid/ask spread (default 2)")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    try:
        emulator = Emulator(
            seed=args.seed,
            bar_seconds=args.bar_seconds if args.bar_seconds > 0 else None,
            history_bars=args.history_bars,
            balances=dict(args.balance) if args.balance else None,
            fee_rate=args.fee_bps / Decimal(10_000),
            slippage_bps=args.slippage_bps,
            spread_bps=args.spread_bps,
            api_key=args.api_key,
            secret=args.secret,
            host=args.host,
            port=args.port,
        )
    except ValueError as exc:
        print(f"tradewarden-emulator: {exc}", file=sys.stderr)
        return 2
    url = emulator.start()
    print(url, flush=True)
    markets = ", ".join(spec.symbol for spec in emulator.engine.settings.markets)
    clock = (
        f"one bar every {args.bar_seconds:g}s" if args.bar_seconds > 0 else "manual (POST /emulator/advance)"
    )
    print(
        f"tradewarden-emulator: serving {markets} at {url}; clock {clock}; api key {args.api_key!r}; "
        f"admin at {url}/emulator/state",
        file=sys.stderr,
        flush=True,
    )

    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not done.wait(0.5):
            pass
    finally:
        emulator.stop()
        print("tradewarden-emulator: stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
