"""The decision for one tick, as a pure function (no I/O, no clock, no Kopf).

    decide(policy name, spec, services, holders, readings, policy, memory, now)
        -> Plan(writes, per-service status, updated memory)

What it reads of and writes on each holder (the Revision, or its PodAutoscaler on Knative <= 1.20)
is in kpilot_operator.annotations. A platform team may give a Service a base target, the static
target tuned on its own traffic (`kpilot tune` prints both), on the Service:

    kpilot.dev/base-target       the Service's own target; the policy moves within a band around it
    kpilot.dev/band              the band's factor (>= 1; 1 pins the base target), else the spec's, else 1.5

and it is also the target the Service falls back to when its observations go stale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Mapping

import numpy as np

from kpilot.observation import RAW_FIELDS, encode
from kpilot_operator import guardrails
from kpilot_operator.annotations import (ABSENT, BASE_TARGET, PAUSED, TARGET, Assert, Holder, Restore,
                                         unsupported_autoscaling)
from kpilot_operator.spec import PolicySpec, step_ratio

# What the metrics adapters provide per revision: the raw fields except the two the operator knows.
READING_FIELDS = tuple(f for f in RAW_FIELDS if f not in ("target", "time_of_day_s"))


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
