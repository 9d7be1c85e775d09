"""The operator against a REAL kube-apiserver + etcd (tests/envtest), running as the operator's
ServiceAccount user, so the shipped ClusterRole is what it is allowed to do.

Skips with the fixture's reason when KUBEBUILDER_ASSETS is not set (see tests/envtest/cluster.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os

import pytest

from kpilot_operator.annotations import ORIGINAL, OWNER
from operator_helpers import eventually, running_operator, use_kubeconfig
from operator_support import autoscaling_policy, constant_policy_bytes, sha

pytestmark = pytest.mark.envtest
TARGET = "autoscaling.knative.dev/target"
POLICY40 = constant_policy_bytes(40.0)
GROUP, VERSION, PLURAL = "kpilot.dev", "v1alpha1", "autoscalingpolicies"


@pytest.fixture
def policy_file(tmp_path):
    path = tmp_path / "policy.json"
    path.write_bytes(POLICY40)
    return str(path)


@pytest.fixture
def as_operator(envtest, monkeypatch):
    """The operator authenticates with the operator user's kubeconfig; the version comes from the cluster."""
    use_kubeconfig(monkeypatch, envtest.operator_kubeconfig)
    monkeypatch.delenv("KPILOT_KNATIVE_VERSION", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return envtest


def co(envtest):
    from kubernetes import client
    return client.CustomObjectsApi(envtest.admin_client())


def get(envtest, group, version, plural, ns, name):
    from kubernetes.client.exceptions import ApiException
    try:
        return co(envtest).get_namespaced_custom_object(group, version, ns, plural, name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def annotations(envtest, ns, name, plural="revisions"):
    group, version = (("serving.knative.dev", "v1") if plural == "revisions"
                      else ("autoscaling.internal.knative.dev", "v1alpha1"))
    return (get(envtest, group, version, plural, ns, name)["metadata"].get("annotations") or {})


def policy(envtest, ns, name="p"):
    return get(envtest, GROUP, VERSION, PLURAL, ns, name) or {}


def service_reason(envtest, ns, service, name="p"):
    entries = {s["name"]: s for s in policy(envtest, ns, name).get("status", {}).get("services", [])}
    return entries.get(service, {}).get("reason")


def create_policy(envtest, ns, body):
    co(envtest).create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)


def patch_policy(envtest, ns, spec, name="p"):
    co(envtest).patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, {"spec": spec})


def path_policy(ns, policy_file, **kw):
    body = autoscaling_policy("p", ns, sha=sha(POLICY40), **kw)
    body["spec"]["policy"] = {"path": policy_file, "sha256": sha(POLICY40)}
    return body


@pytest.mark.asyncio
async def test_revision_path_dryrun_enforce_new_revision_override_and_off(
        as_operator, envtest_namespace, prom, policy_file):
    env, ns = as_operator, envtest_namespace
    for svc in ("svc-a", "svc-b"):
        env.create_knative_app(ns, svc, revision_annotations={TARGET: "70"}, service_labels={"kpilot": "on"})
        prom.set(ns, f"{svc}-00001")
    async with running_operator():
        create_policy(env, ns, path_policy(ns, policy_file, prom_url=prom.url, mode="DryRun"))
        await eventually(lambda: service_reason(env, ns, "svc-a") == "DryRun", timeout=20, what="DryRun decision")
        assert annotations(env, ns, "svc-a-00001").get(TARGET) == "70" and ORIGINAL not in annotations(env, ns, "svc-a-00001")

        patch_policy(env, ns, {"mode": "Enforce"})
        await eventually(lambda: annotations(env, ns, "svc-a-00001").get(TARGET) == "40", timeout=20, what="Enforce")
        assert annotations(env, ns, "svc-a-00001")[ORIGINAL] == "70"
        assert annotations(env, ns, "svc-a-00001", "podautoscalers").get(TARGET) == "70"   # PA untouched >= 1.21
        assert policy(env, ns)["status"]["writePath"] == "Revision"

        # A template change made revision 00002 with the template's own target: re-asserted.
        env.create_revision(ns, "svc-a-00002", "svc-a", generation=2, annotations={TARGET: "90"})
        env.set_service_traffic(ns, "svc-a", [{"revisionName": "svc-a-00002", "percent": 100, "latestRevision": True}])
        prom.set(ns, "svc-a-00002")
        await eventually(lambda: annotations(env, ns, "svc-a-00002").get(TARGET) == "40", timeout=20, what="re-assert")
        assert annotations(env, ns, "svc-a-00002")[ORIGINAL] == "90"

        # Manual override: paused Services are left as they are.
        co(env).patch_namespaced_custom_object("serving.knative.dev", "v1", ns, "services", "svc-b",
                                               {"metadata": {"annotations": {"kpilot.dev/paused": "true"}}})
        await eventually(lambda: service_reason(env, ns, "svc-b") == "Paused", timeout=20, what="Paused")
        env.create_revision(ns, "svc-b-00002", "svc-b", generation=2, annotations={TARGET: "90"})
        env.set_service_traffic(ns, "svc-b", [{"revisionName": "svc-b-00002", "percent": 100, "latestRevision": True}])
        await asyncio.sleep(2.5)
        assert annotations(env, ns, "svc-b-00002") .get(TARGET) == "90" and ORIGINAL not in annotations(env, ns, "svc-b-00002")

        patch_policy(env, ns, {"mode": "Off"})
        await eventually(lambda: annotations(env, ns, "svc-a-00002").get(TARGET) == "90"
                         and ORIGINAL not in annotations(env, ns, "svc-a-00002")
                         and annotations(env, ns, "svc-a-00001").get(TARGET) == "70", timeout=20, what="restored")


def orphan_beside_a_live_owner(env, ns, policy_file) -> None:
    """Two Services selected by `p`: orphan's revision managed by policy "old", whose finalizer was
    removed by hand (gone), owned's by "live", a policy that exists (selecting other Services)."""
    env.create_knative_app(ns, "orphan", service_labels={"kpilot": "on"},
                           revision_annotations={TARGET: "55", ORIGINAL: "70", OWNER: "old"})
    env.create_knative_app(ns, "owned", service_labels={"kpilot": "on"},
                           revision_annotations={TARGET: "55", ORIGINAL: "70", OWNER: "live"})
    live = autoscaling_policy("live", ns, sha=sha(POLICY40), prom_url=None, mode="DryRun")
    live["spec"]["policy"] = {"path": policy_file, "sha256": sha(POLICY40)}
    live["spec"]["selector"] = {"matchLabels": {"kpilot": "elsewhere"}}
    create_policy(env, ns, live)


def let_go(env, ns, *names) -> None:
    """Policies deleted without their finalizer's restore."""
    for name in names:
        co(env).patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, {"metadata": {"finalizers": []}})
        co(env).delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)


@pytest.mark.asyncio
async def test_revisions_of_a_policy_let_go_by_hand_are_taken_over_and_restored(
        as_operator, envtest_namespace, policy_file):
    # Removing a policy's finalizer by hand (the README's way out without an operator) left its
    # revisions owned by a name nothing answers to: a later policy reported a conflict forever
    # and nothing could restore them. A live owner still keeps what it manages.
    env, ns = as_operator, envtest_namespace
    orphan_beside_a_live_owner(env, ns, policy_file)
    async with running_operator():
        create_policy(env, ns, path_policy(ns, policy_file, prom_url=None, mode="Enforce"))
        await eventually(lambda: annotations(env, ns, "orphan-00001").get(OWNER) == "p", timeout=20,
                         what="the orphaned revision taken over")
        assert annotations(env, ns, "orphan-00001")[ORIGINAL] == "70"
        await eventually(lambda: service_reason(env, ns, "owned") == "ClaimedByOtherPolicy", timeout=20,
                         what="the live owner's revision left alone")
        assert annotations(env, ns, "owned-00001")[OWNER] == "live"
        patch_policy(env, ns, {"mode": "Off"})
        await eventually(lambda: annotations(env, ns, "orphan-00001").get(TARGET) == "70"
                         and OWNER not in annotations(env, ns, "orphan-00001"), timeout=20, what="restored")
        assert annotations(env, ns, "owned-00001")[TARGET] == "55"
    let_go(env, ns, "p", "live")   # no operator of a later test should act on these


@pytest.mark.asyncio
async def test_a_policy_created_in_off_restores_what_a_policy_let_go_by_hand_left(
        as_operator, envtest_namespace, policy_file):
    # The way back after the operator was uninstalled before its policies (their finalizers then
    # removed by hand): a policy created in Off restored nothing, its status said only "Off".
    env, ns = as_operator, envtest_namespace
    orphan_beside_a_live_owner(env, ns, policy_file)
    async with running_operator():
        create_policy(env, ns, path_policy(ns, policy_file, prom_url=None, mode="Off"))
        await eventually(lambda: annotations(env, ns, "orphan-00001").get(TARGET) == "70"
                         and {OWNER, ORIGINAL}.isdisjoint(annotations(env, ns, "orphan-00001")),
                         timeout=20, what="the orphaned revision restored")
        entries = {e["name"]: e for e in policy(env, ns).get("status", {}).get("services", [])}
        assert entries["orphan"]["reason"] == "Off"
        assert "orphan-00001 (policy old)" in entries["orphan"]["message"]
        await asyncio.sleep(2.5)          # a live owner's revision is its own to restore
        assert annotations(env, ns, "owned-00001")[TARGET] == "55"
        assert annotations(env, ns, "owned-00001")[OWNER] == "live"
    let_go(env, ns, "p", "live")


@pytest.mark.asyncio
async def test_podautoscaler_path_on_knative_1_20_and_delete_restores(as_operator, envtest_namespace, policy_file):
    env, ns = as_operator, envtest_namespace
    env.create_knative_app(ns, "svc", service_labels={"kpilot": "on"})
    env.set_knative_version("1.20.0")
    try:
        async with running_operator():
            create_policy(env, ns, path_policy(ns, policy_file, prom_url=None))
            await eventually(lambda: annotations(env, ns, "svc-00001", "podautoscalers").get(TARGET) == "40",
                             timeout=20, what="PA target")
            assert annotations(env, ns, "svc-00001", "podautoscalers")[ORIGINAL] == "absent"
            assert TARGET not in annotations(env, ns, "svc-00001")
            co(env).delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "p")
            await eventually(lambda: not policy(env, ns), timeout=20, what="the policy gone after restore")
            assert TARGET not in annotations(env, ns, "svc-00001", "podautoscalers")
            assert ORIGINAL not in annotations(env, ns, "svc-00001", "podautoscalers")
    finally:
        env.set_knative_version("1.23.0")


@pytest.mark.asyncio
async def test_the_shipped_role_reads_the_clusters_autoscaler_config(as_operator, envtest_namespace, policy_file):
    # Read as the operator's ServiceAccount: the default target and the windows come from the
    # cluster's config-autoscaler, and a revision under a 5-minute stable window is left alone.
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    env, ns = as_operator, envtest_namespace
    core = client.CoreV1Api(env.admin_client())
    try:
        core.create_namespace({"metadata": {"name": "knative-serving"}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    core.create_namespaced_config_map("knative-serving", {
        "metadata": {"name": "config-autoscaler"},
        "data": {"container-concurrency-target-default": "20", "stable-window": "5m"}})
    env.create_knative_app(ns, "svc", service_labels={"kpilot": "on"})
    try:
        async with running_operator():
            create_policy(env, ns, path_policy(ns, policy_file, prom_url=None, mode="Enforce"))
            await eventually(lambda: service_reason(env, ns, "svc") == "UnsupportedAutoscaling",
                             timeout=20, what="the 5-minute window seen")
            status = policy(env, ns)["status"]
            assert status["defaultTarget"] == 20 and status["defaultTargetSource"] == "config-autoscaler"
            message = {s["name"]: s for s in status["services"]}["svc"]["message"]
            assert "config-autoscaler's stable-window 5m" in message
            assert TARGET not in annotations(env, ns, "svc-00001")
    finally:
        core.delete_namespaced_config_map("config-autoscaler", "knative-serving")


@pytest.mark.asyncio
async def test_two_replicas_one_acts_and_the_other_takes_over(as_operator, envtest_namespace, prom, policy_file,
                                                             caplog):
    # The Deployment runs two replicas with Kopf peering. Kopf pauses every operator whose
    # priority ties with another's, so each replica must draw its own: then the highest acts, the
    # other stands by, and takes over when it goes.
    env, ns = as_operator, envtest_namespace
    caplog.set_level(logging.INFO)
    peering = f"kpilot-{ns}"
    env.apply_objects([{"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": peering}}])
    env.create_knative_app(ns, "svc", revision_annotations={TARGET: "70"}, service_labels={"kpilot": "on"})
    prom.set(ns, "svc-00001")

    def peers() -> dict[str, int]:
        body = co(env).get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", peering)
        return {k: v["priority"] for k, v in (body.get("status") or {}).items()}

    replicas = {name: running_operator(peering=peering, identity=name) for name in ("replica-a", "replica-b")}
    for replica in replicas.values():
        await replica.__aenter__()
    stopped = set()
    try:
        await eventually(lambda: set(peers()) == set(replicas), timeout=20,
                         what=f"both replicas in the peering {peering}")
        priorities = peers()
        assert len(set(priorities.values())) == 2 and 0 not in priorities.values()
        leader = max(priorities, key=priorities.get)
        standby = min(priorities, key=priorities.get)

        def last_peering_state(name: str) -> str | None:
            """A replica's last pause / resume, as Kopf logs it from that replica's thread."""
            said = [r.getMessage() for r in caplog.records if r.threadName == f"kopf-operator-{name}"]
            said = [m for m in said if m.startswith(("Pausing", "Resuming"))]
            return ("paused" if said[-1].startswith("Pausing") else "acting") if said else None

        # Peering is mandatory, so a replica starts paused: the leader resumes, the standby stays
        # paused (never resumed, or paused again in the leader's favour).
        await eventually(lambda: last_peering_state(leader) == "acting", timeout=20, what="the leader acting")
        assert last_peering_state(standby) in (None, "paused")

        create_policy(env, ns, path_policy(ns, policy_file, prom_url=prom.url))
        await eventually(lambda: annotations(env, ns, "svc-00001").get(TARGET) == "40", timeout=20,
                         what="the leader serving the policy")
        assert last_peering_state(standby) in (None, "paused")

        await replicas[leader].__aexit__(None, None, None)       # the leader goes (a rollout, a node drain)
        stopped.add(leader)
        await eventually(lambda: set(peers()) == set(replicas) - {leader}, timeout=20, what="the leader gone")
        await eventually(lambda: last_peering_state(standby) == "acting", timeout=20, what="the standby acting")
        patch_policy(env, ns, {"mode": "Off"})
        await eventually(lambda: annotations(env, ns, "svc-00001").get(TARGET) == "70"
                         and ORIGINAL not in annotations(env, ns, "svc-00001"), timeout=30,
                         what="the standby taking over and restoring the original")
    finally:
        for name, replica in replicas.items():
            if name not in stopped:
                await replica.__aexit__(None, None, None)


@pytest.mark.parametrize("patch", [
    {"mode": "Sometimes"}, {"decisionIntervalSeconds": 0}, {"bounds": {"minTarget": 0.001, "maxTarget": 5}},
    {"bounds": {"minTarget": 0, "maxTarget": 5}},
    {"policy": {"path": "/p", "sha256": "not-hex"}}, {"metrics": {"prometheus": {"url": "ftp://x"}}},
    {"policy": {"sha256": "a" * 64}}, {"band": 0.5},
    # Integer zeros pass a `minimum` the API server truncates to 0: `not: {maximum: 0}` refuses them.
    {"maxStepRatio": 0}, {"fallbackTarget": 0},
    {"metrics": {"prometheus": {"url": "http://127.0.0.1:9", "timeoutSeconds": 0}}},
], ids=lambda p: f"{next(iter(p))}-{json.dumps(p)[-12:]}")
def test_api_server_rejects_bad_specs(envtest, envtest_namespace, patch):
    from kubernetes.client.exceptions import ApiException
    body = autoscaling_policy("bad", envtest_namespace, sha="a" * 64, prom_url="http://127.0.0.1:9")
    body["spec"].update(patch)
    with pytest.raises(ApiException) as err:
        create_policy(envtest, envtest_namespace, body)
    assert err.value.status == 422, err.value.body


@pytest.mark.parametrize("patch", [
    {"maxStepRatio": 0.5}, {"maxStepRatio": 0.25}, {"bounds": {"minTarget": 0.5, "maxTarget": 0.9}},
    {"fallbackTarget": 0.5}, {"metrics": {"prometheus": {"url": "http://127.0.0.1:9", "timeoutSeconds": 0.5}}},
    {"maxStepRatio": 2}, {"fallbackTarget": 1},
], ids=lambda p: json.dumps(p)[-24:])
def test_api_server_accepts_fractions_and_integers(envtest, envtest_namespace, patch):
    # The guard against integer zeros used to refuse every fraction below 1 (a step limit tighter
    # than x2, the README's own `maxStepRatio: 0.5`): the API server's enum check truncates it to 0.
    body = autoscaling_policy("ok", envtest_namespace, sha="a" * 64, prom_url="http://127.0.0.1:9")
    body["spec"].update(patch)
    try:
        create_policy(envtest, envtest_namespace, body)
        stored = co(envtest).get_namespaced_custom_object(GROUP, VERSION, envtest_namespace, PLURAL, "ok")
        assert stored["spec"].items() >= {k: v for k, v in patch.items() if k != "metrics"}.items()
    finally:
        co(envtest).delete_namespaced_custom_object(GROUP, VERSION, envtest_namespace, PLURAL, "ok")


def test_the_status_schema_keeps_everything_a_tick_writes(envtest, envtest_namespace):
    # The status has a schema (it was an open object): a field the schema missed would be pruned
    # by the API server without a word. Everything a tick can write goes in and comes back out:
    # the keys are those run_tick writes (checked below against a real tick's).
    from kpilot_operator.bench import InMemoryCluster
    from kpilot_operator.reconcile import ServiceStatus
    from kpilot_operator.tick import Runtime, TickState, condition, iso, run_tick

    ns = envtest_namespace
    body = autoscaling_policy("st", ns, sha="a" * 64, prom_url=None)
    create_policy(envtest, ns, body)
    split = ServiceStatus("svc", ["svc-00001", "svc-00002"], "Applied", bounds=(2.0, 4.5))
    for rev, target in (("svc-00001", 3.0), ("svc-00002", 2.5)):
        split.observation, split.decision, split.applied = {"ready_pods": 2.0, "request_rate": 1.25}, target, target
        split.message = f"{rev} message"
        split.record(rev)
    state = TickState()
    status = {"lastTick": iso(1.7e9), "observedGeneration": 1, "mode": "Enforce", "policySha256": "a" * 64, "knativeVersion": "1.23.0",
              "writePath": "Revision", "defaultTarget": 100, "defaultTargetSource": "config-autoscaler",
              "managedServices": 1, "staleRevisions": 0,
              "conditions": [condition(state, "Ready", True, "Reconciled", "1 services, 2 writes", 1.7e9),
                             condition(state, "MetricsAvailable", False, "Unavailable", "no answer", 1.7e9)],
              "services": [split.as_dict(iso(1.7e9))]}
    assert status["services"][0]["revisionStatus"] and status["services"][0]["bounds"]
    real = asyncio.run(run_tick(Runtime(cluster=InMemoryCluster(1, constant_policy_bytes(40.0)), clock=lambda: 1.7e9,
                                        emit_event=lambda *a: None),
                                "p", "bench", {**body["spec"], "policy": {"configMap": {"name": "c"},
                                                                          "sha256": sha(constant_policy_bytes(40.0))},
                                               "selector": {}}, TickState()))
    assert set(real) | {"observedGeneration"} <= set(status), set(real) - set(status)
    assert set(real["services"][0]) <= set(status["services"][0])
    try:
        co(envtest).patch_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, "st", {"status": status})
        assert policy(envtest, ns, "st")["status"] == json.loads(json.dumps(status))
    finally:
        co(envtest).delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "st")


def test_role_cannot_read_secrets_or_patch_services(envtest, envtest_namespace):
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    ns = envtest_namespace
    with envtest.admin_client() as admin:
        client.CoreV1Api(admin).create_namespaced_secret(ns, {"metadata": {"name": "prom-token"},
                                                               "stringData": {"token": "x"}})
    envtest.create_knative_app(ns, "svc", service_labels={"kpilot": "on"})
    with envtest.operator_client() as op:
        core, objs = client.CoreV1Api(op), client.CustomObjectsApi(op)
        for call in (lambda: core.read_namespaced_secret("prom-token", ns),
                     lambda: core.list_namespaced_secret(ns),
                     lambda: objs.patch_namespaced_custom_object("serving.knative.dev", "v1", ns, "services", "svc",
                                                                 {"metadata": {"labels": {"x": "y"}}}),
                     lambda: core.read_namespaced_config_map("kube-root-ca.crt", ns)):
            with pytest.raises(ApiException) as err:
                call()
            assert err.value.status == 403
        # ...and can do what it must: read Services, patch Revisions.
        objs.list_namespaced_custom_object("serving.knative.dev", "v1", ns, "services")
        objs.patch_namespaced_custom_object("serving.knative.dev", "v1", ns, "revisions", "svc-00001",
                                            {"metadata": {"annotations": {TARGET: "12"}}})


@pytest.mark.asyncio
async def test_a_target_set_by_kpilot_retune_is_what_the_operator_enforces(as_operator, envtest_namespace, prom,
                                                                             policy_file):
    # The deployment of manifests/retune: retune annotates the Service, the operator writes the
    # revision. The policy proposes 40; the re-tuned base target with band 1 pins it.
    from kpilot.env.reward import RewardConfig
    from kpilot.retune import annotate, retune, selected_services
    from kpilot.sim.config import SimConfig
    from kpilot.traces.prometheus_export import ServiceTraffic

    env, ns = as_operator, envtest_namespace
    env.create_knative_app(ns, "svc-a", revision_annotations={TARGET: "70"}, service_labels={"kpilot": "on"})
    prom.set(ns, "svc-a-00001")
    async with running_operator():
        create_policy(env, ns, path_policy(ns, policy_file, prom_url=prom.url, mode="Enforce"))
        await eventually(lambda: annotations(env, ns, "svc-a-00001").get(TARGET) == "40", timeout=20, what="Enforce")
        traffic = [ServiceTraffic("svc-a", [(60 * k, 600, 0.05) for k in range(20)])]
        (result,) = retune(traffic, 60, SimConfig(), RewardConfig(), seeds=[0])
        assert result.target is not None and result.target != 40 and 2 <= result.target <= 150   # the spec's bounds
        with env.admin_client() as api_client:
            report = dict(annotate([result], selected_services(ns, "kpilot=on", api_client), ns, api_client))
        assert report == {"svc-a": f"set {result.target:g}, band 1"}
        await eventually(lambda: annotations(env, ns, "svc-a-00001").get(TARGET) == f"{result.target:g}",
                         timeout=20, what="the re-tuned target enforced")
        assert annotations(env, ns, "svc-a-00001")[ORIGINAL] == "70"       # still restorable


def _answers(port: int) -> bool:
    """The operator's liveness endpoint accepts connections: it has started."""
    import socket
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _operator_command(envtest, args: list[str], until, extra_env=None, timeout_s: float = 60) -> list[dict]:
    """`kpilot operator run ARGS --log-format json` as the operator user, until `until(health_port)`
    is true (or the timeout); returns its log lines."""
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**envtest.env("operator"), "KPILOT_METRICS_PORT": "0",
           "KPILOT_HEALTH_ENDPOINT": f"http://127.0.0.1:{port}/healthz", **(extra_env or {})}
    kpilot = Path(sys.executable).with_name("kpilot")
    proc = subprocess.Popen([str(kpilot), "operator", "run", *args, "--log-format", "json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None and not until(port):
            time.sleep(0.5)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_the_operator_command_logs_what_it_does(envtest, envtest_namespace):
    # kopf.run alone configures no logging: `kpilot operator run` printed nothing, warnings included.
    lines = _operator_command(envtest, ["-n", envtest_namespace], until=_answers)
    assert any(line["message"] == "Activity 'configure' succeeded." and line["severity"] == "info"
               for line in lines), lines
    assert any("Operator is stopping" in line["message"] for line in lines), lines


def test_the_operator_creates_its_cluster_peering(envtest):
    # The peering object used to be in manifests/peering.yaml beside its CRD, which one
    # `kubectl apply -k` cannot create (no kind ClusterKopfPeering yet): the first apply failed.
    from kubernetes.client.exceptions import ApiException

    name = f"kpilot-peering-{os.getpid()}"

    def exists():
        try:
            co(envtest).get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", name)
            return True
        except ApiException as exc:
            assert exc.status == 404
            return False
    assert not exists()
    lines = _operator_command(envtest, ["--no-standalone"], until=lambda _: exists(),
                              extra_env={"KPILOT_PEERING_NAME": name})
    assert exists(), lines
    assert any(line["message"] == f"created the ClusterKopfPeering {name}" for line in lines), lines


def test_a_namespaced_replica_creates_its_peering_and_acts(envtest, envtest_namespace, policy_file):
    # With --namespace, Kopf waits for a KopfPeering in each namespace: none was created, so the
    # replica never acted and said so only at debug level. A namespace made after the operator
    # started waited for a restart.
    import time

    from kubernetes import client

    ns, name = envtest_namespace, f"kpilot-ns-{os.getpid()}"
    later = f"later-{os.getpid()}"
    envtest.create_knative_app(ns, "svc", revision_annotations={TARGET: "70"}, service_labels={"kpilot": "on"})
    create_policy(envtest, ns, path_policy(ns, policy_file, prom_url=None, mode="Enforce"))
    started, made_later = time.monotonic(), []

    def both_served(_port) -> bool:
        if not made_later and time.monotonic() - started > 5:      # after the operator's startup
            client.CoreV1Api(envtest.admin_client()).create_namespace({"metadata": {"name": later}})
            envtest.create_knative_app(later, "svc", revision_annotations={TARGET: "70"},
                                       service_labels={"kpilot": "on"})
            create_policy(envtest, later, path_policy(later, policy_file, prom_url=None, mode="Enforce"))
            made_later.append(later)
        return bool(made_later) and all(annotations(envtest, where, "svc-00001").get(TARGET) == "40"
                                        for where in (ns, later))
    try:
        # A namespace that does not exist yet is a warning, not a startup that never ends, and it
        # is served once it exists.
        lines = _operator_command(envtest, ["--no-standalone", "-n", ns, "-n", later], until=both_served,
                                  extra_env={"KPILOT_PEERING_NAME": name}, timeout_s=90)
        assert annotations(envtest, ns, "svc-00001").get(TARGET) == "40", lines
        assert made_later and annotations(envtest, later, "svc-00001").get(TARGET) == "40", lines
        for where in (ns, later):
            assert co(envtest).get_namespaced_custom_object("kopf.dev", "v1", where, "kopfpeerings", name)
            assert any(line["message"] == f"created the KopfPeering in {where} {name}" for line in lines), lines
        assert any(line["message"].startswith(f"namespace {later} does not exist: its policies wait")
                   and line["severity"] == "warn" for line in lines), lines
    finally:   # no operator of a later test should restore these
        for where in (ns, *made_later):
            co(envtest).patch_namespaced_custom_object(GROUP, VERSION, where, PLURAL, "p",
                                                       {"metadata": {"finalizers": []}})
            co(envtest).delete_namespaced_custom_object(GROUP, VERSION, where, PLURAL, "p")

