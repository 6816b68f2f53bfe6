"""Importers for DfE's public files: GIAS establishments, groups, group links,
establishment links and the academies trust membership history, and the KS2/KS4
school performance tables.

Each module maps one kind of file onto the data model (``data_schemas/``); the
name mappings live in ``data_schemas/dfe_mappings.toml`` and
``data_schemas/dfe_performance.toml``. :func:`evaluation.data.dfe.importer.import_dfe`
runs one import in one store transaction and records its provenance.
"""

KINDS = ("gias-establishments", "gias-groups", "gias-group-links", "gias-links", "gias-trust-history", "ks2", "ks4")
