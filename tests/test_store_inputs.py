"""Idempotent retries and bad input: a clear error, nothing written."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from eventstore.canonical import MAX_DEPTH, MAX_SAFE_INTEGER
from eventstore.errors import IdempotencyKeyReusedError, InvalidAppendError, StreamOwnershipError
from eventstore.store import (
    EVENT_TYPE_FORMAT,
    IDEMPOTENCY_KEY_FORMAT,
    MAX_EVENTS_PER_APPEND,
    MAX_RECORD_BYTES,
    STREAM_FORMAT,
    TENANT_FORMAT,
    EventStore,
    Metadata,
    NewEvent,
    StreamState,
)


async def test_same_key_same_content_returns_first_events_and_writes_once(
    store: EventStore, tenant: str, meta: Metadata
) -> None:
    events = [NewEvent("Paid", {"amount": "10.00"}), NewEvent("Noted", {"n": 1})]
    first = await store.append(f"{tenant}-p", events, StreamState.ANY, tenant, meta, "key-1")
    again = await store.append(f"{tenant}-p", events, StreamState.ANY, tenant, meta, "key-1")
    assert again == first
    assert len(await store.read_tenant(tenant)) == 2


async def test_same_key_other_content_is_refused(
    store: EventStore, tenant: str, meta: Metadata
) -> None:
    await store.append(
        f"{tenant}-p", [NewEvent("Paid", {"a": 1})], StreamState.ANY, tenant, meta, "k"
    )
    with pytest.raises(IdempotencyKeyReusedError, match="'k'"):
        await store.append(
            f"{tenant}-p", [NewEvent("Paid", {"a": 2})], StreamState.ANY, tenant, meta, "k"
        )
    assert len(await store.read_tenant(tenant)) == 1


async def test_concurrent_retries_with_one_key_write_once(
    store: EventStore, tenant: str, meta: Metadata
) -> None:
    events = [NewEvent("Paid", {"amount": "1"})]
    results = await asyncio.gather(
        *(
            store.append(f"{tenant}-p", events, StreamState.ANY, tenant, meta, "retry")
            for _ in range(20)
        )
    )
    assert all(result == results[0] for result in results)
    assert len(await store.read_tenant(tenant)) == 1


async def test_one_bad_append_in_a_batch_fails_alone(
    store: EventStore, tenant: str, meta: Metadata
) -> None:
    """Group commit must not let one append's conflict sink its neighbours."""
    await store.append(f"{tenant}-a", [NewEvent("A", {})], StreamState.NO_STREAM, tenant, meta)
    outcomes = await asyncio.gather(
        store.append(f"{tenant}-a", [NewEvent("B", {})], 7, tenant, meta),
        store.append(f"{tenant}-b", [NewEvent("C", {})], StreamState.NO_STREAM, tenant, meta),
        store.append(f"{tenant}-c", [NewEvent("D", {})], StreamState.NO_STREAM, tenant, meta),
        return_exceptions=True,
    )
    assert type(outcomes[0]).__name__ == "ConcurrencyError"
    assert [e.type for e in await store.read_tenant(tenant)] == ["A", "C", "D"]


async def test_a_stream_belongs_to_one_tenant(
    store: EventStore, tenant: str, meta: Metadata
) -> None:
    await store.append(f"{tenant}-own", [NewEvent("A", {})], StreamState.ANY, tenant, meta)
    with pytest.raises(StreamOwnershipError, match="another tenant"):
        await store.append(f"{tenant}-own", [NewEvent("A", {})], StreamState.ANY, "other-t", meta)


BAD_DATA: list[tuple[Any, str]] = [
    ({"amount": 1.5}, r"events\[0\]\.data\.amount: floats are not allowed"),
    ({"x": float("nan")}, r"events\[0\]\.data\.x: floats"),
    ({"x": MAX_SAFE_INTEGER + 1}, r"events\[0\]\.data\.x: integer outside"),
    ({"x": -MAX_SAFE_INTEGER - 1}, r"events\[0\]\.data\.x: integer outside"),
    ({1: "a"}, r"events\[0\]\.data: object key 1 is not a string"),
    ({"x": [1, {"y": b"raw"}]}, r"events\[0\]\.data\.x\[1\]\.y: bytes is not a JSON value"),
    ({"x": "\ud800"}, r"events\[0\]\.data\.x: string is not valid Unicode"),
    ({"x": "a" * MAX_RECORD_BYTES}, r"the limit is 65536"),
]


@pytest.mark.parametrize(("data", "message"), BAD_DATA)
async def test_bad_data_is_refused_naming_its_path(
    store: EventStore, tenant: str, meta: Metadata, data: Any, message: str
) -> None:
    with pytest.raises(InvalidAppendError, match=message):
        await store.append(f"{tenant}-s", [NewEvent("E", data)], StreamState.ANY, tenant, meta)
    assert await store.read_tenant(tenant) == []


def _deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"n": value}
    return value


@pytest.mark.parametrize(
    ("stream", "events", "expected", "tenant_id", "message"),
    [
        ("ok-s", [], StreamState.ANY, None, "at least one event"),
        (
            "ok-s",
            [NewEvent("E", {})] * (MAX_EVENTS_PER_APPEND + 1),
            StreamState.ANY,
            None,
            "at most 500",
        ),
        ("ok-s", [NewEvent("E", {})], StreamState.ANY, "Upper", "tenant 'Upper' must match"),
        ("ok-s", [NewEvent("E", {})], StreamState.ANY, "x" * 64, "must match"),
        ("has space", [NewEvent("E", {})], StreamState.ANY, None, "stream 'has space'"),
        ("ok-s", [NewEvent("1bad", {})], StreamState.ANY, None, r"events\[0\]\.type"),
        ("ok-s", [NewEvent("E", {})], 0, None, "expected_version 0"),
        ("ok-s", [NewEvent("E", {})], True, None, "expected_version True"),
        ("ok-s", [NewEvent("E", _deep(40))], StreamState.ANY, None, "nested deeper than 32"),
    ],
)
async def test_malformed_appends_are_refused(
    store: EventStore,
    tenant: str,
    meta: Metadata,
    stream: str,
    events: list[NewEvent],
    expected: Any,
    tenant_id: str | None,
    message: str,
) -> None:
    with pytest.raises(InvalidAppendError, match=message):
        await store.append(stream, events, expected, tenant_id or tenant, meta)
    assert await store.read_tenant(tenant) == []


async def test_idempotency_key_format(store: EventStore, tenant: str, meta: Metadata) -> None:
    with pytest.raises(InvalidAppendError, match="idempotency key"):
        await store.append(f"{tenant}-s", [NewEvent("E", {})], StreamState.ANY, tenant, meta, "")


def test_the_documented_limits_are_the_enforced_ones() -> None:
    """docs/event-store.md is what operators read: its limits table must match the code."""
    doc = (Path(__file__).parent.parent / "docs" / "event-store.md").read_text()
    rows = {
        line.split("|")[1].strip(): line.split("|")[2].strip()
        for line in doc.splitlines()
        if line.startswith("| ") and line.count("|") == 3
    }
    assert f"`{TENANT_FORMAT.pattern.removesuffix(chr(92) + 'Z')}`" in rows["tenant"]
    assert f"`{STREAM_FORMAT.pattern.removesuffix(chr(92) + 'Z')}`" in rows["stream id"]
    assert f"`{EVENT_TYPE_FORMAT.pattern.removesuffix(chr(92) + 'Z')}`" in rows["event type"]
    assert IDEMPOTENCY_KEY_FORMAT.pattern == r"[\x21-\x7e]{1,200}\Z"
    assert "1 to 200 printable ASCII" in rows["idempotency key"]
    assert f"1 to {MAX_EVENTS_PER_APPEND}" == rows["events per append"]
    assert f"at most {MAX_RECORD_BYTES // 1024} KiB" in rows["one record"]
    assert f"at most {MAX_DEPTH} levels deep" in rows["data and meta"]
