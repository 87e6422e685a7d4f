"""The NHS number and the unique pupil number (UPN): checks and canonical form.

An NHS number is 10 digits whose last is a modulus-11 check digit: the first
nine digits are weighted 10 down to 2, the check digit is 11 minus the sum
modulo 11 (11 becomes 0), and a result of 10 means the number is not valid
(NHS Data Dictionary, "NHS Number"). People write it ``943 476 5919`` or
``943-476-5919``; input may carry spaces and hyphens, the event stores the ten
digits alone.

A UPN is 13 characters: a check letter, 11 digits, and a digit or (for a
temporary UPN) a letter. The check letter is the sum of characters 2-13
weighted 2..13, modulo 23, as a letter of ``ABCDEFGHJKLMNPQRTUVWXYZ`` (letters
count by their place in that alphabet, digits by their value). DfE, "Unique
Pupil Numbers (UPNs): guidance".

Messages name what is wrong, never the value (it identifies a child).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

#: Separators tolerated in typed input; the canonical form has none.
_SEPARATORS: Final = str.maketrans("", "", " -")

_UPN_LETTERS: Final = "ABCDEFGHJKLMNPQRTUVWXYZ"


def nhs_check_digit(nine: str) -> int | None:
    """The check digit of the first nine digits, or None when it would be 10 (invalid)."""
    b = nine.encode()
    if len(b) == 9 and b.isdigit():  # ASCII digits (every event's NHS number is checked)
        total = (10 * b[0] + 9 * b[1] + 8 * b[2] + 7 * b[3] + 6 * b[4] + 5 * b[5] + 4 * b[6]
                 + 3 * b[7] + 2 * b[8] - 54 * 48)  # the weights sum to 54; b"0" is 48
    else:
        total = sum(int(d) * w for d, w in zip(nine, range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        return 0
    return None if check == 10 else check


def nhs_problem(value: str) -> str | None:
    """Why ``value`` (canonical form expected) is not an NHS number; None if it is one."""
    if len(value) != 10 or not value.isascii() or not value.isdigit():
        return "not an NHS number (10 digits expected)"
    check = nhs_check_digit(value[:9])
    if check is None:
        return "not an NHS number (its check value is 10, which no NHS number has)"
    if check != int(value[9]):
        return "not an NHS number (the modulus-11 check digit does not match)"
    return None


def is_nhs_number(value: str) -> bool:
    """True if ``value`` is ten digits with a valid modulus-11 check digit."""
    return nhs_problem(value) is None


def canonical_nhs_number(value: str) -> str:
    """``value`` without the spaces and hyphens people type into it.

    Only separators are removed; whether the result is an NHS number is for
    :func:`nhs_problem` to say (so the error names the field, not a value).
    """
    return value.translate(_SEPARATORS)


def upn_check_letter(twelve: str) -> str | None:
    """The check letter for UPN characters 2-13, or None if one cannot be a UPN character."""
    total = 0
    for weight, ch in enumerate(twelve, 2):
        if ch.isascii() and ch.isdigit():
            value = int(ch)
        elif ch in _UPN_LETTERS:
            value = _UPN_LETTERS.index(ch)
        else:
            return None
        total += weight * value
    return _UPN_LETTERS[total % 23]


def upn_problem(value: str) -> str | None:
    """Why ``value`` (canonical form expected) is not a UPN; None if it is one."""
    if len(value) != 13 or not value.isascii():
        return "not a UPN (13 characters expected)"
    if not value[1:12].isdigit() or not (value[12].isdigit() or value[12] in _UPN_LETTERS):
        return "not a UPN (a check letter, 11 digits, then a digit or a letter expected)"
    if upn_check_letter(value[1:]) != value[0]:
        return "not a UPN (the check letter does not match)"
    return None


def canonical_upn(value: str) -> str:
    """``value`` in capitals without spaces or hyphens."""
    return value.translate(_SEPARATORS).upper()


def with_canonical_identifiers(event: Mapping[str, Any]) -> Mapping[str, Any]:
    """``event`` with its subject's NHS number and UPN in canonical form.

    Returns ``event`` itself when nothing needs changing (the common case), a
    shallow copy with a new subject otherwise; the caller's dict is never changed.
    """
    subject = event.get("subject")
    if not isinstance(subject, Mapping):
        return event
    changes: dict[str, str] = {}
    for name, canonical in (("nhs_number", canonical_nhs_number), ("upn", canonical_upn)):
        value = subject.get(name)
        if isinstance(value, str) and canonical(value) != value:
            changes[name] = canonical(value)
    if not changes:
        return event
    return {**event, "subject": {**subject, **changes}}
