"""The KPA decider against the behaviours in Knative's own tests.

Each test cites the test in knative/serving pkg/autoscaler/scaling/autoscaler_test.go (Knative 1.23)
it reproduces. Those tests build the decider with targetUtilization 0.75 (TotalValue = target/0.75),
panic threshold 2, max scale up/down rate 10 and a 60 s stable window; so does `make` here.
"""

import math

import numpy as np
import pytest

from kpilot.sim.kpa import (STATE_MAX_PANIC_PODS, STATE_PANIC_TIME, decider_spec,
                            decider_state_size, kpa_decide, new_decider_state, window_average)

UTIL = 0.75


def make(target, tbc, *, ready=1, delay=0.0, up=10.0, down=10.0, threshold=2.0, reachable=True,
         activation=1, now=0.0):
    spec = decider_spec(target, target / UTIL, target_burst_capacity=tbc, panic_threshold=threshold,
                        max_scale_up_rate=up, max_scale_down_rate=down, stable_window_s=60.0,
                        reachable=reachable, activation_scale=activation, scale_down_delay_s=delay)
    state = np.zeros(decider_state_size(delay))
    new_decider_state(state, ready, now)
    return spec, state


def ebc(target, tbc, observed, pods):
    """expectedEBC() of autoscaler_test.go."""
    return math.floor(target / UTIL * pods - tbc - observed)


def test_stable_mode_increase_with_concurrency_default():
    # TestAutoscalerStableModeIncreaseWithConcurrencyDefault
    spec, st = make(10, 101)
    assert kpa_decide(50, 10, 1, 0.0, spec, st)[:2] == (5, ebc(10, 101, 10, 1))
    assert kpa_decide(100, 10, 1, 0.0, spec, st)[:2] == (10, ebc(10, 101, 10, 1))


def test_stable_mode_decrease():
    # TestAutoscalerStableModeDecrease
    spec, st = make(10, 98)
    assert kpa_decide(100, 100, 8, 0.0, spec, st)[:2] == (10, ebc(10, 98, 100, 8))
    assert kpa_decide(50, 50, 8, 0.0, spec, st)[:2] == (5, ebc(10, 98, 50, 8))


def test_stable_mode_no_traffic_scales_to_zero():
    # TestAutoscalerStableModeNoTrafficScaleToZero
    spec, st = make(10, 75)
    assert kpa_decide(1, 0, 1, 0.0, spec, st)[0] == 1
    assert kpa_decide(0, 0, 1, 0.0, spec, st)[:2] == (0, ebc(10, 75, 0, 1))


def test_activation_scale():
    # TestAutoscalerActivationScale
    spec, st = make(10, 75, activation=2)
    assert kpa_decide(0, 0, 1, 0.0, spec, st)[0] == 0
    assert kpa_decide(1, 0, 1, 0.0, spec, st)[0] == 2


def test_unpanic_after_slow_increase():
    # TestAutoscalerUnpanicAfterSlowIncrease
    spec, st = make(1, 98)
    t0 = 100.0
    assert kpa_decide(11, 25, 10, t0, spec, st)[:2] == (25, ebc(1, 98, 25, 10))
    assert st[STATE_PANIC_TIME] == t0
    assert kpa_decide(30, 41, 40, t0 + 30, spec, st)[:2] == (41, ebc(1, 98, 41, 40))
    assert st[STATE_PANIC_TIME] == t0, "panic time must not move"
    desired, e, panicking = kpa_decide(50, 56, 55, t0 + 62, spec, st)
    assert (desired, e, panicking) == (50, ebc(1, 98, 56, 55), False)
    assert np.isnan(st[STATE_PANIC_TIME])


def test_extend_panic_window():
    # TestAutoscalerExtendPanicWindow
    spec, st = make(1, 98)
    t0 = 100.0
    assert kpa_decide(11, 25, 10, t0, spec, st)[0] == 25
    assert kpa_decide(30, 80, 40, t0 + 30, spec, st)[:2] == (80, ebc(1, 98, 80, 40))
    assert st[STATE_PANIC_TIME] == t0 + 30


def test_panic_mode_exponential_track_and_stabilize():
    # TestAutoscalerPanicModeExponentialTrackAndStabilize
    spec, st = make(1, 101)
    assert kpa_decide(6, 6, 1, 0.0, spec, st)[0] == 6
    assert kpa_decide(36, 36, 6, 1.0, spec, st)[0] == 36
    assert st[STATE_PANIC_TIME] == 1.0
    assert kpa_decide(216, 216, 36, 2.0, spec, st)[0] == 216
    assert kpa_decide(1296, 1296, 216, 2.0, spec, st)[0] == 1296
    assert kpa_decide(1296, 1296, 1296, 3.0, spec, st)[0] == 1296


@pytest.mark.parametrize("label,target,tbc,stable,panic,ready,prep,want,want_ebc", [
    # TestAutoscalerScale table, case by case.
    ("AutoscalerNoDataAtZeroNoAutoscale", 10, 100, 0, 0, 1, None, 0, ebc(10, 100, 0, 1)),
    ("AutoscalerStableModeUnlimitedTBC", 181, -1, 21, 26, 1, None, 1, -1),
    ("Autoscaler0TBC", 10, 0, 50, 49, 1, None, 5, 0),
    ("AutoscalerStableModeNoChange", 10, 100, 50, 50, 1, None, 5, ebc(10, 100, 50, 1)),
    ("AutoscalerPanicStableLargerThanPanic", 1, 100, 50, 30, 5, "panic5", 50, ebc(1, 100, 30, 5)),
    ("AutoscalerPanicStableLessThanPanic", 1, 100, 20, 30, 5, "panic5", 30, ebc(1, 100, 30, 5)),
    ("AutoscalerStableModeNoChangeAlreadyScaled", 10, 100, 50, 50, 5, None, 5, ebc(10, 100, 50, 5)),
    ("AutoscalerStableModeIncreaseWithSmallScaleUpRate", 1, 1982, 3, 3.1, 2, "up1.1", 3,
     ebc(1, 1982, 3.1, 2)),
    ("AutoscalerStableModeDecreaseWithSmallScaleDownRate", 10, 1982, 1, 1, 100, "down1.1", 90,
     ebc(10, 1982, 1, 100)),
    ("AutoscalerStableModeDecreaseNonReachable", 10, 1982, 1, 1, 100, "unreachable", 1,
     ebc(10, 1982, 1, 100)),
    ("AutoscalerPanicModeDoublePodCount", 10, 84, 50, 100, 1, None, 10, ebc(10, 84, 100, 1)),
])
def test_autoscaler_scale_table(label, target, tbc, stable, panic, ready, prep, want, want_ebc):
    kw = {}
    if prep == "up1.1":
        kw["up"] = 1.1
    if prep in ("down1.1", "unreachable"):
        kw["down"] = 1.1
    if prep == "unreachable":
        kw["reachable"] = False
    spec, st = make(target, tbc, **kw)
    now = 1000.0
    if prep == "panic5":
        st[STATE_PANIC_TIME] = now - 5
        st[STATE_MAX_PANIC_PODS] = 5
    desired, e, _ = kpa_decide(stable, panic, ready, now, spec, st)
    assert desired == want, label
    assert abs(e - want_ebc) <= 1, label    # Knative's test tolerates +-1 on EBC


def test_panic_then_unpanic_scale_down():
    # TestAutoscalerPanicThenUnPanicScaleDown
    spec, st = make(10, 93)
    assert kpa_decide(100, 100, 1, 0.0, spec, st)[0] == 10
    t = 10.0
    assert kpa_decide(100, 1000, 10, t, spec, st)[0] == 100
    assert kpa_decide(1, 1, 10, t + 30, spec, st)[0] == 100, "no scale-down while panicking"
    assert kpa_decide(1, 1, 10, t + 61, spec, st)[0] == 1


def test_rate_limit_scale_up():
    # TestAutoscalerRateLimitScaleUp
    spec, st = make(10, 61)
    assert kpa_decide(1000, 1001, 1, 0.0, spec, st)[0] == 10
    assert kpa_decide(1000, 1001, 10, 0.0, spec, st)[0] == 100


def test_rate_limit_scale_down():
    # TestAutoscalerRateLimitScaleDown
    spec, st = make(10, 61)
    assert kpa_decide(1, 1, 100, 0.0, spec, st)[0] == 10
    assert kpa_decide(1, 1, 10, 0.0, spec, st)[0] == 1


def test_one_pod_minimum_when_no_endpoints():
    # TestAutoscalerUseOnePodAsMinimumIfEndpointsNotFound
    spec, st = make(10, 81)
    assert kpa_decide(1000, 888, 0, 0.0, spec, st)[:2] == (10, ebc(10, 81, 888, 0))


def test_update_target():
    # TestAutoscalerUpdateTarget: a new target takes effect at the next decision.
    spec, st = make(10, 77)
    assert kpa_decide(100, 101, 1, 0.0, spec, st)[0] == 10
    new_spec, _ = make(1, 71)
    assert kpa_decide(100, 101, 10, 0.0, new_spec, st)[0] == 100


def test_start_in_panic_mode():
    # TestStartInPanicMode: panic on creation only above one ready pod.
    for ready in (0, 1):
        _, st = make(100, 11, ready=ready)
        assert np.isnan(st[STATE_PANIC_TIME]) and st[STATE_MAX_PANIC_PODS] == ready
    _, st = make(100, 11, ready=2)
    assert not np.isnan(st[STATE_PANIC_TIME]) and st[STATE_MAX_PANIC_PODS] == 2


def test_scale_down_delay():
    # TestAutoscalerScaleDownDelay ("simple" and "gradual")
    spec, st = make(10, 0, delay=300.0, threshold=100.0)
    assert kpa_decide(40, 40, 0, 2.0, spec, st)[0] == 4
    assert kpa_decide(0, 0, 0, 300.0, spec, st)[0] == 4
    assert kpa_decide(0, 0, 0, 302.0, spec, st)[0] == 0
    assert kpa_decide(40, 40, 0, 540.0, spec, st)[0] == 4
    assert kpa_decide(30, 30, 0, 600.0, spec, st)[0] == 4
    assert kpa_decide(0, 0, 0, 660.0, spec, st)[0] == 4
    assert kpa_decide(0, 0, 0, 840.0, spec, st)[0] == 3
    assert kpa_decide(0, 0, 0, 900.0, spec, st)[0] == 0


def test_scale_down_delay_zero():
    # TestAutoscalerScaleDownDelayZero: without a delay, scale down immediately.
    spec, st = make(10, 0, delay=0.0, threshold=100.0)
    assert kpa_decide(40, 40, 0, 0.0, spec, st)[0] == 4
    assert kpa_decide(20, 20, 0, 0.5, spec, st)[0] == 2


def test_window_average_counts_missing_seconds_as_zero_and_ramps_in():
    buckets = np.zeros(60)
    buckets[:10] = 6.0
    # 10 seconds seen: averaged over 10 (not 60).
    assert window_average(buckets, 10, 0, 60) == pytest.approx(6.0)
    # the panic window sees only the last 6 seconds
    buckets[4:10] = [0, 0, 0, 12, 12, 12]
    assert window_average(buckets, 10, 0, 6) == pytest.approx(6.0)
    # after the window is full, old seconds fall out of the ring
    ring = np.zeros(60)
    for s in range(100):
        ring[s % 60] = 1.0 if s >= 70 else 0.0
    assert window_average(ring, 100, 0, 60) == pytest.approx(30 / 60)
    assert window_average(ring, 0, 0, 60) == 0.0


@pytest.mark.parametrize("stable, panic", [(60, 6), (25, 3), (45, 5), (65, 7), (6, 1), (8, 1)])
def test_panic_window_rounds_halves_away_from_zero_like_go(stable, panic):
    # Knative's MakeMetric rounds with time.Duration.Round: 2.5 s -> 3 s (Python's round gives 2).
    from kpilot.sim.config import KpaConfig

    assert KpaConfig(stable_window_s=stable).panic_window_s == panic
