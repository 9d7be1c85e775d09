"""The calibrated rule baseline (`rule:aimd`): its decision, and its calibration picking the best
grid point on the training windows."""

from __future__ import annotations

import math

import pytest

from kpilot.env.reward import RewardConfig
from kpilot.env.reward import cost_per_request as cost
from kpilot.evaluate.baselines import AimdRule, calibrate_rule, geomean
from kpilot.sim.config import SimConfig
from kpilot.sim.replay import KpaDefault, replay
from kpilot.traces.loader import load_trace


def test_the_rule_shrinks_on_slow_p95_grows_on_fast_and_holds_between():
    rule = AimdRule(hi_s=1.0, lo_frac=0.5, down=0.5, up=2.0, min_target=1.0, max_target=200.0)
    assert rule.decide({"target": 10.0, "latency_p95_s": 1.5}) == 5.0      # above hi_s: fewer requests per pod
    assert rule.decide({"target": 10.0, "latency_p95_s": 0.2}) == 20.0     # below half of it: more
    assert rule.decide({"target": 10.0, "latency_p95_s": 0.7}) == 10.0     # in between: hold
    assert rule.decide({"target": 10.0, "latency_p95_s": 1.0}) == 10.0     # at hi_s exactly: hold
    assert rule.decide({"target": 1.5, "latency_p95_s": 9.0}) == 1.0       # never below its bounds
    assert rule.decide({"target": 150.0, "latency_p95_s": 0.0}) == 200.0


def test_calibration_keeps_the_grid_point_that_costs_least_against_kpa():
    # Two traces, four grid points whose costs differ: the kept rule must be the one with the lowest
    # geometric mean of cost over KPA defaults, computed here replay by replay.
    traces = [load_trace("synthetic:bursty:rate=3,duration=600,seed=21"),
              load_trace("synthetic:onoff:rate=4,duration=600,seed=22,service=0.5")]
    sim, reward = SimConfig(), RewardConfig()
    grid = {"hi_s": (0.1, 4.0), "down": (0.5,), "up": (1.1, 1.5), "lo_frac": (0.5,), "start": (2.0,)}
    rule, summary = calibrate_rule(traces, sim, reward, seed=3, grid=grid)

    def score(candidate: AimdRule) -> float:
        return geomean([cost(replay(t, candidate, sim, seed=3, timeline=False).metrics, reward)
                        / cost(replay(t, KpaDefault(), sim, seed=3, timeline=False).metrics, reward)
                        for t in traces])

    scores = {(hi, up): score(AimdRule(hi_s=hi, down=0.5, up=up)) for hi in (0.1, 4.0) for up in (1.1, 1.5)}
    assert len(set(round(v, 9) for v in scores.values())) > 1, scores      # a choice to get wrong
    best = min(scores, key=scores.get)
    assert (rule.hi_s, rule.up) == best and summary["grid_points"] == 4
    assert summary["train_cost_vs_kpa"] == pytest.approx(scores[best])
    assert math.isclose(summary["params"]["hi_s"], best[0])
