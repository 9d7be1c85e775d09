"""Trace-loading benchmark: a BurstGPT-sized CSV through `load_trace`, timed and memory-measured.

The CSV (6-column BurstGPT layout, whole-second timestamps, ~2 % failures) is written with polars
into a temp dir (not timed). Each repeat runs `load_trace` in a fresh subprocess, which reports its
load time, its peak RSS (ru_maxrss) and that peak's increase over the resident memory right after
the imports; the result is the median time and the largest peaks.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

_CHILD = """
import json, os, resource, sys, time
import kpilot.traces as traces
# Resident memory now (not the max so far: imports can peak transiently above it).
base = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
t0 = time.perf_counter()
trace = traces.load_trace(sys.argv[1])
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rows": len(trace), "load_s": dt, "peak_kib": peak - base, "peak_total_kib": peak}))
"""


def write_burstgpt_csv(path: Path, rows: int, seed: int = 0) -> None:
    """A synthetic BurstGPT-format CSV with `rows` requests (~30 req/s, whole-second timestamps)."""
    rng = np.random.default_rng(seed)
    ts = np.floor(np.cumsum(rng.exponential(1 / 30.0, rows))).astype(np.int64)
    req = rng.integers(1, 2000, rows)
    resp = np.where(rng.random(rows) < 0.02, 0, rng.integers(1, 1000, rows))
    model = np.where(rng.random(rows) < 0.3, "GPT-4", "ChatGPT")
    pl.DataFrame({"Timestamp": ts, "Model": model, "Request tokens": req, "Response tokens": resp,
                  "Total tokens": req + resp, "Log Type": "Conversation log"}).write_csv(path)


def bench_trace_load(rows: int = 10_000_000, repeats: int = 3) -> dict:
    """{"trace_rows", "trace_load_s" (median), "trace_load_peak_rss_mib" (max over repeats)}."""
    with tempfile.TemporaryDirectory(prefix="kpilot-bench-") as tmp:
        path = Path(tmp) / "BurstGPT_bench.csv"
        write_burstgpt_csv(path, rows)
        runs = []
        for _ in range(repeats):
            out = subprocess.run([sys.executable, "-c", _CHILD, str(path)], check=True,
                                 capture_output=True, text=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"trace_rows": runs[0]["rows"],
            "trace_load_s": statistics.median(r["load_s"] for r in runs),
            "trace_load_peak_rss_mib": max(r["peak_kib"] for r in runs) / 1024.0,
            "trace_load_process_peak_rss_mib": max(r["peak_total_kib"] for r in runs) / 1024.0}


if __name__ == "__main__":
    print(json.dumps(bench_trace_load(*(int(a) for a in sys.argv[1:3]))))
