"""GIAS groups (allgroupsdataYYYYMMDD.csv) -> partnerships.

DfE conventions relied on: one row per group with "Group UID" (the id we keep as
partnership_id), "Group Name", "Group Type" and "Group Status"; the opening date is
"Open date" (group links files call it "Incorporated on (open date)") and the closing
date "Closed Date", both day-first. Group types map onto partnership types by
``data_schemas/dfe_mappings.toml``: multi-academy trusts, federations (hard, unless
the name says soft), foundation and umbrella trusts, collegiate and partnership
groups; single-academy trusts and school sponsors are not partnerships (counted as
rejected with the reason; sponsors set ``sponsor_led`` when group links are imported).
A group type in none of the lists (one GIAS added later) is counted and its rows
skipped with the type and first rows in the notes, never a stop.
"""

from __future__ import annotations

import pandas as pd

from evaluation.data.dfe.common import Tally, cell, read_download, text_table
from evaluation.data.dfe.mappings import gias_mappings
from evaluation.data.validate import ProblemLog, RawTable, ValidatedTable, validate

REQUIRED = ("Group UID", "Group Name", "Group Type")


def group_type_rules() -> dict[str, dict]:
    """Case-folded GIAS Group Type -> its rule from dfe_mappings.toml (with ``name`` added)."""
    return {k.casefold(): dict(v, name=k) for k, v in gias_mappings()["group_type"].items()}


#: The rule for a Group Type no list names: not a partnership (its rows are counted and skipped).
UNKNOWN_RULE = {"partnership": False}


def unknown_group_types(types: pd.Series, tally: Tally) -> pd.Series:
    """Rows of a Group Type GIAS added since the list was written: counted with the
    type and first rows, and skipped (never a stop for the whole file)."""
    unknown = ~types.str.casefold().isin(set(group_type_rules()))
    tally.add_unknown(types, unknown, "Group Type", "GIAS group type", "data_schemas/dfe_mappings.toml [group_type]")
    return unknown


def rules_of(types: pd.Series) -> pd.Series:
    """Each row's Group Type rule (``UNKNOWN_RULE`` for a type no list names)."""
    rules = group_type_rules()
    return types.str.casefold().map(lambda t: rules.get(t, UNKNOWN_RULE))


def read_groups(path, previous: pd.DataFrame | None = None) -> tuple[RawTable, ValidatedTable, Tally]:
    """Validate the file's partnership groups. ``previous`` (the store's partnerships)
    supplies sponsor_led for groups already known, which only group links can tell."""
    raw, columns = read_download(path, "gias-groups", REQUIRED)
    get = lambda name: cell(raw, columns, name)  # noqa: E731
    log = ProblemLog(raw.label)
    tally = Tally()
    gtype = get("Group Type")
    unknown = unknown_group_types(gtype, tally)
    status = get("Group Status")
    st = gias_mappings()["group_status"]
    ok_status = {s.casefold() for s in st["imported"]} | {""}
    bad_status = ~status.str.casefold().isin(ok_status | {s.casefold() for s in st["excluded"]})
    log.add_rows(bad_status[bad_status].index, "Group Status", status[bad_status],
                 "unknown Group Status: expected one of " + ", ".join(st["imported"] + st["excluded"]))
    log.raise_if_any("nothing was imported")
    rules = group_type_rules()
    rule = rules_of(gtype)
    is_partnership = rule.map(lambda r: r.get("partnership", True))
    for value in sorted(gtype[~is_partnership & ~unknown].unique()):
        tally.add_mask(gtype == value, rules[value.casefold()]["reason"])
    excluded = is_partnership & ~status.str.casefold().isin(ok_status)
    for value in sorted(status[excluded].unique()):
        tally.add_mask(excluded & (status == value), f"group not open (Group Status {value!r})")
    keep = is_partnership & ~excluded
    name = get("Group Name")
    ptype = rule.map(lambda r: r.get("type", ""))
    soft = rule.map(lambda r: r.get("soft_if_name_contains", "")).astype(str)
    is_soft = pd.Series([bool(s) and s.casefold() in n.casefold() for s, n in zip(soft, name)], index=name.index)
    ptype = ptype.where(~is_soft, "federation_soft")
    formal = rule.map(lambda r: "true" if r.get("formal") else "false").where(~is_soft, "false")
    uid = get("Group UID")
    sponsor = pd.Series("", index=uid.index, dtype=object)
    if previous is not None and len(previous):
        known = previous.dropna(subset=["sponsor_led"]).set_index("partnership_id")["sponsor_led"]
        sponsor = uid.map(lambda u: ("true" if known[u] else "false") if u in known.index else "")
    opened = get("Open date")
    if (opened == "").all():
        opened = get("Incorporated on (open date)")
    table = text_table(raw, {"partnership_id": uid, "name": name, "type": ptype, "formal": formal,
                             "sponsor_led": sponsor.where(ptype == "multi_academy_trust", ""),
                             "opened": opened, "closed": get("Closed Date")})
    table.cells = table.cells[keep]
    vt = validate("partnerships", table)
    return raw, vt, tally
