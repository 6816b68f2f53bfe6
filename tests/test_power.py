"""Power and MDES of a matched DiD: the formula's identities, a printed textbook example,
the study-level ingredients, the CLI, and (slow) the formula against simulated panels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import linalg, stats

from evaluation.diagnostics.power import (anova_icc, change_variance, design_mdes, power_curve, semivariogram,
                                          study_power)

STUDIES = Path(__file__).parent.parent / "studies"


# ------------------------------------------------------------------------------ identities


@pytest.mark.parametrize("t_pre,t_post", [(1, 1), (1, 5), (4, 5), (3, 2)])
def test_change_variance_special_cases(t_pre, t_post):
    # no serial correlation: s^2 (1/T_pre + 1/T_post)
    assert change_variance(t_pre, t_post, variance=2.0) == pytest.approx(2.0 * (1 / t_pre + 1 / t_post))
    # constant correlation r (McKenzie 2012): s^2 (1 - r)(1/T_pre + 1/T_post)
    r = 0.6
    acf = [1.0] + [r] * (t_pre + t_post)
    assert change_variance(t_pre, t_post, autocorrelation=acf) == pytest.approx((1 - r) * (1 / t_pre + 1 / t_post))
    # AR(1) through the semivariogram g(k) = s^2 (1 - phi^k): the same number, s^2 cancels
    phi, s2 = 0.5, 3.0
    g = s2 * (1 - phi ** np.arange(t_pre + t_post))
    assert change_variance(t_pre, t_post, semivariogram_values=g) == pytest.approx(
        change_variance(t_pre, t_post, variance=s2, autocorrelation=phi))
    # a post-test alone (T_pre = 0) of one year: the outcome variance
    assert change_variance(0, 1, variance=s2) == pytest.approx(s2)


def test_equal_arms_give_bloom_formula_and_j_minus_2_df():
    J, n, rho, r2, P = 30, 12, 0.15, 0.4, 0.5
    d = design_mdes(var_change=1.0, cluster_sizes_treated=[n] * (J // 2), cluster_sizes_comparison=[n] * (J // 2),
                    icc=rho, r2=r2)
    assert d.df == pytest.approx(J - 2)
    m = stats.t.ppf(0.975, J - 2) + stats.t.ppf(0.8, J - 2)
    bloom = m * np.sqrt((1 - r2) / (P * (1 - P) * J) * (rho + (1 - rho) / n))
    assert d.mdes == pytest.approx(bloom, rel=1e-12)
    assert d.multiplier == pytest.approx(m)
    # "pooled" df is Bloom's J - 2 whatever the split
    un = design_mdes(var_change=1.0, cluster_sizes_treated=[n] * 6, cluster_sizes_comparison=[n] * 24, icc=rho,
                     df="pooled")
    assert un.df == 28


def test_textbook_powerup_cra2_and_ira_examples():
    # PowerUpR (Dong & Maynard 2013 formulas) documented cross-checks, cra2r2 and ira1r1 examples:
    # mdes.cra2r2(rho2=.17, n=15, J=20) -> .629; mdes.ira1r1(n=250) -> .356
    cra2 = design_mdes(var_change=1.0, cluster_sizes_treated=[15] * 10, cluster_sizes_comparison=[15] * 10, icc=0.17)
    assert round(cra2.mdes, 3) == 0.629
    assert round(float(cra2.power_at(0.629)), 2) == 0.80  # power.cra2r2(es=.629, ...) -> .80
    ira = design_mdes(var_change=1.0, cluster_sizes_treated=[1] * 125, cluster_sizes_comparison=[1] * 125)
    assert round(ira.mdes, 3) == 0.356


def test_power_curve():
    d = design_mdes(var_change=1.0, cluster_sizes_treated=[3] * 12, cluster_sizes_comparison=[1] * 100, icc=0.1)
    assert power_curve(0.0, se=d.se, df=d.df) == pytest.approx(0.05)
    # the conventional multiplier t_{a/2} + t_{power} gives close to, not exactly, 80%
    assert float(d.power_at(d.mdes)) == pytest.approx(0.8, abs=0.01)
    curve = d.power_at(np.linspace(0, 1, 11))
    assert np.all(np.diff(curve) > 0) and curve[-1] <= 1
    assert d.power_at(-d.mdes) == pytest.approx(d.power_at(d.mdes))
    # more clusters, smaller MDES; clustering (ICC) raises it
    more = design_mdes(var_change=1.0, cluster_sizes_treated=[3] * 24, cluster_sizes_comparison=[1] * 100, icc=0.1)
    none = design_mdes(var_change=1.0, cluster_sizes_treated=[3] * 12, cluster_sizes_comparison=[1] * 100, icc=0.0)
    assert more.mdes < d.mdes and none.mdes < d.mdes


def test_anova_icc_and_semivariogram():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(400), 5)
    x = rng.normal(0, np.sqrt(0.3), 400)[groups] + rng.normal(0, np.sqrt(0.7), len(groups))
    icc, info = anova_icc(x, groups)
    assert icc == pytest.approx(0.3, abs=0.05) and info["groups"] == 400
    assert anova_icc([1.0, 2.0, 3.0], ["a", "b", "c"])[0] == 0.0  # singletons: not identified
    # AR(1) phi = 0.5 plus a school effect: g(k) = 1 - phi^k
    n, T, phi = 4000, 12, 0.5
    e = np.zeros((n, T))
    e[:, 0] = rng.normal(size=n)
    for t in range(1, T):
        e[:, t] = phi * e[:, t - 1] + np.sqrt(1 - phi**2) * rng.normal(size=n)
    import pandas as pd

    g, _ = semivariogram(pd.DataFrame(e + rng.normal(0, 2, (n, 1))), 4)
    assert g == pytest.approx(1 - phi ** np.arange(5), abs=0.03)


# ------------------------------------------------------------------------------ study


def test_study_power_ingredients(small_store):
    from evaluation.data.panels import load_study_data
    from evaluation.study import load_study

    study = load_study(STUDIES / "federation_primary_ks2.toml")
    res = study_power(study, load_study_data(small_store, study))
    assert res.estimator == "callaway_santanna" and (res.t_pre, res.t_post) == (1, 5)
    assert res.schools_treated == sum(res.cluster_sizes) and res.clusters_treated == len(res.cluster_sizes)
    assert res.schools_comparison <= 3 * res.schools_treated
    assert 0 <= res.icc < 1 and -1 < res.serial_correlation < 1
    # the formula's variance of a school's change agrees with the pool's direct variance
    assert res.var_change == pytest.approx(res.var_change_direct, rel=0.15)
    assert res.sd == 48.0  # the generator's pupil-level SD, as evaluation.effects uses
    assert 0 < res.mdes < 1 and res.months >= 1
    assert res.power_at(res.mdes) == pytest.approx(0.8, abs=0.01)
    # the MDES is the design formula applied to these ingredients
    d = design_mdes(var_change=res.var_change, cluster_sizes_treated=res.cluster_sizes,
                    cluster_sizes_comparison=[1] * res.schools_comparison, icc=res.icc, icc_comparison=0.0,
                    sd=res.sd, hedges_j=True)
    assert d.mdes == pytest.approx(res.mdes)


def test_cli_power_text_json_and_exit_codes(run_cli, small_store, tmp_path):
    study = STUDIES / "tsa_members_primary_ks2.toml"
    code, out, err = run_cli("power", study, "--store", small_store.path, "--effect", "0.1", "0.2")
    assert code == 0, err
    assert "this study could detect an effect of" in out and "with 80% power" in out
    assert "Power to detect an effect of 0.10" in out and "ICC" in out
    code, out, err = run_cli("power", study, "--store", small_store.path, "--json", "--effect", "0.1")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["study_id"] == "tsa_members_primary_ks2" and doc["mdes"] > 0
    assert doc["power_at"][0]["effect"] == 0.1 and 0 < doc["power_at"][0]["power"] <= 1
    assert run_cli("power", tmp_path / "missing.toml", "--store", small_store.path)[0] == 2
    assert run_cli("power", study, "--store", tmp_path / "none.duckdb")[0] == 2
    code, _, err = run_cli("power", study, "--store", small_store.path, "--effect", "inf")
    assert code == 2 and "finite" in err
    with pytest.raises(SystemExit) as exc:  # argparse: not a number
        run_cli("power", study, "--effect", "abc")
    assert exc.value.code == 2
    bad = tmp_path / "bad.toml"
    bad.write_text((STUDIES / "tsa_members_primary_ks2.toml").read_text().replace("[2013, 2016]", "[2023, 2024]")
                   .replace('id = "tsa_members_primary_ks2"', 'id = "bad"'))
    code, _, err = run_cli("power", bad, "--store", small_store.path)
    assert code == 2 and "Traceback" not in err


# ------------------------------------------------------------------------------ simulation


def _simulate(sizes, n_c, icc, acf, t_pre, t_post, effect, reps, df, alpha, rng):
    """DiD of school means over post vs base years on simulated panels; returns estimates and
    rejections of the cluster-robust t test (CR1 by partnership; comparison schools alone)."""
    T = t_pre + t_post
    cov = linalg.toeplitz(acf[:T])
    L = np.linalg.cholesky(cov)
    sizes = np.asarray(sizes)
    n_t, J = sizes.sum(), len(sizes)
    cl = np.repeat(np.arange(J), sizes)
    a = np.concatenate([np.full(t_pre, -1 / t_pre), np.full(t_post, 1 / t_post)])
    w = rng.standard_normal((reps, J, T)) @ L.T
    u = rng.standard_normal((reps, n_t + n_c, T)) @ L.T
    e_t = np.sqrt(icc) * w[:, cl, :] + np.sqrt(1 - icc) * u[:, :n_t, :]
    d_t = e_t @ a + effect
    d_c = u[:, n_t:, :] @ a
    est = d_t.mean(axis=1) - d_c.mean(axis=1)
    dev = d_t - d_t.mean(axis=1, keepdims=True)
    sums = np.zeros((reps, J))
    np.add.at(sums, (slice(None), cl), dev)
    v_t = J / (J - 1) * (sums**2).sum(axis=1) / n_t**2
    v_c = d_c.var(axis=1, ddof=1) / n_c
    t = est / np.sqrt(v_t + v_c)
    return est, np.abs(t) > stats.t.ppf(1 - alpha / 2, df)


def _psd_acf(acf, T):
    """The estimated autocorrelations as a valid (positive-definite) correlation function."""
    cov = linalg.toeplitz(np.asarray(acf[:T]))
    vals, vecs = np.linalg.eigh(cov)
    if vals.min() > 1e-6:
        return np.asarray(acf[:T])
    fixed = (vecs * np.maximum(vals, 1e-3)) @ vecs.T
    d = np.sqrt(np.diag(fixed))
    fixed = fixed / np.outer(d, d)
    return np.array([np.mean(np.diag(fixed, k)) for k in range(T)])


def _check(sizes, n_c, icc, acf, t_pre, t_post, seed, reps=4000):
    rng = np.random.default_rng(seed)
    var_change = change_variance(t_pre, t_post, autocorrelation=acf)
    d = design_mdes(var_change=var_change, cluster_sizes_treated=sizes, cluster_sizes_comparison=[1] * n_c,
                    icc=icc, icc_comparison=0.0)
    est, _ = _simulate(sizes, n_c, icc, acf, t_pre, t_post, 0.0, reps, d.df, 0.05, rng)
    sd = est.std(ddof=1)
    # the sample SD of R normal draws has relative SE 1 / sqrt(2 (R - 1)); 3.5 of those
    assert abs(sd / d.se_raw - 1) < 3.5 / np.sqrt(2 * (reps - 1)), (sd, d.se_raw)
    _, rej = _simulate(sizes, n_c, icc, acf, t_pre, t_post, d.mdes, reps, d.df, 0.05, rng)
    target = float(d.power_at(d.mdes))
    rate = rej.mean()
    # binomial Monte-Carlo SE (3.5 of them) plus the known gap between the multiplier
    # convention and the noncentral-t power
    tol = 3.5 * np.sqrt(0.8 * 0.2 / reps) + abs(target - 0.8)
    assert abs(rate - 0.8) < tol + 0.02, (rate, target)  # 0.02: CR1's small-sample bias with few clusters
    return sd, d.se_raw, rate


@pytest.mark.slow
def test_simulated_did_matches_formula_with_study_ingredients(small_store):
    from evaluation.data.panels import load_study_data
    from evaluation.study import load_study

    study = load_study(STUDIES / "federation_primary_ks2.toml")
    res = study_power(study, load_study_data(small_store, study))
    T = res.t_pre + res.t_post
    # the estimated autocorrelations, the primary estimator's design (one base year)
    sd, se, rate = _check(res.cluster_sizes, res.schools_comparison, res.icc, _psd_acf(res.autocorrelation, T),
                          res.t_pre, res.t_post, seed=11)
    print(f"study ingredients: simulated SD {sd:.4f} vs formula SE {se:.4f}; rejection at MDES {rate:.3f}")
    # three base years (TWFE-like), AR(1) with the estimated lag-1 autocorrelation
    phi = max(res.serial_correlation, 0.0)
    sd, se, rate = _check(res.cluster_sizes, res.schools_comparison, res.icc, phi ** np.arange(3 + res.t_post),
                          3, res.t_post, seed=12)
    print(f"three base years: simulated SD {sd:.4f} vs formula SE {se:.4f}; rejection at MDES {rate:.3f}")


@pytest.mark.slow
def test_simulated_did_few_clusters_high_icc():
    # 12 trusts of 2-5 schools, ICC 0.2, AR(1) 0.5, matching ratio 3
    sizes = [2, 2, 3, 3, 3, 3, 4, 4, 4, 5, 5, 5]
    acf = 0.5 ** np.arange(8)
    sd, se, rate = _check(sizes, 3 * sum(sizes), 0.2, acf, 4, 4, seed=5)
    print(f"12 trusts: simulated SD {sd:.4f} vs formula SE {se:.4f}; rejection at MDES {rate:.3f}")
