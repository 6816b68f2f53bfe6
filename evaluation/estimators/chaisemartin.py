"""de Chaisemartin & D'Haultfoeuille (2024, "Difference-in-Differences Estimators of
Intertemporal Treatment Effects", Review of Economics and Statistics; Stata/R
``did_multiplegt_dyn``) event-study estimator for a binary treatment that may switch on
and off (schools that join a partnership and later leave it, or leave and re-join).

Notation (paper, Section 2-3). Periods t = 1..T, groups (units) g. D_{g,1} is g's
baseline (first-period) treatment; F_g the first period with D_{g,t} != D_{g,1} (never:
F_g = T+1); S_g = +1 if that first change is up (a switcher in, "joiner") and -1 if down
(a switcher out, "leaver"); T_g = max over g' with D_{g',1} = D_{g,1} of F_{g'} - 1, the
last period at which some unit with g's baseline has not changed treatment yet.

Effects (paper Section 3; the package's ``Effect_l``; equation numbers below are those of
the arXiv/NBER WP 29873 version as diff-diff cites them, not checked against the journal's
typesetting). For a switcher with F_g - 1 + l <= T_g,

    DID_{g,l} = Y_{g,F_g-1+l} - Y_{g,F_g-1}
                - mean over g' in C_{g,l} of (Y_{g',F_g-1+l} - Y_{g',F_g-1}),
    C_{g,l}   = {g': D_{g',1} = D_{g,1}, F_{g'} > F_g - 1 + l}   (not yet switched),
    DID_l     = (1/N_l) sum_{g: F_g-1+l <= T_g} S_g DID_{g,l}               (eq. 3 and 5).

DID_l estimates the average effect of having been on the actual treatment path for l
periods since the first switch rather than on the status-quo path (treatment kept at
D_{g,1}), with switchers out counted with the sign that makes both kinds of switch "more
treatment" (the paper's S_g convention, the package's default ``switchers = ""``;
``switchers="in"``/``"out"`` keep one kind). A group that switches back later stays in: its
effect is that of the whole path after its first switch (as in the paper and in
did_multiplegt_dyn, whose ``drop_larger_lower`` never binds for a 0/1 treatment).

Placebos (the paper's Web Appendix, Lemma 5 as diff-diff cites it; ``Placebo_l``): the same with the outcome
change Y_{g,F_g-1-l} - Y_{g,F_g-1} (before minus reference), for switchers with
F_g - 1 - l >= 1 and F_g - 1 + l <= T_g, against the controls of effect l
(F_{g'} > F_g - 1 + l) observed at the three periods.

Normalised effects (eq. 15 as diff-diff cites it): DID^n_l = DID_l / delta^D_l with
delta^D_l = (1/N_l) sum_g |sum_{k=0}^{l-1} (D_{g,F_g+k} - D_{g,1})|, the average number of
periods spent switched during the first l periods (l for a switcher that stays).

Average total effect per unit of treatment (paper Section 3.3, Lemma 4, the cost-benefit
ratio delta; the package's ``Av_tot_eff``):

    delta = sum_l N_l DID_l / sum_l sum_{g eligible at l} |D_{g,F_g-1+l} - D_{g,1}|,

i.e. the total effect of the switches over l = 1..L divided by the number of unit-periods
spent switched. It is ``EstimatorResult.overall`` (for L = 1 it is DID_1).

Variance convention (paper Section 4, Theorem 1, and its Web Appendix; did_multiplegt_dyn):
each estimator is (1/N) sum_g U_g with U_g = S_g (Y change) for a switcher minus, for every
unit used as a control, S_{g'}/|C_{g',l}| times its own Y change summed over the switchers
g' it controls for. U_g is centred on its mean within the unit's cohort (D_{g,1}, F_g,
D_{g,F_g}) -- never-switchers form one cohort per baseline -- which makes the plug-in
variance conservative when effects are heterogeneous across cohorts; then
SE = sqrt(sum_c (sum_{g in c} U_g^centred)^2) / N over clusters c (each unit its own
cluster unless ``cluster`` names a column, the package's ``cluster`` option). Normal
critical values, no small-sample factor. SE(DID^n_l) = SE(DID_l) / delta^D_l (the
denominator depends on treatments only and is held fixed, as in the package); the SE of
delta uses the combined influence function sum_l U_{g,l} / (total dose), so the
covariance between horizons is kept.

Outcomes may be missing (NaN) in some cells: a difference that needs a missing outcome is
not formed (a switcher without its reference or outcome period is not counted at that
horizon, a control without them is not in the control mean). Treatment must be known for
every unit in every period of the panel. No covariates, no linear trends.

Weights (``weights``, the package's ``weight`` option with one weight per group; here
matching weights): a per-unit weight w_g, constant within the unit, finite and > 0. Each
eligible switcher's DID_{g,l} enters DID_l with weight w_g, so N_l is the eligible switchers'
total weight, and the control mean in DID_{g,l} is the w-weighted mean of the controls'
outcome changes. The influence function becomes U_g = w_g S_g (Y change) for a switcher minus,
for a control, w_g (its Y change) times the sum of S_{g'} w_{g'} over the switchers g' it
controls for divided by the controls' total weight W(C_{g',l}); the cohort recentring
subtracts w_g m_c with m_c = sum_{g in c} U_g / sum_{g in c} w_g (the weighted cohort mean
of U_g / w_g). The doses of the normalised effects and of delta are weighted the same way
(delta^D_l = sum_g w_g |...| / N_l; total dose sum_l sum_g w_g |D_{g,F_g-1+l} - D_{g,1}|).
With these conventions integer weights give exactly the estimates and SEs of the panel in
which each unit appears w_g times with its copies in one cluster (tests/test_chaisemartin.py),
and weights of 1 give the unweighted numbers to the last bit. ``n_switchers`` stays a count.

Differences from the ``diff-diff`` package's ``ChaisemartinDHaultfoeuille`` (3.13), which
tests/test_chaisemartin.py cross-checks against:
- With ``drop_larger_lower=True`` (its default) diff-diff drops every group whose
  treatment changes more than once (0 -> 1 -> 0). The paper and did_multiplegt_dyn keep them
  (the R/Stata option drops cells once a group has been both above and below its baseline,
  impossible with 0/1). This module follows the paper; with ``drop_larger_lower=False``
  diff-diff's DID_l, placebos and SEs agree with this module's.
- diff-diff's cost-benefit delta weights horizon l by its share of the total dose
  (sum_g |D_{g,F_g-1+l} - D_{g,1}| / total dose) instead of N_l / total dose: the two agree
  unless some switcher has switched back by horizon l. Its delta SE is
  sqrt(sum_l w_l^2 SE_l^2) (horizons treated as independent); here it is the SE of the
  combined influence function.
- diff-diff does not cluster (``cluster`` must be None).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from evaluation.errors import InputError, plain, problem
from evaluation.estimators.bacon import _missing_columns, _numeric
from evaluation.estimators.results import Estimate, EstimatorResult, VarianceConvention

ESTIMATOR_NAME = "de Chaisemartin & D'Haultfoeuille (2024) DID_l"
SWITCHERS = ("", "in", "out")


def _prepare(panel, y, unit, time, treatment, cluster, weights=None):
    """Pivot the long panel to unit x period matrices: outcome (NaN where missing) and
    treatment (0/1, known everywhere), with the unit ids, periods, cluster codes and the
    per-unit weights (ones without ``weights``)."""
    columns = {"outcome": y, "unit": unit, "time": time, "treatment": treatment}
    if cluster is not None:
        columns["cluster"] = cluster
    if weights is not None:
        columns["weights"] = weights
    _missing_columns(panel, columns)
    if not len(panel):
        raise InputError("panel has no rows")
    if panel[unit].isna().any():
        pos = int(np.flatnonzero(panel[unit].isna().to_numpy())[0])
        raise InputError(problem("unit id must be present on every row", row=pos + 1, column=unit, value=None))
    t = _numeric(panel, time, "time")
    d = _numeric(panel, treatment, "treatment")
    bad = ~np.isin(d, (0.0, 1.0))
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        vals = ", ".join(f"{v:g}" for v in np.unique(d[bad])[:5])
        raise InputError(problem(
            f"treatment must be binary (0 = not in the partnership, 1 = in it); "
            f"{int(bad.sum())} row(s) hold other values ({vals})", row=pos + 1, column=treatment,
            value=plain(d[pos])))
    yv = _numeric(panel, y, "outcome", allow_missing=True)
    if np.isinf(yv).any():
        raise InputError(problem("outcome must be finite", column=y, value=yv[np.isinf(yv)][0]))
    if weights is not None:
        wv = _numeric(panel, weights, "weights", allow_missing=True)
        bad = ~(np.isfinite(wv) & (wv > 0))
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise InputError(problem(
                f"weights must be present, finite and greater than 0; {int(bad.sum())} row(s) are not",
                row=pos + 1, column=weights, value=plain(panel[weights].iloc[pos])))
    units, ucode = np.unique(panel[unit].to_numpy(), return_inverse=True)
    times, tcode = np.unique(t, return_inverse=True)
    n, T = len(units), len(times)
    cell = ucode * T + tcode
    counts = np.bincount(cell, minlength=n * T)
    if (counts > 1).any():
        c = int(np.flatnonzero(counts > 1)[0])
        raise InputError(problem(
            f"more than one row for unit {plain(units[c // T])!r} in period {times[c % T]:g}; "
            f"the panel must have one row per unit and period", column=unit, value=plain(units[c // T])))
    if (counts == 0).any():
        c = int(np.flatnonzero(counts == 0)[0])
        raise InputError(problem(
            f"{int((counts == 0).sum())} unit-period row(s) are missing (e.g. unit "
            f"{plain(units[c // T])!r} in period {times[c % T]:g}): the treatment must be known for "
            f"every unit in every period (an outcome may be missing: give the row with an empty "
            f"outcome)", column=time, value=times[c % T]))
    Y = np.empty(n * T)
    Y[cell] = yv
    D = np.empty(n * T, dtype=np.int8)
    D[cell] = d.astype(np.int8)
    if cluster is None:
        ccode, n_clusters = np.arange(n), n
    else:
        cl = panel[cluster]
        if cl.isna().any():
            raise InputError(problem("cluster must be present on every row", column=cluster, value=None))
        first = pd.Series(cl.to_numpy()).groupby(ucode).agg(["first", "nunique"])
        varies = first["nunique"].to_numpy() > 1
        if varies.any():
            u = int(np.flatnonzero(varies)[0])
            raise InputError(problem(
                f"cluster must be constant within a unit; it varies for {int(varies.sum())} unit(s), "
                f"e.g. {plain(units[u])!r}", column=cluster, value=plain(units[u])))
        _, ccode = np.unique(first["first"].to_numpy(), return_inverse=True)
        n_clusters = int(ccode.max()) + 1
    if weights is None:
        wu = np.ones(n)
    else:
        first_w = pd.Series(wv).groupby(ucode).transform("first").to_numpy()  # each unit's first row
        varies = wv != first_w
        wu = np.empty(n)
        wu[ucode] = first_w
        if varies.any():
            pos = int(np.flatnonzero(varies)[0])
            n_bad = len(np.unique(ucode[varies]))
            raise InputError(problem(
                f"weights must be constant within a unit; they vary for {n_bad} unit(s), e.g. "
                f"{plain(units[ucode[pos]])!r}", row=pos + 1, column=weights, value=plain(wv[pos])))
    return Y.reshape(n, T), D.reshape(n, T), units, times, ccode, n_clusters, wu


def _design(D: np.ndarray):
    """Baseline D_{g,1}, first switch F_g (0-based column; T if never), direction S_g, and
    T_g (0-based last column with a not-yet-switched unit of the same baseline)."""
    n, T = D.shape
    base = D[:, 0]
    changed = D != base[:, None]
    ever = changed.any(axis=1)
    F = np.where(ever, changed.argmax(axis=1), T)
    S = np.zeros(n, dtype=np.int8)
    S[ever] = np.where(base[ever] == 0, 1, -1)
    Tg = np.empty(n, dtype=int)
    for b in (0, 1):
        m = base == b
        if m.any():
            Tg[m] = (F[m] - 1).max()
    return base, F, S, Tg


def _horizon(Y, obs, base, F, S, Tg, keep, ell: int, placebo: bool, w):
    """DID_l (or DID^pl_l): per-unit influence-function sums U (N * estimate = U.sum(), with
    N the eligible switchers' total weight) and the eligible switchers. ``keep`` selects the
    switchers counted (switchers in, out, or both); every unit can be a control. ``w``: the
    per-unit weights (ones: the unweighted estimator, the same numbers to the last bit)."""
    n, T = Y.shape
    ref = F - 1
    fwd = F - 1 + ell
    switcher = (S != 0) & keep
    elig = switcher & (fwd <= T - 1) & (fwd <= Tg)
    if placebo:
        other = F - 1 - ell
        elig &= other >= 0
    else:
        other = fwd
    idx = np.flatnonzero(elig)
    ok = obs[idx, ref[idx]] & obs[idx, other[idx]]
    idx = idx[ok]
    U = np.zeros(n)
    n_controls = []
    if len(idx):
        dy_sw = Y[idx, other[idx]] - Y[idx, ref[idx]]
        Ssw = S[idx].astype(float) * w[idx]  # S_g w_g
        combo = base[idx].astype(np.int64) * (T + 1) + F[idx]
        dropped = np.zeros(len(idx), dtype=bool)
        for key in np.unique(combo):
            b, f = divmod(int(key), T + 1)
            r, o, c = f - 1, f - 1 + ell, (f - 1 - ell if placebo else f - 1 + ell)
            ctrl = (base == b) & (F > o) & obs[:, r] & obs[:, c]
            if placebo:
                ctrl &= obs[:, o]
            members = combo == key
            if not ctrl.any():
                dropped |= members
                continue
            n_controls.append(int(ctrl.sum()))
            dy_c = Y[ctrl, c] - Y[ctrl, r]
            # sum of S w over the switchers controlled for / the controls' total weight
            U[ctrl] -= Ssw[members].sum() / w[ctrl].sum() * w[ctrl] * dy_c
        keep_sw = ~dropped
        np.add.at(U, idx[keep_sw], Ssw[keep_sw] * dy_sw[keep_sw])
        idx = idx[keep_sw]
    return U, idx


def _centred(U: np.ndarray, cohort: np.ndarray, w: np.ndarray) -> np.ndarray:
    """U_g - w_g m_c: U recentred on the weighted cohort mean m_c = sum_c U / sum_c w of U_g / w_g
    (with unit weights the plain cohort mean of U)."""
    means = np.bincount(cohort, weights=U) / np.bincount(cohort, weights=w)
    return U - w * means[cohort]


def _se(U: np.ndarray, cohort: np.ndarray, ccode: np.ndarray, n_clusters: int, N: float,
        w: np.ndarray) -> float:
    """Cohort-recentred plug-in SE: sqrt(sum over clusters of (sum of centred U)^2) / N."""
    if N <= 0:
        return float("nan")
    Uc = _centred(U, cohort, w)
    sums = np.bincount(ccode, weights=Uc, minlength=n_clusters)
    return float(np.sqrt(np.sum(sums ** 2)) / N)


def chaisemartin_dhaultfoeuille(panel: pd.DataFrame, *, y: str, unit: str, time: str, treatment: str,
                                effects: int = 1, placebo: int = 0, cluster: str | None = None,
                                weights: str | None = None, switchers: str = "",
                                alpha: float = 0.05) -> EstimatorResult:
    """Event-study effects DID_1..DID_effects, placebos DID^pl_1..DID^pl_placebo, normalised
    effects and the average total effect per unit of treatment for a 0/1 treatment that
    may switch on and off (see the module docstring for the formulas and the variance).
    ``weights`` names a per-unit weight column (constant within a unit, finite, > 0; the
    package's ``weight`` option, see the module docstring); None weights every unit 1.

    Returns an EstimatorResult: ``overall`` = the average total effect delta; ``event_time``
    one row per effect and placebo with the project's event time ``e`` (effect l is
    e = l - 1, the l-th period from the first switch; placebo l is e = -l - 1; the reference
    period F_g - 1 is e = -1, omitted), ``kind`` ("effect"/"placebo"), ``horizon`` (l),
    the estimate, SE, CI, p-value, ``n_switchers`` (N_l) and the normalised effect and SE;
    ``details`` holds the joint test that all placebos are zero, the average total effect's
    horizon weights and the per-direction (joiners/leavers) DID_l.
    """
    if switchers not in SWITCHERS:
        raise InputError(f"switchers must be '' (both), 'in' or 'out'; got {switchers!r}")
    if not (isinstance(effects, (int, np.integer)) and effects >= 1):
        raise InputError(f"effects must be a whole number >= 1; got {effects!r}")
    if not (isinstance(placebo, (int, np.integer)) and placebo >= 0):
        raise InputError(f"placebo must be a whole number >= 0; got {placebo!r}")
    if not 0 < alpha < 1:
        raise InputError(f"alpha must be between 0 and 1; got {alpha!r}")
    Y, D, units, times, ccode, n_clusters, w = _prepare(panel, y, unit, time, treatment, cluster, weights)
    n, T = Y.shape
    obs = ~np.isnan(Y)
    base, F, S, Tg = _design(D)
    if not (S != 0).any():
        raise InputError(problem(
            "no unit changes treatment: every unit keeps its first-period treatment, so there is "
            "no switcher to estimate an effect for", column=treatment))
    keep = {"": S != 0, "in": S == 1, "out": S == -1}[switchers]
    if not keep.any():
        raise InputError(problem(
            f"switchers={switchers!r} but no unit switches {'in (0 -> 1)' if switchers == 'in' else 'out (1 -> 0)'}",
            column=treatment))
    variance = VarianceConvention(
        kind="influence-function (cohort-recentred, de Chaisemartin & D'Haultfoeuille 2024 Theorem 1)",
        small_sample="none (conservative plug-in: influence function centred within cohorts "
                     "(baseline treatment, first-switch period, treatment after it), as did_multiplegt_dyn)",
        cluster=cluster if cluster is not None else unit, n_clusters=n_clusters)
    crit = variance.critical_value(alpha)
    cohort = np.unique(base.astype(np.int64) * (T + 1) * 2 + F * 2 + (S > 0), return_inverse=True)[1]
    Yz = np.where(obs, Y, 0.0)
    cumdose = np.cumsum(D - base[:, None], axis=1)  # sum_{k <= t} (D_{g,k} - D_{g,1})

    rows, notes, Us, doses, Ns = [], [], {}, {}, {}
    by_direction = {}
    for ell in range(1, effects + 1):
        U, idx = _horizon(Yz, obs, base, F, S, Tg, keep, ell, placebo=False, w=w)
        n_sw, N = len(idx), w[idx].sum()  # N_l: the eligible switchers' total weight
        out = F[idx] - 1 + ell
        est = U.sum() / N if n_sw else float("nan")
        se = _se(U, cohort, ccode, n_clusters, N, w)
        dd = float((w[idx] * np.abs(cumdose[idx, out])).sum() / N) if n_sw else float("nan")
        Us[ell], Ns[ell] = U, N
        doses[ell] = float((w[idx] * np.abs(D[idx, out] - base[idx])).sum())
        if n_sw == 0:
            notes.append(f"effect {ell}: no switcher observed {ell} period(s) after its first switch with a "
                         f"not-yet-switched comparison unit; not estimated")
        for direction, sgn in (("joiners", 1), ("leavers", -1)):
            if switchers and sgn != (1 if switchers == "in" else -1):
                continue
            sub = keep & (S == sgn)
            Ud, idd = _horizon(Yz, obs, base, F, S, Tg, sub, ell, placebo=False, w=w)
            nd, Nd = len(idd), w[idd].sum()
            by_direction.setdefault(direction, []).append(
                {"horizon": ell, "estimate": Ud.sum() / Nd if nd else None,
                 "se": _se(Ud, cohort, ccode, n_clusters, Nd, w) if nd else None, "n_switchers": nd})
        rows.append({"e": ell - 1, "kind": "effect", "horizon": ell, "estimate": est, "se": se,
                     "n_switchers": n_sw, "dose": dd,
                     "normalized": est / dd if n_sw and dd > 0 else float("nan"),
                     "normalized_se": se / dd if n_sw and dd > 0 else float("nan")})
    pl_U, pl_N, pl_est = [], [], []
    for ell in range(1, placebo + 1):
        U, idx = _horizon(Yz, obs, base, F, S, Tg, keep, ell, placebo=True, w=w)
        n_sw, N = len(idx), w[idx].sum()
        est = U.sum() / N if n_sw else float("nan")
        se = _se(U, cohort, ccode, n_clusters, N, w)
        if n_sw == 0:
            notes.append(f"placebo {ell}: no switcher observed {ell} period(s) before its reference period "
                         f"with comparison units up to {ell} period(s) after it; not estimated")
        else:
            pl_U.append(U / N)
            pl_N.append(N)
            pl_est.append(est)
        rows.append({"e": -ell - 1, "kind": "placebo", "horizon": ell, "estimate": est, "se": se,
                     "n_switchers": n_sw, "dose": float("nan"), "normalized": float("nan"),
                     "normalized_se": float("nan")})

    table = pd.DataFrame(rows)
    with np.errstate(divide="ignore", invalid="ignore"):
        table["ci_low"] = table["estimate"] - crit * table["se"]
        table["ci_high"] = table["estimate"] + crit * table["se"]
        table["p_value"] = variance.p_value(table["estimate"] / table["se"])
    table = table.sort_values("e", kind="stable").reset_index(drop=True)
    table = table[["e", "kind", "horizon", "estimate", "se", "ci_low", "ci_high", "p_value",
                   "n_switchers", "dose", "normalized", "normalized_se"]]

    if not Ns[1] > 0:
        raise InputError(problem(
            "no switcher has a comparison unit: every switcher's baseline group (units with the same "
            "first-period treatment) has no unit whose treatment is still unchanged in the switcher's "
            "first switched period (e.g. all units switch in the same period, none stays)", column=treatment))

    total_dose = sum(doses.values())
    overall, horizon_weights = None, {}
    if total_dose > 0:
        U_delta = sum(Us[ell] for ell in Us if Ns[ell]) / total_dose
        delta = float(U_delta.sum())
        se_delta = _se(U_delta, cohort, ccode, n_clusters, 1.0, w)
        overall = Estimate.from_se(delta, se_delta, variance, alpha)
        horizon_weights = {ell: Ns[ell] / total_dose for ell in Ns if Ns[ell]}

    joint = None
    if len(pl_U) >= 1:
        P = np.column_stack(pl_U)
        Pc = np.column_stack([_centred(P[:, j], cohort, w) for j in range(P.shape[1])])
        C = np.vstack([np.bincount(ccode, weights=Pc[:, j], minlength=n_clusters)
                       for j in range(P.shape[1])]).T
        V = C.T @ C
        b = np.asarray(pl_est)
        try:
            stat = float(b @ np.linalg.solve(V, b))
            joint = {"statistic": stat, "df": len(b), "p": float(stats.chi2.sf(stat, len(b))),
                     "test": "Wald test that all placebos are zero (chi-squared, the package's p_jointplacebo)"}
        except np.linalg.LinAlgError:
            notes.append("the placebos' covariance matrix is singular; no joint placebo test")

    n_switchers = int((S != 0).sum())
    n_back = int(((S != 0) & (np.abs(np.diff(D, axis=1)).sum(axis=1) > 1)).sum())
    if n_back:
        notes.append(f"{n_back} of {n_switchers} switchers change treatment more than once (e.g. leave and "
                     f"re-join); their effects are those of their whole path after the first switch")
    details = {
        "estimand": "DID_l: effect of l periods on the actual treatment path since the first switch vs the "
                    "status-quo path; switchers out counted with sign -1 (de Chaisemartin & "
                    "D'Haultfoeuille 2024, Section 3)",
        "switchers": switchers or "in and out",
        "weights": weights,
        "n_switchers_in": int(((S == 1) & keep).sum()), "n_switchers_out": int(((S == -1) & keep).sum()),
        "n_never_switchers": int((S == 0).sum()),
        "average_total_effect": None if overall is None else {
            **overall.to_dict(), "weights": horizon_weights, "total_dose": total_dose,
            "definition": "sum_l N_l DID_l / sum_l sum_g |D_{g,F_g-1+l} - D_{g,1}| (Lemma 4)"},
        "placebo_joint_test": joint,
        "by_direction": by_direction,
    }
    return EstimatorResult(estimator=ESTIMATOR_NAME, variance=variance, n_obs=int(n * T), n_units=int(n),
                           overall=overall, event_time=table, notes=notes, details=details)


def absorbing_panel(panel: pd.DataFrame, *, y: str, unit: str, time: str, cohort: str,
                    keep: tuple[str, ...] = (), treatment: str = "treatment") -> pd.DataFrame:
    """A staggered-adoption panel (``cohort`` = first treated period, 0 or missing = never; rows
    possibly only where the outcome is observed) as the unit x period grid this estimator needs:
    every unit in every period of the panel, y = NaN in the added rows, and the absorbing
    treatment D = (cohort > 0) & (time >= cohort) in column ``treatment``. ``keep`` names per-unit
    columns (weights, clusters) carried to the added rows; they and the cohort must be constant
    within a unit."""
    _missing_columns(panel, {"outcome": y, "unit": unit, "time": time, "cohort": cohort,
                             **{f"column {c!r}": c for c in keep}})
    if not len(panel):
        raise InputError("panel has no rows")
    per_unit = [c for c in dict.fromkeys([cohort, *keep]) if c != unit]
    counts = panel.groupby(unit, dropna=False)[per_unit].nunique(dropna=False)
    varies = counts.max(axis=1) > 1
    if varies.any():
        u = varies[varies].index[0]
        col = counts.columns[int(np.argmax(counts.loc[u].to_numpy() > 1))]
        raise InputError(problem(f"{col} must be constant within a unit; it varies for {int(varies.sum())} "
                                 f"unit(s), e.g. {plain(u)!r}", column=col, value=plain(u)))
    g = _numeric(panel, cohort, "cohort (first treated period; 0 or empty = never treated)", allow_missing=True)
    _numeric(panel, time, "time")
    units = panel[[unit, *per_unit]].drop_duplicates(unit)
    times = np.sort(panel[time].unique())
    grid = units.merge(pd.DataFrame({time: times}), how="cross")
    grid = grid.merge(panel[[unit, time, y]], on=[unit, time], how="left")  # duplicates: reported by the estimator
    g = pd.to_numeric(grid[cohort]).to_numpy(dtype=float, na_value=np.nan)
    grid[treatment] = ((g > 0) & (grid[time].to_numpy(dtype=float) >= g)).astype(np.int8)
    return grid.sort_values([unit, time], kind="stable").reset_index(drop=True)


def chaisemartin_from_cohort(panel: pd.DataFrame, *, y: str, unit: str, time: str, cohort: str,
                             covariates=(), cluster: str | None = None, weights: str | None = None,
                             effects: int | None = None, placebo: int | None = None,
                             alpha: float = 0.05) -> EstimatorResult:
    """The estimator on a staggered-adoption panel given by its cohort column (``impact estimate
    --estimator chaisemartin-dhaultfoeuille``): the grid completed by :func:`absorbing_panel`;
    by default every effect and placebo the panel can identify (horizons nothing identifies are
    left out of ``event_time``, with a note)."""
    if covariates:
        raise InputError("de Chaisemartin & D'Haultfoeuille takes no covariates here (drop --covariates)")
    keep = tuple(c for c in (cluster, weights) if c is not None)
    grid = absorbing_panel(panel, y=y, unit=unit, time=time, cohort=cohort, keep=keep, treatment="_treatment")
    T = grid[time].nunique()
    res = chaisemartin_dhaultfoeuille(grid, y=y, unit=unit, time=time, treatment="_treatment",
                                      effects=effects or max(T - 1, 1),
                                      placebo=max(T - 2, 0) if placebo is None else placebo,
                                      cluster=cluster, weights=weights, alpha=alpha)
    et = res.event_time
    res.event_time = et[np.isfinite(et["estimate"].to_numpy(dtype=float))].reset_index(drop=True)
    return res
