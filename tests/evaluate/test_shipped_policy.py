"""The shipped default policy: small, loadable with numpy, trained on what its manifest says."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from kpilot.evaluate.runner import load_artifact
from kpilot.observation import OBS_VERSION
from kpilot.traces import load_trace

DEFAULT = Path(__file__).resolve().parents[2] / "policies" / "default"


def test_default_artifact_is_complete_and_small():
    files = {p.name: p.stat().st_size for p in DEFAULT.iterdir() if p.is_file()}
    for name in ("policy.json", "model.zip", "vecnormalize.pkl", "manifest.json", "config.yaml"):
        assert name in files, name
    assert sum(files.values()) < 1024 * 1024
    art = load_artifact(DEFAULT)
    m = art.manifest
    assert m["observation_version"] == OBS_VERSION
    assert m["command"].startswith("kpilot train")
    assert m["rule_baseline"]["params"]["hi_s"] > 0
    assert {t["format"] for t in m["training_traces"]} >= {"synthetic", "azure-functions-2019"}


def test_default_records_checksums_of_the_real_excerpts():
    root = os.environ.get("KPILOT_TRACES")
    if not root or not Path(root).is_dir():
        pytest.skip("KPILOT_TRACES is not set: point it at the real trace excerpts (e.g. ../shared/traces)")
    real = [t for t in load_artifact(DEFAULT).manifest["training_traces"] if t["format"] != "synthetic"]
    assert real
    for t in real:
        assert t["source"].startswith("${KPILOT_TRACES}/"), t["source"]   # no machine paths
        path = Path(root) / t["source"].split("/", 1)[1]
        # The loader's checksum covers every input file of the trace (Azure 2019: both files).
        assert load_trace(str(path)).meta["checksum"] == t["sha256"], path
    azure_llm = next(t for t in real if t["format"] == "azure-llm")
    data = (Path(root) / azure_llm["source"].split("/", 1)[1]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == azure_llm["sha256"]


def test_default_policy_runs_on_a_held_out_real_window():
    root = os.environ.get("KPILOT_TRACES")
    if not root or not Path(root).is_dir():
        pytest.skip("KPILOT_TRACES is not set: point it at the real trace excerpts (e.g. ../shared/traces)")
    from kpilot.evaluate import run_evaluation

    spec = str(Path(root) / "azure-llm-2023" / "AzureLLMInferenceTrace_code.csv")
    rows = run_evaluation([spec], DEFAULT, ["kpa"], window=(0.8, 1.0)).rows
    assert [r["policy"] for r in rows] == ["rl:default", "kpa"]
    assert all(r["requests"] > 100 for r in rows)


def test_default_was_trained_with_the_shipped_config():
    """The YAML in the repository is the one that produced policies/default (reproducibility)."""
    from kpilot.train.config import load_config
    from kpilot.train.trainer import _plain

    recorded = load_artifact(DEFAULT).manifest["config"]
    current = _plain(load_config().to_dict())
    # Keys added since that run, at the value that trains as the run did (its config had none).
    added = {("env", "observation_lag_s"): 0.0}
    for (section, key), as_before in added.items():
        if key not in recorded[section]:
            assert current[section].pop(key) == as_before, f"{section}.{key} changes how the policy trained"
    assert recorded == current


def test_default_leaves_knatives_target_of_100_on_a_revision_at_rest():
    """A newly managed or scaled-to-zero Service often rests at Knative's default target: the
    shipped policy must not keep it for the load that comes back (the `kpilot demo` start)."""
    import numpy as np

    from kpilot.observation import encode

    at_rest = dict(concurrency_stable=0, concurrency_panic=0, ready_pods=0, desired_pods=0,
                   starting_pods=0, request_rate=0, latency_mean_s=0, latency_p95_s=0, panic=0)
    hours = np.arange(0, 86400, 3600.0)
    policy = load_artifact(DEFAULT).policy
    proposed = policy.target(encode(**{k: np.full(len(hours), v) for k, v in at_rest.items()},
                                    target=np.full(len(hours), 100.0), time_of_day_s=hours))
    # What the revision gets: taken over (a newly managed Service) the pick runs unsmoothed; a
    # managed revision resting at 100 moves half way (log scale). Both must leave 100 well behind.
    for first in (True, False):
        chosen = policy.action_spec.follow(proposed, 100.0, first)
        assert np.all(chosen < 50), (first, chosen.round(1))
