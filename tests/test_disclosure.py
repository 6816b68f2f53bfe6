"""Disclosure control (``evaluation.publish.disclosure``): the suppression rules with hand-computed
expectations (the sample flow withheld as a block or published in full, counts of schools in
texts, placebo notes), the study's ``[disclosure]`` threshold, and the done-when check: a study
whose smallest cohort has fewer schools than the threshold publishes no count, school or map point
of that cohort, and a study that loses fewer than the threshold at some step publishes nothing that
gives found minus analysed or a lost reason (the built book, its source and results/<id>/ are
scanned)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from evaluation.errors import InputError
from evaluation.publish.disclosure import (POWER_FLOW_KEYS, PRIMARY, SECONDARY, WITHHELD, DisclosurePolicy,
                                           _small_numbers, control_self_evaluation, control_study, event_time_rows,
                                           flow_withheld, suppress_cells, suppress_table)

ROOT = Path(__file__).parent.parent
STUDIES = ROOT / "studies"
P, S = PRIMARY, SECONDARY


# ----------------------------------------------------------------------------- the rules


def test_primary_then_one_complementary_cell():
    # 3 < 10 is suppressed; alone it is the total minus the rest, so the next smallest non-zero
    # cell (20; the zero protects nothing) goes too: 3 + 20 = 23 >= 10 over two cells
    got = suppress_cells({"a": 3, "b": 20, "c": 25, "d": 0}, 10)
    assert got.rows == {"a": P, "b": S} and not got.totals


def test_suppressed_cells_summing_below_the_threshold_take_the_next_smallest():
    # 2 + 3 = 5 < 10: with the total one learns that a and b hold 5 schools together -> add c (15)
    got = suppress_cells({"a": 2, "b": 3, "c": 15, "d": 40}, 10)
    assert got.rows == {"a": P, "b": P, "c": S}
    # 6 + 7 = 13 >= 10 over two cells: nothing more to do
    assert suppress_cells({"a": 6, "b": 7, "c": 30}, 10).rows == {"a": P, "b": P}


def test_repeated_until_protected():
    # 1 alone -> add 4 (1 + 4 = 5 < 10) -> add 4 (9 < 10) -> add 12 (21): four cells
    got = suppress_cells({"a": 1, "b": 4, "c": 4, "d": 12, "e": 50}, 10)
    assert got.rows == {"a": P, "b": P, "c": P, "d": S}


def test_total_below_threshold_is_suppressed_itself():
    got = suppress_cells({"a": 3, "b": 4, "c": 0}, 10)
    assert got.rows == {"a": P, "b": P} and got.totals == {"n"}
    # a published total other than the sum of the cells is honoured
    got = suppress_cells({"a": 3, "b": 12}, 10, total=15)
    assert got.rows == {"a": P, "b": S} and not got.totals
    assert suppress_cells({"a": 12, "b": 0}, 10).rows == {}


def test_cohort_rows_are_suppressed_whole():
    # one row per cohort: found, matched, comparison schools matched
    rows = {2014: {"treated": 20, "treated_matched": 19, "comparison_matched": 46},
            2015: {"treated": 15, "treated_matched": 13, "comparison_matched": 26},
            2016: {"treated": 11, "treated_matched": 7, "comparison_matched": 12}}
    # 2016: 7 matched < 10 -> primary; alone in every column -> the next smallest by the first column
    # that needs protection (found: 15 < 20) -> 2015
    assert suppress_table(rows, 10).rows == {2016: P, 2015: S}
    rows = {2014: {"treated": 9, "treated_matched": 2, "comparison_matched": 4},
            2015: {"treated": 14, "treated_matched": 10, "comparison_matched": 22},
            2016: {"treated": 4, "treated_matched": 1, "comparison_matched": 3}}
    # 2014 and 2016 primary; found 9 + 4 = 13 is safe, but matched 2 + 1 = 3 < 10 -> 2015 too
    assert suppress_table(rows, 10).rows == {2014: P, 2016: P, 2015: S}
    # a lower threshold (set with a reason) suppresses less
    assert suppress_table(rows, 2).rows == {2016: P, 2014: S}


def test_rows_by_year_since_joining():
    cohorts_at = {-1: {2014, 2015, 2016}, 3: {2014, 2015}, 4: {2014}, 5: {2016}}
    n_at = {-1: 39, 3: 32, 4: 19, 5: 7}
    # 2015 and 2016 suppressed: e = -1 draws on all (like the overall estimate), e = 4 on none
    # of them, e = 3 on 2015 but not 2016 (it would single 2015 out), e = 5 on 7 schools
    got = event_time_rows(cohorts_at, n_at, {2015, 2016}, 10, [-1, 3, 4, 5, 6])
    assert got == {3: S, 5: P, 6: P}
    assert event_time_rows(cohorts_at, n_at, set(), 10, [-1, 3, 4, 5]) == {5: P}


def test_policy_lowered_only_with_a_reason():
    assert DisclosurePolicy().threshold == 10 and not DisclosurePolicy().lowered
    with pytest.raises(ValueError, match="needs a reason"):
        DisclosurePolicy(threshold=5)
    p = DisclosurePolicy(threshold=5, reason="the trusts agreed")
    assert p.lowered and p.header()["reason"] == "the trusts agreed"
    assert DisclosurePolicy(threshold=20).lowered is False
    assert DisclosurePolicy.of_definition({"disclosure": {"threshold": 6, "reason": "x"}}).threshold == 6
    assert DisclosurePolicy.of_definition({}) == DisclosurePolicy()


# ----------------------------------------------------------------------------- the study definition


def test_study_threshold_below_default_needs_a_reason(tmp_path):
    from evaluation.study import load_study

    good = (STUDIES / "federation_primary_ks2.toml").read_text()
    path = tmp_path / "federation_primary_ks2.toml"
    path.write_text(good + "\n[disclosure]\nthreshold = 5\n")
    with pytest.raises(InputError) as info:
        load_study(path)
    p = info.value.problems[0]
    assert p.file == path.name and p.column == "disclosure.threshold" and p.row == len(good.splitlines()) + 3
    assert "below the ONS Secure Research Service default of 10" in p.expected and 'reason = "..."' in p.expected
    path.write_text(good + '\n[disclosure]\nthreshold = 5\nreason = "agreed with the three trusts"\n')
    lowered = load_study(path)
    assert lowered.disclosure.threshold == 5 and lowered.disclosure.reason == "agreed with the three trusts"
    default = load_study(STUDIES / "federation_primary_ks2.toml")
    assert default.disclosure.threshold == 10 and default.disclosure.reason is None
    # a section like the others: part of the definition, so part of the spec hash
    assert lowered.spec_hash != default.spec_hash
    assert default.model_dump(mode="json")["disclosure"] == {"reason": None, "threshold": 10}


# ----------------------------------------------------------------------------- a study's publication

PLACEBO_DETAIL = ("placebo joining dates (1 year(s) early: 0.50 points, p = 0.400; 2 year(s) early: 1.20 points, "
                  "effect size 0.03, p = 0.030; 3 year(s) early: -0.70 points, p < 0.001; Bonferroni threshold "
                  "0.017 for 3 dates)")


ATTRITION_LOCK = "attrition: 25% of the partnership schools were lost from the analysis; 4 padlocks allow at most 20%"
ATTRITION_CAVEAT = ("25% of the partnership schools could not be matched or had too little data and are not in the "
                    "comparison.")
DEFINITION = {"cohort": {"phase": "secondary", "partnership_types": ["multi_academy_trust"],
                         "joined_between": [2014, 2016], "sponsor_led": None},
              "comparison": {"exclude_types": []}}
MATCHING = {"method": "nearest", "covariates": ["pre_level"], "ratio": 3, "replace": False, "caliper": 0.2,
            "exact": ["phase"], "balance": [], "comparison_pool_rule": ["comparison pool: schools that never joined"]}


def _result() -> dict:
    """A small result.json content. Three cohorts, 2016 with 5 matched schools. The sample flow: 48
    partnership schools found; 2 lost for a missing matching characteristic (before matching), so 46
    enter matching (20 + 15 + 11); 10 lost at the caliper, so 36 matched (19 + 12 + 5) and analysed."""
    rows = lambda es: [{"e": e, "estimate": 0.1 * e, "se": 1.0, "ci_low": -1.0, "ci_high": 1.0, "p": 0.5}
                       for e in es]
    return {
        "study": {"id": "toy", "definition": copy.deepcopy(DEFINITION)},
        "matching": copy.deepcopy(MATCHING),
        "counts": {"treated_found": 48, "treated_analysed": 36, "attrition": 0.25, "partnerships": 20,
                   "comparison_pool": 500, "comparison_matched": 90, "school_years": 900, "clusters": 110,
                   "treated_lost": {"missing_covariates": 2, "no_match_within_caliper": 10,
                                    "too_few_pre_years": 0, "no_outcome_in_window": 0},
                   "cohorts": [{"g": 2014, "treated": 20, "treated_matched": 19, "comparison_matched": 50},
                               {"g": 2015, "treated": 15, "treated_matched": 12, "comparison_matched": 30},
                               {"g": 2016, "treated": 11, "treated_matched": 5, "comparison_matched": 14}]},
        "event_study": {"callaway_santanna": rows(range(-2, 4))},
        "trends": [{"group": grp, "e": e, "mean": 50.0, "n_schools": 36 if grp == "partnership" else 90}
                   for grp in ("comparison", "partnership") for e in range(-2, 4)],
        "synthetic_truth": None,
        "diagnostics": {"placebo_dates": {"placebos": [
            {"k": 1, "cohorts": [2013, 2014, 2015], "estimate": 0.5, "p": 0.4, "treated_schools": 30,
             "comparison_schools": 80,
             "notes": ["9 partnership school-years from the real joining year on stay in the panel",
                       "cohort 2014 in period 2013 has treated observations in only one cluster",
                       "inference: jackknife, t with G1 - 1 = 9 df, window [-3, 0]"]},
            {"k": 2, "cohorts": [2012, 2013], "estimate": 1.2, "p": 0.03, "treated_schools": 28,
             "comparison_schools": 70, "notes": []},
            {"k": 3, "cohorts": [2011], "estimate": -0.7, "p": 0.0001, "treated_schools": 15,
             "comparison_schools": 9, "notes": []}]}},
        "verdict": {"checks": [
            {"name": "pretrend", "failed": False, "detail": "pre-trend test p = 0.2; largest pre-joining difference "
                                                            "1.00 points at e = -2"},
            {"name": "placebo", "failed": True, "detail": PLACEBO_DETAIL}]},
        "effects": {"padlock_reasons": [ATTRITION_LOCK,
                                        f"threat: pretending the schools joined earlier ({PLACEBO_DETAIL})"],
                    "placebo_g": [{"k": 1, "g": 0.01}, {"k": 2, "g": 0.03}, {"k": 3, "g": -0.02}],
                    "mdes": 0.31234567},
        "summary": {"answer": f"We cannot tell: the checks failed ({PLACEBO_DETAIL}).", "caveat": ATTRITION_CAVEAT},
        "power": {"cohorts": [{"g": 2014, "treated": 20, "treated_dropped": 1, "eligible_pool": 100},
                              {"g": 2015, "treated": 15, "treated_dropped": 0, "eligible_pool": 100},
                              {"g": 2016, "treated": 11, "treated_dropped": 1, "eligible_pool": 100}],
                  "cluster_sizes": [3, 2, 1], "schools_treated": 46, "schools_comparison": 138,
                  "clusters_treated": 20, "hedges_j": 1 - 3 / (4 * 184 - 9), "se": 0.1, "df": 40.0,
                  "design_effect": 1.02, "mdes": 0.31234567, "mdes_raw": 2.5, "icc": 0.02, "var_change": 9.0,
                  "notes": ["2 partnership school(s) lack the pre-joining years", "comparison schools: 3 per school"]},
        "estimators_not_computed": {"imputation": "cohort 2016 in period 2016 has treated observations in only "
                                                  "one cluster (6 observation(s) affected)"},
        "estimates": {"twfe": {"notes": ["cohort 2015.0 has one partnership", "clustered by partnership"]}},
    }


def _published_flow() -> dict:
    """The toy with no partnership school lost before matching: every reason is 0 or at least 10."""
    r = _result()
    r["counts"].update(treated_found=46, attrition=10 / 46)
    r["counts"]["treated_lost"]["missing_covariates"] = 0
    for row in r["power"]["cohorts"]:
        row["treated_dropped"] = 0
    r["power"]["notes"] = r["power"]["notes"][1:]
    r["effects"]["padlock_reasons"][0] = ATTRITION_LOCK.replace("25%", "22%")
    r["summary"]["caveat"] = ATTRITION_CAVEAT.replace("25%", "22%")
    return r


def _coverage() -> pd.DataFrame:
    """Partnership schools by year since joining: every cohort at e = -2..2; 2014 and 2015 only at 3."""
    sizes = {2014: 19, 2015: 12, 2016: 5}
    rows = []
    for g, n in sizes.items():
        for e in range(-2, 4):
            if e == 3 and g == 2016:
                continue
            rows += [{"g": g, "e": e, "urn": g * 100 + i} for i in range(n)]
    return pd.DataFrame(rows)


def _frames():
    cohort = pd.DataFrame({"urn": [201401, 201501, 201601, 201602], "g": [2014, 2015, 2016, 2016]})
    pairs = pd.DataFrame({"treated_id": [201401, 201501, 201601], "control_id": [900, 902, 900],
                          "cohort": [2014, 2015, 2016]})
    schools = pd.DataFrame({"urn": [201401, 201501, 201601, 900, 901, 902],
                            "group": ["partnership"] * 3 + ["comparison"] * 3,
                            "name": ["A", "B", "C", "X", "Y", "Z"]})
    links = pd.DataFrame({"urn": [201401, 201501, 201601, 900, 900, 901, 902],
                          "g": [2014, 2015, 2016, 2014, 2016, 2016, 2015],
                          "treated": [1, 1, 1, 0, 0, 0, 0]})
    return {"cohort": cohort, "matched_pairs": pairs, "schools": schools}, links


def test_control_study_by_hand():
    raw = _result()
    before = copy.deepcopy(raw)
    frames, links = _frames()
    out = control_study(raw, DisclosurePolicy(), frames=frames, links=links, coverage=_coverage())
    r = out.result
    assert raw == before  # the compute result is not touched
    # cohort table: 2016 (11 entering matching, 5 matched) primary; alone -> 2015 (15 < 20) secondary
    assert [g["g"] for g in r["counts"]["cohorts"]] == [2014]
    cohort_items = {s["key"]: s["rule"] for s in r["disclosure"]["suppressed"] if s["table"] == "counts.cohorts"}
    assert cohort_items == {2016: P, 2015: S} and out.suppressed_cohorts == [2015, 2016]
    # totals and the overall counts stay
    assert r["counts"]["treated_analysed"] == 36 and r["counts"]["comparison_matched"] == 90
    # e = 3 draws on 2015 but not 2016: removed from the event study and both trend groups
    assert [row["e"] for row in r["event_study"]["callaway_santanna"]] == [-2, -1, 0, 1, 2]
    assert sorted({row["e"] for row in r["trends"]}) == [-2, -1, 0, 1, 2] and len(r["trends"]) == 10
    # placebos: k=1 draws on every cohort (kept); k=2 on 2014, 2015 but not 2016 (removed); k=3 has
    # 9 comparison schools (removed)
    assert [p["k"] for p in r["diagnostics"]["placebo_dates"]["placebos"]] == [1]
    assert r["effects"]["placebo_g"] == [{"k": 1, "g": 0.01}]  # the same rows in effect-size units
    want = ("placebo joining dates (1 year(s) early: 0.50 points, p = 0.400; 2 year(s) early: not shown "
            "(disclosure control); 3 year(s) early: not shown (disclosure control); Bonferroni threshold 0.017 "
            "for 3 dates)")
    placebo = r["verdict"]["checks"][1]
    assert placebo["detail"] == want and placebo["failed"] is True  # the check's result stays
    assert r["verdict"]["checks"][0]["detail"] == before["verdict"]["checks"][0]["detail"]  # e = -2 kept
    assert want in r["effects"]["padlock_reasons"][1] and want in r["summary"]["answer"]
    assert "1.20" not in json.dumps(r["verdict"]) + json.dumps(r["summary"]) + json.dumps(r["effects"])
    # placebo notes: the count of 9 school-years becomes "fewer than 10"; the note about placebo cohort
    # 2014 (the 2015 cohort moved one year early: suppressed) goes; window and df stay as they were
    assert r["diagnostics"]["placebo_dates"]["placebos"][0]["notes"] == [
        "fewer than 10 partnership school-years from the real joining year on stay in the panel",
        "inference: jackknife, t with G1 - 1 = 9 df, window [-3, 0]"]
    # planned power: the counts of the suppressed cohorts go (and, the flow being withheld, all of them)
    pw = {row["g"]: row for row in r["power"]["cohorts"]}
    assert all(row["treated"] is None and row["treated_dropped"] is None for row in pw.values())
    assert all(row["eligible_pool"] == 100 for row in pw.values())
    assert r["power"]["cluster_sizes"] is None
    # texts naming a suppressed cohort are withheld
    assert "2016" not in r["estimators_not_computed"]["imputation"]
    assert r["estimates"]["twfe"]["notes"][1] == "clustered by partnership"
    assert "2015" not in r["estimates"]["twfe"]["notes"][0]
    # tables/cohort.csv: the analysed partnership schools of published cohorts only; pairs and map
    # points of 2015 and 2016 go; comparison school 900 was also matched in 2014 and stays, 901
    # (2016 only) and 902 (2015 only) go
    assert out.frames["cohort"]["urn"].tolist() == [201401]
    assert out.frames["matched_pairs"]["treated_id"].tolist() == [201401]
    assert out.frames["schools"]["urn"].tolist() == [201401, 900]
    rec = r["disclosure"]
    assert rec["threshold"] == 10 and rec["default_threshold"] == 10 and rec["lowered"] is False
    assert "ONS Secure Research Service" in rec["rule"]
    assert all(s["rule"] in (P, S) and s["reason"] and s["what"] for s in rec["suppressed"])


def test_a_small_lost_reason_withholds_the_sample_flow_as_a_block(tmp_path):
    """2 schools lost for a missing characteristic: alone it is 48 - 46 (found minus entering matching),
    the caliper's 10 is 46 - 36, and 46 is the cohort table's 20 + 15 + 11, the planned power's
    schools_treated, 184 / (1 + 3) from its Hedges' J, ... So every one of them goes."""
    from evaluation.report.chapter import _cohort_section, _disclosure_section
    from evaluation.result_schema import Counts

    raw = _result()
    policy = DisclosurePolicy()
    assert flow_withheld(raw["counts"]["treated_lost"], policy)
    frames, links = _frames()
    r = control_study(raw, policy, frames=frames, links=links, coverage=_coverage()).result
    c = r["counts"]
    assert c["treated_found"] is None and c["attrition"] is None
    assert c["treated_lost"] == dict.fromkeys(raw["counts"]["treated_lost"])  # every reason, zeros too
    assert c["cohorts"] == [{"g": 2014, "treated": None, "treated_matched": None, "comparison_matched": 50}]
    assert c["treated_analysed"] == 36 and c["comparison_matched"] == 90  # the study's N stays
    pw = r["power"]
    for key in ("schools_treated", "schools_comparison", "cluster_sizes", "hedges_j", "se", "df", "design_effect",
                "mdes_raw", "icc", "var_change"):
        assert pw[key] is None, key
    assert all(row["treated"] is None and row["treated_dropped"] is None for row in pw["cohorts"])
    assert pw["clusters_treated"] == 20 and pw["mdes"] == 0.31 and r["effects"]["mdes"] == 0.31
    assert pw["notes"][0] == ("partnership schools (their number is withheld: disclosure control) lack the "
                              "pre-joining years")
    # no text states the share lost; the padlocks and the reasons' count stay
    text = json.dumps(r)
    assert "25%" not in text and not re.search(r"\d+% of the partnership schools", text)
    assert r["effects"]["padlock_reasons"][0] == (
        "attrition: a share of the partnership schools (the share is withheld: disclosure control) were lost from "
        "the analysis; 4 padlocks allow at most 20%")
    assert r["summary"]["caveat"].startswith("A share of the partnership schools (the share is withheld")
    flow = [s for s in r["disclosure"]["suppressed"] if s["table"] == "counts.flow"]
    assert len(flow) == 1 and "below 10, and the others would reveal it" in flow[0]["reason"]
    assert any(k["table"] == "effects.padlocks" for k in r["disclosure"]["not_suppressed"])
    Counts.model_validate(c)  # the contract allows the nulls
    # the chapter shows the withheld numbers as such, and says why once
    section = _cohort_section(r, tmp_path, tmp_path, "toy")
    assert f"How many were found, and how many were lost at each step, is {WITHHELD}" in section
    for words in ("a matching characteristic was missing", "no comparison school similar enough",
                  "too few years of results", "no published result in the study window"):
        assert re.search(rf"- {words}.*: {re.escape(WITHHELD)}", section), words
    row = next(line for line in section.splitlines() if line.startswith("| 2014 |"))
    assert row == f"| 2014 | {WITHHELD} | {WITHHELD} | 50 |"
    assert not re.search(r"\b(48|46|12|2) \(", section)
    disclosure = _disclosure_section(r)
    assert disclosure.count("at least one of the numbers of partnership schools lost at a step is below 10, and the "
                            "others would reveal it") == 1


def test_a_flow_with_no_small_reason_is_published_in_full(tmp_path):
    from evaluation.report.chapter import _cohort_section, _disclosure_section

    raw = _published_flow()
    assert not flow_withheld(raw["counts"]["treated_lost"], DisclosurePolicy())  # 0, 10, 0, 0
    frames, links = _frames()
    r = control_study(raw, frames=frames, links=links, coverage=_coverage()).result
    c = r["counts"]
    assert c["treated_found"] == 46 and c["attrition"] == 10 / 46
    assert c["treated_lost"] == raw["counts"]["treated_lost"]
    assert c["cohorts"] == [raw["counts"]["cohorts"][0]]  # 2015 and 2016 are suppressed cohorts
    pw = r["power"]
    assert pw["schools_treated"] == 46 and pw["schools_comparison"] == 138
    assert pw["hedges_j"] == raw["power"]["hedges_j"]
    assert pw["mdes"] == 0.31234567 and r["effects"]["mdes"] == 0.31234567
    # the suppressed cohorts' planned-power counts still go; the zeros left out stay
    assert [(row["treated"], row["treated_dropped"]) for row in pw["cohorts"]] == [(20, 0), (None, None),
                                                                                    (None, None)]
    assert r["effects"]["padlock_reasons"][0] == raw["effects"]["padlock_reasons"][0]
    assert r["summary"]["caveat"] == raw["summary"]["caveat"]
    rec = r["disclosure"]
    assert not [s for s in rec["suppressed"] if s["table"] in ("counts.flow", "power", "counts.treated_lost")]
    assert not [k for k in rec["not_suppressed"] if k["table"] in ("counts.treated_lost", "counts")]
    # 2014: 20 entering matching, 19 matched: a difference of one school, knowingly left in
    assert [k["key"] for k in rec["not_suppressed"] if k["table"] == "counts.cohorts"] == [[2014]]
    section = _cohort_section(r, tmp_path, tmp_path, "toy")
    assert "The study found 46 secondary schools" in section and "10 (22%) were lost:" in section
    assert "- no comparison school similar enough (outside the caliper): 10" in section
    assert "| 2014 | 20 | 19 | 50 |" in section and WITHHELD not in section
    assert "lost at a step" not in _disclosure_section(r)


def test_small_numbers_replaces_only_counts_of_schools():
    f = "fewer than 10"
    assert _small_numbers("9 partnership school-years stay", 10) == f"{f} partnership school-years stay"
    assert _small_numbers("has 6 observation(s) in 1 cluster", 10) == f"has {f} observation(s) in 1 cluster"
    assert _small_numbers("3 schools, 12 schools and 2 comparison schools", 10) == \
        f"{f} schools, 12 schools and {f} comparison schools"
    assert _small_numbers("2 partnership school(s) lack the pre-joining years", 10) == \
        f"{f} partnership school(s) lack the pre-joining years"
    for same in ("window [-3, 4]", "t with G1 - 1 = 9 df", "cohort 2016 in period 2016", "F = 0.40 (df 3, 98)",
                 "cohorts [2014] left out", "1 year(s) early", "-4 schools", "0 schools", "3 per school",
                 "2.5 schools", "the 5-year window"):
        assert _small_numbers(same, 10) == same, same
    assert _small_numbers("4 schools", 3) == "4 schools"  # a lowered threshold


def test_a_check_text_in_an_unknown_format_is_withheld_whole():
    raw = _result()
    raw["verdict"]["checks"][1]["detail"] = "placebos: k=2 gives 1.20 (p 0.03), k=3 gives -0.70"
    frames, links = _frames()
    r = control_study(raw, frames=frames, links=links, coverage=_coverage()).result
    assert r["verdict"]["checks"][1]["detail"] == "placebo joining dates: the estimates are not shown (disclosure control)"


def test_lowered_threshold_is_recorded_and_suppresses_less():
    frames, links = _frames()
    policy = DisclosurePolicy(threshold=5, reason="agreed with the trusts")
    r = control_study(_result(), policy, frames=frames, links=links, coverage=_coverage()).result
    assert [g["g"] for g in r["counts"]["cohorts"]] == [2014, 2015, 2016]  # 5 matched is not below 5
    # a lost reason of 2 < 5: the flow is withheld; under a threshold of 2 it is published
    assert r["counts"]["treated_found"] is None
    two = DisclosurePolicy(threshold=2, reason="agreed with the trusts")
    r2 = control_study(_result(), two, frames=frames, links=links, coverage=_coverage()).result
    assert r2["counts"]["treated_lost"] == _result()["counts"]["treated_lost"] and r2["counts"]["treated_found"] == 48
    assert [p["k"] for p in r["diagnostics"]["placebo_dates"]["placebos"]] == [1, 2, 3]
    rec = r["disclosure"]
    assert rec["threshold"] == 5 and rec["lowered"] is True and rec["reason"] == "agreed with the trusts"


def test_the_study_definition_sets_the_threshold():
    raw = _result()
    raw["study"]["definition"] = {"disclosure": {"threshold": 4, "reason": "tiny pilot, schools consented"}}
    r = control_study(raw, frames=_frames()[0], links=_frames()[1], coverage=_coverage()).result
    assert r["disclosure"]["threshold"] == 4 and r["disclosure"]["reason"] == "tiny pilot, schools consented"


def test_too_few_schools_analysed_publishes_nothing():
    raw = _result()
    raw["counts"]["treated_analysed"] = 9
    with pytest.raises(InputError) as info:
        control_study(raw, coverage=_coverage())
    assert "nothing from study 'toy' can be published" in info.value.render()
    assert "fewer than the disclosure threshold of 10" in info.value.render()


def test_chapter_says_what_is_not_shown():
    from evaluation.report.chapter import _disclosure_section

    frames, links = _frames()
    r = control_study(_result(), frames=frames, links=links, coverage=_coverage()).result
    text = _disclosure_section(r)
    assert text.startswith("## What is not shown (disclosure control)")
    assert ("The 2016 cohort (fewer than 10 schools) and, so that it cannot be worked out from the totals, the "
            "2015 cohort: their counts, schools, matched pairs and map points are not shown") in text
    assert "placebo estimate for joining 3 year(s) early" in text
    r = control_study(_result(), DisclosurePolicy(threshold=5, reason="agreed with the trusts"), frames=frames,
                      links=links, coverage=_coverage()).result
    text = _disclosure_section(r)
    assert "lowers the threshold to 5 schools, below the ONS Secure Research Service default of 10" in text
    assert "agreed with the trusts" in text


def test_self_evaluation_names_its_schools_by_design():
    result = {"by_school": [{"urn": 1, "family_size": 50}, {"urn": 2, "family_size": 6}],
              "comparison": {"schools": 120}}
    r = control_self_evaluation(result)
    assert r["disclosure"]["suppressed"] == [] and "disclosure" not in result
    tables = [k["table"] for k in r["disclosure"]["not_suppressed"]]
    assert tables == ["schools", "by_school"] and r["disclosure"]["not_suppressed"][1]["key"] == [2]


# ----------------------------------------------------------------------------- done when: the built book

BOOK_STUDIES = ("federation_primary_ks2", "federation_primary_ks2_while_members")
TEXT_SUFFIXES = {".md", ".html", ".csv", ".json", ".txt", ".yml", ".ipynb"}
SKIP_DIRS = {"_static", "_mathjax", "mathjax", "_sphinx_design_static"}


@pytest.fixture(scope="module")
def published(small_store, tmp_path_factory):
    """Two studies on the small panel written through write_results, and the book built from them."""
    from evaluation.cli import main
    from evaluation.data.panels import load_study_data
    from evaluation.pipeline import run_study
    from evaluation.publish.writers import write_results
    from evaluation.study import load_study

    root = tmp_path_factory.mktemp("disclosure")
    results = root / "results"
    runs = {}
    for sid in BOOK_STUDIES:
        study = load_study(STUDIES / f"{sid}.toml")
        runs[sid] = run_study(study, load_study_data(small_store, study))
        write_results(runs[sid], results)
    assert main(["book", "build", "--results", str(results), "--out", str(root / "book")]) == 0
    return runs, results, root / "book" / "_build"


def _texts(*dirs: Path):
    for d in dirs:
        for path in sorted(d.rglob("*")):
            if not path.is_file() or SKIP_DIRS & set(path.relative_to(d).parts):
                continue
            if path.suffix in TEXT_SUFFIXES or path.name == "searchindex.js":
                yield path, path.read_text(encoding="utf-8", errors="replace")


def _hidden_schools(run, gone: set[int]) -> tuple[set[int], set[str]]:
    """URNs and names of the schools of suppressed cohorts (comparison schools matched only to them)."""
    links = pd.concat([m.frame.loc[m.weights > 0, ["urn", "treated"]].assign(g=m.g) for m in run.matched])
    treated = set(run.cohort.treated.loc[run.cohort.treated["g"].isin(gone), "urn"].astype(int))
    shown = set(links.loc[~links["g"].isin(gone), "urn"].astype(int))
    hidden = (treated | set(links.loc[links["g"].isin(gone), "urn"].astype(int))) - shown
    names = set(run.schools.loc[run.schools["urn"].isin(hidden), "name"])
    names -= set(run.schools.loc[~run.schools["urn"].isin(hidden), "name"])  # a name shared with a shown school
    return hidden, names


def test_smallest_cohort_below_threshold_publishes_nothing_of_it(published):
    runs, results, build = published
    texts = list(_texts(build / "source", build / "html", results))
    assert any(p.suffix == ".html" for p, _ in texts) and any(p.name == "schools.csv" for p, _ in texts)
    for sid, run in runs.items():
        raw = run.result["counts"]["cohorts"]
        smallest = min(raw, key=lambda g: g["treated"])
        assert smallest["treated"] < 10 or smallest["treated_matched"] < 10, "the test needs a small cohort"
        r = json.loads((results / sid / "result.json").read_text())
        gone = {int(s["key"]) for s in r["disclosure"]["suppressed"] if s["table"] == "counts.cohorts"}
        assert smallest["g"] in gone
        assert {g["g"] for g in r["counts"]["cohorts"]} == {g["g"] for g in raw} - gone

        # no URN or name of a suppressed cohort's schools anywhere in the book, its source or results/
        hidden, names = _hidden_schools(run, gone)
        assert hidden
        pattern = re.compile(r"(?<![0-9A-Za-z.])(" + "|".join(map(str, sorted(hidden))) + r")(?![0-9A-Za-z])")
        assert pattern.search(run.schools.to_csv())  # the scan finds them where nothing controls them
        others = [o for o in runs if o != sid]  # a school hidden here may be shown by another study
        for path, text in texts:
            if any(o in str(path) for o in others):
                continue
            m = pattern.search(text)
            assert m is None, f"URN {m.group(1)} of a suppressed cohort in {path}"
            found = [n for n in names if n in text]
            assert not found, f"{found[:3]} of a suppressed cohort in {path}"

        # the map's input holds no school of a suppressed cohort, and every school of a published one
        schools = pd.read_csv(results / sid / "tables" / "schools.csv")
        assert not set(schools["urn"]) & hidden
        kept = set(run.cohort.treated.loc[~run.cohort.treated["g"].isin(gone), "urn"].astype(int))
        assert set(schools.loc[schools["group"] == "partnership", "urn"]) == kept & set(run.panel["urn"])
        for name in ("cohort", "matched_pairs"):
            frame = pd.read_csv(results / sid / "tables" / f"{name}.csv")
            assert not set(frame.get("g", frame.get("cohort", pd.Series(dtype=int)))) & gone

        # the sample flow: each example study loses fewer than 10 schools at some step, so it is withheld
        # as a block, and nothing published gives found minus analysed, or a reason
        assert flow_withheld(run.result["counts"]["treated_lost"], DisclosurePolicy()), "the test needs a small reason"
        c = r["counts"]
        assert c["treated_found"] is None and c["attrition"] is None and set(c["treated_lost"].values()) == {None}
        assert all(g["treated"] is None and g["treated_matched"] is None for g in c["cohorts"])
        assert c["treated_analysed"] == run.result["counts"]["treated_analysed"]
        pw = r["power"]
        assert all(pw[k] is None for k in POWER_FLOW_KEYS)
        assert all(row["treated"] is None and row["treated_dropped"] is None for row in pw["cohorts"])
        assert pw["mdes"] == round(pw["mdes"], 2) and r["effects"]["mdes"] == pw["mdes"]
        # tables/cohort.csv lists exactly the analysed partnership schools of the published cohorts
        listed = pd.read_csv(results / sid / "tables" / "cohort.csv")
        treated = run.panel[run.panel["cohort"] > 0]
        analysed_shown = set(treated.loc[~treated["cohort"].isin(gone), "urn"].astype(int))
        assert len(listed) == len(analysed_shown) and set(listed["urn"]) == analysed_shown
        lost = run.result["counts"]["treated_found"] - run.result["counts"]["treated_analysed"]
        for path, text in texts:
            if any(o in str(path) for o in others):
                continue
            assert not re.search(r"\d+(?:\.\d+)?% of the partnership schools", text), path
            assert not re.search(r"\d+ partnership school\(s\) lack", text), path
            assert f"{lost} ({round(100 * run.result['counts']['attrition'])}%)" not in text, path

        # the cohort table shows 'suppressed' (not blank, not 0, not the count) for each suppressed cohort,
        # and the withheld flow columns as such
        page = (build / "source" / "studies" / f"{sid}.md").read_text()
        assert f"How many were found, and how many were lost at each step, is {WITHHELD}" in page
        assert "lost at a step is below 10, and the others would reveal it" in page
        for g in raw:
            row = next(line for line in page.splitlines() if line.startswith(f"| {g['g']} |"))
            cells = [c.strip() for c in row.strip("|").split("|")]
            if g["g"] in gone:
                assert cells[1:] == ["suppressed"] * 3, row
            else:
                assert cells[1:] == [WITHHELD, WITHHELD, f"{g['comparison_matched']:,}"], row
        assert "## What is not shown (disclosure control)" in page
        html = (build / "html" / "studies" / f"{sid}.html").read_text()
        assert "What is not shown (disclosure control)" in html and ">suppressed<" in html

        # every published statistic by year since joining rests on at least 10 partnership schools
        treated = run.panel[run.panel["cohort"] > 0]
        n_at = treated.assign(e=treated["year"] - treated["cohort"]).groupby("e")["urn"].nunique()
        for rows in r["event_study"].values():
            assert all(n_at.get(row["e"], 0) >= 10 for row in rows)
        for p in r["diagnostics"]["placebo_dates"]["placebos"]:
            assert p["treated_schools"] >= 10 and p["comparison_schools"] >= 10
        shown_k = {p["k"] for p in r["diagnostics"]["placebo_dates"]["placebos"]}
        assert {row["k"] for row in r["effects"].get("placebo_g", [])} <= shown_k
        # a removed placebo's numbers are gone from the checks' texts too
        removed = {s["key"] for s in r["disclosure"]["suppressed"]
                   if s["table"] == "diagnostics.placebo_dates.placebos"}
        raw_detail = next(c["detail"] for c in run.result["verdict"]["checks"] if c["name"] == "placebo")
        for segment in raw_detail.removeprefix("placebo joining dates (").split("; "):
            k = re.match(r"(\d+) year\(s\) early", segment)
            if k and int(k.group(1)) in removed:
                assert segment not in json.dumps(r) and segment not in page
