"""Ledger routes: receipts in the receipt format, public keys, streaming exports.

Everything here is the ledger's own bytes, as `docs/receipts.md` specifies them: a receipt is
the record's bundle line (`eventstore.bundle.record_line`), an export is the bundle
(`valueledger-bundle/1`) that `valueledger export` writes, and the keys are those an auditor
pins when verifying. Receipts and exports serve the customer's own users and vendor staff;
the public keys are public.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Final, cast

import asyncpg
import msgspec
from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Stream

from api.auth import Principal
from api.common import ETAG, EXPORTS_AT_ONCE, FirstSeq, ReceiptSeq, api_of, now
from api.openapi import ERROR_DESCRIPTIONS, explained_problems, problems
from api.problems import ApiProblem
from eventstore.bundle import fix_export_end, record_line, record_pages
from eventstore.keys import RegisteredKey, list_keys
from eventstore.receipts import format_timestamp, load_public_key_pem

NDJSON: Final = "application/x-ndjson"
CHUNK_BYTES: Final = 64 * 1024
"""An export is sent in chunks of about this size: few enough writes, small enough memory."""
EXPORT_RETRY_AFTER: Final = 5
"""Seconds a client refused for too many exports waits (exports take seconds, not minutes)."""
KEYS_MAX_AGE: Final = 300
"""Seconds a client may cache the key list (a rotation shows within that time)."""


class PublicKey(msgspec.Struct, frozen=True, kw_only=True):
    """A signing key as the bundle header lists it: receipts it signed count in
    [valid_from, valid_until)."""

    key_id: str
    public_key: str
    """PEM SubjectPublicKeyInfo."""
    valid_from: str
    valid_until: str | None


class PublicKeys(msgspec.Struct, frozen=True, kw_only=True):
    keys: tuple[PublicKey, ...]


class Jwk(msgspec.Struct, frozen=True, kw_only=True):
    """An RSA public key as a JSON Web Key (RFC 7517/7518); `kid` is the key id of the
    receipt format. RS256 (RSASSA-PKCS1-v1_5 with SHA-256) is how receipts are signed, over
    the 32 raw bytes of the record's hash."""

    kty: str = "RSA"
    use: str = "sig"
    alg: str = "RS256"
    kid: str
    n: str
    e: str


class Jwks(msgspec.Struct, frozen=True, kw_only=True):
    keys: tuple[Jwk, ...]


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _jwk(key: RegisteredKey) -> Jwk:
    numbers = load_public_key_pem(key.public_key).public_numbers()
    return Jwk(kid=key.key_id, n=_b64url_uint(numbers.n), e=_b64url_uint(numbers.e))


async def _registered_keys(request: Request[Any, Any, Any]) -> list[RegisteredKey]:
    async with api_of(request).services.pool.acquire() as connection:
        return await list_keys(connection)


_CACHEABLE: Final = {"Cache-Control": f"public, max-age={KEYS_MAX_AGE}"}


@get("/v1/keys", summary="The ledger's public signing keys (PEM, with validity)")
async def list_signing_keys(request: Request[Any, Any, Any]) -> Response[PublicKeys]:
    """Every key that ever signed receipts, oldest first, as a bundle header lists them."""
    keys = tuple(
        PublicKey(
            key_id=key.key_id,
            public_key=key.public_key,
            valid_from=format_timestamp(key.created_at),
            valid_until=None if key.retired_at is None else format_timestamp(key.retired_at),
        )
        for key in await _registered_keys(request)
    )
    return Response(PublicKeys(keys=keys), headers=_CACHEABLE)


@get("/v1/keys/jwks", summary="The ledger's public signing keys as a JWKS")
async def signing_keys_jwks(request: Request[Any, Any, Any]) -> Response[Jwks]:
    """The same keys as a JSON Web Key Set (kid = key id); validity windows are in /v1/keys."""
    jwks = Jwks(keys=tuple(_jwk(key) for key in await _registered_keys(request)))
    return Response(jwks, headers=_CACHEABLE)


class Receipt(msgspec.Struct, frozen=True, kw_only=True):
    """A receipt as GET answers it (format v1, docs/receipts.md): the covered record's ten
    members, then its hash, signature and key id. For the document only: the answer is the
    stored bytes in JCS form, never re-encoded."""

    v: int
    tenant: str
    seq: int
    stream: str
    version: int
    type: str
    data: Any
    meta: dict[str, Any]
    recorded_at: str
    prev_hash: str
    hash: str
    signature: str
    key_id: str


@get(
    "/v1/customers/{customer_id:str}/receipts/{seq:int}",
    summary="One receipt, in the receipt format v1",
    media_type="application/json",
    responses=problems((404, 503)),
    opt={ETAG: "The receipt's hash."},
)
async def get_receipt(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    seq: ReceiptSeq,
) -> Response[Receipt]:
    """The record at `seq` of the customer's chain, exactly as its line in a bundle: the
    covered members and hash, signature and key_id, in JCS form. Its ETag is its hash."""
    del principal
    row = await api_of(request).services.pool.fetchrow(
        "SELECT canonical, hash, signature, key_id FROM events WHERE tenant = $1 AND seq = $2",
        customer_id,
        seq,
    )
    if row is None:
        raise NotFoundException(detail=f"no receipt {seq} for customer {customer_id!r}")
    line = record_line(bytes(row["canonical"]), row["hash"], row["signature"], row["key_id"])
    # The exact bytes of the record, documented as `Receipt`.
    answer = Response(line, media_type="application/json", headers={"ETag": f'"{row["hash"]}"'})
    return cast("Response[Receipt]", answer)


EXPORT_ERRORS: Final = explained_problems(
    {
        503: ERROR_DESCRIPTIONS[503]
        + " For an export, also: this server is already streaming as many exports as it "
        f"allows ({EXPORTS_AT_ONCE}; `exports-busy`).",
    }
)


@get(
    "/v1/customers/{customer_id:str}/export",
    summary="The customer's ledger as a bundle (valueledger-bundle/1), streamed",
    media_type=NDJSON,
    responses=EXPORT_ERRORS,
)
async def export_ledger(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    from_seq: FirstSeq = 1,
) -> Stream:
    """The bundle `valueledger export` writes, for auditors: a header with every key, then
    every record from `from_seq` up to the chain's head when the export began, read page by
    page, so memory does not grow with the ledger and a slow download holds no database
    connection. Verify it with `valueledger verify --bundle FILE --key KEY`."""
    del principal
    api = api_of(request)
    slots = api.export_slots
    if slots.locked():
        raise ApiProblem(
            503,
            "exports-busy",
            "Too many exports are running",
            f"this server streams at most {EXPORTS_AT_ONCE} exports at once; retry in a moment",
            headers={"Retry-After": str(EXPORT_RETRY_AFTER)},
        )
    bundle = _bundle(api.services.pool, slots, customer_id, from_seq, now())
    try:
        # Started here, so that the slot it takes is given back however the answer ends
        # (an async generator once started is closed when dropped; one never started is not).
        header = await anext(bundle)
    except LookupError:
        raise NotFoundException(detail=f"customer {customer_id!r} has no ledger") from None
    suffix = "" if from_seq == 1 else f"-from-{from_seq}"
    return Stream(
        _after(header, bundle),
        media_type=NDJSON,
        headers={
            "Content-Disposition": f'attachment; filename="{customer_id}{suffix}.bundle.jsonl"',
            "Cache-Control": "no-store",
        },
    )


async def _bundle(
    pool: asyncpg.Pool,
    slots: asyncio.Semaphore,
    tenant: str,
    from_seq: int,
    exported_at: datetime,
) -> AsyncIterator[bytes]:
    """The bundle in chunks of about `CHUNK_BYTES`, the header line first, holding one of
    `slots` from its start to its end. A connection is held only to fix the end and to read
    each page, never while a chunk waits for the client."""
    await slots.acquire()  # free: checked by the caller, with nothing awaited since
    try:
        async with pool.acquire() as connection:
            end = await fix_export_end(connection, tenant, exported_at)
        yield end.header + b"\n"
        chunk: list[bytes] = []
        size = 0
        async for page in record_pages(pool.acquire, tenant, from_seq, end.through_seq):
            for line in page:
                chunk += (line, b"\n")
                size += len(line) + 1
                if size >= CHUNK_BYTES:
                    yield b"".join(chunk)
                    chunk, size = [], 0
        if chunk:
            yield b"".join(chunk)
    finally:
        slots.release()


async def _after(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


ROUTES: Final[list[Any]] = [list_signing_keys, signing_keys_jwks, get_receipt, export_ledger]
