"""Who sets the target in a replay: Knative's defaults, a fixed value, or a trained policy.

`parse_controller` turns the CLI's `--policy kpa | static:TARGET | PATH` into one of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from kpilot.action import DEFAULT_INTERVAL_S
from kpilot.errors import ConfigError
from kpilot.observation import KNATIVE_DEFAULT_UTILIZATION, METRICS_SOURCES, encode, pod_autoscaler_readings
from kpilot.policy import ExportedPolicy, load_policy
from kpilot.sim.replay import KpaDefault, StaticTarget



@dataclass
class PolicyController:
    """Runs an exported policy every `interval_s`, smoothed and within its step limit, as the
    operator does. With `metrics="kubernetes"` it sees only what the operator's PodAutoscaler-only
    metrics source reads (kpilot.observation.pod_autoscaler_readings). With `bounds` (min, max)
    every decision is clamped into them afterwards, as the operator clamps into a Service's band
    (kpilot.action.band_bounds). A policy that observes a base target (observation version 4)
    reads `base`, or the revision's current target where there is none. With `observation_lag_s`
    its readings are that old, as Prometheus's last scrape is (kpilot.sim.replay.observation_lag)."""

    policy: ExportedPolicy
    interval_s: float = DEFAULT_INTERVAL_S
    name: str = "rl"
    metrics: str = "prometheus"
    observation_lag_s: float = 0.0
    bounds: tuple[float, float] | None = None
    base: float | None = None
    # With metrics "kubernetes": the utilization the PodAutoscaler's desired scale is inverted at,
    # the simulator's container_concurrency_target_percentage / 100 (the operator: the revision's).
    utilization: float = KNATIVE_DEFAULT_UTILIZATION

    def __post_init__(self):
        if self.metrics not in METRICS_SOURCES:
            raise ValueError(f"metrics must be one of {', '.join(METRICS_SOURCES)}, got {self.metrics!r}")

    def decide(self, raw_obs: dict, *, first: bool = False) -> float:
        if self.metrics == "kubernetes":
            raw_obs = {**raw_obs, **pod_autoscaler_readings(raw_obs["ready_pods"], raw_obs["desired_pods"],
                                                            raw_obs["target"], self.utilization)}
        base = None
        if self.policy.observes_base:
            base = self.base if self.base is not None else raw_obs["target"]
        proposed = self.policy.target(encode(**raw_obs, base_target=base))
        target = float(self.policy.action_spec.follow(proposed, raw_obs["target"], first))
        return target if self.bounds is None else min(self.bounds[1], max(self.bounds[0], target))

    def first_decision(self, raw_obs: dict) -> float:
        """The decision that takes over a revision's target: not smoothed (kpilot.action)."""
        return self.decide(raw_obs, first=True)


def is_builtin(option: str) -> bool:
    """`kpa` or `static:N`: a controller with no policy file behind it."""
    text = option.strip()
    return text == "kpa" or text.startswith("static:")


def static_target(text: str) -> float | None:
    """The N of `static:N` if it is a target Knative accepts (finite, >= 0.01), else None."""
    try:
        target = float(text.split(":", 1)[1])
    except (IndexError, ValueError):
        return None
    return target if 0.01 <= target < float("inf") else None


def parse_controller(option: str, *, interval_s: float = DEFAULT_INTERVAL_S):
    """`kpa`, `static:TARGET` or a policy path (directory or policy.json)."""
    text = option.strip()
    if text == "kpa":
        return KpaDefault()
    if text.startswith("static:"):
        target = static_target(text)
        if target is None:
            raise ConfigError(f"static target must be a finite number >= 0.01, got {text!r}", option="--policy")
        return StaticTarget(target)
    policy = load_policy(text)
    name = policy.manifest.get("name") or text.rstrip("/").split("/")[-1]
    return PolicyController(policy, interval_s=interval_s, name=f"rl:{name}")
