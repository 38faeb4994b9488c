"""Command routes: one POST per command of the domain, and a GET with its ETag per aggregate.

Every route lives under ``/v1/customers/{customer_id}``, so the tenant comes from the path and
the guard (`api.common.role_guard`) hides a customer from anyone but its own users and vendor
staff. A route only translates: it reads its body (a Struct refusing unknown fields), seals the
personal text in it, stamps the time and the caller, runs the command's handler with the
version `If-Match` names, and answers with the receipts' summary and cursor
(`api.common.accepted`). Who may call a route is in `api.policy.POLICY`, and the domain then
applies its finer rules (is this the assigned approver? may this role change the pricing?).

Personal text is sealed with the vault before it reaches a ``*_sealed`` field: free text with
the acting user as its subject (they wrote it), the billing contact with the subject
``billing-contact`` (as at registration). A GET never returns a sealed value: it opens the
ones a person reads (a ticket's subject, a reason for changes) with the vault, and an erased
person's text reads ``[erased]``.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Final, Literal, TypeAlias

import msgspec
import structlog
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, JSONBody, PathParameter

from api.auth import Principal, end_sessions_after
from api.common import (
    ETAG,
    IF_MATCH,
    Accepted,
    IfMatch,
    VersionNumber,
    accepted,
    api_of,
    expected_version,
    now,
    trace_of,
)
from api.openapi import problems
from api.problems import ApiProblem, invalid_parameter
from api.staff import current_vendor_staff
from commands.accuracy import handle_feedback
from commands.aggregates import (
    ACCURACY,
    ALERTS,
    BILLING,
    CALCULATION,
    CUSTOMER,
    DEFINITION,
    SETUP,
    TICKET,
)
from commands.alerts import handle_alert
from commands.calculation import handle_calculation
from commands.customer import handle_customer
from commands.customer import issue_api_key as make_api_key
from commands.definition import handle_definition
from commands.golive import handle_billing
from commands.handling import Loaded, Outcome, load
from commands.personal_data import PersonalDataVault, sealing_key_of
from commands.setup import handle_setup
from commands.streams import (
    accuracy_stream,
    alerts_stream,
    billing_stream,
    calculation_stream,
    customer_stream,
    definition_stream,
    setup_stream,
    tenant_of,
    ticket_stream,
)
from commands.tickets import handle_ticket
from domain import accuracy, alerts, calculation, customer, definition, golive, setup, tickets
from domain.definition import MAX_REASON_LENGTH
from domain.roles import Role
from projections.cache import REDIS_ERRORS

# --- the decorators: the errors of the handlers; the rest is added by api.openapi ---------------

log = structlog.get_logger(__name__)

COMMAND_ERRORS: Final = (403, 404, 409, 422, 503)
READ_ERRORS: Final = (404, 503)

HandlerFunction: TypeAlias = Callable[..., Any]

COMMAND_ETAG: Final = "The aggregate's new version: send it back as If-Match."
AGGREGATE_ETAG: Final = "The aggregate's version: send it as If-Match with a command on it."


ACCOUNT_AT: Final = "/v1/customers/{customer_id}"
SETUP_AT: Final = "/v1/customers/{customer_id}/setup"
DEFINITION_AT: Final = "/v1/customers/{customer_id}/definitions/{definition_id}"
BILLING_AT: Final = "/v1/customers/{customer_id}/billing"
ALERT_AT: Final = "/v1/customers/{customer_id}/alerts/{alert_id}"
PERIOD_AT: Final = "/v1/customers/{customer_id}/definitions/{definition_id}/periods/{period_start}"
FEEDBACK_AT: Final = "/v1/customers/{customer_id}/feedback"
TICKET_AT: Final = "/v1/customers/{customer_id}/tickets/{ticket_id}"
"""The GETs whose ETag is the version a command checks If-Match against (`IfMatch.read_at`)."""


def command(
    path: str,
    *,
    summary: str,
    status_code: int = 201,
    read_at: str | None = None,
    creates: bool = False,
    answer_holds_a_secret: bool = False,
) -> Callable[[HandlerFunction], HTTPRouteHandler]:
    """A POST route for a command: it takes If-Match and answers the aggregate's ETag
    (`api.common.accepted`). Every command says which GET gives the version its If-Match
    names (`read_at`), or that it creates its aggregate (`creates`): see `IfMatch`. A command
    whose answer holds a secret shown once takes no Idempotency-Key: its answer would have to
    be kept in Redis to be replayed."""

    def decorate(fn: HandlerFunction) -> HTTPRouteHandler:
        opt: dict[str, Any] = {
            IF_MATCH: IfMatch(read_at=read_at, creates=creates),
            ETAG: COMMAND_ETAG,
        }
        if answer_holds_a_secret:
            opt["idempotency"] = False
        return post(
            path,
            summary=summary,
            status_code=status_code,
            responses=problems(COMMAND_ERRORS),
            opt=opt,
        )(fn)

    return decorate


def read(
    path: str, *, summary: str, errors: Iterable[int] = READ_ERRORS, etag: str | None = None
) -> Callable[[HandlerFunction], HTTPRouteHandler]:
    """A GET route; `etag` says what its answer's ETag is, if it has one."""

    def decorate(fn: HandlerFunction) -> HTTPRouteHandler:
        return get(
            path,
            summary=summary,
            responses=problems(errors),
            opt={} if etag is None else {ETAG: etag},
        )(fn)

    return decorate


# --- bodies -------------------------------------------------------------------------------------

Reason: TypeAlias = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=MAX_REASON_LENGTH,
        pattern=r"\S",
        description="Free text written by a person; sealed before it is recorded.",
    ),
]
LongText: TypeAlias = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=14_000,
        pattern=r"\S",
        description="Free text written by a person (at most 14,000 bytes in UTF-8); sealed "
        "before it is recorded.",
    ),
]
Subject: TypeAlias = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=200, pattern=r"\S", description="Sealed before it is recorded."
    ),
]
Instant: TypeAlias = Annotated[
    datetime, msgspec.Meta(tz=True, description="RFC 3339 with a time zone offset.")
]


class BillingContactBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    email: str
    phone: str | None = None


class UserRoleBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    role: Role


class ApiKeyBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    label: str = ""
    role: Literal["FINANCE", "TECHNICAL"] = "TECHNICAL"
    """The role the machine client acts in, as user ``api-key:<key id>``."""


class ReasonBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Reason


class SuspensionBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500, pattern=r"\S")]
    """About the customer (an organisation), for the audit trail: recorded in clear."""


class ApiIntegrationBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    secret: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    """The credential itself: only its SHA-256 fingerprint is recorded; it is kept nowhere."""
    credential_reference: str
    """Where the secret is kept, as ``scheme://location``."""
    validation_passed: bool
    validation_detail: str = ""


class DataSourceBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    source_kind: str
    connection_test_passed: bool
    connection_test_detail: str = ""


class FieldMappingBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    source_field: str
    metric: str


class MetricsBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    mappings: tuple[FieldMappingBody, ...]


class BaselineValueBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    metric: str
    value: Decimal


class BaselineBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    baselines: tuple[BaselineValueBody, ...]
    period_start: Instant
    period_end: Instant


class MeasurementBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    metric: str
    measured: Decimal
    expected: Decimal


class AccuracyBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    measurements: tuple[MeasurementBody, ...]


class MetricBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    unit: str


class PricingBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    share_percent: str
    """A decimal percentage as text (``"35.5"``)."""
    floor_minor_units: int | None = None
    cap_minor_units: int | None = None
    currency: str


class DraftBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    definition_id: str
    name: str
    metrics: tuple[MetricBody, ...]
    formula: str
    pricing: PricingBody


class RevisionBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    revises_version: int
    name: str
    metrics: tuple[MetricBody, ...]
    formula: str
    pricing: PricingBody


class SubmissionBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    finance_approver: str
    technical_approver: str
    executive: str


class StageBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    stage: definition.ApprovalStage


class ChangesBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    stage: definition.ApprovalStage
    reason: Reason


class GoLiveBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    billing_starts_at: Instant


class ThresholdBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    threshold: Decimal
    """A percentage from 85 to 100 with at most 2 decimal places, such as ``"90.50"``."""


class AlertBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    alert_id: str | None = None
    """Chosen by the caller to make a retry harmless; made by the route when left out."""
    kind: str
    severity: alerts.AlertSeverity
    summary: str
    evidence: dict[str, str]
    source_reference: str | None = None


class NoteBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    note: Reason


class InputBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    metric: str
    value: str
    source: str
    fingerprint: str


class CalculationBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    period_start: Instant
    period_end: Instant
    inputs: tuple[InputBody, ...]


class RecalculationBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    period_start: Instant
    period_end: Instant
    inputs: tuple[InputBody, ...]
    reason: Reason


class JudgedPeriodBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the calculation is: its definition and the start of its period."""

    definition_id: str
    period_start: Instant


class ExpectedValueBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    metric: str
    expected: str


class DisputeBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    definition_id: str
    period_start: Instant
    expected_values: tuple[ExpectedValueBody, ...] = ()
    expected_result: str | None = None
    reason: Reason


class TicketBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    subject: Subject
    body: LongText
    priority: tickets.TicketPriority = tickets.TicketPriority.NORMAL


class MessageBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    body: LongText


class AssigneeBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    assignee: str


class ResolutionBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    resolution: LongText


# --- helpers ------------------------------------------------------------------------------------


async def seal(request: Request[Any, Any, Any], customer_id: str, subject: str, text: str) -> str:
    return await api_of(request).services.vault.seal(tenant_of(customer_id), subject, text)


def new_id(prefix: str) -> str:
    """An id for something the route creates: short, random, valid in a stream name."""
    return f"{prefix}-{secrets.token_hex(8)}"


async def opened(
    vault: PersonalDataVault, tenant: str, values: Iterable[str | None]
) -> dict[str, str]:
    """The sealed values among `values`, opened (``[erased]`` once their person is forgotten).
    Anything not sealed is left out, so it is never shown as if it were someone's text."""
    sealed = {value for value in values if value and sealing_key_of(value) is not None}
    return await vault.open(tenant, sealed) if sealed else {}


async def registered_account(
    request: Request[Any, Any, Any], customer_id: str
) -> Loaded[customer.CustomerAccount]:
    """The customer's account and its version, refused (404) unless it is registered;
    suspended or not, it can be read (a read changes nothing, and an ADMIN reads a suspended
    account's ETag to reactivate it)."""
    loaded = await load(
        api_of(request).services.store, CUSTOMER, customer_stream(tenant_of(customer_id))
    )
    customer.ensure_registered(customer_id, loaded.state)
    return loaded


async def decide_for_customer(
    request: Request[Any, Any, Any], command: customer.Command
) -> Outcome[customer.CustomerAccount, customer.Event]:
    """Decide a command on the customer's account, then end the sessions its events take
    away (a role changed, access revoked, the customer suspended): every account route goes
    through here, so none can record such an event and leave the old tokens working."""
    api = api_of(request)
    outcome = await handle_customer(
        api.services.store,
        command,
        trace=trace_of(request),
        expected_version=expected_version(request),
    )
    failure: Exception | None = None
    for delay in SESSION_END_RETRIES:
        await asyncio.sleep(delay)
        try:
            await end_sessions_after(api.tokens, outcome.events, now())
        except REDIS_ERRORS as error:
            failure = error
        else:
            return outcome
    # Recorded, and not to be decided again (the domain would refuse it as done): say so.
    log.error(
        "sessions_not_ended",
        customer_id=command.customer_id,
        events=[type(event).__name__ for event in outcome.events],
        error=type(failure).__name__,
    )
    raise ApiProblem(
        503,
        "sessions-not-ended",
        "The command was recorded, but the sessions it ends were not ended",
        f"its events are in the ledger (cursor {outcome.cursor}); Redis did not take the "
        "revocation, so tokens issued before it work until they expire (at most "
        f"{api.tokens.max_lifetime.total_seconds() / 60:g} minutes). Do not send the command "
        "again; restore Redis, or change the affected users' passwords once it is back",
    )


SESSION_END_RETRIES: Final = (0.0, 0.1, 0.5)
"""Seconds to wait before each attempt to end the sessions a recorded command ends."""


def etagged(content: Any, version: int) -> Response[Any]:
    return Response(content, headers={"ETag": f'"{version}"'})


# --- the customer account -----------------------------------------------------------------------


@command(
    "/v1/customers/{customer_id:str}/users/{user_id:str}/role",
    summary="Change a user's role",
    read_at=ACCOUNT_AT,
)
async def change_user_role(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    user_id: FromPath[str],
    data: JSONBody[UserRoleBody],
) -> Response[Accepted]:
    """Replace the user's role. Their tokens issued until now stop working, so they act in
    the new role from their next login."""
    command = customer.ChangeUserRole(
        customer_id=customer_id,
        user_id=user_id,
        role=data.role,
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    return accepted(await decide_for_customer(request, command))


@command(
    "/v1/customers/{customer_id:str}/users/{user_id:str}/revoke",
    summary="Revoke a user's access",
    read_at=ACCOUNT_AT,
)
async def revoke_user_access(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    user_id: FromPath[str],
) -> Response[Accepted]:
    """Take away the user's role and all access to the customer; their tokens stop working."""
    command = customer.RevokeUserAccess(
        customer_id=customer_id,
        user_id=user_id,
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    return accepted(await decide_for_customer(request, command))


@command(
    "/v1/customers/{customer_id:str}/billing-contact",
    summary="Change the billing contact",
    read_at=ACCOUNT_AT,
)
async def change_billing_contact(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    data: JSONBody[BillingContactBody],
) -> Response[Accepted]:
    """Replace the billing contact whole (no phone given: none after); every field is sealed."""
    subject = "billing-contact"
    contact = customer.BillingContact(
        name_sealed=await seal(request, customer_id, subject, data.name),
        email_sealed=await seal(request, customer_id, subject, data.email),
        phone_sealed=(
            None if data.phone is None else await seal(request, customer_id, subject, data.phone)
        ),
    )
    command = customer.ChangeBillingContact(
        customer_id=customer_id,
        billing_contact=contact,
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    return accepted(await decide_for_customer(request, command))


@command(
    "/v1/customers/{customer_id:str}/api-keys",
    summary="Issue an API key",
    read_at=ACCOUNT_AT,
    answer_holds_a_secret=True,
)
async def issue_api_key(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    data: JSONBody[ApiKeyBody],
) -> Response[Accepted]:
    """Make a new API key. The answer holds the key (`api_key`) this once: only its digest is
    recorded, so it cannot be shown again."""
    issued = await make_api_key(
        api_of(request).services.store,
        customer_id,
        label=data.label,
        role=Role(data.role),
        at=now(),
        by=principal.user,
        by_role=principal.role,
        trace=trace_of(request),
        expected_version=expected_version(request),
    )
    response = accepted(issued.outcome, key_id=issued.key_id, api_key=issued.presented)
    response.set_header("Cache-Control", "no-store")
    return response


@command(
    "/v1/customers/{customer_id:str}/api-keys/{key_id:str}/revoke",
    summary="Revoke an API key",
    read_at=ACCOUNT_AT,
)
async def revoke_api_key(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    key_id: FromPath[str],
) -> Response[Accepted]:
    """Stop accepting the key; revoking it twice is refused, so a retry shows the first."""
    command = customer.RevokeApiKey(
        customer_id=customer_id,
        key_id=key_id,
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    return accepted(await decide_for_customer(request, command))


@command(
    "/v1/customers/{customer_id:str}/suspend", summary="Suspend a customer", read_at=ACCOUNT_AT
)
async def suspend_customer(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    data: JSONBody[SuspensionBody],
) -> Response[Accepted]:
    """Freeze the account: nothing but reactivation (and support tickets) is accepted until
    then. The reason is about the customer, an organisation, and is recorded in clear (the
    domain shows it in every refusal): write no one's personal data into it."""
    command = customer.SuspendCustomer(
        customer_id=customer_id,
        reason=data.reason,
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    return accepted(await decide_for_customer(request, command))


@command(
    "/v1/customers/{customer_id:str}/reactivate",
    summary="Reactivate a customer",
    read_at=ACCOUNT_AT,
)
async def reactivate_customer(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    data: JSONBody[SuspensionBody],
) -> Response[Accepted]:
    """Lift the suspension; the reason is recorded in clear, as for suspending."""
    command = customer.ReactivateCustomer(
        customer_id=customer_id,
        reason=data.reason,
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    return accepted(await decide_for_customer(request, command))


# --- the setup wizard ---------------------------------------------------------------------------


async def _setup_step(
    request: Request[Any, Any, Any], principal: Principal, customer_id: str, step: setup.Command
) -> Response[Any]:
    outcome = await handle_setup(
        api_of(request).services.store,
        customer_id,
        step,
        by_role=principal.role,
        trace=trace_of(request),
        expected_version=expected_version(request),
    )
    return accepted(outcome)


@command(
    "/v1/customers/{customer_id:str}/setup/api-integration",
    summary="Setup step 1: the API integration",
    read_at=SETUP_AT,
)
async def complete_api_integration(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    data: JSONBody[ApiIntegrationBody],
) -> Response[Accepted]:
    """Record the customer's API credential by its SHA-256 fingerprint, computed here: the
    secret itself is never recorded, logged or kept. `validation_passed` is the result of
    validating the credential with the provider, done by the caller (the wizard) for now."""
    step = setup.CompleteApiIntegration(
        credential_fingerprint=hashlib.sha256(data.secret.encode()).hexdigest(),
        credential_reference=data.credential_reference,
        validation_passed=data.validation_passed,
        validation_detail=data.validation_detail,
        at=now(),
        by=principal.user,
    )
    return await _setup_step(request, principal, customer_id, step)


@command(
    "/v1/customers/{customer_id:str}/setup/data-source",
    summary="Setup step 2: the data source",
    read_at=SETUP_AT,
)
async def connect_data_source(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    data: JSONBody[DataSourceBody],
) -> Response[Accepted]:
    """Choose the data source and record its connection test."""
    step = setup.ConnectDataSource(
        source_kind=data.source_kind,
        connection_test_passed=data.connection_test_passed,
        connection_test_detail=data.connection_test_detail,
        at=now(),
        by=principal.user,
    )
    return await _setup_step(request, principal, customer_id, step)


@command(
    "/v1/customers/{customer_id:str}/setup/metrics",
    summary="Setup step 3: map the metrics",
    read_at=SETUP_AT,
)
async def map_metrics(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    data: JSONBody[MetricsBody],
) -> Response[Accepted]:
    """Map the source's fields to metric names."""
    step = setup.MapMetrics(
        mappings=tuple(
            setup.FieldMapping(source_field=mapping.source_field, metric=mapping.metric)
            for mapping in data.mappings
        ),
        at=now(),
        by=principal.user,
    )
    return await _setup_step(request, principal, customer_id, step)


@command(
    "/v1/customers/{customer_id:str}/setup/baseline",
    summary="Setup step 4: the baseline",
    read_at=SETUP_AT,
)
async def establish_baseline(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    data: JSONBody[BaselineBody],
) -> Response[Accepted]:
    """Every mapped metric's starting value over a period that has ended."""
    step = setup.EstablishBaseline(
        baselines=tuple(
            setup.BaselineValue(metric=baseline.metric, value=baseline.value)
            for baseline in data.baselines
        ),
        period_start=data.period_start,
        period_end=data.period_end,
        at=now(),
        by=principal.user,
    )
    return await _setup_step(request, principal, customer_id, step)


@command(
    "/v1/customers/{customer_id:str}/setup/accuracy",
    summary="Setup step 5: verify accuracy",
    read_at=SETUP_AT,
)
async def verify_accuracy(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    data: JSONBody[AccuracyBody],
) -> Response[Accepted]:
    """Compare our measurement of every mapped metric with the customer's own figure."""
    step = setup.VerifyAccuracy(
        measurements=tuple(
            setup.MeasuredValue(
                metric=measurement.metric,
                measured=measurement.measured,
                expected=measurement.expected,
            )
            for measurement in data.measurements
        ),
        at=now(),
        by=principal.user,
    )
    return await _setup_step(request, principal, customer_id, step)


class SetupView(msgspec.Struct, frozen=True, kw_only=True):
    """The setup wizard: each completed step's receipt (None: not done), the next step."""

    customer_id: str
    completed_steps: tuple[str, ...]
    next_step: str | None
    accuracy: str | None
    steps: setup.SetupState
    version: int
    """The setup's version, also its ETag: send it back as If-Match."""


@read("/v1/customers/{customer_id:str}/setup", summary="The setup wizard", etag=AGGREGATE_ETAG)
async def get_setup(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
) -> Response[SetupView]:
    """Where the setup stands, as the ledger has it now; a customer with no step done is at
    version 0."""
    del principal
    await registered_account(request, customer_id)
    loaded = await load(api_of(request).services.store, SETUP, setup_stream(tenant_of(customer_id)))
    state = loaded.state
    view = SetupView(
        customer_id=customer_id,
        completed_steps=state.completed_steps,
        next_step=state.next_step,
        accuracy=None if state.testing is None else state.testing.accuracy,
        steps=state,
        version=loaded.version,
    )
    return etagged(view, loaded.version)


# --- value definitions and their approval -------------------------------------------------------


def _metrics(metrics: tuple[MetricBody, ...]) -> tuple[definition.MetricInput, ...]:
    return tuple(definition.MetricInput(name=metric.name, unit=metric.unit) for metric in metrics)


def _pricing(pricing: PricingBody) -> definition.PricingInput:
    return definition.PricingInput(
        share_percent=pricing.share_percent,
        floor_minor_units=pricing.floor_minor_units,
        cap_minor_units=pricing.cap_minor_units,
        currency=pricing.currency,
    )


async def _definition_command(
    request: Request[Any, Any, Any], command: definition.Command
) -> Response[Any]:
    outcome = await handle_definition(
        api_of(request).services.store,
        command,
        trace=trace_of(request),
        expected_version=expected_version(request),
    )
    return accepted(outcome)


@command(
    "/v1/customers/{customer_id:str}/definitions", summary="Draft a value definition", creates=True
)
async def draft_definition(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    data: JSONBody[DraftBody],
) -> Response[Accepted]:
    """Create the definition with its first version, a draft."""
    command = definition.DraftDefinition(
        customer_id=customer_id,
        definition_id=data.definition_id,
        name=data.name,
        metrics=_metrics(data.metrics),
        formula=data.formula,
        pricing=_pricing(data.pricing),
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    return await _definition_command(request, command)


@command(
    "/v1/customers/{customer_id:str}/definitions/{definition_id:str}/versions",
    summary="Revise a value definition",
    read_at=DEFINITION_AT,
)
async def revise_definition(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    definition_id: FromPath[str],
    data: JSONBody[RevisionBody],
) -> Response[Accepted]:
    """Make a new version from the latest, with the content given whole. Only FINANCE may
    change the pricing terms (422 `pricing-change-not-allowed` otherwise); a running approval
    of the latest version is voided."""
    command = definition.ReviseDefinition(
        customer_id=customer_id,
        definition_id=definition_id,
        revises_version=data.revises_version,
        name=data.name,
        metrics=_metrics(data.metrics),
        formula=data.formula,
        pricing=_pricing(data.pricing),
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    return await _definition_command(request, command)


@command(
    "/v1/customers/{customer_id:str}/definitions/{definition_id:str}/versions/{version:int}/submit",
    summary="Submit a version for approval",
    read_at=DEFINITION_AT,
)
async def submit_for_approval(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    definition_id: FromPath[str],
    version: VersionNumber,
    data: JSONBody[SubmissionBody],
) -> Response[Accepted]:
    """Send the latest draft for approval, naming a FINANCE, a TECHNICAL and a
    CUSTOMER_ADMIN user as the approvers of its three stages."""
    command = definition.SubmitForApproval(
        customer_id=customer_id,
        definition_id=definition_id,
        version=version,
        finance_approver=data.finance_approver,
        technical_approver=data.technical_approver,
        executive=data.executive,
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    return await _definition_command(request, command)


@command(
    "/v1/customers/{customer_id:str}/definitions/{definition_id:str}/versions/{version:int}/approve",
    summary="Approve a stage",
    read_at=DEFINITION_AT,
)
async def approve_stage(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    definition_id: FromPath[str],
    version: VersionNumber,
    data: JSONBody[StageBody],
) -> Response[Accepted]:
    """Approve the current stage of the version's approval. Only the stage's assigned approver
    may, in the stage's role (422 `not-assigned-approver` for anyone else; vendor staff never
    approve)."""
    command = definition.ApproveStage(
        customer_id=customer_id,
        definition_id=definition_id,
        version=version,
        stage=data.stage,
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    return await _definition_command(request, command)


@command(
    "/v1/customers/{customer_id:str}/definitions/{definition_id:str}/versions/{version:int}"
    "/request-changes",
    summary="Request changes",
    read_at=DEFINITION_AT,
)
async def request_changes(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    definition_id: FromPath[str],
    version: VersionNumber,
    data: JSONBody[ChangesBody],
) -> Response[Accepted]:
    """Send the version back to draft from the current stage, as its assigned approver,
    saying why (sealed, with the approver as its person)."""
    command = definition.RequestChanges(
        customer_id=customer_id,
        definition_id=definition_id,
        version=version,
        stage=data.stage,
        reason_sealed=await seal(request, customer_id, principal.user, data.reason),
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    return await _definition_command(request, command)


class ChangeRequestView(msgspec.Struct, frozen=True, kw_only=True):
    stage: definition.ApprovalStage
    by: str
    at: datetime
    reason: str | None


class VersionView(msgspec.Struct, frozen=True, kw_only=True):
    number: int
    status: str
    content: definition.DefinitionContent
    content_hash: str
    drafted_at: datetime
    drafted_by: str
    stage: definition.ApprovalStage | None
    current_approver: str | None
    approvers: definition.Approvers | None
    sign_offs: tuple[definition.StageSignOff, ...]
    changes_requested: ChangeRequestView | None
    approved_at: datetime | None
    superseded_at: datetime | None


class DefinitionView(msgspec.Struct, frozen=True, kw_only=True):
    """A value definition: every version and where its approval stands."""

    customer_id: str
    definition_id: str
    in_force_version: int | None
    versions: tuple[VersionView, ...]
    version: int
    """The definition's stream version, its ETag (not a version number of its content)."""


@read(
    "/v1/customers/{customer_id:str}/definitions/{definition_id:str}",
    summary="A value definition",
    etag=AGGREGATE_ETAG,
)
async def get_definition(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    definition_id: FromPath[str],
) -> Response[DefinitionView]:
    """The definition as the ledger has it now; a reason for changes is shown opened."""
    del principal
    api = api_of(request)
    tenant = tenant_of(customer_id)
    loaded = await load(api.services.store, DEFINITION, definition_stream(tenant, definition_id))
    state = loaded.state
    if not state.exists:
        raise NotFoundException(
            detail=f"customer {customer_id!r} has no definition {definition_id!r}"
        )
    reasons = await opened(
        api.services.vault,
        tenant,
        (v.changes_requested.reason_sealed for v in state.versions if v.changes_requested),
    )
    view = DefinitionView(
        customer_id=state.customer_id,
        definition_id=state.definition_id,
        in_force_version=state.in_force_version,
        versions=tuple(
            VersionView(
                number=v.number,
                status=str(v.status),
                content=v.content,
                content_hash=v.content_hash,
                drafted_at=v.drafted_at,
                drafted_by=v.drafted_by,
                stage=v.stage,
                current_approver=v.current_approver,
                approvers=v.approvers,
                sign_offs=v.sign_offs,
                changes_requested=(
                    None
                    if v.changes_requested is None
                    else ChangeRequestView(
                        stage=v.changes_requested.stage,
                        by=v.changes_requested.by,
                        at=v.changes_requested.at,
                        reason=reasons.get(v.changes_requested.reason_sealed),
                    )
                ),
                approved_at=v.approved_at,
                superseded_at=v.superseded_at,
            )
            for v in state.versions
        ),
        version=loaded.version,
    )
    return etagged(view, loaded.version)


# --- go-live and billing ------------------------------------------------------------------------


async def _billing_command(
    request: Request[Any, Any, Any], command: golive.Command
) -> Response[Any]:
    outcome = await handle_billing(
        api_of(request).services.store,
        command,
        trace=trace_of(request),
        expected_version=expected_version(request),
    )
    return accepted(outcome)


@command("/v1/customers/{customer_id:str}/billing/go-live", summary="Go live", read_at=BILLING_AT)
async def go_live(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    data: JSONBody[GoLiveBody],
) -> Response[Accepted]:
    """Switch the customer to value-based billing from `billing_starts_at` (now or later),
    once every pre-flight check passes; a refusal (422 `preflight-failed`) lists them all."""
    command = golive.GoLive(
        customer_id=customer_id,
        billing_starts_at=data.billing_starts_at,
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    return await _billing_command(request, command)


@command(
    "/v1/customers/{customer_id:str}/billing/pause", summary="Pause billing", read_at=BILLING_AT
)
async def pause_billing(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    data: JSONBody[ReasonBody],
) -> Response[Accepted]:
    """Stop billing from now until it is resumed; the reason is sealed."""
    command = golive.PauseBilling(
        customer_id=customer_id,
        reason_sealed=await seal(request, customer_id, principal.user, data.reason),
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    return await _billing_command(request, command)


@command(
    "/v1/customers/{customer_id:str}/billing/resume", summary="Resume billing", read_at=BILLING_AT
)
async def resume_billing(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    data: JSONBody[ReasonBody],
) -> Response[Accepted]:
    """Bill again from now, ending the pause; the reason is sealed."""
    command = golive.ResumeBilling(
        customer_id=customer_id,
        reason_sealed=await seal(request, customer_id, principal.user, data.reason),
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    return await _billing_command(request, command)


@command(
    "/v1/customers/{customer_id:str}/billing/accuracy-threshold",
    summary="Set the accuracy threshold",
    read_at=BILLING_AT,
)
async def set_accuracy_threshold(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    data: JSONBody[ThresholdBody],
) -> Response[Accepted]:
    """Set the measured accuracy the customer needs to go live (85 to 100)."""
    command = golive.SetAccuracyThreshold(
        customer_id=customer_id,
        threshold=data.threshold,
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    return await _billing_command(request, command)


class PauseView(msgspec.Struct, frozen=True, kw_only=True):
    paused_at: datetime
    paused_by: str
    reason: str | None
    resumed_at: datetime | None
    resumed_by: str | None
    resume_reason: str | None


class BillingView(msgspec.Struct, frozen=True, kw_only=True):
    """The billing switch: the go-live receipt, every pause, the accuracy threshold."""

    customer_id: str
    live: bool
    billing_starts_at: datetime | None
    paused_since: datetime | None
    accuracy_threshold: str
    receipt: golive.WentLive | None
    pauses: tuple[PauseView, ...]
    version: int
    """The billing stream's version, its ETag."""


@read("/v1/customers/{customer_id:str}/billing", summary="The billing switch", etag=AGGREGATE_ETAG)
async def get_billing(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
) -> Response[BillingView]:
    """Whether the customer is live and billed, as the ledger has it now; pause reasons are
    shown opened."""
    del principal
    await registered_account(request, customer_id)
    api = api_of(request)
    tenant = tenant_of(customer_id)
    loaded = await load(api.services.store, BILLING, billing_stream(tenant))
    state = loaded.state
    reasons = await opened(
        api.services.vault,
        tenant,
        [
            text
            for pause in state.pauses
            for text in (pause.reason_sealed, pause.resume_reason_sealed)
        ],
    )
    view = BillingView(
        customer_id=customer_id,
        live=state.live,
        billing_starts_at=state.billing_starts_at,
        paused_since=state.paused_since,
        accuracy_threshold=state.accuracy_threshold,
        receipt=state.receipt,
        pauses=tuple(
            PauseView(
                paused_at=pause.paused_at,
                paused_by=pause.paused_by,
                reason=reasons.get(pause.reason_sealed),
                resumed_at=pause.resumed_at,
                resumed_by=pause.resumed_by or None,
                resume_reason=reasons.get(pause.resume_reason_sealed),
            )
            for pause in state.pauses
        ),
        version=loaded.version,
    )
    return etagged(view, loaded.version)


# --- alerts -------------------------------------------------------------------------------------


async def _alert_command(request: Request[Any, Any, Any], command: alerts.Command) -> Response[Any]:
    outcome = await handle_alert(
        api_of(request).services.store,
        command,
        trace=trace_of(request),
        expected_version=expected_version(request),
    )
    return accepted(outcome, alert_id=command.alert_id)


# Creating: the alert's id must be new, and an If-Match on the stream every alert of the
# customer shares would only make independent raisers (monitors, disputes) refuse one another.
@command("/v1/customers/{customer_id:str}/alerts", summary="Raise an alert", creates=True)
async def raise_alert(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    data: JSONBody[AlertBody],
) -> Response[Accepted]:
    """Report an anomaly; the answer names the alert's id. Raising the same alert again under
    the same id is refused as a duplicate (422 `duplicate-alert`), which a retry may treat as
    done."""
    command = alerts.RaiseAlert(
        customer_id=customer_id,
        alert_id=data.alert_id or new_id("alert"),
        kind=data.kind,
        severity=data.severity,
        summary=data.summary,
        evidence=data.evidence,
        source_reference=data.source_reference,
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    return await _alert_command(request, command)


@command(
    "/v1/customers/{customer_id:str}/alerts/{alert_id:str}/acknowledge",
    summary="Acknowledge an alert",
    read_at=ALERT_AT,
)
async def acknowledge_alert(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    alert_id: FromPath[str],
) -> Response[Accepted]:
    """Say that someone is dealing with the open alert (a critical one still blocks going
    live until it is resolved)."""
    command = alerts.AcknowledgeAlert(
        customer_id=customer_id,
        alert_id=alert_id,
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    return await _alert_command(request, command)


@command(
    "/v1/customers/{customer_id:str}/alerts/{alert_id:str}/resolve",
    summary="Resolve an alert",
    read_at=ALERT_AT,
)
async def resolve_alert(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    alert_id: FromPath[str],
    data: JSONBody[NoteBody],
) -> Response[Accepted]:
    """Close the alert with a note on how it was dealt with (sealed)."""
    command = alerts.ResolveAlert(
        customer_id=customer_id,
        alert_id=alert_id,
        note_sealed=await seal(request, customer_id, principal.user, data.note),
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    return await _alert_command(request, command)


class AlertView(msgspec.Struct, frozen=True, kw_only=True):
    """One of the customer's alerts, its resolution note opened."""

    customer_id: str
    alert_id: str
    kind: str
    severity: alerts.AlertSeverity
    summary: str
    evidence: dict[str, str]
    source_reference: str | None
    status: alerts.AlertStatus
    raised_at: datetime
    raised_by: str
    raised_by_role: Role
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolution_note: str | None
    version: int
    """The version of the customer's alerts, its ETag: all of them are one stream, so a
    command on any alert checks If-Match against it."""


@read(
    "/v1/customers/{customer_id:str}/alerts/{alert_id:str}",
    summary="An alert",
    etag=AGGREGATE_ETAG,
)
async def get_alert(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    alert_id: FromPath[str],
) -> Response[AlertView]:
    """The alert as the ledger has it now; its resolution note is shown opened."""
    del principal
    api = api_of(request)
    tenant = tenant_of(customer_id)
    loaded = await load(api.services.store, ALERTS, alerts_stream(tenant))
    alert = loaded.state.alerts.get(alert_id)
    if alert is None:
        raise NotFoundException(detail=f"customer {customer_id!r} has no alert {alert_id!r}")
    notes = await opened(api.services.vault, tenant, [alert.resolution_note_sealed])
    view = AlertView(
        customer_id=customer_id,
        alert_id=alert.alert_id,
        kind=alert.kind,
        severity=alert.severity,
        summary=alert.summary,
        evidence=dict(alert.evidence),
        source_reference=alert.source_reference,
        status=alert.status,
        raised_at=alert.raised_at,
        raised_by=alert.raised_by,
        raised_by_role=alert.raised_by_role,
        acknowledged_at=alert.acknowledged_at,
        acknowledged_by=alert.acknowledged_by or None,
        resolved_at=alert.resolved_at,
        resolved_by=alert.resolved_by or None,
        resolution_note=notes.get(alert.resolution_note_sealed),
        version=loaded.version,
    )
    return etagged(view, loaded.version)


# --- calculations and the customer's verdicts on them -------------------------------------------


def _inputs(inputs: tuple[InputBody, ...]) -> tuple[calculation.MetricInput, ...]:
    return tuple(
        calculation.MetricInput(
            metric=item.metric, value=item.value, source=item.source, fingerprint=item.fingerprint
        )
        for item in inputs
    )


async def _calculation_command(
    request: Request[Any, Any, Any], command: calculation.Command
) -> Response[Any]:
    outcome = await handle_calculation(
        api_of(request).services.store,
        command,
        trace=trace_of(request),
        expected_version=expected_version(request),
    )
    return accepted(outcome, calculation_id=command.calculation_id)


@command(
    "/v1/customers/{customer_id:str}/definitions/{definition_id:str}/calculations",
    summary="Calculate a period's value",
    creates=True,
)
async def calculate_value(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    definition_id: FromPath[str],
    data: JSONBody[CalculationBody],
) -> Response[Accepted]:
    """Calculate the definition's value for a period that has none yet, with the version in
    force; the answer names the new calculation's id. If-Match is the period's version."""
    command = calculation.CalculateValue(
        customer_id=customer_id,
        definition_id=definition_id,
        period_start=data.period_start,
        period_end=data.period_end,
        calculation_id=new_id("calc"),
        inputs=_inputs(data.inputs),
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    return await _calculation_command(request, command)


@command(
    "/v1/customers/{customer_id:str}/definitions/{definition_id:str}/calculations/recalculate",
    summary="Recalculate a period's value",
    read_at=PERIOD_AT,
)
async def recalculate_value(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    definition_id: FromPath[str],
    data: JSONBody[RecalculationBody],
) -> Response[Accepted]:
    """Calculate the period again from new inputs, superseding its current calculation; the
    reason is sealed and kept on the receipt."""
    command = calculation.RecalculateValue(
        customer_id=customer_id,
        definition_id=definition_id,
        period_start=data.period_start,
        period_end=data.period_end,
        calculation_id=new_id("calc"),
        inputs=_inputs(data.inputs),
        reason_sealed=await seal(request, customer_id, principal.user, data.reason),
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    return await _calculation_command(request, command)


PeriodStart: TypeAlias = Annotated[
    str,
    PathParameter(
        description="Where the period starts, as the commands on it give it: RFC 3339 with a "
        "time zone offset (`2026-03-01T00:00:00Z`)."
    ),
]
PERIOD_START: Final = Annotated[datetime, msgspec.Meta(tz=True)]


class CalculationView(msgspec.Struct, frozen=True, kw_only=True):
    """One calculation receipt of the period, as recorded; a recalculation's reason opened."""

    calculation_id: str
    supersedes: str | None
    reason: str | None
    definition_version: int
    definition_content_hash: str
    formula: str
    inputs: tuple[calculation.MetricReading, ...]
    baselines: tuple[calculation.BaselineUsed, ...]
    result: str
    billing: calculation.Billing
    calculated_at: datetime
    calculated_by: str
    calculated_by_role: Role


class PeriodCalculationsView(msgspec.Struct, frozen=True, kw_only=True):
    """A period's value: its current calculation and those it superseded, oldest first."""

    customer_id: str
    definition_id: str
    period_start: datetime
    period_end: datetime
    current: CalculationView
    superseded: tuple[CalculationView, ...]
    version: int
    """The period's version, its ETag: send it as If-Match to recalculate."""


def _calculation_view(receipt: calculation.Receipt, reasons: dict[str, str]) -> CalculationView:
    supersedes, reason = None, None
    if isinstance(receipt, calculation.ValueRecalculated):
        supersedes, reason = receipt.supersedes, reasons.get(receipt.reason_sealed)
    return CalculationView(
        calculation_id=receipt.calculation_id,
        supersedes=supersedes,
        reason=reason,
        definition_version=receipt.definition_version,
        definition_content_hash=receipt.definition_content_hash,
        formula=receipt.formula,
        inputs=receipt.inputs,
        baselines=receipt.baselines,
        result=receipt.result,
        billing=receipt.billing,
        calculated_at=receipt.calculated_at,
        calculated_by=receipt.calculated_by,
        calculated_by_role=receipt.calculated_by_role,
    )


@read(
    "/v1/customers/{customer_id:str}/definitions/{definition_id:str}/periods/{period_start:str}",
    summary="A period's calculations",
    etag=AGGREGATE_ETAG,
)
async def get_period_calculations(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    definition_id: FromPath[str],
    period_start: PeriodStart,
) -> Response[PeriodCalculationsView]:
    """The definition's calculations of the period starting at `period_start`, as the ledger
    has them now: the current one and those it superseded; reasons are shown opened."""
    del principal
    # Parsed here, after the guard, so that a caller refused by it never learns more.
    try:
        start: datetime = msgspec.convert(period_start, PERIOD_START)
    except msgspec.ValidationError as error:
        raise invalid_parameter("period_start", str(error)) from None
    api = api_of(request)
    tenant = tenant_of(customer_id)
    stream = calculation_stream(tenant, definition_id, start)
    loaded = await load(api.services.store, CALCULATION, stream)
    current = loaded.state.current
    if current is None:
        raise NotFoundException(
            detail=f"customer {customer_id!r} has no calculation of definition "
            f"{definition_id!r} for the period starting at {start.isoformat()}"
        )
    reasons = await opened(
        api.services.vault,
        tenant,
        (
            receipt.reason_sealed
            for receipt in loaded.state.history
            if isinstance(receipt, calculation.ValueRecalculated)
        ),
    )
    view = PeriodCalculationsView(
        customer_id=customer_id,
        definition_id=current.definition_id,
        period_start=current.period_start,
        period_end=current.period_end,
        current=_calculation_view(current, reasons),
        superseded=tuple(
            _calculation_view(receipt, reasons) for receipt in loaded.state.superseded
        ),
        version=loaded.version,
    )
    return etagged(view, loaded.version)


@command(
    "/v1/customers/{customer_id:str}/calculations/{calculation_id:str}/confirm",
    summary="Confirm a calculation",
    read_at=FEEDBACK_AT,
)
async def confirm_calculation(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    calculation_id: FromPath[str],
    data: JSONBody[JudgedPeriodBody],
) -> Response[Accepted]:
    """Say the calculation is right; the body says where it is (its definition and period
    start). If-Match is the customer's feedback version."""
    command = accuracy.ConfirmCalculation(
        customer_id=customer_id,
        calculation_id=calculation_id,
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    outcome = await handle_feedback(
        api_of(request).services.store,
        command,
        definition_id=data.definition_id,
        period_start=data.period_start,
        trace=trace_of(request),
        expected_version=expected_version(request),
    )
    return accepted(outcome)


@command(
    "/v1/customers/{customer_id:str}/calculations/{calculation_id:str}/dispute",
    summary="Dispute a calculation",
    read_at=FEEDBACK_AT,
)
async def dispute_calculation(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    calculation_id: FromPath[str],
    data: JSONBody[DisputeBody],
) -> Response[Accepted]:
    """Say the calculation is wrong, with either the expected value of every metric or the
    expected result, and why (sealed). A dispute the rules call for raises an alert."""
    command = accuracy.DisputeCalculation(
        customer_id=customer_id,
        calculation_id=calculation_id,
        expected_values=tuple(
            accuracy.ExpectedValue(metric=item.metric, expected=item.expected)
            for item in data.expected_values
        ),
        expected_result=data.expected_result,
        reason_sealed=await seal(request, customer_id, principal.user, data.reason),
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    outcome = await handle_feedback(
        api_of(request).services.store,
        command,
        definition_id=data.definition_id,
        period_start=data.period_start,
        trace=trace_of(request),
        expected_version=expected_version(request),
    )
    return accepted(outcome)


class VerdictView(msgspec.Struct, frozen=True, kw_only=True):
    """The customer's verdict on one calculation, as recorded; a dispute's reason opened."""

    calculation_id: str
    verdict: Literal["confirmed", "disputed"]
    definition_id: str
    period_start: datetime
    period_end: datetime
    result: str
    comparisons: tuple[accuracy.MetricComparison, ...]
    expected_result: str | None
    reason: str | None
    score: str
    setup_accuracy: str
    measured_accuracy: str
    """The customer's measured accuracy right after this verdict."""
    alert_severity: accuracy.AlertSeverity | None
    given_at: datetime
    given_by: str
    given_by_role: Role


class FeedbackView(msgspec.Struct, frozen=True, kw_only=True):
    """The customer's verdicts on calculations, in the order they were given."""

    customer_id: str
    verdicts: tuple[VerdictView, ...]
    version: int
    """The feedback's version, its ETag: send it as If-Match to confirm or dispute."""


def _verdict_view(verdict: accuracy.Verdict, reasons: dict[str, str]) -> VerdictView:
    given: dict[str, Any]
    match verdict:
        case accuracy.CalculationConfirmed():
            given = {
                "verdict": "confirmed",
                "comparisons": (),
                "expected_result": None,
                "reason": None,
                "alert_severity": None,
                "given_by": verdict.confirmed_by,
                "given_by_role": verdict.confirmed_by_role,
            }
        case accuracy.CalculationDisputed():
            given = {
                "verdict": "disputed",
                "comparisons": verdict.comparisons,
                "expected_result": verdict.expected_result,
                "reason": reasons.get(verdict.reason_sealed),
                "alert_severity": verdict.alert_severity,
                "given_by": verdict.disputed_by,
                "given_by_role": verdict.disputed_by_role,
            }
    return VerdictView(
        calculation_id=verdict.calculation_id,
        definition_id=verdict.definition_id,
        period_start=verdict.period_start,
        period_end=verdict.period_end,
        result=verdict.result,
        score=verdict.score,
        setup_accuracy=verdict.setup_accuracy,
        measured_accuracy=verdict.measured_accuracy,
        given_at=accuracy.given_at(verdict),
        **given,
    )


@read(
    "/v1/customers/{customer_id:str}/feedback",
    summary="The customer's feedback on calculations",
    etag=AGGREGATE_ETAG,
)
async def get_feedback(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
) -> Response[FeedbackView]:
    """Every confirmation and dispute of a calculation, as the ledger has them now; a
    dispute's reason is shown opened. A customer who has given none is at version 0."""
    del principal
    await registered_account(request, customer_id)
    api = api_of(request)
    tenant = tenant_of(customer_id)
    loaded = await load(api.services.store, ACCURACY, accuracy_stream(tenant))
    verdicts = tuple(loaded.state.verdicts.values())
    reasons = await opened(
        api.services.vault,
        tenant,
        (v.reason_sealed for v in verdicts if isinstance(v, accuracy.CalculationDisputed)),
    )
    view = FeedbackView(
        customer_id=customer_id,
        verdicts=tuple(_verdict_view(verdict, reasons) for verdict in verdicts),
        version=loaded.version,
    )
    return etagged(view, loaded.version)


# --- support tickets ----------------------------------------------------------------------------


async def _ticket_command(
    request: Request[Any, Any, Any],
    customer_id: str,
    command: tickets.Command,
    **extra: Any,
) -> Response[Any]:
    # The command carries the caller; vendor staff are read from the vendor_staff table.
    services = api_of(request).services
    outcome = await handle_ticket(
        services.store,
        customer_id,
        command,
        vendor_staff=await current_vendor_staff(services.pool),
        trace=trace_of(request),
        expected_version=expected_version(request),
    )
    return accepted(outcome, ticket_id=command.ticket_id, **extra)


@command("/v1/customers/{customer_id:str}/tickets", summary="Open a support ticket", creates=True)
async def open_ticket(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    data: JSONBody[TicketBody],
) -> Response[Accepted]:
    """Open a ticket (vendor staff may, on the customer's behalf); subject and text are
    sealed, and the answer names the ticket's id. A suspended customer can still open one.
    """
    command = tickets.OpenTicket(
        ticket_id=new_id("t"),
        customer_id=customer_id,
        subject_sealed=await seal(request, customer_id, principal.user, data.subject),
        body_sealed=await seal(request, customer_id, principal.user, data.body),
        priority=data.priority,
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    return await _ticket_command(request, customer_id, command)


@command(
    "/v1/customers/{customer_id:str}/tickets/{ticket_id:str}/messages",
    summary="Post a message",
    read_at=TICKET_AT,
)
async def post_ticket_message(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    ticket_id: FromPath[str],
    data: JSONBody[MessageBody],
) -> Response[Accepted]:
    """Add a message to the conversation (sealed); a customer's message on a ticket waiting
    for them puts it back in progress. The answer names the message's id.
    """
    message_id = new_id("m")
    command = tickets.PostTicketMessage(
        ticket_id=ticket_id,
        message_id=message_id,
        body_sealed=await seal(request, customer_id, principal.user, data.body),
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    return await _ticket_command(request, customer_id, command, message_id=message_id)


@command(
    "/v1/customers/{customer_id:str}/tickets/{ticket_id:str}/assign",
    summary="Assign a ticket",
    read_at=TICKET_AT,
)
async def assign_ticket(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    ticket_id: FromPath[str],
    data: JSONBody[AssigneeBody],
) -> Response[Accepted]:
    """Give the ticket to a current vendor staff member (an open ticket goes in progress)."""
    command = tickets.AssignTicket(
        ticket_id=ticket_id,
        assignee=data.assignee,
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    return await _ticket_command(request, customer_id, command)


@command(
    "/v1/customers/{customer_id:str}/tickets/{ticket_id:str}/start-work",
    summary="Start work on a ticket",
    read_at=TICKET_AT,
)
async def start_work_on_ticket(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    ticket_id: FromPath[str],
) -> Response[Accepted]:
    """Move an open ticket, or one waiting on the customer, to in progress."""
    command = tickets.StartWorkOnTicket(
        ticket_id=ticket_id, at=now(), by=principal.user, by_role=principal.role
    )
    return await _ticket_command(request, customer_id, command)


@command(
    "/v1/customers/{customer_id:str}/tickets/{ticket_id:str}/await-reply",
    summary="Wait for the customer's reply",
    read_at=TICKET_AT,
)
async def await_customer_reply(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    ticket_id: FromPath[str],
) -> Response[Accepted]:
    """Mark a ticket in progress as waiting on the customer."""
    command = tickets.AwaitCustomerReply(
        ticket_id=ticket_id, at=now(), by=principal.user, by_role=principal.role
    )
    return await _ticket_command(request, customer_id, command)


@command(
    "/v1/customers/{customer_id:str}/tickets/{ticket_id:str}/resolve",
    summary="Resolve a ticket",
    read_at=TICKET_AT,
)
async def resolve_ticket(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    ticket_id: FromPath[str],
    data: JSONBody[ResolutionBody],
) -> Response[Accepted]:
    """Mark the ticket resolved, saying how (sealed)."""
    command = tickets.ResolveTicket(
        ticket_id=ticket_id,
        resolution_sealed=await seal(request, customer_id, principal.user, data.resolution),
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    return await _ticket_command(request, customer_id, command)


@command(
    "/v1/customers/{customer_id:str}/tickets/{ticket_id:str}/close",
    summary="Close a ticket",
    read_at=TICKET_AT,
)
async def close_ticket(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    ticket_id: FromPath[str],
) -> Response[Accepted]:
    """Close a resolved ticket: the customer confirms the resolution, or vendor staff close
    it.
    """
    command = tickets.CloseTicket(
        ticket_id=ticket_id, at=now(), by=principal.user, by_role=principal.role
    )
    return await _ticket_command(request, customer_id, command)


@command(
    "/v1/customers/{customer_id:str}/tickets/{ticket_id:str}/reopen",
    summary="Reopen a ticket",
    read_at=TICKET_AT,
)
async def reopen_ticket(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    ticket_id: FromPath[str],
    data: JSONBody[ReasonBody],
) -> Response[Accepted]:
    """Open a resolved or closed ticket again, saying why (sealed)."""
    command = tickets.ReopenTicket(
        ticket_id=ticket_id,
        reason_sealed=await seal(request, customer_id, principal.user, data.reason),
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    return await _ticket_command(request, customer_id, command)


class MessageView(msgspec.Struct, frozen=True, kw_only=True):
    message_id: str
    side: tickets.TicketSide
    author: str
    author_role: Role
    posted_at: datetime
    body: str | None


class TicketView(msgspec.Struct, frozen=True, kw_only=True):
    """A support ticket with its conversation, texts opened."""

    customer_id: str
    ticket_id: str
    status: tickets.TicketStatus
    priority: tickets.TicketPriority
    subject: str | None
    body: str | None
    opened_at: datetime | None
    opened_by: str
    opened_by_role: Role | None
    opened_by_side: tickets.TicketSide | None
    assignee: str | None
    resolution: str | None
    messages: tuple[MessageView, ...]
    status_changes: tuple[tickets.StatusChange, ...]
    version: int
    """The ticket's version, its ETag."""


@read(
    "/v1/customers/{customer_id:str}/tickets/{ticket_id:str}",
    summary="A support ticket",
    etag=AGGREGATE_ETAG,
)
async def get_ticket(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    ticket_id: FromPath[str],
) -> Response[TicketView]:
    """The ticket and its conversation as the ledger has them now; texts are shown opened."""
    del principal
    api = api_of(request)
    tenant = tenant_of(customer_id)
    records = await api.services.store.read_stream(ticket_stream(tenant, ticket_id))
    state = TICKET.fold(records)
    if state.status is None or state.customer_id != customer_id:
        raise NotFoundException(detail=f"customer {customer_id!r} has no ticket {ticket_id!r}")
    bodies = {
        event.message_id: event.body_sealed
        for event in (TICKET.event_of(record) for record in records)
        if isinstance(event, tickets.TicketMessagePosted)
    }
    texts = await opened(
        api.services.vault,
        tenant,
        [state.subject_sealed, state.body_sealed, state.resolution_sealed, *bodies.values()],
    )
    view = TicketView(
        customer_id=state.customer_id,
        ticket_id=state.ticket_id,
        status=state.status,
        priority=state.priority,
        subject=texts.get(state.subject_sealed),
        body=texts.get(state.body_sealed),
        opened_at=state.opened_at,
        opened_by=state.opened_by,
        opened_by_role=state.opened_by_role,
        opened_by_side=state.opened_by_side,
        assignee=state.assignee,
        resolution=None if state.resolution_sealed is None else texts.get(state.resolution_sealed),
        messages=tuple(
            MessageView(
                message_id=message.message_id,
                side=message.side,
                author=message.author,
                author_role=message.author_role,
                posted_at=message.posted_at,
                body=texts.get(bodies.get(message.message_id, "")),
            )
            for message in state.messages.values()
        ),
        status_changes=state.status_changes,
        version=records[-1].version,
    )
    return etagged(view, records[-1].version)


ROUTES: Final[list[Any]] = [
    change_user_role,
    revoke_user_access,
    change_billing_contact,
    issue_api_key,
    revoke_api_key,
    suspend_customer,
    reactivate_customer,
    complete_api_integration,
    connect_data_source,
    map_metrics,
    establish_baseline,
    verify_accuracy,
    get_setup,
    draft_definition,
    revise_definition,
    submit_for_approval,
    approve_stage,
    request_changes,
    get_definition,
    go_live,
    pause_billing,
    resume_billing,
    set_accuracy_threshold,
    get_billing,
    raise_alert,
    acknowledge_alert,
    resolve_alert,
    get_alert,
    calculate_value,
    recalculate_value,
    get_period_calculations,
    confirm_calculation,
    dispute_calculation,
    get_feedback,
    open_ticket,
    post_ticket_message,
    assign_ticket,
    start_work_on_ticket,
    await_customer_reply,
    resolve_ticket,
    close_ticket,
    reopen_ticket,
    get_ticket,
]
