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
from scipy import sparse, stats

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

    ``att_gt`` keeps psi by cohort blocks (``_Influence``) and builds the dense ``influence``
    matrix on first access; assigning ``influence`` replaces it (and detaches the blocks).
    """

    influence: np.ndarray | None = None
    unit_cohort: np.ndarray | None = None
    unit_weight: np.ndarray | None = None
    unit_cluster: np.ndarray | None = None
    alpha: float = 0.05
    #: ``influence`` by cohort blocks (private; used while ``influence`` is the array it built).
    _psi: _Influence | None = field(default=None, repr=False, compare=False)


def _get_influence(self: GroupTimeResult) -> np.ndarray | None:
    dense = self.__dict__.get("_influence")
    infl = self.__dict__.get("_psi")
    if dense is None and infl is not None:
        dense = infl.dense if infl.dense is not None else infl.to_dense()
        infl.dense = self.__dict__["_influence"] = dense
    return dense


def _set_influence(self: GroupTimeResult, value) -> None:
    infl = self.__dict__.get("_psi")
    if infl is not None and value is not infl.dense:
        self.__dict__["_psi"] = None  # the blocks no longer describe ``influence``
    self.__dict__["_influence"] = value


# The dense influence matrix (n x K floats, 31 MB at 25k units x 156 cells) is built only when
# read: att_gt, pretest and aggte work on the blocks.
GroupTimeResult.influence = property(_get_influence, _set_influence)


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
        return int(self.Y.size - np.count_nonzero(np.isnan(self.Y)))


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
                          col: str, role: str, in_order: bool = False) -> np.ndarray:
    """One value per unit (NaN-aware); InputError naming the units where it varies.

    ``in_order``: the rows are the n x T grid, unit-major (one row per unit and period, sorted).
    """
    # Fast check: compare every row with one row of its unit (NaN equals NaN); the pandas
    # group-by below runs only when some unit varies, to name the units.
    if in_order:
        grid = values.reshape(len(ids), -1)
        ref, rows = grid[:, 0], grid
        if (rows == ref[:, None]).all():
            return ref.copy()
    else:
        ref = np.empty(len(ids))
        ref[codes] = values
        rows = values
    ref_rows = ref[:, None] if in_order else ref[codes]
    same = (rows == ref_rows) | (np.isnan(rows) & np.isnan(ref_rows))
    if same.all():
        return ref.copy()
    frame = pd.DataFrame({"u": codes, "v": values})
    n_distinct = frame.groupby("u", sort=True)["v"].nunique(dropna=False)
    varying = np.flatnonzero(n_distinct.to_numpy() > 1)
    if len(varying):
        shown = ", ".join(repr(plain(ids[i])) for i in varying[:5])
        raise InputError(problem(
            f"{role} must be constant within each unit, but it changes over time for "
            f"{len(varying)} unit(s): {shown}", column=col))
    return frame.groupby("u", sort=True)["v"].first().to_numpy(dtype=float)


def _factorize_sorted(ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``pd.factorize(ids, sort=True)`` with a shortcut for numeric ids already in order."""
    values = ids.to_numpy()
    if (values.dtype.kind in "iuf" and len(values) > 1
            and (values[1:] >= values[:-1]).all()):
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        counts = np.diff(np.r_[starts, len(values)])
        return np.repeat(np.arange(len(starts)), counts), values[starts]
    codes, uniques = pd.factorize(ids, sort=True)
    return codes, np.asarray(uniques)


def _sorted_codes(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values and each element's position among them (np.unique, by hashing)."""
    if len(t):
        lo, hi = t.min(), t.max()
        if hi - lo < 4 * len(t) + 1000:  # whole numbers in a short range (years): by counting
            ti = t.astype(np.int64)
            if (ti == t).all():
                present = np.bincount(ti - int(lo), minlength=int(hi - lo) + 1) > 0
                rank = np.cumsum(present) - 1
                return np.flatnonzero(present) + lo, rank[ti - int(lo)]
    codes, uniques = pd.factorize(t)
    uniques = np.asarray(uniques, dtype=float)
    order = np.argsort(uniques)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return uniques[order], rank[codes]


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
    codes, uniques = _factorize_sorted(ids)
    n = len(uniques)
    # The usual layout: sorted by unit, then period, every unit in every period. Then the
    # outcome column is already the n x T matrix and no period codes are needed.
    in_order = False
    if n and len(t) % n == 0 and len(t) // n > 0:
        grid = t.reshape(n, -1)
        first = grid[0]
        in_order = bool(np.all(first[1:] > first[:-1]) and (grid == first).all()
                        and (codes.reshape(n, -1) == np.arange(n)[:, None]).all())
    if in_order:
        periods, T = first.copy(), grid.shape[1]
        t_idx = cell = None  # not needed: row i * T + j is unit i in period j
    else:
        periods, t_idx = _sorted_codes(t)
        T = len(periods)
        cell = codes.astype(np.int64) * T + t_idx
    if not in_order and len(cell) and np.bincount(cell, minlength=n * T).max() > 1:
        dup = pd.DataFrame({"u": codes, "t": t}).duplicated()
        pos = int(np.flatnonzero(dup.to_numpy())[0])
        raise InputError(problem(f"more than one row for unit {plain(uniques[codes[pos]])!r} in period "
                                 f"{t[pos]:g}; the panel needs one row per unit and period",
                                 row=pos + 1, column=unit, value=ids.iloc[pos]))
    unit_g = _constant_within_unit(codes, g, uniques, cohort, "cohort", in_order)
    unit_w = (np.ones(n) if weights is None else
              _constant_within_unit(codes, w, uniques, weights, "weights", in_order))
    if cluster is not None:
        cl_codes = pd.factorize(panel[cluster])[0].astype(float)
        cl_codes[panel[cluster].isna().to_numpy()] = np.nan
        unit_cl = _constant_within_unit(codes, cl_codes, uniques, cluster,
                                        "cluster (clusters must nest units)", in_order)
        if np.isnan(unit_cl).any():
            raise InputError(problem("cluster must be present for every unit", column=cluster, value=None))
        unit_cl = pd.factorize(unit_cl)[0]
    else:
        unit_cl = np.arange(len(uniques))

    if in_order:
        Y = yv.reshape(n, T).copy()  # sorted by unit and period, balanced: already the n x T layout
    else:
        Y = np.full(n * T, np.nan)
        Y[cell] = yv
        Y = Y.reshape(n, T)
    X = None
    if xs:
        X = np.full((n, T, len(xs)), np.nan)
        if in_order:
            X[:] = np.column_stack(xs).reshape(n, T, len(xs))
        else:
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
    missing = np.isnan(Y)
    observed = ~missing.all(axis=1)
    if (~observed & keep).any():
        notes.append(f"Dropped {int((~observed & keep).sum())} unit(s) with no usable observation.")
        keep &= observed
    complete = ~missing.any(axis=1)
    unbalanced = not complete[keep].all()
    if unbalanced and not allow_unbalanced:
        notes.append(f"Dropped {int((keep & ~complete).sum())} unit(s) to balance the panel "
                     "(allow_unbalanced=False, as R did's default).")
        keep &= complete
    if not keep.any():
        raise InputError("no units left after dropping units treated in the first period and "
                         "units without complete data")
    sel = slice(None) if keep.all() else np.flatnonzero(keep)
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


def _rows_by_code(code: np.ndarray, n_codes: int) -> list[np.ndarray]:
    """Row indices (ascending) of each code 0..n_codes-1."""
    order = np.argsort(code, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(code, minlength=n_codes))]
    return [order[bounds[h]:bounds[h + 1]] for h in range(n_codes)]


class _Influence:
    """The n x K influence-function matrix psi, kept by cohort blocks.

    A column of psi (one ATT(g,t)) is zero outside cohort g and its comparison units, so the rows
    of cohort h are non-zero only in the columns ``cols[h]`` (the cells where h is treated or a
    comparison): ``blocks[h]`` is psi[rows[h]][:, cols[h]]. Standard errors, the pre-test and the
    aggregations (psi @ weights) run over the blocks, which hold a small part of psi (about 1/6
    in the 25k x 14 benchmark, never-treated comparison). ``dense`` is the full matrix, the one
    stored in ``GroupTimeResult.influence``.
    """

    def __init__(self, n: int, K: int, cohorts: np.ndarray, rows: list, cols: list, blocks: list,
                 dense=None):
        self.n, self.K, self.cohorts = n, K, cohorts
        self.rows, self.cols, self.blocks = rows, cols, blocks
        self.dense = dense
        self._unit_position = None
        self._sums_cluster, self._sums = None, None

    @classmethod
    def from_dense(cls, psi: np.ndarray, cohort: np.ndarray | None) -> _Influence:
        n = psi.shape[0]
        cohorts, code = np.unique(np.full(n, np.nan) if cohort is None else cohort, return_inverse=True)
        rows, cols, blocks = [], [], []
        for r in _rows_by_code(code, int(code.max()) + 1 if n else 0):
            sub = psi[r]
            c = np.flatnonzero((sub != 0).any(axis=0))
            rows.append(r)
            cols.append(c)
            blocks.append(sub[:, c])
        return cls(n, psi.shape[1], cohorts, rows, cols, blocks, psi)

    def to_dense(self) -> np.ndarray:
        psi = np.zeros((self.n, self.K))
        for r, c, b in zip(self.rows, self.cols, self.blocks):
            if len(c) and len(r):
                psi[np.ix_(r, c)] = b
        return psi

    def cluster_sums(self, cluster: np.ndarray, n_clusters: int) -> np.ndarray:
        """C x K cluster sums S_c of psi (R ``rowsum(psi, cluster)``)."""
        if self._sums_cluster is cluster and self._sums.shape[0] == n_clusters:
            return self._sums  # att_gt's SEs and its pre-test use the same sums
        S = np.zeros((n_clusters, self.K))
        for r, c, b in zip(self.rows, self.cols, self.blocks):
            if len(c) and len(r):
                ind = sparse.csr_matrix((np.ones(len(r)), (cluster[r], np.arange(len(r)))),
                                        shape=(n_clusters, len(r)))
                S[:, c] += ind @ b
        self._sums_cluster, self._sums = cluster, S
        return S

    def sum_sq(self, cluster: np.ndarray, n_clusters: int) -> np.ndarray:
        """sum_c S_ck^2 per column (sum_i psi_ik^2 when every unit is its own cluster)."""
        if n_clusters != self.n:
            S = self.cluster_sums(cluster, n_clusters)
            return np.einsum("ij,ij->j", S, S)
        out = np.zeros(self.K)
        for c, b in zip(self.cols, self.blocks):
            if len(c):
                out[c] += np.einsum("ij,ij->j", b, b)
        return out

    def gram(self, sel: np.ndarray, cluster: np.ndarray, n_clusters: int) -> np.ndarray:
        """S[:, sel]' S[:, sel] (psi[:, sel]' psi[:, sel] when every unit is its own cluster)."""
        if n_clusters != self.n:
            S = self.cluster_sums(cluster, n_clusters)[:, sel]
            return S.T @ S
        pos = np.full(self.K, -1)
        pos[sel] = np.arange(len(sel))
        V = np.zeros((len(sel), len(sel)))
        for c, b in zip(self.cols, self.blocks):
            loc = pos[c]
            keep = loc >= 0
            if keep.any():
                bs = b[:, keep]
                step = max(1, 384_000 // bs.shape[1] ** 2)  # see _rows_dot
                sub = np.zeros((bs.shape[1], bs.shape[1]))
                for i in range(0, len(bs), step):
                    sub += bs[i:i + step].T @ bs[i:i + step]
                V[np.ix_(loc[keep], loc[keep])] += sub
        return V

    def matmul(self, W: np.ndarray, w: np.ndarray | None = None, coef: np.ndarray | None = None,
               extra: int = 0) -> np.ndarray:
        """psi @ W for a K x m matrix W, plus w_i coef[h] on the rows of cohort block h if given;
        ``extra`` zero columns are appended (for the caller to fill)."""
        m = W.shape[1]
        out = np.zeros((self.n, m + extra))  # rows in block order, put in unit order at the end
        bounds = np.cumsum([0] + [len(r) for r in self.rows])
        for h, (r, c, b) in enumerate(zip(self.rows, self.cols, self.blocks)):
            if not len(r) or (not len(c) and coef is None):
                continue
            if not len(c):
                part = w[r][:, None] * coef[h]
            else:
                part = _rows_dot(b, W[c])
                if coef is not None:
                    part += w[r][:, None] * coef[h]
            out[bounds[h]:bounds[h + 1], :m] = part
        return out.take(self.unit_position, axis=0)

    @property
    def unit_block(self) -> np.ndarray:
        """Each unit's block (cohort) index."""
        block = np.empty(self.n, dtype=np.int64)
        for h, r in enumerate(self.rows):
            block[r] = h
        return block

    @property
    def unit_position(self) -> np.ndarray:
        """Row of each unit in the block order (the inverse of concatenating ``rows``)."""
        if self._unit_position is None:
            pos = np.empty(self.n, dtype=np.int64)
            if self.rows:
                pos[np.concatenate(self.rows)] = np.arange(self.n)
            self._unit_position = pos
        return self._unit_position


def _influence_of(result: GroupTimeResult) -> _Influence:
    infl = result._psi
    if infl is None:
        infl = _Influence.from_dense(np.atleast_2d(result.influence.T).T, result.unit_cohort)
    return infl


def _att_cells_means(p: _Panel, cells, cohorts, rows, control, method, anticipation):
    """Every ATT(g,t) of a balanced panel without covariates at once, with influence blocks.

    Without covariates the three panel 2x2 estimators reduce to the difference of weighted mean
    changes, cohort g minus its comparison units (the propensity score is the weighted treated
    share, the outcome regression the comparison mean; SZ 2020 Sec. 2), and their influence
    functions to n w_i (dy_i - m_t) / W_t on cohort g and -n w_i (dy_i - m_c) / W_c on the
    comparison units (W: weight total, m: weighted mean change; the estimation-effect terms of
    drdid_panel / std_ipw_did_panel / reg_did_panel are sums of residuals around these means,
    zero up to rounding). Means come from cohort-by-period weighted sums; the influence functions
    are computed one cohort block at a time (columns where the cohort is treated or a comparison).

    Returns att (K), ok (K: cells done here; the others go through the per-cell estimators, which
    also raise the errors for cells without comparison units), and per cohort the columns and
    blocks of psi. Cells with a treated share of 0.99 or more (where dr/ipw trimming of the
    propensity score could bind) or an empty weight total are left to the per-cell estimators.
    """
    n = len(p.cohort)
    K = len(cells)
    g = np.array([c[0] for c in cells], dtype=float)
    cur = np.array([c[1] for c in cells], dtype=np.int64)
    base = np.array([c[2] if c[2] is not None else c[1] for c in cells], dtype=np.int64)
    hg = np.searchsorted(cohorts, g)
    order = np.concatenate(rows)
    bounds = np.cumsum([0] + [len(r) for r in rows])
    w, Ys = p.weight[order], p.Y[order]  # units sorted by cohort: each cohort a slice
    Wh = np.add.reduceat(w, bounds[:-1])
    WY = np.add.reduceat(w[:, None] * Ys, bounds[:-1], axis=0)  # cohort x period weighted sums
    if control == "never":
        comp = np.broadcast_to(cohorts == 0, (K, len(cohorts)))
    else:
        later = p.periods[np.maximum(cur, base)] + anticipation
        comp = (cohorts == 0)[None, :] | ((cohorts[None, :] > later[:, None])
                                          & (cohorts[None, :] != g[:, None]))
    dWY = WY[:, cur] - WY[:, base]  # cohort x cell
    Wt, Wc = Wh[hg], comp.astype(float) @ Wh
    St, Sc = dWY[hg, np.arange(K)], np.sum(comp * dWY.T, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        m_t, m_c = St / Wt, Sc / Wc
        share = Wt / (Wt + Wc)
    ok = (cur != base) & (Wt > 0) & (Wc > 0)
    if method != "reg":
        ok &= share < 0.99
    att = m_t - m_c
    kk = np.arange(K)
    cols, blocks = [], []
    for h in range(len(rows)):
        tc, cc = kk[ok & (hg == h)], kk[ok & comp[:, h]]
        c = np.r_[tc, cc]
        mref, wref = np.r_[m_t[tc], m_c[cc]], np.r_[Wt[tc], -Wc[cc]]
        Yh, a = Ys[bounds[h]:bounds[h + 1]], n * w[bounds[h]:bounds[h + 1]]
        b = Yh[:, cur[c]]
        b -= Yh[:, base[c]]
        b -= mref
        b *= a[:, None]
        b /= wref
        cols.append(c)
        blocks.append(b)
    return att, ok, cols, blocks


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
           seed=None, allow_unbalanced: bool = True, max_e: int | None = None) -> GroupTimeResult:
    """Group-time ATTs of Callaway & Sant'Anna (2021, eqs. 2.6-2.7), matching R ``did::att_gt``.

    ``cohort`` holds the first treated period (0 or NaN: never treated). ``control="notyet"``
    adds not-yet-treated units (treated after max(t, base) + anticipation) to the comparison.
    Balanced panels use the panel 2x2 estimators; unbalanced ones (``allow_unbalanced=True``)
    the repeated-cross-section route of R did (no covariates); with ``allow_unbalanced=False``
    incomplete units are dropped. ``bootstrap`` > 0 replaces analytic SEs by multiplier-bootstrap
    SEs and the confidence intervals by simultaneous sup-t bands (CS 2021, Algorithm 1).
    ``max_e``: post-treatment cells with t - g > max_e are not computed (a design with no treated
    observation there, e.g. pupils on roll before joining; aggregations up to max_e are unchanged,
    since each cell's estimate and influence function depend on its own 2x2 comparison only).
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
    cells = _gt_cells(p.periods, groups, base_period, anticipation)
    if max_e is not None:
        cells = [c for c in cells if p.periods[c[1]] - c[0] <= max_e]
    n, K = len(p.cohort), len(cells)
    if K == 0:
        raise InputError("no group-time cell to estimate")
    cohorts, code = np.unique(p.cohort, return_inverse=True)
    rows = _rows_by_code(code, len(cohorts))
    if balanced and p.X is None:
        att, ok, cols, blocks = _att_cells_means(p, cells, cohorts, rows, control, method, anticipation)
    else:
        att, ok = np.zeros(K), np.zeros(K, dtype=bool)
        cols, blocks = [np.zeros(0, dtype=np.int64)] * len(rows), [np.zeros((len(r), 0)) for r in rows]
    extra: dict[int, np.ndarray] = {}  # cells estimated one at a time
    for k, (g, cur, base) in enumerate(cells):
        if base == cur:  # universal base period: ATT(g, g-1) is normalised to 0
            att[k] = 0.0
        elif not ok[k]:
            if balanced:
                att[k], extra[k] = _att_cell_panel(p, g, cur, base, control, method, anticipation)
            else:
                att[k], extra[k] = _att_cell_rc(p, g, cur, base, control, anticipation)
    if extra:
        for h, r in enumerate(rows):
            more = [(k, v[r]) for k, v in extra.items()]
            more = [(k, v) for k, v in more if (v != 0).any()]
            if more:
                cols[h] = np.r_[cols[h], [k for k, _ in more]].astype(np.int64)
                blocks[h] = np.column_stack([blocks[h]] + [v for _, v in more])
    infl = _Influence(n, K, cohorts, rows, cols, blocks)
    g_cell = np.array([c[0] for c in cells], dtype=float)
    t_cell = p.periods[[c[1] for c in cells]]
    post = np.array([int(c[2] != c[1] and c[0] <= p.periods[c[1]]) for c in cells], dtype=np.int64)
    gt = pd.DataFrame({"g": g_cell, "t": t_cell, "estimate": att, "post": post})
    se = np.sqrt(infl.sum_sq(p.cluster, p.n_clusters)) / n
    se = np.where(se <= SE_ZERO, np.nan, se)
    variance = _variance(cluster or unit, p.n_clusters, bootstrap)
    crit = None
    if bootstrap:
        infl.dense = infl.to_dense()
        boot_se, crit = multiplier_bootstrap(infl.dense, p.cluster, p.n_clusters, int(bootstrap), seed, alpha)
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
        notes=notes, influence=infl.dense, unit_cohort=p.cohort, unit_weight=p.weight,
        unit_cluster=p.cluster, alpha=alpha, _psi=infl,
        details={"control": control, "method": method, "base_period": base_period,
                 "anticipation": anticipation, "bootstrap": int(bootstrap), "seed": seed,
                 **({} if max_e is None else {"max_e": int(max_e)}),
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
    ind = sparse.csr_matrix((np.ones(len(cluster)), (cluster, np.arange(len(cluster)))),
                            shape=(n_clusters, len(cluster)))
    return np.asarray(ind @ psi)


def _analytic_se(psi: np.ndarray, cluster: np.ndarray, n_clusters: int) -> np.ndarray:
    """R did 2.5's analytic SE: sqrt(sum_c S_c^2) / n, S_c the cluster sums of psi (CS 2021 Remark 10)."""
    psi = np.atleast_2d(psi.T).T
    sums = psi if n_clusters == psi.shape[0] else _cluster_sums(psi, cluster, n_clusters)
    se = np.sqrt(np.einsum("ij,ij->j", sums, sums)) / psi.shape[0]
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
    infl = _influence_of(result)
    n = infl.n
    cluster = result.unit_cluster if result.unit_cluster is not None else np.arange(n)
    n_clusters = int(cluster.max()) + 1
    se = np.sqrt(infl.sum_sq(cluster, n_clusters)) / n
    pre = np.flatnonzero((gt["g"].to_numpy() > gt["t"].to_numpy()) & (se > SE_ZERO))
    if len(pre) == 0:
        return None
    att = gt["estimate"].to_numpy()[pre]
    V = infl.gram(pre, cluster, n_clusters) / n
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
    """Influence function of estimated weights pg_k / sum(pg) (R did's ``wif``), n x K.

    The reference formula; ``aggte`` uses its product with ATT per cohort (``_weight_if_coef``).

    Column k: (w 1{G=g_k} - pg_k)/sum(pg) - sum_j(w 1{G=g_j} - pg_j) pg_k / sum(pg)^2.
    """
    dev = w[:, None] * (G[:, None] == np.asarray(keep_groups)[None, :]) - pg_keep[None, :]
    total = pg_keep.sum()
    return dev / total - np.outer(dev.sum(axis=1), pg_keep / total ** 2)


def _weight_if_coef(specs, glist):
    """``_weight_if(g, pg, w, G) @ a`` for each (g, pg, a) in ``specs``, as w_i coef[h_i, j].

    With P = sum_k pg_k and A = sum_k pg_k a_k, row i of ``_weight_if(...) @ a`` is
    w_i (s_i / P - c_i A / P^2), where s_i sums a_k over the cells k of unit i's cohort and c_i
    counts them (the -pg_k / P terms cancel against the sum_j pg_j part). Returns the
    (len(glist) + 1) x len(specs) matrix coef; h_i is the position of unit i's cohort in
    ``glist``, len(glist) for cohorts outside it (coef 0 there).
    """
    coef = np.zeros((len(glist) + 1, len(specs)))
    for j, (g, pg, a) in enumerate(specs):
        if not len(g):
            continue
        total, weighted = pg.sum(), np.sum(pg * a)
        pos = np.searchsorted(glist, g)
        s_h = np.bincount(pos, weights=a, minlength=len(glist) + 1)
        c_h = np.bincount(pos, minlength=len(glist) + 1)
        coef[:, j] = s_h / total - c_h * weighted / total ** 2
    return coef


def _rows_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b in row chunks small enough for OpenBLAS to run each on the calling thread.

    These products are small; on a busy machine waking BLAS worker threads for them costs far
    more than the product (65 ms instead of 1 ms measured for a 2,000 x 78 Gram matrix).
    """
    b2 = b if b.ndim == 2 else b[:, None]
    step = max(1, 262_144 // max(1, b2.shape[0] * b2.shape[1]))
    out = np.empty((a.shape[0], b2.shape[1]))
    for i in range(0, a.shape[0], step):
        out[i:i + step] = a[i:i + step] @ b2
    return out if b.ndim == 2 else out[:, 0]


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
    infl, G, w = _influence_of(result), result.unit_cohort, result.unit_weight
    glist = np.unique(group)
    pos = np.minimum(np.searchsorted(glist, infl.cohorts), len(glist) - 1)
    block_g = np.where(glist[pos] == infl.cohorts, pos, len(glist))  # each cohort block's place in glist
    # cohort shares mean(w 1{G = g}), summed over the cohort's block
    pgg = np.zeros(len(glist) + 1)
    pgg[block_g] = [w[r].sum() / len(G) for r in infl.rows]
    pgg = pgg[:-1]
    pg = pgg[np.searchsorted(glist, group)]
    tvals = np.unique(t)
    t_idx, g_idx = np.searchsorted(tvals, t), np.searchsorted(tvals, group)
    post = (group <= t) & (t_idx - g_idx <= max_e)

    # Each aggregated parameter j is sum_k W[k, j] ATT_k over cells k; its influence function is
    # psi @ W[:, j] plus, where the weights are estimated cohort shares, the weights' influence
    # function times ATT (R's wif; ``_weight_if_coef``), all columns at once, by default with a
    # spare last column for the overall parameter.
    def combine(cols, wif_specs=None, extra=1):
        W = np.zeros((len(att), len(cols)))
        for j, (idx, weights) in enumerate(cols):
            W[idx, j] = weights
        coef = _weight_if_coef(wif_specs, glist)[block_g] if wif_specs else None
        return infl.matmul(W, w, coef, extra=extra)

    if kind == "simple":
        idx = np.flatnonzero(post)
        spec = (group[idx], pg[idx], att[idx])
        allif = combine([(idx, pg[idx] / pg[idx].sum())], [spec], extra=0)
        overall_if = None
        overall = float(np.sum(att[idx] * pg[idx]) / pg[idx].sum())
        labels, est, ifs = [], [], allif[:, :0]
    elif kind == "group":
        labels, est, cols = [], [], []
        for g in glist:
            idx = np.flatnonzero((group == g) & post)
            labels.append(g)
            est.append(att[idx].mean() if len(idx) else np.nan)
            cols.append((idx, pg[idx] / pg[idx].sum() if len(idx) else 0.0))
        allif = combine(cols)
        est, ifs = np.array(est), allif[:, :-1]
        overall = float(np.sum(est * pgg) / pgg.sum())
        coef = _weight_if_coef([(glist, pgg, est)], glist)[block_g, 0]
        overall_if = _rows_dot(ifs, pgg / pgg.sum()) + w * coef[infl.unit_block]
    elif kind == "dynamic":
        include = np.ones(len(att), dtype=bool)
        e_all = t - group
        eseq = np.unique(e_all)
        if balance_e is not None:
            include = (tvals[-1] - group) >= balance_e
            eseq = np.unique(e_all[include])
            eseq = eseq[(eseq <= balance_e) & (eseq >= balance_e - tvals[-1] + tvals[0])]
        eseq = eseq[(eseq >= min_e) & (eseq <= max_e)]
        labels, est, cols, specs = list(eseq), [], [], []
        for e in eseq:
            idx = np.flatnonzero((e_all == e) & include)
            weights = pg[idx] / pg[idx].sum()
            est.append(float(np.sum(att[idx] * weights)))
            cols.append((idx, weights))
            specs.append((group[idx], pg[idx], att[idx]))
        allif = combine(cols, specs) if cols else np.zeros((len(G), 1))
        est, ifs = np.array(est), allif[:, :-1]
        epos = eseq >= 0
        if not epos.any():
            raise InputError("no event time e >= 0 left to average (check min_e, max_e, balance_e)")
        overall = float(est[epos].mean())
        overall_if = _rows_dot(ifs[:, epos], np.full(epos.sum(), 1 / epos.sum()))
    else:  # calendar
        labels, est, cols, specs = [], [], [], []
        for t1 in tvals[tvals >= group.min()]:
            idx = np.flatnonzero((t == t1) & (group <= t))
            if not len(idx):
                continue
            weights = pg[idx] / pg[idx].sum()
            labels.append(t1)
            est.append(float(np.sum(att[idx] * weights)))
            cols.append((idx, weights))
            specs.append((group[idx], pg[idx], att[idx]))
        allif = combine(cols, specs)
        est, ifs = np.array(est), allif[:, :-1]
        overall = float(est.mean())
        overall_if = ifs.mean(axis=1)
    if overall_if is not None:
        allif[:, -1] = overall_if
    return _aggregate_result(result, kind, labels, est, ifs, allif, overall, bootstrap, seed, alpha)


def _aggregate_result(result, kind, labels, est, ifs, allif, overall, bootstrap, seed, alpha):
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
