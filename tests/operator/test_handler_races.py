"""The handlers around the tick: a policy deleted mid-tick, a Prometheus answer of the wrong
shape, and a failed tick's status. In-process cluster (kpilot_operator.bench), no API server."""

from __future__ import annotations

import asyncio
import json

import aiohttp.web
import kopf
import pytest
from operator_support import constant_policy_bytes

from kpilot.policy import sha256_hex
from kpilot_operator import handlers
from kpilot_operator.bench import InMemoryCluster, serve_prometheus
from kpilot_operator.metrics import MetricsUnavailable, PrometheusMetrics, without_request_series
from kpilot_operator.annotations import ORIGINAL, OWNER, PAUSED, TARGET
from kpilot_operator.tick import Runtime, TickState, iso, run_tick

POLICY = constant_policy_bytes(30.0)
SPEC = {"selector": {}, "policy": {"configMap": {"name": "p"}, "sha256": sha256_hex(POLICY)},
        "mode": "Enforce", "maxStepRatio": 5, "cooldownSeconds": 0, "metrics": {"kubernetes": {}}}


class GatedCluster(InMemoryCluster):
    """Holds every write until `gate` opens; PodAutoscalers report 3 pods."""

    def __init__(self):
        super().__init__(1, POLICY)
        self.gate: asyncio.Event | None = None
        self.writing = asyncio.Event()
        self.pas = [{"metadata": {"name": "svc-0-00001"}, "status": {"actualScale": 3, "desiredScale": 3}}]

    async def list_holders(self, namespace, write_path):
        holders, _ = await super().list_holders(namespace, write_path)
        return holders, self.pas

    async def write(self, holder, intent):
        self.writing.set()
        if self.gate is not None:
            await self.gate.wait()
        return await super().write(holder, intent)


def _split(cluster):
    """Give the cluster's one Service a second revision and split its traffic 50/50."""
    second = json.loads(json.dumps(cluster.revisions["svc-0-00001"]))
    second["metadata"]["name"] = "svc-0-00002"
    cluster.revisions["svc-0-00002"] = second
    cluster.services[0]["status"]["traffic"] = [{"revisionName": "svc-0-00001", "percent": 50},
                                                {"revisionName": "svc-0-00002", "percent": 50}]
    cluster.pas.append({"metadata": {"name": "svc-0-00002"}, "status": {"actualScale": 3, "desiredScale": 3}})


def _call(handler, memo, **kw):
    """A Kopf handler called as Kopf would, with what it reads."""
    return handler(name="p", namespace="bench", memo=memo, logger=handlers.logging.getLogger("test"), **kw)


@pytest.mark.asyncio
async def test_a_policy_deleted_mid_tick_leaves_the_original_target():
    cluster = GatedCluster()
    annotations = cluster.revisions["svc-0-00001"]["metadata"]["annotations"]
    annotations.update({TARGET: "40", ORIGINAL: "70", OWNER: "p"})       # managed by p already
    cluster.gate = asyncio.Event()
    memo = kopf.Memo(runtime=Runtime(cluster=cluster, emit_event=lambda *a: None, clock=lambda: 1e6))
    patch = kopf.Patch()
    tick = asyncio.create_task(_call(handlers.decide_and_apply, memo, spec=SPEC, body={}, patch=patch,
                                     meta={"name": "p", "namespace": "bench", "generation": 1}))
    await asyncio.wait_for(cluster.writing.wait(), 5)                 # its write is in flight
    gate, cluster.gate = cluster.gate, None
    delete = asyncio.create_task(_call(handlers.restore_on_delete, memo))
    await asyncio.sleep(0.05)
    assert not delete.done()        # the deletion waits for the tick instead of racing it
    gate.set()
    await asyncio.wait_for(asyncio.gather(tick, delete), 5)
    # Before: the tick's write landed after the restore and re-recorded an original: 30 stayed.
    assert annotations.get(TARGET) == "70" and ORIGINAL not in annotations and OWNER not in annotations
    # and no later tick touches it again
    await _call(handlers.decide_and_apply, memo, spec=SPEC, body={}, patch=kopf.Patch(),
                meta={"name": "p", "namespace": "bench", "generation": 1})
    assert annotations.get(TARGET) == "70"


@pytest.mark.asyncio
async def test_a_deleted_policy_stops_exporting_its_stale_count():
    # An alert on kpilot_stale_revisions kept firing for a policy deleted while its metrics were
    # unreadable, until the operator restarted.
    from prometheus_client import REGISTRY

    cluster = GatedCluster()
    memo = kopf.Memo(runtime=Runtime(cluster=cluster, emit_event=lambda *a: None, clock=lambda: 1e6))
    spec = {**SPEC, "metrics": {"prometheus": {"url": "http://127.0.0.1:9"}}}     # nothing listens
    await _call(handlers.decide_and_apply, memo, spec=spec, body={}, patch=kopf.Patch(),
                meta={"name": "p", "namespace": "bench", "generation": 1})
    labels = {"namespace": "bench", "policy": "p"}
    assert REGISTRY.get_sample_value("kpilot_stale_revisions", labels) == 1.0
    from kpilot_operator import telemetry
    telemetry.READING_AGE.labels(**labels).set(7.0)        # as a tick that read its metrics sets it
    await _call(handlers.restore_on_delete, memo)
    assert REGISTRY.get_sample_value("kpilot_stale_revisions", labels) is None
    assert REGISTRY.get_sample_value("kpilot_reading_age_seconds", labels) is None


@pytest.mark.parametrize("document", [
    {"status": "success", "data": {"result": [{"metric": {"kn_revision_name": "r"}, "value": None}]}},
    {"status": "success", "data": {"resultType": "scalar", "result": 3}},
    {"status": "success", "data": None},
    [1, 2, 3],
    "[" * 100_000 + "]" * 100_000,       # as text: a RecursionError out of the tick before
])
@pytest.mark.asyncio
async def test_a_prometheus_answer_of_another_shape_is_metrics_unavailable(document):
    async def query(request):
        text = document if isinstance(document, str) else json.dumps(document)
        return aiohttp.web.Response(text=text, content_type="application/json")

    runner, url = await serve_prometheus(query)
    try:
        source = PrometheusMetrics(url)
        with pytest.raises(MetricsUnavailable, match="unexpected document"):
            await source.read("bench", 30.0, {}, [])
    finally:
        await runner.cleanup()


@pytest.mark.asyncio
async def test_a_failed_tick_clears_what_an_earlier_tick_said_about_services():
    cluster = GatedCluster()
    rt = Runtime(cluster=cluster, emit_event=lambda *a: None, clock=lambda: 1e6)
    good = await run_tick(rt, "p", "bench", SPEC, TickState())
    assert good["managedServices"] == 1 and good["services"][0]["name"] == "svc-0"
    # Kopf merges each status patch into the last: keys a failed tick leaves out would keep
    # saying the Service is managed.
    bad_policy = {**SPEC, "policy": {"configMap": {"name": "p"}, "sha256": "0" * 64}}
    failed = await run_tick(rt, "p", "bench", bad_policy, TickState())
    assert failed["services"] == [] and failed["managedServices"] == 0 and failed["policySha256"] is None
    invalid = await run_tick(rt, "p", "bench", {**SPEC, "mode": "Sometimes"}, TickState())
    assert invalid["services"] == [] and invalid["mode"] is None
    assert invalid["conditions"][0]["reason"] == "InvalidSpec"


@pytest.mark.asyncio
async def test_a_write_the_fresh_object_did_not_need_is_not_reported():
    class Vanishing(GatedCluster):
        async def write(self, holder, intent):
            return False        # what the adapter answers for a 404 or a change made in between

    events = []
    rt = Runtime(cluster=Vanishing(), emit_event=lambda *a: events.append(a[1:3]), clock=lambda: 1e6)
    status = await run_tick(rt, "p", "bench", SPEC, TickState())
    # Before: a TargetApplied Event and "1 writes" for a target that was never set.
    assert events == [] and status["conditions"][0]["message"].endswith("0 writes")
    assert "not written" in status["services"][0]["message"]


@pytest.mark.asyncio
async def test_a_busy_revision_without_request_series_is_named_in_the_metrics_condition():
    # The autoscaler's gauges answer; the queue-proxy histogram queries find nothing (queue-proxy
    # not scraped in the last 5 minutes, or its series lack the labels): rate and latency read 0.
    async def query(request):
        q = request.query["query"]
        value = "1e9" if "timestamp(" in q else "3"
        result = [] if "invocation_duration" in q else [{"metric": {"kn_revision_name": "svc-0-00001"},
                                                         "value": [1e9, value]}]
        return aiohttp.web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})

    runner, url = await serve_prometheus(query)
    try:
        async with aiohttp.ClientSession() as http:
            rt = Runtime(cluster=GatedCluster(), emit_event=lambda *a: None, clock=lambda: 1e9, http=http)
            spec = {**SPEC, "metrics": {"prometheus": {"url": url}}}
            status = await run_tick(rt, "p", "bench", spec, TickState())
    finally:
        await runner.cleanup()
    metrics = next(c for c in status["conditions"] if c["type"] == "MetricsAvailable")
    assert metrics["status"] == "True" and metrics["reason"] == "ReadWithoutRequestSeries"
    assert "svc-0-00001" in metrics["message"] and "read as 0" in metrics["message"]
    # With the histogram series present the condition is the plain Read.
    assert without_request_series({"ready_pods": {"r": 2.0}, "request_rate": {"r": 0.0}}) == []
    assert without_request_series({"ready_pods": {"r": 0.0}}) == []      # scaled to zero: nothing to say


@pytest.mark.asyncio
async def test_off_restores_even_when_the_rest_of_the_spec_is_invalid():
    """Off is the way back out; with inverted bounds it once restored nothing."""
    cluster = GatedCluster()
    annotations = cluster.revisions["svc-0-00001"]["metadata"]["annotations"]
    annotations.update({TARGET: "40", ORIGINAL: "70", OWNER: "p"})
    rt = Runtime(cluster=cluster, emit_event=lambda *a: None, clock=lambda: 1e6)
    status = await run_tick(rt, "p", "bench", {**SPEC, "mode": "Off", "bounds": {"minTarget": 10, "maxTarget": 5}},
                            TickState())
    assert annotations.get(TARGET) == "70" and ORIGINAL not in annotations and OWNER not in annotations
    assert status["conditions"][0]["reason"] == "InvalidSpec"
    assert "Off restored the revisions this policy managed" in status["conditions"][0]["message"]
    # A paused Service keeps a hand-set target, as under a valid Off.
    annotations.update({TARGET: "55", ORIGINAL: "70", OWNER: "p"})
    cluster.services[0]["metadata"].setdefault("annotations", {})[PAUSED] = "true"
    status = await run_tick(rt, "p", "bench", {**SPEC, "mode": "Off", "bounds": {"minTarget": 10, "maxTarget": 5}},
                            TickState())
    assert annotations.get(TARGET) == "55" and annotations.get(ORIGINAL) == "70"
    assert "paused Services excepted" in status["conditions"][0]["message"]
    # So does one whose pause cannot be read: it may have meant one.
    cluster.services[0]["metadata"]["annotations"][PAUSED] = "yes"
    await run_tick(rt, "p", "bench", {**SPEC, "mode": "Off", "bounds": {"minTarget": 10, "maxTarget": 5}},
                   TickState())
    assert annotations.get(TARGET) == "55" and annotations.get(ORIGINAL) == "70"


@pytest.mark.asyncio
async def test_a_failed_write_on_a_split_service_is_said_on_its_revision_too():
    # Two revisions share the traffic; the write to the second fails. The Service-level reason said
    # WriteFailed while that revision's own entry still said it was applied.
    from kpilot_operator.knative import WriteFailed

    class Failing(GatedCluster):
        async def write(self, holder, intent):
            if holder.name == "svc-0-00002":
                raise WriteFailed("conflicts, 5 times")
            return await super().write(holder, intent)

    cluster = Failing()
    _split(cluster)
    rt = Runtime(cluster=cluster, emit_event=lambda *a: None, clock=lambda: 1e6)
    status = await run_tick(rt, "p", "bench", SPEC, TickState())
    (service,) = status["services"]
    entries = {e["name"]: e for e in service["revisionStatus"]}
    assert service["reason"] == "WriteFailed"
    assert entries["svc-0-00002"]["reason"] == "WriteFailed" and "conflicts" in entries["svc-0-00002"]["message"]
    assert entries["svc-0-00002"]["appliedTarget"] == 100            # still what it runs: Knative's default
    assert entries["svc-0-00001"]["reason"] != "WriteFailed" and entries["svc-0-00001"]["appliedTarget"] == 30


@pytest.mark.asyncio
async def test_two_policies_over_a_split_service_are_both_in_conflict():
    # A rollout: q manages the old revision, p (an overlapping selector) takes the new one. Each saw
    # the other's claim only on a revision entry, and both said Ready=True while each drove half
    # the Service, without the one Warning Event a claimed Service gets.
    cluster = GatedCluster()
    _split(cluster)
    cluster.revisions["svc-0-00001"]["metadata"]["annotations"].update({TARGET: "40", ORIGINAL: "70", OWNER: "q"})
    events = []
    rt = Runtime(cluster=cluster, emit_event=lambda body, kind, reason, message: events.append(reason),
                 clock=lambda: 1e6)
    state = TickState()
    status = await run_tick(rt, "p", "bench", SPEC, state)
    ready = status["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "Conflict")
    assert ready["message"].endswith("managed by another policy: svc-0")
    assert events.count("ClaimedByOtherPolicy") == 1
    await run_tick(rt, "p", "bench", SPEC, state)                  # an Event when it starts, not every tick
    assert events.count("ClaimedByOtherPolicy") == 1
    status_q = await run_tick(rt, "q", "bench", SPEC, TickState())
    assert status_q["conditions"][0]["reason"] == "Conflict"
    # Neither takes the other's revision.
    owners = {n: r["metadata"]["annotations"].get(OWNER) for n, r in cluster.revisions.items()}
    assert owners == {"svc-0-00001": "q", "svc-0-00002": "p"}


@pytest.mark.asyncio
@pytest.mark.parametrize("outcome", ["fails", "is no longer needed"])
async def test_a_write_that_did_not_happen_is_not_reported_as_applied(outcome):
    # One revision, so the Service-level fields are all the status shows: they said the new target
    # was applied (30) while the revision still ran Knative's default (100).
    from kpilot_operator.knative import WriteFailed

    class Unwritten(GatedCluster):
        async def write(self, holder, intent):
            if outcome == "fails":
                raise WriteFailed("HTTP 403: forbidden")
            return False                  # the fresh object changed: the write was skipped

    cluster = Unwritten()
    rt = Runtime(cluster=cluster, emit_event=lambda *a: None, clock=lambda: 1e6)
    (service,) = (await run_tick(rt, "p", "bench", SPEC, TickState()))["services"]
    assert service["lastDecision"] == 30 and service["appliedTarget"] == 100
    assert TARGET not in cluster.revisions["svc-0-00001"]["metadata"]["annotations"]
    assert ("forbidden" if outcome == "fails" else "not written") in service["message"]


@pytest.mark.asyncio
@pytest.mark.parametrize("then", ["an invalid spec under Off", "a policy that does not load"])
async def test_a_tick_that_reads_nothing_exports_no_reading_age_or_stale_count(then):
    # Both gauges kept the last value of the tick that read the metrics: an alert on a 40 s reading
    # age kept firing after the policy was switched Off or stopped loading.
    from prometheus_client import REGISTRY

    cluster = GatedCluster()
    rt = Runtime(cluster=cluster, emit_event=lambda *a: None, clock=lambda: 1e6)
    labels = {"namespace": "bench", "policy": "p"}
    from kpilot_operator import telemetry
    await run_tick(rt, "p", "bench", SPEC, TickState())
    telemetry.READING_AGE.labels(**labels).set(40.0)     # as a Prometheus tick reading old samples sets it
    assert REGISTRY.get_sample_value("kpilot_stale_revisions", labels) == 0.0
    spec = ({**SPEC, "mode": "Off", "bounds": {"minTarget": 5, "maxTarget": 1}} if then.startswith("an invalid")
            else {**SPEC, "policy": {"configMap": {"name": "p"}, "sha256": "0" * 64}})
    status = await run_tick(rt, "p", "bench", spec, TickState())
    assert status["conditions"][0]["reason"] == ("InvalidSpec" if then.startswith("an invalid") else "PolicyNotLoaded")
    assert REGISTRY.get_sample_value("kpilot_reading_age_seconds", labels) is None
    assert REGISTRY.get_sample_value("kpilot_stale_revisions", labels) is None


@pytest.mark.asyncio
async def test_a_call_after_the_client_closed_is_an_api_error_not_a_crash():
    # On SIGTERM Kopf may leave a tick running ("orphaned") past the cleanup that closes the
    # client: its next call raised RuntimeError from the shut-down pool, a traceback and exit 1.
    from kubernetes import client

    from kpilot_operator.kube import ApiError, KubeApi

    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"
    api = KubeApi(configuration)
    await api.close()
    with pytest.raises(ApiError, match="the operator is stopping") as err:
        await api.call(api.core.list_namespace)
    assert err.value.status == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("spec, failing, kind", [
    (SPEC, "list_services", "KnativeMissing"),                       # Knative's CRDs went mid-tick
    ({**SPEC, "mode": "Off", "maxStepRatio": 0}, "list_services", "KnativeMissing"),   # an invalid Off
    ({**SPEC, "mode": "Off", "maxStepRatio": 0}, "list_services", "ApiUnavailable"),
    (SPEC, "knative", "ApiUnavailable"),
])
async def test_every_tick_that_fails_on_the_cluster_is_counted(spec, failing, kind):
    # kpilot_errors_total is what an alert watches: a fault that ends a tick counts wherever it
    # happens (Knative going between two reads, or an invalid spec's Off restore, counted nothing).
    from prometheus_client import REGISTRY

    from kpilot_operator.knative import KnativeMissing
    from kpilot_operator.kube import ApiError
    from kpilot_operator.tick import ApiUnavailable

    class Faulty(GatedCluster):
        pass

    async def fail(*args, **kwargs):
        raise KnativeMissing("serving.knative.dev CRDs not found") if kind == "KnativeMissing" \
            else ApiError(503, "Service Unavailable")

    setattr(Faulty, failing, fail)
    labels = {"namespace": "bench", "policy": f"counted-{failing}-{kind}-{spec['mode']}", "kind": kind}
    before = REGISTRY.get_sample_value("kpilot_errors_total", labels) or 0.0
    rt = Runtime(cluster=Faulty(), emit_event=lambda *a: None, clock=lambda: 1e6)
    try:
        status = await run_tick(rt, labels["policy"], "bench", spec, TickState())
        assert status["conditions"][0]["reason"] == "KnativeNotInstalled"
    except ApiUnavailable:
        assert kind == "ApiUnavailable"
    assert REGISTRY.get_sample_value("kpilot_errors_total", labels) == before + 1


def _overflowing_policy() -> bytes:
    """A policy that passes every load check (finite weights) and answers NaN: relu(inf) - relu(inf)."""
    import numpy as np

    from kpilot.action import ActionSpec
    from kpilot.observation import N_FEATURES
    from kpilot.policy import policy_to_bytes

    w1 = np.zeros((2, N_FEATURES))
    w1[:, 0] = 1e308
    return policy_to_bytes(layers=[(w1, np.zeros(2)), (np.array([[1.0, -1.0]]), np.zeros(1))],
                           obs_mean=np.zeros(N_FEATURES), obs_var=np.ones(N_FEATURES),
                           action_spec=ActionSpec(1.0, 200.0), activation="relu")


@pytest.mark.asyncio
@pytest.mark.filterwarnings("ignore:.*encountered in matmul:RuntimeWarning")
async def test_a_policy_answering_nan_holds_the_target_and_the_status_stays_valid_json():
    # Before: NaN slipped through the guardrails as maxTarget (past the step limit), and
    # lastDecision=NaN made the API server refuse this status patch and every later one.
    from prometheus_client import REGISTRY

    data = _overflowing_policy()
    cluster = GatedCluster()
    cluster.policy = data
    cluster.revisions["svc-0-00001"]["metadata"]["annotations"][TARGET] = "70"
    events = []
    rt = Runtime(cluster=cluster, emit_event=lambda *a: events.append(a[1:]), clock=lambda: 1e6)
    labels = {"namespace": "bench", "policy": "nan", "kind": "InvalidDecision"}
    before = REGISTRY.get_sample_value("kpilot_errors_total", labels) or 0.0
    spec = {**SPEC, "policy": {"configMap": {"name": "p"}, "sha256": sha256_hex(data)}}
    status = await run_tick(rt, "nan", "bench", spec, TickState())

    json.dumps(status, allow_nan=False)          # what the API server accepts
    svc = status["services"][0]
    assert svc["reason"] == "InvalidDecision" and svc["appliedTarget"] == 70 and "lastDecision" not in svc
    assert svc["message"] == ("svc-0-00001: the policy's output is not a finite number (nan); "
                              "holding the current target (check the policy file)")
    assert cluster.writes == 0
    assert cluster.revisions["svc-0-00001"]["metadata"]["annotations"] == {TARGET: "70"}
    assert ("Warning", "InvalidDecision", svc["message"]) in events
    assert REGISTRY.get_sample_value("kpilot_errors_total", labels) == before + 1


@pytest.mark.asyncio
async def test_metrics_read_without_a_usable_reading_are_not_available():
    # Prometheus answers every query with nothing for this namespace (a relabelling mistake): every
    # revision holds, then falls back; MetricsAvailable and Ready said True all the while.
    async def query(request):
        return aiohttp.web.json_response({"status": "success", "data": {"resultType": "vector", "result": []}})

    runner, url = await serve_prometheus(query)
    try:
        async with aiohttp.ClientSession() as http:
            rt = Runtime(cluster=GatedCluster(), emit_event=lambda *a: None, clock=lambda: 1e9, http=http)
            status = await run_tick(rt, "p", "bench", {**SPEC, "metrics": {"prometheus": {"url": url}}},
                                    TickState())
    finally:
        await runner.cleanup()
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["MetricsAvailable"]["status"] == "False"
    assert conditions["MetricsAvailable"]["reason"] == "NoUsableReading"
    assert "none of the 1 revisions decided for has a usable reading" in conditions["MetricsAvailable"]["message"]
    assert conditions["Ready"]["status"] == "False"
    assert status["services"][0]["reason"] == "MetricsStaleHolding"
    assert "Prometheus scrapes the autoscaler" in conditions["MetricsAvailable"]["message"]


@pytest.mark.asyncio
async def test_podautoscalers_without_a_scale_are_not_available_metrics_either():
    # metrics: kubernetes, and a PodAutoscaler that reports no scale yet: nothing to decide on, and
    # the message points at the PodAutoscalers, not at a Prometheus this policy does not use.
    cluster = GatedCluster()
    cluster.pas = [{"metadata": {"name": "svc-0-00001"}, "status": {}}]
    rt = Runtime(cluster=cluster, emit_event=lambda *a: None, clock=lambda: 1e9)
    status = await run_tick(rt, "p", "bench", SPEC, TickState())
    metrics = next(c for c in status["conditions"] if c["type"] == "MetricsAvailable")
    assert metrics["status"] == "False" and metrics["reason"] == "NoUsableReading"
    assert "PodAutoscalers report actualScale" in metrics["message"] and "Prometheus" not in metrics["message"]


@pytest.mark.asyncio
async def test_a_status_not_taken_is_tried_again_backing_off_and_dropped_once_a_later_tick_speaks():
    from kpilot_operator.kube import ApiError

    class Refusing(GatedCluster):
        refuse = True

        async def write_policy_status(self, namespace, name, status):
            self.status_tries = getattr(self, "status_tries", 0) + 1
            if self.refuse:
                raise ApiError(503, "the server is currently unable to handle the request")
            await super().write_policy_status(namespace, name, status)

    cluster, clock = Refusing(), [1e6]
    memo = kopf.Memo(runtime=Runtime(cluster=cluster, emit_event=lambda *a: None, clock=lambda: clock[0]))
    spec = {**SPEC, "decisionIntervalSeconds": 60}

    async def timer_run_at(t, body=None):
        clock[0] = 1e6 + t
        await _call(handlers.decide_and_apply, memo, spec=spec, body=body or {}, patch=kopf.Patch(),
                    meta={"name": "p", "namespace": "bench", "generation": 1})

    tries = []
    for t in range(0, 40):                      # a timer run each second, as the Deployment runs it
        await timer_run_at(t)
        tries.append(cluster.status_tries)
    # The tick at 0 s, then again after 1, 2, 4, 8 and 16 s: not each second (one PATCH a second per
    # policy through an outage).
    assert [t for t in range(1, 40) if tries[t] > tries[t - 1]] == [1, 3, 7, 15, 31]
    assert memo.tick.unwritten_status["mode"] == "Enforce"
    cluster.refuse = False
    await timer_run_at(60)                      # the next tick's status is written at once
    assert memo.tick.unwritten_status is None and cluster.statuses[("bench", "p")]["lastTick"] == iso(1e6 + 60)
    # Refused again at the next tick (120 s); meanwhile another replica led (peering paused this
    # one) and wrote a later tick's status: this one's is dropped, not written over it.
    cluster.refuse = True
    await timer_run_at(120)
    assert memo.tick.unwritten_status["lastTick"] == iso(1e6 + 120)
    cluster.refuse, before = False, cluster.status_tries
    await timer_run_at(130, body={"status": {"lastTick": iso(1e6 + 125)}})
    assert memo.tick.unwritten_status is None and cluster.status_tries == before
