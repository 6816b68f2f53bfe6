"""The estimators a study can name, dispatched from one place (CLI, pipeline and every refit).

Each entry takes the analysis panel and an ``EstimationSpec`` and returns an ``EstimatorResult``
fitted with the spec's columns, matching weights, clustering, window and alpha. ``cluster``
overrides the spec's headline clustering (for the alternative-clustering refits).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np
import pandas as pd

from evaluation.estimators.callaway_santanna import aggte, att_gt
from evaluation.estimators.chaisemartin import absorbing_panel, chaisemartin_dhaultfoeuille
from evaluation.estimators.imputation import imputation_did
from evaluation.estimators.results import EstimatorResult
from evaluation.estimators.sun_abraham import sun_abraham
from evaluation.estimators.twfe import event_study, twfe_did
from evaluation.spec import CLUSTER_COLUMNS, EstimationSpec

#: The treatment column a switching-exposure panel supplies (0/1, a row for every unit and year).
TREATMENT = "treatment"


def _twfe(panel, spec, cluster=None):
    return twfe_did(panel, **spec.estimator_kwargs(panel, cluster))


def _event_study(panel, spec, cluster=None):
    lo, hi = spec.window
    return event_study(panel, leads=-lo, lags=hi, ref=-1, **spec.estimator_kwargs(panel, cluster))


def _sun_abraham(panel, spec, cluster=None):
    return sun_abraham(panel, **spec.estimator_kwargs(panel, cluster))


def _imputation(panel, spec, cluster=None):
    lo, hi = spec.window
    return imputation_did(panel, horizons=list(range(0, hi + 1)), pretrend_leads=min(3, -lo - 1),
                          alpha=spec.alpha, **spec.estimator_kwargs(panel, cluster))


def _callaway_santanna(panel, spec, cluster=None):
    """The simple ATT within the window (the headline), event-time rows from the dynamic aggregation."""
    lo, hi = spec.window
    gt = att_gt(panel, control=spec.control_group, alpha=spec.alpha, **spec.cs_options(),
                **spec.estimator_kwargs(panel, cluster))
    simple = aggte(gt, "simple", max_e=hi)
    dynamic = aggte(gt, "dynamic", min_e=lo, max_e=hi)
    simple = replace(simple, event_time=dynamic.event_time, group_time=gt.group_time,
                     details={**simple.details, "pretest": gt.details.get("pretest"),
                              "dynamic_overall": dynamic.overall.to_dict() if dynamic.overall else None},
                     notes=list(dict.fromkeys(gt.notes + simple.notes)), source=gt)
    return simple


def switching_panel(panel: pd.DataFrame, spec: EstimationSpec, keep: tuple[str, ...] = ()) -> pd.DataFrame:
    """The unit x year panel de Chaisemartin & D'Haultfoeuille need, the treatment known in every
    cell. A panel with a ``treatment`` column (a switching-exposure study: a row for every unit and
    year, y possibly missing) is used as it is; otherwise the treatment is absorbing and the grid is
    completed from the cohort (:func:`evaluation.estimators.chaisemartin.absorbing_panel`), ``keep``
    naming the per-unit columns carried to the added rows (weights, clusters)."""
    if TREATMENT in panel.columns:
        return panel
    return absorbing_panel(panel, y=spec.y, unit=spec.unit, time=spec.time, cohort=spec.cohort, keep=keep,
                           treatment=TREATMENT)


def _chaisemartin_dhaultfoeuille(panel, spec, cluster=None):
    """DID_l at e = l - 1 for l = 1..hi+1 and placebos at e = -2..lo, not-yet-switched schools as
    comparisons; the headline (``overall``) is the average total effect per year of exposure."""
    lo, hi = spec.window
    cl = CLUSTER_COLUMNS[cluster or spec.cluster]
    weights = spec.weights_for(panel)
    data = switching_panel(panel, spec, keep=tuple(c for c in (weights, cl) if c is not None))
    res = chaisemartin_dhaultfoeuille(data, y=spec.y, unit=spec.unit, time=spec.time, treatment=TREATMENT,
                                      effects=hi + 1, placebo=-lo - 1, cluster=cl, weights=weights,
                                      alpha=spec.alpha)
    et = res.event_time
    estimated = et[np.isfinite(et["estimate"].to_numpy(dtype=float))].reset_index(drop=True)
    notes = [*res.notes,
             (f"the estimate is the average of the effects at e = 0..{hi} weighted by the (matching-weighted) "
              f"number of partnership schools observed at each: the average total effect per year of exposure "
              f"(de Chaisemartin & D'Haultfoeuille's delta, Lemma 4)"),
             ("comparison schools: every school whose treatment has not changed yet (comparison schools and "
              "partnership schools that have not joined yet), de Chaisemartin & D'Haultfoeuille's "
              "not-yet-switched controls")]
    n_obs = int(data[spec.y].notna().sum())  # school-years with an outcome (the grid adds empty ones)
    return replace(res, event_time=estimated, notes=notes, n_obs=n_obs)


ESTIMATORS: dict[str, Callable[..., EstimatorResult]] = {
    "twfe": _twfe, "event_study": _event_study, "callaway_santanna": _callaway_santanna,
    "sun_abraham": _sun_abraham, "imputation": _imputation,
    "chaisemartin_dhaultfoeuille": _chaisemartin_dhaultfoeuille,
}


def fit(name: str, panel: pd.DataFrame, spec: EstimationSpec, cluster: str | None = None) -> EstimatorResult:
    """Fit estimator ``name`` on the analysis panel as the spec says."""
    return ESTIMATORS[name](panel, spec, cluster)
