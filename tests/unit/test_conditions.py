"""Unit tests of the rules every condition and Event message follows (``tradewarden.api.conditions``).

Bounded: no message, however many problems it lists, comes near the 4096 characters the API server
accepts. No echoed values: a value a user gave is quoted only when it is a number, a boolean or a short
lowercase word.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from tradewarden.api.conditions import (
    MAX_MESSAGE,
    bound_message,
    describe_error,
    describe_value,
    echoable,
    field_path,
    list_problems,
    set_condition,
)

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
SECRET = "sk-live-9f8A7b6C5d4E3f2G1h0Jk"


def test_set_condition_bounds_every_message() -> None:
    [cond] = set_condition([], "Valid", False, "InvalidParams", "x" * 10_000, 1, NOW)
    assert len(cond.message) <= MAX_MESSAGE
    assert cond.message.endswith("(truncated)")
    [short] = set_condition([], "Valid", True, "Valid", "fine", 1, NOW)
    assert short.message == "fine"


@pytest.mark.parametrize("text", ["a" * 5000, "é" * 5000, "x" * 1023 + "€", "ok"])
def test_bound_message_counts_characters_and_bytes(text: str) -> None:
    out = bound_message(text)
    assert len(out) <= MAX_MESSAGE
    assert len(out.encode("utf-8")) <= MAX_MESSAGE
    if len(text.encode("utf-8")) <= MAX_MESSAGE:
        assert out == text


def test_list_problems_names_the_first_few_and_counts_the_rest() -> None:
    problems = [f"params.x{i:03d}: unknown parameter (known: fast, slow, atr_period, atr_mult)" for i in range(300)]
    text = list_problems(problems)
    assert len(text) <= MAX_MESSAGE
    assert text.startswith("params.x000: unknown parameter")
    assert "params.x004" in text
    assert "params.x005" not in text
    assert text.endswith("; and 295 more")
    assert list_problems(["a: bad"]) == "a: bad"
    assert list_problems([]) == ""


def test_list_problems_stays_bounded_with_enormous_problems() -> None:
    text = list_problems(["p" * 5000, "q" * 5000, "r" * 5000])
    assert len(text) <= MAX_MESSAGE
    assert text.startswith("ppp")
    assert "qqq" in text


@pytest.mark.parametrize(("value", "shown"), [
    (30, True), (2.5, True), (True, True), (None, True), ("close_only", True), ("paper", True),
    (SECRET, False), ("12", False), ("Paper", False), ("a" * 17, False), ("", False), ([1, 2], False),
    ({"k": "v"}, False), (10 ** 40, False),
])
def test_only_numbers_booleans_and_short_words_are_echoed(value: Any, shown: bool) -> None:
    assert echoable(value) is shown
    if shown:
        assert describe_value(value) == repr(value)
    else:
        assert describe_value(value).endswith(", not shown")


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fast: int = 12
    label: str = "x"

    @field_validator("label")
    @classmethod
    def _refuse(cls, value: str) -> str:
        raise ValueError(f"must not be {value!r}")


def errors(doc: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as caught:
        Params.model_validate(doc)
    return [describe_error(e, "params") for e in caught.value.errors()]


def test_a_refused_number_is_quoted() -> None:
    assert errors({"fast": 1.5}) == [("params.fast", "Input should be a valid integer, got a number with a "
                                                     "fractional part (got 1.5)")]


def test_a_refused_random_string_never_appears() -> None:
    described = errors({"fast": SECRET, "label": SECRET})
    assert [path for path, _ in described] == ["params.fast", "params.label"]
    for _, problem in described:
        assert SECRET not in problem
        assert "not shown" in problem
    assert described[0][1] == "Input should be a valid integer, unable to parse string as an integer " \
                              "(got a string, not shown)"


def test_an_unknown_key_is_named_and_its_value_is_not() -> None:
    [(path, problem)] = errors({"fsat": SECRET})
    assert path == "params.fsat"
    assert SECRET not in problem


def test_field_paths_cut_long_keys() -> None:
    path = field_path(["k" * 5000, 0], "params")
    assert path.startswith("params.kkkkkkkkkkkk...(5000 characters).0")
    assert len(path) < 80
