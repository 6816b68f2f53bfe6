"""Meta-regression of study effects on partnership characteristics: REML tau^2, Knapp-Hartung inference.

The model (a mixed-effects meta-regression; Thompson & Sharp 1999, Viechtbauer 2005) is
``y_i = x_i' b + u_i + e_i``, ``u_i ~ N(0, tau^2)``, ``e_i ~ N(0, v_i)``, with ``y_i`` a study's Hedges' g,
``v_i`` its squared standard error (``evaluation.effects``) and ``x_i`` an intercept and moderators. Every
number follows R's metafor ``rma(yi, vi, mods = ..., method = "REML", test = "knha")`` (Viechtbauer 2010), and
``tests/test_meta_regression.py`` checks them against metafor's own output on its BCG example to 1e-6:

- **tau^2, REML** (metafor's default ``method="REML"``): the maximiser over tau^2 >= 0 of the restricted
  log-likelihood ``-1/2 [sum log(v_i + tau^2) + log det(X'WX) + (y - Xb)'W(y - Xb)]``, ``W = diag(1/(v_i +
  tau^2))``. Found as metafor does, by Fisher scoring on the score ``y'PPy - tr(P)`` with
  ``P = W - WX(X'WX)^{-1}X'W`` (Viechtbauer 2005), from metafor's start (the Hedges estimate, truncated at 0)
  with its step halving at the boundary, iterated to a change below 1e-12, then polished by bracketing the
  score's root. metafor's default stops when the change is below 1e-5 (``control=list(threshold=1e-5)``),
  and Fisher scoring converges only linearly, so its default tau^2 can be off by ~1e-5 (on the BCG data with
  ``mods = ~ ablat``: 0.0763547 against the converged 0.0763480, which moves the fourth printed decimal of
  tau^2, 0.0764 against 0.0763, and of the F statistic, 12.5905 against 12.5910); with ``control=list(threshold=1e-12)`` metafor and this module agree to 1e-10.
  When the restricted likelihood does not increase at 0 and scoring ends no higher than at 0 (metafor's
  ``ll0check``), the estimate is 0 exactly (metafor's halving can stop within 1e-5 of 0 instead).
- **Coefficients** ``b = (X'WX)^{-1} X'Wy``.
- **Knapp-Hartung** (Knapp & Hartung 2003; Sidik & Jonkman 2002; metafor ``test="knha"``): the variance
  ``s2w (X'WX)^{-1}`` with ``s2w = (y - Xb)'W(y - Xb) / (k - p)``, and t distributions with ``k - p``
  degrees of freedom for each coefficient's test and interval. **s2w is not truncated at 1**, which is
  metafor's ``test="knha"`` convention; the ad hoc ``max(1, s2w)`` of Knapp & Hartung (2003) and Roever,
  Knapp & Friede (2015), metafor's ``test="adhoc"``, is available as ``truncate=True`` but not used by the
  book. Untruncated, the interval can be narrower than the Wald interval when the studies agree better than
  chance (s2w < 1).
- **Test of moderators** (metafor's QM under ``test="knha"``): ``F = b_m' V_m^{-1} b_m / m`` on ``(m, k - p)``
  degrees of freedom, ``b_m`` the ``m`` moderator coefficients (all but the intercept) and ``V_m`` their
  Knapp-Hartung covariance; for the intercept-only model the test is of the intercept (``F = t^2`` on
  ``(1, k - 1)``), as metafor does.
- **Residual heterogeneity** (QE): ``sum (y_i - x_i' b_FE)^2 / v_i`` with ``b_FE`` the fixed-effect (weights
  ``1/v_i``) fit, chi-square on ``k - p`` degrees of freedom.
- **I^2** as metafor reports it for a (meta-)regression: ``tau^2 / (tau^2 + vt)`` with the "typical" sampling
  variance ``vt = (k - p) / tr(P_0)``, ``P_0`` the ``P`` above at tau^2 = 0 (Higgins & Thompson 2002 for
  ``p = 1``); ``H^2 = (tau^2 + vt) / vt``. Stored as fractions (metafor prints per cent). For the
  intercept-only model this is not ``evaluation.synthesis``'s ``(Q - df)/Q``, which is the DerSimonian-Laird
  value; the two agree only when tau^2 is the DerSimonian-Laird estimate.
- **R^2** (Raudenbush 2009; metafor's default ``r2def="1"``): ``max(0, (tau^2_0 - tau^2) / tau^2_0)``,
  ``tau^2_0`` the REML tau^2 of the intercept-only model on the same studies; 0 when ``tau^2_0 = 0`` (as
  metafor: there is no heterogeneity to account for, so the chapter says that rather than print 0%). A
  fraction (metafor prints per cent). None for the intercept-only model.

A model is **not estimable** (``NotEstimable``, and the chapter says so instead of printing numbers) when it has
moderators and ``k <= p + 1`` (``p`` coefficients with the intercept: at most one residual degree of freedom,
left to estimate tau^2 and the Knapp-Hartung scale from), when its moderator takes one value in every study, or
when its columns are collinear (metafor drops redundant columns with a warning; we refuse the model). The
intercept-only model needs ``k >= 2``, as the pooled meta-analysis does.

Moderators of a study (``moderator_table``) come from its definition: ``formal`` (every partnership type of the
cohort is one with shared legal governance: multi-academy trust, hard federation, umbrella trust; the rule of
the ``formal`` column in ``data_schemas/partnerships.toml``, which the synthetic generator and the DfE importer
set from the type), ``partnership_type`` (the cohort's types; a cohort of several types is its own level) and
``phase``. **Trust size is not a moderator**: a study's result records how many partnerships and schools it
analysed, but not the sizes of those partnerships (the heterogeneity block, when a study asks for it, gives
effects by size band, not a mean size), so there is nothing to regress on; ``SKIPPED`` says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import brentq

from evaluation.synthesis import study_rows

#: Cochrane Handbook (Deeks, Higgins & Altman, ch. 10.11.5.1): "at least ten observations (i.e. ten studies in a
#: meta-analysis) should be available for each characteristic modelled".
STUDIES_PER_MODERATOR = 10

#: Moderators the book considers, in order: column -> words.
MODERATORS = {
    "formal": "formal or informal partnership",
    "phase": "phase",
    "partnership_type": "partnership type",
}

#: Moderators asked for but not derivable from the studies' results, with the reason.
SKIPPED = {
    "trust_size": ("trust size is not in the studies' results: a result records how many partnerships it analysed "
                   "but not their sizes (a study's heterogeneity block, when asked for, gives effects by size band, "
                   "not a mean size), so it cannot be a moderator here"),
}


class NotEstimable(ValueError):
    """The model cannot be estimated from these studies; the message says why, in words for a reader."""


@dataclass(frozen=True)
class Coefficient:
    name: str
    estimate: float
    se: float  # Knapp-Hartung
    t: float
    p: float  # two-sided, t with k - p df
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class MetaRegression:
    coefficients: tuple[Coefficient, ...]
    vcov: np.ndarray  # Knapp-Hartung covariance of the coefficients
    k: int
    p: int  # coefficients, intercept included
    df: int  # k - p
    tau2: float  # REML
    s2w: float  # Knapp-Hartung scale, as used (untruncated unless truncate=True)
    truncated: bool
    qm: float  # F statistic of the moderators (of the intercept when there are none)
    qm_df: tuple[int, int]
    qm_p: float
    qe: float  # residual heterogeneity, chi-square on k - p df
    qe_p: float
    i2: float  # fraction, metafor's definition (vt from P_0)
    h2: float
    vt: float
    tau2_null: float | None  # REML tau^2 of the intercept-only model (None for that model itself)
    r2: float | None  # fraction; None for the intercept-only model, 0 when tau2_null = 0 (metafor)
    alpha: float
    iterations: int

    def coefficient(self, name: str) -> Coefficient:
        return next(c for c in self.coefficients if c.name == name)


# ------------------------------------------------------------------------------ estimation


def _p_matrix(v: np.ndarray, X: np.ndarray, tau2: float) -> np.ndarray:
    w = 1.0 / (v + tau2)
    WX = X * w[:, None]
    return np.diag(w) - WX @ np.linalg.solve(X.T @ WX, WX.T)


def _score(y, v, X, tau2: float) -> tuple[float, float]:
    """(y'PPy - tr P, tr PP): twice the REML score in tau^2 and twice its expected information."""
    P = _p_matrix(v, X, tau2)
    Py = P @ y
    return float(Py @ Py - np.trace(P)), float(np.sum(P * P))


def _hedges_tau2(y, v, X) -> float:
    """Hedges' (HE) estimator, metafor's starting value: OLS residuals' excess over the sampling variances."""
    k, p = X.shape
    H = X @ np.linalg.pinv(X)
    resid = y - H @ y
    P = np.eye(k) - H
    return max(0.0, float((resid @ resid - np.trace(P @ np.diag(v) @ P)) / (k - p)))


def restricted_loglik(y, v, X, tau2: float) -> float:
    """The REML log-likelihood (metafor's ``ll.REML``, without the constant ``-(k - p)/2 log 2 pi``)."""
    w = 1.0 / (v + tau2)
    WX = X * w[:, None]
    xtwx = X.T @ WX
    b = np.linalg.solve(xtwx, WX.T @ y)
    r = y - X @ b
    return float(-0.5 * (np.sum(np.log(v + tau2)) + np.linalg.slogdet(xtwx)[1] + np.sum(w * r * r)))


def reml_tau2(y, v, X=None, tol: float = 1e-12, max_iter: int = 1000) -> tuple[float, int]:
    """REML tau^2 of the meta-regression of ``y`` (variances ``v``) on ``X`` (default: intercept only), with
    the number of Fisher-scoring iterations; see the module docstring."""
    y, v = np.asarray(y, dtype=float), np.asarray(v, dtype=float)
    X = np.ones((len(y), 1)) if X is None else np.asarray(X, dtype=float)
    at_zero = _score(y, v, X, 0.0)[0]
    tau2 = _hedges_tau2(y, v, X)  # metafor's start: max(0, HE)
    if at_zero <= 0 and tau2 == 0:
        return 0.0, 0
    iterations = 0
    for iterations in range(1, max_iter + 1):
        s, info = _score(y, v, X, tau2)
        step = s / info
        while tau2 + step < 0:  # metafor: halve the step until tau^2 stays >= 0
            step /= 2
        tau2 += step
        if abs(step) < tol:
            break
    else:
        raise RuntimeError("REML tau^2: Fisher scoring did not converge")
    if at_zero <= 0 and restricted_loglik(y, v, X, 0.0) >= restricted_loglik(y, v, X, tau2):
        # Scoring crept towards the boundary (or stopped at a lower local maximum: metafor's ``ll0check``).
        return 0.0, iterations
    # Polish: the score's root by bracketing, around where scoring stopped.
    lo, hi = max(0.0, tau2 * (1 - 1e-7) - 1e-13), tau2 * (1 + 1e-7) + 1e-13
    if lo > 0 and _score(y, v, X, lo)[0] > 0 > _score(y, v, X, hi)[0]:
        tau2 = float(brentq(lambda t: _score(y, v, X, t)[0], lo, hi, xtol=1e-17, rtol=4 * np.finfo(float).eps))
    return float(tau2), iterations


def _fixed_effect_q(y, v, X) -> float:
    w = 1.0 / v
    WX = X * w[:, None]
    b = np.linalg.solve(X.T @ WX, WX.T @ y)
    r = y - X @ b
    return float(np.sum(w * r * r))


def check_estimable(X: np.ndarray, k: int, what: str = "the model") -> None:
    """Raise ``NotEstimable`` (see the module docstring for the rules)."""
    p = X.shape[1]
    if p == 1:
        if k < 2:
            raise NotEstimable("a meta-analysis needs at least two studies")
        return
    if k <= p + 1:
        raise NotEstimable(f"{what} has {p} coefficients (the average and {p - 1} comparison"
                           f"{'s' if p > 2 else ''}) and needs at least {p + 2} studies, to leave two degrees of "
                           f"freedom for the between-study variance and the Knapp-Hartung scale; there "
                           f"{'is' if k == 1 else 'are'} {k}")
    if np.linalg.matrix_rank(X) < p:
        raise NotEstimable(f"in {what} the characteristics are collinear in these studies (one is determined by the "
                           "others), so their effects cannot be told apart")


def meta_regression(y, v, X=None, names=None, alpha: float = 0.05, truncate: bool = False,
                    tau2: float | None = None) -> MetaRegression:
    """Fit the model (see the module docstring). ``X`` includes the intercept column (default: intercept only);
    ``names`` name its columns. ``truncate=True`` uses max(1, s2w) (metafor's ``test="adhoc"``); ``tau2`` fixes
    tau^2 instead of estimating it."""
    y, v = np.asarray(y, dtype=float), np.asarray(v, dtype=float)
    k = len(y)
    X = np.ones((k, 1)) if X is None else np.asarray(X, dtype=float)
    if X.ndim != 2 or X.shape[0] != k:
        raise ValueError("X must have one row per study")
    p = X.shape[1]
    names = list(names) if names is not None else ["intrcpt"] + [f"x{j}" for j in range(1, p)]
    check_estimable(X, k)
    iterations = 0
    if tau2 is None:
        tau2, iterations = reml_tau2(y, v, X)
    df = k - p
    w = 1.0 / (v + tau2)
    WX = X * w[:, None]
    xtwx_inv = np.linalg.inv(X.T @ WX)
    b = xtwx_inv @ (WX.T @ y)
    r = y - X @ b
    rss = float(np.sum(w * r * r))
    s2w_raw = 0.0 if rss <= np.finfo(float).eps else rss / df  # metafor: 0 when RSS <= machine epsilon
    s2w = max(1.0, s2w_raw) if truncate else s2w_raw
    vb = s2w * xtwx_inv
    se = np.sqrt(np.diag(vb))
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = b / se
    pvals = 2 * stats.t.sf(np.abs(t), df)
    coefs = tuple(Coefficient(name=n, estimate=float(b[j]), se=float(se[j]), t=float(t[j]), p=float(pvals[j]),
                              ci_low=float(b[j] - crit * se[j]), ci_high=float(b[j] + crit * se[j]))
                  for j, n in enumerate(names))
    btt = np.arange(1, p) if p > 1 else np.array([0])
    m = len(btt)
    bm = b[btt]
    qm = float(bm @ np.linalg.solve(vb[np.ix_(btt, btt)], bm) / m)
    qm_p = float(stats.f.sf(qm, m, df))
    qe = _fixed_effect_q(y, v, X)
    qe_p = float(stats.chi2.sf(qe, df))
    P0 = _p_matrix(v, X, 0.0)
    vt = float(df / np.trace(P0))
    i2 = float(tau2 / (tau2 + vt))
    h2 = float((tau2 + vt) / vt)
    tau2_null = r2 = None
    if p > 1:
        tau2_null = reml_tau2(y, v)[0]
        r2 = 0.0 if tau2_null == 0 else max(0.0, (tau2_null - tau2) / tau2_null)  # metafor: 0 when tau2_null = 0
    return MetaRegression(coefficients=coefs, vcov=vb, k=k, p=p, df=df, tau2=float(tau2), s2w=s2w,
                          truncated=bool(truncate and s2w_raw < 1), qm=qm, qm_df=(m, df), qm_p=qm_p, qe=qe,
                          qe_p=qe_p, i2=i2, h2=h2, vt=vt, tau2_null=tau2_null, r2=r2, alpha=alpha,
                          iterations=iterations)


# ------------------------------------------------------------------------------ the studies' moderators


def moderator_table(results: list[dict]) -> pd.DataFrame:
    """One row per poolable study (``synthesis.study_rows``) with its moderators: ``formal`` (bool),
    ``partnership_type`` (the cohort's types joined by '/') and ``phase`` (None when the definition has none)."""
    table = study_rows(results)
    phase = {r["study"]["id"]: r["study"]["definition"]["cohort"].get("phase") for r in results}
    return table.assign(phase=[phase.get(i) for i in table["id"]] if len(table) else [])


def _levels(values: pd.Series) -> list:
    """Levels of a categorical moderator, the reference (most studies, then first in sort order) first."""
    counts = values.value_counts()
    return sorted(counts.index, key=lambda lv: (-counts[lv], str(lv)))


def design(table: pd.DataFrame, moderators: list[str]) -> tuple[np.ndarray, list[str], dict]:
    """Intercept plus dummy columns for each moderator (reference: its level with most studies; for ``formal``
    always informal, so the coefficient reads "formal minus informal"). Returns (X, column names, levels)
    where levels maps a moderator to (reference, [other levels]) in column order."""
    k = len(table)
    cols, names, levels = [np.ones(k)], ["intrcpt"], {}
    for mod in moderators:
        values = table[mod]
        if values.isna().any():
            raise NotEstimable(f"the {MODERATORS.get(mod, mod)} of {int(values.isna().sum())} of the studies is "
                               "not recorded")
        if mod == "formal":
            lv = [False, True] if values.nunique() > 1 else [bool(values.iloc[0])]
        else:
            lv = _levels(values)
        if len(lv) < 2:
            raise NotEstimable(f"every study is of {_level_words(mod, lv[0])} partnerships" if mod == "formal" else
                               f"every study has the same {MODERATORS.get(mod, mod)} ({_level_words(mod, lv[0])})")
        levels[mod] = (lv[0], lv[1:])
        for level in lv[1:]:
            cols.append((values == level).to_numpy(dtype=float))
            names.append(f"{mod}={level}")
    return np.column_stack(cols), names, levels


def _level_words(mod: str, level) -> str:
    if mod == "formal":
        return "formal" if level else "informal"
    return str(level).replace("_", " ").replace("/", " or ")


@dataclass(frozen=True)
class ModeratorModel:
    """One model of the synthesis: its moderators, and either its fit or why it cannot be fitted."""

    moderators: tuple[str, ...]
    fit: MetaRegression | None
    reason: str | None  # why not estimable
    levels: dict  # moderator -> (reference level, other levels)
    counts: dict  # moderator -> {level: number of studies}

    @property
    def label(self) -> str:
        return " and ".join(MODERATORS.get(m, m) for m in self.moderators) or "no moderators"


#: Models the synthesis fits: each characteristic alone, then formal and phase together.
MODELS: tuple[tuple[str, ...], ...] = (("formal",), ("phase",), ("partnership_type",), ("formal", "phase"))


def moderator_models(results: list[dict], alpha: float = 0.05,
                     models: tuple[tuple[str, ...], ...] = MODELS) -> tuple[ModeratorModel, list[ModeratorModel]]:
    """The intercept-only model and each model of ``models`` on the poolable studies (a model that cannot be
    estimated carries the reason instead of a fit)."""
    table = moderator_table(results)
    y, v = table["g"].to_numpy(dtype=float), table["se"].to_numpy(dtype=float) ** 2
    null = ModeratorModel((), meta_regression(y, v, alpha=alpha), None, {}, {})
    out = []
    for mods in models:
        counts = {m: table[m].value_counts(dropna=False).to_dict() for m in mods}
        try:
            X, names, levels = design(table, list(mods))
            check_estimable(X, len(table))
            fit = meta_regression(y, v, X, names, alpha=alpha)
            out.append(ModeratorModel(tuple(mods), fit, None, levels, counts))
        except NotEstimable as err:
            out.append(ModeratorModel(tuple(mods), None, str(err), {}, counts))
    return null, out

