"""Tampering is caught, at the first affected seq, with the right reason.

Property-based: random small ledgers over several tenants are built with the real store, then
exactly one change is made, either to an exported bundle (offline verification) or to the
events table itself (as a superuser with the append-only triggers disabled). The verifier must
name the tenant and the first seq the change affects; untouched ledgers must verify.
Hostile bundles (malformed JSON Lines of every kind) must fail cleanly and never raise.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import io
import json
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path as FilePath
from typing import Any, Final

import asyncpg
import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore.bundle import export_bundle, record_line
from eventstore.canonical import MAX_SAFE_INTEGER, canonical_json
from eventstore.keys import load_private_key
from eventstore.receipts import (
    PROOF_MEMBERS,
    canonical_bytes,
    covered_record,
    format_timestamp,
    key_id_of,
    parse_timestamp,
    public_key_pem,
    record_hash,
    sign_hash,
)
from eventstore.store import Actor, EventStore, Metadata, NewEvent, StreamState
from eventstore.verify import (
    MAX_LINE_BYTES,
    KeyRing,
    Report,
    pinned_keyring,
    verify_bundle,
    verify_database,
)
from tests.conftest import FreshDatabases, settings_for
from tests.vectors import make_examples
from valueledger.bootstrap import open_store

# ----------------------------------------------------------------------------- strategies

# NUL is left out: PostgreSQL's jsonb cannot hold U+0000, and these tests are about tampering.
_TEXT: Final = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=10)
_DECIMALS: Final = st.decimals(
    min_value=-(10**15), max_value=10**15, places=4, allow_nan=False, allow_infinity=False
).map(str)
_SCALARS: Final = (
    st.none() | st.booleans() | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER) | _DECIMALS | _TEXT
)
JSON_VALUES: Final[st.SearchStrategy[Any]] = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_TEXT, children, max_size=3),
    max_leaves=8,
)
EVENT_TYPES: Final = st.from_regex(r"[A-Za-z][A-Za-z0-9_.]{0,15}", fullmatch=True)
METAS: Final = st.builds(
    Metadata,
    actor=st.builds(Actor, user=_TEXT, role=st.sampled_from(["ADMIN", "USER", "AUDITOR"])),
    correlation_id=st.none() | _TEXT,
    causation_id=st.none() | _TEXT,
    trace_id=st.none() | _TEXT,
)


@dataclass(frozen=True)
class AppendSpec:
    stream: int
    events: list[tuple[str, Any]]
    meta: Metadata


APPENDS: Final = st.builds(
    AppendSpec,
    stream=st.integers(0, 2),
    events=st.lists(st.tuples(EVENT_TYPES, JSON_VALUES), min_size=1, max_size=3),
    meta=METAS,
)


@dataclass(frozen=True)
class LedgerSpec:
    """The appends of the tenant under test (at least 3 records) and of its neighbours."""

    target: list[AppendSpec]
    neighbours: list[list[AppendSpec]]


LEDGERS: Final = st.builds(
    LedgerSpec,
    target=st.lists(APPENDS, min_size=3, max_size=5),
    neighbours=st.lists(st.lists(APPENDS, min_size=1, max_size=3), min_size=1, max_size=2),
)

PROPERTY: Final = settings(
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DATABASE_PROPERTY: Final = settings(PROPERTY, max_examples=6)

# ----------------------------------------------------------------------------- helpers


def new_tenant() -> str:
    return f"t-{secrets.token_hex(6)}"


@dataclass(frozen=True)
class Built:
    tenant: str
    neighbours: list[str]
    records: int


async def build(store: EventStore, spec: LedgerSpec) -> Built:
    """Append the ledger through the real store; tenants are written concurrently."""
    tenant = new_tenant()
    neighbours = [new_tenant() for _ in spec.neighbours]

    async def write(name: str, appends: list[AppendSpec]) -> None:
        for append in appends:
            await store.append(
                f"{name}:s{append.stream}",
                [NewEvent(kind, data) for kind, data in append.events],
                StreamState.ANY,
                name,
                append.meta,
            )

    await asyncio.gather(
        write(tenant, spec.target),
        *(write(name, appends) for name, appends in zip(neighbours, spec.neighbours, strict=True)),
    )
    return Built(tenant, neighbours, sum(len(a.events) for a in spec.target))


def verify_both(raw: bytes, ring: KeyRing) -> Report:
    """The report of one process, once worker processes have given the same one, checking
    batches of one to three lines, so that the edges between batches fall anywhere."""
    alone = verify_bundle(io.BytesIO(raw), ring)
    shared = verify_bundle(io.BytesIO(raw), ring, jobs=2, batch_lines=1 + len(raw) % 3)
    assert shared == alone
    return alone


async def export(store: EventStore, tenant: str) -> bytes:
    out = io.BytesIO()
    async with store.pool.acquire() as connection:
        await export_bundle(connection, tenant, out, datetime.now(UTC))
    return out.getvalue()


@dataclass
class Bundle:
    """An exported bundle as objects, to edit and write back in the exporter's (JCS) form."""

    header: dict[str, Any]
    records: list[dict[str, Any]]

    @classmethod
    def parse(cls, raw: bytes) -> Bundle:
        lines = raw.split(b"\n")
        assert lines[-1] == b""
        bundle = cls(json.loads(lines[0]), [json.loads(line) for line in lines[1:-1]])
        assert bundle.encode() == raw  # the editor itself changes nothing
        return bundle

    def encode(self) -> bytes:
        return b"".join(canonical_json(item) + b"\n" for item in [self.header, *self.records])

    def verify(self, ring: KeyRing | None = None) -> Report:
        return verify_both(self.encode(), ring if ring is not None else KeyRing())

    def genuine_keys(self) -> list[bytes]:
        return [str(entry["public_key"]).encode() for entry in self.header["keys"]]


Path = tuple[str | int, ...]


def node_paths(value: Any, prefix: Path = ()) -> Iterator[Path]:
    """Every node of a JSON value (the root included), as paths of member names and indexes."""
    yield prefix
    if isinstance(value, dict):
        for name, child in value.items():
            yield from node_paths(child, (*prefix, name))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from node_paths(child, (*prefix, index))


def value_at(value: Any, path: Path) -> Any:
    for step in path:
        value = value[step]
    return value


def replaced(value: Any, path: Path, new: Any) -> Any:
    if not path:
        return new
    result = copy.deepcopy(value)
    parent = value_at(result, path[:-1])
    parent[path[-1]] = new
    return result


def change_somewhere(data: st.DataObject, value: Any) -> Any:
    """`value` with one node (drawn at random) replaced by a JSON value of different text."""
    path = data.draw(st.sampled_from(list(node_paths(value))), label="path")
    old = canonical_json(value_at(value, path))
    new = data.draw(JSON_VALUES.filter(lambda v: canonical_json(v) != old), label="new value")
    changed = replaced(value, path, new)
    assert canonical_json(changed) != canonical_json(value)
    return changed


def resign_from(
    records: list[dict[str, Any]], start: int, key: rsa.RSAPrivateKey
) -> list[dict[str, Any]]:
    """Records `start`.. re-hashed, re-linked and re-signed with `key`: a consistent forgery."""
    key_id = key_id_of(key.public_key())
    forged = list(records[:start])
    prev_hash = records[start]["prev_hash"]
    for record in records[start:]:
        covered = covered_record(
            tenant=record["tenant"],
            seq=record["seq"],
            stream=record["stream"],
            version=record["version"],
            type=record["type"],
            data=record["data"],
            meta=record["meta"],
            recorded_at=parse_timestamp(record["recorded_at"]),
            prev_hash=prev_hash,
        )
        canonical = canonical_bytes(covered)
        digest = record_hash(canonical)
        forged.append(json.loads(record_line(canonical, digest, sign_hash(key, digest), key_id)))
        prev_hash = digest
    return forged


def assert_caught(report: Report, tenant: str, seq: int, reason: str) -> None:
    assert not report.ok, "the change was not detected"
    failure = report.failure
    assert failure is not None
    assert (failure.reason, failure.tenant, failure.seq) == (reason, tenant, seq), (
        failure.describe()
    )


def assert_caught_in_bundle(report: Report, tenant: str, seq: int, reason: str) -> None:
    assert_caught(report, tenant, seq, reason)
    assert report.failure is not None
    assert report.failure.line == seq + 1  # line 1 is the header
    assert report.records == seq - 1  # every record before the first affected one is good


@pytest.fixture(scope="session")
def foreign_key() -> rsa.RSAPrivateKey:
    """A key the ledger never registered: what a forger would sign with."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# ----------------------------------------------------------------------------- bundles


@PROPERTY
@given(ledger=LEDGERS)
async def test_untouched_bundle_verifies(store: EventStore, ledger: LedgerSpec) -> None:
    built = await build(store, ledger)
    bundle = Bundle.parse(await export(store, built.tenant))
    report = bundle.verify()
    assert report.ok, report.failure
    assert (report.records, report.tenants, report.trust) == (
        built.records,
        [built.tenant],
        "bundle",
    )
    pinned = bundle.verify(pinned_keyring(bundle.genuine_keys()))
    assert pinned.ok, pinned.failure
    assert pinned.trust == "pinned"
    for neighbour in built.neighbours:
        assert Bundle.parse(await export(store, neighbour)).verify().ok


@PROPERTY
@given(ledger=LEDGERS, data=st.data())
async def test_bundle_changed_data_is_caught(
    store: EventStore, ledger: LedgerSpec, data: st.DataObject
) -> None:
    built = await build(store, ledger)
    bundle = Bundle.parse(await export(store, built.tenant))
    index = data.draw(st.integers(0, built.records - 1), label="record")
    bundle.records[index]["data"] = change_somewhere(data, bundle.records[index]["data"])
    assert_caught_in_bundle(bundle.verify(), built.tenant, index + 1, "hash mismatch")


@PROPERTY
@given(ledger=LEDGERS, data=st.data())
async def test_bundle_changed_meta_is_caught(
    store: EventStore, ledger: LedgerSpec, data: st.DataObject
) -> None:
    built = await build(store, ledger)
    bundle = Bundle.parse(await export(store, built.tenant))
    index = data.draw(st.integers(0, built.records - 1), label="record")
    bundle.records[index]["meta"] = change_somewhere(data, bundle.records[index]["meta"])
    assert_caught_in_bundle(bundle.verify(), built.tenant, index + 1, "hash mismatch")


@PROPERTY
@given(ledger=LEDGERS, data=st.data())
async def test_bundle_changed_type_is_caught(
    store: EventStore, ledger: LedgerSpec, data: st.DataObject
) -> None:
    built = await build(store, ledger)
    bundle = Bundle.parse(await export(store, built.tenant))
    index = data.draw(st.integers(0, built.records - 1), label="record")
    old = bundle.records[index]["type"]
    bundle.records[index]["type"] = data.draw(
        EVENT_TYPES.filter(lambda kind: kind != old), label="type"
    )
    assert_caught_in_bundle(bundle.verify(), built.tenant, index + 1, "hash mismatch")


@PROPERTY
@given(ledger=LEDGERS, data=st.data())
async def test_bundle_changed_recorded_at_is_caught(
    store: EventStore, ledger: LedgerSpec, data: st.DataObject
) -> None:
    built = await build(store, ledger)
    bundle = Bundle.parse(await export(store, built.tenant))
    index = data.draw(st.integers(0, built.records - 1), label="record")
    shift = data.draw(
        st.integers(-(10**12), 10**12).filter(bool).map(lambda n: timedelta(microseconds=n)),
        label="shift",
    )
    record = bundle.records[index]
    record["recorded_at"] = format_timestamp(parse_timestamp(record["recorded_at"]) + shift)
    assert_caught_in_bundle(bundle.verify(), built.tenant, index + 1, "hash mismatch")


@PROPERTY
@given(ledger=LEDGERS, data=st.data())
async def test_bundle_deleted_middle_record_is_caught_at_its_seq(
    store: EventStore, ledger: LedgerSpec, data: st.DataObject
) -> None:
    built = await build(store, ledger)
    bundle = Bundle.parse(await export(store, built.tenant))
    index = data.draw(st.integers(1, built.records - 2), label="deleted record")
    del bundle.records[index]
    assert_caught_in_bundle(bundle.verify(), built.tenant, index + 1, "missing seq")


@pytest.mark.parametrize("change", ["delete seq 1", "swap seq 1 and 2"])
async def test_bundle_that_lost_its_first_record_is_caught(
    store: EventStore, meta: Metadata, change: str
) -> None:
    """A full export (seq 1 onwards) whose first record was removed or moved must not pass as
    a partial export: the verifier has to notice that seq 1 is not where it belongs."""
    tenant = new_tenant()
    for number in range(3):
        await store.append(
            f"{tenant}:s", [NewEvent("A", {"n": number})], StreamState.ANY, tenant, meta
        )
    bundle = Bundle.parse(await export(store, tenant))
    if change == "delete seq 1":
        del bundle.records[0]
    else:
        bundle.records[0], bundle.records[1] = bundle.records[1], bundle.records[0]
    assert_caught_in_bundle(bundle.verify(), tenant, 1, "missing seq")


@PROPERTY
@given(ledger=LEDGERS, data=st.data())
async def test_bundle_deleted_tail_verifies_as_a_shorter_prefix(
    store: EventStore, ledger: LedgerSpec, data: st.DataObject
) -> None:
    """The documented limit: a bundle cannot show records missing after its last line."""
    built = await build(store, ledger)
    bundle = Bundle.parse(await export(store, built.tenant))
    kept = data.draw(st.integers(1, built.records - 1), label="records kept")
    del bundle.records[kept:]
    report = bundle.verify()
    assert report.ok, report.failure
    assert report.records == kept


@PROPERTY
@given(ledger=LEDGERS, data=st.data())
async def test_bundle_swapped_records_are_caught_at_the_lower_seq(
    store: EventStore, ledger: LedgerSpec, data: st.DataObject
) -> None:
    built = await build(store, ledger)
    bundle = Bundle.parse(await export(store, built.tenant))
    # Moving seq 1 itself is covered by test_bundle_that_lost_its_first_record_is_caught.
    first = data.draw(st.integers(1, built.records - 2), label="first")
    second = data.draw(st.integers(first + 1, built.records - 1), label="second")
    records = bundle.records
    records[first], records[second] = records[second], records[first]
    assert_caught_in_bundle(bundle.verify(), built.tenant, first + 1, "missing seq")


@PROPERTY
@given(ledger=LEDGERS, data=st.data())
async def test_bundle_altered_signature_is_caught(
    store: EventStore, ledger: LedgerSpec, data: st.DataObject
) -> None:
    built = await build(store, ledger)
    bundle = Bundle.parse(await export(store, built.tenant))
    index = data.draw(st.integers(0, built.records - 1), label="record")
    signature = bytearray(base64.b64decode(bundle.records[index]["signature"]))
    byte = data.draw(st.integers(0, len(signature) - 1), label="byte")
    signature[byte] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    bundle.records[index]["signature"] = base64.b64encode(bytes(signature)).decode()
    assert_caught_in_bundle(bundle.verify(), built.tenant, index + 1, "bad signature")


@PROPERTY
@given(ledger=LEDGERS, data=st.data())
async def test_bundle_resigned_with_an_unlisted_key_is_caught(
    store: EventStore, ledger: LedgerSpec, data: st.DataObject, foreign_key: rsa.RSAPrivateKey
) -> None:
    built = await build(store, ledger)
    bundle = Bundle.parse(await export(store, built.tenant))
    index = data.draw(st.integers(0, built.records - 1), label="record")
    bundle.records[index]["data"] = change_somewhere(data, bundle.records[index]["data"])
    bundle.records = resign_from(bundle.records, index, foreign_key)
    assert_caught_in_bundle(bundle.verify(), built.tenant, index + 1, "unknown key")


@PROPERTY
@given(ledger=LEDGERS, data=st.data())
async def test_bundle_resigned_with_a_listed_foreign_key_fails_only_against_a_pin(
    store: EventStore, ledger: LedgerSpec, data: st.DataObject, foreign_key: rsa.RSAPrivateKey
) -> None:
    built = await build(store, ledger)
    bundle = Bundle.parse(await export(store, built.tenant))
    genuine = bundle.genuine_keys()
    index = data.draw(st.integers(0, built.records - 1), label="record")
    bundle.records[index]["data"] = change_somewhere(data, bundle.records[index]["data"])
    bundle.records = resign_from(bundle.records, index, foreign_key)
    bundle.header["keys"].append(
        {
            "key_id": key_id_of(foreign_key.public_key()),
            "public_key": public_key_pem(foreign_key.public_key()),
            "valid_from": "2000-01-01T00:00:00.000000Z",
            "valid_until": None,
        }
    )
    # Trusting the bundle's own key list, the forgery is consistent: that is why auditors pin.
    unpinned = bundle.verify()
    assert unpinned.ok, unpinned.failure
    assert unpinned.trust == "bundle"
    assert_caught_in_bundle(
        bundle.verify(pinned_keyring(genuine)), built.tenant, index + 1, "untrusted key"
    )


# ----------------------------------------------------------------------------- hostile bundles


@dataclass(frozen=True)
class Genuine:
    tenant: str
    header: bytes
    lines: list[bytes]  # record lines, seq 1, 2, 3

    def with_line(self, index: int, line: bytes) -> bytes:
        lines = list(self.lines)
        lines[index] = line
        return b"\n".join([self.header, *lines]) + b"\n"

    def record(self, index: int) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.lines[index])
        return parsed


@pytest.fixture(scope="module")
async def genuine(store: EventStore) -> Genuine:
    tenant = new_tenant()
    meta = Metadata(actor=Actor(user="auditor-fixture", role="ADMIN"))
    for number in range(3):
        await store.append(
            f"{tenant}:s",
            [NewEvent("Paid", {"amount": "10.50", "n": number, "note": "abc"})],
            StreamState.ANY,
            tenant,
            meta,
        )
    header, *lines = (await export(store, tenant)).splitlines()
    assert verify_both(b"\n".join([header, *lines]) + b"\n", KeyRing()).ok
    return Genuine(tenant, header, lines)


def _loose(record: dict[str, Any]) -> bytes:
    """JSON as a lenient writer would spell it (floats, NaN...), not as the exporter does."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()


def _with(genuine: Genuine, **members: Any) -> dict[str, Any]:
    return {**genuine.record(1), **members}


def _without(genuine: Genuine, name: str) -> dict[str, Any]:
    record = genuine.record(1)
    del record[name]
    return record


HOSTILE_LINES: Final[dict[str, tuple[Callable[[Genuine], bytes], str]]] = {
    # name: (function of the genuine bundle giving line 3 (seq 2), expected reason)
    "duplicate member, same value": (lambda g: g.lines[1][:-1] + b',"seq":2}', "malformed line"),
    "duplicate member, other value": (
        lambda g: g.lines[1].replace(b'"data":', b'"data":{"amount":"9999.00"},"data":', 1),
        "malformed line",
    ),
    "float in data": (lambda g: _loose(_with(g, data={"amount": 10.5})), "malformed line"),
    "float seq": (lambda g: _loose(_with(g, seq=2.0)), "malformed line"),
    "NaN": (lambda g: _loose(_with(g, data=float("nan"))), "malformed line"),
    "Infinity": (lambda g: _loose(_with(g, data=float("inf"))), "malformed line"),
    "10 MB line": (
        lambda g: b'{"data":"' + b"x" * (10 * 1024 * 1024) + b'"}',
        "line too long",
    ),
    "invalid UTF-8": (lambda g: g.lines[1].replace(b"abc", b"a\xffc", 1), "malformed line"),
    "overlong UTF-8": (lambda g: g.lines[1].replace(b"abc", b"a\xc0\xafc", 1), "malformed line"),
    "lone surrogate in a member name": (
        lambda g: g.lines[1].replace(b'"note":', b'"\\ud800 x":', 1),
        "invalid value",
    ),
    "lone surrogate": (lambda g: g.lines[1].replace(b"abc", b"a\\ud800c", 1), "invalid value"),
    "JSON array": (lambda g: b"[" + g.lines[1] + b"]", "malformed line"),
    "JSON string": (lambda g: b'"hello"', "malformed line"),
    "not JSON": (lambda g: g.lines[1][:-1], "malformed line"),
    "blank line": (lambda g: b"", "malformed line"),
    "nested too deeply": (lambda g: b"[" * 100_000 + b"]" * 100_000, "malformed line"),
    "unknown member": (lambda g: canonical_json(_with(g, extra=1)), "unknown member"),
    "missing member": (lambda g: canonical_json(_without(g, "signature")), "missing member"),
    "boolean seq": (lambda g: canonical_json(_with(g, seq=True)), "bad member"),
    "huge integer": (
        lambda g: g.lines[1].replace(b'"n":1', b'"n":1' + b"0" * 5000, 1),
        "malformed line",
    ),
    "unsafe integer": (
        lambda g: _loose(_with(g, data={"amount": 2**53})),
        "invalid value",
    ),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_LINES))
def test_hostile_record_line_fails_cleanly(genuine: Genuine, kind: str) -> None:
    make, reason = HOSTILE_LINES[kind]
    raw = genuine.with_line(1, make(genuine))
    report = verify_both(raw, KeyRing())
    assert not report.ok
    assert report.failure is not None
    assert report.failure.reason == reason, report.failure.describe()
    assert report.failure.line == 3
    assert report.failure.tenant in {genuine.tenant, None}
    assert report.records == 1
    assert len(report.failure.describe()) < 1000


def _header(genuine: Genuine, **members: Any) -> bytes:
    header = {**json.loads(genuine.header), **members}
    return canonical_json(header)


HOSTILE_STARTS: Final[dict[str, Callable[[Genuine], bytes]]] = {
    "empty file": lambda g: b"",
    "wrong format": lambda g: _header(g, format="valueledger-bundle/2") + b"\n",
    "header is an array": lambda g: b"[]\n",
    "header missing keys": lambda g: (
        canonical_json({k: v for k, v in json.loads(g.header).items() if k != "keys"}) + b"\n"
    ),
    "header with unknown member": lambda g: _header(g, extra=1) + b"\n",
    "header with float": lambda g: g.header.replace(b'"keys":', b'"x":1.5,"keys":', 1) + b"\n",
    "header with duplicate": lambda g: g.header[:-1] + b',"tenant":"other"}\n',
    "header invalid UTF-8": lambda g: g.header.replace(b'"tenant":"', b'"tenant":"\xff', 1) + b"\n",
    "header of 10 MB": lambda g: b'{"format":"' + b"x" * (10 * 1024 * 1024) + b'"}\n',
    "header key with a wrong id": lambda g: (
        _header(
            g,
            keys=[{**entry, "key_id": "0" * 64} for entry in json.loads(g.header)["keys"]],
        )
        + b"\n"
    ),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_STARTS))
def test_hostile_header_fails_cleanly(genuine: Genuine, kind: str) -> None:
    start: bytes = HOSTILE_STARTS[kind](genuine)
    raw = start + b"".join(line + b"\n" for line in genuine.lines)
    report = verify_both(raw, KeyRing())
    assert not report.ok
    assert report.failure is not None
    assert report.failure.reason == "bad header", report.failure.describe()
    assert report.failure.line == 1
    assert report.records == 0


def test_line_just_over_the_limit_is_refused_unread(genuine: Genuine) -> None:
    raw = genuine.with_line(0, b" " * MAX_LINE_BYTES + b"x")
    report = verify_both(raw, KeyRing())
    assert report.failure is not None
    assert (report.failure.reason, report.failure.line) == ("line too long", 2)


@settings(max_examples=60, deadline=None, database=None)
@given(garbage=st.binary(max_size=300) | st.text(max_size=100).map(str.encode))
def test_random_bytes_as_a_record_line_never_raise(genuine: Genuine, garbage: bytes) -> None:
    report = verify_both(genuine.with_line(1, garbage), KeyRing())
    assert not report.ok
    assert report.failure is not None
    assert report.failure.line == 3


@settings(max_examples=60, deadline=None, database=None)
@given(data=st.data())
def test_random_byte_flip_in_a_genuine_bundle_never_raises(
    data: st.DataObject, genuine_raw: bytes
) -> None:
    raw = bytearray(genuine_raw)
    where = data.draw(st.integers(0, len(raw) - 1), label="where")
    raw[where] = data.draw(st.integers(0, 255).filter(lambda b: b != raw[where]), label="byte")
    report = verify_both(bytes(raw), KeyRing())
    assert isinstance(report, Report)
    if report.ok:
        # Only bytes no check covers may change unseen: the header's export instant, or
        # base64 padding bits of a signature. Never a covered member.
        assert report.records == len(genuine_raw.splitlines()) - 1


@pytest.fixture(scope="module")
def genuine_raw(genuine: Genuine) -> bytes:
    return b"\n".join([genuine.header, *genuine.lines]) + b"\n"


# ----------------------------------------------------------------------------- the database


@pytest.fixture(scope="module")
async def database_url(main_server: FreshDatabases) -> str:
    """A database of this module's own: the records it tampers with (as the superuser, every
    trigger off) would otherwise be read by other tests' projectors, which read every tenant
    and stop at a record that does not decode."""
    return await main_server.create("tampering")


@pytest.fixture(scope="module")
async def store(database_url: str, key_folder: FilePath) -> AsyncIterator[EventStore]:
    async with open_store(settings_for(database_url, key_folder), database_url) as opened:
        yield opened


@asynccontextmanager
async def superuser(database_url: str) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


async def tamper(database_url: str, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """Run `statements` in one transaction as the superuser, with every trigger disabled."""
    async with superuser(database_url) as connection, connection.transaction():
        await connection.execute("SET LOCAL session_replication_role = replica")
        for sql, arguments in statements:
            status = await connection.execute(sql, *arguments)
            assert not status.endswith(" 0"), f"{sql!r} touched no row"


async def verify_tenant(store: EventStore, built: Built, ring: KeyRing | None = None) -> Report:
    """Verify the neighbours (untouched) first, then the tampered tenant."""
    async with store.pool.acquire() as connection:
        report = await verify_database(
            connection,
            ring if ring is not None else KeyRing(),
            tenants=[*built.neighbours, built.tenant],
        )
    if report.failure is not None:
        assert report.tenants == [*built.neighbours, built.tenant]
    return report


async def assert_caught_in_database(
    store: EventStore, built: Built, seq: int, reason: str, ring: KeyRing | None = None
) -> None:
    """Caught at `seq` after the neighbours verified; and, the tenant verified alone, with the
    records before `seq`, and no other, counted good."""
    assert_caught(await verify_tenant(store, built, ring), built.tenant, seq, reason)
    async with store.pool.acquire() as connection:
        alone = await verify_database(
            connection, ring if ring is not None else KeyRing(), tenants=[built.tenant]
        )
    assert_caught(alone, built.tenant, seq, reason)
    assert alone.records == seq - 1


async def genuine_pems(store: EventStore) -> list[bytes]:
    rows = await store.pool.fetch("SELECT public_key FROM signing_keys")
    return [str(row["public_key"]).encode() for row in rows]


async def stored_record(store: EventStore, tenant: str, seq: int) -> dict[str, Any]:
    canonical = await store.pool.fetchval(
        "SELECT canonical FROM events WHERE tenant = $1 AND seq = $2", tenant, seq
    )
    record: dict[str, Any] = json.loads(bytes(canonical))
    return record


@DATABASE_PROPERTY
@given(ledger=LEDGERS)
async def test_untouched_database_verifies(store: EventStore, ledger: LedgerSpec) -> None:
    built = await build(store, ledger)
    report = await verify_tenant(store, built)
    assert report.ok, report.failure
    assert report.trust == "database"
    pinned = await verify_tenant(store, built, pinned_keyring(await genuine_pems(store)))
    assert pinned.ok, pinned.failure


@DATABASE_PROPERTY
@given(ledger=LEDGERS, data=st.data())
async def test_database_changed_canonical_with_matching_hash_fails_the_signature(
    store: EventStore, database_url: str, ledger: LedgerSpec, data: st.DataObject
) -> None:
    built = await build(store, ledger)
    seq = data.draw(st.integers(1, built.records), label="seq")
    record = await stored_record(store, built.tenant, seq)
    record["data"] = change_somewhere(data, record["data"])
    canonical = canonical_bytes(record)
    await tamper(
        database_url,
        (
            "UPDATE events SET canonical = $3, hash = $4, data = $5::jsonb"
            " WHERE tenant = $1 AND seq = $2",
            (
                built.tenant,
                seq,
                canonical,
                record_hash(canonical),
                canonical_json(record["data"]).decode(),
            ),
        ),
    )
    assert_caught(await verify_tenant(store, built), built.tenant, seq, "bad signature")


@DATABASE_PROPERTY
@given(ledger=LEDGERS, data=st.data())
async def test_database_changed_data_copy_is_caught(
    store: EventStore, database_url: str, ledger: LedgerSpec, data: st.DataObject
) -> None:
    built = await build(store, ledger)
    seq = data.draw(st.integers(1, built.records), label="seq")
    record = await stored_record(store, built.tenant, seq)
    copy_of_data = change_somewhere(data, record["data"])
    await tamper(
        database_url,
        (
            "UPDATE events SET data = $3::jsonb WHERE tenant = $1 AND seq = $2",
            (built.tenant, seq, canonical_json(copy_of_data).decode()),
        ),
    )
    await assert_caught_in_database(store, built, seq, "copy mismatch")


async def rewrite_signed(
    database_url: str, tenant: str, seq: int, record: dict[str, Any], **columns: Any
) -> None:
    """Replace the signed bytes of (tenant, seq) by `record`'s, their hash (the table checks
    that one) and the named columns with them, so that the row agrees with itself: only the
    signature tells."""
    assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(columns, start=4))
    await tamper(
        database_url,
        (
            f"UPDATE events SET canonical = $3, hash = encode(sha256($3), 'hex'), {assignments}"
            " WHERE tenant = $1 AND seq = $2",
            (tenant, seq, canonical_bytes(record), *columns.values()),
        ),
    )


@DATABASE_PROPERTY
@given(ledger=LEDGERS, data=st.data())
async def test_database_changed_meta_is_caught(
    store: EventStore, database_url: str, ledger: LedgerSpec, data: st.DataObject
) -> None:
    built = await build(store, ledger)
    seq = data.draw(st.integers(1, built.records), label="seq")
    record = await stored_record(store, built.tenant, seq)
    record["meta"] = change_somewhere(data, record["meta"])
    meta_copy = canonical_json(record["meta"]).decode()
    await rewrite_signed(database_url, built.tenant, seq, record, meta=meta_copy)
    await assert_caught_in_database(store, built, seq, "bad signature")


@DATABASE_PROPERTY
@given(ledger=LEDGERS, data=st.data())
async def test_database_changed_type_is_caught(
    store: EventStore, database_url: str, ledger: LedgerSpec, data: st.DataObject
) -> None:
    built = await build(store, ledger)
    seq = data.draw(st.integers(1, built.records), label="seq")
    record = await stored_record(store, built.tenant, seq)
    old = record["type"]
    record["type"] = data.draw(EVENT_TYPES.filter(lambda kind: kind != old), label="type")
    await rewrite_signed(database_url, built.tenant, seq, record, type=record["type"])
    await assert_caught_in_database(store, built, seq, "bad signature")


@DATABASE_PROPERTY
@given(ledger=LEDGERS, data=st.data())
async def test_database_changed_recorded_at_is_caught(
    store: EventStore, database_url: str, ledger: LedgerSpec, data: st.DataObject
) -> None:
    built = await build(store, ledger)
    seq = data.draw(st.integers(1, built.records), label="seq")
    record = await stored_record(store, built.tenant, seq)
    # Later, not earlier: earlier than the key's creation is caught first as outside its
    # validity (the database's key is as young as the ledger).
    shift = data.draw(
        st.integers(1, 10**12).map(lambda n: timedelta(microseconds=n)), label="shift"
    )
    moment = parse_timestamp(record["recorded_at"]) + shift
    record["recorded_at"] = format_timestamp(moment)
    await rewrite_signed(database_url, built.tenant, seq, record, recorded_at=moment)
    await assert_caught_in_database(store, built, seq, "bad signature")


async def stored_signature(store: EventStore, tenant: str, seq: int) -> str:
    signature: str = await store.pool.fetchval(
        "SELECT signature FROM events WHERE tenant = $1 AND seq = $2", tenant, seq
    )
    return signature


async def replace_signature(database_url: str, tenant: str, seq: int, signature: str) -> None:
    await tamper(
        database_url,
        (
            "UPDATE events SET signature = $3 WHERE tenant = $1 AND seq = $2",
            (tenant, seq, signature),
        ),
    )


@DATABASE_PROPERTY
@given(ledger=LEDGERS, data=st.data())
async def test_database_altered_signature_is_caught(
    store: EventStore, database_url: str, ledger: LedgerSpec, data: st.DataObject
) -> None:
    built = await build(store, ledger)
    seq = data.draw(st.integers(1, built.records), label="seq")
    signature = bytearray(base64.b64decode(await stored_signature(store, built.tenant, seq)))
    byte = data.draw(st.integers(0, len(signature) - 1), label="byte")
    signature[byte] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    await replace_signature(
        database_url, built.tenant, seq, base64.b64encode(bytes(signature)).decode()
    )
    await assert_caught_in_database(store, built, seq, "bad signature")


@DATABASE_PROPERTY
@given(ledger=LEDGERS, data=st.data())
async def test_database_signature_not_spelled_canonically_is_caught(
    store: EventStore, database_url: str, ledger: LedgerSpec, data: st.DataObject
) -> None:
    """The genuine signature bytes, in base64 with an unused pad bit set (docs/receipts.md,
    section 7): lenient decoders read the same bytes, strict ones refuse the text."""
    built = await build(store, ledger)
    seq = data.draw(st.integers(1, built.records), label="seq")
    stored = await stored_signature(store, built.tenant, seq)
    await replace_signature(
        database_url, built.tenant, seq, make_examples.with_a_pad_bit_set(stored)
    )
    await assert_caught_in_database(store, built, seq, "bad signature")


@pytest.mark.parametrize(
    ("stored", "reason"),
    [
        (lambda record: canonical_bytes(record)[:-1], "malformed record"),
        (lambda record: canonical_bytes(record) + b"x", "malformed record"),
        (lambda record: json.dumps(record, indent=1).encode(), "non-canonical record"),
        (
            lambda record: json.dumps(record, separators=(",", ":"), sort_keys=True).encode(),
            "non-canonical record",
        ),
        (lambda record: b"[" + canonical_bytes(record) + b"]", "non-canonical record"),
    ],
    ids=["cut short", "trailing garbage", "indented", "ASCII escapes", "in an array"],
)
async def test_database_signed_bytes_not_in_canonical_form_are_caught(
    store: EventStore,
    database_url: str,
    meta: Metadata,
    stored: Callable[[dict[str, Any]], bytes],
    reason: str,
) -> None:
    tenant = new_tenant()
    for number in range(3):
        await store.append(
            f"{tenant}:s", [NewEvent("A", {"é": number})], StreamState.ANY, tenant, meta
        )
    record = await stored_record(store, tenant, 2)
    await tamper(
        database_url,
        (
            "UPDATE events SET canonical = $2, hash = encode(sha256($2), 'hex')"
            " WHERE tenant = $1 AND seq = 2",
            (tenant, stored(record)),
        ),
    )
    await assert_caught_in_database(store, Built(tenant, [], 3), 2, reason)


@pytest.mark.parametrize(
    ("signed", "copied"),
    [
        ({"paid": 1}, '{"paid": true}'),
        ({"paid": 0}, '{"paid": false}'),
        ([True], "[1]"),
        ({"amount": 10}, '{"amount": 10.0}'),
    ],
)
async def test_database_data_copy_of_another_json_type_is_caught(
    store: EventStore, database_url: str, meta: Metadata, signed: Any, copied: str
) -> None:
    """Python's 1 == True and 10 == 10.0 must not hide a changed jsonb copy."""
    tenant = new_tenant()
    await store.append(f"{tenant}:s", [NewEvent("A", signed)], StreamState.ANY, tenant, meta)
    await tamper(
        database_url,
        ("UPDATE events SET data = $2::jsonb WHERE tenant = $1 AND seq = 1", (tenant, copied)),
    )
    report = await verify_tenant(store, Built(tenant, [], 1))
    assert_caught(report, tenant, 1, "copy mismatch")


@DATABASE_PROPERTY
@given(ledger=LEDGERS, data=st.data())
async def test_database_swapped_seqs_are_caught_at_the_lower_seq(
    store: EventStore, database_url: str, ledger: LedgerSpec, data: st.DataObject
) -> None:
    built = await build(store, ledger)
    lower = data.draw(st.integers(1, built.records - 1), label="lower")
    higher = data.draw(st.integers(lower + 1, built.records), label="higher")
    parked = 10**15
    update = "UPDATE events SET seq = $2 WHERE tenant = $1 AND seq = $3"
    await tamper(
        database_url,
        (update, (built.tenant, parked, lower)),
        (update, (built.tenant, lower, higher)),
        (update, (built.tenant, higher, parked)),
    )
    assert_caught(await verify_tenant(store, built), built.tenant, lower, "column mismatch")


@DATABASE_PROPERTY
@given(ledger=LEDGERS, data=st.data())
async def test_database_deleted_row_is_caught_at_its_seq(
    store: EventStore, database_url: str, ledger: LedgerSpec, data: st.DataObject
) -> None:
    built = await build(store, ledger)
    seq = data.draw(st.integers(1, built.records - 1), label="deleted seq")
    await tamper(
        database_url,
        ("DELETE FROM events WHERE tenant = $1 AND seq = $2", (built.tenant, seq)),
    )
    assert_caught(await verify_tenant(store, built), built.tenant, seq, "missing seq")


@DATABASE_PROPERTY
@given(ledger=LEDGERS)
async def test_database_deleted_last_row_is_caught_by_the_chain_head(
    store: EventStore, database_url: str, ledger: LedgerSpec
) -> None:
    built = await build(store, ledger)
    await tamper(
        database_url,
        ("DELETE FROM events WHERE tenant = $1 AND seq = $2", (built.tenant, built.records)),
    )
    report = await verify_tenant(store, built)
    assert_caught(report, built.tenant, built.records, "chain head mismatch")


async def forge_next_row(
    database_url: str,
    store: EventStore,
    built: Built,
    key: rsa.RSAPrivateKey,
    draw: Any,
    extra_members: dict[str, Any] | None = None,
) -> int:
    """Insert a record after the chain's head, signed with `key`, and move the head onto it:
    a forgery consistent in every respect but the key (and `extra_members`, added to the
    signed bytes). Returns its seq."""
    head = await store.pool.fetchrow(
        "SELECT seq, hash FROM chain_heads WHERE tenant = $1", built.tenant
    )
    assert head is not None
    seq = int(head["seq"]) + 1
    recorded_at = datetime.now(UTC)
    data = draw(JSON_VALUES, label="forged data")
    meta = msgspec.to_builtins(draw(METAS, label="forged meta"))
    covered = covered_record(
        tenant=built.tenant,
        seq=seq,
        stream=f"{built.tenant}:forged",
        version=1,
        type="Refunded",
        data=data,
        meta=meta,
        recorded_at=recorded_at,
        prev_hash=head["hash"],
    )
    canonical = canonical_bytes({**covered, **(extra_members or {})})
    digest = record_hash(canonical)
    key_id = key_id_of(key.public_key())
    await tamper(
        database_url,
        (
            """
            INSERT INTO events (epoch, tenant, seq, stream_id, version, type, canonical, data,
                                meta, recorded_at, prev_hash, hash, signature, key_id)
            VALUES ((SELECT max(epoch) FROM store_epochs), $1, $2, $3, 1, 'Refunded', $4,
                    $5::jsonb, $6::jsonb, $7, $8, $9, $10, $11)
            """,
            (
                built.tenant,
                seq,
                f"{built.tenant}:forged",
                canonical,
                canonical_json(data).decode(),
                canonical_json(meta).decode(),
                recorded_at,
                head["hash"],
                digest,
                sign_hash(key, digest),
                key_id,
            ),
        ),
        (
            "UPDATE chain_heads SET seq = $2, hash = $3, recorded_at = $4, key_id = $5"
            " WHERE tenant = $1",
            (built.tenant, seq, digest, recorded_at, key_id),
        ),
    )
    return seq


@DATABASE_PROPERTY
@given(ledger=LEDGERS, data=st.data())
async def test_database_forged_row_with_an_unregistered_key_is_caught(
    store: EventStore,
    database_url: str,
    ledger: LedgerSpec,
    data: st.DataObject,
    foreign_key: rsa.RSAPrivateKey,
) -> None:
    built = await build(store, ledger)
    seq = await forge_next_row(database_url, store, built, foreign_key, data.draw)
    assert_caught(await verify_tenant(store, built), built.tenant, seq, "unknown key")


@DATABASE_PROPERTY
@given(ledger=LEDGERS, data=st.data())
async def test_database_forged_row_with_a_slipped_in_key_fails_only_against_a_pin(
    store: EventStore,
    database_url: str,
    ledger: LedgerSpec,
    data: st.DataObject,
    foreign_key: rsa.RSAPrivateKey,
) -> None:
    built = await build(store, ledger)
    genuine = await genuine_pems(store)
    seq = await forge_next_row(database_url, store, built, foreign_key, data.draw)
    tenants = [*built.neighbours, built.tenant]
    # The key row is slipped in inside a transaction that is rolled back, so the forged key
    # never becomes visible to other tests sharing this database.
    async with superuser(database_url) as connection:
        transaction = connection.transaction()
        await transaction.start()
        try:
            await connection.execute(
                "INSERT INTO signing_keys (key_id, public_key, created_at, retired_at)"
                " VALUES ($1, $2, '2000-01-01Z', '2100-01-01Z')",
                key_id_of(foreign_key.public_key()),
                public_key_pem(foreign_key.public_key()),
            )
            unpinned = await verify_database(connection, KeyRing(), tenants=tenants)
            pinned = await verify_database(connection, pinned_keyring(genuine), tenants=tenants)
        finally:
            await transaction.rollback()
    assert unpinned.ok, unpinned.failure  # trusting the database's key list, it is consistent
    assert_caught(pinned, built.tenant, seq, "untrusted key")


@DATABASE_PROPERTY
@given(ledger=LEDGERS, data=st.data(), member=st.sampled_from(sorted(PROOF_MEMBERS)))
async def test_database_signed_bytes_with_a_proof_member_are_caught(
    store: EventStore,
    database_url: str,
    key_folder: FilePath,
    ledger: LedgerSpec,
    data: st.DataObject,
    member: str,
) -> None:
    """A record signed with the ledger's own key whose signed bytes hold an eleventh member
    named like one of the proof: the row's proof must not silently stand in for it."""
    built = await build(store, ledger)
    key = load_private_key(key_folder / "signing-key.pem")
    claimed = data.draw(_TEXT, label="the member's value")
    seq = await forge_next_row(database_url, store, built, key, data.draw, {member: claimed})
    await assert_caught_in_database(store, built, seq, "unknown member")


async def test_database_key_that_is_not_its_id_is_caught(database_url: str) -> None:
    """A listed key whose key_id is not its SHA-256 (slipped in, and rolled back, so that no
    other test meets it)."""
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    async with superuser(database_url) as connection:
        transaction = connection.transaction()
        await transaction.start()
        try:
            await connection.execute(
                "INSERT INTO signing_keys (key_id, public_key, created_at, retired_at)"
                " VALUES ($1, $2, '2000-01-01Z', '2000-01-02Z')",
                "0" * 64,
                public_key_pem(other),
            )
            report = await verify_database(connection, KeyRing(), tenants=[])
        finally:
            await transaction.rollback()
    assert not report.ok
    assert report.failure is not None
    assert (report.failure.reason, report.failure.tenant) == ("bad key", None)
    assert "is not the SHA-256 of its public key" in report.failure.detail


async def test_database_key_with_text_around_its_pem_is_caught(database_url: str) -> None:
    """A listed key whose PEM carries more than one BEGIN PUBLIC KEY block and whitespace
    (docs/receipts.md, section 8): which bytes are the key is no reader's choice (slipped
    in, and rolled back, so that no other test meets it)."""
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    async with superuser(database_url) as connection:
        transaction = connection.transaction()
        await transaction.start()
        try:
            await connection.execute(
                "INSERT INTO signing_keys (key_id, public_key, created_at, retired_at)"
                " VALUES ($1, $2, '2000-01-01Z', '2000-01-02Z')",
                key_id_of(other),
                "comment\n" + public_key_pem(other),
            )
            report = await verify_database(connection, KeyRing(), tenants=[])
        finally:
            await transaction.rollback()
    assert not report.ok
    assert report.failure is not None
    assert (report.failure.reason, report.failure.tenant) == ("bad key", None)
    assert report.failure.detail.startswith(f"key {key_id_of(other)}: not a PEM public key")
