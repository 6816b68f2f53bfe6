"""The pupil-level example study end to end on the national synthetic panel with its pupils (slow:
20,000 schools, 18.6 million pupil results): it recovers the effects the generator planted on all
pupils, on disadvantaged pupils, on the others and the difference between the two. Tolerances are
3.29 of the estimators' own standard errors (two-sided 99.9%): a failure is a bias of more than
about three standard errors, not bad luck."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
Z = 3.29

pytestmark = pytest.mark.slow


def test_pupil_example_recovers_the_planted_effects(national_store):
    from evaluation.data.panels import load_study_data
    from evaluation.pipeline import run_study
    from evaluation.study import load_study

    study = load_study(ROOT / "studies" / "mat_converter_secondary_ks4_pupils.toml")
    r = run_study(study, load_study_data(national_store, study)).result
    h, planted = r["headline"], r["synthetic_truth"]["overall"]
    assert planted > 0.1  # the generator planted an effect on these pupils
    assert abs(h["estimate"] - planted) <= Z * h["se"], (h["estimate"], h["se"], planted)
    groups = {g["group"]: g for g in r["pupils"]["groups"]}
    assert groups["disadvantaged"]["planted"] > groups["other"]["planted"] > 0  # 1.5 times as much per pupil
    for g in groups.values():
        assert abs(g["estimate"] - g["planted"]) <= Z * g["se"], g
    pb = r["pupils"]
    assert pb["counts"]["pupils_treated"] > 100_000 and pb["counts"]["pupils_left_out_by_the_on_roll_rule"] > 0
    assert 17 < pb["pupil_sd"] < 20.5  # the national pupil SD of Attainment 8 (published about 19)
    es = r["effects"]  # the EEF effect size divides by the pupil-level SD (with Hedges' small-sample factor)
    assert es["g"] == pytest.approx(es["hedges_j"] * h["estimate"] / pb["pupil_sd"], rel=1e-12)
