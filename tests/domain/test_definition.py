"""Value definitions: each rule as given events, a command, then events or a refusal.

Refusals are pinned with their whole message, since people read them. The content hash is
checked against a fixed test vector (the one docs quote) and against an independent RFC 8785
implementation. Hypothesis drives random command sequences through a state machine: nothing
but a DefinitionError escapes, deciding and replaying are deterministic, every event round-trips
through JSON, and the invariants of versions and approvals hold after every step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
import rfc8785
from hypothesis import event as hypothesis_event
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from domain import DomainError
from domain.definition import (
    COMMAND_DECODER,
    EVENT_DECODER,
    MAX_REASON_LENGTH,
    MAX_REASON_SEALED_LENGTH,
    STAGES,
    ApprovalStage,
    ApprovalVoided,
    Approvers,
    ApproveStage,
    ChangeRequest,
    ChangesRequested,
    Command,
    CurrencyMismatchError,
    DefinitionAlreadyExistsError,
    DefinitionApproved,
    DefinitionContent,
    DefinitionContext,
    DefinitionDrafted,
    DefinitionError,
    DefinitionMismatchError,
    DefinitionNotFoundError,
    DefinitionRevised,
    DefinitionState,
    DefinitionSubmitted,
    DraftDefinition,
    Event,
    InvalidApproverError,
    InvalidDefinitionFieldError,
    InvalidFormulaError,
    InvalidPricingTermsError,
    MetricDefinition,
    MetricInput,
    NotAssignedApproverError,
    NotAuthorizedError,
    PricingChangeNotAllowedError,
    PricingInput,
    PricingTerms,
    RequestChanges,
    ReviseDefinition,
    Role,
    StageApproved,
    StageNotCurrentError,
    StageSignOff,
    StaleVersionError,
    SubmitForApproval,
    UnknownMetricError,
    UnknownVersionError,
    VersionNotDraftError,
    VersionStatus,
    content_hash,
    decide,
    evolve,
    initial_state,
)
from eventstore.canonical import canonical_json

replace = msgspec.structs.replace

CUSTOMER = "cust-1"
DEFINITION = "vd-1"
STAFF = "staff-1"
AT = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
LATER = AT + timedelta(hours=1)

# alice administers the customer, erin is the executive; fiona and frank are FINANCE, tom and
# tina TECHNICAL.
USERS: dict[str, Role] = {
    "alice": Role.CUSTOMER_ADMIN,
    "erin": Role.CUSTOMER_ADMIN,
    "fiona": Role.FINANCE,
    "frank": Role.FINANCE,
    "tom": Role.TECHNICAL,
    "tina": Role.TECHNICAL,
}
CONTEXT = DefinitionContext(
    customer_id=CUSTOMER,
    currency="EUR",
    users=USERS,
    metrics=frozenset({"revenue", "seats", "churn"}),
    baselines=frozenset({"revenue", "seats"}),
)

# --- the content of version 1, and the hash the docs quote ------------------------------------

CONTENT = DefinitionContent(
    name="Revenue uplift",
    metrics=(
        MetricDefinition(name="revenue", unit="EUR"),
        MetricDefinition(name="seats", unit="seats"),
    ),
    formula="max(metric.revenue - baseline.revenue, 0)",
    pricing=PricingTerms(share_percent="12.5", cap_minor_units=2500000, currency="EUR"),
)
CONTENT_JSON = (
    b'{"formula":"max(metric.revenue - baseline.revenue, 0)","metrics":[{"name":"revenue",'
    b'"unit":"EUR"},{"name":"seats","unit":"seats"}],"name":"Revenue uplift","pricing":'
    b'{"cap_minor_units":2500000,"currency":"EUR","share_percent":"12.5"}}'
)
CONTENT_HASH = "4b6f14a7782120bf829bede42cbc110e53aff5584d1713b402c3c971c9f57bc4"

# Version 2 changes the formula only, version 3 the pricing too.
CONTENT_2 = replace(CONTENT, formula="max(metric.revenue - baseline.revenue, 0) * 0.9")
CONTENT_3 = replace(CONTENT_2, pricing=replace(CONTENT.pricing, share_percent="15"))

# --- commands -----------------------------------------------------------------------------------

PRICING = PricingInput(share_percent="12.50", cap_minor_units=2500000, currency="EUR")
DRAFT = DraftDefinition(
    customer_id=CUSTOMER,
    definition_id=DEFINITION,
    name="Revenue uplift",
    # Entered out of order: the content lists metrics by name.
    metrics=(MetricInput(name="seats", unit="seats"), MetricInput(name="revenue", unit="EUR")),
    formula="max(metric.revenue - baseline.revenue, 0)",
    pricing=PRICING,
    at=AT,
    by="tom",
    by_role=Role.TECHNICAL,
)
REVISE = ReviseDefinition(
    customer_id=CUSTOMER,
    definition_id=DEFINITION,
    revises_version=1,
    name="Revenue uplift",
    metrics=DRAFT.metrics,
    formula=CONTENT_2.formula,
    pricing=PRICING,
    at=LATER,
    by="tom",
    by_role=Role.TECHNICAL,
)
SUBMIT = SubmitForApproval(
    customer_id=CUSTOMER,
    definition_id=DEFINITION,
    version=1,
    finance_approver="fiona",
    technical_approver="tom",
    executive="erin",
    at=AT,
    by="alice",
    by_role=Role.CUSTOMER_ADMIN,
)
APPROVE_FINANCE = ApproveStage(
    customer_id=CUSTOMER,
    definition_id=DEFINITION,
    version=1,
    stage=ApprovalStage.FINANCE_REVIEW,
    at=AT,
    by="fiona",
    by_role=Role.FINANCE,
)
APPROVE_TECHNICAL = replace(
    APPROVE_FINANCE, stage=ApprovalStage.TECHNICAL_REVIEW, by="tom", by_role=Role.TECHNICAL
)
SIGN_OFF = replace(
    APPROVE_FINANCE,
    stage=ApprovalStage.FINAL_SIGN_OFF,
    at=LATER,
    by="erin",
    by_role=Role.CUSTOMER_ADMIN,
)
REQUEST_CHANGES = RequestChanges(
    customer_id=CUSTOMER,
    definition_id=DEFINITION,
    version=1,
    stage=ApprovalStage.FINANCE_REVIEW,
    reason_sealed="pii:v1:fiona-key:c2VhbGVkIHJlYXNvbg",
    at=LATER,
    by="fiona",
    by_role=Role.FINANCE,
)

# --- the events they record -----------------------------------------------------------------------

DRAFTED = DefinitionDrafted(
    customer_id=CUSTOMER,
    definition_id=DEFINITION,
    version=1,
    content=CONTENT,
    content_hash=CONTENT_HASH,
    drafted_at=AT,
    drafted_by="tom",
    drafted_by_role=Role.TECHNICAL,
)
SUBMITTED = DefinitionSubmitted(
    customer_id=CUSTOMER,
    definition_id=DEFINITION,
    version=1,
    finance_approver="fiona",
    technical_approver="tom",
    executive="erin",
    submitted_at=AT,
    submitted_by="alice",
    submitted_by_role=Role.CUSTOMER_ADMIN,
)
FINANCE_APPROVED = StageApproved(
    customer_id=CUSTOMER,
    definition_id=DEFINITION,
    version=1,
    stage=ApprovalStage.FINANCE_REVIEW,
    approved_at=AT,
    approved_by="fiona",
    approved_by_role=Role.FINANCE,
)
TECHNICAL_APPROVED = replace(
    FINANCE_APPROVED,
    stage=ApprovalStage.TECHNICAL_REVIEW,
    approved_by="tom",
    approved_by_role=Role.TECHNICAL,
)
APPROVED = DefinitionApproved(
    customer_id=CUSTOMER,
    definition_id=DEFINITION,
    version=1,
    content_hash=CONTENT_HASH,
    finance_approved_by="fiona",
    finance_approved_at=AT,
    technical_approved_by="tom",
    technical_approved_at=AT,
    approved_at=LATER,
    approved_by="erin",
    approved_by_role=Role.CUSTOMER_ADMIN,
)
CHANGES_REQUESTED = ChangesRequested(
    customer_id=CUSTOMER,
    definition_id=DEFINITION,
    version=1,
    stage=ApprovalStage.FINANCE_REVIEW,
    reason_sealed=REQUEST_CHANGES.reason_sealed,
    requested_at=LATER,
    requested_by="fiona",
    requested_by_role=Role.FINANCE,
)
REVISED = DefinitionRevised(
    customer_id=CUSTOMER,
    definition_id=DEFINITION,
    version=2,
    previous_version=1,
    content=CONTENT_2,
    content_hash=content_hash(CONTENT_2),
    revised_at=LATER,
    revised_by="tom",
    revised_by_role=Role.TECHNICAL,
)
VOIDED = ApprovalVoided(
    customer_id=CUSTOMER,
    definition_id=DEFINITION,
    version=1,
    stage=ApprovalStage.TECHNICAL_REVIEW,
    voided_by_version=2,
    reason="the approval of version 1 was voided because version 2 was drafted",
    voided_at=LATER,
    voided_by="tom",
    voided_by_role=Role.TECHNICAL,
)

IN_REVIEW = (DRAFTED, SUBMITTED)
AT_TECHNICAL = (*IN_REVIEW, FINANCE_APPROVED)
AT_SIGN_OFF = (*AT_TECHNICAL, TECHNICAL_APPROVED)
IN_FORCE = (*AT_SIGN_OFF, APPROVED)


def state_after(events: Sequence[Event]) -> DefinitionState:
    state = initial_state
    for event in events:
        state = evolve(state, event)
    return state


def then(
    given: Sequence[Event], when: Command, context: DefinitionContext = CONTEXT
) -> list[Event]:
    return decide(when, state_after(given), context)


def refused(
    given: Sequence[Event],
    when: Command,
    error: type[DefinitionError],
    context: DefinitionContext = CONTEXT,
) -> DefinitionError:
    """The refusal, after checking its exact type."""
    with pytest.raises(error) as raised:
        decide(when, state_after(given), context)
    assert type(raised.value) is error
    assert raised.value.message == str(raised.value)
    return raised.value


def refusal(
    given: Sequence[Event],
    when: Command,
    error: type[DefinitionError],
    context: DefinitionContext = CONTEXT,
) -> str:
    """The message of the refusal, after checking its exact type."""
    return refused(given, when, error, context).message


def with_users(**users: Role | None) -> DefinitionContext:
    """The context with users' roles changed (None: no longer a user)."""
    changed = {**USERS, **users}
    return replace(
        CONTEXT, users={user: role for user, role in changed.items() if role is not None}
    )


# --- the content hash ---------------------------------------------------------------------------


def test_the_content_hash_test_vector() -> None:
    """The vector in the rules doc: canonical JSON of the content, and its SHA-256."""
    assert canonical_json(msgspec.to_builtins(CONTENT)) == CONTENT_JSON
    assert len(CONTENT_JSON) == 233
    assert rfc8785.dumps(msgspec.to_builtins(CONTENT)) == CONTENT_JSON
    assert hashlib.sha256(CONTENT_JSON).hexdigest() == CONTENT_HASH
    assert content_hash(CONTENT) == CONTENT_HASH


def test_an_auditor_checks_the_hash_from_the_stored_event_alone() -> None:
    for event in (DRAFTED, REVISED):
        stored = msgspec.json.decode(msgspec.json.encode(event))
        digest = hashlib.sha256(rfc8785.dumps(stored["content"])).hexdigest()
        assert digest == stored["content_hash"]


def test_the_hash_covers_every_part_of_the_content() -> None:
    variants = [
        replace(CONTENT, name="Revenue uplift 2"),
        replace(CONTENT, metrics=CONTENT.metrics[:1]),
        replace(CONTENT, metrics=(CONTENT.metrics[0], replace(CONTENT.metrics[1], unit="users"))),
        replace(CONTENT, formula="max(metric.revenue - baseline.revenue,0)"),
        replace(CONTENT, pricing=replace(CONTENT.pricing, share_percent="12.6")),
        replace(CONTENT, pricing=replace(CONTENT.pricing, floor_minor_units=0)),
        replace(CONTENT, pricing=replace(CONTENT.pricing, cap_minor_units=None)),
        replace(CONTENT, pricing=replace(CONTENT.pricing, currency="USD")),
    ]
    hashes = {content_hash(variant) for variant in variants} | {CONTENT_HASH}
    assert len(hashes) == len(variants) + 1


# --- stamp and scope ----------------------------------------------------------------------------


def test_a_naive_time_is_refused() -> None:
    command = replace(DRAFT, at=AT.replace(tzinfo=None))
    assert refusal((), command, InvalidDefinitionFieldError) == (
        "at must be a timezone-aware time; stamp commands with the time in UTC"
    )


@pytest.mark.parametrize("field", ["by", "customer_id", "definition_id"])
def test_blank_ids_are_refused(field: str) -> None:
    assert refusal((), replace(DRAFT, **{field: " "}), InvalidDefinitionFieldError) == (
        f"{field} must not be blank; fill it in"
    )


def test_the_context_must_be_the_commands_customer() -> None:
    assert refusal((), DRAFT, DefinitionMismatchError, replace(CONTEXT, customer_id="cust-2")) == (
        "the command is for customer 'cust-1' but its context was built for customer "
        "'cust-2'; build the context from the customer the command names"
    )


@pytest.mark.parametrize(
    ("changes", "context"),
    [
        ({"definition_id": "vd-2"}, CONTEXT),
        ({"customer_id": "cust-2"}, replace(CONTEXT, customer_id="cust-2")),
    ],
)
def test_a_command_for_another_definition_is_refused(
    changes: dict[str, str], context: DefinitionContext
) -> None:
    command = replace(SUBMIT, **changes)
    assert refusal((DRAFTED,), command, DefinitionMismatchError, context) == (
        f"the command is for definition {command.definition_id!r} of customer "
        f"{command.customer_id!r} but was decided against definition 'vd-1' of customer "
        "'cust-1'; load the definition the command names"
    )


def test_a_definition_is_drafted_once() -> None:
    assert refusal((DRAFTED,), DRAFT, DefinitionAlreadyExistsError) == (
        "definition 'vd-1' of customer 'cust-1' already exists (its latest version is 1); "
        "revise it instead of drafting it again, or draft the new definition under a new id"
    )


@pytest.mark.parametrize(
    "command",
    [REVISE, SUBMIT, APPROVE_FINANCE, REQUEST_CHANGES],
    ids=lambda command: type(command).__name__,
)
def test_nothing_but_a_draft_reaches_a_definition_that_does_not_exist(command: Command) -> None:
    assert refusal((), command, DefinitionNotFoundError) == (
        "customer 'cust-1' has no definition 'vd-1'; check the definition id, or draft the "
        "definition first"
    )


# --- drafting -------------------------------------------------------------------------------------


def test_draft_records_version_1_with_its_content_and_hash() -> None:
    assert then((), DRAFT) == [DRAFTED]
    state = state_after([DRAFTED])
    assert (state.customer_id, state.definition_id, state.exists) == (CUSTOMER, DEFINITION, True)
    [version] = state.versions
    assert version == state.latest
    assert (version.number, version.status, version.content, version.content_hash) == (
        1,
        VersionStatus.DRAFT,
        CONTENT,
        CONTENT_HASH,
    )
    assert (version.drafted_at, version.drafted_by, version.stage, version.approvers) == (
        AT,
        "tom",
        None,
        None,
    )
    assert state.in_force is None
    assert state.under_review is None


def test_a_new_definition_has_no_version() -> None:
    assert not initial_state.exists
    assert initial_state.latest is None
    assert initial_state.in_force is None
    assert initial_state.version(1) is None


@pytest.mark.parametrize(
    ("by", "role"),
    [
        (STAFF, Role.ADMIN),
        ("alice", Role.CUSTOMER_ADMIN),
        ("fiona", Role.FINANCE),
        ("tom", Role.TECHNICAL),
    ],
)
def test_every_role_drafts_and_sets_the_first_terms(by: str, role: Role) -> None:
    [event] = then((), replace(DRAFT, by=by, by_role=role))
    assert isinstance(event, DefinitionDrafted)
    assert (event.drafted_by, event.drafted_by_role, event.content) == (by, role, CONTENT)


@pytest.mark.parametrize(
    ("by", "role"),
    [("mallory", Role.FINANCE), ("tom", Role.FINANCE), ("fiona", Role.CUSTOMER_ADMIN)],
)
def test_a_drafter_must_be_a_current_user_holding_the_role(by: str, role: Role) -> None:
    assert refusal((), replace(DRAFT, by=by, by_role=role), NotAuthorizedError) == (
        f"user {by!r} is not a current {role} user of customer 'cust-1', so cannot draft "
        "value definitions; ask one of its CUSTOMER_ADMIN, FINANCE or TECHNICAL users, or an "
        "ADMIN"
    )


def test_a_demoted_user_loses_the_right_at_once() -> None:
    context = with_users(tom=Role.FINANCE)
    assert refusal((), DRAFT, NotAuthorizedError, context).startswith(
        "user 'tom' is not a current TECHNICAL user of customer 'cust-1'"
    )


def metrics(*pairs: tuple[str, str]) -> tuple[MetricInput, ...]:
    return tuple(MetricInput(name=name, unit=unit) for name, unit in pairs)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": ""}, "name must not be blank; fill it in"),
        ({"name": "x" * 201}, "name is 201 characters long; keep it to 200 characters"),
        (
            {"name": "Revenue\nuplift"},
            "name contains line breaks, tabs or other control characters; write it on one line",
        ),
        (
            {"metrics": ()},
            "metrics is empty; list the metrics the formula reads, each with its unit",
        ),
        (
            {"metrics": metrics(*[(f"m{index}", "EUR") for index in range(51)])},
            "metrics lists 51 metrics; a definition can use at most 50, so split the value into "
            "several definitions",
        ),
        (
            {"metrics": metrics(("revenue", "EUR"), ("Seats", "seats"))},
            "metric name 'Seats' is not valid; names are 1 to 63 lowercase letters, digits or "
            "'_', starting with a letter, as in the metrics step",
        ),
        (
            {"metrics": metrics(("revenue", "EUR"), ("revenue", "USD"))},
            "metric 'revenue' is listed more than once; list each metric once, with its unit",
        ),
        (
            {"metrics": metrics(("revenue", " "))},
            "the unit of metric 'revenue' must not be blank; fill it in",
        ),
        (
            {"metrics": metrics(("revenue", "u" * 51))},
            "the unit of metric 'revenue' is 51 characters long; keep it to 50 characters",
        ),
        (
            {"metrics": metrics(("revenue", "EUR\t"))},
            "the unit of metric 'revenue' contains line breaks, tabs or other control "
            "characters; write it on one line",
        ),
    ],
)
def test_malformed_content_is_refused(changes: dict[str, Any], message: str) -> None:
    assert refusal((), replace(DRAFT, **changes), InvalidDefinitionFieldError) == message


def test_fifty_metrics_and_the_longest_name_and_unit_are_accepted() -> None:
    names = [f"m{index}" for index in range(50)]
    command = replace(
        DRAFT,
        name="x" * 200,
        metrics=metrics(*[(name, "u" * 50) for name in names]),
        formula="metric.m0",
    )
    context = replace(CONTEXT, metrics=frozenset(names))
    [event] = then((), command, context)
    assert isinstance(event, DefinitionDrafted)
    assert len(event.content.metrics) == 50


def test_every_metric_must_be_configured() -> None:
    command = replace(DRAFT, metrics=metrics(("revenue", "EUR"), ("visits", "visits")))
    assert refusal((), command, UnknownMetricError) == (
        "metric 'visits' is not configured for customer 'cust-1'; use one of the metrics "
        "mapped in the setup wizard: churn, revenue, seats"
    )


def test_metrics_must_be_mapped_before_a_definition_is_drafted() -> None:
    context = replace(CONTEXT, metrics=frozenset(), baselines=frozenset())
    assert refusal((), DRAFT, UnknownMetricError, context) == (
        "metric 'seats' is not configured for customer 'cust-1'; map the customer's "
        "metrics in the setup wizard's metrics step first"
    )


@pytest.mark.parametrize(
    ("changes", "message", "position"),
    [
        (
            {"formula": "(metric.revenue - baseline.revenue * 0.35"},
            "formula: missing ')' at column 42; close the '(' at column 1",
            42,
        ),
        (
            # churn is configured, but not one of the definition's metrics.
            {"formula": "metric.revenue - metric.churn"},
            "formula: unknown metric 'churn' at column 18; known metrics: revenue, seats",
            18,
        ),
        (
            # churn is one of the definition's metrics, but has no recorded baseline.
            {
                "metrics": metrics(("revenue", "EUR"), ("churn", "customers")),
                "formula": "metric.revenue - baseline.churn",
            },
            "formula: unknown baseline 'churn' at column 18; known baselines: revenue",
            18,
        ),
        (
            # seats has a baseline, but is not one of the definition's metrics.
            {
                "metrics": metrics(("revenue", "EUR")),
                "formula": "metric.revenue - baseline.seats",
            },
            "formula: unknown baseline 'seats' at column 18; known baselines: revenue",
            18,
        ),
        (
            {"formula": "metric.revenue / 0"},
            "formula: division by zero at column 16; the divisor is always 0",
            16,
        ),
    ],
)
def test_the_formula_is_checked_against_the_definitions_metrics(
    changes: dict[str, Any], message: str, position: int
) -> None:
    error = refused((), replace(DRAFT, **changes), InvalidFormulaError)
    assert isinstance(error, InvalidFormulaError)
    assert (error.message, error.position) == (message, position)


def pricing(**changes: Any) -> PricingInput:
    return replace(PRICING, **changes)


@pytest.mark.parametrize(
    ("share", "stored"),
    [
        ("12.50", "12.5"),
        ("100", "100"),
        ("100.0000", "100"),
        ("0.0001", "0.0001"),
        ("35.1234", "35.1234"),
        ("007", "7"),
        ("50.0", "50"),
    ],
)
def test_the_share_is_stored_in_its_shortest_form(share: str, stored: str) -> None:
    [event] = then((), replace(DRAFT, pricing=pricing(share_percent=share)))
    assert isinstance(event, DefinitionDrafted)
    assert event.content.pricing.share_percent == stored


@pytest.mark.parametrize(
    ("share", "message"),
    [
        (
            "",
            "share_percent '' is not a plain decimal number; write the percentage with digits "
            "and at most one '.', as in 35.5 for 35.5 %",
        ),
        (
            "35,5",
            "share_percent '35,5' is not a plain decimal number; write the percentage with "
            "digits and at most one '.', as in 35.5 for 35.5 %",
        ),
        (
            "-5",
            "share_percent '-5' is not a plain decimal number; write the percentage with "
            "digits and at most one '.', as in 35.5 for 35.5 %",
        ),
        (
            "1e2",
            "share_percent '1e2' is not a plain decimal number; write the percentage with "
            "digits and at most one '.', as in 35.5 for 35.5 %",
        ),
        (
            " 35",
            "share_percent ' 35' is not a plain decimal number; write the percentage with "
            "digits and at most one '.', as in 35.5 for 35.5 %",
        ),
        (
            "35.",
            "share_percent '35.' is not a plain decimal number; write the percentage with "
            "digits and at most one '.', as in 35.5 for 35.5 %",
        ),
        (
            "35%",
            "share_percent '35%' is not a plain decimal number; write the percentage with "
            "digits and at most one '.', as in 35.5 for 35.5 %",
        ),
        (
            "\N{ARABIC-INDIC DIGIT THREE}5",
            "share_percent '\N{ARABIC-INDIC DIGIT THREE}5' is not a plain decimal number; "
            "write the percentage with digits and at most one '.', as in 35.5 for 35.5 %",
        ),
        (
            "35.12345",
            "share_percent '35.12345' has 5 decimal places; round it to at most 4, as in 35.1234",
        ),
        (
            "0",
            "share_percent '0' is out of range; the share of value must be more than 0 and at "
            "most 100 (percent)",
        ),
        (
            "0.0000",
            "share_percent '0.0000' is out of range; the share of value must be more than 0 and "
            "at most 100 (percent)",
        ),
        (
            "100.0001",
            "share_percent '100.0001' is out of range; the share of value must be more than 0 "
            "and at most 100 (percent)",
        ),
        (
            "1" * 50,
            f"share_percent {'1' * 40 + '...'!r} is out of range; the share of value must be "
            "more than 0 and at most 100 (percent)",
        ),
    ],
)
def test_a_malformed_share_is_refused(share: str, message: str) -> None:
    command = replace(DRAFT, pricing=pricing(share_percent=share))
    assert refusal((), command, InvalidPricingTermsError) == message


@pytest.mark.parametrize(
    ("floor", "cap"), [(None, None), (0, None), (None, 0), (150000, 150000), (0, 2**53 - 1)]
)
def test_floor_and_cap_are_optional_whole_minor_units(floor: int | None, cap: int | None) -> None:
    [event] = then(
        (), replace(DRAFT, pricing=pricing(floor_minor_units=floor, cap_minor_units=cap))
    )
    assert isinstance(event, DefinitionDrafted)
    terms = event.content.pricing
    assert (terms.floor_minor_units, terms.cap_minor_units) == (floor, cap)
    assert event.content_hash == content_hash(event.content)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"floor_minor_units": -1},
            "floor_minor_units is -1; give a whole number of the currency's minor units (cents "
            "for EUR) from 0 to 9007199254740991, or leave it out",
        ),
        (
            {"cap_minor_units": 2**53},
            "cap_minor_units is 9007199254740992; give a whole number of the currency's minor "
            "units (cents for EUR) from 0 to 9007199254740991, or leave it out",
        ),
        (
            {"floor_minor_units": 100001, "cap_minor_units": 100000},
            "floor_minor_units (100001) is above cap_minor_units (100000); the floor must not "
            "exceed the cap, so lower the floor or raise the cap",
        ),
    ],
)
def test_floor_and_cap_out_of_range_are_refused(changes: dict[str, int], message: str) -> None:
    command = replace(DRAFT, pricing=pricing(**changes))
    assert refusal((), command, InvalidPricingTermsError) == message


@pytest.mark.parametrize("currency", ["USD", "eur", ""])
def test_the_terms_are_in_the_customers_billing_currency(currency: str) -> None:
    command = replace(DRAFT, pricing=pricing(currency=currency))
    assert refusal((), command, CurrencyMismatchError) == (
        f"the pricing currency {currency!r} is not the billing currency of customer 'cust-1', "
        "EUR; state the terms in EUR"
    )


# --- revising -------------------------------------------------------------------------------------


def test_revise_makes_a_new_version_and_replaces_the_draft() -> None:
    assert then((DRAFTED,), REVISE) == [REVISED]
    state = state_after([DRAFTED, REVISED])
    assert state.statuses() == {1: VersionStatus.REPLACED, 2: VersionStatus.DRAFT}
    latest = state.latest
    assert latest is not None
    assert (latest.number, latest.content, latest.content_hash) == (
        2,
        CONTENT_2,
        content_hash(CONTENT_2),
    )
    assert (latest.drafted_at, latest.drafted_by) == (LATER, "tom")


@pytest.mark.parametrize("given", [IN_REVIEW, AT_TECHNICAL, AT_SIGN_OFF])
def test_a_new_version_voids_the_running_approval(given: tuple[Event, ...]) -> None:
    stage = state_after(given).versions[0].stage
    assert stage is not None
    assert then(given, REVISE) == [replace(VOIDED, stage=stage), REVISED]
    state = state_after([*given, replace(VOIDED, stage=stage), REVISED])
    assert state.statuses() == {1: VersionStatus.VOIDED, 2: VersionStatus.DRAFT}
    assert state.versions[0].stage is None
    assert state.under_review is None


def test_a_version_in_force_stays_in_force_while_the_next_is_drafted() -> None:
    assert then(IN_FORCE, REVISE) == [REVISED]
    state = state_after([*IN_FORCE, REVISED])
    assert state.statuses() == {1: VersionStatus.APPROVED, 2: VersionStatus.DRAFT}
    in_force = state.in_force
    assert in_force is not None
    assert (in_force.number, in_force.content, in_force.content_hash, in_force.approved_at) == (
        1,
        CONTENT,
        CONTENT_HASH,
        LATER,
    )


def test_revise_names_the_latest_version() -> None:
    given = (DRAFTED, REVISED)
    assert refusal(given, REVISE, StaleVersionError) == (
        "version 1 is not the latest version of definition 'vd-1': version 2 is; reload the "
        "definition and make your changes to version 2"
    )


@pytest.mark.parametrize("number", [0, 2, -1])
def test_revise_an_unknown_version(number: int) -> None:
    assert refusal((DRAFTED,), replace(REVISE, revises_version=number), UnknownVersionError) == (
        f"definition 'vd-1' has no version {number}; its versions are 1 to 1, so check the "
        "version number"
    )


def test_a_reviser_must_be_a_current_user_holding_the_role() -> None:
    command = replace(REVISE, by="mallory")
    assert refusal((DRAFTED,), command, NotAuthorizedError) == (
        "user 'mallory' is not a current TECHNICAL user of customer 'cust-1', so cannot "
        "revise value definitions; ask one of its CUSTOMER_ADMIN, FINANCE or TECHNICAL users, "
        "or an ADMIN"
    )


def test_a_revision_is_checked_like_a_draft() -> None:
    command = replace(REVISE, pricing=pricing(currency="USD"))
    assert refusal((DRAFTED,), command, CurrencyMismatchError).startswith(
        "the pricing currency 'USD' is not the billing currency"
    )


@pytest.mark.parametrize(
    ("changes", "changed"),
    [
        ({"share_percent": "15"}, "share_percent"),
        ({"floor_minor_units": 1}, "floor_minor_units"),
        ({"cap_minor_units": None}, "cap_minor_units"),
        ({"share_percent": "15", "cap_minor_units": 1}, "share_percent and cap_minor_units"),
    ],
)
@pytest.mark.parametrize(
    ("by", "role"), [(STAFF, Role.ADMIN), ("alice", Role.CUSTOMER_ADMIN), ("tom", Role.TECHNICAL)]
)
def test_only_finance_changes_the_pricing_terms(
    changes: dict[str, Any], changed: str, by: str, role: Role
) -> None:
    command = replace(REVISE, pricing=pricing(**changes), by=by, by_role=role)
    assert refusal((DRAFTED,), command, PricingChangeNotAllowedError) == (
        f"only FINANCE can change the pricing terms, and this revision changes {changed} "
        f"from version 1's (acting as {role}); ask a FINANCE user of customer 'cust-1' to "
        "make this revision, or keep version 1's terms"
    )


def test_finance_changes_the_pricing_terms() -> None:
    command = replace(REVISE, pricing=pricing(share_percent="15"), by="fiona", by_role=Role.FINANCE)
    [event] = then((DRAFTED,), command)
    assert isinstance(event, DefinitionRevised)
    assert event.content == CONTENT_3
    assert event.revised_by_role is Role.FINANCE


def test_the_same_terms_written_differently_are_no_change() -> None:
    command = replace(REVISE, pricing=pricing(share_percent="12.5000"))
    [event] = then((DRAFTED,), command)
    assert isinstance(event, DefinitionRevised)
    assert event.content.pricing == CONTENT.pricing


def test_a_revision_may_repeat_the_content_to_restart_an_approval() -> None:
    command = replace(REVISE, formula=CONTENT.formula)
    events = then(AT_TECHNICAL, command)
    assert [type(event) for event in events] == [ApprovalVoided, DefinitionRevised]
    revised = events[1]
    assert isinstance(revised, DefinitionRevised)
    assert revised.content_hash == CONTENT_HASH


# --- submitting -----------------------------------------------------------------------------------


def test_submit_starts_the_approval_at_finance_review() -> None:
    assert then((DRAFTED,), SUBMIT) == [SUBMITTED]
    state = state_after(IN_REVIEW)
    version = state.versions[0]
    assert (version.status, version.stage, version.sign_offs) == (
        VersionStatus.IN_REVIEW,
        ApprovalStage.FINANCE_REVIEW,
        (),
    )
    assert version.approvers == Approvers(finance="fiona", technical="tom", executive="erin")
    assert (version.current_approver, version.current_role) == ("fiona", Role.FINANCE)
    assert state.under_review == version


@pytest.mark.parametrize(
    ("by", "role"),
    [(STAFF, Role.ADMIN), ("fiona", Role.FINANCE), ("tina", Role.TECHNICAL)],
)
def test_anyone_who_may_draft_may_submit(by: str, role: Role) -> None:
    [event] = then((DRAFTED,), replace(SUBMIT, by=by, by_role=role))
    assert isinstance(event, DefinitionSubmitted)


def test_a_submitter_must_be_a_current_user_holding_the_role() -> None:
    command = replace(SUBMIT, by="alice", by_role=Role.FINANCE)
    assert refusal((DRAFTED,), command, NotAuthorizedError) == (
        "user 'alice' is not a current FINANCE user of customer 'cust-1', so cannot submit "
        "value definitions for approval; ask one of its CUSTOMER_ADMIN, FINANCE or TECHNICAL "
        "users, or an ADMIN"
    )


def test_only_the_latest_version_is_submitted() -> None:
    assert refusal((DRAFTED, REVISED), SUBMIT, StaleVersionError) == (
        "version 1 is not the latest version of definition 'vd-1': version 2 is; only the "
        "latest version can be submitted, so submit version 2"
    )


def test_submit_an_unknown_version() -> None:
    assert refusal((DRAFTED,), replace(SUBMIT, version=3), UnknownVersionError) == (
        "definition 'vd-1' has no version 3; its versions are 1 to 1, so check the version number"
    )


@pytest.mark.parametrize(
    ("given", "stage", "approver"),
    [(IN_REVIEW, "Finance review", "fiona"), (AT_SIGN_OFF, "Final executive sign-off", "erin")],
)
def test_a_version_under_approval_is_not_submitted_again(
    given: tuple[Event, ...], stage: str, approver: str
) -> None:
    assert refusal(given, SUBMIT, VersionNotDraftError) == (
        f"version 1 is already under approval, at {stage} (assigned to {approver!r}); wait for "
        "its approvers, or revise the definition to start again with a new version"
    )


def test_an_approved_version_is_not_submitted_again() -> None:
    assert refusal(IN_FORCE, SUBMIT, VersionNotDraftError) == (
        "version 1 is already approved and in force; revise the definition to make a new "
        "version, and submit that"
    )


@pytest.mark.parametrize(
    ("changes", "context", "message"),
    [
        (
            {"finance_approver": "tom"},
            CONTEXT,
            "finance_approver 'tom' is not a current FINANCE user of customer 'cust-1' (holds "
            "TECHNICAL); name a user who holds FINANCE: fiona, frank",
        ),
        (
            {"technical_approver": "zoe"},
            CONTEXT,
            "technical_approver 'zoe' is not a current TECHNICAL user of customer 'cust-1' (is "
            "not a user of it); name a user who holds TECHNICAL: tina, tom",
        ),
        (
            {"executive": "fiona"},
            CONTEXT,
            "executive 'fiona' is not a current CUSTOMER_ADMIN user of customer 'cust-1' "
            "(holds FINANCE); name a user who holds CUSTOMER_ADMIN: alice, erin",
        ),
        (
            {"executive": STAFF},
            with_users(**{STAFF: Role.ADMIN}),
            "executive 'staff-1' is not a current CUSTOMER_ADMIN user of customer 'cust-1' "
            "(holds ADMIN); name a user who holds CUSTOMER_ADMIN: alice, erin",
        ),
        (
            {"finance_approver": "api-key:k1"},
            with_users(**{"api-key:k1": Role.FINANCE}),
            "finance_approver 'api-key:k1' is not a current FINANCE user of customer 'cust-1' "
            "(an API key: sign-offs are given by people); name a user who holds FINANCE: "
            "fiona, frank",
        ),
        (
            {},
            with_users(fiona=None, frank=None),
            "finance_approver 'fiona' is not a current FINANCE user of customer 'cust-1' (is "
            "not a user of it); no user holds FINANCE yet, so ask a CUSTOMER_ADMIN to give the "
            "role first",
        ),
    ],
)
def test_each_approver_must_hold_the_stages_role(
    changes: dict[str, str], context: DefinitionContext, message: str
) -> None:
    command = replace(SUBMIT, **changes)
    assert refusal((DRAFTED,), command, InvalidApproverError, context) == message


@pytest.mark.parametrize("field", ["finance_approver", "technical_approver", "executive"])
def test_every_approver_is_named(field: str) -> None:
    command = replace(SUBMIT, **{field: ""})
    assert refusal((DRAFTED,), command, InvalidDefinitionFieldError) == (
        f"{field} must not be blank; fill it in"
    )


def test_a_long_list_of_candidates_is_cut_short() -> None:
    context = with_users(**{f"fin{index:02}": Role.FINANCE for index in range(12)})
    command = replace(SUBMIT, finance_approver="tom")
    assert refusal((DRAFTED,), command, InvalidApproverError, context).endswith(
        "name a user who holds FINANCE: fin00, fin01, fin02, fin03, fin04, fin05, fin06, "
        "fin07, fin08, fin09, ..."
    )


def test_submit_checks_the_content_against_todays_configuration() -> None:
    context = replace(CONTEXT, metrics=frozenset({"revenue", "churn"}))
    assert refusal((DRAFTED,), SUBMIT, UnknownMetricError, context) == (
        "version 1 can no longer be submitted, because the customer's configuration changed "
        "since it was drafted: metric 'seats' is not configured for customer 'cust-1'; use "
        "one of the metrics mapped in the setup wizard: churn, revenue"
    )


def test_submit_checks_the_formula_against_todays_baselines() -> None:
    context = replace(CONTEXT, baselines=frozenset({"seats"}))
    error = refused((DRAFTED,), SUBMIT, InvalidFormulaError, context)
    assert isinstance(error, InvalidFormulaError)
    assert error.position == 22
    assert error.message == (
        "version 1 can no longer be submitted, because the customer's configuration changed "
        "since it was drafted: formula: unknown baseline 'revenue' at column 22; known "
        "baselines: seats"
    )


# --- approving ------------------------------------------------------------------------------------


def test_the_three_stages_in_order_put_the_version_in_force() -> None:
    assert then(IN_REVIEW, APPROVE_FINANCE) == [FINANCE_APPROVED]
    at_technical = state_after(AT_TECHNICAL).versions[0]
    assert (at_technical.stage, at_technical.current_approver) == (
        ApprovalStage.TECHNICAL_REVIEW,
        "tom",
    )
    assert then(AT_TECHNICAL, APPROVE_TECHNICAL) == [TECHNICAL_APPROVED]
    at_sign_off = state_after(AT_SIGN_OFF).versions[0]
    assert (at_sign_off.stage, at_sign_off.current_approver, at_sign_off.current_role) == (
        ApprovalStage.FINAL_SIGN_OFF,
        "erin",
        Role.CUSTOMER_ADMIN,
    )
    assert then(AT_SIGN_OFF, SIGN_OFF) == [APPROVED]
    state = state_after(IN_FORCE)
    version = state.versions[0]
    assert (version.status, version.stage, version.approved_at) == (
        VersionStatus.APPROVED,
        None,
        LATER,
    )
    assert version.sign_offs == (
        StageSignOff(stage=ApprovalStage.FINANCE_REVIEW, by="fiona", at=AT),
        StageSignOff(stage=ApprovalStage.TECHNICAL_REVIEW, by="tom", at=AT),
        StageSignOff(stage=ApprovalStage.FINAL_SIGN_OFF, by="erin", at=LATER),
    )
    assert state.in_force == version
    assert state.in_force_version == 1
    assert state.under_review is None


def test_the_receipt_names_the_content_hash_of_the_version() -> None:
    [receipt] = then(AT_SIGN_OFF, SIGN_OFF)
    assert isinstance(receipt, DefinitionApproved)
    assert receipt.content_hash == DRAFTED.content_hash == CONTENT_HASH


def test_a_later_approval_supersedes_the_version_in_force() -> None:
    later = LATER + timedelta(days=1)
    round_two: list[Event] = [
        replace(SUBMITTED, version=2),
        replace(FINANCE_APPROVED, version=2),
        replace(TECHNICAL_APPROVED, version=2),
    ]
    given = (*IN_FORCE, REVISED, *round_two)
    command = replace(SIGN_OFF, version=2, at=later)
    assert then(given, command) == [
        replace(
            APPROVED,
            version=2,
            content_hash=REVISED.content_hash,
            supersedes_version=1,
            approved_at=later,
        )
    ]
    state = state_after([*given, *then(given, command)])
    assert state.statuses() == {1: VersionStatus.SUPERSEDED, 2: VersionStatus.APPROVED}
    assert state.versions[0].superseded_at == later
    in_force = state.in_force
    assert in_force is not None
    assert (in_force.number, in_force.content_hash, in_force.approved_at) == (
        2,
        REVISED.content_hash,
        later,
    )


CURRENT_FINANCE = (
    "the current stage is Finance review of version 1, assigned to 'fiona' (FINANCE), who "
    "alone can act on it now"
)
CURRENT_TECHNICAL = (
    "the current stage is Technical review of version 1, assigned to 'tom' (TECHNICAL), who "
    "alone can act on it now"
)


@pytest.mark.parametrize(
    ("given", "command", "message"),
    [
        (
            IN_REVIEW,
            APPROVE_TECHNICAL,
            "cannot approve Technical review of version 1: Finance review of version 1 comes "
            f"first; {CURRENT_FINANCE}",
        ),
        (
            IN_REVIEW,
            SIGN_OFF,
            "cannot approve Final executive sign-off of version 1: Finance review of version 1 "
            f"comes first; {CURRENT_FINANCE}",
        ),
        (
            AT_TECHNICAL,
            APPROVE_FINANCE,
            "cannot approve Finance review of version 1: Finance review of version 1 is already "
            f"approved; {CURRENT_TECHNICAL}",
        ),
        (
            (DRAFTED,),
            APPROVE_FINANCE,
            "cannot approve Finance review of version 1: version 1 is not under approval (it is "
            "a draft); no approval is running for definition 'vd-1' (its latest version, 1, is "
            "DRAFT); submit version 1 for approval first",
        ),
        (
            IN_FORCE,
            SIGN_OFF,
            "cannot approve Final executive sign-off of version 1: version 1 is not under "
            "approval (it is approved and in force); no approval is running for definition "
            "'vd-1' (its latest version, 1, is APPROVED); there is nothing to approve until a "
            "new version is drafted and submitted",
        ),
        (
            (*AT_TECHNICAL, VOIDED, REVISED, replace(SUBMITTED, version=2)),
            APPROVE_TECHNICAL,
            "cannot approve Technical review of version 1: version 1 is not under approval (its "
            "approval was voided when a later version was drafted); the current stage is "
            "Finance review of version 2, assigned to 'fiona' (FINANCE), who alone can act on "
            "it now",
        ),
        (
            (*IN_FORCE, REVISED, replace(SUBMITTED, version=2)),
            replace(APPROVE_FINANCE, version=1),
            "cannot approve Finance review of version 1: version 1 is not under approval (it is "
            "approved and in force); the current stage is Finance review of version 2, "
            "assigned to 'fiona' (FINANCE), who alone can act on it now",
        ),
        (
            (DRAFTED, REVISED, replace(SUBMITTED, version=2)),
            APPROVE_FINANCE,
            "cannot approve Finance review of version 1: version 1 is not under approval (a "
            "later version replaced it before it was submitted again); the current stage is "
            "Finance review of version 2, assigned to 'fiona' (FINANCE), who alone can act on "
            "it now",
        ),
        (
            (DRAFTED, SUBMITTED, CHANGES_REQUESTED),
            replace(REQUEST_CHANGES, at=LATER),
            "cannot request changes at Finance review of version 1: version 1 is not under "
            "approval (it is a draft); no approval is running for definition 'vd-1' (its latest "
            "version, 1, is DRAFT); submit version 1 for approval first",
        ),
    ],
)
def test_acting_out_of_turn_names_the_current_stage_and_its_approver(
    given: tuple[Event, ...], command: Command, message: str
) -> None:
    assert refusal(given, command, StageNotCurrentError) == message


def test_a_superseded_version_is_not_approved_again() -> None:
    given = (
        *IN_FORCE,
        REVISED,
        replace(SUBMITTED, version=2),
        replace(FINANCE_APPROVED, version=2),
        replace(TECHNICAL_APPROVED, version=2),
        replace(APPROVED, version=2, content_hash=REVISED.content_hash, supersedes_version=1),
    )
    assert refusal(given, SIGN_OFF, StageNotCurrentError) == (
        "cannot approve Final executive sign-off of version 1: version 1 is not under approval "
        "(it was approved, then superseded by a later version); no approval is running for "
        "definition 'vd-1' (its latest version, 2, is APPROVED); there is nothing to approve "
        "until a new version is drafted and submitted"
    )


def test_approving_an_unknown_version() -> None:
    assert refusal(IN_REVIEW, replace(APPROVE_FINANCE, version=2), UnknownVersionError) == (
        "definition 'vd-1' has no version 2; its versions are 1 to 1, so check the version number"
    )


@pytest.mark.parametrize(
    ("by", "role"),
    [("frank", Role.FINANCE), (STAFF, Role.ADMIN), ("alice", Role.CUSTOMER_ADMIN)],
)
def test_only_the_assigned_approver_acts(by: str, role: Role) -> None:
    command = replace(APPROVE_FINANCE, by=by, by_role=role)
    assert refusal(IN_REVIEW, command, NotAssignedApproverError) == (
        f"only 'fiona', the assigned approver of Finance review of version 1, can approve it, "
        f"not {by!r}; ask 'fiona' to act"
    )


@pytest.mark.parametrize(
    ("role", "standing"),
    [(Role.TECHNICAL, "now holds TECHNICAL"), (None, "is no longer a user of it")],
)
def test_an_approver_who_lost_the_role_can_no_longer_act(role: Role | None, standing: str) -> None:
    context = with_users(fiona=role)
    assert refusal(IN_REVIEW, APPROVE_FINANCE, NotAssignedApproverError, context) == (
        f"user 'fiona', assigned to Finance review of version 1, no longer holds FINANCE on "
        f"customer 'cust-1' ({standing}); revise the definition (which voids this approval) "
        "and submit the new version naming a current FINANCE user"
    )


def test_an_approver_acts_in_the_stages_role() -> None:
    command = replace(APPROVE_FINANCE, by_role=Role.ADMIN)
    assert refusal(IN_REVIEW, command, NotAssignedApproverError) == (
        "user 'fiona' acts as ADMIN, but Finance review of version 1 needs FINANCE; act with "
        "the FINANCE role the customer gave you"
    )


def test_approval_checks_the_content_against_todays_configuration() -> None:
    context = replace(CONTEXT, currency="USD")
    assert refusal(AT_SIGN_OFF, SIGN_OFF, CurrencyMismatchError, context) == (
        "version 1 can no longer be approved, because the customer's configuration changed "
        "since it was drafted: the pricing currency 'EUR' is not the billing currency of "
        "customer 'cust-1', USD; state the terms in USD"
    )


# --- requesting changes -----------------------------------------------------------------------


def test_request_changes_sends_the_version_back_to_draft() -> None:
    assert then(IN_REVIEW, REQUEST_CHANGES) == [CHANGES_REQUESTED]
    version = state_after([*IN_REVIEW, CHANGES_REQUESTED]).versions[0]
    assert (version.status, version.stage) == (VersionStatus.DRAFT, None)
    assert version.changes_requested == ChangeRequest(
        stage=ApprovalStage.FINANCE_REVIEW,
        by="fiona",
        reason_sealed=REQUEST_CHANGES.reason_sealed,
        at=LATER,
    )


def test_a_later_stage_requests_changes_too() -> None:
    command = replace(
        REQUEST_CHANGES, stage=ApprovalStage.FINAL_SIGN_OFF, by="erin", by_role=Role.CUSTOMER_ADMIN
    )
    [event] = then(AT_SIGN_OFF, command)
    assert event == replace(
        CHANGES_REQUESTED,
        stage=ApprovalStage.FINAL_SIGN_OFF,
        requested_by="erin",
        requested_by_role=Role.CUSTOMER_ADMIN,
    )
    version = state_after([*AT_SIGN_OFF, event]).versions[0]
    assert version.status is VersionStatus.DRAFT
    assert version.changes_requested is not None
    assert version.changes_requested.stage is ApprovalStage.FINAL_SIGN_OFF


def test_an_unchanged_version_is_resubmitted_and_reviewed_from_the_start() -> None:
    given: tuple[Event, ...] = (
        *AT_SIGN_OFF,
        replace(CHANGES_REQUESTED, stage=ApprovalStage.FINAL_SIGN_OFF),
    )
    resubmit = replace(SUBMIT, finance_approver="frank", at=LATER)
    [event] = then(given, resubmit)
    assert event == replace(SUBMITTED, finance_approver="frank", submitted_at=LATER)
    version = state_after([*given, event]).versions[0]
    assert (version.status, version.stage, version.sign_offs) == (
        VersionStatus.IN_REVIEW,
        ApprovalStage.FINANCE_REVIEW,
        (),
    )
    assert version.current_approver == "frank"
    assert version.changes_requested is not None  # kept for the reviewers to read


def test_a_version_sent_back_can_be_revised_instead() -> None:
    given = (*IN_REVIEW, CHANGES_REQUESTED)
    assert then(given, REVISE) == [REVISED]
    assert state_after([*given, REVISED]).statuses() == {
        1: VersionStatus.REPLACED,
        2: VersionStatus.DRAFT,
    }


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        (" \n ", "reason_sealed must not be blank; fill it in"),
        (
            "x" * 11_001,
            "reason_sealed is 11001 characters long, more than the 11000 allowed; keep the text "
            "to 2000 characters before it is sealed",
        ),
    ],
)
def test_a_request_for_changes_needs_a_sealed_reason(reason: str, message: str) -> None:
    command = replace(REQUEST_CHANGES, reason_sealed=reason)
    assert refusal(IN_REVIEW, command, InvalidDefinitionFieldError) == message


def test_the_sealed_reason_is_opaque_and_has_room_for_the_longest_text() -> None:
    # The pii:v1 seal of 2000 characters of 4 UTF-8 bytes each: prefix, key id, ':', then the
    # unpadded base64url of a 12-byte nonce, the ciphertext and a 16-byte tag.
    longest = len("pii:v1:") + 36 + 1 + -(-(12 + 4 * MAX_REASON_LENGTH + 16) * 4 // 3)
    assert longest == 10_748 <= MAX_REASON_SEALED_LENGTH
    for reason in ("First,\nthe share.\n\tSecond, the cap.", "x" * MAX_REASON_SEALED_LENGTH):
        [event] = then(IN_REVIEW, replace(REQUEST_CHANGES, reason_sealed=reason))
        assert isinstance(event, ChangesRequested)
        assert event.reason_sealed == reason


def test_only_the_assigned_approver_requests_changes() -> None:
    command = replace(REQUEST_CHANGES, by="frank")
    assert refusal(IN_REVIEW, command, NotAssignedApproverError) == (
        "only 'fiona', the assigned approver of Finance review of version 1, can request "
        "changes at it, not 'frank'; ask 'fiona' to act"
    )


def test_changes_are_requested_at_the_current_stage_only() -> None:
    command = replace(REQUEST_CHANGES, stage=ApprovalStage.TECHNICAL_REVIEW, by="tom")
    assert refusal(IN_REVIEW, command, StageNotCurrentError) == (
        "cannot request changes at Technical review of version 1: Finance review of version 1 "
        f"comes first; {CURRENT_FINANCE}"
    )


# --- events and commands as stored ----------------------------------------------------------------

ALL_EVENTS: list[Event] = [
    DRAFTED,
    SUBMITTED,
    FINANCE_APPROVED,
    CHANGES_REQUESTED,
    VOIDED,
    REVISED,
    replace(APPROVED, supersedes_version=1),
]
EXPECTED_TAGS = {
    DefinitionDrafted: "DefinitionDrafted",
    DefinitionRevised: "DefinitionRevised",
    ApprovalVoided: "ApprovalVoided",
    DefinitionSubmitted: "DefinitionSubmitted",
    StageApproved: "StageApproved",
    ChangesRequested: "ChangesRequested",
    DefinitionApproved: "DefinitionApproved",
}


def test_every_event_round_trips_through_json_by_its_stable_tag() -> None:
    assert {type(event) for event in ALL_EVENTS} == set(EXPECTED_TAGS)
    for event in ALL_EVENTS:
        encoded = msgspec.json.encode(event)
        assert msgspec.json.decode(encoded)["type"] == EXPECTED_TAGS[type(event)]
        assert EVENT_DECODER.decode(encoded) == event


@pytest.mark.parametrize("event_type", list(EXPECTED_TAGS), ids=lambda cls: cls.__name__)
def test_events_follow_the_ledger_conventions(event_type: type[msgspec.Struct]) -> None:
    config = event_type.__struct_config__
    assert (config.frozen, config.tag_field, config.tag) == (
        True,
        "type",
        EXPECTED_TAGS[event_type],
    )
    fields = msgspec.structs.fields(event_type)
    assert (fields[-1].name, fields[-1].default) == ("schema", 1)
    assert any(field.name.endswith("_at") and field.type is datetime for field in fields)


def test_the_drafted_event_as_stored() -> None:
    assert msgspec.json.decode(msgspec.json.encode(DRAFTED)) == {
        "type": "DefinitionDrafted",
        "customer_id": "cust-1",
        "definition_id": "vd-1",
        "version": 1,
        "content": msgspec.json.decode(CONTENT_JSON),
        "content_hash": CONTENT_HASH,
        "drafted_at": "2025-03-03T09:00:00Z",
        "drafted_by": "tom",
        "drafted_by_role": "TECHNICAL",
        "schema": 1,
    }


def test_an_event_from_a_newer_writer_with_an_extra_field_still_decodes() -> None:
    encoded = msgspec.json.encode(SUBMITTED)
    assert EVENT_DECODER.decode(encoded[:-1] + b',"note":"x"}') == SUBMITTED


def test_an_unknown_event_type_is_not_decoded() -> None:
    with pytest.raises(msgspec.ValidationError):
        EVENT_DECODER.decode(b'{"type": "DefinitionDeleted", "definition_id": "vd-1"}')


@pytest.mark.parametrize(
    "command",
    [DRAFT, REVISE, SUBMIT, APPROVE_FINANCE, REQUEST_CHANGES],
    ids=lambda command: type(command).__name__,
)
def test_commands_decode_by_tag_and_refuse_unknown_fields(command: Command) -> None:
    encoded = msgspec.json.encode(command)
    assert COMMAND_DECODER.decode(encoded) == command
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        COMMAND_DECODER.decode(encoded[:-1] + b', "secret": "x"}')


def test_nested_command_fields_refuse_unknown_fields() -> None:
    encoded = msgspec.json.encode(DRAFT).replace(b'"unit":"EUR"', b'"unit":"EUR","extra":1')
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        COMMAND_DECODER.decode(encoded)


# --- random command sequences ---------------------------------------------------------------------

ACTORS = st.sampled_from(
    [
        ("alice", Role.CUSTOMER_ADMIN),
        ("erin", Role.CUSTOMER_ADMIN),
        ("fiona", Role.FINANCE),
        ("frank", Role.FINANCE),
        ("tom", Role.TECHNICAL),
        ("tina", Role.TECHNICAL),
        (STAFF, Role.ADMIN),
        ("mallory", Role.FINANCE),
        ("", Role.ADMIN),
    ]
)
TIMES = st.sampled_from([AT, LATER, AT.replace(tzinfo=None)])
FORMULAS = st.sampled_from(
    [
        CONTENT.formula,
        CONTENT_2.formula,
        "metric.seats * 10",
        "metric.revenue - baseline.churn",
        "metric.revenue *",
    ]
)
METRIC_LISTS = st.sampled_from(
    [
        DRAFT.metrics,
        metrics(("revenue", "EUR"), ("seats", "seats"), ("churn", "customers")),
        metrics(("revenue", "EUR")),
        metrics(("revenue", "EUR"), ("visits", "visits")),
        (),
    ]
)
PRICINGS = st.builds(
    PricingInput,
    share_percent=st.sampled_from(["12.5", "12.50", "15", "0", "abc", "35.12345"]),
    floor_minor_units=st.sampled_from([None, 0, 100000, -1]),
    cap_minor_units=st.sampled_from([None, 2500000, 50000]),
    currency=st.sampled_from(["EUR", "EUR", "USD"]),
)
NAMES = st.sampled_from(["Revenue uplift", "Seats", "", "x" * 201])
VERSIONS = st.integers(min_value=0, max_value=5)
APPROVER_IDS = st.sampled_from(["alice", "erin", "fiona", "frank", "tom", "tina", "zoe"])
CONTEXTS = st.sampled_from(
    [
        CONTEXT,
        CONTEXT,
        CONTEXT,
        with_users(fiona=Role.TECHNICAL),
        with_users(tom=None),
        replace(CONTEXT, baselines=frozenset({"seats"})),
    ]
)


def stamped(command: Command, actor: tuple[str, Role], at: datetime) -> Command:
    return replace(command, by=actor[0], by_role=actor[1], at=at)


class DefinitionMachine(RuleBasedStateMachine):
    """Any sequence of commands: refusals are DefinitionErrors, and the stream stays coherent."""

    def __init__(self) -> None:
        super().__init__()
        self.state = initial_state
        self.ledger: list[Event] = []
        self.context = CONTEXT

    def record(self, command: Command) -> None:
        refused: DomainError | None = None
        try:
            events = decide(command, self.state, self.context)
        except DomainError as error:
            refused, events = error, []
        if refused is not None:
            assert isinstance(refused, DefinitionError)
            assert refused.message
            hypothesis_event(f"refused: {type(refused).__name__}")
            return
        hypothesis_event(f"decided: {type(events[-1]).__name__}")
        assert events
        assert decide(command, self.state, self.context) == events
        for event in events:
            self.state = evolve(self.state, event)
            self.ledger.append(event)

    @rule(context=CONTEXTS)
    def the_configuration_changes(self, context: DefinitionContext) -> None:
        self.context = context

    @rule(
        actor=ACTORS,
        at=TIMES,
        name=NAMES,
        metric_list=METRIC_LISTS,
        formula=FORMULAS,
        terms=PRICINGS,
    )
    def draft(
        self,
        actor: tuple[str, Role],
        at: datetime,
        name: str,
        metric_list: tuple[MetricInput, ...],
        formula: str,
        terms: PricingInput,
    ) -> None:
        command = replace(DRAFT, name=name, metrics=metric_list, formula=formula, pricing=terms)
        self.record(stamped(command, actor, at))

    @rule(
        actor=ACTORS,
        at=TIMES,
        back=st.integers(min_value=0, max_value=2),
        metric_list=METRIC_LISTS,
        formula=FORMULAS,
        terms=PRICINGS,
    )
    def revise(
        self,
        actor: tuple[str, Role],
        at: datetime,
        back: int,
        metric_list: tuple[MetricInput, ...],
        formula: str,
        terms: PricingInput,
    ) -> None:
        command = replace(
            REVISE,
            revises_version=len(self.state.versions) - back,
            metrics=metric_list,
            formula=formula,
            pricing=terms,
        )
        self.record(stamped(command, actor, at))

    @rule(
        actor=ACTORS,
        at=TIMES,
        version=VERSIONS,
        approvers=st.tuples(APPROVER_IDS, APPROVER_IDS, APPROVER_IDS),
    )
    def submit(
        self,
        actor: tuple[str, Role],
        at: datetime,
        version: int,
        approvers: tuple[str, str, str],
    ) -> None:
        finance, technical, executive = approvers
        command = replace(
            SUBMIT,
            version=version,
            finance_approver=finance,
            technical_approver=technical,
            executive=executive,
        )
        self.record(stamped(command, actor, at))

    @rule(
        actor=ACTORS,
        at=TIMES,
        version=VERSIONS,
        stage=st.sampled_from(STAGES),
        reason=st.sampled_from(["", "pii:v1:k:Zml4IHRoZSBjYXA", None]),
    )
    def act_on_a_stage(
        self,
        actor: tuple[str, Role],
        at: datetime,
        version: int,
        stage: ApprovalStage,
        reason: str | None,
    ) -> None:
        command: Command
        if reason is None:
            command = replace(APPROVE_FINANCE, version=version, stage=stage)
        else:
            command = replace(REQUEST_CHANGES, version=version, stage=stage, reason_sealed=reason)
        self.record(stamped(command, actor, at))

    @rule(choices=st.lists(st.integers(min_value=0, max_value=9), min_size=1, max_size=6))
    def take_the_next_steps(self, choices: list[int]) -> None:
        """Random commands seldom fit the state, so also take the steps a person would take:
        draft, submit, approve (now and then requesting changes instead), revise."""
        for choice in choices:
            self.record(self.next_step(request_changes=choice == 0, change_terms=choice == 1))

    def next_step(self, *, request_changes: bool, change_terms: bool) -> Command:
        latest = self.state.latest
        if latest is None:
            return DRAFT
        if latest.status is VersionStatus.DRAFT:
            return replace(SUBMIT, version=latest.number)
        if latest.status is VersionStatus.IN_REVIEW and latest.stage is not None:
            act: Command
            if request_changes:
                act = replace(REQUEST_CHANGES, version=latest.number, stage=latest.stage)
            else:
                act = replace(APPROVE_FINANCE, version=latest.number, stage=latest.stage)
            return replace(act, by=latest.current_approver, by_role=latest.current_role)
        terms = pricing(share_percent="15") if change_terms else PRICING
        return replace(
            REVISE, revises_version=latest.number, pricing=terms, by="fiona", by_role=Role.FINANCE
        )

    @invariant()
    def versions_and_approvals_are_coherent(self) -> None:
        assert_coherent(self.state)

    @invariant()
    def replaying_the_ledger_gives_the_same_state(self) -> None:
        assert state_after(self.ledger) == self.state

    @invariant()
    def the_ledger_round_trips_through_json(self) -> None:
        decoded = [EVENT_DECODER.decode(msgspec.json.encode(event)) for event in self.ledger]
        assert decoded == self.ledger


def assert_coherent(state: DefinitionState) -> None:
    versions = state.versions
    assert [version.number for version in versions] == list(range(1, len(versions) + 1))
    statuses: Mapping[int, VersionStatus] = state.statuses()
    for version in versions:
        assert version.content_hash == content_hash(version.content)
        assert (version.stage is not None) == (version.status is VersionStatus.IN_REVIEW)
        if version.stage is not None:
            assert version.approvers is not None
            # The stages passed so far are exactly those before the current one.
            assert (
                tuple(sign_off.stage for sign_off in version.sign_offs)
                == (STAGES[: STAGES.index(version.stage)])
            )
        if version.number < len(versions):
            assert version.status not in (VersionStatus.DRAFT, VersionStatus.IN_REVIEW)
    approved = [number for number, status in statuses.items() if status is VersionStatus.APPROVED]
    assert approved == ([] if state.in_force_version is None else [state.in_force_version])
    in_force = state.in_force
    if in_force is not None:
        assert in_force.approved_at is not None
        assert [sign_off.stage for sign_off in in_force.sign_offs] == list(STAGES)
    under_review = state.under_review
    assert under_review is None or under_review is state.latest


DefinitionMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None
)
TestDefinitionStream = DefinitionMachine.TestCase
