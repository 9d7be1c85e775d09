"""The decision for one tick, as a pure function (no I/O, no clock, no Kopf).

    decide(policy name, spec, services, holders, readings, policy, memory, now)
        -> Plan(writes, per-service status, updated memory)

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
their next write.

A platform team may give a Service a base target, the static target tuned on its own traffic
(`kpilot tune` prints both), on the Service:

    kpilot.dev/base-target       the Service's own target; the policy moves within a band around it
    kpilot.dev/band              the band's factor (>= 1; 1 pins the base target), else the spec's, else 1.5

and it is also the target the Service falls back to when its observations go stale.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Mapping

import numpy as np

from kpilot.action import BAND_ANNOTATION, BASE_TARGET_ANNOTATION, PAUSED_ANNOTATION
from kpilot.observation import KNATIVE_DEFAULT_UTILIZATION, RAW_FIELDS, encode
from kpilot_operator import guardrails
from kpilot_operator.spec import PolicySpec, step_ratio

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


def unsupported_autoscaling(annotations: Mapping[str, str], trained_kpa: Mapping | None = None,
                            cluster: Mapping[str, str] | None = None) -> str | None:
    """Why the policy's target, or what it observes, would mean something else on this revision,
    or None. The policy sets a concurrency target for the KPA; under the HPA class the target is
    a CPU or memory figure, under `metric: rps` requests per second. Its concurrency features are
    Knative's averages over the windows it trained with (`trained_kpa`: the manifest's simulator
    kpa section; Knative's defaults where absent): another stable window, panic window or a
    weighted average would show it another load (a 300 s window reads a fifth of a new load).
    `cluster`: config-autoscaler's settings, keyed by the annotations that override them."""
    cls, metric = annotations.get(CLASS, KPA_CLASS), annotations.get(METRIC, "concurrency")
    if cls != KPA_CLASS:
        return f"autoscaling class {cls}: kpilot sets concurrency targets for the KPA only"
    if metric != "concurrency":
        return f"autoscaling metric {metric}: kpilot sets concurrency targets only"
    trained = trained_kpa or {}
    if window := autoscaling_setting(annotations, cluster, WINDOW):
        want = float(trained.get("stable_window_s", 60.0))
        if not abs(go_duration_s(window[0]) - want) < 1e-6:
            return (f"{window[1]} {window[0]}: the policy observes concurrency averaged over the "
                    f"{want:g} s stable window it was trained with")
    if panic := autoscaling_setting(annotations, cluster, PANIC_WINDOW):
        want = float(trained.get("panic_window_percentage", 10.0))
        if not abs(parse_target(panic[0]) - want) < 1e-6:
            return f"{panic[1]} {panic[0]}: the policy was trained with a panic window of {want:g} %"
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


# What the metrics adapters provide per revision: the raw fields except the two the operator knows.
READING_FIELDS = tuple(f for f in RAW_FIELDS if f not in ("target", "time_of_day_s"))


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
        cc = self.container_concurrency
        value = parse_target(self.annotations.get(TARGET))
        if not (math.isfinite(value) and value > 0):
            return cc if cc > 0 else self.default_target
        return min(value, cc) if cc > 0 else value

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
class ServiceView:
    name: str
    namespace: str
    paused: bool
    traffic_revisions: tuple[str, ...]
    body: Mapping = field(default_factory=dict, compare=False, repr=False)   # for Events
    base_target: float | None = None     # kpilot.dev/base-target
    band: float | None = None            # kpilot.dev/band (None: the spec's)
    invalid: str = ""                    # why an annotation above cannot be used (the Service is held)


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


@dataclass(frozen=True)
class Write:
    holder: Holder
    intent: Assert | Restore
    service: str | None
    reason: str
    previous: float
    target: float | None          # None for a restore to "absent"


def with_note(message: str, note: str) -> str:
    """A status message with one more clause."""
    return f"{message}; {note}" if message else note


def rounded(observation: Mapping[str, float]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in observation.items()}


@dataclass
class ServiceStatus:
    """One Service's outcome this tick. Where its traffic splits over several revisions,
    `by_revision` keeps each one's, observation and decision included, and the Service-level fields
    are those of the last revision recorded: the revisions left alone come first (not found,
    another policy's, unsupported), then those the policy decides for, each in status.traffic
    order; a failed write makes the Service WriteFailed."""
    name: str
    revisions: list[str]
    reason: str
    observation: dict | None = None
    decision: float | None = None
    applied: float | None = None
    message: str = ""
    bounds: tuple[float, float] | None = None     # the Service's band, where it has a base target
    by_revision: dict[str, dict] = field(default_factory=dict)

    def record(self, revision: str) -> None:
        """Keep this revision's outcome: a Service splitting traffic shows each one's."""
        entry = {"name": revision, "reason": self.reason}
        if self.observation is not None:
            entry["lastObservation"] = rounded(self.observation)
        if self.decision is not None:
            entry["lastDecision"] = self.decision
        if self.applied is not None:
            entry["appliedTarget"] = self.applied
        if self.message:
            entry["message"] = self.message
        self.by_revision[revision] = entry

    def as_dict(self, now_iso: str) -> dict:
        out = {"name": self.name, "revisions": self.revisions, "reason": self.reason, "time": now_iso}
        if len(self.by_revision) > 1:
            out["revisionStatus"] = [self.by_revision[r] for r in self.revisions if r in self.by_revision]
        if self.bounds is not None:
            out["bounds"] = {"minTarget": self.bounds[0], "maxTarget": self.bounds[1]}
        if self.observation is not None:
            out["lastObservation"] = rounded(self.observation)
        if self.decision is not None:
            out["lastDecision"] = self.decision
        if self.applied is not None:
            out["appliedTarget"] = self.applied
        if self.message:
            out["message"] = self.message
        return out


@dataclass
class Plan:
    writes: list[Write]
    services: list[ServiceStatus]
    last_fresh: dict[str, float]          # revision -> last time its observation was usable
    decisions: int = 0
    stale: int = 0


def usable(reading: Mapping[str, float] | None, now: float, staleness_s: float) -> bool:
    if not reading or any(f not in reading or not math.isfinite(reading[f]) for f in READING_FIELDS):
        return False
    sample_time = reading.get("sample_time")
    return sample_time is None or now - sample_time <= staleness_s


def decide(*, policy_name: str, spec: PolicySpec, services: list[ServiceView],
           holders: Mapping[str, Holder], readings: Mapping[str, Mapping[str, float]],
           policy, last_fresh: Mapping[str, float], now: float,
           gone_owners: frozenset[str] | set[str] = frozenset()) -> Plan:
    """One tick for one AutoscalingPolicy. `policy` is an ExportedPolicy (None only in Off mode).
    `gone_owners`: policies recorded as owners on holders that no longer exist (their finalizer
    was removed by hand): what this policy selects of theirs it takes over, their original kept."""
    writes: list[Write] = []
    statuses: list[ServiceStatus] = []
    fresh = dict(last_fresh)
    kept: set[str] = set()            # owned holders that must NOT be restored this tick
    selected = {s.name for s in services}
    trained_kpa = ((policy.manifest.get("manifest") or {}).get("simulator") or {}).get("kpa") \
        if policy is not None else None

    def restore(holder: Holder, service: str | None, reason: str) -> None:
        # Its own, or a gone policy's it selects (taken over to be let go, its original kept).
        if holder.owner == policy_name or holder.owner in gone_owners and service in selected:
            # The original goes back as it was written, whatever it says; what Knative will run
            # then is resolved as any target is (an unreadable one: the default).
            original = holder.original
            after = replace(holder, annotations={**holder.annotations, TARGET: original})
            writes.append(Write(holder, Restore(holder.owner), service, reason, holder.current_target,
                                None if original == ABSENT else after.current_target))

    def assert_target(holder: Holder, service: str, reason: str, previous: float, target: float) -> None:
        # `expected`: the annotation this decision read, so a change made in between is not overwritten.
        writes.append(Write(holder, Assert(guardrails.format_target(target), policy_name, now,
                                           holder.annotations.get(TARGET, ABSENT),
                                           adopt=holder.owner if holder.owner in gone_owners else None),
                            service, reason, previous, target))

    if spec.mode == "Off":
        # A paused Service keeps what it runs (a hand-set target too) until the pause is lifted;
        # leaving the selector or deleting the policy is a deliberate release and restores it.
        paused = {s.name for s in services if s.paused}
        left_by: dict[str, list[str]] = {}     # service -> "revision (policy)" restored for a gone policy
        for holder in holders.values():
            if holder.service not in paused:
                restore(holder, holder.service, "Off")
                if holder.owner in gone_owners and holder.service in selected:
                    left_by.setdefault(holder.service, []).append(f"{holder.name} (policy {holder.owner})")

        def off_message(s: ServiceView) -> str:
            if s.paused:
                return f"{PAUSED}=true on the Service: not restored until it is removed"
            if s.name in left_by:
                return f"restored what a policy that is gone left: {', '.join(sorted(left_by[s.name]))}"
            return ""
        return Plan(writes, [ServiceStatus(s.name, list(s.traffic_revisions), "Paused" if s.paused else "Off",
                                           message=off_message(s)) for s in services], {})

    # 1. Which (service, holder) pairs the policy decides for this tick.
    candidates: list[tuple[ServiceStatus, Holder]] = []
    bounds_of: dict[str, tuple[float, float]] = {}     # service -> (min, max) target
    for svc in services:
        status = ServiceStatus(svc.name, list(svc.traffic_revisions), "Pending")
        statuses.append(status)
        if svc.paused or svc.invalid:
            # Held as they are, every revision of the Service, with or without traffic: a revision
            # that loses its traffic while paused keeps a hand-set target (as Off keeps it).
            kept.update(h.name for h in holders.values() if h.service == svc.name)
            kept.update(svc.traffic_revisions)
            if svc.paused:
                status.reason, status.message = "Paused", f"{PAUSED}=true on the Service"
            else:
                status.reason, status.message = "InvalidAnnotation", f"{svc.invalid}; holding the current target"
            continue
        bounds_of[svc.name] = guardrails.service_bounds(spec.min_target, spec.max_target, svc.base_target,
                                                        svc.band or spec.band)
        if svc.base_target is not None:
            status.bounds = bounds_of[svc.name]
        if not svc.traffic_revisions:
            status.reason, status.message = "NoTraffic", "status.traffic names no revision yet"
            continue
        for rev in svc.traffic_revisions:
            holder = holders.get(rev)
            if holder is None:
                status.reason, status.message = "RevisionNotFound", f"{rev} not found"
            elif holder.owner not in (None, policy_name) and holder.owner not in gone_owners:
                status.reason, status.message = "ClaimedByOtherPolicy", f"{rev} is managed by {holder.owner}"
            elif (why := unsupported_autoscaling(holder.annotations, trained_kpa,
                                                 holder.cluster_autoscaling)) is not None:
                status.reason, status.message = "UnsupportedAutoscaling", f"{rev}: {why}"
            else:
                candidates.append((status, holder))
                kept.add(rev)
                continue
            status.record(rev)

    # 2. One batched inference over every revision with a usable observation.
    base_of = {svc.name: svc.base_target for svc in services}
    live = [(st, h) for st, h in candidates if usable(readings.get(h.name), now, spec.staleness_s)]
    proposals = np.zeros(0)
    if live:
        raw = {f: np.array([readings[h.name][f] for _, h in live], dtype=np.float64) for f in READING_FIELDS}
        raw["target"] = np.array([h.current_target for _, h in live])
        raw["time_of_day_s"] = np.full(len(live), now % 86400.0)
        # The policy's smoothing (if it was trained with one) is part of its decision, except on a
        # revision it does not manage yet; the spec's guardrails then apply to the smoothed target.
        first = np.array([h.owner != policy_name for _, h in live])
        # A policy that observes a base target (observation version 4) reads the Service's, or
        # where it has none the revision's current target.
        base = np.array([base_of[st.name] if base_of[st.name] is not None else h.current_target
                         for st, h in live]) if policy.observes_base else None
        proposals = np.asarray(policy.action_spec.smooth(policy.target(encode(**raw, base_target=base)),
                                                         raw["target"], first), dtype=np.float64).reshape(-1)
    proposal_of = {h.name: float(p) for (_, h), p in zip(live, proposals)}

    # 3. Guardrails, staleness and the write for each revision.
    plan = Plan(writes, statuses, fresh)
    for status, holder in candidates:
        previous = holder.current_target
        # This revision's outcome, recorded below: nothing carried over from another revision.
        status.applied, status.message, status.observation, status.decision = None, "", None, None
        min_target, max_target = bounds_of[status.name]
        if holder.container_concurrency > 0:     # Knative would cap a higher target: do not write one
            max_target = min(max_target, holder.container_concurrency)
            min_target = min(min_target, max_target)
        reading = readings.get(holder.name)
        if holder.name in proposal_of:
            plan.decisions += 1
            fresh[holder.name] = min(now, reading.get("sample_time") or now)
            status.observation = {f: reading[f] for f in READING_FIELDS}
            status.decision = guardrails.round_target(proposal_of[holder.name])
            g = guardrails.guard(previous=previous, proposed=proposal_of[holder.name],
                                 min_target=min_target, max_target=max_target,
                                 max_step_ratio=step_ratio(spec, policy.action_spec.max_step_ratio),
                                 cooldown_s=spec.cooldown_s,
                                 last_change_at=holder.last_change_at, now=now)
            status.reason, status.applied = g.reason, g.target
            if g.changed and spec.mode == "DryRun":
                status.reason, status.applied = "DryRun", previous
                status.message = f"would set {guardrails.format_target(g.target)} ({g.reason})"
            elif g.changed or holder.owner in gone_owners:     # taking over records the owner
                assert_target(holder, status.name, g.reason, previous, g.target)
            if policy.observes_base and base_of[status.name] is None:
                # It runs, but on a base that follows its own decisions: say so where people look.
                note = f"the policy reads a {BASE_TARGET} and this Service has none: it reads the current target"
                status.message = with_note(status.message, note)
            if holder.owner in gone_owners:
                note = (f"{holder.name} was managed by {holder.owner}, which no longer exists: "
                        + ("would take it over" if spec.mode == "DryRun" else "taken over") + ", its original kept")
                status.message = with_note(status.message, note)
            status.record(holder.name)
            continue
        # No usable observation: hold, then fall back once it has been stale for too long.
        plan.stale += 1
        sample_time = (reading or {}).get("sample_time")
        since = fresh.setdefault(holder.name, sample_time if sample_time is not None else now)
        stale_for = now - since
        if stale_for <= spec.staleness_s:
            status.reason, status.applied = "MetricsStaleHolding", previous
            status.message = f"no usable observation for {stale_for:.0f}s; fallback after {spec.staleness_s:.0f}s"
            # Holding keeps the target, not one outside the bounds (a new base target or band):
            # that moves inside at once, as a fresh decision would.
            if not guardrails.inside_bounds(previous, min_target, max_target):
                inside = guardrails.round_within(guardrails.clamp_to_bounds(previous, min_target, max_target),
                                                 min_target, max_target)
                if spec.mode == "DryRun":
                    status.message += f"; would move inside the bounds to {guardrails.format_target(inside)}"
                else:
                    status.applied = inside
                    status.message += f"; moved inside the bounds to {guardrails.format_target(inside)}"
                    assert_target(holder, status.name, "Bounded", previous, inside)
        elif base_of[status.name] is not None or spec.fallback_target is not None:
            # The Service's own base target first: it was tuned on this Service's traffic.
            fallback = base_of[status.name] if base_of[status.name] is not None else spec.fallback_target
            target = guardrails.round_target(guardrails.clamp_to_bounds(fallback, min_target, max_target))
            status.reason, status.applied = "Fallback", target
            status.message = f"no usable observation for {stale_for:.0f}s"
            if spec.mode == "DryRun":        # it writes nothing: say what it would do
                status.reason, status.applied = "DryRun", previous
                status.message += f"; would fall back to {guardrails.format_target(target)}"
            elif abs(target - previous) > 1e-9:
                assert_target(holder, status.name, "Fallback", previous, target)
        elif spec.mode == "DryRun":
            status.reason, status.applied = "DryRun", previous
            status.message = (f"no usable observation for {stale_for:.0f}s and no fallbackTarget; "
                              "would restore the original target")
        else:
            status.reason = "FallbackRestored"
            status.message = f"no usable observation for {stale_for:.0f}s and no fallbackTarget"
            kept.discard(holder.name)
            restore(holder, status.name, "FallbackRestored")
            status.applied = writes[-1].target if writes and writes[-1].holder is holder else previous
        status.record(holder.name)

    # 4. Whatever this policy owns but no longer manages (left the selector, lost traffic): restore;
    # so are a gone policy's revisions of a Service it selects that carry no traffic.
    for holder in holders.values():
        if holder.name not in kept and not any(w.holder is holder for w in writes):
            restore(holder, holder.service, "Released")
    if spec.mode == "DryRun":
        plan.writes = []
    return plan
