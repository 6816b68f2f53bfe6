"""BJS (2024) imputation estimator: exact equivalences, simulated truth, base_stagg, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

from evaluation.errors import InputError
from evaluation.estimators.imputation import imputation_did

DATA = Path(__file__).parent / "data"


def simulate(seed=0, n_units=120, T=8, cohorts=(3, 5, 7, 0), effect="het", covariate=False,
             anticipation=0.0):
    """Staggered panel; cohort 0 = never treated. 'het': tau_it = 1 + 0.5 (t - g) + cohort
    shift; 'hom': tau = 2."""
    rng = np.random.default_rng(seed)
    g_unit = rng.choice(cohorts, size=n_units)
    unit = np.repeat(np.arange(n_units), T)
    t = np.tile(np.arange(1, T + 1), n_units)
    g = g_unit[unit].astype(float)
    d = (g > 0) & (t >= g)
    K = t - g
    if effect == "hom":
        tau = np.where(d, 2.0, 0.0)
    else:
        tau = np.where(d, 1.0 + 0.5 * K + 0.1 * g, 0.0)
    x = rng.normal(size=n_units * T) + 0.3 * g / T
    y = (rng.normal(size=n_units)[unit] + 0.4 * t + rng.normal(size=T)[t - 1] + tau
         + rng.normal(size=n_units * T) + (0.7 * x if covariate else 0.0)
         + anticipation * ((g > 0) & (K == -1)))
    return pd.DataFrame({"unit": unit, "t": t, "g": g, "y": y, "x": x, "tau": tau,
                         "w": rng.uniform(0.5, 2.0, size=n_units)[unit],
                         "state": (unit % 30)})


def explicit_imputation(df, covariates=(), weights=None, cluster="unit", leave_out=True):
    """Dense reference: dummies regression on untreated rows, imputation, pinv weights and the
    did_imputation variance written with pandas group-bys."""
    df = df.reset_index(drop=True)
    om = df[weights].to_numpy(float) if weights else np.ones(len(df))
    K = df["t"] - df["g"]
    treated = ((df["g"] > 0) & (K >= 0)).to_numpy()
    Z = np.column_stack([pd.get_dummies(df["unit"]).to_numpy(float),
                         pd.get_dummies(df["t"]).to_numpy(float)[:, 1:]]
                        + [df[c].to_numpy(float) for c in covariates])
    Z0, Z1 = Z[~treated], Z[treated]
    om0, om1 = om[~treated], om[treated]
    y = df["y"].to_numpy(float)
    beta = np.linalg.lstsq(Z0 * np.sqrt(om0)[:, None], y[~treated] * np.sqrt(om0), rcond=None)[0]
    tau = y[treated] - Z1 @ beta
    resid0 = y[~treated] - Z0 @ beta
    K1 = K[treated].to_numpy()
    hs = np.unique(K1)
    W = np.column_stack([np.ones(len(K1))] + [(K1 == h).astype(float) for h in hs])
    W = W / (om1[:, None] * W).sum(axis=0)
    est = (om1[:, None] * W * tau[:, None]).sum(axis=0)
    M = np.linalg.pinv(Z0.T @ (Z0 * om0[:, None]))
    V0 = -Z0 @ M @ Z1.T @ (om1[:, None] * W)
    tr = df[treated].assign(tau=tau)
    eps = []
    for j in range(W.shape[1]):
        tr = tr.assign(wv=om1 * W[:, j])
        tr["cw"] = tr.groupby([cluster, "g", "t"])["wv"].transform("sum")
        tr["cwwv"] = tr["cw"] * tr["wv"]
        tr["denom"] = tr.groupby(["g", "t"])["cwwv"].transform("sum")
        share = np.where(tr["denom"] > 0, tr["cwwv"] / tr["denom"].where(tr["denom"] > 0, 1), 0)
        tr["st"] = share * tr["tau"]
        r1 = tr["tau"] - tr.groupby(["g", "t"])["st"].transform("sum")
        if leave_out:
            r1 = np.where(tr["denom"] > 0, r1 * tr["denom"] / (tr["denom"] - tr["cw"] ** 2), r1)
        contrib = pd.concat([pd.Series(tr["wv"].to_numpy() * np.asarray(r1), index=tr[cluster].to_numpy()),
                             pd.Series(om0 * V0[:, j] * resid0,
                                       index=df.loc[~treated, cluster].to_numpy())])
        eps.append(contrib.groupby(level=0).sum())
    E = pd.concat(eps, axis=1).to_numpy()
    return est, np.sqrt(np.diag(E.T @ E)), hs


@pytest.mark.parametrize("covariates,weights,cluster", [((), None, None), (("x",), "w", None),
                                                         (("x",), None, "state")])
def test_matches_explicit_dummy_computation(covariates, weights, cluster):
    df = simulate(1, n_units=60, covariate=bool(covariates))
    df = df.drop(index=df.index[[5, 17, 200]])  # unbalanced
    res = imputation_did(df, y="y", unit="unit", time="t", cohort="g", covariates=covariates,
                         weights=weights, cluster=cluster)
    est, se, hs = explicit_imputation(df, covariates, weights, cluster or "unit")
    assert res.overall.estimate == pytest.approx(est[0], abs=1e-10)
    np.testing.assert_allclose(res.event_time["e"], hs)
    np.testing.assert_allclose(res.event_time["estimate"], est[1:], atol=1e-10)
    np.testing.assert_allclose(res.overall.se, se[0], rtol=1e-9)
    np.testing.assert_allclose(res.event_time["se"], se[1:], rtol=1e-9)
    assert res.details["linear_weights_check"] < 1e-9


def test_non_leave_out_matches_explicit():
    df = simulate(2, n_units=50)
    res = imputation_did(df, y="y", unit="unit", time="t", cohort="g", leave_out=False)
    est, se, _ = explicit_imputation(df, leave_out=False)
    np.testing.assert_allclose(res.overall.se, se[0], rtol=1e-9)
    np.testing.assert_allclose(res.event_time["se"], se[1:], rtol=1e-9)
    res_lo = imputation_did(df, y="y", unit="unit", time="t", cohort="g")
    assert res_lo.overall.se > res.overall.se  # leave-out inflates the residuals


def test_equals_saturated_twfe_with_treated_dummies():
    """BJS (2024) Theorem 1 / its regression form: OLS of Y on unit and period FE and one
    dummy per treated observation gives the dummies = tau_it; unbalanced, with covariate."""
    df = simulate(3, n_units=40, covariate=True).drop(index=[3, 50, 51]).reset_index(drop=True)
    treated = ((df["g"] > 0) & (df["t"] >= df["g"])).to_numpy()
    dummies = np.eye(len(df))[:, treated]
    Z = np.column_stack([pd.get_dummies(df["unit"]).to_numpy(float),
                         pd.get_dummies(df["t"]).to_numpy(float)[:, 1:], df["x"], dummies])
    coef = np.linalg.lstsq(Z, df["y"].to_numpy(), rcond=None)[0]
    tau = coef[-treated.sum():]
    res = imputation_did(df, y="y", unit="unit", time="t", cohort="g", covariates=["x"])
    assert res.overall.estimate == pytest.approx(tau.mean(), abs=1e-10)


def test_balanced_equals_cohort_by_period_interacted_twfe():
    """Balanced panel, no covariates: TWFE with a dummy per treated cohort x period cell
    leaves the cohort and period effects to the untreated cells, so the cell-size-weighted
    average of its interaction coefficients equals the imputation ATT exactly."""
    df = simulate(4, n_units=80, effect="hom")
    treated = (df["g"] > 0) & (df["t"] >= df["g"])
    cells = pd.get_dummies(df["g"].astype(int).astype(str) + "_" + df["t"].astype(str))
    cells = cells.loc[:, [c for c in cells.columns if treated[cells[c].astype(bool)].all()]]
    Z = np.column_stack([pd.get_dummies(df["unit"]).to_numpy(float),
                         pd.get_dummies(df["t"]).to_numpy(float)[:, 1:], cells.to_numpy(float)])
    coef = np.linalg.lstsq(Z, df["y"].to_numpy(), rcond=None)[0]
    tau_cell = coef[-cells.shape[1]:]
    sizes = cells.sum(axis=0).to_numpy(float)
    res = imputation_did(df, y="y", unit="unit", time="t", cohort="g")
    assert res.overall.estimate == pytest.approx((tau_cell * sizes).sum() / sizes.sum(), abs=1e-10)


@pytest.mark.parametrize("effect", ["hom", "het"])
def test_recovers_true_att_in_simulation(effect):
    """One large draw: estimates within 4 SE of the realised ATT (Bonferroni over all
    horizons at 0.1%); the conservative SE is not smaller than the true sampling SD."""
    df = simulate(5, n_units=2000, effect=effect)
    res = imputation_did(df, y="y", unit="unit", time="t", cohort="g")
    tr = df[(df["g"] > 0) & (df["t"] >= df["g"])]
    truth_h = tr.groupby(tr["t"] - tr["g"])["tau"].mean()
    z = stats.norm.ppf(1 - 0.001 / (2 * (len(truth_h) + 1)))
    assert abs(res.overall.estimate - tr["tau"].mean()) < z * res.overall.se
    et = res.event_time.set_index("e")
    assert (np.abs(et["estimate"] - truth_h) < z * et["se"]).all()


def test_base_stagg_horizons_near_true_effects():
    df = pd.read_csv(DATA / "base_stagg.csv")
    df["cohort"] = df["year_treated"].where(df["year_treated"] < 10000, 0)
    res = imputation_did(df, y="y", unit="id", time="year", cohort="cohort", covariates=["x1"],
                         pretrend_leads=3)
    tr = df[(df["cohort"] > 0) & (df["year"] >= df["cohort"])]
    truth = tr.groupby(tr["year"] - tr["cohort"])["treatment_effect_true"].mean()
    et = res.event_time.set_index("e")
    np.testing.assert_allclose(et.index, truth.index)
    z = stats.norm.ppf(1 - 0.001 / (2 * len(truth)))  # Bonferroni, 0.1% family-wise
    assert (np.abs(et["estimate"] - truth) < z * et["se"]).all()
    assert abs(res.overall.estimate - tr["treatment_effect_true"].mean()) < z * res.overall.se
    # x1 enters the simulated outcome with coefficient 1 (fixest's base_stagg)
    assert abs(res.coefficients.loc["x1", "estimate"] - 1) < 4 * res.coefficients.loc["x1", "se"]
    assert res.details["pretrend_test"]["p_value"] > 0.001
    assert res.n_clusters == 95


def test_pretrend_leads_match_dummy_regression_and_detect_anticipation():
    df = simulate(6, n_units=150, anticipation=0.8)
    res = imputation_did(df, y="y", unit="unit", time="t", cohort="g", pretrend_leads=2)
    test = res.details["pretrend_test"]
    assert test["p_value"] < 1e-6 and test["df1"] == 2 and test["df2"] == 149
    # leads from an explicit dummies regression on untreated observations
    K = df["t"] - df["g"]
    un = ~((df["g"] > 0) & (K >= 0))
    d0 = df[un]
    leads = np.column_stack([((d0["g"] > 0) & (K[un] == -h)).to_numpy(float) for h in (1, 2)])
    Z = np.column_stack([leads, pd.get_dummies(d0["unit"]).to_numpy(float),
                         pd.get_dummies(d0["t"]).to_numpy(float)[:, 1:]])
    ols = sm.OLS(d0["y"].to_numpy(), Z).fit(cov_type="cluster",
                                            cov_kwds={"groups": d0["unit"].to_numpy()})
    lead_tab = res.coefficients.loc[["pre1", "pre2"]]
    np.testing.assert_allclose(lead_tab["estimate"], ols.params[:2], atol=1e-10)
    # same sandwich; statsmodels counts the nested unit dummies in K, reghdfe does not
    n, k_sm = len(d0), Z.shape[1]
    k_reghdfe = 2 + df["t"].nunique()
    ratio = np.sqrt((n - k_sm) / (n - k_reghdfe))
    np.testing.assert_allclose(lead_tab["se"], ols.bse[:2] * ratio, rtol=1e-8)
    # without anticipation the test does not reject at the 0.1% level
    calm = imputation_did(simulate(6, n_units=150), y="y", unit="unit", time="t", cohort="g",
                          pretrend_leads=2)
    assert calm.details["pretrend_test"]["p_value"] > 0.001


def test_result_conventions():
    df = simulate(7, n_units=60)
    res = imputation_did(df, y="y", unit="unit", time="t", cohort="g", horizons=[0, 2])
    assert list(res.event_time["e"]) == [0, 2]
    assert {"e", "estimate", "se", "ci_low", "ci_high", "p_value"} <= set(res.event_time.columns)
    assert "Theorem 3" in res.variance.kind and res.variance.cluster == "unit"
    assert res.n_obs == len(df) and res.n_units == 60
    d = res.to_dict()
    assert d["overall"]["estimate"] == res.overall.estimate


def test_always_treated_unit_is_named():
    df = simulate(8, n_units=30)
    df.loc[df["unit"] == 4, "g"] = 1.0  # treated from the first period
    with pytest.raises(InputError, match=r"no untreated observation.*\b4\b"):
        imputation_did(df, y="y", unit="unit", time="t", cohort="g")


def test_period_without_untreated_observations_is_named():
    df = simulate(9, n_units=30, cohorts=(3, 6))  # no never-treated units
    with pytest.raises(InputError, match=r"period\(s\) 6, 7, 8"):
        imputation_did(df, y="y", unit="unit", time="t", cohort="g")


def test_other_input_errors():
    df = simulate(10, n_units=30)
    with pytest.raises(InputError, match="outcome_typo"):
        imputation_did(df, y="outcome_typo", unit="unit", time="t", cohort="g")
    with pytest.raises(InputError, match="covariate_typo"):
        imputation_did(df, y="y", unit="unit", time="t", cohort="g", covariates=["covariate_typo"])
    with pytest.raises(InputError, match="event time"):
        imputation_did(df, y="y", unit="unit", time="t", cohort="g", horizons=[40])
    with pytest.raises(InputError, match="pretrend_leads=6"):
        imputation_did(df, y="y", unit="unit", time="t", cohort="g", pretrend_leads=6)
    single = simulate(11, n_units=30)
    cohort3 = single.loc[single["g"] == 3, "unit"].unique()
    single.loc[single["unit"].isin(cohort3[1:]), "g"] = 0.0  # cohort 3 keeps one unit
    with pytest.raises(InputError, match="at least two clusters"):
        imputation_did(single, y="y", unit="unit", time="t", cohort="g")
    res = imputation_did(single, y="y", unit="unit", time="t", cohort="g", leave_out=False)
    assert np.isfinite(res.overall.se)


@pytest.mark.slow
def test_coverage_monte_carlo():
    """Conservative variance: 95% CIs of the overall ATT cover the realised ATT in at least
    95% - 3 MC standard errors of 300 replications (heterogeneous effects)."""
    hits = 0
    reps = 300
    for r in range(reps):
        df = simulate(1000 + r, n_units=150)
        res = imputation_did(df, y="y", unit="unit", time="t", cohort="g")
        truth = df.loc[(df["g"] > 0) & (df["t"] >= df["g"]), "tau"].mean()
        hits += res.overall.ci_low <= truth <= res.overall.ci_high
    assert hits / reps >= 0.95 - 3 * np.sqrt(0.95 * 0.05 / reps)


@pytest.mark.slow
def test_scales_to_25k_units():
    rng = np.random.default_rng(0)
    n, T = 25_000, 15
    g_unit = rng.choice([0, 5, 8, 11], size=n)
    df = pd.DataFrame({"unit": np.repeat(np.arange(n), T), "t": np.tile(np.arange(1, T + 1), n)})
    df["g"] = g_unit[df["unit"]]
    df["y"] = rng.normal(size=len(df)) + ((df["g"] > 0) & (df["t"] >= df["g"]))
    res = imputation_did(df, y="y", unit="unit", time="t", cohort="g", pretrend_leads=3)
    assert abs(res.overall.estimate - 1) < 5 * res.overall.se
