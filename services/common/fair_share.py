"""How replicas split work they share through Redis leases (Fetch's series, Alerts' shards)."""

from __future__ import annotations


def fair_share(total: int, live: list[str], me: str) -> int:
    """How many of ``total`` items replica ``me`` should hold: each live replica gets total // live,
    and the first total % live of them by id one more, so the shares add up to ``total`` exactly
    and a replica that joins late still gets its part."""
    ids = sorted(set(live) | {me})
    whole, extra = divmod(total, len(ids))
    return whole + (ids.index(me) < extra)
