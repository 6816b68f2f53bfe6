"""The book's data dictionary, generated from ``data_schemas/*.toml`` (via
``evaluation.data.schema``), and the methods chapter's generated table of variance
conventions (read from the results, as each estimator named its convention)."""

from __future__ import annotations

from evaluation.data.schema import TABLE_ORDER, load_schema, missing_markers
from evaluation.report.markdown import escape, estimator_name, ordered_estimators, table


def _values(col) -> str:
    parts = []
    if col.allowed:
        parts.append("one of " + ", ".join(f"`{a}`" for a in col.allowed))
    elif col.min is not None or col.max is not None:
        lo = "" if col.min is None else f"{col.min:g}"
        hi = "" if col.max is None else f"{col.max:g}"
        if col.max_years_ahead is not None:  # the bound moves with the calendar: say so, not today's value
            hi = "the current academic year" + (f" + {col.max_years_ahead}" if col.max_years_ahead else "")
        parts.append(f"{lo} to {hi}" if lo and hi else (f"at least {lo}" if lo else f"at most {hi}"))
    if col.references:
        parts.append(f"refers to `{col.references}`")
    if col.suppressible:
        parts.append("may be suppressed")
    return "; ".join(parts)


def data_dictionary() -> str:
    """MyST markdown describing every input table and column."""
    out = ["(data-dictionary)=", "# Data dictionary", "",
           "Every input table, column by column, generated from the declarative schemas in `data_schemas/` that "
           "validation and the store also read. Years are academic-year ends (2019 = 2018/19).", ""]
    for name in TABLE_ORDER:
        s = load_schema(name)
        out += [f"## `{name}`", "",
                escape(s.table.description) + (" (optional table)" if s.table.optional else ""), "",
                f"Key: {', '.join(f'`{k}`' for k in s.key)}.", ""]
        rows = [[f"`{c.name}`", c.type, escape(c.unit or ""), "yes" if c.required else "no", c.role,
                 escape(_values(c)), escape(c.description)] for c in s.columns]
        out.append(table(["Column", "Type", "Unit", "Required", "Role", "Values", "Meaning"], rows))
    out += ["## Missing-value markers", "",
            "Codes in DfE files that mean 'no number here'. They become missing values (never zeros); the code "
            "and its meaning are kept in the store's `missing_values` table.", ""]
    out.append(table(["Code", "Meaning"], [[f"`{escape(code)}`" if code.strip() else "(blank)", escape(meaning)]
                                           for code, meaning in missing_markers().items()]))
    return "\n".join(out)


def variance_conventions(results: list[dict]) -> str:
    """Each estimator's variance convention as the results name it (one row per distinct convention)."""
    seen: dict[tuple, list[str]] = {}
    for r in results:
        for name in ordered_estimators(r["estimates"]):
            v = r["estimates"][name]["variance"]
            key = (name, v["kind"], v["small_sample"], bool(v.get("df")))
            seen.setdefault(key, []).append(r["study"]["id"])
    rows = [[estimator_name(name), escape(kind), escape(small), "t" if t else "normal approximation",
             ", ".join(f"`{s}`" for s in ids)] for (name, kind, small, t), ids in seen.items()]
    return "\n".join(["## Variance conventions in these results", "",
                      "As recorded in each result.json (`estimates.<estimator>.variance`).", "",
                      table(["Estimator", "Variance", "Small-sample correction", "Inference", "Studies"], rows)])
