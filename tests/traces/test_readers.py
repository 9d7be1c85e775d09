from dataclasses import replace

import numpy as np
import pytest

from kpilot.traces import FORMATS, LlmServiceModel, detect_format, load_coldstart_table, load_trace

DEFAULT = LlmServiceModel()


def test_formats_listed():
    assert {"burstgpt", "azure-llm", "azure-functions-2021", "azure-functions-2019",
            "huawei-coldstart", "generic", "synthetic"} <= set(FORMATS)


def test_burstgpt_6_column(fx):
    t = load_trace(fx("burstgpt6.csv"))
    assert t.meta["format"] == "burstgpt" and t.meta["variant"] == "6-column"
    assert len(t) == 5 and t.meta["failed"] == 2
    assert t.failed.tolist() == [False, True, False, False, True]
    assert t.meta["origin_s"] == 3.0
    # three requests logged at second 3 stay in [0, 1), in file order
    assert np.all((t.arrivals[:3] >= 0) & (t.arrivals[:3] < 1)) and np.all(np.diff(t.arrivals) > 0)
    assert 4 <= t.arrivals[3] < 5 and 9 <= t.arrivals[4] < 10
    assert t.service[0] == pytest.approx(0.010 + 100 * 0.00015 + 20 * 0.025, rel=1e-6)
    assert t.arrivals.dtype == np.float64 and t.service.dtype == np.float32
    assert len(t.meta["checksum"]) == 64 and t.meta["span_s"] == 10.0


def test_burstgpt_8_column(fx):
    t = load_trace(fx("burstgpt8.csv"))
    assert t.meta["format"] == "burstgpt" and t.meta["variant"] == "8-column"
    assert len(t) == 4 and t.meta["failed"] == 1 and t.meta["origin_s"] == 1000.0
    assert np.floor(t.arrivals).tolist() == [0, 0, 2, 5]


def test_burstgpt_model_filter_and_service_options(fx):
    t = load_trace(f"{fx('burstgpt6.csv')}?model=GPT-4&decode=0.01&prefill=0&overhead=0")
    assert len(t) == 2
    assert t.service.tolist() == pytest.approx([0.0, 0.0])  # both GPT-4 rows produced 0 tokens
    t = load_trace(f"{fx('burstgpt6.csv')}?log=API", service_model=LlmServiceModel(0, 0, 0.01))
    assert t.service.tolist() == pytest.approx([0.1, 1.0])


def test_azure_functions_2021_unsorted(fx):
    t = load_trace(fx("azure2021_unsorted.csv"))
    assert t.meta["format"] == "azure-functions-2021"
    assert t.arrivals.tolist() == pytest.approx([0.0, 0.0, 8.0, 11.0, 14.0])
    assert t.service.tolist() == pytest.approx([1.25, 0.1, 0.5, 2.0, 4.0])
    assert len(load_trace(f"{fx('azure2021_unsorted.csv')}?function=f001")) == 3
    top = load_trace(f"{fx('azure2021_unsorted.csv')}?top=1")
    assert len(top) == 3 and top.meta["functions"] == 1


def test_azure_functions_2021_functions_are_told_apart_by_their_app(tmp_path):
    # A func id is unique only within its app: top=1 took two apps' ff00 (4 requests) as one
    # function, over ee11's 3.
    path = tmp_path / "az21.csv"
    path.write_text("app,func,end_timestamp,duration\nA1,ff00,10,1\nA1,ff00,20,1\nA2,ff00,30,1\n"
                    "A2,ff00,40,1\nA3,ee11,50,1\nA3,ee11,60,1\nA3,ee11,70,1\n")
    top = load_trace(f"{path}?top=1")
    assert len(top) == 3 and top.arrivals.tolist() == pytest.approx([0.0, 10.0, 20.0])
    both = load_trace(f"{path}?function=ff00")                   # a func prefix: every app's
    assert len(both) == 4 and both.meta["functions"] == 2
    assert len(load_trace(f"{path}?function=ff00/A2")) == 2       # one app's, named


def test_a_function_id_given_whole_is_that_function_alone(tmp_path):
    # Huawei's ids are numbers: function=1 took 1 and 10, and every id starting with 1.
    path = tmp_path / "hw.csv"
    path.write_text(",day,time,1,10,11\n0,0,0,1,5,7\n1,0,60,2,5,7\n")
    one = load_trace(f"{path}?function=1")
    assert len(one) == 3 and one.meta["functions"] == 1
    assert len(load_trace(f"{path}?function=1+10")) == 13


def test_azure_functions_2019_aggregate_and_selection(fx):
    path = fx("azure2019/invocations.csv")
    agg = load_trace(path)
    assert agg.meta["format"] == "azure-functions-2019" and len(agg) == 8
    # Minute 480 of the day (1-based) is 07:59-08:00.
    assert agg.meta["span_s"] == 180.0 and agg.meta["start_time_of_day_s"] == 479 * 60
    one = load_trace(f"{path}?function=abc")
    assert len(one) == 5 and one.service.tolist() == pytest.approx([0.1] * 5)
    # The counts are of invocations that ended in each minute: each completes in its minute.
    minute = np.floor((one.arrivals + one.service) / 60).astype(int).tolist()
    assert minute == [0, 0, 2, 2, 2]
    other = load_trace(f"{path}?function=def2")
    assert np.all((other.service >= 1.0) & (other.service <= 3.0)) and len(other) == 3
    assert np.floor((other.arrivals + other.service) / 60).astype(int).tolist() == [0, 1, 2]
    assert len(load_trace(f"{path}?top=1")) == 5
    assert len(load_trace(f"{path}?function=abc+def")) == 8


def test_azure_functions_2019_reproducible(fx):
    path = fx("azure2019/invocations.csv")
    a, b, c = load_trace(path, seed=3), load_trace(path, seed=3), load_trace(path, seed=4)
    assert np.array_equal(a.arrivals, b.arrivals) and np.array_equal(a.service, b.service)
    assert not np.array_equal(a.arrivals, c.arrivals)


def test_azure_llm(fx):
    t = load_trace(fx("azure_llm.csv"))
    assert t.meta["format"] == "azure-llm"
    assert t.arrivals.tolist() == pytest.approx([0.0, 0.5, 6.75])
    assert t.meta["start_time_of_day_s"] == pytest.approx(18 * 3600 + 17 * 60 + 3.5)
    assert t.service.tolist() == pytest.approx(DEFAULT.service_time([1000, 200, 30], [10, 50, 0]).tolist())
    assert not t.failed.any()


def test_generic_unix_timestamps_keep_their_time_of_day(tmp_path):
    # An access log in unix seconds: 1,700,000,000 is 22:13:20 UTC. It replayed from midnight,
    # while the same traffic as request counts kept its hour (the policy observes the hour).
    log = tmp_path / "access.csv"
    log.write_text("timestamp,duration\n1700000000.5,0.1\n1700000030.25,0.2\n")
    trace = load_trace(str(log))
    assert trace.meta["start_time_of_day_s"] == 80000.0 and list(trace.arrivals) == [0.5, 30.25]
    log.write_text("timestamp,duration\n0.5,0.1\n30.25,0.2\n")
    assert load_trace(str(log)).meta["start_time_of_day_s"] == 0.0


def test_generic_duration_and_tokens(fx):
    t = load_trace(fx("generic_duration.csv"))
    assert t.meta["format"] == "generic"
    assert t.arrivals.tolist() == pytest.approx([0.25, 0.5, 2.0])
    assert t.service.tolist() == pytest.approx([0.3, 0.2, 1.5])
    assert t.failed.tolist() == [True, False, False]
    tok = load_trace(fx("generic_tokens.csv"))
    assert len(tok) == 3 and np.all(tok.arrivals[:2] < 1) and 1 <= tok.arrivals[2] < 2
    assert tok.service[2] == pytest.approx(0.010 + 300 * 0.00015)


def test_coldstart_table(fx):
    totals = load_coldstart_table(fx("huawei_coldstart.csv"))
    assert totals.dtype == np.float64 and totals.tolist() == pytest.approx([0.5, 2.0])
    assert detect_format(fx("huawei_coldstart.csv")) == "huawei-coldstart"


def test_service_model():
    m = LlmServiceModel(overhead_s=0.01, prefill_s_per_token=0.001, decode_s_per_token=0.02)
    out = m.service_time(np.array([100, 0]), np.array([10, 0]))
    assert out.dtype == np.float32 and out.tolist() == pytest.approx([0.31, 0.01])
    with pytest.raises(ValueError):
        LlmServiceModel(decode_s_per_token=-1)


def test_a_window_keeps_the_clock_of_its_own_start(fx):
    """A window of a trace that starts at 07:59 (minute 480 of the day) and begins 90 s in starts
    at 08:00:30; every window of a trace without a clock stays without one (the policy sees the
    time of day)."""
    from kpilot.train.split import time_window

    trace = load_trace(fx("azure2019/invocations.csv"))
    assert trace.window(90.0, 180.0).meta["start_time_of_day_s"] == 479 * 60 + 90
    assert trace.window(90.0, 180.0).window(30.0, 60.0).meta["start_time_of_day_s"] == 479 * 60 + 120
    assert time_window(trace, 0.5, 1.0, warmup_s=30.0).meta["start_time_of_day_s"] == 479 * 60 + 60
    late = replace(trace, meta={**trace.meta, "start_time_of_day_s": 86400.0 - 60.0})
    assert late.window(90.0, 180.0).meta["start_time_of_day_s"] == 30.0          # past midnight
    clockless = replace(trace, meta={k: v for k, v in trace.meta.items() if k != "start_time_of_day_s"})
    assert "start_time_of_day_s" not in clockless.window(90.0, 180.0).meta
