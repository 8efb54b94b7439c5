"""Core's result cache: serialized answers in process memory, least recently used first out,
bounded in bytes. Keys hold the exact stamps of every series an answer was computed from (see
docs/caching.md), so an entry can only be found while its data are exactly what they were."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from prometheus_client import Gauge

from services.common.loop_counter import LoopCounter

CACHE_LOOKUPS = LoopCounter("cryptolens_core_cache_lookups", "Result cache lookups by method and result (hit, miss)",
                            ["method", "result"])
CACHE_BYTES = Gauge("cryptolens_core_cache_bytes", "Bytes held by the result cache (answers and keys)")
CACHE_ENTRIES = Gauge("cryptolens_core_cache_entries", "Answers held by the result cache")

_ENTRY_OVERHEAD = 200  # the key tuple and dict slot, roughly


def request_digest(request) -> str:
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()[:32]


class ResultCache:
    """Each entry is an answer's bytes and a small tuple of facts about it (``extra``) that its
    caller needs without parsing the answer."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, tuple[bytes, tuple]] = OrderedDict()
        self.bytes = 0

    def get(self, method: str, key: tuple) -> tuple[bytes, tuple] | None:
        entry = self._entries.get(key)
        CACHE_LOOKUPS.labels(method, "hit" if entry is not None else "miss").inc()
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def repeated(self, method: str, key: tuple) -> None:
        """An answer served again by its caller from its last lookup of ``key`` (Core's repeated
        GetStats): counted as the hit it stands for, so the hit ratio means the same with or without
        it, and kept as recently used as a hit keeps it."""
        CACHE_LOOKUPS.labels(method, "hit").inc()
        if key in self._entries:
            self._entries.move_to_end(key)

    def put(self, key: tuple, raw: bytes, extra: tuple = ()) -> None:
        size = len(raw) + _ENTRY_OVERHEAD
        if size > self.max_bytes:
            return  # bigger than the whole budget: not worth evicting everything for
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= len(old[0]) + _ENTRY_OVERHEAD
        self._entries[key] = (raw, extra)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (dropped, _) = self._entries.popitem(last=False)
            self.bytes -= len(dropped) + _ENTRY_OVERHEAD
        CACHE_BYTES.set(self.bytes)
        CACHE_ENTRIES.set(len(self._entries))
