"""Honest DiD: sensitivity of an event study to violations of parallel trends.

Rambachan & Roth (2023, Review of Economic Studies, "A More Credible Approach to Parallel
Trends") bound the post-treatment violation of parallel trends ``delta_post`` by what the
pre-treatment coefficients show, and build confidence sets for ``theta = l' tau_post`` that are
valid under that bound. Two bounds, with the R package HonestDiD's default methods:

- relative magnitudes, Delta^RM(Mbar) (RR 2023 eq. 2.5): every post-period first difference of
  delta is at most Mbar times the largest pre-period first difference; confidence set by the
  conditional-least-favourable hybrid test ("C-LF") of Andrews, Roth & Pakes (2023, ARP), as
  ``createSensitivityResults_relativeMagnitudes`` computes it;
- smoothness, Delta^SD(M) (RR 2023 eq. 2.4): the slope of delta changes by at most M between
  consecutive periods; fixed-length confidence interval (FLCI, Armstrong & Kolesar 2018/2020;
  RR 2023 Sec. 4.1), as ``findOptimalFLCI`` computes it.

Conventions follow HonestDiD (R) so that its printed numbers reproduce: ``betahat`` stacks the
``num_pre`` pre-period coefficients (earliest first, the reference period omitted) and then the
``num_post`` post-period ones; the C-LF set is found on a grid of 1000 theta values over the
identified set at betahat widened by 20 sd(l'betahat_post) on each side (the current HonestDiD;
``grid="zero"`` gives the older [-20 sd, 20 sd]) with first-stage size kappa = alpha/10; the
least-favourable critical value and the folded-normal quantile of the FLCI are simulated
with R's own random numbers (Mersenne-Twister, ``set.seed(seed)``, inversion normals), so the
results equal R's draw for draw. The linear programs of the ARP test are solved exactly by
enumerating the vertices of their (small) dual polytope, which also gives the conditioning
bounds V^lo, V^up in closed form (ARP 2023, Sec. 5 / Appendix D).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import optimize, stats
from scipy.special import ndtr, ndtri

from evaluation.errors import InputError, problem

__all__ = [
    "HonestDiDResult",
    "original_ci",
    "relative_magnitudes_ci",
    "smoothness_flci",
    "breakdown_relative_magnitudes",
    "breakdown_smoothness",
    "sensitivity",
    "honest_did",
    "event_study_inputs",
]

GRID_POINTS = 1000  # HonestDiD's gridPoints for the conditional/hybrid confidence sets
LF_SIMS = 1000  # draws for the least-favourable critical value (HonestDiD: sims = 1000)
FOLDED_SIMS = 10**6  # draws for the folded-normal quantile (HonestDiD: numSims = 10^6)


# --------------------------------------------------------------------------------------
# R's random numbers (so simulated critical values equal HonestDiD's)
# --------------------------------------------------------------------------------------


class _RRandom:
    """R's default generator: Mersenne-Twister seeded by ``set.seed``, Inversion normals."""

    def __init__(self, seed: int):
        s = int(seed) & 0xFFFFFFFF
        for _ in range(50):  # R's initial scrambling (RNG.c, RNG_Init)
            s = (69069 * s + 1) & 0xFFFFFFFF
        key = np.empty(625, dtype=np.uint32)
        for j in range(625):
            s = (69069 * s + 1) & 0xFFFFFFFF
            key[j] = s
        self._bits = np.random.MT19937()  # key[0] is R's position slot, reset to 624
        self._bits.state = {"bit_generator": "MT19937", "state": {"key": key[1:], "pos": 624}}

    def unif(self, n: int) -> np.ndarray:
        u = self._bits.random_raw(n).astype(np.float64) * 2.3283064365386963e-10
        i2_32m1 = 2.328306437080797e-10
        u[u <= 0.0] = 0.5 * i2_32m1
        u[1.0 - u <= 0.0] = 1.0 - 0.5 * i2_32m1
        return u

    def rnorm(self, n: int) -> np.ndarray:
        u = self.unif(2 * n).reshape(n, 2)
        big = 134217728.0  # 2^27: R combines two uniforms for precision
        return ndtri((np.floor(big * u[:, 0]) + u[:, 1]) / big)


def _rmvnorm(n: int, sigma: np.ndarray, rng: _RRandom) -> np.ndarray:
    """mvtnorm::rmvnorm(n, sigma = sigma) with its default method = "eigen" (rows are draws)."""
    vals, vecs = np.linalg.eigh(sigma)
    root = (vecs * np.sqrt(np.maximum(vals, 0.0))) @ vecs.T
    z = rng.rnorm(n * sigma.shape[0]).reshape(n, sigma.shape[0])  # matrix(..., byrow = TRUE)
    return z @ root


# --------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------


def _check_inputs(betahat, sigma, num_pre, num_post, l_vec):
    b = np.asarray(betahat, dtype=float).ravel()
    s = np.asarray(sigma, dtype=float)
    if num_pre < 1 or num_post < 1:
        raise InputError(problem("at least one pre-period and one post-period coefficient",
                                 value=f"num_pre={num_pre}, num_post={num_post}"))
    if len(b) != num_pre + num_post:
        raise InputError(problem(f"betahat of length num_pre + num_post = {num_pre + num_post}",
                                 value=len(b)))
    if s.shape != (len(b), len(b)):
        raise InputError(problem(f"sigma of shape {len(b)} x {len(b)}", value=s.shape))
    if not (np.isfinite(b).all() and np.isfinite(s).all()):
        raise InputError(problem("finite coefficients and covariances (no NaN)"))
    if not np.allclose(s, s.T, rtol=1e-8, atol=1e-14 * max(1.0, np.abs(s).max())):
        raise InputError(problem("a symmetric covariance matrix sigma"))
    s = (s + s.T) / 2
    if np.linalg.eigvalsh(s).min() < -1e-10 * max(np.abs(s).max(), 1e-300):
        raise InputError(problem("a positive semi-definite covariance matrix sigma"))
    lv = np.zeros(num_post) if l_vec is None else np.asarray(l_vec, dtype=float).ravel()
    if l_vec is None:
        lv[0] = 1.0
    if len(lv) != num_post or not np.isfinite(lv).all() or not np.any(lv != 0):
        raise InputError(problem(f"l_vec: {num_post} finite weights on the post periods, not all 0",
                                 value=None if l_vec is None else list(np.ravel(l_vec))))
    return b, s, lv


# --------------------------------------------------------------------------------------
# Original confidence interval
# --------------------------------------------------------------------------------------


def original_ci(betahat, sigma, num_pre: int, num_post: int, *, l_vec=None,
                alpha: float = 0.05) -> dict:
    """The conventional CI for theta = l'beta_post (HonestDiD ``constructOriginalCS``)."""
    b, s, lv = _check_inputs(betahat, sigma, num_pre, num_post, l_vec)
    post = slice(num_pre, num_pre + num_post)
    est = float(lv @ b[post])
    se = float(np.sqrt(lv @ s[post, post] @ lv))
    z = stats.norm.ppf(1 - alpha / 2)
    return {"estimate": est, "se": se, "lb": est - z * se, "ub": est + z * se}


# --------------------------------------------------------------------------------------
# ARP conditional / least-favourable hybrid test with nuisance parameters
# --------------------------------------------------------------------------------------


def _dual_vertices(W: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """Vertices of {g >= 0 : W'g = e1}, the dual of min eta s.t. y - X d <= eta sd (W = [sd, X]).

    The primal value is eta(y) = max over these vertices of g'y (LP duality), so one
    enumeration serves every theta on the grid and every simulated draw.
    """
    k, q = W.shape
    e1 = np.zeros(q)
    e1[0] = 1.0
    r = np.linalg.matrix_rank(W)
    verts = []
    for rows in itertools.combinations(range(k), r):
        sub = W[list(rows)]  # r x q
        if np.linalg.matrix_rank(sub) < r:
            continue
        g_b, *_ = np.linalg.lstsq(sub.T, e1, rcond=None)
        if np.abs(sub.T @ g_b - e1).max() > 1e-8 or g_b.min() < -tol:
            continue
        g = np.zeros(k)
        g[list(rows)] = np.maximum(g_b, 0.0)
        if not any(np.abs(g - v).max() <= 1e-9 * max(1.0, np.abs(g).max()) for v in verts):
            verts.append(g)
    return np.array(verts).reshape(len(verts), k)


def _truncnorm_ppf(p: float, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Quantile of N(0, 1) truncated to [lo, hi] (TruncatedNormal::norminvp)."""
    lo = np.asarray(lo, dtype=float)
    hi = np.asarray(hi, dtype=float)
    out = np.empty(np.broadcast(lo, hi).shape)
    if out.size:
        out[...] = stats.truncnorm.ppf(p, lo, hi)
    return out


def _lf_cv_nuisance(V: np.ndarray, sigma: np.ndarray, kappa: float, seed: int) -> float:
    """Least-favourable critical value (ARP 2023 Sec. 6.2): the 1-kappa quantile of eta(xi)."""
    if len(V) == 0:
        return np.inf
    xi = _rmvnorm(LF_SIMS, sigma, _RRandom(seed))
    eta = (xi @ V.T).max(axis=1)
    return float(np.quantile(eta, 1 - kappa))  # R quantile type 7


def _arp_hybrid_accept(Y, a1, X, sigma, theta, alpha, kappa, lf_cv, hybrid: str) -> np.ndarray:
    """ARP (2023) conditional test (hybrid "LF" or plain "ARP") of E[Y - a1 theta - X d] <= 0
    for each theta on a grid; returns 1 where theta is not rejected."""
    sd = np.sqrt(np.diag(sigma))
    V = _dual_vertices(np.column_stack([sd, X]))
    if len(V) == 0:  # primal LP unbounded: HonestDiD does not reject
        return np.ones(len(theta))
    y = Y[:, None] - a1[:, None] * theta[None, :]  # k x G
    vals = V @ y
    best = vals.argmax(axis=0)
    eta = vals.max(axis=0)
    accept = np.ones(len(theta))
    if hybrid == "LF":
        size = (alpha - kappa) / (1 - kappa)
        first = eta > lf_cv
        accept[first] = 0.0
    else:
        size = alpha
        first = np.zeros(len(theta), dtype=bool)
    for j in np.unique(best[~first]):
        cols = np.flatnonzero((best == j) & ~first)
        g = V[j]
        s2 = float(g @ sigma @ g)
        if s2 < np.finfo(float).eps:
            accept[cols] = (eta[cols] <= 0).astype(float)
            continue
        b = sigma @ g / s2
        s_part = y[:, cols] - np.outer(b, g @ y[:, cols])  # the part of y independent of g'y
        num = V @ s_part
        den = 1.0 - V @ b
        up_rows, lo_rows = den < -1e-12, den > 1e-12
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = num / den[:, None]
        vlo = ratio[lo_rows].max(axis=0) if lo_rows.any() else np.full(len(cols), -np.inf)
        vup = ratio[up_rows].min(axis=0) if up_rows.any() else np.full(len(cols), np.inf)
        if hybrid == "LF":
            vup = np.minimum(vup, lf_cv)
        sb = np.sqrt(s2)
        zlo, zup, stat = vlo / sb, vup / sb, eta[cols] / sb
        inside = (zlo <= stat) & (stat <= zup)
        rej = np.zeros(len(cols), dtype=bool)
        if inside.any():
            cval = np.maximum(0.0, _truncnorm_ppf(1 - size, zlo[inside], zup[inside]))
            rej[inside] = stat[inside] > cval
        accept[cols] = (~rej).astype(float)
    return accept


def _construct_gamma(l_vec: np.ndarray) -> np.ndarray:
    """Invertible matrix with l' as first row: pivot columns of rref([l, I]) (HonestDiD)."""
    n = len(l_vec)
    B = np.column_stack([l_vec, np.eye(n)])
    chosen = []
    for j in range(B.shape[1]):
        trial = chosen + [j]
        if np.linalg.matrix_rank(B[:, trial]) == len(trial):
            chosen = trial
        if len(chosen) == n:
            break
    return B[:, chosen].T


# --------------------------------------------------------------------------------------
# Delta^RM(Mbar): relative magnitudes, C-LF confidence set
# --------------------------------------------------------------------------------------


def _create_A_RM(num_pre: int, num_post: int, mbar: float, s: int, max_positive: bool) -> np.ndarray:
    """Rows A with A delta <= 0 iff delta in Delta^RM_{s,sign}(Mbar) (HonestDiD .create_A_RM).

    Delta^RM(Mbar) (RR 2023 eq. 2.5) is the union over the pre-period s attaining the largest
    first difference and its sign of these polyhedra.
    """
    n = num_pre + num_post
    Atilde = np.zeros((n, n + 1))
    for r in range(n):
        Atilde[r, r:r + 2] = (-1.0, 1.0)
    v = np.zeros(n + 1)
    v[num_pre + s - 1:num_pre + s + 1] = (-1.0, 1.0)
    if not max_positive:
        v = -v
    A_ub = np.vstack([np.tile(v, (num_pre, 1)), np.tile(mbar * v, (num_post, 1))])
    A = np.vstack([Atilde - A_ub, -Atilde - A_ub])
    A = A[(A * A).sum(axis=1) > 1e-10]
    return np.delete(A, num_pre, axis=1)  # drop the reference period (t = 0)


def _rm_accept_fixed_s(b, sig, num_pre, num_post, lv, mbar, s, max_positive, theta, alpha,
                       kappa, seed, hybrid):
    A = _create_A_RM(num_pre, num_post, mbar, s, max_positive)
    post_cols = slice(num_pre, num_pre + num_post)
    if num_post > 1:
        rows = np.flatnonzero((A[:, post_cols] != 0).any(axis=1))  # postPeriodMomentsOnly
        gamma_inv = np.linalg.inv(_construct_gamma(lv))
        AG = A[:, post_cols] @ gamma_inv
        Y = (A @ b)[rows]
        sigY = (A @ sig @ A.T)[np.ix_(rows, rows)]
        X = AG[rows, 1:]
        V = _dual_vertices(np.column_stack([np.sqrt(np.diag(sigY)), X]))
        lf_cv = _lf_cv_nuisance(V, sigY, kappa, seed) if hybrid == "LF" else np.inf
        return _arp_hybrid_accept(Y, AG[rows, 0], X, sigY, theta, alpha, kappa, lf_cv, hybrid)
    # one post period: HonestDiD's no-nuisance test on the moments involving it
    A = A[A[:, -1] != 0]
    sigY = A @ sig @ A.T
    sdY = np.sqrt(np.diag(sigY))
    lf_cv = np.inf
    if hybrid == "LF":
        xi = _rmvnorm(LF_SIMS, sigY, _RRandom(seed)) / sdY
        lf_cv = float(np.quantile(xi.max(axis=1), 1 - kappa))
    return _no_nuisance_accept(b, sig, A, num_pre, theta / lv[0], alpha, lf_cv, hybrid)


def _no_nuisance_accept(b, sig, A, num_pre, theta, alpha, lf_cv, hybrid) -> np.ndarray:
    """ARP test without nuisance parameters (HonestDiD .testInIdentifiedSet[_LF_Hybrid], d = 0).

    Conditions on the location of the largest studentised moment; V^lo, V^up from the
    polyhedral lemma (Lee et al. 2016, as HonestDiD's .VLoVUpFN).
    """
    sdY = np.sqrt(np.diag(A @ sig @ A.T))
    At = A / sdY[:, None]
    e = np.zeros(len(b))
    e[num_pre] = 1.0
    y = b[:, None] - e[:, None] * theta[None, :]
    moments = At @ y
    loc = moments.argmax(axis=0)
    mx = moments.max(axis=0)
    accept = np.ones(len(theta))
    for j in np.unique(loc):
        cols = np.flatnonzero(loc == j)
        if hybrid == "LF":
            rej_first = mx[cols] > lf_cv
            accept[cols[rej_first]] = 0.0
            cols = cols[~rej_first]
            if not len(cols):
                continue
        g = At[j]
        s2 = float(g @ sig @ g)
        c = sig @ g / s2
        Abar = At - At[j][None, :]
        z = y[:, cols] - np.outer(c, g @ y[:, cols])
        ac = Abar @ c
        with np.errstate(divide="ignore", invalid="ignore"):
            obj = (-(Abar @ z)) / ac[:, None]
        vlo = obj[ac < 0].max(axis=0) if (ac < 0).any() else np.full(len(cols), -np.inf)
        vup = obj[ac > 0].min(axis=0) if (ac > 0).any() else np.full(len(cols), np.inf)
        sb = np.sqrt(s2)
        crit = sb * _truncnorm_ppf(1 - alpha, vlo / sb, vup / sb)
        accept[cols] = (~(mx[cols] > crit)).astype(float)
    return accept


def _idset_rm(b, num_pre, num_post, lv, mbar) -> tuple[float, float]:
    """Identified set for l'tau_post under Delta^RM(Mbar) at beta = betahat (HonestDiD
    .compute_IDset_DeltaRM): the union over (s, sign) of [l'b_post - max l'delta_post,
    l'b_post - min l'delta_post] subject to delta_pre = b_pre and the RM constraints."""
    from scipy.optimize import linprog

    pe = float(lv @ b[num_pre:])
    f = np.concatenate([np.zeros(num_pre), lv])
    a_eq = np.hstack([np.eye(num_pre), np.zeros((num_pre, num_post))])
    bounds = [(None, None)] * (num_pre + num_post)
    lbs, ubs = [], []
    for s in range(-(num_pre - 1), 1):
        for positive in (True, False):
            A = _create_A_RM(num_pre, num_post, mbar, s, positive)
            kw = dict(A_ub=A, b_ub=np.zeros(len(A)), A_eq=a_eq, b_eq=b[:num_pre], bounds=bounds,
                      method="highs")
            hi, lo = linprog(-f, **kw), linprog(f, **kw)
            if hi.status == 0 and lo.status == 0:
                lbs.append(pe + hi.fun)
                ubs.append(pe - lo.fun)
            else:
                lbs.append(pe)
                ubs.append(pe)
    return min(lbs), max(ubs)


def _theta_grid(b, sig, num_pre, num_post, lv, mbar, grid, grid_points, grid_lb, grid_ub):
    post = slice(num_pre, num_pre + num_post)
    sd_theta = float(np.sqrt(lv @ sig[post, post] @ lv))
    if grid == "idset":
        id_lb, id_ub = _idset_rm(b, num_pre, num_post, lv, mbar)
    elif grid == "zero":
        id_lb = id_ub = 0.0
    else:
        raise InputError(problem("grid 'idset' or 'zero'", value=grid))
    lo = id_lb - 20 * sd_theta if grid_lb is None else float(grid_lb)
    hi = id_ub + 20 * sd_theta if grid_ub is None else float(grid_ub)
    return np.linspace(lo, hi, int(grid_points))


def relative_magnitudes_ci(betahat, sigma, num_pre: int, num_post: int, mbar: float, *,
                           l_vec=None, alpha: float = 0.05, method: str = "C-LF",
                           grid_points: int = GRID_POINTS, grid_lb: float | None = None,
                           grid_ub: float | None = None, grid: str = "idset",
                           seed: int = 0) -> dict:
    """Confidence set for theta = l'tau_post under Delta^RM(Mbar) (RR 2023 Sec. 2.4.1, eq. 2.5).

    method "C-LF" (HonestDiD's default): ARP conditional-least-favourable hybrid with
    kappa = alpha/10; "Conditional": the ARP conditional test. The set is the union over the
    period s of the largest pre-period first difference and its sign (HonestDiD
    ``computeConditionalCS_DeltaRM``). Returns lb/ub (the extreme accepted grid points; NaN if
    none), whether the accepted set is an interval on the grid and open at a grid end.

    The theta grid has ``grid_points`` values over [id_lb - 20 sd, id_ub + 20 sd], sd the
    standard error of l'betahat_post and [id_lb, id_ub] the identified set at beta = betahat
    (grid="idset": the current HonestDiD, whose README prints [0.0241, 0.0673] for the
    Medicaid example at Mbar = 0.5), or over [-20 sd, 20 sd] (grid="zero": HonestDiD before
    that change, README [0.0240, 0.0672]). ``grid_lb``/``grid_ub`` override either end.
    """
    b, sig, lv = _check_inputs(betahat, sigma, num_pre, num_post, l_vec)
    if mbar < 0:
        raise InputError(problem("Mbar >= 0", value=mbar))
    hybrid = {"C-LF": "LF", "Conditional": "ARP"}.get(method)
    if hybrid is None:
        raise InputError(problem("method 'C-LF' or 'Conditional'", value=method))
    theta = _theta_grid(b, sig, num_pre, num_post, lv, mbar, grid, grid_points, grid_lb,
                        grid_ub)
    kappa = alpha / 10
    accept = np.zeros(len(theta))
    for s in range(-(num_pre - 1), 1):
        for positive in (True, False):
            acc = _rm_accept_fixed_s(b, sig, num_pre, num_post, lv, mbar, s, positive, theta,
                                     alpha, kappa, seed, hybrid)
            accept = np.maximum(accept, acc)
    return _grid_summary(theta, accept, mbar=float(mbar), method=method)


def _grid_summary(theta, accept, **extra) -> dict:
    idx = np.flatnonzero(accept > 0)
    out = dict(extra)
    if not len(idx):
        out.update(lb=np.nan, ub=np.nan, interval=True, open_at_end=False)
        return out
    out.update(lb=float(theta[idx[0]]), ub=float(theta[idx[-1]]),
               interval=bool(idx[-1] - idx[0] + 1 == len(idx)),
               open_at_end=bool(accept[0] > 0 or accept[-1] > 0))
    return out


# --------------------------------------------------------------------------------------
# Delta^SD(M): smoothness, FLCI
# --------------------------------------------------------------------------------------


class _FLCIProblem:
    """Affine estimators l_pre'beta_pre + l'beta_post, parametrised as in HonestDiD's flci.R.

    w are the pre-period weights in "w space" (l_pre = T w, T = I - subdiagonal), sum(w) =
    sum_t t l_t, and the worst-case bias over Delta^SD(1) is const + sum_i |cumsum(w)_i|
    (Armstrong & Kolesar; RR 2023 Sec. 4.1 and Appendix).
    """

    def __init__(self, sig, num_pre, num_post, lv):
        K = num_pre
        T = np.eye(K)
        for c in range(K - 1):
            T[c + 1, c] = -1.0
        self.T = T
        pre, post = slice(0, K), slice(K, K + num_post)
        self.Q = T.T @ sig[pre, pre] @ T
        self.a = T.T @ sig[pre, post] @ lv  # var = w'Qw + 2 a'w + c0
        self.c0 = float(lv @ sig[post, post] @ lv)
        t = np.arange(1, num_post + 1)
        self.total = float(t @ lv)
        self.const = float(sum(abs(np.arange(1, s + 1) @ lv[num_post - s:])
                               for s in range(1, num_post + 1)) - self.total)
        self.K = K
        self.L = np.tril(np.ones((K, K)))  # cumsum

    def var(self, w):
        return float(w @ self.Q @ w + 2 * self.a @ w + self.c0)

    def h0(self) -> float:
        w = np.zeros(self.K)
        w[-1] = self.total
        return np.sqrt(max(self.var(w), 0.0))

    def h_min(self):
        K = self.K
        kkt = np.zeros((K + 1, K + 1))
        kkt[:K, :K] = 2 * self.Q
        kkt[:K, K] = 1.0
        kkt[K, :K] = 1.0
        rhs = np.concatenate([-2 * self.a, [self.total]])
        sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
        w = sol[:K]
        return np.sqrt(max(self.var(w), 0.0)), w

    def w_from_z(self, z_head):
        z = np.append(z_head, self.total)  # cumulative sums; the last equals sum(w)
        return np.diff(np.concatenate([[0.0], z]))

    def min_bias(self, h: float, w_start: np.ndarray) -> tuple[float, np.ndarray]:
        """Least worst-case bias (per unit M) among estimators with sd <= h."""
        K = self.K
        if K == 1:
            return self.const + abs(self.total), np.array([self.total])
        scale = h * h
        z0 = (self.L @ w_start)[:-1]
        x0 = np.concatenate([np.maximum(z0, 0), np.maximum(-z0, 0)])

        def w_of(x):
            return self.w_from_z(x[:K - 1] - x[K - 1:])

        cons = [{"type": "ineq", "fun": lambda x: 1.0 - self.var(w_of(x)) / scale,
                 "jac": lambda x: self._var_jac(x, scale)}]
        res = optimize.minimize(lambda x: x.sum(), x0, jac=lambda x: np.ones_like(x),
                                method="SLSQP", bounds=[(0, None)] * (2 * (K - 1)),
                                constraints=cons, options={"ftol": 1e-15, "maxiter": 1000})
        w = w_of(res.x)
        return self.const + float(np.abs(self.L @ w).sum()), w

    def _var_jac(self, x, scale):
        K = self.K
        w = self.w_from_z(x[:K - 1] - x[K - 1:])
        gw = 2 * self.Q @ w + 2 * self.a  # d var / d w
        # w = D z with z = (z_head, total): d w / d z_head
        D = np.eye(K) - np.eye(K, k=-1)
        gz = (D.T @ gw)[:K - 1]
        return -np.concatenate([gz, -gz]) / scale


class _FoldedNormal:
    """Quantile of |N(mu, 1)|: HonestDiD simulates it with 10^6 draws after set.seed(seed)."""

    def __init__(self, simulate: bool, seed: int):
        self.simulate = simulate
        self.draws = _RRandom(seed).rnorm(FOLDED_SIMS) if simulate else None

    def quantile(self, p: float, mu: float) -> float:
        if self.simulate:
            return float(np.quantile(np.abs(self.draws + mu), p))
        mu = abs(mu)
        return float(optimize.brentq(lambda q: ndtr(q - mu) - ndtr(-q - mu) - p, 0.0, mu + 10.0,
                                     xtol=1e-14))


def smoothness_flci(betahat, sigma, num_pre: int, num_post: int, m: float, *, l_vec=None,
                    alpha: float = 0.05, seed: int = 0, simulate_quantile: bool = True,
                    _folded: _FoldedNormal | None = None) -> dict:
    """Optimal FLCI for theta = l'tau_post under Delta^SD(M) (RR 2023 Sec. 4.1; HonestDiD
    ``findOptimalFLCI``): the affine estimator minimising the half-length
    h * q_{1-alpha}(|N(M bias(h)/h, 1)|) over its standard deviation h in [h_min, h_0].

    simulate_quantile=True uses HonestDiD's simulated folded-normal quantile (R draws, seed);
    False the exact quantile.
    """
    b, sig, lv = _check_inputs(betahat, sigma, num_pre, num_post, l_vec)
    if m < 0:
        raise InputError(problem("M >= 0", value=m))
    prob = _FLCIProblem(sig, num_pre, num_post, lv)
    folded = _folded or _FoldedNormal(simulate_quantile, seed)
    exact = _FoldedNormal(False, seed)
    h0 = prob.h0()
    h_min, w_min = prob.h_min()
    if m == 0 or h0 <= h_min * (1 + 1e-12):
        h_star, w_star = h_min, w_min
        bias = 0.0 if m == 0 else m * (prob.const + float(np.abs(prob.L @ w_min).sum()))
    else:
        cache = {}

        def bias_at(h):
            if h not in cache:
                cache[h] = prob.min_bias(h, w_min if h < (h_min + h0) / 2 else _w0(prob))
            return cache[h]

        def half(h):
            bb, _ = bias_at(h)
            return h * exact.quantile(1 - alpha, m * bb / h)

        res = optimize.minimize_scalar(half, bounds=(h_min, h0), method="bounded",
                                       options={"xatol": 1e-7 * h0})
        h_star = float(res.x)
        for cand in (h_min, h0):  # convex on [h_min, h0]: check the ends too
            if half(cand) < half(h_star):
                h_star = cand
        bb, w_star = bias_at(h_star)
        bias = m * bb
    half_length = h_star * folded.quantile(1 - alpha, bias / h_star)
    l_pre = prob.T @ w_star
    centre = float(l_pre @ b[:num_pre] + lv @ b[num_pre:])
    return {"m": float(m), "lb": centre - half_length, "ub": centre + half_length,
            "estimate": centre, "half_length": float(half_length), "sd": float(h_star),
            "max_bias": float(bias), "l_pre": l_pre, "method": "FLCI"}


def _w0(prob: _FLCIProblem) -> np.ndarray:
    w = np.zeros(prob.K)
    w[-1] = prob.total
    return w


# --------------------------------------------------------------------------------------
# Breakdown values
# --------------------------------------------------------------------------------------


def _excludes_zero(ci: dict) -> bool:
    return bool(np.isfinite(ci["lb"]) and (ci["lb"] > 0 or ci["ub"] < 0))


def _breakdown(ci_at, upper: float, tol: float) -> float | None:
    """Largest x with ci_at(x) excluding 0, by doubling then bisection (CI widens in x)."""
    if not _excludes_zero(ci_at(0.0)):
        return None
    lo, hi = 0.0, upper
    while _excludes_zero(ci_at(hi)):
        lo, hi = hi, 2 * hi
        if hi > 1e6 * upper:
            return np.inf
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if _excludes_zero(ci_at(mid)):
            lo = mid
        else:
            hi = mid
    return lo


def breakdown_relative_magnitudes(betahat, sigma, num_pre: int, num_post: int, *, l_vec=None,
                                  alpha: float = 0.05, tol: float = 0.01, **kw) -> float | None:
    """Breakdown Mbar (RR 2023 Sec. 5): the largest Mbar whose C-LF set excludes 0, to ``tol``.

    None if even Mbar = 0 does not exclude 0.
    """
    return _breakdown(lambda x: relative_magnitudes_ci(betahat, sigma, num_pre, num_post, x,
                                                       l_vec=l_vec, alpha=alpha, **kw), 1.0, tol)


def breakdown_smoothness(betahat, sigma, num_pre: int, num_post: int, *, l_vec=None,
                         alpha: float = 0.05, tol: float | None = None, seed: int = 0,
                         simulate_quantile: bool = True) -> float | None:
    """Breakdown M: the largest M whose FLCI excludes 0 (to ``tol``, default sd(theta)/1000)."""
    b, sig, lv = _check_inputs(betahat, sigma, num_pre, num_post, l_vec)
    sd_theta = float(np.sqrt(lv @ sig[num_pre:, num_pre:] @ lv))
    folded = _FoldedNormal(simulate_quantile, seed)
    return _breakdown(lambda x: smoothness_flci(b, sig, num_pre, num_post, x, l_vec=lv,
                                                alpha=alpha, _folded=folded),
                      sd_theta, sd_theta / 1000 if tol is None else tol)


# --------------------------------------------------------------------------------------
# Result and entry points
# --------------------------------------------------------------------------------------


@dataclass
class HonestDiDResult:
    """Sensitivity of theta = l'tau_post to violations of parallel trends.

    original: the conventional CI (estimate, se, lb, ub).
    relative_magnitudes: rows Mbar, lb, ub, method ("C-LF"), interval (accepted grid points
        contiguous), open_at_end (accepted at an end of the theta grid: widen the grid).
    smoothness: rows M, lb, ub, method ("FLCI"), estimate, half_length, max_bias.
    breakdown_mbar / breakdown_m: largest Mbar / M whose CI excludes 0 (None: not even at 0).
    """

    betahat: np.ndarray
    sigma: np.ndarray
    num_pre: int
    num_post: int
    l_vec: np.ndarray
    alpha: float
    original: dict
    relative_magnitudes: pd.DataFrame
    smoothness: pd.DataFrame
    breakdown_mbar: float | None = None
    breakdown_m: float | None = None
    terms: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        def rows(df):
            return [{k: (v if not isinstance(v, (np.floating, np.integer, np.bool_)) else v.item())
                     for k, v in r.items()} for r in df.to_dict("records")]

        return {"method": "Rambachan & Roth (2023) honest DiD (HonestDiD conventions)",
                "num_pre": self.num_pre, "num_post": self.num_post,
                "l_vec": [float(x) for x in self.l_vec], "alpha": self.alpha,
                "terms": list(self.terms), "original": dict(self.original),
                "relative_magnitudes": rows(self.relative_magnitudes),
                "smoothness": rows(self.smoothness),
                "breakdown_mbar": self.breakdown_mbar, "breakdown_m": self.breakdown_m,
                "notes": list(self.notes)}

    def summary(self) -> str:
        o = self.original
        lines = [f"Honest DiD for theta = l'tau_post, l = {list(np.round(self.l_vec, 6))} "
                 f"({self.num_pre} pre, {self.num_post} post periods), {100 * (1 - self.alpha):g}% sets",
                 f"Original: {o['estimate']:.6g} (SE {o['se']:.6g}), CI [{o['lb']:.6g}, {o['ub']:.6g}]"]
        if len(self.relative_magnitudes):
            lines.append("Relative magnitudes (C-LF):")
            for r in self.relative_magnitudes.itertuples():
                lines.append(f"  Mbar = {r.Mbar:g}: [{r.lb:.6g}, {r.ub:.6g}]")
            lines.append(f"  breakdown Mbar: {_fmt(self.breakdown_mbar)}")
        if len(self.smoothness):
            lines.append("Smoothness (FLCI):")
            for r in self.smoothness.itertuples():
                lines.append(f"  M = {r.M:g}: [{r.lb:.6g}, {r.ub:.6g}]")
            lines.append(f"  breakdown M: {_fmt(self.breakdown_m)}")
        lines.extend(f"Note: {n}" for n in self.notes)
        return "\n".join(lines)


def _fmt(x):
    return "none (0 not excluded even without violations)" if x is None else f"{x:.4g}"


def sensitivity(betahat, sigma, num_pre: int, num_post: int, *, l_vec=None,
                mbar=(0.5, 1, 1.5, 2), m=(0, 0.01, 0.02, 0.03, 0.04, 0.05), alpha: float = 0.05,
                breakdown: bool = True, grid_points: int = GRID_POINTS, rm_grid: str = "idset",
                seed: int = 0, terms=()) -> HonestDiDResult:
    """Relative-magnitudes (C-LF) and smoothness (FLCI) sets plus the original CI.

    ``m`` is in the units of the outcome per period squared (a change in slope); pass ``()``
    to skip either analysis. ``rm_grid``: the theta grid convention of
    :func:`relative_magnitudes_ci` ("idset", current HonestDiD; "zero", older versions).
    """
    b, sig, lv = _check_inputs(betahat, sigma, num_pre, num_post, l_vec)
    notes = []
    rm_rows = []
    for mb in mbar:
        ci = relative_magnitudes_ci(b, sig, num_pre, num_post, float(mb), l_vec=lv, alpha=alpha,
                                    grid_points=grid_points, grid=rm_grid, seed=seed)
        rm_rows.append({"Mbar": float(mb), "lb": ci["lb"], "ub": ci["ub"], "method": "C-LF",
                        "interval": ci["interval"], "open_at_end": ci["open_at_end"]})
        if ci["open_at_end"]:
            notes.append(f"Mbar = {mb:g}: the set reaches the end of the theta grid "
                         "(identified set +-20 SE); its bound there is the grid's, not the set's")
    folded = _FoldedNormal(True, seed)
    sd_rows = []
    for mm in m:
        ci = smoothness_flci(b, sig, num_pre, num_post, float(mm), l_vec=lv, alpha=alpha,
                             _folded=folded)
        sd_rows.append({"M": float(mm), "lb": ci["lb"], "ub": ci["ub"], "method": "FLCI",
                        "estimate": ci["estimate"], "half_length": ci["half_length"],
                        "max_bias": ci["max_bias"]})
    bd_rm = bd_sd = None
    if breakdown and len(mbar):
        bd_rm = breakdown_relative_magnitudes(b, sig, num_pre, num_post, l_vec=lv, alpha=alpha,
                                              grid_points=grid_points, grid=rm_grid, seed=seed)
    if breakdown and len(m):
        bd_sd = breakdown_smoothness(b, sig, num_pre, num_post, l_vec=lv, alpha=alpha, seed=seed)
    return HonestDiDResult(
        betahat=b, sigma=sig, num_pre=num_pre, num_post=num_post, l_vec=lv, alpha=alpha,
        original=original_ci(b, sig, num_pre, num_post, l_vec=lv, alpha=alpha),
        relative_magnitudes=pd.DataFrame(rm_rows, columns=["Mbar", "lb", "ub", "method",
                                                           "interval", "open_at_end"]),
        smoothness=pd.DataFrame(sd_rows, columns=["M", "lb", "ub", "method", "estimate",
                                                  "half_length", "max_bias"]),
        breakdown_mbar=bd_rm, breakdown_m=bd_sd, terms=list(terms), notes=notes)


def event_study_inputs(result, *, ref: int = -1, unit_cluster=None):
    """(betahat, sigma, num_pre, num_post, terms) from an event study.

    Accepts our ``event_study`` FeolsResult (terms 'e=k' in ``vcov``) or a Callaway-Sant'Anna
    ``aggte(kind="dynamic")`` result (sigma from the influence functions, psi'psi/n^2 as
    HonestDiD's ``honest_did.AGGTEobj``; pass ``unit_cluster`` codes to use cluster sums).
    Event times must be consecutive around ``ref``; ``ref`` itself must be omitted (our
    event study) or zero by construction (CS with a universal base period; dropped).
    """
    vcov = getattr(result, "vcov", None)
    influence = getattr(result, "influence", None)
    if isinstance(vcov, pd.DataFrame) and len(vcov):
        es = {}
        for term in vcov.index:
            if isinstance(term, str) and term.startswith("e="):
                try:
                    es[int(term[2:])] = term
                except ValueError:
                    continue
        if not es:
            raise InputError(problem("an event study with terms 'e=k' (evaluation.estimators."
                                     "twfe.event_study)"))
        if ref in es:
            raise InputError(problem(f"the reference period e={ref} omitted from the event study",
                                     value=f"e={ref}"))
        times = sorted(es)
        terms = [es[k] for k in times]
        beta = result.params.loc[terms].to_numpy(dtype=float)
        sig = result.vcov.loc[terms, terms].to_numpy(dtype=float)
    elif influence is not None and getattr(result, "kind", None) == "dynamic":
        if result.details.get("base_period") != "universal":
            raise InputError(problem("a Callaway-Sant'Anna event study with base_period="
                                     "'universal' (HonestDiD needs one reference period)",
                                     value=result.details.get("base_period")))
        times_all = [int(round(x)) for x in result.egt["egt"].to_numpy(dtype=float)]
        psi = influence[:, :len(times_all)]
        n = psi.shape[0]
        if unit_cluster is not None:
            cl = np.asarray(unit_cluster)
            codes, _ = pd.factorize(cl)
            sums = np.zeros((codes.max() + 1, psi.shape[1]))
            np.add.at(sums, codes, psi)
            V = sums.T @ sums / n / n
        else:
            V = psi.T @ psi / n / n
        keep = [i for i, k in enumerate(times_all) if k != ref]
        times = [times_all[i] for i in keep]
        beta = result.egt["estimate"].to_numpy(dtype=float)[keep]
        sig = V[np.ix_(keep, keep)]
        terms = [f"e={k}" for k in times]
    else:
        raise InputError(problem("an event-study result: twfe.event_study(...) or "
                                 "callaway_santanna.aggte(..., kind='dynamic')",
                                 value=type(result).__name__))
    pre = [k for k in times if k < ref]
    post = [k for k in times if k > ref]
    if not pre or not post:
        raise InputError(problem(f"event times both before and after the reference e={ref}",
                                 value=times))
    full = list(range(pre[0], ref)) + list(range(ref + 1, post[-1] + 1))
    if times != full:
        raise InputError(problem("consecutive event times around the reference period "
                                 "(HonestDiD's restrictions compare adjacent periods)", value=times))
    return beta, sig, len(pre), len(post), terms


def honest_did(event_study_result, *, ref: int = -1, l_vec=None, mbar=(0.5, 1, 1.5, 2),
               m=(0, 0.01, 0.02, 0.03, 0.04, 0.05), alpha: float = 0.05, breakdown: bool = True,
               unit_cluster=None, rm_grid: str = "idset", seed: int = 0) -> HonestDiDResult:
    """Rambachan & Roth (2023) sensitivity analysis of an event study.

    ``event_study_result``: our ``event_study`` FeolsResult or a CS dynamic aggregation (see
    :func:`event_study_inputs`). Periods after ``ref`` are post periods (the first is e = 0
    when ref = -1); l_vec weights them (default: the first). ``m`` is in outcome units.
    """
    beta, sig, npre, npost, terms = event_study_inputs(event_study_result, ref=ref,
                                                       unit_cluster=unit_cluster)
    res = sensitivity(beta, sig, npre, npost, l_vec=l_vec, mbar=mbar, m=m, alpha=alpha,
                      breakdown=breakdown, rm_grid=rm_grid, seed=seed, terms=terms)
    return res
