"""What `verify --bundle` says about a hostile bundle: each documented reason, at the right seq,
in a bounded message that a terminal shows as text (never acts on), and a JSON report for a
machine reader whatever happened.

No database: bundles are the committed sample (docs/examples/), edited, and re-signed with
the committed TEST ONLY key where an edit must otherwise verify.
"""

from __future__ import annotations

import io
import json
import tempfile
import unicodedata
from pathlib import Path
from typing import Any, Final

import msgspec
import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore.bundle import record_line
from eventstore.canonical import canonical_json
from eventstore.receipts import (
    COVERED_MEMBERS,
    parse_timestamp,
    public_key_pem,
    record_hash,
    sign_hash,
)
from eventstore.verify import MAX_LINE_BYTES, KeyRing, Report, pinned_keyring, verify_bundle
from tests.vectors import make_examples
from valueledger.cli import main

HEADER, *LINES = make_examples.SAMPLE_BUNDLE.read_bytes().splitlines()
TENANT: Final = make_examples.SAMPLE_TENANT
PUBLIC_KEY: Final = make_examples.SAMPLE_PUBLIC_KEY


def _bundle(header: bytes = HEADER, lines: list[bytes] = LINES, end: bytes = b"\n") -> bytes:
    return b"\n".join([header, *lines]) + end


def _json(value: Any) -> bytes:
    """JSON as any writer may spell it (the exporter's JCS form refuses U+0000, for one)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _header(**members: Any) -> bytes:
    return _json({**json.loads(HEADER), **members})


def _key_entry(**members: Any) -> bytes:
    header = json.loads(HEADER)
    header["keys"] = [{**entry, **members} for entry in header["keys"]]
    return _json(header)


def _line(index: int, **members: Any) -> bytes:
    return _json({**json.loads(LINES[index]), **members})


def _with_line(index: int, line: bytes) -> list[bytes]:
    lines = list(LINES)
    lines[index] = line
    return lines


def _resigned_last(**members: Any) -> list[bytes]:
    """The bundle's lines with its last record changed and signed again with the sample's
    (TEST ONLY) key: a record the verifier can only refuse for its content."""
    record = {**json.loads(LINES[-1]), **members}
    canonical = canonical_json({name: record[name] for name in COVERED_MEMBERS})
    digest = record_hash(canonical)
    signature = sign_hash(make_examples.load_test_key(), digest)
    return _with_line(-1, record_line(canonical, digest, signature, record["key_id"]))


def _verified(raw: bytes, ring: KeyRing | None = None) -> Report:
    """One process's report, once worker processes checking a line at a time agree."""
    ring = ring if ring is not None else KeyRing()
    alone = verify_bundle(io.BytesIO(raw), ring)
    shared = verify_bundle(io.BytesIO(raw), ring, jobs=2, batch_lines=1)
    assert shared == alone
    return alone


def _failure(report: Report) -> tuple[str, str | None, int | None, int | None]:
    assert not report.ok
    assert report.failure is not None
    return report.failure.reason, report.failure.tenant, report.failure.seq, report.failure.line


def _cli(raw: bytes, *arguments: str) -> Result:
    with tempfile.TemporaryDirectory() as folder:
        bundle = Path(folder) / "bundle.jsonl"
        bundle.write_bytes(raw)
        return CliRunner().invoke(main, ["verify", "--bundle", str(bundle), *arguments])


def test_the_sample_verifies() -> None:
    assert _verified(_bundle()).ok


# ------------------------------------------------------------------- each documented reason


def test_a_record_outside_its_keys_validity() -> None:
    header = _key_entry(valid_from="2025-06-01T00:00:00.000000Z")
    report = _verified(_bundle(header), pinned_keyring([PUBLIC_KEY.read_bytes()]))
    assert _failure(report) == ("outside key validity", TENANT, 1, 2)
    assert report.records == 0


def test_a_record_of_another_version() -> None:
    report = _verified(_bundle(lines=_with_line(2, _line(2, v=2))))
    assert _failure(report) == ("unsupported version", TENANT, 3, 4)
    assert report.records == 2


def test_a_record_of_another_tenant() -> None:
    report = _verified(_bundle(lines=_with_line(2, _line(2, tenant="someone-else"))))
    assert _failure(report) == ("wrong tenant", TENANT, 3, 4)
    assert report.failure is not None
    assert report.failure.detail == "record belongs to 'someone-else'"


# ------------------------------------------------------------ the seq a failure is placed at


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ({"seq": 9, "hash": "not hex"}, "bad member"),
        ({"seq": 9, "extra": 1}, "unknown member"),
        ({"seq": 9, "v": 2}, "unsupported version"),
        ({"seq": 9, "tenant": "someone-else"}, "wrong tenant"),
    ],
)
def test_a_line_that_fails_is_placed_where_it_stands_not_where_it_claims(
    members: dict[str, Any], reason: str
) -> None:
    report = _verified(_bundle(lines=_with_line(2, _line(2, **members))))
    assert _failure(report) == (reason, TENANT, 3, 4)
    assert report.failure is not None
    assert report.failure.claimed_seq == 9
    assert "(the record claims seq 9)" in report.failure.describe()


def test_a_line_claiming_its_own_seq_says_no_more() -> None:
    report = _verified(_bundle(lines=_with_line(2, _line(2, hash="not hex"))))
    assert report.failure is not None
    assert (report.failure.seq, report.failure.claimed_seq) == (3, None)
    assert "claims" not in report.failure.describe()


def test_a_repeated_record_fails_where_it_stands() -> None:
    report = _verified(_bundle(lines=[*LINES[:3], LINES[0], *LINES[3:]]))
    assert _failure(report) == ("repeated seq", TENANT, 4, 5)
    assert report.failure is not None
    assert report.failure.detail == "seq 1 again or out of order (expected 4)"


# ------------------------------------------------------------------------- encodings, digits


def test_timestamps_take_ascii_digits_only() -> None:
    arabic_indic = "\u0662\u0660\u0662\u0665-02-03T09:15:00.000000Z"
    with pytest.raises(ValueError, match="is not RFC 3339"):
        parse_timestamp(arabic_indic)
    recorded = json.loads(LINES[-1])["recorded_at"]
    spelled = recorded.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    report = _verified(_bundle(lines=_resigned_last(recorded_at=spelled)))
    assert _failure(report) == ("bad member", TENANT, 6, 7)
    header = _key_entry(valid_from="٢٠٢٥-01-06T08:00:00.000000Z")
    assert _failure(_verified(_bundle(header))) == ("bad header", TENANT, None, 1)


@pytest.mark.parametrize(
    ("member", "raw"),
    [
        ("exported_at", _bundle(_header(exported_at="yesterday"))),
        ("valid_from", _bundle(_key_entry(valid_from="yesterday"))),
        ("valid_until", _bundle(_key_entry(valid_until="yesterday"))),
        ("recorded_at", _bundle(lines=_with_line(1, _line(1, recorded_at="yesterday")))),
    ],
)
def test_a_bad_timestamp_is_named_by_its_member(member: str, raw: bytes) -> None:
    report = _verified(raw)
    assert report.failure is not None
    assert report.failure.detail == (
        f"{member} 'yesterday' is not RFC 3339 UTC with microseconds and Z"
    )


def test_a_line_in_utf16_is_malformed() -> None:
    report = _verified(_bundle(lines=_with_line(1, LINES[1].decode().encode("utf-16"))))
    assert _failure(report) == ("malformed line", TENANT, 2, 3)


@pytest.mark.parametrize("line", [0, 3])
def test_a_byte_order_mark_is_refused(line: int) -> None:
    lines = [HEADER, *LINES]
    lines[line] = b"\xef\xbb\xbf" + lines[line]
    report = _verified(_bundle(lines[0], lines[1:]))
    assert report.failure is not None
    assert (report.failure.line, report.failure.reason) == (
        line + 1,
        "malformed line" if line else "bad header",
    )
    assert "byte-order mark" in report.failure.detail


# -------------------------------------------------------------------------------- messages


def test_a_trailing_blank_line_is_named_as_empty() -> None:
    report = _verified(_bundle(end=b"\n\n"))
    assert _failure(report) == ("malformed line", TENANT, 7, 8)
    assert report.failure is not None
    assert report.failure.detail.startswith("empty line")
    assert report.records == 6


def test_an_absurd_member_name_is_echoed_in_part() -> None:
    name = "x" * (MAX_LINE_BYTES - 20_000)
    report = _verified(_bundle(lines=_with_line(2, _line(2, **{name: 1}))))
    assert _failure(report) == ("unknown member", TENANT, 3, 4)
    assert report.failure is not None
    assert len(report.failure.describe()) < 300
    assert f"({len(name)} characters)" in report.failure.detail


def test_many_unknown_members_are_counted_not_listed() -> None:
    extra = {f"k{n}": n for n in range(10_000)}
    report = _verified(_bundle(lines=_with_line(2, _line(2, **extra))))
    assert report.failure is not None
    assert report.failure.detail.endswith("and 9995 more")


# ------------------------------------------------------------------------- terminal safety

FAKE_VERDICT: Final = "\x1b[2K\rOK: 6 records of 1 tenant(s) verified\x1b[8m"


def _control_characters(text: str) -> list[str]:
    """C0 and C1 controls and DEL, newline aside: what a terminal acts on."""
    return [char for char in text if unicodedata.category(char) == "Cc" and char != "\n"]


@pytest.mark.parametrize(
    "raw",
    [
        _bundle(_header(tenant=FAKE_VERDICT)),
        _bundle(lines=_with_line(0, _line(0, **{FAKE_VERDICT: 1}))),
        _bundle(lines=_with_line(0, _line(0, tenant=FAKE_VERDICT))),
        _bundle(_header(format=FAKE_VERDICT)),
    ],
    ids=["header tenant", "member name", "record tenant", "format"],
)
def test_a_bundle_cannot_print_a_fake_verdict(raw: bytes) -> None:
    result = _cli(raw)
    assert result.exit_code == 1
    assert _control_characters(result.output) == []
    assert not any(line.startswith("OK") for line in result.output.splitlines())
    assert "\\x1b[2K\\rOK" in result.output  # shown as text, to be seen


_ANY_TEXT: Final = st.text(max_size=40)


_HOSTILE: Final = {
    "header tenant": lambda text: _bundle(_header(tenant=text)),
    "header format": lambda text: _bundle(_header(format=text)),
    "exported_at": lambda text: _bundle(_header(exported_at=text)),
    "valid_from": lambda text: _bundle(_key_entry(valid_from=text)),
    "member name": lambda text: _bundle(lines=_with_line(1, _line(1, **{text: 1}))),
    "record tenant": lambda text: _bundle(lines=_with_line(1, _line(1, tenant=text))),
    "recorded_at": lambda text: _bundle(lines=_with_line(1, _line(1, recorded_at=text))),
    "v": lambda text: _bundle(lines=_with_line(1, _line(1, v=text))),
}


@settings(max_examples=150, deadline=None, database=None)
@given(place=st.sampled_from(sorted(_HOSTILE)), text=_ANY_TEXT)
def test_text_from_a_bundle_never_reaches_the_terminal_raw(place: str, text: str) -> None:
    result = _cli(_HOSTILE[place](text), "--jobs", "1")
    assert result.exit_code in {0, 1}, result.output
    assert _control_characters(result.output) == [], result.output


_CONTROLLING_TEXT: Final = _ANY_TEXT | st.text(st.characters(max_codepoint=0xA0), max_size=40)
"""Any text, and text dense in C0 and C1 controls (U+009B is a CSI to many terminals)."""


@settings(max_examples=150, deadline=None, database=None)
@given(place=st.sampled_from(sorted(_HOSTILE)), text=_CONTROLLING_TEXT)
def test_the_json_report_is_the_report_with_no_control_character_raw(place: str, text: str) -> None:
    raw = _HOSTILE[place](text)
    result = _cli(raw, "--json", "--jobs", "1")
    assert result.exit_code in {0, 1}, result.output
    shown, end = result.stdout[:-1], result.stdout[-1:]
    assert end == "\n"
    assert [char for char in shown if unicodedata.category(char) == "Cc"] == [], shown
    report = verify_bundle(io.BytesIO(raw), KeyRing())
    assert json.loads(shown) == json.loads(msgspec.json.encode(report))


# -------------------------------------------------------------------- errors of the command


def test_a_bad_key_file_is_named(tmp_path: Path) -> None:
    junk = tmp_path / "published.pem"
    junk.write_text("not a key")
    result = CliRunner().invoke(
        main, ["verify", "--bundle", str(make_examples.SAMPLE_BUNDLE), "--key", str(junk)]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith(f"valueledger: --key {junk}: not a PEM public key")
    assert len(result.stderr.splitlines()) == 1
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("arguments", "trust", "error"),
    [
        (["--key", "{junk}"], "pinned", "--key {junk}: not a PEM public key"),
        (["--bundle", "/nonexistent/bundle.jsonl"], "bundle", "does not exist"),
        (["--bundle", "{sample}", "--tenant", "x"], "bundle", "--tenant applies to the database"),
        (["--jobs", "2"], "database", "--jobs applies to a bundle"),
    ],
)
def test_json_is_a_report_even_without_a_verdict(
    tmp_path: Path, arguments: list[str], trust: str, error: str
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    filled = {"junk": str(junk), "sample": str(make_examples.SAMPLE_BUNDLE)}
    asked = ["verify", *(argument.format(**filled) for argument in arguments), "--json"]
    result = CliRunner().invoke(main, asked)
    assert result.exit_code == 2
    report = json.loads(result.stdout)
    assert (report["ok"], report["records"], report["trust"], report["failure"]) == (
        False,
        0,
        trust,
        None,
    )
    assert error.format(**filled) in report["error"]
    assert result.stderr.startswith(("valueledger: ", "Usage: "))


def test_json_of_a_verdict_has_no_error() -> None:
    result = _cli(_bundle(), "--json", "--jobs", "1")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["error"] is None


# ------------------------------------------------------------ what independent verifiers refuse


def _ascii_json(value: Any) -> bytes:
    """JSON with every non-ASCII character escaped: how a lone surrogate can be spelled."""
    return json.dumps(value, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("raw", "detail", "tenant", "seq", "line"),
    [
        (
            _bundle(_ascii_json({**json.loads(HEADER), "tenant": "\ud800"})),
            "tenant: string is not valid Unicode",
            None,
            None,
            1,
        ),
        (
            _bundle(_ascii_json({**json.loads(HEADER), "\udfff": 1})),
            '["\\udfff"] (its name): string is not valid Unicode',
            None,
            None,
            1,
        ),
        (
            _bundle(
                lines=_with_line(2, _ascii_json({**json.loads(LINES[2]), "signature": "\ud800"}))
            ),
            "signature: string is not valid Unicode",
            TENANT,
            3,
            4,
        ),
    ],
    ids=["header tenant", "header member name", "record signature"],
)
def test_a_string_that_is_not_unicode_is_an_invalid_value(
    raw: bytes, detail: str, tenant: str | None, seq: int | None, line: int
) -> None:
    report = _verified(raw)
    assert _failure(report) == ("invalid value", tenant, seq, line)
    assert report.failure is not None
    assert report.failure.detail.startswith(detail)
    for arguments in (["--json"], []):
        result = _cli(raw, "--jobs", "1", *arguments)
        assert result.exit_code == 1, result.output
        assert "invalid value" in result.stdout
    shown = json.loads(_cli(raw, "--jobs", "1", "--json").stdout)
    assert shown["failure"]["reason"] == "invalid value"


def test_a_json_report_is_printed_whatever_text_it_carries(tmp_path: Path) -> None:
    """A key file whose name holds a byte that is not UTF-8 (a lone surrogate to Python)."""
    junk = tmp_path / "published-\udcff.pem"
    junk.write_text("not a key")
    result = CliRunner().invoke(
        main, ["verify", "--bundle", str(make_examples.SAMPLE_BUNDLE), "--key", str(junk), "--json"]
    )
    assert result.exit_code == 2, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert "published-\\udcff.pem" in report["error"]


def test_a_signature_not_spelled_canonically_fails() -> None:
    """Base64 with an unused pad bit set decodes, leniently, to the genuine bytes."""
    record = json.loads(LINES[3])
    spelled = make_examples.with_a_pad_bit_set(record["signature"])
    raw = _bundle(lines=_with_line(3, _line(3, signature=spelled)))
    assert _failure(_verified(raw)) == ("bad signature", TENANT, 4, 5)


def test_a_key_listed_twice_is_a_bad_header() -> None:
    header = json.loads(HEADER)
    (entry,) = header["keys"]
    header["keys"] = [
        {**entry, "valid_until": "2025-01-07T00:00:00.000000Z"},
        {**entry, "valid_from": "2025-01-07T00:00:00.000000Z"},
    ]
    report = _verified(_bundle(_json(header)))
    assert _failure(report) == ("bad header", TENANT, None, 1)
    assert report.failure is not None
    assert report.failure.detail == f"key {entry['key_id']} is listed twice"


_PEM: Final = PUBLIC_KEY.read_text()
_PKCS1: Final = (
    make_examples.load_test_key()
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    .decode()
)
_OTHER_PEM: Final = public_key_pem(rsa.generate_private_key(65537, 2048).public_key())


@pytest.mark.parametrize(
    ("pem", "detail"),
    [
        (_PEM + "junk", "not a PEM public key (one BEGIN PUBLIC KEY block"),
        ("hello\n" + _PEM, "not a PEM public key (one BEGIN PUBLIC KEY block"),
        (_PKCS1, "a PEM 'RSA PUBLIC KEY' block, not a 'PUBLIC KEY' one"),
        (_PEM + _OTHER_PEM, "2 PEM blocks where one public key is expected"),
        (_OTHER_PEM + _PEM, "2 PEM blocks where one public key is expected"),
    ],
    ids=["junk after", "junk before", "PKCS#1", "two keys", "two keys, ours second"],
)
def test_a_header_key_is_one_public_key_block_and_nothing_else(pem: str, detail: str) -> None:
    report = _verified(_bundle(_key_entry(public_key=pem)))
    assert _failure(report) == ("bad header", TENANT, None, 1)
    assert report.failure is not None
    key_id = json.loads(HEADER)["keys"][0]["key_id"]
    assert report.failure.detail.startswith(f"key {key_id}: {detail}")


def test_a_key_file_of_two_keys_is_refused(tmp_path: Path) -> None:
    both = tmp_path / "published.pem"
    both.write_text(_PEM + _OTHER_PEM)
    result = CliRunner().invoke(
        main, ["verify", "--bundle", str(make_examples.SAMPLE_BUNDLE), "--key", str(both)]
    )
    assert result.exit_code == 2
    assert result.stderr == (
        f"valueledger: --key {both} holds 2 PEM blocks; give one key per --key\n"
    )
    assert result.stdout == ""
