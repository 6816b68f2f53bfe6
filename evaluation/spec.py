"""One estimation specification per study, built once and used by every fit and refit.

The headline fit, the alternative clusterings, the wild bootstrap, the placebo joining dates,
HonestDiD and power all take an ``EstimationSpec``: the same outcome window, matching weights,
clustering, comparison group, alpha and seed, so a robustness check re-estimates the estimator
it checks (R ``did``'s single ``DIDparams`` object plays this role from pre-processing to
aggregation). Column names refer to the analysis panel the pipeline builds (``urn``, ``year``,
``y``, ``cohort``, ``weight`` and one column per clustering).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from evaluation.study import Study

#: Clusterings the analysis panel carries, and the panel column of each.
CLUSTER_COLUMNS = {"partnership": "cluster_partnership", "matched_set": "cluster_matched_set",
                   "school": "cluster_school"}
CLUSTER_WORDS = {
    "partnership": "by partnership (the schools of one partnership share a cluster; each comparison school "
                   "is its own cluster)",
    "matched_set": "by matched set merged with partnerships (Abadie & Spiess 2022): a partnership's schools, "
                   "their matched comparison schools and every set those schools are in form one cluster",
    "school": "by school (each school its own cluster)",
}


@dataclass(frozen=True)
class EstimationSpec:
    """Everything an estimator call needs besides the panel (see the module docstring)."""

    study_id: str
    outcome: str
    window: tuple[int, int]
    estimators: tuple[str, ...]
    primary: str
    cluster: str  # the headline clustering: a key of CLUSTER_COLUMNS
    alpha: float
    seed: int
    control_group: str = "never"  # Callaway-Sant'Anna comparison: never-treated schools
    weights: str = "weight"  # matching weights column (1 for partnership schools)
    controls: tuple[str, ...] = ()  # time-varying covariates (none: matching handles levels)
    y: str = "y"
    unit: str = "urn"
    time: str = "year"
    cohort: str = "cohort"

    @property
    def cluster_column(self) -> str:
        return CLUSTER_COLUMNS[self.cluster]

    def weights_for(self, panel: pd.DataFrame) -> str | None:
        """The weights column, or None when every weight is 1 (the unweighted code path, same numbers)."""
        return None if np.allclose(panel[self.weights], 1.0) else self.weights

    def estimator_kwargs(self, panel: pd.DataFrame, cluster: str | None = None) -> dict:
        """Keyword arguments every estimator takes: columns, weights and the cluster column."""
        return dict(y=self.y, unit=self.unit, time=self.time, cohort=self.cohort,
                    cluster=CLUSTER_COLUMNS[cluster or self.cluster], weights=self.weights_for(panel))

    def cs_options(self) -> dict:
        """Callaway & Sant'Anna options the design fixes: no group-time cell after the window's last
        event time is computed (the study aggregates only up to it; a pupil-level study has no treated
        observation there, and a school-level cohort may have none after its schools closed)."""
        return {"max_e": self.window[1]}

    def with_(self, **changes) -> "EstimationSpec":
        return replace(self, **changes)


def build_spec(study: Study) -> EstimationSpec:
    """The study's one estimation specification."""
    return EstimationSpec(
        study_id=study.id, outcome=study.outcome.name, window=tuple(study.outcome.window),
        estimators=tuple(study.estimators.use), primary=study.estimators.primary,
        cluster=study.inference.cluster, alpha=study.inference.alpha, seed=study.inference.seed,
        control_group="never")
