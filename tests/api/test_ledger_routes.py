"""Ledger routes over HTTP: receipts, public keys and streaming exports are the ledger's own
bytes, and what an auditor downloads verifies with the keys the API publishes."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
from datetime import UTC, datetime
from typing import Any

import httpx
from litestar import Litestar

from api.app import create_app
from api.auth import TokenService
from api.common import EXPORTS_AT_ONCE
from api.ledger_routes import CHUNK_BYTES
from domain.roles import Role
from eventstore.bundle import PAGE, export_bundle, record_line
from eventstore.canonical import canonical_json
from eventstore.db import create_pool
from eventstore.receipts import load_public_key_pem
from eventstore.store import Actor, EventStore, Metadata, NewEvent, StreamState
from eventstore.verify import BUNDLE_FORMAT, pinned_keyring, verify_bundle
from tests.api.conftest import bearer
from tests.api.test_customers import registration
from tests.conftest import client_address
from valueledger.services import Services

Client = httpx.AsyncClient


async def fill_ledger(services: Services, tenant: str, records: int) -> None:
    """`records` receipts of about half a kilobyte each, straight through the store."""
    meta = Metadata(actor=Actor(user="auditor-test", role="ADMIN"), correlation_id="fill")
    for start in range(0, records, 100):
        events = [
            NewEvent("Noted", {"n": n, "text": "x" * 400})
            for n in range(start, min(records, start + 100))
        ]
        await services.store.append(f"{tenant}:notes", events, StreamState.ANY, tenant, meta)


async def test_a_receipt_is_its_bundle_line_and_the_export_verifies(
    client: Client,
    staff: dict[str, str],
    tokens: TokenService,
    tenant: str,
    services: Services,
) -> None:
    assert (
        await client.post("/v1/customers", json=registration(tenant), headers=staff)
    ).status_code == 201
    await fill_ledger(services, tenant, 3)
    reader = bearer(tokens, "ann", tenant, Role.FINANCE)

    export = await client.get(f"/v1/customers/{tenant}/export", headers=reader)
    assert export.status_code == 200, export.text
    assert export.headers["content-type"].startswith("application/x-ndjson")
    assert "attachment" in export.headers["content-disposition"]
    lines = export.content.split(b"\n")
    assert lines[-1] == b""
    header, records = json.loads(lines[0]), lines[1:-1]
    assert header["format"] == BUNDLE_FORMAT
    assert header["tenant"] == tenant
    assert len(records) == 4

    receipt = await client.get(f"/v1/customers/{tenant}/receipts/2", headers=reader)
    assert receipt.status_code == 200
    assert receipt.headers["content-type"].startswith("application/json")
    assert receipt.content == records[1]
    assert receipt.headers["etag"] == f'"{json.loads(records[1])["hash"]}"'
    [event] = [event for event in await services.store.read_tenant(tenant) if event.seq == 2]
    assert receipt.content == record_line(
        event.canonical, event.hash, event.signature, event.key_id
    )

    # An auditor pins the keys the API publishes and verifies the download with them.
    published = (await client.get("/v1/keys")).json()["keys"]
    ring = pinned_keyring(key["public_key"].encode() for key in published)
    report = verify_bundle(io.BytesIO(export.content), ring)
    assert report.ok, report.failure
    assert report.records == 4
    assert report.trust == "pinned"

    partial = await client.get(f"/v1/customers/{tenant}/export?from_seq=3", headers=reader)
    assert partial.status_code == 200
    assert partial.content.split(b"\n")[1:-1] == records[2:]
    assert verify_bundle(io.BytesIO(partial.content), ring, first_seq=3).ok


async def test_receipts_and_exports_serve_only_the_tenant_and_vendor_staff(
    client: Client, staff: dict[str, str], tokens: TokenService, tenant: str, services: Services
) -> None:
    await fill_ledger(services, tenant, 1)
    stranger = bearer(tokens, "eve", "globex", Role.CUSTOMER_ADMIN)
    for path in (f"/v1/customers/{tenant}/receipts/1", f"/v1/customers/{tenant}/export"):
        assert (await client.get(path)).status_code == 401
        assert (await client.get(path, headers=stranger)).status_code == 404
        assert (await client.get(path, headers=staff)).status_code == 200
        own = bearer(tokens, "tom", tenant, Role.TECHNICAL)
        assert (await client.get(path, headers=own)).status_code == 200

    missing = await client.get(f"/v1/customers/{tenant}/receipts/2", headers=staff)
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    huge = await client.get(f"/v1/customers/{tenant}/receipts/{2**70}", headers=staff)
    assert huge.status_code == 400  # no seq can be that large: see test_parameter_bounds
    nothing = await client.get("/v1/customers/t-no-ledger/export", headers=staff)
    assert nothing.status_code == 404


def get_scope(path: str, headers: dict[str, str]) -> Any:
    """The ASGI scope of a GET of `path`."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")]
        + [(name.lower().encode(), value.encode()) for name, value in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


class Download:
    """A GET served to a client that reads the first `reads` body messages and then stops
    reading until `resume` (as one whose socket buffer is full: the app's send blocks there).
    Without `reads`, a client that reads everything."""

    def __init__(
        self, app: Litestar, path: str, headers: dict[str, str], reads: int | None = None
    ) -> None:
        self.sent: list[Any] = []
        self.stalled = asyncio.Event()
        """Set once the app waits for the client to read on."""
        self._reads = reads
        self._resumed = asyncio.Event()
        self._finished = asyncio.Event()
        self._requested = False
        self._answering = asyncio.create_task(
            app(get_scope(path, headers), self._receive, self._send)
        )

    async def _receive(self) -> Any:
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._finished.wait()  # as a server does, once the answer is complete
        return {"type": "http.disconnect"}

    async def _send(self, message: Any) -> None:
        if message["type"] == "http.response.body" and len(self.bodies()) == self._reads:
            self.stalled.set()
            await self._resumed.wait()
        self.sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            self._finished.set()

    def bodies(self) -> list[bytes]:
        return [message["body"] for message in self.sent[1:]]

    def resume(self) -> None:
        self._resumed.set()

    async def finished(self) -> list[bytes]:
        """The body's messages, once the app has answered 200."""
        await self._answering
        assert self.sent[0]["status"] == 200, self.sent
        return [body for body in self.bodies() if body]


async def body_messages(app: Litestar, path: str, headers: dict[str, str]) -> list[bytes]:
    """The body of a GET as the ASGI messages the app sent (httpx would join them)."""
    return await Download(app, path, headers).finished()


async def test_a_large_export_streams_in_chunks(
    services: Services, tokens: TokenService, staff: dict[str, str], tenant: str
) -> None:
    await fill_ledger(services, tenant, 600)
    app = create_app(services, tokens)
    chunks = await body_messages(app, f"/v1/customers/{tenant}/export", staff)
    assert len(chunks) >= 4
    assert max(len(chunk) for chunk in chunks) < 2 * CHUNK_BYTES
    content = b"".join(chunks)
    assert content.count(b"\n") == 601
    listed = json.loads(content.split(b"\n", 1)[0])["keys"]
    ring = pinned_keyring(key["public_key"].encode() for key in listed)
    report = verify_bundle(io.BytesIO(content), ring)
    assert report.ok, report.failure
    assert report.records == 600


async def test_exports_waiting_on_their_clients_hold_no_connection(
    services: Services,
    tokens: TokenService,
    staff: dict[str, str],
    tenant: str,
    database_url: str,
) -> None:
    """As many exports as a process streams at once, each stalled by a client that stopped
    reading, on a pool with no more connections than that: the rest of the API still gets
    a connection, one export more is refused (503), and each download, finished after more
    records were appended, is byte for byte the CLI's export of the chain as it stood."""
    await fill_ledger(services, tenant, PAGE + 100)  # more than one page
    pool = await create_pool(
        database_url, services.settings.db_role or None, min_size=1, max_size=EXPORTS_AT_ONCE
    )
    store = EventStore(pool, services.store.signing_key)
    app = create_app(dataclasses.replace(services, store=store), tokens)
    path = f"/v1/customers/{tenant}/export"
    downloads = [Download(app, path, staff, reads=1) for _ in range(EXPORTS_AT_ONCE)]
    try:
        for download in downloads:
            await download.stalled.wait()
        by_cli = io.BytesIO()
        async with services.pool.acquire() as connection:
            await export_bundle(connection, tenant, by_cli, datetime.now(UTC))
        await fill_ledger(services, tenant, 3)  # after every export fixed its end

        assert pool.get_size() - pool.get_idle_size() == 0  # none held for a stalled export
        peer = (client_address(), 123)
        transport = httpx.ASGITransport(app=app, client=peer)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            receipt = await client.get(f"/v1/customers/{tenant}/receipts/1", headers=staff)
            assert receipt.status_code == 200
            refused = await client.get(path, headers=staff)
            assert refused.status_code == 503
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert refused.json()["type"].endswith("/exports-busy")
            assert int(refused.headers["retry-after"]) > 0

            for download in downloads:
                download.resume()
            expected_header, expected_records = by_cli.getvalue().split(b"\n", 1)
            for download in downloads:
                header, records = b"".join(await download.finished()).split(b"\n", 1)
                assert records == expected_records
                # The same header but for when it was made.
                exported, expected = json.loads(header), json.loads(expected_header)
                assert exported | {"exported_at": None} == expected | {"exported_at": None}
                assert header == canonical_json(json.loads(header))

            # The slots are free again once the exports end.
            again = await client.get(path, headers=staff)
            assert again.status_code == 200
            assert again.content.count(b"\n") == PAGE + 100 + 3 + 1
    finally:
        for download in downloads:  # so that the pool can close after a failure
            download.resume()
        await asyncio.gather(*(download.finished() for download in downloads))
        await store.close()
        await pool.close()


async def test_the_public_keys_as_pem_and_jwks(client: Client, services: Services) -> None:
    key_id = services.store.signing_key.key_id
    listed = await client.get("/v1/keys")
    assert listed.status_code == 200
    assert "max-age" in listed.headers["cache-control"]
    [current] = [key for key in listed.json()["keys"] if key["key_id"] == key_id]
    assert current["public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    assert current["valid_until"] is None
    assert current["valid_from"].endswith("Z")

    jwks = await client.get("/v1/keys/jwks")
    assert jwks.status_code == 200
    [jwk] = [key for key in jwks.json()["keys"] if key["kid"] == key_id]
    assert (jwk["kty"], jwk["alg"], jwk["use"]) == ("RSA", "RS256", "sig")
    numbers = load_public_key_pem(current["public_key"]).public_numbers()

    def number(text: str) -> int:
        return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")

    assert number(jwk["n"]) == numbers.n
    assert number(jwk["e"]) == numbers.e == 65537
    assert jwk["e"] == "AQAB"
