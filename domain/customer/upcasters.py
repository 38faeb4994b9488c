"""Reading the customer's old event shapes as their current ones (see `domain.upcasting`).

`CustomerRegistered` schema 1 (written before the billing contact could change) held the
contact in three flat fields; schema 2 nests them in one `billing_contact` object, the shape
`BillingContactChanged` records too, so a contact is always read and replaced whole:

    schema 1: billing_contact_name_sealed, billing_contact_email_sealed,
              billing_contact_phone_sealed (optional)
    schema 2: billing_contact: {name_sealed, email_sealed, phone_sealed (null when none)}

The sealed values move unchanged: they are opaque here, and still open with the same keys.

`ApiKeyIssued` schema 1 was written while API keys could read (as TECHNICAL) but not act;
schema 2 records the role a key acts in. Schema 1 reads as schema 2 with ``"role": null``: such
a key keeps exactly what it had, reading, and gains no right to act that nobody granted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from domain.upcasting import Upcaster

_V1_CONTACT_FIELDS: Final = {
    "billing_contact_name_sealed": "name_sealed",
    "billing_contact_email_sealed": "email_sealed",
    "billing_contact_phone_sealed": "phone_sealed",
}
"""Schema 1's flat field, and the field of `billing_contact` it becomes in schema 2."""


def registered_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """`CustomerRegistered` schema 1 data (``schema`` 1 or absent) as schema 2 data.

    Pure: returns a new dict and leaves `data` as it was. The contact gets exactly the shape a
    schema 2 writer stores (``phone_sealed`` null when there was no phone). A flat field that
    is missing is left missing, so decoding the result names it.
    """
    upcast = {key: value for key, value in data.items() if key not in _V1_CONTACT_FIELDS}
    contact = {new: data[old] for old, new in _V1_CONTACT_FIELDS.items() if old in data}
    contact.setdefault("phone_sealed", None)
    return {**upcast, "billing_contact": contact, "schema": 2}


def key_issued_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """`ApiKeyIssued` schema 1 data as schema 2: a key that reads and never acts."""
    return {**data, "role": None, "schema": 2}


UPCASTERS: Final[Mapping[tuple[str, int], Upcaster]] = {
    ("CustomerRegistered", 1): registered_v1_to_v2,
    ("ApiKeyIssued", 1): key_issued_v1_to_v2,
}
"""Every customer upcaster, by (event type, the schema it reads); `commands.customer` reads
the customer stream through them."""
