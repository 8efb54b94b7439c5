"""Secrets as they are echoed: URLs keep what tells a person which server is meant, never a password
or token; a bad setting's error line shows the redacted value."""

from __future__ import annotations

import pytest

from services.alerts.server import AlertsSettings
from services.common import redact
from services.common.config import ServiceSettings, SettingsError, load_settings


@pytest.mark.parametrize("url, shown", [
    ("redis://:s3cret@redis.data.svc:6379/0", "redis://:***@redis.data.svc:6379/0"),
    ("rediss://alice:s3cret@[::1]:6380/2", "rediss://alice:***@[::1]:6380/2"),
    ("redis://redis:6379/0", "redis://redis:6379/0"),
    ("redis://redis:6379/0?password=s3cret", "redis://redis:6379/0?***"),
    ("unix:///run/redis.sock?password=s3cret", "unix:///run/redis.sock?***"),
    ("redis://:s3cret@host:notaport/0", "redis://:***@host/0"),
    ("s3cret", "***"),
    ("redis:/:s3cret@host", "***"),
])
def test_redis_urls_lose_their_password(url, shown):
    assert redact.redis_url(url) == shown


@pytest.mark.parametrize("url, shown", [
    ("https://hooks.slack.com/services/T000/B000/XXXXsecret", "https://hooks.slack.com/***"),
    ("https://hooks.example.com/hook?token=s3cret", "https://hooks.example.com/***"),
    ("https://s3cret@hooks.example.com/", "https://***@hooks.example.com"),
    ("http://bob:s3cret@alertmanager:9093", "http://bob:***@alertmanager:9093"),
    ("http://alertmanager:9093", "http://alertmanager:9093"),
    ("not a url s3cret", "***"),
])
def test_endpoint_urls_keep_scheme_and_host_only(url, shown):
    assert redact.endpoint_url(url) == shown


@pytest.mark.parametrize("cls, name, value, shown", [
    (ServiceSettings, "CRYPTOLENS_REDIS_URL", "http://:s3cret@redis:6379/0", "'http://:***@redis:6379/0'"),
    (ServiceSettings, "CRYPTOLENS_REDIS_URL", "redis://:s3cret@redis:63x9/0", "'redis://:***@redis/0'"),
    (AlertsSettings, "CRYPTOLENS_WEBHOOK_URL", "ftp://hooks.example.com/s3cret", "'ftp://hooks.example.com/***'"),
    (AlertsSettings, "CRYPTOLENS_ALERTMANAGER_URL", "am:9093/s3cret", "'***'"),
])
def test_a_bad_secret_setting_is_shown_redacted(cls, name, value, shown):
    with pytest.raises(SettingsError) as exc:
        load_settings(cls, env={name: value})
    assert f"bad setting {name}={shown}: " in str(exc.value) and "s3cret" not in str(exc.value)
    with pytest.raises(SettingsError) as exc:  # the same as a flag
        load_settings(cls, flags={name.removeprefix("CRYPTOLENS_").lower(): value}, env={})
    assert "s3cret" not in str(exc.value)
