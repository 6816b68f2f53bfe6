"""Synthetic difference-in-differences, synthetic control and DiD on a treated block.

A line-by-line port of the R package ``synthdid`` (Arkhangelsky, Athey, Hirshberg, Imbens
& Wager 2021, "Synthetic Difference-in-Differences", AER 111(12); synthetic control:
Abadie, Diamond & Hainmueller 2010, JASA 105(490)) for a balanced panel in which a set of
treated units (a partnership's schools) is treated from one common period and the other
units (a matched comparison family) are never treated:

* unit weights omega (which comparison units make up the synthetic comparison) and time
  weights lambda (which pre-treatment periods form the baseline) are solved by synthdid's
  Frank-Wolfe solver with exact line search (``sc.weight.fw``/``fw.step``), in two rounds:
  at most 100 iterations, then ``sparsify_function`` (weights at or below max/4 set to zero,
  renormalised) and a second run of at most ``max.iter`` = 1e4 iterations from there;
* defaults as ``synthdid_estimate``: noise level = SD (n-1) of the first differences of the
  control outcomes before treatment; zeta.omega = (N1 * T1)^(1/4) * noise level;
  zeta.lambda = 1e-6 * noise level; intercepts in both weight problems;
  min.decrease = 1e-5 * noise level;
* ``sc_estimate``: omega without intercept, zeta.omega = 1e-6 * noise level, lambda = 0;
  ``did_estimate``: uniform omega and lambda;
* several treated units are averaged (synthdid's collapsed form), so the estimate is the
  effect on the treated units' average;
* standard errors as ``vcov.synthdid_estimate``: ``"placebo"`` (Algorithm 4, the default
  and the only one that works with one treated unit; 200 replications), ``"jackknife"``
  (Algorithm 3, weights held fixed) and ``"bootstrap"`` (Algorithm 2); confidence
  intervals use the normal approximation, as synthdid's summary does.

Replications are deterministic given ``seed`` (numpy's PCG64; R's random streams are not
reproduced, so a replication-based SE agrees with synthdid's only up to Monte-Carlo error).
The placebo replications run as one batch through a vectorised Frank-Wolfe solver: each
replication follows exactly the iterations it would follow on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from evaluation.errors import InputError, problem
from evaluation.estimators.fixed_effects import missing_column
from evaluation.estimators.results import Estimate, EstimatorResult, VarianceConvention

__all__ = ["synthdid_estimate", "sc_estimate", "did_estimate", "SE_METHODS"]

#: Standard-error methods of ``vcov.synthdid_estimate`` (None: no standard error).
SE_METHODS = ("placebo", "jackknife", "bootstrap")

_MAX_ITER = 10_000          # synthdid max.iter
_MAX_ITER_PRE_SPARSIFY = 100  # synthdid max.iter.pre.sparsify
_GRAM_BUDGET = 4_000_000  # float64 entries of Gram matrices per batch of placebo fits


# ----------------------------------------------------------------------------------------
# Panel -> matrix (synthdid's panel.matrices)
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Block:
    """Y is N x T: control rows first, then treated rows; columns in time order."""

    Y: np.ndarray
    N0: int
    T0: int
    controls: list
    treated: list
    times: list


def _py(value):
    """A JSON-ready Python scalar for a unit or time label."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def _panel_matrices(panel: pd.DataFrame, unit: str, time: str, outcome: str,
                    treated: str) -> _Block:
    if not isinstance(panel, pd.DataFrame):
        raise InputError(problem("a pandas DataFrame panel", value=type(panel).__name__))
    for col in (unit, time, outcome, treated):
        if col not in panel.columns:
            raise missing_column(col, panel)
    frame = panel[[unit, time, outcome, treated]]
    problems = []
    for col in (unit, time, outcome, treated):
        miss = frame[col].isna().to_numpy()
        if miss.any():
            i = int(np.flatnonzero(miss)[0])
            problems.append(problem(f"a value in every row ({int(miss.sum())} missing; first at "
                                    f"data row {i + 1})", column=col, value=None))
    if problems:
        raise InputError(problems, summary="The panel has missing values.")

    y = pd.to_numeric(frame[outcome], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isfinite(y)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(problem(f"a finite number ({int(bad.sum())} rows are not; first at "
                                 f"data row {i + 1})", column=outcome, value=frame[outcome].iloc[i]))
    w_raw = frame[treated]
    if pd.api.types.is_bool_dtype(w_raw.dtype):
        w = w_raw.to_numpy(dtype=float)
    else:
        w = pd.to_numeric(w_raw, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isin(w, [0.0, 1.0])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(problem("a treatment indicator of 0 or 1 (1 = treated in this period)",
                                 column=treated, value=w_raw.iloc[i]))

    units, u_idx = np.unique(frame[unit].to_numpy(), return_inverse=True)
    times, t_idx = np.unique(frame[time].to_numpy(), return_inverse=True)
    N, T = len(units), len(times)
    cell = u_idx * T + t_idx
    counts = np.bincount(cell, minlength=N * T)
    if (counts > 1).any():
        k = int(np.flatnonzero(counts > 1)[0])
        raise InputError(problem(
            f"one row per unit and period; {int((counts > 1).sum())} (unit, period) pairs occur "
            f"more than once, e.g. unit {_py(units[k // T])!r} in {_py(times[k % T])!r}",
            column=f"{unit}, {time}"))
    if (counts == 0).any():
        holes = np.flatnonzero(counts == 0)
        k = int(holes[0])
        raise InputError(problem(
            f"a balanced panel (every unit observed in every period): {len(holes)} of {N * T} "
            f"unit-periods are missing, e.g. unit {_py(units[k // T])!r} in {_py(times[k % T])!r}",
            column=f"{unit}, {time}"), summary="Synthetic control and synthetic DiD need a balanced panel.")
    Y = np.empty(N * T)
    Y[cell] = y
    W = np.empty(N * T)
    W[cell] = w
    Y, W = Y.reshape(N, T), W.reshape(N, T)

    ever = W.any(axis=1)
    if not ever.any():
        raise InputError(problem("at least one treated unit (treatment indicator 1 in some "
                                 "period); no unit is ever treated", column=treated))
    if ever.all():
        raise InputError(problem("at least one never-treated comparison unit; every unit is "
                                 "treated in some period", column=treated))
    T0 = int(np.flatnonzero(W.any(axis=0))[0])  # periods before anybody is treated
    starts = {}
    for i in np.flatnonzero(ever):
        first = int(np.flatnonzero(W[i])[0])
        if first != T0 or not W[i, first:].all():
            starts[_py(units[i])] = (_py(times[first]), bool(W[i, first:].all()))
    if starts:
        shown = list(starts.items())[:5]
        what = "; ".join(f"unit {u!r} from {t!r}" + ("" if stays else " (and later untreated)")
                         for u, (t, stays) in shown)
        raise InputError(problem(
            f"a block treatment: every treated unit treated from {_py(times[T0])!r} (the first "
            f"treated period) to the end; {len(starts)} units are not ({what})", column=treated),
            summary="Treatment adoption is not simultaneous (staggered or switching off); "
                    "synthetic DiD here needs treated units that all start in the same period.")
    if T0 < 2:
        raise InputError(problem(
            f"at least 2 periods before treatment starts in {_py(times[T0])!r}; there "
            f"{'is' if T0 == 1 else 'are'} {T0} (the weights and the noise level need "
            f"pre-treatment first differences)", column=time))
    N0 = int((~ever).sum())
    if N0 * (T0 - 1) < 2:
        raise InputError(problem(
            f"at least 2 pre-treatment first differences among comparison units to estimate the "
            f"noise level; {N0} comparison unit(s) x {T0 - 1} difference(s)", column=time))
    order = np.concatenate([np.flatnonzero(~ever), np.flatnonzero(ever)])
    return _Block(Y=Y[order], N0=N0, T0=T0,
                  controls=[_py(u) for u in units[~ever]], treated=[_py(u) for u in units[ever]],
                  times=[_py(t) for t in times])


# ----------------------------------------------------------------------------------------
# The solver (synthdid's fw.step / sc.weight.fw / sparsify_function), batched
# ----------------------------------------------------------------------------------------

def _fw(Y: np.ndarray, zeta: float, intercept: bool, x: np.ndarray, min_decrease: float,
        max_iter: int) -> np.ndarray:
    """``sc.weight.fw`` on a batch: Y is (B, n, k + 1), x the (B, k) starting weights.

    Minimises zeta^2 |x|^2 + |A x - b|^2 / n over the simplex (A = first k columns of Y,
    b = the last), column-centred first if ``intercept``: Frank-Wolfe (``fw.step``) with
    exact line search; each problem stops after an iteration that lowers the objective by
    no more than min_decrease^2, or after max_iter, as the R loop does on its own.
    For speed the gradient A'(Ax - b) is carried as G x - A'b (G = A'A), the residual
    A x - b is updated along each step (both recomputed every 64 iterations), and the
    step direction d.x = e_i - x enters only through its inner products.
    """
    Y = np.asarray(Y, dtype=float)
    if intercept:
        Y = Y - Y.mean(axis=1, keepdims=True)
    B, n, k1 = Y.shape
    k = k1 - 1
    At = np.ascontiguousarray(Y[:, :, :k].transpose(0, 2, 1))  # (B, k, n): At[b, i] = A[, i]
    b = np.ascontiguousarray(Y[:, :, k])
    G = np.matmul(At, At.transpose(0, 2, 1))
    c = np.matmul(At, b[:, :, None])[:, :, 0]
    x = np.array(x, dtype=float, copy=True)
    if B == 1:
        x[0] = _fw1(At[0], b[0], G[0], c[0], float(zeta) ** 2, n, x[0],
                    float(min_decrease) ** 2, max_iter)
        return x
    z2 = float(zeta) ** 2
    eta = n * z2
    tol = float(min_decrease) ** 2
    out = x.copy()
    ids = np.arange(B)
    prev = np.full(B, np.nan)
    t = 0
    while t < max_iter and ids.size:
        if t % 64 == 0:
            g = np.matmul(G, x[:, :, None])[:, :, 0]
            r = np.matmul(x[:, None, :], At)[:, 0, :] - b
        t += 1
        rows = np.arange(ids.size)
        half_grad = g - c + eta * x
        i = np.argmin(half_grad, axis=1)  # first minimum, as which.min
        xi = x[rows, i]
        xx = np.einsum("bk,bk->b", x, x)
        d_err = At[rows, i, :] - b - r  # A[, i] - A x = A d.x
        denom = np.einsum("bn,bn->b", d_err, d_err) + eta * (xx - 2 * xi + 1)
        num = np.einsum("bk,bk->b", half_grad, x) - half_grad[rows, i]  # -half.grad . d.x
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(denom > 0, num / denom, 0.0)
        step = np.minimum(1.0, np.maximum(0.0, step))
        at_one = np.flatnonzero(xi == 1.0)
        if at_one.size:  # all(d.x == 0): x is already the vertex i
            step[at_one[np.count_nonzero(x[at_one], axis=1) == 1]] = 0.0
        x = x * (1 - step)[:, None]
        x[rows, i] += step
        r = r + step[:, None] * d_err
        g = g + step[:, None] * (G[rows, i, :] - g)
        val = z2 * np.einsum("bk,bk->b", x, x) + np.einsum("bn,bn->b", r, r) / n
        if t >= 2:
            keep = (prev - val) > tol
            if not keep.all():
                out[ids[~keep]] = x[~keep]
                ids, x, g, r, val = ids[keep], x[keep], g[keep], r[keep], val[keep]
                At, b, G, c = At[keep], b[keep], G[keep], c[keep]
        prev = val
    out[ids] = x
    return out


def _fw1(At: np.ndarray, b: np.ndarray, G: np.ndarray, c: np.ndarray, z2: float, n: int,
         x: np.ndarray, tol: float, max_iter: int) -> np.ndarray:
    """:func:`_fw` for one problem (the same arithmetic on vectors, fewer calls)."""
    eta = n * z2
    prev = np.nan
    t = 0
    while t < max_iter:
        if t % 64 == 0:
            g = G @ x
            r = x @ At - b
        t += 1
        half_grad = g - c
        half_grad += eta * x
        i = int(half_grad.argmin())
        xi = float(x[i])
        xx = float(x @ x)
        if xi == 1.0 and np.count_nonzero(x) == 1:
            step = 0.0
            d_err = None
        else:
            d_err = At[i] - b
            d_err -= r
            denom = float(d_err @ d_err) + eta * (xx - 2 * xi + 1)
            num = float(half_grad @ x) - float(half_grad[i])
            step = min(1.0, max(0.0, num / denom)) if denom > 0 else 0.0
        if step:
            x = x * (1 - step)
            x[i] += step
            r = r + step * d_err
            g = g * (1 - step)
            g += step * G[i]
        val = z2 * float(x @ x) + float(r @ r) / n
        if t >= 2 and not (prev - val) > tol:
            break
        prev = val
    return x


def _sparsify(v: np.ndarray) -> np.ndarray:
    """synthdid's ``sparsify_function`` row-wise: zero weights <= max/4, renormalise."""
    v = np.where(v <= v.max(axis=1, keepdims=True) / 4, 0.0, v)
    return v / v.sum(axis=1, keepdims=True)


def _solve(Y: np.ndarray, zeta: float, intercept: bool, init: np.ndarray | None,
           min_decrease: float, max_iter: int) -> np.ndarray:
    """Two rounds as ``synthdid_estimate``: 100 iterations, sparsify, then up to max_iter."""
    B, _, k1 = Y.shape
    x0 = np.full((B, k1 - 1), 1.0 / (k1 - 1)) if init is None else init
    first = _fw(Y, zeta, intercept, x0, min_decrease, _MAX_ITER_PRE_SPARSIFY)
    return _fw(Y, zeta, intercept, _sparsify(first), min_decrease, max_iter)


def _sum_normalize(x: np.ndarray) -> np.ndarray:
    """synthdid's ``sum_normalize`` row-wise (uniform weights for a zero row)."""
    s = x.sum(axis=1, keepdims=True)
    uniform = np.full_like(x, 1.0 / x.shape[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s != 0, x / np.where(s != 0, s, 1.0), uniform)


@dataclass(frozen=True)
class _Opts:
    """synthdid's ``opts`` attribute: what a replication re-uses from the original fit."""

    zeta_omega: float
    zeta_lambda: float
    omega_intercept: bool
    lambda_intercept: bool
    update_omega: bool
    update_lambda: bool
    min_decrease: float
    noise_level: float
    max_iter: int = _MAX_ITER


def _fit(Y: np.ndarray, N0: int, T0: int, opts: _Opts, omega: np.ndarray | None,
         lam: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``synthdid_estimate`` (no covariates) on a batch Y (B, N, T) sharing N0 and T0.

    ``omega``/``lam`` (B, N0)/(B, T0) are initial values when the weights are updated and
    the weights themselves when not. Returns (omega, lambda, estimate).
    """
    B, N, T = Y.shape
    N1, T1 = N - N0, T - T0
    # collapsed.form: controls x pre, control post means, treated pre means, treated post mean
    Yc = np.empty((B, N0 + 1, T0 + 1))
    Yc[:, :N0, :T0] = Y[:, :N0, :T0]
    Yc[:, :N0, T0] = Y[:, :N0, T0:].mean(axis=2)
    Yc[:, N0, :T0] = Y[:, N0:, :T0].mean(axis=1)
    Yc[:, N0, T0] = Y[:, N0:, T0:].mean(axis=(1, 2))
    if opts.update_lambda:
        lam = _solve(Yc[:, :N0, :], opts.zeta_lambda, opts.lambda_intercept, lam,
                     opts.min_decrease, opts.max_iter)
    if opts.update_omega:
        omega = _solve(np.ascontiguousarray(Yc[:, :, :T0].transpose(0, 2, 1)), opts.zeta_omega,
                       opts.omega_intercept, omega, opts.min_decrease, opts.max_iter)
    u = np.concatenate([-omega, np.full((B, N1), 1.0 / N1)], axis=1)
    v = np.concatenate([-lam, np.full((B, T1), 1.0 / T1)], axis=1)
    tau = np.einsum("bn,bnt,bt->b", u, Y, v)
    return omega, lam, tau


# ----------------------------------------------------------------------------------------
# Standard errors (synthdid's vcov.R)
# ----------------------------------------------------------------------------------------

def _placebo_draws(Y: np.ndarray, N0: int, T0: int, opts: _Opts, omega: np.ndarray,
                   lam: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """``placebo_se``'s replications, one per row of ``perms`` (permutations of the controls):
    the last N1 controls of each permutation play the treated units.

    Each replication starts from the fitted omega restricted to its controls (renormalised)
    and the fitted lambda, and re-solves the weights the original fit solved, with the
    original fit's zetas and stopping rule (synthdid's ``opts``).
    """
    N1 = Y.shape[0] - N0
    n0 = N0 - N1
    R = perms.shape[0]
    # batches small enough that the solver's Gram matrices stay within ~32 MB
    chunk = max(1, min(R, _GRAM_BUDGET // max(n0 * n0, T0 * T0)))
    out = np.empty(R)
    for lo in range(0, R, chunk):
        p = perms[lo:lo + chunk]
        om0 = _sum_normalize(omega[p[:, :n0]])
        lam0 = np.broadcast_to(lam, (len(p), T0)).copy()
        out[lo:lo + chunk] = _fit(Y[p], n0, T0, opts, om0, lam0)[2]
    return out


def _jackknife_se(Y: np.ndarray, N0: int, T0: int, omega: np.ndarray, lam: np.ndarray) -> float:
    """``jackknife_se`` with the fitted weights held fixed (Algorithm 3).

    NaN with one treated unit or one control of non-zero weight, as synthdid.
    """
    N, T = Y.shape
    N1, T1 = N - N0, T - T0
    if N1 == 1 or np.count_nonzero(omega) == 1:
        return float("nan")
    v = np.concatenate([-lam, np.full(T1, 1.0 / T1)])
    d = Y @ v  # each unit's post-minus-baseline difference
    u = np.empty(N)
    for i in range(N):
        if i < N0:
            om = np.delete(omega, i)
            om = om / om.sum() if om.sum() != 0 else np.full(N0 - 1, 1.0 / (N0 - 1))
            u[i] = d[N0:].mean() - om @ np.delete(d[:N0], i)
        else:
            u[i] = np.delete(d[N0:], i - N0).mean() - omega @ d[:N0]
    return float(np.sqrt((N - 1) / N * (N - 1) * np.var(u, ddof=1)))


def _bootstrap_draws(Y: np.ndarray, N0: int, T0: int, opts: _Opts, omega: np.ndarray,
                     lam: np.ndarray, replications: int, rng: np.random.Generator) -> np.ndarray:
    """``bootstrap_sample`` (Algorithm 2): resample units; redraw samples with one arm empty."""
    N = Y.shape[0]
    out = np.empty(replications)
    count = 0
    while count < replications:
        ind = np.sort(rng.integers(0, N, size=N))
        n0 = int((ind < N0).sum())
        if n0 == 0 or n0 == N:
            continue
        om0 = _sum_normalize(omega[ind[:n0]][None, :])
        out[count] = _fit(Y[ind][None], n0, T0, opts, om0, lam[None, :].copy())[2][0]
        count += 1
    return out


# ----------------------------------------------------------------------------------------
# Public estimators
# ----------------------------------------------------------------------------------------

_LABELS = {"synthdid": "Synthetic difference-in-differences (Arkhangelsky et al. 2021)",
           "sc": "Synthetic control (Abadie et al. 2010; synthdid's sc_estimate)",
           "did": "Difference-in-differences (synthdid's did_estimate)"}


def _fit_block(kind: str, Y: np.ndarray, N0: int, T0: int):
    """The three estimators' defaults (synthdid_estimate, sc_estimate, did_estimate) and fit.

    Returns (opts, omega, lambda, estimate).
    """
    N, T = Y.shape
    N1, T1 = N - N0, T - T0
    noise = float(np.std(np.diff(Y[:N0, :T0], axis=1), ddof=1))
    min_decrease = 1e-5 * noise
    if kind == "synthdid":
        opts = _Opts(zeta_omega=(N1 * T1) ** 0.25 * noise, zeta_lambda=1e-6 * noise,
                     omega_intercept=True, lambda_intercept=True, update_omega=True,
                     update_lambda=True, min_decrease=min_decrease, noise_level=noise)
        om0, lam0 = None, None
    elif kind == "sc":
        opts = _Opts(zeta_omega=1e-6 * noise, zeta_lambda=1e-6 * noise, omega_intercept=False,
                     lambda_intercept=True, update_omega=True, update_lambda=False,
                     min_decrease=min_decrease, noise_level=noise)
        om0, lam0 = None, np.zeros((1, T0))
    else:
        opts = _Opts(zeta_omega=(N1 * T1) ** 0.25 * noise, zeta_lambda=1e-6 * noise,
                     omega_intercept=True, lambda_intercept=True, update_omega=False,
                     update_lambda=False, min_decrease=min_decrease, noise_level=noise)
        om0, lam0 = np.full((1, N0), 1.0 / N0), np.full((1, T0), 1.0 / T0)
    om, lm, tau = _fit(Y[None], N0, T0, opts, om0, lam0)
    return opts, om[0], lm[0], float(tau[0])


def _estimate(kind: str, panel, unit, time, outcome, treated, se, replications, seed):
    if se is not None and se not in SE_METHODS:
        raise InputError(problem(f"a standard-error method, one of {', '.join(SE_METHODS)} "
                                 f"(or None)", value=se))
    if se in ("placebo", "bootstrap") and (not isinstance(replications, (int, np.integer))
                                           or replications < 2):
        raise InputError(problem("at least 2 replications", value=replications))
    blk = _panel_matrices(panel, unit, time, outcome, treated)
    Y, N0, T0 = blk.Y, blk.N0, blk.T0
    N, T = Y.shape
    N1, T1 = N - N0, T - T0
    opts, omega, lam, tau = _fit_block(kind, Y, N0, T0)

    notes: list[str] = []
    draws = None
    if se == "placebo":
        if N0 <= N1:
            raise InputError(problem(
                f"more comparison units than treated units for placebo standard errors; "
                f"{N0} comparison and {N1} treated", column=treated))
        rng = np.random.default_rng(seed)
        perms = np.stack([rng.permutation(N0) for _ in range(replications)])
        draws = _placebo_draws(Y, N0, T0, opts, omega, lam, perms)
        se_value = float(np.sqrt((replications - 1) / replications) * np.std(draws, ddof=1))
        small = (f"sqrt((R-1)/R) * SD of R = {replications} placebo estimates (synthdid "
                 f"vcov method 'placebo', Algorithm 4 of Arkhangelsky et al. 2021; seed {seed}); "
                 f"units exchangeable and independent: the {N1} treated unit(s) are taken as "
                 f"{N1} independent draws like comparison units")
    elif se == "bootstrap":
        if N1 == 1:
            se_value = float("nan")
            notes.append("The bootstrap standard error needs more than one treated unit; use placebo.")
        else:
            draws = _bootstrap_draws(Y, N0, T0, opts, omega, lam, replications,
                                     np.random.default_rng(seed))
            se_value = float(np.sqrt((replications - 1) / replications) * np.std(draws, ddof=1))
        small = (f"sqrt((R-1)/R) * SD of R = {replications} unit-bootstrap estimates (synthdid "
                 f"vcov method 'bootstrap', Algorithm 2; seed {seed})")
    elif se == "jackknife":
        se_value = _jackknife_se(Y, N0, T0, omega, lam)
        if not np.isfinite(se_value):
            notes.append("The jackknife standard error needs more than one treated unit and more "
                         "than one comparison unit with non-zero weight; use placebo.")
        small = ("sqrt((N-1)/N * (N-1) * var) of leave-one-unit-out estimates with the weights "
                 "held fixed (synthdid vcov method 'jackknife', Algorithm 3)")
    else:
        se_value = float("nan")
        small = "none (no standard error requested)"
    if kind == "sc" and se == "jackknife":
        notes.append("Arkhangelsky et al. (2021, section 5) do not recommend the jackknife for "
                     "synthetic control.")
    if N1 == 1 and se == "placebo":
        notes.append("One treated unit: the placebo standard error assumes the treated unit's "
                     "noise is like the comparison units' (homoskedasticity across units).")
    if N1 > 1 and se == "placebo":
        notes.append(f"{N1} treated units: the placebo standard error treats them as {N1} independent "
                     "units like the comparison units (Algorithm 4 draws them at random); shocks they "
                     "share (the schools of one partnership) are not represented, so with correlated "
                     "treated units it is too small: the variance of their mean is larger by the design "
                     "effect 1 + (N1 - 1) ICC, which the placebo does not see.")
    variance = VarianceConvention(kind=se or "none", small_sample=small, cluster=unit,
                                  n_clusters=N, df=None)

    # synthdid_effect_curve and the series behind synthdid's plot
    treated_mean = Y[N0:].mean(axis=0)
    synthetic = omega @ Y[:N0]
    gap = treated_mean - synthetic
    baseline = float(gap[:T0] @ lam)
    gaps = [{"time": blk.times[t], "post": bool(t >= T0), "treated": float(treated_mean[t]),
             "synthetic": float(synthetic[t]), "gap": float(gap[t]),
             "effect": float(gap[t] - baseline),
             "lambda": float(lam[t]) if t < T0 else None} for t in range(T)]
    unit_weights = sorted(({"unit": u, "omega": float(w)} for u, w in zip(blk.controls, omega)),
                          key=lambda r: -r["omega"])
    details = {
        "method": kind,
        "omega": unit_weights,
        "lambda": [{"time": blk.times[t], "lambda": float(lam[t])} for t in range(T0)],
        "gaps": gaps,
        "baseline_gap": baseline,
        "treated_units": list(blk.treated),
        "control_units": list(blk.controls),
        "first_treated_period": blk.times[T0],
        "N0": N0, "N1": N1, "T0": T0, "T1": T1,
        "noise_level": opts.noise_level,
        "zeta_omega": opts.zeta_omega,
        "zeta_lambda": opts.zeta_lambda,
        "omega_intercept": opts.omega_intercept,
        "lambda_intercept": opts.lambda_intercept,
        "min_decrease": opts.min_decrease,
        "se_method": se,
        "replications": replications if se in ("placebo", "bootstrap") else None,
        "seed": seed if se in ("placebo", "bootstrap") else None,
        "replicate_estimates": None if draws is None else [float(d) for d in draws],
    }
    return EstimatorResult(estimator=_LABELS[kind], variance=variance, n_obs=N * T, n_units=N,
                           overall=Estimate.from_se(tau, se_value, variance), notes=notes,
                           details=details)


def synthdid_estimate(panel: pd.DataFrame, *, unit: str, time: str, outcome: str, treated: str,
                      se: str | None = "placebo", replications: int = 200,
                      seed: int = 0) -> EstimatorResult:
    """Synthetic DiD (Arkhangelsky et al. 2021, Algorithm 1), as R ``synthdid_estimate``.

    ``treated`` is a 0/1 column: 1 for a treated unit from the common first treated period
    on. Several treated units are averaged. ``details`` holds the unit weights ``omega``
    (the comparison: who, with what weight), the time weights ``lambda``, and ``gaps``: per
    period the treated average, the omega-weighted comparison, their gap and the effect
    (gap minus the lambda-weighted pre-treatment gap; its post-period mean is the estimate).
    ``se``: "placebo" (default), "jackknife", "bootstrap" or None.
    """
    return _estimate("synthdid", panel, unit, time, outcome, treated, se, replications, seed)


def sc_estimate(panel: pd.DataFrame, *, unit: str, time: str, outcome: str, treated: str,
                se: str | None = "placebo", replications: int = 200,
                seed: int = 0) -> EstimatorResult:
    """Synthetic control (Abadie et al. 2010) as R ``sc_estimate``: omega without intercept,
    zeta.omega = 1e-6 * noise level, no time weights (lambda = 0). Same arguments and
    details as :func:`synthdid_estimate`."""
    return _estimate("sc", panel, unit, time, outcome, treated, se, replications, seed)


def did_estimate(panel: pd.DataFrame, *, unit: str, time: str, outcome: str, treated: str,
                 se: str | None = "placebo", replications: int = 200,
                 seed: int = 0) -> EstimatorResult:
    """Difference-in-differences as R ``did_estimate``: uniform omega and lambda. Same
    arguments and details as :func:`synthdid_estimate`."""
    return _estimate("did", panel, unit, time, outcome, treated, se, replications, seed)
