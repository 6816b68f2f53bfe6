"""Stage: what the matched data look like (outcome trends by event time) and, on synthetic data,
the effect the generator planted (the truth every estimate is checked against)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from evaluation.stages.cohort import Cohort, StudyData
from evaluation.stages.match import MatchedCohort
from evaluation.stages.panel import _lookup, _matched_long
from evaluation.study import Study

def trends(study: Study, data: StudyData, matched: list[MatchedCohort]) -> list[dict]:
    """Mean outcome by event time for partnership schools and their matched comparison
    schools (each comparison school aligned on the joining year of the cohort it matched)."""
    sy = data.school_years.set_index(["urn", "year"])[study.outcome.name].astype("float64")
    long = _matched_long(study, matched)
    long["y"] = _lookup(sy, long["urn"], long["year"])
    long = long[long["y"].notna()]
    out = []
    for (t, e), grp in long.groupby(["treated", "e"], sort=True):
        out.append({"group": "partnership" if t == 1 else "comparison", "e": int(e),
                    "mean": float(np.average(grp["y"], weights=grp["w"])), "n_schools": int(len(grp))})
    return out


def synthetic_truth(study: Study, data: StudyData, cohort: Cohort, panel: pd.DataFrame,
                    matched: list[MatchedCohort]) -> dict | None:
    """The planted effect of the studied membership on the analysed treated schools
    (synthetic data only): by event time, and averaged over post-joining school-years
    within the window (the estimand of the "simple" aggregation)."""
    if data.truth is None or data.truth.empty or (study.cohort.exposure == "moved" and data.truth_moves is None):
        return None
    cells = planted_cells(study, data, cohort, panel)
    by_e = cells.groupby("e")["effect"].mean()
    post = cells[cells["e"] >= 0]
    return {"note": "synthetic data: the effect planted by the generator on the analysed partnership schools",
            "overall": float(post["effect"].mean()),
            "event_time": [{"e": int(e), "effect": float(v)} for e, v in by_e.items()],
            "did_of_all_planted_effects": _did_of_planted(study, data, matched)}


def planted_cells(study: Study, data: StudyData, cohort: Cohort, panel: pd.DataFrame,
                  pupil_mix: bool = True) -> pd.DataFrame:
    """The analysed partnership schools' school-years within the window (urn, year, e) with the
    effect the generator planted there through the studied membership (``effect``); for a study of
    moves (``exposure = "moved"``), the effect of having moved rather than stayed; for a switching
    treatment (``exposure = "in_partnership"``), only the years in the partnership after joining
    (the estimand is the effect per year of membership)."""
    lo, hi = study.outcome.window
    col = f"effect_{study.outcome.name}"
    treated = cohort.treated[cohort.treated["urn"].isin(panel.loc[panel["cohort"] > 0, "urn"])]
    truth = data.truth_moves if study.cohort.exposure == "moved" else data.truth
    if truth is None:
        truth = data.truth.iloc[:0]
    t = truth.merge(treated[["urn", "partnership_id", "g"]], on=["urn", "partnership_id"])
    eff = t.set_index(["urn", "year"])[col].groupby(level=[0, 1]).sum()
    keep = (panel["cohort"] > 0) & panel["y"].notna()
    if "treatment" in panel:  # a switching treatment: the effect per year in the partnership (treated cells)
        keep &= (panel["treatment"] == 1) | (panel["year"] < panel["cohort"])
    cells = panel[keep][["urn", "year", "cohort"]].copy()
    cells["e"] = cells["year"] - cells["cohort"]
    cells = cells[cells["e"].between(lo, hi)]
    cells["effect"] = [float(eff.get((u, y), 0.0)) for u, y in zip(cells["urn"], cells["year"])]
    if pupil_mix and data.pupils is not None and data.pupils.truth is not None:  # the pupils in the sample: their mix of groups
        cells["effect"] *= pupil_mix_factor(cells, panel, data.pupils.truth)
    return cells


def pupil_mix_factor(cells: pd.DataFrame, panel: pd.DataFrame, truth: pd.DataFrame) -> np.ndarray:
    """Per school-year, the planted effect on the mean of the pupils in the sample over the planted
    effect on the school: the generator gives disadvantaged and other pupils effects in a fixed ratio
    whose pupil-weighted mean over all the school's pupils is the school's effect (factors in ``truth``)."""
    m = cells[["urn", "year"]].merge(panel[["urn", "year", "n_disadvantaged", "n_other"]], on=["urn", "year"],
                                     how="left").merge(truth, on=["urn", "year"], how="left")
    fd = m["factor_disadvantaged"].fillna(1.0).to_numpy()
    fo = m["factor_other"].fillna(1.0).to_numpy()
    nd = m["n_disadvantaged"].fillna(0).to_numpy()
    no = m["n_other"].fillna(0).to_numpy()
    total = nd + no
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (nd * fd + no * fo) / np.where(total > 0, total, 1), 1.0)


def planted_overall(study: Study, data: StudyData, cohort: Cohort, panel: pd.DataFrame) -> float | None:
    """The mean planted effect over the analysed partnership schools' post-joining school-years in the
    window (the estimand of the "simple" aggregation); None without a truth table."""
    if data.truth is None or data.truth.empty or (study.cohort.exposure == "moved" and data.truth_moves is None):
        return None
    post = planted_cells(study, data, cohort, panel)
    post = post[post["e"] >= 0]
    return float(post["effect"].mean()) if len(post) else None


def _did_of_planted(study: Study, data: StudyData, matched: list[MatchedCohort]) -> list[dict]:
    """What a DiD of the matched schools targets given every planted effect (the studied
    membership and any other memberships of treated and comparison schools): by event time,
    the treated schools' change in total planted effect since e = -1 minus the matched
    comparison schools' (weighted) change over the same years, averaged over cohorts by
    their numbers of treated schools."""
    col = f"effect_{study.outcome.name}"
    total = data.truth.groupby(["urn", "year"])[col].sum()
    long = _matched_long(study, matched)
    long["change"] = (_lookup(total, long["urn"], long["year"], 0.0)
                      - _lookup(total, long["urn"], long["g"] - 1, 0.0))
    long["tw"] = np.where(long["treated"] == 1, 1.0, long["w"])
    means = (long.assign(x=long["change"] * long["tw"]).groupby(["g", "e", "treated"])[["x", "tw"]].sum())
    means = (means["x"] / means["tw"]).unstack("treated")
    n_treated = long[long["treated"] == 1].groupby(["g", "e"]).size()
    frame = pd.DataFrame({"did": means[1] - means[0], "n": n_treated}).dropna().reset_index()
    out = frame.groupby("e").apply(lambda d: np.average(d["did"], weights=d["n"]), include_groups=False)
    return [{"e": int(e), "effect": float(v)} for e, v in out.items()]
