"""The contract between the operator and the runner.

The operator writes a :class:`RuntimeConfig` into the bot's ``<bot>-runtime`` ConfigMap; the runner
watches that ConfigMap and applies it between ticks. The runner answers only through its Lease
``<bot>-runner``, whose annotations are named here. Both sides import this module, so the contract has
one definition; tests may write a RuntimeConfig directly to drive a runner without an operator.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import Field

from tradewarden.api.base import FreeForm, WireModel
from tradewarden.api.strategyconfig import ModeOverlays, StrategyMode, Timeframe
from tradewarden.api.tradingbot import (
    ExchangeSpec,
    KillMode,
    ManualLaneSpec,
    RiskLimits,
    TradingMode,
)

RUNTIME_SCHEMA_VERSION = 1

#: ConfigMap data keys.
CONFIGMAP_RUNTIME_KEY = "runtime.json"
CONFIGMAP_HASH_KEY = "configHash"

#: Lease annotations written by the runner, read by the operator.
ANN_APPLIED_HASH = "tradewarden.io/applied-config-hash"
ANN_KILL_MODE = "tradewarden.io/kill-mode"
ANN_KILL_ACKS = "tradewarden.io/kill-acks"
ANN_TELEMETRY = "tradewarden.io/telemetry"
ANN_REJECTED = "tradewarden.io/rejected-config"
#: Why the runner refused a live permission (an unsigned, forged, foreign or replayed document).
ANN_LIVE_REFUSED = "tradewarden.io/live-refused"
#: Who the runner is: its pod (name and uid, from the downward API) or ``external``, and when it started.
ANN_RUNNER_IDENTITY = "tradewarden.io/runner-identity"

#: The operator's verifying key: a ConfigMap in the operator's own namespace (never a bots' namespace).
GATE_KEY_CONFIGMAP = "tradewarden-gate-key"
GATE_KEY_DATA = "ed25519.pub"
GATE_KEY_ID_DATA = "keyId"
#: The runner's flag and environment variable naming that ConfigMap as ``namespace/name``.
GATE_KEY_ENV = "TRADEWARDEN_GATE_KEY"
DEFAULT_GATE_KEY_REF = f"tradewarden-system/{GATE_KEY_CONFIGMAP}"

#: Labels the operator puts on every object it owns for a bot.
LABEL_BOT = "tradewarden.io/bot"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "tradewarden"


def runtime_configmap_name(bot: str) -> str:
    return f"{bot}-runtime"


def lease_name(bot: str) -> str:
    return f"{bot}-runner"


def runner_account_name(bot: str) -> str:
    return f"{bot}-runner"


def runner_pod_name(bot: str) -> str:
    """The runner pod of placement ``cluster``: ordinal 0 of the StatefulSet ``<bot>-runner``."""
    return f"{runner_account_name(bot)}-0"


class RuntimeStrategy(WireModel):
    key: str = Field(description="Strategy registry key.")
    version: str = Field(default="", description="Strategy version the operator validated against.")
    instruments: list[str] = Field(description="Symbols to trade.")
    timeframe: Timeframe = Field(description="Base bar timeframe.")
    params: FreeForm = Field(default_factory=dict, description="Validated params, defaults filled in.")
    active_mode: StrategyMode = Field(default=StrategyMode.PRIMARY, description="Mode overlay requested.")
    auto_step_down: bool = Field(default=False, description="Step down a mode on each new kill event.")
    modes: ModeOverlays = Field(default_factory=ModeOverlays, description="Mode overlays.")


class RuntimeCapital(WireModel):
    quote_currency: str = "USDT"
    paper_balance: float = 10000.0
    live_capital: float = Field(default=0.0, description="Capital allowed live at the current ramp step.")


class RuntimeConfig(WireModel):
    """Everything one runner needs, as one document. The runner keeps the last good one."""

    schema_version: int = Field(default=RUNTIME_SCHEMA_VERSION)
    namespace: str
    bot: str
    bot_uid: str = Field(default="", description="metadata.uid of the bot; client order ids derive from it, "
                                                 "so a re-created bot of the same name never reuses one.")
    generation: int = 0
    config_hash: str = Field(description="compute_config_hash() of the trading-relevant parts below.")
    requested_mode: TradingMode = TradingMode.SIGNALS
    effective_mode: TradingMode = TradingMode.SIGNALS
    gate_hash: str = Field(default="", description="For live: compute_gate_hash() of the passing evidence.")
    gate_replay_hash: str = Field(default="", description="For live: the replay result hash the gate passed on.")
    gate_consensus_hash: str = Field(default="", description="For live: the evidence hash consensus approved.")
    labels: dict[str, str] = Field(default_factory=dict,
                                   description="The bot's labels, so the runner can match KillSwitch selectors.")
    trip_reset: str = Field(default="", description="Changing this value clears a bot-scoped trip (drawdown halt); "
                                                    "copied from the bot's tradewarden.io/reset-trip annotation.")
    kill_mode: KillMode = Field(default=KillMode.OFF, description="Kill mode folded in by the operator.")
    kill_reason: str = ""
    strategy: RuntimeStrategy
    exchange: ExchangeSpec
    risk: RiskLimits = Field(default_factory=RiskLimits)
    capital: RuntimeCapital = Field(default_factory=RuntimeCapital)
    allowed_intent_sources: list[str] = Field(default_factory=lambda: ["strategy"])
    manual_lane: ManualLaneSpec = Field(default_factory=ManualLaneSpec)
    heartbeat_grace_seconds: int = 30
    evidence_window_minutes: int = Field(default=240, description="Window the runner exports for replay.")
    evidence_lag_minutes: int = Field(default=2, description="How far the exported window ends behind now.")
    issued_at: int = Field(default=0, ge=0, description="When the operator signed this document (ms since the "
                                                        "epoch); the runner refuses a live permission older "
                                                        "than the newest signed document it has accepted.")
    key_id: str = Field(default="", description="Id of the operator key that signed this document.")
    signature: str = Field(default="", description="Ed25519 signature (base64) of the document without this "
                                                   "field, by the operator's gate key.")

    def gate_hash_matches(self) -> bool:
        """Live, with a gate hash bound to this config and the evidence named beside it."""
        if self.effective_mode != TradingMode.LIVE or not self.gate_hash:
            return False
        return self.gate_hash == compute_gate_hash(self.config_hash, self.gate_replay_hash, self.gate_consensus_hash)

    def signing_payload(self) -> bytes:
        """The bytes the operator signs: the whole document but the signature, canonical."""
        wire = self.to_wire()
        wire.pop("signature", None)
        return canonical_json(wire).encode()

    def verify(self) -> None:
        """Raise ValueError when the declared hashes do not match the content (a corrupt or forged config)."""
        expected = compute_config_hash(self.strategy, self.risk, self.exchange)
        if self.config_hash != expected:
            raise ValueError(f"configHash: does not match the content (declared {self.config_hash[:12]}, "
                             f"computed {expected[:12]}); keeping the last good config")


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the input of every hash in tradewarden."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def compute_config_hash(strategy: RuntimeStrategy, risk: RiskLimits, exchange: ExchangeSpec) -> str:
    """Hash of what determines the bot's trading decisions; replay evidence is bound to it.

    Mode, kill state, capital ramp and the manual lane are left out on purpose: changing them must not
    invalidate evidence about the strategy's behaviour.
    """
    payload = {
        "strategy": strategy.to_wire(),
        "risk": risk.to_wire(),
        "exchange": {"id": exchange.id, "sandbox": exchange.sandbox},
    }
    return "sha256:" + sha256_hex(canonical_json(payload))


def compute_gate_hash(config_hash: str, replay_result_hash: str, consensus_evidence_hash: str) -> str:
    """Binds a live permission to the config and the exact evidence that allowed it."""
    return "sha256:" + sha256_hex(f"{config_hash}|{replay_result_hash}|{consensus_evidence_hash}")


class KillAck(WireModel):
    """The runner's acknowledgement of one KillSwitch's state.

    The operator matches an ack on ``generation`` (the switch's ``metadata.generation``), not on
    ``resourceVersion``: the operator's own status writes change the switch's resourceVersion, so an
    ack bound to it would go stale the moment the operator recorded it. The generation changes only
    with the spec (mode, reason, selector, trigger), which is exactly what a runner acknowledges.
    """

    resource_version: str = Field(default="", description="metadata.resourceVersion the runner saw (informative).")
    generation: int = Field(default=0, ge=0, description="metadata.generation of the switch acknowledged.")
    mode: KillMode
    at: dt.datetime


class RunnerIdentity(WireModel):
    """Who renews the Lease: the runner's pod (from the downward API) or an external process, and when
    its process started. The operator compares it with what it observes of the pod; a Lease renewed by
    a pod that does not exist, or that started after the renewal, is reported and not believed."""

    pod: str = Field(default="", description="Pod name (POD_NAME), empty for external placement.")
    pod_uid: str = Field(default="", description="Pod uid (POD_UID), empty for external placement.")
    started_at: dt.datetime | None = Field(default=None, description="When the runner process started.")


class Telemetry(WireModel):
    """What the runner reports on every Lease renewal."""

    heartbeat: dt.datetime
    effective_mode: TradingMode = TradingMode.SIGNALS
    kill_mode: KillMode = KillMode.OFF
    strategy_mode: StrategyMode = StrategyMode.PRIMARY
    equity: float = 0.0
    pnl: float = 0.0
    drawdown_pct: float = 0.0
    open_positions: int = 0
    flat: bool = True
    api_reachable: bool = True
    bot_trip: KillMode = Field(default=KillMode.OFF, description="Bot-scoped halt tripped by the runner itself.")
    bot_trip_reason: str = ""


# ---------------------------------------------------------------------------------------------- signatures


@dataclass(frozen=True)
class GateKey:
    """The operator's public gate key, as the runner reads it from the operator's namespace."""

    key_id: str
    public: Ed25519PublicKey

    @classmethod
    def from_data(cls, data: dict[str, str] | None) -> GateKey:
        """Parse the ConfigMap data of :data:`GATE_KEY_CONFIGMAP`; raise ValueError naming the key."""
        raw = (data or {}).get(GATE_KEY_DATA, "")
        try:
            public = Ed25519PublicKey.from_public_bytes(base64.b64decode(raw, validate=True))
        except (ValueError, binascii.Error):
            raise ValueError(f"data.{GATE_KEY_DATA}: not a base64 Ed25519 public key") from None
        return cls(key_id_of(public), public)


def key_id_of(public: Ed25519PublicKey) -> str:
    """A short, stable id of a public key (the first 16 hex digits of its sha256)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return hashlib.sha256(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]


def sign_runtime(config: RuntimeConfig, private: Ed25519PrivateKey, issued_at_ms: int) -> RuntimeConfig:
    """``config`` issued at ``issued_at_ms`` and signed with the operator's gate key."""
    unsigned = config.model_copy(update={"issued_at": issued_at_ms, "key_id": key_id_of(private.public_key()),
                                         "signature": ""})
    signature = base64.b64encode(private.sign(unsigned.signing_payload())).decode()
    return unsigned.model_copy(update={"signature": signature})


def signature_valid(config: RuntimeConfig, key: GateKey | None) -> bool:
    """Whether ``config`` carries a valid signature by ``key``."""
    if key is None or not config.signature or config.key_id != key.key_id:
        return False
    try:
        key.public.verify(base64.b64decode(config.signature, validate=True), config.signing_payload())
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


def live_refusal(config: RuntimeConfig, key: GateKey | None, *, namespace: str, bot: str, bot_uid: str,
                 newest_issued_at: int) -> str | None:
    """Why ``config`` does not permit live orders for this runner, or None when it does.

    Live needs all of: the gate hash bound to the config and its evidence; a signature by the operator's
    key (read from the operator's namespace, never from the document itself); the document written for
    this very bot (namespace, name and uid: a permission copied from another bot, or from a deleted bot of
    the same name, is refused); and not older than the newest signed document this runner has accepted
    (an old live permission written back after a demotion is refused).
    """
    if config.effective_mode != TradingMode.LIVE:
        return None
    if not config.gate_hash_matches():
        return "the gate hash does not match the config and evidence it names"
    if key is None:
        return "the operator's verifying key is not available"
    if not signature_valid(config, key):
        return "the live permission is not signed by the operator's gate key"
    if (config.namespace, config.bot) != (namespace, bot) or (bot_uid and config.bot_uid != bot_uid):
        return "the live permission was signed for another bot"
    if config.issued_at < newest_issued_at:
        return (f"the live permission was issued at {config.issued_at}, before the newest signed config this "
                f"runner accepted ({newest_issued_at}): an old permission written back")
    return None

