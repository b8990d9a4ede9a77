"""Unit tests of what the operator says in status and Events: bounded, no echoed values, the state entered.

From a StrategyConfig spec to the messages a human reads: the config's ``Valid`` condition and Events,
every bot's ``ConfigValid`` and its Events, and what ``Kube.post_event`` finally sends.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from support.controller_objects import DEFAULTS, NOW, make_bot, make_switch, runner, spec, status
from tradewarden.api.conditions import MAX_MESSAGE, ConditionStatus, get_condition
from tradewarden.api.strategyconfig import StrategyConfig, StrategyConfigStatus
from tradewarden.api.tradingbot import BotPhase, TradingBot, TradingBotStatus
from tradewarden.controller.builders import build_bot_plan
from tradewarden.controller.kube import Kube
from tradewarden.controller.leases import NO_RUNNER, RunnerObservation
from tradewarden.controller.status import (
    EventSpec,
    bot_events,
    compute_bot_status,
    compute_strategyconfig_status,
    config_source,
    phase_message,
    strategyconfig_events,
)

SECRET = "sk-live-9f8A7b6C5d4E3f2G1h0Jk"
GOOD = {"fast": 10, "slow": 30}


def make_sc(params: dict[str, Any], generation: int = 4, previous: dict[str, Any] | None = None,
            **spec_extra: Any) -> StrategyConfig:
    return StrategyConfig.model_validate({
        "metadata": {"name": "momentum", "namespace": "ns", "generation": generation},
        "spec": {"strategy": "momentum", "params": params, **spec_extra}, "status": previous or {}})


def edit(params: dict[str, Any], **spec_extra: Any) -> tuple[StrategyConfigStatus, StrategyConfigStatus]:
    """(status after a valid generation 4, status after the edit ``params`` as generation 5)."""
    good = compute_strategyconfig_status(make_sc(GOOD), ["bot"], NOW)
    bad = compute_strategyconfig_status(make_sc(params, 5, good.to_wire(), **spec_extra), ["bot"],
                                        NOW + dt.timedelta(minutes=1))
    return good, bad


def reconcile(bot: TradingBot, sc: StrategyConfig, run: RunnerObservation = NO_RUNNER) -> TradingBotStatus:
    source = config_source("ns", "momentum", sc)
    plan = build_bot_plan(bot, source.valid, [], run, DEFAULTS, NOW)
    return compute_bot_status(bot, source, plan, run, NOW)


def bot_after(good: StrategyConfigStatus, bad: StrategyConfigStatus) -> tuple[TradingBotStatus, TradingBotStatus]:
    """A bot's status with the valid config, and after the config's invalid edit."""
    before = reconcile(make_bot(), make_sc(GOOD, previous=good.to_wire()))
    after = reconcile(make_bot("bot", status(**before.to_wire())), make_sc({}, 5, bad.to_wire()))
    return before, after


def message(conditions: Any, type_: str) -> str:
    cond = get_condition(conditions, type_)
    assert cond is not None
    return cond.message


class RecordingKube(Kube):
    """A Kube whose requests are recorded instead of sent."""

    def __init__(self) -> None:
        class _Client:
            user_agent = ""
        super().__init__(_Client())  # type: ignore[arg-type]
        self.sent: list[dict[str, Any]] = []

    def _request(self, method: str, path: str, **kw: Any) -> dict[str, Any]:  # type: ignore[override]
        self.sent.append(kw["body"])
        return {}


def posted(events: list[EventSpec]) -> list[str]:
    kube = RecordingKube()
    for e in events:
        kube.post_event({"kind": "StrategyConfig", "metadata": {"name": "momentum", "namespace": "ns"}},
                        e.type, e.reason, e.message)
    return [str(body["message"]) for body in kube.sent]


# ------------------------------------------------------------------------------------------ bounded


def test_hundreds_of_unknown_params_give_a_bounded_message() -> None:
    good, bad = edit({**GOOD, **{f"x{i:03d}": i for i in range(300)}})
    valid = get_condition(bad.conditions, "Valid")
    assert valid is not None
    assert (valid.status.value, valid.reason, valid.observed_generation) == ("False", "InvalidParams", 5)
    assert len(valid.message) <= MAX_MESSAGE
    assert valid.message.startswith("params.x000: unknown parameter (known: fast, slow, atr_period, atr_mult)")
    assert "params.x001" in valid.message
    assert valid.message.endswith("and 295 more")
    assert bad.valid_spec == good.valid_spec  # bots keep the last valid config

    _, bot = bot_after(good, bad)
    config_valid = get_condition(bot.conditions, "ConfigValid")
    assert config_valid is not None
    assert (config_valid.status.value, config_valid.reason) == ("False", "StrategyConfigInvalid")
    assert len(config_valid.message) <= MAX_MESSAGE
    assert "params.x000" in config_valid.message
    assert "and 295 more" in config_valid.message
    assert config_valid.message.endswith("the runner keeps the last valid config " + config_valid.message[-12:])


def test_a_5000_character_value_gives_a_bounded_message() -> None:
    good, bad = edit({**GOOD, "fast": "9" * 5000})
    text = message(bad.conditions, "Valid")
    assert len(text) <= MAX_MESSAGE
    assert text == "params.fast: Input should be a valid integer (got a string, not shown)"
    _, bot = bot_after(good, bad)
    assert len(message(bot.conditions, "ConfigValid")) <= MAX_MESSAGE


def test_a_long_problem_from_the_config_keeps_the_bots_own_tail() -> None:
    # A StrategyConfig status written by anyone (an older operator, a human) may carry a long message.
    good = compute_strategyconfig_status(make_sc(GOOD), ["bot"], NOW)
    forged = good.model_copy(update={"conditions": [c.model_copy(update={
        "status": ConditionStatus.FALSE, "reason": "InvalidParams", "message": "y" * 4000}) for c in good.conditions]})
    bot = reconcile(make_bot(), make_sc({}, previous=forged.to_wire()))
    text = message(bot.conditions, "ConfigValid")
    assert len(text) <= MAX_MESSAGE
    assert "(truncated); the runner keeps the last valid config" in text


def test_event_messages_are_bounded_where_they_are_posted() -> None:
    [sent] = posted([EventSpec("Warning", "InvalidConfig", "z" * 10_000)])
    assert len(sent) <= MAX_MESSAGE
    assert len(sent.encode("utf-8")) <= MAX_MESSAGE
    [multibyte] = posted([EventSpec("Warning", "InvalidConfig", "€" * 2000)])
    assert len(multibyte.encode("utf-8")) <= MAX_MESSAGE


# ------------------------------------------------------------------------------------------ no echoed values


@pytest.mark.parametrize("params", [
    {**GOOD, "fast": SECRET},                                           # a known param
    {**GOOD, "slow": [SECRET]},
    {**GOOD, "apiKey": SECRET},                                         # an unknown one
])
def test_a_secret_looking_value_appears_in_no_message(params: dict[str, Any]) -> None:
    good, bad = edit(params)
    before, after = bot_after(good, bad)
    texts = [message(bad.conditions, "Valid"), message(after.conditions, "ConfigValid"),
             *[e.message for e in strategyconfig_events(good, bad)], *[e.message for e in bot_events(before, after)],
             *posted(strategyconfig_events(good, bad)), *posted(bot_events(before, after))]
    assert [e.reason for e in bot_events(before, after)].count("InvalidConfig") == 1
    for text in texts:
        assert SECRET not in text
        assert SECRET[:12] not in text
    assert "params." in message(bad.conditions, "Valid")  # the field is named


def test_a_secret_looking_value_in_a_mode_overlay_appears_in_no_message() -> None:
    _, bad = edit(GOOD, modes={"fallback": {"params": {"fast": SECRET}}})
    text = message(bad.conditions, "Valid")
    assert text.startswith("modes.fallback: params.fast: Input should be a valid integer")
    assert SECRET not in text


def test_a_refused_number_is_quoted() -> None:
    good, bad = edit({"fast": 1, "slow": 30})
    assert message(bad.conditions, "Valid") == "params.fast: Input should be greater than or equal to 2 (got 1)"
    _, after = bot_after(good, bad)
    assert "(got 1)" in message(after.conditions, "ConfigValid")
    _, pair = edit({"fast": 30, "slow": 20})
    assert message(pair.conditions, "Valid") == "params.fast: must be < slow (got 30 >= 20)"


def test_an_unknown_strategy_key_is_echoed_only_when_it_is_a_short_word() -> None:
    _, word = edit(GOOD, strategy="no_such_strategy")
    assert "Invalid strategy key: no_such_strategy (known: " in message(word.conditions, "Valid")
    sc = StrategyConfig.model_validate({"metadata": {"name": "momentum", "namespace": "ns", "generation": 4},
                                        "spec": {"strategy": "a3f9c2e81b7d4a6f9e0c", "params": {}}})
    st = compute_strategyconfig_status(sc, [], NOW)
    text = message(st.conditions, "Valid")
    assert text.startswith("spec.strategy: Invalid strategy key (the value is not shown")
    assert "a3f9c2e81b7d4a6f9e0c" not in text
    assert "momentum" in text  # the known keys are listed


# ------------------------------------------------------------------------------------------ the state entered


def applied(bot: TradingBot) -> str:
    return reconcile(bot, make_sc(GOOD, previous=compute_strategyconfig_status(make_sc(GOOD), [], NOW)
                                  .to_wire())).config_hash


def sc_valid() -> StrategyConfig:
    return make_sc(GOOD, previous=compute_strategyconfig_status(make_sc(GOOD), [], NOW).to_wire())


def test_pending_to_running_describes_running() -> None:
    # The reported Event: "PhaseChanged Pending -> Running: the runner has not reported an applied config yet".
    pending = reconcile(make_bot(), sc_valid())
    assert pending.phase == BotPhase.PENDING
    running = reconcile(make_bot("bot", status(**pending.to_wire())), sc_valid(), runner())
    assert running.phase == BotPhase.RUNNING
    assert get_condition(running.conditions, "Ready").reason == "ConfigNotApplied"  # type: ignore[union-attr]
    [event] = [e for e in bot_events(pending, running) if e.reason == "PhaseChanged"]
    assert event.message == "Pending -> Running: the runner renews its Lease bot-runner within 30 s"
    assert "not reported" not in event.message


def phase_cases() -> list[tuple[str, TradingBotStatus]]:
    bot = make_bot()
    hash_ = applied(bot)
    return [
        ("pending", reconcile(bot, sc_valid())),
        ("running-not-applied", reconcile(bot, sc_valid(), runner())),
        ("running-ready", reconcile(bot, sc_valid(), runner(applied=hash_))),
        ("degraded", reconcile(bot, sc_valid(), runner(renewed=NOW - dt.timedelta(minutes=5)))),
        ("halted", compute_bot_status(bot, config_source("ns", "momentum", sc_valid()),
                                      build_bot_plan(bot, config_source("ns", "momentum", sc_valid()).valid,
                                                     [make_switch(mode="halt_all", reason="exchange outage")],
                                                     runner(applied=hash_), DEFAULTS, NOW),
                                      runner(applied=hash_), NOW)),
        ("invalid", reconcile(bot, None)),  # type: ignore[arg-type]
        ("paper", reconcile(make_bot("bot", spec(mode="paper")), sc_valid(), runner(applied=hash_))),
    ]


#: What each phase's Event must say about the phase entered.
ENTERED = {
    "pending": "has not renewed its Lease",
    "running-not-applied": "renews its Lease bot-runner",
    "running-ready": "running config",
    "degraded": "last renewed its Lease",
    "halted": "kill mode halt_all: exchange outage",
    "invalid": "does not exist",
    "paper": "in paper mode",
}


def test_every_phase_change_describes_the_state_entered() -> None:
    cases = phase_cases()
    seen = 0
    for old_name, old in cases:
        for new_name, new in cases:
            if old.phase == new.phase:
                continue
            [event] = [e for e in bot_events(old, new) if e.reason == "PhaseChanged"]
            assert event.message.startswith(f"{old.phase.value} -> {new.phase.value}: "), (old_name, new_name)
            assert ENTERED[new_name] in event.message, (old_name, new_name, event.message)
            assert event.message.endswith(phase_message(new))
            seen += 1
    assert seen > 20


def test_other_transition_events_describe_the_new_state() -> None:
    bot = make_bot()
    hash_ = applied(bot)
    ready = reconcile(bot, sc_valid(), runner(applied=hash_))
    settled = make_bot("bot", status(**ready.to_wire()))
    good, bad = edit({**GOOD, "fast": 1})
    invalid = reconcile(settled, make_sc({}, 5, bad.to_wire()), runner(applied=hash_))
    by_reason = {e.reason: e.message for e in bot_events(ready, invalid)}
    assert by_reason["InvalidConfig"] == message(invalid.conditions, "ConfigValid")
    assert by_reason["PhaseChanged"].endswith(message(invalid.conditions, "Ready"))
    back = reconcile(make_bot("bot", status(**invalid.to_wire())), sc_valid(), runner(applied=hash_))
    assert {e.reason: e.message for e in bot_events(invalid, back)}["PhaseChanged"] == \
        f"Degraded -> Running: {message(back.conditions, 'Ready')}"
    assert {e.reason: e.message for e in strategyconfig_events(bad, good)}["ConfigValid"] == \
        message(good.conditions, "Valid")
