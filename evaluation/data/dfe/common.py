"""Shared pieces of the DfE importers: reading and checking a download, recognising
its kind, tallying rejected rows, and provenance notes.

DfE conventions relied on: downloads are CSV with a header row, in Windows-1252 or
UTF-8 (GIAS adds a byte-order mark to some exports); column names are fixed per
file kind (GIAS: "URN", "LA (code)", "Group UID", "LinkURN", ...; performance tables:
"RECTYPE", "URN", ...); dates are day-first (``01/09/2014``).
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from evaluation.data.csv_input import decode_text
from evaluation.data.validate import RawTable, ValidatedTable, read_raw
from evaluation.errors import InputError, Problem, problem

#: Columns that identify each kind of file (the first is the key column).
SIGNATURES: dict[str, tuple[str, ...]] = {
    "gias-establishments": ("URN", "EstablishmentName", "TypeOfEstablishment (name)"),
    "gias-groups": ("Group UID", "Group Name", "Group Type"),
    "gias-group-links": ("Group UID", "URN", "Group Type"),
    "gias-links": ("URN", "LinkURN", "LinkType"),
    "gias-trust-history": ("URN", "Group UID", "Date Joined Group"),
    "ks2": ("RECTYPE", "URN", "TELIG"),
    "ks4": ("RECTYPE", "URN", "TPUP"),
}

TITLES = {
    "gias-establishments": "GIAS establishments file (edubasealldataYYYYMMDD.csv)",
    "gias-groups": "GIAS groups file (allgroupsdataYYYYMMDD.csv)",
    "gias-group-links": "GIAS group links file",
    "gias-links": "GIAS establishment links file",
    "gias-trust-history": "GIAS academies trust membership history (academiesmatmembershipYYYYMMDD.csv)",
    "ks2": "KS2 performance table (england_ks2final.csv)",
    "ks4": "KS4 performance table (england_ks4final.csv)",
}


#: A column only one kind of file has: a file with it is refused as any other kind (the
#: trust membership history also has every column the group links file requires).
CLAIMS: dict[str, str] = {"gias-trust-history": "Date Joined Group"}


def norm(name: str) -> str:
    """A column name as compared: BOM and surrounding spaces removed, inner spaces single, case folded."""
    return re.sub(r"\s+", " ", str(name).replace("\ufeff", "").strip()).casefold()


def read_download(path: str | Path, kind: str, required: tuple[str, ...]) -> tuple[RawTable, dict[str, str]]:
    """Read a DfE CSV, check it is complete and of the expected kind.

    Returns the raw table and a mapping DfE column name -> the file's column name
    (for ``required`` and any other column of the file)."""
    raw = read_raw(path)
    if raw.kind != "csv":
        raise InputError(problem(f"expected the CSV file DfE publishes ({TITLES[kind]}), found {raw.kind}",
                                 file=raw.label))
    _check_complete(raw)
    columns = {norm(c): c for c in raw.cells.columns}
    missing = [c for c in required if norm(c) not in columns]
    if missing:
        guess = [k for k, sig in SIGNATURES.items() if k != kind and all(norm(c) in columns for c in sig)]
        hint = f"; the columns look like a {TITLES[guess[0]]}: use KIND {guess[0]}" if guess else ""
        what = "missing" if len(missing) == 1 else f"missing (and {len(missing) - 1} more: "\
               + ", ".join(repr(m) for m in missing[1:]) + ")"
        raise InputError(problem(f"required column {missing[0]!r} is {what}: expected a {TITLES[kind]}{hint}",
                                 file=raw.label, row=1, column=missing[0]))
    for other, column in CLAIMS.items():
        if other != kind and norm(column) in columns:
            raise InputError(problem(f"the file has the column {column!r} of a {TITLES[other]}: expected a "
                                     f"{TITLES[kind]}; use KIND {other}", file=raw.label, row=1, column=column))
    if raw.cells.empty:
        raise InputError(problem("the file has a header but no data rows", file=raw.label, row=2))
    return raw, columns


def _check_complete(raw: RawTable) -> None:
    """Every row must have as many fields as the header: a short row means a cut-off download."""
    text, dialect = decode_text(raw.path, getattr(raw, "dialect", None))  # the encoding and separator read_raw found
    rows = csv.reader(io.StringIO(text, newline=""), delimiter=dialect.delimiter)
    header = next(rows, [])
    for line, fields in enumerate(rows, start=2):
        if fields and len(fields) < len(header):
            raise InputError(problem(
                f"the row has {len(fields)} of the header's {len(header)} columns: the file looks truncated "
                "(download it again); nothing was imported",
                file=raw.label, row=line, column=header[len(fields)], value=fields[-1]))


def cell(raw: RawTable, columns: dict[str, str], name: str) -> pd.Series:
    """The text of DfE column ``name`` (trimmed), or empty text if the file lacks it."""
    col = columns.get(norm(name))
    if col is None:
        return pd.Series("", index=raw.cells.index, dtype=object)
    return raw.cells[col].astype(str).str.strip()


EXAMPLE_ROWS = 5


class Tally:
    """Counts rejected rows by reason, for the provenance notes. For some reasons (codes
    no list names) the first few row numbers are kept too, so the one note line per
    reason says where to look: "150 rows: RECTYPE '9' ... (rows 12, 13, 14, ...)"."""

    def __init__(self) -> None:
        self.reasons: Counter[str] = Counter()
        self.rows: dict[str, list[int]] = {}

    def add(self, reason: str, n: int = 1) -> None:
        if n:
            self.reasons[reason] += n

    def add_mask(self, mask: pd.Series, reason: str, show_rows: bool = False) -> None:
        self.add(reason, int(mask.sum()))
        if show_rows and mask.any():
            self.rows.setdefault(reason, []).extend(int(r) for r in mask[mask].index[:EXAMPLE_ROWS])

    def add_unknown(self, values: pd.Series, unknown: pd.Series, column: str, what: str, where: str) -> None:
        """Rows whose ``column`` holds a code no list names: one reason per distinct code,
        counted and skipped (never a stop for the whole file). ``where`` names the list."""
        for value in sorted(values[unknown].unique()):
            self.add_mask(unknown & (values == value),
                          f"{column} {value!r} is not a known {what} ({where}): skipped", show_rows=True)

    @property
    def total(self) -> int:
        return sum(self.reasons.values())

    def notes(self) -> list[str]:
        out = []
        for reason, n in sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0])):
            line = f"{n} row{'s' if n != 1 else ''}: {reason}"
            rows = self.rows.get(reason)
            if rows:
                line += f" (row{'s' if n != 1 else ''} " + ", ".join(map(str, rows[:EXAMPLE_ROWS])) \
                        + (", ..." if n > EXAMPLE_ROWS else "") + ")"
            out.append(line)
        return out


@dataclass
class ImportedTable(ValidatedTable):
    """A validated table whose ``data`` may hold more rows than came from the file
    (the file's rows merged into the table already in the store). ``kept`` is the
    number of the file's rows that were kept, which provenance records."""

    kept: int | None = None

    @property
    def rows(self) -> int:  # type: ignore[override]
        return len(self.data) if self.kept is None else self.kept


@dataclass
class Provenance:
    """What one import read, kept and rejected, written into the imports table's notes."""

    kind: str
    file: str
    rows_read: int
    kept: int
    tally: Tally
    year: int | None = None
    year_source: str | None = None
    extra: list[str] = field(default_factory=list)

    def notes(self) -> list[str]:
        head = f"kind {self.kind}"
        if self.year is not None:
            head += f"; year {self.year}" + (f" ({self.year_source})" if self.year_source else "")
        out = [head, f"rows read {self.rows_read}, kept {self.kept}, rejected {self.tally.total}"]
        out += [f"rejected {n}" for n in self.tally.notes()]
        return out + self.extra


def relabel(err: InputError, names: dict[str, str]) -> InputError:
    """Name DfE's column in each problem (``ks4_progress8`` -> ``P8MEA (ks4_progress8)``)."""
    def one(p: Problem) -> Problem:
        if p.column in names:
            return Problem(p.expected, p.file, p.row, f"{names[p.column]} ({p.column})", p.value, p.has_value)
        return p
    counts = None if err.counts is None else {
        (f, f"{names[c]} ({c})" if c in names else c, e): n for (f, c, e), n in err.counts.items()}
    return InputError([one(p) for p in err.problems], total=err.total, summary=err.summary, counts=counts)


def text_table(raw: RawTable, cells: dict[str, pd.Series], index=None) -> RawTable:
    """A RawTable of our column names holding text derived from a DfE file (row numbers kept)."""
    frame = pd.DataFrame(cells, index=raw.cells.index if index is None else index).astype(object)
    return RawTable(raw.label, raw.path, frame.fillna(""), raw.sha256, raw.kind)
