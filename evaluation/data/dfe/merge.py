"""Merge a file's school_years columns into the rows already in the store.

A performance table or a census snapshot brings some columns (e.g. the KS2 ones) for
some (urn, year) keys. The merge updates exactly those columns for those keys, adds
keys that were not there (other columns missing), and leaves every other column and
key as it was, including the kept reasons for suppressed values. The merged table
is then written in one transaction like any import.
"""

from __future__ import annotations

import pandas as pd

from evaluation.data.dfe.common import ImportedTable
from evaluation.data.schema import load_schema
from evaluation.data.validate import ValidatedTable

KEY = ["urn", "year"]


def merge_school_years(store, incoming: ValidatedTable, columns: list[str], notes: list[str]) -> ImportedTable:
    """The store's school_years with ``columns`` of ``incoming`` merged in (see module docstring)."""
    schema = load_schema("school_years")
    present = store.tables()
    existing = store.read_table("school_years") if "school_years" in present else \
        pd.DataFrame({c: pd.Series(dtype=schema.column(c).pandas_dtype) for c in schema.column_names})
    missing = store.read_missing()
    missing = missing[missing["table_name"] == "school_years"]
    base = existing.set_index(KEY)
    new = incoming.data.set_index(KEY)
    added = new.index.difference(base.index)
    if len(added):
        blank = pd.DataFrame({c: pd.Series(index=added, dtype=base[c].dtype) for c in base.columns})
        base = pd.concat([base, blank]) if len(base) else blank
    for col in columns:
        base.loc[new.index, col] = new[col].astype(base[col].dtype)
    merged = base.sort_index().reset_index()[schema.column_names]
    merged = merged.astype({c: schema.column(c).pandas_dtype for c in schema.column_names})
    replaced = pd.MultiIndex.from_frame(missing[KEY].astype("int64")).isin(new.index) \
        & missing["column_name"].isin(columns).to_numpy() if len(missing) else []
    kept_missing = missing[~pd.Series(replaced, index=missing.index, dtype=bool)] if len(missing) else missing
    frames = [f for f in (kept_missing, incoming.missing) if len(f)]
    all_missing = pd.concat(frames, ignore_index=True) if frames else incoming.missing
    updated = len(new) - len(added)
    notes = notes + [f"school_years merge: {len(added)} (urn, year) rows added, {updated} updated "
                     f"(columns {', '.join(columns)}); other columns and years unchanged"]
    return ImportedTable("school_years", merged, all_missing.reset_index(drop=True), incoming.source, notes,
                         kept=len(new))
