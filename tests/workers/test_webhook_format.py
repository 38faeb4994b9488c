"""docs/webhooks.md against the code: its test vector, and the endpoints file's refusals.

The vector's signature is also checked with the Standard Webhooks reference library
(`standardwebhooks`), an implementation that is not ours.
"""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from eventstore.canonical import canonical_json
from eventstore.receipts import parse_timestamp
from eventstore.store import RecordedEvent
from workers.webhook_format import (
    Endpoint,
    WebhookConfigError,
    body,
    load_endpoints,
    message_id,
    secret_key,
    signature,
)

REPOSITORY = Path(__file__).resolve().parents[2]
DOC = (REPOSITORY / "docs" / "webhooks.md").read_text()
VECTORS = {
    match["name"]: match["body"]
    for match in re.finditer(
        r"^```\w+ vector (?P<name>[\w-]+)\n(?P<body>.*?)\n```$", DOC, re.MULTILINE | re.DOTALL
    )
}
SECRET = "whsec_" + base64.b64encode(b"valueledger-webhook-test-vector!").decode()


def sample_record() -> RecordedEvent:
    """Record 1 of the sample bundle, as the store would hand it over."""
    line = (REPOSITORY / "docs" / "examples" / "sample-bundle.jsonl").read_bytes().splitlines()[1]
    record = json.loads(line)
    covered = {k: v for k, v in record.items() if k not in {"hash", "signature", "key_id"}}
    return RecordedEvent(
        position=1,
        epoch=1,
        tx_id=1,
        tenant=record["tenant"],
        seq=record["seq"],
        stream=record["stream"],
        version=record["version"],
        type=record["type"],
        data=record["data"],
        meta=record["meta"],
        recorded_at=parse_timestamp(record["recorded_at"]),
        prev_hash=record["prev_hash"],
        hash=record["hash"],
        signature=record["signature"],
        key_id=record["key_id"],
        canonical=canonical_json(covered),
    )


def test_the_documented_vector_is_what_the_code_computes() -> None:
    record = sample_record()
    assert VECTORS["secret"] == SECRET
    assert VECTORS["webhook-id"] == message_id(record.tenant, record.seq)
    payload = body(record)
    assert VECTORS["body"].encode() == payload
    stamp = int(VECTORS["webhook-timestamp"])
    key = secret_key(SECRET, "vector")
    assert VECTORS["webhook-signature"] == signature(key, VECTORS["webhook-id"], stamp, payload)
    # The body's data is the sample bundle's record line, member for member.
    line = (REPOSITORY / "docs" / "examples" / "sample-bundle.jsonl").read_bytes().splitlines()[1]
    assert json.loads(payload) == {
        "type": record.type,
        "timestamp": json.loads(line)["recorded_at"],
        "data": json.loads(line),
    }


def test_the_reference_library_accepts_our_signatures_and_refuses_a_changed_body() -> None:
    record = sample_record()
    payload = body(record)
    webhook_id = message_id(record.tenant, record.seq)
    now = int(time.time())
    headers = {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(now),
        "webhook-signature": signature(secret_key(SECRET, "test"), webhook_id, now, payload),
    }
    assert Webhook(SECRET).verify(payload, headers)["data"]["hash"] == record.hash
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(payload.replace(b"Northwind", b"Southwind"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(payload, {**headers, "webhook-id": f"{webhook_id}0"})


def write(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "webhooks.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


GOOD = {"id": "billing", "url": "https://billing.example/in", "secret": SECRET}


def test_a_good_file_gives_its_endpoints_and_never_shows_a_key(tmp_path: Path) -> None:
    path = write(tmp_path, [GOOD, {**GOOD, "id": "wentlive", "types": ["WentLive"]}])
    billing, wentlive = load_endpoints(path)
    assert billing == Endpoint(
        id="billing",
        url="https://billing.example/in",
        key=b"valueledger-webhook-test-vector!",
        types=None,
    )
    assert (billing.wants("WentLive"), billing.wants("AlertRaised")) == (True, True)
    assert (wentlive.wants("WentLive"), wentlive.wants("AlertRaised")) == (True, False)
    assert "test-vector" not in repr(billing)
    assert "test-vector" not in repr([billing, wentlive])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[{", "Input data was truncated"),
        ("nonsense", "JSON is malformed"),
        ({"id": "billing"}, "Expected `array`, got `object`"),
        ([{**GOOD, "id": "Billing"}], "Expected `str` matching regex"),
        ([{**GOOD, "colour": "red"}], "Object contains unknown field `colour`"),
        ([GOOD, GOOD], "[1] (billing): the id is used twice"),
        ([{**GOOD, "url": "ftp://billing.example/in"}], "url must be an absolute http(s) URL"),
        ([{**GOOD, "url": "/relative"}], "url must be an absolute http(s) URL"),
        ([{**GOOD, "url": "https://u:p@billing.example/"}], "url must not hold credentials"),
        ([{**GOOD, "url": "http://billing.example:abc/in"}], "url is not a URL a request can"),
        ([{**GOOD, "secret": "s3cret"}], "secret must start with 'whsec_'"),
        ([{**GOOD, "secret": "whsec_not base64!"}], "secret is not whsec_ + base64"),
        ([{**GOOD, "secret": "whsec_" + "A" * 16}], "secret holds 12 bytes; use 24 to 64"),
        ([{**GOOD, "types": []}], "types is empty; leave it out to receive every event"),
        ([{**GOOD, "types": ["WentLve"]}], "no event has type 'WentLve'"),
    ],
)
def test_a_bad_file_is_refused_saying_where_and_why(
    tmp_path: Path, content: object, message: str
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(WebhookConfigError) as refused:
        load_endpoints(path)
    text = str(refused.value)
    assert text.startswith(f"webhook endpoints file {str(path)!r}: ")
    assert message in text
    assert "\n" not in text
    assert "dmFsdWVs" not in text  # the secret is never repeated


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(WebhookConfigError, match="No such file or directory"):
        load_endpoints(tmp_path / "absent.json")
