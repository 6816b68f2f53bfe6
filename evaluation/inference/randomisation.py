"""Randomisation inference for difference-in-differences with few partnerships.

The assignment being re-randomised is *which partnerships (clusters) joined and when*: the observed
vector of cluster-level first-treated periods (cohorts, 0 = never joined) is permuted among the
eligible clusters, so every permutation keeps the observed join-year distribution and all schools
of a partnership keep joining together (Fisher 1935; for DiD with few treated clusters, MacKinnon
& Webb 2020, "Randomization inference for difference-in-differences with few treated clusters").

Statistic: by default the TWFE t-statistic with CRV1 standard errors clustered by partnership
(``statistic="twfe_t"``). The studentised statistic is preferred: the test is exact under the sharp
null whatever the statistic, and the t-statistic keeps it asymptotically valid under the weak null
of zero *average* effect with heterogeneous effects (Chung & Romano 2013; Wu & Ding 2021), which the
raw coefficient does not. ``"twfe"`` uses the coefficient; any callable ``panel -> float`` can be
passed (it sees the panel with the permuted cohort column).

p-values (two-sided on |statistic| by default): when the number of distinct assignments (a
multinomial coefficient) is at most ``exact_threshold`` all of them are enumerated and
p = #{|T_a| >= |T_obs|} / #assignments (exact, observed assignment included); otherwise ``n_perm``
assignments are drawn uniformly with replacement and p = (1 + #{|T_b| >= |T_obs|}) / (n_perm + 1)
(Phipson & Smyth 2010, eq. 2), which never understates the exact p-value's size. Statistics
within a relative 1e-9 of the observed one count as ties (as large), which is conservative.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from evaluation.errors import InputError, problem, plain
from evaluation.estimators.fixed_effects import demean, missing_column, numeric_column

__all__ = ["RandomisationResult", "randomisation_test", "n_assignments", "STATISTICS"]

STATISTICS = ("twfe_t", "twfe")
ALTERNATIVES = ("two-sided", "greater", "less")
_TIE = 1e-9
#: entries of one rows x permutations block of the vectorised TWFE statistic.
_BLOCK = 2_000_000


@dataclass
class RandomisationResult:
    """Randomisation test of no effect.

    p_value; exact: True if every distinct assignment was enumerated; n_perm: assignments
    evaluated (all of them when exact, otherwise the sampled ones, observed not counted);
    observed: the statistic on the data; null_distribution: the statistic for each evaluated
    assignment; n_assignments: distinct cluster-level assignments available.
    """

    p_value: float
    exact: bool
    n_perm: int
    observed: float
    null_distribution: np.ndarray = field(repr=False)
    statistic: str = "twfe_t"
    alternative: str = "two-sided"
    n_clusters: int = 0
    n_eligible: int = 0
    n_assignments: int = 0
    seed: object = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"p": self.p_value, "exact": self.exact, "n_perm": int(self.n_perm),
                "observed": self.observed, "statistic": self.statistic,
                "alternative": self.alternative, "n_clusters": int(self.n_clusters),
                "n_eligible": int(self.n_eligible), "n_assignments": int(self.n_assignments),
                "seed": None if self.seed is None else str(self.seed), "notes": list(self.notes)}


def n_assignments(cohorts) -> int:
    """Distinct permutations of a cohort vector: G! / prod_k m_k! (m_k clusters in cohort k)."""
    _, counts = np.unique(np.asarray(cohorts), return_counts=True)
    total = math.factorial(int(counts.sum()))
    for c in counts:
        total //= math.factorial(int(c))
    return total


def _distinct_permutations(values: np.ndarray):
    """Every distinct arrangement of the multiset ``values`` (as index-assignment arrays).

    Chooses the positions of the first value, then of the second among the rest, and so on:
    exactly n! / prod m_k! arrangements, none repeated.
    """
    levels, counts = np.unique(values, return_counts=True)
    n = len(values)

    def rec(free: tuple, k: int):
        if k == len(levels) - 1:
            yield {levels[k]: free}
            return
        for pos in itertools.combinations(free, int(counts[k])):
            rest = tuple(i for i in free if i not in pos)
            for tail in rec(rest, k + 1):
                yield {levels[k]: pos, **tail}

    for assign in rec(tuple(range(n)), 0):
        out = np.empty(n, dtype=values.dtype)
        for lev, pos in assign.items():
            out[list(pos)] = lev
        yield out


class _TwfeStatistic:
    """TWFE coefficient on D = 1{t >= cohort} with unit + time effects, and its CRV1 t, for many
    cohort assignments at once: D for a block of assignments is demeaned in one ``demean`` call
    (the outcome once), beta = D~'y~ / D~'D~, cluster scores by bincount. CRV1 factor
    G/(G-1) (N-1)/(N-K) with K = T + 1 (fixest: unit effects nested in the clusters not counted,
    time effects and D counted), as ``twfe_did`` reports."""

    def __init__(self, y, unit_codes, time_codes, t, cl, G):
        self.fe = [unit_codes, time_codes]
        self.t = t
        self.cl = cl
        self.G = G
        self.yd = demean(y, self.fe)
        n = len(y)
        K = int(time_codes.max()) + 2
        self.factor = G / (G - 1) * (n - 1) / (n - K)

    def __call__(self, row_cohorts: np.ndarray, studentise: bool) -> np.ndarray:
        """row_cohorts: n x P cohort per row and assignment (0 = never)."""
        D = ((row_cohorts > 0) & (self.t[:, None] >= row_cohorts)).astype(float)
        Dd = demean(D, self.fe)
        dd = np.einsum("ij,ij->j", Dd, Dd)
        with np.errstate(divide="ignore", invalid="ignore"):
            beta = (Dd.T @ self.yd) / dd
        if not studentise:
            return beta
        E = self.yd[:, None] - Dd * beta
        sc = Dd * E
        S = np.empty((self.G, sc.shape[1]))
        for j in range(sc.shape[1]):
            S[:, j] = np.bincount(self.cl, weights=sc[:, j], minlength=self.G)
        with np.errstate(divide="ignore", invalid="ignore"):
            se = np.sqrt(self.factor * np.sum(S ** 2, axis=0)) / dd
            return beta / se


def _per_cluster(values: np.ndarray, cl: np.ndarray, G: int) -> tuple[np.ndarray, np.ndarray]:
    """(value per cluster, mask of clusters where the value is not constant)."""
    lo = np.full(G, np.inf)
    hi = np.full(G, -np.inf)
    np.minimum.at(lo, cl, values)
    np.maximum.at(hi, cl, values)
    return lo, lo != hi


def randomisation_test(panel: pd.DataFrame, *, y: str, unit: str, time: str, cohort: str,
                       cluster: str | None = None, statistic="twfe_t", eligible: str | None = None,
                       n_perm: int = 999, seed=None, exact_threshold: int | None = None,
                       alternative: str = "two-sided") -> RandomisationResult:
    """Randomisation test of no effect, permuting cluster-level join periods among eligible clusters.

    panel: long panel (one row per unit and period); cohort: first treated period per unit (0,
    missing, or a period after the last observed one: never joined); cluster: the partnership
    column (default: the unit), constant cohort within cluster required; eligible: optional 0/1
    column, constant within cluster, marking clusters that could have joined (others keep their
    observed cohort and are never permuted). statistic: "twfe_t" (default, studentised), "twfe",
    or a callable ``panel -> float``. exact_threshold: enumerate all distinct assignments when
    there are at most this many (default ``n_perm``). Deterministic given ``seed``.
    """
    if not isinstance(panel, pd.DataFrame):
        raise InputError(problem("a pandas DataFrame panel", value=type(panel).__name__))
    for col in (y, unit, time, cohort, cluster, eligible):
        if col is not None and col not in panel.columns:
            raise missing_column(col, panel)
    if not (callable(statistic) or statistic in STATISTICS):
        raise InputError(problem(f"statistic one of {', '.join(STATISTICS)} or a callable "
                                 "panel -> float", value=statistic))
    if alternative not in ALTERNATIVES:
        raise InputError(problem(f"alternative one of {', '.join(ALTERNATIVES)}", value=alternative))
    if not isinstance(n_perm, (int, np.integer)) or n_perm < 1:
        raise InputError(problem("n_perm a positive integer", value=n_perm))
    exact_threshold = n_perm if exact_threshold is None else exact_threshold
    cluster = cluster or unit

    t = numeric_column(panel, time)
    if np.isnan(t).any():
        pos = int(np.flatnonzero(np.isnan(t))[0])
        raise InputError(problem("a time period (number)", row=pos + 1, column=time,
                                 value=panel[time].iloc[pos]))
    g = numeric_column(panel, cohort)
    g = np.where(np.isnan(g) | (g == 0) | (g > t.max()), 0.0, g)
    cl, cl_uniques = pd.factorize(panel[cluster])
    if (cl < 0).any():
        pos = int(np.flatnonzero(cl < 0)[0])
        raise InputError(problem("a cluster identifier on every row", row=pos + 1, column=cluster,
                                 value=None))
    G = len(cl_uniques)
    if G < 2:
        raise InputError(problem("at least two clusters to permute", column=cluster, value=G))
    c_cohort, bad = _per_cluster(g, cl, G)
    if bad.any():
        c = int(np.flatnonzero(bad)[0])
        raise InputError(problem(f"one join period per partnership (cluster {plain(cl_uniques[c])!r} has "
                                 "schools with different cohorts; randomisation inference "
                                 "permutes whole partnerships)", column=cohort),
                         total=int(bad.sum()))
    if eligible is not None:
        e = numeric_column(panel, eligible)
        if np.isnan(e).any() or not np.isin(e, (0, 1)).all():
            raise InputError(problem("a 0/1 eligibility indicator on every row", column=eligible))
        elo, bad = _per_cluster(e, cl, G)
        if bad.any():
            raise InputError(problem("eligibility constant within each partnership", column=eligible))
        elig = elo == 1
        if (c_cohort[~elig] > 0).any():
            raise InputError(problem("treated partnerships among the eligible ones (a partnership "
                                     "that joined cannot be ineligible)", column=eligible))
    else:
        elig = np.ones(G, dtype=bool)
    idx = np.flatnonzero(elig)
    if len(idx) < 2:
        raise InputError(problem("at least two eligible clusters to permute", column=eligible,
                                 value=int(len(idx))))
    base = c_cohort[idx]
    if np.unique(base).size < 2:
        raise InputError(problem("eligible clusters with different join periods (some joined, "
                                 "some not); otherwise every permutation is the observed one",
                                 column=cohort))
    total = n_assignments(base)
    exact = total <= exact_threshold

    # the statistic for a block of cluster-level cohort assignments (rows: assignments)
    if callable(statistic):
        frame = panel.copy()

        def evaluate(assignments: np.ndarray) -> np.ndarray:
            out = np.empty(len(assignments))
            for i, a in enumerate(assignments):
                cc = c_cohort.copy()
                cc[idx] = a
                frame[cohort] = cc[cl]
                out[i] = float(statistic(frame))
            return out
        name = getattr(statistic, "__name__", "custom")
    else:
        yv = numeric_column(panel, y)
        if not np.isfinite(yv).all():
            raise InputError(problem("a complete numeric outcome (drop rows with missing y first)",
                                     column=y))
        ucodes = pd.factorize(panel[unit])[0].astype(np.intp)
        tcodes = pd.factorize(t, sort=True)[0].astype(np.intp)
        twfe = _TwfeStatistic(yv, ucodes, tcodes, t, cl, G)
        studentise = statistic == "twfe_t"
        chunk = max(1, _BLOCK // len(yv))

        def evaluate(assignments: np.ndarray) -> np.ndarray:
            out = np.empty(len(assignments))
            for s in range(0, len(assignments), chunk):
                block = assignments[s:s + chunk]
                cc = np.repeat(c_cohort[None, :], len(block), axis=0)
                cc[:, idx] = block
                out[s:s + len(block)] = twfe(cc[:, cl].T, studentise)
            return out
        name = statistic

    observed = float(evaluate(base[None, :])[0])
    if not np.isfinite(observed):
        raise InputError(problem("a statistic that can be computed on the observed data (is the "
                                 "treatment collinear with the unit and time effects?)",
                                 value=observed))
    if exact:
        assignments = np.array(list(_distinct_permutations(base)))
    else:
        rng = np.random.default_rng(seed)
        assignments = np.array([rng.permutation(base) for _ in range(int(n_perm))])
    null = evaluate(assignments)
    finite = np.isfinite(null)
    tol = _TIE * max(abs(observed), 1e-300)
    if alternative == "two-sided":
        hits = np.abs(null[finite]) >= abs(observed) - tol
    elif alternative == "greater":
        hits = null[finite] >= observed - tol
    else:
        hits = null[finite] <= observed + tol
    notes = []
    if not finite.all():
        notes.append(f"{int((~finite).sum())} assignment(s) where the statistic is undefined "
                     "(treatment collinear with the effects) left out")
    m = int(finite.sum())
    if exact:
        p = float(hits.sum() / m)
        notes.append(f"Exact: all {total} distinct assignments of join periods to the {len(idx)} "
                     "eligible clusters enumerated (observed one included).")
        if 1 / m > 0.05:
            notes.append(f"With {m} assignments the smallest attainable p-value is {1 / m:.3g}: "
                         "a 5% test can never reject.")
    else:
        p = float((1 + hits.sum()) / (m + 1))
        notes.append(f"{m} of {total} assignments sampled with replacement (seed {seed}); "
                     "p = (1 + exceedances) / (n_perm + 1) (Phipson & Smyth 2010).")
    return RandomisationResult(
        p_value=p, exact=exact, n_perm=m, observed=observed, null_distribution=null,
        statistic=name, alternative=alternative, n_clusters=G, n_eligible=int(len(idx)),
        n_assignments=total, seed=seed, notes=notes)
