"""The chart's Grafana dashboard (charts/tradewarden/files/grafana-dashboard.json), checked structurally.

Valid JSON with the fixed uid, templating variables ``namespace`` and ``bot`` from ``label_values``, unique
panel ids, a gridPos on every panel and no two panels overlapping; every PromQL expression parses (they
are written into a temporary rules file as recording rules, Grafana's variables replaced by plain
values, and ``promtool check rules`` parses each one; promtool comes from ``make prometheus``); and every
metric an expression names, in the dashboard and in the alert rules, is one the operator or a runner
really exposes (their registries are built in-process, every family populated, and read back from the
exposition text, so ``_total``, ``_bucket``, ``_sum`` and ``_count`` are the names Prometheus stores).
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

import pytest
import yaml

from support.prom import (
    DASHBOARD_FILE,
    SYNTHETIC_SERIES,
    alerting_rules,
    grafana_to_promql,
    metric_names,
    run_promtool,
    tradewarden_names,
)

Panel = dict[str, Any]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return doc


@pytest.fixture(scope="module")
def exposed() -> set[str]:
    return tradewarden_names() | set(SYNTHETIC_SERIES)


def all_panels(dashboard: dict[str, Any]) -> list[Panel]:
    out: list[Panel] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels") or [])  # the panels of a collapsed row
    return out


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) of every panel target and every query variable."""
    out = [(f"panel {p['id']} ({p['title']}) target {t['refId']}", t["expr"])
           for p in all_panels(dashboard) for t in p.get("targets") or []]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["definition"])
            assert match, f"variable {var['name']}: not a label_values() query: {var['definition']}"
            out.append((f"variable {var['name']}", match.group(1)))
    return out


def test_identity_and_schema(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "tradewarden-fleet"
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["title"]
    assert "tradewarden" in dashboard["tags"]


def test_templating_namespace_and_bot_from_label_values(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "bot"):
        var = variables[name]
        assert var["type"] == "query"
        assert re.fullmatch(rf"label_values\(\w+(\{{.*\}})?, {name}\)", var["definition"]), var["definition"]
        assert var["query"]["query"] == var["definition"]
        assert (var["includeAll"], var["multi"], var["allValue"]) == (True, True, ".*")
    # The bot list follows the namespace choice.
    assert '$namespace' in variables["bot"]["definition"]


def test_panels_have_unique_ids_and_a_place_on_the_grid(dashboard: dict[str, Any]) -> None:
    panels = all_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    cells: dict[tuple[int, int], int] = {}
    for p in panels:
        grid = p["gridPos"]
        assert {"h", "w", "x", "y"} <= set(grid), f"panel {p['id']}: incomplete gridPos {grid}"
        assert all(isinstance(grid[k], int) and grid[k] >= 0 for k in "hwxy"), p["id"]
        assert min(grid["w"], grid["h"]) >= 1, f"panel {p['id']}: {grid}"
        assert grid["x"] + grid["w"] <= 24, f"panel {p['id']}: {grid}"
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"panels {cells[(x, y)]} and {p['id']} overlap at {(x, y)}"
                cells[(x, y)] = p["id"]


def test_every_panel_queries_the_chosen_prometheus(dashboard: dict[str, Any]) -> None:
    for p in all_panels(dashboard):
        if p["type"] == "row":
            continue
        assert p["title"], f"panel {p['id']}: no title"
        assert p.get("description"), f"panel {p['id']}: no description"
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["id"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs, f"panel {p['id']}: no target"
        assert len(refs) == len(set(refs)), f"panel {p['id']}: targets {refs}"
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"], f"panel {p['id']} {t['refId']}"
            assert t["expr"].strip(), f"panel {p['id']} {t['refId']}: empty expression"


def test_the_fleet_questions_are_answered(dashboard: dict[str, Any]) -> None:
    """What the issue asks the dashboard to show, each by the metric that answers it."""
    used = {name for _, expr in expressions(dashboard) for name in metric_names(grafana_to_promql(expr))}
    wanted = {
        "tradewarden_operator_bots",  # bots by mode and phase
        "tradewarden_runner_pnl", "tradewarden_operator_bot_pnl", "tradewarden_runner_equity",
        "tradewarden_runner_drawdown_ratio", "tradewarden_operator_bot_drawdown_ratio",
        "tradewarden_runner_max_drawdown_ratio",
        "tradewarden_operator_killswitch_engaged", "tradewarden_operator_killswitch_pending_bots",
        "tradewarden_runner_kill_mode",
        "tradewarden_operator_bot_condition",  # gate status
        "tradewarden_operator_killswitch_max_ack_latency_seconds",
        "tradewarden_runner_orders_total", "tradewarden_runner_risk_rejections_total",
    }
    assert wanted - used == set()


def test_every_expression_parses(dashboard: dict[str, Any], tmp_path: pathlib.Path) -> None:
    rules = [{"record": f"dashboard:expr_{i}", "expr": grafana_to_promql(expr)}
             for i, (_, expr) in enumerate(expressions(dashboard))]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False))
    proc = run_promtool("check", "rules", str(path))
    if proc.returncode != 0:
        where = dict(enumerate(w for w, _ in expressions(dashboard)))
        raise AssertionError("promtool cannot parse dashboard expressions (dashboard:expr_N = N-th below):\n"
                             + "\n".join(f"  {i}: {w}" for i, w in where.items()) + f"\n{proc.stdout}{proc.stderr}")
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout, proc.stdout


def test_dashboard_names_only_metrics_that_exist(dashboard: dict[str, Any], exposed: set[str]) -> None:
    unknown = {(where, name) for where, expr in expressions(dashboard)
               for name in metric_names(grafana_to_promql(expr)) if name not in exposed}
    assert unknown == set(), f"metrics nobody exposes: {sorted(unknown)}"


def test_alert_rules_name_only_metrics_that_exist(exposed: set[str]) -> None:
    unknown = {(rule["alert"], name) for rule in alerting_rules() for name in metric_names(rule["expr"])
               if name not in exposed}
    assert unknown == set(), f"metrics nobody exposes: {sorted(unknown)}"


def test_exposed_names_are_what_prometheus_stores(exposed: set[str]) -> None:
    """The reference set itself: suffixed counter and histogram names, not the family names."""
    assert {"tradewarden_runner_orders_total", "tradewarden_operator_reconcile_duration_seconds_bucket",
            "tradewarden_operator_reconcile_duration_seconds_count", "tradewarden_operator_bot_condition",
            "tradewarden_runner_max_drawdown_ratio"} <= exposed
    assert "tradewarden_runner_orders" not in exposed
