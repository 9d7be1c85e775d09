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
    assert "known formats" in message(fx("burstgpt6.csv"), "csv-ish")


def test_missing_file_and_bad_options(fx, tmp_path):
    assert message(tmp_path / "nope.csv") == f"{tmp_path / 'nope.csv'}: no such file"
    assert "unknown option(s) colour" in message(f"{fx('burstgpt6.csv')}?colour=red")
    assert "no function id starts with 'zzz'" in message(f"{fx('azure2019/invocations.csv')}?function=zzz")
    assert "positive integer" in message(f"{fx('azure2019/invocations.csv')}?top=0")


def test_coldstart_table_is_not_a_request_trace(fx):
    assert "not a request trace" in message(fx("huawei_coldstart.csv"))


def test_coldstart_total_must_match_components(tmp_path):
    p = tmp_path / "cs.csv"
    p.write_text(",totalCost_cold_start,podAllocationCost,deployCodeCost,deployDependencyCost,schedulingCost\n"
                 "0,1.0,0.25,0.25,0.25,0.25\n1,9.0,0.25,0.25,0.25,0.25\n")
    with pytest.raises(TraceError) as info:
        load_coldstart_table(p)
    assert str(info.value).startswith(f"{p}, line 3, column 2 (totalCost_cold_start): totalCost_cold_start 9")
