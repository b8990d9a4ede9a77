"""The operator never goes silent: what it cannot do, it says in status and in an Event.

Against the real API server with the operator as a subprocess:

* a bot the operator cannot parse (stored under a looser schema: the test relaxes the CRD for the
  length of the test, as an older CRD version would have been) says so, and a move to a weaker mode
  in the same edit still reaches the runner's config, signed;
* a reconcile that fails (the API server refuses to create an owned object: a ResourceQuota) says so in
  the bot's status and an Event, instead of retrying in silence.
"""

from __future__ import annotations

import datetime as dt
import json
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from support.kube import Cluster, install_crds
from support.operator import OperatorProcess, condition, kill_switch, strategy_config, trading_bot
from support.promotion import bot_of, event_reasons, runtime_of, until, wait_runtime
from tradewarden.api.runtime import GATE_KEY_CONFIGMAP, GateKey, signature_valid

# The loose-schema tests edit the CRDs every test relies on: they run alone (make test's serial phase).
pytestmark = [pytest.mark.cluster, pytest.mark.serial]

PHASE_MAXIMUM = "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/promotion/properties/phase/maximum"


@pytest.fixture
def loose_schema(cluster: Cluster) -> Iterator[None]:
    """The TradingBot CRD without the maximum of spec.promotion.phase (the model still allows at most 5)."""
    cluster.kubectl("patch", "crd", "tradingbots.tradewarden.io", "--type=json",
                    "-p", json.dumps([{"op": "remove", "path": PHASE_MAXIMUM}]))
    try:
        yield
    finally:
        install_crds(cluster)


def gate_key(cluster: Cluster, op: OperatorProcess) -> GateKey:
    return GateKey.from_data(cluster.get_json("configmap", GATE_KEY_CONFIGMAP, "-n", op.ledger_namespace)["data"])


def test_a_bot_that_does_not_parse_says_so_and_a_weaker_mode_still_applies(
        cluster: Cluster, operator: OperatorProcess, loose_schema: None, tmp_path: pathlib.Path) -> None:
    ns = operator.namespace("unparsed")
    cluster.apply(strategy_config(), namespace=ns)
    cluster.apply(trading_bot("loose", mode="paper", placement="external"), namespace=ns)
    first = wait_runtime(cluster, operator, ns, "loose")
    assert first.effective_mode.value == "paper"
    # The API server admits phase 9 now; the operator's model does not. The same edit asks for signals.
    until(operator, lambda: cluster.kubectl("patch", "tb", "loose", "-n", ns, "--type=merge", "-p",
                                            '{"spec":{"mode":"signals","promotion":{"phase":9}}}',
                                            check=False).returncode == 0, "the looser schema in force")

    def reported() -> dict[str, Any]:
        bot = bot_of(cluster, ns, "loose")
        valid = condition(bot, "ConfigValid")
        assert (valid.get("status"), valid.get("reason")) == ("False", "SpecInvalid"), valid
        assert bot["status"]["observedGeneration"] == bot["metadata"]["generation"]
        return bot

    bot = until(operator, reported, "the unparsed spec reported in status")
    message = condition(bot, "ConfigValid")["message"]
    assert "spec.promotion.phase" in message
    assert "in signals mode" in message
    assert bot["status"]["phase"] == "Invalid"
    assert "SpecInvalid" in event_reasons(cluster, ns, "loose")
    runtime = until(operator, lambda: (r := runtime_of(cluster, ns, "loose")) and r.effective_mode.value == "signals"
                    and r, "the weaker mode in the runner's config")
    assert signature_valid(runtime, gate_key(cluster, operator)), "the downgrade is signed like any config"
    assert runtime.config_hash == first.config_hash, "nothing else of the edit reached the runner"
    # Fixed: the bot is reconciled as usual again.
    cluster.kubectl("patch", "tb", "loose", "-n", ns, "--type=merge", "-p", '{"spec":{"promotion":{"phase":3}}}')
    until(operator, lambda: condition(bot_of(cluster, ns, "loose"), "ConfigValid").get("reason") != "SpecInvalid",
          "the bot reconciled again once it parses")
    # A new bot that does not parse gets a status saying so.
    cluster.apply(trading_bot("born-bad", placement="external", promotion={"phase": 7}), namespace=ns)
    bot = until(operator, lambda: (b := bot_of(cluster, ns, "born-bad")) and
                condition(b, "ConfigValid").get("reason") == "SpecInvalid" and b, "a status for the new bot")
    assert "spec.promotion.phase" in condition(bot, "ConfigValid")["message"]


def test_a_reconcile_that_fails_says_so_in_status(cluster: Cluster, operator: OperatorProcess) -> None:
    ns = operator.namespace("quota")
    cluster.apply(strategy_config(), namespace=ns)
    # No room for the bot's ConfigMaps: the API server refuses to create them.
    cluster.apply({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-configmaps"},
                   "spec": {"hard": {"count/configmaps": "1"}}}, namespace=ns)
    cluster.apply(trading_bot("squeezed", placement="external"), namespace=ns)

    def reported() -> dict[str, Any]:
        bot = bot_of(cluster, ns, "squeezed")
        ready = condition(bot, "Ready")
        assert (ready.get("status"), ready.get("reason")) == ("False", "ReconcileFailed"), ready
        return bot

    bot = until(operator, reported, "the failed reconcile reported in status")
    message = condition(bot, "Ready")["message"]
    assert "could not reconcile generation" in message
    assert "ConfigMap" in message or "configmaps" in message, message
    assert "ReconcileFailed" in event_reasons(cluster, ns, "squeezed")
    # Room again: the next retry succeeds and the status says what is true.
    cluster.kubectl("delete", "resourcequota", "no-configmaps", "-n", ns)
    # Any event of the bot reconciles it at once (else the next retry comes after the error backoff).
    cluster.kubectl("annotate", "tb", "squeezed", "-n", ns, "tradewarden.test/nudge=1")
    until(operator, lambda: condition(bot_of(cluster, ns, "squeezed"), "Ready").get("reason") != "ReconcileFailed",
          "the bot reconciled once the quota is gone", timeout=90)
    assert runtime_of(cluster, ns, "squeezed") is not None


def test_a_manual_lane_set_to_close_in_year_8999_closes_within_a_day(cluster: Cluster,
                                                                      operator: OperatorProcess) -> None:
    ns = operator.namespace("lane")
    cluster.apply(strategy_config(), namespace=ns)
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    cluster.apply(trading_bot("forever", mode="paper", placement="external",
                              manualLane={"enabledUntil": "8999-01-01T00:00:00Z", "intents": []}), namespace=ns)
    runtime = wait_runtime(cluster, operator, ns, "forever", lambda r: r.manual_lane.enabled_until is not None)
    until_ = runtime.manual_lane.enabled_until
    assert until_ is not None
    assert before + dt.timedelta(hours=24) <= until_ <= dt.datetime.now(dt.UTC) + dt.timedelta(hours=24)
    bot = until(operator, lambda: (b := bot_of(cluster, ns, "forever")) and "closes at" in condition(
        b, "ConfigValid").get("message", "") and b, "the cap said in status")
    assert condition(bot, "ConfigValid")["status"] == "True"
    assert "ManualLaneCapped" in event_reasons(cluster, ns, "forever")
    # Reconciles later do not move the end: it counts from when the value was first seen.
    cluster.kubectl("label", "tb", "forever", "-n", ns, "touched=yes")
    until(operator, lambda: (r := runtime_of(cluster, ns, "forever")) and r.labels.get("touched") == "yes",
          "the label in the runner's config")
    assert runtime_of(cluster, ns, "forever").manual_lane.enabled_until == until_  # type: ignore[union-attr]


REASON_MAX = "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/reason/maxLength"


def test_a_kill_switch_that_does_not_parse_brakes_every_bot_and_says_so(cluster: Cluster,
                                                                        operator: OperatorProcess) -> None:
    """As the runners read it: halt_all over every bot. A brake is never lost to a parse error."""
    ns = operator.namespace("unreadable")
    cluster.apply(strategy_config(), namespace=ns)
    cluster.apply(trading_bot("braked", placement="external", mode="paper"), namespace=ns)
    wait_runtime(cluster, operator, ns, "braked")
    switch = f"{ns}-unreadable"[:63]
    cluster.apply(kill_switch(switch, "off", [f"{ns}-elsewhere"]))
    cluster.kubectl("patch", "crd", "killswitches.tradewarden.io", "--type=json",
                    "-p", json.dumps([{"op": "remove", "path": REASON_MAX}]))
    try:
        # The API server admits a 2000-character reason now; the model allows 1024.
        until(operator, lambda: cluster.kubectl("patch", "killswitch", switch, "--type=merge", "-p", json.dumps(
            {"spec": {"reason": "x" * 2000}}), check=False).returncode == 0, "the looser schema in force")

        def braked() -> bool:
            runtime = runtime_of(cluster, ns, "braked")
            assert runtime is not None
            assert runtime.kill_mode.value == "halt_all", runtime.kill_mode
            return True

        until(operator, braked, "the unreadable switch to brake the bot")
        ks = cluster.get_json("killswitch", switch)
        engaged = condition(ks, "Engaged")
        assert (engaged.get("status"), engaged.get("reason")) == ("True", "SpecInvalid")
        assert "halt_all over every bot" in engaged["message"]
    finally:
        cluster.kubectl("delete", "killswitch", switch, "--ignore-not-found", check=False)
        install_crds(cluster)
    until(operator, lambda: (r := runtime_of(cluster, ns, "braked")) and r.kill_mode.value == "off",
          "the brake released once the switch is gone")


INSTRUMENTS_MAX = "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/instruments/maxItems"


def test_a_strategy_config_that_does_not_parse_says_so_and_its_bots_keep_the_last_valid_one(
        cluster: Cluster, operator: OperatorProcess) -> None:
    ns = operator.namespace("unparsed-sc")
    cluster.apply(strategy_config(), namespace=ns)
    cluster.apply(trading_bot("steady", placement="external", mode="paper"), namespace=ns)
    first = wait_runtime(cluster, operator, ns, "steady")
    cluster.kubectl("patch", "crd", "strategyconfigs.tradewarden.io", "--type=json",
                    "-p", json.dumps([{"op": "remove", "path": INSTRUMENTS_MAX}]))
    try:
        many = json.dumps({"spec": {"instruments": [f"C{i}/USDT" for i in range(25)]}})
        until(operator, lambda: cluster.kubectl("patch", "strategyconfig.tradewarden.io", "momentum", "-n", ns,
                                                "--type=merge", "-p", many, check=False).returncode == 0,
              "the looser schema in force")

        def reported() -> dict[str, Any]:
            sc = cluster.get_json("strategyconfig.tradewarden.io", "momentum", "-n", ns)
            valid = condition(sc, "Valid")
            assert (valid.get("status"), valid.get("reason")) == ("False", "SpecInvalid"), valid
            return sc

        sc = until(operator, reported, "the unparsed StrategyConfig reported in status")
        assert "spec.instruments" in condition(sc, "Valid")["message"]
        assert sc["status"]["observedGeneration"] == sc["metadata"]["generation"]
        reasons = cluster.kubectl("get", "events", "-n", ns, "--field-selector", "involvedObject.name=momentum",
                                  "-o", "jsonpath={.items[*].reason}").stdout
        assert "SpecInvalid" in reasons
        runtime = runtime_of(cluster, ns, "steady")
        assert runtime is not None
        assert runtime.config_hash == first.config_hash, "the runner keeps the last valid config"
    finally:
        install_crds(cluster)
