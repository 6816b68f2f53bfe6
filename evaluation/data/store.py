"""The embedded store: one DuckDB file holding the validated tables.

Tables and their SQL types come from ``data_schemas/``. Besides the input tables
the store keeps ``missing_values`` (the DfE reason for every suppressed cell) and
``imports`` (provenance: which file, its SHA-256, when, how many rows). An import
is one transaction: if validation fails nothing is opened for writing, and if the
write fails or is interrupted the transaction rolls back, leaving the store as it was.

Pupils are the exception: they are a Parquet dataset beside the DuckDB file
(``<store stem>.pupils/``, see :mod:`evaluation.data.pupils`), validated and written
with DuckDB over the files; their imports and suppressed values are recorded here.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Mapping

import duckdb
import pandas as pd

from evaluation import __version__
from evaluation.data.schema import TABLE_ORDER, TableSchema, all_schemas, load_schema
from evaluation.data.store_layout import DEFAULT_STORE, STORE_ENV, default_store_path  # noqa: F401 (re-exported)
from evaluation.data.store_layout import IMPORTS_DDL as _IMPORTS_DDL
from evaluation.data.store_layout import MISSING_DDL as _MISSING_DDL
from evaluation.data.validate import MISSING_COLUMNS, ValidatedTable, empty_missing_table, read_raw, validate
from evaluation.errors import InputError, problem


def _table_ddl(schema: TableSchema) -> str:
    cols = ", ".join(f'"{c.name}" {c.sql_type}' for c in schema.columns)
    key = ", ".join(f'"{k}"' for k in schema.key)
    return f'CREATE TABLE IF NOT EXISTS "{schema.name}" ({cols}, PRIMARY KEY ({key}))'


@dataclass(frozen=True)
class TableInfoRow:
    table: str
    rows: int
    first_year: int | None
    last_year: int | None
    sources: list[dict]
    path: str | None = None  # a table stored outside the DuckDB file (pupils: the Parquet dataset)
    key_stages: list[str] | None = None


#: The tables the data fingerprint covers: everything a school-level study or self-evaluation reads.
FINGERPRINT_TABLES = ("schools", "partnerships", "memberships", "school_years", "school_attributes")


def fingerprint_tables(frames: Mapping[str, pd.DataFrame], pupils: str | None = None) -> str:
    """THE data fingerprint (one definition for `impact data info`, every result.json and the book).

    SHA-256 over, for each of schools, partnerships, memberships and school_years present (in that
    order): the table's name and a newline, then its canonical CSV text (every schema column in
    schema order, rows sorted by the table's key, as ``Store.read_table`` returns them, ``\\n`` line
    ends, no index); school_attributes only when it has rows (so a store without user attributes keeps
    the fingerprint it had before the table existed); then, when the store has pupil data, ``pupils``
    and a newline followed by ``pupils`` (the dataset's content hash,
    :func:`evaluation.data.pupils.pupils_fingerprint`) and a newline, so a store without pupils keeps
    the fingerprint it had before pupils could be imported. Derived tables are not part of it."""
    import hashlib

    digest = hashlib.sha256()
    for name in FINGERPRINT_TABLES:
        if name not in frames or (name == "school_attributes" and frames[name].empty):
            continue
        digest.update(name.encode() + b"\n")
        digest.update(frames[name].to_csv(index=False, lineterminator="\n").encode())
    if pupils:
        digest.update(b"pupils\n" + pupils.encode() + b"\n")
    return digest.hexdigest()


class Store:
    """A DuckDB file of validated tables. Open with ``Store(path)``; reads never create it."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_store_path()

    # ----------------------------------------------------------------- connections
    @contextmanager
    def _connect(self, write: bool):
        if not write and not self.path.exists():
            raise InputError(problem(f"no store at {self.path}: run `impact data import` or "
                                     "`impact data synthesize` first", file=str(self.path)))
        if write:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = duckdb.connect(str(self.path), read_only=not write)
        except duckdb.IOException as err:
            raise InputError(problem(f"cannot open the store ({err})", file=str(self.path))) from None
        try:
            yield con
        finally:
            con.close()

    def exists(self) -> bool:
        return self.path.exists()

    def tables(self) -> list[str]:
        if not self.exists():
            return []
        with self._connect(write=False) as con:
            return [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]

    # ----------------------------------------------------------------- reading
    def read_table(self, table: str, columns: Iterable[str] | None = None, where: str | None = None,
                   params: list | None = None) -> pd.DataFrame:
        """A table as a DataFrame with the dtypes its schema declares, sorted by key.

        ``pupils`` is read from the Parquet dataset (``where`` is not supported there: use
        :func:`evaluation.data.pupils.read_pupils` and its filters)."""
        if table == "pupils":
            from evaluation.data.pupils import read_pupils

            if where is not None:
                raise ValueError("read the pupils with evaluation.data.pupils.read_pupils and its filters")
            return read_pupils(self.path, columns)
        schema = load_schema(table)
        wanted = list(columns) if columns is not None else schema.column_names
        unknown = [c for c in wanted if c not in schema.column_names]
        if unknown:
            raise KeyError(f"{table} has no column(s) {unknown}")
        if table not in self.tables():
            return _empty_frame(schema, wanted)
        cols = ", ".join(f'"{c}"' for c in wanted)
        order = ", ".join(f'"{k}"' for k in schema.key)
        sql = f'SELECT {cols} FROM "{table}"' + (f" WHERE {where}" if where else "") + f" ORDER BY {order}"
        with self._connect(write=False) as con:
            frame = con.execute(sql, params or []).fetchdf()
        return _apply_dtypes(frame, schema)

    def read_missing(self) -> pd.DataFrame:
        if "missing_values" not in self.tables():
            return empty_missing_table()
        with self._connect(write=False) as con:
            frame = con.execute("SELECT * FROM missing_values ORDER BY table_name, row_key, column_name").fetchdf()
        return frame.astype({"urn": "Int64", "year": "Int64"})[MISSING_COLUMNS]

    def read_imports(self) -> pd.DataFrame:
        if "imports" not in self.tables():
            return pd.DataFrame()
        with self._connect(write=False) as con:
            return con.execute("SELECT * FROM imports ORDER BY import_id").fetchdf()

    def reference_tables(self, extra: Mapping[str, pd.DataFrame] | None = None) -> dict[str, pd.DataFrame]:
        """Tables other tables point at (schools, partnerships), from the store or ``extra``."""
        refs: dict[str, pd.DataFrame] = {}
        present = self.tables()
        for name in ("schools", "partnerships"):
            if extra and name in extra:
                refs[name] = extra[name]
            elif name in present:
                refs[name] = self.read_table(name)
        return refs

    # ----------------------------------------------------------------- writing
    def import_file(self, table: str, path: str | Path, append: bool = False,
                    interrupt_hook=None) -> ValidatedTable:
        """Validate ``path`` as ``table`` and write it in one transaction."""
        if table not in TABLE_ORDER:
            raise InputError(problem(f"unknown table {table!r}: expected one of {', '.join(TABLE_ORDER)}"))
        if table == "pupils":  # a Parquet dataset beside the store, validated with DuckDB over the file
            from evaluation.data.pupils import import_pupils

            return import_pupils(self.path, path, append=append)
        raw = read_raw(path)
        validated = validate(table, raw, self.reference_tables() if table not in ("schools", "partnerships")
                             else None)
        self.write_tables([validated], append=append, interrupt_hook=interrupt_hook)
        return validated

    def drop_tables(self, names: Iterable[str]) -> None:
        """Drop derived tables (e.g. a synthetic truth table a new panel does not have), if present."""
        present = set(self.tables())
        wanted = [n for n in names if n in present]
        if not wanted:
            return
        with self._connect(write=True) as con:
            for name in wanted:
                con.execute(f'DROP TABLE IF EXISTS "{name}"')

    def write_tables(self, tables: list[ValidatedTable], append: bool = False, interrupt_hook=None,
                     extra: Mapping[str, pd.DataFrame] | None = None) -> None:
        """Write validated tables in one transaction (all or nothing).

        ``extra`` holds derived tables outside the input schemas (e.g. the synthetic
        panel's truth tables); each replaces any table of the same name."""
        if any(vt.name == "pupils" for vt in tables):
            raise ValueError("pupils are stored as a Parquet dataset: use evaluation.data.pupils.import_pupils")
        if append:
            self._check_append_keys(tables)
        self._check_dependents(tables, append)
        with self._connect(write=True) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(_IMPORTS_DDL)
                con.execute(_MISSING_DDL)
                next_id = con.execute("SELECT coalesce(max(import_id), 0) + 1 FROM imports").fetchone()[0]
                for offset, vt in enumerate(tables):
                    self._write_one(con, vt, append, next_id + offset)
                    if interrupt_hook is not None:
                        interrupt_hook(vt.name)
                for name, frame in (extra or {}).items():
                    con.register("incoming_extra", frame)
                    con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM incoming_extra')
                    con.unregister("incoming_extra")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def _write_one(self, con, vt: ValidatedTable, append: bool, import_id: int) -> None:
        schema = load_schema(vt.name)
        con.execute(_table_ddl(schema))
        if not append:
            con.execute(f'DELETE FROM "{vt.name}"')
            con.execute("DELETE FROM missing_values WHERE table_name = ?", [vt.name])
        frame = _to_sql_frame(vt.data, schema)
        con.register("incoming", frame)
        cols = ", ".join(f'"{c}"' for c in schema.column_names)
        con.execute(f'INSERT INTO "{vt.name}" ({cols}) SELECT {cols} FROM incoming')
        con.unregister("incoming")
        if len(vt.missing):
            con.register("incoming_missing", vt.missing.astype(object).where(vt.missing.notna(), None))
            con.execute("INSERT INTO missing_values SELECT table_name, row_key, CAST(urn AS BIGINT), "
                        "CAST(\"year\" AS BIGINT), column_name, code, meaning FROM incoming_missing")
            con.unregister("incoming_missing")
        src = vt.source
        con.execute("INSERT INTO imports VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            import_id, vt.name, "append" if append else "replace", src.label,
            str(src.path.resolve()) if src.path else None, src.sha256, src.kind, len(src.cells), vt.rows,
            "; ".join(vt.notes) or None, datetime.now(timezone.utc).isoformat(timespec="seconds"),
            __version__])

    def _check_append_keys(self, tables: list[ValidatedTable]) -> None:
        present = self.tables()
        for vt in tables:
            if vt.name not in present:
                continue
            schema = load_schema(vt.name)
            existing = self.read_table(vt.name, columns=schema.key)
            merged = vt.data[list(schema.key)].reset_index().merge(existing, on=list(schema.key))
            if len(merged):
                problems = [problem(f"duplicate key: a row with {', '.join(f'{k}={r[k]}' for k in schema.key)} "
                                    f"is already in the store's {vt.name} table", file=vt.source.label,
                                    row=int(vt.source.cells.index[r["index"]]), column=schema.key[-1],
                                    value=r[schema.key[-1]])
                            for r in merged.head(50).to_dict("records")]
                raise InputError(problems, total=len(merged),
                                 summary=f"{vt.source.label}: {len(merged)} row(s) already in the store; "
                                         "nothing was imported (import without --append to replace the table)")

    def _check_dependents(self, tables: list[ValidatedTable], append: bool) -> None:
        """Replacing schools or partnerships must not orphan rows that point at them."""
        if append or not self.exists():
            return
        incoming = {vt.name: vt.data for vt in tables}
        present = self.tables()
        for parent in ("schools", "partnerships"):
            if parent not in incoming:
                continue
            for child, schema in all_schemas().items():
                if child in incoming or child not in present:
                    continue
                for spec in schema.columns:
                    if spec.references and spec.references.startswith(parent + "."):
                        ref_col = spec.references.split(".")[1]
                        values = self.read_table(child, columns=[spec.name])[spec.name].dropna().unique()
                        orphans = sorted(set(values) - set(incoming[parent][ref_col].dropna()))
                        if orphans:
                            label = tables[0].source.label
                            raise InputError(problem(
                                f"replacing {parent} would leave {len(orphans)} {child} row value(s) pointing at "
                                f"no {parent} row (e.g. {spec.name} {orphans[0]}): import a {parent} file that "
                                f"includes them, or re-import {child} too", file=label, column=ref_col))
        if "schools" in incoming:
            from evaluation.data.pupils import partition_dependents, pupils_path

            orphans = partition_dependents(self.path, incoming["schools"]["urn"].dropna())
            if orphans:
                raise InputError(problem(
                    f"replacing schools would leave the pupils of {len(orphans)} school(s) pointing at no schools "
                    f"row (e.g. urn {orphans[0]}): import a schools file that includes them, or re-import pupils "
                    f"(or remove {pupils_path(self.path)})", file=tables[0].source.label, column="urn"))

    def read_extra(self, name: str) -> pd.DataFrame:
        """A derived table written through ``extra`` (e.g. ``truth_effects``)."""
        if name not in self.tables():
            raise InputError(problem(f"the store has no table {name!r}", file=str(self.path)))
        with self._connect(write=False) as con:
            return con.execute(f'SELECT * FROM "{name}"').fetchdf()

    def fingerprint(self) -> str:
        """The data fingerprint (``fingerprint_tables``) of this store's school-level tables and, when it
        has them, its pupils (the Parquet dataset's content hash).

        Equal fingerprints mean equal data, whatever file or store they came from; a study run on
        this store records the same value in result.json ``provenance.data_fingerprint``."""
        from evaluation.data.pupils import dataset_stamp, pupils_fingerprint

        try:  # the file and its write-ahead log: a change to either is new data; and the pupils dataset
            stamp = tuple((st.st_mtime_ns, st.st_size) for st in
                          (Path(f).stat() for f in (self.path, f"{self.path}.wal") if Path(f).exists()))
            stamp += (dataset_stamp(self.path),)
        except OSError:
            stamp = None
        cached = getattr(self, "_fingerprint_cache", None)
        if stamp is not None and cached is not None and cached[0] == stamp:
            return cached[1]
        present = self.tables()
        value = fingerprint_tables({name: self.read_table(name) for name in FINGERPRINT_TABLES if name in present},
                                   pupils=pupils_fingerprint(self.path))
        self._fingerprint_cache = (stamp, value)
        return value

    # ----------------------------------------------------------------- describing
    def info(self) -> list[TableInfoRow]:
        present = self.tables()
        imports = self.read_imports()
        rows = []
        with self._connect(write=False) as con:
            derived = sorted(t for t in present if t not in TABLE_ORDER and t not in ("imports", "missing_values"))
            for name in [t for t in TABLE_ORDER if t in present] + ["missing_values"] + derived:
                if name not in present:
                    continue
                n = con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
                first = last = None
                if name in ("school_years", "pupils") or name in derived and "year" in [
                        r[0] for r in con.execute(f'DESCRIBE "{name}"').fetchall()]:
                    first, last = con.execute(f'SELECT min("year"), max("year") FROM "{name}"').fetchone()
                sources = []
                if len(imports):
                    for rec in imports[imports["table_name"] == name].to_dict("records"):
                        sources.append({k: rec[k] for k in ("source_file", "source_sha256", "imported_at", "mode",
                                                             "rows_kept", "tool_version")})
                rows.append(TableInfoRow(name, int(n), first, last, sources))
        pupils = self._pupils_info(imports)
        if pupils is not None:  # in TABLE_ORDER's place, before the tables that follow pupils
            after = [i for i, r in enumerate(rows) if r.table in TABLE_ORDER[TABLE_ORDER.index("pupils") + 1:]
                     or r.table not in TABLE_ORDER]
            rows.insert(after[0] if after else len(rows), pupils)
        return rows

    def _pupils_info(self, imports: pd.DataFrame) -> TableInfoRow | None:
        from evaluation.data.pupils import pupils_summary

        summary = pupils_summary(self.path)
        if summary is None:
            return None
        sources = []
        if len(imports):
            for rec in imports[imports["table_name"] == "pupils"].to_dict("records"):
                sources.append({k: rec[k] for k in ("source_file", "source_sha256", "imported_at", "mode",
                                                     "rows_kept", "tool_version")})
        return TableInfoRow("pupils", summary["rows"], summary["first_year"], summary["last_year"], sources,
                            path=summary["path"], key_stages=summary["key_stages"])


def _empty_frame(schema: TableSchema, columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=schema.column(c).pandas_dtype) for c in columns})


def _to_sql_frame(data: pd.DataFrame, schema: TableSchema) -> pd.DataFrame:
    out = {}
    for spec in schema.columns:
        col = data[spec.name]
        if spec.type == "category":
            col = col.astype(object).where(col.notna(), None)
        elif spec.type == "date":
            col = pd.to_datetime(col).dt.date.astype(object).where(col.notna(), None)
        elif spec.type == "string":
            col = col.astype(object).where(col.notna(), None)
        out[spec.name] = col
    return pd.DataFrame(out)


def _apply_dtypes(frame: pd.DataFrame, schema: TableSchema) -> pd.DataFrame:
    out = {}
    for name in frame.columns:
        spec = schema.column(name)
        col = frame[name]
        if spec.type == "date":
            col = pd.to_datetime(col).astype("datetime64[s]")
        elif spec.type == "integer":
            col = col.astype("Int64")
        elif spec.type == "number":
            col = col.astype("float64")
        elif spec.type == "boolean":
            col = col.astype("boolean")
        elif spec.type == "category":
            col = pd.Categorical(col.astype(object).where(col.notna(), None), categories=list(spec.allowed or ()))
        else:
            col = col.astype("string")
        out[name] = col
    return pd.DataFrame(out, index=pd.RangeIndex(len(frame)))
