"""Argo CD health checks (charts/tradewarden/argocd/health/*/health.lua), run for real in Lua.

Each script is executed by lupa's Lua 5.1 runtime, the language level of gopher-lua, which Argo CD
embeds: the object goes in as the global ``obj`` (a Lua table, converted recursively from JSON as Argo
CD does) and the returned table's ``status`` and ``message`` are compared with a table of cases. The
sample statuses are built with the API models themselves, so a renamed status field breaks these tests
rather than the health checks in production. Also here: the argocd-cm snippet matches the Lua files,
and examples/07-argocd/application.yaml installs this chart the way the README says.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from typing import Any

import lupa.lua51 as lua51
import pytest
import yaml

from support.kube import REPO
from tradewarden.api.conditions import Condition, ConditionStatus
from tradewarden.api.killswitch import KillSwitchStatus
from tradewarden.api.strategyconfig import StrategyConfigStatus
from tradewarden.api.tradingbot import BotPhase, KillMode, TradingBotStatus

ARGOCD = REPO / "charts" / "tradewarden" / "argocd"
KINDS = ("tradewarden.io_TradingBot", "tradewarden.io_StrategyConfig", "tradewarden.io_KillSwitch")
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def to_lua(runtime: Any, value: Any) -> Any:
    """JSON value -> Lua value: objects become tables, arrays 1-based tables, null nil."""
    if isinstance(value, dict):
        table = runtime.table()
        for key, item in value.items():
            if item is not None:
                table[key] = to_lua(runtime, item)
        return table
    if isinstance(value, list):
        table = runtime.table()
        for i, item in enumerate(value, start=1):
            table[i] = to_lua(runtime, item)
        return table
    return value


def health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    """Run the kind's health.lua on ``obj`` in a fresh Lua state, as Argo CD does per object."""
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = to_lua(runtime, obj)
    result = runtime.execute((ARGOCD / "health" / kind / "health.lua").read_text())
    assert result is not None, f"{kind}: the script returned nothing"
    assert set(result.keys()) <= {"status", "message"}, list(result.keys())
    return str(result["status"]), str(result["message"])


def cond(type_: str, status: str, message: str = "", reason: str = "Test", generation: int = 1) -> Condition:
    return Condition(type=type_, status=ConditionStatus(status), reason=reason, message=message,
                     observed_generation=generation, last_transition_time=T0)


def obj(kind: str, status: Any = None, generation: int = 1, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"apiVersion": "tradewarden.io/v1alpha1", "kind": kind,
                           "metadata": {"name": "x", "generation": generation}, "spec": spec or {}}
    if status is not None:
        out["status"] = status.to_wire()
    return out


def bot(*conditions: Condition, generation: int = 1, observed: int = 1, phase: BotPhase = BotPhase.RUNNING,
        kill: KillMode = KillMode.OFF) -> dict[str, Any]:
    return obj("TradingBot", TradingBotStatus(observed_generation=observed, phase=phase, kill_mode=kill,
                                              conditions=list(conditions)), generation=generation)


# ------------------------------------------------------------------------------------------- TradingBot

BOT_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("no status yet", obj("TradingBot"), "Progressing", "Waiting for the operator to reconcile the bot"),
    ("operator behind", bot(cond("Ready", "True"), generation=3, observed=2),
     "Progressing", "Waiting for the operator to observe generation 3 (observed 2)"),
    ("phase Invalid", bot(cond("ConfigValid", "False", "spec.params.fast: must be < slow (got 30 >= 20)"),
                          phase=BotPhase.INVALID),
     "Degraded", "spec.params.fast: must be < slow (got 30 >= 20)"),
    ("ConfigValid False while running on the last good config",
     bot(cond("ConfigValid", "False", "StrategyConfig momentum-btc not found"), cond("Ready", "True")),
     "Degraded", "StrategyConfig momentum-btc not found"),
    ("invalid beats halted: fix the config first",
     bot(cond("ConfigValid", "False", "bad"), cond("KillSwitchEngaged", "True"), phase=BotPhase.HALTED),
     "Degraded", "bad"),
    ("halted by a kill switch",
     bot(cond("KillSwitchEngaged", "True", "killswitch/global: venue incident"), phase=BotPhase.HALTED,
         kill=KillMode.HALT_ALL),
     "Suspended", "Kill switch engaged (halt_all): killswitch/global: venue incident"),
    ("close_only keeps running but is suspended",
     bot(cond("KillSwitchEngaged", "True"), cond("Ready", "True"), kill=KillMode.CLOSE_ONLY),
     "Suspended", "Kill switch engaged (close_only)"),
    ("phase Halted without a mode", bot(phase=BotPhase.HALTED), "Suspended", "Kill switch engaged (halted)"),
    ("runner lost", bot(cond("ConfigValid", "True"), cond("RunnerHealthy", "False", "no heartbeat for 45 s")),
     "Degraded", "no heartbeat for 45 s"),
    ("ready", bot(cond("ConfigValid", "True"), cond("RunnerHealthy", "True"), cond("Ready", "True", "signals")),
     "Healthy", "signals"),
    ("ready without a message", bot(cond("Ready", "True")), "Healthy", "Ready"),
    ("not ready yet", bot(cond("Ready", "False", "waiting for the runner's first heartbeat")),
     "Progressing", "waiting for the runner's first heartbeat"),
    ("status without conditions", bot(), "Progressing", "Waiting for the bot to become Ready"),
]


@pytest.mark.parametrize(("case", "body", "status", "message"), BOT_CASES, ids=[c[0] for c in BOT_CASES])
def test_tradingbot_health(case: str, body: dict[str, Any], status: str, message: str) -> None:
    assert health("tradewarden.io_TradingBot", body) == (status, message)


# ------------------------------------------------------------------------------------------- StrategyConfig


def config(*conditions: Condition, generation: int = 1, observed: int = 1) -> dict[str, Any]:
    return obj("StrategyConfig", StrategyConfigStatus(observed_generation=observed, conditions=list(conditions)),
               generation=generation, spec={"strategy": "momentum"})


CONFIG_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("no status yet", obj("StrategyConfig"), "Progressing", "Waiting for the operator to validate the config"),
    ("no Valid condition", config(), "Progressing", "Waiting for the operator to validate the config"),
    ("valid", config(cond("Valid", "True", "momentum 1.0.0")), "Healthy", "momentum 1.0.0"),
    ("valid without a message", config(cond("Valid", "True")), "Healthy", "Valid"),
    ("invalid", config(cond("Valid", "False", "spec.params.fast: must be < slow (got 30 >= 20)")),
     "Degraded", "spec.params.fast: must be < slow (got 30 >= 20)"),
    ("Valid is about an older spec", config(cond("Valid", "True"), generation=2, observed=1),
     "Progressing", "Waiting for the operator to validate generation 2"),
    ("unknown", config(cond("Valid", "Unknown", "strategy registry loading")),
     "Progressing", "strategy registry loading"),
]


@pytest.mark.parametrize(("case", "body", "status", "message"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_strategyconfig_health(case: str, body: dict[str, Any], status: str, message: str) -> None:
    assert health("tradewarden.io_StrategyConfig", body) == (status, message)


# ------------------------------------------------------------------------------------------- KillSwitch


def switch(mode: str, *conditions: Condition, matched: int = 0, acknowledged: int = 0,
           pending: tuple[str, ...] = (), generation: int = 1, observed: int = 1) -> dict[str, Any]:
    status = KillSwitchStatus(observed_generation=observed, conditions=list(conditions), matched=matched,
                              acknowledged=acknowledged, pending_bots=list(pending))
    return obj("KillSwitch", status, generation=generation, spec={"mode": mode})


PENDING = tuple(f"prod/bot-{i}" for i in range(7))
SWITCH_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("off", switch("off", matched=4), "Healthy", "off"),
    ("no spec at all", obj("KillSwitch"), "Healthy", "off"),
    ("engaged, operator has not counted yet", obj("KillSwitch", spec={"mode": "close_only"}),
     "Progressing", "engaging close_only: waiting for the operator to count acknowledgements"),
    ("engaged, status about the old generation", switch("halt_all", matched=3, generation=2, observed=1),
     "Progressing", "engaging halt_all: waiting for the operator to count acknowledgements"),
    ("engaged and acknowledged by all",
     switch("close_only", cond("Engaged", "True"), cond("Acknowledged", "True"), matched=3, acknowledged=3),
     "Suspended", "engaged: close_only, all 3 acknowledged"),
    ("engaged, two pending",
     switch("halt_all", cond("Engaged", "True"), cond("Acknowledged", "False"), matched=3, acknowledged=1,
            pending=("prod/a", "prod/b")),
     "Progressing", "engaged: halt_all, 1/3 acknowledged; pending: prod/a, prod/b"),
    ("engaged, many pending",
     switch("flatten", cond("Acknowledged", "False"), matched=9, acknowledged=2, pending=PENDING),
     "Progressing",
     "engaged: flatten, 2/9 acknowledged; pending: prod/bot-0, prod/bot-1, prod/bot-2, prod/bot-3, prod/bot-4"
     " and 2 more"),
    ("engaged, no bot matched", switch("flatten", cond("Engaged", "True"), matched=0),
     "Suspended", "engaged: flatten, no bots matched"),
]


@pytest.mark.parametrize(("case", "body", "status", "message"), SWITCH_CASES, ids=[c[0] for c in SWITCH_CASES])
def test_killswitch_health(case: str, body: dict[str, Any], status: str, message: str) -> None:
    assert health("tradewarden.io_KillSwitch", body) == (status, message)


# ------------------------------------------------------------------------------------------- packaging


@pytest.mark.parametrize("kind", KINDS)
def test_scripts_stay_inside_argocds_lua_sandbox(kind: str) -> None:
    """Only what Argo CD's Lua VM offers every health script: no modules, files, or OS calls."""
    source = (ARGOCD / "health" / kind / "health.lua").read_text()
    for forbidden in ("require", "io.", "os.", "dofile", "loadstring", "goto"):
        assert forbidden not in source, f"{kind}: uses {forbidden}"
    assert source.startswith("-- Argo CD health check"), "every file opens with a comment saying its role"


def test_argocd_cm_snippet_holds_exactly_the_lua_files() -> None:
    snippet = yaml.safe_load((ARGOCD / "argocd-cm-resource-customizations.yaml").read_text())
    assert snippet["kind"] == "ConfigMap"
    assert snippet["metadata"]["name"] == "argocd-cm"
    expected = {f"resource.customizations.health.{kind}": (ARGOCD / "health" / kind / "health.lua").read_text()
                for kind in KINDS}
    assert snippet["data"] == expected
    check = subprocess.run([sys.executable, str(REPO / "scripts" / "argocd_cm_snippet.py"), "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_argocd_application_installs_this_chart_safely() -> None:
    (app,) = [d for d in yaml.safe_load_all((REPO / "examples" / "07-argocd" / "application.yaml").read_text()) if d]
    assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
    source = app["spec"]["source"]
    assert (REPO / source["path"] / "Chart.yaml").is_file()
    assert source["path"] == "charts/tradewarden"
    assert source["helm"]["releaseName"] == app["metadata"]["name"]
    sync = app["spec"]["syncPolicy"]
    assert sync["automated"]["prune"] is False
    assert "ServerSideApply=true" in sync["syncOptions"]
    assert "finalizers" not in app["metadata"], "deleting the Application must not cascade to the CRDs"
    # The chart renders no KillSwitch (the operator creates the global one, --ensure-killswitch), so a sync
    # has no brake to reset and nothing needs ignoring; tests/integration/test_chart.py checks the render.
    assert "ignoreDifferences" not in app["spec"]
    assert (REPO / "examples" / "07-argocd" / "README.md").is_file()
