"""`static-rolling`: the static target re-tuned on a schedule from the traffic a cluster has seen.

`static-tuned` is tuned once, on the window before the evaluated one. The load moves, so a platform
team can re-tune on a schedule instead: every `every_s` seconds, the best target of `STATIC_GRID`
on the last `over_s` seconds of the Service's traffic, what `kpilot retune` run from a CronJob
writes as the Service's target. The history is what a cluster's Prometheus has at that moment
(`observed_history`): requests that finished by then, counted per `bin_s` bin when they finished,
with their mean duration (queue-proxy's histogram), the last bin not yet scraped; replayed as the request-counts
reader replays such a table (uniform arrivals per bin, lognormal service around each bin's mean).
Only the past of the trace is read: arrivals before the decision, and a request's duration only
once it would have finished.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from kpilot.env.reward import RewardConfig
from kpilot.errors import ConfigError
from kpilot.evaluate.baselines import STATIC_GRID, tune_static
from kpilot.sim.config import SimConfig
from kpilot.traces.model import Trace, make_trace
from kpilot.traces.request_counts import synthesise

NAME = "static-rolling"
DEFAULT_EVERY_S = 1200.0      # 20 minutes
DEFAULT_OVER_S = 5760.0       # 96 minutes: the suites' 20 % window of an 8-hour trace
DEFAULT_BIN_S = 60.0          # `kpilot trace from-prometheus`'s default step
WARMUP_S = 300.0              # each re-tune's replays start this long before the history, unscored
# `kpilot retune` runs from a CronJob, at most once a minute; each re-tune replays the grid, so a
# schedule of milliseconds never finished.
MIN_EVERY_S = 60.0


def check_schedule(every_s: float, over_s: float, bin_s: float = DEFAULT_BIN_S) -> None:
    """`--retune-every`, `--retune-over` and `--retune-bin`: a minute or more, seconds >= 0, and at
    least two bins to tune on."""
    if not (math.isfinite(every_s) and every_s > 0):
        raise ConfigError(f"expected a positive duration, got {every_s:g} s", option="--retune-every")
    if every_s < MIN_EVERY_S:
        raise ConfigError(f"expected at least {MIN_EVERY_S:g} s (a CronJob runs `kpilot retune` at most once "
                          f"a minute), got {every_s:g} s", option="--retune-every")
    if not (math.isfinite(bin_s) and bin_s >= 0):
        raise ConfigError(f"expected seconds >= 0 (0: every request), got {bin_s:g}", option="--retune-bin")
    if not (math.isfinite(over_s) and over_s >= max(2 * bin_s, 1.0)):
        least = f"{2 * bin_s:g} s (two {bin_s:g} s bins of traffic)" if bin_s > 0 else "1 s"
        raise ConfigError(f"expected at least {least}, got {over_s:g} s", option="--retune-over")


def observed_history(trace: Trace, end_s: float, over_s: float, bin_s: float, *, seed: int = 0,
                     cv: float = 1.0) -> Trace:
    """What a cluster's Prometheus shows at `end_s` (seconds into `trace`) of its last `over_s`
    seconds: whole bins of `bin_s` on the trace's clock ending a bin before `end_s`, each with the
    requests that finished in it (at full speed: queue-proxy records a request when it responds)
    and their mean duration; re-synthesised into requests. Time 0 is the first bin's start.
    With `bin_s` 0, every request as an access log would have it instead: those that arrived in
    the last `over_s` before `end_s` and finished before it, with their own arrival and duration."""
    if bin_s <= 0:
        lo, hi = np.searchsorted(trace.arrivals, [end_s - over_s - float(trace.service.max(initial=0.0)), end_s])
        arrivals, service = trace.arrivals[lo:hi], trace.service[lo:hi]
        first = max(0.0, end_s - over_s)
        seen = (arrivals >= first) & (arrivals + service < end_s)
        arrivals, service, span = arrivals[seen] - first, service[seen], end_s - first
    else:
        stop = math.floor(end_s / bin_s) * bin_s - bin_s          # the last bin is not scraped yet
        first = max(0.0, stop - math.ceil(over_s / bin_s) * bin_s)     # as kpilot.traces.prometheus_export.bins
        n_bins = max(0, int(round((stop - first) / bin_s)))
        # queue-proxy counts a request when it responds: bin it by when it finished (at full speed).
        lo, hi = np.searchsorted(trace.arrivals, [first - float(trace.service.max(initial=0.0)), stop], side="left")
        durations = trace.service[lo:hi].astype(np.float64)
        finished = trace.arrivals[lo:hi] + durations
        seen = (finished >= first) & (finished < stop)
        idx = ((finished[seen] - first) // bin_s).astype(np.int64)
        counts = np.bincount(idx, minlength=n_bins)
        sums = np.bincount(idx, weights=durations[seen], minlength=n_bins)
        # Every bin with requests has its mean: synthesise's fallback duration is never used.
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        arrivals, service = synthesise(np.arange(n_bins) * bin_s, counts, means, bin_s, np.random.default_rng(seed),
                                       cv=cv)
        span = n_bins * bin_s
    meta = {"span_s": float(span)}
    if (tod := trace.time_of_day_at(first)) is not None:
        meta["start_time_of_day_s"] = tod
    return make_trace(arrivals, service, None, **meta)


@dataclass
class RollingStaticTarget:
    """Replays the window of `trace` that starts `begin_s` seconds into it (its warm-up included)
    with the target re-tuned every `every_s` on the last `over_s` of observed traffic
    (module doc). Re-tuning depends on the trace alone, so every replay seed gets the same
    schedule (computed once). Where the history holds fewer than 2 scored requests the target
    in place is kept."""

    trace: Trace
    begin_s: float
    sim: SimConfig
    reward: RewardConfig
    seeds: list[int]
    every_s: float = DEFAULT_EVERY_S
    over_s: float = DEFAULT_OVER_S
    bin_s: float = DEFAULT_BIN_S
    grid: tuple = STATIC_GRID
    name: str = NAME
    _elapsed: float = field(default=0.0, repr=False)
    _schedule: dict = field(default_factory=dict, repr=False)    # decision time -> target or None

    @property
    def interval_s(self) -> float:
        return self.every_s

    def tuned_at(self, t: float) -> float | None:
        """The target chosen `t` seconds into the replay (None: too little traffic to tune on)."""
        key = round(t, 6)
        if key not in self._schedule:
            # Re-synthesised with the first simulator seed: --seed seeds the traces' own draws too.
            history = observed_history(self.trace, self.begin_s + t, self.over_s + WARMUP_S, self.bin_s,
                                       seed=self.seeds[0])
            warm = min(WARMUP_S, max(0.0, history.meta["span_s"] - self.over_s))
            history.meta["warmup_s"] = warm
            scored = len(history) - int(np.searchsorted(history.arrivals, warm))
            self._schedule[key] = (tune_static(history, self.sim, self.reward, seeds=self.seeds, grid=self.grid)[0]
                                   if scored >= 2 else None)
        return self._schedule[key]

    def first_decision(self, raw: dict) -> float:
        self._elapsed = 0.0
        return self._decide(raw)

    def decide(self, raw: dict) -> float:
        self._elapsed += self.every_s
        return self._decide(raw)

    def _decide(self, raw: dict) -> float:
        target = self.tuned_at(self._elapsed)
        return float(raw["target"]) if target is None else target

    def row_fields(self) -> dict:
        return {"retune_every_s": self.every_s, "retune_over_s": self.over_s, "bin_s": self.bin_s,
                "targets": [self._schedule[k] for k in sorted(self._schedule)]}
