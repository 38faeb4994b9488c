"""The operator's and auditor's command line: exit codes, one-line errors, both server paths."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner

from eventstore.db import apply_schema
from eventstore.store import EventStore, Metadata, NewEvent, StreamState
from tests.conftest import FreshDatabases, closed_port, invoke
from valueledger.cli import main
from valueledger.serve import event_loop_factory, http_parser

SAMPLE_BUNDLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "sample-bundle.jsonl"


async def _small_ledger(store: EventStore, tenant: str, meta: Metadata) -> None:
    for n in range(3):
        await store.append(
            f"{tenant}-acct",
            [NewEvent("Measured", {"value": f"{n}.50", "n": n})],
            StreamState.ANY,
            tenant,
            meta,
        )


async def test_export_verify_replay_round_trip(
    store: EventStore, tenant: str, meta: Metadata, env: dict[str, str | None], tmp_path: Path
) -> None:
    await _small_ledger(store, tenant, meta)
    bundle = tmp_path / "ledger.jsonl"
    exported = await invoke(["export", "--tenant", tenant, "-o", str(bundle)], env)
    assert exported.exit_code == 0, exported.output
    lines = bundle.read_bytes().splitlines()
    assert json.loads(lines[0])["tenant"] == tenant
    assert [json.loads(line)["seq"] for line in lines[1:]] == [1, 2, 3]

    checked = await invoke(["verify", "--bundle", str(bundle), "--json"], env)
    assert checked.exit_code == 0, checked.output
    report = json.loads(checked.output)
    assert (report["ok"], report["records"], report["trust"]) == (True, 3, "bundle")

    in_db = await invoke(["verify", "--tenant", tenant], env)
    assert in_db.exit_code == 0, in_db.output
    assert "OK: 3 records of 1 tenant(s)" in in_db.output
    assert "no --key given" in in_db.output

    replayed = await invoke(["replay", "--tenant", tenant, "--from-seq", "2"], env)
    assert replayed.exit_code == 0
    assert [json.loads(line)["seq"] for line in replayed.output.splitlines()] == [2, 3]

    partial = tmp_path / "partial.jsonl"
    await invoke(["export", "--tenant", tenant, "--from-seq", "2", "-o", str(partial)], env)
    assert (await invoke(["verify", "--bundle", str(partial)], env)).exit_code == 1
    assert (
        await invoke(["verify", "--bundle", str(partial), "--from-seq", "2"], env)
    ).exit_code == 0


async def test_verify_failure_exits_one_naming_tenant_and_seq(
    store: EventStore, tenant: str, meta: Metadata, env: dict[str, str | None], tmp_path: Path
) -> None:
    await _small_ledger(store, tenant, meta)
    bundle = tmp_path / "ledger.jsonl"
    await invoke(["export", "--tenant", tenant, "-o", str(bundle)], env)
    lines = bundle.read_text().splitlines()
    lines[2] = lines[2].replace('"value":"1.50"', '"value":"9.50"')
    bundle.write_text("\n".join(lines) + "\n")
    result = await invoke(["verify", "--bundle", str(bundle)], env)
    assert result.exit_code == 1
    assert f"tenant {tenant}, seq 2, line 3: hash mismatch" in result.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["verify", "--bundle", "/nonexistent/bundle.jsonl"], "does not exist"),
        (["export"], "Missing option '--tenant'"),
        (["export", "--tenant", "nobody-here"], "tenant 'nobody-here' has no ledger"),
        (["verify", "--tenant", "nobody-here"], "tenant 'nobody-here' has no ledger"),
        (["replay", "--tenant", "nobody-here"], "tenant 'nobody-here' has no ledger"),
        (["export", "--tenant", "x", "--from-seq", "0"], "0 is not in the range x>=1"),
        (["verify", "--key", "/nonexistent.pem"], "does not exist"),
        (["verify", "--jobs", "2"], "--jobs applies to a bundle"),
        (["verify", "--bundle", str(SAMPLE_BUNDLE), "--jobs", "0"], "0 is not in"),
    ],
)
def test_bad_input_is_one_line_and_exit_two(
    arguments: list[str], message: str, env: dict[str, str | None]
) -> None:
    result = CliRunner().invoke(main, arguments, env=env)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_key_file_that_is_not_a_key_is_one_line(
    env: dict[str, str | None], tmp_path: Path
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    result = CliRunner().invoke(main, ["verify", "--key", str(junk)], env=env)
    assert result.exit_code == 2
    assert result.output.startswith(f"valueledger: --key {junk}: not a PEM public key")


async def test_demo_against_no_api_names_it_without_its_secrets(
    main_server: FreshDatabases, key_folder: Path
) -> None:
    """The one-line error shows the API's URL so the operator can tell which one, but not the
    password or token it may carry."""
    env = {
        "DATABASE_URL": await main_server.create("demo_no_api"),
        "REDIS_URL": None,
        "VALUELEDGER_DATA_DIR": str(key_folder),
        "VALUELEDGER_SIGNING_KEY": str(key_folder / "signing-key.pem"),
    }
    port = closed_port()
    api = f"http://staff:hunter2@127.0.0.1:{port}/?access_token=s3cret-t0ken"
    result = await invoke(["demo", "--url", api], env)
    assert result.exit_code == 2, result.output
    assert f"no valueledger API answers at http://staff:***@127.0.0.1:{port}/" in result.output
    assert "hunter2" not in result.output
    assert "s3cret-t0ken" not in result.output


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none",
        "REDIS_URL": None,
        "VALUELEDGER_DATA_DIR": str(tmp_path),
    }
    result = CliRunner().invoke(main, ["verify"], env=env)
    assert result.exit_code == 2
    assert result.output.startswith("valueledger: ")
    assert len(result.output.strip().splitlines()) == 1


async def test_embedded_default_runs_migrate_and_verify_without_urls(scratch_folder: Path) -> None:
    tmp_path = scratch_folder
    env = {
        "DATABASE_URL": None,
        "REDIS_URL": None,
        "VALUELEDGER_SIGNING_KEY": None,
        "VALUELEDGER_DATA_DIR": str(tmp_path / "data"),
    }
    migrated = await invoke(["migrate"], env)
    assert migrated.exit_code == 0, migrated.output
    key = tmp_path / "data" / "signing-key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    verified = await invoke(["verify"], env)
    assert verified.exit_code == 0, verified.output
    assert "OK: 0 records of 0 tenant(s)" in verified.output


async def test_new_epoch_after_transaction_ids_reset(main_server: FreshDatabases) -> None:
    """A logical restore leaves rows whose tx_id is ahead of the new cluster's counter; applying
    the schema then opens a new epoch, so new rows still sort after the restored ones."""
    url = await main_server.create("epoch")
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            """
            INSERT INTO events (epoch, tx_id, tenant, seq, stream_id, version, type, canonical,
                                data, meta, recorded_at, prev_hash, hash, signature, key_id)
            VALUES (1, (pg_current_xact_id()::text::bigint + 1000000)::text::xid8, 'restored',
                    1, 'restored-s', 1, 'Restored', '\\x7b7d', '{}', '{}', now(),
                    repeat('0', 64), encode(sha256('\\x7b7d'::bytea), 'hex'), 'x', 'k')
            """
        )
        await apply_schema(url)
        epochs = await connection.fetch("SELECT epoch, reason FROM store_epochs ORDER BY epoch")
        assert [row["epoch"] for row in epochs] == [1, 2]
        assert "reset" in epochs[1]["reason"]
        await apply_schema(url)  # idempotent: no third epoch
        assert await connection.fetchval("SELECT max(epoch) FROM store_epochs") == 2
    finally:
        await connection.close()


def test_serve_runs_on_uvloop_and_httptools_where_installed() -> None:
    """`valueledger serve` picks libuv's loop and the C parser when they are there (they are
    dependencies on every platform uvloop is built for), which cut the server's CPU per
    request by about two fifths against asyncio's selector loop and h11."""
    assert http_parser() == "httptools"
    factory = event_loop_factory()
    assert factory is not None
    loop = factory()
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()


def test_offline_verify_loads_neither_driver_nor_web_stack() -> None:
    """An auditor's `verify --bundle` needs the verifier alone: loading the service's stack
    made every run start seconds late. Run in a fresh interpreter, so that nothing this test
    session imported counts."""
    repository = Path(__file__).resolve().parent.parent
    script = (
        "import sys\n"
        "from valueledger.cli import main\n"
        "try:\n"
        "    main(['verify', '--bundle', 'docs/examples/sample-bundle.jsonl',\n"
        "          '--key', 'docs/examples/sample-signing-key.pub.pem'])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "heavy = ('asyncpg', 'litestar', 'redis', 'httpx', 'uvicorn', 'jwt', 'projections')\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in heavy))\n"
    )
    ran = subprocess.run(  # noqa: S603 - our own interpreter, a fixed script
        [sys.executable, "-c", script], cwd=repository, capture_output=True, text=True, check=False
    )
    assert ran.returncode == 0, ran.stderr
    assert "OK: 6 records of 1 tenant(s) verified" in ran.stdout
    assert ran.stdout.strip().splitlines()[-1] == "[]"


def test_an_interrupted_verification_exits_130_not_as_a_verdict(tmp_path: Path) -> None:
    """Ctrl-C while verify waits for its bundle (a named pipe nobody writes yet): exit 130 and
    one line, never 1, which means "the ledger is wrong"."""
    fifo = tmp_path / "bundle.jsonl"
    os.mkfifo(fifo)
    verifier = subprocess.Popen(  # noqa: S603 - our own command line
        [
            sys.executable,
            "-c",
            "from valueledger.cli import main; main()",
            "verify",
            "--bundle",
            str(fifo),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    writer = None
    try:
        deadline = time.monotonic() + 60
        while writer is None:  # succeeds once the verifier has opened the pipe to read
            try:
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                assert verifier.poll() is None, verifier.communicate()
                assert time.monotonic() < deadline
                time.sleep(0.02)
        time.sleep(0.2)  # now blocked reading the header
        verifier.send_signal(signal.SIGINT)
        out, err = verifier.communicate(timeout=30)
    finally:
        if writer is not None:
            os.close(writer)
        verifier.kill()
    assert verifier.returncode == 130, (out, err)
    assert err == "valueledger: interrupted\n"


async def test_verify_of_a_tenant_without_ledger_is_a_usage_error_in_json_too(
    store: EventStore, tenant: str, meta: Metadata, env: dict[str, str | None]
) -> None:
    """A tenant asked for that has no ledger is a mistake in the request, said before anything
    is verified: not a ledger found wrong (exit 1, "chain head mismatch")."""
    await _small_ledger(store, tenant, meta)
    result = await invoke(["verify", "--tenant", tenant, "--tenant", "nobody-here", "--json"], env)
    assert result.exit_code == 2
    report = json.loads(result.stdout)
    assert (report["ok"], report["records"], report["failure"], report["trust"]) == (
        False,
        0,
        None,
        "database",
    )
    assert report["error"] == "tenant 'nobody-here' has no ledger"
    assert result.stderr == "valueledger: tenant 'nobody-here' has no ledger\n"
