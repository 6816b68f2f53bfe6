"""Matching partnership schools to comparison schools, with balance diagnostics.

Pure functions of a DataFrame with one row per unit (school). The conventions are
those of the R package MatchIt (Ho, Imai, King and Stuart 2011; version 4), so a
match made here can be checked line by line against ``matchit()`` and
``summary.matchit()``:

* :func:`match` -- greedy nearest-neighbour matching (MatchIt ``method =
  "nearest"``) on a logistic-regression propensity score (``distance = "glm"``)
  or on the Mahalanobis distance (``distance = "mahalanobis"``), k:1
  (``ratio``), with or without replacement, ``m.order``, a caliper in standard
  deviations of the propensity score (``std.caliper = TRUE``), exact matching
  (``exact``) and common-support discarding (``discard``).
* :func:`family_of_schools` -- for each treated unit the ``k`` most similar
  control units by Euclidean distance on z-scores (or by Mahalanobis distance),
  in the manner of the EEF's "families" of 50 similar schools. Families overlap,
  so this is k:1 matching with replacement.
* :func:`balance` -- MatchIt's balance statistics (means, standardised mean
  difference, variance ratio, eCDF mean/max, pair distance) for any weights.

Both matchers return a :class:`MatchResult` holding the pairs, MatchIt's matching
weights, the subclass (pair) of every unit, the distance, balance tables before
and after matching, the sample-size table and common-support flags;
``to_dict()`` gives it as JSON-ready data.

Later analyses match one joining cohort of schools at a time, on pre-joining
outcome level and trend and context, exactly on phase::

    match(cohort_df, "partner", ["ks2_2019", "ks2_trend", "fsm_pct", "region"],
          id="urn", exact="phase", caliper=0.2)

Bad input raises :class:`evaluation.errors.InputError` naming the column, the
row and the value. Rows are reported as the 1-based position in ``data`` unless
``row_numbers`` gives the number a person sees in the file (the CLI passes CSV
line numbers), and ``source`` names the file.
"""

from __future__ import annotations

import difflib
import math
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from evaluation.errors import InputError, Problem, problem

DISTANCES = ("logit", "mahalanobis")
DISCARD_OPTIONS = ("none", "both", "control", "treated")
M_ORDERS = ("largest", "smallest", "data")
FAMILY_METRICS = ("zscore", "mahalanobis")

_EPS = math.sqrt(np.finfo(float).eps)  # R's sqrt(.Machine$double.eps)
_BLOCK = 1024  # treated units per block when computing distance matrices

BALANCE_COLUMNS = ["Means Treated", "Means Control", "Std. Mean Diff.", "Var. Ratio",
                   "eCDF Mean", "eCDF Max", "Std. Pair Dist."]
COUNT_ROWS = ["All (ESS)", "All", "Matched (ESS)", "Matched", "Unmatched", "Discarded"]


# --------------------------------------------------------------------------- input


@dataclass(frozen=True)
class Design:
    """Covariates turned into numbers the way R's ``model.matrix`` does.

    ``X`` has one column per numeric covariate and one 0/1 column per level of each
    categorical covariate, named ``<column><level>`` (MatchIt's ``summary()`` shows
    every level, e.g. ``raceblack``, ``racehispan``, ``racewhite``). ``model_X``
    drops the first level of each factor (R's default treatment contrasts; the
    first level in sorted order is the reference), which is what ``glm()`` fits.
    ``factors`` maps each categorical covariate to its levels.
    """

    columns: list[str]
    X: np.ndarray
    model_columns: list[str]
    model_X: np.ndarray
    factors: dict[str, list[str]]
    dist_X: np.ndarray  # MatchIt's get.covs.matrix.for.dist(): all levels / sqrt(2)


@dataclass(frozen=True)
class _Prepared:
    treat: np.ndarray  # int8 0/1
    ids: np.ndarray  # object array of unit identifiers
    design: Design
    balance_design: Design  # covariates, then exact-matching columns not among them (MatchIt's X)
    strata: np.ndarray | None  # int codes of the exact-matching cells
    strata_labels: list[str] | None


def _suggest(name: str, columns: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, [str(c) for c in columns], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _row_numbers(data: pd.DataFrame, row_numbers) -> np.ndarray:
    if row_numbers is None:
        return np.arange(1, len(data) + 1)
    rows = np.asarray(row_numbers)
    if len(rows) != len(data):
        raise ValueError("row_numbers must have one entry per row of data")
    return rows


def _check_columns(data: pd.DataFrame, names: Sequence[str], role: str, source) -> list[Problem]:
    problems = []
    for name in names:
        if name not in data.columns:
            available = ", ".join(map(str, data.columns[:30]))
            problems.append(problem(
                f"no {role} column {name!r}{_suggest(name, data.columns)} (columns: {available})",
                file=source, column=name))
    return problems


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)


def _parse_treatment(s: pd.Series, rows, source, column) -> tuple[np.ndarray, list[Problem]]:
    problems: list[Problem] = []
    missing = s.isna().to_numpy()
    for r in rows[missing]:
        problems.append(problem("missing treatment indicator; expected 1 (treated) or 0 (control)",
                                file=source, row=int(r), column=column, value=None))
    if pd.api.types.is_bool_dtype(s):
        values = s.fillna(False).to_numpy(dtype=bool).astype(np.int8)
        return values, problems
    if _is_numeric(s):
        num = s.to_numpy(dtype=float, na_value=np.nan)
    else:
        text = s.astype("string").str.strip().str.lower()
        mapping = {"0": 0.0, "1": 1.0, "true": 1.0, "false": 0.0, "0.0": 0.0, "1.0": 1.0}
        num = text.map(mapping).to_numpy(dtype=float, na_value=np.nan)
    bad = ~missing & ~np.isin(num, (0.0, 1.0))
    raw = s.to_numpy()
    for r, v in zip(rows[bad], raw[bad]):
        problems.append(problem("treatment must be binary: 1 (treated) or 0 (control)",
                                file=source, row=int(r), column=column, value=v))
    out = np.where(np.isin(num, (0.0, 1.0)), num, 0).astype(np.int8)
    return out, problems


def _numeric_looking(s: pd.Series) -> tuple[bool, np.ndarray]:
    """A text column whose values are nearly all numbers is a numeric column with typos."""
    present = s.notna().to_numpy()
    parsed = pd.to_numeric(s.where(s.notna()), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    ok = present & ~np.isnan(parsed)
    n = present.sum()
    looks = n > 0 and ok.sum() >= 0.8 * n and ok.sum() < n
    return looks, present & np.isnan(parsed)


def _levels(s: pd.Series) -> list:
    if isinstance(s.dtype, pd.CategoricalDtype):
        present = set(s.dropna().unique())
        return [c for c in s.cat.categories if c in present]
    return sorted(s.dropna().unique(), key=lambda v: (str(type(v)), v))


def design_matrix(data: pd.DataFrame, covariates: Sequence[str]) -> Design:
    """Expand ``covariates`` like R's ``model.matrix`` (see :class:`Design`).

    Numeric and boolean columns enter as numbers; any other column is a factor
    whose levels are its sorted distinct values (R sorts character levels in the
    locale's collation; here Python's code-point order, identical for plain
    lower-case labels) or, for a pandas Categorical, its category order.
    Missing values must have been rejected before (see :func:`match`).
    """
    cols, blocks, mcols, mblocks, dblocks, factors = [], [], [], [], [], {}
    n = len(data)
    for name in covariates:
        s = data[name]
        if _is_numeric(s):
            v = s.to_numpy(dtype=float, na_value=np.nan).reshape(n, 1)
            cols.append(str(name)); blocks.append(v)
            mcols.append(str(name)); mblocks.append(v)
            dblocks.append(v)
            continue
        levels = _levels(s)
        factors[str(name)] = [str(lv) for lv in levels]
        values = s.to_numpy()
        dummies = np.column_stack([(values == lv) for lv in levels]).astype(float) if levels \
            else np.zeros((n, 0))
        names = [f"{name}{lv}" for lv in levels]
        cols.extend(names); blocks.append(dummies)
        mcols.extend(names[1:]); mblocks.append(dummies[:, 1:])
        dblocks.append(dummies / math.sqrt(2.0))
    empty = np.zeros((n, 0))
    return Design(cols, np.hstack(blocks) if blocks else empty, mcols,
                  np.hstack(mblocks) if mblocks else empty, factors,
                  np.hstack(dblocks) if dblocks else empty)


def _prepare(data, treatment, covariates, id, exact, source, row_numbers) -> _Prepared:
    if not isinstance(data, pd.DataFrame):
        raise TypeError("data must be a pandas DataFrame")
    if isinstance(covariates, str):
        covariates = [covariates]
    covariates = list(covariates)
    exact_cols = [] if exact is None else ([exact] if isinstance(exact, str) else list(exact))
    problems: list[Problem] = []
    if not covariates:
        problems.append(problem("at least one covariate is needed to match on", file=source))
    problems += _check_columns(data, [treatment], "treatment", source)
    problems += _check_columns(data, covariates, "covariate", source)
    problems += _check_columns(data, exact_cols, "exact-matching", source)
    if id is not None:
        problems += _check_columns(data, [id], "id", source)
    for name in covariates + exact_cols:
        if name == treatment:
            problems.append(problem("the treatment column cannot also be a covariate or exact-matching column",
                                    file=source, column=name))
    dup = sorted({c for c in covariates if covariates.count(c) > 1})
    for c in dup:
        problems.append(problem("covariate listed more than once", file=source, column=c))
    if problems:
        raise InputError(problems, summary="cannot match: columns")
    if len(data) == 0:
        raise InputError(problem("no rows to match", file=source))

    rows = _row_numbers(data, row_numbers)
    treat, problems = _parse_treatment(data[treatment], rows, source, treatment)

    for name in covariates + [c for c in exact_cols if c not in covariates]:
        s = data[name]
        missing = s.isna().to_numpy()
        role = "covariate" if name in covariates else "exact-matching column"
        for r in rows[missing]:
            problems.append(problem(f"missing value in {role}; matching needs a value for every unit "
                                    "(fill it in or drop the row)",
                                    file=source, row=int(r), column=name, value=None))
        if name not in covariates:
            continue
        if _is_numeric(s) and not pd.api.types.is_bool_dtype(s):
            v = s.to_numpy(dtype=float, na_value=np.nan)
            for r, x in zip(rows[np.isinf(v)], v[np.isinf(v)]):
                problems.append(problem("expected a finite number", file=source, row=int(r),
                                        column=name, value=x))
        elif not _is_numeric(s):
            looks, bad = _numeric_looking(s)
            if looks:
                raw = s.to_numpy()
                for r, x in zip(rows[bad], raw[bad]):
                    problems.append(problem("expected a number (the rest of this column is numeric)",
                                            file=source, row=int(r), column=name, value=x))
    ids = None
    if id is not None:
        idcol = data[id]
        for r in rows[idcol.isna().to_numpy()]:
            problems.append(problem("missing unit id", file=source, row=int(r), column=id, value=None))
        dupl = idcol.duplicated(keep="first").to_numpy() & idcol.notna().to_numpy()
        raw = idcol.to_numpy()
        for r, v in zip(rows[dupl], raw[dupl]):
            problems.append(problem("duplicate unit id; each unit must appear once", file=source,
                                    row=int(r), column=id, value=v))
        ids = np.asarray(raw, dtype=object)
    if problems:
        raise InputError(problems, summary=f"cannot match: {len(problems)} problem(s) in the data")

    if ids is None:
        ids = np.asarray(data.index, dtype=object) if row_numbers is None else np.asarray(rows, dtype=object)
    n1 = int(treat.sum())
    if n1 == 0:
        raise InputError(problem("no treated units (value 1); there is nothing to match",
                                 file=source, column=treatment))
    if n1 == len(treat):
        raise InputError(problem("no control units (value 0); there is nothing to match to",
                                 file=source, column=treatment))
    design = design_matrix(data, covariates)
    extra = [c for c in exact_cols if c not in covariates]
    balance_design = design_matrix(data, covariates + extra) if extra else design
    strata = labels = None
    if exact_cols:
        keys = data[exact_cols].astype("string")
        codes = keys.groupby(exact_cols, sort=True, dropna=False).ngroup().to_numpy()
        first = pd.Series(np.arange(len(codes))).groupby(codes).first()
        labels = [", ".join(f"{c}={keys.iloc[i][c]}" for c in exact_cols) for i in first.to_numpy()]
        strata = codes
    return _Prepared(treat, ids, design, balance_design, strata, labels)


# --------------------------------------------------------------------------- distances


def propensity_score(X: np.ndarray, treat: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Logistic-regression propensity score, MatchIt's default ``distance = "glm"``.

    Fits ``treat ~ X`` with an intercept by iteratively reweighted least squares
    (statsmodels GLM, Binomial family, logit link; R's ``glm()`` algorithm) and
    returns the fitted probabilities and any warnings (e.g. perfect separation,
    for which R's ``glm()`` also only warns). Collinear columns are handled with a
    pseudo-inverse; the fitted values do not depend on how they are resolved.

    Units with identical covariates get bit-identical scores. The fitted values
    are not taken from ``exog @ params``: OpenBLAS picks its matrix-vector kernel
    by CPU at run time, and some kernels (e.g. Haswell, used on Zen too) round
    the rows at the end of the array differently from the rest, so two identical
    rows could differ in the last bit. That splits a tie, which changes the eCDF
    statistics (evaluated at each distinct score) and the order of matching. The
    linear predictor is instead computed once per distinct covariate pattern,
    column by column as R's reference BLAS does, and mapped through R's
    ``binomial()$linkinv`` (``exp(eta) / (1 + exp(eta))``, eta clamped to
    [-30, 30]).
    """
    import statsmodels.api as sm

    exog = np.column_stack([np.ones(len(treat)), X])
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = sm.GLM(treat.astype(float), exog, family=sm.families.Binomial()).fit()
    for w in caught:
        notes.append(f"propensity score model: {w.message}")
    ps = _logit_fitted(exog, np.asarray(fit.params, dtype=float))
    if not fit.converged:
        notes.append("propensity score model: IRLS did not converge")
    return ps, notes


def _logit_fitted(exog: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Fitted probabilities of a logit model, one computation per distinct row of
    ``exog`` so identical rows get identical values whatever the BLAS (see
    :func:`propensity_score`)."""
    patterns, inverse = np.unique(exog, axis=0, return_inverse=True)
    eta = np.zeros(len(patterns))
    for j in range(patterns.shape[1]):  # elementwise, no BLAS: R's reference dgemv order
        eta = eta + patterns[:, j] * beta[j]
    # R's binomial()$linkinv (C_logit_linkinv): THRESH = 30, MTHRESH = -30
    eps = np.finfo(float).eps
    tmp = np.where(eta < -30, eps, np.where(eta > 30, 1 / eps, np.exp(np.clip(eta, -30, 30))))
    return (tmp / (1 + tmp))[np.asarray(inverse).reshape(-1)]


def _generalized_inverse(sigma: np.ndarray, tol: float = 1e-8) -> np.ndarray:
    """MatchIt's ``generalized_inverse()`` (a port of MASS::ginv)."""
    u, d, vt = np.linalg.svd(sigma)
    pos = d > max(tol * d[0], 0) if d.size else np.zeros(0, bool)
    return (vt[pos].T / d[pos]) @ u[:, pos].T


def mahalanobis_coordinates(dist_X: np.ndarray, treat: np.ndarray,
                            discarded: np.ndarray | None = None) -> np.ndarray:
    """Coordinates whose Euclidean distances are MatchIt's Mahalanobis distances.

    Follows MatchIt's ``transform_covariates(method = "mahalanobis")``: factor
    dummies for every level divided by sqrt(2); columns without variance dropped;
    columns standardised (R's ``scale()``); the scaling matrix is the *pooled
    within-group* covariance (each group centred on its own mean, divided by
    n - 2, as in optmatch and Rubin 1980) of the non-discarded units; it is
    inverted with ``solve()`` if its determinant exceeds 1e-8 and with a
    generalized inverse otherwise (the full set of factor dummies is singular).
    """
    X = np.asarray(dist_X, dtype=float)
    n = X.shape[0]
    discarded = np.zeros(n, bool) if discarded is None else discarded
    keep = (X.max(axis=0) - X.min(axis=0)) >= _EPS if X.shape[1] else np.zeros(0, bool)
    if not keep.any():
        return X[:, :1] if X.shape[1] else np.zeros((n, 1))
    X = X[:, keep]
    X = (X - X.mean(axis=0)) / X.std(axis=0, ddof=1)
    Xk, tk = X[~discarded], treat[~discarded]
    centred = Xk.copy()
    for g in (0, 1):
        sel = tk == g
        if sel.any():
            centred[sel] -= centred[sel].mean(axis=0)
    groups = len(np.unique(tk))
    var = centred.T @ centred / (len(Xk) - groups)
    inv = None
    if np.linalg.det(var) > 1e-8:
        try:
            inv = np.linalg.inv(var)
        except np.linalg.LinAlgError:
            inv = None
    if inv is None:
        inv = _generalized_inverse(var)
    inv = (inv + inv.T) / 2
    lam, vec = np.linalg.eigh(inv)
    lam = np.clip(lam, 0, None)
    return X @ (vec * np.sqrt(lam))


def zscore_coordinates(X: np.ndarray) -> np.ndarray:
    """Each column as z-scores over all units (SD with n - 1); constant columns dropped."""
    X = np.asarray(X, dtype=float)
    sd = X.std(axis=0, ddof=1) if len(X) > 1 else np.zeros(X.shape[1])
    keep = sd >= _EPS
    if not keep.any():
        return np.zeros((len(X), 1))
    return (X[:, keep] - X[:, keep].mean(axis=0)) / sd[keep]


def _sq_dists(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between rows of A and rows of B, summed from the
    coordinate differences (not |a|^2 + |b|^2 - 2ab), so units at equal distances
    tie exactly and ties can be broken by data order."""
    d = np.zeros((len(A), len(B)))
    for j in range(A.shape[1]):
        diff = A[:, j, None] - B[None, :, j]
        d += diff * diff
    return d


def _k_nearest(A: np.ndarray, B: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For each row of A, the k nearest rows of B: (indices, distances), nearest first.

    Exact ties are broken by the lower row index of B (data order). Computed in
    blocks so a pool of tens of thousands of units fits in memory.
    """
    k = min(k, len(B))
    idx = np.empty((len(A), k), dtype=np.int64)
    dist = np.empty((len(A), k))
    cols = np.arange(len(B))
    block = max(1, min(_BLOCK, 4_000_000 // max(len(B), 1)))
    for start in range(0, len(A), block):
        d = _sq_dists(A[start:start + block], B)
        if k < len(B):
            part = np.argpartition(d, k - 1, axis=1)[:, :k]
            kth = np.take_along_axis(d, part, 1).max(axis=1)
            for i in range(len(d)):  # take every tie at the boundary, then order
                cand = np.flatnonzero(d[i] <= kth[i])
                o = np.lexsort((cand, d[i, cand]))[:k]
                idx[start + i] = cand[o]
                dist[start + i] = d[i, cand[o]]
        else:
            o = np.lexsort((np.broadcast_to(cols, d.shape), d), axis=1)
            idx[start:start + len(d)] = o
            dist[start:start + len(d)] = np.take_along_axis(d, o, 1)
    return idx, np.sqrt(dist)


# --------------------------------------------------------------------------- matching cores


def _find_left(parent: list, i: int) -> int:
    root = i
    while root >= 0 and parent[root] != root:
        root = parent[root]
    while i >= 0 and i != root:
        parent[i], i = root, parent[i]
    return root


def _find_right(parent: list, i: int, n: int) -> int:
    root = i
    while root < n and parent[root] != root:
        root = parent[root]
    while i < n and i != root:
        parent[i], i = root, parent[i]
    return root


def _nn_on_score(distance, treat, order, ratio, discarded, replace, caliper,
                 cal_covs=None, cal_widths=None) -> np.ndarray:
    """Greedy nearest-neighbour matching on a scalar distance: MatchIt's ``nn_matchC_vec``.

    Units are sorted by distance (stable: ties keep data order). In round r = 1..ratio
    each treated unit, in ``order``, takes the closest available control to its left
    or right in that ordering; if both are equally close the one to the left (lower
    score) wins. A control beyond the caliper on one side ends the search on that side.
    Without replacement a control is used once; with replacement a treated unit never
    takes the same control twice. A control outside a covariate caliper
    (``cal_covs``/``cal_widths``) is skipped and the search goes on past it, as in
    MatchIt. Returns an (n1, ratio) array of unit indices (-1: no match), rows in the
    data order of the treated units.
    """
    n = len(distance)
    d_ord = np.argsort(distance, kind="stable")
    ds = distance[d_ord].tolist()
    avail = ((treat[d_ord] == 0) & ~discarded[d_ord]).tolist()
    pos = np.empty(n, dtype=np.int64)
    pos[d_ord] = np.arange(n)
    treated_units = np.flatnonzero(treat == 1)
    tpos = pos[treated_units].tolist()
    tdisc = discarded[treated_units].tolist()
    left = [i if avail[i] else i - 1 for i in range(n)]
    right = [i if avail[i] else i + 1 for i in range(n)]
    n_avail = sum(avail)
    mm = np.full((len(treated_units), ratio), -1, dtype=np.int64)
    rows: list[list[int]] = [[] for _ in treated_units]
    cal = math.inf if caliper is None else caliper
    cc = None if cal_covs is None else cal_covs[d_ord]

    def fails(k: int, p: int) -> bool:
        return cc is not None and bool(np.any(np.abs(cc[k] - cc[p]) > cal_widths))

    for r in range(ratio):
        for j in order:
            if n_avail == 0:
                break
            if tdisc[j]:
                continue
            p = tpos[j]
            dti = ds[p]
            taken = rows[j]
            kl = _find_left(left, p - 1)
            while kl >= 0:
                if abs(dti - ds[kl]) > cal:
                    kl = -1
                elif kl in taken or fails(kl, p):
                    kl = _find_left(left, kl - 1)
                    continue
                break
            kr = _find_right(right, p + 1, n)
            while kr < n:
                if abs(ds[kr] - dti) > cal:
                    kr = n
                elif kr in taken or fails(kr, p):
                    kr = _find_right(right, kr + 1, n)
                    continue
                break
            if kl >= 0 and kr < n:
                k = kl if abs(ds[kl] - dti) <= abs(ds[kr] - dti) else kr
            elif kl >= 0:
                k = kl
            elif kr < n:
                k = kr
            else:
                continue
            mm[j, r] = d_ord[k]
            taken.append(k)
            if not replace:
                left[k] = k - 1
                right[k] = k + 1
                n_avail -= 1
    return mm


def _nn_on_coordinates(coords, treat, order, ratio, discarded, replace,
                       cal_covs=None, cal_widths=None) -> np.ndarray:
    """Greedy nearest-neighbour matching on Euclidean distance between coordinates.

    MatchIt's ``nn_matchC`` for Mahalanobis matching: in round r = 1..ratio each
    treated unit, in ``order``, takes the closest control still available (with
    replacement: the ``ratio`` closest distinct controls). Exact ties go to the
    control earliest in the data. Controls outside a covariate caliper are never
    taken. Candidate lists are computed in blocks and recomputed for a unit only when
    its list is used up, so large pools stay fast.
    """
    treated_units = np.flatnonzero(treat == 1)
    controls = np.flatnonzero((treat == 0) & ~discarded)
    mm = np.full((len(treated_units), ratio), -1, dtype=np.int64)
    if len(controls) == 0:
        return mm
    active = np.array([j for j in order if not discarded[treated_units[j]]], dtype=np.int64)
    if len(active) == 0:
        return mm
    A = coords[treated_units[active]]
    B = coords[controls]
    ccB = None if cal_covs is None else cal_covs[controls]
    ccA = None if cal_covs is None else cal_covs[treated_units[active]]

    def allowed(a: int, c: np.ndarray) -> np.ndarray:
        if ccB is None:
            return np.ones(len(c), dtype=bool)
        return np.all(np.abs(ccB[c] - ccA[a]) <= cal_widths, axis=1)

    if replace and ccB is None:
        idx, _ = _k_nearest(A, B, ratio)
        mm[active, :idx.shape[1]] = controls[idx]
        return mm
    if replace:
        for a, j in enumerate(active.tolist()):
            d = _sq_dists(A[a:a + 1], B)[0]
            d[~allowed(a, np.arange(len(controls)))] = np.inf
            o = np.lexsort((np.arange(len(d)), d))[:ratio]
            o = o[np.isfinite(d[o])]
            mm[j, :len(o)] = controls[o]
        return mm
    depth = min(len(controls), max(4 * ratio, 32))
    cand, cdist = _k_nearest(A, B, depth)
    used = np.zeros(len(controls), dtype=bool)
    n_left = len(controls)
    for r in range(ratio):
        for a, j in enumerate(active.tolist()):
            if n_left == 0:
                break
            row_c, row_d = cand[a], cdist[a]
            ok = ~used[row_c] & allowed(a, row_c)
            hits = np.flatnonzero(ok)
            exhausted = len(hits) == 0
            boundary = (not exhausted) and len(row_c) < len(controls) and row_d[hits[0]] >= row_d[-1]
            if exhausted or boundary:
                if len(row_c) == len(controls):
                    continue
                d = _sq_dists(A[a:a + 1], B)[0]
                d[used | ~allowed(a, np.arange(len(controls)))] = np.inf
                c = int(np.argmin(d))
                if not np.isfinite(d[c]):
                    continue
            else:
                c = int(row_c[hits[0]])
            used[c] = True
            n_left -= 1
            mm[j, r] = controls[c]
    return mm


def _match_order(m_order: str, distance, treat) -> np.ndarray:
    """MatchIt's ``m.order``: R's ``order()`` is stable, also with ``decreasing = TRUE``."""
    n1 = int(treat.sum())
    if m_order == "data" or distance is None:
        return np.arange(n1)
    d1 = distance[treat == 1]
    if m_order == "largest":
        return np.argsort(-d1, kind="stable")
    return np.argsort(d1, kind="stable")


def _weights_from_matrix(mm: np.ndarray, treat: np.ndarray) -> np.ndarray:
    """MatchIt's ``weights.matrix()``: a matched treated unit gets 1, each of its k
    controls 1/k (summed over uses when matching with replacement); then the control
    weights are rescaled to sum to the number of distinct matched controls."""
    n = len(treat)
    w = np.zeros(n)
    treated_units = np.flatnonzero(treat == 1)
    has = mm >= 0
    k = has.sum(axis=1)
    matched = k > 0
    w[treated_units[matched]] = 1.0
    per = np.where(k > 0, 1.0 / np.maximum(k, 1), 0.0)
    np.add.at(w, mm[has], np.broadcast_to(per[:, None], mm.shape)[has])
    c = treat == 0
    total = w[c].sum()
    if total > 0:
        w[c] *= np.count_nonzero(w[c]) / total
    return w


def _subclass_from_matrix(mm: np.ndarray, treat: np.ndarray) -> np.ndarray:
    """Pair/group number of each unit (0 = unmatched), numbered in treated data order.

    MatchIt's ``mm2subclass()`` forms the same groups; its labels follow the string
    order of the treated units' row positions, which carries no meaning.
    """
    sub = np.zeros(len(treat), dtype=np.int64)
    treated_units = np.flatnonzero(treat == 1)
    matched = (mm >= 0).any(axis=1)
    labels = np.cumsum(matched)
    sub[treated_units[matched]] = labels[matched]
    has = mm >= 0
    sub[mm[has]] = np.broadcast_to(labels[:, None], mm.shape)[has]
    return sub


def _discard(option: str, distance: np.ndarray, treat: np.ndarray) -> np.ndarray:
    """MatchIt's ``discard()``: drop units outside the range of the other group's score."""
    if option == "none":
        return np.zeros(len(treat), bool)
    d0, d1 = distance[treat == 0], distance[treat == 1]
    if option == "both":
        return (distance < max(d0.min(), d1.min())) | (distance > min(d0.max(), d1.max()))
    if option == "control":
        return (treat == 0) & ((distance < d1.min()) | (distance > d1.max()))
    return (treat == 1) & ((distance < d0.min()) | (distance > d0.max()))


# --------------------------------------------------------------------------- balance


def _wvar(x: np.ndarray, w: np.ndarray, binary: bool) -> float:
    """MatchIt's ``wvar()``: p(1 - p) for a binary variable, else the reliability-weights
    variance ``sum(w (x - m)^2) / (1 - sum(w^2))`` with w scaled to sum to 1 (equals
    the usual n - 1 variance for equal weights)."""
    s = w.sum()
    if s <= 0:
        return math.nan
    w = w / s
    m = float(np.dot(w, x))
    if binary:
        return m * (1 - m)
    denom = 1 - float(np.dot(w, w))
    return float(np.dot(w, (x - m) ** 2)) / denom if denom > 0 else math.nan


def _ecdf_stats(x, treat, w) -> tuple[float, float]:
    """MatchIt's ``qqsum(standardize = TRUE)``: mean and maximum absolute difference
    between the weighted eCDFs of the two groups, evaluated at every distinct value of
    ``x`` in the whole sample (zero-weight units included)."""
    w = w.astype(float).copy()
    for g in (0, 1):
        sel = treat == g
        s = w[sel].sum()
        if s > 0:
            w[sel] /= s
    o = np.argsort(x, kind="stable")
    xo, wo, to = x[o], w[o], treat[o]
    signed = np.where(to == to[0], -wo, wo)
    c = np.abs(np.cumsum(signed))
    last = np.append(np.diff(xo) != 0, True)
    e = c[last]
    return float(e.mean()), float(e.max())


def _pair_dist(x, treat, subclass, mm) -> float:
    """Mean absolute within-pair difference (MatchIt's ``pair.dist``): over every
    treated-control combination within a subclass, or over every entry of the match
    matrix when matching with replacement (no subclasses)."""
    if subclass is not None:
        total, count = 0.0, 0
        sel = subclass > 0
        s, t, v = subclass[sel], treat[sel], x[sel]
        for label in np.unique(s):
            g = s == label
            a, b = v[g & (t == 1)], v[g & (t == 0)]
            if len(a) and len(b):
                total += np.abs(a[:, None] - b[None, :]).sum()
                count += len(a) * len(b)
        return total / count if count else math.nan
    if mm is None:
        return math.nan
    treated_units = np.flatnonzero(treat == 1)
    has = mm >= 0
    if not has.any():
        return math.nan
    xt = np.broadcast_to(x[treated_units][:, None], mm.shape)[has]
    return float(np.abs(xt - x[mm[has]]).mean())


def _balance_rows(X: np.ndarray, names: list[str], treat: np.ndarray, weights: np.ndarray | None,
                  subclass=None, mm=None) -> pd.DataFrame:
    """One row of MatchIt's ``bal1var()`` per column of X (``s.d.denom = "treated"``)."""
    unmatched = weights is None
    ww = np.ones(len(treat)) if unmatched else np.asarray(weights, dtype=float)
    i1, i0 = treat == 1, treat == 0
    too_small = np.count_nonzero(ww[i1]) < 2 and np.count_nonzero(ww[i0]) < 2
    out = np.full((len(names), len(BALANCE_COLUMNS)), np.nan)
    for j in range(X.shape[1]):
        x = X[:, j]
        binary = bool(np.all((x == 0) | (x == 1)))
        s1, s0 = ww[i1].sum(), ww[i0].sum()
        m1 = float(np.dot(ww[i1], x[i1]) / s1) if s1 > 0 else math.nan
        m0 = float(np.dot(ww[i0], x[i0]) / s0) if s0 > 0 else math.nan
        mdiff = m1 - m0
        out[j, 0], out[j, 1] = m1, m0
        std = _smd_denominator(x, treat, binary)
        pd_raw = math.nan if unmatched else _pair_dist(x, treat, subclass, mm)
        if abs(mdiff) > _EPS:
            if not too_small:
                out[j, 2] = mdiff / std
                if not unmatched:
                    out[j, 6] = pd_raw / std if abs(pd_raw) > 1e-8 else pd_raw
        else:
            out[j, 2] = mdiff
            out[j, 6] = pd_raw
        if binary:
            out[j, 4] = out[j, 5] = abs(mdiff)
        elif not too_small:
            v1, v0 = _wvar(x[i1], ww[i1], False), _wvar(x[i0], ww[i0], False)
            # MatchIt prints Inf when the comparison units do not vary; undefined (NaN) here, so
            # results stay valid JSON and the book shows a dash
            out[j, 3] = v1 / v0 if v0 > 0 else math.nan
            out[j, 4], out[j, 5] = _ecdf_stats(x, treat, ww)
    table = pd.DataFrame(out, index=pd.Index(names, name="variable"), columns=BALANCE_COLUMNS)
    if unmatched:
        table = table.drop(columns="Std. Pair Dist.")
    return table


def _smd_denominator(x, treat, binary) -> float:
    """MatchIt's ``smd_denom(s.d.denom = "treated")``: SD of the treated group in the
    full (unmatched) sample; if that is zero, the pooled SD of both groups."""
    ones = np.ones(len(x))
    sel = treat == 1
    std = math.sqrt(max(_wvar(x[sel], ones[sel], binary), 0.0))
    if not math.isfinite(std) or std < _EPS:
        # MatchIt's pooled_sd(contribution = "proportional")
        n = len(x)
        if binary:
            var = sum(x[treat == g].sum() * (1 - x[treat == g].sum() / max((treat == g).sum(), 1)) / n
                      for g in (0, 1))
        else:
            centred = x.astype(float).copy()
            for g in (0, 1):
                if (treat == g).any():
                    centred[treat == g] -= centred[treat == g].mean()
            var = float(np.dot(centred, centred)) / max(n - 2, 1)
        std = math.sqrt(var)
    return std if std > 0 else 1.0


def sample_sizes(treat: np.ndarray, weights: np.ndarray, discarded: np.ndarray) -> pd.DataFrame:
    """MatchIt's ``nn()`` sample-size table; ESS = (sum w)^2 / sum(w^2) (Kish)."""
    def ess(w):
        s2 = float(np.dot(w, w))
        return float(w.sum()) ** 2 / s2 if s2 > 0 else 0.0

    t1, t0 = treat == 1, treat == 0
    one = np.ones(len(treat))
    table = pd.DataFrame(
        [[ess(one[t0]), ess(one[t1])],
         [t0.sum(), t1.sum()],
         [ess(weights[t0]), ess(weights[t1])],
         [(t0 & (weights > 0)).sum(), (t1 & (weights > 0)).sum()],
         [(t0 & (weights == 0) & ~discarded).sum(), (t1 & (weights == 0) & ~discarded).sum()],
         [(t0 & discarded).sum(), (t1 & discarded).sum()]],
        index=COUNT_ROWS, columns=["Control", "Treated"], dtype=float)
    return table


def balance(data: pd.DataFrame, treatment: str, covariates: Sequence[str],
            weights=None, *, distance=None, source: str | None = None,
            row_numbers=None) -> pd.DataFrame:
    """Balance table in MatchIt's ``summary()`` definition for given weights.

    Columns: weighted means of each group; standardised mean difference (difference
    in weighted means over the SD of the *treated group in the full sample*,
    MatchIt's ``s.d.denom = "treated"`` for the ATT; for a 0/1 variable that SD is
    sqrt(p(1 - p)), also as MatchIt, whereas cobalt by default reports the raw
    difference in proportions); weighted variance ratio treated/control (blank for
    binary variables); mean and maximum eCDF difference. ``weights=None`` gives the
    unmatched ("All Data") table; ``distance`` (e.g. a propensity score) adds a
    first row named ``distance``. Categorical covariates get one row per level.
    """
    prep = _prepare(data, treatment, covariates, None, None, source, row_numbers)
    X, names = prep.design.X, list(prep.design.columns)
    if distance is not None:
        X = np.column_stack([np.asarray(distance, float), X])
        names = ["distance"] + names
    w = None if weights is None else np.asarray(weights, dtype=float)
    table = _balance_rows(X, names, prep.treat, w)
    if w is not None:
        table = table.drop(columns="Std. Pair Dist.")
    return table


# --------------------------------------------------------------------------- result


@dataclass
class MatchResult:
    """The outcome of :func:`match` or :func:`family_of_schools`.

    Arrays are aligned with the rows of the input data. ``match_matrix`` has one row
    per treated unit (data order) and ``ratio`` columns holding row positions of
    the matched controls (-1 where none). ``subclass`` is the pair/group number of
    each unit (0 when unmatched; all 0 when matching with replacement, where
    MatchIt also has no subclasses -- use :meth:`pairs`). ``balance_all`` and
    ``balance_matched`` are MatchIt's "Summary of Balance" tables; ``counts`` is its
    "Sample Sizes" table (with the effective sample sizes).
    """

    method: str
    distance_method: str
    treatment: str
    covariates: list[str]
    ids: np.ndarray
    treat: np.ndarray
    distance: np.ndarray | None
    weights: np.ndarray
    subclass: np.ndarray
    match_matrix: np.ndarray
    pair_distance: np.ndarray
    discarded: np.ndarray
    balance_all: pd.DataFrame
    balance_matched: pd.DataFrame
    counts: pd.DataFrame
    ratio: int
    replace: bool
    m_order: str
    caliper: dict[str, float] | None = None  # requested, in SDs ("distance" = propensity score)
    caliper_width: dict[str, float] | None = None  # the same in raw units
    exact: list[str] = field(default_factory=list)
    discard: str = "none"
    outside_support: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def matched(self) -> np.ndarray:
        """Boolean mask of units kept by the matching (weight > 0)."""
        return self.weights > 0

    def pairs(self) -> pd.DataFrame:
        """One row per (treated, control) match: subclass, treated and control ids,
        match number 1..ratio, and the distance between the two units."""
        treated_units = np.flatnonzero(self.treat == 1)
        has = self.match_matrix >= 0
        t_idx = np.broadcast_to(treated_units[:, None], self.match_matrix.shape)[has]
        c_idx = self.match_matrix[has]
        number = np.broadcast_to(np.arange(1, self.ratio + 1)[None, :], self.match_matrix.shape)[has]
        return pd.DataFrame({
            "subclass": self.subclass[t_idx] if not self.replace else np.zeros(len(t_idx), np.int64),
            "treated_id": self.ids[t_idx],
            "control_id": self.ids[c_idx],
            "match": number,
            "distance": self.pair_distance[has],
            "treated_row": t_idx,
            "control_row": c_idx,
        })

    def matched_data(self, data: pd.DataFrame) -> pd.DataFrame:
        """The matched units of ``data`` with ``distance``, ``weights`` and ``subclass``
        columns added (MatchIt's ``match_data()``; subclass empty with replacement)."""
        out = data.copy()
        if self.distance is not None:
            out["distance"] = self.distance
        out["weights"] = self.weights
        sub = pd.array(self.subclass, dtype="Int64")
        if self.replace:
            sub = pd.array([pd.NA] * len(out), dtype="Int64")
        else:
            sub[self.subclass == 0] = pd.NA
        out["subclass"] = sub
        return out.loc[self.matched].copy()

    def common_support(self) -> dict | None:
        """Treated units whose propensity score lies outside the controls' range."""
        if self.distance is None or self.outside_support is None:
            return None
        d0 = self.distance[self.treat == 0]
        outside = self.outside_support
        return {"control_range": [float(d0.min()), float(d0.max())],
                "treated_outside": int(outside.sum()),
                "treated_outside_ids": [_plain(v) for v in self.ids[outside]]}

    def to_dict(self) -> dict:
        """JSON-ready description: settings, counts, balance before/after, pairs."""
        pairs = self.pairs()
        grouped = []
        for t_row, grp in pairs.groupby("treated_row", sort=False):
            grouped.append({
                "treated": _plain(self.ids[t_row]),
                "subclass": None if self.replace else int(grp["subclass"].iloc[0]),
                "controls": [_plain(v) for v in grp["control_id"]],
                "distances": [float(v) for v in grp["distance"]],
            })
        unmatched_treated = [_plain(v) for v in self.ids[(self.treat == 1) & (self.weights == 0)]]
        return {
            "method": self.method,
            "distance": self.distance_method,
            "treatment": self.treatment,
            "covariates": list(self.covariates),
            "exact": list(self.exact),
            "ratio": self.ratio,
            "replace": self.replace,
            "m_order": self.m_order,
            "caliper": self.caliper,
            "caliper_width": self.caliper_width,
            "discard": self.discard,
            "counts": {row: {col: _num(self.counts.loc[row, col]) for col in self.counts.columns}
                       for row in self.counts.index},
            "balance": {"all": _table_dict(self.balance_all),
                        "matched": _table_dict(self.balance_matched)},
            "common_support": self.common_support(),
            "pairs": grouped,
            "unmatched_treated": unmatched_treated,
            "warnings": list(self.warnings),
        }

    def summary(self) -> str:
        """Text like MatchIt's ``print(summary(m.out))``: balance before and after
        matching (4 decimals, "." where a statistic does not apply) and sample sizes."""
        lines = ["", "Summary of Balance for All Data:"]
        lines += _format_table(self.balance_all)
        lines += ["", "Summary of Balance for Matched Data:"]
        lines += _format_table(self.balance_matched)
        lines += ["", "Sample Sizes:"]
        counts = self.counts
        uniform = np.allclose(self.weights[self.weights > 0], 1.0)
        if uniform:
            counts = counts.drop(index=["All (ESS)", "Matched (ESS)"])
        elif np.allclose(counts.loc["All (ESS)"], counts.loc["All"]):
            counts = counts.drop(index=["All (ESS)"])
        width = max(len(r) for r in counts.index)
        lines.append(" " * width + "  " + "  ".join(f"{c:>8}" for c in counts.columns))
        for r in counts.index:
            cells = []
            for c in counts.columns:
                v = counts.loc[r, c]
                cells.append(f"{v:>8.2f}" if "ESS" in r else f"{int(round(v)):>8d}")
            lines.append(f"{r:<{width}}  " + "  ".join(cells))
        if self.warnings:
            lines += [""] + [f"Warning: {w}" for w in self.warnings]
        return "\n".join(lines) + "\n"


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    return v


def _num(v):
    v = float(v)
    if math.isnan(v):
        return None
    return int(v) if v.is_integer() else v


def _table_dict(table: pd.DataFrame) -> dict:
    return {str(row): {str(c): (None if pd.isna(table.loc[row, c]) else float(table.loc[row, c]))
                       for c in table.columns} for row in table.index}


def _format_table(table: pd.DataFrame) -> list[str]:
    names = [str(i) for i in table.index]
    width = max(len(n) for n in names) if names else 8
    header = " " * width + " " + " ".join(f"{c:>15}" for c in table.columns)
    out = [header]
    for name, (_, row) in zip(names, table.iterrows()):
        cells = ["{:>15}".format("." if pd.isna(v) else f"{v:.4f}") for v in row]
        out.append(f"{name:<{width}} " + " ".join(cells))
    return out


# --------------------------------------------------------------------------- public matchers


def _caliper_items(caliper) -> list[tuple[str, object]]:
    if caliper is None:
        return []
    if isinstance(caliper, dict):
        return [(str(k), v) for k, v in caliper.items()]
    return [("distance", caliper)]


def _caliper_columns(data, caliper, source) -> list[str]:
    """Validate the covariate calipers: numeric, non-binary, complete columns (MatchIt
    forbids calipers on binary, factor and character variables)."""
    names = [k for k, _ in _caliper_items(caliper) if k != "distance"]
    problems = _check_columns(data, names, "caliper", source)
    if problems:
        raise InputError(problems, summary="cannot match: caliper")
    for name in names:
        s = data[name]
        if not _is_numeric(s) or pd.api.types.is_bool_dtype(s) or s.nunique(dropna=True) <= 2:
            problems.append(problem("a caliper needs a numeric covariate with more than two values "
                                    "(MatchIt: no calipers on binary or categorical variables)",
                                    file=source, column=name))
    if problems:
        raise InputError(problems, summary="cannot match: caliper")
    return names


def _check_options(distance, ratio, caliper, discard, m_order, replace) -> None:
    problems = []
    if distance not in DISTANCES:
        problems.append(problem(f"distance must be one of {', '.join(DISTANCES)}{_suggest(str(distance), DISTANCES)}",
                                value=distance))
    if isinstance(ratio, bool) or not isinstance(ratio, (int, np.integer)) or ratio < 1:
        problems.append(problem("ratio must be a whole number of controls per treated unit, 1 or more",
                                value=ratio))
    for name, value in _caliper_items(caliper):
        ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool) \
            and math.isfinite(float(value)) and float(value) > 0
        what = "the propensity score" if name == "distance" else f"column {name!r}"
        if not ok:
            problems.append(problem(f"caliper must be a positive number of standard deviations of {what}",
                                    column=None if name == "distance" else name, value=value))
        elif name == "distance" and distance == "mahalanobis":
            problems.append(problem("a caliper on the distance needs a propensity score (MatchIt: not "
                                    "allowed with distance = 'mahalanobis'); use distance 'logit' or a "
                                    "caliper on named covariates", value=value))
    if discard not in DISCARD_OPTIONS:
        problems.append(problem(f"discard must be one of {', '.join(DISCARD_OPTIONS)}", value=discard))
    elif discard != "none" and distance == "mahalanobis":
        problems.append(problem("discarding outside common support needs a propensity score "
                                "(distance 'logit')", value=discard))
    if m_order is not None and m_order not in M_ORDERS:
        problems.append(problem(f"m_order must be one of {', '.join(M_ORDERS)}", value=m_order))
    if not isinstance(replace, (bool, np.bool_)):
        problems.append(problem("replace must be True or False", value=replace))
    if problems:
        raise InputError(problems, summary="cannot match: options")


def match(data: pd.DataFrame, treatment: str, covariates: Sequence[str], *,
          id: str | None = None, exact: str | Sequence[str] | None = None,
          distance: str = "logit", ratio: int = 1, replace: bool = False,
          caliper: float | dict[str, float] | None = None, std_caliper: bool = True,
          m_order: str | None = None,
          discard: str = "none", source: str | None = None,
          row_numbers: Sequence[int] | None = None) -> MatchResult:
    """Greedy nearest-neighbour matching with MatchIt's conventions (``method = "nearest"``).

    Parameters
    ----------
    data : one row per unit.
    treatment : 0/1 (or boolean) column, 1 = treated (e.g. partnership school).
    covariates : columns to match on; text/categorical columns become one dummy per
        level (R's ``model.matrix``).
    id : column of unit identifiers used in pairs and JSON (default: the index, or
        ``row_numbers`` when given).
    exact : column(s) on which treated and control must agree exactly (MatchIt
        ``exact``); matching runs separately within each cell.
    distance : ``"logit"`` -- propensity score from a logistic regression of
        ``treatment`` on the covariates (MatchIt ``distance = "glm"``), matched on the
        score itself; or ``"mahalanobis"`` -- Mahalanobis distance on the covariates
        with MatchIt's pooled within-group covariance (see
        :func:`mahalanobis_coordinates`).
    ratio : k controls per treated unit (k:1). Round r gives every treated unit its
        r-th control before any gets its (r+1)-th, as MatchIt does.
    replace : whether a control may be matched to several treated units.
    caliper : maximum propensity-score difference in standard deviations of the
        score, the SD taken over all non-discarded units of both groups
        (``sd(distance[!discarded])``, MatchIt ``std.caliper = TRUE``). Treated
        units with no control within the caliper stay unmatched. A dict gives
        calipers on named numeric columns too, ``{"distance": 0.2, "re74": 0.2}``,
        each in SDs of that column over the non-discarded units (MatchIt's named
        ``caliper``).
    std_caliper : False to read caliper widths in raw units instead of SDs.
    m_order : order in which treated units choose: ``"largest"`` propensity score
        first (MatchIt's default for a propensity score), ``"smallest"`` or
        ``"data"`` (the default, and the only order, for Mahalanobis). With
        replacement the order does not matter.
    discard : ``"none"``, ``"both"``, ``"control"`` or ``"treated"``: drop units whose
        score lies outside the range of the other group's scores before matching
        (MatchIt ``discard``; the score is not re-estimated).

    Ties: on a propensity score, units are sorted by score (ties keep data order)
    and a treated unit equally close to a control below and one above takes the one
    below (MatchIt ``nn_matchC_vec``). With Mahalanobis distance, exact ties go to
    the control earliest in the data.

    Weights (MatchIt): matched treated units 1; each control 1/k per treated unit it
    is matched to, summed, then all control weights rescaled to sum to the number of
    matched controls; unmatched units 0.
    """
    _check_options(distance, ratio, caliper, discard, m_order, replace)
    ratio = int(ratio)
    prep = _prepare(data, treatment, covariates, id, exact, source, row_numbers)
    cal_names = _caliper_columns(data, caliper, source)
    if cal_names:
        rows = _row_numbers(data, row_numbers)
        missing = [problem("missing value in a caliper column", file=source, row=int(r), column=c, value=None)
                   for c in cal_names for r in rows[data[c].isna().to_numpy()]]
        if missing:
            raise InputError(missing, summary="cannot match: caliper")
    treat = prep.treat
    n = len(treat)
    notes: list[str] = []

    ps = None
    if distance == "logit":
        ps, notes = propensity_score(prep.design.model_X, treat)
        discarded = _discard(discard, ps, treat)
        m_order = m_order or "largest"
    else:
        discarded = np.zeros(n, bool)
        m_order = m_order or "data"
    if replace:
        m_order_used = "data"  # MatchIt: with replacement (reuse.max >= n1) the order is irrelevant
    else:
        m_order_used = m_order

    calipers = {k: float(v) for k, v in _caliper_items(caliper)}
    widths = {}
    for name, value in calipers.items():
        x = ps if name == "distance" else data[name].to_numpy(dtype=float)
        widths[name] = value * float(np.std(x[~discarded], ddof=1)) if std_caliper else value
    width = widths.get("distance")
    cal_covs = cal_w = None
    if cal_names:
        cal_covs = np.column_stack([data[c].to_numpy(dtype=float) for c in cal_names])
        cal_w = np.array([widths[c] for c in cal_names])

    coords = None
    if distance == "mahalanobis":
        coords = mahalanobis_coordinates(prep.design.dist_X, treat, discarded)

    order = _match_order(m_order_used, ps, treat)
    n1 = int(treat.sum())
    mm = np.full((n1, ratio), -1, dtype=np.int64)
    treated_units = np.flatnonzero(treat == 1)

    def run(units: np.ndarray) -> np.ndarray:
        t = treat[units]
        local_t = np.flatnonzero(t == 1)
        # restrict the global order to this subset, keeping its sequence
        global_rows = np.searchsorted(treated_units, units[local_t])
        rank = np.empty(n1, dtype=np.int64)
        rank[order] = np.arange(n1)
        local_order = np.argsort(rank[global_rows], kind="stable").tolist()
        if distance == "logit":
            sub = _nn_on_score(ps[units], t, local_order, ratio, discarded[units], replace, width,
                               None if cal_covs is None else cal_covs[units], cal_w)
        else:
            sub = _nn_on_coordinates(coords[units], t, local_order, ratio, discarded[units], replace,
                                     None if cal_covs is None else cal_covs[units], cal_w)
        out = np.where(sub >= 0, units[np.maximum(sub, 0)], -1)
        mm[global_rows] = out
        return out

    if prep.strata is None:
        run(np.arange(n))
    else:
        cells_with_both = []
        for code in np.unique(prep.strata):
            units = np.flatnonzero(prep.strata == code)
            t = treat[units]
            if t.any() and (t == 0).any():
                cells_with_both.append(code)
                run(units)
            elif t.any():
                notes.append(f"no control units with {prep.strata_labels[code]}; "
                             f"its {int(t.sum())} treated unit(s) stay unmatched")
        if not cells_with_both:
            raise InputError(problem("no exact-matching cell has both treated and control units; "
                                     "no matches are possible", file=source,
                                     column=", ".join([exact] if isinstance(exact, str) else list(exact))))

    if not (mm >= 0).any():
        raise InputError(problem("no treated unit could be matched (check the caliper, exact "
                                 "matching and common-support settings)", file=source))

    weights = _weights_from_matrix(mm, treat)
    subclass = np.zeros(n, np.int64) if replace else _subclass_from_matrix(mm, treat)
    pair_d = _pair_distances(mm, treated_units, ps, coords)
    n_unmatched = int(((mm >= 0).sum(axis=1) < ratio)[~discarded[treated_units]].sum())
    if n_unmatched:
        notes.append(f"{n_unmatched} treated unit(s) received fewer than {ratio} match(es)")

    outside = None
    if ps is not None:
        d0 = ps[treat == 0]
        outside = (treat == 1) & ((ps < d0.min()) | (ps > d0.max()))

    return _finish("nearest", distance, treatment, covariates, prep, ps, weights, subclass, mm,
                   pair_d, discarded, ratio, replace, m_order, calipers or None, widths or None,
                   exact, discard, outside, notes)


def _pair_distances(mm, treated_units, ps, coords) -> np.ndarray:
    out = np.full(mm.shape, np.nan)
    has = mm >= 0
    t = np.broadcast_to(treated_units[:, None], mm.shape)[has]
    c = mm[has]
    if ps is not None:
        out[has] = np.abs(ps[t] - ps[c])
    elif coords is not None:
        out[has] = np.sqrt(((coords[t] - coords[c]) ** 2).sum(axis=1))
    return out


def _finish(method, distance, treatment, covariates, prep, ps, weights, subclass, mm, pair_d,
            discarded, ratio, replace, m_order, caliper, width, exact, discard, outside, notes):
    X, names = prep.balance_design.X, list(prep.balance_design.columns)
    if ps is not None:
        X = np.column_stack([ps, X])
        names = ["distance"] + names
    sub = None if replace else subclass
    bal_all = _balance_rows(X, names, prep.treat, None)
    bal_matched = _balance_rows(X, names, prep.treat, weights, subclass=sub, mm=mm)
    counts = sample_sizes(prep.treat, weights, discarded)
    exact_list = [] if exact is None else ([exact] if isinstance(exact, str) else list(exact))
    covs = [covariates] if isinstance(covariates, str) else list(covariates)
    return MatchResult(method, distance, treatment, covs, prep.ids, prep.treat.astype(np.int64), ps,
                       weights, subclass, mm, pair_d, discarded, bal_all, bal_matched, counts,
                       ratio, bool(replace), m_order, caliper, width, exact_list, discard,
                       outside, notes)


def family_of_schools(data: pd.DataFrame, treatment: str, covariates: Sequence[str], *,
                      k: int = 50, metric: str = "zscore", id: str | None = None,
                      exact: str | Sequence[str] | None = None, source: str | None = None,
                      row_numbers: Sequence[int] | None = None) -> MatchResult:
    """For each treated unit its ``k`` most similar control units (a "family").

    Similarity is Euclidean distance on covariates standardised to z-scores over
    all units (``metric="zscore"``; the EEF's families of schools use standardised
    measures of prior attainment and disadvantage in this way) or MatchIt's
    Mahalanobis distance (``metric="mahalanobis"``). Families overlap: a control
    can be in many families, so this is k:1 nearest-neighbour matching with
    replacement, and weights and balance follow MatchIt's rules for that case. Exact
    ties go to the control earliest in the data. If an exact-matching cell has
    fewer than ``k`` controls, its families hold all of them.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(problem("family size k must be a whole number, 1 or more", value=k))
    if metric not in FAMILY_METRICS:
        raise InputError(problem(f"metric must be one of {', '.join(FAMILY_METRICS)}"
                                 f"{_suggest(str(metric), FAMILY_METRICS)}", value=metric))
    k = int(k)
    prep = _prepare(data, treatment, covariates, id, exact, source, row_numbers)
    treat = prep.treat
    n = len(treat)
    discarded = np.zeros(n, bool)
    if metric == "zscore":
        coords = zscore_coordinates(prep.design.X)
    else:
        coords = mahalanobis_coordinates(prep.design.dist_X, treat, discarded)
    treated_units = np.flatnonzero(treat == 1)
    mm = np.full((len(treated_units), k), -1, dtype=np.int64)
    notes: list[str] = []
    strata = prep.strata if prep.strata is not None else np.zeros(n, np.int64)
    for code in np.unique(strata):
        units = np.flatnonzero(strata == code)
        t_units = units[treat[units] == 1]
        c_units = units[treat[units] == 0]
        if len(t_units) == 0:
            continue
        if len(c_units) == 0:
            label = prep.strata_labels[code] if prep.strata_labels else "the data"
            notes.append(f"no control units with {label}; its {len(t_units)} treated unit(s) have no family")
            continue
        idx, _ = _k_nearest(coords[t_units], coords[c_units], k)
        rows = np.searchsorted(treated_units, t_units)
        mm[rows, :idx.shape[1]] = c_units[idx]
        if idx.shape[1] < k:
            label = prep.strata_labels[code] if prep.strata_labels else "the data"
            notes.append(f"only {idx.shape[1]} control unit(s) with {label}; families are smaller than {k}")
    if not (mm >= 0).any():
        raise InputError(problem("no exact-matching cell has both treated and control units",
                                 file=source))
    weights = _weights_from_matrix(mm, treat)
    pair_d = _pair_distances(mm, treated_units, None, coords)
    return _finish("family", metric, treatment, covariates, prep, None, weights,
                   np.zeros(n, np.int64), mm, pair_d, discarded, k, True, "data", None, None,
                   exact, "none", None, notes)
