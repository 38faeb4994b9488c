"""The projectors' worker as a real process: a clean stop on SIGTERM, a SIGKILL in the middle
of the work, and two workers at once. In every case the receipts index ends up holding each
record of the ledger exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import pytest

from eventstore.store import EventStore, Metadata, NewEvent, StreamState
from projections.receipts import ReceiptsIndex
from projections.registry import PROJECTORS
from projections.runner import ProjectionRunner, lease_key
from tests.conftest import invoke

WORKER = Path(sys.executable).parent / "valueledger"


@pytest.fixture
def env(env: dict[str, str | None], redis_url: str) -> dict[str, str | None]:
    """The CLI's environment with this run's Redis. A worker these tests kill (SIGKILL) cannot
    stop an embedded Redis of its own, which would outlive the run."""
    return {**env, "REDIS_URL": redis_url}


@contextmanager
def worker(env: dict[str, str | None]) -> Iterator[subprocess.Popen[bytes]]:
    """`valueledger projectors` as its own process; killed at the end if still running."""
    environment = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    process = subprocess.Popen(  # noqa: S603 (our own console script)
        [str(WORKER), "projectors", "--only", "receipts"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdout.close()
        process.stderr.close()


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 60) -> None:
    """Wait until `check` holds (the worker works on its own clock)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "the worker did not get there"
        await asyncio.sleep(0.1)


async def _append(store: EventStore, tenant: str, meta: Metadata, count: int) -> None:
    await asyncio.gather(
        *(
            store.append(
                f"{tenant}:misc:{n % 7}",
                [NewEvent("Noted", {"n": n})],
                StreamState.ANY,
                tenant,
                meta,
            )
            for n in range(count)
        )
    )


async def _seqs(pool: asyncpg.Pool, tenant: str) -> list[int]:
    rows = await pool.fetch(
        "SELECT seq FROM read_models.receipts WHERE tenant = $1 ORDER BY seq", tenant
    )
    return [row["seq"] for row in rows]


async def _lease_holders(pool: asyncpg.Pool) -> int:
    key = lease_key(ReceiptsIndex())
    held: int = await pool.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND ((classid::bigint << 32) | objid::bigint) = $1",
        key,
    )
    return held


async def test_sigterm_stops_cleanly_with_the_checkpoint_saved(
    store: EventStore, tenant: str, meta: Metadata, env: dict[str, str | None]
) -> None:
    with worker(env) as process:
        await _append(store, tenant, meta, 50)

        async def all_projected() -> bool:
            return await _seqs(store.pool, tenant) == list(range(1, 51))

        await eventually(all_projected)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
        assert process.stderr is not None
        assert b"Traceback" not in process.stderr.read()
    checkpoint = await store.pool.fetchval(
        "SELECT position FROM subscription_checkpoints WHERE name = 'projection:receipts'"
    )
    last = await store.pool.fetchval("SELECT max(position) FROM events WHERE tenant = $1", tenant)
    assert checkpoint >= last


async def test_a_killed_worker_leaves_nothing_half_done(
    store: EventStore, tenant: str, meta: Metadata, env: dict[str, str | None]
) -> None:
    total = 3000
    with worker(env) as process:
        appending = asyncio.create_task(_append(store, tenant, meta, total))

        async def some_projected() -> bool:
            return len(await _seqs(store.pool, tenant)) > 0

        await eventually(some_projected)
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait, 30)
        await appending
    projected = await _seqs(store.pool, tenant)
    assert projected == list(range(1, len(projected) + 1))  # a prefix, never a gap
    with worker(env):

        async def all_projected() -> bool:
            return await _seqs(store.pool, tenant) == list(range(1, total + 1))

        await eventually(all_projected)


async def test_two_workers_share_the_work_without_doubling_it(
    store: EventStore, tenant: str, meta: Metadata, env: dict[str, str | None]
) -> None:
    with worker(env) as first, worker(env):
        await _append(store, tenant, meta, 200)

        async def all_projected() -> bool:
            return await _seqs(store.pool, tenant) == list(range(1, 201))

        await eventually(all_projected)

        async def one_lease() -> bool:
            return await _lease_holders(store.pool) == 1

        await eventually(one_lease)
        first.send_signal(signal.SIGKILL)  # whichever held the lease, the other goes on
        await asyncio.to_thread(first.wait, 30)
        await _append(store, tenant, meta, 100)

        async def the_rest_projected() -> bool:
            return await _seqs(store.pool, tenant) == list(range(1, 301))

        await eventually(the_rest_projected)


@pytest.fixture(autouse=True)
def _projectors_need_the_script() -> None:
    assert WORKER.exists(), f"{WORKER} is missing: run through `uv run pytest`"


async def test_replay_rebuilds_a_projection_from_the_command_line(
    store: EventStore, tenant: str, meta: Metadata, env: dict[str, str | None]
) -> None:
    await _append(store, tenant, meta, 5)
    rebuilt = await invoke(["replay", "--projection", "receipts"], env)
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "rebuilt receipts: read models now at" in rebuilt.output
    assert await _seqs(store.pool, tenant) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["replay"], "give exactly one of --tenant (print events) or --projection (rebuild)"),
        (
            ["replay", "--tenant", "x", "--projection", "all"],
            "give exactly one of --tenant (print events) or --projection (rebuild)",
        ),
        (["replay", "--projection", "nope"], "no projector 'nope'; choose one of"),
        (["projectors", "--only", "nope"], "no projector 'nope'; choose one of"),
    ],
)
async def test_projection_commands_refuse_bad_input_in_one_line(
    env: dict[str, str | None], arguments: list[str], message: str
) -> None:
    result = await invoke(arguments, env)
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith(f"valueledger: {message}")


async def test_projections_status_reports_each_projectors_lag(
    store: EventStore, tenant: str, meta: Metadata, env: dict[str, str | None]
) -> None:
    await ProjectionRunner(store.pool, ReceiptsIndex()).catch_up()
    await _append(store, tenant, meta, 4)
    shown = await invoke(["projections", "status", "--json"], env)
    assert shown.exit_code == 0, shown.output
    statuses = {status["name"]: status for status in json.loads(shown.output)}
    assert set(statuses) == {projector.name for projector in PROJECTORS}
    assert statuses["receipts"]["events_behind"] >= 4
    table = await invoke(["projections", "status"], env)
    assert table.exit_code == 0, table.output
    assert table.output.splitlines()[0].split()[:4] == [
        "projector",
        "checkpoint",
        "behind",
        "seconds",
    ]
