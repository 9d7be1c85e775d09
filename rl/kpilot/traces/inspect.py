"""`kpilot trace inspect`: what a trace looks like, as a Rich table or one JSON object.

`trace_stats` is pure (Trace -> dict); `inspect_command` loads, computes and prints. A Huawei
cold-start table gets a cold-start summary (count, mean, sd, percentiles) instead.
"""

from __future__ import annotations

import json

import numpy as np

from kpilot.traces.coldstart import coldstart_stats, load_coldstart_table
from kpilot.traces.loader import detect_format, load_trace
from kpilot.traces.model import Trace
from kpilot.traces.spec import check_options, parse_spec


def trace_stats(trace: Trace) -> dict:
    """Rows, failures, span, mean and peak rates, inter-arrival CV, service percentiles."""
    n = len(trace)
    arr = trace.arrivals
    span = trace.recorded_span_s
    stats = {"format": trace.meta.get("format"), "source": trace.meta.get("source"), "rows": n,
             "failed": int(trace.failed.sum()), "span_s": span,
             "first_arrival_s": float(arr[0]) if n else None,
             "last_arrival_s": float(arr[-1]) if n else None,
             "mean_rate_rps": n / span if span > 0 else None}
    if n:
        sec = arr.astype(np.int64)          # sorted: the busiest second is the longest run of equal values
        stats["peak_rate_1s_rps"] = float(_longest_run(sec))
        stats["peak_rate_60s_rps"] = float(_longest_run(sec // 60) / 60.0)
    gaps = np.diff(arr)
    stats["interarrival_cv"] = float(gaps.std() / gaps.mean()) if len(gaps) > 1 and gaps.mean() > 0 else None
    stats["max_gap_s"] = float(gaps.max()) if len(gaps) else None
    svc = trace.service.astype(np.float64)
    if n:
        p50, p90, p99 = np.percentile(svc, [50, 90, 99])
        stats.update(service_mean_s=float(svc.mean()), service_p50_s=float(p50),
                     service_p90_s=float(p90), service_p99_s=float(p99))
    for key in ("start_time_of_day_s", "selection", "functions", "functions_without_durations", "checksum"):
        if trace.meta.get(key) is not None:
            stats[key] = trace.meta[key]
    return stats


def _longest_run(sorted_values: np.ndarray) -> int:
    """The most times one value repeats in a sorted array (no array as long as the trace's span)."""
    edges = np.flatnonzero(np.diff(sorted_values)) + 1
    return int(np.diff(np.concatenate(([0], edges, [len(sorted_values)]))).max())


def inspect_command(path, fmt: str | None, json_out: bool) -> None:
    """Load `path` (any trace spec) and print its statistics."""
    spec = parse_spec(path)
    if spec.path is not None and (fmt or detect_format(spec.path)) == "huawei-coldstart":
        check_options(spec.options, set(), "huawei-coldstart", str(spec.path))
        stats = coldstart_stats(load_coldstart_table(spec.path))
        stats = {"format": "huawei-coldstart", "source": str(spec.path), **stats}
    else:
        stats = trace_stats(load_trace(path, fmt))
    if json_out:
        print(json.dumps(stats))
        return
    from rich.table import Table

    from kpilot.render import out_console

    table = Table(title=str(stats.get("source")), show_header=True)
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for key, value in stats.items():
        if key == "source":
            continue
        table.add_row(key, f"{value:.6g}" if isinstance(value, float) else str(value))
    out_console().print(table)
