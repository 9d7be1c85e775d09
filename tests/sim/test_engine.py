"""Request-level replay: the behaviours a user of `kpilot simulate` relies on."""

import numpy as np
import pytest

from kpilot.sim.config import KpaConfig, PodConfig, SimConfig
from kpilot.sim.replay import StaticTarget, replay
from kpilot.traces.model import make_trace


def cfg(**kw):
    kpa = {k: kw.pop(k) for k in list(kw) if k in KpaConfig.__dataclass_fields__}
    pod = {k: kw.pop(k) for k in list(kw) if k in PodConfig.__dataclass_fields__}
    assert not kw
    pod.setdefault("cold_start", "instant")
    return SimConfig(kpa=KpaConfig(**kpa), pod=PodConfig(**pod))


def poisson(rate, duration, service=1.0, seed=0):
    rng = np.random.default_rng(seed)
    arr = np.cumsum(rng.exponential(1 / rate, int(rate * duration * 1.2)))
    arr = arr[arr < duration]
    return make_trace(arr, np.full(len(arr), service))


def test_every_controller_is_charged_until_the_same_moment():
    # A static target and the same target re-decided every 30 s or 45 s are one policy: the
    # replay must charge them the same pod-seconds (the run ends on the tick after the last
    # request finishes, not on the controller's own grid).
    trace = poisson(5, 400, service=0.5, seed=4)

    class Every:
        name, target = "every", 3.0

        def __init__(self, interval_s):
            self.interval_s = interval_s

        def decide(self, raw):
            return 3.0

    runs = [replay(trace, c, cfg(), timeline=False).metrics
            for c in (StaticTarget(3.0), Every(30.0), Every(45.0))]
    assert len({(m["pod_seconds"], m["duration_s"], m["slo_violations"]) for m in runs}) == 1
    assert runs[0]["duration_s"] < trace.span_s + 30


def test_processor_sharing_slows_requests_beyond_the_cores():
    trace = make_trace([0.5, 0.5], [1.0, 1.0])
    one_core = replay(trace, config=cfg(min_scale=1, max_scale=1, cores=1.0))
    assert one_core.latencies == pytest.approx([2.0, 2.0])
    two_cores = replay(trace, config=cfg(min_scale=1, max_scale=1, cores=2.0))
    assert two_cores.latencies == pytest.approx([1.0, 1.0])


def test_container_concurrency_queues_at_the_pod():
    trace = make_trace([0.5, 0.5, 0.5], [1.0, 1.0, 1.0])
    r = replay(trace, config=cfg(min_scale=1, max_scale=1, container_concurrency=1))
    assert sorted(r.latencies) == pytest.approx([1.0, 2.0, 3.0])
    assert r.metrics["completed"] == 3


@pytest.mark.parametrize("cc, latency", [(2, 2.0), (3, 2.0), (4, 1.0)])
def test_the_activator_balances_by_container_concurrency_as_knative_does(cc, latency):
    # Knative's throttler: containerConcurrency 1-3 takes the first pod with a free slot, so a pair
    # of simultaneous requests shares one pod's core; above 3 it goes round-robin, one pod each.
    # (At 0 the less loaded of two random pods, as before.) Four pods up, the activator in the path.
    arrivals = np.repeat(np.arange(5.0, 300.0, 10.0), 2)
    trace = make_trace(arrivals, np.ones(len(arrivals)))
    config = cfg(min_scale=4, max_scale=4, initial_scale=4, container_concurrency=cc, target_burst_capacity=-1)
    r = replay(trace, StaticTarget(1000.0), config)
    assert r.latencies == pytest.approx([latency] * len(arrivals))
    unlimited = replay(trace, StaticTarget(1000.0), cfg(min_scale=4, max_scale=4, initial_scale=4,
                                                        target_burst_capacity=-1))
    assert 1.0 < np.mean(unlimited.latencies) < 2.0       # some pairs meet on a pod, most do not


def test_with_target_burst_capacity_minus_1_only_the_activator_reports():
    # Knative scrapes no pod at -1 (the activator carries every request and reports while it has
    # some): after an idle spell with a pod up, the windows restart on the burst and read 300 at
    # once (5 pods at target 100, 70 %). With the pods scraped, the idle seconds count, as before.
    trace = make_trace(np.full(300, 100.0), np.full(300, 60.0))

    def at(tbc, t):
        tl = replay(trace, StaticTarget(100.0), cfg(min_scale=1, target_burst_capacity=tbc)).timeline
        i = int(np.searchsorted(np.asarray(tl["t"]), t))
        return tl["observed_concurrency_stable"][i], tl["desired_pods"][i]

    assert at(-1.0, 102.0) == (pytest.approx(300.0), 5)
    stable, pods = at(211.0, 102.0)
    assert stable == pytest.approx(10.0) and pods == 2


def test_requests_failed_in_the_trace_are_replayed_and_reported_apart():
    # A request recorded as failed (BurstGPT: no response tokens) still arrives and is served in
    # the replay: it is counted in trace_failed, not in failed (what failed in this replay).
    trace = make_trace([0.5, 0.6, 0.7], [1.0, 1.0, 1.0], failed=[False, True, False])
    r = replay(trace, config=cfg(min_scale=3, max_scale=3))
    assert r.metrics["trace_failed"] == 1
    assert r.metrics["completed"] == 3 and r.metrics["failed"] == 0


def test_full_queue_rejects_requests_as_failed():
    trace = make_trace([0.5] * 5, [1.0] * 5)
    r = replay(trace, config=cfg(min_scale=1, max_scale=1, container_concurrency=1, queue_capacity=2))
    assert r.metrics["rejected"] == 2 and r.metrics["failed"] == 2 and r.metrics["completed"] == 3
    # Served one at a time: 1, 2 and 3 s against a 2.5 s deadline; the rejected two got an answer
    # at once (an error) and count as violations but never as waiting.
    assert r.metrics["slo_violations"] == 3
    assert r.metrics["late_seconds"] == pytest.approx(0.5)


def test_requests_that_never_finish_are_late_until_the_run_ends():
    # Four 250 s requests on one pod that serves one at a time: two finish (250 s, 500 s, both
    # inside their 500.5 s deadline) and two are still waiting when the replay gives up, 600 s
    # after the trace's span.
    trace = make_trace([0.0] * 4, [250.0] * 4)
    r = replay(trace, config=cfg(min_scale=1, max_scale=1, container_concurrency=1))
    assert r.metrics["completed"] == 2 and r.metrics["slo_violations"] == 2
    assert r.metrics["duration_s"] == pytest.approx(trace.span_s + 600.0)
    assert r.metrics["late_seconds"] == pytest.approx(2 * (trace.span_s + 600.0 - 500.5))


def test_warm_up_requests_are_not_scored_but_their_waiting_in_the_window_is():
    # One pod serving one request at a time; the first 20 s are an unscored warm-up. A 30 s request
    # and a 1 s one arrive in it; the 1 s one waits behind the first until 31 s, past its 2.6 s
    # deadline, which fell inside the warm-up: no violation in the window, but its 11 s of waiting
    # after 20 s are charged. The scored request at 25 s finishes at 32 s, 4.5 s late.
    trace = make_trace([0.0, 0.1, 25.0], [30.0, 1.0, 1.0], warmup_s=20.0)
    r = replay(trace, config=cfg(min_scale=1, max_scale=1, container_concurrency=1))
    assert r.metrics["requests"] == 1
    assert r.metrics["slo_violations"] == 1 and r.metrics["carried_over_violations"] == 0
    assert r.metrics["late_seconds"] == pytest.approx(11.0 + 4.5)
    # Three 100 s requests in the warm-up, served one after another: the third finishes at 300 s,
    # its deadline (200.5 s) passes inside the window: a violation, 99.5 s late, charged there.
    trace = make_trace([0.0, 0.0, 0.0, 60.0], [100.0, 100.0, 100.0, 1.0], warmup_s=50.0)
    r = replay(trace, config=cfg(min_scale=1, max_scale=1, container_concurrency=1))
    assert r.metrics["slo_violations"] == 2 and r.metrics["carried_over_violations"] == 1
    assert r.metrics["late_seconds"] == pytest.approx(99.5 + (301.0 - 62.5))
    # The rate counts them over every request due in the window: its one and the warm-up's three
    # (over the window's one alone it read 200 %).
    assert r.metrics["slo_violation_rate"] == pytest.approx(2 / 4)


def test_a_window_whose_requests_all_came_in_the_warm_up_scores_nothing():
    # Every request arrives and finishes inside the 50 s warm-up: the replay still runs to its
    # end and reports an empty window (it used to stop before the warm-up ended and crash).
    trace = make_trace([0.0, 1.0], [1.0, 1.0], warmup_s=50.0)
    r = replay(trace, config=cfg(min_scale=1, max_scale=1))
    assert r.metrics["requests"] == 0 and r.metrics["slo_violations"] == 0
    assert r.metrics["late_seconds"] == 0.0 and len(r.latencies) == 0


def _pods_gone_after(t0, tl):
    return tl["t"][(tl["t"] > t0) & (tl["ready_pods"] == 0)][0]


def test_scale_to_zero_comes_a_stable_window_after_the_last_request_with_the_activator_in_the_path():
    # Requests every second until 99 s (0.5 s each), then one at 400 s. The stable window is empty
    # at 160 s and the decider wants zero. With the default target-burst-capacity the activator
    # has long been in the path, so Knative's scaler skips the grace period (kpa/scaler.go
    # handleScaleToZero: ProxyFor >= grace); with TBC 0 it waits the 30 s grace period.
    arr = np.r_[np.arange(0.0, 100.0), 400.0]
    trace = make_trace(arr, np.full(len(arr), 0.5))
    in_path = replay(trace, StaticTarget(1.0), config=cfg(target_burst_capacity=211.0)).timeline
    out_of_path = replay(trace, StaticTarget(1.0), config=cfg(target_burst_capacity=0.0)).timeline
    assert in_path["desired_pods"][in_path["t"] == 158.0] == 1
    assert _pods_gone_after(100, in_path) == 160.0
    assert _pods_gone_after(100, out_of_path) == 190.0


def test_pod_retention_keeps_the_last_pod_after_the_revision_goes_inactive():
    # scale-to-zero-pod-retention-period is a hard floor from the moment the revision is marked
    # inactive (160 s here), whatever the activator's time in the path.
    arr = np.r_[np.arange(0.0, 100.0), 400.0]
    trace = make_trace(arr, np.full(len(arr), 0.5))
    gone = {r: _pods_gone_after(100, replay(trace, StaticTarget(1.0), config=cfg(
        scale_to_zero_pod_retention_period_s=r)).timeline) for r in (20.0, 45.0, 90.0)}
    assert gone == {20.0: 180.0, 45.0: 206.0, 90.0: 250.0}


def test_a_young_revision_keeps_its_pod_for_a_stable_window():
    # No traffic at first: Knative keeps the new revision's pod until it has been active for a
    # stable window (ActiveFor < stable window -> scale 1), then drops it.
    tl = replay(make_trace([300.0], [1.0]), StaticTarget(1.0), config=cfg()).timeline
    assert np.all(tl["ready_pods"][tl["t"] < 60.0] == 1)
    assert _pods_gone_after(0, tl) == 60.0


def test_a_request_to_a_revision_at_zero_starts_a_pod_at_once():
    # The activator reports the first request at once and the autoscaler decides then (the
    # poke), not at its next 2 s tick: the request waits for exactly one cold start.
    r = replay(make_trace([10.0, 300.5], [1.0, 1.0]), StaticTarget(1.0), config=cfg(cold_start="fixed:3"))
    assert r.latencies[1] == pytest.approx(3.0 + 1.0)


def test_a_burst_after_an_idle_spell_is_averaged_over_the_seconds_since_it_began():
    # 40 requests of 2 s at 300-301 s, the revision at zero since 70 s. Knative's windows start
    # afresh after a window without records, so at the 302 s tick the stable average is over
    # the 2 s since the burst (about 30), not over 60 s (about 1): 9 pods at once at target 5.
    arr = np.r_[10.0, 300.0 + np.linspace(0.0, 1.0, 40)]
    tl = replay(make_trace(arr, np.r_[1.0, np.full(40, 2.0)]), StaticTarget(5.0),
                config=cfg(cold_start="fixed:3")).timeline
    at = tl["t"] == 302.0
    assert tl["observed_concurrency_stable"][at] == pytest.approx(30.0, abs=1.0)
    assert tl["desired_pods"][at] == 9


def test_cold_start_from_zero_is_waited_for_and_counted():
    # No pods at first: the activator buffers the request, its concurrency reaches the KPA at the
    # 2 s tick, a pod is created then and is ready 5 s later.
    trace = make_trace([0.1], [1.0])
    r = replay(trace, config=cfg(initial_scale=0, cold_start="fixed:5"))
    assert r.latencies[0] == pytest.approx(2.0 + 5.0 - 0.1 + 1.0)
    assert r.metrics["cold_starts"] == 1
    assert r.metrics["slo_violations"] == 1   # 7.9 s > 2 x 1 s + 0.5 s
    assert r.metrics["late_seconds"] == pytest.approx(7.9 - 2.5)


def test_scale_to_zero_after_idle_then_cold_start():
    busy1 = poisson(5, 120, service=0.2, seed=1)
    busy2 = poisson(5, 120, service=0.2, seed=2)
    arr = np.concatenate([busy1.arrivals, busy2.arrivals + 420.0])
    trace = make_trace(arr, np.concatenate([busy1.service, busy2.service]))
    r = replay(trace, StaticTarget(1.0), config=cfg(cold_start="fixed:3"))
    tl = r.timeline
    idle = (tl["t"] > 120 + 60 + 30 + 10) & (tl["t"] < 420)
    assert idle.any() and np.all(tl["ready_pods"][idle] == 0), "no pods during the idle gap"
    before_stz = (tl["t"] > 125) & (tl["t"] < 120 + 60)
    assert np.all(tl["ready_pods"][before_stz] >= 1), "pods are kept for the stable window"
    assert r.metrics["cold_starts"] >= 1
    waited = r.latencies[len(busy1):][:3]
    assert waited[0] > 3.0, "the first request after the gap waits for a cold start"


def test_flash_crowd_triggers_panic_and_fast_scale_up():
    base = poisson(2, 300, service=0.5, seed=3)
    spike = poisson(60, 20, service=0.5, seed=4)
    arr = np.concatenate([base.arrivals, spike.arrivals + 150.0])
    trace = make_trace(arr, np.full(len(arr), 0.5))
    r = replay(trace, StaticTarget(2.0), config=cfg(cold_start="fixed:1"))
    tl = r.timeline
    assert r.metrics["panic_seconds"] > 0
    during = (tl["t"] >= 150) & (tl["t"] <= 175)
    assert tl["panic"][during].max() == 1.0
    assert tl["ready_pods"][during].max() >= 10


def test_lower_target_means_more_pods_and_lower_latency():
    trace = poisson(20, 600, service=0.5, seed=5)
    low = replay(trace, StaticTarget(2.0), config=cfg())
    high = replay(trace, StaticTarget(50.0), config=cfg())
    assert low.metrics["pod_seconds"] > high.metrics["pod_seconds"] * 2
    assert low.metrics["latency_p95_s"] < high.metrics["latency_p95_s"]


def test_observed_concurrency_follows_littles_law():
    trace = poisson(10, 600, service=1.0, seed=6)
    r = replay(trace, StaticTarget(1.0), config=cfg())
    tl = r.timeline
    steady = (tl["t"] > 120) & (tl["t"] < 590)
    mean_latency = np.nanmean(r.latencies)
    assert np.mean(tl["observed_concurrency_stable"][steady]) == pytest.approx(10 * mean_latency, rel=0.1)


def test_pod_seconds_count_every_pod():
    trace = poisson(1, 100, service=0.1, seed=7)
    r = replay(trace, config=cfg(min_scale=3, max_scale=3, initial_scale=3))
    assert r.metrics["pod_seconds"] == pytest.approx(3 * r.metrics["duration_s"])
    assert r.metrics["mean_pods"] == pytest.approx(3.0)


def test_same_seed_same_output_and_seeds_matter():
    trace = poisson(20, 300, service=0.5, seed=8)
    conf = cfg(cold_start="huawei")
    a = replay(trace, StaticTarget(3.0), config=conf, seed=11)
    b = replay(trace, StaticTarget(3.0), config=conf, seed=11)
    c = replay(trace, StaticTarget(3.0), config=conf, seed=12)
    assert a.metrics == b.metrics
    np.testing.assert_array_equal(a.latencies, b.latencies)
    assert a.metrics != c.metrics


def test_kpa_default_target_is_100_at_70_percent():
    trace = poisson(50, 300, service=0.2, seed=9)
    r = replay(trace, config=cfg())
    assert np.all(r.timeline["target"] == 100.0)
    r2 = replay(trace, config=cfg(container_concurrency=10))
    assert np.all(r2.timeline["target"] == 10.0), "containerConcurrency caps the target"


@pytest.mark.parametrize("target, cc", [(None, 0), (4.0, 0), (4.0, 2), (None, 5), (8.0, 5)])
def test_the_decider_scales_on_the_target_knative_resolves(target, cc):
    # 20 requests of 300 s in flight from the start: the decider asks for 20 / TargetValue pods,
    # TargetValue the resolved target (kpilot.observation.knative_target, which the operator and
    # the observation share) x 70 %. The compiled engine writes that rule on its own.
    from kpilot.observation import knative_target

    trace = make_trace(np.zeros(20), np.full(20, 300.0))
    r = replay(trace, StaticTarget(target) if target is not None else None,
               config=cfg(container_concurrency=cc))
    resolved = knative_target(target, cc, 100.0)
    settled = r.timeline["desired_pods"][(r.timeline["t"] > 30) & (r.timeline["t"] < 250)]
    assert settled.size and np.all(settled == np.ceil(20 / (resolved * 0.7) - 1e-9))
    assert np.all(r.timeline["target"][r.timeline["t"] < 250] == resolved)


def test_activator_in_the_path_balances_better_than_the_kubernetes_service():
    # TBC = -1 keeps the activator in the path (choice of two); TBC = 0 takes it out once pods
    # are up, and requests then hit a random pod: more of them share a core, so the tail is worse.
    trace = poisson(30, 600, service=0.5, seed=10)
    fixed = dict(min_scale=20, max_scale=20, initial_scale=20)
    activator = replay(trace, config=cfg(target_burst_capacity=-1.0, **fixed))
    service = replay(trace, config=cfg(target_burst_capacity=0.0, **fixed))
    assert activator.timeline["activator_in_path"][5:].min() == 1.0
    assert service.timeline["activator_in_path"][5:].max() == 0.0
    assert activator.metrics["latency_p99_s"] < service.metrics["latency_p99_s"]
    # The same 20 pods throughout; each run ends when its last request has finished.
    assert activator.metrics["mean_pods"] == pytest.approx(20.0)
    assert service.metrics["mean_pods"] == pytest.approx(20.0)


def test_projected_overdue_is_what_the_requests_are_charged_when_the_pace_holds():
    from kpilot.sim.batch import Batch

    # Four 10 s requests on one single-core pod: each runs at a quarter of its pace and finishes
    # at 40 s, 19.5 s past its deadline (2 x 10 + 0.5). At 5 s the projection already says so.
    shared = Batch(1, cfg(min_scale=1, max_scale=1), max_requests=4)
    shared.reset(0, make_trace([0.0] * 4, [10.0] * 4), seed=0, target=100.0)
    shared.advance(5.0)
    late, missed = shared.projected_overdue()
    assert late[0] == pytest.approx(78.0) and missed[0] == 4
    shared.advance(60.0)
    assert shared.T[0, 9] == pytest.approx(78.0)         # S_LATE_SECONDS: charged as projected
    assert list(shared.projected_overdue()[0]) == [0.0]
    # One request at a time: a 1 s request waiting behind a 30 s one is past its deadline
    # (2.5 s) by 3.5 s at 5 s even if it started at once.
    queued = Batch(1, cfg(min_scale=1, max_scale=1, container_concurrency=1), max_requests=2)
    queued.reset(0, make_trace([0.0, 0.0], [30.0, 1.0]), seed=0, target=1.0)
    queued.advance(5.0)
    late, missed = queued.projected_overdue()
    assert late[0] == pytest.approx(3.5) and missed[0] == 1


def test_the_observation_reads_requests_as_queue_proxy_reports_them():
    from kpilot.sim.batch import Batch

    # One 1 s request at a revision at zero waits 3 s for a cold start: the user waits 4 s, but
    # queue-proxy times only the second it spent at the pod (kn_serving_invocation_duration),
    # and counts the request when it completes, not when it arrives.
    b = Batch(1, cfg(initial_scale=0, cold_start="fixed:3"), max_requests=2)
    b.reset(0, make_trace([1.0, 20.0], [1.0, 30.0]), seed=0, target=1.0)
    b.advance(2.5)
    arrived = b.raw_observation(30.0)
    assert arrived["request_rate"][0] == 0.0 and arrived["latency_mean_s"][0] == 0.0
    assert arrived["desired_pods"][0] == 2 and arrived["starting_pods"][0] == 2
    b.advance(30.0)
    done = b.raw_observation(30.0)
    assert done["request_rate"][0] == pytest.approx(1 / 30.0)
    assert done["latency_mean_s"][0] == pytest.approx(1.0)
    assert 0.75 < done["latency_p95_s"][0] <= 1.0         # through Knative's (0.75, 1] bucket
    b.start_interval()
    b.advance(60.0)
    # The 30 s request: Prometheus's histogram_quantile cannot read past the last bound, 10 s.
    assert b.raw_observation(30.0)["latency_p95_s"][0] == 10.0


def test_the_observed_target_is_the_one_knative_scales_on():
    from kpilot.sim.batch import Batch

    # containerConcurrency caps the annotation; without one, the cluster default applies.
    capped = Batch(1, cfg(container_concurrency=4), max_requests=1)
    capped.reset(0, make_trace([1.0], [1.0]), seed=0, target=10.0)
    assert capped.raw_observation(30.0)["target"][0] == 4.0
    default = Batch(1, cfg(), max_requests=1)
    default.reset(0, make_trace([1.0], [1.0]), seed=0, target=None)
    assert default.raw_observation(30.0)["target"][0] == 100.0


def test_only_the_activator_pokes_the_autoscaler():
    from kpilot.sim.batch import Batch

    # A revision held at one idle pod (min-scale 1) whose decider wants zero. With the activator
    # in the path (TBC 211) a request is reported at once and decided on; with TBC 0 it goes
    # straight to the pod, and nothing is decided before the next 2 s tick.
    desired = {}
    for tbc in (211.0, 0.0):
        b = Batch(1, cfg(min_scale=1, target_burst_capacity=tbc), max_requests=1)
        b.reset(0, make_trace([100.3], [5.0]), seed=0, target=1.0)
        b.advance(100.0)
        assert b.raw_observation(30.0)["desired_pods"][0] == 0
        b.advance(100.5)
        desired[tbc] = b.raw_observation(30.0)["desired_pods"][0]
    assert desired == {211.0: 1, 0.0: 0}


def test_a_longer_window_in_one_simulation_keeps_what_the_others_recorded():
    from kpilot.sim.batch import Batch

    # Two simulations recording latencies; the second is reset on a window longer than the
    # request arrays, which grow: the first one's requests and latencies must survive.
    b = Batch(2, cfg(min_scale=1), max_requests=2, record=True)
    b.reset(0, make_trace([0.0, 1.0], [1.0, 1.0]), seed=0, target=10.0)
    b.reset(1, make_trace([0.0], [1.0]), seed=1, target=10.0)
    b.advance(10.0)
    recorded = b.latency[0, :2].copy()
    assert np.isfinite(recorded).all()
    b.reset(1, make_trace([0.0] * 5, [1.0] * 5), seed=1, target=10.0)
    assert b.latency.shape[1] >= 5
    assert list(b.latency[0, :2]) == list(recorded)
    assert list(b.arrivals[0, :2]) == [0.0, 1.0]


def test_a_reused_simulation_runs_as_a_new_one_would():
    """Training resets each slot of one Batch for every episode. The initial pod once kept the
    ready time of the slot's previous episode (a pod that came up at 505 s there), and every
    request it served before 505 s in the next episode counted as a cold start."""
    from kpilot.sim import engine as E
    from kpilot.sim.batch import Batch

    config = cfg(cold_start="fixed:5")
    before = make_trace([1.0, 500.0], [0.05, 0.05])          # scales to zero, then a cold start at 500 s
    episode = make_trace(np.linspace(0.1, 20, 40), np.full(40, 0.05))

    def run(batch):
        batch.reset(0, episode, seed=1, target=100.0)
        batch.advance(60.0)
        return batch.T[0].copy(), batch.F[0].copy()

    fresh = run(Batch(1, config))
    reused = Batch(1, config)
    reused.reset(0, before, seed=1, target=100.0)
    reused.advance(600.0)
    assert reused.T[0, E.S_COLD_STARTS] == 1
    again = run(reused)
    assert fresh[0][E.S_COLD_STARTS] == 0 and again[0][E.S_COLD_STARTS] == 0
    assert np.array_equal(fresh[0], again[0]) and np.array_equal(fresh[1], again[1], equal_nan=True)


def test_without_prometheus_the_desired_pods_are_the_scale_the_podautoscaler_applied():
    from kpilot.sim.batch import Batch

    # min-scale 1 and no traffic yet: the decider wants 0 pods (kn_revision_pods_desired), the
    # PodAutoscaler's status.desiredScale says 1, the scale applied; the operator without
    # Prometheus reads the latter.
    b = Batch(1, cfg(min_scale=1), max_requests=1)
    b.reset(0, make_trace([500.0], [0.5]), seed=0, target=10.0)
    b.advance(30.0)
    prometheus, kubernetes = b.raw_observation(30.0), b.raw_observation(30.0, metrics="kubernetes")
    assert prometheus["ready_pods"][0] == kubernetes["ready_pods"][0] == 1
    assert prometheus["desired_pods"][0] == 0 and kubernetes["desired_pods"][0] == 1
    assert kubernetes["starting_pods"][0] == 0


def test_latency_percentiles_are_of_the_requests_own_latencies():
    # One pod serving one request at a time: four 1 s requests at 0.5 s finish at 1.5, 2.5, 3.5 and
    # 4.5 s, then a 6 s one that came at 0.6 s at 10.5 s: latencies 1, 2, 3, 4 and 9.9 s.
    # Percentiles interpolate linearly between order statistics (rank q x (n - 1) = 4q).
    trace = make_trace([0.5, 0.5, 0.5, 0.5, 0.6], [1.0, 1.0, 1.0, 1.0, 6.0])
    m = replay(trace, config=cfg(min_scale=1, max_scale=1, container_concurrency=1)).metrics
    assert m["latency_p50_s"] == pytest.approx(3.0)
    assert m["latency_p95_s"] == pytest.approx(4.0 + 0.8 * 5.9)
    assert m["latency_p99_s"] == pytest.approx(4.0 + 0.96 * 5.9)
    assert m["latency_mean_s"] == pytest.approx(19.9 / 5)


def test_panic_time_is_from_the_first_tick_over_the_threshold_to_a_stable_window_after_the_last():
    # One pod at target 1: the revision panics when the 6 s panic window averages over 1 request
    # (2 x target per pod, the 200 % threshold). Four 4 s requests at 0 s share the one core until
    # 16 s (concurrency 4). Ticks every 2 s: over at 2 s; the last tick whose window holds more
    # than 6 request-seconds is 20 s (14-20 s holds 2 s at 4: 8); panic ends at the first tick more than the
    # 60 s stable window after that, 82 s. A short request at 200 s keeps the replay running past it.
    trace = make_trace([0.0] * 4 + [200.0], [4.0] * 4 + [0.5])
    m = replay(trace, StaticTarget(1.0), config=cfg(min_scale=1, max_scale=1)).metrics
    assert m["panic_seconds"] == pytest.approx(82.0 - 2.0)


def test_cold_start_rate_is_the_share_of_requests_that_waited_for_a_pod():
    # The revision's first pod is up at once and serves the request at 10 s; by 300.5 s the
    # revision is at zero and that request waits for a 3 s cold start: one of two requests.
    r = replay(make_trace([10.0, 300.5], [1.0, 1.0]), StaticTarget(1.0), config=cfg(cold_start="fixed:3"))
    assert r.metrics["cold_starts"] == 1
    assert r.metrics["cold_start_rate"] == pytest.approx(1 / 2)


def test_requests_on_a_pod_being_deleted_count_only_through_the_activator():
    from kpilot.sim import engine as E
    from kpilot.sim.batch import Batch

    # Ten long requests on ten ready pods, then target 1000 scales the revision down to one
    # (once the initial panic is over). The pods deleted that still serve a request drain it, but
    # Knative's scraper skips a pod being deleted: what it served straight from the Kubernetes
    # Service (target-burst-capacity 0) drops out of the observed concurrency. What came
    # through the activator (a burst capacity that keeps it in the path) the activator still
    # reports until it is done.
    trace = make_trace(np.linspace(0.1, 0.5, 10), np.full(10, 1000.0))
    seen = {}
    for tbc in (0.0, 1e6):
        b = Batch(1, cfg(initial_scale=10, target_burst_capacity=tbc, max_scale_down_rate=10.0),
                  max_requests=10)
        b.reset(0, trace, seed=3, target=1000.0)
        b.advance(200.0)
        ready = b.I[0, E.I_N_READY]
        draining = b.pstate[0] == E.POD_DRAINING
        on_ready = int(b.pn[0][b.pstate[0] == E.POD_READY].sum())
        assert ready == 1 and draining.any() and on_ready < 10      # busy pods are draining
        assert b.F[0, E.F_INFLIGHT] == 10                          # all ten still in service
        seen[tbc] = (b.raw_observation(30.0)["concurrency_stable"][0], on_ready)
    stable, on_ready = seen[0.0]
    assert stable == pytest.approx(on_ready)
    assert seen[1e6][0] == pytest.approx(10.0)


def test_window_averages_are_rounded_to_six_decimals_as_knative_returns_them():
    from kpilot.sim.kpa import kpa_decide, decider_spec, new_decider_state, window_average

    # Seven in flight all second, integrated in tenths of a second as the engine integrates
    # between events, add up to a hair above 7 in floating point: unrounded, target 7 would want
    # a second pod for a load one pod carries.
    second = 0.0
    for _ in range(10):
        second += 7 * 0.1
    assert second > 7.0
    buckets = np.full(60, second)
    stable = window_average(buckets, 60, 0, 60.0)
    assert stable == 7.0
    state = np.zeros(4)
    new_decider_state(state, 1.0, 0.0)
    assert kpa_decide(stable, stable, 1, 60.0, decider_spec(7.0, 7.0), state)[0] == 1
    assert window_average(np.array([1.0, 1.0, 0.0]), 3, 0, 3.0) == 0.666667
