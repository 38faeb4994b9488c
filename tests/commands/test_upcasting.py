"""An old event shape still folds: `CustomerRegistered` schema 1, read through its upcaster.

Schema 1 stored the billing contact as three flat fields; schema 2 nests them, because the
contact can now change (`BillingContactChanged` carries the same nested shape). The schema 1
record is appended here exactly as the code before schema 2 wrote it, then the account is
folded from the real store: the upcast happens on read, and the stored record (its bytes, hash
and signature) stays as it was signed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from commands.aggregates import CUSTOMER
from commands.customer import handle_customer, open_account
from commands.handling import load, new_event
from commands.streams import customer_stream
from domain import customer
from domain.roles import Role
from domain.upcasting import upcast
from eventstore.store import Actor, EventStore, Metadata, NewEvent, RecordedEvent, StreamState
from tests.commands.journey import assert_chain_verifies

AT = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
STAFF = "staff-1"


def registered_v1(tenant: str, **contact: str | None) -> dict[str, Any]:
    """A schema 1 `CustomerRegistered` as `commands.handling.new_event` stored it (JSON data)."""
    return {
        "customer_id": tenant,
        "name": "Acme Ltd",
        "currency": "EUR",
        "billing_contact_name_sealed": "sealed-name",
        "billing_contact_email_sealed": "sealed-email",
        "billing_contact_phone_sealed": None,
        "registered_at": "2026-03-01T09:00:00Z",
        "registered_by": STAFF,
        "registered_by_role": "ADMIN",
        "schema": 1,
        **contact,
    }


def registered_v2(tenant: str, phone_sealed: str | None = None) -> customer.CustomerRegistered:
    return customer.CustomerRegistered(
        customer_id=tenant,
        name="Acme Ltd",
        currency="EUR",
        billing_contact=customer.BillingContact(
            name_sealed="sealed-name", email_sealed="sealed-email", phone_sealed=phone_sealed
        ),
        registered_at=AT,
        registered_by=STAFF,
        registered_by_role=Role.ADMIN,
    )


# The upcaster alone.


@pytest.mark.parametrize("phone", [None, "sealed-phone"])
def test_the_upcaster_gives_exactly_what_a_schema_2_writer_stores(phone: str | None) -> None:
    stored = registered_v1("acme", billing_contact_phone_sealed=phone)
    kept = dict(stored)
    assert customer.registered_v1_to_v2(stored) == {
        "customer_id": "acme",
        "name": "Acme Ltd",
        "currency": "EUR",
        "billing_contact": {
            "name_sealed": "sealed-name",
            "email_sealed": "sealed-email",
            "phone_sealed": phone,
        },
        "registered_at": "2026-03-01T09:00:00Z",
        "registered_by": STAFF,
        "registered_by_role": "ADMIN",
        "schema": 2,
    }
    assert customer.registered_v1_to_v2(stored) == new_event(registered_v2("acme", phone)).data
    assert stored == kept  # pure: the stored data is not touched


def test_the_upcaster_reads_a_record_without_phone_or_schema_key() -> None:
    stored = registered_v1("acme")
    del stored["billing_contact_phone_sealed"], stored["schema"]
    upcast_data = customer.registered_v1_to_v2(stored)
    assert upcast_data["billing_contact"] == {
        "name_sealed": "sealed-name",
        "email_sealed": "sealed-email",
        "phone_sealed": None,
    }
    assert upcast_data["schema"] == 2
    assert "billing_contact_name_sealed" not in upcast_data
    # Through the chain: a record without `schema` is schema 1.
    assert upcast("CustomerRegistered", stored, customer.UPCASTERS) == upcast_data


def test_current_shapes_and_other_events_pass_through_unchanged() -> None:
    current = new_event(registered_v2("acme")).data
    assert upcast("CustomerRegistered", current, customer.UPCASTERS) == current
    invited = {"customer_id": "acme", "user_id": "alice", "schema": 1}
    assert upcast("UserInvited", invited, customer.UPCASTERS) == invited


def test_a_missing_flat_field_is_named_when_the_upcast_data_is_decoded() -> None:
    stored = registered_v1("acme")
    del stored["billing_contact_email_sealed"]
    with pytest.raises(msgspec.ValidationError, match=r"email_sealed.*\$\.billing_contact"):
        msgspec.convert(
            {**customer.registered_v1_to_v2(stored), "type": "CustomerRegistered"},
            customer.Event,
        )


@pytest.mark.parametrize("following", [1, 0], ids=["same", "lower"])
def test_upcast_refuses_an_upcaster_that_does_not_raise_the_schema(following: int) -> None:
    def stuck(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "schema": following}

    with pytest.raises(ValueError, match="the upcaster of CustomerRegistered schema 1 did not"):
        upcast("CustomerRegistered", {"schema": 1}, {("CustomerRegistered", 1): stuck})


# Against the real store.


async def append_v1(store: EventStore, tenant: str, data: dict[str, Any]) -> list[RecordedEvent]:
    """Append a schema 1 registration as session 1's handler did: ADMIN's receipt metadata, on
    a stream that must not exist yet."""
    return await store.append(
        customer_stream(tenant),
        [NewEvent("CustomerRegistered", data)],
        StreamState.NO_STREAM,
        tenant,
        Metadata(actor=Actor(user=STAFF, role="ADMIN")),
    )


async def test_a_stored_schema_1_registration_folds_with_the_contact_nested(
    store: EventStore, tenant: str
) -> None:
    [v1_record] = await append_v1(
        store, tenant, registered_v1(tenant, billing_contact_phone_sealed="sealed-phone")
    )
    invited = await handle_customer(
        store,
        customer.InviteUser(
            customer_id=tenant,
            user_id="alice",
            role=Role.CUSTOMER_ADMIN,
            name_sealed="sealed-alice",
            email_sealed="sealed-alice@",
            at=AT + timedelta(minutes=1),
            by=STAFF,
            by_role=Role.ADMIN,
        ),
    )
    assert invited.version == 2

    loaded = await load(store, CUSTOMER, customer_stream(tenant))
    assert loaded.version == 2
    assert loaded.state == customer.CustomerAccount(
        status=customer.CustomerStatus.ACTIVE,
        customer_id=tenant,
        name="Acme Ltd",
        currency="EUR",
        billing_contact=customer.BillingContact(
            name_sealed="sealed-name", email_sealed="sealed-email", phone_sealed="sealed-phone"
        ),
        users={
            "alice": customer.CustomerUser(
                user_id="alice",
                role=Role.CUSTOMER_ADMIN,
                name_sealed="sealed-alice",
                email_sealed="sealed-alice@",
                invited_at=AT + timedelta(minutes=1),
            )
        },
    )
    assert loaded.state == invited.state  # what the handler decided on is what the ledger folds

    # The upcast is on read: the schema 1 record is stored, hashed and signed as written.
    records = await store.read_stream(customer_stream(tenant))
    assert [record.type for record in records] == ["CustomerRegistered", "UserInvited"]
    stored = records[0]
    assert (stored.canonical, stored.hash, stored.signature) == (
        v1_record.canonical,
        v1_record.hash,
        v1_record.signature,
    )
    assert stored.data == registered_v1(tenant, billing_contact_phone_sealed="sealed-phone")
    assert b'"billing_contact_name_sealed":"sealed-name"' in stored.canonical
    assert b'"billing_contact":' not in stored.canonical
    await assert_chain_verifies(store, tenant)


async def test_a_schema_1_contact_is_changed_by_a_schema_2_world(
    store: EventStore, tenant: str
) -> None:
    await append_v1(store, tenant, registered_v1(tenant))
    assert (await open_account(store, tenant)).billing_contact == customer.BillingContact(
        name_sealed="sealed-name", email_sealed="sealed-email"
    )
    await handle_customer(
        store,
        customer.InviteUser(
            customer_id=tenant,
            user_id="alice",
            role=Role.CUSTOMER_ADMIN,
            name_sealed="sealed-alice",
            email_sealed="sealed-alice@",
            at=AT,
            by=STAFF,
            by_role=Role.ADMIN,
        ),
    )
    new_contact = customer.BillingContact(
        name_sealed="sealed-new-name", email_sealed="sealed-new-email", phone_sealed="sealed-tel"
    )
    changed = await handle_customer(
        store,
        customer.ChangeBillingContact(
            customer_id=tenant,
            billing_contact=new_contact,
            at=AT + timedelta(days=30),
            by="alice",
            by_role=Role.CUSTOMER_ADMIN,
        ),
    )
    [receipt] = changed.recorded
    assert receipt.type == "BillingContactChanged"
    assert receipt.meta["actor"] == {"user": "alice", "role": "CUSTOMER_ADMIN"}
    assert receipt.data == {
        "customer_id": tenant,
        "billing_contact": {
            "name_sealed": "sealed-new-name",
            "email_sealed": "sealed-new-email",
            "phone_sealed": "sealed-tel",
        },
        "changed_at": "2026-03-31T09:00:00Z",
        "changed_by": "alice",
        "changed_by_role": "CUSTOMER_ADMIN",
        "schema": 1,
    }
    assert (await open_account(store, tenant)).billing_contact == new_contact


# `ApiKeyIssued` schema 1: written while every key acted as TECHNICAL.


def key_issued_v1(tenant: str) -> dict[str, Any]:
    """A schema 1 `ApiKeyIssued` as the handler before key roles stored it."""
    return {
        "customer_id": tenant,
        "key_id": "k1",
        "secret_sha256": "0" * 64,
        "label": "feed",
        "issued_at": "2026-03-01T09:01:00Z",
        "issued_by": STAFF,
        "issued_by_role": "ADMIN",
        "schema": 1,
    }


def test_a_schema_1_key_reads_as_a_key_that_acts_in_no_role() -> None:
    stored = key_issued_v1("acme")
    kept = dict(stored)
    assert upcast("ApiKeyIssued", stored, customer.UPCASTERS) == {
        **stored,
        "role": None,
        "schema": 2,
    }
    assert stored == kept
    current = new_event(
        customer.ApiKeyIssued(
            customer_id="acme",
            key_id="k1",
            secret_sha256="0" * 64,
            role=Role.FINANCE,
            label="feed",
            issued_at=AT,
            issued_by=STAFF,
            issued_by_role=Role.ADMIN,
        )
    ).data
    assert upcast("ApiKeyIssued", current, customer.UPCASTERS) == current


async def test_a_stored_schema_1_key_gains_no_right_to_act(store: EventStore, tenant: str) -> None:
    await append_v1(store, tenant, registered_v1(tenant))
    await store.append(
        customer_stream(tenant),
        [NewEvent("ApiKeyIssued", key_issued_v1(tenant))],
        1,
        tenant,
        Metadata(actor=Actor(user=STAFF, role="ADMIN")),
    )
    account = await open_account(store, tenant)
    assert account.api_keys["k1"].role is None
    assert account.role_of("api-key:k1") is None
    assert "api-key:k1" not in account.roles_by_user()
    await assert_chain_verifies(store, tenant)
