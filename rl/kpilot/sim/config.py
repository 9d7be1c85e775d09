"""Simulator settings: Knative's autoscaler config, the pod model and the SLO, with Knative's defaults.

Every KPA field mirrors a key of Knative 1.23's `config-autoscaler` ConfigMap
(pkg/autoscaler/config/config.go) and defaults to Knative's value.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from kpilot.errors import ConfigError
from kpilot.observation import knative_target
from kpilot.yaml_file import number_as_text_hint


@dataclass(frozen=True)
class KpaConfig:
    container_concurrency_target_default: float = 100.0   # soft target per pod
    container_concurrency_target_percentage: float = 70.0  # effective target = target x 70 %
    target_burst_capacity: float = 211.0                   # 0: activator only at zero; -1: always
    stable_window_s: float = 60.0
    panic_window_percentage: float = 10.0
    panic_threshold_percentage: float = 200.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    scale_to_zero_grace_period_s: float = 30.0
    scale_to_zero_pod_retention_period_s: float = 0.0
    scale_down_delay_s: float = 0.0
    initial_scale: int = 1
    allow_zero_initial_scale: bool = False                 # Knative refuses initial_scale 0 without it
    min_scale: int = 0
    max_scale: int = 0                                     # 0 = unbounded
    max_scale_limit: int = 0                               # > 0: max_scale must be set, at most this
    activation_scale: int = 1
    enable_scale_to_zero: bool = True
    tick_s: float = 2.0                                    # hard-coded in Knative

    def interval_problem(self, interval_s) -> str | None:
        """Why `interval_s` cannot be a decision interval, or None: the one check behind
        `simulate --interval`, a manifest's, the training YAML's and `EnvConfig`'s. The autoscaler
        reads a target on its ticks, so deciding between two changes nothing, and an interval far
        shorter stops a replay's clock advancing (t + interval == t): it never ends."""
        if isinstance(interval_s, bool) or not isinstance(interval_s, (int, float)) \
                or not math.isfinite(interval_s):
            return "must be a number of seconds"
        if interval_s < self.tick_s:
            return f"must be at least the autoscaler's {self.tick_s:g} s tick (kpa.tick_s)"
        return None

    @property
    def panic_window_s(self) -> float:
        # Knative: max(1 s, stable x pct / 100 rounded to whole seconds, halves away from zero as
        # Go's Duration.Round does; Python's round() would take 2.5 s to 2).
        return max(1.0, float(math.floor(self.stable_window_s * self.panic_window_percentage / 100.0 + 0.5)))

    def target_value(self, target: float | None, container_concurrency: int) -> float:
        """TargetValue as Knative resolves it (pkg/reconciler/autoscaling/resources/target.go)."""
        total = self.total_value(target, container_concurrency)
        return max(0.01, total * self.container_concurrency_target_percentage / 100.0)

    def total_value(self, target: float | None, container_concurrency: int) -> float:
        return knative_target(target, container_concurrency, self.container_concurrency_target_default)


@dataclass(frozen=True)
class PodConfig:
    cores: float = 1.0              # processor sharing: n requests in service each run at min(1, cores/n)
    container_concurrency: int = 0  # hard limit per pod; 0 = unlimited (Knative's default)
    cold_start: str = "huawei"      # see kpilot.sim.coldstart
    max_pods: int = 1000            # simulator capacity, not a Knative setting
    unlimited_in_service: int = 1000  # what "unlimited" containerConcurrency means per pod here
    queue_capacity: int = 100_000   # requests waiting for a pod (activator + queue-proxy); beyond: 503


@dataclass(frozen=True)
class SloConfig:
    """A request violates its SLO when latency > slowdown x service + offset_s."""

    slowdown: float = 2.0
    offset_s: float = 0.5


@dataclass(frozen=True)
class SimConfig:
    kpa: KpaConfig = field(default_factory=KpaConfig)
    pod: PodConfig = field(default_factory=PodConfig)
    slo: SloConfig = field(default_factory=SloConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None, *, source: str | None = None,
                  knative_rules: bool = True) -> "SimConfig":
        """Build from a mapping of kpa/pod/slo sections; bad keys and values name the field.
        `knative_rules=False` skips Knative's rules between keys (a policy trained before they were
        checked, e.g. with initial_scale 0, still replays as it was trained)."""
        d = d or {}
        unknown = sorted(set(d) - {"kpa", "pod", "slo"})
        if unknown:
            raise ConfigError(f"unknown section {unknown[0]!r} (expected kpa, pod, slo)", path=source)
        parts = {}
        for name, klass in (("kpa", KpaConfig), ("pod", PodConfig), ("slo", SloConfig)):
            sub = d.get(name) or {}
            if not isinstance(sub, dict):
                raise ConfigError(f"field {name}: expected a mapping", path=source)
            for f in fields(klass):
                if f.name not in sub:
                    continue
                value, want = sub[f.name], type(f.default)
                ok = isinstance(value, want) or (want is float and isinstance(value, int)
                                                 and not isinstance(value, bool))
                if not ok:
                    hint = number_as_text_hint(value) if want in (int, float) else ""
                    raise ConfigError(f"field {name}.{f.name}: expected {want.__name__}, got {value!r}{hint}",
                                      path=source)
            bad = sorted(set(sub) - {f.name for f in fields(klass)})
            if bad:
                valid = ", ".join(sorted(f.name for f in fields(klass)))
                raise ConfigError(f"field {name}.{bad[0]}: unknown setting (valid: {valid})", path=source)
            parts[name] = klass(**sub)
            for key, value in sub.items():
                check_range(f"{name}.{key}", value, source)
        config = cls(**parts)
        kpa = config.kpa
        if kpa.max_scale and kpa.min_scale > kpa.max_scale:
            raise ConfigError(f"field kpa.min_scale: {kpa.min_scale} is above kpa.max_scale "
                              f"{kpa.max_scale}", path=source)
        if over := config.scale_over_capacity():
            raise ConfigError(f"field kpa.{over[0]}: {over[1]} is above pod.max_pods "
                              f"{config.pod.max_pods}, the simulator's capacity", path=source)
        # Knative's own checks of these keys (pkg/autoscaler/config/config.go).
        if not knative_rules:
            return config
        for key in ("stable_window_s", "scale_down_delay_s"):
            if getattr(kpa, key) != round(getattr(kpa, key)):
                raise ConfigError(f"field kpa.{key}: {getattr(kpa, key):g} s: Knative takes whole seconds only",
                                  path=source)
        if kpa.container_concurrency_target_percentage <= 1:
            # Knative's config-autoscaler reads a value of at most 1 as a fraction (0.7 is 70 %):
            # a percentage of 0.7 here would run the revision at a hundredth of what was meant.
            value = kpa.container_concurrency_target_percentage
            raise ConfigError(f"field kpa.container_concurrency_target_percentage: {value:g} is a percentage "
                              f"here, where Knative's ConfigMap would read it as {value * 100:g} %: write "
                              f"{value * 100:g}", path=source)
        if kpa.initial_scale == 0 and not kpa.allow_zero_initial_scale:
            raise ConfigError("field kpa.initial_scale: 0 needs kpa.allow_zero_initial_scale: true, as in "
                              "Knative", path=source)
        if kpa.max_scale_limit and not 0 < kpa.max_scale <= kpa.max_scale_limit:
            raise ConfigError(f"field kpa.max_scale: must be between 1 and kpa.max_scale_limit "
                              f"({kpa.max_scale_limit}) when that is set, got {kpa.max_scale}", path=source)
        return config

    def scale_over_capacity(self) -> tuple[str, int] | None:
        """(key, value) of a kpa minimum or initial scale above pod.max_pods, which the simulator
        would silently run at its capacity; None when both fit."""
        for name in ("min_scale", "initial_scale"):
            if getattr(self.kpa, name) > self.pod.max_pods:
                return name, getattr(self.kpa, name)
        return None


# What Knative's config-autoscaler validation accepts (pkg/autoscaler/config/config.go; the
# panic threshold's 110-1000 belongs to the per-revision annotation, not the ConfigMap), and, marked
# SIMULATOR, limits of this simulator's memory and clock: (lowest, highest, lowest excluded).
RANGES = {
    "kpa.container_concurrency_target_default": (0.01, math.inf, False),
    "kpa.container_concurrency_target_percentage": (0.0, 100.0, True),
    "kpa.stable_window_s": (6.0, 3600.0, False),
    "kpa.panic_window_percentage": (1.0, 100.0, False),
    "kpa.panic_threshold_percentage": (0.0, math.inf, True),
    "kpa.max_scale_up_rate": (1.0, math.inf, True),
    "kpa.max_scale_down_rate": (1.0, math.inf, True),
    "kpa.scale_to_zero_grace_period_s": (0.0, math.inf, True),
    "kpa.scale_to_zero_pod_retention_period_s": (0.0, math.inf, False),
    "kpa.scale_down_delay_s": (0.0, 86400.0, False),
    "kpa.initial_scale": (0, math.inf, False),
    "kpa.min_scale": (0, math.inf, False),
    "kpa.max_scale": (0, math.inf, False),
    "kpa.max_scale_limit": (0, math.inf, False),
    "kpa.activation_scale": (1, math.inf, False),
    "kpa.tick_s": (0.1, 60.0, False),
    "pod.cores": (0.0, math.inf, True),
    "pod.container_concurrency": (0, 1000, False),
    "pod.max_pods": (1, 10_000, False),
    "pod.unlimited_in_service": (1, 10_000, False),
    "pod.queue_capacity": (1, 10_000_000, False),
    "slo.slowdown": (1.0, math.inf, False),
    "slo.offset_s": (0.0, math.inf, False),
}
# Where the upper limit is the simulator's (arrays per pod and per tick), not Knative's.
SIMULATOR_LIMITS = {"kpa.scale_down_delay_s", "kpa.tick_s", "pod.container_concurrency", "pod.max_pods",
                    "pod.unlimited_in_service", "pod.queue_capacity"}
# The SLO's upper limits, the simulator's, checked once a value is in RANGES: slowdown x service +
# offset_s stays finite for any float32 service time (1e308 overflowed: numpy's warning on stderr),
# and an offset beyond a year, the longest trace, can never be missed.
SLO_LIMITS = {"slo.slowdown": 1e6, "slo.offset_s": 366 * 86400.0}


def check_range(key: str, value, source: str | None = None, *, option: str | None = None) -> None:
    """ConfigError when `value` is outside what Knative (or the simulator) accepts for `key`,
    naming the config field (in `source`) or the command-line `option` that gave it;
    target-burst-capacity is >= 0 or exactly -1."""
    if key == "kpa.target_burst_capacity":
        problem = None if math.isfinite(value) and (value >= 0 or value == -1) else "must be >= 0 or -1"
    elif key not in RANGES or isinstance(value, bool):
        return
    else:
        lo, hi, open_lo = RANGES[key]
        inside = math.isfinite(value) and (value > lo if open_lo else value >= lo) and value <= hi
        low = f"> {lo:g}" if open_lo else f">= {lo:g}"
        problem = None if inside else f"must be {low}" + ("" if math.isinf(hi) else f" and <= {hi:g}") \
            + (" (the simulator's limit)" if key in SIMULATOR_LIMITS else "")
        if inside and value > SLO_LIMITS.get(key, math.inf):
            problem = f"must be <= {SLO_LIMITS[key]:g} (the simulator's limit)"
    if problem is not None:
        message = f"{problem}, got {value!r}"
        raise ConfigError(message, option=option) if option else \
            ConfigError(f"field {key}: {message}", path=source)
