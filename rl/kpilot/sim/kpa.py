"""The Knative Pod Autoscaler's decision, as a pure function of its inputs.

A port of knative/serving pkg/autoscaler/scaling/autoscaler.go `Scale()` (Knative 1.23) and of
the averaging in pkg/autoscaler/aggregation. Nothing here reads a clock, draws a random number or
does I/O: the caller passes the window averages, the ready pods and `now`, plus the decider's own
state (panic time, max panic pods, scale-down-delay window) in a small float array, exactly the
fields Knative keeps on its `autoscaler` struct. The same compiled functions run in the unit tests
(tests/sim/test_kpa.py pins them against Knative's autoscaler_test.go) and inside the simulator.

The decider spec is a float64 array indexed by the SPEC_* constants; build it with `decider_spec`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# DeciderSpec fields (pkg/autoscaler/scaling/multiscaler.go), as array slots.
SPEC_TARGET_VALUE = 0        # target x utilization, per pod
SPEC_TOTAL_VALUE = 1         # target before utilization (capacity per pod for burst capacity)
SPEC_TBC = 2                 # target burst capacity; 0 = never, -1 = activator always in path
SPEC_PANIC_THRESHOLD = 3     # ratio, 2.0 for 200 %
SPEC_MAX_SCALE_UP_RATE = 4
SPEC_MAX_SCALE_DOWN_RATE = 5
SPEC_STABLE_WINDOW = 6       # seconds
SPEC_REACHABLE = 7           # 1.0 when the revision receives traffic
SPEC_ACTIVATION_SCALE = 8
SPEC_SCALE_DOWN_DELAY = 9    # seconds; 0 disables the delay window
SPEC_TICK = 10               # seconds between decisions (the delay window's granularity)
SPEC_SIZE = 11

# Decider state slots; the scale-down-delay window follows as (time, pods) pairs.
STATE_PANIC_TIME = 0         # NaN when not panicking
STATE_MAX_PANIC_PODS = 1
STATE_DELAY_NEXT = 2         # ring write position
STATE_DELAY_COUNT = 3
STATE_HEADER = 4


def decider_spec(target_value: float, total_value: float, *, target_burst_capacity: float = 211.0,
                 panic_threshold: float = 2.0, max_scale_up_rate: float = 1000.0,
                 max_scale_down_rate: float = 2.0, stable_window_s: float = 60.0,
                 reachable: bool = True, activation_scale: int = 1,
                 scale_down_delay_s: float = 0.0, tick_s: float = 2.0) -> np.ndarray:
    spec = np.zeros(SPEC_SIZE)
    spec[SPEC_TARGET_VALUE] = target_value
    spec[SPEC_TOTAL_VALUE] = total_value
    spec[SPEC_TBC] = target_burst_capacity
    spec[SPEC_PANIC_THRESHOLD] = panic_threshold
    spec[SPEC_MAX_SCALE_UP_RATE] = max_scale_up_rate
    spec[SPEC_MAX_SCALE_DOWN_RATE] = max_scale_down_rate
    spec[SPEC_STABLE_WINDOW] = stable_window_s
    spec[SPEC_REACHABLE] = 1.0 if reachable else 0.0
    spec[SPEC_ACTIVATION_SCALE] = activation_scale
    spec[SPEC_SCALE_DOWN_DELAY] = scale_down_delay_s
    spec[SPEC_TICK] = tick_s
    return spec


def decider_state_size(scale_down_delay_s: float, tick_s: float = 2.0) -> int:
    slots = int(math.ceil(scale_down_delay_s / tick_s)) + 4 if scale_down_delay_s > 0 else 0
    return STATE_HEADER + 2 * slots


@njit(cache=True)
def new_decider_state(state, ready_pods, now):
    """Reset `state` for a new decider. Knative starts in panic when more than one pod is ready,
    so that a restarted autoscaler never scales down before it has seen a full window."""
    state[:] = 0.0
    state[STATE_PANIC_TIME] = now if ready_pods > 1 else np.nan
    state[STATE_MAX_PANIC_PODS] = ready_pods


@njit(cache=True)
def _delay_window_max(state, now, pods, delay):
    """Record `pods` at `now` and return the max over records newer than now - delay."""
    slots = (state.shape[0] - STATE_HEADER) // 2
    i = int(state[STATE_DELAY_NEXT])
    state[STATE_HEADER + 2 * i] = now
    state[STATE_HEADER + 2 * i + 1] = pods
    state[STATE_DELAY_NEXT] = (i + 1) % slots
    state[STATE_DELAY_COUNT] = min(state[STATE_DELAY_COUNT] + 1, slots)
    best = pods
    for k in range(int(state[STATE_DELAY_COUNT])):
        t = state[STATE_HEADER + 2 * k]
        if t > now - delay and state[STATE_HEADER + 2 * k + 1] > best:
            best = state[STATE_HEADER + 2 * k + 1]
    return best


@njit(cache=True)
def kpa_decide(stable, panic, ready_pods, now, spec, state):
    """One `Scale()` decision.

    stable, panic: observed revision-total concurrency averaged over the stable / panic window.
    ready_pods: pods ready now. now: seconds. spec: decider spec array. state: decider state
    (mutated: panic time, max panic pods, delay window).
    Returns (desired_pods, excess_burst_capacity, panicking).
    """
    ready = max(1.0, ready_pods)
    max_up = math.ceil(spec[SPEC_MAX_SCALE_UP_RATE] * ready)
    max_down = 0.0
    if spec[SPEC_REACHABLE] > 0.5:
        max_down = math.floor(ready / spec[SPEC_MAX_SCALE_DOWN_RATE])

    dspc = math.ceil(stable / spec[SPEC_TARGET_VALUE])
    dppc = math.ceil(panic / spec[SPEC_TARGET_VALUE])
    desired_stable = min(max(dspc, max_down), max_up)
    desired_panic = min(max(dppc, max_down), max_up)

    act = spec[SPEC_ACTIVATION_SCALE]
    if act > 1.0:
        if dspc > 0 and act > desired_stable:
            desired_stable = act
        if dppc > 0 and act > desired_panic:
            desired_panic = act

    over_threshold = dppc / ready >= spec[SPEC_PANIC_THRESHOLD]
    panic_time = state[STATE_PANIC_TIME]
    if over_threshold:
        state[STATE_PANIC_TIME] = now          # begin or extend panic
    elif not np.isnan(panic_time) and panic_time + spec[SPEC_STABLE_WINDOW] < now:
        state[STATE_PANIC_TIME] = np.nan      # the surge is in the stable window now
        state[STATE_MAX_PANIC_PODS] = 0.0

    desired = desired_stable
    panicking = not np.isnan(state[STATE_PANIC_TIME])
    if panicking:
        # Provision for the larger of the two windows, and never scale down while panicking.
        if desired < desired_panic:
            desired = desired_panic
        if desired > state[STATE_MAX_PANIC_PODS]:
            state[STATE_MAX_PANIC_PODS] = desired
        desired = state[STATE_MAX_PANIC_PODS]

    delay = spec[SPEC_SCALE_DOWN_DELAY]
    if delay > 0.0:
        desired = _delay_window_max(state, now, desired, delay)

    tbc = spec[SPEC_TBC]
    ebc = -1.0
    if tbc == 0.0:
        ebc = 0.0
    elif tbc > 0.0:
        ebc = math.floor(ready_pods * spec[SPEC_TOTAL_VALUE] - tbc - panic)
    return int(desired), ebc, panicking


@njit(cache=True)
def round_6_digits(x):
    """Knative rounds every window average to 6 decimals (aggregation/bucketing.go
    roundToNDigits, half away from zero): a constant 7 in flight at target 7 must read 7, not
    7.000000000000001, which would want a second pod."""
    return math.floor(x * 1e6 + 0.5) / 1e6


@njit(cache=True)
def window_average(buckets, completed_s, first_s, window_s):
    """Average concurrency over the last `window_s` whole seconds (Knative's default aggregation).

    buckets: ring indexed by second % len(buckets), each the time-weighted average concurrency of
    that second. completed_s: seconds [first_s, completed_s) are complete. Missing seconds count
    as 0; before a full window has elapsed the sum is divided by the seconds seen so far. Rounded
    to 6 decimals, as Knative's WindowAverage returns it.
    """
    n = len(buckets)
    w = int(window_s)
    lo = max(first_s, completed_s - w)
    total = 0.0
    for s in range(lo, completed_s):
        total += buckets[s % n]
    seen = completed_s - first_s
    if seen <= 0:
        return 0.0
    return round_6_digits(total / min(w, seen))
