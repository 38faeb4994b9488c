"""The setup wizard: its steps in order, the evidence each needs, and how it refuses.

Given/when/then: the given events are evolved from the initial state, the command decided,
and the events or the refusal (with its exact message) checked. Hypothesis runs random
command sequences through a state machine: nothing but a DomainError escapes, completed steps
are always a prefix of the steps, replay is deterministic, and every event round-trips
through JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import msgspec
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from domain import DomainError
from domain.setup import (
    EVENT_DECODER,
    SOURCE_KINDS,
    STEPS,
    AccuracyVerified,
    ApiIntegrationCompleted,
    BaselineEstablished,
    BaselineValue,
    Command,
    CompleteApiIntegration,
    ConnectDataSource,
    ConnectionTestFailedError,
    CredentialsNotValidatedError,
    DataSourceConnected,
    EstablishBaseline,
    Event,
    FieldMapping,
    InvalidEvidenceError,
    LaterStepsInvalidated,
    MapMetrics,
    MeasuredValue,
    MetricBaseline,
    MetricMapping,
    MetricMeasurement,
    MetricsMapped,
    SetupError,
    SetupState,
    StepOutOfOrderError,
    VerifyAccuracy,
    decide,
    evolve,
    initial_state,
    measurement_accuracy,
)

AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
BY = "user-7"
FINGERPRINT = "a" * 64
REFERENCE = "vault://kv/acme/api-key"
PERIOD_START = datetime(2025, 1, 1, tzinfo=UTC)
PERIOD_END = datetime(2025, 2, 1, tzinfo=UTC)

# --- the happy path's commands and the events that record them --------------------------------

CREDENTIALS = CompleteApiIntegration(
    credential_fingerprint=FINGERPRINT,
    credential_reference=REFERENCE,
    validation_passed=True,
    validation_detail="200 from /v1/me",
    at=AT,
    by=BY,
)
CREDENTIALS_RECORDED = ApiIntegrationCompleted(
    credential_fingerprint=FINGERPRINT,
    credential_reference=REFERENCE,
    validation_detail="200 from /v1/me",
    completed_at=AT,
    by=BY,
)
SOURCE = ConnectDataSource(
    source_kind="stripe", connection_test_passed=True, connection_test_detail="ok", at=AT, by=BY
)
SOURCE_CONNECTED = DataSourceConnected(
    source_kind="stripe", connection_test_detail="ok", connected_at=AT, by=BY
)
MAPPING = MapMetrics(
    mappings=(
        FieldMapping(source_field="invoice.amount_paid", metric="revenue"),
        FieldMapping(source_field="subscription.quantity", metric="seats"),
    ),
    at=AT,
    by=BY,
)
MAPPED = MetricsMapped(
    mappings=(
        MetricMapping(metric="revenue", source_field="invoice.amount_paid"),
        MetricMapping(metric="seats", source_field="subscription.quantity"),
    ),
    mapped_at=AT,
    by=BY,
)
BASELINE = EstablishBaseline(
    baselines=(
        BaselineValue(metric="seats", value=Decimal("40")),
        BaselineValue(metric="revenue", value=Decimal("12500.50")),
    ),
    period_start=PERIOD_START,
    period_end=PERIOD_END,
    at=AT,
    by=BY,
)
BASELINE_ESTABLISHED = BaselineEstablished(
    baselines=(
        MetricBaseline(metric="revenue", value="12500.50"),
        MetricBaseline(metric="seats", value="40"),
    ),
    period_start=PERIOD_START,
    period_end=PERIOD_END,
    established_at=AT,
    by=BY,
)
TEST = VerifyAccuracy(
    measurements=(
        MeasuredValue(metric="revenue", measured=Decimal("95"), expected=Decimal("100")),
        MeasuredValue(metric="seats", measured=Decimal("44"), expected=Decimal("40")),
    ),
    at=AT,
    by=BY,
)
ACCURACY_VERIFIED = AccuracyVerified(
    results=(
        MetricMeasurement(metric="revenue", measured="95", expected="100"),
        MetricMeasurement(metric="seats", measured="44", expected="40"),
    ),
    accuracy="92.50",
    verified_at=AT,
    by=BY,
)
ALL_STEPS: tuple[Event, ...] = (
    CREDENTIALS_RECORDED,
    SOURCE_CONNECTED,
    MAPPED,
    BASELINE_ESTABLISHED,
    ACCURACY_VERIFIED,
)


def given(*events: Event) -> SetupState:
    state = initial_state
    for event in events:
        state = evolve(state, event)
    return state


def refusal(history: Sequence[Event], command: Command) -> SetupError:
    with pytest.raises(SetupError) as raised:
        decide(command, given(*history))
    return raised.value


# --- the steps in order -------------------------------------------------------------------------


def test_a_new_setup_has_no_step_done() -> None:
    assert initial_state.completed_steps == ()
    assert initial_state.next_step == "api_integration"
    assert not initial_state.is_complete
    assert initial_state.accuracy is None
    assert initial_state.metrics == ()
    assert initial_state.completed_at == {}


@pytest.mark.parametrize(
    ("history", "command", "recorded"),
    [
        ((), CREDENTIALS, CREDENTIALS_RECORDED),
        (ALL_STEPS[:1], SOURCE, SOURCE_CONNECTED),
        (ALL_STEPS[:2], MAPPING, MAPPED),
        (ALL_STEPS[:3], BASELINE, BASELINE_ESTABLISHED),
        (ALL_STEPS[:4], TEST, ACCURACY_VERIFIED),
    ],
)
def test_each_step_is_recorded_with_its_evidence(
    history: tuple[Event, ...], command: Command, recorded: Event
) -> None:
    assert decide(command, given(*history)) == [recorded]


def test_a_completed_setup_exposes_its_steps_metrics_and_accuracy() -> None:
    later = AT + timedelta(days=1)
    state = given(*ALL_STEPS[:4], msgspec.structs.replace(ACCURACY_VERIFIED, verified_at=later))
    assert state.completed_steps == STEPS
    assert state.is_complete
    assert state.next_step is None
    assert state.metrics == ("revenue", "seats")
    assert state.accuracy == Decimal("92.50")
    assert state.completed_at == {
        "api_integration": AT,
        "data_source": AT,
        "metrics_config": AT,
        "baseline": AT,
        "testing": later,
    }


@pytest.mark.parametrize(
    ("done", "command", "message"),
    [
        (
            0,
            SOURCE,
            "step 2 (data source) cannot be done yet: step 1 (API integration) is not "
            "complete; the steps go in order, so complete it first",
        ),
        (
            0,
            TEST,
            "step 5 (testing) cannot be done yet: step 1 (API integration) is not complete; "
            "the steps go in order, so complete it first",
        ),
        (
            2,
            BASELINE,
            "step 4 (baseline) cannot be done yet: step 3 (metrics config) is not complete; "
            "the steps go in order, so complete it first",
        ),
        (
            3,
            TEST,
            "step 5 (testing) cannot be done yet: step 4 (baseline) is not complete; "
            "the steps go in order, so complete it first",
        ),
    ],
)
def test_skipping_ahead_is_refused_naming_the_first_missing_step(
    done: int, command: Command, message: str
) -> None:
    error = refusal(ALL_STEPS[:done], command)
    assert isinstance(error, StepOutOfOrderError)
    assert error.missing == STEPS[done]
    assert error.message == message


def test_redoing_a_step_invalidates_the_completed_steps_after_it() -> None:
    redo = msgspec.structs.replace(SOURCE, source_kind="hubspot", at=AT + timedelta(hours=1))
    events = decide(redo, given(*ALL_STEPS))
    assert events == [
        LaterStepsInvalidated(
            redone_step="data_source",
            steps=("metrics_config", "baseline", "testing"),
            reason="step 2 (data source) was redone, and the steps after it depend on it",
            invalidated_at=AT + timedelta(hours=1),
            by=BY,
        ),
        DataSourceConnected(
            source_kind="hubspot",
            connection_test_detail="ok",
            connected_at=AT + timedelta(hours=1),
            by=BY,
        ),
    ]
    state = given(*ALL_STEPS, *events)
    assert state.completed_steps == ("api_integration", "data_source")
    assert state.data_source is not None
    assert state.data_source.source_kind == "hubspot"
    assert state.metrics == ()
    assert state.accuracy is None
    # The invalidated steps must be done again, in order.
    assert refusal([*ALL_STEPS, *events], TEST).message.startswith(
        "step 5 (testing) cannot be done yet: step 3 (metrics config) is not complete"
    )


def test_invalidation_names_only_the_steps_that_were_complete() -> None:
    events = decide(MAPPING, given(*ALL_STEPS[:4]))
    assert isinstance(events[0], LaterStepsInvalidated)
    assert events[0].steps == ("baseline",)
    assert events[1:] == [MAPPED]


def test_redoing_the_last_completed_step_invalidates_nothing() -> None:
    assert decide(TEST, given(*ALL_STEPS)) == [ACCURACY_VERIFIED]
    assert decide(CREDENTIALS, given(*ALL_STEPS[:1])) == [CREDENTIALS_RECORDED]


# --- step 1: API integration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"credential_fingerprint": "sk_live_123"},
            "step 1 (API integration): the credential fingerprint has 11 characters, not 64; "
            "give the SHA-256 of the secret as 64 lowercase hex digits, never the secret",
        ),
        (
            {"credential_fingerprint": "A" * 64},
            "step 1 (API integration): the credential fingerprint has characters other than "
            "0-9 and a-f; give the SHA-256 of the secret as 64 lowercase hex digits",
        ),
        (
            {"credential_reference": "sk_live_51Habc"},
            "step 1 (API integration): the credential reference (14 characters) is not "
            "scheme://location; give where the secret is kept, such as "
            "vault://kv/acme/api-key, never the secret",
        ),
        (
            {"credential_reference": ""},
            "step 1 (API integration): the credential reference (0 characters) is not "
            "scheme://location; give where the secret is kept, such as "
            "vault://kv/acme/api-key, never the secret",
        ),
        (
            {"validation_detail": "x" * 501},
            "step 1 (API integration): the validation detail is 501 characters long; "
            "keep it to 500 characters",
        ),
        (
            {"by": " "},
            "step 1 (API integration): the actor (by) is empty; stamp commands with the user's id",
        ),
        (
            {"at": datetime(2025, 3, 1, 12, 0)},
            "step 1 (API integration): the command's time has no timezone; stamp commands "
            "with an aware UTC time",
        ),
    ],
)
def test_credentials_need_a_fingerprint_and_a_reference_never_the_secret(
    changes: dict[str, object], message: str
) -> None:
    error = refusal((), msgspec.structs.replace(CREDENTIALS, **changes))
    assert isinstance(error, InvalidEvidenceError)
    assert error.message == message


def test_failed_credential_validation_is_refused_and_the_step_stays_as_it_was() -> None:
    failed = msgspec.structs.replace(
        CREDENTIALS, validation_passed=False, validation_detail="401 Unauthorized"
    )
    error = refusal(ALL_STEPS, failed)
    assert isinstance(error, CredentialsNotValidatedError)
    assert error.message == (
        "step 1 (API integration): the credentials failed validation (401 Unauthorized); "
        "check them with the provider, then record and validate them again"
    )


# --- step 2: data source ----------------------------------------------------------------------


def test_every_supported_source_kind_is_accepted() -> None:
    state = given(CREDENTIALS_RECORDED)
    for kind in SOURCE_KINDS:
        (event,) = decide(msgspec.structs.replace(SOURCE, source_kind=kind), state)
        assert isinstance(event, DataSourceConnected)
        assert event.source_kind == kind
    assert SOURCE_KINDS == (
        "salesforce",
        "hubspot",
        "stripe",
        "segment",
        "custom_webhook",
        "http_pull",
    )


def test_an_unsupported_source_kind_is_refused_listing_the_supported_ones() -> None:
    error = refusal(ALL_STEPS[:1], msgspec.structs.replace(SOURCE, source_kind="Stripe"))
    assert isinstance(error, InvalidEvidenceError)
    assert error.message == (
        "step 2 (data source): 'Stripe' is not a supported data source; choose one of "
        "salesforce, hubspot, stripe, segment, custom_webhook, http_pull"
    )


def test_a_failed_connection_test_is_refused() -> None:
    failed = msgspec.structs.replace(
        SOURCE, connection_test_passed=False, connection_test_detail="timed out after 10s"
    )
    error = refusal(ALL_STEPS[:1], failed)
    assert isinstance(error, ConnectionTestFailedError)
    assert error.message == (
        "step 2 (data source): the connection test to stripe failed (timed out after 10s); "
        "fix the connection settings and run the test again"
    )


# --- step 3: metrics config -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mappings", "message"),
    [
        (
            (),
            "step 3 (metrics config): no metrics are mapped; map at least one source field "
            "to a metric name",
        ),
        (
            (FieldMapping(source_field="amount", metric="Revenue"),),
            "step 3 (metrics config): 'Revenue' is not a valid metric name; use a lowercase "
            "letter, then up to 62 lowercase letters, digits or '_'",
        ),
        (
            (FieldMapping(source_field="amount", metric="r" * 64),),
            f"step 3 (metrics config): {'r' * 40 + '...'!r} is not a valid metric name; use a "
            "lowercase letter, then up to 62 lowercase letters, digits or '_'",
        ),
        (
            (
                FieldMapping(source_field="amount", metric="revenue"),
                FieldMapping(source_field="net_amount", metric="revenue"),
            ),
            "step 3 (metrics config): metric 'revenue' is mapped more than once; map each "
            "metric name from exactly one source field",
        ),
        (
            (FieldMapping(source_field="", metric="revenue"),),
            "step 3 (metrics config): the source field of 'revenue' is empty; name the "
            "source field",
        ),
        (
            (FieldMapping(source_field="a\nb", metric="revenue"),),
            "step 3 (metrics config): the source field of 'revenue' contains control "
            "characters; remove line breaks, tabs and the like",
        ),
        (
            tuple(FieldMapping(source_field="f", metric=f"m{index}") for index in range(101)),
            "step 3 (metrics config): 101 metrics are mapped; map at most 100",
        ),
    ],
)
def test_metric_mappings_are_checked(mappings: tuple[FieldMapping, ...], message: str) -> None:
    error = refusal(ALL_STEPS[:2], msgspec.structs.replace(MAPPING, mappings=mappings))
    assert isinstance(error, InvalidEvidenceError)
    assert error.message == message


def test_the_longest_metric_name_and_a_shared_source_field_are_accepted() -> None:
    mappings = (
        FieldMapping(source_field="amount", metric="r" + "_9" * 31),
        FieldMapping(source_field="amount", metric="gross"),
    )
    (event,) = decide(msgspec.structs.replace(MAPPING, mappings=mappings), given(*ALL_STEPS[:2]))
    assert isinstance(event, MetricsMapped)
    assert [mapping.metric for mapping in event.mappings] == ["r" + "_9" * 31, "gross"]


# --- step 4: baseline -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"baselines": (BaselineValue(metric="revenue", value=Decimal(1)),)},
            "step 4 (baseline): no baseline for 'seats'; give a baseline for every mapped metric",
        ),
        (
            {
                "baselines": (
                    *BASELINE.baselines,
                    BaselineValue(metric="churn", value=Decimal(1)),
                )
            },
            "step 4 (baseline): 'churn' is not a mapped metric; give a baseline only for the "
            "mapped metrics: revenue, seats",
        ),
        (
            {"baselines": (*BASELINE.baselines, BASELINE.baselines[0])},
            "step 4 (baseline): metric 'seats' has more than one baseline; give one baseline "
            "per metric",
        ),
        (
            {"period_end": PERIOD_START},
            "step 4 (baseline): the baseline period starts at 2025-01-01T00:00:00+00:00, not "
            "before its end 2025-01-01T00:00:00+00:00; give a period whose start is before "
            "its end",
        ),
        (
            {"period_end": AT + timedelta(seconds=1)},
            "step 4 (baseline): the baseline period ends at 2025-03-01T12:00:01+00:00, after "
            "it is recorded; establish the baseline over a period that has ended",
        ),
        (
            {"period_start": datetime(2025, 1, 1)},
            "step 4 (baseline): the baseline period has no timezone; give its start and end in UTC",
        ),
        (
            {
                "baselines": (
                    BASELINE.baselines[0],
                    BaselineValue(metric="revenue", value=Decimal("NaN")),
                )
            },
            "step 4 (baseline): 'revenue' is not a finite decimal; give a number such as 1250.50",
        ),
        (
            {
                "baselines": (
                    BASELINE.baselines[0],
                    BaselineValue(metric="revenue", value=Decimal("1E+22")),
                )
            },
            "step 4 (baseline): 'revenue' is 10^22 or more in magnitude; check the value's units",
        ),
        (
            {
                "baselines": (
                    BASELINE.baselines[0],
                    BaselineValue(metric="revenue", value=Decimal("0.0000000000001")),
                )
            },
            "step 4 (baseline): 'revenue' has more than 12 decimal places; round it to 12 places",
        ),
    ],
)
def test_a_baseline_is_needed_for_every_mapped_metric_and_no_other(
    changes: dict[str, object], message: str
) -> None:
    error = refusal(ALL_STEPS[:3], msgspec.structs.replace(BASELINE, **changes))
    assert isinstance(error, InvalidEvidenceError)
    assert error.message == message


def test_baselines_are_stored_as_plain_decimal_strings_in_mapping_order() -> None:
    baselines = (
        BaselineValue(metric="seats", value=Decimal("-0.00")),
        BaselineValue(metric="revenue", value=Decimal("1.5E+3")),
    )
    (event,) = decide(msgspec.structs.replace(BASELINE, baselines=baselines), given(*ALL_STEPS[:3]))
    assert isinstance(event, BaselineEstablished)
    assert event.baselines == (
        MetricBaseline(metric="revenue", value="1500"),
        MetricBaseline(metric="seats", value="0.00"),
    )


# --- step 5: testing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pairs", "accuracy"),
    [
        ([("100", "100")], "100.00"),
        ([("95", "100"), ("44", "40")], "92.50"),  # 0.95 and 0.90
        ([("110", "100")], "90.00"),  # over and under count alike
        ([("350", "100")], "0.00"),  # clamped at 0, not -150%
        ([("350", "100"), ("100", "100")], "50.00"),  # clamped per metric
        ([("0", "0")], "100.00"),  # expected 0: an exact match is 100%
        ([("0.001", "0")], "0.00"),  # expected 0: anything else is 0%
        ([("-5", "-10")], "50.00"),  # |expected| for negative values
        ([("1", "3"), ("3", "3"), ("3", "3")], "77.78"),  # (1/3 + 1 + 1) / 3
        ([("12.345", "100")], "12.34"),  # 12.345 rounds half to even
        ([("12.355", "100")], "12.36"),  # 12.355 rounds half to even
    ],
)
def test_measurement_accuracy(pairs: list[tuple[str, str]], accuracy: str) -> None:
    result = measurement_accuracy([(Decimal(m), Decimal(e)) for m, e in pairs])
    assert str(result) == accuracy


def test_measurement_accuracy_needs_a_measurement() -> None:
    with pytest.raises(ValueError, match="at least one measurement"):
        measurement_accuracy([])


def test_the_accuracy_test_records_every_measurement_and_the_accuracy() -> None:
    measurements = (
        MeasuredValue(metric="seats", measured=Decimal("0"), expected=Decimal("0")),
        MeasuredValue(metric="revenue", measured=Decimal("12.345"), expected=Decimal("100")),
    )
    (event,) = decide(
        msgspec.structs.replace(TEST, measurements=measurements), given(*ALL_STEPS[:4])
    )
    assert event == AccuracyVerified(
        results=(
            MetricMeasurement(metric="revenue", measured="12.345", expected="100"),
            MetricMeasurement(metric="seats", measured="0", expected="0"),
        ),
        accuracy="56.17",  # (0.12345 + 1) / 2 = 0.561725
        verified_at=AT,
        by=BY,
    )


@pytest.mark.parametrize(
    ("measurements", "message"),
    [
        (
            (TEST.measurements[0],),
            "step 5 (testing): no measurement for 'seats'; give a measurement for every "
            "mapped metric",
        ),
        (
            (
                *TEST.measurements,
                MeasuredValue(metric="x", measured=Decimal(1), expected=Decimal(1)),
            ),
            "step 5 (testing): 'x' is not a mapped metric; give a measurement only for the "
            "mapped metrics: revenue, seats",
        ),
        (
            (*TEST.measurements, TEST.measurements[1]),
            "step 5 (testing): metric 'seats' has more than one measurement; give one "
            "measurement per metric",
        ),
        (
            (
                TEST.measurements[0],
                MeasuredValue(metric="seats", measured=Decimal("Infinity"), expected=Decimal(1)),
            ),
            "step 5 (testing): the measured value of 'seats' is not a finite decimal; give a "
            "number such as 1250.50",
        ),
        (
            (
                TEST.measurements[0],
                MeasuredValue(metric="seats", measured=Decimal(1), expected=Decimal("sNaN")),
            ),
            "step 5 (testing): the expected value of 'seats' is not a finite decimal; give a "
            "number such as 1250.50",
        ),
    ],
)
def test_measured_and_expected_values_are_needed_for_every_mapped_metric(
    measurements: tuple[MeasuredValue, ...], message: str
) -> None:
    error = refusal(ALL_STEPS[:4], msgspec.structs.replace(TEST, measurements=measurements))
    assert isinstance(error, InvalidEvidenceError)
    assert error.message == message


# --- events on the wire -----------------------------------------------------------------------


def test_events_round_trip_through_json_with_their_stable_tags() -> None:
    invalidated = decide(SOURCE, given(*ALL_STEPS))[0]
    for event in (*ALL_STEPS, invalidated):
        encoded = msgspec.json.encode(event)
        assert msgspec.json.decode(encoded)["type"] == type(event).__name__
        assert msgspec.json.decode(encoded)["schema"] == 1
        assert EVENT_DECODER.decode(encoded) == event


def test_an_event_from_a_newer_writer_with_an_extra_field_still_decodes() -> None:
    encoded = msgspec.json.encode(SOURCE_CONNECTED)
    widened = encoded[:-1] + b',"region":"eu"}'
    assert EVENT_DECODER.decode(widened) == SOURCE_CONNECTED


# --- random command sequences -------------------------------------------------------------------

TIMES = st.one_of(
    st.datetimes(
        min_value=datetime(2024, 1, 1),
        max_value=datetime(2026, 1, 1),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))]),
    ),
    st.just(datetime(2025, 1, 1)),
)
ACTORS = st.sampled_from([BY, "user-9", "", "a\tb"])
METRIC_NAMES = st.sampled_from(["revenue", "seats", "churn", "Bad", ""])
DECIMALS = st.one_of(
    st.sampled_from([Decimal(0), Decimal(100), Decimal("99.5"), Decimal("-3"), Decimal("NaN")]),
    st.decimals(allow_nan=True, allow_infinity=True),
)
TEXT = st.one_of(st.just(""), st.text(max_size=20))

CREDENTIAL_COMMANDS = st.builds(
    CompleteApiIntegration,
    credential_fingerprint=st.sampled_from([FINGERPRINT, "b" * 64, "A" * 64, "abc"]),
    credential_reference=st.sampled_from([REFERENCE, "sk_live_1", "aws-sm://arn:x"]),
    validation_passed=st.booleans(),
    validation_detail=TEXT,
    at=TIMES,
    by=ACTORS,
)
SOURCE_COMMANDS = st.builds(
    ConnectDataSource,
    source_kind=st.one_of(st.sampled_from(SOURCE_KINDS), st.text(max_size=10)),
    connection_test_passed=st.booleans(),
    connection_test_detail=TEXT,
    at=TIMES,
    by=ACTORS,
)
MAPPING_COMMANDS = st.builds(
    MapMetrics,
    mappings=st.lists(
        st.builds(FieldMapping, source_field=TEXT, metric=METRIC_NAMES), max_size=3
    ).map(tuple),
    at=TIMES,
    by=ACTORS,
)
BASELINE_COMMANDS = st.builds(
    EstablishBaseline,
    baselines=st.lists(
        st.builds(BaselineValue, metric=METRIC_NAMES, value=DECIMALS), max_size=3
    ).map(tuple),
    period_start=TIMES,
    period_end=TIMES,
    at=TIMES,
    by=ACTORS,
)
ACCURACY_COMMANDS = st.builds(
    VerifyAccuracy,
    measurements=st.lists(
        st.builds(MeasuredValue, metric=METRIC_NAMES, measured=DECIMALS, expected=DECIMALS),
        max_size=3,
    ).map(tuple),
    at=TIMES,
    by=ACTORS,
)
MEASUREMENTS = st.tuples(
    st.builds(MeasuredValue, metric=st.just("revenue"), measured=DECIMALS, expected=DECIMALS),
    st.builds(MeasuredValue, metric=st.just("seats"), measured=DECIMALS, expected=DECIMALS),
)
COMMANDS: st.SearchStrategy[Command] = st.one_of(
    CREDENTIAL_COMMANDS,
    SOURCE_COMMANDS,
    MAPPING_COMMANDS,
    BASELINE_COMMANDS,
    ACCURACY_COMMANDS,
    st.sampled_from([CREDENTIALS, SOURCE, MAPPING, BASELINE, TEST]),
)


class SetupWizardMachine(RuleBasedStateMachine):
    """Any sequence of commands: refusals are DomainErrors, and the ledger stays coherent."""

    def __init__(self) -> None:
        super().__init__()
        self.state = initial_state
        self.ledger: list[Event] = []

    @rule(command=COMMANDS)
    def decide_and_record(self, command: Command) -> None:
        self.record(command)

    @rule(measurements=MEASUREMENTS)
    def complete_the_next_step(self, measurements: tuple[MeasuredValue, ...]) -> None:
        """Random evidence seldom fits the state, so half the time take the next valid step."""
        commands: dict[str | None, Command] = dict(
            zip(STEPS, (CREDENTIALS, SOURCE, MAPPING, BASELINE, TEST), strict=True)
        )
        command = commands.get(self.state.next_step, TEST)
        if isinstance(command, VerifyAccuracy):
            command = msgspec.structs.replace(command, measurements=measurements)
        self.record(command)

    def record(self, command: Command) -> None:
        refused: DomainError | None = None
        try:
            events = decide(command, self.state)
        except DomainError as error:
            refused, events = error, []
        if refused is not None:
            assert isinstance(refused, SetupError)
            assert refused.message
            return
        assert events
        for event in events:
            self.state = evolve(self.state, event)
            self.ledger.append(event)
            assert_in_order(self.state)

    @invariant()
    def steps_are_complete_only_in_order(self) -> None:
        assert_in_order(self.state)

    @invariant()
    def replaying_the_ledger_gives_the_same_state(self) -> None:
        assert given(*self.ledger) == self.state

    @invariant()
    def the_ledger_round_trips_through_json(self) -> None:
        decoded = [EVENT_DECODER.decode(msgspec.json.encode(event)) for event in self.ledger]
        assert given(*decoded) == self.state


def assert_in_order(state: SetupState) -> None:
    done = state.completed_steps
    assert done == STEPS[: len(done)]
    assert state.is_complete == (done == STEPS)
    assert (state.accuracy is not None) == ("testing" in done)


SetupWizardMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=30)
TestSetupWizard = SetupWizardMachine.TestCase
