"""Test support for the operator: kmock extended with resourceVersion and faults, a fake
Prometheus on loopback, Knative object builders, and a policy whose output we choose.

kmock 0.8 merges patches blindly and keeps no resourceVersion; Kopf (and kpilot) use JSON patches
guarded by a `test` op on /metadata/resourceVersion. `VersionedKubernetes` stamps and bumps the
resourceVersion on every write, applies JSON patches with real semantics (a failed `test` is 422,
as on a real API server), and injects faults (409, 5xx, dropped watches, slow responses) that
never change the stored state.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import re
import time
import uuid
from dataclasses import dataclass

import aiohttp.web
import attrs
import jsonpatch
import jsonpointer
import kmock
import numpy as np

from kpilot.action import ActionSpec
from kpilot.observation import N_FEATURES
from kpilot.policy import policy_to_bytes, sha256_hex

POLICIES = "kpilot.dev/v1alpha1/autoscalingpolicies"
SERVICES = "serving.knative.dev/v1/services"
REVISIONS = "serving.knative.dev/v1/revisions"
PAS = "autoscaling.internal.knative.dev/v1alpha1/podautoscalers"


def merge_diff(old: dict, new: dict) -> dict:
    """The JSON merge patch that turns `old` into `new` (None removes a key)."""
    out: dict = {k: None for k in old.keys() - new.keys()}
    for key, value in new.items():
        if isinstance(old.get(key), dict) and isinstance(value, dict):
            sub = merge_diff(old[key], value)
            if sub:
                out[key] = sub
        elif key not in old or old[key] != value:
            out[key] = value
    return out


@dataclass
class Fault:
    """Answer matching requests with an error / a delay / a dropped stream, `times` times."""
    method: str            # "GET", "PATCH", "POST", "DELETE", or "*" (a watch is a GET ?watch=true)
    path: str              # a regex searched in the URL path
    status: int = 0        # e.g. 409, 500, 503; 0 = no error
    delay: float = 0.0     # seconds before answering (slow response)
    drop: bool = False     # answer 200 with an empty body: a watch stream the server closed
    times: int = 1
    watch: bool | None = None   # only watch requests (True), only non-watch (False), either (None)
    before: object = None       # a callable run first: e.g. a concurrent writer changing the object
    hits: int = 0

    def matches(self, request: kmock.Request) -> bool:
        is_watch = request.params.get("watch") in ("true", "1")
        return (self.hits < self.times and self.method in ("*", str(request.method.value))
                and re.search(self.path, request.url.path) is not None
                and (self.watch is None or self.watch == is_watch))


@attrs.define(kw_only=True)
class VersionedKubernetes(kmock.KubernetesEmulator):
    faults: list[Fault] = attrs.field(factory=list)
    log: list[tuple[str, str]] = attrs.field(factory=list)    # (method, path) of every request
    _versions: itertools.count = attrs.field(factory=lambda: itertools.count(1000), init=False)

    def fault(self, *args, **kwargs) -> Fault:
        fault = Fault(*args, **kwargs)
        self.faults.append(fault)
        return fault

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        self.log.append((str(request.method.value), request.url.path))
        for fault in self.faults:
            if fault.matches(request):
                fault.hits += 1
                if fault.before is not None:
                    fault.before()
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.status:
                    return await self._render_error(kmock.KubernetesError(
                        status=fault.status, reason="Injected", message=f"injected HTTP {fault.status}"))
                if fault.drop:
                    return aiohttp.web.Response(status=200, body=b"", content_type="application/json")
                break
        if request.resource is not None and request.action in (kmock.action.CREATE, kmock.action.UPDATE):
            response_or_data = await self._stamp(request)
            if isinstance(response_or_data, aiohttp.web.StreamResponse):
                return response_or_data
            # Requests are frozen; evolve() would drop the raw request the response is written to.
            object.__setattr__(request, "data", response_or_data)
        return await super()._handle(request)

    async def _stamp(self, request: kmock.Request):
        data = copy.deepcopy(request.data)
        if request.action == kmock.action.UPDATE:
            key = (request.resource, request.namespace, request.name)
            async with self._lock:
                stored = self.objects[key].raw if key in self.objects and not self.objects[key].deleted else None
            if stored is None:
                return data   # the emulator answers 404
            if isinstance(data, list):   # a JSON patch (RFC 6902)
                try:
                    new = jsonpatch.apply_patch(stored, data)
                except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
                    return await self._render_error(kmock.KubernetesError(
                        status=422, reason="Invalid", message=f"the JSON patch does not apply: {exc}"))
                data = merge_diff(stored, new)
            else:   # a merge patch; with a resourceVersion it is a precondition, as on a real server
                wanted = (data.get("metadata") or {}).get("resourceVersion")
                if wanted and wanted != stored.get("metadata", {}).get("resourceVersion"):
                    return await self._render_error(kmock.KubernetesError(
                        status=409, reason="Conflict", message="the object has been modified"))
            # As on a real server: a change to the spec (not through /status) is a new generation.
            if (not request.subresource and isinstance(data.get("spec"), dict)
                    and jsonpatch.make_patch(stored.get("spec") or {},
                                             {**(stored.get("spec") or {}), **data["spec"]}).patch):
                data.setdefault("metadata", {})["generation"] = stored["metadata"].get("generation", 1) + 1
        else:
            meta = data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):   # Kopf's Events use generateName
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            data.setdefault("metadata", {}).setdefault("uid", str(uuid.uuid4()))
            data["metadata"].setdefault("generation", 1)
            data["metadata"].setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            if request.namespace:
                data["metadata"].setdefault("namespace", request.namespace)
        data.setdefault("metadata", {})["resourceVersion"] = str(next(self._versions))
        return data

    def put(self, resource: str, obj: dict) -> dict:
        """Store an object directly (no watch event), stamped like an API write."""
        obj = copy.deepcopy(obj)
        meta = obj["metadata"]
        meta["resourceVersion"] = str(next(self._versions))
        meta.setdefault("uid", str(uuid.uuid4()))
        self.objects[resource, meta.get("namespace"), meta["name"]] = obj
        return obj

    def edit_annotations(self, resource: str, namespace: str, name: str, **annotations: str) -> None:
        """A concurrent writer: change annotations and bump the resourceVersion (no watch event)."""
        obj = copy.deepcopy(self.get(resource, namespace, name))
        obj["metadata"].setdefault("annotations", {}).update(annotations)
        self.put(resource, obj)

    def get(self, resource: str, namespace: str, name: str) -> dict:
        return self.objects[resource, namespace, name].raw

    def annotations(self, resource: str, namespace: str, name: str) -> dict:
        return dict(self.get(resource, namespace, name).get("metadata", {}).get("annotations") or {})


def declare_resources(k8s: VersionedKubernetes) -> None:
    """What discovery reports: the project's CRD and the Knative resources it reads."""
    info = kmock.ResourceInfo
    k8s.resources[POLICIES] = info(kind="AutoscalingPolicy", singular="autoscalingpolicy", namespaced=True,
                                   verbs={"list", "watch", "get", "patch", "create", "delete"},
                                   subresources={"status"})
    k8s.resources[SERVICES] = info(kind="Service", singular="service", namespaced=True, verbs={"list", "get"})
    k8s.resources[REVISIONS] = info(kind="Revision", singular="revision", namespaced=True,
                                    verbs={"list", "get", "patch"})
    k8s.resources[PAS] = info(kind="PodAutoscaler", singular="podautoscaler", namespaced=True,
                              verbs={"list", "get", "patch"})
    k8s.resources["v1/events"] = info(kind="Event", singular="event", namespaced=True, verbs={"create"})
    # Kopf waits for these two in discovery before it starts any watch.
    k8s.resources["v1/namespaces"] = info(kind="Namespace", singular="namespace", namespaced=False,
                                          verbs={"list", "watch", "get"})
    k8s.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = info(
        kind="CustomResourceDefinition", singular="customresourcedefinition", namespaced=False,
        verbs={"list", "watch", "get"})
    k8s.resources["v1/configmaps"] = info(kind="ConfigMap", singular="configmap", namespaced=True, verbs={"get"})


# --- Knative objects ---------------------------------------------------------------------------

def knative_service(name: str, ns: str, revisions: dict[str, int], *, labels: dict | None = None,
                    annotations: dict | None = None) -> dict:
    """A Service whose status.traffic splits over `revisions` (name -> percent)."""
    meta = {"name": name, "namespace": ns, "labels": labels if labels is not None else {"kpilot": "on"}}
    if annotations:
        meta["annotations"] = annotations
    latest = list(revisions)[-1]
    return {
        "apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": meta,
        "spec": {"template": {"spec": {"containers": [{"image": "ghcr.io/example/app:1"}]}}},
        "status": {"latestReadyRevisionName": latest, "latestCreatedRevisionName": latest,
                   "traffic": [{"revisionName": r, "percent": p, "latestRevision": r == latest}
                               for r, p in revisions.items()],
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }


def knative_revision(name: str, ns: str, service: str, *, target: str | None = None,
                     container_concurrency: int = 0) -> dict:
    annotations = {"autoscaling.knative.dev/target": target} if target is not None else {}
    return {
        "apiVersion": "serving.knative.dev/v1", "kind": "Revision",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations,
                     "labels": {"serving.knative.dev/service": service,
                                "serving.knative.dev/configuration": service,
                                "serving.knative.dev/revision": name}},
        "spec": {"containerConcurrency": container_concurrency,
                 "containers": [{"image": "ghcr.io/example/app:1"}]},
        "status": {"actualReplicas": 3, "desiredReplicas": 3},
    }


def knative_pa(name: str, ns: str, service: str, *, target: str | None = None,
               desired: int = 3, actual: int = 3) -> dict:
    annotations = {"autoscaling.knative.dev/target": target} if target is not None else {}
    return {
        "apiVersion": "autoscaling.internal.knative.dev/v1alpha1", "kind": "PodAutoscaler",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations,
                     "labels": {"serving.knative.dev/service": service, "serving.knative.dev/revision": name}},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{name}-deployment"},
                 "protocolType": "http", "reachability": "Reachable"},
        "status": {"desiredScale": desired, "actualScale": actual, "serviceName": f"{name}-private",
                   "metricsServiceName": f"{name}-private",
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }


# --- policies ----------------------------------------------------------------------------------

SPEC = ActionSpec(1.0, 200.0)


def constant_policy_bytes(target: float, manifest: dict | None = None) -> bytes:
    """A valid exported policy that always answers `target` (zero weights, the bias picks it),
    with `manifest` as its training record where given."""
    action = float(SPEC.to_action(target))
    return policy_to_bytes(layers=[(np.zeros((1, N_FEATURES)), np.array([action]))],
                           obs_mean=np.zeros(N_FEATURES), obs_var=np.ones(N_FEATURES), action_spec=SPEC,
                           extra=None if manifest is None else {"manifest": manifest})


def policy_configmap(name: str, ns: str, data: bytes) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns},
            "data": {"policy.json": data.decode()}}


def autoscaling_policy(name: str, ns: str, *, sha: str, prom_url: str | None, mode: str = "Enforce",
                       **overrides) -> dict:
    spec = {
        "selector": {"matchLabels": {"kpilot": "on"}},
        "policy": {"configMap": {"name": "kpilot-policy", "key": "policy.json"}, "sha256": sha},
        "mode": mode, "decisionIntervalSeconds": 1,
        "bounds": {"minTarget": 2, "maxTarget": 150},
        "maxStepRatio": 10.0, "cooldownSeconds": 0,
        "metrics": {"prometheus": {"url": prom_url, "timeoutSeconds": 2}} if prom_url else {"kubernetes": {}},
    }
    spec.update(overrides)
    return {"apiVersion": "kpilot.dev/v1alpha1", "kind": "AutoscalingPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


# --- fake Prometheus ---------------------------------------------------------------------------

HEALTHY = {"concurrency_stable": 30.0, "concurrency_panic": 32.0, "ready_pods": 3.0, "desired_pods": 3.0,
           "panic": 0.0, "request_rate": 20.0, "latency_mean_s": 0.1, "latency_p95_s": 0.3}
_METRIC_FIELDS = (  # (substring of the query, field); most specific first
    ("histogram_quantile", "latency_p95_s"),
    ("timestamp(", "sample_time"),
    ("kn_serving_invocation_duration_seconds_sum", "latency_sum_rate"),
    ("kn_serving_invocation_duration_seconds_count", "request_rate"),
    ("kn_revision_concurrency_stable", "concurrency_stable"),
    ("kn_revision_concurrency_panic", "concurrency_panic"),
    ("kn_revision_pods_count", "ready_pods"),
    ("kn_revision_pods_desired", "desired_pods"),
    ("kn_revision_panic_mode", "panic"),
)


class FakePrometheus:
    """The Prometheus HTTP API's /api/v1/query over a dict of per-revision readings."""

    def __init__(self):
        self.series: dict[tuple[str, str], dict[str, float]] = {}
        self.down = False
        self.queries: list[str] = []
        self.sample_age_s = 0.0
        self.url = ""
        self._runner: aiohttp.web.AppRunner | None = None

    def set(self, ns: str, revision: str, **fields: float) -> None:
        self.series[ns, revision] = {**HEALTHY, **fields}

    async def _query(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        if self.down:
            return aiohttp.web.Response(status=503, text="down")
        query = request.query["query"]
        self.queries.append(query)
        field = next(f for token, f in _METRIC_FIELDS if token in query)
        ns = re.search(r'k8s_namespace_name="([^"]+)"', query)[1]
        now = time.time()
        result = []
        for (series_ns, rev), values in self.series.items():
            if series_ns != ns:
                continue
            if field == "sample_time":
                value = now - self.sample_age_s
            elif field == "latency_sum_rate":
                value = values["latency_mean_s"] * values["request_rate"]
            else:
                value = values[field]
            result.append({"metric": {"kn_revision_name": rev, "k8s_namespace_name": ns},
                           "value": [now, repr(float(value))]})
        return aiohttp.web.json_response({"status": "success",
                                          "data": {"resultType": "vector", "result": result}})

    async def start(self) -> "FakePrometheus":
        app = aiohttp.web.Application()
        app.router.add_get("/api/v1/query", self._query)
        self._runner = aiohttp.web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()


def sha(data: bytes) -> str:
    return sha256_hex(data)
