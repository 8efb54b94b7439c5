"""Rate limiter, retries, circuit breaker, resilient providers and failover (fake time where it matters)."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.bars import make_bars
from services.common.errors import NotFound, Unavailable
from services.fetch import provider_metrics
from services.fetch.ingest import Ingestor
from services.fetch.providers import binance, coingecko, kraken
from services.fetch.providers.base import (
    BadResponse,
    Provider,
    RateLimited,
    TemporaryError,
    Unsupported,
)
from services.fetch.resilience import (
    DEFAULT_LIMITS,
    CircuitBreaker,
    CircuitOpen,
    RateLimiter,
    ResilientProvider,
    RetryPolicy,
    with_retries,
)
from tests.replay_server import RANDOM_FAULTS, Fault, ReplayServer, SyntheticMarket

MINUTE = 60_000
HOUR = 3_600_000
START = 1_709_251_200_000  # 2024-03-01 00:00 UTC


class FakeTime:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Scripted:
    """An async call that raises the scripted errors in order, then returns 'done'."""

    def __init__(self, *errors: Exception):
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def bars_of(n: int, price: float = 100.0) -> np.ndarray:
    ts = START + np.arange(n) * HOUR
    return make_bars(ts, [price] * n, [price] * n, [price] * n, [price] * n)


class FakeProvider(Provider):
    def __init__(self, name: str, errors=(), supported: bool = True, price: float = 100.0):
        self.name = name
        self.errors = list(errors)
        self.supported = supported
        self.price = price
        self.calls = 0

    def supports(self, symbol, interval):
        return self.supported

    async def fetch_bars(self, symbol, interval, start_ms, end_ms):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return bars_of(3, self.price)


# --- with_retries ----------------------------------------------------------------------------------


async def test_retry_waits_exactly_the_retry_after():
    fake = FakeTime()
    call = Scripted(RateLimited("x", "429", retry_after=7), RateLimited("x", "429", retry_after=3))
    assert await with_retries(call, RetryPolicy(base_delay_s=0.5), sleep=fake.sleep, rng=lambda: 0.0) == "done"
    assert fake.sleeps == [7, 3] and call.calls == 3


async def test_retry_after_longer_than_max_wait_is_not_waited_out():
    fake = FakeTime()
    call = Scripted(RateLimited("x", "banned", retry_after=3600))
    with pytest.raises(RateLimited):
        await with_retries(call, RetryPolicy(max_wait_s=60), sleep=fake.sleep)
    assert fake.sleeps == [] and call.calls == 1


async def test_backoff_on_server_errors_is_exponential_with_full_jitter():
    fake = FakeTime()
    errors = [TemporaryError("x", "503") for _ in range(4)]
    policy = RetryPolicy(attempts=5, base_delay_s=0.5, max_delay_s=3.0)
    assert await with_retries(Scripted(*errors), policy, sleep=fake.sleep, rng=lambda: 1.0) == "done"
    assert fake.sleeps == [0.5, 1.0, 2.0, 3.0]  # the ceiling doubles, capped at max_delay_s
    fake.sleeps.clear()
    errors = [TemporaryError("x", "503") for _ in range(3)]
    await with_retries(Scripted(*errors), policy, sleep=fake.sleep, rng=lambda: 0.25)
    assert fake.sleeps == [0.125, 0.25, 0.5]  # jitter: a uniform fraction of the ceiling
    # a rate limit without Retry-After backs off like a server error
    fake.sleeps.clear()
    await with_retries(Scripted(RateLimited("x", "429")), policy, sleep=fake.sleep, rng=lambda: 1.0)
    assert fake.sleeps == [0.5]


async def test_retries_give_up_and_skip_non_retryable_errors():
    fake = FakeTime()
    call = Scripted(*[TemporaryError("x", f"503 #{i}") for i in range(5)])
    with pytest.raises(TemporaryError, match="#2"):
        await with_retries(call, RetryPolicy(attempts=3), sleep=fake.sleep)
    assert call.calls == 3 and len(fake.sleeps) == 2
    call = Scripted(Unsupported("x", "unknown pair"))
    with pytest.raises(Unsupported):
        await with_retries(call, RetryPolicy(attempts=3), sleep=fake.sleep)
    assert call.calls == 1
    call = Scripted(*[BadResponse("x", "html") for _ in range(3)])
    with pytest.raises(BadResponse):
        await with_retries(call, RetryPolicy(attempts=5, max_bad_responses=2), sleep=fake.sleep)
    assert call.calls == 2  # a bad body is retried once by default


# --- rate limiter ----------------------------------------------------------------------------------


async def test_token_bucket_allows_the_burst_then_the_rate():
    fake = FakeTime()
    limiter = RateLimiter(per_second=2, burst=3, clock=fake.clock, sleep=fake.sleep)
    granted = []
    for _ in range(7):
        await limiter.acquire()
        granted.append(fake.now - 1000.0)
    assert granted == pytest.approx([0, 0, 0, 0.5, 1.0, 1.5, 2.0])


async def test_token_bucket_weights_and_blocking():
    fake = FakeTime()
    limiter = RateLimiter(per_second=100, burst=100, clock=fake.clock, sleep=fake.sleep)
    for _ in range(50):  # Binance klines cost 2: 50 fit the 100-weight burst
        await limiter.acquire(2)
    assert fake.now == 1000.0
    await limiter.acquire(2)
    assert fake.now == pytest.approx(1000.02)
    limiter.block_for(5)  # after a 429 with Retry-After: 5
    await limiter.acquire(1)
    assert fake.now == pytest.approx(1005.03)  # 5 s blocked, then the emptied bucket refills one token


def test_documented_default_limits():
    assert DEFAULT_LIMITS["coingecko"].per_second * 60 == pytest.approx(10)
    assert DEFAULT_LIMITS["coingecko-demo"].per_second * 60 == pytest.approx(30)
    assert DEFAULT_LIMITS["kraken"].per_second == 1
    assert (DEFAULT_LIMITS["coinbase"].per_second, DEFAULT_LIMITS["coinbase"].burst) == (10, 15)
    binance_60s = DEFAULT_LIMITS["binance"].burst + 60 * DEFAULT_LIMITS["binance"].per_second
    assert binance_60s <= 6000  # weight per minute, whatever the burst
    assert RateLimiter.for_provider(coingecko.CoinGeckoProvider(api_key="k")).per_second == pytest.approx(0.5)


# --- circuit breaker -------------------------------------------------------------------------------


def test_breaker_opens_half_opens_and_closes():
    fake = FakeTime()
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout_s=30, clock=fake.clock)
    for _ in range(2):
        breaker.record_failure()
    breaker.record_success()  # consecutive failures only
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    fake.now += 29.9
    assert breaker.state == "open"
    fake.now += 0.1
    assert breaker.state == "half_open"
    assert breaker.allow() and not breaker.allow()  # one trial at a time
    breaker.record_failure()  # the trial failed: open again for a full timeout
    assert breaker.state == "open"
    fake.now += 30
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow() and breaker.failures == 0


# --- resilient provider ----------------------------------------------------------------------------


def _resilient(inner, fake: FakeTime, threshold: int = 3, **retry) -> ResilientProvider:
    return ResilientProvider(
        inner,
        limiter=RateLimiter(1000, 1000, clock=fake.clock, sleep=fake.sleep),
        breaker=CircuitBreaker(threshold, 30, clock=fake.clock),
        retry=RetryPolicy(**{"attempts": 3, "base_delay_s": 0.1, **retry}),
        sleep=fake.sleep,
        rng=lambda: 1.0,
    )


async def test_resilient_provider_retries_then_opens_the_breaker():
    fake = FakeTime()
    inner = FakeProvider("flaky", errors=[TemporaryError("flaky", "502")] * 2)
    provider = _resilient(inner, fake)
    assert len(await provider.fetch_bars("BTC-USD", "1h", 0, HOUR)) == 3
    assert inner.calls == 3 and fake.sleeps == [0.1, 0.2]

    inner.errors = [TemporaryError("flaky", "down")] * 100
    for _ in range(3):  # three failed logical calls (each after its retries) open the breaker
        with pytest.raises(TemporaryError):
            await provider.fetch_bars("BTC-USD", "1h", 0, HOUR)
    assert provider.breaker.state == "open"
    calls = inner.calls
    with pytest.raises(CircuitOpen):
        await provider.fetch_bars("BTC-USD", "1h", 0, HOUR)
    assert inner.calls == calls  # not even tried

    fake.now += 30  # half-open: the trial succeeds and closes it
    inner.errors = []
    assert len(await provider.fetch_bars("BTC-USD", "1h", 0, HOUR)) == 3
    assert provider.breaker.state == "closed"


async def test_unsupported_is_not_a_breaker_failure():
    fake = FakeTime()
    inner = FakeProvider("picky", errors=[Unsupported("picky", "no such pair")] * 10)
    provider = _resilient(inner, fake, threshold=1)
    for _ in range(3):
        with pytest.raises(Unsupported):
            await provider.fetch_bars("BTC-USD", "1h", 0, HOUR)
    assert provider.breaker.state == "closed" and inner.calls == 3


async def test_retry_after_is_honoured_per_request_over_http():
    fake = FakeTime()
    with ReplayServer() as srv:
        market = SyntheticMarket()
        srv.serve_market(market)
        srv.add_fault(Fault("429", retry_after=3))
        srv.add_fault(Fault("503"), times=2)
        inner = binance.BinanceProvider(srv.url, page_limit=100, timeout_s=2.0)
        provider = _resilient(inner, fake, attempts=4)
        before = provider_metrics.request_count("binance", "klines", "server_error")
        try:
            bars = await provider.fetch_bars("BTC-USD", "1m", START, START + 250 * MINUTE)
        finally:
            await provider.close()
        assert [tuple(r)[:6] for r in bars.tolist()] == market.bars(MINUTE, START, START + 250 * MINUTE)
        # 429 → wait exactly Retry-After; then two 503 → backoff 0.2, 0.4 (attempts 2 and 3 of that page)
        assert [s for s in fake.sleeps if s >= 0.1] == [3, 0.2, 0.4]
        statuses = [r.status for r in srv.requests]
        assert statuses == [429, 503, 503, 200, 200, 200]
        assert provider_metrics.request_count("binance", "klines", "server_error") == before + 2


async def test_a_long_ban_trips_the_breaker_instead_of_waiting(shared_data):
    fake = FakeTime()
    with ReplayServer(shared_data / "api") as srv:
        srv.serve_market(SyntheticMarket())
        srv.add_fault(Fault("418", body_file="binance_418_ipban.json"))
        banned_until = 1660090423228
        inner = binance.BinanceProvider(srv.url, now_ms=lambda: banned_until - 3_600_000, timeout_s=2.0)
        provider = _resilient(inner, fake, max_wait_s=60)
        try:
            with pytest.raises(RateLimited):
                await provider.fetch_bars("BTC-USD", "1h", START, START + HOUR)
            assert len(srv.requests) == 1 and fake.sleeps == []
            assert provider.breaker.state == "open"
            fake.now += 3599
            assert provider.breaker.state == "open"  # open for the whole ban, not the 30 s default
            fake.now += 1
            assert provider.breaker.state == "half_open"
        finally:
            await provider.close()


# --- failover --------------------------------------------------------------------------------------


async def test_ingestor_fails_over_and_says_who_served():
    fake = FakeTime()
    broken = _resilient(FakeProvider("broken", errors=[TemporaryError("broken", "500")] * 100), fake, threshold=1)
    with pytest.raises(TemporaryError):
        await broken.fetch_bars("BTC-USD", "1h", 0, HOUR)
    assert broken.breaker.state == "open"
    picky = FakeProvider("picky", supported=False)
    unknown = FakeProvider("unknown", errors=[Unsupported("unknown", "no pair")] * 2)
    failing = FakeProvider("failing", errors=[BadResponse("failing", "html")] * 2)
    good = FakeProvider("good", price=42.0)
    chain = Ingestor(None, [broken, picky, unknown, failing, good])
    calls_before = broken.inner.calls
    bars, source = await chain.fetch("BTC-USD", "1h", 0, HOUR)
    assert source == "good" and bars["close"].tolist() == [42.0] * 3
    assert broken.inner.calls == calls_before and picky.calls == 0  # open breaker and unsupported: not called
    assert unknown.calls == 1 and failing.calls == 1


async def test_ingestor_errors_when_nobody_serves():
    with pytest.raises(NotFound):
        await Ingestor(None, [FakeProvider("a", supported=False)]).fetch("BTC-USD", "1h", 0, HOUR)
    all_fail = Ingestor(None, [FakeProvider("a", errors=[TemporaryError("a", "500")]),
                               FakeProvider("b", errors=[RateLimited("b", "429")])])
    with pytest.raises(Unavailable, match="every provider failed"):
        await all_fail.fetch("BTC-USD", "1h", 0, HOUR)


async def test_ingestor_over_http_fails_over_from_binance_to_kraken():
    fake = FakeTime()
    with ReplayServer() as srv:
        market = SyntheticMarket()
        srv.serve_market(market)
        srv.add_fault(Fault("502", path="/api/v3/klines"), times=100)
        providers = [_resilient(binance.BinanceProvider(srv.url, timeout_s=2.0), fake, attempts=2),
                     _resilient(kraken.KrakenProvider(srv.url, timeout_s=2.0), fake)]
        try:
            bars, source = await Ingestor(None, providers).fetch("BTC-USD", "1h", START, START + 24 * HOUR)
        finally:
            for provider in providers:
                await provider.close()
    assert source == "kraken"
    assert [tuple(r)[:6] for r in bars.tolist()] == market.bars(HOUR, START, START + 24 * HOUR)
    assert [r.path for r in srv.requests] == ["/api/v3/klines", "/api/v3/klines", "/0/public/OHLC"]


# --- the whole thing under random failures ---------------------------------------------------------


async def test_backfill_survives_30_percent_random_failures_within_the_rate(redis_client):
    """Through the real write path: provider chain → normalisation → Redis, then read back."""
    from services.common.store import PriceStore
    from services.fetch.ingest import Ingestor

    rate, burst = 50.0, 5.0
    with ReplayServer(hang_s=2.0) as srv:
        market = SyntheticMarket()
        srv.serve_market(market)
        srv.fail_randomly(0.3, seed=20240301, modes=RANDOM_FAULTS + ("hang",))
        inner = binance.BinanceProvider(srv.url, page_limit=100, timeout_s=0.25)
        provider = ResilientProvider(
            inner,
            limiter=RateLimiter(rate, burst),
            retry=RetryPolicy(attempts=10, base_delay_s=0.01, max_delay_s=0.05, max_bad_responses=10),
        )
        counted = lambda: sum(provider_metrics.request_count("binance", "klines", o)  # noqa: E731
                              for o in provider_metrics.OUTCOMES)
        before = counted()
        end = START + 4000 * MINUTE
        store = PriceStore(redis_client)
        try:
            result = await Ingestor(store, [provider]).ingest("BTC-USD", "1m", START, end)
        finally:
            await provider.close()
        log = srv.requests
    assert result.source == "binance" and result.version == 1  # one write: the whole range at once
    bars = await store.read_bars("BTC-USD", "1m")
    assert [tuple(r)[:6] for r in bars.tolist()] == market.bars(MINUTE, START, end)  # complete and exact
    faults = [r.fault for r in log if r.fault]
    assert len(log) - len(faults) == 40  # 40 pages served once each
    assert len(faults) >= 8 and len(set(faults)) >= 4  # the faults really happened, of several kinds
    assert counted() - before == len(log)  # every HTTP request was counted
    # A token bucket allows at most burst + rate * T requests in any window T (+1 for arrival jitter).
    assert srv.peak_count(1.0) <= burst + rate * 1.0 + 1
    assert srv.peak_count(0.2) <= burst + rate * 0.2 + 1
