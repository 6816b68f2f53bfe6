"""Difference-in-differences by regression: 2x2 DiD, two-way fixed effects and event studies.

All three run :func:`evaluation.estimators.fixed_effects.feols`; their variance
conventions are feols's (default here: clustered by ``cluster``, CR1
G/(G-1) * (N-1)/(N-K) with fixest's nested K, t with G-1 df). Panel estimators
cluster by the unit when ``cluster`` is None, as fixest does for ``| unit + ...``.

Cohort convention (R ``did``'s ``gname``): ``cohort`` holds the first treated
period; 0, missing, or a period after the last observed one means never treated.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from evaluation.errors import InputError, problem, plain
from evaluation.estimators.fixed_effects import FeolsResult, missing_column, feols, numeric_column
from evaluation.estimators.results import Estimate, EstimatorResult

__all__ = ["did_2x2", "twfe_did", "event_study"]


def _require(panel: pd.DataFrame, columns) -> None:
    if not isinstance(panel, pd.DataFrame):
        raise InputError(problem("a pandas DataFrame panel", value=type(panel).__name__))
    for col in columns:
        if col is not None and col not in panel.columns:
            raise missing_column(col, panel)


def _regress(columns: dict[str, np.ndarray], y: str, regressors: list[str], fixed_effects: list[str],
             *, cluster: str | None, weights: str | None, vcov: str | None) -> FeolsResult:
    """feols on arrays with arbitrary names: fit on safe names, report the real ones."""
    names = list(columns)
    safe = {name: f"v{i}" for i, name in enumerate(names)}
    frame = pd.DataFrame({safe[k]: v for k, v in columns.items()}, copy=False)
    rhs = " + ".join(safe[r] for r in regressors) if regressors else "0"
    formula = f"{safe[y]} ~ {rhs}"
    if fixed_effects:
        formula += " | " + " + ".join(safe[f] for f in fixed_effects)
    res = feols(frame, formula, cluster=safe[cluster] if cluster else None,
                weights=safe[weights] if weights else None, vcov=vcov)
    back = {v: k for k, v in safe.items()}
    rename = {t: back.get(t, t) for t in res.params.index}
    res.coefficients = res.coefficients.rename(index=rename)
    res.params = res.params.rename(index=rename)
    res.vcov = res.vcov.rename(index=rename, columns=rename)
    res.notes = [_unsafe(n, back) for n in res.notes]
    if res.variance.cluster:
        from dataclasses import replace

        res.variance = replace(res.variance, cluster=back[res.variance.cluster])
    res.details["formula"] = f"{y} ~ {' + '.join(regressors) or '0'}" + (
        " | " + " + ".join(fixed_effects) if fixed_effects else "")
    res.formula = res.details["formula"]
    res.details["fixed_effects"] = {back.get(k, k): v for k, v in res.details["fixed_effects"].items()}
    res.details["dropped_collinear"] = [back.get(d, d) for d in res.details["dropped_collinear"]]
    return res


def _fit_panel(panel, cols, keep, *, y, unit, time, codes, t, regressors, cluster, weights,
               vcov) -> FeolsResult:
    """y ~ regressors | unit + time on the rows in ``keep``, clustered by ``cluster`` or the unit."""
    cols[unit] = codes
    cols[time] = t
    cluster_col = cluster or unit
    if cluster_col not in cols:
        cols[cluster_col] = panel[cluster_col].to_numpy()
    if not keep.all():
        cols = {k: v[keep] for k, v in cols.items()}
    return _regress(cols, y, regressors, [unit, time], cluster=cluster_col, weights=weights,
                    vcov=vcov)


def _unsafe(text: str, back: dict[str, str]) -> str:
    import re

    return re.sub(r"\bv\d+\b", lambda m: back.get(m.group(0), m.group(0)), text)


def _binary(panel: pd.DataFrame, col: str) -> np.ndarray:
    v = numeric_column(panel, col)
    bad = np.isfinite(v) & (v != 0) & (v != 1)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise InputError(problem("0 or 1", row=pos + 1, column=col, value=panel[col].iloc[pos]),
                         total=int(bad.sum()), summary=f"column {col!r} must be a 0/1 indicator")
    return v


def _base_columns(panel, y, covariates, weights, cluster) -> dict[str, np.ndarray]:
    cols = {y: numeric_column(panel, y)}
    for c in covariates:
        cols[c] = numeric_column(panel, c)
    if weights:
        cols[weights] = numeric_column(panel, weights)
    if cluster and cluster not in cols:
        cols[cluster] = panel[cluster].to_numpy()
    return cols


def did_2x2(panel: pd.DataFrame, *, y: str, treated: str, post: str, covariates=(),
            cluster: str | None = None, weights: str | None = None,
            vcov: str | None = None) -> EstimatorResult:
    """Canonical 2x2 DiD: y ~ treated + post + treated:post (+ covariates), OLS.

    The headline (``overall``) is the coefficient on treated:post. SEs: ``vcov``
    as in feols; default CR1 clustered by ``cluster`` if given, else the usual
    iid OLS SEs (what textbooks print). Pass vcov="hetero" for HC1.
    """
    covariates = list(covariates)
    _require(panel, [y, treated, post, cluster, weights, *covariates])
    inter = f"{treated}:{post}"
    d, p = _binary(panel, treated), _binary(panel, post)
    cols = {y: numeric_column(panel, y), treated: d, post: p, inter: d * p}
    cols.update({k: v for k, v in _base_columns(panel, y, covariates, weights, cluster).items()
                 if k not in cols})
    res = _regress(cols, y, [treated, post, inter, *covariates], [], cluster=cluster,
                   weights=weights, vcov=vcov)
    if inter not in res.coefficients.index:
        raise InputError(problem("treated and untreated observations both before and after; the "
                                 "interaction is collinear with the other terms", column=inter))
    row = res.coefficients.loc[inter]
    res.estimator = "did_2x2"
    res.overall = Estimate(*(float(row[c]) for c in ("estimate", "se", "ci_low", "ci_high", "p_value")))
    res.n_units = int(res.variance.n_clusters or res.n_obs)
    return res


def _cohorts(panel: pd.DataFrame, unit: str, time: str, cohort: str):
    """time (float), cohort (float, NaN = never treated) and unit codes; checks consistency.

    Cohorts after the last observed period (e.g. fixest's 10000) count as never treated.
    """
    t = numeric_column(panel, time)
    g = numeric_column(panel, cohort)
    if np.isnan(t).any():
        pos = int(np.flatnonzero(np.isnan(t))[0])
        raise InputError(problem("a time period (number)", row=pos + 1, column=time,
                                 value=panel[time].iloc[pos]))
    g = np.where((g == 0) | (g > t.max()), np.nan, g)  # 0, missing or never observed treated
    codes, uniq = pd.factorize(panel[unit])
    if (codes < 0).any():
        pos = int(np.flatnonzero(codes < 0)[0])
        raise InputError(problem("a unit identifier", row=pos + 1, column=unit, value=None))
    key = np.where(np.isnan(g), -np.inf, g)
    lo = np.full(len(uniq), np.inf)
    hi = np.full(len(uniq), -np.inf)
    np.minimum.at(lo, codes, key)
    np.maximum.at(hi, codes, key)
    bad = lo != hi
    if bad.any():
        u = int(np.flatnonzero(bad)[0])
        raise InputError(problem(f"one first-treated period per unit (unit {plain(uniq[u])!r} has several)",
                                 column=cohort), total=int(bad.sum()))
    return t, g, codes


def twfe_did(panel: pd.DataFrame, *, y: str, unit: str, time: str, cohort: str, covariates=(),
             cluster: str | None = None, weights: str | None = None,
             vcov: str | None = None) -> EstimatorResult:
    """Static TWFE DiD: y ~ D (+ covariates) | unit + time, D = 1 from the cohort's first period.

    With staggered adoption and heterogeneous effects this coefficient is a
    weighted average with possibly negative weights (Goodman-Bacon 2021); see
    :func:`evaluation.estimators.sun_abraham.sun_abraham` for a robust estimator.
    """
    covariates = list(covariates)
    _require(panel, [y, unit, time, cohort, cluster, weights, *covariates])
    t, g, codes = _cohorts(panel, unit, time, cohort)
    cluster_col = cluster or unit
    D = (~np.isnan(g) & (t >= np.nan_to_num(g, nan=np.inf))).astype(float)
    cols = _base_columns(panel, y, covariates, weights, None)
    cols.update({"D": D, unit: codes, time: t})
    if cluster_col not in cols:
        cols[cluster_col] = panel[cluster_col].to_numpy()
    res = _regress(cols, y, ["D", *covariates], [unit, time], cluster=cluster_col,
                   weights=weights, vcov=vcov)
    if "D" not in res.coefficients.index:
        raise InputError(problem("treatment that varies within units and periods; D is collinear "
                                 "with the unit and time effects", column=cohort))
    row = res.coefficients.loc["D"]
    res.estimator = "twfe_did"
    res.overall = Estimate(*(float(row[c]) for c in ("estimate", "se", "ci_low", "ci_high", "p_value")))
    return res


def event_study(panel: pd.DataFrame, *, y: str, unit: str, time: str, cohort: str,
                leads: int | None = None, lags: int | None = None, ref: int = -1,
                bin_endpoints: bool = False, covariates=(), cluster: str | None = None,
                weights: str | None = None, vcov: str | None = None) -> EstimatorResult:
    """Dynamic TWFE: y ~ sum_{e != ref} 1{time - cohort = e} | unit + time.

    leads: periods before joining (e = -leads .. -1); lags: periods after (e = 0 .. lags);
    None uses every relative period observed. Relative period ``ref`` (default -1)
    is omitted. With ``bin_endpoints`` the end points absorb everything beyond them
    (e <= -leads into -leads, e >= lags into lags); without it, treated-unit
    observations outside the window are dropped (noted) rather than pooled with
    the reference period. Never-treated units have all indicators zero.
    """
    covariates = list(covariates)
    _require(panel, [y, unit, time, cohort, cluster, weights, *covariates])
    t, g, codes = _cohorts(panel, unit, time, cohort)
    treated = ~np.isnan(g)
    if not treated.any():
        raise InputError(problem("at least one treated unit (a non-zero first-treated period)",
                                 column=cohort))
    e = np.where(treated, t - np.nan_to_num(g, nan=0.0), np.nan)
    e_obs = e[treated]
    lo = int(np.min(e_obs)) if leads is None else -int(leads)
    hi = int(np.max(e_obs)) if lags is None else int(lags)
    if leads is not None and leads < 1 or lags is not None and lags < 0:
        raise InputError(problem("leads >= 1 and lags >= 0", value=f"leads={leads}, lags={lags}"))
    if not lo <= ref <= hi:
        raise InputError(problem(f"a reference period inside the window [{lo}, {hi}]", value=ref))
    keep = np.ones(len(t), dtype=bool)
    notes = []
    if bin_endpoints:
        e = np.where(treated, np.clip(e, lo, hi), np.nan)
    else:
        outside = treated & ((e < lo) | (e > hi))
        if outside.any():
            keep = ~outside
            notes.append(f"{int(outside.sum())} treated-unit observation(s) outside the event window "
                         f"[{lo}, {hi}] dropped")
    periods = [k for k in range(lo, hi + 1) if k != ref]
    cols = _base_columns(panel, y, covariates, weights, None)
    terms = []
    for k in periods:
        name = f"e={k}"
        cols[name] = (treated & (e == k)).astype(float)
        terms.append(name)
    res = _fit_panel(panel, cols, keep, y=y, unit=unit, time=time, codes=codes, t=t,
                     regressors=[*terms, *covariates], cluster=cluster, weights=weights, vcov=vcov)
    res.notes = notes + res.notes
    present = [k for k, name in zip(periods, terms) if name in res.coefficients.index]
    tab = res.coefficients.loc[[f"e={k}" for k in present]]
    et = tab.reset_index(drop=True)
    et.insert(0, "e", np.array(present, dtype=int))
    res.event_time = et
    res.estimator = "event_study"
    res.details.update({"ref": ref, "window": [lo, hi], "binned": bool(bin_endpoints)})
    return res

