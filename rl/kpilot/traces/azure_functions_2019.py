"""Azure Functions trace 2019 (Shahrad et al., ATC'20; AzurePublicDataset), per-minute counts.

Invocations file: HashOwner, HashApp, HashFunction, Trigger, then one column per minute of the day
holding that function's invocation count. The minute labels need not start at 1 (the In-Vitro
samples keep the original labels 480..959 = 08:00-15:59); t = 0 is the start of the first minute
column and meta start_time_of_day_s = first label * 60.
Durations file (function_durations_percentiles schema): HashFunction, Count, percentile_Average_0,
_1, _25, _50, _75, _99, _100 in milliseconds. Found as option durations=PATH, else `durations.csv`
beside the invocations file, else the raw name function_durations_percentiles.anon.dNN.csv
matching invocations_per_function_md.anon.dNN.csv.

Arrival synthesis: a minute with n invocations gets n arrivals drawn uniformly within that minute
(the order statistics of a Poisson process conditioned on its count), from numpy default_rng(seed)
(`kpilot.traces.spreading.uniform_in_bins`, shared with the Huawei request tables).
Service times: u ~ Uniform[0, 100) per invocation, mapped through the function's piecewise-linear
inverse CDF between the percentiles (0, 1, 25, 50, 75, 99, 100), ms -> s. A function absent from
the durations file uses the Count-weighted mean percentile row of all functions (meta
functions_without_durations). Selection: function=PREFIX[+...] or top=K (by invocations in the
file); default is the aggregate of all functions. The same seed and selection give the same trace.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from kpilot.errors import TraceError
from kpilot.traces.csvio import (check_at_most, check_non_negative, column_label, read_frame, read_header,
                                 read_numeric, require_columns, sha256_file)
from kpilot.traces.model import EXACT, MAX_SERVICE_S, Trace, check_request_total, count_too_large, make_trace
from kpilot.traces.selection import select_functions, selection_label
from kpilot.traces.spreading import uniform_in_bins

SIGNATURE = {"HashFunction", "Trigger"}
DURATIONS_SIGNATURE = {"HashFunction", "percentile_Average_50"}
PERCENTILES = np.array([0, 1, 25, 50, 75, 99, 100], dtype=np.float64)
PERCENTILE_COLUMNS = [f"percentile_Average_{p}" for p in (0, 1, 25, 50, 75, 99, 100)]
OPTIONS = {"function", "top", "durations"}


def durations_path(path: Path, options: dict) -> Path:
    """The durations-percentiles file for an invocations file (see module doc)."""
    if "durations" in options:
        return Path(options["durations"])
    beside = path.with_name("durations.csv")
    raw = re.fullmatch(r"invocations_per_function_md\.anon\.(d\d+)\.csv", path.name)
    if raw and not beside.exists():
        return path.with_name(f"function_durations_percentiles.anon.{raw.group(1)}.csv")
    return beside


def read_azure_functions_2019(path: Path, header: list[str], options: dict, *, seed: int, **_) -> Trace:
    """Synthesise a Trace from per-minute counts and duration percentiles (see module doc)."""
    require_columns(path, header, ["HashFunction"], "azure-functions-2019")
    minutes = [c for c in header if c.isdigit()]
    if not minutes:
        raise TraceError("no minute columns (numbered columns after HashOwner..Trigger)",
                         path=str(path), line=1)
    labels = np.array([int(c) for c in minutes])
    back = np.flatnonzero(np.diff(labels) <= 0)
    if len(back):
        raise TraceError(f"minute column {minutes[back[0] + 1]} comes after minute {minutes[back[0]]} "
                         "(minute columns must be in increasing order)", path=str(path), line=1)
    ids = read_frame(path, ["HashFunction"]).get_column("HashFunction").fill_null("").to_numpy().astype(str)
    counts = np.column_stack(list(read_numeric(path, header, minutes).values()))
    _check_counts(path, header, minutes, counts)
    counts = counts.astype(np.int64)
    every_id = ids
    keep = select_functions(ids, counts.sum(axis=1), options, str(path))
    ids, counts = ids[keep], counts[keep]
    if counts.sum() == 0:
        raise TraceError("the selected functions have no invocations", path=str(path))
    check_request_total(counts.sum(dtype=np.float64), str(path))      # in float: int64 could wrap

    dpath = durations_path(path, options)
    if not dpath.is_file():        # name the fix, not only the file that is not there
        raise TraceError(f"no durations file {dpath}: Azure Functions 2019 invocations need the duration "
                         "percentiles beside them (durations.csv) or named with ?durations=PATH",
                         path=str(path))
    table, missing, shared = _percentile_table(dpath, ids, every_id)
    if not shared:      # every service time would come from the pooled row: another excerpt's file
        raise TraceError(f"none of the {len(every_id)} functions is in the durations file {dpath} (by "
                         "HashFunction): is it this excerpt's?", path=str(path))
    rng = np.random.default_rng(seed)
    per_cell = counts.ravel()
    minute_start = np.tile((labels - labels[0]) * 60.0, len(ids))
    arrivals = uniform_in_bins(minute_start, per_cell, 60.0, rng)
    func_of = np.repeat(np.repeat(np.arange(len(ids)), len(labels)), per_cell)
    service = _sample_percentiles(table, func_of, rng) / 1000.0
    trace = make_trace(arrivals, service, None, selection=selection_label(options), functions=len(ids),
                       durations_file=str(dpath), functions_without_durations=missing,
                       start_time_of_day_s=float(labels[0] * 60), minutes=len(labels))
    trace.meta["checksum"] = sha256_file(path, dpath)
    trace.meta["span_s"] = float(max(trace.span_s, (labels[-1] - labels[0] + 1) * 60))
    return trace


def _check_counts(path: Path, header: list[str], minutes: list[str], counts: np.ndarray) -> None:
    bad = (counts < 0) | (counts != np.floor(counts)) | (counts > EXACT)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        where = dict(path=str(path), line=int(row) + 2, column=column_label(header, minutes[col]))
        if counts[row, col] > EXACT:        # the int64 cast after this check would turn it negative
            raise TraceError(count_too_large("invocation count", counts[row, col]), **where)
        raise TraceError(f"invocation count {counts[row, col]:g} is not a non-negative integer", **where)


def _percentile_table(dpath: Path, ids: np.ndarray, every_id: np.ndarray) -> tuple[np.ndarray, int, bool]:
    """Per selected function, its 7 duration percentiles (ms); how many had to be pooled; and
    whether the file has any of `every_id` (the whole invocations file's functions) at all."""
    dheader = read_header(dpath)
    require_columns(dpath, dheader, ["HashFunction", "Count", *PERCENTILE_COLUMNS], "azure-functions-2019 durations")
    num = read_numeric(dpath, dheader, ["Count", *PERCENTILE_COLUMNS])
    for name in PERCENTILE_COLUMNS:
        check_non_negative(dpath, dheader, name, num[name], "negative duration")
        # Bounded (ms), the pooled mean below cannot overflow, nor its samples exceed float32.
        check_at_most(dpath, dheader, name, num[name], MAX_SERVICE_S * 1000.0,
                      f"at most {MAX_SERVICE_S * 1000.0:g} ms (a week) of work for one request")
    pct = np.column_stack([num[c] for c in PERCENTILE_COLUMNS])
    pct = np.maximum.accumulate(pct, axis=1)  # percentiles must not decrease
    weights = np.maximum(num["Count"], 0)
    # Scaled by a power of two to below 1: the same mean to the bit, where Counts such as 1e308 overflowed.
    weights = np.ldexp(weights, -np.frexp(weights.max())[1])
    pooled = (pct * weights[:, None]).sum(axis=0) / (weights.sum() or 1.0)
    dids = read_frame(dpath, ["HashFunction"]).get_column("HashFunction").to_numpy().astype(str)
    first = {}
    for i, fid in enumerate(dids):
        first.setdefault(fid, i)
    rows = np.array([first.get(fid, -1) for fid in ids])
    table = np.where((rows >= 0)[:, None], pct[np.maximum(rows, 0)], pooled)
    return table, int((rows < 0).sum()), bool(set(first) & set(every_id.tolist()))


def _sample_percentiles(table: np.ndarray, func_of: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Inverse-CDF samples: piecewise linear between the table's percentiles, one per arrival."""
    u = rng.random(len(func_of)) * 100.0
    seg = np.clip(np.searchsorted(PERCENTILES, u, side="right") - 1, 0, len(PERCENTILES) - 2)
    frac = (u - PERCENTILES[seg]) / (PERCENTILES[seg + 1] - PERCENTILES[seg])
    lo, hi = table[func_of, seg], table[func_of, seg + 1]
    return lo + frac * (hi - lo)
