"""How numbers appear in the report's tables: one function per kind of quantity, with a dash
for a value that is absent (a set or variant a run did not produce)."""
from __future__ import annotations

import math
from typing import Any

MISSING = "–"


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def percent(value: Any, digits: int = 1) -> str:
    """A value already in percent (EM, F1, rates): 43.25 -> '43.2'."""
    number = _number(value)
    return MISSING if number is None else f"{number:.{digits}f}"


def count(value: Any) -> str:
    """An integer with thousands separators: 1234567 -> '1,234,567'."""
    number = _number(value)
    return MISSING if number is None else f"{round(number):,}"


def share(value: Any) -> str:
    """A percentage that may be tiny (trainable parameters): three significant digits."""
    number = _number(value)
    if number is None:
        return MISSING
    return f"{number:.3g}" if number < 100 else f"{number:.1f}"


_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def bytes_size(value: Any) -> str:
    """Bytes in binary units: 1572864 -> '1.5 MiB'; below 1 KiB as a plain count."""
    number = _number(value)
    if number is None:
        return MISSING
    unit = 0
    while abs(number) >= 1024 and unit < len(_BINARY_UNITS) - 1:
        number /= 1024
        unit += 1
    return f"{int(number)} B" if unit == 0 else f"{number:.1f} {_BINARY_UNITS[unit]}"


def seconds(value: Any) -> str:
    """A duration: below 1 s in milliseconds ('250 ms'), otherwise '12.3 s'."""
    number = _number(value)
    if number is None:
        return MISSING
    return f"{number * 1000:.0f} ms" if number < 1 else f"{number:.1f} s"


def decimal(value: Any, digits: int = 2) -> str:
    number = _number(value)
    return MISSING if number is None else f"{number:.{digits}f}"


def flag(value: Any) -> str:
    if value is None:
        return MISSING
    return "yes" if value else "no"


def text(value: Any) -> str:
    return MISSING if value is None or value == "" else str(value)


def scalar(value: Any) -> str:
    """A value of unknown meaning (generic data statistics): ints with separators, floats
    with up to four significant digits, anything else as text."""
    if isinstance(value, bool):
        return flag(value)
    if isinstance(value, int):
        return count(value)
    if isinstance(value, float):
        return MISSING if not math.isfinite(value) else f"{value:.4g}"
    return text(value)


def interval(estimate: Any, low: Any, high: Any, digits: int = 1, signed: bool = False) -> str:
    """A statistic with its interval: '77.3 [70.1, 84.0]' (signed: '+3.2 [-1.0, +7.5]', for
    differences); the estimate alone where the interval is undefined."""
    middle = _number(estimate)
    if middle is None:
        return MISSING
    spec = f"{'+' if signed else ''}.{digits}f"
    lower, upper = _number(low), _number(high)
    if lower is None or upper is None:
        return f"{middle:{spec}}"
    return f"{middle:{spec}} [{lower:{spec}}, {upper:{spec}}]"


def signed_interval(difference: Any, low: Any, high: Any, digits: int = 1) -> str:
    """A difference with its interval and explicit signs: '+3.2 [-1.0, +7.5]'."""
    return interval(difference, low, high, digits, signed=True)


def p_value(value: Any) -> str:
    """A p-value to three significant digits: 0.0004998 -> '0.0005'."""
    number = _number(value)
    return MISSING if number is None else f"{number:.3g}"
