"""Bad inputs to `kpilot evaluate`: one clear line on stderr, exit code 2, never a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from eval_support import KPILOT, TRACE


def _fails(*args, expect: str):
    proc = subprocess.run([str(KPILOT), "evaluate", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert expect in lines[0], lines[0]


def test_missing_policy_directory(tmp_path):
    _fails("--trace", TRACE, "--policy", str(tmp_path / "nope"), expect="no such policy directory")


def test_empty_policy_directory(tmp_path):
    _fails("--trace", TRACE, "--policy", str(tmp_path), expect="no such policy file")


def test_corrupt_policy_json(tiny_policy, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_policy, bad)
    data = (bad / "policy.json").read_bytes()
    (bad / "policy.json").write_bytes(data[: len(data) // 2])
    _fails("--trace", TRACE, "--policy", str(bad), expect="not valid JSON")


def test_a_deeply_nested_policy_json_is_one_line(tmp_path):
    # 200 KB of [[[...]]]: json's RecursionError was a traceback.
    (tmp_path / "policy.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    _fails("--trace", TRACE, "--policy", str(tmp_path), expect="not valid JSON (nested too deeply)")


@pytest.mark.parametrize("section", ["observation", "manifest"])
def test_observation_version_mismatch(tiny_policy, tmp_path, section):
    bad = tmp_path / "old"
    shutil.copytree(tiny_policy, bad)
    doc = json.loads((bad / "policy.json").read_text())
    if section == "observation":
        doc["observation"]["version"] = "kpilot-obs/0"
    else:
        doc["manifest"]["observation_version"] = "kpilot-obs/0"
    (bad / "policy.json").write_text(json.dumps(doc))
    _fails("--trace", TRACE, "--policy", str(bad), expect="kpilot-obs/0")


def test_unknown_baseline(tiny_policy):
    _fails("--trace", TRACE, "--policy", str(tiny_policy), "--baselines", "kpa,magic",
           expect="unknown baseline 'magic'")
    _fails("--trace", TRACE, "--policy", str(tiny_policy), "--baselines", "static:inf",
           expect="unknown baseline 'static:inf'")


def test_bad_trace_path(tiny_policy, tmp_path):
    _fails("--trace", str(tmp_path / "missing.csv"), "--policy", str(tiny_policy), expect="missing.csv")


def test_malformed_trace_file(tiny_policy, tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("timestamp,duration\n0.5,0.1\nabc,0.2\n")
    _fails("--trace", str(f), "--policy", str(tiny_policy), expect="t.csv, line 3, column 1 (timestamp)")


def test_bad_window(tiny_policy):
    _fails("--trace", TRACE, "--policy", str(tiny_policy), "--window", "0.9:0.2",
           expect="option --window: expected START:END fractions with 0 <= START < END <= 1")


def test_negative_warmup(tiny_policy):
    _fails("--trace", TRACE, "--policy", str(tiny_policy), "--window", "0.5:1", "--warmup", "-5",
           expect="option --warmup: expected seconds >= 0")


def test_a_warmup_without_a_window_is_refused_not_ignored(tiny_policy):
    _fails("--trace", TRACE, "--policy", str(tiny_policy), "--warmup", "100",
           expect="option --warmup: a warm-up runs before a --window; without one every trace is replayed whole")


def test_time_of_day_shift_must_be_finite(tiny_policy):
    _fails("--trace", TRACE, "--policy", str(tiny_policy), "--time-of-day-shift", "nan",
           expect="--time-of-day-shift")


def test_replays_must_be_positive(tiny_policy):
    _fails("--trace", TRACE, "--policy", str(tiny_policy), "--replays", "0", expect="option --replays: expected a count >= 1")


@pytest.mark.parametrize("field, value", [("max_step_ratio", 0), ("max_step_ratio", -0.5),
                                          ("max_step_ratio", "fast"), ("smoothing", 0), ("smoothing", 1),
                                          ("smoothing", 1.5), ("smoothing", True), ("smoothing", "half"),
                                          ("immediate_cuts", "yes"), ("immediate_cuts", 1),
                                          # a setting from a newer kpilot: refused, not ignored
                                          ("cut_floor", 2.0)])
def test_bad_action_setting_in_the_policy(tiny_policy, tmp_path, field, value):
    bad = tmp_path / "action"
    shutil.copytree(tiny_policy, bad)
    doc = json.loads((bad / "policy.json").read_text())
    doc["action"][field] = value
    (bad / "policy.json").write_text(json.dumps(doc))
    _fails("--trace", TRACE, "--policy", str(bad), expect=field)


def _edited(tiny_policy, tmp_path, edit):
    bad = tmp_path / "edited"
    shutil.copytree(tiny_policy, bad)
    doc = json.loads((bad / "policy.json").read_text())
    edit(doc)
    (bad / "policy.json").write_text(json.dumps(doc))
    return bad


@pytest.mark.parametrize("edit, expect", [
    # A NaN variance made every decision NaN: the policy's rows silently equalled KPA defaults.
    (lambda d: d["normalization"]["var"].__setitem__(0, float("nan")), "non-finite variance"),
    (lambda d: d["normalization"].__setitem__("clip", "abc"), "malformed policy: field normalization"),
    (lambda d: d["normalization"].__setitem__("epsilon", -1), "epsilon must be positive"),
    (lambda d: d.__setitem__("action", [1, 2]), "malformed policy: field action"),
    # Said "AttributeError: 'NoneType' object has no attribute 'get'".
    (lambda d: d.__setitem__("action", None), "malformed policy: field action: must be an object, got null"),
    (lambda d: d["manifest"].__setitem__("config", [1]), "malformed manifest"),
    (lambda d: d["manifest"]["reward"].__setitem__("cost_per_violation", "x"), "reward.cost_per_violation"),
    # Scores of -inf, +nan% against KPA, and a tuned target chosen on costs of inf.
    (lambda d: d["manifest"]["reward"].__setitem__("cost_per_violation", 1e308),
     "reward.cost_per_violation must be at most 1e+06"),
    # A zero or negative interval never advanced the replay: the command hung.
    (lambda d: d["manifest"]["env"].__setitem__("decision_interval_s", 0), "env.decision_interval_s"),
    (lambda d: d["manifest"]["env"].__setitem__("decision_interval_s", -30), "env.decision_interval_s"),
    (lambda d: d["manifest"]["rule_baseline"]["params"].__setitem__("interval_s", 0),
     "rule_baseline.params.interval_s"),
    # The held-out note reads these; each was a traceback.
    (lambda d: d["manifest"].__setitem__("training_traces", [1]), "training_traces must be a list of objects"),
    (lambda d: d["manifest"]["config"].__setitem__("split", "0.7"), "config.split must be a mapping"),
    (lambda d: d["manifest"]["config"]["split"].__setitem__("train", [0, 0.5, 0.7]), "config.split.train must be"),
    (lambda d: d["manifest"]["config"]["split"].__setitem__("train", [0, "x"]), "config.split.train must be"),
])
def test_corrupt_numbers_in_the_policy(tiny_policy, tmp_path, edit, expect):
    _fails("--trace", TRACE, "--policy", str(_edited(tiny_policy, tmp_path, edit)), "--baselines", "kpa,rule",
           expect=expect)


@pytest.mark.parametrize("row, expect", [("1.0,nan", "column 2 (duration): missing value"),
                                         ("1.0,inf", "column 2 (duration): non-finite value 'inf'"),
                                         ("inf,0.1", "column 1 (timestamp): non-finite value 'inf'")])
def test_non_finite_trace_value(tiny_policy, tmp_path, row, expect):
    # Before: NaN scores in --json (not valid JSON) or, for an infinite time, a replay that never ended.
    f = tmp_path / "t.csv"
    f.write_text(f"timestamp,duration\n0.5,0.1\n{row}\n")
    _fails("--trace", str(f), "--policy", str(tiny_policy), expect=f"line 3, {expect}")


def test_report_folder_is_checked_before_the_replays(tiny_policy, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    _fails("--trace", TRACE, "--policy", str(tiny_policy), "--report", str(tmp_path / "a-file"),
           expect="--report")
    # A run refused for its inputs creates no report folder.
    _fails("--trace", str(tmp_path / "missing.csv"), "--policy", str(tiny_policy), "--report",
           str(tmp_path / "new-report"), expect="missing.csv")
    assert not (tmp_path / "new-report").exists()


def test_window_without_requests(tiny_policy, tmp_path):
    # Requests at 0-5 s and at 100 s: the window 0.2:0.5 (20-50 s) holds none, even after a warm-up.
    f = tmp_path / "gap.csv"
    f.write_text("timestamp,duration\n" + "".join(f"{t},0.1\n" for t in (0, 1, 2, 3, 4, 5, 100)))
    _fails("--trace", str(f), "--policy", str(tiny_policy), "--window", "0.2:0.5",
           expect="no request arrives in the window 0.2:0.5")


@pytest.mark.parametrize("window", [None, "0:0.5"])
def test_static_tuned_needs_a_window_after_the_start(window):
    args = ("--window", window) if window else ()
    _fails("--trace", TRACE, "--baselines", "static-tuned", *args,
           expect="option --baselines: static-tuned is tuned on the window before the one evaluated")


def test_static_tuned_needs_requests_before_the_window(tmp_path):
    # Requests only at 90-100 s: the window 0.9:1 has them, the one before it (0.8:0.9) has none.
    f = tmp_path / "late.csv"
    f.write_text("timestamp,duration\n" + "".join(f"{t},0.1\n" for t in (95, 96, 97, 98, 100)))
    _fails("--trace", str(f), "--baselines", "static-tuned", "--window", "0.9:1", "--warmup", "0",
           expect="nothing to tune on")


def test_unknown_metrics_source(tiny_policy):
    _fails("--trace", TRACE, "--policy", str(tiny_policy), "--metrics", "statsd", expect="--metrics")


@pytest.mark.parametrize("baseline", ["rl-or-tuned", "rl-in-band"])
def test_policy_around_a_tuned_target_needs_a_policy(baseline):
    _fails("--trace", TRACE, "--baselines", baseline, "--window", "0.5:1", expect="give --policy")


@pytest.mark.parametrize("band", ["0.5", "x", "inf", "nan"])
def test_band_is_a_factor_of_at_least_one(tiny_policy, band):
    _fails("--trace", TRACE, "--policy", str(tiny_policy), "--baselines", "rl-in-band", "--window", "0.5:1",
           "--band", band, expect="--band")
