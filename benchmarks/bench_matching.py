"""Matching speed on a national-size pool (20,000 schools), ours against R MatchIt when Rscript
and MatchIt are installed (Debian r-cran-matchit), timed in the same run on the same data.

    .venv/bin/python benchmarks/bench_matching.py [--n 20000]

Speed lives here, not in unit tests (tests/test_matching.py checks the matches themselves).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.matching import match


def data(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"ks2": rng.normal(100, 10, n), "trend": rng.normal(0, 1, n),
                       "fsm": rng.uniform(0, 60, n), "phase": rng.choice(["primary", "secondary"], n)})
    lin = -4 + 0.03 * (df.ks2 - 100) + 0.02 * df.fsm
    df["t"] = (rng.uniform(size=n) < 1 / (1 + np.exp(-lin))).astype(int)
    return df


def ours(df: pd.DataFrame) -> float:
    start = time.perf_counter()
    match(df, "t", ["ks2", "trend", "fsm"], exact="phase", caliper=0.2)
    return time.perf_counter() - start


def matchit(df: pd.DataFrame) -> float | None:
    if shutil.which("Rscript") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.csv"
        df.to_csv(path, index=False)
        code = (f"suppressMessages(library(MatchIt)); d <- read.csv('{path}'); t0 <- Sys.time(); "
                "m <- matchit(t ~ ks2 + trend + fsm, data = d, exact = ~phase, caliper = 0.2); "
                "cat(as.numeric(difftime(Sys.time(), t0, units = 'secs')))")
        run = subprocess.run(["Rscript", "-e", code], capture_output=True, text=True)
        return float(run.stdout.strip()) if run.returncode == 0 and run.stdout.strip() else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    args = ap.parse_args()
    df = data(args.n)
    t_ours = ours(df)
    t_r = matchit(df)
    print(f"pool of {args.n:,} schools, {int(df.t.sum()):,} treated: ours {t_ours:.2f} s")
    if t_r is None:
        print("R MatchIt: not installed (apt-get install r-base-core r-cran-matchit) - no ratio")
    else:
        print(f"R MatchIt {t_r:.2f} s; ratio MatchIt / ours = {t_r / t_ours:.1f}x")


if __name__ == "__main__":
    main()
