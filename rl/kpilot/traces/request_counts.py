"""Request counts per time bin with their mean duration: what a cluster's Prometheus keeps.

A Knative Service's queue-proxy histogram (kn_serving_invocation_duration_seconds) gives, per bin,
how many requests it served and their total duration; `kpilot trace from-prometheus` writes one
such file per Service, and any other per-bin export in this shape reads the same way.

Columns (by name, any order, extra columns ignored):
    time              start of the bin, seconds (unix time in an export; any origin works, the
                      time of day is read from it as unix seconds mod 86400); strictly increasing
    requests          requests in the bin: a non-negative integer
    mean_duration_s   (optional) their mean duration in seconds, empty where the bin has none
    bin width         the smallest step between consecutive rows (bins without requests may be
                      left out); option bin=SECONDS overrides it, and is needed for a one-row file
    arrivals          a bin with n requests gets n arrivals uniform within it
                      (`kpilot.traces.spreading.uniform_in_bins`), as the Huawei request
                      tables are read; t = 0 is the first row's time (meta origin_s)
    service           lognormal around its bin's mean duration with coefficient of variation cv=
                      (default 1.0: a bin keeps its mean, not its spread); bins without a mean, or a
                      file without the column, use service= (seconds; default the file's
                      request-weighted mean duration, else 0.1)
Queue-proxy's duration is the time a request spent at its pod, so on a pod shared by more requests
than it has cores it includes their slowdown: on such Services the replayed service times err long.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from kpilot.errors import TraceError
from kpilot.traces.csvio import check_increasing, column_label, read_frame, read_numeric, require_columns
from kpilot.traces.model import (EXACT, MAX_SERVICE_S, Trace, check_request_total, check_span, count_too_large,
                                 make_trace)
from kpilot.traces.spreading import bin_width, uniform_in_bins
from kpilot.traces.synthetic import lognormal_options, lognormal_service

SIGNATURE = {"time", "requests"}
OPTIONS = {"service", "cv", "bin"}
MEAN = "mean_duration_s"
DAY_S = 86400.0
DEFAULT_SERVICE_S = 0.1


def read_request_counts(path: Path, header: list[str], options: dict, *, seed: int, **_) -> Trace:
    """Synthesise a Trace from per-bin request counts and mean durations (see module doc)."""
    src = str(path)
    require_columns(path, header, ["time", "requests"], "request-counts")
    frame = read_frame(path, ["time", "requests"] + ([MEAN] if MEAN in header else []))   # one read
    cols = read_numeric(path, header, ["time", "requests"], frame)
    t, counts = cols["time"], cols["requests"]
    bad = (counts < 0) | (counts != np.floor(counts)) | (counts > EXACT)
    if bad.any():
        i = int(np.argmax(bad))
        where = dict(path=src, line=i + 2, column=column_label(header, "requests"))
        if counts[i] > EXACT:               # summed, such counts overflow; cast, they turn negative
            raise TraceError(count_too_large("request count", counts[i]), **where)
        raise TraceError(f"request count {counts[i]:g} is not a non-negative integer", **where)
    check_increasing(path, header, "time", t)
    check_span(t, src)                  # before t - t[0], which would overflow past a year's span
    check_request_total(counts.sum(), src)
    counts = counts.astype(np.int64)
    if counts.sum() == 0:
        raise TraceError("no requests in any bin", path=src)
    means = _bin_means(path, header, frame, counts) if MEAN in header else np.full(len(t), np.nan)
    given = np.isfinite(means)
    # Weights that sum to 1: a mean such as 1e308 times its count overflowed (lognormal_options refuses it).
    weighted = float((means[given] * (counts[given] / counts[given].sum())).sum()) if counts[given].sum() else None
    fallback, cv = lognormal_options(options, src, weighted or DEFAULT_SERVICE_S)
    width = bin_width(src, t, options)

    arrivals, service = synthesise(t - t[0], counts, means, width, np.random.default_rng(seed), cv=cv,
                                   fallback_s=fallback)
    trace = make_trace(arrivals, service, None, bin_s=width, bins=len(t), origin_s=float(t[0]),
                       start_time_of_day_s=float(t[0] % DAY_S),
                       service_model={"kind": "lognormal per bin", "fallback_mean_s": fallback, "cv": cv})
    trace.meta["span_s"] = float(max(trace.span_s, t[-1] - t[0] + width))
    return trace


def synthesise(starts: np.ndarray, counts: np.ndarray, means: np.ndarray, width: float,
               rng: np.random.Generator, *, cv: float,
               fallback_s: float = DEFAULT_SERVICE_S) -> tuple[np.ndarray, np.ndarray]:
    """Requests from a count table: arrivals uniform in each bin, service lognormal with
    coefficient of variation `cv` around its bin's mean duration (`fallback_s` where the mean is
    NaN). Shared with `kpilot retune` and `kpilot evaluate`'s static-rolling, which replay what
    Prometheus shows."""
    arrivals = uniform_in_bins(starts, counts, width, rng)
    per_request_mean = np.repeat(np.where(np.isfinite(means), means, fallback_s), counts)
    with np.errstate(over="ignore"):    # beyond float32: inf, which check_limits refuses
        service = (lognormal_service(rng, len(arrivals), 1.0, cv) * per_request_mean).astype(np.float32)
    return arrivals, service


def _bin_means(path: Path, header: list[str], frame: pl.DataFrame, counts: np.ndarray) -> np.ndarray:
    """The mean duration column: NaN where empty; an error where a bin with requests has a
    negative, zero or non-numeric mean."""
    text = frame.get_column(MEAN).cast(pl.String).str.strip_chars()
    empty = (text.is_null() | text.str.to_lowercase().is_in(["", "nan"])).to_numpy()
    values = text.cast(pl.Float64, strict=False).to_numpy().astype(np.float64)
    column = column_label(header, MEAN)
    non_numeric = np.isnan(values) & ~empty
    if non_numeric.any():
        i = int(np.argmax(non_numeric))
        raise TraceError(f"non-numeric value {text[i]!r}", path=str(path), line=i + 2, column=column)
    bad = ~empty & ~(np.isfinite(values) & (values > 0)) & (counts > 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise TraceError(f"mean duration {values[i]:g} is not a positive number of seconds",
                         path=str(path), line=i + 2, column=column)
    # At its cell, not as the weighted mean lognormal_options would see.
    long = ~empty & (values > MAX_SERVICE_S) & (counts > 0)
    if long.any():
        i = int(np.argmax(long))
        raise TraceError(f"mean duration {values[i]:g} s: at most {MAX_SERVICE_S:g} s (a week) of work for "
                         "one request; are durations in seconds?", path=str(path), line=i + 2, column=column)
    values[empty | (counts == 0)] = np.nan
    return values
