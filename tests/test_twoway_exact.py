"""The exact two-way path of feols (school means + year dummies from sufficient statistics)
equals the alternating-projections path on hard panels, and explicit-dummy OLS."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.errors import InputError
from evaluation.estimators.fixed_effects import SSC, feols

FORMULA = "y ~ treat + x1 + x2 | school + year"


def hard_panel(seed: int = 0, schools: int = 300, years: int = 12) -> pd.DataFrame:
    """Unbalanced pupil-level panel: 1..500 rows a school, trusts, singletons, a lonely year."""
    rng = np.random.default_rng(seed)
    sizes = np.minimum(500, np.maximum(1, rng.pareto(1.0, size=schools).astype(int) + 1))
    sizes[:10] = 1  # singleton schools
    school = np.repeat(np.arange(schools), sizes)
    n = school.size
    span = rng.integers(2, years + 1, size=schools)
    start = rng.integers(0, years - span + 1)
    year = start[school] + (rng.random(n) * span[school]).astype(int)
    lonely = years  # a year observed for one school only
    year[school == 11] = np.where(rng.random(int((school == 11).sum())) < 0.5, lonely, year[school == 11])
    trust = (np.arange(schools) // 7)[school]  # trusts of 7 schools: schools nested in trusts
    first = rng.choice(np.r_[-1, np.arange(3, years)], size=schools)
    treat = ((first[school] >= 0) & (year >= first[school])).astype(float)
    x1 = rng.normal(size=n) + rng.normal(size=schools)[school] + 0.1 * year
    x2 = rng.normal(size=n)
    y = (0.3 * treat + 0.5 * x1 - 0.2 * x2 + 2 * rng.normal(size=schools)[school]
         + 0.05 * year ** 1.5 + rng.normal(size=n) * (1 + (school % 3)))
    df = pd.DataFrame({"school": 1000 + school * 3, "year": (2010 + year).astype(np.int16),
                       "trust": trust, "treat": treat, "x1": x1, "x2": x2, "y": y,
                       "w": rng.gamma(2.0, size=n)})
    df["cohort"] = rng.integers(0, 40, size=n)  # clusters that cut schools
    df["school_half"] = df["school"] * 2 + (rng.random(n) < 0.5)  # clusters that split schools
    return df


def close(a, b, rtol=1e-9):
    a, b = np.asarray(a, float), np.asarray(b, float)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())


def same_fit(data, formula=FORMULA, rtol=1e-9, **kw):
    ex = feols(data, formula, **kw)
    ap = feols(data, formula, absorb="alternating", fe_tol=1e-14, **kw)
    assert ex.details["absorb"].startswith("exact"), ex.details["absorb"]
    assert ap.details["absorb"] in ("alternating projections", "one-way (group means)")
    assert list(ex.params.index) == list(ap.params.index)
    close(ex.params, ap.params, rtol)
    close(ex.se(), ap.se(), rtol)
    close(ex.vcov, ap.vcov, rtol)
    assert ex.dof_K == ap.dof_K and ex.n_obs == ap.n_obs and ex.fe_sizes == ap.fe_sizes
    assert ex.notes == ap.notes
    assert ex.variance == ap.variance
    np.testing.assert_array_equal(ex.sample, ap.sample)
    close(ex.residuals, ap.residuals, rtol * 10)
    assert abs(ex.rss - ap.rss) <= rtol * ap.rss
    return ex, ap


@pytest.fixture(scope="module")
def panel():
    return hard_panel()


@pytest.mark.parametrize("cluster,vcov", [
    (None, "iid"), (None, "hetero"),
    ("school", "CR1"), ("school", "CR0"), ("school", "panelols"),
    ("trust", "CR1"), ("trust", "panelols"),
    ("cohort", "CR1"), ("cohort", "CR0"), ("school_half", "CR1"),
])
def test_exact_equals_alternating(panel, cluster, vcov):
    ex, _ = same_fit(panel, cluster=cluster, vcov=vcov)
    assert ex.details["absorb"] == "exact two-way (school means + year dummies)"


@pytest.mark.parametrize("cluster", ["school", "cohort", "trust"])
def test_weights_with_zeros_and_missing(panel, cluster):
    df = panel.copy()
    rng = np.random.default_rng(1)
    df.loc[rng.random(len(df)) < 0.1, "w"] = 0.0
    df.loc[rng.random(len(df)) < 0.03, "x1"] = np.nan
    df.loc[rng.random(len(df)) < 0.02, "y"] = np.nan
    ex, _ = same_fit(df, cluster=cluster, weights="w")
    assert any("zero weight" in s for s in ex.notes) and any("missing" in s for s in ex.notes)
    same_fit(df, weights="w", vcov="hetero")
    same_fit(df, weights="w", vcov="iid")


def test_disconnected_graph(panel):
    df = panel.copy()
    # two blocks of schools observed in disjoint sets of years
    block = (df["school"] // 3) % 2 == 0
    df.loc[block, "year"] = (2010 + (df.loc[block, "year"] - 2010) % 5).astype(np.int16)
    df.loc[~block, "year"] = (2020 + (df.loc[~block, "year"] - 2010) % 4).astype(np.int16)
    for cluster, vcov in [("school", "CR1"), ("cohort", "CR1"), (None, "hetero"), (None, "iid")]:
        same_fit(df, cluster=cluster, vcov=vcov)


def test_collinear_with_fixed_effects(panel):
    df = panel.copy()
    df["school_size"] = df.groupby("school")["y"].transform("size").astype(float)
    df["trend"] = df["year"].astype(float) * 2.0 + 1.0
    df["x3"] = df["x1"] - df["x2"]
    f = "y ~ treat + school_size + x1 + trend + x2 + x3 | school + year"
    ex, _ = same_fit(df, f, cluster="school")
    assert list(ex.params.index) == ["treat", "x1", "x2"]
    assert ex.details["dropped_collinear"] == ["school_size", "trend", "x3"]
    same_fit(df, f, vcov="hetero")


def test_singletons_dropped_and_one_way(panel):
    same_fit(panel, cluster="school", drop_singletons=True)
    ex, _ = same_fit(panel, "y ~ treat + x1 + x2 | school", cluster="cohort")
    assert ex.details["absorb"] == "exact one-way (school means)"
    same_fit(panel, "y ~ treat + x1 + x2 | school", vcov="hetero", weights="w")


def test_ssc_variants_and_formula_order(panel):
    for ssc in [SSC(fixef_K="full"), SSC(fixef_K="none"), SSC(adj=False), SSC(cluster_adj=False)]:
        same_fit(panel, cluster="trust", ssc=ssc)
    # the small effect listed first; string-coded effects (pd.factorize path)
    df = panel.assign(school=panel["school"].astype(str))
    ex, _ = same_fit(df, "y ~ treat + x1 + x2 | year + school", cluster="school")
    assert ex.details["absorb"] == "exact two-way (school means + year dummies)"
    assert list(ex.fe_sizes) == ["year", "school"]


def test_many_levels_fall_back(panel):
    df = panel.assign(cell=panel["school"] * 100 + panel["year"])
    r = feols(df, "y ~ treat + x1 + x2 | school + cohort + year", cluster="school")
    assert r.details["absorb"] == "alternating projections"
    with pytest.raises(InputError):
        feols(df, "y ~ treat + x1 + x2 | school + cohort + year", absorb="exact")


def test_matches_explicit_dummies_statsmodels():
    import statsmodels.formula.api as smf

    df = hard_panel(seed=3, schools=40, years=6)
    df = df[df.groupby("school")["y"].transform("size") <= 60].reset_index(drop=True)
    ols = smf.ols("y ~ treat + x1 + x2 + C(school) + C(year)", data=df).fit(
        cov_type="cluster", cov_kwds={"groups": pd.factorize(df["trust"])[0]})
    # statsmodels: G/(G-1) (N-1)/(N-K) with K = every parameter, i.e. fixest fixef.K = "full"
    ours = feols(df, FORMULA, cluster="trust", ssc=SSC(fixef_K="full"))
    assert ours.details["absorb"].startswith("exact")
    terms = ["treat", "x1", "x2"]
    close(ours.params[terms], ols.params[terms], 1e-9)
    close(ours.se()[terms], ols.bse[terms], 1e-9)
    wls = smf.wls("y ~ treat + x1 + x2 + C(school) + C(year)", data=df, weights=df["w"]).fit(
        cov_type="HC1")
    ours = feols(df, FORMULA, weights="w", vcov="hetero")
    close(ours.params[terms], wls.params[terms], 1e-9)
    close(ours.se()[terms], wls.bse[terms], 1e-9)
