"""PromQL over queue-proxy's request counters, shared by `kpilot trace from-prometheus` (and
`kpilot retune`) and the operator, so that both count requests alike.

`increase()` and `rate()` count only the growth between a series' own samples, and queue-proxy's
series appears with a pod's first request: what a new pod served before its first scrape (a whole
burst from zero on a short-lived pod) was not counted at all. A series with no sample in the
`NEW_SERIES_LOOKBACK` before the window is therefore counted from zero, by its greatest value in
the window; the others as increase()/rate() count them. A range lookback, not an instant one:
one failed scrape leaves a staleness marker, which an instant selector (`X offset w`) reads as
"no series" and a range function skips, and a pod that had served 100,000 requests then read as
new; with the range lookback it read 0.84-1.0 req/s, as rate() did (checked against a live
Prometheus 2.42 scraping every 2 s). A series with no sample for 5 minutes (a scrape outage that
long, a Prometheus without the history) still reads as new: its whole count in one window.
"""

from __future__ import annotations

NEW_SERIES_LOOKBACK = "5m"


def counted_from_zero(series: str, window: str, per_second: str | None = None) -> str:
    """increase(`series`[`window`]) with new series counted from zero; with `per_second` (the
    window in seconds, as text) rate() and the new series' count divided by it."""
    first = f"max_over_time({series}[{window}])" + (f" / {per_second}" if per_second else "")
    counted = f"{'rate' if per_second else 'increase'}({series}[{window}])"
    return (f"(({first} unless count_over_time({series}[{NEW_SERIES_LOOKBACK}] offset {window})) "
            f"or {counted})")
