"""Deterministic sub-second spreading of whole-second timestamps.

Traces such as BurstGPT log arrivals in whole seconds, so many requests share one timestamp. Replaying
them all at the same instant would invent bursts that never happened. The k requests sharing second s
are placed by jittered stratification: the i-th of them (file order, i = 0..k-1) arrives at

    s + (i + u_i) / k,   u_i ~ Uniform[0, 1) from numpy's default_rng(seed)

so they stay in their second and in file order, are spread evenly on average, and the same file with
the same seed always gives the same arrivals. Timestamps with a fractional part are left untouched.

Counts per bin (Huawei per-minute/per-second tables; Azure Functions 2019 per-minute, whose counts
are completions) become instants with `uniform_in_bins`: a bin [start, start + width) holding n
requests gets n instants drawn
independently and uniformly within it (the order statistics of a Poisson process conditioned on its
count), start + width * u with u ~ Uniform[0, 1) from the caller's generator, bins in array order.
"""

from __future__ import annotations

import numpy as np

from kpilot.errors import TraceError
from kpilot.traces.spec import float_option


def is_whole_seconds(timestamps: np.ndarray) -> bool:
    """True when every timestamp is an integer number of seconds."""
    return bool(len(timestamps)) and bool(np.all(timestamps == np.floor(timestamps)))


def spread_whole_seconds(timestamps: np.ndarray, seed: int = 0) -> np.ndarray:
    """Spread whole-second timestamps inside their second (see module doc); returns a new array."""
    ts = np.asarray(timestamps, dtype=np.float64)
    if not is_whole_seconds(ts):
        return ts.copy()
    order = np.argsort(ts, kind="stable")
    sorted_ts = ts[order]
    n = len(ts)
    starts = np.flatnonzero(np.r_[True, sorted_ts[1:] != sorted_ts[:-1]])
    sizes = np.diff(np.r_[starts, n])
    rank = np.arange(n) - np.repeat(starts, sizes)
    k = np.repeat(sizes, sizes)
    u = np.random.default_rng(seed).random(n)
    out = np.empty(n, dtype=np.float64)
    out[order] = sorted_ts + (rank + u) / k
    return out


def uniform_in_bins(starts: np.ndarray, counts: np.ndarray, width: float,
                    rng: np.random.Generator) -> np.ndarray:
    """counts[i] arrivals uniform in [starts[i], starts[i] + width) each (see module doc); unsorted.

    Draws exactly sum(counts) values from `rng`, so callers that sample more afterwards (service
    times) stay reproducible.
    """
    counts = np.asarray(counts, dtype=np.int64)
    return np.repeat(np.asarray(starts, dtype=np.float64), counts) + rng.random(int(counts.sum())) * width


def bin_width(source: str, starts: np.ndarray, options: dict) -> float:
    """The width of a count table's bins: option bin=SECONDS, else the smallest step between
    consecutive bin starts (a table may skip empty bins, never split one)."""
    if "bin" in options:
        width = float_option(options, "bin", None, source)
        if not width > 0:
            raise TraceError(f"bin={options['bin']} must be positive", path=source)
        return width
    if len(starts) < 2:
        raise TraceError("one row: cannot tell the bin width from the time step; pass bin=60 "
                         "(per-minute) or bin=1 (per-second)", path=source)
    return float(np.diff(starts).min())
