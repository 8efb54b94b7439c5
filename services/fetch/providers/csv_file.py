"""The csv provider: replays files such as ../shared/data/prices/*.csv (see services.common.csv_bars).

Each file is served whole, at the interval it was given with, read and normalised once (off the
event loop) and then served from memory. A series it fills has the origin ``csv:<content hash>``,
so a changed file, or another file for the same series, replaces what an earlier run stored. A file
that changes while Fetch runs (size or modification time) is hashed and read again: the scheduler
then sees a new origin and replaces the series with the new content.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from services.common.csv_bars import CsvError, content_hash, load_csv, parse_spec
from services.fetch.providers.base import Provider, ProviderError


def _stat(path: Path) -> tuple[int, int] | None:
    """(size, mtime_ns), or None while the file cannot be read (its load then fails with the reason)."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns


class CsvProvider(Provider):
    name = "csv"
    origin = "csv"

    def __init__(self, files: dict[tuple[str, str], Path]):
        self.files = files
        self.hashes = {key: content_hash(path) for key, path in files.items()}
        self._stats = {key: _stat(path) for key, path in files.items()}
        self._loaded: dict[tuple[str, str], np.ndarray] = {}
        self._lock = asyncio.Lock()

    @classmethod
    def from_specs(cls, specs: list[str]) -> "CsvProvider":
        if not specs:
            raise ValueError("the csv provider needs at least one --csv-file SYMBOL:INTERVAL=PATH")
        files = {}
        for spec in specs:
            symbol, interval, path = parse_spec(spec)
            files[(symbol, interval)] = path
        return cls(files)

    def supports(self, symbol: str, interval: str) -> bool:
        return (symbol, interval) in self.files

    def origin_of(self, symbol: str, interval: str) -> str:
        key = (symbol, interval)
        stat = _stat(self.files[key])
        if stat is not None and stat != self._stats[key]:  # changed since read: hash and read it again
            self._stats[key] = stat
            self.hashes[key] = content_hash(self.files[key])
            self._loaded.pop(key, None)
        return f"csv:{self.hashes[key]}"

    async def series(self, symbol: str, interval: str) -> np.ndarray:
        """The whole file, normalised."""
        key = (symbol, interval)
        async with self._lock:
            if key not in self._loaded:
                try:
                    result = await asyncio.to_thread(load_csv, self.files[key], interval)
                except CsvError as exc:  # checked at start, but changed or removed since
                    raise ProviderError(self.name, str(exc)) from None
                self._loaded[key] = result.bars
        return self._loaded[key]

    async def extent(self, symbol: str, interval: str) -> tuple[int, int]:
        """[first bar, last bar + 1) of the file: the range that loads it whole."""
        ts = (await self.series(symbol, interval))["ts"]
        return int(ts[0]), int(ts[-1]) + 1

    async def fetch_bars(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> np.ndarray:
        bars = await self.series(symbol, interval)
        lo, hi = np.searchsorted(bars["ts"], [start_ms, end_ms])
        return bars[lo:hi]
