"""Ledger routes: receipts in the receipt format, public keys, streaming exports.

Everything here is the ledger's own bytes, as `docs/receipts.md` specifies them: a receipt is
the record's bundle line (`eventstore.bundle.record_line`), an export is the bundle
(`valueledger-bundle/1`) that `valueledger export` writes, and the keys are those an auditor
pins when verifying. Receipts and exports serve the customer's own users and vendor staff;
the public keys are public.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any, Final, cast

import msgspec
from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Stream

from api.auth import Principal
from api.common import ETAG, FirstSeq, ReceiptSeq, api_of, now
from api.openapi import problems
from eventstore.bundle import header_line, record_line, record_lines
from eventstore.keys import RegisteredKey, list_keys
from eventstore.receipts import format_timestamp, load_public_key_pem

NDJSON: Final = "application/x-ndjson"
CHUNK_BYTES: Final = 64 * 1024
"""An export is sent in chunks of about this size: few enough writes, small enough memory."""
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


@get(
    "/v1/customers/{customer_id:str}/export",
    summary="The customer's ledger as a bundle (valueledger-bundle/1), streamed",
    media_type=NDJSON,
    responses=problems((503,)),
)
async def export_ledger(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    from_seq: FirstSeq = 1,
) -> Stream:
    """The bundle `valueledger export` writes, for auditors: a header with every key, then
    every record from `from_seq` on, all read from one snapshot, page by page, so memory does
    not grow with the ledger. Verify it with `valueledger verify --bundle FILE --key KEY`."""
    del principal
    pool = api_of(request).services.pool
    # Chains are never removed, so this check cannot go stale before the snapshot is taken.
    if await pool.fetchval("SELECT 1 FROM chain_heads WHERE tenant = $1", customer_id) is None:
        raise NotFoundException(detail=f"customer {customer_id!r} has no ledger")
    exported_at = now()

    async def bundle() -> AsyncIterator[bytes]:
        async with (
            pool.acquire() as connection,
            connection.transaction(isolation="repeatable_read", readonly=True),
        ):
            chunk = [await header_line(connection, customer_id, exported_at), b"\n"]
            size = len(chunk[0])
            async for line in record_lines(connection, customer_id, from_seq):
                chunk += (line, b"\n")
                size += len(line) + 1
                if size >= CHUNK_BYTES:
                    yield b"".join(chunk)
                    chunk, size = [], 0
            if chunk:
                yield b"".join(chunk)

    suffix = "" if from_seq == 1 else f"-from-{from_seq}"
    return Stream(
        bundle(),
        media_type=NDJSON,
        headers={
            "Content-Disposition": f'attachment; filename="{customer_id}{suffix}.bundle.jsonl"',
            "Cache-Control": "no-store",
        },
    )


ROUTES: Final[list[Any]] = [list_signing_keys, signing_keys_jwks, get_receipt, export_ledger]
