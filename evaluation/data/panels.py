"""Read what a study needs from the store (the I/O edge of the study pipeline)."""

from __future__ import annotations

import pandas as pd

from evaluation.errors import InputError, problem
from evaluation.stages.cohort import StudyData
from evaluation.data.store import Store
from evaluation.data.pupil_cells import PupilCells, aggregate_pupils
from evaluation.data.pupils import pupils_path
from evaluation.stages.pupils import with_pupil_outcome
from evaluation.study import CONTEXT_COVARIATES, Study, attribute_name


def load_study_data(store: Store, study: Study) -> StudyData:
    """Schools, partnerships, memberships and the school_years columns the study uses,
    with schema dtypes; the synthetic truth table if the store has one."""
    pupil_level = study.outcome.level == "pupil"
    columns = ["urn", "year", *([] if pupil_level else [study.outcome.name]), *CONTEXT_COVARIATES]
    truth = truth_moves = None
    tables = store.tables()
    if "truth_effects" in tables:
        truth = store.read_extra("truth_effects")
        col = f"effect_{study.outcome.name}"  # a pupil outcome's planted effect is its school mean's
        truth = truth[["urn", "year", "partnership_id", col]].copy() if col in truth else None
    if "truth_moves" in tables and study.cohort.exposure == "moved":
        truth_moves = store.read_extra("truth_moves")
        truth_moves = truth_moves[["urn", "year", "partnership_id", f"effect_{study.outcome.name}"]].copy()
    attributes = None
    wanted = [a for a in (attribute_name(b) for b in (study.heterogeneity.by if study.heterogeneity else ()))
              if a is not None]
    if wanted:
        attributes = store.read_table("school_attributes") if "school_attributes" in tables else None
        have = set() if attributes is None else set(attributes["attribute"])
        missing = [a for a in wanted if a not in have]
        if missing:
            raise InputError(problem(
                f"the study splits its schools by {', '.join(repr(a) for a in missing)}, but the store holds no "
                f"such school attribute (it has: {', '.join(sorted(have)) or 'none'}); import a CSV with columns "
                f"urn, attribute, value: impact data import school_attributes FILE",
                column="heterogeneity.by", value=[f"attribute:{a}" for a in missing]))
        attributes = attributes[attributes["attribute"].isin(wanted)].reset_index(drop=True)
    data = StudyData(
        schools=store.read_table("schools"),
        partnerships=store.read_table("partnerships"),
        memberships=store.read_table("memberships"),
        school_years=store.read_table("school_years", columns=columns),
        truth=truth,
        truth_moves=truth_moves,
        school_attributes=attributes,
        fingerprint=store.fingerprint(),
    )
    if pupil_level:
        data = with_pupil_outcome(study, data, load_pupil_cells(store, study, tables))
    return data


def load_pupil_cells(store: Store, study: Study, tables: list[str]) -> PupilCells:
    """The pupils dataset beside the store, aggregated for the study (``evaluation.data.pupil_cells``)."""
    path = pupils_path(store.path)
    if not path.exists() or not any(path.rglob("*.parquet")):
        raise InputError(problem(
            "a pupil-level study needs pupil data, and the store has none: import it with "
            "`impact data import pupils FILE` (CSV or Parquet) or make the synthetic pupils with "
            "`impact data synthesize --pupils`", file=str(path), column="outcome.level", value="pupil"))
    truth = None
    if "truth_pupils" in tables:
        t = store.read_extra("truth_pupils")
        t = t[t["outcome"] == study.outcome.name]
        # the generator splits a school-year's planted effect between the groups in fixed proportions
        # (evaluation.data.synthetic_pupils); where nothing is planted the split does not matter
        planted = t["effect_school"].to_numpy() != 0
        school = t["effect_school"].where(planted, 1.0)
        truth = pd.DataFrame({"urn": t["urn"].to_numpy(), "year": t["year"].to_numpy(),
                              "factor_disadvantaged": (t["effect_disadvantaged"] / school).where(planted, 1.0).to_numpy(),
                              "factor_other": (t["effect_other"] / school).where(planted, 1.0).to_numpy()})
    return aggregate_pupils(path, study.outcome.name, truth=truth)
