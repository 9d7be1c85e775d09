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
from kpilot.policy import ExportedPolicy
from kpilot_operator import guardrails
from kpilot_operator.annotations import (ABSENT, BASE_TARGET, PAUSED, TARGET, Assert, Holder, Restore,
                                         unsupported_autoscaling)
from kpilot_operator.spec import PolicySpec, step_ratio

# What the metrics adapters provide per revision: the raw fields except the two the operator knows.
READING_FIELDS = tuple(f for f in RAW_FIELDS if f not in ("target", "time_of_day_s"))
# The longest message a status keeps (a condition's, a Service's): whatever goes into one, the
# status must stay far under etcd's request limit, or every status write fails.
MESSAGE_LIMIT = 1000


@dataclass(frozen=True)
class ServiceView:
    name: str
    namespace: str
    paused: bool | None                  # kpilot.dev/paused; None: neither true nor false (`invalid` says so)
    traffic_revisions: tuple[str, ...]
    body: Mapping = field(default_factory=dict, compare=False, repr=False)   # for Events
    base_target: float | None = None     # kpilot.dev/base-target
    band: float | None = None            # kpilot.dev/band (None: the spec's)
    invalid: str = ""                    # why an annotation above cannot be used (the Service is held)

    @property
    def keeps_targets(self) -> bool:
        """Whether its revisions keep what they run, in Off too: paused, or a pause kpilot cannot
        read (it may have meant one, and a restore would lose a target set by hand)."""
        return self.paused is not False


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
    described: str | None = None                  # the revision the Service-level fields are about

    def record(self, revision: str) -> None:
        """Keep this revision's outcome: a Service splitting traffic shows each one's."""
        self.described = revision
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
            entries = [self.by_revision[r] for r in self.revisions if r in self.by_revision]
            out["revisionStatus"] = [{**e, "message": e["message"][:MESSAGE_LIMIT]} if "message" in e else e
                                     for e in entries]
        if self.bounds is not None:
            out["bounds"] = {"minTarget": self.bounds[0], "maxTarget": self.bounds[1]}
        if self.observation is not None:
            out["lastObservation"] = rounded(self.observation)
        if self.decision is not None:
            out["lastDecision"] = self.decision
        if self.applied is not None:
            out["appliedTarget"] = self.applied
        if self.message:
            out["message"] = self.message[:MESSAGE_LIMIT]
        return out


@dataclass
class Plan:
    writes: list[Write]
    services: list[ServiceStatus]
    last_fresh: dict[str, float]          # revision -> last time its observation was usable
    decisions: int = 0
    stale: int = 0
    invalid: int = 0                      # proposals that were not finite numbers (no decision)


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
    decision = _Decision(policy_name, spec, services, holders, readings, policy, dict(last_fresh), now,
                         gone_owners)
    if spec.mode == "Off":
        return decision.off()
    candidates = decision.select_candidates()
    proposals = decision.propose(candidates)
    for status, holder in candidates:
        decision.decide_revision(status, holder, proposals.get(holder.name))
    decision.release_unmanaged()
    return decision.plan()


@dataclass
class _Decision:
    """One policy's decision for one tick: its inputs, and what its phases share (writes in order,
    statuses, freshness)."""
    policy_name: str
    spec: PolicySpec
    services: list[ServiceView]
    holders: Mapping[str, Holder]
    readings: Mapping[str, Mapping[str, float]]
    policy: ExportedPolicy | None
    fresh: dict[str, float]               # revision -> last time its observation was usable
    now: float
    gone_owners: frozenset[str] | set[str]
    writes: list[Write] = field(default_factory=list)
    statuses: list[ServiceStatus] = field(default_factory=list)
    kept: set[str] = field(default_factory=set)            # owned holders that must NOT be restored this tick
    bounds_of: dict[str, tuple[float, float]] = field(default_factory=dict)   # service -> (min, max) target
    decisions: int = 0
    stale: int = 0
    invalid: int = 0
    selected: set[str] = field(init=False)                 # the Services this policy selects
    base_of: dict[str, float | None] = field(init=False)   # service -> its kpilot.dev/base-target

    def __post_init__(self) -> None:
        self.selected = {s.name for s in self.services}
        self.base_of = {s.name: s.base_target for s in self.services}

    def off(self) -> Plan:
        """Off: restore what this policy (or a gone one it selects) wrote, except on a paused Service."""
        # A paused Service keeps what it runs (a hand-set target too) until the pause is lifted;
        # leaving the selector or deleting the policy is a deliberate release and restores it.
        paused = {s.name for s in self.services if s.keeps_targets}
        left_by: dict[str, list[str]] = {}     # service -> "revision (policy)" restored for a gone policy
        for holder in self.holders.values():
            if holder.service not in paused:
                self._restore(holder, holder.service, "Off")
                if holder.owner in self.gone_owners and holder.service in self.selected:
                    left_by.setdefault(holder.service, []).append(f"{holder.name} (policy {holder.owner})")

        def off_message(s: ServiceView) -> str:
            if s.paused:
                return f"{PAUSED}=true on the Service: not restored until it is removed"
            if s.paused is None:
                return f"{s.invalid}; holding the current target: not restored until it is fixed"
            if s.name in left_by:
                return f"restored what a policy that is gone left: {', '.join(sorted(left_by[s.name]))}"
            return ""

        def off_reason(s: ServiceView) -> str:
            return "Paused" if s.paused else "InvalidAnnotation" if s.paused is None else "Off"
        statuses = [ServiceStatus(s.name, list(s.traffic_revisions), off_reason(s), message=off_message(s))
                    for s in self.services]
        return Plan(self.writes, statuses, {})

    def select_candidates(self) -> list[tuple[ServiceStatus, Holder]]:
        """Which (service, holder) pairs the policy decides for; those it leaves alone are recorded."""
        trained_kpa = ((self.policy.manifest.get("manifest") or {}).get("simulator") or {}).get("kpa") \
            if self.policy is not None else None
        candidates: list[tuple[ServiceStatus, Holder]] = []
        for svc in self.services:
            status = ServiceStatus(svc.name, list(svc.traffic_revisions), "Pending")
            self.statuses.append(status)
            if svc.paused or svc.invalid:
                self._hold_service(svc, status)
                continue
            self.bounds_of[svc.name] = guardrails.service_bounds(self.spec.min_target, self.spec.max_target,
                                                                 svc.base_target, svc.band or self.spec.band)
            if svc.base_target is not None:
                status.bounds = self.bounds_of[svc.name]
            if not svc.traffic_revisions:
                status.reason, status.message = "NoTraffic", "status.traffic names no revision yet"
                continue
            for rev in svc.traffic_revisions:
                holder = self.holders.get(rev)
                left_alone = self._why_left_alone(rev, holder, trained_kpa)
                if left_alone is None:
                    candidates.append((status, holder))
                    self.kept.add(rev)
                else:
                    status.reason, status.message = left_alone
                    status.record(rev)
        return candidates

    def _hold_service(self, svc: ServiceView, status: ServiceStatus) -> None:
        """A paused Service, or one whose annotations cannot be used: every revision keeps its target."""
        # Held as they are, every revision of the Service, with or without traffic: a revision
        # that loses its traffic while paused keeps a hand-set target (as Off keeps it).
        self.kept.update(h.name for h in self.holders.values() if h.service == svc.name)
        self.kept.update(svc.traffic_revisions)
        if svc.paused:
            status.reason, status.message = "Paused", f"{PAUSED}=true on the Service"
        else:
            status.reason, status.message = "InvalidAnnotation", f"{svc.invalid}; holding the current target"

    def _why_left_alone(self, rev: str, holder: Holder | None,
                        trained_kpa: Mapping | None) -> tuple[str, str] | None:
        """(reason, message) where the policy must not decide for this traffic revision, else None."""
        if holder is None:
            return "RevisionNotFound", f"{rev} not found"
        if holder.owner not in (None, self.policy_name) and holder.owner not in self.gone_owners:
            return "ClaimedByOtherPolicy", f"{rev} is managed by {holder.owner}"
        why = unsupported_autoscaling(holder.annotations, trained_kpa, holder.cluster_autoscaling)
        if why is not None:
            return "UnsupportedAutoscaling", f"{rev}: {why}"
        return None

    def propose(self, candidates: list[tuple[ServiceStatus, Holder]]) -> dict[str, float]:
        """One batched inference over every revision with a usable observation: revision -> proposal."""
        policy, readings, now = self.policy, self.readings, self.now
        live = [(st, h) for st, h in candidates if usable(readings.get(h.name), now, self.spec.staleness_s)]
        if not live:
            return {}
        raw = {f: np.array([readings[h.name][f] for _, h in live], dtype=np.float64) for f in READING_FIELDS}
        raw["target"] = np.array([h.current_target for _, h in live])
        raw["time_of_day_s"] = np.full(len(live), now % 86400.0)
        # The policy's smoothing (if it was trained with one) is part of its decision, except on a
        # revision it does not manage yet; the spec's guardrails then apply to the smoothed target.
        first = np.array([h.owner != self.policy_name for _, h in live])
        # A policy that observes a base target (observation version 4) reads the Service's, or
        # where it has none the revision's current target.
        base = np.array([self.base_of[st.name] if self.base_of[st.name] is not None else h.current_target
                         for st, h in live]) if policy.observes_base else None
        proposals = np.asarray(policy.action_spec.smooth(policy.target(encode(**raw, base_target=base)),
                                                         raw["target"], first), dtype=np.float64).reshape(-1)
        return {h.name: float(p) for (_, h), p in zip(live, proposals)}

    def decide_revision(self, status: ServiceStatus, holder: Holder, proposal: float | None) -> None:
        """One revision's target: its proposal within the guardrails, else what staleness calls for."""
        # This revision's outcome, recorded below: nothing carried over from another revision.
        status.applied, status.message, status.observation, status.decision = None, "", None, None
        bounds = self._revision_bounds(status.name, holder)
        if proposal is not None:
            self._guard_proposal(status, holder, proposal, bounds)
        else:
            self._without_observation(status, holder, bounds)
        status.record(holder.name)

    def _revision_bounds(self, service: str, holder: Holder) -> tuple[float, float]:
        """The Service's bounds, lowered to what the revision's containerConcurrency lets Knative run."""
        min_target, max_target = self.bounds_of[service]
        if holder.container_concurrency > 0:     # Knative would cap a higher target: do not write one
            max_target = min(max_target, holder.container_concurrency)
            min_target = min(min_target, max_target)
        return min_target, max_target

    def _guard_proposal(self, status: ServiceStatus, holder: Holder, proposal: float,
                        bounds: tuple[float, float]) -> None:
        """A usable observation: the policy's proposal within the guardrails, written unless DryRun."""
        spec, previous, reading = self.spec, holder.current_target, self.readings[holder.name]
        self.fresh[holder.name] = min(self.now, reading.get("sample_time") or self.now)
        status.observation = {f: reading[f] for f in READING_FIELDS}
        g = guardrails.guard(previous=previous, proposed=proposal, min_target=bounds[0], max_target=bounds[1],
                             max_step_ratio=step_ratio(spec, self.policy.action_spec.max_step_ratio),
                             cooldown_s=spec.cooldown_s, last_change_at=holder.last_change_at, now=self.now)
        status.reason, status.applied = g.reason, g.target
        if g.reason == "InvalidDecision":
            # A network that overflows (inf - inf) loads like any other and answers NaN: no decision,
            # and none in the status (the API server refuses a status with NaN in it, and so every patch).
            self.invalid += 1
            status.message = (f"{holder.name}: the policy's output is not a finite number ({proposal:g}); "
                              "holding the current target (check the policy file)")
            return
        self.decisions += 1
        status.decision = guardrails.round_target(proposal)
        if g.changed and spec.mode == "DryRun":
            status.reason, status.applied = "DryRun", previous
            status.message = f"would set {guardrails.format_target(g.target)} ({g.reason})"
        elif g.changed or holder.owner in self.gone_owners:     # taking over records the owner
            self._assert(holder, status.name, g.reason, previous, g.target)
        if self.policy.observes_base and self.base_of[status.name] is None:
            # It runs, but on a base that follows its own decisions: say so where people look.
            note = f"the policy reads a {BASE_TARGET} and this Service has none: it reads the current target"
            status.message = with_note(status.message, note)
        if holder.owner in self.gone_owners:
            note = (f"{holder.name} was managed by {holder.owner}, which no longer exists: "
                    + ("would take it over" if spec.mode == "DryRun" else "taken over")
                    + ", its original kept")
            status.message = with_note(status.message, note)

    def _without_observation(self, status: ServiceStatus, holder: Holder,
                             bounds: tuple[float, float]) -> None:
        """No usable observation: hold the target a while, then fall back, else restore the original."""
        self.stale += 1
        sample_time = (self.readings.get(holder.name) or {}).get("sample_time")
        since = self.fresh.setdefault(holder.name, sample_time if sample_time is not None else self.now)
        stale_for = self.now - since
        if stale_for <= self.spec.staleness_s:
            self._hold_stale(status, holder, stale_for, bounds)
        elif self.base_of[status.name] is not None or self.spec.fallback_target is not None:
            self._fall_back(status, holder, stale_for, bounds)
        else:
            self._restore_stale(status, holder, stale_for)

    def _hold_stale(self, status: ServiceStatus, holder: Holder, stale_for: float,
                    bounds: tuple[float, float]) -> None:
        """Not stale for long yet: keep the target (moved inside the bounds if it is outside)."""
        spec, previous, (min_target, max_target) = self.spec, holder.current_target, bounds
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
                self._assert(holder, status.name, "Bounded", previous, inside)

    def _fall_back(self, status: ServiceStatus, holder: Holder, stale_for: float,
                   bounds: tuple[float, float]) -> None:
        """Stale too long: the Service's base target, else the spec's fallbackTarget, within the bounds."""
        spec, previous, base = self.spec, holder.current_target, self.base_of[status.name]
        # The Service's own base target first: it was tuned on this Service's traffic.
        fallback = base if base is not None else spec.fallback_target
        target = guardrails.round_target(guardrails.clamp_to_bounds(fallback, *bounds))
        status.reason, status.applied = "Fallback", target
        status.message = f"no usable observation for {stale_for:.0f}s"
        if spec.mode == "DryRun":        # it writes nothing: say what it would do
            status.reason, status.applied = "DryRun", previous
            status.message += f"; would fall back to {guardrails.format_target(target)}"
        elif abs(target - previous) > 1e-9:
            self._assert(holder, status.name, "Fallback", previous, target)

    def _restore_stale(self, status: ServiceStatus, holder: Holder, stale_for: float) -> None:
        """Stale too long and nothing to fall back to: the original target goes back."""
        previous = holder.current_target
        if self.spec.mode == "DryRun":
            status.reason, status.applied = "DryRun", previous
            status.message = (f"no usable observation for {stale_for:.0f}s and no fallbackTarget; "
                              "would restore the original target")
            return
        status.reason = "FallbackRestored"
        status.message = f"no usable observation for {stale_for:.0f}s and no fallbackTarget"
        self.kept.discard(holder.name)
        self._restore(holder, status.name, "FallbackRestored")
        # What the restore wrote; nothing where the revision has no original to restore.
        last = self.writes[-1] if self.writes else None
        status.applied = last.target if last is not None and last.holder is holder else previous

    def release_unmanaged(self) -> None:
        """Restore the holders this policy (or a gone one) wrote but no longer manages."""
        # Whatever this policy owns but no longer manages (left the selector, lost traffic): restore;
        # so are a gone policy's revisions of a Service it selects that carry no traffic.
        for holder in self.holders.values():
            if holder.name not in self.kept and not any(w.holder is holder for w in self.writes):
                self._restore(holder, holder.service, "Released")

    def plan(self) -> Plan:
        """The tick's outcome; DryRun writes nothing."""
        # Only revisions that still exist are remembered: every revision ever seen would pile up.
        fresh = {rev: t for rev, t in self.fresh.items() if rev in self.holders}
        return Plan([] if self.spec.mode == "DryRun" else self.writes, self.statuses, fresh,
                    self.decisions, self.stale, self.invalid)

    def _restore(self, holder: Holder, service: str | None, reason: str) -> None:
        """Put the original target back on a holder this policy may let go; any other it leaves alone."""
        # Its own, or a gone policy's it selects (taken over to be let go, its original kept).
        if holder.owner == self.policy_name or holder.owner in self.gone_owners and service in self.selected:
            # The original goes back as it was written, whatever it says; what Knative will run
            # then is resolved as any target is (an unreadable one: the default).
            original = holder.original
            after = replace(holder, annotations={**holder.annotations, TARGET: original})
            self.writes.append(Write(holder, Restore(holder.owner), service, reason, holder.current_target,
                                     None if original == ABSENT else after.current_target))

    def _assert(self, holder: Holder, service: str, reason: str, previous: float, target: float) -> None:
        """Set the holder's target, taking the holder over where its policy is gone."""
        # `expected`: the annotation this decision read, so a change made in between is not overwritten.
        adopt = holder.owner if holder.owner in self.gone_owners else None
        self.writes.append(Write(holder, Assert(guardrails.format_target(target), self.policy_name, self.now,
                                                holder.annotations.get(TARGET, ABSENT), adopt=adopt),
                                 service, reason, previous, target))
