"""Borusyak, Jaravel & Spiess (2024, Review of Economic Studies) imputation DiD estimator.

Theorem 1 (imputation): fit ``Y_it = a_i + b_t + X_it'g + e_it`` by (weighted) least
squares on the untreated observations only (never treated, and not yet treated:
``t < cohort_i``); impute ``Y_it(0)`` for every treated observation; each
``tau_it = Y_it - Y_it(0)``; an estimand is a weighted sum ``sum w_it tau_it``
(overall ATT: observation-weight shares of all treated observations; horizon h:
shares of treated observations with ``t - cohort_i = h``).

Variance: Theorem 3's conservative clustered variance, computed as the Stata
command did_imputation does (version of November 2023): the estimator is linear,
``tau_w = sum_it v_it Y_it`` with ``v_it = w_it`` for treated and
``v = -Z0 (Z0'W Z0)^-1 Z1'W w`` for untreated observations; the variance is
``sum_clusters (sum_it v_it eps_it)^2`` with untreated residuals from the
imputation regression and, for treated observations, ``tau_it`` minus its
average within cohort x period cells (the averaging weights of did_imputation;
with ``leave_out=True``, its ``leaveout`` option, the cell average excludes the
observation's own cluster). No small-sample correction; normal critical values.

Pre-trend test: BJS Test 1 (Section 4.4): on the untreated observations, regress
``Y`` on the fixed effects, covariates and lead dummies ``1{t - cohort_i = -k}``,
k = 1..pretrend_leads, and F-test that the leads are zero with cluster-robust
(CR1, reghdfe convention) variance and G - 1 denominator degrees of freedom.

Fixed effects are absorbed with ``fixed_effects.demean`` (alternating
projections). Imputation uses zero weights on treated rows: the demeaned value of
a treated row is then exactly ``Y_it - a_i - b_t`` with the FE fitted on the
untreated rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse, stats
from scipy.sparse.csgraph import connected_components

from evaluation.errors import InputError, problem, plain
from evaluation.estimators.bacon import _missing_columns, _numeric, staggered_panel
from evaluation.estimators.fixed_effects import demean
from evaluation.estimators.results import (Estimate, EstimatorResult, VarianceConvention,
                                           estimate_table)

ESTIMATOR_NAME = "imputation DiD (Borusyak, Jaravel & Spiess 2024)"
_DEMEAN_TOL = 1e-13


def _show_units(units: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(repr(u.item() if hasattr(u, "item") else u) for u in units[:limit])
    return shown + (f" and {len(units) - limit} more" if len(units) > limit else "")


def _check_identified(unit0, time0, unit1, time1, n_units, n_times, units, times, cohort_col,
                      unit_col, time_col) -> None:
    """Every treated (unit, period) needs a unit FE and a period FE estimated on untreated
    observations, in one connected set (BJS Theorem 1's identification condition)."""
    has_u = np.bincount(unit0, minlength=n_units) > 0
    has_t = np.bincount(time0, minlength=n_times) > 0
    bad_u = np.unique(unit1[~has_u[unit1]])
    if len(bad_u):
        raise InputError(problem(
            f"{len(bad_u)} unit(s) have no untreated observation (always treated, or first "
            f"observed at or after their cohort), so their unit fixed effect cannot be estimated "
            f"and their Y(0) cannot be imputed: {_show_units(units[bad_u])}. Drop these units",
            column=cohort_col, value=units[bad_u[0]]))
    bad_t = np.unique(time1[~has_t[time1]])
    if len(bad_t):
        raise InputError(problem(
            f"period(s) {', '.join(f'{t:g}' for t in times[bad_t])} have no untreated "
            f"observation (every unit is already treated), so the period fixed effect cannot be "
            f"estimated; drop these periods or add never-treated units", column=time_col,
            value=times[bad_t[0]]))
    graph = sparse.coo_matrix((np.ones(len(unit0)), (unit0, n_units + time0)),
                              shape=(n_units + n_times,) * 2)
    _, label = connected_components(graph, directed=False)
    split = label[unit1] != label[n_units + time1]
    if split.any():
        j = int(np.flatnonzero(split)[0])
        raise InputError(problem(
            f"unit {plain(units[unit1[j]])!r} in period {times[time1[j]]:g}: its unit and period "
            f"fixed effects are estimated on disconnected sets of untreated observations, so "
            f"Y(0) is not identified", column=unit_col, value=units[unit1[j]]))


def _imputation_weights(unit0, time0, X0, om0, A_unit, A_time, A_x, n_units, n_times):
    """Untreated-observation weights of the imputation estimators (BJS eq. in Theorem 1:
    v_0 = -Z0 (Z0' W0 Z0)^-1 a, a = Z1' W1 w1), one column per estimand.

    Solves the normal equations of the two-way FE (+ covariates) model exactly by
    eliminating the unit block (diagonal) and solving the small (periods + covariates)
    Schur complement system.
    """
    k = X0.shape[1]
    Du = np.bincount(unit0, weights=om0, minlength=n_units)
    C = np.zeros((n_units, n_times + k))
    C[:, :n_times] = np.bincount(unit0 * n_times + time0, weights=om0,
                                 minlength=n_units * n_times).reshape(n_units, n_times)
    for j in range(k):
        C[:, n_times + j] = np.bincount(unit0, weights=om0 * X0[:, j], minlength=n_units)
    G = np.zeros((n_times + k, n_times + k))
    G[np.arange(n_times), np.arange(n_times)] = np.bincount(time0, weights=om0, minlength=n_times)
    if k:
        Tx = np.column_stack([np.bincount(time0, weights=om0 * X0[:, j], minlength=n_times)
                              for j in range(k)])
        G[:n_times, n_times:] = Tx
        G[n_times:, :n_times] = Tx.T
        G[n_times:, n_times:] = (X0 * om0[:, None]).T @ X0
    Cs = C / Du[:, None]
    S = G - C.T @ Cs
    rhs = np.vstack([A_time, A_x]) - Cs.T @ A_unit
    x = np.linalg.lstsq(S, rhs, rcond=None)[0]  # S is singular (shared constant); min-norm
    bu = A_unit / Du[:, None] - Cs @ x
    fitted = bu[unit0] + x[:n_times][time0] + (X0 @ x[n_times:] if k else 0.0)
    return -fitted


def _cluster_codes(panel: pd.DataFrame, cluster: str | None, sp) -> tuple[np.ndarray, str]:
    if cluster is None:
        return sp.unit_codes, None
    _missing_columns(panel, {"cluster": cluster})
    codes, _ = pd.factorize(panel[cluster])
    if (codes < 0).any():
        raise InputError(problem("cluster identifier must not be missing", column=cluster,
                                 value=None))
    return codes.astype(np.int64), cluster


def _cr1_vcov(Xd, e, om, clusters, n_fe_dof):
    """CR1 cluster-robust covariance of OLS on demeaned data (reghdfe convention: fixed
    effects nested in clusters are not counted in the degrees of freedom); returns (V, G)."""
    XtW = (Xd * om[:, None]).T
    bread = np.linalg.inv(XtW @ Xd)
    scores = Xd * (om * e)[:, None]
    n_cl = int(clusters.max()) + 1
    S = np.zeros((n_cl, Xd.shape[1]))
    np.add.at(S, clusters, scores)
    n, p = Xd.shape
    G = len(np.unique(clusters))
    dof = (n - 1) / (n - p - n_fe_dof) * G / (G - 1)
    V = dof * bread @ (S.T @ S) @ bread
    return V, G


def imputation_did(panel: pd.DataFrame, *, y: str, unit: str, time: str, cohort: str,
                   covariates=(), cluster: str | None = None, weights: str | None = None,
                   horizons=None, pretrend_leads: int | None = None, alpha: float = 0.05,
                   leave_out: bool = True) -> EstimatorResult:
    """BJS (2024) imputation estimator: overall ATT, per-horizon effects and pre-trend test.

    panel: tidy long panel; ``cohort`` is the first treated period (0 or missing: never
    treated). covariates: time-varying controls in the Y(0) model. cluster: column to
    cluster on (default: the unit). weights: column of non-negative observation weights.
    horizons: event times ``t - cohort`` (>= 0) to report (default: all observed).
    pretrend_leads: number of pre-periods in BJS Test 1 (None or 0: no test).
    leave_out: leave-out averaging of tau within cohort x period cells (did_imputation's
    ``leaveout``, recommended by BJS); False reproduces its default.
    """
    covariates = [covariates] if isinstance(covariates, str) else list(covariates)
    sp = staggered_panel(panel, y=y, unit=unit, time=time, cohort=cohort)
    n = len(sp.y)
    if covariates:
        _missing_columns(panel, {f"covariate {c}": c for c in covariates})
    X = (np.column_stack([_numeric(panel, c, "covariate") for c in covariates])
         if covariates else np.zeros((n, 0)))
    if weights is not None:
        _missing_columns(panel, {"weights": weights})
        om = _numeric(panel, weights, "observation weight")
        if (om < 0).any():
            raise InputError(problem("weights must be non-negative", column=weights,
                                     value=om[om < 0][0]))
        if not (om > 0).any():
            raise InputError(problem("weights are all zero", column=weights, value=0))
    else:
        om = np.ones(n)
    clusters, cluster_name = _cluster_codes(panel, cluster, sp)
    if not 0 < alpha < 1:
        raise InputError(problem("alpha must be between 0 and 1", value=alpha))

    g_obs = sp.unit_cohort[sp.unit_codes]
    t_obs = sp.times[sp.time_codes]
    K = t_obs - g_obs  # event time; -inf for never treated
    treated = (K >= 0) & (om > 0)
    untreated = (K < 0) & (om > 0)
    if not treated.any():
        raise InputError(problem("no treated observations (time >= cohort); nothing to estimate",
                                 column=cohort, value=None))
    if not untreated.any():
        raise InputError(problem("no untreated observations (never treated or time < cohort); "
                                 "Y(0) cannot be imputed", column=cohort, value=None))
    N, T = sp.n_units, sp.n_periods
    u0, t0 = sp.unit_codes[untreated], sp.time_codes[untreated]
    u1, t1 = sp.unit_codes[treated], sp.time_codes[treated]
    _check_identified(u0, t0, u1, t1, N, T, sp.units, sp.times, cohort, unit, time)

    # --- Theorem 1: FE (+ covariates) fitted on untreated rows, imputed on treated rows
    rows = untreated | treated
    fe_codes = [sp.unit_codes[rows], sp.time_codes[rows]]
    w_fit = np.where(untreated, om, 0.0)[rows]
    Z = demean(np.column_stack([sp.y, X])[rows], fe_codes, weights=w_fit, tol=_DEMEAN_TOL)
    in0 = untreated[rows]
    Yd, Xd = Z[:, 0], Z[:, 1:]
    k = X.shape[1]
    if k:
        Xd0, om0 = Xd[in0], om[untreated]
        XtWX = (Xd0 * om0[:, None]).T @ Xd0
        if np.linalg.matrix_rank(XtWX) < k:
            raise InputError(problem(
                "covariates are collinear with each other or with the unit and period fixed "
                "effects among untreated observations", column=", ".join(covariates),
                value=None))
        gamma = np.linalg.solve(XtWX, (Xd0 * om0[:, None]).T @ Yd[in0])
    else:
        gamma = np.zeros(0)
    resid_all = Yd - Xd @ gamma  # untreated: residual; treated: tau_it = Y - Y(0)
    tau = resid_all[~in0]
    resid0 = resid_all[in0]

    # --- estimands: overall + each horizon, normalised observation-weight shares
    K1 = K[treated]
    om1 = om[treated]
    all_h = np.unique(K1)
    if horizons is None:
        hs = all_h
    else:
        hs = np.unique(np.asarray(list(horizons), dtype=float))
        missing_h = hs[~np.isin(hs, all_h)]
        if (hs < 0).any():
            raise InputError(problem("horizons are event times t - cohort >= 0 (use "
                                     "pretrend_leads for pre-periods)", value=hs[hs < 0][0]))
        if len(missing_h):
            raise InputError(problem(
                f"no treated observations at event time(s) {', '.join(f'{h:g}' for h in missing_h)}"
                f"; observed: {', '.join(f'{h:g}' for h in all_h)}", value=missing_h[0]))
    Wt = np.column_stack([np.ones_like(K1)] + [(K1 == h).astype(float) for h in hs])
    Wt = Wt / (om1[:, None] * Wt).sum(axis=0)  # sum(om * w) = 1 per estimand
    est = (om1[:, None] * Wt * tau[:, None]).sum(axis=0)

    # --- Theorem 3 variance with did_imputation's tau averaging
    X1, X0 = X[treated], X[untreated]
    om0 = om[untreated]
    A_unit = np.column_stack([np.bincount(u1, weights=om1 * Wt[:, j], minlength=N)
                              for j in range(Wt.shape[1])])
    A_time = np.column_stack([np.bincount(t1, weights=om1 * Wt[:, j], minlength=T)
                              for j in range(Wt.shape[1])])
    A_x = (X1 * om1[:, None]).T @ Wt if k else np.zeros((0, Wt.shape[1]))
    V0 = _imputation_weights(u0, t0, X0, om0, A_unit, A_time, A_x, N, T)
    y0, y1 = sp.y[untreated], sp.y[treated]
    linear_check = float(np.max(np.abs((om0[:, None] * V0 * y0[:, None]).sum(axis=0)
                                       + (om1[:, None] * Wt * y1[:, None]).sum(axis=0) - est)))

    g_code = np.unique(sp.unit_cohort[u1], return_inverse=True)[1]
    cell = np.unique(g_code * T + t1, return_inverse=True)[1]  # cohort x period cells
    cl1, cl0 = clusters[treated], clusters[untreated]
    n_cl = int(clusters.max()) + 1
    cc_codes, cc_inv = np.unique(cl1.astype(np.int64) * (cell.max() + 1) + cell,
                                 return_inverse=True)
    eps = np.zeros((n_cl, Wt.shape[1]))
    for j in range(Wt.shape[1]):
        wv = om1 * Wt[:, j]
        cw = np.bincount(cc_inv, weights=wv)[cc_inv]  # own cluster's weight in the cell
        denom = np.bincount(cell, weights=cw * wv)[cell]
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(denom > 0, cw * wv / denom, 0.0)
        avg = np.bincount(cell, weights=tau * share)[cell]
        r1 = tau - avg
        if leave_out:
            alone = (denom > 0) & (wv != 0) & (cw ** 2 / np.where(denom > 0, denom, 1) > 0.99999)
            if alone.any():
                i = int(np.flatnonzero(alone)[0])
                raise InputError(problem(
                    f"leave-out standard errors need at least two clusters per cohort x period "
                    f"cell; cohort {sp.unit_cohort[u1[i]]:g} in period {sp.times[t1[i]]:g} has "
                    f"treated observations in only one cluster ({int(alone.sum())} observation(s) "
                    f"affected). Cohorts with a single unit cannot be averaged: merge or drop "
                    f"them, or pass leave_out=False (SEs may then be too small)",
                    column=cohort, value=sp.unit_cohort[u1[i]]))
            with np.errstate(divide="ignore", invalid="ignore"):
                r1 = np.where(denom > 0, r1 * denom / (denom - cw ** 2), r1)
        eps[:, j] = (np.bincount(cl1, weights=wv * r1, minlength=n_cl)
                     + np.bincount(cl0, weights=om0 * V0[:, j] * resid0, minlength=n_cl))
    Vcov = eps.T @ eps
    se = np.sqrt(np.diag(Vcov))
    G = len(np.unique(clusters[rows]))
    variance = VarianceConvention(
        kind="BJS (2024) Theorem 3 conservative cluster-robust (did_imputation)",
        small_sample="none; tau averaged by cohort x period"
                     + (" with leave-out (own cluster excluded)" if leave_out else ""),
        cluster=cluster_name or unit, n_clusters=G, df=None)
    overall = Estimate.from_se(est[0], se[0], variance, alpha)
    event_time = estimate_table(pd.RangeIndex(len(hs)), est[1:], se[1:], variance, alpha)
    event_time.insert(0, "e", hs.astype(np.int64) if np.all(hs == np.round(hs)) else hs)
    event_time["n_obs"] = [int(((K1 == h) & (om1 > 0)).sum()) for h in hs]
    notes = []
    details = {"n_treated": int(treated.sum()), "n_untreated": int(untreated.sum()),
               "linear_weights_check": linear_check, "leave_out": leave_out,
               "covariance": {"terms": ["overall"] + [f"{h:g}" for h in hs],
                              "matrix": Vcov.tolist()}}

    # covariate coefficients of the imputation regression (CR1 clustered, reghdfe convention)
    coef = pd.DataFrame(columns=["estimate", "se", "ci_low", "ci_high", "p_value"])
    nested = _nested(sp.unit_codes[untreated], clusters[untreated])
    if k:
        Vg, G0 = _cr1_vcov(Xd[in0], resid0, om0, clusters[untreated],
                           (T if nested else N + T - 1))
        cr1 = VarianceConvention("cluster-robust", "CR1 (reghdfe)", cluster_name or unit, G0,
                                 G0 - 1)
        coef = estimate_table(pd.Index(covariates), gamma, np.sqrt(np.diag(Vg)), cr1, alpha)

    if pretrend_leads:
        test, leads = _pretrend_test(sp, K, untreated, X, om, clusters, int(pretrend_leads),
                                     nested, alpha, cluster_name or unit, cohort)
        details["pretrend_test"] = test
        coef = pd.concat([coef, leads]) if len(coef) else leads
        notes.append(f"Pre-trend test (BJS Test 1, {test['leads']} leads): F = {test['F']:.4g}, "
                     f"p = {test['p_value']:.4g} (df {test['df1']}, {test['df2']})")
    if linear_check > 1e-6 * max(1.0, float(np.abs(sp.y).max())):
        notes.append(f"imputation weights reproduce the estimates only to {linear_check:.2g}; "
                     "standard errors may be inaccurate")
    return EstimatorResult(ESTIMATOR_NAME, variance, n_obs=int(rows.sum()),
                           n_units=int(len(np.unique(sp.unit_codes[rows]))), overall=overall,
                           coefficients=coef, event_time=event_time, notes=notes,
                           details=details)


def _nested(units: np.ndarray, clusters: np.ndarray) -> bool:
    """Is every unit inside a single cluster (unit FE nested in clusters)?"""
    lo = np.full(units.max() + 1, np.iinfo(np.int64).max)
    hi = np.full(units.max() + 1, -1)
    np.minimum.at(lo, units, clusters)
    np.maximum.at(hi, units, clusters)
    seen = hi >= 0
    return bool((lo[seen] == hi[seen]).all())


def _pretrend_test(sp, K, untreated, X, om, clusters, L, nested, alpha, cluster_name, cohort):
    """BJS (2024) Test 1: leads 1{K = -k}, k = 1..L, on untreated observations with the
    unit and period FE and covariates; CR1 cluster-robust Wald F test, df (L, G - 1)."""
    if L < 0:
        raise InputError(problem("pretrend_leads must be a non-negative integer", value=L))
    K0 = K[untreated]
    leads = np.column_stack([(K0 == -h).astype(float) for h in range(1, L + 1)])
    empty = [h for h in range(1, L + 1) if not leads[:, h - 1].any()]
    if empty:
        raise InputError(problem(
            f"pretrend_leads={L}: no untreated observations {empty[0]} period(s) before "
            f"treatment; use fewer leads", column=cohort, value=L))
    om0 = om[untreated]
    R = np.column_stack([sp.y[untreated], leads, X[untreated]])
    D = demean(R, [sp.unit_codes[untreated], sp.time_codes[untreated]], weights=om0,
               tol=_DEMEAN_TOL)
    yd, Xd = D[:, 0], D[:, 1:]
    XtWX = (Xd * om0[:, None]).T @ Xd
    scale = np.abs(np.diag(XtWX)).max()
    sv = np.linalg.svd(XtWX, compute_uv=False)
    if sv.min() <= 1e-10 * scale:
        raise InputError(problem(
            f"pretrend_leads={L}: the leads are collinear with the unit and period fixed effects "
            f"(every pre-period of some cohort is a lead, or no never/not-yet-treated "
            f"comparison remains); use fewer leads", column=cohort, value=L))
    beta = np.linalg.solve(XtWX, (Xd * om0[:, None]).T @ yd)
    e = yd - Xd @ beta
    T, N = sp.n_periods, sp.n_units
    V, G = _cr1_vcov(Xd, e, om0, clusters[untreated], (T if nested else N + T - 1))
    b, Vl = beta[:L], V[:L, :L]
    F = float(b @ np.linalg.solve(Vl, b)) / L
    df2 = G - 1
    p = float(stats.f.sf(F, L, df2))
    cr1 = VarianceConvention("cluster-robust", "CR1 (reghdfe)", cluster_name, G, df2)
    table = estimate_table(pd.Index([f"pre{h}" for h in range(1, L + 1)]), b,
                           np.sqrt(np.diag(Vl)), cr1, alpha)
    return ({"test": "BJS (2024) Test 1", "leads": L, "F": F, "df1": L, "df2": df2,
             "p_value": p, "wald": F * L, "variance": cr1.describe()}, table)
