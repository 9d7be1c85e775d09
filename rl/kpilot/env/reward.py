"""The reward: what a platform team pays for, in pod-seconds.

Per decision interval:

    reward = -(cost_per_pod_second x pod_seconds
               + cost_per_violation x slo_violations
               + cost_per_late_second x late_seconds
               + cost_per_cold_start x cold_starts) / interval_s

pod_seconds counts every pod that exists (starting, ready or draining); a request violates its
SLO when its latency exceeds `slo.slowdown x its service time + slo.offset_s` (kpilot.sim.config),
and a rejected request counts as a violation; late_seconds sums how far past that deadline the
late requests finished (a replay charges a request that never finishes up to its end); a cold
start is a request that waited for a pod to start. Dividing by the interval keeps rewards in
"pods" units whatever the interval.

Why lateness as well as a count: with a flat price per violation, once a request is late it costs
nothing more to keep it waiting, and on sparse workloads with long requests the cheapest static
target became one overloaded pod that left requests waiting for minutes or unfinished (on the Azure
Functions 2021 held-out window, 7 of 24 requests never finished in 14 minutes). One pod-second per
late second prices a waiting user like a pod: serving late is allowed, abandoning is not free.

The score `evaluate` reports for a whole replay is the same sum divided by the requests served,
negated: minus the cost per request, in pod-seconds. Higher is better; 0 would be free.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


# How the environment scales the interval's cost into a reward (kpilot.env.core).
REWARD_UNITS = ("pods", "relative")
# The largest weight, in pod-seconds per unit: a violation worth more than a million pod-seconds
# (11 pod-days) means nothing, and far larger ones overflow a replay's cost to inf (scores of -inf).
MAX_WEIGHT = 1e6


@dataclass(frozen=True)
class RewardConfig:
    cost_per_pod_second: float = 1.0
    cost_per_violation: float = 10.0
    cost_per_cold_start: float = 2.0
    cost_per_late_second: float = 1.0

    def cost(self, pod_seconds, violations, cold_starts, late_seconds):
        return (self.cost_per_pod_second * pod_seconds + self.cost_per_violation * violations
                + self.cost_per_cold_start * cold_starts + self.cost_per_late_second * late_seconds)

    def to_dict(self) -> dict:
        return asdict(self)


def describe(reward: RewardConfig) -> str:
    """The cost formula with `reward`'s weights, for tables and reports."""
    return (f"pod-seconds + {reward.cost_per_violation:g} x SLO violations + {reward.cost_per_late_second:g} x "
            f"seconds late + {reward.cost_per_cold_start:g} x cold starts")


def cost_per_request(metrics: dict, reward: RewardConfig) -> float:
    """A replay's cost per request under `reward` (what evaluation takes ratios of)."""
    cost = reward.cost(metrics["pod_seconds"], metrics["slo_violations"], metrics["cold_starts"],
                       metrics["late_seconds"])
    return cost / max(1, metrics["requests"])


def score(metrics: dict, reward: RewardConfig) -> float:
    """The replay's score under `reward`: minus its cost per request (higher is better)."""
    return -cost_per_request(metrics, reward)
