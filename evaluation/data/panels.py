"""Read what a study needs from the store (the I/O edge of the study pipeline)."""

from __future__ import annotations

from evaluation.errors import InputError, problem
from evaluation.stages.cohort import StudyData
from evaluation.data.store import Store
from evaluation.study import CONTEXT_COVARIATES, Study, attribute_name


def load_study_data(store: Store, study: Study) -> StudyData:
    """Schools, partnerships, memberships and the school_years columns the study uses,
    with schema dtypes; the synthetic truth table if the store has one."""
    columns = ["urn", "year", study.outcome.name, *CONTEXT_COVARIATES]
    truth = truth_moves = None
    tables = store.tables()
    if "truth_effects" in tables:
        truth = store.read_extra("truth_effects")
        truth = truth[["urn", "year", "partnership_id", f"effect_{study.outcome.name}"]].copy()
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
    return StudyData(
        schools=store.read_table("schools"),
        partnerships=store.read_table("partnerships"),
        memberships=store.read_table("memberships"),
        school_years=store.read_table("school_years", columns=columns),
        truth=truth,
        truth_moves=truth_moves,
        school_attributes=attributes,
        fingerprint=store.fingerprint(),
    )
