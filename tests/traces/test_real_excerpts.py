"""The real public-trace excerpts (KPILOT_TRACES) load with the numbers a user would expect."""

import numpy as np
import pytest

from kpilot.traces import detect_format, load_coldstart_table, load_trace

pytestmark = pytest.mark.traces


def test_burstgpt_head(real_traces):
    t = load_trace(real_traces / "burstgpt" / "BurstGPT_1_head42.csv")
    assert t.meta["format"] == "burstgpt" and len(t) == 42 and t.meta["failed"] == 4
    assert t.meta["origin_s"] == 5.0 and 4720 <= t.arrivals[-1] < 4721


def test_azure_llm_2023(real_traces):
    t = load_trace(real_traces / "azure-llm-2023" / "AzureLLMInferenceTrace_code.csv")
    assert len(t) == 8819 and t.arrivals[0] == 0.0
    assert 55 * 60 < t.arrivals[-1] < 59 * 60
    assert t.meta["start_time_of_day_s"] == pytest.approx(18 * 3600 + 17 * 60 + 3.97996)


def test_azure_functions_2021(real_traces):
    t = load_trace(real_traces / "azure-functions-2021" / "AzureFunctionsInvocationTrace2021_first199rows.csv")
    assert len(t) == 199 and np.all(t.arrivals >= 0) and np.all(t.service >= 0)


def test_azure_functions_2019_aggregate_and_one_function(real_traces):
    path = real_traces / "azure-functions-2019" / "invocations.csv"
    agg = load_trace(path)
    assert len(agg) == 3_037_902 and agg.meta["span_s"] == 480 * 60 and agg.meta["functions"] == 500
    top = load_trace(f"{path}?top=1")
    assert len(top) == 1_915_521
    one = load_trace(f"{path}?function=0951ccc96bb7")
    assert one.meta["functions"] == 1 and 0 < len(one) < 100_000
    assert agg.meta["functions_without_durations"] == 0


def test_huawei_coldstart_tables(real_traces):
    for path in sorted((real_traces / "huawei-2025").glob("*cold_start*.csv")):
        assert detect_format(path) == "huawei-coldstart"
        totals = load_coldstart_table(path)
        assert len(totals) == 10 and np.all(totals > 0)
        assert 0.1 < totals.mean() < 10  # paper: mean 3.24 s across regions, medians 0.1-2 s


def test_azure_functions_2019_work_is_the_published_average_times_the_invocations(real_traces):
    # Interpolated linearly between the percentiles, the sampled work was 21 % above it.
    import polars as pl

    folder = real_traces / "azure-functions-2019"
    invocations = pl.read_csv(folder / "invocations.csv")
    minutes = [c for c in invocations.columns if c.isdigit()]
    per_function = invocations.select("HashFunction", pl.sum_horizontal(minutes).alias("n")).join(
        pl.read_csv(folder / "durations.csv").select("HashFunction", "Average"), on="HashFunction")
    assert len(per_function) == 500
    published = float((per_function["n"] * per_function["Average"]).sum()) / 1000.0     # seconds
    work = float(load_trace(folder / "invocations.csv").service.sum(dtype=np.float64))
    assert work == pytest.approx(published, rel=0.02)
    one = load_trace(f"{folder / 'invocations.csv'}?function=1fa06535")     # Average 928 ms (was 1.53 s)
    assert float(one.service.mean(dtype=np.float64)) == pytest.approx(0.928, rel=0.02)
