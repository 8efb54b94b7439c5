"""Defect 6: a bad page token is INVALID_ARGUMENT; WatchAlerts resumes, so a reconnecting client misses nothing."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from cryptolens.v1 import alerts_pb2, alerts_pb2_grpc
from tests.integration.test_alerts import SYMBOL, alerts_env, rule_request, wait_until, write_prices  # noqa: F401
from ui.client import CryptoLensClient

RULE = "link-below-90"


def flip(stub, db_url: str, n: int, start: int = 0) -> None:
    """n transitions: the price alternates across the rule's lines (ALERT at even steps, OK at odd)."""
    for i in range(start, start + n):
        write_prices(db_url, [120.0] * 30 + [85.0 if i % 2 == 0 else 110.0])
        stub.Evaluate(alerts_pb2.EvaluateRequest(rules=[RULE]), timeout=30)


def history_ids(stub) -> list[str]:
    reply = stub.ListAlerts(alerts_pb2.ListAlertsRequest(rule=RULE, page_size=1000), timeout=10)
    return [e.id for e in reversed(reply.history)]


def test_a_bad_page_token_is_invalid_argument(alerts_env):  # noqa: F811
    db_url, _, start = alerts_env
    service = start()
    try:
        with grpc.insecure_channel(service.addr) as channel:
            stub = alerts_pb2_grpc.AlertsServiceStub(channel)
            for token in ("garbage", "12-", "9" * 60):
                with pytest.raises(grpc.RpcError) as exc:
                    stub.ListAlerts(alerts_pb2.ListAlertsRequest(page_token=token), timeout=10)
                assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert exc.value.details().startswith("page_token:") and len(exc.value.details()) < 120
            with pytest.raises(grpc.RpcError) as exc:
                next(iter(stub.WatchAlerts(alerts_pb2.WatchAlertsRequest(resume_from="nope"), timeout=10)))
            assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        service.stop()


def test_watch_alerts_resumes_after_the_last_event_seen(alerts_env):  # noqa: F811
    db_url, _, start = alerts_env
    write_prices(db_url, [120.0] * 31)
    service = start()
    try:
        with grpc.insecure_channel(service.addr) as channel:
            stub = alerts_pb2_grpc.AlertsServiceStub(channel)
            stub.CreateRule(alerts_pb2.CreateRuleRequest(rule=rule_request()), timeout=10)
            stream = stub.WatchAlerts(alerts_pb2.WatchAlertsRequest(symbols=[SYMBOL]), timeout=20)
            time.sleep(0.5)
            flip(stub, db_url, 1)
            first = next(r for r in stream if r.event.rule == RULE)  # built-ins make transitions too
            stream.cancel()
            assert first.stream_id and first.event.stream_id == first.stream_id
            flip(stub, db_url, 3, start=1)  # while nobody listens
            resumed = stub.WatchAlerts(alerts_pb2.WatchAlertsRequest(symbols=[SYMBOL], resume_from=first.stream_id),
                                       timeout=20)
            got = []
            for reply in resumed:
                if reply.event.rule == RULE:
                    got.append(reply.event)
                if len(got) == 3:
                    break
            resumed.cancel()
            assert [e.id for e in got] == history_ids(stub)[1:4]
            assert [e.to for e in got] == ["OK", "ALERT", "OK"]
    finally:
        service.stop()


def test_the_client_helper_misses_nothing_across_server_connection_recycling(alerts_env, monkeypatch):  # noqa: F811
    db_url, _, start = alerts_env
    write_prices(db_url, [120.0] * 31)
    monkeypatch.setenv("CRYPTOLENS_MAX_CONNECTION_AGE_S", "1")  # the server ends every stream after ~1 s
    monkeypatch.setenv("CRYPTOLENS_GRACE_S", "0.5")
    service = start()
    seen: list[dict] = []
    try:
        client = CryptoLensClient(alerts_addr=service.addr)
        connects = []
        watch = client._alerts.WatchAlerts
        client._alerts.WatchAlerts = lambda request: connects.append(request.resume_from) or watch(request)
        with grpc.insecure_channel(service.addr) as channel:
            stub = alerts_pb2_grpc.AlertsServiceStub(channel)
            stub.CreateRule(alerts_pb2.CreateRuleRequest(rule=rule_request()), timeout=10)

            def listen():
                for event in client.watch_alerts([SYMBOL], retry_s=0.1):
                    if event["rule"] == RULE:
                        seen.append(event)
                    if len(seen) == 8:
                        return

            threading.Thread(target=listen, daemon=True).start()
            for i in range(8):  # one transition each, spread over several connection lifetimes
                write_prices(db_url, [120.0] * 30 + [85.0 if i % 2 == 0 else 110.0])
                stub.Evaluate(alerts_pb2.EvaluateRequest(rules=[RULE]), timeout=30)
                time.sleep(0.6)
            assert wait_until(lambda: len(seen) >= 8, 20)
            assert [e["id"] for e in seen] == history_ids(stub)
    finally:
        service.stop()
    assert len(connects) >= 3  # the stream really was cut and resumed
