"""The reward: what a platform team pays for, in pod-seconds.

Per decision interval:

    reward = -(cost_per_pod_second x pod_seconds
               + cost_per_violation x slo_violations
               + cost_per_cold_start x cold_starts) / interval_s

pod_seconds counts every pod that exists (starting, ready or draining); a request violates its
SLO when its latency exceeds `slo.slowdown x its service time + slo.offset_s` (kpilot.sim.config),
and a rejected request counts as a violation; a cold start is a request that waited for a pod to
start. Dividing by the interval keeps rewards in "pods" units whatever the interval.

The score `evaluate` reports for a whole replay is the same sum divided by the requests served,
negated: minus the cost per request, in pod-seconds. Higher is better; 0 would be free.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


# How the environment scales the interval's cost into a reward (kpilot.env.core).
REWARD_UNITS = ("pods", "relative")


@dataclass(frozen=True)
class RewardConfig:
    cost_per_pod_second: float = 1.0
    cost_per_violation: float = 10.0
    cost_per_cold_start: float = 2.0

    def cost(self, pod_seconds, violations, cold_starts):
        return (self.cost_per_pod_second * pod_seconds + self.cost_per_violation * violations
                + self.cost_per_cold_start * cold_starts)

    def to_dict(self) -> dict:
        return asdict(self)


def cost_per_request(metrics: dict, reward: RewardConfig) -> float:
    """A replay's cost per request under `reward` (what evaluation takes ratios of)."""
    cost = reward.cost(metrics["pod_seconds"], metrics["slo_violations"], metrics["cold_starts"])
    return cost / max(1, metrics["requests"])


def score(metrics: dict, reward: RewardConfig) -> float:
    """The replay's score under `reward`: minus its cost per request (higher is better)."""
    return -cost_per_request(metrics, reward)
