"""Local credentials, kept outside the ledger: vendor staff and the password hashes of local users.

A password hash is a secret that must be replaceable and erasable, so it never enters the
append-only ledger. Who holds which role does not live here: a customer user's role is read
from their customer's account at each login; vendor staff are the rows of `vendor_staff` that
are not revoked (tables in schema.sql). Hashing runs in a thread: scrypt is deliberately slow
and would otherwise stall every other request on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime
from typing import Final

import asyncpg

from api.auth import VENDOR, hash_password, new_password, password_matches
from eventstore.db import Connection

FIRST_ADMIN: Final = "admin"
"""The user id of the vendor staff member `valueledger serve` makes on a new installation."""


@functools.cache
def _dummy_hash() -> str:
    """A hash no password is known to match: checked when a user has no credential, so an
    unknown user costs the same time as a wrong password and cannot be told apart by it."""
    return hash_password(new_password())


async def create_first_admin(pool: asyncpg.Pool) -> tuple[str, str] | None:
    """Make vendor staff member "admin" with a random one-time password if there has never
    been any vendor staff, and return (user, password) this once; None otherwise.

    Safe when several processes start together: only the one whose row goes in gets a password
    to show, the others see the conflict and return None.
    """
    if await pool.fetchval("SELECT EXISTS (SELECT 1 FROM vendor_staff)"):
        return None
    password = new_password()
    digest = await asyncio.to_thread(hash_password, password)
    async with pool.acquire() as connection, connection.transaction():
        created = await connection.fetchval(
            "INSERT INTO vendor_staff (user_id) SELECT $1"
            " WHERE NOT EXISTS (SELECT 1 FROM vendor_staff)"
            " ON CONFLICT (user_id) DO NOTHING RETURNING user_id",
            FIRST_ADMIN,
        )
        if created is None:
            return None
        await _store_hash(connection, VENDOR, FIRST_ADMIN, digest, datetime.now(UTC))
    return FIRST_ADMIN, password


async def add_vendor_staff(pool: asyncpg.Pool, user_id: str) -> None:
    """Make `user_id` vendor staff (ADMIN of every tenant), or make them so again."""
    await pool.execute(
        "INSERT INTO vendor_staff (user_id) VALUES ($1)"
        " ON CONFLICT (user_id) DO UPDATE SET revoked_at = NULL",
        user_id,
    )


async def revoke_vendor_staff(pool: asyncpg.Pool, user_id: str) -> bool:
    """Take `user_id` off the vendor staff and drop their password; whether they were on it.
    The caller also revokes their tokens (`TokenService.revoke_user(VENDOR, user_id, now)`)."""
    async with pool.acquire() as connection, connection.transaction():
        revoked = await connection.fetchval(
            "UPDATE vendor_staff SET revoked_at = clock_timestamp()"
            " WHERE user_id = $1 AND revoked_at IS NULL RETURNING user_id",
            user_id,
        )
        await connection.execute(
            "DELETE FROM login_credentials WHERE tenant = $1 AND user_id = $2", VENDOR, user_id
        )
    return revoked is not None


async def current_vendor_staff(pool: asyncpg.Pool) -> frozenset[str]:
    """The user ids of today's vendor staff (revoked members left out)."""
    rows = await pool.fetch("SELECT user_id FROM vendor_staff WHERE revoked_at IS NULL")
    return frozenset(row["user_id"] for row in rows)


async def is_vendor_staff(pool: asyncpg.Pool, user_id: str) -> bool:
    """Whether `user_id` is vendor staff now."""
    found: bool = await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM vendor_staff WHERE user_id = $1 AND revoked_at IS NULL)",
        user_id,
    )
    return found


async def set_password(
    pool: asyncpg.Pool, tenant: str, user_id: str, password: str, *, at: datetime | None = None
) -> None:
    """Give the user of `tenant` (VENDOR for vendor staff) this password, replacing any other.

    `at` (default: now, by this process's clock, the one that stamps the ledger's invitations)
    is when the credential was made: `check_login` refuses a credential older than the user's
    current invitation, so a re-invited user id never inherits an earlier person's password.
    """
    digest = await asyncio.to_thread(hash_password, password)
    async with pool.acquire() as connection:
        await _store_hash(connection, tenant, user_id, digest, at or datetime.now(UTC))


async def forget_password(pool: asyncpg.Pool, tenant: str, user_id: str) -> None:
    """Drop the user's credential (their access was revoked): nothing of it is kept."""
    await pool.execute(
        "DELETE FROM login_credentials WHERE tenant = $1 AND user_id = $2", tenant, user_id
    )


async def check_login(
    pool: asyncpg.Pool,
    tenant: str,
    user_id: str,
    password: str,
    *,
    not_before: datetime | None = None,
) -> bool:
    """Whether `password` is the user's, by a credential made at or after `not_before` (the
    user's current invitation, when known). Always hashes once, against a dummy when there is
    no credential, so the answer takes as long for an unknown user as for a wrong password."""
    row = await pool.fetchrow(
        "SELECT password_hash, created_at FROM login_credentials"
        " WHERE tenant = $1 AND user_id = $2",
        tenant,
        user_id,
    )
    stored: str | None = None if row is None else row["password_hash"]
    matches = await asyncio.to_thread(_matches, password, stored)
    if row is None or not matches:
        return False
    return not_before is None or row["created_at"] >= not_before


def _matches(password: str, stored: str | None) -> bool:
    if stored is None:
        password_matches(password, _dummy_hash())
        return False
    return password_matches(password, stored)


async def _store_hash(
    connection: Connection,
    tenant: str,
    user_id: str,
    digest: str,
    at: datetime,
) -> None:
    await connection.execute(
        "INSERT INTO login_credentials (tenant, user_id, password_hash, created_at)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (tenant, user_id)"
        " DO UPDATE SET password_hash = EXCLUDED.password_hash, created_at = EXCLUDED.created_at",
        tenant,
        user_id,
        digest,
        at,
    )
