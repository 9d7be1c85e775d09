"""Plain helpers for the operator tests (imported by name: a conftest module is not importable
reliably when several test folders have one)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import kopf
import kubernetes.config.kube_config


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


@contextlib.asynccontextmanager
async def running_operator(*, peering: str | None = None, identity: str | None = None, **memo):
    """Kopf's real operator (watch, timers, patches, finalizers) in its own thread and event loop.

    Its own loop, because at exit Kopf waits for every task of the loop it runs in, and the test's
    loop also runs the mock API server; the test loop keeps serving while the operator stops.
    With `peering` (a peering object's name) it runs as a replica among others, as in the
    Deployment, under `identity` (replicas in one process must not share Kopf's default one).
    """
    stop, ready = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(kopf.operator(standalone=peering is None, peering_name=peering, identity=identity,
                                      clusterwide=True, stop_flag=stop, ready_flag=ready, memo=kopf.Memo(**memo)))
        except BaseException as exc:  # surfaced by the test, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=main, name=f"kopf-operator-{identity}" if identity else "kopf-operator",
                              daemon=True)
    thread.start()
    try:
        await eventually(ready.is_set, timeout=15, what="the operator to start")
        yield thread
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 15)
    assert not errors, errors
