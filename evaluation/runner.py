"""Run many studies: ``run_studies(specs, store, executor=None)``.

Each study is one task (read its tables from the store, run every stage); tasks run on the
executor (``evaluation.executors``: serial, a process pool or a Dask cluster) and come back in
the order given. With a single study the executor runs that study's own independent refits
(placebo dates) instead. The numbers never depend on the executor: every task is a pure
function of the study definition, the store's tables and the study's seed.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

from evaluation.data.panels import load_study_data
from evaluation.data.store import Store
from evaluation.executors import map_ordered
from evaluation.errors import InputError
from evaluation.pipeline import StudyRun, run_study
from evaluation.study import Study, load_study


@dataclass(frozen=True)
class StudyTask:
    """One study to run: its definition and the store (path) to read."""

    study: Study
    store: str


def _quiet(message: str) -> None:
    """Studies running on other processes report through the runner's progress display."""


def run_one(task: StudyTask, say: Callable[[str], None] = _quiet, executor: Executor | None = None) -> StudyRun:
    """Read one study's tables from the store and run it."""
    say(f"study {task.study.id}")
    data = load_study_data(Store(task.store), task.study)
    return run_study(task.study, data, say=say, executor=executor)


def run_one_or_why(task: StudyTask, say: Callable[[str], None] = _quiet) -> StudyRun | str:
    """``run_one``, or why the study cannot be estimated on these data (its InputError, rendered)."""
    try:
        return run_one(task, say=say)
    except InputError as err:
        return f"{task.study.id}: {err.render()}"


def as_study(spec: Study | str | Path) -> Study:
    return spec if isinstance(spec, Study) else load_study(spec)


def run_studies(specs: Sequence[Study | str | Path], store: Store | str | Path, executor: Executor | None = None,
                say: Callable[[str], None] = _quiet) -> list[StudyRun]:
    """Run every study (definitions or paths to studies/<id>.toml) on the store's data, in order."""
    path = str(store.path if isinstance(store, Store) else Path(store))
    tasks = [StudyTask(as_study(s), path) for s in specs]
    if len(tasks) == 1:
        return [run_one(tasks[0], say=say, executor=executor)]
    return map_ordered(partial(run_one, say=say if executor is None else _quiet), tasks, executor,
                       label="studies" if executor is not None else None)


def run_studies_that_can_run(specs: Sequence[Study | str | Path], store: Store | str | Path,
                             executor: Executor | None = None, say: Callable[[str], None] = _quiet
                             ) -> tuple[list[StudyRun], list[str]]:
    """As ``run_studies``, but a study its data cannot support (an InputError: e.g. a design with too
    few schools on a small panel) is left out with its reason instead of stopping the others: the
    runs that succeeded, in order, and one line per study left out. For ``impact demo``, whose
    example studies run on panels of any size."""
    path = str(store.path if isinstance(store, Store) else Path(store))
    tasks = [StudyTask(as_study(s), path) for s in specs]
    out = map_ordered(partial(run_one_or_why, say=say if executor is None else _quiet), tasks, executor,
                      label="studies" if executor is not None else None)
    return [r for r in out if not isinstance(r, str)], [r for r in out if isinstance(r, str)]
