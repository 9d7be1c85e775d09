"""The framework-free policy export: one JSON file, read with numpy alone.

An exported policy is `policy.json`:

    {
      "format": "kpilot-policy/1",
      "observation": {"version": OBS_VERSION, "features": [...]},
      "normalization": {"mean": [...], "var": [...], "clip": 10.0, "epsilon": 1e-8},
      "action": {"kind": "log-target", "min_target": ..., "max_target": ...,
                 "max_step_ratio": ... or null, "smoothing": ... or null, "immediate_cuts": bool},
      "network": {"activation": "tanh", "precision": "float32" (absent: float64),
                  "layers": [{"weight": [[...]], "bias": [...]}, ...]},
      ... anything else (training settings, traces, kpilot version) is carried, not read here
    }

The network maps the normalised observation to the action mean; the policy acts
deterministically (the mean, clipped to [-1, 1]), exactly as SB3's `predict(deterministic=True)`
does for a Gaussian policy with a squashing-free Box action. The operator reads this file from a
ConfigMap or a path and checks its sha256 before use; the trainer writes it beside the SB3 model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from kpilot import __version__
from kpilot.action import ActionSpec
from kpilot.errors import PolicyError
from kpilot.observation import FEATURES_BY_VERSION, OBS_VERSION, OBS_VERSION_BASE

POLICY_FORMAT = "kpilot-policy/1"
POLICY_FILE = "policy.json"
# The rest of a `kpilot train` artifact directory beside the export.
MODEL_FILE, VECNORM_FILE, MANIFEST_FILE, CONFIG_FILE = "model.zip", "vecnormalize.pkl", "manifest.json", "config.yaml"
ARTIFACT_FILES = (POLICY_FILE, MODEL_FILE, VECNORM_FILE, MANIFEST_FILE, CONFIG_FILE)
_ACTIVATIONS = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0.0)}


@dataclass(frozen=True)
class ExportedPolicy:
    manifest: dict
    sha256: str
    action_spec: ActionSpec
    obs_mean: np.ndarray
    obs_var: np.ndarray
    clip_obs: float
    epsilon: float
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]
    activation: str

    def action(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic action in [-1, 1] for encoded observations of shape (B, N) or (N,)."""
        x = np.asarray(obs, dtype=np.float64)
        single = x.ndim == 1
        x = np.atleast_2d(x)
        if x.shape[-1] != self.obs_mean.shape[0]:
            raise ValueError(f"observation has {x.shape[-1]} features, policy expects {self.obs_mean.shape[0]}")
        x = np.clip((x - self.obs_mean) / np.sqrt(self.obs_var + self.epsilon),
                    -self.clip_obs, self.clip_obs)
        act = _ACTIVATIONS[self.activation]
        for i, (w, b) in enumerate(self.layers):
            x = x @ w.T + b
            if i < len(self.layers) - 1:
                x = act(x)
        a = np.clip(x[:, 0], -1.0, 1.0)
        return a[0] if single else a

    @property
    def observation_version(self) -> str:
        return self.manifest["observation"]["version"]

    @property
    def observes_base(self) -> bool:
        """A version 2 policy reads its Service's base target (kpilot.observation)."""
        return self.observation_version == OBS_VERSION_BASE

    def target(self, obs: np.ndarray) -> np.ndarray:
        """The concurrency target the policy picks for encoded observations."""
        return self.action_spec.to_target(self.action(obs))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _optional_number(section: dict, key: str, valid, meaning: str, source: str) -> float | None:
    """`section[key]` as a float, None when absent or null; anything else invalid is a PolicyError."""
    value = section.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not valid(value):
        raise PolicyError(f"action {key} must be {meaning}, got {value!r}", path=source)
    return float(value)


def _newer(what: str, source: str) -> PolicyError:
    """The error for a setting or value this kpilot does not know (a newer format)."""
    return PolicyError(f"{what} is unknown to this kpilot ({__version__}); upgrade it to run this policy", path=source)


def _refuse_unknown(section, known: set, what: str, source: str) -> None:
    """A setting this kpilot does not know may change how the policy acts (a newer format): running
    the policy without it would differ from what was trained and evaluated, so it is refused."""
    if not isinstance(section, dict):
        raise TypeError(f"{what} must be a mapping, got {type(section).__name__}")
    unknown = sorted(set(section) - known)
    if unknown:
        raise _newer(f"{what} setting {unknown[0]!r}", source)


def policy_from_bytes(data: bytes, *, source: str = "policy", expected_sha256: str | None = None
                      ) -> ExportedPolicy:
    """Parse and validate an exported policy. Raises PolicyError with the reason."""
    digest = sha256_hex(data)
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise PolicyError(f"sha256 mismatch: expected {expected_sha256}, file has {digest}",
                          path=source)
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PolicyError(f"not valid JSON ({exc})", path=source) from None
    except RecursionError:      # [[[...]]] thousands deep: json recurses once per level
        raise PolicyError("not valid JSON (nested too deeply)", path=source) from None
    if not isinstance(doc, dict) or doc.get("format") != POLICY_FORMAT:
        raise PolicyError(f"not a {POLICY_FORMAT} file (format={doc.get('format') if isinstance(doc, dict) else None!r})",
                          path=source)
    where = "observation"       # the part being read, named when it is malformed
    try:
        obs = doc["observation"]
        _refuse_unknown(obs, {"version", "features"}, "observation", source)
        if obs["version"] not in FEATURES_BY_VERSION:
            raise PolicyError(f"observation spec version {obs['version']!r} is not one this kpilot "
                              f"reads ({', '.join(map(repr, FEATURES_BY_VERSION))}); retrain or upgrade",
                              path=source)
        features = FEATURES_BY_VERSION[obs["version"]]
        if list(obs["features"]) != list(features):
            raise PolicyError("observation feature list differs from this kpilot's", path=source)
        where = "normalization"
        norm = doc["normalization"]
        _refuse_unknown(norm, {"mean", "var", "clip", "epsilon"}, "normalization", source)
        mean = np.asarray(norm["mean"], dtype=np.float64)
        var = np.asarray(norm["var"], dtype=np.float64)
        where = "action"
        act = doc["action"]
        if not isinstance(act, dict):
            raise TypeError(f"must be an object, got {json.dumps(act)[:40]}")
        if act.get("kind") != "log-target":
            raise _newer(f"action kind {act.get('kind')!r}", source)
        _refuse_unknown(act, {"kind", *(f.name for f in fields(ActionSpec))}, "action", source)
        # Both are absent in artifacts from before the step limit and smoothing: None.
        step = _optional_number(act, "max_step_ratio", lambda x: x > 0,
                                "a positive number or null (no limit)", source)
        smoothing = _optional_number(act, "smoothing", lambda x: 0 < x < 1,
                                     "a number in (0, 1) or null (none)", source)
        cuts = act.get("immediate_cuts", False)       # absent before immediate cuts: False
        if not isinstance(cuts, bool):
            raise PolicyError(f"action immediate_cuts must be true or false, got {cuts!r}", path=source)
        spec = ActionSpec(float(act["min_target"]), float(act["max_target"]), step, smoothing, cuts)
        where = "network"
        net = doc["network"]
        _refuse_unknown(net, {"activation", "layers", "precision"}, "network", source)
        precision = net.get("precision", "float64")      # absent before float32 exports: float64
        if precision not in ("float32", "float64"):
            raise _newer(f"network precision {precision!r}", source)
        activation = net["activation"]
        if activation not in _ACTIVATIONS:
            raise _newer(f"network activation {activation!r}", source)
        for i, layer in enumerate(net["layers"]):
            _refuse_unknown(layer, {"weight", "bias"}, f"network layer {i}", source)
        # Weights written as float32 decimals are read back as those float32 values exactly.
        layers = tuple((np.asarray(l["weight"], dtype=precision).astype(np.float64),
                        np.asarray(l["bias"], dtype=precision).astype(np.float64)) for l in net["layers"])
        where = "normalization"
        clip, epsilon = float(norm.get("clip", 10.0)), float(norm.get("epsilon", 1e-8))
    except PolicyError:
        raise
    except KeyError as exc:
        raise PolicyError(f"malformed policy: field {where}: missing {exc}", path=source) from None
    except (TypeError, ValueError, AttributeError) as exc:   # AttributeError: a list for a dict
        raise PolicyError(f"malformed policy: field {where}: {exc}", path=source) from None
    n = len(features)
    if mean.shape != (n,) or var.shape != (n,) or not np.all(np.isfinite(var)) or np.any(var < 0):
        raise PolicyError("normalization statistics have the wrong shape or a negative or non-finite "
                          "variance", path=source)
    if not (clip > 0 and epsilon > 0 and np.isfinite(epsilon)):
        raise PolicyError("normalization clip and epsilon must be positive numbers", path=source)
    fan_in = n
    for i, (w, b) in enumerate(layers):
        if w.ndim != 2 or w.shape[1] != fan_in or b.shape != (w.shape[0],):
            raise PolicyError(f"layer {i} has shape {w.shape}/{b.shape}, expected (*, {fan_in})", path=source)
        fan_in = w.shape[0]
    if not layers or fan_in != 1:
        raise PolicyError("network must end in a single action output", path=source)
    if not (0 < spec.min_target < spec.max_target < np.inf):
        raise PolicyError("action bounds must satisfy 0 < min_target < max_target", path=source)
    if not all(np.all(np.isfinite(a)) for wb in layers for a in wb) or not np.all(np.isfinite(mean)):
        raise PolicyError("non-finite weights or statistics", path=source)
    return ExportedPolicy(doc, digest, spec, mean, var, clip, epsilon, layers, activation)


def policy_file(path: str | Path) -> Path:
    """The policy.json a policy path names: the file itself, or an artifact directory's."""
    p = Path(path)
    return p / POLICY_FILE if p.is_dir() else p


def load_policy(path: str | Path, *, expected_sha256: str | None = None) -> ExportedPolicy:
    """Load an exported policy from a policy.json file or a policy artifact directory."""
    p = policy_file(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise PolicyError("no such policy file", path=str(p)) from None
    except OSError as exc:
        raise PolicyError(f"cannot read ({exc.strerror})", path=str(p)) from None
    return policy_from_bytes(data, source=str(p), expected_sha256=expected_sha256)


def policy_to_bytes(*, layers, obs_mean, obs_var, action_spec: ActionSpec, activation: str = "tanh",
                    clip_obs: float = 10.0, epsilon: float = 1e-8, extra: dict | None = None,
                    observation_version: str = OBS_VERSION) -> bytes:
    """Serialise an MLP policy to the export format (deterministic bytes for the same inputs).
    float32 weights (a torch network's) are written as their shortest float32 decimals, half the
    size of float64's: a [128, 128] network fits the 256 KiB `kubectl apply` can store."""
    as_float32 = all(np.asarray(a).dtype == np.float32 for wb in layers for a in wb)
    network = {"activation": activation,
               "layers": [{"weight": _decimals(w, as_float32), "bias": _decimals(b, as_float32)} for w, b in layers]}
    if as_float32:
        network["precision"] = "float32"
    doc = {
        "format": POLICY_FORMAT,
        "observation": {"version": observation_version,
                        "features": list(FEATURES_BY_VERSION[observation_version])},
        "normalization": {"mean": np.asarray(obs_mean, float).tolist(),
                          "var": np.asarray(obs_var, float).tolist(),
                          "clip": float(clip_obs), "epsilon": float(epsilon)},
        "action": action_spec.to_dict(),
        "network": network,
        **(extra or {}),
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _decimals(array, as_float32: bool) -> list:
    """Nested lists of numbers; float32 values as the shortest decimal that reads back as them
    (numpy's str), which a float64 reader rounds to float32 again exactly."""
    a = np.asarray(array)
    if not as_float32:
        return a.astype(np.float64).tolist()
    if a.ndim == 1:
        return [float(str(v)) for v in a]
    return [_decimals(row, True) for row in a]


CONFIGMAP_LIMIT = 1024 * 1024      # what a ConfigMap holds (etcd's object limit)
APPLY_LIMIT = 256 * 1024           # client-side `kubectl apply` copies the object into an annotation


def size_note(size: int) -> str | None:
    """Why a policy.json of `size` bytes will not deploy as the README shows, or None."""
    if size > CONFIGMAP_LIMIT:
        return (f"policy.json is {size / 1024:,.0f} KiB, more than a ConfigMap holds (1 MiB): the operator "
                "cannot read it from one; train with a smaller ppo.net_arch")
    if size > APPLY_LIMIT * 0.95:        # JSON-escaped into the annotation with the object's metadata: ~2 % more
        return (f"policy.json is {size / 1024:,.0f} KiB: `kubectl apply` (and `apply -k manifests/`) stores a "
                "copy, escaped, in an annotation of at most 256 KiB and may refuse it; deploy it with `kubectl "
                "apply --server-side` or `kubectl create configmap`")
    return None
