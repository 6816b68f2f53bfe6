"""Number formatting rules shared by the result builders and the book (no I/O, no imports from either)."""

from __future__ import annotations


def sign_safe_decimals(x: float, digits: int = 2, most: int = 10) -> int:
    """Decimals to print ``x`` with: ``digits``, or more (up to ``most``) when ``digits`` would
    round a non-zero value to zero and hide its sign (-0.002 needs 3, not 2)."""
    d = digits
    while x != 0 and d < most and round(abs(float(x)), d) == 0:
        d += 1
    return d


def json_value(v):
    """A value as result.json stores it: NumPy scalars to Python, NaN to None (JSON has no NaN)."""
    import math

    if isinstance(v, float) or (hasattr(v, "dtype") and getattr(v.dtype, "kind", "") == "f"):
        v = float(v)
        return None if math.isnan(v) else v
    if hasattr(v, "dtype") and getattr(v.dtype, "kind", "") in "iu":
        return int(v)
    return v
