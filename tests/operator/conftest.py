"""Fixtures for the operator tests: kmock (extended) + fake Prometheus + the real Kopf operator."""

from __future__ import annotations

import os

os.environ.setdefault("KPILOT_TIMER_RESOLUTION_S", "0.2")   # before the handlers are imported
os.environ.setdefault("KPILOT_METRICS_PORT", "0")

import aiohttp
import kmock
import pytest_asyncio
import yaml

import kpilot_operator.handlers  # noqa: F401,E402  (registers the handlers)
from operator_helpers import running_operator, use_kubeconfig
from operator_support import FakePrometheus, VersionedKubernetes, declare_resources


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


@pytest_asyncio.fixture
async def operator(k8s, prom):
    async with running_operator() as thread:
        yield thread
