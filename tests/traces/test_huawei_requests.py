"""Huawei request tables: wide per-minute / per-second counts (huawei-requests) and the 2025
per-request table (huawei-per-request)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kpilot.errors import TraceError
from kpilot.traces import FORMATS, detect_format, load_coldstart_table, load_trace
from kpilot.traces.spreading import uniform_in_bins
from kpilot.traces.synthetic import lognormal_service

KPILOT = Path(sys.executable).with_name("kpilot")
MINUTE, SECOND, PER_REQUEST = "huawei_requests_minute.csv", "huawei_requests_second.csv", "huawei_per_request.csv"


def message(spec, fmt=None):
    with pytest.raises(TraceError) as info:
        load_trace(spec, fmt)
    return str(info.value)


def write(tmp_path, text, name="t.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def inspect(path):
    out = subprocess.run([str(KPILOT), "trace", "inspect", str(path), "--json"], capture_output=True, text=True)
    return out


def test_formats_and_detection(fx):
    assert {"huawei-requests", "huawei-per-request", "huawei-coldstart"} <= set(FORMATS)
    assert detect_format(fx(MINUTE)) == "huawei-requests"
    assert detect_format(fx(SECOND)) == "huawei-requests"
    assert detect_format(fx(PER_REQUEST)) == "huawei-per-request"
    assert detect_format(fx("huawei_coldstart.csv")) == "huawei-coldstart"  # also has day, time
    assert detect_format(fx("generic_duration.csv")) == "generic"


def test_per_minute_table_with_nans_and_elision(fx):
    t = load_trace(fx(MINUTE))
    assert t.meta["format"] == "huawei-requests" and len(t) == 13 and t.meta["functions"] == 3
    assert t.meta["bin_s"] == 60.0 and t.meta["bins"] == 4 and t.meta["span_s"] == 360.0
    assert t.meta["start_time_of_day_s"] == 3600.0 and t.meta["origin_s"] == 3600.0
    assert not t.meta["time_of_day_column"] and t.meta["selection"] == "all"
    minute = np.floor(t.arrivals / 60).astype(int)
    assert np.bincount(minute).tolist() == [3, 3, 6, 0, 0, 1]  # NaN and empty cells are no requests
    assert np.all(np.diff(t.arrivals) >= 0) and t.arrivals.dtype == np.float64 and t.service.dtype == np.float32


def test_arrivals_are_the_azure_2019_synthesis(fx):
    """Same draw as the Azure 2019 reader: function-major bins, uniform in the bin, then service."""
    t = load_trace(fx(MINUTE), seed=11)
    counts = np.array([[2, 0, 1, 1], [0, 0, 5, 0], [1, 3, 0, 0]])  # functions x bins
    rng = np.random.default_rng(11)
    arrivals = uniform_in_bins(np.tile([0.0, 60.0, 120.0, 300.0], 3), counts.ravel(), 60.0, rng)
    service = lognormal_service(rng, len(arrivals), 0.1, 1.0)
    order = np.argsort(arrivals, kind="stable")
    assert np.array_equal(t.arrivals, arrivals[order]) and np.array_equal(t.service, service[order])


def test_per_second_table(fx):
    t = load_trace(fx(SECOND))
    assert len(t) == 6 and t.meta["bin_s"] == 1.0 and t.meta["span_s"] == 3.0
    assert t.meta["start_time_of_day_s"] == 10.0 and t.meta["origin_s"] == 86410.0
    assert np.floor(t.arrivals).astype(int).tolist() == [0, 0, 0, 2, 2, 2]


def test_selection(fx):
    path = fx(MINUTE)
    one = load_trace(f"{path}?function=400---")
    assert len(one) == 4 and one.meta["functions"] == 1 and one.meta["selection"] == "function=400---"
    assert len(load_trace(f"{path}?function=1531+591")) == 9
    top = load_trace(f"{path}?top=1")
    assert len(top) == 5 and top.meta["functions"] == 1 and np.all((top.arrivals >= 120) & (top.arrivals < 180))
    assert len(load_trace(f"{path}?top=2")) == 9  # 5, then the first of the two 4s in column order
    assert "no function id starts with 'zzz'" in message(f"{path}?function=zzz")
    assert "either function= or top=" in message(f"{path}?function=4&top=1")
    assert "positive integer" in message(f"{path}?top=0")


def test_service_model_options(fx, tmp_path):
    fixed = load_trace(f"{fx(MINUTE)}?service=0.5&cv=0")
    assert fixed.service.tolist() == pytest.approx([0.5] * 13)
    assert fixed.meta["service_model"] == {"kind": "lognormal", "mean_s": 0.5, "cv": 0.0}
    big = write(tmp_path, "day,time,f\n0,0,20000\n0,60,20000\n")
    t = load_trace(f"{big}?service=0.2&cv=0.5", seed=1)
    assert len(t) == 40000 and t.service.mean() == pytest.approx(0.2, rel=0.02)
    assert t.service.std() / t.service.mean() == pytest.approx(0.5, rel=0.05)
    assert load_trace(big).service.mean() == pytest.approx(0.1, rel=0.05)  # defaults: 0.1 s, cv 1
    assert "must be positive" in message(f"{big}?service=0")
    assert "cv=-1 must be in [0, 100]" in message(f"{big}?cv=-1")
    # A cv beyond 100 drew nearly every time as 0 (a mean of 2e-5 s for 0.1 asked); a service
    # beyond a week overflowed float32 with a warning printed before the error.
    assert "cv=1e6 must be in [0, 100]" in message(f"{big}?cv=1e6")
    assert "service=1e300 must be positive and at most 604800 s" in message(f"{big}?service=1e300")
    assert "is not a number" in message(f"{big}?service=fast")
    assert "unknown option(s) colour" in message(f"{big}?colour=red")


def test_deterministic(fx):
    for name in (MINUTE, SECOND):
        a, b, c = (load_trace(fx(name), seed=s) for s in (3, 3, 4))
        assert np.array_equal(a.arrivals, b.arrivals) and np.array_equal(a.service, b.service)
        assert not np.array_equal(a.arrivals, c.arrivals)
    p = load_trace(fx(PER_REQUEST), seed=1)
    assert np.array_equal(p.arrivals, load_trace(fx(PER_REQUEST), seed=2).arrivals)


def test_bin_width_option_and_time_conventions(tmp_path):
    one = write(tmp_path, "day,time,f\n2,172800,3\n", "one.csv")
    assert "pass bin=60" in message(one)
    t = load_trace(f"{one}?bin=60")
    assert len(t) == 3 and np.all(t.arrivals < 60) and t.meta["span_s"] == 60.0
    of_day = load_trace(write(tmp_path, "day,time,f\n0,0,1\n0,60,1\n1,0,1\n", "of_day.csv"))
    assert of_day.meta["time_of_day_column"] and of_day.meta["bin_s"] == 60.0
    assert np.floor(of_day.arrivals / 60).astype(int).tolist() == [0, 1, 1440]


def test_per_request_table(fx):
    t = load_trace(fx(PER_REQUEST))
    assert t.meta["format"] == "huawei-per-request" and len(t) == 4
    assert t.arrivals.tolist() == pytest.approx([0.0, 0.08, 0.5, 3.0])  # sorted, rebased, '...' skipped
    assert t.service.tolist() == pytest.approx([0.000931, 0.5, 0.25, 1.5])  # seconds, as given
    assert t.meta["origin_s"] == pytest.approx(2592000.02) and t.meta["start_time_of_day_s"] == pytest.approx(0.02)
    assert t.meta["arrival_column"] == "time_worker" and t.meta["span_s"] == 3.0
    assert "unknown option(s) top" in message(f"{fx(PER_REQUEST)}?top=1")


def test_wide_malformed_cells_point_at_line_and_column(tmp_path):
    p = write(tmp_path, ",day,time,a,b\n0,0,0,1,NaN\n...,...,...,...,...\n7,0,420,2,x1\n")
    assert message(p) == f"{p}, line 4, column 5 (b): non-numeric value 'x1'"
    p = write(tmp_path, ",day,time,a,b\n0,0,0,1,NaN\n1,0,60,-2,1\n")
    assert message(p) == f"{p}, line 3, column 4 (a): request count -2 is not a non-negative integer"
    p = write(tmp_path, "day,time,a\n0,0,1.5\n")
    assert message(f"{p}?bin=60") == f"{p}, line 2, column 3 (a): request count 1.5 is not a non-negative integer"
    p = write(tmp_path, "day,time,a\n0,0,1\n0,abc,1\n")
    assert message(p) == f"{p}, line 3, column 2 (time): non-numeric value 'abc'"
    p = write(tmp_path, "day,time,a\n0,60,1\n0,0,1\n")
    assert message(p).startswith(f"{p}, line 3, column 2 (time): time 0 does not come after")
    p = write(tmp_path, "day,time,a\n1,0,1\n0,60,1\n")       # times of day: the day went back
    assert message(p) == (f"{p}, line 3, column 2 (time): day 0 time 60 does not come after the previous "
                          "row's day 1 time 0 (rows must be in increasing day and time)")
    p = write(tmp_path, "day,time,a\n0,0,1\n3,90000,1\n")
    assert message(p).startswith(f"{p}, line 3, column 2 (time): time 90000 is not in day 3")
    p = write(tmp_path, "day,time,a\n0,0,NaN\n0,60,NaN\n")
    assert message(p) == f"{p}: the selected functions have no requests"
    p = write(tmp_path, ",day,time,...\n0,0,0,...\n")
    assert message(p) == f"{p}, line 1: no function columns (columns after day, time)"


def test_per_request_malformed(tmp_path):
    head = ",time_worker,time_frontend,totalCost_worker\n0,10.0,10.1,0.5\n"
    p = write(tmp_path, head + "1,11.0,NaN,-0.25\n")
    assert message(p) == f"{p}, line 3, column 4 (totalCost_worker): negative service time -0.25"
    p = write(tmp_path, head + "...,...,...,...\n2,12.0,12.0,NaN\n")
    assert message(p) == f"{p}, line 4, column 4 (totalCost_worker): missing value"
    p = write(tmp_path, head + "2,12.0,12.0,NaN\n")  # no '...' row: the Float64 fast path
    assert message(p) == f"{p}, line 3, column 4 (totalCost_worker): missing value"
    p = write(tmp_path, head + "1,soon,11.0,0.1\n")
    assert message(p) == f"{p}, line 3, column 2 (time_worker): non-numeric value 'soon'"
    p = write(tmp_path, ",time_worker,time_frontend\n0,1,1\n")
    assert message(p, "huawei-per-request").startswith(f"{p}, line 1: missing column 'totalCost_worker'")


def test_runtime_trigger_table_is_named(tmp_path):
    p = write(tmp_path, ",funcID,cpu_request,runtime,triggerType-invocationType\n"
                        "0,1---2---pool,100,Java,workflow-S\n")
    assert "runtime/trigger-type table" in message(p)


def test_cli_inspect_fixtures(fx):
    for name, fmt, rows in ((MINUTE, "huawei-requests", 13), (SECOND, "huawei-requests", 6),
                            (PER_REQUEST, "huawei-per-request", 4)):
        out = inspect(fx(name))
        assert out.returncode == 0, out.stderr
        stats = json.loads(out.stdout)
        assert stats["format"] == fmt and stats["rows"] == rows
    bad = subprocess.run([str(KPILOT), "trace", "inspect", f"{fx(MINUTE)}?top=0"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("kpilot: error: ") and bad.stderr.count("\n") == 1


REAL = {  # file stem -> (format, requests in the displayed rows, bin_s)
    "coldstart2025_R2_requests_per_minute_wide": ("huawei-requests", 21, 60.0),
    "private2023_requests_per_minute_wide": ("huawei-requests", 178_398, 60.0),
    "private2023_requests_per_second_wide": ("huawei-requests", 950_662, 1.0),
    "public2023_requests_per_minute_wide": ("huawei-requests", 98_405, 60.0),
    "coldstart2025_R5_per_request_day30": ("huawei-per-request", 10, None),
}


@pytest.mark.traces
def test_real_huawei_files_all_load(real_traces):
    folder = real_traces / "huawei-2025"
    files = sorted(folder.glob("*.csv"))
    assert files, f"no CSV files in {folder}"
    for path in files:
        stem = path.name.removesuffix(".rows.csv")
        if "runtime_triggerType" in stem:  # one row per function: metadata, neither requests nor cold starts
            assert "runtime/trigger-type table" in message(path)
        elif detect_format(path) == "huawei-coldstart":
            assert len(load_coldstart_table(path)) == 10
        else:
            fmt, rows, bin_s = REAL[stem]
            t = load_trace(path)
            assert t.meta["format"] == fmt and len(t) == rows and t.arrivals[0] >= 0
            assert t.meta["start_time_of_day_s"] == pytest.approx(0.02 if bin_s is None else 0.0)
            if bin_s is not None:
                assert t.meta["bin_s"] == bin_s and not t.meta["time_of_day_column"]
    assert set(REAL) <= {p.name.removesuffix(".rows.csv") for p in files}


@pytest.mark.traces
def test_real_huawei_details(real_traces):
    folder = real_traces / "huawei-2025"
    per_request = load_trace(folder / "coldstart2025_R5_per_request_day30.rows.csv")
    assert per_request.meta["origin_s"] == pytest.approx(2592000.020)  # day 30, 00:00:00.020
    assert np.all((per_request.service > 0) & (per_request.service < 0.05))
    assert 86399 < per_request.arrivals[-1] < 86400
    r2 = load_trace(f"{folder / 'coldstart2025_R2_requests_per_minute_wide.rows.csv'}?top=1")
    assert r2.meta["functions"] == 1 and len(r2) == 13  # 1263---582---pool23-400-256: 3+3+1+1+3+2
    sec = load_trace(f"{folder / 'private2023_requests_per_second_wide.rows.csv'}?function=28")
    assert len(sec) == 816 + 960 + 1069 + 922 + 945 + 1745 + 1767 + 1761 + 1702 + 1763
    assert sec.meta["span_s"] == 20_304_000.0  # day 0 second 0 to the end of day 234


@pytest.mark.traces
def test_real_huawei_cli_inspect(real_traces):
    for path in sorted((real_traces / "huawei-2025").glob("*.csv")):
        out = inspect(path)
        if "runtime_triggerType" in path.name:
            assert out.returncode == 2 and "runtime/trigger-type table" in out.stderr
            continue
        assert out.returncode == 0, (path.name, out.stderr)
        stats = json.loads(out.stdout)
        assert stats["format"] in {"huawei-requests", "huawei-per-request", "huawei-coldstart"}
