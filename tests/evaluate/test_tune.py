"""`kpilot tune`: each Service's base target and band, chosen on its latest traffic."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from eval_support import KPILOT, TRACE

from kpilot.controllers import PolicyController
from kpilot.env.reward import cost_per_request
from kpilot.errors import ConfigError
from kpilot.evaluate import run_evaluation
from kpilot.evaluate.runner import load_artifact
from kpilot.evaluate.tune import recommend
from kpilot.sim.replay import replay
from kpilot.traces import load_trace
from kpilot.train.split import time_window


def test_the_base_target_is_the_best_static_target_of_the_last_window_and_the_band_pays(tiny_policy):
    (rec,) = recommend([TRACE], tiny_policy, last=0.5, warmup_s=120.0, replays=2)
    # Independently: the grid's best on the window 0.5:1 as `kpilot evaluate` scores it ...
    rows = run_evaluation([TRACE], tiny_policy, ["static-grid"], window=(0.5, 1.0), warmup_s=120.0, replays=2).rows
    best = max((r for r in rows if r["policy"].startswith("static:")),
               key=lambda r: (r["score"], -float(r["policy"][7:])))
    assert rec["base_target"] == float(best["policy"][7:])
    assert rec["target_cost"] == pytest.approx(-best["score"])
    # ... and the policy clamped to x1.5 around it, replayed on the same window and seeds.
    art = load_artifact(tiny_policy)
    base = rec["base_target"]
    banded = PolicyController(art.policy, interval_s=art.interval_s, bounds=(base / 1.5, base * 1.5))
    win = time_window(load_trace(TRACE, seed=0), 0.5, 1.0, warmup_s=120.0)
    policy_cost = sum(cost_per_request(replay(win, banded, art.sim, seed=s, timeline=False).metrics, art.reward)
                      for s in (0, 1)) / 2
    assert rec["policy_cost"] == pytest.approx(policy_cost)
    assert rec["band"] == (1.5 if policy_cost <= rec["target_cost"] else 1.0)
    assert rec["annotations"] == {"kpilot.dev/base-target": f"{base:g}", "kpilot.dev/band": f"{rec['band']:g}"}
    assert rec["window"] == [0.5, 1.0]


def test_the_band_is_recommended_where_the_policy_in_it_costs_no_more(tiny_policy, monkeypatch):
    import kpilot.evaluate.tune as tune

    monkeypatch.setattr(tune, "tune_static", lambda *a, **k: (3.0, float("inf")))
    (rec,) = recommend([TRACE], tiny_policy, last=0.5, warmup_s=120.0, replays=1, band=2.0)
    assert (rec["base_target"], rec["band"]) == (3.0, 2.0)
    assert rec["annotations"] == {"kpilot.dev/base-target": "3", "kpilot.dev/band": "2"}


def test_the_choice_replays_the_policy_through_the_operators_metrics_source():
    # The shipped policy on a busy workload, in a band wide enough not to bind: what it reads
    # (Prometheus, or the PodAutoscaler alone) decides what it does, and what the choice costs.
    from kpilot.evaluate.session import REPO_DEFAULT_POLICY

    trace = "synthetic:bursty:rate=20,duration=1200,seed=11"
    kw = dict(last=0.5, warmup_s=120.0, replays=1, band=100.0)
    (prom,) = recommend([trace], REPO_DEFAULT_POLICY, **kw)
    (k8s,) = recommend([trace], REPO_DEFAULT_POLICY, metrics="kubernetes", **kw)
    art = load_artifact(REPO_DEFAULT_POLICY)
    base = k8s["base_target"]
    banded = PolicyController(art.policy, interval_s=art.interval_s, bounds=(base / 100.0, base * 100.0),
                              metrics="kubernetes")
    win = time_window(load_trace(trace, seed=0), 0.5, 1.0, warmup_s=120.0)
    cost = cost_per_request(replay(win, banded, art.sim, seed=0, timeline=False).metrics, art.reward)
    assert k8s["policy_cost"] == pytest.approx(cost) and k8s["metrics_source"] == "kubernetes"
    assert prom["target_cost"] == k8s["target_cost"] and prom["policy_cost"] < k8s["policy_cost"]


def test_cli_json_one_object_per_trace(tiny_policy):
    other = "synthetic:onoff:duration=900,seed=12"
    proc = subprocess.run([str(KPILOT), "tune", "--trace", TRACE, "--trace", other, "--policy", str(tiny_policy),
                           "--replays", "1", "--warmup", "60", "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["trace"] for r in rows] == [TRACE, other]
    assert all(r["band"] in (1.0, 1.5) and r["base_target"] > 0 for r in rows)


def test_the_tables_annotate_line_overwrites_as_each_services_own_line_does(tiny_policy):
    # Without --overwrite kubectl refuses to change an annotation already set: a re-tune failed.
    proc = subprocess.run([str(KPILOT), "tune", "--trace", TRACE, "--policy", str(tiny_policy), "--replays", "1",
                           "--warmup", "60"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    assert "kubectl annotate ksvc NAME --overwrite kpilot.dev/base-target=T kpilot.dev/band=B" in proc.stdout


@pytest.mark.parametrize("args, expect", [
    (("--last", "0"), "--last"),
    (("--last", "1.5"), "--last"),
    (("--band", "0.9"), "--band"),
    (("--band", "inf"), "--band"),        # the operator refuses kpilot.dev/band=inf
    (("--replays", "0"), "--replays"),
    (("--warmup", "-1"), "--warmup"),
    (("--metrics", "statsd"), "--metrics"),
])
def test_bad_options_are_one_line(tiny_policy, args, expect):
    proc = subprocess.run([str(KPILOT), "tune", "--trace", TRACE, "--policy", str(tiny_policy), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and expect in proc.stderr


def test_a_bad_trace_is_one_line_naming_the_file(tiny_policy, tmp_path):
    f = tmp_path / "broken.csv"
    f.write_text("timestamp,duration\n0,0.1\n1,fast\n")
    proc = subprocess.run([str(KPILOT), "tune", "--trace", str(f), "--policy", str(tiny_policy)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "broken.csv, line 3, column 2 (duration): non-numeric value" in proc.stderr, proc.stderr


def test_tune_chooses_on_readings_as_old_as_the_clusters_scrape_and_says_so():
    trace = "synthetic:onoff:rate=5,duration=3000,seed=12"
    fresh = recommend([trace], "policies/default", replays=1)[0]
    lagged = recommend([trace], "policies/default", replays=1, observation_lag_s=25.0)[0]
    assert fresh["observation_lag_s"] == 0.0 and lagged["observation_lag_s"] == 25.0
    assert lagged["target_cost"] == fresh["target_cost"]          # the static target reads nothing
    assert lagged["policy_cost"] != fresh["policy_cost"]


def test_tune_refuses_a_lag_of_a_whole_decision_interval():
    with pytest.raises(ConfigError, match="less than the decision interval"):
        recommend(["synthetic:onoff:rate=20,duration=3000,seed=11"], "policies/default", replays=1,
                  observation_lag_s=30.0)
