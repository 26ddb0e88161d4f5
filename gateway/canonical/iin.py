"""Kazakhstan IIN (individual identification number) validation and masking."""

from __future__ import annotations

_W1 = tuple(range(1, 12))
_W2 = (3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2)


def iin_check_digit(first11: str) -> int | None:
    """Check digit for the first 11 digits, or None when the number can have none."""
    digits = [int(c) for c in first11]
    check = sum(d * w for d, w in zip(digits, _W1)) % 11
    if check == 10:
        check = sum(d * w for d, w in zip(digits, _W2)) % 11
        if check == 10:
            return None
    return check


def is_valid_iin(value: str) -> bool:
    if len(value) != 12 or not value.isascii() or not value.isdigit():
        return False
    if value[6] not in "123456":
        return False
    month, day = int(value[2:4]), int(value[4:6])
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return False
    return iin_check_digit(value[:11]) == int(value[11])


def mask_iin(value: str) -> str:
    """`900101300017` -> `9001******17`: enough to tell records apart, not to identify."""
    if len(value) < 6:
        return "*" * len(value)
    return value[:4] + "*" * (len(value) - 6) + value[-2:]
