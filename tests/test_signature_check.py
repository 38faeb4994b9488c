"""signature_holds recovers the signed digest instead of calling `verify`: the verdicts must
be the same, for genuine signatures and for every kind of forgery an auditor might meet."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from functools import cache
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore.receipts import sign_hash, signature_holds
from tests.vectors import make_examples


@cache
def _keys() -> tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]:
    return make_examples.load_test_key(), rsa.generate_private_key(65537, 2048)


def _by_verify(public_key: rsa.RSAPublicKey, hash_hex: str, signature_b64: str) -> bool:
    """The verdict of cryptography's own verify call: the reference."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        if base64.b64encode(signature).decode() != signature_b64:
            return False  # section 7: one spelling per signature, as strict decoders read it
        public_key.verify(signature, bytes.fromhex(hash_hex), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _signed(algorithm: hashes.HashAlgorithm | utils.Prehashed, message: bytes) -> bytes:
    return _keys()[0].sign(message, padding.PKCS1v15(), algorithm)


Forgery = Callable[[str, str, int], str]  # (hash, genuine signature, a number) -> signature

FORGERIES: Final[dict[str, Forgery]] = {
    "genuine": lambda digest, signature, n: signature,
    "bit flipped": lambda digest, signature, n: _b64(
        _flip(base64.b64decode(signature), n % (256 * 8))
    ),
    "other key": lambda digest, signature, n: sign_hash(_keys()[1], digest),
    "other hash": lambda digest, signature, n: sign_hash(
        _keys()[0], hashlib.sha256(digest.encode()).hexdigest()
    ),
    # The digest placed in the DigestInfo as it is, not hashed again: a reading of the
    # scheme that the format does not use.
    "prehashed": lambda digest, signature, n: _b64(
        _signed(utils.Prehashed(hashes.SHA256()), bytes.fromhex(digest))
    ),
    "SHA-512": lambda digest, signature, n: _b64(_signed(hashes.SHA512(), bytes.fromhex(digest))),
    "SHA-384": lambda digest, signature, n: _b64(_signed(hashes.SHA384(), bytes.fromhex(digest))),
    "truncated": lambda digest, signature, n: _b64(base64.b64decode(signature)[: -(1 + n % 8)]),
    "one byte longer": lambda digest, signature, n: _b64(base64.b64decode(signature) + b"\x00"),
    "leading zero": lambda digest, signature, n: _b64(b"\x00" + base64.b64decode(signature)),
    "random bytes": lambda digest, signature, n: _b64(hashlib.sha512(str(n).encode()).digest() * 4),
    "zero": lambda digest, signature, n: _b64(bytes(256)),
    "one": lambda digest, signature, n: _b64(bytes(255) + b"\x01"),
    "modulus": lambda digest, signature, n: _b64(
        _keys()[0].public_key().public_numbers().n.to_bytes(256, "big")
    ),
    "not base64": lambda digest, signature, n: signature[:-4] + "!!!=",
    "unpadded base64": lambda digest, signature, n: signature.rstrip("="),
    "pad bit set": lambda digest, signature, n: make_examples.with_a_pad_bit_set(signature),
    "empty": lambda digest, signature, n: "",
}


def _flip(raw: bytes, bit: int) -> bytes:
    changed = bytearray(raw)
    changed[bit // 8] ^= 1 << (bit % 8)
    return bytes(changed)


@settings(max_examples=150, deadline=None)
@given(
    message=st.binary(max_size=64),
    forgery=st.sampled_from(sorted(FORGERIES)),
    number=st.integers(0, 10**6),
)
def test_recovering_the_digest_gives_the_verdict_verify_gives(
    message: bytes, forgery: str, number: int
) -> None:
    key = _keys()[0]
    digest = hashlib.sha256(message).hexdigest()
    signature = FORGERIES[forgery](digest, sign_hash(key, digest), number)
    verdict = signature_holds(key.public_key(), digest, signature)
    assert verdict == _by_verify(key.public_key(), digest, signature)
    assert verdict is (forgery == "genuine")


def test_every_forgery_is_tried() -> None:
    """The property above samples the forgeries; here each is checked once, deterministically."""
    key = _keys()[0]
    digest = hashlib.sha256(b"receipt").hexdigest()
    genuine = sign_hash(key, digest)
    for name, forge in FORGERIES.items():
        signature = forge(digest, genuine, 12345)
        assert signature_holds(key.public_key(), digest, signature) is (name == "genuine"), name
        assert _by_verify(key.public_key(), digest, signature) is (name == "genuine"), name
