"""Minimum detectable effect size (MDES) and power of a matched difference-in-differences study.

A study can be planned before it is run: from the cohort, the comparison pool and the
outcome history alone (no matching, no effect estimated), how large an effect could it
reliably detect?

The cluster-randomised benchmark (Bloom 1995, 2005; Bloom, Richburg-Hayes & Black 2007;
the EEF's convention; Dong & Maynard 2013, PowerUp! model CRA2_2) is

    MDES = M_df * sqrt( (1 - R^2) / (P (1 - P) J) * (rho + (1 - rho) / n) ),
    M_df = t_{1 - alpha/2, df} + t_{power, df},   df = J - 2,

for J clusters of n units, a share P of the clusters treated, intraclass correlation rho
and outcome variance 1. Below it is adapted to the design the studies use.

Derivation for a matched DiD of school-level outcomes
-----------------------------------------------------
School i has outcomes Y_it = a_i + l_t + e_it: a school effect a_i (removed by the DiD),
a year effect l_t common to all schools (removed by the comparison) and a stationary
deviation e_it with variance s^2 and autocorrelation r_k at lag k. A DiD estimator
compares, for each school, the mean of its T_post post-joining years with the mean of its
T_pre base years, D_i = mean_post(Y) - mean_pre(Y). With contrast weights a_t (1/T_post on
post years, -1/T_pre on base years, summing to zero),

    sigma_D^2 = Var(D_i) = sum_s sum_t a_s a_t s^2 r_|s-t|
              = s^2 [ S_pre / T_pre^2 + S_post / T_post^2 - 2 S_cross / (T_pre T_post) ],

with S_pre, S_post the sums of r_|s-t| over pairs of base years and of post years and
S_cross over (base, post) pairs. Without serial correlation this is s^2 (1/T_pre + 1/T_post);
with a constant correlation r it is s^2 (1 - r)(1/T_pre + 1/T_post) (McKenzie 2012, "Beyond
baseline and follow-up"); in general it needs the whole autocorrelation function
(Burlig, Preonas & Woerman 2020). Because the weights sum to zero, sigma_D^2 = -a' G a where
G_st = g(|s - t|) = s^2 (1 - r_|s-t|) is the semivariogram, g(k) = E[(e_{t+k} - e_t)^2] / 2,
which is estimated without bias from the comparison pool (the school effect cancels in
differences, the year effect is removed by centring each year), and s^2 itself drops out.

Partnership schools are clustered: schools of one partnership share shocks, and a share
ICC of sigma_D^2 lies between partnerships. The DiD estimate is the mean of D over the n_T
treated schools in J_T partnerships of sizes m_c minus the mean over n_C comparison schools
(each its own cluster, as the study pipeline clusters them), so

    Var(DiD) = (1 - R^2) sigma_D^2 [ sum_c m_c (1 + (m_c - 1) ICC) / n_T^2 + 1 / n_C ].

With equal arms (J/2 clusters of n on each side, unit variance, T_pre = 0, T_post = 1) this
is exactly the Bloom formula with P = 1/2. The multiplier uses Welch-Satterthwaite degrees
of freedom for the two arms' variances V_T, V_C,

    df = (V_T + V_C)^2 / ( V_T^2 / (J_T - 1) + V_C^2 / (J_C - 1) ),

which is J - 2 for equal arms (Bloom's df) and close to J_T - 1 when the few treated
partnerships dominate the variance, as they do in partnership studies; ``df="pooled"`` gives
Bloom's J_T + J_C - 2. The MDES is expressed in the effect-size units of
``evaluation.effects``: Hedges' g = J_H * effect / SD with the pupil-level SD of the outcome
when known, else the between-school SD in the year before the first cohort joined, and
J_H = 1 - 3 / (4 (n_T + n_C) - 9). Power for an effect d uses the noncentral t with
noncentrality d / SE (as PowerUp! does), so the power at the MDES is close to, not exactly,
the nominal 80%.

Which base years: the Callaway-Sant'Anna, Sun-Abraham and event-study estimators compare
every post year with the year before joining (T_pre = 1); TWFE and the imputation estimator
use every pre-year in the window (T_pre = -window[0]). T_post = window[1] + 1. The expected
comparison group is the matching ratio times the treated schools (capped by the eligible
pool); matching losses (caliper) are not known before matching and are not modelled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from evaluation.stages.cohort import StudyData, build_cohort, matching_frame
from evaluation.effects import months_progress
from evaluation.errors import InputError, problem
from evaluation.stages.effects import effect_size
from evaluation.study import Study

__all__ = ["Design", "PowerResult", "anova_icc", "change_variance", "design_mdes", "power_curve",
           "semivariogram", "study_power"]

#: Estimators whose post-joining contrasts use only the year before joining as the base.
SINGLE_BASE_ESTIMATORS = ("callaway_santanna", "sun_abraham", "event_study", "chaisemartin_dhaultfoeuille")


# ------------------------------------------------------------------------------ formula


def change_variance(t_pre: int, t_post: int, *, variance: float = 1.0,
                    autocorrelation: float | Sequence[float] = 0.0,
                    semivariogram_values: Sequence[float] | None = None) -> float:
    """Variance of a school's mean over ``t_post`` post years minus its mean over the
    ``t_pre`` base years immediately before them (McKenzie 2012; Burlig et al. 2020).

    ``autocorrelation``: a float phi (AR(1): r_k = phi^k) or the sequence r_0 = 1, r_1, ...
    (at least t_pre + t_post values). ``semivariogram_values``: g(0) = 0, g(1), ... instead
    (then ``variance`` is not needed: it cancels in the contrast). ``t_pre = 0`` gives the
    variance of the post mean alone (a post-test-only design)."""
    if t_post < 1 or t_pre < 0:
        raise ValueError(f"need t_post >= 1 and t_pre >= 0, got t_pre={t_pre}, t_post={t_post}")
    n = t_pre + t_post
    a = np.concatenate([np.full(t_pre, -1.0 / t_pre) if t_pre else np.zeros(0), np.full(t_post, 1.0 / t_post)])
    lags = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
    if semivariogram_values is not None:
        g = np.asarray(semivariogram_values, dtype=float)
        if len(g) < n:
            raise ValueError(f"the semivariogram needs lags 0..{n - 1}, got {len(g)} values")
        if t_pre == 0:
            raise ValueError("the semivariogram gives only contrasts: t_pre must be >= 1")
        return float(-a @ g[lags] @ a)
    if np.ndim(autocorrelation) == 0:
        r = float(autocorrelation) ** np.arange(n)
    else:
        r = np.asarray(autocorrelation, dtype=float)
        if len(r) < n:
            raise ValueError(f"the autocorrelation needs lags 0..{n - 1}, got {len(r)} values")
    return float(variance * (a @ r[lags] @ a))


@dataclass(frozen=True)
class Design:
    """The MDES of a design and what it was computed from (effect-size units unless *_raw)."""

    mdes: float
    mdes_raw: float  # in outcome units
    se_raw: float
    df: float
    multiplier: float
    var_treated: float
    var_comparison: float
    alpha: float
    power: float
    two_tailed: bool
    sd: float
    hedges_j: float

    @property
    def se(self) -> float:
        """Standard error of the estimate in effect-size units."""
        return self.hedges_j * self.se_raw / self.sd

    def power_at(self, effect) -> np.ndarray | float:
        """Power to detect an effect (effect-size units)."""
        return power_curve(effect, se=self.se, df=self.df, alpha=self.alpha, two_tailed=self.two_tailed)


def _arm_variance(sizes: np.ndarray, icc: float) -> float:
    n = sizes.sum()
    return float((sizes * (1 + (sizes - 1) * icc)).sum() / n**2)


def design_mdes(*, var_change: float, cluster_sizes_treated: Sequence[int],
                cluster_sizes_comparison: Sequence[int], icc: float = 0.0, icc_comparison: float | None = None,
                r2: float = 0.0, sd: float = 1.0, alpha: float = 0.05, power: float = 0.8,
                two_tailed: bool = True, df: float | Literal["welch", "pooled"] = "welch",
                hedges_j: bool = False) -> Design:
    """MDES from explicit ingredients (Bloom 2005 clustered-design formula, generalised to
    unequal arms and clusters; see the module docstring).

    var_change: variance of one unit's outcome contrast (``change_variance``; 1 for a
    standardised post-test). cluster_sizes_*: number of units in each cluster of each arm.
    icc: share of var_change between clusters (treated arm; the comparison arm uses
    ``icc_comparison``, default the same). r2: share explained by covariates. sd: divisor
    giving effect-size units. hedges_j: multiply by Hedges' small-sample J (as
    ``evaluation.effects`` does). df: a number, "welch" (Welch-Satterthwaite, J - 2 for
    equal arms) or "pooled" (J_T + J_C - 2, Bloom's convention)."""
    st = np.asarray(cluster_sizes_treated, dtype=float)
    sc = np.asarray(cluster_sizes_comparison, dtype=float)
    for name, s in (("treated", st), ("comparison", sc)):
        if len(s) == 0 or (s < 1).any():
            raise ValueError(f"the {name} arm needs at least one cluster, each of at least one unit")
    if not (0 <= icc <= 1 and 0 <= r2 < 1 and 0 < alpha < 1 and 0 < power < 1 and var_change > 0 and sd > 0):
        raise ValueError("need 0 <= icc <= 1, 0 <= r2 < 1, 0 < alpha, power < 1, var_change > 0, sd > 0")
    icc_c = icc if icc_comparison is None else icc_comparison
    v_t = (1 - r2) * var_change * _arm_variance(st, icc)
    v_c = (1 - r2) * var_change * _arm_variance(sc, icc_c)
    j_t, j_c = len(st), len(sc)
    if df == "pooled":
        dof = float(j_t + j_c - 2)
    elif df == "welch":
        parts = [v**2 / (j - 1) if j > 1 else (np.inf if v > 0 else 0.0) for v, j in ((v_t, j_t), (v_c, j_c))]
        dof = float((v_t + v_c) ** 2 / sum(parts)) if np.isfinite(sum(parts)) else 0.0
    else:
        dof = float(df)
    se_raw = float(np.sqrt(v_t + v_c))
    if dof <= 0:
        mult = float("inf")
    else:
        q = 1 - alpha / 2 if two_tailed else 1 - alpha
        mult = float(stats.t.ppf(q, dof) + stats.t.ppf(power, dof))
    n = st.sum() + sc.sum()
    j = 1 - 3 / (4 * n - 9) if hedges_j and n > 3 else 1.0
    mdes_raw = mult * se_raw
    return Design(mdes=j * mdes_raw / sd, mdes_raw=mdes_raw, se_raw=se_raw, df=dof, multiplier=mult,
                  var_treated=v_t, var_comparison=v_c, alpha=alpha, power=power, two_tailed=two_tailed,
                  sd=sd, hedges_j=j)


def power_curve(effects, *, se: float, df: float, alpha: float = 0.05, two_tailed: bool = True):
    """Power of the t test to detect each effect (same units as ``se``): noncentral t with
    noncentrality effect / se on ``df`` degrees of freedom (PowerUp!'s power function)."""
    eff = np.asarray(effects, dtype=float)
    if not (df > 0 and se > 0 and np.isfinite(se)):
        out = np.full(eff.shape, np.nan)
        return float(out) if out.ndim == 0 else out
    lam = eff / se
    if two_tailed:
        crit = stats.t.ppf(1 - alpha / 2, df)
        out = stats.nct.sf(crit, df, lam) + stats.nct.cdf(-crit, df, lam)
    else:
        out = stats.nct.sf(stats.t.ppf(1 - alpha, df), df, lam)
    return float(out) if np.ndim(out) == 0 else out


def anova_icc(values: Sequence[float], groups: Sequence) -> tuple[float, dict]:
    """One-way ANOVA intraclass correlation for unbalanced groups (Searle 1971:
    n0 = (N - sum m^2 / N) / (J - 1)), truncated at 0; with the mean squares."""
    frame = pd.DataFrame({"x": np.asarray(values, dtype=float), "g": list(groups)}).dropna()
    sizes = frame.groupby("g")["x"].size()
    n, j = len(frame), len(sizes)
    info = {"groups": int(j), "units": int(n)}
    if j < 2 or n <= j:
        return 0.0, {**info, "note": "no group has two or more units (or only one group): the ICC is not "
                                     "identified and does not matter for the design"}
    means = frame.groupby("g")["x"].transform("mean")
    msw = float(((frame["x"] - means) ** 2).sum() / (n - j))
    msb = float((sizes * (frame.groupby("g")["x"].mean() - frame["x"].mean()) ** 2).sum() / (j - 1))
    n0 = (n - (sizes**2).sum() / n) / (j - 1)
    sb2 = max(0.0, (msb - msw) / n0)
    icc = sb2 / (sb2 + msw) if sb2 + msw > 0 else 0.0
    return float(icc), {**info, "msb": msb, "msw": msw, "n0": float(n0)}


def semivariogram(wide: pd.DataFrame, max_lag: int) -> tuple[np.ndarray, float]:
    """Empirical semivariogram g(k) = mean((e_{t+k} - e_t)^2) / 2, k = 0..max_lag, of school
    outcomes (rows schools, columns consecutive years) centred on each year's mean, and the
    pooled within-school variance (ddof 1 per school). Missing values are skipped."""
    vals = wide.to_numpy(dtype=float)
    e = vals - np.nanmean(vals, axis=0, keepdims=True)
    g = np.zeros(max_lag + 1)
    for k in range(1, max_lag + 1):
        if k >= e.shape[1]:
            g[k] = np.nan
            continue
        d = e[:, k:] - e[:, :-k]
        g[k] = 0.5 * np.nanmean(d**2) if np.isfinite(d).any() else np.nan
    counts = np.isfinite(e).sum(axis=1)
    ok = counts >= 2
    dev = e[ok] - np.nanmean(e[ok], axis=1, keepdims=True)
    within = float(np.nansum(dev**2) / (counts[ok] - 1).sum()) if ok.any() else float("nan")
    return g, within


# ------------------------------------------------------------------------------ study


@dataclass
class PowerResult:
    """The planned power of a study: MDES, its ingredients and how they were estimated."""

    study_id: str
    outcome: str
    estimator: str
    mdes: float  # effect-size units (Hedges' g, as evaluation.effects)
    mdes_raw: float  # outcome units
    months: int
    se: float  # of the effect, effect-size units
    df: float
    multiplier: float
    alpha: float
    power: float
    clusters_treated: int
    schools_treated: int
    schools_comparison: int
    cluster_sizes: list[int]
    matching_ratio: int
    icc: float
    serial_correlation: float  # lag-1 autocorrelation of school outcomes (comparison pool)
    autocorrelation: list[float]
    within_school_sd: float
    semivariogram: list[float]
    t_pre: int
    t_post: int
    var_change: float  # formula: variance of a school's post-minus-base change
    var_change_direct: float  # check: empirical variance of that change among pool schools
    sd: float
    sd_label: str
    hedges_j: float
    cohorts: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def power_at(self, effect):
        """Power to detect an effect of this size (effect-size units)."""
        return power_curve(effect, se=self.se, df=self.df, alpha=self.alpha)

    def to_dict(self) -> dict:
        return {**asdict(self), "design_effect": self.design_effect}

    @property
    def design_effect(self) -> float:
        """Variance inflation of the treated mean from clustering: 1 + (sum m^2 / sum m - 1) ICC."""
        m = np.asarray(self.cluster_sizes, dtype=float)
        return float(1 + ((m**2).sum() / m.sum() - 1) * self.icc) if len(m) else float("nan")


def _base_years(study: Study) -> int:
    lo, _ = study.outcome.window
    return 1 if study.estimators.primary in SINGLE_BASE_ESTIMATORS else -lo


def _mean_over(wide: pd.DataFrame, urns, years: list[int]) -> pd.Series:
    return wide.reindex(index=urns, columns=years).mean(axis=1, skipna=False)


def study_power(study: Study, data: StudyData, *, alpha: float | None = None, power: float = 0.8,
                icc: float | None = None) -> PowerResult:
    """The MDES of a study from its cohort and comparison pool, before matching or estimating.

    Ingredients, all from the data: treated schools (with the pre-years and covariates
    matching needs) and their partnerships (clusters); the expected number of comparison
    schools (matching ratio x treated, capped by the eligible pool; all of it for
    ``method = "none"``; the family size for ``"family"``); the semivariogram and lag-1
    autocorrelation of the outcome among pool schools over the study's years; the ICC of
    treated schools' pre-joining changes between partnerships (``icc`` overrides it); the
    effect-size SD as ``evaluation.stages.effects.effect_size`` defines it."""

    alpha = study.inference.alpha if alpha is None else alpha
    cohort = build_cohort(study, data)
    lo, hi = study.outcome.window
    t_pre, t_post = _base_years(study), hi + 1
    y = study.outcome.name
    wide = data.school_years.pivot(index="urn", columns="year", values=y)
    notes: list[str] = []

    treated_parts, pool_urns, per_cohort, direct = [], set(), [], []
    for g in cohort.cohorts:
        frame, counts = matching_frame(study, data, cohort, g)
        t_urns = frame.loc[frame["treated"] == 1, "urn"].to_numpy()
        c_urns = frame.loc[frame["treated"] == 0, "urn"].to_numpy()
        pool_urns.update(int(u) for u in c_urns)
        treated_parts.append(cohort.treated[cohort.treated["urn"].isin(t_urns)])
        post = list(range(g, g + hi + 1))
        base = list(range(g - t_pre, g))
        d = (_mean_over(wide, c_urns, post) - _mean_over(wide, c_urns, base)).dropna()
        if len(d) > 1 and len(t_urns):
            direct.append((len(t_urns), float(d.var(ddof=1))))
        per_cohort.append({"g": int(g), "treated": int(len(t_urns)), "eligible_pool": int(len(c_urns)),
                           "treated_dropped": int(counts["treated_few_pre_years"]
                                                  + counts["treated_missing_covariates"])})
    treated = pd.concat(treated_parts, ignore_index=True)
    if treated.empty:
        raise InputError(problem("no partnership school has the pre-joining data matching needs, so no power "
                                 "can be computed", column="cohort.min_pre_years", value=study.cohort.min_pre_years))
    dropped = sum(c["treated_dropped"] for c in per_cohort)
    if dropped:
        notes.append(f"{dropped} partnership school(s) lack the pre-joining years or covariates matching needs "
                     f"and are left out")

    # comparison schools the matching is expected to find
    spec = study.matching
    n_t = len(treated)
    n_pool = len(pool_urns)
    if spec.method == "none":
        n_c = n_pool
    else:
        k = spec.family_size if spec.method == "family" else spec.ratio
        n_c = int(sum(min(c["treated"] * k, c["eligible_pool"]) for c in per_cohort))
        n_c = min(n_c, n_pool) if not spec.replace else n_c
        notes.append(f"comparison schools: {k} per partnership school "
                     f"({'family size' if spec.method == 'family' else 'matching ratio'}), at most the "
                     f"{n_pool} eligible; losses to the caliper are not known before matching")
    if n_c < 1:
        raise InputError(problem("the comparison pool has no school with enough pre-joining data",
                                 column="comparison.pool", value=study.comparison.pool))

    # serial correlation: the semivariogram of pool schools over the study's calendar years
    span = list(range(min(cohort.cohorts) + lo, max(cohort.cohorts) + hi + 1))
    pool_wide = wide.reindex(index=sorted(pool_urns), columns=span)
    gam, within = semivariogram(pool_wide, t_pre + t_post - 1)
    var_change = change_variance(t_pre, t_post, semivariogram_values=gam)
    autocorr = [1.0] + [float(1 - gk / within) for gk in gam[1:]] if within > 0 else [1.0]
    var_direct = (float(np.average([v for _, v in direct], weights=[w for w, _ in direct]))
                  if direct else float("nan"))

    # ICC: pre-joining change of each treated school (year before joining minus the earlier
    # pre-years), net of the same change among pool schools, between partnerships
    changes = []
    pool_list = sorted(pool_urns)
    for g in cohort.cohorts:
        t_urns = treated.loc[treated["g"] == g, "urn"]
        early = list(range(g + lo, g - 1))
        ref = (wide.reindex(index=pool_list, columns=[g - 1]).iloc[:, 0]
               - _mean_over(wide, pool_list, early)).mean()
        ch = wide.reindex(index=t_urns, columns=[g - 1]).iloc[:, 0] - _mean_over(wide, t_urns, early) - ref
        changes.append(pd.DataFrame({"urn": t_urns.to_numpy(), "change": ch.to_numpy()}))
    ch = pd.concat(changes, ignore_index=True).merge(treated[["urn", "partnership_id"]], on="urn")
    icc_est, icc_info = anova_icc(ch["change"], ch["partnership_id"])
    if "note" in icc_info:
        notes.append("ICC: " + icc_info["note"])
    use_icc = icc_est if icc is None else float(icc)
    if icc is not None:
        notes.append(f"ICC set to {icc:g} (estimated from the data: {icc_est:.3f})")

    sizes = treated.groupby("partnership_id").size().to_numpy()
    es = effect_size(study, data, cohort, None, None)
    if es.get("pupil_sd"):
        sd, sd_label = float(es["pupil_sd"]), str(es["pupil_sd_source"])
    else:
        sd, sd_label = float(es["sd"]), str(es["sd_definition"])
    if not sd > 0:
        raise InputError(problem(f"the outcome {y!r} has no spread in the year before joining, so effect sizes "
                                 "cannot be computed", column="outcome.name", value=y))
    if not var_change > 0:
        raise InputError(problem(f"the outcome {y!r} of comparison schools does not vary over the study's years "
                                 f"{span[0]}-{span[-1]}", column="outcome.name", value=y))
    design = design_mdes(var_change=var_change, cluster_sizes_treated=sizes, cluster_sizes_comparison=np.ones(n_c),
                         icc=use_icc, icc_comparison=0.0, sd=sd, alpha=alpha, power=power, hedges_j=True)
    if design.df < 1:
        notes.append("with a single partnership, schools' shared shocks cannot be told apart from an effect: "
                     "no MDES")
    return PowerResult(
        study_id=study.id, outcome=y, estimator=study.estimators.primary, mdes=design.mdes,
        mdes_raw=design.mdes_raw, months=months_progress(design.mdes) if np.isfinite(design.mdes) else 12,
        se=design.se, df=design.df, multiplier=design.multiplier, alpha=alpha, power=power,
        clusters_treated=int(len(sizes)), schools_treated=int(n_t), schools_comparison=int(n_c),
        cluster_sizes=[int(s) for s in sorted(sizes, reverse=True)], matching_ratio=int(spec.ratio),
        icc=float(use_icc), serial_correlation=float(autocorr[1]) if len(autocorr) > 1 else float("nan"),
        autocorrelation=[float(r) for r in autocorr], within_school_sd=float(np.sqrt(within)),
        semivariogram=[float(v) for v in gam], t_pre=int(t_pre), t_post=int(t_post),
        var_change=float(var_change), var_change_direct=var_direct, sd=sd, sd_label=sd_label,
        hedges_j=design.hedges_j, cohorts=per_cohort, notes=notes)
