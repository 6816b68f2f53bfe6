"""Baselines and targets: "are we on track for what we set out to do?"

A target names an outcome, a kind, a value and a target year (:class:`partnership_file.TargetEntry`).
The rule, applied to unrounded numbers (``TARGET_RULE`` is printed in the chapter):

* the partnership's value in a year is the mean over its schools of the outcome's phase that
  have results in the baseline year (the same schools throughout, so a school joining later
  does not move the baseline), weighted by the number of pupils at the key stage that year;
  England's is the same mean over every school of the phase;
* the measure is that value (``level``), its change since the baseline year (``change``), or
  the value minus England's (``gap_to_national``); higher is better for every outcome;
* **met**: the latest measure is at or above the target;
* **off track**: not met and the target year has passed, or the latest measure is below the
  straight line from the baseline measure (in the baseline year) to the target (in the target
  year), read at the latest year;
* **on track**: not met, the target year is still to come, and the latest measure is on or
  above that line;
* beside it, what the comparison families predict without the partnership: the baseline value
  plus the change their similar schools made over the same years (each school's family mean
  change, pupil-weighted across the schools).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TARGET_RULE = ("Met: the latest result is at or above the target. On track: not met yet, the target year is still "
               "to come, and the latest result is on or above a straight line from the baseline to the target. Off "
               "track: below that line, or the target year has passed without meeting the target. The partnership's "
               "result is the pupil-weighted mean over its schools that had results in the baseline year.")
KIND_WORDS = {"level": "result", "change": "change since the baseline year",
              "gap_to_national": "gap to the national average"}
PHASE_OF_STAGE = {"ks2": "primary", "ks4": "secondary", "ks1": "primary"}


def weight_column(outcome: str, columns) -> str | None:
    """The key stage's cohort-size column for pupil-weighted means (``ks2_eligible_pupils`` for a KS2
    outcome), else ``pupils``, else None (unweighted)."""
    stage = outcome.split("_", 1)[0]
    for candidate in (f"{stage}_eligible_pupils", "pupils"):
        if candidate in columns:
            return candidate
    return None


def _weighted(frame: pd.DataFrame, y: str, w: str | None) -> float | None:
    f = frame[frame[y].notna()]
    if f.empty:
        return None
    if w is None or f[w].isna().any() or f[w].sum() <= 0:
        return float(f[y].mean())
    return float(np.average(f[y], weights=f[w]))


def evaluate_targets(spec, data, schools: pd.DataFrame, outcomes: dict, families_of: dict[int, list[int]],
                     default_baseline: int | None) -> list[dict]:
    """Each target's baseline, latest, change, the comparison's prediction and its status (module rule)."""
    from evaluation.data.schema import load_schema

    out = []
    sy = data.school_years.merge(data.schools[["urn", "phase"]], on="urn")
    for t in spec.targets:
        base_year = t.baseline_year or default_baseline
        col = load_schema("school_years").column(t.outcome)
        phase = next((p for p, o in outcomes.items() if o.name == t.outcome),
                     PHASE_OF_STAGE.get(t.outcome.split("_", 1)[0]))
        rec = {"outcome": t.outcome, "description": col.description, "unit": col.unit, "kind": t.kind,
               "kind_words": KIND_WORDS[t.kind], "target": float(t.value), "year": int(t.year),
               "baseline_year": base_year, "phase": phase, "status": "not assessed", "reason": None,
               "rule": TARGET_RULE, "series": []}
        w = weight_column(t.outcome, sy.columns)
        ph = sy[(sy["phase"] == phase) & sy[t.outcome].notna()]
        published = sorted(int(y) for y in ph["year"].unique())
        own = ph[ph["urn"].isin(schools.loc[schools["phase"] == phase, "urn"])]
        base_schools = set(own.loc[own["year"] == base_year, "urn"].astype(int))
        if base_year not in published:
            rec["reason"] = f"no {t.outcome} results were published for the baseline year {base_year}"
        elif not base_schools:
            rec["reason"] = f"none of the partnership's {phase} schools has {t.outcome} results in {base_year}"
        if rec["reason"]:
            out.append(rec)
            continue
        years = [y for y in published if y >= base_year]
        latest = years[-1]
        mine = own[own["urn"].isin(base_schools)]
        value = {y: _weighted(mine[mine["year"] == y], t.outcome, w) for y in years}
        national = {y: _weighted(ph[ph["year"] == y], t.outcome, w) for y in years}
        predicted_value = _predicted(sy, t.outcome, w, mine, base_year, years, families_of, value[base_year])

        def measure(y, v):
            if v is None:
                return None
            if t.kind == "change":
                return v - value[base_year]
            if t.kind == "gap_to_national":
                return v - national[y]
            return v

        base_measure = measure(base_year, value[base_year])
        slope = (t.value - base_measure) / (t.year - base_year)
        for y in years:
            rec["series"].append({"year": y, "partnership": value[y], "national": national[y],
                                  "measure": measure(y, value[y]),
                                  "predicted_measure": measure(y, predicted_value.get(y)),
                                  "trajectory": base_measure + slope * (y - base_year)})
        last = rec["series"][-1]
        met = last["measure"] is not None and last["measure"] >= t.value
        if met:
            status, why = "met", f"the latest result ({latest}) is at or above the target"
        elif latest >= t.year:
            status, why = "off track", f"the target year {t.year} has passed without meeting the target"
        elif last["measure"] is not None and last["measure"] >= last["trajectory"]:
            status, why = "on track", (f"not met yet, and {latest}'s result is on or above the straight line from "
                                       f"the baseline to the target in {t.year}")
        else:
            status, why = "off track", (f"{latest}'s result is below the straight line from the baseline to the "
                                        f"target in {t.year}")
        rec.update(status=status, reason=why, schools=len(base_schools), latest_year=latest,
                   baseline=base_measure, baseline_value=value[base_year], latest=last["measure"],
                   latest_value=value[latest], change=None if last["measure"] is None else last["measure"] - base_measure,
                   predicted=last["predicted_measure"],
                   predicted_change=None if last["predicted_measure"] is None else last["predicted_measure"] - base_measure,
                   families=sum(1 for u in base_schools if families_of.get(u)))
        out.append(rec)
    return out


def _predicted(sy, outcome, w, mine, base_year, years, families_of, base_value) -> dict[int, float]:
    """The baseline value plus the pupil-weighted mean over the schools of their families' mean change."""
    with_family = [u for u in mine.loc[mine["year"] == base_year, "urn"].astype(int) if families_of.get(u)]
    if not with_family or base_value is None:
        return {}
    needed = {c for u in with_family for c in families_of[u]}  # the families only, not the whole table
    wide = sy[sy["urn"].isin(needed)].pivot_table(index="urn", columns="year", values=outcome)
    weights = mine[mine["year"] == base_year].set_index("urn")[w] if w else None
    out = {}
    for y in years:
        changes, ws = [], []
        for u in with_family:
            fam = wide.reindex(families_of[u])
            if y not in fam.columns or base_year not in fam.columns:
                continue
            d = (fam[y] - fam[base_year]).dropna()
            if d.empty:
                continue
            changes.append(float(d.mean()))
            ws.append(float(weights.get(u, 1.0)) if weights is not None and pd.notna(weights.get(u)) else 1.0)
        if changes:
            out[y] = base_value + float(np.average(changes, weights=ws))
    return out
