"""A labelled Prometheus counter for code that runs on the event loop thread only.

A prometheus_client child takes a lock on every increment; on a warm call that counts three
lookups, the locks were a measurable part of the call. These counts are plain numbers, read when
/metrics is scraped (as the RPC metrics are: services/common/rpc_metrics.py).
"""

from __future__ import annotations

from prometheus_client.core import REGISTRY, CounterMetricFamily


class LoopCount:
    """One labelled child. Only the event loop thread adds to it."""

    __slots__ = ("value",)

    def __init__(self):
        self.value = 0

    def inc(self) -> None:
        self.value += 1


class LoopCounter:
    """``name`` without ``_total`` (the exposition adds it); a child exists, at zero, from its first
    ``labels`` call."""

    def __init__(self, name: str, documentation: str, labelnames: list[str]):
        self.name, self.documentation, self.labelnames = name, documentation, labelnames
        self._children: dict[tuple[str, ...], LoopCount] = {}
        REGISTRY.register(self)

    def labels(self, *values: str) -> LoopCount:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = LoopCount()
        return child

    def describe(self):
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self):
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self._children.items()):
            family.add_metric(list(values), child.value)
        yield family
