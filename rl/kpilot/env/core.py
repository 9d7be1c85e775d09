"""The autoscaling environment, batched: n episodes advanced together by one engine call.

Action: one float in [-1, 1] per episode, mapped to the revision's concurrency target on a log
    scale between `action.min_target` and `action.max_target` and, with `action.max_step_ratio`,
    kept within that step of the running target, as the operator's guardrail keeps it
    (kpilot.action). The KPA then keeps deciding every 2 s with that target until the next action.
Observation: kpilot.observation.encode(...) of what the operator can also read in a cluster:
    stable and panic concurrency, ready / desired / starting pods, the current target, request rate,
    mean and p95 latency over the interval, utilization, panic flag, time of day. float32, shape (13,);
    (14,) with `observe_base` (below). With `observation_lag_s` > 0 each episode draws a lag from
    [0, observation_lag_s) and reads the revision that long before each decision, as the operator
    reads Prometheus's last scrape (kpilot.sim.replay.observation_lag); the target and the clock
    are the decision's own.
Reward: kpilot.env.reward: minus the interval's cost (pod-seconds + weighted SLO violations, seconds
    late and cold starts), in the units `reward_units` names: "pods" divides it by the interval's seconds;
    "relative" divides it by the episode's mean requests per interval times its trace's reference
    cost per request (the best of a few static targets on the trace's first hour), so that every
    trace weighs alike and the return measures what evaluation reports: cost per request relative
    to a good static target. With "pods", a busy trace's rewards are thousands of times a quiet
    one's and PPO learns the busy trace only.
    With `shaping_gamma` > 0 the reward adds potential-based shaping (Ng, Harada and Russell 1999),
    gamma x phi(next state) - phi(state), where phi is minus the lateness and violations that the
    unfinished requests are heading for at their pods' current pace (kpilot.sim.engine
    .projected_overdue), in the same units. A long request slowed by a crowded pod is otherwise
    charged when it finishes, tens of intervals after the decision that crowded it; shaped, the
    charge comes when the crowding does. With gamma equal to the learner's discount the shaping
    leaves the best policy unchanged (its terms telescope), and it never changes what evaluation
    measures.
Episode: a window of `episode_s` seconds from one of the configured traces, chosen at random, with
    service times scaled by a factor drawn from `service_scale` and cold starts by one drawn from
    `cold_start_scale`, at the trace's time of day or (`random_time_of_day`) a random one; the first
    interval runs under a random target (warm-up, not part of the episode). In a share `idle_start`
    of episodes the load arrives 1-4 intervals late, on a revision resting at that random target.
    The episode ends by truncation after `episode_s` (no terminal states: autoscaling has no
    natural end).
Base target (`observe_base`): each episode also observes the static target that cost least on the
    `base_window_s` of its trace before it (observation kpilot-obs/4), as the operator passes a
    Service's `kpilot.dev/base-target` tuned on its recent traffic; it is right for the episode
    only as far as the load has not changed. With `base_band` > 0 every decision is kept within
    that factor of it, as the operator keeps a Service within its `kpilot.dev/band`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import gymnasium as gym
import numpy as np

from kpilot.action import ActionSpec
from kpilot.env.reward import MAX_WEIGHT, REWARD_UNITS, RewardConfig, cost_per_request
from kpilot.observation import OBS_VERSION, OBS_VERSION_BASE, encode, space_bounds
from kpilot.sim import engine as E
from kpilot.sim.batch import Batch
from kpilot.sim.config import PodConfig, SimConfig
from kpilot.traces.model import Trace


# The action space of one episode: the policy's output, mapped to a target by `ActionSpec`.
ACTION_SPACE = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

# Simulator capacity per episode, smaller than a full replay's: 64 episodes share memory. Not a
# Knative setting; `kpilot train` applies it under the config's own `sim:` too.
TRAINING_CAPACITY = {"max_pods": 192, "unlimited_in_service": 256, "queue_capacity": 20_000}


def _training_sim() -> SimConfig:
    return SimConfig(pod=PodConfig(**TRAINING_CAPACITY))


@dataclass(frozen=True)
class EnvConfig:
    traces: tuple = ("synthetic:bursty:rate=20,duration=7200",)   # specs or Trace objects
    decision_interval_s: float = 30.0
    episode_s: float = 1800.0
    service_scale: tuple = (0.7, 1.4)      # log-uniform range
    cold_start_scale: tuple = (0.5, 2.0)   # log-uniform range
    rate_scale: tuple = (1.0, 1.0)         # thin or replicate arrivals (log-uniform range)
    reward_units: str = "pods"             # or "relative" (see the module docstring)
    random_time_of_day: bool = False       # start each episode at a random time of day
    idle_start: float = 0.0                # share of episodes whose load arrives on an idle revision
    sim: SimConfig = field(default_factory=_training_sim)
    reward: RewardConfig = field(default_factory=RewardConfig)
    action: ActionSpec = field(default_factory=ActionSpec)
    change_penalty: float = 0.0            # reward units per doubling or halving of the target
    shaping_gamma: float = 0.0             # > 0: lateness shaping with this discount (the learner's)
    observe_base: bool = False             # observe the target tuned on the window before (kpilot-obs/4)
    base_window_s: float = 1800.0          # ... on this much of the trace before the episode
    base_band: float = 0.0                 # > 0: decisions kept within this factor of the base
    observation_lag_s: float = 0.0         # > 0: each episode's readings are up to this old (a scrape)

    @property
    def observation_version(self) -> str:
        return OBS_VERSION_BASE if self.observe_base else OBS_VERSION

    def to_dict(self) -> dict:
        d = asdict(self)
        d["traces"] = [t if isinstance(t, str) else t.meta.get("source", "trace") for t in self.traces]
        return d


def load_traces(specs) -> list[Trace]:
    from kpilot.traces import load_trace

    return [t if isinstance(t, Trace) else load_trace(t) for t in specs]


def _log_uniform(rng: np.random.Generator, lo_hi) -> float:
    lo, hi = float(lo_hi[0]), float(lo_hi[1])
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if hi > lo else lo


def _rescale_rate(trace: Trace, factor: float, rng: np.random.Generator) -> Trace:
    """Thin (factor < 1) or superpose jittered copies (factor > 1) of a trace's arrivals."""
    if abs(factor - 1.0) < 1e-9:
        return trace
    copies = [trace]
    whole = int(math.floor(factor))
    for _ in range(1, whole):
        jitter = rng.uniform(0.0, 1.0, len(trace))
        copies.append(Trace(trace.arrivals + jitter, trace.service, trace.failed, trace.meta))
    frac = factor - whole
    keep = rng.random(len(trace)) < (frac if whole >= 1 else factor)
    if whole >= 1 and frac > 0:
        copies.append(Trace(trace.arrivals[keep] + rng.uniform(0, 1, keep.sum()),
                            trace.service[keep], trace.failed[keep], trace.meta))
    elif whole == 0:
        copies = [Trace(trace.arrivals[keep], trace.service[keep], trace.failed[keep], trace.meta)]
    arr = np.concatenate([c.arrivals for c in copies])
    order = np.argsort(arr, kind="stable")
    return Trace(arr[order], np.concatenate([c.service for c in copies])[order],
                 np.concatenate([c.failed for c in copies])[order], trace.meta)


REFERENCE_TARGETS = (1.0, 3.0, 10.0, 30.0, 100.0, 200.0)
REFERENCE_SPAN_S = 3600.0


def reference_cost_per_request(trace: Trace, sim: SimConfig, reward: RewardConfig) -> float:
    """The best cost per request of a few static targets on the trace's first hour: the scale
    against which "relative" rewards measure a trace."""
    from kpilot.sim.replay import StaticTarget, replay

    head = trace.window(0.0, REFERENCE_SPAN_S) if trace.span_s > REFERENCE_SPAN_S else trace
    best = min(cost_per_request(replay(head, StaticTarget(t), sim, timeline=False).metrics, reward)
               for t in REFERENCE_TARGETS)
    return max(best, 1e-3)


BASE_EVERY_S = 600.0      # a base target is tuned for every 10 minutes of a trace


def segment_bases(trace: Trace, sim: SimConfig, reward: RewardConfig, window_s: float,
                  every_s: float = BASE_EVERY_S) -> tuple[np.ndarray, np.ndarray]:
    """(times, bases): at each time, the static target (kpilot.evaluate.baselines.STATIC_GRID)
    with the lowest cost per request on the `window_s` of the trace before it (from its start for
    the first, which sees no earlier traffic: it is tuned on the first `window_s`)."""
    from kpilot.evaluate.baselines import tune_static

    span = trace.span_s
    times = np.arange(min(window_s, span), max(span, window_s) + 1e-9, every_s)
    bases = []
    for t in times:
        window = trace.window(max(0.0, t - window_s), max(t, min(window_s, span)))
        if len(window) < 2:
            bases.append(bases[-1] if bases else 1.0)
            continue
        bases.append(tune_static(window, sim, reward, seeds=[0])[0])
    return times, np.asarray(bases)


def check_config(cfg: EnvConfig) -> None:
    """One ValueError naming the field for settings that would hang the engine (a NaN interval),
    run time backwards or fail deep in numpy; `kpilot train` checks its YAML first, by key."""
    def need(ok: bool, name: str, what: str, value) -> None:
        if not ok:
            raise ValueError(f"EnvConfig.{name} must be {what}, got {value!r}")

    def finite(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    need(isinstance(cfg.traces, (list, tuple)), "traces", "a list of trace specs or Trace objects", cfg.traces)
    if problem := cfg.sim.kpa.interval_problem(cfg.decision_interval_s):
        raise ValueError(f"EnvConfig.decision_interval_s {problem} (in EnvConfig.sim), "
                         f"got {cfg.decision_interval_s!r}")
    need(finite(cfg.episode_s) and cfg.episode_s >= cfg.decision_interval_s, "episode_s",
         "a number of seconds >= decision_interval_s", cfg.episode_s)
    for name in ("service_scale", "cold_start_scale", "rate_scale"):
        lo_hi = getattr(cfg, name)
        need(isinstance(lo_hi, (list, tuple)) and len(lo_hi) == 2 and all(finite(x) and x > 0 for x in lo_hi)
             and lo_hi[0] <= lo_hi[1], name, "(low, high): two positive numbers, low <= high", lo_hi)
    for name, value in vars(cfg.reward).items():
        need(finite(value) and 0 <= value <= MAX_WEIGHT, f"reward.{name}", f"a number in [0, {MAX_WEIGHT:g}]", value)
    need(finite(cfg.idle_start) and 0 <= cfg.idle_start <= 1, "idle_start", "a share in [0, 1]", cfg.idle_start)
    need(finite(cfg.change_penalty) and cfg.change_penalty >= 0, "change_penalty", "a number >= 0",
         cfg.change_penalty)
    need(finite(cfg.shaping_gamma) and 0 <= cfg.shaping_gamma <= 1, "shaping_gamma", "in [0, 1]", cfg.shaping_gamma)
    need(finite(cfg.observation_lag_s) and 0 <= cfg.observation_lag_s <= cfg.decision_interval_s,
         "observation_lag_s", "seconds in [0, decision_interval_s]", cfg.observation_lag_s)
    need(finite(cfg.action.min_target) and 0 < cfg.action.min_target <= cfg.action.max_target
         and finite(cfg.action.max_target), "action", "targets 0 < min_target <= max_target", cfg.action)


class BatchedAutoscalingEnv:
    """n independent episodes; `step(actions)` advances all of them one decision interval."""

    def __init__(self, n: int, config: EnvConfig | None = None, *, seed: int | None = 0,
                 traces: list[Trace] | None = None):
        """`seed` None: episodes drawn from OS entropy (Gymnasium's unseeded envs)."""
        self.n = n
        self.config = config or EnvConfig()
        check_config(self.config)
        self.traces = traces if traces is not None else load_traces(self.config.traces)
        if not self.traces:
            raise ValueError("the environment needs at least one trace")
        self.batch = Batch(n, self.config.sim, max_requests=4096)
        self.rng = np.random.default_rng(seed)
        self.t = np.zeros(n)          # current time in each episode's window
        self.t_end = np.zeros(n)
        if self.config.reward_units not in REWARD_UNITS:
            raise ValueError(f"reward_units must be one of {REWARD_UNITS}, got {self.config.reward_units!r}")
        self.reference = {}          # id(trace) -> reference cost per request ("relative" units)
        if self.config.reward_units == "relative":
            for t in self.traces:
                if id(t) not in self.reference:
                    self.reference[id(t)] = reference_cost_per_request(t, self.config.sim, self.config.reward)
        self.reward_divisor = np.full(n, self.config.decision_interval_s)
        self.episode_return = np.zeros(n)
        self.episode_steps = np.zeros(n, dtype=np.int64)
        self.potential = np.zeros(n)     # phi of the lateness shaping, at the last observation
        self.last_info: list[dict] = [{} for _ in range(n)]
        self.base = np.ones(n)           # each episode's base target (observe_base)
        # With observation_lag_s: each episode's lag, when it last read the revision, what it read,
        # and what queue-proxy counted after that reading, before the decision (Batch.request_counts).
        self.lag = np.zeros(n)
        self.read_at = np.zeros(n)
        self.reading: dict | None = None
        self.carried = np.zeros_like(self.batch.request_counts())
        self.bases = {}                  # id(trace) -> segment_bases(trace)
        if self.config.observe_base:
            for t in self.traces:
                if id(t) not in self.bases:
                    self.bases[id(t)] = segment_bases(t, self.config.sim, self.config.reward,
                                                      self.config.base_window_s)
        self.observation_space = gym.spaces.Box(*space_bounds(self.config.observation_version),
                                                dtype=np.float32)

    # ------------------------------------------------------------------ episodes
    def seed(self, seed) -> None:
        """An int, or a list of them (one generator draws every slot's episodes)."""
        self.rng = np.random.default_rng(seed)

    def _sample_window(self) -> tuple[Trace, float, dict]:
        cfg = self.config
        k = int(self.rng.integers(len(self.traces)))
        trace = self.traces[k]
        length = cfg.episode_s + cfg.decision_interval_s        # + the warm-up interval
        span = trace.span_s
        start = float(self.rng.uniform(0.0, span - length)) if span > length else 0.0
        window = trace.window(start, start + length)
        rate = _log_uniform(self.rng, cfg.rate_scale)
        window = _rescale_rate(window, rate, self.rng)
        svc = _log_uniform(self.rng, cfg.service_scale)
        window = window.scaled(svc)
        if cfg.idle_start > 0 and self.rng.random() < cfg.idle_start:
            # The revision rests, at the warm-up's random target, for 1-4 intervals before the load
            # arrives: what a newly managed or scaled-to-zero Service meets. Without it, an idle
            # observation only ever precedes sparse traffic, and the policy learns to hold any target.
            idle = float(self.rng.uniform(cfg.decision_interval_s, 4 * cfg.decision_interval_s))
            window = Trace(window.arrivals + idle, window.service, window.failed, window.meta)
        tod = float(trace.meta.get("start_time_of_day_s", 0.0) or 0.0) + start
        if cfg.random_time_of_day:
            # Traces shorter than a day show each hour once: the clock would identify the trace and
            # its position instead of teaching a daily pattern, and held-out windows come later.
            tod = float(self.rng.uniform(0.0, 86400.0))
        info = {"trace": trace.meta.get("source", f"trace{k}"), "trace_index": k, "window_start_s": start,
                "service_scale": svc, "rate_scale": rate, "time_of_day_s": tod}
        if cfg.observe_base:
            times, bases = self.bases[id(trace)]
            info["base_target"] = float(bases[max(0, int(np.searchsorted(times, start, side="right")) - 1)])
        return window, min(length, max(span - start, cfg.decision_interval_s * 2)), info

    def reset_many(self, episodes) -> None:
        """Start new episodes in the given slots and run their warm-up interval in one engine call."""
        cfg = self.config
        episodes = list(episodes)
        t_stop = self.batch.F[:, E.F_NOW].copy()     # the others stay where they are
        for e in episodes:
            window, length, info = self._sample_window()
            cold = _log_uniform(self.rng, cfg.cold_start_scale)
            a0 = float(self.rng.uniform(-1.0, 1.0))
            self.batch.reset(e, window, seed=int(self.rng.integers(2**31)),
                             target=float(cfg.action.to_target(a0)), cold_start_scale=cold,
                             time_of_day_s=info["time_of_day_s"] % 86400.0)
            t_stop[e] = cfg.decision_interval_s
            if cfg.observation_lag_s > 0:      # drawn only then: unlagged training draws as it did
                self.lag[e] = float(self.rng.uniform(0.0, cfg.observation_lag_s))
                self.read_at[e] = 0.0
                self.carried[e] = 0.0
            self.t[e] = cfg.decision_interval_s
            self.t_end[e] = length
            if cfg.reward_units == "relative":
                per_interval = len(window) * cfg.decision_interval_s / max(length, cfg.decision_interval_s)
                self.reward_divisor[e] = max(1.0, per_interval) * self.reference[id(self.traces[info["trace_index"]])]
            self.episode_return[e] = 0.0
            self.episode_steps[e] = 0
            self.base[e] = info.get("base_target", 1.0)
            self.last_info[e] = {**info, "cold_start_scale": cold, "observation_lag_s": float(self.lag[e])}
        self._advance(t_stop, episodes)
        # The warm-up's statistics describe the interval the first observation reports.
        if cfg.shaping_gamma > 0:
            self.potential[episodes] = self._potential()[episodes]

    def reset_one(self, e: int) -> None:
        self.reset_many([e])

    def reset_all(self) -> np.ndarray:
        self.reset_many(range(self.n))
        return self.observe()

    # ------------------------------------------------------------------ stepping
    def _potential(self) -> np.ndarray:
        """phi: minus the cost of the lateness the unfinished requests are heading for, in reward units."""
        late, missed = self.batch.projected_overdue()
        reward = self.config.reward
        return -(reward.cost_per_late_second * late + reward.cost_per_violation * missed) / self.reward_divisor

    def _advance(self, t_stop: np.ndarray, episodes) -> None:
        """Advance every episode to its `t_stop`; with a lag, the `episodes` that reach a decision
        read the revision on the way, their lag before it."""
        if self.config.observation_lag_s <= 0:
            self.batch.advance(t_stop)
            return
        read = np.zeros(self.n, dtype=bool)
        read[list(episodes)] = True
        read_at = np.where(read, t_stop - self.lag, self.batch.F[:, E.F_NOW])
        self.batch.advance(read_at)
        raw = self.batch.raw_observation(np.maximum(read_at - self.read_at, 1e-9), carried=self.carried)
        if self.reading is None:
            self.reading = raw
        for name, values in raw.items():
            self.reading[name][read] = values[read]
        seen = self.batch.request_counts()
        self.read_at[read] = read_at[read]
        self.batch.advance(t_stop)
        self.carried[read] = (self.batch.request_counts() - seen)[read]

    def observe(self) -> np.ndarray:
        if self.config.observation_lag_s > 0:
            raw = {**self.reading, "time_of_day_s": self.batch.time_of_day_s()}
        else:
            raw = self.batch.raw_observation(self.config.decision_interval_s)
        return encode(**raw, base_target=self.base if self.config.observe_base else None)

    def step(self, actions: np.ndarray):
        """Apply actions, advance one interval. Returns obs, rewards, truncated, infos.

        Episodes that end are NOT reset here; the adapters decide how (auto-reset for SB3).
        """
        cfg = self.config
        actions = np.asarray(actions, dtype=np.float64).reshape(self.n)
        if np.isnan(actions).any():     # smoothed into the running target, it would stay NaN all episode
            raise ValueError(f"actions must be numbers in [-1, 1], got NaN for env {int(np.argmax(np.isnan(actions)))}")
        previous = self.batch.F[:, E.F_TARGET].copy()
        # An episode's first decision takes over a target the policy did not set (kpilot.action).
        targets = cfg.action.decide(np.asarray(actions, dtype=np.float64).reshape(self.n), previous,
                                    first=self.episode_steps == 0)
        if cfg.base_band > 0:
            targets = np.clip(targets, self.base / cfg.base_band, self.base * cfg.base_band)
        self.batch.F[:, E.F_TARGET] = targets
        self.batch.start_interval()
        t_next = self.t + cfg.decision_interval_s
        self._advance(t_next, range(self.n))
        self.t = t_next
        S = self.batch.S
        violations = S[:, E.S_VIOLATIONS] + S[:, E.S_REJECTED]
        # Lateness is charged when a late request finishes (an episode's unfinished tail is left to
        # the value function, which SB3 bootstraps at truncation).
        cost = cfg.reward.cost(S[:, E.S_POD_SECONDS], violations, S[:, E.S_COLD_STARTS],
                               S[:, E.S_LATE_SECONDS])
        rewards = -cost / self.reward_divisor
        if cfg.change_penalty > 0:
            # Training only (evaluation never charges it): a price on moving the target, so that
            # holding one is the default and a move must pay for itself in pods or SLOs.
            rewards = rewards - cfg.change_penalty * np.abs(np.log2(targets / np.maximum(previous, 1e-9)))
        if cfg.shaping_gamma > 0:
            potential = self._potential()
            rewards = rewards + cfg.shaping_gamma * potential - self.potential
            self.potential = potential
        self.episode_return += rewards
        self.episode_steps += 1
        truncated = self.t >= self.t_end - 1e-9
        obs = self.observe()
        infos = [{"target": float(targets[e]), "pod_seconds": float(S[e, E.S_POD_SECONDS]),
                  "violations": float(violations[e]), "cold_starts": float(S[e, E.S_COLD_STARTS]),
                  "late_seconds": float(S[e, E.S_LATE_SECONDS]),
                  "arrivals": float(S[e, E.S_ARRIVALS])} for e in range(self.n)]
        return obs, rewards.astype(np.float32), truncated, infos
