"""Session fixtures: one control plane for the whole run, a fresh namespace for each test.

``make test PYTEST_WORKERS=2`` runs the suite on pytest-xdist workers (``--dist loadgroup``; the default
is one process) against one cluster that ``localcluster.py run`` started for all of them. A worker takes
a whole module at a time, so a module's operator fixture starts once; the modules that share one cluster-wide singleton
(``support.pods.NODE_SINGLETONS``) all go to the same worker, one after the other, and the tests marked
``serial`` (they change what every test relies on) run after the others, alone. Every other test owns
its namespaces (a prefix of its own) and may run beside any other.
"""

from __future__ import annotations

import os
import pathlib
import re
import uuid
from collections.abc import Iterator

import pytest

from support.kube import REPO, Cluster, install_crds


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))


def _start_cluster(tmp_root: pathlib.Path) -> tuple[Cluster, object | None]:
    mode = os.environ.get("TRADEWARDEN_CLUSTER", "local")
    if mode == "current":
        kubeconfig = os.environ.get("KUBECONFIG", str(pathlib.Path.home() / ".kube" / "config"))
        # Images built from this tree and loaded onto that cluster's nodes by you (docs/TESTING.md).
        return Cluster(kubeconfig=kubeconfig, owned=False, image_tag=os.environ.get("TRADEWARDEN_IMAGE_TAG")), None
    if mode != "local":
        raise pytest.UsageError(f"TRADEWARDEN_CLUSTER must be 'local' or 'current' (got {mode!r})")
    from cluster import localcluster

    # Reuse a control plane started by `make cluster-up` when one is healthy: fast local iterations.
    shared = pathlib.Path(os.environ.get("TRADEWARDEN_CLUSTER_DIR", str(localcluster.DEFAULT_DIR)))
    state = localcluster.State.load(shared)
    if state and localcluster.healthy(state):
        return Cluster(kubeconfig=state.kubeconfig, owned=False, image_tag=localcluster.ensure_images(state),
                       audit_log=pathlib.Path(state.dir) / "logs" / "audit.log"), None
    if os.environ.get("PYTEST_XDIST_WORKER"):
        raise pytest.UsageError(
            f"no healthy cluster in {shared}: workers share one cluster, started for them by "
            "`make test PYTEST_WORKERS=2` (or `python tests/cluster/localcluster.py run -- pytest -n 2`); "
            "a plain `pytest` starts its own")
    state_dir = tmp_root / "controlplane"
    state = localcluster.up(state_dir)
    cluster = Cluster(kubeconfig=state.kubeconfig, owned=True, startup_seconds=state.startup_seconds,
                      audit_log=state_dir / "logs" / "audit.log", image_tag=localcluster.ensure_images(state))
    return cluster, state_dir


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The API server under test, with the tradewarden CRDs installed and Established."""
    cluster, state_dir = _start_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        install_crds(cluster)
        yield cluster
    finally:
        if state_dir is not None:
            from cluster import localcluster

            localcluster.down(pathlib.Path(str(state_dir)))


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of the test's own, deleted (without waiting) afterwards."""
    base = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"t-{base}-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def repo() -> pathlib.Path:
    return REPO
