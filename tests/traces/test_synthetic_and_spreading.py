import numpy as np
import pytest

from kpilot.errors import TraceError
from kpilot.traces import load_trace, parse_spec
from kpilot.traces.spreading import spread_whole_seconds


def test_spreading_is_deterministic_and_stays_in_second():
    ts = np.array([5.0, 5.0, 5.0, 6.0, 9.0, 9.0])
    a, b, c = spread_whole_seconds(ts, 1), spread_whole_seconds(ts, 1), spread_whole_seconds(ts, 2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(np.floor(a), ts) and np.all(np.diff(a) > 0)
    assert np.array_equal(spread_whole_seconds(ts + 0.5, 1), ts + 0.5)  # fractional: untouched


def test_burstgpt_spreading_follows_seed(fx):
    p = fx("burstgpt6.csv")
    assert np.array_equal(load_trace(p, seed=7).arrivals, load_trace(p, seed=7).arrivals)
    assert not np.array_equal(load_trace(p, seed=7).arrivals, load_trace(p, seed=8).arrivals)


def test_spec_parsing():
    s = parse_spec("synthetic:bursty:rate=20,duration=3600,seed=1,service=0.5")
    assert s.synthetic == "bursty" and s.path is None
    assert s.options == {"rate": "20", "duration": "3600", "seed": "1", "service": "0.5"}
    f = parse_spec("data/invocations.csv?function=abc123&durations=d.csv")
    assert str(f.path) == "data/invocations.csv" and f.options == {"function": "abc123", "durations": "d.csv"}
    with pytest.raises(TraceError, match="expected key=value"):
        parse_spec("x.csv?top")


@pytest.mark.parametrize("name", ["poisson", "diurnal", "bursty", "demo"])
def test_mean_rate(name):
    t = load_trace(f"synthetic:{name}:rate=20,duration=3600,seed=1")
    assert len(t) / 3600 == pytest.approx(20, rel=0.05)
    assert t.meta["span_s"] == 3600 and np.all(np.diff(t.arrivals) >= 0)
    assert t.service.mean() == pytest.approx(0.5, rel=0.05)


def test_same_seed_same_trace_different_seed_differs():
    a, b = load_trace("synthetic:bursty:seed=3,duration=600"), load_trace("synthetic:bursty:seed=3,duration=600")
    c = load_trace("synthetic:bursty:seed=4,duration=600")
    assert np.array_equal(a.arrivals, b.arrivals) and np.array_equal(a.service, b.service)
    assert not np.array_equal(a.arrivals[:100], c.arrivals[:100])
    assert np.array_equal(load_trace("synthetic:poisson", seed=5).arrivals,
                          load_trace("synthetic:poisson:seed=5").arrivals)


def test_bursty_is_bursty_and_poisson_is_not():
    cv = lambda t: np.diff(t.arrivals).std() / np.diff(t.arrivals).mean()
    assert cv(load_trace("synthetic:bursty:seed=1")) > 1.5
    assert cv(load_trace("synthetic:poisson:seed=1")) == pytest.approx(1.0, abs=0.05)


def test_onoff_has_idle_gaps_beyond_a_minute():
    t = load_trace("synthetic:onoff:seed=2,rate=10")
    gaps = np.diff(t.arrivals)
    assert (gaps > 60).sum() >= 3 and gaps.max() < 260


def test_flash_crowd_spikes_then_decays():
    t = load_trace("synthetic:flash:rate=10,duration=1200,at=600,peak=10,decay=60,seed=1")
    counts, _ = t.per_second(1200)
    assert counts[:600].mean() == pytest.approx(10, rel=0.1)
    assert counts[600:620].mean() > 5 * counts[:600].mean()
    assert counts[1000:].mean() == pytest.approx(10, rel=0.15)


def test_diurnal_rate_follows_the_sine():
    t = load_trace("synthetic:diurnal:rate=20,duration=3600,amplitude=0.8,seed=1")
    counts, _ = t.per_second(3600)
    assert counts[600:1200].mean() > 2.5 * counts[2400:3000].mean()


def test_demo_has_its_idle_gap():
    t = load_trace("synthetic:demo")
    assert not np.any((t.arrivals >= 1500) & (t.arrivals < 1800))
    assert np.diff(t.arrivals).max() >= 290


def test_service_cv_and_bad_keys():
    t = load_trace("synthetic:poisson:service=0.2,cv=2,seed=1")
    assert t.service.std() / t.service.mean() == pytest.approx(2, rel=0.25)
    with pytest.raises(TraceError, match="unknown key"):
        load_trace("synthetic:poisson:colour=1")
    with pytest.raises(TraceError, match="available: poisson"):
        load_trace("synthetic:nope")
    with pytest.raises(TraceError, match="must be positive"):
        load_trace("synthetic:poisson:rate=0")


def test_clumped_arrives_in_clumps_at_the_mean_rate():
    t = load_trace("synthetic:clumped:rate=3,duration=36000,size=40,spread=5,seed=1")
    assert len(t) / 36000 == pytest.approx(3, rel=0.1)
    gaps = np.diff(t.arrivals)
    clumps = np.split(t.arrivals, np.flatnonzero(gaps > 1.0) + 1)
    assert np.median([len(c) for c in clumps]) >= 10          # Poisson at 3 req/s: ~3
    assert gaps.std() / gaps.mean() > 8                        # bursty (Gamma 0.25): ~2
    assert (gaps > 60).sum() >= 20                             # idle stretches: scale-to-zero


@pytest.mark.parametrize("spec, message", [
    ("synthetic:bursty:shape=0", "shape must be at least 0.01"),
    ("synthetic:clumped:shape=-1", "shape must be at least 0.01"),
    ("synthetic:clumped:spread=-2", "spread must be non-negative"),
    ("synthetic:clumped:size=0.5", "size must be at least 1"),
    ("synthetic:poisson:rate=inf", "rate='inf' is not a finite number"),
    ("synthetic:poisson:duration=nan", "duration='nan' is not a finite number"),
    # A billion requests would fill memory for minutes before failing: refused up front.
    ("synthetic:poisson:rate=1e9,duration=1", "about 1e\\+09 requests"),
    ("synthetic:flash:rate=1000,duration=10000,peak=10", "about 1e\\+08 requests"),
])
def test_family_keys_out_of_range_are_one_clear_error(spec, message):
    with pytest.raises(TraceError, match=message):
        load_trace(spec)
