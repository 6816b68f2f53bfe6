"""Goodman-Bacon (2021) decomposition: Theorem 1 identities, hand-computed 2x2s, input errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evaluation.errors import InputError
from evaluation.estimators.bacon import (EARLIER_VS_LATER, LATER_VS_EARLIER, TREATED_VS_ALWAYS,
                                         TREATED_VS_NEVER, bacon_decomposition)

DATA = Path(__file__).parent / "data"


def twfe_dummies(df: pd.DataFrame, y: str, unit: str, time: str, d: np.ndarray) -> float:
    """TWFE coefficient on D from an explicit dummy-variable least-squares fit."""
    U = pd.get_dummies(df[unit]).to_numpy(float)
    T = pd.get_dummies(df[time]).to_numpy(float)[:, 1:]
    X = np.column_stack([d.astype(float), U, T])
    beta, *_ = np.linalg.lstsq(X, df[y].to_numpy(float), rcond=None)
    return float(beta[0])


def synthetic(seed: int, cohorts=(3, 5, 8), n_per=(7, 4, 9), n_never=6, n_always=0, T=10):
    rng = np.random.default_rng(seed)
    g = np.concatenate([np.repeat(cohorts, n_per), np.zeros(n_never), np.ones(n_always)])
    n = len(g)
    unit = np.repeat(np.arange(n), T)
    time = np.tile(np.arange(1, T + 1), n)
    gg = np.repeat(g, T)
    d = (gg > 0) & (time >= gg)
    y = (rng.normal(size=n)[unit] + rng.normal(size=T)[time - 1]
         + d * (1 + 0.3 * (time - gg)) + rng.normal(size=n * T))
    return pd.DataFrame({"id": unit, "t": time, "g": gg, "y": y, "d": d.astype(int)})


def test_castle_weighted_sum_equals_twfe():
    df = pd.read_csv(DATA / "castle.csv")
    first = df[df["post"] == 1].groupby("sid")["year"].min()
    df["cohort"] = df["sid"].map(first).fillna(0)
    res = bacon_decomposition(df, y="l_homicide", unit="sid", time="year", cohort="cohort",
                              treatment="post")
    beta = twfe_dummies(df, "l_homicide", "sid", "year", df["post"].to_numpy())
    assert res.twfe == pytest.approx(beta, abs=1e-10)
    assert res.weighted_sum == pytest.approx(beta, abs=1e-10)
    assert res.comparisons["weight"].sum() == pytest.approx(1.0, abs=1e-12)
    assert (res.comparisons["weight"] > 0).all()
    # 5 cohorts + never treated: 5 treated-vs-never and 2 * C(5, 2) = 20 timing comparisons
    counts = res.comparisons["type"].value_counts()
    assert counts[TREATED_VS_NEVER] == 5
    assert counts[EARLIER_VS_LATER] == counts[LATER_VS_EARLIER] == 10
    assert res.identity_holds


def test_mpdta_weighted_sum_equals_twfe():
    df = pd.read_csv(DATA / "mpdta.csv")
    res = bacon_decomposition(df, y="lemp", unit="countyreal", time="year", cohort="first.treat")
    d = (df["first.treat"] > 0) & (df["year"] >= df["first.treat"])
    beta = twfe_dummies(df, "lemp", "countyreal", "year", d.to_numpy())
    assert res.twfe == pytest.approx(beta, abs=1e-10)
    assert res.weighted_sum == pytest.approx(beta, abs=1e-10)
    assert res.comparisons["weight"].sum() == pytest.approx(1.0, abs=1e-12)
    summary = res.by_type()
    assert summary["weight"].sum() == pytest.approx(1.0, abs=1e-12)


def test_2x2_estimates_match_group_means():
    """Each 2x2 DiD recomputed from raw group-by-period means of its own window."""
    df = synthetic(1)
    res = bacon_decomposition(df, y="y", unit="id", time="t", cohort="g")
    means = df.groupby(["g", "t"])["y"].mean().unstack()

    def m(g, lo, hi):
        return means.loc[g, [t for t in means.columns if lo <= t < hi]].mean()

    table = res.comparisons.set_index(["type", "treated", "control"])["estimate"]
    # treated 5 vs never: all periods
    assert table[(TREATED_VS_NEVER, 5, 0)] == pytest.approx(
        (m(5, 5, 99) - m(5, 0, 5)) - (m(0, 5, 99) - m(0, 0, 5)), abs=1e-12)
    # earlier 3 vs later 8: periods before 8
    assert table[(EARLIER_VS_LATER, 3, 8)] == pytest.approx(
        (m(3, 3, 8) - m(3, 0, 3)) - (m(8, 3, 8) - m(8, 0, 3)), abs=1e-12)
    # later 8 vs earlier 3: periods from 3 on
    assert table[(LATER_VS_EARLIER, 8, 3)] == pytest.approx(
        (m(8, 8, 99) - m(8, 3, 8)) - (m(3, 8, 99) - m(3, 3, 8)), abs=1e-12)


@pytest.mark.parametrize("n_never,n_always", [(6, 0), (0, 0), (5, 3)])
def test_identity_for_many_outcomes_pins_down_weights(n_never, n_always):
    """sum(w * b_2x2(y)) == TWFE(y) for several random y: since the 2x2 estimators are
    linearly independent functionals of y, this identity determines the weights."""
    for seed in range(4):
        df = synthetic(seed, n_never=n_never, n_always=n_always)
        res = bacon_decomposition(df, y="y", unit="id", time="t", cohort="g", treatment="d")
        beta = twfe_dummies(df, "y", "id", "t", df["d"].to_numpy())
        assert res.weighted_sum == pytest.approx(beta, abs=1e-10)
        assert res.comparisons["weight"].sum() == pytest.approx(1.0, abs=1e-12)
    kinds = set(res.comparisons["type"])
    assert (TREATED_VS_NEVER in kinds) == (n_never > 0)
    assert (TREATED_VS_ALWAYS in kinds) == (n_always > 0)


def test_homogeneous_constant_effect_all_2x2_equal():
    df = synthetic(3)
    rng = np.random.default_rng(0)
    n, T = df["id"].nunique(), df["t"].nunique()
    df["y"] = rng.normal(size=n)[df["id"]] + rng.normal(size=T)[df["t"] - 1] + 2.5 * df["d"]
    res = bacon_decomposition(df, y="y", unit="id", time="t", cohort="g")
    np.testing.assert_allclose(res.comparisons["estimate"], 2.5, atol=1e-10)
    assert res.twfe == pytest.approx(2.5, abs=1e-10)


def test_unbalanced_panel_is_an_input_error():
    df = synthetic(0).iloc[1:]
    with pytest.raises(InputError, match="balanced"):
        bacon_decomposition(df, y="y", unit="id", time="t", cohort="g")


def test_treatment_switching_off_is_an_input_error():
    df = synthetic(0)
    i = df.index[(df["g"] == 3) & (df["t"] == 6)][0]
    df.loc[i, "d"] = 0
    with pytest.raises(InputError, match="switches off"):
        bacon_decomposition(df, y="y", unit="id", time="t", cohort="g", treatment="d")


def test_cohort_varying_within_unit_is_an_input_error():
    df = synthetic(0)
    df.loc[df.index[0], "g"] = 4
    with pytest.raises(InputError, match="constant within a unit"):
        bacon_decomposition(df, y="y", unit="id", time="t", cohort="g")


def test_missing_column_and_duplicates():
    df = synthetic(0)
    with pytest.raises(InputError, match="nope"):
        bacon_decomposition(df, y="nope", unit="id", time="t", cohort="g")
    with pytest.raises(InputError, match="appear once"):
        bacon_decomposition(pd.concat([df, df.iloc[:1]]), y="y", unit="id", time="t", cohort="g")


def test_string_unit_ids_and_nan_never_treated():
    df = synthetic(2)
    df["id"] = "school-" + df["id"].astype(str)
    df["g"] = df["g"].where(df["g"] > 0)  # NaN = never treated
    res = bacon_decomposition(df, y="y", unit="id", time="t", cohort="g")
    beta = twfe_dummies(df, "y", "id", "t", df["d"].to_numpy())
    assert res.twfe == pytest.approx(beta, abs=1e-10)
