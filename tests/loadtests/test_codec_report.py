"""Server-side time from the runtimes' histograms: the scrape's parsing and difference, and the
report's "codec vs inference" section from synthetic runs."""

import json

import pytest

from loadtests import server_metrics
from loadtests.report import codec_report
from loadtests.report.build import build_report
from services.common.modelserver.metrics import Metrics
from services.settings import StackSettings
from tests.loadtests import synthetic


def _observe(m: Metrics, model: str, requests: int, decode: float, encode: float,
             batch_s: float, batch: int, request: float) -> None:
    for _ in range(requests):
        m.codec.labels(model, "decode").observe(decode)
        m.codec.labels(model, "encode").observe(encode)
        m.latency.labels(model).observe(request)
    for _ in range(requests // batch):
        m.inference.labels(model).observe(batch_s)
        m.batch_size.labels(model).observe(batch)


def test_a_scrape_reads_one_models_histograms_and_a_run_is_their_difference():
    m = Metrics()
    _observe(m, "a", 4, 0.003, 0.001, 0.010, 2, 0.020)
    _observe(m, "other", 8, 1.0, 1.0, 1.0, 1, 1.0)  # another model: not counted
    m.codec.labels("a:1", "decode").observe(0.5)  # the stand-in's "<name>:<version>" is "a"
    m.codec.labels("a:int8-static", "decode").observe(9.0)  # a variant is another model
    before = server_metrics.parse(m.render().decode(), "a")
    assert before["decode"] == pytest.approx([4 * 0.003 + 0.5, 5])
    assert before["inference"] == pytest.approx([0.020, 2]) and before["batch_size"] == [4, 2]
    _observe(m, "a", 2, 0.005, 0.002, 0.008, 2, 0.030)
    run = server_metrics.delta(before, server_metrics.parse(m.render().decode(), "a"))
    assert run["decode"] == pytest.approx([0.010, 2]) and run["encode"] == pytest.approx([0.004, 2])
    assert run["request"] == pytest.approx([0.060, 2]) and run["batch_size"] == [2, 1]
    assert server_metrics.delta(None, before) is None


def test_where_each_runtime_serves_its_metrics():
    s = StackSettings(onnxruntime_port=9100, tfserving_rest_port=9501)
    assert server_metrics.metrics_url("onnxruntime", s) == "http://127.0.0.1:9100/metrics"
    assert server_metrics.metrics_url("tflite:int8-static", s).endswith("/metrics")
    assert server_metrics.metrics_url("tfserving", s) == \
        "http://127.0.0.1:9501/monitoring/prometheus/metrics"
    assert server_metrics.metrics_url("torchserve", s) is None
    assert server_metrics.scrape(None, "a") is None
    assert server_metrics.scrape("http://127.0.0.1:9/metrics", "a", timeout=0.5) is None


def test_split_of_one_model_in_ms_per_request():
    t = {"decode": [0.012, 4], "encode": [0.004, 4], "inference": [0.020, 2],
         "batch_size": [4, 2], "request": [0.080, 4]}
    s = codec_report.split(t)
    assert s["decode"] == pytest.approx(3.0) and s["encode"] == pytest.approx(1.0)
    assert s["per_batch"] == pytest.approx(10.0) and s["per_sample"] == pytest.approx(5.0)
    assert s["batch_mean"] == 2 and s["request"] == pytest.approx(20.0)
    assert s["rest"] == pytest.approx(20.0 - 3 - 1 - 10)
    assert s["codec_share"] == pytest.approx(4 / 20)
    # No request histogram (the TF Serving stand-in): codec share of codec + inference.
    no_request = codec_report.split({k: v for k, v in t.items() if k != "request"})
    assert no_request["rest"] is None and no_request["codec_share"] == pytest.approx(4 / 14)


def _with_server_time(results: dict) -> dict:
    for r in results["runs"]:
        if (r["via"], r["mode"]) != ("gateway", "closed"):
            continue
        if r["model"].startswith("mobilenetv2"):
            r["encoding"] = "binary"
            if r["runtime"] == "onnxruntime":  # 5 ms decode, 25 ms inference, 0.5 ms encode
                n = 100
                r["server_time"] = {"decode": [0.005 * n, n], "encode": [0.0005 * n, n],
                                    "inference": [0.025 * n, n], "batch_size": [n, n],
                                    "request": [0.0325 * n, n]}
        else:
            r["encoding"] = "json"
    return results


def test_report_section_says_where_the_servers_time_goes(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({**_with_server_time(synthetic.results(repeats=2)),
                                "encoding": "auto"}))
    build_report(path)
    md = (tmp_path / "report.md").read_text()
    section = md.split(f"## {codec_report.TITLE}")[1].split("\n## ")[0]
    rows = {tuple(c.strip() for c in line.split("|")[1:4]): line for line in section.splitlines()
            if line.startswith("| ") and "---" not in line}
    # 2 repeats x 2 user counts x 100 requests; 5 + 0.5 of 32.5 ms = 17% codec.
    ort = rows[("mobilenetv2-torch", "ONNX Runtime", "OIP binary tensor extension")]
    cells = [c.strip() for c in ort.split("|")[4:-1]]
    assert cells == ["400", "5.000", "25.000 (x1.00)", "25.000", "0.500", "2.000", "32.500",
                     "**17%**"]
    ts = rows[("digits-cnn-torch", "TorchServe", "OIP JSON")]
    assert "not measured: TorchServe's codec runs in the .mar's handler" in ts
    assert "not measured: the runtime's metrics could not be read" in \
        rows[("digits-cnn-torch", "TFLite", "OIP JSON")]
    assert "**Tensor encoding: auto**" in md
    summary = md.split("## Summary")[1].split("\n## ")[0]
    assert "OIP binary tensor extension: mobilenetv2-keras@onnxruntime (gateway)" in summary
    assert "OIP JSON: digits-cnn-keras@onnxruntime (gateway)" in summary


def test_no_section_without_closed_gateway_runs():
    assert codec_report.codec_section({"runs": []}, str) is None
    assert "not recorded" in codec_report.encoding_line({"runs": []})
