"""From a study definition and the store's tables to the cohort, the comparison pool
and the per-cohort matching frames. Pure functions of DataFrames.

Timing: a school's cohort ``g`` is the first academic year whose results follow
its joining (``calendar.first_exposed_year``); event time ``e = year - g``.

Exposure (``[cohort] exposure``):

- ``ever_joined`` (the default): the studied membership is the school's first membership of the
  studied types; what happens after (leaving, moving trust) is part of the effect of joining
  (intention to treat).
- ``moved`` (re-brokerage): the studied event is the school's first move from one partnership of
  the studied types to another (a studied membership that begins within ``MOVE_GAP_DAYS`` of the
  school leaving another); ``g`` is the first year of results in the new partnership and
  ``partnership_id`` is the new one. A mover must have been in the partnership it left since
  ``settled_years`` before the start of its own window (``g + window[0] - settled_years``), so
  its years before the move are years in a partnership, not before joining one. Comparison
  schools are stayers: in one partnership of the studied types, without moving or leaving, from
  ``settled_years`` before the earliest cohort's window start to the latest cohort's window end;
  the pool rule (never / not yet) applies to their own first move.
  What is estimated is the effect of moving rather than staying (after the move, intention to treat).
- ``in_partnership``: as ``ever_joined`` for who is treated and compared, but the analysis panel
  carries a ``treatment`` column that is 1 while the school is a member of a partnership of the
  studied types (it switches off when the school leaves and on again if it re-joins), with a row
  for every school and year (outcome missing where unpublished), for the de Chaisemartin &
  D'Haultfoeuille estimator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from evaluation.data.calendar import first_exposed_year, last_exposed_year
from evaluation.data.pupil_cells import PupilCells
from evaluation.data.store import fingerprint_tables
from evaluation.errors import InputError, problem
from evaluation.study import CONTEXT_COVARIATES, Study


#: A studied membership that begins at most this many days after the school left another
#: partnership of the studied types is a move (GIAS records re-brokerage as leaving on one day
#: and joining the next; a few weeks allow for slow paperwork).
MOVE_GAP_DAYS = 31


@dataclass
class StudyData:
    """The store's tables as a study needs them (typed, as ``Store.read_table`` gives them)."""
    schools: pd.DataFrame
    partnerships: pd.DataFrame
    memberships: pd.DataFrame
    school_years: pd.DataFrame  # urn, year, the outcome, context columns
    truth: pd.DataFrame | None = None  # synthetic panels only
    truth_moves: pd.DataFrame | None = None  # synthetic panels only: the effect of moving trust vs staying
    school_attributes: pd.DataFrame | None = None  # urn, attribute, value: the user's (heterogeneity)
    fingerprint: str | None = None  # the store's data fingerprint (Store.fingerprint), when read from a store
    pupils: PupilCells | None = None  # pupil-level studies: the pupils aggregated (evaluation.data.pupil_cells)

    @property
    def years(self) -> tuple[int, int]:
        y = self.school_years["year"]
        return int(y.min()), int(y.max())


@dataclass
class Cohort:
    """Treated schools (one row each) and the comparison pool."""
    treated: pd.DataFrame  # urn, g, partnership_id, partnership_type, role, joined, region, la_code
    pool: pd.DataFrame  # urn, own_g (first exposure to the studied types, NaN if never), region, la_code
    notes: list[str] = field(default_factory=list)

    @property
    def cohorts(self) -> list[int]:
        return sorted(int(g) for g in self.treated["g"].unique())


def studied_memberships(study: Study, data: StudyData) -> pd.DataFrame:
    """Memberships of the studied partnership types, with their first exposed year."""
    m = data.memberships.merge(data.partnerships[["partnership_id", "type", "sponsor_led"]],
                               on="partnership_id", how="left")
    m = m[m["type"].isin(study.cohort.partnership_types)]
    if study.cohort.sponsor_led is not None:
        m = m[m["sponsor_led"].fillna(False).astype(bool) == study.cohort.sponsor_led]
    m = m.assign(g=first_exposed_year(m["joined"]), last=last_exposed_year(m["left"]))
    return m.sort_values(["urn", "joined", "partnership_id"], kind="stable")


def _after_previous(m: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """For memberships sorted by school and date: days from the previous row's leaving date to this
    row's joining date (NaN for a school's first row or when the previous row has not left), and
    whether the previous row is of the same partnership."""
    urn = m["urn"].to_numpy()
    pid = m["partnership_id"].astype(str).to_numpy()
    joined = pd.to_datetime(m["joined"]).to_numpy()
    left = pd.to_datetime(m["left"]).to_numpy()
    gap = np.full(len(m), np.nan)
    same_pid = np.zeros(len(m), dtype=bool)
    if len(m) > 1:
        follows = (urn[1:] == urn[:-1]) & ~np.isnat(left[:-1])
        gap[1:] = np.where(follows, (joined[1:] - left[:-1]) / np.timedelta64(1, "D"), np.nan)
        same_pid[1:] = pid[1:] == pid[:-1]
    return gap, same_pid


def first_stays(studied: pd.DataFrame) -> pd.DataFrame:
    """Per school (index urn), its first stay in one partnership of the studied types: ``g`` of its
    first studied membership and ``last``, the last exposed year of that membership or of the
    memberships of the same partnership that follow it within ``MOVE_GAP_DAYS`` (a record split in
    two is one stay)."""
    m = studied.reset_index(drop=True)
    gap, same_pid = _after_previous(m)
    with np.errstate(invalid="ignore"):
        cont = same_pid & (gap <= MOVE_GAP_DAYS)  # row i continues row i - 1's stay
    urn = m["urn"].to_numpy()
    first_row = np.r_[True, urn[1:] != urn[:-1]] if len(m) else np.zeros(0, dtype=bool)
    # rows of each school's first stay: its first row and the unbroken run of continuations after it
    stay_id = np.cumsum(~cont)
    in_first = np.isin(stay_id, stay_id[first_row])
    return m[in_first].groupby("urn").agg(g=("g", "first"), last=("last", "max"))


def studied_moves(studied: pd.DataFrame) -> pd.DataFrame:
    """Each school's first move between partnerships of the studied types (see the module
    docstring): the new membership's row, with ``moved_from`` (the partnership left) and
    ``since`` (the first year of results in the partnership left)."""
    m = studied.reset_index(drop=True)
    gap, same_pid = _after_previous(m)
    with np.errstate(invalid="ignore"):
        move = ~same_pid & (gap >= 0) & (gap <= MOVE_GAP_DAYS)
    prev = np.flatnonzero(move) - 1
    pid = m["partnership_id"].astype(str).to_numpy()
    out = m[move].assign(moved_from=pid[prev], since=m["g"].to_numpy()[prev].astype("int64"))
    return out.drop_duplicates("urn", keep="first")


def build_cohort(study: Study, data: StudyData) -> Cohort:
    """The treated schools and the comparison pool; impossible specs are InputErrors."""
    c = study.cohort
    first, last = data.years
    lo, hi = study.outcome.window
    g0, g1 = c.joined_between
    if g0 + lo < first or g1 + hi > last:
        raise InputError(problem(
            f"the event window {list(study.outcome.window)} around joining in {g0}-{g1} needs data for "
            f"{g0 + lo}-{g1 + hi}, but the store has {first}-{last}: narrow the window or the joining years",
            column="outcome.window", value=list(study.outcome.window)))
    schools = data.schools
    eligible = schools["phase"] == c.phase
    if c.regions:
        eligible &= schools["region"].isin(c.regions)
    if c.la_codes:
        eligible &= schools["la_code"].isin(c.la_codes)
    in_scope = schools.loc[eligible, ["urn", "region", "la_code", "urban_rural"]]

    studied = studied_memberships(study, data)
    notes = []
    if c.exposure == "moved":
        first_m = studied_moves(studied)
    else:
        first_m = studied.drop_duplicates("urn", keep="first")
    treated = first_m[first_m["g"].between(g0, g1) & first_m["urn"].isin(in_scope["urn"])]
    if c.role != "any":
        treated = treated[treated["role"] == c.role]
    if c.exposure == "moved":
        late = treated["since"] > treated["g"] + lo - c.settled_years
        if late.any():
            notes.append(f"{int(late.sum())} school(s) that moved had been in the partnership they left for less "
                         f"than {c.settled_years - lo} year(s) before moving: not studied")
        treated = treated[~late]
    if treated.empty:
        other = first_m[first_m["urn"].isin(in_scope["urn"])]["g"].value_counts().sort_index()
        seen = ", ".join(f"{int(k)}: {int(v)}" for k, v in other.items()) or "none"
        raise InputError(problem(
            f"the cohort is empty: no {c.phase} school "
            + ("moved between partnerships of the types " if c.exposure == "moved" else "first joined ")
            + f"{'/'.join(c.partnership_types)}"
            f"{'' if c.sponsor_led is None else (' (sponsor-led)' if c.sponsor_led else ' (not sponsor-led)')} "
            f"with first exposure in {g0}-{g1}"
            f"{'' if c.role == 'any' else f' as {c.role}'} (schools in scope by first exposure year: {seen})",
            column="cohort.joined_between", value=[g0, g1]))
    treated = treated.merge(in_scope, on="urn", how="left")
    treated = treated[["urn", "g", "partnership_id", "type", "role", "joined", "region", "la_code",
                       "urban_rural"]].rename(columns={"type": "partnership_type"}).reset_index(drop=True)

    own_g = first_m.set_index("urn")["g"]
    pool = in_scope[~in_scope["urn"].isin(treated["urn"])].copy()
    pool["own_g"] = pool["urn"].map(own_g).astype("float64")
    excluded = set(study.comparison.exclude_urns)
    if study.comparison.exclude_types:
        m = data.memberships.merge(data.partnerships[["partnership_id", "type"]], on="partnership_id")
        excluded |= set(m.loc[m["type"].isin(study.comparison.exclude_types), "urn"])
    pool = pool[~pool["urn"].isin(excluded)]
    if c.exposure == "moved":
        # stayers: in one studied partnership, without moving or leaving, across every cohort's window
        first = first_stays(studied)
        stays = first["g"].le(g0 + lo - c.settled_years) & first["last"].ge(g1 + hi)
        pool = pool[pool["urn"].map(stays).fillna(False).astype(bool)]
        notes.append(f"comparison pool: schools in one partnership of the studied types from "
                     f"{g0 + lo - c.settled_years} to {g1 + hi} without moving or leaving")
    if study.comparison.pool == "never":
        pool = pool[pool["own_g"].isna()]
        notes.append("comparison pool: schools that never moved" if c.exposure == "moved" else
                     "comparison pool: schools that never joined the studied partnership types")
    else:
        # may join later, but only after the latest cohort's window has closed
        pool = pool[pool["own_g"].isna() | (pool["own_g"] > g1 + hi)]
        notes.append(f"comparison pool: schools that had not moved by {g1 + hi}" if c.exposure == "moved" else
                     f"comparison pool: schools not (yet) in the studied partnership types by {g1 + hi}")
    if pool.empty:
        raise InputError(problem("the comparison pool is empty: every eligible school joined the studied types",
                                 column="comparison.pool", value=study.comparison.pool))
    return Cohort(treated, pool.reset_index(drop=True), notes)


def pre_features(wide: pd.DataFrame, years: list[int]) -> pd.DataFrame:
    """Level (mean), trend (OLS slope per year) and last value over the given years."""
    cols = [y for y in years if y in wide.columns]
    block = wide.reindex(columns=years)
    x = np.array(years, dtype=float)
    vals = block.to_numpy(dtype=float)
    ok = ~np.isnan(vals)
    n = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        level = np.nansum(vals, axis=1) / n
        xm = np.where(ok, x, 0).sum(axis=1) / n
        dx = np.where(ok, x - xm[:, None], 0.0)
        slope = (dx * np.nan_to_num(vals - level[:, None])).sum(axis=1) / (dx**2).sum(axis=1)
        last_idx = np.where(ok, np.arange(len(years)), -1).max(axis=1)
        last = np.where(last_idx >= 0, vals[np.arange(len(vals)), np.maximum(last_idx, 0)], np.nan)
    slope = np.where(n >= 2, slope, np.nan)
    del cols
    out = pd.DataFrame({"pre_n": n, "pre_level": level, "pre_trend": slope, "pre_last": last}, index=wide.index)
    for k in (1, 2, 3):  # the outcome k years before joining
        out[f"pre_y{k}"] = vals[:, -k] if len(years) >= k else np.nan
    return out


def matching_frame(study: Study, data: StudyData, cohort: Cohort, g: int) -> tuple[pd.DataFrame, dict]:
    """One row per treated school of cohort ``g`` and per pool school eligible for it,
    with the matching covariates measured over the pre-years ``g + lo .. g - 1``.

    Returns the frame (columns urn, treated, region, la_code + covariates) and counts of
    schools dropped for too few pre-years or missing covariates (by group)."""
    lo, _ = study.outcome.window
    pre_years = list(range(g + lo, g))
    y = study.outcome.name
    sy = data.school_years
    wide = sy.pivot(index="urn", columns="year", values=y)
    feats = pre_features(wide, pre_years)
    ctx = sy[sy["year"].isin(pre_years)].groupby("urn")[list(CONTEXT_COVARIATES)].mean()
    treated = cohort.treated[cohort.treated["g"] == g][["urn", "region", "la_code", "urban_rural"]].assign(treated=1)
    pool = cohort.pool
    if study.comparison.pool == "not_yet":
        pool = pool[pool["own_g"].isna() | (pool["own_g"] > g + study.outcome.window[1])]
    pool = pool[["urn", "region", "la_code", "urban_rural"]].assign(treated=0)
    frame = pd.concat([treated, pool], ignore_index=True)
    frame = frame.join(feats, on="urn").join(ctx, on="urn")
    frame["urban"] = (frame["urban_rural"] == "urban").astype(float)
    last_grade = sy.loc[sy["year"] == g - 1].set_index("urn")["ofsted_grade"]
    frame["ofsted_last"] = frame["urn"].map(last_grade).astype("float64")
    frame["pre_n"] = frame["pre_n"].fillna(0)
    covs = list(study.matching.covariates)
    enough = frame["pre_n"] >= study.cohort.min_pre_years
    complete = frame[covs].notna().all(axis=1)
    counts = {
        "treated_few_pre_years": int(((frame.treated == 1) & ~enough).sum()),
        "treated_missing_covariates": int(((frame.treated == 1) & enough & ~complete).sum()),
        "pool_dropped": int(((frame.treated == 0) & ~(enough & complete)).sum()),
    }
    frame = frame[enough & complete].reset_index(drop=True)
    frame["la_code"] = frame["la_code"].astype("int64")
    frame["region"] = frame["region"].astype(str)
    return frame, counts


def data_fingerprint(data: StudyData) -> str:
    """The data fingerprint of the store the tables came from (``evaluation.data.store.fingerprint_tables``,
    the one definition ``impact data info`` prints), as the loader recorded it; for tables not read
    from a store, computed from the frames themselves by the same definition."""
    if data.fingerprint is not None:
        return data.fingerprint
    return fingerprint_tables({"schools": data.schools, "partnerships": data.partnerships,
                               "memberships": data.memberships, "school_years": data.school_years})
