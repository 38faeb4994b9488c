"""The receipt format, version 1: what is covered, how it is hashed, signed and identified.

Auditors implement this independently from `docs/receipts.md`; the test vectors there are
checked against this module, so the two cannot drift.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from datetime import UTC, datetime
from typing import Any, Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from eventstore.canonical import canonical_json

RECEIPT_VERSION: Final = 1
GENESIS_HASH: Final = "0" * 64
COVERED_MEMBERS: Final = frozenset(
    {"v", "tenant", "seq", "stream", "version", "type", "data", "meta", "recorded_at", "prev_hash"}
)
PROOF_MEMBERS: Final = frozenset({"hash", "signature", "key_id"})
MIN_RSA_BITS: Final = 2048

# ASCII digits only: \d would also take the digits of other scripts (e.g. Arabic-Indic),
# which strptime reads as numbers, giving one instant several spellings.
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z\Z")
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with exactly six fractional digits and ``Z``: one spelling per instant."""
    if moment.tzinfo is None:
        raise ValueError("recorded_at must be timezone-aware")
    utc = moment.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "Z"


def parse_timestamp(text: str, member: str = "recorded_at") -> datetime:
    """The inverse of format_timestamp; any other spelling is refused, in a message naming the
    `member` the text was read from (a bundle's exported_at and its keys' validity are read
    here too)."""
    if not _TIMESTAMP.match(text):
        shown = repr(text) if len(text) <= 64 else f"{text[:64]!r}... ({len(text)} characters)"
        raise ValueError(f"{member} {shown} is not RFC 3339 UTC with microseconds and Z")
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def is_hex_digest(text: object) -> bool:
    return isinstance(text, str) and _HEX64.match(text) is not None


def covered_record(
    *,
    tenant: str,
    seq: int,
    stream: str,
    version: int,
    type: str,
    data: Any,
    meta: Any,
    recorded_at: datetime,
    prev_hash: str,
) -> dict[str, Any]:
    """The JSON object the hash covers, with exactly the members of format version 1."""
    return {
        "v": RECEIPT_VERSION,
        "tenant": tenant,
        "seq": seq,
        "stream": stream,
        "version": version,
        "type": type,
        "data": data,
        "meta": meta,
        "recorded_at": format_timestamp(recorded_at),
        "prev_hash": prev_hash,
    }


def assemble_canonical(
    *,
    tenant_json: bytes,
    seq: int,
    stream_json: bytes,
    version: int,
    type_json: bytes,
    data_json: bytes,
    meta_json: bytes,
    recorded_at: str,
    prev_hash: str,
) -> bytes:
    """The same bytes as canonical_bytes(covered_record(...)), from parts already canonical.

    The append path validates and canonicalises data, meta and the ids once, then may have to
    rebuild a record on a new chain head; splicing the parts in JCS member order keeps that
    rebuild cheap. A property test holds it equal to the general serialiser.
    """
    return b"".join(
        (
            b'{"data":',
            data_json,
            b',"meta":',
            meta_json,
            b',"prev_hash":"',
            prev_hash.encode(),
            b'","recorded_at":"',
            recorded_at.encode(),
            b'","seq":',
            str(seq).encode(),
            b',"stream":',
            stream_json,
            b',"tenant":',
            tenant_json,
            b',"type":',
            type_json,
            b',"v":1,"version":',
            str(version).encode(),
            b"}",
        )
    )


def record_hash(canonical: bytes) -> str:
    return hashlib.sha256(canonical).hexdigest()


def canonical_bytes(record: dict[str, Any]) -> bytes:
    """JCS of the covered record; raises InvalidPayloadError naming the offending path."""
    return canonical_json(record)


def key_id_of(public_key: rsa.RSAPublicKey) -> str:
    """Lowercase hex SHA-256 of the DER SubjectPublicKeyInfo: a name nobody can choose."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def public_key_pem(public_key: rsa.RSAPublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


_PEM_BLOCK: Final = re.compile(r"-----BEGIN ([^-\r\n]*)-----")
_PUBLIC_KEY_PEM: Final = re.compile(
    r"[ \t\r\n]*-----BEGIN PUBLIC KEY-----\r?\n[A-Za-z0-9+/=\r\n]+"
    r"-----END PUBLIC KEY-----[ \t\r\n]*\Z"
)


def load_public_key_pem(pem: str | bytes) -> rsa.RSAPublicKey:
    """Parse an RSA public key fit to verify receipts, or raise ValueError saying why not.

    Exactly what docs/receipts.md names: one `BEGIN PUBLIC KEY` block (a DER
    SubjectPublicKeyInfo) and nothing else but whitespace, so the key_id (SHA-256 of those
    DER bytes) is the same whoever computes it. A parser that skipped junk, took the first of
    several blocks or read PKCS#1 would trust keys an independent verifier refuses."""
    text = pem.decode("ascii", "replace") if isinstance(pem, bytes) else pem
    labels = _PEM_BLOCK.findall(text)
    if len(labels) > 1:
        raise ValueError(f"{len(labels)} PEM blocks where one public key is expected")
    if labels and labels[0] != "PUBLIC KEY":
        raise ValueError(f"a PEM {labels[0][:40]!r} block, not a 'PUBLIC KEY' one")
    if not _PUBLIC_KEY_PEM.match(text):
        raise ValueError(
            "not a PEM public key (one BEGIN PUBLIC KEY block, nothing else but whitespace)"
        )
    try:
        key = serialization.load_pem_public_key(text.encode("ascii"))
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise ValueError(f"not a PEM public key ({error})") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    if key.key_size < MIN_RSA_BITS:
        raise ValueError(f"RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} are required")
    return key


_PKCS1V15: Final = padding.PKCS1v15()
_SHA256: Final = hashes.SHA256()


def sign_hash(private_key: rsa.RSAPrivateKey, hash_hex: str) -> str:
    """RSASSA-PKCS1-v1_5 / SHA-256 over the 32 raw bytes of the hash, base64 (padded)."""
    signature = private_key.sign(bytes.fromhex(hash_hex), _PKCS1V15, _SHA256)
    return base64.b64encode(signature).decode("ascii")


def signature_holds(public_key: rsa.RSAPublicKey, hash_hex: str, signature_b64: str) -> bool:
    """The signature is `public_key`'s RSASSA-PKCS1-v1_5 / SHA-256 signature of the 32 bytes.

    Checked by recovering the signed SHA-256 digest and comparing it with our own: OpenSSL
    recovers it only from an encoding that is exactly the one RFC 8017 (9.2) prescribes for
    that digest (padding and DigestInfo compared whole, as in its verify), so this is the
    same verdict as `public_key.verify`, a test holds the two together, and it costs a third
    less (verify sets up a digest context per call)."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        # The decoder ignores pad bits that are not zero (…gR== reads as …gQ==); strict ones
        # (Go's StdEncoding.Strict, Rust's base64) refuse such text, so only the one spelling
        # of these bytes is a signature, and every verifier gives the same verdict.
        if base64.b64encode(signature).decode("ascii") != signature_b64:
            return False
        signed = public_key.recover_data_from_signature(signature, _PKCS1V15, _SHA256)
        return signed == hashlib.sha256(bytes.fromhex(hash_hex)).digest()
    except (InvalidSignature, binascii.Error, ValueError):
        return False
