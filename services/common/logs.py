"""JSON logs: one object per line on stdout, so any log shipper can parse them.

Calm while a dependency is down: a loop that fails on every tick (Redis gone, an exchange dark)
must not bury the log. The same warning or error from the same logger passes once per minute
(the next one that passes says how many were held back), and a "could not connect" error is one
line with its reason, not a traceback: it is an outage, not a bug.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import redis.exceptions

from services.common.errors import Unavailable
from services.common.redis_client import is_outage

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
# A dependency that is down (Redis, a peer service, a provider): an outage, not a bug.
_OUTAGES = (ConnectionError, TimeoutError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, Unavailable)
REPEAT_WINDOW_S = 60.0


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        # Structured context passed as logging's ``extra=`` lands on the record.
        entry.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            if isinstance(exc, _OUTAGES) or is_outage(exc):
                entry["error"] = " ".join(f"{type(exc).__name__}: {exc}".split())
            else:
                entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class QuietRepeats(logging.Filter):
    """The same warning or error (logger, text, exception type) passes once per ``window_s``.

    The next copy that passes carries ``repeated``: how many were held back meanwhile. Messages that
    differ (another symbol, another reason) are never held back by each other. The runtime's own
    lines always pass: it logs changes ("redis lost", "redis reachable"), never once per tick.
    """

    always = ("cryptolens.runtime",)

    def __init__(self, window_s: float = REPEAT_WINDOW_S):
        super().__init__()
        self.window_s = window_s
        self._seen: dict[tuple, list] = {}  # key -> [time it last passed, copies held back since]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or record.name in self.always:
            return True
        exc_type = record.exc_info[0] if record.exc_info else None
        key = (record.name, record.levelno, record.getMessage(), exc_type)
        seen = self._seen.get(key)
        if seen is not None and record.created - seen[0] < self.window_s:
            seen[1] += 1
            return False
        if seen is not None and seen[1]:
            record.repeated = seen[1]
        if len(self._seen) > 1000:  # forget what has not been seen for a window
            self._seen = {k: v for k, v in self._seen.items() if record.created - v[0] < self.window_s}
        self._seen[key] = [record.created, 0]
        return True


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    handler.addFilter(QuietRepeats())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
