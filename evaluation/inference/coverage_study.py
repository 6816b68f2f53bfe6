"""Monte Carlo coverage of the headline intervals: the calibration the project runs on itself.

Design (one replication), following the shape of a partnership study:

* ``n_treated`` partnerships (treated clusters) of unequal size: schools per partnership
  round(exp(N(log 5, 0.9))) clipped to [2, 40] (skewed: median 5, a few of 20-40);
* ``n_comparison`` = 400 comparison schools, each its own cluster (the pipeline's singleton
  comparison clusters), with matching weights Gamma(2, 1/2) (mean 1; treated schools weight 1),
  used by every estimator and every refit;
* T = 8 years; partnerships join in years 4, 5 or 6 (3 staggered cohorts, assigned in turn over a
  random order, so each cohort has about a third of the partnerships), never leave;
* y_it = a_i + 0.1 t + u_it + s_{p(i),t} + tau_it D_it with u an AR(1) (rho = 0.5, unit
  variance) per school and s an AR(1) (rho = 0.5, SD 0.5) per partnership and year, shared by the
  schools of a partnership (the shocks that make clustering by partnership matter: with 20
  schools the design effect is about 1 + 19 * 0.2);
* effect "zero" (tau = 0), or "heterogeneous": tau = 0.1 (1 + 0.5 e)(1 + 0.5 (g - 4)), growing
  with years since joining e and larger for later cohorts (so TWFE's estimand differs from the
  ATT).

The true ATT is the mean of tau over treated post-joining school-years (the estimand of the
simple CS aggregation, the Sun-Abraham overall ATT and the imputation ATT on a balanced panel).
TWFE targets its own weighted average of tau (Goodman-Bacon 2021); its coverage is measured for
that value (the TWFE regression of the noise-free tau D) and, separately, for the ATT.

Parallel trends hold in every design, so a pre-test rejection is a false positive.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from evaluation.inference.candidates import METHODS, interval

__all__ = ["Design", "EFFECTS", "simulate", "replicate", "run_cell", "CellResult",
           "ROW_ORDER", "PRETESTS"]

EFFECTS = ("zero", "heterogeneous")
PRETESTS = ("native", "average", "average-jk", "sup-t")
COLUMNS = dict(y="y", unit="urn", time="year", cohort="cohort", cluster="cluster", weights="weight")

#: rows of the table, in order: (estimator, method) plus the study-only rows
ROW_ORDER = ([("callaway_santanna", "analytic-means")]
             + [(e, m) for e in ("callaway_santanna", "sun_abraham", "imputation", "twfe")
                for m in METHODS[e]]
             + [("twfe", "ri")])


@dataclass(frozen=True)
class Design:
    n_treated: int
    effect: str = "zero"
    n_comparison: int = 400
    periods: int = 8
    cohorts: tuple = (4, 5, 6)
    size_median: float = 5.0
    size_sigma: float = 0.9
    size_min: int = 2
    size_max: int = 40
    rho: float = 0.5
    shock_sd: float = 0.5
    weighted: bool = True

    def describe(self) -> str:
        return (f"{self.n_treated} partnerships of 2-40 schools (median 5) + {self.n_comparison} "
                f"singleton comparison schools, T = {self.periods}, cohorts {list(self.cohorts)}, "
                f"AR(1) rho {self.rho}, partnership-year shock SD {self.shock_sd}, "
                f"effect {self.effect}, {'matching weights' if self.weighted else 'unweighted'}")


def _ar1(rng, n, T, rho, sd):
    e = rng.normal(0.0, sd * np.sqrt(1 - rho ** 2), (n, T))
    u = np.empty((n, T))
    u[:, 0] = rng.normal(0.0, sd, n)
    for t in range(1, T):
        u[:, t] = rho * u[:, t - 1] + e[:, t]
    return u


def effect(g, e):
    """The heterogeneous effect tau(g, e) (0 before joining)."""
    return np.where(e >= 0, 0.1 * (1 + 0.5 * e) * (1 + 0.5 * (g - 4)), 0.0)


def simulate(design: Design, rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    """One panel (columns urn, year, y, cohort, weight, cluster, tau) and its truth
    {"att": ..., "twfe": ...} (twfe filled by :func:`replicate`)."""
    d = design
    G1, T = d.n_treated, d.periods
    sizes = np.clip(np.round(np.exp(rng.normal(np.log(d.size_median), d.size_sigma, G1))),
                    d.size_min, d.size_max).astype(int)
    coh = np.asarray(d.cohorts, dtype=float)[rng.permutation(np.arange(G1) % len(d.cohorts))]
    part = np.concatenate([np.repeat(np.arange(G1), sizes), G1 + np.arange(d.n_comparison)])
    N, P = part.size, G1 + d.n_comparison
    g = np.concatenate([coh[np.repeat(np.arange(G1), sizes)], np.zeros(d.n_comparison)])
    w = np.ones(N)
    if d.weighted:
        w[sizes.sum():] = rng.gamma(2.0, 0.5, d.n_comparison)
    years = np.arange(1, T + 1)
    Y = (rng.normal(0.0, 1.0, N)[:, None] + 0.1 * years[None, :]
         + _ar1(rng, N, T, d.rho, 1.0) + _ar1(rng, P, T, d.rho, d.shock_sd)[part])
    e = years[None, :] - g[:, None]
    D = (g[:, None] > 0) & (e >= 0)
    tau = effect(g[:, None], e) * D if d.effect == "heterogeneous" else np.zeros((N, T))
    Y = Y + tau
    panel = pd.DataFrame({"urn": np.repeat(np.arange(N), T), "year": np.tile(years, N),
                          "y": Y.ravel(), "cohort": np.repeat(g, T).astype(np.int64),
                          "weight": np.repeat(w, T), "cluster": np.repeat(part, T),
                          "tau": tau.ravel()})
    return panel, {"att": float(tau[D].mean())}


def _fit_all(panel, which) -> dict:
    """The primary estimators in ``which``, fitted as the pipeline fits them (clustered by
    partnership, matching weights)."""
    from evaluation.estimators.callaway_santanna import att_gt
    from evaluation.estimators.imputation import imputation_did
    from evaluation.estimators.sun_abraham import sun_abraham
    from evaluation.estimators.twfe import twfe_did

    fit = {"callaway_santanna": lambda: att_gt(panel, control="never", **COLUMNS),
           "sun_abraham": lambda: sun_abraham(panel, **COLUMNS),
           "imputation": lambda: imputation_did(panel, **COLUMNS),
           "twfe": lambda: twfe_did(panel, **COLUMNS)}
    return {name: fit[name]() for name in fit if name in which}


def replicate(design: Design, seed, *, B: int = 999, n_perm: int = 199,
              alpha: float = 0.05, pretests=PRETESTS, rows=None) -> dict:
    """One replication: {"cover": {row: bool}, "cover_att": {twfe row: bool},
    "reject0": {row: bool}, "pretest": {name: bool}, "truth": {...}}.

    rows: the "estimator:method" rows to compute (default: all of ROW_ORDER); pretests: the
    pre-tests to run (names of PRETESTS; empty for none)."""
    from evaluation.estimators.twfe import twfe_did
    from evaluation.inference.pretest import pretest_bootstrap
    from evaluation.inference.randomisation import randomisation_test

    rng = np.random.default_rng(seed)
    panel, truth = simulate(design, rng)
    bseed = int(rng.integers(2 ** 31))
    if design.effect == "zero":
        truth["twfe"] = 0.0
    else:
        noise_free = panel.assign(y=panel["tau"])
        truth["twfe"] = float(twfe_did(noise_free, **COLUMNS).overall.estimate)
    out = {"cover": {}, "cover_att": {}, "reject0": {}, "pretest": {}, "truth": truth}
    wanted = [r for r in ROW_ORDER if rows is None or f"{r[0]}:{r[1]}" in set(rows)]
    fits = _fit_all(panel, {e for e, _ in wanted} | ({"callaway_santanna"} if pretests else set()))
    for est, method in wanted:
        row = f"{est}:{method}"
        if method == "ri":
            if design.effect != "zero":
                continue
            ri = randomisation_test(panel, y="y", unit="urn", time="year", cohort="cohort",
                                    cluster="cluster", n_perm=n_perm, seed=bseed)
            out["cover"][row] = bool(ri.p_value > alpha)
            out["reject0"][row] = not out["cover"][row]
            out["cover_att"][row] = out["cover"][row]
            continue
        target = truth["twfe"] if est == "twfe" else truth["att"]
        kw = dict(alpha=alpha, null=target, seed=bseed, B=B)
        if est == "callaway_santanna":
            iv = interval(est, method, gt=fits[est], **kw)
        else:
            iv = interval(est, method, panel=panel, result=fits[est], **kw)
        out["cover"][row] = bool(iv.ci_low <= target <= iv.ci_high)
        out["reject0"][row] = not bool(iv.ci_low <= 0.0 <= iv.ci_high)
        if est == "twfe":
            out["cover_att"][row] = bool(iv.ci_low <= truth["att"] <= iv.ci_high)
    gt = fits.get("callaway_santanna")
    for stat in pretests:
        if stat == "native":
            res = gt.details.get("pretest")
        else:
            res = pretest_bootstrap(gt, statistic=stat, B=B, seed=bseed)
        out["pretest"][stat] = bool(res is not None and res["p_value"] < alpha)
    return out


@dataclass
class CellResult:
    """Counts over the replications of one design."""

    design: Design
    reps: int = 0
    cover: dict = field(default_factory=dict)
    cover_att: dict = field(default_factory=dict)
    reject0: dict = field(default_factory=dict)
    pretest: dict = field(default_factory=dict)
    denominators: dict = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, rep: dict) -> None:
        self.reps += 1
        for key in ("cover", "cover_att", "reject0", "pretest"):
            target = getattr(self, key)
            for k, v in rep[key].items():
                target[k] = target.get(k, 0) + int(v)
                if key == "cover":
                    self.denominators[k] = self.denominators.get(k, 0) + 1
                elif key == "pretest":
                    self.denominators[f"pretest:{k}"] = self.denominators.get(f"pretest:{k}", 0) + 1

    def merge(self, other: "CellResult") -> None:
        self.reps += other.reps
        self.seconds += other.seconds
        for key in ("cover", "cover_att", "reject0", "pretest", "denominators"):
            mine = getattr(self, key)
            for k, v in getattr(other, key).items():
                mine[k] = mine.get(k, 0) + v

    def rate(self, key: str, row: str) -> tuple[float, float, int] | None:
        """(rate, Monte Carlo SE sqrt(p(1-p)/R), R) of a counter, None if never measured."""
        den = self.denominators.get(f"pretest:{row}" if key == "pretest" else row)
        if not den:
            return None
        p = getattr(self, key)[row] / den
        return p, float(np.sqrt(p * (1 - p) / den)), den

    def to_dict(self) -> dict:
        return {"design": asdict(self.design), "reps": self.reps, "cover": self.cover,
                "cover_att": self.cover_att, "reject0": self.reject0, "pretest": self.pretest,
                "denominators": self.denominators, "seconds": self.seconds}


def run_cell(design: Design, reps: range, *, seed: int = 2024, B: int = 999, n_perm: int = 199,
             alpha: float = 0.05, pretests=PRETESTS, rows=None) -> CellResult:
    """Replications ``reps`` (indices, so a cell can be split across processes) of one design.

    Replication r uses the seed [seed, n_treated, r], whatever the split; the two effect designs
    share their noise draws (common random numbers), so their difference is the effect's."""
    t0 = time.perf_counter()
    cell = CellResult(design)
    for r in reps:
        cell.add(replicate(design, [seed, design.n_treated, r], B=B, n_perm=n_perm,
                           alpha=alpha, pretests=pretests, rows=rows))
    cell.seconds = time.perf_counter() - t0
    return cell
