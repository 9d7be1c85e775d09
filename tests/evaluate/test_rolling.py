"""`static-rolling`: the static target re-tuned on a schedule from the traffic a cluster has seen."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from eval_support import KPILOT, TRACE

from kpilot.env.reward import RewardConfig
from kpilot.evaluate import run_evaluation
from kpilot.evaluate.baselines import STATIC_GRID
from kpilot.evaluate.rolling import RollingStaticTarget, observed_history
from kpilot.sim.config import SimConfig
from kpilot.traces import load_trace
from kpilot.traces.model import make_trace


def test_history_holds_only_finished_requests_of_scraped_bins():
    # At t = 185 s with 60 s bins, Prometheus has scraped [0, 60) and [60, 120): [120, 180) ends
    # after the last scrape. A request is counted in the bin it finished in: the one arriving at
    # 55 s for 10 s in [60, 120); the one arriving at 70 s for 100 s is still in flight at 120 s.
    trace = make_trace([5, 50, 55, 70, 100, 130, 170], [1, 1, 10, 100, 2, 3, 1])
    seen = observed_history(trace, 185.0, 600.0, 60.0, cv=0.0)
    assert len(seen) == 4 and seen.meta["span_s"] == 120.0
    first_bin = seen.arrivals < 60
    assert first_bin.sum() == 2 and np.all(seen.service[first_bin] == 1.0)       # bin mean, cv = 0
    assert np.all(seen.service[~first_bin] == 6.0) and np.all(seen.arrivals[~first_bin] < 120)
    # Only the last `over_s` seconds: from 120 s back to 60 s.
    assert len(observed_history(trace, 185.0, 60.0, 60.0, cv=0.0)) == 2
    # Without bins (an access log): each finished request with its own timing, up to 185 s.
    logged = observed_history(trace, 185.0, 150.0, 0.0)
    assert list(logged.arrivals) == [15, 20, 35, 65, 95, 135] and list(logged.service) == [1, 10, 100, 2, 3, 1]
    assert len(observed_history(trace, 169.0, 150.0, 0.0)) == 4      # the 100 s request and 170 s: not yet


def test_the_history_is_re_synthesised_with_the_runs_seed(monkeypatch):
    # --seed seeds a trace's own draws; the history Prometheus shows was drawn with seed 0 whatever
    # it said, so that runs of other seeds shared one history where their traces differed.
    from kpilot.evaluate import rolling
    from kpilot.evaluate.session import tuning_history

    full = load_trace("synthetic:bursty:rate=4,duration=3600,seed=5")
    zero, again = (tuning_history("t", full, (0.6, 0.8), 600.0, 60.0, seed=0) for _ in range(2))
    one = tuning_history("t", full, (0.6, 0.8), 600.0, 60.0, seed=1)
    assert np.array_equal(zero.arrivals, again.arrivals) and len(zero) == len(one)   # the same bins' counts
    assert not np.array_equal(zero.arrivals, one.arrivals)
    # static-rolling re-tunes on a history drawn with the run's first simulator seed (--seed).
    drawn_with = []

    def recording(*args, seed=0, **kw):
        drawn_with.append(seed)
        return observed_history(*args, seed=seed, **kw)

    monkeypatch.setattr(rolling, "observed_history", recording)
    rolling.RollingStaticTarget(full, 600.0, SimConfig(), RewardConfig(), [7, 8], every_s=600.0,
                                over_s=1200.0).tuned_at(0.0)
    assert drawn_with == [7]


def _two_regimes(second_scale: float):
    """An hour of steady traffic; after 40 minutes its requests take `second_scale` times longer."""
    trace = load_trace("synthetic:bursty:rate=4,duration=3600,seed=5")
    service = np.where(trace.arrivals < 2400.0, trace.service, trace.service * second_scale)
    return make_trace(trace.arrivals, service, None, span_s=3600.0)


def test_retuning_reads_only_the_past():
    sim, reward = SimConfig(), RewardConfig()
    same, changed = _two_regimes(1.0), _two_regimes(40.0)
    a = RollingStaticTarget(same, 600.0, sim, reward, [0], every_s=600.0, over_s=1200.0)
    b = RollingStaticTarget(changed, 600.0, sim, reward, [0], every_s=600.0, over_s=1200.0)
    # Decisions at 600 + t s of the trace: up to 40 minutes in, both traces have the same past.
    for t in (0.0, 600.0, 1200.0, 1740.0, 1800.0):
        assert a.tuned_at(t) == b.tuned_at(t)
    # Later the longer requests are in the history, and the re-tuned target follows them.
    assert a.tuned_at(2400.0) != b.tuned_at(2400.0)
    assert all(a.tuned_at(t) in STATIC_GRID for t in (0.0, 2400.0))


def test_one_retune_per_window_replays_as_the_static_target_it_chose():
    # Re-tuning less often than the window lasts: one decision, at the warm-up's start, from the
    # traffic before it; the replay is then exactly that static:N's.
    rows = run_evaluation([TRACE], None, ["static-grid", "static-rolling"], window=(0.5, 1.0), warmup_s=120.0,
                          replays=2, retune_every_s=3600.0, retune_over_s=300.0).rows
    rolling = next(r for r in rows if r["policy"] == "static-rolling")
    assert len(rolling["targets"]) == 1 and rolling["retune_every_s"] == 3600.0
    same = next(r for r in rows if r["policy"] == f"static:{rolling['targets'][0]:g}")
    assert rolling["seed_scores"] == same["seed_scores"]


def test_a_window_long_enough_gets_several_retunes():
    rows = run_evaluation([TRACE], None, ["static-rolling"], window=(0.5, 1.0), warmup_s=120.0,
                          retune_every_s=120.0, retune_over_s=300.0).rows
    # 450 s scored + 120 s warm-up, a decision every 120 s from 0: five.
    assert len(rows[0]["targets"]) == 5 and rows[0]["retune_over_s"] == 300.0


@pytest.mark.parametrize("option, value, message", [
    ("--retune-every", "0m", "positive duration"),
    ("--retune-every", "soon", "positive duration"),
    ("--retune-over", "90s", "at least 120 s"),
    ("--retune-bin", "-1", "0: every request"),
])
def test_bad_schedules_are_one_line_errors(option, value, message):
    proc = subprocess.run([str(KPILOT), "evaluate", "--trace", TRACE, "--baselines", "static-rolling",
                           option, value], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and option in lines[0] and message in lines[0], proc.stderr


def test_without_a_window_the_first_retune_has_nothing_to_read():
    # A replay from the trace's start: no traffic yet, so Knative's default stays until the first
    # re-tune with history (at 300 s: four scraped minutes, the first replayed unscored).
    rows = run_evaluation([TRACE], None, ["static-rolling"], retune_every_s=300.0, retune_over_s=180.0).rows
    targets = rows[0]["targets"]
    assert targets[0] is None and all(t in STATIC_GRID for t in targets[1:]) and len(targets) >= 3


def _clumps_csv(path):
    """An hour of clumps: 40 one-second requests within half a second, every three minutes."""
    rng = np.random.default_rng(1)
    arrivals = np.sort(np.concatenate([60.0 + 180.0 * k + 0.5 * rng.random(40) for k in range(20)]))
    path.write_text("timestamp,duration\n" + "".join(f"{t:.3f},1.0\n" for t in arrivals))
    return str(path)


def test_tune_bin_tunes_the_tuned_baselines_on_what_prometheus_keeps(tmp_path, tiny_policy):
    # Exact timing shows clumps that cost least on a few shared pods (a high target: pods started
    # for a clump come when it is over); per-minute counts smooth each clump into a minute of
    # steady traffic, which wants fewer requests per pod. `kpilot tune` reads such bins.
    trace = _clumps_csv(tmp_path / "clumps.csv")

    def tuned(bin_s):
        rows = run_evaluation([trace], tiny_policy, ["static-tuned", "rl-or-tuned"], window=(0.5, 1.0),
                              warmup_s=120.0, replays=2, tune_bin_s=bin_s).rows
        return {r["policy"]: r for r in rows}

    exact, binned = tuned(0.0), tuned(60.0)
    assert binned["static-tuned"]["target"] < exact["static-tuned"]["target"]
    assert binned["static-tuned"]["tune_bin_s"] == 60.0 and "tune_bin_s" not in exact["static-tuned"]
    # The choice is made on the same bins, around the same target; the policy's own row is not tuned.
    assert binned["rl-or-tuned"]["target"] == binned["static-tuned"]["target"]
    assert binned["rl-or-tuned"]["tune_bin_s"] == 60.0 and "tune_bin_s" not in binned["rl:tiny"]


def test_tune_bin_must_be_seconds_and_leave_something_to_tune_on(tmp_path):
    def fails(*args, expect):
        proc = subprocess.run([str(KPILOT), "evaluate", "--trace", *args], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip().splitlines() == [f"kpilot: error: {expect}"]

    fails(TRACE, "--baselines", "static-tuned", "--window", "0.5:1", "--tune-bin", "-1",
          expect="option --tune-bin: expected seconds >= 0 (0: every request), got -1")
    # Requests before the window, but none finishes in a whole bin before it: nothing scraped.
    f = tmp_path / "late.csv"
    f.write_text("timestamp,duration\n" + "".join(f"{t},0.1\n" for t in (5, 6, 95, 96, 97, 98, 100)))
    fails(str(f), "--baselines", "static-tuned", "--window", "0.5:1", "--warmup", "0", "--tune-bin", "60",
          expect=f"option --tune-bin: {f}: no request finishes in the 60 s bins of the window 0:0.5; "
                 "nothing to tune on")
