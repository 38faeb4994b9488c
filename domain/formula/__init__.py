"""The value formula language: safe decimal arithmetic over a customer's metrics and baselines.

A value definition says what the vendor's product is worth to the customer as a formula, such
as ``(metric.revenue - baseline.revenue) * 0.35``. The formula is read by our own parser (never
Python's `eval`), checked against the customer's metrics when it is submitted, and evaluated
per period with a fixed decimal context. Every problem is a `FormulaError` pointing at the
column to fix. The language, its limits and the rounding rules are in docs/formula.md.
"""

from __future__ import annotations

from domain.formula.errors import FormulaError
from domain.formula.evaluation import (
    MAGNITUDE_LIMIT,
    PRECISION,
    RESULT_PLACES,
    ROUNDING,
    decimal_context,
    evaluate,
    validate,
)
from domain.formula.parser import (
    FUNCTIONS,
    MAX_ARGUMENTS,
    MAX_FORMULA_LENGTH,
    MAX_FRACTION_DIGITS,
    MAX_INTEGER_DIGITS,
    MAX_NESTING,
    MAX_ROUND_PLACES,
    NAME_PATTERN,
    parse_formula,
)
from domain.formula.syntax import (
    Absolute,
    BaselineReference,
    Expression,
    Formula,
    FormulaReferences,
    Maximum,
    MetricReference,
    Minimum,
    Negation,
    Node,
    Number,
    Product,
    ProductStep,
    Rounding,
    Sum,
    SumStep,
    preorder,
    render,
)

__all__ = [
    "FUNCTIONS",
    "MAGNITUDE_LIMIT",
    "MAX_ARGUMENTS",
    "MAX_FORMULA_LENGTH",
    "MAX_FRACTION_DIGITS",
    "MAX_INTEGER_DIGITS",
    "MAX_NESTING",
    "MAX_ROUND_PLACES",
    "NAME_PATTERN",
    "PRECISION",
    "RESULT_PLACES",
    "ROUNDING",
    "Absolute",
    "BaselineReference",
    "Expression",
    "Formula",
    "FormulaError",
    "FormulaReferences",
    "Maximum",
    "MetricReference",
    "Minimum",
    "Negation",
    "Node",
    "Number",
    "Product",
    "ProductStep",
    "Rounding",
    "Sum",
    "SumStep",
    "decimal_context",
    "evaluate",
    "parse_formula",
    "preorder",
    "render",
    "validate",
]
