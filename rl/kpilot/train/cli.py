"""`kpilot train`, `kpilot evaluate` and `kpilot tune`: thin commands over kpilot.train and kpilot.evaluate.

Module-level imports stay light (no torch, no SB3): `kpilot --help` must be quick.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from kpilot.errors import ConfigError

# Replayed before a window, unscored, so that every policy starts on a running revision
# (evaluate's --window, tune's --last).
WARMUP_S = 600.0


def train_command(
    config: Optional[Path] = typer.Option(None, "--config", "-c",
                                          help="YAML training config (default: the shipped ppo_default.yaml)."),
    trace: Optional[list[str]] = typer.Option(None, "--trace", help="Training trace (any supported format or "
                                              "synthetic:NAME); repeatable; replaces the config's env.traces."),
    out: Path = typer.Option(..., "--out", "-o", help="Policy artifact directory to write."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="TensorBoard logs and checkpoints "
                                           "(default OUT/runs)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue from a checkpoint zip or a run "
                                          "directory (its newest checkpoint) up to total_timesteps."),
    timesteps: Optional[int] = typer.Option(None, "--timesteps", min=1, help="Override total_timesteps."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="Override seed."),
    n_envs: Optional[int] = typer.Option(None, "--n-envs", min=1, help="Override n_envs."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    threads: int = typer.Option(1, "--threads", help="torch threads for the PPO updates."),
):
    """Train a PPO target policy on traces and write a policy artifact directory."""
    from kpilot.train.config import MAX_N_ENVS, check_threads, load_config

    # Checked here, not in the config: an override's error names its option, not the YAML file.
    check_threads(threads)
    if n_envs is not None and n_envs > MAX_N_ENVS:
        raise ConfigError(f"expected at most {MAX_N_ENVS} environments, got {n_envs}", option="--n-envs")
    overrides = {k: v for k, v in (("total_timesteps", timesteps), ("seed", seed), ("n_envs", n_envs))
                 if v is not None}
    if trace:
        overrides["env.traces"] = list(trace)
    cfg = load_config(config, overrides)
    from kpilot.train.trainer import train

    console = Console(stderr=True, highlight=False, soft_wrap=True)   # a log line stays one line in a file
    summary = train(cfg, out, run_dir=run_dir, resume=resume, progress=progress, threads=threads,
                    log=lambda m: console.print(m, markup=False))
    print(json.dumps({k: summary[k] for k in ("timesteps", "wall_s", "env_steps_per_s", "out")}))


def evaluate_command(
    trace: list[str] = typer.Option(..., "--trace", help="Trace to replay (any supported format or "
                                    "synthetic:NAME); repeatable."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Policy artifact directory (kpilot train)."),
    baselines: str = typer.Option("kpa,static-grid,rule", "--baselines",
                                  help="Comma list of kpa, static-grid, rule, static:N, static-tuned "
                                  "(with --window: the best static target on the window just before), "
                                  "rl-in-band (the policy within --band of that target), rl-or-tuned "
                                  "(the policy in its band where it beat that target there, else the target), "
                                  "static-rolling (the best static target re-tuned every --retune-every on the "
                                  "last --retune-over of the traffic seen)."),
    window: Optional[str] = typer.Option(None, "--window", help="Replay only START:END (fractions of each "
                                         "trace's span), e.g. 0.8:1 for the held-out last 20 %."),
    warmup: Optional[float] = typer.Option(None, "--warmup", help="With --window: replay up to this many "
                                           "seconds of the trace before the window first, unscored, so that "
                                           f"every policy starts on a running revision (default {WARMUP_S:g} s)."),
    time_of_day_shift: float = typer.Option(0.0, "--time-of-day-shift", help="Move every trace's clock by this "
                                            "many seconds: checks that the policy reads the load, not the hour."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON list, one object per policy per trace."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write PNG plots and a Markdown summary here."),
    seed: int = typer.Option(0, "--seed", min=0, help="Simulator seed, the same for every policy; also "
                           "seeds the traces' own draws (arrivals within whole-second or per-minute "
                           "timestamps, a synthetic workload without seed=)."),
    replays: int = typer.Option(1, "--replays", help="Replay every trace under this many simulator seeds "
                                "(--seed, --seed+1, ...) and report each metric's mean over them."),
    metrics: str = typer.Option("prometheus", "--metrics", help="What the policy reads, as the operator's "
                                "metrics source: prometheus (everything) or kubernetes (PodAutoscaler "
                                "status only: no request rate or latency)."),
    observation_lag: float = typer.Option(0.0, "--observation-lag", help="Seconds old the readings of the policy "
                                          "and the rule are, less than the decision interval: Prometheus serves the "
                                          "operator its last scrape, up to a scrape interval old (default 0: the "
                                          "autoscaler's latest tick)."),
    band: Optional[str] = typer.Option(None, "--band", help="rl-in-band and rl-or-tuned: keep the policy within "
                                       "this factor of the tuned target (a number >= 1), or none (default 1.5)."),
    retune_every: Optional[str] = typer.Option(None, "--retune-every", help="static-rolling: re-tune this often "
                                               "(a duration: 90s, 20m, 1h; default 20m)."),
    retune_over: Optional[str] = typer.Option(None, "--retune-over", help="static-rolling: on this much of the "
                                              "latest traffic (a duration: 90m, 2h; default 96m)."),
    retune_bin: Optional[float] = typer.Option(None, "--retune-bin", help="static-rolling: the traffic as "
                                               "Prometheus keeps it, in bins of this many seconds (as `kpilot "
                                               "retune` reads it; default 60), or 0: every request with its own "
                                               "timing (an access log)."),
    tune_bin: Optional[float] = typer.Option(None, "--tune-bin", help="static-tuned, rl-in-band and rl-or-tuned: "
                                             "tune on the earlier window as Prometheus keeps it, in bins of this "
                                             "many seconds (60: what `kpilot tune` reads from `kpilot trace "
                                             "from-prometheus`), or 0: every request with its own timing (the "
                                             "default)."),
):
    """Replay traces under the policy, KPA defaults, static targets and the calibrated rule; compare."""
    from kpilot.evaluate.session import ReportNotWritten, run_evaluation

    options = _evaluate_options(policy, baselines, window, warmup, replays, time_of_day_shift, metrics, band,
                                retune_every, retune_over, retune_bin, tune_bin, observation_lag)
    try:
        result = run_evaluation(list(trace), policy, seed=seed, replays=replays, report_dir=report, **options)
    except ReportNotWritten as exc:      # the rows first, then the one error line (exit 2)
        _print_notes(exc.result.notes)
        _print_rows(exc.result.rows, json_out, None)
        raise
    _print_notes(result.notes)
    _print_rows(result.rows, json_out, report)


def _evaluate_options(policy, baselines, window, warmup, replays, time_of_day_shift, metrics, band,
                      retune_every, retune_over, retune_bin, tune_bin, observation_lag=0.0) -> dict:
    """`kpilot evaluate`'s options, parsed and checked, as run_evaluation's keyword arguments: a bad
    one is one error line that names it (ConfigError), before any policy or trace is read."""
    from kpilot.traces.prometheus_export import parse_duration
    from kpilot.action import DEFAULT_BAND
    from kpilot.evaluate.rolling import DEFAULT_BIN_S, DEFAULT_EVERY_S, DEFAULT_OVER_S
    from kpilot.evaluate.runner import check_metrics, check_observation_lag, parse_band, parse_baselines
    from kpilot.train.split import parse_window

    chosen = parse_baselines(baselines)
    win = parse_window(window)
    if warmup is not None and win is None:   # it would be ignored: a whole trace starts at its start
        raise ConfigError("a warm-up runs before a --window; without one every trace is replayed whole",
                          option="--warmup")
    warmup = WARMUP_S if warmup is None else warmup
    _check_replay_options(warmup, replays)
    if not math.isfinite(time_of_day_shift):
        raise ConfigError(f"expected seconds, got {time_of_day_shift}", option="--time-of-day-shift")
    check_metrics(metrics)
    check_observation_lag(observation_lag, [], metrics)
    if observation_lag > 0 and policy is None and "rule" not in chosen:
        raise ConfigError("applies only to --policy and the rule baseline, neither of which is asked for",
                          option="--observation-lag")
    _refuse_unused_baseline_options(chosen, band, tune_bin, retune_every, retune_over, retune_bin)
    band_factor = parse_band(band) if band is not None else DEFAULT_BAND
    if policy is None and not chosen:
        raise ConfigError("nothing to evaluate: give --policy and/or --baselines", option="--policy")
    retune_every_s = (DEFAULT_EVERY_S if retune_every is None
                      else parse_duration(retune_every, "--retune-every"))
    retune_over_s = DEFAULT_OVER_S if retune_over is None else parse_duration(retune_over, "--retune-over")
    return dict(baselines=chosen, window=win, warmup_s=warmup, time_of_day_shift_s=time_of_day_shift,
                metrics=metrics, observation_lag_s=observation_lag, band=band_factor,
                retune_every_s=retune_every_s, retune_over_s=retune_over_s,
                retune_bin_s=DEFAULT_BIN_S if retune_bin is None else retune_bin,
                tune_bin_s=0.0 if tune_bin is None else tune_bin)


def _refuse_unused_baseline_options(chosen: list[str], band, tune_bin, retune_every, retune_over,
                                    retune_bin) -> None:
    """Refuse --band, --tune-bin and --retune-* where --baselines asks for none of the baselines
    they apply to."""
    from kpilot.evaluate.rolling import NAME as ROLLING
    from kpilot.evaluate.runner import CHOICE, IN_BAND, TUNED_BASELINES

    # An option for a baseline not asked for would be ignored: refused, as --warmup without --window is.
    for option, given, applies_to in (("--band", band, (IN_BAND, CHOICE)),
                                      ("--tune-bin", tune_bin, TUNED_BASELINES),
                                      ("--retune-every", retune_every, (ROLLING,)),
                                      ("--retune-over", retune_over, (ROLLING,)),
                                      ("--retune-bin", retune_bin, (ROLLING,))):
        if given is not None and not set(applies_to) & set(chosen):
            names = applies_to[0] if len(applies_to) == 1 else f"{', '.join(applies_to[:-1])} or {applies_to[-1]}"
            raise ConfigError(f"applies only to {names}, which --baselines does not ask for", option=option)


def _print_notes(notes: list[str]) -> None:
    """The run's notes on stderr, each on one unwrapped line: stdout stays the table or the JSON."""
    for note in notes:
        Console(stderr=True).print(f"kpilot: note: {note}", markup=False, soft_wrap=True)


def _print_rows(rows: list[dict], json_out: bool, report: Path | None) -> None:
    """The rows on stdout, as JSON or as the table; then, on stderr, where the report was written."""
    if json_out:
        print(json.dumps(rows, indent=1))
    else:
        from kpilot.render import out_console
        from kpilot.evaluate.report import summary_table

        out_console().print(summary_table(rows))
    if report is not None:
        Console(stderr=True).print(f"report written to {report}", markup=False, soft_wrap=True)


def _check_replay_options(warmup: float, replays: int) -> None:
    """`--warmup` and `--replays`, as evaluate and tune share them."""
    if not warmup >= 0.0:
        raise ConfigError(f"expected seconds >= 0, got {warmup}", option="--warmup")
    if replays < 1:
        raise ConfigError(f"expected a count >= 1, got {replays}", option="--replays")


def tune_command(
    trace: list[str] = typer.Option(..., "--trace", help="A Service's recent traffic (any supported format "
                                    "or synthetic:NAME); repeatable, one recommendation each."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Policy artifact directory (default: the "
                                          "shipped policies/default)."),
    last: float = typer.Option(0.2, "--last", help="Choose on this last fraction of each trace."),
    band: float = typer.Option(1.5, "--band", help="The band to try the policy in (a factor >= 1)."),
    warmup: float = typer.Option(WARMUP_S, "--warmup", help="Replay up to this many seconds before the window "
                                 "first, unscored."),
    replays: int = typer.Option(3, "--replays", help="Simulator seeds per replay (--seed, --seed+1, ...)."),
    seed: int = typer.Option(0, "--seed", min=0, help="First simulator seed; also seeds the traces' own "
                           "draws (arrivals within whole-second or per-minute timestamps, a synthetic "
                           "workload without seed=)."),
    metrics: str = typer.Option("prometheus", "--metrics", help="The operator's metrics source, what the "
                                "policy will read: prometheus or kubernetes."),
    observation_lag: float = typer.Option(0.0, "--observation-lag", help="Seconds old the policy's readings "
                                          "will be (less than its decision interval): up to Prometheus's scrape "
                                          "interval."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON list, one object per trace."),
):
    """Each Service's base target and band from its latest traffic: the annotations to set."""
    from kpilot.evaluate.session import REPO_DEFAULT_POLICY
    from kpilot.evaluate.tune import annotate_commands, recommend, recommendation_table

    _check_replay_options(warmup, replays)
    rows = recommend(list(trace), policy or REPO_DEFAULT_POLICY, last=last, band=band, warmup_s=warmup,
                     seed=seed, replays=replays, metrics=metrics, observation_lag_s=observation_lag)
    if json_out:
        print(json.dumps(rows, indent=1))
    else:
        from kpilot.cli import err_console
        from kpilot.render import out_console

        console = out_console()
        console.print(recommendation_table(rows))
        for command in annotate_commands(rows):
            console.print(command, highlight=False, soft_wrap=True, markup=False)
        for row in rows:
            if row.get("revision"):
                err_console.print(f"kpilot: note: {row['trace']} is revision {row['revision']}'s traffic "
                                  "(from-prometheus --by revision): set its annotations on that revision's "
                                  "Service", markup=False)
