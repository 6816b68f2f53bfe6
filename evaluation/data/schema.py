"""Load the declarative table schemas in ``data_schemas/*.toml``.

The TOML files are the single source of truth for every input table: column
names, types, units, allowed values, ranges, keys, references and one-line
meanings. Validation, the store's DDL and dtypes, and the book's data dictionary
all read them through this module.
"""

from __future__ import annotations

import re
from datetime import date

import tomllib
from functools import lru_cache
from importlib import resources
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

ColumnType = Literal["integer", "number", "string", "date", "boolean", "category"]
Role = Literal["key", "descriptor", "context", "outcome"]

#: Tables in the order they must be imported (later ones reference earlier ones).
TABLE_ORDER = ("schools", "partnerships", "memberships", "school_years", "pupils", "school_attributes")


def current_academic_year(today: date | None = None) -> int:
    """The academic year in progress, named by the year it ends (on 2026-11-30: 2027)."""
    today = today or date.today()
    return today.year + 1 if today.month >= 9 else today.year


class ColumnSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: ColumnType
    description: str
    required: bool = True
    nullable: bool = True
    role: Role = "descriptor"
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    # academic years: no later than the current academic year's end plus this many years
    # (results of a year not yet ended are implausible; 2035 is a typo, not data)
    max_years_ahead: int | None = None
    allowed: tuple[str, ...] | None = None
    suppressible: bool = False
    references: str | None = None  # "table.column"
    # Each pair ("table.lower", "table.upper") bounds this column by the referenced row's dates.
    within: tuple[tuple[str, str], ...] = ()
    key_stage: str | None = None

    @model_validator(mode="after")
    def _check(self) -> "ColumnSpec":
        if self.type == "category" and not self.allowed:
            raise ValueError(f"column {self.name!r}: a category needs 'allowed' values")
        if self.allowed and self.type != "category":
            raise ValueError(f"column {self.name!r}: 'allowed' is only for category columns")
        return self

    @property
    def upper(self) -> float | None:
        """The largest valid value: ``max``, or earlier for academic years (``max_years_ahead``)."""
        if self.max_years_ahead is None:
            return self.max
        latest = current_academic_year() + self.max_years_ahead
        return latest if self.max is None else min(self.max, latest)

    @property
    def is_percent(self) -> bool:
        return self.unit == "percent"

    def expectation(self) -> str:
        """What a valid value looks like, in words (used in error messages)."""
        if self.type == "category":
            return "one of " + ", ".join(self.allowed or ())
        words = {
            "integer": "a whole number",
            "number": "a number",
            "string": "text",
            "date": "a date (YYYY-MM-DD or DD/MM/YYYY)",
            "boolean": "true or false",
        }[self.type]
        if self.is_percent:
            words = "a percentage"
        upper = self.upper
        if self.min is not None and upper is not None:
            words += f" between {_fmt(self.min)} and {_fmt(upper)}"
        elif self.min is not None:
            words += f" of at least {_fmt(self.min)}"
        elif upper is not None:
            words += f" of at most {_fmt(upper)}"
        if self.max_years_ahead is not None:
            words += " (no academic year later than the current one" + (
                f" plus {self.max_years_ahead}" if self.max_years_ahead else "") + ")"
        return words

    @property
    def pandas_dtype(self):
        if self.type == "category":
            return pd.CategoricalDtype(list(self.allowed or ()))
        return {
            "integer": "Int64",
            "number": "float64",
            "string": "string",
            "date": "datetime64[s]",
            "boolean": "boolean",
        }[self.type]

    @property
    def sql_type(self) -> str:
        return {
            "integer": "BIGINT",
            "number": "DOUBLE",
            "string": "VARCHAR",
            "date": "DATE",
            "boolean": "BOOLEAN",
            "category": "VARCHAR",
        }[self.type]


class RowCheck(BaseModel):
    """A comparison between two columns of the same row, e.g. closed >= opened."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    left: str
    op: Literal[">=", ">", "<=", "<"]
    right: str
    expected: str


class TableInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    key: tuple[str, ...]
    optional: bool = False
    checks: tuple[RowCheck, ...] = ()


class TableSchema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    table: TableInfo
    columns: tuple[ColumnSpec, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> "TableSchema":
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"table {self.table.name!r}: duplicate column names")
        for k in self.table.key:
            if k not in names:
                raise ValueError(f"table {self.table.name!r}: key column {k!r} is not a column")
        for chk in self.table.checks:
            for side in (chk.left, chk.right):
                if side not in names:
                    raise ValueError(f"table {self.table.name!r}: check names unknown column {side!r}")
        return self

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def key(self) -> tuple[str, ...]:
        return self.table.key

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def columns_with_role(self, role: str) -> list[ColumnSpec]:
        return [c for c in self.columns if c.role == role]

    @property
    def dtypes(self) -> dict:
        return {c.name: c.pandas_dtype for c in self.columns}


def description_words(description: str) -> str:
    """A column's description as words for a sentence or an axis: its first clause, without the
    DfE field code ('KS1-KS2 maths progress score (MATPROG): 0 is ...' -> 'KS1-KS2 maths
    progress score')."""
    text = str(description).split(":")[0].rstrip(". ")
    return re.sub(r"\s*\([A-Z][A-Z0-9_]*\)", "", text).strip()


def sentence_case(text: str) -> str:
    """Lower-case the first letter for use mid-sentence, unless it starts an acronym (KS2, FSM)."""
    if len(text) > 1 and text[1].isupper():
        return text
    return text[:1].lower() + text[1:]


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _read_toml(filename: str) -> dict:
    with resources.files("data_schemas").joinpath(filename).open("rb") as fh:
        return tomllib.load(fh)


@lru_cache(maxsize=None)
def load_schema(table: str) -> TableSchema:
    """The schema of one input table (``data_schemas/<table>.toml``)."""
    if table not in TABLE_ORDER:
        raise KeyError(table)
    schema = TableSchema.model_validate(_read_toml(f"{table}.toml"))
    if schema.name != table:
        raise ValueError(f"data_schemas/{table}.toml declares table {schema.name!r}")
    return schema


def all_schemas() -> dict[str, TableSchema]:
    return {name: load_schema(name) for name in TABLE_ORDER}


@lru_cache(maxsize=None)
def missing_markers() -> dict[str, str]:
    """DfE/statistical-release codes that mean "no number here", with their meanings."""
    data = _read_toml("markers.toml")
    return {code: entry["meaning"] for code, entry in data["markers"].items()}
