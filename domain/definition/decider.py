"""A value definition's rules: `decide` what a command makes happen, `evolve` the state.

Both are pure: the time, the actor and every id come on the command, and the facts of other
aggregates (the customer's users and currency, the setup wizard's metrics and baselines) come
in a `DefinitionContext` the command layer builds from freshly loaded streams.

The stream is one definition of one customer: every version of it and every approval of
those versions. The rules:

- Content. A name (1 to 200 characters, one line); 1 to 50 metrics, each a configured metric
  named once with a unit (1 to 50 characters, one line); a formula that parses and reads only
  the definition's metrics and the baselines of those of them that have one recorded; pricing
  terms: a share of value as a decimal percentage (more than 0, at most 100, at most 4 decimal
  places), an optional floor and cap in whole minor units (0 to 2**53 - 1, floor <= cap), in
  the customer's billing currency. Content is checked against the context when a version is
  drafted or revised, and again when it is submitted and at each approval, since the
  configuration may have changed since.
- Drafting and revising: ADMIN (vendor staff, any customer), or a current user of the customer
  holding the role they act in (CUSTOMER_ADMIN, FINANCE or TECHNICAL). A revision names the
  version it revises, which must be the latest; it may repeat that version's content (the way
  to restart an approval whose approver has left). A revision whose pricing terms differ from
  the latest version's is for FINANCE alone; the first version's terms may be set by anyone who
  may draft.
- A revision made while the latest version's approval is running voids that approval
  (`ApprovalVoided`, recorded before the `DefinitionRevised`). An older draft becomes REPLACED.
- Submitting: by anyone who may draft; only the latest version, and only while it is a draft
  (new, or sent back by a request for changes: resubmitting an unchanged version is allowed and
  starts again at Finance review). It names a current FINANCE user, a current TECHNICAL user
  and a current CUSTOMER_ADMIN (the executive).
- Approving and requesting changes: only on the running approval's current stage, only by its
  assigned approver acting in the stage's role and still holding it on the customer. Stages go
  Finance review, Technical review, Final executive sign-off. A request for changes needs a
  reason, sealed (not blank, at most `MAX_REASON_SEALED_LENGTH` characters sealed; the command
  layer keeps the text itself to 1 to 2000 characters), and sends the version back to draft.
- The final sign-off records `DefinitionApproved`, the approval receipt naming the version's
  content hash: the version is in force from then on, and the version in force until then (if
  any) is superseded.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Final, assert_never

import msgspec

from domain.definition.commands import (
    ApproveStage,
    Command,
    DraftDefinition,
    PricingInput,
    RequestChanges,
    ReviseDefinition,
    SubmitForApproval,
)
from domain.definition.errors import (
    CurrencyMismatchError,
    DefinitionAlreadyExistsError,
    DefinitionError,
    DefinitionMismatchError,
    DefinitionNotFoundError,
    InvalidApproverError,
    InvalidDefinitionFieldError,
    InvalidFormulaError,
    InvalidPricingTermsError,
    NotAssignedApproverError,
    NotAuthorizedError,
    PricingChangeNotAllowedError,
    StageNotCurrentError,
    StaleVersionError,
    UnknownMetricError,
    UnknownVersionError,
    VersionNotDraftError,
)
from domain.definition.events import (
    STAGE_ROLES,
    STAGE_TITLES,
    STAGES,
    ApprovalStage,
    ApprovalVoided,
    ChangesRequested,
    DefinitionApproved,
    DefinitionContent,
    DefinitionDrafted,
    DefinitionRevised,
    DefinitionSubmitted,
    Event,
    MetricDefinition,
    PricingTerms,
    StageApproved,
)
from domain.definition.state import (
    Approvers,
    ChangeRequest,
    DefinitionState,
    DefinitionVersion,
    StageSignOff,
    VersionStatus,
)
from domain.formula import NAME_PATTERN, FormulaError, decimal_context, parse_formula, validate
from domain.roles import Role, is_api_key_actor
from eventstore.canonical import MAX_SAFE_INTEGER, canonical_json

MAX_NAME_LENGTH: Final = 200
"""Characters in a definition's name."""
MAX_UNIT_LENGTH: Final = 50
"""Characters in a metric's unit."""
MAX_REASON_LENGTH: Final = 2000
"""Characters in the reason for a request for changes, checked by the command layer before it
seals the text (the domain never sees the text itself)."""
MAX_REASON_SEALED_LENGTH: Final = 11_000
"""Characters in the sealed reason: room for the sealed form (pii:v1) of `MAX_REASON_LENGTH`
characters of any text, at up to 4 UTF-8 bytes each (10,748 characters)."""
MAX_METRICS: Final = 50
"""Metrics one definition can use."""
SHARE_PLACES: Final = 4
"""Decimal places a share of value may have (35.1234 %)."""
MAX_MINOR_UNITS: Final = MAX_SAFE_INTEGER
"""The largest floor or cap: the largest integer the ledger's canonical JSON admits."""
DRAFTER_ROLES: Final = frozenset({Role.ADMIN, Role.CUSTOMER_ADMIN, Role.FINANCE, Role.TECHNICAL})
"""Roles that may draft, revise and submit definitions."""

_SHARE_TEXT: Final = re.compile(r"[0-9]+(?:\.([0-9]+))?")
_ZERO: Final = Decimal(0)
_HUNDRED: Final = Decimal(100)


class DefinitionContext(msgspec.Struct, frozen=True, kw_only=True):
    """Facts from other aggregates that deciding needs, as plain data.

    The command layer builds it from freshly loaded streams of the customer the command names:
    `users` maps each current user's id to the role they hold (from the customer account),
    `currency` is the customer's billing currency, `metrics` the metric names mapped in the
    setup wizard's metrics step and `baselines` the metrics with a recorded baseline.
    """

    customer_id: str
    currency: str
    users: Mapping[str, Role] = msgspec.field(default_factory=dict)
    metrics: frozenset[str] = frozenset()
    baselines: frozenset[str] = frozenset()


def content_hash(content: DefinitionContent) -> str:
    """SHA-256, as 64 lowercase hex digits, of the RFC 8785 canonical JSON of the content.

    The JSON is `msgspec.to_builtins(content)`: exactly the ``content`` object the version's
    event stores (members holding their default, such as an absent floor, are left out).
    """
    return hashlib.sha256(canonical_json(msgspec.to_builtins(content))).hexdigest()


def decide(command: Command, state: DefinitionState, context: DefinitionContext) -> list[Event]:
    """The events the command makes happen, or a `DefinitionError` saying why it cannot."""
    _check_stamp(command.at, command.by)
    _check_scope(command, state, context)
    match command:
        case DraftDefinition():
            return _draft(command, context)
        case ReviseDefinition():
            return _revise(command, state, context)
        case SubmitForApproval():
            return _submit(command, state, context)
        case ApproveStage():
            return _approve(command, state, context)
        case RequestChanges():
            return _request_changes(command, state, context)
        case _:
            assert_never(command)


def evolve(state: DefinitionState, event: Event) -> DefinitionState:  # noqa: PLR0911 (one return per kind of event)
    """The state after the event; events are facts already decided, so nothing is refused."""
    match event:
        case DefinitionDrafted():
            first = DefinitionVersion(
                number=event.version,
                content=event.content,
                content_hash=event.content_hash,
                status=VersionStatus.DRAFT,
                drafted_at=event.drafted_at,
                drafted_by=event.drafted_by,
            )
            return DefinitionState(
                customer_id=event.customer_id,
                definition_id=event.definition_id,
                versions=(first,),
            )
        case DefinitionRevised():
            versions = list(state.versions)
            previous = versions[-1]
            if previous.status is VersionStatus.DRAFT:
                versions[-1] = msgspec.structs.replace(previous, status=VersionStatus.REPLACED)
            elif previous.status is VersionStatus.IN_REVIEW:
                versions[-1] = msgspec.structs.replace(
                    previous, status=VersionStatus.VOIDED, stage=None
                )
            revised = DefinitionVersion(
                number=event.version,
                content=event.content,
                content_hash=event.content_hash,
                status=VersionStatus.DRAFT,
                drafted_at=event.revised_at,
                drafted_by=event.revised_by,
            )
            return msgspec.structs.replace(state, versions=(*versions, revised))
        case ApprovalVoided():
            return _with_version(state, event.version, status=VersionStatus.VOIDED, stage=None)
        case DefinitionSubmitted():
            approvers = Approvers(
                finance=event.finance_approver,
                technical=event.technical_approver,
                executive=event.executive,
            )
            return _with_version(
                state,
                event.version,
                status=VersionStatus.IN_REVIEW,
                stage=STAGES[0],
                approvers=approvers,
                sign_offs=(),
            )
        case StageApproved():
            version = state.versions[event.version - 1]
            sign_off = StageSignOff(stage=event.stage, by=event.approved_by, at=event.approved_at)
            return _with_version(
                state,
                event.version,
                stage=STAGES[STAGES.index(event.stage) + 1],
                sign_offs=(*version.sign_offs, sign_off),
            )
        case ChangesRequested():
            request = ChangeRequest(
                stage=event.stage,
                by=event.requested_by,
                reason_sealed=event.reason_sealed,
                at=event.requested_at,
            )
            return _with_version(
                state,
                event.version,
                status=VersionStatus.DRAFT,
                stage=None,
                changes_requested=request,
            )
        case DefinitionApproved():
            if state.in_force_version is not None:
                state = _with_version(
                    state,
                    state.in_force_version,
                    status=VersionStatus.SUPERSEDED,
                    superseded_at=event.approved_at,
                )
            version = state.versions[event.version - 1]
            sign_off = StageSignOff(
                stage=ApprovalStage.FINAL_SIGN_OFF, by=event.approved_by, at=event.approved_at
            )
            state = _with_version(
                state,
                event.version,
                status=VersionStatus.APPROVED,
                stage=None,
                sign_offs=(*version.sign_offs, sign_off),
                approved_at=event.approved_at,
            )
            return msgspec.structs.replace(state, in_force_version=event.version)
        case _:
            assert_never(event)


# --- the commands -----------------------------------------------------------------------------


def _draft(command: DraftDefinition, context: DefinitionContext) -> list[Event]:
    _check_drafter(command.by, command.by_role, context, "draft value definitions")
    content = _content(
        command.name,
        [(metric.name, metric.unit) for metric in command.metrics],
        command.formula,
        command.pricing,
        context,
    )
    return [
        DefinitionDrafted(
            customer_id=command.customer_id,
            definition_id=command.definition_id,
            version=1,
            content=content,
            content_hash=content_hash(content),
            drafted_at=command.at,
            drafted_by=command.by,
            drafted_by_role=command.by_role,
        )
    ]


def _revise(
    command: ReviseDefinition, state: DefinitionState, context: DefinitionContext
) -> list[Event]:
    _check_drafter(command.by, command.by_role, context, "revise value definitions")
    latest = _latest(state)
    revised = _known_version(state, command.revises_version)
    if revised.number != latest.number:
        raise StaleVersionError(
            f"version {revised.number} is not the latest version of definition "
            f"{state.definition_id!r}: version {latest.number} is; reload the definition and "
            f"make your changes to version {latest.number}"
        )
    content = _content(
        command.name,
        [(metric.name, metric.unit) for metric in command.metrics],
        command.formula,
        command.pricing,
        context,
    )
    changed = _changed_terms(latest.content.pricing, content.pricing)
    if changed and command.by_role is not Role.FINANCE:
        raise PricingChangeNotAllowedError(
            f"only FINANCE can change the pricing terms, and this revision changes "
            f"{' and '.join(changed)} from version {latest.number}'s (acting as "
            f"{command.by_role}); ask a FINANCE user of customer {state.customer_id!r} to make "
            f"this revision, or keep version {latest.number}'s terms"
        )
    number = latest.number + 1
    events: list[Event] = []
    if latest.status is VersionStatus.IN_REVIEW and latest.stage is not None:
        events.append(
            ApprovalVoided(
                customer_id=state.customer_id,
                definition_id=state.definition_id,
                version=latest.number,
                stage=latest.stage,
                voided_by_version=number,
                reason=(
                    f"the approval of version {latest.number} was voided because version "
                    f"{number} was drafted"
                ),
                voided_at=command.at,
                voided_by=command.by,
                voided_by_role=command.by_role,
            )
        )
    events.append(
        DefinitionRevised(
            customer_id=state.customer_id,
            definition_id=state.definition_id,
            version=number,
            previous_version=latest.number,
            content=content,
            content_hash=content_hash(content),
            revised_at=command.at,
            revised_by=command.by,
            revised_by_role=command.by_role,
        )
    )
    return events


def _submit(
    command: SubmitForApproval, state: DefinitionState, context: DefinitionContext
) -> list[Event]:
    _check_drafter(command.by, command.by_role, context, "submit value definitions for approval")
    version = _known_version(state, command.version)
    latest = _latest(state)
    if version.number != latest.number:
        raise StaleVersionError(
            f"version {version.number} is not the latest version of definition "
            f"{state.definition_id!r}: version {latest.number} is; only the latest version "
            f"can be submitted, so submit version {latest.number}"
        )
    if version.status is VersionStatus.IN_REVIEW and version.stage is not None:
        raise VersionNotDraftError(
            f"version {version.number} is already under approval, at "
            f"{STAGE_TITLES[version.stage]} (assigned to {version.current_approver!r}); wait "
            "for its approvers, or revise the definition to start again with a new version"
        )
    if version.status is not VersionStatus.DRAFT:
        raise VersionNotDraftError(
            f"version {version.number} is already approved and in force; revise the "
            "definition to make a new version, and submit that"
        )
    approvers = (
        ("finance_approver", command.finance_approver, ApprovalStage.FINANCE_REVIEW),
        ("technical_approver", command.technical_approver, ApprovalStage.TECHNICAL_REVIEW),
        ("executive", command.executive, ApprovalStage.FINAL_SIGN_OFF),
    )
    for field, user_id, stage in approvers:
        _check_approver(field, user_id, STAGE_ROLES[stage], context)
    _check_still_valid(version, context, "submitted")
    return [
        DefinitionSubmitted(
            customer_id=state.customer_id,
            definition_id=state.definition_id,
            version=version.number,
            finance_approver=command.finance_approver,
            technical_approver=command.technical_approver,
            executive=command.executive,
            submitted_at=command.at,
            submitted_by=command.by,
            submitted_by_role=command.by_role,
        )
    ]


def _approve(
    command: ApproveStage, state: DefinitionState, context: DefinitionContext
) -> list[Event]:
    version = _check_turn(command, state, context, "approve")
    _check_still_valid(version, context, "approved")
    if command.stage is not ApprovalStage.FINAL_SIGN_OFF:
        return [
            StageApproved(
                customer_id=state.customer_id,
                definition_id=state.definition_id,
                version=version.number,
                stage=command.stage,
                approved_at=command.at,
                approved_by=command.by,
                approved_by_role=command.by_role,
            )
        ]
    signed = {sign_off.stage: sign_off for sign_off in version.sign_offs}
    finance = signed[ApprovalStage.FINANCE_REVIEW]
    technical = signed[ApprovalStage.TECHNICAL_REVIEW]
    return [
        DefinitionApproved(
            customer_id=state.customer_id,
            definition_id=state.definition_id,
            version=version.number,
            content_hash=version.content_hash,
            finance_approved_by=finance.by,
            finance_approved_at=finance.at,
            technical_approved_by=technical.by,
            technical_approved_at=technical.at,
            supersedes_version=state.in_force_version,
            approved_at=command.at,
            approved_by=command.by,
            approved_by_role=command.by_role,
        )
    ]


def _request_changes(
    command: RequestChanges, state: DefinitionState, context: DefinitionContext
) -> list[Event]:
    version = _check_turn(command, state, context, "request changes at")
    _check_sealed("reason_sealed", command.reason_sealed, MAX_REASON_SEALED_LENGTH)
    return [
        ChangesRequested(
            customer_id=state.customer_id,
            definition_id=state.definition_id,
            version=version.number,
            stage=command.stage,
            reason_sealed=command.reason_sealed,
            requested_at=command.at,
            requested_by=command.by,
            requested_by_role=command.by_role,
        )
    ]


# --- who may act --------------------------------------------------------------------------------


def _check_stamp(at: datetime, by: str) -> None:
    """The application layer's stamp: a blank actor or a naive time would corrupt the trail."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidDefinitionFieldError(
            "at must be a timezone-aware time; stamp commands with the time in UTC"
        )
    _check_filled("by", by)


def _check_scope(command: Command, state: DefinitionState, context: DefinitionContext) -> None:
    """The command, its context and the state must all be about the same definition."""
    _check_filled("customer_id", command.customer_id)
    _check_filled("definition_id", command.definition_id)
    if command.customer_id != context.customer_id:
        raise DefinitionMismatchError(
            f"the command is for customer {command.customer_id!r} but its context was built "
            f"for customer {context.customer_id!r}; build the context from the customer the "
            "command names"
        )
    if state.exists and (command.customer_id, command.definition_id) != (
        state.customer_id,
        state.definition_id,
    ):
        raise DefinitionMismatchError(
            f"the command is for definition {command.definition_id!r} of customer "
            f"{command.customer_id!r} but was decided against definition "
            f"{state.definition_id!r} of customer {state.customer_id!r}; load the definition "
            "the command names"
        )
    if isinstance(command, DraftDefinition):
        latest = state.latest
        if latest is not None:
            raise DefinitionAlreadyExistsError(
                f"definition {state.definition_id!r} of customer {state.customer_id!r} already "
                f"exists (its latest version is {latest.number}); revise it instead of "
                "drafting it again, or draft the new definition under a new id"
            )
    elif not state.exists:
        raise DefinitionNotFoundError(
            f"customer {command.customer_id!r} has no definition {command.definition_id!r}; "
            "check the definition id, or draft the definition first"
        )


def _check_drafter(by: str, by_role: Role, context: DefinitionContext, action: str) -> None:
    """ADMIN anywhere; the other roles only as a current user of the customer holding them."""
    if by_role not in DRAFTER_ROLES:
        raise NotAuthorizedError(
            f"role {by_role} cannot {action}; ask a CUSTOMER_ADMIN, FINANCE or TECHNICAL user "
            "of the customer, or an ADMIN"
        )
    if by_role is Role.ADMIN or context.users.get(by) is by_role:
        return
    raise NotAuthorizedError(
        f"user {by!r} is not a current {by_role} user of customer {context.customer_id!r}, so "
        f"cannot {action}; ask one of its CUSTOMER_ADMIN, FINANCE or TECHNICAL users, or an "
        "ADMIN"
    )


def _check_approver(field: str, user_id: str, role: Role, context: DefinitionContext) -> None:
    _check_filled(field, user_id)
    held = context.users.get(user_id)
    if held is role and not is_api_key_actor(user_id):
        return
    if is_api_key_actor(user_id):
        standing = "an API key: sign-offs are given by people"
    else:
        standing = "is not a user of it" if held is None else f"holds {held}"
    candidates = sorted(
        user
        for user, user_role in context.users.items()
        if user_role is role and not is_api_key_actor(user)
    )
    if candidates:
        listed = ", ".join(candidates[:10]) + (", ..." if len(candidates) > 10 else "")
        remedy = f"name a user who holds {role}: {listed}"
    else:
        remedy = f"no user holds {role} yet, so ask a CUSTOMER_ADMIN to give the role first"
    raise InvalidApproverError(
        f"{field} {user_id!r} is not a current {role} user of customer "
        f"{context.customer_id!r} ({standing}); {remedy}"
    )


def _check_turn(
    command: ApproveStage | RequestChanges,
    state: DefinitionState,
    context: DefinitionContext,
    action: str,
) -> DefinitionVersion:
    """The version under approval, if the command acts on its current stage as its approver."""
    version = _known_version(state, command.version)
    running = state.under_review
    if running is None or running.number != version.number or running.stage is not command.stage:
        raise StageNotCurrentError(
            f"cannot {action} {STAGE_TITLES[command.stage]} of version {version.number}: "
            f"{_why_not_open(version, command.stage)}; {_what_is_running(state)}"
        )
    stage = command.stage
    approver = running.approvers.for_stage(stage) if running.approvers is not None else ""
    role = STAGE_ROLES[stage]
    title = f"{STAGE_TITLES[stage]} of version {version.number}"
    if command.by != approver:
        raise NotAssignedApproverError(
            f"only {approver!r}, the assigned approver of {title}, can {action} it, not "
            f"{command.by!r}; ask {approver!r} to act"
        )
    held = context.users.get(command.by)
    if held is not role:
        standing = "is no longer a user of it" if held is None else f"now holds {held}"
        raise NotAssignedApproverError(
            f"user {command.by!r}, assigned to {title}, no longer holds {role} on customer "
            f"{state.customer_id!r} ({standing}); revise the definition (which voids this "
            f"approval) and submit the new version naming a current {role} user"
        )
    if command.by_role is not role:
        raise NotAssignedApproverError(
            f"user {command.by!r} acts as {command.by_role}, but {title} needs {role}; "
            f"act with the {role} role the customer gave you"
        )
    return running


def _why_not_open(version: DefinitionVersion, stage: ApprovalStage) -> str:
    if version.status is VersionStatus.IN_REVIEW and version.stage is not None:
        if STAGES.index(stage) < STAGES.index(version.stage):
            return f"{STAGE_TITLES[stage]} of version {version.number} is already approved"
        return f"{STAGE_TITLES[version.stage]} of version {version.number} comes first"
    return f"version {version.number} is not under approval ({_STATUS_TEXT[version.status]})"


def _what_is_running(state: DefinitionState) -> str:
    running = state.under_review
    if running is not None and running.stage is not None:
        return (
            f"the current stage is {STAGE_TITLES[running.stage]} of version {running.number}, "
            f"assigned to {running.current_approver!r} ({running.current_role}), who alone "
            "can act on it now"
        )
    latest = _latest(state)
    if latest.status is VersionStatus.DRAFT:
        remedy = f"submit version {latest.number} for approval first"
    else:
        remedy = "there is nothing to approve until a new version is drafted and submitted"
    return (
        f"no approval is running for definition {state.definition_id!r} (its latest version, "
        f"{latest.number}, is {latest.status}); {remedy}"
    )


_STATUS_TEXT: Final[dict[VersionStatus, str]] = {
    VersionStatus.DRAFT: "it is a draft",
    VersionStatus.IN_REVIEW: "it is under approval",
    VersionStatus.APPROVED: "it is approved and in force",
    VersionStatus.SUPERSEDED: "it was approved, then superseded by a later version",
    VersionStatus.VOIDED: "its approval was voided when a later version was drafted",
    VersionStatus.REPLACED: "a later version replaced it before it was submitted again",
}


# --- content ------------------------------------------------------------------------------------


def _content(
    name: str,
    metrics: Sequence[tuple[str, str]],
    formula: str,
    pricing: PricingInput,
    context: DefinitionContext,
) -> DefinitionContent:
    """The content as stored, after every check against the context."""
    _check_text("name", name, MAX_NAME_LENGTH)
    checked = _metrics(metrics, context)
    terms = _pricing(pricing, context)
    names = frozenset(metric.name for metric in checked)
    try:
        validate(parse_formula(formula), names, names & context.baselines)
    except FormulaError as error:
        raise InvalidFormulaError(f"formula: {error.message}", error.position) from error
    return DefinitionContent(name=name, metrics=checked, formula=formula, pricing=terms)


def _metrics(
    metrics: Sequence[tuple[str, str]], context: DefinitionContext
) -> tuple[MetricDefinition, ...]:
    if not metrics:
        raise InvalidDefinitionFieldError(
            "metrics is empty; list the metrics the formula reads, each with its unit"
        )
    if len(metrics) > MAX_METRICS:
        raise InvalidDefinitionFieldError(
            f"metrics lists {len(metrics)} metrics; a definition can use at most {MAX_METRICS}, "
            "so split the value into several definitions"
        )
    seen: set[str] = set()
    for name, unit in metrics:
        if not NAME_PATTERN.fullmatch(name):
            raise InvalidDefinitionFieldError(
                f"metric name {_quoted(name)} is not valid; names are 1 to 63 lowercase "
                "letters, digits or '_', starting with a letter, as in the metrics step"
            )
        if name in seen:
            raise InvalidDefinitionFieldError(
                f"metric {name!r} is listed more than once; list each metric once, with its unit"
            )
        seen.add(name)
        _check_text(f"the unit of metric {name!r}", unit, MAX_UNIT_LENGTH)
        if name not in context.metrics:
            if context.metrics:
                configured = sorted(context.metrics)
                listed = ", ".join(configured[:10]) + (", ..." if len(configured) > 10 else "")
                remedy = f"use one of the metrics mapped in the setup wizard: {listed}"
            else:
                remedy = "map the customer's metrics in the setup wizard's metrics step first"
            raise UnknownMetricError(
                f"metric {name!r} is not configured for customer {context.customer_id!r}; {remedy}"
            )
    return tuple(
        MetricDefinition(name=name, unit=unit) for name, unit in sorted(metrics, key=_first)
    )


def _first(pair: tuple[str, str]) -> str:
    return pair[0]


def _pricing(pricing: PricingInput, context: DefinitionContext) -> PricingTerms:
    text = pricing.share_percent
    shape = _SHARE_TEXT.fullmatch(text)
    if shape is None:
        raise InvalidPricingTermsError(
            f"share_percent {_quoted(text)} is not a plain decimal number; write the "
            "percentage with digits and at most one '.', as in 35.5 for 35.5 %"
        )
    places = len(shape.group(1) or "")
    if places > SHARE_PLACES:
        raise InvalidPricingTermsError(
            f"share_percent {_quoted(text)} has {places} decimal places; round it to at most "
            f"{SHARE_PLACES}, as in 35.1234"
        )
    share = Decimal(text)
    if not _ZERO < share <= _HUNDRED:
        raise InvalidPricingTermsError(
            f"share_percent {_quoted(text)} is out of range; the share of value must be more "
            "than 0 and at most 100 (percent)"
        )
    floor, cap = pricing.floor_minor_units, pricing.cap_minor_units
    for field, amount in (("floor_minor_units", floor), ("cap_minor_units", cap)):
        if amount is not None and not 0 <= amount <= MAX_MINOR_UNITS:
            raise InvalidPricingTermsError(
                f"{field} is {amount}; give a whole number of the currency's minor units "
                f"(cents for EUR) from 0 to {MAX_MINOR_UNITS}, or leave it out"
            )
    if floor is not None and cap is not None and floor > cap:
        raise InvalidPricingTermsError(
            f"floor_minor_units ({floor}) is above cap_minor_units ({cap}); the floor must not "
            "exceed the cap, so lower the floor or raise the cap"
        )
    if pricing.currency != context.currency:
        raise CurrencyMismatchError(
            f"the pricing currency {_quoted(pricing.currency)} is not the billing currency of "
            f"customer {context.customer_id!r}, {context.currency}; state the terms in "
            f"{context.currency}"
        )
    return PricingTerms(
        share_percent=format(share.normalize(context=decimal_context()), "f"),
        floor_minor_units=floor,
        cap_minor_units=cap,
        currency=pricing.currency,
    )


def _changed_terms(before: PricingTerms, after: PricingTerms) -> list[str]:
    """The names of the pricing terms that differ, in the order the terms are listed."""
    return [
        field.name
        for field in msgspec.structs.fields(PricingTerms)
        if getattr(before, field.name) != getattr(after, field.name)
    ]


def _check_still_valid(version: DefinitionVersion, context: DefinitionContext, action: str) -> None:
    """A stored version against today's context: the configuration may have changed."""
    content = version.content
    try:
        _content(
            content.name,
            [(metric.name, metric.unit) for metric in content.metrics],
            content.formula,
            PricingInput(
                share_percent=content.pricing.share_percent,
                floor_minor_units=content.pricing.floor_minor_units,
                cap_minor_units=content.pricing.cap_minor_units,
                currency=content.pricing.currency,
            ),
            context,
        )
    except DefinitionError as error:
        message = (
            f"version {version.number} can no longer be {action}, because the customer's "
            f"configuration changed since it was drafted: {error.message}"
        )
        if isinstance(error, InvalidFormulaError):
            raise InvalidFormulaError(message, error.position) from error
        raise type(error)(message) from error


# --- small checks ---------------------------------------------------------------------------------


def _latest(state: DefinitionState) -> DefinitionVersion:
    latest = state.latest
    if latest is None:  # _check_scope refuses commands on a definition with no version
        raise DefinitionNotFoundError(
            f"definition {state.definition_id!r} has no version; draft it first"
        )
    return latest


def _known_version(state: DefinitionState, number: int) -> DefinitionVersion:
    version = state.version(number)
    if version is None:
        raise UnknownVersionError(
            f"definition {state.definition_id!r} has no version {number}; its versions are 1 "
            f"to {len(state.versions)}, so check the version number"
        )
    return version


def _check_filled(field: str, value: str) -> None:
    if not value.strip():
        raise InvalidDefinitionFieldError(f"{field} must not be blank; fill it in")


def _check_sealed(field: str, value: str, limit: int) -> None:
    """Sealed text is opaque: only its presence and its length are checked, never its content."""
    _check_filled(field, value)
    if len(value) > limit:
        raise InvalidDefinitionFieldError(
            f"{field} is {len(value)} characters long, more than the {limit} allowed; keep the "
            f"text to {MAX_REASON_LENGTH} characters before it is sealed"
        )


def _check_text(field: str, value: str, limit: int) -> None:
    _check_filled(field, value)
    if len(value) > limit:
        raise InvalidDefinitionFieldError(
            f"{field} is {len(value)} characters long; keep it to {limit} characters"
        )
    if not value.isprintable():
        raise InvalidDefinitionFieldError(
            f"{field} contains line breaks, tabs or other control characters; write it on one line"
        )


def _quoted(text: str) -> str:
    """Untrusted text for a message, cut short."""
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _with_version(state: DefinitionState, number: int, **changes: object) -> DefinitionState:
    versions = list(state.versions)
    versions[number - 1] = msgspec.structs.replace(versions[number - 1], **changes)
    return msgspec.structs.replace(state, versions=tuple(versions))
