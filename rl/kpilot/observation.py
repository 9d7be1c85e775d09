"""The observation contract: what the policy sees, identical in simulation and in a cluster.

Every feature here is something an operator can read in a real cluster, from Knative's
Prometheus metrics or the PodAutoscaler status, and that the simulator can compute from its
own state. The environment (kpilot.env) and the operator (kpilot_operator) both build
observations ONLY through `encode`, so the two can never drift apart. A policy artifact records
`OBS_VERSION`; loading a policy trained on another version is an error, not a guess.

This module imports numpy and nothing else: the operator image loads it without torch.

Features, in order (raw value -> encoded value):

| # | name                | raw unit / cluster source                                              | encoding |
|---|---------------------|------------------------------------------------------------------------|----------|
| 0 | concurrency_stable  | requests, revision total; kn_revision_concurrency_stable               | log1p    |
| 1 | concurrency_panic   | requests, revision total; kn_revision_concurrency_panic                | log1p    |
| 2 | ready_pods          | pods; PA status.actualScale / kn_revision_pods_count                   | log1p    |
| 3 | desired_pods        | pods the decider wants (before min/max scale and scale-to-zero         | log1p    |
|   |                     | handling); kn_revision_pods_desired. Without Prometheus the operator   |          |
|   |                     | reads PA status.desiredScale, the scale applied after them, and so do  |          |
|   |                     | `--metrics kubernetes` replays (they differ while a last pod is held   |          |
|   |                     | before scale to zero, and under min-scale)                             |          |
| 4 | starting_pods       | pods wanted, not yet ready: max(0, desired - ready). The cold starts   | log1p    |
|   |                     | under way: Knative exports no count of requests that waited for a pod, |          |
|   |                     | so this is what the policy sees of cold starts in both worlds          |          |
| 5 | target              | requests per pod; the revision's autoscaling.knative.dev/target as     | log      |
|   |                     | Knative resolves it (cluster default, capped by containerConcurrency)  |          |
| 6 | request_rate        | req/s completed over the last decision interval; queue-proxy's         | log1p    |
|   |                     | rate(kn_serving_invocation_duration_seconds_count), a new pod's series |          |
|   |                     | counted from zero (kpilot_operator.metrics)                            |          |
| 7 | latency_mean_s      | s, mean over the interval of what queue-proxy times: from the request  | log1p    |
|   |                     | reaching its pod (past the activator and queue-proxy's own queue) to   |          |
|   |                     | its response; invocation_duration sum / count                          |          |
| 8 | latency_p95_s       | s, histogram_quantile(0.95, ...) over queue-proxy's buckets            | log1p    |
|   |                     | (LATENCY_BUCKETS_S: at most 10 s, the highest finite bound)            |          |
| 9 | utilization         | stable / (max(ready,1) x target): derived, no extra source             | clip 0..10 |
|10 | panic               | 0/1; kn_revision_panic_mode                                            | identity |
|11 | time_of_day_sin     | sin(2 pi t / 86400), t = seconds since midnight UTC                    | identity |
|12 | time_of_day_cos     | cos(2 pi t / 86400)                                                    | identity |

Version 4 (`kpilot-obs/4`) adds one feature, the Service's base target:

|13 | base_target         | requests per pod; the kpilot.dev/base-target annotation (the static    | log      |
|   |                     | target tuned on the Service's recent traffic, `kpilot tune`)           |          |

A version 4 policy knows the level its Service's own history asks for and chooses around it.

Versions 1 and 2 had the same features, but the simulator that trained them reported some of
them otherwise than a cluster does (latency including the wait for a cold start, an exact p95,
arrivals for the rate, the pods wanted after bounds): their policies are refused.
"""

from __future__ import annotations

import numpy as np

OBS_VERSION = "kpilot-obs/3"
OBS_VERSION_BASE = "kpilot-obs/4"
BASE_FEATURE = "base_target"

# Raw inputs the caller provides, in the order of the table above (utilization is derived).
RAW_FIELDS = (
    "concurrency_stable",
    "concurrency_panic",
    "ready_pods",
    "desired_pods",
    "starting_pods",
    "target",
    "request_rate",
    "latency_mean_s",
    "latency_p95_s",
    "panic",
    "time_of_day_s",
)

FEATURES = (
    "concurrency_stable",
    "concurrency_panic",
    "ready_pods",
    "desired_pods",
    "starting_pods",
    "target",
    "request_rate",
    "latency_mean_s",
    "latency_p95_s",
    "utilization",
    "panic",
    "time_of_day_sin",
    "time_of_day_cos",
)
N_FEATURES = len(FEATURES)
FEATURES_BY_VERSION = {OBS_VERSION: FEATURES, OBS_VERSION_BASE: FEATURES + (BASE_FEATURE,)}

# queue-proxy's kn.serving.invocation.duration bucket bounds, seconds (knative/serving
# pkg/queue/request_metric.go, unchanged up to 1.23). The +Inf bucket follows.
LATENCY_BUCKETS_S = np.array([0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                              7.5, 10.0])


def histogram_quantile(q: float, counts: np.ndarray, bounds: np.ndarray = LATENCY_BUCKETS_S) -> np.ndarray:
    """Prometheus's histogram_quantile over per-bucket counts (last axis: one count per bound, then
    +Inf): linear within the bucket holding the rank, the first bucket starting at 0, and the
    highest finite bound when the rank falls in +Inf. 0 where nothing was counted."""
    counts = np.atleast_2d(np.asarray(counts, dtype=np.float64))
    cum = np.cumsum(counts, axis=-1)
    total = cum[:, -1]
    rank = q * total
    b = np.minimum(np.argmax(cum >= rank[:, None], axis=-1), len(bounds))
    upper = np.append(bounds, bounds[-1])
    lower = np.concatenate([[0.0], bounds])
    below = np.where(b > 0, np.take_along_axis(cum, np.maximum(b - 1, 0)[:, None], -1)[:, 0], 0.0)
    inside = np.take_along_axis(counts, b[:, None], -1)[:, 0]
    frac = np.where(inside > 0, (rank - below) / np.maximum(inside, 1e-300), 1.0)
    value = np.where(b == len(bounds), bounds[-1], lower[b] + (upper[b] - lower[b]) * frac)
    return np.where(total > 0, value, 0.0)


# Bounds of the encoded features, for gymnasium's Box. Generous: a real cluster can exceed
# anything we trained on, and clipping at the edge is safer than raising.
BOUND = 20.0


def space_bounds(version: str = OBS_VERSION) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the encoded observation of `version`, for gymnasium's Box."""
    n = len(FEATURES_BY_VERSION[version])
    return np.full(n, -BOUND, dtype=np.float32), np.full(n, BOUND, dtype=np.float32)


def encode(*, base_target=None, **raw) -> np.ndarray:
    """Encode raw readings into observations.

    Every keyword in RAW_FIELDS is required; each is a scalar or an array of shape (B,).
    Returns float32 of shape (N_FEATURES,) for scalars or (B, N_FEATURES) for arrays; with
    `base_target` (version 4) one more feature, log of it.
    Missing or non-finite readings are an error for the caller to handle (hold or fall back):
    the contract never invents a value.
    """
    missing = [f for f in RAW_FIELDS if f not in raw]
    extra = [f for f in raw if f not in RAW_FIELDS]
    if missing or extra:
        raise ValueError(f"observation fields: missing {missing}, unexpected {extra}")
    if base_target is not None:
        raw = {**raw, BASE_FEATURE: base_target}
    cols = {k: np.asarray(v, dtype=np.float64) for k, v in raw.items()}
    for name, col in cols.items():
        if not np.all(np.isfinite(col)):
            raise ValueError(f"observation field {name} is not finite")
    scalar = all(c.ndim == 0 for c in cols.values())
    cols = {k: np.atleast_1d(v) for k, v in cols.items()}
    nonneg = {k: np.maximum(v, 0.0) for k, v in cols.items() if k != "time_of_day_s"}
    if base_target is not None:
        cols[BASE_FEATURE] = np.broadcast_to(cols[BASE_FEATURE], cols["target"].shape)
    ready = np.maximum(nonneg["ready_pods"], 1.0)
    target = np.maximum(nonneg["target"], 0.01)
    phase = 2.0 * np.pi * (cols["time_of_day_s"] % 86400.0) / 86400.0
    out = np.stack(
        [
            np.log1p(nonneg["concurrency_stable"]),
            np.log1p(nonneg["concurrency_panic"]),
            np.log1p(nonneg["ready_pods"]),
            np.log1p(nonneg["desired_pods"]),
            np.log1p(nonneg["starting_pods"]),
            np.log(target),
            np.log1p(nonneg["request_rate"]),
            np.log1p(nonneg["latency_mean_s"]),
            np.log1p(nonneg["latency_p95_s"]),
            np.clip(nonneg["concurrency_stable"] / (ready * target), 0.0, 10.0),
            (nonneg["panic"] > 0.5).astype(np.float64),
            np.sin(phase),
            np.cos(phase),
            *([np.log(np.maximum(cols[BASE_FEATURE], 0.01))] if base_target is not None else []),
        ],
        axis=-1,
    )
    out = np.clip(out, -BOUND, BOUND).astype(np.float32)
    return out[0] if scalar else out


# What each metrics source can read in a cluster (the operator's `spec.metrics`).
METRICS_SOURCES = ("prometheus", "kubernetes")


KNATIVE_DEFAULT_UTILIZATION = 0.7   # config-autoscaler container-concurrency-target-percentage: 70


def knative_target(annotation: float | None, container_concurrency: int, default: float) -> float:
    """The target Knative runs (feature 5; pkg/reconciler/autoscaling/resources/target.go): the
    target annotation (None where absent or unusable) capped by containerConcurrency, else the
    containerConcurrency where the revision sets one, else the cluster's default. The simulator's
    compiled engine writes the same rule (`engine._resolve_target`), the operator and the
    simulator's configuration call this."""
    if container_concurrency > 0:
        return float(container_concurrency if annotation is None else min(annotation, container_concurrency))
    return float(default if annotation is None else annotation)


def pod_autoscaler_readings(ready_pods: float, desired_pods: float, target: float,
                            utilization: float = KNATIVE_DEFAULT_UTILIZATION) -> dict:
    """The readings a PodAutoscaler's status alone gives (no Prometheus: the operator's
    `spec.metrics.kubernetes`): ready and desired pods; the autoscaler's own decision inverted for
    concurrency (stable = panic = desired x target x utilization, the most it can have observed
    when it asked for that many pods; Knative's default utilization 70 %); request rate,
    latencies and the panic flag read 0. The operator reads a cluster through this, and
    `kpilot evaluate --metrics kubernetes` replays a policy through it."""
    concurrency = float(desired_pods) * float(target) * float(utilization)
    return {"concurrency_stable": concurrency, "concurrency_panic": concurrency,
            "ready_pods": float(ready_pods), "desired_pods": float(desired_pods),
            "starting_pods": max(0.0, float(desired_pods) - float(ready_pods)), "request_rate": 0.0,
            "latency_mean_s": 0.0, "latency_p95_s": 0.0, "panic": 0.0}
