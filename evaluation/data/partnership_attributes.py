"""A school's partnership on the day it joined: how many schools were in it, and how far away
the nearest of them was. One definition, used by the heterogeneity stage (subgroups of a
study) and by the synthetic generator (which plants effects that differ by these), so that
the subgroups a study forms are exactly the groups the generator planted.

- trust size: member schools of the partnership on the joining date (memberships joined on
  or before that date and not yet left, the school itself included), counted once per school;
- distance to the nearest partner: straight-line distance in km from the school's
  easting/northing to the nearest other member school on that date with coordinates; NaN
  without coordinates or without a partner school on that date.

Fixed bins (so that studies can be compared): trust size 1-5, 6-15, 16 or more schools;
distance under 5 km, 5-20 km, 20 km or more.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: (from, up to but not including, words); None: no upper end.
TRUST_SIZE_BINS = ((1, 6, "1-5 schools"), (6, 16, "6-15 schools"), (16, None, "16 or more schools"))
DISTANCE_BINS_KM = ((0.0, 5.0, "under 5 km"), (5.0, 20.0, "5-20 km"), (20.0, None, "20 km or more"))


def bin_index(value: float, bins) -> int | None:
    """0-based index of the bin holding ``value`` (None: missing or outside every bin)."""
    if value is None or not np.isfinite(value):
        return None
    for k, (lo, hi, _) in enumerate(bins):
        if value >= lo and (hi is None or value < hi):
            return k
    return None


def partner_context(memberships: pd.DataFrame, queries: pd.DataFrame,
                    coordinates: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Trust size and distance to the nearest partner school (km) for each query row.

    ``memberships``: urn, partnership_id, joined, left (datetimes; left NaT while a member);
    ``queries``: urn, partnership_id, joined (the day to look at); ``coordinates``: indexed by
    urn with easting and northing in metres (NaN if unknown). Returns two float arrays aligned
    with ``queries``."""
    joined = pd.to_datetime(memberships["joined"]).to_numpy()
    left = pd.to_datetime(memberships["left"]).to_numpy()
    urns = memberships["urn"].to_numpy()
    groups = pd.Series(np.arange(len(memberships))).groupby(memberships["partnership_id"].to_numpy()).indices
    coords = coordinates.reindex(columns=["easting", "northing"]).astype("float64")
    size = np.full(len(queries), np.nan)
    dist = np.full(len(queries), np.nan)
    q_urn = queries["urn"].to_numpy()
    q_pid = queries["partnership_id"].to_numpy()
    q_day = pd.to_datetime(queries["joined"]).to_numpy()
    for i in range(len(queries)):
        rows = groups.get(q_pid[i], np.array([], dtype=np.int64))
        day = q_day[i]
        on = (joined[rows] <= day) & (np.isnat(left[rows]) | (left[rows] > day))
        members = np.unique(np.append(urns[rows[on]], q_urn[i]))
        size[i] = len(members)
        others = members[members != q_urn[i]]
        if len(others) and q_urn[i] in coords.index:
            here = coords.loc[q_urn[i]].to_numpy()
            there = coords.reindex(others).to_numpy()
            ok = np.isfinite(there).all(axis=1)
            if ok.any() and np.isfinite(here).all():
                dist[i] = float(np.min(np.hypot(*(there[ok] - here).T))) / 1000.0
    return size, dist
