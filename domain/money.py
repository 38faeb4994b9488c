"""Money: turning a formula's value into the amount billed, by the rules of docs/formula.md.

The rules (section "Money" of docs/formula.md), in the order `billable_amount` applies them:

1. A billed amount is a whole number of the currency's minor units, by its ISO 4217 exponent
   (`MINOR_UNIT_EXPONENTS`: 2 for cents, 0 for JPY).
2. The amount is ``value * share / 100``, `share` a percentage (``35.5`` is 35.5 %), computed
   in the formula language's decimal context (34 significant digits, half-even) with no
   rounding to cents on the way.
3. It is rounded once, to minor units, half-even.
4. A negative amount bills nothing: ``max(amount, 0)``.
5. Then the floor and the cap, whole minor units, apply: ``min(max(amount, floor), cap)``.

Everything is `Decimal` or `int`; floats never enter. The functions are pure, so the calculation
aggregate, invoicing and the tests all get the same cents from the same inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from types import MappingProxyType
from typing import Final, Literal, TypeAlias

import msgspec

from domain.formula import MAGNITUDE_LIMIT, decimal_context

MINOR_UNIT_EXPONENTS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "AUD": 2,
        "CAD": 2,
        "CHF": 2,
        "DKK": 2,
        "EUR": 2,
        "GBP": 2,
        "JPY": 0,
        "NOK": 2,
        "NZD": 2,
        "SEK": 2,
        "USD": 2,
    }
)
"""ISO 4217 minor-unit exponents of the currencies a customer account can be billed in
(`domain.customer.SUPPORTED_CURRENCIES`; a test keeps the two lists equal). Explicit rather
than from a library, so an upstream change of the standard cannot move an amount silently."""

MAX_MINOR_UNITS: Final = 2**53 - 1
"""The largest amount the ledger can store as a JSON integer (docs/receipts.md, section 3)."""

MAX_SHARE_PERCENT: Final = Decimal(100)
"""A share of value is a percentage from 0 to 100: the vendor never bills more than the value."""

Bound: TypeAlias = Literal["floor", "cap"]
"""Which term of the pricing decided the amount, when one did."""

_HUNDRED: Final = Decimal(100)


class BillableAmount(msgspec.Struct, frozen=True, kw_only=True):
    """An amount billed: whole minor units of `currency`, and which bound set it, if one did.

    `bound` is ``"floor"`` when the floor raised the amount, ``"cap"`` when the cap lowered it,
    and None when the rounded share of value stood as it was (a negative value billing 0 is
    not a bound: it is rule 4).
    """

    minor: int
    currency: str
    bound: Bound | None = None

    @property
    def major(self) -> Decimal:
        """The amount in major units, with exactly the currency's number of decimals."""
        return major_units(self.minor, self.currency)


def minor_unit_exponent(currency: str) -> int:
    """The ISO 4217 exponent of `currency`: how many decimals its minor unit has."""
    try:
        return MINOR_UNIT_EXPONENTS[currency]
    except KeyError:
        raise ValueError(
            f"currency {currency!r} has no minor-unit exponent; "
            f"use one of {', '.join(MINOR_UNIT_EXPONENTS)}"
        ) from None


def major_units(minor: int, currency: str) -> Decimal:
    """`minor` units as major units: 306256 EUR cents is 3062.56, 1234 yen is 1234."""
    return Decimal(minor).scaleb(-minor_unit_exponent(currency))


def major_units_text(minor: int, currency: str) -> str:
    """`major_units` as the plain decimal string receipts store: ``"3062.56"``, ``"0.00"``."""
    return format(major_units(minor, currency), "f")


def billable_amount(
    value: Decimal,
    share_percent: Decimal,
    floor_minor: int | None,
    cap_minor: int | None,
    currency: str,
) -> BillableAmount:
    """What a period with formula value `value` bills, under the given pricing terms.

    The amount can exceed `MAX_MINOR_UNITS` (the ledger's limit) when the terms have no cap;
    callers that store it check. Arguments outside the rules (an unknown currency, a share
    outside 0 to 100, a negative floor or cap, a floor above the cap, a value that is not a
    finite decimal below 10^22 in magnitude) raise `ValueError`: they are checked before.
    """
    exponent = minor_unit_exponent(currency)
    _check_terms(value, share_percent, floor_minor, cap_minor)
    context = decimal_context()
    amount = context.divide(context.multiply(value, share_percent), _HUNDRED)
    rounded = amount.quantize(
        Decimal((0, (1,), -exponent)), rounding=ROUND_HALF_EVEN, context=context
    )
    minor = max(int(rounded.scaleb(exponent, context)), 0)
    bound: Bound | None = None
    if floor_minor is not None and minor < floor_minor:
        minor, bound = floor_minor, "floor"
    if cap_minor is not None and minor > cap_minor:
        minor, bound = cap_minor, "cap"
    return BillableAmount(minor=minor, currency=currency, bound=bound)


def _check_terms(
    value: Decimal, share_percent: Decimal, floor_minor: int | None, cap_minor: int | None
) -> None:
    if not value.is_finite() or value.copy_abs() >= MAGNITUDE_LIMIT:
        raise ValueError(f"value {value} is not a finite decimal below 10^22 in magnitude")
    if not share_percent.is_finite() or not 0 <= share_percent <= MAX_SHARE_PERCENT:
        raise ValueError(f"share {share_percent} is not a percentage from 0 to 100")
    for name, bound in (("floor", floor_minor), ("cap", cap_minor)):
        if bound is not None and not 0 <= bound <= MAX_MINOR_UNITS:
            raise ValueError(f"{name} {bound} is not a number of minor units from 0 to 2^53-1")
    if floor_minor is not None and cap_minor is not None and floor_minor > cap_minor:
        raise ValueError(f"floor {floor_minor} is above cap {cap_minor}")
