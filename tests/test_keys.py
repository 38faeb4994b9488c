"""Key rotation: retired keys keep verifying and can no longer sign; windows tile time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner

from eventstore.errors import SigningKeyError
from eventstore.keys import (
    SigningKey,
    current_signing_key,
    list_keys,
    load_private_key,
    rotate_key,
    write_new_private_key,
)
from eventstore.receipts import key_id_of
from eventstore.store import EventStore, Metadata, NewEvent, StreamState
from eventstore.verify import KeyRing, verify_database
from tests.conftest import FreshDatabases, invoke, lock_waiters, settings_for
from valueledger.bootstrap import open_store
from valueledger.cli import main


@pytest.fixture
async def rotation_db(main_server: FreshDatabases, request: pytest.FixtureRequest) -> str:
    """A database of its own: rotating the key of the shared one would retire the key that
    every other test's store signs with."""
    return await main_server.create(f"keys_{request.node.name[-20:].lower()}")


async def test_rotation_under_a_running_store(
    rotation_db: str, tmp_path: Path, meta: Metadata
) -> None:
    write_new_private_key(tmp_path / "signing-key.pem")
    settings = settings_for(rotation_db, tmp_path)
    async with open_store(settings, rotation_db) as store:
        before = await store.append("acct-1", [NewEvent("A", {})], StreamState.ANY, "t1", meta)
        old_key = store.signing_key
        new_private = write_new_private_key(tmp_path / "signing-key.pem")
        connection = await asyncpg.connect(rotation_db)
        try:
            await rotate_key(connection, new_private)
            after = await store.append("acct-1", [NewEvent("B", {})], StreamState.ANY, "t1", meta)
            assert before[0].key_id == old_key.key_id
            assert after[0].key_id != old_key.key_id  # the store reloaded the rotated key file
            keys = await list_keys(connection)
            assert [k.retired_at is None for k in keys] == [False, True]
            assert keys[0].retired_at == keys[1].created_at  # windows tile, no gap
            assert before[0].recorded_at < keys[0].retired_at <= after[0].recorded_at
            report = await verify_database(connection, KeyRing())
            assert report.ok, report.failure
            assert report.records == 2
        finally:
            await connection.close()
        # A store that cannot reload is told plainly that its key is retired.
        stuck = EventStore(store.pool, old_key)
        try:
            with pytest.raises(SigningKeyError, match="retired"):
                await stuck.append("acct-1", [NewEvent("C", {})], StreamState.ANY, "t1", meta)
        finally:
            await stuck.close()
        connection = await asyncpg.connect(rotation_db)
        try:
            with pytest.raises(SigningKeyError, match="retired"):
                await current_signing_key(connection, old_key.private_key)
        finally:
            await connection.close()


def test_cli_keys_rotate_and_list(rotation_db: str, tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"DATABASE_URL": rotation_db, "VALUELEDGER_DATA_DIR": str(tmp_path)}
    assert runner.invoke(main, ["migrate"], env=env).exit_code == 0
    first = load_private_key(tmp_path / "signing-key.pem")
    assert (tmp_path / "signing-key.pem").stat().st_mode & 0o777 == 0o600
    rotated = runner.invoke(main, ["keys", "rotate"], env=env)
    assert rotated.exit_code == 0, rotated.output
    second = load_private_key(tmp_path / "signing-key.pem")
    assert second.private_numbers() != first.private_numbers()
    listed = runner.invoke(main, ["keys", "list"], env=env)
    lines = listed.output.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("Z")
    assert "current" not in lines[0]
    assert lines[1].endswith("to current")


async def test_a_store_reloading_before_the_key_file_is_replaced_waits_for_it(
    rotation_db: str, tmp_path: Path, meta: Metadata
) -> None:
    """A rotation registers the new key and replaces the key file in two steps: a store that
    finds its key retired and reloads in between reads the retired key, and must wait for the
    new file rather than fail its appends."""
    target = tmp_path / "signing-key.pem"
    write_new_private_key(target)
    async with open_store(settings_for(rotation_db, tmp_path), rotation_db) as store:
        await store.append("acct-1", [NewEvent("A", {})], StreamState.ANY, "t1", meta)
        new_private = write_new_private_key(tmp_path / "signing-key.pem.next")
        connection = await asyncpg.connect(rotation_db)
        try:
            new_key_id = (await rotate_key(connection, new_private)).key_id
        finally:
            await connection.close()
        reloading = asyncio.Event()

        async def reload_key_file() -> SigningKey:
            private = load_private_key(target)
            reloading.set()
            async with store.pool.acquire() as session:
                return await current_signing_key(session, private)

        reloader = EventStore(store.pool, store.signing_key, reload_key=reload_key_file)
        try:
            append = asyncio.create_task(
                reloader.append("acct-1", [NewEvent("B", {})], StreamState.ANY, "t1", meta)
            )
            await reloading.wait()  # it found its key retired, and the file still holds it
            (tmp_path / "signing-key.pem.next").replace(target)
            [recorded] = await append
        finally:
            await reloader.close()
        assert recorded.key_id == new_key_id
        connection = await asyncpg.connect(rotation_db)
        try:
            report = await verify_database(connection, KeyRing())
        finally:
            await connection.close()
        assert report.ok, report.failure
        assert report.records == 2


async def test_cli_rotation_puts_the_new_key_file_in_place_before_registering_it(
    rotation_db: str, tmp_path: Path
) -> None:
    """Once the database has the new key current, the key file must already hold it: so the
    command replaces the file first. Seen while the registration waits for the signing keys'
    lock: the file holds the new key, not yet registered."""
    env: dict[str, str | None] = {
        "DATABASE_URL": rotation_db,
        "VALUELEDGER_DATA_DIR": str(tmp_path),
    }
    assert (await invoke(["migrate"], env)).exit_code == 0
    first = key_id_of(load_private_key(tmp_path / "signing-key.pem").public_key())
    holder = await asyncpg.connect(rotation_db)
    try:
        async with holder.transaction():
            await holder.execute("LOCK TABLE signing_keys IN ACCESS SHARE MODE")
            rotation = asyncio.create_task(invoke(["keys", "rotate"], env))
            await lock_waiters(holder, 1)
            staged = key_id_of(load_private_key(tmp_path / "signing-key.pem").public_key())
            assert staged != first
            registered = await holder.fetch("SELECT key_id FROM signing_keys")
            assert [row["key_id"] for row in registered] == [first]
        rotated = await rotation
    finally:
        await holder.close()
    assert rotated.exit_code == 0, rotated.output
    assert rotated.output == f"current key is now {staged}\n"
    leftovers = [tmp_path / "signing-key.pem.next", tmp_path / "signing-key.pem.previous"]
    assert not any(path.exists() for path in leftovers)


async def test_appends_racing_cli_rotations_all_go_in(
    rotation_db: str, tmp_path: Path, meta: Metadata
) -> None:
    """Six writers append while `valueledger keys rotate` runs three times: no append fails,
    and the chains verify across the keys."""
    write_new_private_key(tmp_path / "signing-key.pem")
    env: dict[str, str | None] = {
        "DATABASE_URL": rotation_db,
        "VALUELEDGER_DATA_DIR": str(tmp_path),
        "VALUELEDGER_SIGNING_KEY": str(tmp_path / "signing-key.pem"),
    }
    async with open_store(settings_for(rotation_db, tmp_path), rotation_db) as store:
        rotating = True
        appended = 0

        async def writer(number: int) -> None:
            nonlocal appended
            while rotating:
                await store.append(
                    f"acct-{number}", [NewEvent("A", {"n": number})], StreamState.ANY, "t1", meta
                )
                appended += 1

        writers = [asyncio.create_task(writer(number)) for number in range(6)]
        try:
            for _ in range(3):
                rotated = await invoke(["keys", "rotate"], env)
                assert rotated.exit_code == 0, rotated.output
        finally:
            rotating = False
            await asyncio.gather(*writers)
        assert appended > 0
    connection = await asyncpg.connect(rotation_db)
    try:
        report = await verify_database(connection, KeyRing())
        assert len(await list_keys(connection)) == 4
    finally:
        await connection.close()
    assert report.ok, report.failure
    assert report.records == appended
