"""``impact data ...``: import, check, describe and synthesize the data in the store."""

from __future__ import annotations


from evaluation.cli.output import emit_json
from evaluation.data.schema import TABLE_ORDER


def register(sub) -> None:
    parser = sub.add_parser("data", help="import, check, describe and synthesize data in the store",
                            description="Manage the embedded store (a DuckDB file; default data/impact.duckdb "
                                        "or $IMPACT_STORE).")
    data_sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    imp = data_sub.add_parser("import", help="validate a CSV or Parquet file and load it into the store",
                              description="Validate FILE against data_schemas/TABLE.toml and load it in one "
                                          "transaction: on any problem nothing is changed.")
    imp.add_argument("table", choices=TABLE_ORDER, metavar="TABLE", help=f"one of {', '.join(TABLE_ORDER)}")
    imp.add_argument("file", metavar="FILE", help="CSV (UTF-8 or Windows-1252) or Parquet; for pupils also a "
                     "directory of Parquet files (hive partitions such as key_stage=KS4/year=2019/)")
    imp.add_argument("--append", action="store_true", help="add rows instead of replacing the table")
    _store_args(imp)
    imp.set_defaults(handler=_import)

    chk = data_sub.add_parser("check", help="validate a file without importing it",
                              description="Validate FILE (CSV or Parquet) against data_schemas/TABLE.toml and list "
                                          "every problem (file, row, column, value, what was expected) without "
                                          "touching the store. Exit 0 when the file would import, 2 when not.")
    chk.add_argument("table", choices=TABLE_ORDER, metavar="TABLE")
    chk.add_argument("file", metavar="FILE")
    _store_args(chk)
    chk.set_defaults(handler=_check)

    info = data_sub.add_parser("info", help="tables, row counts, year range and provenance of the store",
                               description="Describe the store: each table's rows and year range, every import "
                                           "(file, SHA-256, when, rows kept and rejected) and the data fingerprint "
                                           "that result.json and the book's chapters quote.")
    _store_args(info)
    info.set_defaults(handler=_info)

    syn = data_sub.add_parser("synthesize", help="generate the synthetic national panel and load it",
                              description="Generate a synthetic national school panel (deterministic by seed) "
                                          "with a known truth, write it as CSV files and load it into the store.")
    syn.add_argument("--seed", type=int, default=2024, help="random seed (default 2024)")
    syn.add_argument("--schools", type=int, default=20_000, help="number of schools (default 20,000)")
    syn.add_argument("--out", help="directory for the CSV files (default: <store dir>/synthetic)")
    syn.add_argument("--covid-gap", action="store_true",
                     help="publish no KS2/KS4 results for 2020 and 2021, as in reality")
    syn.add_argument("--pupils", action="store_true",
                     help="also generate the synthetic pupil panel (about 15 million rows at 20,000 schools), "
                          "consistent with the school panel, as Parquet beside the store, with its truth "
                          "(table truth_pupils)")
    _store_args(syn)
    syn.set_defaults(handler=_synthesize)

    from evaluation.cli.dfe_cmd import add_dfe_subcommand
    add_dfe_subcommand(data_sub)


def _store_args(p) -> None:
    p.add_argument("--store", help="store file (default data/impact.duckdb or $IMPACT_STORE)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _store(args):
    from evaluation.data.store import Store

    return Store(args.store)


def _import(args) -> int:
    if args.table == "pupils":
        return _import_pupils(args)
    store = _store(args)
    vt = store.import_file(args.table, args.file, append=args.append)
    result = {"table": vt.name, "file": vt.source.label, "rows": vt.rows, "sha256": vt.source.sha256,
              "missing_values_kept": len(vt.missing), "notes": vt.notes, "store": str(store.path),
              "mode": "append" if args.append else "replace"}
    if args.json:
        emit_json(result)
    else:
        print(f"imported {vt.rows:,} rows into {vt.name} from {vt.source.label} "
              f"({len(vt.missing):,} suppressed values kept with their reason) -> {store.path}")
        for note in vt.notes:
            print(f"note: {note}")
    return 0


def _import_pupils(args) -> int:
    from evaluation.data.pupils import import_pupils

    store = _store(args)
    report = import_pupils(store.path, args.file, append=args.append)
    if args.json:
        emit_json({**report.to_dict(), "store": str(store.path)})
        return 0
    print(f"imported {report.rows:,} pupil rows from {report.source} ({report.mode}) -> {report.dataset} "
          f"in {report.seconds:.1f} s")
    for part in report.partitions:
        print(f"  {part['key_stage']} {part['year']}: {part['rows']:,} rows")
    if report.missing_values_kept:
        print(f"{report.missing_values_kept:,} suppressed values kept with their reason")
    for note in report.notes:
        print(f"note: {note}")
    return 0


def _check(args) -> int:
    from evaluation.data.validate import read_raw, validate

    store = _store(args)
    if args.table == "pupils":
        from evaluation.data.pupils import check_pupils

        report = check_pupils(store.path, args.file)
        if args.json:
            emit_json({"table": "pupils", "file": report.source, "rows": report.rows, "valid": True,
                       "notes": report.notes, "missing_values_kept": report.missing_values_kept})
        else:
            print(f"{report.source}: {report.rows:,} rows are valid pupils data")
            for note in report.notes:
                print(f"note: {note}")
        return 0
    needs_refs = args.table not in ("schools", "partnerships")
    refs = store.reference_tables() if needs_refs and store.exists() else None
    vt = validate(args.table, read_raw(args.file), refs)
    if needs_refs and refs is None:
        vt.notes.append(f"no store at {store.path}: references to schools and partnerships were not checked")
    result = {"table": vt.name, "file": vt.source.label, "rows": vt.rows, "valid": True, "notes": vt.notes,
              "missing_values_kept": len(vt.missing)}
    if args.json:
        emit_json(result)
    else:
        print(f"{vt.source.label}: {vt.rows:,} rows are valid {vt.name} data")
        for note in vt.notes:
            print(f"note: {note}")
    return 0


def _info(args) -> int:
    store = _store(args)
    rows = store.info()
    result = {"store": str(store.path), "fingerprint": store.fingerprint(),
              "tables": [{"table": r.table, "rows": r.rows, "first_year": r.first_year, "last_year": r.last_year,
                          "sources": r.sources, **({"path": r.path, "key_stages": r.key_stages} if r.path else {})}
                         for r in rows]}
    if any(r.table == "pupils" for r in rows):
        from evaluation.data.pupils import pupils_summary

        result["pupils"] = pupils_summary(store.path)
    if args.json:
        emit_json(result)
        return 0
    print(f"store: {store.path}")
    print(f"data fingerprint (sha256): {result['fingerprint']}")
    print(f"{'table':<16} {'rows':>10}  {'years':<11}  source (sha256, imported at UTC)")
    for r in rows:
        years = f"{r.first_year}-{r.last_year}" if r.first_year is not None else ""
        src = r.sources[-1] if r.sources else None
        where = (f"{src['source_file']} ({(src['source_sha256'] or '')[:12]}, {src['imported_at']})" if src else
                 ("kept reasons for suppressed values" if r.table == "missing_values" else "derived"))
        print(f"{r.table:<16} {r.rows:>10,}  {years:<11}  {where}")
        for older in r.sources[:-1]:
            print(f"{'':<41}{older['source_file']} ({(older['source_sha256'] or '')[:12]}, {older['imported_at']})")
        if r.path:
            print(f"{'':<41}Parquet dataset {r.path} (key stages {', '.join(r.key_stages or [])})")
    pupils = result.get("pupils")
    if pupils:
        print("pupils by key stage and year:")
        for part in pupils["partitions"]:
            print(f"  {part['key_stage']} {part['year']}: {part['rows']:>10,} rows")
    return 0


def _synthesize(args) -> int:
    from evaluation.data.national import synthesize
    from evaluation.errors import InputError

    if args.schools < 200:
        raise InputError(f"--schools {args.schools}: expected at least 200 schools")
    result = synthesize(_store(args), seed=args.seed, n_schools=args.schools, out_dir=args.out,
                        covid_gap=args.covid_gap, progress=(lambda m: None) if args.json else None,
                        pupils=args.pupils)
    if args.json:
        emit_json(result)
    else:
        print(f"synthetic national panel (seed {args.seed}) loaded into {result['store']}:")
        for name, n in result["rows"].items():
            print(f"  {name:<14} {n:>10,} rows")
        if args.pupils:
            print(f"pupil panel (Parquet): {result['pupils_dataset']}")
        print("run `impact data info` to see the store")
    return 0
