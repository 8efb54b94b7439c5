"""`cryptolens up --csv-file ...` with no other flag serves exactly the files, whole, at their interval."""

from __future__ import annotations

import sys

import grpc
from streamlit.testing.v1 import AppTest

from cryptolens.v1 import core_pb2, core_pb2_grpc
from tests.conftest import UI_APP
from tests.integration.test_local_up import Up, pick_offset, ups  # noqa: F401 - the fixture

FILES = {"BTC-USD": "BTCUSDT_1d_cdd-binance.csv", "ETH-USD": "ETHUSDT_1d_cdd-binance.csv",
         "SOL-USD": "SOLUSDT_1d_cdd-binance.csv"}
OTHER_ETH = "ETHUSDT_1d_cdd-binance-2021export.csv"


def replay(tmp_path, offset: int, files: dict[str, str], shared_data, run: int) -> Up:
    up = Up(tmp_path, offset, run=run)
    up.argv = [sys.executable, "-m", "services.cli", "up", "--port-offset", str(offset),
               "--data-dir", str(tmp_path / "data"), "--no-ui",
               *[a for symbol, name in files.items() for a in ("--csv-file", f"{symbol}:1d={shared_data / 'prices' / name}")]]
    return up


def counts(up: Up, symbols) -> dict[str, int]:
    """GetStats over ten years, with no interval: the stack's own interval must be the files'."""
    # Its own subchannel: the page's client in this process may still be retrying the previous run's
    # Core on the same port, and a shared subchannel in backoff would fail this call at once.
    with grpc.insecure_channel(f"127.0.0.1:{up.port(50052)}", options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        stub = core_pb2_grpc.CoreServiceStub(channel)
        out = {}
        for symbol in symbols:
            reply = stub.GetStats(core_pb2.GetStatsRequest(symbol=symbol, lookback="3650d"), timeout=60)
            assert reply.interval == "1d" and reply.source == "csv"
            out[symbol] = reply.count
        return out


def file_bars(path) -> int:
    from services.common.csv_bars import load_csv

    return len(load_csv(path, "1d").bars)


def test_replay_serves_every_bar_of_each_file_and_the_page_shows_1d(tmp_path, shared_data, ups, monkeypatch):  # noqa: F811
    offset = pick_offset()
    first = replay(tmp_path, offset, FILES, shared_data, 1)
    ups.append(first.start())
    first.wait_up(timeout=90)
    want = {s: file_bars(shared_data / "prices" / name) for s, name in FILES.items()}
    assert want == {"BTC-USD": 3142, "ETH-USD": 3142, "SOL-USD": 2052}  # every valid bar of the files
    assert counts(first, FILES) == want

    for name, base in (("FETCH", 50051), ("CORE", 50052), ("ALERTS", 50053)):
        monkeypatch.setenv(f"CRYPTOLENS_{name}_ADDR", f"127.0.0.1:{first.port(base)}")
    at = AppTest.from_file(UI_APP, default_timeout=120).run()
    assert not at.exception, at.exception
    assert [box.value for box in at.selectbox if box.label == "Interval"] == ["1d"]
    assert {"BTC-USD", "ETH-USD", "SOL-USD"} <= {m.label for m in at.metric}
    assert not at.error, [e.value for e in at.error]
    assert first.ctrl_c() == 0

    # A second run on the same data dir with another ETH file serves that file, not the first one's bars.
    second = replay(tmp_path, offset, {**FILES, "ETH-USD": OTHER_ETH}, shared_data, 2)
    ups.append(second.start())
    second.wait_up(timeout=90)
    assert counts(second, ["ETH-USD"]) == {"ETH-USD": file_bars(shared_data / "prices" / OTHER_ETH)} == {"ETH-USD": 1408}
    assert second.ctrl_c() == 0
