"""Sun & Abraham against fixest's sunab on base_stagg (numbers from fixest's ?sunab)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evaluation.errors import InputError
from evaluation.estimators.sun_abraham import sun_abraham
from evaluation.estimators.twfe import twfe_did

DATA = Path(__file__).parent / "data" / "base_stagg.csv"

# feols(y ~ x1 + sunab(year_treated, year) | id + year, base_stagg), clustered by id,
# as printed (strings keep the printed precision; tolerance is half a unit in the last digit)
PRINTED_EVENT = {
    -9: (".3518", ".3591"), -8: ("-.0790", ".2975"), -7: (".1010", ".3670"),
    -6: ("-.0564", ".3089"), -5: ("-.2953", ".2940"), -4: ("-.3037", ".2491"),
    -3: ("-.0884", ".2558"), -2: (".0847", ".2443"), 0: ("-5.188", ".2211"),
    1: ("-3.540", ".2128"), 2: ("-2.155", ".2258"), 3: ("-.7750", ".2771"),
    4: ("1.069", ".3104"), 5: ("2.118", ".4481"), 6: ("4.631", ".4604"),
    7: ("4.890", ".3394"), 8: ("6.244", ".2976"),
}


def _tol(printed: str) -> float:
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return 0.5 * 10.0 ** -decimals


def _close(value: float, printed: str) -> bool:
    return abs(value - float(printed)) <= _tol(printed) + 1e-12


@pytest.fixture(scope="module")
def stagg():
    return pd.read_csv(DATA)


@pytest.fixture(scope="module")
def sunab(stagg):
    return sun_abraham(stagg, y="y", unit="id", time="year", cohort="year_treated",
                       covariates=["x1"], cluster="id")


def test_sunab_att_and_covariate_match_fixest(sunab):
    assert _close(sunab.overall.estimate, "-1.133749")
    assert _close(sunab.overall.se, "0.205070")
    x1 = sunab.coefficients.loc["x1"]
    assert _close(x1["estimate"], "0.994678") and _close(x1["se"], "0.018378")
    assert sunab.variance.cluster == "id" and sunab.variance.n_clusters == 95
    assert sunab.variance.df == 94 and "CR1" in sunab.variance.small_sample


def test_sunab_event_time_matches_fixest(sunab):
    et = sunab.event_time.set_index("e")
    assert list(et.index) == sorted(PRINTED_EVENT)  # -1 is the omitted reference
    for e, (b, se) in PRINTED_EVENT.items():
        assert _close(et.loc[e, "estimate"], b), (e, et.loc[e, "estimate"], b)
        assert _close(et.loc[e, "se"], se), (e, et.loc[e, "se"], se)


def test_sunab_cells_and_aggregation_weights(sunab, stagg):
    gt = sunab.group_time
    assert {"g", "t", "estimate", "se"} <= set(gt.columns)
    # 9 treated cohorts x 10 years minus the reference cell of each cohort
    assert len(gt) == 9 * 10 - 9
    # ATT is the observation-weighted mean of post-treatment cell coefficients
    post = gt[gt.t >= gt.g]
    # every cell holds 5 observations (5 units per cohort), so the weights are equal
    assert abs(post.estimate.mean() - sunab.overall.estimate) < 1e-10


def test_sunab_recovers_heterogeneous_effects_where_twfe_fails():
    rng = np.random.default_rng(11)
    n_units, n_t = 1500, 10
    u = np.repeat(np.arange(n_units), n_t)
    t = np.tile(np.arange(1, n_t + 1), n_units)
    g = np.array([0, 3, 6])[rng.integers(0, 3, n_units)][u]
    e = t - g
    # effects grow with time since treatment and differ by cohort
    tau = np.where((g > 0) & (e >= 0), (e + 1) * np.where(g == 3, 1.0, 0.5), 0.0)
    df = pd.DataFrame({"u": u, "t": t, "g": g,
                       "y": rng.normal(size=n_units)[u] + 0.2 * t + tau + rng.normal(size=u.size)})
    r = sun_abraham(df, y="y", unit="u", time="t", cohort="g")
    truth = pd.DataFrame({"e": e[tau != 0], "tau": tau[tau != 0]})
    # true event-time effect: cohort-share weighted average of the cell effects
    true_e = truth.groupby("e").tau.mean()
    et = r.event_time.set_index("e")
    z = (et.loc[true_e.index, "estimate"] - true_e) / et.loc[true_e.index, "se"]
    assert (z.abs() < 4).all()
    pre = et[et.index < -1]
    assert (pre.estimate.abs() < 4 * pre.se).all()
    true_att = truth.tau.mean()
    assert abs(r.overall.estimate - true_att) < 4 * r.overall.se
    static = twfe_did(df, y="y", unit="u", time="t", cohort="g")
    assert abs(static.overall.estimate - true_att) > 8 * static.overall.se  # TWFE is biased here


def test_sunab_last_treated_control(stagg):
    r = sun_abraham(stagg, y="y", unit="id", time="year", cohort="year_treated",
                    covariates=["x1"], control="last")
    assert r.event_time.e.max() <= 7  # periods from 10 (last cohort) on are dropped
    assert any("control" in n for n in r.notes)
    no_never = stagg[stagg.year_treated < 10000]
    with pytest.raises(InputError, match="control='last'"):
        sun_abraham(no_never, y="y", unit="id", time="year", cohort="year_treated")
    ok = sun_abraham(no_never, y="y", unit="id", time="year", cohort="year_treated", control="last")
    assert ok.overall is not None


def test_sunab_constant_weights_change_nothing(stagg):
    base = sun_abraham(stagg, y="y", unit="id", time="year", cohort="year_treated", control="last")
    w = sun_abraham(stagg.assign(w=2.0), y="y", unit="id", time="year", cohort="year_treated",
                    control="last", weights="w")
    np.testing.assert_allclose(w.event_time.estimate, base.event_time.estimate, atol=1e-10)
    np.testing.assert_allclose(w.event_time.se, base.event_time.se, rtol=1e-9)
    assert abs(w.overall.estimate - base.overall.estimate) < 1e-10
