"""Where independent tasks run: serial, a local process pool or a Dask distributed cluster.

Everything that fans out (studies, placebo dates, multiverse specifications) goes through
:func:`map_ordered`, which takes any executor following the ``concurrent.futures`` protocol
(``submit`` returning a future with ``result()``): ``None`` runs serially in this process,
:class:`concurrent.futures.ProcessPoolExecutor` a local pool (``--workers N``), and
``distributed.Client.get_executor()`` a Dask cluster (``--scheduler ADDRESS``). Results come
back in input order whichever finished first, and every task carries its own seed, so the
same inputs give the same bytes on any executor.

Bit-for-bit equality needs one more rule: multi-threaded BLAS splits reductions differently
with the number of threads (Dask workers run with ``OPENBLAS_NUM_THREADS=1``, a laptop with
all its cores), which moves results in the tenth significant digit. Every task and every
study therefore computes with one BLAS thread (:func:`single_threaded_blas`); on these
problem sizes that is also faster (a study on the national panel: 11 s against 18 s with two
BLAS threads on a 2-core machine). This module imports nothing from the rest
of the package (it sits below every stage).
"""

from __future__ import annotations

import sys
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

from threadpoolctl import threadpool_limits

T = TypeVar("T")
R = TypeVar("R")


def map_ordered(fn: Callable[[T], R], items: Iterable[T], executor: Executor | None = None,
                label: str | None = None, progress: bool | None = None) -> list[R]:
    """``[fn(x) for x in items]``, on ``executor`` when given, in input order.

    ``label`` names the step for the progress display: a progress bar (tqdm) on an interactive
    terminal, one plain line per finished task otherwise, nothing when ``label`` is None or
    ``progress`` is False. The first task error is re-raised as it was raised in the task."""
    items = list(items)
    fn = _SingleThreaded(fn)
    show = label is not None and progress is not False
    bar = _Progress(label, len(items)) if show else None
    try:
        if executor is None:
            out = []
            for x in items:
                out.append(fn(x))
                if bar:
                    bar.advance()
            return out
        futures = {executor.submit(fn, x): i for i, x in enumerate(items)}
        results: list = [None] * len(items)
        for fut in as_completed(futures):
            results[futures[fut]] = fut.result()
            if bar:
                bar.advance()
        return results
    finally:
        if bar:
            bar.close()


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Compute with one BLAS/OpenMP thread (the same floating-point reductions everywhere)."""
    with threadpool_limits(limits=1):
        yield


class _SingleThreaded:
    """``fn`` run under :func:`single_threaded_blas`, wherever it is unpickled (a picklable wrapper)."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, *args, **kwargs):
        with single_threaded_blas():
            return self.fn(*args, **kwargs)


class _Progress:
    """A tqdm bar on a terminal (stderr), plain ``label: i/n`` lines when output is redirected."""

    def __init__(self, label: str, total: int):
        self.label, self.total, self.done = label, total, 0
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=label, file=sys.stderr, leave=False, unit="task")

    def advance(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        else:
            print(f"  {self.label}: {self.done}/{self.total} done", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextmanager
def make_executor(workers: int | None = None, scheduler: str | None = None) -> Iterator[Executor | None]:
    """The executor the CLI options ask for: ``None`` (serial) by default; a process pool of
    ``workers`` processes; or the Dask distributed cluster at ``scheduler`` (an address such as
    ``tcp://10.0.0.5:8786``, or a ``distributed.Client``/``LocalCluster`` object's address)."""
    if workers is not None and scheduler is not None:
        raise ValueError("give either workers or scheduler, not both")
    if scheduler is not None:
        from distributed import Client

        with Client(scheduler, set_as_default=False, timeout="20s") as client:
            yield client.get_executor()
    elif workers is not None and workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            yield pool
    else:
        yield None
