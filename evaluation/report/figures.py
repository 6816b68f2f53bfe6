"""Figures of a study run (matplotlib, Agg backend, deterministic PNG metadata)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

COLOURS = {"partnership": "#1b6ca8", "comparison": "#d1495b", "truth": "#2e7d32"}
LABELS = {"twfe": "Two-way fixed effects", "event_study": "Event study (TWFE)",
          "callaway_santanna": "Callaway-Sant'Anna", "sun_abraham": "Sun-Abraham", "imputation": "Imputation (BJS)"}


PRE_LABELS = {"pre_trend": "Outcome trend before joining", "pre_level": "Outcome level before joining",
              "ofsted_last": "Last Ofsted grade (1 best)", "urban": "Urban school",
              "pupils": "Pupils on roll"}


def _schema_column(name: str):
    """The school_years column's spec in data_schemas/ (None when the name is not a column)."""
    from evaluation.data.schema import load_schema

    try:
        return load_schema("school_years").column(name)
    except (KeyError, ValueError):
        return None


def _short(description: str) -> str:
    """A schema description as an axis label: the first clause, without the DfE field code."""
    import re

    text = description.split(":")[0].rstrip(". ")
    return re.sub(r"\s*\([A-Z0-9_]+\)$", "", text)


def column_label(name: str) -> str:
    """A reader's label for a column name (never the raw name): the schema's description, shortened."""
    if name in PRE_LABELS:
        return PRE_LABELS[name]
    if name.startswith("pre_y") and name[5:].isdigit():
        k = int(name[5:])
        return f"Outcome {k} year{'s' if k != 1 else ''} before joining"
    col = _schema_column(name)
    if col is not None:
        return _short(col.description)
    return name.replace("_", " ").capitalize()


def outcome_label(result: dict, prefix: str = "") -> str:
    """'Average Attainment 8 score per pupil (Attainment 8 points)', wrapped for an axis."""
    import textwrap

    name = result["outcome"]["name"]
    col = _schema_column(name)
    description = col.description if col is not None else result["outcome"].get("description") or name
    unit = (col.unit if col is not None else None) or result["outcome"].get("unit")
    unit = {"percent": "%", None: ""}.get(unit, unit)
    text = prefix + (_short(description) if not prefix else _short(description)[:1].lower() + _short(description)[1:])
    return textwrap.fill(text + (f" ({unit})" if unit else ""), 36)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def trends_plot(result: dict, path: Path) -> Path:
    """Mean outcome by year relative to joining: partnership vs matched comparison schools."""
    rows = pd.DataFrame(result["trends"])
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for group in ("partnership", "comparison"):
        d = rows[rows["group"] == group]
        ax.plot(d["e"], d["mean"], marker="o", color=COLOURS[group],
                label=f"{'Partnership' if group == 'partnership' else 'Matched comparison'} schools")
    ax.axvline(-0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("Years relative to joining (0 = first year of results after joining)")
    ax.set_ylabel(outcome_label(result))
    ax.set_title("Outcome trends")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def event_study_plot(result: dict, path: Path) -> Path:
    """Event-time estimates with 95% CIs for each estimator that reports them."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    names = [n for n in ("callaway_santanna", "sun_abraham", "event_study", "imputation")
             if result["event_study"].get(n)]
    width = 0.8 / max(len(names), 1)
    lo, hi = result["outcome"]["window"]
    for k, name in enumerate(names):
        d = pd.DataFrame(result["event_study"][name])
        d = d[d["e"].between(lo, hi)]
        x = d["e"] + (k - (len(names) - 1) / 2) * width
        ax.errorbar(x, d["estimate"], yerr=[d["estimate"] - d["ci_low"], d["ci_high"] - d["estimate"]],
                    fmt="o", markersize=4, capsize=2, label=LABELS[name])
    truth = (result.get("synthetic_truth") or {}).get("event_time")
    if truth:
        t = pd.DataFrame(truth)
        ax.plot(t["e"], t["effect"], color=COLOURS["truth"], linestyle=":", label="Planted effect (synthetic)")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.axvline(-0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("Years relative to joining (reference: the year before, -1)")
    ax.set_ylabel(outcome_label(result, "Effect on "))
    ax.set_title("Event study: effect by year since joining, with 95% confidence intervals")
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def love_plot(result: dict, path: Path) -> Path:
    """Absolute standardised mean differences before and after matching (cobalt's Love plot)."""
    bal = pd.DataFrame(result["matching"]["balance"]).iloc[::-1]
    fig, ax = plt.subplots(figsize=(6.0, 0.45 * len(bal) + 1.2))
    y = np.arange(len(bal))
    ax.scatter(bal["smd_before"].abs(), y, marker="o", facecolors="none", edgecolors="#d1495b",
               label="Before matching")
    ax.scatter(bal["smd_after"].abs(), y, marker="o", color="#1b6ca8", label="After matching")
    ax.axvline(0.1, color="grey", linestyle="--", linewidth=1)
    import textwrap

    ax.set_yticks(y, [textwrap.fill(column_label(c), 42) for c in bal["covariate"]], fontsize=8)
    ax.set_xlabel("|Standardised mean difference|")
    ax.set_title("Covariate balance")
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def self_evaluation_gap_plot(result: dict, path: Path) -> Path:
    """The partnership's average outcome against its synthetic comparison, year by year."""
    gaps = pd.DataFrame(result["estimates"]["synthetic_did"]["gaps"])
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.plot(gaps["time"], gaps["treated"], marker="o", color=COLOURS["partnership"], label="Our schools (average)")
    ax.plot(gaps["time"], gaps["synthetic"], marker="o", color=COLOURS["comparison"],
            label="Weighted comparison schools")
    ax.axvline(result["joined"] - 0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("Academic year (ending)")
    ax.set_ylabel(outcome_label(result))
    ax.set_title("Our schools and their comparison schools, before and after joining")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def self_evaluation_school_plot(result: dict, path: Path) -> Path:
    """Each school's own estimate against its own family, with 95% CIs."""
    rows = pd.DataFrame(result["by_school"]).iloc[::-1]
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(rows) + 1.3))
    y = np.arange(len(rows))
    ax.errorbar(rows["estimate"], y, xerr=[rows["estimate"] - rows["ci_low"], rows["ci_high"] - rows["estimate"]],
                fmt="o", color=COLOURS["partnership"], capsize=3)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(y, rows["name"])
    ax.set_xlabel(outcome_label(result, "Effect on ") + ", 95% confidence interval")
    ax.set_title("School by school, each against its own family of similar schools")
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)
