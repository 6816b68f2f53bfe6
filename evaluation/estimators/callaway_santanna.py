"""Callaway & Sant'Anna (2021) group-time average treatment effects, as R ``did`` 2.5 computes them.

Callaway, B. and Sant'Anna, P. H. C. (2021), "Difference-in-Differences with multiple time
periods", Journal of Econometrics 225(2), 200-230. ATT(g,t) is identified by eq. (2.6)
(never-treated comparison) or eq. (2.7) (not-yet-treated comparison); each 2x2 comparison is
estimated with the panel estimators of Sant'Anna & Zhao (2020, J. Econometrics 219(1)):

* ``method="dr"``: the locally efficient doubly robust estimator with a logit propensity score
  and OLS outcome regression (SZ 2020 eq. 3.1; R ``DRDID::drdid_panel``, which is what
  ``did::att_gt(est_method="dr")`` calls);
* ``method="ipw"``: the normalised (Hajek) IPW estimator (Abadie 2005, eq. 4.1 of SZ 2020;
  ``DRDID::std_ipw_did_panel``);
* ``method="reg"``: the outcome-regression estimator (Heckman, Ichimura & Todd 1997;
  ``DRDID::reg_did_panel``).

Unbalanced panels go through the repeated-cross-section route R ``did`` takes with
``allow_unbalanced_panel=TRUE`` (cell-mean DiD on the observations present; unconditional only).

Variance (R ``did`` 2.5 convention; Callaway & Sant'Anna 2021, Remark 10): with psi the n x K
matrix of influence functions (one row per unit, zero for units outside G or C, scaled by n/n1)
and S_ck = sum_{i in c} psi_ik the cluster sums, se_k = sqrt(sum_c S_ck^2) / n; without a
cluster column every unit is its own cluster and this is sqrt(sum_i psi_ik^2) / n. No
small-sample factor (R did applies none; ``diff-diff`` multiplies by G/(G-1)). Cluster *sums*
are the linearisation of the estimator; cluster *means* (R did before 2.5) agree with them only
when every cluster has the same size. The multiplier bootstrap uses Rademacher weights on the
cluster sums (BMisc::multiplier_bootstrap, did::mboot), IQR-based standard errors
sigma * sqrt(C) / n and a sup-t critical value for simultaneous bands (CS 2021, Sec. 4.1,
Algorithm 1); the Wald pre-test uses the same clustered V = S'S / n.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from evaluation.errors import InputError, problem, plain
from evaluation.estimators.results import (
    Estimate,
    EstimatorResult,
    VarianceConvention,
    estimate_table,
)

CONTROLS = ("never", "notyet")
METHODS = ("dr", "ipw", "reg")
BASE_PERIODS = ("varying", "universal")
AGGREGATIONS = ("simple", "group", "dynamic", "calendar")
#: R did sets standard errors at or below this to NA (sqrt(.Machine$double.eps) * 10).
SE_ZERO = np.sqrt(np.finfo(float).eps) * 10
#: DRDID 1.2 trims comparison units whose propensity score reaches this level.
PS_TRIM = 0.995


@dataclass
class GroupTimeResult(EstimatorResult):
    """ATT(g,t) estimates plus what aggregation needs (influence functions, unit cohorts).

    influence: n_units x n_gt matrix psi with att_hat - att ~ (1/n) sum_i psi_i.
    unit_cohort: first treated period per unit (0 = never treated), aligned with ``influence``.
    unit_weight: sampling weight per unit (1 if unweighted).
    unit_cluster: integer cluster code per unit (the unit itself if not clustered).
    """

    influence: np.ndarray | None = None
    unit_cohort: np.ndarray | None = None
    unit_weight: np.ndarray | None = None
    unit_cluster: np.ndarray | None = None
    alpha: float = 0.05


@dataclass
class AggregateResult(EstimatorResult):
    """An aggregation of ATT(g,t) (CS 2021, Sec. 3.1, eqs. 3.3-3.8).

    kind: "simple", "group", "dynamic" or "calendar".
    egt: one row per group / event time / calendar period (column ``egt``), with the
        estimate, se, ci_low, ci_high (simultaneous when bootstrapped) and p_value.
    influence: n_units x (n_egt + 1) influence functions (per-egt columns, then overall).
    source: the ``att_gt`` result aggregated (set by callers that keep it for refits).
    """

    kind: str = "simple"
    egt: pd.DataFrame | None = None
    influence: np.ndarray | None = field(default=None, repr=False)
    source: GroupTimeResult | None = field(default=None, repr=False)


# --------------------------------------------------------------------------------------
# Input checks and reshaping
# --------------------------------------------------------------------------------------


@dataclass
class _Panel:
    """Unit-by-period arrays built once from the long panel."""

    units: np.ndarray  # unit ids, sorted
    periods: np.ndarray  # sorted distinct periods
    Y: np.ndarray  # n x T outcomes, NaN where not observed
    X: np.ndarray | None  # n x T x k covariates (no intercept), NaN where not observed
    cohort: np.ndarray  # n, 0 = never treated
    weight: np.ndarray  # n
    cluster: np.ndarray  # n integer codes
    n_clusters: int
    notes: list[str]

    @property
    def n_obs(self) -> int:
        return int((~np.isnan(self.Y)).sum())


def _require_columns(panel: pd.DataFrame, columns: dict[str, str | None]) -> None:
    missing = [(role, col) for role, col in columns.items() if col is not None and col not in panel.columns]
    if missing:
        raise InputError([problem(f"{role} column not found; available columns: "
                                  f"{', '.join(map(str, panel.columns))}", column=col)
                          for role, col in missing])


def _numeric(panel: pd.DataFrame, col: str, role: str) -> np.ndarray:
    series = panel[col]
    if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        converted = pd.to_numeric(series, errors="coerce")
        bad = converted.isna() & series.notna()
        if bad.any():
            pos = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(problem(f"{role} must be numeric", row=pos + 1, column=col,
                                     value=series.iloc[pos]),
                             summary=f"{int(bad.sum())} non-numeric value(s) in {role} column {col!r}")
        series = converted
    return series.to_numpy(dtype=float, na_value=np.nan)


def _constant_within_unit(codes: np.ndarray, values: np.ndarray, ids: np.ndarray,
                          col: str, role: str) -> np.ndarray:
    """One value per unit (NaN-aware); InputError naming the units where it varies."""
    frame = pd.DataFrame({"u": codes, "v": values})
    n_distinct = frame.groupby("u", sort=True)["v"].nunique(dropna=False)
    varying = np.flatnonzero(n_distinct.to_numpy() > 1)
    if len(varying):
        shown = ", ".join(repr(plain(ids[i])) for i in varying[:5])
        raise InputError(problem(
            f"{role} must be constant within each unit, but it changes over time for "
            f"{len(varying)} unit(s): {shown}", column=col))
    return frame.groupby("u", sort=True)["v"].first().to_numpy(dtype=float)


def _prepare(panel, y, unit, time, cohort, covariates, cluster, weights, allow_unbalanced) -> _Panel:
    if not isinstance(panel, pd.DataFrame):
        raise InputError("panel must be a pandas DataFrame in long format (one row per unit and period)")
    covariates = list(covariates or [])
    _require_columns(panel, {"outcome": y, "unit": unit, "time": time, "cohort": cohort,
                             "cluster": cluster, "weights": weights,
                             **{f"covariate {c!r}": c for c in covariates}})
    notes: list[str] = []
    t = _numeric(panel, time, "time")
    if np.isnan(t).any():
        pos = int(np.flatnonzero(np.isnan(t))[0])
        raise InputError(problem("time must be present on every row", row=pos + 1, column=time, value=None))
    g = _numeric(panel, cohort, "cohort (first treated period; 0 or empty = never treated)")
    g = np.where(np.isnan(g), 0.0, g)
    yv = _numeric(panel, y, "outcome")
    xs = [_numeric(panel, c, f"covariate {c!r}") for c in covariates]
    w = np.ones(len(panel)) if weights is None else _numeric(panel, weights, "weights")
    if weights is not None and (np.isnan(w).any() or (w < 0).any()):
        pos = int(np.flatnonzero(np.isnan(w) | (w < 0))[0])
        raise InputError(problem("weights must be present and non-negative", row=pos + 1,
                                 column=weights, value=panel[weights].iloc[pos]))
    ids = panel[unit]
    if ids.isna().any():
        pos = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise InputError(problem("unit id must be present on every row", row=pos + 1, column=unit, value=None))
    codes, uniques = pd.factorize(ids, sort=True)
    uniques = np.asarray(uniques)
    dup = pd.DataFrame({"u": codes, "t": t}).duplicated()
    if dup.any():
        pos = int(np.flatnonzero(dup.to_numpy())[0])
        raise InputError(problem(f"more than one row for unit {plain(uniques[codes[pos]])!r} in period "
                                 f"{t[pos]:g}; the panel needs one row per unit and period",
                                 row=pos + 1, column=unit, value=ids.iloc[pos]))
    unit_g = _constant_within_unit(codes, g, uniques, cohort, "cohort")
    unit_w = _constant_within_unit(codes, w, uniques, weights or "weights", "weights")
    if cluster is not None:
        cl_codes = pd.factorize(panel[cluster])[0].astype(float)
        cl_codes[panel[cluster].isna().to_numpy()] = np.nan
        unit_cl = _constant_within_unit(codes, cl_codes, uniques, cluster,
                                        "cluster (clusters must nest units)")
        if np.isnan(unit_cl).any():
            raise InputError(problem("cluster must be present for every unit", column=cluster, value=None))
        unit_cl = pd.factorize(unit_cl)[0]
    else:
        unit_cl = np.arange(len(uniques))

    periods = np.unique(t)
    t_idx = np.searchsorted(periods, t)
    n, T = len(uniques), len(periods)
    Y = np.full((n, T), np.nan)
    Y[codes, t_idx] = yv
    X = None
    if xs:
        X = np.full((n, T, len(xs)), np.nan)
        X[codes, t_idx, :] = np.column_stack(xs)
        Y[np.isnan(X).any(axis=2)] = np.nan
    incomplete = np.isnan(yv) if X is None else np.isnan(yv) | np.isnan(np.column_stack(xs)).any(axis=1)
    n_missing = int(incomplete.sum())
    if n_missing:
        notes.append(f"Dropped {n_missing} row(s) with a missing outcome or covariate (as R did does).")

    # R did: cohorts after the last period are treated as never treated.
    late = unit_g > periods[-1]
    if late.any():
        notes.append(f"{int(late.sum())} unit(s) first treated after the last period "
                     f"({periods[-1]:g}) are treated as never treated (as R did does).")
        unit_g = np.where(late, 0.0, unit_g)
    keep = np.ones(n, dtype=bool)
    first = (unit_g > 0) & (unit_g <= periods[0])
    if first.any():
        notes.append(f"Dropped {int(first.sum())} unit(s) already treated in the first period "
                     f"({periods[0]:g}): no untreated period to compare with (as R did does).")
        keep &= ~first
    observed = ~np.isnan(Y).all(axis=1)
    if (~observed & keep).any():
        notes.append(f"Dropped {int((~observed & keep).sum())} unit(s) with no usable observation.")
        keep &= observed
    unbalanced = np.isnan(Y[keep]).any()
    if unbalanced and not allow_unbalanced:
        complete = ~np.isnan(Y).any(axis=1)
        notes.append(f"Dropped {int((keep & ~complete).sum())} unit(s) to balance the panel "
                     "(allow_unbalanced=False, as R did's default).")
        keep &= complete
    if not keep.any():
        raise InputError("no units left after dropping units treated in the first period and "
                         "units without complete data")
    sel = np.flatnonzero(keep)
    X = None if X is None else X[sel]
    cl = pd.factorize(unit_cl[sel])[0]
    return _Panel(uniques[sel], periods, Y[sel], X, unit_g[sel], unit_w[sel], cl, int(cl.max()) + 1, notes)


# --------------------------------------------------------------------------------------
# Nuisance fits
# --------------------------------------------------------------------------------------


def _wls(X: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least squares coefficients (R lm.wfit / fastglm gaussian)."""
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)
    return coef


def _logit(X: np.ndarray, D: np.ndarray, w: np.ndarray, tol: float = 1e-12,
           max_iter: int = 100) -> np.ndarray:
    """Weighted logit MLE by Newton-Raphson (R glm(family=binomial, weights=w)); fitted values."""
    p_bar = np.sum(w * D) / np.sum(w)
    beta = np.zeros(X.shape[1])
    if X.shape[1] and np.allclose(X[:, 0], 1.0):
        beta[0] = np.log(p_bar / (1 - p_bar))
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(X @ beta)))
        grad = X.T @ (w * (D - p))
        hess = (X * (w * p * (1 - p))[:, None]).T @ X
        step = np.linalg.solve(hess, grad)
        beta = beta + step
        if np.max(np.abs(step)) < tol:
            break
    return 1.0 / (1.0 + np.exp(-(X @ beta)))


def _pscore_linear_rep(X, D, w, ps):
    """Asymptotic linear representation of the logit coefficients: score_i' (X'WX/n)^{-1}."""
    n = len(D)
    hess = (X * (ps * (1 - ps) * w)[:, None]).T @ X
    return (w * (D - ps))[:, None] * X @ (np.linalg.inv(hess) * n)


def _ols_linear_rep(X, dy, D, w, fitted):
    """Asymptotic linear representation of the comparison-group OLS coefficients."""
    n = len(D)
    w_ols = w * (1 - D)
    xpx = (X * w_ols[:, None]).T @ X / n
    if np.linalg.cond(xpx) > 1 / np.finfo(float).eps:
        raise InputError("the outcome regression on comparison units is singular; "
                         "remove collinear covariates")
    return (w_ols * (dy - fitted))[:, None] * X @ np.linalg.inv(xpx)


# --------------------------------------------------------------------------------------
# 2x2 panel estimators (Sant'Anna & Zhao 2020); each returns (att, influence function)
# --------------------------------------------------------------------------------------


def _trim(ps, D):
    ps = np.minimum(ps, 1 - 1e-6)
    keep = np.where(D == 1, ps < 1.01, ps < PS_TRIM).astype(float)
    return ps, keep


def drdid_panel(dy, D, X, w):
    """Locally efficient DR DiD, panel data (Sant'Anna & Zhao 2020, eq. 3.1; DRDID::drdid_panel)."""
    w = w / w.mean()
    ps, trim = _trim(_logit(X, D, w), D)
    beta = _wls(X[D == 0], dy[D == 0], w[D == 0])
    fitted = X @ beta
    w_t = trim * w * D
    w_c = trim * w * ps * (1 - D) / (1 - ps)
    resid = dy - fitted
    eta_t = np.mean(w_t * resid) / np.mean(w_t)
    eta_c = np.mean(w_c * resid) / np.mean(w_c)
    lin_ols = _ols_linear_rep(X, dy, D, w, fitted)
    lin_ps = _pscore_linear_rep(X, D, w, ps)
    inf_treat = (w_t * resid - w_t * eta_t - lin_ols @ np.mean(w_t[:, None] * X, axis=0)) / np.mean(w_t)
    inf_cont = (w_c * resid - w_c * eta_c
                + lin_ps @ np.mean((w_c * (resid - eta_c))[:, None] * X, axis=0)
                - lin_ols @ np.mean(w_c[:, None] * X, axis=0)) / np.mean(w_c)
    return eta_t - eta_c, inf_treat - inf_cont


def std_ipw_did_panel(dy, D, X, w):
    """Normalised (Hajek) IPW DiD, panel data (Abadie 2005; SZ 2020 eq. 2.4; DRDID::std_ipw_did_panel)."""
    w = w / w.mean()
    ps, trim = _trim(_logit(X, D, w), D)
    w_t = trim * w * D
    w_c = trim * w * ps * (1 - D) / (1 - ps)
    eta_t = np.mean(w_t * dy) / np.mean(w_t)
    eta_c = np.mean(w_c * dy) / np.mean(w_c)
    lin_ps = _pscore_linear_rep(X, D, w, ps)
    inf_treat = (w_t * dy - w_t * eta_t) / np.mean(w_t)
    inf_cont = (w_c * dy - w_c * eta_c
                + lin_ps @ np.mean((w_c * (dy - eta_c))[:, None] * X, axis=0)) / np.mean(w_c)
    return eta_t - eta_c, inf_treat - inf_cont


def reg_did_panel(dy, D, X, w):
    """Outcome-regression DiD, panel data (Heckman et al. 1997; SZ 2020 eq. 2.2; DRDID::reg_did_panel)."""
    w = w / w.mean()
    beta = _wls(X[D == 0], dy[D == 0], w[D == 0])
    fitted = X @ beta
    w_t = w * D
    eta_t = np.mean(w_t * dy) / np.mean(w_t)
    eta_c = np.mean(w_t * fitted) / np.mean(w_t)
    lin_ols = _ols_linear_rep(X, dy, D, w, fitted)
    inf_treat = (w_t * dy - w_t * eta_t) / np.mean(w_t)
    inf_cont = (w_t * fitted - w_t * eta_c + lin_ols @ np.mean(w_t[:, None] * X, axis=0)) / np.mean(w_t)
    return eta_t - eta_c, inf_treat - inf_cont


_PANEL_ESTIMATORS = {"dr": drdid_panel, "ipw": std_ipw_did_panel, "reg": reg_did_panel}


def did_rc_unconditional(y, post, D, w):
    """Unconditional DiD of four weighted cell means with its influence function, per observation.

    This is what DRDID's reg_did_rc, std_ipw_did_rc and drdid_rc all reduce to without
    covariates (SZ 2020, Sec. 2, repeated cross-sections); R did uses it for unbalanced panels.
    """
    w = w / w.mean()
    att = 0.0
    inf = np.zeros(len(y))
    for d, p, sign in ((1, 1, 1.0), (1, 0, -1.0), (0, 1, -1.0), (0, 0, 1.0)):
        wc = w * ((D == d) & (post == p))
        mean_c = np.sum(wc * y) / np.sum(wc)
        att += sign * mean_c
        inf += sign * wc * (y - mean_c) / np.mean(wc)
    return att, inf


# --------------------------------------------------------------------------------------
# ATT(g,t)
# --------------------------------------------------------------------------------------


def _base_index(periods, g, anticipation):
    """Index of the last period before treatment (g - anticipation - 1 in R did's tlist)."""
    idx = np.flatnonzero(periods + anticipation < g)
    return int(idx[-1]) if len(idx) else None


def _gt_cells(periods, groups, base_period, anticipation):
    """The (g, current index, base index) triples in R did's order (group-major)."""
    cells = []
    start = 1 if base_period == "varying" else 0
    for g in groups:
        universal = _base_index(periods, g, anticipation)
        for cur in range(start, len(periods)):
            base = cur - 1 if base_period == "varying" else universal
            if g <= periods[cur]:
                base = universal
                if base is None:
                    break
            cells.append((g, cur, base))
    return cells


def _comparison(cohort, g, periods, cur, base, control, anticipation):
    if control == "never":
        return cohort == 0
    later = periods[max(cur, base)] + anticipation
    return (cohort == 0) | ((cohort > later) & (cohort != g))


def _empty_cell_error(g, t, what):
    return InputError(f"cohort g={g:g} at period t={t:g} has no {what}; ATT(g={g:g}, t={t:g}) "
                      "is not identified (check the cohort column and the control group)")


def _att_cell_panel(p: _Panel, g, cur, base, control, method, anticipation):
    Gi = p.cohort == g
    Ci = _comparison(p.cohort, g, p.periods, cur, base, control, anticipation)
    use = Gi | Ci
    if not Ci.any():
        raise _empty_cell_error(g, p.periods[cur], "untreated comparison units")
    ypost, ypre = p.Y[use, cur], p.Y[use, base]
    D = Gi[use].astype(float)
    if p.X is None:
        X = np.ones((use.sum(), 1))
    else:
        X = np.column_stack([np.ones(use.sum()), p.X[use, min(cur, base), :]])
    att, inf = _PANEL_ESTIMATORS[method](ypost - ypre, D, X, p.weight[use])
    psi = np.zeros(len(p.cohort))
    psi[use] = inf * len(p.cohort) / use.sum()
    return att, psi


def _att_cell_rc(p: _Panel, g, cur, base, control, anticipation):
    Gi = p.cohort == g
    Ci = _comparison(p.cohort, g, p.periods, cur, base, control, anticipation)
    t_cur, t_base = p.periods[cur], p.periods[base]
    rows_u, rows_t = [], []
    for idx in (cur, base):
        present = (Gi | Ci) & ~np.isnan(p.Y[:, idx])
        rows_u.append(np.flatnonzero(present))
        rows_t.append(np.full(present.sum(), idx))
    u, tt = np.concatenate(rows_u), np.concatenate(rows_t)
    D, post = Gi[u].astype(float), (tt == cur).astype(float)
    for d, pp, who, when in ((1, 1, "treated units observed", t_cur), (1, 0, "treated units observed", t_base),
                             (0, 1, "untreated comparison units observed", t_cur),
                             (0, 0, "untreated comparison units observed", t_base)):
        if not np.any((D == d) & (post == pp)):
            raise InputError(f"cohort g={g:g}: no {who} in period {when:g}, so ATT(g={g:g}, "
                             f"t={t_cur:g}) is not identified")
    att, inf = did_rc_unconditional(p.Y[u, tt], post, D, p.weight[u])
    psi = np.bincount(u, weights=inf * len(p.cohort) / len(u), minlength=len(p.cohort))
    return att, psi


def _check_options(control, method, base_period, alpha, bootstrap):
    for name, value, allowed in (("control", control, CONTROLS), ("method", method, METHODS),
                                 ("base_period", base_period, BASE_PERIODS)):
        if value not in allowed:
            raise InputError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    if not 0 < alpha < 1:
        raise InputError(f"alpha must be between 0 and 1; got {alpha!r}")
    if int(bootstrap) < 0:
        raise InputError(f"bootstrap must be a non-negative number of draws; got {bootstrap!r}")


def _treated_groups(p: _Panel, control, anticipation, notes):
    """Cohorts to estimate, following R did's pre_process_did (never-treated handling)."""
    groups = np.unique(p.cohort[p.cohort > 0])
    if not (p.cohort == 0).any():
        if control == "never":
            raise InputError("control='never' but the panel has no never-treated units (cohort 0 or "
                             "empty, or first treated after the last period); use control='notyet'")
        last = groups.max()
        keep_t = p.periods < last - anticipation
        notes.append(f"No never-treated units: periods from {last - anticipation:g} on are dropped and "
                     f"cohort {last:g} serves only as a not-yet-treated comparison (as R did does).")
        p.Y, p.periods = p.Y[:, keep_t], p.periods[keep_t]
        if p.X is not None:
            p.X = p.X[:, keep_t, :]
        groups = groups[groups < last]
    groups = groups[groups > p.periods[0] + anticipation]
    if len(groups) == 0:
        raise InputError("no treated cohort with a pre-treatment period; the cohort column should hold "
                         "the first treated period (0 or empty if never treated)")
    return groups


def att_gt(panel: pd.DataFrame, *, y: str, unit: str, time: str, cohort: str,
           control: str = "never", covariates=None, method: str = "dr",
           base_period: str = "varying", anticipation: int = 0, cluster: str | None = None,
           weights: str | None = None, alpha: float = 0.05, bootstrap: int = 0,
           seed=None, allow_unbalanced: bool = True) -> GroupTimeResult:
    """Group-time ATTs of Callaway & Sant'Anna (2021, eqs. 2.6-2.7), matching R ``did::att_gt``.

    ``cohort`` holds the first treated period (0 or NaN: never treated). ``control="notyet"``
    adds not-yet-treated units (treated after max(t, base) + anticipation) to the comparison.
    Balanced panels use the panel 2x2 estimators; unbalanced ones (``allow_unbalanced=True``)
    the repeated-cross-section route of R did (no covariates); with ``allow_unbalanced=False``
    incomplete units are dropped. ``bootstrap`` > 0 replaces analytic SEs by multiplier-bootstrap
    SEs and the confidence intervals by simultaneous sup-t bands (CS 2021, Algorithm 1).
    """
    _check_options(control, method, base_period, alpha, bootstrap)
    p = _prepare(panel, y, unit, time, cohort, covariates, cluster, weights, allow_unbalanced)
    notes = p.notes
    groups = _treated_groups(p, control, anticipation, notes)
    balanced = not np.isnan(p.Y).any()
    if not balanced:
        if covariates:
            raise InputError("covariates with an unbalanced panel are not supported; pass "
                             "allow_unbalanced=False to keep only units observed in every period")
        notes.append("Unbalanced panel: ATT(g,t) use every observation present, through the "
                     "repeated-cross-section estimator (R did, allow_unbalanced_panel=TRUE).")
    rows, psis = [], []
    for g, cur, base in _gt_cells(p.periods, groups, base_period, anticipation):
        if base == cur:  # universal base period: ATT(g, g-1) is normalised to 0
            rows.append((g, p.periods[cur], 0.0, 0))
            psis.append(np.zeros(len(p.cohort)))
            continue
        if balanced:
            att, psi = _att_cell_panel(p, g, cur, base, control, method, anticipation)
        else:
            att, psi = _att_cell_rc(p, g, cur, base, control, anticipation)
        rows.append((g, p.periods[cur], att, int(g <= p.periods[cur])))
        psis.append(psi)
    psi = np.column_stack(psis)
    gt = pd.DataFrame(rows, columns=["g", "t", "estimate", "post"])
    se = _analytic_se(psi, p.cluster, p.n_clusters)
    variance = _variance(cluster or unit, p.n_clusters, bootstrap)
    crit = None
    if bootstrap:
        boot_se, crit = multiplier_bootstrap(psi, p.cluster, p.n_clusters, int(bootstrap), seed, alpha)
        se = np.where(np.isnan(se), np.nan, boot_se)
        crit = _checked_crit(crit, alpha, notes)
    table = estimate_table(pd.RangeIndex(len(gt)), gt["estimate"], se, variance, alpha, crit)
    group_time = pd.concat([gt[["g", "t"]], table], axis=1)
    group_time["post"] = gt["post"].to_numpy()
    if p.n_clusters < len(p.cohort) and not bootstrap:
        notes.append("Clustered analytic SEs use R did 2.5's convention: sqrt(sum_c S_c^2)/n with S_c the "
                     "cluster sums of the influence function, no small-sample factor.")
    result = GroupTimeResult(
        estimator=f"callaway-santanna ({method}, {'never' if control == 'never' else 'not-yet'}-treated "
                  f"comparison, {base_period} base period)",
        variance=variance, n_obs=p.n_obs, n_units=len(p.cohort), group_time=group_time,
        notes=notes, influence=psi, unit_cohort=p.cohort, unit_weight=p.weight,
        unit_cluster=p.cluster, alpha=alpha,
        details={"control": control, "method": method, "base_period": base_period,
                 "anticipation": anticipation, "bootstrap": int(bootstrap), "seed": seed,
                 "balanced": balanced, "critical_value": crit,
                 "cohort_sizes": {float(g): int((p.cohort == g).sum()) for g in np.unique(p.cohort)}})
    result.details["pretest"] = pretest(result)
    return result


# --------------------------------------------------------------------------------------
# Inference
# --------------------------------------------------------------------------------------


def _variance(cluster_col, n_clusters, bootstrap) -> VarianceConvention:
    if bootstrap:
        return VarianceConvention(
            kind="multiplier-bootstrap",
            small_sample=(f"none; Rademacher multiplier bootstrap with {int(bootstrap)} draws on the "
                          "cluster sums S_c of the influence function, se = IQR/(z.75 - z.25) * sqrt(C)/n, "
                          "simultaneous sup-t bands (R did 2.5 mboot)"),
            cluster=cluster_col, n_clusters=n_clusters)
    return VarianceConvention(
        kind="influence-function",
        small_sample=("none; se = sqrt(sum_c S_c^2)/n with S_c the sum of the influence function over "
                      "the units of cluster c (units are their own clusters by default), R did 2.5 convention "
                      "(CS 2021 Remark 10)"),
        cluster=cluster_col, n_clusters=n_clusters)


def _cluster_sums(psi: np.ndarray, cluster: np.ndarray, n_clusters: int) -> np.ndarray:
    """C x K sums of the influence function within clusters (R ``rowsum(psi, cluster)``)."""
    sums = np.zeros((n_clusters, psi.shape[1]))
    if n_clusters == len(cluster):  # every unit its own cluster: a permutation of psi
        sums[cluster] = psi
        return sums
    np.add.at(sums, cluster, psi)
    return sums


def _analytic_se(psi: np.ndarray, cluster: np.ndarray, n_clusters: int) -> np.ndarray:
    """R did 2.5's analytic SE: sqrt(sum_c S_c^2) / n, S_c the cluster sums of psi (CS 2021 Remark 10)."""
    psi = np.atleast_2d(psi.T).T
    sums = _cluster_sums(psi, cluster, n_clusters)
    se = np.sqrt(np.sum(sums ** 2, axis=0)) / psi.shape[0]
    return np.where(se <= SE_ZERO, np.nan, se)


def _quantile1(x: np.ndarray, q: float, axis=0):
    """R quantile(type=1): the inverse of the empirical CDF."""
    return np.quantile(x, q, axis=axis, method="inverted_cdf")


def multiplier_bootstrap(psi: np.ndarray, cluster: np.ndarray, n_clusters: int, draws: int,
                         seed, alpha: float = 0.05) -> tuple[np.ndarray, float]:
    """Multiplier bootstrap of CS 2021 Algorithm 1 as in R did 2.5's ``mboot``.

    Rademacher weights V_c (BMisc::multiplier_bootstrap) multiply the cluster sums S_c of the
    influence function; per draw R*_k = sqrt(C) * mean_c V_c S_ck. Returns the IQR-based SEs
    (IQR / (z_.75 - z_.25) * sqrt(C) / n, which estimates sqrt(sum_c S_c^2) / n) and the
    (1 - alpha) quantile of max_k |R*_k / sigma_k| (sup-t critical value).
    """
    psi = np.atleast_2d(psi.T).T
    n = psi.shape[0]
    sums = _cluster_sums(psi, cluster, n_clusters)
    C = sums.shape[0]
    rng = np.random.default_rng(seed)
    boot = np.empty((draws, sums.shape[1]))
    chunk = max(1, 2_000_000 // max(C, 1))
    for start in range(0, draws, chunk):
        stop = min(draws, start + chunk)
        V = rng.integers(0, 2, size=(stop - start, C)) * 2.0 - 1.0
        boot[start:stop] = np.sqrt(C) * (V @ sums) / C
    ok = np.isfinite(boot.sum(axis=0)) & (np.sum(boot ** 2, axis=0) > SE_ZERO)
    sigma = np.full(sums.shape[1], np.nan)
    iqr = _quantile1(boot[:, ok], 0.75) - _quantile1(boot[:, ok], 0.25)
    sigma[ok] = iqr / (stats.norm.ppf(0.75) - stats.norm.ppf(0.25))
    sigma[sigma <= SE_ZERO] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        tmax = np.nanmax(np.abs(boot[:, ok] / sigma[ok]), axis=1) if ok.any() else np.full(draws, np.nan)
    tmax = tmax[np.isfinite(tmax)]
    crit = float(_quantile1(tmax, 1 - alpha)) if len(tmax) else float("nan")
    return sigma * np.sqrt(C) / n, crit


def _checked_crit(crit: float, alpha: float, notes: list[str]) -> float:
    z = float(stats.norm.ppf(1 - alpha / 2))
    if not np.isfinite(crit) or crit < z:
        notes.append("Simultaneous critical value unavailable or below the pointwise one; "
                     "pointwise intervals reported (as R did does).")
        return z
    return crit


def pretest(result: GroupTimeResult) -> dict | None:
    """Wald pre-test of parallel trends as R did 2.5's att_gt reports it (CS 2021, Sec. 4.2).

    W = n * att_pre' V_pre^{-1} att_pre with V = S'S / n over pre-treatment ATT(g,t), S the
    C x K cluster sums of the influence function (psi'psi / n when units are their own
    clusters), chi-squared with as many degrees of freedom as pre-periods. R prints the
    p-value rounded to 5 digits; ``p_value`` here is unrounded.
    """
    gt = result.group_time
    psi = result.influence
    n = psi.shape[0]
    cluster = result.unit_cluster if result.unit_cluster is not None else np.arange(n)
    n_clusters = int(cluster.max()) + 1
    sums = _cluster_sums(psi, cluster, n_clusters)
    se = np.sqrt(np.sum(sums ** 2, axis=0)) / n
    pre = np.flatnonzero((gt["g"].to_numpy() > gt["t"].to_numpy()) & (se > SE_ZERO))
    if len(pre) == 0:
        return None
    att = gt["estimate"].to_numpy()[pre]
    V = sums[:, pre].T @ sums[:, pre] / n
    if np.linalg.cond(V) >= 1 / np.finfo(float).eps:
        result.notes.append("Pre-test of parallel trends not computed: singular covariance matrix.")
        return None
    W = float(n * att @ np.linalg.solve(V, att))
    return {"W": W, "df": int(len(pre)), "p_value": float(stats.chi2.sf(W, len(pre))),
            "n_clusters": n_clusters,
            "variance": "clustered: V = S'S/n with S the cluster sums of the influence function (R did 2.5)"}


# --------------------------------------------------------------------------------------
# Aggregation (CS 2021, Sec. 3.1; R did::aggte)
# --------------------------------------------------------------------------------------


def _weight_if(keep_groups, pg_keep, w, G):
    """Influence function of estimated weights pg_k / sum(pg) (R did's ``wif``).

    Column k: (w 1{G=g_k} - pg_k)/sum(pg) - sum_j(w 1{G=g_j} - pg_j) pg_k / sum(pg)^2.
    """
    dev = w[:, None] * (G[:, None] == np.asarray(keep_groups)[None, :]) - pg_keep[None, :]
    total = pg_keep.sum()
    return dev / total - np.outer(dev.sum(axis=1), pg_keep / total ** 2)


def _combine(att, psi, idx, weights, wif=None):
    """Aggregate influence function psi[:, idx] @ weights (+ wif @ att[idx])."""
    out = psi[:, idx] @ weights
    if wif is not None:
        out = out + wif @ att[idx]
    return out


def aggte(result: GroupTimeResult, kind: str = "simple", *, balance_e: int | None = None,
          min_e: float = -np.inf, max_e: float = np.inf, bootstrap: int = 0, seed=None,
          alpha: float | None = None) -> AggregateResult:
    """Aggregate ATT(g,t) into summary parameters, matching R ``did::aggte``.

    simple: post-treatment ATT(g,t) weighted by cohort share (CS 2021 eq. 3.10 footnote);
    group: theta_sel(g) and its cohort-share average (eqs. 3.3-3.4); dynamic: theta_es(e) and the
    average over e >= 0 (eqs. 3.5-3.6); calendar: theta_c(t) and its average (eqs. 3.7-3.8).
    Influence functions include the estimated-weights term (R's ``wif``); ``balance_e``,
    ``min_e`` and ``max_e`` restrict event times as in R (``max_e`` also trims the post-treatment
    cells of the simple and group aggregations, counted in periods).
    """
    if kind not in AGGREGATIONS:
        raise InputError(f"aggregation must be one of {', '.join(AGGREGATIONS)}; got {kind!r}")
    alpha = result.alpha if alpha is None else alpha
    gt = result.group_time
    att = gt["estimate"].to_numpy(dtype=float)
    if np.isnan(att).any():
        raise InputError("some ATT(g,t) are missing; cannot aggregate")
    group, t = gt["g"].to_numpy(dtype=float), gt["t"].to_numpy(dtype=float)
    psi, G, w = result.influence, result.unit_cohort, result.unit_weight
    glist = np.unique(group)
    pgg = np.array([np.mean(w * (G == g)) for g in glist])
    pg = pgg[np.searchsorted(glist, group)]
    tvals = np.unique(t)
    t_idx, g_idx = np.searchsorted(tvals, t), np.searchsorted(tvals, group)
    post = (group <= t) & (t_idx - g_idx <= max_e)

    if kind == "simple":
        idx = np.flatnonzero(post)
        wif = _weight_if(group[idx], pg[idx], w, G)
        overall_if = _combine(att, psi, idx, pg[idx] / pg[idx].sum(), wif)
        overall = float(np.sum(att[idx] * pg[idx]) / pg[idx].sum())
        labels, est, ifs = [], [], np.empty((len(G), 0))
    elif kind == "group":
        labels, est, cols = [], [], []
        for g in glist:
            idx = np.flatnonzero((group == g) & post)
            labels.append(g)
            est.append(att[idx].mean() if len(idx) else np.nan)
            cols.append(_combine(att, psi, idx, pg[idx] / pg[idx].sum()) if len(idx) else np.zeros(len(G)))
        est, ifs = np.array(est), np.column_stack(cols)
        overall = float(np.sum(est * pgg) / pgg.sum())
        wif = _weight_if(glist, pgg, w, G)
        overall_if = ifs @ (pgg / pgg.sum()) + wif @ est
    elif kind == "dynamic":
        include = np.ones(len(att), dtype=bool)
        e_all = t - group
        eseq = np.unique(e_all)
        if balance_e is not None:
            include = (tvals[-1] - group) >= balance_e
            eseq = np.unique(e_all[include])
            eseq = eseq[(eseq <= balance_e) & (eseq >= balance_e - tvals[-1] + tvals[0])]
        eseq = eseq[(eseq >= min_e) & (eseq <= max_e)]
        labels, est, cols = list(eseq), [], []
        for e in eseq:
            idx = np.flatnonzero((e_all == e) & include)
            weights = pg[idx] / pg[idx].sum()
            est.append(float(np.sum(att[idx] * weights)))
            cols.append(_combine(att, psi, idx, weights, _weight_if(group[idx], pg[idx], w, G)))
        est, ifs = np.array(est), np.column_stack(cols) if cols else np.empty((len(G), 0))
        epos = eseq >= 0
        if not epos.any():
            raise InputError("no event time e >= 0 left to average (check min_e, max_e, balance_e)")
        overall = float(est[epos].mean())
        overall_if = ifs[:, epos] @ np.full(epos.sum(), 1 / epos.sum())
    else:  # calendar
        labels, est, cols = [], [], []
        for t1 in tvals[tvals >= group.min()]:
            idx = np.flatnonzero((t == t1) & (group <= t))
            if not len(idx):
                continue
            weights = pg[idx] / pg[idx].sum()
            labels.append(t1)
            est.append(float(np.sum(att[idx] * weights)))
            cols.append(_combine(att, psi, idx, weights, _weight_if(group[idx], pg[idx], w, G)))
        est, ifs = np.array(est), np.column_stack(cols)
        overall = float(est.mean())
        overall_if = ifs.mean(axis=1)
    return _aggregate_result(result, kind, labels, est, ifs, overall, overall_if, bootstrap, seed, alpha)


def _aggregate_result(result, kind, labels, est, ifs, overall, overall_if, bootstrap, seed, alpha):
    allif = np.column_stack([ifs, overall_if])
    cl, ncl = result.unit_cluster, result.variance.n_clusters
    se = _analytic_se(allif, cl, ncl)
    notes = list(result.notes)
    crit = None
    if bootstrap:
        boot_se, _ = multiplier_bootstrap(allif, cl, ncl, int(bootstrap), seed, alpha)
        se = np.where(np.isnan(se), np.nan, boot_se)
        if ifs.shape[1]:
            _, crit = multiplier_bootstrap(ifs, cl, ncl, int(bootstrap), seed, alpha)
            crit = _checked_crit(crit, alpha, notes)
    variance = _variance(result.variance.cluster, ncl, bootstrap)
    overall_est = Estimate.from_se(overall, se[-1], variance, alpha)
    egt = estimate_table(pd.RangeIndex(len(labels)), est, se[:-1], variance, alpha, crit)
    egt.insert(0, "egt", np.asarray(labels, dtype=float))
    event_time = None
    if kind == "dynamic":
        event_time = egt.rename(columns={"egt": "e"})
    name = {"simple": "simple weighted average", "group": "average over cohorts",
            "dynamic": "event study (average over e >= 0)", "calendar": "average over calendar periods"}
    return AggregateResult(
        estimator=f"{result.estimator}; aggregation: {name[kind]}", variance=variance,
        n_obs=result.n_obs, n_units=result.n_units, overall=overall_est,
        group_time=result.group_time, event_time=event_time, notes=notes,
        details={**result.details, "aggregation": kind, "aggregation_bootstrap": int(bootstrap),
                 "egt_critical_value": crit,
                 "egt": [{"egt": float(lab), "estimate": float(e), "se": float(s)}
                         for lab, e, s in zip(labels, est, se[:-1])]},
        kind=kind, egt=egt, influence=allif)
