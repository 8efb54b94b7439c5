"""Which series Fetch streams: live exchange series only, never over a csv file, never with simulated."""

from __future__ import annotations

from services.common.config import load_settings
from services.fetch.ingest import Ingestor
from services.fetch.providers.registry import build_providers
from services.fetch.server import FetchSettings
from services.fetch.streams.manager import build_stream_manager


async def _no_repair(symbol, interval):
    return None


def manager_for(**flags):
    settings = load_settings(FetchSettings, flags, {})
    providers = build_providers(settings)
    return build_stream_manager(settings, providers, Ingestor(None, providers), _no_repair)


def test_live_streams_the_watch_list_from_binance_first():
    manager = manager_for(provider="live", symbols="BTC-USD,ETH-USD", interval="1h", stream_intervals="1m")
    assert list(manager.connections) == ["binance"]
    assert manager.provider_of == {"BTC-USD": "binance", "ETH-USD": "binance"}
    assert manager.intervals == ["1h", "1m"]


def test_the_first_streaming_exchange_of_the_chain_streams():
    assert list(manager_for(provider="coinbase,kraken").connections) == ["coinbase"]
    assert list(manager_for(provider="coingecko,kraken").connections) == ["kraken"]


def test_off_simulated_and_coingecko_alone_do_not_stream():
    assert manager_for(provider="live", stream="off") is None
    assert manager_for(provider="simulated") is None
    assert manager_for(provider="coingecko") is None


def test_a_series_served_by_a_csv_file_is_never_streamed(shared_data):
    path = shared_data / "prices" / "BTCUSDT_1h_cdd-binance.csv"
    manager = manager_for(provider="csv,binance", csv_file=f"BTC-USD:1h={path}", symbols="BTC-USD,ETH-USD",
                          interval="1h")
    assert manager.provider_of == {"ETH-USD": "binance"}
    assert manager_for(provider="csv,binance", csv_file=f"BTC-USD:1h={path}", symbols="BTC-USD",
                       interval="1h") is None
