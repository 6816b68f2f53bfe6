"""`impact data import-dfe gias-trust-history`: GIAS's academies trust membership history
(academiesmatmembershipYYYYMMDD.csv) -> memberships with leaving dates, one row per spell.

The fixture is written here, in Windows-1252, on top of the GIAS fixtures of
tests/data/dfe (README.md there) with three more academies appended to the
establishments file. Every school and trust is invented; each quirk of the real file
has rows of its own (see HISTORY), and the expected tables are derived by hand.
"""

from __future__ import annotations

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
NaT = pd.NaT

# academies appended to the establishments fixture (its 25 columns, Windows-1252)
MORE_ACADEMIES = [
    "100010,390,Gateshead,4010,Moor Lane Academy,Academy converter,Academies,Open,Academy Converter,01/09/2011,"
    "Not applicable,,Primary,,,,,,,,,North East,(England/Wales) Urban city and town,421000,561000",
    "100011,390,Gateshead,4011,Harbour Academy,Academy converter,Academies,Open,Academy Converter,01/09/2015,"
    "Not applicable,,Secondary,,,,,,,,,North East,(England/Wales) Urban city and town,422000,561500",
    "100012,390,Gateshead,4012,Quay Academy,Academy sponsor led,Academies,Open,Sponsor Led,01/09/2014,"
    "Not applicable,,Primary,,,,,,,,,North East,(England/Wales) Urban city and town,423000,562500",
]

HEADER = ("URN,LA (code),LA (name),EstablishmentNumber,EstablishmentName,TypeOfEstablishment (name),"
          "EstablishmentStatus (name),Establishment OpenDate,Establishment CloseDate,PhaseOfEducation (name),"
          "Group ID,Group UID,Group Name,Companies House Number,Group Type,Group Status,Group Open Date,"
          "Group Closed Date,Date Joined Group,Date Left Group")
CASTLE = "100003,390,Gateshead,4001,Castle Academy,Academy sponsor led,Open,01-09-2010,,Secondary"
DENE = "100004,390,Gateshead,4002,Dene Academy,Academy sponsor led,Open,01-09-2014,,Secondary"
BROOK = "140002,201,City of London,2003,Brook Primary Academy,Academy converter,Open,01-09-2013,,Primary"
MOOR = "100010,390,Gateshead,4010,Moor Lane Academy,Academy converter,Open,01-09-2011,,Primary"
HARBOUR = "100011,390,Gateshead,4011,Harbour Academy,Academy converter,Open,01-09-2015,,Secondary"
QUAY = "100012,390,Gateshead,4012,Quay Academy,Academy sponsor led,Open,01-09-2014,,Primary"
RIVERSIDE = "100006,201,City of London,8001,Riverside Sixth Form College,Further education,Open,,,16 plus"
OLD_CASTLE = "TR02002,2002,Old Castle Trust,07000002,Multi-academy trust,Closed,01-09-2012,31-03-2017"
RIVER = "TR02001,2001,River Learning Trust,07000001,Multi-academy trust,Open,01-04-2011,"
TYNE = "TR02003,2003,Tyne Schools Trust,07000003,Multi-academy trust,Open,01-09-2014,"
TRINITE = "TR07011,2005,Trinit\u00e9 Learning Trust,07000011,Multi-academy trust,Open,01-01-2019,"

# file row (the header is row 1) -> what it exercises
HISTORY = [
    f"{CASTLE},{OLD_CASTLE},01-09-2012,31-03-2017",  # 2: re-brokered: Old Castle Trust ...
    f"{CASTLE},{OLD_CASTLE},01-09-2012,31-03-2017",  # 3: ... the same row twice (merged)
    f"{CASTLE},{RIVER},01-04-2017,",  # 4: ... then River Learning Trust, still a member
    f"{DENE},{TYNE},01-09-2014,31-08-2016",  # 5: overlapping spells of one school and trust ...
    f"{DENE},{TYNE},01/06/2016,31/08/2021",  # 6: ... (and slashes): one spell 2014-09-01 to 2021-08-31
    # 7: a retired record of the same trust (Group ID with ".old"): moved to Group UID 2003, merged
    f"{DENE},TR02003.old,2903,Tyne Schools Trust,07000003,Multi-academy trust,Closed,01-09-2014,31-08-2015,"
    "01-09-2014,31-08-2015",
    f"{DENE},{RIVER},01-09-2021,",  # 8: Dene moved to River Learning Trust
    f"{DENE},{OLD_CASTLE},01-10-2016,14-11-2016",  # 9: a stay of 44 days: dropped
    f"{BROOK},{RIVER},01-09-2013,",  # 10: successor URN 140002 -> school 100002
    # 11: a single-academy trust that stayed one: not a partnership
    f"{MOOR},TR07010,7010,Moor Lane Academy Trust,07000010,Single-academy trust,Open,01-09-2012,,01-09-2012,",
    # 12: a retired Group ID with no current record in the file: dropped
    f"{MOOR},TR09999.old,9999,Moorland Schools Trust,07000099,Multi-academy trust,Closed,01-09-2011,31-08-2012,"
    "01-09-2011,31-08-2012",
    # 13: a single-academy trust that closed when it became a MAT (Trinité, same Group ID TR07011) ...
    f"{HARBOUR},TR07011,7011,Harbour Academy Trust,07000011,Single-academy trust,Closed,01-09-2015,31-12-2018,"
    "01-09-2015,31-12-2018",
    f"{HARBOUR},{TRINITE},01-01-2019,",  # 14: ... a trust the groups file lacks: created
    f"{RIVERSIDE},{RIVER},01-09-2016,",  # 15: not a school of the store (further education)
    f"{QUAY},{TYNE},15-08-2014,",  # 16: joined before the trust and school opened; no Date Left Group ...
    f"{QUAY},{TRINITE},01-04-2020,",  # 17: ... but joined Trinité: the Tyne spell ends 2020-03-31
]


def run(*args):
    from evaluation.cli import main

    return main([str(a) for a in args])


def d(text):
    return pd.Timestamp(text) if text else NaT


def rows(frame: pd.DataFrame) -> list[tuple]:
    return [tuple(None if pd.isna(v) else v for v in rec) for rec in frame.itertuples(index=False)]


def write_history(path: Path, lines=HISTORY, header=HEADER) -> Path:
    path.write_bytes(("\r\n".join([header, *lines]) + "\r\n").encode("cp1252"))
    return path


@pytest.fixture(scope="module")
def gias_cache(tmp_path_factory) -> Path:
    """A store after the four GIAS imports (establishments with three more academies)."""
    root = tmp_path_factory.mktemp("trust_history")
    est = root / EST.name
    text = EST.read_bytes().decode("cp1252").rstrip("\r\n")
    est.write_bytes((text + "\r\n" + "\r\n".join(MORE_ACADEMIES) + "\r\n").encode("cp1252"))
    path = root / "s.duckdb"
    for kind, file in (("gias-establishments", est), ("gias-links", LINKS), ("gias-groups", GROUPS),
                       ("gias-group-links", GROUP_LINKS)):
        assert run("data", "import-dfe", kind, file, "--store", path) == 0, kind
    return path


@pytest.fixture
def gias_store(gias_cache, tmp_path) -> Store:
    dest = tmp_path / "s.duckdb"
    shutil.copy(gias_cache, dest)
    return Store(dest)


@pytest.fixture(scope="module")
def history_store(gias_cache, tmp_path_factory) -> Store:
    root = tmp_path_factory.mktemp("with_history")
    path = root / "s.duckdb"
    shutil.copy(gias_cache, path)
    file = write_history(root / "academiesmatmembership20230901.csv")
    assert run("data", "import-dfe", "gias-trust-history", file, "--store", path) == 0
    return Store(path)


def test_fixture_is_windows_1252_with_a_non_ascii_trust_name(tmp_path):
    data = write_history(tmp_path / "a.csv").read_bytes()
    assert b"Trinit\xe9 Learning Trust" in data  # é as one Windows-1252 byte, not UTF-8
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")


def test_memberships_spell_by_spell(history_store):
    m = history_store.read_table("memberships")
    assert rows(m[["urn", "partnership_id", "joined", "left"]]) == [
        (100001, "5001", d("2010-09-01"), None),  # federation (from group links): kept
        (100002, "2001", d("2013-09-01"), None),  # successor URN 140002's row
        (100002, "5001", d("2010-09-01"), d("2013-08-31")),  # federation: kept
        (100003, "2001", d("2017-04-01"), None),  # re-brokered: the second trust ...
        (100003, "2002", d("2012-09-01"), d("2017-03-31")),  # ... after the first (duplicate row merged)
        (100004, "2001", d("2021-09-01"), None),  # moved trust in 2021 ...
        (100004, "2003", d("2014-09-01"), d("2021-08-31")),  # ... 3 rows (one retired id) merged; 44 days dropped
        (100011, "2005", d("2019-01-01"), None),  # SAT became Trinité: from the MAT's joining date
        (100012, "2003", d("2014-09-01"), d("2020-03-31")),  # joined before opening -> opening; ended by ...
        (100012, "2005", d("2020-04-01"), None),  # ... joining the next trust
    ]
    assert set(m["role"]) == {"member"}


def test_a_school_that_moved_trust_has_two_ordered_spells(history_store):
    m = history_store.read_table("memberships")
    for urn in (100003, 100004, 100012):
        spells = m[m.urn == urn].sort_values("joined")
        assert len(spells) == 2
        first, second = spells.iloc[0], spells.iloc[1]
        assert pd.notna(first.left) and pd.isna(second.left) and first.left < second.joined


def test_trust_not_in_the_groups_file_is_created_with_its_mapped_type(history_store):
    p = history_store.read_table("partnerships")
    assert rows(p[p.partnership_id == "2005"]) == [
        ("2005", "Trinit\u00e9 Learning Trust", "multi_academy_trust", True, None, d("2019-01-01"), None)]
    # single-academy trusts and retired records are not partnerships
    assert not {"7010", "7011", "2903", "9999"} & set(p.partnership_id)
    assert len(p) == 7


def test_provenance_counts_each_rule(history_store):
    imports = history_store.read_imports()
    row = imports[(imports.source_file == "academiesmatmembership20230901.csv")
                  & (imports.table_name == "memberships")].iloc[0]
    assert (row.rows_read, row.rows_kept) == (16, 11)
    notes = row.notes.split("; ")
    assert notes[:2] == ["kind gias-trust-history", "rows read 16, kept 11, rejected 5"]
    assert sorted(n for n in notes if n.startswith("rejected ")) == sorted([
        "rejected 1 row: URN not among the imported schools (not in the GIAS establishments imported, or not a "
        "school in England)",
        "rejected 1 row: a stay of under 90 days in the trust (after merging its rows and ending it when the school "
        "joined its next trust): dropped (row 9)",
        "rejected 1 row: retired Group ID (ending '.old') with no current record of the trust in the file (row 12)",
        "rejected 1 row: single-academy trust that closed when it became a multi-academy trust (same Group ID) or "
        "when the school joined one within 1 day(s): not a partnership, the school's membership starts when it "
        "joined the multi-academy trust",
        "rejected 1 row: single-academy trust: one school, not a partnership",
    ])
    assert notes[7:] == [
        "8 spell(s) of 5 school(s) from 11 row(s): 3 with a leaving date, 3 school(s) in more than one trust "
        "(moved trust)",
        "3 row(s) merged into another row's spell of the same school and trust (duplicated or overlapping, or "
        "re-joining within 1 day(s))",
        "1 row(s) of retired Group IDs moved to the trust's current record: TR02003.old -> Group UID 2003",
        "1 spell(s) ended the day before the school joined its next trust (no Date Left Group, or one after that "
        "joining date)",
        "1 joining date(s) before the trust or the school opened: set to the opening date",
        "1 partnership(s) created from the file's group columns (not among the imported groups): 2005",
        "4 membership(s) of multi_academy_trust of the file's schools replaced by the history, 2 other "
        "membership(s) kept",
    ]
    created = imports[(imports.source_file == "academiesmatmembership20230901.csv")
                      & (imports.table_name == "partnerships")].iloc[0]
    assert created.rows_kept == 1


def test_json_report(gias_store, tmp_path, capsys):
    file = write_history(tmp_path / "academiesmatmembership20230901.csv")
    assert run("data", "import-dfe", "gias-trust-history", file, "--store", gias_store.path, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["kind"], report["rows_read"], report["rows_kept"], report["rows_rejected"]) == \
        ("gias-trust-history", 16, 11, 5)
    assert report["tables"] == {"partnerships": 7, "memberships": 10}


def test_reimporting_the_same_file_changes_nothing(history_store, tmp_path):
    before = history_store.read_table("memberships")
    path = tmp_path / "s.duckdb"
    shutil.copy(history_store.path, path)
    file = write_history(tmp_path / "academiesmatmembership20230901.csv")
    assert run("data", "import-dfe", "gias-trust-history", file, "--store", path) == 0
    pd.testing.assert_frame_equal(Store(path).read_table("memberships"), before)


def test_sat_closing_as_the_school_joins_a_mat_leaving_date_from_closure_and_unknown_type(gias_store, tmp_path):
    lines = list(HISTORY)
    # Moor Lane's SAT closed 31-08-2019 (no Date Left Group) and the school joined River Learning Trust the next day
    lines[9] = lines[9].replace("Single-academy trust,Open,01-09-2012,,01-09-2012,",
                                "Single-academy trust,Closed,01-09-2012,31-08-2019,01-09-2012,")
    lines.append(f"{MOOR},{RIVER},01-09-2019,")  # row 18
    lines[1] = lines[1].replace("01-09-2012,31-03-2017", "01-09-2012,")  # row 3: left = the trust's closing date
    lines.append(f"{CASTLE},TR08001,8001,Castle Cluster,,Cluster,Open,01-09-2018,,01-09-2018,")  # row 19
    file = write_history(tmp_path / "academiesmatmembership20230901.csv", lines)
    assert run("data", "import-dfe", "gias-trust-history", file, "--store", gias_store.path) == 0
    m = gias_store.read_table("memberships")
    assert rows(m[m.urn.isin([100003, 100010])][["urn", "partnership_id", "joined", "left"]]) == [
        (100003, "2001", d("2017-04-01"), None), (100003, "2002", d("2012-09-01"), d("2017-03-31")),
        (100010, "2001", d("2019-09-01"), None)]
    notes = gias_store.read_imports().notes.iloc[-1].split("; ")
    assert "rows read 18, kept 12, rejected 6" in notes
    assert ("rejected 2 rows: single-academy trust that closed when it became a multi-academy trust (same Group ID) "
            "or when the school joined one within 1 day(s): not a partnership, the school's membership starts when "
            "it joined the multi-academy trust") in notes
    assert not any("single-academy trust: one school" in n for n in notes)
    assert ("rejected 1 row: Group Type 'Cluster' is not a known GIAS group type (data_schemas/dfe_mappings.toml "
            "[group_type]): skipped (row 19)") in notes
    assert "1 leaving date(s) taken from the URN's or the trust's closing date (no Date Left Group)" in notes


def test_a_file_whose_rows_are_all_rejected_keeps_the_other_memberships(gias_store, tmp_path):
    before = gias_store.read_table("memberships")
    file = write_history(tmp_path / "academiesmatmembership20230901.csv", [HISTORY[9]])  # Moor Lane's SAT
    assert run("data", "import-dfe", "gias-trust-history", file, "--store", gias_store.path) == 0
    pd.testing.assert_frame_equal(gias_store.read_table("memberships"), before)
    notes = gias_store.read_imports().notes.iloc[-1].split("; ")
    assert "rows read 1, kept 0, rejected 1" in notes
    assert "0 spell(s) of 0 school(s) from 0 row(s): 0 with a leaving date, 0 school(s) in more than one trust " \
           "(moved trust)" in notes


# ---------------------------------------------------------------------------- bad input: exit 2, store unchanged


def _fails_unchanged(run_cli, store: Store, *args) -> str:
    before = store.path.read_bytes()
    code, out, err = run_cli("data", "import-dfe", *args, "--store", store.path)
    assert code == 2, (out, err)
    assert "Traceback" not in err
    assert store.path.read_bytes() == before
    return err


def test_malformed_date_names_file_row_column_value_and_expected(run_cli, gias_store, tmp_path):
    lines = list(HISTORY)
    lines[4] = lines[4].replace("31/08/2021", "31/13/2021")  # file row 6
    file = write_history(tmp_path / "academiesmatmembership20230901.csv", lines)
    err = _fails_unchanged(run_cli, gias_store, "gias-trust-history", file)
    assert ("academiesmatmembership20230901.csv, row 6, column 'Date Left Group', value '31/13/2021': expected a "
            "date (DD-MM-YYYY or DD/MM/YYYY)") in err


def test_header_only_file(run_cli, gias_store, tmp_path):
    file = write_history(tmp_path / "academiesmatmembership20230901.csv", [])
    err = _fails_unchanged(run_cli, gias_store, "gias-trust-history", file)
    assert "academiesmatmembership20230901.csv, row 2: the file has a header but no data rows" in err


def test_history_given_as_group_links_is_refused(run_cli, gias_store, tmp_path):
    file = write_history(tmp_path / "academiesmatmembership20230901.csv")
    err = _fails_unchanged(run_cli, gias_store, "gias-group-links", file)
    assert "column 'Date Joined Group'" in err and "use KIND gias-trust-history" in err


def test_group_links_file_given_as_history(run_cli, gias_store):
    err = _fails_unchanged(run_cli, gias_store, "gias-trust-history", GROUP_LINKS)
    assert "required column 'Date Joined Group' is missing" in err


def test_history_before_establishments(run_cli, tmp_path):
    file = write_history(tmp_path / "academiesmatmembership20230901.csv")
    code, _, err = run_cli("data", "import-dfe", "gias-trust-history", file, "--store", tmp_path / "s.duckdb")
    assert code == 2 and "the store has no schools yet: import gias-establishments first" in err
