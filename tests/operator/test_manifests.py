"""Every manifest checked against its schema; Knative test objects against the Knative 1.23 CRDs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from envtest.knative_crds import knative_dir
from kpilot.policy import load_policy, sha256_hex
from operator_support import autoscaling_policy, knative_pa, knative_revision, knative_service

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
KNATIVE = knative_dir()    # $KPILOT_KNATIVE_CRDS, else ../shared/reference/knative


def docs(name):
    return [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]


def crd_schema(crd: dict, version: str) -> dict:
    return next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]


POLICY_SCHEMA = crd_schema(docs("crd.yaml")[0], "v1alpha1")


def validate_policy(obj):
    jsonschema.Draft7Validator(POLICY_SCHEMA).validate(obj)


def test_sample_policy_validates_and_its_sha_matches_the_shipped_policy():
    sample = docs("sample-policy.yaml")[0]
    validate_policy(sample)
    shipped = MANIFESTS / "policies/default/policy.json"
    assert sample["spec"]["policy"]["sha256"] == sha256_hex(shipped.read_bytes()), \
        "update manifests/sample-policy.yaml policy.sha256 after replacing the default policy"
    load_policy(shipped, expected_sha256=sample["spec"]["policy"]["sha256"])
    top = ROOT / "policies/default/policy.json"
    if top.exists():
        assert top.read_bytes() == shipped.read_bytes(), "copy policies/default/policy.json into manifests/"


def test_test_policies_validate():
    validate_policy(autoscaling_policy("p", "ns", sha="a" * 64, prom_url="http://127.0.0.1:9090"))
    validate_policy(autoscaling_policy("p", "ns", sha="a" * 64, prom_url=None, mode="Off"))


@pytest.mark.parametrize("patch", [
    {"mode": "Sometimes"},
    {"decisionIntervalSeconds": 0},
    {"bounds": {"minTarget": 0, "maxTarget": 10}},
    {"bounds": {"minTarget": 1}},
    {"policy": {"path": "/p", "sha256": "abc"}},
    {"policy": {"sha256": "a" * 64}},
    {"policy": {"path": "/p", "configMap": {"name": "c"}, "sha256": "a" * 64}},
    {"metrics": {"prometheus": {"url": "ftp://x"}}},
    {"metrics": {}},
    {"maxStepRatio": 0},
    {"band": 0.5},
    {"cooldownSeconds": -1},
    {"selector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}},
], ids=lambda p: next(iter(p)))
def test_crd_schema_rejects_bad_specs(patch):
    obj = autoscaling_policy("p", "ns", sha="a" * 64, prom_url="http://127.0.0.1:9090")
    obj["spec"].update(patch)
    with pytest.raises(jsonschema.ValidationError):
        validate_policy(obj)


def test_crd_has_status_subresource_printer_columns_and_required_fields():
    version = docs("crd.yaml")[0]["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert {c["name"] for c in version["additionalPrinterColumns"]} >= {"Mode", "Ready", "Policy", "Metrics"}
    assert set(POLICY_SCHEMA["properties"]["spec"]["required"]) == {"selector", "policy", "metrics"}
    assert POLICY_SCHEMA["properties"]["spec"]["properties"]["mode"]["enum"] == ["Enforce", "DryRun", "Off"]


@pytest.mark.parametrize("crd_file, version, obj", [
    ("service.yaml", "v1", knative_service("svc", "ns", {"svc-00001": 80, "svc-00002": 20},
                                           annotations={"kpilot.dev/paused": "true"})),
    ("revision.yaml", "v1", knative_revision("svc-00001", "ns", "svc", target="70", container_concurrency=10)),
    ("podautoscaler.yaml", "v1alpha1", knative_pa("svc-00001", "ns", "svc", target="70")),
], ids=["service", "revision", "podautoscaler"])
def test_knative_test_objects_match_the_knative_1_23_crds(crd_file, version, obj):
    if not (KNATIVE / crd_file).is_file():
        pytest.skip(f"Knative 1.23 CRDs not found in {KNATIVE} (set KPILOT_KNATIVE_CRDS)")
    crd = yaml.safe_load((KNATIVE / crd_file).read_text())
    assert obj["kind"] == crd["spec"]["names"]["kind"]
    jsonschema.Draft7Validator(crd_schema(crd, version)).validate(obj)


def require_kubectl():
    """The kustomize builds need kubectl: without it the checks before this call have passed and
    the build is reported as skipped (.ci/run requires kubectl, so CI never skips it)."""
    if not shutil.which("kubectl"):
        pytest.skip("kubectl not on PATH: the kustomize build was not checked")


def test_kustomization_references_exist_and_build():
    kust = docs("kustomization.yaml")[0]
    for res in kust["resources"]:
        assert (MANIFESTS / res).is_file(), res
    for gen in kust["configMapGenerator"]:
        for entry in gen["files"]:
            assert (MANIFESTS / entry.split("=", 1)[-1]).is_file(), entry
    require_kubectl()
    out = subprocess.run(["kubectl", "kustomize", str(MANIFESTS)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    built = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert {"CustomResourceDefinition", "ClusterRole", "Deployment", "ConfigMap"} <= {d["kind"] for d in built}
    # Kopf's peering CRDs are shared by every Kopf operator: `kubectl delete -k manifests/` must
    # not take them (and the other operators' peering objects) away; they are applied on their own.
    crds = {d["metadata"]["name"] for d in built if d["kind"] == "CustomResourceDefinition"}
    assert crds == {"autoscalingpolicies.kpilot.dev"}
    peering = {d["metadata"]["name"] for d in docs("peering.yaml")}
    assert peering == {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}


def test_rbac_is_least_privilege():
    objs = {(d["kind"], d["metadata"]["name"]): d for d in docs("rbac.yaml")}
    role = objs["ClusterRole", "kpilot-operator"]
    sa = objs["ServiceAccount", "kpilot-operator"]
    binding = objs["ClusterRoleBinding", "kpilot-operator"]
    assert sa["metadata"]["namespace"] == "kpilot-system"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kpilot-operator", "namespace": "kpilot-system"}]
    for rule in role["rules"]:
        assert "secrets" not in rule["resources"] and "*" not in rule["verbs"] and "*" not in rule["resources"]
        if "configmaps" in rule["resources"]:   # Knative's autoscaler settings only, read-only
            assert rule["resourceNames"] == ["config-autoscaler"] and rule["verbs"] == ["get"], rule
        if {"patch", "update", "create", "delete"} & set(rule["verbs"]):
            allowed = {"revisions", "podautoscalers", "autoscalingpolicies", "autoscalingpolicies/status",
                       "events", "clusterkopfpeerings", "kopfpeerings"}
            assert set(rule["resources"]) <= allowed, rule
            assert "delete" not in rule["verbs"] and "update" not in rule["verbs"]


def test_deployment_is_hardened():
    dep = docs("deployment.yaml")[0]
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] and pod["serviceAccountName"] == "kpilot-operator"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["readinessProbe"] and container["livenessProbe"] and container["resources"]["requests"]
    # Kopf names its peer from POD_ID, else from the passwd entry an arbitrary UID lacks (a crash).
    assert {"name": "POD_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]
    # Startup waits for the peering CRDs; the liveness probe alone restarted it into CrashLoopBackOff.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600


def test_the_two_replicas_survive_a_node_lost_or_drained():
    # Both could land on one node: losing it stopped every decision, and Off could not restore.
    dep = docs("deployment.yaml")[0]
    labels = dep["spec"]["selector"]["matchLabels"]
    (spread,) = dep["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["labelSelector"]["matchLabels"] == labels
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"          # a one-node kind cluster still runs both
    (pdb,) = docs("pdb.yaml")
    assert pdb["kind"] == "PodDisruptionBudget" and pdb["spec"]["selector"]["matchLabels"] == labels
    assert pdb["spec"]["minAvailable"] == 1 < dep["spec"]["replicas"]
    assert "pdb.yaml" in yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"]


def test_dockerfile_installs_the_operator_extra_without_torch():
    text = (ROOT / "operator/Dockerfile").read_text()
    assert ".[operator]" in text and "torch" not in text.replace("no torch", "") and "USER" in text


def test_the_simulator_cache_the_image_builds_needs_no_training_libraries():
    # The image has the `operator` extra only; its build step once imported the training
    # environment, which needs stable-baselines3, and would have failed the build.
    # None in sys.modules: `import torch` raises ImportError, as where it is not installed.
    blocked = ("import sys, runpy\n"
               "for name in ('stable_baselines3', 'torch', 'tensorboard', 'matplotlib'):\n"
               "    sys.modules[name] = None\n"
               "runpy.run_module('kpilot.sim.warmup', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr


def test_the_readmes_patches_move_retune_to_another_namespace(tmp_path):
    # With the overlay's `namespace:` the RoleBinding moved and the Job, still reading `default`,
    # was refused every run: the README gives patches instead, and they must do what it says.
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"For namespace `shop`:\n\n```yaml\n(.*?)```", readme, re.S)
    assert block, "the README's retune patches for another namespace"
    require_kubectl()
    rel = os.path.relpath(MANIFESTS, tmp_path)
    overlay = {"resources": [rel], "components": [f"{rel}/retune"], **yaml.safe_load(block[1])}
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    out = subprocess.run(["kubectl", "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    built = [d for d in yaml.safe_load_all(out.stdout) if d]
    binding = next(d for d in built if d["kind"] == "RoleBinding" and d["metadata"]["name"] == "kpilot-retune")
    job = next(d for d in built if d["kind"] == "CronJob")
    args = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert binding["metadata"]["namespace"] == "shop" == args[args.index("--namespace") + 1]
    assert binding["subjects"][0]["namespace"] == job["metadata"]["namespace"]      # the Job's own account


def test_the_retune_component_builds_into_an_overlay_and_is_hardened(tmp_path):
    retune = MANIFESTS / "retune"
    component = yaml.safe_load((retune / "kustomization.yaml").read_text())
    assert component["kind"] == "Component" and all((retune / r).is_file() for r in component["resources"])
    cron = yaml.safe_load((retune / "cronjob.yaml").read_text())
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["serviceAccountName"] == "kpilot-retune" and pod["securityContext"]["runAsNonRoot"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["image"] == docs("deployment.yaml")[0]["spec"]["template"]["spec"]["containers"][0]["image"]
    # The simulator's compiled code lives in the writable /tmp: the root filesystem is read-only.
    assert {"name": "NUMBA_CACHE_DIR", "value": "/tmp/numba"} in container["env"]
    assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])
    # ... copied there from the cache the image compiled at build time, for any CPU, by an
    # initContainer of the same image with the same mount (else every run compiles it again).
    (init,) = pod["initContainers"]
    assert init["image"] == container["image"] and init["securityContext"]["readOnlyRootFilesystem"] is True
    assert init["command"] == ["cp", "-r", "/opt/kpilot/numba-cache", "/tmp/numba"]
    assert init["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    dockerfile = (ROOT / "operator/Dockerfile").read_text()
    assert "NUMBA_CACHE_DIR=/opt/kpilot/numba-cache python -m kpilot.sim.warmup" in dockerfile
    assert re.search(r"^ENV [^\n]*(\\\n[^\n]*)*NUMBA_CPU_NAME=generic", dockerfile, re.M)
    objs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all((retune / "rbac.yaml").read_text()) if d}
    assert objs["ClusterRole", "kpilot-retune"]["rules"] == [
        {"apiGroups": ["serving.knative.dev"], "resources": ["services"], "verbs": ["list", "patch"]}]
    assert ("ClusterRoleBinding", "kpilot-retune") not in objs       # bound per namespace only
    require_kubectl()
    rel = os.path.relpath(MANIFESTS, tmp_path)           # kustomize refuses absolute roots
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(
        {"resources": [rel], "components": [f"{rel}/retune"]}))
    out = subprocess.run(["kubectl", "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    built = [d for d in yaml.safe_load_all(out.stdout) if d]
    config_map = next(d["metadata"]["name"] for d in built if d["kind"] == "ConfigMap")
    job = next(d for d in built if d["kind"] == "CronJob")
    volumes = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "default-policy", "configMap": {"name": config_map}} in volumes   # the generated name
