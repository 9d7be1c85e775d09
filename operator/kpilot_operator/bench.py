"""Scale benchmark: one decision tick for N services against a fake Prometheus on loopback.

The Kubernetes side is faked in-process (lists and patches cost what a dict costs), so the figure
is the operator's own cost per tick: 9 PromQL queries over HTTP for all revisions, parsing,
batched inference, guardrails, writes and status assembly.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import aiohttp.web
import numpy as np

from kpilot.action import ActionSpec
from kpilot.observation import N_FEATURES
from kpilot.policy import policy_to_bytes, sha256_hex
from kpilot_operator.knative import KnativeInfo, holders_from, service_view
from kpilot_operator.metrics import QUERIES_PER_TICK
from kpilot_operator.annotations import Assert, Holder, Restore, annotation_delta
from kpilot_operator.tick import Runtime, TickState, run_tick

NS = "bench"


class InMemoryCluster:
    """Knative objects in dicts; writes apply the same annotation deltas as the real adapter."""

    def __init__(self, services: int, policy: bytes):
        self.services = [{"metadata": {"name": f"svc-{i}", "namespace": NS, "labels": {"bench": "on"}},
                          "status": {"traffic": [{"revisionName": f"svc-{i}-00001", "percent": 100}]}}
                         for i in range(services)]
        self.revisions = {f"svc-{i}-00001": {"metadata": {
            "name": f"svc-{i}-00001", "namespace": NS, "resourceVersion": "1", "annotations": {},
            "labels": {"serving.knative.dev/service": f"svc-{i}"}}, "spec": {}} for i in range(services)}
        self.policy = policy
        self.policies: set[str] | None = None      # the AutoscalingPolicies there (None: unknown)
        self.writes = 0
        self.statuses: dict[tuple[str, str], dict] = {}   # (namespace, policy) -> its status

    async def knative(self) -> KnativeInfo:
        return KnativeInfo("1.23.0", "Revision", "bench")

    async def list_services(self, namespace, selector):
        return [service_view(s) for s in self.services]

    async def list_holders(self, namespace, write_path):
        return holders_from(write_path, self.revisions.values(), []), []

    async def write(self, holder: Holder, intent: Assert | Restore) -> bool:
        meta = self.revisions[holder.name]["metadata"]
        for key, value in annotation_delta(meta["annotations"], intent).items():
            if value is None:
                meta["annotations"].pop(key, None)
            else:
                meta["annotations"][key] = value
        self.writes += 1
        return True

    async def policy_names(self, namespace) -> set[str] | None:
        return self.policies

    async def read_configmap(self, namespace, name, key) -> bytes:
        return self.policy

    async def read_secret(self, namespace, name, key) -> str:
        raise KeyError(name)

    async def write_policy_status(self, namespace, name, status) -> None:
        self.statuses[(namespace, name)] = {**self.statuses.get((namespace, name), {}), **status}


async def _fake_prometheus(revisions: list[str], counter: list[int]) -> tuple[aiohttp.web.AppRunner, str]:
    rng = np.random.default_rng(1)

    async def query(request: aiohttp.web.Request) -> aiohttp.web.Response:
        counter[0] += 1
        now = time.time()
        result = [{"metric": {"kn_revision_name": rev}, "value": [now, str(now if "timestamp(" in request.query["query"]
                                                                        else float(v))]}
                  for rev, v in zip(revisions, rng.uniform(1, 50, len(revisions)))]
        return aiohttp.web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})

    return await serve_prometheus(query)


async def serve_prometheus(query) -> tuple[aiohttp.web.AppRunner, str]:
    """Serve `query` as Prometheus's /api/v1/query on a loopback port: (runner, base URL)."""
    app = aiohttp.web.Application()
    app.router.add_get("/api/v1/query", query)
    runner = aiohttp.web.AppRunner(app, access_log=None)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def _bench(services: int, ticks: int) -> dict:
    rng = np.random.default_rng(0)
    policy = policy_to_bytes(layers=[(rng.normal(0, 0.3, (64, N_FEATURES)), np.zeros(64)),
                                     (rng.normal(0, 0.3, (64, 64)), np.zeros(64)),
                                     (rng.normal(0, 0.3, (1, 64)), np.zeros(1))],
                             obs_mean=np.zeros(N_FEATURES), obs_var=np.ones(N_FEATURES),
                             action_spec=ActionSpec(1.0, 200.0))
    cluster = InMemoryCluster(services, policy)
    counter = [0]
    runner, url = await _fake_prometheus(list(cluster.revisions), counter)
    spec = {"selector": {"matchLabels": {"bench": "on"}},
            "policy": {"configMap": {"name": "p"}, "sha256": sha256_hex(policy)},
            "mode": "Enforce", "decisionIntervalSeconds": 30, "bounds": {"minTarget": 1, "maxTarget": 200},
            "maxStepRatio": 0.5, "cooldownSeconds": 0, "metrics": {"prometheus": {"url": url}}}
    clock = [time.time()]
    async with aiohttp.ClientSession() as http:
        rt = Runtime(cluster=cluster, emit_event=lambda *a: None, clock=lambda: clock[0], http=http)
        state, times, queries = TickState(), [], []
        try:
            for _ in range(ticks + 1):      # the first tick warms the policy cache and connections
                before = counter[0]
                t0 = time.perf_counter()
                status = await run_tick(rt, "bench", NS, spec, state)
                times.append(time.perf_counter() - t0)
                queries.append(counter[0] - before)
                clock[0] += 30
        finally:
            await runner.cleanup()
    assert status["managedServices"] == services, status.get("conditions")
    return {"operator_services": services, "operator_tick_s": round(statistics.median(times[1:]), 4),
            "operator_prom_queries_per_tick": max(queries), "operator_writes": cluster.writes}


def bench_tick(services: int = 1000, ticks: int = 5) -> dict:
    """Median per-tick time for `services` Knative Services (one revision each)."""
    result = asyncio.run(_bench(services, ticks))
    assert result["operator_prom_queries_per_tick"] == QUERIES_PER_TICK
    return result


if __name__ == "__main__":
    print(bench_tick())
