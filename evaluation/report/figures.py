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
          "callaway_santanna": "Callaway-Sant'Anna", "sun_abraham": "Sun-Abraham", "imputation": "Imputation (BJS)",
          "chaisemartin_dhaultfoeuille": "de Chaisemartin-D'Haultfoeuille"}


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
    from evaluation.data.schema import description_words

    return description_words(description)


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
    col = None if result["outcome"].get("level") == "pupil" else _schema_column(name)  # pupils: value added
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
    rows = pd.DataFrame(result["trends"], columns=["group", "e", "mean", "n_schools"])
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    if rows.empty:  # every year withheld by disclosure control
        ax.text(0.5, 0.5, "Not shown: every year rests on too few schools\n(disclosure control)",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title("Outcome trends")
        return _save(fig, path)
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
    names = [n for n in ("callaway_santanna", "sun_abraham", "event_study", "imputation", "chaisemartin_dhaultfoeuille")
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


def _phase_label(result: dict, phase: str, prefix: str = "") -> str:
    o = result["outcomes"][phase]
    return outcome_label({"outcome": {"name": o["name"], "description": o["description"], "unit": o["unit"]}}, prefix)


def self_evaluation_effect_plot(result: dict, path: Path) -> Path:
    """Per phase: the synthetic-DiD effect by years since joining, cohorts averaged by their schools."""
    phases = result["phases"]
    n = max(len(phases), 1)
    fig, axes = plt.subplots(1, n, figsize=(6.4 if n == 1 else 10.5, 3.8), squeeze=False)
    for ax, p in zip(axes[0], phases):
        rows = pd.DataFrame(p["event_time"])
        ax.axhline(0, color="black", linewidth=0.8)
        ax.axvline(-0.5, color="grey", linestyle="--", linewidth=1)
        ax.plot(rows["years_since_joining"], rows["effect"], marker="o", color=COLOURS["partnership"])
        ax.set_xlabel("Years since joining (0: first results after joining)")
        ax.set_ylabel(_phase_label(result, p["phase"], "Difference from similar schools in "))
        ax.set_title(f"{p['phase'].capitalize()} schools ({p['schools']})", fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle("Our schools against their weighted comparison schools, before and after joining", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def self_evaluation_school_plot(result: dict, path: Path) -> Path:
    """Each school's own estimate against its own family, with 95% CIs, one panel per phase."""
    rows = pd.DataFrame(result["by_school"])
    phases = list(dict.fromkeys(rows["phase"])) if len(rows) else []
    heights = [int((rows["phase"] == ph).sum()) for ph in phases] or [1]
    fig, axes = plt.subplots(len(heights), 1, figsize=(6.4, 0.45 * sum(heights) + 1.6 * len(heights)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, ph in zip(axes[:, 0], phases):
        sub = rows[rows["phase"] == ph].iloc[::-1]
        y = np.arange(len(sub))
        ax.errorbar(sub["estimate"], y, xerr=[sub["estimate"] - sub["ci_low"], sub["ci_high"] - sub["estimate"]],
                    fmt="o", color=COLOURS["partnership"], capsize=3)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(y, sub["name"])
        ax.set_xlabel(_phase_label(result, ph, "Effect on ") + ", 95% confidence interval")
        ax.grid(alpha=0.3, axis="x")
    axes[0, 0].set_title("School by school, each against its own family of similar schools", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def self_evaluation_targets_plot(result: dict, path: Path) -> Path:
    """Per target: the partnership's measure since the baseline, the straight line to the target, and
    what the comparison families predict."""
    targets = [t for t in result["targets"] if t["series"]]
    fig, axes = plt.subplots(len(targets), 1, figsize=(6.4, 3.9 * len(targets)), squeeze=False)
    for ax, t in zip(axes[:, 0], targets):
        s = pd.DataFrame(t["series"])
        ax.plot(s["year"], s["measure"], marker="o", color=COLOURS["partnership"], label="Our schools")
        pred = s.dropna(subset=["predicted_measure"])
        if len(pred):
            ax.plot(pred["year"], pred["predicted_measure"], linestyle=":", marker=".", color=COLOURS["comparison"],
                    label="Predicted from similar schools' change")
        ax.plot([t["baseline_year"], t["year"]], [t["baseline"], t["target"]], linestyle="--", color="grey",
                label="Straight line to the target")
        ax.plot([t["year"]], [t["target"]], marker="*", markersize=12, color=COLOURS["truth"], linestyle="none",
                label=f"Target ({t['year']})")
        words = {"level": "", "change": "Change since the baseline in ", "gap_to_national": "Gap to England in "}
        ax.set_ylabel(outcome_label({"outcome": {"name": t["outcome"], "description": t["description"],
                                                 "unit": t["unit"]}}, words[t["kind"]]))
        ax.set_xlabel("Academic year (ending)")
        ax.set_title(f"{t['status'].capitalize()}: target {t['target']:g} by {t['year']} (baseline {t['baseline_year']})",
                     fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=2)
    fig.tight_layout()
    return _save(fig, path)


def self_evaluation_history_plot(result: dict, path: Path) -> Path:
    """The headline estimate and its 95% CI as each year's results were added."""
    rows = pd.DataFrame(result["history"]).dropna(subset=["estimate"])
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    if len(rows):
        ax.errorbar(rows["data_last_year"], rows["estimate"],
                    yerr=[rows["estimate"] - rows["ci_low"], rows["ci_high"] - rows["estimate"]], fmt="o",
                    color=COLOURS["partnership"], capsize=3)
        ax.set_xticks(rows["data_last_year"])
    ax.axhline(0, color="black", linewidth=0.8)
    h = result.get("headline") or {}
    ax.set_ylabel("Effect size (pupil-level SD)" if h.get("scale") == "effect size" else
                  _phase_label(result, h["phase"], "Effect on ") if h.get("phase") else "Effect")
    ax.set_xlabel("Latest year of results in the data")
    ax.set_title("The estimate as each year's results arrived", fontsize=10)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def subgroup_forest_plot(result: dict, path: Path) -> Path:
    """Forest plot of the subgroup effects (result.json ``heterogeneity``) with their CIs, one panel
    row per subgroup grouped by characteristic, beside the study's primary estimate; subgroups not
    estimated are listed without a point. Labels are the result's words, never column names."""
    import textwrap

    from evaluation.report.markdown import p_equals

    het = result["heterogeneity"]
    primary = result["estimates"][result["primary_estimator"]]
    level = round(100 * (1 - het["alpha"]))
    labels, est, lo, hi, heads = [], [], [], [], []
    for ch in het["characteristics"]:
        if not ch["subgroups"]:
            continue
        heads.append(len(labels))
        test = ch.get("test")
        labels.append(ch["label"][:1].upper() + ch["label"][1:]
                      + (f" (difference: {p_equals(test['p_value'])})" if test else ""))
        est.append(np.nan), lo.append(np.nan), hi.append(np.nan)
        for s in ch["subgroups"]:
            shown = s["estimate"] is not None
            labels.append("    " + s["label"][:1].upper() + s["label"][1:] + ("" if shown else " (not estimated)"))
            est.append(s["estimate"] if shown else np.nan)
            lo.append(s["ci_low"] if shown else np.nan)
            hi.append(s["ci_high"] if shown else np.nan)
    n = max(len(labels), 1)
    fig, ax = plt.subplots(figsize=(6.4, 0.32 * n + 1.4))
    y = np.arange(n)[::-1]
    e, l, h = (np.array(v, dtype=float) for v in (est, lo, hi))
    ok = np.isfinite(e)
    ax.errorbar(e[ok], y[ok], xerr=[e[ok] - l[ok], h[ok] - e[ok]], fmt="s", color=COLOURS["partnership"],
                markersize=4, capsize=2, label=f"Subgroup effect, {level}% CI")
    if primary.get("estimate") is not None:
        ax.axvline(primary["estimate"], color=COLOURS["partnership"], linestyle=":", linewidth=1,
                   label="All partnership schools")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(y, [textwrap.fill(t, 56) for t in labels], fontsize=8)
    for k in heads:
        ax.get_yticklabels()[k].set_fontweight("bold")
    ax.set_xlabel(outcome_label(result, "Effect on "))
    ax.set_title("Effects by subgroup")
    ax.legend(frameon=False, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12 - 1.2 / n), ncol=2)
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)
