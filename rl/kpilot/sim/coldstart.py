"""Cold-start models: how long a new pod takes from creation to ready.

Spec strings (the `--cold-start` option):
  fixed:S              every pod takes S seconds
  lognormal:MEAN,SD    LogNormal with that mean and standard deviation (seconds)
  PATH                 a Huawei 2025 cold-start table: the empirical distribution of
                       podAllocation + deployCode + deployDependency + scheduling
  huawei               (default) LogNormal(mean 3.24 s, sd 7.10 s), the across-region fit published
                       with the Huawei 2025 trace (EuroSys'25, "Serverless Cold Starts and Where to
                       Find Them"): median 1.35 s, p99 ~ 30 s
  huawei-r2            LogNormal(mean 1.0 s, sd 0.8 s): Region 2 (pod allocation dominated, up to ~3 s)
  instant              fixed:0 (no cold start; isolates the autoscaler in tests)
Samples are capped at `MAX_COLD_START_S` so one absurd draw cannot dominate a replay.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kpilot.errors import ConfigError

KIND_FIXED, KIND_LOGNORMAL, KIND_EMPIRICAL = 0, 1, 2
MAX_COLD_START_S = 300.0
MAX_SD_S = 100 * MAX_COLD_START_S      # far above any measured spread (Huawei's fit: 7.1 s)
PRESETS = {
    "huawei": "lognormal:3.24,7.10",
    "huawei-r2": "lognormal:1.0,0.8",
    "instant": "fixed:0",
}


@dataclass(frozen=True)
class ColdStartModel:
    kind: int
    p1: float = 0.0
    p2: float = 0.0
    samples: np.ndarray = field(default_factory=lambda: np.zeros(1))
    spec: str = ""

    @property
    def mean_s(self) -> float:
        if self.kind == KIND_FIXED:
            return self.p1
        if self.kind == KIND_LOGNORMAL:
            return self.p1
        return float(np.mean(self.samples))

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """Draw n cold starts with numpy (for tests and inspection; the engine has its own RNG)."""
        rng = np.random.default_rng(seed)
        if self.kind == KIND_FIXED:
            out = np.full(n, self.p1)
        elif self.kind == KIND_LOGNORMAL:
            mu, sigma = lognormal_params(self.p1, self.p2)
            out = rng.lognormal(mu, sigma, n)
        else:
            out = self.samples[rng.integers(0, len(self.samples), n)]
        return np.minimum(out, MAX_COLD_START_S)


def lognormal_params(mean: float, sd: float) -> tuple[float, float]:
    """(mu, sigma) of the underlying normal for a LogNormal with this mean and sd."""
    sigma2 = np.log1p((sd / mean) ** 2)
    return float(np.log(mean) - sigma2 / 2.0), float(np.sqrt(sigma2))


def parse_cold_start(spec: str) -> ColdStartModel:
    """Parse a `--cold-start` spec. Raises ConfigError naming the option on bad input."""
    raw = spec.strip()
    spec = PRESETS.get(raw, raw)
    try:
        if spec.startswith("fixed:"):
            s = float(spec.split(":", 1)[1])
            if not (0.0 <= s <= MAX_COLD_START_S):
                raise ValueError(f"seconds must be in [0, {MAX_COLD_START_S:g}]")
            return ColdStartModel(KIND_FIXED, s, spec=raw)
        if spec.startswith("lognormal:"):
            parts = spec.split(":", 1)[1].split(",")
            if len(parts) != 2:
                raise ValueError("expected lognormal:MEAN,SD (seconds), e.g. lognormal:3.24,7.1")
            mean, sd = float(parts[0]), float(parts[1])
            # Finite and bounded: an infinite sd drew NaN (a pod never ready), a huge one overflowed.
            if not (0 < mean <= MAX_COLD_START_S and 0 < sd <= MAX_SD_S):
                raise ValueError(f"mean must be in (0, {MAX_COLD_START_S:g}] and sd in (0, {MAX_SD_S:g}] seconds")
            return ColdStartModel(KIND_LOGNORMAL, mean, sd, spec=raw)
    except ValueError as exc:
        raise ConfigError(f"bad cold-start model {raw!r}: {exc}", option="--cold-start") from None
    path = Path(spec)
    if path.exists():
        from kpilot.traces.coldstart import load_coldstart_table

        samples = np.asarray(load_coldstart_table(path), dtype=np.float64)
        return ColdStartModel(KIND_EMPIRICAL, samples=np.minimum(samples, MAX_COLD_START_S), spec=raw)
    if "/" in spec or path.suffix.lower() == ".csv":    # meant as a table: not there, and where it was looked for
        where = "" if path.is_absolute() else f" (a relative path is read from the working directory, {Path.cwd()})"
        raise ConfigError(f"no cold-start table {raw!r}{where}", option="--cold-start")
    raise ConfigError(f"bad cold-start model {raw!r}: expected fixed:S, lognormal:MEAN,SD, "
                      f"{', '.join(PRESETS)} or a Huawei cold-start table path", option="--cold-start")
