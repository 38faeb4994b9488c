"""Personal data sealed per person, and forgetting a person (crypto-shredding).

The ledger can never be rewritten, so erasure works by deleting a person's key: their sealed
fields then read as erased, while every byte, hash and signature of the ledger (and so the
verification of every chain) stays exactly as it was.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commands.customer import handle_customer, open_account
from commands.personal_data import (
    ERASED,
    MAX_PLAINTEXT_BYTES,
    PersonalDataError,
    PersonalDataVault,
    open_with,
    seal_with,
    sealing_key_of,
)
from domain import customer, tickets
from domain.roles import Role
from eventstore.store import EventStore
from eventstore.verify import KeyRing, verify_database
from tests.conftest import invoke

AT = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

# The vector of docs/personal-data.md: a fixed key and nonce give these exact bytes.
VECTOR_TENANT = "acme"
VECTOR_KEY_ID = "6f0c2c7e-3c1a-4b8e-9a51-0d2f3e4a5b6c"
VECTOR_SECRET = bytes(range(32))
VECTOR_NONCE = bytes(range(100, 112))
VECTOR_TEXT = "Ada Lovelace <ada@example.com>"


def test_the_documented_vector_seals_and_opens() -> None:
    sealed = seal_with(VECTOR_TENANT, VECTOR_KEY_ID, VECTOR_SECRET, VECTOR_TEXT, VECTOR_NONCE)
    documented = _doc().split("sealed: `")[1].split("`")[0]
    assert sealed == documented
    assert open_with(VECTOR_TENANT, sealed, VECTOR_SECRET) == VECTOR_TEXT
    assert sealing_key_of(sealed) == VECTOR_KEY_ID


def _doc() -> str:
    return (Path(__file__).parents[2] / "docs" / "personal-data.md").read_text(encoding="utf-8")


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200), st.binary(min_size=12, max_size=12))
def test_sealed_text_opens_to_itself_and_only_for_its_tenant(text: str, nonce: bytes) -> None:
    sealed = seal_with("acme", VECTOR_KEY_ID, VECTOR_SECRET, text, nonce)
    assert open_with("acme", sealed, VECTOR_SECRET) == text
    with pytest.raises(PersonalDataError, match="sealed for another customer"):
        open_with("globex", sealed, VECTOR_SECRET)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_altered_byte_is_refused(data: st.DataObject) -> None:
    sealed = seal_with("acme", VECTOR_KEY_ID, VECTOR_SECRET, "Ada", VECTOR_NONCE)
    box = sealed.rsplit(":", 1)[1]
    raw = bytearray(base64.urlsafe_b64decode(box + "=" * (-len(box) % 4)))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] ^= data.draw(st.integers(1, 255))
    altered = sealed.rsplit(":", 1)[0] + ":" + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    with pytest.raises(PersonalDataError, match="altered"):
        open_with("acme", altered, VECTOR_SECRET)


def test_a_value_relabelled_with_another_key_id_is_refused() -> None:
    sealed = seal_with("acme", VECTOR_KEY_ID, VECTOR_SECRET, "Ada", VECTOR_NONCE)
    relabelled = sealed.replace(VECTOR_KEY_ID, str(uuid.UUID(int=1)))
    with pytest.raises(PersonalDataError):
        open_with("acme", relabelled, VECTOR_SECRET)


async def test_one_key_per_person_and_a_fresh_nonce_per_value(
    store: EventStore, tenant: str
) -> None:
    vault = PersonalDataVault(store.pool)
    first = await vault.seal(tenant, "ada", "Ada")
    second = await vault.seal(tenant, "ada", "Ada")
    other = await vault.seal(tenant, "bob", "Bob")
    assert first != second  # same text, same key, another nonce
    assert sealing_key_of(first) == sealing_key_of(second) != sealing_key_of(other)
    assert await vault.open(tenant, [first, second, other]) == {
        first: "Ada",
        second: "Ada",
        other: "Bob",
    }


async def test_bad_requests_to_the_vault_are_refused(store: EventStore, tenant: str) -> None:
    vault = PersonalDataVault(store.pool)
    with pytest.raises(PersonalDataError, match="not sealed"):
        await vault.open(tenant, ["Ada in clear"])
    with pytest.raises(PersonalDataError, match="at most"):
        await vault.seal(tenant, "ada", "x" * 20_000)
    with pytest.raises(PersonalDataError, match="reason"):
        await vault.forget("ada", tenant=tenant, reason=" ")


async def _customer_with_people(store: EventStore, vault: PersonalDataVault, tenant: str) -> None:
    await handle_customer(
        store,
        customer.RegisterCustomer(
            customer_id=tenant,
            name="Acme Ltd",
            currency="EUR",
            billing_contact=customer.BillingContact(
                name_sealed=await vault.seal(tenant, "billing-contact", "Bea Billing"),
                email_sealed=await vault.seal(tenant, "billing-contact", "bea@acme.example"),
            ),
            at=AT,
            by="staff-1",
            by_role=Role.ADMIN,
        ),
    )
    for user, name in (("ada", "Ada Lovelace"), ("bob", "Bob Byte")):
        await handle_customer(
            store,
            customer.InviteUser(
                customer_id=tenant,
                user_id=user,
                role=Role.CUSTOMER_ADMIN,
                name_sealed=await vault.seal(tenant, user, name),
                email_sealed=await vault.seal(tenant, user, f"{user}@acme.example"),
                at=AT,
                by="staff-1",
                by_role=Role.ADMIN,
            ),
        )


async def test_forgetting_a_person_erases_their_fields_and_nothing_else(
    store: EventStore, tenant: str, env: dict[str, str | None]
) -> None:
    vault = PersonalDataVault(store.pool)
    await _customer_with_people(store, vault, tenant)
    before = await store.read_tenant(tenant)
    assert not any(
        b"Ada" in record.canonical or b"acme.example" in record.canonical for record in before
    )
    account = await open_account(store, tenant)
    assert account.billing_contact is not None
    sealed = [
        account.billing_contact.name_sealed,
        account.users["ada"].name_sealed,
        account.users["ada"].email_sealed,
        account.users["bob"].name_sealed,
    ]
    assert list((await vault.open(tenant, sealed)).values()) == [
        "Bea Billing",
        "Ada Lovelace",
        "ada@acme.example",
        "Bob Byte",
    ]

    forgotten = await invoke(
        ["forget", "--user", "ada", "--tenant", tenant, "--reason", "erasure request 42"], env
    )
    assert forgotten.exit_code == 0, forgotten.output
    assert "1 key(s) erased" in forgotten.output

    assert list((await vault.open(tenant, sealed)).values()) == [
        "Bea Billing",
        ERASED,
        ERASED,
        "Bob Byte",
    ]
    after = await store.read_tenant(tenant)
    assert [record.canonical for record in after] == [record.canonical for record in before]
    assert await open_account(store, tenant) == account  # the state folds as before
    async with store.pool.acquire() as connection:
        report = await verify_database(connection, KeyRing(), tenants=[tenant])
        logged = await connection.fetch(
            "SELECT subject, keys_erased, reason FROM forgotten_people WHERE tenant = $1", tenant
        )
    assert report.ok, report.failure
    assert [tuple(row) for row in logged] == [("ada", 1, "erasure request 42")]

    again = await invoke(["forget", "--user", "ada", "--tenant", tenant, "--reason", "x"], env)
    assert again.exit_code == 0, again.output
    assert "nothing to erase" in again.output


async def test_a_forgotten_person_invited_again_gets_a_new_key(
    store: EventStore, tenant: str
) -> None:
    vault = PersonalDataVault(store.pool)
    old = await vault.seal(tenant, "ada", "Ada")
    assert await vault.forget("ada", tenant=tenant, reason="request") == 1
    new = await vault.seal(tenant, "ada", "Ada again")
    assert sealing_key_of(new) != sealing_key_of(old)
    assert await vault.open(tenant, [old, new]) == {old: ERASED, new: "Ada again"}


async def test_forget_without_a_reason_is_a_one_line_error(env: dict[str, str | None]) -> None:
    result = await invoke(["forget", "--user", "ada", "--reason", ""], env)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "valueledger: say why the person is forgotten (a reason is recorded)"
    ]


async def test_the_longest_text_sealed_fits_the_longest_sealed_field(
    store: EventStore, tenant: str
) -> None:
    vault = PersonalDataVault(store.pool)
    longest = "é" * (MAX_PLAINTEXT_BYTES // 2)  # two bytes each in UTF-8
    sealed = await vault.seal(tenant, "ada", longest)
    assert len(sealed) <= tickets.MAX_SEALED_TEXT_LENGTH
    with pytest.raises(PersonalDataError, match="bytes in UTF-8"):
        await vault.seal(tenant, "ada", longest + "é")
