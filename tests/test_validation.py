"""Each validation rule, with a bad file: the message names file, row, column and value.

Rows are numbered as a spreadsheet shows them: the CSV header is row 1.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from evaluation.data.validate import read_raw, validate, validate_file
from evaluation.errors import InputError

SCHOOL_HEADER = "urn,name,la_code,region,phase,establishment_type,urban_rural,easting,northing,opened,closed\n"
GOOD_SCHOOL = "100001,Abbey Primary,201,London,primary,community,urban,530000,180000,,\n"
YEARS_HEADER = "urn,year,pupils,fsm_pct,eal_pct,sen_pct,ks2_rwm_expected_pct,ks4_attainment8\n"


def write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def problems_of(table, path, refs=None):
    with pytest.raises(InputError) as info:
        validate_file(table, path, refs)
    return info.value


def refs_from(tiny_dir):
    return {"schools": validate_file("schools", tiny_dir / "schools.csv").data,
            "partnerships": validate_file("partnerships", tiny_dir / "partnerships.csv").data}


def assert_names(err: InputError, file, row, column, value):
    text = err.render()
    hit = [p for p in err.problems if p.file == file and p.row == row and p.column == column]
    assert hit, f"no problem at {file} row {row} column {column}:\n{text}"
    if value is not None:
        assert str(hit[0].value) == value
        assert (repr(value) if value else "value (empty)") in hit[0].render()
    assert f"{file}, row {row}, column {column!r}" in hit[0].render()
    return hit[0]


def test_valid_tiny_data_passes(tiny_dir):
    refs = refs_from(tiny_dir)
    for table in ("memberships", "school_years"):
        vt = validate_file(table, tiny_dir / f"{table}.csv", refs)
        assert vt.rows == 4


def test_misspelt_column_suggests_closest_name(tmp_path):
    path = write(tmp_path, "years.csv", "urn,year,pupils,fsm_pc\n100001,2016,210,18.5\n")
    err = problems_of("school_years", path)
    p = assert_names(err, "years.csv", 1, "fsm_pc", None)
    assert "did you mean 'fsm_pct'?" in p.expected


def test_missing_required_column_is_named(tmp_path):
    path = write(tmp_path, "schools.csv", "urn,name,la_code\n100001,A,201\n")
    err = problems_of("schools", path)
    p = assert_names(err, "schools.csv", 1, "region", None)
    assert "required column 'region' is missing" in p.expected


def test_column_names_forgive_case_spacing_and_bom(tmp_path):
    text = "\ufeffURN, Name ,LA code,Region,Phase,Establishment Type,urban rural,Easting,Northing,Opened,Closed\n" \
           + GOOD_SCHOOL
    vt = validate_file("schools", write(tmp_path, "s.csv", text))
    assert vt.data.loc[0, "urn"] == 100001 and vt.data.loc[0, "la_code"] == 201


def test_wrong_types_name_row_column_value(tmp_path):
    text = YEARS_HEADER + "100001,2016,two hundred,18.5,3,4,55,\n100001,2017.5,200,18.5,3,4,55,\n"
    err = problems_of("school_years", write(tmp_path, "years.csv", text))
    p = assert_names(err, "years.csv", 2, "pupils", "two hundred")
    assert "expected a whole number" in p.expected
    assert_names(err, "years.csv", 3, "year", "2017.5")


def test_duplicate_keys_name_both_rows(tmp_path):
    text = YEARS_HEADER + "100001,2016,200,1,1,1,50,\n100002,2016,200,1,1,1,50,\n100001,2016,201,1,1,1,51,\n"
    err = problems_of("school_years", write(tmp_path, "years.csv", text))
    p = assert_names(err, "years.csv", 4, "year", "2016")
    assert "duplicate key (urn=100001, year=2016)" in p.expected and "row 2" in p.expected


def test_unknown_partnership_type_suggests(tmp_path):
    text = ("partnership_id,name,type,formal,opened,closed\n"
            "T1,Trust,multi_academy_trust,true,,\nT2,Oops,multi academy trusts,true,,\nT3,Odd,club,false,,\n")
    err = problems_of("partnerships", write(tmp_path, "p.csv", text))
    p = assert_names(err, "p.csv", 3, "type", "multi academy trusts")
    assert "unknown partnership type" in p.expected and "did you mean 'multi_academy_trust'?" in p.expected
    assert "unknown partnership type" in assert_names(err, "p.csv", 4, "type", "club").expected


def test_join_date_outside_school_open_close(tiny_dir):
    # school 100004 closed 2018-08-31; 100002 opened 2004-09-01
    text = ("urn,partnership_id,joined,left,role\n100004,T001,2019-01-01,,member\n"
            "100002,T001,2003-01-01,,member\n")
    path = tiny_dir / "m.csv"
    path.write_text(text)
    err = problems_of("memberships", path, refs_from(tiny_dir))
    p = assert_names(err, "m.csv", 2, "joined", "2019-01-01")
    assert "after the school 100004 closed (2018-08-31)" in p.expected
    p = assert_names(err, "m.csv", 3, "joined", "2003-01-01")
    assert "before the school 100002 opened (2004-09-01)" in p.expected


def test_join_date_before_partnership_opened(tiny_dir):
    path = tiny_dir / "m.csv"
    path.write_text("urn,partnership_id,joined,left,role\n100003,T001,2010-01-01,,member\n")
    err = problems_of("memberships", path, refs_from(tiny_dir))
    assert "before the partnership T001 opened (2011-04-01)" in assert_names(err, "m.csv", 2, "joined",
                                                                              "2010-01-01").expected


def test_memberships_pointing_at_unknown_school_or_partnership(tiny_dir):
    path = tiny_dir / "m.csv"
    path.write_text("urn,partnership_id,joined,left,role\n999999,T001,2014-01-01,,member\n"
                    "100001,T999,2014-01-01,,member\n")
    err = problems_of("memberships", path, refs_from(tiny_dir))
    assert "unknown school" in assert_names(err, "m.csv", 2, "urn", "999999").expected
    assert "unknown partnership" in assert_names(err, "m.csv", 3, "partnership_id", "T999").expected


def test_memberships_without_schools_in_store_say_import_schools_first(tiny_dir):
    err = problems_of("memberships", tiny_dir / "memberships.csv", {})
    assert "import schools first" in err.render()


def test_left_before_joined(tiny_dir):
    path = tiny_dir / "m.csv"
    path.write_text("urn,partnership_id,joined,left,role\n100003,T001,2014-01-01,2013-01-01,member\n")
    err = problems_of("memberships", path, refs_from(tiny_dir))
    assert "left on or after the joining date" in assert_names(err, "m.csv", 2, "left", "2013-01-01").expected


@pytest.mark.parametrize("value", ["-3", "100.5", "250%"])
def test_percentages_outside_0_100(tmp_path, value):
    text = YEARS_HEADER + f"100001,2016,200,{value},1,1,50,\n"
    err = problems_of("school_years", write(tmp_path, "years.csv", text))
    p = assert_names(err, "years.csv", 2, "fsm_pct", value)
    assert "expected a percentage between 0 and 100" in p.expected


def test_percent_signs_and_thousands_separators_are_read(tmp_path):
    text = YEARS_HEADER + '100001,2016,"1,204",45%,3.5 %,4,55,\n'
    vt = validate_file("school_years", write(tmp_path, "years.csv", text))
    row = vt.data.iloc[0]
    assert row["pupils"] == 1204 and row["fsm_pct"] == 45.0 and row["eal_pct"] == 3.5


def test_suppression_markers_become_missing_with_reason(tmp_path):
    text = YEARS_HEADER + "100001,2016,200,SUPP,NE,x,LOWCOV,\n100001,2017,200,c,..,NP,55,\n"
    vt = validate_file("school_years", write(tmp_path, "years.csv", text))
    assert vt.data[["fsm_pct", "eal_pct", "sen_pct"]].isna().all().all()
    assert math.isnan(vt.data.loc[0, "ks2_rwm_expected_pct"]) and vt.data.loc[1, "ks2_rwm_expected_pct"] == 55
    kept = vt.missing.set_index(["year", "column_name"])["code"]
    assert kept[(2016, "fsm_pct")] == "SUPP" and kept[(2016, "ks2_rwm_expected_pct")] == "LOWCOV"
    assert kept[(2017, "eal_pct")] == ".." and kept[(2017, "sen_pct")] == "NP"
    assert (vt.missing["row_key"] == "urn=100001, year=2016").sum() == 4
    assert vt.missing["meaning"].str.len().gt(5).all()


def test_marker_in_a_key_column_is_an_error(tmp_path):
    text = YEARS_HEADER + "SUPP,2016,200,1,1,1,50,\n"
    err = problems_of("school_years", write(tmp_path, "years.csv", text))
    p = assert_names(err, "years.csv", 2, "urn", "SUPP")
    assert "suppression marker is not allowed" in p.expected


def test_all_problems_reported_at_once_up_to_a_cap(tmp_path):
    rows = "".join(f"1000{i:02d},2016,bad,1,1,1,50,\n" for i in range(10, 60))
    err = problems_of("school_years", write(tmp_path, "years.csv", YEARS_HEADER + rows + "100001,2016,5,-1,1,1,50,\n"))
    assert err.total == 51 and len(err.problems) == 51
    rows = "".join(f"{100000 + i},2016,bad,1,1,1,50,\n" for i in range(500))
    err = problems_of("school_years", write(tmp_path, "big.csv", YEARS_HEADER + rows))
    assert err.total == 500 and len(err.problems) == 200
    assert "column 'pupils': " in err.render() and ": 500 rows (rows 2, 3, 4, 5, 6, ...;" in err.render()
    assert "not shown" not in err.render()  # the one grouped line counts every problem, listed or not


def test_windows_1252_file_and_day_first_dates(tmp_path):
    text = SCHOOL_HEADER + "100009,St Mary\u2019s Caf\u00e9 School,201,London,primary,community,urban,1,1,01/09/2011,\n"
    vt = validate_file("schools", write(tmp_path, "gias.csv", text, encoding="cp1252"))
    assert vt.data.loc[0, "name"] == "St Mary\u2019s Caf\u00e9 School"
    assert vt.data.loc[0, "opened"] == pd.Timestamp("2011-09-01")


def test_bad_date_and_boolean(tmp_path):
    text = "partnership_id,name,type,formal,opened,closed\nT1,Trust,federation_hard,perhaps,31/02/2015,\n"
    err = problems_of("partnerships", write(tmp_path, "p.csv", text))
    assert "true or false" in assert_names(err, "p.csv", 2, "formal", "perhaps").expected
    assert "expected a date" in assert_names(err, "p.csv", 2, "opened", "31/02/2015").expected


def test_required_value_missing(tmp_path):
    err = problems_of("schools", write(tmp_path, "s.csv", SCHOOL_HEADER + "100001,,201,London,primary,community,,,,,\n"))
    assert "a value is required" in assert_names(err, "s.csv", 2, "name", "").expected


def test_parquet_rows_are_record_numbers(tmp_path):
    frame = pd.DataFrame({"urn": [100001, 100002], "year": [2016, 2016], "fsm_pct": [10.0, 140.0]})
    path = tmp_path / "years.parquet"
    frame.to_parquet(path)
    err = problems_of("school_years", path)
    assert_names(err, "years.parquet", 2, "fsm_pct", "140.0")


def test_parquet_values_round_trip_exactly(tmp_path):
    frame = pd.DataFrame({"urn": [100001], "year": [2016], "fsm_pct": [0.1 + 0.2]})
    path = tmp_path / "years.parquet"
    frame.to_parquet(path)
    assert validate_file("school_years", path).data.loc[0, "fsm_pct"] == 0.1 + 0.2


def test_unreadable_inputs(tmp_path):
    err = problems_of("schools", tmp_path / "nope.csv")
    assert "file not found" in err.render()
    err = problems_of("schools", write(tmp_path, "s.xlsx", "x"))
    assert "expected .csv or .parquet" in err.render()
    err = problems_of("schools", write(tmp_path, "empty.csv", ""))
    assert "empty" in err.render()
    err = problems_of("schools", write(tmp_path, "s.csv", SCHOOL_HEADER))
    assert "no data rows" in err.render()


def test_cli_reports_problems_with_exit_code_2(tmp_path, run_cli):
    path = write(tmp_path, "years.csv", YEARS_HEADER + "100001,2016,200,120,1,1,50,\n")
    code, out, err = run_cli("data", "check", "school_years", path, "--store", tmp_path / "none.duckdb")
    assert code == 2 and out == ""
    assert "years.csv, row 2, column 'fsm_pct', value '120': expected a percentage between 0 and 100" in err
    assert "Traceback" not in err


def test_read_raw_keeps_text_exactly(tmp_path):
    raw = read_raw(write(tmp_path, "s.csv", SCHOOL_HEADER + GOOD_SCHOOL))
    assert list(raw.cells.index) == [2] and raw.cells.loc[2, "urn"] == "100001"
    assert validate("schools", raw).data.loc[0, "urn"] == 100001


def test_academic_years_after_the_current_one_are_refused():
    """school_years.year <= the academic year in progress (2035 is a typo, not data)."""
    from datetime import date

    from evaluation.data.schema import current_academic_year, load_schema

    assert current_academic_year(date(2026, 11, 30)) == 2027
    assert current_academic_year(date(2026, 8, 31)) == 2026
    year = load_schema("school_years").column("year")
    assert year.upper == current_academic_year()
    assert "no academic year later than the current one" in year.expectation()


def test_school_year_2035_is_bad_input(run_cli, tmp_path):
    from datetime import date

    from evaluation.data.schema import current_academic_year

    path = tmp_path / "school_years.csv"
    path.write_text(f"urn,year\n100001,2019\n100001,{current_academic_year(date.today()) + 8}\n")
    code, _, err = run_cli("data", "check", "school_years", path)
    assert code == 2 and "year" in err and "no academic year later than the current one" in err
