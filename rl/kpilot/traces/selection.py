"""Choosing functions in multi-function traces (Azure Functions 2019 and 2021).

Options (in the trace spec, e.g. `invocations.csv?function=0951cc` or `invocations.csv?top=5`):
    function=PREFIX[+PREFIX...]  every function whose HashFunction / func id starts with a prefix
    top=K                        the K functions with the most invocations (ties: file order)
Without either, all functions are kept and their requests merged into one aggregate trace.
"""

from __future__ import annotations

import numpy as np

from kpilot.errors import TraceError

OPTIONS = {"function", "top"}


def select_functions(ids: np.ndarray, counts: np.ndarray, options: dict, source: str) -> np.ndarray:
    """Boolean mask over the distinct function `ids` (with their invocation `counts`)."""
    if "function" in options and "top" in options:
        raise TraceError("use either function= or top=, not both", path=source)
    if "function" in options:
        prefixes = [p for p in options["function"].split("+") if p]
        if not prefixes:
            raise TraceError("function= names no function id (function=PREFIX[+PREFIX...])", path=source)
        keep = np.zeros(len(ids), dtype=bool)
        text = ids.astype(str)
        for prefix in prefixes:
            # An id given whole is that function alone: Huawei's numeric ids are prefixes of
            # others (function=1 would take 1, 10-19 and 100-199).
            hit = text == prefix
            if not hit.any():
                hit = np.char.startswith(text, prefix)
            if not hit.any():
                raise TraceError(f"no function id starts with {prefix!r}", path=source)
            keep |= hit
        return keep
    if "top" in options:
        try:
            k = int(options["top"])
        except ValueError:
            k = 0
        if k < 1:
            raise TraceError(f"top={options['top']!r} must be a positive integer", path=source)
        keep = np.zeros(len(ids), dtype=bool)
        keep[np.argsort(-np.asarray(counts), kind="stable")[:k]] = True
        return keep
    return np.ones(len(ids), dtype=bool)


def selection_label(options: dict) -> str:
    """Human-readable description of the selection for trace metadata."""
    if "function" in options:
        return f"function={options['function']}"
    if "top" in options:
        return f"top={options['top']}"
    return "all"
