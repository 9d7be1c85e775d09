"""Kopf handlers: thin reactions that gather inputs, call the tick, and write the outputs.

Importing this module registers them in Kopf's default registry.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import kopf
from prometheus_client import start_http_server

from kpilot_operator import knative, kube, telemetry
from kpilot_operator.main import env_setting, peering_priority
from kpilot_operator.spec import DEFAULT_INTERVAL_S, GROUP, KIND, PLURAL, VERSION
from kpilot_operator.tick import ApiUnavailable, Runtime, TickState, restore_all, run_tick, unavailable_status

# How often the timer checks whether a policy's decisionIntervalSeconds has elapsed: Kopf's timer
# interval is fixed at registration, the decision interval is per object and may change.
TIMER_RESOLUTION_S = float(env_setting("KPILOT_TIMER_RESOLUTION_S"))
# A replica whose timer has not run for this long is a standby: its gauges are not served.
telemetry.STANDBY_AFTER_S = max(60.0, 5 * TIMER_RESOLUTION_S)
FINALIZER = "kpilot.dev/restore-targets"


def kopf_event(body: dict, type_: str, reason: str, message: str) -> None:
    kopf.event(body, type=type_, reason=reason, message=message)


@kopf.on.login()
def login(**kwargs) -> kopf.ConnectionInfo | None:
    """Kopf and the Knative adapter authenticate through the same `kubernetes` client library
    (ServiceAccount, else kubeconfig with exec plugins); Kopf calls this again on a 401."""
    return kube.login(**kwargs)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    settings.posting.level = logging.WARNING          # Kopf's own log lines are not Events
    settings.watching.server_timeout = env_setting("KPILOT_WATCH_TIMEOUT_S")  # an integer, as the API wants
    settings.watching.reconnect_backoff = 1.0
    settings.networking.request_timeout = 60
    # Peering (its name from `kpilot operator run --no-standalone`) is mandatory when named, as Kopf
    # makes it: replicas without the peering CRDs would both act, uncoordinated.
    settings.peering.priority = peering_priority(settings.peering.priority)   # replicas must not tie
    if memo.get("runtime") is None:                  # tests and the benchmark bring their own
        api = kube.KubeApi(kube.load_configuration())
        memo.runtime = Runtime(cluster=knative.KnativeCluster(api), emit_event=kopf_event,
                               http=aiohttp.ClientSession())
        memo.owned_api = api
    peering = settings.peering
    if memo.get("owned_api") is not None and peering.mandatory and not peering.standalone:
        # Cluster-wide: one ClusterKopfPeering; namespaced (`--namespace`): a KopfPeering in each.
        wheres = [None] if peering.clusterwide else list(memo.get("peering_namespaces") or [])
        try:
            missing = await kube.ensure_peerings(memo.owned_api, peering.name, wheres, logger)
        except kube.PeeringUnavailable as exc:   # e.g. the peering CRD, applied with the operator, not served yet
            raise kopf.TemporaryError(str(exc), delay=5.0)
        if missing and memo.get("peering_retry") is None:
            memo.peering_retry = asyncio.create_task(
                kube.create_peerings_later(memo.owned_api, peering.name, missing, logger))
    port = env_setting("KPILOT_METRICS_PORT")
    if port and not memo.get("metrics_started"):
        start_http_server(port)
        memo.metrics_started = True
        logger.info("operator metrics on :%d/metrics", port)


@kopf.on.cleanup()
async def close_clients(memo: kopf.Memo, **_) -> None:
    retry = memo.get("peering_retry")
    if retry is not None:
        retry.cancel()
    if memo.get("owned_api") is not None:
        await memo.owned_api.close()
        await memo.runtime.http.close()


def _lock(memo: kopf.Memo) -> asyncio.Lock:
    """One per policy object (Kopf's memo is per object): its tick and its deletion never overlap."""
    return memo.setdefault("lock", asyncio.Lock())


@kopf.timer(GROUP, VERSION, PLURAL, interval=TIMER_RESOLUTION_S, initial_delay=0.0)
async def decide_and_apply(name: str, namespace: str, spec: kopf.Spec, body: kopf.Body, meta: kopf.Meta,
                           memo: kopf.Memo, logger: logging.Logger, **_) -> None:
    """Level-triggered: every decisionIntervalSeconds, decide and apply for all selected Services."""
    telemetry.mark_acting()      # the timer runs on the replica that acts only (Kopf peering)
    state: TickState = memo.setdefault("tick", TickState())
    runtime: Runtime = memo.runtime
    now = runtime.clock()
    if memo.get("deleting"):
        return
    interval = float(spec.get("decisionIntervalSeconds", DEFAULT_INTERVAL_S))
    if state.status_retry_due(now, interval, (body.get("status") or {}).get("lastTick")):
        await write_status(runtime, namespace, name, {}, state, logger, now)
    if not state.due(now, meta.get("generation")):
        return
    policy_body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": dict(meta)}
    async with _lock(memo):
        if memo.get("deleting"):      # the policy was deleted while this tick waited
            return
        # Kopf's spec and meta are live views: the spec this tick runs on and its generation are
        # read together, or an edit arriving during the tick would count as handled.
        raw_spec, generation = dict(spec), meta.get("generation")
        try:
            status = await run_tick(runtime, name, namespace, raw_spec, state, policy_body)
        except ApiUnavailable as exc:
            # Ready stops claiming the last good tick (written when the API server answers again).
            await write_status(runtime, namespace, name,
                               unavailable_status(state, f"Knative objects unreadable: {exc}", now), state, logger,
                               now)
            raise kopf.TemporaryError(f"Knative objects unreadable: {exc}", delay=min(interval, 5.0))
    state.ticked(now, interval, generation)
    status["observedGeneration"] = generation
    await write_status(runtime, namespace, name, status, state, logger, now)


async def write_status(runtime: Runtime, namespace: str, name: str, status: dict, state: TickState,
                       logger: logging.Logger, now: float) -> None:
    """Write a policy's status (`status`: a tick's, at `now`; empty: the one not taken yet) with the
    operator's own client. One the API server does not take is kept and tried again on later timer
    runs, backing off from 1 to 30 s, until it is taken or a later tick's replaces it. Left to
    Kopf's patch, a status that failed its eight tries (an API outage over about 54 s) ended the
    policy's timer for good: no tick again, Off included, until the operator restarted."""
    if status:
        state.unwritten_at = now
    pending = {**(state.unwritten_status or {}), **status}     # a later tick's keys win
    try:
        await runtime.cluster.write_policy_status(namespace, name, pending)
    except kube.ApiError as exc:
        if exc.status == 404:           # the policy is gone: nothing to report on
            state.status_taken()
            return
        if state.unwritten_status is None:
            telemetry.ERRORS.labels(namespace=namespace, policy=name, kind="StatusNotWritten").inc()
            logger.warning("status not written, tried again until it is: %s", exc)
        state.status_not_taken(pending, now)
        return
    if state.unwritten_status is not None:
        logger.info("status written")
    state.status_taken()


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def restore_on_delete(name: str, namespace: str, memo: kopf.Memo, logger: logging.Logger, **_) -> None:
    """Deleting a policy puts back every target it changed; the finalizer holds it until then."""
    # Kopf runs this while a timer run may still be writing: once `deleting` is set no tick starts,
    # and the lock waits for one in flight, so no write lands after the targets are put back.
    memo.deleting = True
    async with _lock(memo):
        try:
            left = await restore_all(memo.runtime, name, namespace)
        except ApiUnavailable as exc:
            raise kopf.TemporaryError(f"Knative objects unreadable: {exc}", delay=2.0)
    if left:
        raise kopf.TemporaryError(f"{left} revisions not restored yet", delay=2.0)
    telemetry.forget_policy(namespace, name)
    logger.info("restored the original targets of every revision this policy managed")
