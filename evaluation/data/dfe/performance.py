"""KS2 and KS4 performance tables (england_ks2final.csv, england_ks4final.csv) -> school_years.

DfE conventions relied on (``data_schemas/dfe_performance.toml`` holds the details):

* one file per academic year; the year is not a column. It is taken from ``--year``,
  else from the file's name or its folder, which DfE's download names like
  ``2018-2019`` (the year is the one the academic year ends in, here 2019);
* RECTYPE says whether a row is a school or an LA or national total, with codes that
  differ between KS2 and KS4 and changed between years; only school rows with a URN
  are kept, others are counted; a code the list does not name is counted and its
  rows skipped (the code and first rows are in the notes), never a stop;
* NFTYPE (school type) codes changed too (e.g. converter academies "ACC" from 2012);
  it only labels the kept rows in the notes;
* headline measures keep their DfE column names, except where DfE renamed one (the
  mapping by year range is in the TOML file);
* suppression and special codes (SUPP, NE, NP, LOWCOV, NEW, x, c, ...) become missing
  values with the reason kept (``data_schemas/markers.toml``); percentages may be
  written "45%" or "45".

URNs are mapped to the school's stable id (``links.py``); if a predecessor and its
successor both have a row for the year, the successor's row is kept.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from evaluation.data.dfe.common import Tally, cell, norm, read_download, relabel, text_table
from evaluation.data.dfe.mappings import in_years, performance_mappings
from evaluation.data.validate import RawTable, ValidatedTable, validate
from evaluation.errors import InputError, problem

_ACADEMIC_YEAR = re.compile(r"(?<!\d)((?:19|20)\d\d)[-_ ]?((?:19|20)?\d\d)(?!\d)")


def infer_year(path: str | Path) -> tuple[int, str] | None:
    """The academic year (its end) from the file name or its folder, e.g. ``2018-2019`` -> 2019."""
    path = Path(path)
    for where, text in (("file name", path.name), ("folder name", path.parent.name)):
        for m in _ACADEMIC_YEAR.finditer(text):
            start, end = int(m.group(1)), m.group(2)
            end_year = int(end) if len(end) == 4 else (start // 100) * 100 + int(end)
            if end_year == start + 1:
                return end_year, f"from the {where} {text!r}"
    return None


def resolve_year(path: str | Path, year: int | None, kind: str) -> tuple[int, str]:
    if year is not None:
        if not 1990 <= year <= 2100:
            raise InputError(problem(f"--year {year}: expected an academic year end between 1990 and 2100",
                                     file=Path(path).name))
        return year, "from --year"
    found = infer_year(path)
    if found is None:
        raise InputError(problem(
            f"cannot tell which academic year this {kind.upper()} table is for: pass --year YYYY (the year the "
            "academic year ends, 2019 for 2018/19) or keep the file in DfE's folder named like 2018-2019",
            file=Path(path).name))
    return found


def conventions(kind: str, year: int) -> tuple[dict, dict]:
    """(RECTYPE rule, NFTYPE codes) in force for a ``kind`` (ks2, ks4) table of ``year``."""
    maps = performance_mappings()
    rect = next(r for r in maps["rectype"] if kind in r.get("kinds", [kind]) and in_years(r, year))
    nf = next(n for n in maps["nftype"] if in_years(n, year))
    return rect, nf["codes"]


def field_columns(kind: str, year: int, file_columns: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Our field -> the DfE column used for ``year`` (first listed that the file has), and notes."""
    spec = performance_mappings()[kind]["columns"]
    chosen, notes = {}, []
    for field, options in spec.items():
        candidates = [o["column"] for o in options if in_years(o, year)]
        hit = next((c for c in candidates if norm(c) in file_columns), None)
        if hit is None:
            continue
        chosen[field] = hit
        if len(options) > 1:
            notes.append(f"column {hit} read as {field} (the {year} name; renamed across years, see "
                         "data_schemas/dfe_performance.toml)")
    return chosen, notes


def read_performance(path, kind: str, year: int, schools: pd.DataFrame,
                     mapping: dict[int, int]) -> tuple[RawTable, ValidatedTable, Tally, list[str], list[str]]:
    """Validate the file's school rows as school_years; returns raw, table, tally, fields read, notes."""
    raw, columns = read_download(path, kind, ("RECTYPE", "URN"))
    get = lambda name: cell(raw, columns, name)  # noqa: E731
    fields, notes = field_columns(kind, year, columns)
    if not fields:
        wanted = sorted({o["column"] for opts in performance_mappings()[kind]["columns"].values() for o in opts})
        raise InputError(problem(f"none of the {kind.upper()} headline columns for {year} is in the file "
                                 f"(expected some of {', '.join(wanted)}): is this the right table and year?",
                                 file=raw.label, row=1))
    rect, nftypes = conventions(kind, year)
    rectype_text = get("RECTYPE")
    rectype = pd.to_numeric(rectype_text, errors="coerce")
    labels = {int(k): v for k, v in rect["labels"].items()}
    tally = Tally()
    # a code the year's list does not name: counted and skipped with the code, never a stop
    unknown = rectype.isna() | ~rectype.isin(list(labels))
    tally.add_unknown(rectype_text, unknown, "RECTYPE", f"{kind.upper()} {year} record type",
                      "listed: " + ", ".join(map(str, labels)) + " in data_schemas/dfe_performance.toml")
    is_school = rectype.isin(rect["school"]) & ~unknown
    for code in sorted(set(rectype[~is_school & ~unknown].astype(int))):
        tally.add_mask(rectype == code, f"not a school (RECTYPE {code}: {labels[code]})")
    urn_text = get("URN")
    urn = pd.to_numeric(urn_text.where(urn_text != ""), errors="coerce")
    no_urn = is_school & (urn.isna() | (urn % 1 != 0) | (urn < 100000) | (urn > 999999))
    tally.add_mask(no_urn, "school row without a valid URN")
    keep = is_school & ~no_urn
    urn = urn.where(keep).astype("Int64")
    school = pd.Series(pd.NA, index=urn.index, dtype="Int64")
    school[keep] = [mapping.get(int(u), int(u)) for u in urn[keep]]
    known = school.isin(schools["urn"].dropna())
    tally.add_mask(keep & ~known, "URN not among the store's schools (not in the GIAS establishments imported, "
                                  "or not a school in England)")
    keep &= known
    # a predecessor and successor both reported: keep the successor's row (the URN that is not the stable id)
    order = pd.DataFrame({"school": school, "is_root": urn == school})[keep].sort_values("is_root", kind="stable")
    dup = order.duplicated("school", keep="first")
    tally.add("predecessor URN's row for a school whose successor URN also has a row this year", int(dup.sum()))
    keep &= ~keep.index.isin(order.index[dup])
    nf = get("NFTYPE")[keep]
    summary = ", ".join(f"{n} {code or '(blank)'}" + (f" {nftypes[code]}" if code in nftypes else " (unknown code)")
                        for code, n in nf.value_counts().sort_index().items())
    if summary:
        notes.append(f"kept school rows by NFTYPE: {summary}")
    cells = {"urn": school.astype(str), "year": pd.Series(str(year), index=school.index)}
    cells |= {f: get(col) for f, col in fields.items()}
    table = text_table(raw, cells)
    table.cells = table.cells[keep]
    try:
        vt = validate("school_years", table, {"schools": schools})
    except InputError as err:
        raise relabel(err, fields) from None
    return raw, vt, tally, list(fields), notes
