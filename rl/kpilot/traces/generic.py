"""Generic request CSV, for traces from anywhere else.

Columns (by name, any order, extra columns ignored):
    timestamp                       arrival, seconds (any origin; rebased to the whole second of the
                                    earliest request, meta origin_s); the time of day is read from it
                                    as unix seconds mod 86400, as request-counts reads its bins
                                    (timestamps from 0 start at midnight)
    duration                        service seconds, or else
    input_tokens, output_tokens     token counts, turned into service time by the LLM model
    failed (optional)               1/0, true/false, yes/no
If every timestamp is a whole second they are spread within their second like BurstGPT's (option
spread=0 turns that off). Option unit=ms (or us, ns) reads timestamps and durations in that unit;
epoch timestamps that only make sense in a finer unit (past the year 5000 as seconds) are refused
without it, as a trace a thousand times too long would be replayed otherwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kpilot.errors import TraceError
from kpilot.traces.csvio import (check_non_negative, column_label, read_frame, read_numeric,
                                 require_columns)
from kpilot.traces.model import Trace, check_span, make_trace
from kpilot.traces.service_model import LlmServiceModel
from kpilot.traces.spreading import spread_whole_seconds

SIGNATURE = {"timestamp"}
OPTIONS = {"spread", "unit"}
UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
LATEST_SECONDS = 1e11      # unix seconds in the year 5138: larger epoch timestamps are in a finer unit
TRUE, FALSE = {"1", "true", "yes", "t", "y"}, {"0", "false", "no", "f", "n", ""}


def read_generic(path: Path, header: list[str], options: dict, *, service_model: LlmServiceModel,
                 seed: int) -> Trace:
    """Read a generic request CSV into a Trace (see module doc)."""
    if "duration" in header:
        work = ["duration"]
    elif "input_tokens" in header or "output_tokens" in header:
        work = ["input_tokens", "output_tokens"]
    else:
        raise TraceError("missing column 'duration' (or 'input_tokens' and 'output_tokens') "
                         "required by the generic format", path=str(path), line=1)
    require_columns(path, header, ["timestamp", *work], "generic")
    cols = read_numeric(path, header, ["timestamp", *work])
    for name in work:
        check_non_negative(path, header, name, cols[name],
                           "negative duration" if name == "duration" else "negative token count")
    unit = options.get("unit", "s").strip().lower()
    if unit not in UNITS:
        raise TraceError(f"option unit={options['unit']!r}: expected one of {', '.join(UNITS)}", path=str(path))
    ts = cols["timestamp"] * UNITS[unit]
    if unit == "s" and len(ts) and float(np.min(ts)) > LATEST_SECONDS:
        raise TraceError(f"timestamps from {float(np.min(ts)):.0f} are past the year 5000 as seconds: give their "
                         f"unit, e.g. {path.name}?unit=ms (durations are read in it too)", path=str(path))
    if work == ["duration"]:
        service = cols["duration"] * UNITS[unit]
        model = None
    else:
        service = service_model.service_time(cols["input_tokens"], cols["output_tokens"])
        model = service_model.as_dict()
    failed = _failed_column(path, header) if "failed" in header else None
    check_span(ts, str(path))       # before the rebase, which would overflow past a year's span
    origin = float(np.floor(ts.min()))
    arrivals = ts - origin
    spread = options.get("spread", "1").strip().lower()
    if spread not in TRUE | FALSE - {""}:
        raise TraceError(f"option spread={options['spread']!r}: expected 1/0, true/false or yes/no", path=str(path))
    if spread in TRUE:
        arrivals = spread_whole_seconds(arrivals, seed)
    return make_trace(arrivals, service, failed, origin_s=origin, service_model=model,
                      start_time_of_day_s=origin % 86400.0)


def _failed_column(path: Path, header: list[str]) -> np.ndarray:
    text = read_frame(path, ["failed"]).get_column("failed").fill_null("").str.strip_chars().str.to_lowercase()
    known = text.is_in(list(TRUE | FALSE))
    if not known.all():
        row = int((~known).arg_max())
        raise TraceError(f"failed flag {text[row]!r} is not one of 1/0, true/false, yes/no",
                         path=str(path), line=row + 2, column=column_label(header, "failed"))
    return text.is_in(list(TRUE)).to_numpy()
