"""`impact match` run in-process through evaluation.cli.main."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from evaluation.cli import main

LALONDE = str(Path(__file__).parent / "data" / "lalonde.csv")
COVS = "age,educ,race,married,nodegree,re74,re75"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_text_output_is_matchit_summary(capsys):
    code, out, err = run(capsys, "match", LALONDE, "--treatment", "treat", "--covariates", COVS, "--id", "id")
    assert code == 0, err
    assert "Summary of Balance for Matched Data:" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("distance") and "0.9740" in ln)
    assert "0.3629" in line and "0.9739" in line  # MatchIt vignette: matched distance row
    assert "Unmatched" in out and "244" in out


def test_json_output_and_out_file(capsys, tmp_path):
    out_file = tmp_path / "matched.csv"
    code, out, err = run(capsys, "match", LALONDE, "--treatment", "treat", "--covariates", COVS,
                         "--id", "id", "--ratio", "2", "--caliper", "0.5", "--json", "--out", str(out_file))
    assert code == 0, err
    d = json.loads(out)
    assert d["ratio"] == 2 and d["caliper"] == {"distance": 0.5}
    assert d["counts"]["All"] == {"Control": 429, "Treated": 185}
    assert set(d["balance"]) == {"all", "matched"}
    assert d["pairs"][0]["treated"].startswith("NSW")
    assert all(c.startswith("PSID") for p in d["pairs"] for c in p["controls"])
    m = pd.read_csv(out_file)
    assert {"distance", "weights", "subclass"} <= set(m.columns)
    n_matched = d["counts"]["Matched"]["Control"] + d["counts"]["Matched"]["Treated"]
    assert len(m) == n_matched


def test_parquet_mahalanobis_exact_replace(capsys, tmp_path):
    pq = tmp_path / "lalonde.parquet"
    pd.read_csv(LALONDE).to_parquet(pq)
    code, out, err = run(capsys, "match", str(pq), "--treatment", "treat", "--covariates", "age,educ,re74,re75",
                         "--exact", "married,race", "--distance", "mahalanobis", "--replace", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["distance"] == "mahalanobis" and d["exact"] == ["married", "race"] and d["replace"]
    assert "distance" not in d["balance"]["matched"]


def test_missing_file(capsys, tmp_path):
    code, out, err = run(capsys, "match", str(tmp_path / "nope.csv"), "--treatment", "t", "--covariates", "a")
    assert code == 2 and "file not found" in err and "nope.csv" in err and "Traceback" not in err


def test_unsupported_extension(capsys, tmp_path):
    f = tmp_path / "data.xlsx"
    f.write_text("x")
    code, _, err = run(capsys, "match", str(f), "--treatment", "t", "--covariates", "a")
    assert code == 2 and "expected .csv or .parquet" in err


def test_misspelt_columns_suggest(capsys):
    code, _, err = run(capsys, "match", LALONDE, "--treatment", "treet", "--covariates", "age,educ,rac")
    assert code == 2
    assert "did you mean 'treat'" in err and "did you mean 'race'" in err and "lalonde.csv" in err


def test_non_binary_treatment_names_csv_line(capsys, tmp_path):
    df = pd.read_csv(LALONDE)
    df.loc[0, "treat"] = 3
    f = tmp_path / "bad.csv"
    df.to_csv(f, index=False)
    code, _, err = run(capsys, "match", str(f), "--treatment", "treat", "--covariates", "age")
    assert code == 2
    assert "row 2, column 'treat', value '3'" in err and "binary" in err


def test_missing_covariate_names_rows_parquet_record_numbers(capsys, tmp_path):
    df = pd.read_csv(LALONDE)
    df.loc[[0, 4], "educ"] = None
    f = tmp_path / "bad.parquet"
    df.to_parquet(f)
    code, _, err = run(capsys, "match", str(f), "--treatment", "treat", "--covariates", "age,educ")
    assert code == 2
    assert "row 1, column 'educ'" in err and "row 5, column 'educ'" in err and "missing value" in err


def test_no_controls(capsys, tmp_path):
    df = pd.read_csv(LALONDE)
    f = tmp_path / "treated.csv"
    df[df.treat == 1].to_csv(f, index=False)
    code, _, err = run(capsys, "match", str(f), "--treatment", "treat", "--covariates", "age")
    assert code == 2 and "no control units" in err


@pytest.mark.parametrize("extra, fragment", [
    (["--ratio", "0"], "--ratio"),
    (["--caliper", "-1"], "caliper"),
    (["--distance", "mahalanobis", "--caliper", "0.2"], "propensity score"),
    (["--out", "/nonexistent-dir/x.csv"], "folder for --out"),
    (["--out", "x.txt"], "--out must end"),
])
def test_bad_options_exit_2(capsys, extra, fragment):
    code, _, err = run(capsys, "match", LALONDE, "--treatment", "treat", "--covariates", "age", *extra)
    assert code == 2 and fragment in err


def test_unreadable_csv(capsys, tmp_path):
    f = tmp_path / "empty.csv"
    f.write_text("")
    code, _, err = run(capsys, "match", str(f), "--treatment", "t", "--covariates", "a")
    assert code == 2 and "cannot read" in err
