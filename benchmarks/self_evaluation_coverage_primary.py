"""Coverage of a primary-only partnership's interval at the product defaults (families of 50, 200
placebo replications): placebo partnerships of 4 never-member primary schools joining over 4 years.

    python benchmarks/self_evaluation_coverage_primary.py FAMILY_SIZE REPS [--store PATH]

Prints the coverage of the normal interval (estimate +- 1.96 placebo SE), of the placebo-quantile
interval (|estimate| <= the 95th percentile of |draws|), the share of placebo p >= 0.05, and the SD
and kurtosis of estimate / SE. Replications whose schools cannot be analysed (closed schools) are
skipped and not counted.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np

import evaluation.self_evaluation as se

se._public = lambda b: dict(b)  # keep the placebo draws in the result for the quantile interval
STORE = os.environ.get("IMPACT_STORE", "data/impact.duckdb")
_DATA = None


def one(args):
    global _DATA
    seed, family = args
    from evaluation.cli.self_eval_cmd import load_all
    from evaluation.data.store import Store
    from evaluation.inference.self_eval_coverage import placebo_partnership

    if _DATA is None:
        _DATA = load_all(Store(STORE))
    schools = placebo_partnership(_DATA, np.random.default_rng(seed), 4, 0, 4)
    try:
        r = se.self_evaluate(se.SelfEvaluationSpec(name="x", schools=schools, family_size=family, n_perm=200,
                                                   seed=seed, methods=("synthetic_did",), by_school=False), _DATA)
    except Exception:  # noqa: BLE001 - every school closed or without results: not a replication
        return None
    p = r["phases"][0]["estimates"]["synthetic_did"]
    q = np.quantile(np.abs(np.asarray(p["draws"])), 0.95)
    return (p["ci_low"] <= 0 <= p["ci_high"], abs(p["estimate"]) <= q, p["p_value"] >= 0.05, p["estimate"] / p["se"])


if __name__ == "__main__":
    family, reps = int(sys.argv[1]), int(sys.argv[2])
    if "--store" in sys.argv:
        STORE = sys.argv[sys.argv.index("--store") + 1]
        os.environ["IMPACT_STORE"] = STORE
    with ProcessPoolExecutor(1) as ex:
        rows = [r for r in ex.map(one, [(1000 + i, family) for i in range(reps)]) if r is not None]
    a = np.array([r[:3] for r in rows], float)
    z = np.array([r[3] for r in rows])
    n = len(rows)
    print(f"family {family}, {n} replications: normal coverage {a[:, 0].mean():.3f} (MC SE "
          f"{np.sqrt(a[:, 0].mean() * (1 - a[:, 0].mean()) / n):.3f}), quantile coverage {a[:, 1].mean():.3f}, "
          f"placebo p >= 0.05 {a[:, 2].mean():.3f}, SD of z {z.std():.2f}, kurtosis "
          f"{((z - z.mean()) ** 4).mean() / z.var() ** 2:.2f}")
