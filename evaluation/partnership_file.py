"""Partnership files: ``partnerships/<id>.toml``, a partnership's own evaluation plan.

What the practitioners' guidance asks a partnership to set at the start: which schools and
from when (a list of schools with joining dates, or a partnership id in the store such as a
GIAS group), the baseline year, and targets per outcome with a target year. Validated like a
study definition: an unknown or misspelt key is an error naming the file, the line and the
key it probably meant.

    id = "oak_trust"
    title = "Oak Learning Trust"
    baseline_year = 2015
    partnership_id = "P00538"          # or [[schools]] tables: urn, joined, role

    [outcomes]                         # optional: the outcome per phase (defaults below)
    primary = "ks2_rwm_expected_pct"
    secondary = "ks4_attainment8"

    [[targets]]
    outcome = "ks2_rwm_expected_pct"
    kind = "change"                    # "level", "change" (from the baseline) or "gap_to_national"
    value = 5.0
    year = 2024
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import Field, field_validator, model_validator

from evaluation.data.schema import load_schema
from evaluation.study import _Strict, _unknown, load_toml_model

TARGET_KINDS = ("level", "change", "gap_to_national")


def _outcome_name(v: str) -> str:
    outcomes = [c.name for c in load_schema("school_years").columns_with_role("outcome")]
    if v not in outcomes:
        raise ValueError(_unknown("outcome", v, outcomes))
    return v


class SchoolEntry(_Strict):
    """One school of the partnership: its URN, the date it joined and its role."""

    urn: int = Field(ge=100000, le=999999)
    joined: dt.date
    role: Literal["member", "supporting"] = "member"


class TargetEntry(_Strict):
    """A target for one outcome: the partnership's value in ``year`` (``level``), its change from the
    baseline year (``change``), or its gap to the national average (``gap_to_national``, the
    partnership minus England; -1.0 means "at most one point below")."""

    outcome: str
    kind: Literal["level", "change", "gap_to_national"]
    value: float
    year: int = Field(ge=2000, le=2100)
    baseline_year: int | None = Field(default=None, ge=2000, le=2100)

    _name = field_validator("outcome")(classmethod(lambda cls, v: _outcome_name(v)))


class PupilSD(_Strict):
    sd: float = Field(gt=0)
    source: str = Field(min_length=3)


class PartnershipFile(_Strict):
    """A partnership's evaluation plan (see the module docstring)."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    title: str = Field(min_length=1)
    baseline_year: int = Field(ge=2000, le=2100)
    partnership_id: str | None = None
    schools: tuple[SchoolEntry, ...] = ()
    supporting: tuple[int, ...] = ()
    outcomes: dict[Literal["primary", "secondary"], str] = {}
    pupil_sd: dict[str, PupilSD] = {}
    targets: tuple[TargetEntry, ...] = ()
    family_size: int = Field(default=50, ge=5)
    pre_years: int = Field(default=4, ge=2)
    post_years: int = Field(default=5, ge=1)
    placebo_replications: int = Field(default=200, ge=99)
    seed: int = 20240901

    @field_validator("outcomes")
    @classmethod
    def _outcomes(cls, v):
        for name in v.values():
            _outcome_name(name)
        return v

    @field_validator("pupil_sd")
    @classmethod
    def _sds(cls, v):
        for name in v:
            _outcome_name(name)
        return v

    @model_validator(mode="after")
    def _who(self):
        if (self.partnership_id is None) == (not self.schools):
            raise ValueError("name the schools either with partnership_id (a partnership in the store) or with "
                             "[[schools]] tables (urn, joined), not both and not neither")
        urns = [s.urn for s in self.schools]
        twice = sorted({u for u in urns if urns.count(u) > 1})
        if twice:
            raise ValueError(f"the same school is listed twice: URN {twice[0]}")
        if self.schools and self.supporting:
            raise ValueError("with [[schools]] tables, mark a supporting school with role = \"supporting\"; "
                             "'supporting' is for partnership_id")
        for t in self.targets:
            base = t.baseline_year or self.baseline_year
            if t.year <= base:
                raise ValueError(f"target for {t.outcome}: the target year {t.year} must come after the baseline "
                                 f"year {base}")
        return self


def load_partnership_file(path: str | Path) -> PartnershipFile:
    """Parse and check a partnership file; every problem is an InputError naming file, line and key."""
    return load_toml_model(path, PartnershipFile, "partnership file")


def schools_frame(plan: PartnershipFile) -> pd.DataFrame | None:
    """The [[schools]] tables as a frame (urn, joined, role), or None when partnership_id names them."""
    if not plan.schools:
        return None
    return pd.DataFrame({"urn": [s.urn for s in plan.schools],
                         "joined": pd.to_datetime([s.joined for s in plan.schools]),
                         "role": [s.role for s in plan.schools]})
