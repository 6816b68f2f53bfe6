"""The synthesis chapter: every study side by side, the forest plot by partnership type,
the random-effects meta-analysis (``evaluation.synthesis``), a meta-regression of the studies'
effects on their partnerships' characteristics (``evaluation.meta_regression``), the effects by
subgroup of the studies that asked for them (result.json ``heterogeneity``, in the study chapter's own
words, which claim a difference only where the study's test rejects) and a plain-English "what works"
summary that never claims more than each study's security rating or the moderator tests allow."""

from __future__ import annotations

from pathlib import Path

from evaluation.meta_regression import MODERATORS, SKIPPED, STUDIES_PER_MODERATOR, ModeratorModel, moderator_models
from evaluation.report.chapter import SUPPRESSED, is_synthetic, subgroup_sentence, unit_words
from evaluation.report.markdown import count, escape, listing, months_words, num, p_equals, padlocks_html, plural, \
    pvalue, table, type_words, types_listing
from evaluation.study import HETEROGENEITY_CHARACTERISTICS
from evaluation.synthesis import forest_plot, meta_analysis, poolable

#: Padlocks a study needs before the summary calls its finding evidence rather than a hint.
SECURE = 3


def _types(result: dict) -> str:
    return types_listing(result["study"]["definition"]["cohort"]["partnership_types"], "or")


def _role_text(text: str) -> str:
    """Text inside a MyST role (backslash escapes are not processed there)."""
    return "".join(ch for ch in str(text) if ch not in "`<>")


def _verdict(result: dict) -> str:
    """What one study allows us to say: the study's own verdict (``effects.verdict``), in words
    bounded by its padlocks."""
    es = result["effects"]
    locks = es["padlocks"]
    v = result["verdict"]
    if v["answer"] == "cannot_tell":
        return "no clear effect either way (the confidence interval includes zero)"
    if v["answer"] == "cannot_tell_bias":
        failed = [c.get("title") or c["name"] for c in v["checks"] if c["failed"]]
        return f"we cannot tell: the checks of the design point to bias ({listing(failed)} failed)"
    if v["answer"] == "cannot_tell_sensitivity":
        return "we cannot tell: a plausible failure of parallel trends could explain the effect"
    way = "better" if v["answer"] == "yes" else "worse"
    if es["months"] is None:
        size = "an effect in the outcome's own units (no pupil-level SD, so no months)"
    elif es["months"]:
        size = f"about {months_words(es['months'])} {'more' if way == 'better' else 'less'} progress"
    else:
        size = "a very small effect, less than one month's progress"
    if locks >= SECURE:
        return f"partnership schools did {way}: {size} ({locks} padlocks)"
    return (f"a hint that partnership schools did {way} ({size}), but with only {plural(locks, 'padlock')} "
            "this is weak evidence")


def _study_ref(result: dict) -> str:
    """A link to the study's chapter, titled as the study."""
    return f"{{ref}}`{_role_text(result['study']['title'])} <study-{result['study']['id']}>`"


def write_synthesis(results: list[dict], source: Path) -> Path:
    """Write ``synthesis.md`` and its forest plot into the book source directory."""
    fig_dir = source / "synthesis"
    fig_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in results:
        es = r["effects"]
        rows.append([_study_ref(r), escape(_types(r)),
                     f"{num(es['g'])} ({num(es['g_ci'][0])} to {num(es['g_ci'][1])})" if es["g"] is not None else
                     "\u2014 (no pupil-level SD)", "\u2014" if es["months"] is None else str(es["months"]),
                     f"{es['padlocks']}/5",
                     f"{r['counts']['treated_analysed']:,}"])
    out = ["(synthesis)=", "# What works across studies", "",
           "All the studies side by side. Effect sizes are Hedges' g of each study's primary estimate "
           "(see each chapter for the standard deviation used); months' progress follows the EEF Toolkit "
           "conversion; padlocks are each study's security rating.", "",
           table(["Study", "Partnership type", "Effect size (95% CI)", "Months", "Padlocks", "Schools"], rows,
                 ["l", "l", "r", "r", "r", "r"])]
    if any(is_synthetic(r) for r in results):
        out += [":::{note}", "These studies were run on the synthetic national panel: the patterns below test the "
                "methods and are not findings about real schools.", ":::", ""]
    out += ["## What works: the plain-English summary", ""]
    for r in sorted(results, key=lambda r: (-r["effects"]["padlocks"], r["study"]["id"])):
        out.append(f"- **{escape(r['study']['title'])}** ({escape(_types(r))}): {escape(_verdict(r))}. "
                   + escape(r["summary"]["caveat"]))
    out.append("")
    studies = results  # every study, pooled or not: subgroup effects are in each outcome's own units
    pooled = poolable(results)
    left_out = [r for r in results if all(r is not q for q in pooled)]
    if left_out:
        out += ["Not pooled (no pupil-level SD, so their effects are in their outcomes' own units): "
                + ", ".join(escape(r["study"]["title"]) for r in left_out) + ".", ""]
    results = pooled
    if len(results) < 2:
        out += ["## Meta-analysis", "",
                "Only one study is in this book, so there is nothing to pool: a meta-analysis needs at least two.",
                ""]
        out += subgroup_section(studies)
        path = source / "synthesis.md"
        path.write_text("\n".join(out), encoding="utf-8")
        return path
    meta = meta_analysis(results)
    forest_plot(meta, fig_dir / "forest_plot.png")
    weakest = min(r["effects"]["padlocks"] for r in results)
    formal = meta.table[meta.table["formal"]]
    informal = meta.table[~meta.table["formal"]]
    out += [
        "## Forest plot by partnership type", "",
        "```{figure} synthesis/forest_plot.png", ":name: synthesis-forest",
        ":alt: Forest plot of effect sizes by partnership type, formal and informal, with the pooled estimate",
        ":width: 100%", "",
        "Effect sizes (Hedges' g) with 95% confidence intervals; formal partnerships (trusts, hard federations) "
        "in blue, informal ones (alliances, soft federations, clusters) in amber; squares sized by the "
        "random-effects weight; the diamond is the pooled estimate with its Knapp-Hartung 95% confidence interval "
        "and the dashed line through it the 95% prediction interval.", "```", "",
        "## Random-effects meta-analysis", "",
        f"Pooled across the {meta.k} studies ({escape(meta.method)}): "
        f"$\\hat\\mu = {num(meta.pooled, 3)}$ (95% CI {num(meta.ci_low, 3)} to {num(meta.ci_high, 3)}, "
        f"SE {num(meta.se, 3)}). The confidence interval is Knapp-Hartung, from a t distribution with "
        f"$k-1$ = {meta.k - 1} degrees of freedom: with few studies an interval from the normal distribution, "
        f"here {num(meta.ci_low_z, 3)} to {num(meta.ci_high_z, 3)}, tends to be too narrow.", "",
        (f"95% prediction interval {num(meta.pi_low, 3)} to {num(meta.pi_high, 3)} (t with $k-2$ = {meta.k - 2} "
         "degrees of freedom): the range in which the true effect of a new study like these would lie, allowing "
         "for how much the true effects differ from study to study; it is wider than the confidence interval, "
         "which is only about the average effect." if meta.pi_low is not None else
         "No prediction interval (the range in which the true effect of a new, similar study would lie): with "
         "only two studies there are no degrees of freedom left to estimate it (it needs at least three)."), "",
        table(["Heterogeneity", "Value", "Meaning"], [
            ["$\\tau^2$", num(meta.tau2, 4), "variance of the true effects between studies"],
            ["I\u00b2", f"{100 * meta.i2:.0f}%", "share of the spread in estimates beyond chance"],
            ["Cochran's Q", f"{num(meta.q)} ({meta.k - 1} df), {p_equals(meta.q_p)}",
             "test that every study has the same true effect"],
        ], ["l", "r", "l"]),
        table(["Study", "Type", "Formal", "g", "95% CI", "Weight"], [
            [escape(t.title), escape(type_words(t.partnership_type)), "yes" if t.formal else "no",
             num(t.g, 3), f"{num(t.ci_low, 3)} to {num(t.ci_high, 3)}", f"{100 * t.weight:.0f}%"]
            for t in meta.table.itertuples()], ["l", "l", "l", "r", "r", "r"]),
        "**How to read the pooled number.** "
        + (f"The studies disagree far more than chance would explain (I\u00b2 = {100 * meta.i2:.0f}%), so the "
           "pooled effect is an average over different kinds of partnership, phase and outcome, not the effect "
           "of 'a partnership'; read the studies one by one. " if meta.i2 >= 0.5 else
           f"The studies are reasonably consistent (I\u00b2 = {100 * meta.i2:.0f}%). ")
        + f"A pooled estimate is no more secure than the studies in it: the weakest has "
          f"{padlocks_html(weakest)}.", "",
        f"Formal partnerships: {len(formal)} stud{'ies' if len(formal) != 1 else 'y'}"
        + (f", effect sizes {', '.join(num(g) for g in formal['g'])}" if len(formal) else "")
        + f". Informal partnerships: {len(informal)} stud{'ies' if len(informal) != 1 else 'y'}"
        + (f", effect sizes {', '.join(num(g) for g in informal['g'])}" if len(informal) else "")
        + ". Effect sizes of different outcomes and phases are in different standard deviations (each chapter "
          "says which), so comparisons between types are indicative only.", "",
    ]
    out += meta_regression_section(results)
    out += subgroup_section(studies)
    path = source / "synthesis.md"
    path.write_text("\n".join(out), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ meta-regression


def _level_words(mod: str, level) -> str:
    """A moderator's level in words: 'formal', 'secondary', 'hard federation'."""
    if mod == "formal":
        return "formal" if level else "informal"
    if mod == "partnership_type":
        return " or ".join(type_words(t) for t in str(level).split("/"))
    return str(level)


def _coefficient_rows(model: ModeratorModel) -> list[list[str]]:
    fit = model.fit
    rows = []
    refs = ", ".join(_level_words(m, model.levels[m][0]) for m in model.moderators)
    for c in fit.coefficients:
        if c.name == "intrcpt":
            what = f"average effect size of {refs} studies"
            studies = str(model.counts[model.moderators[0]][model.levels[model.moderators[0]][0]]) \
                if len(model.moderators) == 1 else ""
        else:
            mod, _, level = c.name.partition("=")
            lv = next(x for x in model.levels[mod][1] if str(x) == level)
            ref = model.levels[mod][0]
            what = f"{_level_words(mod, lv)} minus {_level_words(mod, ref)}"
            studies = f"{model.counts[mod][lv]} vs {model.counts[mod][ref]}"
        rows.append([escape(model.label), escape(what), studies, num(c.estimate, 3),
                     f"{num(c.ci_low, 3)} to {num(c.ci_high, 3)}", p_equals(c.p)])
    return rows


def _plain_sentence(k: int, fitted: list[ModeratorModel], alpha: float) -> str:
    """One sentence: a moderator is said to matter only when its test supports it; few studies are said to be few."""
    few = k < STUDIES_PER_MODERATOR
    too_few = (f"with only {plural(k, 'study', 'studies')}, far fewer than the {STUDIES_PER_MODERATOR} per "
               "characteristic a meta-regression needs")
    if not fitted:
        return ((too_few[0].upper() + too_few[1:] + ", no meta-regression can be estimated" if few else
                 "No meta-regression can be estimated from these studies (see below why)")
                + ", so this book cannot say whether the effect differs between formal and informal partnerships, "
                  "phases or partnership types.")
    # Claims rest on the one-characteristic models: a joint model's test is of all its characteristics at once.
    single = [m for m in fitted if len(m.moderators) == 1] or fitted
    supported = [m for m in single if m.fit.qm_p < alpha]
    others = [m for m in single if m.fit.qm_p >= alpha]
    if not supported:
        labels = listing([m.label for m in single], "or")
        if few:
            return (f"{too_few[0].upper() + too_few[1:]}, the tests find no clear evidence that the effect differs "
                    f"by {labels}, and they could easily miss a real difference: read the table as a description of "
                    "these few studies, not as evidence that these characteristics do or do not matter.")
        return (f"The tests find no clear evidence that the effect differs by {labels} (each moderator test "
                f"p \u2265 {alpha:g}); this does not show that the effect is the same.")
    found = listing([f"{m.label} ({p_equals(m.fit.qm_p)})" for m in supported])
    rest = f", but not clearly by {listing([m.label for m in others], 'or')}" if others else ""
    if few:
        return (f"The effect appears to differ by {found}{rest}; {too_few}, and with several characteristics "
                "tested, this could well be chance and needs more studies to confirm.")
    return (f"The effect differs by {found}{rest}: an association across studies, which may reflect other "
            "differences between them (their outcomes, periods and places), not proof that the characteristic "
            "itself matters.")


def meta_regression_section(results: list[dict], alpha: float = 0.05) -> list[str]:
    """Markdown lines of the meta-regression section (see ``evaluation.meta_regression``)."""
    null, models = moderator_models(results, alpha=alpha)
    k = null.fit.k
    fitted = [m for m in models if m.fit is not None]
    refused = [m for m in models if m.fit is None]
    n0 = null.fit
    c0 = n0.coefficients[0]
    out = ["## Does the effect differ by kind of partnership? Meta-regression", "",
           "A meta-regression asks whether the studies' effect sizes differ with characteristics of their "
           f"partnerships: {listing(MODERATORS.values())}, each on its own and formal and phase together. Each "
           "model has random effects (REML between-study variance $\\tau^2$, as R's metafor) and Knapp-Hartung "
           "intervals and tests (t and F distributions with $k - p$ degrees of freedom for $k$ studies and $p$ "
           "coefficients; the Knapp-Hartung scale is not truncated at 1, metafor's `test=\"knha\"`). "
           + escape(SKIPPED["trust_size"][0].upper() + SKIPPED["trust_size"][1:]) + ".", "",
           "**In plain English:** " + escape(_plain_sentence(k, fitted, alpha)), ""]
    if fitted:
        out += [table(["Model", "Coefficient", "Studies", "Estimate (g)", "95% CI (Knapp-Hartung)", "p"],
                      [row for m in fitted for row in _coefficient_rows(m)], ["l", "l", "r", "r", "r", "r"])]
        rows = []
        for m in fitted:
            f = m.fit
            r2 = (f"{100 * f.r2:.0f}%" if f.tau2_null and f.tau2_null > 0 else
                  "\u2014 (no between-study variance to explain)")
            rows.append([escape(m.label), f"F({f.qm_df[0]}, {f.qm_df[1]}) = {num(f.qm)}, {p_equals(f.qm_p)}",
                         f"{num(f.qe)} ({f.df} df), {p_equals(f.qe_p)}", num(f.tau2, 4), f"{100 * f.i2:.0f}%", r2])
        out += [table(["Model", "Test of moderators", "Residual heterogeneity Q", "$\\tau^2$", "I\u00b2", "R\u00b2"],
                      rows, ["l", "l", "r", "r", "r", "r"]),
                "The test of moderators asks whether the characteristic explains any of the differences between "
                "studies; R\u00b2 is the share of the between-study variance it accounts for (from $\\tau^2$ without "
                "moderators, "
                f"{num(n0.tau2, 4)}, to the model's); I\u00b2 is the share of what is left that is beyond chance. "
                "The p-values are not adjusted for testing several characteristics.", ""]
    out += [f"Without moderators, with the same REML $\\tau^2$ and Knapp-Hartung interval (the pooled estimate "
            f"above uses Paule-Mandel): {num(c0.estimate, 3)} (95% CI {num(c0.ci_low, 3)} to {num(c0.ci_high, 3)}, "
            f"t with {n0.df} df), $\\tau^2$ = {num(n0.tau2, 4)}, I\u00b2 = {100 * n0.i2:.0f}%, residual "
            f"heterogeneity Q = {num(n0.qe)} ({n0.df} df), {p_equals(n0.qe_p)}.", ""]
    if refused:
        out += ["Not estimated, so no numbers are shown:", ""]
        out += [f"- {escape(m.label[0].upper() + m.label[1:])}: {escape(m.reason)}." for m in refused]
        out.append("")
    return out


# ------------------------------------------------------------------------------ effects by subgroup


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _subgroup_rows(result: dict, level: str | None, planted: bool) -> list[list[str]]:
    """One row per subgroup of each characteristic of one study (``level`` None: each cell says its own).
    The study and its units are named on its first row, a characteristic and its test on its first row."""
    het = result["heterogeneity"]
    own = f"{round(100 * (1 - het['alpha']))}% CI " if level is None else ""
    rows = []
    for ch in het["characteristics"]:
        test = ch.get("test")
        test_p = pvalue(test["p_value"]) if test is not None else "\u2014 (no test)"
        # A characteristic without subgroups still gets a row, saying why (its note).
        subgroups = ch["subgroups"] or [{"label": "\u2014", "estimate": None, "n_schools": None, "withheld": None,
                                         "why": ch.get("note")}]
        for i, s in enumerate(subgroups):
            if s.get("estimate") is None:
                effect = escape(s.get("withheld") or s.get("why") or "not estimated")
            else:
                effect = f"{num(s['estimate'])} ({own}{num(s['ci_low'])} to {num(s['ci_high'])})"
            n = s.get("n_schools")
            schools = count(n) if n is not None else (SUPPRESSED if s.get("withheld") else "\u2014")
            first = not rows
            row = [_study_ref(result) if first else "", escape(unit_words(result)) if first else "",
                   escape(_capital(ch["label"])) if i == 0 else "", escape(_capital(s["label"])), schools, effect,
                   test_p if i == 0 else ""]
            if planted:
                value = s.get("planted") if is_synthetic(result) else None
                row.append("\u2014" if value is None else num(value))
            rows.append(row)
    return rows


def subgroup_section(results: list[dict]) -> list[str]:
    """Markdown lines of the effects by subgroup of every study with a ``heterogeneity`` block: one table
    across studies and, per characteristic, the study chapter's own verdict (``subgroup_sentence``), so
    a difference is claimed only where that study's permutation test rejects equal effects."""
    out = ["## For whom does it work? Effects by subgroup", ""]
    with_het = [r for r in results if r.get("heterogeneity")]
    if not with_het:
        choices = ", ".join(f'`"{name}"`' for name in HETEROGENEITY_CHARACTERISTICS)
        return out + [("No study in this book has asked for effects by subgroup yet: to ask, add "
                       "`[heterogeneity]` with `by = [...]` to the study's definition, listing any of "
                       f"{choices}."), ""]
    alphas = {r["heterogeneity"]["alpha"] for r in with_het}
    level = f"{round(100 * (1 - next(iter(alphas))))}%" if len(alphas) == 1 else None
    planted = any(is_synthetic(r) and s.get("planted") is not None
                  for r in with_het for ch in r["heterogeneity"]["characteristics"] for s in ch["subgroups"])
    out += ["Each study that asked for it estimated its primary estimator again on the partnership schools of "
            "each subgroup, with the study's window, weights and clustering. The effects are in each study's "
            "outcome units (so they are not pooled across studies), with the estimator's own "
            + (f"{level} intervals" if level else "intervals (at each study's level)")
            + ", not the headline's calibrated ones. Whether a study's subgroups differ is its permutation "
            "test of equal effects (its p is on the characteristic's first row); a "
            "difference is claimed only where that test rejects at the study's significance level, and the more "
            "characteristics are tested, the more likely one difference is chance. Each chapter explains how its "
            "subgroups were estimated and tested.", ""]
    heads = ["Study", "Units", "Characteristic", "Subgroup", "Partnership schools",
             f"Effect ({level} CI)" if level else "Effect (CI)", "Test of equal effects, p"]
    if planted:
        heads.append("Planted effect (synthetic data)")
    rows = [row for r in with_het for row in _subgroup_rows(r, level, planted)]
    out += [table(heads, rows, ["l", "l", "l", "l", "r", "r", "r"] + ["r"] * planted)]
    out += ["**In words.**", ""]
    for r in with_het:
        het = r["heterogeneity"]
        n_tests = sum(1 for ch in het["characteristics"] if ch.get("test"))
        out.append(f"- {_study_ref(r)}:")
        biased = (r.get("verdict") or {}).get("answer") == "cannot_tell_bias"
        out += [f"  - {subgroup_sentence(ch, het['alpha'], n_tests, unit_words(r), biased)}"
                for ch in het["characteristics"]]
    out.append("")
    return out
