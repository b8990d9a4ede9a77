"""The module fixtures of a test that takes a bot live through the operator's gate, as generators to
``yield from``: a reviewer server, an operator with external reviewers on it, an emulator account with
venue keys, and a bot namespace holding those keys as the Secret ``venue-keys``."""

from __future__ import annotations

import pathlib
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence

import pytest

from support.kube import Cluster
from support.operator import OperatorProcess
from support.promotion import start_operator_with_reviewers
from support.reviewers import ReviewerServer
from support.runner import secret_manifest
from tradewarden.emulator import Emulator


def reviewer_server() -> Iterator[ReviewerServer]:
    srv = ReviewerServer().start()
    try:
        yield srv
    finally:
        srv.stop()


def operator_with_reviewers(cluster: Cluster, server: ReviewerServer, workdir: pathlib.Path,
                            reviewers: Sequence[tuple[str, str, float]] = (("alpha", "alpha", 10),),
                            extra_args: tuple[str, ...] = ()) -> Iterator[OperatorProcess]:
    """An operator whose external reviewers ``(name, path on the server, timeout)`` answer on ``server``."""
    op = start_operator_with_reviewers(cluster, workdir, [(name, server.url(path), timeout)
                                                          for name, path, timeout in reviewers],
                                       "sk-test-" + uuid.uuid4().hex, extra_args)
    try:
        yield op
    finally:
        op.stop()
        op.delete_namespaces()


def venue(api_key: str, secret: str, balances: Mapping[str, str], seed: int = 7) -> Iterator[Emulator]:
    """An emulator whose clock moves only when the test advances it."""
    emu = Emulator(seed=seed, bar_seconds=None, api_key=api_key, secret=secret, balances=dict(balances))
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


def keyed_namespace(cluster: Cluster, operator: OperatorProcess, request: pytest.FixtureRequest, api_key: str,
                    secret: str) -> str:
    """A bot namespace of ``operator``, named after the test, with the venue keys in Secret ``venue-keys``."""
    name = operator.namespace(re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[5:30].strip("-"))
    cluster.apply(secret_manifest("venue-keys", {"apiKey": api_key, "secret": secret}), namespace=name)
    return name
