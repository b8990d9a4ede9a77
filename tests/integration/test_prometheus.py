"""A real Prometheus scraping a real operator and two real runners, all on loopback.

The stack, built once for the module, is the one ``make demo`` runs: the exchange emulator in-process;
``tradewarden operator`` as a subprocess (tests/support/operator.py) watching this module's namespaces;
two TradingBots with placement ``external``, so the operator makes their runtime ConfigMap, RBAC and
Lease but no pod; and for each bot ``tradewarden runner`` as a subprocess authenticated by the bot's own
ServiceAccount token, as an external runner would be. (support.runner.BotEnv is not used: it plays the
operator's part itself, and would fight the real operator over the same objects.) Then ``prometheus``
from Debian's package (``make prometheus``; the test fails, never skips, without it) starts on a free
loopback port with a temporary config scraping the three targets every second and the chart's alert
rules loaded.

What it proves:
* ``promtool check metrics`` finds no problem in what the live processes actually serve;
* Prometheus scrapes all three targets, and PromQL sees the series the dashboard and alerts use, with
  the right labels and values (equity per bot from its paper balance, the drawdown limit, bots by
  phase and mode, per-bot conditions and PnL from the operator);
* the operator's per-bot series keep the bot's namespace when scraped with honor_labels, as the chart's
  ServiceMonitor does;
* Prometheus loads the chart's rules and evaluates every one against these real series without error.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from support.kube import Cluster, poll
from support.operator import OperatorProcess, strategy_config, trading_bot
from support.prom import check_metrics, launch_prometheus, rule_groups, stop, tool
from support.runner import VENV_BIN, RunnerProcess, free_port, token_kubeconfig
from tradewarden.emulator import Emulator

pytestmark = pytest.mark.cluster

#: Bot name -> (paper balance, risk.maxDrawdownPct): distinct values, so a series cannot be mistaken
#: for the other bot's.
BOTS = {"alpha": (25000.0, 10.0), "beta": (5000.0, 0.0)}


@dataclass
class Stack:
    cluster: Cluster
    namespace: str
    operator: OperatorProcess
    runners: dict[str, RunnerProcess]
    prometheus: subprocess.Popen[bytes]
    prometheus_url: str
    prometheus_log: pathlib.Path

    def logs(self) -> str:
        parts = [self.operator.log()[-4000:]]
        parts += [f"--- runner {name} ---\n{r.output()[-2000:]}" for name, r in self.runners.items()]
        parts.append(f"--- prometheus ---\n{self.prometheus_log.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.prometheus_url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=5) as resp:
            doc = json.loads(resp.read())
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query: [{"metric": {labels}, "value": [t, "v"]}, ...]."""
        data = self.api("/api/v1/query", query=promql)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def until(self, predicate: Callable[[], Any], what: str, timeout: float = 45.0) -> Any:
        return poll(predicate, timeout=timeout, interval=0.5, what=what, tolerate=(AssertionError, OSError),
                    context=self.logs)


def by_bot(result: list[dict[str, Any]]) -> dict[str, float]:
    return {r["metric"]["bot"]: float(r["value"][1]) for r in result}


def exists(cluster: Cluster, kind: str, name: str, namespace: str) -> bool:
    return cluster.kubectl("get", kind, name, "-n", namespace, check=False).returncode == 0


def http_text(port: int, path: str = "/metrics") -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        text: str = resp.read().decode()
    return text


# ------------------------------------------------------------------------------------------ the stack


def start_runner(cluster: Cluster, namespace: str, bot: str, workdir: pathlib.Path) -> RunnerProcess:
    """``tradewarden runner`` for an external bot, with the token of the ServiceAccount the operator made."""
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = token_kubeconfig(cluster, namespace, f"{bot}-runner", workdir / "kubeconfig")
    port = free_port()
    log = workdir / "runner.log"
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["TRADEWARDEN_HEARTBEAT_SECONDS"] = "1"
    proc = subprocess.Popen(
        [str(VENV_BIN / "tradewarden"), "runner", "--bot", f"{namespace}/{bot}", "--journal", str(workdir / "journal"),
         "--metrics-port", str(port), "--kubeconfig", str(kubeconfig), "--tick-seconds", "0.5"],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)
    return RunnerProcess(proc, log, port)


def start_prometheus(workdir: pathlib.Path, operator_port: int, runner_ports: list[int]
                     ) -> tuple[subprocess.Popen[bytes], str, pathlib.Path]:
    return launch_prometheus(workdir, [
        # honor_labels as in the chart's ServiceMonitor: the operator's per-bot series carry the bot's
        # namespace, which must win over a target's own `namespace` label.
        {"job_name": "tradewarden-operator", "honor_labels": True,
         "static_configs": [{"targets": [f"127.0.0.1:{operator_port}"]}]},
        {"job_name": "tradewarden-runners",
         "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in runner_ports]}]},
    ])


@pytest.fixture(scope="module")
def stack(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tool("prometheus")  # fail before starting anything when it is missing
    tool("promtool")
    work = tmp_path_factory.mktemp("prometheus-stack")
    emulator = Emulator(seed=5, bar_seconds=None, balances={"USDT": 100000})
    emulator.start()
    op = OperatorProcess(cluster, work / "operator")
    runners: dict[str, RunnerProcess] = {}
    prometheus: subprocess.Popen[bytes] | None = None
    try:
        op.start()
        ns = op.namespace("prom")
        cluster.apply(strategy_config(), namespace=ns)
        for name, (balance, max_dd) in BOTS.items():
            cluster.apply(trading_bot(name, mode="paper", placement="external",
                                      exchange={"id": "binance", "sandbox": False, "apiUrl": emulator.url},
                                      capital={"paperBalance": balance}, risk={"maxDrawdownPct": max_dd}),
                          namespace=ns)
        for name in BOTS:
            for kind, obj in (("serviceaccount", f"{name}-runner"), ("configmap", f"{name}-runtime")):
                cluster.wait_for(lambda k=kind, o=obj: exists(cluster, k, o, ns), timeout=60,
                                 interval=0.3, what=f"the operator to create {kind} {ns}/{obj}")
            runners[name] = start_runner(cluster, ns, name, work / name)
        prometheus, url, log = start_prometheus(work / "prometheus", op.port,
                                                [r.metrics_port for r in runners.values()])
        yield Stack(cluster, ns, op, runners, prometheus, url, log)
    finally:
        if prometheus is not None:
            stop(prometheus)
        for runner in runners.values():
            runner.stop()
        op.stop()
        op.delete_namespaces()
        emulator.stop()


@pytest.fixture(scope="module")
def settled(stack: Stack) -> Stack:
    """The stack once every runner heartbeats and the operator has copied their telemetry into status."""
    def healthy() -> bool:
        for name in BOTS:
            bot = stack.cluster.get_json("tb", name, "-n", stack.namespace)
            status = bot.get("status") or {}
            conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
            if conditions.get("RunnerHealthy") != "True" or "runner" not in status:
                return False
        return True

    stack.until(healthy, "RunnerHealthy=True and status.runner on both bots", timeout=60)
    return stack


# ------------------------------------------------------------------------------------------ tests


def test_promtool_finds_no_problem_in_the_live_metrics(settled: Stack) -> None:
    check_metrics(http_text(settled.operator.port), "the operator's /metrics")
    for name, runner in settled.runners.items():
        text = http_text(runner.metrics_port)
        assert f'tradewarden_runner_equity{{bot="{name}"' in text
        check_metrics(text, f"runner {name}'s /metrics")


def test_prometheus_scrapes_the_operator_and_both_runners(settled: Stack) -> None:
    s = settled
    ns = s.namespace

    def targets_up() -> dict[str, str]:
        active = s.api("/api/v1/targets", state="active")["activeTargets"]
        health = {t["scrapeUrl"]: t["health"] for t in active}
        return health if len(health) == 3 and set(health.values()) == {"up"} else {}

    s.until(targets_up, "all three targets up in /api/v1/targets")
    up = s.until(lambda: (r := s.query("up == 1")) and len(r) == 3 and r, "up == 1 for the three targets")
    assert sorted(r["metric"]["job"] for r in up) == ["tradewarden-operator", "tradewarden-runners",
                                                      "tradewarden-runners"]

    # Equity per bot: each runner reports its own paper balance (no trade: bars do not advance).
    equity = s.until(lambda: (r := by_bot(s.query(f'tradewarden_runner_equity{{namespace="{ns}"}}')))
                     and len(r) == 2 and all(v > 0 for v in r.values()) and r, "equity of both runners")
    assert equity == {name: balance for name, (balance, _) in BOTS.items()}
    for r in s.query(f'tradewarden_runner_equity{{namespace="{ns}"}}'):
        assert r["metric"]["job"] == "tradewarden-runners"
        assert r["metric"]["instance"] == f"127.0.0.1:{s.runners[r['metric']['bot']].metrics_port}"

    assert by_bot(s.query(f'tradewarden_runner_kill_mode{{namespace="{ns}", mode="off"}} == 1')) == \
        {"alpha": 1.0, "beta": 1.0}
    assert by_bot(s.query(f'tradewarden_runner_mode{{namespace="{ns}", mode="paper"}} == 1')) == \
        {"alpha": 1.0, "beta": 1.0}
    assert by_bot(s.query(f'tradewarden_runner_max_drawdown_ratio{{namespace="{ns}"}}')) == \
        {"alpha": 0.1, "beta": 0.0}
    heartbeat = by_bot(s.query(f'time() - tradewarden_runner_heartbeat_timestamp_seconds{{namespace="{ns}"}}'))
    assert set(heartbeat) == set(BOTS)
    assert all(age < 30 for age in heartbeat.values()), heartbeat

    # The operator: it watches only this module's namespaces, so it counts exactly our two bots.
    total = s.until(lambda: (r := s.query("sum(tradewarden_operator_bots)")) and r, "sum of bots")
    assert float(total[0]["value"][1]) == len(BOTS)
    paper = s.query('sum(tradewarden_operator_bots{mode="paper", phase="Running"})')
    assert float(paper[0]["value"][1]) == len(BOTS)

    def conditions() -> dict[str, float]:
        return by_bot(s.query(
            f'tradewarden_operator_bot_condition{{namespace="{ns}", condition="RunnerHealthy", status="True"}} == 1'))

    assert s.until(conditions, "RunnerHealthy=True series of both bots") == {"alpha": 1.0, "beta": 1.0}
    info = s.query(f'tradewarden_operator_bot_info{{namespace="{ns}"}}')
    assert {r["metric"]["bot"]: (r["metric"]["requested_mode"], r["metric"]["effective_mode"],
                                 r["metric"]["placement"]) for r in info} == \
        {name: ("paper", "paper", "external") for name in BOTS}
    pnl = s.until(lambda: (r := by_bot(s.query(f'tradewarden_operator_bot_pnl{{namespace="{ns}"}}')))
                  and len(r) == 2 and r, "status.runner.pnl of both bots")
    assert pnl == {"alpha": 0.0, "beta": 0.0}
    # No evidence yet: no gate series rather than zeros.
    assert s.query(f'tradewarden_operator_consensus_score_ratio{{namespace="{ns}"}}') == []
    # The dashboard's PnL panel joins the two sources on (namespace, bot) without a matching error.
    joined = s.query(f'max by (namespace, bot) (tradewarden_runner_pnl{{namespace="{ns}"}}) '
                     f'or max by (namespace, bot) (tradewarden_operator_bot_pnl{{namespace="{ns}"}})')
    assert sorted(r["metric"]["bot"] for r in joined) == sorted(BOTS)


def test_prometheus_evaluates_every_chart_rule_without_error(settled: Stack) -> None:
    s = settled
    expected = sum(1 for g in rule_groups() for _ in g["rules"])

    def evaluated() -> list[dict[str, Any]]:
        rules = [r for g in s.api("/api/v1/rules")["groups"] for r in g["rules"]]
        return rules if len(rules) == expected and all(r.get("lastEvaluation", "").startswith("20")
                                                       and r["health"] != "unknown" for r in rules) else []

    rules = s.until(evaluated, "every rule evaluated once")
    broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert broken == {}, f"rules failing on real series: {broken}"
    # Nothing is wrong with these two healthy paper bots: no drawdown breach (it has no `for`).
    firing = s.query(f'ALERTS{{alertname="TradewardenDrawdownBreach", namespace="{s.namespace}"}}')
    assert firing == []
