"""GIAS academies trust membership history (academiesmatmembershipYYYYMMDD.csv) ->
memberships with leaving dates, one row per spell (and partnerships for trusts the
store has not seen).

DfE conventions relied on: one row per academy URN and trust record it was ever
linked to, with "URN", "EstablishmentName", "Group ID" (the trust reference,
``TR01234``), "Group UID" (the id we keep as partnership_id, as in the groups file),
"Group Name", "Group Type" ("Multi-academy trust", "Single-academy trust", ...),
"Group Status", "Group Open Date", "Group Closed Date", "Date Joined Group" and
"Date Left Group" (empty while the academy is a member), plus the establishment's
own columns ("Establishment OpenDate", "Establishment CloseDate", ...), which this
importer does not need: the URN's dates come from the imported establishments.
Dates are day-first (``01-09-2014`` or ``01/09/2014``); the file is Windows-1252 (read
by ``evaluation.data.csv_input``, like every DfE download). Column names as used by
public analyses of the download (e.g. the ``Date Joined Group`` / ``Group Closed
Date`` names of scripts reading ``academiesmatmembership``); an assumption where
GIAS's own documentation is silent.

The real file's quirks, each with its rule (thresholds in
``data_schemas/dfe_mappings.toml`` [trust_history]), counted in the provenance notes:

* **Successor URNs**: every URN is mapped to its school's first URN (``links.py``),
  so an academy re-registered under a new URN keeps one history.
* **Several rows for one school and trust** (duplicated rows, overlapping spells, a
  URN change recorded as leaving and re-joining): spells of one school in one trust
  that overlap or follow within ``merge_gap_days`` of each other are merged into one
  spell from the earliest joining date to the latest leaving date (open if any is).
* **Stays of a few weeks**: a spell shorter than ``min_spell_days`` (leaving date
  minus joining date; open spells are never short) is dropped, after merging and
  again after the one-trust-at-a-time rule below.
* **Single-academy trusts** are not partnerships (the project has no such type):
  their rows are dropped with the reason from [group_type]. A single-academy trust
  that closed when it became a multi-academy trust (its Group ID, without a retired
  suffix, is also a multi-academy trust's in the file: GIAS closes the SAT record and
  opens a MAT record for the same trust), or whose spell ends at most
  ``sat_to_mat_gap_days`` before the same school joins a multi-academy trust, is
  counted under its own reason; the school's membership starts when it joined the
  multi-academy trust (the date the trust became one), not when it became a SAT.
* **Retired group ids**: GIAS retires a trust record by suffixing its Group ID
  (``TR01234.old``). Such rows are moved to the current record (the row group with
  the Group ID without the suffix, and its Group UID) when the file has it, and then
  merge with its spells; without a current record they are dropped and counted.
* **Leaving dates**: ``left`` is the earliest of "Date Left Group", the URN's
  closing date and the trust's closing date. A school is in one trust (of one
  partnership type) at a time: a spell with no leaving date, or one on or after the
  school joins its next trust, ends the day before it joins the next one.
* **Joining before opening**: a joining date before the trust or the school opened
  is set to the later opening date (counted); a spell that would end before it
  begins is dropped and counted.
* **Trusts the store has not seen** (not in the groups file imported, e.g. a MAT
  opened since): created as partnerships from the file's group columns, their type
  mapped from the Group Type by [group_type].

The history is the authority on academy trust membership: for each school the file
lists, the store's memberships of ``replaces_types`` (from gias-group-links, whose
leaving dates are inferred) are replaced by the history's spells; memberships of other
types (federations, umbrella trusts, ...) and of other schools are kept. Import it
after gias-group-links (re-importing group links afterwards replaces the history).
"""

from __future__ import annotations

import pandas as pd

from evaluation.data.dfe.common import ImportedTable, Tally, cell, read_download, text_table
from evaluation.data.dfe.groups import group_type_rules, rules_of, unknown_group_types
from evaluation.data.dfe.links import map_urns
from evaluation.data.dfe.mappings import gias_mappings
from evaluation.data.schema import load_schema
from evaluation.data.validate import ProblemLog, RawTable, empty_missing_table, parse_dates, validate

REQUIRED = ("URN", "Group UID", "Group Type", "Date Joined Group")
#: DfE's column name and the names it has also been published under.
DATE_COLUMNS = {
    "Date Joined Group": ("Date Joined Group",),
    "Date Left Group": ("Date Left Group",),
    "Group Open Date": ("Group Open Date", "Open date", "Incorporated on (open date)"),
    "Group Closed Date": ("Group Closed Date", "Closed Date"),
}
DATE_EXPECTED = "expected a date (DD-MM-YYYY or DD/MM/YYYY)"
ONE_DAY = pd.Timedelta(days=1)
UNKNOWN_URN = ("URN not among the imported schools (not in the GIAS establishments imported, or not a school "
               "in England)")


def settings() -> dict:
    """The [trust_history] thresholds of dfe_mappings.toml."""
    return gias_mappings()["trust_history"]


def read_trust_history(path, partnerships: pd.DataFrame | None, schools: pd.DataFrame,
                       establishments: pd.DataFrame, mapping: dict[int, int],
                       memberships: pd.DataFrame | None) -> tuple[RawTable, list[ImportedTable], Tally, int, list[str]]:
    """The store's memberships with the file's spells, and partnerships if the file adds trusts.

    ``establishments`` is the per-URN derived table (urn, school_urn, opened, closed);
    ``partnerships`` and ``memberships`` are the store's (None if not imported yet).
    Returns the raw file, the tables to write, the tally of rows not kept, the number
    of the file's rows kept (in a stored spell) and the provenance notes."""
    cfg = settings()
    raw, columns = read_download(path, "gias-trust-history", REQUIRED)
    get = lambda name: cell(raw, columns, name)  # noqa: E731
    log = ProblemLog(raw.label)
    tally = Tally()
    index = raw.cells.index

    urn_text = get("URN")
    urn = pd.to_numeric(urn_text.where(urn_text != ""), errors="coerce")
    bad = urn.isna() | (urn % 1 != 0) | (urn < 100000) | (urn > 999999)
    log.add_rows(bad[bad].index, "URN", urn_text[bad], "expected a six-digit URN")
    dates, date_text = {}, {}
    for name, aliases in DATE_COLUMNS.items():
        column = next((a for a in aliases if a.casefold() in columns), aliases[0])
        text = get(column)
        parsed, bad_date = parse_dates(text)
        log.add_rows(bad_date[bad_date].index, column, text[bad_date], DATE_EXPECTED)
        dates[name], date_text[name] = parsed, text
    status = get("Group Status")
    st = gias_mappings()["group_status"]
    imported_status = {s.casefold() for s in st["imported"]} | {""}
    excluded_status = {s.casefold() for s in st["excluded"]}
    bad_status = ~status.str.casefold().isin(imported_status | excluded_status)
    log.add_rows(bad_status[bad_status].index, "Group Status", status[bad_status],
                 "unknown Group Status: expected one of " + ", ".join(st["imported"] + st["excluded"]))
    log.raise_if_any("nothing was imported")

    urn = urn.astype("Int64")
    school = map_urns(urn, mapping)
    uid = get("Group UID")
    gid = get("Group ID")
    gtype = get("Group Type")
    joined, left_given = dates["Date Joined Group"], dates["Date Left Group"]
    suffix = str(cfg["retired_group_id_suffix"])
    retired = (gid != "") & gid.str.casefold().str.endswith(suffix.casefold())
    base_id = gid.where(~retired, gid.str.slice(0, -len(suffix))).str.casefold()
    out = pd.Series(False, index=index)

    def drop(mask: pd.Series, reason: str, show_rows: bool = False) -> None:
        mask = mask & ~out
        tally.add_mask(mask, reason, show_rows)
        out[mask] = True

    # group types: a type no list names, then the types that are not partnerships
    out[unknown_group_types(gtype, tally)] = True
    drop(uid == "", "no Group UID")
    rules = group_type_rules()
    rule = rules_of(gtype)
    file_type = rule.map(lambda r: r.get("type", ""))
    is_partnership = rule.map(lambda r: r.get("partnership", True))
    is_sat = gtype.str.casefold() == "single-academy trust"
    drop(is_sat & _sat_became_mat(is_sat, file_type == "multi_academy_trust", base_id, school, joined,
                                  left_given.fillna(dates["Group Closed Date"]), int(cfg["sat_to_mat_gap_days"])),
         "single-academy trust that closed when it became a multi-academy trust (same Group ID) or when the "
         f"school joined one within {cfg['sat_to_mat_gap_days']} day(s): not a partnership, the school's "
         "membership starts when it joined the multi-academy trust")
    for value in sorted(gtype[~is_partnership & ~out].unique()):
        drop(gtype == value, rules[value.casefold()]["reason"])
    excluded = status.str.casefold().isin(excluded_status)
    for value in sorted(status[excluded & ~out].unique()):
        drop(excluded & (status == value), f"group not open (Group Status {value!r})")

    # retired trust records: to the current record of the same Group ID, if the file has it
    current = (~retired & ~out & (gid != ""))
    current_uid = pd.Series(uid[current].to_numpy(), index=base_id[current].to_numpy())
    current_uid = current_uid[~current_uid.index.duplicated()]
    has_current = retired & base_id.isin(current_uid.index)
    drop(retired & ~has_current, f"retired Group ID (ending {suffix!r}) with no current record of the trust "
                                 "in the file", show_rows=True)
    moved = has_current & ~out
    moved_pairs = sorted(set(zip(gid[moved], base_id[moved].map(current_uid))))
    uid = uid.where(~moved, base_id.map(current_uid))
    group_rows = ~out & ~retired  # rows that describe a trust (before dropping rows for their school or dates)

    est = establishments.set_index("urn")
    known_urn = urn.isin(est.index)
    drop(~known_urn, UNKNOWN_URN)
    file_schools = {int(s) for s in school[known_urn]}
    drop(joined.isna(), "no Date Joined Group")

    # partnerships: the store's, and the file's trusts it has not seen (created if a spell refers to them)
    known_p = set(partnerships["partnership_id"]) if partnerships is not None else set()
    created = _new_partnerships(raw, group_rows & ~uid.isin(known_p), uid, get("Group Name"), file_type,
                                rule, date_text["Group Open Date"], date_text["Group Closed Date"])
    all_p = _concat(partnerships, created)
    pinfo = all_p.set_index("partnership_id")
    ptype = uid.map(pinfo["type"].astype(str))
    p_open = uid.map(pinfo["opened"])
    p_close = uid.map(pinfo["closed"])
    u_close = pd.to_datetime(urn.map(est["closed"]))
    s_open = pd.to_datetime(school.map(schools.set_index("urn")["opened"]))

    start = pd.concat([p_open, s_open], axis=1).max(axis=1)
    clamped = start.notna() & (joined < start)
    joined = joined.where(~clamped, start)
    left = pd.concat([left_given, u_close, p_close], axis=1).min(axis=1)
    from_close = left_given.isna() & left.notna()
    drop(left < joined, "ends before it begins (Date Left Group, or the URN's or the trust's closing date, "
                        "before Date Joined Group)", show_rows=True)

    rows = pd.DataFrame({"school": school, "pid": uid, "type": ptype, "joined": joined, "left": left,
                         "row": index}, index=index)[~out]
    spells = _merge(rows, pd.Timedelta(days=int(cfg["merge_gap_days"])))
    merged_rows = int(sum(len(r) for r in spells["rows"]) - len(spells))
    min_days = int(cfg["min_spell_days"])
    short_reason = (f"a stay of under {min_days} days in the trust (after merging its rows and ending it when the "
                    "school joined its next trust): dropped")
    spells = _drop_short(spells, min_days, short_reason, tally, index)
    spells, trimmed = _one_trust_at_a_time(spells)
    spells = _drop_short(spells, min_days, short_reason, tally, index)
    kept = pd.Series(index.isin([r for rs in spells["rows"] for r in rs]), index=index)
    kept_rows = int(kept.sum())
    clamped, from_close = clamped & kept, from_close & kept

    iso = lambda s: pd.to_datetime(s).dt.strftime("%Y-%m-%d").fillna("")  # noqa: E731
    first = pd.Index([r[0] for r in spells["rows"]], dtype="int64")
    table = text_table(raw, {"urn": spells["school"].astype(int).astype(str).to_numpy(),
                             "partnership_id": spells["pid"].to_numpy(),
                             "joined": iso(spells["joined"]).to_numpy(), "left": iso(spells["left"]).to_numpy(),
                             "role": "member"}, index=first)
    used_created = created[created["partnership_id"].isin(set(spells["pid"]))] if len(created) else created
    refs = _concat(partnerships, used_created)
    if len(spells):
        history = validate("memberships", table, {"schools": schools, "partnerships": refs})
        history_data, history_notes = history.data, list(history.notes)
    else:  # every row rejected (the notes say why): the store keeps its other memberships
        history_data, history_notes = _empty("memberships"), []

    kept_existing, replaced = _kept_memberships(memberships, file_schools, pinfo, cfg["replaces_types"])
    final = _concat(kept_existing, history_data)
    final = final.sort_values(["urn", "partnership_id", "joined"]).reset_index(drop=True)

    notes = [f"{len(spells)} spell(s) of {spells['school'].nunique()} school(s) from {kept_rows} row(s): "
             f"{int(spells['left'].notna().sum())} with a leaving date, "
             f"{int((spells.groupby('school')['pid'].nunique() > 1).sum())} school(s) in more than one trust "
             "(moved trust)"]
    if merged_rows:
        notes.append(f"{merged_rows} row(s) merged into another row's spell of the same school and trust "
                     f"(duplicated or overlapping, or re-joining within {cfg['merge_gap_days']} day(s))")
    if moved_pairs:
        notes.append(f"{int(moved.sum())} row(s) of retired Group IDs moved to the trust's current record: "
                     + ", ".join(f"{g} -> Group UID {u}" for g, u in moved_pairs))
    if trimmed:
        notes.append(f"{trimmed} spell(s) ended the day before the school joined its next trust (no Date Left "
                     "Group, or one after that joining date)")
    if clamped.any():
        notes.append(f"{int(clamped.sum())} joining date(s) before the trust or the school opened: set to the "
                     "opening date")
    if from_close.any():
        notes.append(f"{int(from_close.sum())} leaving date(s) taken from the URN's or the trust's closing date "
                     "(no Date Left Group)")
    created_note = (f"{len(used_created)} partnership(s) created from the file's group columns (not among the "
                    "imported groups): " + ", ".join(used_created["partnership_id"]))
    if len(used_created):
        notes.append(created_note)
    notes.append(f"{replaced} membership(s) of {', '.join(cfg['replaces_types'])} of the file's schools replaced "
                 f"by the history, {0 if kept_existing is None else len(kept_existing)} other membership(s) kept")

    tables = []
    if len(used_created):
        tables.append(ImportedTable("partnerships", refs.sort_values("partnership_id").reset_index(drop=True),
                                    empty_missing_table(), raw, [created_note], kept=len(used_created)))
    tables.append(ImportedTable("memberships", final, empty_missing_table(), raw, history_notes, kept=kept_rows))
    return raw, tables, tally, kept_rows, notes


def _empty(table: str) -> pd.DataFrame:
    """No rows, with the columns and dtypes of ``data_schemas/<table>.toml``."""
    return pd.DataFrame({c.name: pd.Series(dtype=c.pandas_dtype) for c in load_schema(table).columns})


def _concat(first: pd.DataFrame | None, second: pd.DataFrame) -> pd.DataFrame:
    """``first`` (a store table, or None) followed by ``second`` (same columns and dtypes)."""
    if first is None or not len(first):
        return second.reset_index(drop=True)
    if not len(second):
        return first.reset_index(drop=True)
    return pd.concat([first, second], ignore_index=True)


def _sat_became_mat(is_sat, is_mat, base_id, school, joined, end, gap_days: int) -> pd.Series:
    """SAT rows whose trust became a MAT (same Group ID) or whose school joined a MAT when the SAT ended."""
    mat_ids = set(base_id[is_mat & (base_id != "")])
    same_id = is_sat & (base_id != "") & base_id.isin(mat_ids)
    sats = pd.DataFrame({"school": school, "end": end, "row": school.index})[is_sat].dropna(subset=["school", "end"])
    mats = pd.DataFrame({"school": school, "mat_joined": joined})[is_mat].dropna()
    pairs = sats.merge(mats, on="school")
    days = (pairs["mat_joined"] - pairs["end"]).dt.days
    next_day = set(pairs.loc[(days >= 0) & (days <= gap_days), "row"])
    return same_id | school.index.isin(next_day)


def _new_partnerships(raw, rows, uid, name, file_type, rule, opened, closed) -> pd.DataFrame:
    """Partnerships for the file's trusts the store has not seen (first row of each Group UID)."""
    chosen = uid[rows].drop_duplicates()  # the first row of each Group UID
    if chosen.empty:
        return _empty("partnerships")
    at = chosen.index
    soft = rule[at].map(lambda r: r.get("soft_if_name_contains", "")).astype(str)
    is_soft = pd.Series([bool(s) and s.casefold() in n.casefold() for s, n in zip(soft, name[at])], index=at)
    ptype = file_type[at].where(~is_soft, "federation_soft")
    formal = rule[at].map(lambda r: "true" if r.get("formal") else "false").where(~is_soft, "false")
    table = text_table(raw, {"partnership_id": uid[at], "name": name[at], "type": ptype, "formal": formal,
                             "sponsor_led": "", "opened": opened[at], "closed": closed[at]}, index=at)
    return validate("partnerships", table).data


def _merge(rows: pd.DataFrame, gap: pd.Timedelta) -> pd.DataFrame:
    """One spell per run of overlapping (or within ``gap``) rows of one school and partnership:
    from the run's first joining date to its latest leaving date (open if any row is)."""
    never = pd.Timestamp("9999-12-31").as_unit("s")
    r = rows.sort_values(["school", "pid", "joined", "row"]).copy()
    r["end"] = r["left"].astype("datetime64[s]").fillna(never)
    keys = [r["school"], r["pid"]]
    reach = r.groupby(keys, sort=False)["end"].cummax()  # the latest end so far in the group
    before = reach.groupby(keys, sort=False).shift(1)
    new = before.isna() | (r["joined"] - gap > before)
    spell = new.cumsum()
    grouped = r.groupby(spell, sort=True)
    frame = pd.DataFrame({"school": grouped["school"].first().astype(int), "pid": grouped["pid"].first(),
                          "type": grouped["type"].first(), "joined": grouped["joined"].first(),
                          "left": grouped["end"].max(), "rows": grouped["row"].agg(lambda x: [int(v) for v in x])})
    frame["left"] = frame["left"].where(frame["left"] != never)
    for col in ("joined", "left"):
        frame[col] = pd.to_datetime(frame[col]).astype("datetime64[s]")
    return frame.reset_index(drop=True)


def _drop_short(spells: pd.DataFrame, min_days: int, reason: str, tally: Tally, index: pd.Index) -> pd.DataFrame:
    short = spells["left"].notna() & ((spells["left"] - spells["joined"]).dt.days < min_days)
    if short.any():
        rows = index.isin([r for rs in spells.loc[short, "rows"] for r in rs])
        tally.add_mask(pd.Series(rows, index=index), reason, show_rows=True)
    return spells[~short].reset_index(drop=True)


def _one_trust_at_a_time(spells: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """A spell with no leaving date, or one on or after the school's next trust (of the
    same partnership type) began, ends the day before that joining date."""
    spells = spells.sort_values(["school", "type", "joined", "pid"]).reset_index(drop=True)
    next_joined = spells.groupby(["school", "type"])["joined"].shift(-1)
    trim = next_joined.notna() & (spells["left"].isna() | (spells["left"] >= next_joined))
    spells.loc[trim, "left"] = (next_joined[trim] - ONE_DAY).astype("datetime64[s]")
    return spells, int(trim.sum())


def _kept_memberships(memberships: pd.DataFrame | None, file_schools: set[int], pinfo: pd.DataFrame,
                      replaces: list[str]) -> tuple[pd.DataFrame | None, int]:
    """The store's memberships the history does not replace, and how many it replaces."""
    if memberships is None or not len(memberships):
        return memberships, 0
    types = memberships["partnership_id"].map(pinfo["type"].astype(str))
    replaced = memberships["urn"].astype(int).isin(file_schools) & types.isin(list(replaces))
    return memberships[~replaced].reset_index(drop=True), int(replaced.sum())
