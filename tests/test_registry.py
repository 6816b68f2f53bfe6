"""Estimator names are spelled once (evaluation/estimators/names.py) and every layer agrees."""

from pathlib import Path

import pytest

from evaluation.cli.estimate_cmd import ESTIMATORS as CLI_ESTIMATORS
from evaluation.estimators.names import ESTIMATOR_NAMES, canonical, cli_spelling
from evaluation.estimators.registry import ESTIMATORS
from evaluation.report.markdown import ESTIMATOR_ORDER, estimator_name
from evaluation.errors import InputError
from evaluation.study import ESTIMATORS as STUDY_ESTIMATORS

STUDIES = Path(__file__).resolve().parents[1] / "studies"


def test_every_layer_lists_the_same_estimators():
    assert tuple(ESTIMATORS) == ESTIMATOR_NAMES == STUDY_ESTIMATORS
    assert [canonical(c) for c in CLI_ESTIMATORS] == list(ESTIMATOR_NAMES)
    assert ESTIMATOR_ORDER[: len(ESTIMATOR_NAMES)] == list(ESTIMATOR_NAMES)
    for name in ESTIMATOR_NAMES:
        assert canonical(cli_spelling(name)) == name
        assert estimator_name(name) != name.replace("_", " ")  # every estimator has a title


def test_study_files_accept_the_command_line_spelling(tmp_path):
    from evaluation.study import load_study

    text = (STUDIES / "federation_primary_ks2.toml").read_text()
    assert 'primary = "callaway_santanna"' in text
    path = tmp_path / "federation_primary_ks2.toml"
    path.write_text(text.replace('primary = "callaway_santanna"', 'primary = "callaway-santanna"'))
    study = load_study(path)
    assert study.estimators.primary == "callaway_santanna"
    assert study.spec_hash == load_study(STUDIES / "federation_primary_ks2.toml").spec_hash
    path.write_text(text.replace('primary = "callaway_santanna"', 'primary = "callaway-santana"'))
    with pytest.raises(InputError, match="did you mean 'callaway_santanna'"):
        load_study(path)


def test_estimate_accepts_the_study_file_spelling(run_cli, tmp_path):
    code, _, err = run_cli("estimate", tmp_path / "missing.csv", "--unit", "u", "--time", "t", "--outcome", "y",
                           "--cohort", "g", "--estimator", "callaway_santanna")
    assert code == 2 and "invalid choice" not in err  # the spelling passed; the missing file is the problem


# --- de Chaisemartin & D'Haultfoeuille through the registry ---------------------------------------

DCDH = "chaisemartin_dhaultfoeuille"


def _analysis_panel(seed=3, n=240, drop=0.08):
    """An analysis panel as evaluation.stages.panel builds it: urn, year, y, cohort (0 = comparison),
    weight (1 for partnership schools, matching weights otherwise), the cluster columns; rows only
    where the outcome is published (``drop`` of them missing)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    years = np.arange(2011, 2021)
    cohort = rng.choice([0, 0, 0, 2014, 2015, 2017], n)
    weight = np.where(cohort > 0, 1.0, rng.choice([0.5, 1.0, 2.0, 3.5], n))
    pid = np.where(cohort > 0, rng.integers(0, 25, n), -1)
    g, t = np.repeat(cohort, len(years)), np.tile(years, n)
    D = (g > 0) & (t >= g)
    y = np.repeat(rng.normal(size=n), len(years)) + 0.2 * (t - 2011) + 1.5 * D + rng.normal(size=n * len(years))
    urn = np.repeat(100000 + np.arange(n), len(years))
    part = np.where(np.repeat(pid, len(years)) >= 0, "P:" + np.repeat(pid, len(years)).astype(str),
                    "S:" + urn.astype(str))
    panel = pd.DataFrame({"urn": urn, "year": t, "y": y, "cohort": g, "weight": np.repeat(weight, len(years)),
                          "cluster_partnership": part, "cluster_school": "S:" + urn.astype(str),
                          "cluster_matched_set": part})
    panel["cluster"] = panel["cluster_partnership"]
    keep = rng.random(len(panel)) >= drop
    return panel[keep].reset_index(drop=True)


def _spec(**changes):
    from evaluation.spec import EstimationSpec

    spec = EstimationSpec(study_id="t", outcome="y", window=(-3, 3), estimators=("callaway_santanna", DCDH),
                          primary="callaway_santanna", cluster="partnership", alpha=0.05, seed=1)
    return spec.with_(**changes)


def test_chaisemartin_registry_fit_is_the_estimator_on_the_completed_grid():
    """Rows missing where the outcome is not published: the registry completes the school x year grid
    (y empty, treatment from the cohort, weight and cluster carried over) and fits effects e = 0..3
    and placebos e = -2, -3 with the matching weights and the partnership clustering; the same
    numbers as the estimator on the grid built by hand."""
    import numpy as np
    import pandas as pd

    from evaluation.estimators.chaisemartin import chaisemartin_dhaultfoeuille
    from evaluation.estimators.registry import fit

    panel = _analysis_panel()
    spec = _spec()
    res = fit(DCDH, panel, spec)
    units = panel.drop_duplicates("urn")[["urn", "cohort", "weight", "cluster_partnership"]]
    grid = units.merge(pd.DataFrame({"year": np.arange(2011, 2021)}), how="cross")
    grid = grid.merge(panel[["urn", "year", "y"]], on=["urn", "year"], how="left")
    grid["d"] = ((grid["cohort"] > 0) & (grid["year"] >= grid["cohort"])).astype(int)
    assert grid["y"].isna().sum() == 2400 - len(panel) > 100
    ref = chaisemartin_dhaultfoeuille(grid.sample(frac=1, random_state=0), y="y", unit="urn", time="year",
                                      treatment="d", effects=4, placebo=2, weights="weight",
                                      cluster="cluster_partnership")
    assert res.event_time.equals(ref.event_time)
    assert list(res.event_time["e"]) == [-3, -2, 0, 1, 2, 3]
    assert res.overall == ref.overall and res.overall.estimate == ref.details["average_total_effect"]["estimate"]
    assert res.variance.cluster == "cluster_partnership" and res.details["weights"] == "weight"
    assert res.n_units == panel["urn"].nunique()
    assert abs(res.overall.estimate - 1.5) < 4 * res.overall.se
    # another clustering: the same point estimates, other SEs (the alternative-clustering refit)
    school = fit(DCDH, panel, spec, cluster="school")
    assert school.overall.estimate == res.overall.estimate and school.overall.se != res.overall.se
    assert school.variance.cluster == "cluster_school"
    # all weights 1: the unweighted estimator
    ones = panel.assign(weight=1.0)
    assert fit(DCDH, ones, spec).details["weights"] is None


def test_chaisemartin_registry_uses_a_treatment_column_as_it_is():
    """A switching-exposure panel supplies ``treatment`` (a row for every school and year): no grid
    completion, no absorbing treatment built from the cohort (here some schools leave)."""
    import numpy as np

    from evaluation.estimators.chaisemartin import chaisemartin_dhaultfoeuille
    from evaluation.estimators.registry import fit

    panel = _analysis_panel(drop=0.0)
    panel["treatment"] = ((panel["cohort"] > 0) & (panel["year"] >= panel["cohort"])).astype(int)
    leavers = panel["urn"].isin(panel.loc[panel["cohort"] == 2014, "urn"].unique()[:15])
    panel.loc[leavers & (panel["year"] >= 2018), "treatment"] = 0
    panel.loc[panel.sample(frac=0.05, random_state=2).index, "y"] = np.nan
    res = fit(DCDH, panel, _spec())
    ref = chaisemartin_dhaultfoeuille(panel, y="y", unit="urn", time="year", treatment="treatment", effects=4,
                                      placebo=2, weights="weight", cluster="cluster_partnership")
    assert res.event_time.equals(ref.event_time) and res.overall == ref.overall
    assert any("more than once" in n for n in res.notes)


def test_chaisemartin_event_rows_are_what_the_book_reads():
    from evaluation.estimators.registry import fit
    from evaluation.result_schema import EventRow
    from evaluation.stages.estimate import _estimate_entry, _event_rows

    res = fit(DCDH, _analysis_panel(), _spec(window=(-4, 6)))
    rows = _event_rows(res)
    # horizons no school reaches (e = 6 needs 2014 joiners seen in 2020 with a comparison) are left out
    assert [r["e"] for r in rows] == sorted(r["e"] for r in rows) and -1 not in [r["e"] for r in rows]
    assert {-4, -3, -2, 0, 1, 2, 3, 4, 5} <= {r["e"] for r in rows}
    for r in rows:
        EventRow.model_validate(r)
        assert r["ci_low"] < r["estimate"] < r["ci_high"] and 0 <= r["p"] <= 1
    entry = _estimate_entry(DCDH, res)
    assert entry["estimate"] == res.overall.estimate and entry["n_clusters"] == res.n_clusters


def test_headline_of_an_uncalibrated_primary_is_its_own_interval_and_says_so():
    from evaluation.estimators.registry import fit
    from evaluation.stages.estimate import headline_of

    panel = _analysis_panel()
    spec = _spec(primary=DCDH)
    res = fit(DCDH, panel, spec)
    h = headline_of(spec, panel, res)
    assert h["method"] == f"{DCDH}:own" and h["df"] is None
    assert (h["estimate"], h["se"], h["ci_low"], h["ci_high"], h["p"]) == (
        res.overall.estimate, res.overall.se, res.overall.ci_low, res.overall.ci_high, res.overall.p_value)
    assert "has no design for" in h["reason"] and "not been measured" in h["flag"]


def _study_with(tmp_path, use: str, primary: str):
    from evaluation.study import load_study

    text = (STUDIES / "federation_primary_ks2.toml").read_text()
    old_use = 'use = ["twfe", "event_study", "callaway_santanna", "sun_abraham", "imputation"]'
    assert old_use in text and 'primary = "callaway_santanna"' in text
    text = text.replace(old_use, f"use = {use}").replace('primary = "callaway_santanna"', f'primary = "{primary}"')
    path = tmp_path / "federation_primary_ks2.toml"
    path.write_text(text)
    return load_study(path)


def test_a_study_can_list_chaisemartin_as_a_secondary_estimator(tmp_path, small_store):
    """The book's estimates table gets a row: the average total effect with its interval, the event
    study its effects and placebos; the primary's numbers are those of the study without it."""
    from evaluation.data.panels import load_study_data
    from evaluation.pipeline import run_study
    from evaluation.report.chapter import _estimates_section

    study = _study_with(tmp_path, '["twfe", "event_study", "callaway_santanna", "chaisemartin-dhaultfoeuille"]',
                        "callaway_santanna")
    assert study.estimators.use[-1] == DCDH
    run = run_study(study, load_study_data(small_store, study))
    r = run.result
    e = r["estimates"][DCDH]
    assert e["ci_low"] < e["estimate"] < e["ci_high"] and e["n_units"] == run.panel["urn"].nunique()
    assert e["variance"]["cluster"] == "cluster_partnership" and DCDH not in r["estimators_not_computed"]
    lo, hi = r["outcome"]["window"]
    es = {row["e"] for row in r["event_study"][DCDH]}
    assert 0 in es and es <= set(range(lo, hi + 1)) - {-1} and min(es) < -1
    assert r["headline"]["estimator"] == "callaway_santanna"
    assert r["headline"]["estimate"] == r["estimates"]["callaway_santanna"]["estimate"]
    joint = r["diagnostics"]["pretrend"][DCDH]  # the joint placebo test, shown but not the verdict's
    assert "placebo" in joint["test"] and joint["distribution"] == "chi2" and joint["df"] == [-lo - 1]
    assert joint["for_verdict"] is False and joint["not_for_verdict"]
    assert "de Chaisemartin & D'Haultfoeuille (2024)" in _estimates_section(r)


def test_a_study_can_make_chaisemartin_its_primary_estimator(tmp_path, small_store):
    """The run completes: the headline is the estimator's own interval, flagged as not calibrated;
    HonestDiD falls back to the TWFE event study and says why; the verdict's pre-trend test is the
    TWFE event study's (the estimator's own joint placebo test is shown, not used)."""
    from evaluation.data.panels import load_study_data
    from evaluation.pipeline import run_study

    study = _study_with(tmp_path, f'["event_study", "{DCDH}"]', DCDH)
    r = run_study(study, load_study_data(small_store, study)).result
    h, e = r["headline"], r["estimates"][DCDH]
    assert r["primary_estimator"] == DCDH and h["method"] == f"{DCDH}:own"
    assert (h["estimate"], h["ci_low"], h["ci_high"]) == (e["estimate"], e["ci_low"], e["ci_high"])
    assert h["flag"] and "not been measured" in h["flag"]
    assert {row["clustering"] for row in r["clustering"]["rows"]} == {"partnership", "matched_set", "school"}
    assert all(row["estimate"] == e["estimate"] for row in r["clustering"]["rows"])
    hd = r["diagnostics"].get("honest_did")
    assert hd is None or (hd["estimator"] == "event_study" and "no event-study covariance" in hd["note"])
    pre = r["diagnostics"]["pretrend"]
    assert pre["event_study"]["for_verdict"] and not pre[DCDH]["for_verdict"]
    placebo = r["diagnostics"]["placebo_dates"]
    assert placebo["estimator"] == DCDH and placebo["placebos"]
    assert all(p["estimate"] is not None and "inference: the estimator's own interval" in " ".join(p["notes"])
               for p in placebo["placebos"])
    assert r["verdict"] and r["summary"]


def test_estimate_command_runs_chaisemartin_from_a_cohort_column(run_cli, tmp_path):
    """``impact estimate --estimator chaisemartin-dhaultfoeuille``: the absorbing treatment from the
    cohort column, missing rows completed, every identified effect and placebo, the same numbers as
    the registry's completed grid."""
    import json

    from evaluation.estimators.chaisemartin import chaisemartin_dhaultfoeuille
    from evaluation.estimators.registry import switching_panel

    panel = _analysis_panel(seed=5)
    path = tmp_path / "panel.csv"
    panel.to_csv(path, index=False)
    code, out, err = run_cli("estimate", path, "--unit", "urn", "--time", "year", "--outcome", "y", "--cohort",
                             "cohort", "--estimator", "chaisemartin-dhaultfoeuille", "--cluster",
                             "cluster_partnership", "--weights", "weight", "--json")
    assert code == 0, err
    doc = json.loads(out)
    grid = switching_panel(panel, _spec(), keep=("weight", "cluster_partnership"))
    ref = chaisemartin_dhaultfoeuille(grid, y="y", unit="urn", time="year", treatment="treatment", effects=9,
                                      placebo=8, weights="weight", cluster="cluster_partnership")
    assert doc["overall"]["estimate"] == ref.overall.estimate
    finite = ref.event_time[ref.event_time["estimate"].notna()]
    assert [r["e"] for r in doc["event_time"]] == list(finite["e"])
    code, _, err = run_cli("estimate", path, "--unit", "urn", "--time", "year", "--outcome", "y", "--cohort",
                           "cohort", "--estimator", "chaisemartin-dhaultfoeuille", "--covariates", "weight")
    assert code == 2 and "no covariates" in err


def test_only_estimators_without_a_design_get_the_uncalibrated_headline():
    from evaluation.inference.headline import UNCALIBRATED, choose_inference

    assert UNCALIBRATED == (DCDH,)
    choice = choose_inference(DCDH, 5, 40)
    assert not choice.calibrated and "only 5 treated partnerships" in choice.flag and "0.835" in choice.flag
    for name in ("event_study", "callaway_santana"):
        with pytest.raises(InputError, match="calibrated headline interval"):
            choose_inference(name, 20, 100)
