import os

import pytest

from kpilot.errors import TraceError
from kpilot.traces import load_coldstart_table, load_trace


def message(path, fmt=None):
    with pytest.raises(TraceError) as info:
        load_trace(path, fmt)
    return str(info.value)


def test_non_numeric_value_points_at_line_and_column(fx):
    p = fx("bad_nonnumeric.csv")
    assert message(p) == f"{p}, line 4, column 4 (Response tokens): non-numeric value 'abc'"


def test_missing_value(fx):
    p = fx("bad_missing_value.csv")
    assert message(p) == f"{p}, line 3, column 3 (Request tokens): missing value"


def test_negative_duration(fx):
    p = fx("bad_negative_duration.csv")
    assert message(p) == f"{p}, line 3, column 4 (duration): negative duration -1.25"


def test_bad_timestamp(fx):
    p = fx("bad_timestamp.csv")
    assert message(p).startswith(f"{p}, line 3, column 1 (TIMESTAMP): bad timestamp 'yesterday'")


def test_missing_column(fx):
    p = fx("bad_missing_column.csv")
    assert message(p).startswith(f"{p}, line 1: missing column 'duration'")
    q = fx("burstgpt8.csv")
    assert message(q, "azure-llm").startswith(f"{q}, line 1: missing column 'TIMESTAMP' required by the azure-llm format")


def test_empty_and_header_only(fx):
    assert message(fx("bad_empty.csv")) == f"{fx('bad_empty.csv')}: empty file (no header, no data rows)"
    assert message(fx("bad_header_only.csv")) == f"{fx('bad_header_only.csv')}: no data rows"


def test_unknown_format_names_known_ones(fx):
    p = fx("bad_unknown.csv")
    msg = message(p)
    assert msg.startswith(f"{p}, line 1: unknown trace format")
    assert "burstgpt" in msg and "azure-functions-2019" in msg and "generic" in msg
    from kpilot.errors import ConfigError
    with pytest.raises(ConfigError, match="option --format: unknown format 'csv-ish'; known formats: burstgpt"):
        load_trace(fx("burstgpt6.csv"), "csv-ish")


def test_missing_file_and_bad_options(fx, tmp_path):
    assert message(tmp_path / "nope.csv") == f"{tmp_path / 'nope.csv'}: no such file"
    assert "unknown option(s) colour" in message(f"{fx('burstgpt6.csv')}?colour=red")
    assert "no function id starts with 'zzz'" in message(f"{fx('azure2019/invocations.csv')}?function=zzz")
    assert "positive integer" in message(f"{fx('azure2019/invocations.csv')}?top=0")


def test_azure_2019_durations_of_another_excerpt_are_refused_not_pooled(fx, tmp_path):
    # No function in common: every service time came from the pooled row, silently.
    (tmp_path / "invocations.csv").write_bytes(fx("azure2019/invocations.csv").read_bytes())
    lines = fx("azure2019/durations.csv").read_text().splitlines()
    header = lines[0].split(",")
    at = header.index("HashFunction")
    other = [lines[0]] + [",".join(f"other{i}" if k == at else v for k, v in enumerate(line.split(",")))
                          for i, line in enumerate(lines[1:])]
    (tmp_path / "durations.csv").write_text("\n".join(other) + "\n")
    assert message(tmp_path / "invocations.csv").endswith(
        f"none of the 3 functions is in the durations file {tmp_path / 'durations.csv'} "
        "(by HashFunction): is it this excerpt's?")
    # One function missing from a file that has the others: pooled, as documented, and counted.
    (tmp_path / "durations.csv").write_text("\n".join(l for l in lines if not l.split(",")[at] == "abc111") + "\n")
    alone = load_trace(f"{tmp_path / 'invocations.csv'}?function=abc111")
    assert len(alone) > 0 and alone.meta["functions_without_durations"] == 1


def test_azure_2019_without_its_durations_names_the_fix(fx, tmp_path):
    (tmp_path / "invocations.csv").write_bytes(fx("azure2019/invocations.csv").read_bytes())
    assert message(tmp_path / "invocations.csv") == (
        f"{tmp_path / 'invocations.csv'}: no durations file {tmp_path / 'durations.csv'}: Azure Functions "
        "2019 invocations need the duration percentiles beside them (durations.csv) or named with "
        "?durations=PATH")


def test_coldstart_table_is_not_a_request_trace(fx):
    assert message(fx("huawei_coldstart.csv")).endswith("not a request trace; use it as the simulator's "
                                                        "cold-start distribution: --cold-start PATH")


def test_coldstart_total_must_match_components(tmp_path):
    p = tmp_path / "cs.csv"
    p.write_text(",totalCost_cold_start,podAllocationCost,deployCodeCost,deployDependencyCost,schedulingCost\n"
                 "0,1.0,0.25,0.25,0.25,0.25\n1,9.0,0.25,0.25,0.25,0.25\n")
    with pytest.raises(TraceError) as info:
        load_coldstart_table(p)
    assert str(info.value).startswith(f"{p}, line 3, column 2 (totalCost_cold_start): totalCost_cold_start 9")


def test_coldstart_totals_rounded_to_the_millisecond_are_accepted(tmp_path):
    # 0.078 + 0.164 + 0.189 + 0.118 = 0.549 against a total of 0.547: each of the five values rounded
    # to the millisecond can be off by half of one, 2.5 ms in all.
    p = tmp_path / "cs.csv"
    p.write_text(",totalCost_cold_start,podAllocationCost,deployCodeCost,deployDependencyCost,schedulingCost\n"
                 "0,0.547,0.078,0.164,0.189,0.118\n")
    assert load_coldstart_table(p) == pytest.approx([0.549])
    p.write_text(",totalCost_cold_start,podAllocationCost,deployCodeCost,deployDependencyCost,schedulingCost\n"
                 "0,0.553,0.078,0.164,0.189,0.118\n")
    with pytest.raises(TraceError, match="totalCost_cold_start 0.553 differs from the sum of its components 0.549"):
        load_coldstart_table(p)


def _csv(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("spec, expected", [
    ("synthetic:poisson:cv=1e200,duration=10", "cv at most 100"),
    ("synthetic:poisson:service=1e40", "service must be at most 604800 s"),
    ("synthetic:onoff:off_min=-500,off_max=-400,duration=600", "off_min must be non-negative"),
    ("synthetic:onoff:on=0,off_min=0,off_max=0,duration=60", "on must be at least 1"),
    ("synthetic:onoff:off_min=300,off_max=100", "off_max (100) is below off_min (300)"),
    ("synthetic:bursty:shape=1e-12,duration=60", "shape must be at least 0.01"),
    ("synthetic:diurnal:period=0", "period must be positive"),
    ("synthetic:flash:peak=-5", "peak must be non-negative"),
    ("synthetic:poisson:seed=1.5", "seed must be a non-negative integer"),
    ("synthetic:poisson:seed=-1", "seed must be a non-negative integer"),
    ("synthetic:poisson:duration=1e9", "duration must be at most"),
])
def test_synthetic_parameters_that_would_hang_or_poison_a_replay_are_refused(spec, expected):
    """Each of these once looped forever, drew infinite service times or failed in numpy."""
    assert expected in message(spec)


def test_reader_options_must_be_finite_and_in_range(fx, tmp_path):
    burst = fx("burstgpt6.csv")
    assert message(f"{burst}?decode=inf") == f"{burst}: option decode='inf' is not a finite number"
    assert message(f"{burst}?prefill=-0.1") == f"{burst}: option prefill=-0.1 must be non-negative (seconds)"
    counts = _csv(tmp_path, "rc.csv", "time,requests\n0,3\n60,2\n")
    assert message(f"{counts}?bin=nan") == f"{counts}: option bin='nan' is not a finite number"
    assert "function= names no function id" in message(f"{fx('azure2019/invocations.csv')}?function=")


def test_a_duration_beyond_float32_is_refused_not_replayed_as_a_failure(tmp_path):
    path = _csv(tmp_path, "huge.csv", "timestamp,duration\n0,1e39\n1,0.25\n")
    assert message(path) == (f"{path}: request 1 (by arrival) needs inf s of work: service times must be "
                             "finite, non-negative and at most 604800 s (a week; a duration or option out of "
                             "range, or in another unit?)")


@pytest.mark.parametrize("name, text", [
    ("generic.csv", "timestamp,duration\n0,0.5\n1,1e10\n"),
    ("burstgpt.csv", "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                     "0,ChatGPT,10,20,30,Conversation log\n1,ChatGPT,10,1e15,30,Conversation log\n"),
])
def test_a_request_of_more_than_a_week_of_work_is_refused_by_every_reader(tmp_path, name, text):
    # Some readers refused it on their own and some did not: a generic trace's 1e10 s request, or
    # BurstGPT's 1e15 response tokens, was replayed as a request that never finished.
    path = _csv(tmp_path, name, text)
    assert "request 2 (by arrival) needs" in message(path) and "at most 604800 s (a week" in message(path)


def test_timestamps_spanning_more_than_a_year_are_refused(tmp_path):
    """A mistyped year or a timestamp in the wrong unit once asked for terabytes (or a replay of
    half a million years)."""
    path = _csv(tmp_path, "span.csv", "timestamp,duration\n0,0.5\n1e12,0.25\n")
    assert message(path) == (f"{path}: the requests span 1e+12 s: at most 3.162e+07 s (a year); are the "
                             "timestamps in the unit the format expects?")


def test_count_tables_are_refused_before_they_are_expanded(tmp_path):
    huawei = _csv(tmp_path, "hw.csv", ",day,time,f1\n0,0,0,1e12\n1,0,60,3\n")
    assert message(huawei) == f"{huawei}: 1,000,000,000,003 requests in all: at most 50,000,000 (memory)"
    header = "HashOwner,HashApp,HashFunction,Trigger,1,2\n"
    azure = _csv(tmp_path, "invocations.csv", header + "o,a,f,http,1e12,1\n")
    _csv(tmp_path, "durations.csv", "HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum,"
         + ",".join(f"percentile_Average_{p}" for p in (0, 1, 25, 50, 75, 99, 100)) + "\n"
         + "o,a,f,100,1,100,100,100,100,100,100,100,100,100\n")
    assert message(azure) == f"{azure}: 1,000,000,000,001 requests in all: at most 50,000,000 (memory)"


def test_azure_2019_minute_columns_must_increase(tmp_path):
    path = _csv(tmp_path, "invocations.csv", "HashOwner,HashApp,HashFunction,Trigger,3,1,2\no,a,f,http,1,1,1\n")
    assert message(path) == (f"{path}, line 1: minute column 1 comes after minute 3 (minute columns "
                             "must be in increasing order)")


def test_blank_lines_at_the_end_are_not_rows(tmp_path):
    """Editors add them; pandas and the csv module skip them. A blank line between rows is still
    a missing value, at its line."""
    for text in ("timestamp,duration\n0,0.5\n1,0.25\n\n", "timestamp,duration\r\n0,0.5\r\n1,0.25\r\n\r\n\r\n"):
        assert len(load_trace(_csv(tmp_path, "trailing.csv", text))) == 2
    counts = _csv(tmp_path, "counts.csv", "time,requests,mean_duration_s\n0,3,0.2\n60,2,0.1\n\n")
    assert len(load_trace(counts)) == 5
    middle = _csv(tmp_path, "middle.csv", "timestamp,duration\n0,0.5\n\n1,0.25\n")
    assert message(middle) == f"{middle}, line 3, column 1 (timestamp): missing value"


def test_azure_llm_timestamps_with_a_utc_offset_are_converted_to_utc(tmp_path):
    path = _csv(tmp_path, "llm.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                "2023-11-16 18:00:00+05:00,10,10\n2023-11-16 13:00:01Z,10,10\n"
                "2023-11-16 13:00:03.5,10,10\n2023-11-16 09:30:04-0330,1,1\n")
    trace = load_trace(path)
    assert trace.arrivals.tolist() == [0.0, 1.0, 3.5, 4.0]
    assert trace.meta["start_time_of_day_s"] == 13 * 3600


def test_a_header_with_spaces_after_its_commas_is_read_by_its_names(tmp_path):
    # Detected as generic by its stripped names, then refused: polars looked for " duration".
    p = tmp_path / "spaced.csv"
    p.write_text("timestamp, duration\n0,0.5\n1,0.25\n")
    trace = load_trace(p)
    assert list(trace.service) == [0.5, 0.25] and len(trace) == 2


def test_a_row_with_more_fields_than_the_header_names_its_line(tmp_path):
    p = tmp_path / "ragged.csv"
    p.write_text("timestamp,duration\n0,0.5\n1,0.5\n2,0.5,9\n3,0.5\n")
    assert message(p) == f"{p}, line 4: 3 fields where the header has 2"


def test_generic_options_that_do_not_apply_are_refused(tmp_path):
    # overhead=/decode= were silently ignored on a file that has durations; spread=banana spread.
    p = tmp_path / "g.csv"
    p.write_text("timestamp,duration\n0,0.5\n1,0.5\n2,0.5\n")
    assert message(f"{p}?overhead=5").endswith("unknown option(s) overhead for generic (valid: spread, unit)")
    assert message(f"{p}?spread=banana") == f"{p}: option spread='banana': expected 1/0, true/false or yes/no"
    assert list(load_trace(f"{p}?spread=False").arrivals) == [0.0, 1.0, 2.0]       # not spread
    tokens = tmp_path / "t.csv"
    tokens.write_text("timestamp,input_tokens,output_tokens\n0,100,10\n1,100,10\n")
    assert load_trace(f"{tokens}?overhead=5").service.min() >= 5.0         # the LLM model applies here


def test_a_service_time_beyond_float32_is_one_line_without_a_warning(fx):
    # numpy's overflow warning came out first: three lines on stderr for one error.
    import subprocess
    import sys
    from pathlib import Path

    kpilot = Path(sys.executable).with_name("kpilot")
    proc = subprocess.run([str(kpilot), "trace", "inspect", f"{fx('burstgpt8.csv')}?decode=1e40"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "needs inf s of work" in line


def test_a_count_tables_own_mean_duration_out_of_range_is_one_error(tmp_path):
    # The message read options['service'], which the user had not given: a KeyError traceback.
    p = tmp_path / "counts.csv"
    p.write_text("time,requests,mean_duration_s\n0,1,1e6\n60,1,1e6\n")
    assert message(p) == (f"{p}, line 2, column 3 (mean_duration_s): mean duration 1e+06 s: at most 604800 s "
                          "(a week) of work for one request; are durations in seconds?")


def test_two_columns_alike_but_for_spaces_are_one_column_named_twice(tmp_path):
    # Names are read without the spaces around them: which of the two was meant is not known.
    p = tmp_path / "twice.csv"
    p.write_text("timestamp,duration, duration\n0,0.5,9\n1,0.25,9\n")
    assert message(p) == f"{p}, line 1: column 'duration' appears more than once in the header (columns 2, 3)"


def test_a_trace_from_a_pipe_is_refused_not_misread(tmp_path):
    # Read twice (header, then columns), a pipe's second read started mid-file: "unknown trace
    # format" named a data row as the header, or an OSError traceback; a FIFO with no writer hung.
    fifo = tmp_path / "trace.fifo"
    os.mkfifo(fifo)
    assert message(fifo) == f"{fifo}: not a regular file (a pipe or device): save the trace to a file first"


@pytest.mark.parametrize("name, text, column, at", [
    ("generic.csv", "timestamp,duration,duration\n0,0.5,99999\n1,0.5,3\n", "duration", "2, 3"),
    ("counts.csv", "time,requests,requests\n0,3,500\n60,2,7\n", "requests", "2, 3"),
])
def test_a_column_the_reader_needs_named_twice_is_refused(tmp_path, name, text, column, at):
    # The first of the two was read without a word, whichever was meant.
    path = _csv(tmp_path, name, text)
    assert message(path) == f"{path}, line 1: column {column!r} appears more than once in the header (columns {at})"
