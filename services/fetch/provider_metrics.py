"""Prometheus metrics of outgoing provider calls (DESIGN §5: provider calls by status).

Every HTTP request an adapter makes is counted once, with the outcome it ended in, and its
network time observed. Labels are low-cardinality: provider, endpoint (a fixed name per API
route, never a URL), outcome.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

from services.fetch.providers.base import ProviderError, RateLimited, TemporaryError, Unsupported

OUTCOMES = ("ok", "rate_limited", "server_error", "timeout", "bad_response", "unsupported", "connection_error")

REQUESTS = Counter(
    "cryptolens_provider_requests_total",
    "HTTP requests to market-data providers, by outcome",
    ["provider", "endpoint", "outcome"],
)

REQUEST_SECONDS = Histogram(
    "cryptolens_provider_request_seconds",
    "Time from sending a provider request to its full response (or failure)",
    ["provider", "endpoint"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)

CIRCUIT_STATE = Gauge(
    "cryptolens_provider_circuit_state",
    "Circuit breaker state per provider: 0 closed, 1 half-open, 2 open",
    ["provider"],
)

CIRCUIT_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}


def outcome_of(exc: ProviderError) -> str:
    """The outcome label of a failed request (transport failures are labelled where they occur)."""
    if isinstance(exc, RateLimited):
        return "rate_limited"
    if isinstance(exc, TemporaryError):
        return "server_error"
    if isinstance(exc, Unsupported):
        return "unsupported"
    return "bad_response"  # BadResponse, and any other ProviderError


def request_count(provider: str, endpoint: str, outcome: str) -> float:
    """Current counter value (for tests and debugging)."""
    value = REGISTRY.get_sample_value(
        "cryptolens_provider_requests_total", {"provider": provider, "endpoint": endpoint, "outcome": outcome}
    )
    return value or 0.0
