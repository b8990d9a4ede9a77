"""The external reviewer against a real HTTP server on 127.0.0.1 that speaks the chat completions API.

The server runs in a thread of the test (``http.server``), records every request, and answers by the
first part of the path, so each test points a reviewer at the behaviour it needs: a good answer, a
fenced one, garbage, a slow one, an HTTP 500, a redirect. The API key is a canary: it must reach the
server's Authorization header and appear nowhere else — not in a vote, an exception, a repr, or a log
line. No cluster; every request goes to loopback and the server stops with the module.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tradewarden.api.evidence import EvidenceSummary
from tradewarden.api.tradingbot import RiskLevel, Verdict, Vote
from tradewarden.consensus import ExternalReviewer, run_reviewers, score
from tradewarden.consensus.external import SYSTEM_PROMPT

CANARY = f"sk-canary-{uuid.uuid4().hex}"


def completion(content: str) -> bytes:
    return json.dumps({"id": "cmpl-1", "object": "chat.completion", "model": "m",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                    "finish_reason": "stop"}]}).encode()


GOOD = completion('{"verdict": "PROCEED_WITH_CAUTION", "risk": "LOW", "reason": "thin but clean evidence"}')
FENCED = completion('Sure.\n```json\n{"verdict": "HOLD", "risk": "MEDIUM", "reason": "too few trades"}\n```')
ECHO = completion(f'{{"verdict": "PROCEED", "risk": "LOW", "reason": "my key is {CANARY}"}}')
SLOW_SECONDS = 3.0


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Server:
    base: str
    seen: list[Seen] = field(default_factory=list)


class Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the test reads what it needs
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.record.append(Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        mode = self.path.strip("/").split("/")[0]
        if mode == "good":
            self._send(200, GOOD)
        elif mode == "fenced":
            self._send(200, FENCED)
        elif mode == "echo":
            self._send(200, ECHO)
        elif mode == "garbage":
            self._send(200, b"<html>gateway says hello</html>")
        elif mode == "nochoices":
            self._send(200, b'{"choices": []}')
        elif mode == "slow":
            time.sleep(SLOW_SECONDS)
            self._send(200, GOOD)
        elif mode == "error":
            self._send(500, b'{"error": {"message": "internal"}}')
        elif mode == "redirect":
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_address[1]}/good/v1/chat/completions")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(404, b"{}")

    def _send(self, status: int, payload: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (the slow case): nothing to answer


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.record = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state = Server(base=f"http://127.0.0.1:{httpd.server_address[1]}")
    state.seen = httpd.record  # type: ignore[attr-defined]
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def summary() -> EvidenceSummary:
    return EvidenceSummary(bot="a", strategy="sma_cross", strategy_version="1.0.0", risk_level="medium", phase=3,
                           requested_capital=100.0, window_minutes=240, paper_minutes=300.0, trades_compared=8,
                           residuals=0, pnl=12.5, max_drawdown_pct=1.25, sharpe=0.9,
                           risk={"maxDrawdownPct": 10.0}, evidence_hash="sha256:" + "e" * 64)


@pytest.fixture(autouse=True)
def all_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


def reviewer(server: Server, mode: str, timeout_s: float = 2.0) -> ExternalReviewer:
    return ExternalReviewer(f"llm-{mode}", f"{server.base}/{mode}/v1", "test-model", CANARY, timeout_s)


def assert_no_canary(caplog: pytest.LogCaptureFixture, *things: object) -> None:
    for thing in things:
        text = thing.model_dump_json() if isinstance(thing, Vote) else repr(thing) + str(thing)
        assert CANARY not in text
    assert CANARY not in caplog.text
    for record in caplog.records:
        assert CANARY not in record.getMessage()


def test_a_good_answer_is_a_vote(server: Server, summary: EvidenceSummary,
                                 caplog: pytest.LogCaptureFixture) -> None:
    before = len(server.seen)
    r = reviewer(server, "good")
    vote = r.review(summary)
    assert (vote.reviewer, vote.verdict, vote.risk) == ("llm-good", Verdict.PROCEED_WITH_CAUTION, RiskLevel.LOW)
    assert vote.reason == "thin but clean evidence"
    assert vote.evidence_hash == summary.evidence_hash
    assert vote.at is not None

    (seen,) = server.seen[before:]
    assert seen.path == "/good/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {CANARY}"
    assert seen.headers["content-type"] == "application/json"
    assert seen.body["model"] == "test-model"
    assert seen.body["response_format"] == {"type": "json_object"}
    system, user = seen.body["messages"]
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert user["role"] == "user"
    assert json.loads(user["content"]) == summary.to_wire()
    # The key travels in the header only, never in the evidence.
    assert CANARY not in json.dumps(seen.body)
    assert "reviewer llm-good (test-model) voted PROCEED_WITH_CAUTION, risk LOW" in caplog.text
    assert_no_canary(caplog, vote, r)


def test_a_fenced_answer_is_understood(server: Server, summary: EvidenceSummary,
                                       caplog: pytest.LogCaptureFixture) -> None:
    vote = reviewer(server, "fenced").review(summary)
    assert (vote.verdict, vote.risk, vote.reason) == (Verdict.HOLD, RiskLevel.MEDIUM, "too few trades")
    assert_no_canary(caplog, vote)


@pytest.mark.parametrize(
    ("mode", "cause"),
    [
        ("garbage", "no answer: unparseable answer (not JSON)"),
        ("nochoices", "no answer: answer without choices[0].message.content"),
        ("error", "no answer: HTTP 500"),
        ("missing", "no answer: HTTP 404"),
        # A redirect could carry the Authorization header elsewhere: refused, and it counts against.
        ("redirect", "no answer: HTTP 307"),
    ],
)
def test_a_bad_answer_counts_against(server: Server, summary: EvidenceSummary, caplog: pytest.LogCaptureFixture,
                                     mode: str, cause: str) -> None:
    before = len(server.seen)
    vote = reviewer(server, mode).review(summary)
    assert (vote.verdict, vote.risk, vote.reason) == (Verdict.HOLD, RiskLevel.MEDIUM, cause)
    assert vote.evidence_hash == summary.evidence_hash
    assert [s.path.split("/")[1] for s in server.seen[before:]] == [mode]  # the redirect was not followed
    assert f"llm-{mode} (test-model) gave no answer" in caplog.text
    assert_no_canary(caplog, vote)


def test_a_slow_answer_beyond_the_timeout_counts_against(server: Server, summary: EvidenceSummary,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    started = time.monotonic()
    vote = reviewer(server, "slow", timeout_s=0.5).review(summary)
    assert time.monotonic() - started < SLOW_SECONDS
    assert (vote.verdict, vote.risk, vote.reason) == (Verdict.HOLD, RiskLevel.MEDIUM, "no answer: timeout after 0.5 s")
    assert_no_canary(caplog, vote)


def test_a_refused_connection_counts_against(summary: EvidenceSummary, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    r = ExternalReviewer("llm-down", f"http://user:{CANARY}@127.0.0.1:{port}/v1", "test-model", CANARY, 1.0)
    vote = r.review(summary)
    assert (vote.verdict, vote.risk) == (Verdict.HOLD, RiskLevel.MEDIUM)
    assert vote.reason == "no answer: connection failed (ConnectionRefusedError)"
    assert_no_canary(caplog, vote, r)


def test_a_model_that_repeats_the_key_is_redacted(server: Server, summary: EvidenceSummary,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    vote = reviewer(server, "echo").review(summary)
    assert vote.reason == "my key is <redacted>"
    assert_no_canary(caplog, vote)


def test_a_panel_of_endpoints_within_one_deadline(server: Server, summary: EvidenceSummary,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    panel = [reviewer(server, "good"), reviewer(server, "slow", timeout_s=10.0), reviewer(server, "garbage"),
             reviewer(server, "fenced")]
    started = time.monotonic()
    votes = run_reviewers(panel, summary, deadline_s=1.0)
    assert time.monotonic() - started < SLOW_SECONDS
    assert [(v.reviewer, v.verdict) for v in votes] == [
        ("llm-good", Verdict.PROCEED_WITH_CAUTION), ("llm-slow", Verdict.HOLD), ("llm-garbage", Verdict.HOLD),
        ("llm-fenced", Verdict.HOLD)]
    assert votes[1].reason == "no answer: no vote within 1 s"
    outcome = score(votes, summary.evidence_hash, 1)
    assert outcome.decision == "Held"  # three of four at MEDIUM: non-answers count against
    assert_no_canary(caplog, *votes, outcome, *panel)
