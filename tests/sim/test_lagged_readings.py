"""A controller whose readings are `observation_lag_s` old sees the revision as it was then, as
the operator sees it through Prometheus's last scrape."""

import numpy as np
import pytest

from kpilot.sim.config import KpaConfig, PodConfig, SimConfig
from kpilot.sim.replay import replay
from kpilot.traces.model import make_trace

INTERVAL = 30.0


class Recorder:
    """Holds target 2 and keeps every reading it is shown."""

    name, target, interval_s = "recorder", 2.0, INTERVAL

    def __init__(self, lag_s: float):
        self.observation_lag_s = lag_s
        self.seen: list[dict] = []

    def decide(self, raw: dict) -> float:
        self.seen.append(raw)
        return 2.0


def bursty_trace(seed=3):
    # Bursts of 1 s requests every 70 s, so that a reading 10 s earlier tells another story.
    rng = np.random.default_rng(seed)
    arrivals = np.sort(np.concatenate([start + rng.uniform(0, 8, 40) for start in np.arange(5, 600, 70)]))
    return make_trace(arrivals, rng.uniform(0.5, 1.5, len(arrivals)))


def run(lag_s):
    config = SimConfig(kpa=KpaConfig(), pod=PodConfig(cold_start="instant"))
    trace = bursty_trace()
    controller = Recorder(lag_s)
    result = replay(trace, controller, config, seed=0)
    return trace, controller.seen, result


def test_a_lagged_reading_counts_the_requests_finished_in_the_interval_before_it():
    trace, seen, result = run(10.0)
    finished = trace.arrivals + result.latencies          # queue-proxy counts a request when it ends
    read_at = [INTERVAL * (k + 1) - 10.0 for k in range(len(seen))]
    counted = 0
    for k, raw in enumerate(seen):
        since = read_at[k - 1] if k else 0.0
        expected = int(((finished > since) & (finished <= read_at[k])).sum())
        counted += expected
        assert raw["request_rate"] * (read_at[k] - since) == pytest.approx(expected)
    assert counted > 300      # the bursts were counted, not only empty windows


def test_a_lagged_reading_shows_the_autoscaler_of_that_moment_and_the_decisions_clock():
    _, seen, result = run(10.0)
    tl = result.timeline
    for k, raw in enumerate(seen):
        # The autoscaler's last tick before the reading (as an unlagged reading shows the last before
        # the decision).
        row = int(np.flatnonzero(tl["t"] < INTERVAL * (k + 1) - 10.0)[-1])
        assert raw["concurrency_stable"] == pytest.approx(tl["observed_concurrency_stable"][row])
        assert raw["concurrency_panic"] == pytest.approx(tl["observed_concurrency_panic"][row])
        assert raw["desired_pods"] == tl["desired_pods"][row]
        assert raw["time_of_day_s"] == pytest.approx(INTERVAL * (k + 1))    # the clock is the decision's
        assert raw["target"] == 2.0


def test_lag_changes_what_is_seen_not_the_revision():
    _, fresh, unlagged = run(0.0)
    _, old, lagged = run(10.0)
    assert len(fresh) == len(old)
    # The same target throughout: the revision, and what it cost, are the same.
    assert lagged.metrics["pod_seconds"] == pytest.approx(unlagged.metrics["pod_seconds"])
    assert lagged.metrics["slo_violations"] == unlagged.metrics["slo_violations"]
    differs = [a["concurrency_panic"] != b["concurrency_panic"] for a, b in zip(fresh, old)]
    assert sum(differs) >= len(fresh) // 2


@pytest.mark.parametrize("lag", [-1.0, INTERVAL, 45.0])
def test_a_lag_outside_the_decision_interval_is_refused(lag):
    with pytest.raises(ValueError, match="observation_lag_s must be >= 0 and less than the decision interval"):
        run(lag)
