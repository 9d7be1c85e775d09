"""Reproducible synthetic workloads, as Traces.

Spec: `synthetic:NAME[:key=value,...]`, e.g. `synthetic:bursty:rate=20,duration=3600,seed=1,service=0.5`.
Common keys: rate (mean req/s, default 20), duration (s, 3600), seed (default: load_trace's seed),
service (mean service s, 0.5), cv (service coefficient of variation, 1.0). Service times are
lognormal with that mean and CV. Everything is drawn from numpy default_rng(seed).

    poisson   homogeneous Poisson process at `rate`.
    diurnal   sinusoidal rate  rate * (1 + amplitude * sin(2 pi t / period)), by thinning;
              amplitude 0.8, period = duration (one cycle).
    bursty    Gamma inter-arrivals with shape 0.25 (BurstGPT authors' generator default; their
              scale 2 is rescaled so the mean rate is `rate`): inter-arrival CV = 1/sqrt(shape) = 2.
              Key: shape.
    flash     baseline `rate` plus a spike at `at` (default duration/2) that multiplies the rate by
              `peak` (10) and decays exponentially with time constant `decay` (120 s), by thinning.
    onoff     Poisson busy periods at `rate`, lasting Uniform[on/2, 3*on/2] (on = 300 s), separated
              by idle gaps Uniform[off_min, off_max] (90-240 s, all longer than Knative's 60 s
              stable window, so they exercise scale-to-zero). `rate` is the busy-period rate.
    clumped   LLM-service style: clumps of requests (a client's batch, an agent's fan-out) arrive with
              Gamma inter-arrivals of shape 0.25 (long idle stretches between busy ones); a clump
              holds a geometric number of requests with mean `size` (40) spread uniformly over an
              exponential time with mean `spread` (5 s). `rate` stays the mean req/s. Shaped on the
              Azure LLM 2023 code trace: 121 clumps split at 1 s gaps, median 38 requests over 4 s,
              inter-arrival CV 13 (Poisson: 1). Keys: size, spread, shape.
    demo      the bundled demo: 1 h of bursty (Gamma) traffic, mean ~20 req/s over the hour, with an
              idle gap from 1500 s to 1800 s; takes the common keys.
"""

from __future__ import annotations

import hashlib

import numpy as np

from kpilot.errors import TraceError
from kpilot.traces.model import MAX_REQUESTS, MAX_SERVICE_S, MAX_SPAN_S, Trace, make_trace

COMMON = {"rate": 20.0, "duration": 3600.0, "seed": None, "service": 0.5, "cv": 1.0}
EXTRA = {
    "poisson": {},
    "diurnal": {"amplitude": 0.8, "period": None},
    "bursty": {"shape": 0.25},
    "flash": {"at": None, "peak": 10.0, "decay": 120.0},
    "onoff": {"on": 300.0, "off_min": 90.0, "off_max": 240.0},
    "clumped": {"size": 40.0, "spread": 5.0, "shape": 0.25},
    "demo": {},
}
WORKLOADS = tuple(EXTRA)
DEMO_GAP = (1500.0, 1800.0)


def synthetic_trace(name: str, options: dict | None = None, seed: int = 0) -> Trace:
    """Generate workload `name` with string or numeric `options` (see module doc)."""
    if name not in EXTRA:
        raise TraceError(f"unknown synthetic workload {name!r} (available: {', '.join(WORKLOADS)})")
    p = _params(name, options or {}, seed)
    rng = np.random.default_rng(int(p["seed"]))
    arrivals = _ARRIVALS[name](rng, p)
    service = lognormal_service(rng, len(arrivals), p["service"], p["cv"])
    canonical = f"synthetic:{name}:" + ",".join(f"{k}={p[k]:g}" for k in sorted(p))
    trace = make_trace(arrivals, service, None, source=canonical, format="synthetic", workload=name,
                       params=p, checksum=hashlib.sha256(canonical.encode()).hexdigest())
    trace.meta["span_s"] = float(max(p["duration"], trace.span_s))
    return trace


MIN_SHAPE = 0.01     # Gamma inter-arrivals: below this the draws underflow to 0 and time stops
MAX_CV = 100.0       # a lognormal's CV beyond this draws 0 or infinity in float32


def _params(name: str, options: dict, seed: int) -> dict:
    spec = {**COMMON, **EXTRA[name]}
    unknown = sorted(set(options) - set(spec))
    if unknown:
        raise TraceError(f"unknown key(s) {', '.join(unknown)} for synthetic:{name} "
                         f"(valid: {', '.join(sorted(spec))})")
    p = {}
    for key, default in spec.items():
        value = options.get(key, default)
        try:
            p[key] = float(value) if value is not None else None
        except (TypeError, ValueError):
            raise TraceError(f"synthetic:{name}: {key}={value!r} is not a number") from None
        if p[key] is not None and not np.isfinite(p[key]):
            raise TraceError(f"synthetic:{name}: {key}={value!r} is not a finite number")
    p["seed"] = float(seed if p["seed"] is None else p["seed"])
    if "period" in spec and p["period"] is None:
        p["period"] = p["duration"]
    if "at" in spec and p["at"] is None:
        p["at"] = p["duration"] / 2
    if p["seed"] < 0 or p["seed"] != int(p["seed"]):
        raise TraceError(f"synthetic:{name}: seed must be a non-negative integer, got {p['seed']:g}")
    for key in ("rate", "duration", "service", "period", "decay"):
        if key in p and p[key] <= 0:
            raise TraceError(f"synthetic:{name}: {key} must be positive")
    for key in ("cv", "spread", "peak", "off_min"):
        if key in p and p[key] < 0:
            raise TraceError(f"synthetic:{name}: {key} must be non-negative")
    if "shape" in p and p["shape"] < MIN_SHAPE:
        raise TraceError(f"synthetic:{name}: shape must be at least {MIN_SHAPE:g} (inter-arrival CV "
                         f"{1 / MIN_SHAPE ** 0.5:g}), got {p['shape']:g}")
    if "on" in p and p["on"] < 1:
        raise TraceError(f"synthetic:{name}: on must be at least 1 (seconds of a busy period)")
    if "off_max" in p and p["off_max"] < p["off_min"]:
        raise TraceError(f"synthetic:{name}: off_max ({p['off_max']:g}) is below off_min ({p['off_min']:g})")
    if p["duration"] > MAX_SPAN_S:
        raise TraceError(f"synthetic:{name}: duration must be at most {MAX_SPAN_S:g} s (a year)")
    if p["service"] > MAX_SERVICE_S or p["cv"] > MAX_CV:
        raise TraceError(f"synthetic:{name}: service must be at most {MAX_SERVICE_S:g} s and cv at most "
                         f"{MAX_CV:g}")
    if "size" in p and p["size"] < 1:
        raise TraceError(f"synthetic:{name}: size must be at least 1 (requests per clump)")
    expected = p["rate"] * p["duration"] * max(p.get("peak") or 1.0, 1.0)
    if expected > MAX_REQUESTS:
        raise TraceError(f"synthetic:{name}: rate x duration asks for about {expected:.3g} requests; "
                         f"at most {MAX_REQUESTS:,} (memory)")
    return p


def lognormal_service(rng: np.random.Generator, n: int, mean: float, cv: float) -> np.ndarray:
    """n lognormal service times (float32 s) with the given mean and coefficient of variation."""
    sigma2 = np.log1p(cv * cv)
    with np.errstate(over="ignore"):    # a draw beyond float32 is inf, which check_limits refuses
        return rng.lognormal(np.log(mean) - sigma2 / 2, np.sqrt(sigma2), n).astype(np.float32)


def lognormal_options(options: dict, src: str, default_service_s: float) -> tuple[float, float]:
    """`service=` (mean seconds, default `default_service_s`) and `cv=` of a count-table reader
    that draws lognormal service times: 0 < service <= MAX_SERVICE_S and 0 <= cv <= MAX_CV (a
    larger cv draws nearly every time as 0 and misses the mean it was asked for)."""
    from kpilot.traces.spec import float_option

    service = float_option(options, "service", default_service_s, src)
    cv = float_option(options, "cv", 1.0, src)
    if not 0 < service <= MAX_SERVICE_S:
        what = f"service={options['service']}" if "service" in options else f"the mean duration, {service:g} s,"
        raise TraceError(f"{what} must be positive and at most {MAX_SERVICE_S:g} s", path=src)
    if not 0 <= cv <= MAX_CV:
        raise TraceError(f"cv={options['cv']} must be in [0, {MAX_CV:g}]", path=src)
    return service, cv


def _poisson(rng, rate: float, start: float, end: float) -> np.ndarray:
    n = rng.poisson(rate * (end - start))
    return np.sort(rng.uniform(start, end, n))


def _thinned(rng, p: dict, intensity, peak_rate: float) -> np.ndarray:
    candidates = _poisson(rng, peak_rate, 0.0, p["duration"])
    return candidates[rng.random(len(candidates)) * peak_rate < intensity(candidates)]


def _gamma(rng, rate: float, shape: float, start: float, end: float) -> np.ndarray:
    scale = 1.0 / (rate * shape)
    out, t = [], start
    while t < end:
        n = int((end - t) * rate * 1.2) + 64
        gaps = rng.gamma(shape, scale, n)
        times = t + np.cumsum(gaps)
        out.append(times)
        t = times[-1]
    times = np.concatenate(out)
    return times[times < end]


def _arr_poisson(rng, p):
    return _poisson(rng, p["rate"], 0.0, p["duration"])


def _arr_diurnal(rng, p):
    a = min(max(p["amplitude"], 0.0), 1.0)
    return _thinned(rng, p, lambda t: p["rate"] * (1 + a * np.sin(2 * np.pi * t / p["period"])),
                    p["rate"] * (1 + a))


def _arr_bursty(rng, p):
    return _gamma(rng, p["rate"], p["shape"], 0.0, p["duration"])


def _arr_flash(rng, p):
    def intensity(t):
        since = np.maximum(t - p["at"], 0.0)
        return p["rate"] * (1 + (p["peak"] - 1) * np.where(t >= p["at"], np.exp(-since / p["decay"]), 0.0))
    return _thinned(rng, p, intensity, p["rate"] * max(p["peak"], 1.0))


def _arr_onoff(rng, p):
    parts, t = [], 0.0
    while t < p["duration"]:
        busy_end = min(t + rng.uniform(p["on"] / 2, 1.5 * p["on"]), p["duration"])
        parts.append(_poisson(rng, p["rate"], t, busy_end))
        t = busy_end + rng.uniform(p["off_min"], p["off_max"])
    return np.concatenate(parts)


def _arr_clumped(rng, p):
    size = p["size"]
    starts = _gamma(rng, p["rate"] / size, p["shape"], 0.0, p["duration"])
    counts = rng.geometric(1.0 / size, len(starts))
    spans = rng.exponential(p["spread"], len(starts))
    first = np.repeat(starts, counts)
    times = first + rng.random(len(first)) * np.repeat(spans, counts)
    return np.sort(times[times < p["duration"]])


def _arr_demo(rng, p):
    lo, hi = DEMO_GAP
    busy_rate = p["rate"] * p["duration"] / (p["duration"] - min(hi, p["duration"]) + min(lo, p["duration"]))
    return np.concatenate([_gamma(rng, busy_rate, 0.25, 0.0, min(lo, p["duration"])),
                           _gamma(rng, busy_rate, 0.25, hi, p["duration"]) if hi < p["duration"] else []])


_ARRIVALS = {"poisson": _arr_poisson, "diurnal": _arr_diurnal, "bursty": _arr_bursty,
             "flash": _arr_flash, "onoff": _arr_onoff, "clumped": _arr_clumped, "demo": _arr_demo}
