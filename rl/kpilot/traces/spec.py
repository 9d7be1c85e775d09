"""Trace specs: the one string syntax every command accepts where a trace is expected.

    PATH                          a trace file, format auto-detected from its header
    PATH?key=value&key=value      the same, with reader options (`,` also separates options)
    synthetic:NAME[:key=value,...]  a generated workload (see `kpilot.traces.synthetic`)

A path that exists as written is always a path, even if it contains `?`. Values are kept as
strings; each reader converts and validates the keys it knows and rejects the others.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from kpilot.errors import TraceError

SYNTHETIC_PREFIX = "synthetic:"


@dataclass(frozen=True)
class TraceSpec:
    """A parsed spec: either `path` or `synthetic` (a workload name) is set, plus options."""

    path: Path | None
    synthetic: str | None
    options: dict[str, str] = field(default_factory=dict)
    text: str = ""


def _parse_options(text: str, spec: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in filter(None, re.split(r"[,&]", text)):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TraceError(f"bad option {item!r} in trace spec {spec!r} (expected key=value)")
        options[key.strip()] = value.strip()
    return options


def parse_spec(spec: str | Path) -> TraceSpec:
    """Split a spec into a path or synthetic workload name and its options."""
    text = str(spec)
    if isinstance(spec, Path) or Path(text).exists():
        return TraceSpec(Path(text), None, {}, text)
    if text.startswith(SYNTHETIC_PREFIX):
        name, _, opts = text[len(SYNTHETIC_PREFIX):].partition(":")
        if not name:
            raise TraceError(f"trace spec {text!r} names no synthetic workload")
        return TraceSpec(None, name, _parse_options(opts, text), text)
    path, _, opts = text.partition("?")
    return TraceSpec(Path(path), None, _parse_options(opts, text), text)


def check_options(options: dict[str, str], known: set[str], what: str, source: str) -> None:
    """Reject option keys a reader does not understand, naming the ones it does."""
    unknown = sorted(set(options) - known)
    if unknown:
        valid = ", ".join(sorted(known)) or "none"
        raise TraceError(f"unknown option(s) {', '.join(unknown)} for {what} (valid: {valid})",
                         path=source)


def float_option(options: dict[str, str], key: str, default, source: str):
    """A numeric option, or `default` when absent."""
    if key not in options:
        return default
    try:
        value = float(options[key])
    except ValueError:
        raise TraceError(f"option {key}={options[key]!r} is not a number", path=source) from None
    if not math.isfinite(value):
        raise TraceError(f"option {key}={options[key]!r} is not a finite number", path=source)
    return value
