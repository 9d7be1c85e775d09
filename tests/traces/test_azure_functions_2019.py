"""Azure Functions 2019: the clock, the arrivals and the durations say what the dataset recorded.

The dataset's documentation: minute columns are 1..1440; an invocation is counted after it executes
(in the minute it ended); `Average` is the mean execution time of the day, and the percentiles are
of the same durations.
"""

import numpy as np
import pytest

from kpilot.errors import TraceError
from kpilot.traces import load_trace

PCTS = (0, 1, 25, 50, 75, 99, 100)
DURATIONS_HEADER = ("HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum,"
                    + ",".join(f"percentile_Average_{p}" for p in PCTS) + "\n")
SKEWED = (10, 20, 50, 100, 200, 1000, 10000)      # ms; interpolated linearly its mean is 263.8 ms


def write(tmp_path, minutes, counts, durations):
    """invocations.csv (minute labels `minutes`, {function: counts}) and durations.csv beside it
    ({function: (Average, Count, percentiles)}); returns the invocations file."""
    invocations = tmp_path / "invocations.csv"
    invocations.write_text("HashOwner,HashApp,HashFunction,Trigger," + ",".join(map(str, minutes)) + "\n"
                           + "".join(f"o,a,{f},http," + ",".join(map(str, c)) + "\n" for f, c in counts.items()))
    (tmp_path / "durations.csv").write_text(DURATIONS_HEADER + "".join(
        f"o,a,{f},{avg},{count},{p[0]},{p[-1]}," + ",".join(map(str, p)) + "\n"
        for f, (avg, count, p) in durations.items()))
    return invocations


def message(path):
    with pytest.raises(TraceError) as info:
        load_trace(path)
    return str(info.value)


def test_the_clock_starts_at_the_first_minutes_beginning_and_minute_labels_are_1_based(tmp_path):
    flat = {"f": (100, 1, (100,) * 7)}
    # Minute 600 of the day is 09:59-10:00; minute 1 is 00:00-00:01.
    assert load_trace(write(tmp_path, [600, 601], {"f": [1, 1]}, flat)).meta["start_time_of_day_s"] == 599 * 60
    assert load_trace(write(tmp_path, [1, 2], {"f": [1, 1]}, flat)).meta["start_time_of_day_s"] == 0.0
    path = write(tmp_path, [0, 1, 2], {"f": [1, 1, 1]}, flat)
    assert message(path) == (f"{path}, line 1: minute column 0: minute labels are 1-based (1..1440, the "
                             "dataset's minutes of the day)")


def test_an_invocation_arrives_its_duration_before_the_minute_that_counted_it(tmp_path):
    # `long` runs 90 s: counted in minute 4 (180-240 s) it started in 90-150 s; counted in minute 1
    # it started before the excerpt, so it arrives at 0 with only the work it had left.
    path = write(tmp_path, [1, 2, 3, 4, 5], {"long": [1, 0, 0, 2, 0], "short": [0, 0, 3, 0, 0]},
                 {"long": (90000, 3, (90000,) * 7), "short": (10, 3, (10,) * 7)})
    for seed in range(20):      # the short ones land before, between and after the long ones
        trace = load_trace(path, seed=seed)
        assert len(trace) == 6 and trace.meta["started_before_excerpt"] == 1
        assert np.all(np.diff(trace.arrivals) >= 0)
        assert trace.arrivals[0] == 0.0 and 0.0 < trace.service[0] < 60.0       # its remaining work
        assert trace.arrivals[0] + trace.service[0] < 60.0
        long = trace.service == np.float32(90.0)
        assert long.sum() == 2 and np.all((trace.arrivals[long] >= 90.0) & (trace.arrivals[long] < 150.0))
        short = trace.service == np.float32(0.01)
        assert short.sum() == 3 and np.all((trace.arrivals[short] >= 120.0 - 0.01) & (trace.arrivals[short] < 180.0))
        # Sorting carried each service time with its arrival: each still completes in its minute.
        ends = np.floor((trace.arrivals + trace.service) / 60.0)
        assert np.all(ends[long] == 3) and np.all(ends[short] == 2)
        assert trace.meta["span_s"] == 300.0


def test_sampled_durations_have_the_published_mean_and_percentiles(tmp_path):
    path = write(tmp_path, [1, 2, 3, 4, 5], {"f": [40000] * 5}, {"f": (180, 200000, SKEWED)})
    trace = load_trace(path)
    assert len(trace) == 200000 and 0 < trace.meta["started_before_excerpt"] < 1000
    # Those that started before the excerpt bring only the work they had left: set them aside.
    service = trace.service[trace.arrivals > 0].astype(np.float64) * 1000.0      # ms
    assert service.mean() == pytest.approx(180, rel=0.02)        # interpolated linearly: 263.8
    assert np.median(service) == pytest.approx(100, rel=0.02)
    for p, value in zip(PCTS[1:-1], SKEWED[1:-1]):                 # the CDF passes through each one
        assert np.mean(service <= value * (1 + 1e-6)) == pytest.approx(p / 100, abs=0.005)
    assert service.min() >= 10 * (1 - 1e-6) and service.max() <= 10000 * (1 + 1e-6)


def test_an_average_the_percentiles_cannot_reach_takes_the_nearest_end(tmp_path):
    lower, upper = SKEWED[:-1], SKEWED[1:]
    for average, ends in ((5, lower), (20000, upper)):
        trace = load_trace(write(tmp_path, [1, 2], {"f": [0, 2000]}, {"f": (average, 1, SKEWED)}))
        assert len(trace) == 2000 and trace.meta["started_before_excerpt"] == 0      # all within 60 s
        assert np.all(np.isin(np.round(trace.service.astype(np.float64) * 1000.0, 3), ends))


def test_a_function_without_durations_gets_the_count_weighted_average(tmp_path):
    path = write(tmp_path, [1, 2, 3], {"g": [50000] * 3, "f": [1, 0, 0]},
                 {"f": (150, 1, SKEWED), "h": (250, 3, SKEWED)})
    trace = load_trace(f"{path}?function=g")
    assert trace.meta["functions_without_durations"] == 1
    assert trace.service.astype(np.float64).mean() * 1000.0 == pytest.approx(225, rel=0.02)


def test_durations_without_a_valid_average_are_refused(tmp_path):
    path = write(tmp_path, [1, 2], {"f": [1, 1]}, {"f": (100, 1, (100,) * 7)})
    durations = tmp_path / "durations.csv"
    lines = durations.read_text().splitlines()
    header = lines[0].split(",")
    at = header.index("Average")
    durations.write_text("\n".join(",".join(v for k, v in enumerate(line.split(",")) if k != at)
                                   for line in lines) + "\n")
    assert message(path).startswith(f"{durations}, line 1: missing column 'Average' required by the "
                                    "azure-functions-2019 durations format (header has: HashOwner,")
    write(tmp_path, [1, 2], {"f": [1, 1]}, {"f": (-5, 1, (100,) * 7)})
    assert message(path) == f"{durations}, line 2, column 4 (Average): negative duration -5"
    write(tmp_path, [1, 2], {"f": [1, 1]}, {"f": ("1e12", 1, (100,) * 7)})
    assert message(path) == (f"{durations}, line 2, column 4 (Average): Average 1e+12: at most 6.048e+08 ms "
                             "(a week) of work for one request")
