"""Command handlers against the real store: load, fold, decide, append, and nothing else.

What the handlers add to the deciders is checked here: the receipt's metadata names the actor,
a refused command writes nothing, a stale If-Match version is reported, a lost race is decided
again, other aggregates need an open customer and an authorised user, and what the handler
folds from the ledger equals what it decided.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from commands.aggregates import CUSTOMER, SETUP
from commands.customer import (
    api_key_digest,
    handle_customer,
    issue_api_key,
    matching_api_key,
    open_account,
)
from commands.handling import Trace, load
from commands.setup import handle_setup
from commands.streams import (
    StreamNameError,
    calculation_stream,
    customer_stream,
    definition_stream,
    setup_stream,
    ticket_stream,
)
from domain import customer, setup
from domain.roles import Role
from eventstore.errors import ConcurrencyError
from eventstore.store import STREAM_FORMAT, EventStore
from tests.commands.journey import assert_chain_verifies

AT = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
STAFF = "staff-1"


def register(tenant: str) -> customer.RegisterCustomer:
    return customer.RegisterCustomer(
        customer_id=tenant,
        name="Acme Ltd",
        currency="EUR",
        billing_contact=customer.BillingContact(
            name_sealed="sealed-name", email_sealed="sealed-email"
        ),
        at=AT,
        by=STAFF,
        by_role=Role.ADMIN,
    )


def invite(tenant: str, user: str, role: Role, by: str = STAFF) -> customer.InviteUser:
    return customer.InviteUser(
        customer_id=tenant,
        user_id=user,
        role=role,
        name_sealed=f"sealed-{user}",
        email_sealed=f"sealed-{user}@",
        at=AT + timedelta(minutes=1),
        by=by,
        by_role=Role.ADMIN if by == STAFF else Role.CUSTOMER_ADMIN,
    )


CREDENTIALS = setup.CompleteApiIntegration(
    credential_fingerprint="a" * 64,
    credential_reference="vault://kv/acme/api-key",
    validation_passed=True,
    validation_detail="200 from /v1/me",
    at=AT + timedelta(hours=1),
    by="tess",
)


async def test_a_command_becomes_signed_receipts_naming_the_actor(
    store: EventStore, tenant: str
) -> None:
    trace = Trace(correlation_id="req-1", trace_id="0af7651916cd43dd8448eb211c80319c")
    outcome = await handle_customer(store, register(tenant), trace=trace)

    assert [type(event) for event in outcome.events] == [customer.CustomerRegistered]
    [receipt] = outcome.recorded
    assert (receipt.tenant, receipt.stream, receipt.seq, receipt.version) == (
        tenant,
        customer_stream(tenant),
        1,
        1,
    )
    assert receipt.type == "CustomerRegistered"
    assert receipt.meta["actor"] == {"user": STAFF, "role": "ADMIN"}
    assert receipt.meta["correlation_id"] == "req-1"
    assert outcome.cursor == receipt.cursor
    loaded = await load(store, CUSTOMER, customer_stream(tenant))
    assert (loaded.state, loaded.version) == (outcome.state, 1)


async def test_a_refused_command_writes_nothing(store: EventStore, tenant: str) -> None:
    await handle_customer(store, register(tenant))
    with pytest.raises(customer.CustomerAlreadyRegisteredError):
        await handle_customer(store, register(tenant))
    assert [event.version for event in await store.read_stream(customer_stream(tenant))] == [1]


async def test_a_stale_expected_version_is_reported_not_retried(
    store: EventStore, tenant: str
) -> None:
    await handle_customer(store, register(tenant))
    await handle_customer(store, invite(tenant, "alice", Role.CUSTOMER_ADMIN))
    with pytest.raises(ConcurrencyError) as stale:
        await handle_customer(store, invite(tenant, "bob", Role.FINANCE), expected_version=1)
    assert (stale.value.expected, stale.value.actual) == (1, 2)
    outcome = await handle_customer(store, invite(tenant, "bob", Role.FINANCE), expected_version=2)
    assert outcome.version == 3


async def test_lost_races_are_decided_again_on_the_new_state(
    store: EventStore, tenant: str
) -> None:
    await handle_customer(store, register(tenant))
    users = [f"user-{number}" for number in range(6)]
    lost = {"aggregate": "customer", "outcome": "decided again"}
    before = REGISTRY.get_sample_value("valueledger_concurrency_conflicts_total", lost) or 0
    outcomes = await asyncio.gather(
        *(handle_customer(store, invite(tenant, user, Role.TECHNICAL)) for user in users),
        return_exceptions=True,
    )
    # Six racers on one version: at least one lost and was counted (how many read before the
    # first append committed depends on timing: five in a quiet run, four seen under load).
    after = REGISTRY.get_sample_value("valueledger_concurrency_conflicts_total", lost)
    assert after is not None
    assert after >= before + 1
    recorded = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
    # Each retry decides again, so most racers get in; whoever lost ATTEMPTS times is told.
    assert all(isinstance(o, ConcurrencyError) for o in outcomes if isinstance(o, BaseException))
    assert len(recorded) >= 3
    account = (await load(store, CUSTOMER, customer_stream(tenant))).state
    invited = [e.user_id for o in recorded for e in o.events if isinstance(e, customer.UserInvited)]
    assert sorted(account.users) == sorted(invited)


async def test_a_racer_decided_again_meets_the_rule_the_winner_made_true(
    store: EventStore, tenant: str
) -> None:
    await handle_customer(store, register(tenant))
    results = await asyncio.gather(
        handle_customer(store, invite(tenant, "alice", Role.CUSTOMER_ADMIN)),
        handle_customer(store, invite(tenant, "alice", Role.FINANCE)),
        return_exceptions=True,
    )
    refused = [result for result in results if isinstance(result, BaseException)]
    assert len(refused) == 1
    assert isinstance(refused[0], customer.DuplicateUserError)
    assert len(await store.read_stream(customer_stream(tenant))) == 2


async def test_setup_needs_a_registered_open_customer(store: EventStore, tenant: str) -> None:
    with pytest.raises(customer.CustomerNotRegisteredError, match="register it first"):
        await handle_setup(store, tenant, CREDENTIALS, by_role=Role.ADMIN)
    await handle_customer(store, register(tenant))
    await handle_customer(
        store,
        customer.SuspendCustomer(
            customer_id=tenant, reason="unpaid invoice", at=AT, by=STAFF, by_role=Role.ADMIN
        ),
    )
    with pytest.raises(customer.CustomerSuspendedError, match="unpaid invoice"):
        await handle_setup(store, tenant, CREDENTIALS, by_role=Role.ADMIN)
    assert await store.read_stream(setup_stream(tenant)) == []


@pytest.mark.parametrize(
    ("user", "role", "allowed"),
    [
        ("tess", Role.TECHNICAL, True),
        ("cara", Role.CUSTOMER_ADMIN, True),
        ("fin", Role.FINANCE, False),
        ("tess", Role.CUSTOMER_ADMIN, False),  # claims a role the customer did not give her
        ("stranger", Role.TECHNICAL, False),
    ],
)
async def test_setup_steps_are_for_the_customer_technical_and_admin_users(
    store: EventStore, tenant: str, user: str, role: Role, allowed: bool
) -> None:
    await handle_customer(store, register(tenant))
    await handle_customer(store, invite(tenant, "cara", Role.CUSTOMER_ADMIN))
    await handle_customer(store, invite(tenant, "tess", Role.TECHNICAL))
    await handle_customer(store, invite(tenant, "fin", Role.FINANCE))
    command = setup.CompleteApiIntegration(
        credential_fingerprint=CREDENTIALS.credential_fingerprint,
        credential_reference=CREDENTIALS.credential_reference,
        validation_passed=True,
        at=CREDENTIALS.at,
        by=user,
    )
    if allowed:
        outcome = await handle_setup(store, tenant, command, by_role=role)
        assert outcome.state.completed_steps == ("api_integration",)
        assert outcome.recorded[0].meta["actor"] == {"user": user, "role": str(role)}
    else:
        with pytest.raises(customer.NotAuthorizedError, match="cannot complete setup steps"):
            await handle_setup(store, tenant, command, by_role=role)
        assert await store.read_stream(setup_stream(tenant)) == []


async def test_the_chain_across_aggregates_verifies(store: EventStore, tenant: str) -> None:
    await handle_customer(store, register(tenant))
    await handle_setup(store, tenant, CREDENTIALS, by_role=Role.ADMIN)
    await handle_customer(store, invite(tenant, "alice", Role.CUSTOMER_ADMIN))
    folded = await load(store, SETUP, setup_stream(tenant))
    assert folded.state.completed_steps == ("api_integration",)
    assert (await open_account(store, tenant)).users.keys() == {"alice"}
    await assert_chain_verifies(store, tenant)
    assert [event.seq for event in await store.read_tenant(tenant)] == [1, 2, 3]


async def test_a_customer_id_that_cannot_be_a_tenant_is_refused_before_anything(
    store: EventStore,
) -> None:
    with pytest.raises(StreamNameError, match="lowercase letters"):
        await handle_customer(store, register("Acme Ltd"))


def test_the_longest_stream_names_fit_the_store() -> None:
    tenant = "t" * 63
    longest = calculation_stream(tenant, "d" * 32, datetime(2026, 1, 1, tzinfo=UTC))
    assert STREAM_FORMAT.match(longest), len(longest)
    assert STREAM_FORMAT.match(ticket_stream(tenant, "k" * 32))
    with pytest.raises(StreamNameError, match="1 to 32"):
        definition_stream(tenant, "d" * 33)


async def test_an_api_key_is_shown_once_and_only_its_digest_is_recorded(
    store: EventStore, tenant: str
) -> None:
    await handle_customer(store, register(tenant))
    issued = await issue_api_key(
        store,
        tenant,
        label="billing sync",
        role=Role.TECHNICAL,
        at=AT,
        by=STAFF,
        by_role=Role.ADMIN,
    )
    assert issued.presented.startswith(f"vlk_{issued.key_id}_")
    [receipt] = issued.outcome.recorded
    assert issued.presented.encode() not in receipt.canonical
    assert receipt.data["secret_sha256"] == api_key_digest(issued.presented)

    account = await open_account(store, tenant)
    key = matching_api_key(account, issued.presented)
    assert key is not None
    assert key.key_id == issued.key_id
    tampered = issued.presented[:-1] + ("A" if issued.presented[-1] != "A" else "B")
    for wrong in (tampered, "vlk_nokey_secret", "", issued.presented.replace("vlk", "xyz", 1)):
        assert matching_api_key(account, wrong) is None

    await handle_customer(
        store,
        customer.RevokeApiKey(
            customer_id=tenant, key_id=issued.key_id, at=AT, by=STAFF, by_role=Role.ADMIN
        ),
    )
    assert matching_api_key(await open_account(store, tenant), issued.presented) is None
    other = await issue_api_key(
        store, tenant, label="", role=Role.FINANCE, at=AT, by=STAFF, by_role=Role.ADMIN
    )
    assert other.outcome.recorded[0].data["role"] == "FINANCE"
    assert other.key_id != issued.key_id
    assert other.presented != issued.presented
