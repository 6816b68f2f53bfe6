"""DfE's code lists (RECTYPE per key stage and year, GIAS link, group and establishment
types) as DfE publishes them: every listed code is handled, an unlisted one is counted
and skipped with the reason (never a stop for the whole file), and problem listings
are grouped so a real file never prints pages of near-identical lines.

Fixtures: tests/data/dfe (README.md there); files with many rows are written here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from evaluation.data.dfe.mappings import gias_mappings, performance_mappings
from evaluation.data.store import Store
from evaluation.errors import InputError, problem

DFE = Path(__file__).parent / "data" / "dfe"
EST = DFE / "edubasealldata20230901.csv"
LINKS = DFE / "links_edubasealldata20230901.csv"
GROUPS = DFE / "allgroupsdata20230901.csv"
GROUP_LINKS = DFE / "links_groups20230901.csv"
KS2_PUBLISHED = DFE / "published" / "2018-2019" / "england_ks2final.csv"


def _run(*args) -> int:
    from evaluation.cli import main

    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def est_cache(tmp_path_factory) -> Path:
    """A store after the establishments import only (links are imported by the tests)."""
    path = tmp_path_factory.mktemp("est") / "s.duckdb"
    assert _run("data", "import-dfe", "gias-establishments", EST, "--store", path) == 0
    return path


@pytest.fixture(scope="module")
def gias_cache(est_cache, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gias") / "s.duckdb"
    shutil.copy(est_cache, path)
    for kind, file in (("gias-links", LINKS), ("gias-groups", GROUPS), ("gias-group-links", GROUP_LINKS)):
        assert _run("data", "import-dfe", kind, file, "--store", path) == 0
    return path


def _copy(cache: Path, tmp_path: Path) -> Store:
    dest = tmp_path / "s.duckdb"
    shutil.copy(cache, dest)
    return Store(dest)


# ---------------------------------------------------------------------------- the code lists


def test_rectype_lists_per_key_stage_and_year():
    from evaluation.data.dfe.performance import conventions

    def codes(kind, year):
        rect, _ = conventions(kind, year)
        return {int(k): v for k, v in rect["labels"].items()}, rect["school"]

    # KS2 2018/19 as published: LA rows 3, national rows 4 and 5; KS4 of the same year: LA 4, national 5 and 7
    ks2, school = codes("ks2", 2019)
    assert school == [1, 2] and ks2[3] == "local authority" and ks2[4].startswith("national")
    ks4, _ = codes("ks4", 2019)
    assert ks4[4] == "local authority" and ks4[7].startswith("national")
    old, _ = codes("ks4", 2014)
    assert old[3] == "local authority"
    for entry in performance_mappings()["rectype"]:
        assert entry["kinds"] and set(entry["kinds"]) <= {"ks2", "ks4"}
        assert set(entry["school"]) <= {int(k) for k in entry["labels"]}


GIAS_LINK_TYPES = [  # GIAS's LinkType list (dfe_mappings.toml cites the source and codes)
    "Predecessor", "Successor", "Predecessor - amalgamated", "Successor - amalgamated", "Result of Amalgamation",
    "Predecessor - merged", "Successor - merged", "Merged - expansion of school capacity",
    "Merged - change in age range", "Merged - expansion in school capacity and changer in age range",
    "Predecessor - Split School", "Successor - Split School", "Closure", "Expansion", "Sixth Form Centre Link",
    "Sixth Form Centre School", "Children's Centre Link", "Other", "Not applicable",
]


def test_every_gias_link_type_is_in_exactly_one_list():
    kinds = gias_mappings()["link_type"]
    lists = [kinds["predecessor"], kinds["successor"], kinds["not_followed"]]
    for t in GIAS_LINK_TYPES:
        assert sum(t in one for one in lists) == 1, t
    # which ones join URNs into one school history is explicit
    assert kinds["predecessor"] == ["Predecessor"] and kinds["successor"] == ["Successor"]


def test_group_and_establishment_type_lists_are_complete():
    maps = gias_mappings()
    for t in ("Federation", "Trust", "Collegiate", "Partnership", "School sponsor", "Multi-academy trust",
              "Umbrella trust", "Children's centres group", "Children's centres collaboration",
              "Single-academy trust", "Secure single-academy trust"):
        assert t in maps["group_type"], t
    known = set(maps["establishment_type"]) | set(maps["establishment_type_excluded"]["types"])
    for t in ("Academy secure 16 to 19", "Online provider", "Institution funded by other government department",
              "Children's centre linked site", "Free schools 16 to 19", "Academy 16-19 converter"):
        assert t in known, t
    assert len(known) == 41  # GIAS codes 01-49, 56, 57 in use


# ---------------------------------------------------------------------------- KS2 as published


def test_published_ks2_2019_layout_imports_its_school_rows(gias_cache, tmp_path, run_cli):
    store = _copy(gias_cache, tmp_path)
    code, out, err = run_cli("data", "import-dfe", "ks2", KS2_PUBLISHED, "--store", store.path, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["year"], report["rows_read"], report["rows_kept"]) == (2019, 7, 4)
    assert report["rejected"] == {"not a school (RECTYPE 3: local authority)": 1,
                                  "not a school (RECTYPE 4: national (all schools))": 1,
                                  "not a school (RECTYPE 5: national (state-funded schools))": 1}
    sy = store.read_table("school_years").set_index(["urn", "year"])
    assert sy.loc[(100001, 2019), "ks2_rwm_expected_pct"] == 55.0  # "55%"
    assert sy.loc[(100001, 2019), "ks2_rwm_high_pct"] == 7.0  # "7%"
    assert sy.loc[(100002, 2019), "ks2_eligible_pupils"] == 28  # successor URN 140002 -> school 100002
    assert pd.isna(sy.loc[(100005, 2019), "ks2_reading_progress"])
    miss = store.read_missing()
    codes = {(int(r.urn), r.column_name): r.code for r in miss.itertuples()}
    assert codes[(100002, "ks2_rwm_high_pct")] == "SUPP"
    assert codes[(100002, "ks2_reading_progress")] == "LOWCOV"
    assert codes[(100005, "ks2_maths_progress")] == "NP"
    assert codes[(100004, "ks2_rwm_expected_pct")] == "NE"


def _ks2_with_unknown_rectype(tmp_path: Path, n: int) -> Path:
    text = KS2_PUBLISHED.read_text(encoding="utf-8")
    header, first = text.splitlines()[:2]
    la = next(line for line in text.splitlines() if line.startswith("3,"))
    rows = [first] + [la.replace("3,", "9,", 1)] * n
    path = tmp_path / "2018-2019" / "england_ks2final.csv"
    path.parent.mkdir()
    path.write_text("\n".join([header] + rows) + "\n", encoding="utf-8")
    return path


def test_150_rows_of_an_unknown_code_are_one_grouped_line(gias_cache, tmp_path, run_cli):
    store = _copy(gias_cache, tmp_path)
    path = _ks2_with_unknown_rectype(tmp_path, 150)
    code, out, err = run_cli("data", "import-dfe", "ks2", path, "--store", store.path)
    assert code == 0, err
    lines = [line for line in out.splitlines() if "RECTYPE '9'" in line]
    assert lines == ["  rejected 150 rows: RECTYPE '9' is not a known KS2 2019 record type (listed: 1, 2, 3, 4, 5 "
                     "in data_schemas/dfe_performance.toml): skipped (rows 3, 4, 5, 6, 7, ...)"]
    assert len(out.splitlines()) < 10
    assert store.read_table("school_years").set_index(["urn", "year"]).loc[(100001, 2019), "ks2_eligible_pupils"] == 30
    notes = store.read_imports().notes.iloc[-1]
    assert "rows read 151, kept 1, rejected 150" in notes


def test_150_bad_values_print_one_grouped_line(est_cache, tmp_path, run_cli):
    store = _copy(est_cache, tmp_path)
    rows = ["URN,LinkURN,LinkName,LinkType,LinkEstablishedDate"]
    rows += [f"{100001 + i},n/a,Some School,Successor,01/09/2015" for i in range(150)]  # LinkURN not a URN
    path = tmp_path / "links_edubasealldata20250401.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    before = store.path.read_bytes()
    code, out, err = run_cli("data", "import-dfe", "gias-links", path, "--store", store.path)
    assert code == 2 and store.path.read_bytes() == before
    lines = err.strip().splitlines()
    assert len(lines) <= 4, err
    grouped = [line for line in lines if "LinkURN" in line]
    assert len(grouped) == 1
    assert ("links_edubasealldata20250401.csv, column 'LinkURN': expected a six-digit URN: 150 rows "
            "(rows 2, 3, 4, 5, 6, ...; value 'n/a')") in grouped[0]  # every row of the file, not the listed ones
    assert "150 problem(s) found" in err and "not shown" not in err


def test_grouping_keeps_few_problems_one_per_line():
    few = InputError([problem("expected a number", file="f.csv", row=r, column="x", value="a") for r in (2, 3)])
    assert few.render().splitlines() == ["f.csv, row 2, column 'x', value 'a': expected a number",
                                         "f.csv, row 3, column 'x', value 'a': expected a number"]
    many = InputError([problem("expected a number", file="f.csv", row=r, column="x", value=str(r))
                       for r in range(2, 12)] + [problem("expected a date", file="f.csv", row=4, column="d")])
    assert many.render().splitlines() == [
        "f.csv, column 'x': expected a number: 10 rows (rows 2, 3, 4, 5, 6, ...; values '2', '3', '4', ...)",
        "f.csv, row 4, column 'd': expected a date"]
    assert len(many.to_dict()["problems"]) == 11  # the JSON form still lists every problem


# ---------------------------------------------------------------------------- GIAS links as published


def test_links_with_every_gias_link_type(est_cache, tmp_path, run_cli):
    store = _copy(est_cache, tmp_path)
    rows = ["URN,LinkURN,LinkName,LinkType,LinkEstablishedDate",
            "140002,100002,Brook Primary School,Predecessor,01/09/2013",
            "100002,140002,Brook Primary Academy,Successor,01/09/2013"]
    others = [t for t in GIAS_LINK_TYPES if t not in ("Predecessor", "Successor")]
    for i, t in enumerate(others):
        rows.append(f"100001,{120001 + i},Linked School {i},{t},01/09/2015")
    # a type GIAS might add later: counted and skipped, not a stop
    rows += [f"100003,{130001 + i},Other School,Result of academisation,01/09/2016" for i in range(3)]
    path = tmp_path / "links_edubasealldata20250401.csv"
    path.write_bytes(("\r\n".join(rows) + "\r\n").encode("cp1252"))
    code, out, err = run_cli("data", "import-dfe", "gias-links", path, "--store", store.path, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["rows_read"] == 2 + len(others) + 3 and report["rows_kept"] == 2
    for t in others:
        assert report["rejected"][f"LinkType {t!r}: not one school continuing (merger, split or other change), "
                                  "not followed"] == 1, t
    assert report["rejected"]["LinkType 'Result of academisation' is not a known GIAS link type "
                              "(data_schemas/dfe_mappings.toml [link_type]): skipped"] == 3
    assert any("(rows " in n and "Result of academisation" in n for n in report["notes"])
    links = store.read_extra("school_urn_links")
    assert list(zip(links["urn"], links["school_urn"])) == [(140002, 100002)]  # only the one-to-one continuation


def test_unknown_establishment_type_is_counted_and_skipped(tmp_path, run_cli):
    est = tmp_path / "edubasealldata20250401.csv"
    est.write_bytes(EST.read_bytes().replace(b",Further education,", b",Academy hub,"))
    store = Store(tmp_path / "s.duckdb")
    code, out, err = run_cli("data", "import-dfe", "gias-establishments", est, "--store", store.path, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["rows_read"], report["rows_kept"]) == (10, 6)
    assert report["rejected"]["TypeOfEstablishment (name) 'Academy hub' is not a known GIAS establishment type "
                              "(data_schemas/dfe_mappings.toml [establishment_type]): skipped"] == 1
    assert 100006 not in set(store.read_table("schools")["urn"])
