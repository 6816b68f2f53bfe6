"""Academic years and exposure timing.

Years are academic-year ends: 2019 means 2018/19 (1 September 2018 to 31 August 2019).
Tests (KS2 SATs in May, GCSEs in May-June) fall in the summer term, so a school that
joins a partnership by the end of March has its first results "under" the partnership
in that academic year; one that joins from April onwards is first exposed the next year.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Months (1-12) from which a join counts towards the next academic year's results.
EXPOSURE_CUTOFF_MONTH = 4


def academic_year(dates) -> np.ndarray:
    """Academic year (year it ends) containing each date; NaT -> -1."""
    d = pd.DatetimeIndex(pd.to_datetime(pd.Series(dates)))
    years = np.where(d.month >= 9, d.year + 1, d.year)
    return np.where(d.isna(), -1, years).astype(np.int64)


def first_exposed_year(joined) -> np.ndarray:
    """First academic year whose summer results follow joining (see module docstring)."""
    d = pd.DatetimeIndex(pd.to_datetime(pd.Series(joined)))
    ay = academic_year(joined)
    late = (d.month >= EXPOSURE_CUTOFF_MONTH) & (d.month < 9)
    return np.where(d.isna(), -1, np.where(late, ay + 1, ay)).astype(np.int64)


def last_exposed_year(left) -> np.ndarray:
    """Last academic year whose summer results came while still a member (NaT -> large)."""
    d = pd.DatetimeIndex(pd.to_datetime(pd.Series(left)))
    ay = academic_year(left)
    early = (d.month >= 9) | (d.month < EXPOSURE_CUTOFF_MONTH)  # left before the exams
    return np.where(d.isna(), 9999, np.where(early, ay - 1, ay)).astype(np.int64)
