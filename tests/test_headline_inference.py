"""The headline-inference policy and the interval it applies (evaluation.inference.headline).

Fast tests: the policy is pure and follows the calibration snapshot; headline_interval returns the
fitted estimator's own point estimate, uses the matching weights in every refit (a refit that does
not reproduce the fit is an error; the jackknife equals brute-force weighted delete-one-cluster
refits), and is deterministic given the seed.

Slow tests (``-m slow``): a smaller Monte Carlo grid re-run with a different seed, holding the
chosen methods' coverage within the band [0.93, 0.97] widened by 3 Monte Carlo SEs, and the chosen
pre-test's size within 0.07 + 3 Monte Carlo SEs.
"""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evaluation.errors import InputError
from evaluation.estimators.callaway_santanna import aggte, att_gt
from evaluation.estimators.imputation import imputation_did
from evaluation.estimators.sun_abraham import sun_abraham
from evaluation.estimators.twfe import twfe_did
from evaluation.inference.candidates import METHODS, cs_jackknife, jackknife_linear
from evaluation.inference.coverage_study import Design, simulate
from evaluation.inference.headline import (
    BAND,
    CALIBRATED_TREATED,
    CALIBRATION,
    POLICY,
    PRETEST,
    choose_inference,
    headline_interval,
    headline_pretest,
)

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "coverage_results.json"
COLS = dict(y="y", unit="urn", time="year", cohort="cohort", cluster="cluster")
PRIMARY = ("callaway_santanna", "sun_abraham", "imputation", "twfe")


@pytest.fixture(scope="module")
def panel():
    """A small partnership panel: 8 partnerships of 2-40 schools, 60 singleton comparison schools
    with non-trivial matching weights, heterogeneous effects."""
    design = Design(8, "heterogeneous", n_comparison=60)
    frame, _ = simulate(design, np.random.default_rng(11))
    return frame.drop(columns="tau")


@pytest.fixture(scope="module")
def fits(panel):
    w = dict(COLS, weights="weight")
    gt = att_gt(panel, control="never", **w)
    return {"gt": gt,
            "callaway_santanna": aggte(gt, "simple", max_e=2),
            "sun_abraham": sun_abraham(panel, **w),
            "imputation": imputation_did(panel, **w),
            "twfe": twfe_did(panel, **w)}


# ----------------------------------------------------------------------------- policy


@pytest.mark.parametrize("estimator", PRIMARY)
@pytest.mark.parametrize("g1", [2, 5, 8, 12, 15, 29, 30, 31, 100, 400])
def test_choice_is_a_candidate_with_a_reason(estimator, g1):
    ch = choose_inference(estimator, g1, g1 + 400)
    assert ch.estimator == estimator
    est, method = ch.method.split(":")
    assert est == estimator and method in METHODS[estimator]
    assert "calibration table" in ch.reason and f"{g1} treated partnerships" in ch.reason
    assert ch == choose_inference(estimator, g1, g1 + 400)  # pure
    with pytest.raises(FrozenInstanceError):
        ch.method = "x"  # type: ignore[misc]
    if g1 < CALIBRATED_TREATED[0]:
        assert not ch.calibrated and "smallest calibrated design" in ch.flag


@pytest.mark.parametrize("estimator", PRIMARY)
def test_policy_follows_the_calibration_table(estimator):
    """At every calibrated design the chosen method covers within the band, or the choice is
    flagged and is the best available method there."""
    for g1 in CALIBRATED_TREATED:
        ch = choose_inference(estimator, g1, g1 + 400)
        cov = CALIBRATION[ch.method][g1]
        if BAND[0] <= cov <= BAND[1]:
            assert ch.calibrated and ch.flag is None
            assert f"{cov:.3f}" in ch.reason
        else:
            assert not ch.calibrated and "no implemented method covers" in ch.flag
            others = [CALIBRATION[f"{estimator}:{m}"][g1] for m in METHODS[estimator]]
            assert abs(cov - 0.95) <= min(abs(c - 0.95) for c in others) + 1e-12


def test_thresholds_are_ordered():
    for estimator, steps in POLICY.items():
        lows = [lo for lo, _ in steps]
        assert lows == sorted(lows) and lows[0] <= 2
        assert all(m in METHODS[estimator] for _, m in steps)


@pytest.mark.skipif(not RESULTS.exists(), reason="benchmarks/coverage_results.json not generated")
def test_snapshot_matches_the_benchmark_results():
    saved = json.loads(RESULTS.read_text())
    worst: dict[str, dict[int, float]] = {}  # per row and G1, the effect design further from 0.95
    for cell in saved["cells"]:
        g1 = cell["design"]["n_treated"]
        for row, hits in cell["cover"].items():
            p = hits / cell["denominators"][row]
            cur = worst.setdefault(row, {}).get(g1)
            if cur is None or abs(p - 0.95) > abs(cur - 0.95):
                worst[row][g1] = p
    for row, by_g in CALIBRATION.items():
        for g1, cov in by_g.items():
            assert worst[row][g1] == pytest.approx(cov, abs=5e-4), (row, g1)


@pytest.mark.parametrize("bad", [
    dict(estimator="event_study", n_treated_clusters=10, n_clusters=400),
    dict(estimator="twfe", n_treated_clusters=1, n_clusters=400),
    dict(estimator="twfe", n_treated_clusters=10, n_clusters=10),
    dict(estimator="twfe", n_treated_clusters=10.0, n_clusters=400),
    dict(estimator="twfe", n_treated_clusters=True, n_clusters=400),
])
def test_bad_policy_inputs(bad):
    with pytest.raises(InputError):
        choose_inference(**bad)


def test_few_comparison_clusters_are_flagged():
    ch = choose_inference("callaway_santanna", 15, 30)
    assert not ch.calibrated and "comparison clusters" in ch.flag


# ----------------------------------------------------------------------------- interval


@pytest.mark.parametrize("estimator", PRIMARY)
def test_headline_keeps_the_fitted_estimate(panel, fits, estimator):
    kw = dict(gt=fits["gt"], aggte_kwargs={"max_e": 2}) if estimator == "callaway_santanna" else {}
    h = headline_interval(panel, estimator, fits[estimator], alpha=0.05, seed=3, B=499, **kw)
    assert h.estimate == fits[estimator].overall.estimate  # the same number, not a refit's
    assert h.ci_low < h.estimate < h.ci_high and 0 <= h.p <= 1 and h.se > 0
    assert h.method == choose_inference(estimator, 8, 68).method
    assert h.n_treated_clusters == 8 and h.n_clusters == 68
    assert h.reason == choose_inference(estimator, 8, 68).reason
    again = headline_interval(panel, estimator, fits[estimator], alpha=0.05, seed=3, B=499, **kw)
    assert again == h  # deterministic with a seed
    assert set(h.to_dict()) >= {"estimate", "se", "ci_low", "ci_high", "p", "method", "df", "reason"}


def test_cs_without_gt_refits_with_the_same_weights(panel, fits):
    h = headline_interval(panel, "callaway_santanna", fits["callaway_santanna"],
                          aggte_kwargs={"max_e": 2})
    ref = headline_interval(panel, "callaway_santanna", fits["callaway_santanna"],
                            gt=fits["gt"], aggte_kwargs={"max_e": 2})
    assert h == ref
    with pytest.raises(InputError, match="aggte kwargs"):  # the fit used max_e=2
        headline_interval(panel, "callaway_santanna", fits["callaway_santanna"], gt=fits["gt"])


@pytest.mark.parametrize("estimator,fit", [("twfe", twfe_did), ("sun_abraham", sun_abraham)])
@pytest.mark.parametrize("method", ["wcr", "jackknife"])
def test_refits_use_the_matching_weights(panel, estimator, fit, method):
    """A fit without the matching weights is not what the weighted refit reproduces: error."""
    from evaluation.inference.headline import InferenceChoice

    unweighted = fit(panel, **COLS)
    choice = InferenceChoice(estimator, f"{estimator}:{method}", 8, 68, "test", True)
    with pytest.raises(InputError, match="same sample and weights"):
        headline_interval(panel, estimator, unweighted, choice=choice, B=99)
    # and the unweighted fit is reproduced when the panel carries no weight column
    h = headline_interval(panel.drop(columns="weight"), estimator, unweighted, choice=choice, B=99)
    assert h.estimate == unweighted.overall.estimate


def test_cs_jackknife_is_weighted_delete_one_cluster(panel, fits):
    theta, thetas, _ = cs_jackknife(fits["gt"], {"max_e": 2})
    assert theta == pytest.approx(fits["callaway_santanna"].overall.estimate, abs=1e-12)
    codes = pd.factorize(panel["cluster"])[0]
    for c in (0, 3, 7, 30):
        gt_c = att_gt(panel[codes != c], control="never", weights="weight", **COLS)
        assert thetas[c] == pytest.approx(aggte(gt_c, "simple", max_e=2).overall.estimate,
                                          abs=1e-10)


@pytest.mark.parametrize("estimator", ["twfe", "sun_abraham"])
def test_regression_jackknife_is_weighted_delete_one_cluster(panel, fits, estimator):
    from evaluation.inference.candidates import _sa_design

    g = panel["cohort"].to_numpy()
    t = panel["year"].to_numpy()
    if estimator == "twfe":
        X, kw = ((g > 0) & (t >= g)).astype(float), dict(R=np.array([1.0]))
    else:
        X, R = _sa_design(panel, fits[estimator], "cohort", "year")
        kw = dict(R=None, post=R > 0)
    theta, thetas, _ = jackknife_linear(panel, X, **kw)
    assert theta == pytest.approx(fits[estimator].overall.estimate, abs=1e-10)
    fit = twfe_did if estimator == "twfe" else sun_abraham
    codes = pd.factorize(panel["cluster"])[0]
    for c in (0, 5, 7, 40):
        ref = fit(panel[codes != c], weights="weight", **COLS).overall.estimate
        assert thetas[c] == pytest.approx(ref, abs=1e-10)


def test_jackknife_when_a_cohort_has_one_partnership():
    """Deleting a cohort's only partnership removes the cohort (its cells and its share)."""
    from evaluation.inference.candidates import _sa_design

    frame, _ = simulate(Design(5, "heterogeneous", n_comparison=50), np.random.default_rng(2))
    frame = frame.drop(columns="tau")
    frame["cohort"] = frame["cluster"].map({0: 4, 1: 4, 2: 5, 3: 5, 4: 6}).fillna(0).astype(int)
    w = dict(COLS, weights="weight")
    gt = att_gt(frame, control="never", **w)
    sa = sun_abraham(frame, **w)
    X, R = _sa_design(frame, sa, "cohort", "year")
    _, cs_thetas, _ = cs_jackknife(gt)
    _, sa_thetas, _ = jackknife_linear(frame, X, None, post=R > 0)
    codes = pd.factorize(frame["cluster"])[0]
    for c in range(5):
        ref = aggte(att_gt(frame[codes != c], control="never", **w), "simple").overall.estimate
        assert cs_thetas[c] == pytest.approx(ref, abs=1e-10)
        assert sa_thetas[c] == pytest.approx(ref, abs=1e-10)


def test_wild_bootstrap_headline_depends_on_the_seed_only(panel, fits):
    from evaluation.inference.headline import InferenceChoice

    choice = InferenceChoice("twfe", "twfe:wcr", 8, 68, "test", True)
    a = headline_interval(panel, "twfe", fits["twfe"], choice=choice, seed=1, B=199)
    b = headline_interval(panel, "twfe", fits["twfe"], choice=choice, seed=1, B=199)
    c = headline_interval(panel, "twfe", fits["twfe"], choice=choice, seed=2, B=199)
    assert a == b and a.seed == 1 and a.B == 199
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)


def test_headline_bad_inputs(panel, fits):
    with pytest.raises(InputError):
        headline_interval(panel.drop(columns="cluster"), "twfe", fits["twfe"])
    with pytest.raises(InputError):
        headline_interval(panel, "event_study", fits["twfe"])
    with pytest.raises(InputError):
        headline_interval(panel, "twfe", fits["twfe"],
                          choice=choose_inference("sun_abraham", 8, 68))


def test_headline_pretest(fits):
    out = headline_pretest(fits["gt"])
    assert 0 <= out["p_value"] <= 1 and out["df"] == 1 and "reason" in out
    assert PRETEST in ("average", "average-jk", "sup-t", "native")


# ----------------------------------------------------------------------------- slow: coverage


def _band(reps: int) -> tuple[float, float]:
    se = np.sqrt(0.95 * 0.05 / reps)
    return BAND[0] - 3 * se, BAND[1] + 3 * se


@pytest.mark.slow
@pytest.mark.parametrize("g1", [8, 15, 30, 100])
def test_chosen_methods_cover(g1):
    """~40 s per design: the policy's methods cover the true ATT (TWFE: its estimand), with a
    seed the calibration table did not use."""
    from evaluation.inference.coverage_study import run_cell

    reps = 250
    rows = [choose_inference(e, g1, g1 + 400).method for e in PRIMARY]
    cell = run_cell(Design(g1, "heterogeneous"), range(reps), seed=7, B=399, rows=rows,
                    pretests=(PRETEST,))
    lo, hi = _band(reps)
    for row in rows:
        p, se, n = cell.rate("cover", row)
        assert n == reps
        assert lo <= p <= hi, f"{row} covers {p:.3f} (MC SE {se:.3f}) with G1 = {g1}"
    size, _, _ = cell.rate("pretest", PRETEST)
    assert size <= 0.07 + 3 * np.sqrt(0.05 * 0.95 / reps), f"pre-test size {size:.3f}"
