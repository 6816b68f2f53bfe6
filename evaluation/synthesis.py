"""What works across studies: random-effects meta-analysis and the forest plot.

Random effects with the Paule-Mandel estimate of tau^2 (Paule & Mandel 1982; recommended over
DerSimonian-Laird by Veroniki et al. 2016): the root of sum w_i (y_i - mu)^2 = k - 1, 0 when Q <= k - 1,
found by bracketing (brentq). Not statsmodels' ``combine_effects(method_re="pm")``: its iteration returns
tau^2 = 0 when a rounding error takes the estimating equation just below zero, which a tight tolerance
provokes. I^2 = max(0, (Q - df) / Q) (Higgins & Thompson 2002). Inputs are the studies' Hedges' g and its
standard error (``evaluation.effects``); the book never re-estimates a study.

The pooled mean's interval is Hartung-Knapp-Sidik-Jonkman (Knapp & Hartung 2003; IntHout, Ioannidis
& Borm 2014): mu +- t_{k-1} SE with SE^2 = q_HK / sum w_i, q_HK = sum w_i (y_i - mu)^2 / (k - 1) and
w_i = 1 / (v_i + tau^2); with four studies a normal critical value is too narrow. q_HK is not
truncated at 1: this is metafor's ``rma(test="knha")`` default, so every number can be checked against
metafor; the ad hoc max(1, q_HK) of Roever, Knapp & Friede (2015) (metafor's ``test="adhoc"``) is not
applied. Paule-Mandel solves sum w_i (y_i - mu)^2 = k - 1, so whenever tau^2 > 0, q_HK = 1 exactly and
the two agree; they differ only when tau^2 is truncated at 0 (Q < k - 1), where the untruncated
interval can be narrower than the normal one. The normal interval is kept (``ci_low_z``, ``ci_high_z``).

Prediction interval (Higgins, Thompson & Spiegelhalter 2009; Riley, Higgins & Deeks 2011):
mu +- t_{k-2} sqrt(tau^2 + SE^2), SE the Knapp-Hartung SE; metafor gives the same with
``predict(res, predtype="Riley")`` (its default uses t_{k-1}; its documentation notes neither is exact).
With k - 2 = 0 degrees of freedom (two studies) it is not computed.

Whether the effects differ with the partnerships' characteristics (formal or informal, type, phase) is the
meta-regression of ``evaluation.meta_regression``: REML tau^2 there, as metafor's ``rma`` default, so that its
R^2 compares like with like; this module's pooled estimate keeps Paule-Mandel.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import brentq


FORMAL_TYPES = {"multi_academy_trust", "federation_hard", "umbrella_trust"}


@dataclass(frozen=True)
class Pooled:
    """A random-effects pooled mean with its Knapp-Hartung, normal and prediction intervals."""

    pooled: float
    se: float  # Knapp-Hartung: sqrt(q_hk / sum w)
    ci_low: float  # pooled -+ t_{k-1} se
    ci_high: float
    se_z: float  # sqrt(1 / sum w)
    ci_low_z: float  # pooled -+ z se_z
    ci_high_z: float
    pi_low: float | None  # pooled -+ t_{k-2} sqrt(tau2 + se^2); None when k < 3
    pi_high: float | None
    q_hk: float  # Knapp-Hartung scale sum w (y - pooled)^2 / (k - 1), not truncated at 1
    tau2: float
    i2: float
    q: float
    q_p: float
    k: int
    weights: tuple[float, ...]  # relative random-effects weights, summing to 1


@dataclass(frozen=True)
class MetaResult(Pooled):
    method: str
    table: pd.DataFrame  # per study: id, title, partnership_type, formal, g, se, ci_low, ci_high, weight, padlocks


METHOD = "random effects, Paule-Mandel tau^2, Knapp-Hartung (t with k-1 df) interval"


def poolable(results: list[dict]) -> list[dict]:
    """Studies with an effect size in pupil-level SDs (others are in their own units: not pooled)."""
    return [r for r in results if r["effects"]["g"] is not None]


def study_rows(results: list[dict]) -> pd.DataFrame:
    rows = []
    for r in poolable(results):
        es = r["effects"]
        cohort = r["study"]["definition"]["cohort"]
        types = cohort["partnership_types"]
        rows.append({"id": r["study"]["id"], "title": r["study"]["title"], "partnership_type": "/".join(types),
                     "formal": all(t in FORMAL_TYPES for t in types), "g": es["g"], "se": es["g_se"],
                     "ci_low": es["g_ci"][0], "ci_high": es["g_ci"][1], "months": es["months"],
                     "padlocks": es["padlocks"]})
    return pd.DataFrame(rows)


def _generalised_q(y: np.ndarray, v: np.ndarray, tau2: float) -> float:
    w = 1 / (v + tau2)
    return float((w * (y - (w * y).sum() / w.sum()) ** 2).sum())


def paule_mandel(y, v) -> float:
    """Paule-Mandel tau^2 (Paule & Mandel 1982): generalised Q = k - 1, which decreases in tau^2; 0 if Q <= k - 1."""
    y, v = np.asarray(y, dtype=float), np.asarray(v, dtype=float)
    k = len(y)
    if _generalised_q(y, v, 0.0) <= k - 1:
        return 0.0
    upper = max(float(np.var(y)), float(v.max()))
    while _generalised_q(y, v, upper) > k - 1:
        upper *= 2
    return float(brentq(lambda t: _generalised_q(y, v, t) - (k - 1), 0.0, upper, xtol=1e-15, rtol=1e-14))


def pool(y, v, alpha: float = 0.05, tau2: float | None = None) -> Pooled:
    """Random-effects pooling of estimates ``y`` with sampling variances ``v``; Paule-Mandel tau^2 unless
    ``tau2`` is given (e.g. another estimator's, to check against published output)."""
    y, v = np.asarray(y, dtype=float), np.asarray(v, dtype=float)
    k = len(y)
    if k < 2:
        raise ValueError("a meta-analysis needs at least two studies")
    if tau2 is None:
        tau2 = paule_mandel(y, v)
    q = _generalised_q(y, v, 0.0)
    w = 1 / (v + tau2)
    mu = float((w * y).sum() / w.sum())
    q_hk = float((w * (y - mu) ** 2).sum() / (k - 1))
    se_z = float(np.sqrt(1 / w.sum()))
    se = float(np.sqrt(q_hk)) * se_z
    t_ci = float(stats.t.ppf(1 - alpha / 2, k - 1))
    z = float(stats.norm.ppf(1 - alpha / 2))
    if k >= 3:
        half = float(stats.t.ppf(1 - alpha / 2, k - 2) * np.sqrt(tau2 + se ** 2))
        pi_low, pi_high = mu - half, mu + half
    else:
        pi_low = pi_high = None
    return Pooled(pooled=mu, se=se, ci_low=mu - t_ci * se, ci_high=mu + t_ci * se, se_z=se_z,
                  ci_low_z=mu - z * se_z, ci_high_z=mu + z * se_z, pi_low=pi_low, pi_high=pi_high, q_hk=q_hk,
                  tau2=float(tau2), i2=max(0.0, (q - (k - 1)) / q) if q > 0 else 0.0, q=q,
                  q_p=float(stats.chi2.sf(q, k - 1)), k=k, weights=tuple(float(x) for x in w / w.sum()))


def meta_analysis(results: list[dict], alpha: float = 0.05) -> MetaResult:
    """Pool the studies' effect sizes (needs at least two studies); see ``pool`` and the module docstring."""
    table = study_rows(results)
    if len(table) < 2:
        raise ValueError("a meta-analysis needs at least two studies")
    p = pool(table["g"].to_numpy(), table["se"].to_numpy() ** 2, alpha=alpha)
    return MetaResult(**{f.name: getattr(p, f.name) for f in fields(Pooled)}, method=METHOD,
                      table=table.assign(weight=np.asarray(p.weights)))


def forest_plot(meta: MetaResult, path: str | Path) -> Path:
    """Effect sizes with 95% CIs by formal and informal partnership; the pooled diamond spans its Knapp-Hartung CI,
    the line through it the prediction interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = meta.table.sort_values(["formal", "partnership_type", "id"], ascending=[False, True, True])
    labels = [textwrap.fill(f"{r.title} ({'formal' if r.formal else 'informal'})", 38) for r in t.itertuples()]
    y = np.arange(len(t), 0, -1, dtype=float)
    fig, ax = plt.subplots(figsize=(8.0, 0.75 * len(t) + 1.8))
    ax.errorbar(t["g"], y, xerr=[t["g"] - t["ci_low"], t["ci_high"] - t["g"]], fmt="none", ecolor="#555", capsize=3)
    sizes = 40 + 400 * t["weight"].to_numpy()
    ax.scatter(t["g"], y, s=sizes, marker="s", color=["#1b6ca8" if f else "#e0a100" for f in t["formal"]],
               zorder=3)
    if meta.pi_low is not None:
        ax.hlines(0, meta.pi_low, meta.pi_high, colors="#d1495b", linestyles="--", linewidth=1.2, zorder=2)
        ax.vlines([meta.pi_low, meta.pi_high], -0.12, 0.12, colors="#d1495b", linewidth=1.2, zorder=2)
        pi = f"prediction interval [{meta.pi_low:.2f}, {meta.pi_high:.2f}]"
    else:
        pi = "prediction interval: not computed (k < 3)"
    ax.fill([meta.ci_low, meta.pooled, meta.ci_high, meta.pooled], [0, 0.25, 0, -0.25], color="#d1495b", zorder=3)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks([*y, 0], [*labels, f"Pooled (random effects):\n{meta.pooled:.2f} [{meta.ci_low:.2f}, "
                                     f"{meta.ci_high:.2f}] Knapp-Hartung CI\n{pi}"], fontsize=8)
    ax.set_xlabel("Effect size (Hedges' g) with 95% confidence interval")
    ax.set_title(f"What works: effect sizes by partnership type (I\u00b2 = {meta.i2:.0%}, "
                 f"\u03c4\u00b2 = {meta.tau2:.4f})")
    ax.grid(alpha=0.3, axis="x")
    path = Path(path)
    fig.savefig(path, dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path
