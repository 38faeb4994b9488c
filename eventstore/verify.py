"""Verification of receipt chains: offline from a bundle, or straight from the database.

Both modes feed records, one at a time, through the same ChainVerifier: it recomputes each
hash from the covered members, checks every link and seq, the signature, the key and the key's
validity, and stops at the first failure, naming the tenant, seq and reason. Memory does not
grow with the ledger: a verifier holds the previous hash and seq, nothing more.

A bundle is hostile input. Lines are read with a length bound, parsed strictly (duplicate
members, floats, NaN and non-JSON are failures, not crashes), and a line is only trusted after
its canonical form has been recomputed. Fast path: a line written by our exporter is the JCS
form of its object, so if re-serialising the parsed object gives the line back, it cannot
have held duplicate members or anything else a lenient parser would have smoothed over.
"""

from __future__ import annotations

import ctypes
import functools
import json
import multiprocessing
import os
import re
import signal
import sys
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, Literal, NamedTuple, NoReturn

import msgspec
from cryptography.hazmat.primitives.asymmetric import rsa

from eventstore.canonical import (
    MAX_SAFE_INTEGER,
    InvalidPayloadError,
    canonical_json,
    decode_plain_canonical,
    encode_plain,
    refuse_non_unicode,
)
from eventstore.receipts import (
    COVERED_MEMBERS,
    GENESIS_HASH,
    PROOF_MEMBERS,
    RECEIPT_VERSION,
    format_timestamp,
    is_hex_digest,
    key_id_of,
    load_public_key_pem,
    parse_timestamp,
    public_key_pem,
    record_hash,
    signature_holds,
)

if TYPE_CHECKING:
    from eventstore.db import Connection

BUNDLE_FORMAT: Final = "valueledger-bundle/1"
HEADER_MEMBERS: Final = frozenset({"format", "tenant", "exported_at", "keys"})
KEY_MEMBERS: Final = frozenset({"key_id", "public_key", "valid_from", "valid_until"})
LINE_MEMBERS: Final = COVERED_MEMBERS | PROOF_MEMBERS
MAX_LINE_BYTES: Final = 256 * 1024
"""Longer than any record the store accepts (64 KiB) plus its proof; longer lines are refused
unread, so a hostile bundle cannot make the verifier hold an absurd line in memory."""
MAX_HEADER_BYTES: Final = 4 * 1024 * 1024
BATCH_LINES: Final = 500
"""Record lines a worker process checks at a time (fewer when they pass BATCH_BYTES). The
hand-off (the lines pickled over, a small outcome back) is then cheap beside the checks, and
memory stays flat: at most two batches per worker are in flight."""
BATCH_BYTES: Final = 1024 * 1024

Trust = Literal["pinned", "bundle", "database"]

_ASCII_TIMESTAMP: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z\Z"
)


class Failure(msgspec.Struct, frozen=True):
    reason: str
    detail: str
    tenant: str | None = None
    seq: int | None = None
    """The seq the failing record stands at in the chain: the one expected there."""
    line: int | None = None
    claimed_seq: int | None = None
    """The seq the failing record itself claims, when that is another one than `seq`."""

    def describe(self) -> str:
        """The failure in one line for a terminal. Its tenant and detail may come from a
        hostile bundle, so every character a terminal would act on (escape sequences, carriage
        returns, bidirectional overrides...) is shown escaped: a bundle cannot print a fake
        verdict."""
        where = []
        if self.tenant is not None:
            shown = self.tenant if _PLAIN_TENANT.match(self.tenant) else quoted(self.tenant)
            where.append(f"tenant {shown}")
        if self.seq is not None:
            where.append(f"seq {self.seq}")
        if self.line is not None:
            where.append(f"line {self.line}")
        place = ", ".join(where) or "bundle"
        claimed = ""
        if self.claimed_seq is not None:
            claimed = f" (the record claims seq {self.claimed_seq})"
        return printable(f"{place}: {self.reason}: {self.detail}{claimed}")

    def at_seq(self, expected: int) -> Failure:
        """This failure of a record line, placed at the seq the line stands at (a line's own
        seq is only a claim: it can be anything)."""
        if self.seq is not None:
            return self
        claimed = None if self.claimed_seq == expected else self.claimed_seq
        return msgspec.structs.replace(self, seq=expected, claimed_seq=claimed)


_PLAIN_TENANT: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}\Z")
"""A tenant as the store issues them: shown as it is; any other is quoted."""
ECHOED_CHARACTERS: Final = 64
"""How much of a bundle's text a failure repeats: enough to recognise it, never the whole of
an absurd line."""


def quoted(text: str, limit: int = ECHOED_CHARACTERS) -> str:
    """`text` as a Python literal, cut to `limit` characters: how a failure names a value from
    the bundle, so that its end and any odd character in it are visible."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def bounded(message: str, limit: int = 5 * ECHOED_CHARACTERS) -> str:
    """A message that may repeat the bundle's text (a parser's, a path), cut to `limit`."""
    if len(message) <= limit:
        return message
    return f"{message[:limit]}... ({len(message)} characters)"


def printable(text: str) -> str:
    """`text` with every character that is not printable (C0 and C1 controls, DEL, format
    characters, line and paragraph separators...) written as its Python escape."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


class Report(msgspec.Struct):
    ok: bool
    records: int
    tenants: list[str]
    trust: Trust
    key_ids: list[str]
    failure: Failure | None = None
    error: str | None = None
    """Why there is no verdict (a key file that is no key, an unreadable bundle, no such
    tenant...): the command line's exit 2, where `failure` is a verdict's exit 1."""


class VerificationFailed(Exception):
    """A verdict, raised to stop the walk at the first failure."""

    def __init__(self, failure: Failure) -> None:
        self.failure = failure
        super().__init__(failure.describe())


@dataclass(frozen=True, slots=True)
class TrustedKey:
    public_key: rsa.RSAPublicKey
    valid_from: datetime | None
    valid_until: datetime | None


@dataclass(slots=True)
class KeyRing:
    """The keys a verification accepts. Pinned keys, when given, are the only ones trusted;
    the bundle's or database's listing then only contributes validity windows."""

    keys: dict[str, TrustedKey] = field(default_factory=dict)
    pinned: frozenset[str] | None = None

    @property
    def trust(self) -> Trust:
        return "pinned" if self.pinned is not None else "bundle"

    def key_for(self, key_id: str) -> TrustedKey | None:
        if self.pinned is not None and key_id not in self.pinned:
            return None
        return self.keys.get(key_id)


def pinned_keyring(pems: Iterable[bytes]) -> KeyRing:
    """A ring trusting exactly these public keys (e.g. `--key FILE`), with no windows yet."""
    ring = KeyRing(pinned=frozenset())
    for pem in pems:
        pin_key(ring, pem)
    return ring


def pin_key(ring: KeyRing, pem: bytes) -> None:
    """Trust this public key too (the ring then trusts pinned keys only); ValueError saying
    why if it is no RSA public key fit to verify receipts."""
    key = load_public_key_pem(pem)
    key_id = key_id_of(key)
    ring.keys[key_id] = TrustedKey(key, None, None)
    ring.pinned = frozenset({*(ring.pinned or ()), key_id})


def add_listed_key(
    ring: KeyRing,
    key_id: str,
    pem: str,
    valid_from: datetime,
    valid_until: datetime | None,
) -> None:
    """Add a key as listed by a bundle header or the database, after proving its key_id."""
    try:
        key = load_public_key_pem(pem)
    except ValueError as error:
        raise ValueError(f"key {key_id}: {error}") from None
    if key_id_of(key) != key_id:
        raise ValueError(f"key_id {key_id} is not the SHA-256 of its public key")
    if ring.pinned is not None and key_id not in ring.pinned:
        return  # listed but not trusted: records signed by it will fail as untrusted
    ring.keys[key_id] = TrustedKey(key, valid_from, valid_until)


class ChainVerifier:
    """Checks one tenant's records in order, from `first_seq` on. A chain from seq 1 starts at
    the genesis hash; a partial one (exported --from-seq N) is anchored on the prev_hash of its
    first record, which only the full chain, or the published receipt before it, can confirm."""

    def __init__(self, tenant: str, ring: KeyRing, *, first_seq: int = 1) -> None:
        self.tenant = tenant
        self.ring = ring
        self.expected_seq = first_seq
        self.last_hash: str | None = GENESIS_HASH if first_seq == 1 else None
        self.count = 0

    def fail(self, reason: str, detail: str, seq: int | None, line: int | None) -> NoReturn:
        raise VerificationFailed(Failure(reason, detail, self.tenant, seq, line))

    def check(
        self,
        record: dict[str, Any],
        canonical: bytes,
        line: int | None = None,
        *,
        recorded_at: datetime | None = None,
    ) -> None:
        """`record` has exactly the covered and proof members, of the right types (see
        check_shape); `canonical` is the JCS form of its covered members; `recorded_at`, if
        given, is its recorded_at already parsed."""
        self.accept(record["seq"], self.vet(record, canonical, line, recorded_at=recorded_at))

    def vet(
        self,
        record: dict[str, Any],
        canonical: bytes,
        line: int | None = None,
        *,
        recorded_at: datetime | None = None,
    ) -> str:
        """check() without taking the record into the chain: its hash, once every check of
        the record held (the database's checks of its row come before accepting it)."""
        seq: int = record["seq"]
        self.check_tenant(record, line)
        self.check_position(seq, record["prev_hash"], line)
        digest = record_hash(canonical)
        if digest != record["hash"]:
            self.fail(
                "hash mismatch", f"record hashes to {digest}, not {record['hash']}", seq, line
            )
        key_id: str = record["key_id"]
        key = self.ring.key_for(key_id)
        if key is None:
            if self.ring.pinned is not None:
                self.fail("untrusted key", f"signed by {key_id}, not a pinned key", seq, line)
            self.fail("unknown key", f"signed by {key_id}, which is not listed", seq, line)
        stamped = parse_timestamp(record["recorded_at"]) if recorded_at is None else recorded_at
        if (key.valid_from is not None and stamped < key.valid_from) or (
            key.valid_until is not None and stamped >= key.valid_until
        ):
            self.fail(
                "outside key validity",
                f"recorded_at {record['recorded_at']} is outside key {key_id}'s validity",
                seq,
                line,
            )
        if not signature_holds(key.public_key, digest, record["signature"]):
            self.fail("bad signature", f"signature does not verify with key {key_id}", seq, line)
        return digest

    def accept(self, seq: int, digest: str) -> None:
        """The record vetted (seq, with hash `digest`) is good: expect its successor."""
        self.expected_seq = seq + 1
        self.last_hash = digest
        self.count += 1

    def check_tenant(self, record: dict[str, Any], line: int | None) -> None:
        """Checked before the record's position, so the failure names no seq: whoever knows
        where the record stands places it (Failure.at_seq)."""
        if record["tenant"] != self.tenant:
            raise VerificationFailed(
                Failure(
                    "wrong tenant",
                    f"record belongs to {quoted(record['tenant'])}",
                    self.tenant,
                    None,
                    line,
                    _claimed_seq(record),
                )
            )

    def check_position(self, seq: int, prev_hash: str, line: int | None) -> None:
        """The record is the next one of the chain: its seq follows, its prev_hash links."""
        if self.last_hash is None and seq == self.expected_seq:
            self.last_hash = prev_hash
        if seq > self.expected_seq:
            self.fail(
                "missing seq",
                f"seq {self.expected_seq} is missing (the next record is seq {seq})",
                self.expected_seq,
                line,
            )
        if seq < self.expected_seq:
            self.fail(
                "repeated seq",
                f"seq {seq} again or out of order (expected {self.expected_seq})",
                self.expected_seq,
                line,
            )
        if prev_hash != self.last_hash:
            self.fail(
                "broken link",
                f"prev_hash {prev_hash} is not the previous record's hash {self.last_hash}",
                seq,
                line,
            )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_shape(record: Any, tenant: str | None, line: int | None) -> dict[str, Any]:
    """Exactly the members of a bundle record line, each of its type; else a Failure."""
    return _check_shape(record, tenant, line)[0]


def _check_shape(
    record: Any, tenant: str | None, line: int | None
) -> tuple[dict[str, Any], datetime]:
    """check_shape, also giving recorded_at parsed (so that it is parsed once)."""
    if type(record) is dict and record.keys() == LINE_MEMBERS:
        # What nearly every line is, checked at once: the checks below would all pass.
        v, seq, version = record["v"], record["seq"], record["version"]
        if (
            type(v) is int
            and v == RECEIPT_VERSION
            and type(seq) is int
            and 1 <= seq <= MAX_SAFE_INTEGER
            and type(version) is int
            and 1 <= version <= MAX_SAFE_INTEGER
            and type(record["tenant"]) is str
            and type(record["stream"]) is str
            and type(record["type"]) is str
            and type(record["signature"]) is str
            and type(record["recorded_at"]) is str
            and is_hex_digest(record["prev_hash"])
            and is_hex_digest(record["hash"])
            and is_hex_digest(record["key_id"])
        ):
            try:
                return record, _parse_recorded_at(record["recorded_at"])
            except ValueError:
                pass  # reported below
    claimed = _claimed_seq(record)

    def fail(reason: str, detail: str) -> None:
        # The seq it stands at is known to the chain's verifier, which places the failure.
        raise VerificationFailed(Failure(reason, detail, tenant, None, line, claimed))

    if not isinstance(record, dict):
        fail("malformed line", "a record line must be a JSON object")
    if record.keys() != LINE_MEMBERS:
        members = set(record)
        if unknown := members - LINE_MEMBERS:
            fail("unknown member", _names(unknown))
        if missing := LINE_MEMBERS - members:
            fail("missing member", _names(missing))
    if record["v"] != RECEIPT_VERSION or not _is_int(record["v"]):
        shown = quoted(record["v"]) if isinstance(record["v"], str) else bounded(repr(record["v"]))
        fail("unsupported version", f"v is {shown}, this verifier reads v 1")
    for name in ("seq", "version"):
        if not _is_int(record[name]) or not 1 <= record[name] <= MAX_SAFE_INTEGER:
            fail("bad member", f"{name} must be a positive integer")
    for name in ("tenant", "stream", "type", "signature", "recorded_at"):
        if not isinstance(record[name], str):
            fail("bad member", f"{name} must be a string")
    for name in ("prev_hash", "hash", "key_id"):
        if not is_hex_digest(record[name]):
            fail("bad member", f"{name} must be 64 lowercase hex digits")
    try:
        stamped = _parse_recorded_at(record["recorded_at"])
    except ValueError as error:
        fail("bad member", str(error))
    checked: dict[str, Any] = record
    return checked, stamped


def _claimed_seq(record: Any) -> int | None:
    """The seq a record says it has, if it is one a record could have."""
    seq = record.get("seq") if isinstance(record, dict) else None
    if isinstance(seq, int) and not isinstance(seq, bool) and 1 <= seq <= MAX_SAFE_INTEGER:
        return seq
    return None


def _names(names: Iterable[str], shown: int = 5) -> str:
    """Member names as a failure lists them: a few, quoted and cut short, and how many."""
    ordered = sorted(names)
    listed = ", ".join(quoted(name) for name in ordered[:shown])
    return listed if len(ordered) <= shown else f"{listed} and {len(ordered) - shown} more"


def _parse_recorded_at(text: str) -> datetime:
    """parse_timestamp(text), quicker for its one spelling: text of exactly that form (ASCII
    digits) is read the same by fromisoformat as by strptime, and refused by both alike (e.g.
    month 13, day 30 of February, second 60). Anything else goes to parse_timestamp, for its
    verdict and its message."""
    if _ASCII_TIMESTAMP.match(text):
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    return parse_timestamp(text)


def _covered(record: dict[str, Any]) -> dict[str, Any]:
    return {name: record[name] for name in COVERED_MEMBERS}


def _strict_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise ValueError(f"duplicate member {name!r}")
        result[name] = value
    return result


def _refuse_float(text: str) -> Any:
    raise ValueError(f"float {text} (decimals travel as strings)")


def _refuse_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


MAX_NESTING: Final = 100
"""Arrays and objects nested deeper than this are refused before parsing. A record's data and
meta nest at most MAX_DEPTH levels, far below this; and the parser's own limit, the
interpreter's recursion limit, counts the frames of whoever calls it, so without this bound a
line's verdict would depend on the process or the call that parses it."""

_JSON_STRING: Final = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET: Final = re.compile(rb"[\[\]{}]")


def _nested_too_deeply(raw: bytes) -> bool:
    """More than MAX_NESTING arrays and objects open at once, strings aside (text that is not
    JSON is judged the same way: the parser refuses it anyway)."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_NESTING:
        return False
    depth = 0
    for bracket in _BRACKET.findall(_JSON_STRING.sub(b"", raw)):
        depth += 1 if bracket in b"[{" else -1
        if depth > MAX_NESTING:
            return True
    return False


def parse_strict(raw: bytes) -> Any:
    """Parse one JSON document refusing duplicate members, floats, NaN, Infinity and nesting
    deeper than MAX_NESTING. The bytes must be UTF-8, without a byte-order mark: given bytes,
    json.loads would also read UTF-16 and UTF-32, and skip a BOM."""
    if _nested_too_deeply(raw):
        raise ValueError("nested too deeply")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8: {error.reason} at byte {error.start}") from None
    if text.startswith("\ufeff"):
        raise ValueError("starts with a byte-order mark (lines are UTF-8 without one)")
    return json.loads(
        text,
        object_pairs_hook=_strict_pairs,
        parse_float=_refuse_float,
        parse_constant=_refuse_constant,
    )


_fast_decoder = msgspec.json.Decoder()


def parse_line(raw: bytes, tenant: str | None, line: int) -> tuple[dict[str, Any], bytes]:
    """A record line, strictly parsed and shape-checked, with its covered canonical bytes."""
    record, canonical, _ = _parse_line(raw, tenant, line)
    return record, canonical


def _parse_line(
    raw: bytes, tenant: str | None, line: int
) -> tuple[dict[str, Any], bytes, datetime]:
    """parse_line, also giving recorded_at parsed.

    Nearly every line is one the fast writer of eventstore.canonical reproduces byte for byte
    (decode_plain_canonical): then its covered members are plain too, and msgspec writes their
    JCS bytes straight away. Any other line is handled exactly as before: the general writer
    or the strict parser decides, and names what is wrong."""
    parsed: Any = decode_plain_canonical(raw)
    if type(parsed) is dict:
        record, recorded_at = _check_shape(parsed, tenant, line)
        covered = record.copy()
        for name in PROOF_MEMBERS:
            del covered[name]
        return record, encode_plain(covered), recorded_at
    try:
        parsed = _fast_decoder.decode(raw)
        trusted = isinstance(parsed, dict) and canonical_json(parsed) == raw
    except (msgspec.DecodeError, ValueError, RecursionError):
        trusted = False  # the strict parser below says precisely what is wrong
    if not trusted:
        try:
            if not raw.strip(b" \t\r"):
                raise ValueError("empty line (each line holds one record)")
            parsed = parse_strict(raw)
        except (ValueError, RecursionError) as error:
            detail = str(error) if isinstance(error, ValueError) else "nested too deeply"
            raise VerificationFailed(
                Failure("malformed line", bounded(detail), tenant, None, line)
            ) from None
    record, recorded_at = _check_shape(parsed, tenant, line)
    try:
        canonical = canonical_json(_covered(record))
        # The one string outside the covered members that is not hex-checked: only the
        # strict parser reads the escape of a lone surrogate, so only its lines can hold one.
        refuse_non_unicode(record["signature"], "signature")
    except InvalidPayloadError as error:
        raise VerificationFailed(
            Failure("invalid value", bounded(str(error)), tenant, None, line, record["seq"])
        ) from None
    return record, canonical, recorded_at


def _read_lines(
    stream: IO[bytes], limit: int, number: int, tenant: str
) -> Iterator[tuple[int, bytes]]:
    """Numbered lines (after line `number`) without their newline, each <= `limit` bytes."""
    while True:
        raw = stream.readline(limit + 1)
        if not raw:
            return
        number += 1
        if len(raw) > limit:
            raise VerificationFailed(
                Failure("line too long", f"longer than {limit} bytes", tenant, None, number)
            )
        yield number, raw.rstrip(b"\r\n") if raw.endswith(b"\n") else raw


def _header_keyring(header: dict[str, Any], ring: KeyRing) -> list[str]:
    keys = header["keys"]
    if not isinstance(keys, list):
        raise ValueError("keys must be a list")
    listed: list[str] = []
    for entry in keys:
        if not isinstance(entry, dict) or set(entry) != KEY_MEMBERS:
            raise ValueError(f"each key has exactly the members {sorted(KEY_MEMBERS)}")
        if not is_hex_digest(entry["key_id"]) or not isinstance(entry["public_key"], str):
            raise ValueError("key_id must be 64 lowercase hex digits, public_key a PEM string")
        if not isinstance(entry["valid_from"], str):
            raise ValueError("valid_from must be an RFC 3339 timestamp")
        until = entry["valid_until"]
        if until is not None and not isinstance(until, str):
            raise ValueError("valid_until must be an RFC 3339 timestamp or null")
        if entry["key_id"] in listed:
            # Two windows for one key: which one holds is no reader's guess to make.
            raise ValueError(f"key {entry['key_id']} is listed twice")
        add_listed_key(
            ring,
            entry["key_id"],
            entry["public_key"],
            parse_timestamp(entry["valid_from"], "valid_from"),
            parse_timestamp(until, "valid_until") if until is not None else None,
        )
        listed.append(entry["key_id"])
    return listed


def verify_bundle(
    stream: IO[bytes],
    ring: KeyRing,
    progress: Any = None,
    first_seq: int = 1,
    *,
    jobs: int = 1,
    batch_lines: int = BATCH_LINES,
) -> Report:
    """Verify a bundle read from `stream`, which must start at `first_seq` (1: the whole
    chain). `progress`, if given, is called with the number of bytes consumed as records are
    checked. `ring` is not changed: the header's keys go into a copy.

    With `jobs` > 1, records are checked by that many worker processes, `batch_lines` at a
    time (see _check_in_batches); the report is the one a single process gives."""
    ring = KeyRing(dict(ring.keys), ring.pinned)
    tenant: str | None = None
    listed: list[str] = []
    verifier: ChainVerifier | None = None
    try:
        first = stream.readline(MAX_HEADER_BYTES + 1)
        if not first:
            raise VerificationFailed(Failure("bad header", "the bundle is empty", line=1))
        if len(first) > MAX_HEADER_BYTES:
            raise VerificationFailed(Failure("bad header", "header line too long", line=1))
        try:
            header = parse_strict(first)
            refuse_non_unicode(header)
        except InvalidPayloadError as error:
            raise VerificationFailed(
                Failure("invalid value", bounded(str(error)), None, None, 1)
            ) from None
        except (ValueError, RecursionError) as error:
            raise VerificationFailed(Failure("bad header", bounded(str(error)), line=1)) from None
        try:
            if not isinstance(header, dict) or set(header) != HEADER_MEMBERS:
                raise ValueError(f"the header has exactly the members {sorted(HEADER_MEMBERS)}")
            if header["format"] != BUNDLE_FORMAT:
                raise ValueError(f"format is {header['format']!r}, not {BUNDLE_FORMAT!r}")
            if not isinstance(header["tenant"], str):
                raise ValueError("tenant must be a string")
            tenant = header["tenant"]
            if not isinstance(header["exported_at"], str):
                raise ValueError("exported_at must be an RFC 3339 timestamp")
            parse_timestamp(header["exported_at"], "exported_at")
            listed = _header_keyring(header, ring)
        except (ValueError, RecursionError) as error:
            raise VerificationFailed(
                Failure("bad header", bounded(str(error)), tenant, None, 1)
            ) from None
        assert tenant is not None  # noqa: S101 - set above or we raised
        verifier = ChainVerifier(tenant, ring, first_seq=first_seq)
        lines = _read_lines(stream, MAX_LINE_BYTES, 1, tenant)
        if jobs > 1:
            _check_in_batches(lines, verifier, jobs, batch_lines, progress)
        else:
            for number, raw in lines:
                record, canonical, recorded_at = _parse_line(raw, tenant, number)
                verifier.check(record, canonical, number, recorded_at=recorded_at)
                if progress is not None:
                    progress(len(raw) + 1)
    except VerificationFailed as failed:
        failure = failed.failure
        if verifier is not None:  # a record line's failure, at the seq expected there
            failure = failure.at_seq(verifier.expected_seq)
        return Report(
            ok=False,
            records=verifier.count if verifier else 0,
            tenants=[tenant] if tenant is not None else [],
            trust=ring.trust,
            key_ids=listed,
            failure=failure,
        )
    return Report(
        ok=True,
        records=verifier.count,
        tenants=[tenant],
        trust=ring.trust,
        key_ids=listed,
    )


def usable_cpus() -> int:
    """The CPUs this process may run on (a container's or taskset's limit included)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# ------------------------------------------------------------------ checking in worker processes
#
# The chain is a sequence, but its costly checks are not: a record's hash and signature depend
# on that record alone, and its link only on the hash its predecessor claims. So a worker
# checks a batch of consecutive lines as a chain of its own, anchored on its first record, and
# answers with that record's seq and prev_hash, the last record's seq and hash, and the first
# failure it met. The main process reads the lines and, batch by batch in order, checks that
# each anchor follows the batch before (seq and link), exactly as ChainVerifier would have.
# The first failure reported is the one a single process reports: an anchor's seq or link is
# checked before anything else of the batch (as check() checks them before the record's hash),
# and a batch's own failure counts only once every batch before it has passed.


class _Lines(NamedTuple):
    number: int  # the line number of the first line
    raws: list[bytes]
    size: int  # bytes consumed, newlines included


class _Outcome(NamedTuple):
    passed: int  # records that held, in order
    anchor: tuple[int, str, int] | None  # first record's seq, prev_hash, line (tenant checked)
    end: tuple[int, str] | None  # last record's seq and hash, when every record held
    failure: Failure | None


_RingSpec = tuple[
    tuple[tuple[str, str, datetime | None, datetime | None], ...], frozenset[str] | None
]


def _ring_spec(ring: KeyRing) -> _RingSpec:
    keys = tuple(
        (key_id, public_key_pem(key.public_key), key.valid_from, key.valid_until)
        for key_id, key in ring.keys.items()
    )
    return keys, ring.pinned


@functools.lru_cache(maxsize=4)
def _ring_of(spec: _RingSpec) -> KeyRing:
    """The ring in a worker process, loaded once per verification (the spec is its key)."""
    keys, pinned = spec
    loaded = {
        key_id: TrustedKey(load_public_key_pem(pem), valid_from, valid_until)
        for key_id, pem, valid_from, valid_until in keys
    }
    return KeyRing(loaded, pinned)


def _check_batch(tenant: str, ring: KeyRing, lines: _Lines) -> _Outcome:
    verifier: ChainVerifier | None = None
    anchor: tuple[int, str, int] | None = None
    try:
        for line, raw in enumerate(lines.raws, lines.number):
            record, canonical, recorded_at = _parse_line(raw, tenant, line)
            if verifier is None:
                # Where the first record stands is known to the main process alone: its
                # failures are left for it to place (verify_bundle).
                first = ChainVerifier(tenant, ring, first_seq=record["seq"])
                first.check_tenant(record, line)
                first.last_hash = record["prev_hash"]
                verifier, anchor = first, (record["seq"], record["prev_hash"], line)
            verifier.check(record, canonical, line, recorded_at=recorded_at)
    except VerificationFailed as failed:
        if verifier is None:
            return _Outcome(0, None, None, failed.failure)
        failure = failed.failure.at_seq(verifier.expected_seq)
        return _Outcome(verifier.count, anchor, None, failure)
    assert verifier is not None  # noqa: S101 - a batch has lines
    assert verifier.last_hash is not None  # noqa: S101 - set by its first record
    return _Outcome(verifier.count, anchor, (verifier.expected_seq - 1, verifier.last_hash), None)


def _check_batch_in_worker(tenant: str, spec: _RingSpec, lines: _Lines) -> _Outcome:
    return _check_batch(tenant, _ring_of(spec), lines)


def _read_batches(
    lines: Iterator[tuple[int, bytes]], batch_lines: int
) -> Iterator[_Lines | VerificationFailed]:
    """The lines in batches; a line that cannot be read (too long) ends them, as a failure
    yielded after the lines before it, which are checked first."""
    raws: list[bytes] = []
    number = size = 0
    try:
        for line, raw in lines:
            if not raws:
                number = line
            raws.append(raw)
            size += len(raw) + 1
            if len(raws) >= batch_lines or size >= BATCH_BYTES:
                yield _Lines(number, raws, size)
                raws, size = [], 0
    except VerificationFailed as failed:
        if raws:
            yield _Lines(number, raws, size)
        yield failed
        return
    if raws:
        yield _Lines(number, raws, size)


def _merge(verifier: ChainVerifier, outcome: _Outcome, size: int, progress: Any) -> None:
    """Join a batch's outcome to the chain checked so far, or raise its first failure."""
    if outcome.anchor is not None:
        seq, prev_hash, line = outcome.anchor
        verifier.check_position(seq, prev_hash, line)
    verifier.count += outcome.passed
    if outcome.failure is not None:
        raise VerificationFailed(outcome.failure)
    assert outcome.end is not None  # noqa: S101 - an outcome without failure has its end
    verifier.expected_seq, verifier.last_hash = outcome.end[0] + 1, outcome.end[1]
    if progress is not None:
        progress(size)


_pools: dict[int, ProcessPoolExecutor] = {}
_pools_lock: Final = threading.Lock()


def _worker_pool(jobs: int) -> ProcessPoolExecutor:
    """`jobs` worker processes, started once and kept for this process's next verification
    (starting them costs more than checking a small bundle).

    A process running one thread (the command line) forks them, which takes milliseconds:
    nothing can hold a lock the children would inherit. Any other is never forked from:
    its workers come from a fork server that has loaded this module (a fresh interpreter
    each where there is none), which costs about half a second here."""
    with _pools_lock:
        pool = _pools.get(jobs)
        # A worker that died while the pool sat idle (killed, out of memory) broke it: the
        # executor says so once it has noticed, and a new pool serves this verification.
        if pool is not None and getattr(pool, "_broken", False):
            pool.shutdown(wait=False, cancel_futures=True)
            pool = None
        if pool is None:
            pool = _pools[jobs] = _start_pool(jobs)
        return pool


def _start_pool(jobs: int) -> ProcessPoolExecutor:
    """Start the workers now (an empty task makes every one of them start and answer), so
    that a failure to start them (no memory, no process slots) is one clear error here and
    leaves no worker behind to wait for work forever."""
    methods = multiprocessing.get_all_start_methods()
    context: multiprocessing.context.BaseContext
    parent: int | None = None
    if "fork" in methods and _one_thread():
        context = multiprocessing.get_context("fork")
        parent = os.getpid()
    elif "forkserver" in methods:
        forkserver = multiprocessing.get_context("forkserver")
        forkserver.set_forkserver_preload([__name__])
        context = forkserver
    else:
        context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_start_worker, initargs=(parent,)
    )
    try:
        for started in [pool.submit(int) for _ in range(jobs)]:
            started.result()
    except (OSError, BrokenProcessPool) as error:
        # The executor keeps its processes to itself; a half-started pool is ended here.
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise ChildProcessError(
            f"could not start {jobs} verification worker processes ({error}); "
            "verify with fewer --jobs, or --jobs 1"
        ) from None
    return pool


_PR_SET_PDEATHSIG: Final = 1  # prctl(2)


def _start_worker(parent: int | None) -> None:
    """Ctrl-C reaches every process of the terminal's group: the verifying process stops the
    verification, and its workers, rather than each printing a traceback, finish their batch
    and exit with the pool.

    A worker waits for work reading a pipe whose writing end it also holds, so it would not
    notice its parent dying without a word (kill -9, out of memory) and would wait forever,
    holding the verifier's files and output open. On Linux the kernel is asked to end it
    with SIGTERM when its parent goes (`parent`, where known, closes the race of a parent
    gone before the request)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid() if parent is None else parent
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os._exit(1)


def _one_thread() -> bool:
    """This process runs a single thread, by the kernel's count (which also sees threads that
    native libraries started); False where that count cannot be read."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    return "\nThreads:\t1\n" in status


def _check_in_batches(
    lines: Iterator[tuple[int, bytes]],
    verifier: ChainVerifier,
    jobs: int,
    batch_lines: int,
    progress: Any,
) -> None:
    """Check the record lines in `jobs` worker processes, merging their outcomes in order.
    A bundle of one batch is checked here: no process is started for it."""
    tenant, spec = verifier.tenant, _ring_spec(verifier.ring)
    pool: ProcessPoolExecutor | None = None
    held: _Lines | None = None
    window: deque[tuple[Future[_Outcome], int]] = deque()
    unreadable: VerificationFailed | None = None
    try:
        for batch in _read_batches(lines, batch_lines):
            if isinstance(batch, VerificationFailed):
                unreadable = batch
                break
            if pool is None and held is None:
                held = batch
                continue
            if pool is None:
                assert held is not None  # noqa: S101 - the first batch is held until a second
                pool = _worker_pool(jobs)
                window.append((pool.submit(_check_batch_in_worker, tenant, spec, held), held.size))
                held = None
            window.append((pool.submit(_check_batch_in_worker, tenant, spec, batch), batch.size))
            while len(window) > 2 * jobs:
                job, size = window.popleft()
                _merge(verifier, job.result(), size, progress)
        if held is not None:
            _merge(verifier, _check_batch(tenant, verifier.ring, held), held.size, progress)
        while window:
            job, size = window.popleft()
            _merge(verifier, job.result(), size, progress)
        if unreadable is not None:
            raise unreadable
    except BrokenProcessPool:
        with _pools_lock:
            broken = _pools.pop(jobs, None)
        if broken is not None:
            broken.shutdown(wait=False, cancel_futures=True)
        raise ChildProcessError(
            "a verification worker process stopped unexpectedly (out of memory?); "
            "verify again, or with --jobs 1"
        ) from None
    finally:
        for job, _ in window:  # after a failure: batches past it are not needed
            job.cancel()


async def verify_database(
    connection: Connection,
    ring: KeyRing,
    tenants: list[str] | None = None,
    progress: Any = None,
    page: int = 2000,
) -> Report:
    """Verify chains straight from the events table (all tenants by default).

    Besides everything a bundle check does, the row's columns must agree with its signed bytes,
    the jsonb copies with the signed data and meta, the bytes must be canonical, and the chain
    must end where chain_heads says it does (a deleted tail shows there).
    """
    listed: list[str] = []
    trust: Trust = "pinned" if ring.pinned is not None else "database"
    total = 0
    checked: list[str] = []
    verifier: ChainVerifier | None = None
    try:
        for row in await connection.fetch(
            "SELECT key_id, public_key, created_at, retired_at FROM signing_keys"
        ):
            try:
                add_listed_key(
                    ring, row["key_id"], row["public_key"], row["created_at"], row["retired_at"]
                )
            except ValueError as error:
                raise VerificationFailed(Failure("bad key", str(error))) from None
            listed.append(row["key_id"])
        if tenants is not None:
            await _refuse_tenants_without_ledger(connection, tenants)
        else:
            tenants = [
                row["tenant"]
                for row in await connection.fetch(
                    f"SELECT tenant FROM chain_heads WHERE {HAS_LEDGER}"
                    " UNION SELECT DISTINCT tenant FROM events ORDER BY 1"
                )
            ]
        for tenant in tenants:
            checked.append(tenant)
            verifier = ChainVerifier(tenant, ring)
            after = 0
            while True:
                rows = await connection.fetch(_DATABASE_PAGE, tenant, after, page)
                for row in rows:
                    _check_row(verifier, row)
                    if progress is not None:
                        progress(1)
                if len(rows) < page:
                    break
                after = rows[-1]["seq"]
            total += verifier.count
            counted, verifier = verifier, None
            head = await connection.fetchrow(
                "SELECT seq, hash FROM chain_heads WHERE tenant = $1", tenant
            )
            last_seq = counted.expected_seq - 1
            if head is None or (head["seq"], head["hash"]) != (last_seq, counted.last_hash):
                shown = "no head" if head is None else f"seq {head['seq']} ({head['hash']})"
                raise VerificationFailed(
                    Failure(
                        "chain head mismatch",
                        f"the chain ends at seq {last_seq} but its recorded head is {shown}",
                        tenant,
                        last_seq + 1,
                    )
                )
    except VerificationFailed as failed:
        failure = failed.failure
        good = 0
        if verifier is not None:
            failure, good = failure.at_seq(verifier.expected_seq), verifier.count
        return Report(False, total + good, checked, trust, listed, failure)
    return Report(True, total, checked, trust, listed)


HAS_LEDGER: Final = "seq > 0"
"""Of a `chain_heads` row: its tenant has a ledger. A head is made at seq 0 just before a
tenant's first append, and stays there if that append is refused: no ledger yet. (A tenant
with records has a ledger whatever its head says: verify then finds the head wrong.)"""


async def _refuse_tenants_without_ledger(connection: Connection, tenants: list[str]) -> None:
    """A tenant named that has neither a head past seq 0 nor a record is a mistake in the
    request (as for export), not a ledger found wrong: LookupError, before anything is
    verified."""
    unknown = await connection.fetchval(
        "SELECT array_agg(tenant ORDER BY ordinality) FROM unnest($1::text[]) WITH ORDINALITY"
        " AS asked(tenant, ordinality)"
        " WHERE NOT EXISTS (SELECT 1 FROM chain_heads h"
        f" WHERE h.tenant = asked.tenant AND h.{HAS_LEDGER})"
        " AND NOT EXISTS (SELECT 1 FROM events e WHERE e.tenant = asked.tenant)",
        tenants,
    )
    if unknown:
        raise LookupError(f"tenant {unknown[0]!r} has no ledger")


_DATABASE_PAGE: Final = """
SELECT tenant, seq, stream_id, version, type, canonical, data::text AS data_copy,
       meta::text AS meta_copy, recorded_at, prev_hash, hash, signature, key_id
FROM events WHERE tenant = $1 AND seq > $2 ORDER BY seq LIMIT $3
"""


def _check_row(verifier: ChainVerifier, row: Any) -> None:
    seq: int = row["seq"]
    canonical = bytes(row["canonical"])

    def fail(reason: str, detail: str) -> None:
        verifier.fail(reason, detail, seq, None)

    try:
        signed = _fast_decoder.decode(canonical)
        canonical_form = canonical_json(signed)
    except (msgspec.DecodeError, InvalidPayloadError) as error:
        fail("malformed record", f"stored bytes are not ledger JSON ({error})")
        return
    if canonical_form != canonical or not isinstance(signed, dict):
        fail("non-canonical record", "stored bytes are not the JCS form of their content")
        return
    if proof := signed.keys() & PROOF_MEMBERS:
        # Signed bytes holding a proof member: a bundle line would hold it twice. Merged
        # with the row's proof below, it would vanish unseen.
        fail("unknown member", f"{_names(proof)} in the signed bytes")
    record = check_shape(
        {**signed, "hash": row["hash"], "signature": row["signature"], "key_id": row["key_id"]},
        verifier.tenant,
        None,
    )
    columns = {
        "tenant": row["tenant"],
        "seq": seq,
        "stream": row["stream_id"],
        "version": row["version"],
        "type": row["type"],
        "recorded_at": format_timestamp(row["recorded_at"]),
        "prev_hash": row["prev_hash"],
    }
    for name, value in columns.items():
        if record[name] != value:
            fail(
                "column mismatch",
                f"column {name} is {value!r}, the signed record says {record[name]!r}",
            )
    digest = verifier.vet(record, canonical)
    for name in ("data", "meta"):
        if not _same_json(row[f"{name}_copy"], signed[name]):
            fail("copy mismatch", f"the jsonb copy of {name} differs from the signed {name}")
    verifier.accept(seq, digest)


def _same_json(copy_text: str, signed: Any) -> bool:
    """Equal as JSON, strictly: Python's == would take true for 1 and 10.0 for 10."""
    try:
        return canonical_json(_fast_decoder.decode(copy_text)) == canonical_json(signed)
    except (msgspec.DecodeError, InvalidPayloadError):
        return False
