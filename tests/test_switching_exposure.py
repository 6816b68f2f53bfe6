"""Treatment that ends or changes (issue 14): ``[cohort] exposure`` = "moved" (re-brokerage) and
"in_partnership" (on while a member), on hand-made memberships where every rule can be checked by
hand, and the study-file checks that keep an exposure with the estimators that allow for it."""

from __future__ import annotations

import pandas as pd
import pytest

from evaluation.study import Study

BASE = {
    "id": "x", "title": "t", "question": "q",
    "cohort": {"partnership_types": ["multi_academy_trust"], "joined_between": [2016, 2017], "phase": "secondary"},
    "outcome": {"name": "ks4_attainment8", "window": [-2, 1]},
    "matching": {"method": "none"},
    "estimators": {"use": ["callaway_santanna"], "primary": "callaway_santanna"},
}


def study(**cohort) -> Study:
    extra = {k: cohort.pop(k) for k in list(cohort) if k in ("estimators", "comparison")}
    return Study.model_validate({**BASE, "cohort": {**BASE["cohort"], **cohort}, **extra})


def data_of(memberships: list[tuple], n_schools: int = 8):
    """Schools 1..n (secondary), two trusts A and B, outcomes 2010-2020 (school u, year t: u + t/100)."""
    from evaluation.stages.cohort import StudyData

    schools = pd.DataFrame({"urn": range(1, n_schools + 1), "phase": "secondary", "region": "London",
                            "la_code": 201, "urban_rural": "urban", "easting": 0.0, "northing": 0.0})
    partnerships = pd.DataFrame({"partnership_id": ["A", "B", "C"], "type": "multi_academy_trust",
                                 "sponsor_led": [True, True, True]})
    m = pd.DataFrame(memberships, columns=["urn", "partnership_id", "joined", "left"]).assign(role="member")
    m["joined"] = pd.to_datetime(m["joined"])
    m["left"] = pd.to_datetime(m["left"])
    sy = pd.DataFrame([(u, t) for u in range(1, n_schools + 1) for t in range(2010, 2021)], columns=["urn", "year"])
    sy["ks4_attainment8"] = sy["urn"] + sy["year"] / 100
    sy = sy.assign(fsm_pct=10.0, eal_pct=5.0, sen_pct=12.0, pupils=900.0, ofsted_grade=2.0)
    return StudyData(schools, partnerships, m, sy)


MEMBERSHIPS = [
    (1, "A", "2010-09-01", "2015-08-31"), (1, "B", "2015-09-01", None),   # a move: first results in B 2016
    (2, "A", "2010-09-01", "2016-08-31"), (2, "B", "2016-10-15", None),   # 45 days apart: not a move
    (3, "A", "2010-09-01", "2016-08-31"), (3, "A", "2016-09-01", None),   # same trust again: not a move
    (4, "A", "2013-09-01", "2015-08-31"), (4, "C", "2015-09-01", None),   # a move, but only 2 years in A
    (5, "A", "2010-09-01", None),                                          # stayer
    (6, "B", "2012-09-01", None),                                          # stayer, but joined after 2011
    (7, "A", "2010-09-01", "2017-08-31"),                                  # left without moving: no stayer
    (8, "C", "2009-09-01", "2016-08-31"), (8, "A", "2016-09-01", None),   # a move, first results in A 2017
]


def test_moves_are_consecutive_memberships_of_different_partnerships_within_31_days():
    from evaluation.stages.cohort import studied_memberships, studied_moves

    s = study(exposure="moved")
    moves = studied_moves(studied_memberships(s, data_of(MEMBERSHIPS))).set_index("urn")
    assert sorted(moves.index) == [1, 4, 8]
    assert moves.loc[1, "partnership_id"] == "B" and moves.loc[1, "moved_from"] == "A"
    assert moves.loc[1, "g"] == 2016 and moves.loc[1, "since"] == 2011
    assert moves.loc[8, "g"] == 2017 and moves.loc[8, "since"] == 2010 and moves.loc[8, "moved_from"] == "C"


def test_moved_cohort_keeps_settled_movers_and_compares_them_with_stayers():
    from evaluation.stages.cohort import build_cohort

    data = data_of(MEMBERSHIPS)
    # window [-2, 1], settled 2: a mover needs `since` <= g - 4; a stayer <= 2016 - 4 = 2012 and in until 2018
    c = build_cohort(study(exposure="moved", settled_years=2), data)
    assert sorted(c.treated["urn"]) == [1, 8]  # 4 joined A in 2014, 2 years before its move in 2016
    assert c.treated.set_index("urn").loc[1, "partnership_id"] == "B"
    assert any("1 school(s) that moved had been in the partnership they left for less than 4 year(s)" in n
               for n in c.notes)
    assert sorted(c.pool["urn"]) == [3, 5]  # 2 left A (not a move) in 2016; 6 joined in 2013; 7 left in 2017
    assert any("from 2012 to 2018 without moving or leaving" in n for n in c.notes)
    # without settling, school 6 (first results in B 2013 <= 2016 - 2) is a stayer too, and school 4 a mover
    c0 = build_cohort(study(exposure="moved"), data)
    assert sorted(c0.treated["urn"]) == [1, 4, 8] and sorted(c0.pool["urn"]) == [3, 5, 6]


def test_ever_joined_is_unchanged_by_the_option():
    from evaluation.stages.cohort import build_cohort

    s = study()
    assert "exposure" not in s.model_dump()["cohort"] and "settled_years" not in s.model_dump()["cohort"]
    c = build_cohort(study(joined_between=[2012, 2014]), data_of(MEMBERSHIPS, n_schools=9))
    assert sorted(c.treated["urn"]) == [4, 6]  # first results in a trust in 2014 and 2013
    assert c.treated.set_index("urn").loc[4, "partnership_id"] == "A"  # its first trust, not the one it moved to
    assert c.pool["urn"].tolist() == [9]


def test_in_partnership_treatment_switches_off_when_a_school_leaves_and_moves_with_placebo_cohorts():
    from evaluation.stages.cohort import Cohort, build_cohort
    from evaluation.stages.match import match_cohorts
    from evaluation.stages.panel import analysis_panel

    memberships = [(1, "A", "2012-09-01", "2014-08-31"),   # in 2013-2014, then out
                   (2, "A", "2012-09-01", "2014-08-31"), (2, "B", "2015-09-01", None),  # out in 2015, back 2016
                   (3, "A", "2013-09-01", None)]           # in from 2014 on
    data = data_of(memberships, n_schools=6)
    s = study(exposure="in_partnership", joined_between=[2013, 2014],
              estimators={"use": ["chaisemartin_dhaultfoeuille"], "primary": "chaisemartin_dhaultfoeuille"})
    c = build_cohort(s, data)
    panel = analysis_panel(s, data, c, match_cohorts(s, data, c, lambda m: None))
    on = panel.pivot(index="urn", columns="year", values="treatment")
    assert list(on.columns) == list(range(2011, 2016))  # min g + lo .. max g + hi, a row every year
    assert on.loc[1].tolist() == [0, 0, 1, 1, 0]
    assert on.loc[2].tolist() == [0, 0, 1, 1, 0]  # re-joins in 2016, after the panel's years
    assert on.loc[3].tolist() == [0, 0, 0, 1, 1]
    assert (on.loc[[4, 5, 6]] == 0).all().all()
    # a placebo cohort one year early moves the spells one year early
    fake = Cohort(c.treated.assign(g=c.treated["g"] - 1), c.pool, [])
    p2 = analysis_panel(s, data, fake, match_cohorts(s, data, fake, lambda m: None))
    on2 = p2.pivot(index="urn", columns="year", values="treatment")
    assert list(on2.columns) == list(range(2010, 2015))
    assert on2.loc[1].tolist() == [0, 0, 1, 1, 0] and on2.loc[3].tolist() == [0, 0, 0, 1, 1]
    assert on2.loc[1, 2012] == 1 and on.loc[1, 2012] == 0  # in from 2012 at the placebo date, 2013 really


@pytest.mark.parametrize("cohort, message", [
    ({"exposure": "in_partnership"}, "only de Chaisemartin & D'Haultfoeuille's estimator allows for"),
    ({"settled_years": 2}, "settled_years applies only to exposure = 'moved'"),
    ({"exposure": "moved", "comparison": {"exclude_types": ["multi_academy_trust"]}},
     "must not exclude those types"),
])
def test_an_exposure_with_the_wrong_settings_is_refused(cohort, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        study(**cohort)
