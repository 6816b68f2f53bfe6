"""Staggered joining on the synthetic national panel: Callaway-Sant'Anna recovers the
true cohort-time effects where two-way fixed effects is biased, and the Goodman-Bacon
decomposition shows why.

The analysis panel (``analysis_panel``)
-----------------------------------------
* Treatment: hard federations of primary schools, outcome ``ks2_reading_score``. The
  generator selects federations on permanent characteristics only (small, rural,
  slightly weaker schools: see ``evaluation/data/synthetic.py``), so unconditional
  parallel trends hold. Sponsor-led trusts are avoided on purpose: they take on schools
  in a transitory dip (Ashenfelter), and unconditional CS is biased there.
* Treated: primary schools whose only partnership membership ever is one hard federation,
  first exposed (``calendar.first_exposed_year`` of the join date) in 2012-2022 (at least
  two pre-periods and three post-periods in 2010-2024), and which never leave it (10% of
  federations dissolve; the effect then stops and the treatment is no longer absorbing).
  A school that is also in a trust, alliance or cluster carries that partnership's
  effect too, so its outcome is not the federation's alone.
* Controls: primary schools never in any partnership, not "never in a hard federation".
  Schools in other partnerships carry those partnerships' effects, which grow over time
  and start in every year, and sponsor-led ones were selected on a dip; as controls they
  would break parallel trends. Never-joined schools have untreated outcomes throughout.
* Balanced: schools open in all 15 years (2010-2024) with a published outcome in every
  year. Schools with any suppressed (SUPP: cohort of 5 or fewer) or unpublished (NP)
  result are dropped; suppression depends on cohort size, not on the result, so the
  dropping is selection on a (nearly permanent) characteristic and keeps parallel trends.
* Truth: the truth table's realised federation effect on ``ks2_reading_score`` for each
  school-year (0 before joining and for controls). ATT(g,t) true = mean over the cohort's
  schools in year t; the "simple" true ATT is the same cohort-size weighting of the
  post-period cells as CS's simple aggregation, i.e. the mean true effect over all
  treated post-period school-years.

Effect sizes
------------
The default hard-federation effect is 0.12 SD of latent quality reached after 3 years.
Once it plateaus the effect is nearly static, and with ~20 times more never-joined than
federated schools TWFE puts ~98% of its weight on clean "treated vs never treated"
comparisons; its bias is then invisible (seed 1, 20,000 schools: TWFE estimand 0.223 vs
true simple ATT 0.230 reading-score points, a bias of -0.007 against a TWFE standard error
of 0.071). So the tests plant an effect that keeps growing:
``GROWING`` gives hard federations 0.1 latent SD per year of membership for 12 years
(0.22 reading-score points a year). Every other type keeps its default (none of them is
in the analysis panel); selection is unchanged.

Why TWFE is biased here (Goodman-Bacon 2021, Theorem 1): TWFE is linear in the outcome,
so applied to the true effects it gives exactly the TWFE estimand on this sample, and
its decomposition shows the channels: (1) a "treated vs never treated" 2x2 equals the
cohort's mean post-period effect, but its weight is proportional to n_k D_k (1 - D_k)
(D_k the share of years treated) where the simple ATT weights cohorts by n_k D_k: TWFE
favours late joiners, whose effects have had less time to grow; (2) "later vs earlier
treated" 2x2s subtract the growth of the earlier cohort's effect and come out far below
the truth.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from evaluation.data.calendar import first_exposed_year
from evaluation.data.synthetic import EFFECTS, FIRST_YEAR, LAST_YEAR, generate
from evaluation.estimators.bacon import (
    EARLIER_VS_LATER,
    LATER_VS_EARLIER,
    TREATED_VS_NEVER,
    bacon_decomposition,
)
from evaluation.estimators.callaway_santanna import aggte, att_gt
from evaluation.estimators.twfe import twfe_did

FEDERATION = ("federation_hard", "")
GROWING = {**EFFECTS, FEDERATION: (1.2, 12)}  # 0.1 latent SD per year of membership, 12 years
OUTCOME = "ks2_reading_score"
FIRST_COHORT, LAST_COHORT = 2012, 2022
N_YEARS = LAST_YEAR - FIRST_YEAR + 1
ALPHA = 0.05
Z = stats.norm.ppf(1 - ALPHA / 2)


def analysis_panel(panel) -> tuple[pd.DataFrame, dict]:
    """Long balanced panel (urn, year, y, g, tau) for hard federations vs never-joined primaries.

    ``g`` is the first exposed year (0 = never joined), ``tau`` the true effect of the
    federation in that school-year. See the module docstring for the choices.
    """
    m = panel.memberships.copy()
    m["urn"] = m["urn"].astype(int)
    m = m.join(panel.partnerships.set_index("partnership_id")["type"], on="partnership_id")
    m["g"] = first_exposed_year(m["joined"])
    n_memberships = m.groupby("urn").size()
    schools = panel.schools
    primary = set(schools.loc[schools["phase"] == "primary", "urn"].astype(int))
    treated = m[(m["type"] == FEDERATION[0]) & m["urn"].map(n_memberships).eq(1) & (m["left"] == "")
                & m["g"].between(FIRST_COHORT, LAST_COHORT) & m["urn"].isin(primary)]
    never = primary - set(m["urn"])
    sy = panel.school_years
    long = pd.DataFrame({"urn": sy["urn"].astype(int).to_numpy(), "year": sy["year"].astype(int).to_numpy(),
                         "y": pd.to_numeric(sy[OUTCOME], errors="coerce").to_numpy()})
    long = long[long["urn"].isin(set(treated["urn"]) | never)]
    per_school = long.groupby("urn")["y"].agg(["size", "count"])
    complete = per_school.index[(per_school["size"] == N_YEARS) & (per_school["count"] == N_YEARS)]
    open_all_years = per_school.index[per_school["size"] == N_YEARS]
    long = long[long["urn"].isin(complete)].sort_values(["urn", "year"], kind="stable").reset_index(drop=True)
    long["g"] = long["urn"].map(treated.set_index("urn")["g"]).fillna(0).astype(int)
    truth = panel.truth_effects
    truth = truth[truth["partnership_type"] == FEDERATION[0]].set_index(["urn", "year"])[f"effect_{OUTCOME}"]
    key = pd.MultiIndex.from_arrays([long["urn"], long["year"]])
    long["tau"] = truth.reindex(key).fillna(0.0).to_numpy()
    info = {"treated": int(long.loc[long["g"] > 0, "urn"].nunique()),
            "controls": int(long.loc[long["g"] == 0, "urn"].nunique()),
            "dropped_suppressed": int(len(open_all_years) - len(complete))}
    return long, info


def true_cells(long: pd.DataFrame) -> pd.DataFrame:
    """True ATT(g,t): mean true effect over cohort g's schools in year t (every g, t)."""
    return long[long["g"] > 0].groupby(["g", "year"])["tau"].mean().rename("truth").reset_index()


def true_simple(long: pd.DataFrame) -> float:
    """CS's simple aggregation applied to the truth: cells weighted by cohort size, i.e. the
    mean true effect over treated post-period school-years."""
    post = long[(long["g"] > 0) & (long["year"] >= long["g"])]
    return float(post["tau"].mean())


def estimate(long: pd.DataFrame) -> dict:
    """CS (never-treated controls, analytic SEs), TWFE and Bacon on the data and on the truth."""
    cs = att_gt(long, y="y", unit="urn", time="year", cohort="g", control="never")
    gt = cs.group_time.merge(true_cells(long).rename(columns={"year": "t"}), on=["g", "t"], how="left")
    cohort_size = long[long["g"] > 0].groupby("g")["urn"].nunique()
    gt["n_g"] = gt["g"].map(cohort_size).to_numpy()
    psi = cs.influence
    cov = psi.T @ psi / psi.shape[0] ** 2  # the covariance the analytic SEs are the diagonal of
    simple = aggte(cs, "simple").overall
    twfe = twfe_did(long, y="y", unit="urn", time="year", cohort="g", cluster="urn").overall
    return {"gt": gt, "cov": cov, "simple": simple, "twfe": twfe, "truth_simple": true_simple(long),
            "twfe_of_truth": bacon_decomposition(long, y="tau", unit="urn", time="year", cohort="g").twfe}


# --------------------------------------------------------------------------------------
# Coverage of correlated cells: the variance of the number of covered cells
# --------------------------------------------------------------------------------------


def _box_cov_integrand(rho: float, c: float) -> float:
    """d/drho P(|Z1|<c, |Z2|<c) for a standard bivariate normal with correlation rho.

    By Plackett's identity d Phi2(a, b; rho)/d rho = phi2(a, b; rho), and the box has two
    (c, c) and two (c, -c) corners: 2 [phi2(c, c; rho) - phi2(c, -c; rho)]."""
    s = 1.0 - rho * rho
    same = np.exp(-c * c / (1.0 + rho))  # phi2(c, c) * 2 pi sqrt(s)
    opposite = np.exp(-c * c / (1.0 - rho)) if rho < 1 else 0.0
    return 2.0 * (same - opposite) / (2.0 * np.pi * np.sqrt(s))


def indicator_covariance(c: float = Z, grid: int = 801):
    """Cov(1{|Z1|<c}, 1{|Z2|<c}) as a function of corr(Z1, Z2), tabulated on [-1, 1]:
    the integral of ``_box_cov_integrand`` from 0 (independence: covariance 0) to rho."""
    rhos = np.linspace(-1.0, 1.0, grid)
    values = np.array([integrate.quad(_box_cov_integrand, 0.0, r, args=(c,), limit=200)[0] for r in rhos])
    return rhos, values


def coverage_count_variance(corr: np.ndarray, table) -> float:
    """Var(number of cells whose CI covers the truth) for jointly normal z-scores with ``corr``."""
    rhos, values = table
    return float(np.interp(np.clip(corr, -1, 1), rhos, values).sum())


def finite_sample_coverage(n_g: np.ndarray) -> np.ndarray:
    """Coverage of est +- z se when se^2 = sum (x - xbar)^2 / n_g^2 (R did's divisor n, the
    treated group's variance dominating): P(|t_{n_g-1}| < z sqrt((n_g - 1)/n_g))."""
    n_g = np.asarray(n_g, dtype=float)
    return 2 * stats.t.cdf(Z * np.sqrt((n_g - 1) / n_g), n_g - 1) - 1


def test_indicator_covariance_table_is_exact_at_the_ends():
    rhos, values = indicator_covariance()
    p = 1 - ALPHA
    assert values[-1] == pytest.approx(p * (1 - p), abs=1e-9)  # same statistic: Bernoulli variance
    # rho = -1: Z2 = -Z1, the same event again
    assert values[0] == pytest.approx(p * (1 - p), abs=1e-9)
    assert values[len(rhos) // 2] == 0.0


# --------------------------------------------------------------------------------------
# Fast: one seed, TWFE bias and its Bacon explanation
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_seed():
    panel = generate(seed=11, n_schools=12_000, effects=GROWING)
    long, info = analysis_panel(panel)
    return long, info


def test_analysis_panel_is_balanced_with_zero_truth_before_joining(one_seed):
    long, info = one_seed
    assert info["treated"] > 100 and info["controls"] > 2_000 and info["dropped_suppressed"] > 0
    assert (long.groupby("urn").size() == N_YEARS).all() and long["y"].notna().all()
    assert (long.loc[long["year"] < long["g"], "tau"] == 0).all()
    assert (long.loc[long["g"] == 0, "tau"] == 0).all()
    post = long[(long["g"] > 0) & (long["year"] >= long["g"])]
    assert (post["tau"] > 0).all()
    # the planted effect grows with years of membership
    by_e = post.assign(e=post["year"] - post["g"]).groupby("e")["tau"].mean()
    assert (np.diff(by_e.to_numpy()[:8]) > 0).all()


def test_twfe_is_biased_and_bacon_shows_why(one_seed):
    long, _ = one_seed
    truth = true_simple(long)
    # TWFE applied to the true effects: the TWFE estimand on this sample, without noise
    bacon = bacon_decomposition(long, y="tau", unit="urn", time="year", cohort="g")
    assert bacon.identity_holds
    twfe_truth = twfe_did(long, y="tau", unit="urn", time="year", cohort="g").overall.estimate
    assert twfe_truth == pytest.approx(bacon.twfe, abs=1e-9)
    bias = bacon.twfe - truth
    assert bias < 0
    c = bacon.comparisons
    cohort_truth = long[(long["g"] > 0) & (long["year"] >= long["g"])].groupby("g")["tau"].mean()
    # (1) each treated-vs-never 2x2 is exactly that cohort's mean post-period effect ...
    tvn = c[c["type"] == TREATED_VS_NEVER]
    np.testing.assert_allclose(tvn["estimate"].to_numpy(), cohort_truth.loc[tvn["treated"]].to_numpy(),
                               rtol=0, atol=1e-10)
    # ... but TWFE weights them by s_k s_U D_k (1 - D_k) (Theorem 1 with a never-treated group U;
    # D_k the share of years treated), the simple ATT by n_k D_k: relative to the truth, TWFE
    # shifts weight to late joiners, whose effects have had less time to grow
    n_k = long[long["g"] > 0].groupby("g")["urn"].nunique().loc[tvn["treated"]].to_numpy()
    d_k = (LAST_YEAR + 1 - tvn["treated"].to_numpy()) / N_YEARS
    w_twfe = tvn["weight"].to_numpy() / tvn["weight"].sum()
    np.testing.assert_allclose(w_twfe, n_k * d_k * (1 - d_k) / np.sum(n_k * d_k * (1 - d_k)), rtol=1e-12)
    w_simple = n_k * d_k / np.sum(n_k * d_k)
    assert np.sum(w_twfe * tvn["treated"]) > np.sum(w_simple * tvn["treated"])  # later on average
    assert np.sum(w_simple * tvn["estimate"]) == pytest.approx(truth, abs=1e-10)
    assert np.sum(w_twfe * tvn["estimate"]) < truth
    # (2) later-vs-earlier 2x2s subtract the earlier cohort's growing effect: far below the truth
    types = bacon.by_type().set_index("type")
    assert types.loc[LATER_VS_EARLIER, "avg_estimate"] < 0 < truth
    lve = c[c["type"] == LATER_VS_EARLIER]
    assert (lve["estimate"].to_numpy() < cohort_truth.loc[lve["treated"]].to_numpy()).all()
    # the bias is the weighted sum of each comparison type's distance from the truth
    contributions = types["weight"] * (types["avg_estimate"] - truth)
    assert contributions.sum() == pytest.approx(bias, abs=1e-10)
    assert contributions.loc[TREATED_VS_NEVER] < 0 and contributions.loc[LATER_VS_EARLIER] < 0
    assert EARLIER_VS_LATER in types.index


def test_estimates_on_the_data_are_centred_on_their_estimands(one_seed):
    """On the observed outcome, CS's simple aggregation is within 4 SEs of the true simple ATT
    and TWFE within 4 SEs of its own (biased) estimand computed from the truth."""
    long, _ = one_seed
    res = estimate(long)
    simple, twfe = res["simple"], res["twfe"]
    assert abs(simple.estimate - res["truth_simple"]) < 4 * simple.se
    assert abs(twfe.estimate - res["twfe_of_truth"]) < 4 * twfe.se


# --------------------------------------------------------------------------------------
# Slow: coverage over repeated seeds
# --------------------------------------------------------------------------------------

SEEDS = tuple(range(100, 108))
N_SCHOOLS = 50_000  # 40-70 treated schools per cohort after balancing, ~13,000 controls


def _one_replication(seed: int) -> dict:
    long, info = analysis_panel(generate(seed=seed, n_schools=N_SCHOOLS, effects=GROWING))
    res = estimate(long)
    gt, cov = res["gt"], res["cov"]
    sd = np.sqrt(np.diag(cov))
    corr = cov / np.outer(sd, sd)
    post = (gt["g"] <= gt["t"]).to_numpy()
    return {"seed": seed, "info": info, "gt": gt, "corr_post": corr[np.ix_(post, post)],
            "corr_pre": corr[np.ix_(~post, ~post)], "simple": res["simple"], "twfe": res["twfe"],
            "truth_simple": res["truth_simple"], "twfe_of_truth": res["twfe_of_truth"]}


@pytest.mark.slow
def test_callaway_santanna_covers_the_true_cohort_time_effects_where_twfe_is_biased():
    """Over SEEDS x post-period cells the share of true ATT(g,t) inside the pointwise 95% CI is
    within 3 standard deviations of its expectation.

    The cells are not independent (a cohort's post-period cells share its base year, cohorts
    share the controls), so the SD of the covered share comes from the joint normal law of
    the cells' z-scores: for z-scores with correlation r, Cov(1{|Z1|<z}, 1{|Z2|<z}) is
    the integral from 0 to r of 2 [phi2(z, z; rho) - phi2(z, -z; rho)] (Plackett), and the
    correlation matrix is the one of the ATT(g,t) estimates, from their influence functions.
    Seeds are independent. The expectation is 0.95 asymptotically; with n_g treated schools
    the analytic SE uses divisor n_g, so the finite-sample coverage is about
    P(|t_{n_g-1}| < z sqrt((n_g-1)/n_g)) (``finite_sample_coverage``): the accepted range
    is [that - 3 SD, 0.95 + 3 SD]. Pre-period cells (truth 0) get the same coverage check,
    and their mean z-score must be within 3 SDs of 0 (SD sqrt(1'R1)/N).
    """
    workers = min(2, os.cpu_count() or 1)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        reps = list(pool.map(_one_replication, SEEDS))
    table = indicator_covariance()
    p = 1 - ALPHA
    lines = []
    for part, corr_key in (("post", "corr_post"), ("pre", "corr_pre")):
        covered, expected, n, var, z_sum, z_var = 0, 0.0, 0, 0.0, 0.0, 0.0
        for r in reps:
            gt = r["gt"]
            cells = gt[(gt["g"] <= gt["t"]) if part == "post" else (gt["g"] > gt["t"])]
            truth = cells["truth"].to_numpy()
            if part == "pre":
                assert (truth == 0).all()
            covered += int(((cells["ci_low"] <= truth) & (truth <= cells["ci_high"])).sum())
            expected += float(finite_sample_coverage(cells["n_g"].to_numpy()).sum())
            n += len(cells)
            var += coverage_count_variance(r[corr_key], table)
            z_sum += float(((cells["estimate"] - truth) / cells["se"]).sum())
            z_var += float(r[corr_key].sum())
        rate, sd = covered / n, np.sqrt(var) / n
        n_eff = p * (1 - p) / sd ** 2
        lo, hi = expected / n - 3 * sd, p + 3 * sd
        mean_z, sd_z = z_sum / n, np.sqrt(z_var) / n
        lines.append(f"{part}: {covered}/{n} cells covered = {rate:.3f}; expected {expected / n:.3f} "
                     f"(finite sample) to {p}; SD {sd:.4f} (~{n_eff:.0f} independent cells); accepted "
                     f"[{lo:.3f}, {hi:.3f}]; mean z {mean_z:+.3f} (SD {sd_z:.3f})")
        assert lo <= rate <= hi, lines[-1]
        if part == "pre":
            assert abs(mean_z) < 3 * sd_z, lines[-1]

    # TWFE is visibly biased against the true simple ATT; CS's simple aggregation is not
    S = len(reps)
    cs_err = np.mean([r["simple"].estimate - r["truth_simple"] for r in reps])
    cs_se = np.sqrt(sum(r["simple"].se ** 2 for r in reps)) / S
    twfe_err = np.mean([r["twfe"].estimate - r["truth_simple"] for r in reps])
    twfe_se = np.sqrt(sum(r["twfe"].se ** 2 for r in reps)) / S
    estimand_bias = np.mean([r["twfe_of_truth"] - r["truth_simple"] for r in reps])
    lines.append(f"over {S} seeds: CS simple - truth {cs_err:+.4f} (SE {cs_se:.4f}); TWFE - truth "
                 f"{twfe_err:+.4f} (SE {twfe_se:.4f}); TWFE estimand - truth {estimand_bias:+.4f}; "
                 f"mean truth {np.mean([r['truth_simple'] for r in reps]):.4f}")
    print("\n".join(lines))
    assert abs(cs_err) < 3 * cs_se, lines[-1]
    assert twfe_err < -3 * twfe_se, lines[-1]
    assert estimand_bias < -3 * twfe_se, lines[-1]
    for r in reps:  # TWFE is biased in every replication, not only on average
        assert r["twfe_of_truth"] < r["truth_simple"]
