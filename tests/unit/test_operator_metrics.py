"""Unit tests of the operator's per-bot gauges (tradewarden.controller.metrics.CacheCollector).

No cluster: a real ``Cache`` is attached to plain dicts shaped like kopf's indices and filled with
TradingBot bodies; the scrape text is parsed back and checked series by series, and passed through
``promtool check metrics`` (Debian's prometheus package; ``make prometheus``).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from support.prom import check_metrics, full_bot_body, metric_names, operator_registry
from tradewarden.controller.cache import Cache
from tradewarden.controller.metrics import Metrics
from tradewarden.controller.status import BOT_CONDITIONS

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(*bots: dict[str, Any]) -> Series:
    cache = Cache()
    cache.attach({"tw_bots": {(b["metadata"]["namespace"], b["metadata"]["name"]): [b] for b in bots}})
    registry = CollectorRegistry()
    Metrics(registry, cache)
    out: Series = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(series: Series, name: str, **labels: str) -> float | None:
    return series.get((name, tuple(sorted(labels.items()))))


def named(series: Series, name: str) -> list[dict[str, str]]:
    return [dict(labels) for (n, labels) in series if n == name]


def test_condition_gauges_one_per_status_like_kube_state_metrics() -> None:
    series = scrape(full_bot_body("ns", "a"))
    rows = named(series, "tradewarden_operator_bot_condition")
    assert len(rows) == len(BOT_CONDITIONS) * 3
    for condition, now in (("Ready", "True"), ("ReplayVerified", "False"), ("KillSwitchEngaged", "False"),
                           ("ConfigApplied", "Unknown")):  # ConfigApplied is not in the body: Unknown
        for status in ("True", "False", "Unknown"):
            got = value(series, "tradewarden_operator_bot_condition", namespace="ns", bot="a",
                        condition=condition, status=status)
            assert got == (1.0 if status == now else 0.0), (condition, status, got)
    # Exactly one status is current for each condition.
    for condition in BOT_CONDITIONS:
        assert sum(v for (n, labels), v in series.items() if n == "tradewarden_operator_bot_condition"
                   and ("condition", condition) in labels) == 1.0


def test_gate_and_runner_gauges_are_ratios_from_the_status() -> None:
    series = scrape(full_bot_body("ns", "a"))
    key = {"namespace": "ns", "bot": "a"}
    assert value(series, "tradewarden_operator_consensus_score_ratio", **key) == 0.625
    assert value(series, "tradewarden_operator_consensus_threshold_ratio", **key) == 0.7
    assert value(series, "tradewarden_operator_replay_residuals", **key) == 3.0
    assert value(series, "tradewarden_operator_bot_drawdown_ratio", **key) == 0.05
    assert value(series, "tradewarden_operator_bot_pnl", **key) == -500.0
    assert value(series, "tradewarden_operator_bot_info", **key, phase="Running", requested_mode="live",
                 effective_mode="paper", placement="external") == 1.0


def test_absent_evidence_exports_no_series_rather_than_a_zero() -> None:
    """A bot with no replay, consensus or runner yet: a 0 would read as "perfect replay" or "no loss"."""
    fresh = {"metadata": {"namespace": "ns", "name": "fresh"}, "spec": {"strategyConfigRef": "m"}}
    series = scrape(fresh, full_bot_body("ns", "full"))
    for name in ("tradewarden_operator_consensus_score_ratio", "tradewarden_operator_consensus_threshold_ratio",
                 "tradewarden_operator_replay_residuals", "tradewarden_operator_bot_drawdown_ratio",
                 "tradewarden_operator_bot_pnl"):
        assert [r["bot"] for r in named(series, name)] == ["full"], name
    # A fresh bot still has its info and its conditions (all Unknown), so it shows on the dashboard.
    assert value(series, "tradewarden_operator_bot_info", namespace="ns", bot="fresh", phase="Pending",
                 requested_mode="signals", effective_mode="signals", placement="cluster") == 1.0
    assert value(series, "tradewarden_operator_bot_condition", namespace="ns", bot="fresh", condition="Ready",
                 status="Unknown") == 1.0


def test_malformed_status_never_breaks_the_scrape() -> None:
    odd = {"metadata": {"namespace": "ns", "name": "odd"},
           "status": {"conditions": ["not-a-map", {"type": "Ready", "status": "True"}],
                      "consensus": {"scorePct": "high", "thresholdPct": True}, "replay": None,
                      "runner": {"pnl": None, "drawdownPct": 2}}}
    series = scrape(odd)
    assert named(series, "tradewarden_operator_consensus_score_ratio") == []
    assert named(series, "tradewarden_operator_consensus_threshold_ratio") == []
    assert named(series, "tradewarden_operator_bot_pnl") == []
    assert value(series, "tradewarden_operator_bot_drawdown_ratio", namespace="ns", bot="odd") == 0.02
    assert value(series, "tradewarden_operator_bot_condition", namespace="ns", bot="odd", condition="Ready",
                 status="True") == 1.0


def test_bots_by_phase_and_mode_still_counts_every_bot() -> None:
    series = scrape(full_bot_body("ns", "a"), full_bot_body("ns", "b"))
    total = sum(v for (n, _), v in series.items() if n == "tradewarden_operator_bots")
    assert total == 2.0


def test_operator_exposition_passes_promtool() -> None:
    check_metrics(generate_latest(operator_registry()).decode(), "the operator's metrics (in-process)")


def test_metric_name_reader() -> None:
    assert metric_names('sum by (namespace, bot) (rate(a_total{x="y",bot=~"$bot"}[5m])) > on(bot) b') == \
        {"a_total", "b"}
    assert metric_names('histogram_quantile(0.95, sum by (le) (rate(h_bucket[5m]))) or vector(0)') == {"h_bucket"}
    assert metric_names('time() - hb_seconds offset 5m > bool 60 and up == 1') == {"hb_seconds", "up"}
    assert metric_names('{__name__="named_total"} unless ignoring(mode) k{mode!="off"}') == {"named_total", "k"}
