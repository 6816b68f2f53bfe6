"""Pupil data in: `impact data import pupils FILE` for CSV, Parquet and partitioned Parquet directories,
validated with DuckDB over the files and stored as a Parquet dataset beside the store."""

from __future__ import annotations

import hashlib
import json
import time

import duckdb
import pandas as pd
import pytest

from evaluation.data.pupils import (
    import_pupils,
    pupil_counts,
    pupils_fingerprint,
    pupils_path,
    read_pupils,
)
from evaluation.data.store import FINGERPRINT_TABLES, Store, fingerprint_tables
from evaluation.errors import InputError

TINY = ("schools", "partnerships", "memberships", "school_years")
HEADER = ("pupil_id,year,key_stage,urn,ks4_attainment8,ks4_progress8,ks2_reading_score,ks2_maths_score,"
          "prior_attainment,disadvantaged,fsm,eal,sen,month_of_birth,first_year_on_roll")
ROWS = [
    "P001,2019,KS4,100003,45.5,0.25,,,4.5,true,false,false,true,9,2015",
    "P002,2019,KS4,100003,SUPP,,,,4.1,false,false,false,false,10,2016",
    "P003,2019,KS2,100001,,,104,99,15,yes,yes,no,no,8,2013",
    "P004,2018,KS2,100002,,,101,110,16.5,no,no,yes,no,1,2012",
    "P001,2018,KS2,100001,,,95,100,12,1,0,0,0,9,2012",
]


@pytest.fixture
def store(tmp_path, tiny_dir):
    """A store holding the tiny schools (100001-100004) and the rest of the tiny data set."""
    s = Store(tmp_path / "s.duckdb")
    for t in TINY:
        s.import_file(t, tiny_dir / f"{t}.csv")
    return s


def write_csv(path, rows=ROWS, header=HEADER):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def frame(rows=ROWS, header=HEADER) -> pd.DataFrame:
    """The rows as typed columns, as a Parquet file would hold them."""
    from io import StringIO

    df = pd.read_csv(StringIO(header + "\n" + "\n".join(rows)), dtype=str, keep_default_na=False)
    out = pd.DataFrame({"pupil_id": df["pupil_id"], "year": df["year"].astype("int64"), "key_stage": df["key_stage"],
                        "urn": df["urn"].astype("int64")})
    for c in ("ks4_attainment8", "ks4_progress8", "ks2_reading_score", "ks2_maths_score", "prior_attainment"):
        out[c] = pd.to_numeric(df[c], errors="coerce")
    for c in ("disadvantaged", "fsm", "eal", "sen"):
        out[c] = df[c].str.lower().isin(["true", "yes", "1"])
    out["month_of_birth"] = df["month_of_birth"].astype("int64")
    out["first_year_on_roll"] = df["first_year_on_roll"].astype("int64")
    return out


def write_hive(root, data: pd.DataFrame):
    """A hive-partitioned directory: key_stage=.../year=.../part-0.parquet (those columns in the path only)."""
    for (ks, year), part in data.groupby(["key_stage", "year"]):
        folder = root / f"key_stage={ks}" / f"year={year}"
        folder.mkdir(parents=True, exist_ok=True)
        part.drop(columns=["key_stage", "year"]).to_parquet(folder / "part-0.parquet", index=False)
    return root


def dataset_bytes(store: Store) -> dict:
    root = pupils_path(store.path)
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- good input


def test_csv_import_layout_values_and_provenance(store, tmp_path, run_cli):
    src = write_csv(tmp_path / "pupils.csv")
    code, out, err = run_cli("data", "import", "pupils", src, "--store", store.path)
    assert code == 0, err
    assert "imported 5 pupil rows from pupils.csv" in out
    root = pupils_path(store.path)
    assert root == tmp_path / "s.pupils"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.parquet")) == [
        "key_stage=KS2/year=2018/part-0.parquet", "key_stage=KS2/year=2019/part-0.parquet",
        "key_stage=KS4/year=2019/part-0.parquet"]
    assert "pupils" not in store.tables()  # not a table in the DuckDB file
    df = read_pupils(store.path)
    assert list(df.columns) == [c for c in Store(store.path).read_table("pupils").columns]
    assert len(df) == 5
    assert str(df["pupil_id"].dtype) == "string" and str(df["year"].dtype) == "Int64"
    assert isinstance(df["key_stage"].dtype, pd.CategoricalDtype)
    assert str(df["disadvantaged"].dtype) == "boolean" and str(df["ks4_attainment8"].dtype) == "float64"
    p1 = df[(df.pupil_id == "P001") & (df.key_stage == "KS4")].iloc[0]
    assert p1["ks4_attainment8"] == 45.5 and p1["first_year_on_roll"] == 2015 and bool(p1["sen"])
    p3 = df[df.pupil_id == "P003"].iloc[0]
    assert bool(p3["disadvantaged"]) and p3["ks2_reading_score"] == 104 and pd.isna(p3["ks4_attainment8"])
    # the SUPP cell is missing, with its reason kept
    p2 = df[df.pupil_id == "P002"].iloc[0]
    assert pd.isna(p2["ks4_attainment8"])
    missing = store.read_missing()
    kept = missing[missing.table_name == "pupils"]
    assert kept[["row_key", "column_name", "code"]].values.tolist() == [
        ["pupil_id=P002, year=2019, key_stage=KS4", "ks4_attainment8", "SUPP"]]
    assert kept["urn"].tolist() == [100003] and kept["meaning"].notna().all()
    imports = store.read_imports()
    rec = imports[imports.table_name == "pupils"].iloc[-1]
    assert rec["source_file"] == "pupils.csv" and rec["rows_kept"] == 5 and rec["rows_read"] == 5
    assert rec["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    # info lists the dataset
    code, out, _ = run_cli("data", "info", "--store", store.path, "--json")
    info = json.loads(out)
    by = {t["table"]: t for t in info["tables"]}
    assert by["pupils"]["rows"] == 5 and (by["pupils"]["first_year"], by["pupils"]["last_year"]) == (2018, 2019)
    assert by["pupils"]["path"] == str(root) and by["pupils"]["key_stages"] == ["KS2", "KS4"]
    assert by["pupils"]["sources"][0]["source_file"] == "pupils.csv"
    assert {(p["key_stage"], p["year"], p["rows"]) for p in info["pupils"]["partitions"]} == {
        ("KS2", 2018, 2), ("KS2", 2019, 1), ("KS4", 2019, 2)}
    code, out, _ = run_cli("data", "info", "--store", store.path)
    assert code == 0 and "pupils" in out and "KS4 2019:" in out and str(root) in out


def test_parquet_file_import_matches_csv(store, tmp_path, run_cli):
    src = tmp_path / "pupils.parquet"
    frame().to_parquet(src, index=False)
    code, out, err = run_cli("data", "import", "pupils", src, "--store", store.path, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["rows"] == 5 and report["kind"] == "parquet" and report["rows_rejected"] == 0
    df = read_pupils(store.path)
    assert len(df) == 5 and df.loc[df.pupil_id == "P004", "ks2_maths_score"].item() == 110


def test_partitioned_directory_import(store, tmp_path, run_cli):
    root = write_hive(tmp_path / "hive", frame())
    code, out, err = run_cli("data", "import", "pupils", root, "--store", store.path)
    assert code == 0, err
    counts = pupil_counts(store.path)
    assert counts.values.tolist() == [["KS2", 2018, 2], ["KS2", 2019, 1], ["KS4", 2019, 2]]
    df = read_pupils(store.path, ["pupil_id", "year", "key_stage", "urn"])
    assert set(zip(df.pupil_id, df.year, df.key_stage)) == {
        ("P001", 2019, "KS4"), ("P002", 2019, "KS4"), ("P003", 2019, "KS2"), ("P004", 2018, "KS2"),
        ("P001", 2018, "KS2")}
    rec = store.read_imports().iloc[-1]
    assert rec["source_kind"] == "parquet-directory" and len(rec["source_sha256"]) == 64


def test_check_validates_without_writing(store, tmp_path, run_cli):
    src = write_csv(tmp_path / "pupils.csv")
    code, out, _ = run_cli("data", "check", "pupils", src, "--store", store.path)
    assert code == 0 and "5 rows are valid pupils data" in out
    assert not pupils_path(store.path).exists()


def test_read_pupils_filters(store, tmp_path):
    import_pupils(store.path, write_csv(tmp_path / "pupils.csv"))
    ks4 = read_pupils(store.path, ["pupil_id", "urn"], key_stage="KS4")
    assert list(ks4.columns) == ["pupil_id", "urn"] and ks4["pupil_id"].tolist() == ["P001", "P002"]
    y = read_pupils(store.path, ["pupil_id", "year"], years=[2018])
    assert y["pupil_id"].tolist() == ["P001", "P004"] and set(y["year"]) == {2018}
    u = read_pupils(store.path, ["pupil_id", "urn"], urns=[100001])
    assert u["pupil_id"].tolist() == ["P001", "P003"]
    both = read_pupils(store.path, ["pupil_id"], key_stage=["KS2"], years=range(2019, 2020), urns=[100001, 100002])
    assert both["pupil_id"].tolist() == ["P003"]
    assert read_pupils(store.path, ["pupil_id"], urns=[]).empty
    with pytest.raises(KeyError):
        read_pupils(store.path, ["nope"])
    empty = read_pupils(tmp_path / "other.duckdb", ["pupil_id", "year"])
    assert empty.empty and str(empty["year"].dtype) == "Int64"


# --------------------------------------------------------------------------- bad input


BAD = {
    # name: (rows or header change, expected pieces of the message: row, column, value, words)
    "missing_column": (dict(header=HEADER.replace("urn,", "school,")), ["row 1", "column 'urn'", "required column"]),
    "wrong_type": (dict(rows=ROWS[:1] + ["P002,2019,KS4,100003,lots,,,,4.1,false,false,false,false,10,2016"]),
                   ["row 3", "column 'ks4_attainment8'", "value 'lots'", "expected a number between 0 and 90"]),
    "out_of_range": (dict(rows=ROWS[:1] + ["P002,2019,KS4,100003,95,,,,4.1,false,false,false,false,10,2016"]),
                     ["row 3", "column 'ks4_attainment8'", "value '95'", "between 0 and 90"]),
    "bad_month": (dict(rows=ROWS[:1] + ["P002,2019,KS4,100003,40,,,,4.1,false,false,false,false,13,2016"]),
                  ["row 3", "column 'month_of_birth'", "value '13'", "whole number between 1 and 12"]),
    "bad_key_stage": (dict(rows=ROWS[:2] + ["P009,2019,KS3,100003,40,,,,4.1,false,false,false,false,10,2016"]),
                      ["row 4", "column 'key_stage'", "value 'KS3'", "expected one of KS2, KS4"]),
    "bad_boolean": (dict(rows=ROWS[:1] + ["P002,2019,KS4,100003,40,,,,4.1,maybe,false,false,false,10,2016"]),
                    ["row 3", "column 'disadvantaged'", "value 'maybe'", "true or false"]),
    "duplicate_key": (dict(rows=ROWS + [ROWS[0].replace("45.5", "50")]),
                      ["row 7", "column 'key_stage'", "value 'KS4'", "duplicate key (pupil_id=P001, year=2019, "
                       "key_stage=KS4): the same key is on row 2"]),
    "unknown_urn": (dict(rows=ROWS[:1] + ["P002,2019,KS4,123456,40,,,,4.1,false,false,false,false,10,2016"]),
                    ["row 3", "column 'urn'", "value '123456'", "unknown school"]),
    "null_key": (dict(rows=ROWS[:1] + [",2019,KS4,100003,40,,,,4.1,false,false,false,false,10,2016"]),
                 ["row 3", "column 'pupil_id'", "value (empty)", "a value is required"]),
    "on_roll_after_year": (dict(rows=ROWS[:1] + ["P002,2019,KS4,100003,40,,,,4.1,false,false,false,false,10,2020"]),
                           ["row 3", "column 'year'", "first_year_on_roll '2020'", "no later than the assessment"]),
    "future_year": (dict(rows=ROWS[:1] + ["P002,2099,KS4,100003,40,,,,4.1,false,false,false,false,10,2016"]),
                    ["row 3", "column 'year'", "value '2099'", "no academic year later than the current one"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_csv_exits_2_naming_the_cell_and_keeps_previous_data(case, store, tmp_path, run_cli):
    import_pupils(store.path, write_csv(tmp_path / "good.csv"))
    before, fp, imports = dataset_bytes(store), store.fingerprint(), len(store.read_imports())
    change, pieces = BAD[case]
    bad = write_csv(tmp_path / "bad.csv", **change)
    for mode in ([], ["--append"]):
        code, out, err = run_cli("data", "import", "pupils", bad, "--store", store.path, *mode)
        assert code == 2, (case, out, err)
        assert "Traceback" not in err
        line = next((ln for ln in err.splitlines() if ln.startswith("bad.csv") and pieces[0] in ln), None)
        assert line is not None, err
        for piece in pieces:
            assert piece in line, (piece, err)
        code_check, _, err_check = run_cli("data", "check", "pupils", bad, "--store", store.path)
        assert code_check == 2 and pieces[-1] in err_check
    assert dataset_bytes(store) == before and Store(store.path).fingerprint() == fp
    assert len(store.read_imports()) == imports
    assert not list(store.path.parent.glob(".pupils-import-*"))  # the temporary directory is gone


def test_bad_parquet_names_file_and_row_within_it(store, tmp_path, run_cli):
    data = frame()
    data.loc[4, "ks2_maths_score"] = 130.0  # P001 2018 KS2: the 2nd row of key_stage=KS2/year=2018
    data = pd.concat([data.iloc[[3]], data.iloc[[4]], data.drop(index=[3, 4])])
    root = write_hive(tmp_path / "hive", data)
    code, _, err = run_cli("data", "import", "pupils", root, "--store", store.path)
    assert code == 2
    assert ("key_stage=KS2/year=2018/part-0.parquet, row 2, column 'ks2_maths_score', value '130.0': "
            "expected a number between 80 and 120") in err
    single = tmp_path / "one.parquet"
    data.to_parquet(single, index=False)
    code, _, err = run_cli("data", "import", "pupils", single, "--store", store.path)
    assert code == 2 and "one.parquet, row 2, column 'ks2_maths_score', value '130.0'" in err
    assert not pupils_path(store.path).exists()


def test_many_problems_are_counted_not_all_listed(store, tmp_path, run_cli):
    rows = [f"Q{i},2019,KS4,100003,{'abc' if i % 2 else 40},,,,4,true,false,false,false,9,2016" for i in range(1000)]
    code, _, err = run_cli("data", "import", "pupils", write_csv(tmp_path / "many.csv", rows), "--store", store.path)
    assert code == 2
    assert "500 problem(s) found" in err
    assert "column 'ks4_attainment8'" in err and ": 500 rows (rows 3, 5, 7, 9, 11, ...; value 'abc')" in err


def test_unreadable_inputs(store, tmp_path, run_cli):
    code, _, err = run_cli("data", "import", "pupils", tmp_path / "none.csv", "--store", store.path)
    assert code == 2 and "file not found" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli("data", "import", "pupils", tmp_path / "empty", "--store", store.path)
    assert code == 2 and "no .parquet files" in err
    header_only = tmp_path / "h.csv"
    header_only.write_text(HEADER + "\n")
    code, _, err = run_cli("data", "import", "pupils", header_only, "--store", store.path)
    assert code == 2 and "no data rows" in err
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    code, _, err = run_cli("data", "import", "pupils", broken, "--store", store.path)
    assert code == 2 and "broken.parquet" in err and "Traceback" not in err
    ragged = write_csv(tmp_path / "ragged.csv", ROWS * 5000 + ["P9,2019,KS4"])
    code, _, err = run_cli("data", "import", "pupils", ragged, "--store", store.path)
    assert code == 2 and "ragged.csv: cannot read as CSV (CSV Error on Line: 25002" in err
    code, _, err = run_cli("data", "import", "pupils", write_csv(tmp_path / "p.csv"), "--store",
                           tmp_path / "nostore.duckdb")
    assert code == 2 and "import schools first" in err


def test_extra_columns_are_ignored_with_a_note(store, tmp_path, run_cli):
    src = write_csv(tmp_path / "p.csv", [r + ",whatever" for r in ROWS], HEADER + ",notes")
    code, out, _ = run_cli("data", "import", "pupils", src, "--store", store.path)
    assert code == 0 and "ignored column(s) not in the pupils schema: 'notes'" in out


# --------------------------------------------------------------------------- append, atomicity, fingerprint


def test_append_adds_rows_and_rejects_stored_keys(store, tmp_path, run_cli):
    import_pupils(store.path, write_csv(tmp_path / "a.csv", ROWS[:3]))
    more = write_csv(tmp_path / "b.csv", ROWS[3:] + ["P005,2019,KS4,100004,30,,,,3,false,false,false,false,2,2015"])
    code, out, err = run_cli("data", "import", "pupils", more, "--append", "--store", store.path)
    assert code == 0, err
    assert len(read_pupils(store.path)) == 6
    root = pupils_path(store.path)
    assert (root / "key_stage=KS4/year=2019/part-1.parquet").exists()  # the stored file kept beside the new
    before = dataset_bytes(store)
    again = write_csv(tmp_path / "c.csv", [ROWS[0].replace("45.5", "60")])
    code, _, err = run_cli("data", "import", "pupils", again, "--append", "--store", store.path)
    assert code == 2
    assert ("c.csv, row 2, column 'key_stage', value 'KS4': duplicate key: a row with pupil_id=P001, year=2019, "
            "key_stage=KS4 is already in the store's pupils table") in err
    assert dataset_bytes(store) == before
    # without --append the same file replaces the data
    code, _, _ = run_cli("data", "import", "pupils", again, "--store", store.path)
    assert code == 0 and read_pupils(store.path)["ks4_attainment8"].tolist() == [60.0]
    assert store.read_imports()["mode"].tolist()[-3:] == ["replace", "append", "replace"]


@pytest.mark.parametrize("stage", ["written", "swapped"])
def test_interrupted_import_leaves_previous_data(stage, store, tmp_path):
    import_pupils(store.path, write_csv(tmp_path / "a.csv"))
    before, imports, missing = dataset_bytes(store), store.read_imports(), store.read_missing()

    def interrupt(at):
        if at == stage:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_pupils(store.path, write_csv(tmp_path / "b.csv", ROWS[:2]), interrupt_hook=interrupt)
    assert dataset_bytes(store) == before
    pd.testing.assert_frame_equal(store.read_imports(), imports)
    pd.testing.assert_frame_equal(store.read_missing(), missing)
    assert not list(store.path.parent.glob(".pupils-import-*"))
    import_pupils(store.path, write_csv(tmp_path / "b.csv", ROWS[:2]))  # and the store still works
    assert len(read_pupils(store.path)) == 2


def test_fingerprint_without_pupils_is_unchanged_and_with_pupils_is_content(store, tmp_path, tiny_dir):
    old_definition = fingerprint_tables({t: store.read_table(t) for t in FINGERPRINT_TABLES if t in store.tables()})
    assert store.fingerprint() == old_definition
    src = write_csv(tmp_path / "p.csv")
    import_pupils(store.path, src)
    with_pupils = Store(store.path).fingerprint()
    assert with_pupils != old_definition
    assert with_pupils == fingerprint_tables(
        {t: store.read_table(t) for t in FINGERPRINT_TABLES if t in store.tables()},
        pupils=pupils_fingerprint(store.path))
    # the same data imported into another store gives the same fingerprint (byte-identical files)
    other = Store(tmp_path / "other" / "s.duckdb")
    for t in TINY:
        other.import_file(t, tiny_dir / f"{t}.csv")
    import_pupils(other.path, src)
    assert other.fingerprint() == with_pupils
    # a changed file is new data even if the manifest was left alone
    target = next(pupils_path(store.path).rglob("*.parquet"))
    df = pd.read_parquet(target)
    df.to_parquet(target, index=False, compression="gzip")
    assert Store(store.path).fingerprint() != with_pupils


def test_replacing_schools_may_not_orphan_pupils(tmp_path, tiny_dir):
    store = Store(tmp_path / "only_schools.duckdb")
    store.import_file("schools", tiny_dir / "schools.csv")
    import_pupils(store.path, write_csv(tmp_path / "p.csv"))
    lines = (tiny_dir / "schools.csv").read_text().splitlines()
    fewer = tmp_path / "fewer.csv"
    fewer.write_text("\n".join(line for line in lines if not line.startswith("100003")) + "\n")
    with pytest.raises(InputError, match="pupils of 1 school"):
        store.import_file("schools", fewer)


# --------------------------------------------------------------------------- size


def _generate(path, n: int) -> None:
    q = f"""SELECT 'P' || lpad(CAST(i AS VARCHAR), 9, '0') AS pupil_id, 2010 + (i % 14) AS "year",
        CASE WHEN (i // 14) % 2 = 0 THEN 'KS2' ELSE 'KS4' END AS key_stage, 100001 + (i % 4) AS urn,
        CASE WHEN (i // 14) % 2 = 1 THEN round((i * 7919 % 900) / 10.0, 1) END AS ks4_attainment8,
        CASE WHEN (i // 14) % 2 = 0 THEN 80 + i % 41 END AS ks2_reading_score,
        round((i % 300) / 10.0, 1) AS prior_attainment, (i % 4 = 0) AS disadvantaged, (i % 7 = 0) AS eal,
        1 + i % 12 AS month_of_birth, 2010 + (i % 14) - (i % 3) AS first_year_on_roll FROM range({n}) t(i)"""
    con = duckdb.connect()
    con.execute(f"COPY ({q}) TO '{path}' (HEADER)")
    con.close()


@pytest.mark.parametrize("n", [200_000, pytest.param(2_000_000, marks=pytest.mark.slow)])
def test_size(n, store, tmp_path):
    src = tmp_path / "big.csv"
    _generate(src, n)
    started = time.perf_counter()
    report = import_pupils(store.path, src)
    seconds = time.perf_counter() - started
    print(f"\nimported {n:,} pupil rows from a {src.stat().st_size / 1e6:.0f} MB CSV in {seconds:.1f} s")
    assert report.rows == n and int(pupil_counts(store.path)["rows"].sum()) == n
    started = time.perf_counter()
    ks4 = read_pupils(store.path, ["urn", "ks4_attainment8"], key_stage="KS4", years=[2019])
    print(f"read_pupils of one key stage and year: {len(ks4):,} rows in {time.perf_counter() - started:.2f} s")
    assert len(ks4) > 0
