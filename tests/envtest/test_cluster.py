"""The envtest fixture itself: a real kube-apiserver 1.20 + etcd with the Knative CRDs installed."""
from __future__ import annotations

import json
import os

import pytest

from envtest import knative_crds
from envtest.cluster import MANIFESTS, OPERATOR_USER, Cluster

SERVING = ("serving.knative.dev", "v1")
KNATIVE_CRDS = ("services.serving.knative.dev", "configurations.serving.knative.dev",
                "revisions.serving.knative.dev", "routes.serving.knative.dev",
                "podautoscalers.autoscaling.internal.knative.dev")


# --------------------------------------------------------------------- no server needed
@pytest.mark.skipif(not (knative_crds.knative_dir() / "revision.yaml").exists(),
                    reason="Knative reference CRDs not found (KPILOT_KNATIVE_CRDS)")
def test_fallback_adaptation_is_small_and_targeted():
    """The fallback for unpatched Go>=1.19 builds only drops `default: ""` and makes the one
    list-map key that loses its default required; route and podautoscaler need nothing."""
    per_crd = {}
    for crd in knative_crds.load_reference_crds():
        adapted, changes = knative_crds.strip_empty_string_defaults(crd)
        per_crd[crd["metadata"]["name"]] = changes
        assert adapted["metadata"] == crd["metadata"]
    assert per_crd["routes.serving.knative.dev"] == []
    assert per_crd["podautoscalers.autoscaling.internal.knative.dev"] == []
    for name in KNATIVE_CRDS[:3]:
        required = [c for c in per_crd[name] if "required +=" in c]
        assert len(required) == 1 and "imagePullSecrets.items.required += ['name']" in required[0]
        assert all('removed default: ""' in c for c in per_crd[name] if c not in required)


# --------------------------------------------------------------------- real server
@pytest.mark.envtest
def test_server_is_up_and_is_kubernetes_1_20(envtest):
    from kubernetes import client
    assert envtest.running
    with envtest.admin_client() as api:
        v = client.VersionApi(api).get_code()
        assert (v.major, v.minor) == ("1", "20"), v
    assert envtest.request("/readyz") == (200, b"ok")
    # The kubeconfig files work with the standard loader (what Kopf and `kpilot operator run` use).
    from kubernetes import config
    with config.new_client_from_config(config_file=str(envtest.admin_kubeconfig)) as api:
        names = [n.metadata.name for n in client.CoreV1Api(api).list_namespace().items]
        assert "default" in names


@pytest.mark.envtest
def test_kopf_reads_the_operator_kubeconfig(envtest, monkeypatch):
    import kopf
    monkeypatch.setenv("KUBECONFIG", str(envtest.operator_kubeconfig))
    info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    assert (info.server, info.token) == (envtest.url, envtest.operator_token)
    assert str(info.ca_path) == str(envtest.ca_path)


@pytest.mark.envtest
def test_knative_crds_established_and_verbatim(envtest):
    from kubernetes import client
    with envtest.admin_client() as api:
        ext = client.ApiextensionsV1Api(api)
        for name in KNATIVE_CRDS:
            crd = ext.read_custom_resource_definition(name)
            conds = {c.type: c.status for c in crd.status.conditions}
            assert conds.get("Established") == "True", (name, conds)
            assert crd.metadata.labels["app.kubernetes.io/version"] == knative_crds.KNATIVE_RELEASE_VERSION
    # With the provisioned binaries no schema edit is needed. Unpatched Go>=1.19 builds need the
    # fallback (knative_crds); accepted only when asked for, or CI would hide the regression.
    schema_edits = [c for c in envtest.knative_crd_changes if "label app.kubernetes.io/version" not in c]
    if schema_edits and os.environ.get("KPILOT_ENVTEST_ALLOW_CRD_EDITS") != "1":
        pytest.fail("the API server rejected the Knative CRDs as published and they were edited to "
                    "install (" + "; ".join(schema_edits) + "): use .ci/provision-envtest.sh's "
                    "binaries, or set KPILOT_ENVTEST_ALLOW_CRD_EDITS=1 to accept the edits", pytrace=False)
    if not schema_edits:
        for ref in knative_crds.load_reference_crds():
            code, raw = envtest.request(
                f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{ref['metadata']['name']}")
            assert code == 200
            assert knative_crds.schema_of(json.loads(raw)) == knative_crds.schema_of(ref)


@pytest.mark.envtest
def test_fallback_adaptation_is_accepted_by_kubernetes_1_20(envtest):
    """The fallback CRDs must satisfy 1.20's own rules (list-map keys required or defaulted):
    server-side dry-run under a renamed group, so nothing collides with the installed CRDs."""
    from kubernetes import client
    with envtest.admin_client() as api:
        ext = client.ApiextensionsV1Api(api)
        for ref in knative_crds.load_reference_crds()[:3]:
            crd, changes = knative_crds.strip_empty_string_defaults(ref)
            assert changes
            group = "fallback." + crd["spec"]["group"]
            crd["spec"]["group"] = group
            crd["metadata"]["name"] = f"{crd['spec']['names']['plural']}.{group}"
            ext.create_custom_resource_definition(crd, dry_run="All")
    # ...and the `required` edit is necessary: without it 1.20 refuses the list-map key.
    from kubernetes.client.exceptions import ApiException
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["imagePullSecrets"]["items"]["required"].remove("name")
    with envtest.admin_client() as api, pytest.raises(ApiException) as err:
        client.ApiextensionsV1Api(api).create_custom_resource_definition(crd, dry_run="All")
    assert err.value.status == 422
    assert "must have a default or be a required property" in err.value.body


@pytest.mark.envtest
def test_revision_create_patch_annotation_and_status(envtest, envtest_namespace):
    from kubernetes import client
    ns = envtest_namespace
    app = envtest.create_knative_app(ns, "hello", revisions=2)
    assert app["service"]["status"]["traffic"] == [
        {"revisionName": "hello-00002", "percent": 100, "latestRevision": True}]
    with envtest.admin_client() as api:
        co = client.CustomObjectsApi(api)
        rev = co.get_namespaced_custom_object(*SERVING, ns, "revisions", "hello-00002")
        assert rev["metadata"]["labels"]["serving.knative.dev/service"] == "hello"
        assert rev["status"]["actualReplicas"] == 1
        gen = rev["metadata"]["generation"]

        patched = co.patch_namespaced_custom_object(
            *SERVING, ns, "revisions", "hello-00002",
            {"metadata": {"annotations": {"autoscaling.knative.dev/target": "42"}}})
        assert patched["metadata"]["annotations"]["autoscaling.knative.dev/target"] == "42"
        assert patched["metadata"]["generation"] == gen  # metadata-only change

        st = co.patch_namespaced_custom_object_status(
            *SERVING, ns, "revisions", "hello-00002", {"status": {"desiredReplicas": 3}})
        assert st["status"]["desiredReplicas"] == 3
        assert st["metadata"]["annotations"]["autoscaling.knative.dev/target"] == "42"

        # The status subresource is real: status in a main-resource patch is ignored.
        co.patch_namespaced_custom_object(*SERVING, ns, "revisions", "hello-00002",
                                          {"status": {"desiredReplicas": 9}})
        again = co.get_namespaced_custom_object(*SERVING, ns, "revisions", "hello-00002")
        assert again["status"]["desiredReplicas"] == 3

        pa = co.get_namespaced_custom_object("autoscaling.internal.knative.dev", "v1alpha1", ns,
                                             "podautoscalers", "hello-00001")
        assert pa["status"]["desiredScale"] == 1


@pytest.mark.envtest
def test_empty_strings_validate_like_a_real_1_20(envtest, envtest_namespace):
    """Regression for the Go>=1.19 build: "" in a custom resource must be accepted, and the CRD's
    `default: ""` applied (imagePullSecrets [{}] -> [{name: ""}])."""
    from kubernetes import client
    if any('removed default: ""' in c for c in envtest.knative_crd_changes):
        if os.environ.get("KPILOT_ENVTEST_ALLOW_CRD_EDITS") == "1":
            pytest.skip("KPILOT_ENVTEST_ALLOW_CRD_EDITS=1: an unpatched Go>=1.19 kube-apiserver build "
                        "cannot validate empty strings as 1.20 does")
        pytest.fail("KUBEBUILDER_ASSETS holds an unpatched Go>=1.19 kube-apiserver build, which rejects "
                    "empty strings: use .ci/provision-envtest.sh", pytrace=False)
    body = {"apiVersion": "serving.knative.dev/v1", "kind": "Revision",
            "metadata": {"name": "empty-00001", "namespace": envtest_namespace},
            "spec": {"imagePullSecrets": [{}],
                     "containers": [{"image": "ghcr.io/example/app:1",
                                     "env": [{"name": "EMPTY", "value": ""}]}]}}
    with envtest.admin_client() as api:
        created = client.CustomObjectsApi(api).create_namespaced_custom_object(
            *SERVING, envtest_namespace, "revisions", body)
    assert created["spec"]["containers"][0]["env"] == [{"name": "EMPTY", "value": ""}]
    assert created["spec"]["imagePullSecrets"] == [{"name": ""}]


@pytest.mark.envtest
@pytest.mark.parametrize("bad,needle", [
    ({"spec": {"containerConcurrency": "lots"}}, "containerConcurrency"),
    ({"spec": {"protocolType": None}}, "protocolType"),
], ids=["wrong-type", "missing-required"])
def test_schema_violations_are_rejected_by_the_server(envtest, envtest_namespace, bad, needle):
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    body = {"apiVersion": "autoscaling.internal.knative.dev/v1alpha1", "kind": "PodAutoscaler",
            "metadata": {"name": "bad", "namespace": envtest_namespace},
            "spec": {"protocolType": "http1",
                     "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"}}}
    for k, v in bad["spec"].items():
        if v is None:
            body["spec"].pop(k)
        else:
            body["spec"][k] = v
    with envtest.admin_client() as api, pytest.raises(ApiException) as err:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            "autoscaling.internal.knative.dev", "v1alpha1", envtest_namespace, "podautoscalers", body)
    assert err.value.status == 422
    assert needle in err.value.body


@pytest.mark.envtest
def test_operator_token_authenticates_as_the_service_account_and_cannot_read_secrets(envtest):
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    with envtest.operator_client() as api, pytest.raises(ApiException) as err:
        client.CoreV1Api(api).list_secret_for_all_namespaces()
    assert err.value.status == 403  # authenticated (not 401), not authorized
    message = json.loads(err.value.body)["message"]
    assert f'User "{OPERATOR_USER}" cannot list resource "secrets"' in message


@pytest.mark.envtest
@pytest.mark.skipif(not (MANIFESTS / "rbac.yaml").exists(), reason="manifests/rbac.yaml not written yet")
def test_shipped_role_allows_only_what_it_must(envtest):
    from kubernetes import client

    def can(verb, resource, group="", namespace="default", name=""):
        review = {"spec": {"resourceAttributes": {"verb": verb, "resource": resource, "name": name,
                                                  "group": group, "namespace": namespace}}}
        with envtest.operator_client() as api:
            return client.AuthorizationV1Api(api).create_self_subject_access_review(review).status.allowed

    assert any("ClusterRole/kpilot-operator" == m for m in envtest.installed_manifests), \
        envtest.installed_manifests
    assert can("list", "services", "serving.knative.dev")
    assert can("patch", "revisions", "serving.knative.dev")
    assert can("patch", "podautoscalers", "autoscaling.internal.knative.dev")
    assert not can("list", "secrets")
    assert not can("patch", "services", "serving.knative.dev")
    # Knative's cluster-wide autoscaling settings, that one ConfigMap and no other.
    assert can("get", "configmaps", namespace="knative-serving", name="config-autoscaler")
    assert not can("get", "configmaps", namespace="knative-serving", name="config-network")
    assert not can("list", "configmaps", namespace="knative-serving")
    assert not can("patch", "configmaps", namespace="knative-serving", name="config-autoscaler")


@pytest.mark.envtest
def test_a_second_cluster_serves_and_stops_without_orphans(envtest):
    c = Cluster.start(install_knative=False, install_project=False)
    pids = [p.pid for p in c._procs]
    workdir = c.workdir
    try:
        code, body = c.request("/version")
        assert code == 200 and json.loads(body)["major"] == "1"
    finally:
        c.stop()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not workdir.exists() or os.environ.get("KPILOT_ENVTEST_KEEP")
