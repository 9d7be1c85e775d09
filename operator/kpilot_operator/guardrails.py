"""Guardrails: plain functions over (previous target, proposed target, bounds, step, cooldown, time).

The order matters: the step limit is relative to what runs now, then the bounds clamp, so a
target outside the bounds is pulled inside at once (bounds are hard, the step limit is soft).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kpilot import action

KNATIVE_MIN_TARGET = 0.01   # the webhook rejects anything lower
DEADBAND = 0.02             # changes under 2 % are not worth a write (and an Event)


def clamp_to_bounds(target: float, min_target: float, max_target: float) -> float:
    return max(min_target, min(max_target, max(target, KNATIVE_MIN_TARGET)))


def service_bounds(min_target: float, max_target: float, base_target: float | None,
                   band: float | None) -> tuple[float, float]:
    """The targets a Service may run: the spec's bounds, narrowed to within a factor of `band` of
    its base target where it has one (kpilot.action.band_bounds, as `kpilot evaluate`'s
    `rl-in-band` replays it). A band outside the spec's bounds pins the nearer bound."""
    if base_target is None:
        return min_target, max_target
    lo, hi = action.band_bounds(base_target, band if band is not None else action.DEFAULT_BAND)
    lo, hi = max(lo, min_target), min(hi, max_target)
    if lo > hi:
        lo = hi = clamp_to_bounds(base_target, min_target, max_target)
    return lo, hi


def limit_step(previous: float, proposed: float, max_step_ratio: float) -> float:
    """Keep the change within a factor of (1 + max_step_ratio) of the previous target: the same
    limit a policy trains and is evaluated under (kpilot.action.limit_step)."""
    return float(action.limit_step(proposed, previous, max_step_ratio))


def in_cooldown(last_change_at: float | None, now: float, cooldown_s: float) -> bool:
    return last_change_at is not None and now - last_change_at < cooldown_s


def is_meaningful_change(previous: float, new: float, deadband: float = DEADBAND) -> bool:
    return abs(new - previous) > deadband * max(previous, KNATIVE_MIN_TARGET)


def round_target(target: float) -> float:
    """Two decimals: what the annotation carries, so decisions compare with what is stored."""
    return round(float(target), 2)


def round_within(target: float, min_target: float, max_target: float) -> float:
    """`round_target` that stays inside the bounds (a maximum of 4.9995 must not write 5)."""
    value = round_target(target)
    if value > max_target:
        value = math.floor(max_target * 100) / 100
    if value < min_target:
        value = math.ceil(min_target * 100) / 100
    return value


def inside_bounds(target: float, min_target: float, max_target: float) -> bool:
    """Whether a target already written counts as inside the bounds. A bound two decimals cannot
    hold (a band of 6.666 stores 6.67) counts as inside, or the same 6.67 would be "pulled in" at
    every tick."""
    return min_target <= target <= max_target or target == round_within(target, min_target, max_target)


def format_target(target: float) -> str:
    """The annotation's text: up to two decimals, all of them (`:g` would write 12345.67 as 12345.7)."""
    return f"{round_target(target):.2f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class Guarded:
    target: float          # the target to run (equals previous when nothing should change)
    changed: bool
    reason: str            # Applied | Cooldown | WithinDeadband | StepLimited | Bounded | InvalidDecision


def guard(*, previous: float, proposed: float, min_target: float, max_target: float,
          max_step_ratio: float, cooldown_s: float, last_change_at: float | None, now: float) -> Guarded:
    """Apply every guardrail to a proposal; the result says why the target is what it is."""
    # NaN passes every comparison: max(nan, 0.01) is nan and min(max_target, nan) is max_target,
    # so it would be written as the upper bound past the step limit. It is no decision at all.
    if not math.isfinite(proposed):
        return Guarded(previous, False, "InvalidDecision")
    stepped = limit_step(previous, proposed, max_step_ratio)
    bounded = round_within(clamp_to_bounds(stepped, min_target, max_target), min_target, max_target)
    inside = inside_bounds(previous, min_target, max_target)
    # A step limit under the deadband would make every step "not worth a write": the target would
    # never move. The deadband stays under half a step.
    deadband = min(DEADBAND, max_step_ratio / 2)
    if not is_meaningful_change(previous, bounded, deadband) and inside:    # outside the bounds: always move in
        return Guarded(previous, False, "WithinDeadband")
    if in_cooldown(last_change_at, now, cooldown_s) and inside:
        return Guarded(previous, False, "Cooldown")
    reason = ("Bounded" if bounded != round_target(stepped)
              else "StepLimited" if round_target(stepped) != round_target(proposed) else "Applied")
    return Guarded(bounded, True, reason)
