"""Random-effects meta-analysis: checked against its defining equations and against published output
(metafor's BCG example, tests/data/bcg.SOURCE.md; DerSimonian & Kacker 2007)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.meta_analysis import combine_effects

from evaluation.synthesis import forest_plot, meta_analysis, pool
from tests.test_effects import make_result, with_blocks

DATA = Path(__file__).parent / "data"


def results_with(estimates, ses, types=None):
    out = []
    for i, (e, s) in enumerate(zip(estimates, ses)):
        r = make_result(estimate=e, se=s, sd=1.0, pupil_sd=1.0, treated=10_000, comparison=10_000, mdes=0.1)
        t = (types or ["multi_academy_trust"] * len(estimates))[i]
        r["study"] = {"id": f"s{i}", "title": f"Study {i}", "question": "?",
                      "definition": {"cohort": {"partnership_types": [t]}}}
        out.append(with_blocks(r))
    return out


def test_homogeneous_studies_pool_to_the_fixed_effect_mean():
    ses = np.array([0.05, 0.1, 0.08])
    m = meta_analysis(results_with([0.2, 0.2, 0.2], ses))
    j = 1 - 3 / (4 * 20_000 - 9)
    w = 1 / (j * ses) ** 2
    assert m.tau2 == 0 and m.i2 == 0
    assert m.pooled == pytest.approx(0.2 * j, rel=1e-12)
    assert m.se_z == pytest.approx(np.sqrt(1 / w.sum()), rel=1e-10)
    # Identical estimates: the Knapp-Hartung scale is 0 and, untruncated (metafor's test="knha"), so is its SE.
    assert m.q_hk == pytest.approx(0, abs=1e-20) and m.se == pytest.approx(0, abs=1e-12)


def test_paule_mandel_solves_its_estimating_equation():
    g = np.array([0.05, 0.35, 0.1, 0.6])
    ses = np.array([0.05, 0.06, 0.04, 0.08])
    m = meta_analysis(results_with(g, ses))
    j = 1 - 3 / (4 * 20_000 - 9)
    y, v = j * g, (j * ses) ** 2
    w = 1 / (v + m.tau2)
    mu = (w * y).sum() / w.sum()
    assert m.tau2 > 0
    assert (w * (y - mu) ** 2).sum() == pytest.approx(len(g) - 1, rel=1e-6)  # generalised Q = k - 1
    assert m.pooled == pytest.approx(mu, rel=1e-8)
    wf = 1 / v
    q = (wf * (y - (wf * y).sum() / wf.sum()) ** 2).sum()
    assert m.q == pytest.approx(q, rel=1e-10) and m.i2 == pytest.approx((q - 3) / q, rel=1e-10)
    assert m.table["weight"].sum() == pytest.approx(1.0)


def test_needs_two_studies():
    with pytest.raises(ValueError):
        meta_analysis(results_with([0.1], [0.1]))


def test_forest_plot(tmp_path):
    m = meta_analysis(results_with([0.1, 0.3], [0.05, 0.1], ["multi_academy_trust", "informal_cluster"]))
    assert set(m.table["formal"]) == {True, False}
    path = forest_plot(m, tmp_path / "forest.png")
    assert path.stat().st_size > 5000


def half_unit(printed: float, digits: int = 4):
    """A value printed to ``digits`` decimals: ours must round to it."""
    return pytest.approx(printed, abs=0.5 * 10 ** -digits)


def bcg():
    d = pd.read_csv(DATA / "bcg.csv")
    a, b, c, e = (d[col].to_numpy(float) for col in ("tpos", "tneg", "cpos", "cneg"))
    y = np.log(a / (a + b)) - np.log(c / (c + e))  # log risk ratio (metafor escalc, measure="RR")
    v = 1 / a - 1 / (a + b) + 1 / c - 1 / (c + e)
    return d, y, v


def reml_tau2(y, v):
    """REML tau^2 by the fixed-point iteration of Viechtbauer (2005, eq. 12): an estimator the library lacks."""
    tau2 = 0.0
    for _ in range(10_000):
        w = 1 / (v + tau2)
        mu = (w * y).sum() / w.sum()
        new = max(0.0, (w ** 2 * ((y - mu) ** 2 - v)).sum() / (w ** 2).sum() + 1 / w.sum())
        if abs(new - tau2) < 1e-14:
            return new
        tau2 = new
    raise AssertionError("REML did not converge")


def test_bcg_effect_sizes_match_metafor_escalc():
    d, y, v = bcg()
    assert y == pytest.approx(d["yi"].to_numpy(), abs=5e-5) and v == pytest.approx(d["vi"].to_numpy(), abs=5e-5)


def test_knapp_hartung_reproduces_metafor_readme_bcg_example():
    # metafor README: rma(yi, vi, data=dat, test="knha") on dat.bcg, REML tau^2; every printed digit.
    _, y, v = bcg()
    tau2 = reml_tau2(y, v)
    assert tau2 == half_unit(0.3132)
    p = pool(y, v, tau2=tau2)
    assert p.q == half_unit(152.2330)
    assert p.pooled == half_unit(-0.7145) and p.se == half_unit(0.1808)
    assert p.pooled / p.se == half_unit(-3.9522)
    assert (p.ci_low, p.ci_high) == (half_unit(-1.1084), half_unit(-0.3206))
    # predict(res, transf=exp, digits=2): 0.49 [0.33, 0.73], prediction interval 0.14 to 1.76 with metafor's
    # default t_{k-1}; ours is the same interval with t_{k-2} (metafor's predtype="Riley").
    assert np.exp([p.pooled, p.ci_low, p.ci_high]) == pytest.approx([0.49, 0.33, 0.73], abs=0.005)
    half = np.sqrt(p.tau2 + p.se ** 2)
    assert np.exp(p.pooled + np.array([-1, 1]) * stats.t.ppf(0.975, 12) * half) == pytest.approx([0.14, 1.76],
                                                                                               abs=0.005)
    assert (p.pi_low, p.pi_high) == pytest.approx(p.pooled + np.array([-1, 1]) * stats.t.ppf(0.975, 11) * half,
                                                  rel=1e-12)


def test_paule_mandel_reproduces_dersimonian_kacker_2007():
    # CLASP trials, log odds ratios (DerSimonian & Kacker 2007, Contemp Clin Trials 28:105, Tables 3-4; also
    # metafor's tests/testthat/test_analysis_example_dersimonian2007.r): PM tau 0.3681, mu -0.3811, SE 0.2060.
    n1, n2 = np.array([156, 303, 565, 1570, 103, 4659.]), np.array([74, 303, 477, 1565, 105, 4650.])
    a, c = np.array([5, 5, 12, 69, 9, 313.]), np.array([8, 17, 9, 94, 11, 352.])
    y = np.log(a * (n2 - c) / ((n1 - a) * c))
    v = 1 / a + 1 / (n1 - a) + 1 / c + 1 / (n2 - c)
    p = pool(y, v)
    assert np.sqrt(p.tau2) == half_unit(0.3681) and p.pooled == half_unit(-0.3811) and p.se_z == half_unit(0.2060)
    assert p.q_hk == pytest.approx(1, rel=1e-9) and p.se == pytest.approx(p.se_z, rel=1e-9)


def test_bcg_paule_mandel_knapp_hartung_by_hand_and_statsmodels():
    # No printed PM + knha output was found; check against the formulas and statsmodels' independent HKSJ
    # ("random effect wls", t with k-1 df), then pin the numbers.
    _, y, v = bcg()
    p = pool(y, v)
    k = len(y)
    w = 1 / (v + p.tau2)
    assert (w * (y - p.pooled) ** 2).sum() == pytest.approx(k - 1, rel=1e-9)  # Paule-Mandel
    q_hk = (w * (y - p.pooled) ** 2).sum() / (k - 1)
    se = np.sqrt(q_hk / w.sum())
    assert p.se == pytest.approx(se, rel=1e-12)
    assert (p.ci_low, p.ci_high) == pytest.approx(p.pooled + np.array([-1, 1]) * stats.t.ppf(0.975, k - 1) * se,
                                                  rel=1e-12)
    sm = combine_effects(y, v, method_re="pm", use_t=True)
    ci = sm.conf_int(use_t=True)[3]
    assert (p.pooled, p.se) == pytest.approx((sm.mean_effect_re, sm.sd_eff_w_re_hksj), rel=1e-5)
    assert (p.ci_low, p.ci_high) == pytest.approx(tuple(ci), rel=1e-5)
    assert (p.tau2, p.pooled, p.se, p.ci_low, p.ci_high, p.pi_low, p.pi_high) == pytest.approx(
        (0.3181, -0.7150, 0.1809, -1.1091, -0.3208, -2.0186, 0.5886), abs=5e-5)


def test_knapp_hartung_wider_than_normal_when_scale_at_least_one():
    g = np.array([0.05, 0.35, 0.1, 0.6])
    ses = np.array([0.05, 0.06, 0.04, 0.08])
    m = meta_analysis(results_with(g, ses))
    assert m.q_hk == pytest.approx(1, rel=1e-8)  # Paule-Mandel tau^2 > 0 makes the scale exactly 1
    assert m.ci_high - m.ci_low == pytest.approx((m.ci_high_z - m.ci_low_z) * stats.t.ppf(0.975, 3)
                                                 / stats.norm.ppf(0.975), rel=1e-8)
    assert m.ci_low < m.ci_low_z < m.pooled < m.ci_high_z < m.ci_high
    p = pool(g, ses ** 2, tau2=0.0)  # tau^2 fixed at 0 on heterogeneous studies: scale far above 1
    assert p.q_hk > 1 and p.se > p.se_z and p.ci_high - p.ci_low > p.ci_high_z - p.ci_low_z
    assert m.method == "random effects, Paule-Mandel tau^2, Knapp-Hartung (t with k-1 df) interval"


def test_knapp_hartung_scale_is_not_truncated():
    # Studies that agree better than chance: PM tau^2 = 0 and q_hk < 1; like metafor's test="knha" we do not
    # apply max(1, q_hk) (Roever, Knapp & Friede 2015), so the SE is below the normal one.
    p = pool([0.10, 0.11, 0.10, 0.105], [0.05 ** 2] * 4)
    assert p.tau2 == 0 and 0 < p.q_hk < 1
    assert p.se == pytest.approx(np.sqrt(p.q_hk) * p.se_z, rel=1e-12) and p.se < p.se_z


def test_prediction_interval_contains_confidence_interval():
    g = np.array([0.05, 0.35, 0.1, 0.6, 0.2])
    ses = np.array([0.05, 0.06, 0.04, 0.08, 0.1])
    m = meta_analysis(results_with(g, ses))
    assert m.pi_low < m.ci_low < m.pooled < m.ci_high < m.pi_high
    half = stats.t.ppf(0.975, 3) * np.sqrt(m.tau2 + m.se ** 2)
    assert (m.pi_low, m.pi_high) == pytest.approx((m.pooled - half, m.pooled + half), rel=1e-12)
    homogeneous = pool([0.2, 0.21, 0.19], [0.05 ** 2, 0.06 ** 2, 0.04 ** 2])
    assert homogeneous.tau2 == 0 and homogeneous.pi_low < homogeneous.ci_low < homogeneous.ci_high < homogeneous.pi_high


def test_two_studies_have_no_prediction_interval(tmp_path):
    from evaluation.report.synthesis_chapter import write_synthesis

    results = results_with([0.1, 0.3], [0.05, 0.1], ["multi_academy_trust", "informal_cluster"])
    m = meta_analysis(results)
    assert m.k == 2 and m.pi_low is None and m.pi_high is None
    assert m.ci_high - m.ci_low == pytest.approx(2 * stats.t.ppf(0.975, 1) * m.se, rel=1e-12)  # t with 1 df
    text = write_synthesis(results, tmp_path).read_text()
    assert "Knapp-Hartung" in text and "No prediction interval" in text and "at least three" in text
    forest_plot(m, tmp_path / "forest.png")


def test_chapter_reports_knapp_hartung_and_prediction_interval(tmp_path):
    from evaluation.report.markdown import num
    from evaluation.report.synthesis_chapter import write_synthesis

    results = results_with([0.05, 0.35, 0.1, 0.6], [0.05, 0.06, 0.04, 0.08])
    m = meta_analysis(results)
    text = write_synthesis(results, tmp_path).read_text()
    assert f"95% CI {num(m.ci_low, 3)} to {num(m.ci_high, 3)}" in text
    assert f"here {num(m.ci_low_z, 3)} to {num(m.ci_high_z, 3)}" in text
    assert f"95% prediction interval {num(m.pi_low, 3)} to {num(m.pi_high, 3)}" in text
    assert "true effect of a new study" in text and "$k-1$ = 3 degrees" in text


def test_paule_mandel_root_even_where_statsmodels_iteration_gives_up():
    # Four heterogeneous studies (Q = 66 on 3 df) like the bundled example: statsmodels' combine_effects
    # iteration, asked for a tight tolerance, overshoots by a rounding error and returns tau^2 = 0.
    g = np.array([0.020831, 0.019232, 0.116494, 0.013166])
    v = np.array([0.009322, 0.011049, 0.012323, 0.002966]) ** 2
    p = pool(g, v)
    assert p.q > 60 and p.tau2 > 0
    w = 1 / (v + p.tau2)
    assert (w * (g - p.pooled) ** 2).sum() == pytest.approx(3, rel=1e-10)
    assert p.tau2 == pytest.approx(combine_effects(g, v, method_re="pm").tau2, rel=1e-5)


def test_studies_without_a_pupil_sd_are_not_pooled(tmp_path):
    """A study in its outcome's own units (no pupil-level SD) has no g: it is listed, not pooled."""
    from evaluation.report.synthesis_chapter import write_synthesis

    results = results_with([0.05, 0.35, 0.1], [0.05, 0.06, 0.04])
    results[2]["effect_size"]["pupil_sd"] = None
    results[2]["effect_size"]["pupil_sd_source"] = None
    with_blocks(results[2])  # the pipeline derives the stored blocks from the numbers
    m = meta_analysis(results)
    assert m.k == 2 and list(m.table["id"]) == ["s0", "s1"]
    text = write_synthesis(results, tmp_path).read_text()
    assert "Not pooled (no pupil-level SD" in text and "Study 2" in text
    assert "\u2014 (no pupil-level SD)" in text


# ------------------------------------------------------------------------------ effects by subgroup


def subgroup(key, label, n, estimate=None, ci=(None, None), planted=None, withheld=None):
    row = {"key": key, "label": label, "n_schools": n, "n_partnerships": None if n is None else n // 2,
           "n_comparison": None if estimate is None else 3 * n, "estimate": estimate,
           "se": None if estimate is None else (ci[1] - ci[0]) / 3.92, "ci_low": ci[0], "ci_high": ci[1],
           "p": None if estimate is None else 0.001, "withheld": withheld}
    if planted is not None or withheld is not None:
        row["planted"] = planted  # the pipeline stores planted (None when withheld) on synthetic data only
    return row


def subgroup_test(p, keys):
    return {"statistic": 9.0, "df": len(keys) - 1, "p_value": p, "method": "permutation", "unit": "block",
            "n_units": 150, "description": "permutation test of equal subgroup effects", "permutations": 199,
            "failed": 0, "subgroups": list(keys)}


def heterogeneity_block(alpha=0.05):
    """Modelled on mat_sponsored_secondary_ks4_by_trust (trust size rejects), with a characteristic whose test
    does not reject, one whose test is None (one subgroup withheld by disclosure control) and one with none."""
    withheld = "fewer than 10 partnership schools: not estimated"
    return {"estimator": "callaway_santanna", "cluster": "partnership", "alpha": alpha, "permutations": 199,
            "min_schools": 10, "method": "each subgroup re-estimated", "characteristics": [
                {"name": "trust_size", "label": "size of the partnership when the school joined", "n_unknown": 0,
                 "note": None, "test": subgroup_test(0.011, "123"), "subgroups": [
                     subgroup("1", "1-5 schools", 123, 2.0633, (1.4798, 2.6468), planted=0.464),
                     subgroup("2", "6-15 schools", 65, 2.4704, (1.7748, 3.1661), planted=1.062),
                     subgroup("3", "16 or more schools", 79, 3.8216, (3.2392, 4.4041), planted=2.3625)]},
                {"name": "distance_to_partner", "label": "distance to the nearest partner school", "n_unknown": 36,
                 "note": None, "test": subgroup_test(0.30, "12"), "subgroups": [
                     subgroup("1", "under 5 km", 30, 4.0873, (3.1327, 5.0419), planted=2.6775),
                     subgroup("2", "5-20 km", 110, 2.8753, (2.3373, 3.4133), planted=1.5507)]},
                {"name": "urban", "label": "urban or rural location", "n_unknown": 0, "test": None,
                 "note": "fewer than two subgroups could be estimated, so there is no test of a difference",
                 "subgroups": [subgroup("1", "urban", 240, 2.5, (1.9, 3.1), planted=1.0),
                               subgroup("2", "rural", None, withheld=withheld)]},
                {"name": "region", "label": "region", "n_unknown": 267, "test": None, "subgroups": [],
                 "note": "not known for any analysed partnership school, so there is nothing to compare"},
            ]}


def write_synthesis_text(results, source) -> str:
    from evaluation.report.synthesis_chapter import write_synthesis

    return write_synthesis(results, source).read_text()


def subgroup_text(results, tmp_path) -> str:
    """The subgroup section, after checking that the whole chapter prints no None or NaN."""
    text = write_synthesis_text(results, tmp_path)
    assert not re.search(r"\b(None|nan|NaN)\b", text)
    return text[text.index("## For whom does it work? Effects by subgroup"):]


def test_synthesis_lists_subgroup_effects_and_claims_only_differences_the_test_rejects(tmp_path):
    results = results_with([0.1, 0.3, 0.2], [0.05, 0.1, 0.08])
    results[0]["study"]["title"] = "Sponsored by trust"
    results[0]["heterogeneity"] = heterogeneity_block()
    results[0]["synthetic_truth"] = {"effect": 1.0}
    full = write_synthesis_text(results, tmp_path)  # after the meta-regression
    assert full.index("## Does the effect differ by kind of partnership?") < full.index("## For whom does it work?")
    text = subgroup_text(results, tmp_path)
    lines = text.splitlines()
    ref = "{ref}`Sponsored by trust <study-s0>`"
    first = next(line for line in lines if "1-5 schools" in line)
    assert first.startswith(f"| {ref} | points | Size of the partnership when the school joined | 1-5 schools | 123 |")
    assert "| 2.06 (1.48 to 2.65) | 0.011 | 0.46 |" in first
    assert "| 6-15 schools | 65 | 2.47 (1.77 to 3.17) |  | 1.06 |" in text
    assert "| 16 or more schools | 79 | 3.82 (3.24 to 4.40) |  | 2.36 |" in text
    assert "| Distance to the nearest partner school | Under 5 km | 30 | 4.09 (3.13 to 5.04) | 0.300 | 2.68 |" in text
    # Withheld by disclosure control: words, not numbers (and no planted effect for it).
    assert "| Rural | suppressed | fewer than 10 partnership schools: not estimated |  | \u2014 |" in text
    assert "| Region | \u2014 | \u2014 | not known for any analysed partnership school" in text
    assert "Effect (95% CI)" in text and "Planted effect (synthetic data)" in text
    words = text[text.index("**In words.**"):]
    assert f"- {ref}:" in words and "Study 1" not in words  # only studies that asked for subgroups
    # Rejected at alpha (p = 0.011 < 0.05): the difference is claimed, with the multiple-testing caution.
    assert ("The effect differs by size of the partnership when the school joined (p = 0.011): it was 3.82 points "
            "for 16 or more schools and 2.06 for 1-5 schools.") in words
    assert "With 2 characteristics tested, one such difference could arise by chance" in words
    # Not rejected (p = 0.30): no difference claimed, though the estimates differ by more than a point.
    assert "The data do not show that the effect differs by distance to the nearest partner school (p = 0.300)" in words
    assert "The effect differs by distance" not in words
    assert "cannot compare schools by urban or rural location: fewer than two subgroups could be estimated" in words
    assert "cannot compare schools by region: not known for any analysed partnership school" in words
    assert words.count("The effect differs by") == 1


def test_subgroup_planted_column_only_on_synthetic_data_and_levels_per_study(tmp_path):
    results = results_with([0.1, 0.3], [0.05, 0.1])
    results[0]["heterogeneity"] = heterogeneity_block()  # rows carry planted, but the study is not synthetic
    text = subgroup_text(results, tmp_path)
    assert "Planted" not in text and "| 2.06 (1.48 to 2.65) | 0.011 |" in text
    results[1]["heterogeneity"] = heterogeneity_block(alpha=0.10)  # two levels: each cell says its own
    (tmp_path / "two").mkdir()
    text = subgroup_text(results, tmp_path / "two")
    assert "| Effect (CI) |" in text and "(95% CI 1.48 to 2.65)" in text and "(90% CI 1.48 to 2.65)" in text
    # At alpha 0.10 the distance test (p = 0.30) still does not reject; trust size (p = 0.011) does in both.
    assert text.count("The effect differs by size of the partnership") == 2
    assert "The effect differs by distance" not in text


def test_one_study_with_subgroups_still_shows_them(tmp_path):
    results = results_with([0.1], [0.05])
    results[0]["heterogeneity"] = heterogeneity_block()
    text = subgroup_text(results, tmp_path)
    assert "nothing to pool" in write_synthesis_text(results, tmp_path)
    assert "| 1-5 schools | 123 | 2.06 (1.48 to 2.65) | 0.011 |" in text


def test_synthesis_without_subgroups_says_none_was_asked_and_how_to_ask(tmp_path):
    for k, source in ((3, tmp_path / "three"), (1, tmp_path / "one")):
        source.mkdir()
        text = subgroup_text(results_with([0.1, 0.3, 0.2][:k], [0.05, 0.1, 0.08][:k]), source)
        assert "No study in this book has asked for effects by subgroup yet" in text
        assert "`[heterogeneity]` with `by = [...]`" in text and '`"trust_size"`' in text
        assert "|" not in text and "In words" not in text
