"""The annotations kpilot reads and writes on Knative objects, and what one write changes.

A "holder" is the object whose `autoscaling.knative.dev/target` annotation the autoscaler reads:
the Revision on Knative >= 1.21, its PodAutoscaler on <= 1.20. The operator records what a holder
had before it first touched it, on the holder itself and in the same write as the target, so
restoring never depends on memory:

    autoscaling.knative.dev/kpilot-original-target   the previous annotation value, or "absent"
    autoscaling.knative.dev/kpilot-policy            the AutoscalingPolicy that owns the change
    autoscaling.knative.dev/kpilot-changed-at        unix time of the last applied change (cooldown)

They live under Knative's autoscaling prefix because Knative copies every other annotation of a
Revision onto its Deployment and pod template (pkg/reconciler/revision/resources/meta.go): a
kpilot.dev/ key there changed the template's hash, and every write restarted the revision's pods.
Knative validates only the autoscaling keys it knows and passes the rest to the PodAutoscaler.
Holders written by earlier versions (kpilot.dev/original-target, ...) are read, and moved on
their next write. `annotation_delta` is the one place that decides what a write changes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Mapping

from kpilot.action import BAND_ANNOTATION, BASE_TARGET_ANNOTATION, PAUSED_ANNOTATION
from kpilot.observation import KNATIVE_DEFAULT_UTILIZATION, knative_target

TARGET = "autoscaling.knative.dev/target"
ORIGINAL = "autoscaling.knative.dev/kpilot-original-target"
OWNER = "autoscaling.knative.dev/kpilot-policy"
CHANGED_AT = "autoscaling.knative.dev/kpilot-changed-at"
LEGACY = {ORIGINAL: "kpilot.dev/original-target", OWNER: "kpilot.dev/policy", CHANGED_AT: "kpilot.dev/changed-at"}
PAUSED = PAUSED_ANNOTATION
BASE_TARGET = BASE_TARGET_ANNOTATION
BAND = BAND_ANNOTATION
ABSENT = "absent"
KNATIVE_DEFAULT_TARGET = 100.0   # container-concurrency-target-default
UTILIZATION = "autoscaling.knative.dev/target-utilization-percentage"
CLASS = "autoscaling.knative.dev/class"
METRIC = "autoscaling.knative.dev/metric"
KPA_CLASS = "kpa.autoscaling.knative.dev"


def recorded(annotations: Mapping[str, str], key: str) -> str | None:
    """A bookkeeping annotation (ORIGINAL, OWNER, CHANGED_AT), where this version writes it or where
    an earlier one did (LEGACY); None if neither."""
    return annotations[key] if key in annotations else annotations.get(LEGACY[key])


WINDOW = "autoscaling.knative.dev/window"
PANIC_WINDOW = "autoscaling.knative.dev/panic-window-percentage"
AGGREGATION = "autoscaling.knative.dev/metric-aggregation-algorithm"
# config-autoscaler's keys for the cluster-wide values of these annotations.
CLUSTER_KEYS = {WINDOW: "stable-window", PANIC_WINDOW: "panic-window-percentage",
                UTILIZATION: "container-concurrency-target-percentage"}
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ns": 1e-9}


def autoscaling_setting(annotations: Mapping[str, str], cluster: Mapping[str, str] | None,
                        key: str) -> tuple[str, str] | None:
    """(value, where it is set) of an autoscaling annotation `key` as Knative resolves it: the
    revision's annotation, else config-autoscaler's cluster-wide value (`cluster`, keyed as in
    CLUSTER_KEYS); None when neither sets it."""
    if key in annotations:
        return annotations[key], key
    if key in (cluster or {}):
        return cluster[key], f"config-autoscaler's {CLUSTER_KEYS[key]}"
    return None


def go_duration_s(text: str) -> float:
    """A duration as Go's time.ParseDuration reads it (60s, 1m30s, 1.5m, +60s, 60000ms) in
    seconds; NaN when unreadable."""
    text = text.strip()
    sign, body = (-1.0, text[1:]) if text[:1] == "-" else (1.0, text[1:] if text[:1] == "+" else text)
    if body == "0":
        return 0.0
    parts = _GO_DURATION.findall(body)
    if not parts or "".join(n + u for n, u in parts) != body:
        return math.nan
    return sign * sum(float(n) * _UNIT_S[u] for n, u in parts)


# The settings a policy's observation and target depend on: (annotation, the manifest's simulator.kpa
# key, Knative's default, how a value reads, what the one the policy trained with means to it).
_TRAINED_SETTINGS = (
    (WINDOW, "stable_window_s", 60.0, go_duration_s,
     "the policy observes concurrency averaged over the {:g} s stable window it was trained with"),
    (PANIC_WINDOW, "panic_window_percentage", 10.0, lambda text: parse_target(text),
     "the policy was trained with a panic window of {:g} %"),
    (UTILIZATION, "container_concurrency_target_percentage", 70.0, lambda text: parse_target(text),
     "the policy was trained with a target utilization of {:g} %"),
)


def unsupported_autoscaling(annotations: Mapping[str, str], trained_kpa: Mapping | None = None,
                            cluster: Mapping[str, str] | None = None) -> str | None:
    """Why the policy's target, or what it observes, would mean something else on this revision,
    or None. The policy sets a concurrency target for the KPA; under the HPA class the target is
    a CPU or memory figure, under `metric: rps` requests per second. Its concurrency features are
    Knative's averages over the windows it trained with (`trained_kpa`: the manifest's simulator
    kpa section; Knative's defaults where absent): another stable window, panic window or a
    weighted average would show it another load (a 300 s window reads a fifth of a new load).
    Its target is scaled by the utilization it trained with: at 100 % instead of 70 % the same
    target puts 43 % more load on each pod, and what it observes shifts with it.
    `cluster`: config-autoscaler's settings, keyed by the annotations that override them."""
    cls, metric = annotations.get(CLASS, KPA_CLASS), annotations.get(METRIC, "concurrency")
    if cls != KPA_CLASS:
        return f"autoscaling class {cls}: kpilot sets concurrency targets for the KPA only"
    if metric != "concurrency":
        return f"autoscaling metric {metric}: kpilot sets concurrency targets only"
    trained = trained_kpa or {}
    for key, trained_key, default, read, meaning in _TRAINED_SETTINGS:
        want = float(trained.get(trained_key, default))
        if setting := autoscaling_setting(annotations, cluster, key):
            value, where = read(setting[0]), f"{setting[1]} {setting[0]}"
        else:       # set nowhere: Knative runs its default, which a policy may not have trained with
            value, where = default, (f"Knative's default {default:g} (neither {key} nor config-autoscaler's "
                                     f"{CLUSTER_KEYS[key]} is set)")
        if not abs(value - want) < 1e-6:     # an unreadable value (NaN) differs too
            return f"{where}: {meaning.format(want)}"
    if annotations.get(AGGREGATION, "linear").strip().lower() != "linear":
        return (f"{AGGREGATION} {annotations[AGGREGATION]}: the policy was trained on Knative's linear "
                "window averages")
    return None


def parse_target(text: str | None) -> float:
    """An annotation's number as Knative's Go ParseFloat reads it (hex floats such as 0x1p4
    included); NaN when absent or unreadable."""
    if text is None:
        return math.nan
    try:
        return float(text)
    except ValueError:
        pass
    if not re.fullmatch(r"[+-]?0[xX][0-9a-fA-F.]+([pP][+-]?\d+)?", text.strip()):
        return math.nan       # float.fromhex would also read "ff"; Go wants the 0x
    try:
        return float.fromhex(text)
    except ValueError:
        return math.nan


@dataclass(frozen=True)
class Holder:
    kind: str                      # "Revision" | "PodAutoscaler"
    namespace: str
    name: str                      # the revision name (a PA is named after its revision)
    service: str | None
    resource_version: str | None
    annotations: Mapping[str, str]
    default_target: float = KNATIVE_DEFAULT_TARGET   # what Knative runs without the annotation
    container_concurrency: float = 0.0               # the revision's hard limit; 0: none
    # config-autoscaler's stable window, panic window and utilization, keyed by the annotations
    # that override them per revision (CLUSTER_KEYS): what the revision runs where it sets none.
    cluster_autoscaling: Mapping[str, str] = field(default_factory=dict)

    @property
    def current_target(self) -> float:
        """The target Knative runs (its target resolution, pkg/reconciler/autoscaling/resources/
        target.go): the revision's containerConcurrency where it sets one, else the cluster's
        default; an annotation replaces it, capped by containerConcurrency."""
        value = parse_target(self.annotations.get(TARGET))
        return knative_target(value if math.isfinite(value) and value > 0 else None, self.container_concurrency,
                              self.default_target)

    @property
    def utilization(self) -> float:
        """The share of the target Knative aims for per pod: the revision's
        target-utilization-percentage annotation (1-100), else the cluster's
        container-concurrency-target-percentage, else Knative's default 70 %."""
        setting = autoscaling_setting(self.annotations, self.cluster_autoscaling, UTILIZATION)
        if setting is None:
            return KNATIVE_DEFAULT_UTILIZATION
        try:
            value = float(setting[0])
        except ValueError:
            return KNATIVE_DEFAULT_UTILIZATION
        return value / 100.0 if math.isfinite(value) and 1.0 <= value <= 100.0 else KNATIVE_DEFAULT_UTILIZATION

    @property
    def owner(self) -> str | None:
        return recorded(self.annotations, OWNER) if self.original is not None else None

    @property
    def original(self) -> str | None:
        return recorded(self.annotations, ORIGINAL)

    @property
    def last_change_at(self) -> float | None:
        try:
            return float(recorded(self.annotations, CHANGED_AT))
        except (TypeError, ValueError):
            return None


@dataclass(frozen=True)
class Assert:
    """Set the target, recording the original on first touch. `expected` is the target annotation
    the decision read (ABSENT: none); None: not checked."""
    target: str
    policy: str
    now: float
    expected: str | None = None
    # A policy that no longer exists whose holder this one takes over, its original kept.
    adopt: str | None = None


@dataclass(frozen=True)
class Restore:
    """Put back what the holder had before the operator touched it, while `owner` (the policy
    recorded when the decision was made; None: any) still owns it: recomputed after a conflict,
    a restore never undoes another policy's take-over made in between."""

    owner: str | None = None


def annotation_delta(annotations: Mapping[str, str], intent: Assert | Restore) -> dict[str, str | None]:
    """The annotation changes an intent needs on a holder as it is NOW (None = remove).

    Computed again on the fresh object after a conflict, so a concurrent change is never lost:
    the original is recorded only if absent, and a restore only touches what the operator owns.
    An Assert changes nothing on a holder another policy now owns, or whose target is no longer
    the one its decision read (someone set it in between): the next tick decides from what is there.
    """
    original, owner = recorded(annotations, ORIGINAL), recorded(annotations, OWNER)
    legacy = {old: None for old in LEGACY.values() if old in annotations}   # moved on any write
    if isinstance(intent, Restore):
        if original is None or (intent.owner is not None and owner != intent.owner):
            return {}
        return {TARGET: None if original == ABSENT else original,
                ORIGINAL: None, OWNER: None, CHANGED_AT: None, **legacy}
    if original is not None and owner != intent.policy and (intent.adopt is None or owner != intent.adopt):
        return {}
    if intent.expected is not None and annotations.get(TARGET, ABSENT) != intent.expected:
        return {}
    delta: dict[str, str | None] = {ORIGINAL: annotations.get(TARGET, ABSENT) if original is None else original,
                                    OWNER: intent.policy}
    changed_at = recorded(annotations, CHANGED_AT)
    if annotations.get(TARGET) != intent.target:
        delta[TARGET] = intent.target
        # Whole seconds, never later than the change: a cooldown of one interval skips no decision.
        delta[CHANGED_AT] = f"{math.floor(intent.now)}"
    elif changed_at is not None:
        delta[CHANGED_AT] = changed_at
    delta = {k: v for k, v in delta.items() if annotations.get(k) != v}
    return {**delta, **legacy}
