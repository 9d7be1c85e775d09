"""The AutoscalingPolicy API as plain values: parsed once per tick from the custom resource.

The CRD's OpenAPI schema (manifests/crd.yaml) rejects malformed specs at the API server; this
module fills in the same defaults and checks what a schema cannot express (minTarget <= maxTarget).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kpilot.action import DEFAULT_INTERVAL_S, valid_band

GROUP = "kpilot.dev"
VERSION = "v1alpha1"
PLURAL = "autoscalingpolicies"
KIND = "AutoscalingPolicy"

MODES = ("Enforce", "DryRun", "Off")
DEFAULT_MODE = "DryRun"
DEFAULT_MAX_STEP_RATIO = 0.5   # for policies that carry no step limit of their own
# A policy is trained and evaluated changing the target at every decision, within its own step
# limit: a cooldown longer than the decision interval runs it in a way nobody measured.
DEFAULT_COOLDOWN_S = 0
DEFAULT_MIN_TARGET = 1.0
DEFAULT_MAX_TARGET = 1000.0
DEFAULT_PROM_TIMEOUT_S = 5.0


class SpecError(ValueError):
    """A spec the schema let through but the operator cannot act on."""


@dataclass(frozen=True)
class PolicySource:
    sha256: str
    config_map: tuple[str, str] | None = None   # (name, key) in the policy's namespace
    path: str | None = None                     # a file in the operator's image / volume

    def describe(self) -> str:
        return f"configmap/{self.config_map[0]}[{self.config_map[1]}]" if self.config_map else str(self.path)


@dataclass(frozen=True)
class MetricsSource:
    kind: str                                    # "prometheus" | "kubernetes"
    url: str | None = None
    auth_secret: tuple[str, str] | None = None   # (name, key) of a bearer token Secret
    timeout_s: float = DEFAULT_PROM_TIMEOUT_S


@dataclass(frozen=True)
class PolicySpec:
    selector: dict
    source: PolicySource
    metrics: MetricsSource
    mode: str = DEFAULT_MODE
    interval_s: float = DEFAULT_INTERVAL_S
    min_target: float = DEFAULT_MIN_TARGET
    max_target: float = DEFAULT_MAX_TARGET
    max_step_ratio: float | None = None          # None: the policy's own (see `step_ratio`)
    cooldown_s: float = DEFAULT_COOLDOWN_S
    fallback_target: float | None = None
    stale_after_s: float = field(default=0.0)    # 0 -> 4 decision intervals (see `staleness`)
    band: float | None = None                    # around a Service's kpilot.dev/base-target (None: 1.5)

    @property
    def staleness_s(self) -> float:
        """How long observations may be missing before the fallback: staleAfterSeconds, else 4 intervals."""
        return self.stale_after_s or 4 * self.interval_s


def parse_spec(spec: dict) -> PolicySpec:
    try:
        policy = spec["policy"]
        if "configMap" in policy:
            cm = policy["configMap"]
            source = PolicySource(sha256=str(policy["sha256"]).lower(),
                                  config_map=(cm["name"], cm.get("key", "policy.json")))
        elif "path" in policy:
            source = PolicySource(sha256=str(policy["sha256"]).lower(), path=policy["path"])
        else:
            raise SpecError("spec.policy needs configMap or path")
        metrics_spec = spec.get("metrics") or {"kubernetes": {}}
        if "prometheus" in metrics_spec:
            prom = metrics_spec["prometheus"]
            ref = prom.get("authSecretRef")
            metrics = MetricsSource("prometheus", url=prom["url"].rstrip("/"),
                                    auth_secret=(ref["name"], ref.get("key", "token")) if ref else None,
                                    timeout_s=float(prom.get("timeoutSeconds", DEFAULT_PROM_TIMEOUT_S)))
        else:
            metrics = MetricsSource("kubernetes")
        bounds = spec.get("bounds") or {}
        fallback = spec.get("fallbackTarget")
        parsed = PolicySpec(
            selector=dict(spec.get("selector") or {}),
            source=source,
            metrics=metrics,
            mode=spec.get("mode", DEFAULT_MODE),
            interval_s=float(spec.get("decisionIntervalSeconds", DEFAULT_INTERVAL_S)),
            min_target=float(bounds.get("minTarget", DEFAULT_MIN_TARGET)),
            max_target=float(bounds.get("maxTarget", DEFAULT_MAX_TARGET)),
            max_step_ratio=float(spec["maxStepRatio"]) if spec.get("maxStepRatio") is not None else None,
            cooldown_s=float(spec.get("cooldownSeconds", DEFAULT_COOLDOWN_S)),
            fallback_target=float(fallback) if fallback is not None else None,
            stale_after_s=float(spec.get("staleAfterSeconds", 0)),
            band=float(spec["band"]) if spec.get("band") is not None else None,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, SpecError):
            raise
        raise SpecError(f"malformed spec ({type(exc).__name__}: {exc})") from None
    if parsed.mode not in MODES:
        raise SpecError(f"mode {parsed.mode!r} is not one of {', '.join(MODES)}")
    if not 0 < parsed.min_target <= parsed.max_target:
        raise SpecError(f"bounds need 0 < minTarget <= maxTarget, got {parsed.min_target}..{parsed.max_target}")
    if parsed.interval_s <= 0 or (parsed.max_step_ratio is not None and parsed.max_step_ratio <= 0):
        raise SpecError("decisionIntervalSeconds and maxStepRatio must be positive")
    if not parsed.metrics.timeout_s > 0:      # aiohttp reads a timeout of 0 as none: a tick could hang
        raise SpecError(f"metrics.prometheus.timeoutSeconds must be positive, got {parsed.metrics.timeout_s:g}")
    if parsed.fallback_target is not None and not parsed.fallback_target > 0:
        raise SpecError(f"fallbackTarget must be positive, got {parsed.fallback_target:g}")
    if parsed.band is not None and not valid_band(parsed.band):
        raise SpecError(f"band must be >= 1 (1 pins each Service's base target), got {parsed.band}")
    if (problem := selector_problem(parsed.selector)) is not None:
        raise SpecError(problem)
    return parsed


# Kubernetes label syntax: a name of up to 63 alphanumerics, '-', '_' or '.' (alphanumeric at both
# ends), a key optionally prefixed by a DNS subdomain and '/'; a value is a name or empty.
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _label_key_ok(key) -> bool:
    if not isinstance(key, str):
        return False
    prefix, _, name = key.rpartition("/")
    return bool(_LABEL_NAME.fullmatch(name)) and (
        not prefix and "/" not in key or len(prefix) <= 253 and bool(_DNS_SUBDOMAIN.fullmatch(prefix)))


def _label_value_ok(value) -> bool:
    return isinstance(value, str) and (value == "" or bool(_LABEL_NAME.fullmatch(value)))


def selector_problem(selector: dict) -> str | None:
    """Why the API server would refuse this label selector, or None. Checked here because the
    API server's 400 on every list would read as Knative being unreadable, forever, and `Off`
    could not list what to restore."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if not _label_key_ok(key):
            return f"selector matchLabels: {key!r} is not a valid label key"
        if not _label_value_ok(value):
            return f"selector matchLabels {key}: {value!r} is not a valid label value"
    for expr in selector.get("matchExpressions") or []:
        key, op = expr.get("key"), expr.get("operator")
        if not _label_key_ok(key):
            return f"selector expression: {key!r} is not a valid label key"
        if op in ("In", "NotIn"):
            # The API server rejects `key in ()`.
            if not expr.get("values"):
                return f"selector expression on {key!r}: {op} needs at least one value"
            for value in expr["values"]:
                if not _label_value_ok(value):
                    return f"selector expression on {key!r}: {value!r} is not a valid label value"
    return None


def step_ratio(spec: PolicySpec, policy_step_ratio: float | None) -> float:
    """The step guardrail to apply: the spec's, else the one the policy was trained under, else
    the default (policies trained without a limit)."""
    if spec.max_step_ratio is not None:
        return spec.max_step_ratio
    return policy_step_ratio if policy_step_ratio is not None else DEFAULT_MAX_STEP_RATIO


def selector_matches(selector: dict, labels: dict | None) -> bool:
    """Kubernetes label-selector semantics (matchLabels AND matchExpressions); empty selects all."""
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def selector_to_query(selector: dict) -> str:
    """The labelSelector query string for the API server (the same filter is applied locally too)."""
    parts = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)
