import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from loadtests import anomaly, server_metrics, stackrun
from tests.loadtests.fakes import FakeOIPServer


def test_kingman_is_the_service_time_when_idle_and_grows_with_burstiness_and_load():
    assert anomaly.kingman_ms(2.0, 0.5, 1e-9, 1.0) == pytest.approx(2.0)
    poisson, even = anomaly.kingman_ms(2.0, 0.5, 0.5, 1.0), anomaly.kingman_ms(2.0, 0.5, 0.5, 0.0)
    assert poisson == pytest.approx(2.0 * (1 + 1.0 * 0.75)) and even == pytest.approx(2.5)
    assert anomaly.kingman_ms(2.0, 0.5, 0.9, 1.0) == pytest.approx(2.0 * (1 + 9 * 0.75))
    assert anomaly.kingman_ms(2.0, 0.5, 1.0, 1.0) is None


def test_server_means_between_two_scrapes_are_the_probed_models():
    reg = CollectorRegistry()
    gw = Histogram("gateway_request_duration_seconds", "x", ["endpoint", "model", "runtime"],
                   registry=reg)
    rt = Histogram("modelserver_inference_duration_seconds", "x", ["model"], registry=reg)
    gw.labels("infer", "a", "onnxruntime").observe(0.010)
    snap = lambda: server_metrics.parse(generate_latest(reg).decode(), "a")  # noqa: E731
    before = {"gateway": snap(), "runtime": snap()}
    gw.labels("infer", "a", "onnxruntime").observe(0.002)
    gw.labels("v2-infer", "a", "onnxruntime").observe(0.004)  # the model's label sets add up
    gw.labels("infer", "b", "onnxruntime").observe(1.0)  # another model's: not counted
    rt.labels("a").observe(0.001)
    after = {"gateway": snap(), "runtime": snap()}
    means = anomaly.Probe.server_means(before, after)
    assert means["gateway_mean_ms"] == pytest.approx(3.0)
    assert means["inference_mean_ms"] == pytest.approx(1.0)
    assert means["runtime_mean_ms"] is None and means["mean_batch"] is None  # nothing observed
    assert anomaly.Probe.server_means(after, after)["gateway_mean_ms"] is None


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
