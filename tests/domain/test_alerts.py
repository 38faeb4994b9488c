"""A customer's alerts: raised, acknowledged, resolved, and the critical ones that block going
live.

Given/when/then: the given events are evolved from the initial state, the command decided
against the customer's team, and the events or the refusal (with its exact message) checked.
Hypothesis drives random command sequences through a state machine: nothing but a DomainError
escapes, replaying the ledger gives the same state, every event round-trips through JSON,
statuses only move forward, a retried raise is recognised, and `open_critical` agrees with a
plain model of the alerts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import event as hypothesis_event
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from domain import DomainError
from domain.alerts import (
    COMMAND_DECODER,
    EVENT_DECODER,
    AcknowledgeAlert,
    Alert,
    AlertAcknowledged,
    AlertAlreadyAcknowledgedError,
    AlertAlreadyResolvedError,
    AlertError,
    AlertIdTakenError,
    AlertRaised,
    AlertResolved,
    AlertSeverity,
    AlertStatus,
    Command,
    CustomerAlerts,
    CustomerMismatchError,
    CustomerTeam,
    DuplicateAlertError,
    Event,
    InvalidAlertFieldError,
    NotAuthorizedError,
    RaiseAlert,
    ResolveAlert,
    Role,
    UnknownAlertError,
    decide,
    evolve,
    initial_state,
)

replace = msgspec.structs.replace

CUSTOMER = "cust-1"
STAFF = "staff-1"
AT = datetime(2025, 5, 1, 9, 0, tzinfo=UTC)
LATER = AT + timedelta(hours=2)
LATEST = AT + timedelta(days=1)

TEAM = CustomerTeam(
    customer_id=CUSTOMER,
    user_roles={"alice": Role.CUSTOMER_ADMIN, "bob": Role.FINANCE, "tina": Role.TECHNICAL},
)
EVIDENCE = {"metric": "revenue", "measured": "80.00", "expected": "100.00"}

# Tina, the customer's TECHNICAL user, acts in the commands below unless a test says otherwise.
RAISE = RaiseAlert(
    customer_id=CUSTOMER,
    alert_id="a-1",
    kind="calculation_anomaly",
    severity=AlertSeverity.CRITICAL,
    summary="revenue 20% below the customer's figure",
    evidence=EVIDENCE,
    source_reference="calculation:value:2025-04",
    at=AT,
    by="tina",
    by_role=Role.TECHNICAL,
)
RAISED = AlertRaised(
    customer_id=CUSTOMER,
    alert_id="a-1",
    kind="calculation_anomaly",
    severity=AlertSeverity.CRITICAL,
    summary="revenue 20% below the customer's figure",
    evidence={"expected": "100.00", "measured": "80.00", "metric": "revenue"},
    source_reference="calculation:value:2025-04",
    raised_at=AT,
    raised_by="tina",
    raised_by_role=Role.TECHNICAL,
)
WARNING_RAISED = replace(
    RAISED, alert_id="a-2", kind="data_source_error", severity=AlertSeverity.WARNING
)
ACKNOWLEDGE = AcknowledgeAlert(
    customer_id=CUSTOMER, alert_id="a-1", at=LATER, by="alice", by_role=Role.CUSTOMER_ADMIN
)
ACKNOWLEDGED = AlertAcknowledged(
    customer_id=CUSTOMER,
    alert_id="a-1",
    acknowledged_at=LATER,
    acknowledged_by="alice",
    acknowledged_by_role=Role.CUSTOMER_ADMIN,
)
RESOLVE = ResolveAlert(
    customer_id=CUSTOMER,
    alert_id="a-1",
    note_sealed="pii:v1:sealed-note",
    at=LATEST,
    by=STAFF,
    by_role=Role.ADMIN,
)
RESOLVED = AlertResolved(
    customer_id=CUSTOMER,
    alert_id="a-1",
    previous_status=AlertStatus.ACKNOWLEDGED,
    note_sealed="pii:v1:sealed-note",
    resolved_at=LATEST,
    resolved_by=STAFF,
    resolved_by_role=Role.ADMIN,
)
ALL_EVENTS: list[Event] = [RAISED, ACKNOWLEDGED, RESOLVED]


def state_after(events: tuple[Event, ...] | list[Event]) -> CustomerAlerts:
    state = initial_state()
    for event in events:
        state = evolve(state, event)
    return state


def then(given: tuple[Event, ...], when: Command, team: CustomerTeam = TEAM) -> list[Event]:
    return decide(when, state_after(given), team)


def refusal(
    given: tuple[Event, ...], when: Command, error: type[AlertError], team: CustomerTeam = TEAM
) -> str:
    """The message of the refusal, after checking its type."""
    with pytest.raises(error) as raised:
        then(given, when, team)
    assert type(raised.value) is error
    assert raised.value.message == str(raised.value)
    return raised.value.message


# Raising.


def test_no_alert_at_first() -> None:
    state = initial_state()
    assert (state.alerts, state.unresolved(), state.open_critical()) == ({}, (), ())


def test_raise_records_the_alert_with_its_evidence_sorted() -> None:
    assert then((), RAISE) == [RAISED]
    encoded = msgspec.json.encode(RAISED)
    assert b'"evidence":{"expected":"100.00","measured":"80.00","metric":"revenue"}' in encoded
    alert = state_after([RAISED]).alerts["a-1"]
    assert alert == Alert(
        alert_id="a-1",
        kind="calculation_anomaly",
        severity=AlertSeverity.CRITICAL,
        summary="revenue 20% below the customer's figure",
        evidence=EVIDENCE,
        source_reference="calculation:value:2025-04",
        raised_at=AT,
        raised_by="tina",
        raised_by_role=Role.TECHNICAL,
    )
    assert alert.status is AlertStatus.OPEN


def test_the_source_reference_is_optional() -> None:
    [event] = then((), replace(RAISE, source_reference=None))
    assert isinstance(event, AlertRaised)
    assert event.source_reference is None


@pytest.mark.parametrize(
    ("by", "role"),
    [
        ("alice", Role.CUSTOMER_ADMIN),
        ("tina", Role.TECHNICAL),
        (STAFF, Role.ADMIN),
        ("system:disputes", Role.ADMIN),
        ("system:anomaly-check_2", Role.ADMIN),
    ],
)
def test_who_may_raise_an_alert(by: str, role: Role) -> None:
    [event] = then((), replace(RAISE, by=by, by_role=role))
    assert isinstance(event, AlertRaised)
    assert (event.raised_by, event.raised_by_role) == (by, role)


@pytest.mark.parametrize(
    ("command", "given", "action"),
    [
        (RAISE, (), "raise alerts"),
        (ACKNOWLEDGE, (RAISED,), "acknowledge alerts"),
        (RESOLVE, (RAISED,), "resolve alerts"),
    ],
)
def test_finance_cannot_handle_alerts(
    command: Command, given: tuple[Event, ...], action: str
) -> None:
    command = replace(command, by="bob", by_role=Role.FINANCE)
    assert refusal(given, command, NotAuthorizedError) == (
        f"role FINANCE cannot {action}; ask a CUSTOMER_ADMIN or TECHNICAL user of the customer, "
        "or an ADMIN"
    )


@pytest.mark.parametrize(
    ("by", "role"),
    [("mallory", Role.TECHNICAL), ("tina", Role.CUSTOMER_ADMIN), ("bob", Role.TECHNICAL)],
)
@pytest.mark.parametrize(
    ("command", "given", "action"),
    [
        (RAISE, (), "raise alerts"),
        (ACKNOWLEDGE, (RAISED,), "acknowledge alerts"),
        (RESOLVE, (RAISED,), "resolve alerts"),
    ],
)
def test_a_customer_role_must_be_held_on_this_customer_now(
    by: str, role: Role, command: Command, given: tuple[Event, ...], action: str
) -> None:
    # mallory is no user here; tina is TECHNICAL, not CUSTOMER_ADMIN; bob is FINANCE.
    command = replace(command, by=by, by_role=role)
    assert refusal(given, command, NotAuthorizedError) == (
        f"user {by!r} is not a {role} of customer 'cust-1', so cannot {action}; ask one of its "
        "CUSTOMER_ADMIN or TECHNICAL users, or an ADMIN"
    )


def test_the_system_acts_only_as_admin() -> None:
    command = replace(RAISE, by="system:disputes", by_role=Role.TECHNICAL)
    assert refusal((), command, NotAuthorizedError) == (
        "actor 'system:disputes' is the system, which acts only as ADMIN, not TECHNICAL; "
        "stamp system commands with by_role ADMIN"
    )


@pytest.mark.parametrize("by", ["system:", "system:Disputes", "system:a b", "system:" + "x" * 41])
def test_a_system_actor_names_its_component(by: str) -> None:
    command = replace(RAISE, by=by, by_role=Role.ADMIN)
    message = refusal((), command, InvalidAlertFieldError)
    assert message.startswith("system actor ")
    assert message.endswith(
        "must be 'system:' and a component name (a lowercase letter, then up to 39 lowercase "
        "letters, digits, '_' or '-'), such as system:disputes"
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"alert_id": ""},
            "alert_id '' must be 1 to 64 letters, digits, '_', '.', ':' or '-', starting with a "
            "letter or digit; choose another id",
        ),
        (
            {"alert_id": "-a"},
            "alert_id '-a' must be 1 to 64 letters, digits, '_', '.', ':' or '-', starting with "
            "a letter or digit; choose another id",
        ),
        (
            {"kind": "Calculation anomaly"},
            "kind 'Calculation anomaly' is not a machine word; use a lowercase letter, then up "
            "to 39 lowercase letters, digits or '_', such as calculation_anomaly",
        ),
        (
            {"severity": "fatal"},
            "severity 'fatal' is not one of info, warning, critical; choose one (only critical "
            "blocks going live)",
        ),
        ({"summary": "  "}, "summary must not be blank; fill it in"),
        (
            {"summary": "x" * 201},
            "summary is 201 characters long; keep it to 200 characters",
        ),
        (
            {"summary": "two\nlines"},
            "summary contains control characters; remove line breaks, tabs and the like",
        ),
        ({"evidence": {}}, "evidence is empty; give at least one entry, such as metric: revenue"),
        (
            {"evidence": {f"k{n}": "v" for n in range(21)}},
            "evidence has 21 entries; keep it to 20, and point at the rest with source_reference",
        ),
        (
            {"evidence": {"Metric": "revenue"}},
            "evidence key 'Metric' is not a machine word; use a lowercase letter, then up to 39 "
            "lowercase letters, digits or '_'",
        ),
        ({"evidence": {"metric": ""}}, "evidence 'metric' must not be blank; fill it in"),
        (
            {"evidence": {"metric": "x" * 501}},
            "evidence 'metric' is 501 characters long; keep it to 500 characters",
        ),
        ({"source_reference": ""}, "source_reference must not be blank; fill it in"),
        (
            {"source_reference": "x" * 201},
            "source_reference is 201 characters long; keep it to 200 characters",
        ),
    ],
)
def test_raise_refuses_a_malformed_field(changes: dict[str, object], message: str) -> None:
    assert refusal((), replace(RAISE, **changes), InvalidAlertFieldError) == message


@pytest.mark.parametrize("kind", ["accuracy_dispute", "manual", "x", "integration_failure_2"])
def test_any_machine_word_is_a_kind(kind: str) -> None:
    [event] = then((), replace(RAISE, kind=kind))
    assert isinstance(event, AlertRaised)
    assert event.kind == kind


def test_exactly_twenty_evidence_entries_are_accepted() -> None:
    evidence = {f"k{n:02}": "v" for n in range(20)}
    [event] = then((), replace(RAISE, evidence=evidence))
    assert isinstance(event, AlertRaised)
    assert list(event.evidence) == sorted(evidence)


# Retries and ids.


@pytest.mark.parametrize(
    "given", [(RAISED,), (RAISED, ACKNOWLEDGED), (RAISED, ACKNOWLEDGED, RESOLVED)]
)
def test_raising_again_with_the_same_content_is_recognised_as_a_duplicate(
    given: tuple[Event, ...],
) -> None:
    # A retry may be stamped anew, by the same service or on another node.
    retry = replace(RAISE, at=LATEST, by="system:disputes", by_role=Role.ADMIN)
    with pytest.raises(DuplicateAlertError) as raised:
        then(given, retry)
    status = state_after(given).alerts["a-1"].status
    assert raised.value.message == (
        f"alert 'a-1' was already raised at 2025-05-01T09:00:00+00:00 with this content and "
        f"is {status}; nothing more to do"
    )
    assert raised.value.alert == state_after(given).alerts["a-1"]


def test_evidence_in_another_order_is_the_same_content() -> None:
    retry = replace(RAISE, evidence=dict(reversed(list(EVIDENCE.items()))))
    with pytest.raises(DuplicateAlertError):
        then((RAISED,), retry)


@pytest.mark.parametrize(
    "changes",
    [
        {"kind": "manual"},
        {"severity": AlertSeverity.INFO},
        {"summary": "another summary"},
        {"evidence": {"metric": "revenue"}},
        {"source_reference": None},
    ],
)
def test_an_id_with_other_content_is_taken(changes: dict[str, object]) -> None:
    given = (RAISED, ACKNOWLEDGED, RESOLVED)
    assert refusal(given, replace(RAISE, **changes), AlertIdTakenError) == (
        "alert id 'a-1' already belongs to a calculation_anomaly alert raised at "
        "2025-05-01T09:00:00+00:00; alert ids are never reused, so raise this alert under a "
        "new id"
    )


# Acknowledging and resolving.


def test_acknowledge_then_resolve() -> None:
    assert then((RAISED,), ACKNOWLEDGE) == [ACKNOWLEDGED]
    acknowledged = state_after([RAISED, ACKNOWLEDGED]).alerts["a-1"]
    assert (acknowledged.status, acknowledged.acknowledged_at) == (AlertStatus.ACKNOWLEDGED, LATER)
    assert acknowledged.acknowledged_by == "alice"
    assert then((RAISED, ACKNOWLEDGED), RESOLVE) == [RESOLVED]
    resolved = state_after([RAISED, ACKNOWLEDGED, RESOLVED]).alerts["a-1"]
    assert (resolved.status, resolved.resolved_at, resolved.resolved_by) == (
        AlertStatus.RESOLVED,
        LATEST,
        STAFF,
    )
    assert resolved.resolution_note_sealed == "pii:v1:sealed-note"


def test_an_open_alert_can_be_resolved_directly() -> None:
    assert then((RAISED,), RESOLVE) == [replace(RESOLVED, previous_status=AlertStatus.OPEN)]


def test_resolved_alerts_stay() -> None:
    state = state_after([RAISED, WARNING_RAISED, RESOLVED])
    assert list(state.alerts) == ["a-1", "a-2"]
    assert [alert.alert_id for alert in state.unresolved()] == ["a-2"]


@pytest.mark.parametrize("command", [ACKNOWLEDGE, RESOLVE], ids=["acknowledge", "resolve"])
def test_unknown_alerts_are_refused(command: Command) -> None:
    assert refusal((RAISED,), replace(command, alert_id="a-9"), UnknownAlertError) == (
        "customer 'cust-1' has no alert 'a-9'; check the alert id in the customer's list of alerts"
    )


def test_acknowledging_twice_is_refused() -> None:
    assert refusal((RAISED, ACKNOWLEDGED), ACKNOWLEDGE, AlertAlreadyAcknowledgedError) == (
        "alert 'a-1' was already acknowledged at 2025-05-01T11:00:00+00:00 by 'alice'; resolve "
        "it with a note once it is dealt with"
    )


def test_a_resolved_alert_cannot_be_acknowledged() -> None:
    given = (RAISED, replace(RESOLVED, previous_status=AlertStatus.OPEN))
    assert refusal(given, replace(ACKNOWLEDGE, at=LATEST), AlertAlreadyResolvedError) == (
        "alert 'a-1' was resolved at 2025-05-02T09:00:00+00:00 by 'staff-1', so it cannot be "
        "acknowledged; if the problem is back, raise a new alert under a new id"
    )


def test_resolving_twice_is_refused() -> None:
    assert refusal((RAISED, ACKNOWLEDGED, RESOLVED), RESOLVE, AlertAlreadyResolvedError) == (
        "alert 'a-1' was already resolved at 2025-05-02T09:00:00+00:00 by 'staff-1'; if the "
        "problem is back, raise a new alert under a new id"
    )


def test_resolving_needs_a_note() -> None:
    assert refusal((RAISED,), replace(RESOLVE, note_sealed=" "), InvalidAlertFieldError) == (
        "note_sealed must not be blank; say how the alert was dealt with"
    )


@pytest.mark.parametrize(
    ("command", "given", "last"),
    [
        (replace(ACKNOWLEDGE, at=AT - timedelta(seconds=1)), (RAISED,), AT),
        (replace(RESOLVE, at=AT - timedelta(seconds=1)), (RAISED,), AT),
        (replace(RESOLVE, at=LATER - timedelta(seconds=1)), (RAISED, ACKNOWLEDGED), LATER),
    ],
)
def test_changes_are_not_dated_before_the_alerts_last_change(
    command: AcknowledgeAlert | ResolveAlert, given: tuple[Event, ...], last: datetime
) -> None:
    assert refusal(given, command, InvalidAlertFieldError) == (
        f"at {command.at.isoformat()} is before alert 'a-1' last changed at "
        f"{last.isoformat()}; stamp the command with the current time"
    )


# What blocks going live.


def test_open_and_acknowledged_critical_alerts_block_going_live_until_resolved() -> None:
    info = replace(RAISED, alert_id="a-3", severity=AlertSeverity.INFO)
    second = replace(RAISED, alert_id="a-4", kind="manual")
    state = state_after([RAISED, WARNING_RAISED, info, second, ACKNOWLEDGED])
    assert [(alert.alert_id, alert.kind) for alert in state.open_critical()] == [
        ("a-1", "calculation_anomaly"),
        ("a-4", "manual"),
    ]
    resolved = state_after([RAISED, WARNING_RAISED, info, second, ACKNOWLEDGED, RESOLVED])
    assert [alert.alert_id for alert in resolved.open_critical()] == ["a-4"]


# The stamp and the customer.


def test_a_naive_time_is_refused() -> None:
    assert refusal((), replace(RAISE, at=AT.replace(tzinfo=None)), InvalidAlertFieldError) == (
        "at must be a timezone-aware time; stamp commands with the time in UTC"
    )


def test_a_blank_actor_is_refused() -> None:
    assert refusal((), replace(RAISE, by=""), InvalidAlertFieldError) == (
        "by must not be blank; stamp commands with the user's id"
    )


def test_a_blank_customer_is_refused() -> None:
    assert refusal((), replace(RAISE, customer_id=" "), InvalidAlertFieldError) == (
        "customer_id must not be blank; name the customer"
    )


@pytest.mark.parametrize("command", [RAISE, ACKNOWLEDGE, RESOLVE], ids=lambda c: type(c).__name__)
def test_a_command_for_another_customer_than_the_stream_is_refused(command: Command) -> None:
    command = replace(command, customer_id="cust-2")
    team = replace(TEAM, customer_id="cust-2")
    assert refusal((RAISED,), command, CustomerMismatchError, team) == (
        "the command is for customer 'cust-2' but was decided against the alerts of customer "
        "'cust-1'; load the alerts of the customer the command names"
    )


def test_a_team_of_another_customer_is_refused() -> None:
    team = replace(TEAM, customer_id="cust-2")
    assert refusal((), RAISE, CustomerMismatchError, team) == (
        "the command is for customer 'cust-1' but the team it was decided against belongs to "
        "customer 'cust-2'; read the users of the customer the command names"
    )


# Events and commands as stored.

EXPECTED_TAGS = {
    AlertRaised: "AlertRaised",
    AlertAcknowledged: "AlertAcknowledged",
    AlertResolved: "AlertResolved",
}


def test_every_event_round_trips_through_json_by_its_stable_tag() -> None:
    assert {type(event) for event in ALL_EVENTS} == set(EXPECTED_TAGS)
    for event in ALL_EVENTS:
        encoded = msgspec.json.encode(event)
        assert msgspec.json.decode(encoded)["type"] == EXPECTED_TAGS[type(event)]
        assert EVENT_DECODER.decode(encoded) == event


def test_severities_and_statuses_are_stored_in_lowercase() -> None:
    assert msgspec.json.decode(msgspec.json.encode(RAISED))["severity"] == "critical"
    assert msgspec.json.decode(msgspec.json.encode(RESOLVED))["previous_status"] == "acknowledged"


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


def test_commands_refuse_unknown_fields_and_unknown_severities() -> None:
    for command in (RAISE, ACKNOWLEDGE, RESOLVE):
        encoded = msgspec.json.encode(command)
        assert COMMAND_DECODER.decode(encoded) == command
        with pytest.raises(msgspec.ValidationError, match="unknown field"):
            COMMAND_DECODER.decode(encoded[:-1] + b', "urgent": true}')
    encoded = msgspec.json.encode(RAISE).replace(b'"critical"', b'"fatal"')
    with pytest.raises(msgspec.ValidationError, match="Invalid enum value 'fatal'"):
        COMMAND_DECODER.decode(encoded)


# Invariants over random command sequences.

ALERT_IDS = st.sampled_from(["a-1", "a-1", "a-2", "a-2", "a-3", "-bad"])
ACTORS = st.sampled_from(
    [
        ("tina", Role.TECHNICAL),
        ("tina", Role.TECHNICAL),
        ("alice", Role.CUSTOMER_ADMIN),
        ("alice", Role.CUSTOMER_ADMIN),
        (STAFF, Role.ADMIN),
        ("system:disputes", Role.ADMIN),
        ("system:disputes", Role.ADMIN),
        ("bob", Role.FINANCE),
        ("mallory", Role.TECHNICAL),
        ("system:disputes", Role.TECHNICAL),
    ]
)
STEPS = st.sampled_from([timedelta(0), timedelta(hours=1), timedelta(days=1), -timedelta(hours=1)])
_ORDER = {AlertStatus.OPEN: 0, AlertStatus.ACKNOWLEDGED: 1, AlertStatus.RESOLVED: 2}


class AlertsMachine(RuleBasedStateMachine):
    """Any sequence of commands: refusals are DomainErrors, and the ledger stays coherent."""

    def __init__(self) -> None:
        super().__init__()
        self.state = initial_state()
        self.ledger: list[Event] = []
        self.clock = AT
        self.seen: dict[str, AlertStatus] = {}

    def tick(self, step: timedelta) -> datetime:
        self.clock += step
        return self.clock

    @rule(
        alert_id=ALERT_IDS,
        actor=ACTORS,
        step=STEPS,
        kind=st.sampled_from(["manual", "manual", "calculation_anomaly", "Bad kind"]),
        severity=st.sampled_from(AlertSeverity),
        evidence=st.sampled_from([EVIDENCE, EVIDENCE, {"metric": "revenue"}, {}]),
    )
    def raise_alert(
        self,
        alert_id: str,
        actor: tuple[str, Role],
        step: timedelta,
        kind: str,
        severity: AlertSeverity,
        evidence: dict[str, str],
    ) -> None:
        command = RaiseAlert(
            customer_id=CUSTOMER,
            alert_id=alert_id,
            kind=kind,
            severity=severity,
            summary="something is off",
            evidence=evidence,
            at=self.tick(step),
            by=actor[0],
            by_role=actor[1],
        )
        existing = self.state.alerts.get(alert_id)
        same = existing is not None and (
            existing.kind,
            existing.severity,
            dict(existing.evidence),
        ) == (kind, severity, evidence)
        refused = self.record(command)
        if same and command.by_role == Role.ADMIN:
            # Authorised retries of an existing alert are always recognised as duplicates.
            assert isinstance(refused, DuplicateAlertError)
        if isinstance(refused, DuplicateAlertError):
            assert same

    @rule(alert_id=ALERT_IDS, actor=ACTORS, step=STEPS)
    def acknowledge(self, alert_id: str, actor: tuple[str, Role], step: timedelta) -> None:
        command = AcknowledgeAlert(
            customer_id=CUSTOMER,
            alert_id=alert_id,
            at=self.tick(step),
            by=actor[0],
            by_role=actor[1],
        )
        self.record(command)

    @rule(alert_id=ALERT_IDS, actor=ACTORS, step=STEPS, note=st.sampled_from(["pii:v1:n", ""]))
    def resolve(self, alert_id: str, actor: tuple[str, Role], step: timedelta, note: str) -> None:
        command = ResolveAlert(
            customer_id=CUSTOMER,
            alert_id=alert_id,
            note_sealed=note,
            at=self.tick(step),
            by=actor[0],
            by_role=actor[1],
        )
        self.record(command)

    @rule(alert_id=ALERT_IDS, step=STEPS)
    def resolve_as_staff(self, alert_id: str, step: timedelta) -> None:
        command = ResolveAlert(
            customer_id=CUSTOMER,
            alert_id=alert_id,
            note_sealed="pii:v1:done",
            at=self.tick(step),
            by=STAFF,
            by_role=Role.ADMIN,
        )
        self.record(command)

    def record(self, command: Command) -> DomainError | None:
        refused: DomainError | None = None
        try:
            events = decide(command, self.state, TEAM)
        except DomainError as error:
            refused, events = error, []
        if refused is not None:
            hypothesis_event(f"refused: {type(refused).__name__}")
            assert isinstance(refused, AlertError)
            assert refused.message
            return refused
        hypothesis_event(f"decided: {type(command).__name__}")
        assert decide(command, self.state, TEAM) == events
        assert len(events) == 1
        for event in events:
            self.state = evolve(self.state, event)
            self.ledger.append(event)
        return None

    @invariant()
    def replaying_the_ledger_gives_the_same_state(self) -> None:
        assert state_after(self.ledger) == self.state

    @invariant()
    def the_ledger_round_trips_through_json(self) -> None:
        decoded = [EVENT_DECODER.decode(msgspec.json.encode(event)) for event in self.ledger]
        assert decoded == self.ledger
        assert state_after(decoded) == self.state

    @invariant()
    def alerts_are_never_lost_and_only_move_forward(self) -> None:
        assert set(self.seen) <= set(self.state.alerts)
        for alert_id, alert in self.state.alerts.items():
            assert _ORDER[alert.status] >= _ORDER[self.seen.get(alert_id, AlertStatus.OPEN)]
            self.seen[alert_id] = alert.status
            assert alert.raised_at <= alert.last_changed_at
        raised = [event.alert_id for event in self.ledger if isinstance(event, AlertRaised)]
        assert len(raised) == len(set(raised))

    @invariant()
    def open_critical_alerts_are_the_unresolved_critical_ones(self) -> None:
        status: dict[str, AlertStatus] = {}
        critical: set[str] = set()
        for event in self.ledger:
            if isinstance(event, AlertRaised):
                status[event.alert_id] = AlertStatus.OPEN
                if event.severity is AlertSeverity.CRITICAL:
                    critical.add(event.alert_id)
            elif isinstance(event, AlertAcknowledged):
                status[event.alert_id] = AlertStatus.ACKNOWLEDGED
            else:
                status[event.alert_id] = AlertStatus.RESOLVED
        expected = [
            alert_id
            for alert_id in status
            if alert_id in critical and status[alert_id] is not AlertStatus.RESOLVED
        ]
        assert [alert.alert_id for alert in self.state.open_critical()] == expected


AlertsMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=25, deadline=None)
TestAlerts = AlertsMachine.TestCase
