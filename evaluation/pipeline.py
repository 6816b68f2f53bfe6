"""Run one study: cohort -> per-cohort matching -> matched panel -> estimators -> diagnostics
-> power -> effects -> the result.json content.

The stages live in ``evaluation.stages``; this module only composes them. Pure functions of the
study definition and the tables (``StudyData``); reading the store and writing ``results/<id>/``
happen at the edges (``evaluation.report``, ``evaluation.cli``). The returned
``StudyRun.result`` is deterministic for the same inputs (schema: ``evaluation.result_schema``).
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from evaluation import __version__
from evaluation.data.schema import load_schema
from evaluation.effects import plain_summary, verdict
from evaluation.errors import InputError, problem
from evaluation.estimators.results import EstimatorResult
from evaluation.executors import single_threaded_blas
from evaluation.numbers import json_value
from evaluation.result_schema import RESULT_SCHEMA_VERSION, StudyResult
from evaluation.spec import build_spec
from evaluation.stages.cohort import Cohort, StudyData, build_cohort, data_fingerprint
from evaluation.stages.describe import planted_cells, synthetic_truth, trends
from evaluation.stages.diagnose import diagnose
from evaluation.stages.effects import effect_size, effects_block
from evaluation.stages.estimate import (_estimate_entry, _event_rows, alternative_clusterings, headline_of,
                                        run_estimators)
from evaluation.stages.heterogeneity import heterogeneity
from evaluation.stages.match import SMD_THRESHOLD, MatchedCohort, match_cohorts, pooled_balance, treated_lost
from evaluation.stages.panel import analysis_panel
from evaluation.stages.power import planned_power
from evaluation.stages.pupils import planted_by_group, pupil_block, value_added_words
from evaluation.study import Study



@dataclass
class StudyRun:
    result: dict
    panel: pd.DataFrame
    matched: list[MatchedCohort]
    cohort: Cohort
    estimators: dict[str, EstimatorResult] = field(default_factory=dict)
    balance: pd.DataFrame | None = None
    schools: pd.DataFrame | None = None  # analysed schools: urn, name, group, easting, northing, la_code, region


def run_study(study: Study, data: StudyData, say: Callable[[str], None] = lambda m: None,
              executor: Executor | None = None) -> StudyRun:
    """The whole study, from tables to the result.json content; ``executor`` runs its independent
    refits (placebo dates) and never changes a number (one BLAS thread: ``evaluation.executors``)."""
    with single_threaded_blas():
        return _run_study(study, data, say, executor)


def _run_study(study: Study, data: StudyData, say: Callable[[str], None], executor: Executor | None) -> StudyRun:
    say("[1/6] building the cohort and comparison pool")
    cohort = build_cohort(study, data)
    say(f"  {len(cohort.treated)} partnership schools in cohorts {cohort.cohorts}; pool of {len(cohort.pool)}")
    say("[2/6] matching comparison schools")
    matched = match_cohorts(study, data, cohort, say)
    bal = pooled_balance(study, matched)
    panel = analysis_panel(study, data, cohort, matched)
    if (panel["cohort"] > 0).sum() == 0:
        raise InputError(problem("no partnership school could be matched: relax the caliper or the covariates",
                                 column="matching.caliper", value=study.matching.caliper))
    say(f"[3/6] estimating on {len(panel)} school-years of {panel['urn'].nunique()} schools")
    spec = build_spec(study)
    not_computed: dict[str, str] = {}
    ests = run_estimators(spec, panel, say, not_computed)
    say("[4/6] diagnostics, sensitivity, placebo dates")
    primary = ests[spec.primary]
    diagnostics = diagnose(study, spec, data, panel, ests, bal, SMD_THRESHOLD, executor)
    say("[5/6] power")
    power = planned_power(study, data)
    say("[6/6] assembling the result")
    treated_found = len(cohort.treated)
    analysed = panel.loc[panel["cohort"] > 0, "urn"].nunique()
    lost = treated_lost(treated_found, matched, int(analysed))
    controls = panel.loc[panel["cohort"] == 0, "urn"].nunique()
    counts = {
        "treated_found": treated_found, "treated_analysed": int(analysed), "treated_lost": lost,
        "attrition": (treated_found - analysed) / treated_found,
        "partnerships": int(cohort.treated.loc[cohort.treated["urn"].isin(panel["urn"]), "partnership_id"].nunique()),
        "comparison_pool": int(len(cohort.pool)), "comparison_matched": int(controls),
        "school_years": int(len(panel)), "clusters": int(panel["cluster"].nunique()),
        "cohorts": [{"g": m.g, "treated": int(m.frame["treated"].sum()),
                     "treated_matched": int(((m.frame["treated"] == 1) & (m.weights > 0)).sum()),
                     "comparison_matched": int(((m.frame["treated"] == 0) & (m.weights > 0)).sum())}
                    for m in matched],
    }
    outcome_spec = load_schema("pupils" if data.pupils is not None else "school_years").column(study.outcome.name)
    result = {
        "schema_version": RESULT_SCHEMA_VERSION, "kind": "study",
        "study": {"id": study.id, "title": study.title, "question": study.question,
                  "definition": study.model_dump(mode="json")},
        "provenance": {"spec_hash": study.spec_hash, "data_fingerprint": data_fingerprint(data),
                       "package_version": __version__, "seed": study.inference.seed,
                       "command": f"impact run studies/{study.id}.toml"},
        "outcome": {"name": study.outcome.name, "description": outcome_spec.description,
                    "unit": outcome_spec.unit, "window": list(study.outcome.window),
                    "data_years": list(data.years)},
        "counts": counts,
        "matching": {"method": study.matching.method, "covariates": list(study.matching.covariates),
                     "ratio": study.matching.ratio, "replace": study.matching.replace,
                     "caliper": study.matching.caliper, "exact": ["phase", *study.matching.exact],
                     "balance": [{"covariate": str(k), **{c: json_value(v) for c, v in row.items()}}
                                 for k, row in bal.iterrows()],
                     "comparison_pool_rule": cohort.notes},
        "primary_estimator": study.estimators.primary,
        "estimates": {name: _estimate_entry(name, res) for name, res in ests.items()},
        "estimators_not_computed": not_computed,
        "clustering": alternative_clusterings(spec, panel, primary),
        "headline": headline_of(spec, panel, primary),
        "event_study": {name: _event_rows(res) for name, res in ests.items() if res.event_time is not None},
        "diagnostics": diagnostics,
        "trends": trends(study, data, matched),
        "effect_size": effect_size(study, data, cohort, primary.overall.estimate if primary.overall else None,
                                   primary.overall.se if primary.overall else None),
        "synthetic_truth": synthetic_truth(study, data, cohort, panel, matched),
        "power": power,
    }
    if data.pupils is not None:
        result["outcome"].update(description=value_added_words(study), level="pupil")
    if study.heterogeneity is not None:  # only when asked: other studies' results keep their bytes
        say("  subgroup effects and the permutation test that they differ")
        result["heterogeneity"] = heterogeneity(study, spec, data, cohort, matched, panel)
    result["effects"] = effects_block(result)
    if data.pupils is not None:  # a pupil-level study: who was measured, and the pupil groups
        say("  pupil counts, the pupil-weighted TWFE and the pupil groups")
        es = result["effect_size"]
        planted = None
        if result["synthetic_truth"] is not None:
            planted = planted_by_group(study, data.pupils, panel,
                                       planted_cells(study, data, cohort, panel, pupil_mix=False))
        result["pupils"] = pupil_block(study, spec, data.pupils, panel, (es["pupil_sd"], es["pupil_sd_source"]),
                                       result["effects"].get("hedges_j"), planted)
    result["verdict"] = verdict(result).to_dict()
    result["summary"] = plain_summary(result)
    StudyResult.model_validate(result)  # the contract holds as the result is built, not only when read
    units = panel.drop_duplicates("urn")[["urn", "cohort"]]
    schools = units.merge(data.schools[["urn", "name", "easting", "northing", "la_code", "region"]], on="urn")
    schools.insert(1, "group", np.where(schools.pop("cohort") > 0, "partnership", "comparison"))
    return StudyRun(result, panel, matched, cohort, ests, bal, schools.sort_values("urn").reset_index(drop=True))
