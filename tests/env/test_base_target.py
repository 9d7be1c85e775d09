"""Observation version 2: the Service's base target, from training episodes to the operator's read.

A policy trained with `env.observe_base` sees the static target tuned on the traffic before each
episode, as the operator passes a Service's `kpilot.dev/base-target`."""

import numpy as np
import pytest

from kpilot.action import ActionSpec
from kpilot.controllers import PolicyController
from kpilot.env.core import BatchedAutoscalingEnv, EnvConfig, segment_bases
from kpilot.env.reward import cost_per_request
from kpilot.errors import PolicyError
from kpilot.evaluate.baselines import STATIC_GRID
from kpilot.observation import FEATURES_BY_VERSION, N_FEATURES, OBS_VERSION, OBS_VERSION_BASE, encode
from kpilot.policy import policy_from_bytes, policy_to_bytes
from kpilot.sim.replay import StaticTarget, replay
from kpilot.traces.synthetic import synthetic_trace

RAW = dict(concurrency_stable=3.0, concurrency_panic=4.0, ready_pods=2.0, desired_pods=2.0, starting_pods=0.0,
           target=10.0, request_rate=5.0, latency_mean_s=0.2, latency_p95_s=0.5, panic=0.0, time_of_day_s=3600.0)


def base_reader(spec: ActionSpec = ActionSpec(1.0, 200.0)):
    """A version 2 policy whose pick is exactly the base target it observes (log-linear in it)."""
    n = len(FEATURES_BY_VERSION[OBS_VERSION_BASE])
    lo, hi = np.log(spec.min_target), np.log(spec.max_target)
    weight = np.zeros((1, n))
    weight[0, -1] = 2.0 / (hi - lo)             # action = 2 (log base - lo) / (hi - lo) - 1
    return policy_from_bytes(policy_to_bytes(
        layers=[(weight, np.array([-1.0 - 2.0 * lo / (hi - lo)]))], obs_mean=np.zeros(n),
        obs_var=np.full(n, 1.0 - 1e-8), action_spec=spec, observation_version=OBS_VERSION_BASE))


def test_version_2_adds_the_log_base_target_and_version_1_is_unchanged():
    v1, v2 = encode(**RAW), encode(**RAW, base_target=7.0)
    assert v1.shape == (N_FEATURES,) and v2.shape == (N_FEATURES + 1,)
    np.testing.assert_array_equal(v2[:-1], v1)
    assert v2[-1] == pytest.approx(np.log(7.0))
    batch = encode(**{k: np.full(3, v) for k, v in RAW.items()}, base_target=np.array([1.0, 2.0, 4.0]))
    np.testing.assert_allclose(batch[:, -1], np.log([1.0, 2.0, 4.0]), rtol=1e-6)


def test_a_version_2_policy_round_trips_and_a_mismatched_one_is_refused():
    policy = base_reader()
    assert policy.observes_base and policy.observation_version == OBS_VERSION_BASE
    assert float(policy.target(encode(**RAW, base_target=7.0))) == pytest.approx(7.0)
    # Version 2 statistics on a version 1 feature list: one clear error, not a shape crash later.
    n = N_FEATURES + 1
    bad = policy_to_bytes(layers=[(np.zeros((1, n)), np.zeros(1))], obs_mean=np.zeros(n), obs_var=np.ones(n),
                          action_spec=ActionSpec(), observation_version=OBS_VERSION)
    with pytest.raises(PolicyError, match="wrong shape"):
        policy_from_bytes(bad)


def test_the_controller_passes_the_base_target_or_else_the_current_one():
    reader = base_reader()
    assert PolicyController(reader, base=7.0).decide(RAW, first=True) == pytest.approx(7.0)
    # No base given (a Service without the annotation): the current target stands in for it.
    assert PolicyController(reader).decide(RAW, first=True) == pytest.approx(10.0)


def test_segment_bases_are_the_best_static_target_on_the_window_before():
    trace = synthetic_trace("onoff", {"rate": 6, "duration": 2400}, seed=4)
    sim = EnvConfig().sim
    reward = EnvConfig().reward
    times, bases = segment_bases(trace, sim, reward, window_s=900.0, every_s=600.0)
    assert list(times) == [900.0, 1500.0, 2100.0]
    for t, base in zip(times, bases):
        window = trace.window(t - 900.0, t)
        costs = {g: cost_per_request(replay(window, StaticTarget(float(g)), sim, timeline=False).metrics, reward)
                 for g in STATIC_GRID}
        assert base == min(costs, key=lambda g: (costs[g], g))


def test_episodes_observe_their_base_and_stay_in_its_band():
    trace = synthetic_trace("onoff", {"rate": 6, "duration": 2400}, seed=4)
    cfg = EnvConfig(episode_s=300.0, observe_base=True, base_window_s=600.0, base_band=1.5)
    env = BatchedAutoscalingEnv(6, cfg, seed=1, traces=[trace])
    obs = env.reset_all()
    assert obs.shape == (6, N_FEATURES + 1) and env.observation_space.shape == (N_FEATURES + 1,)
    times, bases = env.bases[id(trace)]
    for e in range(6):
        info = env.last_info[e]
        k = max(0, int(np.searchsorted(times, info["window_start_s"], side="right")) - 1)
        assert info["base_target"] == bases[k] == env.base[e]
        assert obs[e, -1] == pytest.approx(np.log(bases[k]), rel=1e-6)
    for action, extreme in ((-1.0, 1.0), (1.0, 200.0)):   # the extremes of the action range
        targets = np.array([i["target"] for i in env.step(np.full(6, action))[3]])
        np.testing.assert_allclose(targets, np.clip(extreme, env.base / 1.5, env.base * 1.5))
    # Without a band the same extremes pass unclamped.
    free = BatchedAutoscalingEnv(2, EnvConfig(episode_s=300.0, observe_base=True, base_window_s=600.0), seed=1,
                                 traces=[trace])
    free.reset_all()
    np.testing.assert_allclose([i["target"] for i in free.step(np.full(2, 1.0))[3]], [200.0, 200.0])


def test_the_operator_feeds_a_version_2_policy_each_services_base_target():
    from kpilot_operator.annotations import TARGET, Holder
    from kpilot_operator.reconcile import ServiceView, decide
    from kpilot_operator.spec import parse_spec

    spec = parse_spec({"selector": {}, "policy": {"path": "/p", "sha256": "a" * 64}, "metrics": {"kubernetes": {}},
                       "mode": "Enforce", "bounds": {"minTarget": 1, "maxTarget": 200}, "maxStepRatio": 100})
    services = [ServiceView("based", "ns", False, ("r1",), base_target=12.0), ServiceView("plain", "ns", False, ("r2",))]
    holders = {"r1": Holder("Revision", "ns", "r1", "based", "1", {TARGET: "100"}),
               "r2": Holder("Revision", "ns", "r2", "plain", "1", {TARGET: "50"})}
    reading = {k: v for k, v in RAW.items() if k not in ("target", "time_of_day_s")}
    plan = decide(policy_name="p", spec=spec, services=services, holders=holders,
                  readings={"r1": reading, "r2": reading}, policy=base_reader(), last_fresh={}, now=1e6)
    # The annotated Service's base is what the policy read; the other reads its current target.
    assert [s.decision for s in plan.services] == [12.0, 50.0]
    assert [(w.holder.name, w.target) for w in plan.writes] == [("r1", 12.0)]
    # The Service without one is told why its target does not move.
    assert [s.message for s in plan.services] == [
        "", "the policy reads a kpilot.dev/base-target and this Service has none: it reads the current target"]


def test_evaluation_replays_a_version_2_policy_once_per_base_target():
    # evaluate_trace reuses the replays of controllers that decide alike: for a version 2 policy
    # the base target is part of how it decides (rl alone reads the current target, rl-in-band
    # --band none the tuned one), so two bases are two replays.
    from kpilot.evaluate.runner import evaluate_trace
    from kpilot.sim.config import SimConfig

    trace = synthetic_trace("bursty", {"rate": 4, "duration": 600}, seed=2)
    sim, reward = SimConfig(), EnvConfig().reward
    reader = base_reader()
    alone, based = PolicyController(reader, name="rl:alone"), PolicyController(reader, name="based", base=3.0)
    rows, _ = evaluate_trace("t", trace, [alone, based], sim, reward, seeds=[0])
    on_its_own = replay(trace, PolicyController(reader, base=3.0), sim, seed=0, timeline=False).metrics
    assert rows[1]["pod_seconds"] == pytest.approx(on_its_own["pod_seconds"])
    assert rows[0]["pod_seconds"] != pytest.approx(rows[1]["pod_seconds"])
