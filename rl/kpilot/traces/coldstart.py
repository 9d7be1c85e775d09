"""Huawei Cloud cold-start tables (Joosen et al., EuroSys'25 "Serverless Cold Starts and Where to
Find Them"; github.com/sir-lab/data-release).

Not a request trace: an empirical distribution of cold-start times for the simulator to sample.
Columns used: podAllocationCost, deployCodeCost, deployDependencyCost, schedulingCost and
totalCost_cold_start (seconds); the leading unnamed pandas index column and any others are ignored.
Each total must equal the sum of the four components (to 2.5 ms + 0.1 %: five values each rounded
to the millisecond may be off by that much); the returned value is that sum. Rows of '...' (pandas display elision in notebook excerpts) are skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kpilot.errors import TraceError
from kpilot.traces.csvio import (check_at_most, column_label, drop_elided, read_frame,
                                 read_header, read_numeric, require_columns)
from kpilot.traces.model import MAX_SERVICE_S

SIGNATURE = {"totalCost_cold_start"}
COMPONENTS = ["podAllocationCost", "deployCodeCost", "deployDependencyCost", "schedulingCost"]
TOTAL = "totalCost_cold_start"
ROUNDING_S = 5 * 0.0005      # the total and four components, each rounded to the millisecond


def load_coldstart_table(path: str | Path) -> np.ndarray:
    """Cold-start times in seconds (float64), one per row, each the sum of its four components."""
    path = Path(path)
    header = read_header(path)
    columns = [*COMPONENTS, TOTAL]
    require_columns(path, header, columns, "huawei-coldstart")
    frame, rows = drop_elided(read_frame(path, columns), TOTAL)
    if frame.height == 0:
        raise TraceError("no data rows", path=str(path))
    try:
        cols = read_numeric(path, header, columns, frame)
    except TraceError as exc:  # re-point at the original file line (elided rows were dropped)
        raise TraceError(exc.message, path=exc.path, line=int(rows[exc.line - 2]) + 2, column=exc.column) from None
    for name in columns:
        neg = cols[name] < 0
        if neg.any():
            row = int(rows[np.argmax(neg)])
            raise TraceError(f"negative time {cols[name][np.argmax(neg)]:g}", path=str(path),
                             line=row + 2, column=column_label(header, name))
        # Bounded, the components' sum below cannot overflow (1e308 + 1e308).
        check_at_most(path, header, name, cols[name], MAX_SERVICE_S,
                      f"at most {MAX_SERVICE_S:g} s (a week) for one cold start; are the times in seconds?", rows)
    total = np.sum([cols[c] for c in COMPONENTS], axis=0)
    off = np.abs(total - cols[TOTAL]) > ROUNDING_S + 1e-3 * np.abs(cols[TOTAL])
    if off.any():
        i = int(np.argmax(off))
        raise TraceError(f"{TOTAL} {cols[TOTAL][i]:g} differs from the sum of its components {total[i]:g}",
                         path=str(path), line=int(rows[i]) + 2, column=column_label(header, TOTAL))
    return total


def coldstart_stats(seconds: np.ndarray) -> dict:
    """Summary of a cold-start sample: count, mean, sd and percentiles (seconds)."""
    p = np.percentile(seconds, [0, 50, 90, 99, 100])
    return {"kind": "cold-start table", "count": int(len(seconds)), "mean_s": float(seconds.mean()),
            "sd_s": float(seconds.std(ddof=1)) if len(seconds) > 1 else 0.0,
            "min_s": float(p[0]), "p50_s": float(p[1]), "p90_s": float(p[2]), "p99_s": float(p[3]),
            "max_s": float(p[4])}
