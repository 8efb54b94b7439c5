"""10,000 randomised and malformed requests across every RPC of the three services.

Requests are generated from the services' own descriptors, so every RPC (and every one added later)
is covered: fields get plausible values (known symbols, intervals, windows, rule kinds) mixed with
hostile ones (1 MB strings, control characters, NaN and inf, absurd windows, 10,000-entry lists,
timestamps far outside any range), and one request in ten is raw bytes that decode to nothing.
No process may die, no answer may be UNKNOWN or INTERNAL, and neither any service's memory nor
Redis' may grow by more than 100 MB.
"""

from __future__ import annotations

import asyncio
import collections
import math
import random
import time

import grpc
import pytest
import redis
from cryptolens.v1 import alerts_pb2, core_pb2, fetch_pb2
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor

from tests.conftest import RedisServer
from tests.integration.services import Stack

REQUESTS = 10_000
CONCURRENCY = 8
MB = 1024 * 1024

SERVICES = {"fetch": "cryptolens.v1.FetchService", "core": "cryptolens.v1.CoreService",
            "alerts": "cryptolens.v1.AlertsService"}
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}

HOSTILE_STRINGS = ["", " ", "A" * 1_000_000, "\x00", "\x00BTC-USD", "BTC-USD\n", "💥" * 1000, "../../etc/passwd",
                   "%s%s%n", "'; DROP TABLE x; --", "BTC-USD" * 500, "\udcff".encode("utf-8", "surrogatepass")
                   .decode("utf-8", "replace"), "-1", "NaN", "inf", "1e309", "9" * 400]
POOLS = {
    "symbol": ["BTC-USD", "ETH-USD", "SOL-USD", "btc-usd", "FOO-USD", "BTC", "BTC-USD-USD"],
    "interval": ["1m", "5m", "15m", "1h", "4h", "1d", "2h", "0m", "-1h", "1y", "h"],
    "window": ["24h", "7d", "30d", "90d", "1y", "0d", "-5d", "10000000000000000000d", "1.5d", "3650d", "1m"],
    "kind": ["price_drop", "volatility_spike", "drawdown", "forecast_volatility", "price_above", "nope"],
    "model": ["garch_t", "ewma", "historical", "arima", ""],
    "token": ["", "0-0", "1-0", "999999999999999-0", "abc", "-1-1", "9" * 100],
}


def pool_for(name: str) -> list[str] | None:
    if "symbol" in name or name == "benchmark":
        return POOLS["symbol"]
    if "interval" in name:
        return POOLS["interval"]
    if name in ("lookback", "window", "baseline_window", "horizon", "period") or name.endswith("_window"):
        return POOLS["window"]
    if name == "kind":
        return POOLS["kind"]
    if name.startswith("model"):
        return POOLS["model"]
    if "token" in name or name.startswith("resume") or name == "after":
        return POOLS["token"]
    return None


def hostile_double(rng: random.Random) -> float:
    return rng.choice([math.nan, math.inf, -math.inf, 1e308, -1e308, -0.0, 0.0, 5e-324,
                       rng.uniform(-2, 2), rng.uniform(-1e6, 1e6), 0.05, 1.0])


def hostile_int(rng: random.Random, bits: int, signed: bool) -> int:
    top = 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1
    low = -top - 1 if signed else 0
    return rng.choice([0, 1, -1 if signed else 2, top, low, rng.randint(low, top), rng.randint(0, 100_000)])


class Generator:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.now = int(time.time())

    def string(self, name: str, short: bool = False) -> str:
        pool = pool_for(name)
        if pool and self.rng.random() < 0.8:
            return self.rng.choice(pool)
        if short:  # an entry of a 10,000-long list: hostile, but not 10,000 MB
            return self.rng.choice(["", "\x00", "BTC", "💥", "x" * 40])
        return self.rng.choice(HOSTILE_STRINGS + ["".join(chr(self.rng.randint(1, 0x2FFF)) for _ in range(12))])

    def scalar(self, field: FieldDescriptor, short: bool = False):
        t = field.type
        if t == FieldDescriptor.TYPE_STRING:
            return self.string(field.name, short)
        if t == FieldDescriptor.TYPE_BYTES:
            return self.rng.randbytes(self.rng.choice([0, 8, 1000]))
        if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            value = hostile_double(self.rng)
            return value if t == FieldDescriptor.TYPE_DOUBLE or not math.isfinite(value) or abs(value) < 3e38 else 1.0
        if t == FieldDescriptor.TYPE_BOOL:
            return self.rng.random() < 0.5
        if t == FieldDescriptor.TYPE_ENUM:
            values = [v.number for v in field.enum_type.values]
            return self.rng.choice(values + [99, -7])
        bits = 64 if t in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_UINT64,
                           FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64) else 32
        signed = t not in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED32,
                           FieldDescriptor.TYPE_FIXED64)
        return hostile_int(self.rng, bits, signed)

    def timestamp(self, message) -> None:
        # Mostly near now (a plausible window); sometimes far outside any range a Timestamp allows.
        choice = self.rng.random()
        if choice < 0.7:
            message.seconds = self.now - self.rng.randint(-3 * 86400, 30 * 86400)
        elif choice < 0.85:
            message.seconds = self.rng.choice([0, -1, -62135596800, 253402300799, 4_102_444_800])
        else:
            message.seconds = self.rng.choice([2 ** 63 - 1, -(2 ** 63), 253402300800 * 10])
        message.nanos = self.rng.choice([0, 0, 999_999_999, -1, 2 ** 31 - 1])

    def fill(self, message, depth: int = 0) -> None:
        if message.DESCRIPTOR.full_name == "google.protobuf.Timestamp":
            self.timestamp(message)
            return
        for field in message.DESCRIPTOR.fields:
            if self.rng.random() < 0.25:
                continue  # left unset
            is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
            if field.is_repeated:
                count = self.rng.choice([0, 1, 2, 3, 5] * 8 + [10_000])
                if count == 10_000:
                    count = 10_000 if field.message_type is None or is_map or depth == 0 else 50
                self.repeated(message, field, count, is_map, depth)
            elif field.message_type is not None:
                if depth < 3:
                    self.fill(getattr(message, field.name), depth + 1)
            else:
                setattr(message, field.name, self.scalar(field))

    def repeated(self, message, field: FieldDescriptor, count: int, is_map: bool, depth: int) -> None:
        target = getattr(message, field.name)
        if is_map:
            key_field, value_field = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
            for _ in range(count):
                key = self.scalar(key_field, short=count > 5)
                if value_field.message_type is None:
                    target[key] = self.scalar(value_field, short=count > 5)
                else:
                    self.fill(target[key], depth + 1)
        elif field.message_type is not None:
            for _ in range(count):
                self.fill(target.add(), depth + 1)
        else:
            target.extend(self.scalar(field, short=count > 5) for _ in range(count))

    def request(self, input_type) -> bytes:
        if self.rng.random() < 0.1:  # bytes that are no message at all
            return self.rng.choice([b"\xff\xff\xff\xff", b"\x0a\xff\xff\xff\x7f", self.rng.randbytes(64),
                                    b"\x08" + b"\xff" * 11, b"\x12\x05abc"])
        message = message_factory.GetMessageClass(input_type)()
        self.fill(message)
        return message.SerializeToString()


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory):
    redis_server = RedisServer(tmp_path_factory.mktemp("fuzz-redis"))
    redis_server.start()
    stack = Stack(redis_server.url, tmp_path_factory.mktemp("fuzz-stack"))
    try:
        stack.add("fetch", "--provider", "simulated", "--refresh-s", "5", "--history-days", "30")
        stack.add("core")
        stack.add("alerts")
        for name in SERVICES:
            stack[name].wait_serving()
        yield stack, redis_server
    finally:
        stack.stop()
        redis_server.stop()


def methods():
    found = []
    for name, full_name in SERVICES.items():
        for method in descriptor_pool.Default().FindServiceByName(full_name).methods:
            found.append((name, f"/{full_name}/{method.name}", method.input_type, method.server_streaming))
    return found


async def call(channels, name: str, path: str, payload: bytes, streaming: bool) -> grpc.StatusCode:
    channel = channels[name]
    try:
        if streaming:
            stream = channel.unary_stream(path, request_serializer=None, response_deserializer=None)(
                payload, timeout=2)
            try:
                async for _ in stream:
                    break  # the first answer is enough: the stream is then dropped
            finally:
                stream.cancel()
            return grpc.StatusCode.OK
        await channel.unary_unary(path, request_serializer=None, response_deserializer=None)(payload, timeout=30)
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as exc:
        return exc.code()


async def storm(stack, plan) -> tuple[collections.Counter, list[str]]:
    channels = {name: grpc.aio.insecure_channel(stack[name].addr, options=[
        ("grpc.max_send_message_length", 64 * MB), ("grpc.max_receive_message_length", 64 * MB)])
        for name in SERVICES}
    codes: collections.Counter = collections.Counter()
    bad: list[str] = []
    queue: asyncio.Queue = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)

    async def worker():
        while not queue.empty():
            name, path, payload, streaming = queue.get_nowait()
            code = await call(channels, name, path, payload, streaming)
            codes[(path.rsplit("/", 1)[1], code.name)] += 1
            if code in FORBIDDEN and len(bad) < 20:
                bad.append(f"{path} {code.name} for {payload[:120]!r}")

    try:
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    finally:
        for channel in channels.values():
            await channel.close()
    return codes, bad


def warm_up():
    """One valid call of each heavy kind, so model libraries are imported before memory is read."""
    calls = [("core", "GetStats", core_pb2.GetStatsRequest(symbol="BTC-USD", interval="1h", lookback="30d")),
             ("core", "GetForecast", core_pb2.GetForecastRequest(symbol="BTC-USD", interval="1h")),
             ("core", "GetCorrelation", core_pb2.GetCorrelationRequest(symbols=["BTC-USD", "ETH-USD"])),
             ("alerts", "Evaluate", alerts_pb2.EvaluateRequest()),
             ("fetch", "GetBars", fetch_pb2.GetBarsRequest(symbol="BTC-USD", interval="1h"))]
    return [(name, f"/{SERVICES[name]}/{method}", message.SerializeToString(), False) for name, method, message in calls]


def metric(stack, name: str, metric_name: str) -> str:
    import urllib.request
    body = urllib.request.urlopen(f"http://127.0.0.1:{stack[name].metrics_port}/metrics", timeout=5).read().decode()
    return " ".join(line for line in body.splitlines() if line.startswith(metric_name))


def test_ten_thousand_hostile_requests_kill_nothing_and_answer_no_unknown_or_internal(fuzz_stack):
    stack, redis_server = fuzz_stack
    generator = Generator(seed=20261201)
    rpcs = methods()
    plan = []
    for i in range(REQUESTS):
        name, path, input_type, streaming = rpcs[i % len(rpcs)]
        plan.append((name, path, generator.request(input_type), streaming))

    store = redis.Redis.from_url(redis_server.url)
    asyncio.run(storm(stack, warm_up()))  # the heavy code paths (and their imports) loaded before memory is read
    rss_before = {name: rss_bytes(stack[name].proc.pid) for name in SERVICES}
    redis_before = store.info("memory")["used_memory"]

    started = time.monotonic()
    codes, bad = asyncio.run(storm(stack, plan))
    took = time.monotonic() - started

    summary = collections.Counter()
    for (_, code), n in codes.items():
        summary[code] += n
    print(f"{REQUESTS} requests over {len(rpcs)} RPCs in {took:.0f} s: {dict(summary)}")
    print(sorted((m, c, n) for (m, c), n in codes.items() if c not in ("OK", "INVALID_ARGUMENT")))
    assert sum(codes.values()) == REQUESTS
    assert not bad, "\n".join(bad)
    for name in SERVICES:
        assert stack[name].proc.poll() is None, f"{name} died:\n{stack[name].log()[-3000:]}"
        stack[name].wait_serving(timeout=10)
        grown = rss_bytes(stack[name].proc.pid) - rss_before[name]
        print(f"{name} RSS grew {grown / MB:.1f} MB", metric(stack, name, "cryptolens_core_"))
        assert grown < 100 * MB, f"{name} RSS grew {grown / MB:.0f} MB"
    redis_grown = store.info("memory")["used_memory"] - redis_before
    print(f"Redis used_memory grew {redis_grown / MB:.1f} MB")
    assert redis_grown < 100 * MB
    assert summary["OK"] > 0 and summary["INVALID_ARGUMENT"] > 0  # both sides of the line were exercised


def test_rejected_large_requests_are_freed_at_once(fuzz_stack):
    """A rejected request must not outlive its call: aborting with context.abort tied each one
    (1 MB here) into a reference cycle that only Python's rare full collection freed (+186 MB)."""
    stack, _ = fuzz_stack
    huge = "A" * 1_000_000
    for name, path, message in [
            ("alerts", "/cryptolens.v1.AlertsService/Evaluate", alerts_pb2.EvaluateRequest(symbols=[huge])),
            ("core", "/cryptolens.v1.CoreService/GetStats", core_pb2.GetStatsRequest(symbol=huge)),
            ("fetch", "/cryptolens.v1.FetchService/GetBars", fetch_pb2.GetBarsRequest(symbol=huge))]:
        before = rss_bytes(stack[name].proc.pid)
        codes, bad = asyncio.run(storm(stack, [(name, path, message.SerializeToString(), False)] * 400))
        grown = rss_bytes(stack[name].proc.pid) - before
        assert codes == {(path.rsplit("/", 1)[1], "INVALID_ARGUMENT"): 400} and not bad
        assert grown < 50 * MB, f"{name} kept {grown / MB:.0f} MB after 400 rejected 1 MB requests"
