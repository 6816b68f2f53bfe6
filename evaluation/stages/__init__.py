"""The pure stages of a study, in the order the pipeline runs them.

cohort (who joined what, when; the comparison pool) -> match (per-cohort comparison schools,
balance) -> panel (matched school-years, weights, cluster labels) -> estimate (registry,
headline interval, alternative clusterings) -> diagnose (pre-trends, Bacon, HonestDiD,
placebo dates, few-cluster inference) -> power -> effects (SDs, g, months, padlocks) ->
describe (trends; the planted truth on synthetic data). Each takes the study's
``EstimationSpec`` or definition and tables and returns values; none reads or writes files.
"""
