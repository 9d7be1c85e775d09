"""`kpilot retune`: each Service's target re-tuned on its traffic in (a fake) Prometheus, and the
Service annotations it writes, against a real API server (envtest) for --apply."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from eval_support import KPILOT
from fake_prometheus import prometheus  # noqa: F401  (fixture)

from kpilot.env.reward import RewardConfig
from kpilot.evaluate.baselines import STATIC_GRID
from kpilot.retune import annotate, retune, selected_services
from kpilot.sim.config import SimConfig
from kpilot.traces.prometheus_export import ServiceTraffic

T0 = 1_699_999_980            # a whole minute, unix seconds
BINS = 20                     # --over 15m plus the 5-minute warm-up
RETUNE = Path(__file__).resolve().parents[2] / "manifests" / "retune"


def steady(name: str, per_bin: int, mean_s: float, bins: int = BINS) -> dict:
    """A Service's two series: `per_bin` requests of `mean_s` in each minute before T0 + 60 x bins."""
    ends = [T0 + 60 * (k + 1) for k in range(bins)]
    return {("count", name): [(t, per_bin) for t in ends], ("sum", name): [(t, per_bin * mean_s) for t in ends]}


SHOP = {**steady("api", 600, 0.05), **steady("mid", 30, 0.2), ("count", "idle"): [(T0 + 60, 1)],
        ("sum", "idle"): [(T0 + 60, 0.1)]}


def no_cluster(kubeconfig="/nonexistent/kubeconfig") -> dict:
    """The environment of a run outside any Pod, with the given kubeconfig."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE")}
    return {**env, "KUBECONFIG": str(kubeconfig)}


def run_retune(url, *extra, env=None):
    return subprocess.run([str(KPILOT), "retune", "--url", url, "--namespace", "shop", "--over", "15m",
                           "--end", str(T0 + 60 * BINS), "--replays", "1", *map(str, extra)],
                          capture_output=True, text=True, timeout=300, env=env or no_cluster())


def test_each_services_target_comes_from_its_own_traffic(prometheus):
    prom = prometheus(SHOP)
    proc = run_retune(prom.url, "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["service"]: r for r in json.loads(proc.stdout)}
    # The 20 minutes before --end: 5 replayed first, 15 scored.
    assert all(q["start"] == str(T0 + 60) and q["end"] == str(T0 + 60 * BINS) for q in prom.queries)
    assert rows["api"]["requests"] == 15 * 600 and rows["mid"]["requests"] == 15 * 30
    # Many short requests share pods; a few slower ones each want their own.
    assert rows["api"]["target"] in STATIC_GRID and rows["mid"]["target"] in STATIC_GRID
    assert rows["api"]["target"] > rows["mid"]["target"]
    assert rows["api"]["annotations"] == {"kpilot.dev/base-target": f"{rows['api']['target']:g}",
                                          "kpilot.dev/band": "1"}
    # One request, in the warm-up: nothing to tune on, nothing to set.
    assert rows["idle"]["target"] is None and rows["idle"]["annotations"] is None
    assert rows["idle"]["why"] == "too little traffic to tune on"
    table = run_retune(prom.url)
    assert (f"kubectl annotate ksvc api -n shop --overwrite kpilot.dev/base-target={rows['api']['target']:g} "
            "kpilot.dev/band=1") in table.stdout
    assert "too little traffic" in table.stdout
    # Pasted, these lines would replace a band --apply keeps: the table says so.
    assert "--apply keeps a band already on a Service" in " ".join(table.stdout.split())


def test_a_service_without_durations_is_not_given_a_made_up_target(prometheus):
    # Counts without the histogram's _sum series: no duration to tune on.
    prom = prometheus({("count", "api"): steady("api", 600, 0.05)[("count", "api")]})
    rows = json.loads(run_retune(prom.url, "--json").stdout)
    assert rows == [{"service": "api", "requests": 9000, "target": None, "cost": None,
                     "why": "no request durations (no _sum series)", "annotations": None}]


def test_a_quiet_namespace_is_a_note_not_a_failure(prometheus):
    # A CronJob in a quiet hour: nothing to re-tune, exit 0, and say why on stderr.
    proc = run_retune(prometheus({}).url, "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout) == []
    assert "no requests in namespace 'shop'" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, option", [
    (["--over", "90s"], "--over"),                  # less than two 60 s bins
    (["--over", "30d"], "--over"),                  # more bins than Prometheus answers
    (["--namespace", 'shop"} or vector(1) #'], "--namespace"),
    (["--end", "nan"], "--end"),
])
def test_bad_options_are_one_line_before_any_query(prometheus, args, option):
    prom = prometheus(SHOP)
    proc = run_retune(prom.url, *args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and option in lines[0], proc.stderr
    assert prom.queries == []


def test_an_unreachable_api_server_is_one_line_before_reading_traffic(prometheus, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    prom = prometheus(SHOP)
    proc = run_retune(prom.url, "--apply", env=no_cluster(kubeconfig))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "unreachable" in lines[0] and "--apply" in lines[0]
    assert prom.queries == [] and "Traceback" not in proc.stderr


def test_apply_without_credentials_is_one_line_before_reading_traffic(prometheus):
    prom = prometheus(SHOP)
    proc = run_retune(prom.url, "--apply")
    assert proc.returncode != 0 and proc.stdout == "" and prom.queries == []
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--apply" in lines[0] and "no Kubernetes credentials" in lines[0]


def test_the_cronjobs_arguments_are_valid_retune_options(prometheus):
    # The shipped CronJob's command line is valid: its options are checked before the credentials
    # (below), and run here it gets as far as the credentials.
    cron = yaml.safe_load((RETUNE / "cronjob.yaml").read_text())
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[0] == "retune" and "--apply" in args
    args[args.index("--policy") + 1] = str(RETUNE.parents[1] / "policies" / "default")
    proc = subprocess.run([str(KPILOT), *args], capture_output=True, text=True, timeout=120, env=no_cluster())
    assert proc.returncode != 0 and "no Kubernetes credentials" in proc.stderr, proc.stderr
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    for option, value in (("--url", "prometheus-operated.monitoring.svc:9090"), ("--over", "1m"),
                          ("--namespace", "Not_A_Name")):
        bad = list(args)
        bad[bad.index(option) + 1] = value
        proc = subprocess.run([str(KPILOT), *bad], capture_output=True, text=True, timeout=120, env=no_cluster())
        assert proc.returncode == 2 and f"option {option}" in proc.stderr, proc.stderr


# --- --apply against a real API server ---

def _traffic(name, per_bin, mean_s):
    return ServiceTraffic(name, [(T0 + 60 * k, per_bin, mean_s) for k in range(BINS)])


@pytest.mark.envtest
def test_apply_annotates_only_selected_services_whose_target_changed(envtest, envtest_namespace):
    ns = envtest_namespace
    selected = {"kpilot.dev/autoscale": "enabled"}
    envtest.create_service(ns, "api", labels=selected)
    envtest.create_service(ns, "idle", labels=selected, annotations={"kpilot.dev/base-target": "7"})
    envtest.create_service(ns, "legacy")                      # has traffic, not selected
    # Tuned by hand (kpilot tune's band 1.5), and paused: the band is kept, the paused one untouched.
    envtest.create_service(ns, "tuned", labels=selected, annotations={"kpilot.dev/base-target": "9",
                                                                        "kpilot.dev/band": "1.5"})
    envtest.create_service(ns, "held", labels=selected, annotations={"kpilot.dev/paused": "true",
                                                                       "kpilot.dev/base-target": "20"})
    results = retune([_traffic("api", 600, 0.05), _traffic("legacy", 600, 0.05),
                      ServiceTraffic("idle", [(T0, 1, 0.1)]), _traffic("gone", 30, 0.2),
                      _traffic("tuned", 600, 0.05), _traffic("held", 600, 0.05)],
                     60, SimConfig(), RewardConfig(), seeds=[0])
    target = next(r.target for r in results if r.service == "api")
    with envtest.admin_client() as api_client:
        selected = selected_services(ns, "kpilot.dev/autoscale=enabled", api_client)
        assert set(selected) == {"api", "idle", "tuned", "held"}
        report = dict(annotate(results, selected, ns, api_client))
        again = dict(annotate(results, selected_services(ns, "kpilot.dev/autoscale=enabled", api_client), ns,
                              api_client))
    assert report["api"] == f"set {target:g}, band 1" and again["api"] == f"unchanged ({target:g})"
    assert report["tuned"] == f"set {target:g} (was 9), band 1.5" and report["held"] == "kept: kpilot.dev/paused=true"
    assert report["legacy"] == "not selected" and report["gone"] == "not selected"
    assert report["idle"] == "kept: too little traffic to tune on"

    def annotations(name):
        status, body = envtest.request(f"/apis/serving.knative.dev/v1/namespaces/{ns}/services/{name}")
        assert status == 200
        return json.loads(body)["metadata"].get("annotations") or {}

    assert annotations("api") == {"kpilot.dev/base-target": f"{target:g}", "kpilot.dev/band": "1"}
    assert annotations("idle") == {"kpilot.dev/base-target": "7"}     # kept what it had
    assert annotations("tuned") == {"kpilot.dev/base-target": f"{target:g}", "kpilot.dev/band": "1.5"}
    assert annotations("held") == {"kpilot.dev/paused": "true", "kpilot.dev/base-target": "20"}
    assert "kpilot.dev/base-target" not in annotations("legacy")


@pytest.mark.envtest
def test_a_refused_patch_is_reported_per_service_and_the_others_still_run(envtest, envtest_namespace):
    # The operator's own ServiceAccount may list Services but not patch them.
    ns = envtest_namespace
    for name in ("a", "b"):
        envtest.create_service(ns, name, labels={"kpilot.dev/autoscale": "enabled"})
    results = retune([_traffic("a", 600, 0.05), _traffic("b", 30, 0.2)], 60, SimConfig(), RewardConfig(), seeds=[0])
    with envtest.operator_client() as api_client:
        report = dict(annotate(results, selected_services(ns, "kpilot.dev/autoscale=enabled", api_client), ns,
                               api_client))
    assert set(report) == {"a", "b"}
    assert all(what.startswith("failed: forbidden to annotate Service") for what in report.values())


@pytest.mark.envtest
def test_the_retune_serviceaccount_may_only_list_and_annotate_services_where_bound(envtest):
    envtest.apply_file(RETUNE / "rbac.yaml")
    user = "system:serviceaccount:kpilot-system:kpilot-retune"

    groups = ["system:serviceaccounts", "system:authenticated"]

    def allowed(verb, resource, namespace, group="serving.knative.dev"):
        return envtest.allowed(user, groups, verb, resource, namespace, group)

    # The authorizer sees new bindings through a cache: wait for the grants before reading refusals.
    envtest.wait_allowed(user, groups, "list", "services", "default", "serving.knative.dev")
    envtest.wait_allowed(user, groups, "patch", "services", "default", "serving.knative.dev")
    assert not allowed("patch", "services", "kpilot-system")           # not bound there
    assert not allowed("delete", "services", "default") and not allowed("update", "services", "default")
    assert not allowed("patch", "revisions", "default") and not allowed("get", "secrets", "default", group="")


@pytest.mark.envtest
def test_the_command_annotates_the_services_of_a_namespace(envtest, envtest_namespace, prometheus):
    # As the CronJob runs it: read Prometheus, tune, annotate, all through `kpilot retune --apply`.
    ns = envtest_namespace
    envtest.create_service(ns, "api", labels={"kpilot.dev/autoscale": "enabled"})
    envtest.create_service(ns, "asleep", labels={"kpilot.dev/autoscale": "enabled"})   # no series at all
    prom = prometheus(SHOP)
    proc = subprocess.run([str(KPILOT), "retune", "--url", prom.url, "--namespace", ns, "--over", "15m",
                           "--end", str(T0 + 60 * BINS), "--replays", "1", "--apply", "--json"],
                          capture_output=True, text=True, timeout=300, env=no_cluster(envtest.admin_kubeconfig))
    assert proc.returncode == 0, proc.stderr
    rows = {r["service"]: r for r in json.loads(proc.stdout)}
    # Only the selected Service is tuned; the others in Prometheus are reported, not annotated.
    assert rows["api"]["applied"] == f"set {rows['api']['target']:g}, band 1"
    assert rows["mid"]["applied"] == "not selected" and rows["mid"]["target"] is None
    assert rows["asleep"]["applied"] == "kept: no requests in the window"       # reported, not dropped
    status, body = envtest.request(f"/apis/serving.knative.dev/v1/namespaces/{ns}/services/api")
    assert json.loads(body)["metadata"]["annotations"] == rows["api"]["annotations"]
