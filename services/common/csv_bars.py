"""Reading bar CSV files (``timestamp,open,high,low,close,volume``, any timestamp unit), shared by
Fetch's csv provider and the alert backtest CLI.

Rows may come in any order and timestamps in any unit (mixed within a file is fine). A file is a
snapshot that may have been taken mid-bar, so besides the time rule the newest bar is also marked
partial when its volume is under 5 % of the median of the 30 bars before it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from services.common.bars import BAR_DTYPE, FLAG_PARTIAL
from services.common.errors import InvalidArgument
from services.common.intervals import check_interval, check_symbol, interval_ms
from services.common.normalize import NormalizeResult, normalize_bars, to_epoch_ms

COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
PARTIAL_VOLUME_SHARE = 0.05


def load_csv(path: str | Path, interval: str, now_ms: int | None = None) -> NormalizeResult:
    """Read and normalise one CSV file of bars."""
    frame = pd.read_csv(path, dtype={"timestamp": str})
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(COLUMNS)}")
    raw = np.zeros(len(frame), dtype=BAR_DTYPE)
    raw["ts"] = to_epoch_ms(frame["timestamp"].to_numpy())
    for column in COLUMNS[1:]:
        raw[column] = pd.to_numeric(frame[column], errors="coerce").to_numpy(np.float64)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    result = normalize_bars(raw, interval_ms(interval), now_ms)
    volume = result.bars["volume"]
    if len(volume) > 10:
        typical = float(np.median(volume[-31:-1]))
        if typical > 0 and volume[-1] < PARTIAL_VOLUME_SHARE * typical:
            result.bars["flags"][-1] |= FLAG_PARTIAL
    return result


def parse_spec(spec: str) -> tuple[str, str, Path]:
    """'BTC-USD:1d=path/to/file.csv' → (symbol, interval, path)."""
    target, sep, path = spec.partition("=")
    symbol, colon, interval = target.partition(":")
    if not sep or not colon or not path:
        raise ValueError(f"bad csv file spec {spec!r}: use SYMBOL:INTERVAL=PATH, e.g. BTC-USD:1d=btc.csv")
    try:
        symbol, interval = check_symbol(symbol), check_interval(interval)
    except InvalidArgument as exc:
        raise ValueError(f"bad csv file spec {spec!r}: {exc.message}") from None
    file = Path(path).expanduser()
    if not file.is_file():
        raise ValueError(f"bad csv file spec {spec!r}: {file} is not a readable file")
    return symbol, interval, file
