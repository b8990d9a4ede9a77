"""Unit tests of ``tradewarden.replay``: alignment with a faithful runner, residuals, determinism, the CLI.

The runner's side of each export is built by ``support.evidence.make_export``, which feeds the same
recorded bars through ``build_strategy`` on its own and prices fills as a paper broker does; a replay of
it must find nothing, and a replay of a tampered copy must find exactly the tampering. Determinism is
checked in-process and across separate processes with different hash seeds. No cluster, no network.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from support.evidence import bars, make_export
from tradewarden.api.evidence import EvidenceExport, ExportedFill, ExportedSignal, ReplayReport
from tradewarden.api.market import Position
from tradewarden.api.tradingbot import PromotionSpec
from tradewarden.replay import FAILED, INSUFFICIENT_TRADES, PASSED, ReplayInputError, passes, replay
from tradewarden.replay import cli as replay_cli
from tradewarden.replay.cli import main
from tradewarden.replay.metrics import bars_per_year, max_drawdown_pct, sharpe
from tradewarden.strategies import StrategyError

REPO = Path(__file__).resolve().parents[2]

# Each built-in on a market the emulator has for it; momentum on two symbols exercises the merge.
CASES = [
    ("sma_cross", ("BTC/USDT",)),
    ("momentum", ("BTC/USDT", "ETH/USDT")),
    ("momentum_v2", ("BTC/USDT",)),
    ("range", ("ETH/USDT",)),
    ("gold", ("PAXG/USDT",)),
    ("eur_usd_5m_safe", ("EUR/USDT",)),
]


def tampered(export: EvidenceExport, **changes: Any) -> EvidenceExport:
    return export.model_copy(update=changes)


def wire_json(report: ReplayReport) -> str:
    return json.dumps(report.to_wire(), sort_keys=True, separators=(",", ":"))


@pytest.fixture(scope="module")
def export() -> EvidenceExport:
    return make_export("sma_cross", ("BTC/USDT",), window=3000)


# --- alignment with a faithful runner ---------------------------------------------------------------


@pytest.mark.parametrize(("key", "symbols"), CASES)
def test_a_faithful_runner_leaves_no_residual(key: str, symbols: tuple[str, ...]) -> None:
    export = make_export(key, symbols, window=3000, warmup=300)
    report = replay(export)
    assert report.trades_compared == len(export.fills) > 0
    assert report.residuals == 0, report.residual_details
    assert report.residual_details == []
    assert report.decisions == len(export.signals)
    assert report.bars == sum(1 for s in symbols for row in export.candles[s] if row[0] >= export.window_start)
    assert report.config_hash == export.config_hash
    assert report.data_hash == export.data_hash()
    assert report.strategy_version == "1.0.0"
    assert report.result_hash.startswith("sha256:")
    ok, reason, message = passes(report, PromotionSpec(min_trades=1, max_residuals=0))
    assert (ok, reason) == (True, PASSED), message


def test_metrics_follow_the_simulated_account(export: EvidenceExport) -> None:
    report = replay(export)
    # The runner's own fills give the same PnL once every position is closed or marked.
    cash = export.starting_equity
    qty = 0.0
    for fill in export.fills:
        if fill.side == "buy":
            cash -= fill.price * fill.amount + fill.fee
            qty += fill.amount
        else:
            cash += fill.price * fill.amount - fill.fee
            qty = 0.0
    final = cash + qty * export.candles["BTC/USDT"][-1][4]
    assert report.pnl == pytest.approx(final - export.starting_equity, rel=1e-9, abs=1e-6)
    assert 0.0 < report.max_drawdown_pct < 100.0
    assert report.sharpe != 0.0


def test_warmup_is_fed_with_the_initial_position() -> None:
    """An export that starts in a position: the replay warms up and starts the window in it."""
    candles = bars("BTC/USDT", 2200)
    held = {"BTC/USDT": Position(0.05, candles[150].close)}
    export = make_export("sma_cross", ("BTC/USDT",), window=2000, initial_positions=held)
    report = replay(export)
    assert report.residuals == 0, report.residual_details
    # The first decision on the symbol is an exit: the strategy knew it was long from the first bar.
    first = export.signals[0]
    assert first.action == "exit_long"
    assert export.fills[0].side == "sell"
    assert export.fills[0].amount == pytest.approx(0.05)


def test_signals_mode_simulates_nothing() -> None:
    export = make_export("sma_cross", ("BTC/USDT",), window=2000, mode="signals", starting_equity=0.0)
    assert export.signals
    assert not export.fills
    report = replay(export)
    assert report.residuals == 0, report.residual_details
    assert (report.trades_compared, report.pnl, report.max_drawdown_pct, report.sharpe) == (0, 0.0, 0.0, 0.0)
    ok, reason, message = passes(report, PromotionSpec(min_trades=1))
    assert (ok, reason) == (False, INSUFFICIENT_TRADES)
    assert "compared 0 trades" in message
    assert "minTrades needs 1" in message


# --- residuals ----------------------------------------------------------------------------------------


def test_a_missing_signal_is_a_residual(export: EvidenceExport) -> None:
    victim = export.signals[3]
    report = replay(tampered(export, signals=[s for s in export.signals if s is not victim]))
    assert report.residuals == 1
    assert report.residual_details == [
        f"{_iso(victim.t)} BTC/USDT {victim.action}: decided by the replay, not by the runner"]
    ok, reason, message = passes(report, PromotionSpec(max_residuals=0))
    assert (ok, reason) == (False, FAILED)
    assert "found 1 residuals" in message
    assert "maxResiduals allows 0" in message


def test_a_changed_and_an_invented_signal_are_residuals(export: EvidenceExport) -> None:
    signals = list(export.signals)
    changed = signals[5]
    signals[5] = changed.model_copy(update={"action": "exit_long" if changed.action == "enter_long" else "enter_long"})
    invented = ExportedSignal(t=export.window_start, symbol="BTC/USDT", action="enter_long", stop=1.0)
    report = replay(tampered(export, signals=[invented, *signals]))
    # The changed one is missing on one side and surplus on the other: two; the invented one: one.
    assert report.residuals == 3
    assert report.residual_details[0] == (
        f"{_iso(export.window_start)} BTC/USDT enter_long: decided by the runner, not by the replay")
    assert sum("decided by the runner" in d for d in report.residual_details) == 2
    assert sum("decided by the replay" in d for d in report.residual_details) == 1


def test_a_fill_price_beyond_the_tolerance_is_a_residual(export: EvidenceExport) -> None:
    fills = list(export.fills)
    fills[2] = fills[2].model_copy(update={"price": fills[2].price * 1.0015})  # 15 bps, tolerance 10
    report = replay(tampered(export, fills=fills))
    assert report.residuals == 1
    (detail,) = report.residual_details
    assert f"{_iso(fills[2].t)} BTC/USDT {fills[2].side} fill at" in detail
    assert "15.0 bps apart, tolerance 10 bps" in detail


def test_a_fill_price_within_the_tolerance_is_not(export: EvidenceExport) -> None:
    fills = [f.model_copy(update={"price": f.price * 1.0009}) for f in export.fills]  # 9 bps, tolerance 10
    assert replay(tampered(export, fills=fills)).residuals == 0


def test_a_fill_the_replay_did_not_make_is_a_residual(export: EvidenceExport) -> None:
    ghost = ExportedFill(t=export.window_start, symbol="BTC/USDT", side="buy", price=60_000.0, amount=0.01)
    report = replay(tampered(export, fills=[ghost, *export.fills]))
    assert report.residuals == 1
    assert report.trades_compared == len(export.fills) + 1
    assert report.residual_details == [
        f"{_iso(export.window_start)} BTC/USDT buy fill 0.01 at 60000: the replay made no buy on that bar"]


def test_residual_details_stop_at_twenty(export: EvidenceExport) -> None:
    report = replay(tampered(export, signals=[]))
    assert report.residuals == len(export.signals) > 20
    assert len(report.residual_details) == 20
    times = [s.t for s in export.signals[:20]]
    assert report.residual_details == [
        f"{_iso(t)} BTC/USDT {s.action}: decided by the replay, not by the runner"
        for t, s in zip(times, export.signals[:20], strict=True)]


def test_another_strategy_version_is_a_residual(export: EvidenceExport) -> None:
    strategy = export.strategy.model_copy(update={"version": "0.9.0"})
    report = replay(tampered(export, strategy=strategy))
    assert report.residuals == 1
    assert report.residual_details[0] == "strategy version: the runner ran 0.9.0, the replay ran 1.0.0"


def test_a_window_shorter_than_the_promotion_window_is_not_enough(export: EvidenceExport) -> None:
    report = replay(export)
    covered = (report.window_end - report.window_start) // 60_000
    assert passes(report, PromotionSpec(replay_window_minutes=covered, min_trades=1)).passed
    ok, reason, message = passes(report, PromotionSpec(replay_window_minutes=covered + 1, min_trades=1))
    assert (ok, reason) == (False, INSUFFICIENT_TRADES)
    assert f"covers {covered} minutes" in message


def test_insufficient_trades(export: EvidenceExport) -> None:
    report = replay(export)
    ok, reason, message = passes(report, PromotionSpec(min_trades=report.trades_compared + 1))
    assert (ok, reason) == (False, INSUFFICIENT_TRADES)
    assert f"compared {report.trades_compared} trades" in message
    assert f"minTrades needs {report.trades_compared + 1}" in message
    # Residuals are judged first: a window that is both short and wrong says "Failed".
    wrong = replay(tampered(export, signals=export.signals[1:]))
    assert passes(wrong, PromotionSpec(min_trades=10_000)).reason == FAILED
    assert passes(wrong, PromotionSpec(min_trades=1, max_residuals=1)).passed


# --- hashes and determinism ---------------------------------------------------------------------------


def test_the_data_hash_changes_when_a_candle_changes(export: EvidenceExport) -> None:
    candles = {s: [list(row) for row in rows] for s, rows in export.candles.items()}
    row = candles["BTC/USDT"][1000]
    row[4] = round(row[4] + 0.01, 2)  # one tick on one close, still inside the bar's range
    row[2] = max(row[2], row[4])
    changed = tampered(export, candles=candles)
    assert changed.data_hash() != export.data_hash()
    report, original = replay(changed), replay(export)
    assert report.data_hash == changed.data_hash()
    assert report.result_hash != original.result_hash


def test_the_result_hash_binds_the_config_hash(export: EvidenceExport) -> None:
    other = replay(tampered(export, config_hash="sha256:" + "d" * 64))
    assert other.result_hash != replay(export).result_hash


def test_ten_replays_in_one_process_are_bit_identical(export: EvidenceExport) -> None:
    reports = [wire_json(replay(export)) for _ in range(10)]
    assert len(set(reports)) == 1
    # ...and so is a replay of a copy that went through the wire format and back.
    copy = EvidenceExport.model_validate_json(export.model_dump_json(by_alias=True))
    assert wire_json(replay(copy)) == reports[0]


def test_ten_replays_in_ten_processes_are_bit_identical(export: EvidenceExport, tmp_path: Path) -> None:
    json_path = tmp_path / "export.json"
    json_path.write_text(export.model_dump_json(by_alias=True))
    b64 = export.encode()
    expected = wire_json(replay(export)) + "\n"
    procs = []
    for i in range(10):
        # Different hash seeds: nothing may depend on set or dict-of-str iteration order.
        env = {**os.environ, "PYTHONHASHSEED": str(i * 7919 + 1)}
        if i % 2:
            args = [sys.executable, "-m", "tradewarden.replay", "--input", str(json_path)]
            stdin = None
        else:
            args = [sys.executable, "-m", "tradewarden.replay"]
            stdin = subprocess.PIPE
        proc = subprocess.Popen(args, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                cwd=REPO)
        procs.append((proc, None if stdin is None else b64.encode()))
    outputs = []
    for proc, data in procs:
        out, err = proc.communicate(data, timeout=120)
        assert proc.returncode == 0, err.decode()
        outputs.append(out.decode())
    assert outputs == [expected] * 10


def test_the_replay_process_does_not_import_the_exchange_or_the_cluster() -> None:
    code = ("import sys, tradewarden.replay.cli; "
            "bad = [m for m in ('ccxt', 'kopf', 'kubernetes', 'tradewarden.exchange', 'tradewarden.runner', "
            "'tradewarden.controller') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


# --- input checks and the CLI -------------------------------------------------------------------------


def run_cli(stdin: bytes, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(args), stdin=io.BytesIO(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_cli_reads_json_and_gzip_base64_alike(export: EvidenceExport, tmp_path: Path) -> None:
    expected = wire_json(replay(export)) + "\n"
    assert run_cli(export.model_dump_json(by_alias=True).encode()) == (0, expected, "")
    assert run_cli(export.encode().encode()) == (0, expected, "")
    path = tmp_path / "e.b64"
    path.write_text(export.encode() + "\n")
    assert run_cli(b"", "--input", str(path)) == (0, expected, "")


def _wire(export: EvidenceExport) -> dict[str, Any]:
    return json.loads(export.model_dump_json(by_alias=True))


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda w: w.pop("windowStart"), "windowStart: Field required"),
        (lambda w: w.update(windowEnd="soon"), "windowEnd: Input should be a valid integer"),
        (lambda w: w["candles"]["BTC/USDT"][7].pop(), "candles.BTC/USDT[7]: must be [t, open, high, low, close, "
                                                      "volume] (got 5 values)"),
        (lambda w: w["candles"]["BTC/USDT"][9].__setitem__(0, w["candles"]["BTC/USDT"][8][0]),
         "candles.BTC/USDT[9]: t must increase"),
        (lambda w: w["candles"]["BTC/USDT"][3].__setitem__(3, -1.0), "candles.BTC/USDT[3]: needs 0 < low"),
        (lambda w: w["candles"]["BTC/USDT"][4].__setitem__(4, float("nan")), "candles.BTC/USDT[4]: needs 0 < low"),
        (lambda w: w["candles"]["BTC/USDT"][5].__setitem__(0, float("nan")),
         "candles.BTC/USDT[5]: t must be a whole number of ms >= 0 (got nan)"),
        (lambda w: w["candles"]["BTC/USDT"][6].__setitem__(0, 1.5), "candles.BTC/USDT[6]: t must be a whole number"),
        (lambda w: w["candles"].update({"DOGE/USDT": []}), "candles.DOGE/USDT: is not an instrument"),
        (lambda w: w["strategy"].update(key="nope"), "strategy.key: Invalid strategy key: nope"),
        (lambda w: w["strategy"].update(params={"fast": 40}), "strategy.params.fast: must be < slow (got 40 >= 30)"),
        (lambda w: w["strategy"].update(params={"fats": 4}), "strategy.params.fats: unknown parameter"),
        (lambda w: w.update(timeframe="7m"), "timeframe: unknown timeframe '7m'"),
        (lambda w: w.update(windowEnd=w["windowStart"]), "windowEnd: must be after windowStart"),
        (lambda w: w.update(startingEquity=0.0), "startingEquity: must be > 0 in paper mode"),
        (lambda w: w.update(mode="yolo"), "mode: must be one of signals, paper, live"),
    ],
)
def test_cli_bad_input_names_the_field(export: EvidenceExport, mutate: Any, expected: str) -> None:
    wire = _wire(export)
    mutate(wire)
    code, out, err = run_cli(json.dumps(wire).encode())
    assert (code, out) == (2, "")
    assert err.startswith("tradewarden replay: error: ")
    assert expected in err, err


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "input: empty"),
        (b"   \n", "input: empty"),
        (b"not an export", "input: neither JSON"),
        (b"{not json", "input: not valid JSON"),
        (b"[1, 2]", "input: must be a JSON object (an EvidenceExport), got list"),
        (b"aGVsbG8=", "input: base64, but not of gzip data"),
        (b"H4sIAAAAAAAA/8vPTQUAAAA=", "input: gzip data that does not decompress"),
    ],
)
def test_cli_unreadable_input_says_what_it_expected(data: bytes, expected: str) -> None:
    code, out, err = run_cli(data)
    assert (code, out) == (2, "")
    assert expected in err, err


def test_cli_missing_file_names_the_option(tmp_path: Path) -> None:
    code, _, err = run_cli(b"", "--input", str(tmp_path / "nope.json"))
    assert code == 2
    assert "--input: cannot read" in err


def test_cli_as_a_process_exits_2_and_names_the_field(export: EvidenceExport) -> None:
    wire = _wire(export)
    del wire["configHash"]
    proc = subprocess.run([sys.executable, "-m", "tradewarden.replay"], input=json.dumps(wire).encode(),
                          capture_output=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == b""
    assert b"configHash: Field required" in proc.stderr


def test_cli_a_failing_strategy_exits_1(export: EvidenceExport, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_: EvidenceExport) -> ReplayReport:
        raise StrategyError("sma_cross", "BTC/USDT", "ZeroDivisionError: float division by zero")

    monkeypatch.setattr(replay_cli, "replay", broken)
    code, out, err = run_cli(export.model_dump_json(by_alias=True).encode())
    assert (code, out) == (1, "")
    assert err == ("tradewarden replay: the strategy failed during the replay: strategy sma_cross on BTC/USDT: "
                   "ZeroDivisionError: float division by zero\n")


def test_the_tradewarden_command_has_a_replay_subcommand(export: EvidenceExport, tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    path.write_text(export.model_dump_json(by_alias=True))
    proc = subprocess.run([sys.executable, "-m", "tradewarden.cli", "replay", "--input", str(path)],
                          capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == wire_json(replay(export)) + "\n"


def test_replay_input_error_carries_the_field(export: EvidenceExport) -> None:
    with pytest.raises(ReplayInputError) as caught:
        replay(tampered(export, timeframe="2m"))
    assert caught.value.field == "timeframe"


def test_an_instrument_without_bars_is_replayed_with_none() -> None:
    export = make_export("momentum", ("BTC/USDT", "ETH/USDT"), window=2000)
    candles = dict(export.candles)
    del candles["ETH/USDT"]
    report = replay(tampered(export, candles=candles))
    eth = sum(1 for s in export.signals if s.symbol == "ETH/USDT")
    assert eth > 0
    # Everything the runner did on ETH/USDT is unexplained, and BTC/USDT may differ through the cash.
    assert report.residuals >= eth


# --- metrics --------------------------------------------------------------------------------------------


def test_max_drawdown_is_measured_from_the_running_peak() -> None:
    assert max_drawdown_pct([100.0, 110.0, 99.0, 120.0, 108.0]) == pytest.approx(10.0)
    assert max_drawdown_pct([100.0, 101.0, 102.0]) == 0.0


def test_sharpe_is_zero_without_spread_and_annualised_otherwise() -> None:
    assert sharpe([100.0] * 50, bars_per_year(60)) == 0.0
    assert sharpe([100.0, 101.0], bars_per_year(60)) == 0.0
    curve = [100.0, 101.0, 100.5, 101.5, 101.0]
    returns = [b / a - 1 for a, b in itertools.pairwise(curve)]
    mean = sum(returns) / len(returns)
    std = (sum((r - mean) ** 2 for r in returns) / (len(returns) - 1)) ** 0.5
    assert sharpe(curve, 365.0) == pytest.approx(mean / std * 365.0 ** 0.5)
    assert bars_per_year(60) == 525_600
    assert bars_per_year(86_400) == 365


def test_a_window_without_bars_reports_zeros(export: EvidenceExport) -> None:
    late = export.window_end + 10 * 60_000
    report = replay(tampered(export, window_start=late, window_end=late + 60_000, signals=[], fills=[]))
    assert (report.bars, report.decisions, report.residuals, report.pnl, report.sharpe) == (0, 0, 0, 0.0, 0.0)


def test_integer_times_on_the_wire_replay_as_their_float_form() -> None:
    """The runner writes bar times as integers; validated, they are floats, and the replay is the same."""
    export = make_export("sma_cross", ("BTC/USDT",), warmup=100, window=300)
    wire = _wire(export)
    wire["candles"]["BTC/USDT"] = [[int(r[0]), *r[1:]] for r in wire["candles"]["BTC/USDT"]]
    again = EvidenceExport.model_validate_json(json.dumps(wire))
    assert again.data_hash() == export.data_hash()
    assert replay(again).result_hash == replay(export).result_hash


def _iso(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t / 1000))
