"""Coverage of the self-evaluation's intervals, by simulation on a synthetic national panel.

One replication makes a *placebo partnership*: ``n_primary`` primary and ``n_secondary``
secondary schools drawn at random from the schools that were never in any partnership, given
joining dates spread over ``n_years`` distinct years, so their true effect is zero. Optionally
an effect of ``delta_sd`` pupil-level SDs is planted: added to each school's outcome from its
first results after joining on. The self-evaluation (synthetic DiD per joining cohort, placebo
inference) is run on it, and the replication records whether each interval covers the truth.

Used by ``benchmarks/self_evaluation_coverage.py`` (the table) and the slow tests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from evaluation.data.calendar import first_exposed_year
from evaluation.stages.cohort import StudyData

JOIN_YEARS = tuple(range(2013, 2021))  # academic years ending; joining dates are 1 September before


@dataclass(frozen=True)
class Replication:
    seed: int
    truth: float  # in the headline's scale
    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    scale: str
    schools: int
    phases: dict  # phase -> (estimate, ci_low, ci_high, truth in the phase's units)

    @property
    def covers(self) -> bool:
        return self.ci_low <= self.truth <= self.ci_high


def placebo_partnership(data: StudyData, rng: np.random.Generator, n_primary: int = 4, n_secondary: int = 4,
                        n_years: int = 4) -> pd.DataFrame:
    """urn, joined, role: never-member schools with joining dates over ``n_years`` distinct years."""
    never = data.schools[~data.schools["urn"].isin(data.memberships["urn"])]
    picks = []
    for phase, n in (("primary", n_primary), ("secondary", n_secondary)):
        pool = never.loc[never["phase"] == phase, "urn"].to_numpy()
        picks.append(rng.choice(pool, size=n, replace=False))
    urns = np.concatenate(picks)
    years = rng.choice(JOIN_YEARS, size=n_years, replace=False)
    joined_year = np.concatenate([years, rng.choice(years, size=len(urns) - n_years)])
    rng.shuffle(joined_year)
    joined = pd.to_datetime([f"{y - 1}-09-01" for y in joined_year])
    return pd.DataFrame({"urn": urns.astype("int64"), "joined": joined, "role": "member"})


def with_planted_effect(data: StudyData, schools: pd.DataFrame, outcomes: dict[str, tuple[str, float]]) -> StudyData:
    """``data`` with ``delta`` added to each school's outcome from its first results after joining:
    ``outcomes`` maps phase -> (outcome column, delta in the outcome's units)."""
    sy = data.school_years.copy()
    phase = data.schools.set_index("urn")["phase"]
    g = pd.Series(first_exposed_year(schools["joined"]), index=schools["urn"].to_numpy())
    for urn, first in g.items():
        col, delta = outcomes[phase[urn]]
        rows = (sy["urn"] == urn) & (sy["year"] >= first) & sy[col].notna()
        sy.loc[rows, col] = sy.loc[rows, col] + delta
    return dataclasses.replace(data, school_years=sy)


def replicate(data: StudyData, seed: int, delta_sd: float = 0.0, *, family_size: int = 20, reps: int = 100,
              n_primary: int = 4, n_secondary: int = 4, n_years: int = 4) -> Replication:
    """One placebo partnership's self-evaluation (synthetic DiD only, no school-by-school fits)."""
    from evaluation.self_evaluation import DEFAULT_OUTCOME, SelfEvaluationSpec, self_evaluate
    from evaluation.stages.effects import pupil_level_sd

    rng = np.random.default_rng(seed)
    schools = placebo_partnership(data, rng, n_primary, n_secondary, n_years)
    sds = {p: pupil_level_sd(o, data)[0] for p, o in DEFAULT_OUTCOME.items()}
    if delta_sd:
        data = with_planted_effect(data, schools, {p: (o, delta_sd * sds[p]) for p, o in DEFAULT_OUTCOME.items()})
    spec = SelfEvaluationSpec(name=f"placebo_{seed}", schools=schools, family_size=family_size, n_perm=reps,
                              seed=seed, methods=("synthetic_did",), by_school=False)
    r = self_evaluate(spec, data)
    h = r["headline"]
    truth = delta_sd if h["scale"] == "effect size" else delta_sd * sds[h["phase"]]
    phases = {p["phase"]: (p["estimates"]["synthetic_did"]["estimate"], p["estimates"]["synthetic_did"]["ci_low"],
                           p["estimates"]["synthetic_did"]["ci_high"], delta_sd * sds[p["phase"]])
              for p in r["phases"]}
    return Replication(seed=seed, truth=truth, estimate=h["estimate"], ci_low=h["ci_low"], ci_high=h["ci_high"],
                       p_value=h["p_value"], scale=h["scale"], schools=h["schools"], phases=phases)
