"""The `kpilot` command line. Commands are thin: parse options, call the library, render.

Input errors (KpilotError) are rendered here, once, as a single line with exit code 2.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from kpilot.errors import ConfigError, KpilotError, TraceError
from kpilot.outputs import output_file, write_all, write_atomically
from kpilot.render import out_console

# Click's plain help (rich_markup_mode=None): it wraps to any width, where Typer's Rich panels cut
# option names short at 80 columns and print every flag as taking a <bool>.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Learn Knative autoscaling targets from real request traces.")
trace_app = typer.Typer(no_args_is_help=True, help="Read and describe request traces.")
app.add_typer(trace_app, name="trace")
operator_app = typer.Typer(no_args_is_help=True, help="Run the kpilot operator.")
app.add_typer(operator_app, name="operator")

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def _print_version(value: bool) -> None:
    if value:
        from kpilot import __version__

        print(f"kpilot {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                       help="Print kpilot's version and exit.")) -> None:
    """Learn Knative autoscaling targets from real request traces."""


@trace_app.command("inspect")
def trace_inspect(
    path: str = typer.Argument(..., metavar="PATH", help="Trace file (format auto-detected from its header), "
                               "PATH?key=value&... with reader options, or synthetic:NAME[:key=value,...]."),
    fmt: Optional[str] = typer.Option(None, "--format", help="Force a format (see `kpilot trace formats`)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
):
    """Print rows, span, rates, burstiness and duration percentiles of a trace."""
    from kpilot.traces.inspect import inspect_command

    inspect_command(path, fmt, json_out)


@trace_app.command("formats")
def trace_formats():
    """List the trace formats `load_trace` reads, with what identifies each."""
    from rich.table import Table

    from kpilot.traces import FORMATS

    table = Table(title="kpilot trace formats (auto-detected from the header; --format forces one)")
    table.add_column("format")
    table.add_column("what it reads")
    for name, text in FORMATS.items():
        table.add_row(name, text)
    out_console().print(table)


@trace_app.command("from-prometheus")
def trace_from_prometheus(
    url: str = typer.Option(..., "--url", help="Prometheus base URL, e.g. http://prometheus-operated.monitoring:9090."),
    namespace: str = typer.Option(..., "--namespace", help="The Services' namespace."),
    out: Path = typer.Option(..., "--out", help="Folder for one NAME.csv per Service (created if absent)."),
    since: str = typer.Option("24h", "--since", help="How far back: 90m, 24h, 7d, ..."),
    end: Optional[float] = typer.Option(None, "--end", help="End of the range, unix seconds (default: a "
                                        "step before now, so that the last bin has been scraped)."),
    step: float = typer.Option(60.0, "--step", help="Bin width, whole seconds (at least one scrape interval)."),
    by: str = typer.Option("service", "--by", help="service (kn_service_name) or revision (kn_revision_name)."),
    token_file: Optional[Path] = typer.Option(None, "--token-file", help="File holding a bearer token."),
):
    """Each Service's requests per bin and their mean duration, from queue-proxy's histogram in
    Prometheus: request-counts traces for `kpilot tune` and `kpilot evaluate`."""
    import contextlib

    from rich.table import Table

    from kpilot.traces.model import MAX_REQUESTS
    from kpilot.traces.prometheus_export import SOURCES_FILE, parse_duration, read_traffic, recorded_sources

    span = parse_duration(since, "--since")
    # One row does not say how wide its bin is: the trace reader would refuse the file. (A bad
    # --step is read_traffic's to report.)
    if math.isfinite(step) and step > 0 and not span >= 2 * step:
        raise ConfigError(f"expected at least two --step bins ({2 * step:g} s), got {since}", option="--since")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{str(out)!r} is a file, not a folder", option="--out")
    if not out.parent.exists():
        raise ConfigError(f"folder {str(out.parent)!r} does not exist", option="--out")
    token = _read_token(token_file)
    traffic = read_traffic(url, namespace, since_s=span, end=end, step_s=step, by=by, token=token)
    created = not out.exists()
    try:
        out.mkdir(exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {str(out)!r} ({exc.strerror or type(exc).__name__})",
                          option="--out") from None
    sources = recorded_sources(out, [e.name for e in traffic], by, namespace)
    files = [(out / f"{e.name}.csv", lambda tmp, e=e: Path(tmp).write_text(e.csv())) for e in traffic]
    files.append((out / SOURCES_FILE, lambda tmp: Path(tmp).write_text(sources)))
    try:           # one run writes all of its traces and their record, or changes nothing
        write_all(files, option="--out")
    except ConfigError:
        if created:               # a refused run leaves no folder
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    table = Table(title=f"{namespace}: requests per {step:g} s bin, last {since}")
    for column in ("name", "requests", "bins with requests", "mean duration (s)", "trace"):
        table.add_column(column, justify="left" if column in ("name", "trace") else "right")
    for entry in traffic:
        table.add_row(entry.name, f"{entry.requests:,}", f"{entry.busy_bins} of {len(entry.rows)}",
                      f"{entry.mean_duration_s:.3g}", str(out / f"{entry.name}.csv"))
    out_console().print(table)
    for entry in traffic:      # written all the same: the data is the Service's, a shorter --since reads it
        if entry.requests > MAX_REQUESTS:
            err_console.print(f"kpilot: note: {out / f'{entry.name}.csv'} holds {entry.requests:,} requests, more "
                              f"than kpilot replays ({MAX_REQUESTS:,}): tune and evaluate will refuse it; "
                              f"read less of it with --since", markup=False)


def _read_token(token_file: Optional[Path]) -> str | None:
    if token_file is None:
        return None
    try:
        token = token_file.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {str(token_file)!r}: {exc.strerror}", option="--token-file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{str(token_file)!r} is not a text file (a bearer token is text)",
                          option="--token-file") from None
    # Never echoed: an error naming the token would put it in a CronJob's logs.
    if not token or any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigError(f"{str(token_file)!r} must hold one bearer token: one line, no spaces "
                          f"or control characters", option="--token-file")
    return token


RETUNE_SELECTOR = "kpilot.dev/autoscale=enabled"     # the label manifests/sample-policy.yaml selects


@app.command()
def retune(
    url: str = typer.Option(..., "--url", help="Prometheus base URL, e.g. http://prometheus-operated.monitoring:9090."),
    namespace: str = typer.Option(..., "--namespace", help="The Services' namespace."),
    over: str = typer.Option("96m", "--over", help="Tune on this much of each Service's latest traffic."),
    step: float = typer.Option(60.0, "--step", help="Bin width, whole seconds (at least one scrape interval)."),
    end: Optional[float] = typer.Option(None, "--end", help="End of the traffic read, unix seconds (default: "
                                        "a step before now, so that the last bin has been scraped)."),
    selector: str = typer.Option(RETUNE_SELECTOR, "--selector",
                                 help="With --apply: annotate only the Services matching this label selector."),
    apply: bool = typer.Option(False, "--apply", help="Annotate the Services (default: print what would be set)."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Policy artifact whose simulator and reward "
                                          "settings to tune under (default: the shipped policies/default)."),
    replays: int = typer.Option(3, "--replays", min=1, help="Simulator seeds per target."),
    token_file: Optional[Path] = typer.Option(None, "--token-file", help="File holding a bearer token for Prometheus."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON list, one object per Service."),
):
    """Re-tune each Service's target on its latest traffic in Prometheus and set it as its
    kpilot.dev/base-target (band 1 where the Service has none): run it from a CronJob
    (manifests/retune)."""
    import dataclasses
    import json

    from kpilot.evaluate.runner import load_artifact
    from kpilot.evaluate.session import REPO_DEFAULT_POLICY
    from kpilot.evaluate.tune import kubectl_annotate
    from kpilot.retune import WARMUP_S, Retuned, annotate, kube_client, retune as retune_services, selected_services
    from kpilot.traces.prometheus_export import check_query, parse_duration, read_traffic

    span = parse_duration(over, "--over")
    # A NaN or infinite --step is check_query's to report, naming --step.
    if math.isfinite(step) and step > 0 and not span >= 2 * step:
        raise ConfigError(f"expected at least two --step bins ({2 * step:g} s), got {over}", option="--over")
    check_query(url, namespace, since_s=span + WARMUP_S, end=end, step_s=step, since_option="--over")
    artifact = load_artifact(policy or REPO_DEFAULT_POLICY)
    token = _read_token(token_file)
    # With --apply, credentials, reachability and permissions are checked before minutes of replays.
    api = kube_client() if apply else None
    selected = selected_services(namespace, selector, api) if apply else None
    traffic = read_traffic(url, namespace, since_s=span + WARMUP_S, end=end, step_s=step, token=token,
                           allow_empty=True, since_option="--over")
    if not traffic:
        err_console.print(f"kpilot: note: no requests in namespace {namespace!r} in the last {over}: nothing to "
                          "re-tune (if its Services did serve requests, check that queue-proxy's series carry "
                          "kn_service_name and k8s_namespace_name)", markup=False)
    is_chosen = [selected is None or e.name in selected for e in traffic]
    # One Service at a time, each annotated as soon as it is tuned: a Job stopped at its deadline
    # keeps what it finished (tuning all first, a namespace too big for the deadline got nothing).
    results, done = [], {}
    for entry in (e for e, c in zip(traffic, is_chosen) if c):
        tuned = retune_services([entry], step, artifact.sim, artifact.reward, seeds=list(range(replays)))
        results += tuned
        if apply:
            done.update(annotate(tuned, selected, namespace, api))
    results += [Retuned(e.name, e.requests, None, None, "not selected") for e, c in zip(traffic, is_chosen) if not c]
    quiet = sorted(set(selected or ()) - {e.name for e in traffic})     # selected, no series in the window
    results += [Retuned(name, 0, None, None, "no requests in the window") for name in quiet]
    if apply:         # what annotate says of the rest (not selected, paused, nothing to tune on): no write
        done.update(annotate([r for r in results if r.service not in done], selected, namespace, api))
    if json_out:
        print(json.dumps([{**dataclasses.asdict(r), "annotations": r.annotations,
                           **({"applied": done[r.service]} if apply else {})} for r in results], indent=1))
    else:
        from rich.table import Table

        table = Table(title=f"kpilot retune: {namespace}, the last {over} of traffic (cost per request)",
                      caption=None if apply else "without --apply no Service is read: --apply keeps a band "
                      "already on a Service (and skips paused ones) where these lines would set band 1",
                      caption_justify="left")
        for column in ("service", "requests", "target", "cost", "applied" if apply else "to set"):
            table.add_column(column, justify="left" if column in ("service", "applied", "to set") else "right")
        for r in results:
            last = done.get(r.service, "") if apply else (
                kubectl_annotate(r.service, r.annotations, namespace) if r.annotations else r.why)
            table.add_row(r.service, f"{r.requests:,}", "" if r.target is None else f"{r.target:g}",
                          "" if r.cost is None else f"{r.cost:.4f}", last)
        out_console().print(table)
    failed = [f"{name}: {what[len('failed: '):]}" for name, what in done.items() if what.startswith("failed")]
    if failed:
        raise ConfigError(f"{len(failed)} of {len(done)} Services not annotated; {failed[0]}", option="--apply")


def _sim_config(cold_start: Optional[str], cores: Optional[float], container_concurrency: Optional[int],
                config: Optional[Path], trained: dict | None = None, trained_source: str | None = None):
    """Simulator settings: Knative's defaults, then those a policy was trained under (`trained`,
    its manifest's sim sections, from `trained_source`), then the --config YAML, then explicit
    options."""
    import dataclasses

    from kpilot.sim.coldstart import parse_cold_start
    from kpilot.sim.config import SimConfig, check_range
    from kpilot.yaml_file import read_yaml

    base = {}
    if config is not None:
        base = read_yaml(config) or {}
        if not isinstance(base, dict):
            raise ConfigError("expected a mapping with kpa/pod/slo sections", path=str(config))
    source = str(config) if config else None
    sim = SimConfig.from_dict(base, source=source, knative_rules=not trained)   # the YAML's keys, types, ranges
    if trained:     # key by key: a YAML's pod.cores leaves the policy's pod.cold_start as it was
        merged = {name: dict(section) for name, section in trained.items() if isinstance(section, dict)}
        for name, section in base.items():
            merged[name] = {**merged.get(name, {}), **(section or {})}   # an empty section: nothing
        try:         # Knative's rules between keys, on what will run
            sim = SimConfig.from_dict(merged, source=source)
        except ConfigError:
            try:     # a policy trained before those rules were checked replays, as evaluate replays it
                SimConfig.from_dict(trained)
            except ConfigError:
                sim = SimConfig.from_dict(merged, source=source, knative_rules=False)
            else:
                raise
    for option, key, value in (("--cores", "pod.cores", cores),
                               ("--container-concurrency", "pod.container_concurrency", container_concurrency)):
        if value is not None:
            check_range(key, value, option=option)
    given = {"cold_start": cold_start, "cores": cores, "container_concurrency": container_concurrency}
    pod = dataclasses.replace(sim.pod, **{k: v for k, v in given.items() if v is not None})
    from_yaml = isinstance(base.get("pod"), dict) and "cold_start" in base["pod"]
    if cold_start is None and not from_yaml and "cold_start" in ((trained or {}).get("pod") or {}):
        from kpilot.evaluate.runner import check_cold_start

        check_cold_start(pod.cold_start, trained_source or "the policy")     # the manifest's, named so
    try:
        parse_cold_start(pod.cold_start)       # validate early: one clear line, nothing written yet
    except ConfigError as exc:
        if cold_start is None and config is not None:       # the --config file's pod.cold_start
            raise ConfigError(f"pod.cold_start: {exc.message}", path=str(config)) from None
        raise
    except TraceError as exc:       # a table that cannot be read: say which option named it
        if cold_start is not None:
            raise ConfigError(str(exc), option="--cold-start") from None
        raise
    return dataclasses.replace(sim, pod=pod)


def _trained_settings(policy: str) -> tuple[dict, float | None, str | None]:
    """A policy artifact's simulator settings (its manifest's sim sections), decision interval and
    file, which `kpilot evaluate` replays it under; nothing for kpa, static:N or a policy without a
    training manifest. Not checked for replay: simulate's options may override them."""
    from kpilot.controllers import is_builtin

    if is_builtin(policy):
        return {}, None, None
    from kpilot.errors import PolicyError
    from kpilot.evaluate.runner import load_artifact
    from kpilot.policy import load_policy, policy_file

    if not Path(policy).exists():
        return {}, None, None       # parse_controller's to report
    try:
        artifact = load_artifact(policy, replayable=False)
    except PolicyError:
        # A policy.json without a training manifest replays under the defaults; a manifest
        # evaluate would refuse is refused here too.
        if not isinstance(load_policy(policy).manifest.get("manifest"), dict):
            return {}, None, None
        raise
    sim = (artifact.manifest.get("config") or {}).get("sim") or {}
    source = str(policy_file(policy))
    return (sim if isinstance(sim, dict) else {}), artifact.interval_s, source


def _inputs_read(trace: str, tr, policy: str, config: Optional[Path], cold_start: str) -> dict:
    """The files `simulate` reads (path -> what it is), which --timeline must never replace."""
    from kpilot.sim.coldstart import PRESETS
    from kpilot.traces.spec import parse_spec

    reading = {}
    if (path := parse_spec(trace).path) is not None:
        reading[path] = "the trace"
    if tr.meta.get("durations_file"):         # an Azure Functions 2019 trace's companion file
        reading[Path(tr.meta["durations_file"])] = "the trace's durations file"
    from kpilot.controllers import is_builtin

    if not is_builtin(policy):
        path = Path(policy.strip())
        if path.is_dir():           # the artifact's own files; others there (an earlier timeline) are not
            from kpilot.policy import ARTIFACT_FILES

            reading.update({path / name: "part of the policy" for name in ARTIFACT_FILES})
        else:
            reading[path] = "the policy"
    if config is not None:
        reading[config] = "the --config file"
    table = Path(PRESETS.get(cold_start.strip(), cold_start.strip()))
    if table.is_file():
        reading[table] = "the cold-start table"
    return reading


@app.command()
def simulate(
    trace: str = typer.Option(..., "--trace", help="Trace file, PATH?opts, or synthetic:NAME[:k=v,...]."),
    fmt: Optional[str] = typer.Option(None, "--format", help="Force the trace format."),
    policy: str = typer.Option("kpa", "--policy", help="kpa | static:TARGET | path to a policy artifact."),
    cold_start: Optional[str] = typer.Option(
        None, "--cold-start", help="fixed:S | lognormal:MEAN,SD | PATH to a Huawei table | preset "
        "(huawei, huawei-r2, instant). Default: huawei."),
    cores: Optional[float] = typer.Option(None, "--cores", help="Cores per pod (processor sharing). Default 1."),
    container_concurrency: Optional[int] = typer.Option(
        None, "--container-concurrency", help="Hard limit of requests per pod (0 = unlimited, the default)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML with kpa/pod/slo overrides."),
    interval: Optional[float] = typer.Option(None, "--interval", help="Seconds between policy decisions "
                                             "(default: the interval a policy artifact was trained at, else 30)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed for cold starts and load balancing, and for "
                           "the trace's own draws (arrivals within whole-second or per-minute timestamps, a "
                           "synthetic workload without seed=)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    timeline: Optional[Path] = typer.Option(None, "--timeline", help="Write one CSV row per 2 s tick."),
):
    """Replay a trace through the KPA model, pods and cold starts; print what users saw."""
    import json

    from kpilot.controllers import DEFAULT_INTERVAL_S, parse_controller
    from kpilot.sim.replay import replay
    from kpilot.traces import load_trace

    if interval is not None and not (math.isfinite(interval) and interval > 0):
        raise ConfigError(f"must be a number > 0, got {interval:g}", option="--interval")
    trained, trained_interval, trained_source = _trained_settings(policy)
    sim = _sim_config(cold_start, cores, container_concurrency, config, trained, trained_source)
    if interval is not None and (problem := sim.kpa.interval_problem(interval)):
        raise ConfigError(f"{problem}, got {interval:g}", option="--interval")
    if interval is None and trained_interval is not None:
        from kpilot.evaluate.runner import check_interval

        check_interval("env.decision_interval_s", trained_interval, sim, trained_source)
    if trained_interval is not None:
        # Say so only where the trained settings change what runs: a policy trained under the
        # defaults at 30 s replays exactly as kpa and static:N do.
        try:
            changed = bool(trained) and sim != _sim_config(cold_start, cores, container_concurrency, config, {})
        except ConfigError:         # --config is valid only over the trained settings: they matter
            changed = True
        used = [f"sim {json.dumps(trained, sort_keys=True)}"] if changed else []
        if interval is None and trained_interval != DEFAULT_INTERVAL_S:
            used.append(f"a decision every {trained_interval:g} s")
        if used:
            err_console.print(f"kpilot: note: {policy} replays as it was trained: {'; '.join(used)} (--config, "
                              "--interval and options override them); kpa and static:N run under --config "
                              "alone, so give them the same settings to compare, or use kpilot evaluate",
                              markup=False)
    controller = parse_controller(policy, interval_s=interval or trained_interval or DEFAULT_INTERVAL_S)
    tr = load_trace(trace, fmt, seed=seed)
    if len(tr) == 0:
        raise ConfigError("the trace has no requests", path=trace)
    reading = _inputs_read(trace, tr, policy, config, sim.pod.cold_start)
    if timeline is not None:
        output_file(timeline, "--timeline", reading)       # before the replay, not after it
    result = replay(tr, controller, sim, seed=seed, timeline=timeline is not None)
    if timeline is not None:
        import polars as pl

        write_atomically(timeline, lambda tmp: pl.DataFrame(result.timeline).write_csv(tmp), reading=reading)
    metrics = {"trace": trace, "policy": controller.name, **result.metrics}
    from kpilot.sim.replay import capacity_note

    if result.metrics["pod_capacity_reached"]:
        err_console.print(f"kpilot: note: {capacity_note(sim)}", markup=False)
    if json_out:
        typer.echo(json.dumps(metrics))
        return
    from kpilot.render import metrics_table

    out_console().print(metrics_table([metrics], title=f"kpilot simulate: {trace}"))


@app.command()
def bench(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    quick: bool = typer.Option(False, "--quick", help="Smaller workloads (a smoke run, not the README figures)."),
    repeats: int = typer.Option(3, "--repeats", min=1, help="Runs per figure; the median is reported."),
):
    """Measure simulator, environment, trace-loading and operator speed (medians)."""
    import json

    from kpilot.bench import run_bench

    figures = run_bench(quick=quick, repeats=repeats)
    if json_out:
        typer.echo(json.dumps(figures))
        return
    from rich.table import Table

    table = Table(title="kpilot bench (medians)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for k, v in figures.items():
        table.add_row(k, f"{v:,.3f}" if isinstance(v, float) else str(v))
    out_console().print(table)


@app.command()
def demo(
    train: bool = typer.Option(False, "--train", help="Train a fresh policy first (synthetic workloads, "
                               "a few minutes) and evaluate that instead of the shipped one."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where --train writes its policy "
                                       "(default runs/demo-policy)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed for the replays."),
):
    """Evaluate the shipped policy against KPA defaults, the static grid and the calibrated rule on the
    bundled workload (a held-out seed of synthetic:demo), and print the table."""
    from kpilot.evaluate.session import DEMO_TRACE, REPO_DEFAULT_POLICY, demo_table

    if out is not None and not train:       # it would be ignored: only --train writes a policy
        raise ConfigError("a policy is written there only with --train; without it the shipped policy "
                          "is evaluated", option="--out")
    policy_dir = REPO_DEFAULT_POLICY
    if train:
        from kpilot.train.trainer import train_quick

        out = out or Path("runs/demo-policy")
        train_quick(out, log=lambda m: err_console.print(m, markup=False))   # the table alone on stdout
        policy_dir = out
    console = out_console()
    console.print(demo_table(policy_dir, DEMO_TRACE, seed))
    console.print(f"policy: {Path(policy_dir).resolve()}   workload: {DEMO_TRACE}")


@operator_app.command("run")
def operator_run(
    namespace: Optional[list[str]] = typer.Option(None, "--namespace", "-n",
                                                  help="Watch only these namespaces (default: all)."),
    standalone: bool = typer.Option(True, help="Run without Kopf peering (development)."),
    verbose: bool = typer.Option(False, "--verbose", help="Log at DEBUG (default: INFO)."),
    log_format: str = typer.Option("full", "--log-format", help="full, plain or json (one object a line)."),
):
    """Run the operator: with the usual kubeconfig for development, or in its Deployment."""
    from kpilot_operator.main import run

    run(namespaces=namespace, standalone=standalone, verbose=verbose, log_format=log_format)


from kpilot.train.cli import evaluate_command, train_command, tune_command  # noqa: E402
app.command("train")(train_command)
app.command("evaluate")(evaluate_command)
app.command("tune")(tune_command)


# Which install extra brings each optional import (pyproject.toml), for a missing one's message.
EXTRA_OF = {"torch": "train", "stable_baselines3": "train", "tensorboard": "train", "matplotlib": "train",
            "tqdm": "train", "kopf": "operator", "kubernetes": "operator", "prometheus_client": "operator",
            "aiohttp": "operator"}


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the Typer app, turning input errors into one line and exit code 2."""
    try:
        app(args=argv, standalone_mode=False)
    except KpilotError as exc:
        err_console.print(f"kpilot: error: {exc}", markup=False)
        sys.exit(exc.exit_code)
    except ModuleNotFoundError as exc:
        extra = EXTRA_OF.get(exc.name or "")      # the package itself: a broken install is a traceback
        if extra is None:
            raise
        err_console.print(f"kpilot: error: this needs {exc.name}, which kpilot's {extra} extra installs: "
                          f"pip install 'kpilot[{extra}]'", markup=False)
        sys.exit(2)
    except typer.Abort:
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            # A group run without a command: its help (the message) is the whole answer, on
            # stdout as --help prints it, with Click's exit code 2.
            if exc.format_message().strip():
                typer.echo(exc.format_message().rstrip("\n"))
            sys.exit(exc.exit_code)
        # Usage errors (unknown option, bad value) come from the CLI parser Typer bundles;
        # they carry format_message() and exit_code 2. Render them as one line too.
        if hasattr(exc, "format_message") and getattr(exc, "exit_code", None) == 2:
            ctx = getattr(exc, "ctx", None)
            cmd = ctx.command_path if ctx is not None else "kpilot"
            err_console.print(f"{cmd}: error: {exc.format_message()}", markup=False)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
