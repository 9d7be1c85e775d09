"""`kpilot tune`: each Service's base target and band, chosen on its latest traffic, to deploy.

On the last `last` fraction of each trace (after a warm-up, under `replays` simulator seeds): the
static target of the grid that cost least there is the Service's base target
(`kpilot.dev/base-target`); the band to run the policy in (`kpilot.dev/band`) is `band` where the
policy within it cost no more than that target alone, else 1 (pinned at the target). This is the
choice `kpilot evaluate --baselines rl-or-tuned` makes on the window before the one it scores (its
figures say how well the choice carries over to the next window); `tune` makes it on the newest
traffic.
"""

from __future__ import annotations

import shlex

from kpilot.action import BAND_ANNOTATION as BAND
from kpilot.action import BASE_TARGET_ANNOTATION as BASE_TARGET
from kpilot.action import valid_band
from kpilot.errors import ConfigError
from kpilot.evaluate.baselines import tune_static
from kpilot.evaluate.runner import DEFAULT_BAND, band_pays, check_metrics, check_observation_lag, load_artifact
from kpilot.evaluate.session import scored_window
from kpilot.render import trace_labels
from kpilot.traces import load_trace
from kpilot.traces.prometheus_export import is_k8s_name, source_of
from kpilot.traces.spec import parse_spec


def recommend(specs: list[str], policy_dir, *, last: float = 0.2, band: float = DEFAULT_BAND,
              warmup_s: float = 600.0, seed: int = 0, replays: int = 3,
              metrics: str = "prometheus", observation_lag_s: float = 0.0) -> list[dict]:
    """One recommendation per trace: its `base_target` and `band`, what each option cost per
    request on the window (`target_cost`, `policy_cost`) and the Service `annotations` to set.
    `metrics` is the operator's metrics source: what the policy will see in the cluster, and
    `observation_lag_s` how old (kpilot.sim.replay.observation_lag)."""
    if not 0.0 < last <= 1.0:
        raise ConfigError(f"expected a fraction in (0, 1], got {last}", option="--last")
    if not valid_band(band):       # printed as kpilot.dev/band: the operator's rule, so no inf
        raise ConfigError(f"expected a factor >= 1, got {band}", option="--band")
    check_metrics(metrics)
    check_observation_lag(observation_lag_s, [], metrics)
    artifact = load_artifact(policy_dir)
    check_observation_lag(observation_lag_s, [artifact.interval_s])
    seeds = [seed + k for k in range(replays)]
    window = (1.0 - last, 1.0)
    traces = [(spec, scored_window(spec, load_trace(spec, seed=seed), window, warmup_s, "to tune on",
                                   option="--last")) for spec in specs]      # load all first: fail fast
    traces = [(spec, trace, names_of(parse_spec(spec).path) if trace.meta.get("format") == "request-counts" else {})
              for spec, trace in traces]
    out = []
    for spec, trace, names in traces:
        target, target_cost = tune_static(trace, artifact.sim, artifact.reward, seeds=seeds)
        pays, policy_cost = band_pays(artifact, target, target_cost, band, trace, artifact.sim,
                                      artifact.reward, seeds, metrics, observation_lag_s)
        chosen = band if pays else 1.0
        out.append({"trace": spec, "window": list(window), "base_target": target, "band": chosen,
                    "target_cost": target_cost, "policy_cost": policy_cost, "policy": f"rl:{artifact.name}",
                    "metrics_source": metrics, "observation_lag_s": observation_lag_s,
                    "service": names.get("service"), **names,
                    "annotations": {BASE_TARGET: f"{target:g}", BAND: f"{chosen:g}"}})
    return out


def names_of(path) -> dict:
    """What a request-counts file is the traffic of: {"service"} (its name), with "namespace"
    where known; or {"revision", "namespace"} for one of `kpilot trace from-prometheus --by
    revision`, which has no Service to annotate. from-prometheus names each file after its Service
    or revision and records which beside the files; any other file is taken as a Service's."""
    source = source_of(path)
    if source is None:
        return {"service": path.stem}
    kind = "service" if source["by"] == "service" else "revision"
    return {kind: path.stem, "namespace": source.get("namespace")}


def annotation_args(annotations: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in annotations.items())


def kubectl_annotate(service: str, annotations: dict[str, str], namespace: str | None = None) -> str:
    """The `kubectl annotate` line that sets `annotations` on a Knative Service, quoted for a shell."""
    where = f" -n {shlex.quote(namespace)}" if namespace else ""
    args = " ".join(shlex.quote(f"{k}={v}") for k, v in annotations.items())
    return f"kubectl annotate ksvc {shlex.quote(service)}{where} --overwrite {args}"


def annotate_commands(rows: list[dict]) -> list[str]:
    """`kubectl annotate` for each row that names its Service (add -n NAMESPACE). Where the name
    or namespace is not a Kubernetes name (a file named `My Service; echo pwned.csv` is no
    Service's traffic) a shell comment says so instead: no such Service, and nothing to run."""
    lines = []
    for r in rows:
        if not r.get("service"):
            continue
        bad = [f"{what} {r[key]!r}" for key, what in (("service", "Service name"), ("namespace", "namespace"))
               if r.get(key) is not None and not is_k8s_name(r[key])]
        if bad:     # repr: no newline or quote in a name can end the comment
            lines.append(f"# kpilot: no kubectl line for {r['trace']!r}: {' and '.join(bad)} "
                         f"{'is' if len(bad) == 1 else 'are'} not a Kubernetes name (a DNS-1123 label: "
                         "lowercase letters, digits and '-', at most 63)")
        else:
            lines.append(kubectl_annotate(r["service"], r["annotations"], r.get("namespace")))
    return lines


def recommendation_table(rows: list[dict]):
    from rich.table import Table

    table = Table(title="kpilot tune: a base target and band per Service (cost per request on the window)",
                  caption="set them on each Service: kubectl annotate ksvc NAME --overwrite "
                          "kpilot.dev/base-target=T kpilot.dev/band=B", caption_justify="left")
    for name in ("trace", "base target", "target alone", "policy in band", "band", "annotations"):
        table.add_column(name, justify="left" if name in ("trace", "annotations") else "right")
    labels = trace_labels(r["trace"] for r in rows)
    for r in rows:
        table.add_row(labels[r["trace"]], f"{r['base_target']:g}", f"{r['target_cost']:.4f}", f"{r['policy_cost']:.4f}",
                      f"{r['band']:g}" + ("" if r["band"] != 1 else " (pinned)"),
                      annotation_args(r["annotations"]))
    return table
