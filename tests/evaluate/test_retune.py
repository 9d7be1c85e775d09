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
from kpilot.retune import apply, retune
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


def run_retune(url, *extra):
    return subprocess.run([str(KPILOT), "retune", "--url", url, "--namespace", "shop", "--over", "15m",
                           "--end", str(T0 + 60 * BINS), "--replays", "1", *map(str, extra)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "KUBECONFIG": "/nonexistent/kubeconfig"})


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
    table = run_retune(prom.url)
    assert (f"kubectl annotate ksvc api -n shop --overwrite kpilot.dev/base-target={rows['api']['target']:g} "
            "kpilot.dev/band=1") in table.stdout
    assert "too little traffic" in table.stdout


def test_apply_without_credentials_is_one_line_before_reading_traffic(prometheus):
    prom = prometheus(SHOP)
    proc = run_retune(prom.url, "--apply")
    assert proc.returncode != 0 and proc.stdout == "" and prom.queries == []
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--apply" in lines[0] and "no Kubernetes credentials" in lines[0]


def test_the_cronjobs_arguments_are_valid_retune_options(prometheus):
    # The shipped CronJob's command line parses: run here it gets as far as the credentials.
    cron = yaml.safe_load((RETUNE / "cronjob.yaml").read_text())
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[0] == "retune" and "--apply" in args
    args[args.index("--policy") + 1] = str(RETUNE.parents[1] / "policies" / "default")
    proc = subprocess.run([str(KPILOT), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "KUBECONFIG": "/nonexistent/kubeconfig"})
    assert proc.returncode != 0 and "no Kubernetes credentials" in proc.stderr, proc.stderr
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"


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
    results = retune([_traffic("api", 600, 0.05), _traffic("legacy", 600, 0.05),
                      ServiceTraffic("idle", [(T0, 1, 0.1)]), _traffic("gone", 30, 0.2)],
                     60, SimConfig(), RewardConfig(), seeds=[0])
    target = next(r.target for r in results if r.service == "api")
    with envtest.admin_client() as api_client:
        report = dict(apply(results, ns, "kpilot.dev/autoscale=enabled", api_client))
        again = dict(apply(results, ns, "kpilot.dev/autoscale=enabled", api_client))
    assert report["api"] == f"set {target:g}" and again["api"] == f"unchanged ({target:g})"
    assert report["legacy"].startswith("not selected") and report["gone"].startswith("not selected")
    assert report["idle"].startswith("kept")

    def annotations(name):
        status, body = envtest.request(f"/apis/serving.knative.dev/v1/namespaces/{ns}/services/{name}")
        assert status == 200
        return json.loads(body)["metadata"].get("annotations") or {}

    assert annotations("api") == {"kpilot.dev/base-target": f"{target:g}", "kpilot.dev/band": "1"}
    assert annotations("idle") == {"kpilot.dev/base-target": "7"}     # kept what it had
    assert "kpilot.dev/base-target" not in annotations("legacy")


@pytest.mark.envtest
def test_the_retune_serviceaccount_may_only_list_and_annotate_services_where_bound(envtest):
    envtest.apply_file(RETUNE / "rbac.yaml")
    user = "system:serviceaccount:kpilot-system:kpilot-retune"

    def allowed(verb, resource, namespace, group="serving.knative.dev"):
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                  "spec": {"user": user, "groups": ["system:serviceaccounts", "system:authenticated"],
                           "resourceAttributes": {"group": group, "resource": resource, "verb": verb,
                                                  "namespace": namespace}}}
        status, body = envtest.request("/apis/authorization.k8s.io/v1/subjectaccessreviews", "POST", review)
        assert status == 201, body
        return json.loads(body)["status"]["allowed"]

    assert allowed("list", "services", "default") and allowed("patch", "services", "default")
    assert not allowed("patch", "services", "kpilot-system")           # not bound there
    assert not allowed("delete", "services", "default") and not allowed("update", "services", "default")
    assert not allowed("patch", "revisions", "default") and not allowed("get", "secrets", "default", group="")
