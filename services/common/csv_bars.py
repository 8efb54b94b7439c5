"""Reading bar CSV files (``timestamp,open,high,low,close,volume``, any timestamp unit), shared by
Fetch's csv provider and the alert backtest CLI.

Rows may come in any order and timestamps in any unit (mixed within a file is fine). A file is a
snapshot that may have been taken mid-bar, so besides the time rule the newest bar is also marked
partial when its volume is under 5 % of the median of the 30 bars before it.

A file that cannot be replayed as given (missing, empty, binary, ragged, no valid row, bars spaced
at another interval than the one it was declared at) raises ``CsvError`` with one line naming the
file and the reason, never a parser traceback.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pandas as pd

from services.common.bars import BAR_DTYPE, FLAG_PARTIAL
from services.common.errors import InvalidArgument
from services.common.intervals import INTERVAL_MS, check_interval, check_symbol, interval_ms
from services.common.normalize import NormalizeResult, normalize_bars, to_epoch_ms

COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
PARTIAL_VOLUME_SHARE = 0.05
_SNIFF_BYTES = 64 * 1024


class CsvError(ValueError):
    """A CSV file that cannot be replayed; the message names the file and the reason."""


def content_hash(path: str | Path) -> str:
    """Short sha256 of the file's bytes: the series origin is ``csv:<hash>``, so a changed file re-ingests."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _read_frame(path: Path) -> pd.DataFrame:
    try:
        head = path.open("rb").read(_SNIFF_BYTES)
    except FileNotFoundError:
        raise CsvError(f"{path}: no such file") from None
    except OSError as exc:
        raise CsvError(f"{path}: cannot be read ({exc.strerror})") from None
    if not head.strip():
        raise CsvError(f"{path}: the file is empty")
    if b"\x00" in head:
        raise CsvError(f"{path}: binary content, not a CSV text file")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a multi-byte character cut at the sniff boundary
            raise CsvError(f"{path}: binary content, not a UTF-8 CSV text file") from None
    try:
        return pd.read_csv(path, dtype={"timestamp": str})
    except pd.errors.ParserError as exc:
        reason = str(exc).strip().splitlines()[-1][:120]
        raise CsvError(f"{path}: ragged rows ({reason})") from None
    except (pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise CsvError(f"{path}: not a readable CSV ({str(exc)[:120]})") from None


def _spacing_ms(ts: np.ndarray) -> int | None:
    """The most common distance between consecutive distinct bar times, or None if under 3 bars."""
    unique = np.unique(ts[ts > 0])
    if len(unique) < 3:
        return None
    steps, counts = np.unique(np.diff(unique), return_counts=True)
    return int(steps[np.argmax(counts)])


def load_csv(path: str | Path, interval: str, now_ms: int | None = None) -> NormalizeResult:
    """Read and normalise one whole CSV file of bars; ``CsvError`` if it cannot be replayed."""
    path = Path(path)
    frame = _read_frame(path)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise CsvError(f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(COLUMNS)}")
    raw = np.zeros(len(frame), dtype=BAR_DTYPE)
    raw["ts"] = to_epoch_ms(frame["timestamp"].to_numpy())
    for column in COLUMNS[1:]:
        raw[column] = pd.to_numeric(frame[column], errors="coerce").to_numpy(np.float64)
    spacing = _spacing_ms(raw["ts"])
    step = interval_ms(interval)
    if spacing is not None and spacing != step:
        named = next((name for name, ms in INTERVAL_MS.items() if ms == spacing), f"{spacing / 1000:g} s")
        raise CsvError(f"{path}: bars are {named} apart, but the file was given as {interval}")
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    result = normalize_bars(raw, step, now_ms)
    if len(result.bars) == 0:
        raise CsvError(f"{path}: no valid bar in {len(frame)} row(s)")
    volume = result.bars["volume"]
    if len(volume) > 10:
        typical = float(np.median(volume[-31:-1]))
        if typical > 0 and volume[-1] < PARTIAL_VOLUME_SHARE * typical:
            result.bars["flags"][-1] |= FLAG_PARTIAL
    return result


def parse_spec(spec: str) -> tuple[str, str, Path]:
    """'BTC-USD:1d=path/to/file.csv' → (symbol, interval, path). The file itself is checked by load_csv."""
    target, sep, path = spec.partition("=")
    symbol, colon, interval = target.partition(":")
    if not sep or not colon or not path:
        raise CsvError(f"bad csv file spec {spec[:80]!r}: use SYMBOL:INTERVAL=PATH, e.g. BTC-USD:1d=btc.csv")
    try:
        symbol, interval = check_symbol(symbol), check_interval(interval)
    except InvalidArgument as exc:
        raise CsvError(f"bad csv file spec {spec[:80]!r}: {exc.message}") from None
    return symbol, interval, Path(path).expanduser()
