"""Study definitions: ``studies/<id>.toml`` parsed into a typed model.

A study is a question answered by comparing the schools that joined a kind of
partnership with similar schools that did not. Unknown or misspelt keys are
errors that suggest the right key, with the line of the TOML file; values are
checked against the data model (partnership types, phases, outcomes).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Literal

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer,
                      model_validator)

from evaluation.data.schema import load_schema
from evaluation.errors import InputError, Problem, problem
from evaluation.estimators.names import DEFAULT_USE, ESTIMATOR_NAMES, canonical

ESTIMATORS = ESTIMATOR_NAMES
CONTEXT_COVARIATES = ("fsm_pct", "eal_pct", "sen_pct", "pupils", "ofsted_grade")
SCHOOL_COVARIATES = ("urban",)
OUTCOME_COVARIATES = ("pre_level", "pre_trend", "pre_last", "pre_y1", "pre_y2", "pre_y3", "ofsted_last")
COVARIATES = OUTCOME_COVARIATES + CONTEXT_COVARIATES + SCHOOL_COVARIATES
PUPIL_OUTCOME_KEYS = ("level", "value_added", "sample", "pupil_groups")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CohortSpec(_Strict):
    """Who is studied: schools that joined these partnership types in these years."""

    partnership_types: tuple[str, ...] = Field(min_length=1)
    sponsor_led: bool | None = None
    joined_between: tuple[int, int]
    phase: Literal["primary", "secondary"]
    regions: tuple[str, ...] = ()
    la_codes: tuple[int, ...] = ()
    role: Literal["any", "lead", "member"] = "any"
    min_pre_years: int = Field(default=2, ge=1)
    #: What counts as treated (``evaluation.stages.cohort``): "ever_joined" (from the first joining on,
    #: whatever happens after: intention to treat), "moved" (from a move out of one partnership of the
    #: studied types into another, compared with schools that stayed), or "in_partnership" (while a
    #: member: switches on at joining and off at leaving; de Chaisemartin & D'Haultfoeuille only).
    exposure: Literal["ever_joined", "moved", "in_partnership"] = "ever_joined"
    #: For ``exposure = "moved"``: movers and stayers must have been in their partnership at least this
    #: many years before their window starts, so that the effect of having joined it has built up and
    #: the comparison is moving vs staying, not a joining effect still growing.
    settled_years: int = Field(default=0, ge=0)

    @model_serializer(mode="wrap")
    def _default_exposure(self, handler):
        """A cohort without ``exposure`` dumps (and hashes) exactly as before the option existed."""
        data = handler(self)
        if isinstance(data, dict) and self.exposure == "ever_joined":
            data.pop("exposure", None)
        if isinstance(data, dict) and self.settled_years == 0:
            data.pop("settled_years", None)
        return data

    @field_validator("partnership_types")
    @classmethod
    def _types(cls, v):
        return _all_allowed(v, load_schema("partnerships").column("type").allowed, "partnership type")

    @field_validator("regions")
    @classmethod
    def _regions(cls, v):
        return _all_allowed(v, load_schema("schools").column("region").allowed, "region")

    @field_validator("joined_between")
    @classmethod
    def _years(cls, v):
        if v[0] > v[1]:
            raise ValueError(f"joined_between must be [first, last] with first <= last, got {list(v)}")
        return v


class OutcomeSpec(_Strict):
    """The outcome and the event window in academic years relative to first exposure.

    pupil_sd: the national pupil-level standard deviation of the outcome, with its source
    (``pupil_sd_source``, e.g. a DfE statistical release); effect sizes, months' progress and
    the padlocks' power criterion use it (EEF conventions are in pupil-level SDs). Without it,
    real school-level data give results in the outcome's own units only.
    """

    level: Literal["school", "pupil"] = "school"  # first: the outcome's name is checked against its table
    name: str
    window: tuple[int, int] = (-4, 4)
    pupil_sd: float | None = Field(default=None, gt=0)
    pupil_sd_source: str | None = None
    # pupil-level studies (``level = "pupil"``, ``evaluation.stages.pupils``): the outcome is a column of
    # the pupils table; each school-year's outcome is its pupils' mean value added (``value_added``: the
    # pupil's result minus the national mean of pupils with the same prior attainment that year); the
    # ``on_roll_before_joining`` sample keeps, after joining, only pupils on the school's roll before it
    # joined (a changed intake is not mistaken for an effect); ``pupil_groups`` adds results for
    # disadvantaged pupils and the others.
    value_added: bool = True
    sample: Literal["on_roll_before_joining", "all"] = "on_roll_before_joining"
    pupil_groups: tuple[Literal["disadvantaged"], ...] = ()

    @model_serializer(mode="wrap")
    def _school_level_as_before(self, handler):
        """A school-level outcome dumps (and hashes) exactly as before pupil-level studies existed."""
        data = handler(self)
        if isinstance(data, dict) and self.level == "school":
            for key in PUPIL_OUTCOME_KEYS:
                data.pop(key, None)
        return data

    @model_validator(mode="after")
    def _sd_with_source(self):
        if (self.pupil_sd is None) != (self.pupil_sd_source is None or not self.pupil_sd_source.strip()):
            raise ValueError("pupil_sd and pupil_sd_source go together: give the pupil-level SD of the outcome "
                             "and where it comes from (e.g. the DfE release and year)")
        return self

    @field_validator("name")
    @classmethod
    def _outcome(cls, v, info):
        table = "pupils" if info.data.get("level") == "pupil" else "school_years"
        outcomes = [c.name for c in load_schema(table).columns_with_role("outcome")]
        if v not in outcomes:
            raise ValueError(_unknown("outcome" if table == "school_years" else "pupil outcome", v, outcomes))
        return v

    @model_validator(mode="after")
    def _pupil_keys(self):
        if self.level == "school":
            set_keys = [k for k in PUPIL_OUTCOME_KEYS if k != "level" and k in self.model_fields_set]
            if set_keys:
                raise ValueError(f"{', '.join(set_keys)} apply only to pupil-level studies: add level = \"pupil\"")
        elif self.pupil_sd is not None:
            raise ValueError("a pupil-level study measures the pupil-level SD from the pupils table: remove pupil_sd")
        return self

    @field_validator("window")
    @classmethod
    def _window(cls, v):
        if not (v[0] <= -2 and v[1] >= 0):
            raise ValueError(f"window must start at -2 or earlier (two pre-years, -1 is the reference) and end "
                             f"at 0 or later, got {list(v)}")
        return v


class ComparisonSpec(_Strict):
    """Where comparison schools come from."""

    pool: Literal["never", "not_yet"] = "never"
    exclude_types: tuple[str, ...] = ()
    exclude_urns: tuple[int, ...] = ()


class MatchingSpec(_Strict):
    """How comparison schools are chosen from the pool, per joining cohort."""

    method: Literal["nearest", "mahalanobis", "family", "none"] = "nearest"
    covariates: tuple[str, ...] = ("pre_level", "pre_trend", "fsm_pct", "eal_pct", "sen_pct", "pupils", "urban")
    exact: tuple[Literal["region", "la_code"], ...] = ()
    ratio: int = Field(default=1, ge=1, le=20)
    replace: bool = False
    caliper: float | None = Field(default=0.2, gt=0)
    family_size: int = Field(default=50, ge=2)

    @model_validator(mode="before")
    @classmethod
    def _caliper_for_logit_only(cls, data):
        """The caliper (default 0.2 SD of the logit) applies to logit nearest-neighbour matching: for
        other methods an unstated caliper is none, as the matcher uses it."""
        if isinstance(data, dict) and data.get("method", "nearest") != "nearest" and "caliper" not in data:
            return {**data, "caliper": None}
        return data

    @field_validator("covariates")
    @classmethod
    def _covs(cls, v):
        return _all_allowed(v, COVARIATES, "matching covariate")


class EstimatorsSpec(_Strict):
    use: tuple[str, ...] = DEFAULT_USE  # chaisemartin_dhaultfoeuille only when named
    primary: str = "callaway_santanna"

    @field_validator("use", mode="before")
    @classmethod
    def _use(cls, v):
        # the command line's spelling (callaway-santanna) is accepted too and stored canonically
        names = tuple(canonical(x) if isinstance(x, str) else x for x in v) if isinstance(v, (list, tuple)) else v
        return _all_allowed(names, ESTIMATORS, "estimator") if isinstance(names, tuple) else names

    @field_validator("primary", mode="before")
    @classmethod
    def _primary_spelling(cls, v):
        if not isinstance(v, str):
            return v
        name = canonical(v)
        if name not in ESTIMATORS:
            raise ValueError(_unknown("estimator", v, ESTIMATORS))
        return name

    @model_validator(mode="after")
    def _primary_used(self):
        if self.primary not in self.use:
            raise ValueError(f"primary estimator {self.primary!r} must be one of use = {list(self.use)}")
        if self.primary == "event_study":
            raise ValueError("primary estimator 'event_study' gives effects by year, not one overall effect: choose "
                             "callaway_santanna, sun_abraham, imputation, twfe or chaisemartin_dhaultfoeuille")
        return self


class InferenceSpec(_Strict):
    """Headline clustering (the other clusterings are reported beside it), seed and alpha."""

    cluster: Literal["school", "partnership", "matched_set"] = "partnership"
    seed: int = 20240901
    alpha: float = Field(default=0.05, gt=0, lt=0.5)


#: ONS Secure Research Service output rule: no count or statistic from fewer than 10 units.
DISCLOSURE_DEFAULT_THRESHOLD = 10


class DisclosureSpec(_Strict):
    """Disclosure control of what is published (``evaluation.publish.disclosure``): no count or
    statistic from fewer than ``threshold`` schools. The default is the ONS Secure Research
    Service rule (10 units); a lower threshold needs ``reason``, which the chapter prints."""

    reason: str | None = None  # declared first so that the threshold's check can see it
    threshold: int = Field(default=DISCLOSURE_DEFAULT_THRESHOLD, ge=1)

    @field_validator("threshold")
    @classmethod
    def _lowered_needs_reason(cls, v, info):
        reason = info.data.get("reason")
        if v < DISCLOSURE_DEFAULT_THRESHOLD and not (reason and reason.strip()):
            raise ValueError(f"threshold {v} is below the ONS Secure Research Service default of "
                             f"{DISCLOSURE_DEFAULT_THRESHOLD} schools: say why in [disclosure] reason = \"...\" "
                             "(the chapter prints it), or remove the threshold to use the default")
        return v


#: What a study may split its partnership schools by (``[heterogeneity] by``), in words for the book.
#: Computed in ``evaluation.stages.heterogeneity`` (bins and sources are documented there).
HETEROGENEITY_CHARACTERISTICS = {
    "trust_size": "size of the partnership when the school joined",
    "sponsor_led": "sponsor-led or not",
    "urban": "urban or rural location",
    "phase": "phase of education",
    "distance_to_partner": "distance to the nearest partner school",
    "role": "lead school or member school",
    "founding": "founding school or a school that joined later",
    "partnership_type": "kind of partnership",
    "region": "region",
}
#: ``by = ["attribute:NAME"]``: a school attribute the user imported (``impact data import
#: school_attributes FILE``, e.g. coastal), its distinct values the subgroups.
ATTRIBUTE_PREFIX = "attribute:"
ATTRIBUTE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def attribute_name(characteristic: str) -> str | None:
    """``"attribute:coastal"`` -> ``"coastal"``; a built-in characteristic -> None."""
    return characteristic[len(ATTRIBUTE_PREFIX):] if characteristic.startswith(ATTRIBUTE_PREFIX) else None


class HeterogeneitySpec(_Strict):
    """Subgroup effects (``evaluation.stages.heterogeneity``): the primary estimator re-estimated on the
    partnership schools of each subgroup of every characteristic in ``by`` (each with its own matched
    comparison schools, the study's one estimation specification), and a permutation test, with
    ``permutations`` relabellings, that the subgroup effects are equal."""

    by: tuple[str, ...] = Field(min_length=1)
    permutations: int = Field(default=199, ge=19, le=9999)

    @field_validator("by")
    @classmethod
    def _by(cls, v):
        if len(set(v)) != len(v):
            raise ValueError(f"each characteristic once, got {list(v)}")
        for name in v:
            attr = attribute_name(name)
            if attr is not None and not ATTRIBUTE_NAME.fullmatch(attr):
                raise ValueError(f"{name!r}: an attribute name is letters, digits and underscores after "
                                 f"'{ATTRIBUTE_PREFIX}', e.g. 'attribute:coastal'")
        builtin = tuple(x for x in v if attribute_name(x) is None)
        _all_allowed(builtin, tuple(HETEROGENEITY_CHARACTERISTICS) + (ATTRIBUTE_PREFIX + "NAME",),
                     "heterogeneity characteristic")
        return v


class Study(_Strict):
    id: str
    title: str
    question: str
    cohort: CohortSpec
    outcome: OutcomeSpec
    comparison: ComparisonSpec = ComparisonSpec()
    matching: MatchingSpec = MatchingSpec()
    estimators: EstimatorsSpec = EstimatorsSpec()
    inference: InferenceSpec = InferenceSpec()
    disclosure: DisclosureSpec = DisclosureSpec()
    heterogeneity: HeterogeneitySpec | None = None

    @model_serializer(mode="wrap")
    def _optional_sections(self, handler):
        """A study without ``[heterogeneity]`` dumps (and hashes) exactly as before the option existed."""
        data = handler(self)
        if isinstance(data, dict) and self.heterogeneity is None:
            data.pop("heterogeneity", None)
        return data

    @field_validator("id")
    @classmethod
    def _id(cls, v):
        if not re.fullmatch(r"[a-z0-9][a-z0-9_\-]*", v):
            raise ValueError(f"id must be lower-case letters, digits, '_' or '-', got {v!r}")
        return v

    @model_validator(mode="after")
    def _exposure_needs_its_estimator(self):
        if self.cohort.exposure == "in_partnership" and set(self.estimators.use) != {"chaisemartin_dhaultfoeuille"}:
            others = sorted(set(self.estimators.use) - {"chaisemartin_dhaultfoeuille"})
            raise ValueError(
                "cohort.exposure = 'in_partnership' switches treatment off when a school leaves, which only "
                "de Chaisemartin & D'Haultfoeuille's estimator allows for: estimators.use must be "
                f"[\"chaisemartin_dhaultfoeuille\"] (and primary the same); {', '.join(others)} "
                "assume that joining is for ever (use exposure = 'ever_joined' for them)")
        if self.outcome.level == "pupil" and self.cohort.exposure == "in_partnership":
            raise ValueError("a pupil-level study follows the pupils on roll when the school joined; "
                             "cohort.exposure = 'in_partnership' is for school-level outcomes")
        if self.outcome.level == "pupil" and self.outcome.sample == "on_roll_before_joining":
            stage = load_schema("pupils").column(self.outcome.name).key_stage
            # KS4: Year 7 is 4 years before the results; KS2: Reception is 6 years before, but with value added
            # the KS1 prior (Year 2, 4 years before) must be measured before joining too
            most, why = {"KS4": (3, "Year 7 to 11 in a secondary school"),
                         "KS2": ((3, "their KS1 results, the prior attainment of value added, come from Year 2, "
                                     "4 years before KS2") if self.outcome.value_added else
                                 (5, "Reception to Year 6 in a primary school"))}.get(stage, (None, ""))
            if most is not None and self.outcome.window[1] > most:
                raise ValueError(
                    f"outcome.window ends at {self.outcome.window[1]}, but {stage} pupils can have been on roll (and "
                    f"measured) before joining only up to {most} years after it ({why}): end the window at {most} or "
                    f"earlier, or use sample = \"all\"")
        if self.cohort.exposure != "moved" and self.cohort.settled_years:
            raise ValueError("cohort.settled_years applies only to exposure = 'moved'")
        if self.cohort.exposure == "moved" and set(self.comparison.exclude_types) & set(self.cohort.partnership_types):
            raise ValueError("cohort.exposure = 'moved' compares movers with schools that stayed in partnerships of "
                             "the studied types: comparison.exclude_types must not exclude those types")
        return self

    @model_validator(mode="after")
    def _outcome_matches_phase(self):
        table = "pupils" if self.outcome.level == "pupil" else "school_years"
        stage = load_schema(table).column(self.outcome.name).key_stage
        want = {"primary": "KS2", "secondary": "KS4"}[self.cohort.phase]
        if stage and stage != want:
            raise ValueError(f"outcome {self.outcome.name!r} is a {stage} measure but the cohort phase is "
                             f"{self.cohort.phase!r} ({want} outcomes only)")
        return self

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @property
    def spec_hash(self) -> str:
        """SHA-256 of the parsed definition (formatting and comments do not change it)."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


def _all_allowed(values, allowed, what: str):
    """``values`` unchanged if each is in ``allowed``; else a ValueError suggesting the closest."""
    for v in values:
        if v not in allowed:
            raise ValueError(_unknown(what, v, allowed))
    return values


def _unknown(what: str, value, allowed) -> str:
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {value!r}: expected one of {', '.join(map(str, allowed))}{hint}"


# ------------------------------------------------------------------------------ loading


def _fields_at(loc: tuple, model: type[BaseModel] | None = None) -> list[str]:
    """Known keys at a location of a model (the Study by default; for suggestions)."""
    model = model or Study
    for part in loc[:-1]:
        info = model.model_fields.get(str(part))
        inner = info.annotation if info is not None else None
        if typing.get_origin(inner) in (tuple, list):  # an array of tables: tuple[Model, ...]
            inner = typing.get_args(inner)[0]
        elif typing.get_origin(inner) in (typing.Union, types.UnionType):  # an optional table: Model | None
            inner = next((a for a in typing.get_args(inner) if isinstance(a, type) and issubclass(a, BaseModel)),
                         None)
        if not isinstance(inner, type) or not issubclass(inner, BaseModel):
            return []
        model = inner
    return list(model.model_fields)


def _line_of(text: str, loc: tuple) -> int | None:
    """Line (1-based) where the key at ``loc`` is written in the TOML text, if found."""
    lines = text.splitlines()
    section = ".".join(str(p) for p in loc[:-1] if not isinstance(p, int))
    key = str(loc[-1]) if loc else ""
    current = ""
    for i, line in enumerate(lines, start=1):
        stripped = line.strip()
        header = re.fullmatch(r"\[\[?\s*([^\]]+?)\s*\]\]?", stripped)  # [table] or [[array.of.tables]]
        if header:
            current = header.group(1)
            if not key and current == section:
                return i
            continue
        if current == section and re.match(rf"{re.escape(key)}\s*=", stripped):
            return i
    return None


def _problems_from(err: ValidationError, file: str, text: str, model: type[BaseModel] | None = None) -> list[Problem]:
    out = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not isinstance(p, int))
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        line = _line_of(text, loc) if loc else None
        if e["type"] == "extra_forbidden":
            known = _fields_at(loc, model)
            close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
            hint = f"did you mean {'.'.join([*map(str, loc[:-1]), close[0]])!r}?" if close else \
                f"expected one of {', '.join(known)}"
            out.append(problem(f"unknown key {dotted!r}: {hint}", file=file, row=line, column=dotted))
        elif e["type"] == "missing":
            out.append(problem(f"missing required key {dotted!r}", file=file,
                               row=_line_of(text, loc[:-1] + ("",)) if len(loc) > 1 else None, column=dotted))
        else:
            msg = e["msg"].removeprefix("Value error, ")
            value = e.get("input")
            shown = {"value": value} if not isinstance(value, dict) else {}
            out.append(problem(msg, file=file, row=line, column=dotted, **shown))
    return out


def load_toml_model(path: str | Path, model: type[BaseModel], what: str):
    """Parse a TOML file into ``model`` (a model with an ``id`` that must match the file name);
    every problem is an InputError naming the file, the line and the key (``what``: "study
    definition", "partnership file")."""
    path = Path(path)
    if not path.exists():
        raise InputError(problem(f"{what} not found: {path}", file=str(path)))
    text = path.read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        m = re.search(r"at line (\d+)", str(err))
        raise InputError(problem(f"not valid TOML: {err}", file=path.name,
                                 row=int(m.group(1)) if m else None)) from None
    try:
        parsed = model.model_validate(raw)
    except ValidationError as err:
        problems = _problems_from(err, path.name, text, model=model)
        raise InputError(problems, summary=f"{path.name}: {len(problems)} problem(s) in the {what}")
    if parsed.id != path.stem:
        raise InputError(problem(f"the {what}'s id {parsed.id!r} must match the file name {path.stem!r}: set "
                                 f"id = \"{path.stem}\" in the file (or name the file {parsed.id}.toml)",
                                 file=path.name, row=_line_of(text, ("id",)), column="id", value=parsed.id))
    return parsed


def load_study(path: str | Path) -> Study:
    """Parse and check a study definition; every problem is an InputError naming file, line and key."""
    return load_toml_model(path, Study, "study definition")
