"""Per-episode rescaling (`env.service_scale`, `env.rate_scale`): an episode runs the trace's
window with its service times multiplied by the drawn service scale and its arrivals thinned or
replicated by the rate scale."""

import numpy as np
import pytest

from kpilot.env import EnvConfig, KnativeAutoscalingEnv
from kpilot.observation import FEATURES
from kpilot.traces.model import make_trace

# One 0.1 s request every second, mid-second: any 30 s interval holds exactly 30 of them, and
# each runs alone on its pod, so the interval's mean latency is its service time.
SERVICE_S = 0.1
TRACE = make_trace(np.arange(400) + 0.5, np.full(400, SERVICE_S, dtype=np.float32))
LATENCY = FEATURES.index("latency_mean_s")


def _run(config, seed):
    env = KnativeAutoscalingEnv(config, traces=[TRACE])
    _, info = env.reset(seed=seed)
    steps, truncated = [], False
    while not truncated:
        obs, _, _, truncated, step_info = env.step(np.array([1.0], dtype=np.float32))   # one pod
        steps.append((obs, step_info))
    return info, steps


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_service_times_follow_the_episode_service_scale(seed):
    info, steps = _run(EnvConfig(episode_s=300.0, service_scale=(0.5, 2.0)), seed)
    scale = info["service_scale"]
    assert 0.5 <= scale <= 2.0 and scale != pytest.approx(1.0, abs=0.01)
    for obs, _ in steps:
        assert np.expm1(obs[LATENCY]) == pytest.approx(SERVICE_S * scale, rel=1e-3)


def test_rate_scale_replicates_or_thins_the_arrivals():
    # The 10 decision intervals after the warm-up hold 300 of the trace's requests.
    def arrivals(factor):
        info, steps = _run(EnvConfig(episode_s=300.0, service_scale=(1.0, 1.0),
                                     rate_scale=(factor, factor)), seed=0)
        assert info["rate_scale"] == pytest.approx(factor)
        return sum(step_info["arrivals"] for _, step_info in steps)

    # x2: a jittered copy of each request (jitter < 1 s can move one across either end).
    assert arrivals(2.0) == pytest.approx(600, abs=2)
    # x0.5: each request kept with probability 1/2; Binomial(300, 1/2) has s.d. 8.7.
    assert arrivals(0.5) == pytest.approx(150, abs=35)
