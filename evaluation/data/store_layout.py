"""Where the store lives and the DDL of its bookkeeping tables (``imports``, ``missing_values``).

Shared by :mod:`evaluation.data.store` (the DuckDB file) and :mod:`evaluation.data.pupils`
(the Parquet dataset beside it), which records its imports in the same tables."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_STORE = Path("data") / "impact.duckdb"
STORE_ENV = "IMPACT_STORE"

IMPORTS_DDL = """
CREATE TABLE IF NOT EXISTS imports (
    import_id BIGINT, table_name VARCHAR, mode VARCHAR, source_file VARCHAR, source_path VARCHAR,
    source_sha256 VARCHAR, source_kind VARCHAR, rows_read BIGINT, rows_kept BIGINT, notes VARCHAR,
    imported_at VARCHAR, tool_version VARCHAR)
"""
MISSING_DDL = """
CREATE TABLE IF NOT EXISTS missing_values (
    table_name VARCHAR, row_key VARCHAR, urn BIGINT, "year" BIGINT, column_name VARCHAR,
    code VARCHAR, meaning VARCHAR)
"""


def default_store_path() -> Path:
    return Path(os.environ.get(STORE_ENV, DEFAULT_STORE))
