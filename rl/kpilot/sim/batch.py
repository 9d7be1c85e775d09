"""A batch of simulations: owns the engine's arrays, loads trace windows, reads results.

`Batch` is the only Python-side owner of the engine state (kpilot.sim.engine). One simulation is a
batch of one (`replay` uses that); the vector environment uses a batch of many.
"""

from __future__ import annotations

import math

import numpy as np

from kpilot.observation import LATENCY_BUCKETS_S, histogram_quantile
from kpilot.sim import engine as E
from kpilot.sim.coldstart import MAX_COLD_START_S, ColdStartModel, lognormal_params, parse_cold_start
from kpilot.sim.config import SimConfig
from kpilot.sim.kpa import SPEC_SIZE, decider_spec, decider_state_size, new_decider_state
from kpilot.traces.model import Trace


def _seed_state(seed: int) -> np.uint64:
    # Decorrelate nearby seeds before they feed splitmix64.
    return np.uint64((int(seed) * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % (1 << 64))


class Batch:
    """n simulations of one configuration, each replaying its own trace window."""

    def __init__(self, n: int, config: SimConfig, *, max_requests: int = 1024,
                 record: bool = False, max_ticks: int = 0):
        self.n = n
        self.config = config
        self.record = record
        pod = config.pod
        kpa = config.kpa
        self.cold_start: ColdStartModel = parse_cold_start(pod.cold_start)
        P = pod.max_pods
        H = pod.container_concurrency if pod.container_concurrency > 0 else pod.unlimited_in_service
        W = int(math.ceil(kpa.stable_window_s))
        self.P, self.H = P, H
        f8, i4 = np.float64, np.int32
        self.C = np.zeros((n, E.C_SIZE))
        self.I = np.zeros((n, E.I_SIZE), dtype=np.int64)
        self.F = np.zeros((n, E.F_SIZE))
        self.S = np.zeros((n, E.S_SIZE))
        self.T = np.zeros((n, E.S_SIZE))
        self.spec = np.zeros((n, SPEC_SIZE))
        self.dstate = np.zeros((n, decider_state_size(kpa.scale_down_delay_s, kpa.tick_s)))
        self.buckets = np.zeros((n, W))
        self.rng = np.zeros(n, dtype=np.uint64)
        cs = self.cold_start
        self.cs_samples = np.ascontiguousarray(cs.samples if cs.kind == 2 else np.zeros(1), dtype=f8)
        self.pstate = np.zeros((n, P), dtype=np.int8)
        self.pready = np.zeros((n, P), dtype=f8)
        self.pcreated = np.zeros((n, P), dtype=f8)
        self.pn = np.zeros((n, P), dtype=i4)
        self.pv = np.zeros((n, P), dtype=f8)
        self.pt = np.zeros((n, P), dtype=f8)
        self.hk = np.zeros((n, P, H), dtype=f8)
        self.hr = np.zeros((n, P, H), dtype=i4)
        self.pk = np.full((n, P), np.inf)
        self.ph = np.zeros((n, P), dtype=i4)
        self.pp = np.full((n, P), -1, dtype=i4)
        self.rlist = np.zeros((n, P), dtype=i4)
        self.rpos = np.full((n, P), -1, dtype=i4)
        self.slist = np.zeros((n, P), dtype=i4)
        self.freelist = np.zeros((n, P), dtype=i4)
        self.fifo = np.zeros((n, pod.queue_capacity), dtype=i4)
        self.hist = np.zeros((n, E.HIST_BINS))
        self.bounds = np.ascontiguousarray(LATENCY_BUCKETS_S, dtype=np.float64)
        self.tl_arrivals = np.zeros(n)
        self.timeline = np.zeros((n, max(1, max_ticks), E.TL_SIZE))
        self._alloc_requests(max_requests)

    # ------------------------------------------------------------------ setup
    def _alloc_requests(self, m: int) -> None:
        self.arrivals = np.full((self.n, m), np.inf)
        self.service = np.zeros((self.n, m), dtype=np.float32)
        self.reached = np.full((self.n, m), np.nan)   # when each request reached its pod
        self.proxied = np.zeros((self.n, m), dtype=np.bool_)  # it came through the activator
        self.latency = np.full((self.n, m if self.record else 1), np.nan, dtype=np.float32)

    def _spec(self) -> np.ndarray:
        k = self.config.kpa
        return decider_spec(
            k.target_value(None, self.config.pod.container_concurrency),
            k.total_value(None, self.config.pod.container_concurrency),
            target_burst_capacity=k.target_burst_capacity,
            panic_threshold=k.panic_threshold_percentage / 100.0,
            max_scale_up_rate=k.max_scale_up_rate, max_scale_down_rate=k.max_scale_down_rate,
            stable_window_s=k.stable_window_s, reachable=True, activation_scale=k.activation_scale,
            scale_down_delay_s=k.scale_down_delay_s, tick_s=k.tick_s)

    def reset(self, e: int, trace: Trace, *, seed: int, target: float | None = None,
              cold_start_scale: float = 1.0, time_of_day_s: float = 0.0) -> None:
        """Start simulation e afresh on `trace` (already windowed and re-based to 0)."""
        m = len(trace)
        if m > self.arrivals.shape[1]:
            # Grow every per-request array, keeping the other simulations' requests and what
            # has been recorded of them.
            old = (self.arrivals, self.service, self.reached, self.proxied, self.latency)
            self._alloc_requests(max(m, 2 * old[0].shape[1]))
            for new, prev in zip((self.arrivals, self.service, self.reached, self.proxied, self.latency), old):
                new[:, : prev.shape[1]] = prev
        self.arrivals[e, :m] = trace.arrivals
        self.arrivals[e, m:] = np.inf
        self.service[e, :m] = trace.service
        if self.record:
            self.latency[e, :] = np.nan
        cfg, k, pod = self.config, self.config.kpa, self.config.pod
        cs = self.cold_start
        C = self.C[e]
        C[E.C_CORES] = pod.cores
        C[E.C_CAP] = self.H
        C[E.C_CC] = pod.container_concurrency
        C[E.C_TARGET_DEFAULT] = k.container_concurrency_target_default
        C[E.C_UTILIZATION] = k.container_concurrency_target_percentage / 100.0
        C[E.C_STABLE_WINDOW] = k.stable_window_s
        C[E.C_PANIC_WINDOW] = k.panic_window_s
        C[E.C_TICK] = k.tick_s
        C[E.C_MIN_SCALE] = k.min_scale
        C[E.C_MAX_SCALE] = min(k.max_scale, pod.max_pods) if k.max_scale > 0 else pod.max_pods
        C[E.C_STZ_GRACE] = k.scale_to_zero_grace_period_s
        C[E.C_STZ_RETENTION] = k.scale_to_zero_pod_retention_period_s
        C[E.C_ACTIVATOR_ONLY] = 1.0 if k.target_burst_capacity == -1 else 0.0
        C[E.C_STZ_ENABLED] = 1.0 if k.enable_scale_to_zero else 0.0
        C[E.C_SLO_SLOWDOWN] = cfg.slo.slowdown
        C[E.C_SLO_OFFSET] = cfg.slo.offset_s
        C[E.C_CS_KIND] = cs.kind
        if cs.kind == 0:
            C[E.C_CS_P1] = cs.p1
        elif cs.kind == 1:
            C[E.C_CS_P1], C[E.C_CS_P2] = lognormal_params(cs.p1, cs.p2)
        C[E.C_CS_MAX] = MAX_COLD_START_S
        self.I[e] = 0
        self.I[e, E.I_N_REQ] = m
        self.F[e] = 0.0
        self.F[e, E.F_TARGET] = np.nan if target is None else target
        self.F[e, E.F_COLD_SCALE] = cold_start_scale
        self.F[e, E.F_NEXT_READY] = np.inf
        self.F[e, E.F_TOD0] = time_of_day_s
        # Until the first decision, the activator is in the path unless TBC = 0 keeps it out
        # (it still is while no pod is ready).
        self.F[e, E.F_EBC] = 0.0 if k.target_burst_capacity == 0 else -1.0
        self.F[e, E.F_PROXY_SINCE] = np.nan if k.target_burst_capacity == 0 else 0.0
        # No decision yet (Knative's scaleUnknown): nothing to poke. A revision starting at zero is
        # a new one, whose first request waits for the next tick, not one the KPA scaled to zero.
        self.F[e, E.F_DESIRED] = -1.0
        self.S[e] = 0.0
        self.T[e] = 0.0
        self.spec[e] = self._spec()
        self.buckets[e] = 0.0
        self.rng[e] = _seed_state(seed)
        # Every per-pod field as a new Batch has it: the initial pods below are not created by the
        # engine, and a ready time left from the slot's previous episode would count its
        # requests as cold starts.
        self.pstate[e] = E.POD_FREE
        self.pready[e] = 0.0
        self.pcreated[e] = 0.0
        self.pv[e] = 0.0
        self.pt[e] = 0.0
        self.ph[e] = 0
        self.pn[e] = 0
        self.pk[e] = np.inf
        self.pp[e] = -1
        self.rpos[e] = -1
        self.hist[e] = 0.0
        self.tl_arrivals[e] = 0.0
        self.freelist[e] = np.arange(self.P - 1, -1, -1, dtype=np.int32)
        self.I[e, E.I_N_FREE_PODS] = self.P
        # The revision starts with initial-scale pods, already ready (it was deployed earlier).
        initial = min(max(k.initial_scale, k.min_scale), self.P)
        for _ in range(initial):
            self.I[e, E.I_N_FREE_PODS] -= 1
            p = self.freelist[e, self.I[e, E.I_N_FREE_PODS]]
            self.pstate[e, p] = E.POD_READY
            self.rlist[e, self.I[e, E.I_N_READY]] = p
            self.rpos[e, p] = self.I[e, E.I_N_READY]
            self.I[e, E.I_N_READY] += 1
        self.I[e, E.I_N_ALIVE] = initial
        self.I[e, E.I_REPLICAS] = initial
        self.I[e, E.I_FREE_SLOTS] = initial * self.H
        self.T[e, E.S_MAX_PODS] = initial
        # A revision with pods is active (and its pods have been scraped: a young revision's
        # windows divide by the seconds seen); one without is inactive since the start.
        self.F[e, E.F_ACTIVE_SINCE] = 0.0 if initial > 0 else np.nan
        self.F[e, E.F_INACTIVE_SINCE] = np.nan if initial > 0 else 0.0
        self.I[e, E.I_LAST_WRITE_SEC] = -1 if initial > 0 else -(1 << 40)
        new_decider_state(self.dstate[e], float(initial), 0.0)

    # ------------------------------------------------------------------ running
    def set_target(self, e, target) -> None:
        self.F[e, E.F_TARGET] = target

    def advance(self, t_stop) -> None:
        """Advance every simulation to its own t_stop (array) or a common one (scalar)."""
        t_stop = np.broadcast_to(np.asarray(t_stop, dtype=np.float64), (self.n,)).copy()
        E.advance_all(t_stop, self.arrivals, self.service, self.reached, self.proxied, self.C, self.I, self.F, self.S, self.T,
                      self.spec, self.dstate, self.buckets, self.rng, self.cs_samples, self.pstate,
                      self.pready, self.pcreated, self.pn, self.pv, self.pt, self.hk, self.hr,
                      self.pk, self.ph, self.pp, self.rlist, self.rpos, self.slist, self.freelist,
                      self.fifo, self.hist, self.bounds, self.latency, self.timeline, self.tl_arrivals,
                      self.record)

    def start_interval(self) -> None:
        self.S[:] = 0.0
        self.hist[:] = 0.0

    # ------------------------------------------------------------------ reading
    def projected_overdue(self) -> tuple[np.ndarray, np.ndarray]:
        """Per simulation: (seconds past their SLO deadlines, requests missing it) that the
        unfinished requests are heading for at their pods' current pace (engine.projected_overdue)."""
        out = np.zeros((self.n, 2))
        E.projected_overdue(self.arrivals, self.service, self.C, self.I, self.F, self.pn, self.pv,
                            self.pt, self.hk, self.hr, self.fifo, out)
        return out[:, 0], out[:, 1]

    def request_counts(self) -> np.ndarray:
        """What queue-proxy has counted since `start_interval`, one row per simulation: requests
        completed, the sum of their latencies, then the latency histogram's bins. A reading taken
        `lag` seconds before a decision adds the end of the interval before it (the counts after
        that interval's reading), so that its window is as long as a decision interval."""
        return np.concatenate([self.S[:, [E.S_COMPLETED, E.S_QP_LATENCY_SUM]], self.hist], axis=1)

    def raw_observation(self, interval_s, *, metrics: str = "prometheus",
                        carried: np.ndarray | None = None) -> dict:
        """The observation contract's raw fields for every simulation, each as the cluster reports
        it (kpilot.observation): the autoscaler's window averages and its decider's pod count;
        starting pods as the operator derives them; requests counted and timed as queue-proxy
        counts and times them (on completion, from reaching the pod), the p95 through its buckets.
        With metrics="kubernetes" the desired pods are the PodAutoscaler's status.desiredScale,
        the scale applied after min/max scale and the scale-to-zero hold, which is what the
        operator reads without Prometheus (kpilot.observation.pod_autoscaler_readings).
        `interval_s` (a number, or one per simulation) is how long the requests were counted for;
        `carried` adds counts from before the interval (request_counts' rows: a lagged reading)."""
        F, I = self.F, self.I
        if carried is None:         # the interval's own counts, read in place (every training step)
            done, latency_sum, hist = self.S[:, E.S_COMPLETED], self.S[:, E.S_QP_LATENCY_SUM], self.hist
        else:
            counts = self.request_counts() + carried
            done, latency_sum, hist = counts[:, 0], counts[:, 1], counts[:, 2:]
        ready = I[:, E.I_N_READY].astype(np.float64)
        if metrics == "kubernetes":
            desired = I[:, E.I_REPLICAS].astype(np.float64)
        elif metrics == "prometheus":
            desired = np.maximum(F[:, E.F_DESIRED], 0.0)
        else:
            raise ValueError(f"metrics must be prometheus or kubernetes, got {metrics!r}")
        cc = self.config.pod.container_concurrency
        target = np.array([self.config.kpa.total_value(None if np.isnan(a) else float(a), cc)
                           for a in F[:, E.F_TARGET]])
        return {
            "concurrency_stable": F[:, E.F_STABLE].copy(),
            "concurrency_panic": F[:, E.F_PANIC].copy(),
            "ready_pods": ready,
            "desired_pods": desired,
            "starting_pods": np.maximum(desired - ready, 0.0),
            "target": target,
            "request_rate": done / interval_s,
            "latency_mean_s": np.where(done > 0, latency_sum / np.maximum(done, 1.0), 0.0),
            "latency_p95_s": histogram_quantile(0.95, hist),
            "panic": F[:, E.F_PANICKING].copy(),
            "time_of_day_s": self.time_of_day_s(),
        }

    def time_of_day_s(self) -> np.ndarray:
        """Seconds since midnight in each simulation's clock."""
        return (self.F[:, E.F_TOD0] + self.F[:, E.F_NOW]) % 86400.0
