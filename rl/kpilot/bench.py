"""`kpilot bench`: the speed figures the README reports, measured as medians of repeated runs.

* sim_requests_per_s: request-level replay of a Poisson 100 req/s, 1 s service workload under
  KPA defaults, on one core (one simulation is single-threaded), JIT compilation excluded.
* env_steps_per_s: 64 batched environments, 30 s decision steps, ~20 req/s each, random actions.
* trace_load_s / trace_load_peak_rss_mib: a 10-million-row BurstGPT-format CSV through load_trace.
* operator_tick_s: one operator decision tick for 1,000 services against a fake Prometheus.
* retune_service_s: `kpilot retune`'s work for one Service of `rate` req/s (50 ms each) over its
  96 minutes and warm-up in one-minute bins: the static grid under 3 simulator seeds. A
  namespace's CronJob run takes about this per Service as busy, less for lighter ones.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from kpilot.sim.config import SimConfig
from kpilot.sim.replay import replay
from kpilot.traces.model import make_trace


def poisson_trace(rate: float, duration_s: float, service_s: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0 / rate, int(rate * duration_s)))
    return make_trace(arrivals, np.full(len(arrivals), service_s, dtype=np.float32),
                      source=f"poisson:{rate}/s")


def bench_simulator(requests: int = 1_000_000, repeats: int = 3) -> dict:
    trace = poisson_trace(100.0, requests / 100.0, 1.0)
    replay(trace.window(0, 60), timeline=False)      # compile outside the timing
    rates = []
    for i in range(repeats):
        result = replay(trace, config=SimConfig(), seed=i, timeline=False)
        rates.append(len(trace) / result.wall_s)
    return {"sim_requests": len(trace), "sim_requests_per_s": statistics.median(rates)}


def bench_env(num_envs: int = 64, steps: int = 300, repeats: int = 3) -> dict:
    from kpilot.env.core import EnvConfig
    from kpilot.env.vector import KnativeAutoscalingVecEnv
    from kpilot.traces.synthetic import synthetic_trace

    trace = synthetic_trace("poisson", {"rate": 20, "duration": 7200}, seed=0)
    env = KnativeAutoscalingVecEnv(num_envs, EnvConfig(), seed=0, traces=[trace])
    rng = np.random.default_rng(0)
    env.reset()
    env.step(rng.uniform(-1, 1, (num_envs, 1)))     # compile outside the timing
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            env.step(rng.uniform(-1, 1, (num_envs, 1)))
        rates.append(num_envs * steps / (time.perf_counter() - t0))
    return {"env_num_envs": num_envs, "env_steps_per_s": statistics.median(rates)}


def bench_retune(rate: float = 100.0, repeats: int = 3) -> dict:
    from kpilot.env.reward import RewardConfig
    from kpilot.retune import retune
    from kpilot.traces.prometheus_export import ServiceTraffic

    per_bin = int(rate * 60)
    traffic = [ServiceTraffic("bench", [(60 * k, per_bin, 0.05) for k in range(101)])]
    retune([ServiceTraffic("warm", [(60 * k, 10, 0.05) for k in range(8)])], 60, SimConfig(), RewardConfig(),
           seeds=[0])                                 # compile outside the timing
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        retune(traffic, 60, SimConfig(), RewardConfig(), seeds=[0, 1, 2])
        times.append(time.perf_counter() - t0)
    return {"retune_requests_per_s": rate, "retune_service_s": statistics.median(times)}


def run_bench(*, quick: bool = False, repeats: int = 3) -> dict:
    out = {}
    out.update(bench_simulator(200_000 if quick else 1_000_000, repeats))
    out.update(bench_env(64, 100 if quick else 300, repeats))
    from kpilot.traces.bench import bench_trace_load

    out.update(bench_trace_load(1_000_000 if quick else 10_000_000, repeats))
    out.update(bench_retune(10.0 if quick else 100.0, repeats))
    try:
        from kpilot_operator.bench import bench_tick
    except ImportError:        # the operator extra is not installed
        pass
    else:
        out.update(bench_tick(services=1000))
    out["repeats"] = repeats
    out["quick"] = quick
    return out
