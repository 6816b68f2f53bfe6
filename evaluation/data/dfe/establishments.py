"""GIAS establishments (edubasealldataYYYYMMDD.csv) -> schools (+ pupils and FSM context).

DfE conventions relied on: one row per URN, open or closed; categories are given as
"(code)"/"(name)" column pairs and we read the names ("TypeOfEstablishment (name)",
"PhaseOfEducation (name)", "GOR (name)", "UrbanRural (name)", "EstablishmentStatus
(name)"), mapped onto our vocabularies by ``data_schemas/dfe_mappings.toml``;
OpenDate/CloseDate are day-first; NumberOfPupils and PercentageFSM come from the
January school census named by CensusDate.

Rows that are not schools in England (excluded establishment types, Welsh or
non-regional rows, schools only proposed to open) are not imported and are counted
with their reason; so are rows of an establishment type in neither list (a type GIAS
added later), with the type and the first rows, rather than stopping the file. URNs
joined by establishment links (see ``links.py``) become one school: its stable id is
the earliest predecessor's URN, its descriptors (name, type, phase, ...) are the
latest URN's, ``opened`` is the earliest URN's opening and ``closed`` the latest
URN's closing.
"""

from __future__ import annotations

import pandas as pd

from evaluation.data.calendar import academic_year
from evaluation.data.dfe.common import Tally, cell, read_download, text_table
from evaluation.data.dfe.mappings import folded, gias_mappings
from evaluation.data.schema import load_schema
from evaluation.data.validate import ProblemLog, RawTable, ValidatedTable, validate

REQUIRED = ("URN", "LA (code)", "EstablishmentName", "TypeOfEstablishment (name)", "PhaseOfEducation (name)",
            "EstablishmentStatus (name)", "GOR (name)")
STAGING_TABLE = "gias_establishments"
SCHOOL_COLUMNS = ["urn", "name", "la_code", "la_name", "region", "phase", "establishment_type", "urban_rural",
                  "easting", "northing", "opened", "closed"]


def read_establishments(path) -> tuple[RawTable, ValidatedTable, Tally, pd.DataFrame]:
    """Validate the file's school rows as schools, one per original URN.

    Returns the raw file, the per-URN schools table, the tally of rows not imported
    and the census context (urn, year, pupils, fsm_pct text) of the kept rows."""
    raw, columns = read_download(path, "gias-establishments", REQUIRED)
    maps = gias_mappings()
    log = ProblemLog(raw.label)
    tally = Tally()
    get = lambda name: cell(raw, columns, name)  # noqa: E731

    etype = get("TypeOfEstablishment (name)")
    excluded_types = {t.casefold() for t in maps["establishment_type_excluded"]["types"]}
    known_types = folded(maps["establishment_type"])
    # a type GIAS added since the list was written: counted and skipped, never a stop
    new_type = ~etype.str.casefold().isin(set(known_types) | excluded_types)
    tally.add_unknown(etype, new_type, "TypeOfEstablishment (name)", "GIAS establishment type",
                      "data_schemas/dfe_mappings.toml [establishment_type]")
    keep = _classify(etype, known_types, excluded_types, "TypeOfEstablishment (name)",
                     "establishment type", "not a school", tally, log, ~new_type) & ~new_type
    status = get("EstablishmentStatus (name)")
    st = maps["establishment_status"]
    keep &= _classify(status, {s.casefold(): s for s in st["imported"]}, {s.casefold() for s in st["excluded"]},
                      "EstablishmentStatus (name)", "establishment status", "not yet open", tally, log, keep)
    region = get("GOR (name)")
    keep &= _classify(region, folded(maps["region"]), {r.casefold() for r in maps["region_excluded"]["regions"]},
                      "GOR (name)", "region", "outside England's nine regions", tally, log, keep)
    phase = get("PhaseOfEducation (name)")
    _check_known(phase, folded(maps["phase"]), "PhaseOfEducation (name)", "phase of education", log, keep)
    urban = get("UrbanRural (name)")
    _check_known(urban, folded(maps["urban_rural"]), "UrbanRural (name)", "urban/rural class", log,
                 keep & (urban != ""))
    log.raise_if_any("nothing was imported")

    lookup = lambda s, m: s.str.casefold().map(folded(m)).fillna("")  # noqa: E731
    cells = {
        "urn": get("URN"), "name": get("EstablishmentName"), "la_code": get("LA (code)"),
        "la_name": get("LA (name)"), "region": lookup(region, maps["region"]),
        "phase": lookup(phase, maps["phase"]),
        "establishment_type": lookup(etype, maps["establishment_type"]),
        "urban_rural": lookup(urban, maps["urban_rural"]),
        "easting": get("Easting"), "northing": get("Northing"),
        "opened": get("OpenDate"), "closed": get("CloseDate"),
    }
    table = text_table(raw, cells)
    table.cells = table.cells[keep]
    schools = validate("schools", table)
    schools.data.index = table.cells.index
    context = pd.DataFrame({"urn": schools.data["urn"], "pupils": get("NumberOfPupils")[keep],
                            "fsm_pct": get("PercentageFSM")[keep], "census": get("CensusDate")[keep]})
    return raw, schools, tally, context


def _classify(text, known: dict, excluded: set, column: str, what: str, reason: str, tally: Tally,
              log: ProblemLog, among: pd.Series | None = None) -> pd.Series:
    """Rows to keep: known values. Excluded values are tallied; anything else is a problem."""
    among = pd.Series(True, index=text.index) if among is None else among
    low = text.str.casefold()
    out = low.isin(excluded)
    for value in sorted(text[out & among].unique()):
        tally.add_mask((text == value) & among, f"{reason} ({column} {value!r})")
    _check_known(text, known, column, what, log, among & ~out, extra=excluded)
    return ~out


def _check_known(text, known: dict, column: str, what: str, log: ProblemLog, among: pd.Series,
                 extra: set = frozenset()) -> None:
    bad = among & ~text.str.casefold().isin(set(known) | set(extra))
    log.add_rows(bad[bad].index, column, text[bad],
                 f"unknown {what}: not listed in data_schemas/dfe_mappings.toml (expected one of "
                 + ", ".join(sorted(known)[:6]) + ", ...)")


def collapse(per_urn: pd.DataFrame, mapping: dict[int, int]) -> pd.DataFrame:
    """One row per school: URNs joined by links become the root URN's row (see module docstring)."""
    frame = per_urn.copy()
    frame["school_urn"] = [mapping.get(int(u), int(u)) for u in frame["urn"]]
    frame["_order"] = frame["opened"].fillna(pd.Timestamp.min.ceil("s"))
    frame = frame.sort_values(["school_urn", "_order", "urn"], kind="stable")
    latest = frame.groupby("school_urn", sort=True).tail(1).set_index("school_urn")
    # the earliest URN's opening (empty = before records began), not the earliest known date
    first_open = frame.groupby("school_urn", sort=True).head(1).set_index("school_urn")["opened"]
    out = latest.copy()
    out["opened"] = first_open.reindex(out.index).astype("datetime64[s]")
    out["urn"] = out.index.astype("Int64")
    out = out.reset_index(drop=True)[SCHOOL_COLUMNS]
    return out.sort_values("urn").reset_index(drop=True)


def staging_frame(per_urn: pd.DataFrame, mapping: dict[int, int]) -> pd.DataFrame:
    """Derived table ``gias_establishments``: every original URN's school row with its stable school id."""
    out = per_urn[SCHOOL_COLUMNS].copy()
    out.insert(1, "school_urn", [mapping.get(int(u), int(u)) for u in out["urn"]])
    for col in out.columns:
        if isinstance(out[col].dtype, pd.CategoricalDtype) or out[col].dtype == "string":
            out[col] = out[col].astype(object).where(out[col].notna(), None)
    return out.sort_values("urn").reset_index(drop=True)


def per_urn_from_staging(staging: pd.DataFrame) -> pd.DataFrame:
    """The per-URN school rows back from ``gias_establishments``, with the schools schema's dtypes."""
    schema = load_schema("schools")
    out = {}
    for name in SCHOOL_COLUMNS:
        spec = schema.column(name)
        col = staging[name]
        if spec.type == "category":
            col = pd.Categorical(col.astype(object).where(col.notna(), None), categories=list(spec.allowed))
        elif spec.type == "date":
            col = pd.to_datetime(col).astype("datetime64[s]")
        else:
            col = col.astype(spec.pandas_dtype)
        out[name] = col
    return pd.DataFrame(out)


def context_table(raw: RawTable, context: pd.DataFrame, mapping: dict[int, int]) -> tuple[RawTable | None, str]:
    """Census context as school_years text (urn, year, pupils, fsm_pct), or None with the reason."""
    has = (context["pupils"] != "") | (context["fsm_pct"] != "")
    if not has.any():
        return None, "no NumberOfPupils or PercentageFSM values: no school_years context"
    dates = pd.to_datetime(context["census"], format="%d-%m-%Y", errors="coerce").fillna(
        pd.to_datetime(context["census"], format="%d/%m/%Y", errors="coerce"))
    usable = has & dates.notna()
    if not usable.any():
        return None, "no CensusDate column (or no dates in it): pupils and FSM not imported as school_years context"
    ctx = context[usable]
    years = academic_year(dates[usable])
    urns = [mapping.get(int(u), int(u)) for u in ctx["urn"]]
    frame = pd.DataFrame({"urn": [str(u) for u in urns], "year": [str(y) for y in years],
                          "pupils": ctx["pupils"], "fsm_pct": ctx["fsm_pct"]}, index=ctx.index)
    # a school with two URNs in one census year: keep the latest URN's (the last row after sorting by URN)
    order = ctx["urn"].astype(int).to_numpy()
    frame = frame.iloc[order.argsort(kind="stable")]
    frame = frame[~frame.duplicated(["urn", "year"], keep="last")].sort_index()
    table = RawTable(raw.label, raw.path, frame, raw.sha256, raw.kind)
    note = (f"pupils and fsm_pct of {len(frame)} schools merged into school_years for census year(s) "
            + ", ".join(str(y) for y in sorted(set(int(y) for y in frame['year']))) + " (from CensusDate)")
    return table, note
