"""Exact two-way fixed-effects OLS from additive sufficient statistics.

With at most two fixed effects of which the smaller, B (e.g. year), has few levels L,
the within fit needs no iteration. Write A for the big effect (e.g. school; dense codes
``a``, S levels), ``t`` for B's codes, Z = [y, X] (m = k + 1 columns) and w for the
analytic weights (None = 1). Absorbing A exactly is subtracting school means
(Ztilde = Z - Zbar[a]); B then enters as the L dummy columns absorbed by A,
``Dtilde_it = 1{t_i = t} - N_{a_i t} / W_{a_i}`` with cell weights N_st and school
weights W_s. Their cross products are exact from small matrices:

* Dtilde' W Ztilde: row t is the sum of w Ztilde over the rows in year t (a school's
  sum of w Ztilde is zero);
* Dtilde' W Dtilde = diag(N_t) - sum_s N_s N_s' / W_s (N_s: the school's row of N).

So three passes over the rows, each returning statistics that add over chunks of rows
or over partitions of a data set, give the fit:

1. :func:`pass1`: W_s, the school sums of wZ and the S x L cell weights;
2. :func:`pass2`: Ztilde' W Ztilde and Dtilde' W Ztilde (chunked: nothing n x m is kept);
3. :func:`pass3`: residuals e = ytilde - Xtilde beta - Dtilde gamma, the RSS and the
   variance ingredients (cluster sums of the scores or the heteroskedasticity-robust meat).

:func:`solve` regresses ytilde on [Dtilde, Xtilde] from the cross products, dropping
collinear columns greedily (year columns first, then X, as
``fixed_effects._independent_columns``), and returns beta, the year coefficients
gamma and Pi = (Dtilde'WDtilde)^-1 Dtilde'WXtilde. By Frisch-Waugh-Lovell the bread
is the inverse of the X block Xtilde'WXtilde - Xtilde'WDtilde Pi and the score of beta
for cluster g is

    S_g = sum_{i in g} w e Xtilde_i - Pi' sum_{i in g} w e Dtilde_i,

where sum_{i in g} w e Dtilde_it = sum_{i in g, t_i = t} w e - sum_s E_gs N_st / W_s and
E_gs = sum_{i in g, a_i = s} w e. E vanishes when schools are nested in the clusters
(a school's sum of w e is zero), so it is only formed (sparse, G x S) when they are not.
With one fixed effect, L = 0 and the D parts are empty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "CHUNK",
    "Solution",
    "applies",
    "cluster_meat",
    "combine",
    "demeaned",
    "means",
    "pass1",
    "pass2",
    "pass3",
    "solve",
]

#: rows per chunk in passes 2 and 3
CHUNK = 1 << 20
#: the exact path is used when the small effect has at most this many levels ...
MAX_SMALL_LEVELS = 200
#: ... and the S x L cell matrix at most this many cells
MAX_CELLS = 50_000_000


def applies(sizes: list[int]) -> bool:
    """True if a model with fixed effects of ``sizes`` levels can be fitted exactly here."""
    if len(sizes) == 1:
        return True
    if len(sizes) != 2:
        return False
    S, L = max(sizes), min(sizes)
    return L <= MAX_SMALL_LEVELS and S * L <= MAX_CELLS


def _chunks(n: int, chunk: int):
    for start in range(0, n, chunk):
        yield slice(start, min(n, start + chunk))


def demeaned(cols: list[np.ndarray], zbarT: np.ndarray, ac: np.ndarray, sl: slice,
             out: np.ndarray | None = None) -> np.ndarray:
    """(m, rows) array of cols[j][sl] - zbarT[j, ac] (school-demeaned chunk)."""
    rows = sl.stop - sl.start
    if out is None or out.shape[1] != rows:
        out = np.empty((len(cols), rows))
    for j, c in enumerate(cols):
        np.subtract(c[sl], np.take(zbarT[j], ac), out=out[j])
    return out


def combine(stats: list[dict]) -> dict:
    """Sum additive statistics (dicts of arrays/scalars/sparse matrices with the same keys)."""
    stats = [s for s in stats if s is not None]
    out = dict(stats[0])
    for s in stats[1:]:
        for key, v in s.items():
            if v is None:
                continue
            out[key] = v if out.get(key) is None else out[key] + v
    return out


def pass1(a: np.ndarray, t: np.ndarray | None, cols: list[np.ndarray], w: np.ndarray | None,
          S: int, L: int, chunk: int = CHUNK) -> dict:
    """Group sums: W (S,), the school sums of w*Z (S, m) and the cell weights N (S, L)."""
    n = a.shape[0]
    m = len(cols)
    W = np.zeros(S)
    sums = np.zeros((S, m))
    cell = np.zeros(S * L)
    for sl in _chunks(n, chunk):
        ac = a[sl]
        wc = None if w is None else w[sl]
        W += np.bincount(ac, weights=wc, minlength=S)
        for j, c in enumerate(cols):
            sums[:, j] += np.bincount(ac, weights=c[sl] if wc is None else c[sl] * wc, minlength=S)
        if L:
            cell += np.bincount(ac * L + t[sl], weights=wc, minlength=S * L)
    return {"W": W, "sums": sums, "cell": cell.reshape(S, L)}


def means(p1: dict) -> np.ndarray:
    W = p1["W"]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(W[:, None] > 0, p1["sums"] / np.where(W > 0, W, 1.0)[:, None], 0.0)


def pass2(a: np.ndarray, t: np.ndarray | None, cols: list[np.ndarray], w: np.ndarray | None,
          zbar: np.ndarray, L: int, chunk: int = CHUNK) -> dict:
    """Ztilde' W Ztilde (m, m) and Dtilde' W Ztilde (L, m), Ztilde = Z - zbar[a]."""
    m = len(cols)
    ZZ = np.zeros((m, m))
    DZ = np.zeros((L, m))
    zbarT = np.ascontiguousarray(zbar.T)
    buf = None
    for sl in _chunks(a.shape[0], chunk):
        Zc = buf = demeaned(cols, zbarT, a[sl], sl, buf)
        Zw = Zc if w is None else Zc * w[sl]
        ZZ += Zw @ Zc.T
        if L:
            tc = t[sl]
            for j in range(m):
                DZ[:, j] += np.bincount(tc, weights=Zw[j], minlength=L)
    return {"ZZ": ZZ, "DZ": DZ}


@dataclass
class Solution:
    kept_x: list[int]       # kept regressors (indices into X's columns)
    kept_d: list[int]       # kept year levels
    beta: np.ndarray        # (k_kept,)
    gamma: np.ndarray       # (L,) year coefficients, 0 for dropped levels
    Pi: np.ndarray          # (L, k_kept), 0 rows for dropped levels
    bread: np.ndarray       # inverse of the FWL Gram matrix of the kept regressors
    zbar: np.ndarray        # (S, m) school means of [y, X]
    c_gamma: np.ndarray     # (S,) (N_s . gamma) / W_s
    c_Pi: np.ndarray        # (S, k_kept) (N_s' Pi) / W_s
    cell_over_W: np.ndarray  # (S, L) N_st / W_s
    alpha: np.ndarray       # (S,) school effects


def solve(p1: dict, p2: dict, raw_ss: np.ndarray, tol: float, independent) -> Solution:
    """Regress ytilde on [Dtilde, Xtilde] from the statistics of passes 1 and 2.

    raw_ss: sum of w X_j^2 (the scale of the collinearity test, as feols); independent:
    ``fixed_effects._independent_columns``.
    """
    W, cell = p1["W"], p1["cell"]
    ZZ, DZ = p2["ZZ"], p2["DZ"]
    _S, L = cell.shape
    k = ZZ.shape[0] - 1
    zbar = means(p1)
    with np.errstate(divide="ignore", invalid="ignore"):
        invW = np.where(W > 0, 1.0 / np.where(W > 0, W, 1.0), 0.0)
    cW = cell * invW[:, None]
    Nt = cell.sum(axis=0)
    DD = np.diag(Nt) - cW.T @ cell
    DD = (DD + DD.T) / 2
    gram = np.zeros((L + k, L + k))
    gram[:L, :L] = DD
    gram[:L, L:] = DZ[:, 1:]
    gram[L:, :L] = DZ[:, 1:].T
    gram[L:, L:] = ZZ[1:, 1:]
    scale = np.concatenate([Nt, raw_ss])
    kept = independent(gram, scale, tol)
    kd = [j for j in kept if j < L]
    kx = [j - L for j in kept if j >= L]
    DDk = DD[np.ix_(kd, kd)]
    DXk = DZ[np.ix_(kd, [1 + j for j in kx])]
    Dy = DZ[kd, 0]
    XX = ZZ[np.ix_([1 + j for j in kx], [1 + j for j in kx])]
    Xy = ZZ[[1 + j for j in kx], 0]
    if kd:
        Pik = np.linalg.solve(DDk, DXk)
        XXf = XX - DXk.T @ Pik
        Xyf = Xy - Pik.T @ Dy
    else:
        Pik = np.zeros((0, len(kx)))
        XXf, Xyf = XX, Xy
    XXf = (XXf + XXf.T) / 2
    if kx:
        bread = np.linalg.inv(XXf)
        beta = bread @ Xyf
    else:
        bread = np.empty((0, 0))
        beta = np.empty(0)
    gamma = np.zeros(L)
    Pi = np.zeros((L, len(kx)))
    if kd:
        gamma[kd] = np.linalg.solve(DDk, Dy - DXk @ beta)
        Pi[kd] = Pik
    c_gamma = cW @ gamma
    alpha = zbar[:, 0] - zbar[:, [1 + j for j in kx]] @ beta - c_gamma
    return Solution(kx, kd, beta, gamma, Pi, bread, zbar, c_gamma, cW @ Pi, cW, alpha)


def pass3(a: np.ndarray, t: np.ndarray | None, cols: list[np.ndarray], w: np.ndarray | None,
          sol: Solution, *, cl: np.ndarray | None = None, G: int = 0, nested: bool = True,
          hetero: bool = False, residuals: np.ndarray | None = None, chunk: int = CHUNK) -> dict:
    """Residuals (written to ``residuals`` if given), RSS and variance ingredients.

    cl/G: cluster codes and count; then returns the cluster sums ``SX`` (G, k) of
    w e Xtilde, ``SD`` (G, L) of w e by year and, unless ``nested``, the sparse
    ``E`` (G, S) of w e by cluster and school. hetero: returns ``meat`` =
    sum w^2 e^2 Xcheck Xcheck', Xcheck = Xtilde - Dtilde Pi.
    """
    S, L = sol.cell_over_W.shape
    kx = sol.kept_x
    k = len(kx)
    zsel = [0] + [1 + j for j in kx]
    zbar = sol.zbar[:, zsel]
    ccols = [cols[j] for j in zsel]
    rss = 0.0
    SX = np.zeros((G, k)) if cl is not None else None
    SD = np.zeros(G * L) if cl is not None else None
    E = None
    meat = np.zeros((k, k)) if hetero else None
    zbarT = np.ascontiguousarray(zbar.T)
    buf = None
    for sl in _chunks(a.shape[0], chunk):
        ac = a[sl]
        Zc = buf = demeaned(ccols, zbarT, ac, sl, buf)
        Xt = Zc[1:]
        e = Zc[0] - sol.beta @ Xt
        if L:
            tc = t[sl]
            e -= np.take(sol.gamma, tc)
            e += np.take(sol.c_gamma, ac)
        if residuals is not None:
            residuals[sl] = e
        we = e if w is None else e * w[sl]
        rss += float(e @ we)
        if cl is not None:
            cc = cl[sl]
            for j in range(k):
                SX[:, j] += np.bincount(cc, weights=Xt[j] * we, minlength=G)
            if L:
                SD += np.bincount(cc * L + tc, weights=we, minlength=G * L)
                if not nested:
                    from scipy import sparse

                    Ec = sparse.coo_matrix((we, (cc, ac)), shape=(G, S)).tocsr()
                    E = Ec if E is None else E + Ec
        if hetero:
            Xc = Xt if not L else Xt - (np.take(sol.Pi, tc, axis=0) - np.take(sol.c_Pi, ac, axis=0)).T
            sc = Xc * we
            meat += sc @ sc.T
    out = {"rss": rss}
    if cl is not None:
        out.update(SX=SX, SD=SD.reshape(G, L), E=E)
    if hetero:
        out["meat"] = meat
    return out


def cluster_meat(p3: dict, sol: Solution) -> np.ndarray:
    """sum_g S_g S_g' from the cluster sums of :func:`pass3`."""
    scores = p3["SX"]
    L = sol.cell_over_W.shape[1]
    if L:
        SD = p3["SD"]
        if p3.get("E") is not None:
            SD = SD - np.asarray(p3["E"] @ sol.cell_over_W)
        scores = scores - SD @ sol.Pi
    return scores.T @ scores
