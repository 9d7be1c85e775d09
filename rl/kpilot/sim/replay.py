"""Replay one trace at request level under a target controller, and summarise what users saw.

Controllers decide the revision's `autoscaling.knative.dev/target`:
  * `KpaDefault()`: no annotation, Knative's defaults (target 100 at 70 %);
  * `StaticTarget(t)`: the annotation fixed at t;
  * anything with `decide(raw_obs: dict) -> float` and an `interval_s`: called every interval with
    the observation contract's raw fields (kpilot.observation), exactly as the operator calls a policy;
    it starts at its `target` attribute if it has one, else it also decides at t = 0. With an
    `observation_lag_s` it sees the revision as it was that long before each decision.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from kpilot.sim import engine as E
from kpilot.sim.batch import Batch
from kpilot.sim.config import SimConfig
from kpilot.traces.model import Trace

METRIC_KEYS = ("requests", "completed", "failed", "trace_failed", "rejected", "latency_p50_s",
               "latency_p95_s", "latency_p99_s", "latency_mean_s", "slo_violation_rate", "slo_violations",
               "carried_over_violations", "late_seconds", "carried_over_late_seconds",
               "cold_starts", "cold_start_rate", "pod_seconds", "mean_pods", "max_pods",
               "panic_seconds", "duration_s", "warmup_s", "pod_capacity_reached")


def capacity_note(config: SimConfig) -> str:
    """What to say of a replay that ran out of the simulator's pods (its metrics'
    pod_capacity_reached): Knative would have started more, so latency and violations are the
    simulator's."""
    return (f"the replay reached the simulator's capacity of {config.pod.max_pods} pods (pod.max_pods), "
            "below any Knative max-scale: its latency and SLO figures are the simulator's limit, not Knative's")


class Controller(Protocol):
    name: str
    interval_s: float

    def decide(self, raw_obs: dict) -> float: ...


@dataclass(frozen=True)
class KpaDefault:
    name: str = "kpa"
    interval_s: float = math.inf
    target: float | None = None


@dataclass(frozen=True)
class StaticTarget:
    target: float
    interval_s: float = math.inf

    @property
    def name(self) -> str:
        return f"static:{self.target:g}"


def observation_lag(controller) -> float:
    """How old the readings a deciding controller sees are, in seconds (its `observation_lag_s`,
    0 without one): the operator reads Prometheus's last scrape of the autoscaler and queue-proxy,
    up to a scrape interval old. The revision is read that long before each decision (its window
    of counted requests as long as an interval: kpilot.sim.batch.Batch.request_counts); the target
    and the clock are the decision's own. Less than one decision interval (a scrape at least that often)."""
    lag = float(getattr(controller, "observation_lag_s", 0.0))
    interval = float(getattr(controller, "interval_s", math.inf))
    if not 0.0 <= lag < interval:
        raise ValueError(f"observation_lag_s must be >= 0 and less than the decision interval ({interval:g} s), "
                         f"got {lag!r}")
    return lag


@dataclass
class ReplayResult:
    metrics: dict
    timeline: dict          # column -> np.ndarray, one row per 2 s tick
    latencies: np.ndarray   # per request, NaN for requests that never completed
    wall_s: float


def _drain_horizon(trace: Trace) -> float:
    # Let the last requests finish: the trace span plus a generous tail.
    return trace.span_s + 600.0


def replay(trace: Trace, controller=None, config: SimConfig | None = None, *, seed: int = 0,
           cold_start_scale: float = 1.0, timeline: bool = True) -> ReplayResult:
    """Replay `trace` (request level) and return metrics, the per-tick timeline and latencies."""
    config = config or SimConfig()
    controller = controller or KpaDefault()
    horizon = _drain_horizon(trace)
    max_ticks = int(horizon / config.kpa.tick_s) + 2 if timeline else 1
    batch = Batch(1, config, max_requests=max(1, len(trace)), record=True, max_ticks=max_ticks)
    start_tod = float(trace.meta.get("start_time_of_day_s", 0.0) or 0.0)
    static = getattr(controller, "target", None)
    source = getattr(controller, "metrics", "prometheus")   # what a policy reads (kpilot.controllers)
    lag = observation_lag(controller)

    def observe(interval_s: float, carried=None) -> dict:
        raw = batch.raw_observation(interval_s, metrics=source, carried=carried)
        return {k: float(v[0]) for k, v in raw.items()}

    batch.reset(0, trace, seed=seed, target=static, cold_start_scale=cold_start_scale,
                time_of_day_s=start_tod)
    if static is None and not math.isinf(controller.interval_s):
        # A controller without a start target decides at t = 0 from the revision's idle state,
        # as the operator does on its first tick (else the first interval runs at Knative's default).
        first = getattr(controller, "first_decision", controller.decide)   # optional (kpilot.controllers)
        batch.set_target(0, float(first(observe(controller.interval_s))))
    t0 = time.perf_counter()
    # Without a controller to consult, run the whole trace in one compiled call. After the last
    # arrival, step on the autoscaler's tick grid (span + k x tick) until every request has finished:
    # the run, and the pod-seconds charged, end at the same moment whatever the controller's
    # interval (ending on a coarser grid would charge one controller's idle pods longer than another's).
    decides = not math.isinf(controller.interval_s)
    tick = batch.config.kpa.tick_s
    span = trace.span_s
    n = len(trace)
    warmup = trace.warmup_s
    at_warmup = None      # the cumulative counters when the warm-up ended
    if warmup <= 0.0:
        at_warmup = batch.T[0].copy()
    t, read_from, drain_ticks = 0.0, 0.0, 0
    next_decision = controller.interval_s if decides else math.inf
    reading = None      # (what the controller will see, the counts at that moment), read before deciding
    carried = None      # what queue-proxy counted after the last reading, before the last decision
    batch.start_interval()
    while t < horizon:
        next_drain = span + (drain_ticks + 1) * tick if t >= span else span
        read_at = next_decision - lag if reading is None else math.inf
        t_next = min(horizon, next_decision, read_at, next_drain)
        if at_warmup is None and t_next >= warmup:
            batch.advance(warmup)
            at_warmup = _start_scoring(batch)
        batch.advance(t_next)
        if t_next == read_at:
            reading = observe(t_next - read_from, carried), batch.request_counts()
            read_from = t_next
        if t_next == next_decision:
            raw, seen = reading
            if lag > 0:
                carried = batch.request_counts() - seen
                raw["time_of_day_s"] = float(batch.time_of_day_s()[0])
            batch.start_interval()
            batch.set_target(0, float(controller.decide(raw)))
            reading, next_decision = None, t_next + controller.interval_s
        t = t_next
        if t == next_drain:
            if t > span:
                drain_ticks += 1
            if at_warmup is not None and batch.T[0, E.S_COMPLETED] + batch.T[0, E.S_REJECTED] >= n:
                break       # (never inside the warm-up: a window without requests still ends after it)
    wall = time.perf_counter() - t0
    k = trace.first_scored()
    return ReplayResult(summarise(batch, trace, t, at_warmup),
                        _timeline(batch, warmup) if timeline else {},
                        np.where(batch.latency[0, k:n] < 0, np.nan, batch.latency[0, k:n]), wall)


def _start_scoring(batch: Batch) -> np.ndarray:
    """End of the warm-up: remember the cumulative counters, and let the peak start afresh."""
    batch.T[0, E.S_MAX_PODS] = float(batch.I[0, E.I_N_ALIVE])
    return batch.T[0].copy()


def _carried_over(lat: np.ndarray, arrivals: np.ndarray, deadline: np.ndarray, start: float,
                  horizon: float) -> tuple[int, float, int]:
    """SLO violations and late seconds after the warm-up (ending at `start`) of the requests that
    arrived during it (their latencies, arrivals and deadlines), and how many were due after it.

    The warm-up's requests are not scored, but a controller must not get them for free: starving
    long requests left over from the warm-up on one shared pod saved pod-seconds that were charged,
    while the minutes they waited were not (on Azure Functions 2021, five-minute requests in flight
    at the window's start made that the cheapest static target). So the window is charged what
    happens in it: a carried-over request violates its SLO if its deadline passes after the
    warm-up, and its lateness counts from the later of its deadline and the warm-up's end."""
    served = lat != E.REJECTED           # a rejection happened at arrival, inside the warm-up
    deadline = deadline[served]
    end = np.where(np.isnan(lat), horizon, arrivals + lat)[served]
    due = deadline >= start
    violated = due & (end > deadline)
    late = np.maximum(end - np.maximum(deadline, start), 0.0)
    return int(violated.sum()), float(late.sum()), int(due.sum())


def summarise(batch: Batch, trace: Trace, horizon: float, at_warmup: np.ndarray) -> dict:
    """What users saw after the warm-up: the requests that arrived after it, and the pods,
    cold starts, panic time and carried-over lateness from its end to `horizon`."""
    T = batch.T[0] - at_warmup
    n, k = len(trace), trace.first_scored()
    # Every request's SLO and deadline, the warm-up's (before k) and the scored ones.
    slo_all = batch.C[0, E.C_SLO_SLOWDOWN] * batch.service[0, :n] + batch.C[0, E.C_SLO_OFFSET]
    deadline_all = trace.arrivals[:n] + slo_all
    lat = batch.latency[0, k:n]
    finished = lat >= 0.0                # NaN (never finished) and E.REJECTED compare False
    done = lat[finished]
    slo = slo_all[k:]
    completed = int(finished.sum())
    rejected = int(T[E.S_REJECTED])
    # No request finished: no latency to report (None, JSON null), not a latency of 0.
    pct = [float(x) for x in np.percentile(done, [50, 95, 99])] if len(done) else [None] * 3
    unfinished = (n - k) - completed - rejected
    # A request violates its SLO when it finished late, was rejected, or never finished. Lateness
    # is counted to completion, or to the end of the run for a request that never finished.
    carried_violations, carried_late_s, carried_due = _carried_over(
        batch.latency[0, :k], trace.arrivals[:k], deadline_all[:k], trace.warmup_s, horizon)
    violations = int((done > slo[finished]).sum()) + rejected + unfinished + carried_violations
    deadline = deadline_all[k:]
    late_s = float(np.maximum(done - slo[finished], 0.0).sum()
                   + np.maximum(horizon - deadline[np.isnan(lat)], 0.0).sum()) + carried_late_s
    trace_failed = int(trace.failed[k:].sum())
    duration = max(1e-9, horizon - trace.warmup_s)
    return {
        "requests": n - k,
        "completed": completed,
        # Failed in this replay: rejected by a full queue or never finished (completed + failed =
        # requests). Requests recorded as failed in the trace are replayed like any other; how
        # many there were is reported apart, not added here.
        "failed": rejected + unfinished,
        "rejected": rejected,
        "trace_failed": trace_failed,
        "latency_p50_s": pct[0],
        "latency_p95_s": pct[1],
        "latency_p99_s": pct[2],
        "latency_mean_s": float(done.mean()) if len(done) else None,
        "slo_violations": violations,
        "carried_over_violations": carried_violations,   # of those: warm-up requests due in the window
        "carried_over_late_seconds": carried_late_s,      # of late_seconds: theirs, in the window
        # Over every request that could violate in the window: its own and the warm-up's due in it
        # (over the window's own alone, a short window after a busy warm-up read above 100 %).
        "slo_violation_rate": violations / max(1, n - k + carried_due),
        "late_seconds": late_s,
        "cold_starts": int(T[E.S_COLD_STARTS]),
        "cold_start_rate": int(T[E.S_COLD_STARTS]) / max(1, n - k),
        "pod_seconds": float(T[E.S_POD_SECONDS]),
        "mean_pods": float(T[E.S_POD_SECONDS]) / duration,
        "max_pods": int(batch.T[0, E.S_MAX_PODS]),
        # Ran out of simulated pods where Knative's own max-scale (if any) allowed more.
        "pod_capacity_reached": bool(batch.T[0, E.S_MAX_PODS] >= batch.config.pod.max_pods
                                     and not 0 < batch.config.kpa.max_scale <= batch.config.pod.max_pods),
        "panic_seconds": float(T[E.S_PANIC_SECONDS]),
        "duration_s": float(duration),
        "warmup_s": trace.warmup_s,
    }


def _timeline(batch: Batch, warmup_s: float) -> dict:
    """The per-tick rows after the warm-up, with time re-based to its end."""
    k = min(int(batch.I[0, E.I_TICKS]), batch.timeline.shape[1])
    rows = batch.timeline[0, :k]
    rows = rows[rows[:, 0] >= warmup_s]
    out = {name: rows[:, i].copy() for i, name in enumerate(E.TL_COLUMNS)}
    out["t"] -= warmup_s
    return out
