"""The estimators a study can name, dispatched from one place (CLI, pipeline and every refit).

Each entry takes the analysis panel and an ``EstimationSpec`` and returns an ``EstimatorResult``
fitted with the spec's columns, matching weights, clustering, window and alpha. ``cluster``
overrides the spec's headline clustering (for the alternative-clustering refits).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import pandas as pd

from evaluation.estimators.callaway_santanna import aggte, att_gt
from evaluation.estimators.imputation import imputation_did
from evaluation.estimators.results import EstimatorResult
from evaluation.estimators.sun_abraham import sun_abraham
from evaluation.estimators.twfe import event_study, twfe_did
from evaluation.spec import EstimationSpec


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
    gt = att_gt(panel, control=spec.control_group, alpha=spec.alpha, **spec.estimator_kwargs(panel, cluster))
    simple = aggte(gt, "simple", max_e=hi)
    dynamic = aggte(gt, "dynamic", min_e=lo, max_e=hi)
    simple = replace(simple, event_time=dynamic.event_time, group_time=gt.group_time,
                     details={**simple.details, "pretest": gt.details.get("pretest"),
                              "dynamic_overall": dynamic.overall.to_dict() if dynamic.overall else None},
                     notes=list(dict.fromkeys(gt.notes + simple.notes)), source=gt)
    return simple


ESTIMATORS: dict[str, Callable[..., EstimatorResult]] = {
    "twfe": _twfe, "event_study": _event_study, "callaway_santanna": _callaway_santanna,
    "sun_abraham": _sun_abraham, "imputation": _imputation,
}


def fit(name: str, panel: pd.DataFrame, spec: EstimationSpec, cluster: str | None = None) -> EstimatorResult:
    """Fit estimator ``name`` on the analysis panel as the spec says."""
    return ESTIMATORS[name](panel, spec, cluster)
