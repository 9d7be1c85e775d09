"""Train / validation / test windows of traces, split by time (never by shuffling requests).

A window [a, b) of fractions keeps the requests that arrived between a x span and b x span,
re-based to start at 0, with the time of day moved along so time features stay true.

A window cut from the middle of a trace starts on a revision that is idle while the recorded load
is already running, which no controller in a cluster ever faces. With `warmup_s` the window also
keeps up to that many seconds of the trace before it (`meta["warmup_s"]`, a whole number of
2 s autoscaler ticks): replays run through them but score only what follows (kpilot.sim.replay).
"""

from __future__ import annotations

import math

from kpilot.errors import ConfigError
from kpilot.sim.config import KpaConfig
from kpilot.traces import Trace


# A warm-up is whole autoscaler ticks (KpaConfig.tick_s, Knative's fixed 2 s): the scored window
# then starts on a tick, as every policy's replay of it does.
WARMUP_TICK_S = KpaConfig().tick_s


def time_window(trace: Trace, lo: float, hi: float, *, warmup_s: float = 0.0) -> Trace:
    """The requests in [lo, hi) of the trace's span (fractions), re-based to 0; with `warmup_s`,
    preceded by up to that much of the trace (never before its start), which is not scored."""
    span = trace.recorded_span_s
    start, end = lo * span, (hi * span if hi < 1.0 else span + 1.0)
    warm = WARMUP_TICK_S * math.floor(min(max(0.0, warmup_s), start) / WARMUP_TICK_S)
    begin = start - warm
    win = trace.window(begin, end)
    scored = max(1.0, end - start) if hi < 1.0 else max(1.0, span - start)
    meta = {**win.meta, "span_s": warm + scored, "split": [lo, hi]}
    if warm > 0.0:
        meta["warmup_s"] = warm
    else:
        meta.pop("warmup_s", None)
    return Trace(win.arrivals, win.service, win.failed, meta)


def time_window_s(trace: Trace, seconds: float) -> Trace:
    """The first `seconds` of a trace (all of it when shorter)."""
    span = trace.recorded_span_s
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


def has_scored_requests(window: Trace) -> bool:
    """Whether a window scores anything: 2 or more requests after its warm-up."""
    return len(window) - window.first_scored() >= 2


def usable_windows(specs: list[str], traces: list[Trace], split: tuple[float, float], purpose: str, *,
                   warmup_s: float = 0.0, log=print) -> list[Trace]:
    """Each trace's `split` window (fractions) that has 2 or more scored requests; a trace whose
    window has fewer is left out of `purpose` with a note through `log`, never silently."""
    kept = []
    for spec, trace in zip(specs, traces):
        window = time_window(trace, *split, warmup_s=warmup_s)
        if has_scored_requests(window):
            kept.append(window)
        else:
            log(f"note: {spec}: fewer than 2 requests in its {purpose} window {split[0]:g}:{split[1]:g}"
                f"{' after the warm-up' if warmup_s else ''}; not used for {purpose}")
    return kept
