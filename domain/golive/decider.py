"""The billing switch's rules: `decide` what a command makes happen, `evolve` the state.

Both are pure: the time, the actor and every id come on the command, and the facts from other
streams come in the context the command layer builds from freshly loaded streams.

Who may do what:
- ADMIN is vendor staff and may act on any customer; its role comes from the caller's token.
- Going live, pausing and resuming billing: ADMIN, or a CUSTOMER_ADMIN who is one of this
  customer's current users holding CUSTOMER_ADMIN now (checked against the context's
  `user_roles`, so a token issued before a demotion or revocation no longer works).
- Setting the accuracy threshold: ADMIN alone.

Going live:
- Only once; `billing_starts_at` must be timezone-aware and not before the command's `at`.
- Four pre-flight checks, all evaluated every time, in `PREFLIGHT_CHECKS` order: the setup is
  complete; at least one approved value definition is in force; the measured accuracy is at
  least the customer's threshold (85.00 unless vendor staff set it higher, never lower; the
  comparison is exact, nothing is rounded); no critical alert is open (an acknowledged
  critical alert still counts, only resolving it clears it).
- Any failed check refuses the command with one `PreflightFailedError` that lists every failed
  check and what to do; nothing is recorded. When all pass, `WentLive` records every check
  with its reason, the definitions in force, the accuracy, the threshold and the billing start.

Pausing and resuming:
- Only after going live; pausing paused billing and resuming running billing are refused.
- A reason is required (sealed: the domain only checks it is not blank), and the command's
  `at` may not be before the last go-live, pause or resumption, so the pause history stays in
  order for `GoLiveState.billing_active_at`.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Final, assert_never

import msgspec

from domain.golive.commands import (
    Command,
    GoLive,
    GoLivePreflight,
    PauseBilling,
    ResumeBilling,
    SetAccuracyThreshold,
)
from domain.golive.errors import (
    AlreadyLiveError,
    BillingAlreadyPausedError,
    BillingNotPausedError,
    CustomerMismatchError,
    InvalidGoLiveFieldError,
    InvalidThresholdError,
    NotAuthorizedError,
    NotLiveError,
    PreflightFailedError,
    ThresholdUnchangedError,
)
from domain.golive.events import (
    AccuracyThresholdSet,
    BillingPaused,
    BillingResumed,
    Event,
    PreflightCheck,
    WentLive,
)
from domain.golive.state import BillingPause, GoLiveState
from domain.roles import CustomerTeam, Role

MIN_THRESHOLD: Final = Decimal("85")
"""The lowest accuracy threshold: the issue sets 85% as the floor for every customer."""
MAX_THRESHOLD: Final = Decimal("100")
THRESHOLD_PLACES: Final = Decimal("0.01")
"""Thresholds have at most 2 decimal places and are stored with exactly 2."""
MAX_LISTED_ALERTS: Final = 10
"""Open critical alerts named one by one in a refusal; the rest are counted."""

_PERCENTAGE: Final = re.compile(r"\d{1,3}(?:\.\d{1,10})?")
"""A measured accuracy as setup and feedback record it: a plain unsigned decimal, e.g. 97.50."""


def decide(
    command: Command, state: GoLiveState, context: CustomerTeam | GoLivePreflight
) -> list[Event]:
    """The events the command makes happen, or a `GoLiveError` saying why it cannot.

    Going live needs a `GoLivePreflight`; the other commands need only the customer's team
    (a `GoLivePreflight` carries it too). Passing a `CustomerTeam` with `GoLive` is a bug in
    the caller, raised as `TypeError`, not a business refusal.
    """
    _check_stamp(command.at, command.by)
    _check_customer(command.customer_id, state, context)
    match command:
        case GoLive():
            if not isinstance(context, GoLivePreflight):
                raise TypeError(
                    "going live is decided against a GoLivePreflight read from the streams, "
                    f"not a {type(context).__name__}"
                )
            return _go_live(command, state, context)
        case PauseBilling():
            return _pause(command, state, context)
        case ResumeBilling():
            return _resume(command, state, context)
        case SetAccuracyThreshold():
            return _set_threshold(command, state)
        case _:
            assert_never(command)


def evolve(state: GoLiveState, event: Event) -> GoLiveState:
    """The state after the event; events are facts already decided, so nothing is refused."""
    match event:
        case WentLive():
            return msgspec.structs.replace(state, customer_id=event.customer_id, receipt=event)
        case BillingPaused():
            pause = BillingPause(
                paused_at=event.paused_at,
                reason_sealed=event.reason_sealed,
                paused_by=event.paused_by,
            )
            return msgspec.structs.replace(
                state, customer_id=event.customer_id, pauses=(*state.pauses, pause)
            )
        case BillingResumed():
            resumed = msgspec.structs.replace(
                state.pauses[-1],
                resumed_at=event.resumed_at,
                resume_reason_sealed=event.reason_sealed,
                resumed_by=event.resumed_by,
            )
            return msgspec.structs.replace(
                state, customer_id=event.customer_id, pauses=(*state.pauses[:-1], resumed)
            )
        case AccuracyThresholdSet():
            return msgspec.structs.replace(
                state, customer_id=event.customer_id, accuracy_threshold=event.threshold
            )
        case _:
            assert_never(event)


def preflight_checks(context: GoLivePreflight, threshold: Decimal) -> tuple[PreflightCheck, ...]:
    """Every pre-flight check's result and reason, in `PREFLIGHT_CHECKS` order.

    Public so the command layer can show the checks before anyone asks to go live; `decide`
    calls it too, so the preview and the decision cannot disagree.
    """
    return (
        _setup_check(context),
        _definition_check(context),
        _accuracy_check(context, threshold),
        _alerts_check(context),
    )


def _go_live(command: GoLive, state: GoLiveState, context: GoLivePreflight) -> list[Event]:
    _check_billing_admin(command.by, command.by_role, context, "go live")
    if state.receipt is not None:
        receipt = state.receipt
        raise AlreadyLiveError(
            f"customer {command.customer_id!r} already went live at "
            f"{receipt.went_live_at.isoformat()}, billed from "
            f"{receipt.billing_starts_at.isoformat()}; it cannot go live twice, so pause or "
            "resume billing instead"
        )
    starts = command.billing_starts_at
    if starts.utcoffset() is None:
        raise InvalidGoLiveFieldError(
            "billing_starts_at must be a timezone-aware time; give it in UTC"
        )
    if starts < command.at:
        raise InvalidGoLiveFieldError(
            f"billing_starts_at {starts.isoformat()} is before the command's time "
            f"{command.at.isoformat()}; billing cannot start in the past, so give a start at "
            "or after it"
        )
    checks = preflight_checks(context, state.threshold)
    failed = [check for check in checks if not check.passed]
    accuracy = _percentage(context.measured_accuracy)
    # A well-formed accuracy is implied by a passed accuracy check; tested too for the types.
    if failed or accuracy is None:
        listed = "; ".join(f"[{check.check}] {check.reason}" for check in failed)
        raise PreflightFailedError(
            f"customer {command.customer_id!r} cannot go live, {len(failed)} of {len(checks)} "
            f"pre-flight checks failed: {listed}; nothing was recorded, so go live again once "
            "every check passes",
            checks,
        )
    return [
        WentLive(
            customer_id=command.customer_id,
            checks=checks,
            definitions_in_force=tuple(context.definitions_in_force),
            accuracy=format(accuracy, "f"),
            accuracy_threshold=state.accuracy_threshold,
            billing_starts_at=starts,
            went_live_at=command.at,
            went_live_by=command.by,
            went_live_by_role=command.by_role,
        )
    ]


def _pause(
    command: PauseBilling, state: GoLiveState, context: CustomerTeam | GoLivePreflight
) -> list[Event]:
    _check_billing_admin(command.by, command.by_role, context, "pause billing")
    _check_live(command.customer_id, state, "pause")
    pause = state.current_pause
    if pause is not None:
        raise BillingAlreadyPausedError(
            f"billing of customer {command.customer_id!r} is already paused since "
            f"{pause.paused_at.isoformat()} by {pause.paused_by!r}; resume it before pausing "
            "again"
        )
    _check_reason(command.reason_sealed)
    _check_in_order(command.at, state)
    return [
        BillingPaused(
            customer_id=command.customer_id,
            reason_sealed=command.reason_sealed,
            paused_at=command.at,
            paused_by=command.by,
            paused_by_role=command.by_role,
        )
    ]


def _resume(
    command: ResumeBilling, state: GoLiveState, context: CustomerTeam | GoLivePreflight
) -> list[Event]:
    _check_billing_admin(command.by, command.by_role, context, "resume billing")
    _check_live(command.customer_id, state, "resume")
    pause = state.current_pause
    if pause is None:
        raise BillingNotPausedError(
            f"billing of customer {command.customer_id!r} is not paused, so there is nothing "
            "to resume"
        )
    _check_reason(command.reason_sealed)
    _check_in_order(command.at, state)
    return [
        BillingResumed(
            customer_id=command.customer_id,
            reason_sealed=command.reason_sealed,
            paused_at=pause.paused_at,
            resumed_at=command.at,
            resumed_by=command.by,
            resumed_by_role=command.by_role,
        )
    ]


def _set_threshold(command: SetAccuracyThreshold, state: GoLiveState) -> list[Event]:
    if command.by_role != Role.ADMIN:
        raise NotAuthorizedError(
            "only vendor staff (ADMIN) can set the accuracy threshold, not "
            f"{command.by_role}; ask vendor support"
        )
    threshold = command.threshold
    if not isinstance(threshold, Decimal) or not threshold.is_finite():
        raise InvalidThresholdError(
            "threshold must be a finite decimal percentage; give it as a decimal string such "
            "as 90.00"
        )
    # str, not format(..., "f"): "1E+999999999" must not be written out in full.
    shown = _shortened(str(threshold))
    if not MIN_THRESHOLD <= threshold <= MAX_THRESHOLD:
        raise InvalidThresholdError(
            f"threshold {shown} is outside 85 to 100; the accuracy needed to go live is never "
            "below 85%, so give a percentage from 85 to 100"
        )
    if threshold.quantize(THRESHOLD_PLACES) != threshold:
        raise InvalidThresholdError(
            f"threshold {shown} has more than 2 decimal places; round it to 2 places, such as 90.25"
        )
    text = format(threshold.quantize(THRESHOLD_PLACES), "f")
    if text == state.accuracy_threshold:
        raise ThresholdUnchangedError(
            f"the accuracy threshold of customer {command.customer_id!r} is already {text}%; "
            "nothing to change"
        )
    return [
        AccuracyThresholdSet(
            customer_id=command.customer_id,
            threshold=text,
            previous_threshold=state.accuracy_threshold,
            set_at=command.at,
            set_by=command.by,
            set_by_role=command.by_role,
        )
    ]


def _setup_check(context: GoLivePreflight) -> PreflightCheck:
    if context.setup_complete:
        return PreflightCheck(
            check="setup_complete", passed=True, reason="all 5 setup steps are complete"
        )
    missing = context.setup_missing_step.strip() or "a setup step"
    return PreflightCheck(
        check="setup_complete",
        passed=False,
        reason=f"{missing} is not complete; finish the setup wizard from there",
    )


def _definition_check(context: GoLivePreflight) -> PreflightCheck:
    definitions = context.definitions_in_force
    if not definitions:
        return PreflightCheck(
            check="approved_definition",
            passed=False,
            reason="no approved value definition is in force; have a value definition "
            "approved first",
        )
    listed = ", ".join(
        f"{definition.definition_id!r} version {definition.version}" for definition in definitions
    )
    noun = "value definition" if len(definitions) == 1 else "value definitions"
    return PreflightCheck(
        check="approved_definition", passed=True, reason=f"approved {noun} in force: {listed}"
    )


def _accuracy_check(context: GoLivePreflight, threshold: Decimal) -> PreflightCheck:
    needed = format(threshold, "f")
    measured = context.measured_accuracy
    if measured is None:
        return PreflightCheck(
            check="accuracy",
            passed=False,
            reason="accuracy has never been measured; verify it in step 5 (testing) of the setup",
        )
    accuracy = _percentage(measured)
    if accuracy is None:
        return PreflightCheck(
            check="accuracy",
            passed=False,
            reason=f"the measured accuracy {_shortened(measured)!r} is not a percentage from "
            "0 to 100; verify accuracy again in step 5 (testing) of the setup",
        )
    shown = format(accuracy, "f")
    if accuracy >= threshold:
        return PreflightCheck(
            check="accuracy", passed=True, reason=f"accuracy {shown}% >= threshold {needed}%"
        )
    return PreflightCheck(
        check="accuracy",
        passed=False,
        reason=f"accuracy {shown}% is below the threshold {needed}%; improve the measurement "
        "and verify accuracy again in step 5 (testing) of the setup",
    )


def _alerts_check(context: GoLivePreflight) -> PreflightCheck:
    alerts = context.open_critical_alerts
    if not alerts:
        return PreflightCheck(
            check="no_critical_alerts", passed=True, reason="no critical alert is open"
        )
    listed = ", ".join(f"{alert.alert_id!r} ({alert.kind})" for alert in alerts[:MAX_LISTED_ALERTS])
    if len(alerts) > MAX_LISTED_ALERTS:
        listed += f" and {len(alerts) - MAX_LISTED_ALERTS} more"
    noun = "critical alert is" if len(alerts) == 1 else "critical alerts are"
    return PreflightCheck(
        check="no_critical_alerts",
        passed=False,
        reason=f"{len(alerts)} {noun} open: {listed}; resolve them first (an acknowledged "
        "alert still blocks going live)",
    )


def _percentage(text: str | None) -> Decimal | None:
    """A measured accuracy from 0 to 100 written as a plain decimal, or None."""
    if text is None or not _PERCENTAGE.fullmatch(text):
        return None
    value = Decimal(text)
    return value if value <= MAX_THRESHOLD else None


def _check_stamp(at: datetime, by: str) -> None:
    """The application layer's stamp: a blank actor or a naive time would corrupt the trail."""
    if at.utcoffset() is None:
        raise InvalidGoLiveFieldError(
            "at must be a timezone-aware time; stamp commands with the time in UTC"
        )
    if not by.strip():
        raise InvalidGoLiveFieldError("by must not be blank; stamp commands with the user's id")


def _check_customer(
    customer_id: str, state: GoLiveState, context: CustomerTeam | GoLivePreflight
) -> None:
    if not customer_id.strip():
        raise InvalidGoLiveFieldError("customer_id must not be blank; name the customer")
    if state.customer_id and state.customer_id != customer_id:
        raise CustomerMismatchError(
            f"the command is for customer {customer_id!r} but was decided against the billing "
            f"stream of customer {state.customer_id!r}; load the stream of the customer the "
            "command names"
        )
    if context.customer_id != customer_id:
        raise CustomerMismatchError(
            f"the command is for customer {customer_id!r} but the facts it was decided against "
            f"are for customer {context.customer_id!r}; read them for the customer the command "
            "names"
        )


def _check_billing_admin(
    by: str, by_role: Role, context: CustomerTeam | GoLivePreflight, action: str
) -> None:
    """ADMIN anywhere; CUSTOMER_ADMIN only as a current CUSTOMER_ADMIN of this customer."""
    if by_role == Role.ADMIN:
        return
    if by_role != Role.CUSTOMER_ADMIN:
        raise NotAuthorizedError(
            f"role {by_role} cannot {action}; ask a CUSTOMER_ADMIN of the customer or an ADMIN"
        )
    if context.user_roles.get(by) != Role.CUSTOMER_ADMIN:
        raise NotAuthorizedError(
            f"user {by!r} is not a CUSTOMER_ADMIN of customer {context.customer_id!r}, so "
            f"cannot {action}; ask one of its CUSTOMER_ADMINs or an ADMIN"
        )


def _check_live(customer_id: str, state: GoLiveState, action: str) -> None:
    if state.receipt is None:
        raise NotLiveError(
            f"customer {customer_id!r} has not gone live, so there is no billing to {action}; "
            "go live first"
        )


def _check_reason(reason_sealed: str) -> None:
    """Sealed text is opaque: the only check the domain may make is that it is there."""
    if not reason_sealed.strip():
        raise InvalidGoLiveFieldError(
            "reason_sealed must not be blank; say why, for the audit trail"
        )


def _check_in_order(at: datetime, state: GoLiveState) -> None:
    last = state.last_changed_at
    if last is not None and at < last:
        raise InvalidGoLiveFieldError(
            f"at {at.isoformat()} is before the billing history's last change at "
            f"{last.isoformat()}; stamp the command with the current time"
        )


def _shortened(text: str) -> str:
    """Untrusted text for a message, cut short."""
    return text if len(text) <= 40 else text[:40] + "..."
