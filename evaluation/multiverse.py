"""The multiverse: the study rerun over a grid of defensible analysis choices.

A study's headline rests on choices an equally careful analyst could have made otherwise:
how comparison schools are matched (propensity-score or Mahalanobis nearest neighbours, one
or three per partnership school, with or without a caliper), on which characteristics,
from which comparison pool, with which heterogeneity-robust DiD estimator, over which event
window. :func:`default_grid` crosses the study's own choice in each of these dimensions with
one defensible alternative (three estimators), :func:`run_multiverse` estimates every
combination, and the chapter draws the estimates as a specification curve (Simonsohn,
Simmons & Nelson 2020, "Specification curve analysis", Nature Human Behaviour 4, 1208-1214;
Steegen, Tuerlinckx, Gelman & Vanpaemel 2016, "Increasing transparency through a multiverse
analysis"). The study's own combination is one cell of the grid, flagged ``headline``.

Each specification runs only what its estimate needs: cohort -> matching -> analysis panel ->
the estimator with the interval the headline uses (``stages.estimate.headline_of``: the
calibrated inference for that estimator, the study's clustering, alpha and seed), not the
diagnostics of a full run. Specifications that share a matching configuration (everything but
the estimator) are one task: the matching is done once and every estimator fitted on the same
panel. Tasks run on the runner (``evaluation.executors.map_ordered``: serial, a process pool
or a Dask cluster); each is a pure function of the study, the tables and the seed, so the
result does not depend on where the tasks ran.

**Agreement with the headline** (:data:`AGREEMENT_RULE`): when the headline's (1 - alpha)
interval excludes zero, a specification agrees when its interval excludes zero on the same
side (an effect in the same direction that the data detect); when the headline's interval
includes zero, a specification agrees when its interval includes zero too. A specification
that cannot be estimated (a design the estimator cannot support, no school matched within
the caliper, ...) is reported with the reason and left out of the shares, never dropped
silently.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field, replace
from functools import partial

import numpy as np
from pydantic import ValidationError

from evaluation import __version__
from evaluation.data.schema import load_schema
from evaluation.diagnostics.placebo import pre_years_needed
from evaluation.errors import InputError, problem
from evaluation.estimators import registry
from evaluation.executors import map_ordered
from evaluation.spec import build_spec
from evaluation.stages.cohort import StudyData, build_cohort, data_fingerprint
from evaluation.stages.estimate import headline_of
from evaluation.stages.match import match_cohorts, pooled_balance, treated_lost
from evaluation.stages.panel import analysis_panel
from evaluation.report.markdown import types_listing
from evaluation.result_schema import MULTIVERSE_SCHEMA_VERSION
from evaluation.study import Study

__all__ = ["AGREEMENT_RULE", "DIMENSIONS", "Grid", "Level", "MultiverseResult", "SpecResult", "Specification",
           "default_grid", "run_multiverse", "summarise", "variant_study"]


#: The heterogeneity-robust estimators of one overall ATT a specification may use (static TWFE
#: is left out: under staggered joining with effects that change over time it is biased,
#: Goodman-Bacon 2021, so it is not a defensible alternative; it appears only when a study
#: makes it its own primary estimator).
ROBUST_ESTIMATORS = ("callaway_santanna", "imputation", "sun_abraham")

ESTIMATOR_LABELS = {"callaway_santanna": "Callaway-Sant'Anna", "imputation": "imputation (BJS)",
                    "sun_abraham": "Sun-Abraham", "twfe": "TWFE (static)"}
ESTIMATOR_WORDS = {
    "callaway_santanna": "group-time effects against the comparison schools, averaged over the window",
    "imputation": "untreated outcomes imputed from comparison schools and pre-joining years",
    "sun_abraham": "interaction-weighted event study, averaged over the window",
    "twfe": "static two-way fixed effects (the study's own primary estimator)",
}

#: Outcome-level matching covariates (the "no outcome levels" covariate set drops them).
LEVEL_COVARIATES = ("pre_level", "pre_last", "pre_y1", "pre_y2", "pre_y3")

#: Dimensions of the grid, in the order the specification curve's panel shows them.
DIMENSIONS = ("estimator", "matching", "ratio", "caliper", "covariates", "pool", "window")
DIMENSION_WORDS = {
    "estimator": "Estimator", "matching": "Matching distance", "ratio": "Comparison schools per school",
    "caliper": "Caliper", "covariates": "Matching characteristics", "pool": "Comparison pool",
    "window": "Event window",
}
AGREEMENT_RULE = (
    "When the headline's confidence interval excludes zero, a specification agrees when its interval "
    "excludes zero on the same side (the same direction, detected); when the headline's interval includes "
    "zero, a specification agrees when its interval includes zero too. Specifications that could not be "
    "estimated are listed with the reason and left out of the shares.")


# ---------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class Level:
    """One choice in one dimension: ``key`` (stable, in multiverse.json), ``label`` (short, for the
    figure), ``detail`` (what it means) and ``value`` (what the study definition gets)."""

    dimension: str
    key: str
    label: str
    detail: str
    value: object = None

    def to_dict(self) -> dict:
        v = self.value
        return {"key": self.key, "label": self.label, "detail": self.detail,
                "value": list(v) if isinstance(v, tuple) else v}


@dataclass(frozen=True)
class Specification:
    """One cell of the grid: a level key per dimension (None where a dimension does not apply:
    ratio and caliper without nearest-neighbour matching, caliper with Mahalanobis matching)."""

    index: int
    choices: dict  # dimension -> level key or None
    headline: bool

    def matching_key(self) -> tuple:
        """Everything but the estimator: specifications sharing it share the matched panel."""
        return tuple(self.choices[d] for d in DIMENSIONS if d != "estimator")


@dataclass(frozen=True)
class Grid:
    """Levels per dimension (the study's own level first in each) and the matching
    configurations the matching dimensions combine into."""

    levels: dict  # dimension -> tuple[Level, ...]
    matching_configurations: tuple  # tuple of (method key, ratio key | None, caliper key | None)
    notes: tuple = ()  # levels left out, and why

    def level(self, dimension: str, key) -> Level | None:
        return None if key is None else next(lv for lv in self.levels[dimension] if lv.key == key)

    def specifications(self) -> list[Specification]:
        """Every combination, in a fixed order; the first is the study's own (the headline)."""
        out: list[Specification] = []
        own = {d: self.levels[d][0].key for d in DIMENSIONS}
        for method, ratio, caliper in self.matching_configurations:
            for cov in self.levels["covariates"]:
                for pool in self.levels["pool"]:
                    for window in self.levels["window"]:
                        for est in self.levels["estimator"]:
                            choices = {"estimator": est.key, "matching": method, "ratio": ratio,
                                       "caliper": caliper, "covariates": cov.key, "pool": pool.key,
                                       "window": window.key}
                            head = all(choices[d] == own[d] for d in ("estimator", "covariates", "pool", "window")) \
                                and (method, ratio, caliper) == self.matching_configurations[0]
                            out.append(Specification(len(out), choices, head))
        return out

    @property
    def tasks(self) -> int:
        """Tasks on the runner: one per matching (specifications differing only in the estimator share one)."""
        return len({s.matching_key() for s in self.specifications()})

    def to_dict(self) -> dict:
        return {"dimensions": [{"dimension": d, "label": DIMENSION_WORDS[d],
                                "levels": [lv.to_dict() for lv in self.levels[d]]} for d in DIMENSIONS],
                "matching_configurations": [list(m) for m in self.matching_configurations],
                "notes": list(self.notes)}


def _ratio_key(r: int) -> str:
    return f"{r}:1"


def _caliper_key(c: float | None) -> str:
    return "none" if c is None else f"{c:g}"


def _window_key(w) -> str:
    return f"[{w[0]}, {w[1]}]"


def _alt_ratio(r: int) -> int:
    return 3 if r == 1 else 1


def default_grid(study: Study, data: StudyData | None = None) -> Grid:
    """The study's own choice in each dimension, crossed with one defensible alternative:

    * matching distance: logit propensity score (MatchIt ``distance = "glm"``) or Mahalanobis
      nearest neighbours (the study's own method first; a study matching by families of
      schools or not at all keeps its method as one more configuration);
    * comparison schools per partnership school: 1:1 or 3:1 (nearest-neighbour methods);
    * caliper: the study's (default 0.2 SD of the logit, Austin 2011) or none; with none in the
      study, 0.2 SD. Logit matching only: the Mahalanobis matcher takes no caliper;
    * matching characteristics: the study's, or the study's without the pre-joining outcome
      levels (trend and context only: matching on levels can pull in schools whose last
      results were a transitory dip, Daw & Hatfield 2018); a study without levels gets the
      alternative with the mean pre-joining outcome level added;
    * comparison pool: the study's; schools in no partnership of any kind (a study that already
      keeps every kind out gets the alternative of other kinds allowed); and the other pool
      rule (never joined / not yet joined by the end of the window). With ``data``, a pool that
      holds exactly the study's schools in every window is left out (it would only repeat
      specifications: a study that keeps the studied types out of its pool gains nothing from
      "not yet joined"), and ``Grid.notes`` says so;
    * estimator: Callaway & Sant'Anna, imputation (Borusyak, Jaravel & Spiess) and Sun &
      Abraham (the study's primary first);
    * event window: the study's, and one year shorter at each end where the window allows it
      (the pre-years the matching characteristics need, and the year of joining, are kept).
    """
    m = study.matching
    levels: dict[str, tuple[Level, ...]] = {}

    primary = study.estimators.primary
    ests = [primary] + [e for e in ROBUST_ESTIMATORS if e != primary]
    if study.cohort.exposure == "in_partnership":  # only this estimator allows a treatment that ends
        ests = [primary]
    levels["estimator"] = tuple(Level("estimator", e, ESTIMATOR_LABELS.get(e, e), ESTIMATOR_WORDS.get(e, e), e)
                                for e in ests)

    method_words = {"nearest": ("logit", "nearest neighbours on the logit propensity score"),
                    "mahalanobis": ("Mahalanobis", "nearest neighbours on the Mahalanobis distance"),
                    "family": ("family", f"families of the {m.family_size} most similar schools"),
                    "none": ("none", "no matching: the whole comparison pool")}
    methods = [m.method] + [x for x in ("nearest", "mahalanobis") if x != m.method]
    levels["matching"] = tuple(Level("matching", x, method_words[x][0], method_words[x][1], x) for x in methods)

    own_ratio = m.ratio if m.method in ("nearest", "mahalanobis") else 1
    ratios = [own_ratio, _alt_ratio(own_ratio)]
    levels["ratio"] = tuple(Level("ratio", _ratio_key(r), _ratio_key(r),
                                  f"{r} comparison school{'s' if r > 1 else ''} per partnership school", r)
                            for r in ratios)

    own_cal = m.caliper if m.method == "nearest" else None
    cals = [own_cal, None if own_cal is not None else 0.2]
    levels["caliper"] = tuple(Level("caliper", _caliper_key(c), "none" if c is None else f"{c:g} SD",
                                    "no caliper" if c is None else
                                    f"{c:g} standard deviations of the logit propensity score", c) for c in cals)
    # (logit matching only: a Mahalanobis specification has no caliper level)

    covs = tuple(m.covariates)
    no_levels = tuple(c for c in covs if c not in LEVEL_COVARIATES)
    cov_levels = [Level("covariates", "study", "study's", "the study's: " + ", ".join(covs), covs)]
    if no_levels != covs and no_levels:
        cov_levels.append(Level("covariates", "no_levels", "no outcome levels",
                                "the study's without the pre-joining outcome levels: " + ", ".join(no_levels),
                                no_levels))
    elif no_levels == covs:
        plus = covs + ("pre_level",)
        cov_levels.append(Level("covariates", "with_level", "+ outcome level",
                                "the study's and the mean pre-joining outcome: " + ", ".join(plus), plus))
    levels["covariates"] = tuple(cov_levels)

    levels["pool"] = _pool_levels(study)

    lo, hi = study.outcome.window
    need = pre_years_needed(study)
    shorter = (lo + 1 if -(lo + 1) >= need else lo, hi - 1 if hi >= 1 else hi)
    windows = [(lo, hi)] + ([shorter] if shorter != (lo, hi) else [])
    levels["window"] = tuple(Level("window", _window_key(w), _window_key(w),
                                   ("the study's" if w == (lo, hi) else "shorter (one year less at each end the "
                                                                         "matching allows)")
                                   + f": years {w[0]} to {w[1]} relative to joining", w) for w in windows)

    notes: list[str] = []
    if data is not None:
        levels["pool"], notes = _distinct_pools(study, data, levels["pool"], levels["window"])
    configs: list[tuple] = []
    for method in methods:
        if method == "nearest":
            configs += [(method, _ratio_key(r), _caliper_key(c)) for r in ratios for c in cals]
        elif method == "mahalanobis":
            configs += [(method, _ratio_key(r), None) for r in ratios]
        else:
            configs.append((method, None, None))
    return Grid(levels, tuple(configs), tuple(notes))


_RULE_WORDS = {"never": "schools that never joined the studied types",
               "not_yet": "schools not (yet) in the studied types by the end of the window"}


def _pool_levels(study: Study) -> tuple[Level, ...]:
    """The study's comparison pool; schools in no partnership of any kind (or, when the study already
    keeps every other kind out, other kinds allowed); and the other pool rule (never / not yet)."""
    comp = study.comparison
    own = {"pool": comp.pool, "exclude_types": tuple(comp.exclude_types)}

    def words(v: dict) -> str:
        ex = v["exclude_types"]
        return _RULE_WORDS[v["pool"]] + (f", none ever in {types_listing(ex, 'or', articles=True)}" if ex else "")

    out = [Level("pool", "study", "study's", "the study's: " + words(own), own)]
    every = tuple(load_schema("partnerships").column("type").allowed)
    studied = tuple(t for t in every if t in study.cohort.partnership_types)
    if study.cohort.exposure == "moved":  # the comparison schools are in the studied types: never exclude them
        every = tuple(t for t in every if t not in studied)
        studied = ()
    if set(own["exclude_types"]) != set(every):
        v = {**own, "exclude_types": every}
        out.append(Level("pool", "no_partnership", "in no partnership",
                         "schools in no partnership of any kind: " + words(v), v))
    elif set(studied) != set(own["exclude_types"]):
        v = {**own, "exclude_types": studied}
        out.append(Level("pool", "other_types_allowed", "other kinds allowed",
                         "schools in other kinds of partnership allowed: " + words(v), v))
    other = "not_yet" if comp.pool == "never" else "never"
    v = {**own, "pool": other}
    out.append(Level("pool", other, "not yet joined" if other == "not_yet" else "never joined", words(v), v))
    return tuple(out)


def _distinct_pools(study: Study, data: StudyData, pools: tuple, windows: tuple) -> tuple[tuple, list[str]]:
    """The pool levels that give a different comparison pool from the study's on these data (in
    some window); a level that cannot change any specification is dropped, with a note."""
    def pool_of(pool: Level, window: Level):
        variant = Study.model_validate({**study.model_dump(mode="python"),
                                        "comparison": {**study.comparison.model_dump(), **pool.value},
                                        "outcome": {**study.outcome.model_dump(), "window": window.value}})
        try:
            p = build_cohort(variant, data).pool
        except InputError:
            return None
        return frozenset(zip(p["urn"], p["own_g"].fillna(-1)))

    keep, notes = [pools[0]], []
    for lv in pools[1:]:
        if all(pool_of(lv, w) == pool_of(pools[0], w) for w in windows):
            notes.append(f"comparison pool '{lv.label}' ({lv.detail}) left out: on these data it holds exactly "
                         "the schools of the study's own pool, so every specification would repeat another")
        else:
            keep.append(lv)
    return tuple(keep), notes


def variant_study(study: Study, grid: Grid, spec: Specification) -> Study:
    """The study definition of one specification (validated like a TOML file; the estimator
    is set through the estimation spec, so the definition keeps the study's estimators)."""
    c = spec.choices
    data = study.model_dump(mode="python")
    matching = dict(data["matching"])
    matching["method"] = grid.level("matching", c["matching"]).value
    if c["ratio"] is not None:
        matching["ratio"] = grid.level("ratio", c["ratio"]).value
    if matching["method"] in ("nearest", "mahalanobis"):
        # the Mahalanobis matcher takes no caliper: None is what it uses
        matching["caliper"] = grid.level("caliper", c["caliper"]).value if c["caliper"] is not None else None
    matching["covariates"] = grid.level("covariates", c["covariates"]).value
    data["matching"] = matching
    data["comparison"] = {**data["comparison"], **grid.level("pool", c["pool"]).value}
    data["outcome"] = {**data["outcome"], "window": grid.level("window", c["window"]).value}
    return Study.model_validate(data)


# ---------------------------------------------------------------------------- estimating


@dataclass(frozen=True)
class SpecResult:
    """One specification's estimate (with the headline's inference for its estimator), or why
    there is none (``failure``)."""

    index: int
    choices: dict
    headline: bool
    estimate: float | None = None
    se: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p: float | None = None
    inference: str | None = None  # the headline-interval method id, e.g. callaway_santanna:jackknife
    treated_schools: int | None = None
    comparison_schools: int | None = None
    treated_clusters: int | None = None
    max_abs_smd_after: float | None = None
    failure: str | None = None
    agrees: bool | None = None  # with the headline (AGREEMENT_RULE); None when not estimated
    withheld: str | None = None  # set by disclosure control when publishing: why the numbers are not shown
    # set by disclosure control when publishing: the school counts are withheld (None) and each is at
    # least this many (the threshold), because differences between them would reveal the study's
    # withheld sample flow
    schools_at_least: int | None = None
    # the partnership schools lost at each step of this specification's sample flow
    # (``stages.match.treated_lost``): read by disclosure control, never written
    treated_lost: dict | None = None

    @property
    def estimated(self) -> bool:
        return self.estimate is not None

    @property
    def excludes_zero(self) -> bool | None:
        return None if not self.estimated else bool(self.ci_low > 0 or self.ci_high < 0)

    def to_dict(self) -> dict:
        out = {**asdict(self), "excludes_zero": self.excludes_zero}
        del out["treated_lost"]
        return out


@dataclass(frozen=True)
class _Task:
    """One matching configuration: its study definition and the specifications fitted on its panel."""

    study: Study | None  # None: the definition is invalid (``failure`` says why)
    specs: tuple  # of Specification
    estimators: tuple  # estimator per spec
    failure: str | None = None


def _quiet(message: str) -> None:
    """Tasks report through the runner's progress display."""


def _run_task(data: StudyData, task: _Task) -> list[SpecResult]:
    """Match once, then fit each specification's estimator on the matched panel."""
    if task.study is None:
        return [SpecResult(s.index, s.choices, s.headline, failure=task.failure) for s in task.specs]
    study = task.study
    try:
        cohort = build_cohort(study, data)
        matched = match_cohorts(study, data, cohort, _quiet)
        panel = analysis_panel(study, data, cohort, matched)
        if (panel["cohort"] > 0).sum() == 0:
            raise InputError(problem("no partnership school could be matched", column="matching.caliper"))
        bal = pooled_balance(study, matched)
    except (InputError, np.linalg.LinAlgError) as err:
        why = "matching: " + _reason(err)
        return [SpecResult(s.index, s.choices, s.headline, failure=why) for s in task.specs]
    treated = panel["cohort"] > 0
    n_t = int(panel.loc[treated, "urn"].nunique())
    counts = dict(treated_schools=n_t, comparison_schools=int(panel.loc[~treated, "urn"].nunique()),
                  treated_lost=treated_lost(len(cohort.treated), matched, n_t))
    smd = bal["smd_after"].abs()
    max_smd = float(smd.max()) if smd.notna().any() else None
    base = build_spec(study)
    out = []
    for s, est in zip(task.specs, task.estimators):
        spec = base.with_(primary=est, estimators=(est,))
        try:
            res = registry.fit(est, panel, spec)
            if res.overall is None:
                raise InputError(problem(f"{est} gave no overall estimate on this panel"))
            h = headline_of(spec, panel, res)
        except (InputError, np.linalg.LinAlgError) as err:
            out.append(SpecResult(s.index, s.choices, s.headline, failure=f"{est}: " + _reason(err), **counts,
                                  max_abs_smd_after=max_smd))
            continue
        out.append(SpecResult(s.index, s.choices, s.headline, estimate=float(h["estimate"]), se=float(h["se"]),
                              ci_low=float(h["ci_low"]), ci_high=float(h["ci_high"]), p=float(h["p"]),
                              inference=h["method"], treated_clusters=int(h["n_treated_clusters"]),
                              max_abs_smd_after=max_smd, **counts))
    return out


def _reason(err: Exception) -> str:
    return err.render() if isinstance(err, InputError) else f"{type(err).__name__}: {err}"


def _validation_words(err: ValidationError) -> str:
    """What pydantic found wrong, key by key, without its version-specific help address."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in err.errors())


def _tasks(study: Study, grid: Grid, specs: list[Specification]) -> list[_Task]:
    groups: dict[tuple, list[Specification]] = {}
    for s in specs:
        groups.setdefault(s.matching_key(), []).append(s)
    tasks = []
    for members in groups.values():
        try:
            variant = variant_study(study, grid, members[0])
            failure = None
        except ValidationError as err:  # the combination is not a valid study definition
            variant, failure = None, f"not a valid study definition: {_validation_words(err)}"
        except InputError as err:
            variant, failure = None, f"not a valid study definition: {err.render()}"
        tasks.append(_Task(variant, tuple(members), tuple(m.choices["estimator"] for m in members), failure))
    return tasks


# ---------------------------------------------------------------------------- the result


def agrees(spec: SpecResult, headline: SpecResult) -> bool | None:
    """:data:`AGREEMENT_RULE` for one specification (None when it has no estimate)."""
    if not spec.estimated:
        return None
    if headline.excludes_zero:
        return bool(spec.excludes_zero and np.sign(spec.estimate) == np.sign(headline.estimate))
    return not spec.excludes_zero


def summarise(specs: list[SpecResult], headline: SpecResult) -> dict:
    """Counts and shares over the specifications with an estimate (see :data:`AGREEMENT_RULE`);
    ``withheld``: specifications whose numbers disclosure control keeps out of publication."""
    est = [s for s in specs if s.estimated]
    n = len(est)
    withheld = sum(s.withheld is not None for s in specs)
    values = np.array([s.estimate for s in est], dtype=float)

    def share(k: int) -> float | None:
        return k / n if n else None

    same_sign = sum(np.sign(s.estimate) == np.sign(headline.estimate) for s in est)
    excl = sum(bool(s.excludes_zero) for s in est)
    same_side = sum(bool(s.excludes_zero) and np.sign(s.estimate) == np.sign(headline.estimate) for s in est)
    n_agree = sum(bool(s.agrees) for s in est)
    return {
        "specifications": len(specs), "estimated": n, "not_estimated": len(specs) - n - withheld,
        "withheld": withheld,
        "agree": int(n_agree), "share_agree": share(n_agree),
        "same_sign": int(same_sign), "share_same_sign": share(same_sign),
        "excluding_zero": int(excl), "share_excluding_zero": share(excl),
        "excluding_zero_same_sign": int(same_side), "share_excluding_zero_same_sign": share(same_side),
        "median_estimate": float(np.median(values)) if n else None,
        "min_estimate": float(values.min()) if n else None, "max_estimate": float(values.max()) if n else None,
        "headline_excludes_zero": headline.excludes_zero,
    }


def by_level(grid: Grid, specs: list[SpecResult]) -> list[dict]:
    """Per dimension and level: specifications, estimated, median estimate and share agreeing."""
    rows = []
    for d in DIMENSIONS:
        for lv in grid.levels[d]:
            members = [s for s in specs if s.choices.get(d) == lv.key]
            est = [s for s in members if s.estimated]
            rows.append({"dimension": d, "level": lv.key, "label": lv.label, "specifications": len(members),
                         "estimated": len(est),
                         "median_estimate": float(np.median([s.estimate for s in est])) if est else None,
                         "share_agree": (sum(bool(s.agrees) for s in est) / len(est)) if est else None})
    return rows


@dataclass
class MultiverseResult:
    study_id: str
    title: str
    outcome: str
    alpha: float
    spec_hash: str
    data_fingerprint: str
    grid: Grid
    specifications: list[SpecResult]
    definition: dict = field(default_factory=dict)  # the study definition (its [disclosure] policy too)

    @property
    def headline(self) -> SpecResult:
        return next(s for s in self.specifications if s.headline)

    @property
    def summary(self) -> dict:
        return summarise(self.specifications, self.headline)

    def to_dict(self) -> dict:
        return {
            "schema_version": MULTIVERSE_SCHEMA_VERSION,
            "study": {"id": self.study_id, "title": self.title, "definition": self.definition},
            "provenance": {"spec_hash": self.spec_hash, "data_fingerprint": self.data_fingerprint,
                           "package_version": __version__, "command": f"impact multiverse studies/{self.study_id}.toml"},
            "outcome": self.outcome, "alpha": self.alpha,
            "agreement_rule": AGREEMENT_RULE,
            "grid": self.grid.to_dict(),
            "headline": self.headline.to_dict(),
            "summary": self.summary,
            "by_level": by_level(self.grid, self.specifications),
            "specifications": [s.to_dict() for s in self.specifications],
        }


def run_multiverse(study: Study, data: StudyData, executor: Executor | None = None, grid: Grid | None = None,
                   label: str | None = None) -> MultiverseResult:
    """Estimate every specification of ``grid`` (default :func:`default_grid`) on the study's data.

    One task per matching configuration on ``executor`` (serial when None); ``label`` names the
    step for the progress display. The study's own specification must be estimable (it anchors
    the agreement shares): when it is not, an InputError says why."""
    grid = default_grid(study, data) if grid is None else grid
    specs = grid.specifications()
    if not any(s.headline for s in specs):
        raise InputError(problem("the grid must contain the study's own specification (the first level of "
                                 "every dimension)", column="multiverse"))
    tasks = _tasks(study, grid, specs)
    results: list[SpecResult] = [None] * len(specs)  # type: ignore[list-item]
    for done in map_ordered(partial(_run_task, _task_data(study, data)), tasks, executor, label=label):
        for r in done:
            results[r.index] = r
    head = next(r for r in results if r.headline)
    if not head.estimated:
        raise InputError(problem(f"the study's own specification cannot be estimated ({head.failure}), so "
                                 "there is no headline to compare the other specifications with",
                                 column="study"))
    results = [_with_agreement(r, head) for r in results]
    return MultiverseResult(study.id, study.title, study.outcome.name, study.inference.alpha, study.spec_hash,
                            data_fingerprint(data), grid, results, study.model_dump(mode="json"))


def _with_agreement(r: SpecResult, head: SpecResult) -> SpecResult:
    return replace(r, agrees=agrees(r, head))


def _task_data(study: Study, data: StudyData) -> StudyData:
    """The tables the tasks need, without what no specification reads (the synthetic truth, the
    other phase's schools and their results), so each task ships less to a worker. The same
    numbers: every stage selects the study's phase first (checked: the data years are kept)."""
    in_phase = data.schools["phase"] == study.cohort.phase
    urns = set(data.schools.loc[in_phase, "urn"])
    years = data.school_years[data.school_years["urn"].isin(urns)]
    trimmed = StudyData(schools=data.schools[in_phase].reset_index(drop=True), partnerships=data.partnerships,
                        memberships=data.memberships, school_years=years.reset_index(drop=True), truth=None,
                        fingerprint=data.fingerprint, pupils=_without_truth(data.pupils))
    return trimmed if trimmed.years == data.years and len(years) else StudyData(
        data.schools, data.partnerships, data.memberships, data.school_years, truth=None,
        fingerprint=data.fingerprint, pupils=_without_truth(data.pupils))


def _without_truth(pupils):
    """A pupil-level study's pupil cells (its outcome is made from them), without the synthetic truth."""
    return None if pupils is None else replace(pupils, truth=None)

