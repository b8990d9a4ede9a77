"""Baseline runner of bench_killswitch_latency.py: the kill mode in a plain ConfigMap, watched through the
API server.

What a runner built on the ``kubernetes`` Python client does without a custom resource: list and watch one
ConfigMap by name (in-cluster config, a ServiceAccount allowed get, list and watch on configmaps in its
namespace) and act on each change. Runs in a pod of the runner image, which ships the client, as
``python -c <this file> CONFIGMAP``. Prints one JSON line ``{"value": ..., "at": <time.time()>}`` at start
and each time the ``mode`` key changes; ``at`` is on the kernel clock the host shares, so the benchmark
subtracts its PATCH time. A broken watch is listed again (and said on a line of its own).
"""

from __future__ import annotations

import json
import pathlib
import signal
import sys
import time
from typing import Any

NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
WATCH_SECONDS = 300


def main(name: str) -> None:
    # PID 1 of its container: without a handler, SIGTERM would be ignored until the grace period ends.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    from kubernetes import client, config, watch

    config.load_incluster_config()
    core = client.CoreV1Api()
    namespace = pathlib.Path(NAMESPACE_FILE).read_text().strip()
    selector = f"metadata.name={name}"
    last: list[str | None] = [None]

    def seen(obj: Any) -> None:
        value = (obj.data or {}).get("mode")
        if value != last[0]:
            print(json.dumps({"value": value, "at": time.time()}), flush=True)
            last[0] = value

    while True:
        try:
            listing = core.list_namespaced_config_map(namespace, field_selector=selector)
            for item in listing.items:
                seen(item)
            stream = watch.Watch().stream(core.list_namespaced_config_map, namespace, field_selector=selector,
                                          resource_version=listing.metadata.resource_version,
                                          timeout_seconds=WATCH_SECONDS)
            for event in stream:
                if event["type"] in ("ADDED", "MODIFIED"):
                    seen(event["object"])
        except Exception as exc:
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:300], "at": time.time()}), flush=True)
            time.sleep(1.0)


if __name__ == "__main__":
    main(sys.argv[1])
