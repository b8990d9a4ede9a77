"""The chart's alerting rules (charts/tradewarden/files/prometheus-rules.yaml), checked by promtool.

``promtool check rules`` parses every expression and template; ``promtool test rules`` runs the cases in
tests/alerts/*.yaml, which show each alert firing and not firing on synthetic series. promtool needs a
plain rules file: the test writes the chart's ``groups:`` (what templates/prometheusrule.yaml renders
into the PrometheusRule) to a temporary file next to copies of the cases. promtool comes from Debian's
prometheus package (``make prometheus``); without it these tests fail and say so.

Also checked without promtool: each alert's labels and annotations, that its runbook_url points to a
heading that exists, and that every alert has a firing and a not-firing case.
"""

from __future__ import annotations

import pathlib
import re
import shutil
from typing import Any

import pytest
import yaml

from support.kube import REPO
from support.prom import ALERT_TESTS, alerting_rules, rule_groups, run_promtool

RUNBOOK_PREFIX = "https://github.com/tradewarden/tradewarden/blob/main/"
EXPECTED_ALERTS = {
    "TradewardenDrawdownBreach", "TradewardenRunnerHeartbeatLost", "TradewardenKillSwitchNotAcknowledged",
    "TradewardenReplayFailing", "TradewardenConsensusBelowThreshold", "TradewardenReconcileErrors",
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A plain rules file from the chart's groups, and copies of the promtool cases that load it."""
    out = tmp_path_factory.mktemp("alerts")
    (out / "tradewarden-rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    for case in sorted(ALERT_TESTS.glob("*.yaml")):
        shutil.copy(case, out / case.name)
    return out


def cases() -> list[pathlib.Path]:
    found = sorted(ALERT_TESTS.glob("*.yaml"))
    assert found, f"no promtool test cases in {ALERT_TESTS}"
    return found


def test_promtool_check_rules(workdir: pathlib.Path) -> None:
    proc = run_promtool("check", "rules", "tradewarden-rules.yaml", cwd=workdir)
    assert proc.returncode == 0, f"promtool check rules failed:\n{proc.stdout}{proc.stderr}"
    assert f"SUCCESS: {len(alerting_rules())} rules found" in proc.stdout, proc.stdout


def test_promtool_test_rules(workdir: pathlib.Path) -> None:
    proc = run_promtool("test", "rules", *[c.name for c in cases()], cwd=workdir)
    assert proc.returncode == 0, f"promtool test rules failed:\n{proc.stdout}{proc.stderr}"
    assert proc.stdout.count("SUCCESS") == len(cases()), proc.stdout


def test_the_expected_alerts_exist_once_each() -> None:
    names = [rule["alert"] for rule in alerting_rules()]
    assert sorted(names) == sorted(EXPECTED_ALERTS)


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda r: r["alert"])
def test_alert_labels_and_annotations(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in ("critical", "warning")
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    # Who is concerned: the bot, or the cluster-scoped switch, or the operator's failing kind.
    subject: tuple[str, ...] = ("$labels.namespace", "$labels.bot")
    if "killswitch" in rule["expr"]:
        subject = ("$labels.killswitch",)
    elif "reconciles_total" in rule["expr"]:
        subject = ("$labels.kind",)
    for key in ("summary", "description"):
        missing = [s for s in subject if s not in annotations[key]]
        assert not missing, f"{rule['alert']}: {key} does not name {missing}"


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda r: r["alert"])
def test_runbook_url_points_to_an_existing_section(rule: dict[str, Any]) -> None:
    url = rule["annotations"]["runbook_url"]
    assert url.startswith(RUNBOOK_PREFIX), url
    path, _, anchor = url.removeprefix(RUNBOOK_PREFIX).partition("#")
    doc = REPO / path
    assert doc.is_file(), f"{rule['alert']}: {path} does not exist"
    anchors = {github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", doc.read_text(), re.MULTILINE)}
    assert anchor in anchors, f"{rule['alert']}: no heading #{anchor} in {path} (headings: {sorted(anchors)})"


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in cases():
        doc = yaml.safe_load(case.read_text())
        assert doc["rule_files"] == ["tradewarden-rules.yaml"], case.name
        for test in doc["tests"]:
            for check in test.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert EXPECTED_ALERTS - firing == set(), "alerts never shown firing"
    assert EXPECTED_ALERTS - quiet == set(), "alerts never shown quiet"


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")
