"""`kpilot trace from-prometheus`: each Knative Service's recent traffic, read from queue-proxy's
request histogram in Prometheus, as one request-counts trace per Service (request_counts.py) for
`kpilot tune` and `kpilot evaluate`.

Two range queries, whatever the number of Services, with the bin width as their step, for the
histogram's _count and _sum (X below, selected by k8s_namespace_name="NS"; LB, the lookback, is 5
minutes, or twice a STEP over 150 s):

    sum by (LABEL) ((((last_over_time(X[LB]) - last_over_time(X[LB] offset STEP))
                       unless (resets(X[STEP]) > 0
                               or min_over_time(X[STEP]) < last_over_time(X[LB] offset STEP)))
                      or last_over_time(X[LB])))

each series' growth between its latest samples at the bin's end and one step earlier, a new pod's
series or a restarted queue-proxy's counted from zero (kpilot.promql: what a new pod served
before its first scrape is not lost). Prometheus >= 2.26. Bins are whole steps on the step's grid
(unix time a multiple of STEP), the last one ending at or before --end (default now); a sample at
time t covers (t - STEP, t], so its row's bin starts at t - STEP, and every bin of the range is a
row, 0 where nothing was served. The bins' counts add up to exactly what was scraped in the
range (increase(), which this replaced, extrapolated each bin from the samples inside it: counts
came back fractional, their total only near what was served); a request finished after a bin's
last scrape is counted in the next bin. Scrape at least once per bin (a longer interval keeps the
total, but leaves bins without a scrape at 0 and the next ones fuller). Another backend may
return fractions: each Service's counts are rounded cumulatively (its total kept; rounded bin by
bin, a sparse Service's fractions were lost), and a bin's mean duration is sum / count before
rounding. LABEL is kn_service_name (all of a Service's revisions together) or kn_revision_name
(`--by revision`); as for the operator, queue-proxy's series must carry it and k8s_namespace_name
(Knative exports them as resource attributes: relabel them from the pods' serving.knative.dev
labels and namespace; operator/README.md).
"""

from __future__ import annotations

import http.client
import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from kpilot.errors import ConfigError, TraceError
from kpilot.promql import window_increase
from kpilot.traces.model import MAX_SERVICE_S, MAX_SPAN_S

LABELS = {"service": "kn_service_name", "revision": "kn_revision_name"}
# Written beside the traces: what each file's name is (a Service's or a revision's) and where it
# runs, so that `kpilot tune` names the Service to annotate only when the file is one's.
SOURCES_FILE = "from-prometheus.json"
HISTOGRAM = "kn_serving_invocation_duration_seconds"
MAX_BIN_REQUESTS = 1e12      # a million requests a second for a week: beyond it, a broken series
MAX_POINTS = 11_000          # Prometheus refuses a range query of more points per series
_K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")     # a DNS-1123 label: Service, revision
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, option: str) -> float:
    """Seconds in `90s`, `15m`, `24h`, `7d`, `1w`."""
    match = _DURATION.match(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"expected a positive duration such as 90s, 15m, 24h or 7d, got {text!r}",
                          option=option)
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not seconds <= MAX_SPAN_S:       # 310 nines overflowed to inf, then to a traceback
        raise ConfigError(f"{text.strip()!r} is {seconds:.4g} s: at most {MAX_SPAN_S:.4g} s (a year)", option=option)
    return seconds


@dataclass
class ServiceTraffic:
    """One Service's (or revision's) bins over the whole range, empty ones included: start times
    (unix s, multiples of the step), request counts, mean durations (None without requests)."""
    name: str
    rows: list[tuple[int, int, float | None]] = field(default_factory=list)

    def csv(self) -> str:
        lines = ["time,requests,mean_duration_s"]
        for start, count, mean in self.rows:
            lines.append(f"{start},{count},{'' if mean is None else f'{mean:.6g}'}")
        return "\n".join(lines) + "\n"

    @property
    def requests(self) -> int:
        return sum(count for _, count, _ in self.rows)

    @property
    def busy_bins(self) -> int:
        return sum(1 for _, count, _ in self.rows if count > 0)

    @property
    def mean_duration_s(self) -> float:
        """Request-weighted mean duration over the bins that have one (NaN: none)."""
        timed = [(count, mean) for _, count, mean in self.rows if mean is not None]
        served = sum(count for count, _ in timed)
        return sum(count * mean for count, mean in timed) / served if served else float("nan")


def queries(namespace: str, label: str, step_s: int) -> tuple[str, str]:
    sel = f'k8s_namespace_name="{namespace}"'
    return tuple(f"sum by ({label}) ({window_increase(f'{HISTOGRAM}_{part}{{{sel}}}', step_s)})"
                 for part in ("count", "sum"))


def bins(since_s: float, end: float, step_s: int) -> tuple[int, int]:
    """(first bin start, end of the last bin): whole bins of `step_s` on the step's grid, the last
    one ending at or before `end`, covering at least `since_s`."""
    stop = int(math.floor(end / step_s)) * step_s
    return stop - int(math.ceil(since_s / step_s)) * step_s, stop


def is_k8s_name(text: str) -> bool:
    return bool(_K8S_NAME.fullmatch(text)) and len(text) <= 63


def check_query(url: str, namespace: str, *, since_s: float, end: float | None, step_s: float,
                by: str = "service", since_option: str = "--since") -> tuple[int, int, int]:
    """read_traffic's options, checked without asking Prometheus (so that a caller can check them
    before slower work, such as finding credentials): the first and past-the-last bin starts and
    the step."""
    if not is_k8s_name(namespace):
        raise ConfigError(f"not a Kubernetes namespace name: {namespace!r}", option="--namespace")
    if by not in LABELS:
        raise ConfigError(f"expected one of {', '.join(LABELS)}, got {by!r}", option="--by")
    if not (math.isfinite(step_s) and step_s >= 1 and step_s == int(step_s)):
        raise ConfigError(f"must be a whole number of seconds >= 1, got {step_s:g}", option="--step")
    step = int(step_s)
    if end is None:
        end = time.time() - step
    if not (math.isfinite(end) and end > 0):
        raise ConfigError(f"expected unix seconds, got {end}", option="--end")
    try:
        parsed = urllib.parse.urlparse(url)
    except ValueError as exc:
        raise ConfigError(f"not a URL ({exc}): {url!r}", option="--url") from None
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"expected an http:// or https:// URL, got {url!r}", option="--url")
    first, stop = bins(since_s, end, step)
    n = (stop - first) // step
    if n > MAX_POINTS:
        raise ConfigError(f"{n:,} bins: Prometheus answers at most {MAX_POINTS:,} per query; a longer "
                          f"--step or a shorter {since_option}", option=since_option)
    return first, stop, step


def read_traffic(url: str, namespace: str, *, since_s: float, end: float | None, step_s: float, by: str = "service",
                 token: str | None = None, timeout_s: float = 30.0, allow_empty: bool = False,
                 since_option: str = "--since") -> list[ServiceTraffic]:
    """Every Service's (or revision's) traffic in the namespace over the `since_s` before `end`
    (unix s; None: a step before now, so that the last bin has been scraped), in whole bins of
    `step_s` seconds aligned to the step (so runs on different days bin alike); a bin without
    requests is a row of 0. No requests at all is an error, or with `allow_empty` an empty list."""
    first, stop, step = check_query(url, namespace, since_s=since_s, end=end, step_s=step_s, by=by,
                                    since_option=since_option)
    label = LABELS[by]
    count_q, sum_q = queries(namespace, label, step)
    # A sample at t is the increase over (t - step, t]: the bin starting at t - step.
    counts = _query_range(url, count_q, label, first + step, stop, step, token, timeout_s)
    sums = _query_range(url, sum_q, label, first + step, stop, step, token, timeout_s)
    for name in counts:
        if not is_k8s_name(name):
            raise ConfigError(f"a series has {label}={name!r}, which is not a Kubernetes name; check "
                              "the relabeling of queue-proxy's series", option="--url")
    traffic = []
    for name in sorted(counts):
        rows, served, counted = [], 0.0, 0
        for start in range(first, stop, step):
            raw = counts[name].get(float(start + step), 0.0)
            if raw > MAX_BIN_REQUESTS:
                raise ConfigError(f"{name} served {raw:.3g} requests in the {step} s from {start}: not a "
                                  "request count", option="--url")
            served += raw                      # rounded cumulatively: fractions add up across bins
            count = int(round(served)) - counted
            counted += count
            total = sums.get(name, {}).get(float(start + step))
            mean = total / raw if count > 0 and total is not None and total > 0 else None
            if mean is not None and not mean <= MAX_SERVICE_S:     # the request-counts reader's limit
                raise ConfigError(f"{name}'s requests in the {step} s from {start} took {mean:.3g} s on average: "
                                  f"not a duration (at most {MAX_SERVICE_S:g} s, a week)", option="--url")
            rows.append((start, count, mean))
        entry = ServiceTraffic(name, rows)
        if entry.requests:
            traffic.append(entry)
    if not traffic and not allow_empty:
        raise ConfigError(f"no requests in namespace {namespace!r} between {first} and {stop}: "
                          f"the query found {'no series' if not counts else 'series without requests'}; "
                          f"queue-proxy's {HISTOGRAM}_count must carry {label} and k8s_namespace_name",
                          option="--namespace")
    return traffic


class _SameOriginAuth(urllib.request.HTTPRedirectHandler):
    """Follows redirects as urllib does, carrying the bearer token only to the same scheme, host
    and port: a Prometheus behind a proxy that redirects elsewhere (a login page) does not get it."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        auth = req.unredirected_hdrs.get("Authorization")
        old_origin, new_origin = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
        if new is not None and auth and (old_origin.scheme, old_origin.netloc) == (new_origin.scheme, new_origin.netloc):
            new.add_unredirected_header("Authorization", auth)
        return new


def _query_range(url: str, query: str, label: str, start: int, end: int, step_s: int,
                 token: str | None, timeout_s: float) -> dict[str, dict[float, float]]:
    """`label`'s value -> {sample time: value} for a range query; one clear error when it fails."""
    params = urllib.parse.urlencode({"query": query, "start": str(start), "end": str(end),
                                     "step": str(step_s)})
    request = urllib.request.Request(f"{url.rstrip('/')}/api/v1/query_range?{params}")
    if token:    # not sent on where a redirect leads, unless it is the same origin (_SameOriginAuth)
        request.add_unredirected_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.build_opener(_SameOriginAuth).open(request, timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        detail = _error_detail(exc)
        raise ConfigError(f"Prometheus answered HTTP {exc.code}{detail}", option="--url") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ConfigError(f"cannot reach Prometheus at {url}: {reason}", option="--url") from None
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):       # RecursionError: arrays nested thousands deep
        raise ConfigError(f"{url} did not answer with Prometheus's JSON (is it the Prometheus URL?)",
                          option="--url") from None
    if not isinstance(doc, dict) or doc.get("status") != "success":
        error = doc.get("error", doc.get("status")) if isinstance(doc, dict) else "not an object"
        raise ConfigError(f"Prometheus query failed: {error}", option="--url")
    try:
        return _matrix(doc.get("data"), label)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ConfigError(f"Prometheus's answer is not a range query's matrix ({exc})", option="--url") from None


def _matrix(data, label: str) -> dict[str, dict[float, float]]:
    """`label`'s value -> {sample time: value} from a query_range answer's `data`; TypeError or
    ValueError on anything else. Samples for one value of `label` (several series) are added up;
    NaN and negative samples (our queries return none; a backend's own reading) count as nothing."""
    if not isinstance(data, dict) or data.get("resultType") != "matrix":
        kind = data.get("resultType") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"expected a matrix, got {kind!r}")
    out: dict[str, dict[float, float]] = {}
    for series in data.get("result") or []:
        name = (series.get("metric") or {}).get(label)
        if not name:
            continue          # series without the label: nothing to attribute them to
        if not isinstance(name, str):
            raise TypeError(f"{label} is {name!r}, not a string")
        values = out.setdefault(name, {})
        for t, v in series.get("values") or []:
            value = float(v)
            if math.isfinite(value) and value > 0:
                values[float(t)] = values.get(float(t), 0.0) + value
    return out


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        return f": {json.loads(exc.read()).get('error', '')}"
    except (ValueError, AttributeError, OSError, RecursionError):
        return ""


_RECORD_SHAPE = '{"files": {"NAME.csv": {"by": "service" or "revision", "namespace": NAMESPACE}, ...}}'


def _recorded_files(folder: Path) -> dict | None:
    """The `files` of `folder`'s SOURCES_FILE, None where there is none; TraceError for one that
    cannot be read (ignoring it would have `kpilot tune` take a revision's file for a Service's,
    and from-prometheus replace the record of earlier runs)."""
    record = folder / SOURCES_FILE
    try:
        doc = json.loads(record.read_text())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TraceError(f"cannot read ({exc.strerror or type(exc).__name__})", path=str(record)) from None
    except (ValueError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise TraceError(f"not valid JSON ({why}); from-prometheus writes {_RECORD_SHAPE}",
                         path=str(record)) from None
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, dict):
        raise TraceError(f"not what from-prometheus writes: {_RECORD_SHAPE}", path=str(record))
    return files


def recorded_sources(folder: Path, names: list[str], by: str, namespace: str) -> str:
    """SOURCES_FILE's text for `folder` after this run: the entries already there, and this run's
    files (NAME.csv) with what their name is and the namespace."""
    files = dict(_recorded_files(folder) or {})
    files.update({f"{name}.csv": {"by": by, "namespace": namespace} for name in names})
    return json.dumps({"files": dict(sorted(files.items()))}, indent=1) + "\n"


def source_of(trace_path: Path) -> dict | None:
    """What `kpilot trace from-prometheus` recorded of this file ({"by", "namespace"}), or None
    where the folder has no record of it (TraceError for a record that cannot be read)."""
    record = trace_path.parent / SOURCES_FILE
    files = _recorded_files(trace_path.parent)
    if files is None:
        return None
    entry = files.get(trace_path.name)
    if entry is None:
        return None
    if not (isinstance(entry, dict) and entry.get("by") in LABELS
            and isinstance(entry.get("namespace"), (str, type(None)))):
        raise TraceError(f"the entry for {trace_path.name} is not what from-prometheus writes: {_RECORD_SHAPE}",
                         path=str(record))
    return entry
