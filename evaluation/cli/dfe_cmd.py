"""``impact data import-dfe KIND FILE``: import DfE's public GIAS and performance-table files."""

from __future__ import annotations

from evaluation.cli.output import emit_json
from evaluation.data.dfe import KINDS


def add_dfe_subcommand(data_subparsers) -> None:
    p = data_subparsers.add_parser(
        "import-dfe", help="import a DfE file (GIAS establishments, groups, links, trust history; KS2/KS4 "
                           "performance tables)",
        description="Map a file downloaded from Get Information About Schools or the school performance tables "
                    "onto the data model and load it in one transaction, recording what was kept and why other "
                    "rows were dropped. Order: gias-establishments, gias-links, gias-groups, gias-group-links, "
                    "gias-trust-history (academiesmatmembershipYYYYMMDD.csv: memberships with leaving dates), "
                    "then ks2/ks4 for any years.")
    p.add_argument("kind", choices=KINDS, metavar="KIND", help=f"one of {', '.join(KINDS)}")
    p.add_argument("file", metavar="FILE", help="the CSV as downloaded (UTF-8 or Windows-1252)")
    p.add_argument("--year", type=int, help="academic year end (2019 = 2018/19) of a ks2/ks4 table; default: read "
                                            "from the file or folder name (e.g. 2018-2019/england_ks4final.csv)")
    p.add_argument("--store", help="store file (default data/impact.duckdb or $IMPACT_STORE)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_import_dfe)


def _import_dfe(args) -> int:
    from evaluation.data.dfe.importer import import_dfe
    from evaluation.data.store import Store

    report = import_dfe(Store(args.store), args.kind, args.file, year=args.year)
    if args.json:
        emit_json(report.to_dict())
        return 0
    tables = ", ".join(f"{name} ({n:,} rows)" for name, n in report.tables.items())
    print(f"imported {report.file} as {report.kind}: {report.rows_read:,} rows read, {report.rows_kept:,} kept, "
          f"{report.rows_rejected:,} rejected -> {tables} in {report.store}")
    for note in report.notes[2:]:
        print(f"  {note}")
    return 0
