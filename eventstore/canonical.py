"""RFC 8785 (JCS) canonical JSON for the ledger's value domain, with its validation.

The ledger admits only JSON that every auditor's implementation reads the same way: no floats
(their text form differs between languages), integers within +-(2**53 - 1) (the range an
IEEE double holds exactly), string keys, valid Unicode. Within that domain JCS reduces to:
object members sorted by the UTF-16 code units of their names, no insignificant white space,
integers in plain decimal, and strings escaped as ECMAScript's JSON.stringify does. msgspec's
string encoder already escapes exactly so (short forms for \\b \\t \\n \\f \\r, lowercase
\\u00xx for other controls, everything else verbatim UTF-8), which a test checks against an
independent implementation.

Two writers produce the same bytes. The fast one takes what nearly every payload is: plain
dicts, lists, strings, integers, booleans and None, in the domain, whose member names hold
no code point from U+D800 up (below it, code-point order and UTF-16 order agree); a walk checks
that, and msgspec, sorting members by code point, writes it. Anything else (other types,
higher member names, any value to refuse) goes to the general writer, which sorts by UTF-16
code units and names the first offending path; it builds that path only when it refuses.
For the verifier, decode_plain_canonical tells whether given bytes are what the fast writer
writes for their content, by screening the bytes rather than walking the decoded value.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import msgspec

MAX_SAFE_INTEGER: Final = 2**53 - 1
MAX_DEPTH: Final = 32
"""Nesting limit for data and meta: deep enough for any business payload, shallow enough that
a hostile document cannot exhaust the stack of a recursive reader."""

_MIN_SAFE_INTEGER: Final = -MAX_SAFE_INTEGER
_SORTS_BY_CODE_POINT: Final = "\ud800"
"""Names made only of code points below this one sort the same by code point as by UTF-16
code unit (only surrogates and the code points above them are ordered differently)."""

_encode_str = msgspec.json.encode
_encode_sorted = msgspec.json.Encoder(order="sorted").encode


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


# ----------------------------------------------------------------------------- the fast writer


def _plain(value: object, depth: int) -> bool:
    """Whether the fast writer may take `value` at nesting level `depth`: exact dict, list,
    str, int, bool and None only, no U+0000, safe integers, not nested too deeply, member
    names below U+D800. Lone surrogates are left to the encoder, which refuses them."""
    kind = type(value)
    if kind is dict:
        if depth >= MAX_DEPTH:
            return False
        members: dict[Any, Any] = value  # type: ignore[assignment]
        for key in members:
            if type(key) is not str or "\x00" in key:
                return False
            if not key.isascii() and max(key) >= _SORTS_BY_CODE_POINT:
                return False
        return _plain_items(members.values(), depth + 1)
    if kind is list:
        items: list[Any] = value  # type: ignore[assignment]
        return depth < MAX_DEPTH and _plain_items(items, depth + 1)
    return _plain_items((value,), depth)


def _plain_items(items: Iterable[Any], depth: int) -> bool:
    """Whether every one of `items`, at nesting level `depth`, is plain (see _plain)."""
    for item in items:
        kind = type(item)
        if kind is str:
            if "\x00" in item:
                return False
        elif kind is int:
            if not _MIN_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                return False
        elif kind is dict or kind is list:
            if not _plain(item, depth):
                return False
        elif item is not None and kind is not bool:
            return False
    return True


def plain_canonical_json(value: Any, depth: int = 0) -> bytes | None:
    """canonical_json(value, depth=depth) if the fast writer takes `value`, else None (the
    value may still be in the domain: canonical_json decides)."""
    if not _plain(value, depth):
        return None
    try:
        return _encode_sorted(value)
    except UnicodeEncodeError:
        return None  # a lone surrogate: the general writer names it


def encode_plain(value: Any) -> bytes:
    """The JCS bytes of a value made of parts of one that plain_canonical_json (or
    decode_plain_canonical) took, no deeper than that one, e.g. a record without some of its
    members; nothing is checked again."""
    return _encode_sorted(value)


def _refuse_float(text: str) -> Any:
    raise ValueError(f"float {text}")


_decode_without_floats = msgspec.json.Decoder(float_hook=_refuse_float).decode


def _screen_table() -> bytes:
    """Byte classes for decode_plain_canonical: digits become 0; what may come right before a
    number's digits (``:`` ``,`` ``-``) becomes ``:``, opening brackets ``[`` (an array's first
    element follows one); backslash stays; lead bytes from 0xEE up become H; all else space."""
    table = bytearray(b" " * 256)
    for classes, to in ((b"0123456789", b"0"), (b":,-", b":"), (b"[{", b"["), (b"\\", b"\\")):
        for byte in classes:
            table[byte] = to[0]
    for byte in range(0xEE, 0x100):
        table[byte] = ord("H")
    return bytes(table)


_SCREEN: Final = _screen_table()
_LONG_NUMBERS: Final = (b":" + b"0" * 16, b"[" + b"0" * 16)


def decode_plain_canonical(raw: bytes) -> Any:
    """The object or array `raw` holds if `raw` is exactly its canonical_json form and the fast
    writer takes it (as plain_canonical_json), else None: `raw` may then still be canonical,
    or not even JSON, which the caller finds out the slow way.

    Instead of walking the decoded value, this screens the bytes, which is sound because they
    are what msgspec writes for it. No floats: the decoder refuses them. Every integer is a
    token right after ``:``, ``,`` or ``[`` (or its ``-``), so one beyond 2**53-1 shows as 16
    digits there. U+0000 can only show as ``\\u0000``. Names and strings are verbatim UTF-8, so
    a code point from U+E000 up shows as a lead byte from 0xEE up (lone surrogates cannot be
    written at all). And MAX_DEPTH opening brackets or fewer cannot nest deeper than that. A
    screen that does not clear the bytes leaves the decision to the walk."""
    try:
        value = _decode_without_floats(raw)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None
    if type(value) is not dict and type(value) is not list:
        return None
    screened = raw.translate(_SCREEN)
    if (
        b"H" in screened
        or screened.count(b"[") > MAX_DEPTH
        or _LONG_NUMBERS[0] in screened
        or _LONG_NUMBERS[1] in screened
        or (b"\\" in screened and b"\\u0000" in raw)
    ):
        encoded = plain_canonical_json(value)
    else:
        try:
            encoded = _encode_sorted(value)
        except UnicodeEncodeError:  # pragma: no cover - the decoder makes no lone surrogates
            return None
    return value if encoded == raw else None


# ----------------------------------------------------------------------------- the general writer


class _Refused(Exception):
    """A refusal inside the general writer. The containers it unwinds through add their steps
    (member names, array indexes), so that a path is only built for a value refused."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.steps: list[str | int] = []

    def path(self, prefix: str) -> str:
        path = prefix
        for step in reversed(self.steps):
            path = f"{path}[{step}]" if isinstance(step, int) else _child(path, step)
        return path


def _encode_text(text: str, what: str) -> bytes:
    """A JSON string, refusing what cannot be stored or read back the same everywhere.

    A str subclass is written as the plain string it holds (the encoder takes exact str only),
    whatever its own __str__ or __contains__ would say."""
    text = str.__str__(text)
    try:
        encoded = _encode_str(text)
    except UnicodeEncodeError:
        raise _Refused(f"{what} is not valid Unicode (lone surrogate)") from None
    if "\x00" in text:
        # PostgreSQL's text and jsonb cannot hold U+0000, so the ledger cannot either.
        raise _Refused(f"{what} contains U+0000, which cannot be stored")
    return encoded


def _sorted_names(value: Mapping[str, Any]) -> list[str]:
    """Member names in UTF-16 code unit order; plain sorting when it is the same order."""
    for name in value:
        if type(name) is not str or not (name.isascii() or max(name) < _SORTS_BY_CODE_POINT):
            return sorted(value, key=_utf16_key)
    return sorted(value)


def _write(value: object, depth: int, out: list[bytes]) -> None:
    # Exact type checks: bool is an int subclass and must be tested first.
    if value is None:
        out.append(b"null")
    elif value is True:
        out.append(b"true")
    elif value is False:
        out.append(b"false")
    elif isinstance(value, str):
        out.append(_encode_text(value, "string"))
    elif isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise _Refused("integer outside +-(2**53-1); send large numbers as decimal strings")
        out.append(str(int(value)).encode())
    elif isinstance(value, float):
        raise _Refused("floats are not allowed; send decimals as strings")
    elif isinstance(value, Mapping):
        if depth >= MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels")
        for key in value:
            if not isinstance(key, str):
                raise _Refused(f"object key {key!r} is not a string")
        out.append(b"{")
        first = True
        for key in _sorted_names(value):
            if not first:
                out.append(b",")
            first = False
            try:
                out.append(_encode_text(key, "member name"))
                out.append(b":")
                _write(value[key], depth + 1, out)
            except _Refused as refused:
                refused.steps.append(key)
                raise
        out.append(b"}")
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        if depth >= MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels")
        out.append(b"[")
        for index, item in enumerate(value):
            if index:
                out.append(b",")
            try:
                _write(item, depth + 1, out)
            except _Refused as refused:
                refused.steps.append(index)
                raise
        out.append(b"]")
    else:
        raise _Refused(f"{type(value).__name__} is not a JSON value")


def canonical_json(value: Any, path: str = "", depth: int = 0) -> bytes:
    """The JCS bytes of `value`, or InvalidPayloadError naming the first offending path.

    `path` prefixes the paths in errors; the root itself is reported as ``$``. `depth` is the
    level `value` will sit at inside a larger document (data and meta sit at level 1 of a
    record), so that the limit holds for the record as a whole.
    """
    fast = plain_canonical_json(value, depth)
    if fast is not None:
        return fast
    out: list[bytes] = []
    try:
        _write(value, depth, out)
    except _Refused as refused:
        raise InvalidPayloadError(refused.path(path), refused.reason) from None
    return b"".join(out)


def refuse_non_unicode(value: Any, path: str = "") -> None:
    """InvalidPayloadError naming the first string of `value` (member names included) that is
    not Unicode: a lone surrogate, which JSON's `\\ud800` escape can spell but no UTF-8 text
    can hold. For JSON that is read but never hashed (a bundle's header), where canonical_json
    would also judge what the ledger's domain leaves out."""
    if isinstance(value, str):
        _unicode(value, path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            refuse_non_unicode(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for name, item in value.items():
            _unicode(name, f"{_child(path, name)} (its name)")
            refuse_non_unicode(item, _child(path, name))


def _unicode(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPayloadError(path, "string is not valid Unicode (lone surrogate)") from None
