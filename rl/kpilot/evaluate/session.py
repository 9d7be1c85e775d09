"""One evaluation run: load the policy and traces, replay everything, optionally write a report.

Also `run_demo`, what `kpilot demo` prints: the shipped policy against KPA defaults and the
static grid on a bundled synthetic workload.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from kpilot.env.reward import RewardConfig, describe
from kpilot.errors import ConfigError, TraceError
from kpilot.evaluate.baselines import AimdRule, TunedStaticTarget, tune_static, tuning_window
from kpilot.evaluate.rolling import (DEFAULT_BIN_S, DEFAULT_EVERY_S, DEFAULT_OVER_S, RollingStaticTarget,
                                    check_schedule, observed_history)
from kpilot.evaluate.rolling import NAME as ROLLING
from kpilot.evaluate.runner import (CHOICE, DEFAULT_BAND, IN_BAND, TUNED_BASELINES, Artifact,
                                   check_observation_lag, choose_policy_or_static, controllers_for,
                                   evaluate_trace, load_artifact, tuned_policy)
from kpilot.sim.config import SimConfig
from kpilot.sim.replay import capacity_note
from kpilot.traces import Trace, load_trace
from kpilot.train.split import time_window

# The shipped policy: policies/default of the repository, which the package carries as
# kpilot/policies/default (a link in the source tree, files in a wheel), so that a plain install
# finds it too.
REPO_DEFAULT_POLICY = Path(__file__).resolve().parents[1] / "policies" / "default"
DEMO_TRACE = "synthetic:demo:seed=101"


@dataclass
class EvaluationResult:
    rows: list[dict]
    artifact: Artifact | None
    results: dict = field(default_factory=dict)   # spec -> {"arrivals", "replays": {policy -> ReplayResult}}
    notes: list[str] = field(default_factory=list)  # one line each, for stderr
    settings: list[str] = field(default_factory=list)  # what was evaluated how, for the report


def _trace_identity(checksum, selection) -> tuple:
    return (checksum, selection or "all")


def training_identities(artifact: Artifact) -> set[tuple]:
    """The manifest's training traces, by file checksum and function selection."""
    from kpilot.traces.selection import selection_label
    from kpilot.traces.spec import parse_spec

    trained = set()
    for t in artifact.manifest.get("training_traces") or []:
        try:
            options = parse_spec(str(t.get("source", ""))).options
        except TraceError:
            continue
        trained.add(_trace_identity(t.get("sha256"), selection_label(options)))
    return trained


def _seen(artifact: Artifact, trained: set[tuple], trace, lo: float, hi: float) -> list[str]:
    """Which of the policy's training and validation windows of `trace` [lo, hi) overlaps
    (`trained`: training_identities(artifact), within the manifest's split)."""
    if _trace_identity(trace.meta.get("checksum"), trace.meta.get("selection")) not in trained:
        return []
    split = (artifact.manifest.get("config") or {}).get("split") or {}
    seen = [(k, *split[k]) for k in ("train", "validation") if isinstance(split.get(k), (list, tuple))]
    return [f"{'trained' if k == 'train' else 'validated'} on {a:g}:{b:g}" for k, a, b in seen if a < hi and lo < b]


def seen_in_training(artifact: Artifact, trained: set[tuple], spec: str, trace, window) -> str | None:
    """A note when `window` of `trace` overlaps what the policy trained or was validated on: its
    figures there are not held out."""
    lo, hi = window if window is not None else (0.0, 1.0)
    hits = _seen(artifact, trained, trace, lo, hi)
    if not hits:
        return None
    return (f"{spec}: the policy was {' and '.join(hits)} of this trace, which the window {lo:g}:{hi:g} "
            "overlaps: these figures are not held out")


def carried_from_training(artifact: Artifact, trained: set[tuple], spec: str, trace, window,
                          warmup_from: float, row: dict) -> str | None:
    """A note when the warm-up before a held-out window (from the fraction `warmup_from`) reaches
    into what the policy trained or was validated on AND the policy's row is charged for those
    requests (their violations and lateness in the window) 1 % of its cost or more: on a short
    trace of long requests that is most of the window's cost, which is then not a held-out figure."""
    hits = _seen(artifact, trained, trace, warmup_from, window[0]) if warmup_from < window[0] else []
    reward = artifact.reward
    carried = (reward.cost_per_violation * row.get("carried_over_violations", 0)
               + reward.cost_per_late_second * row.get("carried_over_late_seconds", 0.0))
    total = -row["score"] * max(1, row["requests"])
    # Below 1 % of the cost it changes no figure's meaning (Azure Functions 2019: a few requests).
    if not hits or not total > 0 or carried / total < 0.01:
        return None
    return (f"{spec}: the warm-up before the window, from {warmup_from:.3g}, reaches into what the policy was "
            f"{' and '.join(hits)}; the lateness of those requests in the window is {carried / total:.0%} of "
            "the policy's cost there (--warmup shortens the warm-up)")


def chosen_in_sample(artifact: Artifact, trained: set[tuple], spec: str, trace, tune_on) -> str | None:
    """A note when rl-or-tuned's choice is made on a window the policy trained or was validated on:
    the policy's cost there is in sample, which favours choosing it."""
    hits = _seen(artifact, trained, trace, *tune_on)
    if not hits:
        return None
    return (f"{spec}: rl-or-tuned chooses on {tune_on[0]:g}:{tune_on[1]:g}, which the policy was "
            f"{' and '.join(hits)}: its cost there is not out of sample")


def _settings(policy_dir, artifact, window, warmup_s, seeds, shift_s, metrics, lag_s=0.0,
              baselines=()) -> list[str]:
    """What a report must say to be reproduced: the policy, the window, the warm-up, the seeds."""
    out = []
    if artifact is not None:
        out.append(f"policy: `{policy_dir}` (rl:{artifact.name}, policy.json sha256 {artifact.policy.sha256})")
    out.append(f"window: {window[0]:g}:{window[1]:g} of each trace's span" if window is not None
               else "window: each whole trace")
    if warmup_s > 0 and window is not None:
        out.append(f"warm-up: up to {warmup_s:g} s before the window, replayed unscored")
    out.append(f"simulator seeds: {', '.join(map(str, seeds))} (metrics averaged)")
    if shift_s:
        out.append(f"time of day shifted by {shift_s:g} s")
    if artifact is not None and metrics != "prometheus":
        out.append(f"the policy reads the operator's {metrics} metrics source")
    readers = [name for name, replayed in (("the policy", artifact is not None), ("the rule", "rule" in baselines))
               if replayed]
    if lag_s > 0 and readers:
        verb = "read" if len(readers) > 1 else "reads"
        out.append(f"{' and '.join(readers)} {verb} the revision as it was {lag_s:g} s before each decision")
    return out


class _TraceInputs(NamedTuple):
    """One trace as run_evaluation replays it."""
    spec: str
    scored: Trace              # the window to score (after its warm-up), or the whole trace
    tuning: Trace | None       # the window before, to tune (and choose) on; None without a tuned baseline
    full: Trace                # the whole trace, as loaded


@dataclass
class _Run:
    """One evaluation's settings (run_evaluation's arguments), as each trace's replay and notes read them."""
    artifact: Artifact | None
    baselines: list[str]
    window: tuple[float, float] | None
    tune_on: tuple[float, float] | None     # the window before `window`, which the tuned baselines tune on
    seeds: list[int]
    time_of_day_shift_s: float
    metrics: str
    observation_lag_s: float               # how old the readings of the policy and the rule are
    band: float | None
    tune_bin_s: float
    retune_every_s: float
    retune_over_s: float
    retune_bin_s: float
    keep_timelines: bool                    # for the report's plots
    sim: SimConfig = field(init=False)
    reward: RewardConfig = field(init=False)
    trained: set[tuple] = field(init=False)   # training_identities(artifact)

    def __post_init__(self):
        self.sim = self.artifact.sim if self.artifact else SimConfig()
        self.reward = self.artifact.reward if self.artifact else RewardConfig()
        self.trained = training_identities(self.artifact) if self.artifact is not None else set()


def run_evaluation(specs: list[str], policy_dir, baselines: list[str], *, window=None,
                   warmup_s: float = 0.0, time_of_day_shift_s: float = 0.0, seed: int = 0,
                   replays: int = 1, report_dir: Path | None = None,
                   metrics: str = "prometheus", observation_lag_s: float = 0.0,
                   band: float | None = DEFAULT_BAND,
                   retune_every_s: float = DEFAULT_EVERY_S, retune_over_s: float = DEFAULT_OVER_S,
                   retune_bin_s: float = DEFAULT_BIN_S, tune_bin_s: float = 0.0) -> EvaluationResult:
    """Replay every trace (its `window`, after up to `warmup_s` unscored seconds before it) under
    the policy and the baselines, with the same seed; optionally write the report.
    `time_of_day_shift_s` moves every trace's clock: a policy that learned the hour at which each
    training trace was recorded, rather than its load, falls apart when it moves. With `replays`
    > 1 every controller is replayed under simulator seeds seed, seed+1, ... and each row holds the
    mean of its metrics (max_pods: the max): short windows are noisy, and the best of many static
    targets on one seed is partly the luckiest. `metrics` is what the policy reads, as the
    operator's metrics source would: "prometheus" everything, "kubernetes" the PodAutoscaler only.
    `observation_lag_s`: how old its readings, and the rule's, are (kpilot.sim.replay.observation_lag).
    `band` is the factor `rl-in-band` and `rl-or-tuned` keep the policy within around the tuned
    target (None: not bounded). `static-rolling` re-tunes every `retune_every_s` on the last
    `retune_over_s` of the traffic seen, in Prometheus bins of `retune_bin_s` (0: every request)
    (kpilot.evaluate.rolling). `static-tuned`, `rl-in-band` and `rl-or-tuned` tune (and choose) on
    the earlier window's requests as they are (`tune_bin_s` 0), or as a cluster's Prometheus keeps
    them, in bins of `tune_bin_s` seconds (`tuning_history`), which is what `kpilot tune` reads
    from `kpilot trace from-prometheus`."""
    _check_tune_bin(tune_bin_s)
    artifact = load_artifact(policy_dir) if policy_dir is not None else None
    tune_on = _check_baselines(baselines, artifact, window, retune_every_s, retune_over_s, retune_bin_s)
    _check_lag(observation_lag_s, artifact, baselines, metrics)
    traces = _read_traces(specs, seed, window, warmup_s, tune_on, tune_bin_s)
    if report_dir is not None:      # after the inputs are read (a refused run leaves no folder), before the replays
        prepare_report_dir(Path(report_dir))
    seeds = [seed + k for k in range(replays)]
    run = _Run(artifact, baselines, window, tune_on, seeds, time_of_day_shift_s, metrics, observation_lag_s,
               band, tune_bin_s,
               retune_every_s, retune_over_s, retune_bin_s, keep_timelines=report_dir is not None)
    notes, not_held_out = _in_sample_notes(run, traces)
    rows, results = [], {}
    for trace in traces:
        trace_rows, replayed = _replay(run, trace)
        notes.extend(_replay_notes(run, trace, trace_rows, not_held_out))
        rows.extend(trace_rows)
        results[trace.spec] = {"arrivals": _scored_arrivals(trace.scored), "replays": replayed}
    result = EvaluationResult(rows, artifact, results, notes,
                              _settings(policy_dir, artifact, window, warmup_s, seeds, time_of_day_shift_s, metrics,
                                        observation_lag_s, baselines))
    if report_dir is not None:
        from kpilot.evaluate.report import write_report

        try:
            write_report(Path(report_dir), result, run.reward)
        except ConfigError as exc:      # the replays' results go with the error: minutes of work
            raise ReportNotWritten(exc.message, option=exc.option, result=result) from None
    return result


class ReportNotWritten(ConfigError):
    """The replays ran but `--report` could not be written: `result` holds their rows."""

    def __init__(self, message: str, *, option: str | None, result: EvaluationResult):
        super().__init__(message, option=option)
        self.result = result


def _check_lag(lag_s: float, artifact: Artifact | None, baselines: list[str], metrics: str) -> None:
    """`observation_lag_s`: less than the decision interval of the policy and of the rule that read it,
    and only with Prometheus (as the CLI checks it before anything is loaded, and tune does)."""
    rule = artifact.rule if artifact is not None and artifact.rule else AimdRule()
    check_observation_lag(lag_s, ([artifact.interval_s] if artifact is not None else [])
                          + ([rule.interval_s] if "rule" in baselines else []), metrics)


def _check_tune_bin(tune_bin_s: float) -> None:
    """Refuse a `tune_bin_s` that is no bin width (negative, NaN, infinite) before anything is loaded."""
    if not (math.isfinite(tune_bin_s) and tune_bin_s >= 0):
        raise ConfigError(f"expected seconds >= 0 (0: every request), got {tune_bin_s:g}", option="--tune-bin")


def _check_baselines(baselines: list[str], artifact: Artifact | None, window, retune_every_s: float,
                     retune_over_s: float, retune_bin_s: float) -> tuple[float, float] | None:
    """Refuse baselines this run cannot replay, before any trace is read; returns the window the
    tuned baselines tune on (None without one)."""
    controllers_for(baselines, artifact)     # options checked before any replay
    if ROLLING in baselines:
        check_schedule(retune_every_s, retune_over_s, retune_bin_s)
    tuned_by = [n for n in TUNED_BASELINES if n in baselines]
    tune_on = tuning_window(window) if tuned_by and window is not None else None
    if tuned_by and tune_on is None:
        raise ConfigError(f"{tuned_by[0]} is tuned on the window before the one evaluated: give a "
                          "--window that starts after the trace's start, e.g. 0.8:1", option="--baselines")
    needs_policy = [n for n in (IN_BAND, CHOICE) if n in baselines]
    if needs_policy and artifact is None:
        raise ConfigError(f"{needs_policy[0]} runs the policy around a tuned static target: give --policy",
                          option="--baselines")
    return tune_on


def _read_traces(specs: list[str], seed: int, window, warmup_s: float, tune_on,
                 tune_bin_s: float) -> list[_TraceInputs]:
    """Every trace with its windows to score and to tune on, all read before any replay: a bad
    trace or an empty window fails the run before it has spent minutes."""
    repeated = sorted({spec for spec in specs if specs.count(spec) > 1})
    if repeated:         # its rows would appear twice, with two "best static" rows in one group
        raise ConfigError(f"{repeated[0]} is given more than once", option="--trace")
    loaded = [(spec, load_trace(spec, seed=seed)) for spec in specs]   # load all first: fail fast
    traces = []
    for spec, full in loaded:
        if not len(full):
            raise ConfigError(f"{spec}: the trace has no requests; nothing to score", option="--trace")
        tuning = None
        if tune_on and tune_bin_s > 0:
            tuning = tuning_history(spec, full, tune_on, warmup_s, tune_bin_s, seed=seed)
        elif tune_on:
            tuning = scored_window(spec, full, tune_on, warmup_s, "to tune on")
        scored = scored_window(spec, full, window, warmup_s, "to score") if window is not None else full
        traces.append(_TraceInputs(spec, scored, tuning, full))
    return traces


def _in_sample_notes(run: _Run, traces: list[_TraceInputs]) -> tuple[list[str], set[str]]:
    """Notes on the traces whose scored window, or rl-or-tuned's choosing window, the policy trained
    or was validated on, and the specs whose scored window it was (their figures are not held out)."""
    notes, not_held_out = [], set()
    for trace in traces:
        overlap = seen_in_training(run.artifact, run.trained, trace.spec, trace.full, run.window)
        if overlap:
            notes.append(overlap)
            not_held_out.add(trace.spec)       # the warm-up note (_replay_notes) would say less than this one
        in_sample = chosen_in_sample(run.artifact, run.trained, trace.spec, trace.full, run.tune_on) \
            if CHOICE in run.baselines and run.tune_on is not None else None
        if in_sample:
            notes.append(in_sample)
    return notes, not_held_out


def _replay(run: _Run, trace: _TraceInputs) -> tuple[list[dict], dict]:
    """The trace's rows, labelled with the run's settings, and its replays (policy -> ReplayResult,
    with `keep_timelines`) under every controller asked for."""
    tuned, in_band, chosen = _tuned_controllers(run, trace.tuning)
    rolling = _rolling_controller(run, trace)
    controllers = controllers_for(run.baselines, run.artifact, tuned=tuned, in_band=in_band, chosen=chosen,
                                  rolling=rolling, metrics=run.metrics, lag_s=run.observation_lag_s)
    rows, replayed = evaluate_trace(trace.spec, _shifted(trace.scored, run.time_of_day_shift_s), controllers,
                                    run.sim, run.reward, seeds=run.seeds, keep_timelines=run.keep_timelines)
    for row in rows:
        _label_row(run, row)
    return rows, replayed


def _tuned_controllers(run: _Run, tuning: Trace | None) -> tuple:
    """static-tuned, rl-in-band and rl-or-tuned (each None where not asked for), made from the best
    static target on the earlier window `tuning` (None: no tuned baseline)."""
    tuned = in_band = chosen = None
    if tuning is None:
        return tuned, in_band, chosen
    tuning = _shifted(tuning, run.time_of_day_shift_s)
    target, static_cost = tune_static(tuning, run.sim, run.reward, seeds=run.seeds)
    if "static-tuned" in run.baselines:
        tuned = TunedStaticTarget(target, run.tune_on)
    if IN_BAND in run.baselines:
        in_band = tuned_policy(run.artifact, target, run.band, run.tune_on, metrics=run.metrics,
                               lag_s=run.observation_lag_s)
    if CHOICE in run.baselines:
        chosen = choose_policy_or_static(run.artifact, target, static_cost, run.band, tuning, run.tune_on,
                                         run.sim, run.reward, run.seeds, run.metrics, run.observation_lag_s)
    return tuned, in_band, chosen


def _rolling_controller(run: _Run, trace: _TraceInputs) -> RollingStaticTarget | None:
    """static-rolling (None where not asked for), given the whole trace and where the replay starts
    in it: each re-tune reads the traffic before its point, which can reach back before the replay."""
    if ROLLING not in run.baselines:
        return None
    # The replay's start in `full`.
    begin = float(trace.scored.meta["window"][0]) if run.window is not None else 0.0
    return RollingStaticTarget(_shifted(trace.full, run.time_of_day_shift_s), begin, run.sim, run.reward,
                               run.seeds, every_s=run.retune_every_s, over_s=run.retune_over_s,
                               bin_s=run.retune_bin_s)


def _label_row(run: _Run, row: dict) -> None:
    """Add to a row the settings it was replayed under that a reader could not otherwise tell."""
    if run.window is not None:
        row["window"] = list(run.window)
    if run.time_of_day_shift_s:
        row["time_of_day_shift_s"] = float(run.time_of_day_shift_s)
    if run.tune_bin_s > 0 and row["policy"] in TUNED_BASELINES:
        row["tune_bin_s"] = float(run.tune_bin_s)       # tuned on Prometheus bins, not every request
    # What read the revision: the policy (alone, in its band, or as rl-or-tuned's choice), and for
    # the lag the rule too; rl-or-tuned that chose the static target reads nothing.
    policy_read = row["policy"].startswith(("rl:", IN_BAND)) or (
        row["policy"].startswith(CHOICE) and not str(row.get("chose", "")).startswith("static:"))
    if run.metrics != "prometheus" and policy_read:
        row["metrics_source"] = run.metrics    # the operator's source it read through
    if run.observation_lag_s > 0 and (policy_read or row["policy"].startswith("rule:")):
        row["observation_lag_s"] = float(run.observation_lag_s)


def _replay_notes(run: _Run, trace: _TraceInputs, rows: list[dict], not_held_out: set[str]) -> list[str]:
    """Notes on the trace's replays: the controllers that ran out of the simulator's pods, and a
    warm-up reaching into the policy's training whose requests weigh on its cost in the window."""
    notes = []
    capped = [row["policy"] for row in rows if row.get("pod_capacity_reached")]
    if capped:
        notes.append(f"{trace.spec}: {', '.join(capped)}: {capacity_note(run.sim)}")
    own = next((row for row in rows if row["policy"].startswith("rl:")), None)
    span = trace.full.recorded_span_s
    if (own is not None and run.window is not None and trace.scored.warmup_s > 0 and span > 0
            and trace.spec not in not_held_out):
        carried = carried_from_training(run.artifact, run.trained, trace.spec, trace.full, run.window,
                                        run.window[0] - trace.scored.warmup_s / span, own)
        if carried:
            notes.append(carried)
    return notes


def _scored_arrivals(scored: Trace):
    """The scored requests' arrival times from the window's start, for the report's plots."""
    return scored.arrivals[scored.first_scored():] - scored.warmup_s


def prepare_report_dir(path: Path) -> None:
    """Create `--report`'s folder, or say why it cannot be one (before the replays, which the
    report would otherwise be lost after)."""
    import os

    from kpilot.evaluate.report import REPORT_SUMMARY
    from kpilot.outputs import output_file

    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the report folder {str(path)!r}: "
                          f"{exc.strerror or type(exc).__name__}", option="--report") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"the report folder {str(path)!r} is not writable", option="--report")
    output_file(path / REPORT_SUMMARY, "--report")     # what write_report checks last, checked first


def scored_window(spec: str, trace, window, warmup_s: float, purpose: str, option: str = "--window"):
    """The trace's `window` (after its warm-up); a window no request arrives in is an error: there
    is nothing in it `purpose` (to score, to tune on), and a cost per request of nothing would be
    a made-up number."""
    win = time_window(trace, *window, warmup_s=warmup_s)
    if len(win) - win.first_scored() == 0:
        lo, hi = window
        raise ConfigError(f"{spec}: no request arrives in the window {lo:.3g}:{hi:.3g} "
                          f"({len(trace)} requests in the trace); nothing {purpose}", option=option)
    return win


def tuning_history(spec: str, full, tune_on, warmup_s: float, bin_s: float, *, seed: int = 0):
    """The window `tune_on` of `full` (after up to `warmup_s` of warm-up) as a cluster's Prometheus
    shows it at the window's end: requests per `bin_s` bin by when they finished, with their mean
    duration, re-synthesised with `seed` (kpilot.evaluate.rolling.observed_history); the last bin
    is not scraped yet. A window with no finished request in its scraped bins is an error."""
    span = full.recorded_span_s
    start, end = tune_on[0] * span, tune_on[1] * span
    history = observed_history(full, end, end - start + warmup_s, bin_s, seed=seed)
    history.meta["warmup_s"] = min(warmup_s, max(0.0, history.meta["span_s"] - (end - start)))
    if len(history) - history.first_scored() == 0:
        raise ConfigError(f"{spec}: no request finishes in the {bin_s:g} s bins of the window "
                          f"{tune_on[0]:.3g}:{tune_on[1]:.3g}; nothing to tune on", option="--tune-bin")
    return history


def _shifted(trace, time_of_day_shift_s: float):
    """The trace with its clock moved (`--time-of-day-shift`)."""
    if not time_of_day_shift_s:
        return trace
    tod = float(trace.meta.get("start_time_of_day_s", 0.0) or 0.0)
    shifted = (tod + time_of_day_shift_s) % 86400.0
    return replace(trace, meta={**trace.meta, "start_time_of_day_s": shifted})


def demo_table(policy_dir=REPO_DEFAULT_POLICY, trace_spec: str = DEMO_TRACE, seed: int = 0):
    """The shipped policy vs KPA defaults and the static grid on one workload: a rich Table."""
    from kpilot.evaluate.report import summary_table

    result = run_evaluation([trace_spec], policy_dir, ["kpa", "static-grid", "rule"], seed=seed)
    table = summary_table(result.rows)
    table.caption = f"cost = {describe(result.artifact.reward)} (the policy's reward settings)"
    return table


def run_demo(policy_dir=REPO_DEFAULT_POLICY, trace_spec: str = DEMO_TRACE, seed: int = 0,
             width: int = 140) -> str:
    """`demo_table` rendered to text."""
    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=width, highlight=False).print(demo_table(policy_dir, trace_spec, seed))
    return buf.getvalue()
