"""Deterministic generator of docs/examples/ and of the receipt vectors in docs/receipts.md.

Everything here is signed with the committed TEST ONLY key next to this file. No database is
involved: records are built with eventstore.receipts, lines with eventstore.bundle.record_line,
exactly as the store and the exporter build them, from fixed timestamps. RSASSA-PKCS1-v1_5 is
deterministic, so the output is byte-identical on every run (tests/test_receipt_vectors.py
checks the committed files against it).

    uv run python tests/vectors/make_examples.py            # rewrite docs/examples/
    uv run python tests/vectors/make_examples.py --vectors  # print the vector blocks of
                                                            # docs/receipts.md
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import msgspec
from cryptography.hazmat.primitives.asymmetric import rsa

from eventstore.bundle import record_line
from eventstore.canonical import canonical_json
from eventstore.keys import load_private_key
from eventstore.receipts import (
    GENESIS_HASH,
    canonical_bytes,
    covered_record,
    format_timestamp,
    key_id_of,
    public_key_pem,
    record_hash,
    sign_hash,
)
from eventstore.store import Actor, Metadata
from eventstore.verify import BUNDLE_FORMAT

VECTORS_DIR: Final = Path(__file__).resolve().parent
REPOSITORY: Final = VECTORS_DIR.parents[1]
TEST_PRIVATE_KEY: Final = VECTORS_DIR / "TEST-ONLY-signing-key.pem"
TEST_PUBLIC_KEY: Final = VECTORS_DIR / "TEST-ONLY-signing-key.pub.pem"
EXAMPLES_DIR: Final = REPOSITORY / "docs" / "examples"
SAMPLE_BUNDLE: Final = EXAMPLES_DIR / "sample-bundle.jsonl"
SAMPLE_PUBLIC_KEY: Final = EXAMPLES_DIR / "sample-signing-key.pub.pem"


def load_test_key() -> rsa.RSAPrivateKey:
    """The committed TEST ONLY private key (published: it proves nothing)."""
    return load_private_key(TEST_PRIVATE_KEY)


def _at(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _meta(
    user: str,
    role: str,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    trace_id: str | None = None,
) -> Any:
    """meta exactly as the store writes it: Metadata with every member, absent ones null."""
    return msgspec.to_builtins(
        Metadata(
            actor=Actor(user=user, role=role),
            correlation_id=correlation_id,
            causation_id=causation_id,
            trace_id=trace_id,
        )
    )


@dataclass(frozen=True, slots=True)
class Event:
    stream: str
    type: str
    data: Any
    meta: Any
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class Receipt:
    covered: dict[str, Any]
    canonical: bytes
    hash: str
    signature: str
    key_id: str

    def line(self) -> bytes:
        return record_line(self.canonical, self.hash, self.signature, self.key_id)


def build_chain(key: rsa.RSAPrivateKey, tenant: str, events: list[Event]) -> list[Receipt]:
    """Receipts for `events`, as one tenant's chain from seq 1; versions counted per stream."""
    key_id = key_id_of(key.public_key())
    versions: dict[str, int] = {}
    prev_hash = GENESIS_HASH
    receipts = []
    for seq, event in enumerate(events, start=1):
        versions[event.stream] = versions.get(event.stream, 0) + 1
        covered = covered_record(
            tenant=tenant,
            seq=seq,
            stream=event.stream,
            version=versions[event.stream],
            type=event.type,
            data=event.data,
            meta=event.meta,
            recorded_at=event.recorded_at,
            prev_hash=prev_hash,
        )
        canonical = canonical_bytes(covered)
        digest = record_hash(canonical)
        receipts.append(Receipt(covered, canonical, digest, sign_hash(key, digest), key_id))
        prev_hash = digest
    return receipts


# ----------------------------------------------------------------------- the receipt vectors

VECTOR_TENANT: Final = "acme-nordic"
VECTOR_EVENTS: Final = [
    Event(
        stream="customer-acme-nordic",
        type="CustomerRegistered",
        data={
            "legal_name": "Ødegård & Søn AS",
            "display_name": "Zoë's Café 東京",
            "country": "NO",
        },
        meta=_meta("u-1001", "ADMIN", correlation_id="corr-0001"),
        recorded_at=_at("2025-01-15T09:30:00.000001Z"),
    ),
    Event(
        stream="onboarding-acme-nordic",
        type="SetupStepCompleted",
        data={
            "step": "import-contacts",
            "note": 'imported 2 files:\n\t"contacts.csv"\u0007',
            "settings": {
                "timezone": "Europe/Oslo",
                "Locale": "nb-NO",
                "_flags": {"z": True, "é": None, "a": False},
                "9": "nine",
                "10": "ten",
            },
        },
        meta=_meta("u-1001", "ADMIN", correlation_id="corr-0001", causation_id="cmd-77"),
        recorded_at=_at("2025-01-15T09:41:17.250000Z"),
    ),
    Event(
        stream="value-definition-vd-001",
        type="ValueDefinitionSubmitted",
        data={
            "metric": "invoices_processed",
            "currency": "EUR",
            "price_per_unit": "0.35",
            "minimum_monthly_fee": "199.00",
            "baseline_adjustment": -1250,
            "max_units": 9007199254740991,
        },
        meta=_meta(
            "u-2002",
            "FINANCE",
            correlation_id="corr-0002",
            trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        recorded_at=_at("2025-01-16T14:05:09.000000Z"),
    ),
]


def vector_receipts() -> list[Receipt]:
    return build_chain(load_test_key(), VECTOR_TENANT, VECTOR_EVENTS)


def signed_digest(hash_hex: str) -> str:
    """What EMSA-PKCS1-v1_5 hashes into its DigestInfo: SHA-256 of the 32 raw hash bytes."""
    return hashlib.sha256(bytes.fromhex(hash_hex)).hexdigest()


_BASE64_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def with_a_pad_bit_set(signature: str) -> str:
    """The same bytes as `signature` (256 of them: base64 ending in one character and `==`)
    to a lenient base64 decoder, with an unused low bit of that character set: a spelling the
    format refuses (section 7)."""
    assert signature[-3:-2] != "=", signature
    assert signature.endswith("=="), signature
    last = _BASE64_ALPHABET.index(signature[-3])
    return f"{signature[:-3]}{_BASE64_ALPHABET[last | 1]}=="


def render_vectors() -> str:
    """The vector blocks of docs/receipts.md, in the form the test there parses."""
    fence = "```"
    parts = [
        f"{fence}text vector key.public-pem\n{public_key_pem(load_test_key().public_key())}"
        f"{fence}\n",
    ]
    for number, receipt in enumerate(vector_receipts(), start=1):
        covered = json.dumps(receipt.covered, indent=2, ensure_ascii=False)
        proof = "\n".join(
            (
                f"canonical length: {len(receipt.canonical)} bytes",
                f"hash:             {receipt.hash}",
                f"signed digest:    {signed_digest(receipt.hash)}",
                f"key_id:           {receipt.key_id}",
                f"signature:        {receipt.signature}",
            )
        )
        parts.append(
            f"{fence}json vector record-{number}.covered\n{covered}\n{fence}\n\n"
            f"{fence}text vector record-{number}.canonical\n"
            f"{receipt.canonical.decode('utf-8')}\n{fence}\n\n"
            f"{fence}text vector record-{number}.proof\n{proof}\n{fence}\n"
        )
    first = vector_receipts()[0].signature
    parts.append(
        f"{fence}text vector record-1.signature-not-canonical\n{with_a_pad_bit_set(first)}\n"
        f"{fence}\n"
    )
    return "\n".join(parts)


# ----------------------------------------------------------------------- the sample bundle

SAMPLE_TENANT: Final = "northwind-dental"
SAMPLE_KEY_VALID_FROM: Final = _at("2025-01-06T08:00:00.000000Z")
SAMPLE_EXPORTED_AT: Final = _at("2025-02-03T10:00:00.000000Z")
_ANNA = ("u-anna.kowalczyk", "CUSTOMER_ADMIN")
_OPS = ("u-ops-17", "ONBOARDING_MANAGER")
SAMPLE_EVENTS: Final = [
    Event(
        stream="customer-northwind-dental",
        type="CustomerRegistered",
        data={
            "legal_name": "Northwind Dental Praxis GmbH",
            "country": "DE",
            "billing_contact": {
                "name": "Jürgen Weiß",
                "email": "billing@northwind-dental.example",
            },
            "plan": "value-based",
        },
        meta=_meta(*_OPS, correlation_id="onb-7c1e2a", trace_id="0af7651916cd43dd8448eb211c80319c"),
        recorded_at=_at("2025-01-07T09:12:44.518203Z"),
    ),
    Event(
        stream="onboarding-northwind-dental",
        type="SetupStepCompleted",
        data={"step": "connect-practice-software", "system": "Dentix 9", "completed": 1, "of": 4},
        meta=_meta(*_ANNA, correlation_id="onb-7c1e2a"),
        recorded_at=_at("2025-01-08T14:03:10.004117Z"),
    ),
    Event(
        stream="onboarding-northwind-dental",
        type="SetupStepCompleted",
        data={
            "step": "import-appointment-history",
            "months_imported": 24,
            "appointments": 18342,
            "completed": 2,
            "of": 4,
        },
        meta=_meta(*_ANNA, correlation_id="onb-7c1e2a"),
        recorded_at=_at("2025-01-09T08:47:31.992640Z"),
    ),
    Event(
        stream="value-definition-vd-2025-001",
        type="ValueDefinitionSubmitted",
        data={
            "value_definition": "vd-2025-001",
            "metric": "recall_appointments_kept",
            "unit": "appointment",
            "baseline_per_month": 412,
            "price_per_unit": {"amount": "3.50", "currency": "EUR"},
            "cap_per_month": {"amount": "2500.00", "currency": "EUR"},
            "measurement": {"source": "practice-software", "window": "calendar-month"},
        },
        meta=_meta(*_ANNA, correlation_id="onb-7c1e2a", causation_id="cmd-submit-vd-2025-001"),
        recorded_at=_at("2025-01-14T16:20:05.377001Z"),
    ),
    Event(
        stream="onboarding-northwind-dental",
        type="StageApproved",
        data={
            "stage": "value-definition",
            "value_definition": "vd-2025-001",
            "approved_by": "Dr. Anna Kowalczyk",
            "comment": "Baseline = Ø of Q3 to Q4 2024, agreed in the kick-off call.",
        },
        meta=_meta(*_OPS, correlation_id="onb-7c1e2a", causation_id="cmd-approve-vd-2025-001"),
        recorded_at=_at("2025-01-20T11:05:59.000000Z"),
    ),
    Event(
        stream="customer-northwind-dental",
        type="ValueBillingActivated",
        data={
            "value_definition": "vd-2025-001",
            "effective_from": "2025-02-01",
            "first_invoice_period": "2025-02",
            "setup_fee_waived": True,
        },
        meta=_meta(*_OPS, correlation_id="onb-7c1e2a"),
        recorded_at=_at("2025-01-31T17:45:00.250000Z"),
    ),
]


def sample_public_key() -> bytes:
    return public_key_pem(load_test_key().public_key()).encode("ascii")


def sample_bundle() -> bytes:
    """The sample bundle, byte for byte as the exporter would write it for this ledger."""
    key = load_test_key()
    header = canonical_json(
        {
            "format": BUNDLE_FORMAT,
            "tenant": SAMPLE_TENANT,
            "exported_at": format_timestamp(SAMPLE_EXPORTED_AT),
            "keys": [
                {
                    "key_id": key_id_of(key.public_key()),
                    "public_key": public_key_pem(key.public_key()),
                    "valid_from": format_timestamp(SAMPLE_KEY_VALID_FROM),
                    "valid_until": None,
                }
            ],
        }
    )
    lines = [header] + [
        receipt.line() for receipt in build_chain(key, SAMPLE_TENANT, SAMPLE_EVENTS)
    ]
    return b"".join(line + b"\n" for line in lines)


def main(argv: list[str]) -> int:
    if argv == ["--vectors"]:
        sys.stdout.write(render_vectors())
        return 0
    if argv:
        sys.stderr.write(__doc__ or "")
        return 2
    EXAMPLES_DIR.mkdir(parents=True, exist_ok=True)
    SAMPLE_BUNDLE.write_bytes(sample_bundle())
    SAMPLE_PUBLIC_KEY.write_bytes(sample_public_key())
    sys.stdout.write(f"wrote {SAMPLE_BUNDLE} and {SAMPLE_PUBLIC_KEY}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
