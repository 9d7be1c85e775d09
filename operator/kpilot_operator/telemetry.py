"""The operator's own Prometheus metrics (served on KPILOT_METRICS_PORT, default 8080)."""

import time

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

# The gauges say what this replica's ticks found. A replica that Kopf's peering has paused (the
# standby) would go on serving what it last set as the leader, beside the leader's own values:
# they are served only while this replica acts, i.e. its timer ran in the last STANDBY_AFTER_S.
# Counters and histograms are totals of what this process did, and stay.
_GAUGES = CollectorRegistry()
STANDBY_AFTER_S = 60.0
_last_acted = -float("inf")


def mark_acting() -> None:
    """This replica acts (its timer or a tick ran): its gauges are served."""
    global _last_acted
    _last_acted = time.monotonic()


class _WhileActing:
    """Serves _GAUGES while this replica acts, nothing on a standby."""

    def collect(self):
        if time.monotonic() - _last_acted <= STANDBY_AFTER_S:
            yield from _GAUGES.collect()

    def describe(self):
        return []


REGISTRY.register(_WhileActing())

DECISIONS = Counter("kpilot_decisions_total", "Targets decided by the policy", ["namespace", "policy", "mode"])
APPLIED = Counter("kpilot_applied_changes_total", "Target writes that reached the API", ["namespace", "policy", "reason"])
APPLIED_TARGET = Gauge("kpilot_applied_target", "Target the operator last applied",
                       ["namespace", "service", "revision"], registry=_GAUGES)
ERRORS = Counter("kpilot_errors_total", "Faults by kind", ["namespace", "policy", "kind"])
INFERENCE_SECONDS = Histogram("kpilot_inference_seconds", "Batched policy inference + guardrails per tick",
                              buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0))
TICK_SECONDS = Histogram("kpilot_tick_seconds", "One decision tick of one AutoscalingPolicy",
                         buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))


def forget_targets(namespace: str, keep: set[str]) -> None:
    """Drop the kpilot_applied_target series of the namespace's revisions not in `keep` (restored,
    or gone): one series per revision ever managed would grow without end."""
    for metric in APPLIED_TARGET.collect():
        for sample in metric.samples:
            labels = sample.labels
            if labels["namespace"] == namespace and labels["revision"] not in keep:
                try:
                    APPLIED_TARGET.remove(labels["namespace"], labels["service"], labels["revision"])
                except KeyError:
                    pass


STALE = Gauge("kpilot_stale_revisions", "Revisions without a usable observation", ["namespace", "policy"],
              registry=_GAUGES)
# The policy was measured on readings up to 29 s old (README, Results: Readings a scrape old): a
# platform team alerts on this, not on a guess at its scrape interval.
READING_AGE = Gauge("kpilot_reading_age_seconds",
                    "Age of the oldest autoscaler reading this tick (Prometheus's last scrape)",
                    ["namespace", "policy"], registry=_GAUGES)


def record_reading_age(labels: dict, readings: dict, now: float) -> None:
    """The oldest of the revisions' autoscaler samples, in seconds before `now`. A tick with no
    timed reading (metrics down, the PodAutoscaler source, mode Off) drops the series: a value
    kept from an earlier tick would hold an alert on it after its cause had gone."""
    times = [r["sample_time"] for r in readings.values() if r.get("sample_time") is not None]
    if times:
        READING_AGE.labels(**labels).set(max(0.0, now - min(times)))
    else:
        try:
            READING_AGE.remove(labels["namespace"], labels["policy"])
        except KeyError:
            pass


def forget_policy(namespace: str, policy: str) -> None:
    """Drop a policy's gauges, when it is deleted or a tick of it ends before reading anything
    (invalid spec, policy not loaded, Knative or the API server unavailable): its last stale count
    or reading age would otherwise be exported, and an alert on it fire, after its cause had gone.
    Its counters stay, as counters do."""
    for gauge in (STALE, READING_AGE):
        try:
            gauge.remove(namespace, policy)
        except KeyError:
            pass
