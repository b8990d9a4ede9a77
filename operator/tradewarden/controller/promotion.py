"""The promotion gate's worker: replay a bot's exported window and ask the reviewers, with the I/O.

Called by the ``PromotionGate`` work queue of :mod:`tradewarden.controller.handlers` when a bot's
evidence ConfigMap or the bot changes. The decisions are pure and live in :mod:`.gate` (is a replay
due? what does the consensus decide?); this module does what they need done:

1. reads the runner's export from ``<bot>-evidence`` (the watch cache keeps the ConfigMaps without their
   ``binaryData``, which can approach 1 MiB per bot, so the export is fetched with one GET when it may
   be due);
2. runs ``python -m tradewarden.replay`` as a **separate process** with the export on stdin (the runner
   never grades itself, and a strategy that hangs or crashes cannot take the operator with it), in a
   worker thread so the event loop never blocks, at most :data:`MAX_REPLAYS` at once, each limited to
   :data:`REPLAY_TIMEOUT_SECONDS`;
3. judges the report with :func:`tradewarden.replay.passes` against ``spec.promotion``;
4. when the replay passed (or its gate is overridden): builds the redacted summary, asks the built-in
   reviewers and the external ones configured for the operator (reading their API key Secrets now, the
   only Secrets the operator reads), and scores the votes against ``spec.promotion.phase``.

The result is a :class:`~.gate.GateRound`, which the bot's reconcile records in the status (one writer).
A round is attempted at most once per (export, config hash, override) so that a failing replay is not
run again and again on the same input.

What the reviewers are told: ``requestedCapital`` is the amount of the current ramp step (the first
step while the bot is not live yet); ``paperMinutes`` is the time since ``status.paperSince``, when the
bot's effective mode left signals.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
import logging
import subprocess
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import kopf
from pydantic import ValidationError

from tradewarden.api.evidence import (
    EVIDENCE_KEY,
    EvidenceExport,
    MarketCheck,
    ReplayReport,
    evidence_configmap_name,
)
from tradewarden.api.tradingbot import (
    ConsensusStatus,
    ExchangeSpec,
    ReplayEvidence,
    ReplayWindow,
    TradingBot,
    Vote,
)
from tradewarden.consensus import (
    ExternalReviewer,
    Reviewer,
    builtin_reviewers,
    no_answer_vote,
    run_reviewers,
    score,
    summarize,
)
from tradewarden.controller import gate
from tradewarden.controller import kube as k
from tradewarden.controller.builders import ValidConfig, bot_config_hash
from tradewarden.controller.reviewers import ReviewerConfig
from tradewarden.replay import FAILED, passes
from tradewarden.strategies import StrategyLayerError, get_strategy

logger = logging.getLogger(__name__)

#: A replay of the largest export (MAX_EXPORT_BARS bars per symbol) takes about a second; this bounds a
#: strategy that never returns.
REPLAY_TIMEOUT_SECONDS = 120.0
#: Replays at once: each is a CPU-bound process, and the operator must keep reconciling meanwhile.
MAX_REPLAYS = 2
#: Time the reviewers get beyond the slowest configured timeout before a silent one counts against.
REVIEW_MARGIN_SECONDS = 5.0

BotKey = tuple[str, str]
Clock = Callable[[], dt.datetime]


def _ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def _tail(text: str, limit: int = 600) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else "..." + text[-limit:]


@dataclass(frozen=True)
class ReplayRun:
    """The outcome of one replay process: a report, or why there is none."""

    report: ReplayReport | None
    error: str = ""


#: The market data check fetches a window's bars page by page; this bounds a venue that never answers.
MARKET_CHECK_TIMEOUT_SECONDS = 90.0
#: An export may be dated this far ahead of the operator's clock (clock skew), and no further.
FUTURE_TOLERANCE = dt.timedelta(minutes=2)


def run_market_check(encoded: str, exchange: ExchangeSpec, timeout: float = MARKET_CHECK_TIMEOUT_SECONDS,
                     python: str = sys.executable) -> MarketCheck:
    """``python -m tradewarden.exchange.marketcheck``: the export's bars against the venue's own.

    Blocking: call it in a worker thread. The venue is the bot's (``spec.exchange``); the check uses
    public market data only, never credentials. Never raises: an error is a :class:`MarketCheck` with
    ``error`` set, and the gate fails closed on it.
    """
    venue = json.dumps({"id": exchange.id, "sandbox": exchange.sandbox, "apiUrl": exchange.api_url})
    try:
        proc = subprocess.run([python, "-m", "tradewarden.exchange.marketcheck", "--exchange", venue],
                              input=encoded.encode(), capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return MarketCheck(error=f"the venue's market data was not read within {timeout:g} s")
    except OSError as exc:
        return MarketCheck(error=f"the market data check could not start ({type(exc).__name__})")
    try:
        return MarketCheck.model_validate_json(proc.stdout)
    except ValidationError:
        return MarketCheck(error=f"the market data check failed (exit {proc.returncode}): "
                                 f"{_tail(proc.stderr.decode('utf-8', 'replace'), 300) or 'no message'}")


def future_refusal(export: EvidenceExport, now: dt.datetime) -> str | None:
    """Why an export dated in the future cannot be evidence, or None."""
    limit = int((now + FUTURE_TOLERANCE).timestamp() * 1000)
    if export.exported_at > limit:
        return f"the export is dated {_ms(export.exported_at).isoformat()}, in the future; refused"
    if export.window_end > limit:
        return f"the export's window ends at {_ms(export.window_end).isoformat()}, in the future; refused"
    late = [int(rows[-1][0]) for rows in export.candles.values() if rows and int(rows[-1][0]) > limit]
    if late:
        return f"the export has bars dated up to {_ms(max(late)).isoformat()}, in the future; refused"
    return None


def run_replay(encoded: str, timeout: float = REPLAY_TIMEOUT_SECONDS, python: str = sys.executable) -> ReplayRun:
    """``python -m tradewarden.replay`` with ``encoded`` (the ConfigMap's gzip+base64 form) on stdin.

    Blocking: call it in a worker thread. Never raises for a bad export or a failing strategy: the
    error says what went wrong in the replay's own words (its stderr names the field).
    """
    try:
        proc = subprocess.run([python, "-m", "tradewarden.replay"], input=encoded.encode(), capture_output=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return ReplayRun(None, f"the replay did not finish within {timeout:g} s")
    except OSError as exc:
        return ReplayRun(None, f"the replay could not start ({type(exc).__name__}: {exc.strerror or exc})")
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        return ReplayRun(None, f"the replay failed (exit {proc.returncode}): {_tail(stderr) or 'no message'}")
    try:
        return ReplayRun(ReplayReport.model_validate_json(proc.stdout))
    except ValidationError as exc:
        return ReplayRun(None, f"the replay printed no usable report ({exc.error_count()} problems)")


class UnavailableReviewer:
    """Stands in for an external reviewer whose key could not be read: its vote counts against."""

    def __init__(self, name: str, cause: str) -> None:
        self._name, self._cause = name, cause

    @property
    def name(self) -> str:
        return self._name

    def review(self, summary: object) -> Vote:
        evidence = str(getattr(summary, "evidence_hash", ""))
        return no_answer_vote(self._name, evidence, self._cause)


class PromotionGate:
    """Runs replays and consensus rounds for bots; remembers which inputs it has already judged."""

    def __init__(self, kube: k.Kube, reviewers: Sequence[ReviewerConfig] = (), *,
                 replay_timeout: float = REPLAY_TIMEOUT_SECONDS, max_replays: int = MAX_REPLAYS,
                 python: str = sys.executable) -> None:
        self.kube = kube
        self.reviewers = list(reviewers)
        self.replay_timeout = replay_timeout
        self.python = python
        self._replays = asyncio.Semaphore(max_replays)
        self._attempted: dict[BotKey, tuple[str, str, bool]] = {}
        names = [r.name for r in self.reviewers]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            logger.warning("reviewers configured more than once: %s; only the first vote of each counts",
                           ", ".join(twice))

    def forget(self, key: BotKey) -> None:
        self._attempted.pop(key, None)

    async def evaluate(self, key: BotKey, bot: TradingBot, valid: ValidConfig, evidence: k.Manifest | None,
                       clock: Clock) -> gate.GateRound | None:
        """A new round for ``bot`` when its export is due (see :func:`.gate.replay_due`), else None.

        ``bot.status`` must already hold any round not yet written (the caller merges it), so a round
        is never run twice for the same evidence.
        """
        if not gate.wants_evidence(bot) or evidence is None:
            return None
        config_hash = bot_config_hash(bot, valid)
        overridden = gate.replay_override(bot).reason is not None
        fingerprint = (str((evidence.get("metadata") or {}).get("resourceVersion", "")), config_hash, overridden)
        if self._attempted.get(key) == fingerprint:
            return None
        namespace, name = key
        live = await asyncio.to_thread(self.kube.get, k.CONFIGMAPS, namespace, evidence_configmap_name(name))
        encoded = str(((live or {}).get("binaryData") or {}).get(EVIDENCE_KEY, ""))
        if not encoded:
            self._attempted[key] = fingerprint
            return None
        try:
            export, data_hash = await asyncio.to_thread(_decode, encoded)
        except (ValueError, OSError, EOFError, binascii.Error) as exc:
            # Not a replay input at all: recorded as a failed replay, so the status says what is wrong.
            self._attempted[key] = fingerprint
            logger.warning("TradingBot %s/%s: the export in %s does not decode: %s", namespace, name,
                           evidence_configmap_name(name), type(exc).__name__)
            failed = ReplayEvidence(config_hash=config_hash, passed=False, reason=FAILED, finished_at=clock(),
                                    message=f"ConfigMap {evidence_configmap_name(name)} holds no readable export "
                                            f"({type(exc).__name__}); the runner rewrites it within a minute")
            return gate.GateRound(bot.metadata.uid, failed, None)
        info = gate.ExportInfo(config_hash=export.config_hash, exported_at=_ms(export.exported_at),
                               data_hash=data_hash)
        why = gate.replay_due(bot, info, config_hash, clock())
        if why is None:
            self._attempted[key] = fingerprint
            return None
        window = ReplayWindow(start=_ms(export.window_start), end=_ms(export.window_end))
        refused = future_refusal(export, clock())
        if refused is None:
            checked = await asyncio.to_thread(run_market_check, encoded, bot.spec.exchange,
                                              MARKET_CHECK_TIMEOUT_SECONDS, self.python)
            refused = _market_refusal(checked)
        if refused is not None:
            # Recorded as a failed replay, dated no later than now: an honest export made after this one
            # is newer and is judged on its own.
            self._attempted[key] = fingerprint
            logger.warning("TradingBot %s/%s: export refused: %s", namespace, name, refused)
            now = clock()
            failed = ReplayEvidence(window=window, data_hash=data_hash, config_hash=export.config_hash,
                                    strategy_version=export.strategy.version, passed=False, reason=FAILED,
                                    message=refused[:2048], exported_at=min(info.exported_at, now), finished_at=now)
            return gate.GateRound(bot.metadata.uid, failed, None)
        logger.info("TradingBot %s/%s: replaying its export (%s)", namespace, name, why)
        async with self._replays:
            run = await asyncio.to_thread(run_replay, encoded, self.replay_timeout, self.python)
        finished = clock()
        self._attempted[key] = fingerprint
        if run.report is None:
            logger.warning("TradingBot %s/%s: %s", namespace, name, run.error)
            replay = ReplayEvidence(window=window, data_hash=data_hash, config_hash=export.config_hash,
                                    strategy_version=export.strategy.version, passed=False, reason=FAILED,
                                    message=run.error[:2048], exported_at=info.exported_at, finished_at=finished)
            return gate.GateRound(bot.metadata.uid, replay, None)
        report = run.report
        verdict = passes(report, bot.spec.promotion)
        replay = ReplayEvidence(
            window=window, data_hash=report.data_hash, config_hash=report.config_hash,
            strategy_version=report.strategy_version, result_hash=report.result_hash,
            trades_compared=report.trades_compared, residuals=report.residuals, pnl=report.pnl,
            max_drawdown_pct=report.max_drawdown_pct, sharpe=report.sharpe, passed=verdict.passed,
            reason=verdict.reason, message=verdict.message[:2048], exported_at=info.exported_at,
            finished_at=finished)
        logger.info("TradingBot %s/%s: replay %s: %s", namespace, name, verdict.reason, verdict.message)
        consensus: ConsensusStatus | None = None
        if verdict.passed or overridden:
            consensus = await asyncio.to_thread(self.consensus, bot, valid, report, finished)
            logger.info("TradingBot %s/%s: consensus %s (%.1f %%)", namespace, name, consensus.decision,
                        consensus.score_pct)
        return gate.GateRound(bot.metadata.uid, replay, consensus)

    # ------------------------------------------------------------------------------ consensus (blocking)

    def consensus(self, bot: TradingBot, valid: ValidConfig, report: ReplayReport,
                  now: dt.datetime) -> ConsensusStatus:
        """One consensus round on ``report``: summary, every reviewer's vote, the score. Blocking."""
        steps = bot.spec.capital.live_steps
        capital = bot.status.capital
        requested = capital.amount if capital is not None else steps[0]
        since = bot.status.paper_since
        paper_minutes = round(max(0.0, (now - since).total_seconds() / 60.0), 1) if since else 0.0
        phase = bot.spec.promotion.phase
        summary = summarize(report, bot=bot.metadata.name, strategy=valid.spec.strategy,
                            risk_level=valid.risk_level or _risk_level(valid.spec.strategy), risk=bot.spec.risk,
                            promotion=bot.spec.promotion, requested_capital=requested, paper_minutes=paper_minutes)
        reviewers: list[Reviewer] = [*builtin_reviewers(), *self.external_reviewers()]
        slowest = max((r.timeout_seconds for r in self.reviewers), default=0.0)
        votes = run_reviewers(reviewers, summary, deadline_s=slowest + REVIEW_MARGIN_SECONDS)
        outcome = score(votes, summary.evidence_hash, phase)
        return outcome.to_status(summary.evidence_hash, phase).model_copy(
            update={"replay_result_hash": report.result_hash, "message": outcome.message[:2048]})

    def external_reviewers(self) -> list[Reviewer]:
        """The configured external reviewers, each with its API key read from its Secret just now."""
        out: list[Reviewer] = []
        for config in self.reviewers:
            key = ""
            ref = config.api_key_secret_ref
            if ref is not None:
                found = self._read_key(config, ref.namespace, ref.name, ref.key)
                if found is None:
                    out.append(UnavailableReviewer(config.name, f"API key Secret {ref.namespace}/{ref.name} "
                                                                f"key {ref.key} not readable"))
                    continue
                key = found
            out.append(ExternalReviewer(config.name, config.url, config.model, key, config.timeout_seconds))
        return out

    def _read_key(self, config: ReviewerConfig, namespace: str, name: str, key: str) -> str | None:
        try:
            secret = self.kube.get(k.SECRETS, namespace, name)
        except (k.KubeError, kopf.TemporaryError) as exc:
            # The error names the Secret and the API server's reason, never a value.
            logger.warning("reviewer %s: cannot read its API key Secret %s/%s: %s", config.name, namespace, name,
                           exc)
            return None
        raw = ((secret or {}).get("data") or {}).get(key)
        if not raw:
            logger.warning("reviewer %s: Secret %s/%s has no key %r", config.name, namespace, name, key)
            return None
        try:
            return base64.b64decode(raw).decode().strip()
        except (binascii.Error, UnicodeDecodeError):
            logger.warning("reviewer %s: key %r of Secret %s/%s is not base64 text", config.name, key, namespace,
                           name)
            return None


def _market_refusal(checked: MarketCheck) -> str | None:
    if checked.error:
        return f"the export's bars could not be checked against the venue, so they are not evidence: {checked.error}"
    if checked.mismatches:
        named = "; ".join(checked.first)
        more = f" and {checked.mismatches - len(checked.first)} more" if checked.mismatches > len(checked.first) else ""
        return (f"{checked.mismatches} of {checked.checked} bars of the export differ from the venue's market data "
                f"({named}{more}); the export is refused")
    if checked.checked == 0:
        return "the export holds no bars to check against the venue"
    return None


def _decode(encoded: str) -> tuple[EvidenceExport, str]:
    """The export and the hash of its market data (blocking: run it in a worker thread)."""
    try:
        export = EvidenceExport.decode(encoded)
    except (ValidationError, json.JSONDecodeError, zlib.error) as exc:
        raise ValueError(type(exc).__name__) from None
    return export, export.data_hash()


def _risk_level(key: str) -> str:
    try:
        return get_strategy(key).risk_level
    except StrategyLayerError:
        return ""
