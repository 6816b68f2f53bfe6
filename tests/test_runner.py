"""The runner: same bytes whichever executor ran the tasks (serial, process pool, Dask cluster)."""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from evaluation.executors import map_ordered, single_threaded_blas

STUDIES = Path(__file__).resolve().parents[1] / "studies"
TWO = (STUDIES / "federation_primary_ks2.toml", STUDIES / "tsa_members_primary_ks2.toml")


def _slow_square(x: int) -> int:
    time.sleep(0.05 * (3 - x))  # the first items finish last
    return x * x


def _fails_on_two(x: int) -> int:
    if x == 2:
        raise ValueError("task 2 failed")
    return x


def _blas_threads(_) -> int:
    from threadpoolctl import threadpool_info

    return max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")


def test_map_ordered_keeps_input_order_on_a_process_pool():
    with ProcessPoolExecutor(2) as pool:
        assert map_ordered(_slow_square, range(4), pool) == [0, 1, 4, 9]
    assert map_ordered(_slow_square, range(4)) == [0, 1, 4, 9]


def test_map_ordered_reraises_the_task_error():
    with ProcessPoolExecutor(2) as pool, pytest.raises(ValueError, match="task 2 failed"):
        map_ordered(_fails_on_two, range(4), pool)


def test_tasks_compute_with_one_blas_thread():
    with ProcessPoolExecutor(1) as pool:
        assert map_ordered(_blas_threads, [0], pool) == [1]
    with single_threaded_blas():
        assert _blas_threads(0) == 1


def test_progress_is_plain_lines_when_not_a_terminal(capsys):
    map_ordered(_slow_square, range(3), label="placebo dates")
    err = capsys.readouterr().err
    assert "placebo dates: 3/3 done" in err and "\r" not in err


@pytest.fixture(scope="module")
def serial_bytes(small_store, tmp_path_factory):
    from evaluation.cli import main

    out = tmp_path_factory.mktemp("serial")
    assert main(["run", *map(str, TWO), "--store", str(small_store.path), "--results", str(out)]) == 0
    return {p.stem: (out / p.stem / "result.json").read_bytes() for p in TWO}


def test_process_pool_gives_the_serial_bytes(run_cli, small_store, serial_bytes, tmp_path):
    code, _, err = run_cli("run", *TWO, "--store", small_store.path, "--results", tmp_path, "--workers", 2)
    assert code == 0, err
    for sid, expected in serial_bytes.items():
        assert (tmp_path / sid / "result.json").read_bytes() == expected, sid


def test_dask_cluster_gives_the_serial_bytes(run_cli, small_store, serial_bytes, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster:
        # several studies: one task per study
        code, _, err = run_cli("run", *TWO, "--store", small_store.path, "--results", tmp_path / "many",
                               "--scheduler", cluster.scheduler_address)
        assert code == 0, err
        # one study: its placebo dates are the tasks
        code, _, err = run_cli("run", TWO[0], "--store", small_store.path, "--results", tmp_path / "one",
                               "--scheduler", cluster.scheduler_address)
        assert code == 0, err
    for sid, expected in serial_bytes.items():
        assert (tmp_path / "many" / sid / "result.json").read_bytes() == expected, sid
    assert (tmp_path / "one" / TWO[0].stem / "result.json").read_bytes() == serial_bytes[TWO[0].stem]


def test_workers_and_scheduler_are_exclusive_and_checked(run_cli, small_store, capsys):
    for args, message in ((("--workers", 0), "at least 1 worker"),
                          (("--workers", 2, "--scheduler", "tcp://x:1"), "not allowed with argument")):
        with pytest.raises(SystemExit) as exc:  # argparse: usage error, exit 2
            run_cli("run", TWO[0], "--store", small_store.path, *args)
        assert exc.value.code == 2 and message in capsys.readouterr().err


def test_a_study_given_twice_is_bad_input(run_cli, small_store, tmp_path):
    code, _, err = run_cli("run", TWO[0], TWO[0], "--store", small_store.path, "--results", tmp_path)
    assert code == 2 and "given twice" in err
    assert not any(tmp_path.iterdir())


def test_numbers_do_not_depend_on_blas_threads():
    """The reason every task pins one BLAS thread: a reduction's rounding depends on the split."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 400))
    with single_threaded_blas():
        one = a @ a.T
    assert np.allclose(one, a @ a.T, rtol=1e-12, atol=1e-9)


def test_the_demo_runner_leaves_out_a_study_the_data_cannot_support(small_store):
    """`impact demo` runs its examples on panels of any size: a study with too few schools for its design
    (9 academies moved trust among 3,000 schools) is left out with its reason, the others run."""
    from evaluation.runner import run_studies_that_can_run

    studies = [STUDIES / "mat_rebrokered_secondary_ks4.toml", STUDIES / "federation_primary_ks2.toml"]
    runs, left_out = run_studies_that_can_run(studies, small_store)
    assert [r.result["study"]["id"] for r in runs] == ["federation_primary_ks2"]
    assert len(left_out) == 1 and left_out[0].startswith("mat_rebrokered_secondary_ks4: ")
    assert "no partnership school can be matched" in left_out[0] or "at least two" in left_out[0]
