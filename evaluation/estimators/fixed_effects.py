"""Linear regression with high-dimensional fixed effects (fixest-style ``feols``).

Fixed effects are absorbed by the method of alternating projections
(Guimaraes & Portugal 2010; Gaure 2013, "OLS with multiple high dimensional
category variables"), accelerated with the Irons & Tuck (1969) extrapolation
that fixest uses (Berge 2018). Group means come from ``np.bincount``, so a
sweep is a handful of vectorised passes over the data.

With one or two fixed effects, the smaller of two with few levels (school + year),
:func:`feols` needs no iteration: it fits exactly from the sufficient statistics of
:mod:`evaluation.estimators.twoway_exact` (school means + year dummies), in chunks, so no
n x k copy of the data is made. ``details["absorb"]`` says which path ran.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from evaluation.errors import InputError, problem
from evaluation.estimators.results import EstimatorResult, VarianceConvention, estimate_table

__all__ = ["demean", "SSC", "FeolsResult", "feols", "parse_formula", "VCOV_TYPES", "vcov_type", "numeric_column",
           "missing_column"]


def _check_codes(fe_codes, n: int) -> list[np.ndarray]:
    out = []
    for i, codes in enumerate(fe_codes):
        codes = np.asarray(codes)
        if codes.shape != (n,):
            raise ValueError(f"fe_codes[{i}] has shape {codes.shape}; expected ({n},)")
        if not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"fe_codes[{i}] must hold integer codes (use pd.factorize)")
        if n and codes.min() < 0:
            raise ValueError(f"fe_codes[{i}] holds negative codes (missing groups); drop those rows first")
        out.append(codes.astype(np.intp, copy=False))
    return out


class _Projector:
    """Weighted group-mean projections for one fixed effect."""

    __slots__ = ("codes", "ngroups", "weights", "inv_wsum")

    def __init__(self, codes: np.ndarray, weights: np.ndarray | None):
        self.codes = codes
        self.ngroups = int(codes.max()) + 1 if codes.size else 0
        self.weights = weights
        wsum = np.bincount(codes, weights=weights, minlength=self.ngroups)
        with np.errstate(divide="ignore"):
            self.inv_wsum = np.where(wsum > 0, 1.0 / np.where(wsum > 0, wsum, 1.0), 0.0)

    def subtract_means(self, X: np.ndarray) -> None:
        """X -= (weighted) group means, in place, column by column."""
        for j in range(X.shape[1]):
            col = X[:, j]
            v = col if self.weights is None else col * self.weights
            means = np.bincount(self.codes, weights=v, minlength=self.ngroups) * self.inv_wsum
            col -= means[self.codes]


def demean(X, fe_codes, weights=None, tol: float = 1e-10, maxiter: int = 100_000):
    """Residuals of ``X`` after projecting out every fixed effect in ``fe_codes``.

    X: array (n, k) or (n,); fe_codes: list of integer arrays of length n (codes
    0..G-1, e.g. from ``pd.factorize``); weights: optional non-negative analytic
    weights (the projection is then in the weighted inner product).

    One fixed effect is removed exactly in one pass. With several, alternating
    projections (subtract group means of each effect in turn) are iterated and
    accelerated every third sweep by Irons-Tuck extrapolation; a column has
    converged when one full sweep changes no element by more than
    ``tol * max(1, max|X[:, j]|)``. Raises RuntimeError if ``maxiter`` sweeps
    are not enough. Returns a new float64 array (Fortran order) with the shape of ``X``.
    """
    X = np.asarray(X, dtype=np.float64)
    one_d = X.ndim == 1
    out = np.array(X.reshape(-1, 1) if one_d else X, dtype=np.float64, order="F", copy=True)
    n = out.shape[0]
    codes = _check_codes(fe_codes, n)
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (n,):
            raise ValueError(f"weights has shape {weights.shape}; expected ({n},)")
    if not codes or n == 0 or out.shape[1] == 0:
        return out[:, 0].copy() if one_d else out
    projectors = [_Projector(c, weights) for c in codes]

    def sweep(A: np.ndarray) -> np.ndarray:
        for p in projectors:
            p.subtract_means(A)
        return A

    if len(projectors) == 1:
        sweep(out)
        return out[:, 0].copy() if one_d else out

    scale = tol * np.maximum(1.0, np.maximum(out.max(axis=0), -out.min(axis=0)))
    others = projectors[:-1]  # after a sweep the last effect's group means are exactly zero

    def converged(A: np.ndarray, cols: np.ndarray) -> np.ndarray:
        worst = np.zeros(A.shape[1])
        for p in others:
            for j in range(A.shape[1]):
                v = A[:, j] if p.weights is None else A[:, j] * p.weights
                m = np.bincount(p.codes, weights=v, minlength=p.ngroups) * p.inv_wsum
                worst[j] = max(worst[j], np.abs(m).max())
        return worst <= scale[cols]

    active = np.arange(out.shape[1])
    x = out  # swept in place until some columns converge before others
    sweeps = 0
    history: list[np.ndarray] = []
    while True:
        if sweeps:  # the first sweep is often the last (balanced panels): no copy for it
            history.append(x.copy())
        sweep(x)
        sweeps += 1
        done = converged(x, active)
        if done.any():
            if x is not out:
                out[:, active[done]] = x[:, done]
            keep = ~done
            active = active[keep]
            x = np.asfortranarray(x[:, keep])
            history = [h[:, keep] for h in history]
        if not active.size:
            break
        if sweeps >= maxiter:
            raise RuntimeError(f"demean: alternating projections did not converge in {maxiter} sweeps; "
                               "the fixed effects may be poorly connected")
        if len(history) == 2:
            # Irons-Tuck on x0 -> x1 -> x2 = x: x2 - alpha (x2 - x1), alpha = <d1, d2> / <d2, d2>
            x0, x1 = history
            d1 = x - x1
            d2 = d1 - (x1 - x0)
            num = np.einsum("ij,ij->j", d1, d2)
            den = np.einsum("ij,ij->j", d2, d2)
            with np.errstate(divide="ignore", invalid="ignore"):
                alpha = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
            x = np.asfortranarray(x - alpha * d1)
            history = []
    return out[:, 0].copy() if one_d else out


# ---------------------------------------------------------------------------
# feols
# ---------------------------------------------------------------------------

#: Variance estimators offered by :func:`feols`.
VCOV_TYPES = ("iid", "hetero", "CR1", "CR0", "panelols")

_COLLINEAR_TOL = 1e-10
_FUNCTIONS = {"C", "I", "np", "log", "exp", "sqrt", "abs", "center", "scale", "poly", "Q",
              "Treatment", "Sum", "Diff", "Helmert", "contr", "lag", "bs"}
_CONTEXT = {"log": np.log, "exp": np.exp, "sqrt": np.sqrt, "abs": np.abs, "np": np}


@dataclass(frozen=True)
class SSC:
    """Small-sample correction, mirroring fixest's ``ssc()`` defaults.

    adj: multiply by (N-1)/(N-K); fixef_K: how fixed effects enter K ("nested":
    effects nested in the cluster variable are not counted (fixest default),
    "full": all of them, "none": only the regressors); cluster_adj: multiply
    clustered variances by G/(G-1); t_df: "min" (G-1 df when clustered, N-K
    otherwise; fixest default) or "conventional" (N-K).
    """

    adj: bool = True
    fixef_K: str = "nested"
    cluster_adj: bool = True
    t_df: str = "min"

    def __post_init__(self):
        if self.fixef_K not in ("nested", "full", "none"):
            raise InputError(problem("fixef_K must be 'nested', 'full' or 'none'", value=self.fixef_K))
        if self.t_df not in ("min", "conventional"):
            raise InputError(problem("t_df must be 'min' or 'conventional'", value=self.t_df))


@dataclass
class FeolsResult(EstimatorResult):
    """An :class:`EstimatorResult` with the pieces of the fit kept as arrays.

    params/vcov: estimates and variance of the kept regressors (indexed by term);
    fe_sizes: levels of each absorbed fixed effect; dof_K: the K of the correction.
    """

    formula: str = ""
    params: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))
    vcov: pd.DataFrame = field(default_factory=pd.DataFrame)
    fe_sizes: dict = field(default_factory=dict)
    dof_K: int = 0
    rss: float = float("nan")
    sample: np.ndarray | None = None  # boolean mask of the rows of `data` used
    residuals: np.ndarray | None = None

    def se(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self.vcov.to_numpy())), index=self.vcov.index)


@dataclass(frozen=True)
class ParsedFormula:
    lhs: str
    rhs: list[str]
    fixed_effects: list[str]
    intercept: bool


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside parentheses."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise InputError(problem("unbalanced parentheses in the formula", value=text))
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise InputError(problem("unbalanced parentheses in the formula", value=text))
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def parse_formula(formula: str) -> ParsedFormula:
    """Parse ``"y ~ x1 + x2 | fe1 + fe2"`` (fixest syntax; ``a^b`` interacts two effects).

    Without ``|`` the model has an intercept (drop it with ``- 1`` or ``+ 0``);
    with fixed effects it has none (the effects absorb it).
    """
    if not isinstance(formula, str) or formula.count("~") != 1:
        raise InputError(problem("a formula of the form 'y ~ x1 + x2 | fe1 + fe2' (exactly one '~')",
                                 column=None, value=formula))
    lhs, rest = (s.strip() for s in formula.split("~"))
    pieces = _split_top(rest, "|")
    if len(pieces) > 2:
        raise InputError(problem("at most one '|' (regressors | fixed effects) in the formula",
                                 value=formula))
    rhs_text = pieces[0]
    fes = []
    if len(pieces) == 2:
        fes = [f for f in _split_top(pieces[1], "+")]
        if any(not f for f in fes) or not pieces[1]:
            raise InputError(problem("fixed effects after '|' separated by '+' (e.g. '| unit + year')",
                                     value=formula))
        if any(not re.fullmatch(r"[^\s+^()]+(\s*\^\s*[^\s+^()]+)*", f) for f in fes):
            raise InputError(problem("fixed effects must be column names, optionally interacted "
                                     "with '^' (e.g. 'unit^year')", value=pieces[1]))
    if not lhs:
        raise InputError(problem("a dependent variable before '~'", value=formula))
    terms = [t for t in _split_top(rhs_text, "+")] if rhs_text else []
    intercept = not fes
    kept = []
    for t in terms:
        if t in ("0", "-1") or t.endswith("- 1") or t.endswith("-1"):
            base = re.sub(r"-\s*1$", "", t).strip()
            intercept = False
            if base and base != "0":
                kept.append(base)
        elif t == "1":
            intercept = intercept or not fes
        elif not t:
            raise InputError(problem("a term on each side of every '+' in the formula", value=formula))
        else:
            kept.append(t)
    if not kept and not intercept:
        raise InputError(problem("at least one regressor (or an intercept) on the right of '~'",
                                 value=formula))
    return ParsedFormula(lhs, kept, fes, intercept)


def missing_column(name: str, data: pd.DataFrame, what: str = "column") -> InputError:
    close = difflib.get_close_matches(name, [str(c) for c in data.columns], n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else \
        f"; the data have {', '.join(map(str, list(data.columns)[:20]))}"
    return InputError(problem(f"no such {what} in the data{hint}", column=name))


def _identifiers(expr: str) -> list[str]:
    names = []
    for m in re.finditer(r"[A-Za-z_.][A-Za-z0-9_.]*", expr):
        tail = expr[m.end():].lstrip()
        if tail.startswith("(") or m.group(0) in _FUNCTIONS or m.group(0).startswith("np."):
            continue
        names.append(m.group(0))
    return names


def numeric_column(data: pd.DataFrame, col: str, *, file: str | None = None,
                   row_base: int = 1) -> np.ndarray:
    """Column ``col`` as float64; non-numeric entries raise InputError naming the row.

    Missing values (NaN/None/empty) become NaN. ``row_base`` is the row number of the
    first record (2 for a CSV with a header line, 1 for Parquet or a data frame).
    """
    s = data[col]
    if pd.api.types.is_bool_dtype(s.dtype):
        return s.astype(float).to_numpy(dtype=float, na_value=np.nan)
    if pd.api.types.is_numeric_dtype(s.dtype):
        return s.to_numpy(dtype=float, na_value=np.nan)
    conv = pd.to_numeric(s, errors="coerce")
    bad = conv.isna().to_numpy() & s.notna().to_numpy()
    if bad.any():
        bad_vals = s.astype(str).to_numpy()
        bad = bad & ~np.isin(np.char.strip(bad_vals.astype(str)), ["", "nan", "NaN", "NA"])
    if bad.any():
        pos = np.flatnonzero(bad)
        probs = [problem("a number", file=file, row=int(p) + row_base, column=col, value=s.iloc[p])
                 for p in pos[:20]]
        raise InputError(probs, total=int(pos.size),
                         summary=f"column {col!r} must be numeric; {pos.size} value(s) are not")
    return conv.to_numpy(dtype=float, na_value=np.nan)


def _design_columns(data: pd.DataFrame, parsed: ParsedFormula
                    ) -> tuple[np.ndarray, list[np.ndarray], list[str]]:
    """y (n,), the regressors as a list of (n,) float64 columns and their term names.

    Plain float64 columns are returned without a copy (read-only views).
    """
    cols = set(map(str, data.columns))

    def check(expr: str):
        for name in _identifiers(expr):
            if name not in cols:
                raise missing_column(name, data)

    plain = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*")
    # dependent variable
    if parsed.lhs in cols:
        y = numeric_column(data, parsed.lhs)
    else:
        check(parsed.lhs)
        y = _formulaic(data, parsed.lhs, intercept=False)[0]
        if y.shape[1] != 1:
            raise InputError(problem("a single numeric dependent variable", value=parsed.lhs))
        y = y[:, 0]
    columns, names = [], []
    if parsed.intercept:
        columns.append(np.ones(len(data)))
        names.append("(Intercept)")
    for term in parsed.rhs:
        factors = [f.strip() for f in term.split(":")]
        if all(f in cols for f in factors):
            v = numeric_column(data, factors[0])
            for f in factors[1:]:
                v = v * numeric_column(data, f)
            columns.append(v)
            names.append(term)
        else:
            if all(plain.fullmatch(f) for f in factors):
                missing = next(f for f in factors if f not in cols)
                raise missing_column(missing, data)
            check(term)
            mat, tnames = _formulaic(data, term, intercept=False)
            columns.extend(np.ascontiguousarray(mat[:, j]) for j in range(mat.shape[1]))
            names.extend(tnames)
    return y, columns, names


def _stack_columns(columns: list[np.ndarray], n: int, rows: np.ndarray | None = None) -> np.ndarray:
    """The columns (optionally only ``rows``, a boolean mask) as one Fortran-ordered matrix."""
    m = n if rows is None else int(rows.sum())
    X = np.empty((m, len(columns)), order="F")
    for j, c in enumerate(columns):
        X[:, j] = c if rows is None else c[rows]
    return X


def _design(data: pd.DataFrame, parsed: ParsedFormula) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """y (n,), X (n,k) and term names; plain columns and a:b products without formulaic."""
    y, columns, names = _design_columns(data, parsed)
    return y, _stack_columns(columns, len(data)), names


def _formulaic(data: pd.DataFrame, expr: str, intercept: bool):
    import formulaic

    spec = expr if intercept else f"{expr} - 1"
    try:
        mm = formulaic.model_matrix(spec, data, na_action="ignore", context=_CONTEXT)
    except Exception as err:  # formulaic raises many types for bad syntax/data
        raise InputError(problem(f"a valid formula term ({type(err).__name__}: {err})",
                                 value=expr)) from None
    try:
        mat = mm.to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError):
        raise InputError(problem("a term that evaluates to numbers", value=expr)) from None
    return mat, [str(c) for c in mm.columns]


def _codes(data: pd.DataFrame, spec: str) -> np.ndarray:
    """Integer codes (-1 = missing) for a fixed effect or cluster spec ``a`` or ``a^b``."""
    parts = [p.strip() for p in spec.split("^")]
    for p in parts:
        if p not in data.columns:
            raise missing_column(p, data)
    codes = pd.factorize(data[parts[0]], use_na_sentinel=True)[0].astype(np.int64)
    for p in parts[1:]:
        c2 = pd.factorize(data[p], use_na_sentinel=True)[0].astype(np.int64)
        combined = codes * (int(c2.max()) + 1 if c2.size else 1) + c2
        combined[(codes < 0) | (c2 < 0)] = -1
        codes = pd.factorize(combined, use_na_sentinel=True)[0].astype(np.int64)
        codes[combined < 0] = -1
    return codes


def _fast_codes(data: pd.DataFrame, spec: str) -> tuple[np.ndarray, int | None]:
    """Codes for ``spec`` as :func:`_codes`, faster for integer columns with a small range.

    An integer column whose values span at most ~4n (or 2**20) values is coded by offset
    + bincount + cumsum (codes in sorted order of the values, dense, no missing): returns
    (codes, number of levels). Otherwise falls back to :func:`_codes` and returns
    (codes, None) (the codes then may hold -1 and need not be dense).
    """
    if "^" not in spec and spec in data.columns:
        s = data[spec]
        if isinstance(s.dtype, np.dtype) and s.dtype.kind in "iu" and len(s):
            v = s.to_numpy()
            lo, hi = int(v.min()), int(v.max())
            span = hi - lo + 1
            if span <= max(4 * v.size, 1 << 20) and -(1 << 62) < lo and hi < (1 << 62):
                codes = v.astype(np.intp)
                if lo:
                    codes -= lo
                present = np.bincount(codes, minlength=span) > 0
                G = int(present.sum())
                if G < span:
                    remap = (np.cumsum(present) - 1).astype(np.intp)
                    np.take(remap, codes, out=codes)
                return codes, G
    return _codes(data, spec), None


def _refactor(codes: np.ndarray) -> tuple[np.ndarray, int]:
    """Renumber non-negative codes densely (0..G-1) in O(n), keeping their order."""
    if codes.size == 0:
        return codes.astype(np.intp), 0
    present = np.bincount(codes, minlength=int(codes.max()) + 1) > 0
    new = np.cumsum(present) - 1
    return new[codes].astype(np.intp, copy=False), int(present.sum())


def _drop_singletons(fe: list[np.ndarray]) -> np.ndarray:
    """Mask of rows kept after iteratively dropping singleton groups (reghdfe-style)."""
    keep = np.ones(fe[0].size, dtype=bool)
    while True:
        changed = False
        for c in fe:
            cnt = np.bincount(c[keep], minlength=int(c.max()) + 1)
            single = keep & (cnt[c] == 1)
            if single.any():
                keep &= ~single
                changed = True
        if not changed:
            return keep


def _independent_columns(XtX: np.ndarray, scale: np.ndarray, tol: float) -> list[int]:
    """Greedy left-to-right selection of columns not collinear with earlier ones."""
    kept: list[int] = []
    for j in range(XtX.shape[0]):
        if scale[j] <= 0:
            continue
        if kept:
            A = XtX[np.ix_(kept, kept)]
            b = XtX[kept, j]
            resid = XtX[j, j] - b @ np.linalg.solve(A, b)
        else:
            resid = XtX[j, j]
        if resid > tol * scale[j]:
            kept.append(j)
    return kept


def _cluster_meat(scores: np.ndarray, cl: np.ndarray, G: int) -> np.ndarray:
    S = np.empty((G, scores.shape[1]))
    for j in range(scores.shape[1]):
        S[:, j] = np.bincount(cl, weights=scores[:, j], minlength=G)
    return S.T @ S


def _nested(fe: np.ndarray, cl: np.ndarray, G_fe: int) -> bool:
    """True if every level of ``fe`` lies within a single cluster."""
    first = np.full(G_fe, -1, dtype=np.int64)
    first[fe] = cl  # any member's cluster
    return bool(np.all(first[fe] == cl))


def vcov_type(vcov: str | None, cluster: str | None) -> str:
    """The variance type a fit uses: ``vcov`` checked against ``cluster`` (default CR1 with a cluster,
    iid without)."""
    if vcov is None:
        vcov = "CR1" if cluster else "iid"
    if vcov not in VCOV_TYPES:
        raise InputError(problem(f"vcov one of {', '.join(VCOV_TYPES)}", value=vcov))
    if vcov in ("CR1", "CR0", "panelols") and not cluster:
        raise InputError(problem(f"vcov={vcov!r} needs a cluster column (cluster=...)", value=vcov))
    if cluster and vcov in ("iid", "hetero"):
        raise InputError(problem(f"cluster={cluster!r} given with vcov={vcov!r}; use vcov='CR1' "
                                 "(or 'CR0'/'panelols') for clustered standard errors", value=vcov))
    return vcov


def feols(data: pd.DataFrame, formula: str, *, cluster: str | None = None,
          weights: str | None = None, vcov: str | None = None, ssc: SSC | None = None,
          drop_singletons: bool = False, fe_tol: float = 1e-12, alpha: float = 0.05,
          absorb: str = "auto") -> FeolsResult:
    """OLS with absorbed fixed effects, as fixest's ``feols``.

    formula: ``"y ~ x1 + x2 + a:b | fe1 + fe2"``; terms other than columns and
    products go through formulaic (``C(g)``, ``log(x)``, ...). Rows with a missing
    value in any variable are dropped (noted). ``drop_singletons=False`` matches
    fixest (which keeps singletons); True drops them iteratively as reghdfe does.
    weights: column of analytic weights (minimise sum w e^2; zero-weight rows dropped).

    vcov (default "CR1" when ``cluster`` is given, otherwise "iid"):
      - "iid": RSS/(N-K) (X'X)^-1, the usual OLS/within-estimator SEs; K counts all
        fixed-effect levels (sum of levels minus one per extra effect); t with N-K df.
      - "hetero": HC1, N/(N-K) (fixest "hetero", Stata ", robust"); t with N-K df.
      - "CR1": one-way cluster-robust, G/(G-1) * (N-1)/(N-K) with K per fixest's
        fixef.K="nested" (effects nested in the clusters not counted); t with G-1 df
        (fixest/Stata default).
      - "CR0": cluster-robust with no small-sample correction; t with G-1 df.
      - "panelols": cluster-robust as linearmodels PanelOLS(...).fit(cov_type="clustered")
        with its defaults (debiased=True, count_effects=True, group_debias=False):
        N/(N - k - #FE params), all effect levels counted (nested or not), no G/(G-1);
        t with N - k - #FE params df.
    ssc: overrides the fixest-style correction pieces for "iid"/"hetero"/"CR1".
    absorb: how the fixed effects are absorbed. "auto" (default): exactly when there are
      one or two effects and the smaller of two has at most 200 levels (and S x L <= 50M
      cells; see :mod:`evaluation.estimators.twoway_exact`: school means + year dummies from
      sufficient statistics, no iteration), otherwise by alternating projections;
      "exact" or "alternating" force one (``details["absorb"]`` says which ran).
    """
    if not isinstance(data, pd.DataFrame):
        raise InputError(problem("a pandas DataFrame of data", value=type(data).__name__))
    parsed = parse_formula(formula)
    vcov = vcov_type(vcov, cluster)
    if absorb not in ("auto", "exact", "alternating"):
        raise InputError(problem("absorb one of 'auto', 'exact', 'alternating'", value=absorb))
    ssc = ssc or SSC()
    notes: list[str] = []

    y, xcols, names = _design_columns(data, parsed)
    n_all = len(data)
    ok = np.isfinite(y)
    for c in xcols:
        ok &= np.isfinite(c)
    fe_raw, fe_dense = [], []
    for f in parsed.fixed_effects:
        c, G_f = _fast_codes(data, f)
        fe_raw.append(c)
        fe_dense.append(G_f)
        if G_f is None:
            ok &= c >= 0
    cl_raw = None
    cl_dense = None
    if cluster:
        if cluster in parsed.fixed_effects:
            j = parsed.fixed_effects.index(cluster)
            cl_raw, cl_dense = fe_raw[j], fe_dense[j]
        else:
            cl_raw, cl_dense = _fast_codes(data, cluster)
        if cl_dense is None:
            ok &= cl_raw >= 0
    w = None
    n_zero = 0
    if weights:
        if weights not in data.columns:
            raise missing_column(weights, data, "weights column")
        w = numeric_column(data, weights)
        if np.any(w[np.isfinite(w)] < 0):
            pos = int(np.flatnonzero(np.isfinite(w) & (w < 0))[0])
            raise InputError(problem("non-negative weights", row=pos + 1, column=weights,
                                     value=data[weights].iloc[pos]))
        ok &= np.isfinite(w)
        n_zero = int(np.sum(ok & (w == 0)))
        ok &= w != 0
    n_ok = int(ok.sum())
    n_na = int(n_all - n_ok) - n_zero
    if n_na:
        notes.append(f"{n_na} observation(s) with missing values dropped")
    if n_zero:
        notes.append(f"{n_zero} observation(s) with zero weight dropped")
    sample = ok
    complete = n_ok == n_all
    if drop_singletons and fe_raw:
        fe_ok = [c if complete else c[sample] for c in fe_raw]
        keep = _drop_singletons(fe_ok)
        if not keep.all():
            idx = np.flatnonzero(sample)
            sample = sample.copy()
            sample[idx[~keep]] = False
            complete = False
            notes.append(f"{int((~keep).sum())} singleton observation(s) dropped")
    n = int(sample.sum())
    if n == 0:
        raise InputError(problem("at least one complete observation; every row has a missing value "
                                 "in a variable of the model", value=formula))
    if not complete:
        y = y[sample]
        xcols = [c[sample] for c in xcols]
    wv = None if w is None else (w if complete else w[sample])
    fe = []
    fe_sizes = {}
    for name, c, G_f in zip(parsed.fixed_effects, fe_raw, fe_dense):
        if complete and G_f is not None:
            codes = c
        else:
            codes, G_f = _refactor(c if complete else c[sample])
        fe.append(codes)
        fe_sizes[name] = G_f
    k_all = len(xcols)
    G = None
    cl = None
    if cluster:
        if complete and cl_dense is not None:
            cl, G = cl_raw, cl_dense
        else:
            cl, G = _refactor(cl_raw if complete else cl_raw[sample])
        if G < 2:
            raise InputError(problem("at least two clusters for clustered standard errors",
                                     column=cluster, value=G))
    nested = [_nested(c, cl, s) for c, s in zip(fe, fe_sizes.values())] if cluster else []
    if wv is None:
        raw_ss = np.array([float(c @ c) for c in xcols])
    else:
        raw_ss = np.array([float((c * wv) @ c) for c in xcols])

    from evaluation.estimators import twoway_exact as _tw

    sizes = list(fe_sizes.values())
    exact = bool(fe) and _tw.applies(sizes) and absorb != "alternating"
    if absorb == "exact" and not exact:
        raise InputError(problem("absorb='exact' needs one or two fixed effects, the smaller with at "
                                 f"most {_tw.MAX_SMALL_LEVELS} levels", value=sizes))
    meat = None
    if exact:
        ia = int(np.argmax(sizes)) if len(fe) == 2 else 0
        a_codes, S = fe[ia], sizes[ia]
        if len(fe) == 2:
            t_codes, L = fe[1 - ia], sizes[1 - ia]
        else:
            t_codes, L = None, 0
        zcols = [y] + xcols
        p1 = _tw.pass1(a_codes, t_codes, zcols, wv, S, L)
        zbar = _tw.means(p1)
        p2 = _tw.pass2(a_codes, t_codes, zcols, wv, zbar, L)
        sol = _tw.solve(p1, p2, raw_ss, _COLLINEAR_TOL, _independent_columns)
        kept = sol.kept_x
        resid = np.empty(n)
        p3 = _tw.pass3(a_codes, t_codes, zcols, wv, sol,
                       cl=cl if vcov in ("CR1", "CR0", "panelols") else None, G=G or 0,
                       nested=nested[ia] if cluster else True, hetero=vcov == "hetero",
                       residuals=resid)
        beta, bread, rss = sol.beta, sol.bread, p3["rss"]
        if vcov == "hetero":
            meat = p3["meat"]
        elif vcov != "iid":
            meat = _tw.cluster_meat(p3, sol)
        big, small = parsed.fixed_effects[ia], (parsed.fixed_effects[1 - ia] if L else None)
        absorbed = (f"exact two-way ({big} means + {small} dummies)" if small
                    else f"exact one-way ({big} means)")
    else:
        # absorb fixed effects by alternating projections
        YX = np.empty((n, k_all + 1), order="F")
        YX[:, 0] = y
        for j, c in enumerate(xcols):
            YX[:, 1 + j] = c
        if fe:
            YX = demean(YX, fe, weights=wv, tol=fe_tol)
        y_dm, X_dm = YX[:, 0], YX[:, 1:]
        sw = None if wv is None else np.sqrt(wv)
        Xw = X_dm if sw is None else X_dm * sw[:, None]
        yw = y_dm if sw is None else y_dm * sw
        XtX = Xw.T @ Xw
        kept = _independent_columns(XtX, raw_ss, _COLLINEAR_TOL)
        XtX = XtX[np.ix_(kept, kept)]
        Xw = Xw[:, kept]
        X_dm = X_dm[:, kept]
        if kept:
            bread = np.linalg.inv(XtX)
            beta = bread @ (Xw.T @ yw)
            resid = y_dm - X_dm @ beta
        else:
            bread = np.empty((0, 0))
            beta = np.empty(0)
            resid = y_dm.copy()
        ew = resid if sw is None else resid * sw
        rss = float(ew @ ew)
        if vcov != "iid":
            scores = Xw * ew[:, None]
            meat = scores.T @ scores if vcov == "hetero" else _cluster_meat(scores, cl, G)
        absorbed = "alternating projections" if len(fe) > 1 else \
            ("one-way (group means)" if fe else "none")
    return _finish(formula=formula, cluster=cluster, vcov=vcov, ssc=ssc, alpha=alpha, names=names,
                   kept=kept, beta=beta, bread=bread, meat=meat, rss=rss, n=n, fe_sizes=fe_sizes,
                   nested=nested, G=G, notes=notes, absorbed=absorbed, sample=sample,
                   residuals=resid)


def _finish(*, formula, cluster, vcov, ssc, alpha, names, kept, beta, bread, meat, rss, n,
            fe_sizes, nested, G, notes, absorbed, sample, residuals) -> FeolsResult:
    """Degrees of freedom, variance and the FeolsResult from the pieces of a fit.

    meat: sum of score outer products (hetero) or of cluster-summed scores (clustered);
    nested: for each fixed effect, whether it is nested in the clusters.
    """
    fe = list(fe_sizes)
    dropped = [names[j] for j in range(len(names)) if j not in kept]
    if dropped:
        notes.append("dropped for collinearity (with other regressors or the fixed effects): "
                     + ", ".join(dropped))
    names_k = [names[j] for j in kept]
    k = len(kept)

    # degrees of freedom
    n_fe_params = (sum(fe_sizes.values()) - (len(fe) - 1)) if fe else 0
    nparams = k + n_fe_params
    if ssc.fixef_K == "none":
        K = k
    elif ssc.fixef_K == "full" or not cluster or vcov == "panelols":
        K = nparams
    else:
        if fe and all(nested):
            K = k + 1
        else:
            K = nparams - sum(s - 1 for s, nst in zip(fe_sizes.values(), nested) if nst)
        K = max(K, k + 1) if any(nested) else K
    if n - (nparams if vcov in ("iid", "panelols") else K) <= 0:
        raise InputError(problem(f"more observations than parameters (there are {n} observations and "
                                 f"{nparams} parameters including fixed effects)", value=formula))

    # variance
    if vcov == "iid":
        sigma2 = rss / (n - K) if ssc.adj else rss / n
        V = sigma2 * bread
        corr = "RSS/(N-K)" if ssc.adj else "RSS/N"
        conv = VarianceConvention("iid", f"{corr} with K={K} (regressors + fixed-effect levels); "
                                  "the usual OLS / within-estimator standard errors", df=n - K)
    elif vcov == "hetero":
        factor = (n / (n - K)) if (ssc.adj and ssc.cluster_adj) else \
            ((n - 1) / (n - K) if ssc.adj else (n / (n - 1) if ssc.cluster_adj else 1.0))
        V = factor * bread @ meat @ bread
        conv = VarianceConvention("heteroskedasticity-robust",
                                  f"HC1: N/(N-K) with K={K} (fixest 'hetero', Stata robust)"
                                  if ssc.adj and ssc.cluster_adj else f"factor {factor:.6g}",
                                  df=n - K)
    else:
        V0 = bread @ meat @ bread
        if vcov == "panelols":
            df_resid = n - nparams
            factor = n / df_resid
            small = (f"linearmodels PanelOLS clustered (debiased, count_effects): N/(N-K) with "
                     f"K={nparams} = regressors + all fixed-effect levels, no G/(G-1)")
            df_t = df_resid
        elif vcov == "CR0":
            factor = 1.0
            small = "CR0: none"
            df_t = G - 1
        else:
            factor = 1.0
            pieces = []
            if ssc.cluster_adj:
                factor *= G / (G - 1)
                pieces.append("G/(G-1)")
            if ssc.adj:
                factor *= (n - 1) / (n - K)
                pieces.append(f"(N-1)/(N-K), K={K} (fixef.K='{ssc.fixef_K}')")
            small = "CR1: " + " * ".join(pieces) + " (fixest/Stata default)" if pieces else "none"
            df_t = G - 1 if ssc.t_df == "min" else n - K
        V = factor * V0
        conv = VarianceConvention("cluster-robust", small, cluster=cluster, n_clusters=G, df=df_t)
    V = (V + V.T) / 2
    se = np.sqrt(np.clip(np.diag(V), 0, None))
    table = estimate_table(names_k, beta, se, conv, alpha=alpha)
    n_units = next(iter(fe_sizes.values())) if fe_sizes else n
    details = {"formula": formula, "fixed_effects": fe_sizes, "dof_K": int(K),
               "n_params_with_fe": int(nparams), "dropped_collinear": dropped, "rss": rss,
               "absorb": absorbed}
    return FeolsResult(
        estimator="feols", variance=conv, n_obs=n, n_units=int(n_units), coefficients=table,
        notes=notes, details=details, formula=formula,
        params=pd.Series(beta, index=names_k), vcov=pd.DataFrame(V, index=names_k, columns=names_k),
        fe_sizes=fe_sizes, dof_K=int(K), rss=rss, sample=sample, residuals=residuals)
