"""Notifications out: a generic JSON webhook and an Alertmanager-compatible push.

Each receiver has a durable outbox (a Redis list). Evaluation only appends to it; one worker per
receiver delivers in order, retrying with exponential backoff and jitter, so a failing or hanging
receiver never delays evaluation and nothing is lost across a restart. Delivery is at least once;
every payload carries a stable ``id`` so a receiver can drop the rare duplicate (a crash between a
successful POST and the outbox pop).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from datetime import datetime, timezone

import httpx
import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge

log = logging.getLogger("cryptolens.alerts.notify")

NOTIFICATIONS = Counter("cryptolens_notifications_total", "Notification deliveries by receiver and outcome",
                        ["receiver", "outcome"])
OUTBOX = Gauge("cryptolens_notification_outbox", "Notifications waiting for delivery", ["receiver"])

OUTBOX_KEY = "cl:v1:alerts:outbox:{}"


def _rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def webhook_body(event: dict) -> dict:
    return {**event, "time": _rfc3339(event["time_ms"])}


def alertmanager_body(event: dict) -> list[dict]:
    """One Alertmanager alert per transition: firing while WARNING/ALERT, resolved (endsAt) on OK."""
    firing = event["grade"] in ("WARNING", "ALERT") and event["to"] != "OK"
    alert = {
        "labels": {"alertname": f"cryptolens_{event['rule']}", "symbol": event["symbol"], "rule": event["rule"],
                   "severity": event["grade"].lower() if firing else "none", "source": "cryptolens"},
        "annotations": {"summary": event["message"], "value": str(event.get("value"))},
        "startsAt": _rfc3339(event["since_ms"] if firing else event["time_ms"]),
    }
    if not firing:
        alert["endsAt"] = _rfc3339(event["time_ms"])
    return [alert]


class Receiver:
    """One notification target with its own outbox and delivery worker."""

    def __init__(self, name: str, url: str, redis: aioredis.Redis, timeout_s: float = 5.0,
                 backoff_s: float = 1.0, max_backoff_s: float = 60.0):
        self.name = name
        self.url = url.rstrip("/") + ("/api/v2/alerts" if name == "alertmanager" else "")
        self.redis = redis
        self.key = OUTBOX_KEY.format(name)
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._wake = asyncio.Event()

    def body(self, event: dict):
        return alertmanager_body(event) if self.name == "alertmanager" else webhook_body(event)

    def enqueue(self, pipe, event: dict) -> None:
        """Add to the outbox inside the caller's transaction (with the state change that caused it)."""
        pipe.lpush(self.key, json.dumps(event))

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            failures = 0
            while True:
                try:
                    raw = await self.redis.lindex(self.key, -1)  # oldest first
                    OUTBOX.labels(self.name).set(await self.redis.llen(self.key))
                except Exception:  # noqa: BLE001 - Redis down: wait and try again
                    await asyncio.sleep(1.0)
                    continue
                if raw is None:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout=1.0)
                    except asyncio.TimeoutError:
                        pass
                    continue
                event = json.loads(raw)
                if await self._deliver(client, event):
                    failures = 0
                    await self.redis.rpop(self.key)
                    continue
                failures += 1
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (failures - 1))
                await asyncio.sleep(random.uniform(delay / 2, delay))  # jitter

    async def _deliver(self, client: httpx.AsyncClient, event: dict) -> bool:
        try:
            reply = await client.post(self.url, json=self.body(event))
        except httpx.HTTPError as exc:
            NOTIFICATIONS.labels(self.name, "error").inc()
            log.warning("notification failed", extra={"receiver": self.name, "error": repr(exc), "id": event["id"]})
            return False
        if reply.status_code >= 300:
            NOTIFICATIONS.labels(self.name, f"http_{reply.status_code}").inc()
            log.warning("notification refused", extra={"receiver": self.name, "status": reply.status_code,
                                                       "id": event["id"]})
            return False
        NOTIFICATIONS.labels(self.name, "ok").inc()
        return True
