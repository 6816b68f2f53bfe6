"""Pupil-level studies (evaluation.stages.pupils): the on-roll rule, the exact equivalences the
stage relies on (pupil rows = weighted school-year cells; the groups' difference = the difference
of the groups' effects), the study definition's checks and disclosure of pupil counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.data.pupil_cells import PupilCells
from evaluation.errors import InputError
from evaluation.estimators import registry
from evaluation.estimators.fixed_effects import feols
from evaluation.publish.disclosure import DisclosurePolicy, _pupils
from evaluation.spec import build_spec
from evaluation.stages.pupils import cell_outcomes, pupil_weighted_twfe, sample_cells
from evaluation.study import Study, load_study

BASE = {
    "id": "p", "title": "t", "question": "q?",
    "cohort": {"partnership_types": ["multi_academy_trust"], "joined_between": [2015, 2017], "phase": "secondary"},
    "outcome": {"name": "ks4_attainment8", "window": [-4, 3], "level": "pupil", "pupil_groups": ["disadvantaged"]},
    "estimators": {"use": ["twfe", "callaway_santanna", "imputation"], "primary": "callaway_santanna"},
}


def _study(**outcome) -> Study:
    d = {**BASE, "outcome": {**BASE["outcome"], **outcome}}
    return Study.model_validate(d)


def test_on_roll_rule_keeps_pupils_on_roll_window_end_plus_one_years():
    study = _study()  # window ends at 3: first on roll at least 4 years before the results
    cells = pd.DataFrame({"urn": [1, 1, 1, 1], "year": [2018] * 4, "first_year_on_roll": [2014, 2015, -1, 2013],
                          "disadvantaged": [1, 0, 0, 0], "n": [5, 7, 2, 3], "sum_y": [50.0, 70, 20, 30],
                          "n_va": [5, 6, 2, 3], "sum_va": [5.0, 6.0, 2.0, 3.0]})
    pc = PupilCells("ks4_attainment8", "KS4", cells, pd.DataFrame())
    out = sample_cells(study, pc, [1]).set_index("disadvantaged")
    assert out.loc[1, "n"] == 5 and out.loc[1, "total"] == 5.0  # 2014 <= 2018 - 4
    assert out.loc[0, "n"] == 3 and out.loc[0, "total"] == 3.0  # only the 2013 arrivals
    assert out.loc[0, "excluded"] == 7 + 2  # arrived 2015, and unknown
    assert out.loc[1, "no_prior"] + out.loc[0, "no_prior"] == 0  # every kept pupil has prior attainment
    everyone = sample_cells(_study(sample="all"), pc, [1]).set_index("disadvantaged")
    assert everyone.loc[0, "n"] == 6 + 2 + 3 and everyone["excluded"].sum() == 0


def test_window_longer_than_pupils_can_have_been_on_roll_is_refused():
    with pytest.raises(Exception, match="end the window at 3"):
        _study(window=[-4, 4])
    _study(window=[-4, 4], sample="all")  # every pupil: any window
    ks2 = {**BASE["cohort"], "phase": "primary"}
    with pytest.raises(Exception, match="KS1 results, the prior attainment of value added"):
        Study.model_validate({**BASE, "cohort": ks2, "outcome": {**BASE["outcome"], "name": "ks2_reading_score",
                                                                 "window": [-4, 4]}})
    Study.model_validate({**BASE, "cohort": ks2, "outcome": {**BASE["outcome"], "name": "ks2_reading_score",
                                                             "window": [-4, 5], "value_added": False}})


def test_the_on_roll_rule_is_fixed_when_the_data_are_loaded():
    """A placebo date or a shorter multiverse window refits with another window: the pupils counted
    (the outcome) must stay the study's."""
    from dataclasses import replace

    from evaluation.stages.cohort import StudyData
    from evaluation.stages.pupils import tenure_years, with_pupil_outcome

    study = _study()
    cells = pd.DataFrame({"urn": [1, 1], "year": [2018, 2018], "first_year_on_roll": [2014, 2016],
                          "disadvantaged": [0, 0], "n": [5, 7], "sum_y": [50.0, 70], "n_va": [5, 7],
                          "sum_va": [5.0, 70.0]})
    data = StudyData(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(),
                     pd.DataFrame({"urn": [1], "year": [2018], "fsm_pct": [10.0]}))
    loaded = with_pupil_outcome(study, data, PupilCells("ks4_attainment8", "KS4", cells, pd.DataFrame()))
    assert loaded.pupils.on_roll_years == 4
    assert loaded.school_years["ks4_attainment8"].tolist() == [1.0]  # only the pupil on roll since 2014
    placebo = Study.model_validate({**study.model_dump(mode="python"),
                                    "outcome": {**study.outcome.model_dump(mode="python"), "window": [-3, 1]}})
    assert tenure_years(placebo) == 2 and tenure_years(placebo, loaded.pupils) == 4
    assert sample_cells(placebo, loaded.pupils, [1])["n"].sum() == 5
    assert sample_cells(placebo, replace(loaded.pupils, on_roll_years=None), [1])["n"].sum() == 12


def test_school_level_definitions_hash_as_before():
    s = load_study("studies/mat_converter_secondary_ks4.toml")
    assert "level" not in s.canonical_json() and "pupil_groups" not in s.canonical_json()
    with pytest.raises(Exception, match="apply only to pupil-level studies"):
        Study.model_validate({**BASE, "outcome": {"name": "ks4_attainment8", "pupil_groups": ["disadvantaged"]}})


def _cell_panel(seed=3, n_units=60):
    """School-year cells of a staggered design with very unequal pupil numbers and trust clusters."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_units):
        g = [0, 2016, 2017, 2018][u % 4]
        size = int(rng.integers(3, 220))
        w = 1.0 if g else float(rng.uniform(0.3, 3))
        for year in range(2013, 2021):
            nd = int(rng.binomial(size, 0.3))
            rows.append({"urn": 100000 + u, "year": year, "cohort": g, "weight": w,
                         "cluster_partnership": f"T{u // 3}" if g else f"S{u}", "n_disadvantaged": nd,
                         "n_other": size - nd,
                         "y_disadvantaged": rng.normal() + (0.8 if g and year >= g else 0),
                         "y_other": rng.normal() + (0.3 if g and year >= g else 0)})
    p = pd.DataFrame(rows)
    p["n_pupils"] = p["n_disadvantaged"] + p["n_other"]
    p["y"] = (p["y_disadvantaged"] * p["n_disadvantaged"] + p["y_other"] * p["n_other"]) / p["n_pupils"]
    p["y_difference"] = p["y_disadvantaged"] - p["y_other"]
    return p


def test_pupil_weighted_twfe_equals_the_regression_on_pupil_rows():
    panel = _cell_panel()
    spec = build_spec(_study())
    got = pupil_weighted_twfe(spec, panel)
    rng = np.random.default_rng(0)
    reps = panel["n_pupils"].to_numpy()
    pupils = panel.loc[panel.index.repeat(reps)].reset_index(drop=True)
    dev = rng.normal(size=len(pupils))
    cell = np.repeat(np.arange(len(panel)), reps)
    dev -= (np.bincount(cell, dev) / reps)[cell]  # pupils' values average to the cell mean exactly
    pupils["v"] = pupils["y"] + dev
    pupils["treat"] = ((pupils["cohort"] > 0) & (pupils["year"] >= pupils["cohort"])).astype(float)
    ref = feols(pupils, "v ~ treat | urn + year", weights="weight", cluster="cluster_partnership")
    assert got["n_pupils"] == len(pupils)
    assert abs(got["estimate"] - ref.params["treat"]) < 1e-10 * max(1, abs(ref.params["treat"]))
    assert abs(got["se"] - ref.se()["treat"]) < 1e-9 * ref.se()["treat"]


def test_difference_row_is_the_difference_of_the_groups_effects():
    panel = _cell_panel()
    spec = build_spec(_study())
    fits = {k: registry.fit("callaway_santanna", panel.assign(y=panel[f"y_{k}"]), spec).overall
            for k in ("disadvantaged", "other", "difference")}
    assert abs(fits["difference"].estimate - (fits["disadvantaged"].estimate - fits["other"].estimate)) < 1e-12


def test_cell_outcomes_weight_pupils():
    cells = pd.DataFrame({"urn": [1, 1, 1], "year": [2019] * 3, "disadvantaged": [1, 0, -1], "n": [2, 6, 2],
                          "total": [2.0, 12.0, 10.0], "excluded": 0, "no_prior": 0})
    out = cell_outcomes(cells).iloc[0]
    assert out["y"] == pytest.approx(24 / 10) and out["y_disadvantaged"] == 1 and out["y_other"] == 2
    assert out["y_difference"] == -1 and out["n_pupils"] == 10


def _result(n_dis=40, n_other=400, n_treated_pupils=445, n_schools=30, n_schools_dis=28, c_dis=200, c_other=700):
    g = dict(label="x", n_comparison=40, estimate=1.0, se=0.1, ci_low=0.8, ci_high=1.2,
             p=0.01, g=0.05, planted=None, note=None)
    return {"counts": {"treated_analysed": n_schools, "comparison_matched": 40},
            "pupils": {"counts": {"pupils_treated": n_treated_pupils, "pupils_comparison": c_dis + c_other,
                                  "pupils_left_out_by_the_on_roll_rule": 4, "pupils_without_prior_attainment": 0},
                       "pupil_weighted_twfe": {"estimate": 1.0, "n_pupils": n_treated_pupils + c_dis + c_other},
                       "groups": [{**g, "group": "disadvantaged", "n_pupils": n_dis, "n_schools": n_schools_dis,
                                   "n_pupils_comparison": c_dis},
                                  {**g, "group": "other", "n_pupils": n_other, "n_schools": n_schools,
                                   "n_pupils_comparison": c_other},
                                  {**g, "group": "difference", "n_pupils": n_dis + n_other, "n_schools": n_schools_dis,
                                   "n_pupils_comparison": c_dis + c_other}]}}


def test_disclosure_of_pupil_counts():
    policy = DisclosurePolicy()
    r = _result()
    suppressed = []
    _pupils(r, policy, suppressed)
    pb = r["pupils"]
    assert pb["counts"]["pupils_left_out_by_the_on_roll_rule"] is None  # 4 < 10
    assert pb["counts"]["pupils_without_prior_attainment"] == 0  # zero is published
    # 5 pupils whose disadvantage is unknown (445 - 40 - 400): the total would give them away
    assert pb["counts"]["pupils_treated"] is None
    by = {g["group"]: g for g in pb["groups"]}
    assert by["difference"]["n_pupils"] is None
    assert by["disadvantaged"]["n_schools"] is None  # 2 schools without disadvantaged pupils
    assert by["disadvantaged"]["estimate"] == 1.0  # the estimate rests on 28 schools and 40 pupils: shown
    r = _result(n_dis=7, n_treated_pupils=407)
    _pupils(r, policy, [])
    by = {g["group"]: g for g in r["pupils"]["groups"]}
    assert by["disadvantaged"]["estimate"] is None and by["disadvantaged"]["n_pupils"] is None
    assert by["other"]["n_pupils"] is None  # secondary: the total less 'other' would give the 7
    # the same on the comparison side: 7 disadvantaged comparison pupils of 900
    r = _result(c_dis=7, c_other=893)
    _pupils(r, policy, [])
    by = {g["group"]: g for g in r["pupils"]["groups"]}
    assert by["disadvantaged"]["n_pupils_comparison"] is None and by["other"]["n_pupils_comparison"] is None
    assert by["disadvantaged"]["estimate"] is None  # it rests on 7 comparison pupils
    assert r["pupils"]["counts"]["pupils_comparison"] == 900  # the total itself is safe


def test_pupil_study_without_pupil_data_is_a_clear_error(tmp_path):
    from evaluation.data import panels
    from evaluation.data.store import Store

    class FakeStore(Store):
        def tables(self):
            return []

        def read_table(self, table, columns=None, where=None, params=None):
            return pd.DataFrame(columns=list(columns or []))

        def fingerprint(self):
            return "x"

    with pytest.raises(InputError, match="impact data import pupils"):
        panels.load_study_data(FakeStore(tmp_path / "s.duckdb"), _study())


def test_group_rows_share_their_school_years_so_the_difference_is_the_difference():
    """Some school-years have no disadvantaged pupil: every group row uses the school-years with both
    groups, so the published difference is exactly the difference of the published group effects."""
    from evaluation.stages.pupils import group_estimates

    panel = _cell_panel(seed=5)
    gone = panel.sample(frac=0.15, random_state=1).index
    panel.loc[gone, ["y_disadvantaged", "y_difference"]] = np.nan
    panel.loc[gone, "n_disadvantaged"] = 0
    rows = {g["group"]: g for g in group_estimates(_study(), build_spec(_study()), panel, 10.0, 0.99, None)}
    d, o, diff = rows["disadvantaged"], rows["other"], rows["difference"]
    assert abs(diff["estimate"] - (d["estimate"] - o["estimate"])) < 1e-12
    assert d["n_schools"] == diff["n_schools"] and diff["g"] == pytest.approx(0.99 * diff["estimate"] / 10.0)
    assert d["ci_low"] < d["estimate"] < d["ci_high"] and d["interval"]  # the headline's rule, named
