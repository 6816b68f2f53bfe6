"""A trust's data manager with a messy file (issue 12): encodings, separators, ``--json``
errors, and empty / header-only / one-row inputs to every command that reads data.

Whatever the file, the answer is exit 0 or a clear exit 2 naming the file: never a
traceback, never exit 1, never a Python repr (``np.int64(1)``) in a message."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from evaluation.data.csv_input import read_csv, sniff
from evaluation.data.schema import load_schema
from evaluation.data.validate import read_raw, validate_file

ROOT = Path(__file__).resolve().parent
TINY = ROOT / "data" / "tiny"
FORBIDDEN = ("np.", "Traceback", "<class", "dtype(")

SCHOOLS_TEXT = (TINY / "schools.csv").read_text(encoding="utf-8")


def _write(path: Path, text: str, encoding: str = "utf-8", bom: bytes = b"") -> Path:
    path.write_bytes(bom + text.encode(encoding))
    return path


def _resep(text: str, sep: str) -> str:
    frame = pd.read_csv(pd.io.common.StringIO(text), dtype=str, keep_default_na=False)
    return frame.to_csv(index=False, sep=sep, lineterminator="\n")


# ----------------------------------------------------------------------------- detection


@pytest.mark.parametrize("encoding, bom, name", [
    ("utf-8", b"", "UTF-8"),
    ("utf-8-sig", b"", "UTF-8 (with BOM)"),
    ("cp1252", b"", "Windows-1252"),
    ("utf-16", b"", "UTF-16 (little-endian, with BOM)"),  # Python writes the LE BOM
    ("utf-16-be", b"\xfe\xff", "UTF-16 (big-endian, with BOM)"),
])
@pytest.mark.parametrize("sep", [",", ";", "\t"])
def test_every_encoding_and_separator_reads_the_same_cells(tmp_path, encoding, bom, name, sep):
    text = _resep(SCHOOLS_TEXT, sep).replace("Abbey", "Abbé")  # a non-ASCII character
    path = _write(tmp_path / "schools.csv", text, encoding, bom)
    dialect = sniff(path)
    assert dialect.encoding_name == name and dialect.delimiter == sep
    cells, _ = read_csv(path, as_text=True)
    expected = pd.read_csv(TINY / "schools.csv", dtype=str, keep_default_na=False)
    expected["name"] = expected["name"].str.replace("Abbey", "Abbé")
    pd.testing.assert_frame_equal(cells, expected)


def test_utf16_without_bom_is_recognised(tmp_path):
    path = _write(tmp_path / "s.csv", SCHOOLS_TEXT, "utf-16-le")
    assert sniff(path).encoding_name == "UTF-16 (little-endian, no BOM)"
    assert validate_file("schools", path).rows == len(pd.read_csv(TINY / "schools.csv"))


def test_utf8_sample_then_cp1252_later_in_the_file(tmp_path):
    filler = "".join(f"{100100 + i},School {i},201,City of London,London,primary,community,urban,,,,\n"
                     for i in range(3000))
    text = SCHOOLS_TEXT + filler + "199999,Caf\xe9 School,201,City of London,London,primary,community,urban,,,,\n"
    path = _write(tmp_path / "late.csv", text, "cp1252")
    assert path.stat().st_size > 1 << 16  # the é lies beyond the sniffed sample
    raw = read_raw(path)
    assert raw.dialect.encoding_name == "Windows-1252"
    assert raw.cells["name"].iloc[-1] == "Café School"


def test_a_quoted_separator_in_the_header_does_not_fool_the_count(tmp_path):
    path = _write(tmp_path / "q.csv", '"urn;x","a;b",c\n1,2,3\n')
    assert sniff(path).delimiter == ","


# ----------------------------------------------------------------------------- CLI import


@pytest.mark.parametrize("variant", ["utf16le", "semicolon", "utf16-semicolon", "tab-cp1252"])
def test_messy_schools_file_imports_and_records_what_it_was(tmp_path, run_cli, variant):
    text, encoding, note = SCHOOLS_TEXT, "utf-8", None
    if "semicolon" in variant:
        text, note = _resep(text, ";"), "semicolon (';') as the separator"
    if "tab" in variant:
        text, note = _resep(text, "\t"), "tab as the separator"
    if "utf16" in variant:
        encoding = "utf-16"  # with the little-endian BOM
    if "cp1252" in variant:
        encoding, text = "cp1252", text.replace("Abbey", "Abbé")  # a byte that is not UTF-8
    path = _write(tmp_path / "schools.csv", text, encoding)
    store = tmp_path / "s.duckdb"
    code, out, err = run_cli("data", "import", "schools", path, "--store", store, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["rows"] == len(pd.read_csv(TINY / "schools.csv"))
    described = " ".join(doc["notes"])
    if "utf16" in variant:
        assert "UTF-16 (little-endian, with BOM)" in described
    if "cp1252" in variant:
        assert "Windows-1252" in described
    if note:
        assert note in described
    # provenance: the note is in the store's imports table
    from evaluation.data.store import Store

    recorded = Store(store).read_imports().notes.iloc[-1]
    assert "read as" in recorded and (note is None or note in recorded)
    code, out, err = run_cli("data", "check", "schools", path)
    assert code == 0 and "note: read as" in out


def test_plain_utf8_comma_files_get_no_note(tmp_path, run_cli):
    code, out, err = run_cli("data", "check", "schools", TINY / "schools.csv", "--json")
    assert code == 0 and not any("read as" in n for n in json.loads(out)["notes"])


def test_semicolon_panel_estimates_the_same_as_comma(tmp_path, run_cli):
    mpdta = ROOT / "data" / "mpdta.csv"
    frame = pd.read_csv(mpdta)
    semi = tmp_path / "mpdta_semicolon.csv"
    semi.write_bytes(frame.to_csv(index=False, sep=";").encode("utf-16"))
    _same_twfe(run_cli, mpdta, semi)


def _same_twfe(run_cli, a, b) -> str:
    """TWFE on two spellings of mpdta gives the same overall estimate; returns the second run's stderr."""
    args = ["--unit", "countyreal", "--time", "year", "--outcome", "lemp", "--cohort", "first.treat",
            "--estimator", "twfe", "--json"]
    code1, out1, _ = run_cli("estimate", a, *args)
    code2, out2, err2 = run_cli("estimate", b, *args)
    assert code1 == code2 == 0, err2
    assert json.loads(out1)["overall"] == json.loads(out2)["overall"]
    return err2


def test_undecodable_file_names_the_encodings_tried(tmp_path, run_cli):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"urn,name\n100001,A\x81B\n")  # 0x81 is neither UTF-8 nor Windows-1252
    code, _, err = run_cli("data", "check", "schools", path)
    assert code == 2 and "bad.csv" in err and "UTF-8 or Windows-1252" in err


# ----------------------------------------------------------------------------- --json errors


def test_json_input_error_is_json_on_stdout_with_problems(tmp_path, run_cli):
    bad = tmp_path / "schools.csv"
    bad.write_text(SCHOOLS_TEXT.replace("100002,", "10000X,", 1))
    code, out, err = run_cli("data", "check", "schools", bad, "--json")
    assert code == 2
    doc = json.loads(out)["error"]
    assert doc["kind"] == "input" and doc["exit_code"] == 2 and "schools.csv" in doc["message"]
    hit = [p for p in doc["problems"] if p["column"] == "urn"]
    assert hit and hit[0]["file"] == "schools.csv" and hit[0]["row"] == 3 and hit[0]["value"] == "10000X"
    assert hit[0]["expected"] and "10000X" in hit[0]["message"]
    assert set(hit[0]) >= {"file", "row", "column", "value", "expected", "message"}
    assert "10000X" in err  # the text stays on stderr


def test_json_internal_error_is_json_on_stdout(monkeypatch, run_cli):
    from evaluation.cli import regress_cmd

    def boom(*a, **k):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(regress_cmd, "feols", boom)
    code, out, err = run_cli("regress", ROOT / "data" / "mpdta.csv", "--formula", "lemp ~ lpop", "--json")
    assert code == 1
    doc = json.loads(out)["error"]
    assert doc["kind"] == "internal" and "kaboom" in doc["message"] and doc["problems"] == []
    assert "internal error" in err
    code, out, err = run_cli("regress", ROOT / "data" / "mpdta.csv", "--formula", "lemp ~ lpop")
    assert code == 1 and out == ""  # without --json: text only


def test_json_usage_error_is_json_on_stdout(run_cli, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli("estimate", "x.csv", "--unit", "u", "--json")  # --time etc. missing
    assert exc.value.code == 2
    captured = capsys.readouterr()
    doc = json.loads(captured.out)["error"]
    assert doc["kind"] == "usage" and "required" in doc["message"]
    assert "usage:" in captured.err
    with pytest.raises(SystemExit):
        run_cli("estimate", "x.csv", "--unit", "u")
    assert capsys.readouterr().out == ""


# ----------------------------------------------------------------------------- the corpus


PANEL_HEADER = "unit,time,y,g,cl"
PANEL_ROW = "1,2019,0.5,0,7"


def _schema_header(table: str) -> str:
    return ",".join(load_schema(table).column_names)


def _one_row(table: str) -> str:
    return {
        "schools": SCHOOLS_TEXT.splitlines()[1],
        "partnerships": (TINY / "partnerships.csv").read_text().splitlines()[1],
        "memberships": (TINY / "memberships.csv").read_text().splitlines()[1],
        "school_years": (TINY / "school_years.csv").read_text().splitlines()[1],
    }.get(table, ",".join("1" for _ in load_schema(table).column_names))


def _data_commands(tmp_path: Path):
    """(name, argv with {file}, header, one data row, one row may succeed)"""
    store = tmp_path / "store.duckdb"
    out = []
    for table in ("schools", "partnerships", "memberships", "school_years", "pupils"):
        header, row = _schema_header(table), _one_row(table)
        out.append((f"import {table}", ["data", "import", table, "{file}", "--store", store], header, row, True))
        out.append((f"check {table}", ["data", "check", table, "{file}", "--store", store], header, row, True))
    for est in ("twfe", "event-study", "callaway-santanna", "sun-abraham", "imputation"):
        out.append((f"estimate {est}", ["estimate", "{file}", "--unit", "unit", "--time", "time", "--outcome", "y",
                                        "--cohort", "g", "--estimator", est], PANEL_HEADER, PANEL_ROW, False))
    out.append(("estimate clustered", ["estimate", "{file}", "--unit", "unit", "--time", "time", "--outcome", "y",
                                       "--cohort", "g", "--estimator", "twfe", "--cluster", "cl"],
                PANEL_HEADER, PANEL_ROW, False))
    out.append(("match", ["match", "{file}", "--treatment", "treat", "--covariates", "x"], "id,treat,x", "1,1,0.5",
                False))
    out.append(("regress", ["regress", "{file}", "--formula", "y ~ x"], "y,x,g", "1.0,2.0,1", False))
    out.append(("regress fe", ["regress", "{file}", "--formula", "y ~ x | g", "--cluster", "g"], "y,x,g",
                "1.0,2.0,1", False))
    out.append(("self-evaluate", ["self-evaluate", "--schools", "{file}", "--store", tmp_path / "none.duckdb",
                                  "--results", tmp_path / "results"], "urn,joined", "100001,2015-09-01", False))
    out.append(("import school_attributes", ["data", "import", "school_attributes", "{file}", "--store", store],
                "urn,attribute,value", "100001,coastal,yes", True))  # a valid row: it imports
    for kind in ("gias-establishments", "gias-groups", "gias-group-links", "gias-links", "gias-trust-history",
                 "ks2", "ks4"):
        year = ["--year", "2019"] if kind in ("ks2", "ks4") else []
        out.append((f"import-dfe {kind}", ["data", "import-dfe", kind, "{file}", "--store", store, *year],
                    "URN,Name", "100001,Abbey", False))
    return out


@pytest.mark.parametrize("shape", ["empty", "header-only", "one-row", "utf16-one-row", "semicolon-header-only"])
def test_every_command_on_tiny_inputs_exits_2_naming_the_file(tmp_path, run_cli, shape):
    failures = []
    for name, argv, header, row, one_row_may_succeed in _data_commands(tmp_path):
        text = {"empty": "", "header-only": header + "\n", "one-row": f"{header}\n{row}\n",
                "utf16-one-row": f"{header}\n{row}\n", "semicolon-header-only": header.replace(",", ";") + "\n"}[shape]
        path = tmp_path / f"{name.replace(' ', '_')}_{shape}.csv"
        _write(path, text, "utf-16" if shape.startswith("utf16") else "utf-8")
        args = [path if a == "{file}" else a for a in argv]
        for as_json in (False, True):
            code, out, err = run_cli(*args, *(["--json"] if as_json else []))
            text_seen = out + err
            why = []
            if code == 1 or code not in (0, 2):
                why.append(f"exit {code}")
            if code == 0 and not (shape.endswith("one-row") and one_row_may_succeed):
                why.append("exit 0 on an input that cannot be analysed")
            if code == 2 and path.name not in err and "store" not in err:
                why.append("message does not name the file")
            why += [f"shows {bad!r}" for bad in FORBIDDEN if bad in text_seen]
            if as_json and code == 2:
                try:
                    doc = json.loads(out)["error"]
                    assert doc["exit_code"] == 2 and isinstance(doc["problems"], list) and doc["message"]
                except Exception as exc:  # noqa: BLE001 - report every command's failure together
                    why.append(f"--json error is not the JSON error document ({exc!r})")
            if why:
                failures.append(f"{name} ({'--json' if as_json else 'text'}): {'; '.join(why)}\n  {err.strip()[:300]}")
    assert not failures, "\n".join(failures)


# ----------------------------------------------------------------------------- no Python reprs


@pytest.mark.parametrize("estimator", ["twfe", "callaway-santanna", "sun-abraham", "imputation"])
def test_estimator_input_checks_show_plain_values(tmp_path, run_cli, estimator):
    rows = ["unit,time,y,g"] + [f"{u},{t},{u + t},{3 if u > 2 else 0}" for u in range(1, 5) for t in range(1, 5)]
    dup = tmp_path / "dup.csv"
    dup.write_text("\n".join(rows + [rows[1]]) + "\n")  # unit 1, period 1 twice
    varying = tmp_path / "varying.csv"
    varying.write_text("\n".join(rows[:-1] + ["4,4,8,4"]) + "\n")  # unit 4's cohort changes
    for path in (dup, varying):
        for extra in ([], ["--json"]):
            code, out, err = run_cli("estimate", path, "--unit", "unit", "--time", "time", "--outcome", "y",
                                     "--cohort", "g", "--estimator", estimator, *extra)
            assert code in (0, 2), err
            assert not [bad for bad in FORBIDDEN if bad in out + err], out + err
            if code == 2:
                assert path.name in err


# ----------------------------------------------------------------------------- grouped problem listings


def test_grouped_counts_cover_every_problem_not_only_the_listed_ones(tmp_path, run_cli):
    """150 rows of one problem and 60 of another (210: more than the problems kept for listing)
    print two lines, with the counts over the whole file."""
    header = "urn,year,pupils,fsm_pct,eal_pct,sen_pct\n"
    rows = [f"{100000 + i},2016,many,18.5,30.1,12.0\n" for i in range(150)]  # pupils: not an integer
    rows += [f"{100200 + i},2016,210,150,30.1,12.0\n" for i in range(60)]  # fsm_pct: above 100
    path = _write(tmp_path / "years.csv", header + "".join(rows))
    code, out, err = run_cli("data", "check", "school_years", path)
    assert code == 2
    lines = err.strip().splitlines()
    pupils = [line for line in lines if "column 'pupils'" in line]
    fsm = [line for line in lines if "column 'fsm_pct'" in line]
    assert len(pupils) == 1 and ": 150 rows (rows 2, 3, 4, 5, 6, ...; value 'many')" in pupils[0], err
    assert len(fsm) == 1 and ": 60 rows (rows 152, 153, 154, 155, 156, ...; value '150')" in fsm[0], err
    assert "years.csv: 210 problem(s) found" in err
    assert "not shown" not in err and len(lines) <= 4, err


# ----------------------------------------------------------------------------- decimal commas

YEARS_TEXT = (TINY / "school_years.csv").read_text(encoding="utf-8")


def _decimal_comma_years(tmp_path: Path, name: str = "years.csv", edit=None) -> Path:
    """The tiny school_years file as European-locale Excel saves it: ';'-separated, decimal commas."""
    frame = pd.read_csv(pd.io.common.StringIO(YEARS_TEXT), dtype=str, keep_default_na=False)
    for col in ("fsm_pct", "eal_pct", "sen_pct", "ks2_reading_progress"):
        frame[col] = frame[col].str.replace(".", ",", regex=False)
    if edit:
        edit(frame)
    return _write(tmp_path / name, frame.to_csv(index=False, sep=";", lineterminator="\n"), "cp1252")


def test_semicolon_file_with_decimal_commas_imports_the_same_numbers(tmp_path, run_cli):
    from evaluation.data.store import Store

    path = _decimal_comma_years(tmp_path)
    assert "18,5" in path.read_text(encoding="cp1252")
    store = tmp_path / "s.duckdb"
    for table in ("schools", "partnerships", "memberships"):
        assert run_cli("data", "import", table, TINY / f"{table}.csv", "--store", store)[0] == 0
    code, out, err = run_cli("data", "import", "school_years", path, "--store", store, "--json")
    assert code == 0, err
    notes = " ".join(json.loads(out)["notes"])
    n = pd.read_csv(TINY / "school_years.csv")["fsm_pct"].notna().sum()
    assert "decimal commas read as decimal points" in notes and f"{n} values in column 'fsm_pct'" in notes
    assert Store(store).read_imports().notes.iloc[-1].count("decimal commas") == 1  # in the provenance
    got = Store(store).read_table("school_years").sort_values(["urn", "year"]).reset_index(drop=True)
    want = validate_file("school_years", TINY / "school_years.csv").data.sort_values(["urn", "year"])
    for col in ("fsm_pct", "eal_pct", "sen_pct", "ks2_reading_progress"):
        pd.testing.assert_series_equal(got[col], want[col].reset_index(drop=True), check_dtype=False)
    code, out, err = run_cli("data", "check", "school_years", path)
    assert code == 0 and "note: read as" in out and "decimal commas read as decimal points" in out


def test_comma_separated_file_never_converts_decimal_commas(tmp_path, run_cli):
    path = _write(tmp_path / "years.csv", YEARS_TEXT.replace("18.5", '"18,5"', 1))
    code, out, err = run_cli("data", "check", "school_years", path)
    assert code == 2 and "years.csv, row 2, column 'fsm_pct', value '18,5': expected a percentage" in err


@pytest.mark.parametrize("value, expected", [
    ("1,234,567", "expected a number with at most one decimal comma and no thousands separators"),
    ("1.234,5", "expected a number with at most one decimal comma and no thousands separators"),
    ("31.5", "expected a decimal comma like the rest of this column (such as '18,5')"),  # mixed with '47,5'
])
def test_ambiguous_decimal_commas_are_an_error_naming_the_cell(tmp_path, run_cli, value, expected):
    def edit(frame):
        frame.loc[1, "fsm_pct"] = value  # row 3 of the file

    path = _decimal_comma_years(tmp_path, edit=edit)
    for args in (["check", "school_years", path], ["import", "school_years", path, "--store", tmp_path / "s.duckdb"]):
        code, out, err = run_cli("data", *args)
        assert code == 2, err
        assert f"years.csv, row 3, column 'fsm_pct', value '{value}': {expected}" in err, err
        assert not [bad for bad in FORBIDDEN if bad in err]


def test_semicolon_panel_with_decimal_commas_estimates_the_same(tmp_path, run_cli):
    mpdta = ROOT / "data" / "mpdta.csv"
    frame = pd.read_csv(mpdta)
    european = tmp_path / "mpdta_excel.csv"
    european.write_text(frame.to_csv(index=False, sep=";", decimal=","), encoding="utf-8")
    assert "," in european.read_text().splitlines()[1]
    err2 = _same_twfe(run_cli, mpdta, european)
    assert "decimal commas read as decimal points" in err2 and "column 'lemp'" in err2


def test_semicolon_panel_mixing_decimal_marks_is_exit_2(tmp_path, run_cli):
    rows = ["unit;time;y;g"] + [f"{u};{t};{u + t},5;{3 if u > 2 else 0}" for u in range(1, 5) for t in range(1, 5)]
    rows[5] = rows[5].replace(",5", ".5")  # one value with a decimal point among decimal commas
    path = tmp_path / "mixed.csv"
    path.write_text("\n".join(rows) + "\n")
    code, out, err = run_cli("estimate", path, "--unit", "unit", "--time", "time", "--outcome", "y",
                             "--cohort", "g", "--estimator", "twfe")
    assert code == 2
    assert "mixed.csv, row 6, column 'y', value '3.5': expected a decimal comma like the rest of this column" in err
