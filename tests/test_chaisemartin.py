"""de Chaisemartin & D'Haultfoeuille (2024) DID_l for a treatment that switches on and off
(evaluation/estimators/chaisemartin.py): against the diff-diff package's
ChaisemartinDHaultfoeuille on a shared panel, against a loop-by-loop transcription of the
paper's formulas, recovery of a planted effect with leaving and re-joining, coverage
(slow), and bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from evaluation.errors import InputError
from evaluation.estimators.chaisemartin import chaisemartin_dhaultfoeuille

COLS = dict(y="y", unit="u", time="t", treatment="d")


def switching_panel(n=300, T=10, seed=0, effect=2.0, p_base1=0.2, p_switch=0.6, p_back=0.4,
                    effect_sd=0.0, cluster_size=5):
    """Units start out (0) or in (1); a share switch once at a random period and some of
    those switch back later (leave and re-join, or join and leave). Y = unit effect + period
    effect + tau_g * D_gt + noise: a contemporaneous effect tau_g (mean ``effect``) while
    switched, nothing after switching back. Returns the long panel and tau_g."""
    rng = np.random.default_rng(seed)
    base = (rng.random(n) < p_base1).astype(int)
    D = np.repeat(base[:, None], T, axis=1)
    F = rng.integers(2, T, n)
    for g in np.flatnonzero(rng.random(n) < p_switch):
        D[g, F[g]:] = 1 - base[g]
        if rng.random() < p_back and F[g] + 2 < T:
            D[g, rng.integers(F[g] + 1, T):] = base[g]
    tau = effect + effect_sd * rng.normal(size=n)
    Y = (rng.normal(0, 1, n)[:, None] + np.cumsum(rng.normal(0, 0.5, T))[None, :]
         + tau[:, None] * D + rng.normal(0, 1, (n, T)))
    df = pd.DataFrame({"u": np.repeat(np.arange(n), T), "t": np.tile(np.arange(2011, 2011 + T), n),
                       "y": Y.ravel(), "d": D.ravel(), "c": np.repeat(np.arange(n) // cluster_size, T)})
    return df, tau


# --- a loop-by-loop transcription of the paper (eq. 3-4, placebos, Lemma 4, Theorem 1) ---------

def oracle(df, effects, placebo, cluster=None):
    Y = df.pivot(index="u", columns="t", values="y").to_numpy()
    D = df.pivot(index="u", columns="t", values="d").to_numpy()
    n, T = Y.shape
    cl = np.arange(n) if cluster is None else df.groupby("u")[cluster].first().to_numpy()
    base = D[:, 0]
    F = np.array([next((t for t in range(T) if D[g, t] != base[g]), T) for g in range(n)])
    S = np.array([0 if F[g] == T else (1 if D[g, F[g]] > base[g] else -1) for g in range(n)])
    Tg = np.array([max(F[h] - 1 for h in range(n) if base[h] == base[g]) for g in range(n)])
    cohort = [(base[g], F[g], S[g]) for g in range(n)]

    def se(U, N):
        Uc = U.copy()
        for c in set(cohort):
            m = np.array([k == c for k in cohort])
            Uc[m] -= U[m].mean()
        sums = pd.Series(Uc).groupby(cl).sum().to_numpy()
        return np.sqrt((sums ** 2).sum()) / N

    out = {"effects": {}, "placebos": {}, "eligible": {}}
    Us, total_dose = [], 0.0
    for ell in range(1, effects + placebo + 1):
        for kind in ("effect", "placebo"):
            if (kind == "effect" and ell > effects) or (kind == "placebo" and ell > placebo):
                continue
            U, elig, dids = np.zeros(n), [], []
            for g in range(n):
                f = F[g]
                if S[g] == 0 or f - 1 + ell > min(T - 1, Tg[g]):
                    continue
                o = f - 1 + ell if kind == "effect" else f - 1 - ell
                if o < 0:
                    continue
                ctrl = [h for h in range(n) if base[h] == base[g] and F[h] > f - 1 + ell]
                dy = Y[g, o] - Y[g, f - 1]
                dyc = np.array([Y[h, o] - Y[h, f - 1] for h in ctrl])
                dids.append(S[g] * (dy - dyc.mean()))
                elig.append(g)
                U[g] += S[g] * dy
                U[ctrl] -= S[g] * dyc / len(ctrl)
            N = len(elig)
            assert np.isclose(U.sum() / N, np.mean(dids))
            key = "effects" if kind == "effect" else "placebos"
            out[key][ell] = (np.mean(dids), se(U, N), N)
            if kind == "effect":
                out["eligible"][ell] = elig
                total_dose += sum(abs(D[g, F[g] - 1 + ell] - base[g]) for g in elig)
                Us.append(U)
    Ud = sum(Us) / total_dose
    out["delta"] = (Ud.sum(), se(Ud, 1.0))
    out["F"], out["base"], out["D"] = F, base, D
    return out


def rows(result, kind):
    et = result.event_time
    return et[et["kind"] == kind].set_index("horizon")


def test_matches_the_papers_formulas_loop_by_loop():
    df, _ = switching_panel(n=120, T=8, seed=3)
    r = chaisemartin_dhaultfoeuille(df, **COLS, effects=4, placebo=3)
    ref = oracle(df, effects=4, placebo=3)
    for kind, key in (("effect", "effects"), ("placebo", "placebos")):
        got = rows(r, kind)
        for ell, (est, se, N) in ref[key].items():
            assert got.loc[ell, "estimate"] == pytest.approx(est, abs=1e-10)
            assert got.loc[ell, "se"] == pytest.approx(se, abs=1e-10)
            assert got.loc[ell, "n_switchers"] == N
    assert r.overall.estimate == pytest.approx(ref["delta"][0], abs=1e-10)
    assert r.overall.se == pytest.approx(ref["delta"][1], abs=1e-10)


def test_clustered_se_is_the_cluster_sum_of_the_centred_influence_function():
    df, _ = switching_panel(n=150, T=8, seed=4, cluster_size=4)
    r = chaisemartin_dhaultfoeuille(df, **COLS, effects=3, placebo=2, cluster="c")
    ref = oracle(df, effects=3, placebo=2, cluster="c")
    got = rows(r, "effect")
    for ell, (est, se, _) in ref["effects"].items():
        assert got.loc[ell, "se"] == pytest.approx(se, abs=1e-10)
    assert r.variance.cluster == "c" and r.variance.n_clusters == 38
    # one unit per cluster is the default (unit-level) variance
    df["one"] = df["u"]
    a = chaisemartin_dhaultfoeuille(df, **COLS, effects=3, cluster="one").event_time
    b = chaisemartin_dhaultfoeuille(df, **COLS, effects=3).event_time
    np.testing.assert_allclose(a["se"], b["se"], rtol=1e-12)


# --- the cross-check with diff-diff ---------------------------------------------------------------

def _diff_diff(df, L, drop_larger_lower=False):
    dd = pytest.importorskip("diff_diff")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = dd.ChaisemartinDHaultfoeuille(drop_larger_lower=drop_larger_lower, twfe_diagnostic=False)
        return est.fit(df, outcome="y", unit="u", time="t", treatment="d", L_max=L)


def test_agrees_with_diff_diff_on_a_shared_panel():
    """Switchers in and out, some switching back: DID_l, placebos, normalised effects, their
    SEs and N_l agree with diff-diff (drop_larger_lower=False keeps the units that switch
    back, as the paper does) to 1e-6; in fact to rounding."""
    df, _ = switching_panel(n=400, T=10, seed=11)
    L, P = 5, 4
    ours = chaisemartin_dhaultfoeuille(df, **COLS, effects=L, placebo=P)
    theirs = _diff_diff(df, L)
    eff, pl = rows(ours, "effect"), rows(ours, "placebo")
    diffs = []
    for ell in range(1, L + 1):
        e = theirs.event_study_effects[ell]
        nrm = theirs.normalized_effects[ell]
        diffs += [eff.loc[ell, "estimate"] - e["effect"], eff.loc[ell, "se"] - e["se"],
                  eff.loc[ell, "normalized"] - nrm["effect"], eff.loc[ell, "normalized_se"] - nrm["se"],
                  eff.loc[ell, "dose"] - nrm["denominator"]]
        assert eff.loc[ell, "n_switchers"] == e["n_obs"]
    for ell in range(1, P + 1):
        p = theirs.placebo_event_study[-ell]
        diffs += [pl.loc[ell, "estimate"] - p["effect"], pl.loc[ell, "se"] - p["se"]]
        assert pl.loc[ell, "n_switchers"] == p["n_obs"]
    assert max(abs(d) for d in diffs) < 1e-6


def test_average_total_effect_agrees_with_diff_diff_when_no_one_switches_back():
    """Without switching back the two definitions of delta coincide (weights N_l / total dose)."""
    df, _ = switching_panel(n=400, T=10, seed=12, p_back=0.0)
    ours = chaisemartin_dhaultfoeuille(df, **COLS, effects=4)
    theirs = _diff_diff(df, 4)
    assert ours.overall.estimate == pytest.approx(theirs.cost_benefit_delta["delta"], abs=1e-6)
    for ell, w in theirs.cost_benefit_delta["weights"].items():
        assert ours.details["average_total_effect"]["weights"][ell] == pytest.approx(w, abs=1e-12)


def test_average_total_effect_follows_the_paper_when_units_switch_back():
    """With reversals diff-diff weights horizon l by its share of the switched unit-periods
    (its delta is then not the effect per unit of treatment); the paper's (Lemma 4) weights
    are N_l / total dose. With a contemporaneous effect of 2 per switched period the paper's
    delta is 2 in expectation; diff-diff's is pulled towards 0 by the horizons where units
    have switched back."""
    df, _ = switching_panel(n=3000, T=10, seed=13, p_back=0.6)
    ours = chaisemartin_dhaultfoeuille(df, **COLS, effects=5)
    assert abs(ours.overall.estimate - 2.0) < 4 * ours.overall.se
    theirs = _diff_diff(df, 5)
    assert theirs.cost_benefit_delta["delta"] < ours.overall.estimate - 4 * ours.overall.se


def test_diff_diff_default_drops_units_that_switch_back():
    df, _ = switching_panel(n=300, T=10, seed=14)
    theirs = _diff_diff(df, 2, drop_larger_lower=True)
    ours = chaisemartin_dhaultfoeuille(df, **COLS, effects=2)
    assert theirs.n_groups_dropped_crossers > 0
    assert rows(ours, "effect").loc[1, "n_switchers"] > theirs.event_study_effects[1]["n_obs"]


# --- recovery of a planted effect ------------------------------------------------------------------

def _design(df):
    D = df.pivot(index="u", columns="t", values="d").to_numpy()
    n, T = D.shape
    base = D[:, 0]
    changed = D != base[:, None]
    F = np.where(changed.any(axis=1), changed.argmax(axis=1), T)
    Tg = np.array([(F[base == b] - 1).max() for b in base])
    return D, base, F, Tg


def _truth(df, tau, effects):
    """The estimands for Y = ... + tau_g D_gt (balanced panel): DID_l's expectation is the
    mean over the switchers eligible at l (F_g - 1 + l <= T_g) of tau_g |D_{g,F_g-1+l} - D_{g,1}|
    (sign convention S_g); delta's is the sum of tau_g |D_{g,F_g-1+l} - D_{g,1}| over
    eligible (g, l) over the sum of |D_{g,F_g-1+l} - D_{g,1}|."""
    D, base, F, Tg = _design(df)
    T = D.shape[1]
    out, num, den = {}, 0.0, 0.0
    for ell in range(1, effects + 1):
        elig = np.flatnonzero((F < T) & (F - 1 + ell <= np.minimum(T - 1, Tg)))
        dose = np.abs(D[elig, F[elig] - 1 + ell] - base[elig])
        out[ell] = float(np.mean(tau[elig] * dose))
        num += float(np.sum(tau[elig] * dose))
        den += float(dose.sum())
    out["delta"] = num / den
    return out


def test_recovers_a_planted_effect_with_leaving_and_rejoining():
    df, tau = switching_panel(n=400, T=8, seed=21, effect=1.5, effect_sd=0.5, p_base1=0.3, p_back=0.5)
    r = chaisemartin_dhaultfoeuille(df, **COLS, effects=4, placebo=3)
    truth = _truth(df, tau, 4)
    eff = rows(r, "effect")
    for ell in range(1, 5):
        value = truth[ell]
        assert abs(eff.loc[ell, "estimate"] - value) < 4 * eff.loc[ell, "se"], (ell, value)
    for _, row in rows(r, "placebo").iterrows():
        assert abs(row["estimate"]) < 4 * row["se"]
    assert r.details["placebo_joint_test"]["p"] > 1e-4
    assert r.details["n_switchers_in"] > 0 and r.details["n_switchers_out"] > 0
    assert any("more than once" in note for note in r.notes)
    # the average total effect per switched unit-period: the switched cells' mean effect
    assert abs(r.overall.estimate - truth["delta"]) < 4 * r.overall.se
    assert abs(truth["delta"] - 1.5) < 0.1


def test_switchers_out_are_counted_with_the_sign_of_more_treatment():
    """Leaving lowers Y by 2: the pooled, 'in' and 'out' estimates are all about +2."""
    df, _ = switching_panel(n=600, T=8, seed=22, p_base1=0.5, p_back=0.0)
    for who in ("", "in", "out"):
        r = chaisemartin_dhaultfoeuille(df, **COLS, effects=2, switchers=who)
        e = rows(r, "effect").loc[1]
        assert abs(e["estimate"] - 2.0) < 4 * e["se"]
    both = chaisemartin_dhaultfoeuille(df, **COLS, effects=2)
    out = chaisemartin_dhaultfoeuille(df, **COLS, effects=2, switchers="out")
    assert both.details["by_direction"]["leavers"][0]["estimate"] == pytest.approx(
        rows(out, "effect").loc[1, "estimate"], abs=1e-12)


def test_missing_outcomes_leave_out_only_the_differences_that_need_them():
    df, _ = switching_panel(n=200, T=8, seed=23)
    full = chaisemartin_dhaultfoeuille(df, **COLS, effects=2)
    holed = df.copy()
    holed.loc[holed.sample(frac=0.05, random_state=1).index, "y"] = np.nan
    r = chaisemartin_dhaultfoeuille(holed, **COLS, effects=2)
    assert (rows(r, "effect")["n_switchers"] <= rows(full, "effect")["n_switchers"]).all()
    assert np.isfinite(rows(r, "effect")["estimate"]).all()


def test_result_is_the_projects_typed_result_and_json_ready():
    df, _ = switching_panel(n=150, T=8, seed=24)
    r = chaisemartin_dhaultfoeuille(df, **COLS, effects=3, placebo=2)
    et = r.event_time
    assert list(et["e"]) == [-3, -2, 0, 1, 2]  # placebo l at e = -l-1, effect l at e = l-1, ref -1 omitted
    assert {"estimate", "se", "ci_low", "ci_high", "p_value"} <= set(et.columns)
    assert r.n_units == 150 and r.n_obs == 1200 and r.variance.n_clusters == 150
    assert "Theorem 1" in r.variance.describe()
    json.dumps(r.to_dict())


# --- coverage (slow) -------------------------------------------------------------------------------

@pytest.mark.slow
def test_coverage_of_the_95_percent_intervals():
    """200 panels of 300 units: the 95% CIs of DID_1, DID_3 and delta cover the truth in
    90-99.5% of replications (the variance is conservative only with heterogeneous effects
    across cohorts; here effects vary by unit), the placebo's CI covers 0 as often."""
    hits = {"1": 0, "3": 0, "delta": 0, "pl": 0}
    reps = 200
    for s in range(reps):
        df, tau = switching_panel(n=300, T=8, seed=1000 + s, effect=1.0, effect_sd=0.5, p_base1=0.3)
        r = chaisemartin_dhaultfoeuille(df, **COLS, effects=3, placebo=1)
        eff, truth = rows(r, "effect"), _truth(df, tau, 3)
        for ell in (1, 3):
            hits[str(ell)] += eff.loc[ell, "ci_low"] <= truth[ell] <= eff.loc[ell, "ci_high"]
        pl = rows(r, "placebo").loc[1]
        hits["pl"] += pl["ci_low"] <= 0 <= pl["ci_high"]
        hits["delta"] += r.overall.ci_low <= truth["delta"] <= r.overall.ci_high
    print({k: h / reps for k, h in hits.items()})
    for key, h in hits.items():
        assert 0.90 <= h / reps <= 0.995, (key, h / reps)


# --- bad input -----------------------------------------------------------------------------------

def test_non_binary_treatment_is_an_input_error():
    df, _ = switching_panel(n=50, T=6, seed=31)
    df.loc[3, "d"] = 2
    with pytest.raises(InputError, match="treatment must be binary"):
        chaisemartin_dhaultfoeuille(df, **COLS)


def test_no_switchers_is_an_input_error():
    df, _ = switching_panel(n=50, T=6, seed=32, p_switch=0.0)
    with pytest.raises(InputError, match="no unit changes treatment"):
        chaisemartin_dhaultfoeuille(df, **COLS)
    df, _ = switching_panel(n=50, T=6, seed=32, p_base1=0.0)
    with pytest.raises(InputError, match="no unit switches out"):
        chaisemartin_dhaultfoeuille(df, **COLS, switchers="out")


def test_switchers_without_comparison_units_is_an_input_error():
    n, T = 20, 5
    df = pd.DataFrame({"u": np.repeat(np.arange(n), T), "t": np.tile(np.arange(T), n),
                       "y": np.random.default_rng(0).normal(size=n * T),
                       "d": np.tile((np.arange(T) >= 2).astype(int), n)})
    with pytest.raises(InputError, match="no switcher has a comparison unit"):
        chaisemartin_dhaultfoeuille(df, **COLS)


def test_missing_columns_rows_and_duplicates_are_input_errors():
    df, _ = switching_panel(n=30, T=6, seed=33)
    with pytest.raises(InputError, match="missing required columns") as err:
        chaisemartin_dhaultfoeuille(df.drop(columns=["d"]), **COLS)
    assert "treatment" in str(err.value)
    with pytest.raises(InputError, match="row\\(s\\) are missing"):
        chaisemartin_dhaultfoeuille(df.drop(index=[7]), **COLS)
    with pytest.raises(InputError, match="more than one row"):
        chaisemartin_dhaultfoeuille(pd.concat([df, df.iloc[[5]]]), **COLS)
    bad = df.copy()
    bad.loc[4, "d"] = np.nan
    with pytest.raises(InputError, match="treatment must not be missing"):
        chaisemartin_dhaultfoeuille(bad, **COLS)
    bad = df.copy()
    bad.loc[bad["u"] == 0, "c"] = [1, 1, 1, 2, 2, 2]
    with pytest.raises(InputError, match="cluster must be constant within a unit"):
        chaisemartin_dhaultfoeuille(bad, **COLS, cluster="c")
    with pytest.raises(InputError, match="switchers must be"):
        chaisemartin_dhaultfoeuille(df, **COLS, switchers="both")
    with pytest.raises(InputError, match="effects must be"):
        chaisemartin_dhaultfoeuille(df, **COLS, effects=0)


# --- weights ---------------------------------------------------------------------------------------

def _weighted_panel(seed=41, n=160, T=9):
    """Switchers in and out, some switching back, 6% of outcomes missing, clusters of 4 units and
    unequal integer weights 1..5 per unit."""
    df, _ = switching_panel(n=n, T=T, seed=seed, p_base1=0.35, p_back=0.5, cluster_size=4)
    rng = np.random.default_rng(seed)
    df.loc[df.sample(frac=0.06, random_state=seed).index, "y"] = np.nan
    w = rng.integers(1, 6, n)
    df["w"] = w[df["u"].to_numpy()]
    return df


def _duplicated(df):
    """Each unit repeated w times (new unit ids), the copies keeping the original id as ``orig``."""
    out = df.loc[df.index.repeat(df["w"])].copy()
    out["copy"] = out.groupby(["u", "t"]).cumcount()
    out["orig"] = out["u"]
    out["u"] = out["u"] * 10 + out["copy"]
    return out.drop(columns=["copy", "w"]).reset_index(drop=True)


def _numbers(r):
    et = r.event_time
    return np.concatenate([et["estimate"], et["se"], et["normalized"].fillna(0), et["normalized_se"].fillna(0),
                           [r.overall.estimate, r.overall.se, r.details["placebo_joint_test"]["statistic"]]])


def test_unit_weights_give_the_unweighted_numbers_exactly():
    df = _weighted_panel()
    df["one"] = 1.0
    a = chaisemartin_dhaultfoeuille(df, **COLS, effects=4, placebo=3, cluster="c")
    b = chaisemartin_dhaultfoeuille(df, **COLS, effects=4, placebo=3, cluster="c", weights="one")
    assert a.event_time.equals(b.event_time)
    assert a.overall.to_dict() == b.overall.to_dict()
    assert a.details["placebo_joint_test"] == b.details["placebo_joint_test"]
    assert a.details["by_direction"] == b.details["by_direction"]
    assert b.details["weights"] == "one" and a.details["weights"] is None


@pytest.mark.parametrize("coarse", [False, True])
def test_integer_weights_equal_duplicating_each_unit_in_its_own_cluster(coarse):
    """w_g copies of unit g, the copies sharing g's cluster: DID_l, placebos, normalised effects,
    delta, the joint placebo test and every SE equal the weighted fit's to 1e-10 (units switch in
    and out, some back; outcomes missing; weights 1..5)."""
    df = _weighted_panel()
    dup = _duplicated(df)
    assert len(dup) == int(df["w"].sum())
    kw = {"effects": 4, "placebo": 3}
    if coarse:  # clusters of 4 original units
        w = chaisemartin_dhaultfoeuille(df, **COLS, **kw, weights="w", cluster="c")
        d = chaisemartin_dhaultfoeuille(dup, **COLS, **kw, cluster="c")
    else:  # each original unit its own cluster
        w = chaisemartin_dhaultfoeuille(df, **COLS, **kw, weights="w")
        d = chaisemartin_dhaultfoeuille(dup, **COLS, **kw, cluster="orig")
    assert w.variance.n_clusters == d.variance.n_clusters
    assert list(w.event_time["e"]) == list(d.event_time["e"])
    diff = np.max(np.abs(_numbers(w) - _numbers(d)))
    assert diff < 1e-10, diff
    for direction in ("joiners", "leavers"):
        for a, b in zip(w.details["by_direction"][direction], d.details["by_direction"][direction]):
            assert a["estimate"] == pytest.approx(b["estimate"], abs=1e-10)
            assert a["se"] == pytest.approx(b["se"], abs=1e-10)
    for ell, v in d.details["average_total_effect"]["weights"].items():
        assert w.details["average_total_effect"]["weights"][ell] == pytest.approx(v, abs=1e-12)
    # and the weights matter: the unweighted fit differs
    u = chaisemartin_dhaultfoeuille(df, **COLS, **kw)
    assert np.max(np.abs(_numbers(u) - _numbers(w))) > 1e-3


def test_bad_weights_are_input_errors():
    df = _weighted_panel(n=40, T=6)
    for value, match in ((0.0, "greater than 0"), (-1.0, "greater than 0"), (np.nan, "present, finite"),
                         (np.inf, "finite")):
        bad = df.copy()
        bad["w"] = bad["w"].astype(float)
        bad.loc[7, "w"] = value
        with pytest.raises(InputError, match=match) as err:
            chaisemartin_dhaultfoeuille(bad, **COLS, weights="w")
        p = err.value.problems[0]
        assert (p.row, p.column) == (8, "w")
    bad = df.copy()
    bad["w"] = bad["w"].astype(object)
    bad.loc[3, "w"] = "heavy"
    with pytest.raises(InputError, match="weights must be numeric"):
        chaisemartin_dhaultfoeuille(bad, **COLS, weights="w")
    bad = df.copy()
    bad.loc[bad["u"] == 2, "w"] = [1, 1, 1, 2, 2, 2]
    with pytest.raises(InputError, match="weights must be constant within a unit") as err:
        chaisemartin_dhaultfoeuille(bad, **COLS, weights="w")
    assert err.value.problems[0].column == "w" and err.value.problems[0].value == 2
    with pytest.raises(InputError, match="missing required columns"):
        chaisemartin_dhaultfoeuille(df, **COLS, weights="nope")


# --- oracle: Callaway & Sant'Anna with not-yet-treated comparisons on an absorbing panel ----------

def staggered_panel(n=300, seed=5):
    """Absorbing staggered joining 2012-2017, never-joiners, a cohort treated from the first year
    (2010: no untreated year; dCDH's baseline-1 units, dropped by CS) and one after the last
    (2025: never treated in the panel); effects growing with time since joining; matching-like
    weights (1 for joiners, 0.25..3 for the others)."""
    rng = np.random.default_rng(seed)
    years = np.arange(2010, 2020)
    cohort = rng.choice([0, 0, 0, 2012, 2013, 2015, 2017, 2010, 2025], n)
    w = np.where((cohort > 2010) & (cohort < 2025), 1.0, rng.choice([0.25, 0.5, 1.0, 1.5, 3.0], n))
    g = np.repeat(cohort, len(years))
    t = np.tile(years, n)
    D = (g > 0) & (t >= g)
    y = (np.repeat(rng.normal(size=n), len(years)) + 0.3 * (t - 2010) + D * (1.0 + 0.2 * (t - g))
         + rng.normal(size=n * len(years)))
    return pd.DataFrame({"u": np.repeat(np.arange(n), len(years)), "t": t, "y": y, "g": g, "d": D.astype(int),
                         "w": np.repeat(w, len(years))})


@pytest.mark.parametrize("weights", [None, "w"])
def test_did_l_is_callaway_santanna_with_not_yet_treated_comparisons(weights):
    """On an absorbing staggered panel DID_{g,l} with not-yet-switched controls is CS's
    ATT(g, g+l-1) with not-yet-treated controls (cohort > g+l-1 or never) and base period g-1
    (R did's post-treatment base, varying or universal alike), and DID_l averages them by
    (weighted) group size as aggte's dynamic aggregation does (pg = mean(w 1{G = g})): DID_l =
    theta_es(l-1) to rounding, unweighted and with unequal weights. (CS's 'dr' 2x2 with no
    covariates is the difference of weighted means, which is dCDH's weighted DID_{g,l}.)"""
    from evaluation.estimators.callaway_santanna import aggte, att_gt

    df = staggered_panel()
    ours = chaisemartin_dhaultfoeuille(df, y="y", unit="u", time="t", treatment="d", effects=8, weights=weights)
    gt = att_gt(df, y="y", unit="u", time="t", cohort="g", control="notyet", weights=weights)
    cs = aggte(gt, "dynamic", min_e=0).event_time.set_index("e")["estimate"]
    mine = ours.event_time.set_index("e")["estimate"]
    assert list(mine.index) == list(range(8)) == list(cs.index)  # 2012 joiners: e = 0..7
    diff = float(np.max(np.abs(mine.to_numpy() - cs.loc[mine.index].to_numpy())))
    assert diff < 1e-10, diff
    if weights:  # the weights matter
        plain_fit = chaisemartin_dhaultfoeuille(df, y="y", unit="u", time="t", treatment="d", effects=8)
        assert np.max(np.abs(plain_fit.event_time["estimate"] - ours.event_time["estimate"])) > 1e-3
