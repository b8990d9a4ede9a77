"""StrategyConfig: which strategy a bot runs, with which settings and mode overlays.

Reconciled by ``tradewarden.controller`` (validated against the strategy registry) and read, through
each bot's runtime ConfigMap, by the runner.
"""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import Field

from tradewarden.api.base import FreeForm, WireModel
from tradewarden.api.conditions import Condition
from tradewarden.api.meta import AGE, ObjectMeta, PrinterColumn, ResourceInfo

INSTRUMENT_PATTERN = r"^[A-Z0-9]{1,20}/[A-Z0-9]{1,20}(:[A-Z0-9]{1,20})?$"
#: A symbol in ccxt's unified form: BASE/QUOTE or BASE/QUOTE:SETTLE.
Instrument = Annotated[str, Field(max_length=64, pattern=INSTRUMENT_PATTERN)]


class Timeframe(enum.StrEnum):
    M1 = "1m"
    M3 = "3m"
    M5 = "5m"
    M15 = "15m"
    M30 = "30m"
    H1 = "1h"
    H2 = "2h"
    H4 = "4h"
    D1 = "1d"


TIMEFRAME_SECONDS: dict[str, int] = {
    "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200, "4h": 14400,
    "1d": 86400,
}


class StrategyMode(enum.StrEnum):
    """Mode overlays from the runbook: each steps further toward safety than the one before."""

    PRIMARY = "primary"
    FALLBACK = "fallback"
    CONSERVATIVE = "conservative"
    FLAT = "flat"


#: The order of automatic step-down on each new kill event.
MODE_STEP_DOWN: tuple[StrategyMode, ...] = (
    StrategyMode.PRIMARY, StrategyMode.FALLBACK, StrategyMode.CONSERVATIVE, StrategyMode.FLAT,
)


class ModeOverlay(WireModel):
    """Settings that replace the base ones while this mode is active."""

    timeframe: Timeframe | None = Field(default=None, description="Bar timeframe in this mode.")
    params: FreeForm | None = Field(
        default=None, description="Strategy params merged over spec.params in this mode.")
    risk_scale: float = Field(
        default=1.0, ge=0.0, le=1.0,
        description="Multiplies the position size in this mode (1 = unchanged, 0 = no new risk).")
    entries_allowed: bool = Field(
        default=True, description="False blocks new entries in this mode (exits still run). "
                                  "The 'flat' mode is a safety profile and never allows entries.")


class ModeOverlays(WireModel):
    """Optional overlays per strategy mode (primary, fallback, conservative, flat)."""

    primary: ModeOverlay | None = Field(default=None, description="Normal operation.")
    fallback: ModeOverlay | None = Field(default=None, description="First step down, e.g. a slower timeframe.")
    conservative: ModeOverlay | None = Field(default=None, description="Second step down: smaller and slower.")
    flat: ModeOverlay | None = Field(default=None, description="Safety profile: no new entries.")


class StrategyConfigSpec(WireModel):
    """Which strategy to run and with which settings."""

    strategy: str = Field(
        description="Key of the strategy in the registry, for example 'momentum'. "
                    "An unknown key makes the config invalid (status condition Valid=False).",
        min_length=1, max_length=63, pattern=r"^[a-z][a-z0-9_]*$")
    instruments: list[Instrument] = Field(
        default_factory=list, max_length=20,
        description="Symbols in ccxt's unified form, e.g. 'BTC/USDT'. Empty means the strategy's defaults.")
    timeframe: Timeframe = Field(default=Timeframe.M5, description="Bar timeframe the strategy runs on.")
    params: FreeForm = Field(
        default_factory=dict,
        description="Strategy tunables, validated against the strategy's own params model; "
                    "missing keys take the strategy's defaults.")
    active_mode: StrategyMode = Field(
        default=StrategyMode.PRIMARY, description="The mode overlay in force: primary, fallback, conservative or flat.")
    auto_step_down: bool = Field(
        default=False,
        description="Step down one mode (primary -> fallback -> conservative -> flat) on each new kill event; "
                    "the runner persists the step in its journal. Never steps back up by itself.")
    modes: ModeOverlays = Field(default_factory=ModeOverlays, description="Mode overlays.")


class StrategyInfoStatus(WireModel):
    """Registry metadata of the strategy, copied for `kubectl get` and dashboards."""

    name: str = Field(default="", description="Human name of the strategy.", max_length=256)
    description: str = Field(default="", description="What the strategy does.", max_length=4096)
    version: str = Field(default="", description="Strategy logic version; replay evidence is bound to it.",
                         max_length=64)
    risk_level: str = Field(default="", description="low, medium or high.", max_length=16)
    session_preference: str = Field(default="", description="any, london, ny or asia.", max_length=16)


class StrategyConfigStatus(WireModel):
    """What the operator concluded about the config."""

    observed_generation: int = Field(default=0, description="The generation last reconciled.")
    conditions: list[Condition] = Field(
        default_factory=list, max_length=16, description="Valid: the spec passed the strategy's validation.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
    config_hash: str = Field(default="", max_length=80,
                             description="sha256 of the canonical, validated spec; bots bind evidence to it.")
    valid_spec: FreeForm | None = Field(
        default=None,
        description="The last spec that passed validation, with defaults filled in. "
                    "Bots keep running it while a later edit is invalid.")
    strategy: StrategyInfoStatus | None = Field(default=None, description="Registry metadata.")
    bots: int = Field(default=0, ge=0, description="How many TradingBots reference this config.")
    bot_names: list[str] = Field(default_factory=list, max_length=1000,
                                 description="Names of the TradingBots referencing this config.")


class StrategyConfig(WireModel):
    """A StrategyConfig object as the API server returns it."""

    model_config = {"extra": "ignore"}

    api_version: str = "tradewarden.io/v1alpha1"
    kind: str = "StrategyConfig"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: StrategyConfigSpec
    status: StrategyConfigStatus = Field(default_factory=StrategyConfigStatus)


STRATEGY_CONFIG = ResourceInfo(
    kind="StrategyConfig",
    plural="strategyconfigs",
    singular="strategyconfig",
    # kubectl resolves `sc` to the built-in StorageClass before any CRD; `strat` is unambiguous.
    short_names=("sc", "strat"),
    scope="Namespaced",
    description="Which strategy to run, on which instruments and timeframe, with which params and mode overlays.",
    printer_columns=(
        PrinterColumn("Strategy", ".spec.strategy"),
        PrinterColumn("Valid", '.status.conditions[?(@.type=="Valid")].status'),
        PrinterColumn("Bots", ".status.bots", "integer"),
        PrinterColumn("Mode", ".spec.activeMode", priority=1),
        PrinterColumn("Hash", ".status.configHash", priority=1),
        AGE,
    ),
)
