"""BurstGPT (Wang et al., KDD'25; github.com/HPMLL/BurstGPT) LLM request logs.

Two header layouts, located by column name so both parse:
    6 columns (BurstGPT_1/_2):  Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type
    8 columns (BurstGPT_3, v2): Timestamp,Session ID,Elapsed time,Model,Request tokens,
                                Response tokens,Total tokens,Log Type
`Timestamp` is seconds (whole seconds in every release, written "5" or "19440110.0"). Arrivals are
rebased to the whole second of the earliest request (meta origin_s keeps the offset) and spread
within their second (see `kpilot.traces.spreading`). `Response tokens == 0` marks a failed request:
it is kept, flagged failed and counted. Service time comes from the LLM service-time model
(`Request tokens` in, `Response tokens` out); `Elapsed time` and the text columns are not used.
Options: model=NAME (keep one model, e.g. GPT-4), log=TEXT (keep rows whose Log Type starts
with TEXT, e.g. API or Conversation).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from kpilot.errors import TraceError
from kpilot.traces.csvio import check_non_negative, read_frame, read_numeric, require_columns
from kpilot.traces.model import Trace, check_span, make_trace
from kpilot.traces.service_model import LlmServiceModel
from kpilot.traces.spreading import spread_whole_seconds

SIGNATURE = {"Timestamp", "Request tokens", "Response tokens"}
NUMERIC = ["Timestamp", "Request tokens", "Response tokens"]
OPTIONS = {"model", "log"}


def read_burstgpt(path: Path, header: list[str], options: dict, *, service_model: LlmServiceModel,
                  seed: int) -> Trace:
    """Read a BurstGPT CSV into a Trace (see module doc)."""
    require_columns(path, header, NUMERIC, "burstgpt")
    cols = read_numeric(path, header, NUMERIC)
    if "model" in options or "log" in options:
        keep = _filter_mask(path, header, options)
        cols = {k: v[keep] for k, v in cols.items()}
        if not len(cols["Timestamp"]):
            raise TraceError(f"no rows match {options}", path=str(path))
    ts, inp, out = cols["Timestamp"], cols["Request tokens"], cols["Response tokens"]
    for name in NUMERIC[1:]:
        check_non_negative(path, header, name, cols[name], "negative token count")
    check_span(ts, str(path))       # before the rebase, which would overflow past a year's span
    origin = float(np.floor(ts.min()))
    arrivals = spread_whole_seconds(ts - origin, seed)
    failed = out == 0
    return make_trace(arrivals, service_model.service_time(inp, out), failed,
                      variant=f"{len(header)}-column", origin_s=origin,
                      failed_count=int(failed.sum()), service_model=service_model.as_dict())


def _filter_mask(path: Path, header: list[str], options: dict) -> np.ndarray:
    wanted = [c for c, k in (("Model", "model"), ("Log Type", "log")) if k in options]
    require_columns(path, header, wanted, "burstgpt")
    frame = read_frame(path, wanted)
    keep = pl.Series(np.ones(frame.height, dtype=bool))
    if "model" in options:
        keep &= frame["Model"].str.to_lowercase() == options["model"].lower()
    if "log" in options:
        keep &= frame["Log Type"].str.to_lowercase().str.starts_with(options["log"].lower())
    return keep.fill_null(False).to_numpy()
