"""The API models and the CRDs generated from them: drift, structure, and the pure helpers in api/."""

from __future__ import annotations

import datetime as dt
import json
import re
import types
import typing
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from tradewarden.api import crds
from tradewarden.api.base import (
    DATE_TIME_PATTERN,
    RE2_PYTHON_DIFFER,
    VISIBLE_CEL_PATTERN,
    has_visible_char,
    is_visible_char,
    visible,
)
from tradewarden.api.conditions import ConditionStatus, get_condition, set_condition
from tradewarden.api.killswitch import (
    KillSwitch,
    KillSwitchSelector,
    LabelSelector,
    LabelSelectorRequirement,
    TriggerSpec,
)
from tradewarden.api.runtime import (
    RuntimeConfig,
    RuntimeStrategy,
    compute_config_hash,
    compute_gate_hash,
)
from tradewarden.api.selectors import effective_kill_mode
from tradewarden.api.strategyconfig import StrategyConfigSpec
from tradewarden.api.tradingbot import (
    BOT_NAME_VALIDATIONS,
    MAX_BOT_NAME,
    CapitalSpec,
    ExchangeSpec,
    KillMode,
    LiveConfirmation,
    ManualLaneSpec,
    RiskLimits,
    RunnerSpec,
    SecretKeyRef,
    TradingBotSpec,
    bot_name_problem,
    strongest_kill_mode,
)


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


# ------------------------------------------------------------------ the schema is as strict as the model
#
# Rule: nothing the generated schema admits may fail the model. The API server evaluates `pattern` and
# CEL's `matches()` with Go's regexp (RE2 syntax). These tests stand in for it with Python's `re`, which
# agrees with RE2 only on patterns that spell their classes out: no \d, \s, \w or \b (ASCII in RE2,
# Unicode in Python). test_patterns_avoid_shorthands_that_differ_between_engines checks that, so the
# approximation is exact for every pattern the CRDs carry. The one CEL pattern with Unicode classes (the
# visible-character rule) is evaluated by `_go_visible`, a re-statement of Go's tables (see there).


def _strings_of(value: Any) -> list[str]:
    out: list[str] = []
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            out += _strings_of(v)
    elif isinstance(value, list | tuple):
        for v in value:
            out += _strings_of(v)
    return out


def _all_patterns() -> list[str]:
    found: list[str] = []
    for crd in crds.all_crds():
        root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for _, node in _walk(root, ""):
            if "pattern" in node:
                found.append(node["pattern"])
            for rule in node.get("x-kubernetes-validations", []):
                found += re.findall(r"matches\(r'([^']*)'\)", rule["rule"])
    return found


def test_patterns_avoid_shorthands_that_differ_between_engines() -> None:
    patterns = _all_patterns()
    assert len(patterns) > 10
    for pattern in patterns:
        for shorthand in RE2_PYTHON_DIFFER:
            assert shorthand not in pattern, f"{pattern} uses {shorthand}: RE2 and Python disagree on it"


def _go_is_date(text: str) -> bool:
    """Go's time.Parse("2006-01-02", text): two-digit month and day, the day within its month, year 0000 too."""
    m = re.fullmatch(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", text)
    if not m:
        return False
    year, month, day = (int(g) for g in m.groups())
    if not 1 <= month <= 12:
        return False
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days = [31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
    return 1 <= day <= days


def _go_is_date_time(text: str) -> bool:
    """kube-openapi's strfmt.IsDateTime (what `format: date-time` checks), statement for statement."""
    if len(text) < 4:
        return False
    parts = text.lower().split("t")
    if len(parts) < 2 or not _go_is_date(parts[0]):
        return False
    # Go's `$` is the end of the text; Python's also matches before a final newline, hence \Z.
    m = re.search(r"^([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))\Z", parts[1])
    return bool(m) and m.group(1) <= "23" and m.group(2) <= "59" and m.group(3) <= "59"


_GO_INVISIBLE_EXTRA = {0x115F, 0x1160, 0x2800, 0x3164, 0xFFA0, *range(0xFFF0, 0xFFF9), *range(0xE0000, 0xE1000)}


def _go_visible(text: str) -> bool:
    """RE2 `[^\\p{Z}\\p{C}\\p{M}...]` searched in ``text``, as Go's regexp evaluates it.

    Go's \\p{C} includes unassigned code points (Python's Cn). Its tables are Unicode 15, Python 3.11's are
    Unicode 14: the two differ only on characters Unicode 15 added, none of which are among the values here.
    """
    return any(unicodedata.category(ch)[0] not in "ZCM" and ord(ch) not in _GO_INVISIBLE_EXTRA for ch in text)


def _re2_matches(pattern: str, value: str) -> bool:
    """RE2's MatchString for an anchored pattern without the shorthands that differ (checked above).

    RE2's ``$`` is the end of the text; Python's also matches before a final newline, which fullmatch rules
    out. (Inside a class, ``$`` is a literal for both.)
    """
    assert pattern.startswith("^"), pattern
    assert pattern.endswith("$"), pattern
    assert "\\p{" not in pattern, f"no stand-in for {pattern}"
    return re.fullmatch(pattern, value) is not None


def _cel_string_rule(expr: str, value: str, var: str = "self") -> bool:
    """Evaluate the few CEL forms the generator emits for strings: matches(), ==, !=, startsWith, &&, !."""
    def matches(pattern: str) -> bool:
        if pattern == VISIBLE_CEL_PATTERN:
            return _go_visible(value)
        return _re2_matches(pattern, value)

    terms = [t.strip() for t in expr.split("&&")]
    for term in terms:
        negate = term.startswith("!") and not term.startswith("!=")
        body = term[1:] if negate else term
        if m := re.fullmatch(rf"{var}\.matches\(r'(.*)'\)", body):
            result = matches(m.group(1))
        elif m := re.fullmatch(rf"{var}\.startsWith\('(.*)'\)", body):
            result = value.startswith(m.group(1))
        elif m := re.fullmatch(rf"{var} != '(.*)'", body):
            result = value != m.group(1)
        else:
            raise AssertionError(f"no stand-in for the CEL term {term!r}")
        if result == negate:
            return False
    return True


def _schema_admits_string(node: dict[str, Any], value: str) -> bool:
    """Whether the API server would admit ``value`` at a string node (length in characters, as Go counts)."""
    if "enum" in node and value not in node["enum"]:
        return False
    if len(value) < node.get("minLength", 0) or len(value) > node.get("maxLength", 10**9):
        return False
    if "pattern" in node and not _re2_matches(node["pattern"], value):
        return False
    if node.get("format") == "date-time" and not _go_is_date_time(value):
        return False
    return all(_cel_string_rule(rule["rule"], value) for rule in node.get("x-kubernetes-validations", []))


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _bare(annotation: Any) -> Any:
    annotation = _unwrap_optional(annotation)
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = _unwrap_optional(typing.get_args(annotation)[0])
    return annotation


@dataclass
class Leaf:
    path: str
    node: dict[str, Any]
    adapter: TypeAdapter[Any]
    wrap: Callable[[str], Any]
    is_date_time: bool = False


def _leaves(node: dict[str, Any], annotation: Any, path: str) -> list[Leaf]:
    """Every string-valued place of a schema, paired with a validator for the model's type at that place."""
    bare = _bare(annotation)
    out: list[Leaf] = []
    if isinstance(bare, type) and issubclass(bare, BaseModel):
        for name, field in bare.model_fields.items():
            alias = field.alias or name
            sub = node.get("properties", {}).get(alias)
            if sub is not None:
                ann = typing.Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
                out += _leaves(sub, ann, f"{path}.{alias}")
        return out
    origin = typing.get_origin(bare)
    if origin is list:
        (item,) = typing.get_args(bare)
        out += _leaves(node["items"], item, f"{path}[]")
    elif origin is dict and "additionalProperties" in node:  # not the free-form objects (params)
        _, value_type = typing.get_args(bare)
        out += _leaves(node["additionalProperties"], value_type, f"{path}{{}}")
        for rule in node.get("x-kubernetes-validations", []):
            if m := re.fullmatch(r"self\.all\(k, (.*)\)", rule["rule"]):
                key_node = {"x-kubernetes-validations": [{"rule": m.group(1).replace("k.", "self.").replace(
                    "k != ", "self != ")}]}
                out.append(Leaf(f"{path}<key>", key_node, TypeAdapter(annotation), lambda v: {v: ""}))
    if node.get("type") == "string" or node.get("x-kubernetes-int-or-string"):
        out.append(Leaf(path, node, TypeAdapter(annotation), lambda v: v,
                        is_date_time=node.get("format") == "date-time"))
    return out


def _kind_leaves() -> list[Leaf]:
    out: list[Leaf] = []
    for info, spec_model, status_model in crds.KINDS:
        crd = crds.build_crd(info, spec_model, status_model)
        root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
        out += _leaves(root["spec"], spec_model, f"{info.kind}.spec")
        out += _leaves(root["status"], status_model, f"{info.kind}.status")
    return out


LEAVES = _kind_leaves()

HOSTILE_STRINGS = [
    "", " ", "   ", "\t", "\n", "a\n", "\na", "a b", "a\u00a0b", "\u00a0", "x\u3000", "\u3000", "\u2003", "\u2028",
    "\u0085", "\u000b", "\u200b", "\ufeff", "\u2060", "\u200b\ufeff\u2060", "\u200d\t", "\u3164", "\u3164a",
    "\u2800", "\u0301", "a\u0301", "\u00ad", "\U000e0041", "\ue000", "\u0378",
    "a", "A", "0", "ab-c", "-a", "a-", "a_b", "a..b", "a.b", ".", "..", "..a", ".a", "a/b", "a/b/c", "/a", "a/",
    "Example.com/x", "example.com/x", "x" * 63, "x" * 64, "x" * 254, "a" * 253 + "/x", "a" * 254 + "/x",
    "é", "Zoë Ünal", "李雷", "t\u0435am", "\u0661\u0662\u0663", "\uff12\uff10\uff12\uff16", "\U0001f642",
    "alice@example.com", "api-key.v2_x", "api/key", "api key",
    "1Gi", "100m", "0.5", "1e3", "1.", ".5", "-1", "+1", "1 GB", "1GB", "Gi", "",
    "BTC/USDT", "btc/usdt", "BTC/USDT:USDT", "BTC-USDT",
    "http://127.0.0.1:8080", "https://api.example.com/v3/", "http://[::1]:8080/api", "http://h:0",
    "http://h:65535", "http://h:65536", "http://h:99999", "https://u:p@h", "https://u@h/", "https://h/?q=1",
    "https://h/#f", "https://h/%zz", "https://h/%41", "http://h/\u00a0", "https://h\u2003/", "ftp://h",
    "http://", "http://h h", "HTTP://H", "http://h/a b", "http://h\\@evil",
    "tradewarden/runner:1.2", "registry.example:5000/tw/runner@sha256:" + "a" * 64, "runner latest",
    "2026-01-01T00:00:00Z", "2026-01-01T00:00:00+05:30", "2026-01-01T00:00:00-23:59", "2026-01-01T00:00:00+23:59",
    "2026-01-01T00:00:00+25:00", "2026-01-01T00:00:00+24:00", "2026-01-01T00:00:00+05:60",
    "2026-01-01T00:00:00+99:99", "2026-01-01t00:00:00z", "2026-01-01T00:00:00z", "2026-01-01t00:00:00Z",
    "2026-01-01T00:00:00x5Z", "2026-01-01T00:00:00,5Z", "2026-01-01T00:00:00.Z", "2026-01-01T00:00:00.5Z",
    "2026-01-01T00:00:00.123456789Z", "2026-01-01T00:00:00.1234567890Z", "2026-01-01T00:00:00\u0660Z",
    "0000-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-23:59", "1000-01-01T00:00:00Z",
    "8999-12-31T23:59:59-23:59", "2026-02-30T00:00:00Z", "2026-04-31T00:00:00Z", "2024-02-29T00:00:00Z",
    "2026-02-29T00:00:00Z", "2026-13-01T00:00:00Z", "2026-01-01T24:00:00Z", "2026-01-01T00:60:00Z",
    "2026-01-01T00:00:60Z", "2026-01-01T00:00:00ZT1", "2026-01-01T00:00:00Zt", "2026-01-01 00:00:00Z",
    "2026-01-01_00:00:00Z", "2026-01-01T00:00:00", "2026-01-01T00:00Z", "2026-01-01", "1700000000",
    "2026-01-01T00:00:00+0530", "2026-01-01T00:00:00+05", "2026-01-01T00:00:00Z\n", " 2026-01-01T00:00:00Z",
    "+2026-01-01T00:00:00Z", "20260-01-01T00:00:00Z", "2026-1-01T00:00:00Z",
]


def _model_accepts(leaf: Leaf, value: str) -> bool:
    try:
        leaf.adapter.validate_python(leaf.wrap(value))
    except ValidationError:
        return False
    return True


def test_the_walk_finds_every_constrained_field() -> None:
    paths = {leaf.path for leaf in LEAVES}
    for expected in ("TradingBot.spec.manualLane.enabledUntil", "TradingBot.spec.exchange.apiUrl",
                     "TradingBot.spec.exchange.credentialsSecretRef.apiKeyKey",
                     "TradingBot.spec.liveConfirmation.confirmedBy",
                     "TradingBot.status.conditions[].lastTransitionTime",
                     "KillSwitch.spec.selector.botSelector.matchLabels<key>",
                     "KillSwitch.spec.selector.botSelector.matchLabels{}",
                     "KillSwitch.spec.selector.botSelector.matchExpressions[].key",
                     "KillSwitch.spec.selector.namespaces[]", "StrategyConfig.spec.instruments[]",
                     "GateOverride.spec.expiresAt", "GateOverride.spec.reason", "GateOverride.spec.botName"):
        assert expected in paths


@pytest.mark.parametrize("leaf", [pytest.param(leaf, id=leaf.path) for leaf in LEAVES])
def test_whatever_the_schema_admits_the_model_accepts(leaf: Leaf) -> None:
    holes = [v for v in HOSTILE_STRINGS if _schema_admits_string(leaf.node, v) and not _model_accepts(leaf, v)]
    assert holes == [], f"{leaf.path}: the API server admits {holes!r}, the model refuses them"


@pytest.mark.parametrize("leaf", [pytest.param(leaf, id=leaf.path) for leaf in LEAVES if leaf.is_date_time])
def test_date_times_agree_both_ways(leaf: Leaf) -> None:
    assert leaf.node["pattern"] == DATE_TIME_PATTERN
    for value in HOSTILE_STRINGS:
        schema, model = _schema_admits_string(leaf.node, value), _model_accepts(leaf, value)
        if "lastTransitionTime" in leaf.path:  # a plain datetime (api/conditions.py): the model accepts more
            assert model or not schema, value
        else:
            assert schema == model, f"{leaf.path}: schema {schema}, model {model} for {value!r}"


def test_the_stand_ins_know_the_api_server_quirks() -> None:
    # What the API server's date-time format alone admits (the reason for the pattern).
    for quirk in ("2026-01-01T00:00:00+25:00", "2026-01-01T00:00:00x5Z", "2026-01-01t00:00:00z",
                  "0000-01-01T00:00:00Z", "2026-01-01T00:00:00ZT99"):
        assert _go_is_date_time(quirk), quirk
    assert not _go_is_date_time("2026-04-31T00:00:00Z")
    # RE2's \s is [\t\n\f\r ]: the old apiUrl pattern admitted a no-break space that pydantic refused.
    assert re.search(r"^https?://[^\t\n\f\r ]+\Z", "http://h/\u00a0x")


def test_visible_characters_agree_with_the_api_server_on_every_assigned_character() -> None:
    """The model's test (Python tables) is never stricter than the schema's (Go's), code point by code point."""
    for code in range(0x110000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        ch = chr(code)
        if unicodedata.category(ch) == "Cn" and code not in _GO_INVISIBLE_EXTRA:
            assert is_visible_char(ch), hex(code)  # unknown to Python 3.11: possibly a Unicode 15 letter
            continue
        assert is_visible_char(ch) == _go_visible(ch), hex(code)


# ---------------------------------------------------------------------- the model side of each rule

def _bot(**spec: Any) -> dict[str, Any]:
    return {"strategyConfigRef": "x", "exchange": {"id": "binance"}, **spec}


def _refused(model: type[BaseModel], data: Any) -> str:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return str(info.value)


@pytest.mark.parametrize("value", ["2026-01-01T00:00:00Z", "2026-01-01T05:30:00+05:30", "2026-01-01T00:00:00-23:59",
                                   "2026-01-01T00:00:00.123456Z", "2024-02-29T12:00:00+00:00"])
def test_date_times_with_an_offset_are_accepted(value: str) -> None:
    spec = TradingBotSpec.model_validate(_bot(manualLane={"enabledUntil": value}))
    until = spec.manual_lane.enabled_until
    assert until is not None
    assert until.tzinfo is not None
    assert until == dt.datetime.fromisoformat(value)


@pytest.mark.parametrize("value", ["2026-01-01T00:00:00+25:00", "2026-01-01T00:00:00+05:60", "2026-01-01t00:00:00z",
                                   "2026-01-01T00:00:00x5Z", "0000-01-01T00:00:00Z", "2026-01-01 00:00:00Z",
                                   "2026-01-01T00:00:00", "1700000000", "9999-12-31T23:00:00-23:00"])
def test_date_times_the_schema_refuses_the_model_refuses(value: str) -> None:
    message = _refused(TradingBotSpec, _bot(manualLane={"enabledUntil": value}))
    assert "manualLane.enabledUntil" in message
    assert "RFC 3339" in message


def test_date_time_objects_pass_and_numbers_do_not() -> None:
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert ManualLaneSpec(enabled_until=when).enabled_until == when
    with pytest.raises(ValidationError):
        ManualLaneSpec.model_validate({"enabledUntil": 1700000000})
    assert ManualLaneSpec(enabled_until=when).to_wire() == {"enabledUntil": "2026-01-01T00:00:00Z", "intents": []}


def test_bot_name_limit_is_what_the_derived_names_allow() -> None:
    longest = "b" * MAX_BOT_NAME
    assert len(f"{longest}-runner-{'x' * 10}") == 63  # the pod's controller-revision-hash label value
    assert bot_name_problem(longest) is None
    assert bot_name_problem("btc-signals") is None
    too_long = bot_name_problem(longest + "b")
    assert too_long is not None
    assert "metadata.name" in too_long
    assert str(MAX_BOT_NAME) in too_long
    for bad in ("alpha.bot", "Alpha", "-alpha", "alpha-", "al_pha", ""):
        problem = bot_name_problem(bad)
        assert problem is not None
        assert "DNS-1123 label" in problem


def test_bot_name_rules_are_root_validations_of_the_crd() -> None:
    crd = next(c for c in crds.all_crds() if c["spec"]["names"]["kind"] == "TradingBot")
    rules = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"]
    assert [r["rule"] for r in rules] == [v["rule"] for v in BOT_NAME_VALIDATIONS]
    assert f"size(self.metadata.name) <= {MAX_BOT_NAME}" in rules[0]["rule"]
    assert all(r["message"].startswith("metadata.name:") for r in rules)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "https://api.example.com/v3/", "http://[::1]:8080/api",
                                 "https://gw.example:443/binance/%7Euser", "http://emulator:65535"])
def test_api_urls_that_are_host_port_path_are_accepted(url: str) -> None:
    assert ExchangeSpec.model_validate({"id": "binance", "apiUrl": url}).api_url == url


@pytest.mark.parametrize("url", ["https://trader:hunter2@api.example.com", "https://hunter2@api.example.com/",
                                 "https://api.example.com/v3?apiKey=hunter2", "https://api.example.com/#hunter2",
                                 "http://h/hunter2\u00a0", "http://h\u3000hunter2", "ftp://hunter2.example",
                                 "http://h:0", "http://h:65536", "http://hunter2 .example"])
def test_api_urls_with_userinfo_query_fragment_or_spaces_are_refused_without_echo(url: str) -> None:
    message = _refused(ExchangeSpec, {"id": "binance", "apiUrl": url})
    assert "apiUrl" in message
    assert "user:password@" in message
    assert "hunter2" not in message  # never the value
    with pytest.raises(ValidationError) as info:
        TradingBotSpec.model_validate(_bot(exchange={"id": "binance", "apiUrl": url}))
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("field", ["apiKeyKey", "secretKey", "passwordKey"])
@pytest.mark.parametrize("key", ["api/key", "api key", "..", ".", "..hidden", "", "k" * 254, "schl\u00fcssel"])
def test_credential_key_names_follow_secret_data_key_syntax(field: str, key: str) -> None:
    message = _refused(SecretKeyRef, {"name": "keys", field: key})
    assert field in message
    if key not in ("", "k" * 254):
        assert "Secret data key" in message
    if len(key) > 2:  # '.' and '..' are part of the rule's own words
        assert key not in message


@pytest.mark.parametrize("key", ["apiKey", "api-key.v2_x", ".hidden", "a" * 253, "API_SECRET"])
def test_credential_key_names_that_are_secret_keys_are_accepted(key: str) -> None:
    ref = SecretKeyRef.model_validate({"name": "keys", "apiKeyKey": key, "secretKey": key, "passwordKey": key})
    assert ref.api_key_key == ref.secret_key == ref.password_key == key


def test_validation_errors_never_echo_input() -> None:
    message = _refused(TradingBotSpec, _bot(risk={"maxDrawdownPct": "hunter2"}))
    assert "risk.maxDrawdownPct" in message
    assert "hunter2" not in message


def _confirmation(confirmed_by: str, ticket: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"acknowledgeRealMoney": True, "confirmedBy": confirmed_by}
    if ticket is not None:
        out["ticket"] = ticket
    return out


@pytest.mark.parametrize("who", ["   ", "\t", "\u200b", "\ufeff", "\u2060", "\u200b\ufeff\u2060", "\u3000\u00a0\u2003",
                                 "\u3164", "\u2800", "\u00ad", "\u0301", "\u200d \u200c"])
def test_confirmed_by_must_show_a_visible_character(who: str) -> None:
    message = _refused(LiveConfirmation, _confirmation(who))
    assert "confirmedBy" in message
    assert "visible character" in message


@pytest.mark.parametrize("who", ["alice@example.com", "Zo\u00eb \u00dcnal", "\u674e\u96f7", "\u200bbob",
                                 "\U0001f642", " x "])
def test_confirmed_by_with_a_visible_character_is_accepted(who: str) -> None:
    assert LiveConfirmation.model_validate(_confirmation(who)).confirmed_by == who


def test_ticket_when_given_must_show_a_visible_character() -> None:
    assert LiveConfirmation.model_validate(_confirmation("alice")).ticket is None
    assert LiveConfirmation.model_validate(_confirmation("alice", "CHG-42")).ticket == "CHG-42"
    for blank in ("", " ", "\u200d\t", "\ufeff"):
        assert "ticket" in _refused(LiveConfirmation, _confirmation("alice", blank))


def test_visible_rule_is_one_definition() -> None:
    rule = visible("x")
    assert rule.cel() == f"self.matches(r'{VISIBLE_CEL_PATTERN}')"
    assert rule.check("a")
    assert not rule.check(" \u200b")
    assert has_visible_char("a\u200b")
    assert not has_visible_char("\u2060\u3000")


@pytest.mark.parametrize("key", ["team", "example.com/team", "tradewarden.io/bot", "a.b-c/x_y.Z", "T",
                                 "a" * 253 + "/x", "x" * 63, "app.kubernetes.io/part-of"])
def test_label_keys_like_kubernetes_are_accepted(key: str) -> None:
    sel = LabelSelector.model_validate({"matchLabels": {key: "v"},
                                        "matchExpressions": [{"key": key, "operator": "Exists"}]})
    assert key in sel.match_labels


@pytest.mark.parametrize("key", ["", "Example.com/team", "example.com/", "/team", "a/b/c", "-team", "team-",
                                 "t" * 64, "a" * 254 + "/x", "te am", "t\u0435am", "example..com/team", "team\n"])
def test_label_keys_unlike_kubernetes_are_refused(key: str) -> None:
    assert "label key" in _refused(LabelSelector, {"matchLabels": {key: "v"}})
    assert "key" in _refused(LabelSelector, {"matchExpressions": [{"key": key, "operator": "Exists"}]})


@pytest.mark.parametrize("value", ["", "alpha", "A-b_c.d", "v" * 63, "0"])
def test_label_values_like_kubernetes_are_accepted(value: str) -> None:
    sel = LabelSelector.model_validate({"matchLabels": {"team": value},
                                        "matchExpressions": [{"key": "team", "operator": "In", "values": [value]}]})
    assert sel.match_labels["team"] == value


@pytest.mark.parametrize("value", ["alpha beta", "-alpha", "alpha.", "v" * 64, "\u00e9", "a/b", "alpha\n"])
def test_label_values_unlike_kubernetes_are_refused(value: str) -> None:
    _refused(LabelSelector, {"matchLabels": {"team": value}})
    _refused(LabelSelector, {"matchExpressions": [{"key": "team", "operator": "In", "values": [value]}]})


@pytest.mark.parametrize(("operator", "values", "ok"), [
    ("In", ["a"], True), ("NotIn", ["a", "b"], True), ("Exists", [], True), ("DoesNotExist", None, True),
    ("In", [], False), ("In", None, False), ("NotIn", [], False), ("Exists", ["a"], False),
    ("DoesNotExist", ["a"], False),
])
def test_selector_operators_and_values_agree(operator: str, values: list[str] | None, ok: bool) -> None:
    req: dict[str, Any] = {"key": "team", "operator": operator}
    if values is not None:
        req["values"] = values
    if ok:
        LabelSelectorRequirement.model_validate(req)
    else:
        assert "operators" in _refused(LabelSelectorRequirement, req)


@pytest.mark.parametrize(("namespace", "ok"), [("trading-prod", True), ("a", True), ("n" * 63, True),
                                               ("Trading", False), ("trading_prod", False), ("n" * 64, False),
                                               ("trading.prod", False), ("", False), ("-prod", False)])
def test_selector_namespaces_are_dns_labels(namespace: str, ok: bool) -> None:
    data = {"namespaces": [namespace]}
    if ok:
        assert KillSwitchSelector.model_validate(data).namespaces == [namespace]
    else:
        _refused(KillSwitchSelector, data)


def test_a_trigger_with_mode_off_is_refused() -> None:
    assert TriggerSpec.model_validate({"maxRunnersWithoutHeartbeat": 1}).mode == KillMode.CLOSE_ONLY
    for mode in ("close_only", "halt_all", "flatten"):
        TriggerSpec.model_validate({"fleetDrawdownPct": 5, "mode": mode})
    assert "engages nothing" in _refused(TriggerSpec, {"fleetDrawdownPct": 5, "mode": "off"})
    with pytest.raises(ValidationError):
        KillSwitch.model_validate({"metadata": {"name": "k"}, "spec": {"trigger": {"mode": "off"}}})


def test_model_rules_are_in_the_schema_next_to_their_checks() -> None:
    crd = next(c for c in crds.all_crds() if c["spec"]["names"]["kind"] == "KillSwitch")
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    req = spec["selector"]["properties"]["botSelector"]["properties"]["matchExpressions"]["items"]
    assert [r["fieldPath"] for r in req["x-kubernetes-validations"]] == [".values", ".values"]
    trigger = spec["trigger"]["x-kubernetes-validations"]
    assert trigger[0]["fieldPath"] == ".mode"
    assert trigger[0]["reason"] == "FieldValueInvalid"


@pytest.mark.parametrize(("quantity", "ok"), [("1Gi", True), ("100m", True), ("0.5", True), ("1e3", True), (2, True),
                                              ("1 GB", False), ("1GB", False), ("lots", False), ("-1", False)])
def test_runner_quantities_follow_kubernetes_syntax(quantity: str | int, ok: bool) -> None:
    data = {"journalSize": quantity, "resources": {"requests": {"cpu": quantity}}}
    if ok:
        assert RunnerSpec.model_validate(data).journal_size == quantity
    else:
        _refused(RunnerSpec, data)


def test_list_items_are_checked_by_the_model_as_by_the_schema() -> None:
    _refused(CapitalSpec, {"liveSteps": [100, -5]})
    _refused(StrategyConfigSpec, {"strategy": "momentum", "instruments": ["btc/usdt"]})
    _refused(TradingBotSpec, _bot(allowedIntentSources=["x" * 65]))
    _refused(RunnerSpec, {"image": "tradewarden/runner latest"})
    assert RunnerSpec.model_validate({"image": "registry.example:5000/tw/runner:1.2"}).image
