"""Secret redaction in the runner's JSON logs, tested with a canary secret."""

from __future__ import annotations

import io
import json
import logging

from tradewarden.logs import JsonFormatter, RedactingFilter, Redactor

CANARY = "CANARY-SECRET-7f3a9c"


def emit(redactor: Redactor, msg: str, *args: object, exc: BaseException | None = None) -> dict[str, object]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(redactor))
    handler.setFormatter(JsonFormatter({"bot": "ns/b"}))
    logger = logging.getLogger(f"test-redaction-{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    if exc is not None:
        try:
            raise exc
        except type(exc):
            logger.exception(msg, *args)
    else:
        logger.warning(msg, *args)
    line = stream.getvalue().strip()
    assert CANARY not in line
    parsed: dict[str, object] = json.loads(line)
    return parsed


def test_registered_secret_never_printed() -> None:
    r = Redactor()
    r.add(CANARY)
    out = emit(r, "connecting with key %s to venue", CANARY)
    assert out["msg"] == "connecting with key *** to venue"
    assert out["bot"] == "ns/b"


def test_unregistered_secret_looking_values_are_masked() -> None:
    r = Redactor()
    for text in (f"Authorization: Bearer {CANARY}", f"headers={{'X-MBX-APIKEY': '{CANARY}'}}",
                 f"apiKey={CANARY}&x=1", f'"secret": "{CANARY}"', f"token={CANARY}"):
        emit(r, "request failed: %s", text)


def test_tracebacks_are_redacted_too() -> None:
    r = Redactor()
    r.add(CANARY)
    out = emit(r, "boom", exc=RuntimeError(f"auth failed for {CANARY}"))
    assert "RuntimeError" in str(out["exc"])


def test_short_values_are_not_registered() -> None:
    r = Redactor()
    r.add("abc")
    assert r("abc and abcdef") == "abc and abcdef"
