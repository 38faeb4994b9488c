"""docs/receipts.md against the code, so the auditors' specification cannot drift from it.

Every vector block of the document (a fenced block whose info string is ``<lang> vector
<name>``) is recomputed from the committed TEST ONLY key: canonical bytes, hash, signed digest,
signature and key_id. The sample bundle in docs/examples/ is regenerated and compared byte for
byte, and a ledger written by the real store is exported and verified offline and via the CLI.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, utils

from eventstore.bundle import export_bundle, record_line
from eventstore.canonical import canonical_json
from eventstore.errors import InvalidAppendError
from eventstore.receipts import (
    COVERED_MEMBERS,
    GENESIS_HASH,
    assemble_canonical,
    canonical_bytes,
    covered_record,
    key_id_of,
    load_public_key_pem,
    parse_timestamp,
    public_key_pem,
    record_hash,
    sign_hash,
    signature_holds,
)
from eventstore.store import EventStore, Metadata, NewEvent, StreamState
from eventstore.verify import BUNDLE_FORMAT, KeyRing, pinned_keyring, verify_bundle
from tests.vectors import make_examples
from valueledger.cli import main

REPOSITORY = Path(__file__).resolve().parents[1]
DOC = REPOSITORY / "docs" / "receipts.md"
VERIFY_SOURCE = REPOSITORY / "eventstore" / "verify.py"
SAMPLE_COMMAND = [
    "verify",
    "--bundle",
    "docs/examples/sample-bundle.jsonl",
    "--key",
    "docs/examples/sample-signing-key.pub.pem",
]

_BLOCK = re.compile(
    r"^```(?P<lang>\w+) vector (?P<name>[\w.-]+)\n(?P<body>.*?)\n```$", re.MULTILINE | re.DOTALL
)
RECORDS = [1, 2, 3]
JCS_EXAMPLES = ["rfc-sorting", "rfc-strings", "utf16-order", "escapes", "verbatim", "nesting"]


def vector_blocks(text: str) -> dict[str, tuple[str, str]]:
    """name -> (language, body) of every vector block, refusing a name used twice."""
    blocks: dict[str, tuple[str, str]] = {}
    for match in _BLOCK.finditer(text):
        assert match["name"] not in blocks, f"vector {match['name']} appears twice"
        blocks[match["name"]] = (match["lang"], match["body"])
    return blocks


DOC_TEXT = DOC.read_text(encoding="utf-8")
BLOCKS = vector_blocks(DOC_TEXT)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        assert name not in result, f"duplicate member {name!r}"
        result[name] = value
    return result


def _no_float(text: str) -> Any:
    raise AssertionError(f"float {text} in a vector")


def strict_json(text: str) -> Any:
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_float=_no_float)


def block(name: str, language: str) -> str:
    found_language, body = BLOCKS[name]
    assert found_language == language, f"vector {name} should be a {language} block"
    return body


def proof(number: int) -> dict[str, str]:
    fields = {}
    for line in block(f"record-{number}.proof", "text").splitlines():
        name, _, value = line.partition(":")
        fields[name.strip()] = value.strip()
    return fields


# ------------------------------------------------------------------------- the document


def test_the_document_holds_exactly_the_expected_vectors() -> None:
    expected = {"key.public-pem", "key.key-id"}
    for number in RECORDS:
        expected |= {f"record-{number}.{part}" for part in ("covered", "canonical", "proof")}
    for name in JCS_EXAMPLES:
        expected |= {f"jcs-{name}.input", f"jcs-{name}.output"}
    expected.add("record-1.signature-not-canonical")
    assert set(BLOCKS) == expected
    # Every fenced block announcing itself as a vector was understood by the pattern above.
    assert DOC_TEXT.count(" vector ") >= len(expected)
    assert len(re.findall(r"^```\w+ vector ", DOC_TEXT, re.MULTILINE)) == len(expected)


def test_key_vectors_are_the_committed_test_key() -> None:
    pem = block("key.public-pem", "text") + "\n"
    key = make_examples.load_test_key()
    assert pem == public_key_pem(key.public_key())
    assert pem == make_examples.TEST_PUBLIC_KEY.read_text(encoding="ascii")
    public = load_public_key_pem(pem)
    assert public.key_size == 2048
    assert public.public_numbers().e == 65537
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert len(der) == 294
    assert block("key.key-id", "text") == key_id_of(public) == hashlib.sha256(der).hexdigest()


@pytest.mark.parametrize("number", RECORDS)
def test_record_vector(number: int) -> None:
    covered = strict_json(block(f"record-{number}.covered", "json"))
    assert set(covered) == COVERED_MEMBERS
    # The covered record is exactly what covered_record() builds from its parts.
    parts = {name: covered[name] for name in COVERED_MEMBERS - {"v", "recorded_at"}}
    rebuilt = covered_record(**parts, recorded_at=parse_timestamp(covered["recorded_at"]))
    assert rebuilt == covered

    canonical = canonical_bytes(covered)
    assert block(f"record-{number}.canonical", "text").encode("utf-8") == canonical
    assert rfc8785.dumps(covered) == canonical
    assert canonical == assemble_canonical(
        tenant_json=canonical_json(covered["tenant"]),
        seq=covered["seq"],
        stream_json=canonical_json(covered["stream"]),
        version=covered["version"],
        type_json=canonical_json(covered["type"]),
        data_json=canonical_json(covered["data"]),
        meta_json=canonical_json(covered["meta"]),
        recorded_at=covered["recorded_at"],
        prev_hash=covered["prev_hash"],
    )

    fields = proof(number)
    assert set(fields) == {"canonical length", "hash", "signed digest", "key_id", "signature"}
    assert fields["canonical length"] == f"{len(canonical)} bytes"
    digest = hashlib.sha256(canonical).hexdigest()
    assert fields["hash"] == record_hash(canonical) == digest
    assert fields["signed digest"] == make_examples.signed_digest(digest)
    assert fields["signed digest"] == hashlib.sha256(hashlib.sha256(canonical).digest()).hexdigest()

    key = make_examples.load_test_key()
    public = key.public_key()
    assert fields["key_id"] == key_id_of(public) == block("key.key-id", "text")
    assert fields["signature"] == sign_hash(key, digest)  # PKCS#1 v1.5 is deterministic
    assert len(fields["signature"]) == 344
    assert signature_holds(public, digest, fields["signature"])
    # The document's reading of the scheme: the message is the 32 hash bytes, so a prehashed
    # verification is given SHA-256 of those bytes, the "signed digest".
    raw_signature = base64.b64decode(fields["signature"], validate=True)
    public.verify(raw_signature, bytes.fromhex(digest), padding.PKCS1v15(), hashes.SHA256())
    public.verify(
        raw_signature,
        bytes.fromhex(fields["signed digest"]),
        padding.PKCS1v15(),
        utils.Prehashed(hashes.SHA256()),
    )


def test_a_signature_spelled_other_than_canonically_is_refused() -> None:
    """The vector decodes, leniently, to record 1's genuine signature bytes; strict decoding
    (as Go's and Rust's do) refuses it, and so must every verifier, so that all agree."""
    spelled = block("record-1.signature-not-canonical", "text")
    genuine = proof(1)["signature"]
    assert spelled != genuine
    assert base64.b64decode(spelled, validate=True) == base64.b64decode(genuine, validate=True)
    public = make_examples.load_test_key().public_key()
    assert signature_holds(public, proof(1)["hash"], genuine)
    assert not signature_holds(public, proof(1)["hash"], spelled)


def test_record_vectors_form_one_chain_that_verifies_as_a_bundle() -> None:
    covered = [strict_json(block(f"record-{n}.covered", "json")) for n in RECORDS]
    hashes_ = [proof(n)["hash"] for n in RECORDS]
    assert [record["seq"] for record in covered] == RECORDS
    assert {record["tenant"] for record in covered} == {make_examples.VECTOR_TENANT}
    assert [record["prev_hash"] for record in covered] == [GENESIS_HASH, *hashes_[:-1]]

    key = make_examples.load_test_key()
    header = {
        "format": BUNDLE_FORMAT,
        "tenant": make_examples.VECTOR_TENANT,
        "exported_at": "2025-02-01T00:00:00.000000Z",
        "keys": [
            {
                "key_id": key_id_of(key.public_key()),
                "public_key": public_key_pem(key.public_key()),
                "valid_from": "2025-01-01T00:00:00.000000Z",
                "valid_until": None,
            }
        ],
    }
    lines = [canonical_json(header)]
    for number, record in zip(RECORDS, covered, strict=True):
        fields = proof(number)
        lines.append(
            record_line(
                canonical_bytes(record), fields["hash"], fields["signature"], fields["key_id"]
            )
        )
    bundle = b"".join(line + b"\n" for line in lines)
    ring = pinned_keyring([make_examples.TEST_PUBLIC_KEY.read_bytes()])
    report = verify_bundle(io.BytesIO(bundle), ring)
    assert report.ok, report.failure
    assert report.records == 3


def test_the_generator_renders_the_documented_vectors() -> None:
    """`make_examples.py --vectors` prints the blocks the document holds (to refresh it)."""
    rendered = vector_blocks(make_examples.render_vectors())
    assert rendered
    for name, rendered_block in rendered.items():
        assert BLOCKS[name] == rendered_block, name


@pytest.mark.parametrize("name", JCS_EXAMPLES)
def test_jcs_example(name: str) -> None:
    value = strict_json(block(f"jcs-{name}.input", "json"))
    language, body = BLOCKS[f"jcs-{name}.output"]
    expected = bytes.fromhex("".join(body.split())) if language == "hex" else body.encode()
    assert language in {"hex", "text"}
    assert canonical_json(value) == expected
    assert rfc8785.dumps(value) == expected


def test_every_failure_reason_is_documented() -> None:
    source = VERIFY_SOURCE.read_text(encoding="utf-8")
    reasons = set(re.findall(r"\b(?:fail|Failure)\(\s*\"([^\"]+)\"", source))
    assert len(reasons) > 20
    section = DOC_TEXT.split("### 10.5 Failure reasons", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([^`]+)` \|", section, re.MULTILINE)
    assert len(documented) == len(set(documented))
    assert set(documented) == reasons


def test_the_document_gives_the_readme_command() -> None:
    assert "uv run valueledger " + " ".join(SAMPLE_COMMAND) in DOC_TEXT


# ------------------------------------------------------------------------- docs/examples


def test_the_sample_files_are_reproducible() -> None:
    assert make_examples.SAMPLE_BUNDLE.read_bytes() == make_examples.sample_bundle()
    assert make_examples.SAMPLE_PUBLIC_KEY.read_bytes() == make_examples.sample_public_key()
    assert make_examples.SAMPLE_PUBLIC_KEY.read_bytes() == (
        make_examples.TEST_PUBLIC_KEY.read_bytes()
    )


def test_the_sample_bundle_is_an_onboarding_of_one_tenant() -> None:
    lines = make_examples.SAMPLE_BUNDLE.read_bytes().splitlines()
    header = strict_json(lines[0].decode())
    records = [strict_json(line.decode()) for line in lines[1:]]
    assert header["tenant"] == make_examples.SAMPLE_TENANT
    assert [record["seq"] for record in records] == [1, 2, 3, 4, 5, 6]
    assert {record["tenant"] for record in records} == {make_examples.SAMPLE_TENANT}
    assert [record["type"] for record in records] == [
        "CustomerRegistered",
        "SetupStepCompleted",
        "SetupStepCompleted",
        "ValueDefinitionSubmitted",
        "StageApproved",
        "ValueBillingActivated",
    ]
    for line in lines:  # every line is in JCS form, as the exporter writes it
        assert canonical_json(strict_json(line.decode())) == line


def _cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_the_readme_command_verifies_the_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPOSITORY)
    result = _cli(*SAMPLE_COMMAND)
    assert result.exit_code == 0, result.output
    assert "trusted keys: only those given with --key" in result.output
    assert "OK: 6 records of 1 tenant(s) verified" in result.output


def test_the_sample_without_key_trusts_its_own_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPOSITORY)
    result = _cli("verify", "--bundle", "docs/examples/sample-bundle.jsonl")
    assert result.exit_code == 0, result.output
    assert "listed by the bundle itself" in result.output
    assert block("key.key-id", "text") in result.output


def _sample_lines() -> list[bytes]:
    return make_examples.SAMPLE_BUNDLE.read_bytes().splitlines(keepends=True)


def _verify_lines(lines: list[bytes]) -> Any:
    ring = pinned_keyring([make_examples.SAMPLE_PUBLIC_KEY.read_bytes()])
    return verify_bundle(io.BytesIO(b"".join(lines)), ring)


def test_tampering_with_the_sample_is_caught_at_its_seq() -> None:
    lines = _sample_lines()
    altered = lines.copy()
    altered[4] = altered[4].replace(b'"3.50"', b'"0.35"')
    assert altered[4] != lines[4]
    report = _verify_lines(altered)
    assert not report.ok
    assert report.failure is not None
    assert (report.failure.reason, report.failure.seq, report.failure.line) == (
        "hash mismatch",
        4,
        5,
    )
    report = _verify_lines(lines[:3] + lines[4:])
    assert report.failure is not None
    assert (report.failure.reason, report.failure.seq) == ("missing seq", 3)


def test_a_deleted_tail_goes_unnoticed_as_documented() -> None:
    """The honest limit of section 11: a bundle cannot show that its last records are gone."""
    report = _verify_lines(_sample_lines()[:-2])
    assert report.ok
    assert report.records == 4
    assert _verify_lines(_sample_lines()[:1]).ok  # header only: 0 records, still OK


def test_a_lone_surrogate_key_in_a_bundle_is_a_failure_not_a_crash() -> None:
    lines = _sample_lines()
    lines[1] = lines[1].replace(b'"data":{', b'"data":{"\\udc00":1,', 1)
    report = _verify_lines(lines)
    assert report.failure is not None
    assert (report.failure.reason, report.failure.line) == ("invalid value", 2)


# ------------------------------------------------------------------------- a real ledger


async def _fill(store: EventStore, tenant: str, meta: Metadata) -> None:
    customer = f"customer-{tenant}"
    onboarding = f"onboarding-{tenant}"
    await store.append(
        customer,
        [NewEvent("CustomerRegistered", {"legal_name": "Zoë Ødegård AS", "country": "NO"})],
        StreamState.NO_STREAM,
        tenant,
        meta,
    )
    await store.append(
        onboarding,
        [
            NewEvent("SetupStepCompleted", {"step": "connect", "note": "tab\there\u0007"}),
            NewEvent("SetupStepCompleted", {"step": "import", "rows": 18342}),
        ],
        StreamState.NO_STREAM,
        tenant,
        meta,
    )
    await store.append(
        f"value-definition-{tenant}",
        [
            NewEvent(
                "ValueDefinitionSubmitted",
                {"price_per_unit": {"amount": "3.50", "currency": "EUR"}, "baseline": -12},
            )
        ],
        StreamState.NO_STREAM,
        tenant,
        meta,
    )
    await store.append(
        onboarding, [NewEvent("StageApproved", {"stage": "value-definition"})], 2, tenant, meta
    )


async def _export(store: EventStore, tenant: str, from_seq: int = 1) -> bytes:
    out = io.BytesIO()
    async with store.pool.acquire() as connection:
        await export_bundle(connection, tenant, out, datetime.now(UTC), from_seq=from_seq)
    return out.getvalue()


async def test_an_exported_ledger_verifies_offline_and_through_the_cli(
    store: EventStore, tenant: str, meta: Metadata, tmp_path: Path
) -> None:
    await _fill(store, tenant, meta)
    bundle = await _export(store, tenant)
    assert len(bundle.splitlines()) == 6

    report = verify_bundle(io.BytesIO(bundle), KeyRing())
    assert report.ok, report.failure
    assert (report.records, report.tenants, report.trust) == (5, [tenant], "bundle")
    assert store.signing_key.key_id in report.key_ids

    right_pem = public_key_pem(store.signing_key.private_key.public_key()).encode()
    report = verify_bundle(io.BytesIO(bundle), pinned_keyring([right_pem]))
    assert report.ok, report.failure
    assert (report.records, report.trust) == (5, "pinned")

    partial = await _export(store, tenant, from_seq=3)
    report = verify_bundle(io.BytesIO(partial), KeyRing())
    assert report.failure is not None  # a whole chain starts at seq 1
    assert (report.failure.reason, report.failure.seq) == ("missing seq", 1)
    report = verify_bundle(io.BytesIO(partial), KeyRing(), first_seq=3)
    assert report.ok, report.failure
    assert report.records == 3
    assert bundle.splitlines()[3:] == partial.splitlines()[1:]

    bundle_file = tmp_path / "bundle.jsonl"
    bundle_file.write_bytes(bundle)
    right_key = tmp_path / "right.pub.pem"
    right_key.write_bytes(right_pem)

    result = _cli("verify", "--bundle", str(bundle_file))
    assert result.exit_code == 0, result.output
    assert "OK: 5 records of 1 tenant(s) verified" in result.output

    result = _cli("verify", "--bundle", str(bundle_file), "--key", str(right_key))
    assert result.exit_code == 0, result.output
    assert "trusted keys: only those given with --key" in result.output

    wrong_key = str(make_examples.TEST_PUBLIC_KEY)
    result = _cli("verify", "--bundle", str(bundle_file), "--key", wrong_key)
    assert result.exit_code == 1, result.output
    assert f"FAILED after 0 good records: tenant {tenant}, seq 1, line 2: untrusted key" in (
        result.output
    )

    result = _cli("verify", "--bundle", str(bundle_file), "--key", wrong_key, "--json")
    assert result.exit_code == 1
    failure = json.loads(result.output)["failure"]
    assert (failure["reason"], failure["seq"], failure["tenant"]) == ("untrusted key", 1, tenant)


async def test_data_the_store_accepts_can_be_exported_and_verified(
    store: EventStore, tenant: str, meta: Metadata
) -> None:
    """The nesting limit holds for the record as a whole, so whatever the store accepts can be
    exported and verified, and one level more is refused at the door."""
    data: Any = "bottom"
    for _ in range(31):
        data = [data]
    recorded = await store.append(
        f"deep-{tenant}", [NewEvent("Deep", data)], StreamState.NO_STREAM, tenant, meta
    )
    assert recorded[0].seq == 1  # accepted and signed
    bundle = await _export(store, tenant)
    report = verify_bundle(io.BytesIO(bundle), KeyRing())
    assert report.ok, report.failure
    with pytest.raises(InvalidAppendError, match="nested deeper than 32"):
        await store.append(
            f"deep-{tenant}", [NewEvent("Deep", [data])], StreamState.ANY, tenant, meta
        )
