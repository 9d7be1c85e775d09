"""`kpilot evaluate`: the JSON schema, determinism, the report, and the demo entry point."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from eval_support import KPILOT, TRACE

from kpilot.env.reward import cost_per_request
from kpilot.errors import ConfigError
from kpilot.evaluate import run_demo, run_evaluation
from kpilot.evaluate.runner import load_artifact
from kpilot.evaluate.baselines import STATIC_GRID
from kpilot.sim.replay import METRIC_KEYS


def _cli_json(*args) -> list[dict]:
    proc = subprocess.run([str(KPILOT), "evaluate", *args, "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_json_schema_and_policy_naming(tiny_policy):
    rows = _cli_json("--trace", TRACE, "--trace", "synthetic:onoff:duration=900,seed=12",
                     "--policy", str(tiny_policy), "--seed", "5")
    names = [r["policy"] for r in rows]
    expected = ["rl:tiny", "rule:aimd", "kpa", *[f"static:{t}" for t in STATIC_GRID]]
    assert names == expected * 2
    assert {r["trace"] for r in rows} == {TRACE, "synthetic:onoff:duration=900,seed=12"}
    reward = load_artifact(tiny_policy).reward
    for r in rows:
        assert set(METRIC_KEYS) <= set(r) and isinstance(r["score"], float) and r["score"] <= 0
        # The row carries everything its score is made of: a user can recompute it.
        assert r["score"] == -cost_per_request(r, reward)
    for trace in {r["trace"] for r in rows}:
        group = [r for r in rows if r["trace"] == trace]
        best = [r for r in group if r["best_static"]]
        assert len(best) == 1 and best[0]["policy"].startswith("static:")
        assert best[0]["score"] == max(r["score"] for r in group if r["policy"].startswith("static:"))
        # KPA defaults are target 100 at 70 %: the same replay as the static:100 annotation.
        kpa = next(r for r in group if r["policy"] == "kpa")
        s100 = next(r for r in group if r["policy"] == "static:100")
        assert kpa["pod_seconds"] == s100["pod_seconds"]


def test_evaluation_is_deterministic(tiny_policy):
    args = ("--trace", TRACE, "--policy", str(tiny_policy), "--baselines", "kpa,rule,static:3")
    assert _cli_json(*args) == _cli_json(*args)
    a = run_evaluation([TRACE], tiny_policy, ["kpa"], seed=1).rows
    b = run_evaluation([TRACE], tiny_policy, ["kpa"], seed=1).rows
    c = run_evaluation([TRACE], tiny_policy, ["kpa"], seed=2).rows
    assert json.dumps(a) == json.dumps(b)
    assert json.dumps(a) != json.dumps(c)        # the seed does reach the simulator


def test_replays_report_the_mean_over_consecutive_seeds(tiny_policy):
    one = [run_evaluation([TRACE], tiny_policy, ["kpa"], seed=s).rows for s in (5, 6, 7)]
    three = run_evaluation([TRACE], tiny_policy, ["kpa"], seed=5, replays=3).rows
    reward = load_artifact(tiny_policy).reward
    for i, row in enumerate(three):
        singles = [rows[i] for rows in one]
        assert row["policy"] == singles[0]["policy"] and row["seeds"] == [5, 6, 7]
        assert row["requests"] == singles[0]["requests"]
        for key in ("pod_seconds", "slo_violations", "late_seconds", "cold_starts", "latency_p95_s"):
            assert row[key] == pytest.approx(sum(r[key] for r in singles) / 3)
        assert row["max_pods"] == max(r["max_pods"] for r in singles)
        # The documented reward, written out: pod-seconds + 10 x violations + 1 x late seconds
        # + 2 x cold starts, per request of the window.
        assert (reward.cost_per_pod_second, reward.cost_per_violation, reward.cost_per_late_second,
                reward.cost_per_cold_start) == (1.0, 10.0, 1.0, 2.0)
        by_hand = (row["pod_seconds"] + 10 * row["slo_violations"] + row["late_seconds"]
                   + 2 * row["cold_starts"]) / row["requests"]
        assert row["score"] == pytest.approx(-by_hand, rel=1e-12)
    assert len({r[0]["pod_seconds"] for r in one}) > 1     # the seeds did differ
    # Each replay's own score travels with the row: the mean score is their mean (the cost is
    # linear in the metrics), and each is the single-seed run's score.
    for i, row in enumerate(three):
        assert row["seed_scores"] == pytest.approx([rows[i]["score"] for rows in one])
        assert row["score"] == pytest.approx(sum(row["seed_scores"]) / 3)


def _row(trace, policy, cost, *, best=False, seeds=None):
    r = {"trace": trace, "policy": policy, "score": -cost, "best_static": best}
    if seeds is not None:
        r["seed_scores"] = [-c for c in seeds]
    return r


def test_overall_is_the_geometric_mean_of_per_trace_ratios():
    from kpilot.evaluate.report import overall

    rows = [_row("a", "rl:p", 2.0), _row("a", "kpa", 8.0), _row("a", "static:1", 4.0, best=True),
            _row("b", "rl:p", 9.0), _row("b", "kpa", 9.0), _row("b", "static:3", 1.0, best=True),
            _row("c", "rl:p", 3.0), _row("c", "kpa", 2.0), _row("c", "static:1", 3.0, best=True)]
    o = overall(rows)
    assert set(o) == {"rl:p", "kpa"}                       # the static grid is not a compared policy
    # vs KPA: ratios 0.25, 1, 1.5 -> geometric mean 0.375 ** (1/3); vs best static 0.5, 9, 1.
    assert o["rl:p"]["saving_vs_kpa"] == pytest.approx(1 - 0.375 ** (1 / 3))
    assert o["rl:p"]["cost_vs_best_static"] == pytest.approx(4.5 ** (1 / 3))
    assert (o["rl:p"]["no_worse_than_best_static"], o["rl:p"]["compared_to_best_static"]) == (2, 3)
    assert (o["rl:p"]["worse_than_kpa"], o["rl:p"]["compared_to_kpa"]) == (1, 3)
    assert o["kpa"]["compared_to_kpa"] == 0               # KPA is not compared with itself


def test_seed_agreement_counts_seeds_where_the_policy_alone_was_no_worse():
    from kpilot.evaluate.report import seeds_no_worse

    group = [_row("a", "rl:p", 2.0, seeds=[1.0, 2.0, 3.0]),
             _row("a", "static:1", 2.0, best=True, seeds=[1.5, 2.5, 2.0])]
    assert seeds_no_worse(group, group[0]) == (2, 3)
    assert seeds_no_worse([_row("a", "rl:p", 1.0), _row("a", "static:1", 1.0, best=True)],
                          _row("a", "rl:p", 1.0)) is None     # one replay: nothing to count


def test_table_and_summary_end_with_the_all_traces_row(tiny_policy, tmp_path):
    from kpilot.evaluate.report import overall

    rows = _cli_json("--trace", TRACE, "--trace", "synthetic:onoff:duration=900,seed=12",
                     "--policy", str(tiny_policy), "--baselines", "kpa,static:1,static:3", "--replays", "2")
    o = overall(rows)["rl:tiny"]
    proc = subprocess.run([str(KPILOT), "evaluate", "--trace", TRACE, "--trace", "synthetic:onoff:duration=900,seed=12",
                           "--policy", str(tiny_policy), "--baselines", "kpa,static:1,static:3", "--replays", "2",
                           "--report", str(tmp_path)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout
    assert "all 2 traces" in table
    assert f"{o['cost_vs_best_static']:.3f}" in table.split("all 2 traces")[1]
    assert (f"rl:tiny: no worse than the best static target on {o['no_worse_than_best_static']} of 2 traces"
            in table)
    md = (tmp_path / "summary.md").read_text()
    assert f"| rl:tiny | {o['saving_vs_kpa']:+.1%} | {o['cost_vs_best_static']:.3f} |" in md
    assert "/2)" in md                                      # per-seed agreement with 2 replays
    # The summary says what it evaluated and how, as the command did (it named none of it).
    from kpilot.policy import load_policy

    digest = load_policy(tiny_policy).sha256
    assert md.splitlines()[2:5] == [f"* policy: `{tiny_policy}` (rl:tiny, policy.json sha256 {digest})",
                                    "* window: each whole trace", "* simulator seeds: 0, 1 (metrics averaged)"]


def test_json_with_a_report_keeps_stdout_json_and_says_where_the_report_is(tiny_policy, tmp_path):
    proc = subprocess.run([str(KPILOT), "evaluate", "--trace", TRACE, "--policy", str(tiny_policy),
                           "--baselines", "kpa", "--replays", "1", "--json", "--report", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [r["policy"] for r in json.loads(proc.stdout)] == ["rl:tiny", "kpa"]
    assert f"report written to {tmp_path / 'r'}" in proc.stderr        # said in table mode only, before
    assert (tmp_path / "r" / "summary.md").is_file()


def test_window_replays_only_the_held_out_part(tiny_policy):
    full = run_evaluation([TRACE], None, ["kpa"]).rows[0]
    tail = run_evaluation([TRACE], None, ["kpa"], window=(0.8, 1.0)).rows[0]
    assert 0 < tail["requests"] < 0.35 * full["requests"]
    assert tail["window"] == [0.8, 1.0]


def test_warmup_runs_before_the_window_but_scores_only_the_window():
    steady = "synthetic:poisson:rate=4,duration=1800,seed=3"
    cold = run_evaluation([steady], None, ["static:2"], window=(0.5, 1.0)).rows[0]
    warm = run_evaluation([steady], None, ["static:2"], window=(0.5, 1.0), warmup_s=300).rows[0]
    # The same requests are scored; the warm-up's own requests are not.
    assert warm["requests"] == cold["requests"]
    assert (warm["warmup_s"], cold["warmup_s"]) == (300.0, 0.0)
    assert warm["duration_s"] == cold["duration_s"]
    # Cold, the window starts on an idle revision that panics to catch up with a load already
    # running, overshoots and still misses SLOs; warm, the right pods are already there.
    assert warm["max_pods"] < cold["max_pods"]
    assert warm["pod_seconds"] < cold["pod_seconds"]
    assert warm["slo_violations"] < cold["slo_violations"]
    # A window at the start of a trace has nothing before it to warm up on.
    head = run_evaluation([steady], None, ["static:2"], window=(0.0, 0.5), warmup_s=300).rows[0]
    assert head["warmup_s"] == 0.0


def test_time_of_day_shift_moves_only_the_clock():
    from kpilot.evaluate.session import REPO_DEFAULT_POLICY

    demo = "synthetic:demo:seed=105"
    base = {r["policy"]: r for r in run_evaluation([demo], REPO_DEFAULT_POLICY, ["static:2"], window=(0.8, 1.0)).rows}
    half = {r["policy"]: r for r in run_evaluation([demo], REPO_DEFAULT_POLICY, ["static:2"], window=(0.8, 1.0),
                                                   time_of_day_shift_s=43200).rows}
    day = {r["policy"]: r for r in run_evaluation([demo], REPO_DEFAULT_POLICY, ["static:2"], window=(0.8, 1.0),
                                                  time_of_day_shift_s=86400).rows}
    assert half["static:2"]["score"] == base["static:2"]["score"]      # the KPA has no clock
    assert half["rl:default"]["time_of_day_shift_s"] == 43200.0
    assert half["rl:default"]["score"] != base["rl:default"]["score"]  # the policy sees the clock
    assert day["rl:default"]["score"] == base["rl:default"]["score"]   # a whole day later, same hour


def test_report_writes_plots_and_summary(tiny_policy, tmp_path):
    run_evaluation([TRACE], tiny_policy, ["kpa", "static-grid", "rule"], report_dir=tmp_path)
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert any(n.endswith("timeline.png") for n in pngs) and any(n.endswith("frontier.png") for n in pngs)
    assert all((tmp_path / n).stat().st_size > 5000 for n in pngs)
    md = (tmp_path / "summary.md").read_text()
    assert "rl:tiny" in md and "(best static)" in md and "kpa" in md
    # Reused for another trace, the folder keeps only the new plots (and the user's own files, even
    # one named like a plot: only those the last report listed in plots.txt go).
    (tmp_path / "mine.png").write_bytes(b"x")
    (tmp_path / "07-my-own-timeline.png").write_bytes(b"x")
    run_evaluation(["synthetic:poisson:rate=2,duration=600,seed=4"], tiny_policy, ["kpa"], report_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "00-synthetic_poisson_rate_2_duration_600_seed_4-frontier.png",
        "00-synthetic_poisson_rate_2_duration_600_seed_4-timeline.png", "07-my-own-timeline.png", "mine.png"]
    assert (tmp_path / "plots.txt").read_text().split() == [
        "00-synthetic_poisson_rate_2_duration_600_seed_4-frontier.png",
        "00-synthetic_poisson_rate_2_duration_600_seed_4-timeline.png"]


def test_the_static_frontier_leaves_out_targets_another_beats_on_both_axes():
    from kpilot.evaluate.report import static_frontier

    # static:7 (1.294, 0.204) was drawn on the line though static:5 (1.274, 0.187) beats it.
    points = [(1.10, 0.30), (1.274, 0.187), (1.294, 0.204), (1.5, 0.10), (2.0, 0.10)]
    assert static_frontier(points) == [(1.10, 0.30), (1.274, 0.187), (1.5, 0.10)]


def test_a_report_that_cannot_be_written_keeps_the_results(tiny_policy, tmp_path):
    # A folder where a plot goes: the error came after every replay, and --json printed nothing.
    import json
    import subprocess

    (tmp_path / "00-synthetic_poisson_rate_2_duration_600_seed_4-timeline.png").mkdir()
    proc = subprocess.run([str(KPILOT), "evaluate", "--trace", "synthetic:poisson:rate=2,duration=600,seed=4",
                           "--policy", str(tiny_policy), "--baselines", "kpa", "--report", str(tmp_path), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert {r["policy"] for r in json.loads(proc.stdout)} == {"rl:tiny", "kpa"}
    assert proc.stderr.strip().splitlines()[-1] == (
        f"kpilot: error: option --report: '{tmp_path}/00-synthetic_poisson_rate_2_duration_600_seed_4-timeline.png' "
        "is a folder, not a file")


def test_a_trace_name_with_a_bar_stays_in_its_markdown_cell():
    from kpilot.env.reward import RewardConfig
    from kpilot.evaluate.report import markdown_summary

    row = {"trace": "/data/p|q.csv", "policy": "kpa", "score": -1.0, "slo_violation_rate": 0.0,
           "latency_p95_s": 0.1, "cold_starts": 0, "mean_pods": 1.0, "requests": 10}
    line = next(l for l in markdown_summary([row], RewardConfig()).splitlines() if l.startswith("| /data/"))
    assert line.startswith("| /data/p\\|q.csv | kpa |") and line.count(" | ") == 8


def test_a_trace_given_twice_is_refused(tiny_policy):
    with pytest.raises(ConfigError, match="given more than once"):
        run_evaluation([TRACE, TRACE], tiny_policy, ["kpa"])


def test_run_demo_renders_the_table(tiny_policy):
    text = run_demo(tiny_policy, TRACE, seed=0)
    assert "rl:tiny" in text and "kpa" in text and "static:1" in text and "best static" in text


def test_static_tuned_is_the_best_static_target_of_the_window_before():
    # Evaluating 0.5:1, `static-tuned` sets the grid target that cost least on 0:0.5 (the window
    # just before, as long), under the same seeds and warm-up, and replays exactly as that static:N.
    rows = run_evaluation([TRACE], None, ["static-grid", "static-tuned"], window=(0.5, 1.0),
                          warmup_s=120.0, replays=2).rows
    before = run_evaluation([TRACE], None, ["static-grid"], window=(0.0, 0.5), warmup_s=120.0,
                            replays=2).rows
    chosen = max(before, key=lambda r: (r["score"], -float(r["policy"][7:])))
    tuned = next(r for r in rows if r["policy"] == "static-tuned")
    assert tuned["target"] == float(chosen["policy"][7:]) and tuned["tuned_on"] == [0.0, 0.5]
    same = next(r for r in rows if r["policy"] == f"static:{tuned['target']:g}")
    assert {k: v for k, v in tuned.items() if k not in ("policy", "target", "tuned_on", "best_static")} \
        == {k: v for k, v in same.items() if k not in ("policy", "best_static")}
    # It is never better than hindsight's pick on the window it is judged on.
    assert tuned["score"] <= max(r["score"] for r in rows if r["policy"].startswith("static:"))


def test_kubernetes_metrics_show_the_policy_only_what_a_podautoscaler_reads(tiny_policy):
    from kpilot.evaluate.runner import rl_controller
    from kpilot.observation import pod_autoscaler_readings

    art = load_artifact(tiny_policy)
    k8s, prom = rl_controller(art, "kubernetes"), rl_controller(art)
    raw = dict(concurrency_stable=7.0, concurrency_panic=9.0, ready_pods=3.0, desired_pods=4.0,
               starting_pods=1.0, target=2.5, request_rate=12.0, latency_mean_s=0.4,
               latency_p95_s=1.5, panic=1.0, time_of_day_s=3600.0)
    seen = pod_autoscaler_readings(3.0, 4.0, 2.5)
    assert seen["concurrency_stable"] == seen["concurrency_panic"] == 7.0   # desired x target x 70 %
    assert seen["request_rate"] == seen["latency_p95_s"] == seen["panic"] == 0.0
    # Rate, latency, panic and the autoscaler's concurrency do not reach the policy; pods do.
    other = {**raw, "request_rate": 0.5, "latency_mean_s": 30.0, "latency_p95_s": 90.0, "panic": 0.0,
             "concurrency_stable": 1.0, "concurrency_panic": 50.0}
    assert k8s.decide(raw) == k8s.decide(other) == prom.decide({**raw, **seen})
    assert prom.decide(raw) != prom.decide(other)           # ... which a Prometheus-fed policy reads
    # In a replay only the policy's row changes, and says how it was observed.
    runs = {m: run_evaluation([TRACE], tiny_policy, ["kpa", "static:2"], metrics=m).rows
            for m in ("prometheus", "kubernetes")}
    assert runs["kubernetes"][0]["metrics_source"] == "kubernetes" and "metrics_source" not in runs["prometheus"][0]
    assert runs["kubernetes"][1:] == runs["prometheus"][1:]
    with pytest.raises(ValueError, match="metrics must be one of prometheus, kubernetes"):
        rl_controller(art, "statsd")
    # Inverted at the utilization the replays' Knative aims for (it was always 70 %).
    from dataclasses import replace

    half = replace(art, sim=replace(art.sim, kpa=replace(art.sim.kpa, container_concurrency_target_percentage=50.0)))
    assert rl_controller(half, "kubernetes").utilization == 0.5 and k8s.utilization == 0.7
    assert rl_controller(half, "kubernetes").decide(raw) == prom.decide({**raw, **pod_autoscaler_readings(3.0, 4.0, 2.5, 0.5)})


def _cost_before(trace: str, controller, art) -> float:
    """An independent mean cost on the window 0:0.5 (warm-up 120 s) under seeds 0 and 1."""
    from kpilot.sim.replay import replay
    from kpilot.traces import load_trace
    from kpilot.train.split import time_window

    win = time_window(load_trace(trace, seed=0), 0.0, 0.5, warmup_s=120.0)
    return sum(cost_per_request(replay(win, controller, art.sim, seed=s, timeline=False).metrics, art.reward)
               for s in (0, 1)) / 2


def test_rl_in_band_keeps_the_policy_within_the_band_around_the_tuned_target(tiny_policy, tmp_path):
    result = run_evaluation([TRACE], tiny_policy, ["static-tuned", "rl-in-band"], window=(0.5, 1.0),
                            warmup_s=120.0, band=1.5, report_dir=tmp_path)
    rows = {r["policy"]: r for r in result.rows}
    base = rows["static-tuned"]["target"]
    assert rows["rl-in-band"]["target"] == base and rows["rl-in-band"]["band"] == 1.5
    assert rows["rl-in-band"]["tuned_on"] == [0.0, 0.5]
    targets = result.results[TRACE]["replays"]["rl-in-band"].timeline["target"]
    assert len(targets) and targets.min() >= base / 1.5 - 1e-9 and targets.max() <= base * 1.5 + 1e-9
    unbounded = result.results[TRACE]["replays"]["rl:tiny"].timeline["target"]
    assert unbounded.max() > base * 1.5 or unbounded.min() < base / 1.5   # the band did bind
    assert "rl-in-band (" in (tmp_path / "summary.md").read_text()
    # Without a band it is the policy itself.
    free = run_evaluation([TRACE], tiny_policy, ["rl-in-band"], window=(0.5, 1.0), warmup_s=120.0, band=None).rows
    skip = ("policy", "target", "band", "tuned_on")
    assert free[1]["band"] is None
    assert {k: v for k, v in free[1].items() if k not in skip} == {k: v for k, v in free[0].items() if k not in skip}


@pytest.mark.parametrize("trace", [TRACE, "synthetic:onoff:duration=1800,seed=12,rate=5"])
def test_rl_or_tuned_runs_the_policy_in_its_band_only_where_it_won_the_window_before(tiny_policy, trace):
    from kpilot.controllers import PolicyController

    rows = run_evaluation([trace], tiny_policy, ["static-grid", "rl-in-band", "rl-or-tuned"], window=(0.5, 1.0),
                          warmup_s=120.0, replays=2).rows
    before = run_evaluation([trace], tiny_policy, ["static-grid"], window=(0.0, 0.5), warmup_s=120.0,
                            replays=2).rows
    best_before = max((r for r in before if r["policy"].startswith("static:")),
                      key=lambda r: (r["score"], -float(r["policy"][7:])))
    base = float(best_before["policy"][7:])
    art = load_artifact(tiny_policy)
    banded = PolicyController(art.policy, interval_s=art.interval_s, bounds=(base / 1.5, base * 1.5))
    policy_won = _cost_before(trace, banded, art) <= -best_before["score"]
    choice = next(r for r in rows if r["policy"] == "rl-or-tuned")
    assert choice["chose"] == ("rl-in-band" if policy_won else best_before["policy"])
    assert (choice["target"], choice["band"], choice["tuned_on"]) == (base, 1.5 if policy_won else 1.0, [0.0, 0.5])
    # It replays exactly as what it chose.
    same = next(r for r in rows if r["policy"] == choice["chose"])
    skip = ("policy", "chose", "tuned_on", "target", "band", "best_static")
    assert {k: v for k, v in choice.items() if k not in skip} == {k: v for k, v in same.items() if k not in skip}


@pytest.mark.parametrize("band", [1.5, None])
def test_rl_or_tuned_replays_the_policy_when_the_policy_won(tiny_policy, monkeypatch, band):
    # The tiny policy never beats the grid; make every static target infinitely dear on the
    # window before, and the choice must be the policy (in its band, or alone without one),
    # replayed exactly as its own row.
    import kpilot.evaluate.session as session

    monkeypatch.setattr(session, "tune_static", lambda *a, **k: (2.0, float("inf")))
    rows = run_evaluation([TRACE], tiny_policy, ["kpa", "rl-in-band", "rl-or-tuned"], window=(0.5, 1.0),
                          warmup_s=120.0, band=band).rows
    choice = next(r for r in rows if r["policy"] == "rl-or-tuned")
    assert choice["chose"] == ("rl-in-band" if band else "rl:tiny")
    assert (choice["target"], choice["band"]) == (2.0, band)
    same = next(r for r in rows if r["policy"] == choice["chose"])
    skip = ("policy", "chose", "tuned_on", "target", "band")
    assert {k: v for k, v in choice.items() if k not in skip} == {k: v for k, v in same.items() if k not in skip}


def test_a_window_the_policy_trained_on_is_flagged(tiny_policy):
    trained = "synthetic:bursty:rate=4,duration=1500,seed=1"           # tiny_policy's training trace
    cmd = [str(KPILOT), "evaluate", "--policy", str(tiny_policy), "--baselines", "kpa", "--json",
           "--trace", trained, "--trace", "synthetic:bursty:rate=4,duration=1500,seed=2"]
    overlapping = subprocess.run([*cmd, "--window", "0.5:1"], capture_output=True, text=True, timeout=120)
    assert overlapping.returncode == 0 and json.loads(overlapping.stdout)      # a note, not an error
    notes = [line for line in overlapping.stderr.splitlines() if line.startswith("kpilot: note:")]
    assert len(notes) == 1 and trained in notes[0]
    assert "trained on 0:0.7 and validated on 0.7:0.8" in notes[0] and "not held out" in notes[0]
    held_out = subprocess.run([*cmd, "--window", "0.8:1"], capture_output=True, text=True, timeout=120)
    assert held_out.returncode == 0 and "note:" not in held_out.stderr
    # rl-or-tuned chooses on 0.6:0.8, which the policy trained and validated on.
    chosen = subprocess.run([*cmd, "--window", "0.8:1", "--baselines", "rl-or-tuned"],
                            capture_output=True, text=True, timeout=120)
    (note,) = [line for line in chosen.stderr.splitlines() if line.startswith("kpilot: note:")]
    assert f"{trained}: rl-or-tuned chooses on 0.6:0.8, which the policy was trained on 0:0.7 and validated " \
           "on 0.7:0.8: its cost there is not out of sample" in note


def test_a_warm_up_reaching_into_training_is_flagged_when_its_requests_are_charged(tiny_policy):
    # Azure Functions 2021's held-out window: its warm-up reaches back to 0.3, and the lateness of
    # requests that arrived there was most of the policy's cost in the window.
    from kpilot.evaluate.session import carried_from_training, training_identities
    from kpilot.traces import load_trace

    trained = "synthetic:bursty:rate=4,duration=1500,seed=1"           # tiny_policy's training trace
    artifact = load_artifact(tiny_policy)
    identities, trace = training_identities(artifact), load_trace(trained)
    row = {"score": -10.0, "requests": 10, "carried_over_violations": 2, "carried_over_late_seconds": 30.0}
    note = carried_from_training(artifact, identities, trained, trace, (0.8, 1.0), 0.4, row)
    # 10 x 2 violations + 30 s late, of 100 in all.
    assert note == (f"{trained}: the warm-up before the window, from 0.4, reaches into what the policy was "
                    "trained on 0:0.7 and validated on 0.7:0.8; the lateness of those requests in the window "
                    "is 50% of the policy's cost there (--warmup shortens the warm-up)")
    for little in (0.0, 0.9):       # nothing, or under 1 % of the cost: no note
        carried = {**row, "carried_over_violations": 0, "carried_over_late_seconds": little}
        assert carried_from_training(artifact, identities, trained, trace, (0.8, 1.0), 0.4, carried) is None
    held_out = load_trace("synthetic:bursty:rate=4,duration=1500,seed=2")      # never trained on
    assert carried_from_training(artifact, identities, trained, held_out, (0.8, 1.0), 0.4, row) is None


def test_each_table_column_shows_its_own_metric():
    # The terminal table's cells, parsed back, against the JSON row each came from: a column that
    # showed another metric (p50 as p95, violations as their rate, a ratio as a saving) would pass
    # the label checks above.
    from rich.console import Console

    from kpilot.env.reward import RewardConfig
    from kpilot.evaluate.report import summary_table

    rows = run_evaluation([TRACE], None, ["kpa", "static:1", "static:3"], seed=2).rows
    console = Console(width=240, record=True, color_system=None)
    console.print(summary_table(rows))
    cells = {}
    for line in console.export_text().splitlines():
        parts = [c.strip() for c in line.split("│")[1:-1]]
        if len(parts) == 10 and parts[1].split(" ")[0] in ("kpa", "static:1", "static:3"):
            cells[parts[1].split(" ")[0]] = parts
    assert set(cells) == {"kpa", "static:1", "static:3"}
    reward = RewardConfig()
    cost = {r["policy"]: cost_per_request(r, reward) for r in rows}
    best = min(cost["static:1"], cost["static:3"])
    for r in rows:
        _, _, score, vs_kpa, vs_best, slo, p95, cold, pods, requests = cells[r["policy"]]
        assert float(score) == pytest.approx(-cost[r["policy"]], abs=5e-5)
        assert float(vs_kpa.rstrip("%")) / 100 == pytest.approx(1 - cost[r["policy"]] / cost["kpa"], abs=5e-4)
        if r["policy"] != "kpa":
            assert float(vs_best) == pytest.approx(cost[r["policy"]] / best, abs=5e-4)
        assert float(slo.rstrip("%")) / 100 == pytest.approx(r["slo_violations"] / r["requests"], abs=5e-5)
        assert float(p95) == pytest.approx(r["latency_p95_s"], abs=5e-3)
        assert float(cold.replace(",", "")) == r["cold_starts"]
        assert float(pods) == pytest.approx(r["mean_pods"], abs=0.05)
        assert int(requests.replace(",", "")) == r["requests"]


def test_simulate_replays_a_policy_under_its_training_settings_as_evaluate_does(tmp_path):
    # A policy trained on 2-core pods: simulate used Knative's 1 core while evaluate used 2, and the
    # two commands disagreed on the same trace, seed and policy.
    from kpilot.train.config import config_from_dict
    from kpilot.train.trainer import train

    cfg = config_from_dict({
        "name": "twocores", "n_envs": 4, "total_timesteps": 128,
        "sim": {"pod": {"cores": 2}, "kpa": {"allow_zero_initial_scale": True}},
        "env": {"synthetic": ["synthetic:bursty:rate=4,duration=1500,seed=1"], "episode_s": 300,
                "decision_interval_s": 20},
        "ppo": {"n_steps": 32, "batch_size": 64, "n_epochs": 1, "net_arch": [8]},
        "eval": {"every_timesteps": 0, "rule_grid": {"hi_s": [1.0], "down": [0.5], "up": [1.5]}},
        "checkpoint": {"every_timesteps": 1000},
    }, "twocores")
    policy = tmp_path / "twocores"
    train(cfg, policy, progress=False, command="test", log=lambda m: None)

    def simulate(*extra):
        proc = subprocess.run([str(KPILOT), "simulate", "--trace", TRACE, "--policy", str(policy), "--json", *extra],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout), proc.stderr

    evaluated = next(r for r in _cli_json("--trace", TRACE, "--policy", str(policy), "--baselines", "kpa")
                     if r["policy"] == "rl:twocores")
    simulated, note = simulate()
    keys = ("pod_seconds", "latency_p95_s", "cold_starts", "slo_violations")
    assert {k: simulated[k] for k in keys} == {k: evaluated[k] for k in keys}
    assert ('replays as it was trained: sim {"kpa": {"allow_zero_initial_scale": true}, "pod": {"cores": 2}}; '
            'a decision every 20 s') in note
    # Options still override: one core per pod is slower.
    one_core, _ = simulate("--cores", "1")
    assert one_core["latency_p95_s"] > simulated["latency_p95_s"]
    # A --config is checked as Knative checks what will run: the YAML over the policy's settings.
    def with_config(text):
        path = tmp_path / "sim.yaml"
        path.write_text(text)
        return subprocess.run([str(KPILOT), "simulate", "--trace", TRACE, "--policy", str(policy), "--config",
                               str(path), "--json"], capture_output=True, text=True, timeout=120)
    assert with_config("kpa:\n  initial_scale: 0\n").returncode == 0      # the policy allows zero
    assert with_config("pod:\n").returncode == 0                           # an empty section: nothing
    refused = with_config("kpa:\n  max_scale_limit: 5\n  max_scale: 10\n")
    assert refused.returncode == 2 and "kpa.max_scale: must be between 1 and kpa.max_scale_limit" in refused.stderr
    # A manifest evaluate refuses (a setting this version does not know) is refused here too, not
    # replayed under the defaults.
    doc = json.loads((policy / "policy.json").read_text())
    doc["manifest"]["config"]["sim"]["pod"]["removed_setting"] = 1
    (policy / "policy.json").write_text(json.dumps(doc))
    proc = subprocess.run([str(KPILOT), "simulate", "--trace", TRACE, "--policy", str(policy)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "malformed manifest" in proc.stderr and "Traceback" not in proc.stderr


def test_simulate_says_nothing_of_training_settings_that_change_nothing():
    # The shipped policy was trained under the simulator defaults at a decision every 30 s: it
    # replays exactly as kpa and static:N do, and a note saying otherwise is noise.
    from kpilot.evaluate.session import REPO_DEFAULT_POLICY

    proc = subprocess.run([str(KPILOT), "simulate", "--trace", TRACE, "--policy", str(REPO_DEFAULT_POLICY), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["requests"] > 0
    assert "replays as it was trained" not in proc.stderr


@pytest.mark.parametrize("trace, options, chose, labelled", [
    ("synthetic:bursty:rate=5,duration=1800,seed=5", {"observation_lag_s": 10.0}, "rl-in-band", True),
    ("synthetic:onoff:rate=5,duration=1800,seed=4", {"observation_lag_s": 10.0}, "static:3", False),
    ("synthetic:onoff:rate=5,duration=1800,seed=4", {"metrics": "kubernetes"}, "static:3", False),
    ("synthetic:bursty:rate=5,duration=1800,seed=3", {"metrics": "kubernetes"}, "rl-in-band", True),
])
def test_rl_or_tuned_rows_say_what_was_read_only_where_the_policy_read_it(trace, options, chose, labelled):
    # A choice of the static target read nothing, yet its row said observation_lag_s; one of the
    # band read through the kubernetes source, yet its row had no metrics_source. And static rows
    # said tuned_on [0.6000000000000001, 0.8] where the band's said [0.6, 0.8].
    rows = {r["policy"]: r for r in run_evaluation([trace], "policies/default", ["static-tuned", "rl-or-tuned"],
                                                   window=(0.8, 1.0), replays=1, **options).rows}
    choice = rows["rl-or-tuned"]
    assert choice["chose"] == chose
    key, value = next(iter(options.items()))
    label = "observation_lag_s" if key == "observation_lag_s" else "metrics_source"
    assert (choice.get(label) == value) if labelled else (label not in choice)
    assert choice["tuned_on"] == rows["static-tuned"]["tuned_on"] == [0.6, 0.8]


def test_a_lagged_policy_and_rule_are_replayed_on_older_readings_and_the_rows_say_so():
    # Prometheus serves the operator its last scrape: `--observation-lag` replays the policy and the
    # rule on readings that old. Knative's own static targets read nothing and are unchanged.
    onoff = "synthetic:onoff:rate=20,duration=900,seed=11"     # the rule reacts to its swings
    fresh = run_evaluation([onoff], "policies/default", ["kpa", "static:5", "rule"]).rows
    lagged = run_evaluation([onoff], "policies/default", ["kpa", "static:5", "rule"], observation_lag_s=20.0)
    rows = {r["policy"]: r for r in lagged.rows}
    before = {r["policy"]: r for r in fresh}
    assert rows["rl:default"]["observation_lag_s"] == 20.0 and rows["rule:aimd"]["observation_lag_s"] == 20.0
    assert "observation_lag_s" not in rows["kpa"] and "observation_lag_s" not in rows["static:5"]
    assert rows["static:5"]["score"] == before["static:5"]["score"] and rows["kpa"]["score"] == before["kpa"]["score"]
    assert rows["rl:default"]["score"] != before["rl:default"]["score"]
    assert rows["rule:aimd"]["score"] != before["rule:aimd"]["score"]
    assert "the policy and the rule read the revision as it was 20 s before each decision" in lagged.settings
    rule_only = run_evaluation([onoff], None, ["kpa", "rule"], observation_lag_s=20.0)
    assert "the rule reads the revision as it was 20 s before each decision" in rule_only.settings
    with pytest.raises(ConfigError, match="with --metrics kubernetes the policy reads the PodAutoscaler"):
        run_evaluation([onoff], "policies/default", ["kpa"], metrics="kubernetes", observation_lag_s=20.0)


def test_traces_that_share_a_file_name_are_told_apart_in_the_tables(tmp_path):
    # Two days' exports both named requests.csv: the table names each by as much of its folder
    # as sets it apart; a synthetic workload keeps its spec.
    from rich.console import Console

    from kpilot.evaluate.report import summary_table

    rows = []
    for folder in ("monday", "tuesday"):
        path = tmp_path / folder / "requests.csv"
        path.parent.mkdir()
        path.write_text("timestamp,duration\n" + "".join(f"{i * 7.5},0.2\n" for i in range(60)))
        rows += run_evaluation([str(path)], None, ["kpa", "static:1"], seed=0).rows
    rows += run_evaluation([TRACE], None, ["kpa", "static:1"], seed=0).rows
    console = Console(width=240, record=True, color_system=None)
    console.print(summary_table(rows))
    shown = [line.split("│")[1].strip() for line in console.export_text().splitlines()
             if line.count("│") > 9 and line.split("│")[1].strip()]
    assert shown[:3] == ["monday/requests.csv", "tuesday/requests.csv", TRACE]
