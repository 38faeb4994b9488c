"""Reading a formula's text into a `Formula`, or a `FormulaError` naming the column at fault.

A hand-written scanner and recursive-descent parser: nothing of Python's own parser or `eval`
is involved, so a formula can only ever be arithmetic over the inputs. Every limit is checked
while reading, before anything can grow: the text's length, each literal's digits, the
nesting depth (which bounds the parser's recursion) and each function's arguments. The
scanner is pulled one token at a time, so the error reported is always the first one in the
text.
"""

from __future__ import annotations

import re
import string
from decimal import Decimal
from typing import Final, Literal

import msgspec

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
    SumStep,
)

MAX_FORMULA_LENGTH: Final = 2000
"""Characters; a value formula is a line of arithmetic, not a program."""
MAX_NESTING: Final = 32
"""Parentheses, function calls and unary minus nested in one another."""
MAX_INTEGER_DIGITS: Final = 22
"""Digits before a literal's decimal point, not counting leading zeros: every literal is below
the evaluation's magnitude limit of 10^22."""
MAX_FRACTION_DIGITS: Final = 12
"""Digits after a literal's decimal point: the scale of every result."""
MAX_ARGUMENTS: Final = 32
"""Arguments of one min or max call (at least 2)."""
MAX_ROUND_PLACES: Final = 12
"""round(x, places) takes places from 0 to this, the scale of every result."""

FUNCTIONS: Final = ("min", "max", "abs", "round")
NAME_PATTERN: Final = re.compile(r"[a-z][a-z0-9_]{0,62}")
"""Metric and baseline names: what the metrics configuration step accepts."""

_DIGITS: Final = frozenset(string.digits)
_WORD_START: Final = frozenset(string.ascii_letters + "_")
_WORD_PART: Final = _WORD_START | _DIGITS
_SPACE: Final = frozenset(" \t")
_SYMBOLS: Final = frozenset("+-*/(),")
_REFERENCE_KINDS: Final = ("metric", "baseline")
_USAGE: Final = {
    "min": "min(a, b)",
    "max": "max(a, b)",
    "abs": "abs(value)",
    "round": "round(value, 2)",
}
_FUNCTION_LIST: Final = "use min, max, abs or round"
_STARTS_OPERAND: Final = "a number, metric.<name>, baseline.<name>, a function or '('"
_NAME_RULE: Final = "names are 1 to 63 lowercase letters, digits or '_', starting with a letter"


class _Token(msgspec.Struct, frozen=True):
    kind: Literal["number", "word", "metric", "baseline", "symbol", "end"]
    text: str
    """Digits for a number, the word, the name of a reference, the symbol itself, or ''."""
    column: int


def parse_formula(text: str) -> Formula:
    """Read a value formula, refusing anything outside the language with a `FormulaError`.

    Parsing checks syntax and limits only; `validate` checks the formula against the customer's
    metrics and baselines when it is submitted.
    """
    if len(text) > MAX_FORMULA_LENGTH:
        raise FormulaError(
            MAX_FORMULA_LENGTH + 1,
            f"formula is longer than {MAX_FORMULA_LENGTH:,} characters",
            "shorten it, or split the value into several definitions",
        )
    parser = _Parser(text)
    expression = parser.formula()
    return Formula(text=text, expression=expression, columns=tuple(parser.columns))


def _describe(token_text: str, kind: str) -> str:
    """How a token is named in messages: quoted, or by code point when it cannot be seen."""
    if kind == "end":
        return "the end of the formula"
    if kind in _REFERENCE_KINDS:
        return _quote(f"{kind}.{token_text}")
    return _quote(token_text)


def _quote(text: str) -> str:
    shown = text if len(text) <= 40 else text[:37] + "..."
    if len(shown) == 1 and (not shown.isprintable() or shown.isspace()):
        return f"U+{ord(shown):04X}"
    return f"'{shown}'" if shown.isprintable() else repr(shown)


class _Scanner:
    """Cuts the text into tokens on demand, refusing malformed numbers and names as it goes."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._at = 0

    def next_significant_character(self) -> str:
        """The next character that is not a space, without consuming anything ('' at the end)."""
        at = self._at
        while at < len(self._text) and self._text[at] in _SPACE:
            at += 1
        return self._text[at] if at < len(self._text) else ""

    def next_token(self) -> _Token:
        text = self._text
        while self._at < len(text) and text[self._at] in _SPACE:
            self._at += 1
        if self._at == len(text):
            return _Token(kind="end", text="", column=len(text) + 1)
        character = text[self._at]
        column = self._at + 1
        if character in _DIGITS:
            return self._number()
        if character in _WORD_START:
            return self._word()
        if character in _SYMBOLS:
            self._at += 1
            return _Token(kind="symbol", text=character, column=column)
        if character == "." and text[self._at + 1 : self._at + 2] in _DIGITS:
            raise FormulaError(
                column, "number starts with '.'", "write a digit before the point, as in 0.5"
            )
        raise FormulaError(
            column,
            f"unexpected character {_quote(character)}",
            "formulas use numbers, metric.<name>, baseline.<name>, + - * /, parentheses "
            "and min, max, abs, round",
        )

    def _run(self, allowed: frozenset[str]) -> str:
        start = self._at
        while self._at < len(self._text) and self._text[self._at] in allowed:
            self._at += 1
        return self._text[start : self._at]

    def _number(self) -> _Token:
        column = self._at + 1
        integer_digits = self._run(_DIGITS)
        fraction_digits = ""
        if self._text[self._at : self._at + 1] == ".":
            self._at += 1
            fraction_digits = self._run(_DIGITS)
            if not fraction_digits:
                raise FormulaError(
                    self._at + 1,
                    "missing digits after the decimal point",
                    f"write {integer_digits}.0 or {integer_digits}",
                )
        follower = self._text[self._at : self._at + 1]
        if follower and (follower in _WORD_PART or follower == "."):
            raise FormulaError(
                self._at + 1,
                f"unexpected {_quote(follower)} right after a number",
                "write numbers as plain decimals such as 1500 or 0.35, without exponents "
                "or separators",
            )
        significant = len(integer_digits.lstrip("0"))
        if significant > MAX_INTEGER_DIGITS:
            raise FormulaError(
                column,
                f"number has {significant} digits before the decimal point",
                f"at most {MAX_INTEGER_DIGITS} are allowed, as values must stay below 10^22",
            )
        if len(fraction_digits) > MAX_FRACTION_DIGITS:
            raise FormulaError(
                column,
                f"number has {len(fraction_digits)} digits after the decimal point",
                f"at most {MAX_FRACTION_DIGITS} are allowed",
            )
        digits = f"{integer_digits}.{fraction_digits}" if fraction_digits else integer_digits
        return _Token(kind="number", text=digits, column=column)

    def _word(self) -> _Token:
        column = self._at + 1
        word = self._run(_WORD_PART)
        if self._text[self._at : self._at + 1] != ".":
            return _Token(kind="word", text=word, column=column)
        if word not in _REFERENCE_KINDS:
            raise FormulaError(
                column,
                f"{_quote(word + '.')} is not a reference",
                "references are metric.<name> or baseline.<name>",
            )
        self._at += 1
        name_column = self._at + 1
        name = self._run(_WORD_PART)
        if not name:
            raise FormulaError(
                name_column,
                f"missing {word} name after '{word}.'",
                f"write {word}.<name>, as in {word}.revenue",
            )
        if not NAME_PATTERN.fullmatch(name):
            raise FormulaError(name_column, f"{word} name {_quote(name)} is not valid", _NAME_RULE)
        kind: Literal["metric", "baseline"] = "metric" if word == "metric" else "baseline"
        return _Token(kind=kind, text=name, column=column)


class _Parser:
    """Recursive descent over the grammar in docs/formula.md, one method per rule.

    `columns` collects each node's column in preorder. A chain only turns out to be a `Sum` or
    `Product` after its first operand has been read, so its column is inserted before that
    operand's columns then.
    """

    def __init__(self, text: str) -> None:
        self._scanner = _Scanner(text)
        self._token = self._scanner.next_token()
        self._depth = 0
        self.columns: list[int] = []

    def formula(self) -> Expression:
        if self._token.kind == "end":
            raise FormulaError(
                self._token.column,
                "formula is empty",
                "write an expression such as metric.revenue * 0.1",
            )
        expression = self._sum()
        if not self._at_end():
            closing = self._is_symbol(")")
            raise self._unexpected(
                "an operator (+ - * /) or the end of the formula",
                "remove it, or add the matching '('"
                if closing
                else "join the parts with an operator such as + or *",
            )
        return expression

    def _sum(self) -> Expression:
        start, column = len(self.columns), self._token.column
        first = self._product()
        steps: list[SumStep] = []
        while self._token.kind == "symbol" and self._token.text in "+-":
            operator: Literal["+", "-"] = "+" if self._token.text == "+" else "-"
            self.columns.append(self._advance().column)
            steps.append(SumStep(operator=operator, operand=self._product()))
        if not steps:
            return first
        self.columns.insert(start, column)
        return Sum(first=first, rest=tuple(steps))

    def _product(self) -> Expression:
        start, column = len(self.columns), self._token.column
        first = self._unary()
        steps: list[ProductStep] = []
        while self._token.kind == "symbol" and self._token.text in "*/":
            operator: Literal["*", "/"] = "*" if self._token.text == "*" else "/"
            self.columns.append(self._advance().column)
            steps.append(ProductStep(operator=operator, operand=self._unary()))
        if not steps:
            return first
        self.columns.insert(start, column)
        return Product(first=first, rest=tuple(steps))

    def _unary(self) -> Expression:
        if not self._is_symbol("-"):
            return self._primary()
        minus = self._advance()
        self._enter(minus)
        self.columns.append(minus.column)
        operand = self._unary()
        self._depth -= 1
        return Negation(operand=operand)

    def _primary(self) -> Expression:
        token = self._token
        if token.kind == "number":
            self._advance()
            self.columns.append(token.column)
            return Number(value=Decimal(token.text))
        if token.kind == "metric":
            self._advance()
            self.columns.append(token.column)
            return MetricReference(name=token.text)
        if token.kind == "baseline":
            self._advance()
            self.columns.append(token.column)
            return BaselineReference(name=token.text)
        if token.kind == "word":
            return self._call()
        if self._is_symbol("("):
            self._enter(token)
            self._advance()
            inner = self._sum()
            self._close(f"close the '(' at column {token.column}")
            self._depth -= 1
            return inner
        raise self._unexpected(_STARTS_OPERAND, self._operand_remedy())

    def _operand_remedy(self) -> str:
        if self._token.kind == "end":
            return "complete the formula"
        if self._is_symbol("+"):
            return "write the value without '+', as there is no unary plus"
        if self._is_symbol(")") or self._is_symbol(","):
            return "write the missing value before it"
        return "write a value or '(' here"

    def _call(self) -> Expression:
        word = self._token
        name = word.text
        if self._scanner.next_significant_character() != "(":
            raise self._not_a_call(word)
        if name not in FUNCTIONS:
            raise FormulaError(word.column, f"unknown function {_quote(name)}", _FUNCTION_LIST)
        self._enter(word)
        self.columns.append(word.column)
        self._advance()
        self._advance()  # the "(" just seen
        close_remedy = f"close the '(' of {name} at column {word.column}"
        call: Expression
        if name == "abs":
            operand = self._sum()
            if self._is_symbol(","):
                raise FormulaError(
                    self._token.column, "abs takes one argument, found ','", "write abs(value)"
                )
            call = Absolute(operand=operand)
        elif name == "round":
            operand = self._sum()
            if not self._is_symbol(","):
                raise self._unexpected(
                    "',' and the number of decimal places", "write round(value, 2)"
                )
            self._advance()
            call = Rounding(operand=operand, places=self._places())
        else:
            arguments = self._arguments(name)
            call = Minimum(arguments=arguments) if name == "min" else Maximum(arguments=arguments)
        self._close(close_remedy)
        self._depth -= 1
        return call

    def _arguments(self, name: str) -> tuple[Expression, ...]:
        arguments = [self._sum()]
        while self._is_symbol(","):
            self._advance()
            if len(arguments) == MAX_ARGUMENTS:
                raise FormulaError(
                    self._token.column,
                    f"{name} takes at most {MAX_ARGUMENTS} arguments",
                    f"nest calls, as in {name}({name}(a, b), c)",
                )
            arguments.append(self._sum())
        if len(arguments) < 2 and self._is_symbol(")"):
            raise FormulaError(
                self._token.column,
                f"{name} needs at least 2 arguments, found 1",
                f"write {_USAGE[name]}",
            )
        return tuple(arguments)

    def _places(self) -> int:
        token = self._token
        if (
            token.kind != "number"
            or "." in token.text
            or int(token.text.lstrip("0") or "0") > MAX_ROUND_PLACES
        ):
            raise FormulaError(
                token.column,
                f"round places must be a whole number from 0 to {MAX_ROUND_PLACES}, found "
                + _describe(token.text, token.kind),
                "write round(value, 2) to round to hundredths",
            )
        self._advance()
        return int(token.text)

    def _not_a_call(self, word: _Token) -> FormulaError:
        name = word.text
        if name in _REFERENCE_KINDS:
            return FormulaError(
                word.column,
                f"{_quote(name)} needs a name",
                f"write {name}.<name>, as in {name}.revenue",
            )
        if name in FUNCTIONS:
            return FormulaError(
                word.column,
                f"function {_quote(name)} needs its arguments in parentheses",
                f"write {_USAGE[name]}",
            )
        remedy = (
            f"write metric.{name} or baseline.{name}"
            if NAME_PATTERN.fullmatch(name)
            else "references are metric.<name> or baseline.<name>"
        )
        return FormulaError(word.column, f"{_quote(name)} is not a reference", remedy)

    def _close(self, remedy: str) -> None:
        if self._is_symbol(")"):
            self._advance()
            return
        if self._token.kind == "end":
            raise FormulaError(self._token.column, "missing ')'", remedy)
        raise self._unexpected("')'", remedy)

    def _enter(self, token: _Token) -> None:
        self._depth += 1
        if self._depth > MAX_NESTING:
            raise FormulaError(
                token.column,
                f"formula nests deeper than {MAX_NESTING} levels",
                "simplify it; parentheses, function calls and unary minus each add a level",
            )

    def _at_end(self) -> bool:
        return self._token.kind == "end"

    def _is_symbol(self, symbol: str) -> bool:
        return self._token.kind == "symbol" and self._token.text == symbol

    def _advance(self) -> _Token:
        token = self._token
        self._token = self._scanner.next_token()
        return token

    def _unexpected(self, expected: str, remedy: str) -> FormulaError:
        found = _describe(self._token.text, self._token.kind)
        return FormulaError(self._token.column, f"expected {expected}, found {found}", remedy)
