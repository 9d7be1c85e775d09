"""The operator image in a kind cluster running Knative Serving 1.23 (the kind tier).

`make e2e-kind` brings the cluster up (tests/e2e/kind-up.sh: kind-config.yaml, Knative with
Kourier, the operator built from this checkout with the shipped manifests) and runs this module
with KPILOT_KIND_E2E=1. Needs docker, kind, kubectl and internet access; without KPILOT_KIND_E2E
it is skipped. The operator's logic is covered without a cluster by tests/operator; what only a
real Knative shows is here: the write reaches the autoscaler, without a new revision.
"""

from __future__ import annotations

import os
import time
import urllib.request
from types import SimpleNamespace

import pytest

from kind_objects import (CONTEXT, NAMESPACE, POLICY, SERVICE, e2e_policy, hello_service, ingress_url,
                          service_host)
from kpilot_operator.annotations import CHANGED_AT, ORIGINAL, OWNER

pytestmark = pytest.mark.skipif(
    os.environ.get("KPILOT_KIND_E2E") != "1",
    reason="kind tier: `make e2e-kind` brings up the cluster (docker, kind, kubectl, internet) "
           "and sets KPILOT_KIND_E2E=1")

TARGET = "autoscaling.knative.dev/target"
SERVING = ("serving.knative.dev", "v1")
KPILOT = ("kpilot.dev", "v1alpha1", NAMESPACE, "autoscalingpolicies")


def wait_for(what: str, probe, timeout_s: float, every_s: float = 2.0):
    """Call probe() until it returns (True, value); fail naming `what` and the last value seen."""
    deadline = time.monotonic() + timeout_s
    seen = None
    while time.monotonic() < deadline:
        done, seen = probe()
        if done:
            return seen
        time.sleep(every_s)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s; last seen: {seen!r}")


@pytest.fixture(scope="module")
def kube():
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    config.load_kube_config(context=CONTEXT)
    api = client.ApiClient()
    k = SimpleNamespace(core=client.CoreV1Api(api), custom=client.CustomObjectsApi(api),
                        apps=client.AppsV1Api(api), ApiException=ApiException,
                        api_client_sanitize=api.sanitize_for_serialization)

    def absent(read):
        def probe():
            try:
                read()
                return False, "still there"
            except ApiException as exc:
                if exc.status != 404:
                    raise
                return True, 404
        return probe

    def clean_up():
        # The policy first: its finalizer restores the targets; then the namespace, waited for,
        # so that a run straight after (or after an interrupted one) starts from nothing.
        try:
            k.custom.delete_namespaced_custom_object(*KPILOT, POLICY)
        except ApiException as exc:
            if exc.status != 404:
                raise
        wait_for("the policy deleted (its finalizer done)",
                 absent(lambda: k.custom.get_namespaced_custom_object(*KPILOT, POLICY)), 120)
        try:
            k.core.delete_namespace(NAMESPACE)
        except ApiException as exc:
            if exc.status != 404:
                raise
        wait_for(f"namespace {NAMESPACE} deleted", absent(lambda: k.core.read_namespace(NAMESPACE)), 300)

    clean_up()
    k.core.create_namespace({"metadata": {"name": NAMESPACE}})
    yield k
    clean_up()


def annotations(k, group_version, plural, name) -> dict:
    obj = k.custom.get_namespaced_custom_object(*group_version, NAMESPACE, plural, name)
    return obj["metadata"].get("annotations") or {}


def revision_annotations(k, name):
    return annotations(k, SERVING, "revisions", name)


def pa_annotations(k, name):
    return annotations(k, ("autoscaling.internal.knative.dev", "v1alpha1"), "podautoscalers", name)


def owned(ann: dict) -> bool:
    """Whether the operator's bookkeeping is on the object: its own keys (under Knative's
    autoscaling prefix, which Knative copies to the PodAutoscaler) or the legacy kpilot.dev/ ones."""
    return any(key in (OWNER, ORIGINAL, CHANGED_AT) or key.startswith("kpilot.dev/") for key in ann)


def test_the_target_written_reaches_the_autoscaler_without_a_new_revision_and_off_restores_it(kube):
    k = kube
    k.custom.create_namespaced_custom_object(*SERVING, NAMESPACE, "services", hello_service())

    def service_ready():
        svc = k.custom.get_namespaced_custom_object(*SERVING, NAMESPACE, "services", SERVICE)
        conds = {c["type"]: c["status"] for c in svc.get("status", {}).get("conditions", [])}
        return conds.get("Ready") == "True", svc.get("status")
    status = wait_for("the Knative Service Ready", service_ready, 300)
    rev = status["latestReadyRevisionName"]

    # Through Kourier on the port kind-config.yaml publishes.
    request = urllib.request.Request(ingress_url(), headers={"Host": service_host()})
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # never via $HTTP_PROXY
    with direct.open(request, timeout=60) as response:
        assert response.status == 200 and b"kpilot" in response.read()

    def pod_template():        # what a write must not change (its replicas may: Knative scales it)
        return k.api_client_sanitize(k.apps.read_namespaced_deployment(f"{rev}-deployment", NAMESPACE).spec.template)
    template = pod_template()

    # DryRun: it decides and says so in its status, and writes nothing.
    k.custom.create_namespaced_custom_object(*KPILOT, e2e_policy("DryRun"))

    def decided():
        services = k.custom.get_namespaced_custom_object(*KPILOT, POLICY).get("status", {}).get("services", [])
        return bool(services) and "lastDecision" in services[0], services
    decided_in_dry_run = wait_for("a decision in the DryRun policy's status", decided, 120)
    assert decided_in_dry_run[0]["name"] == SERVICE and rev in decided_in_dry_run[0]["revisions"]
    time.sleep(15)         # another interval: still nothing written
    assert not owned(ann := revision_annotations(k, rev)) and TARGET not in ann, ann

    # Enforce: the Revision gets the policy's target, its original recorded ("absent": Knative's
    # default applied), and Knative carries it to the PodAutoscaler, where its autoscaler reads it.
    k.custom.patch_namespaced_custom_object(*KPILOT, POLICY, {"spec": {"mode": "Enforce"}})

    def written():
        ann = revision_annotations(k, rev)
        return ann.get(OWNER) == POLICY and TARGET in ann, ann
    ann = wait_for("the policy's target on the Revision", written, 120)
    assert ann[ORIGINAL] == "absent"
    assert 1.0 <= float(ann[TARGET]) <= 200.0

    def on_the_pa():      # compared afresh: the policy may move the target every 10 s
        rev_target, pa_target = revision_annotations(k, rev).get(TARGET), pa_annotations(k, rev).get(TARGET)
        return rev_target is not None and rev_target == pa_target, (rev_target, pa_target)
    wait_for("the Revision's target on its PodAutoscaler", on_the_pa, 60)
    svc = k.custom.get_namespaced_custom_object(*SERVING, NAMESPACE, "services", SERVICE)
    assert svc["status"]["latestCreatedRevisionName"] == svc["status"]["latestReadyRevisionName"] == rev, \
        "a target write must not create a revision"
    assert pod_template() == template, "a target write must not restart the revision's pods"

    def applied_event():
        events = k.core.list_namespaced_event(NAMESPACE, field_selector=f"involvedObject.name={SERVICE}").items
        reasons = sorted({e.reason for e in events})
        return "TargetApplied" in reasons, reasons
    wait_for("a TargetApplied Event on the Service", applied_event, 30)
    conditions = {c["type"]: c["status"] for c in
                  k.custom.get_namespaced_custom_object(*KPILOT, POLICY)["status"]["conditions"]}
    assert conditions.get("PolicyLoaded") == "True" and conditions.get("MetricsAvailable") == "True", conditions

    # Off: the Revision and its PodAutoscaler are back to no target of their own.
    k.custom.patch_namespaced_custom_object(*KPILOT, POLICY, {"spec": {"mode": "Off"}})

    def restored():
        rev_ann, pa_ann = revision_annotations(k, rev), pa_annotations(k, rev)
        return (not owned(rev_ann) and TARGET not in rev_ann and not owned(pa_ann) and TARGET not in pa_ann,
                (rev_ann, pa_ann))
    wait_for("the original (no target) restored on the Revision and its PodAutoscaler", restored, 120)
