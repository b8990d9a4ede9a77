"""A local reviewer server speaking the OpenAI-compatible chat completions API, for the promotion tests.

A threaded ``http.server`` on 127.0.0.1. Each configured external reviewer points at its own path
(``{base}/{reviewer}/v1``); the answer is looked up by (reviewer, bot), the bot's name being read from
the evidence summary in the request, so one operator with one reviewers file serves every test case in
a module: a test sets what each reviewer answers about *its* bot (verdict, risk, a delay) and leaves the
others at the default, PROCEED with LOW risk. Every request is recorded with its headers, so a test can
check that the API key reached the Authorization header (and nothing else).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Answer:
    verdict: str = "PROCEED"
    risk: str = "LOW"
    delay: float = 0.0
    reason: str = "looks fine to the test reviewer"


@dataclass
class Seen:
    reviewer: str
    bot: str
    authorization: str
    summary: dict[str, Any]


@dataclass
class ReviewerServer:
    """Start with :meth:`start`; ``answers[(reviewer, bot)]`` says what a reviewer answers about a bot."""

    answers: dict[tuple[str, str], Answer] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    base: str = ""
    _httpd: ThreadingHTTPServer | None = None

    def url(self, reviewer: str) -> str:
        return f"{self.base}/{reviewer}/v1"

    def answer(self, reviewer: str, bot: str) -> Answer:
        return self.answers.get((reviewer, bot), Answer())

    def start(self) -> ReviewerServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet: the test reads `seen`
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                reviewer = self.path.strip("/").split("/")[0]
                try:
                    summary = json.loads(body["messages"][-1]["content"])
                except (KeyError, IndexError, TypeError, ValueError):
                    summary = {}
                bot = str(summary.get("bot", ""))
                server.seen.append(Seen(reviewer, bot, self.headers.get("Authorization", ""), summary))
                answer = server.answer(reviewer, bot)
                if answer.delay:
                    time.sleep(answer.delay)
                content = json.dumps({"verdict": answer.verdict, "risk": answer.risk, "reason": answer.reason})
                payload = json.dumps({"id": "c1", "object": "chat.completion", "model": body.get("model", ""),
                                      "choices": [{"index": 0, "finish_reason": "stop",
                                                   "message": {"role": "assistant", "content": content}}]}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the operator gave up on a slow answer: that was the point

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.base = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
