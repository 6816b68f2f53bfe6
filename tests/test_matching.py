"""Tests for evaluation.matching against MatchIt's printed output and brute-force references.

Expected numbers are transcribed from MatchIt's own documentation (MatchIt 4.x,
kosukeimai/MatchIt, pkgdown articles/MatchIt.md "Getting Started",
reference/summary.matchit.md and reference/method_nearest.md), printed to 4
decimals; tolerances follow that printed precision (half a unit in the last digit).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist

from evaluation.errors import InputError
from evaluation.matching import balance, family_of_schools, match

LALONDE = Path(__file__).parent / "data" / "lalonde.csv"
COVS = ["age", "educ", "race", "married", "nodegree", "re74", "re75"]
TOL4 = 0.5e-4 + 1e-9  # numbers printed with 4 decimals
COLS6 = ["Means Treated", "Means Control", "Std. Mean Diff.", "Var. Ratio", "eCDF Mean", "eCDF Max"]
COLS7 = COLS6 + ["Std. Pair Dist."]
NA = math.nan  # MatchIt prints "." for statistics that do not apply


@pytest.fixture(scope="module")
def lalonde() -> pd.DataFrame:
    return pd.read_csv(LALONDE)


def assert_printed(table: pd.DataFrame, printed: dict, columns: list[str], skip=()):
    assert list(table.index) == list(printed)
    for name, values in printed.items():
        for col, want in zip(columns, values):
            if (name, col) in skip:
                continue
            got = table.loc[name, col]
            if math.isnan(want):
                assert math.isnan(got), (name, col, got)
            else:
                assert abs(got - want) <= TOL4, (name, col, got, want)


# Getting Started vignette: summary(m.out0) (no matching) ...
ALL_DATA = {
    "distance": (0.5774, 0.1822, 1.7941, 0.9211, 0.3774, 0.6444),
    "age": (25.8162, 28.0303, -0.3094, 0.4400, 0.0813, 0.1577),
    "educ": (10.3459, 10.2354, 0.0550, 0.4959, 0.0347, 0.1114),
    "raceblack": (0.8432, 0.2028, 1.7615, NA, 0.6404, 0.6404),
    "racehispan": (0.0595, 0.1422, -0.3498, NA, 0.0827, 0.0827),
    "racewhite": (0.0973, 0.6550, -1.8819, NA, 0.5577, 0.5577),
    "married": (0.1892, 0.5128, -0.8263, NA, 0.3236, 0.3236),
    "nodegree": (0.7081, 0.5967, 0.2450, NA, 0.1114, 0.1114),
    "re74": (2095.5737, 5619.2365, -0.7211, 0.5181, 0.2248, 0.4470),
    "re75": (1532.0553, 2466.4844, -0.2903, 0.9563, 0.1342, 0.2876),
}
# ... and summary(m.out1, un = FALSE) for 1:1 NN on the glm propensity score.
MATCHED = {
    "distance": (0.5774, 0.3629, 0.9739, 0.7566, 0.1321, 0.4216, 0.9740),
    "age": (25.8162, 25.3027, 0.0718, 0.4568, 0.0847, 0.2541, 1.3938),
    "educ": (10.3459, 10.6054, -0.1290, 0.5721, 0.0239, 0.0757, 1.2474),
    "raceblack": (0.8432, 0.4703, 1.0259, NA, 0.3730, 0.3730, 1.0259),
    "racehispan": (0.0595, 0.2162, -0.6629, NA, 0.1568, 0.1568, 1.0743),
    "racewhite": (0.0973, 0.3135, -0.7296, NA, 0.2162, 0.2162, 0.8390),
    "married": (0.1892, 0.2108, -0.0552, NA, 0.0216, 0.0216, 0.8281),
    "nodegree": (0.7081, 0.6378, 0.1546, NA, 0.0703, 0.0703, 1.0106),
    "re74": (2095.5737, 2342.1076, -0.0505, 1.3289, 0.0469, 0.2757, 0.7965),
    "re75": (1532.0553, 1614.7451, -0.0257, 1.4956, 0.0452, 0.2054, 0.7381),
}


def test_reproduces_matchit_getting_started(lalonde):
    r = match(lalonde, "treat", COVS, id="id")
    assert_printed(r.balance_all, ALL_DATA, COLS6)
    assert_printed(r.balance_matched, MATCHED, COLS7)
    counts = r.counts
    assert counts.loc["All"].tolist() == [429, 185]
    assert counts.loc["Matched"].tolist() == [185, 185]
    assert counts.loc["Unmatched"].tolist() == [244, 0]
    assert counts.loc["Discarded"].tolist() == [0, 0]
    # 1:1 without replacement: 185 distinct pairs, uniform weights, one subclass per pair
    pairs = r.pairs()
    assert len(pairs) == 185 and pairs["control_id"].is_unique
    assert set(r.weights) == {0.0, 1.0}
    assert sorted(set(r.subclass[r.matched])) == list(range(1, 186))
    assert (pairs["treated_id"].str.startswith("NSW")).all()
    assert (pairs["control_id"].str.startswith("PSID")).all()


def test_unmatched_balance_function_matches_all_data(lalonde):
    r = match(lalonde, "treat", COVS, id="id")
    table = balance(lalonde, "treat", COVS, distance=r.distance)
    assert_printed(table, ALL_DATA, COLS6)
    weighted = balance(lalonde, "treat", COVS, weights=r.weights, distance=r.distance)
    assert_printed(weighted, {k: v[:6] for k, v in MATCHED.items()}, COLS6)


def test_identical_covariates_get_identical_propensity_scores(lalonde):
    """Ties in the score must not depend on the BLAS kernel. Some OpenBLAS kernels
    (chosen at run time by CPU; e.g. Haswell, also used on AMD Zen) round the last
    rows of ``X @ beta`` differently, which gave one of four identical PSID controls a score
    1 ulp off the others: 574 distinct scores for 573 covariate patterns, and an
    eCDF mean of 0.3777 for the score instead of MatchIt's 0.3774."""
    r = match(lalonde, "treat", COVS, id="id")
    patterns = lalonde[COVS].astype(str).agg("|".join, axis=1)
    assert patterns.nunique() == 573
    assert len(np.unique(r.distance)) == 573
    spread = pd.Series(r.distance).groupby(patterns.to_numpy()).agg(lambda s: s.max() - s.min())
    assert (spread == 0).all()
    # many copies of each pattern, spread over every position in the array
    big = pd.concat([lalonde] * 7, ignore_index=True).sample(frac=1, random_state=3)
    big["id"] = np.arange(len(big)).astype(str)
    ps = match(big, "treat", COVS, id="id").distance
    key = big[COVS].astype(str).agg("|".join, axis=1).to_numpy()
    assert (pd.Series(ps).groupby(key).nunique() == 1).all()


def test_reproduces_matchit_exact_with_replacement(lalonde):
    """reference/summary.matchit.md: matchit(treat ~ age + educ + married + race + re74,
    method = "nearest", exact = ~married, replace = TRUE), main-effect rows."""
    all_data = {
        "distance": (0.5710, 0.1850, 1.7864, 0.8760, 0.3765, 0.6419),
        "age": (25.8162, 28.0303, -0.3094, 0.4400, 0.0813, 0.1577),
        "educ": (10.3459, 10.2354, 0.0550, 0.4959, 0.0347, 0.1114),
        "married": (0.1892, 0.5128, -0.8263, NA, 0.3236, 0.3236),
        "raceblack": (0.8432, 0.2028, 1.7615, NA, 0.6404, 0.6404),
        "racehispan": (0.0595, 0.1422, -0.3498, NA, 0.0827, 0.0827),
        "racewhite": (0.0973, 0.6550, -1.8819, NA, 0.5577, 0.5577),
        "re74": (2095.5737, 5619.2365, -0.7211, 0.5181, 0.2248, 0.4470),
    }
    matched = {
        "distance": (0.5710, 0.5705, 0.0023, 0.9769, 0.0032, 0.0432, 0.0165),
        "age": (25.8162, 25.9568, -0.0196, 0.4500, 0.0765, 0.2216, 1.1241),
        "educ": (10.3459, 10.6054, -0.1290, 0.5297, 0.0353, 0.1892, 0.9194),
        "married": (0.1892, 0.1892, 0.0000, NA, 0.0000, 0.0000, 0.0000),
        "raceblack": (0.8432, 0.8324, 0.0297, NA, 0.0108, 0.0108, 0.0297),
        "racehispan": (0.0595, 0.0595, 0.0000, NA, 0.0000, 0.0000, 0.0216),
        "racewhite": (0.0973, 0.1081, -0.0365, NA, 0.0108, 0.0108, 0.0365),
        "re74": (2095.5737, 1882.1670, 0.0437, 1.5002, 0.0544, 0.2919, 0.3888),
    }
    r = match(lalonde, "treat", ["age", "educ", "married", "race", "re74"], id="id",
              exact="married", replace=True)
    # The one printed number not reproduced: the unmatched eCDF mean of the propensity
    # score, 0.3762 here against 0.3765 printed. It depends only on the ordering of the
    # 614 scores and on which are tied (549 distinct covariate patterns, so 549 distinct
    # scores here); means, SMD, variance ratio and eCDF max of the same scores agree,
    # as does every matched-sample number, so the matched set is the same.
    assert_printed(r.balance_all, all_data, COLS6, skip={("distance", "eCDF Mean")})
    assert abs(r.balance_all.loc["distance", "eCDF Mean"] - 0.3765) < 5e-4
    assert_printed(r.balance_matched, matched, COLS7)
    assert r.counts.loc["Matched"].tolist() == [86, 185]
    assert r.counts.loc["Unmatched"].tolist() == [343, 0]
    assert abs(r.counts.loc["Matched (ESS)", "Control"] - 47.6) <= 0.05
    assert (r.subclass == 0).all()  # MatchIt has no subclasses with replacement
    pairs = r.pairs()
    married = lalonde.set_index("id")["married"]
    assert (married[pairs["treated_id"]].to_numpy() == married[pairs["control_id"]].to_numpy()).all()


def test_reproduces_matchit_mahalanobis_exact_calipers(lalonde):
    """reference/method_nearest.md m.out3: Mahalanobis 1:1 NN, exact = ~married + race,
    caliper = c(re74 = .2, re75 = .15)."""
    matched = {
        "age": (24.7711, 24.6024, 0.0236, 0.4804, 0.0753, 0.2410, 0.7544),
        "educ": (10.3976, 10.0482, 0.1738, 0.4610, 0.0361, 0.0964, 0.7131),
        "re74": (705.7326, 864.0131, -0.0324, 0.9038, 0.0270, 0.2410, 0.0537),
        "re75": (592.6384, 640.9355, -0.0150, 1.0194, 0.0150, 0.1084, 0.0358),
        "married": (0.1687, 0.1687, 0.0000, NA, 0.0000, 0.0000, 0.0000),
        "raceblack": (0.7349, 0.7349, 0.0000, NA, 0.0000, 0.0000, 0.0000),
        "racehispan": (0.0723, 0.0723, 0.0000, NA, 0.0000, 0.0000, 0.0000),
        "racewhite": (0.1928, 0.1928, 0.0000, NA, 0.0000, 0.0000, 0.0000),
    }
    r = match(lalonde, "treat", ["age", "educ", "re74", "re75"], id="id", distance="mahalanobis",
              exact=["married", "race"], caliper={"re74": 0.2, "re75": 0.15})
    assert_printed(r.balance_matched, matched, COLS7)
    assert r.counts.loc["Matched"].tolist() == [83, 83]
    assert r.counts.loc["Unmatched"].tolist() == [346, 102]
    # print(m.out3): "caliper: re74 (1295.593), re75 (494.352)"
    assert abs(r.caliper_width["re74"] - 1295.593) <= 5e-4
    assert abs(r.caliper_width["re75"] - 494.352) <= 5e-4
    assert r.distance is None and "distance" not in r.balance_matched.index


# --------------------------------------------------------------------------- brute-force references


def _toy(n=400, seed=3, ties=False):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.normal(size=n),
                       "grp": rng.choice(["a", "b", "c"], n)})
    if ties:
        df["x1"] = np.round(df["x1"], 0)
        df["x2"] = np.round(df["x2"], 0)
    p = 1 / (1 + np.exp(-(-1.2 + 0.8 * df.x1 - 0.5 * df.x2)))
    df["t"] = (rng.uniform(size=n) < p).astype(int)
    df["school"] = [f"S{i:04d}" for i in range(n)]
    return df


def _greedy_reference(score, treat, ratio=1, replace=False, width=math.inf, order=None):
    """Plain O(n1 * n0) greedy matcher on a score, MatchIt's rules spelled out directly:
    closest available control; equal distances prefer the lower score, then the control
    nearest in the stable sorted order."""
    rank = np.empty(len(score), int)
    rank[np.argsort(score, kind="stable")] = np.arange(len(score))
    treated = np.flatnonzero(treat == 1)
    controls = list(np.flatnonzero(treat == 0))
    order = np.argsort(-score[treated], kind="stable") if order is None else order
    out = {int(t): [] for t in treated}
    used = set()
    for _ in range(ratio):
        for j in order:
            t = treated[j]
            best = None
            for c in controls:
                if (not replace and c in used) or c in out[t]:
                    continue
                d = abs(score[c] - score[t])
                if d > width:
                    continue
                below = score[c] < score[t] or (score[c] == score[t] and rank[c] < rank[t])
                key = (d, 0 if below else 1, -rank[c] if below else rank[c])
                if best is None or key < best[0]:
                    best = (key, c)
            if best is not None:
                out[int(t)].append(best[1])
                used.add(best[1])
    return out


def _as_dict(r):
    out = {}
    treated = np.flatnonzero(r.treat == 1)
    for j, t in enumerate(treated):
        out[int(t)] = [int(c) for c in r.match_matrix[j] if c >= 0]
    return out


@pytest.mark.parametrize("kw", [dict(), dict(ratio=2), dict(replace=True), dict(replace=True, ratio=3),
                                dict(caliper=0.1), dict(ratio=2, caliper=0.25), dict(m_order="smallest")])
@pytest.mark.parametrize("ties", [False, True])
def test_nearest_on_score_matches_reference(kw, ties):
    df = _toy(ties=ties)
    r = match(df, "t", ["x1", "x2", "grp"], id="school", **kw)
    width = r.caliper_width["distance"] if r.caliper_width else math.inf
    order = None
    if kw.get("m_order") == "smallest":
        order = np.argsort(r.distance[r.treat == 1], kind="stable")
    if kw.get("replace"):
        order = np.arange(int(r.treat.sum()))
    ref = _greedy_reference(r.distance, r.treat, kw.get("ratio", 1), kw.get("replace", False), width, order)
    assert _as_dict(r) == ref


def test_caliper_width_and_pairs_within_it():
    df = _toy()
    r = match(df, "t", ["x1", "x2"], caliper=0.05)
    assert r.caliper_width["distance"] == pytest.approx(0.05 * np.std(r.distance, ddof=1), rel=1e-12)
    p = r.pairs()
    assert (p["distance"] <= r.caliper_width["distance"]).all()
    assert r.counts.loc["Unmatched", "Treated"] > 0
    assert any("fewer than 1 match" in w for w in r.warnings)


def test_weights_follow_matchit_with_replacement_and_ratio():
    df = _toy()
    r = match(df, "t", ["x1", "x2"], ratio=2, replace=True)
    c = r.treat == 0
    uses = np.zeros(len(df))
    np.add.at(uses, r.match_matrix[r.match_matrix >= 0], 0.5)
    expected = uses[c] * np.count_nonzero(uses[c]) / uses[c].sum()
    assert np.allclose(r.weights[c], expected)
    assert r.weights[c].sum() == pytest.approx(np.count_nonzero(r.weights[c]))
    assert (r.weights[r.treat == 1] == 1).all()
    ess = r.weights[c].sum() ** 2 / (r.weights[c] ** 2).sum()
    assert r.counts.loc["Matched (ESS)", "Control"] == pytest.approx(ess)


def test_ratio_two_without_replacement_round_robin():
    df = _toy()
    r = match(df, "t", ["x1", "x2"], ratio=2)
    used = r.match_matrix[r.match_matrix >= 0]
    assert len(used) == len(set(used.tolist()))
    # every control of a pair gets weight 1/2 before rescaling -> all equal after
    assert np.allclose(r.weights[(r.weights > 0) & (r.treat == 0)], 1.0)
    sub = r.subclass
    for j, t in enumerate(np.flatnonzero(r.treat == 1)):
        members = r.match_matrix[j][r.match_matrix[j] >= 0]
        assert (sub[members] == sub[t]).all()


def test_exact_matching_within_cells_and_cell_without_controls():
    df = _toy()
    df.loc[(df.grp == "c") & (df.t == 0), "grp"] = "b"  # cell "c" now has only treated units
    r = match(df, "t", ["x1", "x2"], exact="grp", id="school")
    p = r.pairs()
    g = df.set_index("school")["grp"]
    assert (g[p.treated_id].to_numpy() == g[p.control_id].to_numpy()).all()
    n_c = int(((df.grp == "c") & (df.t == 1)).sum())
    assert r.counts.loc["Unmatched", "Treated"] >= n_c
    assert any("grp=c" in w for w in r.warnings)


def test_mahalanobis_matches_reference():
    df = _toy(n=300)
    r = match(df, "t", ["x1", "x2", "grp"], distance="mahalanobis")
    X = np.column_stack([df.x1, df.x2, df.grp == "b", df.grp == "c"]).astype(float)
    t = df.t.to_numpy()
    centred = X.copy()
    for g in (0, 1):
        centred[t == g] -= centred[t == g].mean(axis=0)
    S = centred.T @ centred / (len(X) - 2)  # pooled within-group covariance
    D = cdist(X[t == 1], X[t == 0], metric="mahalanobis", VI=np.linalg.inv(S))
    controls = np.flatnonzero(t == 0)
    used = set()
    for j, tu in enumerate(np.flatnonzero(t == 1)):  # data order
        free = [k for k in range(len(controls)) if controls[k] not in used]
        k = min(free, key=lambda k: (D[j, k], k))
        used.add(controls[k])
        assert r.match_matrix[j, 0] == controls[k]
        assert r.pair_distance[j, 0] == pytest.approx(D[j, k], rel=1e-8)


def test_family_of_schools_is_k_nearest_on_z_scores():
    df = _toy(n=300, ties=True)
    r = family_of_schools(df, "t", ["x1", "x2"], k=10, id="school")
    X = df[["x1", "x2"]].to_numpy(float)
    Z = (X - X.mean(0)) / X.std(0, ddof=1)
    t = df.t.to_numpy()
    controls = np.flatnonzero(t == 0)
    D = cdist(Z[t == 1], Z[t == 0])
    for j in range(int(t.sum())):
        ref = controls[np.lexsort((np.arange(len(controls)), D[j]))[:10]]
        assert r.match_matrix[j].tolist() == ref.tolist()
    assert r.replace and r.ratio == 10
    assert r.weights[t == 0].sum() == pytest.approx(np.count_nonzero(r.weights[t == 0]))
    assert "Std. Pair Dist." in r.balance_matched.columns


def test_family_of_schools_exact_and_mahalanobis():
    df = _toy(n=300)
    r = family_of_schools(df, "t", ["x1", "x2"], k=5, metric="mahalanobis", exact="grp", id="school")
    p = r.pairs()
    g = df.set_index("school")["grp"]
    assert (g[p.treated_id].to_numpy() == g[p.control_id].to_numpy()).all()
    assert (p.groupby("treated_id").size() == 5).all()


def test_discard_and_common_support(lalonde):
    r = match(lalonde, "treat", COVS, id="id", discard="both")
    d0, d1 = r.distance[r.treat == 0], r.distance[r.treat == 1]
    lo, hi = max(d0.min(), d1.min()), min(d0.max(), d1.max())
    assert (r.discarded == ((r.distance < lo) | (r.distance > hi))).all()
    assert r.counts.loc["Discarded"].tolist() == [int((r.discarded & (r.treat == 0)).sum()),
                                                  int((r.discarded & (r.treat == 1)).sum())]
    assert (r.weights[r.discarded] == 0).all()
    cs = match(lalonde, "treat", COVS, id="id").common_support()
    assert cs["treated_outside"] == int(((d1 < d0.min()) | (d1 > d0.max())).sum())


def test_to_dict_is_json_ready(lalonde):
    from evaluation.cli.output import dumps
    r = match(lalonde, "treat", COVS, id="id", caliper=0.2)
    d = r.to_dict()
    text = dumps(d)
    assert '"pairs"' in text and d["counts"]["All"] == {"Control": 429, "Treated": 185}
    assert d["balance"]["all"]["raceblack"]["Var. Ratio"] is None
    assert len(d["pairs"]) == int(r.counts.loc["Matched", "Treated"])
    assert d["caliper"] == {"distance": 0.2}


def test_matched_data_columns(lalonde):
    r = match(lalonde, "treat", COVS, id="id", ratio=2)
    m = r.matched_data(lalonde)
    assert len(m) == int(r.matched.sum())
    assert {"distance", "weights", "subclass"} <= set(m.columns)
    assert m["subclass"].notna().all()


def test_large_pool_matches():
    """A national-size pool (20,000 schools) matches; its speed is measured in benchmarks/bench_matching.py."""
    rng = np.random.default_rng(0)
    n = 20000
    df = pd.DataFrame({"ks2": rng.normal(100, 10, n), "trend": rng.normal(0, 1, n),
                       "fsm": rng.uniform(0, 60, n), "phase": rng.choice(["primary", "secondary"], n)})
    lin = -4 + 0.03 * (df.ks2 - 100) + 0.02 * df.fsm
    df["t"] = (rng.uniform(size=n) < 1 / (1 + np.exp(-lin))).astype(int)
    r = match(df, "t", ["ks2", "trend", "fsm"], exact="phase", caliper=0.2)
    m = match(df, "t", ["ks2", "trend", "fsm"], exact="phase", distance="mahalanobis")
    assert r.counts.loc["Matched", "Treated"] > 0 and m.counts.loc["Matched", "Treated"] == df.t.sum()


# --------------------------------------------------------------------------- bad input


def _problems(excinfo):
    return excinfo.value.problems


def test_misspelt_column_suggests(lalonde):
    with pytest.raises(InputError) as e:
        match(lalonde, "treet", ["age", "educ", "rac"], source="lalonde.csv")
    text = e.value.render()
    assert "did you mean 'treat'" in text and "did you mean 'race'" in text
    assert _problems(e)[0].file == "lalonde.csv"


def test_non_binary_treatment_names_row_and_value(lalonde):
    df = lalonde.copy()
    df.loc[4, "treat"] = 2
    with pytest.raises(InputError) as e:
        match(df, "treat", ["age"], row_numbers=range(2, len(df) + 2), source="f.csv")
    (p,) = _problems(e)
    assert (p.row, p.column, str(p.value)) == (6, "treat", "2")
    assert "binary" in p.expected


def test_missing_covariate_values_name_rows(lalonde):
    df = lalonde.copy()
    df.loc[[3, 10], "re74"] = np.nan
    df.loc[7, "race"] = None
    with pytest.raises(InputError) as e:
        match(df, "treat", COVS)
    got = sorted((p.row, p.column) for p in _problems(e))
    assert got == [(4, "re74"), (8, "race"), (11, "re74")]


def test_missing_treatment_value(lalonde):
    df = lalonde.copy()
    df["treat"] = df["treat"].astype(float)
    df.loc[0, "treat"] = np.nan
    with pytest.raises(InputError) as e:
        match(df, "treat", ["age"])
    assert _problems(e)[0].row == 1 and "missing" in _problems(e)[0].expected


def test_no_controls_and_no_treated(lalonde):
    with pytest.raises(InputError, match="no control units"):
        match(lalonde[lalonde.treat == 1], "treat", ["age"])
    with pytest.raises(InputError, match="no treated units"):
        match(lalonde[lalonde.treat == 0], "treat", ["age"])


def test_text_in_numeric_column(lalonde):
    df = lalonde.copy()
    df["age"] = df["age"].astype(str)
    df.loc[5, "age"] = "twenty"
    with pytest.raises(InputError) as e:
        match(df, "treat", ["age"])
    (p,) = _problems(e)
    assert (p.row, p.value, p.column) == (6, "twenty", "age")


def test_infinite_and_duplicate_ids(lalonde):
    df = lalonde.copy()
    df.loc[2, "re74"] = np.inf
    df.loc[9, "id"] = df.loc[8, "id"]
    with pytest.raises(InputError) as e:
        match(df, "treat", ["re74"], id="id")
    kinds = sorted((p.row, p.column) for p in _problems(e))
    assert kinds == [(3, "re74"), (10, "id")]


@pytest.mark.parametrize("kw, fragment", [
    (dict(ratio=0), "ratio"),
    (dict(ratio=1.5), "ratio"),
    (dict(caliper=-1), "caliper"),
    (dict(caliper="wide"), "caliper"),
    (dict(distance="mahalanobis", caliper=0.2), "propensity score"),
    (dict(distance="mahalanobis", discard="both"), "common support"),
    (dict(distance="logt"), "did you mean 'logit'"),
    (dict(discard="some"), "discard"),
    (dict(m_order="random"), "m_order"),
    (dict(caliper={"married": 0.1}), "binary or categorical"),
    (dict(caliper={"agee": 0.1}), "did you mean 'age'"),
    (dict(exact="mariage"), "did you mean 'married'"),
])
def test_bad_options(lalonde, kw, fragment):
    with pytest.raises(InputError) as e:
        match(lalonde, "treat", COVS, **kw)
    assert fragment in e.value.render()


def test_exact_with_no_shared_cell(lalonde):
    df = lalonde.copy()
    df["cell"] = np.where(df.treat == 1, "x", "y")
    with pytest.raises(InputError, match="no exact-matching cell"):
        match(df, "treat", ["age"], exact="cell")


def test_treatment_as_covariate_and_empty_covariates(lalonde):
    with pytest.raises(InputError, match="treatment column cannot also be"):
        match(lalonde, "treat", ["age", "treat"])
    with pytest.raises(InputError, match="at least one covariate"):
        match(lalonde, "treat", [])


def test_family_bad_k_and_metric(lalonde):
    with pytest.raises(InputError, match="family size"):
        family_of_schools(lalonde, "treat", ["age"], k=0)
    with pytest.raises(InputError, match="did you mean 'zscore'"):
        family_of_schools(lalonde, "treat", ["age"], metric="zscor")


def test_variance_ratio_undefined_when_matched_comparisons_do_not_vary():
    """A covariate constant among the matched comparison units: the variance ratio is undefined
    (NaN), not a crash (seen in a small DfE round-trip study)."""
    df = pd.DataFrame({"t": [1, 1, 0, 0, 0, 0], "x": [1.0, 2.0, 5.0, 5.0, 50.0, 60.0],
                       "z": [0.1, 0.3, 0.2, 0.2, 9.0, 9.5]})
    r = match(df, "t", ["x", "z"], distance="mahalanobis")
    assert list(r.weights) == [1, 1, 1, 1, 0, 0]  # the two identical comparison units
    assert math.isnan(r.balance_matched.loc["x", "Var. Ratio"])
    assert math.isnan(r.balance_matched.loc["z", "Var. Ratio"])
    assert r.balance_matched.loc["x", "Means Control"] == 5.0
