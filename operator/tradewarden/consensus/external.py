"""External reviewers: language models behind the OpenAI-compatible chat completions API.

Constructed by the operator from a bot's reviewer settings, with the API key it read from a Secret, and
run by :func:`tradewarden.consensus.voting.run_reviewers` next to the built-in reviewers. One request
per review::

    POST {base_url}/chat/completions
    Authorization: Bearer <key>
    {"model": ..., "messages": [system prompt, the redacted EvidenceSummary as JSON],
     "response_format": {"type": "json_object"}, "temperature": 0}

The answer is the first choice's message content, parsed as a JSON object (a ```json fenced block is
tolerated) with ``verdict``, ``risk`` and ``reason``. Anything else — a timeout, a refused connection,
a status other than 200, an unparseable or out-of-vocabulary answer — is a vote that counts against
(HOLD, MEDIUM, "no answer: <short cause>"): a reviewer that cannot be heard never approves anything.

Secrets (DESIGN.md invariant 5): the key is held in a wrapper that never prints it; it goes into the
Authorization header and nowhere else. Causes are built from exception types and status codes, never
from exception text; the URL is shown without credentials, query or fragment; the model's own reason is
scrubbed of the key before it is recorded. Only the standard library is used (urllib, through an opener
that ignores proxy environment variables: the evidence goes to the configured endpoint and no other).
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, NoReturn

from tradewarden.api.evidence import EvidenceSummary
from tradewarden.api.tradingbot import RiskLevel, Verdict, Vote
from tradewarden.consensus.reviewers import Clock, no_answer_vote, utc_now

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You are a risk reviewer for an automated trading system. You receive the evidence about one trading "
    "bot as a JSON object: a deterministic replay of its strategy over a recorded window compared with what "
    "the bot actually did (residuals are differences; 0 is expected), the replay's PnL, maximum drawdown in "
    "percent and Sharpe ratio, how long it ran in paper trading, the capital requested, and its risk "
    "limits. Decide whether the bot may trade real money at the requested capital in the given "
    "commissioning phase (1 = foundation, 5 = full production). "
    "Answer with exactly one JSON object and nothing else: "
    '{"verdict": "PROCEED" | "PROCEED_WITH_CAUTION" | "HOLD" | "ABORT", '
    '"risk": "LOW" | "MEDIUM" | "HIGH" | "CRITICAL", "reason": "one or two sentences"}. '
    "Use CRITICAL only for a risk that should stop the bot at once."
)

#: Largest answer read; a chat completion with one short JSON object is a few kilobytes.
MAX_ANSWER_BYTES = 1 << 20
#: Longest reason recorded from a model; status fields are read by people, not archived essays.
MAX_REASON_CHARS = 500
#: Words some models use for HOLD (the commissioning plan's own spelling among them).
VERDICT_ALIASES = {"HOLD_OR_INVESTIGATE": "HOLD", "INVESTIGATE": "HOLD"}

_VERDICTS = frozenset(v.value for v in Verdict)
_RISKS = frozenset(r.value for r in RiskLevel)
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)\s*```", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class _Secret:
    """A string that does not show itself: repr, str and pickling never reveal it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<redacted>"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("an API key is not picklable")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Turns every redirect into an HTTPError (its 3xx status becomes the no-answer cause)."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> None:
        return None


class _NoAnswer(Exception):
    """Internal: the reviewer gave no usable answer; ``cause`` is short and safe to record."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


def display_url(url: str) -> str:
    """``url`` as it may be shown: scheme, host, port and path, without credentials, query or fragment."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable URL>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"


class ExternalReviewer:
    """A reviewer behind an OpenAI-compatible chat completions endpoint. ``review`` never raises."""

    def __init__(self, name: str, base_url: str, model: str, api_key: str, timeout_s: float = 30.0, *,
                 clock: Clock = utc_now) -> None:
        shown = display_url(base_url)
        try:
            parts = urllib.parse.urlsplit(base_url)
            port_ok = parts.port is None or parts.port > 0
        except ValueError:
            parts, port_ok = urllib.parse.urlsplit(""), False
        if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
            raise ValueError(f"base_url: must be an http(s) URL such as https://api.example.com/v1 (got {shown})")
        if not name:
            raise ValueError("name: must not be empty")
        if not model:
            raise ValueError(f"model: must not be empty (reviewer {name})")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s: must be > 0 (got {timeout_s!r}, reviewer {name})")
        self._name = name
        self.model = model
        self.timeout_s = float(timeout_s)
        self._key = _Secret(api_key)
        self._clock = clock
        # Credentials in the URL are dropped: the API key is the credential, and a URL is often logged.
        self._url = shown.rstrip("/") + "/chat/completions"
        self.url = display_url(self._url)
        # An empty ProxyHandler ignores http(s)_proxy, and redirects are refused (urllib would resend the
        # Authorization header to wherever one points): the evidence and the key go to this endpoint only.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"ExternalReviewer(name={self._name!r}, model={self.model!r}, url={self.url!r})"

    def review(self, summary: EvidenceSummary) -> Vote:
        try:
            verdict, risk, reason = parse_answer(self._ask(summary))
        except _NoAnswer as exc:
            cause = self._scrub(exc.cause)
            log.warning("reviewer %s (%s) gave no answer: %s", self._name, self.model, cause)
            return no_answer_vote(self._name, summary.evidence_hash, cause, self._clock())
        except Exception as exc:
            # Not expected; recorded by type only, because an exception's text may quote the request.
            log.warning("reviewer %s (%s) failed: %s", self._name, self.model, type(exc).__name__)
            return no_answer_vote(self._name, summary.evidence_hash, f"unexpected {type(exc).__name__}",
                                  self._clock())
        reason = self._scrub(reason)
        log.info("reviewer %s (%s) voted %s, risk %s", self._name, self.model, verdict.value, risk.value)
        return Vote(reviewer=self._name, verdict=verdict, risk=risk, reason=reason,
                    evidence_hash=summary.evidence_hash, at=self._clock())

    def _request(self, summary: EvidenceSummary) -> urllib.request.Request:
        body = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": json.dumps(summary.to_wire(), sort_keys=True)},
            ],
            "response_format": {"type": "json_object"},
            "temperature": 0,
        }
        # The scheme was checked to be http(s) in __init__, so no file: or custom-scheme URL gets here.
        return urllib.request.Request(  # noqa: S310
            self._url, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json",
                     "Authorization": f"Bearer {self._key.reveal()}", "User-Agent": "tradewarden-consensus"})

    def _ask(self, summary: EvidenceSummary) -> str:
        """The first choice's message content, or ``_NoAnswer`` with a short, secret-free cause."""
        timeout = f"timeout after {self.timeout_s:g} s"
        cause: str | None = None
        raw = b""
        try:
            with self._opener.open(self._request(summary), timeout=self.timeout_s) as response:
                status = response.status
                if status != 200:
                    cause = f"HTTP {status}"
                else:
                    raw = response.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as exc:
            cause = f"HTTP {exc.code}"
            exc.close()
        except urllib.error.URLError as exc:
            inner = exc.reason
            cause = timeout if isinstance(inner, TimeoutError) else f"connection failed ({type(inner).__name__})"
        except TimeoutError:
            cause = timeout
        except (http.client.HTTPException, OSError, ValueError) as exc:
            cause = f"connection failed ({type(exc).__name__})"
        if cause is not None:
            raise _NoAnswer(cause)
        if len(raw) > MAX_ANSWER_BYTES:
            raise _NoAnswer(f"answer larger than {MAX_ANSWER_BYTES} bytes")
        return _content_of(raw)

    def _scrub(self, text: str) -> str:
        key = self._key.reveal()
        if len(key) >= 4:
            text = text.replace(key, "<redacted>")
        return text


def _content_of(raw: bytes) -> str:
    try:
        obj: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _NoAnswer("unparseable answer (not JSON)") from None
    try:
        content = obj["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise _NoAnswer("answer without choices[0].message.content") from None
    if not isinstance(content, str):
        raise _NoAnswer("choices[0].message.content is not text")
    return content


def parse_answer(content: str) -> tuple[Verdict, RiskLevel, str]:
    """The model's verdict, risk and reason from its message content, or ``_NoAnswer``.

    Accepts a bare JSON object or one inside a ```json fence; words are matched case-insensitively.
    """
    text = content.strip()
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1)
    try:
        answer: Any = json.loads(text)
    except json.JSONDecodeError:
        raise _NoAnswer("unparseable answer (the content is not a JSON object)") from None
    if not isinstance(answer, dict):
        raise _NoAnswer("unparseable answer (the content is not a JSON object)")
    raw_verdict = str(answer.get("verdict", "")).strip().upper().replace(" ", "_")
    raw_verdict = VERDICT_ALIASES.get(raw_verdict, raw_verdict)
    raw_risk = str(answer.get("risk", "")).strip().upper()
    if raw_verdict not in _VERDICTS:
        raise _NoAnswer(f"verdict {_short(raw_verdict)} is not one of {', '.join(v.value for v in Verdict)}")
    if raw_risk not in _RISKS:
        raise _NoAnswer(f"risk {_short(raw_risk)} is not one of {', '.join(r.value for r in RiskLevel)}")
    reason = answer.get("reason", "")
    reason = reason if isinstance(reason, str) else json.dumps(reason)
    reason = _CONTROL.sub(" ", reason).strip()[:MAX_REASON_CHARS]
    return Verdict(raw_verdict), RiskLevel(raw_risk), reason


def _short(word: str) -> str:
    return repr(word[:32] + ("..." if len(word) > 32 else "")) if word else "(missing)"
