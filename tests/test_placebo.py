"""Placebo joining dates: the primary DiD re-run k years early, on pre-joining data only."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluation.diagnostics import placebo as placebo_mod
from evaluation.diagnostics.placebo import placebo_dates

STUDIES = Path(__file__).parent.parent / "studies"


@pytest.fixture(scope="module")
def tsa(small_store):
    from evaluation.data.panels import load_study_data
    from evaluation.study import load_study

    study = load_study(STUDIES / "tsa_members_primary_ks2.toml")  # planted effect on members
    return study, load_study_data(small_store, study)


def test_placebos_of_a_study_with_a_planted_effect_are_centred_on_zero(tsa):
    study, data = tsa
    res = placebo_dates(study, data, max_k=3)
    # joined 2013-2016, data from 2010, matching needs 3 pre-years: cohorts with g - k - 3 >= 2010
    assert [p.k for p in res.placebos] == [1, 2, 3] and res.skipped == []
    assert [p.cohorts for p in res.placebos] == [[2013, 2014, 2015], [2013, 2014], [2013]]
    assert [p.window for p in res.placebos] == [[-3, 0], [-3, 1], [-3, 2]]
    for p in res.placebos:
        assert abs(p.z) < 3, p
        assert p.includes_zero == (p.ci_low <= 0 <= p.ci_high)
        assert p.treated_schools > 0 and p.comparison_schools > 0
    assert res.estimator == "callaway_santanna"
    assert res.to_dict()["placebos"][0]["z"] == pytest.approx(res.placebos[0].z)


def test_placebo_panels_hold_no_post_joining_rows(tsa, monkeypatch):
    study, data = tsa
    twfe = study.model_copy(update={"estimators": study.estimators.model_copy(
        update={"use": ("twfe", "callaway_santanna"), "primary": "twfe"})})
    seen = []
    real = placebo_mod.run_estimators

    def spy(spec, panel, say):
        seen.append((spec.window, panel.copy()))
        return real(spec, panel, say)

    monkeypatch.setattr(placebo_mod, "run_estimators", spy)
    from evaluation.stages.cohort import build_cohort

    g = build_cohort(study, data).treated.set_index("urn")["g"]
    res = placebo_dates(twfe, data, max_k=2)
    assert [p.k for p in res.placebos] == [1, 2] and res.estimator == "twfe"
    for window, panel in seen:
        t = panel[panel["cohort"] > 0]
        assert (t["year"] < t["urn"].map(g)).all()  # only pre-joining data of partnership schools
        assert (t["cohort"] == t["urn"].map(g) - (window[1] + 1)).all()  # placebo date g - k


def test_bad_number_of_placebo_years(tsa):
    from evaluation.errors import InputError

    with pytest.raises(InputError):
        placebo_dates(*tsa, max_k=0)
