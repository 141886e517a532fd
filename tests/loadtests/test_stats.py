"""The ratio interval and its reading (loadtests/report/stats.py) on synthetic data."""

import numpy as np
import pytest

from loadtests.report import stats
from loadtests.report.stats import Method


def test_the_interval_covers_the_true_ratio_at_about_the_nominal_rate():
    """Monte Carlo: 300 pairs of benches, lognormal window-to-window noise of 15% and one
    repeat in ten on a halved machine; A is truly 1.3x B. Fixed seed: the same figure each run."""
    rng = np.random.default_rng(11)
    method = Method(resamples=1000)
    for n, trials in ((5, 300), (8, 200)):
        covered = 0
        for _ in range(trials):
            a, b = (np.exp(rng.normal(0, 0.15, n)) * np.where(rng.random(n) < 0.1, 0.5, 1)
                    for _ in range(2))
            r = stats.ratio(list(1.3 * a), list(b), True, method)
            covered += r.lo <= 1.3 <= r.hi
        assert 0.88 <= covered / trials <= 0.99, (n, covered / trials)


def test_with_pooled_noise_three_repeats_cover_at_the_nominal_rate():
    """The same noise, 3 repeats a side, and each runtime's noise pooled over 10 points of the
    bench (what verdict.noise_pools does): the interval no longer rests on 3 windows alone."""
    rng = np.random.default_rng(12)
    method = Method(resamples=1000)

    def windows(k):
        return np.exp(rng.normal(0, 0.15, k)) * np.where(rng.random(k) < 0.1, 0.5, 1)

    covered, pooled, alone, trials = 0, [], [], 300
    for _ in range(trials):
        pools = tuple(stats.residual_pool([list(windows(3)) for _ in range(10)]) for _ in "ab")
        a, b = list(1.3 * windows(3)), list(windows(3))
        r = stats.ratio(a, b, True, method, pools)
        covered += r.lo <= 1.3 <= r.hi
        pooled.append(np.log(r.hi / r.lo))
        r = stats.ratio(a, b, True, method)
        alone.append(np.log(r.hi / r.lo))
    assert 0.9 <= covered / trials <= 0.99, covered / trials
    # The width depends far less on the luck of 3 windows (measured: 0.19 vs 0.40): the
    # verdict of two benches then differs less often.
    assert np.std(pooled) < 0.6 * np.std(alone)


def test_residual_pool_is_centred_and_unshrunk():
    pool = stats.residual_pool([[100.0, 110.0, 90.0], [50.0, 50.0], [7.0]])  # 1 repeat: left out
    assert pool.size == 5 and abs(pool[:3].sum()) < 1e-12 and (pool[3:] == 0).all()
    x = np.log([100.0, 110.0, 90.0])
    assert np.isclose(np.std(pool[:3]), np.std(x) * np.sqrt(3 / 2))


def test_outcomes_from_a_side():
    m = Method()
    fast = stats.ratio([130, 131, 129], [100, 101, 99], True, m)
    assert fast.outcome == stats.FASTER
    assert fast.text(m) == f"1.30× faster [{fast.lo:.2f}–{fast.hi:.2f}]"
    slow = stats.ratio([100, 101, 99], [130, 131, 129], True, m)
    assert slow.outcome == stats.SLOWER and slow.text(m).startswith("1.30× slower [")
    lat = stats.ratio([2.0, 2.1, 1.9], [1.0, 1.05, 0.95], False, m)  # A's latency is double
    assert lat.outcome == stats.SLOWER
    tie = stats.ratio([100, 101, 99], [102, 100, 101], True, m)
    assert tie.outcome == stats.TIE and tie.text(m).startswith("tie (within 10%): ")


def test_a_ratio_near_the_threshold_asks_for_more_repeats_the_narrower_its_room():
    m = Method()
    near = stats.ratio([111, 100, 122], [100, 95, 105], True, m)  # about 1.11x, noisy
    far = stats.ratio([150, 130, 170], [100, 95, 105], True, m)
    assert near.outcome == stats.INCONCLUSIVE
    assert far.outcome in (stats.FASTER, stats.INCONCLUSIVE)
    if far.outcome == stats.INCONCLUSIVE:
        assert (near.more or 10**9) > far.more


def test_settings_are_checked_and_read_from_the_environment():
    assert Method.from_env({"BENCH_NEGLIGIBLE": "0.05"}).negligible == 0.05
    assert Method.from_env({}).negligible == 0.10 and Method.from_env({}).confidence == 0.95
    with pytest.raises(ValueError, match="BENCH_CONFIDENCE='high' is not a number"):
        Method.from_env({"BENCH_CONFIDENCE": "high"})
    with pytest.raises(ValueError, match="negligible=10.0 must be between 0 and 1"):
        Method(negligible=10.0)
    with pytest.raises(ValueError, match="positive figures"):
        stats.ratio([0.0, 1.0, 1.0], [1.0, 1.0, 1.0], True, Method())
