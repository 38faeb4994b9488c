"""The formula tree: what a value formula means, with nothing about how it was typed.

Nodes are small frozen msgspec Structs with explicit, stable tags, so a tree can be encoded
as JSON and a class renamed without changing stored bytes. Two formulas that mean the same
thing have equal trees whatever their spacing or redundant parentheses: positions live beside
the tree, in `Formula.columns`, not in it.

Chains such as ``a + b - c`` are one flat `Sum` (and ``a * b / c`` one `Product`) rather than
a left-leaning binary tree, so a long but simple formula stays shallow: the tree's depth is
bounded by the nesting limit, and nothing that walks it can run out of stack.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Literal, NamedTuple, TypeAlias, assert_never

import msgspec


class Number(msgspec.Struct, frozen=True, tag="num"):
    """A decimal literal as written; never negative (``-5`` is a `Negation` of 5)."""

    value: Decimal


class MetricReference(msgspec.Struct, frozen=True, tag="metric"):
    """``metric.<name>``: the metric's measured value for the period being calculated."""

    name: str


class BaselineReference(msgspec.Struct, frozen=True, tag="baseline"):
    """``baseline.<name>``: the metric's agreed starting value, from the setup wizard."""

    name: str


class Negation(msgspec.Struct, frozen=True, tag="neg"):
    """Unary minus."""

    operand: Expression


class SumStep(msgspec.Struct, frozen=True):
    """One ``+ operand`` or ``- operand`` after the first term of a `Sum`."""

    operator: Literal["+", "-"]
    operand: Expression


class Sum(msgspec.Struct, frozen=True, tag="sum"):
    """``first + a - b ...``, evaluated left to right; `rest` is never empty."""

    first: Expression
    rest: tuple[SumStep, ...]


class ProductStep(msgspec.Struct, frozen=True):
    """One ``* operand`` or ``/ operand`` after the first factor of a `Product`."""

    operator: Literal["*", "/"]
    operand: Expression


class Product(msgspec.Struct, frozen=True, tag="product"):
    """``first * a / b ...``, evaluated left to right; `rest` is never empty."""

    first: Expression
    rest: tuple[ProductStep, ...]


class Minimum(msgspec.Struct, frozen=True, tag="min"):
    """``min(a, b, ...)``: the smallest argument (a cap written into the formula)."""

    arguments: tuple[Expression, ...]


class Maximum(msgspec.Struct, frozen=True, tag="max"):
    """``max(a, b, ...)``: the largest argument (a floor, or a guard against dividing by 0)."""

    arguments: tuple[Expression, ...]


class Absolute(msgspec.Struct, frozen=True, tag="abs"):
    """``abs(x)``."""

    operand: Expression


class Rounding(msgspec.Struct, frozen=True, tag="round"):
    """``round(x, places)``: half-even to `places` decimals; places is a literal 0..12."""

    operand: Expression
    places: int


Expression: TypeAlias = (
    Number
    | MetricReference
    | BaselineReference
    | Negation
    | Sum
    | Product
    | Minimum
    | Maximum
    | Absolute
    | Rounding
)
Node: TypeAlias = Expression | SumStep | ProductStep
"""Everything that has a column: expressions, and the operator steps of chains."""


class FormulaReferences(NamedTuple):
    """The metric and baseline names a formula reads, for checks and for asking for inputs."""

    metrics: frozenset[str]
    baselines: frozenset[str]


class Formula(msgspec.Struct, frozen=True):
    """A parsed value formula: the text as submitted, what it means, and where each part sits.

    `columns` holds the 1-based column of every node of `expression`, in the order `preorder`
    visits them (a node before its parts, parts left to right; for a chain's step, the column
    of its operator). Errors found later, at validation or evaluation, point at the text with
    them. Build formulas with `parse_formula`, never by hand, so the three always agree.
    """

    text: str
    expression: Expression
    columns: tuple[int, ...]

    def references(self) -> FormulaReferences:
        """The metric and baseline names the formula reads."""
        metrics: set[str] = set()
        baselines: set[str] = set()
        for node in preorder(self.expression):
            if isinstance(node, MetricReference):
                metrics.add(node.name)
            elif isinstance(node, BaselineReference):
                baselines.add(node.name)
        return FormulaReferences(frozenset(metrics), frozenset(baselines))

    def __str__(self) -> str:
        """The canonical text: parsing it gives back an equal `expression`."""
        return render(self.expression)


def preorder(node: Node) -> Iterator[Node]:
    """Every node of the tree, each before its parts, parts in the order they are written."""
    yield node
    match node:
        case Number() | MetricReference() | BaselineReference():
            pass
        case Negation(operand=operand) | Absolute(operand=operand) | Rounding(operand=operand):
            yield from preorder(operand)
        case Sum(first=first, rest=sum_steps):
            yield from preorder(first)
            for sum_step in sum_steps:
                yield from preorder(sum_step)
        case Product(first=first, rest=product_steps):
            yield from preorder(first)
            for product_step in product_steps:
                yield from preorder(product_step)
        case SumStep(operand=operand) | ProductStep(operand=operand):
            yield from preorder(operand)
        case Minimum(arguments=arguments) | Maximum(arguments=arguments):
            for argument in arguments:
                yield from preorder(argument)
        case _:
            assert_never(node)


def has_references(expression: Expression) -> bool:
    """Whether the value depends on inputs; if not, it is known when the formula is submitted."""
    return any(
        isinstance(node, MetricReference | BaselineReference) for node in preorder(expression)
    )


# How tightly each kind of node holds together when written out; an operand is parenthesised
# when it holds no tighter than the place it is written in.
_SUM_BINDING = 1
_PRODUCT_BINDING = 2
_NEGATION_BINDING = 3
_ATOM_BINDING = 4


def render(expression: Expression) -> str:  # noqa: PLR0911 (one return per kind of node)
    """The canonical text of a tree: single spaces around binary operators, ``, `` between
    arguments, and only the parentheses the tree needs."""
    match expression:
        case Number(value=value):
            return format(value, "f")
        case MetricReference(name=name):
            return f"metric.{name}"
        case BaselineReference(name=name):
            return f"baseline.{name}"
        case Negation(operand=operand):
            return "-" + _operand(operand, _PRODUCT_BINDING)
        case Sum(first=first, rest=sum_steps):
            return _operand(first, _SUM_BINDING) + "".join(
                f" {step.operator} {_operand(step.operand, _SUM_BINDING)}" for step in sum_steps
            )
        case Product(first=first, rest=product_steps):
            return _operand(first, _PRODUCT_BINDING) + "".join(
                f" {step.operator} {_operand(step.operand, _PRODUCT_BINDING)}"
                for step in product_steps
            )
        case Minimum(arguments=arguments):
            return f"min({', '.join(render(argument) for argument in arguments)})"
        case Maximum(arguments=arguments):
            return f"max({', '.join(render(argument) for argument in arguments)})"
        case Absolute(operand=operand):
            return f"abs({render(operand)})"
        case Rounding(operand=operand, places=places):
            return f"round({render(operand)}, {places})"
        case _:
            assert_never(expression)


def _binding(expression: Expression) -> int:
    if isinstance(expression, Sum):
        return _SUM_BINDING
    if isinstance(expression, Product):
        return _PRODUCT_BINDING
    if isinstance(expression, Negation):
        return _NEGATION_BINDING
    return _ATOM_BINDING


def _operand(expression: Expression, place: int) -> str:
    text = render(expression)
    return f"({text})" if _binding(expression) <= place else text
