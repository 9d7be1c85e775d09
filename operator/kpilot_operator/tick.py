"""One decision tick for one AutoscalingPolicy: gather inputs, decide, write, report.

Kopf-free (the handlers wrap it), so the benchmark and unit tests drive it with fakes.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import aiohttp

from kpilot.errors import PolicyError
from kpilot_operator import telemetry
from kpilot_operator.knative import Cluster, KnativeMissing, WriteFailed
from kpilot_operator.kube import ApiError
from kpilot_operator.metrics import MetricsUnavailable, PodAutoscalerMetrics, PrometheusMetrics
from kpilot_operator.policies import PolicyLoader, interval_note
from kpilot_operator.annotations import Restore
from kpilot_operator.reconcile import Plan, Write, decide, with_note
from kpilot_operator.spec import PolicySpec, SpecError, parse_spec

FAULT_REASONS = {"WriteFailed", "MetricsStaleHolding", "Fallback", "FallbackRestored", "PolicyNotLoaded",
                 "ClaimedByOtherPolicy", "RevisionNotFound", "UnsupportedAutoscaling"}
EventSink = Callable[[dict, str, str, str], None]   # (object body, type, reason, message)


class ApiUnavailable(Exception):
    """Listing Knative objects failed (5xx, timeout): the tick is retried."""


@dataclass
class Runtime:
    cluster: Cluster
    emit_event: EventSink
    clock: Callable[[], float] = time.time
    write_concurrency: int = 16
    http: aiohttp.ClientSession | None = None      # shared by the Prometheus adapters
    policies: PolicyLoader = None  # type: ignore[assignment]

    def __post_init__(self):
        if self.policies is None:
            self.policies = PolicyLoader(self.cluster)


@dataclass
class TickState:
    """Per-policy memory between ticks (Kopf's per-object memo). Losing it only delays a fallback."""
    last_fresh: dict[str, float] = field(default_factory=dict)
    next_due: float = 0.0
    conditions: dict[str, dict] = field(default_factory=dict)
    service_reasons: dict[str, str] = field(default_factory=dict)
    generation: int | None = None    # of the spec last ticked on: a new one ticks at once
    reported: list[dict] = field(default_factory=list)   # the last tick's conditions but Ready

    def due(self, now: float, generation: int | None) -> bool:
        """Whether a decision is due: its interval has passed, or the spec changed since the last
        tick (an edit, Off above all, the way back out, acts at once, not an interval later)."""
        return now >= self.next_due or generation != self.generation

    def ticked(self, now: float, interval_s: float, generation: int | None) -> None:
        self.next_due, self.generation = now + interval_s, generation


def unavailable_status(state: TickState, message: str, now: float) -> dict:
    """The status of a tick that could not read the Knative objects: not Ready; the other
    conditions as the last tick reported them (no lastTick: none happened)."""
    return {"conditions": [condition(state, "Ready", False, "ApiUnavailable", message, now), *state.reported]}


def iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(state: TickState, type_: str, ok: bool, reason: str, message: str, now: float) -> dict:
    status = "True" if ok else "False"
    prev = state.conditions.get(type_)
    since = prev["lastTransitionTime"] if prev and prev["status"] == status else iso(now)
    state.conditions[type_] = cond = {"type": type_, "status": status, "reason": reason,
                                      "message": message[:1000], "lastTransitionTime": since}
    return cond


async def metrics_source(rt: Runtime, spec: PolicySpec, namespace: str):
    if spec.metrics.kind == "kubernetes":
        return PodAutoscalerMetrics()
    token = None
    if spec.metrics.auth_secret:
        name, key = spec.metrics.auth_secret
        try:
            token = await rt.cluster.read_secret(namespace, name, key)
        except ApiError as exc:
            raise MetricsUnavailable(f"auth Secret {name}: {exc}") from None
        except KeyError as exc:      # no such key, or not a token
            raise MetricsUnavailable(f"auth Secret {name}: {exc.args[0]}") from None
    return PrometheusMetrics(spec.metrics.url, spec.metrics.timeout_s, token, rt.http)


def _unwritten(svc, w, note: str, reason: str | None = None) -> None:
    """The revision's own entry of a split Service: what it runs is still the target before this
    write, and why (a write that failed, or one the fresh object no longer needed)."""
    entry = svc.by_revision.get(w.holder.name)
    if entry is None:
        return
    entry["appliedTarget"] = w.previous
    entry["message"] = with_note(entry.get("message", ""), note)
    if reason:
        entry["reason"] = reason


async def apply_writes(rt: Runtime, writes: list[Write]) -> tuple[dict[int, str], set[int]]:
    """Perform the writes concurrently (bounded); returns index -> error for those that failed,
    and the indices the fresh object no longer needed (gone, or changed by someone else)."""
    gate = asyncio.Semaphore(rt.write_concurrency)
    failures: dict[int, str] = {}
    skipped: set[int] = set()

    async def one(i: int, w: Write) -> None:
        async with gate:
            try:
                if not await rt.cluster.write(w.holder, w.intent):
                    skipped.add(i)
            except (WriteFailed, ApiError) as exc:
                failures[i] = str(exc)

    await asyncio.gather(*(one(i, w) for i, w in enumerate(writes)))
    return failures, skipped


def _event_for_write(rt, policy_name, bodies, w: Write, error: str | None) -> None:
    body = bodies.get(w.service)
    if body is None:
        return
    if error:
        rt.emit_event(body, "Warning", "WriteFailed",
                      f"revision {w.holder.name}: could not set the target ({error})")
    elif isinstance(w.intent, Restore):
        restored = "absent" if w.target is None else f"{w.target:g}"
        rt.emit_event(body, "Normal", "TargetRestored",
                      f"revision {w.holder.name}: target {w.previous:g} -> original ({restored}); {w.reason}")
    else:
        rt.emit_event(body, "Normal", "TargetApplied",
                      f"revision {w.holder.name}: target {w.previous:g} -> {w.target:g} "
                      f"({w.reason}, policy {policy_name})")


async def run_tick(rt: Runtime, name: str, namespace: str, raw_spec: dict, state: TickState,
                   policy_body: dict | None = None) -> dict:
    """One tick; returns the status to store. Raises ApiUnavailable when listing failed."""
    started = time.perf_counter()
    now = rt.clock()
    status: dict = {"lastTick": iso(now)}
    conds: list[dict] = []
    labels = {"namespace": namespace, "policy": name}

    def finish(ready: bool, reason: str, message: str) -> dict:
        state.reported = list(conds)
        conds.insert(0, condition(state, "Ready", ready, reason, message, now))
        status["conditions"] = conds
        telemetry.TICK_SECONDS.observe(time.perf_counter() - started)
        return status

    # Kopf merges status patches: a tick that stops early must still overwrite what an earlier
    # tick said about the Services, or `services` would keep saying "Applied" beside the failure.
    status.update(services=[], managedServices=0, staleRevisions=0, policySha256=None, mode=None)
    try:
        spec = parse_spec(raw_spec)
    except SpecError as exc:
        if (raw_spec or {}).get("mode") != "Off":
            return finish(False, "InvalidSpec", str(exc))
        # Off is the way back out: it must not depend on the rest of the spec being right. Paused
        # Services keep what they run, as under a valid Off.
        try:
            paused = {s.name for s in await rt.cluster.list_services(namespace, {}) if s.paused}
        except KnativeMissing as missing:
            return finish(False, "KnativeNotInstalled", str(missing))
        except ApiError as api:
            raise ApiUnavailable(str(api)) from None
        left = await restore_all(rt, name, namespace, reason="Off", keep_services=paused)
        return finish(False, "InvalidSpec", f"{exc}; Off restored the revisions this policy managed"
                      + (", paused Services excepted" if paused else "")
                      + (f"; {left} could not be restored yet (retried next tick)" if left else ""))
    status["mode"] = spec.mode
    try:
        info = await rt.cluster.knative()
    except KnativeMissing as exc:
        telemetry.ERRORS.labels(kind="KnativeMissing", **labels).inc()
        return finish(False, "KnativeNotInstalled", str(exc))
    except ApiError as exc:
        telemetry.ERRORS.labels(kind="ApiUnavailable", **labels).inc()
        raise ApiUnavailable(str(exc)) from None
    status.update(knativeVersion=info.version or "unknown", writePath=info.write_path,
                  defaultTarget=info.default_target, defaultTargetSource=info.default_target_source)

    policy = None
    if spec.mode != "Off":   # Off only restores: it needs no policy
        try:
            policy = await rt.policies.load(spec.source, namespace)
            note = interval_note(policy, spec.interval_s)
            conds.append(condition(state, "PolicyLoaded", True, "Loaded",
                                   f"{spec.source.describe()} sha256 {policy.sha256[:12]}"
                                   + (f"; note: {note}" if note else ""), now))
            status["policySha256"] = policy.sha256
        except PolicyError as exc:
            telemetry.ERRORS.labels(kind="PolicyNotLoaded", **labels).inc()
            first = state.conditions.get("PolicyLoaded", {}).get("status") != "False"
            conds.append(condition(state, "PolicyLoaded", False, "PolicyRejected", str(exc), now))
            if first and policy_body is not None:
                rt.emit_event(policy_body, "Warning", "PolicyRejected", str(exc)[:1000])
            return finish(False, "PolicyNotLoaded", "services are left untouched until the policy loads")

    try:
        services = await rt.cluster.list_services(namespace, spec.selector)
        holders, pas = await rt.cluster.list_holders(namespace, info.write_path)
    except KnativeMissing as exc:
        return finish(False, "KnativeNotInstalled", str(exc))
    except ApiError as exc:
        telemetry.ERRORS.labels(kind="ApiUnavailable", **labels).inc()
        raise ApiUnavailable(str(exc)) from None

    readings: dict = {}
    if spec.mode != "Off":
        try:
            source = await metrics_source(rt, spec, namespace)
            readings = await source.read(namespace, spec.interval_s, holders, pas)
            unseen = getattr(source, "unseen_requests", [])
            conds.append(condition(
                state, "MetricsAvailable", True, "ReadWithoutRequestSeries" if unseen else "Read",
                f"{spec.metrics.kind}: {len(readings)} revisions observed"
                + (f"; no request rate or latency series for {len(unseen)} with ready pods "
                   f"({', '.join(unseen[:3])}{', ...' if len(unseen) > 3 else ''}): they read as 0. Fine "
                   "for a revision that has served nothing yet; otherwise check that the Prometheus "
                   "scrape interval is under half the decision interval and that queue-proxy series "
                   "carry kn_revision_name and k8s_namespace_name" if unseen else ""), now))
        except MetricsUnavailable as exc:
            telemetry.ERRORS.labels(kind="MetricsUnavailable", **labels).inc()
            conds.append(condition(state, "MetricsAvailable", False, "Unavailable", str(exc), now))

    # Owners recorded on holders whose policy is gone (its finalizer removed by hand): looked up
    # only when there are other owners than this policy, and none counts as gone if unreadable.
    # Off too: a policy created in Off is the way to restore what such a policy left.
    owners = {h.owner for h in holders.values()} - {None, name}
    existing = await rt.cluster.policy_names(namespace) if owners else None
    gone = frozenset(owners - existing) if existing is not None else frozenset()

    t0 = time.perf_counter()
    plan: Plan = decide(policy_name=name, spec=spec, services=services, holders=holders,
                        readings=readings, policy=policy, last_fresh=state.last_fresh, now=now,
                        gone_owners=gone)
    telemetry.INFERENCE_SECONDS.observe(time.perf_counter() - t0)
    state.last_fresh = plan.last_fresh
    telemetry.DECISIONS.labels(mode=spec.mode, **labels).inc(plan.decisions)
    telemetry.STALE.labels(**labels).set(plan.stale)

    failures, skipped = await apply_writes(rt, plan.writes) if plan.writes else ({}, set())
    bodies = {s.name: s.body for s in services}
    by_service = {s.name: s for s in plan.services}
    for i, w in enumerate(plan.writes):
        if i in skipped:      # no Event, no count: nothing changed (the next tick decides again)
            if w.service in by_service:
                note = "not written: the revision changed or went away since it was read"
                svc = by_service[w.service]
                svc.message = with_note(svc.message, note)
                _unwritten(svc, w, note)
            continue
        error = failures.get(i)
        _event_for_write(rt, name, bodies, w, error)
        if error:
            telemetry.ERRORS.labels(kind="WriteFailed", **labels).inc()
            if w.service in by_service:
                svc = by_service[w.service]
                svc.reason, svc.message = "WriteFailed", error[:300]
                _unwritten(svc, w, error[:300], reason="WriteFailed")
        else:
            telemetry.APPLIED.labels(reason=w.reason, **labels).inc()
            if w.target is not None and not isinstance(w.intent, Restore):
                telemetry.APPLIED_TARGET.labels(namespace, w.service or "", w.holder.name).set(w.target)
    # A revision's series goes when this policy restored it or it no longer exists; never because
    # of ownership read earlier (another policy may have claimed and written it since).
    restored = {w.holder.name for i, w in enumerate(plan.writes)
                if isinstance(w.intent, Restore) and i not in failures and i not in skipped}
    telemetry.forget_targets(namespace, set(holders) - restored)
    # A fault is an Event once, when a service enters it, not on every tick.
    for svc in plan.services:
        if svc.reason in FAULT_REASONS and state.service_reasons.get(svc.name) != svc.reason \
                and svc.reason != "WriteFailed" and svc.name in bodies:
            rt.emit_event(bodies[svc.name], "Warning", svc.reason, svc.message or svc.reason)
    state.service_reasons = {s.name: s.reason for s in plan.services}

    status["services"] = [s.as_dict(iso(now)) for s in plan.services]
    status["managedServices"] = len(plan.services)
    status["staleRevisions"] = plan.stale
    ready = not failures and all(c["status"] == "True" for c in conds)
    summary = (f"{len(plan.services)} services, {len(plan.writes) - len(failures) - len(skipped)} writes"
               + (f", {len(failures)} failed" if failures else ""))
    # A Service this policy selects but another one manages is not this policy's to run: not Ready,
    # so that `kubectl get asp` shows the overlap of two selectors (the other policy is unaffected).
    claimed = sorted({s.name for s in plan.services if s.reason == "ClaimedByOtherPolicy"})
    if ready and claimed:
        return finish(False, "Conflict", f"{summary}; managed by another policy: {', '.join(claimed)}")
    return finish(ready, "Reconciled" if ready else "Degraded", summary)


async def restore_all(rt: Runtime, name: str, namespace: str, reason: str = "PolicyDeleted",
                      keep_services: set[str] = frozenset()) -> int:
    """Restore every holder this policy owns but those of `keep_services` (policy deleted, or Off
    with a spec it cannot read). Returns how many are left failing."""
    try:
        info = await rt.cluster.knative()
        holders, _ = await rt.cluster.list_holders(namespace, info.write_path)
    except KnativeMissing:
        return 0
    except ApiError as exc:
        raise ApiUnavailable(str(exc)) from None
    owned = [h for h in holders.values() if h.owner == name and h.service not in keep_services]
    writes = [Write(h, Restore(h.owner), h.service, reason, h.current_target, None) for h in owned]
    failures, _ = await apply_writes(rt, writes)
    for i, error in failures.items():
        logging.getLogger(__name__).warning("restore of %s failed: %s", writes[i].holder.name, error)
    restored = {w.holder.name for i, w in enumerate(writes) if i not in failures}
    telemetry.forget_targets(namespace, set(holders) - restored)
    return len(failures)
