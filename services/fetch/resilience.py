"""Rate limiting, retries, circuit breaking and failover around providers.

- ``RateLimiter``: an async token bucket per provider (defaults in ``DEFAULT_LIMITS``).
- ``CircuitBreaker``: closed → open after N consecutive failed calls → half-open after a reset
  timeout (one trial call) → closed on success, open again on failure.
- ``with_retries``: exponential backoff with full jitter on retryable errors, honouring a
  provider's ``Retry-After``.
- ``ResilientProvider``: a provider behind limiter + breaker + retries. For HTTP adapters the
  three wrap every single request (so a 40-page backfill retries the one page that failed and
  each page pays its own rate-limit token); for any other provider they wrap ``fetch_bars``.
Failover between providers is the Ingestor's (services/fetch/ingest.py): a provider whose
breaker is open fails at once with ``CircuitOpen``, so the next one is tried without waiting.

Clocks, sleeps and randomness are injectable so tests run on fake time.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

import numpy as np

from services.fetch import provider_metrics
from services.fetch.providers.base import (
    BadResponse,
    Provider,
    ProviderError,
    RateLimited,
)

T = TypeVar("T")
log = logging.getLogger("cryptolens.fetch")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]


# --- rate limiting -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateSpec:
    """A token bucket: ``per_second`` refill, ``burst`` capacity (cost units: requests or weight)."""

    per_second: float
    burst: float
    source: str = ""


DEFAULT_LIMITS: dict[str, RateSpec] = {
    # Keyless CoinGecko is limited per IP and shared with everyone behind it; "5-15/min" is the
    # observed range, so about 10/min and no burst.
    "coingecko": RateSpec(10 / 60, 1, "keyless public API, ~10 calls/min"),
    # Demo keys are documented at 100/min today (30/min earlier); stay at the older, safer figure.
    "coingecko-demo": RateSpec(30 / 60, 2, "demo key, 30 calls/min"),
    "coingecko-pro": RateSpec(500 / 60, 10, "paid plan, 500 calls/min (plan dependent)"),
    # 6000 request weight per minute per IP; klines cost 2. 90 weight/s with a burst of 100
    # keeps any 60 s window under 5500, leaving room for other users of the IP.
    "binance": RateSpec(90, 100, "6000 weight/min per IP, klines weight 2"),
    "kraken": RateSpec(1, 1, "public endpoints: 1 call/s stays within limits"),
    "coinbase": RateSpec(10, 15, "public endpoints: 10 requests/s, bursts to 15"),
}
FALLBACK_LIMIT = RateSpec(1, 1, "unknown provider: 1 call/s")


class RateLimiter:
    """Async token bucket. ``acquire(cost)`` waits until ``cost`` tokens are available.

    Waiters are served in arrival order (one lock), so a heavy request is not starved.
    ``block_for(seconds)`` empties the bucket and holds every caller back, e.g. after a 429
    with ``Retry-After``, so concurrent requests to the same provider back off together.
    """

    def __init__(self, per_second: float, burst: float = 1.0, *, clock: Clock = time.monotonic,
                 sleep: Sleep = asyncio.sleep):
        if per_second <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.per_second = per_second
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = burst
        self._updated = clock()
        self._blocked_until = 0.0
        self._lock = asyncio.Lock()

    @classmethod
    def from_spec(cls, spec: RateSpec, **kwargs) -> RateLimiter:
        return cls(spec.per_second, spec.burst, **kwargs)

    @classmethod
    def for_provider(cls, provider: Provider, **kwargs) -> RateLimiter:
        key = getattr(provider, "rate_key", None) or provider.name
        return cls.from_spec(DEFAULT_LIMITS.get(key, FALLBACK_LIMIT), **kwargs)

    def _refill(self, now: float) -> None:
        # No tokens accrue while blocked: after a 429 the provider sees a slow restart, not a burst.
        since = max(self._updated, min(self._blocked_until, now))
        self._tokens = min(self.burst, self._tokens + max(0.0, now - since) * self.per_second)
        self._updated = now

    async def acquire(self, cost: float = 1.0) -> None:
        cost = min(cost, self.burst)  # a request dearer than the bucket waits for a full bucket
        async with self._lock:
            while True:
                now = self._clock()
                self._refill(now)
                wait = self._blocked_until - now
                if wait <= 0:
                    if self._tokens >= cost - 1e-9:  # tolerance: float refill must not spin on 1e-17
                        self._tokens = max(0.0, self._tokens - cost)
                        return
                    wait = (cost - self._tokens) / self.per_second
                await self._sleep(wait)

    def block_for(self, seconds: float) -> None:
        now = self._clock()
        self._refill(now)
        self._tokens = 0.0
        self._blocked_until = max(self._blocked_until, now + seconds)


# --- circuit breaker -----------------------------------------------------------------------------


class CircuitOpen(ProviderError):
    """The provider's breaker is open: the call was not attempted (fail over instead)."""

    retryable = False


class CircuitBreaker:
    """Consecutive-failure breaker with a half-open trial.

    States: ``closed`` (calls pass), ``open`` (calls rejected until ``reset_timeout_s`` passed
    since opening), ``half_open`` (one trial call passes; its success closes the circuit, its
    failure opens it again).
    """

    def __init__(self, failure_threshold: int = 5, reset_timeout_s: float = 30.0, *, clock: Clock = time.monotonic,
                 name: str = ""):
        if failure_threshold < 1 or reset_timeout_s <= 0:
            raise ValueError("failure_threshold must be >= 1 and reset_timeout_s > 0")
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self.name = name
        self._clock = clock
        self._failures = 0
        self._open_until: float | None = None
        self._trial = False
        self._publish()

    @property
    def state(self) -> str:
        if self._open_until is None:
            return "closed"
        return "open" if self._clock() < self._open_until else "half_open"

    @property
    def failures(self) -> int:
        return self._failures

    def allow(self) -> bool:
        """May a call go ahead now? In half-open state this claims the single trial slot."""
        state = self.state
        if state == "closed":
            return True
        if state == "open" or self._trial:
            return False
        self._trial = True
        self._publish()
        return True

    def record_success(self) -> None:
        self._failures = 0
        self._open_until = None
        self._trial = False
        self._publish()

    def record_failure(self) -> None:
        self._failures += 1
        if self._trial or self._failures >= self.failure_threshold:
            self.trip(self.reset_timeout_s)
        self._publish()

    def trip(self, seconds: float) -> None:
        """Open now, for ``seconds`` (never shortening an open period already running)."""
        until = self._clock() + seconds
        self._open_until = until if self._open_until is None else max(self._open_until, until)
        self._trial = False
        self._publish()

    def release(self) -> None:
        """A call ended without a verdict (cancelled): free the half-open trial slot."""
        self._trial = False

    def _publish(self) -> None:
        if self.name:
            state = "half_open" if self._trial else self.state
            provider_metrics.CIRCUIT_STATE.labels(self.name).set(provider_metrics.CIRCUIT_STATE_VALUES[state])


# --- retries -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How ``with_retries`` retries.

    ``attempts`` counts the first try. Delays are full jitter: uniform in
    [0, min(max_delay_s, base_delay_s * 2**retry)]. A ``Retry-After`` is waited in full when it
    is at most ``max_wait_s``; a longer one (a Binance IP ban lasts minutes to days) is not
    waited out but raised at once, since retrying early only extends a ban. A ``BadResponse``
    is retried at most ``max_bad_responses - 1`` times: a garbled body is often transient, an
    answer for the wrong symbol is not.
    """

    attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_wait_s: float = 60.0
    max_bad_responses: int = 2


async def with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy = RetryPolicy(),
    *,
    sleep: Sleep = asyncio.sleep,
    rng: Callable[[], float] = random.random,
    on_retry: Callable[[ProviderError, float], None] | None = None,
) -> T:
    bad_responses = 0
    for attempt in range(policy.attempts):
        try:
            return await call()
        except ProviderError as exc:
            if isinstance(exc, BadResponse):
                bad_responses += 1
            too_many_bad = isinstance(exc, BadResponse) and bad_responses >= policy.max_bad_responses
            if not exc.retryable or attempt == policy.attempts - 1 or too_many_bad:
                raise
            delay = rng() * min(policy.max_delay_s, policy.base_delay_s * 2**attempt)
            if isinstance(exc, RateLimited) and exc.retry_after is not None:
                if exc.retry_after > policy.max_wait_s:
                    raise
                delay = max(delay, exc.retry_after)
            if on_retry is not None:
                on_retry(exc, delay)
            await sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


# --- the wrapped provider ------------------------------------------------------------------------


class ResilientProvider(Provider):
    """``inner`` behind a rate limiter, a circuit breaker and retries.

    HTTP adapters (those with a ``policy`` slot) get this object installed as their per-request
    policy; wrap each adapter instance once. Defaults: the limiter from ``DEFAULT_LIMITS`` for
    the provider, a breaker opening after 5 consecutive failed requests for 30 s, ``RetryPolicy()``.
    """

    def __init__(
        self,
        inner: Provider,
        limiter: RateLimiter | None = None,
        breaker: CircuitBreaker | None = None,
        retry: RetryPolicy | None = None,
        *,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ):
        self.inner = inner
        self.name = inner.name
        self.limiter = limiter or RateLimiter.for_provider(inner)
        self.breaker = breaker or CircuitBreaker(name=inner.name)
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._rng = rng
        self._per_request = "policy" in vars(inner)  # an HttpProvider's per-request slot
        if self._per_request:
            inner.policy = self

    def __getattr__(self, item: str) -> Any:
        # Extra adapter methods (CoinGecko's spot_price) pass through; their requests still
        # go through this policy.
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(item)
        return getattr(inner, item)

    def supports(self, symbol: str, interval: str) -> bool:
        return self.inner.supports(symbol, interval)

    async def close(self) -> None:
        await self.inner.close()

    async def fetch_bars(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> np.ndarray:
        if self._per_request:
            return await self.inner.fetch_bars(symbol, interval, start_ms, end_ms)
        return await self.run("fetch_bars", 1.0, lambda: self.inner.fetch_bars(symbol, interval, start_ms, end_ms))

    async def run(self, endpoint: str, weight: float, call: Callable[[], Awaitable[T]]) -> T:
        """One logical request: breaker check, then (token, attempt) with retries."""
        if not self.breaker.allow():
            raise CircuitOpen(self.name, f"{endpoint}: circuit open after repeated failures; not calling")

        async def attempt() -> T:
            await self.limiter.acquire(weight)
            try:
                return await call()
            except RateLimited as exc:
                if exc.retry_after is not None:
                    self.limiter.block_for(min(exc.retry_after, self.retry.max_wait_s))
                    if exc.retry_after > self.retry.max_wait_s:
                        self.breaker.trip(exc.retry_after)  # banned: skip this provider until then
                raise

        def note(exc: ProviderError, delay: float) -> None:
            log.debug("retrying provider request",
                     extra={"provider": self.name, "endpoint": endpoint, "error": str(exc), "delay_s": round(delay, 3)})

        try:
            result = await with_retries(attempt, self.retry, sleep=self._sleep, rng=self._rng, on_retry=note)
        except ProviderError as exc:
            if exc.retryable:
                self.breaker.record_failure()
            elif self.breaker.state != "open":
                self.breaker.record_success()  # e.g. Unsupported: the provider answered fine
            raise
        except BaseException:
            self.breaker.release()
            raise
        self.breaker.record_success()
        return result
