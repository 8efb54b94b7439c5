"""GetForecast black-box: a Core process on real Redis, fed by Fetch's csv provider replaying the real
BTC daily file (and a short SOL file cut from the real one)."""

from __future__ import annotations

import asyncio
import math
import time

import grpc
import numpy as np
import pytest
import redis
import redis.asyncio as aioredis
from google.protobuf.timestamp_pb2 import Timestamp

from cryptolens.v1 import core_pb2, core_pb2_grpc
from services.common import forecast as fc
from services.common.bars import make_bars
from services.common.csv_bars import load_csv
from services.common.store import PriceStore
from services.core.forecast_live import live_key
from tests.integration.services import Stack

BTC = "BTCUSDT_1d_cdd-binance.csv"


@pytest.fixture(scope="module")
def redis_url(redis_server):
    url = redis_server.url[:-1] + "14"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="module")
def core(redis_url, shared_data, tmp_path_factory):
    prices = shared_data / "prices"
    tmp = tmp_path_factory.mktemp("forecast")
    lines = (prices / "SOLUSDT_1d_cdd-binance.csv").read_text().splitlines()
    short = tmp / "sol_short.csv"
    short.write_text("\n".join(lines[:121]) + "\n")  # header + the newest 120 days (newest first)
    stack = Stack(redis_url, tmp)
    stack.add("fetch", "--provider", "csv", "--interval", "1d", "--symbols", "BTC-USD,SOL-USD",
              "--csv-file", f"BTC-USD:1d={prices / BTC},SOL-USD:1d={short}", "--history-days", "4000")
    stack.add("core", "--interval", "1d")
    try:
        stack["fetch"].wait_serving()
        stack["core"].wait_serving()
        with grpc.insecure_channel(stack["core"].addr) as channel:
            yield core_pb2_grpc.CoreServiceStub(channel)
    finally:
        stack.stop()


def _ts(text: str) -> Timestamp:
    t = Timestamp()
    t.FromJsonString(text)
    return t


def test_live_btc_forecast_is_sane_with_its_track_record(core, redis_url):
    r = core.GetForecast(core_pb2.GetForecastRequest(symbol="BTC-USD", interval="1d"), timeout=120)
    assert r.model == "garch_t" and r.bars == 3142 and r.source == "csv"
    assert r.last_bar.ToJsonString() == "2026-03-30T00:00:00Z" and r.target.ToJsonString() == "2026-03-31T00:00:00Z"
    f = r.forecast
    assert 0.005 < f.volatility < 0.15
    assert f.annualized_volatility == pytest.approx(f.volatility * math.sqrt(365))
    assert f.band_lower < 0 < f.band_upper
    assert set(f.params) == {"mu", "omega", "alpha", "beta", "nu"} and f.fit_seconds > 0
    assert {b.model for b in r.baselines} == {"ewma", "historical"}
    records = {x.model: x for x in r.track_record}
    assert set(records) == set(fc.MODELS)
    for x in records.values():
        assert x.count == 3142 - 1 - fc.MIN_RETURNS
        assert 2.5 < x.qlike < 5.0 and 0.90 <= x.coverage <= 0.99 and x.mse > 0
    assert r.HasField("dm_stat") and 0 <= r.dm_p <= 1
    assert len(r.history) == 250 and r.history[-1].time.ToJsonString() == "2026-03-30T00:00:00Z"
    # The live forecasts were stored when issued, one per model, for the target bar; none scored yet.
    assert {x.model: x.count for x in r.live_record} == {m: 0 for m in fc.MODELS}
    stored = redis.Redis.from_url(redis_url).hgetall(live_key("BTC-USD", "1d", "garch_t"))
    assert list(stored) == [str(r.target.ToMilliseconds()).encode()]
    # Asked again: the cached fit, and the stored forecast is not re-issued.
    again = core.GetForecast(core_pb2.GetForecastRequest(symbol="BTC-USD", interval="1d"), timeout=60)
    assert again.cached and again.forecast == r.forecast
    assert redis.Redis.from_url(redis_url).hgetall(live_key("BTC-USD", "1d", "garch_t")) == stored


def test_as_of_uses_only_bars_strictly_before_it(core, shared_data):
    as_of = "2022-11-09T00:00:00Z"  # the FTX day itself must not be in the forecast made as of it
    r = core.GetForecast(core_pb2.GetForecastRequest(symbol="BTC-USD", interval="1d", as_of=_ts(as_of),
                                                     model="ewma"), timeout=120)
    bars = load_csv(shared_data / "prices" / BTC, "1d").bars
    close = fc.closes_before(bars["ts"], bars["close"], _ts(as_of).ToMilliseconds())
    assert r.last_bar.ToJsonString() == "2022-11-08T00:00:00Z" and r.target.ToJsonString() == as_of
    assert r.bars == len(close)
    assert r.forecast.volatility == pytest.approx(fc.forecast(close, "ewma").volatility, rel=1e-12)
    assert not r.live_record  # a historical forecast is never stored as a live one


def test_too_short_a_series_names_the_minimum_history(core):
    with pytest.raises(grpc.RpcError) as exc:
        core.GetForecast(core_pb2.GetForecastRequest(symbol="SOL-USD", interval="1d"), timeout=60)
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"MIN_HISTORY_BARS = {fc.MIN_HISTORY_BARS}" in exc.value.details()
    with pytest.raises(grpc.RpcError) as exc:
        core.GetForecast(core_pb2.GetForecastRequest(symbol="BTC-USD", interval="1d",
                                                     as_of=_ts("2018-01-01T00:00:00Z")), timeout=60)
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "MIN_HISTORY_BARS" in exc.value.details()


@pytest.mark.parametrize("request_fields, field", [
    ({"model": "arima-" + "x" * 200}, "model"),
    ({"as_of": Timestamp(seconds=4_000_000_000)}, "as_of"),
    ({"as_of": Timestamp(seconds=-100)}, "as_of"),
    ({"interval": "2d"}, "interval"),
])
def test_bad_arguments_name_the_field(core, request_fields, field):
    with pytest.raises(grpc.RpcError) as exc:
        core.GetForecast(core_pb2.GetForecastRequest(symbol="BTC-USD", **request_fields), timeout=30)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in exc.value.details() and len(exc.value.details()) < 300


def test_the_event_loop_answers_while_a_fit_runs(core):
    """A cold evaluation runs in the compute pool: a cheap call answers meanwhile."""
    future = core.GetForecast.future(core_pb2.GetForecastRequest(
        symbol="BTC-USD", interval="1d", as_of=_ts("2025-01-01T00:00:00Z")), timeout=120)
    stats = core.GetStats(core_pb2.GetStatsRequest(symbol="BTC-USD", interval="1d", lookback="30d"), timeout=5)
    assert stats.count == 26  # 30 days less the file's 4 missing days in March 2026
    assert not future.done()
    assert future.result().bars > 2500


def _write(redis_url: str, symbol: str, ts: np.ndarray, close: np.ndarray) -> None:
    async def write():
        client = aioredis.from_url(redis_url)
        await PriceStore(client).write(symbol, "1d", make_bars(ts, close, close, close, close, np.ones(len(ts))),
                                       "test")
        await client.aclose()

    asyncio.run(write())


def test_a_live_forecast_is_scored_once_its_bar_has_closed(core, redis_url):
    """Issued by one GetForecast, scored by a later one after two more bars were written: against the
    forecast as issued, on the realised return of its target bar."""
    day = 86_400_000
    rng = np.random.default_rng(11)
    n = 400
    last = (int(time.time() * 1000) // day - 5) * day
    ts = last - day * np.arange(n - 1, -1, -1, dtype=np.int64)
    close = 50.0 * np.exp(np.cumsum(rng.standard_t(5, n) * 0.02))
    _write(redis_url, "DOT-USD", ts, close)
    first = core.GetForecast(core_pb2.GetForecastRequest(symbol="DOT-USD", interval="1d"), timeout=60)
    assert first.target.ToMilliseconds() == last + day
    assert {x.model: x.count for x in first.live_record} == {m: 0 for m in fc.MODELS}

    _write(redis_url, "DOT-USD", np.array([last + day, last + 2 * day]), np.array([close[-1] * 1.05, close[-1]]))
    second = core.GetForecast(core_pb2.GetForecastRequest(symbol="DOT-USD", interval="1d"), timeout=60)
    assert second.target.ToMilliseconds() == last + 3 * day
    live = {x.model: x for x in second.live_record}
    assert {m: x.count for m, x in live.items()} == {m: 1 for m in fc.MODELS}
    h = (100 * first.forecast.volatility) ** 2
    r = 100 * math.log(1.05)
    assert live["garch_t"].qlike == pytest.approx(math.log(h) + r * r / h, rel=1e-9)
    inside = first.forecast.band_lower <= math.log(1.05) <= first.forecast.band_upper
    assert live["garch_t"].coverage == (1.0 if inside else 0.0)


def test_a_broken_live_record_leaves_the_forecast_standing(core, redis_url):
    """The live record's key holding the wrong type (Redis answers WRONGTYPE): the forecast is answered,
    without a live record, never an error."""
    day = 86_400_000
    last = (int(time.time() * 1000) // day - 2) * day
    ts = last - day * np.arange(299, -1, -1, dtype=np.int64)
    close = 10.0 * np.exp(np.cumsum(np.random.default_rng(4).standard_t(5, 300) * 0.03))
    _write(redis_url, "ADA-USD", ts, close)
    redis.Redis.from_url(redis_url).set(live_key("ADA-USD", "1d", "garch_t"), "not a hash")
    r = core.GetForecast(core_pb2.GetForecastRequest(symbol="ADA-USD", interval="1d"), timeout=60)
    assert r.forecast.volatility > 0 and r.bars == 300
    assert not r.live_record
