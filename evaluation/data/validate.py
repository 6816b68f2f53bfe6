"""Read an input file and validate it against its schema in ``data_schemas/``.

Every problem is reported with file, row, column, value and what was expected,
all problems of a file at once (up to ``PROBLEM_CAP``). Rows are numbered as a
person sees them: for CSV the line number (header = line 1); for Parquet the
1-based record number.

Steps: read as text -> match column names (case and spacing forgiven; misspelt
names get a suggestion) -> parse each column by its declared type, turning DfE
suppression markers into missing values while keeping the code -> per-table rules
with pandera (nullability, ranges, unique keys, row checks) -> cross-table rules
(references to other tables, dates within the referenced row's open/close dates).
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import pandera.pandas as pa

from evaluation.data.csv_input import Dialect, decimal_commas, one_column_hint, read_csv
from evaluation.data.schema import ColumnSpec, TableSchema, load_schema, missing_markers
from evaluation.errors import InputError, Problem, problem

PROBLEM_CAP = 200
MISSING_COLUMNS = ["table_name", "row_key", "urn", "year", "column_name", "code", "meaning"]

_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}
_DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y", "%d-%m-%Y", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S",
                 "%d/%m/%Y %H:%M", "%d/%m/%Y %H:%M:%S")


@dataclass
class RawTable:
    """A file's cells as text, indexed by the row number a person would see."""

    label: str
    path: Path | None
    cells: pd.DataFrame
    sha256: str | None = None
    kind: str = "csv"
    dialect: Dialect | None = None  # for CSV: the encoding and separator found (recorded in the notes)


@dataclass
class ValidatedTable:
    """A table that passed validation: typed data, the kept reasons for missing values,
    and notes (columns ignored or renamed)."""

    name: str
    data: pd.DataFrame
    missing: pd.DataFrame
    source: RawTable
    notes: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.data)


class ProblemLog:
    """Collects problems up to a cap, counting all of them, and each kind of them (same
    column and expectation), so a grouped listing gives the count over the whole file."""

    def __init__(self, label: str, cap: int = PROBLEM_CAP):
        self.label = label
        self.cap = cap
        self.items: list[Problem] = []
        self.total = 0
        self.counts: dict[tuple, int] = {}

    def _count(self, column, expected: str, n: int = 1) -> None:
        key = (self.label, column, expected)
        self.counts[key] = self.counts.get(key, 0) + n
        self.total += n

    def add(self, expected: str, *, row=None, column=None, **value) -> None:
        self._count(column, expected)
        if len(self.items) < self.cap:
            self.items.append(problem(expected, file=self.label, row=row, column=column, **value))

    def add_rows(self, rows, column: str, values, expected) -> None:
        """One problem per row; ``expected`` is a string or a per-row sequence."""
        values = list(values)
        rows = list(rows)
        per_row = not isinstance(expected, str)
        for i, (row, value) in enumerate(zip(rows, values)):
            if len(self.items) >= self.cap:
                if per_row:
                    for e in list(expected)[i:len(rows)]:
                        self._count(column, e)
                else:
                    self._count(column, expected, len(rows) - i)
                return
            self.add(expected[i] if per_row else expected, row=int(row), column=column, value=value)

    def raise_if_any(self, what: str) -> None:
        if self.total:
            raise InputError(self.items, total=self.total, counts=self.counts,
                             summary=f"{self.label}: {self.total} problem(s) found; {what}")


# --------------------------------------------------------------------------- reading


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_raw(path: str | Path) -> RawTable:
    """Read a CSV or Parquet file as text cells. Unreadable files are InputErrors.

    CSV files go through :func:`evaluation.data.csv_input.read_csv`: UTF-8 (BOM or not),
    Windows-1252 and UTF-16/32 with a BOM; comma, semicolon or tab separated."""
    path = Path(path)
    label = path.name
    if not path.exists():
        raise InputError(problem(f"file not found: {path}", file=str(path)))
    if path.is_dir():
        raise InputError(problem("expected a file, found a directory", file=str(path)))
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            frame = pd.read_parquet(path)
        except Exception as err:  # pyarrow raises many types for corrupt files
            raise InputError(problem(f"cannot read as Parquet ({err})", file=label)) from None
        cells = _frame_as_text(frame)
        cells.index = pd.RangeIndex(1, len(cells) + 1)
        return RawTable(label, path, cells, file_sha256(path), "parquet")
    if suffix not in (".csv", ".txt", ".tsv"):
        raise InputError(problem(f"unsupported file type {suffix or '(none)'!r}: expected .csv or .parquet",
                                 file=label))
    cells, dialect = read_csv(path, label=label, as_text=True, default_delimiter="\t" if suffix == ".tsv" else ",")
    cells.index = pd.RangeIndex(2, len(cells) + 2)  # header is line 1
    return RawTable(label, path, cells, file_sha256(path), "csv", dialect)


def raw_from_frame(frame: pd.DataFrame, label: str) -> RawTable:
    """Wrap an in-memory DataFrame (e.g. from the generator) as if read from a file."""
    cells = _frame_as_text(frame)
    cells.index = pd.RangeIndex(1, len(cells) + 1)
    return RawTable(label, None, cells, None, "frame")


def _frame_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    out = {}
    for name in frame.columns:
        col = frame[name]
        if pd.api.types.is_datetime64_any_dtype(col):
            text = col.dt.strftime("%Y-%m-%d")
        elif pd.api.types.is_bool_dtype(col):
            text = col.map({True: "true", False: "false"})
        elif pd.api.types.is_float_dtype(col):
            # repr round-trips every float exactly
            text = pd.Series([repr(float(v)) for v in col.to_numpy(dtype=float, na_value=np.nan)],
                             index=col.index)
        else:
            text = col.astype("object").map(lambda v: "" if v is None else str(v))
        out[str(name)] = text.where(col.notna(), "").astype(object)
    return pd.DataFrame(out, index=frame.index)


# --------------------------------------------------------------------------- columns


def _normalise_name(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", str(name).replace("\ufeff", "").strip()).lower()


def match_columns(schema: TableSchema, raw: RawTable, log: ProblemLog) -> tuple[dict[str, str], list[str]]:
    """Map schema column -> file column. Returns the mapping and notes."""
    notes = []
    file_cols = list(raw.cells.columns)
    by_norm: dict[str, str] = {}
    for col in file_cols:
        norm = _normalise_name(col)
        if norm in by_norm:
            log.add(f"the column name appears twice (also as {by_norm[norm]!r})", row=1 if raw.kind == "csv" else None,
                    column=col)
        by_norm[norm] = col
    mapping: dict[str, str] = {}
    for spec in schema.columns:
        if spec.name in by_norm:
            mapping[spec.name] = by_norm[spec.name]
            if by_norm[spec.name] != spec.name:
                notes.append(f"column {by_norm[spec.name]!r} read as {spec.name!r}")
    unmatched = [c for c in file_cols if _normalise_name(c) not in mapping]
    missing = [s for s in schema.columns if s.name not in mapping]
    header_row = 1 if raw.kind == "csv" else None
    for spec in missing:
        close = difflib.get_close_matches(spec.name, [_normalise_name(c) for c in unmatched], n=1, cutoff=0.75)
        if close:
            found = by_norm[close[0]]
            log.add(f"column {spec.name!r} is missing; the file has {found!r}: did you mean {spec.name!r}?",
                    row=header_row, column=found)
        elif spec.required:
            log.add(f"required column {spec.name!r} is missing (the {schema.name} columns are described in "
                    f"data_schemas/{schema.name}.toml)", row=header_row, column=spec.name)
    suggested = {c for c in unmatched
                 if difflib.get_close_matches(_normalise_name(c), [s.name for s in missing], n=1, cutoff=0.75)}
    ignored = [c for c in unmatched if c not in suggested]
    if ignored:
        notes.append(f"ignored column(s) not in the {schema.name} schema: {', '.join(map(repr, ignored))}")
    return mapping, notes


# --------------------------------------------------------------------------- parsing


def _parse_numbers(text: pd.Series, spec: ColumnSpec) -> tuple[pd.Series, pd.Series]:
    cleaned = text.str.replace(r"(?<=\d),(?=\d{3}(?:\D|$))", "", regex=True)
    if spec.is_percent:
        cleaned = cleaned.str.replace(r"\s*%$", "", regex=True)
    values = pd.to_numeric(cleaned.where(cleaned != ""), errors="coerce").astype("float64")
    bad = values.isna() & (cleaned != "")
    if spec.type == "integer":
        frac = values.notna() & (values % 1 != 0)
        bad |= frac
        values = values.where(~frac)
    return values, bad


def parse_dates(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    result = pd.Series(pd.NaT, index=text.index, dtype="datetime64[s]")
    todo = text != ""
    for fmt in _DATE_FORMATS:
        if not todo.any():
            break
        parsed = pd.to_datetime(text[todo], format=fmt, errors="coerce")
        ok = parsed.notna()
        result.loc[ok[ok].index] = parsed[ok].dt.floor("D").astype("datetime64[s]")
        todo.loc[ok[ok].index] = False
    return result, todo


def _parse_booleans(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    low = text.str.lower()
    values = pd.Series(pd.NA, index=text.index, dtype="boolean")
    values[low.isin(_TRUE)] = True
    values[low.isin(_FALSE)] = False
    bad = (text != "") & ~low.isin(_TRUE | _FALSE)
    return values, bad


def _parse_categories(text: pd.Series, spec: ColumnSpec) -> tuple[pd.Series, pd.Series, pd.Series]:
    allowed = list(spec.allowed or ())
    lookup = {_normalise_name(a): a for a in allowed}
    canon = text.map(lambda v: lookup.get(_normalise_name(v)) if v != "" else None)
    bad = (text != "") & canon.isna()
    hints = pd.Series("", index=text.index, dtype=object)
    if bad.any():
        for value in text[bad].unique():
            close = difflib.get_close_matches(_normalise_name(value), list(lookup), n=1, cutoff=0.6)
            hint = f"; did you mean {lookup[close[0]]!r}?" if close else ""
            hints[bad & (text == value)] = hint
    return pd.Series(pd.Categorical(canon, categories=allowed), index=text.index), bad, hints


def parse_column(text: pd.Series, spec: ColumnSpec, log: ProblemLog,
                 markers: Mapping[str, str]) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Parse one column of text by its spec.

    Returns typed values, the marker code per row ("" if none) and a mask of cells
    that could not be parsed (already reported to ``log``)."""
    text = text.astype(str).str.strip()
    is_marker = text.isin(list(markers))
    codes = text.where(is_marker, "")
    if is_marker.any() and not spec.suppressible:
        rows = is_marker[is_marker].index
        log.add_rows(rows, spec.name, text[rows],
                     f"expected {spec.expectation()}; a suppression marker is not allowed in this column")
    text = text.where(~is_marker, "")
    if spec.type in ("integer", "number"):
        values, bad = _parse_numbers(text, spec)
        if spec.type == "integer":
            values = values.astype("Int64")
        expected = f"expected {spec.expectation()}"
        if spec.suppressible:
            expected += " (or a DfE marker such as SUPP, NE, NP, LOWCOV, x, c)"
        log.add_rows(bad[bad].index, spec.name, text[bad], expected)
    elif spec.type == "date":
        values, bad = parse_dates(text)
        log.add_rows(bad[bad].index, spec.name, text[bad], f"expected {spec.expectation()}")
    elif spec.type == "boolean":
        values, bad = _parse_booleans(text)
        log.add_rows(bad[bad].index, spec.name, text[bad], "expected true or false (also yes/no, 1/0)")
    elif spec.type == "category":
        values, bad, hints = _parse_categories(text, spec)
        what = "partnership type" if spec.name == "type" else spec.name.replace("_", " ")
        log.add_rows(bad[bad].index, spec.name, text[bad],
                     [f"unknown {what}: expected {spec.expectation()}{h}" for h in hints[bad]])
    else:
        values = text.where(text != "").astype("string")
        bad = pd.Series(False, index=text.index)
    return values, codes, bad | (is_marker & (not spec.suppressible))


# --------------------------------------------------------------------------- table rules


_OPS = {">=": np.greater_equal, ">": np.greater, "<=": np.less_equal, "<": np.less}


def _pandera_schema(schema: TableSchema) -> pa.DataFrameSchema:
    columns = {}
    for spec in schema.columns:
        checks = []
        if spec.type in ("integer", "number") and (spec.min is not None or spec.upper is not None):
            lo = -np.inf if spec.min is None else spec.min
            hi = np.inf if spec.upper is None else spec.upper
            checks.append(pa.Check.in_range(lo, hi))  # reported as "in_range(lo, hi)"
        columns[spec.name] = pa.Column(nullable=spec.nullable, checks=checks, required=True)
    row_checks = []
    for chk in schema.table.checks:
        def rule(df, chk=chk):
            left, right = df[chk.left], df[chk.right]
            ok = _OPS[chk.op](left.to_numpy(), right.to_numpy())
            return pd.Series(ok, index=df.index) | left.isna() | right.isna()
        row_checks.append(pa.Check(rule, name=f"{chk.left} {chk.op} {chk.right}", error=chk.expected))
    return pa.DataFrameSchema(columns, unique=list(schema.key), checks=row_checks,
                              report_duplicates="all", coerce=False)


def check_table_rules(schema: TableSchema, data: pd.DataFrame, raw: pd.DataFrame,
                      mapping: dict[str, str], codes: pd.DataFrame, log: ProblemLog,
                      unparsable: set[tuple[int, str]] = frozenset()) -> None:
    """Nullability, ranges, unique keys and row checks (pandera, lazily: all at once).

    Cells in ``unparsable`` (row, column) were already reported and are skipped."""
    try:
        _pandera_schema(schema).validate(data, lazy=True)
        return
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases
    key = list(schema.key)

    def raw_value(row, col):
        src = mapping.get(col)
        return raw.at[row, src] if src is not None and row in raw.index else None

    # pandera reports a DataFrame-level check under its error text
    row_check_names = {c.expected: c for c in schema.table.checks}
    dup_rows: set[int] = set()
    seen_row_checks: set[tuple[str, int]] = set()
    for case in cases.itertuples(index=False):
        check = str(case.check)
        row = None if pd.isna(case.index) else int(case.index)
        if (row, case.column) in unparsable:
            continue  # already reported as unparsable
        if check == "not_nullable":
            spec = schema.column(case.column)
            if spec.suppressible and row is not None and codes.at[row, spec.name]:
                log.add(f"a value is required here; {codes.at[row, spec.name]!r} is a suppression marker",
                        row=row, column=spec.name, value=codes.at[row, spec.name])
            else:
                log.add(f"a value is required: expected {spec.expectation()}", row=row, column=spec.name,
                        value=raw_value(row, spec.name) if row is not None else None)
        elif check.startswith("in_range"):
            spec = schema.column(case.column)
            log.add(f"expected {spec.expectation()}", row=row, column=spec.name,
                    value=raw_value(row, spec.name))
        elif check in ("multiple_fields_uniqueness", "field_uniqueness"):
            if row is not None:
                dup_rows.add(row)
        elif check in row_check_names:
            chk = row_check_names[check]
            if row is None or (check, row) in seen_row_checks:
                continue
            seen_row_checks.add((check, row))
            log.add(f"{chk.left} {raw_value(row, chk.left)!r} is before {chk.right} "
                    f"{raw_value(row, chk.right)!r}: expected {chk.expected}",
                    row=row, column=chk.left, value=raw_value(row, chk.left))
        else:  # pragma: no cover - a pandera check we did not declare
            log.add(f"failed check {check}", row=row, column=case.column, value=case.failure_case)
    if dup_rows:
        dups = data.loc[sorted(dup_rows), key]
        for _, group in dups.groupby(key, sort=False, dropna=False):
            rows = list(group.index)
            label = ", ".join(f"{k}={group.iloc[0][k]}" for k in key)
            for row in rows[1:]:
                log.add(f"duplicate key ({label}): the same key is on row {rows[0]}; expected one row per "
                        f"{' and '.join(key)}", row=row, column=key[-1], value=raw_value(row, key[-1]))


def check_references(schema: TableSchema, data: pd.DataFrame, raw: pd.DataFrame, mapping: dict[str, str],
                     references: Mapping[str, pd.DataFrame], log: ProblemLog) -> None:
    """Foreign keys and date windows against other tables (from the store or the same batch)."""
    for spec in schema.columns:
        if not spec.references:
            continue
        ref_table, ref_col = spec.references.split(".")
        if ref_table not in references:
            log.add(f"cannot check {spec.name!r} against {ref_table}: import {ref_table} first",
                    column=spec.name)
            continue
        ref = references[ref_table]
        values = data[spec.name]
        unknown = values.notna() & ~values.isin(ref[ref_col].dropna())
        what = "school" if ref_table == "schools" else ref_table.rstrip("s")
        log.add_rows(unknown[unknown].index, spec.name, [raw.at[r, mapping[spec.name]] for r in unknown[unknown].index],
                     f"unknown {what}: no {ref_col} with this value in {ref_table}")
    for spec in schema.columns:
        for lower, upper in spec.within:
            ref_table, lo_col = lower.split(".")
            _, hi_col = upper.split(".")
            link = next((c for c in schema.columns if c.references and c.references.startswith(ref_table + ".")),
                        None)
            if link is None or ref_table not in references:
                continue
            ref_key = link.references.split(".")[1]
            ref = references[ref_table].drop_duplicates(ref_key).set_index(ref_key)
            keyvals = data[link.name]
            known = keyvals.isin(ref.index)
            lo = pd.Series(pd.NaT, index=data.index, dtype="datetime64[s]")
            hi = lo.copy()
            lo[known] = ref.loc[keyvals[known], lo_col].to_numpy()
            hi[known] = ref.loc[keyvals[known], hi_col].to_numpy()
            value = data[spec.name]
            early = value.notna() & lo.notna() & (value < lo)
            late = value.notna() & hi.notna() & (value > hi)
            noun = "school" if ref_table == "schools" else "partnership"
            for mask, word, bound in ((early, "opened", lo), (late, "closed", hi)):
                rows = mask[mask].index
                log.add_rows(rows, spec.name, [raw.at[r, mapping[spec.name]] for r in rows],
                             [f"{spec.name} date is {'before' if word == 'opened' else 'after'} the {noun} "
                              f"{keyvals[r]} {word} ({bound[r].date()}): expected a date between the {noun}'s "
                              f"{lo_col} and {hi_col} dates" for r in rows])


# --------------------------------------------------------------------------- entry points


def validate(table: str, raw: RawTable, references: Mapping[str, pd.DataFrame] | None = None) -> ValidatedTable:
    """Validate a raw table against ``data_schemas/<table>.toml``; raise InputError listing every problem."""
    schema = load_schema(table)
    log = ProblemLog(raw.label)
    if raw.cells.empty and not len(raw.cells.columns):
        raise InputError(problem("the file has no columns: expected a header row", file=raw.label))
    mapping, notes = match_columns(schema, raw, log)
    log.raise_if_any("the columns do not match the schema; nothing was imported"
                     + one_column_hint(raw.cells.columns, raw.dialect))
    markers = missing_markers()
    typed: dict[str, pd.Series] = {}
    code_cols: dict[str, pd.Series] = {}
    index = raw.cells.index
    unparsable: set[tuple[int, str]] = set()
    converted: dict[str, int] = {}
    for spec in schema.columns:
        if spec.name in mapping:
            text = raw.cells[mapping[spec.name]]
            if raw.dialect is not None and raw.dialect.delimiter == ";" and spec.type in ("integer", "number"):
                text, converted[spec.name], unclear, expected = decimal_commas(text)
                if unclear.any():  # reported here, left out of the parse (no second problem for the cell)
                    log.add_rows(unclear[unclear].index, spec.name, text[unclear], list(expected[unclear]))
                    unparsable.update((int(r), spec.name) for r in unclear[unclear].index)
                    text = text.where(~unclear, "")
            values, codes, bad = parse_column(text, spec, log, markers)
            unparsable.update((int(r), spec.name) for r in bad[bad].index)
        else:  # optional column absent from the file
            values = pd.Series(index=index, dtype=spec.pandas_dtype)
            codes = pd.Series("", index=index, dtype=object)
        typed[spec.name] = values.astype(spec.pandas_dtype) if spec.type != "category" else values
        code_cols[spec.name] = codes
    if raw.dialect is not None and not raw.dialect.is_plain:
        notes.insert(0, raw.dialect.with_decimal_commas(converted).note())
    data = pd.DataFrame(typed, index=index)
    codes = pd.DataFrame(code_cols, index=index)
    if len(data) == 0:
        log.add("the file has a header but no data rows")
    check_table_rules(schema, data, raw.cells, mapping, codes, log, unparsable)
    if references is not None:
        check_references(schema, data, raw.cells, mapping, references, log)
    log.raise_if_any("nothing was imported")
    return ValidatedTable(table, data.reset_index(drop=True), _missing_table(schema, data, codes, markers),
                          raw, notes)


def _missing_table(schema: TableSchema, data: pd.DataFrame, codes: pd.DataFrame,
                   markers: Mapping[str, str]) -> pd.DataFrame:
    """One row per cell that held a suppression marker: where, which code, what it means."""
    stacked = codes.stack()
    stacked = stacked[stacked != ""]
    if stacked.empty:
        return empty_missing_table()
    rows = stacked.index.get_level_values(0)
    key = data.loc[rows, list(schema.key)].reset_index(drop=True)
    row_key = key.astype(str).radd([f"{k}=" for k in schema.key]).agg(", ".join, axis=1) \
        if len(schema.key) > 1 else (f"{schema.key[0]}=" + key.iloc[:, 0].astype(str))
    out = pd.DataFrame({
        "table_name": schema.name,
        "row_key": row_key.to_numpy(),
        "urn": key["urn"].to_numpy() if "urn" in key else data.loc[rows, "urn"].to_numpy() if "urn" in data else pd.NA,
        "year": key["year"].to_numpy() if "year" in key else pd.NA,
        "column_name": stacked.index.get_level_values(1),
        "code": stacked.to_numpy(),
    })
    out["meaning"] = out["code"].map(markers)
    return out.astype({"urn": "Int64", "year": "Int64"})[MISSING_COLUMNS]


def empty_missing_table() -> pd.DataFrame:
    return pd.DataFrame({"table_name": pd.Series(dtype="string"), "row_key": pd.Series(dtype="string"),
                         "urn": pd.Series(dtype="Int64"), "year": pd.Series(dtype="Int64"),
                         "column_name": pd.Series(dtype="string"), "code": pd.Series(dtype="string"),
                         "meaning": pd.Series(dtype="string")})


def validate_file(table: str, path: str | Path,
                  references: Mapping[str, pd.DataFrame] | None = None) -> ValidatedTable:
    return validate(table, read_raw(path), references)
