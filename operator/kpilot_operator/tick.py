"""One decision tick for one AutoscalingPolicy: gather inputs, decide, write, report.

Kopf-free (the handlers wrap it), so the benchmark and unit tests drive it with fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import aiohttp

from kpilot.errors import PolicyError
from kpilot_operator import telemetry
from kpilot_operator.knative import Cluster, KnativeInfo, KnativeMissing, WriteFailed
from kpilot_operator.kube import ApiError
from kpilot_operator.metrics import MetricsUnavailable, PodAutoscalerMetrics, PrometheusMetrics
from kpilot_operator.policies import PolicyLoader, interval_note
from kpilot_operator.annotations import Holder, Restore
from kpilot_operator.reconcile import MESSAGE_LIMIT, Plan, ServiceStatus, ServiceView, Write, decide, with_note
from kpilot_operator.spec import PolicySpec, SpecError, parse_spec

FAULT_REASONS = {"WriteFailed", "MetricsStaleHolding", "Fallback", "FallbackRestored", "PolicyNotLoaded",
                 "ClaimedByOtherPolicy", "RevisionNotFound", "UnsupportedAutoscaling", "InvalidDecision"}
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
    unwritten_status: dict | None = None   # a status the API server has not taken yet (handlers)
    unwritten_at: float = 0.0              # when the newest tick in it ran
    status_failures: int = 0               # failed writes of it in a row
    status_retry_at: float = 0.0           # when to try it again (backing off)

    def due(self, now: float, generation: int | None) -> bool:
        """Whether a decision is due: its interval has passed, or the spec changed since the last
        tick (an edit, Off above all, the way back out, acts at once, not an interval later)."""
        return now >= self.next_due or generation != self.generation

    def ticked(self, now: float, interval_s: float, generation: int | None) -> None:
        self.next_due, self.generation = now + interval_s, generation

    def status_retry_due(self, now: float, interval_s: float, live_last_tick: str | None) -> bool:
        """Whether to try the status not taken yet again now. One a later tick's has replaced is
        dropped: older than an interval, or older than the status there (`live_last_tick`,
        written by the replica that led while this one was paused), which it must not roll back."""
        if self.unwritten_status is None or now < self.status_retry_at:
            return False
        mine = self.unwritten_status.get("lastTick")
        if now - self.unwritten_at > interval_s or (mine and live_last_tick and live_last_tick > mine):
            self.unwritten_status = None
            return False
        return True

    def status_not_taken(self, pending: dict, now: float) -> None:
        """Keep `pending` to try again, backing off from 1 to 30 s."""
        self.unwritten_status = pending
        self.status_failures += 1
        self.status_retry_at = now + min(30.0, 2.0 ** (self.status_failures - 1))

    def status_taken(self) -> None:
        self.unwritten_status, self.status_failures = None, 0


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
                                      "message": message[:MESSAGE_LIMIT], "lastTransitionTime": since}
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
    if svc.described == w.holder.name:   # the Service-level fields too (all a one-revision Service shows)
        svc.applied = w.previous
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


class _TickEnded(Exception):
    """A step ended the tick early; carries the status run_tick returns."""

    def __init__(self, status: dict):
        super().__init__()
        self.status = status


@dataclass
class _Tick:
    """What the steps of one tick share: who it is for, its clock, and the status it builds."""
    rt: Runtime
    name: str
    namespace: str
    state: TickState
    started: float
    now: float
    status: dict
    labels: dict
    conds: list[dict] = field(default_factory=list)   # all but Ready, which finish() puts first

    @classmethod
    def begin(cls, rt: Runtime, name: str, namespace: str, state: TickState) -> _Tick:
        """Start the clocks, and a status that overwrites what an earlier tick said."""
        telemetry.mark_acting()
        started = time.perf_counter()
        now = rt.clock()
        status: dict = {"lastTick": iso(now)}
        # A status is a merge patch: a tick that stops early must still overwrite what an earlier
        # tick said about the Services, or `services` would keep saying "Applied" beside the failure.
        status.update(services=[], managedServices=0, staleRevisions=0, policySha256=None, mode=None)
        return cls(rt, name, namespace, state, started, now, status, {"namespace": namespace, "policy": name})

    def add_condition(self, type_: str, ok: bool, reason: str, message: str) -> None:
        """Report one condition besides Ready (its transition time kept while its status holds)."""
        self.conds.append(condition(self.state, type_, ok, reason, message, self.now))

    def finish(self, ready: bool, reason: str, message: str) -> dict:
        """The status to store, Ready first; remembers the other conditions and times the tick."""
        self.state.reported = list(self.conds)
        self.conds.insert(0, condition(self.state, "Ready", ready, reason, message, self.now))
        self.status["conditions"] = self.conds
        telemetry.TICK_SECONDS.observe(time.perf_counter() - self.started)
        return self.status

    def end(self, ready: bool, reason: str, message: str) -> _TickEnded:
        """Finish early: the exception to raise, which carries the status out to run_tick."""
        return _TickEnded(self.finish(ready, reason, message))

    @contextlib.contextmanager
    def reading_knative(self):
        """Around a read of Knative's objects: Knative gone ends the tick, an API server that does
        not answer raises ApiUnavailable (the tick is retried); each counted as an error."""
        try:
            yield
        except KnativeMissing as exc:
            self.count_error("KnativeMissing")
            raise self.end(False, "KnativeNotInstalled", str(exc)) from None
        except ApiError as exc:
            self.count_error("ApiUnavailable")
            raise ApiUnavailable(str(exc)) from None

    def count_error(self, kind: str, count: int = 1) -> None:
        """Count `count` errors of this kind against this policy."""
        telemetry.ERRORS.labels(kind=kind, **self.labels).inc(count)


async def run_tick(rt: Runtime, name: str, namespace: str, raw_spec: dict, state: TickState,
                   policy_body: dict | None = None) -> dict:
    """One tick; returns the status to store. Raises ApiUnavailable when listing failed."""
    tick = _Tick.begin(rt, name, namespace, state)
    try:
        spec = await _read_spec(tick, raw_spec)
        info = await _read_knative(tick)
        policy = await _load_policy(tick, spec, policy_body)
        services, holders, pas = await _list_revisions(tick, spec, info)
        readings = await _read_metrics(tick, spec, holders, pas)
        gone = await _gone_owners(tick, holders)
        plan = _decide(tick, spec, services, holders, readings, policy, gone)
        _report_unusable_metrics(tick, spec, plan)
        failures, skipped = await apply_writes(rt, plan.writes) if plan.writes else ({}, set())
        bodies = {s.name: s.body for s in services}
        _report_writes(tick, plan, bodies, failures, skipped)
        _forget_target_series(tick, plan, holders, failures, skipped)
        _announce_new_faults(tick, plan, bodies)
        return _conclude(tick, plan, failures, skipped)
    except _TickEnded as ended:
        telemetry.forget_policy(namespace, name)
        return ended.status
    except ApiUnavailable:
        telemetry.forget_policy(namespace, name)
        raise


async def _read_spec(tick: _Tick, raw_spec: dict) -> PolicySpec:
    """Parse the spec; one that does not parse ends the tick (under Off, after restoring)."""
    try:
        spec = parse_spec(raw_spec)
    except SpecError as exc:
        if (raw_spec or {}).get("mode") != "Off":
            raise tick.end(False, "InvalidSpec", str(exc))
        # Off is the way back out: it must not depend on the rest of the spec being right. Paused
        # Services keep what they run, as under a valid Off.
        left, paused = await _restore_all_but_paused(tick)
        raise tick.end(False, "InvalidSpec", f"{exc}; Off restored the revisions this policy managed"
                       + (", paused Services excepted" if paused else "")
                       + (f"; {left} could not be restored yet (retried next tick)" if left else ""))
    tick.status["mode"] = spec.mode
    return spec


async def _restore_all_but_paused(tick: _Tick) -> tuple[int, set[str]]:
    """Restore this policy's revisions but those of paused Services; returns (failures left, paused)."""
    with tick.reading_knative():
        paused = {s.name for s in await tick.rt.cluster.list_services(tick.namespace, {}) if s.keeps_targets}
    left = await restore_all(tick.rt, tick.name, tick.namespace, reason="Off", keep_services=paused)
    return left, paused


async def _read_knative(tick: _Tick) -> KnativeInfo:
    """Read the Knative install (version, write path, default target) and report it in the status."""
    with tick.reading_knative():
        info = await tick.rt.cluster.knative()
    tick.status.update(knativeVersion=info.version or "unknown", writePath=info.write_path,
                       defaultTarget=info.default_target, defaultTargetSource=info.default_target_source)
    return info


async def _load_policy(tick: _Tick, spec: PolicySpec, policy_body: dict | None):
    """Load the policy the spec names (None under Off); one that does not load ends the tick."""
    if spec.mode == "Off":   # Off only restores: it needs no policy
        return None
    try:
        policy = await tick.rt.policies.load(spec.source, tick.namespace)
        note = interval_note(policy, spec.interval_s)
        # A reason of its own, not only the message: an alert or a `kubectl wait` can match it.
        tick.add_condition("PolicyLoaded", True, "LoadedAtOtherInterval" if note else "Loaded",
                           f"{spec.source.describe()} sha256 {policy.sha256[:12]}"
                           + (f"; note: {note}" if note else ""))
        tick.status["policySha256"] = policy.sha256
    except PolicyError as exc:
        tick.count_error("PolicyNotLoaded")
        first = tick.state.conditions.get("PolicyLoaded", {}).get("status") != "False"
        tick.add_condition("PolicyLoaded", False, "PolicyRejected", str(exc))
        if first and policy_body is not None:
            tick.rt.emit_event(policy_body, "Warning", "PolicyRejected", str(exc)[:MESSAGE_LIMIT])
        raise tick.end(False, "PolicyNotLoaded", "services are left untouched until the policy loads")
    return policy


async def _list_revisions(tick: _Tick, spec: PolicySpec, info: KnativeInfo) \
        -> tuple[list[ServiceView], dict[str, Holder], list[dict]]:
    """List the selected Services and every holder of a revision's target (with its PodAutoscaler)."""
    with tick.reading_knative():
        services = await tick.rt.cluster.list_services(tick.namespace, spec.selector)
        holders, pas = await tick.rt.cluster.list_holders(tick.namespace, info.write_path)
    return services, holders, pas


async def _read_metrics(tick: _Tick, spec: PolicySpec, holders: dict[str, Holder], pas: list[dict]) -> dict:
    """Read the revisions' metrics (none under Off); unavailable metrics are reported, not fatal."""
    readings: dict = {}
    try:
        if spec.mode == "Off":
            return readings
        source = await metrics_source(tick.rt, spec, tick.namespace)
        readings = await source.read(tick.namespace, spec.interval_s, holders, pas)
        unseen = getattr(source, "unseen_requests", [])
        tick.add_condition(
            "MetricsAvailable", True, "ReadWithoutRequestSeries" if unseen else "Read",
            f"{spec.metrics.kind}: {len(readings)} revisions observed"
            + (f"; no request rate or latency series for {len(unseen)} with ready pods "
               f"({', '.join(unseen[:3])}{', ...' if len(unseen) > 3 else ''}): they read as 0. Fine "
               "for a revision that has served nothing yet; otherwise check that Prometheus scrapes "
               "queue-proxy, at least once per decision interval, and that its series carry "
               "kn_revision_name and k8s_namespace_name" if unseen else ""))
    except MetricsUnavailable as exc:
        tick.count_error("MetricsUnavailable")
        tick.add_condition("MetricsAvailable", False, "Unavailable", str(exc))
    finally:    # whatever was read, or nothing: an age from an earlier tick is not exported on
        telemetry.record_reading_age(tick.labels, readings, tick.now)
    return readings


async def _gone_owners(tick: _Tick, holders: dict[str, Holder]) -> frozenset[str]:
    """The other policies recorded as owners on holders that no longer exist."""
    # Owners recorded on holders whose policy is gone (its finalizer removed by hand): looked up
    # only when there are other owners than this policy, and none counts as gone if unreadable.
    # Off too: a policy created in Off is the way to restore what such a policy left.
    owners = {h.owner for h in holders.values()} - {None, tick.name}
    existing = await tick.rt.cluster.policy_names(tick.namespace) if owners else None
    return frozenset(owners - existing) if existing is not None else frozenset()


def _decide(tick: _Tick, spec: PolicySpec, services: list[ServiceView], holders: dict[str, Holder],
            readings: dict, policy, gone: frozenset[str]) -> Plan:
    """Run the pure decision (timed as inference), keep its freshness memory, count its decisions."""
    t0 = time.perf_counter()
    plan: Plan = decide(policy_name=tick.name, spec=spec, services=services, holders=holders,
                        readings=readings, policy=policy, last_fresh=tick.state.last_fresh, now=tick.now,
                        gone_owners=gone)
    telemetry.INFERENCE_SECONDS.observe(time.perf_counter() - t0)
    tick.state.last_fresh = plan.last_fresh
    telemetry.DECISIONS.labels(mode=spec.mode, **tick.labels).inc(plan.decisions)
    telemetry.STALE.labels(**tick.labels).set(plan.stale)
    if plan.invalid:
        tick.count_error("InvalidDecision", plan.invalid)
    return plan


def _report_unusable_metrics(tick: _Tick, spec: PolicySpec, plan: Plan) -> None:
    """MetricsAvailable is False when metrics were read but no revision had a usable reading."""
    # Queries that answer without the series a revision needs (a relabelling mistake, a missing
    # scrape job) read as "available" while every revision held and fell back, and Ready stayed True.
    if plan.decisions or plan.invalid or not plan.stale:
        return
    check = ("Check that Prometheus scrapes the autoscaler and that its series carry kn_revision_name and "
             "k8s_namespace_name" if spec.metrics.kind == "prometheus" else
             "Check that their PodAutoscalers report actualScale and desiredScale")
    for i, cond in enumerate(tick.conds):
        if cond["type"] == "MetricsAvailable" and cond["status"] == "True":
            tick.conds[i] = condition(
                tick.state, "MetricsAvailable", False, "NoUsableReading",
                f"{spec.metrics.kind}: none of the {plan.stale} revisions decided for has a usable reading "
                f"(every field, finite, at most {spec.staleness_s:.0f}s old): they hold, then fall back. "
                + check, tick.now)


def _report_writes(tick: _Tick, plan: Plan, bodies: dict[str, dict], failures: dict[int, str],
                   skipped: set[int]) -> None:
    """Each write's Event and metrics; a Service's entry says which of its writes did not happen, and why."""
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
        _event_for_write(tick.rt, tick.name, bodies, w, error)
        if error:
            tick.count_error("WriteFailed")
            if w.service in by_service:
                svc = by_service[w.service]
                svc.reason, svc.message = "WriteFailed", error[:300]
                _unwritten(svc, w, error[:300], reason="WriteFailed")
        else:
            telemetry.APPLIED.labels(reason=w.reason, **tick.labels).inc()
            if w.target is not None and not isinstance(w.intent, Restore):
                telemetry.APPLIED_TARGET.labels(tick.namespace, w.service or "", w.holder.name).set(w.target)


def _forget_target_series(tick: _Tick, plan: Plan, holders: dict[str, Holder], failures: dict[int, str],
                          skipped: set[int]) -> None:
    """Drop the applied-target series of revisions restored this tick or gone, so they do not pile up."""
    # A revision's series goes when this policy restored it or it no longer exists; never because
    # of ownership read earlier (another policy may have claimed and written it since).
    restored = {w.holder.name for i, w in enumerate(plan.writes)
                if isinstance(w.intent, Restore) and i not in failures and i not in skipped}
    telemetry.forget_targets(tick.namespace, set(holders) - restored)


def _fault(svc: ServiceStatus) -> tuple[str, str]:
    """(reason, message) of the fault a Service is in: its own, else the first of its revisions'
    (on a split Service the Service-level reason is that of a revision the policy decided for)."""
    if svc.reason in FAULT_REASONS:
        return svc.reason, svc.message
    entry = next((e for e in svc.by_revision.values() if e["reason"] in FAULT_REASONS), None)
    return (entry["reason"], entry.get("message", "")) if entry else (svc.reason, svc.message)


def _announce_new_faults(tick: _Tick, plan: Plan, bodies: dict[str, dict]) -> None:
    """A Warning Event for each Service that entered a fault this tick (WriteFailed has its own)."""
    # A fault is an Event once, when a service enters it, not on every tick.
    faults = {svc.name: _fault(svc) for svc in plan.services}
    for svc in plan.services:
        reason, message = faults[svc.name]
        if reason in FAULT_REASONS and tick.state.service_reasons.get(svc.name) != reason \
                and reason != "WriteFailed" and svc.name in bodies:
            tick.rt.emit_event(bodies[svc.name], "Warning", reason, message[:MESSAGE_LIMIT] or reason)
    tick.state.service_reasons = {name: reason for name, (reason, _) in faults.items()}


def _conclude(tick: _Tick, plan: Plan, failures: dict[int, str], skipped: set[int]) -> dict:
    """The Services' outcomes in the status, and Ready: Reconciled, Degraded, or Conflict."""
    tick.status["services"] = [s.as_dict(iso(tick.now)) for s in plan.services]
    tick.status["managedServices"] = len(plan.services)
    tick.status["staleRevisions"] = plan.stale
    ready = not failures and all(c["status"] == "True" for c in tick.conds)
    summary = (f"{len(plan.services)} services, {len(plan.writes) - len(failures) - len(skipped)} writes"
               + (f", {len(failures)} failed" if failures else ""))
    # A Service this policy selects but another one manages is not this policy's to run: not Ready,
    # so that `kubectl get asp` shows the overlap of two selectors (the other policy is unaffected).
    # Any of its revisions: two selectors over a Service whose traffic splits take one revision each.
    claimed = sorted({s.name for s in plan.services
                      if s.reason == "ClaimedByOtherPolicy"
                      or any(e["reason"] == "ClaimedByOtherPolicy" for e in s.by_revision.values())})
    if ready and claimed:
        return tick.finish(False, "Conflict", f"{summary}; managed by another policy: {', '.join(claimed)}")
    return tick.finish(ready, "Reconciled" if ready else "Degraded", summary)


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
