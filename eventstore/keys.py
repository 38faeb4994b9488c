"""Signing keys: the private key lives in a PEM file, its public half in `signing_keys`.

A key is valid for records stamped in [created_at, retired_at). Rotation retires the current
key and registers the next one at the same instant, after every append signed by the old key
has committed (the table lock below), so validity windows tile time without gap or overlap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from eventstore.db import Connection
from eventstore.errors import SigningKeyError
from eventstore.receipts import MIN_RSA_BITS, key_id_of, public_key_pem

KEY_BITS = 2048


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key the store signs with, and the instant from which its signatures count."""

    private_key: rsa.RSAPrivateKey
    key_id: str
    valid_from: datetime


@dataclass(frozen=True, slots=True)
class RegisteredKey:
    key_id: str
    public_key: str
    created_at: datetime
    retired_at: datetime | None


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    """Read an unencrypted PEM RSA private key, or raise SigningKeyError saying what is wrong."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise SigningKeyError(f"signing key file {path} does not exist") from None
    except (ValueError, TypeError) as error:
        raise SigningKeyError(f"{path} is not a PEM private key ({error})") from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < MIN_RSA_BITS:
        raise SigningKeyError(f"signing key file {path} must hold an RSA key of >= 2048 bits")
    return key


def write_new_private_key(path: Path) -> rsa.RSAPrivateKey:
    """Generate an RSA-2048 key into `path` with mode 0600, replacing the file atomically."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".new")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)
    return key


async def list_keys(connection: Connection) -> list[RegisteredKey]:
    rows = await connection.fetch(
        "SELECT key_id, public_key, created_at, retired_at FROM signing_keys ORDER BY created_at"
    )
    return [RegisteredKey(**dict(row)) for row in rows]


async def register_first_key(connection: Connection, key: rsa.RSAPrivateKey) -> None:
    """Register `key` as current when the store has no current key yet (first start)."""
    key_id = key_id_of(key.public_key())
    await connection.execute(
        """
        INSERT INTO signing_keys (key_id, public_key)
        SELECT $1, $2 WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE retired_at IS NULL)
        ON CONFLICT DO NOTHING
        """,
        key_id,
        public_key_pem(key.public_key()),
    )


async def current_signing_key(connection: Connection, key: rsa.RSAPrivateKey) -> SigningKey:
    """The SigningKey for `key`, which must be the registered, unretired key."""
    key_id = key_id_of(key.public_key())
    row = await connection.fetchrow(
        "SELECT created_at, retired_at FROM signing_keys WHERE key_id = $1", key_id
    )
    if row is None:
        raise SigningKeyError(
            f"signing key {key_id} is not registered; another key is current. "
            "Register it with `valueledger keys rotate --from FILE`."
        )
    if row["retired_at"] is not None:
        raise SigningKeyError(
            f"signing key {key_id} was retired at {row['retired_at']:%Y-%m-%dT%H:%M:%SZ}; "
            "configure the current key (see `valueledger keys list`)."
        )
    return SigningKey(private_key=key, key_id=key_id, valid_from=row["created_at"])


async def rotate_key(connection: Connection, new_key: rsa.RSAPrivateKey) -> RegisteredKey:
    """Retire the current key and make `new_key` current, at one instant.

    The ACCESS EXCLUSIVE lock waits for every in-flight append (each holds ACCESS SHARE on
    signing_keys until it commits) and holds new ones back, so the retirement instant can be
    put after the last record the old key signed, whatever the appenders' clocks said.
    """
    key_id = key_id_of(new_key.public_key())
    async with connection.transaction():
        await connection.execute("LOCK TABLE signing_keys IN ACCESS EXCLUSIVE MODE")
        if await connection.fetchval("SELECT 1 FROM signing_keys WHERE key_id = $1", key_id):
            raise SigningKeyError(f"key {key_id} is already registered; rotate to a fresh key")
        instant = await connection.fetchval(
            """
            SELECT greatest(
                clock_timestamp(),
                (SELECT max(h.recorded_at) + interval '1 microsecond'
                   FROM chain_heads h JOIN signing_keys k USING (key_id)
                  WHERE k.retired_at IS NULL),
                (SELECT max(created_at) + interval '1 microsecond' FROM signing_keys)
            )
            """
        )
        await connection.execute(
            "UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL", instant
        )
        row = await connection.fetchrow(
            """
            INSERT INTO signing_keys (key_id, public_key, created_at) VALUES ($1, $2, $3)
            RETURNING key_id, public_key, created_at, retired_at
            """,
            key_id,
            public_key_pem(new_key.public_key()),
            instant,
        )
    assert row is not None  # noqa: S101 - INSERT ... RETURNING always yields the row
    return RegisteredKey(**dict(row))
