"""The value formula language: what it accepts, what it computes, and how it refuses.

Tables pin the behaviour formula by formula (values at their full scale, errors at their exact
column); hypothesis checks that no input makes anything but a FormulaError escape, that the
canonical text reads back as the same tree, and that evaluation agrees with a plain reference
evaluator written here with Python's own Decimal operators. docs/formula.md is checked against
the code, and domain/ against its import rules.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal, DivisionByZero, InvalidOperation, Overflow
from decimal import localcontext as local_decimal_context
from pathlib import Path

import msgspec
import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

import domain.formula as formula_module
from domain import DomainError
from domain.formula import (
    MAGNITUDE_LIMIT,
    MAX_FORMULA_LENGTH,
    MAX_NESTING,
    PRECISION,
    RESULT_PLACES,
    ROUNDING,
    Absolute,
    BaselineReference,
    Expression,
    Formula,
    FormulaError,
    Maximum,
    MetricReference,
    Minimum,
    Negation,
    Number,
    Product,
    ProductStep,
    Rounding,
    Sum,
    SumStep,
    decimal_context,
    evaluate,
    parse_formula,
    preorder,
    render,
    validate,
)

REPOSITORY = Path(__file__).resolve().parents[2]
DOCS = REPOSITORY / "docs" / "formula.md"

# The inputs of docs/formula.md's examples.
METRICS = {
    "revenue": Decimal("125000.50"),
    "cost": Decimal("40000"),
    "calls": Decimal("0"),
    "visits": Decimal("1200"),
}
BASELINES = {"revenue": Decimal("100000"), "cost": Decimal("45000")}


def submit_and_evaluate(text: str) -> Decimal:
    """What a value definition goes through: parsed and validated on submit, then evaluated."""
    formula = parse_formula(text)
    validate(formula, set(METRICS), set(BASELINES))
    return evaluate(formula, METRICS, BASELINES)


# --- Valid formulas -----------------------------------------------------------------------

VALID = [
    ("12", "12.000000000000"),
    ("0.35", "0.350000000000"),
    ("007.50", "7.500000000000"),
    ("metric.revenue", "125000.500000000000"),
    ("baseline.revenue", "100000.000000000000"),
    ("(metric.revenue - baseline.revenue) * 0.35", "8750.175000000000"),
    ("  (metric.revenue-baseline.revenue)*0.35\t", "8750.175000000000"),
    ("2 + 3 * 4", "14.000000000000"),
    ("(2 + 3) * 4", "20.000000000000"),
    ("2 - 3 - 4", "-5.000000000000"),
    ("2 - (3 - 4)", "3.000000000000"),
    ("24 / 4 / 2", "3.000000000000"),
    ("24 / (4 / 2)", "12.000000000000"),
    ("24 / 4 * 2", "12.000000000000"),
    ("-2 * 3", "-6.000000000000"),
    ("-(2 + 3)", "-5.000000000000"),
    ("--2", "2.000000000000"),
    ("2 - -2", "4.000000000000"),
    ("2 * -3", "-6.000000000000"),
    ("1 / 3", "0.333333333333"),
    ("2 / 3", "0.666666666667"),
    ("1 / 3 * 3", "1.000000000000"),
    ("min(3, 1, 2)", "1.000000000000"),
    ("max(3, 1, 2)", "3.000000000000"),
    ("max(metric.revenue - baseline.revenue, 0)", "25000.500000000000"),
    ("min(metric.revenue * 0.1, 10000)", "10000.000000000000"),
    ("metric.revenue / max(metric.calls, 1)", "125000.500000000000"),
    ("abs(metric.cost - baseline.cost)", "5000.000000000000"),
    ("abs(-0.5)", "0.500000000000"),
    ("round(2.5, 0)", "2.000000000000"),
    ("round(3.5, 0)", "4.000000000000"),
    ("round(-2.5, 0)", "-2.000000000000"),
    ("round(0.125, 2)", "0.120000000000"),
    ("round(0.135, 2)", "0.140000000000"),
    ("round(2 / 3, 12)", "0.666666666667"),
    ("round(metric.revenue / metric.visits, 2)", "104.170000000000"),
    ("metric.revenue / metric.visits", "104.167083333333"),
    ("0.000000000001", "0.000000000001"),
    ("0.000000000004 / 10", "0.000000000000"),
    ("0.000000000005 / 10", "0.000000000000"),
    ("0.000000000015 / 10", "0.000000000002"),
    ("0.000000000025 / 10", "0.000000000002"),
    ("0.000000000026 / 10", "0.000000000003"),
    ("metric.calls * -1", "0.000000000000"),
    ("-0", "0.000000000000"),
    ("9999999999999999999999.999999999999", "9999999999999999999999.999999999999"),
    ("9999999999999999999999 - 9999999999999999999999", "0.000000000000"),
    ("min(" + ", ".join(str(n) for n in range(32, 0, -1)) + ")", "1.000000000000"),
    ("(" * MAX_NESTING + "1" + ")" * MAX_NESTING, "1.000000000000"),
    ("-" * MAX_NESTING + "1", "1.000000000000"),
    ("1" + "+1" * 999, "1000.000000000000"),
]


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_valid_formulas_evaluate_to_their_value_at_twelve_places(text: str, expected: str) -> None:
    assert format(submit_and_evaluate(text), "f") == expected


def test_a_formula_of_exactly_the_maximum_length_is_accepted() -> None:
    text = "1" + "+1" * ((MAX_FORMULA_LENGTH - 1) // 2) + " " * ((MAX_FORMULA_LENGTH - 1) % 2)
    assert len(text) == MAX_FORMULA_LENGTH
    assert submit_and_evaluate(text) == 1000


def test_the_text_the_tree_and_the_references_are_kept() -> None:
    formula = parse_formula("max(metric.revenue-baseline.revenue , 0)*( 0.35 )")
    assert formula.text == "max(metric.revenue-baseline.revenue , 0)*( 0.35 )"
    assert formula.expression == Product(
        first=Maximum(
            arguments=(
                Sum(
                    first=MetricReference(name="revenue"),
                    rest=(SumStep(operator="-", operand=BaselineReference(name="revenue")),),
                ),
                Number(value=Decimal(0)),
            )
        ),
        rest=(ProductStep(operator="*", operand=Number(value=Decimal("0.35"))),),
    )
    assert str(formula) == "max(metric.revenue - baseline.revenue, 0) * 0.35"
    metrics, baselines = formula.references()
    assert metrics == {"revenue"}
    assert baselines == {"revenue"}


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("((1))", "1"),
        ("(1 + 2) + 3", "(1 + 2) + 3"),
        ("1 + (2 + 3)", "1 + (2 + 3)"),
        ("1+2+3", "1 + 2 + 3"),
        ("(1 * 2) + 3", "1 * 2 + 3"),
        ("-(1 * 2)", "-(1 * 2)"),
        ("(-1) * 2", "-1 * 2"),
        ("- (-1)", "--1"),
        ("round( metric.a ,2 )", "round(metric.a, 2)"),
        ("0.10", "0.10"),
        ("000", "0"),
    ],
)
def test_the_canonical_text_keeps_only_the_parentheses_the_meaning_needs(
    text: str, canonical: str
) -> None:
    formula = parse_formula(text)
    assert str(formula) == canonical
    assert parse_formula(canonical).expression == formula.expression


def test_columns_follow_the_text_node_by_node() -> None:
    formula = parse_formula("(metric.revenue - baseline.revenue) * 0.35")
    kinds = [type(node).__name__ for node in preorder(formula.expression)]
    assert list(zip(kinds, formula.columns, strict=True)) == [
        ("Product", 1),
        ("Sum", 2),
        ("MetricReference", 2),
        ("SumStep", 17),
        ("BaselineReference", 19),
        ("ProductStep", 37),
        ("Number", 39),
    ]


def test_a_parsed_formula_encodes_to_json_with_stable_tags_and_decodes_equal() -> None:
    formula = parse_formula("round(-metric.a / baseline.b, 2) + min(abs(1), 2) - max(3, 4)")
    encoded = msgspec.json.encode(formula)
    assert msgspec.json.decode(encoded, type=Formula) == formula
    tags = {tag.decode() for tag in re.findall(rb'"type":"(\w+)"', encoded)}
    assert tags == {
        "sum",
        "round",
        "product",
        "neg",
        "metric",
        "baseline",
        "min",
        "max",
        "abs",
        "num",
    }


# --- Invalid formulas, each at its exact column -----------------------------------------------

INVALID = [
    ("", 1, "formula is empty at column 1"),
    ("   ", 4, "formula is empty at column 4"),
    ("metric.revenu * 0.35", 1, "unknown metric 'revenu' at column 1; did you mean metric.revenue"),
    ("1 + metric.profit", 5, "unknown metric 'profit' at column 5; known metrics: calls, cost"),
    ("baseline.visits", 1, "unknown baseline 'visits' at column 1"),
    ("sqrt(4)", 1, "unknown function 'sqrt' at column 1; use min, max, abs or round"),
    ("1 + sqrt (4)", 5, "unknown function 'sqrt' at column 5"),
    ("MIN(1, 2)", 1, "unknown function 'MIN' at column 1"),
    ("(1 + 2", 7, "missing ')' at column 7; close the '(' at column 1"),
    ("((1 + 2)", 9, "missing ')' at column 9; close the '(' at column 1"),
    ("min(1, 2", 9, "missing ')' at column 9; close the '(' of min at column 1"),
    ("(1 + 2]", 7, "unexpected character ']' at column 7"),
    ("1 + 2)", 6, "found ')' at column 6; remove it, or add the matching '('"),
    ("1 2", 3, "expected an operator (+ - * /) or the end of the formula, found '2' at column 3"),
    ("metric.a metric.b", 10, "found 'metric.b' at column 10"),
    ("1 +", 4, "found the end of the formula at column 4; complete the formula"),
    ("1 + * 2", 5, "found '*' at column 5"),
    ("+1", 1, "found '+' at column 1; write the value without '+'"),
    ("()", 2, "found ')' at column 2; write the missing value before it"),
    ("min()", 5, "found ')' at column 5"),
    ("min(1, )", 8, "found ')' at column 8"),
    ("min(1)", 6, "min needs at least 2 arguments, found 1 at column 6; write min(a, b)"),
    ("max(1)", 6, "max needs at least 2 arguments, found 1 at column 6; write max(a, b)"),
    ("abs(1, 2)", 6, "abs takes one argument, found ',' at column 6; write abs(value)"),
    ("abs", 1, "function 'abs' needs its arguments in parentheses at column 1"),
    ("round(1)", 8, "expected ',' and the number of decimal places, found ')' at column 8"),
    ("round(1, 13)", 10, "round places must be a whole number from 0 to 12, found '13'"),
    ("round(1, -1)", 10, "round places must be a whole number from 0 to 12, found '-'"),
    ("round(1, 2.0)", 10, "round places must be a whole number from 0 to 12, found '2.0'"),
    ("round(1, metric.a)", 10, "found 'metric.a' at column 10"),
    ("revenue", 1, "'revenue' is not a reference at column 1; write metric.revenue or"),
    ("metric", 1, "'metric' needs a name at column 1; write metric.<name>"),
    ("metric.", 8, "missing metric name after 'metric.' at column 8"),
    ("baseline. cost", 10, "missing baseline name after 'baseline.' at column 10"),
    ("metric .revenue", 1, "'metric' needs a name at column 1"),
    ("metric.Revenue", 8, "metric name 'Revenue' is not valid at column 8"),
    ("metric._x", 8, "metric name '_x' is not valid at column 8"),
    ("metric." + "a" * 64, 8, "is not valid at column 8; names are 1 to 63"),
    ("metric.revenue.total", 15, "unexpected character '.' at column 15"),
    ("price.total", 1, "'price.' is not a reference at column 1"),
    ("1e5", 2, "unexpected 'e' right after a number at column 2; write numbers as plain"),
    ("1,000", 2, "found ',' at column 2"),
    ("1.", 3, "missing digits after the decimal point at column 3; write 1.0 or 1"),
    ("1.2.3", 4, "unexpected '.' right after a number at column 4"),
    (".5", 1, "number starts with '.' at column 1; write a digit before the point"),
    ("1 + 2 $", 7, "unexpected character '$' at column 7"),
    ("1 +\n2", 4, "unexpected character U+000A at column 4"),
    ("1 + \uff12", 5, "unexpected character '\uff12' at column 5"),  # a full-width 2
    ("1 + + $", 5, "found '+' at column 5"),  # the first problem in the text wins
    ("12345678901234567890123", 1, "number has 23 digits before the decimal point at column 1"),
    ("0.1234567890123", 1, "number has 13 digits after the decimal point at column 1"),
    ("2 * " + "9" * 40, 5, "number has 40 digits before the decimal point at column 5"),
    ("(" * 33 + "1" + ")" * 33, 33, "formula nests deeper than 32 levels at column 33"),
    ("-" * 33 + "1", 33, "formula nests deeper than 32 levels at column 33"),
    ("abs(" * 33 + "1" + ")" * 33, 129, "formula nests deeper than 32 levels at column 129"),
    ("1" + "+1" * 1000, 2001, "formula is longer than 2,000 characters at column 2001"),
    (
        "min(" + ", ".join("1" * 33) + ")",
        101,
        "min takes at most 32 arguments at column 101; nest calls, as in min(min(a, b), c)",
    ),
    ("1 / 0", 3, "division by zero at column 3; the divisor is always 0"),
    ("metric.revenue / (2 - 2)", 16, "division by zero at column 16; the divisor is always 0"),
    ("metric.revenue / 0.000", 16, "division by zero at column 16; the divisor is always 0"),
    ("metric.revenue / -round(0.4, 0)", 16, "division by zero at column 16; the divisor is always"),
    ("metric.a + 1 / 0", 1, "unknown metric 'a' at column 1"),  # text order decides
    ("1 / (1 / 0)", 8, "division by zero at column 8; the divisor is always 0"),
    ("metric.calls / (1 / 0)", 19, "division by zero at column 19; the divisor is always 0"),
    ("9999999999999999999999 + 1", 24, "result of '+' is 10^22 or more in magnitude at column"),
    ("1000000000000 * 1000000000000", 15, "result of '*' is 10^22 or more in magnitude"),
    ("round(9999999999999999999999.5, 0)", 1, "result of round is 10^22 or more in magnitude"),
    ("metric.revenue / metric.calls", 16, "division by zero at column 16; the divisor is 0 for"),
    ("metric.revenue / (baseline.cost - 45000)", 16, "the divisor is 0 for these inputs; guard"),
    ("metric.revenue * 100000000000000000", 16, "result of '*' is 10^22 or more in magnitude"),
    ("metric.revenue * 1000000000000 / 0.0000001", 32, "result of '/' is 10^22 or more"),
]


@pytest.mark.parametrize(("text", "column", "fragment"), INVALID)
def test_invalid_formulas_are_refused_at_the_column_of_the_fault(
    text: str, column: int, fragment: str
) -> None:
    with pytest.raises(FormulaError) as refused:
        submit_and_evaluate(text)
    assert refused.value.position == column
    assert fragment in str(refused.value)
    assert f"at column {column}; " in str(refused.value)
    assert isinstance(refused.value, DomainError)
    assert refused.value.message == str(refused.value)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (Decimal("NaN"), "value of metric 'a' is not a finite decimal (Decimal('NaN'))"),
        (Decimal("sNaN"), "is not a finite decimal (Decimal('sNaN'))"),
        (Decimal("-Infinity"), "is not a finite decimal (Decimal('-Infinity'))"),
        (0.5, "is not a finite decimal (0.5)"),
        (Decimal("1E+22"), "value of metric 'a' is 10^22 or more in magnitude at column 5"),
        (Decimal("-1E+999999999"), "is 10^22 or more in magnitude"),
    ],
)
def test_inputs_that_are_not_finite_decimals_in_range_are_refused_at_their_reference(
    value: Decimal, fragment: str
) -> None:
    formula = parse_formula("2 * metric.a")
    with pytest.raises(FormulaError) as refused:
        evaluate(formula, {"a": value}, {})
    assert refused.value.position == 5
    assert fragment in str(refused.value)


def test_a_missing_input_is_refused_at_its_reference() -> None:
    formula = parse_formula("metric.a - baseline.a")
    with pytest.raises(FormulaError, match=r"no value for baseline 'a' at column 12"):
        evaluate(formula, {"a": Decimal(1)}, {})


def test_validation_without_configured_metrics_says_so() -> None:
    with pytest.raises(FormulaError, match=r"no metrics are configured yet"):
        validate(parse_formula("metric.revenue"), set(), set())


def test_inputs_with_more_digits_than_the_precision_are_rounded_half_even() -> None:
    long = Decimal("0.1234567890123456789012345678901234567")  # 37 significant digits
    formula = parse_formula("metric.a * 1000000000000")
    assert evaluate(formula, {"a": long}, {}) == Decimal("123456789012.345678901235")


# --- Rounding and the decimal context -------------------------------------------------------


def test_the_decimal_context_is_the_documented_one_and_fresh_each_time() -> None:
    context = decimal_context()
    assert (context.prec, context.rounding) == (PRECISION, ROUNDING) == (34, ROUND_HALF_EVEN)
    assert context.traps[InvalidOperation]
    assert context.traps[DivisionByZero]
    assert context.traps[Overflow]
    assert decimal_context() is not context
    assert RESULT_PLACES == 12
    assert Decimal(10) ** 22 == MAGNITUDE_LIMIT


def test_evaluation_ignores_the_threads_decimal_context() -> None:
    formula = parse_formula("2 / 3 + round(0.125, 2)")
    with local_decimal_context() as hostile:
        hostile.prec = 3
        hostile.rounding = "ROUND_UP"
        hostile.traps[InvalidOperation] = False
        assert format(evaluate(formula, {}, {}), "f") == "0.786666666667"


def test_a_zero_result_is_always_positive_zero() -> None:
    result = evaluate(parse_formula("-metric.a * 2"), {"a": Decimal("0.00")}, {})
    assert format(result, "f") == "0.000000000000"
    assert not result.is_signed()


@settings(max_examples=200)
@given(
    amount=st.decimals(min_value=-(10**9), max_value=10**9, places=6),
    floor=st.integers(min_value=0, max_value=10**6),
    extra=st.integers(min_value=0, max_value=10**6),
)
def test_whole_unit_floor_and_cap_commute_with_rounding_to_minor_units(
    amount: Decimal, floor: int, extra: int
) -> None:
    """docs/formula.md's money rule 5: clamping before or after rounding bills the same."""
    cap = floor + extra
    context = decimal_context()

    def to_minor_units(value: Decimal) -> Decimal:
        return value.quantize(Decimal(1), context=context)

    clamped_first = to_minor_units(min(max(amount, Decimal(floor)), Decimal(cap)))
    rounded_first = min(max(to_minor_units(amount), Decimal(floor)), Decimal(cap))
    assert clamped_first == rounded_first


# --- docs/formula.md says what the code does --------------------------------------------------


def _table(heading: str) -> list[list[str]]:
    """The rows of the first table under `## heading`, cells stripped of spaces and backticks."""
    section = DOCS.read_text(encoding="utf-8").split(f"\n## {heading}\n", 1)[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]
    return [[cell.strip().strip("`") for cell in row.strip("|").split(" | ")] for row in rows]


def test_the_documented_examples_evaluate_as_documented() -> None:
    rows = _table("Examples")
    assert len(rows) >= 10
    for text, value in rows:
        assert format(submit_and_evaluate(text), "f") == value, text


def test_the_documented_errors_are_the_messages_given() -> None:
    rows = _table("Errors")
    assert len(rows) >= 10
    for text, column, message in rows:
        with pytest.raises(FormulaError) as refused:
            submit_and_evaluate(text)
        assert (refused.value.position, str(refused.value)) == (int(column), message), text


def test_the_documented_limits_are_the_limits_in_force() -> None:
    rows = _table("Limits")
    assert len(rows) == 7
    for _, value, constant in rows:
        if constant == "NAME_PATTERN":
            assert formula_module.NAME_PATTERN.fullmatch("a" * int(value))
            assert not formula_module.NAME_PATTERN.fullmatch("a" * (int(value) + 1))
        else:
            assert getattr(formula_module, constant) == int(value), constant


def test_the_documented_json_is_what_a_tree_encodes_to() -> None:
    documented = DOCS.read_text(encoding="utf-8").split("```json\n", 1)[1].split("\n```")[0]
    expression = parse_formula("2 * metric.visits").expression
    assert msgspec.json.encode(expression).decode() == documented
    assert msgspec.json.decode(documented, type=Expression) == expression


def test_the_documented_decimal_context_is_the_one_in_force() -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert f"Precision: {PRECISION} significant digits" in text
    assert "half-even** (`ROUND_HALF_EVEN`)" in text
    assert f"quantised to **{RESULT_PLACES} decimal places**, half-even" in text
    assert "Magnitude: below 10^22." in text


# --- Hypothesis: nothing escapes but FormulaError -------------------------------------------

NAMES = ["a", "b", "revenue", "x_1"]
INPUT_VALUES = st.one_of(
    st.just(Decimal(0)),
    st.decimals(min_value=-(10**6), max_value=10**6, places=4),
    st.decimals(min_value=-(10**21), max_value=10**21, places=0),
    st.decimals(min_value=-1, max_value=1, places=30),
)
INPUTS = st.fixed_dictionaries(dict.fromkeys(NAMES, INPUT_VALUES))
TOKENS = [
    *[f"metric.{name}" for name in NAMES],
    *[f"baseline.{name}" for name in NAMES],
    "metric.",
    "metric",
    "baseline.",
    "metric.unknown",
    "min",
    "max",
    "abs",
    "round",
    "sqrt",
    "(",
    ")",
    ",",
    "+",
    "-",
    "*",
    "/",
    ".",
    "0",
    "1",
    "2",
    "12",
    "13",
    "0.5",
    "0.000000000001",
    "9999999999999999999999",
    "9999999999999999999999.999999999999",
    "99999999999999999999999",
    "1e5",
    "e",
    "_",
    " ",
    "\t",
    "\n",
    "é",
]


def _exercise(text: str, metrics: Mapping[str, Decimal], baselines: Mapping[str, Decimal]) -> None:
    """Parse, validate and evaluate as the service would; only FormulaError may come out."""
    refused = _refusal(text, metrics, baselines)
    if refused is not None:
        assert 1 <= refused.position <= max(len(text), MAX_FORMULA_LENGTH) + 1
        assert f"at column {refused.position}; " in str(refused)


def _refusal(
    text: str, metrics: Mapping[str, Decimal], baselines: Mapping[str, Decimal]
) -> FormulaError | None:
    try:
        formula = parse_formula(text)
        str(formula)
        formula.references()
        validate(formula, set(metrics), set(baselines))
        evaluate(formula, metrics, baselines)
    except FormulaError as refused:
        return refused
    return None


@settings(max_examples=500)
@given(text=st.text(max_size=120), inputs=INPUTS)
def test_random_text_raises_nothing_but_formula_error(
    text: str, inputs: dict[str, Decimal]
) -> None:
    _exercise(text, inputs, inputs)


@settings(max_examples=500)
@given(text=st.text(alphabet=st.characters(codec="ascii"), max_size=120), inputs=INPUTS)
def test_random_printable_ascii_raises_nothing_but_formula_error(
    text: str, inputs: dict[str, Decimal]
) -> None:
    _exercise(text, inputs, inputs)


@settings(max_examples=1000)
@given(
    tokens=st.lists(st.sampled_from(TOKENS), max_size=60),
    separator=st.sampled_from(["", " "]),
    inputs=INPUTS,
)
def test_random_token_soup_raises_nothing_but_formula_error(
    tokens: list[str], separator: str, inputs: dict[str, Decimal]
) -> None:
    _exercise(separator.join(tokens), inputs, inputs)


@settings(max_examples=50)
@given(st.integers(min_value=MAX_NESTING - 2, max_value=400), st.sampled_from(["(", "-", "abs("]))
def test_deep_nesting_is_refused_before_it_can_exhaust_the_stack(depth: int, opener: str) -> None:
    closer = ")" if opener != "-" else ""
    _exercise(opener * depth + "1" + closer * depth, {}, {})


# --- Hypothesis: canonical text and evaluation against a reference ---------------------------


def _literals() -> st.SearchStrategy[Number]:
    small = st.integers(min_value=0, max_value=12).flatmap(
        lambda places: st.decimals(min_value=0, max_value=10**6, places=places)
    )
    large = st.decimals(min_value=0, max_value=10**22 - 1, places=0)
    return st.builds(Number, value=st.one_of(small, small, large).map(Decimal.copy_abs))


def _extend(children: st.SearchStrategy[Expression]) -> st.SearchStrategy[Expression]:
    sum_steps = st.builds(SumStep, operator=st.sampled_from(["+", "-"]), operand=children)
    product_steps = st.builds(ProductStep, operator=st.sampled_from(["*", "/"]), operand=children)
    arguments = st.lists(children, min_size=2, max_size=4).map(tuple)
    return st.one_of(
        st.builds(Negation, operand=children),
        st.builds(Absolute, operand=children),
        st.builds(Rounding, operand=children, places=st.integers(min_value=0, max_value=12)),
        st.builds(Minimum, arguments=arguments),
        st.builds(Maximum, arguments=arguments),
        st.builds(Sum, first=children, rest=st.lists(sum_steps, min_size=1, max_size=3).map(tuple)),
        st.builds(
            Product, first=children, rest=st.lists(product_steps, min_size=1, max_size=3).map(tuple)
        ),
    )


EXPRESSIONS: st.SearchStrategy[Expression] = st.recursive(
    st.one_of(
        _literals(),
        st.builds(MetricReference, name=st.sampled_from(NAMES)),
        st.builds(BaselineReference, name=st.sampled_from(NAMES)),
    ),
    _extend,
    max_leaves=16,
)


class RefusedByReference(Exception):
    """The reference evaluator's verdict that the formula language must refuse."""


def reference_value(
    expression: Expression, metrics: Mapping[str, Decimal], baselines: Mapping[str, Decimal]
) -> Decimal:
    """A plain evaluation with Python's Decimal operators, written independently of domain/:
    the documented context, every value below 10^22, no division by zero."""
    with local_decimal_context() as context:
        context.prec = 34
        context.rounding = ROUND_HALF_EVEN
        return _reference(expression, metrics, baselines).quantize(Decimal("0.000000000001"))


def _in_range(value: Decimal) -> Decimal:
    if abs(value) >= 10**22:
        raise RefusedByReference("10^22 or more in magnitude")
    return value


def _reference(  # noqa: PLR0911 (one return per kind of node)
    expression: Expression, metrics: Mapping[str, Decimal], baselines: Mapping[str, Decimal]
) -> Decimal:
    def value(part: Expression) -> Decimal:
        return _reference(part, metrics, baselines)

    match expression:
        case Number():
            return expression.value
        case MetricReference():
            return metrics[expression.name]
        case BaselineReference():
            return baselines[expression.name]
        case Negation():
            return -value(expression.operand)
        case Absolute():
            return abs(value(expression.operand))
        case Rounding():
            return _in_range(round(value(expression.operand), expression.places))
        case Minimum():
            return min(value(argument) for argument in expression.arguments)
        case Maximum():
            return max(value(argument) for argument in expression.arguments)
        case Sum():
            total = value(expression.first)
            for sum_step in expression.rest:
                term = value(sum_step.operand)
                total = _in_range(total + term if sum_step.operator == "+" else total - term)
            return total
        case Product():
            total = value(expression.first)
            for product_step in expression.rest:
                factor = value(product_step.operand)
                if product_step.operator == "/" and factor == 0:
                    raise RefusedByReference("division by zero")
                total = _in_range(
                    total * factor if product_step.operator == "*" else total / factor
                )
            return total


def _parse_within_nesting(text: str) -> Formula:
    try:
        return parse_formula(text)
    except FormulaError as refused:
        # Random trees may nest deeper than the language allows; that refusal is tested above.
        assume("nests deeper" not in refused.problem and "longer than" not in refused.problem)
        raise


@settings(max_examples=500)
@given(expression=EXPRESSIONS)
def test_the_canonical_text_of_any_tree_parses_back_to_the_same_tree(
    expression: Expression,
) -> None:
    text = render(expression)
    formula = _parse_within_nesting(text)
    assert formula.expression == expression
    assert str(formula) == text
    nodes = list(preorder(formula.expression))
    assert len(nodes) == len(formula.columns)
    assert list(formula.columns) == sorted(formula.columns)
    for node, column in zip(nodes, formula.columns, strict=True):
        written = text[column - 1 :]
        match node:
            case MetricReference() | BaselineReference() | Number():
                assert written.startswith(render(node))
            case SumStep() | ProductStep():
                assert written.startswith(node.operator)
            case Negation():
                assert written.startswith("-")
            case Minimum() | Maximum() | Absolute() | Rounding():
                assert written.startswith(render(node).split("(")[0] + "(")


@settings(max_examples=1000)
@given(expression=EXPRESSIONS, metrics=INPUTS, baselines=INPUTS)
def test_evaluation_agrees_with_a_plain_reference_evaluation(
    expression: Expression, metrics: dict[str, Decimal], baselines: dict[str, Decimal]
) -> None:
    formula = _parse_within_nesting(render(expression))
    expected = _reference_verdict(expression, metrics, baselines)
    event(f"refused: {expected}" if isinstance(expected, RefusedByReference) else "evaluated")
    if isinstance(expected, RefusedByReference):
        with pytest.raises(FormulaError) as refused:
            evaluate(formula, metrics, baselines)
        assert str(expected) in refused.value.problem
    else:
        assert evaluate(formula, metrics, baselines) == expected


def _reference_verdict(
    expression: Expression, metrics: Mapping[str, Decimal], baselines: Mapping[str, Decimal]
) -> Decimal | RefusedByReference:
    try:
        return reference_value(expression, metrics, baselines)
    except RefusedByReference as verdict:
        return verdict


# --- domain/ stays pure ------------------------------------------------------------------------

FORBIDDEN_MODULES = {
    "asyncpg",
    "redis",
    "litestar",
    "arq",
    "structlog",
    "opentelemetry",
    "random",
    "secrets",
}
FORBIDDEN_CALLS = {"now", "utcnow", "today", "uuid1", "uuid4"}
FORBIDDEN_BUILTINS = {"eval", "exec", "compile", "__import__"}


def test_domain_imports_no_infrastructure_and_reads_no_clock_or_randomness() -> None:
    sources = sorted((REPOSITORY / "domain").rglob("*.py"))
    assert sources
    for source in sources:
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported = {(node.module or "").split(".")[0]}
                called_names = {alias.name for alias in node.names}
                assert not called_names & FORBIDDEN_CALLS, (source, node.lineno)
            elif isinstance(node, ast.Call):
                function = node.func
                if isinstance(function, ast.Name):
                    forbidden = function.id in FORBIDDEN_CALLS | FORBIDDEN_BUILTINS
                else:
                    forbidden = isinstance(function, ast.Attribute) and (
                        function.attr in FORBIDDEN_CALLS
                    )
                assert not forbidden, (source, node.lineno)
                continue
            else:
                continue
            assert not imported & FORBIDDEN_MODULES, (source, node.lineno, imported)
