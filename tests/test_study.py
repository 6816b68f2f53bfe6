"""Study definitions: every bad-spec case gives a clear message (file, line, key, value)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluation.study import load_study
from evaluation.errors import InputError

STUDIES = Path(__file__).parent.parent / "studies"
GOOD = (STUDIES / "federation_primary_ks2.toml").read_text()


def write(tmp_path, text, name="federation_primary_ks2.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path) -> InputError:
    with pytest.raises(InputError) as info:
        load_study(path)
    return info.value


def test_example_studies_parse():
    for path in STUDIES.glob("*.toml"):
        study = load_study(path)
        assert study.id == path.stem and len(study.spec_hash) == 64


def test_spec_hash_ignores_comments_and_formatting(tmp_path):
    a = load_study(write(tmp_path, GOOD))
    b = load_study(write(tmp_path / ".." / tmp_path.name, "# a comment\n" + GOOD.replace(" = ", "=")))
    assert a.spec_hash == b.spec_hash


def test_misspelt_key_suggests_the_right_one_with_line(tmp_path):
    path = write(tmp_path, GOOD.replace("joined_between", "joined_betwen"))
    err = error_of(path)
    p = next(p for p in err.problems if p.column == "cohort.joined_betwen")
    assert "unknown key 'cohort.joined_betwen': did you mean 'cohort.joined_between'?" in p.expected
    assert p.row == GOOD.splitlines().index(next(l for l in GOOD.splitlines() if l.startswith("joined_between"))) + 1
    assert any("missing required key 'cohort.joined_between'" in q.expected for q in err.problems)


def test_misspelt_section(tmp_path):
    err = error_of(write(tmp_path, GOOD.replace("[matching]", "[matchng]")))
    assert any("unknown key 'matchng': did you mean 'matching'?" in p.expected for p in err.problems)


def test_unknown_partnership_type_and_outcome(tmp_path):
    text = GOOD.replace('["federation_hard"]', '["federation_hrad"]').replace(
        'name = "ks2_rwm_expected_pct"', 'name = "ks2_rwm_expected"')
    err = error_of(write(tmp_path, text))
    text_all = err.render()
    assert "unknown partnership type 'federation_hrad'" in text_all and "did you mean 'federation_hard'?" in text_all
    assert "unknown outcome 'ks2_rwm_expected'" in text_all and "did you mean 'ks2_rwm_expected_pct'?" in text_all
    assert "federation_primary_ks2.toml, row" in text_all


def test_outcome_must_fit_the_phase(tmp_path):
    err = error_of(write(tmp_path, GOOD.replace('name = "ks2_rwm_expected_pct"', 'name = "ks4_attainment8"')))
    assert "'ks4_attainment8' is a KS4 measure but the cohort phase is 'primary'" in err.render()


@pytest.mark.parametrize("window,words", [("[-1, 4]", "must start at -2 or earlier"),
                                          ("[-4, -1]", "end at 0 or later")])
def test_impossible_windows(tmp_path, window, words):
    err = error_of(write(tmp_path, GOOD.replace("window = [-4, 4]", f"window = {window}")))
    assert words in err.render()


def test_reversed_joining_years(tmp_path):
    err = error_of(write(tmp_path, GOOD.replace("joined_between = [2014, 2017]", "joined_between = [2017, 2014]")))
    assert "first <= last" in err.render()


def test_unknown_covariate_estimator_and_primary(tmp_path):
    text = GOOD.replace('"pre_trend"', '"pre_trnd"').replace('"imputation"]', '"imputaton"]')
    err = error_of(write(tmp_path, text))
    assert "did you mean 'pre_trend'?" in err.render() and "did you mean 'imputation'?" in err.render()
    text = GOOD.replace('primary = "callaway_santanna"', 'primary = "bacon"')
    assert "unknown estimator 'bacon': expected one of" in error_of(write(tmp_path, text)).render()


def test_missing_required_key_and_bad_toml(tmp_path):
    err = error_of(write(tmp_path, GOOD.replace('title = "Primary schools forming hard federations, 2014-2017"\n', "")))
    assert "missing required key 'title'" in err.render()
    err = error_of(write(tmp_path, GOOD + "\n[broken\n"))
    assert "not valid TOML" in err.render() and err.problems[0].row is not None


def test_id_must_match_file_name(tmp_path):
    err = error_of(write(tmp_path, GOOD, name="other.toml"))
    assert "must match the file name 'other'" in err.render()


def test_missing_file(tmp_path):
    assert "study definition not found" in error_of(tmp_path / "nope.toml").render()


def test_cli_validate_exit_codes(tmp_path, run_cli, small_store):
    code, out, _ = run_cli("validate", STUDIES / "federation_primary_ks2.toml", "--store", small_store.path)
    assert code == 0 and "valid study definition" in out and "comparison pool" in out
    bad = write(tmp_path, GOOD.replace("phase =", "phas ="))
    code, out, err = run_cli("validate", bad, "--store", small_store.path)
    assert code == 2 and "did you mean 'cohort.phase'?" in err and "Traceback" not in err


def test_empty_cohort_is_a_clear_error(tmp_path, run_cli, small_store):
    path = write(tmp_path, GOOD.replace('role = "member"', "").replace("[cohort]", '[cohort]\nrole = "lead"')
                 .replace('["federation_hard"]', '["umbrella_trust"]').replace("[2014, 2017]", "[2022, 2022]")
                 .replace("window = [-4, 4]", "window = [-4, 0]"))
    code, _, err = run_cli("validate", path, "--store", small_store.path)
    assert code == 2 and "the cohort is empty" in err and "umbrella_trust" in err


def test_window_outside_the_data(tmp_path, run_cli, small_store):
    path = write(tmp_path, GOOD.replace("window = [-4, 4]", "window = [-6, 4]"))
    code, _, err = run_cli("validate", path, "--store", small_store.path)
    assert code == 2 and "needs data for 2008-2021, but the store has 2010-2024" in err


def test_primary_estimator_must_give_an_overall_effect(tmp_path):
    text = GOOD.replace('primary = "callaway_santanna"', 'primary = "event_study"')
    assert "gives effects by year, not one overall effect" in error_of(write(tmp_path, text)).render()


def test_pupil_sd_needs_its_source_and_is_used(tmp_path):
    text = GOOD.replace('window = [-4, 4]', 'window = [-4, 4]\npupil_sd = 25.0')
    err = error_of(write(tmp_path, text))
    assert "pupil_sd and pupil_sd_source go together" in err.render()
    text = GOOD.replace('window = [-4, 4]', 'window = [-4, 4]\npupil_sd = -1\npupil_sd_source = "x"')
    assert "outcome.pupil_sd" in error_of(write(tmp_path, text)).render()
    ok = load_study(write(tmp_path, GOOD.replace(
        'window = [-4, 4]', 'window = [-4, 4]\npupil_sd = 25.0\npupil_sd_source = "DfE KS2 national tables"')))
    assert ok.outcome.pupil_sd == 25.0

    import pandas as pd

    from evaluation.stages.cohort import Cohort, StudyData
    from evaluation.stages.effects import effect_size

    schools = pd.DataFrame({"urn": [1, 2, 3], "phase": ["primary"] * 3})
    sy = pd.DataFrame({"urn": [1, 2, 3], "year": [2013] * 3, "ks2_rwm_expected_pct": [40.0, 50.0, 60.0]})
    data = StudyData(schools, pd.DataFrame(), pd.DataFrame(), sy, truth=None)
    cohort = Cohort(pd.DataFrame({"g": [2014]}), pd.DataFrame())
    es = effect_size(ok, data, cohort, 5.0, 1.0)
    assert es["pupil_sd"] == 25.0 and "stated in the study definition: DfE KS2 national tables" in es["pupil_sd_source"]
    assert es["sd"] == pytest.approx(10.0)  # between-school SD kept for reference
    none = effect_size(load_study(write(tmp_path, GOOD)), data, cohort, 5.0, 1.0)
    assert none["pupil_sd"] is None and none["pupil_sd_source"] is None
