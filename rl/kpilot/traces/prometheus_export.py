"""`kpilot trace from-prometheus`: each Knative Service's recent traffic, read from queue-proxy's
request histogram in Prometheus, as one request-counts trace per Service (request_counts.py) for
`kpilot tune` and `kpilot evaluate`.

Two range queries, whatever the number of Services, with the bin width as their step:

    sum by (LABEL) (increase(kn_serving_invocation_duration_seconds_count{k8s_namespace_name="NS"}[STEP]))
    sum by (LABEL) (increase(kn_serving_invocation_duration_seconds_sum{k8s_namespace_name="NS"}[STEP]))

A sample at time t covers (t - STEP, t], so its row's bin starts at t - STEP. increase()
extrapolates to the range's edges, so counts come back fractional: a bin's count is rounded, its
mean duration is sum / count before rounding. LABEL is kn_service_name (all of a Service's
revisions together) or kn_revision_name (`--by revision`); as for the operator, queue-proxy's
series must carry it and k8s_namespace_name (Knative exports them as resource attributes: relabel
them from the pods' serving.knative.dev labels and namespace; operator/README.md).
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from kpilot.errors import ConfigError

LABELS = {"service": "kn_service_name", "revision": "kn_revision_name"}
HISTOGRAM = "kn_serving_invocation_duration_seconds"
MAX_POINTS = 11_000          # Prometheus refuses a range query of more points per series
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, option: str) -> float:
    """Seconds in `90s`, `15m`, `24h`, `7d`, `1w`."""
    match = _DURATION.match(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"expected a positive duration such as 90s, 15m, 24h or 7d, got {text!r}",
                          option=option)
    return float(match.group(1)) * _UNIT_S[match.group(2)]


@dataclass
class ServiceTraffic:
    """One Service's (or revision's) bins: start times, request counts, mean durations."""
    name: str
    rows: list[tuple[float, int, float | None]] = field(default_factory=list)

    def csv(self) -> str:
        lines = ["time,requests,mean_duration_s"]
        for start, count, mean in self.rows:
            lines.append(f"{start:.0f},{count},{'' if mean is None else f'{mean:.6g}'}")
        return "\n".join(lines) + "\n"

    @property
    def requests(self) -> int:
        return sum(count for _, count, _ in self.rows)


def queries(namespace: str, label: str, step_s: float) -> tuple[str, str]:
    sel = f'k8s_namespace_name="{namespace}"'
    return tuple(f"sum by ({label}) (increase({HISTOGRAM}_{part}{{{sel}}}[{step_s:.0f}s]))"
                 for part in ("count", "sum"))


def read_traffic(url: str, namespace: str, *, start: float, end: float, step_s: float, by: str = "service",
                 token: str | None = None, timeout_s: float = 30.0) -> list[ServiceTraffic]:
    """Every Service's (or revision's) traffic in the namespace between start and end (unix s)."""
    if by not in LABELS:
        raise ConfigError(f"expected one of {', '.join(LABELS)}, got {by!r}", option="--by")
    if not step_s >= 1:
        raise ConfigError(f"must be at least 1 second, got {step_s:g}", option="--step")
    if (end - start) / step_s > MAX_POINTS:
        raise ConfigError(f"{(end - start) / step_s:,.0f} bins: Prometheus answers at most {MAX_POINTS:,} "
                          "per query; a longer --step or a shorter --since", option="--since")
    label = LABELS[by]
    count_q, sum_q = queries(namespace, label, step_s)
    counts = _query_range(url, count_q, label, start, end, step_s, token, timeout_s)
    sums = _query_range(url, sum_q, label, start, end, step_s, token, timeout_s)
    traffic = []
    for name in sorted(counts):
        per_bin = sums.get(name, {})
        rows = []
        for t, n in sorted(counts[name].items()):
            count = int(round(n))
            if count <= 0:
                continue          # an empty bin is left out (the reader's bins need not be contiguous)
            total = per_bin.get(t)
            mean = total / n if total is not None and math.isfinite(total) and total > 0 else None
            rows.append((t - step_s, count, mean))
        if rows:
            traffic.append(ServiceTraffic(name, rows))
    if not traffic:
        raise ConfigError(f"no requests in namespace {namespace!r} between {start:.0f} and {end:.0f}: "
                          f"the query found {'no series' if not counts else 'series without requests'}; "
                          f"queue-proxy's {HISTOGRAM}_count must carry {label} and k8s_namespace_name",
                          option="--namespace")
    return traffic


def _query_range(url: str, query: str, label: str, start: float, end: float, step_s: float,
                 token: str | None, timeout_s: float) -> dict[str, dict[float, float]]:
    """`label`'s value -> {sample time: value} for a range query; one clear error when it fails."""
    params = urllib.parse.urlencode({"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                     "step": f"{step_s:g}"})
    request = urllib.request.Request(f"{url.rstrip('/')}/api/v1/query_range?{params}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            doc = json.load(response)
    except urllib.error.HTTPError as exc:
        detail = _error_detail(exc)
        raise ConfigError(f"Prometheus answered HTTP {exc.code}{detail}", option="--url") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(f"cannot reach Prometheus at {url}: {reason}", option="--url") from None
    except ValueError:
        raise ConfigError(f"{url} did not answer with Prometheus's JSON (is it the Prometheus URL?)",
                          option="--url") from None
    if not isinstance(doc, dict) or doc.get("status") != "success":
        error = doc.get("error", doc.get("status")) if isinstance(doc, dict) else "not an object"
        raise ConfigError(f"Prometheus query failed: {error}", option="--url")
    data = doc.get("data") or {}
    if data.get("resultType") != "matrix":
        raise ConfigError(f"expected a matrix from a range query, got {data.get('resultType')!r}",
                          option="--url")
    out: dict[str, dict[float, float]] = {}
    for series in data.get("result", []):
        name = (series.get("metric") or {}).get(label)
        if not name:
            continue          # series without the label: nothing to attribute them to
        values = out.setdefault(name, {})
        for t, v in series.get("values", []):
            value = float(v)
            if math.isfinite(value):
                values[float(t)] = values.get(float(t), 0.0) + value
    return out


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        return f": {json.loads(exc.read()).get('error', '')}"
    except (ValueError, AttributeError, OSError):
        return ""
