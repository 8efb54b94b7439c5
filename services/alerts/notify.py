"""Notifications out: a generic JSON webhook and Alertmanager, through a reliable outbox.

    cl:v1:{alerts}:outbox:<receiver>                     LIST  waiting (LPUSH new, oldest at the right)
    cl:v1:{alerts}:outbox:<receiver>:processing:<worker> LIST  the entry a worker is delivering
    cl:v1:{alerts}:outbox:<receiver>:workers             SET   workers that may have a processing list
    cl:v1:{alerts}:dead:<receiver>                       LIST  entries the receiver refused (4xx)

Evaluation appends to the outbox in the same Redis script that records the transition. One worker
per receiver, across all replicas, delivers (it holds the receiver's lease, so order is kept):
LMOVE the oldest entry to its processing list, POST it, LREM it after a 2xx. A 4xx (other than 408
and 429) goes to the dead-letter list, counted; 5xx, 408, 429 and timeouts are retried with
exponential backoff and jitter. When a worker dies, the next lease holder moves its processing
entry back to the head of the outbox, so the only repeat possible is a crash between the
receiver's answer and the LREM, and it carries the same ``id``.

Alertmanager gets one alert per (symbol, rule) with the same labels firing and resolved
(``alertname``, ``symbol``, ``rule``, ``interval``, ``source``); the grade is an annotation, so an
escalation updates the one alert. While firing, the worker re-sends every firing pair every
``resend_s`` (below Alertmanager's resolve_timeout), and a resolve carries ``endsAt``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from datetime import datetime, timezone
from typing import Awaitable, Callable

import httpx
import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge

from services.alerts.leases import Lease

log = logging.getLogger("cryptolens.alerts.notify")

NOTIFICATIONS = Counter("cryptolens_notifications_total", "Notification deliveries by receiver and outcome",
                        ["receiver", "outcome"])
DEAD_LETTERS = Counter("cryptolens_notifications_dead_letters_total",
                       "Notifications moved to the dead-letter list: refused by the receiver (4xx) or unreadable",
                       ["receiver"])
OUTBOX = Gauge("cryptolens_notification_outbox", "Notifications waiting for delivery", ["receiver"])

OUTBOX_KEY = "cl:v1:{{alerts}}:outbox:{}"  # the {alerts} hash tag: one cluster slot with state and history
DEAD_KEY = "cl:v1:{{alerts}}:dead:{}"
DEAD_KEEP = 1000
_RETRYABLE_4XX = (408, 429)


def _rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def webhook_body(event: dict) -> dict:
    return {**event, "time": _rfc3339(event["time_ms"])}


def alertmanager_labels(symbol: str, rule: str, interval: str) -> dict:
    return {"alertname": f"cryptolens_{rule}", "symbol": symbol, "rule": rule, "interval": interval,
            "source": "cryptolens"}


def alertmanager_alert(event: dict) -> dict:
    """The Alertmanager alert for a transition or a re-send: firing while WARNING/ALERT, else resolved."""
    firing = event["grade"] in ("WARNING", "ALERT")
    starts = event.get("firing_since_ms") or event["time_ms"]
    alert = {
        "labels": alertmanager_labels(event["symbol"], event["rule"], event.get("interval", "")),
        "annotations": {"summary": event["message"], "grade": event["grade"], "severity": event["grade"].lower(),
                        "value": "" if event.get("value") is None else f"{event['value']:.6g}"},
        "startsAt": _rfc3339(starts),
    }
    if not firing:
        alert["endsAt"] = _rfc3339(max(event["time_ms"], starts))
    return alert


class Receiver:
    """One notification target: its outbox, and the worker that delivers it when this replica holds its lease."""

    def __init__(self, name: str, url: str, redis: aioredis.Redis, worker_id: str, timeout_s: float = 5.0,
                 backoff_s: float = 1.0, max_backoff_s: float = 60.0, lease_ttl_s: float = 10.0,
                 resend_s: float = 60.0, firing: Callable[[], Awaitable[list[dict]]] | None = None):
        self.name = name
        self.alertmanager = name == "alertmanager"
        self.url = url.rstrip("/") + ("/api/v2/alerts" if self.alertmanager else "")
        self.redis = redis
        self.worker_id = worker_id
        self.key = OUTBOX_KEY.format(name)
        self.processing = f"{self.key}:processing:{worker_id}"
        self.workers_key = f"{self.key}:workers"
        self.dead_key = DEAD_KEY.format(name)
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.lease = Lease(redis, f"notify:{name}", worker_id, lease_ttl_s)
        self.resend_s = resend_s
        self.firing = firing  # the firing pairs, as events (Alertmanager re-sends)
        self._wake = asyncio.Event()
        self._last_resend = 0.0
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()
        # Exported as 0 from the start: a counter first seen at 1 shows no increase, so the first
        # dead letter would never fire an alert on increase().
        DEAD_LETTERS.labels(name)
        for outcome in ("ok", "error"):
            NOTIFICATIONS.labels(name, outcome)

    def wants(self, event: dict) -> bool:
        """Alertmanager follows the firing grade; the webhook gets what people are told."""
        return bool(event.get("sync")) if self.alertmanager else bool(event.get("notified"))

    def body(self, event: dict):
        return [alertmanager_alert(event)] if self.alertmanager else webhook_body(event)

    def wake(self) -> None:
        self._wake.set()

    async def drain(self, timeout_s: float) -> None:
        """On shutdown: take no new entry, let the one in flight finish, hand the lease over."""
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass
        if self.lease.held:
            await self.lease.release()

    # --- the supervised worker -----------------------------------------------------------------
    async def run(self) -> None:
        """Deliver forever. Any failure restarts the loop after a pause; nothing ends the worker."""
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            while not self._stopping:
                try:
                    await self._work(client)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - supervised: log one line and carry on
                    log.warning("notify worker restarting", extra={"receiver": self.name, "error": str(exc)[:200]})
                    await asyncio.sleep(1.0)

    async def _work(self, client: httpx.AsyncClient) -> None:
        while not self._stopping:
            # Every replica reads the depth, lease or not: a former holder must not export a frozen value.
            OUTBOX.labels(self.name).set(await self.redis.llen(self.key))
            if not await self.lease.acquire_or_renew():
                await asyncio.sleep(self.lease.ttl_ms / 4000)
                continue
            await self.redis.sadd(self.workers_key, self.worker_id)
            await self._recover()
            raw = await self.redis.lindex(self.processing, -1) or await self.redis.lmove(
                self.key, self.processing, "RIGHT", "LEFT")
            if raw is not None:
                self._idle.clear()
                try:
                    await self._deliver_entry(client, raw)
                finally:
                    self._idle.set()
                continue
            if self.alertmanager and self.firing and \
                    asyncio.get_running_loop().time() - self._last_resend >= self.resend_s:
                await self._resend(client)
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=min(1.0, self.resend_s))
            except asyncio.TimeoutError:
                pass

    async def _recover(self) -> None:
        """Move entries of other workers' processing lists back to the head of the outbox.

        Only the lease holder delivers, so another worker's processing list belongs to a dead or
        former holder: its entry was not acknowledged and is delivered again (same id)."""
        for member in await self.redis.smembers(self.workers_key):
            other = member.decode()
            if other == self.worker_id:
                continue
            source = f"{self.key}:processing:{other}"
            while await self.redis.lmove(source, self.key, "RIGHT", "RIGHT") is not None:
                log.info("recovered an unacknowledged notification", extra={"receiver": self.name, "worker": other})
            await self.redis.srem(self.workers_key, other)

    async def _dead(self, raw: bytes, why: str) -> None:
        async with self.redis.pipeline(transaction=True) as tx:
            tx.lpush(self.dead_key, raw)
            tx.ltrim(self.dead_key, 0, DEAD_KEEP - 1)
            tx.lrem(self.processing, 1, raw)
            await tx.execute()
        DEAD_LETTERS.labels(self.name).inc()
        log.error("notification dead-lettered", extra={"receiver": self.name, "why": why})

    async def _deliver_entry(self, client: httpx.AsyncClient, raw: bytes) -> None:
        try:
            event = json.loads(raw)
            body = self.body(event)
        except (ValueError, KeyError, TypeError) as exc:
            await self._dead(raw, f"unreadable entry: {str(exc)[:100]}")
            return
        failures = 0
        while True:
            outcome = await self._post(client, body, event.get("id", "?"))
            if outcome == "ok":
                await self.redis.lrem(self.processing, 1, raw)
                return
            if outcome == "refused":
                await self._dead(raw, "refused by the receiver")
                return
            if self._stopping:
                return  # the next lease holder retries it
            failures += 1
            delay = min(self.max_backoff_s, self.backoff_s * 2 ** min(failures - 1, 20))
            await asyncio.sleep(random.uniform(delay / 2, delay))  # jitter
            if not await self.lease.acquire_or_renew():
                return  # someone else delivers now; they recover this entry

    async def _post(self, client: httpx.AsyncClient, body, event_id: str) -> str:
        try:
            reply = await client.post(self.url, json=body)
        except httpx.HTTPError as exc:
            NOTIFICATIONS.labels(self.name, "error").inc()
            log.warning("notification failed", extra={"receiver": self.name, "error": repr(exc)[:200], "id": event_id})
            return "retry"
        if reply.status_code < 300:
            NOTIFICATIONS.labels(self.name, "ok").inc()
            return "ok"
        NOTIFICATIONS.labels(self.name, f"http_{reply.status_code}").inc()
        log.warning("notification refused", extra={"receiver": self.name, "status": reply.status_code, "id": event_id})
        if 400 <= reply.status_code < 500 and reply.status_code not in _RETRYABLE_4XX:
            return "refused"
        return "retry"

    async def _resend(self, client: httpx.AsyncClient) -> None:
        """Every firing pair again, so Alertmanager never resolves one by its resolve_timeout."""
        self._last_resend = asyncio.get_running_loop().time()
        alerts = [alertmanager_alert(e) for e in await self.firing()]
        if alerts:
            await self._post(client, alerts, "resend")
