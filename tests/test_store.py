"""The DuckDB store: imports are one transaction, reads give schema dtypes, info shows provenance."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from evaluation.data.store import Store
from evaluation.errors import InputError

TABLES = ("schools", "partnerships", "memberships", "school_years")


def load_tiny(store: Store, tiny_dir) -> None:
    for t in TABLES:
        store.import_file(t, tiny_dir / f"{t}.csv")


def snapshot(store: Store) -> dict:
    """Everything observable in the store except the import timestamps."""
    out = {t: store.read_table(t) for t in TABLES}
    out["missing"] = store.read_missing()
    imports = store.read_imports()
    out["imports"] = imports.drop(columns=["imported_at"]) if len(imports) else imports
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        pd.testing.assert_frame_equal(a[k], b[k])


def file_hash(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_round_trip_dtypes_and_values(tmp_path, tiny_dir):
    store = Store(tmp_path / "s.duckdb")
    load_tiny(store, tiny_dir)
    sy = store.read_table("school_years")
    assert str(sy["urn"].dtype) == "Int64" and str(sy["fsm_pct"].dtype) == "float64"
    assert sy.loc[0, "ks2_rwm_expected_pct"] == 55.0  # "55%" read as 55
    assert pd.isna(sy.loc[1, "ks2_rwm_high_pct"])  # SUPP
    schools = store.read_table("schools")
    assert isinstance(schools["region"].dtype, pd.CategoricalDtype)
    assert str(schools["opened"].dtype) == "datetime64[s]"
    assert schools.loc[1, "opened"] == pd.Timestamp("2004-09-01")
    p = store.read_table("partnerships")
    assert p.loc[p.partnership_id == "F001", "formal"].tolist() == [True]
    missing = store.read_missing()
    assert set(missing["code"]) == {"SUPP", "LOWCOV", "NE"}
    assert missing.loc[missing.code == "NE", "column_name"].item() == "ks4_progress8"


def test_info_shows_tables_rows_years_and_provenance(tmp_path, tiny_dir, run_cli):
    path = tmp_path / "s.duckdb"
    load_tiny(Store(path), tiny_dir)
    code, out, _ = run_cli("data", "info", "--store", path, "--json")
    assert code == 0
    import json

    info = json.loads(out)
    by = {t["table"]: t for t in info["tables"]}
    assert by["school_years"]["rows"] == 4
    assert (by["school_years"]["first_year"], by["school_years"]["last_year"]) == (2016, 2017)
    src = by["schools"]["sources"][0]
    assert src["source_file"] == "schools.csv" and src["source_sha256"] == file_hash(tiny_dir / "schools.csv")
    assert src["imported_at"] and src["tool_version"]
    assert len(info["fingerprint"]) == 64
    code, out, _ = run_cli("data", "info", "--store", path)
    assert "school_years" in out and "2016-2017" in out


def test_failed_validation_leaves_store_byte_identical(tmp_path, tiny_dir):
    path = tmp_path / "s.duckdb"
    store = Store(path)
    load_tiny(store, tiny_dir)
    before_bytes, before = file_hash(path), snapshot(store)
    bad = tiny_dir / "bad.csv"
    bad.write_text((tiny_dir / "school_years.csv").read_text().replace("18.5", "180"))
    with pytest.raises(InputError):
        store.import_file("school_years", bad)
    assert file_hash(path) == before_bytes
    assert_same(snapshot(store), before)


def test_failed_import_into_a_new_store_creates_nothing(tmp_path, tiny_dir):
    path = tmp_path / "new" / "s.duckdb"
    bad = tiny_dir / "bad.csv"
    bad.write_text("urn,name\n1,x\n")
    with pytest.raises(InputError):
        Store(path).import_file("schools", bad)
    assert not path.exists()


def test_interrupted_import_rolls_back(tmp_path, tiny_dir):
    store = Store(tmp_path / "s.duckdb")
    load_tiny(store, tiny_dir)
    before = snapshot(store)
    changed = tiny_dir / "years2.csv"
    changed.write_text((tiny_dir / "school_years.csv").read_text().replace("210", "999"))

    def interrupt(_table):
        raise KeyboardInterrupt  # after the rows were written, before commit

    with pytest.raises(KeyboardInterrupt):
        store.import_file("school_years", changed, interrupt_hook=interrupt)
    assert_same(snapshot(store), before)
    store.import_file("school_years", changed)  # the store still works
    assert store.read_table("school_years").loc[0, "pupils"] == 999


def test_append_rejects_keys_already_in_store(tmp_path, tiny_dir, run_cli):
    path = tmp_path / "s.duckdb"
    load_tiny(Store(path), tiny_dir)
    code, _, err = run_cli("data", "import", "school_years", tiny_dir / "school_years.csv", "--append",
                           "--store", path)
    assert code == 2
    assert "school_years.csv, row 2, column 'year', value '2016': duplicate key: a row with urn=100001, year=2016" in err
    extra = tiny_dir / "more.csv"
    extra.write_text("urn,year,pupils\n100001,2018,215\n")
    code, out, _ = run_cli("data", "import", "school_years", extra, "--append", "--store", path)
    assert code == 0 and "imported 1 rows" in out
    assert len(Store(path).read_table("school_years")) == 5


def test_replacing_schools_may_not_orphan_memberships(tmp_path, tiny_dir):
    store = Store(tmp_path / "s.duckdb")
    load_tiny(store, tiny_dir)
    fewer = tiny_dir / "fewer.csv"
    lines = (tiny_dir / "schools.csv").read_text().splitlines()
    fewer.write_text("\n".join(lines[:-1]) + "\n")  # drop school 100004
    with pytest.raises(InputError, match="pointing at no schools row"):
        store.import_file("schools", fewer)
    assert len(store.read_table("schools")) == 4


def test_cli_import_bad_table_and_missing_store(tmp_path, run_cli, tiny_dir):
    code, _, err = run_cli("data", "info", "--store", tmp_path / "none.duckdb")
    assert code == 2 and "no store at" in err
    with pytest.raises(SystemExit) as exc:
        run_cli("data", "import", "school", tiny_dir / "schools.csv")
    assert exc.value.code == 2


def test_memberships_import_checks_against_store(tmp_path, tiny_dir, run_cli):
    path = tmp_path / "s.duckdb"
    code, _, err = run_cli("data", "import", "memberships", tiny_dir / "memberships.csv", "--store", path)
    assert code == 2 and "import schools first" in err and not path.exists()


def test_atomic_files_get_the_usual_permissions(tmp_path):
    """Written files are readable as a plain open() would leave them (mkstemp's 0600 is not kept)."""
    import os
    import stat

    from evaluation.data.files import write_text_atomic

    umask = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "a.csv", "x\n1\n")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
