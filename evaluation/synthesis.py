"""What works across studies: random-effects meta-analysis and the forest plot.

Random effects with the Paule-Mandel estimate of tau^2 (statsmodels ``combine_effects``,
``method_re="pm"``; recommended over DerSimonian-Laird by Veroniki et al. 2016, and
statsmodels' "dl" path does not truncate a negative tau^2 at zero). I^2 = max(0, (Q - df) / Q)
(Higgins & Thompson 2002). Inputs are the studies' Hedges' g and its standard error
(``evaluation.effects``); the book never re-estimates a study.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.meta_analysis import combine_effects

from evaluation.effects import effect_size, security_rating

FORMAL_TYPES = {"multi_academy_trust", "federation_hard", "umbrella_trust"}


@dataclass(frozen=True)
class MetaResult:
    pooled: float
    se: float
    ci_low: float
    ci_high: float
    tau2: float
    i2: float
    q: float
    q_p: float
    k: int
    method: str
    table: pd.DataFrame  # per study: id, title, partnership_type, formal, g, se, ci_low, ci_high, weight, padlocks


def study_rows(results: list[dict]) -> pd.DataFrame:
    rows = []
    for r in results:
        es = effect_size(r)
        cohort = r["study"]["definition"]["cohort"]
        types = cohort["partnership_types"]
        rows.append({"id": r["study"]["id"], "title": r["study"]["title"], "partnership_type": "/".join(types),
                     "formal": all(t in FORMAL_TYPES for t in types), "g": es.g, "se": es.se,
                     "ci_low": es.ci_low, "ci_high": es.ci_high, "months": es.months,
                     "padlocks": security_rating(r).padlocks})
    return pd.DataFrame(rows)


def meta_analysis(results: list[dict], alpha: float = 0.05) -> MetaResult:
    """Pool the studies' effect sizes (needs at least two studies)."""
    table = study_rows(results)
    if len(table) < 2:
        raise ValueError("a meta-analysis needs at least two studies")
    res = combine_effects(table["g"].to_numpy(), table["se"].to_numpy() ** 2, method_re="pm",
                          row_names=list(table["id"]), alpha=alpha)
    df = len(table) - 1
    q = float(res.q)
    crit = stats.norm.ppf(1 - alpha / 2)
    pooled, se = float(res.mean_effect_re), float(res.sd_eff_w_re)
    table = table.assign(weight=np.asarray(res.weights_rel_re, dtype=float))
    return MetaResult(pooled, se, pooled - crit * se, pooled + crit * se, max(float(res.tau2), 0.0),
                      max(0.0, (q - df) / q) if q > 0 else 0.0, q, float(stats.chi2.sf(q, df)), len(table),
                      "random effects, Paule-Mandel tau^2 (statsmodels combine_effects)", table)


def forest_plot(meta: MetaResult, path: str | Path) -> Path:
    """Effect sizes with 95% CIs, grouped by formal and informal partnership, and the pooled estimate."""
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
    ax.fill([meta.ci_low, meta.pooled, meta.ci_high, meta.pooled], [0, 0.25, 0, -0.25], color="#d1495b")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks([*y, 0], [*labels, f"Pooled (random effects):\n{meta.pooled:.2f} [{meta.ci_low:.2f}, "
                                     f"{meta.ci_high:.2f}]"], fontsize=8)
    ax.set_xlabel("Effect size (Hedges' g) with 95% confidence interval")
    ax.set_title(f"What works: effect sizes by partnership type (I\u00b2 = {meta.i2:.0%}, "
                 f"\u03c4\u00b2 = {meta.tau2:.4f})")
    ax.grid(alpha=0.3, axis="x")
    path = Path(path)
    fig.savefig(path, dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path
