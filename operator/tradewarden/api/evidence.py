"""The evidence contract: what a runner exports for replay, and what replay and consensus produce.

The runner writes an :class:`EvidenceExport` (its recorded window: bars, decisions, strategy fills) into
the ConfigMap ``<bot>-evidence`` (gzip-compressed JSON in ``binaryData``), bounded in size. The operator
hands it to ``tradewarden replay`` in a separate process (the runner never grades itself), which
answers with a :class:`ReplayReport`. Reviewers then judge a redacted :class:`EvidenceSummary`.
"""

from __future__ import annotations

import base64
import gzip
import json

from pydantic import Field

from tradewarden.api.base import WireModel
from tradewarden.api.market import Position
from tradewarden.api.runtime import RuntimeStrategy, canonical_json, sha256_hex

EVIDENCE_KEY = "evidence.json.gz"
#: Most bars per symbol an export may carry (warm-up included); keeps the ConfigMap far below 1 MiB.
MAX_EXPORT_BARS = 12_000


def evidence_configmap_name(bot: str) -> str:
    return f"{bot}-evidence"


class ExportedSignal(WireModel):
    t: int = Field(description="Open time (ms) of the bar the decision was taken on.")
    symbol: str
    action: str = Field(description="enter_long or exit_long.")
    stop: float | None = None


class ExportedFill(WireModel):
    t: int = Field(description="Open time (ms) of the bar whose decision this fill executed.")
    symbol: str
    side: str
    price: float
    amount: float
    fee: float = 0.0


class ExportedPosition(WireModel):
    qty: float = 0.0
    entry_price: float = 0.0

    def to_position(self) -> Position:
        return Position(qty=self.qty, entry_price=self.entry_price)


class EvidenceExport(WireModel):
    """One recorded evaluation window of one bot, as the runner saw and did it."""

    namespace: str
    bot: str
    config_hash: str
    strategy: RuntimeStrategy = Field(description="The strategy config the window ran (its timeframe included).")
    timeframe: str = Field(description="Bar timeframe of the candles (the overlay in force, if any).")
    window_start: int = Field(description="First bar (ms) of the evaluation window.")
    window_end: int = Field(description="End (ms, exclusive) of the evaluation window.")
    candles: dict[str, list[list[float]]] = Field(
        default_factory=dict, description="Per symbol: [t, open, high, low, close, volume] rows, warm-up first.")
    signals: list[ExportedSignal] = Field(default_factory=list, description="The runner's decisions in the window.")
    fills: list[ExportedFill] = Field(default_factory=list, description="Fills of strategy intents in the window.")
    initial_positions: dict[str, ExportedPosition] = Field(default_factory=dict,
                                                           description="Positions at window_start.")
    starting_equity: float = Field(default=0.0, description="Equity at window_start, quote currency.")
    max_risk_per_trade_pct: float = 1.0
    fee_bps: float = 10.0
    slippage_bps: float = 5.0
    mode: str = Field(default="paper", description="The runner's mode during the window.")
    exported_at: int = Field(default=0, description="When the runner exported it (ms).")

    def data_hash(self) -> str:
        """sha256 of the market data alone: evidence goes stale when the data it judged changes."""
        return "sha256:" + sha256_hex(canonical_json({"timeframe": self.timeframe, "candles": self.candles,
                                                       "start": self.window_start, "end": self.window_end}))

    def encode(self) -> str:
        """gzip + base64, as stored in the ConfigMap's binaryData."""
        raw = json.dumps(self.to_wire(), separators=(",", ":"), sort_keys=True).encode()
        return base64.b64encode(gzip.compress(raw, mtime=0)).decode()

    @classmethod
    def decode(cls, data: str) -> EvidenceExport:
        return cls.model_validate_json(gzip.decompress(base64.b64decode(data)))


class MarketCheck(WireModel):
    """What ``python -m tradewarden.exchange.marketcheck`` found comparing an export's bars with the venue's."""

    checked: int = Field(default=0, description="Bars compared.")
    mismatches: int = Field(default=0, description="Bars that differ from the venue's, or that it does not have.")
    first: list[str] = Field(default_factory=list, description="The first few differences, in words.")
    error: str = Field(default="", description="Why the bars could not be checked (the gate then fails closed).")


class ReplayReport(WireModel):
    """What ``tradewarden replay`` answers. ``result_hash`` is bit-identical for identical inputs."""

    config_hash: str
    data_hash: str
    strategy_version: str
    window_start: int
    window_end: int
    bars: int = Field(description="Bars replayed inside the window (warm-up excluded).")
    decisions: int = Field(description="Non-hold decisions the replay took in the window.")
    trades_compared: int = Field(description="Runner fills compared with the replay's.")
    residuals: int = Field(description="Decisions or fills that differ between replay and runner.")
    residual_details: list[str] = Field(default_factory=list, description="The first differences, for humans.")
    pnl: float
    max_drawdown_pct: float
    sharpe: float
    result_hash: str


class EvidenceSummary(WireModel):
    """What reviewers see: numbers only, no names of secrets, no keys, no URLs."""

    bot: str
    strategy: str
    strategy_version: str
    risk_level: str
    phase: int
    requested_capital: float
    window_minutes: int
    paper_minutes: float
    trades_compared: int
    residuals: int
    pnl: float
    max_drawdown_pct: float
    sharpe: float
    risk: dict[str, float] = Field(default_factory=dict, description="The bot's risk limits.")
    promotion: dict[str, float] = Field(
        default_factory=dict, description="The bot's promotion settings (minTrades, minPaperMinutes, "
                                          "maxResiduals): built-in reviewers judge against them.")
    config_hash: str = Field(default="", description="Config hash the replay ran with.")
    replay_result_hash: str = Field(default="", description="result_hash of the replay judged: through it the "
                                                            "votes are bound to the replay and the config.")
    evidence_hash: str = Field(description="Hash of this summary: votes are bound to it.")

    @staticmethod
    def hash_of(payload: dict[str, object]) -> str:
        return "sha256:" + sha256_hex(canonical_json(payload))
