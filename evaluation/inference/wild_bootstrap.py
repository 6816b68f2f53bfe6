"""Wild cluster bootstrap for few clusters (Roodman, MacKinnon, Nielsen & Webb 2019, "Fast and wild").

What is bootstrapped
--------------------
A linear hypothesis ``R beta = r`` (one coefficient or a linear combination) in a linear model with
absorbed fixed effects, ``y = X beta + D gamma + u``, clustered by ``cluster``. The default is the
restricted wild cluster bootstrap "WCR11" of boottest: the null is imposed on the bootstrap
data-generating process, the residuals are the restricted ones, the statistic is the CRV1 t-statistic
(Cameron, Gelbach & Miller 2008; MacKinnon & Webb 2017), auxiliary weights are Rademacher (+-1) or
Webb's six-point distribution (+-sqrt(1/2), +-1, +-sqrt(3/2); Webb 2023).

How (Frisch-Waugh-Lovell, then O(G x B) algebra on cluster sums)
------------------------------------------------------------------
Fixed effects nested within the clusters are partialled out once by
:func:`evaluation.estimators.fixed_effects.demean`; this is exact for the bootstrap too, because the
restricted residuals have zero mean in every nested group, so multiplying them by a cluster-level
weight keeps them orthogonal to those effects. Fixed effects that are *not* nested in the clusters
(e.g. year effects when clustering by partnership) do not commute with the cluster weights; their
dummies (demeaned by the nested effects) are carried as extra columns of the design Z, as boottest
does. With ``A = Z'Z``, ``a = R A^-1``, cluster score sums ``S_g = Z_g' u~_g`` (G x k),
``s_g = a S_g`` and ``J_g = a (Z_g'Z_g) A^-1`` (Roodman et al. 2019, Sec. 3, eqs. 12-17), draw b with
weights v_b gives

    numerator*_b = s' v_b,      score*_gb = v_gb s_g - J_g (S' v_b),
    t*_b = numerator*_b / sqrt(c * sum_g score*_gb^2),

so a draw costs O(G k), never a pass over the rows. Everything is linear in the hypothesised value
r, so p(r) is a cheap function of r and the confidence set is found by inverting the test (bisection
on the restricted p-value, as boottest's "test inversion"; Roodman et al. 2019, Sec. 3.5).

Variance convention: CRV1, c = G/(G-1) * (N-1)/(N-K) with fixest's K (fixed effects nested in the
clusters not counted), the same c in the original and every bootstrap t, so the t-statistic equals
``feols(..., cluster=...)``'s and the p-value and confidence set do not depend on c.

Rademacher draws are enumerated (all 2^G sign vectors, each once) when 2^G <= B, as boottest does;
the bootstrap p-value is then exact (not Monte Carlo) for the bootstrap distribution.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse
from scipy import stats

from evaluation.errors import InputError, problem
from evaluation.estimators import fixed_effects as _fe
from evaluation.estimators.results import Estimate, VarianceConvention

__all__ = ["WildBootstrapResult", "wild_cluster_bootstrap", "wild_bootstrap_arrays",
           "influence_bootstrap", "att_wild_bootstrap", "small_cluster_policy", "RobustInference",
           "robust_inference", "SMALL_CLUSTER_THRESHOLD", "WEBB_THRESHOLD", "WEIGHT_TYPES"]

#: Below this many clusters conventional cluster-robust inference is not trusted (MacKinnon & Webb 2017).
SMALL_CLUSTER_THRESHOLD = 30
#: Below this many clusters Rademacher weights give too few distinct draws (2^G); use Webb's.
WEBB_THRESHOLD = 12
WEIGHT_TYPES = ("rademacher", "webb")
P_VALUE_TYPES = ("symmetric", "equal-tailed")
_RADEMACHER = np.array([-1.0, 1.0])
_WEBB = np.array([-np.sqrt(1.5), -1.0, -np.sqrt(0.5), np.sqrt(0.5), 1.0, np.sqrt(1.5)])
#: elements of one chunk x G block of weights (small enough to stay in cache).
_BLOCK = 262_144
#: max n x L dense dummies for fixed effects not nested in the clusters.
_MAX_DUMMY_CELLS = 60_000_000
#: relative tolerance below which |t*| and |t| count as tied (ties do not count as exceedances).
_TIE = 1e-9


@dataclass
class WildBootstrapResult:
    """A wild (cluster) bootstrap test of ``hypothesis: estimate = null`` and its confidence set.

    estimate: R beta-hat (or the ATT); se: the analytic standard error whose t is bootstrapped
    (CRV1 for regressions; influence-function for the ATT); t_stat: (estimate - null) / se;
    p_value: bootstrap p-value of type ``p_value_type``; ci_low/ci_high: (1 - alpha) confidence set
    (test inversion for WCR; percentile-t for unrestricted/score bootstraps); B: draws used;
    enumerated: True if all 2^G Rademacher sign vectors were used (exact bootstrap p-value);
    t_boot: the bootstrap t-statistics at the null (length B).
    """

    hypothesis: str
    estimate: float
    null: float
    se: float
    t_stat: float
    p_value: float
    ci_low: float
    ci_high: float
    alpha: float
    B: int
    weights: str
    impose_null: bool
    enumerated: bool
    p_value_type: str
    n_clusters: int
    n_obs: int
    seed: object
    method: str
    variance: VarianceConvention
    notes: list[str] = field(default_factory=list)
    t_boot: np.ndarray = field(default=None, repr=False)

    def to_estimate(self) -> Estimate:
        """The bootstrap p-value and confidence set with the analytic SE, as an :class:`Estimate`."""
        return Estimate(self.estimate, self.se, self.ci_low, self.ci_high, self.p_value)

    def to_dict(self) -> dict:
        return {"hypothesis": self.hypothesis, "estimate": self.estimate, "null": self.null,
                "se": self.se, "t": self.t_stat, "p": self.p_value, "ci_low": self.ci_low,
                "ci_high": self.ci_high, "alpha": self.alpha, "B": int(self.B),
                "weights": self.weights, "impose_null": self.impose_null,
                "enumerated": self.enumerated, "p_value_type": self.p_value_type,
                "n_clusters": int(self.n_clusters), "n_obs": int(self.n_obs),
                "seed": None if self.seed is None else str(self.seed), "method": self.method,
                "variance": self.variance.to_dict(), "notes": list(self.notes)}

    def summary(self) -> str:
        lvl = f"{100 * (1 - self.alpha):g}%"
        text = (f"{self.method}: {self.hypothesis}: estimate {self.estimate:.6g} (SE {self.se:.6g}), "
                f"t = {self.t_stat:.4f}, bootstrap p = {self.p_value:.4f} ({self.p_value_type}), "
                f"{lvl} CI [{self.ci_low:.6g}, {self.ci_high:.6g}]; {self.B} "
                f"{'enumerated ' if self.enumerated else ''}{self.weights} draws, "
                f"{self.n_clusters} clusters")
        return "\n".join([text, *(f"Note: {n}" for n in self.notes)])


# --------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------


def _check_common(B, weights, alpha, p_value_type):
    if not isinstance(B, (int, np.integer)) or B < 1:
        raise InputError(problem("B, the number of bootstrap draws, a positive integer", value=B))
    if weights not in WEIGHT_TYPES:
        raise InputError(problem(f"weights one of {', '.join(WEIGHT_TYPES)}", value=weights))
    if not (isinstance(alpha, (float, int)) and 0 < alpha < 1):
        raise InputError(problem("alpha strictly between 0 and 1", value=alpha))
    if p_value_type not in P_VALUE_TYPES:
        raise InputError(problem(f"p_value one of {', '.join(P_VALUE_TYPES)}", value=p_value_type))


class _Draws:
    """Auxiliary weights in blocks of rows (draws) x G; deterministic given the seed.

    Rademacher with 2^G <= B: all 2^G sign vectors (row b holds the binary digits of b), as
    boottest enumerates them. Otherwise B iid draws from ``np.random.default_rng(seed)``.
    """

    def __init__(self, G: int, B: int, weights: str, seed):
        self.G = G
        self.enumerated = weights == "rademacher" and G < 63 and 2 ** G <= B
        self.B = 2 ** G if self.enumerated else int(B)
        self.weights = weights
        self.seed = seed
        self.chunk = max(1, _BLOCK // max(G, 1))

    def blocks(self):
        if self.enumerated:
            bits = np.arange(self.G)
            for start in range(0, self.B, self.chunk):
                idx = np.arange(start, min(self.B, start + self.chunk))
                yield ((idx[:, None] >> bits) & 1) * 2.0 - 1.0
            return
        rng = np.random.default_rng(self.seed)
        for start in range(0, self.B, self.chunk):
            m = min(self.B, start + self.chunk) - start
            if self.weights == "rademacher":
                yield _RADEMACHER[rng.integers(0, 2, size=(m, self.G), dtype=np.int8)]
            else:
                yield _WEBB[rng.integers(0, 6, size=(m, self.G), dtype=np.int8)]


def _p_value(t: float, t_boot: np.ndarray, kind: str) -> float:
    """Bootstrap p-value; |t*| within a relative 1e-9 of |t| is a tie and not an exceedance.

    symmetric: share of |t*_b| > |t| (boottest's and wildboottest's default);
    equal-tailed: 2 min(share t*_b < t, share t*_b > t).
    """
    tol = _TIE * max(abs(t), 1e-300)
    if kind == "symmetric":
        return float(np.mean(np.abs(t_boot) > abs(t) + tol))
    lo = np.mean(t_boot < t - tol)
    hi = np.mean(t_boot > t + tol)
    return float(min(1.0, 2 * min(lo, hi)))


# --------------------------------------------------------------------------------------
# The core: WCR/WCU on a design Z after the nested fixed effects are partialled out
# --------------------------------------------------------------------------------------


class _ClusterSum:
    """Cluster sums sum_{i in g} w_i M_i of the rows of a matrix, as one sparse (G x n) product."""

    def __init__(self, cl: np.ndarray, G: int):
        self.order = np.argsort(cl, kind="stable")
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(cl, minlength=G))])
        self.shape = (G, cl.size)

    def __call__(self, w: np.ndarray, M: np.ndarray) -> np.ndarray:
        C = sparse.csr_matrix((w[self.order], self.order, self.indptr), shape=self.shape)
        return np.asarray(C @ M)


class _WildCore:
    """Precomputed cluster-level pieces of the WCR/WCU bootstrap t as a function of the null.

    For d = R beta-hat - r the restricted residuals are u~(d) = u-hat + d z, z = Z A^-1 R' / (R A^-1 R'),
    so numerator*_b(d) = N0_b + d N1_b and sum_g score*_gb(d)^2 = P_b + 2 d Q_b + d^2 R_b.
    """

    def __init__(self, Z, y, cl, G, Rvec, factor, draws: _Draws, impose_null: bool):
        A = Z.T @ Z
        Ainv = np.linalg.inv(A)
        beta = Ainv @ (Z.T @ y)
        uhat = y - Z @ beta
        a = Rvec @ Ainv
        self.beta = beta
        self.theta = float(Rvec @ beta)
        self.factor = factor
        csum = _ClusterSum(cl, G)
        S0 = csum(uhat, Z)
        s0 = S0 @ a
        self.se = float(np.sqrt(factor * np.sum(s0 ** 2)))
        Za = Z @ a
        W = csum(Za, Z)  # rows a Z_g'Z_g
        J = W @ Ainv
        pieces = [(S0, s0)]
        if impose_null:
            z = Za / float(a @ Rvec)
            S1 = csum(z, Z)
            pieces.append((S1, S1 @ a))
        N = [np.empty(draws.B) for _ in pieces]
        P = np.empty(draws.B)
        Q = np.empty(draws.B) if impose_null else None
        Rr = np.empty(draws.B) if impose_null else None
        JT = np.ascontiguousarray(J.T)
        buf = [np.empty((draws.chunk, G)) for _ in pieces]
        pos = 0
        for V in draws.blocks():
            m = V.shape[0]
            C = []
            for i, (S, s) in enumerate(pieces):
                N[i][pos:pos + m] = V @ s
                Ci = buf[i][:m]
                np.matmul(V @ S, JT, out=Ci)  # J_g (S' v), then v_g s_g - J_g (S' v)
                np.subtract(V * s, Ci, out=Ci)
                C.append(Ci)
            P[pos:pos + m] = np.einsum("ij,ij->i", C[0], C[0])
            if impose_null:
                Q[pos:pos + m] = np.einsum("ij,ij->i", C[0], C[1])
                Rr[pos:pos + m] = np.einsum("ij,ij->i", C[1], C[1])
            pos += m
        self.N0 = N[0]
        self.N1 = N[1] if impose_null else None
        self.P, self.Q, self.R = P, Q, Rr
        self.impose_null = impose_null

    def t_boot(self, r: float) -> np.ndarray:
        """Bootstrap t-statistics for the hypothesis value r."""
        if not self.impose_null:
            den = self.factor * self.P
            num = self.N0
        else:
            d = self.theta - r
            num = self.N0 + d * self.N1
            den = self.factor * (self.P + 2 * d * self.Q + d * d * self.R)
        with np.errstate(divide="ignore", invalid="ignore"):
            return num / np.sqrt(np.clip(den, 0, None))

    def t(self, r: float) -> float:
        return (self.theta - r) / self.se

    def p(self, r: float, kind: str) -> float:
        return _p_value(self.t(r), self.t_boot(r), kind)

    def confidence_set(self, alpha: float, kind: str, crit_guess: float) -> tuple[float, float]:
        """Endpoints of {r: p(r) > alpha} found by bisection outward from the estimate.

        WCU: percentile-t interval from the bootstrap t distribution (no inversion needed).
        """
        if not self.impose_null:
            tb = self.t_boot(self.theta)
            if kind == "symmetric":
                q = float(np.quantile(np.abs(tb), 1 - alpha, method="inverted_cdf"))
                return self.theta - q * self.se, self.theta + q * self.se
            qlo = float(np.quantile(tb, alpha / 2, method="inverted_cdf"))
            qhi = float(np.quantile(tb, 1 - alpha / 2, method="inverted_cdf"))
            return self.theta - qhi * self.se, self.theta - qlo * self.se
        if not np.isfinite(self.se) or self.se <= 0:
            return float("nan"), float("nan")
        ends = []
        for sign in (-1.0, 1.0):
            inside = self.theta
            step = max(crit_guess, 1.0) * self.se
            outside = self.theta + sign * step
            k = 0
            while self.p(outside, kind) > alpha:
                inside = outside
                step *= 2
                outside = self.theta + sign * step
                k += 1
                if k > 60:
                    outside = sign * np.inf
                    break
            if np.isfinite(outside):
                tol = 1e-10 * self.se
                for _ in range(200):
                    if abs(outside - inside) <= tol:
                        break
                    mid = 0.5 * (inside + outside)
                    if self.p(mid, kind) > alpha:
                        inside = mid
                    else:
                        outside = mid
                ends.append(0.5 * (inside + outside))
            else:
                ends.append(outside)
        return ends[0], ends[1]


# --------------------------------------------------------------------------------------
# Public: arrays and formula interfaces
# --------------------------------------------------------------------------------------


def _codes_of(values) -> tuple[np.ndarray, int]:
    codes, uniq = pd.factorize(np.asarray(values), use_na_sentinel=True)
    if (codes < 0).any():
        raise InputError(problem("a cluster (or fixed-effect) identifier on every row",
                                 row=int(np.flatnonzero(codes < 0)[0]) + 1, value=None))
    return codes.astype(np.intp), len(uniq)


def _dummies(codes: np.ndarray, G: int, drop_first: bool) -> np.ndarray:
    L = G - 1 if drop_first else G
    D = np.zeros((codes.size, L), order="F")
    rows = np.arange(codes.size)
    keep = codes >= (1 if drop_first else 0)
    D[rows[keep], codes[keep] - (1 if drop_first else 0)] = 1.0
    return D


def wild_bootstrap_arrays(y, X, cluster, R, r: float = 0.0, *, fe=(), B: int = 9999,
                          weights: str = "rademacher", impose_null: bool = True,
                          p_value: str = "symmetric", seed=None, alpha: float = 0.05,
                          ci: bool = True, dof_K: int | None = None, fe_tol: float = 1e-12,
                          hypothesis: str = "R beta = r", obs_weights=None) -> WildBootstrapResult:
    """WCR (or WCU) bootstrap of ``R beta = r`` for ``y = X beta + fixed effects + u``, on arrays.

    y: (n,); X: (n, k) regressors (no fixed effects); cluster: (n,) identifiers; R: (k,) weights of
    the linear combination; fe: list of (n,) fixed-effect identifiers. Fixed effects nested within
    the clusters are partialled out by ``demean``; the others enter as demeaned dummy columns (see
    the module docstring). dof_K: the K of the CRV1 factor (N-1)/(N-K); default: fixest's nested
    convention computed here. obs_weights: (n,) analytic (regression) weights, as feols's
    ``weights``: the fixed effects are projected out in the weighted inner product and every row is
    then scaled by sqrt(w), so the bootstrap is of the weighted estimator (rows with w = 0 dropped).
    Returns a :class:`WildBootstrapResult`.
    """
    _check_common(B, weights, alpha, p_value)
    y = np.asarray(y, dtype=float)
    X = np.asarray(X, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    aw = None
    if obs_weights is not None:
        aw = np.asarray(obs_weights, dtype=float).reshape(-1)
        if aw.shape != y.shape or not np.isfinite(aw).all() or (aw < 0).any():
            raise InputError(problem(f"one finite, non-negative regression weight per row ({y.size})",
                                     value="weights"))
        keep = aw > 0
        if not keep.all():
            y, X, aw = y[keep], X[keep], aw[keep]
            cluster = np.asarray(cluster)[keep]
            fe = [np.asarray(f)[keep] for f in fe]
    n, k = X.shape
    Rvec = np.asarray(R, dtype=float).reshape(-1)
    if Rvec.shape != (k,):
        raise InputError(problem(f"R with one weight per regressor ({k})", value=Rvec.shape))
    if not np.any(Rvec != 0):
        raise InputError(problem("a hypothesis R beta = r with at least one non-zero weight in R",
                                 value=list(Rvec)))
    cl, G = _codes_of(cluster)
    if G < 2:
        raise InputError(problem("at least two clusters for a wild cluster bootstrap",
                                 value=G))
    if not (np.isfinite(y).all() and np.isfinite(X).all()):
        raise InputError(problem("finite y and X (drop missing values first)", value="NaN/inf"))
    nested_codes, other = [], []
    for f in fe:
        c, Gf = _codes_of(f)
        (nested_codes if _fe._nested(c, cl, Gf) else other).append((c, Gf))
    blocks = [X]
    for i, (c, Gf) in enumerate(other):
        if n * Gf > _MAX_DUMMY_CELLS:
            raise InputError(problem(
                f"a fixed effect not nested in the clusters with few levels: this one has {Gf} "
                "levels, whose dummies the exact wild cluster bootstrap must carry; cluster at a "
                "level that nests it, or include it as a regressor", value=Gf))
        blocks.append(_dummies(c, Gf, drop_first=bool(nested_codes) or i > 0))
    Zraw = np.column_stack(blocks) if len(blocks) > 1 else X
    YZ = np.column_stack([y, Zraw])
    if nested_codes:
        YZ = _fe.demean(YZ, [c for c, _ in nested_codes], weights=aw, tol=fe_tol)
    if aw is not None:  # WLS = OLS on sqrt(w)-scaled rows after the weighted projection (FWL)
        YZ = YZ * np.sqrt(aw)[:, None]
    yd, Z = YZ[:, 0], np.asarray(YZ[:, 1:], order="C")
    # the extra columns may be collinear (e.g. several non-nested effects): keep an independent set
    extra = Z.shape[1] - k
    if extra:
        E = Z[:, k:]
        EtE = E.T @ E
        keep = _fe._independent_columns(EtE, np.diag(EtE).copy(), 1e-10)
        Z = np.column_stack([Z[:, :k], E[:, keep]])
    ZtZ = Z.T @ Z
    if np.linalg.matrix_rank(ZtZ) < Z.shape[1]:
        raise InputError(problem("regressors that are not collinear with each other or the fixed "
                                 "effects (drop the collinear ones; feols reports which)",
                                 value=hypothesis))
    Rz = np.concatenate([Rvec, np.zeros(Z.shape[1] - k)])
    if dof_K is None:
        dof_K = Z.shape[1] + (1 if nested_codes else 0)
    if n - dof_K <= 0:
        raise InputError(problem("more observations than parameters", value=n))
    factor = G / (G - 1) * (n - 1) / (n - dof_K)
    draws = _Draws(G, B, weights, seed)
    core = _WildCore(Z, yd, cl, G, Rz, factor, draws, impose_null)
    t_boot = core.t_boot(r)
    pv = core.p(r, p_value)
    crit = float(stats.t.ppf(1 - alpha / 2, G - 1))
    lo, hi = core.confidence_set(alpha, p_value, crit) if ci else (float("nan"), float("nan"))
    notes = []
    if draws.enumerated:
        notes.append(f"All 2^{G} = {draws.B} Rademacher sign vectors enumerated (2^G <= B = {B}): "
                     "the bootstrap p-value is exact, with no simulation error.")
    elif weights == "rademacher" and G < WEBB_THRESHOLD:
        notes.append(f"Only {G} clusters: Rademacher weights allow 2^{G} distinct draws; Webb "
                     "weights are recommended (MacKinnon & Webb 2017).")
    if other:
        notes.append(f"{len(other)} fixed effect(s) not nested in the clusters carried as "
                     "dummies in the bootstrap (exact WCR).")
    if aw is not None:
        notes.append("Weighted least squares: the bootstrap re-estimates the weighted regression "
                     "(the same weights as the fit).")
    method = f"{'restricted (WCR)' if impose_null else 'unrestricted (WCU)'} wild cluster bootstrap-t"
    variance = VarianceConvention(
        kind="wild-cluster-bootstrap",
        small_sample=(f"bootstrap-t on the CRV1 t: G/(G-1) * (N-1)/(N-K), K={dof_K} (fixest nested "
                      "convention); p-value and confidence set do not depend on this factor; "
                      f"{draws.B} {weights} draws, {'null imposed' if impose_null else 'null not imposed'}"),
        cluster=None, n_clusters=G, df=None)
    return WildBootstrapResult(
        hypothesis=hypothesis, estimate=core.theta, null=float(r), se=core.se,
        t_stat=core.t(r), p_value=pv, ci_low=float(lo), ci_high=float(hi), alpha=float(alpha),
        B=draws.B, weights=weights, impose_null=impose_null, enumerated=draws.enumerated,
        p_value_type=p_value, n_clusters=G, n_obs=n, seed=seed, method=method, variance=variance,
        notes=notes, t_boot=t_boot)


def _parse_coef(coef, names: list[str]) -> tuple[np.ndarray, str]:
    if isinstance(coef, str):
        coef = {coef: 1.0}
    if not isinstance(coef, dict) or not coef:
        raise InputError(problem("coef: a term name, or a dict {term: weight} for a linear "
                                 "combination", value=coef))
    R = np.zeros(len(names))
    for term, w in coef.items():
        if term not in names:
            import difflib

            close = difflib.get_close_matches(str(term), names, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; the model has {', '.join(names)}"
            raise InputError(problem(f"a coefficient of the model (not dropped for collinearity){hint}",
                                     column=str(term), value=term))
        R[names.index(term)] = float(w)
    text = " + ".join(f"{w:g}*{t}" if w != 1 else t for t, w in coef.items())
    return R, text


def wild_cluster_bootstrap(data: pd.DataFrame, formula: str, coef, *, cluster: str,
                           null: float = 0.0, B: int = 9999, weights: str = "rademacher",
                           impose_null: bool = True, p_value: str = "symmetric", seed=None,
                           alpha: float = 0.05, ci: bool = True,
                           fe_tol: float = 1e-12, aweights: str | None = None) -> WildBootstrapResult:
    """Wild cluster bootstrap test of ``coef = null`` in ``feols(data, formula, cluster=cluster)``.

    formula: fixest syntax ``"y ~ x1 + x2 | fe1 + fe2"`` (as :func:`feols`); coef: a term name or
    ``{term: weight}`` for a linear combination sum_j w_j beta_j; cluster: the column clustered on
    (e.g. the partnership). Default: WCR11 with Rademacher weights (enumerated when 2^G <= B),
    symmetric p-value, confidence set by test inversion; ``weights="webb"`` for few clusters.
    The sample, the regressors kept and the CRV1 K are feols's, so ``t_stat`` equals feols's t.
    aweights: column of analytic (regression) weights, as feols's ``weights`` (e.g. matching
    weights); the bootstrap then tests the weighted estimator the fit reports.
    """
    if not isinstance(data, pd.DataFrame):
        raise InputError(problem("a pandas DataFrame of data", value=type(data).__name__))
    if not isinstance(cluster, str) or not cluster:
        raise InputError(problem("cluster: the name of the column to cluster on", value=cluster))
    _check_common(B, weights, alpha, p_value)
    fit = _fe.feols(data, formula, cluster=cluster, weights=aweights, fe_tol=fe_tol)
    names = list(fit.params.index)
    Rvec, text = _parse_coef(coef, names)
    parsed = _fe.parse_formula(formula)
    sub = data.loc[fit.sample] if not fit.sample.all() else data
    y, X, all_names = _fe._design(sub, parsed)
    X = X[:, [all_names.index(t) for t in names]]
    fe_codes = [_fe._codes(sub, f) for f in parsed.fixed_effects]
    cl = _fe._codes(sub, cluster)
    aw = None if aweights is None else sub[aweights].to_numpy(dtype=float)
    res = wild_bootstrap_arrays(y, X, cl, Rvec, null, fe=fe_codes, B=B, weights=weights,
                                impose_null=impose_null, p_value=p_value, seed=seed, alpha=alpha,
                                ci=ci, dof_K=fit.dof_K, fe_tol=fe_tol,
                                hypothesis=f"{text} = {null:g}", obs_weights=aw)
    res.variance = VarianceConvention(res.variance.kind, res.variance.small_sample, cluster=cluster,
                                      n_clusters=res.n_clusters, df=None)
    res.notes = list(fit.notes) + res.notes
    return res


# --------------------------------------------------------------------------------------
# Staggered estimators: wild (score/multiplier) bootstrap of an influence function
# --------------------------------------------------------------------------------------


def influence_bootstrap(estimate: float, influence, cluster, *, null: float = 0.0, B: int = 9999,
                        weights: str = "webb", p_value: str = "symmetric", seed=None,
                        alpha: float = 0.05, hypothesis: str = "ATT = 0") -> WildBootstrapResult:
    """Cluster wild (score) bootstrap-t of an asymptotically linear estimator from its influence function.

    With psi_i the influence function (estimate - truth ~ (1/n) sum_i psi_i, R did's convention)
    and S_c = sum_{i in c} psi_i / n the cluster sums, the analytic SE is
    se = sqrt(G/(G-1) * sum_c S_c^2) (CRV1-style G/(G-1)) and draw b gives
    t*_b = sum_c v_cb S_c / sqrt(G/(G-1) * sum_c (v_cb S_c)^2)
    (the score/multiplier bootstrap of Kline & Santos 2012, studentised). The null is not imposed
    (there is no restricted re-fit for an influence function), so the confidence interval is the
    percentile-t interval estimate -+ quantiles(t*) * se. With Rademacher weights the denominator
    equals se in every draw; Webb's weights (default) studentise draw by draw.

    Difference from R ``did``'s multiplier bootstrap (CS 2021 Algorithm 1): did multiplies the
    cluster *means* of psi (equal cluster weights), takes an IQR-based SE without G/(G-1) and uses
    normal critical values; here cluster *sums* (the linearisation of the estimator, right for
    unequal cluster sizes), G/(G-1), and bootstrap-t critical values and p-values.
    """
    _check_common(B, weights, alpha, p_value)
    psi = np.asarray(influence, dtype=float).reshape(-1)
    cl, G = _codes_of(cluster)
    if cl.size != psi.size:
        raise InputError(problem(f"one cluster per influence-function row ({psi.size})", value=cl.size))
    if G < 2:
        raise InputError(problem("at least two clusters for a wild cluster bootstrap", value=G))
    if not np.isfinite(psi).all() or not np.isfinite(estimate):
        raise InputError(problem("a finite estimate and influence function", value=estimate))
    S = np.bincount(cl, weights=psi, minlength=G) / psi.size
    c = G / (G - 1)
    se = float(np.sqrt(c * np.sum(S ** 2)))
    draws = _Draws(G, B, weights, seed)
    tb = np.empty(draws.B)
    pos = 0
    for V in draws.blocks():
        VS = V * S
        with np.errstate(divide="ignore", invalid="ignore"):
            tb[pos:pos + V.shape[0]] = VS.sum(axis=1) / np.sqrt(c * np.einsum("ij,ij->i", VS, VS))
        pos += V.shape[0]
    t = (estimate - null) / se if se > 0 else float("nan")
    pv = _p_value(t, tb, p_value)
    if p_value == "symmetric":
        q = float(np.quantile(np.abs(tb), 1 - alpha, method="inverted_cdf"))
        lo, hi = estimate - q * se, estimate + q * se
    else:
        lo = estimate - float(np.quantile(tb, 1 - alpha / 2, method="inverted_cdf")) * se
        hi = estimate - float(np.quantile(tb, alpha / 2, method="inverted_cdf")) * se
    notes = []
    if draws.enumerated:
        notes.append(f"All 2^{G} = {draws.B} Rademacher sign vectors enumerated (2^G <= B = {B}).")
    variance = VarianceConvention(
        kind="wild-cluster-bootstrap",
        small_sample=("score bootstrap-t on the influence function: se = sqrt(G/(G-1) sum_c S_c^2), "
                      f"S_c the cluster sums of psi/n; {draws.B} {weights} draws, null not imposed"),
        n_clusters=G)
    return WildBootstrapResult(
        hypothesis=hypothesis, estimate=float(estimate), null=float(null), se=se, t_stat=float(t),
        p_value=pv, ci_low=float(lo), ci_high=float(hi), alpha=float(alpha), B=draws.B,
        weights=weights, impose_null=False, enumerated=draws.enumerated, p_value_type=p_value,
        n_clusters=G, n_obs=psi.size, seed=seed,
        method="wild cluster score bootstrap-t (influence function)", variance=variance,
        notes=notes, t_boot=tb)


def att_wild_bootstrap(gt_result, kind: str = "simple", *, null: float = 0.0, B: int = 9999,
                       weights: str = "webb", p_value: str = "symmetric", seed=None,
                       alpha: float | None = None, **aggte_kwargs) -> WildBootstrapResult:
    """Wild cluster bootstrap of Callaway-Sant'Anna's aggregated ATT (``aggte(gt_result, kind)``).

    gt_result: an ``att_gt`` result (its ``unit_cluster`` gives the clusters: the ``cluster``
    column of att_gt, or the unit). Bootstraps the overall ATT's influence function with
    :func:`influence_bootstrap`; ``aggte_kwargs`` (balance_e, min_e, max_e) go to ``aggte``.
    """
    from evaluation.estimators.callaway_santanna import GroupTimeResult, aggte

    if not isinstance(gt_result, GroupTimeResult) or gt_result.influence is None:
        raise InputError(problem("an att_gt result (with its influence functions)",
                                 value=type(gt_result).__name__))
    alpha = gt_result.alpha if alpha is None else alpha
    agg = aggte(gt_result, kind, alpha=alpha, **aggte_kwargs)
    res = influence_bootstrap(agg.overall.estimate, agg.influence[:, -1], gt_result.unit_cluster,
                              null=null, B=B, weights=weights, p_value=p_value, seed=seed,
                              alpha=alpha, hypothesis=f"ATT ({kind} aggregation) = {null:g}")
    res.variance = VarianceConvention(res.variance.kind, res.variance.small_sample,
                                      cluster=gt_result.variance.cluster, n_clusters=res.n_clusters)
    return res


# --------------------------------------------------------------------------------------
# Few clusters: policy and the pipeline entry point
# --------------------------------------------------------------------------------------


def small_cluster_policy(n_clusters: int) -> str:
    """Which inference to use with ``n_clusters`` clusters.

    "wild-bootstrap-webb" below WEBB_THRESHOLD (12) clusters (2^G Rademacher draws are too few;
    Webb 2023, MacKinnon & Webb 2017); "wild-bootstrap" (WCR, Rademacher) below
    SMALL_CLUSTER_THRESHOLD (30); "cluster-robust" (CRV1, t(G-1)) otherwise. Fewer than 2
    clusters: InputError (no cluster-robust inference is possible).
    """
    if not isinstance(n_clusters, (int, np.integer)) or isinstance(n_clusters, bool):
        raise InputError(problem("a whole number of clusters", value=n_clusters))
    if n_clusters < 2:
        raise InputError(problem("at least two clusters: with fewer there is no cluster-robust "
                                 "inference of any kind", value=int(n_clusters)))
    if n_clusters < WEBB_THRESHOLD:
        return "wild-bootstrap-webb"
    if n_clusters < SMALL_CLUSTER_THRESHOLD:
        return "wild-bootstrap"
    return "cluster-robust"


@dataclass
class RobustInference:
    """Inference chosen by the number of clusters (see :func:`small_cluster_policy`).

    estimate: the Estimate to report (bootstrap p and CI with the CRV1 SE when bootstrapped);
    conventional: the CRV1 Estimate, always; bootstrap: the WildBootstrapResult if run;
    warning: the loud note shown with the result when clusters are few (None otherwise).
    """

    term: str
    policy: str
    n_clusters: int
    estimate: Estimate
    conventional: Estimate
    variance: VarianceConvention
    bootstrap: WildBootstrapResult | None
    warning: str | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"term": self.term, "policy": self.policy, "n_clusters": int(self.n_clusters),
                "estimate": self.estimate.to_dict(), "conventional": self.conventional.to_dict(),
                "variance": self.variance.to_dict(),
                "bootstrap": None if self.bootstrap is None else self.bootstrap.to_dict(),
                "warning": self.warning, "notes": list(self.notes)}


def robust_inference(data: pd.DataFrame, formula: str, coef, *, cluster: str, B: int = 9999,
                     seed=0, alpha: float = 0.05, threshold: int = SMALL_CLUSTER_THRESHOLD,
                     result=None, aweights: str | None = None) -> RobustInference:
    """Pure function for the pipeline: CRV1 inference, switched to WCR when clusters < ``threshold``.

    Below the threshold the reported p-value and CI are the wild cluster bootstrap's (Webb weights
    below 12 clusters, Rademacher otherwise; ``seed`` fixed so the result is reproducible) and a
    warning note says why. ``result``: a feols/twfe result already fitted with this formula and
    cluster, to annotate (a copy of its notes gets the warning); it is not modified.
    """
    if not isinstance(cluster, str) or not cluster:
        raise InputError(problem("cluster: the name of the column to cluster on", value=cluster))
    fit = _fe.feols(data, formula, cluster=cluster, weights=aweights)
    names = list(fit.params.index)
    _parse_coef(coef, names)
    G = int(fit.variance.n_clusters)
    policy = small_cluster_policy(G)
    if G >= threshold:
        policy = "cluster-robust"
    elif policy == "cluster-robust":
        policy = "wild-bootstrap"
    term = coef if isinstance(coef, str) else " + ".join(f"{w:g}*{t}" for t, w in coef.items())
    if isinstance(coef, str):
        row = fit.coefficients.loc[coef]
        conventional = Estimate(*(float(row[c]) for c in ("estimate", "se", "ci_low", "ci_high",
                                                          "p_value")))
    else:
        R, _ = _parse_coef(coef, names)
        est = float(R @ fit.params.to_numpy())
        se = float(np.sqrt(R @ fit.vcov.to_numpy() @ R))
        conventional = Estimate.from_se(est, se, fit.variance, alpha)
    notes = [] if result is None else list(result.notes)
    if policy == "cluster-robust":
        return RobustInference(term, policy, G, conventional, conventional, fit.variance, None,
                               None, notes)
    weights = "webb" if policy == "wild-bootstrap-webb" else "rademacher"
    boot = wild_cluster_bootstrap(data, formula, coef, cluster=cluster, B=B, weights=weights,
                                  seed=seed, alpha=alpha, aweights=aweights)
    warning = (f"WARNING: only {G} clusters ({cluster}); conventional clustered standard errors "
               f"are unreliable below {threshold} clusters (they over-reject). p-value and "
               f"{100 * (1 - alpha):g}% CI are from the restricted wild cluster bootstrap "
               f"({weights} weights, {boot.B} draws{', enumerated' if boot.enumerated else ''}, "
               f"seed {seed}): p = {boot.p_value:.4g}, CI [{boot.ci_low:.4g}, {boot.ci_high:.4g}] "
               f"(CRV1: p = {conventional.p_value:.4g}, CI [{conventional.ci_low:.4g}, "
               f"{conventional.ci_high:.4g}]).")
    notes.append(warning)
    return RobustInference(term, policy, G, boot.to_estimate(), conventional, boot.variance, boot,
                           warning, notes)

