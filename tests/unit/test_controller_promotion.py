"""Unit tests of the promotion gate's worker pieces without a cluster: the replay as a separate process,
the reviewers file, and a consensus round whose external reviewers cannot be reached or have no key.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from support.controller_objects import NOW, live, make_bot, valid_config
from support.evidence import make_export
from tradewarden.controller import kube as k
from tradewarden.controller.promotion import PromotionGate, run_replay
from tradewarden.controller.reviewers import ReviewersFileError, parse_reviewers
from tradewarden.replay import passes, replay
from tradewarden.strategies import validate_params

PARAMS = validate_params("sma_cross", {}).model_dump(mode="json")


@pytest.fixture(scope="module")
def export_text() -> str:
    return make_export("sma_cross", params=PARAMS, seed=1, warmup=200, window=600).encode()


def test_the_replay_runs_in_its_own_process_and_agrees_with_the_library(export_text: str) -> None:
    run = run_replay(export_text)
    assert run.error == ""
    assert run.report is not None
    in_process = replay(make_export("sma_cross", params=PARAMS, seed=1, warmup=200, window=600))
    assert run.report == in_process  # bit-identical: the result hash included
    assert run.report.residuals == 0
    assert run.report.trades_compared > 0


def test_a_tampered_export_fails_with_residuals() -> None:
    export = make_export("sma_cross", params=PARAMS, seed=1, warmup=200, window=600)
    tampered = export.model_copy(update={"fills": [f.model_copy(update={"price": f.price * 1.01})
                                                   for f in export.fills]})
    run = run_replay(tampered.encode())
    assert run.report is not None
    assert run.report.residuals == len(export.fills)
    verdict = passes(run.report, make_bot("bot", live()).spec.promotion)
    assert (verdict.passed, verdict.reason) == (False, "Failed")


@pytest.mark.parametrize(("encoded", "phrase"), [
    ("", "input: empty"),
    ("not base64 at all!", "neither JSON"),
])
def test_bad_input_is_an_error_in_the_replays_own_words(encoded: str, phrase: str) -> None:
    run = run_replay(encoded)
    assert run.report is None
    assert run.error.startswith("the replay failed (exit 2)")
    assert phrase in run.error


def test_a_replay_that_cannot_start_or_takes_too_long_is_an_error(export_text: str) -> None:
    run = run_replay(export_text, timeout=0.5, python=sys.executable + "-does-not-exist")
    assert run.report is None
    assert "could not start" in run.error
    # No replay finishes in 10 ms (the interpreter alone takes longer to start): it stands in for a
    # strategy that never returns.
    slow = run_replay(export_text, timeout=0.01)
    assert slow.report is None
    assert slow.error == "the replay did not finish within 0.01 s"


# ------------------------------------------------------------------------------------------ reviewers file

GOOD = """
- name: gpt-risk
  url: https://api.openai.com/v1
  model: gpt-4o-mini
  timeoutSeconds: 20
  apiKeySecretRef: {namespace: tw, name: openai, key: apiKey}
- name: local
  url: http://127.0.0.1:9/v1
  model: m
"""


def test_the_reviewers_file() -> None:
    configs = parse_reviewers(GOOD)
    assert [(c.name, c.timeout_seconds) for c in configs] == [("gpt-risk", 20.0), ("local", 30.0)]
    assert configs[0].api_key_secret_ref is not None
    assert configs[0].api_key_secret_ref.name == "openai"
    assert configs[1].api_key_secret_ref is None
    assert parse_reviewers("") == []


@pytest.mark.parametrize(("text", "phrase"), [
    ("{name: x}", "must be a list"),
    ("- name: x\n  url: ftp://x\n  model: m", "[0] (x): base_url: must be an http(s) URL"),
    ("- name: x\n  url: http://x\n  model: m\n  timeoutSeconds: 0", "[0].timeoutSeconds"),
    ("- name: x\n  url: http://x", "[0].model: Field required"),
    ("- name: x\n  url: http://x\n  model: m\n  apiKey: sk-123", "[0].apiKey: Extra inputs"),
    ("- [unclosed", "not valid YAML"),
])
def test_a_bad_reviewers_file_names_the_entry_and_field(text: str, phrase: str) -> None:
    with pytest.raises(ReviewersFileError) as info:
        parse_reviewers(text, "reviewers.yaml")
    assert phrase in str(info.value)


# ------------------------------------------------------------------------------------------ consensus round


class NoSecrets:
    """A Kube stand-in that has no Secret at all (404), and records what was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str | None, str]] = []

    def get(self, ref: k.ResourceRef, namespace: str | None, name: str) -> dict[str, Any] | None:
        self.asked.append((ref.plural, namespace, name))
        return None


def test_unreachable_or_keyless_reviewers_vote_against(export_text: str) -> None:
    kube = NoSecrets()
    configs = parse_reviewers("""
- name: keyless
  url: http://127.0.0.1:9/v1
  model: m
  timeoutSeconds: 1
  apiKeySecretRef: {namespace: tw, name: missing}
- name: unreachable
  url: http://127.0.0.1:9/v1
  model: m
  timeoutSeconds: 1
""")
    promotion = PromotionGate(kube, configs)  # type: ignore[arg-type]
    report = run_replay(export_text).report
    assert report is not None
    bot = make_bot("bot", live(promotion={"phase": 1, "minPaperMinutes": 0}, risk={"maxDrawdownPct": 30}))
    status = promotion.consensus(bot, valid_config(), report, NOW)
    votes = {v.reviewer: v for v in status.votes}
    assert kube.asked == [("secrets", "tw", "missing")]
    assert votes["keyless"].reason == "no answer: API key Secret tw/missing key apiKey not readable"
    assert votes["unreachable"].reason.startswith("no answer: connection failed")
    for name in ("keyless", "unreachable"):
        assert (votes[name].verdict.value, votes[name].risk.value) == ("HOLD", "MEDIUM")
    assert status.replay_result_hash == report.result_hash
    assert all(v.evidence_hash == status.evidence_hash for v in status.votes)
    assert len(status.votes) == 7  # five built-in reviewers and the two external ones


def test_a_bad_reviewers_file_stops_the_operator_before_it_starts(tmp_path: Any) -> None:
    from tradewarden.cli import main

    bad = tmp_path / "reviewers.yaml"
    bad.write_text("- name: x\n  url: ftp://x\n  model: m\n")
    assert main(["operator", "--reviewers", str(bad), "--metrics-port", "0"]) == 2
    assert main(["operator", "--reviewers", str(tmp_path / "missing.yaml"), "--metrics-port", "0"]) == 2
