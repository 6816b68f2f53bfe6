"""The bundled synthetic national data set: generate it, write it as files, load it into the store.

The files are written as a DfE-style download would look (text, with suppression
markers) and imported through the same validation as any user's file, so the demo
exercises the real import path.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from evaluation.data.files import write_csv_atomic, write_text_atomic
from evaluation.data.schema import TABLE_ORDER
from evaluation.data.store import Store
from evaluation.data.synthetic import DEFAULT_SCHOOLS, SyntheticPanel, generate
from evaluation.data.validate import read_raw, validate

INPUT_TABLES = ("schools", "partnerships", "memberships", "school_years")
TRUTH_TABLES = ("truth_effects", "truth_cohorts", "truth_moves")


def write_panel(panel: SyntheticPanel, out_dir: str | Path) -> dict[str, Path]:
    """Write every table as ``<out_dir>/<table>.csv`` (atomically) plus ``meta.json``."""
    out_dir = Path(out_dir)
    paths = {}
    for name, frame in panel.tables().items():
        paths[name] = write_csv_atomic(out_dir / f"{name}.csv", frame)
    write_text_atomic(out_dir / "meta.json", json.dumps(panel.meta, indent=2, sort_keys=True) + "\n")
    return paths


def synthesize(store: Store, seed: int = 2024, n_schools: int = DEFAULT_SCHOOLS, out_dir: str | Path | None = None,
               covid_gap: bool = False, progress=None) -> dict:
    """Generate, write files, validate and load them into ``store`` in one transaction."""
    say = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out_dir = Path(out_dir) if out_dir is not None else store.path.parent / "synthetic"
    t0 = time.perf_counter()
    say(f"generating {n_schools:,} schools, {2010}-{2024}, seed {seed} ...")
    panel = generate(seed=seed, n_schools=n_schools, covid_gap=covid_gap)
    panel.meta["seed"] = seed
    say(f"writing files to {out_dir} ...")
    paths = write_panel(panel, out_dir)
    validated = []
    refs = {}
    for name in INPUT_TABLES:
        say(f"validating {paths[name].name} ...")
        vt = validate(name, read_raw(paths[name]), refs if name not in ("schools", "partnerships") else None)
        if name in ("schools", "partnerships"):
            refs[name] = vt.data
        validated.append(vt)
    say(f"loading into {store.path} ...")
    extra = {}
    for name in TRUTH_TABLES:
        frame = getattr(panel, name).copy()
        if "sponsor_led" in frame:
            frame["sponsor_led"] = frame["sponsor_led"].astype(object).where(frame["sponsor_led"].notna(), None)
        extra[name] = frame
    store.write_tables(validated, extra=extra)
    seconds = time.perf_counter() - t0
    say(f"done in {seconds:.1f} s")
    return {"store": str(store.path), "files": {k: str(v) for k, v in paths.items()},
            "rows": {vt.name: vt.rows for vt in validated} | {k: len(v) for k, v in extra.items()},
            "seed": seed, "n_schools": n_schools, "covid_gap": covid_gap, "seconds": round(seconds, 1),
            "tables": list(TABLE_ORDER[:4]) + list(TRUTH_TABLES)}
