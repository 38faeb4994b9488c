"""Reading the read models: plain async functions that take a connection or a pool and return
msgspec Structs, ready to encode as API responses or cache entries.

Tables are named with their schema (`read_models.<table>`), so a caller's search_path does not
matter. A query reading several tables (the dashboard, the vendor overview) reads them in one
read-only REPEATABLE READ transaction, so its parts agree with each other.

List queries page by keyset: a page's `next_after` is an opaque cursor to pass as `after` for
the next page (None on the last page). Unlike an offset, a keyset page does not skip or repeat
rows when rows are added meanwhile. Filters are checked, and an unknown value is refused with
a ValueError naming the allowed ones, rather than silently matching nothing.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Generic, TypeAlias, TypeVar

import asyncpg
import msgspec

from domain.alerts import AlertSeverity, AlertStatus
from domain.setup import STEPS
from domain.tickets import TicketStatus
from eventstore.db import Connection
from projections.dashboard import STAGE_ORDER

Database: TypeAlias = "Connection | asyncpg.Pool"
"""Where a query reads: a connection (in the caller's transaction, if any) or a pool."""

T = TypeVar("T")

UNRESOLVED: Final = "unresolved"
"""The filter for alerts and tickets not resolved yet (for tickets: not resolved or closed)."""
MAX_LIMIT: Final = 500
"""The most rows one page holds."""
ACCURACY_BANDS: Final[tuple[tuple[str, Decimal, Decimal | None], ...]] = (
    ("below 85", Decimal(0), Decimal(85)),
    ("85 to 90", Decimal(85), Decimal(90)),
    ("90 to 95", Decimal(90), Decimal(95)),
    ("95 to 99", Decimal(95), Decimal(99)),
    ("99 and above", Decimal(99), None),
)
"""The vendor overview's accuracy distribution: (label, lower bound included, upper bound
excluded). 85 is the default go-live threshold."""


class InvalidCursorError(ValueError):
    """An `after` cursor that no page of this query handed out."""


class Page(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    """One page of a list: its items, and the cursor of the next page (None: no more)."""

    items: list[T]
    next_after: str | None = None


# --- the customer dashboard ------------------------------------------------------------------


class SetupStep(msgspec.Struct, frozen=True, kw_only=True):
    """One setup step: ``pending`` (never done), ``complete``, or ``invalidated`` (undone by
    a redone earlier step); when it was last completed, by whom, how often."""

    step: str
    position: int
    status: str
    completed_at: datetime | None = None
    completed_by: str | None = None
    times_completed: int = 0
    invalidated_at: datetime | None = None


class SetupProgress(msgspec.Struct, frozen=True, kw_only=True):
    steps_done: int
    steps_total: int
    completed_at: datetime | None
    steps: list[SetupStep]


class DefinitionApproval(msgspec.Struct, frozen=True, kw_only=True):
    """A value definition: its latest version's status (``DRAFT``, ``IN_REVIEW``, ``APPROVED``,
    ``VOIDED``) and approval stage, and the version in force."""

    definition_id: str
    name: str
    latest_version: int
    status: str
    stage: str | None
    in_force_version: int | None
    approved_at: datetime | None
    changed_at: datetime


def whole_seconds(duration: timedelta) -> timedelta:
    """`duration` rounded to the second, half-even: JSON durations carry no fractions."""
    return timedelta(seconds=round(duration.total_seconds()))


class GoLiveStatus(msgspec.Struct, frozen=True, kw_only=True):
    live: bool
    went_live_at: datetime | None
    billing_starts_at: datetime | None
    billing_paused_since: datetime | None
    time_to_go_live: timedelta | None
    """From registration to going live, in whole seconds (RFC 3339 durations have no
    fractions)."""
    accuracy_threshold: Decimal


class MeasuredAccuracy(msgspec.Struct, frozen=True, kw_only=True):
    measured: Decimal | None
    """The latest verdict's measured accuracy, else the setup test's (None: no test stands)."""
    measured_at: datetime | None
    setup_test: Decimal | None
    setup_verified_at: datetime | None
    confirmations: int
    disputes: int


class ValueInPeriod(msgspec.Struct, frozen=True, kw_only=True):
    """A definition's value and billable amount summed over the calculated periods starting
    in one day or month (`period_start`: its first instant, UTC)."""

    definition_id: str
    period_start: datetime
    currency: str
    value: Decimal
    billable_minor_units: int
    periods: int
    billable_periods: int


class LatestCalculation(msgspec.Struct, frozen=True, kw_only=True):
    """A definition's latest calculated period, as its current calculation has it."""

    definition_id: str
    period_start: datetime
    period_end: datetime
    calculation_id: str
    definition_version: int
    result: Decimal
    billable: bool
    currency: str
    amount_minor_units: int | None
    calculated_at: datetime
    calculations: int
    verdict: str | None


class MetricValue(msgspec.Struct, frozen=True, kw_only=True):
    """A metric's value in the latest period calculated with it."""

    metric: str
    value: Decimal
    definition_id: str
    period_start: datetime
    period_end: datetime
    calculation_id: str
    calculated_at: datetime


class OpenAlerts(msgspec.Struct, frozen=True, kw_only=True):
    """Alerts not resolved yet (open or acknowledged), by severity."""

    info: int = 0
    warning: int = 0
    critical: int = 0


class Dashboard(msgspec.Struct, frozen=True, kw_only=True):
    """One customer's dashboard; `as_of_seq` is the last event of its chain it includes."""

    tenant: str
    name: str | None
    currency: str | None
    registered_at: datetime | None
    stage: str
    stage_changed_at: datetime | None
    suspended_at: datetime | None
    setup: SetupProgress
    approvals: list[DefinitionApproval]
    go_live: GoLiveStatus
    accuracy: MeasuredAccuracy
    value_by_day: list[ValueInPeriod]
    value_by_month: list[ValueInPeriod]
    latest_calculations: list[LatestCalculation]
    latest_metric_values: list[MetricValue]
    open_alerts: OpenAlerts
    as_of_seq: int


@asynccontextmanager
async def _snapshot(db: Database) -> AsyncIterator[Connection]:
    """One connection seeing one snapshot of the read models for the queries inside."""
    if isinstance(db, asyncpg.Pool):
        async with (
            db.acquire() as connection,
            connection.transaction(isolation="repeatable_read", readonly=True),
        ):
            yield connection
    elif db.is_in_transaction():
        yield db  # the caller's transaction decides what it sees
    else:
        async with db.transaction(isolation="repeatable_read", readonly=True):
            yield db


_VALUE_BY = """
    SELECT definition_id, currency,
           date_trunc('{unit}', period_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
               AS period_start,
           sum(result) AS value,
           coalesce(sum(amount_minor_units) FILTER (WHERE billable), 0)::bigint
               AS billable_minor_units,
           count(*)::int AS periods,
           count(*) FILTER (WHERE billable)::int AS billable_periods
    FROM read_models.dashboard_calculations
    WHERE tenant = $1 AND period_start >= (
        SELECT (date_trunc('{unit}', max(period_start) AT TIME ZONE 'UTC')
                - make_interval({unit}s => $2 - 1)) AT TIME ZONE 'UTC'
        FROM read_models.dashboard_calculations WHERE tenant = $1)
    GROUP BY 1, 2, 3
    ORDER BY 3, 1
"""
# Periods are grouped by the UTC day or month they start in; the arithmetic is done on UTC
# wall-clock time, so the session's time zone never moves a boundary.


async def customer_dashboard(
    db: Database, tenant: str, *, days: int = 31, months: int = 12
) -> Dashboard | None:
    """The customer's dashboard, or None for a customer the read model does not know.

    The value series cover the `days` days and `months` months up to the customer's latest
    calculated period (not up to today: a query reads no clock, so its answer depends on the
    read model alone).
    """
    if days < 1 or months < 1:
        raise ValueError("days and months must be at least 1")
    async with _snapshot(db) as connection:
        customer = await connection.fetchrow(
            "SELECT * FROM read_models.dashboard_customers WHERE tenant = $1", tenant
        )
        if customer is None or customer["registered_at"] is None:
            return None
        steps = {
            row["step"]: row
            for row in await connection.fetch(
                "SELECT * FROM read_models.dashboard_setup_steps WHERE tenant = $1", tenant
            )
        }
        approvals = await connection.fetch(
            "SELECT definition_id, name, latest_version, status, stage, in_force_version,"
            " approved_at, changed_at FROM read_models.dashboard_definitions"
            " WHERE tenant = $1 ORDER BY definition_id",
            tenant,
        )
        by_day = await connection.fetch(_VALUE_BY.format(unit="day"), tenant, days)
        by_month = await connection.fetch(_VALUE_BY.format(unit="month"), tenant, months)
        latest = await connection.fetch(
            "SELECT DISTINCT ON (definition_id) definition_id, period_start, period_end,"
            " calculation_id, definition_version, result, billable, currency,"
            " amount_minor_units, calculated_at, calculations, verdict"
            " FROM read_models.dashboard_calculations WHERE tenant = $1"
            " ORDER BY definition_id, period_start DESC",
            tenant,
        )
        metrics = await connection.fetch(
            "SELECT metric, value, definition_id, period_start, period_end, calculation_id,"
            " calculated_at FROM read_models.dashboard_metric_values"
            " WHERE tenant = $1 ORDER BY metric",
            tenant,
        )
        alerts = await connection.fetch(
            "SELECT severity, count(*)::int AS alerts FROM read_models.dashboard_alerts"
            " WHERE tenant = $1 AND status <> 'resolved' GROUP BY severity",
            tenant,
        )
    registered_at, went_live_at = customer["registered_at"], customer["went_live_at"]
    return Dashboard(
        tenant=tenant,
        name=customer["name"],
        currency=customer["currency"],
        registered_at=registered_at,
        stage=customer["stage"],
        stage_changed_at=customer["stage_changed_at"],
        suspended_at=customer["suspended_at"],
        setup=SetupProgress(
            steps_done=customer["setup_steps_done"],
            steps_total=len(STEPS),
            completed_at=customer["setup_completed_at"],
            steps=[_setup_step(step, n, steps.get(step)) for n, step in enumerate(STEPS, 1)],
        ),
        approvals=[DefinitionApproval(**dict(row)) for row in approvals],
        go_live=GoLiveStatus(
            live=went_live_at is not None,
            went_live_at=went_live_at,
            billing_starts_at=customer["billing_starts_at"],
            billing_paused_since=customer["billing_paused_at"],
            time_to_go_live=(
                None if went_live_at is None else whole_seconds(went_live_at - registered_at)
            ),
            accuracy_threshold=customer["accuracy_threshold"],
        ),
        accuracy=MeasuredAccuracy(
            measured=customer["measured_accuracy"],
            measured_at=customer["measured_accuracy_at"],
            setup_test=customer["setup_accuracy"],
            setup_verified_at=customer["setup_verified_at"],
            confirmations=customer["confirmations"],
            disputes=customer["disputes"],
        ),
        value_by_day=[ValueInPeriod(**dict(row)) for row in by_day],
        value_by_month=[ValueInPeriod(**dict(row)) for row in by_month],
        latest_calculations=[LatestCalculation(**dict(row)) for row in latest],
        latest_metric_values=[MetricValue(**dict(row)) for row in metrics],
        open_alerts=OpenAlerts(**{row["severity"]: row["alerts"] for row in alerts}),
        as_of_seq=customer["last_seq"],
    )


def _setup_step(step: str, position: int, row: asyncpg.Record | None) -> SetupStep:
    if row is None:
        return SetupStep(step=step, position=position, status="pending")
    return SetupStep(
        step=step,
        position=position,
        status=row["status"],
        completed_at=row["completed_at"],
        completed_by=row["completed_by"],
        times_completed=row["times_completed"],
        invalidated_at=row["invalidated_at"],
    )


# --- the vendor overview ---------------------------------------------------------------------


class StageCount(msgspec.Struct, frozen=True, kw_only=True):
    stage: str
    customers: int


class AccuracyBand(msgspec.Struct, frozen=True, kw_only=True):
    """Customers whose measured accuracy is at least `lower` and below `upper` (None: no
    upper bound)."""

    band: str
    lower: Decimal
    upper: Decimal | None
    customers: int


class MonthOfOnboarding(msgspec.Struct, frozen=True, kw_only=True):
    """Customers registered, and customers gone live, in one UTC month (its first instant)."""

    month: datetime
    registered: int
    went_live: int


class VendorOverview(msgspec.Struct, frozen=True, kw_only=True):
    """The business metrics across customers (ADMIN only)."""

    customers: int
    by_stage: list[StageCount]
    went_live: int
    average_time_to_go_live: timedelta | None
    """Mean of registration to go-live, over the customers that went live, in whole seconds."""
    versions_decided: int
    versions_approved: int
    approval_success_rate: Decimal | None
    """Percent (2 places) of the versions whose latest approval round ended that it ended
    approved; None before any ended."""
    accuracy_distribution: list[AccuracyBand]
    accuracy_unmeasured: int
    """Customers with no standing accuracy test."""
    onboarding_per_month: list[MonthOfOnboarding]


_CUSTOMERS_FILTER = "registered_at IS NOT NULL AND ($1::text[] IS NULL OR tenant = ANY($1))"


async def vendor_overview(db: Database, *, tenants: Sequence[str] | None = None) -> VendorOverview:
    """The vendor's business metrics over every customer, or over `tenants` only."""
    chosen = None if tenants is None else list(tenants)
    async with _snapshot(db) as connection:
        summary = await connection.fetchrow(
            "SELECT count(*)::int AS customers,"
            " count(went_live_at)::int AS went_live,"
            " round(avg(extract(epoch FROM went_live_at - registered_at)) * 1000000)::bigint"
            "   AS average_microseconds,"
            " count(*) FILTER (WHERE measured_accuracy IS NULL)::int AS unmeasured"
            f" FROM read_models.dashboard_customers WHERE {_CUSTOMERS_FILTER}",
            chosen,
        )
        stages = await connection.fetch(
            "SELECT stage, count(*)::int AS customers FROM read_models.dashboard_customers"
            f" WHERE {_CUSTOMERS_FILTER} GROUP BY stage",
            chosen,
        )
        bands = await connection.fetch(
            "SELECT width_bucket(measured_accuracy, $2::numeric[]) AS band,"
            " count(*)::int AS customers FROM read_models.dashboard_customers"
            f" WHERE {_CUSTOMERS_FILTER} AND measured_accuracy IS NOT NULL GROUP BY 1",
            chosen,
            [lower for _, lower, _ in ACCURACY_BANDS[1:]],
        )
        approvals = await connection.fetchrow(
            "SELECT count(*) FILTER (WHERE outcome <> 'in_review')::int AS decided,"
            " count(*) FILTER (WHERE outcome = 'approved')::int AS approved"
            " FROM read_models.dashboard_approval_outcomes"
            " WHERE $1::text[] IS NULL OR tenant = ANY($1)",
            chosen,
        )
        months = await connection.fetch(
            "SELECT month, sum(registered)::int AS registered, sum(went_live)::int AS went_live"
            " FROM (SELECT date_trunc('month', registered_at AT TIME ZONE 'UTC')"
            "         AT TIME ZONE 'UTC' AS month, 1 AS registered, 0 AS went_live"
            f"       FROM read_models.dashboard_customers WHERE {_CUSTOMERS_FILTER}"
            "       UNION ALL"
            "       SELECT date_trunc('month', went_live_at AT TIME ZONE 'UTC')"
            "         AT TIME ZONE 'UTC', 0, 1"
            f"       FROM read_models.dashboard_customers WHERE {_CUSTOMERS_FILTER}"
            "         AND went_live_at IS NOT NULL) AS onboarding"
            " GROUP BY month ORDER BY month",
            chosen,
        )
    assert summary is not None  # noqa: S101 (an aggregate always returns a row)
    assert approvals is not None  # noqa: S101
    per_stage = {row["stage"]: row["customers"] for row in stages}
    per_band = {row["band"]: row["customers"] for row in bands}
    average = summary["average_microseconds"]
    decided, approved = approvals["decided"], approvals["approved"]
    return VendorOverview(
        customers=summary["customers"],
        by_stage=[
            StageCount(stage=stage.value, customers=per_stage.get(stage.value, 0))
            for stage in STAGE_ORDER
        ],
        went_live=summary["went_live"],
        average_time_to_go_live=(
            None if average is None else whole_seconds(timedelta(microseconds=average))
        ),
        versions_decided=decided,
        versions_approved=approved,
        approval_success_rate=(
            None if not decided else (Decimal(100 * approved) / decided).quantize(Decimal("0.01"))
        ),
        accuracy_distribution=[
            AccuracyBand(band=label, lower=lower, upper=upper, customers=per_band.get(n, 0))
            for n, (label, lower, upper) in enumerate(ACCURACY_BANDS)
        ],
        accuracy_unmeasured=summary["unmeasured"],
        onboarding_per_month=[MonthOfOnboarding(**dict(row)) for row in months],
    )


# --- lists -------------------------------------------------------------------------------------


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be from 1 to {MAX_LIMIT}, not {limit}")
    return limit


def _cursor(*key: object) -> str:
    """An opaque cursor holding a row's sort key."""
    return base64.urlsafe_b64encode(msgspec.json.encode(key)).decode().rstrip("=")


def _key(cursor: str, shape: Any) -> Any:
    """The sort key a cursor holds, decoded as `shape`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return msgspec.json.decode(raw, type=shape)
    except (ValueError, msgspec.DecodeError) as error:
        raise InvalidCursorError(f"{cursor!r} is not a cursor this list handed out") from error


class _Where:
    """A WHERE clause built from fixed SQL fragments, with numbered parameters."""

    def __init__(self) -> None:
        self.conditions: list[str] = []
        self.arguments: list[object] = []

    def add(self, condition: str, *arguments: object) -> None:
        """`condition` with ``{}`` where each argument's placeholder goes."""
        first = len(self.arguments) + 1
        self.arguments.extend(arguments)
        self.conditions.append(
            condition.format(*(f"${n}" for n in range(first, first + len(arguments))))
        )

    def sql(self) -> str:
        return " AND ".join(self.conditions) or "true"


async def _page(
    db: Database,
    sql: str,
    where: _Where,
    limit: int,
    item: type[T],
    key_of: Any,
) -> Page[T]:
    """Fetch one row more than the page holds, to know whether another page follows."""
    records = await db.fetch(
        sql.format(where=where.sql(), limit=f"${len(where.arguments) + 1}"),
        *where.arguments,
        limit + 1,
    )
    items = [item(**dict(record)) for record in records[:limit]]
    following = _cursor(*key_of(records[limit - 1])) if len(records) > limit else None
    return Page(items=items, next_after=following)


class WaitingApproval(msgspec.Struct, frozen=True, kw_only=True):
    """A version waiting for the approver's stage since `waiting_since`."""

    tenant: str
    definition_id: str
    definition_name: str
    version: int
    content_hash: str
    stage: str
    waiting_since: datetime
    submitted_at: datetime
    submitted_by: str


async def approvals_queue(
    db: Database,
    approver: str,
    *,
    tenant: str | None = None,
    after: str | None = None,
    limit: int = 50,
) -> Page[WaitingApproval]:
    """What waits for `approver` (a user id), longest waiting first; of one customer when
    `tenant` is given (user ids are the customer's own, so callers normally give it)."""
    where = _Where()
    where.add("approver = {}", approver)
    if tenant is not None:
        where.add("tenant = {}", tenant)
    if after is not None:
        where.add(
            "(waiting_since, tenant, definition_id) > ({}, {}, {})",
            *_key(after, tuple[datetime, str, str]),
        )
    return await _page(
        db,
        "SELECT tenant, definition_id, definition_name, version_in_review AS version,"
        " content_hash, stage, waiting_since, submitted_at, submitted_by"
        " FROM read_models.approvals WHERE {where}"
        " ORDER BY waiting_since, tenant, definition_id LIMIT {limit}",
        where,
        _limit(limit),
        WaitingApproval,
        lambda row: (row["waiting_since"], row["tenant"], row["definition_id"]),
    )


class AlertEntry(msgspec.Struct, frozen=True, kw_only=True):
    """An alert as listed; `evidence` as it was raised."""

    alert_id: str
    kind: str
    severity: str
    status: str
    summary: str
    source_reference: str | None
    raised_at: datetime
    raised_by: str
    raised_by_role: str
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    evidence: dict[str, str] = msgspec.field(default_factory=dict)


_SEVERITIES: Final = tuple(severity.value for severity in AlertSeverity)
_ALERT_STATES: Final = (*(status.value for status in AlertStatus), UNRESOLVED)


async def alerts_list(
    db: Database,
    tenant: str,
    *,
    severity: str | None = None,
    state: str | None = None,
    after: str | None = None,
    limit: int = 50,
) -> Page[AlertEntry]:
    """The customer's alerts, newest first; `severity` is ``info``, ``warning`` or
    ``critical``, `state` ``open``, ``acknowledged``, ``resolved`` or ``unresolved`` (open or
    acknowledged)."""
    where = _Where()
    where.add("tenant = {}", tenant)
    if severity is not None:
        where.add("severity = {}", _one_of("severity", severity, _SEVERITIES))
    if state is not None:
        if _one_of("state", state, _ALERT_STATES) == UNRESOLVED:
            where.add("status <> 'resolved'")
        else:
            where.add("status = {}", state)
    if after is not None:
        where.add("(raised_at, alert_id) < ({}, {})", *_key(after, tuple[datetime, str]))
    page = await _page(
        db,
        "SELECT alert_id, kind, severity, status, summary, source_reference, raised_at,"
        " raised_by, raised_by_role, acknowledged_at, acknowledged_by, resolved_at,"
        " resolved_by FROM read_models.alerts WHERE {where}"
        " ORDER BY raised_at DESC, alert_id DESC LIMIT {limit}",
        where,
        _limit(limit),
        AlertEntry,
        lambda row: (row["raised_at"], row["alert_id"]),
    )
    if not page.items:
        return page
    evidence: dict[str, dict[str, str]] = {}
    for row in await db.fetch(
        "SELECT alert_id, name, value FROM read_models.alert_evidence"
        " WHERE tenant = $1 AND alert_id = ANY($2) ORDER BY alert_id, name",
        tenant,
        [entry.alert_id for entry in page.items],
    ):
        evidence.setdefault(row["alert_id"], {})[row["name"]] = row["value"]
    return Page(
        items=[
            msgspec.structs.replace(entry, evidence=evidence.get(entry.alert_id, {}))
            for entry in page.items
        ],
        next_after=page.next_after,
    )


def _one_of(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value


class TicketEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A support ticket as listed: no subject or text (they are sealed), people by id."""

    tenant: str
    ticket_id: str
    priority: str
    status: str
    opened_side: str
    opened_at: datetime
    opened_by: str
    assignee: str | None
    assigned_at: datetime | None
    messages: int
    last_message_at: datetime | None
    first_response_at: datetime | None
    status_changed_at: datetime
    first_resolved_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    reopened: int


_TICKET_STATUSES: Final = (*(status.value for status in TicketStatus), UNRESOLVED)
_TICKET_COLUMNS: Final = (
    "tenant, ticket_id, priority, status, opened_side, opened_at, opened_by, assignee,"
    " assigned_at, messages, last_message_at, first_response_at, status_changed_at,"
    " first_resolved_at, resolved_at, closed_at, reopened"
)


def _ticket_status(where: _Where, status: str | None) -> None:
    if status is None:
        return
    if _one_of("status", status, _TICKET_STATUSES) == UNRESOLVED:
        where.add("status NOT IN ('resolved', 'closed')")
    else:
        where.add("status = {}", status)


async def tickets_for_customer(
    db: Database,
    tenant: str,
    *,
    status: str | None = None,
    after: str | None = None,
    limit: int = 50,
) -> Page[TicketEntry]:
    """The customer's tickets, newest first; `status` is a ticket status or ``unresolved``
    (neither resolved nor closed)."""
    where = _Where()
    where.add("tenant = {}", tenant)
    _ticket_status(where, status)
    if after is not None:
        where.add("(opened_at, ticket_id) < ({}, {})", *_key(after, tuple[datetime, str]))
    return await _page(
        db,
        f"SELECT {_TICKET_COLUMNS} FROM read_models.tickets WHERE {{where}}"
        " ORDER BY opened_at DESC, ticket_id DESC LIMIT {limit}",
        where,
        _limit(limit),
        TicketEntry,
        lambda row: (row["opened_at"], row["ticket_id"]),
    )


async def tickets_for_assignee(
    db: Database,
    assignee: str,
    *,
    status: str | None = None,
    tenant: str | None = None,
    after: str | None = None,
    limit: int = 50,
) -> Page[TicketEntry]:
    """The tickets assigned to `assignee` (vendor staff, across customers unless `tenant` is
    given), oldest first: the order they are worked through."""
    where = _Where()
    where.add("assignee = {}", assignee)
    if tenant is not None:
        where.add("tenant = {}", tenant)
    _ticket_status(where, status)
    if after is not None:
        where.add(
            "(opened_at, tenant, ticket_id) > ({}, {}, {})",
            *_key(after, tuple[datetime, str, str]),
        )
    return await _page(
        db,
        f"SELECT {_TICKET_COLUMNS} FROM read_models.tickets WHERE {{where}}"
        " ORDER BY opened_at, tenant, ticket_id LIMIT {limit}",
        where,
        _limit(limit),
        TicketEntry,
        lambda row: (row["opened_at"], row["tenant"], row["ticket_id"]),
    )


class ReceiptEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One record of the customer's chain; its signed receipt is at
    ``GET /receipts/{tenant}/{seq}``."""

    seq: int
    type: str
    stream_id: str
    recorded_at: datetime


async def receipts_index(
    db: Database, tenant: str, *, after_seq: int = 0, limit: int = 100
) -> list[ReceiptEntry]:
    """The customer's receipts in chain order, from the one after `after_seq` (the last seq of
    the previous page)."""
    records = await db.fetch(
        "SELECT seq, type, stream_id, recorded_at FROM read_models.receipts"
        " WHERE tenant = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        tenant,
        after_seq,
        _limit(limit),
    )
    return [ReceiptEntry(**dict(record)) for record in records]


async def calculation_results(
    db: Database,
    tenant: str,
    *,
    definition_id: str | None = None,
    after: str | None = None,
    limit: int = 50,
) -> Page[LatestCalculation]:
    """The customer's current calculation of each period, newest period first (a
    recalculated period shows its latest receipt and how many it has had)."""
    where = _Where()
    where.add("tenant = {}", tenant)
    if definition_id is not None:
        where.add("definition_id = {}", definition_id)
    if after is not None:
        where.add("(period_start, definition_id) < ({}, {})", *_key(after, tuple[datetime, str]))
    return await _page(
        db,
        "SELECT definition_id, period_start, period_end, calculation_id, definition_version,"
        " result, billable, currency, amount_minor_units, calculated_at, calculations, verdict"
        " FROM read_models.dashboard_calculations WHERE {where}"
        " ORDER BY period_start DESC, definition_id DESC LIMIT {limit}",
        where,
        _limit(limit),
        LatestCalculation,
        lambda row: (row["period_start"], row["definition_id"]),
    )
