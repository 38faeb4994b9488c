"""Sealing personal data before it reaches the ledger, and forgetting a person (crypto-shredding).

The ledger can never be rewritten, so a name or an e-mail address written into it in clear could
never be erased. Instead each person (a *subject*: a user id, or a role such as the billing
contact of a customer) gets their own AES-256-GCM key in `person_keys`, outside the ledger, and
every personal field is stored sealed with it. Forgetting a person deletes their keys: their
sealed fields can no longer be opened and read as erased, while the event bytes, their hashes
and signatures (and so every chain) stay exactly as they were.

Sealed text: ``pii:v1:<key id>:<base64url(nonce || ciphertext || tag)>`` (no padding). The nonce
is 12 random bytes; the associated data binds the ciphertext to its tenant and key, so a sealed
value moved to another customer or relabelled with another key does not open. The format is in
docs/personal-data.md with a test vector.
"""

from __future__ import annotations

import base64
import os
import re
import uuid
from collections.abc import Iterable
from typing import Final

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SEALED_PREFIX: Final = "pii:v1:"
ERASED: Final = "[erased]"
"""What a sealed field reads as once its person was forgotten."""

_NONCE_BYTES: Final = 12
_SEALED: Final = re.compile(
    r"pii:v1:(?P<key>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
    r":(?P<box>[A-Za-z0-9_-]+)"
)
_KEY_OF_SUBJECT: Final = "SELECT key_id, secret FROM person_keys WHERE tenant = $1 AND subject = $2"
MAX_PLAINTEXT_BYTES: Final = 14_000
"""UTF-8 bytes of personal text one field may hold: sealed, the longest (a ticket's body) stays
within the 20,000 characters the domain accepts for a sealed field."""


class PersonalDataError(ValueError):
    """A value cannot be sealed or opened: the message says which and why."""


def associated_data(tenant: str, key_id: str) -> bytes:
    """What a sealed value is bound to besides its key: the format, the tenant and the key id."""
    return f"valueledger-pii-v1\x00{tenant}\x00{key_id}".encode()


def seal_with(tenant: str, key_id: str, secret: bytes, text: str, nonce: bytes) -> str:
    """The sealed form of `text` under one key; `nonce` must never repeat for the key."""
    box = AESGCM(secret).encrypt(nonce, text.encode(), associated_data(tenant, key_id))
    encoded = base64.urlsafe_b64encode(nonce + box).rstrip(b"=").decode("ascii")
    return f"{SEALED_PREFIX}{key_id}:{encoded}"


def open_with(tenant: str, sealed: str, secret: bytes) -> str:
    """The text inside `sealed`; PersonalDataError if it was not sealed with this key."""
    match = _SEALED.fullmatch(sealed)
    if match is None:
        raise PersonalDataError("not a sealed value (expected pii:v1:<key id>:<data>)")
    raw = base64.urlsafe_b64decode(match["box"] + "=" * (-len(match["box"]) % 4))
    try:
        plain = AESGCM(secret).decrypt(
            raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], associated_data(tenant, match["key"])
        )
    except (InvalidTag, ValueError) as error:
        raise PersonalDataError(
            f"sealed value under key {match['key']} does not open for tenant {tenant!r}: "
            "it was altered, or sealed for another customer"
        ) from error
    return plain.decode()


def sealing_key_of(sealed: str) -> str | None:
    """The key id a sealed value names, or None when the value is not sealed."""
    match = _SEALED.fullmatch(sealed)
    return None if match is None else match["key"]


class PersonalDataVault:
    """Seals, opens and forgets personal data, with keys kept in the `person_keys` table.

    Keys are read from the database on every call, never cached in the process, so that once
    `forget` has committed no process of the service can open the person's data again.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def seal(self, tenant: str, subject: str, text: str) -> str:
        """`text` sealed with the subject's key in `tenant`, creating the key on first use."""
        if not subject.strip():
            raise PersonalDataError("personal data needs the person it is about (a subject)")
        size = len(text.encode())
        if size > MAX_PLAINTEXT_BYTES:
            raise PersonalDataError(
                f"personal text is {size} bytes in UTF-8; at most {MAX_PLAINTEXT_BYTES} are kept"
            )
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(_KEY_OF_SUBJECT, tenant, subject)
            if row is None:
                # Two first seals racing: one insert wins, the other reads the winner's key.
                row = await connection.fetchrow(
                    "INSERT INTO person_keys (key_id, tenant, subject, secret)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT (tenant, subject) DO NOTHING"
                    " RETURNING key_id, secret",
                    uuid.uuid4(),
                    tenant,
                    subject,
                    AESGCM.generate_key(bit_length=256),
                ) or await connection.fetchrow(_KEY_OF_SUBJECT, tenant, subject)
        if row is None:
            raise PersonalDataError(f"the key of {subject!r} was forgotten while sealing; retry")
        nonce = os.urandom(_NONCE_BYTES)
        return seal_with(tenant, str(row["key_id"]), bytes(row["secret"]), text, nonce)

    async def open(self, tenant: str, values: Iterable[str]) -> dict[str, str]:
        """Each sealed value opened, or `ERASED` where its person was forgotten.

        One query for all the values' keys, so a screen full of names costs one round trip.
        """
        wanted = {value: sealing_key_of(value) for value in values}
        if None in wanted.values():
            raise PersonalDataError("a value to open is not sealed (expected pii:v1:...)")
        key_ids = sorted({uuid.UUID(key) for key in wanted.values() if key is not None})
        rows = await self._pool.fetch(
            "SELECT key_id, secret FROM person_keys WHERE tenant = $1 AND key_id = ANY($2)",
            tenant,
            key_ids,
        )
        secrets = {str(row["key_id"]): bytes(row["secret"]) for row in rows}
        opened: dict[str, str] = {}
        for value, key in wanted.items():
            secret = secrets.get(key or "")
            opened[value] = ERASED if secret is None else open_with(tenant, value, secret)
        return opened

    async def forget(self, subject: str, *, tenant: str | None, reason: str) -> int:
        """Delete the subject's keys (in one tenant, or in every tenant) and record that it was
        done; returns how many keys were erased. Forgetting someone twice erases nothing more."""
        if not reason.strip():
            raise PersonalDataError("say why the person is forgotten (a reason is recorded)")
        async with self._pool.acquire() as connection, connection.transaction():
            erased = await connection.fetch(
                "DELETE FROM person_keys WHERE subject = $1 AND ($2::text IS NULL OR tenant = $2)"
                " RETURNING tenant",
                subject,
                tenant,
            )
            tenants = sorted({row["tenant"] for row in erased} | ({tenant} if tenant else set()))
            await connection.executemany(
                "INSERT INTO forgotten_people (tenant, subject, keys_erased, reason)"
                " VALUES ($1, $2, $3, $4)",
                [
                    (name, subject, sum(row["tenant"] == name for row in erased), reason)
                    for name in tenants
                ],
            )
        return len(erased)
