"""Stage: the SDs an effect size can use (with their sources) and the effects block of result.json
(g, months, padlocks with reasons), computed once here so the book only formats."""

from __future__ import annotations

from evaluation.data.schema import description_words, load_schema, sentence_case
from evaluation.data.synthetic import OUTCOMES
from evaluation.effects import effect_size as effect_size_of, hedges_j, security_rating
from evaluation.numbers import json_value
from evaluation.stages.cohort import Cohort, StudyData
from evaluation.stages.pupils import national_pupil_sd, value_added_words
from evaluation.study import Study

def effect_size(study: Study, data: StudyData, cohort: Cohort, estimate: float | None, se: float | None) -> dict:
    """The SDs an effect size can use: the between-school SD of the outcome (always, for reference)
    and the pupil-level SD with its source, from the study definition (``[outcome] pupil_sd``) or,
    on synthetic data, the generator's; None when neither gives one (then no months or g)."""
    year = min(cohort.cohorts) - 1
    sy = data.school_years
    phase_urns = data.schools.loc[data.schools["phase"] == study.cohort.phase, "urn"]
    values = sy.loc[(sy["year"] == year) & sy["urn"].isin(phase_urns), study.outcome.name].dropna()
    sd = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    if data.pupils is not None:  # a pupil-level study measures it from the pupils
        lo, hi = study.outcome.window
        pupil_sd, source = national_pupil_sd(data.pupils, range(min(cohort.cohorts) + lo, max(cohort.cohorts) + hi + 1))
    elif study.outcome.pupil_sd is not None:
        pupil_sd, source = float(study.outcome.pupil_sd), (f"national pupil-level SD of {_words(study.outcome.name)} "
                                                           f"({study.outcome.pupil_sd:g}) stated in the study "
                                                           f"definition: {study.outcome.pupil_sd_source}")
    else:
        pupil_sd, source = pupil_level_sd(study.outcome.name, data)
    what = (f"the school-year means of {value_added_words(study)}" if data.pupils is not None
            else _words(study.outcome.name))
    return {"sd": sd, "sd_definition": f"between-school SD of {what} among {study.cohort.phase} "
                                        f"schools in {year} (the year before the first cohort joined), "
                                        f"{len(values)} schools",
            "estimate_sd_units": None if estimate is None or not sd > 0 else estimate / sd,
            "se_sd_units": None if se is None or not sd > 0 else se / sd,
            "pupil_sd": pupil_sd, "pupil_sd_source": source}


def pupil_level_sd(outcome: str, data: StudyData) -> tuple[float | None, str | None]:
    """The national pupil-level SD of an outcome, where the data tell it.

    For the synthetic panel (a store with the generator's truth tables) it is the SD the
    generator assumed; real school-level data carry none (a study states it in
    ``[outcome] pupil_sd`` with its source, or results stay in the outcome's own units)."""
    if data.truth is None:
        return None, None

    sd = next((o.pupil_sd for o in OUTCOMES if o.name == outcome), None)
    if sd is None:
        return None, None
    return float(sd), (f"national pupil-level SD of {_words(outcome)} ({sd:g}) as set in the synthetic data "
                       f"generator (evaluation/data/synthetic.py)")


def _words(outcome: str) -> str:
    """An outcome column in words for the stored texts a reader sees ('average Attainment 8 score per pupil')."""
    try:
        return sentence_case(description_words(load_schema("school_years").column(outcome).description))
    except KeyError:
        return outcome


def effects_block(result: dict) -> dict:
    """g (pupil-level SD) or why it is withheld, months, padlocks with reasons: what the book shows."""
    es = effect_size_of(result)
    sec = security_rating(result)
    j = hedges_j(result)
    placebos = ((result.get("diagnostics") or {}).get("placebo_dates") or {}).get("placebos") or []
    return {"g": es.g, "g_ci": None if es.g is None else [es.ci_low, es.ci_high], "g_se": es.se,
            "sd": es.sd, "sd_source": es.sd_label, "hedges_j": j, "direction": es.direction, "months": es.months,
            "months_ci": None if es.months_ci is None else list(es.months_ci), "withheld": es.withheld,
            "padlocks": sec.padlocks, "padlock_reasons": list(sec.reasons),
            "mdes": json_value(float(sec.mdes)), "mdes_source": sec.mdes_source,
            "placebo_g": [{"k": pl["k"], "g": es.in_sd_units(pl["estimate"], j)} for pl in placebos]}
