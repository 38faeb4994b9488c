"""The API against the real services: PostgreSQL, Redis, the store and the projectors."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec
import pytest

from api.app import create_app
from api.auth import VENDOR, TokenService
from api.staff import add_vendor_staff
from domain.roles import Role
from tests.conftest import client_address, settings_for
from valueledger.services import Services, open_services


@pytest.fixture(scope="session")
async def services(
    database_url: str, redis_url: str, key_folder: Path, cache_prefix: str
) -> AsyncIterator[Services]:
    settings = msgspec.structs.replace(
        settings_for(database_url, key_folder), redis_url=redis_url, cache_prefix=cache_prefix
    )
    async with open_services(settings, database_url, redis_url) as opened:
        yield opened


@pytest.fixture(scope="session")
def tokens(services: Services, cache_prefix: str) -> TokenService:
    return TokenService(
        secrets.token_bytes(32), services.redis, cache_prefix, reads=services.request_redis
    )


@pytest.fixture
async def client(services: Services, tokens: TokenService) -> AsyncIterator[httpx.AsyncClient]:
    """The app served in this event loop (the services' pools belong to it)."""
    # A peer address of its own per test, so the per-address rate limit never couples tests.
    peer = (client_address(), 123)
    transport = httpx.ASGITransport(app=create_app(services, tokens), client=peer)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as test_client:
        yield test_client


def bearer(tokens: TokenService, user: str, tenant: str, role: Role) -> dict[str, str]:
    token, _ = tokens.issue(user, tenant, role, datetime.now(UTC))
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def staff(services: Services, tokens: TokenService) -> dict[str, str]:
    """Headers of a vendor staff member (ADMIN), listed as current vendor staff."""
    await add_vendor_staff(services.pool, "staff-1")
    return bearer(tokens, "staff-1", VENDOR, Role.ADMIN)
