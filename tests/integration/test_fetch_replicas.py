"""Two Fetch replicas on one Redis: each series is polled by exactly one of them at a time."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict

import redis.asyncio as aioredis

from tests.integration.services import Stack

SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD", "ADA-USD"]


def polls(log: str) -> list[dict]:
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return [e for e in entries if e["msg"] in ("poll start", "poll end")]


def intervals(entries: list[dict]) -> dict[str, list[tuple[int, int, str]]]:
    """Per symbol, the (start, end, owner) of every poll."""
    open_at: dict[tuple[str, str], int] = {}
    out: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for e in sorted(entries, key=lambda e: (e["t_ms"], e["msg"] == "poll start")):
        key = (e["symbol"], e["owner"])
        if e["msg"] == "poll start":
            open_at[key] = e["t_ms"]
        elif key in open_at:
            out[e["symbol"]].append((open_at.pop(key), e["t_ms"], e["owner"]))
    return out


def test_replicas_never_poll_the_same_series_at_once_and_take_over(redis_server, tmp_path):
    url = redis_server.url[:-1] + "4"
    asyncio.run(aioredis.from_url(url).flushdb())
    args = ("--provider", "simulated", "--refresh-s", "0.2", "--lease-s", "1.5", "--history-days", "20",
            "--symbols", ",".join(SYMBOLS), "--log-level", "DEBUG")
    a = Stack(url, tmp_path / "a")
    b = Stack(url, tmp_path / "b")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    replicas = [a.add("fetch", *args), b.add("fetch", *args)]
    try:
        for replica in replicas:
            replica.wait_serving()
        time.sleep(4)
        # Stop a replica that holds leases: they expire and the survivor must take its series over.
        holder = max(replicas, key=lambda r: len(polls(r.log())))
        survivor = replicas[1 - replicas.index(holder)]
        holder.stop()
        stopped_at = max(e["t_ms"] for e in polls(holder.log()))
        time.sleep(4)
    finally:
        a.stop()
        b.stop()
    entries = polls(replicas[0].log()) + polls(replicas[1].log())
    by_symbol = intervals(entries)
    assert set(by_symbol) == set(SYMBOLS)
    for symbol, spans in by_symbol.items():
        spans.sort()
        for (s1, e1, o1), (s2, e2, o2) in zip(spans, spans[1:]):
            assert s2 >= e1, f"{symbol}: {o1} polled until {e1} but {o2} started at {s2}"
    survivor_owner = {e["owner"] for e in polls(survivor.log())}
    late = [(symbol, owner) for symbol, spans in by_symbol.items() for (start, _, owner) in spans
            if start > stopped_at + 2000]
    assert {symbol for symbol, _ in late} == set(SYMBOLS)  # every series is still polled...
    assert {owner for _, owner in late} == survivor_owner  # ...by the survivor alone
