"""The Alerts service as a real process: rules over gRPC, durable state, webhook delivery."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import pytest
import redis.asyncio as aioredis

from cryptolens.v1 import alerts_pb2, alerts_pb2_grpc
from services.common.bars import make_bars
from services.common.store import PriceStore
from tests.conftest import free_port
from tests.integration.services import ServiceProcess

HOUR = 3_600_000
SYMBOL = "LINK-USD"  # the session stack never touches it


class Receiver(ThreadingHTTPServer):
    """A webhook receiver on loopback whose behaviour the test scripts: fail, hang, then recover."""

    def __init__(self):
        self.mode = "ok"
        self.delay_s = 0.0  # "ok" mode: record the body, then wait this long before answering
        self.received: list[dict] = []
        self.attempts = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.attempts += 1
                if outer.mode == "fail":
                    self.send_response(503)
                    self.end_headers()
                    return
                if outer.mode == "hang":
                    time.sleep(3)  # longer than the service's notify timeout
                    return
                outer.received.append(body)
                time.sleep(outer.delay_s)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def close(self):
        self.shutdown()
        self.server_close()


def write_prices(url: str, closes: list[float]) -> None:
    async def go():
        client = aioredis.from_url(url)
        start = (int(time.time() * 1000) // HOUR - len(closes)) * HOUR
        ts = start + np.arange(len(closes), dtype=np.int64) * HOUR
        c = np.array(closes, dtype=float)
        await PriceStore(client).write(SYMBOL, "1h", make_bars(ts, c, c, c, c, np.ones(len(c))), "test")
        await client.aclose()

    asyncio.run(go())


@pytest.fixture
def alerts_env(redis_server, tmp_path):
    db_url = redis_server.url[:-1] + "2"
    asyncio.run(aioredis.from_url(db_url).flushdb())
    receiver = Receiver()
    port = free_port()

    def start() -> ServiceProcess:
        env = {"CRYPTOLENS_REDIS_URL": db_url, "CRYPTOLENS_REDIS_CHECK_S": "0.3",
               "CRYPTOLENS_FETCH_ADDR": f"127.0.0.1:{free_port()}"}  # nothing there: data is pre-written
        service = ServiceProcess("alerts", port, free_port(),
                                 ["--symbols", SYMBOL, "--eval-interval-s", "3600", "--webhook-url", receiver.url,
                                  "--notify-timeout-s", "1"], env, tmp_path / "alerts.log")
        return service.start().wait_serving()

    yield db_url, receiver, start
    receiver.close()


def rule_request() -> alerts_pb2.Rule:
    return alerts_pb2.Rule(id="link-below-90", kind="threshold", symbol=SYMBOL, interval="1h", window="24h",
                           metric="price", condition="below", warning=100, alert=90, clear=105, pending_for_s=0,
                           cooldown_s=3600)


def notifications_for(receiver: Receiver, rule: str) -> list[dict]:
    return [b for b in receiver.received if b.get("rule") == rule]


def wait_until(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_rules_are_validated_over_grpc(alerts_env):
    db_url, _, start = alerts_env
    write_prices(db_url, [120.0] * 30)  # the rule's symbol must be served
    service = start()
    try:
        with grpc.insecure_channel(service.addr) as channel:
            stub = alerts_pb2_grpc.AlertsServiceStub(channel)
            bad = [
                (alerts_pb2.Rule(id="x", kind="threshold", symbol=SYMBOL, interval="1h", window="24h",
                                 metric="happiness", condition="above", warning=1, alert=2, clear=0), "metric"),
                (alerts_pb2.Rule(id="x", kind="threshold", symbol=SYMBOL, interval="1h", window="24 hours",
                                 metric="price", condition="above", warning=1, alert=2, clear=0), "window"),
                (alerts_pb2.Rule(id="x", kind="threshold", symbol=SYMBOL, interval="1h", window="24h",
                                 metric="price", condition="above", warning=3, alert=2, clear=0), "alert"),
            ]
            for rule, field in bad:
                with pytest.raises(grpc.RpcError) as exc:
                    stub.CreateRule(alerts_pb2.CreateRuleRequest(rule=rule), timeout=10)
                assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()
                assert field in exc.value.details()
            created = stub.CreateRule(alerts_pb2.CreateRuleRequest(rule=rule_request()), timeout=10).rule
            assert created.id == "link-below-90" and created.enabled and not created.builtin
            with pytest.raises(grpc.RpcError) as exc:
                stub.CreateRule(alerts_pb2.CreateRuleRequest(rule=rule_request()), timeout=10)
            assert exc.value.code() == grpc.StatusCode.ALREADY_EXISTS
            listed = {r.id: r for r in stub.ListRules(alerts_pb2.ListRulesRequest(), timeout=10).rules}
            assert {"price_drop", "volatility_spike", "drawdown", "link-below-90"} <= set(listed)
            assert listed["price_drop"].builtin
            with pytest.raises(grpc.RpcError) as exc:
                stub.DeleteRule(alerts_pb2.DeleteRuleRequest(id="price_drop"), timeout=10)
            assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert stub.DeleteRule(alerts_pb2.DeleteRuleRequest(id="link-below-90"), timeout=10).deleted
    finally:
        service.stop()


def test_restart_mid_alert_neither_refires_nor_forgets(alerts_env):
    db_url, receiver, start = alerts_env
    write_prices(db_url, [120.0] * 30 + [85.0])
    service = start()
    try:
        with grpc.insecure_channel(service.addr) as channel:
            stub = alerts_pb2_grpc.AlertsServiceStub(channel)
            stub.CreateRule(alerts_pb2.CreateRuleRequest(rule=rule_request()), timeout=10)
            result = stub.Evaluate(alerts_pb2.EvaluateRequest(rules=["link-below-90"]), timeout=30)
            assert [s.state for s in result.statuses] == ["ALERT"]
            assert wait_until(lambda: len(notifications_for(receiver, "link-below-90")) == 1)
            history_before = stub.ListAlerts(alerts_pb2.ListAlertsRequest(rule="link-below-90"), timeout=10).history
            assert history_before and "85" in history_before[0].message
    finally:
        assert service.stop() == 0
    service = start()  # same Redis: state, rules and history come back
    try:
        with grpc.insecure_channel(service.addr) as channel:
            stub = alerts_pb2_grpc.AlertsServiceStub(channel)
            listed = stub.ListAlerts(alerts_pb2.ListAlertsRequest(rule="link-below-90"), timeout=10)
            assert [a.state for a in listed.active] == ["ALERT"]
            stub.Evaluate(alerts_pb2.EvaluateRequest(rules=["link-below-90"]), timeout=30)
            time.sleep(1.5)
            assert len(notifications_for(receiver, "link-below-90")) == 1
            after = stub.ListAlerts(alerts_pb2.ListAlertsRequest(rule="link-below-90"), timeout=10).history
            assert [e.SerializeToString() for e in after] == [e.SerializeToString() for e in history_before]
    finally:
        service.stop()


def test_failing_then_hanging_receiver_never_slows_evaluation(alerts_env):
    db_url, receiver, start = alerts_env
    write_prices(db_url, [120.0] * 30 + [85.0])
    receiver.mode = "fail"
    service = start()
    try:
        with grpc.insecure_channel(service.addr) as channel:
            stub = alerts_pb2_grpc.AlertsServiceStub(channel)
            stub.CreateRule(alerts_pb2.CreateRuleRequest(rule=rule_request()), timeout=10)
            timings = []
            for _ in range(5):
                started = time.perf_counter()
                stub.Evaluate(alerts_pb2.EvaluateRequest(), timeout=30)
                timings.append(time.perf_counter() - started)
            assert wait_until(lambda: receiver.attempts >= 2)  # it is retrying
            receiver.mode = "hang"
            started = time.perf_counter()
            stub.Evaluate(alerts_pb2.EvaluateRequest(), timeout=30)
            hang_eval = time.perf_counter() - started
            # A hanging receiver (3 s per attempt) must not be on the evaluation path.
            assert hang_eval < 1.0, hang_eval
            receiver.mode = "ok"
            assert wait_until(lambda: len(notifications_for(receiver, "link-below-90")) >= 1, timeout=60)
            time.sleep(2)
            delivered = notifications_for(receiver, "link-below-90")
            assert len({d["id"] for d in delivered}) == 1 and len(delivered) == 1
    finally:
        service.stop()
    text = service.log()
    assert "notification failed" in text or "notification refused" in text


def test_watch_alerts_streams_transitions(alerts_env):
    db_url, _, start = alerts_env
    write_prices(db_url, [120.0] * 30 + [85.0])
    service = start()
    try:
        with grpc.insecure_channel(service.addr) as channel:
            stub = alerts_pb2_grpc.AlertsServiceStub(channel)
            stub.CreateRule(alerts_pb2.CreateRuleRequest(rule=rule_request()), timeout=10)
            stream = stub.WatchAlerts(alerts_pb2.WatchAlertsRequest(symbols=[SYMBOL]), timeout=20)
            time.sleep(0.5)  # the subscription starts before the evaluation
            stub.Evaluate(alerts_pb2.EvaluateRequest(rules=["link-below-90"]), timeout=30)
            event = next(iter(stream)).event
            stream.cancel()
            assert event.symbol == SYMBOL and event.rule == "link-below-90" and event.to == "ALERT"
            assert getattr(event, "from") == "OK" and event.value == 85.0 and event.threshold == 90
    finally:
        service.stop()


def test_a_fetch_write_triggers_evaluation_without_asking(alerts_env):
    db_url, receiver, start = alerts_env
    write_prices(db_url, [120.0] * 30)
    service = start()
    try:
        with grpc.insecure_channel(service.addr) as channel:
            stub = alerts_pb2_grpc.AlertsServiceStub(channel)
            stub.CreateRule(alerts_pb2.CreateRuleRequest(rule=rule_request()), timeout=10)
            write_prices(db_url, [120.0] * 30 + [85.0])  # the store publishes the update; nobody calls Evaluate
            assert wait_until(lambda: len(notifications_for(receiver, "link-below-90")) == 1)
            active = stub.ListAlerts(alerts_pb2.ListAlertsRequest(symbol=SYMBOL), timeout=10).active
            assert ("link-below-90", "ALERT") in [(a.rule, a.state) for a in active]
    finally:
        service.stop()


def test_backtest_rpc_over_stored_history(alerts_env):
    db_url, _, start = alerts_env
    write_prices(db_url, [100.0] * 10 + [80.0] * 3 + [100.0] * 10)
    service = start()
    try:
        with grpc.insecure_channel(service.addr) as channel:
            stub = alerts_pb2_grpc.AlertsServiceStub(channel)
            reply = stub.Backtest(alerts_pb2.BacktestRequest(rule="price_drop", symbol=SYMBOL), timeout=30)
            assert reply.bars == 23
            assert [(getattr(e, "from"), e.to) for e in reply.events][:1] == [("OK", "ALERT")]
            assert "fell 20.0 % in 1h" in reply.events[0].message
            with pytest.raises(grpc.RpcError) as exc:
                stub.Backtest(alerts_pb2.BacktestRequest(rule="nope", symbol=SYMBOL), timeout=30)
            assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        service.stop()


def test_alertmanager_push_format_keeps_one_label_set():
    from services.alerts.notify import alertmanager_alert

    event = {"id": "x", "time_ms": 1_700_000_000_000, "firing_since_ms": 1_700_000_000_000, "symbol": "BTC-USD",
             "rule": "price_drop", "interval": "1h", "from": "OK", "to": "ALERT", "grade": "ALERT", "value": 0.12,
             "threshold": 0.1, "message": "BTC-USD fell 12.0 % in 1h", "notified": True}
    firing = alertmanager_alert(event)
    labels = {"alertname": "cryptolens_price_drop", "symbol": "BTC-USD", "rule": "price_drop", "interval": "1h",
              "source": "cryptolens"}
    assert firing["labels"] == labels and firing["annotations"]["grade"] == "ALERT"
    assert firing["startsAt"] == "2023-11-14T22:13:20Z" and "endsAt" not in firing
    warning = alertmanager_alert({**event, "to": "WARNING", "grade": "WARNING"})
    resolved = alertmanager_alert({**event, "from": "ALERT", "to": "OK", "grade": "OK",
                                   "time_ms": 1_700_000_060_000})
    assert warning["labels"] == resolved["labels"] == labels  # escalation and resolve hit the same alert
    assert resolved["endsAt"] == "2023-11-14T22:14:20Z" and resolved["startsAt"] == firing["startsAt"]


async def test_history_pages_newest_first_with_filters(redis_client):
    from services.alerts.engine import HISTORY_KEY, AlertEngine

    engine = AlertEngine(redis_client, series=None, watchlist=[], receivers=[])
    for i in range(7):
        event = {"id": str(i), "time_ms": i, "symbol": "BTC-USD" if i % 2 else "ETH-USD", "rule": "r",
                 "from": "OK", "to": "ALERT", "grade": "ALERT", "value": i, "threshold": 1, "message": str(i)}
        await redis_client.xadd(HISTORY_KEY, {"event": json.dumps(event)})
    page, token = await engine.history(page_size=3)
    assert [e["id"] for e in page] == ["6", "5", "4"] and token
    page, token = await engine.history(page_size=3, page_token=token)
    assert [e["id"] for e in page] == ["3", "2", "1"] and token
    page, token = await engine.history(page_size=3, page_token=token)
    assert [e["id"] for e in page] == ["0"] and token == ""
    btc, _ = await engine.history(symbol="BTC-USD", page_size=10)
    assert [e["id"] for e in btc] == ["5", "3", "1"]
