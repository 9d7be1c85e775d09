"""The one trace type every reader produces and everything downstream consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kpilot.errors import TraceError


@dataclass(frozen=True)
class Trace:
    """Requests sorted by arrival.

    arrivals: float64 seconds from the trace start (first arrival may be > 0), non-decreasing.
    service: float32 seconds of work each request needs on one core at full speed.
    failed: bool, the request failed in the original system (kept and counted, still replayed).
    meta: source, format, checksum (sha256 of the file), span_s, and reader-specific notes.
    """

    arrivals: np.ndarray
    service: np.ndarray
    failed: np.ndarray
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.arrivals)
        if len(self.service) != n or len(self.failed) != n:
            raise ValueError("arrivals, service and failed must have the same length")

    def __len__(self) -> int:
        return len(self.arrivals)

    @property
    def span_s(self) -> float:
        """Seconds from time 0 to the last arrival (at least 1)."""
        return float(max(1.0, np.ceil(self.arrivals[-1]) if len(self.arrivals) else 1.0))

    @property
    def recorded_span_s(self) -> float:
        """Seconds the trace covers as its reader recorded them (a count table's last bin, a
        synthetic workload's duration), which can run past the last arrival; else span_s."""
        return float(self.meta.get("span_s") or self.span_s)

    def window(self, start_s: float, end_s: float) -> "Trace":
        """The requests arriving in [start_s, end_s), re-based to start at 0 (its clock too)."""
        lo, hi = np.searchsorted(self.arrivals, [start_s, end_s], side="left")
        meta = {**self.meta, "window": [float(start_s), float(end_s)]}
        if (tod := self.time_of_day_at(start_s)) is not None:
            meta["start_time_of_day_s"] = tod
        return Trace(self.arrivals[lo:hi] - start_s, self.service[lo:hi], self.failed[lo:hi], meta)

    def time_of_day_at(self, offset_s: float) -> float | None:
        """Seconds since midnight UTC `offset_s` into the trace (None when its clock is unknown)."""
        tod = self.meta.get("start_time_of_day_s")
        return None if tod is None else (float(tod) + offset_s) % 86400.0

    @property
    def warmup_s(self) -> float:
        """Seconds at the start that replays run through but do not score (kpilot.train.split)."""
        return float(self.meta.get("warmup_s", 0.0))

    def first_scored(self) -> int:
        """Index of the first request after the warm-up (0 without one)."""
        return int(np.searchsorted(self.arrivals, self.warmup_s, side="left"))

    def scaled(self, service_scale: float) -> "Trace":
        """The same arrivals with every service time multiplied by `service_scale`."""
        return Trace(self.arrivals, (self.service * np.float32(service_scale)).astype(np.float32),
                     self.failed, {**self.meta, "service_scale": float(service_scale)})

    def per_second(self, span_s: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Binned view: arrivals and work (service seconds) per whole second."""
        n = int(span_s if span_s is not None else self.span_s + 1)
        idx = np.minimum(self.arrivals.astype(np.int64), n - 1)
        counts = np.bincount(idx, minlength=n).astype(np.float64)
        work = np.bincount(idx, weights=self.service.astype(np.float64), minlength=n)
        return counts, work


MAX_REQUESTS = 50_000_000      # ~0.7 GB of arrays; the busiest real excerpt has 3 M
MAX_SPAN_S = 366 * 86400.0     # a year: replays tick every 2 s through idle time too
MAX_SERVICE_S = 7 * 86400.0    # a week of work for one request: longer is a unit slip or an overflow
EXACT = 2.0 ** 53              # beyond, a float is no exact count or second (and int64 is near overflow)


def count_too_large(what: str, value: float) -> str:
    """The message for a count table's cell above EXACT: one such cell is over MAX_REQUESTS already,
    and summing or casting such cells overflows (cells up to EXACT meet check_request_total)."""
    return f"{what} {value:g}: at most {MAX_REQUESTS:,} requests in all (memory)"


def check_request_total(total: float, source: str) -> None:
    """TraceError before a count table (requests per bin) is expanded into more than MAX_REQUESTS."""
    if total > MAX_REQUESTS:
        raise TraceError(f"{total:,.0f} requests in all: at most {MAX_REQUESTS:,} (memory)", path=source)


def check_limits(trace: Trace, source: str) -> None:
    """TraceError unless the trace is one a replay can run: every service time a finite number of
    seconds (a cell or option beyond float32 becomes infinite), at most MAX_REQUESTS requests
    over at most MAX_SPAN_S seconds."""
    bad = ~np.isfinite(trace.service) | (trace.service < 0) | (trace.service > MAX_SERVICE_S)
    if bad.any():
        i = int(np.argmax(bad))
        raise TraceError(f"request {i + 1} (by arrival) needs {float(trace.service[i]):g} s of work: service "
                         f"times must be finite, non-negative and at most {MAX_SERVICE_S:g} s (a week; a "
                         "duration or option out of range, or in another unit?)", path=source)
    check_request_total(len(trace), source)
    _check_span(float(trace.arrivals[-1]) - min(0.0, float(trace.arrivals[0])) if len(trace) else 0.0, source)


def check_span(times: np.ndarray, source: str) -> None:
    """check_limits' span check on a reader's raw times, before it subtracts the earliest: times
    such as 1e308 and -1e308 overflow to inf on the way (numpy's warning on stderr)."""
    if len(times):      # Python floats: a difference beyond float64 is inf, without a warning
        _check_span(float(times.max()) - float(times.min()), source)


def _check_span(span: float, source: str) -> None:
    if not span <= MAX_SPAN_S:
        raise TraceError(f"the requests span {span:.4g} s: at most {MAX_SPAN_S:.4g} s (a year); "
                         "are the timestamps in the unit the format expects?", path=source)


def make_trace(arrivals, service, failed=None, **meta) -> Trace:
    """Build a Trace from unsorted columns: sorts by arrival (stable) and fixes dtypes."""
    arrivals = np.asarray(arrivals, dtype=np.float64)
    with np.errstate(over="ignore"):           # beyond float32 becomes inf, which check_limits refuses
        service = np.asarray(service, dtype=np.float32)
    failed = np.zeros(len(arrivals), dtype=bool) if failed is None else np.asarray(failed, dtype=bool)
    if len(arrivals) and np.any(np.diff(arrivals) < 0):
        order = np.argsort(arrivals, kind="stable")
        arrivals, service, failed = arrivals[order], service[order], failed[order]
    return Trace(arrivals, service, failed, dict(meta))
