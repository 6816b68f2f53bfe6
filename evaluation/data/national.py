"""The bundled synthetic national data set: generate it, write it as files, load it into the store.

The files are written as a DfE-style download would look (text, with suppression
markers) and imported through the same validation as any user's file, so the demo
exercises the real import path.
"""

from __future__ import annotations

import json
import shutil
import sys
from contextlib import contextmanager
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


@contextmanager
def _old_pupils_replaced(store: Store, say):
    """Move the store's pupil dataset aside while the new tables are written (its schools are being
    replaced), delete it once they are, and put it back if writing fails."""
    old = pupils_dir(store)
    if not old.exists():
        yield
        return
    aside = old.with_name(old.name + ".replaced")
    shutil.rmtree(aside, ignore_errors=True)
    old.rename(aside)
    try:
        yield
    except BaseException:
        shutil.rmtree(old, ignore_errors=True)
        aside.rename(old)
        raise
    shutil.rmtree(aside)
    say(f"removed the store's earlier pupil dataset ({old})")


def pupils_dir(store: Store) -> Path:
    """Where the pupil dataset of ``store`` lives (``evaluation.data.pupils.pupils_path``)."""
    from evaluation.data.pupils import pupils_path

    return Path(pupils_path(store.path))


def synthesize(store: Store, seed: int = 2024, n_schools: int = DEFAULT_SCHOOLS, out_dir: str | Path | None = None,
               covid_gap: bool = False, progress=None, pupils: bool = False) -> dict:
    """Generate, write files, validate and load them into ``store`` in one transaction.

    With ``pupils`` the synthetic pupil panel (``evaluation.data.synthetic_pupils``) is written too,
    as hive-partitioned Parquet into ``<out_dir>/pupils/``, its truth is stored as the table
    ``truth_pupils`` with the other truth tables, and the files are then imported with
    ``evaluation.data.pupils.import_pupils`` (validated, into the dataset beside the store; a second
    transaction, after the schools they refer to are in the store)."""
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
    pupil_rows = None
    if pupils:
        from evaluation.data.synthetic_pupils import write_pupils

        pupil_files = out_dir / "pupils"
        say(f"generating the pupil panel into {pupil_files} ...")
        summary = write_pupils(panel, pupil_files, seed=seed, progress=None)
        extra["truth_pupils"] = summary.truth
        pupil_rows = summary.rows
    with _old_pupils_replaced(store, say):  # the synthetic panel replaces every table, pupils included
        store.write_tables(validated, extra=extra)
        if not pupils:
            store.drop_tables(["truth_pupils"])
    if pupils:
        from evaluation.data.pupils import import_pupils

        say(f"importing {pupil_rows:,} pupils into {pupils_dir(store)} ...")
        report = import_pupils(store.path, pupil_files, label="synthetic pupils")
        pupil_rows = report.rows
    seconds = time.perf_counter() - t0
    say(f"done in {seconds:.1f} s")
    result = {"store": str(store.path), "files": {k: str(v) for k, v in paths.items()},
              "rows": {vt.name: vt.rows for vt in validated} | {k: len(v) for k, v in extra.items()},
              "seed": seed, "n_schools": n_schools, "covid_gap": covid_gap, "seconds": round(seconds, 1),
              "tables": list(TABLE_ORDER[:4]) + list(extra)}
    if pupils:
        result["rows"]["pupils"] = pupil_rows
        result["pupils_dataset"] = str(pupils_dir(store))
        result["files"]["pupils"] = str(pupil_files)
    return result
