"""Few-cluster inference: wild cluster bootstrap (WCR), influence-function bootstrap, randomisation
inference, the small-cluster policy, and (slow) their size on simulated null panels.

Peer: the Python ``wildboottest`` package (0.3, WCR "11" bootstrap; Roodman et al. 2019), run on the
same data when installed. With all 2^G Rademacher draws enumerated both bootstrap distributions are
deterministic, so they must agree to rounding (1e-10), not to Monte Carlo error.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from evaluation.errors import InputError
from evaluation.estimators.fixed_effects import feols
from evaluation.estimators.twfe import twfe_did
from evaluation.inference.randomisation import n_assignments, randomisation_test
from evaluation.inference.wild_bootstrap import (
    influence_bootstrap,
    robust_inference,
    small_cluster_policy,
    wild_bootstrap_arrays,
    wild_cluster_bootstrap,
)


def _ols_data(G=8, n=300, seed=1):
    rng = np.random.default_rng(seed)
    cl = rng.integers(0, G, n)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    y = 1 + 0.1 * x1 + 0.3 * x2 + rng.normal(size=n) + rng.normal(size=G)[cl]
    return pd.DataFrame({"y": y, "x1": x1, "x2": x2, "g": cl})


def _fe_panel(G=9, units=40, T=6, seed=2):
    rng = np.random.default_rng(seed)
    ucl = rng.integers(0, G, units)
    df = pd.DataFrame([(u, t) for u in range(units) for t in range(T)], columns=["u", "t"])
    df["g"] = ucl[df.u]
    df["x"] = rng.normal(size=len(df)) + (df.g % 3 == 0) * (df.t >= 3)
    df["w"] = rng.normal(size=len(df))
    df["y"] = (0.05 * df.x + rng.normal(size=len(df)) + rng.normal(size=(G, T))[df.g, df.t]
               + rng.normal(size=units)[df.u])
    return df


def _staggered(G=10, T=8, seed=2, cohorts=(4, 4, 6)):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 6, G)
    ccoh = np.zeros(G)
    ccoh[:len(cohorts)] = cohorts
    ccoh = rng.permutation(ccoh)
    part = np.repeat(np.arange(G), sizes)
    school = np.repeat(np.arange(part.size), T)
    year = np.tile(np.arange(1, T + 1), part.size)
    pg = part[school]
    y = rng.normal(size=school.size) + rng.normal(size=(G, T + 1))[pg, year]
    return pd.DataFrame({"school": school, "year": year, "partnership": pg,
                         "cohort": ccoh[pg], "y": y})


def _wildboottest(X, y, cluster, R, B, weights="rademacher", seed=1):
    wbt = pytest.importorskip("wildboottest.wildboottest")
    wb = wbt.WildboottestCL(X=X, Y=y, cluster=cluster, R=np.asarray(R, float), B=B, seed=seed,
                            parallel=False)
    wb.get_scores(bootstrap_type="11", impose_null=True)
    wb.get_weights(weights)
    wb.get_numer()
    wb.get_denom()
    wb.get_tboot()
    wb.get_vcov()
    wb.get_tstat()
    wb.get_pvalue()
    return wb


# --------------------------------------------------------------------------------------
# Wild cluster bootstrap against the peer
# --------------------------------------------------------------------------------------


def _same_p_up_to_identity_ties(res, wb, scale=1.0):
    """With enumeration, v = +1 and v = -1 reproduce |t| exactly (ties). Ours never counts ties as
    exceedances; wildboottest's strict |t| < |t*| counts them or not depending on the last bit of
    rounding. So: our p from wildboottest's t* equals ours, and its own p is ours or ours + 2/B."""
    t_wb = float(np.ravel(wb.t_stat)[0])
    tb = np.ravel(wb.t_boot)
    ours_from_peer = np.mean(np.abs(tb) > abs(t_wb) * (1 + 1e-9))
    assert res.p_value == pytest.approx(ours_from_peer, abs=1e-12)
    assert float(wb.pvalue) - res.p_value in (pytest.approx(0.0, abs=1e-12),
                                              pytest.approx(2 / res.B, abs=1e-12))


def test_wcr_matches_wildboottest_exactly_with_full_enumeration():
    df = _ols_data()
    res = wild_cluster_bootstrap(df, "y ~ x1 + x2", "x1", cluster="g", B=999, seed=1)
    assert res.enumerated and res.B == 2 ** 8
    X = np.column_stack([np.ones(len(df)), df.x1, df.x2])
    wb = _wildboottest(X, df.y.to_numpy(), df.g.to_numpy(), [0, 1, 0], B=999)
    assert wb.B == 256
    # same small-sample factor (k = 3 columns, no fixed effects): identical t and t* multisets
    assert res.t_stat == pytest.approx(float(np.ravel(wb.t_stat)[0]), rel=1e-10)
    np.testing.assert_allclose(np.sort(np.abs(res.t_boot)), np.sort(np.abs(np.ravel(wb.t_boot))),
                               rtol=1e-10, atol=1e-12)
    _same_p_up_to_identity_ties(res, wb)
    # and the t equals feols's CRV1 t
    fit = feols(df, "y ~ x1 + x2", cluster="g")
    assert res.t_stat == pytest.approx(fit.params["x1"] / fit.se()["x1"], rel=1e-10)


def test_wcr_with_fixed_effects_matches_wildboottest_with_dummies():
    """Unit effects (nested in clusters) partialled out, year effects (not nested) carried: the
    bootstrap equals wildboottest on the full dummy design. The t-statistics differ only by the
    constant sqrt((N-K_fixest)/(N-K_all)) (wildboottest counts every dummy in K)."""
    df = _fe_panel()
    coef = {"x": 1.0, "w": -0.5}
    res = wild_cluster_bootstrap(df, "y ~ x + w | u + t", coef, cluster="g", B=999, seed=3)
    assert res.enumerated and res.B == 512
    fit = feols(df, "y ~ x + w | u + t", cluster="g")
    R = np.array([1.0, -0.5])
    se = float(np.sqrt(R @ fit.vcov.to_numpy() @ R))
    assert res.t_stat == pytest.approx(R @ fit.params.to_numpy() / se, rel=1e-9)
    D = pd.get_dummies(df[["u", "t"]].astype(str), drop_first=True).astype(float)
    X = np.column_stack([np.ones(len(df)), df[["x", "w"]].to_numpy(), D.to_numpy()])
    Rfull = np.zeros(X.shape[1])
    Rfull[1:3] = R
    wb = _wildboottest(X, df.y.to_numpy(), df.g.to_numpy(), Rfull, B=999)
    n = len(df)
    scale = math.sqrt((n - X.shape[1]) / (n - fit.dof_K))
    assert res.t_stat * scale == pytest.approx(float(np.ravel(wb.t_stat)[0]), rel=1e-8)
    np.testing.assert_allclose(np.sort(np.abs(res.t_boot)) * scale,
                               np.sort(np.abs(np.ravel(wb.t_boot))), rtol=1e-8)
    _same_p_up_to_identity_ties(res, wb, scale)


def test_wcr_webb_agrees_with_wildboottest_to_monte_carlo_error():
    """Different random streams: |p1 - p2| <= 4 sqrt(2 p (1-p) / B) (two independent estimates)."""
    df = _ols_data(G=14, n=400, seed=5)
    B = 4999
    res = wild_cluster_bootstrap(df, "y ~ x1 + x2", "x1", cluster="g", B=B, weights="webb", seed=7,
                                 ci=False)
    X = np.column_stack([np.ones(len(df)), df.x1, df.x2])
    wb = _wildboottest(X, df.y.to_numpy(), df.g.to_numpy(), [0, 1, 0], B=B, weights="webb")
    p = 0.5 * (res.p_value + float(wb.pvalue))
    assert abs(res.p_value - float(wb.pvalue)) <= 4 * math.sqrt(2 * p * (1 - p) / B) + 1e-12


def test_confidence_set_is_the_inverted_test():
    df = _fe_panel()
    res = wild_cluster_bootstrap(df, "y ~ x + w | u + t", "x", cluster="g", B=999, weights="webb",
                                 seed=4)
    assert res.ci_low < res.estimate < res.ci_high
    width = res.ci_high - res.ci_low
    for end, inward in ((res.ci_low, 1), (res.ci_high, -1)):
        p_in = wild_cluster_bootstrap(df, "y ~ x + w | u + t", "x", cluster="g", B=999,
                                      weights="webb", seed=4, null=end + inward * 1e-6 * width,
                                      ci=False).p_value
        p_out = wild_cluster_bootstrap(df, "y ~ x + w | u + t", "x", cluster="g", B=999,
                                       weights="webb", seed=4, null=end - inward * 1e-6 * width,
                                       ci=False).p_value
        assert p_in > 0.05 >= p_out


def test_equal_tailed_and_unrestricted_options():
    df = _ols_data(G=10)
    et = wild_cluster_bootstrap(df, "y ~ x1 + x2", "x2", cluster="g", B=999, weights="webb",
                                seed=1, p_value="equal-tailed")
    assert 0 <= et.p_value <= 1 and et.ci_low < et.estimate < et.ci_high
    wcu = wild_cluster_bootstrap(df, "y ~ x1 + x2", "x2", cluster="g", B=999, weights="webb",
                                 seed=1, impose_null=False)
    assert not wcu.impose_null and wcu.ci_low < wcu.estimate < wcu.ci_high


def test_determinism_by_seed_and_enumeration_ignores_seed():
    df = _ols_data(G=14, n=300)
    a = wild_cluster_bootstrap(df, "y ~ x1 + x2", "x1", cluster="g", B=499, weights="webb", seed=11)
    b = wild_cluster_bootstrap(df, "y ~ x1 + x2", "x1", cluster="g", B=499, weights="webb", seed=11)
    c = wild_cluster_bootstrap(df, "y ~ x1 + x2", "x1", cluster="g", B=499, weights="webb", seed=12)
    np.testing.assert_array_equal(a.t_boot, b.t_boot)
    assert (a.p_value, a.ci_low, a.ci_high) == (b.p_value, b.ci_low, b.ci_high)
    assert not np.array_equal(a.t_boot, c.t_boot)
    small = _ols_data(G=6)
    e1 = wild_cluster_bootstrap(small, "y ~ x1 + x2", "x1", cluster="g", B=999, seed=1)
    e2 = wild_cluster_bootstrap(small, "y ~ x1 + x2", "x1", cluster="g", B=999, seed=99)
    assert e1.enumerated and e1.B == 64 and e1.p_value == e2.p_value
    assert e1.p_value * 64 == pytest.approx(round(e1.p_value * 64))  # a multiple of 1/2^G
    assert any("enumerated" in n for n in e1.notes)


def test_wild_bootstrap_input_errors():
    df = _ols_data()
    with pytest.raises(InputError, match="coefficient of the model"):
        wild_cluster_bootstrap(df, "y ~ x1 + x2", "x3", cluster="g", B=99)
    one = df.assign(g=0)
    with pytest.raises(InputError, match="two clusters"):
        wild_cluster_bootstrap(one, "y ~ x1 + x2", "x1", cluster="g", B=99)
    with pytest.raises(InputError, match="weights"):
        wild_cluster_bootstrap(df, "y ~ x1 + x2", "x1", cluster="g", weights="mammen")
    with pytest.raises(InputError, match="B"):
        wild_cluster_bootstrap(df, "y ~ x1 + x2", "x1", cluster="g", B=0)
    with pytest.raises(InputError, match="no such column"):
        wild_cluster_bootstrap(df, "y ~ x1 + x2", "x1", cluster="gg", B=99)
    with pytest.raises(InputError, match="non-zero"):
        wild_bootstrap_arrays(df.y, df[["x1"]], df.g, [0.0])


# --------------------------------------------------------------------------------------
# Policy and the pipeline entry point
# --------------------------------------------------------------------------------------


def test_small_cluster_policy_and_warning():
    assert small_cluster_policy(5) == "wild-bootstrap-webb"
    assert small_cluster_policy(20) == "wild-bootstrap"
    assert small_cluster_policy(30) == "cluster-robust"
    with pytest.raises(InputError):
        small_cluster_policy(1)
    df = _fe_panel()
    out = robust_inference(df, "y ~ x + w | u + t", "x", cluster="g", B=999, seed=0)
    assert out.policy == "wild-bootstrap-webb" and out.warning and "WARNING: only 9 clusters" in out.warning
    assert out.warning in out.notes and out.bootstrap is not None
    assert out.estimate.p_value == out.bootstrap.p_value
    assert out.conventional.p_value == pytest.approx(
        feols(df, "y ~ x + w | u + t", cluster="g").coefficients.loc["x", "p_value"])
    many = _ols_data(G=40, n=800)
    big = robust_inference(many, "y ~ x1 + x2", "x1", cluster="g")
    assert big.policy == "cluster-robust" and big.warning is None and big.bootstrap is None


# --------------------------------------------------------------------------------------
# Influence-function bootstrap (Callaway-Sant'Anna ATT)
# --------------------------------------------------------------------------------------


def test_influence_bootstrap_conventions():
    rng = np.random.default_rng(3)
    G, m = 8, 5
    cl = np.repeat(np.arange(G), m)
    psi = rng.normal(size=G * m)
    psi -= psi.mean()
    res = influence_bootstrap(0.3, psi, cl, B=999, weights="rademacher")
    S = np.bincount(cl, weights=psi) / psi.size
    assert res.se == pytest.approx(math.sqrt(G / (G - 1) * np.sum(S ** 2)))
    # equal cluster sizes: R did's cluster-mean SE sqrt(sum_c psibar_c^2)/C is se * sqrt((G-1)/G)
    did_se = math.sqrt(np.sum((np.bincount(cl, weights=psi) / m) ** 2)) / G
    assert did_se == pytest.approx(res.se * math.sqrt((G - 1) / G))
    assert res.enumerated and res.B == 256
    # Rademacher: the studentised t* is sum_c v_c S_c / se in every draw
    V = ((np.arange(256)[:, None] >> np.arange(G)) & 1) * 2.0 - 1.0
    np.testing.assert_allclose(np.sort(res.t_boot), np.sort(V @ S / res.se), rtol=1e-10, atol=1e-12)
    assert res.ci_low < 0.3 < res.ci_high


def test_att_wild_bootstrap_on_callaway_santanna():
    from evaluation.estimators.callaway_santanna import aggte, att_gt
    from evaluation.inference.wild_bootstrap import att_wild_bootstrap

    df = _staggered(G=12, seed=4, cohorts=(4, 4, 6, 6))
    gt = att_gt(df, y="y", unit="school", time="year", cohort="cohort", cluster="partnership")
    res = att_wild_bootstrap(gt, "simple", B=999, seed=1)
    agg = aggte(gt, "simple")
    assert res.estimate == pytest.approx(agg.overall.estimate)
    assert res.n_clusters == 12 and res.weights == "webb" and 0 <= res.p_value <= 1
    assert res.variance.cluster == "partnership"
    again = att_wild_bootstrap(gt, "simple", B=999, seed=1)
    assert again.p_value == res.p_value


# --------------------------------------------------------------------------------------
# Randomisation inference
# --------------------------------------------------------------------------------------


def test_randomisation_statistic_matches_twfe_and_callable_path():
    df = _staggered()
    fit = twfe_did(df, y="y", unit="school", time="year", cohort="cohort", cluster="partnership")
    ri = randomisation_test(df, y="y", unit="school", time="year", cohort="cohort",
                            cluster="partnership", n_perm=49, seed=1, exact_threshold=0)
    assert ri.observed == pytest.approx(fit.overall.estimate / fit.overall.se, rel=1e-10)

    def t_stat(panel):
        r = twfe_did(panel, y="y", unit="school", time="year", cohort="cohort",
                     cluster="partnership")
        return r.overall.estimate / r.overall.se

    slow = randomisation_test(df, y="y", unit="school", time="year", cohort="cohort",
                              cluster="partnership", statistic=t_stat, n_perm=49, seed=1,
                              exact_threshold=0)
    np.testing.assert_allclose(slow.null_distribution, ri.null_distribution, rtol=1e-9)
    assert slow.p_value == ri.p_value
    assert not ri.exact and ri.p_value == (1 + np.sum(np.abs(ri.null_distribution)
                                                      >= abs(ri.observed) * (1 - 1e-9))) / 50


def test_randomisation_exact_enumeration():
    df = _staggered(G=7, cohorts=(4, 6))
    total = n_assignments([4, 6, 0, 0, 0, 0, 0])
    assert total == 42
    ri = randomisation_test(df, y="y", unit="school", time="year", cohort="cohort",
                            cluster="partnership", n_perm=999, seed=1)
    assert ri.exact and ri.n_perm == 42 and ri.n_assignments == 42
    assert ri.p_value * 42 == pytest.approx(round(ri.p_value * 42))
    assert ri.p_value >= 1 / 42  # the observed assignment is among them
    other = randomisation_test(df, y="y", unit="school", time="year", cohort="cohort",
                               cluster="partnership", n_perm=999, seed=5)
    assert other.p_value == ri.p_value  # enumeration does not depend on the seed
    # eligibility: an ineligible never-joined partnership is held fixed
    elig = df.assign(ok=(df.partnership != df.partnership[df.cohort == 0].iloc[0]).astype(int))
    sub = randomisation_test(elig, y="y", unit="school", time="year", cohort="cohort",
                             cluster="partnership", eligible="ok", n_perm=999)
    assert sub.exact and sub.n_assignments == n_assignments([4, 6, 0, 0, 0, 0]) == 30


def test_randomisation_determinism_and_errors():
    df = _staggered(G=12, cohorts=(4, 4, 6, 6))
    a = randomisation_test(df, y="y", unit="school", time="year", cohort="cohort",
                           cluster="partnership", n_perm=99, seed=3)
    b = randomisation_test(df, y="y", unit="school", time="year", cohort="cohort",
                           cluster="partnership", n_perm=99, seed=3)
    np.testing.assert_array_equal(a.null_distribution, b.null_distribution)
    assert not a.exact and a.p_value >= 1 / 100
    mixed = df.copy()
    first = mixed.index[(mixed.partnership == mixed.partnership[mixed.cohort > 0].iloc[0])]
    mixed.loc[first[:8], "cohort"] = 0  # one school of a joining partnership never joins
    with pytest.raises(InputError, match="one join period per partnership"):
        randomisation_test(mixed, y="y", unit="school", time="year", cohort="cohort",
                           cluster="partnership")
    with pytest.raises(InputError, match="two clusters"):
        randomisation_test(df.assign(partnership=1), y="y", unit="school", time="year",
                           cohort="cohort", cluster="partnership")
    with pytest.raises(InputError, match="different join periods"):
        randomisation_test(df.assign(cohort=0), y="y", unit="school", time="year",
                           cohort="cohort", cluster="partnership")
    with pytest.raises(InputError, match="statistic"):
        randomisation_test(df, y="y", unit="school", time="year", cohort="cohort",
                           statistic="sdid")
    with pytest.raises(InputError, match="no such column"):
        randomisation_test(df, y="y", unit="school", time="year", cohort="cohort",
                           cluster="trust")


# --------------------------------------------------------------------------------------
# Size on simulated null panels (issue 7, first "Done when")
# --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("G", [8, 12, 20])
def test_rejection_rates_with_few_clusters(G):
    """1,000 null replications per G (design in evaluation.inference.size_study: 40% of partnerships
    of 1-20 schools join at random in two cohorts; heteroskedastic partnership-year shocks).

    Monte Carlo tolerance: with 1,000 replications the SE of a 5% rejection rate is
    sqrt(0.05 * 0.95 / 1000) = 0.0069, so [0.03, 0.07] is about +-2.9 SE around 5%.
    WCR uses Webb weights (the policy below 12 clusters, and B = 399 random draws at every G, so
    no method relies on enumeration); RI permutes cohorts (exact enumeration when there are at
    most 399 distinct assignments). CRV1 (t(G-1)) must over-reject: > 0.07.
    """
    from evaluation.inference.size_study import rejection_rates

    rates = rejection_rates(G, 1000, B=399, n_perm=399)
    assert 0.03 <= rates["WCR-webb"][0] <= 0.07, rates
    assert 0.03 <= rates["RI-t"][0] <= 0.07, rates
    assert rates["CRV1"][0] > 0.07, rates


def test_weighted_wcr_is_the_weighted_fit_and_equals_duplicated_rows():
    """Matching weights: the WCR t is feols(weights=...)'s t, and with integer weights the
    bootstrap p-value and confidence set equal those of the data with each row repeated w times
    (same clusters; only the (N-1)/(N-K) factor differs, which the bootstrap-t does not use)."""
    panel = _fe_panel(G=9, units=40, T=6, seed=5)
    rng = np.random.default_rng(9)
    w_unit = rng.choice([1, 2, 3], size=panel["u"].nunique())
    panel = panel.drop(columns="w").assign(aw=w_unit[pd.factorize(panel["u"])[0]].astype(float))
    fit = feols(panel, "y ~ x | u + t", cluster="g", weights="aw")
    res = wild_cluster_bootstrap(panel, "y ~ x | u + t", "x", cluster="g", aweights="aw", B=999, seed=1)
    assert res.estimate == pytest.approx(fit.params["x"], rel=1e-10)
    assert res.t_stat == pytest.approx(fit.coefficients.loc["x", "estimate"] / fit.coefficients.loc["x", "se"], rel=1e-8)
    dup = panel.loc[panel.index.repeat(panel["aw"].astype(int))].reset_index(drop=True)
    ref = wild_cluster_bootstrap(dup, "y ~ x | u + t", "x", cluster="g", B=999, seed=1)
    assert res.estimate == pytest.approx(ref.estimate, rel=1e-10)
    assert res.p_value == pytest.approx(ref.p_value, abs=1e-12)
    assert res.ci_low == pytest.approx(ref.ci_low, rel=1e-6) and res.ci_high == pytest.approx(ref.ci_high, rel=1e-6)
    unweighted = wild_cluster_bootstrap(panel, "y ~ x | u + t", "x", cluster="g", B=999, seed=1)
    assert abs(unweighted.estimate - res.estimate) > 1e-3  # the weights matter here
    ri = robust_inference(panel, "y ~ x | u + t", "x", cluster="g", aweights="aw", seed=1, B=999)
    assert ri.estimate.estimate == pytest.approx(fit.params["x"], rel=1e-10)
