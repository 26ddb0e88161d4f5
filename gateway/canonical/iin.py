"""Kazakhstan IIN (individual identification number) validation and masking.

An IIN is 12 ASCII digits: the date of birth as YYMMDD, a century-and-sex digit (1-2: born in the 1800s,
3-4: 1900s, 5-6: 2000s; odd male, even female), four serial digits and a check digit. The check digit is the
weighted sum of the first 11 digits modulo 11 with weights 1..11; when that is 10, weights 3..11,1,2; when
that is 10 again the number has no check digit and is never issued. Eleven zeros carry no information (every
weighted sum is 0), so `000000000000` is refused on its check digit too.
"""

from __future__ import annotations

from datetime import date

_W1 = tuple(range(1, 12))
_W2 = (3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2)
_CENTURY = {"1": 1800, "2": 1800, "3": 1900, "4": 1900, "5": 2000, "6": 2000}

# Which rule a refused IIN broke, in the order they are checked; the text is safe to show (no digits echoed).
FORMAT = "format"
CHECK_DIGIT = "check-digit"
CENTURY_DIGIT = "century-digit"
BIRTH_DATE = "birth-date"
RULES = {
    FORMAT: "an IIN is exactly 12 ASCII digits",
    CHECK_DIGIT: "the check digit (12th) does not match the first 11 digits",
    CENTURY_DIGIT: "the century digit (7th) must be 1-6",
    BIRTH_DATE: "digits 1-6 are not a calendar date of birth (YYMMDD)",
}


def iin_check_digit(first11: str) -> int | None:
    """Check digit for the first 11 digits, or None when the number can have none."""
    digits = [int(c) for c in first11]
    if not any(digits):
        return None
    check = sum(d * w for d, w in zip(digits, _W1)) % 11
    if check == 10:
        check = sum(d * w for d, w in zip(digits, _W2)) % 11
        if check == 10:
            return None
    return check


def iin_problem(value: str) -> str | None:
    """The first rule `value` breaks (a key of RULES), or None for a valid IIN."""
    if len(value) != 12 or not value.isascii() or not value.isdigit():
        return FORMAT
    if iin_check_digit(value[:11]) != int(value[11]):
        return CHECK_DIGIT
    century = _CENTURY.get(value[6])
    if century is None:
        return CENTURY_DIGIT
    try:
        date(century + int(value[0:2]), int(value[2:4]), int(value[4:6]))
    except ValueError:
        return BIRTH_DATE
    return None


def is_valid_iin(value: str) -> bool:
    return iin_problem(value) is None


def mask_iin(value: str) -> str:
    """`900101300017` -> `9001******17`: enough to tell records apart, not to identify."""
    if len(value) < 6:
        return "*" * len(value)
    return value[:4] + "*" * (len(value) - 6) + value[-2:]
