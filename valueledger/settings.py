"""One typed settings object, read from the environment once at start-up."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Final, overload
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

import msgspec

PostgresUrl = Annotated[str, msgspec.Meta(pattern=r"^postgres(ql)?://")]
RedisUrl = Annotated[str, msgspec.Meta(pattern=r"^(rediss?|unix)://")]
RoleName = Annotated[str, msgspec.Meta(pattern=r"^([a-z_][a-z0-9_]{0,62})?$")]
CachePrefix = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,40}$")]
Delays = Annotated[str, msgspec.Meta(pattern=r"^\d+(\.\d+)?(,\d+(\.\d+)?){0,19}$")]
Days = Annotated[str, msgspec.Meta(pattern=r"^\d{1,5}$")]

SWITCHES: Final = {
    **dict.fromkeys(("1", "true", "yes", "on"), True),
    **dict.fromkeys(("0", "false", "no", "off"), False),
}
"""How an on/off setting may be written in the environment (in any case)."""


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Configuration. Unset URLs mean: start the embedded servers in `data_dir`."""

    database_url: PostgresUrl | None = None
    redis_url: RedisUrl | None = None
    data_dir: str = ".valueledger"
    signing_key: str | None = None
    """Path of the PEM private key; by default `<data_dir>/signing-key.pem`, made on first run."""
    app_database_url: PostgresUrl | None = None
    """The login the service's own sessions use, when it should not be DATABASE_URL's: a login
    that owns nothing and is a member of `valueledger_app`, so that no session of the service
    can step back (SET ROLE NONE) to a role that owns the ledger's tables. DATABASE_URL (the
    owner) still applies the schema and registers keys. Unset: the embedded server's
    `valueledger_app` login, or DATABASE_URL's."""
    db_role: RoleName = "valueledger_app"
    """Role the service's sessions run as; empty to keep the login role (not recommended)."""
    cache_prefix: CachePrefix = "vl"
    """Prefix of every Redis key the service writes, so several deployments can share a Redis."""
    jwt_secret: str | None = None
    """HS256 secret of the service's tokens (at least 32 bytes); by default a random one kept in
    `<data_dir>/jwt-secret`, made on first run."""
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwks_url: str | None = None
    """An external identity provider's JWKS: its RS256/ES256 tokens are accepted too."""
    webhooks: str | None = None
    """Path of the JSON file listing the webhook endpoints (docs/webhooks.md); none: no
    webhooks are sent."""
    webhook_retry_delays: Delays = "300,1800,7200"
    """Seconds to wait before each further attempt after a failed one, comma-separated."""
    webhook_retention_days: Days = "30"
    """Days a finished delivery's row (delivered or failed) is kept; 0 keeps them forever."""
    require_if_match: bool = False
    """Refuse (428) a command on an aggregate that exists when it comes without If-Match, so
    that no client can change what it has not read; the commands that create their aggregate
    are never refused. Off: If-Match stays optional, as RFC 9110 has it."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        names = {
            "database_url": "DATABASE_URL",
            "app_database_url": "VALUELEDGER_APP_DATABASE_URL",
            "redis_url": "REDIS_URL",
            "data_dir": "VALUELEDGER_DATA_DIR",
            "signing_key": "VALUELEDGER_SIGNING_KEY",
            "db_role": "VALUELEDGER_DB_ROLE",
            "cache_prefix": "VALUELEDGER_CACHE_PREFIX",
            "jwt_secret": "VALUELEDGER_JWT_SECRET",
            "jwt_audience": "VALUELEDGER_JWT_AUDIENCE",
            "jwt_issuer": "VALUELEDGER_JWT_ISSUER",
            "jwks_url": "VALUELEDGER_JWKS_URL",
            "webhooks": "VALUELEDGER_WEBHOOKS",
            "webhook_retry_delays": "VALUELEDGER_WEBHOOK_RETRY_DELAYS",
            "webhook_retention_days": "VALUELEDGER_WEBHOOK_RETENTION_DAYS",
            "require_if_match": "VALUELEDGER_REQUIRE_IF_MATCH",
        }
        values: dict[str, object] = {
            field: env[name] for field, name in names.items() if env.get(name) is not None
        }
        for field in (
            "database_url",
            "app_database_url",
            "redis_url",
            "signing_key",
            "jwt_secret",
            "jwt_audience",
            "jwt_issuer",
            "jwks_url",
            "webhooks",
            "require_if_match",
        ):
            if values.get(field) == "":
                del values[field]
        if "require_if_match" in values:
            written = str(values["require_if_match"])
            switch = SWITCHES.get(written.strip().lower())
            if switch is None:
                raise ValueError(
                    f"invalid configuration: VALUELEDGER_REQUIRE_IF_MATCH: {written!r} is not "
                    f"one of {', '.join(SWITCHES)}"
                )
            values["require_if_match"] = switch
        try:
            return msgspec.convert(values, cls)
        except msgspec.ValidationError as error:
            field = str(error).rsplit("`$.", 1)[-1].rstrip("`")
            env_name = names.get(field, field)
            raise ValueError(f"invalid configuration: {env_name}: {error}") from None

    @property
    def retry_delays(self) -> tuple[float, ...]:
        """`webhook_retry_delays` as seconds."""
        return tuple(float(delay) for delay in self.webhook_retry_delays.split(","))

    @property
    def retention_days(self) -> int:
        """`webhook_retention_days` as a number."""
        return int(self.webhook_retention_days)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def signing_key_path(self) -> Path:
        if self.signing_key:
            return Path(self.signing_key)
        return self.data_path / "signing-key.pem"

    def token_secret(self) -> bytes:
        """The HS256 secret: configured, or read from (and on first run written to) the data
        folder with mode 0600."""
        if self.jwt_secret:
            secret = self.jwt_secret.encode()
            if len(secret) < 32:
                raise ValueError("invalid configuration: VALUELEDGER_JWT_SECRET: at least 32 bytes")
            return secret
        path = self.data_path / "jwt-secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fresh = path.with_name(f".jwt-secret-{os.getpid()}")
            descriptor = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(secrets.token_hex(32))
            try:  # the first process to link its secret wins; the others read that one
                os.link(fresh, path)
            except FileExistsError:
                pass
            finally:
                fresh.unlink()
        return path.read_text().strip().encode()

    def __repr__(self) -> str:
        return (
            f"Settings(database_url={redact_url(self.database_url)!r}, "
            f"app_database_url={redact_url(self.app_database_url)!r}, "
            f"redis_url={redact_url(self.redis_url)!r}, data_dir={self.data_dir!r}, "
            f"signing_key={self.signing_key!r}, db_role={self.db_role!r}, "
            f"cache_prefix={self.cache_prefix!r}, "
            f"jwt_secret={'***' if self.jwt_secret else None!r}, "
            f"jwt_audience={self.jwt_audience!r}, jwt_issuer={self.jwt_issuer!r}, "
            f"jwks_url={redact_url(self.jwks_url)!r}, webhooks={self.webhooks!r}, "
            f"webhook_retry_delays={self.webhook_retry_delays!r}, "
            f"webhook_retention_days={self.webhook_retention_days!r}, "
            f"require_if_match={self.require_if_match!r})"
        )

    __str__ = __repr__


SECRET_PARAMETER: Final = re.compile(r"pass|secret|token|key|auth|credential", re.IGNORECASE)
"""Query parameters whose value is (or may be) a secret: libpq's `password` and `sslpassword`,
redis-py's `password`, and the tokens and keys of other services' URLs (a JWKS endpoint's)."""
REDACTED_TEXT: Final = "***"
_URL_MARKER: Final = re.compile("://")
_URL_END: Final = re.compile(r"\s|\Z")


@overload
def redact_url(url: str) -> str: ...
@overload
def redact_url(url: None) -> None: ...
def redact_url(url: str | None) -> str | None:
    """The URL with its secrets replaced, fit for logs and error messages: the user-info
    password and the value of every query parameter named like a secret (SECRET_PARAMETER).

    The secrets are cut out of the text urllib splits, never rebuilt from parsed hosts and
    ports: the rest shows as written (host case, parameter order), and libpq's several hosts
    (`h1:5432,h2:5433`, which have no single port for urllib to parse) are redacted too."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket: nothing in it can be told apart
        return f"{REDACTED_TEXT} (a URL that cannot be taken apart)"
    netloc = parts.netloc
    if _password(netloc) is not None:
        userinfo, _at, hosts = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:{REDACTED_TEXT}@{hosts}"
    query = "&".join(_redacted_parameter(item) for item in parts.query.split("&"))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_secrets(url: str) -> frozenset[str]:
    """What redact_url cuts out of `url` (its password, the values of its parameters named like
    secrets), as written there and decoded: to be cut out of text that repeats them without the
    URL around them, as an error quoting a server's answer to a request for `url` may. Raises
    ValueError for a URL urllib cannot take apart."""
    parts = urlsplit(url)
    written = [_password(parts.netloc)]
    for item in parts.query.split("&"):
        name, equals, value = item.partition("=")
        if equals and _secret_parameter(name):
            written.append(value)
    return frozenset(
        form for text in written if text for form in (text, unquote(text), unquote_plus(text))
    )


def redact_urls_in(text: str) -> str:
    """`text` with every URL in it redacted as redact_url does: free text, such as an error's
    message (`could not connect to postgresql://u:pw@h/db`). Every "://" starts a URL, whatever
    stands before it (a scheme, or text run into one), and the URL runs to the next white space:
    what follows it without a space (a closing quote, a full stop) is taken as part of it, at
    worst redacted along with a secret before it, never a secret shown. A URL inside another
    (`https://h/?next=https://u:pw@i`) is redacted first, then the one around it."""
    if "://" not in text:
        return text
    for marker in reversed([found.start() for found in _URL_MARKER.finditer(text)]):
        end = _URL_END.search(text, marker)
        assert end is not None  # noqa: S101 - \Z always matches
        # Under a scheme of the caller's choosing, every URL splits alike, and the text before
        # "://" stays as it is.
        shown = redact_url(f"http{text[marker : end.start()]}")
        text = f"{text[:marker]}{shown.removeprefix('http')}{text[end.start() :]}"
    return text


def _password(netloc: str) -> str | None:
    userinfo, at, _hosts = netloc.rpartition("@")
    return userinfo.partition(":")[2] if at and ":" in userinfo else None


def _secret_parameter(name: str) -> bool:
    return SECRET_PARAMETER.search(unquote_plus(name)) is not None


def _redacted_parameter(item: str) -> str:
    name, equals, _value = item.partition("=")
    if equals and _secret_parameter(name):
        return f"{name}={REDACTED_TEXT}"
    return item
