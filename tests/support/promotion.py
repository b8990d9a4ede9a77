"""Helpers of the promotion-gate integration tests: bots that ask for live, exports written as a runner
writes them, and waiting with the operator's log at hand.

``write_export`` plays the runner's part exactly: it impersonates the bot's runner ServiceAccount and
does a get + update of ``<bot>-evidence`` (what ``runner/kube.py upload_evidence`` does), so every
prepared export also proves the Role the operator made. ``prepared_export`` builds the export with the
independent runner model of ``support/evidence.py`` for the bot's *current* runtime config (its config
hash and strategy, read from the runtime ConfigMap).
"""

from __future__ import annotations

import copy
import json
import pathlib
import time
from collections.abc import Callable
from typing import Any

import yaml

from support.evidence import make_export
from support.kube import Cluster
from support.operator import OperatorProcess, condition, new_prefix, trading_bot
from support.operator import until as operator_until
from support.runner import secret_manifest
from tradewarden.api.evidence import EVIDENCE_KEY, EvidenceExport, evidence_configmap_name
from tradewarden.api.runtime import RuntimeConfig
from tradewarden.controller.kube import CONFIGMAPS, Kube

CONFIRMATION = {"acknowledgeRealMoney": True, "confirmedBy": "ops@example.com", "ticket": "CHG-1"}


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def live_bot(name: str, config: str, exchange: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """A bot asking for live with everything the built-in reviewers like: a drawdown limit, small risk per
    trade, phase 1 (70 %), no minimum paper time, a ramp of 100 -> 500 -> 1000 without dwell."""
    base: dict[str, Any] = {
        "mode": "live", "placement": "external", "liveConfirmation": CONFIRMATION,
        "exchange": {"id": "binance", "credentialsSecretRef": {"name": "venue-keys"}, **(exchange or {})},
        "risk": {"maxDrawdownPct": 30, "maxRiskPerTradePct": 0.5},
        "capital": {"liveSteps": [100, 500, 1000], "rampDwellMinutes": 0},
        "promotion": {"phase": 1, "minPaperMinutes": 0, "minTrades": 1},
    }
    return trading_bot(name, config=config, **merged(base, spec))


def start_operator_with_reviewers(cluster: Cluster, workdir: pathlib.Path,
                                  reviewers: list[tuple[str, str, float]], api_key: str,
                                  extra_args: tuple[str, ...] = ()) -> OperatorProcess:
    """An operator subprocess configured with external reviewers ``(name, url, timeout seconds)``, all
    reading their key from the Secret ``llm-key`` in the operator's ``<prefix>-keys`` namespace."""
    prefix = new_prefix()
    path = workdir / "reviewers.yaml"
    path.write_text(yaml.safe_dump([
        {"name": name, "url": url, "model": "test-model", "timeoutSeconds": timeout,
         "apiKeySecretRef": {"namespace": f"{prefix}-keys", "name": "llm-key", "key": "apiKey"}}
        for name, url, timeout in reviewers]))
    op = OperatorProcess(cluster, workdir, prefix=prefix, extra_args=("--reviewers", str(path), *extra_args))
    op.start()
    cluster.apply(secret_manifest("llm-key", {"apiKey": api_key}), namespace=op.namespace("keys"))
    return op


def until(op: OperatorProcess, predicate: Callable[[], Any], what: str, timeout: float = 60.0,
          interval: float = 0.25) -> Any:
    """:func:`support.operator.until` with the promotion gate's longer default (replays take seconds)."""
    return operator_until(op, predicate, what, timeout, interval)


def bot_of(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    return cluster.get_json("tb", name, "-n", ns)


def reason(bot: dict[str, Any], type_: str) -> str:
    return str(condition(bot, type_).get("reason", ""))


def runtime_of(cluster: Cluster, ns: str, name: str) -> RuntimeConfig | None:
    proc = cluster.kubectl("get", "configmap", f"{name}-runtime", "-n", ns, "-o", "json", check=False)
    if proc.returncode != 0:
        return None
    cm = json.loads(proc.stdout)
    return RuntimeConfig.model_validate_json(cm["data"]["runtime.json"])


def wait_runtime(cluster: Cluster, op: OperatorProcess, ns: str, name: str,
                 ready: Callable[[RuntimeConfig], bool] = lambda _r: True, what: str = "") -> RuntimeConfig:
    found: RuntimeConfig = until(op, lambda: (r := runtime_of(cluster, ns, name)) is not None and ready(r) and r,
                                 what or f"the runtime ConfigMap of {name}")
    return found


#: Bars (warm-up and window) of a prepared export: the emulator serving its venue must be past them.
EXPORT_BARS = 800


def prepared_export(runtime: RuntimeConfig, seed: int = 1, **kw: Any) -> EvidenceExport:
    """An export of ``runtime``'s strategy on the emulator's recorded series, bound to its config hash,
    with the runner's side computed by the independent model of support/evidence.py."""
    export = make_export(runtime.strategy.key, params=runtime.strategy.params, seed=seed, warmup=200,
                         window=EXPORT_BARS - 200, version=runtime.strategy.version, **kw)
    return export.model_copy(update={"namespace": runtime.namespace, "bot": runtime.bot,
                                     "config_hash": runtime.config_hash, "strategy": runtime.strategy,
                                     "exported_at": int(time.time() * 1000)})


def tampered(export: EvidenceExport) -> EvidenceExport:
    """The runner claims fills 1 % away from what its strategy would have got: every fill is a residual."""
    return export.model_copy(update={"fills": [f.model_copy(update={"price": f.price * 1.01})
                                               for f in export.fills]})


def runner_client(cluster: Cluster, ns: str, bot: str, user: str | None = None) -> Kube:
    kube = Kube.from_environment(kubeconfig=cluster.kubeconfig)
    kube._api.user_agent = "tradewarden-test-runner/0"
    kube._api.set_default_header("Impersonate-User", user or f"system:serviceaccount:{ns}:{bot}-runner")
    return kube


def write_export(cluster: Cluster, ns: str, bot: str, export: EvidenceExport, user: str | None = None) -> None:
    """As the runner does it, with the runner's identity (or ``user``'s): get + update of the evidence
    ConfigMap."""
    kube = runner_client(cluster, ns, bot, user)
    name = evidence_configmap_name(bot)
    cm = kube.get(CONFIGMAPS, ns, name)
    assert cm is not None, f"the operator did not create ConfigMap {ns}/{name}"
    cm["binaryData"] = {**(cm.get("binaryData") or {}), EVIDENCE_KEY: export.encode()}
    kube._request("PUT", CONFIGMAPS.path(ns, name), what=f"ConfigMap {ns}/{name}", plural="configmaps", body=cm)


def events_of(cluster: Cluster, ns: str, name: str) -> list[dict[str, Any]]:
    out = cluster.get_json("events", "-n", ns, "--field-selector", f"involvedObject.name={name}")
    return sorted(out["items"], key=lambda e: (e.get("lastTimestamp") or "", e["metadata"]["name"]))


def event_reasons(cluster: Cluster, ns: str, name: str) -> list[str]:
    return [str(e["reason"]) for e in events_of(cluster, ns, name)]
