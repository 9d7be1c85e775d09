"""Fixtures for the operator tests: kmock (extended) + fake Prometheus + the real Kopf operator."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time

os.environ.setdefault("KPILOT_TIMER_RESOLUTION_S", "0.2")   # before the handlers are imported
os.environ.setdefault("KPILOT_METRICS_PORT", "0")

import aiohttp
import kmock
import kopf
import kubernetes.config.kube_config
import pytest
import pytest_asyncio
import yaml

import kpilot_operator.handlers  # noqa: F401,E402  (registers the handlers)
from operator_support import FakePrometheus, VersionedKubernetes, declare_resources


async def eventually(predicate, *, timeout: float = 10.0, interval: float = 0.1, what: str = "condition"):
    """Poll `predicate` (sync or async) until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
        except (KeyError, IndexError, TypeError, AssertionError) as exc:
            last_exc = exc
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}" + (f" (last: {last_exc!r})" if last_exc else ""))


def use_kubeconfig(monkeypatch, path) -> None:
    """Point the operator under test (Kopf's login and its own client) at this kubeconfig.

    Both load it through the `kubernetes` library, which reads $KUBECONFIG once, at import; a
    process started with KUBECONFIG set needs nothing more, an in-process test also sets the default.
    """
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))


@pytest_asyncio.fixture
async def k8s(tmp_path, monkeypatch):
    """The kmock API server on loopback with resourceVersion tracking, and a kubeconfig for it."""
    async with VersionedKubernetes() as server, kmock.Server(server):
        declare_resources(server)
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": str(server.url).rstrip("/")}}],
            "users": [{"name": "kmock", "user": {"token": "test"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
        }))
        use_kubeconfig(monkeypatch, kubeconfig)
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.setenv("KPILOT_KNATIVE_VERSION", "1.23.0")
        yield server


@pytest_asyncio.fixture
async def prom():
    fake = await FakePrometheus().start()
    yield fake
    await fake.stop()


@pytest_asyncio.fixture
async def api(k8s):
    """A plain HTTP client to the mock API (for the test's own writes, which Kopf then watches)."""
    async with aiohttp.ClientSession(base_url=str(k8s.url)) as session:
        yield session


@contextlib.asynccontextmanager
async def running_operator(**memo):
    """Kopf's real operator (watch, timers, patches, finalizers) in its own thread and event loop.

    Its own loop, because at exit Kopf waits for every task of the loop it runs in, and the test's
    loop also runs the mock API server; the test loop keeps serving while the operator stops.
    """
    stop, ready = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(kopf.operator(standalone=True, clusterwide=True, stop_flag=stop,
                                      ready_flag=ready, memo=kopf.Memo(**memo)))
        except BaseException as exc:  # surfaced by the test, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=main, name="kopf-operator", daemon=True)
    thread.start()
    try:
        await eventually(ready.is_set, timeout=15, what="the operator to start")
        yield thread
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 15)
    assert not errors, errors


@pytest_asyncio.fixture
async def operator(k8s, prom):
    async with running_operator() as thread:
        yield thread
