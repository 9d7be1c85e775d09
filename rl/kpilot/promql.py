"""PromQL over queue-proxy's request counters, shared by `kpilot trace from-prometheus` (and
`kpilot retune`) and the operator, so that both count requests alike. Needs Prometheus >= 2.26
(last_over_time).

What a window of W seconds served is each series' latest sample now less its latest sample one
window earlier, so the counts of consecutive windows add up to exactly what was scraped. rate()
and increase(), which this replaced, count only the growth between two samples inside the window
and extrapolate it: with one sample in the window (a scrape interval over W / 2) they read low or
nothing (the operator's 30 s rate read half the request rate at a 20 s scrape, and 0 at 30 s).
Here one scrape per window is enough; a longer interval reads right on average, but noisier
(windows without a scrape read 0, the next one the growth since the last).

Both latest samples are looked for over a range, lookback_s(W): 5 minutes, or twice a window
over 150 s. It must cover the window, or a series whose last sample is older than the lookback
at the window's end is not there (with 5 minutes, a pod that lived and died inside a 600 s bin
was lost whole); and more than the window, for the sample before it: scraped once a window (the
least the docs ask), one late or failed scrape would leave none in a lookback of one window. A
range, not an instant selector (`X offset W`): one failed scrape leaves a staleness marker, which
an instant selector reads as "no series" (a pod that had served 100,000 requests then read as
new), and which a range function skips; a pod gone a window ago or more keeps its last value and
counts 0.

A series with no sample in the lookback before the window counts whole, its latest value: a new
pod's series appears with its first request, and what it served before its first scrape (a
whole burst on a short-lived pod) would otherwise be lost. So, wrongly, does a series without
samples for that long (a scrape outage, a Prometheus without the history): its whole count in one
window.

A restarted queue-proxy is counted from its restart, by its latest value: a series with a
sample in the window lower than the sample before it (resets()) or than its latest sample before
the window (min_over_time()). The difference alone counted only what the new process served
beyond its predecessor's total (1,000 requests, a restart, 1,500 more: 500). What it served in
the window before the restart (before the last one, after several) is lost, its counters no
longer show it; after a restart between the sample before the window and the window's start,
what it served until the window's start counts in this window (none before counted it). As for
rate(), a restart whose next sample is not lower than the one before it (the new process served
by its first scrape as many requests as the old one had) is not seen: only the difference counts.
Prometheus's own engine evaluates all of this in tests/test_promql_promtool.py.
"""

from __future__ import annotations

MIN_LOOKBACK_S = 300


def lookback_s(window_s: int) -> int:
    """How far back each of a window's two samples is looked for (module docstring)."""
    return max(MIN_LOOKBACK_S, 2 * window_s)


def window_increase(series: str, window_s: int) -> str:
    """Per series, what `series` (a counter selector) grew by over the `window_s` seconds before the
    evaluation time; new or restarted series counted from zero. Vector matching (-, unless, or,
    <) ignores __name__, which last_over_time keeps and the other functions drop."""
    w, lb = f"{window_s}s", f"{lookback_s(window_s)}s"
    last = f"last_over_time({series}[{lb}])"
    before = f"last_over_time({series}[{lb}] offset {w})"
    restarted = f"resets({series}[{w}]) > 0 or min_over_time({series}[{w}]) < {before}"
    return f"((({last} - {before}) unless ({restarted})) or {last})"
