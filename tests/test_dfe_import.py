"""`impact data import-dfe`: DfE's GIAS and performance-table files mapped onto the data model.

Expected values are read off the fixtures in tests/data/dfe (see its README.md).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from evaluation.data.store import Store

DFE = Path(__file__).parent / "data" / "dfe"
EST = DFE / "edubasealldata20230901.csv"
LINKS = DFE / "links_edubasealldata20230901.csv"
GROUPS = DFE / "allgroupsdata20230901.csv"
GROUP_LINKS = DFE / "links_groups20230901.csv"
KS2_2019 = DFE / "2018-2019" / "england_ks2final.csv"
KS4_2019 = DFE / "2018-2019" / "england_ks4final.csv"
KS4_2014 = DFE / "2013-2014" / "england_ks4final.csv"
KS2_UNDATED = DFE / "undated" / "england_ks2final.csv"
GIAS_STEPS = [("gias-establishments", EST), ("gias-links", LINKS), ("gias-groups", GROUPS),
              ("gias-group-links", GROUP_LINKS)]
ALL_STEPS = GIAS_STEPS + [("ks2", KS2_2019), ("ks4", KS4_2019), ("ks4", KS4_2014)]
NaT = pd.NaT
NA = pd.NA


def run(*args):
    from evaluation.cli import main

    return main([str(a) for a in args])


def build(path: Path, steps) -> Store:
    for kind, file in steps:
        assert run("data", "import-dfe", kind, file, "--store", path) == 0, (kind, file)
    return Store(path)


@pytest.fixture(scope="module")
def gias_cache(tmp_path_factory) -> Path:
    """A store after the four GIAS imports, built once per module (copy it before changing it)."""
    path = tmp_path_factory.mktemp("gias") / "s.duckdb"
    build(path, GIAS_STEPS)
    return path


@pytest.fixture(scope="module")
def full_store(gias_cache, tmp_path_factory) -> Store:
    """Every fixture imported: the GIAS files, then KS2 2019, KS4 2019 and KS4 2014."""
    path = tmp_path_factory.mktemp("full") / "s.duckdb"
    shutil.copy(gias_cache, path)
    return build(path, ALL_STEPS[len(GIAS_STEPS):])


@pytest.fixture
def gias_store(gias_cache, tmp_path) -> Store:
    """A fresh copy of the GIAS-only store."""
    dest = tmp_path / "s.duckdb"
    shutil.copy(gias_cache, dest)
    return Store(dest)


def d(text):
    return pd.Timestamp(text) if text else NaT


def rows(frame: pd.DataFrame) -> list[tuple]:
    """Rows as tuples with missing values as None (so cells compare exactly)."""
    return [tuple(None if pd.isna(v) else v for v in rec) for rec in frame.itertuples(index=False)]


# ---------------------------------------------------------------------------- the tables, cell by cell


def test_schools_cell_by_cell(full_store):
    s = full_store.read_table("schools")
    assert rows(s) == [
        (100001, "St Mary\u2019s Church of England Primary School", 201, "City of London", "London", "primary",
         "voluntary_aided", "urban", 532000, 181000, None, None),
        # Brook Primary School (100002) converted to Brook Primary Academy (140002): one school, the
        # predecessor's URN as id, the academy's descriptors, the predecessor's (unknown) opening date
        (100002, "Brook Primary Academy", 201, "City of London", "London", "primary", "academy_converter", "urban",
         531500, 181200, None, None),
        (100003, "Castle Academy", 390, "Gateshead", "North East", "secondary", "academy_sponsor_led", "rural",
         420000, 560000, d("2010-09-01"), None),
        (100004, "Dene Academy", 390, "Gateshead", "North East", "secondary", "academy_sponsor_led", "urban",
         425000, 562000, d("2014-09-01"), None),
        (100005, "Cl\u00e9o Park Primary School", 383, "Leeds", "Yorkshire and the Humber", "primary", "foundation",
         None, None, None, None, None),
    ]


def test_partnerships_cell_by_cell(full_store):
    p = full_store.read_table("partnerships")
    assert rows(p) == [
        ("2001", "River Learning Trust", "multi_academy_trust", True, False, d("2011-04-01"), None),
        ("2002", "Old Castle Trust", "multi_academy_trust", True, False, d("2012-09-01"), d("2017-03-31")),
        ("2003", "Tyne Schools Trust", "multi_academy_trust", True, True, d("2014-09-01"), None),
        ("5001", "Abbey Federation", "federation_hard", True, None, d("2010-09-01"), None),
        ("5002", "Leeds Soft Federation of Schools", "federation_soft", False, None, d("2016-01-01"), None),
        ("6001", "Ch\u00e2teau Foundation Trust", "umbrella_trust", True, None, d("2008-09-01"), None),
    ]


def test_memberships_cell_by_cell(full_store):
    m = full_store.read_table("memberships")
    assert rows(m) == [
        (100001, "5001", d("2010-09-01"), None, "member"),
        (100002, "2001", d("2013-09-01"), None, "member"),
        (100002, "5001", d("2010-09-01"), d("2013-08-31"), "member"),
        (100003, "2001", d("2017-04-01"), None, "member"),
        (100003, "2002", d("2012-09-01"), d("2017-03-31"), "member"),
        (100004, "2003", d("2014-09-01"), None, "member"),
    ]


KS2_COLS = ["ks2_eligible_pupils", "ks2_rwm_expected_pct", "ks2_rwm_high_pct", "ks2_reading_progress",
            "ks2_writing_progress", "ks2_maths_progress", "ks2_reading_score", "ks2_maths_score"]
KS4_COLS = ["ks4_eligible_pupils", "ks4_disadvantaged_pct", "ks4_attainment8", "ks4_progress8",
            "ks4_basics_94_pct", "ks4_basics_95_pct", "ks4_ebacc_aps"]


def test_school_years_cell_by_cell(full_store):
    sy = full_store.read_table("school_years")
    assert rows(sy[["urn", "year", "pupils", "fsm_pct"]]) == [
        (100001, 2019, None, None), (100001, 2023, 210, 18.5),
        (100002, 2019, None, None), (100002, 2023, 205, 12.0),
        (100003, 2014, None, None), (100003, 2019, None, None), (100003, 2023, 1050, 35.2),
        (100004, 2019, None, None), (100004, 2023, 900, 41.0),
        (100005, 2019, None, None),
    ]
    assert rows(sy[["urn", "year"] + KS2_COLS].dropna(subset=["ks2_eligible_pupils"])) == [
        (100001, 2019, 30, 55.0, 7.0, 0.5, -1.2, 1.1, 104.0, 103.0),
        (100002, 2019, 28, 60.0, None, None, -0.8, 1.4, 105.0, 104.0),
        (100005, 2019, 6, None, None, None, None, None, None, None),
    ]
    assert rows(sy[["urn", "year"] + KS4_COLS].dropna(subset=["ks4_eligible_pupils"])) == [
        (100003, 2014, 170, 55.0, None, None, None, None, None),
        (100003, 2019, 180, 52.0, 44.3, -0.21, 58.0, 37.0, 3.9),
        (100004, 2019, 150, 60.0, 38.5, None, 45.0, None, 3.1),
    ]
    other = [c for c in sy.columns if c not in ["urn", "year", "pupils", "fsm_pct"] + KS2_COLS + KS4_COLS]
    assert sy[other].isna().all().all()


# ---------------------------------------------------------------------------- provenance


def test_provenance_records_kind_year_counts_and_reasons(full_store):
    imports = full_store.read_imports()
    ks2 = imports[imports.source_file == "england_ks2final.csv"].iloc[0]
    assert ks2.table_name == "school_years" and ks2.rows_read == 7 and ks2.rows_kept == 3
    assert ks2.source_sha256 == hashlib.sha256(KS2_2019.read_bytes()).hexdigest()
    assert ks2.notes.split("; ")[:8] == [
        "kind ks2", "year 2019 (from the folder name '2018-2019')", "rows read 7, kept 3, rejected 4",
        "rejected 1 row: URN not among the store's schools (not in the GIAS establishments imported, or not a "
        "school in England)",
        "rejected 1 row: not a school (RECTYPE 3: local authority)",
        "rejected 1 row: not a school (RECTYPE 4: national (all schools))",
        "rejected 1 row: not a school (RECTYPE 5: national (state-funded schools))",
        "kept school rows by NFTYPE: 1 ACC converter academy, 1 FD foundation school, 1 VA voluntary aided school",
    ]
    est = imports[(imports.source_file == EST.name) & (imports.table_name == "schools")].iloc[0]
    assert (est.rows_read, est.rows_kept) == (10, 6)
    assert "rows read 10, kept 6, rejected 4" in est.notes
    assert "rejected 1 row: outside England's nine regions (GOR (name) 'Not Applicable')" in est.notes
    assert "rejected 1 row: not yet open (EstablishmentStatus (name) 'Proposed to open')" in est.notes
    groups = imports[imports.source_file == GROUPS.name].iloc[0]
    assert "rejected 1 row: single-academy trust: one school, not a partnership" in groups.notes
    assert "rows read 9, kept 6, rejected 3" in groups.notes


def test_json_report(gias_store, capsys):
    assert run("data", "import-dfe", "ks4", KS4_2014, "--store", gias_store.path, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["kind"], report["year"], report["rows_read"], report["rows_kept"], report["rows_rejected"]) == \
        ("ks4", 2014, 3, 1, 2)
    assert report["rejected"] == {"not a school (RECTYPE 3: local authority)": 1,
                                  "not a school (RECTYPE 4: national (all schools))": 1}


# ---------------------------------------------------------------------------- the nasty parts


def test_cp1252_apostrophe_and_e_acute(full_store):
    assert b"\x92" in EST.read_bytes() and b"\xe9" in EST.read_bytes()  # Windows-1252 bytes, not UTF-8
    names = set(full_store.read_table("schools")["name"])
    assert "St Mary\u2019s Church of England Primary School" in names and "Cl\u00e9o Park Primary School" in names


def test_bom_before_first_column_name(full_store):
    assert GROUPS.read_bytes().startswith(b"\xef\xbb\xbfGroup UID,")
    assert list(full_store.read_table("partnerships")["partnership_id"]) == ["2001", "2002", "2003", "5001", "5002",
                                                                            "6001"]


def test_converter_academy_history_is_continuous(full_store):
    links = full_store.read_extra("school_urn_links")
    assert rows(links) == [(140002, 100002, 100002, d("2013-09-01"))]
    est = full_store.read_extra("gias_establishments")
    assert rows(est[est.school_urn == 100002][["urn", "school_urn", "name"]]) == [
        (100002, 100002, "Brook Primary School"), (140002, 100002, "Brook Primary Academy")]
    sy = full_store.read_table("school_years")
    # the 2019 KS2 row of URN 140002 and the 2023 census row of URN 140002 belong to school 100002
    assert sorted(sy.loc[sy.urn == 100002, "year"]) == [2019, 2023]
    assert not (sy.urn == 140002).any()
    m = full_store.read_table("memberships")
    spells = m[m.urn == 100002].sort_values("joined")
    # federation until the maintained school closed, the trust from the conversion date (the academy's opening)
    assert rows(spells[["partnership_id", "joined", "left"]]) == [
        ("5001", d("2010-09-01"), d("2013-08-31")), ("2001", d("2013-09-01"), None)]


def test_school_in_two_trusts_at_different_times(full_store):
    m = full_store.read_table("memberships")
    assert rows(m[m.urn == 100003][["partnership_id", "joined", "left"]]) == [
        ("2001", d("2017-04-01"), None), ("2002", d("2012-09-01"), d("2017-03-31"))]


def test_suppressed_cells_are_missing_with_reason(full_store):
    miss = full_store.read_missing()
    got = sorted((int(r.urn), int(r.year), r.column_name, r.code) for r in miss.itertuples())
    assert got == sorted([
        (100002, 2019, "ks2_rwm_high_pct", "SUPP"), (100002, 2019, "ks2_reading_progress", "LOWCOV"),
        (100005, 2019, "ks2_rwm_expected_pct", "SUPP"), (100005, 2019, "ks2_rwm_high_pct", "SUPP"),
        (100005, 2019, "ks2_reading_progress", "NP"), (100005, 2019, "ks2_writing_progress", "NP"),
        (100005, 2019, "ks2_maths_progress", "NP"), (100005, 2019, "ks2_reading_score", "SUPP"),
        (100005, 2019, "ks2_maths_score", "SUPP"),
        (100004, 2019, "ks4_progress8", "NE"), (100004, 2019, "ks4_basics_95_pct", "x"),
    ])
    assert miss.loc[miss.code == "NE", "meaning"].item().startswith("no entries")
    assert set(miss["row_key"][miss.urn == 100002]) == {"urn=100002, year=2019"}


def test_percent_with_and_without_sign(full_store):
    sy = full_store.read_table("school_years").set_index(["urn", "year"])
    assert sy.loc[(100001, 2019), "ks2_rwm_expected_pct"] == 55.0  # "55%"
    assert sy.loc[(100001, 2019), "ks2_rwm_high_pct"] == 7.0  # "7"
    assert sy.loc[(100003, 2019), "ks4_basics_94_pct"] == 58.0  # "58%"
    assert sy.loc[(100004, 2019), "ks4_basics_94_pct"] == 45.0  # "45"


def test_renamed_column_maps_to_one_field(full_store):
    sy = full_store.read_table("school_years").set_index(["urn", "year"])
    assert sy.loc[(100003, 2014), "ks4_disadvantaged_pct"] == 55.0  # PTFSMCLA in 2014
    assert sy.loc[(100003, 2019), "ks4_disadvantaged_pct"] == 52.0  # PTFSM6CLA1A in 2019
    notes = full_store.read_imports().notes
    assert notes.str.contains("column PTFSMCLA read as ks4_disadvantaged_pct (the 2014 name", regex=False).any()


def test_non_school_rows_by_year_convention(full_store):
    notes = dict(zip(full_store.read_imports().source_sha256, full_store.read_imports().notes))
    old = notes[hashlib.sha256(KS4_2014.read_bytes()).hexdigest()]
    new = notes[hashlib.sha256(KS4_2019.read_bytes()).hexdigest()]
    assert "not a school (RECTYPE 3: local authority)" in old and "(RECTYPE 4: national (all schools))" in old
    assert "not a school (RECTYPE 4: local authority)" in new and "(RECTYPE 5: national (all schools))" in new
    # the KS2 file of the same year numbers LA rows 3 (its own list in dfe_performance.toml)
    ks2 = notes[hashlib.sha256(KS2_2019.read_bytes()).hexdigest()]
    assert "not a school (RECTYPE 3: local authority)" in ks2 and "(RECTYPE 4: national (all schools))" in ks2


def test_excluded_rows_and_sponsor_led(full_store):
    assert 100006 not in set(full_store.read_table("schools")["urn"])  # further education
    p = full_store.read_table("partnerships").set_index("partnership_id")
    assert "7001" not in p.index and "9001" not in p.index  # single-academy trust, school sponsor
    assert p.loc["2003", "sponsor_led"] == True  # noqa: E712  runs Dene Academy, linked to a school sponsor


def test_performance_tables_merge_without_wiping(gias_store):
    path = gias_store.path
    assert run("data", "import-dfe", "ks4", KS4_2019, "--store", path) == 0
    assert run("data", "import-dfe", "ks2", KS2_2019, "--store", path) == 0
    before = gias_store.read_table("school_years")
    assert before.set_index(["urn", "year"]).loc[(100003, 2019), "ks4_attainment8"] == 44.3  # KS4 kept
    assert before.set_index(["urn", "year"]).loc[(100003, 2023), "pupils"] == 1050  # census context kept
    missing_before = gias_store.read_missing()
    # re-importing the same KS2 file changes nothing
    assert run("data", "import-dfe", "ks2", KS2_2019, "--store", path) == 0
    pd.testing.assert_frame_equal(gias_store.read_table("school_years"), before)
    pd.testing.assert_frame_equal(gias_store.read_missing(), missing_before)


def test_year_from_option_and_successor_row_wins(gias_store, run_cli):
    code, _, err = run_cli("data", "import-dfe", "ks2", KS2_UNDATED, "--store", gias_store.path)
    assert code == 2 and "england_ks2final.csv: cannot tell which academic year" in err
    assert "--year" in err and len(err.strip().splitlines()) == 1
    code, out, _ = run_cli("data", "import-dfe", "ks2", KS2_UNDATED, "--year", "2018", "--store", gias_store.path)
    assert code == 0
    sy = gias_store.read_table("school_years").set_index(["urn", "year"])
    # URN 100002 (predecessor) and 140002 (successor) both reported in 2018: the successor's row is kept
    assert sy.loc[(100002, 2018), "ks2_eligible_pupils"] == 29 and sy.loc[(100002, 2018), "ks2_rwm_expected_pct"] == 48
    notes = gias_store.read_imports().notes.iloc[-1]
    assert "year 2018 (from --year)" in notes
    assert "rejected 1 row: predecessor URN's row for a school whose successor URN also has a row this year" in notes


# ---------------------------------------------------------------------------- bad input: exit 2, store unchanged


def _fails_unchanged(run_cli, store: Store, *args) -> str:
    before = store.path.read_bytes()
    code, out, err = run_cli("data", "import-dfe", *args, "--store", store.path)
    assert code == 2, (out, err)
    assert "Traceback" not in err
    assert store.path.read_bytes() == before
    return err


def test_wrong_kind_of_file(run_cli, gias_store):
    err = _fails_unchanged(run_cli, gias_store, "gias-groups", KS4_2019)
    assert err.strip() == ("impact: error: england_ks4final.csv, row 1, column 'Group UID': required column "
                           "'Group UID' is missing (and 2 more: 'Group Name', 'Group Type'): expected a GIAS groups "
                           "file (allgroupsdataYYYYMMDD.csv); the columns look like a KS4 performance table "
                           "(england_ks4final.csv): use KIND ks4")


def test_truncated_file(run_cli, gias_store, tmp_path):
    cut = tmp_path / "2018-2019" / "england_ks2final.csv"
    cut.parent.mkdir()
    data = KS2_2019.read_bytes()
    cut.write_bytes(data[:data.index(b"5,,,,England") + len(b"5,,,,Engla")])  # download cut off mid-row
    err = _fails_unchanged(run_cli, gias_store, "ks2", cut)
    assert len(err.strip().splitlines()) == 1
    # line 8 holds 5 fields (7, 3 empty, "Engla"): the 6th column, NFTYPE, is the first one missing
    assert "england_ks2final.csv, row 8, column 'NFTYPE', value 'Engla': the row has 5 of the header's 14" in err
    assert "the file looks truncated" in err


def test_missing_key_column(run_cli, gias_store, tmp_path):
    text = EST.read_bytes().decode("cp1252").replace("URN,LA (code)", "Ref,LA (code)", 1)
    bad = tmp_path / "edubasealldata20230901.csv"
    bad.write_bytes(text.encode("cp1252"))
    err = _fails_unchanged(run_cli, gias_store, "gias-establishments", bad)
    assert "edubasealldata20230901.csv, row 1, column 'URN': required column 'URN' is missing" in err


def test_bad_value_names_dfe_column(run_cli, gias_store, tmp_path):
    bad = tmp_path / "2018-2019" / "england_ks4final.csv"
    bad.parent.mkdir()
    bad.write_text(KS4_2019.read_text().replace(",NE,", ",abc,"))
    err = _fails_unchanged(run_cli, gias_store, "ks4", bad)
    assert "england_ks4final.csv, row 3, column 'P8MEA (ks4_progress8)', value 'abc': expected a number" in err


def test_unknown_group_type_is_counted_and_skipped(run_cli, gias_store, tmp_path):
    bad = tmp_path / "allgroupsdata.csv"
    bad.write_bytes(GROUPS.read_bytes().replace(b",02,Trust,", b",02,Cluster,"))
    code, out, err = run_cli("data", "import-dfe", "gias-groups", bad, "--store", gias_store.path)
    assert code == 0, err
    assert "6001" not in set(gias_store.read_table("partnerships")["partnership_id"])
    notes = gias_store.read_imports().notes.iloc[-1]
    assert ("rejected 1 row: Group Type 'Cluster' is not a known GIAS group type "
            "(data_schemas/dfe_mappings.toml [group_type]): skipped (row 7)") in notes


def test_unknown_rectype_for_the_year_is_counted_and_skipped(run_cli, gias_store, tmp_path):
    bad = tmp_path / "2013-2014" / "england_ks4final.csv"
    bad.parent.mkdir()
    bad.write_text(KS4_2014.read_text().replace("\n4,,,,England", "\n7,,,,England"))
    code, out, err = run_cli("data", "import-dfe", "ks4", bad, "--store", gias_store.path)
    assert code == 0, err
    notes = gias_store.read_imports().notes.iloc[-1]
    assert "rows read 3, kept 1, rejected 2" in notes
    assert ("rejected 1 row: RECTYPE '7' is not a known KS4 2014 record type (listed: 1, 2, 3, 4, 5 in "
            "data_schemas/dfe_performance.toml): skipped (row 4)") in notes
    sy = gias_store.read_table("school_years").set_index(["urn", "year"])
    assert sy.loc[(100003, 2014), "ks4_eligible_pupils"] == 170


def test_performance_table_before_schools(run_cli, tmp_path):
    code, _, err = run_cli("data", "import-dfe", "ks4", KS4_2019, "--store", tmp_path / "s.duckdb")
    assert code == 2 and "the store has no schools yet: import gias-establishments first" in err
    assert not (tmp_path / "s.duckdb").exists()


def test_gias_download_saved_as_utf16_with_semicolons_imports(tmp_path, run_cli):
    """Excel's 'Unicode text' and European-locale saves: the importer reads what read_raw detected."""
    import csv
    import io

    text = EST.read_bytes().decode("cp1252")
    path = tmp_path / "edubasealldata_excel.csv"
    rows = list(csv.reader(io.StringIO(text, newline="")))
    out = io.StringIO()
    csv.writer(out, delimiter=";", lineterminator="\r\n").writerows(rows)
    path.write_bytes(b"\xff\xfe" + out.getvalue().encode("utf-16-le"))
    code, out_text, err = run_cli("data", "import-dfe", "gias-establishments", path, "--store", tmp_path / "s.duckdb")
    assert code == 0, err
    code, ref_out, err = run_cli("data", "import-dfe", "gias-establishments", EST, "--store", tmp_path / "r.duckdb")
    assert code == 0, err
    a = Store(tmp_path / "s.duckdb").read_table("schools")
    b = Store(tmp_path / "r.duckdb").read_table("schools")
    assert a.equals(b)
