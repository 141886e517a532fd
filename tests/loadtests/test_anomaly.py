import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from loadtests import anomaly, stackrun
from tests.loadtests.fakes import FakeOIPServer


def test_kingman_is_the_service_time_when_idle_and_grows_with_burstiness_and_load():
    assert anomaly.kingman_ms(2.0, 0.5, 1e-9, 1.0) == pytest.approx(2.0)
    poisson, even = anomaly.kingman_ms(2.0, 0.5, 0.5, 1.0), anomaly.kingman_ms(2.0, 0.5, 0.5, 0.0)
    assert poisson == pytest.approx(2.0 * (1 + 1.0 * 0.75)) and even == pytest.approx(2.5)
    assert anomaly.kingman_ms(2.0, 0.5, 0.9, 1.0) == pytest.approx(2.0 * (1 + 9 * 0.75))
    assert anomaly.kingman_ms(2.0, 0.5, 1.0, 1.0) is None


def test_histogram_means_between_two_scrapes():
    reg = CollectorRegistry()
    h = Histogram("gateway_request_duration_seconds", "x", ["model"], registry=reg)
    h.labels("a").observe(0.010)
    before = anomaly.histogram_sums(generate_latest(reg).decode())
    h.labels("a").observe(0.002)
    h.labels("b").observe(0.004)  # label sets are summed
    after = anomaly.histogram_sums(generate_latest(reg).decode())
    assert anomaly.mean_of(before, after, "gateway_request_duration_seconds", 1000.0) == \
        pytest.approx(3.0)
    assert anomaly.mean_of(after, after, "gateway_request_duration_seconds") is None


def test_single_stream_sends_one_request_at_a_time(store):
    with FakeOIPServer(store, "digits-cnn-torch") as srv:
        stack = stackrun.Stack(srv.url, store, store)
        probe = anomaly.Probe(stack, "digits-cnn-torch", "onnxruntime")
        lat = probe.single_stream(0.5)
    assert lat.size > 10 and np.all(lat > 0)
    # One in flight at a time: the latencies add up to at most the time spent (the last request
    # may end after it); concurrent requests would overlap and add up to more.
    assert lat.sum() <= 500 + lat.max()


def test_fractions_must_stay_below_saturation():
    with pytest.raises(SystemExit):
        anomaly.parse_args(["--fractions", "0.5,1.0"])
