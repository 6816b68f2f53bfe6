"""Errors the user can act on.

Every problem with user input is a :class:`Problem` that names the file, row,
column and value and says what was expected. :class:`InputError` carries one or
more problems; the CLI prints them and exits with code 2 (never a traceback).
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_PROBLEMS_SHOWN = 50


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
    """Bad input: one or more problems, all reported together (exit code 2)."""

    problems: list[Problem] = field(default_factory=list)
    total: int | None = None  # number of problems found, if more than listed
    summary: str | None = None

    def __init__(self, problems: list[Problem] | Problem | str, *, total: int | None = None,
                 summary: str | None = None):
        if isinstance(problems, str):
            problems = [Problem(problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems = list(problems)
        self.total = total if total is not None else len(self.problems)
        self.summary = summary
        super().__init__(self.render())

    def render(self, limit: int = MAX_PROBLEMS_SHOWN) -> str:
        lines = []
        if self.summary:
            lines.append(self.summary)
        shown = self.problems[:limit]
        lines.extend(p.render() for p in shown)
        hidden = self.total - len(shown)
        if hidden > 0:
            lines.append(f"... and {hidden} more problem(s) not shown")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"error": "input", "summary": self.summary, "total": self.total,
                "problems": [p.to_dict() for p in self.problems]}
