"""A customer's way from signup to billing, driven through the real handlers and store.

Shared by the handler tests and the stateful test: each step is one call that issues the
commands a person would, with the people of `TEAM`, so a test can start from any point.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final

from commands.customer import handle_customer
from commands.definition import handle_definition
from commands.setup import handle_setup
from domain import customer, definition, setup
from domain.roles import Role
from eventstore.store import EventStore
from eventstore.verify import KeyRing, verify_database

START: Final = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
STAFF: Final = "staff-1"
TEAM: Final = {
    "cara": Role.CUSTOMER_ADMIN,
    "fay": Role.FINANCE,
    "tom": Role.TECHNICAL,
}
METRICS: Final = ("revenue", "hours_saved")
FORMULA: Final = "(metric.revenue - baseline.revenue) * 0.5 + metric.hours_saved * 40"


async def register_with_team(store: EventStore, tenant: str, at: datetime = START) -> None:
    """The customer, registered by vendor staff, with one user of each customer role."""
    await handle_customer(
        store,
        customer.RegisterCustomer(
            customer_id=tenant,
            name="Acme Ltd",
            currency="EUR",
            billing_contact=customer.BillingContact(
                name_sealed="sealed-name", email_sealed="sealed-email"
            ),
            at=at,
            by=STAFF,
            by_role=Role.ADMIN,
        ),
    )
    for user, role in TEAM.items():
        await handle_customer(
            store,
            customer.InviteUser(
                customer_id=tenant,
                user_id=user,
                role=role,
                name_sealed=f"sealed-{user}",
                email_sealed=f"sealed-{user}@",
                at=at,
                by=STAFF,
                by_role=Role.ADMIN,
            ),
        )


async def complete_setup(
    store: EventStore,
    tenant: str,
    measured: tuple[Decimal, Decimal] = (Decimal("100"), Decimal("98")),
    at: datetime = START,
) -> setup.SetupState:
    """All five steps, by the TECHNICAL user; `measured` is the revenue test (measured,
    expected), the hours test is exact."""
    commands: list[setup.Command] = [
        setup.CompleteApiIntegration(
            credential_fingerprint="a" * 64,
            credential_reference="vault://kv/acme/api-key",
            validation_passed=True,
            at=at,
            by="tom",
        ),
        setup.ConnectDataSource(
            source_kind="salesforce", connection_test_passed=True, at=at, by="tom"
        ),
        setup.MapMetrics(
            mappings=tuple(
                setup.FieldMapping(source_field=f"source.{metric}", metric=metric)
                for metric in METRICS
            ),
            at=at,
            by="tom",
        ),
        setup.EstablishBaseline(
            baselines=(
                setup.BaselineValue(metric="revenue", value=Decimal("1000")),
                setup.BaselineValue(metric="hours_saved", value=Decimal("0")),
            ),
            period_start=at - timedelta(days=60),
            period_end=at - timedelta(days=30),
            at=at,
            by="tom",
        ),
        setup.VerifyAccuracy(
            measurements=(
                setup.MeasuredValue(metric="revenue", measured=measured[0], expected=measured[1]),
                setup.MeasuredValue(
                    metric="hours_saved", measured=Decimal("10"), expected=Decimal("10")
                ),
            ),
            at=at,
            by="tom",
        ),
    ]
    state = setup.initial_state
    for command in commands:
        state = (await handle_setup(store, tenant, command, by_role=Role.TECHNICAL)).state
    return state


def draft(
    tenant: str, definition_id: str, at: datetime = START, share: str = "20"
) -> definition.DraftDefinition:
    return definition.DraftDefinition(
        customer_id=tenant,
        definition_id=definition_id,
        name="Value delivered",
        metrics=(
            definition.MetricInput(name="revenue", unit="EUR"),
            definition.MetricInput(name="hours_saved", unit="hours"),
        ),
        formula=FORMULA,
        pricing=definition.PricingInput(
            share_percent=share, floor_minor_units=1_000, cap_minor_units=5_000_000, currency="EUR"
        ),
        at=at,
        by="fay",
        by_role=Role.FINANCE,
    )


async def approve(
    store: EventStore, tenant: str, definition_id: str, version: int, at: datetime = START
) -> definition.DefinitionState:
    """Submit `version` and take it through the three stages by the assigned approvers."""
    await handle_definition(
        store,
        definition.SubmitForApproval(
            customer_id=tenant,
            definition_id=definition_id,
            version=version,
            finance_approver="fay",
            technical_approver="tom",
            executive="cara",
            at=at,
            by="fay",
            by_role=Role.FINANCE,
        ),
    )
    approvers = {
        definition.ApprovalStage.FINANCE_REVIEW: "fay",
        definition.ApprovalStage.TECHNICAL_REVIEW: "tom",
        definition.ApprovalStage.FINAL_SIGN_OFF: "cara",
    }
    state = definition.initial_state
    for stage, user in approvers.items():
        outcome = await handle_definition(
            store,
            definition.ApproveStage(
                customer_id=tenant,
                definition_id=definition_id,
                version=version,
                stage=stage,
                at=at,
                by=user,
                by_role=TEAM[user],
            ),
        )
        state = outcome.state
    return state


async def assert_chain_verifies(store: EventStore, tenant: str) -> None:
    """The tenant's whole chain verifies, read back from the database."""
    async with store.pool.acquire() as connection:
        report = await verify_database(connection, KeyRing(), tenants=[tenant])
    assert report.ok, report.failure
