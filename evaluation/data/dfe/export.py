"""Write a synthetic national panel (``evaluation.data.synthetic.generate``) as the DfE
downloads that ``impact data import-dfe`` reads, so that a store can be built from DfE
files alone and the importers can be checked against a known truth (round trip).

Files written into ``out_dir`` (see :func:`export_dfe`, which returns them in import
order):

* ``edubasealldataYYYYMMDD.csv`` (GIAS establishment fields, Windows-1252, CRLF): one
  row per URN with GIAS column names and GIAS vocabularies (the inverse of
  ``data_schemas/dfe_mappings.toml``), day-first dates, and the January census of the
  snapshot's academic year (NumberOfPupils, PercentageFSM, CensusDate);
* ``links_edubasealldataYYYYMMDD.csv`` (establishment links, Windows-1252): each
  academy conversion recorded both ways ("Predecessor" on the new URN, "Successor" on
  the old one) with LinkEstablishedDate;
* ``allgroupsdataYYYYMMDD.csv`` (all group records, UTF-8 with a byte-order mark);
* ``links_groupsYYYYMMDD.csv`` (group links with "Joined date", Windows-1252);
* ``YYYY-YYYY/england_ks2final.csv`` and ``YYYY-YYYY/england_ks4final.csv`` for each
  academic year (UTF-8), with the RECTYPE numbering and column names DfE used that
  year (``data_schemas/dfe_performance.toml``: PTFSMCLA until 2014, PTFSM6CLA1A from
  2015; Attainment 8 and KS2 scaled scores only from 2016, ...), the panel's
  suppression markers (SUPP, LOWCOV, NE, NP, x) as printed, percentages written
  "55" until 2018 and "55%" from 2019, and local-authority and national total rows.

How the panel is turned into DfE's shape:

* URN changes. The panel follows one URN per school. DfE gives a school that becomes
  an academy a new URN: every school whose establishment type is an academy (its first
  multi-academy-trust membership) is written as a predecessor URN (a maintained school,
  closed the day before it joined the trust) and a successor URN (the academy, opened
  on the join date), joined by establishment links. Successor URNs are the lowest
  six-digit numbers from 130000 up that the panel does not use. The importer maps them
  back to the panel's URN (the chain's root). Performance rows of a year go under the
  successor if it opened before 1 June of that year (the summer exams), else under the
  predecessor; GIAS group links go under the URN open when the membership ended (or
  now). The trust link of a converter is written with an empty Joined date, as in older
  GIAS data: the importer takes the successor's opening (the conversion) date.
* Groups. Multi-academy trusts -> "Multi-academy trust", hard federations ->
  "Federation", umbrella trusts -> "Umbrella trust", collaborative partnerships ->
  "Collegiate". Group UID is the panel's partnership number (P00042 -> 42). Each
  sponsor-led trust also gets a "School sponsor" group linked to the trust's schools,
  from which the importer sets sponsor_led; free schools outside any trust get a
  "Single-academy trust" (not a partnership; the importer rejects it with the reason).
  Groups closing after the snapshot are "Open, but proposed to close" with their
  Closed Date.

What the DfE formats cannot carry (lost or approximated on import):

* teaching school alliances, soft federations and informal clusters: GIAS registers
  none of them (federations in GIAS are hard federations under the 2012 regulations),
  so neither they nor their memberships are written;
* roles: group links do not say which school leads, every membership imports as
  "member";
* leaving dates: group links carry none. The importer derives them from the URN's or
  the group's closing, or the day before the school joins another group of the same
  type; a re-brokered academy's leaving date becomes the day before it joins its new
  trust (the panel has it leave on 31 August, sometimes after that join); a school that
  leaves a group which carries on keeps its membership until the group closes; and where
  the generator lets a member of a dissolved group leave after the group's closing date,
  the import ends the membership at the closing;
* the maintained school type before conversion: the panel keeps only the academy
  type, so predecessor URNs are written as "Community school" (NFTYPE CY); the
  imported school takes its descriptors from the academy URN, as in the panel;
* context: GIAS has one census (NumberOfPupils, PercentageFSM) per snapshot, so only
  the snapshot's census year gets pupils and fsm_pct; EAL, SEN and Ofsted grades are
  in neither format (matching on them is impossible on a DfE-only store);
* outcomes DfE did not publish for a year: KS2 percentages, progress and scaled scores
  before 2016, Attainment 8 and Progress 8 before 2016, the basics measures before
  2017 and the EBacc APS before 2018 (the panel's values for those years are dropped).
  DfE published no performance tables for 2019/20 and 2020/21, so the default years
  leave 2020 and 2021 out (pass ``years`` to write them from the panel anyway);
* LA and national total rows are invented summaries (pupil sums, unweighted means);
  the importer counts and skips them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.data.dfe.mappings import in_years, performance_mappings
from evaluation.data.synthetic import SyntheticPanel

NO_TABLES = (2020, 2021)  # exams cancelled: DfE published no school performance tables

PHASE = {"primary": "Primary", "secondary": "Secondary"}
ESTABLISHMENT_TYPE = {
    "community": ("Community school", "Local authority maintained schools", "CY"),
    "voluntary_aided": ("Voluntary aided school", "Local authority maintained schools", "VA"),
    "voluntary_controlled": ("Voluntary controlled school", "Local authority maintained schools", "VC"),
    "foundation": ("Foundation school", "Local authority maintained schools", "FD"),
    "academy_sponsor_led": ("Academy sponsor led", "Academies", "AC"),
    "academy_converter": ("Academy converter", "Academies", "ACC"),
    "free_school": ("Free schools", "Free Schools", "F"),
}
PREDECESSOR_TYPE = "community"  # the panel does not keep a converter's maintained type
URBAN_RURAL = {"urban": "(England/Wales) Urban city and town", "rural": "(England/Wales) Rural town and fringe"}
GROUP_TYPE = {  # our type -> (GIAS Group Type (code), Group Type)
    "multi_academy_trust": ("06", "Multi-academy trust"),
    "federation_hard": ("01", "Federation"),
    "umbrella_trust": ("", "Umbrella trust"),
    "collaborative_partnership": ("", "Collegiate"),
}
SPONSOR = ("05", "School sponsor")
SINGLE_ACADEMY_TRUST = ("10", "Single-academy trust")
SPONSOR_UID_BASE, SAT_UID_BASE = 100_000, 200_000
FIRST_ACADEMY_URN = 130_000
STATUS_CODE = {"Open": "OPEN", "Closed": "CLOSED", "Open, but proposed to close": "PROPOSED_TO_CLOSE"}

EST_COLUMNS = ["URN", "LA (code)", "LA (name)", "EstablishmentNumber", "EstablishmentName",
               "TypeOfEstablishment (name)", "EstablishmentTypeGroup (name)", "EstablishmentStatus (name)",
               "ReasonEstablishmentOpened (name)", "OpenDate", "ReasonEstablishmentClosed (name)", "CloseDate",
               "PhaseOfEducation (name)", "NumberOfPupils", "PercentageFSM", "CensusDate", "Trusts (code)",
               "Trusts (name)", "SchoolSponsors (name)", "Federations (code)", "Federations (name)", "GOR (name)",
               "UrbanRural (name)", "Easting", "Northing"]
GROUP_COLUMNS = ["Group UID", "Group ID", "Group Name", "Companies House Number", "Group Type (code)",
                 "Group Type", "Closed Date", "Group Status (code)", "Group Status"]
GROUP_LINK_TAIL = ["Joined date", "URN", "EstablishmentName", "TypeOfEstablishment (name)",
                   "PhaseOfEducation (name)", "LA (name)"]
LINK_COLUMNS = ["URN", "LinkURN", "LinkName", "LinkType", "LinkEstablishedDate"]


@dataclass
class ExportedFiles:
    """The files written, as (KIND, path) in the order they must be imported."""

    steps: list[tuple[str, Path]]
    snapshot: pd.Timestamp
    census_year: int
    years: list[int]
    successor_urn: dict[int, int]  # panel URN -> its academy URN (converted schools)


def default_years(panel: SyntheticPanel) -> list[int]:
    first, last = panel.meta.get("years", [2010, 2024])
    return [y for y in range(first, last + 1) if y not in NO_TABLES]


def export_dfe(panel: SyntheticPanel, out_dir: str | Path, years=None,
               snapshot: str | pd.Timestamp | None = None) -> ExportedFiles:
    """Write ``panel`` as DfE downloads into ``out_dir`` (see the module docstring).

    ``years``: academic-year ends to write performance tables for (default: the
    panel's years without 2020 and 2021). ``snapshot``: the GIAS download date
    (default 1 September of the panel's last year); its census is the January before."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    last = int(panel.meta.get("years", [2010, 2024])[1])
    snap = pd.Timestamp(snapshot) if snapshot is not None else pd.Timestamp(last, 9, 1)
    census = _third_thursday_of_january(snap.year)  # the latest January census before the snapshot
    census_year = census.year  # January belongs to the academic year ending that summer
    years = sorted(int(y) for y in (default_years(panel) if years is None else years))
    stamp = snap.strftime("%Y%m%d")

    schools = _school_frame(panel)
    est = _establishments(panel, schools, census, census_year)
    links = _links(schools)
    groups, group_links = _groups(panel, schools, snap)

    files = {
        "gias-establishments": out / f"edubasealldata{stamp}.csv",
        "gias-links": out / f"links_edubasealldata{stamp}.csv",
        "gias-groups": out / f"allgroupsdata{stamp}.csv",
        "gias-group-links": out / f"links_groups{stamp}.csv",
    }
    _write(est, files["gias-establishments"], "cp1252", crlf=True)
    _write(links, files["gias-links"], "cp1252")
    _write(groups, files["gias-groups"], "utf-8-sig")
    _write(group_links, files["gias-group-links"], "cp1252")
    steps = list(files.items())
    for year in years:
        folder = out / f"{year - 1}-{year}"
        folder.mkdir(exist_ok=True)
        for kind in ("ks2", "ks4"):
            table = _performance(panel, schools, kind, year)
            path = folder / performance_mappings()[kind]["file_name"]
            _write(table, path, "utf-8")
            steps.append((kind, path))
    successor = dict(zip(schools.loc[schools["converted"], "urn"], schools.loc[schools["converted"], "new_urn"]))
    return ExportedFiles(steps, snap, census_year, years, {int(k): int(v) for k, v in successor.items()})


# ---------------------------------------------------------------------------- helpers

def _third_thursday_of_january(year: int) -> pd.Timestamp:
    first = pd.Timestamp(year, 1, 1)
    return first + pd.Timedelta(days=(3 - first.day_of_week) % 7 + 14)


def _dmy(dates: pd.Series) -> pd.Series:
    """Day-first dates as GIAS prints them; missing -> empty."""
    return pd.to_datetime(dates).dt.strftime("%d/%m/%Y").fillna("")


def _write(frame: pd.DataFrame, path: Path, encoding: str, crlf: bool = False) -> None:
    frame.to_csv(path, index=False, encoding=encoding, lineterminator="\r\n" if crlf else "\n")


def _school_frame(panel: SyntheticPanel) -> pd.DataFrame:
    """Schools with their conversion (first multi-academy-trust join) and academy URN."""
    s = panel.schools.copy()
    s["urn"] = s["urn"].astype(int)
    s["opened_d"] = pd.to_datetime(s["opened"].replace("", None))
    s["closed_d"] = pd.to_datetime(s["closed"].replace("", None))
    m = _typed_memberships(panel)
    mat = m[m["type"] == "multi_academy_trust"]
    first_join = mat.groupby("urn")["joined"].min()
    s["converted"] = s["establishment_type"].isin(["academy_sponsor_led", "academy_converter"])
    s["conversion"] = s["urn"].map(first_join).where(s["converted"])
    free_mask = np.zeros(1_000_000, dtype=bool)
    free_mask[FIRST_ACADEMY_URN:] = True
    free_mask[s["urn"].to_numpy()] = False
    n_conv = int(s["converted"].sum())
    free = np.flatnonzero(free_mask)[:n_conv]
    if n_conv > len(free):
        raise ValueError("no six-digit URNs left for the academies")
    s["new_urn"] = pd.array([pd.NA] * len(s), dtype="Int64")
    s.loc[s["converted"], "new_urn"] = free[:n_conv]
    return s


def _typed_memberships(panel: SyntheticPanel) -> pd.DataFrame:
    m = panel.memberships.merge(panel.partnerships[["partnership_id", "type", "sponsor_led", "name", "closed"]],
                                on="partnership_id", how="left", suffixes=("", "_p"))
    m["urn"] = m["urn"].astype(int)
    m["joined"] = pd.to_datetime(m["joined"])
    m["left"] = pd.to_datetime(m["left"].replace("", None))
    return m


def _urn_at(schools: pd.DataFrame, urns: pd.Series, when: pd.Series) -> pd.Series:
    """The URN in use for each panel school at each date (NaT = now): the academy URN
    from the conversion on, the panel's URN before."""
    s = schools.set_index("urn")
    conv = urns.map(s["conversion"])
    new = urns.map(s["new_urn"])
    after = conv.notna() & (when.isna() | (when >= conv))
    return pd.Series(np.where(after, new.astype("float64"), urns.astype("float64")), index=urns.index).astype(int)


def _establishments(panel: SyntheticPanel, s: pd.DataFrame, census: pd.Timestamp, census_year: int) -> pd.DataFrame:
    conv = s[s["converted"]]
    # one row per school as it is now (academies under their new URN), plus the predecessors
    now = s.copy()
    now["URN"] = np.where(now["converted"], now["new_urn"].astype("float64"), now["urn"]).astype(int)
    now["open_d"] = now["conversion"].where(now["converted"], now["opened_d"])
    now["close_d"] = now["closed_d"]
    now["etype"] = now["establishment_type"]
    now["why_open"] = np.where(now["converted"], np.where(now["etype"] == "academy_converter",
                                                          "Academy Converter", "Academy Sponsor Led"),
                               np.where(now["opened_d"].notna(), "New Provision", "Not applicable"))
    now["why_close"] = np.where(now["closed_d"].notna(), "Closure", "Not applicable")
    pred = conv.copy()
    pred["URN"] = pred["urn"]
    pred["open_d"] = pred["opened_d"]
    pred["close_d"] = pred["conversion"] - pd.Timedelta(days=1)
    pred["etype"] = PREDECESSOR_TYPE
    pred["why_open"] = "Not applicable"
    pred["why_close"] = np.where(pred["establishment_type"] == "academy_converter", "Academy Converter",
                                 "Academy Sponsor Led")
    rows = pd.concat([now, pred], ignore_index=True)
    sy = panel.school_years[panel.school_years["year"] == str(census_year)].set_index("urn")
    current = rows["close_d"].isna() | (rows["close_d"] >= census)
    current &= rows["open_d"].isna() | (rows["open_d"] <= census)
    key = rows["urn"].astype(str)
    pupils = key.map(sy["pupils"]).fillna("").where(current, "")
    fsm = key.map(sy["fsm_pct"]).fillna("").where(current, "")
    has_census = (pupils != "") | (fsm != "")
    etype = rows["etype"].map(lambda t: ESTABLISHMENT_TYPE[t])
    out = pd.DataFrame({
        "URN": rows["URN"].astype(str), "LA (code)": rows["la_code"], "LA (name)": rows["la_name"],
        "EstablishmentNumber": (rows["URN"] % 9000 + 1000).astype(str), "EstablishmentName": rows["name"],
        "TypeOfEstablishment (name)": etype.str[0], "EstablishmentTypeGroup (name)": etype.str[1],
        "EstablishmentStatus (name)": np.where(rows["close_d"].notna(), "Closed", "Open"),
        "ReasonEstablishmentOpened (name)": rows["why_open"], "OpenDate": _dmy(rows["open_d"]),
        "ReasonEstablishmentClosed (name)": rows["why_close"], "CloseDate": _dmy(rows["close_d"]),
        "PhaseOfEducation (name)": rows["phase"].map(PHASE), "NumberOfPupils": pupils, "PercentageFSM": fsm,
        "CensusDate": np.where(has_census, census.strftime("%d/%m/%Y"), ""),
        "Trusts (code)": "", "Trusts (name)": "", "SchoolSponsors (name)": "", "Federations (code)": "",
        "Federations (name)": "", "GOR (name)": rows["region"],
        "UrbanRural (name)": rows["urban_rural"].map(URBAN_RURAL),
        "Easting": rows["easting"], "Northing": rows["northing"],
    })
    return out.sort_values("URN", key=lambda u: u.astype(int), kind="stable")[EST_COLUMNS].reset_index(drop=True)


def _links(s: pd.DataFrame) -> pd.DataFrame:
    conv = s[s["converted"]].sort_values("urn")
    date = _dmy(conv["conversion"])
    new, old = conv["new_urn"].astype(int).astype(str), conv["urn"].astype(str)
    pred = pd.DataFrame({"URN": new, "LinkURN": old, "LinkName": conv["name"], "LinkType": "Predecessor",
                         "LinkEstablishedDate": date})
    succ = pd.DataFrame({"URN": old, "LinkURN": new, "LinkName": conv["name"], "LinkType": "Successor",
                         "LinkEstablishedDate": date})
    return pd.concat([pred, succ], ignore_index=True)[LINK_COLUMNS]


def _status(closed: pd.Series, snap: pd.Timestamp) -> pd.Series:
    return pd.Series(np.where(closed.isna(), "Open", np.where(closed <= snap, "Closed", "Open, but proposed to close")),
                     index=closed.index)


def _groups(panel: SyntheticPanel, s: pd.DataFrame, snap: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    p = panel.partnerships[panel.partnerships["type"].isin(list(GROUP_TYPE))].copy()
    p["uid"] = p["partnership_id"].str[1:].astype(int)
    p["opened_d"] = pd.to_datetime(p["opened"])
    p["closed_d"] = pd.to_datetime(p["closed"].replace("", None))
    p["status"] = _status(p["closed_d"], snap)
    code_type = p["type"].map(GROUP_TYPE)
    groups = pd.DataFrame({
        "uid": p["uid"],
        "Group ID": np.where(p["type"] == "multi_academy_trust", "TR", "GR") + p["uid"].map("{:05d}".format),
        "Group Name": p["name"],
        "Companies House Number": np.where(p["type"] == "multi_academy_trust", p["uid"].map("{:08d}".format), ""),
        "Group Type (code)": code_type.str[0], "Group Type": code_type.str[1], "closed": p["closed_d"],
        "status": p["status"], "opened": p["opened_d"]})

    m = _typed_memberships(panel)
    m = m[m["type"].isin(list(GROUP_TYPE))].copy()
    m["uid"] = m["partnership_id"].str[1:].astype(int)
    # the URN current when the membership ended (or now)
    m["link_urn"] = _urn_at(s, m["urn"], m["left"])
    links = [m[["uid", "link_urn", "joined"]]]

    # school sponsors: one per sponsor-led trust, linked to the trust's schools
    led = p[(p["type"] == "multi_academy_trust") & (p["sponsor_led"] == "true")]
    sponsors = pd.DataFrame({
        "uid": SPONSOR_UID_BASE + led["uid"], "Group ID": "", "Group Name": led["name"].str.replace(
            " Trust ", " Sponsor ", regex=False), "Companies House Number": "", "Group Type (code)": SPONSOR[0],
        "Group Type": SPONSOR[1], "closed": pd.NaT, "status": "Open", "opened": led["opened_d"]})
    sm = m[m["partnership_id"].isin(led["partnership_id"])]
    links.append(pd.DataFrame({"uid": SPONSOR_UID_BASE + sm["uid"], "link_urn": sm["link_urn"],
                               "joined": sm["joined"]}))

    # free schools outside any trust: a single-academy trust each
    in_mat = set(m.loc[m["type"] == "multi_academy_trust", "urn"])
    sat = s[(s["establishment_type"] == "free_school") & ~s["urn"].isin(in_mat)].reset_index(drop=True)
    sat_uid = SAT_UID_BASE + pd.Series(np.arange(1, len(sat) + 1), index=sat.index)
    sats = pd.DataFrame({
        "uid": sat_uid, "Group ID": "TR" + sat_uid.map("{:06d}".format),
        "Group Name": sat["name"] + " Trust", "Companies House Number": "",
        "Group Type (code)": SINGLE_ACADEMY_TRUST[0], "Group Type": SINGLE_ACADEMY_TRUST[1],
        "closed": sat["closed_d"], "status": _status(sat["closed_d"], snap), "opened": sat["opened_d"]})
    links.append(pd.DataFrame({"uid": sat_uid, "link_urn": sat["urn"], "joined": sat["opened_d"]}))

    g = pd.concat([groups, sponsors, sats], ignore_index=True).sort_values("uid").reset_index(drop=True)
    g["Group UID"] = g["uid"].astype(str)
    g["Closed Date"] = _dmy(g["closed"])
    g["Group Status"] = g["status"]
    g["Group Status (code)"] = g["status"].map(STATUS_CODE)
    g["Open date"] = _dmy(g["opened"])
    allgroups = g[GROUP_COLUMNS + ["Open date"]]

    gl = pd.concat(links, ignore_index=True)
    est = _urn_table(s)
    gl = gl.merge(g[["uid"] + GROUP_COLUMNS], on="uid", how="left").merge(est, on="link_urn", how="left")
    # a link made when the URN opened (a converter joining its trust, a free school) has no Joined date
    at_opening = gl["joined"].eq(gl["urn_opened"])
    gl["Joined date"] = _dmy(gl["joined"]).where(~at_opening, "")
    gl["URN"] = gl["link_urn"].astype(str)
    gl = gl.sort_values(["uid", "link_urn", "joined"], kind="stable")
    return allgroups, gl[GROUP_COLUMNS + GROUP_LINK_TAIL].reset_index(drop=True)


def _urn_table(s: pd.DataFrame) -> pd.DataFrame:
    """Per URN: name, GIAS type, phase, LA name and opening date (for group-link rows)."""
    conv = s[s["converted"]]
    now = pd.DataFrame({"link_urn": np.where(s["converted"], s["new_urn"].astype("float64"), s["urn"]).astype(int),
                        "etype": s["establishment_type"],
                        "urn_opened": s["conversion"].where(s["converted"], s["opened_d"]),
                        "name": s["name"], "phase": s["phase"], "la_name": s["la_name"]})
    pred = pd.DataFrame({"link_urn": conv["urn"], "etype": PREDECESSOR_TYPE, "urn_opened": conv["opened_d"],
                         "name": conv["name"], "phase": conv["phase"], "la_name": conv["la_name"]})
    t = pd.concat([now, pred], ignore_index=True)
    return pd.DataFrame({"link_urn": t["link_urn"], "urn_opened": t["urn_opened"], "EstablishmentName": t["name"],
                         "TypeOfEstablishment (name)": t["etype"].map(lambda e: ESTABLISHMENT_TYPE[e][0]),
                         "PhaseOfEducation (name)": t["phase"].map(PHASE), "LA (name)": t["la_name"]})


def _performance(panel: SyntheticPanel, s: pd.DataFrame, kind: str, year: int) -> pd.DataFrame:
    """One year's england_ks2final.csv / england_ks4final.csv (school, LA and national rows)."""
    maps = performance_mappings()
    rect = next(r for r in maps["rectype"] if kind in r.get("kinds", [kind]) and in_years(r, year))
    labels = {int(k): v for k, v in rect["labels"].items()}
    la_rectype = next(k for k, v in labels.items() if v == "local authority")
    national = [k for k, v in labels.items() if v.startswith("national")]
    fields = {}
    for field, options in maps[kind]["columns"].items():
        col = next((o["column"] for o in options if in_years(o, year)), None)
        if col is not None:
            fields[field] = col
    eligible = "ks2_eligible_pupils" if kind == "ks2" else "ks4_eligible_pupils"
    sy = panel.school_years[(panel.school_years["year"] == str(year)) & (panel.school_years[eligible] != "")]
    sy = sy.assign(urn=sy["urn"].astype(int)).merge(
        s[["urn", "name", "la_code", "la_name", "establishment_type", "converted", "conversion", "new_urn"]],
        on="urn", how="left")
    exams = pd.Timestamp(year, 6, 1)
    academy = sy["converted"] & (sy["conversion"] < exams)
    urn = np.where(academy, sy["new_urn"].astype("float64"), sy["urn"]).astype(int)
    etype = sy["establishment_type"].where(~sy["converted"] | academy, PREDECESSOR_TYPE)
    nftype = etype.map(lambda t: ESTABLISHMENT_TYPE[t][2])
    if year <= 2011:
        nftype = nftype.replace({"ACC": "AC"})
    schools = pd.DataFrame({"RECTYPE": "1", "LEA": sy["la_code"], "ESTAB": (urn % 9000 + 1000).astype(str),
                            "URN": urn.astype(str), "SCHNAME": sy["name"], "NFTYPE": nftype})
    for field, col in fields.items():
        text = sy[field].astype(str)
        if field.endswith("_pct") and year >= 2019:
            numeric = pd.to_numeric(text, errors="coerce").notna()
            text = text.where(~numeric, text + "%")
        schools[col] = text.to_numpy()
    schools = schools.sort_values(["LEA", "URN"], key=lambda c: c.astype(int), kind="stable")

    values = pd.DataFrame({col: pd.to_numeric(sy[f], errors="coerce") for f, col in fields.items()})
    values["LEA"] = sy["la_code"].to_numpy()
    pupils_col = fields["ks2_eligible_pupils" if kind == "ks2" else "ks4_eligible_pupils"]

    def summary(frame: pd.DataFrame) -> dict:
        row = {}
        for col in fields.values():
            v = frame[col].dropna()
            row[col] = "" if v.empty else (str(int(v.sum())) if col == pupils_col else f"{v.mean():.1f}")
        return row

    la_name = s.drop_duplicates("la_code").set_index("la_code")["la_name"]
    la_rows = [{"RECTYPE": str(la_rectype), "LEA": code, "ESTAB": "", "URN": "", "SCHNAME": la_name[code],
                "NFTYPE": "", **summary(frame)} for code, frame in values.groupby("LEA", sort=True)]
    nat_rows = [{"RECTYPE": str(code), "LEA": "", "ESTAB": "", "URN": "", "SCHNAME": labels[code].capitalize(),
                 "NFTYPE": "", **summary(values)} for code in national]
    return pd.concat([schools, pd.DataFrame(la_rows), pd.DataFrame(nat_rows)], ignore_index=True).fillna("")
