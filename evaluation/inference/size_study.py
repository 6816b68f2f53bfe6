"""Monte Carlo size of few-cluster tests for staggered DiD (issue 7, first "Done when").

Design (no effect): G partnerships of unequal size (1 to 20 schools, geometric spread), T = 8
years, school and year effects, a shock common to the schools of a partnership in each year whose
standard deviation differs across partnerships (errors correlated within partnership, across schools
and years, and heteroskedastic across partnerships), plus idiosyncratic noise. Each replication
assigns the join years at random to partnerships: 40% of them (at least 2) join, alternately in
years 4 and 6; the rest never join. The same assignment law is what randomisation inference
permutes, so RI is exact here by construction (up to the discreteness of its p-values); CRV1 with
t(G-1) critical values over-rejects because few clusters of unequal size and variance carry the
treatment (MacKinnon & Webb 2017).

Tests at 5%: CRV1 (feols's convention), WCR with Rademacher weights (enumerated when 2^G <= B) and
with Webb weights, and RI with the studentised TWFE statistic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from evaluation.inference.randomisation import randomisation_test
from evaluation.inference.wild_bootstrap import wild_bootstrap_arrays

METHODS = ("CRV1", "WCR-rademacher", "WCR-webb", "RI-t")
T = 8
COHORTS = (4, 6)
TREATED_SHARE = 0.4


def design(G: int) -> np.ndarray:
    """Schools per partnership: geometric spread from 1 to 20, round(20^(i/(G-1))), i = 0..G-1."""
    return np.round(20.0 ** (np.arange(G) / (G - 1))).astype(int)


def simulate_panel(sizes: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """One null panel (true effect 0) with randomly assigned partnership join years.

    y = school effect + 0.1 year + sd_g * partnership-year shock + N(0, 1), where sd_g runs from
    exp(-0.7) to exp(0.7) across partnerships in random order (heteroskedastic clusters).
    """
    G = len(sizes)
    n_treat = max(2, int(round(TREATED_SHARE * G)))
    coh = np.zeros(G)
    coh[:n_treat] = np.where(np.arange(n_treat) % 2 == 0, COHORTS[0], COHORTS[1])
    coh = rng.permutation(coh)
    sd = np.exp(np.linspace(-0.7, 0.7, G))[rng.permutation(G)]
    part = np.repeat(np.arange(G), sizes)
    n_sch = part.size
    school = np.repeat(np.arange(n_sch), T)
    year = np.tile(np.arange(1, T + 1), n_sch)
    pg = part[school]
    shock = (sd[:, None] * rng.normal(0, 1, (G, T + 1)))[pg, year]
    y = rng.normal(0, 1, n_sch)[school] + 0.1 * year + shock + rng.normal(0, 1, school.size)
    return pd.DataFrame({"school": school, "year": year, "partnership": pg, "cohort": coh[pg],
                         "y": y})


def replicate(panel: pd.DataFrame, *, B: int, n_perm: int, seed: int, alpha: float = 0.05) -> dict:
    """Rejection indicators (p <= alpha) of every method on one panel."""
    t = panel["year"].to_numpy(float)
    g = panel["cohort"].to_numpy(float)
    D = ((g > 0) & (t >= g)).astype(float)
    y = panel["y"].to_numpy(float)
    fe = [panel["school"].to_numpy(), panel["year"].to_numpy()]
    cl = panel["partnership"].to_numpy()
    out = {}
    for w in ("rademacher", "webb"):
        res = wild_bootstrap_arrays(y, D, cl, [1.0], 0.0, fe=fe, B=B, weights=w, seed=seed, ci=False,
                                    dof_K=T + 1)
        out[f"WCR-{w}"] = res.p_value <= alpha
    G = res.n_clusters
    out["CRV1"] = 2 * stats.t.sf(abs(res.t_stat), G - 1) <= alpha
    ri = randomisation_test(panel, y="y", unit="school", time="year", cohort="cohort",
                            cluster="partnership", n_perm=n_perm, seed=seed)
    out["RI-t"] = ri.p_value <= alpha
    return out


def rejection_rates(G: int, reps: int, *, B: int = 399, n_perm: int = 399, seed: int = 2024,
                    alpha: float = 0.05) -> dict:
    """Rejection rate and its Monte Carlo SE, sqrt(p(1-p)/reps), per method, for G clusters."""
    sizes = design(G)
    rng = np.random.default_rng([seed, G])
    hits = {m: 0 for m in METHODS}
    for r in range(reps):
        panel = simulate_panel(sizes, rng)
        rej = replicate(panel, B=B, n_perm=n_perm, seed=int(rng.integers(2**31)), alpha=alpha)
        for m in METHODS:
            hits[m] += bool(rej[m])
    out = {}
    for m in METHODS:
        p = hits[m] / reps
        out[m] = (p, float(np.sqrt(p * (1 - p) / reps)))
    return out
