"""The one entry point: a trace spec (path or synthetic workload) -> Trace.

Formats are detected from the CSV header (the first format whose signature columns are all
present, in FORMATS order) or forced with `fmt`. huawei-requests has the weakest signature (day,
time, shared with the cold-start tables), so it is tried after every other format. Every Trace
gets meta source, format, checksum (sha256 of the input file(s)), span_s, seed and rows.
"""

from __future__ import annotations

from pathlib import Path

from kpilot.errors import ConfigError, TraceError
from kpilot.traces import azure_functions_2019 as az19, azure_functions_2021 as az21
from kpilot.traces import azure_llm, burstgpt, coldstart, generic, huawei_requests as hw, request_counts
from kpilot.traces.csvio import checksum_in_background, read_header
from kpilot.traces.model import Trace, check_limits
from kpilot.traces.service_model import LlmServiceModel
from kpilot.traces.spec import check_options, float_option, parse_spec
from kpilot.traces.synthetic import WORKLOADS, synthetic_trace

FORMATS: dict[str, str] = {
    "burstgpt": "BurstGPT CSV, 6- or 8-column (Timestamp, ..., Request tokens, Response tokens, ...)",
    "azure-llm": "Azure LLM inference 2023/2024 (TIMESTAMP, ContextTokens, GeneratedTokens)",
    "azure-functions-2021": "Azure Functions 2021 invocations (app, func, end_timestamp, duration)",
    "azure-functions-2019": "Azure Functions 2019 per-minute counts + durations percentiles file",
    "huawei-coldstart": "Huawei 2025 cold-start table (a cold-start distribution, not a request trace)",
    "huawei-per-request": "Huawei 2025 per-request table (time_worker, totalCost_worker seconds)",
    "generic": "CSV with timestamp and duration, or input_tokens and output_tokens; optional failed",
    "request-counts": ("requests per time bin with their mean duration (time, requests, mean_duration_s); "
                       "`kpilot trace from-prometheus` writes it"),
    "huawei-requests": ("Huawei 2023/2025 wide request counts per minute or second "
                        "(day, time, one column per function)"),
    "synthetic": "generated workload: synthetic:NAME[:key=value,...], NAME in " + "/".join(WORKLOADS),
}

SIGNATURES = {
    "burstgpt": burstgpt.SIGNATURE,
    "azure-llm": azure_llm.SIGNATURE,
    "azure-functions-2021": az21.SIGNATURE,
    "azure-functions-2019": az19.SIGNATURE,
    "huawei-coldstart": coldstart.SIGNATURE,
    "huawei-per-request": hw.PER_REQUEST_SIGNATURE,
    "generic": generic.SIGNATURE,
    "request-counts": request_counts.SIGNATURE,
    "huawei-requests": hw.WIDE_SIGNATURE,
}

READERS = {
    "burstgpt": (burstgpt.read_burstgpt, burstgpt.OPTIONS),
    "azure-llm": (azure_llm.read_azure_llm, azure_llm.OPTIONS),
    "azure-functions-2021": (az21.read_azure_functions_2021, az21.OPTIONS),
    "azure-functions-2019": (az19.read_azure_functions_2019, az19.OPTIONS),
    "huawei-per-request": (hw.read_huawei_per_request, hw.PER_REQUEST_OPTIONS),
    "generic": (generic.read_generic, generic.OPTIONS),
    "request-counts": (request_counts.read_request_counts, request_counts.OPTIONS),
    "huawei-requests": (hw.read_huawei_requests, hw.WIDE_OPTIONS),
}
LLM_OPTIONS = {"overhead", "prefill", "decode"}  # override the service model from the spec
LLM_FORMATS = {"burstgpt", "azure-llm", "generic"}


def detect_format(path: str | Path, header: list[str] | None = None) -> str:
    """The format name for a CSV file, from its header; TraceError if none matches."""
    path = Path(path)
    header = read_header(path) if header is None else header
    for name, signature in SIGNATURES.items():
        if signature <= set(header):
            return name
    if az19.DURATIONS_SIGNATURE <= set(header):
        raise TraceError("this is an Azure Functions 2019 durations file; pass the invocations file "
                         "(durations are found beside it or with ?durations=PATH)", path=str(path))
    if hw.METADATA_SIGNATURE <= set(header):
        raise TraceError("this is the Huawei 2025 runtime/trigger-type table (one row per function, no "
                         "requests); pass a request table (huawei-requests or huawei-per-request)",
                         path=str(path))
    lowered = {h.strip().lower() for h in header}
    near = next((name for name, signature in SIGNATURES.items() if {c.lower() for c in signature} <= lowered), None)
    if near is not None:     # "Timestamp,Duration": column names are matched exactly
        raise TraceError(f"unknown trace format (header: {', '.join(header[:8])}): column names are matched "
                         f"exactly; written as {', '.join(sorted(SIGNATURES[near]))} they would be the {near} "
                         "format's", path=str(path), line=1)
    raise TraceError(f"unknown trace format (header: {', '.join(header[:8])}); known formats: "
                     f"{', '.join(FORMATS)}", path=str(path), line=1)


def resolve_format(path: Path, fmt: str | None, header: list[str]) -> str:
    """`fmt` validated, or the detected format."""
    if fmt is None:
        return detect_format(path, header)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; known formats: {', '.join(FORMATS)}", option="--format")
    return fmt


def load_trace(spec: str | Path, fmt: str | None = None, *, service_model: LlmServiceModel | None = None,
               seed: int = 0) -> Trace:
    """Load a trace file or generate a synthetic workload (see `kpilot.traces.spec` for the syntax)."""
    parsed = parse_spec(spec)
    if parsed.synthetic is not None:
        if fmt not in (None, "synthetic"):
            raise TraceError(f"--format {fmt} does not apply to {parsed.text!r}")
        trace = synthetic_trace(parsed.synthetic, parsed.options, seed)
        check_limits(trace, parsed.text)
        trace.meta.update(rows=len(trace), seed=int(trace.meta["params"]["seed"]))
        return trace
    path = parsed.path
    header = read_header(path)
    name = resolve_format(path, fmt, header)
    if name == "huawei-coldstart":
        raise TraceError("a cold-start table is not a request trace; use it as the simulator's "
                         "cold-start distribution: --cold-start PATH", path=str(path))
    if name == "synthetic":
        raise TraceError("--format synthetic needs a synthetic:NAME spec", path=str(path))
    reader, known = READERS[name]
    # A generic file with a duration column takes its service times from it: no LLM model to set.
    llm = name in LLM_FORMATS and not (name == "generic" and "duration" in header)
    check_options(parsed.options, known | (LLM_OPTIONS if llm else set()), name, str(path))
    model = _service_model(service_model or LlmServiceModel(), parsed.options, str(path)) if llm else None
    checksum = checksum_in_background(path)
    trace = reader(path, header, parsed.options, service_model=model, seed=seed)
    check_limits(trace, str(path))
    trace.meta.setdefault("checksum", checksum.result())
    trace.meta.setdefault("span_s", float(trace.span_s))
    trace.meta.update(source=parsed.text, format=name, seed=seed, rows=len(trace),
                      failed=int(trace.failed.sum()))
    return trace


def _service_model(base: LlmServiceModel, options: dict, source: str) -> LlmServiceModel:
    values = {key: float_option(options, key, default, source) for key, default in
              (("overhead", base.overhead_s), ("prefill", base.prefill_s_per_token),
               ("decode", base.decode_s_per_token))}
    negative = [f"{key}={options[key]}" for key, value in values.items() if value < 0]
    if negative:
        raise TraceError(f"option {negative[0]} must be non-negative (seconds)", path=source)
    return LlmServiceModel(overhead_s=values["overhead"], prefill_s_per_token=values["prefill"],
                           decode_s_per_token=values["decode"])
