"""Baseline runner of bench_killswitch_latency.py: the kill mode in a ConfigMap mounted as a volume.

What a runner that takes its kill mode from a file does: read the file every second and act when the
value changes. Runs in a pod of the runner image as ``python -c <this file> /etc/tradewarden-kill/mode``;
the file is a key of a ConfigMap mounted as a volume, which the kubelet rewrites when it next syncs the
pod. Prints one JSON line ``{"value": ..., "at": <time.time()>}`` at start and each time the value
changes; ``at`` is on the kernel clock the host shares, so the benchmark subtracts its PATCH time.
Standard library only.
"""

from __future__ import annotations

import json
import signal
import sys
import time

POLL_SECONDS = 1.0


def read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError as exc:
        return f"<unreadable: {exc.strerror}>"


def main(path: str) -> None:
    # PID 1 of its container: without a handler, SIGTERM would be ignored until the grace period ends.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    last: str | None = None
    while True:
        value = read(path)
        if value != last:
            print(json.dumps({"value": value, "at": time.time()}), flush=True)
            last = value
        time.sleep(POLL_SECONDS)


if __name__ == "__main__":
    main(sys.argv[1])
