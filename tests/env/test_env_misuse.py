"""What an RL user driving the environment directly (Gymnasium, SB3, a CleanRL-style loop) gets
wrong or relies on: unseeded envs, NaN actions, bad settings, seed lists, render_mode."""

import math
from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest

from kpilot.action import ActionSpec
from kpilot.env import ENV_ID, EnvConfig, KnativeAutoscalingEnv, RewardConfig
from kpilot.env.vector import KnativeAutoscalingVectorEnv
from kpilot.traces.synthetic import synthetic_trace

TRACE = synthetic_trace("bursty", {"rate": 10, "duration": 1200}, seed=3)
SHORT = EnvConfig(episode_s=300.0)


def test_unseeded_envs_do_not_replay_the_same_episodes():
    # Every instance drew from seed 0: vector sub-envs, and a training and an evaluation env on
    # the same traces, replayed the same windows whatever the actions.
    envs = [gym.make(ENV_ID, config=SHORT, traces=[TRACE]) for _ in range(4)]
    starts = {env.reset()[1]["window_start_s"] for env in envs}
    assert len(starts) > 1
    vec = gym.make_vec(ENV_ID, num_envs=4, vectorization_mode="sync", config=SHORT, traces=[TRACE])
    assert len(set(vec.reset()[1]["window_start_s"])) > 1
    # Seeded, they are reproducible as before.
    a, b = (gym.make(ENV_ID, config=SHORT, traces=[TRACE]) for _ in range(2))
    assert np.array_equal(a.reset(seed=7)[0], b.reset(seed=7)[0])


def test_a_seed_list_seeds_the_vector_env_whole():
    v = KnativeAutoscalingVectorEnv(3, SHORT, traces=[TRACE])
    first = v.reset(seed=[1, 2, 3])[0]
    assert np.array_equal(first, v.reset(seed=[1, 2, 3])[0])
    assert not np.array_equal(first, v.reset(seed=[1, 99, 100])[0])     # only the first seed counted


def test_the_vector_envs_reset_info_describes_each_episode_as_the_single_envs_does():
    # It was {}: which trace window each slot replays was known only after the first autoreset.
    v = KnativeAutoscalingVectorEnv(3, SHORT, traces=[TRACE])
    _, info = v.reset(seed=5)
    single = KnativeAutoscalingEnv(SHORT, traces=[TRACE]).reset(seed=5)[1]
    assert set(info) >= set(single) and "window_start_s" in single
    assert len(info["window_start_s"]) == 3 and info["_window_start_s"].all()
    starts = list(info["window_start_s"])
    assert all(0 <= s < TRACE.span_s for s in starts) and len(set(starts)) > 1


def test_a_nan_action_is_an_error_not_a_silently_stuck_target():
    # Smoothed into the running target, one NaN made every later action a no-op at target 100.
    env = KnativeAutoscalingEnv(replace(SHORT, action=ActionSpec(smoothing=0.5, immediate_cuts=True)), traces=[TRACE])
    env.reset(seed=0)
    env.step(np.array([0.0], np.float32))
    with pytest.raises(ValueError, match="got NaN for env 0"):
        env.step(np.array([np.nan], np.float32))
    _, _, _, _, info = env.step(np.array([1.0], np.float32))      # the episode goes on, unharmed
    assert math.isfinite(info["target"])


@pytest.mark.parametrize("change, field", [
    (dict(decision_interval_s=math.nan), "decision_interval_s"),      # hung inside the engine
    (dict(decision_interval_s=-30.0), "decision_interval_s"),         # time ran backwards
    (dict(decision_interval_s=0.0), "decision_interval_s"),
    (dict(episode_s=-300.0), "episode_s"),
    (dict(service_scale=(0.0, 1.0)), "service_scale"),                # failed deep in numpy
    (dict(rate_scale=(-1.0, -1.0)), "rate_scale"),
    (dict(reward=RewardConfig(cost_per_violation=math.nan)), "reward.cost_per_violation"),
    (dict(reward=RewardConfig(cost_per_pod_second=-1.0)), "reward.cost_per_pod_second"),
    (dict(reward=RewardConfig(cost_per_violation=1e308)), "reward.cost_per_violation"),     # costs of inf
    (dict(traces="synthetic:poisson"), "traces"),                     # read as one trace per character
    (dict(action=ActionSpec(min_target=0.0)), "action"),              # log(0): NaN targets
])
def test_bad_settings_are_one_error_naming_the_field(change, field):
    with pytest.raises(ValueError, match=rf"^EnvConfig\.{field} must be "):
        KnativeAutoscalingEnv(replace(SHORT, **change), traces=[TRACE])


def test_render_mode_is_accepted_as_gymnasium_passes_it():
    env = gym.make(ENV_ID, config=SHORT, traces=[TRACE], render_mode=None)
    assert env.reset(seed=0)[0].shape == env.observation_space.shape
    assert KnativeAutoscalingEnv(SHORT, traces=[TRACE], render_mode="rgb_array").render_mode == "rgb_array"


def test_each_gymnasium_env_has_its_own_action_space():
    # One shared Box: seeding one env's action space re-seeded every other env's samples.
    trace = synthetic_trace("poisson", {"rate": 2, "duration": 600}, seed=1)
    a, b = (KnativeAutoscalingEnv(EnvConfig(episode_s=300.0), traces=[trace]) for _ in range(2))
    v = KnativeAutoscalingVectorEnv(2, EnvConfig(episode_s=300.0), traces=[trace])
    a.action_space.seed(1)
    first = a.action_space.sample()
    a.action_space.seed(1)
    b.action_space.seed(2)
    v.single_action_space.seed(3)
    assert a.action_space.sample() == first
