"""Leases (defect 8): renewed while a refresh runs, validated at start, released on stop."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from services.fetch.lease import Leases
from tests.conftest import ROOT


async def test_a_lease_is_renewed_while_the_work_outlasts_it(redis_client):
    mine, other = Leases(redis_client, 1500, owner="a"), Leases(redis_client, 1500, owner="b")
    async with mine.hold("BTC-USD", "1h") as held:
        assert held
        for _ in range(10):  # 5 s of work: over three times the ttl
            await asyncio.sleep(0.5)
            assert not await other.acquire("BTC-USD", "1h")
            assert await other.holder("BTC-USD", "1h") == "a"
    await mine.release_all()
    assert await other.holder("BTC-USD", "1h") is None
    assert await other.acquire("BTC-USD", "1h")  # released: taken over at once, no ttl to wait out


@pytest.mark.parametrize("args, message", [
    (["--lease-s", "0"], "must be greater than 0"),
    (["--lease-s", "30", "--refresh-s", "60"], "must be longer than --refresh-s"),
])
def test_a_lease_shorter_than_a_refresh_is_a_setting_error(args, message):
    proc = subprocess.run([sys.executable, "-m", "services.cli", "serve", "fetch", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
