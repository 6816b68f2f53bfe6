"""Round trip: the synthetic national panel written as DfE downloads
(``evaluation.data.dfe.export``), imported file by file with ``impact data import-dfe``
into a store that holds nothing else, gives back the panel's tables (up to what the
formats cannot carry, see the exporter's docstring), and ``impact run`` works on it.

Expected values are derived from the generated panel, never from printed output.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evaluation.data.calendar import first_exposed_year
from evaluation.data.dfe.export import GROUP_TYPE, export_dfe
from evaluation.data.dfe.mappings import in_years, performance_mappings
from evaluation.data.store import Store
from evaluation.data.synthetic import generate

SEED = 11
FAST_SCHOOLS = 1500
# 2014: the old RECTYPE numbering and the PTFSMCLA name; 2016-2019: Attainment 8 for the study
FAST_YEARS = [2014, 2016, 2017, 2018, 2019]
JOINED = (2018, 2019)
WINDOW = (-2, 0)

STUDY = """\
id = "roundtrip_mat_converter_ks4"
title = "Secondary schools converting into multi-academy trusts ({g0}-{g1}), DfE files only"
question = "Did secondary schools that converted into a multi-academy trust improve their Attainment 8 scores?"

[cohort]
partnership_types = ["multi_academy_trust"]
sponsor_led = false
joined_between = [{g0}, {g1}]
phase = "secondary"

[outcome]
name = "ks4_attainment8"
window = [{lo}, {hi}]

[comparison]
pool = "never"
exclude_types = ["multi_academy_trust"]

[matching]
method = "nearest"
# a DfE-only store has no EAL, SEN or Ofsted grades and one census year of pupils/FSM
covariates = ["pre_y1", "pre_y2", "pre_level", "urban"]
ratio = 3
caliper = 0.5

[estimators]
use = {estimators}
primary = "callaway_santanna"

[inference]
cluster = "partnership"
seed = 20240901

[disclosure]  # a handful of schools on synthetic data: below the default nothing could be written; at 1 the
threshold = 1  # sample flow is published in full (at 2 a reason of 1 school would withhold it), which the test reads
reason = "a round trip of the importers on synthetic data; nothing here is published"
"""


def cli(*args) -> int:
    from evaluation.cli import main

    return main([str(a) for a in args])


def build(tmp: Path, n_schools: int, years, ks2_years=None):
    """Generate, export and import (only DfE files); returns (panel, exported files, store)."""
    panel = generate(SEED, n_schools)
    files = export_dfe(panel, tmp / "downloads", years=years)
    store_path = tmp / "impact.duckdb"
    for kind, path in files.steps:
        if kind == "ks2" and ks2_years is not None and int(path.parent.name[-4:]) not in ks2_years:
            continue
        assert cli("data", "import-dfe", kind, path, "--store", store_path) == 0, (kind, path)
    return panel, files, Store(store_path)


@pytest.fixture(scope="module")
def fast(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dfe_roundtrip")
    panel, files, store = build(tmp, FAST_SCHOOLS, FAST_YEARS, ks2_years={2019})
    return tmp, panel, files, store


# ---------------------------------------------------------------------------- expectations from the panel

def carried(panel) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The panel's partnerships and memberships of the types GIAS registers."""
    p = panel.partnerships[panel.partnerships["type"].isin(list(GROUP_TYPE))].copy()
    m = panel.memberships[panel.memberships["partnership_id"].isin(p["partnership_id"])].copy()
    m = m.merge(p[["partnership_id", "type"]], on="partnership_id")
    m["urn"] = m["urn"].astype(int)
    m["pid"] = m["partnership_id"].str[1:].astype(int).astype(str)  # Group UID = the partnership number
    m["joined"] = pd.to_datetime(m["joined"])
    m["left"] = pd.to_datetime(m["left"].replace("", None))
    return p, m


def published(kind: str, year: int) -> dict[str, str]:
    """Our field -> DfE column for the year (the fields DfE published that year)."""
    out = {}
    for field, options in performance_mappings()[kind]["columns"].items():
        col = next((o["column"] for o in options if in_years(o, year)), None)
        if col:
            out[field] = col
    return out


def expected_cohort(panel, g0: int, g1: int) -> int:
    """Secondary schools whose first non-sponsor-led trust membership is first exposed in g0..g1."""
    p = panel.partnerships
    conv = p[(p["type"] == "multi_academy_trust") & (p["sponsor_led"] == "false")]["partnership_id"]
    m = panel.memberships[panel.memberships["partnership_id"].isin(conv)]
    m = m.assign(g=first_exposed_year(m["joined"])).sort_values(["urn", "joined", "partnership_id"])
    first = m.drop_duplicates("urn")
    secondary = set(panel.schools.loc[panel.schools["phase"] == "secondary", "urn"])
    return int((first["g"].between(g0, g1) & first["urn"].isin(secondary)).sum())


# ---------------------------------------------------------------------------- GIAS tables

def test_schools_come_back_one_per_school_across_urn_changes(fast):
    _, panel, files, store = fast
    got = store.read_table("schools")
    exp = panel.schools
    assert len(got) == len(exp)
    assert files.successor_urn, "the export should give converters a new URN"
    got = got.set_index(got["urn"].astype(int)).sort_index()
    exp = exp.set_index(exp["urn"].astype(int)).sort_index()
    assert got.index.equals(exp.index)  # the stable id is the panel's (predecessor) URN
    for col in ["name", "la_name", "region", "phase", "establishment_type", "urban_rural"]:
        assert got[col].astype(str).tolist() == exp[col].tolist(), col
    for col in ["la_code", "easting", "northing"]:
        assert got[col].astype(int).tolist() == exp[col].astype(int).tolist(), col
    for col in ["opened", "closed"]:
        assert got[col].dt.strftime("%Y-%m-%d").fillna("").tolist() == exp[col].tolist(), col
    links = store.read_extra("school_urn_links")
    assert dict(zip(links["urn"].astype(int), links["school_urn"].astype(int))) == \
        {new: old for old, new in files.successor_urn.items()}


def test_partnerships_of_the_types_gias_registers(fast):
    _, panel, _, store = fast
    exp, _ = carried(panel)
    got = store.read_table("partnerships").set_index("partnership_id")
    exp = exp.set_index(exp["partnership_id"].str[1:].str.lstrip("0"))
    assert sorted(got.index) == sorted(exp.index)
    got = got.loc[exp.index]
    assert got["name"].tolist() == exp["name"].tolist()
    assert got["type"].astype(str).tolist() == exp["type"].tolist()
    assert got["formal"].map(lambda v: str(bool(v)).lower()).tolist() == exp["formal"].tolist()
    # sponsor_led comes back through the School sponsor links (trusts only)
    sl = got["sponsor_led"].map(lambda v: "" if pd.isna(v) else str(bool(v)).lower())
    assert sl.tolist() == exp["sponsor_led"].tolist()
    assert (exp["sponsor_led"] == "true").sum() > 0
    assert got["opened"].dt.strftime("%Y-%m-%d").tolist() == exp["opened"].tolist()
    assert got["closed"].dt.strftime("%Y-%m-%d").fillna("").tolist() == exp["closed"].tolist()


def test_memberships_join_dates_exact_leaving_dates_up_to_rebrokering(fast):
    _, panel, _, store = fast
    _, exp = carried(panel)
    got = store.read_table("memberships")
    assert len(got) == len(exp)
    got = got.assign(urn=got["urn"].astype(int), pid=got["partnership_id"].astype(str))
    key = ["urn", "pid", "joined"]
    both = exp.merge(got[key + ["left", "role"]], on=key, how="outer", suffixes=("", "_got"), indicator=True)
    assert (both["_merge"] == "both").all(), both[both["_merge"] != "both"].head()
    assert set(both["role_got"].astype(str)) == {"member"}  # GIAS does not record lead schools
    # GIAS has no leaving date: the importer takes the earliest of the school's closing, the group's
    # closing and the day before the school's next join of the same type (a re-brokered academy)
    both = both.sort_values(["urn", "type", "joined"])
    next_join = both.groupby(["urn", "type"])["joined"].shift(-1)
    school_closed = both["urn"].map(panel.schools.set_index(panel.schools["urn"].astype(int))["closed"])
    group_closed = both["partnership_id"].map(panel.partnerships.set_index("partnership_id")["closed"])
    rule = pd.concat([pd.to_datetime(school_closed.replace("", None)), pd.to_datetime(group_closed.replace("", None)),
                      next_join - pd.Timedelta(days=1)], axis=1).min(axis=1)
    assert both["left_got"].fillna(pd.Timestamp(0)).tolist() == rule.fillna(pd.Timestamp(0)).tolist()
    # which is the panel's date except for re-brokered schools, members leaving a group that carries on,
    # and (a quirk of the generator) members of a dissolved group whose leaving date is after its closing
    same = both["left_got"].fillna(pd.Timestamp(0)) == both["left"].fillna(pd.Timestamp(0))
    rebrokered = next_join.notna()
    left_early = both["left"].notna() & (both["left"] < rule)
    after_close = both["left"].notna() & (both["left"] > pd.to_datetime(group_closed.replace("", None)))
    assert rebrokered.sum() > 0
    odd = both[~(same | rebrokered | left_early | after_close)]
    assert odd.empty, odd[["urn", "partnership_id", "type", "joined", "left", "left_got"]].head()
    assert same.mean() > 0.9


def test_census_context_for_the_snapshot_year(fast):
    _, panel, files, store = fast
    sy = store.read_table("school_years", where=f"year = {files.census_year}")
    exp = panel.school_years[panel.school_years["year"] == str(files.census_year)]
    assert len(sy) == len(exp) > 0
    merged = exp.assign(urn=exp["urn"].astype(int)).merge(sy.assign(urn=sy["urn"].astype(int)), on="urn",
                                                          suffixes=("", "_got"))
    assert len(merged) == len(exp)
    assert merged["pupils_got"].astype(int).tolist() == merged["pupils"].astype(int).tolist()
    fsm = pd.to_numeric(merged["fsm_pct"], errors="coerce")
    assert np.allclose(merged["fsm_pct_got"].astype(float), fsm, equal_nan=True)
    missing = store.read_missing()
    x = missing[(missing["column_name"] == "fsm_pct") & (missing["year"] == files.census_year)]
    assert sorted(x["urn"].astype(int)) == sorted(merged.loc[merged["fsm_pct"] == "x", "urn"])
    assert set(x["code"]) <= {"x"}


# ---------------------------------------------------------------------------- performance tables

@pytest.mark.parametrize("kind,year", [("ks4", 2014), ("ks4", 2016), ("ks4", 2019), ("ks2", 2019)])
def test_performance_values_and_markers(fast, kind, year):
    _, panel, _, store = fast
    fields = published(kind, year)
    eligible = f"{kind}_eligible_pupils"
    exp = panel.school_years[(panel.school_years["year"] == str(year)) & (panel.school_years[eligible] != "")]
    got = store.read_table("school_years", where=f"year = {year}")
    got = got[got[eligible].notna()].set_index(got[got[eligible].notna()]["urn"].astype(int))
    exp = exp.set_index(exp["urn"].astype(int))
    assert sorted(got.index) == sorted(exp.index)
    got = got.loc[exp.index]
    missing = store.read_missing()
    missing = missing[missing["year"] == year]
    for field in fields:
        values = pd.to_numeric(exp[field], errors="coerce")
        assert np.allclose(got[field].astype(float), values, equal_nan=True), field
        markers = exp[field][values.isna()]
        kept = missing[missing["column_name"] == field]
        kept = kept.set_index(kept["urn"].astype(int))
        assert kept["code"].sort_index().to_dict() == markers.sort_index().to_dict(), field
    # columns DfE did not publish that year stay missing (e.g. Attainment 8 before 2016)
    unpublished = [c for c in performance_mappings()[kind]["columns"] if c not in fields]
    for field in unpublished:
        assert got[field].isna().all(), field


def test_provenance_counts_the_total_rows(fast):
    _, panel, _, store = fast
    imports = store.read_imports()
    notes = imports.loc[imports["source_path"].str.endswith("2013-2014/england_ks4final.csv"), "notes"].iloc[-1]
    sy = panel.school_years[(panel.school_years["year"] == "2014") & (panel.school_years["ks4_eligible_pupils"] != "")]
    las = panel.schools.set_index("urn").loc[sy["urn"], "la_code"].nunique()
    # 2014: RECTYPE 3 = LA, 4 and 5 = national; PTFSMCLA is the disadvantage column's name
    assert f"rows read {len(sy) + las + 2}, kept {len(sy)}, rejected {las + 2}" in notes
    assert f"rejected {las} rows: not a school (RECTYPE 3: local authority)" in notes
    assert "column PTFSMCLA read as ks4_disadvantaged_pct" in notes


# ---------------------------------------------------------------------------- impact run on the DfE-only store

def run_study(tmp: Path, store: Store, estimators: list[str]) -> dict:
    spec = tmp / "roundtrip_mat_converter_ks4.toml"
    spec.write_text(STUDY.format(g0=JOINED[0], g1=JOINED[1], lo=WINDOW[0], hi=WINDOW[1],
                                 estimators=json.dumps(estimators)), encoding="utf-8")
    results = tmp / "results"
    assert cli("run", spec, "--store", store.path, "--results", results) == 0
    path = results / "roundtrip_mat_converter_ks4" / "result.json"
    assert path.exists()
    return json.loads(path.read_text(encoding="utf-8"))


def test_impact_run_on_a_store_built_only_from_dfe_files(fast):
    tmp, panel, _, store = fast
    assert "truth_effects" not in store.tables()  # nothing from `impact data synthesize`
    result = run_study(tmp, store, ["twfe", "callaway_santanna"])
    counts = result["counts"]
    # the memberships of multi-academy trusts survive the formats exactly, so the cohort does too
    assert counts["treated_found"] == expected_cohort(panel, *JOINED) > 0
    assert counts["treated_analysed"] > 0
    assert result["outcome"]["data_years"] == [min(FAST_YEARS), 2024]  # 2024: the GIAS census year
    assert np.isfinite(result["estimates"]["callaway_santanna"]["estimate"])
    assert "synthetic_truth" not in result or not result["synthetic_truth"]


@pytest.mark.slow
def test_full_round_trip_every_year(tmp_path):
    """3,000 schools, every year DfE published (2010-2024 without 2020-21), both key stages."""
    panel, files, store = build(tmp_path, 3000, None)
    assert files.years == [y for y in range(2010, 2025) if y not in (2020, 2021)]
    sy = store.read_table("school_years")
    exp = panel.school_years[panel.school_years["year"].astype(int).isin(files.years)]
    assert len(sy) == len(exp)
    for year in (2010, 2015, 2018, 2024):
        for kind in ("ks2", "ks4"):
            eligible = f"{kind}_eligible_pupils"
            e = exp[(exp["year"] == str(year)) & (exp[eligible] != "")].set_index("urn")[list(published(kind, year))]
            g = sy[(sy["year"] == year) & sy[eligible].notna()]
            g = g.set_index(g["urn"].astype(str)).loc[e.index, list(e.columns)]
            for col in e.columns:
                assert np.allclose(g[col].astype(float), pd.to_numeric(e[col], errors="coerce"), equal_nan=True)
    result = run_study(tmp_path, store, ["twfe", "event_study", "callaway_santanna", "sun_abraham", "imputation"])
    assert result["counts"]["treated_found"] == expected_cohort(panel, *JOINED)


# ---------------------------------------------------------------------------- the README's recipe, literally

def _readme_recipe() -> tuple[str, str, dict]:
    """(copy source, copy target, the TOML block of changes) as README.md writes them."""
    import re
    import tomllib

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    cp = re.search(r"```bash\ncp (studies/\S+\.toml) (studies/\S+\.toml)\n```", text)
    block = re.search(r"<!-- recipe:[^\n]*-->\n```toml\n(.*?)```", text, re.S)
    assert cp and block, "README.md no longer has the copy-a-study recipe this test follows"
    return cp.group(1), cp.group(2), tomllib.loads(block.group(1))


def _apply(text: str, changes: dict) -> str:
    """Change the lines the recipe names (``key = value`` under its section), as a user would by hand."""
    import json
    import re

    def value(v):
        return json.dumps(v)

    section, out = None, []
    top = {k: v for k, v in changes.items() if not isinstance(v, dict)}
    for line in text.splitlines():
        head = re.match(r"\[(\w+)\]", line)
        if head:
            section = head.group(1)
        key = re.match(r"(\w+)\s*=", line)
        wanted = top if section is None else changes.get(section, {})
        if key and isinstance(wanted, dict) and key.group(1) in wanted:
            line = f"{key.group(1)} = {value(wanted[key.group(1)])}"
        out.append(line)
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def recipe_store(tmp_path_factory):
    """A DfE-only store large enough for the README's study to clear the disclosure threshold
    (5,000 schools; the KS4 years its window and matching need)."""
    tmp = tmp_path_factory.mktemp("dfe_recipe")
    return build(tmp, 5000, [2016, 2017, 2018, 2019], ks2_years=set())[2]


def test_readme_recipe_runs_as_written(recipe_store, tmp_path):
    """Copy the example study, change the lines the README names, `impact run` it on a DfE-only store."""
    import shutil
    import tomllib

    store = recipe_store
    source, target, changes = _readme_recipe()
    root = Path(__file__).resolve().parents[1]
    (tmp_path / "studies").mkdir()
    shutil.copy(root / source, tmp_path / target)
    path = tmp_path / target
    path.write_text(_apply(path.read_text(encoding="utf-8"), changes), encoding="utf-8")
    study = tomllib.loads(path.read_text(encoding="utf-8"))
    for section, values in changes.items():  # every change the README asks for was made
        if isinstance(values, dict):
            assert {k: study[section][k] for k in values} == values, section
        else:
            assert study[section] == values
    # a DfE-only store of 1,500 schools: the study's own threshold is used, as a user's would be
    code = cli("run", path, "--store", store.path, "--results", tmp_path / "results")
    assert code == 0
    assert (tmp_path / "results" / path.stem / "result.json").exists()
