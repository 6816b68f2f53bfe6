"""What a pupil-level study needs from the pupils dataset, aggregated where the data lie.

A pupil-level study (``[outcome] level = "pupil"``, ``evaluation.stages.pupils``) never holds
the pupil rows: DuckDB reads the Parquet dataset beside the store (``evaluation.data.pupils``)
and returns, for the study's key stage and outcome,

* **value added**: each pupil's result minus the national mean result, that year, of pupils with
  the same prior attainment (KS2 for KS4, KS1 for KS2) in bands of half a point (the logic of
  DfE's Progress 8 and KS2 progress measures: the expected result is the national average of
  pupils with the same starting point). Pupils without prior attainment have no value added (as
  DfE excludes them from progress measures) and are counted;
* **cells** of pupils sharing school, year, first year on the school's roll and disadvantage: the
  number of pupils, the sum of their results and of their value added. The "on roll before
  joining" rule and the disadvantaged groups are applied to these cells
  (``evaluation.stages.pupils``), so one pass over the data serves every refit;
* **the national pupil-level SD** of the outcome by year (EEF effect sizes use it).

Sums use DuckDB's Kahan-compensated ``fsum`` on one thread, so the same files give the same bits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from evaluation.data.pupils import dataset_scan
from evaluation.data.schema import load_schema

#: Width of the prior-attainment bands whose national mean is a pupil's expected result.
PRIOR_BAND = 0.5


@dataclass
class PupilCells:
    """Pupil data of one outcome and key stage, aggregated (see the module docstring).

    cells: urn, year, first_year_on_roll (-1 unknown), disadvantaged (1, 0, -1 unknown), n (pupils with
    the outcome), sum_y, n_va (pupils with prior attainment too), sum_va.
    national: year, n, mean, sd (of the outcome over all pupils nationally), n_no_prior.
    truth: synthetic data only: urn, year, effect_disadvantaged, effect_other (the planted effect per
    pupil of each group in that school-year).
    """

    outcome: str
    key_stage: str
    cells: pd.DataFrame
    national: pd.DataFrame
    truth: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    on_roll_years: int | None = None  # the study's on-roll rule, fixed at load (evaluation.stages.pupils)


def aggregate_pupils(dataset: Path, outcome: str, *, truth: pd.DataFrame | None = None) -> PupilCells:
    """Aggregate the pupils dataset at ``dataset`` (a hive-partitioned Parquet directory) for
    ``outcome`` (a pupils-table outcome column): see the module docstring."""
    key_stage = load_schema("pupils").column(outcome).key_stage
    src = dataset_scan(dataset)
    con = duckdb.connect()
    try:
        con.execute("SET threads = 1")  # one thread: a fixed summation order, the same bits every run
        con.execute(f"""
            CREATE TEMP TABLE p AS
            SELECT CAST(urn AS BIGINT) AS urn, CAST(year AS BIGINT) AS year, CAST("{outcome}" AS DOUBLE) AS y,
                   CAST(prior_attainment AS DOUBLE) AS prior,
                   coalesce(CAST(disadvantaged AS INTEGER), -1) AS dis,
                   coalesce(CAST(first_year_on_roll AS BIGINT), -1) AS fy
            FROM {src}
            WHERE CAST(key_stage AS VARCHAR) = '{key_stage}' AND "{outcome}" IS NOT NULL""")
        con.execute(f"""
            CREATE TEMP TABLE expected AS
            SELECT year, floor(prior / {PRIOR_BAND}) AS band, fsum(y) / count(*) AS expected
            FROM p WHERE prior IS NOT NULL GROUP BY year, band""")
        cells = con.execute(f"""
            SELECT p.urn, p.year, p.fy AS first_year_on_roll, p.dis AS disadvantaged,
                   count(*) AS n, fsum(p.y) AS sum_y,
                   count(e.expected) AS n_va, coalesce(fsum(p.y - e.expected), 0.0) AS sum_va
            FROM p LEFT JOIN expected e ON p.year = e.year AND floor(p.prior / {PRIOR_BAND}) = e.band
            GROUP BY p.urn, p.year, p.fy, p.dis
            ORDER BY p.urn, p.year, p.fy, p.dis""").df()
        national = con.execute("""
            SELECT year, count(*) AS n, fsum(y) / count(*) AS mean, stddev_samp(y) AS sd,
                   count(*) - count(prior) AS n_no_prior
            FROM p GROUP BY year ORDER BY year""").df()
    finally:
        con.close()
    cells = cells.astype({"urn": "int64", "year": "int64", "first_year_on_roll": "int64", "disadvantaged": "int64",
                          "n": "int64", "sum_y": "float64", "n_va": "int64", "sum_va": "float64"})
    national = national.astype({"year": "int64", "n": "int64", "mean": "float64", "sd": "float64",
                                "n_no_prior": "int64"})
    return PupilCells(outcome, key_stage, cells, national, truth)
