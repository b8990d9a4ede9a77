"""Fixtures shared by the integration tests: one operator subprocess per test module.

A module that needs an operator configured otherwise (external reviewers, a chart's ServiceAccount)
defines its own ``operator`` fixture, which takes precedence over this one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.kube import Cluster
from support.operator import OperatorProcess


@pytest.fixture(scope="module")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The operator as a real process, watching only its own ``<prefix>-*`` namespaces."""
    op = OperatorProcess(cluster, tmp_path_factory.mktemp("operator"))
    op.start()
    yield op
    op.stop()
    op.delete_namespaces()
