"""Train / validation / test windows of traces, split by time (never by shuffling requests).

A window [a, b) of fractions keeps the requests that arrived between a x span and b x span,
re-based to start at 0, with the time of day moved along so time features stay true.
"""

from __future__ import annotations

from kpilot.errors import ConfigError
from kpilot.traces import Trace, load_trace


def time_window(trace: Trace, lo: float, hi: float) -> Trace:
    """The requests in [lo, hi) of the trace's span (fractions), re-based to 0."""
    span = float(trace.meta.get("span_s") or trace.span_s)
    start, end = lo * span, (hi * span if hi < 1.0 else span + 1.0)
    win = trace.window(start, end)
    tod = trace.meta.get("start_time_of_day_s")
    meta = {**win.meta, "span_s": max(1.0, end - start) if hi < 1.0 else max(1.0, span - start),
            "split": [lo, hi]}
    if tod is not None:
        meta["start_time_of_day_s"] = (float(tod) + start) % 86400.0
    return Trace(win.arrivals, win.service, win.failed, meta)


def time_window_s(trace: Trace, seconds: float) -> Trace:
    """The first `seconds` of a trace (all of it when shorter)."""
    span = float(trace.meta.get("span_s") or trace.span_s)
    return trace if seconds >= span else time_window(trace, 0.0, seconds / span)


def parse_window(text: str | None) -> tuple[float, float] | None:
    """`--window START:END` (fractions of each trace's span), e.g. `0.8:1` for the last 20 %."""
    if text is None:
        return None
    try:
        lo, hi = (float(x) for x in text.split(":"))
    except ValueError:
        lo = hi = float("nan")
    if not (0.0 <= lo < hi <= 1.0):
        raise ConfigError(f"expected START:END fractions with 0 <= START < END <= 1, got {text!r}",
                          option="--window")
    return lo, hi


def load_windows(specs: list[str], lo: float, hi: float, *, seed: int = 0) -> list[Trace]:
    """Load each spec and cut its [lo, hi) window; windows with fewer than 2 requests are dropped."""
    out = []
    for spec in specs:
        win = time_window(load_trace(spec, seed=seed), lo, hi)
        if len(win) >= 2:
            out.append(win)
    return out
