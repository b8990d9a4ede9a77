"""The API models and the CRDs generated from them: drift, structure, and the pure helpers in api/."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from pydantic import ValidationError

from tradewarden.api import crds
from tradewarden.api.conditions import ConditionStatus, get_condition, set_condition
from tradewarden.api.killswitch import KillSwitch
from tradewarden.api.runtime import (
    RuntimeConfig,
    RuntimeStrategy,
    compute_config_hash,
    compute_gate_hash,
)
from tradewarden.api.selectors import effective_kill_mode
from tradewarden.api.tradingbot import ExchangeSpec, KillMode, RiskLimits, TradingBotSpec, strongest_kill_mode


def test_committed_crds_match_the_models(repo: Any) -> None:
    stale = [str(p.relative_to(repo)) for p, text in crds.expected_files(repo).items()
             if not p.exists() or p.read_text() != text]
    assert stale == [], f"run `make crds`: generated files drift from the models: {stale}"


def _walk(schema: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        out += _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        out += _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        out += _walk(schema["additionalProperties"], f"{path}{{}}")
    return out


@pytest.mark.parametrize("crd", crds.all_crds(), ids=lambda c: c["metadata"]["name"])
def test_schema_is_structural_and_described(crd: dict[str, Any]) -> None:
    version = crd["spec"]["versions"][0]
    root = version["schema"]["openAPIV3Schema"]
    text = json.dumps(root)
    assert "$ref" not in text
    assert '"title"' not in text
    assert '"const"' not in text
    for path, node in _walk(root, ""):
        if path.count(".") < 2 or path.endswith("[]") or path.endswith("{}"):
            continue  # the envelope and list/map items inherit their field's description
        assert node.get("description"), f"{crd['metadata']['name']}{path} has no description (kubectl explain)"
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type (not structural)"
        if node.get("type") == "array":
            assert "maxItems" in node, f"{path}: lists must be bounded"
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["names"]["categories"] == ["trading"]


def test_printer_columns_and_short_names() -> None:
    by_kind = {c["spec"]["names"]["kind"]: c for c in crds.all_crds()}

    def columns(kind: str) -> list[str]:
        cols = by_kind[kind]["spec"]["versions"][0]["additionalPrinterColumns"]
        return [c["name"] for c in cols if not c.get("priority")]

    assert columns("TradingBot") == ["Mode", "Effective", "Strategy", "Phase", "Replay", "Consensus", "PnL", "Age"]
    assert columns("StrategyConfig") == ["Strategy", "Valid", "Bots", "Age"]
    assert columns("KillSwitch") == ["Mode", "Matched", "Acked", "Age"]
    assert by_kind["TradingBot"]["spec"]["names"]["shortNames"] == ["tb", "bot"]
    assert by_kind["StrategyConfig"]["spec"]["names"]["shortNames"] == ["sc", "strat"]
    assert by_kind["KillSwitch"]["spec"]["names"]["shortNames"] == ["ks"]
    assert by_kind["KillSwitch"]["spec"]["scope"] == "Cluster"


def test_chart_copy_is_behind_a_flag_with_keep_policy(repo: Any) -> None:
    for path, text in crds.expected_files(repo).items():
        if "charts" in path.parts:
            assert text.splitlines()[1] == "{{- if .Values.crds.install }}"
            assert "helm.sh/resource-policy: keep" in text


def test_defaults_are_safe() -> None:
    spec = TradingBotSpec.model_validate({"strategyConfigRef": "x", "exchange": {"id": "binance"}})
    assert spec.mode == "signals"
    assert spec.exchange.sandbox is True
    assert spec.allowed_intent_sources == ["strategy"]
    # The runbook seed's risk defaults.
    assert (spec.risk.entry_orders_per_minute, spec.risk.entry_orders_per_minute_per_symbol,
            spec.risk.exit_orders_per_minute, spec.risk.cancels_per_minute) == (30, 6, 120, 120)
    assert spec.risk.max_drawdown_pct == 0
    assert spec.risk.max_entry_notional_per_window == 0
    assert spec.capital.live_steps == [100, 500, 1000, 2500]


def test_wire_names_are_camel_case_and_round_trip() -> None:
    spec = TradingBotSpec.model_validate({"strategyConfigRef": "x", "exchange": {"id": "binance"},
                                          "risk": {"maxDrawdownPct": 12.5}})
    wire = spec.to_wire()
    assert wire["risk"]["maxDrawdownPct"] == 12.5
    assert "max_drawdown_pct" not in wire["risk"]
    assert TradingBotSpec.model_validate(wire) == spec


def test_models_refuse_unknown_fields_naming_them() -> None:
    with pytest.raises(ValidationError, match="maxDrawdown"):
        TradingBotSpec.model_validate({"strategyConfigRef": "x", "exchange": {"id": "binance"},
                                       "risk": {"maxDrawdown": 5}})


T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=5)


def test_condition_transition_time_moves_only_on_flip() -> None:
    conds = set_condition([], "Ready", False, "Pending", "waiting", 1, now=T0)
    same = set_condition(conds, "Ready", False, "StillPending", "still waiting", 2, now=T1)
    assert same[0].last_transition_time == T0
    assert same[0].observed_generation == 2
    assert same[0].reason == "StillPending"
    flipped = set_condition(same, "Ready", True, "Running", "ok", 2, now=T1)
    assert flipped[0].last_transition_time == T1
    assert flipped[0].status == ConditionStatus.TRUE


def test_condition_helper_keeps_other_types_and_order() -> None:
    conds = set_condition([], "A", True, "Yes", "", 1, now=T0)
    conds = set_condition(conds, "B", False, "No", "", 1, now=T0)
    conds = set_condition(conds, "A", False, "Flip", "", 1, now=T1)
    assert [c.type for c in conds] == ["A", "B"]
    b = get_condition(conds, "B")
    assert b is not None
    assert b.last_transition_time == T0


def _ks(name: str, mode: str, **selector: Any) -> KillSwitch:
    return KillSwitch.model_validate({"metadata": {"name": name}, "spec": {"mode": mode, "selector": selector}})


@pytest.mark.parametrize(("switches", "ns", "labels", "trip", "want"), [
    ([], "a", {}, "off", "off"),
    ([_ks("g", "close_only")], "a", {}, "off", "close_only"),
    ([_ks("g", "close_only"), _ks("t", "halt_all", namespaces=["b"])], "a", {}, "off", "close_only"),
    ([_ks("g", "close_only"), _ks("t", "halt_all", namespaces=["a"])], "a", {}, "off", "halt_all"),
    ([_ks("f", "flatten", botSelector={"matchLabels": {"team": "x"}})], "a", {"team": "y"}, "off", "off"),
    ([_ks("f", "flatten", botSelector={"matchLabels": {"team": "x"}})], "a", {"team": "x"}, "off", "flatten"),
    ([_ks("e", "halt_all", botSelector={"matchExpressions": [{"key": "tier", "operator": "In",
                                                               "values": ["live"]}]})], "a", {"tier": "live"},
     "off", "halt_all"),
    ([_ks("e", "halt_all", botSelector={"matchExpressions": [{"key": "tier", "operator": "NotIn",
                                                               "values": ["live"]}]})], "a", {"tier": "live"},
     "off", "off"),
    ([_ks("e", "halt_all", botSelector={"matchExpressions": [{"key": "pin", "operator": "DoesNotExist"}]})],
     "a", {}, "off", "halt_all"),
    ([_ks("g", "off")], "a", {}, "halt_all", "halt_all"),
    ([_ks("g", "close_only")], "a", {}, "halt_all", "halt_all"),
])
def test_strongest_matching_kill_mode_wins(switches: list[KillSwitch], ns: str, labels: dict[str, str],
                                          trip: str, want: str) -> None:
    assert effective_kill_mode(switches, ns, labels, KillMode(trip), "drawdown").mode == want


def test_strength_order() -> None:
    assert strongest_kill_mode("close_only", "halt_all", "off") == KillMode.HALT_ALL
    assert strongest_kill_mode("flatten", "halt_all") == KillMode.FLATTEN
    assert strongest_kill_mode() == KillMode.OFF


def _runtime(**params: Any) -> RuntimeConfig:
    strategy = RuntimeStrategy(key="momentum", instruments=["BTC/USDT"], timeframe="5m", params=params)
    exchange = ExchangeSpec(id="binance")
    risk = RiskLimits()
    return RuntimeConfig(namespace="n", bot="b", strategy=strategy, exchange=exchange, risk=risk,
                         config_hash=compute_config_hash(strategy, risk, exchange))


def test_config_hash_binds_content_and_verify_detects_tampering() -> None:
    a, b = _runtime(fast=12), _runtime(fast=13)
    assert a.config_hash != b.config_hash
    assert a.config_hash == _runtime(fast=12).config_hash
    a.verify()
    forged = a.model_copy(update={"strategy": b.strategy})
    with pytest.raises(ValueError, match="configHash"):
        forged.verify()


def test_config_hash_ignores_mode_and_kill_state() -> None:
    a = _runtime(fast=12)
    b = a.model_copy(update={"effective_mode": "paper", "kill_mode": "halt_all"})
    b.verify()
    assert compute_gate_hash(a.config_hash, "r", "c") != compute_gate_hash(a.config_hash, "r2", "c")
