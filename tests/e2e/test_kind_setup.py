"""The kind tier's set-up, checked without a cluster: it must be right before anyone spends the
twenty minutes `make e2e-kind` takes to find out."""

from __future__ import annotations

import re
import shutil
import subprocess

import jsonschema
import pytest
import yaml

from envtest.knative_crds import knative_dir
from kind_objects import INGRESS, KIND_CONFIG, ROOT, e2e_policy, hello_service

E2E = ROOT / "tests/e2e"


def test_kind_config_runs_a_kubernetes_knative_1_23_supports_and_publishes_kouriers_node_port():
    assert (KIND_CONFIG["kind"], KIND_CONFIG["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    (node,) = KIND_CONFIG["nodes"]
    # Pinned by digest: a tag may be rebuilt for a later kind release.
    major, minor = map(int, re.fullmatch(r"kindest/node:v(\d+)\.(\d+)\.\d+@sha256:[0-9a-f]{64}",
                                         node["image"]).group(1, 2))
    assert (major, minor) >= (1, 34), "Knative Serving 1.23 needs Kubernetes >= 1.34"
    # kind-up.sh makes Kourier a NodePort on the port the node publishes.
    script = (E2E / "kind-up.sh").read_text()
    assert f"NODE_PORT={INGRESS['containerPort']}" in script
    assert 30000 <= INGRESS["containerPort"] <= 32767 and INGRESS["listenAddress"] == "127.0.0.1"


def test_the_overlay_changes_only_the_operator_image():
    if not shutil.which("kubectl"):
        pytest.skip("kubectl not on PATH: cannot build the kustomizations")

    def build(path):
        out = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return [d for d in yaml.safe_load_all(out.stdout) if d]

    base, overlay = build(ROOT / "manifests"), build(E2E / "overlay")
    tag = re.search(r"^IMAGE=(\S+)", (E2E / "kind-up.sh").read_text(), re.M).group(1)
    (deployment,) = [d for d in overlay if d["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == tag
    assert not tag.endswith(":latest")      # a loaded image the node must not try to pull
    for doc in base:
        if doc["kind"] == "Deployment":
            doc["spec"]["template"]["spec"]["containers"][0]["image"] = tag
    assert overlay == base


def _schema(crd: dict, version: str) -> dict:
    return next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("mode", ["DryRun", "Enforce", "Off"])
def test_the_policy_the_tier_creates_is_valid_and_uses_the_shipped_policy(mode):
    crd = yaml.safe_load((ROOT / "manifests/crd.yaml").read_text())
    policy = e2e_policy(mode)
    jsonschema.Draft7Validator(_schema(crd, "v1alpha1")).validate(policy)
    sample = yaml.safe_load((ROOT / "manifests/sample-policy.yaml").read_text())
    assert policy["spec"]["policy"] == sample["spec"]["policy"]     # path mounted, sha of the shipped one


def test_the_knative_service_the_tier_creates_matches_the_knative_1_23_crd():
    crd_file = knative_dir() / "service.yaml"
    if not crd_file.is_file():
        pytest.skip(f"Knative 1.23 CRDs not found in {knative_dir()} (set KPILOT_KNATIVE_CRDS)")
    jsonschema.Draft7Validator(_schema(yaml.safe_load(crd_file.read_text()), "v1")).validate(hello_service())
