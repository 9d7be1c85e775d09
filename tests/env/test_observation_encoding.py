"""The observation contract, feature by feature: each encoded value against the module's table."""

import math

import numpy as np
import pytest

from kpilot.observation import FEATURES, encode

# Distinct readings, so a feature computed from the wrong input (or a swapped pair) shows.
RAW = dict(concurrency_stable=9.0, concurrency_panic=20.0, ready_pods=3.0, desired_pods=5.0,
           starting_pods=2.0, target=4.0, request_rate=7.0, latency_mean_s=0.25, latency_p95_s=1.5,
           panic=1.0, time_of_day_s=4 * 3600.0)   # 04:00 UTC: a sixth of the day, phase pi/3


def _by_name(obs):
    return dict(zip(FEATURES, obs))


def test_each_feature_follows_its_documented_encoding():
    expected = {
        "concurrency_stable": math.log(10.0),       # log1p(9)
        "concurrency_panic": math.log(21.0),
        "ready_pods": math.log(4.0),
        "desired_pods": math.log(6.0),
        "starting_pods": math.log(3.0),
        "target": math.log(4.0),                    # log, not log1p
        "request_rate": math.log(8.0),
        "latency_mean_s": math.log(1.25),
        "latency_p95_s": math.log(2.5),
        "utilization": 0.75,                        # 9 / (3 pods x target 4)
        "panic": 1.0,
        "time_of_day_sin": math.sqrt(3) / 2,        # sin(pi/3)
        "time_of_day_cos": 0.5,                     # cos(pi/3)
    }
    assert set(expected) == set(FEATURES)
    got = _by_name(encode(**RAW))
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-6), name


def test_utilization_counts_at_least_one_pod_and_is_capped_at_ten():
    # No ready pod: divide by one pod. 3 / (1 x 2) = 1.5.
    idle = _by_name(encode(**{**RAW, "concurrency_stable": 3.0, "ready_pods": 0.0, "target": 2.0}))
    assert idle["utilization"] == pytest.approx(1.5)
    # 100 / (1 x 2) = 50, clipped to 10.
    flooded = _by_name(encode(**{**RAW, "concurrency_stable": 100.0, "ready_pods": 0.0, "target": 2.0}))
    assert flooded["utilization"] == pytest.approx(10.0)


def test_time_of_day_wraps_at_midnight_and_batches_encode_row_by_row():
    # 18:00 is three quarters of the day: sin = -1, cos = 0; a day later reads the same.
    times = np.array([18 * 3600.0, 18 * 3600.0 + 86400.0])
    rows = encode(**{**{k: np.full(2, v) for k, v in RAW.items()}, "time_of_day_s": times})
    for row in rows:
        got = _by_name(row)
        assert got["time_of_day_sin"] == pytest.approx(-1.0, abs=1e-6)
        assert got["time_of_day_cos"] == pytest.approx(0.0, abs=1e-6)
