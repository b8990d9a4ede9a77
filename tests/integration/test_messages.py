"""What the operator says, against the real API server: bounded messages, no echoed values, plain verdicts.

* A StrategyConfig with 300 unknown params, or a 5000-character param value, gets ``Valid=False`` for its
  current generation with a bounded message (the first fields, then "and N more"): before, the API server
  refused the status patch and the config kept showing the previous generation's ``Valid=True``.
* A secret-looking string given as a param appears in no status message and no Event.
* An engaged KillSwitch whose selector matches no bot says ``Acknowledged=False`` (``NoBotsMatched``),
  posts one Warning, and ``kubectl get`` shows 0 in MATCHED.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from support.kube import Cluster
from support.operator import OperatorProcess, condition, get, kill_switch, strategy_config, trading_bot, until

pytestmark = pytest.mark.cluster

LIMIT = 1024
#: Fully qualified: other CRDs on a shared API server may use the same kind names.
SC, TB, KS = "strategyconfigs.tradewarden.io", "tradingbots.tradewarden.io", "killswitches.tradewarden.io"
SECRET = "sk-live-9f8A7b6C5d4E3f2G1h0JkLmN"
GOOD = {"fast": 10, "slow": 30}


@pytest.fixture
def ns(operator: OperatorProcess, request: pytest.FixtureRequest) -> str:
    return operator.namespace(re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[5:35])


def events(cluster: Cluster, name: str, namespace: str | None = None) -> list[dict[str, Any]]:
    where = ["-n", namespace] if namespace else ["-A"]
    out = get(cluster, "events", *where, "--field-selector", f"involvedObject.name={name}") or {"items": []}
    return list(out["items"])


def verdict_for_current_generation(cluster: Cluster, kind: str, name: str, ns: str | None, type_: str,
                                   status: str) -> dict[str, Any] | None:
    """The object when its condition ``type_`` has ``status`` and was computed for its current generation."""
    obj = get(cluster, kind, name, *(["-n", ns] if ns else []))
    if obj is None:
        return None
    cond = condition(obj, type_)
    generation = obj["metadata"]["generation"]
    if cond.get("status") == status and cond.get("observedGeneration") == generation and \
            obj.get("status", {}).get("observedGeneration") == generation:
        return obj
    return None


def setup_bot(cluster: Cluster, op: OperatorProcess, ns: str, config: str, bot: str) -> None:
    cluster.apply(strategy_config(config, GOOD), namespace=ns)
    cluster.apply(trading_bot(bot, config, placement="external"), namespace=ns)
    until(op, lambda: verdict_for_current_generation(cluster, SC, config, ns, "Valid", "True"),
          f"StrategyConfig {config} Valid=True")
    until(op, lambda: condition(get(cluster, TB, bot, "-n", ns) or {}, "ConfigValid").get("status") == "True",
          f"TradingBot {bot} ConfigValid=True")


def bot_config_valid_false(cluster: Cluster, op: OperatorProcess, ns: str, bot: str, needle: str) -> str:
    """ConfigValid=False on the bot, once its message reflects the config's current verdict."""
    found = until(op, lambda: (b := get(cluster, TB, bot, "-n", ns))
                  and (c := condition(b, "ConfigValid")).get("status") == "False" and needle in c.get("message", "")
                  and c, f"ConfigValid=False on {bot} quoting {needle!r}")
    message: str = found["message"]
    return message


# ------------------------------------------------------------------------------------------ bounded


def test_hundreds_of_unknown_params_get_a_bounded_verdict(cluster: Cluster, operator: OperatorProcess,
                                                          ns: str) -> None:
    setup_bot(cluster, operator, ns, "wide", "user")
    unknown = {f"x{i:03d}": i for i in range(300)}
    cluster.apply(strategy_config("wide", {**GOOD, **unknown}), namespace=ns)
    sc = until(operator, lambda: verdict_for_current_generation(cluster, SC, "wide", ns, "Valid",
                                                                "False"),
               "Valid=False for the current generation")
    valid = condition(sc, "Valid")
    assert valid["reason"] == "InvalidParams"
    assert len(valid["message"]) <= LIMIT
    # The API server returns params with sorted keys: x000 is the first unknown field.
    assert valid["message"].startswith("params.x000: unknown parameter (known: ")
    assert "params.x001: unknown parameter" in valid["message"]
    assert valid["message"].endswith("; and 295 more")
    assert sc["status"]["validSpec"]["params"]["fast"] == 10  # the last valid spec is kept

    message = bot_config_valid_false(cluster, operator, ns, "user", "and 295 more")
    assert len(message) <= LIMIT
    assert message.startswith("StrategyConfig wide: params.x000: unknown parameter")
    assert "the runner keeps the last valid config" in message
    for event in events(cluster, "wide", ns) + events(cluster, "user", ns):
        assert len(event["message"]) <= LIMIT


def test_a_5000_character_param_value_gets_a_bounded_verdict(cluster: Cluster, operator: OperatorProcess,
                                                             ns: str) -> None:
    setup_bot(cluster, operator, ns, "long", "user")
    cluster.apply(strategy_config("long", {**GOOD, "fast": "9" * 5000}), namespace=ns)
    sc = until(operator, lambda: verdict_for_current_generation(cluster, SC, "long", ns, "Valid",
                                                                "False"),
               "Valid=False for the current generation")
    valid = condition(sc, "Valid")
    assert valid["reason"] == "InvalidParams"
    assert valid["message"] == "params.fast: Input should be a valid integer (got a string, not shown)"
    message = bot_config_valid_false(cluster, operator, ns, "user", "params.fast")
    assert len(message) <= LIMIT
    assert "99999" not in message


# ------------------------------------------------------------------------------------------ no echoed values


def test_a_secret_looking_param_value_is_never_echoed(cluster: Cluster, operator: OperatorProcess, ns: str) -> None:
    setup_bot(cluster, operator, ns, "leaky", "user")
    cluster.apply(strategy_config("leaky", {**GOOD, "fast": SECRET}), namespace=ns)
    sc = until(operator, lambda: verdict_for_current_generation(cluster, SC, "leaky", ns, "Valid",
                                                                "False"),
               "Valid=False for the current generation")
    message = bot_config_valid_false(cluster, operator, ns, "user", "params.fast")
    until(operator, lambda: any(e["reason"] == "InvalidConfig" for e in events(cluster, "user", ns)),
          "the bot's InvalidConfig Event")
    until(operator, lambda: any(e["reason"] == "InvalidConfig" for e in events(cluster, "leaky", ns)),
          "the StrategyConfig's InvalidConfig Event")
    texts = [condition(sc, "Valid")["message"], message,
             *[e["message"] for e in events(cluster, "leaky", ns) + events(cluster, "user", ns)]]
    assert "params.fast" in texts[0]
    for text in texts:
        assert SECRET not in text
        assert SECRET[:10] not in text


# ------------------------------------------------------------------------------------------ no bot matched


def test_an_engaged_switch_that_matches_no_bot_says_so(cluster: Cluster, operator: OperatorProcess,
                                                       ns: str) -> None:
    cluster.apply(trading_bot("real", placement="external"), namespace=ns)
    typo = f"{operator.prefix}-prdo"  # a namespace this operator watches, where no bot lives
    name = f"{ns}-typo"[:63]
    try:
        cluster.apply(kill_switch(name, "close_only", [typo], reason="3 a.m. drill"))
        ks = until(operator, lambda: verdict_for_current_generation(cluster, KS, name, None,
                                                                    "Acknowledged", "False"),
                   "Acknowledged=False on the switch")
        ack = condition(ks, "Acknowledged")
        assert ack["reason"] == "NoBotsMatched"
        assert f"namespaces {typo}" in ack["message"]
        assert "check spec.selector.namespaces" in ack["message"]
        assert condition(ks, "Engaged")["status"] == "True"
        assert ks["status"]["matched"] == 0
        table = cluster.kubectl("get", KS, name).stdout.splitlines()
        header, row = table[0].split(), table[1].split()
        assert row[header.index("MATCHED")] == "0"
        warned = until(operator, lambda: [e for e in events(cluster, name) if e["reason"] == "NoBotsMatched"],
                       "the NoBotsMatched Event")
        assert warned[0]["type"] == "Warning"
        assert warned[0]["message"] == ack["message"]
        time.sleep(2)  # re-reconciles (Lease and bot events) must not repeat it
        assert len([e for e in events(cluster, name) if e["reason"] == "NoBotsMatched"]) == 1

        # The typo fixed: the switch matches the bot and waits for its runner.
        cluster.kubectl("patch", KS, name, "--type=merge", "-p",
                        json.dumps({"spec": {"selector": {"namespaces": [ns]}}}))
        fixed = until(operator, lambda: verdict_for_current_generation(cluster, KS, name, None,
                                                                       "Acknowledged", "False"), "the fix")
        assert condition(fixed, "Acknowledged")["reason"] == "Pending"
        assert fixed["status"]["matched"] == 1
    finally:
        cluster.kubectl("delete", KS, name, "--ignore-not-found", check=False)
