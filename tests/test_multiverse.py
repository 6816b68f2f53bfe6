"""The multiverse: an example study rerun over a grid of defensible choices (>= 48 specifications),
its headline cell equal to the full run's headline, serial and two-worker Dask runs giving the same
bytes, the ``impact multiverse`` command, disclosure control and the chapter's specification curve.

Timings on the 3,000-school panel (2-core machine): the multiverse of the fastest example study
(144 specifications, 48 matchings) about 15-20 s serially, a two-worker Dask LocalCluster about
the same plus its start-up; the one book build about 30 s."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
STUDIES = ROOT / "studies"
SID = "mat_converter_secondary_ks4"  # the fastest example study on the small panel
EXAMPLES = sorted(p.stem for p in STUDIES.glob("*.toml"))


def _study(sid: str = SID):
    from evaluation.study import load_study

    return load_study(STUDIES / f"{sid}.toml")


# ----------------------------------------------------------------------------- the grid (pure, fast)


@pytest.mark.parametrize("sid", EXAMPLES)
def test_default_grid_has_at_least_48_specifications_and_the_headline(sid):
    from evaluation.multiverse import DIMENSIONS, default_grid, variant_study

    study = _study(sid)
    grid = default_grid(study)
    specs = grid.specifications()
    assert len(specs) >= 48
    assert len({tuple(s.choices[d] for d in DIMENSIONS) for s in specs}) == len(specs)  # no repeats
    heads = [s for s in specs if s.headline]
    assert len(heads) == 1 and heads[0].index == 0
    assert variant_study(study, grid, heads[0]) == study  # the study's own definition, exactly
    assert heads[0].choices["estimator"] == study.estimators.primary
    for s in specs:  # every cell is a valid study definition
        v = variant_study(study, grid, s)
        if v.matching.method == "mahalanobis":
            assert v.matching.caliper is None and s.choices["caliper"] is None
    if study.cohort.exposure == "in_partnership":  # only de Chaisemartin & D'Haultfoeuille allow a treatment that ends
        assert [lv.key for lv in grid.levels["estimator"]] == ["chaisemartin_dhaultfoeuille"]
    else:
        assert {"callaway_santanna", "imputation", "sun_abraham"} == {lv.key for lv in grid.levels["estimator"]}


@pytest.mark.parametrize("changes", [
    {"matching": {"method": "family"}}, {"matching": {"method": "none"}},
    {"matching": {"method": "mahalanobis", "caliper": 0.2}}, {"matching": {"ratio": 1, "caliper": None}},
    {"outcome": {"window": [-2, 0]}, "estimators": {"use": ["twfe"], "primary": "twfe"}},
    {"comparison": {"pool": "not_yet", "exclude_types": []}},
])
def test_grid_keeps_any_study_as_its_own_headline(changes):
    from evaluation.multiverse import DIMENSIONS, default_grid, variant_study
    from evaluation.study import Study

    base = _study().model_dump(mode="python")
    study = Study.model_validate({**base, **{k: {**base[k], **v} for k, v in changes.items()}})
    grid = default_grid(study)
    specs = grid.specifications()
    assert len({tuple(s.choices[d] for d in DIMENSIONS) for s in specs}) == len(specs)
    head = [s for s in specs if s.headline]
    assert len(head) == 1
    v = variant_study(study, grid, head[0])
    assert v.matching == study.matching or (study.matching.method == "mahalanobis" and
                                            v.matching == study.matching.model_copy(update={"caliper": None}))
    assert (v.comparison, v.outcome, v.cohort) == (study.comparison, study.outcome, study.cohort)
    assert head[0].choices["estimator"] == study.estimators.primary
    for s in specs:
        variant_study(study, grid, s)  # valid


def test_grid_drops_a_pool_that_repeats_the_studys_own(small_store):
    from evaluation.data.panels import load_study_data
    from evaluation.multiverse import default_grid

    study = _study()
    grid = default_grid(study, load_study_data(small_store, study))
    # the study keeps every multi-academy trust school out of its pool, so "not yet joined" adds nobody
    assert [lv.key for lv in grid.levels["pool"]] == ["study", "no_partnership"]
    assert any("not yet joined" in n for n in grid.notes)
    assert len(grid.specifications()) >= 48


def test_a_specification_that_cannot_be_estimated_is_reported_not_dropped(small_store):
    from evaluation.data.panels import load_study_data
    from evaluation.multiverse import Grid, Level, default_grid, run_multiverse

    study = _study()
    full = default_grid(study)
    levels = {d: lvs[:1] for d, lvs in full.levels.items()}
    levels["caliper"] = (full.levels["caliper"][0], Level("caliper", "1e-09", "1e-9 SD", "a caliper nobody meets", 1e-9))
    own = full.matching_configurations[0]
    grid = Grid(levels, (own, (own[0], own[1], "1e-09")))
    mv = run_multiverse(study, load_study_data(small_store, study), grid=grid)
    assert len(mv.specifications) == 2
    ok, failed = mv.specifications
    assert ok.headline and ok.estimated and ok.agrees is True
    assert not failed.estimated and failed.failure.startswith("matching: ") and failed.agrees is None
    s = mv.summary
    assert (s["specifications"], s["estimated"], s["not_estimated"]) == (2, 1, 1)


# ----------------------------------------------------------------------------- one example study


@pytest.fixture(scope="module")
def results_dir(small_store, tmp_path_factory):
    """results/<SID>/ from a full run and results/<SID>.multiverse/ from `impact multiverse` (serial)."""
    import contextlib
    import io

    from evaluation.cli import main
    from evaluation.data.panels import load_study_data
    from evaluation.pipeline import run_study
    from evaluation.publish.writers import write_results

    root = tmp_path_factory.mktemp("mv_results")
    study = _study()
    write_results(run_study(study, load_study_data(small_store, study)), root)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["multiverse", str(STUDIES / f"{SID}.toml"), "--store", str(small_store.path),
                     "--results", str(root), "--json"])
    assert code == 0, err.getvalue()
    assert json.loads(out.getvalue()) == json.loads((root / f"{SID}.multiverse" / "multiverse.json").read_text())
    return root


def _mv(root: Path) -> dict:
    return json.loads((root / f"{SID}.multiverse" / "multiverse.json").read_text())


def test_headline_cell_equals_the_full_runs_headline(results_dir):
    mv = _mv(results_dir)
    result = json.loads((results_dir / SID / "result.json").read_text())
    head = mv["headline"]
    assert head["headline"] and head["index"] == 0
    for key in ("estimate", "se", "ci_low", "ci_high", "p"):
        assert head[key] == pytest.approx(result["headline"][key], abs=1e-10, rel=0), key
    assert head["inference"] == result["headline"]["method"]
    # the study loses fewer than 10 schools at some step, so its sample flow is withheld, and the
    # specifications' numbers of schools (whose differences would give those losses) are published
    # only as "at least 10"
    assert result["counts"]["treated_found"] is None
    assert (head["treated_schools"], head["comparison_schools"], head["schools_at_least"]) == (None, None, 10)
    assert all(x["treated_schools"] is None and x["comparison_schools"] is None for x in mv["specifications"])
    assert all(x["schools_at_least"] == 10 for x in mv["specifications"] if x["estimate"] is not None)
    assert "treated_lost" not in head
    assert mv["provenance"]["spec_hash"] == result["provenance"]["spec_hash"]
    assert mv["provenance"]["data_fingerprint"] == result["provenance"]["data_fingerprint"]


def test_summary_follows_the_agreement_rule(results_dir):
    mv = _mv(results_dir)
    specs, s, head = mv["specifications"], mv["summary"], mv["headline"]
    assert s["specifications"] == len(specs) >= 48
    est = [x for x in specs if x["estimate"] is not None]
    assert s["estimated"] + s["not_estimated"] + s["withheld"] == len(specs)
    for x in est:
        excl = x["ci_low"] > 0 or x["ci_high"] < 0
        assert x["excludes_zero"] == excl
        same = (x["estimate"] > 0) == (head["estimate"] > 0)
        assert x["agrees"] == ((excl and same) if head["excludes_zero"] else not excl)
    assert s["agree"] == sum(x["agrees"] for x in est)
    assert s["share_agree"] == pytest.approx(s["agree"] / len(est))
    assert s["median_estimate"] == pytest.approx(sorted(x["estimate"] for x in est)[len(est) // 2]
                                                 if len(est) % 2 else
                                                 sum(sorted(x["estimate"] for x in est)[len(est) // 2 - 1:
                                                                                       len(est) // 2 + 1]) / 2)
    for x in specs:
        assert (x["estimate"] is None) == bool(x["failure"] or x.get("withheld"))
    assert mv["disclosure"]["threshold"] == 10


def test_serial_and_two_dask_workers_write_identical_bytes(results_dir, small_store, tmp_path):
    from distributed import Client, LocalCluster

    from evaluation.data.panels import load_study_data
    from evaluation.multiverse import run_multiverse
    from evaluation.publish.writers import write_multiverse

    study = _study()
    data = load_study_data(small_store, study)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        mv = run_multiverse(study, data, executor=client.get_executor())
    path, _ = write_multiverse(mv, tmp_path)
    serial = results_dir / f"{SID}.multiverse"
    assert (path / "multiverse.json").read_bytes() == (serial / "multiverse.json").read_bytes()
    assert (path / "specification_curve.png").read_bytes() == (serial / "specification_curve.png").read_bytes()


def test_a_later_run_of_the_study_keeps_the_multiverse(results_dir, small_store, tmp_path):
    import shutil

    from evaluation.data.panels import load_study_data
    from evaluation.pipeline import run_study
    from evaluation.publish.writers import write_results

    root = tmp_path / "results"
    shutil.copytree(results_dir, root)
    study = _study()
    write_results(run_study(study, load_study_data(small_store, study)), root)  # replaces results/<id>/
    assert (root / f"{SID}.multiverse" / "multiverse.json").read_bytes() == \
        (results_dir / f"{SID}.multiverse" / "multiverse.json").read_bytes()


# ----------------------------------------------------------------------------- the command


def test_cli_bad_input_is_exit_2(run_cli, tmp_path, small_store):
    code, _, err = run_cli("multiverse", tmp_path / "nope.toml", "--store", small_store.path, "--results", tmp_path)
    assert code == 2 and "nope.toml" in err
    code, _, err = run_cli("multiverse", STUDIES / f"{SID}.toml", "--store", tmp_path / "missing.duckdb",
                           "--results", tmp_path)
    assert code == 2 and "no store" in err
    bad = tmp_path / "bad_window.toml"
    bad.write_text((STUDIES / f"{SID}.toml").read_text().replace('id = "mat_converter_secondary_ks4"',
                                                                 'id = "bad_window"')
                   .replace("window = [-4, 5]", "window = [-4, 30]"))
    code, _, err = run_cli("multiverse", bad, "--store", small_store.path, "--results", tmp_path)
    assert code == 2 and "window" in err
    assert not (tmp_path / "bad_window.multiverse").exists()
    with pytest.raises(SystemExit) as exc:
        run_cli("multiverse", STUDIES / f"{SID}.toml", "--workers", "0")
    assert exc.value.code == 2


# ----------------------------------------------------------------------------- disclosure control (pure)


def test_disclosure_control_withholds_small_specifications():
    from dataclasses import replace

    from evaluation.errors import InputError
    from evaluation.multiverse import MultiverseResult, SpecResult, default_grid
    from evaluation.publish.disclosure import control_multiverse

    study = _study()
    grid = default_grid(study)
    specs = grid.specifications()[:4]
    flow = {"too_few_pre_years": 0, "missing_covariates": 12, "no_match_within_caliper": 0, "no_outcome_in_window": 0}
    base = dict(estimate=1.0, se=0.5, ci_low=0.02, ci_high=1.98, p=0.04, inference="x", treated_schools=40,
                comparison_schools=100, treated_clusters=30, agrees=True, treated_lost=flow)
    rows = [SpecResult(specs[0].index, specs[0].choices, True, **base),
            SpecResult(specs[1].index, specs[1].choices, False, **{**base, "treated_schools": 7}),
            SpecResult(specs[2].index, specs[2].choices, False,
                       failure="imputation: cohort 2016 in period 2016 has 6 observation(s) in 1 cluster, "
                               "window [-3, 4], G1 - 1 = 9 df"),
            SpecResult(specs[3].index, specs[3].choices, False, treated_schools=8, comparison_schools=30,
                       failure="imputation: cohort 2014 has 3 partnership schools in 1 cluster")]
    mv = MultiverseResult(study.id, study.title, study.outcome.name, 0.05, "h", "f", grid, rows,
                          study.model_dump(mode="json"))
    record, published = control_multiverse(mv)
    head, small, failed, small_failed = published.specifications
    assert head.estimate == 1.0
    # every lost reason is 0 or at least 10: the study's flow is published, and so are the counts
    assert (head.treated_schools, head.comparison_schools, head.schools_at_least) == (40, 100, None)
    assert small.estimate is None and small.treated_schools is None and "disclosure" in small.withheld
    # a failure text keeps every number but the counts of schools below the threshold
    assert failed.failure == "imputation: cohort 2016 in period 2016 has fewer than 10 observation(s) in 1 " \
                             "cluster, window [-3, 4], G1 - 1 = 9 df"
    # a withheld specification loses its failure text too (it is about too few schools)
    assert small_failed.failure is None and small_failed.withheld and small_failed.treated_schools is None
    assert [x["key"] for x in record["suppressed"]] == [specs[1].index, specs[3].index]
    assert record["not_suppressed"] and all(x.treated_lost is None for x in published.specifications)
    s = published.summary
    assert (s["estimated"], s["withheld"], s["not_estimated"]) == (1, 2, 1)
    assert "treated_lost" not in published.to_dict()["specifications"][0]
    # a lost reason of 1..9 in the headline's flow (the study's flow is withheld): the counts of every
    # specification are published only as "at least 10"
    small_flow = {**flow, "no_match_within_caliper": 7}
    mv_small_flow = replace(mv, specifications=[replace(rows[0], treated_lost=small_flow), *rows[1:]])
    record, published = control_multiverse(mv_small_flow)
    head, small, failed, _ = published.specifications
    assert (head.treated_schools, head.comparison_schools, head.schools_at_least) == (None, None, 10)
    assert head.estimate == 1.0 and head.treated_clusters == 30
    assert small.schools_at_least is None and small.withheld  # below the threshold: withheld, as before
    assert any(x["key"] is None and "sample flow" in x["reason"] for x in record["suppressed"])
    assert not record["not_suppressed"]
    mv_small_head = replace(mv, specifications=[replace(rows[0], comparison_schools=4), *rows[1:]])
    with pytest.raises(InputError, match="headline"):
        control_multiverse(mv_small_head)


def test_an_invalid_combination_is_reported_without_pydantic_addresses():
    from evaluation.multiverse import Grid, Level, _tasks, default_grid

    study = _study()
    full = default_grid(study)
    levels = {d: lvs[:1] for d, lvs in full.levels.items()}
    levels["window"] = (*full.levels["window"][:1], Level("window", "[0, 1]", "[0, 1]", "no pre-years", (0, 1)))
    grid = Grid(levels, full.matching_configurations[:1])
    tasks = _tasks(study, grid, grid.specifications())
    bad = [t for t in tasks if t.study is None]
    assert len(bad) == 1 and bad[0].failure.startswith("not a valid study definition: outcome.window: ")
    assert "pydantic" not in bad[0].failure and "http" not in bad[0].failure


# ----------------------------------------------------------------------------- the chapter


def test_chapter_shows_the_specification_curve(results_dir, tmp_path):
    from evaluation.report.chapter import write_chapter

    result = json.loads((results_dir / SID / "result.json").read_text())
    mv = _mv(results_dir)
    s = mv["summary"]
    text = write_chapter(result, results_dir / SID, tmp_path).path.read_text()
    assert "## Does the answer depend on our choices? (specification curve)" in text
    assert f"In {s['same_sign']} of {s['estimated']} specifications" in text
    assert f"{SID}/{SID}-specification_curve.png" in text
    assert (tmp_path / "studies" / SID / f"{SID}-specification_curve.png").stat().st_size > 1000
    # a multiverse of another definition is not shown as if it were this one's
    stale = dict(result, provenance={**result["provenance"], "spec_hash": "0" * 64})
    text = write_chapter(stale, results_dir / SID, tmp_path / "stale").path.read_text()
    assert "out of date" in text and "specification_curve.png" not in text
    # no multiverse: no section
    bare = tmp_path / "bare"
    import shutil

    shutil.copytree(results_dir / SID, bare / SID)
    text = write_chapter(result, bare / SID, tmp_path / "bare_book").path.read_text()
    assert "specification curve" not in text


def test_book_builds_with_the_specification_curve(results_dir, tmp_path, run_cli):
    code, out, err = run_cli("book", "build", "--results", results_dir, "--out", tmp_path / "book")
    assert code == 0, err
    html = tmp_path / "book" / "_build" / "html"
    page = (html / "studies" / f"{SID}.html").read_text(encoding="utf-8")
    assert "Does the answer depend on our choices?" in page
    assert re.search(rf'<img[^>]+src="[^"]*{SID}-specification_curve\.png"', page)
    assert (html / "_images" / f"{SID}-specification_curve.png").stat().st_size > 1000
    s = _mv(results_dir)["summary"]
    assert f"In {s['same_sign']} of {s['estimated']} specifications" in page
