"""Synthetic DiD, synthetic control and DiD (port of R synthdid) on California's Proposition 99.

Published numbers: Arkhangelsky et al. (2021, AER) Table 1, -15.6 (8.4), -19.6 (9.9),
-27.3 (17.7) for SDID, SC and DiD with placebo SEs; the synthdid README prints
"point estimate: -15.60". Point estimates must agree to the printed digits (half a unit
of the last digit).

Standard errors. A placebo SE is sqrt((R-1)/R) times the SD of R = 200 replications; with
one treated unit each replication's estimate depends only on which control plays the
treated unit, so a replication is a uniform draw from the N0 = 38 leave-one-out placebo
estimates, and the R -> infinity limit of the SE is their population SD (times
sqrt((R-1)/R)), computed here exactly. For R iid draws from that distribution (variance
s2, fourth central moment m4), Var(s^2) = (m4 - s2^2 (R-3)/(R-1)) / R and, by the delta
method, SD(s) = sqrt(Var(s^2)) / (2 sqrt(s2)); for normal draws this is the textbook
relative SD 1/sqrt(2 (R-1)) = 0.050, here larger (0.069-0.082) because the placebo
distributions are heavy-tailed (kurtosis 4.8-6.3). A published SE (rounded to 0.1) or our
200-replication SE must lie within 3 SD(s) (+ 0.05 rounding) of the exact limit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evaluation.errors import InputError
from evaluation.estimators import synthetic as S
from evaluation.estimators.synthetic import did_estimate, sc_estimate, synthdid_estimate

DATA = Path(__file__).parent / "data" / "california_prop99.csv"
KW = dict(unit="State", time="Year", outcome="PacksPerCapita", treated="treated")
ESTIMATORS = {"synthdid": synthdid_estimate, "sc": sc_estimate, "did": did_estimate}
PUBLISHED = {"synthdid": (-15.6, 8.4), "sc": (-19.6, 9.9), "did": (-27.3, 17.7)}
R = 200


@pytest.fixture(scope="module")
def prop99() -> pd.DataFrame:
    return pd.read_csv(DATA, sep=";")


@pytest.fixture(scope="module")
def fits(prop99):
    return {k: f(prop99, **KW, se=None) for k, f in ESTIMATORS.items()}


# ----- point estimates and weights -------------------------------------------------------

@pytest.mark.parametrize("kind", list(ESTIMATORS))
def test_prop99_point_estimates_to_the_printed_digit(fits, kind):
    est = fits[kind].overall.estimate
    assert abs(est - PUBLISHED[kind][0]) <= 0.05, est


def test_synthdid_readme_point_estimate(fits):
    # synthdid README: "point estimate: -15.60"
    assert abs(fits["synthdid"].overall.estimate - (-15.60)) <= 0.005
    assert f"{fits['synthdid'].overall.estimate:.2f}" == "-15.60"


@pytest.mark.parametrize("kind", list(ESTIMATORS))
def test_weights_on_the_simplex(fits, kind):
    d = fits[kind].details
    omega = np.array([w["omega"] for w in d["omega"]])
    lam = np.array([w["lambda"] for w in d["lambda"]])
    assert len(omega) == 38 and len(lam) == 19
    assert (omega >= 0).all() and abs(omega.sum() - 1) <= 1e-12
    assert (lam >= 0).all()
    if kind == "sc":
        assert (lam == 0).all()  # synthetic control has no time weights
    else:
        assert abs(lam.sum() - 1) <= 1e-12
    assert d["treated_units"] == ["California"] and d["first_treated_period"] == 1989


def test_prop99_weights_as_published(fits):
    # Arkhangelsky et al., appendix weight tables for California (3 dp): SDID time weights only
    # on 1986-88; SC unit weights on 7 states; the largest SDID unit weights.
    lam = {r["time"]: r["lambda"] for r in fits["synthdid"].details["lambda"]}
    assert {t for t, v in lam.items() if v > 0} == {1986, 1987, 1988}
    for t, v in {1986: 0.366, 1987: 0.206, 1988: 0.427}.items():
        assert abs(lam[t] - v) <= 0.0005
    sc = {r["unit"]: r["omega"] for r in fits["sc"].details["omega"] if r["omega"] > 0}
    published_sc = {"Utah": 0.396, "Montana": 0.232, "Nevada": 0.204, "Connecticut": 0.104,
                    "New Hampshire": 0.045, "Colorado": 0.013, "Delaware": 0.004}
    assert set(sc) == set(published_sc)
    for u, v in published_sc.items():
        assert abs(sc[u] - v) <= 0.0005
    top = fits["synthdid"].details["omega"][:4]  # sorted by weight
    for row, (u, v) in zip(top, [("Nevada", 0.124), ("New Hampshire", 0.105),
                                 ("Connecticut", 0.078), ("Delaware", 0.070)]):
        assert row["unit"] == u and abs(row["omega"] - v) <= 0.0005


def test_sparsify_rule_as_synthdid():
    # sparsify_function: v[v <= max(v)/4] = 0; v / sum(v)
    np.testing.assert_allclose(S._sparsify(np.array([[0.8, 0.2, 0.1]])), [[1.0, 0.0, 0.0]])
    np.testing.assert_allclose(S._sparsify(np.array([[0.4, 0.1, 0.3, 0.2]])),
                               [[0.4 / 0.9, 0.0, 0.3 / 0.9, 0.2 / 0.9]])


def test_gaps_reproduce_the_estimate(fits):
    for kind, r in fits.items():
        gaps = r.details["gaps"]
        post = [g["effect"] for g in gaps if g["post"]]
        assert len(gaps) == 31 and len(post) == 12
        assert abs(np.mean(post) - r.overall.estimate) <= 1e-9 * max(1, abs(r.overall.estimate))
        for g in gaps:
            assert abs(g["gap"] - (g["treated"] - g["synthetic"])) <= 1e-9
    json.dumps(fits["synthdid"].to_dict())  # JSON-ready for result.json


# ----- the solver against a literal transcription of synthdid's R code -------------------

def _r_sc_weight_fw(Y, zeta, intercept, lam, min_decrease, max_iter):
    """fw.step / sc.weight.fw as written in synthdid's R/solver.R, line by line."""
    T0 = Y.shape[1] - 1
    N0 = Y.shape[0]
    lam = np.full(T0, 1 / T0) if lam is None else lam.copy()
    if intercept:
        Y = Y - Y.mean(axis=0)
    vals = []
    A, b = Y[:, :T0], Y[:, T0]
    eta = N0 * zeta ** 2
    t = 0
    while t < max_iter and (t < 2 or vals[t - 2] - vals[t - 1] > min_decrease ** 2):
        t += 1
        Ax = A @ lam
        half_grad = (Ax - b) @ A + eta * lam
        i = int(np.argmin(half_grad))
        d_x = -lam.copy()
        d_x[i] = 1 - lam[i]
        if not (d_x == 0).all():
            d_err = A[:, i] - Ax
            step = -(half_grad @ d_x) / (d_err @ d_err + eta * (d_x @ d_x))
            lam = lam + min(1, max(0, step)) * d_x
        err = Y @ np.append(lam, -1)
        vals.append(zeta ** 2 * (lam @ lam) + (err @ err) / N0)
    return lam


@pytest.mark.parametrize("intercept", [True, False])
def test_solver_equals_synthdid_r_loop(intercept):
    rng = np.random.default_rng(11)
    Ys = rng.normal(size=(4, 15, 9)).cumsum(axis=1) + rng.normal(size=(4, 1, 9))
    zeta, md, it = 0.3, 1e-5, 400
    x0 = np.full((4, 8), 1 / 8)
    batch = S._fw(Ys, zeta, intercept, x0, md, it)
    for b in range(4):
        ref = _r_sc_weight_fw(Ys[b], zeta, intercept, None, md, it)
        one = S._fw(Ys[b:b + 1], zeta, intercept, x0[b:b + 1], md, it)[0]
        np.testing.assert_allclose(one, ref, atol=1e-10)
        np.testing.assert_allclose(batch[b], ref, atol=1e-10)


# ----- standard errors -------------------------------------------------------------------

def _placebo_limit(prop99, kind):
    """The N0 equally likely placebo estimates (each control in turn plays California)."""
    blk = S._panel_matrices(prop99, **KW)
    opts, omega, lam, _ = S._fit_block(kind, blk.Y, blk.N0, blk.T0)
    N0 = blk.N0
    perms = np.array([[j for j in range(N0) if j != i] + [i] for i in range(N0)])
    e = S._placebo_draws(blk.Y, N0, blk.T0, opts, omega, lam, perms)
    d = e - e.mean()
    s2, m4 = np.mean(d ** 2), np.mean(d ** 4)
    limit = np.sqrt((R - 1) / R * s2)
    sd_s = np.sqrt((m4 - s2 ** 2 * (R - 3) / (R - 1)) / R) / (2 * np.sqrt(s2))
    return limit, sd_s


def _check_se(prop99, kind):
    limit, sd_s = _placebo_limit(prop99, kind)
    published = PUBLISHED[kind][1]
    assert abs(published - limit) <= 3 * sd_s + 0.05, (published, limit, sd_s)
    r = ESTIMATORS[kind](prop99, **KW)  # placebo, 200 replications, seed 0
    assert r.variance.kind == "placebo" and r.details["replications"] == R
    assert abs(r.overall.se - limit) <= 3 * sd_s, (r.overall.se, limit, sd_s)
    crit = 1.959963984540054
    assert abs(r.overall.ci_low - (r.overall.estimate - crit * r.overall.se)) <= 1e-9


def test_did_placebo_se(prop99):
    _check_se(prop99, "did")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["synthdid", "sc"])
def test_placebo_se_slow(prop99, kind):
    _check_se(prop99, kind)


def test_placebo_deterministic_by_seed(prop99):
    a = did_estimate(prop99, **KW, seed=5)
    b = did_estimate(prop99, **KW, seed=5)
    c = did_estimate(prop99, **KW, seed=6)
    assert a.overall.se == b.overall.se != c.overall.se
    assert a.details["replicate_estimates"] == b.details["replicate_estimates"]


def test_one_treated_unit_has_no_jackknife(prop99):
    r = did_estimate(prop99, **KW, se="jackknife")
    assert np.isnan(r.overall.se) and any("jackknife" in n for n in r.notes)


# ----- several treated units (a partnership) ---------------------------------------------

def _partnership(n_treated=5, n_controls=30, n_t=10, start=7, tau=2.5, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    n = n_treated + n_controls
    unit_fe = rng.normal(0, 3, n)
    time_fe = rng.normal(0, 1, n_t).cumsum()
    rows = []
    for i in range(n):
        for t in range(n_t):
            d = int(i < n_treated and t >= start)
            y = 50 + unit_fe[i] + time_fe[t] + tau * d + noise * rng.normal()
            rows.append({"urn": 100000 + i, "year": 2010 + t, "ks2": y, "joined": d})
    return pd.DataFrame(rows)


PKW = dict(unit="urn", time="year", outcome="ks2", treated="joined")


def test_several_treated_units_recover_an_additive_effect():
    # With unit + year effects and no noise, any weights with intercepts give the effect exactly.
    df = _partnership()
    for f in (synthdid_estimate, did_estimate):
        r = f(df, **PKW, se="jackknife")
        assert abs(r.overall.estimate - 2.5) <= 1e-8
        assert r.details["N1"] == 5 and r.details["T1"] == 3
        assert r.details["treated_units"] == [100000 + i for i in range(5)]


def test_several_treated_units_average_the_treated():
    # DiD on the partnership = the mean of each school's own DiD against the same controls.
    df = _partnership(noise=1.0, seed=3)
    whole = did_estimate(df, **PKW, se=None).overall.estimate
    treated = [100000 + i for i in range(5)]
    alone = [did_estimate(df[~df.urn.isin(set(treated) - {u})], **PKW, se=None).overall.estimate
             for u in treated]
    assert abs(whole - np.mean(alone)) <= 1e-10
    r = synthdid_estimate(df, **PKW, se="jackknife")
    assert np.isfinite(r.overall.se) and r.overall.se > 0


@pytest.mark.slow
def test_bootstrap_se_several_treated():
    df = _partnership(noise=1.0, seed=4)
    a = synthdid_estimate(df, **PKW, se="bootstrap", replications=50, seed=9)
    b = synthdid_estimate(df, **PKW, se="bootstrap", replications=50, seed=9)
    assert a.overall.se == b.overall.se and a.overall.se > 0


# ----- clear input errors ----------------------------------------------------------------

def test_unbalanced_panel(prop99):
    with pytest.raises(InputError, match="balanced panel"):
        synthdid_estimate(prop99.drop(index=5), **KW)


def test_duplicate_rows(prop99):
    with pytest.raises(InputError, match="one row per unit and period"):
        synthdid_estimate(pd.concat([prop99, prop99.iloc[:1]]), **KW)


def test_staggered_treatment(prop99):
    df = prop99.copy()
    df.loc[(df.State == "Utah") & (df.Year >= 1992), "treated"] = 1
    with pytest.raises(InputError, match="not simultaneous") as err:
        sc_estimate(df, **KW)
    assert "Utah" in str(err.value) and "1992" in str(err.value)


def test_treatment_switching_off(prop99):
    df = prop99.copy()
    df.loc[(df.State == "California") & (df.Year == 1995), "treated"] = 0
    with pytest.raises(InputError, match="later untreated"):
        did_estimate(df, **KW)


def test_no_treated_units(prop99):
    with pytest.raises(InputError, match="at least one treated unit"):
        synthdid_estimate(prop99.assign(treated=0), **KW)


def test_no_control_units(prop99):
    df = prop99.assign(treated=(prop99.Year >= 1989).astype(int))
    with pytest.raises(InputError, match="never-treated comparison unit"):
        synthdid_estimate(df, **KW)


def test_too_few_pre_periods(prop99):
    df = prop99[prop99.Year >= 1988]
    with pytest.raises(InputError, match="at least 2 periods before treatment"):
        synthdid_estimate(df, **KW)


def test_other_bad_inputs(prop99):
    with pytest.raises(InputError, match="did you mean 'treated'"):
        synthdid_estimate(prop99, **{**KW, "treated": "treat"})
    with pytest.raises(InputError, match="0 or 1"):
        synthdid_estimate(prop99.assign(treated=prop99.treated * 2), **KW)
    with pytest.raises(InputError, match="missing"):
        synthdid_estimate(prop99.assign(PacksPerCapita=prop99.PacksPerCapita.where(prop99.Year != 1975)), **KW)
    with pytest.raises(InputError, match="standard-error method"):
        synthdid_estimate(prop99, **KW, se="robust")
    few = _partnership(n_treated=3, n_controls=3)
    with pytest.raises(InputError, match="more comparison units than treated"):
        did_estimate(few, **PKW)
