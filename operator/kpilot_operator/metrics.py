"""Metrics adapters: a fixed number of PromQL queries per tick, or the PodAutoscaler status.

Prometheus (>= 2.26; Knative >= 1.19 OpenTelemetry metric names): NINE instant queries per
tick and namespace, whatever the number of services; each returns one series per revision
(`kn_revision_name`). The queue-proxy series must carry `kn_revision_name` (relabel it from the
pod's serving.knative.dev/revision label in the scrape config). The request rate and latencies
are over what queue-proxy's counters grew by in the window (the decision interval, 30 s at least:
kpilot.promql), which needs a scrape per window. A revision without queue-proxy series (none
scraped in kpilot.promql's lookback, 5 minutes or twice the window: scaled to zero) has request
rate and latencies 0; one without autoscaler series has no observation (it is held, then falls
back).

Kubernetes (no Prometheus): PA status.actualScale / desiredScale only, through
kpilot.observation.pod_autoscaler_readings (which `kpilot evaluate --metrics kubernetes` replays a
policy through): the autoscaler's own decision is inverted for concurrency (stable = panic =
desiredScale x target x utilization, the most it can have observed when it asked for that many
pods; utilization as `Holder.utilization` resolves it: the revision's
target-utilization-percentage, else config-autoscaler's container-concurrency-target-percentage,
else Knative's default 70 %); request rate and latencies read 0. A
degraded mode (operator/README.md has what it costs): use Prometheus in production.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

import aiohttp

from kpilot.observation import KNATIVE_DEFAULT_UTILIZATION, pod_autoscaler_readings
from kpilot.promql import window_increase
from kpilot_operator.annotations import KNATIVE_DEFAULT_TARGET, Holder

HISTOGRAM = "kn_serving_invocation_duration_seconds"


def _per_second(part: str) -> str:
    """A revision's growth of the histogram's `part` over the window / its seconds, as the simulator
    counts the request rate (completions in the last decision interval / the interval)."""
    return f"sum by (kn_revision_name) ({{{part}}}) / {{ws}}"


# field -> PromQL template; {sel} is the namespace matcher, {ws} the window's seconds, and {count},
# {sum} and {bucket} what each of the histogram's series grew by over the window (kpilot.promql: a
# new pod or a restarted queue-proxy counted from zero; rate() read 0 where the window held one
# scrape).
QUERIES: dict[str, str] = {
    "concurrency_stable": 'max by (kn_revision_name) (kn_revision_concurrency_stable{{{sel}}})',
    "concurrency_panic": 'max by (kn_revision_name) (kn_revision_concurrency_panic{{{sel}}})',
    "ready_pods": 'max by (kn_revision_name) (kn_revision_pods_count{{{sel}}})',
    "desired_pods": 'max by (kn_revision_name) (kn_revision_pods_desired{{{sel}}})',
    "panic": 'max by (kn_revision_name) (kn_revision_panic_mode{{{sel}}})',
    "sample_time": 'max by (kn_revision_name) (timestamp(kn_revision_concurrency_stable{{{sel}}}))',
    "request_rate": _per_second("count"),
    "latency_sum_rate": _per_second("sum"),
    "latency_p95_s": "histogram_quantile(0.95, sum by (kn_revision_name, le) ({bucket}))",
}
AUTOSCALER_FIELDS = ("concurrency_stable", "concurrency_panic", "ready_pods", "desired_pods", "panic")
REQUEST_FIELDS = ("request_rate", "latency_sum_rate", "latency_p95_s")   # queue-proxy series
QUERIES_PER_TICK = len(QUERIES)


def without_request_series(series: dict[str, dict[str, float]]) -> list[str]:
    """Revisions with ready pods for which the queue-proxy queries found no series at all: their
    request rate and latency read as 0. Right for a revision that never served a request; on a
    busy one it means its queue-proxy was not scraped in kpilot.promql's lookback (5 minutes, or
    twice the window), or the queue-proxy series lack the kn_revision_name / k8s_namespace_name
    labels."""
    seen = set().union(*(series.get(f, {}) for f in REQUEST_FIELDS))
    return sorted(rev for rev, pods in series.get("ready_pods", {}).items() if pods > 0 and rev not in seen)


class MetricsUnavailable(Exception):
    """The metrics source could not be read this tick."""


def promql(field: str, namespace: str, window_s: float) -> str:
    seconds = max(int(window_s), 30)
    sel = f'k8s_namespace_name="{namespace}"'
    grew = {part: window_increase(f"{HISTOGRAM}_{part}{{{sel}}}", seconds)
            for part in ("count", "sum", "bucket")}
    return QUERIES[field].format(sel=sel, ws=seconds, **grew)


def _nan_as_zero(value: float) -> float:
    """Prometheus answers NaN for 0 / 0 (a latency or quantile of a window without requests): 0, as
    the simulator reads it. An infinite value stays one: no observation (`reconcile.usable`), where
    read as 0 it told the policy a revision had no load."""
    return 0.0 if math.isnan(value) else value


def assemble(series: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per-revision readings from per-query results; revisions need every autoscaler series."""
    revisions = set.intersection(*(set(series[f]) for f in AUTOSCALER_FIELDS))
    readings = {}
    for rev in revisions:
        r = {f: series[f][rev] for f in AUTOSCALER_FIELDS}
        r["starting_pods"] = max(0.0, r["desired_pods"] - r["ready_pods"])
        rate = _nan_as_zero(series["request_rate"].get(rev, 0.0))
        r["request_rate"] = rate
        r["latency_mean_s"] = _nan_as_zero(series["latency_sum_rate"].get(rev, 0.0) / rate) if rate > 0 else 0.0
        r["latency_p95_s"] = _nan_as_zero(series["latency_p95_s"].get(rev, 0.0))
        if rev in series["sample_time"]:
            r["sample_time"] = series["sample_time"][rev]
        readings[rev] = r
    return readings


@dataclass
class PrometheusMetrics:
    url: str
    timeout_s: float = 5.0
    token: str | None = None
    session: aiohttp.ClientSession | None = None
    unseen_requests: list[str] = field(default_factory=list)   # the last read's without_request_series

    async def _query(self, session: aiohttp.ClientSession, query: str) -> dict[str, float]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        async with session.get(f"{self.url}/api/v1/query", params={"query": query}, headers=headers,
                               timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as rsp:
            if rsp.status != 200:
                raise MetricsUnavailable(f"Prometheus answered HTTP {rsp.status} for {query[:60]}")
            doc = await rsp.json(content_type=None)
        if doc.get("status") != "success":
            raise MetricsUnavailable(f"Prometheus query failed: {doc.get('error', doc.get('status'))}")
        out = {}
        for item in doc["data"]["result"]:
            rev = item.get("metric", {}).get("kn_revision_name")
            if rev:
                out[rev] = float(item["value"][1])
        return out

    async def read(self, namespace: str, window_s: float, holders: dict[str, Holder],
                   podautoscalers: list[dict]) -> dict[str, dict[str, float]]:
        own = self.session is None
        session = self.session or aiohttp.ClientSession()
        try:
            results = await asyncio.gather(*(self._query(session, promql(f, namespace, window_s))
                                             for f in QUERIES))
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise MetricsUnavailable(f"Prometheus at {self.url} unreachable: {type(exc).__name__} {exc}") from None
        except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
            # A document of another shape (a proxy's page, a scalar result, a null value, arrays
            # nested thousands deep): the policy holds or falls back as when Prometheus is down,
            # instead of the tick failing.
            raise MetricsUnavailable(f"Prometheus at {self.url} answered an unexpected document: "
                                     f"{type(exc).__name__} {exc}") from None
        finally:
            if own:
                await session.close()
        series = dict(zip(QUERIES, results))
        self.unseen_requests = without_request_series(series)
        return assemble(series)


class PodAutoscalerMetrics:
    """Readings from PA status only (no Prometheus)."""

    async def read(self, namespace: str, window_s: float, holders: dict[str, Holder],
                   podautoscalers: list[dict]) -> dict[str, dict[str, float]]:
        readings = {}
        for pa in podautoscalers:
            status, name = pa.get("status") or {}, pa["metadata"]["name"]
            if "desiredScale" not in status or "actualScale" not in status:
                continue
            # Knative writes desiredScale -1 until its autoscaler has collected metrics for the
            # revision: no reading yet (it holds, as a missing one does), not -1 pods.
            if not (status["desiredScale"] >= 0 and status["actualScale"] >= 0):
                continue
            holder = holders.get(name)
            target = holder.current_target if holder else KNATIVE_DEFAULT_TARGET
            utilization = holder.utilization if holder else KNATIVE_DEFAULT_UTILIZATION
            readings[name] = pod_autoscaler_readings(status["actualScale"], status["desiredScale"], target,
                                                     utilization)
        return readings
