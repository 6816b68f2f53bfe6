"""Callaway & Sant'Anna group-time DiD against R did 2.5 (mpdta) and against known truths."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from evaluation.cli.output import dumps
from evaluation.errors import InputError
from evaluation.estimators.callaway_santanna import aggte, att_gt

DATA = __import__("pathlib").Path(__file__).parent / "data"
KEYS = dict(y="lemp", unit="countyreal", time="year", cohort="first.treat")
SCENARIOS = {
    "mpdta_nev_dr": dict(control="never", method="dr"),
    "mpdta_nyt_dr": dict(control="notyet", method="dr"),
    "mpdta_nev_ipw": dict(control="never", method="ipw"),
    "mpdta_nev_reg_cov": dict(control="never", method="reg", covariates=["lpop"]),
}
TOL = 1e-6  # the agreement the reference files support (R prints 15 significant digits)


@pytest.fixture(scope="module")
def mpdta() -> pd.DataFrame:
    return pd.read_csv(DATA / "mpdta.csv")


@pytest.fixture(scope="module")
def fits(mpdta):
    return {name: att_gt(mpdta, **KEYS, **kw) for name, kw in SCENARIOS.items()}


# ------------------------------------------------------------------------------------------
# Agreement with R did on mpdta
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_att_gt_matches_r(fits, scenario):
    ref = pd.read_csv(DATA / "did_mpdta_attgt.csv").query("scenario == @scenario")
    gt = fits[scenario].group_time
    assert list(zip(gt["g"], gt["t"])) == list(zip(ref["group"].astype(float), ref["t"].astype(float)))
    np.testing.assert_allclose(gt["estimate"], ref["att"], rtol=0, atol=TOL)
    np.testing.assert_allclose(gt["se"], ref["se"], rtol=0, atol=TOL)
    z = stats.norm.ppf(0.975)
    np.testing.assert_allclose(gt["ci_low"], ref["att"] - z * ref["se"], rtol=0, atol=10 * TOL)


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("kind", ["simple", "group", "dynamic", "calendar"])
def test_aggregations_match_r(fits, scenario, kind):
    ref = pd.read_csv(DATA / "did_mpdta_aggte.csv").query("scenario == @scenario and type == @kind")
    agg = aggte(fits[scenario], kind)
    assert agg.overall.estimate == pytest.approx(ref["overall_att"].iloc[0], abs=TOL)
    assert agg.overall.se == pytest.approx(ref["overall_se"].iloc[0], abs=TOL)
    if kind == "simple":
        assert len(agg.egt) == 0
        return
    np.testing.assert_array_equal(agg.egt["egt"], ref["egt"].astype(float))
    np.testing.assert_allclose(agg.egt["estimate"], ref["att_egt"], rtol=0, atol=TOL)
    np.testing.assert_allclose(agg.egt["se"], ref["se_egt"], rtol=0, atol=TOL)
    if kind == "dynamic":
        np.testing.assert_array_equal(agg.event_time["e"], ref["egt"].astype(float))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pretest_matches_r(fits, scenario):
    ref = pd.read_csv(DATA / "did_mpdta_pretest.csv").query("scenario == @scenario").iloc[0]
    pre = fits[scenario].details["pretest"]
    assert pre["W"] == pytest.approx(ref["W"], abs=TOL)
    assert pre["df"] == 5  # 5 pre-treatment ATT(g,t) in mpdta
    # R prints round(p, 5): agreement to half a unit in the fifth decimal
    assert abs(pre["p_value"] - ref["Wpval"]) <= 5e-6 + 1e-12


def test_headline_numbers_and_json(fits):
    fit = fits["mpdta_nev_dr"]
    simple = aggte(fit, "simple")
    assert simple.overall.estimate == pytest.approx(-0.0399513, abs=5e-8)
    assert simple.overall.se == pytest.approx(0.0120340, abs=5e-8)
    assert fit.n_units == 500 and fit.n_obs == 2500 and fit.n_clusters == 500
    assert fit.influence.shape == (500, 12)
    data = json.loads(dumps(simple.to_dict()))  # JSON-ready: no NaN, numpy types converted
    assert data["overall"]["estimate"] == pytest.approx(simple.overall.estimate)
    assert data["details"]["pretest"]["df"] == 5 and "influence" not in data["details"]


# ------------------------------------------------------------------------------------------
# Properties derived from the estimator's algebra
# ------------------------------------------------------------------------------------------


def _did_of_means(df, g, t, base, control_mask):
    wide = df.pivot(index="countyreal", columns="year", values="lemp")
    cohort = df.groupby("countyreal")["first.treat"].first()
    change = wide[t] - wide[base]
    return change[cohort == g].mean() - change[control_mask(cohort)].mean()


def test_unconditional_att_is_did_of_means(mpdta, fits):
    gt = fits["mpdta_nyt_dr"].group_time.set_index(["g", "t"])
    # not-yet-treated at t = 2005 for g = 2004: never treated plus cohorts 2006 and 2007
    expected = _did_of_means(mpdta, 2004, 2005, 2003, lambda c: (c == 0) | (c > 2005))
    assert gt.loc[(2004, 2005), "estimate"] == pytest.approx(expected, abs=1e-12)


def test_anticipation_moves_the_base_period(mpdta):
    fit = att_gt(mpdta, **KEYS, anticipation=1)
    gt = fit.group_time.set_index(["g", "t"])
    expected = _did_of_means(mpdta, 2006, 2006, 2004, lambda c: c == 0)
    assert gt.loc[(2006, 2006), "estimate"] == pytest.approx(expected, abs=1e-12)
    # cohort 2004 has no period before 2004 - 1 = 2003: R drops it (only g > first + anticipation)
    assert 2004 not in set(gt.index.get_level_values("g"))


def test_universal_base_period(mpdta, fits):
    varying = fits["mpdta_nev_dr"].group_time.set_index(["g", "t"])["estimate"]
    fit = att_gt(mpdta, **KEYS, base_period="universal")
    universal = fit.group_time.set_index(["g", "t"])["estimate"]
    assert universal.loc[(2007, 2006)] == 0.0 and np.isnan(fit.group_time.set_index(["g", "t"]).loc[(2007, 2006), "se"])
    for (g, t), value in universal.items():
        if t >= g:  # post-treatment cells use base g - 1 under both conventions
            assert value == pytest.approx(varying.loc[(g, t)], abs=1e-12)
        elif t < g - 1:  # long difference = minus the sum of the short ones (linear DiD, same controls)
            short = sum(varying.loc[(g, s)] for s in range(int(t) + 1, int(g)))
            assert value == pytest.approx(-short, abs=1e-12)


def test_constant_weights_change_nothing(mpdta, fits):
    weighted = att_gt(mpdta.assign(w=2.5), **KEYS, weights="w")
    ref = fits["mpdta_nev_dr"].group_time
    np.testing.assert_allclose(weighted.group_time[["estimate", "se"]], ref[["estimate", "se"]], atol=1e-12)
    agg = aggte(weighted, "dynamic")
    assert agg.overall.se == pytest.approx(aggte(fits["mpdta_nev_dr"], "dynamic").overall.se, abs=1e-12)


def test_event_window_and_balance_options(fits):
    fit = fits["mpdta_nev_dr"]
    full = aggte(fit, "dynamic").egt.set_index("egt")
    window = aggte(fit, "dynamic", min_e=-1, max_e=2)
    assert list(window.egt["egt"]) == [-1.0, 0.0, 1.0, 2.0]
    np.testing.assert_allclose(window.egt.set_index("egt")["estimate"], full.loc[[-1, 0, 1, 2], "estimate"], atol=1e-15)
    assert window.overall.estimate == pytest.approx(full.loc[[0, 1, 2], "estimate"].mean(), abs=1e-15)
    # balance_e = 1: only cohorts observed at least one period after treatment (2004, 2006)
    bal = aggte(fit, "dynamic", balance_e=1).egt.set_index("egt")
    assert list(bal.index) == [-2.0, -1.0, 0.0, 1.0]
    gt = fit.group_time.set_index(["g", "t"])["estimate"]
    sizes = {2004: 20, 2006: 40}  # cohort sizes in mpdta
    e0 = (sizes[2004] * gt.loc[(2004, 2004)] + sizes[2006] * gt.loc[(2006, 2006)]) / 60
    assert bal.loc[0.0, "estimate"] == pytest.approx(e0, abs=1e-15)


# ------------------------------------------------------------------------------------------
# Edge cases R did users trip on
# ------------------------------------------------------------------------------------------


def test_no_never_treated_with_never_control(mpdta):
    treated_only = mpdta[mpdta["first.treat"] > 0]
    with pytest.raises(InputError, match="no never-treated units"):
        att_gt(treated_only, **KEYS, control="never")
    # not-yet-treated works as in R: periods from the last cohort on are dropped
    fit = att_gt(treated_only, **KEYS, control="notyet")
    assert fit.group_time["t"].max() == 2006 and set(fit.group_time["g"]) == {2004.0, 2006.0}
    assert fit.n_units == 191 and fit.n_obs == 191 * 4  # 2007 dropped
    assert any("No never-treated units" in n for n in fit.notes)


def test_units_treated_in_first_period_are_dropped_with_note(mpdta, fits):
    early = mpdta[mpdta["countyreal"] == 8001].assign(countyreal=1, **{"first.treat": 2003})
    fit = att_gt(pd.concat([mpdta, early]), **KEYS)
    assert any("already treated in the first period" in n and "Dropped 1" in n for n in fit.notes)
    np.testing.assert_allclose(fit.group_time["estimate"], fits["mpdta_nev_dr"].group_time["estimate"], atol=1e-15)
    assert fit.n_units == 500


def test_cohort_after_last_period_counts_as_never_treated(mpdta, fits):
    late = mpdta.assign(**{"first.treat": mpdta["first.treat"].replace(0, 2010)})
    fit = att_gt(late, **KEYS)
    assert any("treated as never treated" in n for n in fit.notes)
    pd.testing.assert_frame_equal(fit.group_time, fits["mpdta_nev_dr"].group_time)
    missing = mpdta.assign(**{"first.treat": mpdta["first.treat"].replace(0, np.nan)})
    pd.testing.assert_frame_equal(att_gt(missing, **KEYS).group_time, fits["mpdta_nev_dr"].group_time)


def test_cohort_changing_within_unit_names_the_unit(mpdta):
    bad = mpdta.copy()
    bad.loc[(bad["countyreal"] == 8001) & (bad["year"] == 2005), "first.treat"] = 2006
    with pytest.raises(InputError, match=r"changes over time.*8001"):
        att_gt(bad, **KEYS)


def test_missing_column_and_non_numeric_time(mpdta):
    with pytest.raises(InputError, match="outcome column not found") as err:
        att_gt(mpdta, **{**KEYS, "y": "lempp"})
    assert err.value.problems[0].column == "lempp"
    text_time = mpdta.assign(year="y" + mpdta["year"].astype(str))
    with pytest.raises(InputError, match="time must be numeric") as err:
        att_gt(text_time, **KEYS)
    assert err.value.problems[0].row == 1 and err.value.problems[0].value == "y2003"


def test_duplicate_rows_and_bad_options(mpdta):
    with pytest.raises(InputError, match="more than one row for unit"):
        att_gt(pd.concat([mpdta, mpdta.iloc[:1]]), **KEYS)
    with pytest.raises(InputError, match="control must be one of"):
        att_gt(mpdta, **KEYS, control="later")
    with pytest.raises(InputError, match="aggregation must be one of"):
        aggte(att_gt(mpdta, **KEYS), "cohort")


def test_cohort_without_comparison_names_g_and_t(mpdta):
    # never-treated counties unobserved in 2005: ATT(2004, 2005) has no comparison
    hole = mpdta[~((mpdta["first.treat"] == 0) & (mpdta["year"] == 2005))]
    with pytest.raises(InputError, match=r"g=2004.*untreated comparison.*2005.*ATT\(g=2004, t=2005\)"):
        att_gt(hole, **KEYS)


def test_cluster_must_nest_units(mpdta):
    bad = mpdta.assign(state=np.where(mpdta["year"] == 2005, 1, mpdta["countyreal"] // 1000))
    with pytest.raises(InputError, match="cluster .*changes over time"):
        att_gt(bad, **KEYS, cluster="state")


# ------------------------------------------------------------------------------------------
# Unbalanced panels
# ------------------------------------------------------------------------------------------


def test_unbalanced_panel_uses_all_observations(mpdta):
    rng = np.random.default_rng(7)
    holey = mpdta.drop(index=rng.choice(mpdta.index, 120, replace=False))
    fit = att_gt(holey, **KEYS)
    assert not fit.details["balanced"] and any("repeated-cross-section" in n for n in fit.notes)
    assert fit.n_obs == 2380 and fit.n_units == 500
    # unconditional estimator = DiD of the four cell means of the observations present
    cohort = holey["first.treat"]
    cell = lambda g_mask, yr: holey.loc[g_mask & (holey["year"] == yr), "lemp"].mean()  # noqa: E731
    expected = (cell(cohort == 2006, 2007) - cell(cohort == 2006, 2005)) - (cell(cohort == 0, 2007) - cell(cohort == 0, 2005))
    gt = fit.group_time.set_index(["g", "t"])
    assert gt.loc[(2006, 2007), "estimate"] == pytest.approx(expected, abs=1e-12)
    assert np.all(fit.group_time["se"] > 0)
    # allow_unbalanced=False keeps complete units only, then the panel estimator
    bal = att_gt(holey, **KEYS, allow_unbalanced=False)
    complete = holey.groupby("countyreal")["year"].transform("size") == 5
    direct = att_gt(holey[complete], **KEYS)
    np.testing.assert_allclose(bal.group_time["estimate"], direct.group_time["estimate"], atol=1e-15)
    with pytest.raises(InputError, match="covariates with an unbalanced panel"):
        att_gt(holey, **KEYS, covariates=["lpop"])


# ------------------------------------------------------------------------------------------
# Clustering and the multiplier bootstrap
# ------------------------------------------------------------------------------------------


def test_unit_level_cluster_equals_default(mpdta, fits):
    fit = att_gt(mpdta.assign(cl=mpdta["countyreal"]), **KEYS, cluster="cl")
    np.testing.assert_allclose(fit.group_time["se"], fits["mpdta_nev_dr"].group_time["se"], atol=1e-15)


def test_equal_size_clusters_give_cluster_robust_se(mpdta, fits):
    # pairs of counties: with equal cluster sizes R did's cluster-mean convention equals the
    # usual cluster-robust sqrt(sum_c (sum_{i in c} psi_i)^2) / n
    pair = mpdta["countyreal"].rank(method="dense").astype(int).sub(1) // 2
    fit = att_gt(mpdta.assign(pair=pair), **KEYS, cluster="pair")
    assert fit.n_clusters == 250 and fit.variance.cluster == "pair"
    psi = fits["mpdta_nev_dr"].influence
    sums = pd.DataFrame(psi).groupby(np.arange(500) // 2).sum().to_numpy()
    np.testing.assert_allclose(fit.group_time["se"], np.sqrt((sums ** 2).sum(axis=0)) / 500, rtol=1e-12)
    agg = aggte(fit, "simple")
    simple_if = aggte(fits["mpdta_nev_dr"], "simple").influence[:, -1]
    pair_sums = pd.Series(simple_if).groupby(np.arange(500) // 2).sum()
    assert agg.overall.se == pytest.approx(np.sqrt((pair_sums ** 2).sum()) / 500, rel=1e-12)


def _mc_rel_tol(draws: int, k: float = 4.5) -> float:
    """k Monte Carlo SDs of the IQR-based SE (normal: sd(IQR)/IQR = 1.166 / sqrt(B))."""
    return k * 1.166 / np.sqrt(draws)


def test_bootstrap_deterministic_and_close_to_analytic(mpdta, fits):
    draws = 2000
    a = att_gt(mpdta, **KEYS, bootstrap=draws, seed=11)
    b = att_gt(mpdta, **KEYS, bootstrap=draws, seed=11)
    c = att_gt(mpdta, **KEYS, bootstrap=draws, seed=12)
    pd.testing.assert_frame_equal(a.group_time, b.group_time)
    assert not np.allclose(a.group_time["se"], c.group_time["se"])
    analytic = fits["mpdta_nev_dr"].group_time["se"].to_numpy()
    np.testing.assert_allclose(a.group_time["se"], analytic, rtol=_mc_rel_tol(draws))
    assert a.variance.kind == "multiplier-bootstrap"
    # simultaneous band: sup-t critical value above the pointwise one, used for every CI
    crit = a.details["critical_value"]
    assert stats.norm.ppf(0.975) < crit < 4
    gt = a.group_time
    np.testing.assert_allclose(gt["ci_high"] - gt["estimate"], crit * gt["se"], rtol=1e-12)
    agg = aggte(a, "dynamic", bootstrap=draws, seed=3)
    assert agg.overall.se == pytest.approx(aggte(fits["mpdta_nev_dr"], "dynamic").overall.se,
                                           rel=_mc_rel_tol(draws))
    assert agg.details["egt_critical_value"] > stats.norm.ppf(0.975)


def test_clustered_bootstrap_close_to_clustered_analytic(mpdta):
    rank = mpdta["countyreal"].rank(method="dense").astype(int)
    state = mpdta.assign(grp=(rank * 7919 % 997) % 40)  # 40 clusters of unequal size
    analytic = att_gt(state, **KEYS, cluster="grp")
    boot = att_gt(state, **KEYS, cluster="grp", bootstrap=2000, seed=5)
    assert analytic.n_clusters == 40 and any("cluster sums" in n for n in analytic.notes)
    # with 40 clusters the bootstrap distribution is less normal: a looser MC band
    np.testing.assert_allclose(boot.group_time["se"], analytic.group_time["se"], rtol=_mc_rel_tol(2000, 6))


def _trusts_and_singletons(seed=7, periods=6):
    """40 trusts of 2 to 40 schools (skewed), 400 singleton comparison schools, trust-year shocks,
    two joining cohorts; the cluster column is the trust for members and the school otherwise."""
    rng = np.random.default_rng(seed)
    sizes = np.unique(np.r_[2, 40, np.round(np.exp(rng.uniform(np.log(2), np.log(40), 38)))].astype(int))
    sizes = np.r_[sizes, rng.integers(2, 41, 40 - len(sizes))]
    trust = np.repeat(np.arange(len(sizes)), sizes)
    g_trust = rng.choice([3, 5], size=len(sizes))
    n_t, n_c = len(trust), 400
    unit = np.arange(n_t + n_c)
    cohort = np.r_[g_trust[trust], np.zeros(n_c, dtype=int)]
    cluster = np.r_[trust, len(sizes) + np.arange(n_c)]
    shock = rng.normal(scale=2.0, size=(len(sizes) + n_c, periods))
    alpha = rng.normal(size=n_t + n_c)
    rows = []
    for t in range(1, periods + 1):
        y = alpha + 0.3 * t + shock[cluster, t - 1] + rng.normal(size=n_t + n_c)
        rows.append(pd.DataFrame({"id": unit, "t": t, "y": y, "g": cohort, "cl": cluster}))
    return pd.concat(rows, ignore_index=True), sizes


KEYS_SIM = dict(y="y", unit="id", time="t", cohort="g")


def _sum_se(psi: np.ndarray, cluster: np.ndarray) -> np.ndarray:
    sums = pd.DataFrame(psi).groupby(cluster).sum().to_numpy()
    return np.sqrt((sums ** 2).sum(axis=0)) / psi.shape[0]


def test_unequal_clusters_use_cluster_sums():
    """Trusts of 2 to 40 schools and singleton comparison schools: the clustered SEs of every
    ATT(g,t) and every aggregation equal sqrt(sum_c S_c^2)/n (R did 2.5, CS 2021 Remark 10)."""
    panel, sizes = _trusts_and_singletons()
    assert sizes.min() == 2 and sizes.max() == 40
    fit = att_gt(panel, **KEYS_SIM, cluster="cl")
    units = panel.drop_duplicates("id").sort_values("id")
    cl = units["cl"].to_numpy()
    np.testing.assert_allclose(fit.group_time["se"], _sum_se(fit.influence, cl), rtol=1e-10)
    for kind in ("simple", "group", "dynamic", "calendar"):
        agg = aggte(fit, kind)
        np.testing.assert_allclose(np.r_[agg.egt["se"].to_numpy(), agg.overall.se],
                                   _sum_se(agg.influence, cl), rtol=1e-10)
    # the old cluster-means formula differs materially here (it equals this only with equal sizes)
    simple = aggte(fit, "simple")
    means = pd.Series(simple.influence[:, -1]).groupby(cl).mean()
    old = np.sqrt((means ** 2).sum()) / len(means)
    assert abs(old / simple.overall.se - 1) > 0.2


def test_cluster_sum_se_is_cluster_robust_ols_for_a_2x2():
    """One cohort, two periods, no covariates: the CS ATT is the difference in mean changes and
    its clustered SE is the CR0 SE of OLS of the change on treatment (statsmodels, no correction)."""
    import statsmodels.api as sm

    panel, _ = _trusts_and_singletons(seed=3)
    two = panel[panel["t"].isin([2, 3])].assign(g=lambda d: np.where(d["g"] > 0, 3, 0))
    fit = aggte(att_gt(two, **KEYS_SIM, cluster="cl"), "simple")
    wide = two.pivot(index="id", columns="t", values="y")
    units = two.drop_duplicates("id").set_index("id").loc[wide.index]
    X = sm.add_constant((units["g"] > 0).astype(float).to_numpy())
    ols = sm.OLS((wide[3] - wide[2]).to_numpy(), X).fit(
        cov_type="cluster", cov_kwds={"groups": units["cl"].to_numpy(), "use_correction": False})
    assert fit.overall.estimate == pytest.approx(ols.params[1], rel=1e-12)
    assert fit.overall.se == pytest.approx(ols.bse[1], rel=1e-10)


def test_unequal_clusters_bootstrap_and_pretest():
    panel, _ = _trusts_and_singletons(seed=11)
    analytic = att_gt(panel, **KEYS_SIM, cluster="cl")
    draws = 4000
    boot = att_gt(panel, **KEYS_SIM, cluster="cl", bootstrap=draws, seed=2)
    np.testing.assert_allclose(boot.group_time["se"], analytic.group_time["se"], rtol=_mc_rel_tol(draws))
    agg_b = aggte(analytic, "simple", bootstrap=draws, seed=3)
    assert agg_b.overall.se == pytest.approx(aggte(analytic, "simple").overall.se, rel=_mc_rel_tol(draws))
    # the pre-test uses the clustered V = S'S/n
    pre = analytic.details["pretest"]
    gt = analytic.group_time
    idx = np.flatnonzero(gt["g"].to_numpy() > gt["t"].to_numpy())
    cl = panel.drop_duplicates("id").sort_values("id")["cl"].to_numpy()
    S = pd.DataFrame(analytic.influence[:, idx]).groupby(cl).sum().to_numpy()
    n = analytic.influence.shape[0]
    b = gt["estimate"].to_numpy()[idx]
    W = n * b @ np.linalg.solve(S.T @ S / n, b)
    assert pre["W"] == pytest.approx(W, rel=1e-10) and pre["df"] == len(idx)
    assert pre["n_clusters"] == analytic.n_clusters


# ------------------------------------------------------------------------------------------
# Simulated staggered adoption with a known heterogeneous effect
# ------------------------------------------------------------------------------------------


def _simulate(n=3000, periods=8, seed=2024):
    """Parallel trends hold conditional on x (trend gamma_t * x); x differs across cohorts.

    True effect: tau(g, t) = scale_g * (1 + 0.5 (t - g)) for t >= g, 0 before.
    """
    rng = np.random.default_rng(seed)
    cohorts = np.array([0, 3, 5, 7])
    g = rng.choice(cohorts, size=n, p=[0.4, 0.2, 0.2, 0.2])
    x = rng.normal(size=n) + 0.5 * (g > 0) + 0.1 * g
    alpha = rng.normal(size=n) + x
    t = np.arange(1, periods + 1)
    scale = {3: 1.0, 5: 2.0, 7: -0.5}
    tau = np.array([[scale.get(gi, 0.0) * (1 + 0.5 * (tt - gi)) if gi and tt >= gi else 0.0 for tt in t] for gi in g])
    y = alpha[:, None] + 0.3 * t[None, :] + 0.4 * t[None, :] * x[:, None] + tau + rng.normal(size=(n, periods))
    return pd.DataFrame({"id": np.repeat(np.arange(n), periods), "t": np.tile(t, n), "g": np.repeat(g, periods),
                         "x": np.repeat(x, periods), "y": y.ravel(), "tau": tau.ravel()})


def test_recovers_known_heterogeneous_effects():
    sim = _simulate()
    truth = sim[sim["g"] > 0].groupby(["g", "t"])["tau"].mean()
    for method in ("dr", "ipw", "reg"):
        fit = att_gt(sim, y="y", unit="id", time="t", cohort="g", covariates=["x"], method=method)
        gt = fit.group_time.set_index(["g", "t"])
        z = (gt["estimate"] - truth.reindex(gt.index)) / gt["se"]
        assert np.all(np.abs(z) < 4), (method, z[np.abs(z) >= 4])
        dyn = aggte(fit, "dynamic")
        assert dyn.overall.se > 0
    # the conditional design matters: ignoring x biases the estimates far beyond their SEs
    naive = att_gt(sim, y="y", unit="id", time="t", cohort="g")
    gt = naive.group_time.set_index(["g", "t"])
    z = (gt["estimate"] - truth.reindex(gt.index)) / gt["se"]
    assert np.max(np.abs(z)) > 10
    # overall simple ATT: post-treatment cells weighted by cohort size
    fit = att_gt(sim, y="y", unit="id", time="t", cohort="g", covariates=["x"])
    simple = aggte(fit, "simple").overall
    post = sim[(sim["g"] > 0) & (sim["t"] >= sim["g"])]
    assert abs(simple.estimate - post["tau"].mean()) < 4 * simple.se


# ------------------------------------------------------------------------------------------
# The 2x2 estimators with covariates (not in the R reference files): independent checks
# ------------------------------------------------------------------------------------------


def _two_by_two(n=400, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    D = (rng.uniform(size=n) < 1 / (1 + np.exp(-(0.3 + x @ [0.8, -0.5])))).astype(float)
    dy = 1.0 + x @ [0.5, 0.3] + 0.7 * D + rng.normal(size=n)
    return dy, D, np.column_stack([np.ones(n), x]), rng.uniform(0.5, 2.0, n)


@pytest.mark.parametrize("name", ["drdid_panel", "std_ipw_did_panel", "reg_did_panel"])
def test_influence_function_is_the_empirical_influence_function(name):
    """psi_i = w_i IF(z_i), and with sum(w) = n, d att / d w_i = IF(z_i) / n (Gateaux derivative
    towards unit i): so psi_i = n w_i d att / d w_i, which checks every estimation-effect term."""
    from evaluation.estimators import callaway_santanna as cs

    estimator = getattr(cs, name)
    dy, D, X, w = _two_by_two()
    w = w / w.mean()
    n = len(D)
    att, psi = estimator(dy, D, X, w)
    assert abs(psi.mean()) < 1e-10  # influence functions are centred
    h = 1e-6
    for i in (0, 7, 123, 399):
        up, down = w.copy(), w.copy()
        up[i] += h
        down[i] -= h
        deriv = (estimator(dy, D, X, up)[0] - estimator(dy, D, X, down)[0]) / (2 * h)
        roundoff = n * w[i] * 10 * np.finfo(float).eps / h  # central difference, |att| ~ 1
        assert n * w[i] * deriv == pytest.approx(psi[i], rel=1e-5, abs=roundoff)


def test_dr_and_ipw_point_estimates_match_statsmodels():
    import statsmodels.api as sm

    from evaluation.estimators.callaway_santanna import drdid_panel, std_ipw_did_panel

    dy, D, X, w = _two_by_two()
    ps = sm.GLM(D, X, family=sm.families.Binomial(), freq_weights=w).fit(tol=1e-12).fittedvalues
    beta = sm.WLS(dy[D == 0], X[D == 0], weights=w[D == 0]).fit().params
    odds = w * ps * (1 - D) / (1 - ps)
    resid = dy - X @ beta
    dr = np.sum(w * D * resid) / np.sum(w * D) - np.sum(odds * resid) / np.sum(odds)
    ipw = np.sum(w * D * dy) / np.sum(w * D) - np.sum(odds * dy) / np.sum(odds)
    assert drdid_panel(dy, D, X, w)[0] == pytest.approx(dr, abs=1e-10)
    assert std_ipw_did_panel(dy, D, X, w)[0] == pytest.approx(ipw, abs=1e-10)


# ------------------------------------------------------------------------------------------
# Pre-optimisation numbers (issue 15, item 5) and the vectorised paths against the per-cell ones
# ------------------------------------------------------------------------------------------


def _hard_panel(seed=20261130, n=600, periods=9, drop=0.08, balanced=False):
    """Staggered cohorts 3, 4, 6, 8 and 12 (after the last period: never treated) plus never
    treated; unit weights exp(N(0, 0.25)); 39 clusters of 1 to 30 units with cluster-year
    shocks; unit ids 7, 10, 13, ...; an unbalanced version drops 8% of the rows at random."""
    rng = np.random.default_rng(seed)
    cohorts = np.array([0, 3, 4, 6, 8, 12])
    g = rng.choice(cohorts, size=n, p=[0.3, 0.15, 0.15, 0.15, 0.15, 0.1])
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(rng.integers(1, 31)))
    cl = rng.permutation(np.repeat(np.arange(len(sizes)), sizes)[:n])
    w = np.exp(rng.normal(scale=0.5, size=n))
    x = rng.normal(size=n) + 0.2 * (g > 0)
    alpha = rng.normal(size=n)
    t = np.arange(1, periods + 1)
    eff = np.where((g[:, None] > 0) & (t[None, :] >= g[:, None]), 0.5 + 0.2 * (t[None, :] - g[:, None]), 0.0)
    shock = rng.normal(size=(len(sizes), periods))
    y = alpha[:, None] + 0.3 * t + 0.2 * t * x[:, None] + shock[cl] + eff + rng.normal(size=(n, periods))
    df = pd.DataFrame({"id": np.repeat(np.arange(n) * 3 + 7, periods), "t": np.tile(t, n),
                       "g": np.repeat(g, periods), "w": np.repeat(w, periods), "cl": np.repeat(cl, periods),
                       "x": np.repeat(x, periods) + 0.1 * rng.normal(size=n * periods), "y": y.ravel()})
    if not balanced:
        df = df[rng.uniform(size=len(df)) > drop].reset_index(drop=True)
    return df


HARD_SCENARIOS = {
    "unbalanced_never_varying": (False, dict(control="never", base_period="varying")),
    "balanced_notyet_universal": (True, dict(control="notyet", base_period="universal", method="dr")),
}

# Computed by the code before the issue 15 (item 5) rewrite (per-cell 2x2 estimators, dense
# influence matrix, R-style aggregation loops): (g, t, ATT, SE) per cell; per aggregation
# (overall ATT, overall SE, [(egt, ATT, SE), ...]); and the pre-test statistic.
HARD_EXPECTED = {
    "unbalanced_never_varying": {
        "gt": [
            (3, 2, -0.2808560599377782, 0.2184788368424151),
            (3, 3, 0.4672319243450199, 0.31573910403097794),
            (3, 4, 0.7702127882767658, 0.31722133941003455),
            (3, 5, 1.0965909106761695, 0.24871685411910055),
            (3, 6, 1.7101252550006767, 0.27245469257723715),
            (3, 7, 1.0797204502167974, 0.3308746517165396),
            (3, 8, 1.826364274008116, 0.3676112741934088),
            (3, 9, 1.991897849557399, 0.2723350007702166),
            (4, 2, 0.031498070171374154, 0.24410670148035313),
            (4, 3, -0.05438946412879353, 0.24839655057051752),
            (4, 4, 0.8325660314309452, 0.3075731730264789),
            (4, 5, 0.8262422459593873, 0.31193351998906477),
            (4, 6, 0.9537102354264498, 0.2509806860699531),
            (4, 7, 0.9894757204206979, 0.3597642059099359),
            (4, 8, 1.9668654304163147, 0.34112827852658106),
            (4, 9, 1.7566026419232539, 0.3843991010569265),
            (6, 2, -0.18053532339279998, 0.17356198244649768),
            (6, 3, 0.301149792550803, 0.22529084499667457),
            (6, 4, -0.4338540832692501, 0.28584315682340866),
            (6, 5, 0.29232307590580264, 0.20878739950613365),
            (6, 6, 0.879940249475808, 0.2941761731822233),
            (6, 7, 1.077791606437871, 0.31922518118044596),
            (6, 8, 1.366403901697886, 0.2384521150340093),
            (6, 9, 1.540794881458606, 0.3012117011586764),
            (8, 2, -0.39959451690514414, 0.25168245521998933),
            (8, 3, -0.0982588227544704, 0.25396096717080807),
            (8, 4, 0.3786603259380027, 0.3433370574602809),
            (8, 5, 0.14312435942603852, 0.26304061003134294),
            (8, 6, 0.04951943952893334, 0.3477923023428014),
            (8, 7, -0.15256454813534281, 0.3280127816289596),
            (8, 8, 0.9508498126887663, 0.2999956160740296),
            (8, 9, 1.1763423248452418, 0.2675045887933355),
        ],
        "simple": (1.2198952982855653, 0.12851873088600524, [
        ]),
        "group": (1.190934921341782, 0.12147190669888165, [
            (3, 1.277449064582992, 0.21913363918848106),
            (4, 1.2209103842628415, 0.26955701471969196),
            (6, 1.2162326597675426, 0.2065983253204273),
            (8, 1.063596068767004, 0.24034898643811956),
        ]),
        "dynamic": (1.3779678417883232, 0.1392197005934848, [
            (-6, -0.39959451690514414, 0.25168245521998933),
            (-5, -0.0982588227544704, 0.25396096717080807),
            (-4, 0.10513144378947263, 0.20406425575911546),
            (-3, 0.22042202818541012, 0.16042722012577032),
            (-2, -0.10607801646809753, 0.13935220396028747),
            (-1, -0.040511678490469515, 0.13683939666932046),
            (0, 0.8002186780992556, 0.15281512786392942),
            (1, 0.9663321395732107, 0.1311484151715184),
            (2, 1.1289903830013928, 0.15097758001757633),
            (3, 1.368505528546725, 0.19107183401221062),
            (4, 1.604752520446856, 0.2333993559156561),
            (5, 1.7850777932934243, 0.25710000768431),
            (6, 1.991897849557399, 0.2723350007702166),
        ]),
        "calendar": (1.0748099454150373, 0.12172642076251565, [
            (3, 0.4672319243450199, 0.31573910403097794),
            (4, 0.8071148201537138, 0.25258683505588125),
            (5, 0.9365925763697952, 0.23488515186520742),
            (6, 1.1362122201062008, 0.18161465681161174),
            (7, 1.043302389855773, 0.23196479786486915),
            (8, 1.5304725951790497, 0.17995037166144473),
            (9, 1.602743091895709, 0.1875360842520558),
        ]),
        "pretest_W": 14.849272461871461,
    },
    "balanced_notyet_universal": {
        "gt": [
            (3, 1, 0.13537252368598776, 0.15400360796210572),
            (3, 2, 0.0, np.nan),
            (3, 3, 0.5869500601258647, 0.2036665049513289),
            (3, 4, 0.7939971092123455, 0.26340213735011414),
            (3, 5, 1.1059931428591667, 0.20545404771862852),
            (3, 6, 1.753478217374274, 0.23419591096032102),
            (3, 7, 1.273241507930023, 0.25550250773794647),
            (3, 8, 1.7990574511992623, 0.3226425365380403),
            (3, 9, 2.0416289974400916, 0.24748602265237565),
            (4, 1, -0.0788233017761174, 0.25461396433891736),
            (4, 2, -0.04426889824227292, 0.20362315567369385),
            (4, 3, 0.0, np.nan),
            (4, 4, 0.7158376333482425, 0.2497051796405874),
            (4, 5, 0.7450067293656792, 0.26316682226224825),
            (4, 6, 0.8641764027557625, 0.19066199082833066),
            (4, 7, 0.8717293887567995, 0.3277813465239669),
            (4, 8, 1.9027444989448916, 0.33524542293309023),
            (4, 9, 1.6236438262581963, 0.3618110985029477),
            (6, 1, -0.14025067550503292, 0.22196075620979036),
            (6, 2, -0.07035922650387262, 0.21514152281953197),
            (6, 3, 0.2959108402608061, 0.22021816881156983),
            (6, 4, -0.2825455207551007, 0.18640383920783793),
            (6, 5, 0.0, np.nan),
            (6, 6, 0.8579455343125347, 0.3014301090683678),
            (6, 7, 1.0767423836810588, 0.2524704803006548),
            (6, 8, 1.2617984996746427, 0.22965073301198718),
            (6, 9, 1.4065985400460832, 0.26311978096221006),
            (8, 1, 0.11168720991497702, 0.3597207380892838),
            (8, 2, -0.2599884617502679, 0.28385717568772156),
            (8, 3, -0.3127013881624199, 0.2880754093117805),
            (8, 4, -0.08893477301335322, 0.29771434849262546),
            (8, 5, -0.04722528368363794, 0.3228671368910128),
            (8, 6, 0.2130983528530627, 0.3034318384152859),
            (8, 7, 0.0, np.nan),
            (8, 8, 0.856634429683879, 0.28505216525533916),
            (8, 9, 1.1114561870206159, 0.2506250697115632),
        ],
        "simple": (1.1774759679424052, 0.11866691706073736, [
        ]),
        "group": (1.1368513883049762, 0.11417304876192491, [
            (3, 1.3363352123058612, 0.16621697122717874),
            (4, 1.1205230799049286, 0.23513992534830294),
            (6, 1.1507712394285798, 0.18715270205233664),
            (8, 0.9840453083522475, 0.2336373772110558),
        ]),
        "dynamic": (1.346358984658573, 0.12847789919789862, [
            (-7, 0.11168720991497702, 0.3597207380892838),
            (-6, -0.2599884617502679, 0.28385717568772156),
            (-5, -0.22834763699260707, 0.17674079086410807),
            (-4, -0.07984859990360764, 0.19542697656222968),
            (-3, 0.04679951644255814, 0.1542892230360582),
            (-2, -0.00024770330363219073, 0.12413652905131528),
            (-1, 0.0, np.nan),
            (0, 0.7605973688552206, 0.13204282350406069),
            (1, 0.9303258908258633, 0.11149910846372305),
            (2, 1.0615373237184897, 0.13377885211600576),
            (3, 1.2893841971305537, 0.17337065846781308),
            (4, 1.6457953361827844, 0.20631125336475648),
            (5, 1.6952437784570074, 0.24290423597777036),
            (6, 2.0416289974400916, 0.2474860226523756),
        ]),
        "calendar": (1.0516875911460644, 0.11247320130068397, [
            (3, 0.5869500601258647, 0.2036665049513289),
            (4, 0.7477405983410363, 0.21353071398096327),
            (5, 0.8923533790870886, 0.20943013431873914),
            (6, 1.105308676791219, 0.16652960180176696),
            (7, 1.0491907654354375, 0.18688831785693352),
            (8, 1.4561873565313814, 0.18139932099633313),
            (9, 1.5240823017104224, 0.1791211089502283),
        ]),
        "pretest_W": 13.934679523269054,
    },
}


def _close(actual, expected, what, atol=1e-12):
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    assert actual.shape == expected.shape, what
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg=what)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol, equal_nan=True, err_msg=what)


@pytest.mark.parametrize("scenario", sorted(HARD_SCENARIOS))
def test_hard_panel_matches_pre_optimisation_numbers(scenario):
    """Unbalanced / balanced, unit weights, 39 clusters of 1-30 units, a cohort after the last
    period: every ATT(g,t), SE, aggregate and pre-test as before the rewrite, to 1e-12."""
    balanced, options = HARD_SCENARIOS[scenario]
    expected = HARD_EXPECTED[scenario]
    fit = att_gt(_hard_panel(balanced=balanced), **KEYS_SIM, weights="w", cluster="cl", **options)
    assert fit.n_clusters == 39 and fit.details["balanced"] is balanced
    gt = fit.group_time
    ref = np.array(expected["gt"], dtype=float)
    _close(gt[["g", "t"]].to_numpy(), ref[:, :2], "cells", atol=0)
    _close(gt["estimate"], ref[:, 2], "ATT(g,t)")
    _close(gt["se"], ref[:, 3], "SE(g,t)")
    for kind in ("simple", "group", "dynamic", "calendar"):
        agg = aggte(fit, kind)
        overall, overall_se, rows = expected[kind]
        _close([agg.overall.estimate, agg.overall.se], [overall, overall_se], f"{kind} overall")
        rows = np.array(rows, dtype=float).reshape(-1, 3)
        _close(agg.egt[["egt", "estimate", "se"]].to_numpy(), rows, f"{kind} by egt")
    assert fit.details["pretest"]["W"] == pytest.approx(expected["pretest_W"], rel=1e-10)


def _dense_aggregate_reference(fit, kind):
    """aggte's influence functions the slow way: dense psi[:, idx] @ weights + wif @ ATT."""
    from evaluation.estimators.callaway_santanna import _weight_if

    gt = fit.group_time
    att, group, t = gt["estimate"].to_numpy(), gt["g"].to_numpy(), gt["t"].to_numpy()
    psi, G, w = fit.influence, fit.unit_cohort, fit.unit_weight
    glist = np.unique(group)
    pgg = np.array([np.mean(w * (G == g)) for g in glist])
    pg = pgg[np.searchsorted(glist, group)]
    post = group <= t

    def part(idx, with_wif=True):
        out = psi[:, idx] @ (pg[idx] / pg[idx].sum())
        return out + _weight_if(group[idx], pg[idx], w, G) @ att[idx] if with_wif else out

    if kind == "simple":
        return np.column_stack([part(np.flatnonzero(post))])
    if kind == "group":
        cols = [part(np.flatnonzero((group == g) & post), False) for g in glist]
        est = np.array([att[(group == g) & post].mean() for g in glist])
        overall = np.column_stack(cols) @ (pgg / pgg.sum()) + _weight_if(glist, pgg, w, G) @ est
        return np.column_stack(cols + [overall])
    if kind == "dynamic":
        e_all = t - group
        cols = [part(np.flatnonzero(e_all == e)) for e in np.unique(e_all)]
        keep = np.unique(e_all) >= 0
        return np.column_stack(cols + [np.column_stack(cols)[:, keep].mean(axis=1)])
    cols = [part(np.flatnonzero((t == t1) & post)) for t1 in np.unique(t[post])]
    return np.column_stack(cols + [np.column_stack(cols).mean(axis=1)])


@pytest.mark.parametrize("case", ["unbalanced", "balanced_notyet", "covariate_ipw", "mpdta"])
def test_aggregation_influence_matches_dense_reference(case, mpdta):
    """The cohort-block aggregation (and the path that rebuilds blocks from a replaced dense
    matrix) equals the dense R-style computation to 1e-12 relative, for every aggregation."""
    if case == "mpdta":
        fit = att_gt(mpdta, **KEYS)
    else:
        panel = _hard_panel(balanced=case != "unbalanced")
        options = {"balanced_notyet": dict(control="notyet"),
                   "covariate_ipw": dict(covariates=["x"], method="ipw")}.get(case, {})
        fit = att_gt(panel, **KEYS_SIM, weights="w", cluster="cl", **options)
    replaced = dataclasses.replace(fit)
    replaced.influence = fit.influence.copy()  # detaches the blocks: aggte rebuilds them
    assert replaced._psi is None and fit._psi is not None
    for kind in ("simple", "group", "dynamic", "calendar"):
        ref = _dense_aggregate_reference(fit, kind)
        scale = np.abs(ref).max()
        for res in (fit, replaced):
            agg = aggte(res, kind)
            np.testing.assert_allclose(agg.influence / scale, ref / scale, rtol=0, atol=1e-12)
        se = np.sqrt(pd.DataFrame(ref).groupby(fit.unit_cluster).sum().pow(2).sum().to_numpy()) / len(ref)
        np.testing.assert_allclose(np.r_[agg.egt["se"].to_numpy(), agg.overall.se], se, rtol=1e-12)


def _tiny_comparison_panel():
    """Three lightly weighted never-treated units: for many cells the treated share of the
    weight exceeds 0.99, so those go through the per-cell estimators (with dr/ipw trimming)
    and the others through the cohort sums, in one fit."""
    panel = _hard_panel(balanced=True)
    panel = panel[panel["g"] != 12]
    never = panel.loc[panel["g"] == 0, "id"].unique()[:3]
    panel = panel[(panel["g"] != 0) | panel["id"].isin(never)].copy()
    panel.loc[panel["g"] == 0, "w"] *= 0.05
    return panel


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # trimmed dr/ipw cells: 0/0, as before
@pytest.mark.parametrize("method", ["dr", "ipw", "reg"])
@pytest.mark.parametrize("control", ["never", "notyet"])
@pytest.mark.parametrize("design", ["hard", "tiny_comparison"])
def test_vectorised_cells_equal_per_cell_estimators(method, control, design):
    """Balanced panel without covariates: every ATT(g,t) and influence column from the
    cohort-sum path equals DRDID's 2x2 estimator run on the cell (weights, clusters)."""
    from evaluation.estimators import callaway_santanna as cs

    panel = _hard_panel(balanced=True) if design == "hard" else _tiny_comparison_panel()
    fit = att_gt(panel, **KEYS_SIM, weights="w", cluster="cl", control=control, method=method)
    p = cs._prepare(panel, "y", "id", "t", "g", None, "cl", "w", True)
    groups = cs._treated_groups(p, control, 0, [])
    cells = cs._gt_cells(p.periods, groups, "varying", 0)
    assert len(cells) == len(fit.group_time)
    psi = fit.influence
    for k, (g, cur, base) in enumerate(cells):
        att, col = cs._att_cell_panel(p, g, cur, base, control, method, 0)
        _close(fit.group_time["estimate"].iloc[k], att, f"ATT({g}, {cur})")
        _close(psi[:, k], col, f"psi({g}, {cur})", atol=1e-12 * max(1.0, np.nanmax(np.abs(col))))


def test_row_order_and_lazy_influence():
    """Rows in any order give the same fit as the sorted n x T layout; the dense influence
    matrix is built on first access and agrees with the blocks."""
    panel = _hard_panel(balanced=True)
    fit = att_gt(panel, **KEYS_SIM, weights="w", cluster="cl")
    shuffled = panel.sample(frac=1.0, random_state=3)
    other = att_gt(shuffled, **KEYS_SIM, weights="w", cluster="cl")
    pd.testing.assert_frame_equal(fit.group_time, other.group_time, rtol=1e-12, atol=1e-12)
    assert "_influence" not in fit.__dict__ or fit.__dict__["_influence"] is None
    dense = fit.influence
    assert fit.influence is dense and dense.shape == (600, len(fit.group_time))
    np.testing.assert_allclose(dense, other.influence, rtol=0, atol=1e-12 * np.abs(dense).max())
    for kind in ("simple", "dynamic"):
        a, b = aggte(fit, kind), aggte(other, kind)
        assert a.overall.estimate == pytest.approx(b.overall.estimate, abs=1e-12)
        assert a.overall.se == pytest.approx(b.overall.se, abs=1e-12)
    bad = panel.assign(w=np.where((panel["id"] == 10) & (panel["t"] == 4), 9.0, panel["w"]))
    with pytest.raises(InputError, match="weights must be constant within each unit.*10"):
        att_gt(bad, **KEYS_SIM, weights="w")
