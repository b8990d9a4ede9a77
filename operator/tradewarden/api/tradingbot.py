"""TradingBot: one running bot, its risk limits, capital, promotion settings and truthful status.

The operator reconciles it into a runtime ConfigMap, RBAC, a Lease and (placement ``cluster``) a
workload; the runner reads the ConfigMap. ``spec.mode`` is what the user asks for;
``status.effectiveMode`` is what the gate allows (DESIGN.md invariant 2).
"""

from __future__ import annotations

import enum
import re
from typing import Annotated, Any

from pydantic import Field, PrivateAttr

from tradewarden.api.base import (
    DNS_LABEL_PATTERN,
    DateTime,
    Name,
    Quantity,
    Rule,
    WireModel,
    matching,
    visible,
)
from tradewarden.api.conditions import Condition
from tradewarden.api.meta import AGE, ObjectMeta, PrinterColumn, ResourceInfo
from tradewarden.api.strategyconfig import INSTRUMENT_PATTERN

#: The longest TradingBot name that can run. The bot's name is a label value (at most 63 characters)
#: on every object the operator owns, and it names ``<bot>-runtime``, ``<bot>-evidence`` and
#: ``<bot>-runner`` (ServiceAccount, Role, RoleBinding, Lease, StatefulSet). The StatefulSet labels its
#: pod ``<bot>-runner-0`` with ``controller-revision-hash: <bot>-runner-<10 characters>``, a label value:
#: 45 + len("-runner-") + 10 = 63. A longer name is refused at admission (a root-level CEL rule).
MAX_BOT_NAME = 45

BOT_NAME_LENGTH_MESSAGE = (
    f"metadata.name: a TradingBot name may have at most {MAX_BOT_NAME} characters: the runner StatefulSet "
    f"<name>-runner labels its pod controller-revision-hash=<name>-runner-<10 characters>, a label value "
    f"of at most 63 characters")
BOT_NAME_SYNTAX_MESSAGE = (
    "metadata.name: a TradingBot name must be a DNS-1123 label (lower-case letters, digits and '-', starting "
    "and ending with a letter or digit, no '.'): it is a label value on every object the operator owns")
_DNS_LABEL = re.compile(DNS_LABEL_PATTERN)


def bot_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a TradingBot's name (the admission rules' message), or None when it can."""
    if len(name) > MAX_BOT_NAME:
        return BOT_NAME_LENGTH_MESSAGE
    if not _DNS_LABEL.fullmatch(name):
        return BOT_NAME_SYNTAX_MESSAGE
    return None


#: The root-level rules on a TradingBot's name (CEL on the root sees metadata.name). No fieldPath: the
#: API server accepts only paths into the schema, and metadata has none; the messages name the field.
BOT_NAME_VALIDATIONS: tuple[dict[str, str], ...] = (
    {"rule": f"size(self.metadata.name) <= {MAX_BOT_NAME}", "message": BOT_NAME_LENGTH_MESSAGE,
     "reason": "FieldValueInvalid"},
    {"rule": f"self.metadata.name.matches(r'{DNS_LABEL_PATTERN}')", "message": BOT_NAME_SYNTAX_MESSAGE,
     "reason": "FieldValueInvalid"},
)


def BotName(description: str, **kwargs: Any) -> Any:
    """A field naming a TradingBot: a DNS-1123 label of at most :data:`MAX_BOT_NAME` characters."""
    return Field(description=description, min_length=1, max_length=MAX_BOT_NAME, pattern=DNS_LABEL_PATTERN,
                 **kwargs)


class TradingMode(enum.StrEnum):
    """signals: compute signals, never build an order. paper: simulated fills. live: real orders."""

    SIGNALS = "signals"
    PAPER = "paper"
    LIVE = "live"


class Placement(enum.StrEnum):
    CLUSTER = "cluster"
    EXTERNAL = "external"


class KillMode(enum.StrEnum):
    """Kill switch modes, weakest first. The strongest applicable mode wins."""

    OFF = "off"
    CLOSE_ONLY = "close_only"
    HALT_ALL = "halt_all"
    FLATTEN = "flatten"


#: Strength order for "the strongest mode wins". flatten outranks halt_all: it is the more drastic
#: action and ends in close-only once flat, which blocks entries as halt_all does.
KILL_STRENGTH: dict[KillMode, int] = {
    KillMode.OFF: 0, KillMode.CLOSE_ONLY: 1, KillMode.HALT_ALL: 2, KillMode.FLATTEN: 3,
}


def strongest_kill_mode(*modes: KillMode | str) -> KillMode:
    """The strongest of the given modes (``off`` when none)."""
    best = KillMode.OFF
    for m in modes:
        mode = KillMode(m)
        if KILL_STRENGTH[mode] > KILL_STRENGTH[best]:
            best = mode
    return best


def _secret_data_key(field: str) -> Rule:
    # Kubernetes' IsConfigMapKey: the syntax of a key in a Secret's data.
    syntax = matching(r"^[-._a-zA-Z0-9]+$", "")
    return Rule(
        expr=f"{syntax.expr} && SELF != '.' && !SELF.startsWith('..')",
        message=f"{field} must be a Secret data key: letters, digits, '-', '_' and '.', at most 253 "
                "characters, not '.' and not starting with '..'",
        check=lambda v: syntax.check(v) and v != "." and not v.startswith(".."))


#: Names of keys in a Secret's data (``credentialsSecretRef.<field>``).
ApiKeyKey = Annotated[str, Field(min_length=1, max_length=253), _secret_data_key("credentialsSecretRef.apiKeyKey")]
SecretKeyKey = Annotated[str, Field(min_length=1, max_length=253), _secret_data_key("credentialsSecretRef.secretKey")]
PasswordKeyKey = Annotated[str, Field(min_length=1, max_length=253),
                           _secret_data_key("credentialsSecretRef.passwordKey")]


class SecretKeyRef(WireModel):
    """Where the exchange credentials are: a Secret in the bot's namespace. Never the keys themselves."""

    name: str = Name("Name of the Secret in the bot's namespace.")
    api_key_key: ApiKeyKey = Field(default="apiKey", description="Key in the Secret holding the API key.")
    secret_key: SecretKeyKey = Field(default="secret", description="Key in the Secret holding the API secret.")
    password_key: PasswordKeyKey | None = Field(
        default=None, description="Key holding the API passphrase, for venues that need one.")


_URL_HOST = (r"([A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*"
             r"|\[[0-9A-Fa-f:.]+\])")
_URL_PORT = r"(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?"
_URL_PATH = r"(/([-A-Za-z0-9._~!$&()*+,;=:@/]|%[0-9A-Fa-f]{2})*)?"
#: ``http(s)://host[:port][/path]`` and nothing else: no user:password@, no ?query, no #fragment, no spaces.
API_URL_PATTERN = f"^https?://{_URL_HOST}{_URL_PORT}{_URL_PATH}$"
API_URL_RULE = matching(
    API_URL_PATTERN,
    "exchange.apiUrl must be http(s)://host[:port][/path]: no user:password@ (credentials belong in "
    "credentialsSecretRef), no ?query, no #fragment, no spaces; the value is not repeated here")

ApiUrl = Annotated[str, Field(min_length=1, max_length=512), API_URL_RULE]


class ExchangeSpec(WireModel):
    """The venue, through ccxt."""

    id: str = Field(description="ccxt exchange id, e.g. 'binance', 'okx', 'kraken'.",
                    min_length=2, max_length=32, pattern=r"^[a-z][a-z0-9]*$")
    sandbox: bool = Field(default=True, description="Use the venue's sandbox/testnet. Defaults to true.")
    credentials_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret with the API key and secret. Required for live mode; "
                    "signals and paper modes use public market data only.")
    api_url: ApiUrl | None = Field(
        default=None,
        description="http(s)://host[:port][/path] overriding the venue's REST endpoint, for a local exchange "
                    "emulator or a private gateway. No user:password@, query or fragment: keys belong in "
                    "credentialsSecretRef.")


class RiskLimits(WireModel):
    """Risk limits enforced by the runner before any order reaches the exchange. 0 means off where noted."""

    max_drawdown_pct: float = Field(
        default=0.0, ge=0.0, le=100.0,
        description="Drawdown from the equity peak, in percent, that trips a bot-scoped halt. 0 = off.")
    entry_orders_per_minute: int = Field(default=30, ge=0, le=100000,
                                         description="Entry orders per minute, all symbols together.")
    entry_orders_per_minute_per_symbol: int = Field(default=6, ge=0, le=100000,
                                                    description="Entry orders per minute for one symbol.")
    exit_orders_per_minute: int = Field(default=120, ge=0, le=100000, description="Exit orders per minute.")
    cancels_per_minute: int = Field(default=120, ge=0, le=100000, description="Order cancels per minute.")
    max_entry_notional_per_window: float = Field(
        default=0.0, ge=0.0, description="Most entry notional (quote currency) per window. 0 = off.")
    notional_window_seconds: int = Field(default=3600, ge=1, le=604800,
                                         description="Length of the notional window in seconds.")
    min_order_gap_ms: int = Field(default=0, ge=0, le=3600000,
                                  description="Minimum gap between any two orders, in milliseconds. 0 = off.")
    max_open_positions: int = Field(default=3, ge=0, le=1000,
                                    description="Most symbols with an open position at once.")
    max_risk_per_trade_pct: float = Field(
        default=1.0, ge=0.0, le=100.0,
        description="Most equity, in percent, an entry may lose if its stop is hit; sizes entries.")


class CapitalSpec(WireModel):
    """Money the bot may use."""

    quote_currency: str = Field(default="USDT", min_length=1, max_length=16, pattern=r"^[A-Z0-9]+$",
                                description="Currency balances and limits are expressed in.")
    paper_balance: float = Field(default=10000.0, gt=0.0, le=1e12,
                                 description="Starting quote balance of the paper broker.")
    live_steps: list[Annotated[float, Field(gt=0.0)]] = Field(
        default_factory=lambda: [100.0, 500.0, 1000.0, 2500.0], min_length=1, max_length=16,
        description="Live capital ramp in quote units, e.g. [100, 500, 1000, 2500]. The bot starts at the "
                    "first step and advances one step at a time with fresh passing evidence.",
        json_schema_extra={"default": [100.0, 500.0, 1000.0, 2500.0]})
    ramp_dwell_minutes: int = Field(default=1440, ge=0, le=525600,
                                    description="Minimum time at a step before advancing to the next.")
    ramp_paused: bool = Field(default=False, description="True holds the ramp at the current step.")


class PromotionSpec(WireModel):
    """How much evidence live trading needs."""

    replay_window_minutes: int = Field(default=240, ge=5, le=10080,
                                       description="Length of the replay evaluation window.")
    replay_lag_minutes: int = Field(default=2, ge=0, le=60,
                                    description="How far the window ends behind now, so its bars are closed.")
    max_evidence_age_minutes: int = Field(default=60, ge=1, le=10080,
                                          description="Evidence older than this is stale and keeps the bot in paper.")
    min_trades: int = Field(default=1, ge=0, le=100000, description="Fewest trades the replay must compare.")
    min_paper_minutes: int = Field(default=60, ge=0, le=525600,
                                   description="Least time in paper mode before consensus may approve.")
    max_residuals: int = Field(default=0, ge=0, le=100000,
                               description="Residuals tolerated between replay and the runner (0 = strict).")
    phase: int = Field(default=3, ge=1, le=5,
                       description="Commissioning phase 1..5; consensus thresholds 70, 75, 80, 85, 90 percent.")


class OrderSideName(enum.StrEnum):
    BUY = "buy"
    SELL = "sell"


class ManualIntent(WireModel):
    """An order a human asks for, honoured once while the manual lane is open."""

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                    description="Unique id; each id executes at most once.")
    symbol: str = Field(pattern=INSTRUMENT_PATTERN, max_length=64, description="Symbol, e.g. 'BTC/USDT'.")
    side: OrderSideName = Field(description="buy or sell.")
    amount: float = Field(gt=0.0, description="Amount in the base currency.")
    reduce_only: bool = Field(default=False, description="Only reduce an existing position.")


class ManualLaneSpec(WireModel):
    """A lane for manual orders that closes by itself: intents run only before enabledUntil."""

    enabled_until: DateTime | None = Field(
        default=None,
        description="RFC 3339 time until which manual intents are honoured; after it the lane refuses them.")
    intents: list[ManualIntent] = Field(default_factory=list, max_length=50,
                                        description="Manual intents, each executed once by id.")


class ResourceRequirements(WireModel):
    requests: dict[str, Quantity] = Field(default_factory=dict, max_length=8,
                                          description="Resource requests, e.g. cpu: 100m.")
    limits: dict[str, Quantity] = Field(default_factory=dict, max_length=8,
                                        description="Resource limits, e.g. memory: 512Mi.")


#: An image reference's characters (no spaces, no scheme): registry/path:tag@sha256:digest.
IMAGE_PATTERN = r"^[A-Za-z0-9][-A-Za-z0-9._/:@+]*$"


class RunnerSpec(WireModel):
    """Overrides for the runner workload (placement cluster). Changing these rolls the pod."""

    image: str | None = Field(
        default=None, min_length=1, max_length=512, pattern=IMAGE_PATTERN,
        description="Runner image reference, e.g. registry.example/tradewarden/runner:1.2; defaults to the "
                    "operator's.")
    resources: ResourceRequirements | None = Field(default=None, description="Runner pod resources.")
    journal_size: Quantity | None = Field(default=None, description="Size of the journal volume, e.g. 1Gi.")
    heartbeat_grace_seconds: int = Field(
        default=30, ge=5, le=3600,
        description="The runner stops new entries on its own when the API server has been unreachable this long.")


ConfirmedBy = Annotated[str, Field(min_length=1, max_length=128), visible("liveConfirmation.confirmedBy")]
Ticket = Annotated[str, Field(min_length=1, max_length=256), visible("liveConfirmation.ticket")]


class LiveConfirmation(WireModel):
    """The second, explicit human confirmation that live trading with real money is intended."""

    acknowledge_real_money: bool = Field(description="Must be true: this bot may trade real money.")
    confirmed_by: ConfirmedBy = Field(description="Who confirmed, e.g. an email; at least one visible character.")
    ticket: Ticket | None = Field(default=None, description="Change ticket or reason; when given, at least one "
                                                            "visible character.")


class TradingBotSpec(WireModel):
    """One bot: strategy, venue, mode, risk, capital and promotion settings."""

    strategy_config_ref: str = Name("Name of the StrategyConfig in the same namespace.")
    exchange: ExchangeSpec = Field(description="The venue the bot trades on.")
    mode: TradingMode = Field(default=TradingMode.SIGNALS,
                              description="Requested mode: signals (default), paper or live. "
                                          "live takes effect only when the promotion gate is green.")
    live_confirmation: LiveConfirmation | None = Field(
        default=None, description="Required when mode is live.")
    placement: Placement = Field(default=Placement.CLUSTER,
                                 description="cluster: the operator runs the runner pod. "
                                             "external: the runner runs elsewhere with its own token.")
    risk: RiskLimits = Field(default_factory=RiskLimits, description="Risk limits.")
    capital: CapitalSpec = Field(default_factory=CapitalSpec, description="Paper balance and live ramp.")
    promotion: PromotionSpec = Field(default_factory=PromotionSpec, description="Promotion gate settings.")
    allowed_intent_sources: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=lambda: ["strategy"], max_length=16,
        description="Sources whose order intents the runner accepts (default deny for all others).",
        json_schema_extra={"default": ["strategy"]})
    manual_lane: ManualLaneSpec = Field(default_factory=ManualLaneSpec, description="The manual order lane.")
    runner: RunnerSpec = Field(default_factory=RunnerSpec, description="Runner workload overrides.")


class ReplayWindow(WireModel):
    start: DateTime = Field(description="First bar of the evaluation window.")
    end: DateTime = Field(description="End of the evaluation window.")


class ReplayEvidence(WireModel):
    """The latest deterministic replay of the bot's recorded window."""

    window: ReplayWindow | None = Field(default=None, description="The evaluation window.")
    data_hash: str = Field(default="", max_length=80, description="sha256 of the market data replayed.")
    config_hash: str = Field(default="", max_length=80, description="Config hash the replay ran with.")
    strategy_version: str = Field(default="", max_length=64, description="Strategy version replayed.")
    result_hash: str = Field(default="", max_length=80, description="sha256 of the replay's decisions and fills.")
    trades_compared: int = Field(default=0, ge=0, description="Trades compared with the runner's journal.")
    residuals: int = Field(default=0, ge=0, description="Decisions or fills that differ from the runner's.")
    pnl: float = Field(default=0.0, description="Replayed PnL in quote currency.")
    max_drawdown_pct: float = Field(default=0.0, description="Replayed max drawdown in percent.")
    sharpe: float = Field(default=0.0, description="Replayed Sharpe ratio (per-bar returns, annualised).")
    passed: bool = Field(default=False, description="Whether the replay met the promotion settings.")
    reason: str = Field(default="", max_length=64,
                        description="The replay's verdict: Passed, Failed or InsufficientTrades (Failed also "
                                    "when the replay could not run).")
    message: str = Field(default="", max_length=2048,
                         description="The verdict in words: the numbers, or why the replay could not run.")
    exported_at: DateTime | None = Field(
        default=None, description="When the runner exported the window replayed; a newer export triggers a "
                                  "new replay, and no newer export means no refresh.")
    finished_at: DateTime | None = Field(default=None, description="When the replay finished.")
    override_reason: str | None = Field(default=None, max_length=1024,
                                        description="Set while the replay gate is overridden by a GateOverride "
                                                    "(its reason, name, ticket and end).")


class Verdict(enum.StrEnum):
    PROCEED = "PROCEED"
    PROCEED_WITH_CAUTION = "PROCEED_WITH_CAUTION"
    HOLD = "HOLD"
    ABORT = "ABORT"


class RiskLevel(enum.StrEnum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


class Vote(WireModel):
    reviewer: str = Field(max_length=128, description="Reviewer name.")
    verdict: Verdict = Field(description="PROCEED, PROCEED_WITH_CAUTION, HOLD or ABORT.")
    risk: RiskLevel = Field(description="LOW, MEDIUM, HIGH or CRITICAL.")
    reason: str = Field(default="", max_length=2048, description="Why, in the reviewer's words (redacted).")
    evidence_hash: str = Field(default="", max_length=80, description="Hash of the evidence this vote judged.")
    at: DateTime | None = Field(default=None, description="When the vote was cast.")


class ConsensusStatus(WireModel):
    phase: int = Field(default=0, ge=0, le=5, description="Commissioning phase judged.")
    threshold_pct: float = Field(default=0.0, description="Agreement required, in percent.")
    score_pct: float = Field(default=0.0, description="Agreement reached, in percent.")
    evidence_hash: str = Field(default="", max_length=80,
                               description="Hash of the evidence summary the votes judged (votes are bound to it).")
    replay_result_hash: str = Field(
        default="", max_length=80,
        description="resultHash of the replay the summary was built from: binds the consensus to that replay.")
    decision: str = Field(default="", max_length=64,
                          description="Approved, Held, Rejected, CloseOnly, Halt or Missing.")
    message: str = Field(default="", max_length=2048, description="Why, in words: the tally and the deciding rule.")
    votes: list[Vote] = Field(default_factory=list, max_length=32, description="One vote per reviewer.")


class GateTrip(WireModel):
    """A bot-scoped kill engaged by the consensus (decision Halt or CloseOnly).

    It holds until a human changes the bot's ``tradewarden.io/reset-trip`` annotation: the value the
    annotation had when the trip was recorded is kept here, and any other value releases the trip.
    """

    mode: KillMode = Field(description="halt_all (a CRITICAL vote) or close_only (more than half HIGH).")
    reason: str = Field(default="", max_length=1024, description="The consensus decision and its reason.")
    evidence_hash: str = Field(default="", max_length=80, description="The evidence the deciding votes judged.")
    reset_annotation: str = Field(default="", max_length=256,
                                  description="tradewarden.io/reset-trip when the trip was recorded; "
                                              "changing the annotation releases the trip.")
    at: DateTime | None = Field(default=None, description="When the trip was recorded.")


class CapitalStatus(WireModel):
    step: int = Field(default=0, ge=0, description="Index of the current live ramp step (0-based).")
    amount: float = Field(default=0.0, description="Capital allowed at the current step, quote units.")
    since: DateTime | None = Field(default=None, description="When the bot reached the current step.")
    paused: bool = Field(default=False, description="Whether the ramp is paused.")


class RunnerStatus(WireModel):
    """Telemetry the runner reports through its Lease, copied by the operator."""

    applied_config_hash: str = Field(default="", max_length=80, description="Config hash the runner applied.")
    kill_mode: str = Field(default="", max_length=16, description="Kill mode the runner acknowledged.")
    last_heartbeat: DateTime | None = Field(default=None, description="Last Lease renewal.")
    equity: float = Field(default=0.0, description="Equity in quote currency.")
    pnl: float = Field(default=0.0, description="Profit and loss since start, quote currency.")
    drawdown_pct: float = Field(default=0.0, description="Drawdown from the equity peak, percent.")
    open_positions: int = Field(default=0, ge=0, description="Symbols with an open position.")
    strategy_mode: str = Field(default="", max_length=16, description="Mode overlay in force in the runner.")


class BotPhase(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    DEGRADED = "Degraded"
    HALTED = "Halted"
    INVALID = "Invalid"


class TradingBotStatus(WireModel):
    observed_generation: int = Field(default=0, description="The generation last reconciled.")
    phase: BotPhase = Field(default=BotPhase.PENDING, description="Pending, Running, Degraded, Halted or Invalid.")
    effective_mode: TradingMode = Field(default=TradingMode.SIGNALS,
                                        description="The mode in force, after the promotion gate.")
    strategy: str = Field(default="", max_length=63, description="Strategy key of the referenced config.")
    config_hash: str = Field(default="", max_length=80,
                             description="Hash of the bot's effective trading config (strategy and risk).")
    kill_mode: KillMode = Field(default=KillMode.OFF, description="Effective kill mode folded from all sources.")
    conditions: list[Condition] = Field(
        default_factory=list, max_length=16, description="Ready, ConfigValid, ConfigApplied, RunnerHealthy, "
        "ReplayVerified, ConsensusApproved, Promoted, KillSwitchEngaged.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
    replay: ReplayEvidence | None = Field(default=None, description="Latest replay evidence.")
    consensus: ConsensusStatus | None = Field(default=None, description="Latest reviewer consensus.")
    capital: CapitalStatus | None = Field(default=None,
                                          description="Live capital ramp position; present only while live.")
    paper_since: DateTime | None = Field(
        default=None, description="When the effective mode last left signals (paper, later perhaps live); "
                                  "the time in paper that consensus reviewers judge is measured from it.")
    gate_trip: GateTrip | None = Field(default=None,
                                       description="Bot-scoped halt or close-only engaged by the consensus.")
    runner: RunnerStatus | None = Field(default=None, description="Runner telemetry from its Lease.")


class TradingBot(WireModel):
    """A TradingBot object as the API server returns it."""

    model_config = {"extra": "ignore"}

    api_version: str = "tradewarden.io/v1alpha1"
    kind: str = "TradingBot"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: TradingBotSpec
    status: TradingBotStatus = Field(default_factory=TradingBotStatus)
    #: Not part of the resource, never read from the wire: the replay-gate override the operator found for
    #: this bot among its GateOverrides (``controller.gate.Override``), set before any decision.
    _override: Any = PrivateAttr(default=None)


def _cond(type_: str, field: str = "reason") -> str:
    return f'.status.conditions[?(@.type=="{type_}")].{field}'


TRADING_BOT = ResourceInfo(
    kind="TradingBot",
    plural="tradingbots",
    singular="tradingbot",
    short_names=("tb", "bot"),
    scope="Namespaced",
    description="One trading bot: strategy, venue, mode, risk limits, capital and promotion gate.",
    printer_columns=(
        PrinterColumn("Mode", ".spec.mode", description="Requested mode."),
        PrinterColumn("Effective", ".status.effectiveMode", description="Mode in force after the gate."),
        PrinterColumn("Strategy", ".status.strategy"),
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Replay", _cond("ReplayVerified")),
        PrinterColumn("Consensus", _cond("ConsensusApproved")),
        PrinterColumn("PnL", ".status.runner.pnl", "number"),
        PrinterColumn("Kill", ".status.killMode", priority=1),
        PrinterColumn("Step", ".status.capital.step", "integer", description="Live capital ramp step (0-based).",
                      priority=1),
        PrinterColumn("Capital", ".status.capital.amount", "number",
                      description="Live capital allowed at the current ramp step.", priority=1),
        PrinterColumn("Placement", ".spec.placement", priority=1),
        AGE,
    ),
    root_validations=BOT_NAME_VALIDATIONS,
    spec_validations=(
        {
            "rule": "self.mode != 'live' || (has(self.liveConfirmation) "
                    "&& self.liveConfirmation.acknowledgeRealMoney == true)",
            "message": "mode live needs liveConfirmation with acknowledgeRealMoney: true "
                       "and confirmedBy",
            "fieldPath": ".liveConfirmation",
            "reason": "FieldValueRequired",
        },
        {
            "rule": "self.mode != 'live' || has(self.exchange.credentialsSecretRef)",
            "message": "mode live needs the name of a Secret with the "
                       "exchange keys",
            "fieldPath": ".exchange.credentialsSecretRef",
            "reason": "FieldValueRequired",
        },
        {
            "rule": "!(oldSelf.mode == 'signals' && self.mode == 'live')",
            "message": "signals -> live in one step is refused; set mode: paper first and let the "
                       "promotion gate pass",
            "fieldPath": ".mode",
            "reason": "FieldValueForbidden",
        },
    ),
)
