"""The result.json contracts (schema version 5): one pydantic model per kind of result.

Kinds (the ``kind`` field): ``study`` (``impact run``: :class:`StudyResult`),
``self_evaluation`` (``impact self-evaluate``: :class:`SelfEvaluationResult`) and ``estimate``
(``impact estimate --json``: :class:`EstimateResult`). Each is validated when it is built (the
pipeline, the self-evaluation and the estimate command call ``model_validate`` before
returning) and again when the book reads it.

Migration 4 -> 5 (studies with ``[heterogeneity]``): the permutation test of equal subgroup
effects relabels partnership-by-subgroup blocks when a characteristic varies within
partnerships (``test.unit = "block"``), where version 4 permuted labels among the schools of each
partnership (``"within_partnership"``), a rule that could not see differences between
partnerships. The bundled synthetic data changed with it (planted heterogeneity and
re-brokerage), so every number of the example studies changed; other studies' results only
change ``schema_version``.

Within version 4, a study result may carry ``heterogeneity`` (subgroup effects and the test that
they differ, :class:`Heterogeneity`), only when its definition has ``[heterogeneity]``; results of
studies without it are unchanged, byte for byte.

Migration 3 -> 4 (self-evaluations): a self-evaluation covers every school of a partnership,
each phase and each joining year: ``outcome``/``joined``/``phase``/``estimates``/
``randomisation``/``effect_size`` give way to ``outcomes`` (per phase), ``cohorts`` (one per
phase and joining year), ``phases`` (cohorts combined), ``headline`` (or ``headline_withheld``),
``supporting``, ``targets``, ``history`` and ``method``; each school gains ``status`` and
``reason``. Studies and estimates only change ``schema_version``; their numbers are unchanged.

Migration 2 -> 3 (studies): adds ``kind = "study"`` and ``summary`` (question, answer,
caveat: the words of the book's summary box, built with the numbers); every pre-trend test in
``diagnostics.pretrend`` has one shape (:class:`PretrendTest`: ``statistic``,
``distribution`` F / t / chi2, ``df`` list, ``p_value``, ``for_verdict``, ``note``,
``not_for_verdict``) where version 2 had three (``statistic``/``df1``/``df2``; ``t``/``df``;
``W``/``df``; imputation's ``F``); the test the verdict uses is flagged instead of being
re-derived by each reader. Self-evaluation results (version 1 had no contract) gain
``schema_version = 3``. Numbers are unchanged. Older files fail validation with a message
naming the version: re-run the study (``impact run``) to upgrade them.

Within version 3, published files may hold nulls where disclosure control withholds the sample
flow (``Counts.treated_found``, ``attrition``, ``treated_lost`` values; ``CohortCount.treated``,
``treated_matched``); a compute result (``run_study``) never does.

Migration 1 -> 2: adds ``headline``, ``clustering``, ``effects`` and ``verdict``.

``data_schemas/result.schema.json`` is generated from these models
(``python -m evaluation.result_schema > data_schemas/result.schema.json``) and a test keeps the
two in step. The book and other tools read result.json through this contract.
"""

from __future__ import annotations

import json
import sys

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

RESULT_SCHEMA_VERSION = 5
MULTIVERSE_SCHEMA_VERSION = 1  # results/<id>.multiverse/multiverse.json (evaluation.multiverse)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class VarianceInfo(_Open):
    kind: str
    cluster: str | None
    n_clusters: int | None
    small_sample: str
    df: int | None
    description: str


class EstimateEntry(_Open):
    estimator: str
    estimate: float | None
    se: float | None
    ci_low: float | None
    ci_high: float | None
    p: float | None
    n_obs: int
    n_units: int
    n_clusters: int | None
    variance: VarianceInfo
    notes: list[str]


class EventRow(_Open):
    e: int
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    p: float | None


class StudyInfo(_Open):
    id: str
    title: str
    question: str
    definition: dict


class Provenance(_Open):
    spec_hash: str
    data_fingerprint: str
    package_version: str
    seed: int
    command: str


class OutcomeInfo(_Open):
    name: str
    description: str
    unit: str | None
    window: list[int]
    data_years: list[int]


class CohortCount(_Open):
    """One joining cohort: partnership schools entering matching (``treated``), matched, and comparison
    schools matched. ``treated`` and ``treated_matched`` are null when disclosure control withholds the
    sample flow (``evaluation.publish.disclosure.flow_withheld``)."""

    g: int
    treated: int | None
    treated_matched: int | None
    comparison_matched: int


class Counts(_Open):
    """The sample. ``treated_found``, ``attrition`` and every ``treated_lost`` reason are null when
    disclosure control withholds the sample flow as a block (a number of schools lost at a step is
    below the threshold, and the others would reveal it); ``treated_analysed`` is always given."""

    treated_found: int | None
    treated_analysed: int
    treated_lost: dict[str, int | None]
    attrition: float | None
    partnerships: int
    comparison_pool: int
    comparison_matched: int
    school_years: int
    clusters: int
    cohorts: list[CohortCount]


class BalanceRow(_Open):
    covariate: str
    mean_treated: float | None
    mean_comparison_before: float | None
    mean_comparison_after: float | None
    smd_before: float | None
    smd_after: float | None
    variance_ratio_before: float | None
    variance_ratio_after: float | None


class MatchingInfo(_Open):
    method: str
    covariates: list[str]
    ratio: int
    replace: bool
    caliper: float | None
    exact: list[str]
    balance: list[BalanceRow]
    comparison_pool_rule: list[str]


class TrendRow(_Open):
    group: str
    e: int
    mean: float
    n_schools: int


class EffectSize(_Open):
    sd: float | None
    sd_definition: str
    estimate_sd_units: float | None
    se_sd_units: float | None
    pupil_sd: float | None = None
    pupil_sd_source: str | None = None


class ClusteringRow(_Open):
    clustering: str
    description: str
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    p: float | None
    n_clusters: int
    n_treated_clusters: int


class Clustering(_Open):
    headline: str
    rows: list[ClusteringRow]


class Effects(_Open):
    g: float | None
    g_ci: list[float] | None
    g_se: float | None
    sd: float | None
    sd_source: str
    months: int | None
    months_ci: list[int] | None
    withheld: str | None
    padlocks: int
    padlock_reasons: list[str]
    mdes: float | None
    mdes_source: str


class VerdictCheck(_Open):
    name: str
    failed: bool | None
    kind: str
    detail: str


class Verdict(_Open):
    answer: str
    lead: str
    rule: str
    checks: list[VerdictCheck]


class Headline(_Open):
    estimator: str
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    p: float
    method: str
    df: int | None
    reason: str
    flag: str | None
    alpha: float
    n_treated_clusters: int
    n_clusters: int
    description: str


class Disclosure(_Open):
    """What disclosure control (``evaluation.publish.disclosure``) left out of this file and why:
    the threshold (ONS SRS default 10 schools; lowered only with a reason), every suppressed item
    (``table``, ``key``, ``rule``: primary / secondary, ``reason``, ``what``) and what was knowingly
    left in (``not_suppressed``)."""

    threshold: int
    default_threshold: int
    lowered: bool
    reason: str | None
    unit: str
    rule: str
    suppressed: list[dict]
    not_suppressed: list[dict] = []


class PretrendTest(_Open):
    """A test that the effects before joining are all zero, in the one shape every estimator uses."""

    test: str
    statistic: float
    distribution: Literal["F", "t", "chi2"]
    df: list[float | None]  # [df1, df2] for F (df2 None: infinite), [df] for t and chi2
    p_value: float
    for_verdict: bool  # the one test the verdict reads
    note: str | None = None
    not_for_verdict: str | None = None  # why this test is never used for the answer


class Diagnostics(_Open):
    pretrend: dict[str, PretrendTest | None]
    balance: dict
    bacon: dict | None = None
    placebo_dates: dict | None = None
    honest_did: dict | None = None
    small_cluster_inference: dict | None = None


class Summary(_Open):
    """The summary box in words (``effects.plain_summary``), built with the numbers."""

    question: str
    answer: str
    caveat: str


class SubgroupRow(_Open):
    """One subgroup of a characteristic: its partnership schools' effect (null when ``withheld``)."""

    key: str
    label: str
    n_schools: int | None  # null when disclosure control withholds it
    n_partnerships: int | None
    n_comparison: int | None
    estimate: float | None
    se: float | None
    ci_low: float | None
    ci_high: float | None
    p: float | None
    withheld: str | None
    planted: float | None = None  # synthetic data only: the mean planted effect on the subgroup's school-years


class SubgroupTest(_Open):
    """The test that a characteristic's subgroup effects are equal (``stages.heterogeneity``)."""

    statistic: float
    df: int
    p_value: float
    method: Literal["permutation"]
    unit: Literal["partnership", "block"]
    n_units: int  # partnerships a relabelling can change
    description: str
    permutations: int
    failed: int
    subgroups: list[str]


class HeterogeneityCharacteristic(_Open):
    name: str
    label: str
    n_unknown: int | None
    subgroups: list[SubgroupRow]
    test: SubgroupTest | None
    note: str | None


class Heterogeneity(_Open):
    """Subgroup effects by the characteristics of ``[heterogeneity] by`` (absent when not asked)."""

    estimator: str
    cluster: str
    alpha: float
    permutations: int
    min_schools: int
    method: str
    characteristics: list[HeterogeneityCharacteristic]


class PupilGroup(_Open):
    group: Literal["disadvantaged", "other", "difference"]
    label: str
    n_schools: int | None
    n_comparison: int | None
    n_pupils: int | None
    n_pupils_comparison: int | None
    estimate: float | None
    se: float | None
    ci_low: float | None
    ci_high: float | None
    p: float | None
    g: float | None
    planted: float | None
    note: str | None


class PupilBlock(_Open):
    """A pupil-level study's pupils: the outcome and sample rule in words, pupil counts, the
    pupil-weighted TWFE and the pupil groups (``evaluation.stages.pupils``)."""
    level: Literal["pupil"]
    key_stage: str
    outcome: str
    value_added: bool
    outcome_words: str
    sample: Literal["on_roll_before_joining", "all"]
    sample_words: str
    counts: dict[str, int | None]
    pupil_sd: float | None
    pupil_sd_source: str | None
    pupil_weighted_twfe: dict | None
    groups: list[PupilGroup] | None


class StudyResult(_Open):
    """Everything a study run produced that the book and other tools rely on."""

    schema_version: Literal[5]
    kind: Literal["study"]
    study: StudyInfo
    provenance: Provenance
    outcome: OutcomeInfo
    counts: Counts
    matching: MatchingInfo
    primary_estimator: str
    estimates: dict[str, EstimateEntry]
    estimators_not_computed: dict[str, str] = {}
    event_study: dict[str, list[EventRow]]
    diagnostics: Diagnostics
    trends: list[TrendRow]
    effect_size: EffectSize
    synthetic_truth: dict | None
    power: dict | None = None
    clustering: Clustering
    headline: Headline
    effects: Effects
    verdict: Verdict
    summary: Summary
    disclosure: Disclosure | None = None
    heterogeneity: Heterogeneity | None = None  # only when the study has [heterogeneity]
    pupils: PupilBlock | None = None  # only for a pupil-level study ([outcome] level = "pupil")


class SelfEvaluationSchool(_Open):
    urn: int
    name: str
    phase: str
    joined_on: str
    first_exposed_year: int
    role: Literal["member", "supporting"]
    analysed: bool
    status: Literal["analysed", "supporting", "excluded"]
    reason: str | None


class SelfEvaluationTarget(_Open):
    outcome: str
    kind: Literal["level", "change", "gap_to_national"]
    target: float
    year: int
    baseline_year: int
    status: Literal["met", "on track", "off track", "not assessed"]
    reason: str | None
    series: list[dict]


class SelfEvaluationHistory(_Open):
    data_last_year: int
    data_fingerprint: str | None
    scale: Literal["units", "effect size"] | None
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    schools_analysed: int


class SelfEvaluationResult(_Open):
    """A partnership's schools against families of similar schools (``impact self-evaluate``):
    every school analysed from its own joining year or excluded with a reason, per joining
    cohort and phase, the headline (one phase, or phases combined in effect-size units; None
    with ``headline_withheld`` otherwise), targets and the history of the estimate."""

    schema_version: Literal[5]
    kind: Literal["self_evaluation"]
    name: str
    title: str
    outcomes: dict[str, dict]
    years: list[int]
    schools: list[SelfEvaluationSchool]
    notes: list[str]
    comparison: dict
    cohorts: list[dict]
    phases: list[dict]
    headline: dict | None
    headline_withheld: str | None
    by_school: list[dict]
    supporting: list[dict]
    targets: list[SelfEvaluationTarget]
    history: list[SelfEvaluationHistory]
    method: dict
    provenance: dict
    window: dict


class EstimateResult(_Open):
    """``impact estimate --json``: one estimator on a user's panel."""

    schema_version: Literal[5]
    kind: Literal["estimate"]
    estimator: str
    description: str
    data: str
    overall: dict | None
    group_time: list[dict] | None
    event_time: list[dict] | None
    n_obs: int
    n_units: int
    n_clusters: int | None
    variance: dict
    variance_convention: str
    notes: list[str]


AnyResult = Annotated[Union[StudyResult, SelfEvaluationResult, EstimateResult], Field(discriminator="kind")]


def json_schema() -> str:
    schema = TypeAdapter(AnyResult).json_schema()
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              "title": f"partnership-impact result.json (schema version {RESULT_SCHEMA_VERSION})", **schema}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(json_schema())
