"""The PromQL that the operator (kpilot_operator.metrics.promql) and `kpilot trace from-prometheus`
(prometheus_export.queries) send, evaluated by Prometheus's own engine (promtool, 2.42 here) over
queue-proxy counters scraped at known intervals, against what was served: the simulator's request
rate (completions in the last decision interval / the interval), latencies over the same
completions, and from-prometheus's bins adding up to the requests served.

Needs promtool on PATH (`export PATH="$(bash .ci/provision-promtool.sh | tail -1):$PATH"`); skips
without it, unless KPILOT_REQUIRE_PROMTOOL is set (CI), where its absence fails."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import numpy as np
import pytest

from kpilot.traces import prometheus_export
from kpilot_operator.metrics import promql
from promtool_eval import Series, by, evaluate

pytestmark = pytest.mark.promtool

HIST = "kn_serving_invocation_duration_seconds"
BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))
W = 30                  # the operator's window: the shipped policy's decision interval


@pytest.fixture(scope="module")
def promtool():
    path = shutil.which("promtool")
    if path:
        return path
    if os.environ.get("KPILOT_REQUIRE_PROMTOOL"):
        pytest.fail("KPILOT_REQUIRE_PROMTOOL is set but promtool is not on PATH", pytrace=False)
    pytest.skip('promtool not on PATH: the PromQL was not evaluated; run '
                'export PATH="$(bash .ci/provision-promtool.sh | tail -1):$PATH"')


@dataclass
class Pod:
    """One queue-proxy: its requests' completion times (sorted) and durations, in seconds."""
    name: str
    done: np.ndarray
    took: np.ndarray
    revision: str = "rev"
    namespace: str = "ns"
    restart: float | None = None        # queue-proxy restarted then: its counters start from 0

    def served(self, t: float) -> np.ndarray:
        """Which requests its counters hold at `t`."""
        held = self.done <= t
        if self.restart is not None and t >= self.restart:
            held &= self.done > self.restart
        return held

    def scraped(self, times) -> Series:
        """Its _count, _sum and _bucket series sampled at `times` from its first request on (the
        series appear with it)."""
        labels = (f'k8s_namespace_name="{self.namespace}",kn_service_name="svc",'
                  f'kn_revision_name="{self.revision}",pod="{self.name}"')
        series: Series = {}
        for t in times:
            if not len(self.done) or t < self.done[0]:
                continue
            held = self.served(t)
            values = {f"{HIST}_count{{{labels}}}": held.sum(),
                      f"{HIST}_sum{{{labels}}}": self.took[held].sum()}
            for le in BUCKETS:
                le_text = "+Inf" if le == float("inf") else f"{le:g}"
                values[f'{HIST}_bucket{{{labels},le="{le_text}"}}'] = (held & (self.took <= le)).sum()
            for selector, value in values.items():
                series.setdefault(selector, {})[int(t)] = float(value)
        return series


def scrape(pods, times_of) -> Series:
    series: Series = {}
    for pod in pods:
        series.update(pod.scraped(times_of(pod)))
    return series


def window(pods, t: float, w: float = W) -> tuple[np.ndarray, np.ndarray]:
    """The completions in (t - w, t] and their durations: what the simulator observes."""
    done = np.concatenate([p.done for p in pods])
    took = np.concatenate([p.took for p in pods])
    inside = (done > t - w) & (done <= t)
    return done[inside], took[inside]


def operator_readings(promtool, series: Series, ticks,
                      fields=("request_rate", "latency_sum_rate", "latency_p95_s")):
    """{field: [the revision "rev"'s value at each tick, 0 where no series]} as the operator reads."""
    queries = [(promql(f, "ns", W), t) for f in fields for t in ticks]
    results = evaluate(promtool, series, queries)
    return {f: np.array([by("kn_revision_name", results[i * len(ticks) + k]).get("rev", 0.0)
                         for k in range(len(ticks))]) for i, f in enumerate(fields)}


def poisson_pods(rng, n, rate, horizon, mean_s=0.2):
    pods = []
    for i in range(n):
        done = np.sort(rng.uniform(0, horizon, rng.poisson(rate * horizon)))
        pods.append(Pod(f"p{i}", done, rng.exponential(mean_s, len(done))))
    return pods


def histogram_p95(took: np.ndarray) -> float:
    """histogram_quantile(0.95) over BUCKETS of these durations, as Prometheus interpolates it."""
    cumulative = [(took <= le).sum() for le in BUCKETS]
    rank = 0.95 * cumulative[-1]
    k = next(i for i, c in enumerate(cumulative) if c >= rank)
    if BUCKETS[k] == float("inf"):
        return BUCKETS[k - 1]
    lower, below = (0.0, 0) if k == 0 else (BUCKETS[k - 1], cumulative[k - 1])
    return lower + (BUCKETS[k] - lower) * (rank - below) / (cumulative[k] - below)


# --- the operator ---

@pytest.mark.parametrize("scrape_s", [10, 20, 30])
def test_request_rate_and_latency_read_what_was_served_at_common_scrape_intervals(promtool, scrape_s):
    # Four pods, 10 req/s in all, each scraped at its own phase; 20 decision ticks after a warm-up.
    # rate() over 30 s needed two samples of a series in the window: at a 20 s scrape it read about
    # half the rate, at 30 s nothing, latencies included (the policy saw no load on a busy revision).
    rng = np.random.default_rng(scrape_s)
    pods = poisson_pods(rng, 4, 2.5, 930)
    phase = {p.name: int(rng.integers(scrape_s)) for p in pods}
    series = scrape(pods, lambda p: range(phase[p.name], 931, scrape_s))
    ticks = list(range(330, 901, W))
    got = operator_readings(promtool, series, ticks)
    truth = [window(pods, t) for t in ticks]
    rate = np.array([len(done) / W for done, _ in truth])
    # Every tick reads the load, within a scrape interval's worth of requests at either end...
    assert (got["request_rate"] > 0.5 * rate).all() and (got["request_rate"] < 1.5 * rate).all()
    # ...which cancels over the ticks: the windows' growths add up to what was served.
    assert got["request_rate"].sum() / rate.sum() == pytest.approx(1, abs=0.03)
    mean_s = got["latency_sum_rate"] / got["request_rate"]
    true_mean_s = np.array([took.mean() for _, took in truth])
    assert got["latency_sum_rate"].sum() / got["request_rate"].sum() == pytest.approx(
        sum(took.sum() for _, took in truth) / sum(len(took) for _, took in truth), rel=0.05)
    assert (mean_s > 0.67 * true_mean_s).all() and (mean_s < 1.5 * true_mean_s).all()
    true_p95 = np.array([histogram_p95(took) for _, took in truth])
    assert (got["latency_p95_s"] > 0).all()
    assert got["latency_p95_s"].mean() == pytest.approx(true_p95.mean(), rel=0.05)


def test_new_restarted_gone_and_missed_scrapes_count_what_each_pod_served(promtool):
    # Request counters scraped every 10 s; the tick at 400 s covers (370, 400].
    every = range(0, 401, 10)
    steady = {t: float(t) for t in every}                                     # 1 req/s
    base = 'k8s_namespace_name="{ns}",kn_revision_name="rev",pod="{pod}"'
    counts = {
        "steady": (steady, "ns"),
        "new": ({390: 5.0, 400: 9.0}, "ns"),            # first scraped in the window: all 9 counted
        # Restarted after 370 s: counted from its restart (what it served in the window before it
        # is lost: its counters do not show it at the window's ends).
        "restarted": ({**{t: 1000.0 + t for t in every if t <= 370}, 380: 3.0, 390: 4.0, 400: 6.0}, "ns"),
        "gone": ({**{t: float(t) for t in every if t <= 300}, 310: "stale"}, "ns"),    # 100 s ago
        # The scrape at the window's start failed (staleness markers): counted from its last sample
        # before, 360 s, not as a new pod's 400.
        "missed": ({**steady, 370: "stale"}, "ns"),
        "elsewhere": ({t: 50.0 * t for t in every}, "other"),          # another namespace
    }
    series: Series = {f"{HIST}_count{{{base.format(ns=ns, pod=name)}}}": values
                      for name, (values, ns) in counts.items()}
    # from-prometheus's count query, grouped by pod, and the operator's request rate.
    per_pod, rate = evaluate(promtool, series, [(prometheus_export.queries("ns", "pod", W)[0], 400),
                                                (promql("request_rate", "ns", W), 400)])
    assert by("pod", per_pod) == {"steady": 30, "new": 9, "restarted": 6, "gone": 0, "missed": 40}
    assert by("kn_revision_name", rate) == {"rev": pytest.approx(85 / W)}


def test_a_restart_that_grows_back_past_its_old_count_is_counted_from_the_restart(promtool):
    # The tick at 130 s covers (100, 130]. Both queue-proxies had served 1,000 requests, restarted
    # and served more than that since, 60 req/s: only the difference (500, 560) was counted.
    base = 'k8s_namespace_name="ns",kn_revision_name="rev",pod="{pod}"'
    counts = {
        # Restarted at 105 s, inside the window (1,000 -> 300 between two of its samples): 1,500 by
        # 130 s. What it served in (100, 105] is lost, as its counters lost it.
        "inside": {**{t: 10.0 * t for t in range(0, 101, 10)},
                   **{t: 60.0 * (t - 105) for t in range(110, 161, 10)}},
        # Restarted at 99 s, between its last sample before the window (95 s) and its first in it:
        # no two samples in the window show the drop, the one before the window does. 1,560 since.
        "boundary": {**{t: 1000 * t / 95 for t in range(5, 96, 10)},
                     **{t: 60.0 * (t - 99) for t in range(105, 156, 10)}},
        "steady": {t: float(t) for t in range(0, 161, 10)},
    }
    series: Series = {f"{HIST}_count{{{base.format(pod=name)}}}": values for name, values in counts.items()}
    per_pod_q = prometheus_export.queries("ns", "pod", W)[0]
    per_pod, rate, after = evaluate(promtool, series, [(per_pod_q, 130), (promql("request_rate", "ns", W), 130),
                                                       (per_pod_q, 160)])
    assert by("pod", per_pod) == {"inside": 1500, "boundary": 1560, "steady": 30}
    assert by("kn_revision_name", rate) == {"rev": pytest.approx((1500 + 1560 + 30) / W)}
    # The next window counts their growth again, not the restart twice.
    assert by("pod", after) == {"inside": 1800, "boundary": 1800, "steady": 30}


def test_p95_and_mean_latency_are_over_the_window_from_the_buckets(promtool):
    # Before the window the revision was slow (3 s); in (370, 400] 90 requests took 0.05 s and 10
    # took 0.7 s, on two pods, one of them new: p95 = 0.5 + 0.5 x (95 - 90) / (100 - 90) = 0.75.
    rng = np.random.default_rng(7)
    old = np.sort(rng.uniform(100, 365, 200))
    fast, slow = np.sort(rng.uniform(371, 399, 90)), np.sort(rng.uniform(371, 399, 10))
    pods = [Pod("old", np.concatenate([old, fast[:50], slow[:5]]),
                np.concatenate([np.full(200, 3.0), np.full(50, 0.05), np.full(5, 0.7)])),
            Pod("new", np.concatenate([fast[50:], slow[5:]]),
                np.concatenate([np.full(40, 0.05), np.full(5, 0.7)]))]
    for p in pods:
        order = np.argsort(p.done)
        p.done, p.took = p.done[order], p.took[order]
    series = scrape(pods, lambda p: range(0, 401, 10))
    got = operator_readings(promtool, series, [400])
    assert histogram_p95(window(pods, 400)[1]) == pytest.approx(0.75)
    assert got["latency_p95_s"][0] == pytest.approx(0.75)
    assert got["request_rate"][0] == pytest.approx(100 / W)
    assert got["latency_sum_rate"][0] / got["request_rate"][0] == pytest.approx((90 * 0.05 + 10 * 0.7) / 100)


# --- kpilot trace from-prometheus ---

def through_promtool(promtool, series: Series):
    """prometheus_export._query_range answered by promtool: a range query is the instant query at
    each step, start and end included."""
    def query_range(url, query, label, start, end, step_s, token, timeout_s):
        steps = list(range(start, end + 1, step_s))
        results = evaluate(promtool, series, [(query, t) for t in steps])
        matrix = {}
        for t, samples in zip(steps, results):
            for key, value in samples.items():
                matrix.setdefault(key, []).append([t, str(value)])
        return prometheus_export._matrix({"resultType": "matrix", "result": [
            {"metric": dict(key), "values": values} for key, values in matrix.items()]}, label)
    return query_range


@pytest.mark.parametrize("scrape_s", [15, 60])
def test_from_prometheus_bins_add_up_to_the_requests_served(promtool, monkeypatch, scrape_s):
    # Sparse traffic (about one request a minute per pod) over 30 minutes, binned by the minute over
    # the last 20. A pod that starts mid-range is counted from zero; one whose queue-proxy restarts
    # is counted from its restart; another namespace is not counted. increase() extrapolated each
    # bin from the samples inside it: fractional counts whose total was off.
    first, stop, step = 600, 1800, 60
    rng = np.random.default_rng(scrape_s)
    pods = poisson_pods(rng, 4, 1 / 60, 1800, mean_s=1.0)
    new = pods[1].done > 950                                      # a new pod, mid-range
    pods[1].done, pods[1].took = pods[1].done[new], pods[1].took[new]
    pods[2].namespace = "other"
    phase = {p.name: int(rng.integers(scrape_s)) for p in pods}
    times = {p.name: list(range(phase[p.name], 1801, scrape_s)) for p in pods}

    def last(p, t):                                               # p's last scrape at or before t
        return max(s for s in times[p.name] if s <= t)

    pods[3].restart = next(t for t in times["p3"] if t > 1200) + 1     # just after a scrape
    for p in pods:
        # Nothing served where no query of the scrapes can place it in the range: after the last
        # scrape before either end of it, and (counted from its restart) in p3's bin before that.
        lost = ((p.done > last(p, first)) & (p.done <= first)) | (p.done > last(p, stop))
        if p.restart is not None:
            restart_bin = -(-p.restart // step) * step - step
            lost |= (p.done > last(p, restart_bin)) & (p.done <= p.restart)
        p.done, p.took = p.done[~lost], p.took[~lost]
    served = [p for p in pods if p.namespace == "ns"]
    done, took = window(served, stop, stop - first)
    assert len(done) >= 30                                        # sparse, but something to count
    series = scrape(pods, lambda p: times[p.name])
    monkeypatch.setattr(prometheus_export, "_query_range", through_promtool(promtool, series))
    (traffic,) = prometheus_export.read_traffic("http://prometheus.invalid", "ns", since_s=stop - first,
                                                end=stop, step_s=step, by="service")
    assert traffic.name == "svc"
    assert [start for start, _, _ in traffic.rows] == list(range(first, stop, step))
    assert traffic.requests == len(done)
    # Each bin holds the requests finished between each pod's last scrapes at or before its ends.
    assert [count for _, count, _ in traffic.rows] == [
        sum(int(((p.done > last(p, start)) & (p.done <= last(p, start + step))).sum()) for p in served)
        for start in range(first, stop, step)]
    durations = sum(count * mean for _, count, mean in traffic.rows if count)
    assert durations == pytest.approx(took.sum(), rel=1e-9)


def test_bins_longer_than_five_minutes_count_every_sample_in_them(promtool):
    # 600 s bins (--step 600; --since 60d needs 471 s at least) and an operator decision interval of
    # 600 s. Both looked back 5 minutes for a series' latest sample: a pod whose last sample was
    # older than that at a bin's end was not there, and one that lived inside one bin was lost.
    base = 'k8s_namespace_name="ns",kn_revision_name="rev",pod="{pod}"'
    counts = {
        "steady": {t: 2.0 * t for t in range(0, 2401, 15)},                # 1,200 a bin
        # Served 5,000 requests between 610 and 835 s, scraped every 15 s until it was gone.
        "brief": {**{t: min(5000.0, 5000 * (t - 610) // 225) for t in range(615, 841, 15)}, 855: "stale"},
        # Scraped once a bin (the least the docs ask), 1 req/s, and one scrape failed: the bin
        # (1800, 2400] reads its growth since its sample at 605 s. A lookback of one bin found no
        # sample before it and read all it ever served, 1,805.
        "sparse": {5: 5.0, 605: 605.0, 1205: "stale", 1805: 1805.0},
    }
    series: Series = {f"{HIST}_count{{{base.format(pod=name)}}}": values for name, values in counts.items()}
    ticks = (1200, 1800, 2400)
    queries = [(prometheus_export.queries("ns", "pod", 600)[0], t) for t in ticks]
    *per_pod, rate = evaluate(promtool, series, queries + [(promql("request_rate", "ns", 600), 1200)])
    assert [{pod: by("pod", got).get(pod, 0) for pod in counts} for got in per_pod] == [
        {"steady": 1200, "brief": 5000, "sparse": 600},
        {"steady": 1200, "brief": 0, "sparse": 0},
        {"steady": 1200, "brief": 0, "sparse": 1200}]
    assert by("kn_revision_name", rate) == {"rev": pytest.approx((1200 + 5000 + 600) / 600)}
