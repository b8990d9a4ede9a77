"""Prometheus tooling for the metrics, alerts and dashboard tests: promtool and prometheus from Debian's
``prometheus`` package, the metric names tradewarden exposes, and the metric names a PromQL expression uses.

Used by tests/unit/test_alert_rules.py, tests/unit/test_grafana_dashboard.py,
tests/unit/test_operator_metrics.py and tests/integration/test_prometheus.py. The binaries are installed by
``make prometheus`` (``make test`` runs it first); a test that needs them fails, never skips, when they
are missing, and says so.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from support.kube import REPO

RULES_FILE = REPO / "charts" / "tradewarden" / "files" / "prometheus-rules.yaml"
DASHBOARD_FILE = REPO / "charts" / "tradewarden" / "files" / "grafana-dashboard.json"
ALERT_TESTS = REPO / "tests" / "alerts"

#: Series Prometheus makes itself for every target; expressions may use them next to ours.
SYNTHETIC_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})


def tool(name: str) -> pathlib.Path:
    """The path of ``promtool`` or ``prometheus``; fails the calling test with what to run when missing."""
    found = shutil.which(name)
    if found is None:
        raise AssertionError(
            f"{name} is not installed. It comes from Debian's `prometheus` package: run `make prometheus` "
            "(apt-get install -y --no-install-recommends prometheus), then run the tests again.")
    return pathlib.Path(found)


def run_promtool(*args: str, input: str | None = None, cwd: pathlib.Path | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tool("promtool")), *args], input=input, capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def check_metrics(text: str, what: str) -> None:
    """``promtool check metrics`` must exit 0 and print nothing: every printed line is a lint problem."""
    proc = run_promtool("check", "metrics", input=text)
    problems = (proc.stdout + proc.stderr).strip()
    assert (proc.returncode, problems) == (0, ""), \
        f"promtool check metrics found problems in {what} (exit {proc.returncode}):\n{problems}"


def launch_prometheus(workdir: pathlib.Path, scrape_configs: list[dict[str, Any]],
                      binary: pathlib.Path | None = None) -> tuple[subprocess.Popen[bytes], str, pathlib.Path]:
    """A real Prometheus (Debian's unless ``binary`` is given) on a free loopback port with its own
    storage, the chart's rules and these scrape configs (1 s intervals); returns the process, its URL
    and its log once it is ready."""
    binary = binary or tool("prometheus")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yaml"],
        "scrape_configs": scrape_configs,
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = workdir / "prometheus.log"
    proc = subprocess.Popen(
        [str(binary), f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(OSError):
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(f"{url}/-/ready", timeout=1) as resp:
                if resp.status == 200:
                    return proc, url, log
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"prometheus was not ready within 30 s:\n{log.read_text(errors='replace')}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def query(url: str, promql: str) -> list[dict[str, Any]]:
    """An instant query against the Prometheus at ``url``: [{"metric": {labels}, "value": [t, "v"]}, ...]."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}), timeout=5) as resp:
        doc = json.loads(resp.read())
    assert doc["status"] == "success", doc
    result: list[dict[str, Any]] = doc["data"]["result"]
    return result


def rule_groups() -> list[dict[str, Any]]:
    """The chart's rule groups, as templates/prometheusrule.yaml renders them into a PrometheusRule."""
    doc = yaml.safe_load(RULES_FILE.read_text())
    groups: list[dict[str, Any]] = doc["groups"]
    return groups


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


# ------------------------------------------------------------------------------------------ what we expose


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name in a registry's exposition: ``_total``, ``_created``, ``_bucket``, ``_sum``,
    ``_count`` included, as Prometheus stores them."""
    text = generate_latest(registry).decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def operator_registry() -> CollectorRegistry:
    """The operator's registry with every family populated: counters and the histogram observed once,
    and a cache holding one bot with a full status and one engaged kill switch."""
    from tradewarden.controller.cache import Cache
    from tradewarden.controller.metrics import Metrics

    cache = Cache()
    cache.attach({"tw_bots": {("ns", "bot"): [full_bot_body()]},
                  "tw_killswitches": {"global": [{"metadata": {"name": "global"}, "spec": {"mode": "close_only"},
                                                  "status": {"pendingBots": ["ns/bot"], "maxAckLatencyMs": 40}}]}})
    metrics = Metrics(CollectorRegistry(), cache)
    metrics.observe_reconcile("TradingBot", "success", 0.01)
    metrics.count_write("patch", "tradingbots")
    return metrics.registry


def runner_registry() -> CollectorRegistry:
    """A runner's registry with every labelled family touched once."""
    from tradewarden.runner.metrics import RunnerMetrics

    m = RunnerMetrics("ns", "bot")
    m.set_kill_mode("off")
    m.set_mode("paper")
    m.order("paper", "filled")
    m.intent("main", "strategy", "executed")
    m.rejection("entry_rate")
    m.reload("accepted")
    m.bars.inc()
    return m.registry


def tradewarden_names() -> set[str]:
    return exposed_names(operator_registry()) | exposed_names(runner_registry())


def full_bot_body(namespace: str = "ns", name: str = "bot") -> dict[str, Any]:
    """A TradingBot as the API server returns it once the operator, the gate and a runner have all written."""
    return {
        "apiVersion": "tradewarden.io/v1alpha1", "kind": "TradingBot",
        "metadata": {"namespace": namespace, "name": name, "uid": "u1", "generation": 3},
        "spec": {"strategyConfigRef": "momentum", "exchange": {"id": "binance"}, "mode": "live",
                 "placement": "external"},
        "status": {
            "phase": "Running", "effectiveMode": "paper",
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Ready"},
                {"type": "ConfigValid", "status": "True", "reason": "Valid"},
                {"type": "RunnerHealthy", "status": "True", "reason": "Heartbeat"},
                {"type": "ReplayVerified", "status": "False", "reason": "ReplayResiduals"},
                {"type": "ConsensusApproved", "status": "False", "reason": "ConsensusNotApproved"},
                {"type": "Promoted", "status": "False", "reason": "ReplayResiduals"},
                {"type": "KillSwitchEngaged", "status": "False", "reason": "NotEngaged"},
            ],
            "replay": {"residuals": 3, "tradesCompared": 40, "passed": False},
            "consensus": {"phase": 1, "scorePct": 62.5, "thresholdPct": 70.0, "decision": "Held"},
            "runner": {"equity": 9500.0, "pnl": -500.0, "drawdownPct": 5.0, "openPositions": 1},
        },
    }


# ------------------------------------------------------------------------------------------ PromQL


#: Words of PromQL that look like identifiers but name no metric.
_KEYWORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool",
    "inf", "nan", "atan2",
})
#: Grafana's built-in interval variables and what to put in their place so promtool can parse.
_GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def grafana_to_promql(expr: str) -> str:
    """Replace Grafana's variables by plain values: intervals by durations, ``$var`` by a label value."""
    for var, value in _GRAFANA_INTERVALS.items():
        expr = expr.replace(var, value)
    return re.sub(r"\$\{?[A-Za-z_]\w*(?::\w+)?\}?", "x", expr)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects.

    Not a full parser (promtool parses; this only reads names out of text promtool has accepted):
    strings, label matchers ``{...}``, ranges ``[...]`` and the label lists of ``by``/``without``/
    ``on``/``ignoring``/``group_*`` are removed; what remains that looks like an identifier, is not
    followed by ``(`` (a function) and is not a keyword, is a metric name. ``{__name__="x"}`` is read too.
    """
    names = set(re.findall(r'__name__\s*=\s*"([^"]+)"', expr))
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        if re.fullmatch(r"\d+[smhdwy]", word):
            continue
        names.add(word)
    return names
