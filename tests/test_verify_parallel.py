"""Bundle verification in worker processes gives the report one process gives.

The workers check batches of lines as chains of their own; the main process joins them. Any
bundle, tampered anywhere, must get the same verdict, first failure (reason, seq, line) and
count of good records whatever the batch size; the progress reported must add up to the same
bytes. The tampering suite (tests/test_tampering.py) runs each of its bundles both ways too.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import pytest
from click.testing import CliRunner
from hypothesis import example, given, settings
from hypothesis import strategies as st

from eventstore.canonical import canonical_json
from eventstore.verify import (
    BATCH_LINES,
    BUNDLE_FORMAT,
    MAX_NESTING,
    KeyRing,
    Report,
    _pools,
    pinned_keyring,
    verify_bundle,
)
from tests.vectors import make_examples
from valueledger.cli import main

TENANT: Final = "parallel-check"
RECORDS: Final = 24
_START: Final = datetime(2025, 3, 1, 9, tzinfo=UTC)


def _lines(records: int = RECORDS) -> tuple[bytes, list[bytes]]:
    key = make_examples.load_test_key()
    events = [
        make_examples.Event(
            f"acct-{index % 3}",
            "Measured",
            {"value": f"{index}.25", "n": index},
            {"actor": "auditor"},
            _START + timedelta(minutes=index),
        )
        for index in range(records)
    ]
    receipts = make_examples.build_chain(key, TENANT, events)
    header = canonical_json(
        {
            "format": BUNDLE_FORMAT,
            "tenant": TENANT,
            "exported_at": "2025-04-01T00:00:00.000000Z",
            "keys": [
                {
                    "key_id": receipts[0].key_id,
                    "public_key": make_examples.TEST_PUBLIC_KEY.read_text(),
                    "valid_from": "2025-01-01T00:00:00.000000Z",
                    "valid_until": None,
                }
            ],
        }
    )
    return header, [receipt.line() for receipt in receipts]


HEADER, LINES = _lines()


def _bundle(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in [HEADER, *lines])


def _changed(line: bytes, **members: Any) -> bytes:
    return canonical_json({**json.loads(line), **members})


TAMPERINGS: Final = (
    *("none", "data", "deleted", "swapped", "repeated"),
    *("signature", "tenant", "garbage", "blank"),
)


def _tampered(kind: str, at: int, other: int) -> list[bytes]:
    lines = list(LINES)
    if kind == "data":
        lines[at] = _changed(lines[at], data={"value": "9.99", "n": at})
    elif kind == "deleted":
        del lines[at]
    elif kind == "swapped":
        lines[at], lines[other] = lines[other], lines[at]
    elif kind == "repeated":
        lines.insert(at, lines[other])
    elif kind == "signature":
        record = json.loads(lines[at])
        signature = record["signature"]
        flipped = "A" if signature[0] != "A" else "B"
        lines[at] = _changed(lines[at], signature=flipped + signature[1:])
    elif kind == "tenant":
        lines[at] = _changed(lines[at], tenant="someone-else")
    elif kind == "garbage":
        lines[at] = b'{"seq": 1, oops'
    elif kind == "blank":
        lines[at] = b""
    return lines


def _both(raw: bytes, ring: KeyRing, batch_lines: int, first_seq: int = 1) -> Report:
    alone = verify_bundle(io.BytesIO(raw), ring, first_seq=first_seq)
    shared = verify_bundle(
        io.BytesIO(raw), ring, first_seq=first_seq, jobs=2, batch_lines=batch_lines
    )
    assert shared == alone
    return alone


@settings(max_examples=40, deadline=None, database=None)
@example(kind="deleted", at=RECORDS - 1, other=0, batch_lines=1, pinned=False)
@given(
    kind=st.sampled_from(TAMPERINGS),
    at=st.integers(0, RECORDS - 1),
    other=st.integers(0, RECORDS - 1),
    batch_lines=st.integers(1, 9),
    pinned=st.booleans(),
)
def test_workers_report_what_one_process_reports(
    kind: str, at: int, other: int, batch_lines: int, pinned: bool
) -> None:
    ring = pinned_keyring([make_examples.TEST_PUBLIC_KEY.read_bytes()]) if pinned else KeyRing()
    report = _both(_bundle(_tampered(kind, at, other)), ring, batch_lines)
    if kind == "none" or (kind == "swapped" and at == other):  # nothing changed
        assert report.ok, report.failure
        assert report.records == RECORDS
    elif kind == "deleted" and at == RECORDS - 1:
        # A bundle cut short is a shorter prefix of the chain (tests/test_tampering.py shows
        # it): only the ledger's head, in database mode, tells it from a whole one.
        assert report.ok, report.failure
        assert report.records == RECORDS - 1
    else:
        assert not report.ok


@pytest.mark.parametrize("batch_lines", [1, 4, 7])
@pytest.mark.parametrize("first_seq", [1, 5])
def test_a_partial_chain_is_anchored_on_its_first_record(batch_lines: int, first_seq: int) -> None:
    partial = _bundle(LINES[4:])
    report = _both(partial, KeyRing(), batch_lines, first_seq=first_seq)
    assert report.ok is (first_seq == 5)
    if first_seq == 1:
        assert report.failure is not None
        assert (report.failure.reason, report.failure.seq, report.failure.line) == (
            "missing seq",
            1,
            2,
        )


@pytest.mark.parametrize("jobs", [1, 2])
def test_progress_adds_up_to_the_records_bytes(jobs: int) -> None:
    raw = _bundle(LINES)
    seen: list[int] = []
    report = verify_bundle(io.BytesIO(raw), KeyRing(), seen.append, jobs=jobs, batch_lines=5)
    assert report.ok, report.failure
    assert sum(seen) == len(raw) - len(HEADER) - 1


def test_a_failure_before_an_unreadable_line_is_reported_first() -> None:
    lines = _tampered("data", 2, 0)
    lines[9] = b" " * (300 * 1024)
    report = _both(_bundle(lines), KeyRing(), batch_lines=3)
    assert report.failure is not None
    assert (report.failure.reason, report.failure.seq) == ("hash mismatch", 3)
    lines = list(LINES)
    lines[9] = b" " * (300 * 1024)
    report = _both(_bundle(lines), KeyRing(), batch_lines=3)
    assert report.failure is not None
    assert (report.failure.reason, report.failure.line, report.records) == (
        "line too long",
        11,
        9,
    )


def test_the_command_line_checks_in_worker_processes(tmp_path: Path) -> None:
    """More lines than one batch, so that `--jobs 2` starts its workers."""
    header, lines = _lines(BATCH_LINES + 40)
    bundle = tmp_path / "ledger.jsonl"
    bundle.write_bytes(b"".join(line + b"\n" for line in [header, *lines]))
    key = str(make_examples.TEST_PUBLIC_KEY)
    pinned = ["--key", key, "--jobs", "2"]
    checked = CliRunner().invoke(main, ["verify", "--bundle", str(bundle), *pinned])
    assert checked.exit_code == 0, checked.output
    assert f"OK: {BATCH_LINES + 40} records of 1 tenant(s) verified" in checked.output
    at = BATCH_LINES + 20
    lines[at - 1] = _changed(lines[at - 1], type="Forged")
    bundle.write_bytes(b"".join(line + b"\n" for line in [header, *lines]))
    for jobs in ("2", "1"):
        failed = CliRunner().invoke(main, ["verify", "--bundle", str(bundle), "--jobs", jobs])
        assert failed.exit_code == 1, failed.output
        assert f"FAILED after {at - 1} good records: tenant {TENANT}, seq {at}" in failed.output
        assert "hash mismatch" in failed.output


def test_a_worker_killed_midway_is_one_clear_error_and_the_next_run_recovers() -> None:
    raw = _bundle(LINES)
    assert verify_bundle(io.BytesIO(raw), KeyRing(), jobs=2, batch_lines=1).ok  # workers up
    workers = list(_pools[2]._processes.values())  # the executor's record of its workers
    assert len(workers) == 2

    def kill_the_workers(_consumed: int) -> None:
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signal.SIGKILL)

    with pytest.raises(ChildProcessError, match="worker process stopped unexpectedly"):
        verify_bundle(io.BytesIO(raw), KeyRing(), kill_the_workers, jobs=2, batch_lines=1)
    assert 2 not in _pools  # the broken pool is let go...
    report = verify_bundle(io.BytesIO(raw), KeyRing(), jobs=2, batch_lines=1)
    assert report.ok, report.failure  # ...and a new one serves the next verification
    assert report.records == RECORDS


def test_workers_are_forked_only_from_a_process_of_one_thread() -> None:
    """Forking copies every lock another thread might hold at that instant: a process with
    other threads gets its workers from a fork server instead."""
    raw = _bundle(LINES)
    release = threading.Event()
    other = threading.Thread(target=release.wait, daemon=True)
    other.start()
    try:
        for pool in list(_pools.values()):
            pool.shutdown()
        _pools.clear()
        assert verify_bundle(io.BytesIO(raw), KeyRing(), jobs=2, batch_lines=4).ok
        context = _pools[2]._mp_context
        assert context is not None
        assert context.get_start_method() == "forkserver"
    finally:
        release.set()
        other.join()
    # A fresh interpreter running one thread, as the command line does, forks its workers.
    script = (
        "import io, sys\n"
        "from eventstore.verify import KeyRing, _pools, verify_bundle\n"
        "report = verify_bundle(io.BytesIO(sys.stdin.buffer.read()), KeyRing(), jobs=2,\n"
        "                       batch_lines=4)\n"
        "print(report.ok, report.records, _pools[2]._mp_context.get_start_method())\n"
    )
    ran = subprocess.run(  # noqa: S603 - our own interpreter, a fixed script
        [sys.executable, "-c", script], input=raw, capture_output=True, check=False
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.decode().split() == ["True", str(RECORDS), "fork"]


def _nested(levels: int) -> bytes:
    """Record line 6 with its data nested `levels` arrays deep (the line: one level more)."""
    return LINES[5].replace(
        b'"data":{"n":5,"value":"5.25"}', b'"data":' + b"[" * levels + b"]" * levels
    )


@pytest.mark.parametrize(
    ("levels", "reason"),
    [
        (40, "invalid value"),
        (99, "invalid value"),
        (100, "malformed line"),
        (-40, "malformed line"),  # 40 levels short of the parser's limit, where it is called
        (5000, "malformed line"),
    ],
)
def test_a_deeply_nested_line_gets_one_verdict_wherever_it_is_parsed(
    levels: int, reason: str
) -> None:
    """The parser's own depth limit counts its caller's frames: a worker, the command line and a
    deep call stack would each judge a line nested near it differently. Nesting beyond
    MAX_NESTING is refused before parsing, the same everywhere."""
    if levels < 0:
        levels += sys.getrecursionlimit() - len(traceback.extract_stack())
    lines = list(LINES)
    lines[5] = _nested(levels)
    assert lines[5] != LINES[5]
    raw = _bundle(lines)
    shallow = _both(raw, KeyRing(), batch_lines=2)

    def from_deep_in_the_stack(frames: int) -> Report:
        if frames:
            return from_deep_in_the_stack(frames - 1)
        return verify_bundle(io.BytesIO(raw), KeyRing())

    spare = sys.getrecursionlimit() - len(traceback.extract_stack()) - MAX_NESTING - 60
    assert from_deep_in_the_stack(spare) == shallow
    assert shallow.failure is not None
    assert (shallow.failure.reason, shallow.failure.line, shallow.records) == (reason, 7, 5)


def test_workers_end_when_their_verifier_is_killed() -> None:
    """kill -9 (or the out-of-memory killer) gives the verifier no chance to stop its workers:
    they must not wait for work forever, holding its files and output open."""
    script = (
        "import io, sys, time\n"
        "from eventstore.verify import KeyRing, _pools, verify_bundle\n"
        "raw = sys.stdin.buffer.read()\n"
        "assert verify_bundle(io.BytesIO(raw), KeyRing(), jobs=2, batch_lines=4).ok\n"
        "print(*_pools[2]._processes, flush=True)\n"
        "time.sleep(120)\n"
    )
    verifier = subprocess.Popen(  # noqa: S603 - our own interpreter, a fixed script
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert verifier.stdin is not None
        assert verifier.stdout is not None
        verifier.stdin.write(_bundle(LINES))
        verifier.stdin.close()
        workers = [int(pid) for pid in verifier.stdout.readline().split()]
        assert len(workers) == 2
        assert all(_running(pid) for pid in workers)
        verifier.kill()
        verifier.wait()
        deadline = time.monotonic() + 20
        while any(_running(pid) for pid in workers):
            assert time.monotonic() < deadline, "the workers outlived their verifier"
            time.sleep(0.05)
    finally:
        verifier.kill()
        verifier.wait()
        if verifier.stdout is not None:
            verifier.stdout.close()


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped by whoever adopted it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_pool_broken_while_idle_is_replaced() -> None:
    raw = _bundle(LINES)
    assert verify_bundle(io.BytesIO(raw), KeyRing(), jobs=2, batch_lines=4).ok
    pool = _pools[2]
    for worker in list(pool._processes.values()):  # the executor's record of its workers
        if worker.pid is not None:
            os.kill(worker.pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while not pool._broken:  # set once the executor notices
        assert time.monotonic() < deadline, "the executor never noticed its dead workers"
        time.sleep(0.02)
    report = verify_bundle(io.BytesIO(raw), KeyRing(), jobs=2, batch_lines=4)
    assert report.ok, report.failure
    assert _pools[2] is not pool
