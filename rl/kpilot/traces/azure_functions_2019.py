"""Azure Functions trace 2019 (Shahrad et al., ATC'20; AzurePublicDataset), per-minute counts.

Invocations file: HashOwner, HashApp, HashFunction, Trigger, then one column per minute of the day
holding that function's invocation count. The dataset numbers minutes 1..1440, minute m being
(m - 1) * 60 .. m * 60 s after midnight; a label below 1 is refused. Labels need not start at 1 (the
In-Vitro samples keep the original labels 480..959, i.e. 07:59-15:59); t = 0 is the start of the
first minute column and meta start_time_of_day_s = (first label - 1) * 60, so the policy sees the
hour the traffic really had.
Durations file (function_durations_percentiles schema): HashFunction, Count, Average and
percentile_Average_0, _1, _25, _50, _75, _99, _100, in milliseconds. Found as option
durations=PATH, else `durations.csv` beside the invocations file, else the raw name
function_durations_percentiles.anon.dNN.csv matching invocations_per_function_md.anon.dNN.csv.

Arrival synthesis: the dataset counts an invocation after it executes, so a minute holds the
invocations that ended in it. Each gets a completion instant uniform within its minute (the order
statistics of a Poisson process conditioned on its count; `kpilot.traces.spreading.uniform_in_bins`)
and arrives its service time earlier: a long function loads the platform before it is counted. One
that would have started before the excerpt arrives at t = 0 with only the work it had left (meta
started_before_excerpt).
Service times pass through each published percentile; within each segment between two of them they
follow lo + (hi - lo) * v**k (v uniform), with one k per function that makes the mean the published
Average. Linear interpolation overstated the work (+21 % on the real excerpt): the Averages show
durations crowding the lower end of their segments. An Average the percentiles cannot reach takes
the nearer extreme (every sample at its segment's lower or upper end). A function absent from the
durations file uses the Count-weighted mean percentiles and Average of all functions (meta
functions_without_durations). Everything is drawn from numpy default_rng(seed).
Selection: function=PREFIX[+...] or top=K (by invocations in the file); default is the aggregate of
all functions. The same seed and selection give the same trace.
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
SEGMENT_WEIGHTS = np.diff(PERCENTILES) / 100.0   # probability of each segment between two percentiles
MAX_EXPONENT = 1e6                               # v**1e6 is 0 for all but a sliver of v: the lower ends
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
    if (labels < 1).any():         # 0-based labels: the clock would start a minute before midnight
        raise TraceError(f"minute column {minutes[int(np.argmax(labels < 1))]}: minute labels are 1-based "
                         "(1..1440, the dataset's minutes of the day)", path=str(path), line=1)
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
    table, average, missing, shared = _percentile_table(dpath, ids, every_id)
    if not shared:      # every service time would come from the pooled row: another excerpt's file
        raise TraceError(f"none of the {len(every_id)} functions is in the durations file {dpath} (by "
                         "HashFunction): is it this excerpt's?", path=str(path))
    rng = np.random.default_rng(seed)
    per_cell = counts.ravel()
    minute_start = np.tile((labels - labels[0]) * 60.0, len(ids))
    completions = uniform_in_bins(minute_start, per_cell, 60.0, rng)
    func_of = np.repeat(np.repeat(np.arange(len(ids)), len(labels)), per_cell)
    service = _sample_durations(table, _mean_exponents(table, average), func_of, rng) / 1000.0
    arrivals = completions - service
    before = arrivals < 0          # started before the excerpt: it brings only the work it has left
    arrivals[before], service[before] = 0.0, completions[before]
    trace = make_trace(arrivals, service, None, selection=selection_label(options), functions=len(ids),
                       durations_file=str(dpath), functions_without_durations=missing,
                       started_before_excerpt=int(before.sum()),
                       start_time_of_day_s=float((labels[0] - 1) * 60), minutes=len(labels))
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


def _percentile_table(dpath: Path, ids: np.ndarray,
                      every_id: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """Per selected function, its 7 duration percentiles and its Average (ms); how many had to be
    pooled; and whether the file has any of `every_id` (the whole invocations file's functions)."""
    dheader = read_header(dpath)
    require_columns(dpath, dheader, ["HashFunction", "Average", "Count", *PERCENTILE_COLUMNS],
                    "azure-functions-2019 durations")
    num = read_numeric(dpath, dheader, ["Average", "Count", *PERCENTILE_COLUMNS])
    for name in ["Average", *PERCENTILE_COLUMNS]:
        check_non_negative(dpath, dheader, name, num[name], "negative duration")
        # Bounded (ms), the pooled means below cannot overflow, nor its samples exceed float32.
        check_at_most(dpath, dheader, name, num[name], MAX_SERVICE_S * 1000.0,
                      f"at most {MAX_SERVICE_S * 1000.0:g} ms (a week) of work for one request")
    pct = np.column_stack([num[c] for c in PERCENTILE_COLUMNS])
    pct = np.maximum.accumulate(pct, axis=1)  # percentiles must not decrease
    weights = np.maximum(num["Count"], 0)
    # Scaled by a power of two to below 1: the same mean to the bit, where Counts such as 1e308 overflowed.
    weights = np.ldexp(weights, -np.frexp(weights.max())[1])
    total = weights.sum() or 1.0
    pooled = (pct * weights[:, None]).sum(axis=0) / total
    pooled_average = (num["Average"] * weights).sum() / total
    dids = read_frame(dpath, ["HashFunction"]).get_column("HashFunction").to_numpy().astype(str)
    first = {}
    for i, fid in enumerate(dids):
        first.setdefault(fid, i)
    rows = np.array([first.get(fid, -1) for fid in ids])
    found = rows >= 0
    table = np.where(found[:, None], pct[np.maximum(rows, 0)], pooled)
    average = np.where(found, num["Average"][np.maximum(rows, 0)], pooled_average)
    return table, average, int((~found).sum()), bool(set(first) & set(every_id.tolist()))


def _mean_exponents(table: np.ndarray, average: np.ndarray) -> np.ndarray:
    """Per function, the k for which lo + (hi - lo) * v**k within each segment has mean `average`.

    The mean is A + B / (k + 1), A and B the segment-weighted lower ends and widths; an Average
    below A (or at it) takes k = MAX_EXPONENT, above A + B k = 0; equal percentiles (B = 0) any k."""
    lo, hi = table[:, :-1], table[:, 1:]
    a = (lo * SEGMENT_WEIGHTS).sum(axis=1)
    b = ((hi - lo) * SEGMENT_WEIGHTS).sum(axis=1)
    excess = average - a
    k = np.full(len(table), MAX_EXPONENT)
    above = excess > 0
    with np.errstate(over="ignore"):        # a tiny excess: b / excess is inf, clipped below
        k[above] = b[above] / excess[above] - 1.0
    k = np.clip(k, 0.0, MAX_EXPONENT)
    k[b == 0] = 1.0
    return k


def _sample_durations(table: np.ndarray, exponent: np.ndarray, func_of: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
    """Inverse-CDF samples, one per invocation: through the table's percentiles, lo + (hi - lo) * v**k
    within each segment (k the function's `exponent`, v the position within the segment)."""
    u = rng.random(len(func_of)) * 100.0
    seg = np.clip(np.searchsorted(PERCENTILES, u, side="right") - 1, 0, len(PERCENTILES) - 2)
    frac = (u - PERCENTILES[seg]) / (PERCENTILES[seg + 1] - PERCENTILES[seg])
    lo, hi = table[func_of, seg], table[func_of, seg + 1]
    return lo + (hi - lo) * frac ** exponent[func_of]
