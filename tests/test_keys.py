"""Key rotation: retired keys keep verifying and can no longer sign; windows tile time."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner

from eventstore.errors import SigningKeyError
from eventstore.keys import (
    current_signing_key,
    list_keys,
    load_private_key,
    rotate_key,
    write_new_private_key,
)
from eventstore.store import EventStore, Metadata, NewEvent, StreamState
from eventstore.verify import KeyRing, verify_database
from tests.conftest import FreshDatabases, settings_for
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
