"""Shared async HTTP plumbing for the exchange/API adapters.

One ``HttpProvider.request`` call is one HTTP GET that is either parsed completely or raises
a ``ProviderError``; every call is counted in ``provider_metrics``. Status and transport
failures map onto the error tree of ``base.py``:

- 429 and Binance's 418 ban → ``RateLimited`` (``Retry-After`` seconds, or a provider hint)
- 5xx → ``TemporaryError``; timeouts and connection errors → ``TemporaryError``
- 400/404 (unknown symbol, unsupported granularity) → ``Unsupported``
- an empty body, HTML, a non-JSON content type, truncated JSON, a body of the wrong shape
  or for the wrong symbol → ``BadResponse``

A resilience policy (rate limiter, retries, circuit breaker; see ``services.fetch.resilience``)
can be installed in ``policy``: it then wraps every single request, so a long backfill retries
the page that failed, not the whole range.
"""

from __future__ import annotations

import email.utils
import json
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Protocol, TypeVar

import httpx
import numpy as np

from services.common.bars import BAR_DTYPE, FLAG_PARTIAL, PRICE_COLUMNS
from services.common.errors import InvalidArgument
from services.common.intervals import check_symbol
from services.fetch import provider_metrics
from services.fetch.providers.base import (
    BadResponse,
    Provider,
    ProviderError,
    RateLimited,
    TemporaryError,
    Unsupported,
)

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_CONNECT_TIMEOUT_S = 5.0
USER_AGENT = "cryptolens/0.1 (+https://github.com/cryptolens)"


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class RequestPolicy(Protocol):
    """Something that runs one request attempt-function with limiting/retries around it."""

    async def run(self, endpoint: str, weight: float, call: Callable[[], Awaitable[T]]) -> T: ...


@dataclass(frozen=True)
class HttpAnswer:
    """What a provider hook sees of a response: enough to decide on an error."""

    status: int
    headers: httpx.Headers
    text: str


def parse_retry_after(value: str | None, now_s: float | None = None) -> float | None:
    """``Retry-After`` as seconds: a number (fractions accepted) or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now_s is None else now_s)
    return max(0.0, seconds)


class HttpProvider(Provider):
    """Base class of the HTTP adapters: an ``httpx.AsyncClient`` with timeouts and error mapping.

    Subclasses call ``await self.request(endpoint, path, params, parse)``; ``parse`` gets the
    decoded JSON and returns the page. A ``ValueError``/``TypeError``/``KeyError``/``IndexError``
    from ``parse`` (a body of the wrong shape) becomes ``BadResponse``; ``parse`` may also raise
    a ``ProviderError`` itself (Kraken's in-body errors).
    """

    name = "http"
    rate_key: str  # key into resilience.DEFAULT_LIMITS; defaults to ``name``
    request_weight: Mapping[str, float] = {}  # endpoint → rate-limit cost (Binance weights)
    intervals: Mapping[str, object] = {}  # the intervals this provider serves (keys)

    def supports(self, symbol: str, interval: str) -> bool:
        try:
            check_symbol(symbol)
        except InvalidArgument:
            return False
        return interval in self.intervals

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        headers: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
        now_ms: Callable[[], int] = wall_clock_ms,
    ):
        self.base_url = base_url.rstrip("/")
        self.now_ms = now_ms
        self.policy: RequestPolicy | None = None
        self.rate_key = getattr(self, "rate_key", None) or self.name
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, DEFAULT_CONNECT_TIMEOUT_S)),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})},
            follow_redirects=False,
        )

    async def close(self) -> None:
        if self._own_client:
            await self._client.aclose()

    # --- hooks ------------------------------------------------------------------------------
    def rate_limit_hint(self, answer: HttpAnswer) -> float | None:
        """Seconds to wait when a 429/418 carries no ``Retry-After`` (e.g. Binance's ban time)."""
        return None

    # --- the request ------------------------------------------------------------------------
    async def request(
        self,
        endpoint: str,
        path: str,
        params: Mapping[str, Any] | None,
        parse: Callable[[Any], T],
    ) -> T:
        """GET ``base_url + path`` and parse it, through the installed policy if any."""

        async def once() -> T:
            return await self._request_once(endpoint, path, params, parse)

        if self.policy is None:
            return await once()
        return await self.policy.run(endpoint, self.request_weight.get(endpoint, 1.0), once)

    async def _request_once(self, endpoint: str, path: str, params, parse: Callable[[Any], T]) -> T:
        started = time.perf_counter()
        outcome = "bad_response"
        try:
            try:
                response = await self._client.get(self.base_url + path, params=params)
            except httpx.TimeoutException as exc:
                outcome = "timeout"
                raise TemporaryError(self.name, f"{endpoint}: timed out ({type(exc).__name__})") from exc
            except (httpx.TransportError, httpx.DecodingError) as exc:
                outcome = "connection_error"
                raise TemporaryError(self.name, f"{endpoint}: connection failed ({type(exc).__name__}: {exc})") from exc
            finally:
                provider_metrics.REQUEST_SECONDS.labels(self.name, endpoint).observe(time.perf_counter() - started)
            payload = self._check(endpoint, response)
            try:
                result = parse(payload)
            except (ValueError, TypeError, KeyError, IndexError) as exc:
                # A body of the wrong shape: the whole page is rejected, nothing half-returned.
                raise BadResponse(self.name, f"{endpoint}: unexpected body: {exc}") from exc
            outcome = "ok"
            return result
        except ProviderError as exc:
            if outcome not in ("timeout", "connection_error"):
                outcome = provider_metrics.outcome_of(exc)
            raise
        finally:
            provider_metrics.REQUESTS.labels(self.name, endpoint, outcome).inc()

    def _check(self, endpoint: str, response: httpx.Response) -> Any:
        """Status and body checks common to every provider; returns the decoded JSON."""
        status = response.status_code
        answer = HttpAnswer(status, response.headers, response.text)
        snippet = _snippet(answer.text)
        if status in (429, 418):
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if retry_after is None:
                retry_after = self.rate_limit_hint(answer)
            kind = "IP banned (418)" if status == 418 else "rate limited (429)"
            raise RateLimited(self.name, f"{endpoint}: {kind}: {snippet}", retry_after)
        if status >= 500:
            raise TemporaryError(self.name, f"{endpoint}: HTTP {status}: {snippet}")
        if status in (400, 404):
            raise Unsupported(self.name, f"{endpoint}: HTTP {status}: {snippet}")
        if status != 200:
            raise BadResponse(self.name, f"{endpoint}: unexpected HTTP {status}: {snippet}")
        body = answer.text
        if not body.strip():
            raise BadResponse(self.name, f"{endpoint}: empty body")
        content_type = response.headers.get("content-type", "")
        if body.lstrip().startswith("<"):
            raise BadResponse(self.name, f"{endpoint}: HTML instead of JSON ({content_type}): {snippet}")
        if "json" not in content_type.lower():
            raise BadResponse(self.name, f"{endpoint}: content type {content_type or '(none)'!r} is not JSON")
        try:
            return json.loads(body)
        except ValueError as exc:
            raise BadResponse(self.name, f"{endpoint}: malformed or truncated JSON ({exc})") from None


def _snippet(text: str, limit: int = 160) -> str:
    return " ".join(text.split())[:limit] or "(empty body)"


# --- bar helpers shared by the adapters -------------------------------------------------------


def as_float(value: Any) -> float:
    """A price or volume given as a number or a numeric string; anything else is a ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"not a number: {value!r}")
    return float(value)


def clip(bars: np.ndarray, start_ms: int, end_ms: int) -> np.ndarray:
    """Bars whose open time lies in [start_ms, end_ms)."""
    return bars[(bars["ts"] >= start_ms) & (bars["ts"] < end_ms)]


def flag_open(bars: np.ndarray, interval_ms: int, now_ms: int) -> np.ndarray:
    """Mark bars that have not closed yet at ``now_ms`` as FLAG_PARTIAL (in place)."""
    still_open = bars["ts"] + interval_ms > now_ms
    bars["flags"][still_open] |= FLAG_PARTIAL
    return bars


def floor_to(ts_ms: int, step_ms: int) -> int:
    return ts_ms - ts_ms % step_ms


def ceil_to(ts_ms: int, step_ms: int) -> int:
    return -(-ts_ms // step_ms) * step_ms


def _finish(bars: np.ndarray) -> np.ndarray:
    """Sorted, unique, valid bars: the local normalisation step of every adapter.

    Rows with a NaN, infinite or non-positive price are dropped; of rows sharing an open time
    the one that came *last* in the input wins (a later page supersedes an earlier page's still
    open bar); flags set by the adapter (FLAG_PARTIAL on the provider's open bar) are kept.
    """
    bars = np.asarray(bars, dtype=BAR_DTYPE)
    if len(bars) == 0:
        return bars.copy()
    prices = np.column_stack([bars[c] for c in PRICE_COLUMNS])
    valid = np.isfinite(prices).all(axis=1) & (prices > 0).all(axis=1)
    bars = bars[valid]
    volume = bars["volume"]
    bars["volume"] = np.where(np.isfinite(volume) & (volume >= 0), volume, 0.0)
    # Stable sort of the reversed array: the first of each ts group is then the last input row.
    reversed_bars = bars[::-1]
    order = np.argsort(reversed_bars["ts"], kind="stable")
    ordered = reversed_bars[order]
    keep = np.ones(len(ordered), dtype=bool)
    keep[1:] = ordered["ts"][1:] != ordered["ts"][:-1]
    return np.ascontiguousarray(ordered[keep])
