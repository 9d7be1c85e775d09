"""What the kind tier creates in the cluster, and where it reaches it (read from kind-config.yaml)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from kpilot.policy import sha256_hex

ROOT = Path(__file__).resolve().parents[2]
KIND_CONFIG = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
CLUSTER = KIND_CONFIG["name"]
CONTEXT = f"kind-{CLUSTER}"
INGRESS = KIND_CONFIG["nodes"][0]["extraPortMappings"][0]      # Kourier's NodePort on the host
NAMESPACE = "kpilot-e2e"
SERVICE = "hello"
POLICY = "e2e"
POLICY_PATH = "/etc/kpilot/policies/default/policy.json"      # the ConfigMap the Deployment mounts
# Knative's sample application (any image serving HTTP on $PORT will do).
IMAGE = os.environ.get("KPILOT_E2E_IMAGE", "ghcr.io/knative/helloworld-go:latest")


def ingress_url() -> str:
    return f"http://{INGRESS['listenAddress']}:{INGRESS['hostPort']}/"


def service_host() -> str:
    return f"{SERVICE}.{NAMESPACE}.127.0.0.1.sslip.io"    # config-domain set by kind-up.sh


def hello_service() -> dict:
    """A Knative Service the policy selects, with no target of its own (Knative's 100 applies)."""
    return {
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": SERVICE, "namespace": NAMESPACE, "labels": {"kpilot.dev/autoscale": "enabled"}},
        "spec": {"template": {"spec": {"containers": [
            {"image": IMAGE, "env": [{"name": "TARGET", "value": "kpilot"}]}]}}},
    }


def e2e_policy(mode: str) -> dict:
    """The shipped default policy over that Service, reading PodAutoscaler status (no Prometheus
    in the kind cluster), deciding every 10 s."""
    return {
        "apiVersion": "kpilot.dev/v1alpha1", "kind": "AutoscalingPolicy",
        "metadata": {"name": POLICY, "namespace": NAMESPACE},
        "spec": {
            "selector": {"matchLabels": {"kpilot.dev/autoscale": "enabled"}},
            "policy": {"path": POLICY_PATH,
                       "sha256": sha256_hex((ROOT / "manifests/policies/default/policy.json").read_bytes())},
            "mode": mode, "decisionIntervalSeconds": 10, "cooldownSeconds": 0,
            "bounds": {"minTarget": 1, "maxTarget": 200},
            "metrics": {"kubernetes": {}},
        },
    }
