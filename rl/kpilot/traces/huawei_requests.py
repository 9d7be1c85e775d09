"""Huawei Cloud serverless request tables (sir-lab/data-release): the 2025 release (Joosen et al.,
EuroSys'25 "Serverless Cold Starts and Where to Find Them") and the 2023 public/private releases.

Times in both tables are seconds since the start of day 0 of the dataset (the release README: "the
timestamps have been normalized to start at 0 on day 0, so 2600186.994 means 2600186 seconds and 994
milliseconds after the start of the dataset"); the excerpts agree (day 30 rows have time 2592000 +
second of day, day 234 rows 20217600 + second of day).

huawei-requests: wide count tables, one row per time bin, one column per function (2025
`quantiles/R*/requests`, funcID = funcName---userID---poolName; 2023 `requests_per_minute` /
`requests_per_second`, integer function ids). Columns: an optional unnamed pandas index, `day`,
`time`, then the functions; a cell is that function's request count in the bin, NaN or empty = none.
    time        absolute seconds (above). A table whose every `time` lies in [0, 86400) while `day`
                varies is read as second-of-day instead (t = day * 86400 + time, meta
                time_of_day_column=True); any other disagreement between day and time is an error.
    bin width   the smallest step between consecutive rows: 60 s per-minute, 1 s per-second tables
                (meta bin_s); option bin=SECONDS overrides it (needed for a one-row table).
    arrivals    a bin with n requests gets n arrivals uniform within it, exactly as the Azure
                Functions 2019 reader does (`kpilot.traces.spreading.uniform_in_bins`), from numpy
                default_rng(seed), functions in column order; t = 0 is the first row's time (meta
                origin_s, start_time_of_day_s = origin_s mod 86400).
    service     the tables carry no durations, so service times are modelled: lognormal with mean
                service= (s, default 0.1) and coefficient of variation cv= (default 1.0), drawn from
                the same generator after the arrivals (`kpilot.traces.synthetic.lognormal_service`).
                0.1 s sits between the per-request table's totalCost_worker (~1-40 ms in the R5
                excerpt) and the longer-running functions; set it per workload.
    selection   function=PREFIX[+PREFIX...] over the column names, or top=K by requests in the file;
                default all functions merged (see `kpilot.traces.selection`).
Counts must be non-negative integers; a non-numeric, negative or fractional count is a TraceError at
its file line and column. Rows must have strictly increasing time.

huawei-per-request: the 2025 per-request table (`per_request/R*`, day 30): one row per request with
time_worker, time_frontend, requestID, clusterName, funcName, podID, userID, totalCost_worker,
workerCost, runtimeCost, totalCost_frontend, ... .
    arrival     time_worker, the worker-log timestamp (seconds). time_frontend is the frontend-log
                timestamp, typically within a few ms of it, but it is NaN for requests without a
                frontend record (e.g. the last rows of the R5 excerpt), so it cannot date every request.
    service     totalCost_worker, "total time spent in function worker pod", in seconds per the
                release schema; it equals workerCost + runtimeCost (e.g. 0.000103 + 0.000829 =
                0.000931 in the excerpt's first row) and its magnitudes (1-40 ms) are execution times
                in seconds, not milliseconds.
    Arrivals are rebased to the first (earliest) arrival (meta origin_s, start_time_of_day_s) and
    sorted. No options. Missing (NaN) or non-numeric values and negative service times are errors.

In both, rows of '...' (pandas display elision in notebook excerpts) are skipped and a '...' column is
ignored, as in the cold-start reader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from kpilot.errors import TraceError
from kpilot.traces.csvio import (ELIDED, check_at_most, check_increasing, column_label, read_numeric_rows,
                                 read_rows_skipping_elided, require_columns)
from kpilot.traces.model import EXACT, Trace, check_request_total, count_too_large, make_trace
from kpilot.traces.selection import select_functions, selection_label
from kpilot.traces.spreading import bin_width, uniform_in_bins
from kpilot.traces.synthetic import lognormal_options, lognormal_service

WIDE_SIGNATURE = {"day", "time"}
PER_REQUEST_SIGNATURE = {"time_worker", "totalCost_worker"}
METADATA_SIGNATURE = {"funcID", "triggerType-invocationType"}  # runtime/trigger table: no requests
WIDE_OPTIONS = {"function", "top", "service", "cv", "bin"}
PER_REQUEST_OPTIONS: set[str] = set()
DAY_S = 86400.0
NONE = {"", "nan"}  # cells meaning "no requests in this bin"


def function_columns(header: list[str]) -> list[str]:
    """The function columns of a wide table: all but the index, day, time and '...' columns."""
    return [c for c in header if c not in ("day", "time", ELIDED, "") and not c.startswith("Unnamed:")]


def read_huawei_requests(path: Path, header: list[str], options: dict, *, seed: int, **_) -> Trace:
    """Synthesise a Trace from a wide per-minute or per-second count table (see module doc)."""
    src = str(path)
    require_columns(path, header, ["day", "time"], "huawei-requests")
    funcs = function_columns(header)
    if not funcs:
        raise TraceError("no function columns (columns after day, time)", path=src, line=1)
    mean, cv = lognormal_options(options, src, 0.1)
    if "function" in options:  # select by name before reading, so only those columns are parsed
        keep = select_functions(np.array(funcs), np.zeros(len(funcs)), options, src)
        funcs = [f for f, k in zip(funcs, keep) if k]

    frame, rows = read_rows_skipping_elided(path, ["day", "time", *funcs], "time")
    num = read_numeric_rows(path, header, ["day", "time"], frame, rows)
    t, time_of_day = _absolute_times(path, header, num["day"], num["time"], rows)
    counts = _counts(path, header, frame, funcs, rows)  # (bins, functions)
    if "top" in options:
        keep = select_functions(np.array(funcs), counts.sum(axis=0), options, src)
        funcs, counts = [f for f, k in zip(funcs, keep) if k], counts[:, keep]
    if counts.sum() == 0:
        raise TraceError("the selected functions have no requests", path=src)
    check_request_total(counts.sum(dtype=np.float64), src)       # in float: int64 could wrap
    width = bin_width(str(path), t, options)

    rng = np.random.default_rng(seed)
    per_cell = counts.T.ravel()  # function-major, like the Azure 2019 reader
    arrivals = uniform_in_bins(np.tile(t - t[0], len(funcs)), per_cell, width, rng)
    service = lognormal_service(rng, len(arrivals), mean, cv)
    trace = make_trace(arrivals, service, None, selection=selection_label(options), functions=len(funcs),
                       bin_s=width, bins=len(t), origin_s=float(t[0]),
                       start_time_of_day_s=float(t[0] % DAY_S), time_of_day_column=time_of_day,
                       service_model={"kind": "lognormal", "mean_s": mean, "cv": cv})
    trace.meta["span_s"] = float(max(trace.span_s, t[-1] - t[0] + width))
    return trace


def _absolute_times(path: Path, header: list[str], day: np.ndarray, time: np.ndarray,
                    rows: np.ndarray) -> tuple[np.ndarray, bool]:
    """Seconds since day 0 for each row, and whether `time` was second-of-day (see module doc)."""
    for name, bad in (("day", (day < 0) | (day != np.floor(day))), ("time", time < 0)):
        if bad.any():
            i = int(np.argmax(bad))
            kind = "integer" if name == "day" else "number"
            raise TraceError(f"{name} {(day if name == 'day' else time)[i]:g} is not a non-negative {kind}",
                             path=str(path), line=int(rows[i]) + 2, column=column_label(header, name))
    # day x 86400 below overflows for a day such as 1e308; past 2**53 s, seconds are inexact anyway.
    check_at_most(path, header, "day", day, EXACT // DAY_S,
                  f"at most {EXACT // DAY_S:.0f} (2**53 seconds, beyond which times are inexact)", rows)
    off = np.floor(time / DAY_S) != day
    if not off.any():
        t, of_day = time, False
    elif np.all(time < DAY_S):
        t, of_day = day * DAY_S + time, True
    else:
        i = int(np.argmax(off))
        raise TraceError(f"time {time[i]:g} is not in day {day[i]:g} (expected seconds since day 0, "
                         f"{day[i] * DAY_S:g} <= time < {(day[i] + 1) * DAY_S:g})", path=str(path),
                         line=int(rows[i]) + 2, column=column_label(header, "time"))
    if of_day:      # ordered by day, then time: name both, or "time 60 after 0" reads as in order
        back = np.diff(t) <= 0
        if back.any():
            i = int(np.argmax(back)) + 1
            raise TraceError(f"day {day[i]:g} time {time[i]:g} does not come after the previous row's day "
                             f"{day[i - 1]:g} time {time[i - 1]:g} (rows must be in increasing day and time)",
                             path=str(path), line=int(rows[i]) + 2, column=column_label(header, "time"))
    else:
        check_increasing(path, header, "time", time, rows)
    return t, of_day


def _counts(path: Path, header: list[str], frame: pl.DataFrame, funcs: list[str],
            rows: np.ndarray) -> np.ndarray:
    """int64 (bins, functions) counts; NaN/empty = 0; TraceError at the first bad cell in file order."""
    values, non_numeric = [], []
    for name in funcs:
        col = frame.get_column(name)
        if col.dtype == pl.Float64:
            values.append(col.fill_null(0.0).fill_nan(0.0).to_numpy())
            non_numeric.append(np.zeros(frame.height, dtype=bool))
            continue
        text = col.cast(pl.String).str.strip_chars()
        none = text.is_null() | text.str.to_lowercase().is_in(list(NONE))
        parsed = text.cast(pl.Float64, strict=False)
        non_numeric.append((parsed.is_null() & ~none).to_numpy())
        values.append(parsed.fill_null(0.0).fill_nan(0.0).to_numpy())
    counts = np.column_stack(values)
    bad_text = np.column_stack(non_numeric)
    bad = bad_text | (counts < 0) | ~np.isfinite(counts) | (counts != np.floor(counts)) | (counts > EXACT)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        where = dict(path=str(path), line=int(rows[row]) + 2, column=column_label(header, funcs[col]))
        if bad_text[row, col]:
            raise TraceError(f"non-numeric value {frame.get_column(funcs[col])[int(row)]!r}", **where)
        if EXACT < counts[row, col] < np.inf:     # the int64 cast below would turn it negative
            raise TraceError(count_too_large("request count", counts[row, col]), **where)
        raise TraceError(f"request count {counts[row, col]:g} is not a non-negative integer", **where)
    return counts.astype(np.int64)


def read_huawei_per_request(path: Path, header: list[str], options: dict, **_) -> Trace:
    """Read a Huawei 2025 per-request table into a Trace (see module doc)."""
    columns = ["time_worker", "totalCost_worker"]
    require_columns(path, header, columns, "huawei-per-request")
    frame, rows = read_rows_skipping_elided(path, columns, "time_worker")
    num = read_numeric_rows(path, header, columns, frame, rows)
    arrivals, service = num["time_worker"], num["totalCost_worker"]
    for name, what in (("time_worker", "negative time"), ("totalCost_worker", "negative service time")):
        neg = num[name] < 0
        if neg.any():
            i = int(np.argmax(neg))
            raise TraceError(f"{what} {num[name][i]:g}", path=str(path), line=int(rows[i]) + 2,
                             column=column_label(header, name))
    origin = float(arrivals.min())
    return make_trace(arrivals - origin, service, None, origin_s=origin,
                      start_time_of_day_s=float(origin % DAY_S), arrival_column="time_worker",
                      service_column="totalCost_worker")
