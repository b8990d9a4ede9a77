"""Structured JSON logs with secret redaction, for the runner and the operator (`--log-format json`).

Every log record passes through :class:`RedactingFilter` before it is formatted: registered secret
values (exchange keys, the ServiceAccount token) are replaced wherever they appear, and anything that
looks like an Authorization header, bearer token or key/secret assignment is masked even when its value
was never registered. Invariant 5: secrets never appear in a log line.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
import threading
from typing import Any

MASK = "***"

_PATTERNS = [
    re.compile(r"(?i)(authorization\s*[:=]\s*)(bearer\s+|basic\s+)?[^\s,;\"']+"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?i)((?:api[_-]?key|apikey|secret|password|passphrase|token|x-mbx-apikey|signature)"
               r"[\"']?\s*[:=]\s*[\"']?)[^\s,;\"'&}]+"),
]


class Redactor:
    """Known secret values plus secret-looking patterns. Thread-safe; values are added at run time."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def add(self, *values: str | None) -> None:
        with self._lock:
            # Very short values would mask ordinary words; a real key or token is never that short.
            self._values.update(v for v in values if v and len(v) >= 6)

    def __call__(self, text: str) -> str:
        with self._lock:
            values = sorted(self._values, key=len, reverse=True)
        for value in values:
            if value in text:
                text = text.replace(value, MASK)
        for pattern in _PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + MASK, text)
        return text


REDACTOR = Redactor()


class RedactingFilter(logging.Filter):
    def __init__(self, redactor: Redactor = REDACTOR) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = self.redactor(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        for key, value in list(record.__dict__.items()):
            if key in ("fields",) and isinstance(value, dict):
                record.__dict__[key] = {k: self.redactor(str(v)) if isinstance(v, str) else v
                                        for k, v in value.items()}
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's ``fields``."""

    def __init__(self, static: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.static = static or {}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **self.static,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, default=str)


def setup_logging(static: dict[str, Any], level: int = logging.INFO) -> None:
    """Route every logger (ours, ccxt's, the kubernetes client's) through redaction and JSON."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter(static))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The kubernetes client and urllib3 log request headers at DEBUG; keep them above it.
    for noisy in ("kubernetes", "urllib3", "ccxt"):
        logging.getLogger(noisy).setLevel(max(level, logging.INFO))
