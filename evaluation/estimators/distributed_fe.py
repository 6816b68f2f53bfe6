"""feols over a partitioned Parquet data set, distributed with Dask.

:func:`feols_parquet` fits ``y ~ x1 + x2 | school + year`` (one or two fixed effects, the
smaller of two with few levels) exactly as :func:`evaluation.estimators.fixed_effects.feols`
does on the concatenated data, without ever bringing the rows to the driver. Each Parquet
fragment is read by a task on a worker (pyarrow; hive partition keys are restored as
columns) and kept there; the tasks then run the passes of
:mod:`evaluation.estimators.twoway_exact` on their rows and return additive statistics
that the driver sums:

0. the sorted levels of the fixed effects and the cluster (and counts of dropped rows);
   the driver takes their unions, and the partitions code their rows with np.searchsorted;
1. group sums (school weights and sums of w[y, X], school-by-year cell weights, sum of
   w X^2), plus the distinct (level, cluster) pairs for the nesting tests;
2. the demeaned cross products; then the driver solves;
3. the RSS and the cluster sums of the scores (or the heteroskedasticity-robust meat).

Schools and clusters may span partitions. With ``client=None`` the default Dask client
is used if there is one, otherwise the partitions are processed in this process.
"""

from __future__ import annotations

import glob as _glob
import re

import numpy as np
import pandas as pd

from evaluation.errors import InputError, problem
from evaluation.estimators import fixed_effects as _fe
from evaluation.estimators import twoway_exact as _tw

__all__ = ["feols_parquet"]


def _fragments(path_or_glob, filesystem=None) -> tuple[list[tuple[str, dict]], object]:
    """(file path, hive partition keys) for every Parquet fragment, and the filesystem."""
    import pyarrow.dataset as ds

    source = path_or_glob
    if isinstance(path_or_glob, str) and any(ch in path_or_glob for ch in "*?[") \
            and "://" not in path_or_glob:
        source = sorted(_glob.glob(path_or_glob, recursive=True))
        if not source:
            raise InputError(problem("Parquet files matching the pattern", value=path_or_glob))
    dataset = ds.dataset(source, format="parquet", partitioning="hive", filesystem=filesystem)
    out = [(f.path, ds.get_partition_keys(f.partition_expression)) for f in dataset.get_fragments()]
    if not out:
        raise InputError(problem("at least one Parquet file in the data set", value=str(path_or_glob)))
    return out, dataset.filesystem


def _load(path: str, keys: dict, columns: list[str], parsed, fe_names: list[str],
          cluster: str | None, weights: str | None, filesystem) -> dict:
    """Read one fragment; keep the complete rows' arrays (the partition's working set)."""
    import pyarrow.parquet as pq

    schema_names = set(pq.read_schema(path, filesystem=filesystem).names)
    table = pq.read_table(path, columns=[c for c in columns if c in schema_names],
                          filesystem=filesystem)
    df = table.to_pandas()
    for col, value in keys.items():
        if col in columns and col not in df.columns:
            df[col] = value
    for col in columns:
        if col not in df.columns:
            raise _fe.missing_column(col, df)
    y, xcols, names = _fe._design_columns(df, parsed)
    ok = np.isfinite(y)
    for c in xcols:
        ok &= np.isfinite(c)
    values = {}
    for name in fe_names + ([cluster] if cluster and cluster not in fe_names else []):
        v = df[name]
        ok &= v.notna().to_numpy()
        values[name] = v
    n_zero = 0
    w = None
    if weights:
        w = _fe.numeric_column(df, weights)
        if np.any(w[np.isfinite(w)] < 0):
            pos = int(np.flatnonzero(np.isfinite(w) & (w < 0))[0])
            raise InputError(problem("non-negative weights", file=path, row=pos + 1, column=weights,
                                     value=w[pos]))
        ok &= np.isfinite(w)
        n_zero = int(np.sum(ok & (w == 0)))
        ok &= w != 0
    n_ok = int(ok.sum())
    part = {"names": names, "n_rows": len(df), "n_zero": n_zero, "n": n_ok,
            "y": np.ascontiguousarray(y[ok]), "x": [np.ascontiguousarray(c[ok]) for c in xcols],
            "w": None if w is None else np.ascontiguousarray(w[ok]),
            "values": {name: v.to_numpy()[ok] for name, v in values.items()}}
    return part


def _levels(part: dict) -> dict:
    return {"names": part["names"], "n_rows": part["n_rows"], "n_zero": part["n_zero"],
            "n": part["n"], "levels": {k: pd.unique(v) for k, v in part["values"].items()}}


def _encode(part: dict, levels: dict) -> dict:
    """Replace the raw fixed-effect / cluster values by global codes (np.searchsorted)."""
    codes = {k: np.searchsorted(levels[k], v).astype(np.intp) for k, v in part["values"].items()}
    return {"y": part["y"], "x": part["x"], "w": part["w"], "n": part["n"], "codes": codes}


def _pairs(fe: np.ndarray, cl: np.ndarray, G: int) -> np.ndarray:
    return np.unique(fe.astype(np.int64) * G + cl)


def _pass1(part: dict, a_name: str, t_name: str | None, cl_name: str | None, S: int, L: int,
           G: int, fe_names: list[str]) -> dict:
    c = part["codes"]
    a, t, w = c[a_name], (c[t_name] if t_name else None), part["w"]
    zcols = [part["y"]] + part["x"]
    out = _tw.pass1(a, t, zcols, w, S, L)
    out["raw_ss"] = np.array([float(x @ x) if w is None else float((x * w) @ x) for x in part["x"]])
    pairs = {}
    if cl_name:
        pairs = {name: _pairs(c[name], c[cl_name], G) for name in fe_names}
    return out, pairs


def _pass2(part: dict, a_name: str, t_name: str | None, zbar: np.ndarray, L: int) -> dict:
    c = part["codes"]
    return _tw.pass2(c[a_name], c[t_name] if t_name else None, [part["y"]] + part["x"], part["w"],
                     zbar, L)


def _pass3(part: dict, a_name: str, t_name: str | None, cl_name: str | None, sol, G: int,
           nested: bool, hetero: bool) -> dict:
    c = part["codes"]
    return _tw.pass3(c[a_name], c[t_name] if t_name else None, [part["y"]] + part["x"], part["w"],
                     sol, cl=c[cl_name] if cl_name else None, G=G, nested=nested, hetero=hetero)


class _Runner:
    """client.submit / gather, or plain calls in this process."""

    def __init__(self, client):
        self.client = client

    def submit(self, fn, *args):
        return self.client.submit(fn, *args, pure=False) if self.client else fn(*args)

    def gather(self, futures):
        return self.client.gather(futures) if self.client else list(futures)

    def scatter(self, obj):
        return self.client.scatter(obj, broadcast=True) if self.client else obj


def _default_client():
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def feols_parquet(path_or_glob, formula: str, *, cluster: str | None = None,
                  weights: str | None = None, vcov: str | None = None, ssc: _fe.SSC | None = None,
                  client=None, filesystem=None, alpha: float = 0.05) -> _fe.FeolsResult:
    """:func:`~evaluation.estimators.fixed_effects.feols` over a partitioned Parquet data set.

    path_or_glob: a directory (hive-partitioned or not), a file, a list of files or a glob
    pattern; an ``s3://...`` or other URI works when pyarrow can read it from every worker
    (or pass ``filesystem``). formula: ``y ~ x1 + x2 + a:b | fe1 [+ fe2]`` with plain
    columns and products only, one or two fixed effects (column names), the smaller of two
    with at most 200 levels. cluster/weights/vcov/ssc/alpha: as feols (singletons are kept,
    as feols's default). client: a ``distributed.Client``; None uses the default client if
    one exists, else runs the partitions in this process.

    Returns the same FeolsResult as feols on the concatenated rows, except ``sample`` and
    ``residuals`` are None.
    """
    parsed = _fe.parse_formula(formula)
    vcov = _fe.vcov_type(vcov, cluster)
    fe_names = list(parsed.fixed_effects)
    if not 1 <= len(fe_names) <= 2 or any("^" in f for f in fe_names):
        raise InputError(problem("one or two fixed effects given as column names (no '^')",
                                 value=formula))
    if cluster and "^" in cluster:
        raise InputError(problem("a cluster column name (no '^')", value=cluster))
    plain = r"[A-Za-z_.][A-Za-z0-9_.]*"
    terms = [f.strip() for t in parsed.rhs for f in t.split(":")]
    if not re.fullmatch(plain, parsed.lhs) or not all(re.fullmatch(plain, f) for f in terms):
        raise InputError(problem("plain columns and products (a:b) only in feols_parquet",
                                 value=formula))
    ssc = ssc or _fe.SSC()
    columns = list(dict.fromkeys([parsed.lhs] + terms + fe_names
                                 + ([cluster] if cluster else []) + ([weights] if weights else [])))
    frags, fs = _fragments(path_or_glob, filesystem)
    run = _Runner(client if client is not None else _default_client())

    # load and pass 0: levels
    parts = [run.submit(_load, path, keys, columns, parsed, fe_names, cluster, weights, fs)
             for path, keys in frags]
    info = run.gather([run.submit(_levels, p) for p in parts])
    names = info[0]["names"]
    n_rows = sum(i["n_rows"] for i in info)
    n_zero = sum(i["n_zero"] for i in info)
    n = sum(i["n"] for i in info)
    if n == 0:
        raise InputError(problem("at least one complete observation; every row has a missing value "
                                 "in a variable of the model", value=formula))
    levels = {}
    for key in info[0]["levels"]:
        vals = [i["levels"][key] for i in info if len(i["levels"][key])]
        levels[key] = np.unique(np.concatenate(vals))
    fe_sizes = {f: len(levels[f]) for f in fe_names}
    sizes = list(fe_sizes.values())
    if not _tw.applies(sizes):
        raise InputError(problem(f"the smaller fixed effect with at most {_tw.MAX_SMALL_LEVELS} levels",
                                 value=fe_sizes))
    ia = int(np.argmax(sizes)) if len(fe_names) == 2 else 0
    a_name, S = fe_names[ia], sizes[ia]
    t_name, L = (fe_names[1 - ia], sizes[1 - ia]) if len(fe_names) == 2 else (None, 0)
    G = len(levels[cluster]) if cluster else None
    if cluster and G < 2:
        raise InputError(problem("at least two clusters for clustered standard errors",
                                 column=cluster, value=G))
    levels_f = run.scatter(levels)
    parts = [run.submit(_encode, p, levels_f) for p in parts]

    # pass 1
    res1 = run.gather([run.submit(_pass1, p, a_name, t_name, cluster, S, L, G or 0, fe_names)
                       for p in parts])
    p1 = _tw.combine([r[0] for r in res1])
    nested = []
    if cluster:
        for f in fe_names:
            pairs = np.unique(np.concatenate([r[1][f] for r in res1]))
            nested.append(bool(np.bincount(pairs // G, minlength=fe_sizes[f]).max() <= 1))

    # pass 2 and solve
    zbar = _tw.means(p1)
    zbar_f = run.scatter(zbar)
    p2 = _tw.combine(run.gather([run.submit(_pass2, p, a_name, t_name, zbar_f, L) for p in parts]))
    sol = _tw.solve(p1, p2, p1["raw_ss"], _fe._COLLINEAR_TOL, _fe._independent_columns)

    # pass 3
    clustered = vcov in ("CR1", "CR0", "panelols")
    sol_f = run.scatter(sol)
    p3 = _tw.combine(run.gather([
        run.submit(_pass3, p, a_name, t_name, cluster if clustered else None, sol_f, G or 0,
                   nested[ia] if cluster else True, vcov == "hetero") for p in parts]))
    meat = None
    if vcov == "hetero":
        meat = p3["meat"]
    elif clustered:
        meat = _tw.cluster_meat(p3, sol)

    notes = []
    n_na = n_rows - n - n_zero
    if n_na:
        notes.append(f"{n_na} observation(s) with missing values dropped")
    if n_zero:
        notes.append(f"{n_zero} observation(s) with zero weight dropped")
    absorbed = (f"exact two-way ({a_name} means + {t_name} dummies)" if t_name
                else f"exact one-way ({a_name} means)")
    res = _fe._finish(formula=formula, cluster=cluster, vcov=vcov, ssc=ssc, alpha=alpha,
                      names=names, kept=sol.kept_x, beta=sol.beta, bread=sol.bread, meat=meat,
                      rss=p3["rss"], n=n, fe_sizes=fe_sizes, nested=nested, G=G, notes=notes,
                      absorbed=absorbed + f", {len(frags)} Parquet partition(s)", sample=None,
                      residuals=None)
    return res
