"""Read what a study needs from the store (the I/O edge of the study pipeline)."""

from __future__ import annotations

from evaluation.stages.cohort import StudyData
from evaluation.data.store import Store
from evaluation.study import CONTEXT_COVARIATES, Study


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
    return StudyData(
        schools=store.read_table("schools"),
        partnerships=store.read_table("partnerships"),
        memberships=store.read_table("memberships"),
        school_years=store.read_table("school_years", columns=columns),
        truth=truth,
        truth_moves=truth_moves,
        fingerprint=store.fingerprint(),
    )
