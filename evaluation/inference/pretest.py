"""Pre-tests of parallel trends for Callaway & Sant'Anna with few treated clusters.

``att_gt``'s pre-test (R did 2.5) is a Wald test W = n att_pre' V^-1 att_pre with V from the cluster
sums of the influence function, against chi-squared(q), q the number of pre-treatment ATT(g,t).
With few treated partnerships it cannot hold its size: a cohort of m partnerships gives at most
m - 1 independent directions to the treated part of V, so when q exceeds them V is carried by the
comparison schools alone in some directions and W explodes (benchmarks/coverage.py measures it).

Two alternatives that do not invert an ill-conditioned q x q matrix:

``"average"``  one degree of freedom: the cohort-share weighted average of the pre-treatment
               ATT(g,t) (cohort shares as in the simple aggregation), tested with the score wild
               cluster bootstrap-t (Webb weights) of its influence function.
``"average-jk"`` the same average, studentised by its delete-one-cluster jackknife SE (the
               ATT(g,t) and the cohort shares without each cluster, see
               :func:`evaluation.inference.candidates.cs_jackknife`), t with G1 - 1 df.
``"sup-t"``    max_k |t_k| over the pre-treatment ATT(g,t), t_k studentised by the cluster-sum SE,
               against the bootstrap distribution of max_k |t*_k| (Webb weights, each t*_k
               studentised in its draw): the simultaneous band check of CS 2021, Sec. 4.1.
"""

from __future__ import annotations

import numpy as np

from evaluation.errors import InputError, problem
from evaluation.inference.wild_bootstrap import _Draws, influence_bootstrap

__all__ = ["pretest_bootstrap", "STATISTICS"]

STATISTICS = ("average", "average-jk", "sup-t")


def _pre_cells(gt):
    g = gt.group_time["g"].to_numpy(dtype=float)
    t = gt.group_time["t"].to_numpy(dtype=float)
    est = gt.group_time["estimate"].to_numpy(dtype=float)
    pre = np.flatnonzero((g > t) & np.isfinite(gt.group_time["se"].to_numpy(dtype=float)))
    return pre, g, est


def pretest_bootstrap(gt, *, statistic: str = "average", B: int = 999, seed=None) -> dict | None:
    """Pre-test of parallel trends on an att_gt result by the score wild cluster bootstrap.

    Returns {"test", "statistic", "p_value", "df", "B", "n_clusters"} or None when there is no
    pre-treatment ATT(g,t). Deterministic given ``seed``.
    """
    if statistic not in STATISTICS:
        raise InputError(problem(f"statistic one of {', '.join(STATISTICS)}", value=statistic))
    pre, g, est = _pre_cells(gt)
    if not len(pre):
        return None
    psi = gt.influence
    cl = gt.unit_cluster
    n = psi.shape[0]
    C = int(cl.max()) + 1
    if statistic == "average-jk":
        from scipy import stats

        from evaluation.inference.candidates import cs_jackknife

        avg, _, se = cs_jackknife(gt, cells=pre)
        G1 = int(np.unique(cl[gt.unit_cohort > 0]).size)
        df = max(G1 - 1, 1)
        tt = avg / se if se > 0 else float("nan")
        return {"test": f"average pre-treatment ATT(g,t) = 0, cluster jackknife SE, t({df})",
                "statistic": float(tt), "p_value": float(2 * stats.t.sf(abs(tt), df)), "df": 1,
                "B": None, "n_clusters": C}
    if statistic == "average":
        w = gt.unit_weight
        share = np.array([np.sum(w * (gt.unit_cohort == gg)) for gg in g[pre]])
        omega = share / share.sum()
        avg = float(est[pre] @ omega)
        res = influence_bootstrap(avg, psi[:, pre] @ omega, cl, B=B, weights="webb", seed=seed,
                                  hypothesis="average pre-treatment ATT(g,t) = 0")
        return {"test": "average pre-treatment ATT(g,t) = 0, score wild bootstrap-t (Webb)",
                "statistic": res.t_stat, "p_value": res.p_value, "df": 1, "B": res.B,
                "n_clusters": C}
    S = np.zeros((C, len(pre)))
    np.add.at(S, cl, psi[:, pre] / n)
    c = C / (C - 1)
    se = np.sqrt(c * np.sum(S ** 2, axis=0))
    ok = se > 0
    S, se, att = S[:, ok], se[ok], est[pre][ok]
    T = float(np.max(np.abs(att / se)))
    draws = _Draws(C, B, "webb", seed)
    tmax = np.empty(draws.B)
    pos = 0
    for V in draws.blocks():
        num = V @ S
        den = np.sqrt(c * ((V ** 2) @ (S ** 2)))
        with np.errstate(divide="ignore", invalid="ignore"):
            tmax[pos:pos + V.shape[0]] = np.max(np.abs(num / den), axis=1)
        pos += V.shape[0]
    p = float(np.mean(tmax >= T * (1 - 1e-9)))
    return {"test": "max |t| over pre-treatment ATT(g,t), score wild bootstrap (Webb)",
            "statistic": T, "p_value": p, "df": int(ok.sum()), "B": draws.B, "n_clusters": C}
