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
