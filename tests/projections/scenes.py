"""Commands the read-model tests issue through the real handlers, beyond the customer's journey
in tests/commands/journey.py; catching the projectors up, and reading their rows back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import asyncpg

from commands.accuracy import handle_feedback
from commands.alerts import handle_alert
from commands.calculation import handle_calculation
from commands.definition import handle_definition
from commands.golive import handle_billing
from commands.tickets import handle_ticket
from domain import accuracy, alerts, calculation, definition, golive, tickets
from domain.roles import Role
from eventstore.store import EventStore
from projections.projector import Projector
from projections.registry import PROJECTORS
from projections.runner import ProjectionRunner
from tests.commands.journey import STAFF, TEAM, draft

DAY: Final = timedelta(days=1)
VENDOR_STAFF: Final = frozenset({STAFF, "staff-2"})


async def catch_up(store: EventStore, *projectors: Projector) -> None:
    for projector in projectors:
        await ProjectionRunner(store.pool, projector).catch_up()


async def go_live(
    store: EventStore, tenant: str, at: datetime, billing_starts_at: datetime
) -> None:
    await handle_billing(
        store,
        golive.GoLive(
            customer_id=tenant,
            billing_starts_at=billing_starts_at,
            at=at,
            by="cara",
            by_role=Role.CUSTOMER_ADMIN,
        ),
    )


async def pause_billing(store: EventStore, tenant: str, at: datetime) -> None:
    await handle_billing(
        store,
        golive.PauseBilling(
            customer_id=tenant,
            reason_sealed="sealed-reason",
            at=at,
            by="cara",
            by_role=Role.CUSTOMER_ADMIN,
        ),
    )


async def calculate(
    store: EventStore,
    tenant: str,
    start: datetime,
    revenue: str,
    calculation_id: str,
    *,
    at: datetime | None = None,
    recalculate: bool = False,
    definition_id: str = "value",
) -> None:
    """A day's value from `revenue` and 2 hours saved: (revenue - 1000) * 0.5 + 80."""
    inputs = (
        calculation.MetricInput(
            metric="revenue", value=revenue, source="salesforce:amount", fingerprint="b" * 64
        ),
        calculation.MetricInput(
            metric="hours_saved", value="2", source="salesforce:hours", fingerprint="c" * 64
        ),
    )
    common: dict[str, Any] = {
        "customer_id": tenant,
        "definition_id": definition_id,
        "period_start": start,
        "period_end": start + DAY,
        "calculation_id": calculation_id,
        "inputs": inputs,
        "at": at or start + 2 * DAY,
        "by": STAFF,
        "by_role": Role.ADMIN,
    }
    command: calculation.Command = (
        calculation.RecalculateValue(reason_sealed="sealed-reason", **common)
        if recalculate
        else calculation.CalculateValue(**common)
    )
    await handle_calculation(store, command)


async def confirm(
    store: EventStore, tenant: str, start: datetime, calculation_id: str, at: datetime
) -> None:
    await handle_feedback(
        store,
        accuracy.ConfirmCalculation(
            customer_id=tenant, calculation_id=calculation_id, at=at, by="fay", by_role=Role.FINANCE
        ),
        definition_id="value",
        period_start=start,
    )


async def dispute(
    store: EventStore,
    tenant: str,
    start: datetime,
    calculation_id: str,
    expected_result: str,
    at: datetime,
) -> None:
    await handle_feedback(
        store,
        accuracy.DisputeCalculation(
            customer_id=tenant,
            calculation_id=calculation_id,
            expected_result=expected_result,
            reason_sealed="sealed-reason",
            at=at,
            by="fay",
            by_role=Role.FINANCE,
        ),
        definition_id="value",
        period_start=start,
    )


async def raise_alert(
    store: EventStore,
    tenant: str,
    alert_id: str,
    severity: str,
    at: datetime,
    evidence: dict[str, str] | None = None,
) -> None:
    await handle_alert(
        store,
        alerts.RaiseAlert(
            customer_id=tenant,
            alert_id=alert_id,
            kind="data_source_error",
            severity=alerts.AlertSeverity(severity),
            summary=f"{alert_id} looks off",
            evidence=evidence or {"status": "500"},
            source_reference=f"feed:{alert_id}",
            at=at,
            by="tom",
            by_role=Role.TECHNICAL,
        ),
    )


async def acknowledge_alert(store: EventStore, tenant: str, alert_id: str, at: datetime) -> None:
    await handle_alert(
        store,
        alerts.AcknowledgeAlert(
            customer_id=tenant, alert_id=alert_id, at=at, by="tom", by_role=Role.TECHNICAL
        ),
    )


async def resolve_alert(store: EventStore, tenant: str, alert_id: str, at: datetime) -> None:
    await handle_alert(
        store,
        alerts.ResolveAlert(
            customer_id=tenant,
            alert_id=alert_id,
            note_sealed="sealed-note",
            at=at,
            by=STAFF,
            by_role=Role.ADMIN,
        ),
    )


async def ticket(store: EventStore, tenant: str, command: tickets.Command) -> None:
    await handle_ticket(store, tenant, command, vendor_staff=VENDOR_STAFF)


APPROVERS: Final = {
    definition.ApprovalStage.FINANCE_REVIEW: "fay",
    definition.ApprovalStage.TECHNICAL_REVIEW: "tom",
    definition.ApprovalStage.FINAL_SIGN_OFF: "cara",
}


async def submit(
    store: EventStore, tenant: str, definition_id: str, version: int, at: datetime
) -> None:
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


async def approve_stage(
    store: EventStore,
    tenant: str,
    definition_id: str,
    version: int,
    stage: definition.ApprovalStage,
    at: datetime,
) -> None:
    """The stage's assigned approver approves it."""
    user = APPROVERS[stage]
    await handle_definition(
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


async def request_changes(
    store: EventStore,
    tenant: str,
    definition_id: str,
    version: int,
    stage: definition.ApprovalStage,
    at: datetime,
) -> None:
    user = APPROVERS[stage]
    await handle_definition(
        store,
        definition.RequestChanges(
            customer_id=tenant,
            definition_id=definition_id,
            version=version,
            stage=stage,
            reason_sealed="sealed-reason",
            at=at,
            by=user,
            by_role=TEAM[user],
        ),
    )


async def revise(
    store: EventStore, tenant: str, definition_id: str, version: int, at: datetime
) -> None:
    """A new version from `version`, with the same content but a 25 % share."""
    drafted = draft(tenant, definition_id, at=at, share="25")
    await handle_definition(
        store,
        definition.ReviseDefinition(
            customer_id=tenant,
            definition_id=definition_id,
            revises_version=version,
            name=drafted.name,
            metrics=drafted.metrics,
            formula=drafted.formula,
            pricing=drafted.pricing,
            at=at,
            by="fay",
            by_role=Role.FINANCE,
        ),
    )


async def rows_of(
    connection: asyncpg.Connection[Any], schema: str, tenants: Sequence[str]
) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the customers, per table of every projector, in key order."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    for projector in PROJECTORS:
        for table in projector.tables:
            records = await connection.fetch(
                f"SELECT {', '.join(table.columns)} FROM {schema}.{table.name}"
                f" WHERE tenant = ANY($1) ORDER BY {', '.join(table.key)}",
                list(tenants),
            )
            found[table.name] = [tuple(record) for record in records]
    return found
