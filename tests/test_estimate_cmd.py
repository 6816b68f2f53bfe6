"""``impact estimate``: in-process CLI runs; numbers equal to the library calls."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evaluation.estimators.callaway_santanna import aggte, att_gt

MPDTA = Path(__file__).parent / "data" / "mpdta.csv"
BASE = ["estimate", str(MPDTA), "--unit", "countyreal", "--time", "year", "--outcome", "lemp",
        "--cohort", "first.treat"]
KEYS = dict(y="lemp", unit="countyreal", time="year", cohort="first.treat")


@pytest.fixture(scope="module")
def mpdta():
    return pd.read_csv(MPDTA)


def _json(run_cli, *args):
    code, out, err = run_cli(*BASE, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_callaway_santanna_json_equals_library(run_cli, mpdta):
    doc = _json(run_cli, "--estimator", "callaway-santanna", "--control", "not-yet", "--aggregate", "group")
    fit = att_gt(mpdta, **KEYS, control="notyet")
    group, dynamic = aggte(fit, "group"), aggte(fit, "dynamic")
    assert doc["overall"]["estimate"] == group.overall.estimate and doc["overall"]["se"] == group.overall.se
    assert set(doc["overall"]) == {"estimate", "se", "ci_low", "ci_high", "p"}
    assert [(r["g"], r["t"]) for r in doc["group_time"]] == list(zip(fit.group_time["g"], fit.group_time["t"]))
    np.testing.assert_array_equal([r["estimate"] for r in doc["group_time"]], fit.group_time["estimate"])
    np.testing.assert_array_equal([r["se"] for r in doc["group_time"]], fit.group_time["se"])
    assert [r["e"] for r in doc["event_time"]] == [-3, -2, -1, 0, 1, 2, 3]
    np.testing.assert_array_equal([r["estimate"] for r in doc["event_time"]], dynamic.event_time["estimate"])
    assert [r["egt"] for r in doc["aggregation_rows"]] == [2004, 2006, 2007]
    assert doc["n_obs"] == 2500 and doc["n_units"] == 500 and doc["n_clusters"] == 500
    assert doc["variance"]["kind"] == "influence-function" and "R did" in doc["variance_convention"]
    assert doc["pretest"]["df"] == 5


def test_covariates_method_and_bootstrap(run_cli, mpdta):
    doc = _json(run_cli, "--estimator", "callaway-santanna", "--covariates", "lpop", "--method", "reg")
    fit = att_gt(mpdta, **KEYS, covariates=["lpop"], method="reg")
    assert doc["overall"]["estimate"] == aggte(fit, "simple").overall.estimate
    doc1 = _json(run_cli, "--estimator", "callaway-santanna", "--bootstrap", "200", "--seed", "4")
    doc2 = _json(run_cli, "--estimator", "callaway-santanna", "--bootstrap", "200", "--seed", "4")
    assert doc1 == doc2 and doc1["variance"]["kind"] == "multiplier-bootstrap"
    boot = att_gt(mpdta, **KEYS, bootstrap=200, seed=4)
    assert [r["se"] for r in doc1["group_time"]] == list(boot.group_time["se"])


def test_cluster_parquet_input(run_cli, mpdta, tmp_path):
    path = tmp_path / "panel.parquet"
    mpdta.assign(state=mpdta["countyreal"] // 1000).to_parquet(path)
    code, out, err = run_cli("estimate", path, "--unit", "countyreal", "--time", "year", "--outcome", "lemp",
                             "--cohort", "first.treat", "--estimator", "callaway-santanna",
                             "--cluster", "state", "--json")
    assert code == 0, err
    doc = json.loads(out)
    fit = att_gt(mpdta.assign(state=mpdta["countyreal"] // 1000), **KEYS, cluster="state")
    assert doc["n_clusters"] == fit.n_clusters == mpdta["countyreal"].floordiv(1000).nunique()
    assert doc["overall"]["se"] == aggte(fit, "simple").overall.se


@pytest.mark.parametrize("estimator,module,func", [
    ("twfe", "twfe", "twfe_did"), ("event-study", "twfe", "event_study"),
    ("sun-abraham", "sun_abraham", "sun_abraham"), ("imputation", "imputation", "imputation_did")])
def test_other_estimators_equal_library(run_cli, mpdta, estimator, module, func):
    lib = pytest.importorskip(f"evaluation.estimators.{module}")
    res = getattr(lib, func)(mpdta, **KEYS)
    doc = _json(run_cli, "--estimator", estimator)
    if res.overall is not None:
        assert doc["overall"]["estimate"] == res.overall.estimate and doc["overall"]["se"] == res.overall.se
    if res.event_time is not None:
        assert [r["e"] for r in doc["event_time"]] == list(res.event_time["e"])
        np.testing.assert_array_equal([r["se"] for r in doc["event_time"]], res.event_time["se"])
    assert doc["n_obs"] == res.n_obs and doc["n_clusters"] == res.n_clusters


def test_human_summary(run_cli):
    code, out, err = run_cli(*BASE, "--estimator", "callaway-santanna", "--aggregate", "calendar")
    assert code == 0, err
    assert "Group-time ATT(g,t)" in out and "By calendar period" in out and "Pre-test of parallel trends" in out
    assert "Overall: -0.0417004" in out  # R did calendar aggregate, mpdta


def _argv(outcome="lemp", estimator="callaway-santanna", extra=()):
    return ["estimate", str(MPDTA), "--unit", "countyreal", "--time", "year", "--outcome", outcome,
            "--cohort", "first.treat", "--estimator", estimator, *extra]


@pytest.mark.parametrize("argv,message", [
    (_argv(outcome="lemq"), "did you mean 'lemp'"),
    (_argv(extra=["--covariates", "lpopp"]), "did you mean 'lpop'"),
    (_argv(extra=["--cluster", "stat"]), "no such cluster column"),
    (_argv(estimator="twfe", extra=["--control", "not-yet"]),
     "--control only applies to --estimator callaway-santanna"),
    (_argv(extra=["--bootstrap", "-5"]), "non-negative number of bootstrap draws"),
])
def test_bad_arguments_exit_2(run_cli, argv, message):
    code, out, err = run_cli(*argv)
    assert code == 2 and message in err and "Traceback" not in err and out == ""


def test_missing_file_and_non_numeric_value(run_cli, mpdta, tmp_path):
    code, _, err = run_cli("estimate", tmp_path / "nope.csv", "--unit", "u", "--time", "t", "--outcome", "y",
                           "--cohort", "g", "--estimator", "twfe")
    assert code == 2 and "no such file" in err
    bad = mpdta.astype({"lemp": object})
    bad.loc[6, "lemp"] = "n/a?"
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    code, _, err = run_cli("estimate", path, "--unit", "countyreal", "--time", "year", "--outcome", "lemp",
                           "--cohort", "first.treat", "--estimator", "callaway-santanna")
    assert code == 2 and "row 8" in err and "'lemp'" in err and "n/a?" in err  # header is line 1


def test_library_input_errors_exit_2(run_cli, mpdta, tmp_path):
    path = tmp_path / "treated_only.csv"
    mpdta[mpdta["first.treat"] > 0].to_csv(path, index=False)
    code, _, err = run_cli("estimate", path, "--unit", "countyreal", "--time", "year", "--outcome", "lemp",
                           "--cohort", "first.treat", "--estimator", "callaway-santanna")
    assert code == 2 and "no never-treated units" in err


def test_unavailable_estimator_is_a_clear_error(run_cli, monkeypatch):
    from evaluation.cli import estimate_cmd

    monkeypatch.setitem(estimate_cmd.ESTIMATORS, "imputation",
                        ("evaluation.estimators.not_written_yet", "imputation_did"))
    code, out, err = run_cli(*BASE, "--estimator", "imputation")
    assert code == 2 and "--estimator imputation is not available yet" in err and out == ""
