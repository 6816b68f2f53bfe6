"""Stage: the planned minimum detectable effect of the study's design (the security rating's power criterion)."""

from __future__ import annotations

from evaluation.diagnostics.power import study_power
from evaluation.stages.cohort import StudyData
from evaluation.study import Study


def planned_power(study: Study, data: StudyData) -> dict:
    """Planned MDES of the design, as result.json stores it."""
    return study_power(study, data).to_dict()
