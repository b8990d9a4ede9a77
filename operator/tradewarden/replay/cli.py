"""The replay command line: ``python -m tradewarden.replay [--input FILE] [--pretty]``.

The operator runs it as a subprocess, apart from the live loop, feeding the runner's ``EvidenceExport``
on stdin, either as JSON or in the ConfigMap's gzip+base64 form (detected by its first bytes), and reads
the ``ReplayReport`` JSON from stdout. It imports only what the replay needs, so it starts fast.

Exit codes: 0 a report was printed; 2 the input is unusable (the message names the field); 1 the strategy
itself failed during the replay (a ``StrategyError``: the code, not the input, needs a look).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import gzip
import json
import sys
import zlib
from typing import Any, BinaryIO, TextIO

from pydantic import ValidationError

from tradewarden.api.evidence import EvidenceExport
from tradewarden.replay.engine import replay
from tradewarden.replay.loading import ReplayInputError
from tradewarden.strategies import StrategyError

PROG = "tradewarden replay"
EXIT_BAD_INPUT = 2
EXIT_REPLAY_FAILED = 1
#: Most validation problems listed; a broken export usually repeats one mistake many times.
MAX_PROBLEMS = 10
_GZIP_MAGIC = b"\x1f\x8b"


class BadInput(Exception):
    """Input that is not an EvidenceExport; the message starts with the field it is about."""


def decode_input(raw: bytes) -> EvidenceExport:
    """JSON, raw gzip, or gzip+base64 (as stored in the ConfigMap's binaryData), told apart by content."""
    data = raw.strip()
    if not data:
        raise BadInput("input: empty; expected an EvidenceExport as JSON or in its gzip+base64 form")
    # Base64 never starts with '{', '[' or '"', and JSON that matters here always does.
    if not data.startswith(_GZIP_MAGIC) and data[:1] not in (b"{", b"[", b'"'):
        try:
            data = base64.b64decode(b"".join(data.split()), validate=True)
        except (binascii.Error, ValueError):
            raise BadInput("input: neither JSON (it does not start with '{') nor base64; expected an "
                           "EvidenceExport as JSON or in its gzip+base64 form") from None
        if not data.startswith(_GZIP_MAGIC):
            raise BadInput("input: base64, but not of gzip data; expected the gzip+base64 form of an "
                           "EvidenceExport (EvidenceExport.encode())")
    if data.startswith(_GZIP_MAGIC):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise BadInput(f"input: gzip data that does not decompress ({exc})") from None
    try:
        obj: Any = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"input: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise BadInput(f"input: must be a JSON object (an EvidenceExport), got {type(obj).__name__}")
    try:
        return EvidenceExport.model_validate(obj)
    except ValidationError as exc:
        raise BadInput(describe_validation(exc)) from None


def describe_validation(exc: ValidationError) -> str:
    """One ``field: problem`` line per error, the field in wire spelling (``windowStart``, ``candles.X.0``)."""
    errors = exc.errors()
    lines = [f"input: not a valid EvidenceExport ({len(errors)} problem{'s' if len(errors) != 1 else ''}):"]
    for err in errors[:MAX_PROBLEMS]:
        loc = ".".join(str(part) for part in err["loc"]) or "input"
        lines.append(f"  {loc}: {err['msg']}")
    if len(errors) > MAX_PROBLEMS:
        lines.append(f"  ... and {len(errors) - MAX_PROBLEMS} more")
    return "\n".join(lines)


def main(argv: list[str] | None = None, *, stdin: BinaryIO | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    parser = argparse.ArgumentParser(
        prog=PROG, description="Replay a runner's EvidenceExport and print the ReplayReport as JSON.")
    parser.add_argument("--input", metavar="FILE",
                        help="read the export from FILE instead of stdin (JSON or gzip+base64)")
    parser.add_argument("--pretty", action="store_true", help="indent the JSON report for people")
    args = parser.parse_args(argv)

    try:
        if args.input:
            try:
                with open(args.input, "rb") as fh:
                    raw = fh.read()
            except OSError as exc:
                raise BadInput(f"--input: cannot read {args.input!r} ({exc.strerror or exc})") from None
        else:
            raw = (stdin if stdin is not None else sys.stdin.buffer).read()
        export = decode_input(raw)
        report = replay(export)
    except (BadInput, ReplayInputError) as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return EXIT_BAD_INPUT
    except StrategyError as exc:
        print(f"{PROG}: the strategy failed during the replay: {exc}", file=err)
        return EXIT_REPLAY_FAILED

    wire = report.to_wire()
    if args.pretty:
        out.write(json.dumps(wire, sort_keys=True, indent=2) + "\n")
    else:
        out.write(json.dumps(wire, sort_keys=True, separators=(",", ":")) + "\n")
    out.flush()
    return 0
