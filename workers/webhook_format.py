"""What a webhook is on the wire, and which endpoints receive them: pure, no I/O.

Deliveries follow the Standard Webhooks specification (https://www.standardwebhooks.com/),
symmetric signatures (``v1``), so a receiver can use any of its libraries. docs/webhooks.md
is the reference, with a test vector that tests/workers/test_webhook_format.py checks.

- ``webhook-id``: ``<tenant>_<seq>``, the same on every attempt and for every endpoint, so a
  receiver drops a repeat by it.
- ``webhook-timestamp``: the attempt's time, integer seconds since the Unix epoch.
- ``webhook-signature``: ``v1,`` + base64 of HMAC-SHA256, keyed by the endpoint's secret, over
  ``<webhook-id>.<webhook-timestamp>.<body>``.
- The body: ``{"type": <event type>, "timestamp": <recorded_at>, "data": <the receipt>}``,
  where the receipt is the record exactly as a ledger bundle holds it (docs/receipts.md):
  whoever holds our public key can also check the event itself, not only who sent it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Final
from urllib.parse import urlsplit

import httpx
import msgspec

from commands.aggregates import EVENT_TYPES
from eventstore.bundle import record_line
from eventstore.receipts import format_timestamp
from eventstore.store import RecordedEvent

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - a format prefix, not a secret
"""Standard Webhooks' form of a symmetric secret: the prefix, then the key's bytes in base64."""
SECRET_BYTES: Final = range(24, 65)
"""The secret's length in bytes, as the specification asks (24 to 64)."""

EndpointId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")]


class EndpointConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One endpoint as the operator's file writes it."""

    id: EndpointId
    url: Annotated[str, msgspec.Meta(max_length=2000)]
    secret: str
    types: list[Annotated[str, msgspec.Meta(min_length=1, max_length=100)]] | None = None
    """The event types it wants; absent: every event."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """An endpoint ready to sign for. A plain dataclass with the key left out of its repr, so
    no log line, traceback or encoder shows the key."""

    id: str
    url: str
    key: bytes = field(repr=False)
    types: frozenset[str] | None = None

    def wants(self, event_type: str) -> bool:
        return self.types is None or event_type in self.types


class WebhookConfigError(ValueError):
    """The endpoints file cannot be used; the message names the file and what is wrong."""


def load_endpoints(path: str | Path) -> list[Endpoint]:
    """The endpoints listed in the JSON file at `path` (a list of EndpointConfig objects)."""
    where = f"webhook endpoints file {str(path)!r}"
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise WebhookConfigError(f"{where}: {error.strerror or error}") from None
    try:
        configs = msgspec.json.decode(raw, type=list[EndpointConfig])
    except msgspec.DecodeError as error:
        raise WebhookConfigError(f"{where}: {error}") from None
    return parse_endpoints(configs, where)


def parse_endpoints(configs: Sequence[EndpointConfig], where: str) -> list[Endpoint]:
    seen: set[str] = set()
    endpoints = []
    for index, config in enumerate(configs):
        at = f"{where}: [{index}] ({config.id})"
        if config.id in seen:
            raise WebhookConfigError(f"{at}: the id is used twice; give each endpoint its own")
        seen.add(config.id)
        parts = urlsplit(config.url)
        try:
            parts.port  # noqa: B018 - parsing it is the check: a port that is no number raises
            httpx.URL(config.url)
        except (ValueError, httpx.InvalidURL):
            raise WebhookConfigError(f"{at}: url is not a URL a request can be sent to") from None
        if parts.scheme not in {"https", "http"} or not parts.hostname:
            raise WebhookConfigError(f"{at}: url must be an absolute http(s) URL")
        if parts.username or parts.password:
            raise WebhookConfigError(f"{at}: url must not hold credentials; use the secret")
        if config.types is not None and not config.types:
            raise WebhookConfigError(f"{at}: types is empty; leave it out to receive every event")
        unknown = sorted(set(config.types or ()) - EVENT_TYPES)
        if unknown:
            raise WebhookConfigError(
                f"{at}: no event has type {unknown[0]!r}; docs/events.md lists the types"
            )
        endpoints.append(
            Endpoint(
                id=config.id,
                url=config.url,
                key=secret_key(config.secret, at),
                types=None if config.types is None else frozenset(config.types),
            )
        )
    return endpoints


def secret_key(secret: str, at: str) -> bytes:
    """The HMAC key a ``whsec_`` secret stands for."""
    if not secret.startswith(SECRET_PREFIX):
        raise WebhookConfigError(f"{at}: secret must start with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error:
        raise WebhookConfigError(f"{at}: secret is not {SECRET_PREFIX} + base64") from None
    if len(key) not in SECRET_BYTES:
        raise WebhookConfigError(
            f"{at}: secret holds {len(key)} bytes; use {SECRET_BYTES.start} to "
            f"{SECRET_BYTES.stop - 1} random bytes"
        )
    return key


def message_id(tenant: str, seq: int) -> str:
    """``webhook-id``: one event's, whatever the endpoint or attempt."""
    return f"{tenant}_{seq}"


def body(record: RecordedEvent) -> bytes:
    """The JSON body delivering `record`: its type, when it was recorded, and the receipt."""
    receipt = record_line(record.canonical, record.hash, record.signature, record.key_id)
    return b"".join(
        (
            b'{"type":',
            msgspec.json.encode(record.type),
            b',"timestamp":',
            msgspec.json.encode(format_timestamp(record.recorded_at)),
            b',"data":',
            receipt,
            b"}",
        )
    )


def signature(key: bytes, webhook_id: str, timestamp: int, payload: bytes) -> str:
    """``webhook-signature`` for one attempt."""
    signed = f"{webhook_id}.{timestamp}.".encode() + payload
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()
