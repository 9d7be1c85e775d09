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
| 3 | desired_pods        | pods; PA status.desiredScale / kn_revision_pods_desired                | log1p    |
| 4 | starting_pods       | pods requested, not yet ready (cold starts in progress);               | log1p    |
|   |                     | max(0, desired - ready) / kn_revision_pods_{pending,not_ready}_count   |          |
| 5 | target              | requests per pod; the revision's autoscaling.knative.dev/target        | log      |
| 6 | request_rate        | req/s over the last decision interval; queue-proxy request count rate  | log1p    |
| 7 | latency_mean_s      | s, mean request latency over the interval; invocation_duration sum/cnt | log1p    |
| 8 | latency_p95_s       | s, p95 over the interval; histogram_quantile(0.95, invocation_duration)| log1p    |
| 9 | utilization         | stable / (max(ready,1) x target): derived, no extra source             | clip 0..10 |
|10 | panic               | 0/1; kn_revision_panic_mode                                            | identity |
|11 | time_of_day_sin     | sin(2 pi t / 86400), t = seconds since midnight UTC                    | identity |
|12 | time_of_day_cos     | cos(2 pi t / 86400)                                                    | identity |

Version 2 (`kpilot-obs/2`) adds one feature, the Service's base target:

|13 | base_target         | requests per pod; the kpilot.dev/base-target annotation (the static    | log      |
|   |                     | target tuned on the Service's recent traffic, `kpilot tune`)           |          |

A version 2 policy knows the level its Service's own history asks for and chooses around it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OBS_VERSION = "kpilot-obs/1"
OBS_VERSION_BASE = "kpilot-obs/2"
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

# Bounds of the encoded features, for gymnasium's Box. Generous: a real cluster can exceed
# anything we trained on, and clipping at the edge is safer than raising.
BOUND = 20.0


def space_bounds(version: str = OBS_VERSION) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the encoded observation of `version`, for gymnasium's Box."""
    n = len(FEATURES_BY_VERSION[version])
    return np.full(n, -BOUND, dtype=np.float32), np.full(n, BOUND, dtype=np.float32)


@dataclass(frozen=True)
class RawObservation:
    """One revision's raw readings at a decision time (units as in the module table)."""

    concurrency_stable: float
    concurrency_panic: float
    ready_pods: float
    desired_pods: float
    starting_pods: float
    target: float
    request_rate: float
    latency_mean_s: float
    latency_p95_s: float
    panic: float
    time_of_day_s: float


def encode(*, base_target=None, **raw) -> np.ndarray:
    """Encode raw readings into observations.

    Every keyword in RAW_FIELDS is required; each is a scalar or an array of shape (B,).
    Returns float32 of shape (N_FEATURES,) for scalars or (B, N_FEATURES) for arrays; with
    `base_target` (version 2) one more feature, log of it.
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


def pod_autoscaler_readings(ready_pods: float, desired_pods: float, target: float) -> dict:
    """The readings a PodAutoscaler's status alone gives (no Prometheus: the operator's
    `spec.metrics.kubernetes`): ready and desired pods; the autoscaler's own decision inverted for
    concurrency (stable = panic = desired x target, the most it can have observed); request rate,
    latencies and the panic flag read 0. The operator reads a cluster through this, and
    `kpilot evaluate --metrics kubernetes` replays a policy through it."""
    concurrency = float(desired_pods) * float(target)
    return {"concurrency_stable": concurrency, "concurrency_panic": concurrency,
            "ready_pods": float(ready_pods), "desired_pods": float(desired_pods),
            "starting_pods": max(0.0, float(desired_pods) - float(ready_pods)), "request_rate": 0.0,
            "latency_mean_s": 0.0, "latency_p95_s": 0.0, "panic": 0.0}


def encode_one(obs: RawObservation) -> np.ndarray:
    """Encode a single RawObservation."""
    return encode(**{f: getattr(obs, f) for f in RAW_FIELDS})
