"""Fetch with --stream on against a local WebSocket server replaying the recorded sessions (and the
REST replay server for seeds and gap repair): bars in Redis, WatchBars updates, faults survived."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import grpc
import pytest
import redis.asyncio as aioredis

from cryptolens.v1 import fetch_pb2, fetch_pb2_grpc
from services.common.bars import find_gaps
from services.common.store import PriceStore
from services.fetch.streams.binance import BinanceStream
from tests.conftest import RedisServer
from tests.integration.services import Stack, metric
from tests.replay_server import ReplayServer, SyntheticMarket
from tests.ws_replay_server import WsReplayServer

MINUTE = 60_000
HOUR = 3_600_000
BINANCE_SYMBOLS = ["FTM-USD", "SXP-BTC", "BADGER-BTC", "XMR-BTC"]
BINANCE_MARKETS = frozenset({"FTMUSDT", "SXPBTC", "BADGERBTC", "XMRBTC"})
BINANCE_SESSION = "binance_combined_stream_session.jsonl"


def read_bars(url: str, symbol: str, interval: str):
    async def go():
        client = aioredis.from_url(url, socket_timeout=10)
        try:
            return await PriceStore(client).read_bars(symbol, interval)
        finally:
            await client.aclose()
    return asyncio.run(go())


def wait_until(check, timeout: float, what: str, log=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout:g} s\n{log()[-4000:]}")


@pytest.fixture
def redis_url(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server.url
    server.stop()


def start_fetch(redis_url, tmp_path, *args: str) -> Stack:
    stack = Stack(redis_url, tmp_path)
    stack.add("fetch", "--stream", "on", "--refresh-s", "0", "--stream-backoff-s", "0.2",
              "--provider-timeout-s", "20", *args)
    stack["fetch"].wait_serving()
    return stack


class Watch:
    """WatchBars in a thread, collecting (symbol, interval, [bar open ms], source)."""

    def __init__(self, addr: str, symbols: list[str], interval: str):
        self.updates: list[tuple] = []
        self.closes: set[float] = set()
        self.close_seen_at: dict[float, float] = {}  # close price -> time.monotonic() of its first update
        self.channel = grpc.insecure_channel(addr)
        self.call = fetch_pb2_grpc.FetchServiceStub(self.channel).WatchBars(
            fetch_pb2.WatchBarsRequest(symbols=symbols, interval=interval), timeout=120)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        try:
            for u in self.call:
                now = time.monotonic()
                self.updates.append((u.symbol, u.interval, [b.time.ToMilliseconds() for b in u.bars], u.source))
                for b in u.bars:
                    self.close_seen_at.setdefault(round(b.close, 8), now)
                    self.closes.add(round(b.close, 8))
        except grpc.RpcError:
            pass

    def close(self):
        self.call.cancel()
        self.channel.close()


def closing_klines(ws: WsReplayServer):
    parser = BinanceStream(BINANCE_SYMBOLS)
    return [k for text in ws.frames for k in parser.parse(text).events if getattr(k, "closed", False)]


def test_binance_stream_bars_in_redis_and_watchbars_malformed_frames_skipped(redis_url, tmp_path):
    with WsReplayServer(BINANCE_SESSION, speed=3) as ws, ReplayServer() as rest:
        depth = [i for i, text in enumerate(ws.frames) if "depthUpdate" in text]
        ws.malformed = set(depth[5:8])  # three frames broken mid-stream
        # REST knows the minutes before the session (the seed); the session's own come from the stream.
        rest.serve_market(SyntheticMarket(now_ms=ws.first_event_ms // MINUTE * MINUTE - MINUTE,
                                          binance_symbols=BINANCE_MARKETS))
        stack = start_fetch(redis_url, tmp_path, "--provider", "binance", "--binance-url", rest.url,
                            "--binance-ws-url", ws.url, "--symbols", ",".join(BINANCE_SYMBOLS),
                            "--interval", "1m", "--stream-intervals", "1h", "--history-days", "1")
        fetch = stack["fetch"]
        watch = Watch(fetch.addr, ["FTM-USD"], "1m")
        try:
            kline = next(k for k in closing_klines(ws) if k.symbol == "FTM-USD")

            def stored_close():
                bars = read_bars(redis_url, "FTM-USD", "1m")
                row = bars[bars["ts"] == kline.open_ms]
                return len(row) and tuple(row[0])[1:] == (kline.open, kline.high, kline.low, kline.close,
                                                          kline.volume, 0)
            wait_until(stored_close, 40, "the closing kline of FTM-USD stored as a complete 1m bar", fetch.log)
            wait_until(lambda: any(kline.open_ms in u[2] and u[3] == "binance" for u in watch.updates), 10,
                       "a WatchBars update with the streamed minute", fetch.log)
            # Frame counts are published in batches, at least once a second.
            wait_until(lambda: metric(fetch.metrics_port, "cryptolens_stream_frames_total", provider="binance",
                                      kind="malformed") == 3, 5, "three malformed frames counted", fetch.log)
            assert metric(fetch.metrics_port, "cryptolens_stream_frames_total", provider="binance",
                          kind="kline") >= 10
            assert metric(fetch.metrics_port, "cryptolens_stream_connected", provider="binance") == 1
            assert metric(fetch.metrics_port, "cryptolens_stream_lag_seconds", provider="binance") is not None
            # One truth: the stored hour is the aggregate of its stored minutes (REST seed + stream).
            minutes, hours = read_bars(redis_url, "FTM-USD", "1m"), read_bars(redis_url, "FTM-USD", "1h")
            hour = hours[hours["ts"] == kline.open_ms // HOUR * HOUR][0]
            inside = minutes[(minutes["ts"] >= hour["ts"]) & (minutes["ts"] < hour["ts"] + HOUR)]
            assert (hour["open"], hour["close"]) == (inside["open"][0], inside["close"][-1])
            assert (hour["high"], hour["low"]) == (inside["high"].max(), inside["low"].min())
            assert hour["volume"] == pytest.approx(inside["volume"].sum(), rel=1e-12)
            assert find_gaps(minutes["ts"], MINUTE) == []  # REST backfill up to the session, stream after
        finally:
            watch.close()
            stack.stop()


def test_bars_built_while_redis_is_down_are_written_once_it_is_back(tmp_path):
    redis = RedisServer(tmp_path)
    redis.start()
    with WsReplayServer(BINANCE_SESSION, speed=3) as ws, ReplayServer() as rest:
        kline = next(k for k in closing_klines(ws) if k.symbol == "FTM-USD")
        at = next(i for i, text in enumerate(ws.frames) if '"x":true' in text and "ftmusdt@kline" in text)
        ws.pause_before = at  # the feed holds just before FTM-USD's closing kline
        rest.serve_market(SyntheticMarket(now_ms=ws.first_event_ms - 10 * MINUTE, binance_symbols=BINANCE_MARKETS))
        stack = start_fetch(redis.url, tmp_path, "--provider", "binance", "--binance-url", rest.url,
                            "--binance-ws-url", ws.url, "--symbols", "FTM-USD", "--interval", "1m",
                            "--history-days", "0")
        fetch = stack["fetch"]
        try:
            wait_until(lambda: ws.paused and len(read_bars(redis.url, "FTM-USD", "1m")), 30,
                       "streamed bars before the pause", fetch.log)
            redis.stop()
            ws.resume()
            wait_until(lambda: ws.cursor > at + 50, 20, "the closing kline and more sent while Redis is down")
            time.sleep(1)
            redis.start()  # back, and empty
            ts_open = kline.open_ms

            def written():
                bars = read_bars(redis.url, "FTM-USD", "1m")
                row = bars[bars["ts"] == ts_open]
                return len(row) and tuple(row[0])[1:] == (kline.open, kline.high, kline.low, kline.close,
                                                          kline.volume, 0)
            wait_until(written, 20, "the minute closed during the outage written after it", fetch.log)
            assert fetch.proc.poll() is None and "stream bars written again" in fetch.log()
            assert metric(fetch.metrics_port, "cryptolens_stream_reconnects_total", provider="binance") in (None, 0.0)
        finally:
            stack.stop()
            redis.stop()


def test_the_open_bar_follows_a_trade_within_a_second(redis_url, tmp_path):
    with WsReplayServer(BINANCE_SESSION, speed=3) as ws, ReplayServer() as rest:
        at = [i for i, text in enumerate(ws.frames) if "ftmusdt@aggTrade" in text][5]
        ws.pause_before = at
        rest.serve_market(SyntheticMarket(now_ms=ws.first_event_ms - 10 * MINUTE, binance_symbols=BINANCE_MARKETS))
        stack = start_fetch(redis_url, tmp_path, "--provider", "binance", "--binance-url", rest.url,
                            "--binance-ws-url", ws.url, "--symbols", "FTM-USD", "--interval", "1m",
                            "--history-days", "0")
        fetch = stack["fetch"]
        watch = Watch(fetch.addr, ["FTM-USD"], "1m")
        try:
            wait_until(lambda: ws.paused and watch.updates, 30, "streamed updates before the pause", fetch.log)
            frame = json.loads(ws.frames[at])
            frame["data"]["p"] = "0.55555000"  # a price the session never has, the feed's newest trade
            sent = time.monotonic()
            ws.push(json.dumps(frame))
            wait_until(lambda: 0.55555 in watch.closes, 10, "the trade in a WatchBars update", fetch.log)
            assert watch.close_seen_at[0.55555] - sent < 1.0  # the brief's bound: within a second
        finally:
            watch.close()
            stack.stop()


def test_a_disconnect_is_counted_and_the_gap_repaired_from_rest(redis_url, tmp_path):
    with WsReplayServer(BINANCE_SESSION, speed=3) as ws, ReplayServer() as rest:
        start_minute = ws.first_event_ms // MINUTE * MINUTE
        market = SyntheticMarket(now_ms=start_minute - 5 * MINUTE, binance_symbols=BINANCE_MARKETS)
        rest.serve_market(market)  # the exchange's REST is five minutes behind at first
        stack = start_fetch(redis_url, tmp_path, "--provider", "binance", "--binance-url", rest.url,
                            "--binance-ws-url", ws.url, "--symbols", "FTM-USD", "--interval", "1m",
                            "--history-days", "1")
        fetch = stack["fetch"]
        try:
            def hole():
                ts = read_bars(redis_url, "FTM-USD", "1m")["ts"]
                return len(ts) > 1000 and ts[-1] >= start_minute and find_gaps(ts, MINUTE)
            gaps = wait_until(hole, 30, "backfill up to REST's now and streamed minutes after it", fetch.log)
            assert gaps[0][0] == market.now_ms // MINUTE * MINUTE + MINUTE  # the minutes nobody had yet
            market.now_ms = start_minute + 10 * MINUTE  # REST has caught up ...
            ws.disconnect_after = 0  # ... and the stream drops
            wait_until(lambda: len(ws.connections) >= 2, 20, "a second connection", fetch.log)
            wait_until(lambda: metric(fetch.metrics_port, "cryptolens_stream_reconnects_total",
                                      provider="binance") == 1, 10, "one reconnect counted", fetch.log)
            wait_until(lambda: not find_gaps(read_bars(redis_url, "FTM-USD", "1m")["ts"], MINUTE), 20,
                       "the gap repaired from REST after the reconnect", fetch.log)
            assert metric(fetch.metrics_port, "cryptolens_stream_connected", provider="binance") == 1
        finally:
            stack.stop()


def test_binance_server_pings_are_answered_and_the_connection_kept(redis_url, tmp_path):
    # Binance pings every 20 s and drops a client that sends no pong within a minute; scaled down here.
    with WsReplayServer(BINANCE_SESSION, speed=1, ping_interval_s=0.3, ping_timeout_s=1.0) as ws, \
            ReplayServer() as rest:
        rest.serve_market(SyntheticMarket(binance_symbols=BINANCE_MARKETS))
        stack = start_fetch(redis_url, tmp_path, "--provider", "binance", "--binance-url", rest.url,
                            "--binance-ws-url", ws.url, "--symbols", "FTM-USD", "--interval", "1m",
                            "--history-days", "0")
        try:
            wait_until(lambda: ws.connections and ws.connections[0].sent > 300, 20, "frames flowing",
                       stack["fetch"].log)
            time.sleep(3)  # ten pings
            assert len(ws.connections) == 1 and ws.connections[0].closed_by_server == ""
            assert metric(stack["fetch"].metrics_port, "cryptolens_stream_reconnects_total", provider="binance") in (
                None, 0.0)
        finally:
            stack.stop()


def test_a_late_trade_is_dropped_and_counted_and_server_shutdown_reconnects(redis_url, tmp_path):
    with WsReplayServer(BINANCE_SESSION, speed=3) as ws, ReplayServer() as rest:
        late = ws.first_event_ms - 2 * MINUTE  # two minutes before the feed's time: its bar closed long ago
        trade = {"e": "aggTrade", "E": late, "s": "FTMUSDT", "a": 1, "p": "9.99", "q": "1.0", "f": 1, "l": 1,
                 "T": late, "m": True, "M": True}
        ws.inject = {200: [json.dumps({"stream": "ftmusdt@aggTrade", "data": trade})],
                     400: [json.dumps({"stream": "!serverShutdown", "data": {"e": "serverShutdown", "E": late}})]}
        rest.serve_market(SyntheticMarket(binance_symbols=BINANCE_MARKETS))
        stack = start_fetch(redis_url, tmp_path, "--provider", "binance", "--binance-url", rest.url,
                            "--binance-ws-url", ws.url, "--symbols", "FTM-USD", "--interval", "1m",
                            "--history-days", "0")
        fetch = stack["fetch"]
        try:
            wait_until(lambda: len(ws.connections) >= 2, 20, "a new connection after serverShutdown", fetch.log)
            assert "the exchange announced a shutdown" in fetch.log()
            wait_until(lambda: metric(fetch.metrics_port, "cryptolens_stream_late_trades_total",
                                      provider="binance") == 1, 10, "the late trade counted", fetch.log)
            bars = read_bars(redis_url, "FTM-USD", "1m")
            assert 9.99 not in bars["high"]  # never applied
        finally:
            stack.stop()


def test_binance_connection_is_renewed_before_its_age_limit(redis_url, tmp_path):
    with WsReplayServer(BINANCE_SESSION, speed=1) as ws, ReplayServer() as rest:
        rest.serve_market(SyntheticMarket(binance_symbols=BINANCE_MARKETS))
        stack = start_fetch(redis_url, tmp_path, "--provider", "binance", "--binance-url", rest.url,
                            "--binance-ws-url", ws.url, "--symbols", "FTM-USD", "--interval", "1m",
                            "--history-days", "0", "--stream-max-age-s", "1.5")
        try:
            wait_until(lambda: len(ws.connections) >= 3, 20, "connections renewed", stack["fetch"].log)
            assert "connection retired after 1.5 s" in stack["fetch"].log()
        finally:
            stack.stop()


COINBASE_PRODUCTS = ["SKL-USD", "SKL-BTC", "BAND-GBP", "NMR-EUR", "BAND-BTC", "YFI-BTC", "DASH-BTC", "NU-GBP",
                     "CRV-EUR", "SKL-GBP"]


def test_coinbase_subscribes_in_time_and_a_sequence_gap_is_detected_and_repaired(redis_url, tmp_path):
    with WsReplayServer("coinbase_session_ticker_matches.jsonl", speed=5) as ws, ReplayServer() as rest:
        ws.subscribe_within_s = 5  # the feed's rule: silent clients are dropped
        skl = [i for i, text in enumerate(ws.frames) if '"type":"match"' in text and '"SKL-USD"' in text]
        ws.drop = {skl[3]}  # one trade lost in transit
        rest.serve_market(SyntheticMarket(coinbase_products=frozenset(COINBASE_PRODUCTS)))
        stack = start_fetch(redis_url, tmp_path, "--provider", "coinbase", "--coinbase-url", rest.url,
                            "--coinbase-ws-url", ws.url, "--symbols", ",".join(COINBASE_PRODUCTS),
                            "--interval", "1m", "--history-days", "0")
        fetch = stack["fetch"]
        try:
            wait_until(lambda: metric(fetch.metrics_port, "cryptolens_stream_sequence_gaps_total",
                                      provider="coinbase") == 1, 20, "one sequence gap counted", fetch.log)
            first = ws.connections[0]
            assert first.closed_by_server == "" and first.received and first.received[0][0] < 5
            assert '"matches"' in first.received[0][1] and '"SKL-USD"' in first.received[0][1]
            assert "trade ids" in fetch.log() and "SKL-USD" in fetch.log()
            wait_until(lambda: metric(fetch.metrics_port, "cryptolens_stream_frames_total", provider="coinbase",
                                      kind="trade") == 96, 20, "96 trades: 97 recorded matches, one dropped", fetch.log)

            def candles(product):
                return sum(r.path == f"/products/{product}/candles" for r in rest.requests)
            # The product with the gap is repaired from REST once more than one without.
            wait_until(lambda: candles("SKL-USD") > candles("SKL-BTC") > 0, 10, "a REST repair of SKL-USD", fetch.log)
        finally:
            stack.stop()


KRAKEN_SYMBOLS = ["WAVES-EUR", "XMR-USD", "KSM-BTC", "GRT-ETH", "SC-EUR", "ETH-CHF", "OCEAN-BTC", "OMG-USD",
                  "BTC-CHF", "ADA-BTC"]


def test_kraken_v1_silent_feed_is_dead_and_reconnected(redis_url, tmp_path):
    with WsReplayServer("kraken_v1_trade_session.jsonl", speed=2) as ws, ReplayServer() as rest:
        ws.silence_after = 15  # subscribed, then not even heartbeats
        rest.serve_market(SyntheticMarket())
        stack = start_fetch(redis_url, tmp_path, "--provider", "kraken", "--kraken-url", rest.url,
                            "--kraken-ws-url", ws.url, "--symbols", ",".join(KRAKEN_SYMBOLS), "--interval", "1m",
                            "--history-days", "0", "--stream-silence-s", "2")
        fetch = stack["fetch"]
        try:
            wait_until(lambda: len(ws.connections) >= 2, 20, "a reconnect after the silence", fetch.log)
            assert "no frame for 2 s" in fetch.log()
            assert all('"subscription": {"name": "trade"}' in c.received[0][1] for c in ws.connections)
            wait_until(lambda: (metric(fetch.metrics_port, "cryptolens_stream_frames_total", provider="kraken",
                                       kind="heartbeat") or 0) > 5, 20, "heartbeats counted", fetch.log)
        finally:
            stack.stop()


def test_stream_on_needs_an_exchange_and_auto_is_off_with_simulated(redis_url, tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    proc = subprocess.run([sys.executable, "-m", "services.cli", "serve", "fetch", "--provider", "simulated",
                           "--stream", "on"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "--stream on needs an exchange" in proc.stderr
    stack = Stack(redis_url, tmp_path, extra_env={"CRYPTOLENS_STREAM": "auto"})
    stack.add("fetch", "--provider", "simulated", "--refresh-s", "0")
    try:
        stack["fetch"].wait_serving()
        assert metric(stack["fetch"].metrics_port, "cryptolens_stream_connected", provider="binance") is None
    finally:
        stack.stop()
