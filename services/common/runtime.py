"""The server runtime every service shares.

One place for: a ``grpc.aio`` server with reflection and the library health servicer
(NOT_SERVING until Redis answers, back to NOT_SERVING when it is lost), a Prometheus
``/metrics`` endpoint fed by one handler wrapper, domain-error → status mapping, graceful
shutdown on SIGTERM/SIGINT, and JSON logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import sys
import time
from typing import AsyncIterator, Callable, Iterable, Protocol

import grpc
import redis.asyncio as aioredis
from google.protobuf import descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import Gauge, start_http_server

from services.common.config import ServiceSettings
from services.common import reflection as documented_reflection
from services.common.rpc_metrics import method_stats
from services.common import tls
from services.common import wait_for
from services.common.errors import InvalidArgument, ServiceError, cap_message
from services.common.logs import setup_logging
from services.common.redis_client import Reachability, from_settings, is_outage

log = logging.getLogger("cryptolens.runtime")

REDIS_UP = Gauge("cryptolens_redis_up", "1 while Redis answers PING, else 0", ["grpc_service"])

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
LIVENESS = "liveness"


class StartupError(RuntimeError):
    """A problem that stops the process with one clear line (port taken, bad setting)."""


def _status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, ServiceError):
        return exc.code, cap_message(exc.message)
    if is_outage(exc):
        return grpc.StatusCode.UNAVAILABLE, cap_message(f"Redis is unavailable ({exc}); retry shortly")
    if isinstance(exc, asyncio.TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, "a dependency did not answer in time"
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the service log"


def _request_type(method: str) -> str:
    """Full name of a method's request message, e.g. ``cryptolens.v1.GetStatsRequest``."""
    try:
        return descriptor_pool.Default().FindMethodByName(method.lstrip("/").replace("/", ".")).input_type.full_name
    except KeyError:
        return "request message"


def _decoder(deserializer: Callable[[bytes], object] | None, request_type: str) -> Callable[[bytes], object]:
    """The handler's deserializer, with undecodable bytes as INVALID_ARGUMENT instead of UNKNOWN."""

    def decode(raw: bytes):
        if deserializer is None:
            return raw
        try:
            return deserializer(raw)
        except Exception:  # noqa: BLE001 - DecodeError and friends: whatever the bytes were, they are input
            raise InvalidArgument("request", f"{len(raw):,} bytes are not a valid {request_type}") from None

    return decode


def decode_request(raw: bytes, message_type):
    """``raw`` as a ``message_type`` (for a ``@takes_bytes`` method), as the runtime decodes for the rest."""
    return _decoder(message_type.FromString, message_type.DESCRIPTOR.full_name)(raw)


def takes_bytes(method):
    """Marks a unary servicer method that is given the request's bytes (it decodes them with
    ``decode_request`` when it needs to) and answers with the response's bytes: for a hot path that
    answers a repeated request without parsing it or serializing a cached answer again."""
    method.takes_bytes = True
    return method


async def _decoded(requests: AsyncIterator[bytes], decode: Callable[[bytes], object]) -> AsyncIterator[object]:
    async for raw in requests:
        yield decode(raw)


_END = object()
SHUTDOWN_MESSAGE = "the server is shutting down; reconnect (to another replica) and resume"
SWITCH_INTERVAL_S = 0.0005  # seconds a thread holds the GIL before it must let another one run


class _Draining(Exception):
    """Raised inside a stream wrapper when the server starts shutting down."""


class MetricsWrapper:
    """Wraps every method handler, once, at registration: counts calls started and handled (by
    status) per method, unary handling time and stream messages sent, and maps exceptions to
    statuses. (A ``grpc.aio`` server interceptor would do the same but runs its own coroutines on
    every call to find the handler.)

    It also decodes requests itself (handlers get the gRPC deserializer replaced by raw bytes), so
    malformed bytes become INVALID_ARGUMENT, and it ends open server streams with UNAVAILABLE as
    soon as ``draining`` is set, so a shutdown never waits its whole grace for them.
    """

    def __init__(self, draining: asyncio.Event):
        self.draining = draining

    def wrap(self, handler: grpc.RpcMethodHandler, path: str) -> grpc.RpcMethodHandler:
        service, _, method = path.lstrip("/").partition("/")
        decode = _decoder(handler.request_deserializer, _request_type(path))
        if handler.unary_unary:
            behavior, serializer = handler.unary_unary, handler.response_serializer
            if getattr(behavior, "takes_bytes", False):
                decode, serializer = None, None
            wrapped = self._wrap_unary(behavior, ("unary", service, method), decode)
            return grpc.unary_unary_rpc_method_handler(wrapped, None, serializer)
        if handler.unary_stream:
            wrapped = self._wrap_stream(handler.unary_stream, ("server_stream", service, method), decode)
            return grpc.unary_stream_rpc_method_handler(wrapped, None, handler.response_serializer)
        if handler.stream_stream:  # server reflection
            wrapped = self._wrap_stream(handler.stream_stream, ("bidi_stream", service, method), decode,
                                        client_streams=True)
            return grpc.stream_stream_rpc_method_handler(wrapped, None, handler.response_serializer)
        return handler  # client-streaming methods: none in our contract

    @staticmethod
    def _fail(context, rpc: tuple[str, str, str], exc: BaseException) -> grpc.StatusCode:
        """End the call with the status for ``exc``. Set, not ``context.abort``: its AbortError and
        the call's state form a reference cycle that keeps the request (up to its full 4 MB) alive
        until Python's rare full collection, which made hostile input look like a leak."""
        code, message = _status_for(exc)
        if code == grpc.StatusCode.INTERNAL:
            log.error("unhandled error in %s/%s", rpc[1], rpc[2], exc_info=exc)
        context.set_code(code)
        context.set_details(message)
        return code

    def _wrap_unary(self, behavior, rpc: tuple[str, str, str], decode):
        stats = method_stats(rpc)

        async def wrapped(raw, context):
            stats.started += 1
            started = time.perf_counter()
            code = "OK"
            try:
                return await behavior(raw if decode is None else decode(raw), context)
            except grpc.aio.AbortError:
                code = (context.code() or grpc.StatusCode.UNKNOWN).name
                raise
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except Exception as exc:  # noqa: BLE001 - every error becomes a proper status
                code = self._fail(context, rpc, exc).name
            finally:
                stats.done(code, time.perf_counter() - started)

        return wrapped

    def _wrap_stream(self, behavior, rpc: tuple[str, str, str], decode, client_streams: bool = False):
        stats = method_stats(rpc)

        async def wrapped(raw, context):
            stats.started += 1
            code = grpc.StatusCode.OK
            items = None
            drain = asyncio.ensure_future(self.draining.wait())
            try:
                request = _decoded(raw, decode) if client_streams else decode(raw)
                items = aiter(behavior(request, context))
                while (item := await self._next(items, drain)) is not _END:
                    stats.sent += 1  # before the yield: a client that leaves at once ends the generator there
                    yield item
            except _Draining:
                code = grpc.StatusCode.UNAVAILABLE
                context.set_code(code)
                context.set_details(SHUTDOWN_MESSAGE)
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except (asyncio.CancelledError, GeneratorExit):  # GeneratorExit: the client left during a yield
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:  # noqa: BLE001
                code = self._fail(context, rpc, exc)
            finally:
                drain.cancel()
                if items is not None:
                    await items.aclose()
                stats.done(code.name)

        return wrapped

    @staticmethod
    async def _next(items: AsyncIterator, drain: asyncio.Future):
        """The stream's next item, ``_END``, or ``_Draining`` once shutdown begins."""
        if drain.done():
            raise _Draining
        step = asyncio.ensure_future(anext(items, _END))
        try:
            await asyncio.wait((step, drain), return_when=asyncio.FIRST_COMPLETED)
            if step.done():
                return step.result()
        finally:
            if not step.done():  # shutdown (or the client left): stop the handler where it waits
                step.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await step
        raise _Draining


class _WrappedHandlers(grpc.GenericRpcHandler):
    """A generic handler whose method handlers come out wrapped, each wrapped once."""

    def __init__(self, inner: grpc.GenericRpcHandler, wrap: Callable):
        self._inner, self._wrap = inner, wrap
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def service(self, handler_call_details):
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        path = handler_call_details.method
        known = self._wrapped.get(path)
        if known is None or known[0] is not handler:
            known = self._wrapped[path] = (handler, self._wrap(handler, path))
        return known[1]


class _Registrar:
    """The server as servicers see it while they register: whatever they add is wrapped."""

    def __init__(self, server: grpc.aio.Server, wrapper: MetricsWrapper):
        self._server, self._wrapper = server, wrapper

    def add_generic_rpc_handlers(self, handlers) -> None:
        self._server.add_generic_rpc_handlers(tuple(_WrappedHandlers(h, self._wrapper.wrap) for h in handlers))

    def add_registered_method_handlers(self, service_name: str, handlers: dict) -> None:
        self._server.add_registered_method_handlers(
            service_name, {name: self._wrapper.wrap(h, f"/{service_name}/{name}") for name, h in handlers.items()})


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
        self._reachability = Reachability(redis_client)
        self.health = health.aio.HealthServicer()
        self.redis_up = False
        self.port = 0
        self._watchdog: asyncio.Task | None = None
        self._hook_failing = False
        self._stop = asyncio.Event()
        self.draining = asyncio.Event()  # set when shutdown begins: open server streams end
        self._metrics_server = None
        self.server = grpc.aio.server(
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
        try:  # before anything listens: a bad TLS file stops the process with one line
            credentials = tls.server_credentials(s.tls_cert_file, s.tls_key_file, s.tls_client_ca_file)
        except tls.TLSError as exc:
            raise ConfigurationError(str(exc)) from None
        registrar = _Registrar(self.server, MetricsWrapper(self.draining))
        self.service.register(registrar)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, registrar)
        documented_reflection.enable(registrar, (*self.service.full_names, health.SERVICE_NAME))
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
        address = f"{s.host}:{s.grpc_port}"
        try:  # with TLS on there is no plaintext port at all
            self.port = (self.server.add_secure_port(address, credentials) if credentials
                         else self.server.add_insecure_port(address))
        except RuntimeError:
            self.port = 0
        if not self.port:
            raise StartupError(f"gRPC port {s.host}:{s.grpc_port} is unavailable (already in use?)")
        await self.server.start()
        self._watchdog = asyncio.create_task(self._watch_redis(), name="redis-watchdog")
        await self.service.start()
        log.info("serving", extra={"grpc_port": self.port, "metrics_port": s.metrics_port, "tls": bool(credentials),
                                   "mtls": bool(s.tls_client_ca_file), "services": list(self.service.full_names)})

    async def _watch_redis(self) -> None:
        """Flip health with Redis reachability; the service hears about every change.

        Each change is logged once ("redis lost", "redis reachable"), never once per check. Health
        turns SERVING only after the service's ``on_redis(True)`` hook succeeded; a failing hook is
        retried every second and logged once per streak of failures.
        """
        name = self.service.full_names[0]
        REDIS_UP.labels(name).set(0)
        ready = False  # on_redis(True) succeeded since Redis last became reachable
        first = True
        while True:
            try:
                up = await asyncio.wait_for(self._reachability.ping(), timeout=self.settings.redis_check_s)
            except Exception:  # noqa: BLE001 - any failure means "not reachable"
                up = False
            if first and not up:
                log.warning("redis not reachable yet; waiting for it")
            first = False
            if up != self.redis_up:
                self.redis_up = up
                REDIS_UP.labels(name).set(1 if up else 0)
                log.log(logging.INFO if up else logging.WARNING, "redis reachable" if up else "redis lost")
                if not up:
                    ready = False
                    await self._set_health(NOT_SERVING)
                    await self._hook(False)
            if up and not ready:
                ready = await self._hook(True)
                if ready:
                    await self._set_health(SERVING)
            if up and not ready:
                await asyncio.sleep(1.0)
            else:
                await asyncio.sleep(self.settings.redis_check_s if up else min(1.0, self.settings.redis_check_s))

    async def _hook(self, up: bool) -> bool:
        """Run ``on_redis``; a failure is logged on one line once until the hook succeeds again."""
        try:
            await self.service.on_redis(up)
        except Exception as exc:  # noqa: BLE001 - a failing hook must not kill the watchdog
            if not self._hook_failing:
                self._hook_failing = True
                log.warning("could not start work that needs Redis (%s: %s); retrying every second",
                            type(exc).__name__, cap_message(str(exc), 200))
                log.debug("on_redis hook failed", exc_info=exc)
            return False
        if self._hook_failing:
            self._hook_failing = False
            log.info("work that needs Redis started")
        return True

    def request_stop(self) -> None:
        self._stop.set()

    async def wait(self) -> None:
        await self._stop.wait()

    async def stop(self) -> None:
        """Drain, then close: in-flight calls may still need the service's clients and tasks.

        Health says NOT_SERVING and open server streams end with UNAVAILABLE at once (clients
        reconnect and resume); ``server.stop(grace)`` refuses new calls and gives in-flight unary
        calls up to the grace; only then does the service close its outgoing channels and
        background tasks.
        """
        log.info("shutting down", extra={"grace_s": self.settings.grace_s})
        await self.health.enter_graceful_shutdown()
        self.draining.set()
        if self._watchdog:
            self._watchdog.cancel()
        await self.server.stop(self.settings.grace_s)
        await self.service.stop()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        await self.redis.aclose()
        log.info("stopped")


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


class ConfigurationError(ValueError):
    """The service cannot be built from its settings (a missing file, a bad value): exit 2."""


async def _serve(settings: ServiceSettings, build: Callable[[ServiceSettings, aioredis.Redis], Service]) -> None:
    client = from_settings(settings)
    try:
        service = build(settings, client)
    except (ValueError, OSError) as exc:
        raise ConfigurationError(str(exc)) from None
    runtime = ServiceRuntime(settings, service, client)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.request_stop)
    try:
        await runtime.start()
    except BaseException:
        await runtime.server.stop(0)
        raise
    # What start-up made (modules, descriptors, the server) lives as long as the process: out of the
    # collector's reach, a full collection walks only what came since (it walked everything,
    # 110-160 ms with the GIL held, during a year-long backtest in Alerts).
    gc.freeze()
    await runtime.wait()
    await runtime.stop()


def run_service(settings: ServiceSettings, build: Callable[[ServiceSettings, aioredis.Redis], Service]) -> int:
    """Run a service until SIGTERM/SIGINT. Returns the process exit code.

    A service that cannot be built from its settings exits 2, a port that is taken exits 1; both
    with one line on stderr, no traceback.
    """
    setup_logging(settings.service_name, settings.log_level)
    wait_for.install()
    # The event loop shares the GIL with worker threads that compute (Core's analytics, Alerts'
    # judging and backtests); each time it wants the GIL back it waits up to this long, and one
    # Redis ping or health check takes several hand-overs (at the default 5 ms: 100-300 ms on a
    # 2-core VM during a year-long backtest).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        asyncio.run(_serve(settings, build))
    except (StartupError, ConfigurationError) as exc:
        print(f"cryptolens serve {settings.service_name}: {_one_line(exc)}", file=sys.stderr)
        return 1 if isinstance(exc, StartupError) else 2
    return 0


def _one_line(exc: BaseException) -> str:
    return cap_message(" ".join(str(exc).split()) or type(exc).__name__)
