"""Slow calls run off the page's script thread, shared by every session, one at a time."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Hashable


class BackgroundCalls:
    """One call per key at a time. A look at a key whose call is done and older than ``ttl_s`` starts a
    fresh call; a call still queued or running is never started twice, however long it takes. While a
    fresh call runs, the last finished one is what a look gets: a panel keeps its answer, never blanks."""

    def __init__(self, workers: int = 1, clock: Callable[[], float] = time.monotonic):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="page-slow")
        self._jobs: dict[Hashable, tuple[float, Future, Future | None]] = {}  # started, newest, last done
        self._clock = clock

    def get(self, key: Hashable, fn: Callable[[], object], ttl_s: float) -> Future:
        started, future, finished = self._jobs.get(key, (0.0, None, None))
        if future is None or (future.done() and self._clock() - started > ttl_s):
            finished = future
            started, future = self._clock(), self._pool.submit(fn)
            self._jobs[key] = (started, future, finished)
        return future if future.done() or finished is None else finished
