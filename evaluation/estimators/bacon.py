"""Goodman-Bacon (2021) decomposition of the two-way fixed-effects DiD coefficient.

With staggered adoption, the TWFE coefficient on a binary, absorbing treatment
``D_it = 1{t >= cohort_i}`` in ``y_it = a_i + b_t + beta D_it + e_it`` on a
balanced panel is a weighted average of every 2x2 DiD between timing groups
(Goodman-Bacon 2021, J. Econometrics 225(2), Theorem 1):

* treated vs never treated (cohort k against the untreated group U),
* earlier vs later treated (k treated before l; l, not yet treated, is the control),
* later vs earlier treated (l against the already-treated k: the "forbidden"
  comparison, biased when effects change over time),
* treated vs always treated (units treated in every period act as controls; only
  when the panel has such units).

The weights are the Theorem 1 weights ``s`` (sample shares and treatment-timing
variances divided by the variance of the two-way demeaned treatment); they sum to
one and ``sum(s * beta_2x2)`` equals the TWFE coefficient exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from evaluation.errors import InputError, problem, plain

TREATED_VS_NEVER = "treated vs never treated"
EARLIER_VS_LATER = "earlier vs later treated"
LATER_VS_EARLIER = "later vs earlier treated"
TREATED_VS_ALWAYS = "treated vs always treated"
COMPARISON_TYPES = (EARLIER_VS_LATER, LATER_VS_EARLIER, TREATED_VS_NEVER, TREATED_VS_ALWAYS)


@dataclass
class BaconResult:
    """The Goodman-Bacon decomposition.

    comparisons: one row per 2x2 comparison with columns ``type``, ``treated``
        (treated cohort), ``control`` (control cohort; 0 = never treated, the panel
        convention), ``estimate`` (the 2x2 DiD) and ``weight`` (Theorem 1 weight).
    twfe: the TWFE coefficient on D computed directly (within transformation).
    weighted_sum: ``sum(weight * estimate)``; equals ``twfe`` up to rounding.
    """

    comparisons: pd.DataFrame
    twfe: float
    weighted_sum: float
    n_obs: int
    n_units: int
    n_periods: int
    notes: list[str] = field(default_factory=list)

    @property
    def discrepancy(self) -> float:
        """|weighted sum of 2x2 estimates - TWFE coefficient|."""
        return abs(self.weighted_sum - self.twfe)

    @property
    def identity_holds(self) -> bool:
        scale = max(1.0, abs(self.twfe), float(np.abs(self.comparisons["estimate"]).max()))
        return bool(self.discrepancy <= 1e-9 * scale)

    def by_type(self) -> pd.DataFrame:
        """Total weight and weight-averaged estimate per comparison type (as bacondecomp's
        ``bacon_summary``)."""
        c = self.comparisons
        rows = []
        for kind in COMPARISON_TYPES:
            sub = c[c["type"] == kind]
            if len(sub) == 0:
                continue
            w = float(sub["weight"].sum())
            avg = float((sub["weight"] * sub["estimate"]).sum() / w) if w > 0 else float("nan")
            rows.append({"type": kind, "weight": w, "avg_estimate": avg})
        return pd.DataFrame(rows, columns=["type", "weight", "avg_estimate"])

    def summary(self) -> str:
        lines = [f"Goodman-Bacon decomposition: {self.n_obs} observations, {self.n_units} units, "
                 f"{self.n_periods} periods",
                 f"TWFE coefficient {self.twfe:.6g}; weighted sum of 2x2 estimates "
                 f"{self.weighted_sum:.6g} (difference {self.discrepancy:.2g})",
                 self.by_type().to_string(index=False, float_format=lambda v: f"{v:.6g}")]
        lines.extend(f"Note: {n}" for n in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"twfe": self.twfe, "weighted_sum": self.weighted_sum,
                "n_obs": self.n_obs, "n_units": self.n_units, "n_periods": self.n_periods,
                "comparisons": [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
                                for r in self.comparisons.to_dict("records")],
                "notes": list(self.notes)}


@dataclass
class StaggeredPanel:
    """Integer-coded arrays of a staggered-adoption panel (shared by the DiD estimators).

    unit_codes/time_codes index ``units``/``times`` (times sorted ascending);
    ``unit_cohort`` is the first treated period per unit, ``inf`` if never treated.
    """

    y: np.ndarray
    unit_codes: np.ndarray
    time_codes: np.ndarray
    units: np.ndarray
    times: np.ndarray
    unit_cohort: np.ndarray

    @property
    def n_units(self) -> int:
        return len(self.units)

    @property
    def n_periods(self) -> int:
        return len(self.times)

    @property
    def treated(self) -> np.ndarray:
        """D_it = 1{t >= cohort_i} per observation."""
        return self.times[self.time_codes] >= self.unit_cohort[self.unit_codes]


def _missing_columns(panel: pd.DataFrame, columns: dict[str, str]) -> None:
    if not isinstance(panel, pd.DataFrame):
        raise InputError("panel: expected a pandas DataFrame in long (tidy) format, "
                         f"got {type(panel).__name__}")
    probs = [problem(f"column named as {role} is not in the panel (columns: "
                     f"{', '.join(map(str, panel.columns))})", column=col)
             for role, col in columns.items() if col not in panel.columns]
    if probs:
        raise InputError(probs, summary="panel is missing required columns")


def _numeric(panel: pd.DataFrame, col: str, role: str, allow_missing: bool = False) -> np.ndarray:
    s = panel[col]
    values = pd.to_numeric(s, errors="coerce")
    bad = values.isna() & s.notna()
    if bad.any():
        first = s[bad].iloc[0]
        raise InputError(problem(f"{role} must be numeric; {int(bad.sum())} non-numeric value(s)",
                                 column=col, value=first))
    arr = values.to_numpy(dtype=float, na_value=np.nan)
    if not allow_missing and np.isnan(arr).any():
        n = int(np.isnan(arr).sum())
        raise InputError(problem(f"{role} must not be missing; {n} missing value(s) "
                                 f"(drop or impute those rows first)", column=col, value=None))
    if np.isinf(arr).any() and not allow_missing:
        raise InputError(problem(f"{role} must be finite", column=col, value=arr[np.isinf(arr)][0]))
    return arr


def staggered_panel(panel: pd.DataFrame, *, y: str, unit: str, time: str,
                    cohort: str) -> StaggeredPanel:
    """Validate and integer-code a staggered-adoption panel.

    Cohort convention (R did's gname): the first treated period; 0 or missing means
    never treated. The cohort must be constant within a unit and (unit, time) unique.
    """
    _missing_columns(panel, {"y": y, "unit": unit, "time": time, "cohort": cohort})
    if len(panel) == 0:
        raise InputError("panel has no rows")
    yv = _numeric(panel, y, "outcome")
    tv = _numeric(panel, time, "time period")
    gv = _numeric(panel, cohort, "cohort (first treated period; 0 or empty = never treated)",
                  allow_missing=True)
    gv = np.where(np.isnan(gv) | (gv == 0), np.inf, gv)
    unit_codes, units = pd.factorize(panel[unit], sort=False)
    if (unit_codes < 0).any():
        raise InputError(problem("unit identifier must not be missing", column=unit, value=None))
    times, time_codes = np.unique(tv, return_inverse=True)
    n_units, n_times = len(units), len(times)

    key = unit_codes.astype(np.int64) * n_times + time_codes
    counts = np.bincount(key, minlength=n_units * n_times)
    if (counts > 1).any():
        k = int(np.flatnonzero(counts > 1)[0])
        raise InputError(problem(
            f"each (unit, time) pair must appear once; unit {plain(units[k // n_times])!r} has "
            f"{int(counts[k])} rows in period {times[k % n_times]:g}", column=time,
            value=times[k % n_times]))

    # cohort constant within unit: compare with the per-unit min and max
    gmin = np.full(n_units, np.inf)
    gmax = np.full(n_units, -np.inf)
    np.minimum.at(gmin, unit_codes, gv)
    np.maximum.at(gmax, unit_codes, gv)
    varying = gmin != gmax
    if varying.any():
        i = int(np.flatnonzero(varying)[0])
        raise InputError(problem(
            f"cohort must be constant within a unit (it is the first treated period); unit "
            f"{plain(units[i])!r} has cohorts {gmin[i]:g} and {gmax[i]:g} ({int(varying.sum())} such "
            f"unit(s)); treatment that switches off is not staggered adoption", column=cohort,
            value=gmax[i]))
    return StaggeredPanel(yv, unit_codes.astype(np.int64), time_codes.astype(np.int64),
                          np.asarray(units), times, gmin)


def _check_treatment_column(panel: pd.DataFrame, sp: StaggeredPanel, treatment: str,
                            cohort: str) -> None:
    """A 0/1 treatment column must be absorbing and equal 1{t >= cohort}."""
    _missing_columns(panel, {"treatment": treatment})
    d = _numeric(panel, treatment, "treatment indicator")
    if not np.isin(d, (0.0, 1.0)).all():
        raise InputError(problem("treatment must be 0/1", column=treatment,
                                 value=d[~np.isin(d, (0.0, 1.0))][0]))
    order = np.lexsort((sp.time_codes, sp.unit_codes))
    du, uu = d[order], sp.unit_codes[order]
    off = (np.diff(du) < 0) & (uu[1:] == uu[:-1])
    if off.any():
        j = int(np.flatnonzero(off)[0])
        raise InputError(problem(
            f"treatment switches off (1 then 0) for unit {plain(sp.units[uu[j]])!r} in period "
            f"{sp.times[sp.time_codes[order][j + 1]]:g}; the decomposition needs absorbing "
            f"(staggered) treatment", column=treatment, value=0))
    mismatch = d.astype(bool) != sp.treated
    if mismatch.any():
        j = int(np.flatnonzero(mismatch)[0])
        raise InputError(problem(
            f"treatment disagrees with {cohort!r} (expected 1 exactly from the cohort period on) "
            f"for unit {plain(sp.units[sp.unit_codes[j]])!r} in period {sp.times[sp.time_codes[j]]:g}",
            column=treatment, value=d[j]))


def bacon_decomposition(panel: pd.DataFrame, *, y: str, unit: str, time: str, cohort: str,
                        treatment: str | None = None) -> BaconResult:
    """Goodman-Bacon (2021) Theorem 1: the TWFE DiD coefficient as a weighted sum of 2x2 DiDs.

    ``treatment`` (optional) names a 0/1 column to check against the cohort: it must
    never switch off and must equal ``1{time >= cohort}``. The panel must be balanced.
    Cohorts at or before the first period are always treated; cohorts after the last
    period are never treated within the panel.
    """
    sp = staggered_panel(panel, y=y, unit=unit, time=time, cohort=cohort)
    if treatment is not None:
        _check_treatment_column(panel, sp, treatment, cohort)
    N, T = sp.n_units, sp.n_periods
    if len(sp.y) != N * T:
        per_unit = np.bincount(sp.unit_codes, minlength=N)
        i = int(np.argmin(per_unit))
        raise InputError(problem(
            f"the decomposition needs a balanced panel (every unit in all {T} periods); unit "
            f"{plain(sp.units[i])!r} has {int(per_unit[i])} period(s) ({int((per_unit < T).sum())} "
            f"unit(s) incomplete)", column=unit, value=sp.units[i]))
    notes = []
    times = sp.times
    g_unit = np.where(sp.unit_cohort > times[-1], np.inf, sp.unit_cohort)
    if np.isfinite(sp.unit_cohort).sum() > np.isfinite(g_unit).sum():
        notes.append("cohorts after the last period are never treated within the panel and "
                     "are counted with the never-treated group")
    # timing groups: treated cohorts sorted, then the never-treated group (inf) last
    groups, gcode = np.unique(g_unit, return_inverse=True)
    n_g = np.bincount(gcode, minlength=len(groups)).astype(float)
    share = n_g / N
    # group x time mean outcomes (balanced: every unit of a group is in every period)
    ybar = np.bincount(gcode[sp.unit_codes] * T + sp.time_codes, weights=sp.y,
                       minlength=len(groups) * T).reshape(len(groups), T) / n_g[:, None]
    start = np.searchsorted(times, groups, side="left")  # number of periods before the cohort
    start = np.minimum(start, T)
    dbar = (T - start) / T  # share of periods treated per group
    if not ((dbar > 0) & (dbar < 1)).any():
        raise InputError(problem(
            "no cohort is first treated inside the panel's period range; the TWFE DiD "
            "coefficient is not identified", column=cohort, value=None))

    # variance of the two-way demeaned treatment (balanced: D~ = D - Dbar_i - Dbar_t + Dbar)
    D = (np.arange(T)[None, :] >= start[:, None]).astype(float)  # groups x time
    dbar_t = share @ D
    Dt = D - dbar[:, None] - dbar_t[None, :] + float(share @ dbar)
    VD = float(share @ (Dt ** 2).mean(axis=1))
    twfe = float((share[:, None] * Dt * ybar).sum() / T / VD)

    cs = np.concatenate([np.zeros((len(groups), 1)), np.cumsum(ybar, axis=1)], axis=1)

    def window_mean(k: int, a: int, b: int) -> float:
        return (cs[k, b] - cs[k, a]) / (b - a)

    label = np.where(np.isinf(groups), 0.0, groups)
    rows: list[tuple] = []
    never = np.flatnonzero(np.isinf(groups))
    timed = np.flatnonzero((dbar > 0) & (dbar < 1))
    always = np.flatnonzero(dbar == 1)
    for k in timed:
        for u in never:  # Theorem 1 weight s_kU: treated k vs untreated U
            est = ((window_mean(k, start[k], T) - window_mean(k, 0, start[k]))
                   - (window_mean(u, start[k], T) - window_mean(u, 0, start[k])))
            nku = share[k] / (share[k] + share[u])
            w = (share[k] + share[u]) ** 2 * nku * (1 - nku) * dbar[k] * (1 - dbar[k])
            rows.append((TREATED_VS_NEVER, label[k], label[u], est, w / VD))
    for k in np.concatenate([always, timed]):
        for l in timed:
            if not start[k] < start[l]:
                continue
            nkl = share[k] / (share[k] + share[l])
            a, m = start[k], start[l]
            if dbar[k] < 1:  # Theorem 1 weight s^k_kl: earlier k vs later l, window before l is treated
                est = ((window_mean(k, a, m) - window_mean(k, 0, a))
                       - (window_mean(l, a, m) - window_mean(l, 0, a)))
                w = (((share[k] + share[l]) * (1 - dbar[l])) ** 2 * nkl * (1 - nkl)
                     * (dbar[k] - dbar[l]) / (1 - dbar[l]) * (1 - dbar[k]) / (1 - dbar[l]))
                rows.append((EARLIER_VS_LATER, label[k], label[l], est, w / VD))
            # Theorem 1 weight s^l_kl: later l vs already-treated k, window from k's treatment on
            est = ((window_mean(l, m, T) - window_mean(l, a, m))
                   - (window_mean(k, m, T) - window_mean(k, a, m)))
            w = (((share[k] + share[l]) * dbar[k]) ** 2 * nkl * (1 - nkl)
                 * dbar[l] / dbar[k] * (dbar[k] - dbar[l]) / dbar[k])
            kind = TREATED_VS_ALWAYS if dbar[k] == 1 else LATER_VS_EARLIER
            rows.append((kind, label[l], label[k], est, w / VD))
    if len(always):
        notes.append(f"{int(n_g[always].sum())} unit(s) are treated in every period and serve "
                     "only as controls ('treated vs always treated')")
    table = pd.DataFrame(rows, columns=["type", "treated", "control", "estimate", "weight"])
    table["type"] = table["type"].astype(object)
    weighted = float((table["weight"] * table["estimate"]).sum())
    return BaconResult(table, twfe, weighted, len(sp.y), N, T, notes)
