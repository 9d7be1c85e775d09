"""Training on readings as old as a cluster's scrape (`env.observation_lag_s`): each episode reads
the revision a lag before each decision, and every request is counted once."""

import numpy as np
import pytest

from kpilot.env.core import TRAINING_CAPACITY, BatchedAutoscalingEnv, EnvConfig
from kpilot.observation import FEATURES
from kpilot.sim.config import PodConfig, SimConfig
from kpilot.traces.model import make_trace

RATE = FEATURES.index("request_rate")
BURST = 50                      # requests of 0.1 s arriving at 40-45 s


def env(lag_s: float, n: int = 24) -> BatchedAutoscalingEnv:
    # One burst, then a last request at 150 s that only stretches the trace over the whole episode.
    trace = make_trace(np.append(np.linspace(40.0, 45.0, BURST), 150.0), np.full(BURST + 1, 0.1))
    config = EnvConfig(traces=(trace,), decision_interval_s=30.0, episode_s=120.0, service_scale=(1.0, 1.0),
                       cold_start_scale=(1.0, 1.0), idle_start=0.0, observation_lag_s=lag_s,
                       sim=SimConfig(pod=PodConfig(cold_start="instant", **TRAINING_CAPACITY)))
    return BatchedAutoscalingEnv(n, config, seed=5)


def request_rates(e: BatchedAutoscalingEnv) -> np.ndarray:
    """Each decision's observed request rate (req/s), one column per decision of the episode."""
    seen = [e.reset_all()]
    for _ in range(3):
        seen.append(e.step(np.zeros(e.n))[0])
    return np.expm1(np.stack(seen)[:, :, RATE].astype(np.float64)).T


def test_without_a_lag_the_burst_is_read_at_the_first_decision_after_it():
    rates = request_rates(env(0.0))
    assert rates[:, 1] * 30.0 == pytest.approx(np.full(len(rates), BURST), rel=1e-5)
    assert not rates[:, [0, 2, 3]].any()


def test_a_lagged_episode_reads_the_burst_late_and_counts_every_request_once():
    e = env(29.0)
    rates = request_rates(e)
    lags = np.array([info["observation_lag_s"] for info in e.last_info])
    assert ((0.0 <= lags) & (lags < 29.0)).all() and np.ptp(lags) > 15.0      # drawn per episode
    # Window k ends at 30 (k + 1) - lag; the first starts at 0, the others where the last ended.
    windows = np.column_stack([30.0 - lags] + [np.full(len(lags), 30.0)] * 3)
    assert (rates * windows).sum(axis=1) == pytest.approx(np.full(len(lags), BURST), rel=1e-5)
    before = lags > 60.0 - 39.9            # read at 60 - lag, before the burst's first request ended
    after = lags < 60.0 - 45.2             # read after its last one ended
    assert before.any() and after.any()
    assert not rates[before, 1].any() and (rates[before, 2] * 30.0 == pytest.approx(BURST, rel=1e-5))
    assert rates[after, 1] * 30.0 == pytest.approx(np.full(after.sum(), BURST), rel=1e-5)


def test_a_lag_longer_than_a_decision_interval_is_refused():
    with pytest.raises(ValueError, match="observation_lag_s must be seconds in"):
        env(31.0)
