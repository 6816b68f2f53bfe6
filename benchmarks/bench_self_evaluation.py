"""Time a self-evaluation on the synthetic national panel: the demo's 5-school partnership (one
joining date) and the 8-school mixed-phase example trust (partnerships/example_trust.toml).

    python benchmarks/bench_self_evaluation.py [--store data/impact.duckdb]

Target (issue 13): a 5-school self-evaluation in under a minute on 2 cores. Prints seconds for
loading the store and for each evaluation (placebo replications and families as the defaults).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    from evaluation.cli.self_eval_cmd import load_all, spec_from_plan
    from evaluation.data.store import Store
    from evaluation.partnership_file import load_partnership_file
    from evaluation.self_evaluation import SelfEvaluationSpec, example_partnership, schools_of_partnership, \
        self_evaluate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=os.environ.get("IMPACT_STORE", "data/impact.duckdb"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    data = load_all(Store(args.store))
    print(f"load the store: {time.perf_counter() - t0:.1f} s")
    pid = example_partnership(data)
    five = SelfEvaluationSpec(name="five", schools=schools_of_partnership(data, pid), partnership_id=pid)
    plan = load_partnership_file(ROOT / "partnerships" / "example_trust.toml")
    for label, spec in ((f"5-school partnership {pid}", five),
                        ("8-school mixed-phase example trust", spec_from_plan(plan, data, "example_trust.toml"))):
        t0 = time.perf_counter()
        r = self_evaluate(spec, data)
        seconds = time.perf_counter() - t0
        print(f"{label}: {seconds:.1f} s ({len(r['cohorts'])} joining cohort(s), "
              f"{sum(s['status'] == 'analysed' for s in r['schools'])} schools analysed; target under 60 s: "
              f"{'yes' if seconds < 60 else 'NO'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
