"""The server runtime every service shares.

One place for: a ``grpc.aio`` server with reflection and the library health servicer
(NOT_SERVING until Redis answers, back to NOT_SERVING when it is lost), a Prometheus
``/metrics`` endpoint fed by one interceptor, domain-error → status mapping, graceful
shutdown on SIGTERM/SIGINT, and JSON logs.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
import time
from typing import Callable, Iterable, Protocol

import grpc
import redis.asyncio as aioredis
import redis.exceptions
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from services.common.config import ServiceSettings, SettingsError
from services.common import reflection as documented_reflection
from services.common.errors import ServiceError
from services.common.logs import setup_logging

log = logging.getLogger("cryptolens.runtime")

RPC_REQUESTS = Counter(
    "cryptolens_rpc_requests_total", "gRPC requests handled, by method and status code", ["service", "method", "code"]
)
RPC_LATENCY = Histogram(
    "cryptolens_rpc_latency_seconds",
    "gRPC handling time by method",
    ["service", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REDIS_UP = Gauge("cryptolens_redis_up", "1 while Redis answers PING, else 0", ["service"])

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
LIVENESS = "liveness"


class StartupError(RuntimeError):
    """A problem that stops the process with one clear line (port taken, bad setting)."""


def _status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, ServiceError):
        return exc.code, exc.message
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return grpc.StatusCode.UNAVAILABLE, f"Redis is unavailable ({exc}); retry shortly"
    if isinstance(exc, asyncio.TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, "a dependency did not answer in time"
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the service log"


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts requests and latency per method and status, and maps exceptions to statuses."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        service, _, method = handler_call_details.method.lstrip("/").partition("/")
        if handler.unary_unary:
            wrapped = self._wrap_unary(handler.unary_unary, service, method)
            return grpc.unary_unary_rpc_method_handler(
                wrapped, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            wrapped = self._wrap_stream(handler.unary_stream, service, method)
            return grpc.unary_stream_rpc_method_handler(
                wrapped, handler.request_deserializer, handler.response_serializer
            )
        return handler  # client-streaming methods: none in our contract

    @staticmethod
    def _record(service: str, method: str, code: grpc.StatusCode, started: float) -> None:
        RPC_REQUESTS.labels(service, method, code.name).inc()
        RPC_LATENCY.labels(service, method).observe(time.perf_counter() - started)

    @staticmethod
    async def _fail(context, service: str, method: str, exc: BaseException) -> grpc.StatusCode:
        code, message = _status_for(exc)
        if code == grpc.StatusCode.INTERNAL:
            log.error("unhandled error in %s/%s", service, method, exc_info=exc)
        await context.abort(code, message)

    def _wrap_unary(self, behavior, service, method):
        async def wrapped(request, context):
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return await behavior(request, context)
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:  # noqa: BLE001 - every error becomes a proper status
                code = _status_for(exc)[0]
                await self._fail(context, service, method, exc)
            finally:
                self._record(service, method, code, started)

        return wrapped

    def _wrap_stream(self, behavior, service, method):
        async def wrapped(request, context):
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                async for item in behavior(request, context):
                    yield item
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:  # noqa: BLE001
                code = _status_for(exc)[0]
                await self._fail(context, service, method, exc)
            finally:
                self._record(service, method, code, started)

        return wrapped


class Service(Protocol):
    """What a service plugs into the runtime."""

    full_names: tuple[str, ...]  # e.g. ("cryptolens.v1.CoreService",)

    def register(self, server: grpc.aio.Server) -> None: ...

    async def start(self) -> None: ...  # background tasks (scheduler, consumers)

    async def stop(self) -> None: ...

    async def on_redis(self, up: bool) -> None: ...  # Redis became reachable / was lost


class ServiceRuntime:
    def __init__(self, settings: ServiceSettings, service: Service, redis_client: aioredis.Redis):
        self.settings = settings
        self.service = service
        self.redis = redis_client
        self.health = health.aio.HealthServicer()
        self.redis_up = False
        self.port = 0
        self._watchdog: asyncio.Task | None = None
        self._stop = asyncio.Event()
        self._metrics_server = None
        self.server = grpc.aio.server(
            interceptors=[MetricsInterceptor()],
            options=[
                ("grpc.so_reuseport", 0),  # a taken port must fail loudly, not be shared
                ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)),
                ("grpc.max_connection_age_grace_ms", int(settings.grace_s * 1000)),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ],
        )

    @property
    def _health_names(self) -> Iterable[str]:
        return ("", *self.service.full_names)

    async def _set_health(self, status) -> None:
        for name in self._health_names:
            await self.health.set(name, status)

    async def start(self) -> None:
        s = self.settings
        self.service.register(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        documented_reflection.enable(self.server, (*self.service.full_names, health.SERVICE_NAME))
        await self._set_health(NOT_SERVING)
        # "liveness" answers SERVING while the process works, Redis or not: a liveness probe on it
        # never restarts a pod because a dependency is down (readiness uses "").
        await self.health.set(LIVENESS, SERVING)
        if s.metrics_port:
            try:
                self._metrics_server, _ = start_http_server(s.metrics_port, addr=s.host)
            except OSError as exc:
                raise StartupError(f"metrics port {s.host}:{s.metrics_port} is unavailable: {exc.strerror}") from None
        _check_port_free(s.host, s.grpc_port)
        try:
            self.port = self.server.add_insecure_port(f"{s.host}:{s.grpc_port}")
        except RuntimeError:
            self.port = 0
        if not self.port:
            raise StartupError(f"gRPC port {s.host}:{s.grpc_port} is unavailable (already in use?)")
        await self.server.start()
        self._watchdog = asyncio.create_task(self._watch_redis(), name="redis-watchdog")
        await self.service.start()
        log.info("serving", extra={"grpc_port": self.port, "metrics_port": s.metrics_port,
                                   "services": list(self.service.full_names)})

    async def _watch_redis(self) -> None:
        """Flip health with Redis reachability; the service hears about every change."""
        name = self.service.full_names[0]
        REDIS_UP.labels(name).set(0)
        while True:
            try:
                up = bool(await asyncio.wait_for(self.redis.ping(), timeout=self.settings.redis_check_s))
            except Exception:  # noqa: BLE001 - any failure means "not reachable"
                up = False
            if up != self.redis_up:
                self.redis_up = up
                REDIS_UP.labels(name).set(1 if up else 0)
                log.log(logging.INFO if up else logging.WARNING, "redis reachable" if up else "redis lost")
                try:
                    await self.service.on_redis(up)
                except Exception:  # noqa: BLE001 - a failing hook must not kill the watchdog
                    log.exception("on_redis hook failed; retrying")
                    self.redis_up = False
                    await asyncio.sleep(1.0)
                    continue
                await self._set_health(SERVING if up else NOT_SERVING)
            await asyncio.sleep(self.settings.redis_check_s if up else min(1.0, self.settings.redis_check_s))

    def request_stop(self) -> None:
        self._stop.set()

    async def wait(self) -> None:
        await self._stop.wait()

    async def stop(self) -> None:
        log.info("shutting down", extra={"grace_s": self.settings.grace_s})
        await self.health.enter_graceful_shutdown()
        if self._watchdog:
            self._watchdog.cancel()
        await self.service.stop()
        await self.server.stop(self.settings.grace_s)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        await self.redis.aclose()


def _check_port_free(host: str, port: int) -> None:
    """Fail with one clear line before gRPC's C core logs its own multi-line complaint."""
    if not port:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise StartupError(f"gRPC port {host}:{port} is unavailable: {exc.strerror}") from None


def redis_client(url: str) -> aioredis.Redis:
    return aioredis.from_url(url, socket_timeout=3, socket_connect_timeout=2, health_check_interval=15)


async def _serve(settings: ServiceSettings, build: Callable[[ServiceSettings, aioredis.Redis], Service]) -> None:
    client = redis_client(settings.redis_url)
    runtime = ServiceRuntime(settings, build(settings, client), client)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.request_stop)
    try:
        await runtime.start()
    except BaseException:
        await runtime.server.stop(0)
        raise
    await runtime.wait()
    await runtime.stop()


def run_service(settings: ServiceSettings, build: Callable[[ServiceSettings, aioredis.Redis], Service]) -> int:
    """Run a service until SIGTERM/SIGINT. Returns the process exit code."""
    setup_logging(settings.service_name, settings.log_level)
    try:
        asyncio.run(_serve(settings, build))
    except (StartupError, SettingsError) as exc:
        print(f"cryptolens {settings.service_name}: {exc}", file=sys.stderr)
        return 1
    return 0

