"""Placebo joining dates: the study's primary DiD comparison re-run as if every cohort had
joined k years earlier, on pre-joining data only, so the true effect is zero.

For k = 1..K each cohort g is given the placebo joining year g - k; comparison schools are
matched afresh on the years before g - k (the study's own matching), the placebo "post"
years are g - k .. g - 1 (window [lo, k - 1]) and every partnership school's rows from its
real joining year on are removed, so no real effect can enter (Callaway-Sant'Anna keeps
them, as its group-time cells must be identified, but only cells inside the placebo window
-- all before the real joining -- are aggregated). A placebo estimate far from
zero says the partnership and comparison schools were already drifting apart before joining
(the falsification test of Heckman & Hotz 1989; "in-time placebo" in Abadie 2021). Cohorts
whose placebo pre-years would start before the data are left out of that placebo.
"""

from __future__ import annotations

import re
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np

from evaluation.stages.cohort import Cohort, StudyData, build_cohort
from evaluation.errors import InputError, problem
from evaluation.executors import map_ordered
from evaluation.stages.estimate import headline_of, run_estimators
from evaluation.stages.match import match_cohorts
from evaluation.stages.panel import analysis_panel
from evaluation.spec import EstimationSpec, build_spec
from evaluation.study import Study

__all__ = ["PlaceboEstimate", "PlaceboResult", "placebo_dates"]

#: Estimators built from group-time cells ATT(g, t) that need every cell of the panel to have
#: treated rows; the cells after the placebo window are computed but never aggregated.
CELL_ESTIMATORS = ("callaway_santanna",)


@dataclass
class PlaceboEstimate:
    k: int  # years earlier than the real joining
    cohorts: list[int]  # placebo joining years used (real g - k)
    window: list[int]
    estimate: float | None
    se: float | None
    ci_low: float | None
    ci_high: float | None
    p: float | None
    includes_zero: bool | None
    treated_schools: int
    comparison_schools: int
    clusters: int
    notes: list[str] = field(default_factory=list)

    @property
    def z(self) -> float | None:
        return None if self.estimate is None or not self.se else self.estimate / self.se


@dataclass
class PlaceboResult:
    study_id: str
    estimator: str
    alpha: float
    placebos: list[PlaceboEstimate]
    skipped: list[str] = field(default_factory=list)

    @property
    def all_include_zero(self) -> bool:
        return all(p.includes_zero for p in self.placebos if p.includes_zero is not None)

    def to_dict(self) -> dict:
        return {"study_id": self.study_id, "estimator": self.estimator, "alpha": self.alpha,
                "all_include_zero": self.all_include_zero, "skipped": list(self.skipped),
                "placebos": [{**asdict(p), "z": p.z} for p in self.placebos]}


def pre_years_needed(study: Study) -> int:
    """Pre-years the matching covariates need (pre_y3 needs 3, trends 2) and the study's minimum."""
    need = study.cohort.min_pre_years
    for c in study.matching.covariates:
        m = re.fullmatch(r"pre_y(\d)", c)
        if m:
            need = max(need, int(m.group(1)))
        elif c == "pre_trend":
            need = max(need, 2)
    return max(need, 2)


def placebo_dates(study: Study, data: StudyData, max_k: int = 3, say=lambda m: None,
                  spec: EstimationSpec | None = None, executor: Executor | None = None) -> PlaceboResult:
    """Placebo estimates of the study's primary estimator for joining k = 1..max_k years early,
    fitted with the study's estimation specification (weights, clustering, alpha) on the placebo
    window. The placebo dates are independent tasks: ``executor`` runs them (serial when None);
    the result does not depend on which executor ran them."""
    spec = build_spec(study) if spec is None else spec
    if max_k < 1:
        raise InputError(problem(f"the number of placebo years must be at least 1, got {max_k}", value=max_k))
    cohort = build_cohort(study, data)
    task = partial(_placebo_at, study, data, cohort, spec, say if executor is None else _quiet)
    out, skipped = [], []
    for entry in map_ordered(task, range(1, max_k + 1), executor,
                             label=None if executor is None else "placebo dates"):
        (skipped if isinstance(entry, str) else out).append(entry)
    return PlaceboResult(study.id, spec.primary, study.inference.alpha, out, skipped)


def _quiet(message: str) -> None:
    """Tasks on another process have no terminal to talk to."""


def _placebo_at(study: Study, data: StudyData, cohort: Cohort, spec: EstimationSpec, say, k: int
                ) -> PlaceboEstimate | str:
    """The placebo estimate for joining ``k`` years early, or why there is none (a string)."""
    first, _ = data.years
    lo, _ = study.outcome.window
    need = pre_years_needed(study)
    primary = spec.primary
    gs = [g for g in cohort.cohorts if g - k - need >= first]
    if not gs:
        return f"k={k}: no cohort has {need} years of data before joining {k} year(s) early"
    lo_k = max(lo, first - (min(gs) - k))
    study_k = study.model_copy(update={
        "outcome": study.outcome.model_copy(update={"window": (lo_k, k - 1)}),
        "estimators": study.estimators.model_copy(update={"use": (primary,)})})
    spec_k = spec.with_(window=(lo_k, k - 1), estimators=(primary,))
    real = cohort.treated[cohort.treated["g"].isin(gs)]
    fake = Cohort(real.assign(g=real["g"] - k).reset_index(drop=True), cohort.pool, list(cohort.notes))
    say(f"placebo k={k}: cohorts {[g - k for g in gs]} (window {[lo_k, k - 1]})")
    try:
        matched = match_cohorts(study_k, data, fake, say)
    except InputError as err:  # e.g. no school has the pre-years the matching needs at the placebo date
        return f"k={k}: no partnership school could be matched at the placebo date ({err.render()})"
    panel = analysis_panel(study_k, data, fake, matched)
    notes = [f"cohorts {sorted(set(cohort.cohorts) - set(gs))} left out: too few years of data before "
             f"the placebo date"] if len(gs) < len(cohort.cohorts) else []
    real_g = panel["urn"].map(real.set_index("urn")["g"])
    after = (panel["cohort"] > 0) & (panel["year"] >= real_g)
    if primary in CELL_ESTIMATORS:
        notes.append(f"{int(after.sum())} partnership school-years from the real joining year on stay in the "
                     f"panel only for group-time cells after the placebo window, which the estimate does not "
                     f"aggregate")
    elif "treatment" in panel:  # a switching treatment needs every year: the outcomes are hidden instead
        panel = panel.assign(y=panel["y"].where(~after))
    else:
        panel = panel[~after].reset_index(drop=True)
    n_t = int(panel.loc[panel["cohort"] > 0, "urn"].nunique())
    if n_t == 0:
        return f"k={k}: no partnership school could be matched at the placebo date"
    res = run_estimators(spec_k, panel, say)[primary]
    ov = res.overall
    if ov is not None:  # the headline's inference (calibration table), as for the real dates
        h = headline_of(spec_k, panel, res)
        ov = type(ov)(h["estimate"], h["se"], h["ci_low"], h["ci_high"], h["p"])
        notes.append(f"inference: {h['description']}")
    est = None if ov is None else float(ov.estimate)
    return PlaceboEstimate(
        k=k, cohorts=[int(g - k) for g in gs], window=[int(lo_k), k - 1], estimate=est,
        se=None if ov is None else float(ov.se), ci_low=None if ov is None else float(ov.ci_low),
        ci_high=None if ov is None else float(ov.ci_high),
        p=None if ov is None or ov.p_value is None or np.isnan(ov.p_value) else float(ov.p_value),
        includes_zero=None if ov is None else bool(ov.ci_low <= 0 <= ov.ci_high),
        treated_schools=n_t, comparison_schools=int(panel.loc[panel["cohort"] == 0, "urn"].nunique()),
        clusters=int(panel[spec.cluster_column].nunique()), notes=notes + list(res.notes))
