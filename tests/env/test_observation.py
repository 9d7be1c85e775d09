"""The observation contract's p95: what Prometheus's histogram_quantile reads from queue-proxy."""

import numpy as np
import pytest

from kpilot.observation import LATENCY_BUCKETS_S, histogram_quantile


def _counts(**by_bound):
    """Counts per bucket, keyed by upper bound ("1_0" for 1.0 s, "inf" for +Inf)."""
    counts = np.zeros(len(LATENCY_BUCKETS_S) + 1)
    for bound, n in by_bound.items():
        if bound == "inf":
            counts[-1] = n
        else:
            counts[list(LATENCY_BUCKETS_S).index(float(bound.replace("_", ".")))] = n
    return counts


def test_the_rank_is_interpolated_inside_its_bucket():
    # 10 requests in (0.75, 1]: rank 9.5 of 10 lies 95 % of the way through the bucket.
    assert histogram_quantile(0.95, _counts(**{"1_0": 10}))[0] == pytest.approx(0.9875)
    # The first bucket starts at 0.
    assert histogram_quantile(0.5, _counts(**{"0_005": 2}))[0] == pytest.approx(0.0025)
    # 90 fast requests and 10 in (2.5, 5]: the p95 is in the slow bucket, halfway.
    assert histogram_quantile(0.95, _counts(**{"0_01": 90, "5_0": 10}))[0] == pytest.approx(3.75)


def test_beyond_the_last_bound_it_reads_the_last_bound_and_nothing_reads_zero():
    assert histogram_quantile(0.95, _counts(inf=3))[0] == 10.0
    assert list(histogram_quantile(0.95, np.zeros((2, len(LATENCY_BUCKETS_S) + 1)))) == [0.0, 0.0]
