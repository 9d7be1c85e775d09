import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from kpilot.traces import make_trace
from kpilot.traces.inspect import trace_stats

KPILOT = Path(sys.executable).with_name("kpilot")


def run(*args):
    return subprocess.run([str(KPILOT), "trace", "inspect", *map(str, args)], capture_output=True, text=True)


def test_trace_stats_is_pure_and_correct():
    t = make_trace([0.1, 0.2, 0.3, 5.5, 70.0], [1, 2, 3, 4, 5], [False, True, False, False, False],
                   format="generic", span_s=71.0)
    # Every field `kpilot trace inspect` prints, worked out by hand. Gaps: 0.1, 0.1, 5.2, 64.5 (mean
    # 17.475, population variance 4187.31 / 4 - 17.475^2 = 741.451875). Service percentiles
    # interpolate linearly between order statistics (numpy's default): the q-th sits at rank
    # q x (n - 1) = 4q of 1..5, so p90 = 4 + 0.6 x (5 - 4) and p99 = 4 + 0.96.
    assert trace_stats(t) == {
        "format": "generic", "source": None, "rows": 5, "failed": 1, "span_s": 71.0,
        "first_arrival_s": 0.1, "last_arrival_s": 70.0, "mean_rate_rps": pytest.approx(5 / 71),
        "peak_rate_1s_rps": 3.0,                          # 0.1, 0.2, 0.3 in second 0
        "peak_rate_60s_rps": pytest.approx(4 / 60),        # four in the first minute
        "interarrival_cv": pytest.approx(math.sqrt(741.451875) / 17.475),
        "max_gap_s": pytest.approx(64.5),
        "service_mean_s": 3.0, "service_p50_s": 3.0,
        "service_p90_s": pytest.approx(4.6), "service_p99_s": pytest.approx(4.96),
    }


def test_cli_json(fx):
    out = run(fx("burstgpt6.csv"), "--json")
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats["format"] == "burstgpt" and stats["rows"] == 5 and stats["failed"] == 2


def test_cli_table_with_spec_and_coldstart(fx):
    out = run(f"{fx('azure2019/invocations.csv')}?top=1")
    assert out.returncode == 0 and "azure-functions-2019" in out.stdout and "top=1" in out.stdout
    cs = json.loads(run(fx("huawei_coldstart.csv"), "--json").stdout)
    assert cs["count"] == 2 and cs["mean_s"] == pytest.approx(1.25)


@pytest.mark.parametrize("name,fragment", [("bad_nonnumeric.csv", "line 4, column 4 (Response tokens)"),
                                           ("bad_unknown.csv", "unknown trace format")])
def test_cli_bad_input_is_one_line_exit_2(fx, name, fragment):
    out = run(fx(name))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1
    assert fragment in out.stderr and out.stderr.startswith("kpilot: error: ")


def test_cli_trace_formats_lists_every_reader():
    import subprocess
    import sys
    from pathlib import Path

    from kpilot.traces import FORMATS

    out = subprocess.run([str(Path(sys.executable).with_name("kpilot")), "trace", "formats"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for name in FORMATS:
        assert name in out.stdout
