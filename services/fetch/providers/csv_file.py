"""The csv provider: replays files such as ../shared/data/prices/*.csv (see services.common.csv_bars).

Each file is read and normalised once, then served from memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from services.common.csv_bars import load_csv, parse_spec
from services.fetch.providers.base import Provider


class CsvProvider(Provider):
    name = "csv"

    def __init__(self, files: dict[tuple[str, str], Path]):
        self.files = files
        self._loaded: dict[tuple[str, str], np.ndarray] = {}

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

    def symbols(self) -> list[str]:
        return sorted({s for s, _ in self.files})

    def series(self, symbol: str, interval: str) -> np.ndarray:
        key = (symbol, interval)
        if key not in self._loaded:
            self._loaded[key] = load_csv(self.files[key], interval).bars
        return self._loaded[key]

    async def fetch_bars(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> np.ndarray:
        bars = self.series(symbol, interval)
        lo, hi = np.searchsorted(bars["ts"], [start_ms, end_ms])
        return bars[lo:hi]
