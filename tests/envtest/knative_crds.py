"""Load the Knative Serving 1.23 CRDs from ../shared/reference/knative/ for a Kubernetes 1.20 API server.

The reference files are read at test time, never copied into the repository.

What Kubernetes 1.20 objects to, and why
-----------------------------------------
Knative 1.23's generated PodSpec schemas carry `default: ""` on string fields (LocalObjectReference
`name` in imagePullSecrets, env[].valueFrom.{configMap,secret}KeyRef.name, envFrom[].*Ref.name,
volumes[].configMap.name, projected sources, probes' grpc.service). A kube-apiserver 1.20 *built with
Go >= 1.19* rejects every one of them ("default: Invalid value: "null": must be of type string"): the
vendored OpenAPI type validator treats a value as null when
reflect.DeepEqual(reflect.Zero(T), reflect.ValueOf(v)), and since Go 1.19 both sides of that compare
point at the runtime's shared zero buffer for "". The 1.20.2 release binaries (Go 1.15) accept the
schemas as they are. `.ci/provision-envtest.sh` patches that check back to `v == nil` in the build, so
with its binaries the five CRDs install VERBATIM (no schema change at all) and empty strings in
custom resources validate as they do on a real 1.20 cluster.

For kube-apiserver 1.20 binaries built elsewhere with Go >= 1.19 (unpatched), `strip_empty_string_defaults`
is the smallest adaptation that installs: delete each `default: ""` the server rejects, and, because
1.20 requires every `x-kubernetes-list-map-keys` entry to be required or defaulted, add the one list-map
key that thereby loses its default (imagePullSecrets[].name) to its item schema's `required`. The
fixture applies it only when the server rejects the verbatim CRD, and records every edit.

Independently of the server version, `app.kubernetes.io/version: devel` (source tree) becomes the
release version (default 1.23.0), as in the published release asset serving-crds.yaml (SOURCE.txt).
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Iterator

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The five Serving CRDs the operator reads or writes, in install order.
CRD_FILES = ("service.yaml", "configuration.yaml", "revision.yaml", "route.yaml", "podautoscaler.yaml")
#: What the published release asset (serving-crds.yaml) puts where the source tree says "devel".
KNATIVE_RELEASE_VERSION = "1.23.0"


def knative_dir() -> Path:
    """Directory with the reference CRDs: $KPILOT_KNATIVE_CRDS, else <repo>/../shared/reference/knative."""
    env = os.environ.get("KPILOT_KNATIVE_CRDS")
    if env:
        return Path(env).resolve()
    return (REPO_ROOT.parent / "shared" / "reference" / "knative").resolve()


def load_reference_crds(directory: Path | None = None) -> list[dict[str, Any]]:
    """The unmodified CRD documents, in CRD_FILES order."""
    directory = directory or knative_dir()
    docs = []
    for name in CRD_FILES:
        with open(directory / name) as f:
            docs.extend(d for d in yaml.safe_load_all(f) if d)
    return docs


def _walk(node: Any, path: str) -> Iterator[tuple[str, dict]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def set_release_version(crd: dict[str, Any], release_version: str | None = KNATIVE_RELEASE_VERSION
                        ) -> tuple[dict[str, Any], list[str]]:
    """Copy of `crd` with app.kubernetes.io/version devel -> release_version (None: unchanged)."""
    crd = copy.deepcopy(crd)
    labels = crd["metadata"].setdefault("labels", {})
    if release_version and labels.get("app.kubernetes.io/version") == "devel":
        labels["app.kubernetes.io/version"] = release_version
        return crd, [f"{crd['metadata']['name']}: label app.kubernetes.io/version devel -> "
                     f"{release_version} (as the release asset)"]
    return crd, []


def strip_empty_string_defaults(crd: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Copy of `crd` installable on an unpatched Go>=1.19 build of kube-apiserver 1.20 (see module doc).

    1. every string property with `default: ""` loses the default;
    2. every x-kubernetes-list-map-keys entry that is then neither required nor defaulted is added
       to the list item schema's `required` (1.20's rule for list-map keys).
    """
    crd = copy.deepcopy(crd)
    name = crd["metadata"]["name"]
    changes: list[str] = []
    for version in crd["spec"]["versions"]:
        root = version.get("schema", {}).get("openAPIV3Schema")
        base = f"{version['name']}.openAPIV3Schema"
        for path, node in _walk(root, base):
            props = node.get("properties")
            if not isinstance(props, dict):
                continue
            for key, prop in props.items():
                if isinstance(prop, dict) and prop.get("type") == "string" and prop.get("default") == "":
                    del prop["default"]
                    changes.append(f'{name}: {path}.properties.{key}: removed default: ""')
        for path, node in _walk(root, base):
            if node.get("x-kubernetes-list-type") != "map":
                continue
            items = node.get("items") or {}
            props = items.get("properties") or {}
            for key in node.get("x-kubernetes-list-map-keys") or []:
                prop = props.get(key)
                if prop is None or key in (items.get("required") or []) or "default" in prop:
                    continue
                items.setdefault("required", []).append(key)
                changes.append(f"{name}: {path}.items.required += [{key!r}] (list-map key)")
    return crd, changes


def schema_of(crd: dict[str, Any]) -> list[Any]:
    """The parts of a CRD the API server validates with: versions' schemas and subresources."""
    return [(v["name"], v.get("schema"), v.get("subresources")) for v in crd["spec"]["versions"]]


if __name__ == "__main__":  # python tests/envtest/knative_crds.py -> prints the fallback adaptation
    for _crd in load_reference_crds():
        for _line in strip_empty_string_defaults(_crd)[1]:
            print(_line)
