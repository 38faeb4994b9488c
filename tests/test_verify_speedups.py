"""The quick paths of canonical_json and of bundle verification agree with the general ones.

canonical_json has a fast writer for plain values (msgspec, sorting by code point) beside the
general one (UTF-16 order, error paths built lazily); decode_plain_canonical recognises a line
that the fast writer reproduces by screening its bytes; the verifier parses recorded_at once,
with fromisoformat where that reads exactly what strptime reads. Each of them must give what
the general path gives, byte for byte and error message for error message.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore.canonical import (
    MAX_DEPTH,
    MAX_SAFE_INTEGER,
    InvalidPayloadError,
    canonical_json,
    decode_plain_canonical,
    encode_plain,
    plain_canonical_json,
)
from eventstore.receipts import COVERED_MEMBERS, parse_timestamp
from eventstore.verify import (
    BUNDLE_FORMAT,
    KeyRing,
    VerificationFailed,
    _parse_line,
    parse_line,
    parse_strict,
    pinned_keyring,
    verify_bundle,
)
from tests.vectors import make_examples

_TRICKY = st.sampled_from(
    [
        "\x00",
        "\x01",
        "\x1f",
        '"',
        "\\",
        "é",
        "\u2028",
        "\ud7ff",
        "\ue000",
        "\ufb33",
        "\uffff",
        "\U00010000",
        "\U0001f600",
        "a",
        "Z",
        "_",
        "1",
        " ",
    ]
)
_CHAR = st.one_of(st.characters(exclude_categories=["Cs"]), _TRICKY)
TEXT = st.text(_CHAR, max_size=8)
NEAR_LIMIT = st.sampled_from(
    [MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, MAX_SAFE_INTEGER + 1, -MAX_SAFE_INTEGER - 1, 10**20]
)
INTEGER = st.one_of(st.integers(-(2**60), 2**60), NEAR_LIMIT)
SCALAR = st.one_of(st.none(), st.booleans(), INTEGER, TEXT)
JSON = st.recursive(
    SCALAR,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=5)
    ),
    max_leaves=30,
)


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def _as_tuples(value: Any) -> Any:
    """The same JSON with every array a tuple: only the general writer takes it."""
    if isinstance(value, list):
        return tuple(_as_tuples(item) for item in value)
    if isinstance(value, dict):
        return {name: _as_tuples(item) for name, item in value.items()}
    return value


def _outcome(value: Any, path: str = "data", depth: int = 0) -> tuple[str, str]:
    try:
        return "ok", canonical_json(value, path, depth).decode("utf-8")
    except InvalidPayloadError as error:
        return "refused", str(error)


# ------------------------------------------------------------------------- the two writers


@settings(max_examples=400)
@given(JSON, st.integers(0, 2))
def test_fast_and_general_writer_agree(value: Any, depth: int) -> None:
    """Byte for byte when accepted, path and reason when refused."""
    fast = plain_canonical_json(value, depth)
    outcome = _outcome(value, depth=depth)
    assert _outcome(_as_tuples(value), depth=depth) == outcome
    if fast is not None:
        assert outcome == ("ok", fast.decode("utf-8"))
        assert fast == rfc8785.dumps(value)


@pytest.mark.parametrize(
    ("value", "taken"),
    [
        ({"b": [1, "x", None, True], "a": {"é": -3}}, True),
        ({"\U0001f600": 1, "\ue000": 2}, False),  # names whose UTF-16 order differs
        ({"k": "\U0001f600\ue000"}, True),  # only names matter for the order
        ({"n": MAX_SAFE_INTEGER}, True),
        ({"n": MAX_SAFE_INTEGER + 1}, False),
        ({"n": 1.0}, False),
        ({"s": "a\x00"}, False),
        ({"s": "\ud800"}, False),
        ((1, 2), False),
        ({1: "x"}, False),
        (_nested(MAX_DEPTH), True),
        (_nested(MAX_DEPTH + 1), False),
    ],
)
def test_what_the_fast_writer_takes(value: Any, taken: bool) -> None:
    assert (plain_canonical_json(value) is not None) == taken


def test_general_writer_sorts_by_utf16_and_names_nested_paths() -> None:
    value = {"\ue000": 2, "\U0001f600": 1, "a b": [{"x": [0, 1.5]}]}
    assert canonical_json({"\ue000": 2, "\U0001f600": 1}) == rfc8785.dumps(
        {"\ue000": 2, "\U0001f600": 1}
    )
    with pytest.raises(InvalidPayloadError) as caught:
        canonical_json(value, "data")
    assert caught.value.path == 'data["a b"][0].x[1]'
    assert caught.value.reason == "floats are not allowed; send decimals as strings"


class _Members(Mapping[str, Any]):
    def __init__(self, members: dict[str, Any]) -> None:
        self._members = members

    def __getitem__(self, name: str) -> Any:
        return self._members[name]

    def __iter__(self) -> Any:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)


def test_other_mappings_and_sequences_take_the_general_writer() -> None:
    value = {"b": _Members({"z": 1, "y": ["n"]}), "a": (True, None)}
    assert plain_canonical_json(value) is None
    assert canonical_json(value) == b'{"a":[true,null],"b":{"y":["n"],"z":1}}'


# ------------------------------------------------------------------------- decode_plain_canonical


@settings(max_examples=400)
@given(JSON)
def test_decode_plain_canonical_reads_back_what_the_fast_writer_wrote(value: Any) -> None:
    fast = plain_canonical_json(value)
    if fast is None or not isinstance(value, dict | list):
        return
    assert decode_plain_canonical(fast) == value


@settings(max_examples=400)
@given(JSON, st.sampled_from(["canonical", "sorted", "spaced", "ascii"]))
def test_decode_plain_canonical_only_accepts_canonical_lines(value: Any, spelling: str) -> None:
    """Whatever it accepts is exactly the canonical form of what it returns."""
    try:
        if spelling == "canonical":
            raw = canonical_json(value)
        else:
            raw = json.dumps(
                value,
                sort_keys=spelling != "spaced",
                separators=(", ", ": ") if spelling == "spaced" else (",", ":"),
                ensure_ascii=spelling == "ascii",
            ).encode("utf-8", "surrogatepass")
    except InvalidPayloadError:
        raw = json.dumps(value).encode("utf-8", "surrogatepass")
    decoded = decode_plain_canonical(raw)
    if decoded is not None:
        assert canonical_json(decoded) == raw
        assert parse_strict(raw) == decoded


@pytest.mark.parametrize(
    ("raw", "accepted"),
    [
        (b'{"a":[1,"x",null,true,false],"b":{}}', True),
        (b'{"n":9007199254740991,"m":[-9007199254740991]}', False),  # not sorted
        (b'{"m":[-9007199254740991],"n":9007199254740991}', True),
        (b'{"n":9007199254740992}', False),
        (b'{"n":[-9007199254740992]}', False),
        (b'{"n":[9007199254740992]}', False),
        (b'{"n":[1,9007199254740992]}', False),
        (b'{"n":1.5}', False),
        (b'{"n":1e5}', False),
        (b'{"s":"\\u0000"}', False),
        (b'{"s":"\\\\u0000"}', True),  # a backslash, then text
        (b'{"s":"\\ud800"}', False),
        (b'{"s":"\xf0\x9f\x98\x80\xee\x80\x80"}', True),
        (b'{"\xf0\x9f\x98\x80":1,"\xee\x80\x80":2}', False),  # JCS order, not the fast writer's
        (b'{"\xee\x80\x80":2,"\xf0\x9f\x98\x80":1}', False),  # not JCS order
        (b'{"a":1,"a":1}', False),
        (b'{"a":1} ', False),
        (b'"text"', False),
        (b"12345678901234567", False),
        (b'{"s":"a\xffb"}', False),
        (b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, True),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), False),
        (b"[" * 100_000 + b"]" * 100_000, False),
        (b"[" + b",".join([b'"["'] * 40) + b"]", True),  # brackets in strings count too
    ],
)
def test_decode_plain_canonical_cases(raw: bytes, accepted: bool) -> None:
    decoded = decode_plain_canonical(raw)
    assert (decoded is not None) == accepted
    if decoded is not None:
        assert canonical_json(decoded) == raw
        assert encode_plain(decoded) == raw


# ------------------------------------------------------------------------- record lines


def _line(record: dict[str, Any]) -> bytes:
    return canonical_json(record)


GENUINE = make_examples.sample_bundle().splitlines()


@pytest.mark.parametrize("number", range(1, len(GENUINE)))
def test_parse_line_gives_the_covered_canonical_bytes(number: int) -> None:
    raw = GENUINE[number]
    record, canonical = parse_line(raw, make_examples.SAMPLE_TENANT, number + 1)
    assert record == parse_strict(raw)
    assert canonical == canonical_json({name: record[name] for name in COVERED_MEMBERS})


@settings(max_examples=200)
@given(data=JSON, meta=JSON)
def test_parse_line_on_any_payload_agrees_with_the_spec(data: Any, meta: Any) -> None:
    record = {**parse_strict(GENUINE[1]), "data": data, "meta": meta}
    try:
        raw = _line(record)
    except InvalidPayloadError:
        return
    parsed, canonical = parse_line(raw, make_examples.SAMPLE_TENANT, 2)
    assert parsed == record
    assert canonical == rfc8785.dumps({name: record[name] for name in COVERED_MEMBERS})


def test_bundle_with_payloads_off_the_fast_path_verifies() -> None:
    """Member names beyond U+D800, 16-digit integers, a backslash-u text, 32 levels: each takes
    a slower path, and the bundle still verifies; a change to one of them is still caught."""
    key = make_examples.load_test_key()
    moment = datetime(2025, 1, 10, 8, tzinfo=UTC)
    payloads: list[Any] = [
        {"\U0001f600": 1, "\ue000": 2, "plain": "x"},
        {"big": MAX_SAFE_INTEGER, "small": [-MAX_SAFE_INTEGER]},
        {"text": "\\u0000 is not U+0000"},
        _nested(MAX_DEPTH - 1),
        {"emoji in a value": "\U0001f600\ue000"},
    ]
    events = [
        make_examples.Event(
            "s", "Checked", payload, {"actor": "a"}, moment + timedelta(seconds=index)
        )
        for index, payload in enumerate(payloads)
    ]
    receipts = make_examples.build_chain(key, "t", events)
    pem = make_examples.TEST_PUBLIC_KEY.read_bytes()
    header = canonical_json(
        {
            "format": BUNDLE_FORMAT,
            "tenant": "t",
            "exported_at": "2025-02-01T00:00:00.000000Z",
            "keys": [
                {
                    "key_id": receipts[0].key_id,
                    "public_key": pem.decode(),
                    "valid_from": "2025-01-01T00:00:00.000000Z",
                    "valid_until": None,
                }
            ],
        }
    )
    lines = [header, *(receipt.line() for receipt in receipts)]
    report = verify_bundle(io.BytesIO(b"".join(line + b"\n" for line in lines)), KeyRing())
    assert report.ok, report.failure
    assert report.records == len(payloads)
    pinned = pinned_keyring([pem])
    lines[1] = lines[1].replace(b'"\xee\x80\x80":2', b'"\xee\x80\x80":3')
    report = verify_bundle(io.BytesIO(b"".join(line + b"\n" for line in lines)), pinned)
    assert report.failure is not None
    assert (report.failure.reason, report.failure.seq, report.failure.line) == (
        "hash mismatch",
        1,
        2,
    )


# ------------------------------------------------------------------------- recorded_at


def _parsed(text: str) -> tuple[Any, ...]:
    try:
        return "ok", parse_timestamp(text)
    except ValueError as error:
        return "refused", "bad member", str(error)


def _parsed_by_the_verifier(text: str) -> tuple[Any, ...]:
    record = {**parse_strict(GENUINE[1]), "recorded_at": text}
    try:
        _, _, recorded_at = _parse_line(_line(record), make_examples.SAMPLE_TENANT, 2)
    except VerificationFailed as failed:
        return "refused", failed.failure.reason, failed.failure.detail
    assert recorded_at.tzinfo is UTC
    return "ok", recorded_at


_FIELDS = st.tuples(
    st.integers(0, 9999),
    st.integers(0, 13),
    st.integers(0, 32),
    st.integers(0, 25),
    st.integers(0, 61),
    st.integers(0, 61),
    st.integers(0, 999_999),
)


@settings(max_examples=300)
@given(_FIELDS, st.sampled_from(["", "Z", "+00:00", "z", "Z\n"]))
def test_recorded_at_is_read_and_refused_as_parse_timestamp_does(
    fields: tuple[int, ...], suffix: str
) -> None:
    year, month, day, hour, minute, second, micro = fields
    text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{micro:06d}"
    assert _parsed_by_the_verifier(text + suffix) == _parsed(text + suffix)


@pytest.mark.parametrize(
    "text",
    [
        "2025-02-29T00:00:00.000000Z",
        "2024-02-29T23:59:59.999999Z",
        "0001-01-01T00:00:00.000000Z",
        "0999-12-31T00:00:00.000000Z",
        "2025-W02-5T08:00:01.00000Z",
        "2025-01-10 08:00:01.000001Z",
        "2025-01-10T08:00:01,000001Z",
        "\u0662025-01-10T08:00:01.000001Z",
        "2025-01-10T08:00:01.000001",
    ],
)
def test_recorded_at_edge_spellings(text: str) -> None:
    assert _parsed_by_the_verifier(text) == _parsed(text)
