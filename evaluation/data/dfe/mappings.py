"""Load the DfE name mappings (``data_schemas/dfe_mappings.toml``, ``dfe_performance.toml``)."""

from __future__ import annotations

import tomllib
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=None)
def gias_mappings() -> dict:
    """GIAS names -> our vocabularies (phase, establishment type, region, group type, ...)."""
    return _load("dfe_mappings.toml")


@lru_cache(maxsize=None)
def performance_mappings() -> dict:
    """Performance-table conventions: RECTYPE and NFTYPE codes by year, column names by year."""
    return _load("dfe_performance.toml")


def _load(name: str) -> dict:
    with resources.files("data_schemas").joinpath(name).open("rb") as fh:
        return tomllib.load(fh)


def in_years(entry: dict, year: int) -> bool:
    """True if ``year`` lies in the entry's inclusive ``from``/``until`` range (open-ended if absent)."""
    return entry.get("from", -10**9) <= year <= entry.get("until", 10**9)


def folded(mapping: dict) -> dict[str, str]:
    """A name mapping keyed by the case-folded, trimmed DfE name."""
    return {str(k).strip().casefold(): v for k, v in mapping.items()}
