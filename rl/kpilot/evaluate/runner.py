"""Side-by-side request-level replays: the policy against KPA defaults, static targets and the rule.

Every controller replays the same trace with the same simulator seed (same cold-start draws for
the same pod creations), so differences are the controllers'. One row per policy per trace:
`trace` (the spec given), `policy` (`rl:NAME`, `rule:aimd`, `kpa`, `rl-or-tuned` with what it `chose`,
`static-tuned` with its `target`, `rl-in-band` with its `target` and `band`, all three with their
`tuned_on` window, `static:N`), every replay metric,
`score` (kpilot.env.reward.score: minus the cost per request, higher is better) and
`best_static` (true on the static target with the best score on that trace: hindsight's choice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from kpilot.action import DEFAULT_BAND, band_bounds, valid_band
from kpilot.controllers import PolicyController, static_target
from kpilot.env.reward import MAX_WEIGHT, RewardConfig, score
from kpilot.errors import ConfigError, PolicyError
from kpilot.evaluate.baselines import STATIC_GRID, AimdRule, TunedStaticTarget, mean_cost
from kpilot.observation import METRICS_SOURCES
from kpilot.policy import ExportedPolicy, load_policy, policy_file
from kpilot.sim.coldstart import parse_cold_start
from kpilot.sim.config import SimConfig
from kpilot.sim.replay import METRIC_KEYS, KpaDefault, StaticTarget, replay

BASELINES = ("kpa", "static-grid", "rule", "static-tuned", "rl-in-band", "rl-or-tuned", "static-rolling")
IN_BAND = "rl-in-band"
CHOICE = "rl-or-tuned"
TUNED_BASELINES = ("static-tuned", IN_BAND, CHOICE)     # tuned on the window before the evaluated one


@dataclass
class Artifact:
    """A trained policy directory: the export plus what evaluation needs from its manifest."""

    name: str
    policy: ExportedPolicy
    sim: SimConfig
    reward: RewardConfig
    interval_s: float
    rule: AimdRule | None
    manifest: dict = field(default_factory=dict)


def load_artifact(path: str | Path, *, replayable: bool = True) -> Artifact:
    """Load and check a policy directory (or policy.json); PolicyError says what is wrong. With
    `replayable`, also that its settings can be replayed as they are (`kpilot simulate` checks
    them itself, after its options override them)."""
    p = Path(path)
    if not p.exists():
        raise PolicyError("no such policy directory", path=str(p))
    policy = load_policy(p)
    doc = policy.manifest.get("manifest")
    if not isinstance(doc, dict):
        raise PolicyError("policy.json has no training manifest (not written by kpilot train?)", path=str(p))
    version = doc.get("observation_version")
    if version != policy.observation_version:
        raise PolicyError(f"manifest observation version {version!r} does not match the policy's "
                          f"{policy.observation_version!r}; retrain the policy", path=str(p))
    try:
        sim = SimConfig.from_dict(doc.get("config", {}).get("sim") or {}, knative_rules=False)
        reward = RewardConfig(**{k: _number(f"reward.{k}", v, 0.0, high=MAX_WEIGHT) for k, v in doc["reward"].items()})
        interval = _number("env.decision_interval_s", doc["env"]["decision_interval_s"], 0.0, strict=True)
        _check_training_record(doc)
        rule_doc = doc.get("rule_baseline")
        rule = AimdRule(**rule_doc["params"]) if rule_doc else None
        if rule is not None:
            for name, value in rule.params().items():
                _number(f"rule_baseline.params.{name}", value, 0.0, strict=True)
    except (KeyError, TypeError, ValueError, AttributeError, ConfigError) as exc:
        raise PolicyError(f"malformed manifest ({type(exc).__name__}: {exc})", path=str(p)) from None
    if replayable:
        source = str(policy_file(p))
        check_interval("env.decision_interval_s", interval, sim, source)
        if rule is not None:
            check_interval("rule_baseline.params.interval_s", rule.interval_s, sim, source)
        check_cold_start(sim.pod.cold_start, source)
    name = policy.manifest.get("name") or p.resolve().name
    return Artifact(name, policy, sim, reward, interval, rule, doc)


def _check_training_record(doc: dict) -> None:
    """ValueError unless the manifest's training traces and split have the shape the held-out
    note reads (a list of objects; [start, end] fractions)."""
    traces = doc.get("training_traces") or []
    if not isinstance(traces, list) or not all(isinstance(t, dict) for t in traces):
        raise ValueError("training_traces must be a list of objects")
    split = (doc.get("config") or {}).get("split") or {}
    if not isinstance(split, dict):
        raise ValueError("config.split must be a mapping")
    for key, pair in split.items():
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in pair)):
            raise ValueError(f"config.split.{key} must be [start, end], got {pair!r}")


def _number(name: str, value, low: float, *, strict: bool = False, high: float = math.inf) -> float:
    """A finite number above `low` (at or above it unless `strict`) and at most `high`: a zero or
    negative interval would never advance a replay, a non-numeric weight would fail mid-run."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and (value > low if strict else value >= low)):
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {low:g}, got {value!r}")
    if value > high:
        raise ValueError(f"{name} must be at most {high:g}, got {value!r}")
    return float(value)


def check_interval(name: str, interval: float, sim: SimConfig, source: str) -> None:
    """A manifest's decision interval, checked as every other (`KpaConfig.interval_problem`)."""
    if problem := sim.kpa.interval_problem(interval):
        raise PolicyError(f"manifest {name} {problem}, got {interval:g}", path=source)


def check_cold_start(model: str, source: str) -> None:
    """A manifest's cold-start model, named as the manifest's, not as a --cold-start the user
    never gave (a table recorded on the training machine may be missing here)."""
    try:
        parse_cold_start(model)
    except ConfigError as exc:
        raise PolicyError(f"manifest config.sim.pod.cold_start: {exc.message}", path=source) from None


def rl_controller(artifact: Artifact, metrics: str = "prometheus", lag_s: float = 0.0) -> PolicyController:
    return PolicyController(artifact.policy, interval_s=artifact.interval_s, name=f"rl:{artifact.name}",
                            metrics=metrics, observation_lag_s=lag_s, utilization=replay_utilization(artifact))


def replay_utilization(artifact: Artifact) -> float:
    """The utilization the replays' Knative aims for, at which a Prometheus-less policy inverts
    the desired scale (the operator uses each revision's)."""
    return artifact.sim.kpa.container_concurrency_target_percentage / 100.0


@dataclass
class TunedPolicy(PolicyController):
    """The policy deployed around a Service's base target, the static target tuned on an earlier
    window (`tuned_on`): kept within a factor of `band` of it (None: not bounded), as the operator
    does with `kpilot.dev/base-target` and `kpilot.dev/band`. `rl-in-band`, or `rl-or-tuned`'s
    choice (`chose`)."""

    band: float | None = None
    tuned_on: tuple = ()
    chose: str | None = None

    def row_fields(self) -> dict:
        # Rounded: the window's fractions read 0.6, not 0.6000000000000001.
        fields = {"target": self.base, "band": self.band, "tuned_on": [round(f, 6) for f in self.tuned_on]}
        return fields if self.chose is None else {"chose": self.chose, **fields}


def tuned_policy(artifact: Artifact, base: float, band: float | None, tuned_on, *, name: str = IN_BAND,
                 metrics: str = "prometheus", lag_s: float = 0.0, chose: str | None = None) -> TunedPolicy:
    return TunedPolicy(artifact.policy, interval_s=artifact.interval_s, name=name, metrics=metrics,
                       observation_lag_s=lag_s,
                       bounds=None if band is None else band_bounds(base, band), base=base, band=band,
                       tuned_on=tuple(tuned_on), chose=chose, utilization=replay_utilization(artifact))


def parse_baselines(text: str | None) -> list[str]:
    """`kpa,static-grid,rule` and/or `static:N` items."""
    items = [x.strip() for x in (text or "").split(",") if x.strip()]
    for item in items:
        if item in BASELINES:
            continue
        if item.startswith("static:") and static_target(item) is not None:
            continue
        raise ConfigError(f"unknown baseline {item!r} (valid: {', '.join(BASELINES)}, static:N)",
                          option="--baselines")
    return items


def parse_band(text: str) -> float | None:
    """`--band`: a factor >= 1, or `none` (the policy not bounded around the tuned target)."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not valid_band(value):
        raise ConfigError(f"expected a factor >= 1 or none, got {text!r}", option="--band")
    return value


def check_metrics(metrics: str) -> str:
    """`--metrics`: one of the operator's metrics sources."""
    if metrics not in METRICS_SOURCES:
        raise ConfigError(f"expected one of {', '.join(METRICS_SOURCES)}, got {metrics!r}", option="--metrics")
    return metrics


def check_observation_lag(lag_s: float, intervals, metrics: str = "prometheus") -> float:
    """`--observation-lag`: seconds >= 0, less than every decision interval in `intervals` (those of
    the controllers that read it; kpilot.sim.replay.observation_lag), and only for what Prometheus
    scrapes: the PodAutoscaler's status (`--metrics kubernetes`) is read as it is."""
    if not (math.isfinite(lag_s) and lag_s >= 0):
        raise ConfigError(f"expected seconds >= 0, got {lag_s}", option="--observation-lag")
    if lag_s > 0 and metrics != "prometheus":
        raise ConfigError(f"applies to readings from Prometheus's scrapes; with --metrics {metrics} the policy "
                          "reads the PodAutoscaler's status as it is", option="--observation-lag")
    shortest = min(intervals, default=math.inf)
    if lag_s >= shortest:
        raise ConfigError(f"expected less than the decision interval ({shortest:g} s), got {lag_s:g}",
                          option="--observation-lag")
    return lag_s


def band_pays(artifact: Artifact, target: float, static_cost: float, band: float | None, trace,
              sim: SimConfig, reward: RewardConfig, seeds: list[int],
              metrics: str = "prometheus", lag_s: float = 0.0) -> tuple[bool, float]:
    """Whether the policy within `band` of `target` cost no more on `trace` than `target` alone
    (which cost `static_cost` there), and what it cost: the per-Service choice."""
    policy = tuned_policy(artifact, target, band, (), metrics=metrics, lag_s=lag_s)
    policy_cost = mean_cost(trace, policy, sim, reward, seeds)
    return policy_cost <= static_cost, policy_cost


def choose_policy_or_static(artifact: Artifact, target: float, static_cost: float, band: float | None,
                            tuning, tuned_on, sim: SimConfig, reward: RewardConfig, seeds: list[int],
                            metrics: str = "prometheus", lag_s: float = 0.0):
    """`rl-or-tuned`: the policy within `band` of the best static target on the `tuning` window
    (`target`, which cost `static_cost` there) if it cost no more than that target there, else the
    target alone (band 1); named CHOICE either way."""
    if band_pays(artifact, target, static_cost, band, tuning, sim, reward, seeds, metrics, lag_s)[0]:
        chose = IN_BAND if band is not None else f"rl:{artifact.name}"
        return tuned_policy(artifact, target, band, tuned_on, name=CHOICE, metrics=metrics, lag_s=lag_s,
                            chose=chose)
    return TunedStaticTarget(target, tuple(tuned_on), name=CHOICE)


def controllers_for(baselines: list[str], artifact: Artifact | None, *, grid=STATIC_GRID,
                    tuned: TunedStaticTarget | None = None, in_band: TunedPolicy | None = None, chosen=None,
                    rolling=None, metrics: str = "prometheus", lag_s: float = 0.0):
    """The controllers to replay on `trace`, in table order: policy (seeing what `metrics`, the
    operator's metrics source, reads, `lag_s` old, as the rule does), rule, KPA, the policy in its band (`in_band`),
    `rl-or-tuned`'s choice (`chosen`) and the tuned static target (`tuned`), all three made by the
    caller on an earlier window, the re-tuned target (`rolling`), static targets."""
    out = []
    if artifact is not None:
        out.append(rl_controller(artifact, metrics, lag_s))
    if "rule" in baselines:
        action = artifact.policy.action_spec if artifact else None
        rule = (artifact.rule if artifact and artifact.rule else AimdRule())
        if action is not None:
            rule = AimdRule(**{**rule.params(), "min_target": action.min_target,
                               "max_target": action.max_target})
        out.append(replace(rule, observation_lag_s=lag_s))
    if "kpa" in baselines:
        out.append(KpaDefault())
    out.extend(c for c in (in_band, chosen, tuned, rolling) if c is not None)
    statics = set()
    if "static-grid" in baselines:
        statics.update(float(t) for t in grid)
    statics.update(float(b[7:]) for b in baselines if b.startswith("static:"))
    out.extend(StaticTarget(t) for t in sorted(statics))
    return out


def mean_metrics(runs: list[dict]) -> dict:
    """Several replays of one trace as one: the mean of each metric (a latency over the replays
    in which requests finished: None in none), the largest max_pods, whether any replay ran out of
    the simulator's pods."""
    if len(runs) == 1:
        return runs[0]
    out = {}
    for k in runs[0]:
        values = [m[k] for m in runs if m[k] is not None]
        out[k] = float(np.mean(values)) if values else None
    out["max_pods"] = max(m["max_pods"] for m in runs)
    out["pod_capacity_reached"] = any(m["pod_capacity_reached"] for m in runs)
    out["requests"] = runs[0]["requests"]          # the same trace under every seed
    return out


def _behaviour(controller) -> tuple:
    """What decides a controller's replay: equal keys replay identically."""
    if isinstance(controller, (StaticTarget, TunedStaticTarget)):
        return ("static", float(controller.target))
    if isinstance(controller, PolicyController):
        # A version 2 policy also reads its base target (kpilot.observation); version 1 ignores it.
        base = controller.base if controller.policy.observes_base else None
        return ("policy", id(controller.policy), controller.interval_s, controller.metrics,
                controller.observation_lag_s, controller.bounds, base)
    return ("other", id(controller))


def evaluate_trace(spec: str, trace, controllers, sim: SimConfig, reward: RewardConfig, *,
                   seeds: list[int], keep_timelines: bool = False) -> tuple[list[dict], dict]:
    """Replay `trace` under each controller and every seed (each row: the mean over seeds).
    Returns rows and (optionally) name -> the first seed's ReplayResult."""
    rows, results, done = [], {}, {}
    for c in controllers:
        # A controller that decides exactly as one already replayed (the tuned target and its
        # static:N, rl-or-tuned and what it chose) reuses those replays: same seeds, same result.
        key = _behaviour(c)
        if key not in done:
            done[key] = [replay(trace, c, sim, seed=s, timeline=keep_timelines and i == 0)
                         for i, s in enumerate(seeds)]
        runs = done[key]
        metrics = mean_metrics([r.metrics for r in runs])
        row = {"trace": spec, "policy": c.name, **{k: metrics[k] for k in METRIC_KEYS if k in metrics},
               "score": score(metrics, reward), "best_static": False}
        if hasattr(c, "row_fields"):
            row.update(c.row_fields())
        if len(seeds) > 1:
            row["seeds"] = list(seeds)
            row["seed_scores"] = [score(r.metrics, reward) for r in runs]
        rows.append(row)
        if keep_timelines:
            results[c.name] = runs[0]
    statics = [r for r in rows if r["policy"].startswith("static:")]
    if statics:
        max(statics, key=lambda r: r["score"])["best_static"] = True
    return rows, results
