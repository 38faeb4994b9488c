"""Checking a formula against a customer's metrics, and computing its value for a period.

All arithmetic goes through an explicit decimal context made for each evaluation, never the
thread's current one, so a result cannot depend on what else ran in the process. Every
operation that can fail is checked before or caught where it happens and reported as a
`FormulaError` at its column: no `decimal` exception, `KeyError` or `RecursionError` leaves
this module (the tree's depth is bounded by the parser's nesting limit).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Set
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
)
from functools import partial
from typing import Final, assert_never

from domain.formula.errors import FormulaError
from domain.formula.syntax import (
    Absolute,
    BaselineReference,
    Expression,
    Formula,
    Maximum,
    MetricReference,
    Minimum,
    Negation,
    Number,
    Product,
    ProductStep,
    Rounding,
    Sum,
    has_references,
    preorder,
)

PRECISION: Final = 34
"""Significant digits of every intermediate result (IEEE 754 decimal128)."""
ROUNDING: Final = ROUND_HALF_EVEN
"""For results that need more than `PRECISION` digits, for round() and for the final scale."""
RESULT_PLACES: Final = 12
"""Every result is quantised to this many decimal places."""
MAGNITUDE_LIMIT: Final = Decimal("1E+22")
"""Inputs and every intermediate result stay strictly below this in magnitude, so that a
result at `RESULT_PLACES` always fits in `PRECISION` digits, exactly."""

_RESULT_QUANTUM: Final = Decimal((0, (1,), -RESULT_PLACES))
_LIMIT_TEXT: Final = "10^22"


def decimal_context() -> Context:
    """A fresh copy of the formula language's decimal context.

    Fresh each time because a context records flags as it is used; traps turn the signals
    that would otherwise yield NaN or Infinity into exceptions, caught at their column.
    """
    return Context(
        prec=PRECISION,
        rounding=ROUNDING,
        Emin=-999_999,
        Emax=999_999,
        capitals=1,
        clamp=0,
        flags=[],
        traps=[InvalidOperation, DivisionByZero, Overflow],
    )


def evaluate(
    formula: Formula,
    metrics: Mapping[str, Decimal],
    baselines: Mapping[str, Decimal],
) -> Decimal:
    """The formula's value for one period's inputs, quantised to `RESULT_PLACES` decimals.

    Inputs are rounded to `PRECISION` significant digits as they are read. A zero result is
    always positive zero, so equal values have equal text in receipts.
    """
    evaluation = _Evaluation(formula, metrics, baselines, start=0, constant=False)
    value = evaluation.value(formula.expression)
    result = evaluation.checked(
        formula.columns[0],
        "the formula",
        partial(value.quantize, _RESULT_QUANTUM, context=evaluation.context),
    )
    return result.copy_abs() if result.is_zero() else result


def validate(formula: Formula, metrics: Set[str], baselines: Set[str]) -> None:
    """Refuse, at submission, a formula that could never be evaluated for this customer.

    Checks, in the order they appear in the text: every metric and baseline reference names
    one the customer has configured, and no divisor that reads no input is zero. A formula
    that reads no input at all is evaluated once, so any error it would raise is raised now.
    """
    for index, (node, column) in enumerate(
        zip(preorder(formula.expression), formula.columns, strict=True)
    ):
        if isinstance(node, MetricReference) and node.name not in metrics:
            raise _unknown_reference("metric", node.name, column, metrics)
        if isinstance(node, BaselineReference) and node.name not in baselines:
            raise _unknown_reference("baseline", node.name, column, baselines)
        if (
            isinstance(node, ProductStep)
            and node.operator == "/"
            and not has_references(node.operand)
        ):
            divisor = _Evaluation(formula, {}, {}, start=index + 1, constant=True)
            if divisor.value(node.operand).is_zero():
                raise _division_by_zero(column, constant=True)
    if not has_references(formula.expression):
        _Evaluation(formula, {}, {}, start=0, constant=True).value(formula.expression)


class _Evaluation:
    """One walk over the tree, computing values and pairing each node with its column.

    The walk visits nodes in exactly `preorder`'s order, taking the next column on entering
    each one, so `start` lets a walk begin at any node (validation evaluates a divisor alone).
    """

    def __init__(
        self,
        formula: Formula,
        metrics: Mapping[str, Decimal],
        baselines: Mapping[str, Decimal],
        *,
        start: int,
        constant: bool,
    ) -> None:
        self._columns = formula.columns
        self._next = start
        self._metrics = metrics
        self._baselines = baselines
        self._constant = constant
        self.context = decimal_context()

    def _enter(self) -> int:
        column = self._columns[self._next]
        self._next += 1
        return column

    def value(self, node: Expression) -> Decimal:  # noqa: PLR0911 (one return per kind of node)
        column = self._enter()
        context = self.context
        match node:
            case Number(value=value):
                return value
            case MetricReference(name=name):
                return self._input("metric", name, self._metrics, column)
            case BaselineReference(name=name):
                return self._input("baseline", name, self._baselines, column)
            case Negation(operand=operand):
                return self.checked(column, "'-'", partial(context.minus, self.value(operand)))
            case Absolute(operand=operand):
                return self.checked(column, "abs", partial(context.abs, self.value(operand)))
            case Rounding(operand=operand, places=places):
                quantum = Decimal((0, (1,), -places))
                unrounded = self.value(operand)
                return self.checked(
                    column, "round", partial(unrounded.quantize, quantum, context=context)
                )
            case Minimum(arguments=arguments):
                return min([self.value(argument) for argument in arguments])
            case Maximum(arguments=arguments):
                return max([self.value(argument) for argument in arguments])
            case Sum(first=first, rest=rest):
                total = self.value(first)
                for sum_step in rest:
                    operator_column = self._enter()
                    term = self.value(sum_step.operand)
                    add = context.add if sum_step.operator == "+" else context.subtract
                    total = self.checked(
                        operator_column, f"'{sum_step.operator}'", partial(add, total, term)
                    )
                return total
            case Product(first=first, rest=rest):
                total = self.value(first)
                for step in rest:
                    operator_column = self._enter()
                    factor = self.value(step.operand)
                    if step.operator == "/" and factor.is_zero():
                        raise _division_by_zero(operator_column, constant=self._constant)
                    combine = context.multiply if step.operator == "*" else context.divide
                    total = self.checked(
                        operator_column, f"'{step.operator}'", partial(combine, total, factor)
                    )
                return total
            case _:
                assert_never(node)

    def checked(self, column: int, operation: str, compute: Callable[[], Decimal]) -> Decimal:
        """Run one decimal operation, reporting any failure, and any result at or above the
        magnitude limit, at the operation's column."""
        try:
            result = compute()
        except ArithmeticError:
            raise _too_large(column, operation) from None
        if result.copy_abs() >= MAGNITUDE_LIMIT:
            raise _too_large(column, operation)
        return result

    def _input(self, kind: str, name: str, values: Mapping[str, Decimal], column: int) -> Decimal:
        if name not in values:
            raise FormulaError(
                column,
                f"no value for {kind} {name!r}",
                f"supply a value for every {kind} the formula references",
            )
        value = values[name]
        if not isinstance(value, Decimal) or not value.is_finite():
            raise FormulaError(
                column,
                f"value of {kind} {name!r} is not a finite decimal ({value!r})",
                "supply a Decimal; measurements are never floats, NaN or infinite",
            )
        if value.copy_abs() >= MAGNITUDE_LIMIT:
            raise FormulaError(
                column,
                f"value of {kind} {name!r} is {_LIMIT_TEXT} or more in magnitude",
                f"values must stay below {_LIMIT_TEXT}, so check the measurement's units",
            )
        return self.checked(column, f"{kind}.{name}", partial(self.context.plus, value))


def _division_by_zero(column: int, *, constant: bool) -> FormulaError:
    if constant:
        return FormulaError(column, "division by zero", "the divisor is always 0")
    return FormulaError(
        column,
        "division by zero",
        "the divisor is 0 for these inputs; guard it, as in x / max(divisor, 1)",
    )


def _too_large(column: int, operation: str) -> FormulaError:
    return FormulaError(
        column,
        f"result of {operation} is {_LIMIT_TEXT} or more in magnitude",
        f"values must stay below {_LIMIT_TEXT}, so check the inputs' units",
    )


def _unknown_reference(kind: str, name: str, column: int, known: Set[str]) -> FormulaError:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    if close:
        remedy = f"did you mean {kind}.{close[0]}?"
    elif known:
        listed = ", ".join(sorted(known)[:10]) + (", ..." if len(known) > 10 else "")
        remedy = f"known {kind}s: {listed}"
    else:
        remedy = f"no {kind}s are configured yet; add {name!r} in the metrics step first"
    return FormulaError(column, f"unknown {kind} {name!r}", remedy)
