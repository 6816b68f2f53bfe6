"""Stage: match each joining cohort to comparison schools on its own pre-years, and balance.

Per cohort, nearest-neighbour (logit or Mahalanobis distance), families of similar schools
or no matching, with the MatchIt definitions of weights and balance (``evaluation.matching``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from evaluation.errors import InputError, problem
from evaluation.matching import MatchResult, balance, family_of_schools, match
from evaluation.stages.cohort import Cohort, StudyData, matching_frame
from evaluation.study import Study

SMD_THRESHOLD = 0.1

@dataclass
class MatchedCohort:
    g: int
    frame: pd.DataFrame  # the matching frame (one row per candidate school)
    result: MatchResult | None  # None when matching.method == "none"
    weights: np.ndarray
    counts: dict


def match_cohorts(study: Study, data: StudyData, cohort: Cohort, say: Callable[[str], None]) -> list[MatchedCohort]:
    """Match each joining cohort to pool schools on its own pre-years."""
    spec = study.matching
    out = []
    for g in cohort.cohorts:
        frame, counts = matching_frame(study, data, cohort, g)
        n_t = int(frame["treated"].sum())
        n_c = int((frame["treated"] == 0).sum())
        say(f"  cohort {g}: {n_t} partnership schools, {n_c} candidate comparison schools")
        if n_t == 0:
            out.append(MatchedCohort(g, frame, None, np.zeros(len(frame)), counts))
            continue
        if n_c == 0:
            raise InputError(problem(f"no comparison schools with enough pre-{g} data for cohort {g}",
                                     column="comparison.pool"))
        covs = list(spec.covariates)
        exact = list(spec.exact) or None
        if spec.method == "none":
            res = None
            weights = np.ones(len(frame))
        elif spec.method == "family":
            res = family_of_schools(frame, "treated", covs, k=spec.family_size, id="urn", exact=exact)
            weights = res.weights
        else:
            try:
                res = match(frame, "treated", covs, id="urn", exact=exact,
                            distance="mahalanobis" if spec.method == "mahalanobis" else "logit",
                            ratio=spec.ratio, replace=spec.replace,
                            caliper=spec.caliper if spec.method == "nearest" else None)
            except InputError as err:
                if "no treated unit could be matched" not in err.render():
                    raise
                # this cohort's schools have no comparison school within the caliper: they are counted
                # as unmatched (the sample flow says so) and the other cohorts go on
                say(f"    cohort {g}: no partnership school has a comparison school within the caliper")
                counts["treated_unmatched"] = n_t
                out.append(MatchedCohort(g, frame, None, np.zeros(len(frame)), counts))
                continue
            weights = res.weights
        counts["treated_unmatched"] = int(((frame["treated"] == 1) & (weights == 0)).sum())
        out.append(MatchedCohort(g, frame, res, np.asarray(weights, dtype=float), counts))
    if not any(((m.frame["treated"] == 1).to_numpy() & (m.weights > 0)).any() for m in out):
        few = sum(m.counts["treated_few_pre_years"] for m in out)
        missing = sum(m.counts["treated_missing_covariates"] for m in out)
        unmatched = sum(m.counts.get("treated_unmatched", 0) for m in out)
        lo = study.outcome.window[0]
        raise InputError(problem(
            f"no partnership school can be matched: {few} have fewer than {study.cohort.min_pre_years} years of "
            f"results in the {-lo} year(s) before joining, {missing} miss a matching characteristic (a "
            f"covariate such as pre_y3 needs 3 years before joining: the window starts at {lo}) and {unmatched} "
            f"have no comparison school within the caliper",
            column="matching.covariates", value=list(spec.covariates)))
    return out


def treated_lost(n_found: int, matched: list[MatchedCohort], n_analysed: int) -> dict[str, int]:
    """The partnership schools found but not analysed, by the step that lost them (the sample flow):
    before matching (too few pre-joining years, a missing matching characteristic), at matching (no
    comparison school within the caliper) and after it (no outcome in the study window)."""
    lost = {"too_few_pre_years": sum(m.counts["treated_few_pre_years"] for m in matched),
            "missing_covariates": sum(m.counts["treated_missing_covariates"] for m in matched),
            "no_match_within_caliper": sum(m.counts.get("treated_unmatched", 0) for m in matched)}
    lost["no_outcome_in_window"] = n_found - sum(lost.values()) - n_analysed
    return lost


def pooled_balance(study: Study, matched: list[MatchedCohort]) -> pd.DataFrame:
    """Balance over all cohorts together, before and after matching (MatchIt definitions)."""
    frames = [m.frame.assign(_w=m.weights) for m in matched if m.frame["treated"].sum() > 0]
    frame = pd.concat(frames, ignore_index=True)
    covs = list(study.matching.covariates)
    before = balance(frame, "treated", covs)
    after = balance(frame, "treated", covs, weights=frame["_w"].to_numpy())
    table = pd.DataFrame({
        "mean_treated": after["Means Treated"], "mean_comparison_before": before["Means Control"],
        "mean_comparison_after": after["Means Control"], "smd_before": before["Std. Mean Diff."],
        "smd_after": after["Std. Mean Diff."], "variance_ratio_before": before["Var. Ratio"],
        "variance_ratio_after": after["Var. Ratio"],
    })
    table.index.name = "covariate"
    return table
