"""Rules created over gRPC, stored in Redis and read from there by every replica.

    cl:v1:alerts:rules   HASH  rule id → JSON

No replica keeps its own copy: each evaluation cycle and each RPC reads the hash, so a rule created
or changed through one replica is in force on all of them by their next cycle.
"""

from __future__ import annotations

import json
import logging

import redis.asyncio as aioredis

from services.alerts.rules.model import Rule, rule_from_dict, rule_to_dict
from services.common.errors import InvalidArgument

log = logging.getLogger("cryptolens.alerts")

RULES_KEY = "cl:v1:alerts:rules"


class RuleStore:
    def __init__(self, redis: aioredis.Redis):
        self.redis = redis
        self._invalid_logged: set[tuple[str, bytes]] = set()

    def _parse(self, rule_id: str, raw: bytes) -> Rule | None:
        """The stored rule, or None when it no longer validates (written by an older version): logged once,
        never evaluated, and still replaceable or deletable."""
        try:
            return rule_from_dict(json.loads(raw))
        except (ValueError, InvalidArgument) as exc:
            if (rule_id, raw) not in self._invalid_logged:
                self._invalid_logged.add((rule_id, raw))
                log.error("stored rule is invalid; ignored", extra={"rule": rule_id, "error": str(exc)[:200]})
            return None

    async def all(self) -> dict[str, Rule]:
        parsed = (self._parse(k.decode(), raw) for k, raw in (await self.redis.hgetall(RULES_KEY)).items())
        return {rule.id: rule for rule in parsed if rule is not None}

    async def get(self, rule_id: str) -> Rule | None:
        raw = await self.redis.hget(RULES_KEY, rule_id)
        return None if raw is None else self._parse(rule_id, raw)

    async def create(self, rule: Rule) -> bool:
        """Store a new rule; False when the id is taken (HSETNX: two replicas cannot both create it)."""
        return bool(await self.redis.hsetnx(RULES_KEY, rule.id, json.dumps(rule_to_dict(rule))))

    async def replace(self, rule: Rule) -> bool:
        """Overwrite an existing rule; False when there is none."""
        script = "if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then " \
                 "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) return 1 end return 0"
        return bool(await self.redis.eval(script, 1, RULES_KEY, rule.id, json.dumps(rule_to_dict(rule))))

    async def delete(self, rule_id: str) -> bool:
        return bool(await self.redis.hdel(RULES_KEY, rule_id))
