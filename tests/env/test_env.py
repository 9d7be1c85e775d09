"""The environment: gymnasium's and SB3's checkers, batching, resets and the reward."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from kpilot.env import ENV_ID, EnvConfig, KnativeAutoscalingEnv, RewardConfig
from kpilot.env.core import BatchedAutoscalingEnv
from kpilot.env.vector import KnativeAutoscalingVecEnv
from kpilot.observation import N_FEATURES
from kpilot.traces.model import make_trace
from kpilot.traces.synthetic import synthetic_trace

TRACE = synthetic_trace("bursty", {"rate": 10, "duration": 1200}, seed=3)
SMALL = EnvConfig(episode_s=300.0)


def test_single_env_passes_gymnasium_checker():
    with warnings.catch_warnings():
        warnings.simplefilter("error", category=UserWarning)
        gym_check_env(KnativeAutoscalingEnv(SMALL, traces=[TRACE]), skip_render_check=True)


def test_single_env_passes_sb3_checker():
    sb3_check_env(KnativeAutoscalingEnv(SMALL, traces=[TRACE]), warn=True)


def test_registered_and_makeable():
    env = gym.make(ENV_ID, config=SMALL, traces=[TRACE])
    obs, _ = env.reset(seed=0)
    assert obs.shape == (N_FEATURES,)
    vec = gym.make_vec(ENV_ID, num_envs=3, vectorization_mode="vector_entry_point", config=SMALL,
                       traces=[TRACE])
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (3, N_FEATURES)
    obs, rew, term, trunc, _ = vec.step(np.zeros((3, 1), dtype=np.float32))
    assert rew.shape == (3,) and not term.any()


def test_episode_truncates_after_episode_length():
    env = KnativeAutoscalingEnv(SMALL, traces=[TRACE])
    env.reset(seed=1)
    steps, truncated = 0, False
    while not truncated:
        _, _, terminated, truncated, _ = env.step(np.array([0.0], dtype=np.float32))
        assert not terminated
        steps += 1
    assert steps == SMALL.episode_s / SMALL.decision_interval_s


def test_vec_env_auto_resets_and_reports_terminal_observation():
    env = KnativeAutoscalingVecEnv(4, SMALL, seed=0, traces=[TRACE])
    env.reset()
    n_steps = int(SMALL.episode_s / SMALL.decision_interval_s)
    for i in range(n_steps):
        obs, rewards, dones, infos = env.step(np.zeros((4, 1)))
    assert dones.all()
    assert all("terminal_observation" in info and info["TimeLimit.truncated"] for info in infos)
    assert all(info["episode"]["l"] == n_steps for info in infos)
    obs, _, dones, _ = env.step(np.zeros((4, 1)))
    assert not dones.any() and obs.shape == (4, N_FEATURES)


def test_same_seed_same_episodes():
    def run(seed):
        env = KnativeAutoscalingVecEnv(3, SMALL, seed=seed, traces=[TRACE])
        obs = [env.reset()]
        for a in np.linspace(-1, 1, 5):
            obs.append(env.step(np.full((3, 1), a))[0])
        return np.stack(obs)

    np.testing.assert_array_equal(run(7), run(7))
    assert not np.array_equal(run(7), run(8))


def test_reward_is_the_interval_cost_per_second():
    reward = RewardConfig(cost_per_pod_second=1.0, cost_per_violation=0.0, cost_per_cold_start=0.0,
                          cost_per_late_second=0.0)
    env = KnativeAutoscalingVecEnv(2, EnvConfig(episode_s=300.0, reward=reward), seed=0, traces=[TRACE])
    env.reset()
    _, rewards, _, infos = env.step(np.zeros((2, 1)))
    for r, info in zip(rewards, infos):
        assert r == pytest.approx(-info["pod_seconds"] / 30.0, rel=1e-5)
        assert r < 0


def test_reward_charges_each_second_a_request_finishes_past_its_deadline():
    # One pod, target 200: a burst of 2 s requests queues behind itself, so most finish late.
    burst = make_trace(np.linspace(0.0, 1.0, 40), np.full(40, 2.0, dtype=np.float32))
    only_late = RewardConfig(cost_per_pod_second=0.0, cost_per_violation=0.0, cost_per_cold_start=0.0,
                             cost_per_late_second=1.0)
    env = BatchedAutoscalingEnv(1, EnvConfig(episode_s=120.0, reward=only_late), seed=0, traces=[burst])
    env.reset_all()
    total_late, total_reward = 0.0, 0.0
    for _ in range(3):
        _, rewards, _, infos = env.step(np.ones(1))
        total_late += infos[0]["late_seconds"]
        total_reward += float(rewards[0])
    assert total_late > 30.0
    assert total_reward == pytest.approx(-total_late / 30.0, rel=1e-5)


def _mean_return(traces, units: str, steps: int = 10) -> float:
    env = BatchedAutoscalingEnv(4, EnvConfig(episode_s=300.0, reward_units=units), seed=1, traces=traces)
    env.reset_all()
    total = 0.0
    for _ in range(steps):
        _, rewards, _, _ = env.step(np.full(4, -0.5))
        total += float(rewards.mean())
    return total


def test_relative_rewards_weigh_a_busy_and_a_quiet_trace_alike():
    quiet = synthetic_trace("poisson", {"rate": 1, "duration": 1200}, seed=4)
    busy = synthetic_trace("poisson", {"rate": 50, "duration": 1200}, seed=4)
    pods = _mean_return([busy], "pods") / _mean_return([quiet], "pods")
    relative = _mean_return([busy], "relative") / _mean_return([quiet], "relative")
    assert pods > 10                 # in pods, the busy trace dominates any mix of the two
    assert 0.2 < relative < 5        # per request over each trace's reference: comparable


def test_relative_reward_is_cost_per_request_over_the_reference():
    env = BatchedAutoscalingEnv(1, EnvConfig(episode_s=300.0, reward_units="relative"), seed=0,
                                traces=[TRACE])
    env.reset_all()
    _, rewards, _, infos = env.step(np.zeros(1))
    ref = env.reference[id(TRACE)]
    requests_per_interval = len(TRACE.window(env.last_info[0]["window_start_s"],
                                             env.last_info[0]["window_start_s"] + 330.0)) * 30.0 / 330.0
    cost = (infos[0]["pod_seconds"] + 10.0 * infos[0]["violations"] + 2.0 * infos[0]["cold_starts"]
            + 1.0 * infos[0]["late_seconds"])
    assert rewards[0] == pytest.approx(-cost / (requests_per_interval * ref), rel=1e-4)


def test_unknown_reward_units_are_refused():
    with pytest.raises(ValueError, match="reward_units"):
        BatchedAutoscalingEnv(1, EnvConfig(reward_units="dollars"), traces=[TRACE])


def test_action_sets_the_target_and_more_capacity_costs_more():
    env = KnativeAutoscalingVecEnv(2, SMALL, seed=0, traces=[TRACE])
    env.reset()
    pods = np.zeros(2)
    for _ in range(6):
        _, _, _, infos = env.step(np.array([[-1.0], [1.0]]))
        pods += [i["pod_seconds"] for i in infos]
    assert infos[0]["target"] == pytest.approx(SMALL.action.min_target)
    assert infos[1]["target"] == pytest.approx(SMALL.action.max_target)
    assert pods[0] > pods[1]


def test_step_limit_moves_the_target_at_most_one_factor_per_decision():
    from kpilot.action import ActionSpec
    from kpilot.sim.engine import F_TARGET

    cfg = EnvConfig(episode_s=900.0, action=ActionSpec(1.0, 200.0, max_step_ratio=1.0))
    env = BatchedAutoscalingEnv(1, cfg, seed=0, traces=[TRACE])
    env.reset_all()
    targets = [float(env.batch.F[0, F_TARGET])]          # the warm-up's random target
    for action in [1.0] * 9 + [-1.0] * 9:                # ask for the maximum, then the minimum
        _, _, _, infos = env.step(np.array([action]))
        targets.append(infos[0]["target"])
    ratios = np.array(targets[1:]) / np.array(targets[:-1])
    assert np.all(ratios <= 2.0 + 1e-9) and np.all(ratios >= 0.5 - 1e-9)
    assert targets[9] == pytest.approx(200.0)            # 8 doublings span 1..200 from anywhere
    assert targets[10] == pytest.approx(100.0)           # and down again one halving at a time
    assert targets[-2:] == pytest.approx([1.0, 1.0])     # 200 / 2**8 < 1: the bound holds


def test_smoothing_moves_the_target_part_of_the_way_per_decision():
    from kpilot.action import ActionSpec

    cfg = EnvConfig(episode_s=900.0, action=ActionSpec(1.0, 200.0, smoothing=0.5))
    env = BatchedAutoscalingEnv(1, cfg, seed=0, traces=[TRACE])
    env.reset_all()
    _, _, _, infos = env.step(np.array([-1.0]))          # the first decision takes over at once
    targets = [infos[0]["target"]]
    assert targets[0] == pytest.approx(1.0)
    for _ in range(6):                                   # then ask for the maximum every decision
        _, _, _, infos = env.step(np.array([1.0]))
        targets.append(infos[0]["target"])
    # log(200 / target) halves each decision: the target approaches 200 and never jumps there.
    gaps = np.log(200.0 / np.array(targets))
    assert gaps[1:] == pytest.approx(gaps[:-1] / 2)
    assert targets[-1] < 200.0


def test_immediate_cuts_lower_the_target_at_once_and_raise_it_smoothly():
    from kpilot.action import ActionSpec

    spec = ActionSpec(1.0, 200.0, smoothing=0.5, immediate_cuts=True)
    env = BatchedAutoscalingEnv(1, EnvConfig(episode_s=900.0, action=spec), seed=0, traces=[TRACE])
    env.reset_all()
    env.step(np.array([1.0]))                            # first decision: 200 at once
    _, _, _, infos = env.step(spec.to_action(np.array([50.0])))
    assert infos[0]["target"] == pytest.approx(50.0)     # a cut (more pods) runs at once
    _, _, _, infos = env.step(np.array([1.0]))
    assert infos[0]["target"] == pytest.approx(100.0)    # a raise goes half way: sqrt(50 x 200)


def test_change_penalty_charges_each_doubling_of_the_target_in_training_only():
    from kpilot.action import ActionSpec

    spec = ActionSpec(1.0, 16.0)
    plain = BatchedAutoscalingEnv(1, EnvConfig(episode_s=900.0, action=spec), seed=0, traces=[TRACE])
    priced = BatchedAutoscalingEnv(1, EnvConfig(episode_s=900.0, action=spec, change_penalty=0.1),
                                   seed=0, traces=[TRACE])
    plain.reset_all()
    priced.reset_all()
    targets = [2.0, 8.0, 8.0, 1.0]                       # x4, hold, /8
    for before, target in zip([None, *targets], targets):
        action = np.array([float(spec.to_action(target))])
        _, r_plain, _, i_plain = plain.step(action)
        _, r_priced, _, i_priced = priced.step(action)
        assert i_priced[0] == i_plain[0]                 # the same simulation: only the reward differs
        if before is not None:
            assert r_plain[0] - r_priced[0] == pytest.approx(0.1 * abs(np.log2(target / before)), abs=1e-4)


def test_idle_start_lets_the_load_arrive_on_a_resting_revision():
    from kpilot.observation import FEATURES

    rate = FEATURES.index("request_rate")
    busy = BatchedAutoscalingEnv(8, EnvConfig(episode_s=600.0), seed=0, traces=[TRACE]).reset_all()
    idle_env = BatchedAutoscalingEnv(8, EnvConfig(episode_s=600.0, idle_start=1.0), seed=0, traces=[TRACE])
    idle = idle_env.reset_all()
    assert np.all(busy[:, rate] > 0)                    # the warm-up interval already carries load
    assert np.all(idle[:, rate] == 0)                   # at rest: nothing arrived in the first interval
    for _ in range(4):                                  # ... and the load comes within 4 intervals
        obs, _, _, _ = idle_env.step(np.zeros(8))
    assert np.all(obs[:, rate] > 0)


def _long_burst_env(shaping_gamma: float) -> BatchedAutoscalingEnv:
    # Twelve 60 s requests, one every 4 s: at target 200 they crowd one pod, and the first of them
    # finishes (late) minutes after the decision that crowded them; at target 1 each gets a pod.
    # A last short request at 1,150 s keeps the episode going until every long one has finished.
    burst = make_trace(np.append(np.arange(12) * 4.0 + 31.0, 1150.0),
                       np.append(np.full(12, 60.0), 0.1).astype(np.float32))
    only_late = RewardConfig(cost_per_pod_second=0.0, cost_per_violation=10.0, cost_per_cold_start=0.0,
                             cost_per_late_second=1.0)
    env = BatchedAutoscalingEnv(1, EnvConfig(episode_s=1200.0, reward=only_late,
                                             shaping_gamma=shaping_gamma), seed=0, traces=[burst])
    env.reset_all()
    return env


def test_lateness_shaping_charges_crowding_when_it_happens_and_telescopes():
    plain, shaped = _long_burst_env(0.0), _long_burst_env(1.0)
    high = np.ones(1)                                     # target 200: all twelve on one pod
    plain_rewards, shaped_rewards = [], []
    for _ in range(40):
        _, r_plain, trunc, i_plain = plain.step(high)
        _, r_shaped, _, i_shaped = shaped.step(high)
        assert i_shaped[0] == i_plain[0]                  # the same simulation: only the reward differs
        plain_rewards.append(float(r_plain[0]))
        shaped_rewards.append(float(r_shaped[0]))
        if trunc[0]:
            break
    # Unshaped, the first interval after the burst costs nothing (nothing has finished yet);
    # shaped, it carries the lateness the crowded pod is heading for.
    assert plain_rewards[0] == 0.0
    assert shaped_rewards[0] < -1.0
    # With gamma 1 the shaping terms telescope: once every request has finished (potential 0), the
    # shaped and unshaped returns agree, so the best policy is the same under both.
    assert shaped.potential[0] == 0.0
    assert sum(shaped_rewards) == pytest.approx(sum(plain_rewards), rel=1e-6)
    assert sum(plain_rewards) < -1.0


def test_lateness_shaping_tells_a_crowded_pod_from_enough_pods_at_once():
    crowded, spread = _long_burst_env(0.98), _long_burst_env(0.98)
    _, r_crowded, _, _ = crowded.step(np.ones(1))         # target 200
    _, r_spread, _, _ = spread.step(-np.ones(1))          # target 1: a pod per request
    assert r_crowded[0] < r_spread[0] - 1.0


def test_gymnasium_vector_env_autoresets_on_the_same_step_and_matches_the_single_env():
    """It once declared next-step autoreset and then applied the next action to the new episode
    without returning its first observation."""
    vec = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="vector_entry_point", config=SMALL, traces=[TRACE])
    assert vec.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    single = KnativeAutoscalingEnv(SMALL, traces=[TRACE])
    obs, _ = vec.reset(seed=3)
    first, _ = single.reset(seed=3)
    assert np.array_equal(obs[0], first)
    n_steps = int(SMALL.episode_s / SMALL.decision_interval_s)
    for i in range(n_steps):
        obs, rewards, term, trunc, info = vec.step(np.zeros((2, 1), dtype=np.float32))
        s_obs, s_reward, _, s_trunc, s_info = single.step(np.array([0.0], dtype=np.float32))
        assert rewards[0] == pytest.approx(s_reward) and bool(trunc[0]) == s_trunc and not term.any()
        if i < n_steps - 1:
            assert np.array_equal(obs[0], s_obs) and "final_obs" not in info
            assert info["cold_starts"][0] == s_info["cold_starts"]
    assert trunc.all() and info["_final_obs"].all() and np.array_equal(info["final_obs"][0], s_obs)
    assert info["final_info"]["cold_starts"][0] == s_info["cold_starts"]
    # The top level holds the new episodes' info (their windows), as Gymnasium's SyncVectorEnv does.
    assert info["_window_start_s"].all() and "window_start_s" not in info["final_info"]
    assert np.all((info["window_start_s"] >= 0) & (info["window_start_s"] <= TRACE.span_s))
    assert vec.observation_space.contains(obs)          # the next episodes' first observations
