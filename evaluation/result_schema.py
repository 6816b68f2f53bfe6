"""The result.json contract (schema version 2), as a pydantic model.

Version 2 (migration from 1): adds ``headline`` (the primary estimate with the interval the
calibration table supports, the method and why), ``clustering`` (the primary estimate under each
clustering, the headline named), ``effects`` (g in pupil-level SDs or the reason it is withheld, months,
padlocks with reasons, MDES) and ``verdict`` (answer, the rule that produced it and every
design check); pre-trend tests of Callaway-Sant'Anna carry their clustering; estimators'
variance ``cluster`` names the panel's clustering column (``cluster_partnership``,
``cluster_matched_set`` or ``cluster_school``). Version-1 files lack the three blocks: re-run
the study to get them.

``data_schemas/result.schema.json`` is generated from this model
(``python -m evaluation.result_schema > data_schemas/result.schema.json``) and a test
keeps the two in step. The book and other tools read result.json through this contract.
"""

from __future__ import annotations

import json
import sys

from pydantic import BaseModel, ConfigDict


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
    g: int
    treated: int
    treated_matched: int
    comparison_matched: int


class Counts(_Open):
    treated_found: int
    treated_analysed: int
    treated_lost: dict[str, int]
    attrition: float
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


class StudyResult(_Open):
    """Everything a study run produced that the book and other tools rely on."""

    schema_version: int
    study: StudyInfo
    provenance: Provenance
    outcome: OutcomeInfo
    counts: Counts
    matching: MatchingInfo
    primary_estimator: str
    estimates: dict[str, EstimateEntry]
    estimators_not_computed: dict[str, str] = {}
    event_study: dict[str, list[EventRow]]
    diagnostics: dict
    trends: list[TrendRow]
    effect_size: EffectSize
    synthetic_truth: dict | None
    power: dict | None = None
    clustering: Clustering
    headline: Headline
    effects: Effects
    verdict: Verdict


def json_schema() -> str:
    return json.dumps(StudyResult.model_json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(json_schema())
