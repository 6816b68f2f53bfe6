"""Run one DfE import against a store: read, map, validate, merge, write in one
transaction, and record provenance (kind, year, rows read/kept/rejected and why) in
the notes of the ``imports`` row.

Import order (each step reads what the earlier ones stored):
gias-establishments -> gias-links -> gias-groups -> gias-group-links ->
gias-trust-history -> ks2/ks4 (any years, any order). Re-importing a file replaces what
it produced (gias-group-links replaces every membership, so import the trust history
again after it); performance tables merge into school_years by (urn, year) and touch
only their own columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from evaluation.data.dfe import KINDS
from evaluation.data.dfe.common import ImportedTable, Provenance
from evaluation.data.dfe.establishments import (STAGING_TABLE, collapse, context_table, per_urn_from_staging,
                                                read_establishments, staging_frame)
from evaluation.data.dfe.group_links import read_group_links
from evaluation.data.dfe.groups import read_groups
from evaluation.data.dfe.links import LINKS_TABLE, load_links, rekey_tables, read_links, stable_ids, urn_map
from evaluation.data.dfe.merge import merge_school_years
from evaluation.data.dfe.performance import read_performance, resolve_year
from evaluation.data.dfe.trust_history import read_trust_history
from evaluation.data.store import Store
from evaluation.data.validate import ValidatedTable, empty_missing_table, validate
from evaluation.errors import InputError, problem


@dataclass
class ImportReport:
    kind: str
    file: str
    sha256: str | None
    year: int | None
    rows_read: int
    rows_kept: int
    rows_rejected: int
    rejected: dict[str, int]
    tables: dict[str, int]
    notes: list[str]
    store: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def import_dfe(store: Store, kind: str, path: str | Path, year: int | None = None) -> ImportReport:
    """Import one DfE file of ``kind`` into ``store`` (see module docstring)."""
    if kind not in KINDS:
        raise InputError(problem(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}"))
    if year is not None and kind not in ("ks2", "ks4"):
        raise InputError(problem(f"--year is only for the performance tables (ks2, ks4), not {kind}",
                                 file=Path(path).name))
    return _HANDLERS[kind](store, Path(path), year)


def _require(store: Store, table: str, label: str, first: str) -> pd.DataFrame:
    if table not in store.tables():
        raise InputError(problem(f"the store has no {table} yet: import {first} first", file=label))
    return store.read_extra(table) if table in (STAGING_TABLE, LINKS_TABLE) else store.read_table(table)


def _finish(store, kind, raw, prov: Provenance, tables: list[ValidatedTable], extra=None) -> ImportReport:
    notes = prov.notes()
    for vt in tables:
        vt.notes[:0] = notes
        vt.source = raw  # provenance names the downloaded file and counts all its rows
    store.write_tables(tables, extra=extra)
    return ImportReport(kind, raw.label, raw.sha256, prov.year, prov.rows_read, prov.kept, prov.tally.total,
                        dict(prov.tally.reasons), {vt.name: len(vt.data) for vt in tables}, notes, str(store.path))


def _establishments(store: Store, path: Path, year) -> ImportReport:
    raw, per_urn, tally, context = read_establishments(path)
    mapping = urn_map(load_links(store))
    schools = collapse(per_urn.data, mapping)
    merged = len(per_urn.data) - len(schools)
    extra_notes = [f"{merged} URN(s) joined to their predecessor's school by establishment links"] if merged else []
    vt = ImportedTable("schools", schools, empty_missing_table(), raw, list(per_urn.notes), kept=len(per_urn.data))
    tables = [vt]
    ctx_raw, ctx_note = context_table(raw, context, mapping)
    extra_notes.append(ctx_note)
    if ctx_raw is not None:
        ctx = validate("school_years", ctx_raw, {"schools": schools})
        tables.append(merge_school_years(store, ctx, ["pupils", "fsm_pct"], []))
    prov = Provenance("gias-establishments", raw.label, len(raw.cells), len(per_urn.data), tally,
                      extra=extra_notes)
    return _finish(store, "gias-establishments", raw, prov, tables,
                   extra={STAGING_TABLE: staging_frame(per_urn.data, mapping)})


def _links(store: Store, path: Path, year) -> ImportReport:
    raw, pairs, tally = read_links(path)
    est = _require(store, STAGING_TABLE, raw.label, "gias-establishments")
    links = stable_ids(pairs)
    mapping = urn_map(links)
    per_urn = per_urn_from_staging(est)
    schools = collapse(per_urn, mapping)
    kept_rows = sum(len(r) for r in pairs["rows"])
    vt = ImportedTable("schools", schools, empty_missing_table(), raw, [], kept=kept_rows)
    staging = staging_frame(per_urn, mapping)
    prov = Provenance("gias-links", raw.label, len(raw.cells), kept_rows, tally, extra=[
        f"{len(links)} successor URN(s) mapped to {links['school_urn'].nunique() if len(links) else 0} school(s)' "
        f"stable id (the earliest predecessor's URN); schools rebuilt: {len(schools)} rows"])
    return _finish(store, "gias-links", raw, prov, [vt] + rekey_tables(store, mapping, raw), extra={LINKS_TABLE: links, STAGING_TABLE: staging})


def _groups(store: Store, path: Path, year) -> ImportReport:
    previous = store.read_table("partnerships") if "partnerships" in store.tables() else None
    raw, vt, tally = read_groups(path, previous)
    prov = Provenance("gias-groups", raw.label, len(raw.cells), vt.rows, tally)
    return _finish(store, "gias-groups", raw, prov, [vt])


def _group_links(store: Store, path: Path, year) -> ImportReport:
    label = path.name
    partnerships = _require(store, "partnerships", label, "gias-groups")
    schools = _require(store, "schools", label, "gias-establishments")
    est = _require(store, STAGING_TABLE, label, "gias-establishments")
    mapping = urn_map(load_links(store))
    raw, memberships, updated, tally, notes = read_group_links(path, partnerships, schools, est, mapping)
    prov = Provenance("gias-group-links", raw.label, len(raw.cells), memberships.rows, tally, extra=notes)
    tables = ([updated] if updated is not None else []) + [memberships]
    return _finish(store, "gias-group-links", raw, prov, tables)


def _trust_history(store: Store, path: Path, year) -> ImportReport:
    label = path.name
    schools = _require(store, "schools", label, "gias-establishments")
    est = _require(store, STAGING_TABLE, label, "gias-establishments")
    present = store.tables()
    partnerships = store.read_table("partnerships") if "partnerships" in present else None
    memberships = store.read_table("memberships") if "memberships" in present else None
    mapping = urn_map(load_links(store))
    raw, tables, tally, kept, notes = read_trust_history(path, partnerships, schools, est, mapping, memberships)
    prov = Provenance("gias-trust-history", raw.label, len(raw.cells), kept, tally, extra=notes)
    return _finish(store, "gias-trust-history", raw, prov, tables)


def _performance(kind: str):
    def run(store: Store, path: Path, year) -> ImportReport:
        year, source = resolve_year(path, year, kind)
        schools = _require(store, "schools", path.name, "gias-establishments")
        mapping = urn_map(load_links(store))
        raw, vt, tally, fields, notes = read_performance(path, kind, year, schools, mapping)
        merged = merge_school_years(store, vt, fields, [])
        prov = Provenance(kind, raw.label, len(raw.cells), vt.rows, tally, year, source,
                          extra=notes + [f"{len(vt.missing)} suppressed or special value(s) kept with their reason"])
        return _finish(store, kind, raw, prov, [merged])
    return run


_HANDLERS = {
    "gias-establishments": _establishments,
    "gias-links": _links,
    "gias-groups": _groups,
    "gias-group-links": _group_links,
    "gias-trust-history": _trust_history,
    "ks2": _performance("ks2"),
    "ks4": _performance("ks4"),
}
