"""Estimator names are spelled once (evaluation/estimators/names.py) and every layer agrees."""

from evaluation.cli.estimate_cmd import ESTIMATORS as CLI_ESTIMATORS
from evaluation.estimators.names import ESTIMATOR_NAMES, canonical, cli_spelling
from evaluation.estimators.registry import ESTIMATORS
from evaluation.report.markdown import ESTIMATOR_ORDER, estimator_name
from evaluation.study import ESTIMATORS as STUDY_ESTIMATORS


def test_every_layer_lists_the_same_estimators():
    assert tuple(ESTIMATORS) == ESTIMATOR_NAMES == STUDY_ESTIMATORS
    assert [canonical(c) for c in CLI_ESTIMATORS] == list(ESTIMATOR_NAMES)
    assert ESTIMATOR_ORDER[: len(ESTIMATOR_NAMES)] == list(ESTIMATOR_NAMES)
    for name in ESTIMATOR_NAMES:
        assert canonical(cli_spelling(name)) == name
        assert estimator_name(name) != name.replace("_", " ")  # every estimator has a title
