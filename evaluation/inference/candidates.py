"""Candidate inference methods for the overall ATT of each primary estimator.

One function per (estimator, method), all with the same shape: given the fitted estimator (and the
panel it was fitted on), return an :class:`Interval` for the overall ATT, its p-value for
``estimate = null`` and, for bootstraps that invert a test, the confidence set (optional, it costs
a bisection). :mod:`evaluation.inference.headline` picks one of them by the calibration table;
:mod:`evaluation.inference.coverage_study` measures them all on simulated panels.

Method ids (``<estimator>:<method>``):

callaway_santanna (overall ATT of ``aggte(att_gt(...), "simple")``; psi its influence function,
S_c = sum_{i in c} psi_i the cluster sums, n units, G clusters, G1 treated clusters)
  analytic     se = sqrt(sum_c S_c^2) / n (R did 2.5), normal critical values
  analytic-t   se * sqrt(G/(G-1)) (CRV1-style), t with G1 - 1 df
  wild         score (multiplier) wild bootstrap-t, Webb weights (influence_bootstrap)
  jackknife    delete-one-cluster jackknife (CV3): each ATT(g,t) without cluster c from its
               influence function, sum_{i in c} psi_i / (1 - h_c) / n with h_c the cluster's weight
               share of its cohort (exact for a DiD of weighted means, i.e. without covariates),
               and the cohort shares re-estimated without c; t with G1 - 1 df
  wild-jk      score wild bootstrap-t (Webb) of the jackknife changes theta - theta_(c)
sun_abraham (the interaction-weighted overall ATT, a linear combination of the cell coefficients)
  crv1         the fit's own CR1 SE, t with G - 1 df (fixest)
  crv1-t       the same SE, t with G1 - 1 df
  wcr          restricted wild cluster bootstrap (WCR) of the linear combination, Webb weights,
               on the weighted regression (matching weights kept)
  jackknife    exact delete-one-cluster jackknife (CV3; MacKinnon, Nielsen & Webb 2023) of the
               weighted regression, the overall weights recomputed without the cluster, t with
               G1 - 1 df
imputation (Borusyak, Jaravel & Spiess 2024)
  bjs          the fit's Theorem 3 conservative SE (leave-out), normal critical values
  bjs-t        the same SE, t with G1 - 1 df
twfe (static TWFE coefficient on D)
  crv1, crv1-t, wcr, jackknife   as for sun_abraham, on the coefficient of D

Every refit (the regressions of the WCR and of the jackknife) uses the fit's weights; the point
estimate is the fit's, and a refit whose estimate differs from the fit's (e.g. weights not passed
to one of them) is an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from evaluation.errors import InputError, problem
from evaluation.estimators import fixed_effects as _fe
from evaluation.inference.wild_bootstrap import influence_bootstrap, wild_bootstrap_arrays

__all__ = ["Interval", "METHODS", "interval", "treated_clusters", "cs_overall_influence",
           "cs_jackknife_scale", "cs_jackknife", "wcr_linear", "jackknife_linear"]

#: relative tolerance for "the refit reproduces the fitted estimate"
_SAME = 1e-8


@dataclass(frozen=True)
class Interval:
    """An interval for the overall ATT.

    estimate: the fitted estimator's point estimate; se: the standard error the method studentises
    with; ci_low/ci_high: the (1 - alpha) confidence interval (NaN when not computed);
    p_value: for ``estimate = null``; df: t degrees of freedom (None: normal or bootstrap);
    B: bootstrap draws (None: analytic).
    """

    method: str
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    p_value: float
    null: float
    df: int | None = None
    B: int | None = None
    description: str = ""



def treated_clusters(cluster, cohort) -> tuple[int, int]:
    """(treated clusters, all clusters): clusters with any unit of cohort > 0, and all of them."""
    cl = pd.Series(np.asarray(cluster))
    g = np.asarray(cohort, dtype=float)
    return int(cl[np.nan_to_num(g) > 0].nunique()), int(cl.nunique())


def _t_interval(method, est, se, null, alpha, df, description) -> Interval:
    dist = stats.norm if df is None else stats.t(df)
    crit = float(dist.ppf(1 - alpha / 2))
    p = float(2 * dist.sf(abs(est - null) / se)) if se > 0 else float("nan")
    return Interval(method, float(est), float(se), float(est - crit * se),
                    float(est + crit * se), p, float(null), df, None, description)


# --------------------------------------------------------------------------------------
# Callaway & Sant'Anna
# --------------------------------------------------------------------------------------


def cs_overall_influence(gt, aggte_kwargs: dict | None = None):
    """(overall estimate, its influence function psi (n,), unit clusters (n,), unit cohorts (n,))
    of ``aggte(gt, "simple", **aggte_kwargs)``."""
    from evaluation.estimators.callaway_santanna import GroupTimeResult, aggte

    if not isinstance(gt, GroupTimeResult) or gt.influence is None:
        raise InputError(problem("an att_gt result (GroupTimeResult with influence functions)",
                                 value=type(gt).__name__))
    agg = aggte(gt, "simple", **(aggte_kwargs or {}))
    return agg.overall.estimate, agg.influence[:, -1], gt.unit_cluster, gt.unit_cohort


def cs_jackknife_scale(gt) -> np.ndarray:
    """Per-unit factor 1 / (1 - h): h is the weight share of the unit's cluster within the unit's
    cohort (the never-treated units form one group). For a DiD of weighted means (CS without
    covariates) the change of ATT(g,t) when cluster c is deleted is exactly
    sum_{i in c} scale_i psi_i(g,t) / n."""
    w, coh, cl = gt.unit_weight, gt.unit_cohort, gt.unit_cluster
    key = pd.factorize(pd.MultiIndex.from_arrays([cl, coh]))[0]
    grp = pd.factorize(coh)[0]
    w_key = np.bincount(key, weights=w)[key]
    w_grp = np.bincount(grp, weights=w)[grp]
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.where(w_grp > 0, w_key / w_grp, 0.0)
    # a cluster that is its cohort's only one: its deletion removes the cohort (weight 0 below)
    alone = h >= 1 - 1e-12
    return 1.0 / (1.0 - np.where(alone, 0.0, h))


def _cs_cells(gt, aggte_kwargs: dict | None, pre: bool = False):
    """Cells and cohort-share weights of the simple aggregation (post cells, as aggte selects
    them), or of the pre-treatment cells (``pre=True``)."""
    kw = dict(aggte_kwargs or {})
    unknown = set(kw) - {"max_e", "min_e", "balance_e", "alpha", "bootstrap", "seed"}
    if unknown:
        raise InputError(problem("aggte keyword arguments of the simple aggregation",
                                 value=sorted(unknown)))
    max_e = kw.get("max_e", np.inf)
    group = gt.group_time["g"].to_numpy(dtype=float)
    t = gt.group_time["t"].to_numpy(dtype=float)
    if pre:
        return np.flatnonzero((group > t) & np.isfinite(gt.group_time["se"].to_numpy(dtype=float)))
    tvals = np.unique(t)
    t_idx, g_idx = np.searchsorted(tvals, t), np.searchsorted(tvals, group)
    return np.flatnonzero((group <= t) & (t_idx - g_idx <= max_e))


def cs_jackknife(gt, aggte_kwargs: dict | None = None, cells: np.ndarray | None = None):
    """Delete-one-cluster jackknife of the CS cohort-share weighted average of ATT(g,t) over
    ``cells`` (default: the post cells of the simple aggregation).

    Each ATT(g,t) without cluster c is ATT(g,t) - sum_{i in c} scale_i psi_i(g,t)/n (exact for a
    DiD of weighted means, see :func:`cs_jackknife_scale`; a first-order approximation with
    covariates) and the cohort shares lose the cluster's weight, so the weights of the average are
    re-estimated as aggte estimates them. Returns (theta, thetas_(c) for every cluster, se_CV3).
    """
    idx = _cs_cells(gt, aggte_kwargs) if cells is None else np.asarray(cells)
    group = gt.group_time["g"].to_numpy(dtype=float)[idx]
    att = gt.group_time["estimate"].to_numpy(dtype=float)[idx]
    psi = gt.influence[:, idx]
    n = psi.shape[0]
    cl, coh, w = gt.unit_cluster, gt.unit_cohort, gt.unit_weight
    G = int(cl.max()) + 1
    d_att = np.zeros((G, len(idx)))
    np.add.at(d_att, cl, psi * cs_jackknife_scale(gt)[:, None] / n)
    glist = np.unique(group)
    W = np.array([w[coh == g].sum() for g in glist])
    Wc = np.zeros((G, len(glist)))
    for j, g in enumerate(glist):
        Wc[:, j] = np.bincount(cl[coh == g], weights=w[coh == g], minlength=G)
    col = np.searchsorted(glist, group)
    pg = W[col]
    theta = float(att @ pg / pg.sum())
    pg_c = (W[None, :] - Wc)[:, col]  # G x cells
    pg_c = np.where(pg_c > 1e-12 * W.max(), pg_c, 0.0)
    thetas = np.sum(pg_c * (att[None, :] - d_att), axis=1) / pg_c.sum(axis=1)
    se = float(np.sqrt((G - 1) / G * np.sum((thetas - theta) ** 2)))
    return theta, thetas, se


def _cs(method, gt, aggte_kwargs, *, alpha, null, seed, B, **_) -> Interval:
    est, psi, cl, coh = cs_overall_influence(gt, aggte_kwargs)
    n = psi.size
    G = int(cl.max()) + 1
    S = np.bincount(cl, weights=psi, minlength=G)
    se0 = float(np.sqrt(np.sum(S ** 2)) / n)
    G1 = int(np.unique(cl[coh > 0]).size)
    df1 = max(G1 - 1, 1)
    if method in ("jackknife", "wild-jk"):
        theta, thetas, se_j = cs_jackknife(gt, aggte_kwargs)
        if abs(theta - est) > _SAME * max(1.0, abs(est)):
            raise InputError(problem(f"the jackknife's aggregation gives {theta:.10g}, aggte "
                                     f"{est:.10g}: unsupported aggte options", value=aggte_kwargs))
        if method == "jackknife":
            return _t_interval("callaway_santanna:jackknife", est, se_j, null, alpha, df1,
                               "delete-one-cluster jackknife (CV3) of the ATT(g,t) and the cohort "
                               f"shares, t with G1 - 1 = {df1} df")
        # score bootstrap of the jackknife changes theta - theta_(c), one "score" per cluster
        res = influence_bootstrap(est, G * (theta - thetas), np.arange(G), null=null, B=B,
                                  weights="webb", seed=seed, alpha=alpha,
                                  hypothesis=f"ATT = {null:g}")
        return Interval("callaway_santanna:wild-jk", float(est), res.se, res.ci_low, res.ci_high,
                        res.p_value, float(null), None, res.B,
                        f"score wild cluster bootstrap-t of the jackknife changes theta - "
                        f"theta_(c) (Webb weights, {res.B} draws)")
    if method == "analytic":
        return _t_interval("callaway_santanna:analytic", est, se0, null, alpha, None,
                           "influence-function SE from cluster sums, sqrt(sum_c S_c^2)/n "
                           "(R did 2.5), normal critical values")
    if method == "analytic-t":
        se = se0 * np.sqrt(G / (G - 1))
        return _t_interval("callaway_santanna:analytic-t", est, se, null, alpha, max(G1 - 1, 1),
                           f"cluster-sum influence-function SE x sqrt(G/(G-1)), t with G1 - 1 = "
                           f"{max(G1 - 1, 1)} df (G1 treated clusters)")
    if method == "wild":
        res = influence_bootstrap(est, psi, cl, null=null, B=B, weights="webb", seed=seed,
                                  alpha=alpha, hypothesis=f"ATT = {null:g}")
        return Interval("callaway_santanna:wild", float(est), res.se, res.ci_low, res.ci_high,
                        res.p_value, float(null), None, res.B,
                        f"score wild cluster bootstrap-t of the influence function (Webb weights, "
                        f"{res.B} draws, symmetric percentile-t)")
    if method == "analytic-means":  # the pre-2.5 convention, kept only for the calibration table
        counts = np.bincount(cl, minlength=G).astype(float)
        se = float(np.sqrt(np.sum((S / counts) ** 2)) / G)
        return _t_interval("callaway_santanna:analytic-means", est, se, null, alpha, None,
                           "cluster means of the influence function, sqrt(sum_c psibar_c^2)/C "
                           "(the old, wrong convention), normal critical values")
    raise KeyError(method)


# --------------------------------------------------------------------------------------
# Regressions (Sun & Abraham, TWFE): CRV1 and the weighted WCR
# --------------------------------------------------------------------------------------


def wcr_linear(panel: pd.DataFrame, X: np.ndarray, R: np.ndarray, *, null: float, y: str = "y",
               unit: str = "urn", time: str = "year", cluster: str = "cluster",
               weights: str | None = "weight", B: int = 9999, seed=None, alpha: float = 0.05,
               ci: bool = True, dof_K: int | None = None, hypothesis: str = "ATT"):
    """Restricted wild cluster bootstrap (Webb weights) of ``R beta = null`` in the weighted
    regression ``y ~ X | unit + time`` clustered by ``cluster``.

    Weighted least squares with unit effects nested in the clusters is OLS on sqrt(w)-scaled rows
    after the unit effects are projected out in the weighted inner product (Frisch-Waugh-Lovell);
    the period effects (not nested in the clusters) are carried as columns, so the bootstrap
    re-estimates exactly the weighted fit. Units must be nested in clusters.
    """
    yv = _fe.numeric_column(panel, y)
    w = np.ones(len(panel)) if weights is None else _fe.numeric_column(panel, weights)
    if not (np.isfinite(yv).all() and np.isfinite(w).all()):
        raise InputError(problem("complete outcome and weights for the wild bootstrap", column=y))
    keep = w > 0
    ucodes = pd.factorize(panel[unit])[0]
    ccodes = pd.factorize(panel[cluster])[0]
    if not _fe._nested(ucodes, ccodes, int(ucodes.max()) + 1):
        raise InputError(problem("units nested in clusters (every school in one cluster)",
                                 column=cluster))
    tcodes = pd.factorize(panel[time], sort=True)[0]
    X = np.asarray(X, dtype=float)
    X = X[:, None] if X.ndim == 1 else X
    k = X.shape[1]
    Tn = int(tcodes.max()) + 1
    tdum = np.zeros((len(panel), Tn - 1))
    rows = np.flatnonzero(tcodes > 0)
    tdum[rows, tcodes[rows] - 1] = 1.0
    M = np.column_stack([yv, X, tdum])[keep]
    wk, uk, ck = w[keep], ucodes[keep], ccodes[keep]
    M = _fe.demean(M, [pd.factorize(uk)[0]], weights=wk) * np.sqrt(wk)[:, None]
    Rz = np.concatenate([np.asarray(R, dtype=float), np.zeros(Tn - 1)])
    if dof_K is None:
        dof_K = k + Tn  # fixest nested convention: regressors + time effects (T-1) + 1
    return wild_bootstrap_arrays(M[:, 0], M[:, 1:], ck, Rz, null, B=B, weights="webb", seed=seed,
                                 alpha=alpha, ci=ci, dof_K=dof_K,
                                 hypothesis=f"{hypothesis} = {null:g}")


def jackknife_linear(panel: pd.DataFrame, X: np.ndarray, R: np.ndarray | None, *, y: str = "y",
                     unit: str = "urn", time: str = "year", cluster: str = "cluster",
                     weights: str | None = "weight", post: np.ndarray | None = None):
    """Exact delete-one-cluster jackknife (CV3) of a linear combination in the weighted regression
    ``y ~ X | unit + time`` (units nested in clusters).

    R: fixed weights of the combination; or ``post`` (bool per column of X): the combination is
    the weighted-count average of the post columns, recomputed without the deleted cluster (the
    Sun-Abraham overall ATT). Uses the cluster blocks A_g = Z_g'Z_g, b_g = Z_g'y_g of the
    FWL-transformed design: theta_(g) from (A - A_g)^-1 (b - b_g) (MacKinnon, Nielsen & Webb 2023).
    Returns (theta, thetas_(g) for every cluster, se_CV3 = sqrt((G-1)/G sum (theta_(g) - theta)^2)).
    """
    yv = _fe.numeric_column(panel, y)
    w = np.ones(len(panel)) if weights is None else _fe.numeric_column(panel, weights)
    keep = w > 0
    X = np.asarray(X, dtype=float)
    X = X[:, None] if X.ndim == 1 else X
    k = X.shape[1]
    ucodes = pd.factorize(panel[unit])[0][keep]
    ccodes = pd.factorize(panel[cluster])[0][keep]
    tcodes = pd.factorize(panel[time], sort=True)[0][keep]
    Tn = int(tcodes.max()) + 1
    tdum = np.zeros((keep.sum(), Tn - 1))
    rows = np.flatnonzero(tcodes > 0)
    tdum[rows, tcodes[rows] - 1] = 1.0
    wk = w[keep]
    M = np.column_stack([yv[keep], X[keep], tdum])
    M = _fe.demean(M, [pd.factorize(ucodes)[0]], weights=wk) * np.sqrt(wk)[:, None]
    yz, Z = M[:, 0], M[:, 1:]
    counts = None
    if post is not None:
        counts = X[keep] * wk[:, None]  # weighted observations per cell, per row
    order = np.argsort(ccodes, kind="stable")
    G = int(ccodes.max()) + 1
    bounds = np.concatenate([[0], np.cumsum(np.bincount(ccodes, minlength=G))])
    A, b = Z.T @ Z, Z.T @ yz
    total = None if counts is None else counts.sum(axis=0)

    def combo(beta, cw):
        if counts is None:
            return float(np.asarray(R, dtype=float) @ beta[:k])
        wts = np.where(post, cw, 0.0)
        return float(wts @ beta[:k] / wts.sum())

    Ainv = np.linalg.inv(A)
    beta0 = Ainv @ b
    theta = combo(beta0, total)
    thetas = np.empty(G)
    sizes = np.diff(bounds)
    # clusters that touch a cell whose weight changes (Sun-Abraham's treated clusters): exact refit
    touches = np.zeros(G, dtype=bool)
    if counts is not None:
        touches = np.bincount(ccodes, weights=np.abs(counts).sum(axis=1), minlength=G) > 0
    for gi in np.flatnonzero(touches):
        idx = order[bounds[gi]:bounds[gi + 1]]
        Zg = Z[idx]
        Ag, bg = A - Zg.T @ Zg, b - Zg.T @ yz[idx]
        cw = total - counts[idx].sum(axis=0)
        live = np.ones(Z.shape[1], dtype=bool)
        live[:k] = cw > 0  # cells with no observation left drop out of the fit and the average
        beta = np.zeros(Z.shape[1])
        beta[live] = np.linalg.lstsq(Ag[np.ix_(live, live)], bg[live], rcond=None)[0]
        thetas[gi] = combo(beta, np.where(live[:k], cw, 0.0))
    # the others, batched by cluster size: beta_(g) = beta - A^-1 Z_g'(I - H_gg)^-1 e_g
    e = yz - Z @ beta0
    rest = np.flatnonzero(~touches)
    for m in np.unique(sizes[rest]):
        gs = rest[sizes[rest] == m]
        if m == 0:
            thetas[gs] = theta
            continue
        idx = order[bounds[gs][:, None] + np.arange(m)[None, :]]  # len(gs) x m rows
        Zb = Z[idx]  # len(gs) x m x p
        ZA = Zb @ Ainv
        H = ZA @ np.swapaxes(Zb, 1, 2)
        u = np.linalg.solve(np.eye(m)[None] - H, e[idx][..., None])[..., 0]
        dbeta = np.einsum("gmp,gm->gp", ZA, u)
        thetas[gs] = [combo(beta0 - d, total) for d in dbeta]
    se = float(np.sqrt((G - 1) / G * np.sum((thetas - theta) ** 2)))
    return theta, thetas, se


def _sa_design(panel: pd.DataFrame, result, cohort: str, time: str):
    """Cell dummies and the overall-ATT weights of a fitted sun_abraham result."""
    cw = result.details.get("cell_weights")
    if not cw:
        raise InputError(problem("a sun_abraham result (its details carry the cell weights)",
                                 value=getattr(result, "estimator", None)))
    g = np.nan_to_num(_fe.numeric_column(panel, cohort))
    t = _fe.numeric_column(panel, time)
    names = list(cw)
    X = np.zeros((len(panel), len(names)))
    R = np.zeros(len(names))
    for j, name in enumerate(names):
        m = re.fullmatch(r"g=(.+):e=(.+)", name)
        gg, ee = float(m.group(1)), float(m.group(2))
        X[:, j] = ((g == gg) & (t - g == ee)).astype(float)
        if ee >= 0:
            R[j] = cw[name]
    return X, R / R.sum()


def _same(refit: float, est: float, estimator: str, columns: dict) -> None:
    if abs(refit - est) > _SAME * max(1.0, abs(est)):
        raise InputError(problem(
            f"the refit gives {refit:.10g} but the fitted {estimator} estimate is {est:.10g}: fit "
            f"and refit must use the same sample and weights (weights column "
            f"{columns['weights']!r})", value=est))


def _regression(estimator, method, panel, result, *, alpha, null, seed, B, ci, columns, **_):
    est, se = result.overall.estimate, result.overall.se
    cl, coh = panel[columns["cluster"]], panel[columns["cohort"]]
    G1, G = treated_clusters(cl, coh)
    if method == "crv1":
        return _t_interval(f"{estimator}:crv1", est, se, null, alpha, result.variance.df or G - 1,
                           "CR1 cluster-robust SE, t with G - 1 df (fixest)")
    if method == "crv1-t":
        return _t_interval(f"{estimator}:crv1-t", est, se, null, alpha, max(G1 - 1, 1),
                           f"CR1 cluster-robust SE, t with G1 - 1 = {max(G1 - 1, 1)} df "
                           "(G1 treated clusters)")
    if method not in ("wcr", "jackknife"):
        raise KeyError(method)
    if estimator == "twfe":
        g = np.nan_to_num(_fe.numeric_column(panel, columns["cohort"]))
        t = _fe.numeric_column(panel, columns["time"])
        X, R = ((g > 0) & (t >= g)).astype(float), np.array([1.0])
    else:
        X, R = _sa_design(panel, result, columns["cohort"], columns["time"])
    if method == "jackknife":
        theta, _, se_j = jackknife_linear(
            panel, X, R if estimator == "twfe" else None, y=columns["y"], unit=columns["unit"],
            time=columns["time"], cluster=columns["cluster"], weights=columns["weights"],
            post=None if estimator == "twfe" else R > 0)
        _same(theta, est, estimator, columns)
        df1 = max(G1 - 1, 1)
        return _t_interval(f"{estimator}:jackknife", est, se_j, null, alpha, df1,
                           f"delete-one-cluster jackknife (CV3) of the weighted regression, t "
                           f"with G1 - 1 = {df1} df")
    res = wcr_linear(panel, X, R, null=null, y=columns["y"], unit=columns["unit"],
                     time=columns["time"], cluster=columns["cluster"], weights=columns["weights"],
                     B=B, seed=seed, alpha=alpha, ci=ci, dof_K=result.details.get("dof_K"))
    _same(res.estimate, est, estimator, columns)
    return Interval(f"{estimator}:wcr", float(est), float(se), res.ci_low, res.ci_high,
                    res.p_value, float(null), None, res.B,
                    f"restricted wild cluster bootstrap-t (WCR, Webb weights, {res.B} draws) of "
                    "the weighted regression")


def _imputation(method, panel, result, *, alpha, null, columns, **_):
    est, se = result.overall.estimate, result.overall.se
    G1, _ = treated_clusters(panel[columns["cluster"]], panel[columns["cohort"]])
    if method == "bjs":
        return _t_interval("imputation:bjs", est, se, null, alpha, None,
                           "BJS (2024) Theorem 3 conservative clustered SE (leave-out), normal")
    if method == "bjs-t":
        return _t_interval("imputation:bjs-t", est, se, null, alpha, max(G1 - 1, 1),
                           f"BJS (2024) Theorem 3 conservative clustered SE (leave-out), t with "
                           f"G1 - 1 = {max(G1 - 1, 1)} df")
    raise KeyError(method)


#: candidate methods per primary estimator (the policy chooses among these)
METHODS: dict[str, tuple[str, ...]] = {
    "callaway_santanna": ("analytic", "analytic-t", "wild", "jackknife", "wild-jk"),
    "sun_abraham": ("crv1", "crv1-t", "wcr", "jackknife"),
    "imputation": ("bjs", "bjs-t"),
    "twfe": ("crv1", "crv1-t", "wcr", "jackknife"),
}

DEFAULT_COLUMNS = {"y": "y", "unit": "urn", "time": "year", "cohort": "cohort",
                   "cluster": "cluster", "weights": "weight"}


def interval(estimator: str, method: str, *, panel: pd.DataFrame | None = None, result=None,
             gt=None, aggte_kwargs: dict | None = None, alpha: float = 0.05, null: float = 0.0,
             seed=0, B: int = 9999, ci: bool = True, columns: dict | None = None) -> Interval:
    """The interval of ``method`` for ``estimator``'s overall ATT (see the module docstring).

    callaway_santanna needs ``gt`` (the att_gt result) and ``aggte_kwargs``; the others the
    ``panel`` and the fitted ``result``. ``ci=False`` skips the WCR's test inversion (the p-value
    at ``null`` is still computed).
    """
    columns = {**DEFAULT_COLUMNS, **(columns or {})}
    if estimator == "callaway_santanna":
        return _cs(method, gt, aggte_kwargs, alpha=alpha, null=null, seed=seed, B=B)
    if estimator in ("sun_abraham", "twfe"):
        return _regression(estimator, method, panel, result, alpha=alpha, null=null, seed=seed,
                           B=B, ci=ci, columns=columns)
    if estimator == "imputation":
        return _imputation(method, panel, result, alpha=alpha, null=null, columns=columns)
    raise InputError(problem(f"an estimator with a calibrated headline: {', '.join(METHODS)}",
                             value=estimator))
