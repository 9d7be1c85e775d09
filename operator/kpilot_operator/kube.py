"""Kubernetes API access for the Knative adapter: the official `kubernetes` client, off the event loop.

Credentials come from the client library, the same way Kopf gets them (`kopf.login_via_client`):
in a Pod the ServiceAccount (`load_incluster_config`, token rotation included), elsewhere the
kubeconfig (`load_kube_config`: $KUBECONFIG, else ~/.kube/config; exec plugins such as EKS/GKE auth
and client certificates included, tokens re-fetched when they expire).

The client is synchronous: every call runs in a small thread pool of its own, so Kopf's event loop
never blocks. Responses are read as the server's JSON (`_preload_content=False`), the same dicts
whatever the resource, without building typed models for objects the operator only reads a few
fields of. Errors surface as `ApiError` with the HTTP status (0 for a transport failure).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import kopf
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kpilot import kube_credentials

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
Resource = tuple[str, str, str]     # (group, version, plural) of a custom resource


class ApiError(Exception):
    """An HTTP error from the API server; `status` is the code (0 for a transport failure)."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(f"HTTP {status}: {message}" if status else message)


def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """Kopf's credentials, read by the `kubernetes` client library like `load_configuration()`."""
    return kopf.login_via_client(**kwargs)


def load_configuration() -> client.Configuration:
    """In a Pod: the ServiceAccount; elsewhere: the usual kubeconfig (KUBECONFIG, ~/.kube/config)."""
    try:
        return kube_credentials.load_configuration()
    except kube_credentials.NoCredentials as exc:
        raise kopf.PermanentError(str(exc)) from None


def _message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body).get("message") or exc.reason or ""
    except (TypeError, ValueError, AttributeError):
        return exc.body or exc.reason or ""


class KubeApi:
    """The typed APIs the operator uses, each call in a thread; one connection pool for the operator."""

    def __init__(self, configuration: client.Configuration | None = None, *, timeout_s: float = 30.0,
                 workers: int = 16):
        configuration = configuration or load_configuration()
        configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0, workers)
        self.client = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self.client)
        self.custom = client.CustomObjectsApi(self.client)
        self.extensions = client.ApiextensionsV1Api(self.client)
        self.timeout_s = timeout_s
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="kpilot-kube")
        self._closed = False

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> dict:
        response = method(*args, _preload_content=False, _request_timeout=self.timeout_s, **kwargs)
        try:
            return json.loads(response.data)
        finally:
            response.release_conn()

    async def call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> dict:
        """`method(*args, **kwargs)` of one of the typed APIs, in the pool; the response's JSON."""
        what = f"{getattr(method, '__name__', method)}{tuple(a for a in args if not isinstance(a, (list, dict)))}"
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(self._call, method, *args, **kwargs))
        except ApiException as exc:
            raise ApiError(exc.status or 0, f"{what}: {_message(exc)}"[:500]) from None
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:   # ValueError: a cut-off body
            raise ApiError(0, f"{what}: {type(exc).__name__}: {exc}"[:500]) from None
        except RuntimeError:
            # A tick Kopf left running past shutdown ("orphaned") calls after close(): a transient
            # failure like any other, not a traceback and exit status 1 on SIGTERM.
            if self._closed:
                raise ApiError(0, f"{what}: the operator is stopping") from None
            raise

    async def close(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    # --- what the Knative adapter reads and writes -------------------------------------------

    async def get_object(self, resource: Resource, namespace: str, name: str) -> dict:
        group, version, plural = resource
        return await self.call(self.custom.get_namespaced_custom_object, group, version, namespace, plural, name)

    async def list_objects(self, resource: Resource, namespace: str, label_selector: str | None = None) -> list[dict]:
        group, version, plural = resource
        kwargs = {"label_selector": label_selector} if label_selector else {}
        return (await self.call(self.custom.list_namespaced_custom_object, group, version, namespace, plural,
                                **kwargs))["items"]

    async def json_patch(self, resource: Resource, namespace: str, name: str, ops: list[dict]) -> dict:
        """An RFC 6902 JSON patch (the content type is set explicitly: the default is a merge patch)."""
        group, version, plural = resource
        return await self.call(self.custom.patch_namespaced_custom_object, group, version, namespace, plural,
                               name, ops, _content_type=JSON_PATCH)

    async def merge_patch_status(self, resource: Resource, namespace: str, name: str, body: dict) -> dict:
        """An RFC 7386 merge patch of a custom object's status subresource."""
        group, version, plural = resource
        return await self.call(self.custom.patch_namespaced_custom_object_status, group, version, namespace,
                               plural, name, body, _content_type=MERGE_PATCH)

    async def get_namespace(self, name: str) -> dict:
        return await self.call(self.core.read_namespace, name)

    async def get_crd(self, name: str) -> dict:
        return await self.call(self.extensions.read_custom_resource_definition, name)

    async def get_configmap(self, namespace: str, name: str) -> dict:
        return await self.call(self.core.read_namespaced_config_map, name, namespace)

    async def get_secret(self, namespace: str, name: str) -> dict:
        return await self.call(self.core.read_namespaced_secret, name, namespace)

    async def ensure_peering(self, name: str, namespace: str | None = None) -> bool:
        """Create Kopf's peering object `name` unless it exists (a ClusterKopfPeering, or with
        `namespace` a KopfPeering there); True if created. Kopf needs the object before it acts,
        and the manifests cannot hold it: one `kubectl apply -k` cannot create a custom resource
        beside the CRD that defines it."""
        if namespace is None:
            plural, body = "clusterkopfpeerings", {"kind": "ClusterKopfPeering", "metadata": {"name": name}}
            get, create = self.custom.get_cluster_custom_object, self.custom.create_cluster_custom_object
            where: tuple[str, ...] = ()
        else:
            plural, body = "kopfpeerings", {"kind": "KopfPeering", "metadata": {"name": name, "namespace": namespace}}
            get, create = self.custom.get_namespaced_custom_object, self.custom.create_namespaced_custom_object
            where = (namespace,)
        try:
            await self.call(get, "kopf.dev", "v1", *where, plural, name)
            return False
        except ApiError as exc:
            if exc.status != 404:
                raise
        try:
            await self.call(create, "kopf.dev", "v1", *where, plural, {"apiVersion": "kopf.dev/v1", **body})
        except ApiError as exc:
            if exc.status != 409:            # another replica created it first
                raise
            return False
        return True


class PeeringUnavailable(Exception):
    """A peering object that cannot be created yet (its CRD not served, no permission): retried."""


def namespace_missing(exc: ApiError, namespace: str) -> bool:
    return exc.status == 404 and f'namespaces "{namespace}" not found' in str(exc)


async def ensure_peerings(api: KubeApi, name: str, namespaces: list[str | None], logger: logging.Logger
                          ) -> list[str]:
    """Create Kopf's peering object `name` where it is missing: the ClusterKopfPeering (None) or a
    KopfPeering in each namespace. Kopf pauses a namespace's watch, silently but for a debug line,
    until its peering exists. Returns the namespaces that do not exist yet (one must not hold up
    the others); PeeringUnavailable for any other failure."""
    missing = []
    for where in namespaces:
        kind = "ClusterKopfPeering" if where is None else f"KopfPeering in {where}"
        try:
            if await api.ensure_peering(name, where):
                logger.info("created the %s %s", kind, name)
        except ApiError as exc:
            if where is not None and namespace_missing(exc, where):
                logger.warning("namespace %s does not exist: its policies wait until it does "
                               "(its KopfPeering is created then)", where)
                missing.append(where)
                continue
            raise PeeringUnavailable(f"cannot create the {kind} {name}: {exc}") from None
    return missing


async def create_peerings_later(api: KubeApi, name: str, namespaces: list[str], logger: logging.Logger,
                                first_delay_s: float = 2.0, max_delay_s: float = 60.0) -> None:
    """Create the KopfPeering of each namespace that did not exist at start once it does, so that
    a namespace made after the operator is served without a restart (Kopf's watch of it resumes
    when its peering appears). Retries back off to a minute; other API errors are logged and
    retried likewise."""
    pending, delay = list(namespaces), first_delay_s
    while pending:
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay_s)
        for namespace in list(pending):
            try:
                if await api.ensure_peering(name, namespace):
                    logger.info("created the KopfPeering in %s %s", namespace, name)
                pending.remove(namespace)
            except ApiError as exc:
                if not namespace_missing(exc, namespace):
                    logger.warning("cannot create the KopfPeering in %s %s yet: %s", namespace, name, exc)
