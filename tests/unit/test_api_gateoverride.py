"""The GateOverride kind: its model, its rules, and the CRD generated from it."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import ValidationError

from tradewarden.api import crds, gateoverride
from tradewarden.api.base import GROUP, VERSION
from tradewarden.api.conditions import ConditionStatus, set_condition
from tradewarden.api.gateoverride import (
    CONDITION_ACTIVE,
    GATE_OVERRIDE,
    IMMUTABLE_MESSAGE,
    MAX_OVERRIDE_HOURS,
    ActiveReason,
    GateOverride,
    GateOverrideSpec,
    GateOverrideStatus,
    effective_until,
    expiry_problem,
)
from tradewarden.api.tradingbot import MAX_BOT_NAME

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def _spec(**fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"botName": "btc-candidate", "reason": "replay workers down, INC-4711",
                           "expiresAt": "2026-01-01T14:00:00Z"}
    out.update(fields)
    return {k: v for k, v in out.items() if v is not None}


def _crd() -> dict[str, Any]:
    return next(c for c in crds.all_crds() if c["spec"]["names"]["kind"] == "GateOverride")


def test_a_valid_override_parses_with_snake_case_fields() -> None:
    spec = GateOverrideSpec.model_validate(_spec(ticket="INC-4711", expiresAt="2026-01-01T19:30:00+05:30"))
    assert spec.bot_name == "btc-candidate"
    assert spec.reason.startswith("replay")
    assert spec.ticket == "INC-4711"
    assert spec.expires_at == dt.datetime(2026, 1, 1, 14, 0, tzinfo=dt.UTC)
    assert spec.to_wire()["expiresAt"] == "2026-01-01T19:30:00+05:30"


def test_whole_object_round_trips() -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GateOverride",
            "metadata": {"name": "o", "namespace": "n", "creationTimestamp": "2026-01-01T12:00:00Z"},
            "spec": _spec(), "status": {"effectiveUntil": "2026-01-01T14:00:00Z"}}
    gov = GateOverride.model_validate(body)
    assert gov.metadata.name == "o"
    assert gov.status.effective_until == dt.datetime(2026, 1, 1, 14, tzinfo=dt.UTC)
    assert GateOverride.model_validate(gov.to_wire()) == gov


@pytest.mark.parametrize(("fields", "where"), [
    ({"reason": None}, "reason"),
    ({"reason": ""}, "reason"),
    ({"reason": "   "}, "reason"),
    ({"reason": "\u200b \u2060\ufeff"}, "reason"),
    ({"reason": "x" * 1025}, "reason"),
    ({"expiresAt": None}, "expiresAt"),
    ({"expiresAt": "2026-01-01T14:00:00+24:00"}, "expiresAt"),
    ({"expiresAt": "2026-01-01T14:00:00"}, "expiresAt"),
    ({"expiresAt": "tomorrow"}, "expiresAt"),
    ({"botName": None}, "botName"),
    ({"botName": "Btc_Candidate"}, "botName"),
    ({"botName": "btc.candidate"}, "botName"),
    ({"botName": "b" * (MAX_BOT_NAME + 1)}, "botName"),
    ({"ticket": ""}, "ticket"),
    ({"ticket": "\u3000"}, "ticket"),
    ({"ticket": "t" * 257}, "ticket"),
    ({"unknown": 1}, "unknown"),
])
def test_the_model_refuses_what_the_schema_refuses(fields: dict[str, Any], where: str) -> None:
    data = _spec()
    for key, value in fields.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    with pytest.raises(ValidationError, match=where):
        GateOverrideSpec.model_validate(data)


def test_reason_and_ticket_share_the_visible_character_rule_of_live_confirmation() -> None:
    crd = _crd()
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    bot = next(c for c in crds.all_crds() if c["spec"]["names"]["kind"] == "TradingBot")
    confirmed_by = (bot["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
                    ["liveConfirmation"]["properties"]["confirmedBy"])
    rule = confirmed_by["x-kubernetes-validations"][0]["rule"]
    assert props["reason"]["x-kubernetes-validations"][0]["rule"] == rule
    assert props["ticket"]["x-kubernetes-validations"][0]["rule"] == rule
    assert (props["reason"]["minLength"], props["reason"]["maxLength"]) == (1, 1024)
    assert props["ticket"]["maxLength"] == 256


def test_crd_names_scope_and_columns() -> None:
    crd = _crd()
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == "gateoverrides.tradewarden.io"
    assert crd["spec"]["group"] == GROUP
    assert crd["spec"]["scope"] == "Namespaced"
    assert (names["plural"], names["singular"], names["shortNames"], names["categories"]) == (
        "gateoverrides", "gateoverride", ["gov"], ["trading"])
    version = crd["spec"]["versions"][0]
    assert version["name"] == VERSION
    cols = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert list(cols) == ["Bot", "Expires", "Active", "Age"]
    assert cols["Bot"] == ".spec.botName"
    assert cols["Expires"] == ".spec.expiresAt"
    assert cols["Active"] == '.status.conditions[?(@.type=="Active")].reason'
    root = version["schema"]["openAPIV3Schema"]
    assert root["required"] == ["spec"]
    assert set(root["properties"]["spec"]["required"]) == {"botName", "reason", "expiresAt"}


def test_the_spec_is_immutable() -> None:
    spec = _crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert {"rule": "self == oldSelf", "message": IMMUTABLE_MESSAGE,
            "reason": "FieldValueForbidden"} in spec["x-kubernetes-validations"]
    assert IMMUTABLE_MESSAGE == "a GateOverride cannot be changed; delete it and create a new one"


def test_expires_at_is_a_strict_date_time_in_the_schema() -> None:
    props = _crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    expires = props["spec"]["properties"]["expiresAt"]
    assert expires["format"] == "date-time"
    assert expires["pattern"].startswith("^")
    assert props["status"]["properties"]["effectiveUntil"]["format"] == "date-time"


@pytest.mark.parametrize(("delta", "problem"), [
    (dt.timedelta(minutes=1), None),
    (dt.timedelta(hours=MAX_OVERRIDE_HOURS), None),
    (dt.timedelta(hours=MAX_OVERRIDE_HOURS, seconds=1), "at most 4 hours"),
    (dt.timedelta(days=30), "at most 4 hours"),
    (dt.timedelta(0), "after"),
    (-dt.timedelta(hours=1), "after"),
])
def test_expiry_is_capped_from_creation(delta: dt.timedelta, problem: str | None) -> None:
    found = expiry_problem(T0 + delta, T0)
    if problem is None:
        assert found is None
        assert effective_until(T0 + delta, T0) == T0 + delta
    else:
        assert found is not None
        assert problem in found
        assert "spec.expiresAt" in found
        assert effective_until(T0 + delta, T0) is None


def test_expiry_compares_instants_across_offsets() -> None:
    ist = dt.timezone(dt.timedelta(hours=5, minutes=30))
    assert expiry_problem(dt.datetime(2026, 1, 1, 21, 30, tzinfo=ist), T0) is None  # 16:00 UTC: 4 h
    assert expiry_problem(dt.datetime(2026, 1, 1, 21, 31, tzinfo=ist), T0) is not None


def test_status_takes_the_active_condition() -> None:
    conds = set_condition([], CONDITION_ACTIVE, True, ActiveReason.ACTIVE, "in force", 1, now=T0)
    status = GateOverrideStatus(conditions=conds, effective_until=T0 + dt.timedelta(hours=2))
    wire = status.to_wire()
    assert wire["conditions"][0]["type"] == "Active"
    assert wire["conditions"][0]["status"] == ConditionStatus.TRUE
    assert wire["effectiveUntil"] == "2026-01-01T14:00:00Z"
    assert {r.value for r in ActiveReason} == {"Active", "Expired", "TooLong", "BotNotFound"}


def test_registered_with_the_other_kinds() -> None:
    assert (GATE_OVERRIDE, GateOverrideSpec, GateOverrideStatus) in crds.KINDS
    assert GATE_OVERRIDE.description.startswith("An on-call engineer's emergency override of one bot's replay gate")
    for doc in (gateoverride.__doc__, GateOverride.__doc__, GateOverrideSpec.__doc__):
        assert doc is not None
        assert "replay gate" in doc
        assert "never the consensus" in doc
    assert "a permission apart from editing bots" in " ".join((GateOverride.__doc__ or "").split())
