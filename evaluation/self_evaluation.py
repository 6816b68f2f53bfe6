"""One partnership evaluating itself: its schools against a matched family of similar schools.

For a trust, federation or cluster of a few schools, conventional clustered standard
errors are meaningless (one partnership is one cluster). So the answer rests on:

* a family of comparison schools for each partnership school: the ``family_size`` most
  similar schools of the same phase on pre-joining results and context (z-score
  distance, as EEF's families of schools), never members of the partnership;
* the partnership's average effect by synthetic difference-in-differences
  (Arkhangelsky et al. 2021), with synthetic control (Abadie et al. 2010) and plain DiD
  beside it, standard errors by the placebo method (comparison schools as placebo
  partnerships);
* a randomisation-inference p-value: how often a random set of comparison schools of
  the same size shows an effect as large (studentised TWFE statistic; exact when the
  number of possible sets is small);
* school-by-school results, each school against its own family;
* the minimum detectable effect (MDES): (z_0.975 + z_0.8) x the placebo SE of the
  synthetic-DiD estimate, in effect-size units, so "we cannot tell yet" comes with the
  smallest effect the data could have shown.

Pure functions of the tables (``StudyData``) and a list of schools with join dates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from evaluation import __version__
from evaluation.stages.cohort import StudyData, data_fingerprint, pre_features
from evaluation.data.calendar import first_exposed_year
from evaluation.data.schema import load_schema
from evaluation.effects import months_progress
from evaluation.errors import InputError, problem
from evaluation.result_schema import RESULT_SCHEMA_VERSION, SelfEvaluationResult
from evaluation.stages.effects import pupil_level_sd
from evaluation.study import CONTEXT_COVARIATES

DEFAULT_OUTCOME = {"primary": "ks2_rwm_expected_pct", "secondary": "ks4_attainment8"}
COVARIATES = ("pre_level", "pre_trend", "fsm_pct", "eal_pct", "sen_pct", "pupils")
MDES_MULTIPLIER = float(stats.norm.ppf(0.975) + stats.norm.ppf(0.8))


@dataclass(frozen=True)
class SelfEvaluationSpec:
    name: str
    schools: pd.DataFrame  # urn, joined (datetime)
    outcome: str | None = None
    pre_years: int = 4
    post_years: int = 5
    family_size: int = 50
    seed: int = 20240901
    n_perm: int = 999
    title: str | None = None  # e.g. the partnership's name; defaults to ``name``


def read_schools_file(path) -> pd.DataFrame:
    """A partnership's schools: CSV with columns urn and joined (a date), one row per school."""
    from evaluation.data.validate import parse_dates, read_raw

    raw = read_raw(path)
    cells = raw.cells.rename(columns=lambda c: str(c).strip().lower())
    problems = []
    for col in ("urn", "joined"):
        if col not in cells.columns:
            problems.append(problem(f"required column {col!r} is missing (expected columns: urn, joined)",
                                    file=raw.label, row=1 if raw.kind == "csv" else None, column=col))
    if problems:
        raise InputError(problems)
    urn = pd.to_numeric(cells["urn"].str.strip(), errors="coerce")
    joined, bad_dates = parse_dates(cells["joined"].str.strip())
    for row in urn.index[urn.isna() | (urn % 1 != 0)]:
        problems.append(problem("expected a six-digit URN", file=raw.label, row=int(row), column="urn",
                                value=cells.at[row, "urn"]))
    for row in bad_dates.index[bad_dates | joined.isna()]:
        problems.append(problem("expected a join date (YYYY-MM-DD or DD/MM/YYYY)", file=raw.label, row=int(row),
                                column="joined", value=cells.at[row, "joined"]))
    dup = urn.duplicated(keep="first") & urn.notna()
    for row in urn.index[dup]:
        problems.append(problem("the same school is listed twice", file=raw.label, row=int(row), column="urn",
                                value=cells.at[row, "urn"]))
    if problems:
        raise InputError(problems, summary=f"{raw.label}: {len(problems)} problem(s); nothing was evaluated")
    if len(urn) == 0:
        raise InputError(problem("the file lists no schools", file=raw.label))
    return pd.DataFrame({"urn": urn.astype("int64").to_numpy(), "joined": joined.to_numpy()})


def schools_of_partnership(data: StudyData, partnership_id: str) -> pd.DataFrame:
    m = data.memberships[data.memberships["partnership_id"] == partnership_id]
    if m.empty:
        known = data.partnerships["partnership_id"].astype(str)
        import difflib

        close = difflib.get_close_matches(partnership_id, list(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise InputError(problem(f"no partnership {partnership_id!r} with member schools in the store{hint}",
                                 column="partnership_id", value=partnership_id))
    m = m.sort_values("joined").drop_duplicates("urn")
    return pd.DataFrame({"urn": m["urn"].astype("int64").to_numpy(), "joined": m["joined"].to_numpy()})


def example_partnership(data: StudyData, size: int = 5) -> str:
    """A partnership for the demo: ``size`` schools of one phase that all joined on one date
    between 2014 and 2018 (the lowest such id; else the nearest size above 2)."""
    m = data.memberships.merge(data.schools[["urn", "phase"]], on="urn")
    grp = m.groupby("partnership_id").agg(n=("urn", "nunique"), phases=("phase", "nunique"),
                                          first=("joined", "min"), last=("joined", "max"))
    ok = grp[(grp["phases"] == 1) & (grp["first"] == grp["last"]) & grp["first"].dt.year.between(2013, 2017)
             & (grp["n"] >= 3)]
    if ok.empty:
        raise InputError(problem("no partnership of three or more schools joined on one date in 2013-2017"))
    ok = ok.assign(dist=(ok["n"] - size).abs()).sort_values(["dist", "n"], kind="stable")
    return str(ok[ok["dist"] == ok["dist"].min()].index.sort_values()[0])


def _families(spec, data, treated, outcome, g0):
    """Family of comparison schools per partnership school, matched on the years before g0."""
    from evaluation.matching import family_of_schools

    sy = data.school_years
    pre = list(range(g0 - spec.pre_years, g0))
    wide = sy.pivot(index="urn", columns="year", values=outcome)
    feats = pre_features(wide, pre)
    ctx = sy[sy["year"].isin(pre)].groupby("urn")[list(CONTEXT_COVARIATES)].mean()
    phase = treated["phase"].iloc[0]
    schools = data.schools
    pool = schools.loc[(schools["phase"] == phase) & ~schools["urn"].isin(treated["urn"]), ["urn"]]
    frame = pd.concat([treated[["urn"]].assign(treated=1), pool.assign(treated=0)], ignore_index=True)
    frame = frame.join(feats, on="urn").join(ctx, on="urn")
    complete = frame[list(COVARIATES)].notna().all(axis=1) & (frame["pre_n"] >= 2)
    lost = frame.loc[(frame["treated"] == 1) & ~complete, "urn"].tolist()
    frame = frame[complete].reset_index(drop=True)
    if frame["treated"].sum() == 0:
        raise InputError(problem(f"none of the schools has two or more years of {outcome} before {g0}: there is "
                                 "no baseline to compare from", column=outcome))
    res = family_of_schools(frame, "treated", list(COVARIATES), k=spec.family_size, id="urn")
    pairs = res.pairs()
    return pairs.rename(columns={"treated_id": "urn", "control_id": "comparison_urn"}), lost


def _balanced_panel(data, outcome, units, first, last):
    sy = data.school_years
    rows = sy[sy["urn"].isin(units) & sy["year"].between(first, last)][["urn", "year", outcome]]
    rows = rows[rows[outcome].notna()]
    counts = rows.groupby("urn").size()
    full = counts.index[counts == last - first + 1]
    return rows[rows["urn"].isin(full)].rename(columns={outcome: "y"}).astype({"urn": "int64", "year": "int64"})


def _estimates(panel: pd.DataFrame, treated_urns, g0, seed) -> dict:
    from evaluation.estimators.synthetic import did_estimate, sc_estimate, synthdid_estimate

    p = panel.assign(D=(panel["urn"].isin(treated_urns) & (panel["year"] >= g0)).astype(int))
    out = {}
    for name, fn in (("synthetic_did", synthdid_estimate), ("synthetic_control", sc_estimate),
                     ("did", did_estimate)):
        res = fn(p, unit="urn", time="year", outcome="y", treated="D", se="placebo", seed=seed)
        o = res.overall
        out[name] = {"estimate": o.estimate, "se": o.se, "ci_low": o.ci_low, "ci_high": o.ci_high, "p": o.p_value,
                     "variance": res.variance.describe()}
        if name == "synthetic_did":
            out[name]["gaps"] = res.details.get("gaps")
            omega = res.details.get("omega")
            out[name]["top_comparison_weights"] = omega[:10] if isinstance(omega, list) else omega
    return out


def _window_words(g0: int, pre: int, post: int, spec: SelfEvaluationSpec, first: int, last: int) -> str:
    """Why the years compared start and end where they do."""
    start = (f"{pre} years before joining (as asked)" if pre == spec.pre_years else
             f"{pre} years before joining, because the data start in {first} (asked for {spec.pre_years})")
    end = (f"{post} years after the first results after joining (as asked)" if post == spec.post_years else
           f"with the latest results in the data ({last}), {post} years after the first results after joining "
           f"(asked for up to {spec.post_years})")
    return f"The years compared start {start} and end {end}."


def _reproduce(spec: SelfEvaluationSpec, data: StudyData, outcome: str) -> dict:
    """The command that reproduces this result: ``--partnership ID`` when the schools are exactly one
    partnership's members with its joining dates, else ``--schools FILE`` with the file's rows."""
    rows = spec.schools[["urn", "joined"]].copy()
    rows["joined"] = pd.to_datetime(rows["joined"]).dt.strftime("%Y-%m-%d")
    rows = rows.sort_values(["urn", "joined"]).reset_index(drop=True)
    pid = None
    m = data.memberships[data.memberships["urn"].isin(rows["urn"])]
    for candidate in sorted(m["partnership_id"].astype(str).unique()):
        try:
            own = schools_of_partnership(data, candidate)
        except InputError:
            continue
        own = own.assign(joined=pd.to_datetime(own["joined"]).dt.strftime("%Y-%m-%d"))
        if own.sort_values(["urn", "joined"]).reset_index(drop=True).equals(rows):
            pid = candidate
            break
    who = f"--partnership {pid}" if pid else f"--schools {spec.name}_schools.csv"
    defaults = SelfEvaluationSpec(name=spec.name, schools=spec.schools)
    parts = ["impact self-evaluate", who, f"--name {spec.name}", f"--outcome {outcome}"]
    if spec.family_size != defaults.family_size:
        parts.append(f"--family-size {spec.family_size}")
    if spec.n_perm != defaults.n_perm:
        parts.append(f"--permutations {spec.n_perm}")
    parts.append(f"--seed {spec.seed}")
    return {"command": " ".join(parts), "partnership_id": pid,
            "schools_file": None if pid else rows.to_dict("records")}


def self_evaluate(spec: SelfEvaluationSpec, data: StudyData) -> dict:
    """The whole self-evaluation, as a JSON-ready dict (the chapter reads it)."""
    from evaluation.inference.randomisation import randomisation_test

    schools = spec.schools.merge(data.schools[["urn", "name", "phase"]], on="urn", how="left")
    unknown = schools.loc[schools["phase"].isna(), "urn"].tolist()
    if unknown:
        raise InputError(problem(f"{len(unknown)} school(s) not in the store's schools table (e.g. URN {unknown[0]})",
                                 column="urn", value=unknown[0]))
    phases = schools["phase"].astype(str).unique()
    if len(phases) > 1:
        raise InputError(problem(f"the schools mix phases ({', '.join(sorted(phases))}): evaluate primary and "
                                 "secondary schools separately, their results are not comparable", column="urn"))
    phase = phases[0]
    outcome = spec.outcome or DEFAULT_OUTCOME.get(phase)
    col = load_schema("school_years").column(outcome) if outcome else None
    if col is None or col.role != "outcome":
        raise InputError(problem(f"no outcome for {phase} schools: name one with --outcome", value=outcome))
    schools["g"] = first_exposed_year(schools["joined"])
    g0 = int(schools["g"].mode().min())
    first_year, last_year = data.years
    if g0 - 2 < first_year or g0 > last_year:
        raise InputError(problem(f"joining in {g0} leaves no before-and-after data in {first_year}-{last_year}",
                                 column="joined"))
    pre = min(spec.pre_years, g0 - first_year)
    post = min(spec.post_years, last_year - g0)
    main = schools[schools["g"] == g0]
    late = schools[schools["g"] != g0]
    families, lost = _families(SelfEvaluationSpec(**{**spec.__dict__, "pre_years": pre}), data, main, outcome, g0)
    comparison = sorted(set(families["comparison_urn"]))
    panel = _balanced_panel(data, outcome, list(main["urn"]) + comparison, g0 - pre, g0 + post)
    treated_in = sorted(set(panel["urn"]) & set(main["urn"]))
    if not treated_in:
        raise InputError(problem(f"no partnership school has {outcome} in every year {g0 - pre}-{g0 + post}",
                                 column=outcome))
    controls_in = sorted(set(panel["urn"]) - set(treated_in))
    partnership = _estimates(panel, treated_in, g0, spec.seed)
    ri_panel = panel.assign(cohort=np.where(panel["urn"].isin(treated_in), g0, 0))
    ri = randomisation_test(ri_panel, y="y", unit="urn", time="year", cohort="cohort", n_perm=spec.n_perm,
                            seed=spec.seed)
    by_school = []
    for urn in treated_in:
        fam = families.loc[families["urn"] == urn, "comparison_urn"]
        sub = panel[panel["urn"].isin([urn, *fam])]
        est = _estimates(sub, [urn], g0, spec.seed)["synthetic_did"]
        by_school.append({"urn": int(urn), "name": str(schools.set_index("urn").at[urn, "name"]),
                          "family_size": int(sub["urn"].nunique() - 1),
                          **{k: est[k] for k in ("estimate", "se", "ci_low", "ci_high")}})
    sd = float(data.school_years.loc[data.school_years["year"] == g0 - 1, outcome].std(ddof=1))

    pupil_sd, source = pupil_level_sd(outcome, data)
    main_est = partnership["synthetic_did"]
    mdes_units = MDES_MULTIPLIER * main_est["se"]
    if pupil_sd:  # EEF effect sizes and months are in pupil-level SDs
        scale, scale_label = pupil_sd, source
        g, mdes = main_est["estimate"] / scale, mdes_units / scale
        withheld = None
    else:  # the between-school SD is 2.5-3x smaller and would inflate g and months: withhold them
        scale, scale_label, g, mdes = None, "", None, None
        withheld = (f"no pupil-level SD of {outcome} is known, so no effect size or months' progress is given "
                    f"(the between-school SD, {sd:.3g}, would overstate them); results are in the outcome's units")
    result = {
        "schema_version": RESULT_SCHEMA_VERSION, "kind": "self_evaluation", "name": spec.name, "title": spec.title or spec.name,
        "outcome": {"name": outcome, "description": col.description, "unit": col.unit},
        "joined": g0, "years": [g0 - pre, g0 + post], "phase": phase,
        "schools": [{"urn": int(r.urn), "name": str(r.name), "first_exposed_year": int(r.g),
                     "analysed": bool(r.urn in treated_in)} for r in schools.itertuples()],
        "notes": ([f"{len(late)} school(s) joined in another year and are not in the partnership average"]
                  if len(late) else []) + ([f"{len(lost)} school(s) lacked baseline data for matching"]
                                           if lost else []),
        "comparison": {"family_size": spec.family_size, "schools": len(controls_in),
                       "covariates": list(COVARIATES),
                       "rule": "for each partnership school, the most similar schools of the same phase on the "
                               f"{pre} years before joining (results level and trend) and context, by z-score "
                               "distance (EEF families of schools)"},
        "estimates": partnership,
        "randomisation": {"p_value": ri.p_value, "exact": ri.exact, "n_perm": ri.n_perm,
                          "statistic": ri.statistic, "observed": ri.observed},
        "by_school": by_school,
        "effect_size": {"g": g, "sd": scale, "sd_label": scale_label,
                        "months": None if g is None else months_progress(g), "withheld": withheld,
                        "mdes": mdes, "mdes_months": None if mdes is None else months_progress(mdes),
                        "mdes_units": mdes_units,
                        "mdes_rule": f"{MDES_MULTIPLIER:.2f} x the placebo SE of the synthetic-DiD estimate"},
        "provenance": {"package_version": __version__, "seed": spec.seed,
                       "synthetic": data.truth is not None, "data_fingerprint": data_fingerprint(data),
                       **_reproduce(spec, data, outcome)},
        "window": {"first": g0 - pre, "last": g0 + post, "pre_years": pre, "post_years": post,
                   "requested_pre_years": spec.pre_years, "requested_post_years": spec.post_years,
                   "data_years": [first_year, last_year],
                   "why": _window_words(g0, pre, post, spec, first_year, last_year)},
    }
    SelfEvaluationResult.model_validate(result)  # the contract holds as the result is built
    return result
