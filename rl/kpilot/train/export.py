"""SB3 PPO model + VecNormalize statistics -> the framework-free export (kpilot.policy).

The export is the deterministic actor path only: policy MLP (tanh) then the action head, which
gives the Gaussian's mean; the operator clips it to [-1, 1] exactly as SB3's
`predict(deterministic=True)` clips an unsquashed Box action. `tests/train` proves they agree.
"""

from __future__ import annotations

import platform

import numpy as np

from kpilot.errors import ConfigError
from kpilot.policy import ExportedPolicy, policy_from_bytes, policy_to_bytes


def actor_layers(model) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight, bias) of every Linear on the deterministic actor path of an SB3 MlpPolicy."""
    import torch

    policy = model.policy
    if getattr(policy, "squash_output", False):
        raise ConfigError("squashed (tanh) action distributions cannot be exported; use squash_output=False")
    acts = {type(m).__name__ for m in policy.mlp_extractor.policy_net if not isinstance(m, torch.nn.Linear)}
    if acts - {"Tanh"}:
        raise ConfigError(f"only tanh MLPs can be exported, found {sorted(acts)}")
    linears = [m for m in policy.mlp_extractor.policy_net if isinstance(m, torch.nn.Linear)]
    linears.append(policy.action_net)
    return [(m.weight.detach().cpu().numpy().astype(np.float32),
             m.bias.detach().cpu().numpy().astype(np.float32)) for m in linears]


def normalization(vecnorm, n_features: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Observation mean, var, clip and epsilon; identity when not normalising."""
    if vecnorm is None or not vecnorm.norm_obs:
        # (x - 0) / sqrt(1 - eps + eps) = x, clipped far away.
        return np.zeros(n_features), np.full(n_features, 1.0 - 1e-8), 1e9, 1e-8
    rms = vecnorm.obs_rms
    return (np.asarray(rms.mean, float), np.asarray(rms.var, float), float(vecnorm.clip_obs),
            float(vecnorm.epsilon))


def export_bytes(model, vecnorm, action_spec, manifest: dict, observation_version: str | None = None) -> bytes:
    from kpilot.observation import FEATURES_BY_VERSION, OBS_VERSION

    version = observation_version or OBS_VERSION
    mean, var, clip, eps = normalization(vecnorm, len(FEATURES_BY_VERSION[version]))
    return policy_to_bytes(layers=actor_layers(model), obs_mean=mean, obs_var=var,
                           action_spec=action_spec, activation="tanh", clip_obs=clip, epsilon=eps,
                           extra=manifest, observation_version=version)


def export_policy(model, vecnorm, action_spec, manifest: dict, observation_version: str | None = None
                  ) -> ExportedPolicy:
    """The in-memory export (what the operator would load), for validation during training."""
    return policy_from_bytes(export_bytes(model, vecnorm, action_spec, manifest, observation_version),
                             source="export")


def trace_record(trace, traces_dir: str | None = None) -> dict:
    """What the manifest says about one training trace: its source, format and sha256.

    Paths under the real-excerpts folder are written as ${KPILOT_TRACES}/..., not this machine's path."""
    meta = trace.meta
    source = str(meta.get("source"))
    if traces_dir and source.startswith(traces_dir.rstrip("/") + "/"):
        source = "${KPILOT_TRACES}/" + source[len(traces_dir.rstrip("/")) + 1:]
    return {"source": source, "format": meta.get("format"), "sha256": meta.get("checksum"),
            "rows": int(meta.get("rows", len(trace))), "span_s": trace.recorded_span_s}


# The libraries whose numerics decide the trained weights: the same command and seed train the same
# policy only with the same versions of these (and Python), which the manifest records.
TRAINING_LIBRARIES = ("numpy", "numba", "llvmlite", "torch", "stable-baselines3", "gymnasium")


def library_versions() -> dict:
    """The installed version of each of TRAINING_LIBRARIES ("missing" where it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in TRAINING_LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


def build_manifest(*, name: str, config_dict: dict, env_dict: dict, sim_dict: dict, reward_dict: dict,
                   traces: list[dict], command: str, rule: dict | None, timesteps: int,
                   best: dict | None, observation_version: str | None = None) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from kpilot.observation import OBS_VERSION

    try:
        kv = version("kpilot")
    except PackageNotFoundError:
        kv = "unknown"
    return {
        "name": name,
        "manifest": {
            "kpilot_version": kv,
            "observation_version": observation_version or OBS_VERSION,
            "algorithm": "PPO (stable-baselines3), Gaussian MlpPolicy, tanh, no squashing",
            "timesteps": int(timesteps),
            "simulator": sim_dict,
            "reward": reward_dict,
            "env": env_dict,
            "training_traces": traces,
            "command": command,
            "config": config_dict,
            "rule_baseline": rule,
            "best_validation": best,
            "python": platform.python_version(),
            "libraries": library_versions(),
        },
    }
