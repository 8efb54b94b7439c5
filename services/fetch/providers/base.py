"""The interface every price provider implements, and the errors they raise.

A provider turns (symbol, interval, [start_ms, end_ms)) into a normalised bar array
(``services.common.bars.BAR_DTYPE``: sorted, unique, valid; a still-open last bar is
flagged ``FLAG_PARTIAL``). Paging within the range is the provider's own business.
"""

from __future__ import annotations

import abc

import numpy as np


class ProviderError(Exception):
    """Base of every provider failure. ``retryable`` says whether trying again may help."""

    retryable = False

    def __init__(self, provider: str, message: str):
        super().__init__(f"{provider}: {message}")
        self.provider = provider


class RateLimited(ProviderError):
    """HTTP 429/418 or an in-body rate-limit error; ``retry_after`` seconds if the provider said."""

    retryable = True

    def __init__(self, provider: str, message: str, retry_after: float | None = None):
        super().__init__(provider, message)
        self.retry_after = retry_after


class TemporaryError(ProviderError):
    """5xx, timeout, connection error: worth retrying with backoff."""

    retryable = True


class BadResponse(ProviderError):
    """Malformed or unexpected body (truncated JSON, HTML page, wrong symbol). Retryable once
    or failed over; never stored."""

    retryable = True


class Unsupported(ProviderError):
    """The provider cannot serve this symbol or interval (try the next provider)."""


class Provider(abc.ABC):
    name: str = "provider"
    origin: str = "live"  # what a series it fills is: "live" (an exchange/API), "simulated", "csv"

    def origin_of(self, symbol: str, interval: str) -> str:
        """The origin recorded for a series this provider serves (one origin per series)."""
        return self.origin

    @abc.abstractmethod
    def supports(self, symbol: str, interval: str) -> bool:
        """True if this provider can serve the canonical symbol at this interval."""

    @abc.abstractmethod
    async def fetch_bars(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> np.ndarray:
        """Normalised bars with open time in [start_ms, end_ms)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release network resources."""
