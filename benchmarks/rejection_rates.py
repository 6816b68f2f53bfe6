"""Benchmark: size of 5% tests with few partnerships and no effect (issue 7, first "Done when").

Runs ``evaluation.inference.size_study.rejection_rates`` for each number of clusters (one process
per G, two at a time) and prints method x clusters -> rejection rate (Monte Carlo SE). With 1,000
replications the SE of a 5% rate is 0.0069; WCR and RI should lie in [0.03, 0.07], CRV1 above.

    python benchmarks/rejection_rates.py [--reps 1000] [--clusters 8 12 20] [--B 399] [--jobs 2]
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor

from evaluation.inference.size_study import METHODS, design, rejection_rates


def _run(args):
    G, reps, B, n_perm = args
    t0 = time.perf_counter()
    return G, rejection_rates(G, reps, B=B, n_perm=n_perm), time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--clusters", type=int, nargs="+", default=[8, 12, 20])
    ap.add_argument("--B", type=int, default=399)
    ap.add_argument("--n-perm", type=int, default=399)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    jobs = [(G, a.reps, a.B, a.n_perm) for G in a.clusters]
    with ProcessPoolExecutor(max_workers=a.jobs) as pool:
        results = sorted(pool.map(_run, jobs))
    print(f"Rejection rates of 5% tests under the null, {a.reps} replications "
          f"(MC SE of a 5% rate: {(0.05 * 0.95 / a.reps) ** 0.5:.4f}); B = {a.B}, n_perm = {a.n_perm}")
    head = f"{'method':<16}" + "".join(f"{'G = ' + str(G):>18}" for G, _, _ in results)
    print(head)
    for m in METHODS:
        print(f"{m:<16}" + "".join(f"{r[m][0]:>10.3f} ({r[m][1]:.4f})" for _, r, _ in results))
    print("schools per partnership: " + "; ".join(f"G={G}: {list(design(G))}" for G, _, _ in results))
    print("seconds per G: " + ", ".join(f"G={G}: {s:.0f}" for G, _, s in results))


if __name__ == "__main__":
    main()
