"""The action contract: how a policy's output in [-1, 1] becomes a concurrency target.

The policy picks the target on a log scale between `min_target` and `max_target`:
    target = exp(log(min) + (a + 1) / 2 * (log(max) - log(min)))
A log scale gives equal resolution to "2 vs 4" and "100 vs 200", which is how targets matter.

`smoothing` (optional, in (0, 1)) moves the running target only part of the way to the policy's
pick, on the log scale: target = current^(1 - smoothing) x proposed^smoothing. A policy deciding
every 30 s, faster than the KPA's 60 s stable window, otherwise chases the pod counts its own last
decision caused (targets 5, 9, 6, 12, 7, 15 and pods 6, 3, 6, 3); a static target never does. Trained
under smoothing, the policy learns to overshoot where it must move fast. The first decision on a
revision (`first`: the running target was set by someone else, such as Knative's default of 100 on
a revision kpilot has just taken over) is not smoothed: there is no loop of its own to damp yet.

`max_step_ratio` (optional) limits each decision to a factor of (1 + ratio) of the target that
runs now, exactly as the operator's step guardrail does. A policy trained under the limit learns
what the operator will let it do; one trained without it is judged on moves a cluster never makes.
The bounds, the smoothing and the limit travel in the policy artifact.

`band_bounds` is the per-Service band: a platform team gives a Service a base target (the static
target tuned on its recent traffic) and the policy moves only within a factor of `band` of it;
a band of 1 pins the base. `kpilot evaluate` (`rl-in-band`, `rl-or-tuned`) and the operator
(`kpilot.dev/base-target`, `kpilot.dev/band`) apply the same bounds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


def limit_step(proposed, current, max_step_ratio: float) -> np.ndarray:
    """`proposed` kept within a factor of (1 + max_step_ratio) of `current`: the one step limit
    that training, evaluation and the operator's guardrail all apply."""
    factor = 1.0 + max_step_ratio
    current = np.asarray(current, dtype=np.float64)
    return np.clip(np.asarray(proposed, dtype=np.float64), current / factor, current * factor)


DEFAULT_INTERVAL_S = 30.0   # seconds between a policy's decisions: training's, a replay's and the operator's default

# The Service annotations that carry a band to the operator (`kpilot tune` prints them).
BASE_TARGET_ANNOTATION = "kpilot.dev/base-target"
BAND_ANNOTATION = "kpilot.dev/band"
PAUSED_ANNOTATION = "kpilot.dev/paused"          # "true": the operator and retune leave the Service alone
PAUSED_VALUES = ("true", "false")
QUOTE_LIMIT = 64        # characters of an annotation's value a message quotes


def quoted(value) -> str:
    """An annotation's value for a one-line message: its repr, cut at QUOTE_LIMIT characters with
    its length, so that a value of any size makes a message of about the same."""
    text = str(value)
    if len(text) <= QUOTE_LIMIT:
        return repr(text)
    return f"{text[:QUOTE_LIMIT]!r}... ({len(text):,} characters)"


def is_paused(annotations) -> bool:
    """Whether a Service's annotations pause it (the operator and `kpilot retune` read it alike):
    "true" or "false", in any case, spaces around ignored; empty reads as false. ValueError (one
    line) for any other value: a "yes" or a "ture" meant to pause must not leave the Service
    managed without a word."""
    value = (annotations or {}).get(PAUSED_ANNOTATION)
    word = str(value or "").strip().lower()
    if not word:            # absent, or set empty (`kubectl annotate ... kpilot.dev/paused=`)
        return False
    if word not in PAUSED_VALUES:
        accepted = " or ".join(map(repr, PAUSED_VALUES))
        raise ValueError(f"{PAUSED_ANNOTATION}={quoted(value)} is not {accepted}")
    return word == "true"


DEFAULT_BAND = 1.5      # the operator's default step limit, x1.5, and the first width measured


def valid_band(band: float) -> bool:
    """A band factor: finite and >= 1 (1 pins the base target). The operator, evaluate and tune agree."""
    return math.isfinite(band) and band >= 1.0


def band_bounds(base: float, band: float) -> tuple[float, float]:
    """The targets within a factor of `band` (>= 1) of `base`: (base / band, base x band)."""
    return float(base) / float(band), float(base) * float(band)


@dataclass(frozen=True)
class ActionSpec:
    min_target: float = 1.0
    max_target: float = 200.0
    max_step_ratio: float | None = None   # None: any target in [min, max] at every decision
    smoothing: float | None = None        # None: the policy's pick is the target (no smoothing)
    immediate_cuts: bool = False          # True: a lower target (more pods) is not smoothed

    def to_target(self, action) -> np.ndarray:
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        lo, hi = np.log(self.min_target), np.log(self.max_target)
        return np.exp(lo + (a + 1.0) * 0.5 * (hi - lo))

    def to_action(self, target) -> np.ndarray:
        t = np.clip(np.asarray(target, dtype=np.float64), self.min_target, self.max_target)
        lo, hi = np.log(self.min_target), np.log(self.max_target)
        return 2.0 * (np.log(t) - lo) / (hi - lo) - 1.0

    def smooth(self, proposed, current, first=False) -> np.ndarray:
        """The proposal, moved towards from the `current` target by `smoothing` on the log scale;
        unchanged where `first` (a bool or mask: the policy's first decision on that revision)."""
        proposed = np.asarray(proposed, dtype=np.float64)
        if self.smoothing is None:
            return proposed
        current = np.maximum(np.asarray(current, dtype=np.float64), 1e-9)
        smoothed = np.exp((1.0 - self.smoothing) * np.log(current) + self.smoothing * np.log(proposed))
        at_once = np.logical_or(first, proposed < current) if self.immediate_cuts else first
        return np.where(at_once, proposed, smoothed)

    def follow(self, proposed, current, first=False) -> np.ndarray:
        """The target to run when the policy proposes `proposed` and `current` runs now:
        smoothed (not on a first decision), then within the step limit. Training and evaluation
        use this; the operator applies the same two steps (`smooth`, then its guardrail's
        `limit_step`, whose ratio a policy's spec may override)."""
        return self.limit(self.smooth(proposed, current, first), current)

    def limit(self, proposed, current) -> np.ndarray:
        """The proposal, kept within a factor of (1 + max_step_ratio) of the `current` target."""
        if self.max_step_ratio is None:
            return np.asarray(proposed, dtype=np.float64)
        return limit_step(proposed, current, self.max_step_ratio)

    def decide(self, action, current, first=False) -> np.ndarray:
        """Action -> the target to run, given the target that runs now."""
        return self.follow(self.to_target(action), current, first)

    def to_dict(self) -> dict:
        return {"kind": "log-target", **asdict(self)}
