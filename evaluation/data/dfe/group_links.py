"""GIAS group links (Group UID, URN, Joined date, Group Type, ...) -> memberships,
and ``sponsor_led`` for multi-academy trusts.

DfE conventions relied on: one row per (group, establishment) link, for open and
closed groups, with "Joined date" day-first (often empty for older links). The file
carries no leaving date, so:

* ``joined`` is "Joined date"; when empty it is the URN's opening date if the URN
  opened after the group did (a converter academy joining its trust at opening: the
  conversion date), otherwise the group's opening date;
* ``left`` is the earliest of: the linked URN's closing date (a maintained school's
  membership ends when it closes to convert), the group's closing date, and the day
  before the same school joins another partnership of the same type (a school is in
  one trust or federation at a time);
* ``role`` is "member" (GIAS does not record lead schools in group links);
* URNs are mapped to their school's stable id (``links.py``), so a converter's
  memberships before and after conversion belong to one school.

School sponsor links are not memberships: a multi-academy trust that runs a school
linked to a school sponsor is ``sponsor_led = true``; when the file has sponsor links,
the other trusts are ``sponsor_led = false``; without any, sponsor_led is left as it was.
"""

from __future__ import annotations

import pandas as pd

from evaluation.data.dfe.common import ImportedTable, Tally, cell, read_download, text_table
from evaluation.data.dfe.groups import group_type_rules, rules_of, unknown_group_types
from evaluation.data.dfe.links import map_urns
from evaluation.data.validate import (ProblemLog, RawTable, ValidatedTable, parse_dates, empty_missing_table,
                                      validate)

REQUIRED = ("Group UID", "URN", "Group Type")
ONE_DAY = pd.Timedelta(days=1)


def read_group_links(path, partnerships: pd.DataFrame, schools: pd.DataFrame, establishments: pd.DataFrame,
                     mapping: dict[int, int]) -> tuple[RawTable, ValidatedTable, ImportedTable | None, Tally, list]:
    """Memberships from the file, and the partnerships with sponsor_led updated (None if unchanged).

    ``establishments`` is the per-URN derived table (urn, school_urn, opened, closed)."""
    raw, columns = read_download(path, "gias-group-links", REQUIRED)
    get = lambda name: cell(raw, columns, name)  # noqa: E731
    log = ProblemLog(raw.label)
    tally = Tally()
    gtype = get("Group Type")
    unknown = unknown_group_types(gtype, tally)
    urn_text = get("URN")
    urn = pd.to_numeric(urn_text.where(urn_text != ""), errors="coerce")
    bad = urn.isna() | (urn % 1 != 0) | (urn < 100000) | (urn > 999999)
    log.add_rows(bad[bad].index, "URN", urn_text[bad], "expected a six-digit URN")
    joined_text = get("Joined date")
    joined, bad_date = parse_dates(joined_text)
    log.add_rows(bad_date[bad_date].index, "Joined date", joined_text[bad_date], "expected a date (DD/MM/YYYY)")
    log.raise_if_any("nothing was imported")
    urn = urn.astype("Int64")
    uid = get("Group UID")
    rules = group_type_rules()
    rule = rules_of(gtype)
    is_sponsor = rule.map(lambda r: bool(r.get("sets_sponsor_led")))
    is_partnership = rule.map(lambda r: r.get("partnership", True))
    for value in sorted(gtype[~is_partnership & ~unknown].unique()):
        tally.add_mask(gtype == value, rules[value.casefold()]["reason"])

    est = establishments.set_index("urn")
    known_urn = urn.isin(est.index)
    tally.add_mask(is_partnership & ~known_urn, "URN not among the imported schools (import gias-establishments "
                                               "first; non-school establishments are not imported)")
    pships = partnerships.set_index("partnership_id")
    known_group = uid.isin(pships.index)
    tally.add_mask(is_partnership & known_urn & ~known_group,
                   "Group UID not among the imported partnerships (import gias-groups first; groups proposed "
                   "to open are not imported)")
    keep = is_partnership & known_urn & known_group
    school = map_urns(urn, mapping)

    rows = pd.DataFrame({"urn": school[keep], "orig": urn[keep], "pid": uid[keep], "joined": joined[keep]})
    rows["type"] = rows["pid"].map(pships["type"]).astype(str)
    g_open = rows["pid"].map(pships["opened"])
    g_close = rows["pid"].map(pships["closed"])
    u_open = rows["orig"].map(est["opened"])
    u_close = rows["orig"].map(est["closed"])
    at_opening = rows["joined"].isna() & u_open.notna() & (g_open.isna() | (u_open >= g_open))
    fill_group = rows["joined"].isna() & ~at_opening
    rows["joined"] = rows["joined"].where(~at_opening, u_open).where(~fill_group, g_open)
    undated = rows["joined"].isna()
    tally.add_mask(undated, "no Joined date, and neither the URN's nor the group's opening date")
    rows, g_close, u_close = rows[~undated], g_close[~undated], u_close[~undated]
    dup = rows.duplicated(["urn", "pid", "joined"])
    tally.add_mask(dup, "the same school joining the same group on the same date (after following URN links)")
    rows, g_close, u_close = rows[~dup], g_close[~dup], u_close[~dup]
    rows = rows.sort_values(["urn", "type", "joined", "pid"])
    next_join = rows.groupby(["urn", "type"])["joined"].shift(-1) - ONE_DAY
    left = pd.concat([u_close.reindex(rows.index), g_close.reindex(rows.index), next_join], axis=1).min(axis=1)
    rows = rows.sort_index()
    left = left.reindex(rows.index)
    iso = lambda s: s.dt.strftime("%Y-%m-%d").fillna("")  # noqa: E731
    table = text_table(raw, {"urn": rows["urn"].astype(str), "partnership_id": rows["pid"],
                             "joined": iso(pd.to_datetime(rows["joined"])), "left": iso(pd.to_datetime(left)),
                             "role": pd.Series("member", index=rows.index)}, index=rows.index)
    memberships = validate("memberships", table, {"schools": schools, "partnerships": partnerships})
    memberships.data.index = rows.index
    notes = []
    if (at_opening).any():
        notes.append(f"{int(at_opening.sum())} join date(s) taken from the URN's opening date (joined at opening)")
    if fill_group.any():
        notes.append(f"{int((fill_group & ~undated).sum())} join date(s) taken from the group's opening date")

    updated = None
    if is_sponsor.any():
        sponsored = set(school[is_sponsor & urn.notna()].astype(int))
        mats = partnerships["type"].astype(str) == "multi_academy_trust"
        trust_of = rows.loc[rows["type"] == "multi_academy_trust"]
        led = set(trust_of.loc[trust_of["urn"].astype(int).isin(sponsored), "pid"])
        new = partnerships.copy()
        new["sponsor_led"] = new["sponsor_led"].astype("boolean")
        new.loc[mats, "sponsor_led"] = new.loc[mats, "partnership_id"].isin(led).to_numpy()
        changed = int((new["sponsor_led"].astype(object).fillna("-") !=
                       partnerships["sponsor_led"].astype(object).fillna("-")).sum())
        notes.append(f"school sponsor links: {len(led)} multi-academy trust(s) sponsor-led "
                     f"({', '.join(sorted(led)) or 'none'}), {int(mats.sum()) - len(led)} not; "
                     f"{changed} partnership(s) changed")
        updated = ImportedTable("partnerships", new.reset_index(drop=True), empty_missing_table(),
                                raw, [f"sponsor_led set from school sponsor links in {raw.label}"] + notes[-1:],
                                kept=changed)
    return raw, memberships, updated, tally, notes
