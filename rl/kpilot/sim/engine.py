"""The request-level engine: many independent simulations advanced together, compiled with numba.

Each simulation replays one trace window through one Knative revision:

    arrival -> [wait: activator / queue-proxy FIFO] -> pod (processor sharing) -> done

* Pods are created and removed on the KPA's 2 s decision ticks (kpilot.sim.kpa.kpa_decide, the same
  compiled function the unit tests pin against Knative), and at once when a request reaches a
  revision the decider had scaled to zero (the activator's poke). Scale to zero follows Knative's
  scaler (active for a stable window, then inactive; the grace period counts the time the
  activator has been in the path). A new pod becomes ready after a cold start drawn from the
  cold-start model, scaled per simulation.
* A pod serves at most `cap` requests at once (containerConcurrency, or `unlimited_in_service`
  when it is 0). The n requests in service share `cores` processors: each progresses at
  min(1, cores / n) seconds of work per second. Exact processor sharing uses a per-pod virtual
  clock: a request dispatched at virtual time V with work w finishes when the clock reaches V + w.
* Requests that find no ready pod with a free slot wait in one FIFO (the activator at zero scale,
  the queue-proxy breaker otherwise); a full FIFO rejects the request (a 503, counted as failed).
  New requests go to a ready pod as Knative routes them (`_pick_pod`: the activator balances by
  containerConcurrency; out of its path, the Kubernetes Service picks one at random).
* Revision concurrency (in service + waiting) is integrated exactly into 1 s buckets, as the
  queue-proxy and activator report it; the stable and panic windows average those buckets, each
  starting afresh after a whole window without a record (no ready pod, no request). A pod being
  deleted is no longer scraped: the requests it still serves count only if they came through the
  activator, which reports what it proxies until it is done (Knative's collector subtracts the
  proxied share from what queue-proxy reports).

All state lives in numpy arrays with a leading simulation axis, so a batch is one call; the layout
is owned by `Batch` (kpilot.sim.batch). Times are float64 seconds from each window's start.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from kpilot.observation import LATENCY_BUCKETS_S
from kpilot.sim.kpa import kpa_decide, round_6_digits, window_average, SPEC_TARGET_VALUE, SPEC_TOTAL_VALUE

INF = np.inf
POD_FREE, POD_STARTING, POD_READY, POD_DRAINING = 0, 1, 2, 3

# Integer scalars per simulation (array I[e, :]).
I_NEXT_REQ = 0       # next request index to arrive
I_N_REQ = 1          # requests in this window
I_FIFO_HEAD = 2      # FIFO: monotone counters, slot = counter % capacity
I_FIFO_TAIL = 3
I_N_READY = 4
I_N_STARTING = 5
I_N_ALIVE = 6        # starting + ready + draining: what costs pod-seconds
I_PHEAP_SIZE = 7
I_BUCKET_SEC = 8     # the open 1 s bucket
I_FIRST_SEC = 9
I_FREE_SLOTS = 10    # free in-service slots summed over ready pods
I_N_FREE_PODS = 11
I_REPLICAS = 12      # pods the autoscaler wants (ready + starting)
I_TICKS = 13
I_LAST_WRITE_SEC = 14  # last second the autoscaler recorded a value (a ready pod, or the activator busy)
I_STABLE_FIRST = 15    # first second of the stable window's current run of records
I_PANIC_FIRST = 16     # the same for the panic window
I_RR_NEXT = 17         # the activator's round-robin position (containerConcurrency above 3)
I_DRAIN_RECOUNT = 18   # 1: a busy pod began draining since F_DRAIN_DIRECT was last counted
I_SIZE = 19

# Float scalars per simulation (array F[e, :]).
F_NOW = 0
F_AREA = 1           # concurrency x seconds in the open bucket
F_LAST_T = 2
F_INFLIGHT = 3       # in service + waiting
F_NEXT_TICK = 4
F_TARGET = 5         # autoscaling.knative.dev/target annotation; NaN = not set (Knative default)
F_INACTIVE_SINCE = 6 # when the PodAutoscaler was marked inactive; NaN while active or activating
F_PANICKING = 7
F_COLD_SCALE = 8
F_STABLE = 9         # last decision's window averages, desired pods and burst capacity
F_PANIC = 10
F_DESIRED = 11
F_EBC = 12
F_NEXT_READY = 13    # earliest ready time among starting pods
F_TOD0 = 14          # time of day (s since midnight UTC) at window start, for observations
F_ACCT_T = 15        # pod-seconds and panic time are charged up to here
F_ACTIVE_SINCE = 16  # when the PodAutoscaler last became active (a pod ready); NaN when not active
F_PROXY_SINCE = 17   # since when the activator has been in the path without a break; NaN when out
F_DRAIN_DIRECT = 18  # requests in service on draining pods that did not come through the activator
F_SIZE = 19

# Per-interval statistics (array S[e, :]), reset by the caller at each decision interval, and
# run totals (array T[e, :]) with the same layout.
S_ARRIVALS = 0
S_COMPLETED = 1
S_REJECTED = 2
S_VIOLATIONS = 3
S_COLD_STARTS = 4
S_POD_SECONDS = 5
S_PANIC_SECONDS = 6
S_LATENCY_SUM = 7
S_MAX_PODS = 8
S_LATE_SECONDS = 9   # seconds past their SLO deadline, summed over the requests that finished
S_QP_LATENCY_SUM = 10  # latency as queue-proxy measures it (from reaching the pod), for observations
S_SIZE = 11

# Recorded latency of a request turned away by a full queue (never served); NaN: not finished yet.
REJECTED = -1.0

# Latency histogram of the interval in queue-proxy's buckets (kpilot.observation), plus +Inf: the
# policy's p95 is computed from it as Prometheus computes it in a cluster. The bounds are passed
# in (`bounds`), not read as a global: numba's cache would keep a global's old value.
HIST_BINS = len(LATENCY_BUCKETS_S) + 1

# Timeline columns, one row per 2 s tick.
TL_COLUMNS = ("t", "arrivals", "observed_concurrency_stable", "observed_concurrency_panic",
              "target", "desired_pods", "ready_pods", "panic", "starting_pods", "inflight",
              "activator_in_path")
TL_SIZE = len(TL_COLUMNS)

# Config (array C[e, :]): per-simulation settings the engine reads.
C_CORES = 0
C_CAP = 1            # max in service per pod
C_CC = 2             # containerConcurrency (0 = unlimited), for the target cap
C_TARGET_DEFAULT = 3
C_UTILIZATION = 4
C_STABLE_WINDOW = 5
C_PANIC_WINDOW = 6
C_TICK = 7
C_MIN_SCALE = 8
C_MAX_SCALE = 9      # 0 = unbounded
C_STZ_GRACE = 10     # scale-to-zero-grace-period
C_STZ_ENABLED = 11
C_SLO_SLOWDOWN = 12
C_SLO_OFFSET = 13
C_CS_KIND = 14
C_CS_P1 = 15         # fixed: seconds; lognormal: mu
C_CS_P2 = 16         # lognormal: sigma
C_CS_MAX = 17
C_STZ_RETENTION = 18 # scale-to-zero-pod-retention-period
C_ACTIVATOR_ONLY = 19  # 1: target-burst-capacity -1, Knative scrapes no pod (the activator reports)
C_SIZE = 20


@njit(cache=True, error_model="numpy", inline="always")
def _u01(rng, e):
    """splitmix64: a small, fast, per-simulation generator (reproducible under any batching)."""
    x = rng[e] + np.uint64(0x9E3779B97F4A7C15)
    rng[e] = x
    z = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return float(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True, error_model="numpy")
def _cold_start(C, rng, cs_samples, F, e):
    kind = int(C[e, C_CS_KIND])
    if kind == 0:
        s = C[e, C_CS_P1]
    elif kind == 1:
        u1 = max(_u01(rng, e), 1e-300)
        u2 = _u01(rng, e)
        z = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
        s = math.exp(C[e, C_CS_P1] + C[e, C_CS_P2] * z)
    else:
        s = cs_samples[int(_u01(rng, e) * len(cs_samples))]
    return min(s, C[e, C_CS_MAX]) * F[e, F_COLD_SCALE]


# ---------------------------------------------------------------- pod completion heap (indexed)
@njit(cache=True, error_model="numpy", inline="always")
def _pheap_swap(ph, pp, e, i, j):
    a = ph[e, i]
    b = ph[e, j]
    ph[e, i] = b
    ph[e, j] = a
    pp[e, b] = i
    pp[e, a] = j


@njit(cache=True, error_model="numpy", inline="always")
def _pheap_fix(ph, pp, pk, I, e, pod):
    """Restore heap order after pod's key changed (insert if absent, remove if key is INF)."""
    pos = pp[e, pod]
    if pk[e, pod] == INF:
        if pos < 0:
            return
        last = I[e, I_PHEAP_SIZE] - 1
        _pheap_swap(ph, pp, e, pos, last)
        I[e, I_PHEAP_SIZE] = last
        pp[e, pod] = -1
        if pos == last:
            return
        pod = ph[e, pos]
    elif pos < 0:
        pos = I[e, I_PHEAP_SIZE]
        ph[e, pos] = pod
        pp[e, pod] = pos
        I[e, I_PHEAP_SIZE] = pos + 1
    n = I[e, I_PHEAP_SIZE]
    # sift up
    while pos > 0:
        parent = (pos - 1) >> 1
        if pk[e, ph[e, parent]] <= pk[e, ph[e, pos]]:
            break
        _pheap_swap(ph, pp, e, pos, parent)
        pos = parent
    # sift down
    while True:
        c = 2 * pos + 1
        if c >= n:
            break
        if c + 1 < n and pk[e, ph[e, c + 1]] < pk[e, ph[e, c]]:
            c += 1
        if pk[e, ph[e, pos]] <= pk[e, ph[e, c]]:
            break
        _pheap_swap(ph, pp, e, pos, c)
        pos = c


# ---------------------------------------------------------------- per-pod job heap
@njit(cache=True, error_model="numpy", inline="always")
def _job_push(hk, hr, pn, e, pod, key, req):
    i = pn[e, pod]
    pn[e, pod] = i + 1
    while i > 0:
        parent = (i - 1) >> 1
        if hk[e, pod, parent] <= key:
            break
        hk[e, pod, i] = hk[e, pod, parent]
        hr[e, pod, i] = hr[e, pod, parent]
        i = parent
    hk[e, pod, i] = key
    hr[e, pod, i] = req


@njit(cache=True, error_model="numpy", inline="always")
def _job_pop(hk, hr, pn, e, pod):
    req = hr[e, pod, 0]
    n = pn[e, pod] - 1
    pn[e, pod] = n
    if n > 0:
        key = hk[e, pod, n]
        r = hr[e, pod, n]
        i = 0
        while True:
            c = 2 * i + 1
            if c >= n:
                break
            if c + 1 < n and hk[e, pod, c + 1] < hk[e, pod, c]:
                c += 1
            if key <= hk[e, pod, c]:
                break
            hk[e, pod, i] = hk[e, pod, c]
            hr[e, pod, i] = hr[e, pod, c]
            i = c
        hk[e, pod, i] = key
        hr[e, pod, i] = r
    return req


@njit(cache=True, error_model="numpy", inline="always")
def _rate(C, e, n):
    return 1.0 if n <= C[e, C_CORES] else C[e, C_CORES] / n


@njit(cache=True, error_model="numpy", inline="always")
def _sync_pod(pv, pt, pn, C, e, pod, t):
    """Advance the pod's virtual clock to real time t."""
    n = pn[e, pod]
    if n > 0:
        pv[e, pod] += (t - pt[e, pod]) * _rate(C, e, n)
    pt[e, pod] = t


@njit(cache=True, error_model="numpy", inline="always")
def _finish_at(pv, pt, C, e, pod, key, n):
    """When a job with virtual finish time `key` ends if the pod keeps serving n jobs."""
    return pt[e, pod] + max(0.0, key - pv[e, pod]) / _rate(C, e, n)


@njit(cache=True, error_model="numpy", inline="always")
def _past_deadline(t, req, arrivals, service, C, e):
    """Seconds past its SLO deadline that request `req` is if it finishes at t (<= 0: in time)."""
    return (t - arrivals[e, req]) - (C[e, C_SLO_SLOWDOWN] * service[e, req] + C[e, C_SLO_OFFSET])


@njit(cache=True, error_model="numpy", inline="always")
def _rekey_pod(pv, pt, pn, hk, pk, ph, pp, C, I, e, pod):
    n = pn[e, pod]
    if n == 0:
        pk[e, pod] = INF
    else:
        pk[e, pod] = _finish_at(pv, pt, C, e, pod, hk[e, pod, 0], n)
    _pheap_fix(ph, pp, pk, I, e, pod)


# ---------------------------------------------------------------- the simulation
@njit(cache=True, error_model="numpy", inline="always")
def _record_write(C, I, e, s):
    """Second s holds a recorded value. Knative's buckets (aggregation/bucketing.go Record) start
    a window afresh when nothing was recorded for a whole window: after an idle spell at zero
    scale a burst is averaged over the seconds since it began, not over the whole window."""
    gap = s - I[e, I_LAST_WRITE_SEC]
    if gap >= C[e, C_STABLE_WINDOW]:
        I[e, I_STABLE_FIRST] = s
    if gap >= C[e, C_PANIC_WINDOW]:
        I[e, I_PANIC_FIRST] = s
    I[e, I_LAST_WRITE_SEC] = s


@njit(cache=True, error_model="numpy", inline="always")
def _advance_clock(C, I, F, buckets, e, t):
    """Integrate revision concurrency up to t, closing whole-second buckets on the way. A second
    is recorded when a ready pod was there to scrape or the activator had requests to report.
    With target-burst-capacity -1 Knative scrapes no pod: only the activator, which carries every
    request, reports, while it has requests and once more (a zero) when they are done."""
    W = buckets.shape[1]
    inflight = F[e, F_INFLIGHT] - F[e, F_DRAIN_DIRECT]
    last = F[e, F_LAST_T]
    activator_only = C[e, C_ACTIVATOR_ONLY] != 0.0
    while t >= I[e, I_BUCKET_SEC] + 1:
        s = I[e, I_BUCKET_SEC]
        edge = float(s + 1)
        area = F[e, F_AREA] + inflight * (edge - last)
        buckets[e, s % W] = area
        if activator_only:
            report = area > 0.0 or (I[e, I_LAST_WRITE_SEC] == s - 1 and buckets[e, (s - 1) % W] > 0.0)
        else:
            report = area > 0.0 or I[e, I_N_READY] > 0
        if report:
            _record_write(C, I, e, s)
        F[e, F_AREA] = 0.0
        I[e, I_BUCKET_SEC] += 1
        last = edge
    F[e, F_AREA] += inflight * (t - last)
    F[e, F_LAST_T] = t
    F[e, F_NOW] = t


@njit(cache=True, error_model="numpy", inline="always")
def _account(I, F, S, T, e, t):
    """Charge pod-seconds and panic time up to t. Called before the pod count or the panic state
    changes and at the end of every advance, so the per-request path never pays for it."""
    dt = t - F[e, F_ACCT_T]
    if dt > 0.0:
        alive = float(I[e, I_N_ALIVE]) * dt
        panic = F[e, F_PANICKING] * dt
        S[e, S_POD_SECONDS] += alive
        T[e, S_POD_SECONDS] += alive
        S[e, S_PANIC_SECONDS] += panic
        T[e, S_PANIC_SECONDS] += panic
        F[e, F_ACCT_T] = t


@njit(cache=True, error_model="numpy", inline="always")
def _dispatch(req, pod, t, arrivals, service, reached, pstate, pready, pn, pv, pt, hk, hr, pk, ph, pp,
              C, I, S, T, e):
    _sync_pod(pv, pt, pn, C, e, pod, t)
    _job_push(hk, hr, pn, e, pod, pv[e, pod] + service[e, req], req)
    _rekey_pod(pv, pt, pn, hk, pk, ph, pp, C, I, e, pod)
    I[e, I_FREE_SLOTS] -= 1
    reached[e, req] = t   # queue-proxy times a request from here: no wait at the activator or its breaker
    if pready[e, pod] > arrivals[e, req]:
        # The request arrived before this pod was ready: it waited for a cold start.
        S[e, S_COLD_STARTS] += 1
        T[e, S_COLD_STARTS] += 1


@njit(cache=True, error_model="numpy", inline="always")
def _pick_pod(rng, pstate, pn, rlist, C, I, F, e):
    """The pod a new request goes to; -1 if no ready pod has a free slot (the request waits).

    With the activator in the path (excess burst capacity < 0) it balances as Knative's throttler
    does by containerConcurrency: 0 (unlimited), the less loaded of two random ready pods; 1-3,
    the first ready pod with a free slot; above 3, round-robin over the ready pods with a free
    slot. Out of the path, requests reach the pods through the Kubernetes Service, i.e. one
    uniformly random ready pod.
    """
    n_ready = I[e, I_N_READY]
    if n_ready == 0 or I[e, I_FREE_SLOTS] <= 0:
        return -1
    cap = C[e, C_CAP]
    cc = C[e, C_CC]
    if F[e, F_EBC] < 0.0 and cc > 0.0:
        start = I[e, I_RR_NEXT] % n_ready if cc > 3.0 else 0
        for j in range(n_ready):
            k = (start + j) % n_ready
            p = rlist[e, k]
            if pn[e, p] < cap:
                if cc > 3.0:
                    I[e, I_RR_NEXT] = k + 1
                return p
        return -1
    a = rlist[e, int(_u01(rng, e) * n_ready)]
    if F[e, F_EBC] < 0.0:
        b = rlist[e, int(_u01(rng, e) * n_ready)]
        if pn[e, b] < pn[e, a]:
            a = b
    if pn[e, a] < cap:
        return a
    for k in range(n_ready):
        p = rlist[e, k]
        if pn[e, p] < cap:
            return p
    return -1


@njit(cache=True, error_model="numpy", inline="always")
def _drain_fifo_to(pod, t, fifo, arrivals, service, reached, pstate, pready, pn, pv, pt, hk, hr, pk, ph,
                   pp, C, I, S, T, e):
    Q = fifo.shape[1]
    cap = C[e, C_CAP]
    while I[e, I_FIFO_HEAD] < I[e, I_FIFO_TAIL] and pn[e, pod] < cap:
        req = fifo[e, I[e, I_FIFO_HEAD] % Q]
        I[e, I_FIFO_HEAD] += 1
        _dispatch(req, pod, t, arrivals, service, reached, pstate, pready, pn, pv, pt, hk, hr, pk, ph, pp,
                  C, I, S, T, e)


@njit(cache=True, error_model="numpy", inline="always")
def _record_done(req, t, arrivals, service, reached, latency, hist, bounds, C, F, S, T, e, record):
    lat = t - arrivals[e, req]
    qp_lat = t - reached[e, req]
    F[e, F_INFLIGHT] -= 1.0
    S[e, S_COMPLETED] += 1
    T[e, S_COMPLETED] += 1
    S[e, S_LATENCY_SUM] += lat
    T[e, S_LATENCY_SUM] += lat
    S[e, S_QP_LATENCY_SUM] += qp_lat
    T[e, S_QP_LATENCY_SUM] += qp_lat
    late = _past_deadline(t, req, arrivals, service, C, e)
    if late > 0.0:
        S[e, S_VIOLATIONS] += 1
        T[e, S_VIOLATIONS] += 1
        S[e, S_LATE_SECONDS] += late
        T[e, S_LATE_SECONDS] += late
    hist[e, np.searchsorted(bounds, qp_lat)] += 1   # Prometheus buckets are le
    if record:
        latency[e, req] = lat


@njit(cache=True, error_model="numpy", inline="always")
def _set_ready_list(rlist, rpos, I, e, pod, add):
    if add:
        k = I[e, I_N_READY]
        rlist[e, k] = pod
        rpos[e, pod] = k
        I[e, I_N_READY] = k + 1
    else:
        k = rpos[e, pod]
        last = I[e, I_N_READY] - 1
        moved = rlist[e, last]
        rlist[e, k] = moved
        rpos[e, moved] = k
        rpos[e, pod] = -1
        I[e, I_N_READY] = last


@njit(cache=True, error_model="numpy", inline="always")
def _free_pod(pstate, freelist, I, e, pod):
    pstate[e, pod] = POD_FREE
    freelist[e, I[e, I_N_FREE_PODS]] = pod
    I[e, I_N_FREE_PODS] += 1
    I[e, I_N_ALIVE] -= 1


@njit(cache=True, error_model="numpy")
def _next_ready_time(pstate, pready, slist, I, F, e):
    best = INF
    for k in range(I[e, I_N_STARTING]):
        r = pready[e, slist[e, k]]
        if r < best:
            best = r
    F[e, F_NEXT_READY] = best


@njit(cache=True, error_model="numpy")
def _scale_to(want, t, rng, cs_samples, pstate, pready, pcreated, pn, pv, pt, rlist, rpos, slist,
              freelist, C, I, F, S, T, e):
    """Create or remove pods so that ready + starting == want (pods draining don't count)."""
    have = I[e, I_N_READY] + I[e, I_N_STARTING]
    cap = int(C[e, C_CAP])
    while have < want and I[e, I_N_FREE_PODS] > 0:
        I[e, I_N_FREE_PODS] -= 1
        pod = freelist[e, I[e, I_N_FREE_PODS]]
        pstate[e, pod] = POD_STARTING
        pcreated[e, pod] = t
        pready[e, pod] = t + _cold_start(C, rng, cs_samples, F, e)
        pn[e, pod] = 0
        pv[e, pod] = 0.0
        pt[e, pod] = t
        slist[e, I[e, I_N_STARTING]] = pod
        I[e, I_N_STARTING] += 1
        I[e, I_N_ALIVE] += 1
        have += 1
    while have > want and I[e, I_N_STARTING] > 0:
        # Kubernetes removes pods that are not ready first; the youngest of them first.
        best = 0
        for k in range(1, I[e, I_N_STARTING]):
            if pready[e, slist[e, k]] > pready[e, slist[e, best]]:
                best = k
        pod = slist[e, best]
        I[e, I_N_STARTING] -= 1
        slist[e, best] = slist[e, I[e, I_N_STARTING]]
        _free_pod(pstate, freelist, I, e, pod)
        have -= 1
    while have > want and I[e, I_N_READY] > 0:
        # Then the least busy ready pod: it drains its requests and is deleted when empty.
        best = rlist[e, 0]
        for k in range(1, I[e, I_N_READY]):
            if pn[e, rlist[e, k]] < pn[e, best]:
                best = rlist[e, k]
        _set_ready_list(rlist, rpos, I, e, best, False)
        I[e, I_FREE_SLOTS] -= cap - pn[e, best]
        if pn[e, best] == 0:
            _free_pod(pstate, freelist, I, e, best)
        else:
            pstate[e, best] = POD_DRAINING
            I[e, I_DRAIN_RECOUNT] = 1     # the caller, which holds the requests, recounts
        have -= 1
    _next_ready_time(pstate, pready, slist, I, F, e)
    T[e, S_MAX_PODS] = max(T[e, S_MAX_PODS], float(I[e, I_N_ALIVE]))
    S[e, S_MAX_PODS] = max(S[e, S_MAX_PODS], float(I[e, I_N_ALIVE]))


@njit(cache=True, error_model="numpy", inline="always")
def _hold_or_zero(t, C, I, F, e):
    """The scale to apply when the decider wants zero pods (pkg/reconciler/autoscaling/kpa/
    scaler.go handleScaleToZero). An active revision keeps at most one pod until it has been
    active for a stable window, then it is marked inactive. An inactive one goes to zero once it
    has been inactive for the grace period (and the pod retention period), or, once the pod
    retention period (0 by default) has passed, as soon as the activator has been in the path for
    the grace period: with the default target-burst-capacity it usually has, and the last pod goes
    about a stable window after the revision's concurrency fell to zero. Knative re-reconciles
    about 3 s after marking the revision inactive before it scales to zero; here both happen in
    the same decision."""
    current = I[e, I_REPLICAS]
    if np.isnan(F[e, F_INACTIVE_SINCE]):
        if np.isnan(F[e, F_ACTIVE_SINCE]):
            return current                  # activating: no pod has been ready yet
        if t - F[e, F_ACTIVE_SINCE] < C[e, C_STABLE_WINDOW]:
            return min(current, 1)
        F[e, F_INACTIVE_SINCE] = t          # mark inactive; the activator takes the path
        F[e, F_ACTIVE_SINCE] = np.nan
        if np.isnan(F[e, F_PROXY_SINCE]):
            F[e, F_PROXY_SINCE] = t
    inactive_for = t - F[e, F_INACTIVE_SINCE]
    grace = C[e, C_STZ_GRACE]
    retention = C[e, C_STZ_RETENTION]
    if inactive_for >= max(grace, retention):
        return 0
    if retention > 0.0 and inactive_for < retention:
        return current
    if t - F[e, F_PROXY_SINCE] >= grace:
        return 0
    return current


@njit(cache=True, error_model="numpy", inline="always")
def _resolve_target(spec, C, F, e):
    """The decider's target from the annotation (pkg/reconciler/autoscaling/resources/target.go):
    `kpilot.observation.knative_target`'s rule, which compiled code cannot call."""
    cc = C[e, C_CC]
    total = cc if cc > 0 else C[e, C_TARGET_DEFAULT]
    tgt = F[e, F_TARGET]
    if not np.isnan(tgt):
        total = min(tgt, cc) if cc > 0 else tgt
    spec[e, SPEC_TOTAL_VALUE] = total
    spec[e, SPEC_TARGET_VALUE] = max(0.01, total * C[e, C_UTILIZATION])


@njit(cache=True, error_model="numpy", inline="always")
def _activator_in_path(I, F, e):
    """The ServerlessService is in proxy mode: burst capacity short (the last decision's), no pod
    ready, or the revision marked inactive."""
    return F[e, F_EBC] < 0.0 or I[e, I_N_READY] == 0 or not np.isnan(F[e, F_INACTIVE_SINCE])


@njit(cache=True, error_model="numpy")
def _decide(t, stable, panic, spec, dstate, rng, cs_samples, pstate, pready, pcreated, pn, pv, pt,
            rlist, rpos, slist, freelist, C, I, F, S, T, e):
    """One KPA decision at time t on the given window averages (the caller has resolved the
    target), then apply it to the pods."""
    ready = I[e, I_N_READY]
    _account(I, F, S, T, e, t)
    desired, ebc, panicking = kpa_decide(stable, panic, float(ready), t, spec[e], dstate[e])
    F[e, F_STABLE] = stable
    F[e, F_PANIC] = panic
    F[e, F_DESIRED] = desired
    F[e, F_EBC] = ebc
    F[e, F_PANICKING] = 1.0 if panicking else 0.0
    # Scale to zero counts how long the activator has been in the path.
    if _activator_in_path(I, F, e):
        if np.isnan(F[e, F_PROXY_SINCE]):
            F[e, F_PROXY_SINCE] = t
    else:
        F[e, F_PROXY_SINCE] = np.nan
    want = desired
    if want < C[e, C_MIN_SCALE]:
        want = int(C[e, C_MIN_SCALE])
    if C[e, C_MAX_SCALE] > 0 and want > C[e, C_MAX_SCALE]:
        want = int(C[e, C_MAX_SCALE])
    if want == 0:
        want = _hold_or_zero(t, C, I, F, e) if C[e, C_STZ_ENABLED] > 0.5 else 1
    else:
        F[e, F_INACTIVE_SINCE] = np.nan     # wanted again: active once a pod is ready
    if want > 0 and ready > 0 and np.isnan(F[e, F_ACTIVE_SINCE]) and np.isnan(F[e, F_INACTIVE_SINCE]):
        F[e, F_ACTIVE_SINCE] = t
    I[e, I_REPLICAS] = want
    _scale_to(want, t, rng, cs_samples, pstate, pready, pcreated, pn, pv, pt, rlist, rpos,
              slist, freelist, C, I, F, S, T, e)


@njit(cache=True, error_model="numpy")
def _tick(t, spec, dstate, buckets, rng, cs_samples, pstate, pready, pcreated, pn, pv, pt, rlist,
          rpos, slist, freelist, C, I, F, S, T, timeline, tl_arrivals, e, record):
    """The autoscaler's regular decision at time t (every C_TICK seconds)."""
    completed = I[e, I_BUCKET_SEC]
    first = I[e, I_FIRST_SEC]
    stable = window_average(buckets[e], completed, max(first, I[e, I_STABLE_FIRST]),
                            C[e, C_STABLE_WINDOW])
    panic = window_average(buckets[e], completed, max(first, I[e, I_PANIC_FIRST]),
                           C[e, C_PANIC_WINDOW])
    _resolve_target(spec, C, F, e)
    # No decision before the first whole second, nor when nothing was recorded for a stable
    # window (Knative's ErrNoData: a revision at zero with no traffic keeps its last decision).
    if completed - first > 0 and completed - I[e, I_LAST_WRITE_SEC] <= C[e, C_STABLE_WINDOW]:
        _decide(t, stable, panic, spec, dstate, rng, cs_samples, pstate, pready, pcreated, pn, pv,
                pt, rlist, rpos, slist, freelist, C, I, F, S, T, e)
    else:
        _account(I, F, S, T, e, t)
    if record:
        k = I[e, I_TICKS]
        if k < timeline.shape[1]:
            row = timeline[e, k]
            row[0] = t
            row[1] = tl_arrivals[e]
            row[2] = stable
            row[3] = panic
            row[4] = spec[e, SPEC_TOTAL_VALUE]
            row[5] = max(F[e, F_DESIRED], 0.0)
            row[6] = I[e, I_N_READY]
            row[7] = F[e, F_PANICKING]
            row[8] = I[e, I_N_STARTING]
            row[9] = F[e, F_INFLIGHT]
            row[10] = 1.0 if F[e, F_EBC] < 0 or I[e, I_N_READY] == 0 else 0.0
    tl_arrivals[e] = 0
    I[e, I_TICKS] += 1
    F[e, F_NEXT_TICK] = t + C[e, C_TICK]


@njit(cache=True, error_model="numpy", inline="always")
def _poke_average(buckets, cur, first, last_write, window):
    """A window's average as the autoscaler computes it right after the activator's poke: one
    request recorded in the current second `cur`, the window restarted if it had been empty."""
    n = len(buckets)
    w = int(window)
    if cur - last_write >= window:
        first = cur
    total = 1.0
    for s in range(max(first, cur - w + 1), cur):
        total += buckets[s % n]
    return round_6_digits(total / min(w, cur - first + 1))


@njit(cache=True, error_model="numpy")
def _poke(t, spec, dstate, buckets, rng, cs_samples, pstate, pready, pcreated, pn, pv, pt, rlist,
          rpos, slist, freelist, C, I, F, S, T, e):
    """A request reached a revision the autoscaler had scaled to zero: the activator reports it
    at once and the autoscaler decides then, not at its next tick (activator
    concurrency_reporter.go, autoscaler scaling/multiscaler.go Poke)."""
    cur = I[e, I_BUCKET_SEC]
    first = I[e, I_FIRST_SEC]
    last = I[e, I_LAST_WRITE_SEC]
    stable = _poke_average(buckets[e], cur, max(first, I[e, I_STABLE_FIRST]), last, C[e, C_STABLE_WINDOW])
    panic = _poke_average(buckets[e], cur, max(first, I[e, I_PANIC_FIRST]), last, C[e, C_PANIC_WINDOW])
    _resolve_target(spec, C, F, e)
    _decide(t, stable, panic, spec, dstate, rng, cs_samples, pstate, pready, pcreated, pn, pv, pt,
            rlist, rpos, slist, freelist, C, I, F, S, T, e)


@njit(cache=True, error_model="numpy")
def _recount_drain_direct(pstate, pn, hr, proxied, I, F, e):
    """F_DRAIN_DIRECT afresh after pods began draining: their requests that queue-proxy alone
    reported drop out of the observed concurrency (the scraper skips a pod being deleted)."""
    n = 0.0
    for pod in range(pn.shape[1]):
        if pstate[e, pod] == POD_DRAINING:
            for j in range(pn[e, pod]):
                if not proxied[e, hr[e, pod, j]]:
                    n += 1.0
    F[e, F_DRAIN_DIRECT] = n
    I[e, I_DRAIN_RECOUNT] = 0


@njit(cache=True, error_model="numpy")
def advance_one(e, t_stop, arrivals, service, reached, proxied, C, I, F, S, T, spec, dstate, buckets, rng, cs_samples,
                pstate, pready, pcreated, pn, pv, pt, hk, hr, pk, ph, pp, rlist, rpos, slist,
                freelist, fifo, hist, bounds, latency, timeline, tl_arrivals, record):
    """Run simulation e until t_stop (events at t_stop itself are left for the next call)."""
    Q = fifo.shape[1]
    cap = C[e, C_CAP]
    n_req = I[e, I_N_REQ]
    while True:
        nr = I[e, I_NEXT_REQ]
        t_arr = arrivals[e, nr] if nr < n_req else INF
        t_done = pk[e, ph[e, 0]] if I[e, I_PHEAP_SIZE] > 0 else INF
        t_ready = F[e, F_NEXT_READY]
        t_tick = F[e, F_NEXT_TICK]
        t = min(min(t_arr, t_done), min(t_ready, t_tick))
        if t >= t_stop:
            _advance_clock(C, I, F, buckets, e, t_stop)
            _account(I, F, S, T, e, t_stop)
            return
        _advance_clock(C, I, F, buckets, e, t)
        if t_ready == t:
            # The earliest starting pod is ready: it takes waiting requests first.
            best = 0
            for k in range(1, I[e, I_N_STARTING]):
                if pready[e, slist[e, k]] < pready[e, slist[e, best]]:
                    best = k
            pod = slist[e, best]
            I[e, I_N_STARTING] -= 1
            slist[e, best] = slist[e, I[e, I_N_STARTING]]
            pstate[e, pod] = POD_READY
            pt[e, pod] = t
            _set_ready_list(rlist, rpos, I, e, pod, True)
            I[e, I_FREE_SLOTS] += int(cap)
            _drain_fifo_to(pod, t, fifo, arrivals, service, reached, pstate, pready, pn, pv, pt, hk, hr, pk,
                           ph, pp, C, I, S, T, e)
            _next_ready_time(pstate, pready, slist, I, F, e)
        elif t_done == t:
            pod = ph[e, 0]
            pv[e, pod] = hk[e, pod, 0]   # exact, no drift
            pt[e, pod] = t
            req = _job_pop(hk, hr, pn, e, pod)
            if pstate[e, pod] == POD_DRAINING and not proxied[e, req]:
                F[e, F_DRAIN_DIRECT] -= 1.0
            _record_done(req, t, arrivals, service, reached, latency, hist, bounds, C, F, S, T, e,
                         record)
            if pstate[e, pod] == POD_READY:
                I[e, I_FREE_SLOTS] += 1
                _drain_fifo_to(pod, t, fifo, arrivals, service, reached, pstate, pready, pn, pv, pt, hk,
                               hr, pk, ph, pp, C, I, S, T, e)
            _rekey_pod(pv, pt, pn, hk, pk, ph, pp, C, I, e, pod)
            if pstate[e, pod] == POD_DRAINING and pn[e, pod] == 0:
                _account(I, F, S, T, e, t)
                _free_pod(pstate, freelist, I, e, pod)
        elif t_arr == t:
            req = nr
            I[e, I_NEXT_REQ] = nr + 1
            S[e, S_ARRIVALS] += 1
            T[e, S_ARRIVALS] += 1
            tl_arrivals[e] += 1
            F[e, F_INFLIGHT] += 1.0
            proxied[e, req] = _activator_in_path(I, F, e)   # the activator counts it until it is done
            pod = -1
            if I[e, I_FIFO_HEAD] == I[e, I_FIFO_TAIL]:
                pod = _pick_pod(rng, pstate, pn, rlist, C, I, F, e)
            if pod >= 0:
                _dispatch(req, pod, t, arrivals, service, reached, pstate, pready, pn, pv, pt, hk, hr, pk,
                          ph, pp, C, I, S, T, e)
            elif I[e, I_FIFO_TAIL] - I[e, I_FIFO_HEAD] < Q:
                fifo[e, I[e, I_FIFO_TAIL] % Q] = req
                I[e, I_FIFO_TAIL] += 1
            else:
                F[e, F_INFLIGHT] -= 1.0
                S[e, S_REJECTED] += 1
                T[e, S_REJECTED] += 1
                if record:
                    latency[e, req] = REJECTED
            if F[e, F_DESIRED] == 0.0 and _activator_in_path(I, F, e):
                _poke(t, spec, dstate, buckets, rng, cs_samples, pstate, pready, pcreated, pn, pv,
                      pt, rlist, rpos, slist, freelist, C, I, F, S, T, e)
        else:
            _tick(t, spec, dstate, buckets, rng, cs_samples, pstate, pready, pcreated, pn, pv, pt,
                  rlist, rpos, slist, freelist, C, I, F, S, T, timeline, tl_arrivals, e, record)
        if I[e, I_DRAIN_RECOUNT]:
            _recount_drain_direct(pstate, pn, hr, proxied, I, F, e)


@njit(cache=True, error_model="numpy", parallel=True)
def advance_all(t_stop, arrivals, service, reached, proxied, C, I, F, S, T, spec, dstate, buckets, rng, cs_samples,
                pstate, pready, pcreated, pn, pv, pt, hk, hr, pk, ph, pp, rlist, rpos, slist,
                freelist, fifo, hist, bounds, latency, timeline, tl_arrivals, record):
    """Advance every simulation e to t_stop[e], in parallel across simulations."""
    for e in prange(arrivals.shape[0]):
        advance_one(e, t_stop[e], arrivals, service, reached, proxied, C, I, F, S, T, spec, dstate, buckets, rng,
                    cs_samples, pstate, pready, pcreated, pn, pv, pt, hk, hr, pk, ph, pp, rlist,
                    rpos, slist, freelist, fifo, hist, bounds, latency, timeline, tl_arrivals, record)


@njit(cache=True, error_model="numpy", parallel=True)
def projected_overdue(arrivals, service, C, I, F, pn, pv, pt, hk, hr, fifo, out):
    """For every simulation, the SLO lateness its unfinished requests are heading for.

    Each request in service is projected to finish at the pace its pod runs now (the pod's current
    sharing held until it is done); a waiting request as if it started now, alone. out[e, 0] sums
    the projected seconds past each deadline, out[e, 1] counts the requests projected to miss it.
    The reward shaping (kpilot.env.core) charges these when they become likely, not minutes later
    when a slowed long request finally finishes. Reads state only; the simulation is unchanged.
    """
    Q = fifo.shape[1]
    for e in prange(arrivals.shape[0]):
        t = F[e, F_NOW]
        late = 0.0
        missed = 0.0
        for pod in range(pn.shape[1]):
            for j in range(pn[e, pod]):
                req = hr[e, pod, j]
                over = _past_deadline(_finish_at(pv, pt, C, e, pod, hk[e, pod, j], pn[e, pod]), req,
                                      arrivals, service, C, e)
                if over > 0.0:
                    late += over
                    missed += 1.0
        for k in range(I[e, I_FIFO_HEAD], I[e, I_FIFO_TAIL]):
            req = fifo[e, k % Q]
            over = _past_deadline(t + service[e, req], req, arrivals, service, C, e)
            if over > 0.0:
                late += over
                missed += 1.0
        out[e, 0] = late
        out[e, 1] = missed
