"""Idempotent retries and bad input: a clear error, nothing written."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore.canonical import MAX_DEPTH, MAX_SAFE_INTEGER
from eventstore.errors import IdempotencyKeyReusedError, InvalidAppendError, StreamOwnershipError
from eventstore.store import (
    EVENT_TYPE_FORMAT,
    IDEMPOTENCY_KEY_FORMAT,
    MAX_EVENTS_PER_APPEND,
    MAX_RECORD_BYTES,
    STREAM_FORMAT,
    TENANT_FORMAT,
    Actor,
    EventStore,
    Metadata,
    NewEvent,
    StreamState,
)
from tests.conftest import verified_records


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


class _ActorWithExtra(Actor, frozen=True):
    department: str = "sales"


class _MetadataWithExtra(Metadata, frozen=True):
    ticket: str = "T-1"


BAD_META: list[tuple[Any, str]] = [
    (Metadata(actor=Actor(user=5, role="ADMIN")), r"^meta\.actor\.user: must be a string, not int"),  # type: ignore[arg-type]
    (Metadata(actor=Actor(user="u", role=None)), r"^meta\.actor\.role: must be a string"),  # type: ignore[arg-type]
    (
        Metadata(actor=Actor(user="u", role="r"), correlation_id={"x": [1, 2]}),  # type: ignore[arg-type]
        r"^meta\.correlation_id: must be a string or None, not dict",
    ),
    (
        Metadata(actor={"user": "u", "role": "r", "extra": 1}),  # type: ignore[arg-type]
        r"^meta\.actor: must be an Actor \(user, role\), not dict",
    ),
    (Metadata(actor=_ActorWithExtra(user="u", role="r")), r"^meta\.actor: must be an Actor"),
    (_MetadataWithExtra(actor=Actor(user="u", role="r")), r"^meta: must be a Metadata"),
    ({"actor": {"user": "u", "role": "r"}}, r"^meta: must be a Metadata"),
]


@pytest.mark.parametrize(("metadata", "message"), BAD_META)
async def test_meta_outside_its_documented_shape_is_refused_naming_its_path(
    store: EventStore, tenant: str, metadata: Any, message: str
) -> None:
    """docs/receipts.md section 3.1: the store enforces meta's shape. Structs check no types
    when built in Python, so the store must."""
    with pytest.raises(InvalidAppendError, match=message):
        await store.append(f"{tenant}-s", [NewEvent("E", {})], StreamState.ANY, tenant, metadata)
    assert await store.read_tenant(tenant) == []


_ANY_VALUE = st.one_of(
    st.none(),
    st.text(max_size=8),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.binary(max_size=4),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_TEXT_OR_ANY = st.one_of(st.text(max_size=12), _ANY_VALUE)
_ACTOR_LIKE = st.one_of(
    st.builds(Actor, user=_TEXT_OR_ANY, role=_TEXT_OR_ANY),
    st.builds(_ActorWithExtra, user=st.text(max_size=4), role=st.text(max_size=4)),
    st.dictionaries(st.sampled_from(["user", "role", "extra"]), st.text(max_size=4)),
    _ANY_VALUE,
)
_META_LIKE = st.one_of(
    st.builds(
        Metadata,
        actor=_ACTOR_LIKE,
        correlation_id=st.one_of(st.none(), _TEXT_OR_ANY),
        causation_id=st.one_of(st.none(), _TEXT_OR_ANY),
        trace_id=st.one_of(st.none(), _TEXT_OR_ANY),
    ),
    st.builds(_MetadataWithExtra, actor=st.builds(Actor, user=st.text(), role=st.text())),
    _ANY_VALUE,
)


def _in_documented_shape(meta: Any) -> bool:
    """docs/receipts.md section 3.1: exactly these members; an actor of exactly two strings."""
    return (
        type(meta) is dict
        and set(meta) == {"actor", "correlation_id", "causation_id", "trace_id"}
        and type(meta["actor"]) is dict
        and set(meta["actor"]) == {"user", "role"}
        and all(type(text) is str for text in meta["actor"].values())
        and all(
            meta[name] is None or type(meta[name]) is str
            for name in ("correlation_id", "causation_id", "trace_id")
        )
    )


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(metadata=_META_LIKE)
async def test_any_meta_is_refused_by_path_or_signed_in_its_documented_shape(
    store: EventStore, database_url: str, metadata: Any
) -> None:
    tenant = f"t-{secrets.token_hex(6)}"
    refusal = None
    try:
        [recorded] = await store.append(
            f"{tenant}-s", [NewEvent("E", {})], StreamState.ANY, tenant, metadata
        )
    except InvalidAppendError as error:
        refusal = str(error)
    if refusal is not None:
        assert refusal.startswith(("meta: ", "meta.", "meta[")), refusal
        assert await store.read_tenant(tenant) == []
        return
    assert _in_documented_shape(recorded.meta), recorded.meta
    assert recorded.meta == msgspec.to_builtins(metadata)
    [stored] = await store.read_tenant(tenant)
    assert stored.meta == recorded.meta
    assert await verified_records(database_url, [tenant]) == 1


class _Label(str):
    """A str subclass, as an application's own string types (or a StrEnum) are."""


class _LoudLabel(str):
    """A str subclass whose str() says something else: the string it holds is what counts."""

    def __str__(self) -> str:
        return "LOUD"


_SOME_TEXT = st.text(max_size=6).filter(lambda text: "\x00" not in text and text.isprintable())
_TEXT_OF_ANY_CLASS = st.one_of(_SOME_TEXT, _SOME_TEXT.map(_Label), _SOME_TEXT.map(_LoudLabel))
_DATA_WITH_SUBCLASSED_TEXT = st.recursive(
    st.one_of(st.none(), st.integers(-100, 100), _TEXT_OF_ANY_CLASS),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(_TEXT_OF_ANY_CLASS, inner, max_size=3)
    ),
    max_leaves=8,
)


def _plain_strings(value: Any) -> Any:
    """`value` with every string as the plain str it holds."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, dict):
        return {str.__str__(key): _plain_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain_strings(item) for item in value]
    return value


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    data=st.dictionaries(_TEXT_OF_ANY_CLASS, _DATA_WITH_SUBCLASSED_TEXT, max_size=4),
    user=_TEXT_OF_ANY_CLASS,
    correlation_id=st.one_of(st.none(), _TEXT_OF_ANY_CLASS),
)
async def test_str_subclasses_are_stored_as_the_plain_strings_they_hold(
    store: EventStore, database_url: str, data: dict[str, Any], user: str, correlation_id: str
) -> None:
    """A str subclass anywhere in data (values or member names) or meta is a string, as
    _check_meta_shape's docstring says: signed as the plain string it holds, never a bare
    TypeError from the encoder."""
    tenant = f"t-{secrets.token_hex(6)}"
    metadata = Metadata(actor=Actor(user=user, role=_Label("ADMIN")), correlation_id=correlation_id)
    [recorded] = await store.append(
        f"{tenant}-s", [NewEvent("E", data)], StreamState.ANY, tenant, metadata
    )
    assert recorded.data == _plain_strings(data)
    assert recorded.meta == {
        "actor": {"user": str.__str__(user), "role": "ADMIN"},
        "correlation_id": None if correlation_id is None else str.__str__(correlation_id),
        "causation_id": None,
        "trace_id": None,
    }
    assert [stored.canonical for stored in await store.read_tenant(tenant)] == [recorded.canonical]
    assert await verified_records(database_url, [tenant]) == 1


async def test_the_same_key_from_another_actor_is_other_content(
    store: EventStore, tenant: str, meta: Metadata
) -> None:
    """An idempotency key stands for who appends as well as what: the same data from another
    actor is not a retry of the first append. New trace ids are (a retry may carry them)."""
    events = [NewEvent("Paid", {"a": 1})]
    first = await store.append(f"{tenant}-p", events, StreamState.ANY, tenant, meta, "k")
    retried = Metadata(actor=meta.actor, correlation_id="corr-2", trace_id="trace-2")
    assert await store.append(f"{tenant}-p", events, StreamState.ANY, tenant, retried, "k") == first
    for actor in (Actor(user="mallory", role="ADMIN"), Actor(user=meta.actor.user, role="VIEWER")):
        with pytest.raises(IdempotencyKeyReusedError, match="'k'"):
            await store.append(
                f"{tenant}-p", events, StreamState.ANY, tenant, Metadata(actor=actor), "k"
            )
    assert len(await store.read_tenant(tenant)) == 1


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
