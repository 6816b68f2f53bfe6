"""The one way the project reads a CSV file: detect its encoding and separator, then parse it.

Spreadsheets and management-information systems save "CSV" in many shapes: UTF-8 with or
without a byte-order mark, Windows-1252 (Excel's "CSV" on a UK Windows PC), UTF-16 with a
BOM (Excel's "Unicode text"), separated by commas, semicolons (European locales) or tabs.
:func:`sniff` finds which, from the bytes alone:

* encoding: a byte-order mark (UTF-8, UTF-16 LE/BE, UTF-32 LE/BE) decides; without one, a
  file full of NUL bytes is UTF-16 without a BOM (LE or BE by where the NULs sit); otherwise
  UTF-8 if the file decodes as UTF-8, else Windows-1252 (checked on the whole file when read);
* separator: the first of comma, semicolon and tab by count on the header line (outside
  quotes); a file with one column has none and is read as comma-separated.

A semicolon-separated file is what Excel saves in locales that write numbers with a decimal
comma ("47,5"). In such a file (never a comma-separated one) :func:`decimal_commas` reads a
numeric column's "47,5" as 47.5 when the column is unambiguous: every value with a comma is
digits, one comma, digits (an optional '%' after), and no value uses a decimal point. A value
such as "1,234,567" (thousands separators?) or a column mixing "47.5" and "47,5" is an error
naming the file, row, column and value, never a silent guess. What was converted is counted
(:meth:`Dialect.note`, recorded in the import's provenance, or a printed note).

:func:`read_csv` parses the file with what was found and returns the frame together with a
:class:`Dialect` (so callers can record it in provenance). Every failure is an
:class:`~evaluation.errors.InputError` naming the file and what was found.
"""

from __future__ import annotations

import codecs
import gzip
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from evaluation.errors import InputError, problem

#: separators we look for, in order of preference when counts tie
DELIMITERS = (",", ";", "\t")
DELIMITER_NAMES = {",": "comma (',')", ";": "semicolon (';')", "\t": "tab"}
_SAMPLE_BYTES = 1 << 16

_BOMS = (  # longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "utf-32", "UTF-32 (little-endian, with BOM)"),
    (codecs.BOM_UTF32_BE, "utf-32", "UTF-32 (big-endian, with BOM)"),
    (codecs.BOM_UTF8, "utf-8-sig", "UTF-8 (with BOM)"),
    (codecs.BOM_UTF16_LE, "utf-16", "UTF-16 (little-endian, with BOM)"),
    (codecs.BOM_UTF16_BE, "utf-16", "UTF-16 (big-endian, with BOM)"),
)
ENCODING_NAMES = {"utf-8-sig": "UTF-8", "cp1252": "Windows-1252", "utf-16-le": "UTF-16 (little-endian, no BOM)",
                  "utf-16-be": "UTF-16 (big-endian, no BOM)"}


#: a number written with a decimal comma ("47,5", "-0,25", "45,5%"), and one with a decimal point
DECIMAL_COMMA = re.compile(r"^[-+]?\d+,\d+%?$")
DECIMAL_POINT = re.compile(r"^[-+]?\d*\.\d+%?$")
#: digits with commas or points in any arrangement: a number, but which one?
NUMBER_LIKE = re.compile(r"^[-+]?[\d.,]*\d[\d.,]*%?$")
COMMA_EXPECTED = "a number with at most one decimal comma and no thousands separators (such as 47,5)"


@dataclass(frozen=True)
class Dialect:
    """What a text file turned out to be."""

    encoding: str  # the Python codec used to decode it
    encoding_name: str  # as a person would say it: "UTF-16 (little-endian, with BOM)"
    delimiter: str
    #: (column, number of values) whose decimal commas were read as decimal points
    decimal_commas: tuple[tuple[str, int], ...] = ()

    @property
    def delimiter_name(self) -> str:
        return DELIMITER_NAMES.get(self.delimiter, repr(self.delimiter))

    @property
    def is_plain(self) -> bool:
        """UTF-8 (with or without BOM) and comma-separated: nothing worth noting."""
        return self.encoding == "utf-8-sig" and self.delimiter == ","

    def describe(self) -> str:
        return f"{self.encoding_name} text, {self.delimiter_name} as the separator"

    def note(self) -> str:
        return f"read as {self.describe()}" + (f"; {self.decimal_note()}" if self.decimal_commas else "")

    def decimal_note(self) -> str:
        """'decimal commas read as decimal points (47,5 as 47.5): 12 values in column 'fsm_pct''."""
        where = ", ".join(f"{n:,} value{'s' if n != 1 else ''} in column {col!r}" for col, n in self.decimal_commas)
        return f"decimal commas read as decimal points (47,5 as 47.5): {where}" if where else ""

    def with_decimal_commas(self, converted: dict[str, int]) -> "Dialect":
        done = tuple((str(c), int(n)) for c, n in converted.items() if n)
        return replace(self, decimal_commas=self.decimal_commas + done) if done else self


def decimal_commas(text: pd.Series) -> tuple[pd.Series, int, pd.Series, pd.Series]:
    """One numeric column of a semicolon-separated file, as text: "47,5" -> "47.5".

    Returns the text with decimal commas made decimal points, how many values were converted,
    a mask of the values that cannot be read safely and, for each of those, what was expected:
    digits with commas that are not one decimal comma ("1,234,567", "1.234,5"), and, in a column
    with values of both forms ("47,5" and "47.5"), the values of the rarer form. Values without
    a comma (integers, markers such as SUPP, words) are left as they are. The caller reports the
    unsafe values, so nothing is converted silently in a column that has any."""
    stripped = text.astype(str).str.strip()
    comma = stripped.str.contains(",", regex=False)
    expected = pd.Series("", index=text.index, dtype=object)
    if not comma.any():
        return text, 0, pd.Series(False, index=text.index), expected
    is_comma = stripped.str.match(DECIMAL_COMMA)
    is_point = stripped.str.match(DECIMAL_POINT)
    bad = comma & ~is_comma & stripped.str.match(NUMBER_LIKE)
    expected[bad] = f"expected {COMMA_EXPECTED}: commas or points between thousands cannot be read safely"
    if is_comma.any() and is_point.any():
        rare, common = (is_point, is_comma) if is_point.sum() <= is_comma.sum() else (is_comma, is_point)
        form = "a decimal comma" if common is is_comma else "a decimal point"
        expected[rare] = (f"expected {form} like the rest of this column (such as {stripped[common].iloc[0]!r}): "
                          "the column mixes decimal commas and decimal points, so neither can be read safely")
        bad |= rare
    convert = is_comma & ~bad
    out = stripped.where(~convert, stripped.str.replace(",", ".", regex=False))
    return out, int(convert.sum()), bad, expected


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def _sniff_encoding(head: bytes) -> tuple[str, str]:
    for bom, codec, name in _BOMS:
        if head.startswith(bom):
            return codec, name
    if head and head.count(b"\x00") >= len(head) // 4:
        # UTF-16 without a BOM: ASCII text has a NUL in every other byte
        even, odd = head[0::2].count(b"\x00"), head[1::2].count(b"\x00")
        codec = "utf-16-be" if even > odd else "utf-16-le"
        return codec, ENCODING_NAMES[codec]
    try:
        head.decode("utf-8")
        return "utf-8-sig", "UTF-8"
    except UnicodeDecodeError as err:
        if err.start >= len(head) - 3:  # a multi-byte character cut at the end of the sample
            return "utf-8-sig", "UTF-8"
        return "cp1252", "Windows-1252"


def _header_line(text: str) -> str:
    """The first record's text (quoted newlines kept inside it)."""
    quoted = False
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif ch in "\r\n" and not quoted:
            return text[:i]
    return text


def count_delimiters(line: str) -> dict[str, int]:
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    return counts


def sniff(path: str | Path, default_delimiter: str = ",") -> Dialect:
    """Detect the encoding and separator of a text file from its first 64 KB."""
    path = Path(path)
    try:
        with _open_bytes(path) as fh:
            head = fh.read(_SAMPLE_BYTES)
    except (OSError, EOFError) as err:
        raise InputError(problem(f"cannot read the file ({err})", file=path.name)) from None
    codec, name = _sniff_encoding(head)
    text = head.decode(codec, errors="replace").lstrip("\ufeff")
    counts = count_delimiters(_header_line(text))
    best = max(DELIMITERS, key=lambda d: (counts[d], d == default_delimiter))
    delimiter = best if counts[best] else default_delimiter
    return Dialect(codec, name, delimiter)


def _empty_message(dialect: Dialect) -> str:
    return "cannot read the file: it is empty (expected a header row and data)"


def read_csv(path: str | Path, *, label: str | None = None, as_text: bool = False,
             default_delimiter: str = ",") -> tuple[pd.DataFrame, Dialect]:
    """Read a CSV (or TSV, or gzipped CSV) file whatever its encoding and separator.

    ``as_text`` keeps every cell as the text in the file (for schema validation);
    otherwise pandas infers column types. Raises InputError naming the file, and the
    encoding and separator found, when the file cannot be parsed."""
    path = Path(path)
    label = label or path.name
    dialect = sniff(path, default_delimiter)
    options = dict(sep=dialect.delimiter, encoding=dialect.encoding)
    if as_text:
        options.update(dtype=str, keep_default_na=False, na_filter=False)
    try:
        try:
            frame = pd.read_csv(path, **options)
        except UnicodeDecodeError:
            if dialect.encoding != "utf-8-sig":
                raise
            # not UTF-8 after all (the sample was): DfE and Excel files are often Windows-1252
            dialect = Dialect("cp1252", "Windows-1252", dialect.delimiter)
            frame = pd.read_csv(path, **{**options, "encoding": "cp1252"})
    except pd.errors.EmptyDataError:
        raise InputError(problem(_empty_message(dialect), file=label)) from None
    except UnicodeDecodeError:
        tried = "UTF-8 or Windows-1252" if dialect.encoding == "cp1252" else dialect.encoding_name
        raise InputError(problem(f"cannot decode the file as {tried} text: save it as UTF-8 CSV", file=label)) \
            from None
    except pd.errors.ParserError as err:
        raise InputError(problem(f"cannot parse as CSV ({dialect.describe()}): {err}", file=label)) from None
    except (OSError, EOFError, ValueError) as err:
        raise InputError(problem(f"cannot read the file as CSV ({dialect.describe()}): {err}", file=label)) \
            from None
    frame.columns = [str(c).replace("\ufeff", "").strip() if isinstance(c, str) else c for c in frame.columns]
    if len(frame.columns) == 1 and len(frame) == 0 and not str(frame.columns[0]):
        raise InputError(problem(_empty_message(dialect), file=label))
    return frame, dialect


def decode_text(path: str | Path, dialect: Dialect | None = None) -> tuple[str, Dialect]:
    """The whole file as text, decoded as :func:`sniff` finds (BOM removed), for readers
    that split records themselves (e.g. ``csv.reader(io.StringIO(text), delimiter=...)``)."""
    path = Path(path)
    dialect = dialect or sniff(path)
    with _open_bytes(path) as fh:
        data = fh.read()
    try:
        text = data.decode(dialect.encoding)
    except UnicodeDecodeError:
        if dialect.encoding != "utf-8-sig":
            raise InputError(problem(f"cannot decode the file as {dialect.encoding_name} text",
                                     file=path.name)) from None
        dialect = Dialect("cp1252", "Windows-1252", dialect.delimiter)
        text = data.decode("cp1252", errors="replace")
    return text.lstrip("\ufeff"), dialect


def read_table_file(path: str | Path, *, what: str = "CSV or Parquet file") -> tuple[pd.DataFrame, int, Dialect | None]:
    """A data file for an analysis command (``impact estimate``, ``match``, ``regress``).

    Returns the frame (types inferred), the row number a person sees for its first record
    (CSV: 2, the header being line 1; Parquet: 1) and the CSV dialect (None for Parquet).
    Missing, unreadable, empty and header-only files are InputErrors naming the file."""
    p = Path(path)
    label = str(path)
    if not p.exists():
        raise InputError(problem(f"file not found (no such file): expected an existing {what}", file=label))
    if p.is_dir():
        raise InputError(problem(f"expected a {what}, found a directory", file=label))
    suffix = p.suffix.lower()
    if suffix in (".parquet", ".pq", ".parq"):
        try:
            frame = pd.read_parquet(p)
        except Exception as err:  # pyarrow raises many types for corrupt files
            raise InputError(problem(f"cannot read as Parquet ({err})", file=label)) from None
        first, dialect = 1, None
    elif suffix in (".csv", ".txt", ".tsv", ".gz"):
        frame, dialect = read_csv(p, label=label, default_delimiter="\t" if suffix == ".tsv" else ",")
        first = 2
    else:
        raise InputError(problem(f"unsupported file type {suffix or '(none)'}: expected .csv or .parquet",
                                 file=label, value=suffix or "(none)"))
    if len(frame) == 0:
        raise InputError(problem("the file has a header but no data rows", file=label))
    if dialect is not None and dialect.delimiter == ";":
        frame, dialect = _numbers_with_decimal_commas(frame, dialect, label, first)
    return frame, first, dialect


def _numbers_with_decimal_commas(frame: pd.DataFrame, dialect: Dialect, label: str,
                                 first: int) -> tuple[pd.DataFrame, Dialect]:
    """Columns of a semicolon-separated file that pandas left as text because their numbers have
    decimal commas become numbers (see :func:`decimal_commas`); an ambiguous one is an InputError."""
    problems, converted = [], {}
    for col in frame.columns:
        values = frame[col]
        if not (pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values)):
            continue
        present = values.dropna().astype(str).str.strip()
        present = present[present != ""]
        if present.empty or not present.str.match(NUMBER_LIKE).all() or not present.str.contains(",").any() \
                or present.str.endswith("%").any():
            continue
        text, n, bad, expected = decimal_commas(present)
        if bad.any():
            problems += [problem(expected[i], file=label, row=first + frame.index.get_loc(i), column=str(col),
                                 value=present[i]) for i in bad[bad].index]
            continue
        frame[col] = pd.to_numeric(text).reindex(frame.index)
        converted[col] = n
    if problems:
        raise InputError(problems, summary=f"{label}: numbers with decimal commas that cannot be read safely "
                                 f"({dialect.describe()}); nothing was read")
    return frame, dialect.with_decimal_commas(converted)


def note_decimal_commas(path, dialect: Dialect | None) -> None:
    """Say on stderr which numbers of a semicolon-separated file were read with a decimal comma."""
    if dialect is not None and dialect.decimal_commas:
        print(f"note: {path}: {dialect.decimal_note()}", file=sys.stderr)


def one_column_hint(columns, dialect: Dialect | None) -> str:
    """When a file came out as one column whose name holds another separator, say so."""
    if dialect is None or len(columns) != 1:
        return ""
    name = str(columns[0])
    others = [d for d in DELIMITERS if d != dialect.delimiter and d in name]
    if others:
        return (f"; the file was read as {dialect.describe()} and has a single column {name!r}: "
                f"is it separated by {DELIMITER_NAMES[others[0]]}?")
    return ""
