"""The baselines a learned policy has to beat, and the calibration of the rule-based one.

* `kpa`: Knative's defaults (no target annotation: 100 at 70 %).
* `static:N`: the annotation fixed at N, for every N on `STATIC_GRID`; the best of them on a trace
  is "the best static target in hindsight" (an oracle: it knows the whole trace in advance).
* `static-tuned`: the target a careful operator would set by hand from the traffic they already
  have: the best of `STATIC_GRID` on the window just before the evaluated one (`tune_static`).
  Not an oracle; it is what a learned policy has to beat to be worth running.
* `rl-in-band`: the policy kept within a factor of `--band` (default 1.5) of `static-tuned`'s
  target, as the operator runs a Service given that target as its `kpilot.dev/base-target`.
* `rl-or-tuned`: the per-Service choice a platform team can make from the same traffic: the
  policy in its band where it cost no more than the best static target on that earlier window,
  else `static-tuned`'s target alone (a band of 1) (kpilot.evaluate.runner.choose_policy_or_static).
* `rule:aimd`: a latency-feedback rule an SRE would write: every interval, shrink the target by
  `down` when the interval's p95 latency exceeds `hi_s`, grow it by `up` when p95 is below
  `lo_frac x hi_s`, else hold. It reads only the observation contract, as the policy does. Its
  parameters are calibrated by grid search on the TRAINING windows (`calibrate_rule`), which
  `kpilot train` does and records in the policy manifest, so the rule gets the same data as PPO.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np

from kpilot.env.reward import RewardConfig
from kpilot.env.reward import cost_per_request as cost  # minus the score: what ratios are taken of
from kpilot.sim.config import SimConfig
from kpilot.sim.replay import KpaDefault, StaticTarget, replay

STATIC_GRID = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200)
RULE_GRID = {"hi_s": (0.25, 0.5, 1.0, 2.0, 4.0), "down": (0.5, 0.8), "up": (1.1, 1.5)}


@dataclass(frozen=True)
class AimdRule:
    hi_s: float = 1.0        # p95 latency (s) above which the target shrinks
    lo_frac: float = 0.5     # grow when p95 < lo_frac x hi_s
    down: float = 0.7
    up: float = 1.25
    start: float = 2.0       # target before the first decision (replay applies `target` at t=0)
    min_target: float = 1.0
    max_target: float = 200.0
    interval_s: float = 30.0
    name: str = "rule:aimd"
    observation_lag_s: float = 0.0   # how old its readings are (kpilot.sim.replay.observation_lag)

    @property
    def target(self) -> float:
        return self.start

    def decide(self, raw: dict) -> float:
        current, p95 = float(raw["target"]), float(raw["latency_p95_s"])
        if p95 > self.hi_s:
            current *= self.down
        elif p95 < self.lo_frac * self.hi_s:
            current *= self.up
        return float(min(self.max_target, max(self.min_target, current)))

    def params(self) -> dict:
        d = asdict(self)
        d.pop("name")
        d.pop("observation_lag_s")      # the cluster's, not the rule's calibration
        return d



@dataclass(frozen=True)
class TunedStaticTarget:
    """A static target chosen on an earlier window of the same trace (`tuned_on`, fractions of
    its span); replayed like `static:N`, reported as `static-tuned` with its `target`."""

    target: float
    tuned_on: tuple[float, float]
    interval_s: float = math.inf
    name: str = "static-tuned"

    def row_fields(self) -> dict:
        # Rounded as TunedPolicy's: the window's fractions read 0.6, not 0.6000000000000001.
        fields = {"target": self.target, "tuned_on": [round(f, 6) for f in self.tuned_on]}
        return fields if self.name == "static-tuned" else {"chose": f"static:{self.target:g}", **fields,
                                                           "band": 1.0}


def tuning_window(window: tuple[float, float]) -> tuple[float, float] | None:
    """The window `static-tuned` is tuned on: as long as `window` and just before it (cut at the
    trace's start); None when `window` starts at the start."""
    lo, hi = window
    return (max(0.0, lo - (hi - lo)), lo) if lo > 0.0 else None


def mean_cost(trace, controller, sim: SimConfig, reward: RewardConfig, seeds: list[int]) -> float:
    """The controller's cost per request on `trace`, averaged over simulator `seeds`."""
    return float(np.mean([cost(replay(trace, controller, sim, seed=s, timeline=False).metrics, reward)
                          for s in seeds]))


def tune_static(trace, sim: SimConfig, reward: RewardConfig, *, seeds: list[int],
                grid=STATIC_GRID) -> tuple[float, float]:
    """The grid target with the lowest mean cost on `trace` over `seeds`, and that cost; on a tie
    the lower target (e.g. every target that keeps one pod for a light function)."""
    cost_, target = min((mean_cost(trace, StaticTarget(float(t)), sim, reward, seeds), float(t))
                        for t in sorted(grid))
    return target, cost_


def geomean(values) -> float:
    v = np.asarray(list(values), dtype=np.float64)
    return float(np.exp(np.mean(np.log(np.maximum(v, 1e-12))))) if len(v) else math.nan


def calibrate_rule(traces, sim: SimConfig, reward: RewardConfig, *, seed: int = 0,
                   grid: dict | None = None, interval_s: float = 30.0,
                   min_target: float = 1.0, max_target: float = 200.0) -> tuple[AimdRule, dict]:
    """Grid-search the rule on `traces` (training windows): minimise the geometric mean over
    traces of its cost relative to KPA defaults. Returns the rule and a summary."""
    grid = {**RULE_GRID, **(grid or {})}
    kpa_cost = [cost(replay(t, KpaDefault(), sim, seed=seed, timeline=False).metrics, reward) for t in traces]
    best, best_val, tried = None, math.inf, 0
    keys = sorted(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        rule = AimdRule(**dict(zip(keys, values)), interval_s=interval_s, min_target=min_target,
                        max_target=max_target)
        ratios = [cost(replay(t, rule, sim, seed=seed, timeline=False).metrics, reward) / max(k, 1e-12)
                  for t, k in zip(traces, kpa_cost)]
        tried += 1
        val = geomean(ratios)
        if val < best_val:
            best, best_val = rule, val
    return best, {"params": best.params(), "train_cost_vs_kpa": best_val, "grid_points": tried}


def static_controllers(grid=STATIC_GRID) -> list[StaticTarget]:
    return [StaticTarget(float(t)) for t in grid]
