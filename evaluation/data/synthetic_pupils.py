"""A synthetic pupil panel consistent with the synthetic school panel.

From a ``SyntheticPanel`` (``evaluation.data.synthetic.generate``) this draws one row per pupil for
every school-year with a published KS2 (primary) or KS4 (secondary) result: as many pupils as the
school's published cohort (``ks2_eligible_pupils`` / ``ks4_eligible_pupils``), with the columns of
``data_schemas/pupils.toml`` (pupil_id, year, key_stage, urn, the key stage's outcomes,
prior_attainment, disadvantaged, fsm, eal, sen, month_of_birth, first_year_on_roll).

Model (school-year s, pupil i; ``c`` marks a deviation from the school-year mean, so that every
school mean is fixed by the school panel and the pupils only add within-school variation):

* counts: n_s = the published cohort; exactly round(n_s p_s) pupils are disadvantaged, p_s the
  published ``ks4_disadvantaged_pct`` (KS4) or 1.45 x ``fsm_pct`` (KS2, which publishes no
  disadvantaged share); FSM pupils are a subset of them (round(n_s fsm_pct / 100)); EAL and SEN
  pupils are round(n_s eal_pct / 100) and round(n_s sen_pct / 100), drawn independently;
* prior attainment (KS2 average scaled score for KS4, KS1 average point score for KS2), not
  affected by any partnership::

      prior_i = m_s - delta_D Dc_i - delta_SEN SENc_i + s_s zc_i          (z ~ N(0, 1))
      m_s = mu_prior + mean_j (S0_js - k_j P0_js - mu_j,t) / beta_j

  where S0, P0 are the school's published attainment and progress *less the planted effect*
  (truth table), so S0 - k P0 is the attainment its intake would predict: intakes differ between
  schools and are unaffected by treatment. j runs over the subjects (KS4: Attainment 8 with
  Progress 8, k = 10; KS2: reading and maths scores with their progress, k = 1);
* attainment and progress of subject j::

      y_ij = S_js + beta_j pc_i - gamma_j Dc_i + sigma_js ec_ij + (tau^S_js(D_i) - tau^S_js)
      v_ij = P_js + (-gamma_j Dc_i + sigma_js ec_ij) / k_j + (tau^P_js(D_i) - tau^P_js)

  with pc_i the pupil's prior minus the school-year mean prior, S_js and P_js the *published*
  school values, e ~ N(0, 1) (KS2 reading and maths residuals correlated ``RESIDUAL_CORR``),
  sigma_js^2 = (k_j w^P_j)^2 - gamma_j^2 p_s (1 - p_s) and s_s chosen so that the within-school
  SDs are the outcomes' ``Outcome.within_sd`` (the school panel's sampling noise is
  within_sd / sqrt(n)), hence the national pupil SD is ``Outcome.pupil_sd``. Within a school,
  ``progress = (attainment - beta prior) / k`` up to a school-year constant (the school panel draws
  attainment and progress with separate noise);
* planted effects: in a school-year with planted effect tau_s on an outcome (the sum of its rows
  in ``truth_effects``), disadvantaged pupils gain ``DISADVANTAGED_RATIO`` times what the others
  gain and the pupil-weighted mean is tau_s exactly:
  tau(other) = tau_s / (1 + (r - 1) n_D / n), tau(disadvantaged) = r tau(other). ``truth_pupils``
  records both with the counts. Prior attainment is untouched, so value added identifies them;
* exactness: pupil values are clipped to the outcome's range, put on a 0.01 grid and adjusted by
  0.01 on as few pupils as needed so that each school-year's pupil mean equals the *published*
  school value (rounded as published) to floating-point precision. A school-year whose outcome is
  not published (SUPP, LOWCOV, NP, NE) has that pupil column missing;
* first_year_on_roll: the start of the phase (KS4: year - 4, Year 7; KS2: year - 6, Reception)
  except for late arrivals (``LATE_SHARE``), never before the school opened; month_of_birth is
  uniform over 1-12. Neither affects results.

Output: hive-partitioned Parquet, ``key_stage=KS4/year=2019/part-0.parquet`` (the partition
columns are in the path, not the file), every file with the same columns. Each key stage and
year is drawn from its own generator seeded by (seed, key stage, year), so chunks are
independent, memory stays bounded by one chunk and the same seed gives byte-identical files.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.data.synthetic import FIRST_YEAR, OUTCOMES, YEARS, SyntheticPanel

OUTCOME_OF = {o.name: o for o in OUTCOMES}
DISADVANTAGED_RATIO = 1.5  # a disadvantaged pupil's planted effect / a non-disadvantaged pupil's
GRID = 0.01  # pupil outcomes are published on this grid
RESIDUAL_CORR = 0.5  # KS2 reading and maths residuals
PUPIL_COLUMNS = ["pupil_id", "urn", "ks2_reading_score", "ks2_maths_score", "ks2_reading_progress",
                 "ks2_maths_progress", "ks4_attainment8", "ks4_progress8", "prior_attainment", "disadvantaged",
                 "fsm", "eal", "sen", "month_of_birth", "first_year_on_roll"]
TRUTH_COLUMNS = ["urn", "year", "key_stage", "outcome", "effect_disadvantaged", "effect_other",
                 "n_disadvantaged", "n_other", "effect_school"]


@dataclass(frozen=True)
class Subject:
    """An attainment outcome with its progress measure: progress = (attainment - expected) / scale."""

    score: str
    progress: str
    scale: float  # k: A8 points per Progress 8 point (10), 1 for KS2
    beta: float  # attainment per point of prior attainment, within a school
    gamma: float  # disadvantaged pupils' attainment gap at the same prior attainment


@dataclass(frozen=True)
class Stage:
    key_stage: str
    code: int
    phase: str
    cohort: str
    prior_mean: float
    prior_lo: float
    prior_hi: float
    prior_gap_disadvantaged: float
    prior_gap_sen: float
    prior_within_sd_min: float
    start_offset: int  # years before the assessment the phase starts (first year on roll)
    subjects: tuple[Subject, ...]


# KS4: prior = KS2 average scaled score; within a school 2 Attainment 8 points per scaled point of
# prior attainment; disadvantaged pupils start 3.4 points lower and score 5.5 A8 points less at the
# same prior attainment (within-school gap 2 x 3.4 + 5.5 = 12.3 A8 points; with the schools they
# attend, about 13 nationally, as published for 2019; their Progress 8 about -0.6 below the others).
# KS2: prior = KS1 average point score; disadvantaged pupils start 2 points lower and score 1 scaled
# point less at the same prior (a reading and maths gap of about 3.5 scaled points).
# The pupil-level KS2-KS4 correlation (about 0.75) is implied by the pupil SDs of Attainment 8 (19)
# and Progress 8 (1.25): the within-school variance A8 - 10 P8 is prior attainment's share.
STAGES = (
    Stage("KS2", 2, "primary", "ks2_eligible_pupils", 16.0, 3.0, 27.0, 2.0, 3.0, 1.5, 6,
          (Subject("ks2_reading_score", "ks2_reading_progress", 1.0, 1.2, 1.0),
           Subject("ks2_maths_score", "ks2_maths_progress", 1.0, 1.1, 1.0))),
    Stage("KS4", 4, "secondary", "ks4_eligible_pupils", 103.5, 80.0, 120.0, 3.4, 4.0, 2.0, 4,
          (Subject("ks4_attainment8", "ks4_progress8", 10.0, 2.0, 5.5),)),
)
LATE_SHARE = {"KS2": 0.20, "KS4": 0.12}  # pupils who joined the school after the phase's first year


@dataclass
class PupilPanelSummary:
    path: Path
    rows: int
    files: list[Path]
    truth: pd.DataFrame


# ---------------------------------------------------------------------- group helpers
def _gsum(g: np.ndarray, x: np.ndarray, n_groups: int) -> np.ndarray:
    return np.bincount(g, weights=x, minlength=n_groups)


def _within_rank(rng: np.random.Generator, g: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """A uniformly random order of the pupils within each school-year (0 .. n_s - 1)."""
    order = np.argsort(g + rng.random(len(g)), kind="stable")  # groups in order, random within
    rank = np.empty(len(g), dtype=np.int64)
    rank[order] = np.arange(len(g)) - starts[g[order]]
    return rank


def _fit_mean(values: np.ndarray, g: np.ndarray, starts: np.ndarray, counts: np.ndarray, target: np.ndarray,
              lo: float, hi: float) -> np.ndarray:
    """Clip to [lo, hi], put on the GRID and adjust so each group's mean is ``target`` (where the
    range allows): the clipped excess is spread over the unclipped pupils, then the integer
    shortfall in grid units is made up by +-1 unit on the first pupils that stay in range."""
    G = len(counts)
    v = np.clip(values, lo, hi)
    for _ in range(6):
        resid = target * counts - _gsum(g, v, G)
        inside = ((v > lo) & (v < hi)).astype(float)
        n_in = _gsum(g, inside, G)
        if np.all(np.abs(resid) < 1e-9 * np.maximum(counts, 1)):
            break
        v = np.clip(v + inside * (resid / np.maximum(n_in, 1))[g], lo, hi)
    units = np.round(v / GRID).astype(np.int64)
    lo_u, hi_u = round(lo / GRID), round(hi / GRID)
    want = np.round(target * counts / GRID).astype(np.int64)
    short = want - np.bincount(g, weights=units, minlength=G).round().astype(np.int64)
    sign = np.sign(short)
    ok = np.where(sign[g] > 0, units < hi_u, units > lo_u)
    pos = np.cumsum(ok) - 1
    pos = pos - np.concatenate([[0], np.cumsum(ok)])[starts][g]  # rank among eligible pupils in the group
    bump = ok & (pos < np.abs(short)[g])
    units = units + np.where(bump, sign[g], 0)
    return units * GRID


def _pupil_ids(code: int, year: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Pseudonymous ids: a bijective mix of (key stage, year, index) into 40 bits, as 10 hex digits
    (NumPy bytes ``S10``)."""
    idx = rng.permutation(n).astype(np.uint64)
    x = (np.uint64(code) << np.uint64(36)) | (np.uint64(year - FIRST_YEAR + 1) << np.uint64(28)) | idx
    mask = np.uint64((1 << 40) - 1)
    for mult in (0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D):  # odd multipliers and xor-shifts: bijections mod 2^40
        x = (x * np.uint64(mult)) & mask
        x ^= x >> np.uint64(17)
    shifts = np.arange(36, -1, -4, dtype=np.uint64)
    digits = ((x[:, None] >> shifts[None, :]) & np.uint64(15)).astype(np.uint8)
    ascii_ = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[digits]
    return np.ascontiguousarray(ascii_).view("S10").ravel()


# ---------------------------------------------------------------------- school-year inputs
def _school_inputs(panel: SyntheticPanel) -> pd.DataFrame:
    """Numeric school-year values (NaN where not published) and the summed planted effects."""
    sy = panel.school_years
    num = pd.DataFrame({c: pd.to_numeric(sy[c], errors="coerce") for c in sy.columns})
    num["urn"] = num["urn"].astype(np.int64)
    num["year"] = num["year"].astype(np.int64)
    num = num.sort_values(["urn", "year"], kind="stable").reset_index(drop=True)
    # a few fsm_pct are not published (x): the school's nearest year's value, else the national mean
    num["fsm_pct"] = num.groupby("urn")["fsm_pct"].transform(lambda s: s.ffill().bfill())
    num["fsm_pct"] = num["fsm_pct"].fillna(num["fsm_pct"].mean())
    eff_cols = [c for c in panel.truth_effects.columns if c.startswith("effect_") and c != "effect_latent"]
    eff = panel.truth_effects.groupby(["urn", "year"], sort=True)[eff_cols].sum(min_count=1)
    eff = eff.rename(columns=lambda c: "tau_" + c.removeprefix("effect_"))
    num = num.merge(eff.reset_index(), on=["urn", "year"], how="left")
    tau_cols = [c for c in num.columns if c.startswith("tau_")]
    num["treated"] = num[tau_cols].notna().any(axis=1)  # has a row in truth_effects
    num[tau_cols] = num[tau_cols].fillna(0.0)
    opened = panel.schools.set_index(panel.schools["urn"].astype(np.int64))["opened"]
    first = opened.map(lambda d: int(d[:4]) + 1 if d else 0)  # 0: open before the panel
    num["school_first_year"] = num["urn"].map(first).astype(np.int64)
    return num


def pupil_chunks(panel: SyntheticPanel, seed: int, stages=STAGES, years=YEARS):
    """Yield (key_stage, year, columns dict of NumPy arrays, truth rows) chunk by chunk."""
    inputs = _school_inputs(panel)
    for stage in stages:
        for year in years:
            chunk = _chunk(inputs, stage, int(year), seed)
            if chunk is not None:
                yield (stage.key_stage, int(year), *chunk)


def _chunk(inputs: pd.DataFrame, stage: Stage, year: int, seed: int):
    rng = np.random.default_rng([seed, stage.code, year])
    s = inputs[(inputs["year"] == year) & (inputs[stage.cohort] >= 1)]
    published = np.zeros(len(s), dtype=bool)
    for sub in stage.subjects:
        published |= s[sub.score].notna().to_numpy() | s[sub.progress].notna().to_numpy()
    s = s[published]
    if s.empty:
        return None
    G = len(s)
    n = s[stage.cohort].to_numpy().astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(n)[:-1]])
    N = int(n.sum())
    g = np.repeat(np.arange(G), n)

    # counts of disadvantaged, FSM, EAL and SEN pupils from the published percentages
    fsm_pct = s["fsm_pct"].to_numpy()
    if stage.key_stage == "KS4":
        dis_pct = s["ks4_disadvantaged_pct"].to_numpy()
        dis_pct = np.where(np.isnan(dis_pct), 1.45 * fsm_pct, dis_pct)
    else:
        dis_pct = 1.45 * fsm_pct
    n_dis = np.clip(np.round(n * np.clip(dis_pct, 0, 100) / 100), 0, n).astype(np.int64)
    n_fsm = np.minimum(np.round(n * fsm_pct / 100).astype(np.int64), n_dis)
    eal_pct = np.nan_to_num(s["eal_pct"].to_numpy(), nan=15.0)
    sen_pct = np.nan_to_num(s["sen_pct"].to_numpy(), nan=13.0)
    n_eal = np.clip(np.round(n * eal_pct / 100), 0, n).astype(np.int64)
    n_sen = np.clip(np.round(n * sen_pct / 100), 0, n).astype(np.int64)
    rank = _within_rank(rng, g, starts)
    dis = rank < n_dis[g]
    fsm = rank < n_fsm[g]
    eal = _within_rank(rng, g, starts) < n_eal[g]
    sen = _within_rank(rng, g, starts) < n_sen[g]
    p = n_dis / n
    pq = p * (1 - p)
    r_sen = n_sen / n
    dis_c = dis - p[g]
    sen_c = sen - r_sen[g]

    # prior attainment: intake level from the untreated published results, within-school spread
    level = np.zeros(G)
    used = np.zeros(G)
    for sub in stage.subjects:
        o_s, o_p = OUTCOME_OF[sub.score], OUTCOME_OF[sub.progress]
        s0 = s[sub.score].to_numpy() - s["tau_" + sub.score].to_numpy()
        p0 = np.nan_to_num(s[sub.progress].to_numpy() - s["tau_" + sub.progress].to_numpy(), nan=o_p.means[year])
        expected = s0 - sub.scale * p0
        ok = ~np.isnan(expected)
        level += np.where(ok, (expected - o_s.means[year]) / sub.beta, 0.0)
        used += ok
    m = stage.prior_mean + np.where(used > 0, level / np.maximum(used, 1), 0.0)
    first = stage.subjects[0]
    o_s, o_p = OUTCOME_OF[first.score], OUTCOME_OF[first.progress]
    w_s2, w_p2 = o_s.within_sd**2, (first.scale * o_p.within_sd) ** 2
    var_prior = (w_s2 - w_p2 - 2 * first.beta * first.gamma * stage.prior_gap_disadvantaged * pq) / first.beta**2
    s_z = np.sqrt(np.maximum(var_prior - stage.prior_gap_disadvantaged**2 * pq - stage.prior_gap_sen**2
                             * r_sen * (1 - r_sen), stage.prior_within_sd_min**2))
    z = rng.normal(size=N)
    z -= (_gsum(g, z, G) / n)[g]
    prior = m[g] - stage.prior_gap_disadvantaged * dis_c - stage.prior_gap_sen * sen_c + s_z[g] * z
    prior = np.round(np.clip(prior, stage.prior_lo, stage.prior_hi), 1)
    prior_c = prior - (_gsum(g, prior, G) / n)[g]

    cols: dict[str, np.ndarray] = {}
    truth_parts = []
    treated = s["treated"].to_numpy()
    e_prev = None
    for j, sub in enumerate(stage.subjects):
        o_s, o_p = OUTCOME_OF[sub.score], OUTCOME_OF[sub.progress]
        e = rng.normal(size=N)
        if e_prev is not None:
            e = RESIDUAL_CORR * e_prev + np.sqrt(1 - RESIDUAL_CORR**2) * e
        e_prev = e
        e = e - (_gsum(g, e, G) / n)[g]
        sigma = np.sqrt(np.maximum((sub.scale * o_p.within_sd) ** 2 - sub.gamma**2 * pq,
                                   0.25 * (sub.scale * o_p.within_sd) ** 2))
        resid = -sub.gamma * dis_c + sigma[g] * e
        for name, dev, lo, hi in ((sub.score, sub.beta * prior_c + resid, o_s.lo, o_s.hi),
                                  (sub.progress, resid / sub.scale, -15.0 if stage.key_stage == "KS4" else -40.0,
                                   15.0 if stage.key_stage == "KS4" else 40.0)):
            tau = s["tau_" + name].to_numpy()
            t_other = tau / (1 + (DISADVANTAGED_RATIO - 1) * p)
            t_dis = DISADVANTAGED_RATIO * t_other
            dev = dev + np.where(dis, t_dis[g], t_other[g]) - tau[g]
            target = s[name].to_numpy()
            vals = _fit_mean(np.nan_to_num(target)[g] + dev, g, starts, n, np.nan_to_num(target), lo, hi)
            cols[name] = np.where(np.isnan(target)[g], np.nan, vals)
            truth_parts.append(pd.DataFrame({
                "urn": s["urn"].to_numpy()[treated], "year": year, "key_stage": stage.key_stage, "outcome": name,
                "effect_disadvantaged": t_dis[treated], "effect_other": t_other[treated],
                "n_disadvantaged": n_dis[treated], "n_other": (n - n_dis)[treated], "effect_school": tau[treated]}))

    # first year on the school's roll: the phase's first year, late arrivals later
    start = year - stage.start_offset
    late = rng.random(N) < LATE_SHARE[stage.key_stage]
    arrival = start + np.where(late, rng.integers(1, stage.start_offset + 1, N), 0)
    arrival = np.maximum(arrival, s["school_first_year"].to_numpy()[g])
    month = rng.integers(1, 13, N)
    ids = _pupil_ids(stage.code, year, N, rng)
    out = {"pupil_id": ids, "urn": s["urn"].to_numpy()[g]}
    for c in PUPIL_COLUMNS[2:8]:
        out[c] = cols.get(c, np.full(N, np.nan))
    out |= {"prior_attainment": prior, "disadvantaged": dis, "fsm": fsm, "eal": eal, "sen": sen,
            "month_of_birth": month.astype(np.int64), "first_year_on_roll": arrival.astype(np.int64)}
    return out, pd.concat(truth_parts, ignore_index=True)


# ---------------------------------------------------------------------- frames and files
def _arrow_table(cols: dict):
    import pyarrow as pa

    arrays = []
    for c in PUPIL_COLUMNS:
        v = cols[c]
        if c == "pupil_id":
            arrays.append(pa.array(v, type=pa.binary(10)).cast(pa.string()))
        elif v.dtype == bool:
            arrays.append(pa.array(v, type=pa.bool_()))
        elif v.dtype.kind == "f":
            arrays.append(pa.array(v, type=pa.float64(), from_pandas=True))  # NaN -> null
        else:
            arrays.append(pa.array(v, type=pa.int64()))
    return pa.Table.from_arrays(arrays, names=PUPIL_COLUMNS)


def pupils_frame(panel: SyntheticPanel, seed: int, stages=STAGES, years=YEARS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The whole pupil panel in memory (small panels and tests): pupils with year and key_stage
    columns, and the truth."""
    frames, truths = [], []
    for ks, year, cols, truth in pupil_chunks(panel, seed, stages, years):
        f = pd.DataFrame(cols | {"pupil_id": cols["pupil_id"].astype(str).astype(object)})
        f.insert(1, "year", year)
        f.insert(2, "key_stage", ks)
        frames.append(f)
        truths.append(truth)
    return pd.concat(frames, ignore_index=True), _truth_frame(truths)


def _truth_frame(parts: list[pd.DataFrame]) -> pd.DataFrame:
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=TRUTH_COLUMNS)
    t = pd.concat(parts, ignore_index=True)[TRUTH_COLUMNS]
    return t.sort_values(["urn", "year", "key_stage", "outcome"], kind="stable").reset_index(drop=True)


def write_pupils(panel: SyntheticPanel, out_dir: str | Path, seed: int, progress=None) -> PupilPanelSummary:
    """Write the pupil panel as hive-partitioned Parquet under ``out_dir`` (replacing it), one chunk
    (key stage x year) at a time; returns the row count, the files and the truth table."""
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    rows, files, truths = 0, [], []
    for ks, year, cols, truth in pupil_chunks(panel, seed):
        part = tmp / f"key_stage={ks}" / f"year={year}"
        part.mkdir(parents=True, exist_ok=True)
        path = part / "part-0.parquet"
        pq.write_table(_arrow_table(cols), path, compression="zstd", row_group_size=1 << 20)
        rows += len(cols["pupil_id"])
        files.append(out_dir / path.relative_to(tmp))
        truths.append(truth)
        if progress:
            progress(f"pupils {ks} {year}: {len(cols['pupil_id']):,} rows")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return PupilPanelSummary(out_dir, rows, files, _truth_frame(truths))
