"""GIAS establishment links (URN, LinkURN, LinkType, LinkEstablishedDate) -> one
history per school across URN changes.

DfE conventions relied on: when a school converts to an academy (or otherwise
re-opens under a new registration) GIAS closes the old URN and opens a new one, and
the links file records the pair twice: on the new URN's row as LinkType
"Predecessor" (LinkURN = old URN) and on the old URN's row as "Successor" (LinkURN =
new URN). Mergers, amalgamations, splits, closures and the other GIAS link types
have their own LinkTypes (the complete list, and which of them are followed, is
``data_schemas/dfe_mappings.toml`` [link_type]) and are not one school continuing; a
LinkType in none of its lists is counted and its rows skipped, never a stop.

Decision: the panel follows the school, not the URN. Every URN in a chain of
one-to-one predecessor/successor links is mapped to the URN of the earliest
predecessor (the chain's root), which becomes the school's stable id in schools,
memberships and school_years; the original URNs stay recorded in the derived tables
``school_urn_links`` (urn -> school_urn, with the link date) and
``gias_establishments`` (one row per original URN). A URN with two successors or
two predecessors is not a one-to-one continuation: its links are not followed.
"""

from __future__ import annotations

import pandas as pd

from evaluation.data.dfe.common import Tally, cell, read_download
from evaluation.data.dfe.mappings import gias_mappings
from evaluation.data.validate import ProblemLog, RawTable, parse_dates

REQUIRED = ("URN", "LinkURN", "LinkType")
LINKS_TABLE = "school_urn_links"


def read_links(path) -> tuple[RawTable, pd.DataFrame, Tally]:
    """Read a links file; returns the raw table, the followed predecessor -> successor
    edges (predecessor_urn, urn, linked_on, row) and the tally of rows not followed."""
    raw, columns = read_download(path, "gias-links", REQUIRED)
    log = ProblemLog(raw.label)
    urn = _urns(cell(raw, columns, "URN"), "URN", log)
    link = _urns(cell(raw, columns, "LinkURN"), "LinkURN", log)
    ltype = cell(raw, columns, "LinkType")
    dates, bad = parse_dates(cell(raw, columns, "LinkEstablishedDate"))
    log.add_rows(bad[bad].index, "LinkEstablishedDate", cell(raw, columns, "LinkEstablishedDate")[bad],
                 "expected a date (DD/MM/YYYY)")
    kinds = gias_mappings()["link_type"]
    pred = {t.casefold() for t in kinds["predecessor"]}
    succ = {t.casefold() for t in kinds["successor"]}
    skip = {t.casefold() for t in kinds["not_followed"]}
    folded = ltype.str.casefold()
    tally = Tally()
    # a LinkType GIAS added since the list was written: counted and skipped, never a stop
    unknown = ~folded.isin(pred | succ | skip)
    tally.add_unknown(ltype, unknown, "LinkType", "GIAS link type", "data_schemas/dfe_mappings.toml [link_type]")
    log.raise_if_any("nothing was imported")
    for value in sorted(ltype[folded.isin(skip)].unique()):
        tally.add_mask(ltype == value, f"LinkType {value!r}: not one school continuing (merger, split or "
                                       "other change), not followed")
    is_pred = folded.isin(pred)
    is_succ = folded.isin(succ)
    edges = pd.concat([
        pd.DataFrame({"predecessor_urn": link[is_pred], "urn": urn[is_pred], "linked_on": dates[is_pred]}),
        pd.DataFrame({"predecessor_urn": urn[is_succ], "urn": link[is_succ], "linked_on": dates[is_succ]}),
    ])
    edges["row"] = edges.index
    self_link = edges["predecessor_urn"] == edges["urn"]
    tally.add_mask(self_link, "links a URN to itself")
    edges = edges[~self_link]
    pairs = (edges.sort_values(["linked_on", "row"]).groupby(["predecessor_urn", "urn"], as_index=False)
             .agg(linked_on=("linked_on", "first"), rows=("row", list)))
    n_succ = pairs.groupby("predecessor_urn")["urn"].transform("size")
    n_pred = pairs.groupby("urn")["predecessor_urn"].transform("size")
    ambiguous = (n_succ > 1) | (n_pred > 1)
    tally.add("a URN with several predecessors or successors: not a one-to-one continuation, not followed",
              sum(len(r) for r in pairs.loc[ambiguous, "rows"]))
    pairs = pairs[~ambiguous].reset_index(drop=True)
    return raw, pairs, tally


def _urns(text: pd.Series, column: str, log: ProblemLog) -> pd.Series:
    values = pd.to_numeric(text.where(text != ""), errors="coerce")
    bad = values.isna() | (values % 1 != 0) | (values < 100000) | (values > 999999)
    log.add_rows(bad[bad].index, column, text[bad], "expected a six-digit URN")
    return values.where(~bad).astype("Int64")


def stable_ids(pairs: pd.DataFrame) -> pd.DataFrame:
    """Map every successor URN to the root of its chain.

    Returns one row per successor: urn, school_urn (the root), predecessor_urn, linked_on."""
    parent = dict(zip(pairs["urn"].astype(int), pairs["predecessor_urn"].astype(int)))
    rows = []
    for rec in pairs.itertuples(index=False):
        root, seen = int(rec.urn), set()
        while root in parent and root not in seen:
            seen.add(root)
            root = parent[root]
        if root in seen:  # a cycle: no earliest predecessor to anchor on
            continue
        rows.append((int(rec.urn), root, int(rec.predecessor_urn), rec.linked_on))
    out = pd.DataFrame(rows, columns=["urn", "school_urn", "predecessor_urn", "linked_on"])
    out["linked_on"] = pd.to_datetime(out["linked_on"]).astype("datetime64[s]")
    return out.astype({"urn": "int64", "school_urn": "int64", "predecessor_urn": "int64"}) \
        .sort_values("urn").reset_index(drop=True)


def urn_map(links: pd.DataFrame | None) -> dict[int, int]:
    """urn -> stable school id from a ``school_urn_links`` table (empty if none)."""
    if links is None or not len(links):
        return {}
    return dict(zip(links["urn"].astype(int), links["school_urn"].astype(int)))


def load_links(store) -> pd.DataFrame | None:
    """The store's ``school_urn_links`` table, or None before any links import."""
    if LINKS_TABLE not in store.tables():
        return None
    return store.read_extra(LINKS_TABLE)


def map_urns(urns: pd.Series, mapping: dict[int, int]) -> pd.Series:
    """Replace each URN by its school's stable id (unchanged where there is no link)."""
    if not mapping:
        return urns
    return urns.map(lambda u: mapping.get(int(u), int(u)) if pd.notna(u) else u).astype(urns.dtype)


def rekey_tables(store, mapping: dict[int, int], raw: RawTable) -> list:
    """Stored memberships and school_years rows under a successor URN, moved to the school's stable id.

    Where a predecessor and its successor both have a school_years row for a year, the
    successor's row is kept (and its kept reasons for suppressed values)."""
    from evaluation.data.dfe.common import ImportedTable
    from evaluation.data.validate import empty_missing_table

    out = []
    present = store.tables()
    for table, key in (("memberships", ["urn", "partnership_id", "joined"]), ("school_years", ["urn", "year"])):
        if table not in present:
            continue
        data = store.read_table(table)
        moved = data["urn"].isin(list(mapping))
        if not moved.any():
            continue
        data["is_root"] = ~moved
        data["urn"] = map_urns(data["urn"], mapping)
        data = data.sort_values("is_root", kind="stable")
        dropped = data[data.duplicated(key, keep="first")]
        data = data.drop(dropped.index).drop(columns="is_root").sort_values(key).reset_index(drop=True)
        missing = store.read_missing()
        missing = missing[missing["table_name"] == table].copy()
        if len(missing) and table == "school_years":
            gone = set(zip(dropped["urn"].astype(int), dropped["year"].astype(int)))
            old_urn = missing["urn"].astype(int)
            missing["urn"] = map_urns(missing["urn"], mapping)
            stale = [o not in mapping and (int(u), int(y)) in gone
                     for o, u, y in zip(old_urn, missing["urn"], missing["year"])]
            missing = missing[~pd.Series(stale, index=missing.index, dtype=bool)]
            missing["row_key"] = "urn=" + missing["urn"].astype(str) + ", year=" + missing["year"].astype(str)
        note = (f"{int(moved.sum())} {table} row(s) moved from successor URNs to the school's stable id"
                + (f"; {len(dropped)} predecessor row(s) replaced by the successor's" if len(dropped) else ""))
        out.append(ImportedTable(table, data, missing.reset_index(drop=True) if len(missing)
                                 else empty_missing_table(), raw, [note], kept=0))
    return out
