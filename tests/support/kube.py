"""Access to the cluster under test: the local control plane or, when asked, the current context.

``TRADEWARDEN_CLUSTER=local`` (default) starts the control plane of ``tests/cluster`` for the session,
or reuses one already started by ``make cluster-up``. ``TRADEWARDEN_CLUSTER=current`` uses the current
kubeconfig context (for example a kind cluster) and starts nothing.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from support import kubeapi

REPO = pathlib.Path(__file__).resolve().parents[2]


@dataclass
class Cluster:
    kubeconfig: str
    owned: bool
    startup_seconds: float | None = None
    audit_log: pathlib.Path | None = None
    #: The tag of the operator and runner images on the cluster's node (images built from this tree).
    image_tag: str | None = None

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, KUBECONFIG=self.kubeconfig)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``kubectl ARGS``; a ``get … -o json`` is answered through one kept-alive client instead of a
        new process each time (support/kubeapi.py: the same answer, a fraction of the CPU)."""
        proc = kubeapi.get(self.kubeconfig, args, timeout) if input is None else None
        if proc is None:
            proc = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True,
                                  env=self.env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def apply(self, manifest: str | dict[str, Any] | list[dict[str, Any]], namespace: str | None = None,
              check: bool = True) -> subprocess.CompletedProcess[str]:
        if not isinstance(manifest, str):
            docs = manifest if isinstance(manifest, list) else [manifest]
            manifest = yaml.safe_dump_all(docs, sort_keys=False)
        args = ["apply", "-f", "-"]
        if namespace:
            args += ["-n", namespace]
        return self.kubectl(*args, input=manifest, check=check)

    def get_json(self, *args: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.kubectl("get", *args, "-o", "json").stdout)
        return out

    def wait_for(self, predicate: Any, timeout: float = 30.0, interval: float = 0.2, what: str = "condition") -> Any:
        return poll(predicate, timeout=timeout, interval=interval, what=what)


def poll(predicate: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.2, what: str = "condition",
         tolerate: tuple[type[BaseException], ...] = (AssertionError,),
         context: Callable[[], str] | None = None) -> Any:
    """Call ``predicate`` until it returns something truthy and return that; on timeout, fail naming
    ``what``, the last answer (or tolerated exception) and, when given, ``context()`` (a log tail)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except tolerate as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    extra = f"\n{context()}" if context else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}{extra}")


def install_crds(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(REPO / "crds"))
