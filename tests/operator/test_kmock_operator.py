"""The operator through Kopf's real watch/patch path against kmock (extended with resourceVersion)."""

from __future__ import annotations

import json

import pytest
from prometheus_client import REGISTRY

from kpilot_operator.metrics import QUERIES_PER_TICK
from kpilot_operator.annotations import ORIGINAL, OWNER
from operator_helpers import eventually, running_operator
from operator_support import (PAS, POLICIES, REVISIONS, autoscaling_policy, constant_policy_bytes,
                              knative_pa, knative_revision, knative_service, policy_configmap, sha)

pytestmark = pytest.mark.asyncio
NS = "apps"
TARGET = "autoscaling.knative.dev/target"
POLICY40 = constant_policy_bytes(40.0)


def seed(k8s, prom, *, services=("svc-a",), target=None, policy=POLICY40, pa=False):
    k8s.put("v1/configmaps", policy_configmap("kpilot-policy", NS, policy))
    for svc in services:
        rev = f"{svc}-00001"
        k8s.put("serving.knative.dev/v1/services", knative_service(svc, NS, {rev: 100}))
        k8s.put(REVISIONS, knative_revision(rev, NS, svc, target=target))
        if pa:
            k8s.put(PAS, knative_pa(rev, NS, svc, target=target))
        prom.set(NS, rev)


async def create_policy(api, body):
    rsp = await api.post(f"/apis/kpilot.dev/v1alpha1/namespaces/{NS}/autoscalingpolicies", json=body)
    assert rsp.status < 300, await rsp.text()


async def patch_policy(api, name, spec):
    rsp = await api.patch(f"/apis/kpilot.dev/v1alpha1/namespaces/{NS}/autoscalingpolicies/{name}",
                          json={"spec": spec}, headers={"Content-Type": "application/merge-patch+json"})
    assert rsp.status < 300, await rsp.text()


def rev_annotations(k8s, name="svc-a-00001", resource=REVISIONS):
    return k8s.annotations(resource, NS, name)


def policy_status(k8s, name="p"):
    return k8s.get(POLICIES, NS, name).get("status") or {}


def condition(k8s, type_, name="p"):
    return next((c for c in policy_status(k8s, name).get("conditions", []) if c["type"] == type_), {})


def events(k8s, reason=None):
    return [o.raw for (res, _, _), o in k8s.objects.items()
            if res == "v1/events" and not o.deleted and (reason is None or o.raw.get("reason") == reason)]


async def test_enforce_sets_revision_target_records_original_and_off_restores(k8s, prom, api, operator):
    seed(k8s, prom, target="70")
    await create_policy(api, autoscaling_policy("p", NS, sha=sha(POLICY40), prom_url=prom.url))

    await eventually(lambda: rev_annotations(k8s).get(TARGET) == "40", what="target 40 on the revision")
    ann = rev_annotations(k8s)
    assert ann[ORIGINAL] == "70" and ann[OWNER] == "p"
    await eventually(lambda: condition(k8s, "Ready").get("status") == "True", what="Ready=True")
    status = policy_status(k8s)
    assert status["writePath"] == "Revision"
    assert status["services"][0]["appliedTarget"] == 40 and status["services"][0]["revisions"] == ["svc-a-00001"]
    assert condition(k8s, "PolicyLoaded")["status"] == "True"
    assert condition(k8s, "MetricsAvailable")["status"] == "True"
    await eventually(lambda: events(k8s, "TargetApplied"), what="a TargetApplied Event")
    assert events(k8s, "TargetApplied")[0]["involvedObject"]["kind"] == "Service"
    # The same fixed PromQL queries every tick (namespace-wide, never one per service; the
    # operator benchmark checks the count per tick at 1,000 services).
    assert len(set(prom.queries)) == QUERIES_PER_TICK and all(NS in q for q in prom.queries)

    series = {"namespace": NS, "service": "svc-a", "revision": "svc-a-00001"}
    assert REGISTRY.get_sample_value("kpilot_applied_target", series) == 40

    await patch_policy(api, "p", {"mode": "Off"})
    await eventually(lambda: rev_annotations(k8s).get(TARGET) == "70" and ORIGINAL not in rev_annotations(k8s),
                     what="the original target 70 restored")
    # A restored revision is no longer managed: its series goes (one per revision ever managed grew).
    await eventually(lambda: REGISTRY.get_sample_value("kpilot_applied_target", series) is None, what="series gone")


async def test_a_decision_interval_other_than_the_trained_one_is_its_own_reason(k8s, prom, api, operator):
    # The policy reads rates over the interval and smooths per decision: at another interval it
    # runs, but a platform team must be able to find that without reading every message.
    trained_at_30 = constant_policy_bytes(40.0, manifest={"env": {"decision_interval_s": 30.0}})
    seed(k8s, prom, target="70", policy=trained_at_30)
    await create_policy(api, autoscaling_policy("p", NS, sha=sha(trained_at_30), prom_url=prom.url))
    await eventually(lambda: condition(k8s, "PolicyLoaded").get("reason") == "LoadedAtOtherInterval",
                     what="the interval's own reason")
    loaded = condition(k8s, "PolicyLoaded")
    assert loaded["status"] == "True" and "decisionIntervalSeconds 1 differs from the 30 s" in loaded["message"]
    await eventually(lambda: rev_annotations(k8s).get(TARGET) == "40", what="it still decides")
    await patch_policy(api, "p", {"decisionIntervalSeconds": 30})
    await eventually(lambda: condition(k8s, "PolicyLoaded").get("reason") == "Loaded", what="plain Loaded at 30 s")


async def test_an_edited_spec_is_acted_on_at_once_not_an_interval_later(k8s, prom, api, operator):
    # With decisions an hour apart, Off (the way back out) waited out the hour.
    seed(k8s, prom, target="70")
    await create_policy(api, autoscaling_policy("p", NS, sha=sha(POLICY40), prom_url=prom.url,
                                                decisionIntervalSeconds=3600))
    await eventually(lambda: rev_annotations(k8s).get(TARGET) == "40", what="target 40 on the revision")
    await patch_policy(api, "p", {"mode": "Off"})
    await eventually(lambda: rev_annotations(k8s).get(TARGET) == "70", timeout=10, what="restored at once")
    await eventually(lambda: policy_status(k8s).get("observedGeneration") == 2, what="the new generation observed")


async def test_an_edit_arriving_during_a_tick_is_not_taken_as_handled(k8s, prom, api, operator):
    # The tick recorded the generation after it ran: Off, sent while a slow tick was listing the
    # revisions, counted as seen and waited out the hour.
    seed(k8s, prom, target="70")
    await create_policy(api, autoscaling_policy("p", NS, sha=sha(POLICY40), prom_url=prom.url,
                                                decisionIntervalSeconds=3600))
    await eventually(lambda: rev_annotations(k8s).get(TARGET) == "40", what="target 40 on the revision")
    slow = k8s.fault("GET", "/revisions$", delay=3.0, times=1)
    await patch_policy(api, "p", {"cooldownSeconds": 1})            # a new generation: a tick, slowed
    await eventually(lambda: slow.hits == 1, what="the slow tick under way")
    await patch_policy(api, "p", {"mode": "Off"})
    await eventually(lambda: rev_annotations(k8s).get(TARGET) == "70", timeout=15, what="Off acted on")
    await eventually(lambda: policy_status(k8s).get("observedGeneration") == 3, what="generation 3 observed")


async def test_an_unreadable_api_makes_the_policy_not_ready_until_it_answers(k8s, prom, api, operator):
    seed(k8s, prom, target="70")
    await create_policy(api, autoscaling_policy("p", NS, sha=sha(POLICY40), prom_url=prom.url))
    await eventually(lambda: condition(k8s, "Ready").get("status") == "True", what="Ready=True")
    outage = k8s.fault("GET", "/revisions$", status=503, times=10_000)
    await eventually(lambda: condition(k8s, "Ready").get("reason") == "ApiUnavailable", what="Ready=False")
    assert condition(k8s, "Ready")["status"] == "False" and condition(k8s, "PolicyLoaded")["status"] == "True"
    outage.times = outage.hits                               # the API server answers again
    await eventually(lambda: condition(k8s, "Ready").get("status") == "True", what="Ready again")


async def test_a_services_base_target_keeps_the_policy_in_its_band(k8s, prom, api, operator):
    # svc-a is tuned at 10 (the policy's 40 is cut to 10 x 1.5); svc-b is pinned at 3 (band 1).
    seed(k8s, prom, services=("svc-a", "svc-b"), target="70")
    for name, ann in (("svc-a", {"kpilot.dev/base-target": "10"}),
                      ("svc-b", {"kpilot.dev/base-target": "3", "kpilot.dev/band": "1"})):
        svc = k8s.get("serving.knative.dev/v1/services", NS, name)
        svc["metadata"]["annotations"] = ann
        k8s.put("serving.knative.dev/v1/services", svc)
    await create_policy(api, autoscaling_policy("p", NS, sha=sha(POLICY40), prom_url=prom.url))
    await eventually(lambda: rev_annotations(k8s).get(TARGET) == "15"
                     and rev_annotations(k8s, "svc-b-00001").get(TARGET) == "3", what="targets in their bands")
    await eventually(lambda: len(policy_status(k8s).get("services", [])) == 2, what="status")
    statuses = {s["name"]: s for s in policy_status(k8s)["services"]}
    assert statuses["svc-a"]["bounds"]["maxTarget"] == 15 and statuses["svc-a"]["lastDecision"] == 40
    assert statuses["svc-b"]["bounds"] == {"minTarget": 3, "maxTarget": 3}
    assert rev_annotations(k8s)[ORIGINAL] == "70"


async def test_podautoscaler_path_on_knative_1_20_and_delete_restores(k8s, prom, api, monkeypatch):
    monkeypatch.setenv("KPILOT_KNATIVE_VERSION", "v1.20.2")
    seed(k8s, prom, pa=True)
    async with running_operator():
        await create_policy(api, autoscaling_policy("p", NS, sha=sha(POLICY40), prom_url=None))
        await eventually(lambda: rev_annotations(k8s, resource=PAS).get(TARGET) == "40", what="PA target")
        assert rev_annotations(k8s, resource=PAS)[ORIGINAL] == "absent"
        assert TARGET not in rev_annotations(k8s)            # the Revision is never written on <= 1.20
        await eventually(lambda: policy_status(k8s).get("writePath") == "PodAutoscaler", what="writePath")
        # Deleting the policy restores through the finalizer, then lets the object go.
        rsp = await api.delete(f"/apis/kpilot.dev/v1alpha1/namespaces/{NS}/autoscalingpolicies/p")
        assert rsp.status < 300
        await eventually(lambda: TARGET not in rev_annotations(k8s, resource=PAS)
                         and ORIGINAL not in rev_annotations(k8s, resource=PAS), what="PA restored")
        await eventually(lambda: k8s.objects[POLICIES, NS, "p"].deleted, what="finalizer released")


async def test_deleting_a_policy_after_knative_was_removed_lets_it_go(k8s, prom, api, operator):
    # The revisions' 404 was retried every 2 s for ever, holding the policy on its finalizer.
    seed(k8s, prom, target="70")
    await create_policy(api, autoscaling_policy("p", NS, sha=sha(POLICY40), prom_url=prom.url))
    await eventually(lambda: rev_annotations(k8s).get(TARGET) == "40", what="target 40 on the revision")
    for resource in ("serving.knative.dev/v1/services", REVISIONS, PAS):   # Knative uninstalled
        del k8s.resources[resource]
    rsp = await api.delete(f"/apis/kpilot.dev/v1alpha1/namespaces/{NS}/autoscalingpolicies/p")
    assert rsp.status < 300
    await eventually(lambda: k8s.objects[POLICIES, NS, "p"].deleted, what="finalizer released")


async def test_a_404_for_one_kind_while_knative_is_installed_holds_the_restore(k8s, prom, api, operator):
    # Only the PodAutoscaler list answered 404 (its CRD being reinstalled): it was taken for
    # "Knative removed", and the policy went without restoring the revision's target.
    seed(k8s, prom, target="70")
    # A whole CRD, as Kopf's own CRD observer reads it (a name alone crashed its event processing).
    k8s.put("apiextensions.k8s.io/v1/customresourcedefinitions", {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "revisions.serving.knative.dev"},
        "spec": {"group": "serving.knative.dev", "scope": "Namespaced",
                 "names": {"kind": "Revision", "plural": "revisions", "singular": "revision"},
                 "versions": [{"name": "v1", "served": True, "storage": True}]}})
    await create_policy(api, autoscaling_policy("p", NS, sha=sha(POLICY40), prom_url=prom.url))
    await eventually(lambda: rev_annotations(k8s).get(TARGET) == "40", what="target 40 on the revision")
    outage = k8s.fault("GET", "/podautoscalers$", status=404, times=10_000)
    rsp = await api.delete(f"/apis/kpilot.dev/v1alpha1/namespaces/{NS}/autoscalingpolicies/p")
    assert rsp.status < 300
    await eventually(lambda: outage.hits >= 2, what="the restore retried")
    assert not k8s.objects[POLICIES, NS, "p"].deleted and rev_annotations(k8s).get(TARGET) == "40"
    outage.times = outage.hits
    await eventually(lambda: k8s.objects[POLICIES, NS, "p"].deleted, what="finalizer released")
    assert rev_annotations(k8s) == {TARGET: "70"}


async def test_dry_run_decides_and_records_but_never_writes(k8s, prom, api, operator):
    seed(k8s, prom, target="70")
    await create_policy(api, autoscaling_policy("p", NS, sha=sha(POLICY40), prom_url=prom.url, mode="DryRun"))
    await eventually(lambda: policy_status(k8s).get("services", [{}])[0].get("reason") == "DryRun", what="DryRun")
    entry = policy_status(k8s)["services"][0]
    assert entry["lastDecision"] == 40 and "would set 40" in entry["message"]
    assert entry["lastObservation"]["concurrency_stable"] == 30
    assert rev_annotations(k8s) == {TARGET: "70"}
    assert not [p for m, p in k8s.log if m == "PATCH" and "/revisions/" in p]


async def test_new_revision_is_reasserted_old_one_released_and_paused_service_untouched(k8s, prom, api, operator):
    seed(k8s, prom, services=("svc-a", "svc-b"))
    svc_b = k8s.get("serving.knative.dev/v1/services", NS, "svc-b")
    svc_b["metadata"]["annotations"] = {"kpilot.dev/paused": "true"}
    k8s.put("serving.knative.dev/v1/services", svc_b)
    await create_policy(api, autoscaling_policy("p", NS, sha=sha(POLICY40), prom_url=prom.url))
    await eventually(lambda: rev_annotations(k8s).get(TARGET) == "40", what="svc-a applied")

    # A template change made revision 00002 with its own target; traffic moved to it.
    k8s.put(REVISIONS, knative_revision("svc-a-00002", NS, "svc-a", target="90"))
    k8s.put("serving.knative.dev/v1/services", knative_service("svc-a", NS, {"svc-a-00002": 100}))
    prom.set(NS, "svc-a-00002")
    await eventually(lambda: rev_annotations(k8s, "svc-a-00002").get(TARGET) == "40", what="re-asserted")
    assert rev_annotations(k8s, "svc-a-00002")[ORIGINAL] == "90"
    await eventually(lambda: rev_annotations(k8s, "svc-a-00001") == {}, what="old revision restored")

    statuses = {s["name"]: s for s in policy_status(k8s)["services"]}
    assert statuses["svc-b"]["reason"] == "Paused"
    assert rev_annotations(k8s, "svc-b-00001") == {}


async def test_conflicting_writer_and_409_lose_no_update(k8s, prom, api, operator):
    seed(k8s, prom, target="70")
    # Someone else writes the revision between our read and our patch (the `test` op then fails
    # with 422), and the next attempt is answered 409: the operator re-reads and keeps both.
    k8s.fault("PATCH", "/revisions/svc-a-00001$", times=1,
              before=lambda: k8s.edit_annotations(REVISIONS, NS, "svc-a-00001", **{"team.example/owner": "ops"}))
    k8s.fault("PATCH", "/revisions/svc-a-00001$", status=409, times=1)
    await create_policy(api, autoscaling_policy("p", NS, sha=sha(POLICY40), prom_url=prom.url))
    await eventually(lambda: rev_annotations(k8s).get(TARGET) == "40", what="applied despite conflicts")
    ann = rev_annotations(k8s)
    assert ann["team.example/owner"] == "ops" and ann[ORIGINAL] == "70"


async def test_two_policies_selecting_one_service_show_the_overlap(k8s, prom, api, operator):
    # The second policy's Ready stayed True while a Service it selects was another's to manage.
    seed(k8s, prom, target="70")
    await create_policy(api, autoscaling_policy("p", NS, sha=sha(POLICY40), prom_url=prom.url))
    await eventually(lambda: rev_annotations(k8s).get(TARGET) == "40", what="p manages svc-a")
    await create_policy(api, autoscaling_policy("q", NS, sha=sha(POLICY40), prom_url=prom.url))
    await eventually(lambda: condition(k8s, "Ready", name="q").get("reason") == "Conflict", what="q in conflict")
    assert condition(k8s, "Ready", name="q")["message"].endswith("managed by another policy: svc-a")
    assert condition(k8s, "Ready", name="p")["status"] == "True" and rev_annotations(k8s)[OWNER] == "p"


async def test_5xx_dropped_watches_and_slow_responses_are_survived(k8s, prom, api):
    seed(k8s, prom)
    k8s.fault("GET", "/autoscalingpolicies$", drop=True, watch=True, times=2)     # watch streams cut
    k8s.fault("GET", "/services$", status=503, times=2)                          # list fails -> retry
    k8s.fault("PATCH", "/revisions/", status=500, times=2)                       # write fails -> backoff
    k8s.fault("GET", "/revisions$", delay=1.5, times=1)                          # a slow answer
    await create_policy(api, autoscaling_policy("p", NS, sha=sha(POLICY40), prom_url=prom.url))
    async with running_operator():
        await eventually(lambda: rev_annotations(k8s).get(TARGET) == "40", timeout=20, what="applied")
        await eventually(lambda: condition(k8s, "Ready").get("status") == "True", what="Ready")
    assert all(f.hits == f.times for f in k8s.faults)


async def test_the_age_of_the_autoscalers_readings_is_exported(k8s, prom, api, operator):
    # Prometheus serves its last scrape: how old that is decides whether the policy sees what it
    # was measured on (README, Results: Readings a scrape old), so a platform team can alert on it.
    seed(k8s, prom, target="70")
    prom.sample_age_s = 12.0
    await create_policy(api, autoscaling_policy("p", NS, sha=sha(POLICY40), prom_url=prom.url))
    labels = {"namespace": NS, "policy": "p"}

    def age():      # an earlier test's policy of the same name may have left its own
        return REGISTRY.get_sample_value("kpilot_reading_age_seconds", labels) or 0.0

    # Measured from the tick's clock, read just before the queries.
    await eventually(lambda: age() >= 11.0, what="the reading age exported")
    assert age() < 15.0
    prom.sample_age_s = 40.0
    await eventually(lambda: age() >= 39.0, what="an older scrape")
    # With Prometheus down there is no reading to date: the 40 s must not stay exported (an alert
    # on it would outlive its cause), and the series comes back with the next timed reading.
    prom.down = True
    await eventually(lambda: REGISTRY.get_sample_value("kpilot_reading_age_seconds", labels) is None,
                     what="the age dropped while nothing is read")
    prom.down, prom.sample_age_s = False, 5.0
    await eventually(lambda: 4.0 <= age() < 15.0, what="the age of the next reading")


async def test_stale_metrics_hold_then_fallback(k8s, prom, api, operator):
    seed(k8s, prom, target="70")
    await create_policy(api, autoscaling_policy("p", NS, sha=sha(POLICY40), prom_url=prom.url,
                                                fallbackTarget=25, staleAfterSeconds=2))
    await eventually(lambda: rev_annotations(k8s).get(TARGET) == "40", what="applied")
    prom.down = True
    await eventually(lambda: condition(k8s, "MetricsAvailable").get("status") == "False", what="metrics down")
    await eventually(lambda: policy_status(k8s)["services"][0]["reason"] == "MetricsStaleHolding", what="hold")
    assert rev_annotations(k8s)[TARGET] == "40"          # held
    await eventually(lambda: rev_annotations(k8s).get(TARGET) == "25", what="fallback target")
    # The status patch of the tick that wrote the fallback lands just after the write itself.
    await eventually(lambda: policy_status(k8s)["services"][0]["reason"] == "Fallback", what="Fallback status")
    await eventually(lambda: events(k8s, "MetricsStaleHolding") and events(k8s, "Fallback"), what="fault Events")
    prom.down = False
    await eventually(lambda: rev_annotations(k8s).get(TARGET) == "40", what="policy again once fresh")


def _wrong_version_policy() -> bytes:
    doc = json.loads(POLICY40)
    doc["observation"]["version"] = "kpilot-obs/0"
    return json.dumps(doc).encode()


@pytest.mark.parametrize("data, declared, reason", [
    (b'{"format": "kpilot-policy/1", "observation": ', None, "not valid JSON"),
    (POLICY40, "0" * 64, "sha256 mismatch"),
    (_wrong_version_policy(), None, "observation spec version"),
    # Its sha256 declared: json's RecursionError went out of the tick (and the operator's handler).
    (b"[" * 100_000 + b"]" * 100_000, None, "not valid JSON (nested too deeply)"),
], ids=["corrupt", "tampered", "mismatched-version", "deeply-nested"])
async def test_bad_policy_sets_policyloaded_false_and_leaves_services_untouched(
        k8s, prom, api, operator, data, declared, reason):
    seed(k8s, prom, target="70", policy=data)
    await create_policy(api, autoscaling_policy("p", NS, sha=declared or sha(data), prom_url=prom.url))
    await eventually(lambda: condition(k8s, "PolicyLoaded").get("status") == "False", what="PolicyLoaded=False")
    assert reason in condition(k8s, "PolicyLoaded")["message"]
    assert condition(k8s, "Ready")["reason"] == "PolicyNotLoaded"
    await eventually(lambda: events(k8s, "PolicyRejected"), what="a PolicyRejected Event")
    assert rev_annotations(k8s) == {TARGET: "70"}
    assert not [p for m, p in k8s.log if m == "PATCH" and "/revisions/" in p]


@pytest.mark.parametrize("path, reason", [("/dev/zero", "not a regular file"),
                                          ("/nonexistent/policy.json", "cannot read")])
async def test_a_policy_path_that_is_no_policy_file_is_a_condition(k8s, prom, api, operator, path, reason):
    # /dev/zero was read until the operator ran out of memory, for every policy in the cluster.
    seed(k8s, prom, target="70", policy=POLICY40)
    await create_policy(api, autoscaling_policy("p", NS, sha=sha(POLICY40), prom_url=prom.url,
                                                policy={"path": path, "sha256": sha(POLICY40)}))
    await eventually(lambda: condition(k8s, "PolicyLoaded").get("status") == "False", what="PolicyLoaded=False")
    assert reason in condition(k8s, "PolicyLoaded")["message"]
    assert rev_annotations(k8s) == {TARGET: "70"}


@pytest.mark.parametrize("token, reason", [(b"\xff\xfe", "key 'token' is not a UTF-8 token"),
                                           (None, "has no key 'token'")])
async def test_an_unusable_prometheus_token_is_a_condition(k8s, prom, api, operator, token, reason):
    # A token that is not UTF-8 escaped as a traceback, retried with Kopf's backoff, status unchanged.
    import base64
    seed(k8s, prom, target="70")
    data = {"token": base64.b64encode(token).decode()} if token else {}
    k8s.put("v1/secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "prom", "namespace": NS},
                           "data": data})
    body = autoscaling_policy("p", NS, sha=sha(POLICY40), prom_url=prom.url)
    body["spec"]["metrics"]["prometheus"]["authSecretRef"] = {"name": "prom"}
    await create_policy(api, body)
    await eventually(lambda: condition(k8s, "MetricsAvailable").get("status") == "False", what="metrics down")
    assert condition(k8s, "MetricsAvailable")["message"].endswith(f"auth Secret prom: secret prom {reason}")


async def test_missing_knative_is_a_condition_not_a_crash(k8s, prom, api, monkeypatch):
    monkeypatch.delenv("KPILOT_KNATIVE_VERSION")
    for resource in ("serving.knative.dev/v1/services", REVISIONS, PAS):
        del k8s.resources[resource]
    k8s.put("v1/configmaps", policy_configmap("kpilot-policy", NS, POLICY40))
    await create_policy(api, autoscaling_policy("p", NS, sha=sha(POLICY40), prom_url=prom.url))
    async with running_operator() as thread:
        await eventually(lambda: condition(k8s, "Ready").get("reason") == "KnativeNotInstalled", what="condition")
        assert thread.is_alive()


async def test_an_unannotated_revision_starts_from_the_clusters_default_target(k8s, prom, api, operator):
    # config-autoscaler says 20, not Knative's 100: the first step is limited from what really runs.
    k8s.put("v1/configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                              "metadata": {"name": "config-autoscaler", "namespace": "knative-serving"},
                              "data": {"container-concurrency-target-default": "20"}})
    seed(k8s, prom, target=None)
    await create_policy(api, autoscaling_policy("p", NS, sha=sha(POLICY40), prom_url=prom.url, maxStepRatio=0.5))
    await eventually(lambda: TARGET in rev_annotations(k8s), what="a first target on the revision")
    # From 100 the x1.5 limit would have written 66.67; from the cluster's 20 it writes 30.
    assert rev_annotations(k8s)[TARGET] == "30" and rev_annotations(k8s)[ORIGINAL] == "absent"
    # The status patch lands after the tick's writes: wait for it rather than race it.
    await eventually(lambda: "defaultTarget" in policy_status(k8s), what="the tick's status")
    status = policy_status(k8s)
    assert status["defaultTarget"] == 20 and status["defaultTargetSource"] == "config-autoscaler"


async def test_a_status_write_failing_through_an_outage_does_not_stop_the_policy(k8s, prom, api):
    # Written by Kopf's patch, a status that failed its eight tries (an API outage over about 54 s)
    # ended the policy's timer for good: no tick again, Off included, until a restart. Here the
    # status is refused 12 times, over a tick a second.
    seed(k8s, prom, target="70")
    await create_policy(api, autoscaling_policy("p", NS, sha=sha(POLICY40), prom_url=prom.url,
                                                decisionIntervalSeconds=1))
    async with running_operator():
        await eventually(lambda: rev_annotations(k8s).get(TARGET) == "40", what="target 40 on the revision")
        outage = k8s.fault("PATCH", "/autoscalingpolicies/p/status$", status=503, times=12)
        await patch_policy(api, "p", {"mode": "Off"})
        await eventually(lambda: rev_annotations(k8s).get(TARGET) == "70", what="Off restored 70")
        await eventually(lambda: policy_status(k8s).get("mode") == "Off", timeout=40, what="Off in the status")
        assert outage.hits == 12                                   # written once the API answered
        await patch_policy(api, "p", {"mode": "Enforce"})          # and the policy still ticks
        await eventually(lambda: rev_annotations(k8s).get(TARGET) == "40", what="Enforce again")
