"""Result types returned by every estimator.

Estimators are pure functions of a tidy panel that return an
:class:`EstimatorResult`. Results are plain data (picklable, JSON-ready through
``to_dict``) so a runner can ship them between processes. Every result names
its variance convention (:class:`VarianceConvention`): which clustering and
which small-sample correction produced the standard errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

#: Columns of ``EstimatorResult.coefficients``/``group_time``/``event_time`` tables.
ESTIMATE_COLUMNS = ["estimate", "se", "ci_low", "ci_high", "p_value"]


@dataclass(frozen=True)
class VarianceConvention:
    """How standard errors were computed, stated so a reader can reproduce them.

    kind: "cluster-robust", "heteroskedasticity-robust", "iid",
        "influence-function", "multiplier-bootstrap", "wild-cluster-bootstrap", ...
    cluster: the column clustered on (None if not clustered).
    small_sample: the correction, e.g. "CR1: G/(G-1) * (N-1)/(N-K) (Stata/fixest default)".
    df: residual degrees of freedom for t-based inference (None: normal approximation).
    """

    kind: str
    small_sample: str
    cluster: str | None = None
    n_clusters: int | None = None
    df: int | None = None

    def describe(self) -> str:
        text = self.kind
        if self.cluster:
            text += f", clustered by {self.cluster}"
            if self.n_clusters is not None:
                text += f" ({self.n_clusters} clusters)"
        text += f"; small-sample correction: {self.small_sample}"
        text += "; inference: " + (f"t with {self.df} df" if self.df else "normal approximation")
        return text

    def critical_value(self, alpha: float = 0.05) -> float:
        if self.df:
            return float(stats.t.ppf(1 - alpha / 2, self.df))
        return float(stats.norm.ppf(1 - alpha / 2))

    def p_value(self, t_stat):
        t_stat = np.abs(np.asarray(t_stat, dtype=float))
        if self.df:
            return 2 * stats.t.sf(t_stat, self.df)
        return 2 * stats.norm.sf(t_stat)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "cluster": self.cluster, "n_clusters": self.n_clusters,
                "small_sample": self.small_sample, "df": self.df, "description": self.describe()}


@dataclass(frozen=True)
class Estimate:
    """One estimate with its standard error, confidence interval and p-value."""

    estimate: float
    se: float
    ci_low: float
    ci_high: float
    p_value: float

    @classmethod
    def from_se(cls, estimate: float, se: float, variance: VarianceConvention,
                alpha: float = 0.05) -> "Estimate":
        crit = variance.critical_value(alpha)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = float(variance.p_value(estimate / se)) if se > 0 else float("nan")
        return cls(float(estimate), float(se), float(estimate - crit * se),
                   float(estimate + crit * se), p)

    def to_dict(self) -> dict:
        return {"estimate": self.estimate, "se": self.se, "ci_low": self.ci_low,
                "ci_high": self.ci_high, "p": self.p_value}


def estimate_table(index: pd.Index | list, estimates, ses, variance: VarianceConvention,
                   alpha: float = 0.05, crit: float | None = None) -> pd.DataFrame:
    """A table of estimates, SEs, CIs (pointwise unless ``crit`` is given) and p-values."""
    est = np.asarray(estimates, dtype=float)
    se = np.asarray(ses, dtype=float)
    crit = variance.critical_value(alpha) if crit is None else crit
    with np.errstate(divide="ignore", invalid="ignore"):
        p = variance.p_value(est / se)
    return pd.DataFrame({"estimate": est, "se": se, "ci_low": est - crit * se,
                         "ci_high": est + crit * se, "p_value": p},
                        index=pd.Index(index) if not isinstance(index, pd.Index) else index)


@dataclass
class EstimatorResult:
    """What every estimator returns.

    overall: the headline estimate (an ATT, or the DiD coefficient), if any.
    coefficients: regression coefficients indexed by term (may be empty).
    group_time: rows per (g, t) for group-time estimators (columns g, t + ESTIMATE_COLUMNS).
    event_time: rows per event time e (column e + ESTIMATE_COLUMNS), reference period omitted.
    """

    estimator: str
    variance: VarianceConvention
    n_obs: int
    n_units: int
    overall: Estimate | None = None
    coefficients: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ESTIMATE_COLUMNS))
    group_time: pd.DataFrame | None = None
    event_time: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    @property
    def n_clusters(self) -> int | None:
        return self.variance.n_clusters

    def to_dict(self) -> dict:
        def rows(df: pd.DataFrame | None, index_name: str | None = None) -> list[dict] | None:
            if df is None:
                return None
            frame = df.reset_index() if index_name else df
            if index_name and "index" in frame.columns:
                frame = frame.rename(columns={"index": index_name})
            frame = frame.rename(columns={"p_value": "p"})
            return [{k: _scalar(v) for k, v in rec.items()} for rec in frame.to_dict("records")]

        return {
            "estimator": self.estimator,
            "overall": self.overall.to_dict() if self.overall else None,
            "coefficients": rows(self.coefficients, "term") if len(self.coefficients) else [],
            "group_time": rows(self.group_time),
            "event_time": rows(self.event_time),
            "n_obs": int(self.n_obs),
            "n_units": int(self.n_units),
            "n_clusters": None if self.n_clusters is None else int(self.n_clusters),
            "variance": self.variance.to_dict(),
            "notes": list(self.notes),
            "details": self.details,
        }

    def summary(self) -> str:
        lines = [f"{self.estimator}: {self.n_obs} observations, {self.n_units} units"]
        lines.append(f"Standard errors: {self.variance.describe()}")
        if self.overall is not None:
            o = self.overall
            lines.append(f"Overall: {o.estimate:.6g} (SE {o.se:.6g}), 95% CI [{o.ci_low:.6g}, "
                         f"{o.ci_high:.6g}], p = {o.p_value:.4g}")
        if len(self.coefficients):
            lines.append(self.coefficients.to_string(float_format=lambda v: f"{v:.6g}"))
        if self.event_time is not None and len(self.event_time):
            lines.append("Event time:")
            lines.append(self.event_time.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
        lines.extend(f"Note: {n}" for n in self.notes)
        return "\n".join(lines)


def _scalar(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value
