"""Sun & Abraham (2021, J. Econometrics) interaction-weighted event-study estimator.

Implemented as fixest's ``sunab()``: one regression of y on cohort x relative-period
indicators (reference relative periods omitted; control cohorts have none) with
unit and time effects, then aggregation of the cohort-specific coefficients to
each relative period, weighting cohorts by their number of observations in that
cell (sum of weights when weighted), as fixest's ``aggregate()``; the overall ATT
aggregates every post-treatment cell the same way. SEs of aggregates by the
delta method, w' V w, with V the regression's (default CR1, clustered by unit)
variance.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from evaluation.errors import InputError, problem
from evaluation.estimators.results import Estimate, EstimatorResult, estimate_table
from evaluation.estimators.twfe import _base_columns, _cohorts, _fit_panel, _require

__all__ = ["sun_abraham"]


def sun_abraham(panel: pd.DataFrame, *, y: str, unit: str, time: str, cohort: str, covariates=(),
                cluster: str | None = None, weights: str | None = None, ref_periods=(-1,),
                control: str = "never", vcov: str | None = None) -> EstimatorResult:
    """Sun & Abraham interaction-weighted estimator (fixest ``sunab`` numbers).

    cohort: first treated period; 0, missing, or a period after the last observed
    one (e.g. fixest's 10000) mean never treated. Units treated from the first
    observed period on have no pre-period and are dropped (noted).
    control: "never" uses never-treated units as the control cohort; "last" uses
    the last-treated cohort (and any never-treated units), dropping periods from
    that cohort's first treated period on.
    Returns event_time (e, estimate, se, ci_low, ci_high, p_value; reference
    periods omitted), group_time (cohort g, period t cell coefficients), the
    aggregated post-treatment ATT as ``overall``, and covariates in ``coefficients``.
    """
    covariates = list(covariates)
    _require(panel, [y, unit, time, cohort, cluster, weights, *covariates])
    if control not in ("never", "last"):
        raise InputError(problem("control 'never' or 'last'", value=control))
    ref_periods = sorted({int(r) for r in np.atleast_1d(ref_periods)})
    t, g, codes = _cohorts(panel, unit, time, cohort)
    notes: list[str] = []
    t_min, t_max = t.min(), t.max()
    g = np.where(g > t_max, np.nan, g)  # never observed treated
    keep = np.ones(len(t), dtype=bool)
    always = ~np.isnan(g) & (g <= t_min)
    if always.any():
        keep &= ~always
        notes.append(f"{int(always.sum())} observation(s) of units treated in every observed period "
                     "dropped (no pre-treatment period)")
    control_g = np.isnan(g)
    if control == "last":
        treated_g = np.unique(g[keep & ~np.isnan(g)])
        if treated_g.size < 2:
            raise InputError(problem("at least two treated cohorts for control='last'", column=cohort))
        g_last = treated_g[-1]
        late = t >= g_last
        keep &= ~late
        control_g = control_g | (g == g_last)
        notes.append(f"cohort {g_last:g} is the control; {int(late.sum())} observation(s) from period "
                     f"{g_last:g} on dropped")
    elif not (control_g & keep).any():
        raise InputError(problem("never-treated units (cohort 0 or missing) for control='never'; "
                                 "use control='last' to compare with the last-treated cohort",
                                 column=cohort))
    treated = ~control_g & keep
    e = np.where(treated, t - np.nan_to_num(g), np.nan)

    # cohort x relative-period cells (vectorised: one code per cell)
    cell_g = g[treated]
    cell_e = e[treated]
    cells = pd.DataFrame({"g": cell_g, "e": cell_e}).drop_duplicates().sort_values(["g", "e"])
    cells = cells[~cells.e.isin(ref_periods)].reset_index(drop=True)
    if cells.empty:
        raise InputError(problem("treated cohorts observed outside the reference period(s)",
                                 column=cohort))
    cols = _base_columns(panel, y, covariates, weights, None)
    cell_id = pd.MultiIndex.from_frame(cells).get_indexer(
        pd.MultiIndex.from_arrays([np.nan_to_num(g), np.nan_to_num(e)]))
    cell_id = np.where(treated, cell_id, -1)
    names = [f"g={gg:g}:e={ee:g}" for gg, ee in zip(cells.g, cells.e)]
    for j, name in enumerate(names):
        cols[name] = (cell_id == j).astype(float)
    res = _fit_panel(panel, cols, keep, y=y, unit=unit, time=time, codes=codes, t=t,
                     regressors=[*names, *covariates], cluster=cluster, weights=weights, vcov=vcov)

    # aggregation weights: observations (or weight sums) per cell in the estimation sample
    present = [j for j, name in enumerate(names) if name in res.params.index]
    sample_ids = cell_id[keep][res.sample]
    w_obs = None if weights is None else cols[weights][keep][res.sample]
    n_cell = np.bincount(sample_ids[sample_ids >= 0], minlength=len(names),
                         weights=None if w_obs is None else w_obs[sample_ids >= 0])
    beta = res.params.loc[[names[j] for j in present]].to_numpy()
    V = res.vcov.loc[[names[j] for j in present], [names[j] for j in present]].to_numpy()
    ce = cells.e.to_numpy()[present]
    cg = cells.g.to_numpy()[present]
    cn = n_cell[present]
    periods = np.unique(ce)
    W = (ce[None, :] == periods[:, None]) * cn[None, :]
    W = W / W.sum(axis=1, keepdims=True)
    est = W @ beta
    se = np.sqrt(np.einsum("ij,jk,ik->i", W, V, W))
    et = estimate_table(list(range(len(periods))), est, se, res.variance).reset_index(drop=True)
    et.insert(0, "e", periods.astype(int))
    post = ce >= 0
    if post.any():
        w_att = np.where(post, cn, 0.0)
        w_att = w_att / w_att.sum()
        att = float(w_att @ beta)
        att_se = float(np.sqrt(w_att @ V @ w_att))
        overall = Estimate.from_se(att, att_se, res.variance)
    else:
        overall = None
        notes.append("no post-treatment cells: the ATT is not identified")
    gt = estimate_table(list(range(len(present))), beta, np.sqrt(np.diag(V)),
                        res.variance).reset_index(drop=True)
    gt.insert(0, "t", cg + ce)
    gt.insert(0, "g", cg)

    coef = res.coefficients.loc[[c for c in covariates if c in res.coefficients.index]]
    n_units = int(np.unique(codes[keep][res.sample]).size)
    details = dict(res.details)
    details.update({"control": control, "ref_periods": ref_periods,
                    "cell_weights": {names[j]: float(n_cell[j]) for j in present},
                    "aggregation": "cohort shares of observations per relative period (fixest "
                                   "aggregate()); ATT over all post-treatment cells"})
    return EstimatorResult(estimator="sun_abraham", variance=res.variance, n_obs=res.n_obs,
                           n_units=n_units, overall=overall, coefficients=coef, group_time=gt,
                           event_time=et, notes=notes + res.notes, details=details)
