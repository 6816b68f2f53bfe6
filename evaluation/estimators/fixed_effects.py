"""Linear regression with high-dimensional fixed effects (fixest-style ``feols``).

Fixed effects are absorbed by the method of alternating projections
(Guimaraes & Portugal 2010; Gaure 2013, "OLS with multiple high dimensional
category variables"), accelerated with the Irons & Tuck (1969) extrapolation
that fixest uses (Berge 2018). Group means come from ``np.bincount``, so a
sweep is a handful of vectorised passes over the data.
"""

from __future__ import annotations

import numpy as np

__all__ = ["demean"]


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
    are not enough. Returns a new float64 array with the shape of ``X``.
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
        return out[:, 0].copy() if one_d else np.ascontiguousarray(out)
    projectors = [_Projector(c, weights) for c in codes]

    def sweep(A: np.ndarray) -> np.ndarray:
        for p in projectors:
            p.subtract_means(A)
        return A

    if len(projectors) == 1:
        sweep(out)
        return out[:, 0].copy() if one_d else np.ascontiguousarray(out)

    scale = tol * np.maximum(1.0, np.abs(out).max(axis=0))
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
    x = np.array(out, order="F", copy=True)
    sweeps = 0
    history: list[np.ndarray] = []
    while True:
        history.append(x.copy())
        sweep(x)
        sweeps += 1
        done = converged(x, active)
        if done.any():
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
    return out[:, 0].copy() if one_d else np.ascontiguousarray(out)
