"""CRYPTOLENS_<NAME>_FILE: how the chart hands secrets to the services (mounted Secret files, never
environment values), through the services' own settings loader."""

from __future__ import annotations

import pytest

from services.alerts.server import AlertsSettings
from services.common.config import SettingsError, load_settings
from services.fetch.server import FetchSettings


def test_a_setting_is_read_from_the_file_a_file_variable_names(tmp_path):
    (tmp_path / "redis-url").write_text("redis://:s3cret@redis:6379/0\n")  # as a Secret volume writes it
    (tmp_path / "key").write_text("CG-abc")
    env = {"CRYPTOLENS_REDIS_URL_FILE": str(tmp_path / "redis-url"),
           "CRYPTOLENS_COINGECKO_API_KEY_FILE": str(tmp_path / "key")}
    settings = load_settings(FetchSettings, env=env)
    assert settings.redis_url == "redis://:s3cret@redis:6379/0" and settings.coingecko_api_key == "CG-abc"


def test_the_plain_variable_and_the_flag_still_win(tmp_path):
    (tmp_path / "url").write_text("https://from-file.example/hook")
    env = {"CRYPTOLENS_WEBHOOK_URL_FILE": str(tmp_path / "url"), "CRYPTOLENS_WEBHOOK_URL": "https://env.example/h"}
    assert load_settings(AlertsSettings, env=env).webhook_url == "https://env.example/h"
    flags = {"webhook_url": "https://flag.example/h"}
    assert load_settings(AlertsSettings, flags=flags, env=env).webhook_url == "https://flag.example/h"


def test_a_missing_file_names_the_variable(tmp_path):
    env = {"CRYPTOLENS_WEBHOOK_URL_FILE": str(tmp_path / "absent")}
    with pytest.raises(SettingsError, match=r"CRYPTOLENS_WEBHOOK_URL_FILE=.*: cannot read it \(No such file"):
        load_settings(AlertsSettings, env=env)


def test_a_bad_value_in_a_file_is_refused_without_quoting_the_secret(tmp_path):
    (tmp_path / "url").write_text("ftp://user:T0PSECRET@host/")
    with pytest.raises(SettingsError) as exc:
        load_settings(AlertsSettings, env={"CRYPTOLENS_WEBHOOK_URL_FILE": str(tmp_path / "url")})
    assert "CRYPTOLENS_WEBHOOK_URL_FILE" in str(exc.value) and "must be an http:// or https:// URL" in str(exc.value)
    assert "T0PSECRET" not in str(exc.value)
