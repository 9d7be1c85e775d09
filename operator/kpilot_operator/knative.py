"""The Kubernetes side of a tick: read Knative objects, detect the write path, patch targets.

Where the target lives depends on the Knative version: from 1.21 the
Revision's annotation is the source of truth for its PodAutoscaler (a direct PA patch would be
reverted); up to 1.20 the PA's own annotation is read and a Revision patch never reaches it.
The version is read from the cluster: the knative-serving namespace's labels
(`app.kubernetes.io/version`, `serving.knative.dev/release`), else the Revision CRD's
`app.kubernetes.io/version` label. Unknown ("devel") means a current release: the Revision path.
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import re
import time
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, NoReturn, Protocol

from kpilot.action import is_paused, quoted, valid_band
from kpilot_operator.kube import ApiError, KubeApi, Resource
from kpilot_operator.annotations import (BAND, BASE_TARGET, CLUSTER_KEYS, KNATIVE_DEFAULT_TARGET, UTILIZATION, Assert,
                                         Holder, Restore, annotation_delta)
from kpilot_operator.reconcile import ServiceView
from kpilot_operator.spec import GROUP, PLURAL, VERSION, selector_matches, selector_to_query

SERVICES: Resource = ("serving.knative.dev", "v1", "services")
REVISIONS: Resource = ("serving.knative.dev", "v1", "revisions")
PODAUTOSCALERS: Resource = ("autoscaling.internal.knative.dev", "v1alpha1", "podautoscalers")
POLICIES: Resource = (GROUP, VERSION, PLURAL)
REVISION_CRD = "revisions.serving.knative.dev"
KNATIVE_NAMESPACE = "knative-serving"
AUTOSCALER_CONFIGMAP = "config-autoscaler"
DEFAULT_TARGET_KEY = "container-concurrency-target-default"
VERSION_LABELS = ("serving.knative.dev/release", "app.kubernetes.io/version")
SERVICE_LABEL = "serving.knative.dev/service"
WRITE_ATTEMPTS = 5
VERSION_CACHE_S = 300.0


class KnativeMissing(Exception):
    """Knative Serving's CRDs are not installed (or not served) in this cluster."""


class WriteFailed(Exception):
    """A target write that kept failing after its retries."""


@dataclass(frozen=True)
class KnativeInfo:
    version: str | None          # e.g. "1.23.0"; None when the cluster does not say
    write_path: str              # "Revision" | "PodAutoscaler"
    source: str                  # where the version was read
    default_target: float = KNATIVE_DEFAULT_TARGET   # config-autoscaler's container-concurrency-target-default
    default_target_source: str = "assumed (Knative's default)"
    cluster_autoscaling: Mapping[str, str] = field(default_factory=dict)   # annotations.CLUSTER_KEYS


def parse_version(text: str | None) -> tuple[int, int] | None:
    match = re.match(r"^v?(\d+)\.(\d+)", text or "")
    return (int(match[1]), int(match[2])) if match else None


def write_path_for(version: str | None) -> str:
    parsed = parse_version(version)
    return "PodAutoscaler" if parsed is not None and parsed <= (1, 20) else "Revision"


def traffic_revisions(service: dict) -> tuple[str, ...]:
    """Revisions that carry traffic now (status.traffic with a positive percent), in order."""
    names: list[str] = []
    for entry in (service.get("status") or {}).get("traffic") or []:
        name = entry.get("revisionName")
        if name and (entry.get("percent") or 0) > 0 and name not in names:
            names.append(name)
    return tuple(names)


def service_view(service: dict) -> ServiceView:
    meta = service.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    body = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", **service}
    paused, base, band, invalid = None, None, None, ""
    try:
        # A pause kpilot cannot read is held as one (it may have meant one), with the reason why.
        paused = is_paused(annotations)
        base = _annotated_number(annotations, BASE_TARGET, "a target > 0", lambda v: v > 0)
        band = _annotated_number(annotations, BAND, "a factor >= 1", valid_band)
    except ValueError as exc:
        invalid = str(exc)
    return ServiceView(meta["name"], meta.get("namespace", ""), paused, traffic_revisions(service), body,
                       base_target=base, band=band, invalid=invalid)


def _annotated_number(annotations: dict, key: str, meaning: str, ok) -> float | None:
    """A number annotation on the Service, or None; ValueError (one line) if it is not `meaning`."""
    if key not in annotations:
        return None
    try:
        value = float(annotations[key])
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and ok(value)):
        raise ValueError(f"{key}={quoted(annotations[key])} is not {meaning}")
    return value


def _container_concurrency(revision: dict | None) -> float:
    """The revision's hard limit (0: none); Knative caps the target at it."""
    cc = ((revision or {}).get("spec") or {}).get("containerConcurrency") or 0
    try:
        cc = float(cc)
    except (TypeError, ValueError):
        return 0.0
    return cc if math.isfinite(cc) and cc > 0 else 0.0


def holders_from(write_path: str, revisions: Iterable[dict], podautoscalers: Iterable[dict],
                 default_target: float = KNATIVE_DEFAULT_TARGET,
                 cluster_autoscaling: Mapping[str, str] | None = None) -> dict[str, Holder]:
    revs = {r["metadata"]["name"]: r for r in revisions}
    objs = revs.values() if write_path == "Revision" else podautoscalers
    out = {}
    for obj in objs:
        meta = obj["metadata"]
        out[meta["name"]] = Holder(write_path, meta.get("namespace", ""), meta["name"],
                                   (meta.get("labels") or {}).get(SERVICE_LABEL),
                                   meta.get("resourceVersion"), dict(meta.get("annotations") or {}),
                                   default_target, _container_concurrency(revs.get(meta["name"])),
                                   dict(cluster_autoscaling or {}))
    return out


def cluster_autoscaling_from(configmap: dict) -> dict[str, str]:
    """config-autoscaler's stable window, panic window and utilization, keyed by the revision
    annotations that override them (annotations.CLUSTER_KEYS). The utilization as a percentage: the
    ConfigMap also takes a fraction in (0, 1] (0.7 is 70 %), which the annotation does not."""
    data = (configmap or {}).get("data") or {}
    settings = {annotation: str(data[key]) for annotation, key in CLUSTER_KEYS.items() if key in data}
    if UTILIZATION in settings:
        settings[UTILIZATION] = _percentage(settings[UTILIZATION])
    return settings


def _percentage(text: str) -> str:
    """container-concurrency-target-percentage as a percentage: Knative reads a value in (0, 1] as a
    fraction (config-autoscaler's own comment: "0.7 => 70%")."""
    try:
        value = float(text)
    except ValueError:
        return text
    return f"{value * 100:g}" if 0 < value <= 1 else text


def default_target_from(text: str | None) -> float | None:
    """config-autoscaler's container-concurrency-target-default (`text`, as the ConfigMap has it),
    if it is a positive number."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def json_patch_ops(obj: dict, delta: dict[str, str | None]) -> list[dict]:
    """A JSON patch guarded by the object's resourceVersion: it applies to what we read, or 422s."""
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations")
    ops: list[dict] = [{"op": "test", "path": "/metadata/resourceVersion", "value": meta.get("resourceVersion")}]
    if annotations is None:
        ops.append({"op": "add", "path": "/metadata/annotations",
                    "value": {k: v for k, v in delta.items() if v is not None}})
        return ops
    for key, value in delta.items():
        path = f"/metadata/annotations/{_escape(key)}"
        if value is None:
            if key in annotations:
                ops.append({"op": "remove", "path": path})
        else:
            ops.append({"op": "add", "path": path, "value": value})
    return ops


class Cluster(Protocol):
    async def knative(self) -> KnativeInfo: ...
    async def list_services(self, namespace: str, selector: dict) -> list[ServiceView]: ...
    async def list_holders(self, namespace: str, write_path: str) -> tuple[dict[str, Holder], list[dict]]: ...
    async def write(self, holder: Holder, intent: Assert | Restore) -> bool: ...
    async def policy_names(self, namespace: str) -> set[str] | None: ...
    async def read_configmap(self, namespace: str, name: str, key: str) -> bytes: ...
    async def read_secret(self, namespace: str, name: str, key: str) -> str: ...
    async def write_policy_status(self, namespace: str, name: str, status: dict) -> None: ...


class KnativeCluster:
    """The real adapter, over KubeApi. `version_override` (KPILOT_KNATIVE_VERSION) skips detection."""

    def __init__(self, api: KubeApi, *, version_override: str | None = None, backoff_s: float = 0.2):
        self.api = api
        self.version_override = version_override or os.environ.get("KPILOT_KNATIVE_VERSION") or None
        self.backoff_s = backoff_s
        self._info: tuple[float, KnativeInfo] | None = None

    async def knative(self) -> KnativeInfo:
        if self._info and time.monotonic() - self._info[0] < VERSION_CACHE_S:
            return self._info[1]
        info = await self._detect()
        self._info = (time.monotonic(), info)
        return info

    async def _detect(self) -> KnativeInfo:
        info = await self._detect_version()
        # The target a revision without the annotation runs at: the cluster's, where readable
        # (the shipped ClusterRole grants config-autoscaler); Knative's own default otherwise.
        try:
            configmap = await self.api.get_configmap(KNATIVE_NAMESPACE, AUTOSCALER_CONFIGMAP)
        except ApiError as exc:
            if exc.status not in (403, 404):
                raise
            why = "not granted" if exc.status == 403 else "not found"
            return replace(info, default_target_source=f"assumed (Knative's default): {AUTOSCALER_CONFIGMAP} "
                                                       f"{why}, so its windows are assumed Knative's too")
        text = ((configmap or {}).get("data") or {}).get(DEFAULT_TARGET_KEY)
        value = default_target_from(text)
        info = replace(info, cluster_autoscaling=cluster_autoscaling_from(configmap))
        if value is None:
            # A stock install sets nothing (its keys sit in `_example`): Knative's default, not a fault.
            why = (f"does not set {DEFAULT_TARGET_KEY}: Knative's default" if text is None
                   else f"has an unusable {DEFAULT_TARGET_KEY} ({text!r}); assumed Knative's default")
            return replace(info, default_target_source=f"{AUTOSCALER_CONFIGMAP} {why}, {KNATIVE_DEFAULT_TARGET:g}")
        return replace(info, default_target=value, default_target_source=AUTOSCALER_CONFIGMAP)

    async def _detect_version(self) -> KnativeInfo:
        if self.version_override:
            return KnativeInfo(self.version_override.lstrip("v"), write_path_for(self.version_override),
                               "KPILOT_KNATIVE_VERSION")
        for read, name, what in ((self.api.get_namespace, KNATIVE_NAMESPACE, "namespace knative-serving"),
                                 (self.api.get_crd, REVISION_CRD, "Revision CRD")):
            try:
                labels = (await read(name)).get("metadata", {}).get("labels") or {}
            except ApiError as exc:
                if exc.status == 404 and name == REVISION_CRD:
                    raise KnativeMissing("the Knative Serving CRDs are not installed") from None
                if exc.status in (403, 404):
                    continue
                raise
            for label in VERSION_LABELS:
                if parse_version(labels.get(label)):
                    version = labels[label].lstrip("v")
                    return KnativeInfo(version, write_path_for(version), f"{what} label {label}")
        return KnativeInfo(None, "Revision", "no version label; assuming Knative >= 1.21")

    async def _missing_on_404(self, exc: ApiError) -> NoReturn:
        """After a 404 listing Knative objects: KnativeMissing when Knative is gone (its Revision
        CRD too), else the error itself. A 404 for one kind alone (a CRD being reinstalled, a
        version no longer served) must not read as "nothing left to restore"."""
        if exc.status == 404:
            try:
                await self.api.get_crd(REVISION_CRD)
            except ApiError as crd:
                if crd.status == 404:
                    self._info = None   # re-detect once it is installed
                    raise KnativeMissing("the Knative Serving CRDs are not installed") from None
                raise
        raise exc

    async def list_services(self, namespace: str, selector: dict) -> list[ServiceView]:
        try:
            items = await self.api.list_objects(SERVICES, namespace, label_selector=selector_to_query(selector) or None)
        except ApiError as exc:
            await self._missing_on_404(exc)
        return [service_view(s) for s in items
                if selector_matches(selector, (s.get("metadata") or {}).get("labels"))]

    async def list_holders(self, namespace: str, write_path: str) -> tuple[dict[str, Holder], list[dict]]:
        """The target holders of the namespace, plus the PodAutoscalers (also a metrics source)."""
        try:
            revisions, pas = await asyncio.gather(
                self.api.list_objects(REVISIONS, namespace),
                self.api.list_objects(PODAUTOSCALERS, namespace))
        except ApiError as exc:
            await self._missing_on_404(exc)   # gone: nothing is left to hold a target
        info = self._info[1] if self._info else KnativeInfo(None, write_path, "")
        return holders_from(write_path, revisions, pas, info.default_target, info.cluster_autoscaling), pas

    async def policy_names(self, namespace: str) -> set[str] | None:
        """The AutoscalingPolicies of the namespace (one being deleted included); None if unreadable."""
        try:
            items = await self.api.list_objects(POLICIES, namespace)
        except ApiError:
            return None
        return {(p.get("metadata") or {}).get("name") for p in items}

    @staticmethod
    def _ref(holder: Holder) -> tuple[Resource, str, str]:
        return (REVISIONS if holder.kind == "Revision" else PODAUTOSCALERS), holder.namespace, holder.name

    async def write(self, holder: Holder, intent: Assert | Restore) -> bool:
        """Apply an intent; on a conflict re-read and recompute, on 5xx back off. True if written."""
        ref = self._ref(holder)
        obj = {"metadata": {"resourceVersion": holder.resource_version, "annotations": dict(holder.annotations)}}
        last: ApiError | None = None
        unanswered: dict[str, str | None] | None = None   # the changes of a patch whose answer was lost
        for attempt in range(WRITE_ATTEMPTS):
            annotations = obj["metadata"].get("annotations") or {}
            if unanswered is not None and all(annotations.get(k) == v for k, v in unanswered.items()):
                return True     # that patch was applied: its retry met our own change as a conflict
            delta = annotation_delta(annotations, intent)
            if not delta:
                return False
            try:
                await self.api.json_patch(*ref, json_patch_ops(obj, delta))
                return True
            except ApiError as exc:
                last = exc
                if exc.status == 0 or exc.status >= 500:    # it may have been applied all the same
                    unanswered = delta
                if exc.status == 404:
                    return False   # the revision is gone: nothing left to set or restore
                if exc.status in (409, 422):   # someone wrote in between: re-read, recompute
                    if attempt:     # the first at once (a race); again and again (a webhook's 422), back off
                        await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
                    try:
                        obj = await self.api.get_object(*ref)
                    except ApiError as reread:
                        if reread.status == 404:
                            return False
                        last = reread
                        await asyncio.sleep(self.backoff_s * 2 ** attempt)
                elif exc.status in (0, 429) or exc.status >= 500:
                    await asyncio.sleep(self.backoff_s * 2 ** attempt)
                else:
                    raise WriteFailed(str(exc)) from None
        raise WriteFailed(f"gave up after {WRITE_ATTEMPTS} attempts: {last}")

    async def write_policy_status(self, namespace: str, name: str, status: dict) -> None:
        """A merge patch of an AutoscalingPolicy's status: the keys given replace theirs."""
        await self.api.merge_patch_status(POLICIES, namespace, name, {"status": status})

    async def read_configmap(self, namespace: str, name: str, key: str) -> bytes:
        cm = await self.api.get_configmap(namespace, name)
        if key in (cm.get("binaryData") or {}):
            return base64.b64decode(cm["binaryData"][key])
        if key not in (cm.get("data") or {}):
            raise KeyError(f"configmap {name} has no key {key!r}")
        return cm["data"][key].encode()

    async def read_secret(self, namespace: str, name: str, key: str) -> str:
        secret = await self.api.get_secret(namespace, name)
        if key not in (secret.get("data") or {}):
            raise KeyError(f"secret {name} has no key {key!r}")
        try:
            return base64.b64decode(secret["data"][key], validate=True).decode().strip()
        except ValueError:       # binascii.Error and UnicodeDecodeError are ValueErrors
            raise KeyError(f"secret {name} key {key!r} is not a UTF-8 token") from None
