"""CSV plumbing shared by the readers: header sniffing, checksums, and numeric columns read with
polars whose failures become a TraceError pointing at the file line and column.

Line numbers are 1-based file lines counting the header (data row i, 0-based, is line i + 2); this
assumes one record per line, which holds for every supported trace.
"""

from __future__ import annotations

import csv
import hashlib
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl

from kpilot.errors import TraceError

ELIDED = "..."  # a pandas display ellipsis row (present in excerpts cut from notebook output)


def sha256_file(*paths: Path) -> str:
    """sha256 over the bytes of one or more files, in order."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def checksum_in_background(*paths: Path):
    """Start hashing `paths` on a thread (hashlib releases the GIL); returns a future."""
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(sha256_file, *paths)
    pool.shutdown(wait=False)
    return future


NOT_TEXT = {**{magic: f"{name}-compressed: decompress it first" for magic, name in (
    (b"\x1f\x8b", "gzip"), (b"PK\x03\x04", "zip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"))}, b"\xff\xfe": "UTF-16 text: save it as UTF-8",
    b"\xfe\xff": "UTF-16 text: save it as UTF-8"}     # a file's first bytes: why it is not text


def read_header(path: Path) -> list[str]:
    """The column names on the first line; TraceError if the file is missing, empty or not text."""
    if not path.exists():
        raise TraceError("no such file", path=str(path))
    if path.is_dir():
        raise TraceError("is a directory, not a trace file", path=str(path))
    if not path.is_file():      # read more than once (header, columns, checksum): a pipe would not replay
        raise TraceError("not a regular file (a pipe or device): save the trace to a file first", path=str(path))
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        first = fh.readline()
    # Binary or compressed: its bytes, echoed in an error line, put control characters on the terminal.
    if any(c < " " and c not in "\t\r\n" or c == "\x7f" for c in first):
        with open(path, "rb") as fh:
            magic = fh.read(8)
        kind = next((why for m, why in NOT_TEXT.items() if magic.startswith(m)), "compressed or binary?")
        raise TraceError(f"not a text CSV ({kind})", path=str(path))
    if not first.strip():
        raise TraceError("empty file (no header, no data rows)", path=str(path))
    return [name.strip() for name in next(csv.reader([first]))]


def require_columns(path: Path, header: list[str], columns, what: str) -> None:
    """TraceError (line 1) naming the first required column the header lacks."""
    for name in columns:
        if name not in header:
            raise TraceError(f"missing column {name!r} required by the {what} format "
                             f"(header has: {', '.join(header)})", path=str(path), line=1)


def column_label(header: list[str], name: str) -> str:
    """'N (name)' with N the 1-based position of the column in the file."""
    return f"{header.index(name) + 1} ({name})" if name in header else name


def _read(path: Path, columns: list[str], overrides: dict | None = None) -> pl.DataFrame:
    """The named columns, without the empty rows polars makes of blank lines at the file's end.
    Names are matched as `read_header` gives them, without the spaces around them (a header
    `timestamp, duration` has a column `duration`)."""
    # A column the header names twice: polars would read the first, which may not be the one
    # meant (huawei-requests asks for one per function column: polars' error named no file or line).
    header = read_header(path)
    twice = next((name for i, name in enumerate(columns) if name in columns[:i] or header.count(name) > 1), None)
    if twice is not None:
        at = [str(i + 1) for i, name in enumerate(header) if name == twice]
        raise TraceError(f"column {twice!r} appears more than once in the header (columns {', '.join(at)})",
                         path=str(path), line=1)
    in_file: dict[str, str] = {}
    # glob=False: a file name is a name; polars would read `svc[1].csv` as a pattern and find nothing.
    for name in pl.scan_csv(path, infer_schema=False, encoding="utf8-lossy", glob=False).collect_schema().names():
        in_file.setdefault(_bare(name), name)     # the first of two alike, as read_header's index finds
    raw = [in_file.get(name, name) for name in columns]
    overrides = {in_file.get(k, k): v for k, v in overrides.items()} if overrides else None
    frame = pl.scan_csv(path, infer_schema=False, schema_overrides=overrides, encoding="utf8-lossy",
                        glob=False).select(raw).collect().rename(dict(zip(raw, columns)))
    blank = min(trailing_blank_lines(path), frame.height)
    if blank and frame.tail(blank).null_count().sum_horizontal().item() == blank * len(columns):
        frame = frame.head(frame.height - blank)
    return frame


def trailing_blank_lines(path: Path) -> int:
    """How many blank lines end the file (after its last line's own line break)."""
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        fh.seek(max(0, fh.tell() - 4096))
        tail = fh.read()
    tail = tail[:-1] if tail.endswith(b"\n") else tail
    count = 0
    for line in reversed(tail.split(b"\n")[1:]):
        if line.strip():
            break
        count += 1
    return count


def _bare(name: str) -> str:
    return name.lstrip("\ufeff").strip()


def _first_ragged_row(path: Path) -> tuple[int, int, int] | None:
    """(line, fields, header fields) of the first row with more fields than the header: polars
    refuses such a file without saying where."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        rows = csv.reader(fh)
        width = len(next(rows, []))
        for row in rows:
            if len(row) > width:
                return rows.line_num, len(row), width
    return None


def read_frame(path: Path, columns: list[str]) -> pl.DataFrame:
    """The named columns as strings (for ids and text), with a TraceError on unreadable CSV."""
    try:
        frame = _read(path, columns)
    except pl.exceptions.PolarsError as exc:
        ragged = _first_ragged_row(path)
        if ragged is not None:
            line, fields, width = ragged
            raise TraceError(f"{fields} fields where the header has {width}", path=str(path), line=line) from None
        raise TraceError(f"cannot parse CSV: {str(exc).splitlines()[0]}", path=str(path)) from None
    if frame.height == 0:
        raise TraceError("no data rows", path=str(path))
    return frame


def read_numeric(path: Path, header: list[str], columns: list[str],
                 frame: pl.DataFrame | None = None) -> dict[str, np.ndarray]:
    """Float64 numpy arrays of the named columns.

    Fast path: polars parses the columns as Float64 directly. If that fails (or a value is
    missing), the columns are re-read as strings and a vectorised check finds the first bad cell.
    """
    if frame is None:
        try:
            frame = _read(path, columns, {c: pl.Float64 for c in columns})
        except pl.exceptions.PolarsError:
            frame = read_frame(path, columns)
    if frame.height == 0:
        raise TraceError("no data rows", path=str(path))
    out = {}
    for name in columns:
        series = frame.get_column(name)
        if series.dtype != pl.Float64 or series.null_count() or not series.is_finite().all():
            series = _checked_float(path, header, series)
        out[name] = series.to_numpy()
    return out


def _checked_float(path: Path, header: list[str], raw: pl.Series) -> pl.Series:
    """Cast a string column to Float64, or raise at the first missing (empty or NaN, as pandas
    writes a missing cell), non-numeric or infinite cell: a time or duration that is not a finite
    number would hang or poison a replay."""
    text = raw.cast(pl.String).str.strip_chars()
    values = text.cast(pl.Float64, strict=False)
    bad = values.is_null() | ~values.is_finite()
    if bad.any():
        row = int(bad.arg_max())
        cell, value = text[row], values[row]
        if cell is None or cell == "" or (value is not None and math.isnan(value)):
            problem = "missing value"
        elif value is None:
            problem = f"non-numeric value {cell!r}"
        else:
            problem = f"non-finite value {cell!r}"
        raise TraceError(problem, path=str(path), line=row + 2,
                         column=column_label(header, raw.name))
    return values


def check_non_negative(path: Path, header: list[str], name: str, values: np.ndarray,
                       what: str = "negative value") -> None:
    """TraceError at the first negative entry of `values` (column `name`)."""
    neg = values < 0
    if neg.any():
        row = int(np.argmax(neg))
        raise TraceError(f"{what} {values[row]:g}", path=str(path), line=row + 2,
                         column=column_label(header, name))


def check_at_most(path: Path, header: list[str], name: str, values: np.ndarray, limit: float,
                  why: str, rows: np.ndarray | None = None) -> None:
    """TraceError at the first entry of `values` (column `name`) above `limit` (`why` says so);
    `rows` maps to original data-row numbers where rows were dropped."""
    over = values > limit
    if over.any():
        i = int(np.argmax(over))
        raise TraceError(f"{name} {values[i]:g}: {why}", path=str(path),
                         line=(i if rows is None else int(rows[i])) + 2, column=column_label(header, name))


def check_increasing(path: Path, header: list[str], name: str, shown: np.ndarray, rows: np.ndarray | None = None,
                     order: np.ndarray | None = None) -> None:
    """TraceError at the first row whose `order` (default: the `shown` values of column `name`) does
    not exceed the previous row's; `rows` maps to original data-row numbers where rows were dropped."""
    order = shown if order is None else order
    back = order[1:] <= order[:-1]      # not np.diff: 1e308 after -1e308 overflows (a numpy warning)
    if back.any():
        i = int(np.argmax(back)) + 1
        raise TraceError(f"{name} {shown[i]:g} does not come after the previous row's {shown[i - 1]:g} "
                         f"(rows must be in increasing {name})", path=str(path),
                         line=(i if rows is None else int(rows[i])) + 2, column=column_label(header, name))


def drop_elided(frame: pl.DataFrame, column: str) -> tuple[pl.DataFrame, np.ndarray]:
    """Drop pandas '...' display rows; returns the frame and the original row numbers kept."""
    keep = (frame.get_column(column) != ELIDED).fill_null(True).to_numpy()
    return frame.filter(pl.Series(keep)), np.flatnonzero(keep)


def read_rows_skipping_elided(path: Path, columns: list[str], marker: str) -> tuple[pl.DataFrame, np.ndarray]:
    """The named columns and the original 0-based data-row numbers kept.

    Fast path: all columns parse as Float64 (no '...' rows). Otherwise they are read as strings and
    pandas '...' display rows (judged by column `marker`) are dropped; the caller converts.
    """
    try:
        frame = _read(path, columns, {c: pl.Float64 for c in columns})
    except pl.exceptions.PolarsError:
        return drop_elided(read_frame(path, columns), marker)
    if frame.height == 0:
        raise TraceError("no data rows", path=str(path))
    return frame, np.arange(frame.height)


def read_numeric_rows(path: Path, header: list[str], columns: list[str], frame: pl.DataFrame,
                      rows: np.ndarray) -> dict[str, np.ndarray]:
    """`read_numeric` over a frame from `read_rows_skipping_elided`: errors point at the original
    file line; NaN cells (pandas' missing marker) are reported as missing values."""
    if frame.height == 0:
        raise TraceError("no data rows", path=str(path))
    nan_as_empty = [pl.when(pl.col(c).str.strip_chars().str.to_lowercase() == "nan").then(pl.lit(""))
                    .otherwise(pl.col(c)).alias(c) for c in columns if frame.schema[c] == pl.String]
    frame = frame.with_columns(nan_as_empty) if nan_as_empty else frame
    try:
        cols = read_numeric(path, header, columns, frame)
    except TraceError as exc:
        raise TraceError(exc.message, path=exc.path, line=int(rows[exc.line - 2]) + 2,
                         column=exc.column) from None
    for name in columns:
        nan = np.isnan(cols[name])
        if nan.any():
            raise TraceError("missing value", path=str(path), line=int(rows[np.argmax(nan)]) + 2,
                             column=column_label(header, name))
    return cols
