"""Typed settings from flags and CRYPTOLENS_* environment."""

from __future__ import annotations

import argparse

import pytest

from services.common.config import ServiceSettings, SettingsError, add_arguments, load_settings
from services.core.server import CoreSettings
from services.fetch.server import FetchSettings


def parse(cls, argv, env=None):
    parser = argparse.ArgumentParser()
    add_arguments(parser, cls)
    return load_settings(cls, vars(parser.parse_args(argv)), env or {})


def test_defaults_per_service():
    core = parse(CoreSettings, [])
    assert (core.grpc_port, core.metrics_port, core.symbols, core.interval) == (
        50052, 9102, ["BTC-USD", "ETH-USD", "SOL-USD"], "1h")
    fetch = parse(FetchSettings, [])
    assert (fetch.grpc_port, fetch.metrics_port, fetch.provider) == (50051, 9101, "simulated")


def test_flag_beats_environment_beats_default():
    env = {"CRYPTOLENS_GRPC_PORT": "6000", "CRYPTOLENS_SYMBOLS": "btc-usd, ada-usd", "CRYPTOLENS_LOG_LEVEL": "debug"}
    s = parse(CoreSettings, ["--grpc-port", "7000"], env)
    assert s.grpc_port == 7000 and s.symbols == ["BTC-USD", "ADA-USD"] and s.log_level == "DEBUG"


@pytest.mark.parametrize("argv, env, needle", [
    (["--grpc-port", "70000"], {}, "--grpc-port='70000': must be a port number"),
    ([], {"CRYPTOLENS_METRICS_PORT": "abc"}, "CRYPTOLENS_METRICS_PORT='abc': 'abc' is not a valid int"),
    ([], {"CRYPTOLENS_INTERVAL": "2h"}, "'2h' is not one of 1m 5m 15m 1h 4h 1d"),
    (["--symbols", "BTCUSD"], {}, "is not a BASE-QUOTE symbol"),
    (["--redis-url", "localhost:6379"], {}, "must start with redis://"),
    (["--log-level", "loud"], {}, "must be DEBUG, INFO, WARNING or ERROR"),
])
def test_bad_values_give_one_clear_line(argv, env, needle):
    with pytest.raises(SettingsError) as exc:
        parse(CoreSettings, argv, env)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_fetch_provider_is_validated():
    assert parse(FetchSettings, ["--provider", "binance,kraken"]).provider == "binance,kraken"
    with pytest.raises(SettingsError, match="unknown provider nasdaq"):
        parse(FetchSettings, ["--provider", "nasdaq"])


def test_bool_parsing():
    from dataclasses import dataclass

    from services.common.config import setting

    @dataclass
    class WithFlag(ServiceSettings):
        enabled: bool = setting(False, "a switch")

    assert parse(WithFlag, [], {"CRYPTOLENS_ENABLED": "yes"}).enabled is True
    with pytest.raises(SettingsError, match="is not a valid bool"):
        parse(WithFlag, [], {"CRYPTOLENS_ENABLED": "maybe"})
