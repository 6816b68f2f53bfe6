"""Errors the user can act on.

Every problem with user input is a :class:`Problem` that names the file, row,
column and value and says what was expected. :class:`InputError` carries one or
more problems; the CLI prints them and exits with code 2 (never a traceback).
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_PROBLEMS_SHOWN = 50
#: Problems of one kind (same file, column and expectation) listed one line each up
#: to this many; more are rendered as one line with their count and first rows.
GROUP_FROM = 4
EXAMPLE_ROWS = 5


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input.

    ``row`` is the row number a person sees when opening the file: for CSV the
    line number (the header is line 1, so the first data row is 2); for Parquet
    the 1-based record number.
    """

    expected: str
    file: str | None = None
    row: int | None = None
    column: str | None = None
    value: object = None
    has_value: bool = False

    def render(self) -> str:
        parts = []
        if self.file:
            parts.append(str(self.file))
        if self.row is not None:
            parts.append(f"row {self.row}")
        if self.column is not None:
            parts.append(f"column {self.column!r}")
        if self.has_value:
            parts.append(f"value {_show(self.value)}")
        where = ", ".join(parts)
        return f"{where}: {self.expected}" if where else self.expected

    def to_dict(self) -> dict:
        out = {"file": self.file, "row": self.row, "column": self.column, "expected": self.expected}
        if self.has_value:
            out["value"] = None if self.value is None else str(self.value)
        return out


def problem(expected: str, *, file=None, row=None, column=None, **kw) -> Problem:
    """Build a Problem; pass ``value=`` to record the offending value (even None)."""
    if "value" in kw:
        return Problem(expected, file, row, column, kw.pop("value"), True)
    return Problem(expected, file, row, column)


def plain(value: object) -> object:
    """A value fit for a message: a NumPy scalar as its Python value (``1``, not
    ``np.int64(1)``), a Timestamp as its ISO text; anything else unchanged."""
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return value.item()
    if type(value).__name__ == "Timestamp" and hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def with_file(err: "InputError", file: str | None, row_base: int = 1) -> "InputError":
    """The same InputError with ``file`` filled in on problems that name no file.

    Such problems come from code that saw a DataFrame, not the file: their ``row`` is the
    1-based record number, turned here into the row a person sees (``row_base`` is the
    row of the first record: 2 for CSV, whose header is line 1; 1 for Parquet)."""
    from dataclasses import replace

    if not file:
        return err

    def located(p: Problem) -> Problem:
        if p.file:
            return p
        row = None if p.row is None else p.row - 1 + row_base
        return replace(p, file=str(file), row=row)

    counts = None if err.counts is None else \
        _merge_counts(((k[0] or str(file), *k[1:]), n) for k, n in err.counts.items())
    return InputError([located(p) for p in err.problems], total=err.total, summary=err.summary, counts=counts)


def kind(p: Problem) -> tuple:
    """What makes problems 'of one kind' in a listing: the same file, column and expectation."""
    return (p.file, p.column, p.expected)


def _merge_counts(pairs) -> dict[tuple, int]:
    out: dict[tuple, int] = {}
    for key, n in pairs:
        out[key] = out.get(key, 0) + n
    return out


def _show(value: object) -> str:
    if value is None:
        return "(empty)"
    text = str(value)
    if text == "":
        return "(empty)"
    if len(text) > 60:
        text = text[:57] + "..."
    return repr(text)


@dataclass
class InputError(Exception):
    """Bad input: one or more problems, all reported together (exit code 2).

    ``problems`` may be the first ones of many (``total``); ``counts`` then gives the number of
    problems of each kind (``kind``) over all of them, so a grouped line says how many rows of the
    file have that problem, not how many were listed."""

    problems: list[Problem] = field(default_factory=list)
    total: int | None = None  # number of problems found, if more than listed
    summary: str | None = None
    counts: dict[tuple, int] | None = None  # problems of each kind, all of them (when more than listed)

    def __init__(self, problems: list[Problem] | Problem | str, *, total: int | None = None,
                 summary: str | None = None, counts: dict[tuple, int] | None = None):
        if isinstance(problems, str):
            problems = [Problem(problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems = list(problems)
        self.total = total if total is not None else len(self.problems)
        self.summary = summary
        self.counts = dict(counts) if counts else None
        super().__init__(self.render())

    def render(self, limit: int = MAX_PROBLEMS_SHOWN) -> str:
        lines = []
        if self.summary:
            lines.append(self.summary)
        shown, covered = _grouped(self.problems, self.counts, limit)
        lines.extend(shown)
        hidden = self.total - covered
        if hidden > 0:
            lines.append(f"... and {hidden} more problem(s) not shown")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"error": "input", "summary": self.summary, "total": self.total,
                "problems": [p.to_dict() for p in self.problems]}


def render_grouped(problems: list[Problem], counts: dict[tuple, int] | None = None) -> list[str]:
    """One line per problem, except that problems of one kind (same file, column and
    expectation) seen ``GROUP_FROM`` times or more become one line: the kind, its
    count (from ``counts`` when given: all problems of the kind, listed or not) and its
    first rows and values, at the place of its first problem."""
    return _grouped(problems, counts, None)[0]


def _grouped(problems: list[Problem], counts: dict[tuple, int] | None, limit: int | None) -> tuple[list[str], int]:
    """The lines (at most ``limit``) and how many problems they account for."""
    groups: dict[tuple, list[Problem]] = {}
    for p in problems:
        groups.setdefault(kind(p), []).append(p)
    counts = counts or {}
    lines, done, covered = [], set(), 0
    for p in problems:
        if limit is not None and len(lines) >= limit:
            break
        key = kind(p)
        members = groups[key]
        n = max(counts.get(key, 0), len(members))
        if n < GROUP_FROM:
            lines.append(p.render())
            covered += 1
        elif key not in done:
            done.add(key)
            lines.append(_group_line(members, n))
            covered += n
    return lines, covered


def _group_line(members: list[Problem], n: int | None = None) -> str:
    """The kind, its count ``n`` (all problems of the kind; the listed ``members`` when not
    given) and the rows and values of its first listed problems."""
    first = members[0]
    n = len(members) if n is None else n
    where = ", ".join(x for x in (str(first.file) if first.file else "",
                                   f"column {first.column!r}" if first.column is not None else "") if x)
    rows = [str(m.row) for m in members if m.row is not None]
    detail = []
    if rows:
        more = len(rows) > EXAMPLE_ROWS or n > len(members)
        detail.append("rows " + ", ".join(rows[:EXAMPLE_ROWS]) + (", ..." if more else ""))
    values = list(dict.fromkeys(_show(m.value) for m in members if m.has_value))
    if values:
        detail.append(("value " if len(values) == 1 else "values ") + ", ".join(values[:3])
                      + (", ..." if len(values) > 3 else ""))
    text = f"{first.expected}: {n} rows" + (f" ({'; '.join(detail)})" if detail else "")
    return f"{where}: {text}" if where else text
