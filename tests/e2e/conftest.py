"""Run with `python -m pytest tests/e2e` against a cluster (not part of the default run: pyproject's
testpaths). Without one, the run stops at once, non-zero, with one line saying how to get one."""

from __future__ import annotations

import pytest

from tests.e2e.cluster import NEEDS_CLUSTER, Cluster

_cluster: Cluster | None = None


def pytest_collection_modifyitems(session, config, items):
    global _cluster
    if not any("tests/e2e/" in item.nodeid for item in items):
        return
    try:
        _cluster = Cluster.connect()
    except Exception as exc:  # no kubeconfig, no API server, no release: all mean "no cluster for us"
        pytest.exit(f"{NEEDS_CLUSTER} ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})",
                    returncode=3)


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    assert _cluster is not None
    return _cluster
