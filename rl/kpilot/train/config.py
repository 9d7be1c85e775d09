"""The training configuration: one YAML file in the rl-zoo style, validated into dataclasses.

Every hyperparameter lives in the YAML file (see rl/kpilot/configs/ppo_default.yaml, which
documents each key); nothing here picks values beyond the documented defaults. Unknown or
ill-typed keys are a ConfigError naming the key (e.g. `ppo.learning_rate`), so a typo cannot
silently fall back to a default.

Trace specs may contain `${KPILOT_TRACES}`: the folder of real excerpts, from the environment
variable of that name, default `../shared/traces` (relative to the working directory).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from kpilot.action import ActionSpec, valid_band
from kpilot.env.reward import MAX_WEIGHT, REWARD_UNITS, RewardConfig
from kpilot.errors import ConfigError
from kpilot.sim.coldstart import parse_cold_start
from kpilot.yaml_file import number_as_text_hint, read_yaml

TRACES_VAR = "KPILOT_TRACES"
DEFAULT_TRACES_DIR = "../shared/traces"
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "ppo_default.yaml"
# Upper bounds far above any useful run, below what crashes or exhausts memory on allocation
# (libgomp segfaults on 100000 threads; a rollout buffer of n_steps x n_envs steps is allocated up front).
MAX_THREADS = 256
MAX_N_ENVS = 4096
MAX_ROLLOUT_STEPS = 2**22              # ppo.n_steps x n_envs
MAX_LAYER_WIDTH, MAX_LAYERS = 4096, 8


def check_threads(threads: int) -> None:
    """`--threads` within 1..MAX_THREADS: libgomp segfaults on a huge count, and 0 is no count."""
    if not 1 <= threads <= MAX_THREADS:
        raise ConfigError(f"expected 1 to {MAX_THREADS} threads, got {threads}", option="--threads")


def traces_dir() -> str:
    return os.environ.get(TRACES_VAR) or DEFAULT_TRACES_DIR


def expand_spec(spec: str) -> str:
    return str(spec).replace("${" + TRACES_VAR + "}", traces_dir()).replace("$" + TRACES_VAR, traces_dir())


@dataclass(frozen=True)
class SplitConfig:
    """Fractions of each trace's time span. Split by time, never by shuffling requests."""

    train: tuple = (0.0, 0.7)
    validation: tuple = (0.7, 0.8)   # model selection during training
    test: tuple = (0.8, 1.0)         # the held-out windows the bar is measured on


@dataclass(frozen=True)
class EnvSection:
    traces: tuple = ()               # real traces (any format); `--trace` replaces this list
    synthetic: tuple = ()            # synthetic:NAME specs, added to the traces
    real_weight: int = 2             # each real trace is sampled this many times as often as a synthetic one
    decision_interval_s: float = 30.0
    episode_s: float = 1800.0
    service_scale: tuple = (0.7, 1.4)
    cold_start_scale: tuple = (0.5, 2.0)
    rate_scale: tuple = (1.0, 1.0)
    reward_units: str = "relative"   # or "pods" (kpilot.env.core)
    random_time_of_day: bool = True
    idle_start: float = 0.5          # share of episodes whose load arrives on an idle revision (kpilot.env.core)
    min_target: float = 1.0
    max_target: float = 200.0
    max_step_ratio: float = 0.0      # > 0: each decision within x(1 + ratio) of the running target; 0: no limit
    smoothing: float = 0.5           # < 1: each decision moves the target that share of the way (log scale)
    change_penalty: float = 0.05     # training reward per doubling or halving of the target (kpilot.env.core)
    immediate_cuts: bool = True      # with smoothing: a lower target takes effect at once (kpilot.action)
    lateness_shaping: bool = True    # shape rewards with projected lateness at ppo.gamma (kpilot.env.core)
    observe_base: bool = False       # observe the target tuned on the trace before (observation kpilot-obs/4)
    base_window_s: float = 1800.0    # ... on this much of it
    base_band: float = 0.0           # > 0: training decisions kept within this factor of the base
    observation_lag_s: float = 0.0   # > 0: each episode reads the revision up to this long before deciding


@dataclass(frozen=True)
class PpoSection:
    learning_rate: float = 3e-4
    lr_schedule: str = "linear"      # decays to 0 at total_timesteps; or "constant"
    n_steps: int = 64
    batch_size: int = 1024
    n_epochs: int = 10
    gamma: float = 0.98
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    net_arch: tuple = (64, 64)
    log_std_init: float = -1.0


@dataclass(frozen=True)
class NormalizeSection:
    norm_obs: bool = True
    norm_reward: bool = True
    clip_obs: float = 10.0
    clip_reward: float = 10.0


@dataclass(frozen=True)
class EvalSection:
    every_timesteps: int = 50_000    # 0: no evaluation during training
    seed: int = 0                    # simulator seed of the validation replays
    replays: int = 3                 # seeds seed, seed+1, ...: each window's cost is their mean
    rule_grid: dict = field(default_factory=dict)   # overrides of kpilot.evaluate.baselines.RULE_GRID
    rule_calibration_s: float = 3600.0              # rule grid search on this much of each training window
    warmup_s: float = 600.0          # validation replays start this long before each window, unscored
    select_after: float = 0.5        # keep the best model only among those from this fraction of the run on
    band: float = 0.0                # > 0 (observe_base): validation keeps the policy within this factor of its base


@dataclass(frozen=True)
class CheckpointSection:
    every_timesteps: int = 100_000


@dataclass(frozen=True)
class TrainConfig:
    name: str = "default"
    seed: int = 1                    # as ppo_default.yaml: the shipped policy's seed
    n_envs: int = 64
    total_timesteps: int = 3_000_000
    env: EnvSection = field(default_factory=EnvSection)
    split: SplitConfig = field(default_factory=SplitConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    sim: dict = field(default_factory=dict)          # kpilot.sim.config.SimConfig.from_dict overrides
    ppo: PpoSection = field(default_factory=PpoSection)
    normalize: NormalizeSection = field(default_factory=NormalizeSection)
    eval: EvalSection = field(default_factory=EvalSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def action_spec(self) -> ActionSpec:
        return ActionSpec(self.env.min_target, self.env.max_target,
                          self.env.max_step_ratio if self.env.max_step_ratio > 0 else None,
                          self.env.smoothing if self.env.smoothing < 1 else None,
                          self.env.immediate_cuts)

    def trace_specs(self) -> list[str]:
        return [expand_spec(s) for s in (*self.env.traces, *self.env.synthetic)]


_SECTIONS = {"env": EnvSection, "split": SplitConfig, "reward": RewardConfig, "ppo": PpoSection,
             "normalize": NormalizeSection, "eval": EvalSection, "checkpoint": CheckpointSection}


def _coerce(value, default, key: str, source: str):
    """`value` converted to the type of `default`, or a ConfigError naming `key`."""
    def bad(expected: str):
        return ConfigError(f"{key} must be {expected}, got {value!r}{number_as_text_hint(value)}", path=source)

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise bad("an integer")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad("a finite number")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        if len(default) == 2 and all(isinstance(x, float) for x in default):
            if len(value) != 2 or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                          and math.isfinite(x) for x in value):
                raise bad("a pair of numbers [low, high]")
            if not value[0] <= value[1]:
                raise bad("a pair [low, high] with low <= high")
            return (float(value[0]), float(value[1]))
        return tuple(value)
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise bad("a mapping")
        return dict(value)
    return value


def _section(klass, data, prefix: str, source: str):
    if data is None:
        return klass()
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix} must be a mapping", path=source)
    defaults = klass()
    known = {f.name for f in fields(klass)}
    for key in data:
        if key not in known:
            raise ConfigError(f"unknown key {prefix}.{key} (valid: {', '.join(sorted(known))})",
                              path=source)
    return klass(**{k: _coerce(v, getattr(defaults, k), f"{prefix}.{k}", source) for k, v in data.items()})


def config_from_dict(doc: dict, source: str = "config") -> TrainConfig:
    if not isinstance(doc, dict):
        raise ConfigError("the training config must be a YAML mapping", path=source)
    defaults = TrainConfig()
    known = {f.name for f in fields(TrainConfig)}
    kw = {}
    for key, value in doc.items():
        if key not in known:
            raise ConfigError(f"unknown key {key} (valid: {', '.join(sorted(known))})", path=source)
        if key in _SECTIONS:
            kw[key] = _section(_SECTIONS[key], value, key, source)
        else:
            kw[key] = _coerce(value, getattr(defaults, key), key, source)
    cfg = TrainConfig(**kw)
    _validate(cfg, source)
    return cfg


def _validate(cfg: TrainConfig, source: str) -> None:
    from kpilot.sim.config import SimConfig

    def need(ok: bool, key: str, what: str):
        if not ok:
            raise ConfigError(f"{key} {what}", path=source)

    need(0 <= cfg.seed < 2**32, "seed", "must be in [0, 2**32)")
    need(0 <= cfg.eval.seed < 2**32, "eval.seed", "must be in [0, 2**32)")
    # The name becomes a folder of TensorBoard logs inside the run directory.
    need(bool(re.fullmatch(r"[A-Za-z0-9_.-]+", cfg.name)) and cfg.name.strip(".") != "", "name",
         "must be letters, digits, '.', '_' or '-' (it names a folder of logs)")
    need(cfg.n_envs >= 1, "n_envs", "must be at least 1")
    need(cfg.n_envs <= MAX_N_ENVS, "n_envs", f"must be at most {MAX_N_ENVS}")
    need(cfg.ppo.n_epochs >= 1, "ppo.n_epochs", "must be at least 1")
    # Beyond these the losses overflow float32 into NaN or a RuntimeError mid-run.
    need(cfg.ppo.clip_range > 0, "ppo.clip_range", "must be positive")
    need(cfg.ppo.clip_range <= 1, "ppo.clip_range", "must be at most 1")
    need(0 <= cfg.ppo.gae_lambda <= 1, "ppo.gae_lambda", "must be in [0, 1]")
    need(cfg.ppo.ent_coef >= 0, "ppo.ent_coef", "must be >= 0")
    need(cfg.ppo.ent_coef <= 1, "ppo.ent_coef", "must be at most 1")
    need(cfg.ppo.vf_coef >= 0, "ppo.vf_coef", "must be >= 0")
    need(cfg.ppo.vf_coef <= 100, "ppo.vf_coef", "must be at most 100")
    need(-20 <= cfg.ppo.log_std_init <= 2, "ppo.log_std_init",
         "must be in [-20, 2] (the log of the action noise's standard deviation, actions span [-1, 1])")
    need(cfg.ppo.max_grad_norm > 0, "ppo.max_grad_norm", "must be positive")
    need(cfg.normalize.clip_obs > 0, "normalize.clip_obs", "must be positive")
    need(cfg.normalize.clip_reward > 0, "normalize.clip_reward", "must be positive")
    for key, value in cfg.reward.to_dict().items():
        if isinstance(value, float):      # every weight of the cost: a negative one rewards harm
            need(0 <= value <= MAX_WEIGHT, f"reward.{key}",
                 f"must be >= 0 and at most {MAX_WEIGHT:g} (pod-seconds per unit)")
    # Any AimdRule setting but those calibrate_rule sets itself (the decision interval, the bounds).
    from kpilot.evaluate.baselines import AimdRule
    tunable = sorted(set(AimdRule.__dataclass_fields__) - {"interval_s", "min_target", "max_target", "name"})
    for key, values in cfg.eval.rule_grid.items():
        need(key in tunable, f"eval.rule_grid.{key}", f"is not a rule parameter ({', '.join(tunable)})")
        need(isinstance(values, (list, tuple)) and len(values) > 0
             and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                     for v in values), f"eval.rule_grid.{key}", "must be a list of positive numbers")
    need(cfg.total_timesteps >= 1, "total_timesteps", "must be positive")
    need(cfg.ppo.n_steps >= 2, "ppo.n_steps", "must be at least 2")
    need(cfg.ppo.n_steps * cfg.n_envs <= MAX_ROLLOUT_STEPS, "ppo.n_steps",
         f"x n_envs ({cfg.ppo.n_steps} x {cfg.n_envs}) must be at most {MAX_ROLLOUT_STEPS}: the rollout "
         "buffer holds that many steps")
    need(cfg.ppo.batch_size >= 2, "ppo.batch_size", "must be at least 2")
    need(cfg.ppo.learning_rate > 0, "ppo.learning_rate", "must be positive")
    need(cfg.ppo.learning_rate <= 1, "ppo.learning_rate", "must be at most 1")
    need(cfg.ppo.lr_schedule in ("constant", "linear"), "ppo.lr_schedule", "must be constant or linear")
    # Each real trace's window is listed this many times in the episode pool.
    need(cfg.env.real_weight >= 1, "env.real_weight", "must be at least 1")
    need(cfg.env.real_weight <= 1000, "env.real_weight", "must be at most 1000")
    need(0 < cfg.ppo.gamma <= 1, "ppo.gamma", "must be in (0, 1]")
    need(len(cfg.ppo.net_arch) <= MAX_LAYERS
         and all(isinstance(n, int) and not isinstance(n, bool) and 0 < n <= MAX_LAYER_WIDTH
                 for n in cfg.ppo.net_arch), "ppo.net_arch",
         f"must be a list of at most {MAX_LAYERS} layer widths in [1, {MAX_LAYER_WIDTH}]")
    need(0 < cfg.env.min_target < cfg.env.max_target, "env.min_target",
         "must satisfy 0 < env.min_target < env.max_target")
    need(0.0 <= cfg.env.idle_start <= 1.0, "env.idle_start", "must be a share in [0, 1]")
    need(cfg.env.max_step_ratio >= 0, "env.max_step_ratio", "must be >= 0 (0: no step limit)")
    need(0 < cfg.env.smoothing <= 1, "env.smoothing", "must be in (0, 1] (1: no smoothing)")
    need(cfg.env.change_penalty >= 0, "env.change_penalty", "must be >= 0 (0: none)")
    need(cfg.env.base_band == 0 or valid_band(cfg.env.base_band), "env.base_band", "must be 0 (none) or >= 1")
    need(cfg.eval.band == 0 or valid_band(cfg.eval.band), "eval.band", "must be 0 (none) or >= 1")
    need(cfg.env.base_window_s > 0, "env.base_window_s", "must be positive")
    need(0 <= cfg.env.observation_lag_s <= cfg.env.decision_interval_s, "env.observation_lag_s",
         "must be seconds in [0, env.decision_interval_s]")
    need(not cfg.env.observe_base or cfg.split.validation[0] > 0, "split.validation",
         "must start after the traces' start with env.observe_base (its base is tuned on the window before)")
    need(cfg.eval.replays >= 1, "eval.replays", "must be at least 1")
    need(cfg.eval.replays <= 1000, "eval.replays", "must be at most 1000")
    need(0.0 <= cfg.eval.select_after < 1.0, "eval.select_after", "must be in [0, 1)")
    need(cfg.env.reward_units in REWARD_UNITS, "env.reward_units", f"must be one of {', '.join(REWARD_UNITS)}")
    need(cfg.env.decision_interval_s > 0, "env.decision_interval_s", "must be positive")
    need(cfg.env.episode_s >= cfg.env.decision_interval_s, "env.episode_s",
         "must be at least one decision interval")
    for name in ("service_scale", "cold_start_scale", "rate_scale"):
        need(getattr(cfg.env, name)[0] > 0, f"env.{name}", "must be positive")
    # Arrivals are replicated this many times: 1e300 never finishes.
    need(cfg.env.rate_scale[1] <= 100, "env.rate_scale", "must be at most 100")
    for key in ("traces", "synthetic"):
        for i, spec in enumerate(getattr(cfg.env, key)):
            need(isinstance(spec, str), f"env.{key}[{i}]",
                 f"must be a string (a trace spec: a path or synthetic:NAME), got {spec!r}")
    for name in ("train", "validation", "test"):
        lo, hi = getattr(cfg.split, name)
        need(0.0 <= lo < hi <= 1.0, f"split.{name}", "must be [start, end] fractions with 0 <= start < end <= 1")
    # Model selection must not see training data, and the test window must stay unseen by both.
    need(cfg.split.train[1] <= cfg.split.validation[0], "split.validation", "must start where split.train ends or later")
    need(cfg.split.validation[1] <= cfg.split.test[0], "split.test", "must start where split.validation ends or later")
    need(cfg.eval.every_timesteps >= 0, "eval.every_timesteps", "must be >= 0 (0: no validation)")
    need(cfg.eval.rule_calibration_s > 0, "eval.rule_calibration_s", "must be positive")
    need(cfg.eval.warmup_s >= 0, "eval.warmup_s", "must be >= 0")
    need(cfg.checkpoint.every_timesteps >= 1, "checkpoint.every_timesteps", "must be positive")
    need(bool(cfg.env.traces or cfg.env.synthetic), "env.traces", "and env.synthetic are both empty")
    try:
        sim = SimConfig.from_dict(cfg.sim)
    except ConfigError as exc:
        raise ConfigError(f"sim: {exc.message}", path=source) from None
    except TypeError as exc:
        raise ConfigError(f"sim: {exc}", path=source) from None
    problem = sim.kpa.interval_problem(cfg.env.decision_interval_s)
    need(problem is None, "env.decision_interval_s", f"{problem} of the config's sim section")
    try:        # parsed here, not when the first simulation starts minutes later
        parse_cold_start(sim.pod.cold_start)
    except ConfigError as exc:
        raise ConfigError(f"sim.pod.cold_start: {exc.message}", path=source) from None


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> TrainConfig:
    """Load a YAML training config (default: the shipped ppo_default.yaml)."""
    p = Path(path) if path is not None else DEFAULT_CONFIG
    doc = read_yaml(p)
    doc = doc or {}
    for dotted, value in (overrides or {}).items():
        node = doc
        *parents, leaf = dotted.split(".")
        for i, part in enumerate(parents):
            if node.get(part) is None:          # `env:` left empty in the YAML: an empty section
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                key = ".".join(parents[:i + 1])
                raise ConfigError(f"{key} must be a mapping", path=str(p))
        node[leaf] = value
    return config_from_dict(doc, str(p))
