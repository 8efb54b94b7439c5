"""Provider adapters against a real local HTTP server: recorded bodies, generated pages, faults."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pytest

from services.common.bars import BAR_DTYPE, FLAG_PARTIAL, find_gaps, make_bars
from services.fetch import provider_metrics
from services.fetch.providers import binance, coinbase, coingecko, kraken
from services.fetch.providers.base import BadResponse, RateLimited, TemporaryError, Unsupported
from services.fetch.providers.http import _finish, parse_retry_after
from tests.replay_server import Fault, Reply, ReplayServer, SyntheticMarket

HOUR = 3_600_000
MINUTE = 60_000
DAY = 86_400_000


def utc_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp() * 1000)


@pytest.fixture
def api_dir(shared_data):
    return shared_data / "api"


@pytest.fixture
def server(api_dir):
    with ReplayServer(api_dir, hang_s=3.0) as srv:
        yield srv


@pytest.fixture
def synthetic():
    """A server with generated pages only (no shared data needed)."""
    with ReplayServer(hang_s=3.0) as srv:
        market = SyntheticMarket()
        srv.serve_market(market)
        yield srv, market


def load(api_dir, name):
    return json.loads((api_dir / name).read_text())


def rows(bars: np.ndarray) -> list[tuple]:
    return [tuple(r)[:6] for r in bars.tolist()]


def make(cls, srv: ReplayServer, **kwargs):
    base = srv.url + ("/api/v3" if cls is coingecko.CoinGeckoProvider else "")
    return cls(base, timeout_s=kwargs.pop("timeout_s", 2.0), **kwargs)


def assert_normalised(bars: np.ndarray) -> None:
    assert bars.dtype == BAR_DTYPE
    assert np.all(np.diff(bars["ts"]) > 0)
    for col in ("open", "high", "low", "close"):
        assert np.all(bars[col] > 0)


# --- the local normalisation step ----------------------------------------------------------------


def test_finish_sorts_dedupes_keeping_the_later_row_and_drops_invalid_prices():
    raw = make_bars(
        ts=[3 * HOUR, 1 * HOUR, 2 * HOUR, 3 * HOUR, 4 * HOUR, 5 * HOUR],
        open_=[10, 11, 12, 13, np.nan, 15],
        high=[10, 11, 12, 13, 14, 15],
        low=[10, 11, 12, 13, 14, -1],
        close=[10.5, 11.5, 12.5, 13.5, 14.5, 15.5],
        flags=[FLAG_PARTIAL, 0, 0, 0, 0, 0],
    )
    out = _finish(raw)
    assert out["ts"].tolist() == [HOUR, 2 * HOUR, 3 * HOUR]
    assert out["close"].tolist() == [11.5, 12.5, 13.5]  # the second 3h row (committed) replaced the partial one
    assert out["flags"].tolist() == [0, 0, 0]
    assert len(_finish(np.zeros(0, dtype=BAR_DTYPE))) == 0


def test_parse_retry_after_accepts_seconds_and_http_dates():
    assert parse_retry_after("119") == 119.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now_s=1445412420.0) == 60.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_symbol_and_interval_mapping():
    assert binance.market("BTC-USD") == "BTCUSDT"
    assert binance.market("ETH-BTC") == "ETHBTC"
    assert kraken.pair_for("BTC-USD") == ("XBT", "USD")
    assert kraken.pair_for("DOGE-USDT") == ("XDG", "USDT")
    assert kraken.key_matches("XBT", "USD", "XXBTZUSD") and kraken.key_matches("XBT", "USDT", "XBTUSDT")
    assert kraken.key_matches("ETH", "XBT", "XETHXXBT")
    assert not kraken.key_matches("XBT", "USD", "XETHZUSD")
    cb = coinbase.CoinbaseProvider()
    assert cb.supports("BTC-USD", "1h") and not cb.supports("BTC-USD", "4h")
    cg = coingecko.CoinGeckoProvider()
    assert cg.supports("SOL-USD", "1h") and not cg.supports("BTC-USD", "1m")
    assert not cg.supports("NOPE-USD", "1h") and not cg.supports("BTC-XYZ", "1h")
    assert not binance.BinanceProvider().supports("btc_usd", "1h")


# --- Binance ------------------------------------------------------------------------------------


def test_binance_recorded_klines_parse(api_dir):
    bars = _finish(binance.parse_klines(load(api_dir, "binance_klines.json"), now_ms=utc_ms("2024-01-01")))
    assert len(bars) == 500
    assert bars["ts"][0] == utc_ms("2019-04-11 14:00") and bars["ts"][-1] == utc_ms("2019-04-21 23:30")
    assert (bars["open"][0], bars["high"][0], bars["low"][0], bars["close"][0]) == (4986.23, 5009.0, 4961.01, 5000.36)
    assert bars["volume"][0] == 1176.52828
    assert set(np.diff(bars["ts"]).tolist()) == {30 * MINUTE}
    assert not np.any(bars["flags"] & FLAG_PARTIAL)


async def test_binance_fetch_recorded_page_and_flags_the_open_kline(server):
    server.route("/api/v3/klines", file="binance_klines_ccxt-static.json")
    start = utc_ms("2024-01-30 16:00")
    provider = make(binance.BinanceProvider, server, now_ms=lambda: start + 2 * HOUR + 1)
    try:
        bars = await provider.fetch_bars("BTC-USD", "1h", start, start + 3 * HOUR)
    finally:
        await provider.close()
    assert bars["ts"].tolist() == [start, start + HOUR, start + 2 * HOUR]
    assert bars["close"][0] == 43488.71 and bars["volume"][0] == 20.55495
    assert bars["flags"].tolist() == [0, 0, FLAG_PARTIAL]
    (request,) = server.requests
    assert request.query == {"symbol": "BTCUSDT", "interval": "1h", "startTime": str(start),
                             "endTime": str(start + 3 * HOUR - 1), "limit": "1000"}


async def test_binance_pages_a_long_range_exactly(synthetic):
    srv, market = synthetic
    start = utc_ms("2024-03-01")
    end = start + 2500 * MINUTE
    market.missing = frozenset({start + 10 * MINUTE, start + 1500 * MINUTE})
    provider = make(binance.BinanceProvider, srv)
    try:
        bars = await provider.fetch_bars("BTC-USD", "1m", start, end)
    finally:
        await provider.close()
    assert rows(bars) == market.bars(MINUTE, start, end)
    assert len(bars) == 2498
    assert find_gaps(bars["ts"], MINUTE) == [(start + 10 * MINUTE,) * 2, (start + 1500 * MINUTE,) * 2]
    starts = [int(r.query["startTime"]) for r in srv.requests]
    assert len(starts) == 3 and starts[0] == start and starts[1] == int(bars["ts"][999]) + MINUTE


async def test_binance_418_ban_time_parsed_from_the_body(server, api_dir):
    banned_until = 1660090423228
    server.route("/api/v3/klines", Reply(418, (api_dir / "binance_418_ipban.json").read_text()))
    provider = make(binance.BinanceProvider, server, now_ms=lambda: banned_until - 120_000)
    try:
        with pytest.raises(RateLimited) as err:
            await provider.fetch_bars("BTC-USD", "1h", 0, HOUR)
        assert err.value.retry_after == 120.0
        server.add_fault(Fault("418", retry_after=30, body_file="binance_418_ipban.json"))
        with pytest.raises(RateLimited) as err:  # a Retry-After header wins over the body
            await provider.fetch_bars("BTC-USD", "1h", 0, HOUR)
        assert err.value.retry_after == 30.0
        server.route("/api/v3/klines", file="binance_429.json", status=429)
        with pytest.raises(RateLimited) as err:
            await provider.fetch_bars("BTC-USD", "1h", 0, HOUR)
        assert err.value.retry_after is None and "1200 requests per minute" in str(err.value)
    finally:
        await provider.close()


async def test_a_failed_page_fails_the_whole_fetch(synthetic):
    srv, market = synthetic
    start = utc_ms("2024-03-01")
    srv.route("/api/v3/klines", handler=_nth_truncated(market.binance_klines, 3))
    provider = make(binance.BinanceProvider, srv, page_limit=100)
    try:
        with pytest.raises(BadResponse, match="truncated"):  # pages 1 and 2 were fine: nothing half-returned
            await provider.fetch_bars("BTC-USD", "1m", start, start + 300 * MINUTE)
    finally:
        await provider.close()
    assert len(srv.requests) == 3


def _nth_truncated(handler, n):
    count = {"calls": 0}

    def wrapped(request):
        count["calls"] += 1
        reply = handler(request)
        if count["calls"] == n:
            reply = Reply(reply.status, reply.body_bytes()[:-7], reply.content_type)
        return reply

    return wrapped


# --- Kraken -------------------------------------------------------------------------------------


async def test_kraken_recorded_ohlc_marks_the_uncommitted_bar(server):
    server.route("/0/public/OHLC", file="kraken_OHLC.json")
    start = utc_ms("2024-05-24 05:00")
    provider = make(kraken.KrakenProvider, server)
    try:
        bars = await provider.fetch_bars("BTC-USDT", "1h", start, start + 7 * HOUR)
    finally:
        await provider.close()
    assert len(bars) == 7
    assert bars["ts"][0] == start and bars["ts"][-1] == utc_ms("2024-05-24 11:00")
    assert (bars["open"][0], bars["high"][0], bars["low"][0], bars["close"][0]) == (67692.8, 67692.8, 67132.0, 67307.3)
    assert bars["volume"][0] == 20.92610534  # volume, not vwap
    assert bars["flags"].tolist() == [0] * 6 + [FLAG_PARTIAL]
    (request,) = server.requests  # 7 rows < 720: everything up to now came in one call
    assert request.query == {"pair": "XBTUSDT", "interval": "60", "since": str(start // 1000 - 1)}


async def test_kraken_string_last_and_a_real_gap(server):
    server.route("/0/public/OHLC", file="kraken_OHLC_ccxt-static.json")
    start = utc_ms("2024-01-30 15:00")
    provider = make(kraken.KrakenProvider, server)
    try:
        bars = await provider.fetch_bars("BTC-USDT", "1h", start, utc_ms("2024-02-01 16:00"))
    finally:
        await provider.close()
    assert len(bars) == 6
    assert bars["flags"].tolist() == [0] * 5 + [FLAG_PARTIAL]  # last = "1706796000" (a string) < 15:00
    assert find_gaps(bars["ts"], HOUR) == [(utc_ms("2024-01-30 20:00"), utc_ms("2024-02-01 14:00"))]


async def test_kraken_takes_its_own_pair_name_but_rejects_another_pair(server, api_dir):
    body = load(api_dir, "kraken_OHLC.json")
    body["result"]["XXBTZUSD"] = body["result"].pop("XBTUSDT")
    server.route("/0/public/OHLC", Reply.json(body))
    start = utc_ms("2024-05-24 05:00")
    provider = make(kraken.KrakenProvider, server)
    try:
        bars = await provider.fetch_bars("BTC-USD", "1h", start, start + 7 * HOUR)
        assert len(bars) == 7 and server.requests[-1].query["pair"] == "XBTUSD"
        body["result"]["XETHZUSD"] = body["result"].pop("XXBTZUSD")
        server.route("/0/public/OHLC", Reply.json(body))
        with pytest.raises(BadResponse, match="XETHZUSD"):
            await provider.fetch_bars("BTC-USD", "1h", start, start + 7 * HOUR)
    finally:
        await provider.close()


@pytest.mark.parametrize("errors, expected", [
    (["EAPI:Rate limit exceeded"], RateLimited),
    (["EGeneral:Too many requests"], RateLimited),
    (["EQuery:Unknown asset pair"], Unsupported),
    (["EService:Unavailable"], TemporaryError),
    (["EGeneral:Something odd"], BadResponse),
])
async def test_kraken_in_body_errors(synthetic, errors, expected):
    srv, _ = synthetic
    srv.route("/0/public/OHLC", Reply.json({"error": errors}))
    provider = make(kraken.KrakenProvider, srv)
    try:
        with pytest.raises(expected):
            await provider.fetch_bars("BTC-USD", "1h", 0, HOUR)
    finally:
        await provider.close()


async def test_kraken_pages_with_last_and_flags_only_the_open_bar(synthetic):
    srv, market = synthetic
    start = utc_ms("2024-03-01")
    market.now_ms = start + 1800 * MINUTE + 30_000  # the 1800th minute is still open
    provider = make(kraken.KrakenProvider, srv)
    try:
        bars = await provider.fetch_bars("ETH-USD", "1m", start, start + 2000 * MINUTE)
    finally:
        await provider.close()
    assert rows(bars) == market.bars(MINUTE, start, start + 2000 * MINUTE)
    assert len(bars) == 1801
    assert np.flatnonzero(bars["flags"] & FLAG_PARTIAL).tolist() == [1800]
    sinces = [int(r.query["since"]) for r in srv.requests]
    assert len(sinces) == 3 and sinces[0] == start // 1000 - 1
    # the first page began one bar early (since = start - 1 s), so its `last` is bar 718
    assert sinces[1] == (start + 718 * MINUTE) // 1000


# --- Coinbase -----------------------------------------------------------------------------------


async def test_coinbase_recorded_candles_newest_first_reordered(server):
    server.route("/products/{product}/candles", file="coinbase_candles.json")
    start = utc_ms("2020-03-09")
    provider = make(coinbase.CoinbaseProvider, server)
    try:
        bars = await provider.fetch_bars("BTC-USD", "1h", start, utc_ms("2020-03-16 01:00"))
    finally:
        await provider.close()
    assert len(bars) == 169
    assert_normalised(bars)
    assert bars["ts"][0] == start and bars["ts"][-1] == utc_ms("2020-03-16")
    # oldest row [1583712000, 8024.84, 8131.69, 8024.86, 8084.11, 2066.57...]: low, high, open, close
    assert (bars["open"][0], bars["high"][0], bars["low"][0], bars["close"][0]) == (8024.86, 8131.69, 8024.84, 8084.11)
    assert bars["close"][-1] == 5245.17
    (request,) = server.requests
    assert request.path == "/products/BTC-USD/candles"
    assert request.query == {"granularity": "3600", "start": "2020-03-09T00:00:00Z", "end": "2020-03-16T00:59:59Z"}


async def test_coinbase_recorded_1m_and_ccxt_low_high_order(server):
    provider = make(coinbase.CoinbaseProvider, server)
    try:
        server.route("/products/{product}/candles", file="coinbase_candles_1m.json")
        start = utc_ms("2020-03-20")
        bars = await provider.fetch_bars("BTC-USD", "1m", start, start + 300 * MINUTE)
        assert len(bars) == 300 and len(server.requests) == 1  # exactly the 300-candle maximum
        assert bars["ts"][0] == start and bars["close"][0] == 6177.01
        assert bars["ts"][-1] == utc_ms("2020-03-20 04:59") and bars["close"][-1] == 6222.01

        server.route("/products/{product}/candles", file="coinbase_candles_ccxt-static.json")
        bars = await provider.fetch_bars("BTC-USDT", "1h", 1710327600000, 1710327600000 + HOUR)
        assert rows(bars) == [(1710327600000, 73243.33, 73402.47, 73241.5, 73370.65, 1.56794406)]
    finally:
        await provider.close()


async def test_coinbase_windows_of_300_cover_a_long_range(synthetic):
    srv, market = synthetic
    start = utc_ms("2024-03-01")
    end = start + 1000 * 5 * MINUTE
    market.missing = frozenset({start + 50 * 5 * MINUTE})  # a bucket without trades
    provider = make(coinbase.CoinbaseProvider, srv)
    try:
        bars = await provider.fetch_bars("SOL-USD", "5m", start, end)
    finally:
        await provider.close()
    assert rows(bars) == market.bars(5 * MINUTE, start, end)
    assert len(bars) == 999
    assert len(srv.requests) == 4 and all(r.status == 200 for r in srv.requests)  # >300 would be a 400


# --- CoinGecko ----------------------------------------------------------------------------------


async def test_coingecko_hourly_points_to_1h_bars(server, api_dir):
    server.route("/api/v3/coins/{coin}/market_chart/range", file="coingecko_market_chart.json")
    points = load(api_dir, "coingecko_market_chart.json")["prices"]
    recorded_at = points[-1][0]
    start, end = utc_ms("2024-11-03 21:00"), utc_ms("2024-12-03 21:00")
    provider = make(coingecko.CoinGeckoProvider, server, now_ms=lambda: recorded_at)
    try:
        bars = await provider.fetch_bars("BTC-USD", "1h", start, end)
    finally:
        await provider.close()
    assert_normalised(bars)
    assert len(bars) == len({t // HOUR for t, _ in points})  # one bar per hour that has a point
    assert bars["ts"][0] == start and bars["open"][0] == points[0][1]
    assert bars["ts"][-1] == utc_ms("2024-12-03 20:00") and bars["close"][-1] == points[-1][1] == 95665.32463266946
    assert bars["flags"][-1] == FLAG_PARTIAL and not np.any(bars["flags"][:-1])
    # extremes survive bucketing: the 99.5k peak of the README, and the window's low
    assert bars["high"].max() == max(p for _, p in points) == 99531.18012036204
    assert bars["low"].min() == min(p for _, p in points)
    assert np.all(bars["volume"] > 0)
    (request,) = server.requests
    assert request.path == "/api/v3/coins/bitcoin/market_chart/range"
    assert request.query == {"vs_currency": "usd", "from": str(start // 1000), "to": str(end // 1000 - 1)}


@pytest.mark.parametrize("file, symbol, first_close", [
    ("coingecko_market_chart_daily.json", "BTC-USD", 105629.41580436694),
    ("coingecko_market_chart_daily_ethereum.json", "ETH-USD", 2526.989643891319),
])
async def test_coingecko_daily_points_to_1d_bars(server, api_dir, file, symbol, first_close):
    server.route("/api/v3/coins/{coin}/market_chart/range", file=file)
    points = load(api_dir, file)["prices"]
    provider = make(coingecko.CoinGeckoProvider, server, now_ms=lambda: points[-1][0])
    try:
        bars = await provider.fetch_bars(symbol, "1d", utc_ms("2025-05-20"), utc_ms("2025-08-18"))
    finally:
        await provider.close()
    assert len(bars) == 90
    assert bars["ts"][0] == utc_ms("2025-05-20") and bars["close"][0] == first_close
    # 2025-08-17 holds its 00:00 point and the live point at 15:55:18.
    assert bars["ts"][-1] == utc_ms("2025-08-17")
    assert (bars["open"][-1], bars["close"][-1]) == (points[-2][1], points[-1][1])
    assert bars["flags"][-1] == FLAG_PARTIAL and not np.any(bars["flags"][:-1])


async def test_coingecko_body_without_volumes_is_handled(server, api_dir):
    server.route("/api/v3/coins/{coin}/market_chart/range", file="coingecko_market_chart_truncated.json")
    points = load(api_dir, "coingecko_market_chart_truncated.json")["prices"]
    provider = make(coingecko.CoinGeckoProvider, server)
    try:
        bars = await provider.fetch_bars("BTC-USD", "5m", utc_ms("2018-08-27 12:40"), utc_ms("2018-08-27 13:10"))
    finally:
        await provider.close()
    buckets: dict[int, list[float]] = {}
    for t, p in points:
        buckets.setdefault(t - t % (5 * MINUTE), []).append(p)
    assert bars["ts"].tolist() == sorted(buckets)
    assert len(bars) == 5  # 13:00 has no point, 13:05 has two
    assert bars["close"].tolist() == [v[-1] for _, v in sorted(buckets.items())]
    assert bars["high"][-1] == max(buckets[utc_ms("2018-08-27 13:05")])
    assert bars["volume"].tolist() == [0.0] * 5


async def test_coingecko_too_coarse_points_are_unsupported(server):
    server.route("/api/v3/coins/{coin}/market_chart/range", file="coingecko_market_chart.json")  # hourly
    provider = make(coingecko.CoinGeckoProvider, server)
    try:
        with pytest.raises(Unsupported, match="min apart"):
            await provider.fetch_bars("BTC-USD", "5m", utc_ms("2024-11-10"), utc_ms("2024-11-11"))
    finally:
        await provider.close()


@pytest.mark.parametrize("interval, days, chunks", [("1h", 200, 3), ("1d", 800, 3)])
async def test_coingecko_chunks_fit_the_granularity(synthetic, interval, days, chunks):
    srv, market = synthetic
    start = utc_ms("2022-01-01")
    end = start + days * DAY
    provider = make(coingecko.CoinGeckoProvider, srv)
    try:
        bars = await provider.fetch_bars("ETH-USD", interval, start, end)
    finally:
        await provider.close()
    spans = [int(r.query["to"]) - int(r.query["from"]) + 1 for r in srv.requests]
    limit_days = 90 if interval == "1h" else 365
    assert len(spans) == chunks and max(spans) <= limit_days * 86_400 and sum(spans) == days * 86_400
    step = HOUR if interval == "1h" else DAY
    assert len(bars) == days * DAY // step and bars["ts"][0] == start and bars["ts"][-1] == end - step
    if interval == "1h":  # one hourly point per bar, a few seconds after the hour
        first_points = market.coingecko_points(start // 1000, start // 1000 + 90 * 86_400 - 1)
        assert bars["close"][:3].tolist() == [p for _, p in first_points[:3]]
    else:  # the short last chunk came back hourly: its daily bars have a real range
        assert bars["high"][-1] > bars["low"][-1] and bars["high"][0] == bars["low"][0]


async def test_coingecko_spot_price_and_api_key_headers(server):
    server.route("/api/v3/simple/price", file="coingecko_simple_price.json")
    provider = coingecko.CoinGeckoProvider(server.url + "/api/v3", api_key="demo-key")
    try:
        spot = await provider.spot_price("BTC-USD")
        assert (spot.price, spot.ts_ms) == (3458.74, 1549071865000)
        request = server.requests[-1]
        assert request.query == {"ids": "bitcoin", "vs_currencies": "usd", "include_last_updated_at": "true"}
        assert request.headers["x-cg-demo-api-key"] == "demo-key"
        assert provider.rate_key == "coingecko-demo"
        with pytest.raises(BadResponse, match="not ethereum"):  # an answer for another coin
            await provider.spot_price("ETH-USD")
    finally:
        await provider.close()
    server.route("/api/v3/simple/price", file="coingecko_simple_price_multi.json")
    pro = coingecko.CoinGeckoProvider(server.url + "/api/v3", api_key="pro-key", pro=True)
    try:
        spot = await pro.spot_price("ETH-EUR")
        assert (spot.price, spot.ts_ms) == (93.31, None)
        assert server.requests[-1].headers["x-cg-pro-api-key"] == "pro-key"
        assert "x-cg-demo-api-key" not in server.requests[-1].headers
    finally:
        await pro.close()


async def test_coingecko_429_with_retry_after(server, api_dir):
    server.add_fault(Fault("429", retry_after=119, body_file="coingecko_429.json"))
    provider = make(coingecko.CoinGeckoProvider, server)
    try:
        with pytest.raises(RateLimited, match="exceeded the Rate Limit") as err:
            await provider.spot_price("BTC-USD")
    finally:
        await provider.close()
    assert err.value.retry_after == 119.0


async def test_coinbase_429(server):
    server.route("/products/{product}/candles", file="coinbase_429.json", status=429)
    provider = make(coinbase.CoinbaseProvider, server)
    try:
        with pytest.raises(RateLimited, match="Public rate limit exceeded") as err:
            await provider.fetch_bars("BTC-USD", "1h", 0, HOUR)
    finally:
        await provider.close()
    assert err.value.retry_after is None


# --- faults, for every adapter ------------------------------------------------------------------

ADAPTERS = [
    (binance.BinanceProvider, "klines"),
    (kraken.KrakenProvider, "ohlc"),
    (coinbase.CoinbaseProvider, "candles"),
    (coingecko.CoinGeckoProvider, "market_chart_range"),
]
FAULTS = [
    ("429", RateLimited, "rate_limited"),
    ("500", TemporaryError, "server_error"),
    ("502", TemporaryError, "server_error"),
    ("503", TemporaryError, "server_error"),
    ("hang", TemporaryError, "timeout"),
    ("reset", TemporaryError, "connection_error"),
    ("truncated", BadResponse, "bad_response"),
    ("html", BadResponse, "bad_response"),
    ("wrong_content_type", BadResponse, "bad_response"),
    ("empty", BadResponse, "bad_response"),
]


@pytest.mark.parametrize("cls, endpoint", ADAPTERS, ids=[a[0].name for a in ADAPTERS])
@pytest.mark.parametrize("kind, error, outcome", FAULTS, ids=[f[0] for f in FAULTS])
async def test_each_fault_gives_the_right_error_and_is_counted(synthetic, cls, endpoint, kind, error, outcome):
    srv, _ = synthetic
    srv.add_fault(Fault(kind, retry_after=5 if kind == "429" else None))
    provider = make(cls, srv, timeout_s=0.3)
    before = provider_metrics.request_count(cls.name, endpoint, outcome)
    try:
        with pytest.raises(error) as err:
            await provider.fetch_bars("BTC-USD", "1h", utc_ms("2024-03-01"), utc_ms("2024-03-02"))
    finally:
        await provider.close()
    assert type(err.value) is error
    if kind == "429":
        assert err.value.retry_after == 5.0
    assert provider_metrics.request_count(cls.name, endpoint, outcome) == before + 1
    assert len(srv.requests) == 1


@pytest.mark.parametrize("cls", [binance.BinanceProvider, kraken.KrakenProvider, coinbase.CoinbaseProvider])
async def test_unknown_symbol_is_unsupported(synthetic, cls):
    srv, _ = synthetic
    provider = make(cls, srv)
    try:
        with pytest.raises(Unsupported):
            await provider.fetch_bars("NOPE-USD", "1h", utc_ms("2024-03-01"), utc_ms("2024-03-02"))
    finally:
        await provider.close()


async def test_connection_refused_is_temporary():
    with ReplayServer() as srv:
        url = srv.url
    provider = binance.BinanceProvider(url, timeout_s=1.0)  # the server is gone
    try:
        with pytest.raises(TemporaryError, match="connection failed"):
            await provider.fetch_bars("BTC-USD", "1h", 0, HOUR)
    finally:
        await provider.close()
