"""gRPC server metrics under the grpc-prometheus names and labels (docs/metrics.md lists them).

No label is called "service": the Prometheus Operator sets its own target label of that name.
The numbers are plain attributes, added to by the runtime's handler wrapper on the event loop
thread and read when /metrics is scraped: a prometheus_client child takes a lock on every
increment (four per unary call), which is a measurable part of a warm call.
"""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client.core import REGISTRY, CounterMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

LABELS = ["grpc_type", "grpc_service", "grpc_method"]
# Unary calls only: a stream's duration is how long the client stayed, not how fast we answered.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_LE = [*(floatToGoString(b) for b in BUCKETS), "+Inf"]


class MethodStats:
    """One method's counts. Only the event loop thread adds to them."""

    __slots__ = ("labels", "started", "handled", "sent", "buckets", "seconds")

    def __init__(self, labels: tuple[str, str, str]):
        self.labels = list(labels)
        self.started = 0
        self.handled: dict[str, int] = {}  # by status code name
        self.sent = 0
        self.buckets = [0] * len(_LE)  # unary handling times, not cumulative
        self.seconds = 0.0

    def done(self, code: str, seconds: float | None = None) -> None:
        """A call ended with status ``code``; ``seconds``: a unary call's handling time."""
        self.handled[code] = self.handled.get(code, 0) + 1
        if seconds is not None:
            self.buckets[bisect_left(BUCKETS, seconds)] += 1
            self.seconds += seconds


class _Collector:
    def __init__(self):
        self.methods: dict[tuple[str, str, str], MethodStats] = {}

    def describe(self):
        return []  # names are not claimed up front; nothing else in the process uses them

    def collect(self):
        started = CounterMetricFamily("grpc_server_started", "RPCs started on the server", labels=LABELS)
        handled = CounterMetricFamily("grpc_server_handled", "RPCs completed on the server, by status code",
                                      labels=[*LABELS, "grpc_code"])
        handling = HistogramMetricFamily("grpc_server_handling_seconds",
                                         "Time to handle a unary RPC, until its answer or error", labels=LABELS)
        sent = CounterMetricFamily("grpc_server_msg_sent", "Messages sent on server streams", labels=LABELS)
        for method in list(self.methods.values()):
            started.add_metric(method.labels, method.started)
            for code, count in list(method.handled.items()):
                handled.add_metric([*method.labels, code], count)
            if method.labels[0] == "unary":
                counts, total = list(method.buckets), 0
                cumulative = []
                for le, count in zip(_LE, counts):
                    total += count
                    cumulative.append((le, total))
                handling.add_metric(method.labels, cumulative, method.seconds)
            else:
                sent.add_metric(method.labels, method.sent)
        yield from (started, handled, handling, sent)


_COLLECTOR = _Collector()
REGISTRY.register(_COLLECTOR)


def method_stats(rpc: tuple[str, str, str]) -> MethodStats:
    """The counts of one method, by (grpc_type, grpc_service, grpc_method): exported from the first
    ask, at zero; every server of the process that registers the method adds to the same counts."""
    stats = _COLLECTOR.methods.get(rpc)
    if stats is None:
        stats = _COLLECTOR.methods[rpc] = MethodStats(rpc)
    return stats
