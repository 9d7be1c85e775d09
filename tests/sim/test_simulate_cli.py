"""`kpilot simulate`, `demo` and `bench` as a user runs them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

KPILOT = str(Path(sys.executable).with_name("kpilot"))
REQUIRED = ("requests", "completed", "failed", "latency_p50_s", "latency_p95_s", "latency_p99_s",
            "slo_violation_rate", "cold_starts", "pod_seconds", "mean_pods", "max_pods", "panic_seconds")
TIMELINE = ("t", "arrivals", "observed_concurrency_stable", "observed_concurrency_panic", "target",
            "desired_pods", "ready_pods", "panic")
SMALL = "synthetic:bursty:rate=10,duration=600,seed=3"


def kpilot(*args):
    return subprocess.run([KPILOT, *args], capture_output=True, text=True, timeout=300)


def test_simulate_json_has_the_metrics_and_is_deterministic(tmp_path):
    a = kpilot("simulate", "--trace", SMALL, "--policy", "static:5", "--seed", "4", "--json")
    b = kpilot("simulate", "--trace", SMALL, "--policy", "static:5", "--seed", "4", "--json")
    assert a.returncode == 0, a.stderr
    out = json.loads(a.stdout)
    assert set(REQUIRED) <= set(out)
    assert out["requests"] > 1000 and out["completed"] + out["failed"] == out["requests"]
    assert a.stdout == b.stdout
    c = kpilot("simulate", "--trace", SMALL, "--policy", "static:5", "--seed", "5", "--json")
    assert c.stdout != a.stdout


def test_simulate_writes_a_timeline_row_per_tick(tmp_path):
    path = tmp_path / "tl.csv"
    r = kpilot("simulate", "--trace", SMALL, "--timeline", str(path), "--json")
    assert r.returncode == 0, r.stderr
    df = pl.read_csv(path)
    assert set(TIMELINE) <= set(df.columns)
    assert (df["t"].diff().drop_nulls() == 2.0).all()
    assert df["arrivals"].sum() == json.loads(r.stdout)["requests"]
    assert set(df["panic"].unique().to_list()) <= {0.0, 1.0}


def test_simulate_with_a_policy_artifact(tmp_path):
    import numpy as np

    from kpilot.action import ActionSpec
    from kpilot.observation import N_FEATURES
    from kpilot.policy import policy_to_bytes

    # A constant policy: zero weights, bias 0 -> the middle of the log target range.
    data = policy_to_bytes(layers=[(np.zeros((1, N_FEATURES)), np.zeros(1))], obs_mean=np.zeros(N_FEATURES),
                           obs_var=np.ones(N_FEATURES), action_spec=ActionSpec(1.0, 100.0))
    (tmp_path / "policy.json").write_bytes(data)
    r = kpilot("simulate", "--trace", SMALL, "--policy", str(tmp_path), "--timeline",
               str(tmp_path / "tl.csv"), "--json")
    assert r.returncode == 0, r.stderr
    df = pl.read_csv(tmp_path / "tl.csv")
    assert df.filter(pl.col("t") > 30)["target"].to_list() == pytest.approx([10.0] * len(df.filter(pl.col("t") > 30)))


def _targets_of_a_policy_proposing_10(tmp_path, **action) -> list[float]:
    """The distinct targets `kpilot simulate` runs under a policy that always proposes 10 (action 0
    on [1, 100]) from Knative's default of 100, with the given smoothing or step limit."""
    import numpy as np

    from kpilot.action import ActionSpec
    from kpilot.observation import N_FEATURES
    from kpilot.policy import policy_to_bytes

    data = policy_to_bytes(layers=[(np.zeros((1, N_FEATURES)), np.zeros(1))], obs_mean=np.zeros(N_FEATURES),
                           obs_var=np.ones(N_FEATURES), action_spec=ActionSpec(1.0, 100.0, **action))
    (tmp_path / "policy.json").write_bytes(data)
    r = kpilot("simulate", "--trace", SMALL, "--policy", str(tmp_path), "--timeline",
               str(tmp_path / "tl.csv"), "--json")
    assert r.returncode == 0, r.stderr
    return pl.read_csv(tmp_path / "tl.csv")["target"].unique(maintain_order=True).to_list()


def test_a_policy_with_a_step_limit_moves_one_step_per_decision(tmp_path):
    # May move only x1.5 per decision.
    assert _targets_of_a_policy_proposing_10(tmp_path, max_step_ratio=0.5) == pytest.approx(
        [100 / 1.5, 100 / 1.5 ** 2, 100 / 1.5 ** 3, 100 / 1.5 ** 4, 100 / 1.5 ** 5, 10.0])


def test_a_policy_with_smoothing_takes_over_knatives_target_at_once(tmp_path):
    # The first decision sets a target the policy did not set before (Knative's 100): not smoothed.
    # Each later one moves half way on the log scale from 10 to 10: it stays.
    assert _targets_of_a_policy_proposing_10(tmp_path, smoothing=0.5) == pytest.approx([10.0])


@pytest.mark.parametrize("args,needle", [
    (("--trace", "/no/such/file.csv"), "/no/such/file.csv"),
    (("--trace", SMALL, "--policy", "static:-1"), "option --policy"),
    (("--trace", SMALL, "--policy", "static:inf"), "finite number >= 0.01"),
    (("--trace", SMALL, "--policy", "/no/such/policy"), "/no/such/policy"),
    (("--trace", SMALL, "--cold-start", "lognormal:1"), "option --cold-start: bad cold-start model 'lognormal:1': expected lognormal:MEAN,SD"),
    (("--trace", SMALL, "--cold-start", "fixd:2.5"), "option --cold-start: bad cold-start model 'fixd:2.5': expected fixed:S"),
    (("--trace", SMALL, "--cold-start", "tables/nosuch.csv"),
     "option --cold-start: no cold-start table 'tables/nosuch.csv' (a relative path is read from the working directory"),
    (("--trace", SMALL, "--cold-start", "/tmp"), "option --cold-start: /tmp: is a directory, not a trace file"),
    (("--trace", SMALL, "--cores", "0"), "option --cores"),
    (("--trace", SMALL, "--seed", "x"), "--seed"),
    (("--trace", SMALL, "--timeline", "/no/such/dir/t.csv"), "option --timeline"),
    (("--trace", SMALL, "--cores", "nan"), "option --cores: must be > 0, got nan"),
    (("--trace", SMALL, "--container-concurrency", "100000000"), "option --container-concurrency: must be >= 0 and <= 1000"),
    (("--trace", SMALL, "--interval", "nan", "--policy", "policies/default"), "option --interval: must be a number > 0"),
])
def test_bad_input_is_one_line_exit_2(args, needle):
    r = kpilot("simulate", *args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert needle in r.stderr


def test_failed_run_leaves_an_existing_timeline_untouched(tmp_path):
    path = tmp_path / "tl.csv"
    path.write_text("precious\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,duration\n1,0.5\n2,oops\n")
    for args, needle in ((["--trace", SMALL, "--cold-start", "bogus"], "--cold-start"),
                         (["--trace", str(bad)], "bad.csv, line 3")):    # fails after the options parse
        r = kpilot("simulate", *args, "--timeline", str(path))
        assert r.returncode == 2 and needle in r.stderr, r.stderr
        assert path.read_text() == "precious\n"


def test_demo_compares_the_shipped_policy_with_the_rule_kpa_and_every_static_target():
    from kpilot.evaluate.baselines import STATIC_GRID

    r = kpilot("demo")
    assert r.returncode == 0, r.stderr
    # The table's policy column, one row per controller, in table order; the best static target
    # is marked where it stands.
    rows = [line.split("│")[2].strip() for line in r.stdout.splitlines() if line.startswith("│")]
    best = [name for name in rows if name.endswith(" (best static)")]
    assert len(best) == 1 and best[0].startswith("static:")
    names = [name.removesuffix(" (best static)") for name in rows]
    assert names == ["rl:default", "rule:aimd", "kpa", *(f"static:{t:g}" for t in STATIC_GRID)]
    assert "policies/default" in r.stdout


def test_bench_reports_what_it_measured(monkeypatch):
    """The bench's figures are its own measurements, whatever the machine's speed: a fake clock
    stands in for the timer where the bench times, and the simulator's rate is checked against
    the replay's own measured seconds."""
    import types

    import kpilot.bench as bench
    import kpilot.retune

    replays, real_replay = [], bench.replay

    def recorded_replay(trace, *args, **kwargs):
        result = real_replay(trace, *args, **kwargs)
        replays.append(result)
        return result

    monkeypatch.setattr(bench, "replay", recorded_replay)
    sim = bench.bench_simulator(requests=20_000, repeats=1)
    _compile, timed = replays                     # the untimed compile run, then the timed one
    # 200 s of Poisson arrivals at 100 req/s: 20,000 requests replayed, at their count over the
    # replay's own seconds.
    assert timed.metrics["requests"] == sim["sim_requests"] == 20_000
    assert sim["sim_requests_per_s"] == pytest.approx(20_000 / timed.wall_s)

    def clock(*laps):                             # perf_counter: start, end, start, end, ...
        ticks = iter(t for lap in laps for t in (0.0, lap))
        return types.SimpleNamespace(perf_counter=lambda: next(ticks))

    # Three repeats timed 2, 4 and 5 s: 4 envs x 5 steps over each, and their median reported.
    monkeypatch.setattr(bench, "time", clock(2.0, 4.0, 5.0))
    env = bench.bench_env(num_envs=4, steps=5, repeats=3)
    assert env == {"env_num_envs": 4, "env_steps_per_s": pytest.approx(20 / 4.0)}

    retunes, real_retune = [], kpilot.retune.retune

    def recorded_retune(traffic, *args, **kwargs):
        retunes.append((traffic, kwargs["seeds"]))
        return real_retune(traffic, *args, **kwargs)

    monkeypatch.setattr(kpilot.retune, "retune", recorded_retune)
    monkeypatch.setattr(bench, "time", clock(5.0, 1.0, 3.0))
    retune = bench.bench_retune(rate=0.5, repeats=3)
    assert retune == {"retune_requests_per_s": 0.5, "retune_service_s": pytest.approx(3.0)}
    # Each timed run retunes one Service of 0.5 req/s (30 requests a minute) under three seeds.
    for traffic, seeds in retunes[1:]:
        assert seeds == [0, 1, 2] and [{count for _, count, _ in s.rows} for s in traffic] == [{30}]
    assert len(retunes) == 4                      # one untimed compile run, three timed


@pytest.mark.traces
def test_simulate_every_request_trace_excerpt():
    root = os.environ.get("KPILOT_TRACES")
    if not root:
        pytest.skip("KPILOT_TRACES is not set: point it at the real trace excerpts (e.g. ../shared/traces)")
    root = Path(root)
    for rel in ("burstgpt/BurstGPT_1_head42.csv", "azure-llm-2023/AzureLLMInferenceTrace_code.csv",
                "azure-functions-2021/AzureFunctionsInvocationTrace2021_first199rows.csv",
                "azure-functions-2019/invocations.csv?top=3"):
        r = kpilot("simulate", "--trace", str(root / rel), "--json")
        assert r.returncode == 0, (rel, r.stderr)
        out = json.loads(r.stdout)
        assert out["requests"] > 0 and out["pod_seconds"] > 0, rel
    # The Huawei cold-start table is drawn from: pods come later than with instant starts, so the
    # requests share the pods there are for longer.
    table = str(root / "huawei-2025/coldstart2025_all_regions_cold_start_table.rows.csv")
    runs = {c: kpilot("simulate", "--trace", SMALL, "--policy", "static:1", "--cold-start", c, "--json")
            for c in (table, "instant")}
    assert runs[table].returncode == 0, runs[table].stderr
    assert json.loads(runs[table].stdout)["latency_mean_s"] > json.loads(runs["instant"].stdout)["latency_mean_s"]


def test_config_yaml_overrides_knative_defaults_and_rejects_unknown_keys(tmp_path):
    good = tmp_path / "sim.yaml"
    good.write_text("kpa:\n  min_scale: 4\n  initial_scale: 4\npod:\n  cores: 3\n")
    r = kpilot("simulate", "--trace", SMALL, "--config", str(good), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["mean_pods"] >= 4.0
    one_core = kpilot("simulate", "--trace", SMALL, "--config", str(good), "--cores", "1", "--json")
    # The YAML's 3 cores per pod serve faster than the explicit --cores 1 that overrides it.
    assert json.loads(r.stdout)["latency_p95_s"] < json.loads(one_core.stdout)["latency_p95_s"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("kpa:\n  stable_windw_s: 30\n")
    r = kpilot("simulate", "--trace", SMALL, "--config", str(bad))
    assert r.returncode == 2 and "kpa.stable_windw_s" in r.stderr and str(bad) in r.stderr
    assert "unknown setting (valid: " in r.stderr and " stable_window_s," in r.stderr   # what it should be
    typed = tmp_path / "typed.yaml"
    typed.write_text("pod:\n  cores: many\n")
    r = kpilot("simulate", "--trace", SMALL, "--config", str(typed))
    assert r.returncode == 2 and "pod.cores" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("yaml_text, needle", [
    # Each once ran: a traceback (negative array sizes), a hang (a tick of 0 never advances), or
    # every request "failed" with exit 0.
    ("kpa: {stable_window_s: -5}", "field kpa.stable_window_s: must be >= 6 and <= 3600, got -5"),
    ("kpa: {tick_s: 0}", "field kpa.tick_s: must be >= 0.1 and <= 60 (the simulator's limit), got 0"),
    ("pod: {max_pods: 0}", "field pod.max_pods: must be >= 1 and <= 10000 (the simulator's limit), got 0"),
    ("pod: {queue_capacity: -1}", "field pod.queue_capacity: must be >= 1"),
    ("pod: {cores: -1}", "field pod.cores: must be > 0, got -1"),
    ("slo: {slowdown: .nan}", "field slo.slowdown: must be >= 1, got nan"),
    ("kpa: {max_scale_down_rate: 0}", "field kpa.max_scale_down_rate: must be > 1, got 0"),
    ("kpa: {target_burst_capacity: -2}", "field kpa.target_burst_capacity: must be >= 0 or -1, got -2"),
    ("kpa: {min_scale: 3, max_scale: 2}", "field kpa.min_scale: 3 is above kpa.max_scale 2"),
    ("kpa: {stable_window_s: 1e9}", "YAML reads a number without a dot, such as 1e9, as text"),
    ("kpa: {scale_to_zero_grace_period_s: 0}", "field kpa.scale_to_zero_grace_period_s: must be > 0, got 0"),
    ("kpa: {scale_down_delay_s: 100000}", "must be >= 0 and <= 86400 (the simulator's limit)"),
    ("kpa: {initial_scale: 0}", "field kpa.initial_scale: 0 needs kpa.allow_zero_initial_scale: true"),
    ("kpa: {max_scale_limit: 10}", "field kpa.max_scale: must be between 1 and kpa.max_scale_limit (10) "
                                   "when that is set, got 0"),
    ("kpa: {max_scale_limit: 10, max_scale: 11}", "kpa.max_scale_limit (10) when that is set, got 11"),
    # Knative reads a ConfigMap percentage of at most 1 as a fraction, and windows in whole seconds.
    ("kpa: {container_concurrency_target_percentage: 0.7}",
     "field kpa.container_concurrency_target_percentage: 0.7 is a percentage here, where Knative's ConfigMap "
     "would read it as 70 %: write 70"),
    ("kpa: {stable_window_s: 6.5}", "field kpa.stable_window_s: 6.5 s: Knative takes whole seconds only"),
    ("kpa: {scale_down_delay_s: 2.5}", "field kpa.scale_down_delay_s: 2.5 s: Knative takes whole seconds only"),
])
def test_config_values_knative_would_refuse_are_one_line_naming_the_field(tmp_path, yaml_text, needle):
    path = tmp_path / "sim.yaml"
    path.write_text(yaml_text + "\n")
    r = kpilot("simulate", "--trace", SMALL, "--config", str(path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"kpilot: error: {path}: field ") and needle in line


def test_config_values_knative_accepts_are_accepted(tmp_path):
    """The ConfigMap takes a grace period under 6 s, any panic threshold and long scale-down delays
    (the 110-1000 % range belongs to the per-revision annotation)."""
    path = tmp_path / "sim.yaml"
    path.write_text("kpa: {scale_to_zero_grace_period_s: 3.0, panic_threshold_percentage: 1500.0, "
                    "scale_down_delay_s: 7200.0}\n")
    r = kpilot("simulate", "--trace", SMALL, "--config", str(path), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["requests"] > 0
    # A revision starting at zero when Knative allows it; max-scale within max-scale-limit.
    path.write_text("kpa: {initial_scale: 0, allow_zero_initial_scale: true, max_scale: 3, max_scale_limit: 5}\n")
    r = kpilot("simulate", "--trace", SMALL, "--config", str(path), "--json")
    assert r.returncode == 0, r.stderr
    assert 0 < json.loads(r.stdout)["max_pods"] <= 3


def test_the_timeline_is_written_through_a_link_and_never_over_what_is_not_a_plain_file(tmp_path):
    # A link became a plain file (its target untouched), a pipe or device was replaced, the trace
    # being read was overwritten, and an unwritable path was a 45-line traceback.
    trace = tmp_path / "trace.csv"
    trace.write_text("timestamp,duration\n1,0.5\n2,0.5\n3,0.5\n")
    (tmp_path / "sub").mkdir()
    real = tmp_path / "sub" / "real.csv"
    real.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    r = kpilot("simulate", "--trace", str(trace), "--timeline", str(link), "--json")
    assert r.returncode == 0, r.stderr
    assert link.is_symlink() and real.read_text().startswith("t,arrivals,")
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    (tmp_path / "astray.csv").symlink_to("/nonexistent-kpilot-dir/x.csv")
    for timeline, needle in ((fifo, "is not a regular file (a device, pipe or socket)"),
                             (tmp_path / "loop_a", "is a symbolic link that loops"),
                             (tmp_path / "astray.csv", "folder '/nonexistent-kpilot-dir' does not exist"),
                             (trace, "is the trace being read"),
                             (trace / "x.csv", "is a file, not a folder"),
                             (Path("/proc/kpilot-x.csv"), "cannot write '/proc/kpilot-x.csv'")):
        r = kpilot("simulate", "--trace", str(trace), "--timeline", str(timeline), "--json")
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        (line,) = r.stderr.strip().splitlines()
        assert line.startswith("kpilot: error: option --timeline: ") and needle in line, line
    assert fifo.exists() and not fifo.is_file()
    assert trace.read_text() == "timestamp,duration\n1,0.5\n2,0.5\n3,0.5\n"


@pytest.mark.parametrize("model", ["lognormal:1,1e200", "lognormal:1,inf", "lognormal:inf,1", "lognormal:301,1"])
def test_a_lognormal_cold_start_must_be_finite_and_in_range(model):
    # 1e200 overflowed (a traceback), an infinite sd drew NaN cold starts (pods never ready, exit 0).
    r = kpilot("simulate", "--trace", SMALL, "--cold-start", model, "--json")
    assert r.returncode == 2 and r.stderr.strip() == (
        f"kpilot: error: option --cold-start: bad cold-start model '{model}': mean must be in (0, 300] "
        "and sd in (0, 30000] seconds")


def test_a_bad_cold_start_in_the_config_file_names_the_file(tmp_path):
    config = tmp_path / "sim.yaml"
    config.write_text("pod:\n  cold_start: bogus\n")
    r = kpilot("simulate", "--trace", SMALL, "--config", str(config), "--json")
    assert r.returncode == 2
    assert r.stderr.strip().startswith(f"kpilot: error: {config}: pod.cold_start: bad cold-start model 'bogus'")


def test_running_out_of_the_simulators_pods_is_said_not_silent(tmp_path):
    # 200 req/s of 10 s at one request per pod wants ~2,000 pods; the simulator has 1,000.
    heavy = "synthetic:poisson:rate=200,duration=120,service=10,cv=0.1"
    r = kpilot("simulate", "--trace", heavy, "--policy", "static:1", "--cold-start", "instant", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["max_pods"] == 1000 and out["pod_capacity_reached"] is True
    assert "reached the simulator's capacity of 1000 pods (pod.max_pods)" in r.stderr
    # Under a Knative max-scale below the capacity the bound is Knative's: no note.
    capped = tmp_path / "sim.yaml"
    capped.write_text("kpa:\n  max_scale: 50\n")
    r = kpilot("simulate", "--trace", heavy, "--policy", "static:1", "--cold-start", "instant", "--json",
               "--config", str(capped))
    assert json.loads(r.stdout)["pod_capacity_reached"] is False and "capacity" not in r.stderr
    assert json.loads(kpilot("simulate", "--trace", SMALL, "--json").stdout)["pod_capacity_reached"] is False
    # A minimum scale above the capacity is refused, not run at the capacity.
    low = tmp_path / "low.yaml"
    low.write_text("kpa:\n  min_scale: 5\npod:\n  max_pods: 1\n")
    r = kpilot("simulate", "--trace", SMALL, "--config", str(low), "--json")
    assert r.returncode == 2
    assert r.stderr.strip() == f"kpilot: error: {low}: field kpa.min_scale: 5 is above pod.max_pods 1, the simulator's capacity"


def test_latency_is_null_not_zero_when_no_request_finished(tmp_path):
    # Two requests of 5,000 s: neither finishes within the replay. Latency read 0.000 (instant).
    long = tmp_path / "long.csv"
    long.write_text("timestamp,duration\n0,5000\n1,5000\n")
    r = kpilot("simulate", "--trace", str(long), "--json")
    out = json.loads(r.stdout)
    assert out["completed"] == 0
    assert [out[k] for k in ("latency_p50_s", "latency_p95_s", "latency_p99_s", "latency_mean_s")] == [None] * 4
    table = kpilot("simulate", "--trace", str(long))
    assert table.returncode == 0 and "–" in table.stdout and "0.000" not in table.stdout
    from kpilot.evaluate.runner import mean_metrics
    from kpilot.sim.replay import METRIC_KEYS

    out = {k: out[k] for k in METRIC_KEYS}
    done = {**out, "latency_p95_s": 2.0}
    assert mean_metrics([out, out])["latency_p95_s"] is None
    assert mean_metrics([out, done])["latency_p95_s"] == 2.0       # over the replays where some finished
