"""The shared running stack for integration tests (one per session: starting it costs seconds)."""

from __future__ import annotations

import pytest

from tests.integration.services import Stack, point_page_at


@pytest.fixture(scope="session")
def stack(redis_server, tmp_path_factory):
    stack = Stack(redis_server.url, tmp_path_factory.mktemp("stack"))
    stack.add("fetch", "--provider", "simulated", "--refresh-s", "2", "--history-days", "30")
    stack.add("core")
    stack.add("alerts")
    try:
        for name in ("fetch", "core", "alerts"):
            stack[name].wait_serving()
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def service_env(stack, monkeypatch):
    return point_page_at(stack, monkeypatch)
