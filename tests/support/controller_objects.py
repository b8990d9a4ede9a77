"""Builders for the controller's unit tests: ``make_bot(name, *mods)``, ``make_switch(...)``, runners.

Plain functions returning the API models, so each test states only what it changes.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from tradewarden.api.gateoverride import GateOverride
from tradewarden.api.killswitch import KillSwitch
from tradewarden.api.runtime import KillAck, Telemetry
from tradewarden.api.strategyconfig import StrategyConfigSpec
from tradewarden.api.tradingbot import TradingBot
from tradewarden.controller import gate
from tradewarden.controller.builders import OperatorDefaults, ValidConfig
from tradewarden.controller.leases import RunnerObservation

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
DEFAULTS = OperatorDefaults(runner_image="tradewarden/runner:unit")
CONFIG_HASH = "sha256:" + "c" * 64

Mod = Callable[[dict[str, Any]], None]


def make_bot(name: str = "bot", *mods: Mod, namespace: str = "ns") -> TradingBot:
    body: dict[str, Any] = {
        "apiVersion": "tradewarden.io/v1alpha1", "kind": "TradingBot",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 3,
                     "resourceVersion": "100", "labels": {"team": "a"}},
        "spec": {"strategyConfigRef": "momentum", "exchange": {"id": "binance"}},
    }
    for mod in mods:
        mod(body)
    overrides = body.pop("_gateoverrides", None)
    bot = TradingBot.model_validate(body)
    if overrides is not None:
        bot = gate.with_override(bot, gate.active_override(overrides, name, NOW))
    return bot


def gate_override(reason: str, *, bot: str = "bot", name: str = "inc", minutes_left: float = 60,
                  lasting_hours: float = 1, ticket: str | None = None) -> GateOverride:
    """A GateOverride of ``bot``'s replay gate that ends ``minutes_left`` after NOW and was created
    ``lasting_hours`` before its end (over 4 hours: not honoured)."""
    expires = NOW + dt.timedelta(minutes=minutes_left)
    created = expires - dt.timedelta(hours=lasting_hours)
    spec: dict[str, Any] = {"botName": bot, "reason": reason, "expiresAt": expires.isoformat()}
    if ticket:
        spec["ticket"] = ticket
    return GateOverride.model_validate({
        "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created.isoformat(), "generation": 1},
        "spec": spec})


def override(reason: str, **kw: Any) -> Mod:
    """The bot has a GateOverride (see :func:`gate_override`); make_bot attaches what the operator would."""
    def mod(body: dict[str, Any]) -> None:
        body.setdefault("_gateoverrides", []).append(gate_override(reason, bot=body["metadata"]["name"], **kw))
    return mod


def spec(**values: Any) -> Mod:
    def mod(body: dict[str, Any]) -> None:
        body["spec"].update(values)
    return mod


def status(**values: Any) -> Mod:
    def mod(body: dict[str, Any]) -> None:
        body.setdefault("status", {}).update(values)
    return mod


def labels(**values: str) -> Mod:
    def mod(body: dict[str, Any]) -> None:
        body["metadata"]["labels"] = dict(values)
    return mod


def valid_config(**params: Any) -> ValidConfig:
    spec = StrategyConfigSpec.model_validate({
        "strategy": "momentum", "instruments": ["BTC/USDT"], "timeframe": "5m",
        "params": {"fast": 12, "slow": 26, "atr_period": 14, "atr_mult": 2.0, **params}})
    return ValidConfig("momentum", spec, "1.0.0")


def make_switch(name: str = "global", mode: str = "off", generation: int = 1, namespaces: list[str] | None = None,
                match_labels: dict[str, str] | None = None, reason: str = "", trigger: dict[str, Any] | None = None,
                status: dict[str, Any] | None = None) -> KillSwitch:
    body: dict[str, Any] = {
        "metadata": {"name": name, "generation": generation, "resourceVersion": "7"},
        "spec": {"mode": mode, "reason": reason,
                 "selector": {"namespaces": namespaces or [], "botSelector": {"matchLabels": match_labels or {}}}},
        "status": status or {},
    }
    if trigger is not None:
        body["spec"]["trigger"] = trigger
    return KillSwitch.model_validate(body)


def runner(renewed: dt.datetime | None = NOW, applied: str = "", equity: float = 10000.0, pnl: float = 0.0,
           acks: dict[str, KillAck] | None = None, bot_trip: str = "off", rejected: str = "",
           heartbeat: dt.datetime | None = None) -> RunnerObservation:
    telemetry = Telemetry(heartbeat=heartbeat or renewed or NOW, equity=equity, pnl=pnl, bot_trip=bot_trip,
                          bot_trip_reason="drawdown 12%" if bot_trip != "off" else "")
    return RunnerObservation(lease_exists=True, renew_time=renewed, applied_hash=applied, kill_acks=acks or {},
                             telemetry=telemetry, rejected=rejected)


def lease(annotations: dict[str, Any] | None = None,
          renew: str | None = "2026-03-01T12:00:00.123456Z") -> dict[str, Any]:
    return {"metadata": {"name": "bot-runner", "annotations": {
        k: v if isinstance(v, str) else json.dumps(v) for k, v in (annotations or {}).items()}},
        "spec": {"renewTime": renew} if renew else {}}


# ------------------------------------------------------------------------------------------ gate evidence


def live(**extra: Any) -> Mod:
    """spec.mode live with the human confirmation and a credentials Secret, as the CEL rules require, and
    no minimum time in paper unless ``promotion`` names one (the tests of that rule do)."""
    extra["promotion"] = {"minPaperMinutes": 0, **extra.get("promotion", {})}
    return spec(mode="live", liveConfirmation={"acknowledgeRealMoney": True, "confirmedBy": "ops@example.com"},
                exchange={"id": "binance", "credentialsSecretRef": {"name": "keys"}}, **extra)


def annotations(**values: str) -> Mod:
    def mod(body: dict[str, Any]) -> None:
        body["metadata"]["annotations"] = dict(values)
    return mod


def replay_record(**overrides: Any) -> dict[str, Any]:
    """status.replay of a passing replay of CONFIG_HASH that finished ten minutes before NOW."""
    base = {"configHash": CONFIG_HASH, "resultHash": "sha256:r", "dataHash": "sha256:d", "passed": True,
            "reason": "Passed", "tradesCompared": 3, "residuals": 0,
            "exportedAt": (NOW - dt.timedelta(minutes=11)).isoformat(),
            "finishedAt": (NOW - dt.timedelta(minutes=10)).isoformat()}
    return {**base, **overrides}


def vote_record(reviewer: str = "risk-a", verdict: str = "PROCEED", risk: str = "LOW", evidence: str = "sha256:e",
                age_minutes: float = 5) -> dict[str, Any]:
    return {"reviewer": reviewer, "verdict": verdict, "risk": risk, "evidenceHash": evidence,
            "at": (NOW - dt.timedelta(minutes=age_minutes)).isoformat()}


def consensus_record(**overrides: Any) -> dict[str, Any]:
    """status.consensus approving the replay of replay_record() (evidence sha256:e)."""
    base = {"phase": 3, "thresholdPct": 80, "scorePct": 100, "evidenceHash": "sha256:e",
            "replayResultHash": "sha256:r", "decision": "Approved", "votes": [vote_record()]}
    return {**base, **overrides}
