"""Cold-start models (`--cold-start`): what each spec draws.

A LogNormal with mean m and s.d. s has sigma^2 = ln(1 + (s/m)^2) and mu = ln m - sigma^2/2, so its
median exp(mu) = m / sqrt(1 + (s/m)^2), below its mean. Draws are seeded, so each check is
deterministic; the tolerances are still several standard errors wide so that they hold for any
seed, and the checks fail clearly for a model off by the sigma^2/2 term (median = mean).
"""

import math

import numpy as np
import pytest

from kpilot.errors import ConfigError
from kpilot.sim.coldstart import MAX_COLD_START_S, parse_cold_start
from kpilot.sim.config import PodConfig

N = 200_000


def test_default_huawei_preset_has_the_published_mean_and_median():
    model = parse_cold_start(PodConfig().cold_start)
    assert PodConfig().cold_start == "huawei"
    draws = model.sample(N, seed=1)
    # Median 3.24 / sqrt(1 + (7.10/3.24)^2) = 1.345 s; its standard error here is ~0.5 %.
    assert np.median(draws) == pytest.approx(1.345, rel=0.03)
    # Mean 3.24 s: standard error 7.10/sqrt(N) ~ 0.5 %; the 300 s cap removes ~0.003 s.
    assert np.mean(draws) == pytest.approx(3.24, rel=0.05)
    assert np.std(draws) == pytest.approx(7.10, rel=0.15)   # a heavy tail: its s.d. converges slowly
    assert draws.max() <= MAX_COLD_START_S


@pytest.mark.parametrize("mean, sd", [(2.0, 1.0), (1.0, 0.8), (10.0, 3.0)])
def test_lognormal_spec_draws_its_mean_sd_and_median(mean, sd):
    draws = parse_cold_start(f"lognormal:{mean},{sd}").sample(N, seed=2)
    median = mean / math.sqrt(1.0 + (sd / mean) ** 2)
    assert np.median(draws) == pytest.approx(median, rel=0.02)
    assert np.mean(draws) == pytest.approx(mean, rel=0.02)
    assert np.std(draws) == pytest.approx(sd, rel=0.05)


def test_draws_are_capped_at_300_seconds():
    # Mean 300 s with a huge spread: a large share of draws would exceed the cap.
    draws = parse_cold_start("lognormal:300,30000").sample(10_000, seed=3)
    assert draws.max() == MAX_COLD_START_S
    assert np.mean(draws == MAX_COLD_START_S) > 0.01


def test_fixed_and_instant_are_constant():
    assert np.all(parse_cold_start("fixed:2.5").sample(100, seed=4) == 2.5)
    assert np.all(parse_cold_start("instant").sample(100, seed=4) == 0.0)
    assert parse_cold_start("fixed:2.5").mean_s == 2.5


@pytest.mark.parametrize("spec", ["fixed:-1", "fixed:301", "lognormal:3", "lognormal:0,1", "nonsense"])
def test_bad_specs_are_refused_naming_the_option(spec):
    with pytest.raises(ConfigError, match="cold-start"):
        parse_cold_start(spec)
