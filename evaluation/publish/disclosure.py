"""Disclosure control: the one place that decides which counts and statistics may be published.

Everything written for publication (``results/<id>/``: result.json, tables, figures, the map;
the book reads only that) passes through :func:`control_study` first. Pure functions: no I/O.

The rules follow the ONS Secure Research Service (SRS) output-checking rules of thumb
(ONS SRS Output Checking Guidance, "default SDC rules of thumb"; Statistics and Registration
Service Act 2007 s.39):

* **Threshold.** Every count, and every statistic (mean, estimate, interval), must rest on at
  least 10 units (here schools). A study may set ``[disclosure] threshold = N``; below the
  default only with ``reason = "..."``, which the chapter prints.
* **Primary suppression.** A count of fewer than the threshold (but not zero: no unit
  contributes to a zero) is suppressed, and so is a statistic computed from fewer schools.
* **Secondary (complementary) suppression against differencing.** In a set of cells whose
  total is published, a suppressed cell could be worked out from the total and the other
  cells. So while exactly one cell of the set is suppressed, or the suppressed cells together
  hold fewer than the threshold, the next smallest non-zero cell is suppressed too, and again
  until neither holds. A total that is itself below the threshold is suppressed.

Applied to a study:

* the cohort table (one row per joining cohort: partnership schools found, matched, and
  comparison schools matched; totals in ``counts``): a cohort with any count below the
  threshold is suppressed as a whole (primary), then cohorts are added by the secondary rule.
  Suppressed cohorts leave ``counts.cohorts``; their schools leave the published school rows,
  the map and the matched pairs (a comparison school stays only if it was also matched to a
  published cohort); their rows in the planned-power table lose their counts;
* statistics by year since joining (event study, trends, planted effects) and placebo
  estimates draw on the cohorts observed there: a row is removed when it rests on fewer schools
  than the threshold, or when it draws on some but not all suppressed cohorts (it would single
  them out). A row over every suppressed cohort together, like the overall estimate, stays;
* reasons partnership schools were lost: cells, with the secondary rule against their total;
* texts that name a suppressed cohort (why an estimator was not computed, estimator notes) are
  withheld, and the design checks' texts lose the numbers of removed rows (the answer, the
  padlocks and the check results stay those of the full analysis);
* the overall estimate stays when the partnership and comparison schools analysed are each at
  least the threshold; otherwise nothing of the study can be published (an InputError).

Suppressed values are left out (or null where the contract allows it), never shown as 0; the
``disclosure`` block of result.json lists each, with the rule and the reason, and what was
knowingly left in (``not_suppressed``).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, replace
from typing import Hashable, Iterable, Mapping

import pandas as pd

from evaluation.errors import InputError, problem
from evaluation.multiverse import MultiverseResult
from evaluation.study import DISCLOSURE_DEFAULT_THRESHOLD

PRIMARY = "primary"
SECONDARY = "secondary"
RULE = ("ONS Secure Research Service output rules: no count or statistic from fewer than the threshold of "
        "schools (primary suppression); while exactly one cell of a set with a published total is suppressed, "
        "or the suppressed cells hold fewer than the threshold, the next smallest cell is suppressed too "
        "(secondary suppression against differencing); a total below the threshold is suppressed")
WITHHELD = "not shown (disclosure control)"


@dataclass(frozen=True)
class DisclosurePolicy:
    """The threshold (schools) below which nothing is published; the ONS SRS default is 10."""

    threshold: int = DISCLOSURE_DEFAULT_THRESHOLD
    reason: str | None = None
    unit: str = "schools"

    def __post_init__(self):
        if self.threshold < 1:
            raise ValueError(f"the disclosure threshold must be at least 1, got {self.threshold}")
        if self.lowered and not (self.reason and self.reason.strip()):
            raise ValueError(f"a disclosure threshold of {self.threshold}, below the ONS SRS default of "
                             f"{DISCLOSURE_DEFAULT_THRESHOLD}, needs a reason")

    @property
    def lowered(self) -> bool:
        return self.threshold < DISCLOSURE_DEFAULT_THRESHOLD

    @classmethod
    def of_definition(cls, definition: Mapping | None) -> "DisclosurePolicy":
        """The policy a study definition (``result["study"]["definition"]``) sets; default when absent."""
        d = (definition or {}).get("disclosure") or {}
        return cls(threshold=int(d.get("threshold", DISCLOSURE_DEFAULT_THRESHOLD)), reason=d.get("reason"))

    def small(self, n) -> bool:
        """A count that may not be published: more than zero and fewer than the threshold."""
        return n is not None and 0 < n < self.threshold

    def header(self) -> dict:
        return {"threshold": self.threshold, "default_threshold": DISCLOSURE_DEFAULT_THRESHOLD,
                "lowered": self.lowered, "reason": self.reason, "unit": self.unit, "rule": RULE}


# ---------------------------------------------------------------------------- the suppression rules


@dataclass(frozen=True)
class TableSuppression:
    """Which rows (cells) of a table are suppressed, by which rule, and which column totals."""

    rows: dict  # key -> PRIMARY | SECONDARY
    totals: frozenset = frozenset()  # columns whose total is below the threshold (suppressed too)

    def __contains__(self, key) -> bool:
        return key in self.rows


def suppress_table(rows: Mapping[Hashable, Mapping[str, int]], threshold: int,
                   totals: Mapping[str, int] | None = None) -> TableSuppression:
    """Primary and secondary suppression of whole rows of a table of counts.

    ``rows``: key -> {column: count}. Each column is a set of cells with a published total
    (``totals[column]``, default the column's sum). A row with any count in 1..threshold-1 is
    suppressed (primary). Then, column by column, while the suppressed rows are exactly one or
    hold fewer than ``threshold`` in that column (and more than zero), the row with the next
    smallest non-zero count in that column is suppressed (secondary), until no column needs
    more. A column whose total is in 1..threshold-1 is reported in ``totals`` (suppress it)."""
    keys = list(rows)
    order = {k: i for i, k in enumerate(keys)}
    columns = list(dict.fromkeys(c for k in keys for c in rows[k]))
    value = {k: {c: int(rows[k].get(c) or 0) for c in columns} for k in keys}
    total = {c: int(totals[c]) if totals and totals.get(c) is not None else sum(value[k][c] for k in keys)
             for c in columns}
    below = frozenset(c for c in columns if 0 < total[c] < threshold)
    out = {k: PRIMARY for k in keys if any(0 < value[k][c] < threshold for c in columns)}
    while True:
        pick = None
        for c in columns:
            if c in below:  # the total is suppressed: nothing to difference against
                continue
            held = sum(value[k][c] for k in out)
            if held <= 0 or not (len(out) == 1 or held < threshold):
                continue
            candidates = [k for k in keys if k not in out and value[k][c] > 0]
            if candidates:
                pick = min(candidates, key=lambda k: (value[k][c], order[k]))
                break
        if pick is None:
            return TableSuppression(out, below)
        out[pick] = SECONDARY


def suppress_cells(cells: Mapping[Hashable, int], threshold: int, total: int | None = None) -> TableSuppression:
    """:func:`suppress_table` for a one-column table (cells of one set with a published total)."""
    return suppress_table({k: {"n": v} for k, v in cells.items()}, threshold,
                          None if total is None else {"n": total})


def event_time_rows(cohorts_at: Mapping[int, set], n_at: Mapping[int, int], suppressed: set,
                    threshold: int, times: Iterable[int]) -> dict[int, str]:
    """Rows by year since joining (e) that may not be published, with the reason.

    A row at e draws on the cohorts observed at e (``cohorts_at``) and ``n_at[e]`` partnership
    schools. It is removed when it rests on fewer than ``threshold`` schools (primary), or when
    it draws on some but not all of the suppressed cohorts (secondary: it would single them out,
    and its count would give theirs). Rows over no suppressed cohort, or over all of them
    together (like the overall estimate), stay."""
    out = {}
    for e in sorted(set(times)):
        drawn = set(cohorts_at.get(e, set()))
        n = int(n_at.get(e, 0))
        if n < threshold:
            out[e] = PRIMARY
        elif suppressed and (drawn & suppressed) and not suppressed <= drawn:
            out[e] = SECONDARY
    return out


# ---------------------------------------------------------------------------- a study's publication


@dataclass
class Published:
    """What may be written: the controlled result (with its ``disclosure`` block) and frames."""

    result: dict
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def record(self) -> dict:
        return self.result["disclosure"]

    @property
    def suppressed_cohorts(self) -> list[int]:
        return sorted(int(s["key"]) for s in self.record["suppressed"] if s["table"] == "counts.cohorts")


def _words_list(items: list) -> str:
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _cohorts(gs: list) -> str:
    """'the 2014 cohort', 'the 2014 and 2016 cohorts'."""
    return f"the {_words_list(sorted(gs))} cohort" + ("s" if len(gs) > 1 else "")


def _fewer(policy: DisclosurePolicy) -> str:
    return f"fewer than {policy.threshold} {policy.unit}"


def _item(table: str, key, rule: str, reason: str, what: str) -> dict:
    return {"table": table, "key": key, "rule": rule, "reason": reason, "what": what}


def control_study(result: dict, policy: DisclosurePolicy | None = None, *,
                  frames: Mapping[str, pd.DataFrame] | None = None, links: pd.DataFrame | None = None,
                  coverage: pd.DataFrame | None = None) -> Published:
    """Disclosure control of a study's result.json content and the per-school frames written beside it.

    ``frames``: ``cohort`` (urn, g, ...: the partnership schools found), ``matched_pairs``
    (treated_id, control_id, cohort) and ``schools`` (urn, group, ...: the map). ``links``: urn,
    g, treated: every analysed school with the cohort(s) it belongs to (a comparison school may
    be matched in several). ``coverage``: g, e, urn: the partnership schools' outcome rows in the
    analysis panel by year since joining. Returns copies; the inputs are not changed.

    Raises InputError when the schools analysed (partnership or comparison) are fewer than the
    threshold: then no statistic of the study may be published."""
    policy = policy or DisclosurePolicy.of_definition(result["study"].get("definition"))
    t = policy.threshold
    r = copy.deepcopy(result)
    out_frames = {name: f.copy() for name, f in (frames or {}).items()}
    suppressed: list[dict] = []
    kept: list[dict] = []
    c = r["counts"]
    sid = r["study"]["id"]

    for key, words in (("treated_analysed", "partnership schools"), ("comparison_matched", "comparison schools")):
        if policy.small(c[key]) or c[key] == 0:
            raise InputError(problem(
                f"nothing from study {sid!r} can be published: {c[key]} {words} are in the analysis, fewer than "
                f"the disclosure threshold of {t} schools (ONS Secure Research Service rule), so every estimate "
                f"would rest on too few schools. Widen the cohort, or set [disclosure] threshold lower with a "
                f"reason", column="disclosure.threshold", value=t))

    # -- the cohort table, row by row, against the totals in counts
    cols = ("treated", "treated_matched", "comparison_matched")
    table = {int(g["g"]): {k: int(g[k]) for k in cols} for g in c["cohorts"]}
    sup = suppress_table(table, t)
    gone = set(sup.rows)
    for g, rule in sorted(sup.rows.items()):
        reason = (_fewer(policy) if rule == PRIMARY else
                  "so that the suppressed cohorts cannot be worked out from the totals")
        suppressed.append(_item("counts.cohorts", g, rule, reason,
                                f"the {g} cohort: its counts, schools, matched pairs and map points"))
    c["cohorts"] = [g for g in c["cohorts"] if int(g["g"]) not in gone]
    _nested_differences(table, gone, policy, kept)

    # -- reasons partnership schools were lost: cells of one set with total found - analysed
    lost = {k: int(v) for k, v in c["treated_lost"].items()}
    lost_sup = suppress_cells(lost, t)
    for key, rule in sorted(lost_sup.rows.items()):
        reason = (_fewer(policy) if rule == PRIMARY else
                  "so that the other suppressed reasons cannot be worked out from the number lost")
        suppressed.append(_item("counts.treated_lost", key, rule, reason,
                                f"the number of partnership schools lost because: {key.replace('_', ' ')}"))
    c["treated_lost"] = {k: v for k, v in c["treated_lost"].items() if k not in lost_sup}
    if lost_sup.totals:
        kept.append({"table": "counts", "key": "treated_found - treated_analysed",
                     "reason": f"the number of partnership schools lost is {_fewer(policy)}; it follows from two "
                               "totals the result contract requires (found and analysed), so it is not hidden"})
    if lost_sup.rows:
        kept.append({"table": "counts.treated_lost", "key": sorted(lost_sup.rows),
                     "reason": "the suppressed reasons can be worked out in part from totals the result contract "
                               "requires: schools found minus schools entering matching (the cohort table's "
                               "partnership schools, the planned power) gives those lost before matching (missing "
                               "data and too few years together), schools entering matching minus schools analysed "
                               "those lost at matching; where the other reason of such a pair is zero, exactly. "
                               "Closing this needs a result contract that lets those totals be suppressed"})

    # -- statistics by year since joining
    cohorts_at: dict[int, set] = {}
    n_at: dict[int, int] = {}
    if coverage is not None and len(coverage):
        for e, grp in coverage.groupby("e"):
            cohorts_at[int(e)] = {int(g) for g in grp["g"].unique()}
            n_at[int(e)] = int(grp["urn"].nunique())
    elif coverage is None:
        kept.append({"table": "event_study", "key": None,
                     "reason": "no coverage by year since joining was given, so rows by year were not checked"})
    removed_e = _event_time(r, cohorts_at, n_at, gone, policy, suppressed) if coverage is not None else {}
    removed_k = _placebos(r, gone, policy, suppressed)
    _scrub_checks(r, removed_k, removed_e)

    # -- planned power: counts by cohort and partnership sizes
    _power(r, gone, policy, suppressed)

    # -- texts naming a suppressed cohort
    _scrub_notes(r, gone, suppressed)

    # -- per-school frames: school rows, matched pairs, map points
    _frames(out_frames, gone, links)

    r["disclosure"] = {**policy.header(), "suppressed": suppressed, "not_suppressed": kept}
    return Published(r, out_frames)


def _nested_differences(table: dict, gone: set, policy: DisclosurePolicy, kept: list) -> None:
    """Counts a reader can take from two published counts of a cohort (found minus matched)."""
    shown = [g for g in sorted(table) if g not in gone
             and policy.small(table[g]["treated"] - table[g]["treated_matched"])]
    if shown:
        kept.append({"table": "counts.cohorts", "key": shown,
                     "reason": f"in {_cohorts(shown)} the partnership schools found but not matched (found minus "
                               f"matched) are {_fewer(policy)}; differences of two published counts of the same "
                               "cohort are not treated as cells"})


def _event_time(r: dict, cohorts_at, n_at, gone: set, policy: DisclosurePolicy, suppressed: list
                ) -> dict[str, set]:
    """Remove rows by year since joining that rest on too few schools or single out suppressed cohorts."""
    t = policy.threshold
    removed: dict[str, set] = {}

    def words(e_rule: dict) -> str:
        reasons = []
        if PRIMARY in e_rule.values():
            reasons.append(f"fewer than {t} partnership schools observed there")
        if SECONDARY in e_rule.values():
            reasons.append("they draw on only some of the suppressed cohorts")
        return "; ".join(reasons)

    def drop(table: str, rows: list, label: str, extra=lambda row: False) -> list:
        rule = event_time_rows(cohorts_at, n_at, gone, t, [row["e"] for row in rows])
        own = {row["e"]: PRIMARY for row in rows if extra(row) and row["e"] not in rule}
        rule = {**rule, **own}
        if rule:
            es = sorted(rule)
            suppressed.append(_item(table, es, SECONDARY if set(rule.values()) == {SECONDARY} else PRIMARY,
                                    words(rule), f"{label} at e = {_words_list(es)}"))
        return [row for row in rows if row["e"] not in rule]

    for name, rows in (r.get("event_study") or {}).items():
        kept_rows = drop(f"event_study.{name}", rows, f"the {name.replace('_', ' ')} effects by year since joining")
        removed[name] = {row["e"] for row in rows} - {row["e"] for row in kept_rows}
        r["event_study"][name] = kept_rows
    if r.get("trends"):
        r["trends"] = drop("trends", r["trends"], "the outcome trends by year since joining",
                           extra=lambda row: policy.small(row.get("n_schools")))
    truth = r.get("synthetic_truth")
    if truth:
        for key, label in (("event_time", "the planted (synthetic) effect by year since joining"),
                           ("did_of_all_planted_effects", "the planted (synthetic) difference by year since joining")):
            if truth.get(key):
                truth[key] = drop(f"synthetic_truth.{key}", truth[key], label)
    return removed


def _placebos(r: dict, gone: set, policy: DisclosurePolicy, suppressed: list) -> list[int]:
    """Remove placebo estimates resting on too few schools or on only some suppressed cohorts."""
    placebo = (r.get("diagnostics") or {}).get("placebo_dates") or {}
    rows = placebo.get("placebos") or []
    out, removed = [], []
    for p in rows:
        real = {int(g) + int(p["k"]) for g in p.get("cohorts") or []}
        few = any(policy.small(p.get(k)) for k in ("treated_schools", "comparison_schools"))
        partial = bool(gone) and bool(real & gone) and not gone <= real
        if few or partial:
            removed.append(int(p["k"]))
            suppressed.append(_item(
                "diagnostics.placebo_dates.placebos", int(p["k"]), PRIMARY if few else SECONDARY,
                f"{_fewer(policy)}" if few else "it draws on only some of the suppressed cohorts",
                f"the placebo estimate for joining {p['k']} year(s) early (its row and the numbers in the "
                "placebo check's text)"))
        else:
            out.append(p)
    if removed:
        placebo["placebos"] = out
        effects = r.get("effects") or {}
        if effects.get("placebo_g"):  # the same estimates in effect-size units
            effects["placebo_g"] = [row for row in effects["placebo_g"] if int(row["k"]) not in removed]
    return removed


def _scrub_checks(r: dict, removed_k: list[int], removed_e: dict[str, set]) -> None:
    """Take the numbers of removed rows out of the design checks' texts (verdict and padlock
    reasons); whether each check failed, the answer and the padlocks stay as computed."""
    checks = (r.get("verdict") or {}).get("checks") or []
    any_e = set().union(*removed_e.values()) if removed_e else set()
    swaps: dict[str, str] = {}
    for check in checks:
        old = check.get("detail") or ""
        new = old
        if check.get("name") == "placebo" and removed_k:
            found = 0
            for k in removed_k:
                new, n = re.subn(rf"(?<![\d-]){k} year\(s\) early: [^;]*?p (?:<|=) [0-9.]+",
                                 f"{k} year(s) early: {WITHHELD}", new)
                found += n
            if found < len(removed_k):  # a format this rule does not know: withhold the whole text
                new = f"placebo joining dates: the estimates are {WITHHELD}"

        def pre(m):
            return f"; largest pre-joining difference {WITHHELD}" if int(m.group(1)) in any_e else m.group(0)

        new = re.sub(r"; largest pre-joining difference .*? at e = (-?\d+)", pre, new)
        if new != old:
            swaps[old] = new
            check["detail"] = new
    if not swaps:
        return

    def swap(node):  # the same texts, quoted in the padlock reasons and the summary's words
        if isinstance(node, str):
            for old, new in swaps.items():
                node = node.replace(old, new)
            return node
        if isinstance(node, list):
            return [swap(v) for v in node]
        if isinstance(node, dict):
            return {k: swap(v) for k, v in node.items()}
        return node

    for block in ("effects", "summary"):
        if r.get(block) is not None:
            r[block] = swap(r[block])


def _power(r: dict, gone: set, policy: DisclosurePolicy, suppressed: list) -> None:
    """The planned-power block: per-cohort counts and the sizes of the partnerships."""
    power = r.get("power")
    if not power:
        return
    rows = power.get("cohorts") or []
    found = {int(row["g"]): {"treated": int(row["treated"])} for row in rows if row.get("treated") is not None}
    hide = set(suppress_table(found, policy.threshold).rows) | (gone & set(found))
    dropped = {int(row["g"]): int(row["treated_dropped"]) for row in rows if row.get("treated_dropped") is not None}
    hide_dropped = set(suppress_cells(dropped, policy.threshold).rows)
    for row in rows:
        g = int(row["g"])
        if g in hide:
            row["treated"] = None
        if g in hide | hide_dropped and "treated_dropped" in row:
            row["treated_dropped"] = None
    if hide:
        gs = sorted(hide)
        suppressed.append(_item("power.cohorts", gs, PRIMARY, f"{_fewer(policy)}, or a suppressed cohort",
                                f"the planned-power counts of {_cohorts(gs)}"))
    if hide_dropped - hide:
        gs = sorted(hide_dropped - hide)
        suppressed.append(_item("power.cohorts", gs, PRIMARY, _fewer(policy),
                                f"the number of partnership schools the planned power leaves out in "
                                f"{_cohorts(gs)}"))
    notes = power.get("notes") or []
    small_note = re.compile(r"^(\d+) partnership school\(s\)")
    if any((m := small_note.match(n)) and policy.small(int(m.group(1))) for n in notes):
        power["notes"] = [small_note.sub(f"fewer than {policy.threshold} partnership school(s)", n)
                          if (m := small_note.match(n)) and policy.small(int(m.group(1))) else n for n in notes]
        suppressed.append(_item("power.notes", None, PRIMARY, _fewer(policy),
                                "the number of partnership schools the planned power leaves out, in its notes"))
    sizes = power.get("cluster_sizes")
    if sizes and any(policy.small(s) for s in sizes):
        power["cluster_sizes"] = None
        suppressed.append(_item("power.cluster_sizes", None, PRIMARY, f"partnerships of {_fewer(policy)}",
                                "the number of schools in each partnership (used for the planned power)"))


def _mentions(text: str, gone: set) -> bool:
    return any(re.search(rf"(?<!\d){g}(?:\.0)?(?!\d)", text) for g in gone)


def _scrub_notes(r: dict, gone: set, suppressed: list) -> None:
    """Texts that name a suppressed cohort would say something about it alone: withheld."""
    if not gone:
        return
    skipped = r.get("estimators_not_computed") or {}
    for name, text in list(skipped.items()):
        if isinstance(text, str) and _mentions(text, gone):
            skipped[name] = f"not computed: the reason concerns a suppressed cohort, {WITHHELD}"
            suppressed.append(_item("estimators_not_computed", name, SECONDARY, "it names a suppressed cohort",
                                    f"why the {name.replace('_', ' ')} estimator was not computed"))
    for name, entry in (r.get("estimates") or {}).items():
        notes = entry.get("notes") or []
        if any(_mentions(n, gone) for n in notes):
            entry["notes"] = [f"a note about a suppressed cohort: {WITHHELD}" if _mentions(n, gone) else n
                              for n in notes]
            suppressed.append(_item(f"estimates.{name}.notes", name, SECONDARY, "it names a suppressed cohort",
                                    f"a note of the {name.replace('_', ' ')} estimator"))


def _frames(frames: dict[str, pd.DataFrame], gone: set, links: pd.DataFrame | None) -> None:
    """Drop school rows, matched pairs and map points of suppressed cohorts."""
    if not gone:
        return
    if "cohort" in frames and "g" in frames["cohort"].columns:
        f = frames["cohort"]
        frames["cohort"] = f[~f["g"].astype("int64").isin(gone)].reset_index(drop=True)
    if "matched_pairs" in frames and "cohort" in frames["matched_pairs"].columns:
        f = frames["matched_pairs"]
        frames["matched_pairs"] = f[~f["cohort"].astype("int64").isin(gone)].reset_index(drop=True)
    if "schools" in frames and len(frames["schools"]):
        f = frames["schools"]
        if links is None:  # without the cohorts of each school, no school can be shown safely
            frames["schools"] = f.iloc[0:0]
            return
        shown = set(links.loc[~links["g"].astype("int64").isin(gone), "urn"].astype("int64"))
        frames["schools"] = f[f["urn"].astype("int64").isin(shown)].reset_index(drop=True)


# ---------------------------------------------------------------------------- a self-evaluation


def control_self_evaluation(result: dict, policy: DisclosurePolicy | None = None) -> dict:
    """A self-evaluation with its ``disclosure`` block (a copy).

    A self-evaluation is about named schools by design: a partnership of 3-50 schools publishes
    its own schools' results against families of similar schools, so its schools, their average
    and each school's own comparison are published whatever their number; nothing is suppressed.
    The block says so, and flags comparison families (or a comparison group) smaller than the
    threshold, whose means rest on fewer schools than the study rule allows."""
    policy = policy or DisclosurePolicy()
    r = copy.deepcopy(result)
    kept = [{"table": "schools", "key": None,
             "reason": "the partnership's own schools are named and their results and average are published "
                       "whatever their number: a self-evaluation is about named schools by design"}]
    small = [b for b in r.get("by_school") or [] if policy.small(b.get("family_size"))]
    if small:
        kept.append({"table": "by_school", "key": [int(b["urn"]) for b in small],
                     "reason": f"the comparison families of {len(small)} school(s) have {_fewer(policy)}, so "
                               "those schools' comparisons rest on fewer schools than the study rule allows"})
    n_comparison = (r.get("comparison") or {}).get("schools")
    if policy.small(n_comparison):
        kept.append({"table": "comparison", "key": "schools",
                     "reason": f"the comparison group has {_fewer(policy)}"})
    r["disclosure"] = {**policy.header(), "suppressed": [], "not_suppressed": kept}
    return r


# ---------------------------------------------------------------------------- the multiverse


WITHHELD = "not shown (disclosure control)"


def control_multiverse(mv: MultiverseResult, policy: DisclosurePolicy | None = None) -> tuple[dict, MultiverseResult]:
    """The multiverse as it may be published, and its disclosure record.

    A specification resting on fewer than the threshold of partnership or comparison schools
    keeps its choices but loses its numbers (``withheld``); a count below the threshold inside
    a reason a specification could not be estimated becomes "fewer than N". Raises InputError
    when the headline specification itself may not be published (then neither may the study)."""
    policy = policy or DisclosurePolicy.of_definition(mv.definition)
    t = policy.threshold
    suppressed, out = [], []
    for s in mv.specifications:
        small = [w for w, n in (("partnership", s.treated_schools), ("comparison", s.comparison_schools))
                 if n is not None and (policy.small(n) or (n == 0 and s.estimated))]
        if small:
            if s.headline:
                raise InputError(problem(
                    f"the multiverse of {mv.study_id!r} cannot be published: its headline specification rests on "
                    f"fewer than {t} {' and '.join(small)} schools (disclosure threshold)",
                    column="disclosure.threshold", value=t))
            why = f"fewer than {t} {' and '.join(small)} schools"
            suppressed.append({"table": "specifications", "key": s.index, "rule": "primary", "reason": why,
                               "what": "the estimate, interval, p-value and counts of this specification"})
            s = replace(s, estimate=None, se=None, ci_low=None, ci_high=None, p=None, agrees=None,
                        treated_schools=None, comparison_schools=None, treated_clusters=None,
                        max_abs_smd_after=None, withheld=f"{WITHHELD}: {why}")
        elif s.failure:
            s = replace(s, failure=_small_numbers(s.failure, t))
        out.append(s)
    published = replace(mv, specifications=out)
    record = {**policy.header(), "suppressed": suppressed, "not_suppressed": [{
        "table": "specifications", "key": None,
        "reason": "the numbers of schools differ between specifications by the schools one choice adds or "
                  "drops (a caliper, a ratio); such a difference is published even when it is below the "
                  "threshold, as no estimate is published for those schools alone"}]}
    return record, published


_COUNT = re.compile(r"(?<![\w.'])(\d+)(?![\w.'])")


def _small_numbers(text: str, threshold: int) -> str:
    """Counts of 1..threshold-1 in a message replaced by 'fewer than N' (years and zero kept)."""
    def sub(m):
        n = int(m.group(1))
        return f"fewer than {threshold}" if 0 < n < threshold else m.group(0)

    return _COUNT.sub(sub, text)
