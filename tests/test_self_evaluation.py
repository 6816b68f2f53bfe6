"""impact self-evaluate: one partnership against families of similar schools."""

from __future__ import annotations

import json

import pytest

from evaluation.data.synthetic import EFFECTS


def _complete(school_years, outcome: str):
    """URNs with a published ``outcome`` in every year of the data (a school missing one year is left
    out of a self-evaluation: that rule has its own test)."""
    sy = school_years[["urn", "year", outcome]]
    n_years = sy["year"].nunique()
    have = sy[sy[outcome].notna()].groupby("urn")["year"].nunique()
    return set(have[have == n_years].index)


def partnership_of_size(store, ptype: str, size: int, first_year: int = 2014) -> str:
    """The first partnership of ``ptype`` with ``size`` schools joining on one day in first_year-2018,
    every school with KS2 results in every year."""
    m = store.read_table("memberships")
    p = store.read_table("partnerships")
    m = m.merge(p[["partnership_id", "type"]], on="partnership_id")
    m = m[m["type"] == ptype]
    complete = _complete(store.read_table("school_years"), "ks2_rwm_expected_pct")
    grp = m.groupby("partnership_id").agg(n=("urn", "size"), first=("joined", "min"), last=("joined", "max"),
                                          full=("urn", lambda u: set(u) <= complete))
    ok = grp[(grp["n"] == size) & (grp["first"] == grp["last"]) & (grp["first"].dt.year >= first_year)
             & (grp["first"].dt.year <= 2018) & grp["full"]]
    return str(ok.index[0])


def test_self_evaluation_of_a_federation(tmp_path, run_cli, small_store):
    pid = partnership_of_size(small_store, "federation_hard", 3)
    code, out, err = run_cli("self-evaluate", "--partnership", pid, "--store", small_store.path,
                             "--results", tmp_path, "--permutations", 199)
    assert code == 0, err
    target = tmp_path / "self-evaluations" / pid.lower()
    r = json.loads((target / "result.json").read_text())
    assert r["kind"] == "self_evaluation" and len(r["schools"]) == 3
    [phase] = r["phases"]
    assert set(phase["estimates"]) == {"synthetic_did", "synthetic_control", "did"}
    analysed = sum(s["analysed"] for s in r["schools"])
    assert len(r["by_school"]) == analysed and all(b["family_size"] >= 5 for b in r["by_school"])
    h = r["headline"]
    assert h["scale"] == "units" and 0 < h["p_value"] <= 1 and h["replications"] == 199
    assert h["ci_low"] < h["estimate"] < h["ci_high"]
    # one phase: the headline is the phase; MDES = (z_.975 + z_.8) * SE / SD, in effect-size units
    assert h["estimate"] == phase["estimates"]["synthetic_did"]["estimate"]
    sd = r["outcomes"][phase["phase"]]["pupil_sd"]
    assert h["mdes"] == pytest.approx(2.8015852 * h["se"] / sd, rel=1e-6)
    for fig in ("effects.png", "schools.png", "history.png"):
        assert (target / "figures" / fig).exists()
    assert not (target / "figures" / "targets.png").exists()  # no targets set
    assert "smallest effect we could have detected" in out


@pytest.fixture(scope="module")
def planted_store(tmp_path_factory):
    """A panel where hard federations raise latent quality by 3 SD at once (KS2 RWM up to +36 points)."""
    from evaluation.data.national import write_panel
    from evaluation.data.store import Store
    from evaluation.data.synthetic import generate
    from evaluation.data.validate import read_raw, validate

    effects = dict(EFFECTS)
    effects[("federation_hard", "")] = (3.0, 1)
    panel = generate(seed=31, n_schools=4000, effects=effects)
    root = tmp_path_factory.mktemp("planted")
    paths = write_panel(panel, root)
    refs, tables = {}, []
    for name in ("schools", "partnerships", "memberships", "school_years"):
        vt = validate(name, read_raw(paths[name]), refs if name not in ("schools", "partnerships") else None)
        if name in ("schools", "partnerships"):
            refs[name] = vt.data
        tables.append(vt)
    store = Store(root / "impact.duckdb")
    store.write_tables(tables, extra={"truth_effects": panel.truth_effects.assign(
        sponsor_led=panel.truth_effects["sponsor_led"].astype(object))})
    return store


def test_a_large_planted_effect_is_found(tmp_path, run_cli, planted_store):
    pid = partnership_of_size(planted_store, "federation_hard", 3)
    code, out, err = run_cli("self-evaluate", "--partnership", pid, "--store", planted_store.path,
                             "--results", tmp_path, "--json", "--permutations", 199)
    assert code == 0, err
    r = json.loads(out)
    truth = planted_store.read_extra("truth_effects")
    [cohort] = r["cohorts"]
    urns, years = cohort["schools"], cohort["post_years"]
    t = truth[truth["urn"].isin(urns) & truth["year"].isin(years)]
    planted = t.groupby("urn")["effect_ks2_rwm_expected_pct"].sum().sum() / (len(urns) * len(years))
    h = r["headline"]
    assert h["ci_low"] <= planted <= h["ci_high"]
    # with the planted effect above 4 SEs a 5% test has power of about 98%: it must be found
    assert planted > 4 * h["se"], (planted, h["se"])
    assert h["ci_low"] > 0 and h["p_value"] < 0.05
    assert h["mdes_units"] < planted


def write(tmp_path, text, name="schools.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,row,column,words", [
    ("urn,date\n100001,2015-09-01\n", 1, "joined", "required column 'joined' is missing"),
    ("urn,joined\nabc,2015-09-01\n", 2, "urn", "expected a six-digit URN"),
    ("urn,joined\n100001,31/02/2015\n", 2, "joined", "expected a join date"),
    ("urn,joined\n100001,2015-09-01\n100001,2015-09-01\n", 3, "urn", "listed twice"),
])
def test_bad_schools_files(tmp_path, run_cli, small_store, text, row, column, words):
    code, _, err = run_cli("self-evaluate", "--schools", write(tmp_path, text), "--store", small_store.path,
                           "--results", tmp_path / "r")
    assert code == 2 and "Traceback" not in err
    assert f"schools.csv, row {row}, column {column!r}" in err and words in err
    assert not (tmp_path / "r").exists()


def test_unknown_partnership_and_schools(tmp_path, run_cli, small_store):
    code, _, err = run_cli("self-evaluate", "--partnership", "P9999999", "--store", small_store.path)
    assert code == 2 and "no partnership 'P9999999'" in err
    code, _, err = run_cli("self-evaluate", "--schools", write(tmp_path, "urn,joined\n999999,2015-09-01\n"),
                           "--store", small_store.path)
    assert code == 2 and "not in the store's schools table" in err



# ---------------------------------------------------------------------------- a whole partnership


def _eight_schools(data, seed=3):
    """A mixed-phase partnership of 8 never-member schools joining over four years, plus the cases a
    school is left out for: one joined before the data, one has no results since joining yet."""
    import numpy as np
    import pandas as pd

    never = data.schools[~data.schools["urn"].isin(data.memberships["urn"])].sort_values("urn")
    full = _complete(data.school_years, "ks2_rwm_expected_pct") | _complete(data.school_years, "ks4_attainment8")
    never = never[never["urn"].isin(full)]
    rng = np.random.default_rng(seed)
    prim = rng.choice(never.loc[never["phase"] == "primary", "urn"], 5, replace=False)
    sec = rng.choice(never.loc[never["phase"] == "secondary", "urn"], 3, replace=False)
    rows = [(prim[0], "2013-09-01", "member"), (prim[1], "2013-09-01", "member"), (prim[2], "2015-09-01", "member"),
            (prim[3], "2017-09-01", "member"), (sec[0], "2014-09-01", "member"), (sec[1], "2016-09-01", "member"),
            (prim[4], "2009-09-01", "member"),   # joined before the data (results from 2010)
            (sec[2], "2024-07-01", "member")]    # joined after 2024's exams: no results since joining yet
    return pd.DataFrame({"urn": [int(u) for u, _, _ in rows], "joined": pd.to_datetime([d for _, d, _ in rows]),
                         "role": [r for _, _, r in rows]})


def _plan_file(tmp_path, schools, targets="", extra=""):
    lines = ['id = "our_trust"', 'title = "Our Trust"', "baseline_year = 2012", "placebo_replications = 99",
             "family_size = 20", extra]
    for s in schools.itertuples():
        lines += ["[[schools]]", f"urn = {s.urn}", f"joined = {s.joined.date().isoformat()}", f'role = "{s.role}"']
    path = tmp_path / "our_trust.toml"
    path.write_text("\n".join(lines) + "\n" + targets)
    return path


TARGETS = """
[[targets]]
outcome = "ks2_rwm_expected_pct"
kind = "change"
value = 3.0
year = 2026

[[targets]]
outcome = "ks4_attainment8"
kind = "gap_to_national"
value = 0.0
year = 2030
"""


def test_a_mixed_phase_partnership_joining_over_four_years(tmp_path, run_cli, small_store):
    """Done-when of the self-evaluation issue: every school analysed from its own joining year or left out
    with a printed reason; each phase on its own outcome; phases combined in effect-size units."""
    from evaluation.cli.self_eval_cmd import load_all

    data = load_all(small_store)
    schools = _eight_schools(data)
    plan = _plan_file(tmp_path, schools, TARGETS)
    code, out, err = run_cli("self-evaluate", plan, "--store", small_store.path, "--results", tmp_path / "results")
    assert code == 0, err
    r = json.loads((tmp_path / "results" / "self-evaluations" / "our_trust" / "result.json").read_text())
    status = {s["urn"]: (s["status"], s["reason"]) for s in r["schools"]}
    assert [status[u][0] for u in schools["urn"]] == ["analysed"] * 6 + ["excluded"] * 2
    assert "joined before the data" in status[int(schools["urn"].iloc[6])][1]
    assert "no results since joining yet" in status[int(schools["urn"].iloc[7])][1]
    for u in schools["urn"].iloc[6:]:  # each left-out school is printed with its reason
        assert f"(URN {u}): {status[int(u)][1]}" in out
    # joining cohorts: phase x first results after joining, each on its phase's outcome
    assert [(c["phase"], c["joined"], len(c["schools"])) for c in r["cohorts"]] == [
        ("primary", 2014, 2), ("primary", 2016, 1), ("primary", 2018, 1), ("secondary", 2015, 1),
        ("secondary", 2017, 1)]
    assert {p: o["name"] for p, o in r["outcomes"].items()} == {"primary": "ks2_rwm_expected_pct",
                                                                 "secondary": "ks4_attainment8"}
    # a phase is the school-weighted mean of its cohorts; the partnership combines phases in SD units
    prim, sec = r["phases"]
    cs = [c for c in r["cohorts"] if c["phase"] == "primary"]
    mean = sum(len(c["schools"]) * c["estimates"]["synthetic_did"]["estimate"] for c in cs) / 4
    assert prim["estimates"]["synthetic_did"]["estimate"] == pytest.approx(mean, rel=1e-12)
    h = r["headline"]
    sd = {p: r["outcomes"][p]["pupil_sd"] for p in ("primary", "secondary")}
    combined = (4 * prim["estimates"]["synthetic_did"]["estimate"] / sd["primary"]
                + 2 * sec["estimates"]["synthetic_did"]["estimate"] / sd["secondary"]) / 6
    assert h["scale"] == "effect size" and h["estimate"] == pytest.approx(combined, rel=1e-12)
    assert h["ci_low"] < h["estimate"] < h["ci_high"] and h["schools"] == 6
    # one comparison family per analysed school, never a partnership school
    assert len(r["by_school"]) == 6 and all(b["family_size"] == 20 for b in r["by_school"])
    # targets with a status from the documented rule, and a trajectory figure
    assert [t["status"] in ("met", "on track", "off track") for t in r["targets"]] == [True, True]
    assert (tmp_path / "results" / "self-evaluations" / "our_trust" / "figures" / "targets.png").exists()
    assert r["provenance"]["command"] == f"impact self-evaluate {plan}"
    # families of 20 under-covered in the simulation: the result says so
    assert any(n.startswith("Families of fewer than 50 similar schools") for n in r["notes"])


def test_a_planted_effect_moves_the_estimate_by_exactly_that_much_and_is_recovered(small_store):
    """Synthetic DiD's weights depend on the years before joining and on the comparison schools only, so an
    effect added to the partnership's schools from joining on moves each cohort's estimate (and the
    phases' and the partnership's) by exactly that effect; the placebo draws, and so the SE, do not move."""
    from evaluation.cli.self_eval_cmd import load_all
    from evaluation.inference.self_eval_coverage import with_planted_effect
    from evaluation.self_evaluation import SelfEvaluationSpec, self_evaluate

    data = load_all(small_store)
    schools = _eight_schools(data).iloc[:6]
    sd = {"primary": 48.0, "secondary": 19.0}
    spec = SelfEvaluationSpec(name="t", schools=schools, n_perm=99, family_size=20, by_school=False,
                              methods=("synthetic_did",))
    null = self_evaluate(spec, data)
    assert {p: o["pupil_sd"] for p, o in null["outcomes"].items()} == sd
    planted = self_evaluate(spec, with_planted_effect(data, schools, {"primary": ("ks2_rwm_expected_pct", 0.25 * 48.0),
                                                                       "secondary": ("ks4_attainment8", 0.25 * 19.0)}))
    h0, h1 = null["headline"], planted["headline"]
    assert h1["estimate"] - h0["estimate"] == pytest.approx(0.25, abs=1e-9)
    assert h1["se"] == pytest.approx(h0["se"], rel=1e-9)
    for p0, p1 in zip(null["phases"], planted["phases"]):
        delta = 0.25 * sd[p0["phase"]]
        assert p1["estimates"]["synthetic_did"]["estimate"] - p0["estimates"]["synthetic_did"]["estimate"] == \
            pytest.approx(delta, abs=1e-8)
    assert h1["ci_low"] <= 0.25 <= h1["ci_high"]  # recovered within its interval


@pytest.mark.slow
def test_intervals_cover_zero_at_about_the_nominal_rate_with_no_effect(small_store):
    """Placebo partnerships (4 primary + 4 secondary never-member schools joining over 4 years): the 95%
    interval covers the true zero in 0.95 of replications up to Monte Carlo error (3 MC SEs at R = 100:
    0.065). benchmarks/self_evaluation_coverage.py runs the full table on the national panel."""
    import numpy as np

    from evaluation.cli.self_eval_cmd import load_all
    from evaluation.inference.self_eval_coverage import replicate

    data = load_all(small_store)
    reps = [replicate(data, seed, family_size=20, reps=100) for seed in range(100)]
    coverage = np.mean([r.covers for r in reps])
    assert 0.95 - 3 * np.sqrt(0.95 * 0.05 / 100) <= coverage <= 1.0, coverage


def test_targets_follow_the_documented_rule():
    """A hand-made panel: the partnership's value is the pupil-weighted mean over its schools with baseline
    results; met / on track / off track as TARGET_RULE says; the prediction adds the families' change."""
    import pandas as pd

    from evaluation.partnership_file import TargetEntry
    from evaluation.self_eval_targets import evaluate_targets
    from evaluation.self_evaluation import PhaseOutcome, SelfEvaluationSpec
    from evaluation.stages.cohort import StudyData

    y = "ks2_rwm_expected_pct"
    rows = []
    values = {1: [50, 52, 56, 60], 2: [70, 70, 72, 74], 3: [60, 61, 62, 63], 4: [40, 42, 44, 46]}
    pupils = {1: 30, 2: 10, 3: 20, 4: 20}
    for urn, vals in values.items():
        for year, v in zip(range(2015, 2019), vals):
            rows.append({"urn": 100000 + urn, "year": year, y: float(v), "ks2_eligible_pupils": pupils[urn]})
    sy = pd.DataFrame(rows)
    schools = pd.DataFrame({"urn": [100001, 100002, 100003, 100004], "phase": "primary"})
    data = StudyData(schools, pd.DataFrame(), pd.DataFrame(columns=["urn", "partnership_id", "joined"]), sy, None)
    ours = pd.DataFrame({"urn": [100001, 100002], "phase": "primary"})
    outcomes = {"primary": PhaseOutcome("primary", y, "d", "percent", (2015, 2016, 2017, 2018), None, None,
                                        "ks2_eligible_pupils")}
    targets = (TargetEntry(outcome=y, kind="change", value=6.0, year=2018),        # 9.5 >= 6: met
               TargetEntry(outcome=y, kind="level", value=70.0, year=2021),        # line at 2018: 64.5: on track
               TargetEntry(outcome=y, kind="gap_to_national", value=12.0, year=2020))  # below the line: off track
    spec = SelfEvaluationSpec(name="t", schools=ours, targets=targets, baseline_year=2015)
    met, on, off = evaluate_targets(spec, data, ours, outcomes, {100001: [100003], 100002: [100004]}, 2015)
    base = (50 * 30 + 70 * 10) / 40  # 55.0
    latest = (60 * 30 + 74 * 10) / 40  # 63.5
    assert met["baseline_value"] == pytest.approx(base) and met["latest_value"] == pytest.approx(latest)
    assert met["status"] == "met" and met["latest"] == pytest.approx(8.5)
    # the prediction: baseline + pupil-weighted mean of the families' changes (3 and 6)
    assert met["predicted"] == pytest.approx((3 * 30 + 6 * 10) / 40)
    assert on["status"] == "on track"  # 63.5 >= 55 + (70 - 55) * 3 / 6 = 62.5
    nat = lambda i: sum(values[u][i] * pupils[u] for u in values) / sum(pupils.values())  # noqa: E731
    assert off["baseline"] == pytest.approx(base - nat(0)) and off["latest"] == pytest.approx(latest - nat(3))
    line = (base - nat(0)) + (12.0 - (base - nat(0))) * 3 / 5
    assert off["latest"] < line and off["status"] == "off track"
    assert all(t["rule"].startswith("Met: the latest result is at or above the target") for t in (met, on, off))


def test_rerunning_after_a_new_year_appends_to_the_history(tmp_path, small_store):
    """The first run sees results to 2023, the second to 2024: the chapter shows both estimates; running
    again on the same data replaces that year's entry instead of adding one."""
    import dataclasses

    from evaluation.cli.self_eval_cmd import load_all
    from evaluation.publish.writers import write_self_evaluation
    from evaluation.report.results_io import load_self_evaluations, previous_self_evaluation_history
    from evaluation.report.self_eval_chapter import write_self_evaluation_chapter
    from evaluation.self_evaluation import SelfEvaluationSpec, self_evaluate

    data = load_all(small_store)
    spec = SelfEvaluationSpec(name="ours", schools=_eight_schools(data).iloc[:4], n_perm=99, family_size=20)
    to_2023 = dataclasses.replace(data, school_years=data.school_years[data.school_years["year"] <= 2023],
                                  fingerprint=None)  # a store holding results to 2023
    results = tmp_path / "results"
    first = self_evaluate(spec, to_2023, history=previous_self_evaluation_history(results, "ours")[0])
    write_self_evaluation(first, results)
    for _ in range(2):
        second = self_evaluate(spec, data, history=previous_self_evaluation_history(results, "ours")[0])
        write_self_evaluation(second, results)
    h = second["history"]
    assert [e["data_last_year"] for e in h] == [2023, 2024]
    assert h[0]["estimate"] == first["headline"]["estimate"] and h[1]["estimate"] == second["headline"]["estimate"]
    assert h[0]["data_fingerprint"] != h[1]["data_fingerprint"]
    [(directory, stored)] = load_self_evaluations(results)
    entry = write_self_evaluation_chapter(stored, directory, tmp_path / "source")
    text = (tmp_path / "source" / f"{entry}.md").read_text()
    assert "## How the evidence has built up" in text and "| 2023 |" in text and "| 2024 |" in text


def test_an_older_result_starts_a_new_history_with_a_note(tmp_path):
    from evaluation.report.results_io import previous_self_evaluation_history

    d = tmp_path / "self-evaluations" / "ours"
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps({"schema_version": 3, "kind": "self_evaluation"}))
    history, note = previous_self_evaluation_history(tmp_path, "ours")
    assert history == [] and "schema version 3" in note and "starts with this run" in note


def test_supporting_school_is_reported_on_its_own(tmp_path, small_store):
    from evaluation.cli.self_eval_cmd import load_all
    from evaluation.self_evaluation import SelfEvaluationSpec, self_evaluate

    data = load_all(small_store)
    schools = _eight_schools(data).iloc[:4].copy()
    schools.loc[schools.index[0], "role"] = "supporting"
    r = self_evaluate(SelfEvaluationSpec(name="t", schools=schools, n_perm=99, family_size=20), data)
    lead = int(schools["urn"].iloc[0])
    assert {s["urn"]: s["status"] for s in r["schools"]}[lead] == "supporting"
    assert all(lead not in c["schools"] for c in r["cohorts"])
    [s] = r["supporting"]
    assert s["urn"] == lead and s["family_size"] == 20 and s["ci_low"] < s["estimate"] < s["ci_high"]
    assert any("supporting school" in n for n in r["notes"])


@pytest.mark.parametrize("text,words", [
    ('id = "our_trust"\ntitle = "T"\nbaseline_yr = 2012\npartnership_id = "P1"\n',
     "unknown key 'baseline_yr': did you mean 'baseline_year'?"),
    ('id = "our_trust"\ntitle = "T"\nbaseline_year = 2012\npartnership_id = "P1"\n[[targets]]\n'
     'outcome = "ks2_rwm_expected_pct"\nkind = "changes"\nvalue = 1\nyear = 2020\n', "targets.kind"),
    ('id = "our_trust"\ntitle = "T"\nbaseline_year = 2012\npartnership_id = "P1"\n[[targets]]\n'
     'outcome = "ks2_rwm_expected_pct"\nkind = "change"\nvalue = 1\nyear = 2011\n', "must come after the baseline"),
    ('id = "our_trust"\ntitle = "T"\nbaseline_year = 2012\n', "name the schools either with partnership_id"),
    ('id = "other"\ntitle = "T"\nbaseline_year = 2012\npartnership_id = "P1"\n', "must match the file name"),
    ('id = "our_trust"\ntitle = "T"\nbaseline_year = 2012\n[[schools]]\nurn = 100001\njoined = 2015-09-01\n'
     'rol = "member"\n', "unknown key 'schools.rol': did you mean 'schools.role'?"),
])
def test_bad_partnership_files_are_exit_2_naming_the_key(tmp_path, run_cli, small_store, text, words):
    path = tmp_path / "our_trust.toml"
    path.write_text(text)
    code, _, err = run_cli("self-evaluate", path, "--store", small_store.path, "--results", tmp_path / "r")
    assert code == 2 and "Traceback" not in err and "our_trust.toml" in err
    assert words in err
    assert not (tmp_path / "r").exists()


def test_schools_file_takes_a_role_column(tmp_path):
    from evaluation.errors import InputError
    from evaluation.self_evaluation import read_schools_file

    f = read_schools_file(write(tmp_path, "urn,joined,role\n100001,2015-09-01,supporting\n100002,2016-09-01,\n"))
    assert f["role"].tolist() == ["supporting", "member"]
    with pytest.raises(InputError, match="expected role member or supporting"):
        read_schools_file(write(tmp_path, "urn,joined,role\n100001,2015-09-01,boss\n"))
