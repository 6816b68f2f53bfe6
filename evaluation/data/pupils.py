"""Pupil-level data: validated with DuckDB over the files, stored as a Parquet dataset.

National pupil tables (10-20 million rows) never go through pandas whole. ``impact data import
pupils FILE`` reads a CSV file, a Parquet file or a directory of Parquet files (hive style, e.g.
``key_stage=KS4/year=2019/part-0.parquet``) with DuckDB, checks every cell against
``data_schemas/pupils.toml`` in SQL, and writes the rows as a Parquet dataset beside the store::

    <store dir>/<store stem>.pupils/
        key_stage=KS2/year=2019/part-0.parquet     (rows sorted by pupil_id; key_stage and year
        key_stage=KS4/year=2019/part-0.parquet      live in the directory names, hive style)
        _manifest.json                             (rows, files, their SHA-256, the content hash)

for the default store ``data/impact.duckdb`` that is ``data/impact.pupils/``. The DuckDB file keeps
the provenance (``imports``: file, SHA-256, rows) and the reasons for suppressed values
(``missing_values``), as for every other table; the pupils themselves are not in it.

How an import runs (all or nothing):

1. the source is read once into a staging DuckDB file in a temporary directory beside the store,
   each cell parsed by its declared type (text cells: DfE markers, yes/no, ``KS4``/``ks4``, ...) with
   a per-cell problem code; rows keep their place in the source (CSV: the line number, header = 1;
   Parquet: the file and the 1-based record within it);
2. the checks run in SQL on the staged table: unparsable cells, ranges, required values, key stage,
   the row checks of the schema, duplicate keys (and, with ``--append``, keys already stored), URNs
   not in the store's schools; any problem is an :class:`~evaluation.errors.InputError` listing the
   first ``PROBLEM_CAP`` (file, row, column, value, what was expected) with the count of all;
3. each (key_stage, year) partition is written with ``COPY (... ORDER BY pupil_id) TO ... (FORMAT
   PARQUET)`` into the temporary directory (with ``--append`` the files already stored are linked
   in beside the new ones), the manifest is written, the directory is renamed into place and the
   import recorded in the store, in one store transaction; on any failure the previous dataset and
   the store are left as they were.

One COPY per partition rather than ``COPY ... PARTITION_BY``: DuckDB's partitioned writer does not
keep the row order within a partition, so the same data would give different bytes from run to run;
sorted per-partition files are byte-identical for identical data (same DuckDB version), so the
content hash in the data fingerprint means "same pupils".
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import duckdb
import pandas as pd

from evaluation import __version__
from evaluation.data.csv_input import sniff
from evaluation.data.schema import ColumnSpec, TableSchema, load_schema, missing_markers
from evaluation.data.store_layout import IMPORTS_DDL, MISSING_DDL, default_store_path
from evaluation.data.validate import PROBLEM_CAP, ProblemLog, RawTable, file_sha256, match_columns
from evaluation.errors import InputError, problem

TABLE = "pupils"
DATASET_SUFFIX = ".pupils"
MANIFEST = "_manifest.json"
PARTITIONS = ("key_stage", "year")
PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
CSV_SUFFIXES = (".csv", ".tsv", ".txt", ".gz")
#: DuckDB's memory while staging and writing (it spills to the temporary directory beyond it)
MEMORY_ENV = "IMPACT_DUCKDB_MEMORY"
DEFAULT_MEMORY = "4GB"

_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")
#: DuckDB encodings for the ones :func:`evaluation.data.csv_input.sniff` finds
_DUCKDB_ENCODING = {"utf-8-sig": "utf-8", "cp1252": "latin-1", "utf-16": "utf-16"}
_NUMERIC_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
                  "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "REAL")

# per-cell problem codes in the staged table (column e_<name>)
_OK, _UNPARSABLE, _RANGE, _REQUIRED, _MARKER_NOT_ALLOWED, _MARKER_REQUIRED = 0, 1, 2, 3, 4, 5
_REFERENCE, _ROW_CHECK, _DUPLICATE, _IN_STORE = 10, 20, 30, 31


# --------------------------------------------------------------------------- where the data lives


def _store_file(store_path) -> Path:
    if store_path is None:
        return default_store_path()
    return Path(getattr(store_path, "path", store_path))  # a Store or a path


def pupils_path(store_path=None) -> Path:
    """The pupils dataset directory of a store: ``<store dir>/<store stem>.pupils``
    (``data/impact.duckdb`` -> ``data/impact.pupils``). ``store_path`` may be a path, a
    :class:`~evaluation.data.store.Store` or None (the default store)."""
    store = _store_file(store_path)
    return store.with_name(store.stem + DATASET_SUFFIX)


def has_pupils(store_path=None) -> bool:
    return (pupils_path(store_path) / MANIFEST).exists()


def _dataset_files(dataset: Path) -> list[Path]:
    return sorted(p for p in dataset.rglob("*.parquet") if p.is_file())


def _connect():
    """An in-memory DuckDB connection for reading the dataset (no progress bar on the terminal)."""
    return _quiet(duckdb.connect())


def _quiet(con):
    con.execute("SET enable_progress_bar = false")
    return con


def _sql_str(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def _sql_list(items) -> str:
    return "[" + ", ".join(_sql_str(x) for x in items) + "]"


def _ident(name: str) -> str:
    return '"' + str(name).replace('"', '""') + '"'


def dataset_scan(dataset: Path) -> str:
    """The DuckDB table function reading every Parquet file of the dataset, partitions as columns."""
    files = ", ".join(_sql_str(p) for p in _dataset_files(dataset))
    return (f"read_parquet([{files}], hive_partitioning=true, "
            "hive_types={'key_stage': VARCHAR, 'year': BIGINT})")


# --------------------------------------------------------------------------- reading


def read_pupils(store_path, columns: Iterable[str] | None = None, *, key_stage: str | Iterable[str] | None = None,
                urns: Iterable[int] | None = None, years: Iterable[int] | None = None) -> pd.DataFrame:
    """Pupils of the store as a DataFrame with the schema's dtypes, reading only ``columns`` (all when
    None) of the rows asked for: ``key_stage`` ("KS2", "KS4" or several), ``years`` and ``urns``
    (iterables). Key stage and year select partitions (other files are not opened); the other
    filters are pushed into the Parquet scan. Rows come sorted by key stage, year and pupil_id.
    A store without pupils gives an empty frame with the columns asked for."""
    schema = load_schema(TABLE)
    wanted = list(columns) if columns is not None else schema.column_names
    unknown = [c for c in wanted if c not in schema.column_names]
    if unknown:
        raise KeyError(f"pupils has no column(s) {unknown}")
    dataset = pupils_path(store_path)
    if not has_pupils(store_path) or not _dataset_files(dataset):
        return _empty_frame(schema, wanted)
    where, params = [], []
    if key_stage is not None:
        stages = [key_stage] if isinstance(key_stage, str) else list(key_stage)
        where.append(f"key_stage IN ({', '.join('?' for _ in stages)})" if stages else "false")
        params += [str(s) for s in stages]
    if years is not None:
        ys = [int(y) for y in years]
        where.append(f'"year" IN ({", ".join("?" for _ in ys)})' if ys else "false")
        params += ys
    con = _connect()
    try:
        if urns is not None:
            con.register("__urns", pd.DataFrame({"urn": pd.Series([int(u) for u in urns], dtype="int64")}))
            where.append("urn IN (SELECT urn FROM __urns)")
        cols = ", ".join(_ident(c) for c in wanted)
        sql = (f"SELECT {cols} FROM {dataset_scan(dataset)}" + (f" WHERE {' AND '.join(where)}" if where else "")
               + " ORDER BY key_stage, \"year\", pupil_id")
        relation = con.sql(sql, params=params)
        table = relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.arrow()
    finally:
        con.close()
    return _arrow_frame(table, schema)


def pupil_counts(store_path=None) -> pd.DataFrame:
    """Rows per (key_stage, year) of the store's pupils dataset (empty when it has none)."""
    dataset = pupils_path(store_path)
    empty = pd.DataFrame({"key_stage": pd.Series(dtype="string"), "year": pd.Series(dtype="int64"),
                          "rows": pd.Series(dtype="int64")})
    if not has_pupils(store_path) or not _dataset_files(dataset):
        return empty
    con = _connect()
    try:
        frame = con.execute(f"SELECT key_stage, \"year\", count(*) AS rows FROM {dataset_scan(dataset)} "
                            "GROUP BY ALL ORDER BY ALL").fetchdf()
    finally:
        con.close()
    return frame.astype({"key_stage": "string", "year": "int64", "rows": "int64"})


def pupils_summary(store_path=None) -> dict | None:
    """What ``impact data info`` says about the pupils dataset (None when the store has none)."""
    if not has_pupils(store_path):
        return None
    counts = pupil_counts(store_path)
    manifest = _read_manifest(pupils_path(store_path))
    return {"path": str(pupils_path(store_path)), "rows": int(counts["rows"].sum()),
            "first_year": int(counts["year"].min()) if len(counts) else None,
            "last_year": int(counts["year"].max()) if len(counts) else None,
            "key_stages": sorted(set(counts["key_stage"])),
            "partitions": [{"key_stage": r.key_stage, "year": int(r.year), "rows": int(r.rows)}
                           for r in counts.itertuples(index=False)],
            "files": len(manifest.get("files", [])) if manifest else None,
            "content_sha256": pupils_fingerprint(store_path)}


def _empty_frame(schema: TableSchema, columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=schema.column(c).pandas_dtype) for c in columns})


def _arrow_frame(table, schema: TableSchema) -> pd.DataFrame:
    """An Arrow table as a DataFrame with the schema's dtypes (strings stay Arrow-backed)."""
    out = {}
    for name in table.column_names:
        spec = schema.column(name)
        col = table.column(name)
        if spec.type == "category":
            values = pd.Categorical(col.to_pandas(), categories=list(spec.allowed or ()))
        elif spec.type == "string":
            values = col.to_pandas(types_mapper={col.type: pd.StringDtype("pyarrow")}.get)
        elif spec.type == "integer":
            values = col.to_pandas(types_mapper={col.type: pd.Int64Dtype()}.get).astype("Int64")
        elif spec.type == "boolean":
            values = col.to_pandas(types_mapper={col.type: pd.BooleanDtype()}.get).astype("boolean")
        else:
            values = col.to_pandas().astype("float64")
        out[name] = values
    return pd.DataFrame(out, index=pd.RangeIndex(table.num_rows))


# --------------------------------------------------------------------------- fingerprint


def _read_manifest(dataset: Path) -> dict | None:
    try:
        return json.loads((dataset / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _content_hash(files: list[dict]) -> str:
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda f: f["path"]):
        digest.update(f"{f['path']}\n{f['sha256']}\n".encode())
    return digest.hexdigest()


def pupils_fingerprint(store_path=None) -> str | None:
    """The content hash of the pupils dataset (None without one): SHA-256 over each Parquet file's
    path inside the dataset and the SHA-256 of its bytes, in path order. The manifest keeps the
    files' hashes; a file whose size or modification time differs from it is hashed again."""
    dataset = pupils_path(store_path)
    if not has_pupils(store_path):
        return None
    manifest = _read_manifest(dataset) or {}
    known = {f["path"]: f for f in manifest.get("files", [])}
    files = []
    for path in _dataset_files(dataset):
        rel = path.relative_to(dataset).as_posix()
        st = path.stat()
        rec = known.get(rel)
        if rec is None or rec.get("bytes") != st.st_size or rec.get("mtime_ns") != st.st_mtime_ns:
            rec = {"path": rel, "sha256": file_sha256(path)}
        files.append(rec)
    return _content_hash(files)


def dataset_stamp(store_path=None) -> tuple | None:
    """Changes whenever the pupils dataset is replaced (for caching the fingerprint)."""
    try:
        st = (pupils_path(store_path) / MANIFEST).stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


# --------------------------------------------------------------------------- the import report


@dataclass
class PupilImport:
    """What an import (or a check) of pupil data did."""

    source: str  # the file or directory as named in messages
    source_path: str | None
    sha256: str | None  # of the file; of a directory: over its files' paths and SHA-256s
    kind: str  # csv, parquet, parquet-directory, frame
    rows_read: int
    rows: int  # kept (an import keeps every row or none)
    mode: str  # replace, append or check
    dataset: str | None
    partitions: list[dict] = field(default_factory=list)  # {key_stage, year, rows} of this import
    notes: list[str] = field(default_factory=list)
    missing_values_kept: int = 0
    seconds: float = 0.0
    name: str = TABLE

    @property
    def rows_rejected(self) -> int:
        return self.rows_read - self.rows

    def to_dict(self) -> dict:
        return {"table": TABLE, "file": self.source, "path": self.source_path, "sha256": self.sha256,
                "kind": self.kind, "rows_read": self.rows_read, "rows": self.rows,
                "rows_rejected": self.rows_rejected, "mode": self.mode, "dataset": self.dataset,
                "partitions": self.partitions, "notes": self.notes,
                "missing_values_kept": self.missing_values_kept, "seconds": round(self.seconds, 3)}


# --------------------------------------------------------------------------- the source


@dataclass
class _Source:
    label: str
    path: Path | None
    kind: str
    scan: str  # SQL relation: the source's columns plus __file and __row
    columns: dict[str, str]  # file column -> DuckDB type
    delimiter: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def header_row(self) -> int | None:
        return 1 if self.kind == "csv" else None


def _open_source(con, source, label: str | None) -> _Source:
    if isinstance(source, pd.DataFrame) or type(source).__name__ == "Table":
        con.register("__frame", source)
        label = label or "pupils (in memory)"
        scan = f"SELECT *, {_sql_str(label)} AS __file, row_number() OVER () AS __row FROM __frame"
        return _describe(con, _Source(label, None, "frame", scan, {}))
    path = Path(source)
    label = label or path.name
    if not path.exists():
        raise InputError(problem(f"file not found: {path}", file=str(path)))
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in PARQUET_SUFFIXES)
        if not files:
            csvs = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in CSV_SUFFIXES]
            hint = (" (it holds CSV files: import them one at a time, the second and later with --append)"
                    if csvs else "")
            raise InputError(problem(f"expected a directory of Parquet files (e.g. key_stage=KS4/year=2019/"
                                     f"part-0.parquet); found no .parquet files{hint}", file=label))
        prefix = str(path) + os.sep
        listing = ", ".join(_sql_str(p) for p in files)
        scan = (f"SELECT * EXCLUDE (__fn, file_row_number), replace(__fn, {_sql_str(prefix)}, '') AS __file, "
                f"file_row_number + 1 AS __row FROM read_parquet([{listing}], hive_partitioning=true, "
                "hive_types_autocast=false, union_by_name=true, filename='__fn', file_row_number=true)")
        return _describe(con, _Source(label, path, "parquet-directory", scan, {}))
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        scan = (f"SELECT * EXCLUDE (file_row_number), {_sql_str(label)} AS __file, file_row_number + 1 AS __row "
                f"FROM read_parquet({_sql_str(path)}, hive_partitioning=false, file_row_number=true)")
        return _describe(con, _Source(label, path, "parquet", scan, {}))
    if suffix not in CSV_SUFFIXES:
        raise InputError(problem(f"unsupported file type {suffix or '(none)'!r}: expected .csv, .parquet or a "
                                 "directory of Parquet files", file=label))
    dialect = sniff(path, "\t" if suffix == ".tsv" else ",")
    encoding = _DUCKDB_ENCODING.get(dialect.encoding)
    if encoding is None:
        raise InputError(problem(f"cannot read {dialect.encoding_name} text at this scale: save the file as "
                                 "UTF-8 CSV", file=label))
    scan = (f"SELECT *, {_sql_str(label)} AS __file, row_number() OVER () + 1 AS __row "
            f"FROM read_csv({_sql_str(path)}, header=true, all_varchar=true, delim={_sql_str(dialect.delimiter)}, "
            f"quote='\"', escape='\"', encoding={_sql_str(encoding)}, null_padding=false, skip=0)")
    src = _describe(con, _Source(label, path, "csv", scan, {}, dialect.delimiter))
    if not dialect.is_plain:
        src.notes.append(f"read as {dialect.describe()}" + (" (decoded as Latin-1, the same but for € and curly "
                                                                "quotes)" if dialect.encoding == "cp1252" else ""))
    return src


def _describe(con, src: _Source) -> _Source:
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM ({src.scan})").fetchall()
    except duckdb.Error as err:
        what = "CSV" if src.kind == "csv" else "Parquet"
        raise InputError(problem(f"cannot read as {what} ({_duckdb_message(err)})", file=src.label)) from None
    src.columns = {name: typ for name, typ, *_ in described if name not in ("__file", "__row")}
    return src


def _duckdb_message(err: Exception) -> str:
    """DuckDB's explanation without its advice on DuckDB options (which a user of impact cannot set)."""
    text = str(err).strip()
    for prefix in ("Invalid Input Error: ", "IO Error: ", "Conversion Error: ", "Binder Error: "):
        text = text.replace(prefix, "")
    lines = []
    for line in text.splitlines():
        if line.strip().startswith(("Possible fixes", "The search space", "Parser options", "Delimiter Candidates")):
            break
        if line.strip():
            lines.append(line.strip())
    if any("sniffing" in line for line in lines):
        lines = ["the rows do not all have as many fields as the header (or the separator is not the one the "
                 "header uses)"]
    return "; ".join(lines[:4]) if lines else type(err).__name__


# --------------------------------------------------------------------------- typed columns in SQL


def _is_numeric(duck_type: str) -> bool:
    return duck_type.upper() in _NUMERIC_TYPES or duck_type.upper().startswith("DECIMAL")


def _column_layers(spec: ColumnSpec, file_col: str | None, duck_type: str | None, delimiter: str | None,
                   markers: list[str]) -> tuple[list[str], list[str], list[str], list[str]]:
    """Four SELECT-list layers for one column: the text (or native value) from the source, the
    marker, the parsed value, then the typed value, its problem code and (on a problem) its raw text."""
    n = spec.name
    t, v, m, e, r = (_ident(f"{p}_{n}") for p in ("t", "v", "m", "e", "r"))
    out_type = spec.sql_type
    if file_col is None:  # optional column absent from the file
        code = _REQUIRED if not spec.nullable else _OK
        layer3 = [f"CAST(NULL AS {out_type}) AS {_ident(n)}", f"CAST({code} AS UTINYINT) AS {e}",
                  f"CAST(NULL AS VARCHAR) AS {r}"]
        if spec.suppressible:
            layer3.append(f"CAST(NULL AS VARCHAR) AS {m}")
        return [], [], [], layer3
    src = _ident(file_col)
    native = duck_type is not None and _is_numeric(duck_type) and spec.type in ("integer", "number", "boolean")
    native = native or (duck_type == "BOOLEAN" and spec.type == "boolean")
    marker = "CAST(NULL AS VARCHAR)"
    if native:
        layer1 = [f"{src} AS {t}"]
        raw_text = f"CAST({t} AS VARCHAR)"
        if spec.type == "boolean":
            value = t if duck_type == "BOOLEAN" else f"CASE WHEN {t} = 1 THEN true WHEN {t} = 0 THEN false END"
            bad = f"({t} IS NOT NULL AND {v} IS NULL)"
        else:
            value = f"CAST({t} AS DOUBLE)"
            bad = f"({v} IS NOT NULL AND NOT isfinite({v}))"
            if spec.type == "integer":
                bad = f"({bad} OR ({v} IS NOT NULL AND {v} <> floor({v})))"
    else:
        text = src if duck_type == "VARCHAR" else f"CAST({src} AS VARCHAR)"
        layer1 = [f"NULLIF(trim({text}), '') AS {t}"]  # trim(x, chars) is many times slower
        raw_text = t
        if spec.type in ("integer", "number"):
            num = t
            if spec.is_percent:
                num = f"CASE WHEN ends_with({num}, '%') THEN rtrim(rtrim({num}, '%')) ELSE {num} END"
            if delimiter == ";":  # decimal commas: "47,5" is 47.5
                num = (f"CASE WHEN contains({num}, ',') AND regexp_full_match({num}, '[-+]?[0-9]+,[0-9]+') "
                       f"THEN replace({num}, ',', '.') ELSE {num} END")
            else:  # thousands separators: "1,234" is 1234
                num = (f"CASE WHEN contains({num}, ',') AND regexp_full_match({num}, "
                       f"'[-+]?[0-9]{{1,3}}(,[0-9]{{3}})+(\\.[0-9]+)?') THEN replace({num}, ',', '') ELSE {num} END")
            value = f"TRY_CAST({num} AS DOUBLE)"
            bad = f"({t} IS NOT NULL AND {m} IS NULL AND ({v} IS NULL OR NOT isfinite({v})))"
            if spec.type == "integer":
                bad = f"({bad} OR ({v} IS NOT NULL AND {v} <> floor({v})))"
        elif spec.type == "boolean":
            words = " ".join([f"WHEN {_sql_str(w)} THEN true" for w in _TRUE]
                             + [f"WHEN {_sql_str(w)} THEN false" for w in _FALSE])
            value = f"CASE lower({t}) {words} END"
            bad = f"({t} IS NOT NULL AND {m} IS NULL AND {v} IS NULL)"
        elif spec.type == "category":
            allowed = list(spec.allowed or ())
            exact = " ".join(f"WHEN {_sql_str(a)} THEN {_sql_str(a)}" for a in allowed)
            loose = " ".join(f"WHEN {_sql_str(a.lower())} THEN {_sql_str(a)}" for a in allowed)
            value = (f"CASE {t} {exact} ELSE CASE lower(regexp_replace({t}, '[\\s\\-]+', '_', 'g')) {loose} "
                     "END END")
            bad = f"({t} IS NOT NULL AND {m} IS NULL AND {v} IS NULL)"
        elif spec.type == "string":  # any text is a value (no marker is looked for in text columns)
            value = t
            bad = "false"
        else:  # dates: no pupils column is one
            value = f"TRY_CAST({t} AS DATE)"
            bad = f"({t} IS NOT NULL AND {m} IS NULL AND {v} IS NULL)"
        # a DfE marker is looked for only where the text is not a value (an IN list or list_contains
        # over every cell is planned as a join by DuckDB: many times slower)
        if markers and spec.type != "string":
            pattern = "(?:" + "|".join(re.escape(x) for x in markers) + ")"
            marker = f"CASE WHEN {v} IS NULL AND {t} IS NOT NULL AND regexp_full_match({t}, {_sql_str(pattern)}) " \
                     f"THEN {t} END"
    layer2 = [f"{t}", f"{value} AS {v}"]
    layer2b = [f"{t}", f"{v}", f"{marker} AS {m}"]
    lo, hi = spec.min, spec.upper
    range_bad = []
    if spec.type in ("integer", "number"):
        if lo is not None:
            range_bad.append(f"{v} < {float(lo)!r}")
        if hi is not None:
            range_bad.append(f"{v} > {float(hi)!r}")
    code = (f"CASE WHEN {m} IS NOT NULL AND NOT {str(spec.suppressible).lower()} THEN {_MARKER_NOT_ALLOWED} "
            f"WHEN {bad} THEN {_UNPARSABLE} "
            + (f"WHEN {' OR '.join(range_bad)} THEN {_RANGE} " if range_bad else "")
            + (f"WHEN {v} IS NULL AND {m} IS NOT NULL THEN {_MARKER_REQUIRED} "
               f"WHEN {v} IS NULL THEN {_REQUIRED} " if not spec.nullable else "")
            + f"ELSE {_OK} END")
    typed = f"TRY_CAST({v} AS {out_type})"
    layer3 = [f"CAST({code} AS UTINYINT) AS {e}",
              f"CASE WHEN {e} = {_OK} THEN {typed} END AS {_ident(n)}",
              f"CASE WHEN {e} <> {_OK} AND {e} <> {_REQUIRED} THEN coalesce({m}, {raw_text}) END AS {r}"]
    if spec.suppressible:
        layer3.append(f"CASE WHEN {e} = {_OK} THEN {m} END AS {_ident('m_' + n)}")
    # layer 3 refers to the code by its alias (DuckDB allows it in the same SELECT list)
    return layer1, layer2, layer2b, layer3


def _staging_sql(schema: TableSchema, src: _Source, mapping: dict[str, str], raw: bool = False) -> str:
    """The source's rows typed: __file, __row, each column's value and problem code (e_<name>), its
    kept marker (m_<name>, suppressible columns) and, with ``raw``, the text of cells with a problem
    (r_<name>: not staged, as it is wanted only to list problems)."""
    markers = list(missing_markers())
    layers = [["__file", "__row"] for _ in range(4)]
    for spec in schema.columns:
        col = mapping.get(spec.name)
        parts = _column_layers(spec, col, src.columns.get(col) if col else None, src.delimiter, markers)
        for layer, part in zip(layers, parts):
            layer += [x for x in part if raw or not x.endswith(f"AS {_ident('r_' + spec.name)}")]
    sql = f"SELECT {', '.join(layers[0])} FROM ({src.scan}) AS s0"
    for i, layer in enumerate(layers[1:], 1):
        sql = f"SELECT {', '.join(layer)} FROM ({sql}) AS s{i}"
    return sql


# --------------------------------------------------------------------------- checks


def _expectation(spec: ColumnSpec, code: int, value: str | None) -> str:
    if code == _MARKER_NOT_ALLOWED:
        return f"expected {spec.expectation()}; a suppression marker is not allowed in this column"
    if code == _MARKER_REQUIRED:
        return "a value is required here, not a suppression marker"
    if code == _REQUIRED:
        return f"a value is required: expected {spec.expectation()}"
    if code == _UNPARSABLE:
        if spec.type == "boolean":
            return "expected true or false (also yes/no, 1/0)"
        if spec.type == "category":
            return f"unknown {spec.name.replace('_', ' ')}: expected {spec.expectation()}"
        if spec.suppressible:
            return f"expected {spec.expectation()} (or a DfE marker such as SUPP, NE, NP, LOWCOV, x, c)"
    return f"expected {spec.expectation()}"


class _Checker:
    """The checks of a staged table, as SQL, and the problems they find."""

    def __init__(self, con, schema: TableSchema, src: _Source, mapping: dict[str, str]):
        self.con, self.schema, self.src, self.mapping = con, schema, src, mapping
        self.key = list(schema.key)
        self.cell_cols = [s for s in schema.columns if s.name in mapping or not s.nullable]
        self.counts: dict[tuple, int] = {}
        self.total = 0
        self.problems: list[tuple] = []  # (file, row, order, Problem)
        self.notes: list[str] = []

    def _add_counts(self, rows) -> None:
        for file, column, expected, n in rows:
            key = (file, column, expected)
            self.counts[key] = self.counts.get(key, 0) + int(n)

    def cells(self) -> None:
        parts = [f"SELECT __file, {_sql_str(s.name)} AS col, e_{s.name} AS code, count(*) AS n "
                 f"FROM staged WHERE e_{s.name} > 0 GROUP BY ALL" for s in self.cell_cols]
        if not parts:
            return
        for file, col, code, n in self.con.execute(" UNION ALL ".join(parts)).fetchall():
            spec = self.schema.column(col)
            self._add_counts([(file, col, _expectation(spec, code, None), n)])
            self.total += int(n)
        if not self.total:
            return
        listing = " UNION ALL ".join(
            f"SELECT __file, __row, {i} AS ord, {_sql_str(s.name)} AS col, e_{s.name} AS code "
            f"FROM staged WHERE e_{s.name} > 0" for i, s in enumerate(self.cell_cols))
        found = self.con.execute(f"SELECT * FROM ({listing}) ORDER BY __file, __row, ord LIMIT {PROBLEM_CAP}")
        found = found.fetchall()
        # the cells' text, from the source again (only when there are problems to show)
        self.con.register("__listed", pd.DataFrame({"f": [x[0] for x in found], "r": [x[1] for x in found]}))
        raw_cols = ", ".join(f"r_{s.name}" for s in self.cell_cols)
        texts = {(f, r): vals for f, r, *vals in self.con.execute(
            f"SELECT __file, __row, {raw_cols} FROM ({_staging_sql(self.schema, self.src, self.mapping, raw=True)}) "
            "WHERE (__file, __row) IN (SELECT (f, r) FROM __listed)").fetchall()}
        self.con.unregister("__listed")
        for file, row, order, col, code in found:
            spec = self.schema.column(col)
            raw = texts.get((file, row), [None] * len(self.cell_cols))[order]
            self.problems.append((file, row, order, problem(_expectation(spec, code, raw), file=file,
                                                             row=int(row), column=col, value=raw)))

    def row_checks(self) -> None:
        for i, chk in enumerate(self.schema.table.checks):
            if chk.left not in self.mapping or chk.right not in self.mapping:
                continue
            ok = f"({_ident(chk.left)} {chk.op} {_ident(chk.right)})"
            cond = f"{_ident(chk.left)} IS NOT NULL AND {_ident(chk.right)} IS NOT NULL AND NOT {ok}"
            n = self.con.execute(f"SELECT count(*) FROM staged WHERE {cond}").fetchall()[0][0]
            if not n:
                continue
            self.total += n
            for file, row, left, right in self.con.execute(
                    f"SELECT __file, __row, {_ident(chk.left)}, {_ident(chk.right)} FROM staged WHERE {cond} "
                    f"ORDER BY __file, __row LIMIT {PROBLEM_CAP}").fetchall():
                self.problems.append((file, row, 100 + i, problem(
                    f"{chk.left} {str(left)!r} is before {chk.right} {str(right)!r}: expected {chk.expected}",
                    file=file, row=int(row), column=chk.left, value=str(left))))

    def references(self, refs: dict[str, pd.DataFrame] | None) -> None:
        for spec in self.schema.columns:
            if not spec.references or spec.name not in self.mapping:
                continue
            ref_table, ref_col = spec.references.split(".")
            if refs is None:  # `impact data check` without a store: said in the notes
                continue
            if ref_table not in refs:
                self.total += 1
                self.problems.append(("", 0, 0, problem(
                    f"cannot check {spec.name!r} against {ref_table}: import {ref_table} first",
                    column=spec.name)))
                continue
            values = refs[ref_table][ref_col].dropna().astype("int64").drop_duplicates()
            self.con.register("__ref", pd.DataFrame({"v": values.to_numpy()}))
            what = "school" if ref_table == "schools" else ref_table.rstrip("s")
            expected = f"unknown {what}: no {ref_col} with this value in {ref_table}"
            cond = (f"e_{spec.name} = 0 AND {_ident(spec.name)} IS NOT NULL AND "
                    f"{_ident(spec.name)} NOT IN (SELECT v FROM __ref)")
            counted = self.con.execute(f"SELECT __file, count(*) FROM staged WHERE {cond} GROUP BY ALL").fetchall()
            if counted:
                self._add_counts([(f, spec.name, expected, n) for f, n in counted])
                self.total += sum(n for _, n in counted)
                for file, row, raw in self.con.execute(
                        f"SELECT __file, __row, CAST({_ident(spec.name)} AS VARCHAR) FROM staged WHERE {cond} "
                        f"ORDER BY __file, __row LIMIT {PROBLEM_CAP}").fetchall():
                    self.problems.append((file, row, 200, problem(expected, file=file, row=int(row),
                                                                  column=spec.name, value=raw)))
            self.con.unregister("__ref")

    def duplicates(self) -> None:
        keys = ", ".join(_ident(k) for k in self.key)
        not_null = " AND ".join(f"{_ident(k)} IS NOT NULL" for k in self.key)
        self.con.execute(f"CREATE TEMP TABLE dups AS SELECT {keys}, count(*) AS n, "
                         "min({'f': __file, 'r': __row}) AS first FROM staged "
                         f"WHERE {not_null} GROUP BY ALL HAVING count(*) > 1")
        n = self.con.execute("SELECT coalesce(sum(n - 1), 0) FROM dups").fetchall()[0][0]
        if not n:
            return
        self.total += int(n)
        join = " AND ".join(f"s.{_ident(k)} = d.{_ident(k)}" for k in self.key)
        sql = (f"SELECT s.__file, s.__row, {', '.join('s.' + _ident(k) for k in self.key)}, d.first FROM staged s "
               f"JOIN dups d ON {join} WHERE {{'f': s.__file, 'r': s.__row}} <> d.first "
               f"ORDER BY s.__file, s.__row LIMIT {PROBLEM_CAP}")
        multi_file = self.src.kind == "parquet-directory"
        for file, row, *vals in self.con.execute(sql).fetchall():
            first = vals.pop()
            label = ", ".join(f"{k}={v}" for k, v in zip(self.key, vals))
            where = f"row {first['r']}" + (f" of {first['f']}" if multi_file and first["f"] != file else "")
            self.problems.append((file, row, 300, problem(
                f"duplicate key ({label}): the same key is on {where}; expected one row per "
                f"{' and '.join(self.key)}", file=file, row=int(row), column=self.key[-1], value=str(vals[-1]))))

    def already_stored(self, dataset: Path) -> int:
        """With --append: rows whose key is in the stored dataset."""
        if not _dataset_files(dataset):
            return 0
        keys = ", ".join(_ident(k) for k in self.key)
        self.con.execute(f"CREATE TEMP TABLE stored_dups AS SELECT s.__file, s.__row, "
                         f"{', '.join('s.' + _ident(k) for k in self.key)} FROM staged s SEMI JOIN "
                         f"(SELECT {keys} FROM {dataset_scan(dataset)}) o USING ({keys})")
        n = self.con.execute("SELECT count(*) FROM stored_dups").fetchall()[0][0]
        if n:
            self.total += n
            for file, row, *vals in self.con.execute(
                    f"SELECT * FROM stored_dups ORDER BY __file, __row LIMIT {PROBLEM_CAP}").fetchall():
                label = ", ".join(f"{k}={v}" for k, v in zip(self.key, vals))
                self.problems.append((file, row, 310, problem(
                    f"duplicate key: a row with {label} is already in the store's pupils table",
                    file=file, row=int(row), column=self.key[-1], value=str(vals[-1]))))
        return n

    def raise_if_any(self, what: str) -> None:
        if not self.total:
            return
        listed = sorted(self.problems, key=lambda x: (x[0] or "", x[1] or 0, x[2]))[:PROBLEM_CAP]
        raise InputError([p for *_, p in listed], total=self.total, counts=self.counts,
                         summary=f"{self.src.label}: {self.total:,} problem(s) found; {what}")


# --------------------------------------------------------------------------- import and check


@contextmanager
def _staging(parent: Path | None):
    """A temporary directory (beside the store for an import: the dataset is renamed out of it)
    with a DuckDB file for the staged rows; removed afterwards whatever happens."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".pupils-import-", dir=parent))
    try:
        con = duckdb.connect(str(tmp / "staging.duckdb"), config={
            "memory_limit": os.environ.get(MEMORY_ENV, DEFAULT_MEMORY), "temp_directory": str(tmp / "spill"),
            "preserve_insertion_order": True})
        _quiet(con)
        try:
            yield con, tmp
        finally:
            con.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _source_sha256(src: _Source) -> str | None:
    if src.path is None:
        return None
    if src.path.is_file():
        return file_sha256(src.path)
    digest = hashlib.sha256()
    for p in sorted(q for q in src.path.rglob("*") if q.is_file() and q.suffix.lower() in PARQUET_SUFFIXES):
        digest.update(f"{p.relative_to(src.path).as_posix()}\n{file_sha256(p)}\n".encode())
    return digest.hexdigest()


def _validate(con, source, refs, *, label=None, stored: Path | None = None) -> tuple[_Source, int, _Checker]:
    """Stage ``source`` in ``con`` and run every check; raise InputError on any problem."""
    schema = load_schema(TABLE)
    src = _open_source(con, source, label)
    log = ProblemLog(src.label)
    shim = RawTable(src.label, src.path, pd.DataFrame(columns=list(src.columns)),
                    kind="csv" if src.kind == "csv" else "parquet")
    mapping, notes = match_columns(schema, shim, log)
    log.raise_if_any("the columns do not match the schema; nothing was imported")
    src.notes += notes
    try:
        con.execute(f"CREATE TEMP TABLE staged AS {_staging_sql(schema, src, mapping)}")
    except duckdb.Error as err:
        what = "CSV" if src.kind == "csv" else "Parquet"
        raise InputError(problem(f"cannot read as {what} ({_duckdb_message(err)})", file=src.label)) from None
    rows = con.execute("SELECT count(*) FROM staged").fetchall()[0][0]
    checker = _Checker(con, schema, src, mapping)
    if rows == 0:
        raise InputError(problem("the file has a header but no data rows" if src.kind == "csv"
                                 else "the data has no rows", file=src.label))
    checker.cells()
    checker.row_checks()
    checker.references(refs)
    checker.duplicates()
    checker.raise_if_any("nothing was imported")
    if stored is not None and checker.already_stored(stored):
        checker.raise_if_any("nothing was imported (import without --append to replace the pupils data)")
    src.notes += checker.notes
    return src, rows, checker


def _reference_tables(store_file: Path) -> dict[str, pd.DataFrame] | None:
    """The store's school URNs (what pupils refer to); None without a store."""
    if not store_file.exists():
        return None
    try:
        con = duckdb.connect(str(store_file), read_only=True)
    except duckdb.Error as err:
        raise InputError(problem(f"cannot open the store ({err})", file=str(store_file))) from None
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if "schools" not in tables:
            return {}
        return {"schools": con.execute("SELECT urn FROM schools").fetchdf()}
    finally:
        con.close()


def check_pupils(store_path, source, *, label: str | None = None) -> PupilImport:
    """Validate ``source`` (CSV or Parquet file, Parquet directory, DataFrame) as pupils without
    touching the store; URNs are checked against the store's schools when the store exists."""
    started = time.perf_counter()
    store_file = _store_file(store_path)
    refs = _reference_tables(store_file)
    with _staging(None) as (con, _tmp):
        src, rows, _ = _validate(con, source, refs, label=label)
    if refs is None:
        src.notes.append(f"no store at {store_file}: references to schools were not checked")
    return PupilImport(src.label, str(src.path) if src.path else None, None, src.kind, rows, rows, "check", None,
                       notes=src.notes, seconds=time.perf_counter() - started)


def import_pupils(store_path, source, *, append: bool = False, label: str | None = None,
                  interrupt_hook=None) -> PupilImport:
    """Validate ``source`` and write it as the store's pupils dataset (``pupils_path``), replacing
    the dataset, or adding to it with ``append`` (keys already stored are an error). All or
    nothing: on any problem the previous dataset and the store are unchanged.

    ``source``: a CSV file, a Parquet file, a directory of Parquet files (hive partitions such as
    ``key_stage=KS4/year=2019`` are read as columns) or a DataFrame / Arrow table. The store must
    hold the schools the URNs refer to. ``interrupt_hook(stage)`` is for tests: called after the
    new dataset was written, before it is moved into place."""
    started = time.perf_counter()
    schema = load_schema(TABLE)
    store_file = _store_file(store_path)
    dataset = pupils_path(store_file)
    refs = _reference_tables(store_file)
    if refs is None:
        raise InputError(problem(f"no store at {store_file}: import schools first (pupils refer to them)",
                                 file=str(store_file)))
    with _staging(store_file.parent) as (con, tmp):
        src, rows, _ = _validate(con, source, refs, label=label,
                                 stored=dataset if append and has_pupils(store_file) else None)
        sha = _source_sha256(src)
        new = tmp / "dataset"
        new.mkdir()
        written = _write_partitions(con, schema, new, dataset if append and has_pupils(store_file) else None)
        missing = _keep_markers(con, schema)
        con.execute("CHECKPOINT")
        con.close()  # the store reads the staged markers below
        manifest = _write_manifest(new, dataset if append else None)
        if interrupt_hook is not None:
            interrupt_hook("written")
        report = PupilImport(src.label, str(src.path.resolve()) if src.path else None, sha, src.kind, rows, rows,
                             "append" if append else "replace", str(dataset), written, src.notes, missing)
        _commit(store_file, dataset, new, tmp, report, manifest, interrupt_hook)
    report.seconds = time.perf_counter() - started
    return report


def _write_partitions(con, schema: TableSchema, new: Path, previous: Path | None) -> list[dict]:
    """One sorted Parquet file per (key_stage, year) of the staged rows; with ``previous`` (append),
    the stored files are linked in beside them and the new file takes the next free part number."""
    cols = ", ".join(_ident(c) for c in schema.column_names if c not in PARTITIONS)
    parts = con.execute('SELECT key_stage, "year", count(*) FROM staged GROUP BY ALL ORDER BY ALL').fetchall()
    if previous is not None:
        for old in _dataset_files(previous):
            target = new / old.relative_to(previous)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(old, target)
            except OSError:
                shutil.copy2(old, target)
    written = []
    for key_stage, year, n in parts:
        folder = new / f"key_stage={key_stage}" / f"year={year}"
        folder.mkdir(parents=True, exist_ok=True)
        k = 0
        while (folder / f"part-{k}.parquet").exists():
            k += 1
        target = folder / f"part-{k}.parquet"
        con.execute(f"COPY (SELECT {cols} FROM staged WHERE key_stage = ? AND \"year\" = ? ORDER BY pupil_id) "
                    f"TO {_sql_str(target)} (FORMAT PARQUET, COMPRESSION ZSTD)", [key_stage, year])
        written.append({"key_stage": key_stage, "year": int(year), "rows": int(n),
                        "file": target.relative_to(new).as_posix()})
    return written


def _keep_markers(con, schema: TableSchema) -> int:
    """The cells that held a DfE marker, as ``missing_values`` rows in the staging file's table
    ``markers`` (read by the store when the import is committed). Returns how many."""
    key = " || ', ' || ".join(f"'{k}=' || CAST({_ident(k)} AS VARCHAR)" for k in schema.key)
    parts = [f"SELECT {key} AS row_key, urn, \"year\", '{s.name}' AS column_name, m_{s.name} AS code FROM staged "
             f"WHERE m_{s.name} IS NOT NULL" for s in schema.columns if s.suppressible]
    if not parts:
        return 0
    con.execute(f"CREATE TABLE markers AS {' UNION ALL '.join(parts)}")
    return int(con.execute("SELECT count(*) FROM markers").fetchall()[0][0])


def _write_manifest(dataset: Path, previous: Path | None = None) -> dict:
    """``_manifest.json``: each file's rows, size, time and SHA-256 (a file linked in from the
    ``previous`` dataset unchanged keeps its recorded hash), and the content hash over them."""
    known = {f["path"]: f for f in ((_read_manifest(previous) or {}).get("files", []) if previous else [])}
    files = []
    con = _connect()
    try:
        for path in _dataset_files(dataset):
            st = path.stat()
            rel = path.relative_to(dataset).as_posix()
            old = known.get(rel)
            if old and old.get("bytes") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns:
                files.append(dict(old))
                continue
            n = con.execute(f"SELECT count(*) FROM read_parquet({_sql_str(path)})").fetchall()[0][0]
            files.append({"path": rel, "rows": int(n), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns,
                          "sha256": file_sha256(path)})
    finally:
        con.close()
    manifest = {"table": TABLE, "format": 1, "rows": sum(f["rows"] for f in files),
                "layout": "hive: key_stage=<KS2|KS4>/year=<academic year end>/part-<n>.parquet, rows sorted by "
                          "pupil_id; columns as data_schemas/pupils.toml without key_stage and year",
                "content_sha256": _content_hash(files), "files": files,
                "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "tool_version": __version__}
    (dataset / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _commit(store_file: Path, dataset: Path, new: Path, tmp: Path, report: PupilImport, manifest: dict,
            interrupt_hook) -> None:
    """Record the import in the store and move the new dataset into place, in one store transaction:
    the dataset is swapped just before COMMIT and swapped back if anything fails."""
    try:
        con = _quiet(duckdb.connect(str(store_file)))
    except duckdb.IOException as err:
        raise InputError(problem(f"cannot open the store ({err})", file=str(store_file))) from None
    backup = tmp / "previous"
    swapped = False
    try:
        con.execute("BEGIN TRANSACTION")
        con.execute(IMPORTS_DDL)
        con.execute(MISSING_DDL)
        if report.mode == "replace":
            con.execute("DELETE FROM missing_values WHERE table_name = ?", [TABLE])
        if report.missing_values_kept:
            markers = missing_markers()
            con.register("__markers", pd.DataFrame({"code": list(markers), "meaning": list(markers.values())}))
            con.execute(f"ATTACH {_sql_str(tmp / 'staging.duckdb')} AS stg (READ_ONLY)")
            con.execute(f"INSERT INTO missing_values SELECT '{TABLE}', row_key, urn, \"year\", column_name, "
                        "s.code, mk.meaning FROM stg.markers s LEFT JOIN __markers mk ON mk.code = s.code")
        next_id = con.execute("SELECT coalesce(max(import_id), 0) + 1 FROM imports").fetchall()[0][0]
        notes = list(report.notes) + [f"pupils dataset {dataset.name}: {manifest['rows']:,} rows in "
                                      f"{len(manifest['files'])} file(s), content sha256 {manifest['content_sha256']}"]
        con.execute("INSERT INTO imports VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            next_id, TABLE, report.mode, report.source, report.source_path, report.sha256, report.kind,
            report.rows_read, report.rows, "; ".join(notes),
            datetime.now(timezone.utc).isoformat(timespec="seconds"), __version__])
        if dataset.exists():
            os.replace(dataset, backup)
        swapped = True
        os.replace(new, dataset)
        if interrupt_hook is not None:
            interrupt_hook("swapped")
        con.execute("COMMIT")
    except BaseException:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:
            pass
        if swapped:
            if dataset.exists():
                os.replace(dataset, tmp / "failed")
            if backup.exists():
                os.replace(backup, dataset)
        raise
    finally:
        con.close()


def partition_dependents(store_path, urns: Iterable[int]) -> list[int]:
    """URNs of stored pupils not in ``urns`` (replacing schools must not orphan pupils)."""
    if not has_pupils(store_path):
        return []
    dataset = pupils_path(store_path)
    con = _connect()
    try:
        con.register("__urns", pd.DataFrame({"urn": pd.Series([int(u) for u in urns], dtype="int64")}))
        rows = con.execute(f"SELECT DISTINCT urn FROM {dataset_scan(dataset)} WHERE urn NOT IN "
                           "(SELECT urn FROM __urns) ORDER BY urn").fetchall()
    finally:
        con.close()
    return [int(r[0]) for r in rows]


__all__ = ["pupils_path", "import_pupils", "check_pupils", "read_pupils", "pupil_counts", "pupils_summary",
           "pupils_fingerprint", "has_pupils", "PupilImport"]
