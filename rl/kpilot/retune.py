"""`kpilot retune`: each Service's target re-tuned on its latest traffic, on a schedule.

What `kpilot evaluate --baselines static-rolling` replays, run against a cluster: from a CronJob
(manifests/retune/), read the last `over_s` of every Service's requests in a namespace from
Prometheus (queue-proxy's histogram, as `kpilot trace from-prometheus` does), replay each
Service's traffic under every target of `STATIC_GRID` in the simulator, and set the cheapest as
the Service's `kpilot.dev/base-target` with `kpilot.dev/band: "1"`. The operator, in Enforce,
then writes that target to the Service's revisions (its write path, guardrails and restore);
`retune` itself only annotates Services, which creates no revision.

Only Services matching the selector (default: the label the operator's policies select) are
annotated, and only when the target changed; a Service without enough traffic in the window,
or without request durations, keeps what it has.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from kpilot.action import BAND_ANNOTATION, BASE_TARGET_ANNOTATION, PAUSED_ANNOTATION, is_paused
from kpilot.env.reward import RewardConfig
from kpilot.errors import ConfigError
from kpilot.evaluate.baselines import STATIC_GRID, tune_static
from kpilot.evaluate.rolling import WARMUP_S
from kpilot.sim.config import SimConfig
from kpilot.traces.model import Trace, make_trace
from kpilot.traces.prometheus_export import ServiceTraffic
from kpilot.traces.request_counts import synthesise

KNATIVE = ("serving.knative.dev", "v1", "services")


@dataclass
class Retuned:
    service: str
    requests: int
    target: float | None          # None: nothing to tune on (`why`)
    cost: float | None            # the target's cost per request on the traffic
    why: str = ""

    @property
    def annotations(self) -> dict[str, str] | None:
        return None if self.target is None else {BASE_TARGET_ANNOTATION: f"{self.target:g}", BAND_ANNOTATION: "1"}


def traffic_trace(entry: ServiceTraffic, step_s: float, *, warmup_s: float, seed: int = 0, cv: float = 1.0) -> Trace:
    """A Service's bins as requests (the request-counts reader's synthesis), the first
    `warmup_s` replayed unscored."""
    counts = np.array([count for _, count, _ in entry.rows], dtype=np.int64)
    means = np.array([math.nan if mean is None else mean for _, _, mean in entry.rows], dtype=np.float64)
    starts = np.arange(len(counts)) * float(step_s)
    # A bin counted without its duration takes the Service's mean (retune() skips Services with none).
    fallback = {"fallback_s": entry.mean_duration_s} if math.isfinite(entry.mean_duration_s) else {}
    arrivals, service = synthesise(starts, counts, means, float(step_s), np.random.default_rng(seed), cv=cv,
                                   **fallback)
    return make_trace(arrivals, service, None, span_s=len(counts) * float(step_s), warmup_s=warmup_s)


def retune(traffic: list[ServiceTraffic], step_s: float, sim: SimConfig, reward: RewardConfig, *,
           seeds: list[int], warmup_s: float = WARMUP_S, grid=STATIC_GRID) -> list[Retuned]:
    """The cheapest grid target on each Service's traffic (after `warmup_s` unscored)."""
    out = []
    for entry in traffic:
        trace = traffic_trace(entry, step_s, warmup_s=warmup_s)
        scored = len(trace) - trace.first_scored()
        if scored < 2:
            out.append(Retuned(entry.name, scored, None, None, "too little traffic to tune on"))
            continue
        if not math.isfinite(entry.mean_duration_s):
            # Counts without the histogram's _sum: any target tuned on a made-up duration is a guess.
            out.append(Retuned(entry.name, scored, None, None, "no request durations (no _sum series)"))
            continue
        target, cost = tune_static(trace, sim, reward, seeds=seeds, grid=grid)
        out.append(Retuned(entry.name, scored, target, cost))
    return out


def kube_client():
    """A kubernetes ApiClient: in a Pod its ServiceAccount, elsewhere the usual kubeconfig."""
    try:
        from kubernetes import client
    except ImportError:
        raise ConfigError("--apply needs the kubernetes client: pip install 'kpilot[operator]'",
                          option="--apply") from None
    from kpilot.kube_credentials import NoCredentials, load_configuration

    try:
        return client.ApiClient(load_configuration())
    except NoCredentials as exc:
        raise ConfigError(str(exc), option="--apply") from None


def _call(what: str, fn, *args, **kwargs):
    """One API call; its failure as one line (ConfigError), a vanished object as None."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    try:
        return fn(*args, **kwargs)
    except ApiException as exc:
        if exc.status == 404:
            return None
        if exc.status == 403:
            raise ConfigError(f"forbidden to {what}: the ServiceAccount needs the kpilot-retune Role "
                              "(manifests/retune)", option="--apply") from None
        raise ConfigError(f"cannot {what}: HTTP {exc.status} {exc.reason}", option="--apply") from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise ConfigError(f"cannot {what}: the API server is unreachable ({type(exc).__name__})",
                          option="--apply") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:    # a body cut off, or not UTF-8
        raise ConfigError(f"cannot {what}: unexpected answer (not JSON: {type(exc).__name__})",
                          option="--apply") from None


def selected_services(namespace: str, selector: str, api_client) -> dict[str, dict]:
    """The Knative Services of `namespace` matching `selector`: name -> annotations. Called before
    any traffic is read, so that credentials, reachability and permissions fail first."""
    from kubernetes import client

    api = client.CustomObjectsApi(api_client)
    what = f"list Knative Services in {namespace!r}"
    listed = _call(what, api.list_namespaced_custom_object, *KNATIVE[:2], namespace, KNATIVE[2],
                   label_selector=selector)
    if listed is None:                  # 404: no Knative Services here
        listed = {"items": []}
    # A server that is not a Kubernetes API server (a proxy's page, another service's JSON) can
    # answer 200: its answer is one line, not a KeyError, and no Service is annotated on it.
    items = listed.get("items") if isinstance(listed, dict) else None
    metas = [item.get("metadata") if isinstance(item, dict) else None for item in items] \
        if isinstance(items, list) else [None]
    if not all(isinstance(m, dict) and isinstance(m.get("name"), str) and isinstance(m.get("annotations") or {}, dict)
               for m in metas):
        raise ConfigError(f"cannot {what}: unexpected answer (not a Kubernetes list of objects with metadata: "
                          f"{_excerpt(listed)})", option="--apply")
    return {m["name"]: m.get("annotations") or {} for m in metas}


def _excerpt(answer) -> str:
    """The start of an API answer for an error line: printable, on one line."""
    text = answer if isinstance(answer, str) else json.dumps(answer, default=str)
    text = "".join(c if c.isprintable() else "?" for c in " ".join(text.split()))
    return (text[:80] + ("..." if len(text) > 80 else "")) or "an empty body"


def annotate(results: list[Retuned], current: dict[str, dict], namespace: str, api_client) -> list[tuple[str, str]]:
    """Set the base target of each selected Service (`current`: selected_services) whose target
    changed; one failure does not stop the others. A paused Service is left alone, and a band
    already on a Service (`kpilot tune`'s, or one set by hand) is kept: band 1 only where there is
    none. Returns (service, what happened) per result, failures starting with "failed"."""
    from kubernetes import client

    api = client.CustomObjectsApi(api_client)
    report = []
    for r in results:
        have = current.get(r.service)
        try:
            paused = have is not None and is_paused(have)
        except ValueError as exc:       # it may have meant a pause: left alone, as the operator leaves it
            report.append((r.service, f"kept: {exc}"))
            continue
        if have is None:
            report.append((r.service, "not selected"))
        elif paused:
            report.append((r.service, f"kept: {PAUSED_ANNOTATION}=true"))
        elif r.target is None:
            report.append((r.service, f"kept: {r.why}"))
        else:
            want = {**r.annotations, **({BAND_ANNOTATION: have[BAND_ANNOTATION]} if BAND_ANNOTATION in have else {})}
            if all(have.get(k) == v for k, v in want.items()):
                report.append((r.service, f"unchanged ({r.target:g})"))
                continue
            try:
                done = _call(f"annotate Service {namespace}/{r.service}", api.patch_namespaced_custom_object,
                             *KNATIVE[:2], namespace, KNATIVE[2], r.service, {"metadata": {"annotations": want}})
            except ConfigError as exc:
                report.append((r.service, f"failed: {exc.message}"))
                continue
            before = have.get(BASE_TARGET_ANNOTATION)
            report.append((r.service, "gone" if done is None else
                           f"set {r.target:g}" + (f" (was {before})" if before else "")
                           + f", band {want[BAND_ANNOTATION]}"))
    return report
