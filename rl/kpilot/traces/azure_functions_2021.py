"""Azure Functions invocation trace 2021 (Zhang et al., SOSP'21; AzurePublicDataset).

Columns: app, func (hashed ids), end_timestamp (seconds since the trace start), duration (seconds;
the official README says milliseconds, the values are seconds). One row per invocation, rows NOT
sorted. Arrival = end_timestamp - duration; service = duration. Arrivals are rebased to the whole
second of the earliest arrival (meta origin_s). Options: function=PREFIX[+...] or top=K (see
`kpilot.traces.selection`); default all functions merged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kpilot.errors import TraceError
from kpilot.traces.csvio import check_at_most, check_non_negative, read_frame, read_numeric, require_columns
from kpilot.traces.model import MAX_SERVICE_S, Trace, check_span, make_trace
from kpilot.traces.selection import select_functions, selection_label

SIGNATURE = {"end_timestamp", "duration", "func"}
NUMERIC = ["end_timestamp", "duration"]
OPTIONS = {"function", "top"}


def read_azure_functions_2021(path: Path, header: list[str], options: dict, *, seed: int, **_) -> Trace:
    """Read an Azure Functions 2021 invocation CSV into a Trace (see module doc)."""
    require_columns(path, header, ["func", *NUMERIC], "azure-functions-2021")
    cols = read_numeric(path, header, NUMERIC)
    end, duration = cols["end_timestamp"], cols["duration"]
    check_non_negative(path, header, "duration", duration, "negative duration")
    # Bounded, end - duration cannot overflow; check_span then keeps the rebase from overflowing.
    check_at_most(path, header, "duration", duration, MAX_SERVICE_S,
                  f"at most {MAX_SERVICE_S:g} s (a week) of work for one request; are durations in seconds?")
    selection = selection_label(options)
    n_functions = None
    if "function" in options or "top" in options:
        # A func id is unique only within its app: a function is FUNC/APP, which function=FUNC
        # still selects by prefix (FUNC/APP, or a prefix of it, where two apps share FUNC).
        names = read_frame(path, ["func", "app"])
        func = (names.get_column("func").fill_null("") + "/"
                + names.get_column("app").fill_null("")).to_numpy().astype(str)
        ids, inverse, counts = np.unique(func, return_inverse=True, return_counts=True)
        first_seen = np.argsort(np.unique(inverse, return_index=True)[1])  # file order for ties
        ids, counts = ids[first_seen], counts[first_seen]
        keep_ids = set(ids[select_functions(ids, counts, options, str(path))])
        keep = np.isin(func, list(keep_ids))
        end, duration = end[keep], duration[keep]
        n_functions = len(keep_ids)
        if not len(end):
            raise TraceError("no invocations for the selected functions", path=str(path))
    arrivals = end - duration
    check_span(arrivals, str(path))
    origin = float(np.floor(arrivals.min()))
    return make_trace(arrivals - origin, duration, None, origin_s=origin, selection=selection,
                      functions=n_functions)
