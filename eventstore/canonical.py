"""RFC 8785 (JCS) canonical JSON for the ledger's value domain, with its validation.

The ledger admits only JSON that every auditor's implementation reads the same way: no floats
(their text form differs between languages), integers within +-(2**53 - 1) (the range an
IEEE double holds exactly), string keys, valid Unicode. Within that domain JCS reduces to:
object members sorted by the UTF-16 code units of their names, no insignificant white space,
integers in plain decimal, and strings escaped as ECMAScript's JSON.stringify does. msgspec's
string encoder already escapes exactly so (short forms for \\b \\t \\n \\f \\r, lowercase
\\u00xx for other controls, everything else verbatim UTF-8), which a test checks against an
independent implementation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec

MAX_SAFE_INTEGER: Final = 2**53 - 1
MAX_DEPTH: Final = 32
"""Nesting limit for data and meta: deep enough for any business payload, shallow enough that
a hostile document cannot exhaust the stack of a recursive reader."""

_encode_str = msgspec.json.encode


class InvalidPayloadError(ValueError):
    """A value that cannot enter the ledger; `path` names where it sits (e.g. ``data.amount``)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path or "$"
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _utf16_key(name: str) -> bytes:
    return name.encode("utf-16-be", "surrogatepass")


def _child(path: str, key: str) -> str:
    if key.isidentifier():
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"  # ASCII-escaped: safe even for a lone surrogate


def _encode_text(text: str, path: str, what: str) -> bytes:
    """A JSON string, refusing what cannot be stored or read back the same everywhere."""
    try:
        encoded = _encode_str(text)
    except UnicodeEncodeError:
        raise InvalidPayloadError(path, f"{what} is not valid Unicode (lone surrogate)") from None
    if "\x00" in text:
        # PostgreSQL's text and jsonb cannot hold U+0000, so the ledger cannot either.
        raise InvalidPayloadError(path, f"{what} contains U+0000, which cannot be stored")
    return encoded


def _write(value: object, path: str, depth: int, out: list[bytes]) -> None:
    # Exact type checks: bool is an int subclass and must be tested first.
    if value is None:
        out.append(b"null")
    elif value is True:
        out.append(b"true")
    elif value is False:
        out.append(b"false")
    elif isinstance(value, str):
        out.append(_encode_text(value, path, "string"))
    elif isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise InvalidPayloadError(
                path, "integer outside +-(2**53-1); send large numbers as decimal strings"
            )
        out.append(str(int(value)).encode())
    elif isinstance(value, float):
        raise InvalidPayloadError(path, "floats are not allowed; send decimals as strings")
    elif isinstance(value, Mapping):
        if depth >= MAX_DEPTH:
            raise InvalidPayloadError(path, f"nested deeper than {MAX_DEPTH} levels")
        for key in value:
            if not isinstance(key, str):
                raise InvalidPayloadError(path, f"object key {key!r} is not a string")
        out.append(b"{")
        first = True
        for key in sorted(value, key=_utf16_key):
            if not first:
                out.append(b",")
            first = False
            child = _child(path, key)
            out.append(_encode_text(key, child, "member name"))
            out.append(b":")
            _write(value[key], child, depth + 1, out)
        out.append(b"}")
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        if depth >= MAX_DEPTH:
            raise InvalidPayloadError(path, f"nested deeper than {MAX_DEPTH} levels")
        out.append(b"[")
        for index, item in enumerate(value):
            if index:
                out.append(b",")
            _write(item, f"{path}[{index}]", depth + 1, out)
        out.append(b"]")
    else:
        raise InvalidPayloadError(path, f"{type(value).__name__} is not a JSON value")


def canonical_json(value: Any, path: str = "", depth: int = 0) -> bytes:
    """The JCS bytes of `value`, or InvalidPayloadError naming the first offending path.

    `path` prefixes the paths in errors; the root itself is reported as ``$``. `depth` is the
    level `value` will sit at inside a larger document (data and meta sit at level 1 of a
    record), so that the limit holds for the record as a whole.
    """
    out: list[bytes] = []
    _write(value, path, depth, out)
    return b"".join(out)
