"""Azure LLM inference traces 2023 and 2024 (Splitwise / DynamoLLM; github.com/Azure/AzurePublicDataset).

Columns: TIMESTAMP (wall clock 'YYYY-MM-DD HH:MM:SS.fffffff', UTC; a 'Z' suffix is accepted,
and a UTC offset such as '+05:00' is applied), ContextTokens, GeneratedTokens. Arrivals are
seconds after the first request (which arrives at 0); meta start_time_of_day_s is the first
request's seconds since midnight UTC and meta start_time its ISO timestamp. Service time comes from the LLM service-time model (context
tokens in, generated tokens out). GeneratedTokens == 0 is not treated as a failure (the trace
records none).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from kpilot.errors import TraceError
from kpilot.traces.csvio import check_non_negative, column_label, read_frame, read_numeric, require_columns
from kpilot.traces.model import Trace, make_trace
from kpilot.traces.service_model import LlmServiceModel

SIGNATURE = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"}
TOKENS = ["ContextTokens", "GeneratedTokens"]
OPTIONS: set[str] = set()


def read_azure_llm(path: Path, header: list[str], options: dict, *, service_model: LlmServiceModel,
                   seed: int) -> Trace:
    """Read an Azure LLM inference CSV into a Trace (see module doc)."""
    require_columns(path, header, ["TIMESTAMP", *TOKENS], "azure-llm")
    frame = read_frame(path, ["TIMESTAMP", *TOKENS])
    ns = _parse_timestamps(path, header, frame.get_column("TIMESTAMP"))
    tokens = read_numeric(path, header, TOKENS, frame)
    for name in TOKENS:
        check_non_negative(path, header, name, tokens[name], "negative token count")
    first = int(ns.min())
    arrivals = (ns - first).astype(np.float64) / 1e9
    day_ns = 86_400 * 1_000_000_000
    start = np.datetime64(first, "ns")
    return make_trace(arrivals, service_model.service_time(tokens["ContextTokens"], tokens["GeneratedTokens"]),
                      None, start_time=str(start), start_time_of_day_s=(first % day_ns) / 1e9,
                      service_model=service_model.as_dict())


OFFSET = r"(?<sign>[+-])(?<hours>\d\d):?(?<minutes>\d\d)$"      # a UTC offset suffix, +05:00 or -0330


def _parse_timestamps(path: Path, header: list[str], raw: pl.Series) -> np.ndarray:
    """Nanoseconds since the epoch, UTC: a suffix Z is UTC, an offset +HH:MM is subtracted."""
    stripped = raw.str.strip_chars()
    text = stripped.str.replace(f"Z$|{OFFSET}", "").str.replace("T", " ")
    parsed = text.str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="ns", strict=False)
    bad = parsed.is_null()
    if bad.any():
        row = int(bad.arg_max())
        cell = raw[row]
        problem = "missing value" if not cell else f"bad timestamp {cell!r} (expected YYYY-MM-DD HH:MM:SS.fffffff)"
        raise TraceError(problem, path=str(path), line=row + 2, column=column_label(header, "TIMESTAMP"))
    offset = stripped.str.extract_groups(OFFSET).struct.unnest()
    sign = offset["sign"].replace_strict({"+": 1, "-": -1}, default=0, return_dtype=pl.Int64)
    minutes = offset["hours"].cast(pl.Int64) * 60 + offset["minutes"].cast(pl.Int64)
    offset_ns = (sign * minutes.fill_null(0)).to_numpy() * 60_000_000_000
    return parsed.cast(pl.Int64).to_numpy() - offset_ns
