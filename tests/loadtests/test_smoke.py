"""Real Locust, headless, for a few seconds against a fake OIP server on 127.0.0.1."""

import csv
import json
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from loadtests import monitor, runner
from loadtests.report.build import build_report
from loadtests.scenarios import Profile, RunSpec, get_profile
from services.settings import REPO_ROOT, StackSettings
from tests.loadtests.fakes import FakeOIPServer

SPEC = RunSpec("gateway", "closed", "digits-cnn-torch", "onnxruntime", 2, 1)


def aggregated_row(path):
    return next(r for r in csv.DictReader(open(path)) if r["Name"] == "Aggregated")


def test_locust_collects_and_checks_every_response(store, tmp_path):
    with FakeOIPServer(store, "digits-cnn-torch") as srv:
        sampler = monitor.CpuSampler({}).start()
        r = runner.run_locust(SPEC, host=srv.url, store=store, warmup=0.5, window=2.0,
                              out_dir=tmp_path, sampler=sampler)
        sampler.stop()
    assert r["ok"] and r["failures"] == 0 and 10 < r["requests"] < srv.requests
    assert 1.9 < r["window_s"] < 2.5
    assert set(r["served_by"]) == {"onnxruntime"}
    lat = r["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert "loadgen" in r["cpu"]["groups_pct"] and "other_pct" in r["cpu"]
    # Locust's own stats of the window (reset after the warm-up) agree with the recorder's.
    row = aggregated_row(tmp_path / r["csv"])
    assert int(row["Failure Count"]) == 0
    assert abs(int(row["Request Count"]) - r["requests"]) <= 4
    assert (tmp_path / r["csv"].replace("_window_stats", "_stats_history")).exists()


def test_wrong_answers_are_locust_failures(store, tmp_path):
    with FakeOIPServer(store, "digits-cnn-torch", wrong=True) as srv:
        r = runner.run_locust(replace(SPEC, users=1), host=srv.url, store=store, warmup=0.0,
                              window=1.5, out_dir=tmp_path)
    assert r["requests"] > 0 and r["failures"] == r["requests"] and not r["ok"]
    assert list(r["failure_reasons"]) == ["wrong class"]
    failures = list(csv.DictReader(open(tmp_path / r["csv"].replace("_stats", "_failures"))))
    assert [f["Error"] for f in failures] == ["CatchResponseError('wrong class')"]


def test_locust_multi_input_variable_length_requests(token_store, tmp_path):
    """The transformer signature: two INT64 inputs cropped to each sample's mask length, two
    outputs checked on every answer; the ceiling endpoint answers the same checks."""
    spec = RunSpec("gateway", "closed", "digits-transformer-torch", "tflite", 2, 1)
    with FakeOIPServer(token_store, spec.model) as srv:
        r = runner.run_locust(spec, host=srv.url, store=token_store, warmup=0.3, window=1.5,
                              out_dir=tmp_path)
    assert r["ok"] and r["failures"] == 0 and r["requests"] > 10, r.get("failure_reasons")
    lengths = {s["input_ids"][1] for s in srv.shapes}
    assert len(lengths) > 3 and all(s["attention_mask"] == s["input_ids"] for s in srv.shapes)
    prof = replace(get_profile("smoke"), warmup_s=0.3, window_s=1.0)
    r = runner.measure_ceiling(spec.model, 2, 1, store=token_store, profile=prof,
                               out_dir=tmp_path, sampler=None)
    assert r["ok"] and r["failures"] == 0 and r["requests"] > 5


def test_ceiling_endpoint_passes_the_same_checks(store, tmp_path):
    prof = replace(get_profile("smoke"), warmup_s=0.5, window_s=1.5)
    r = runner.measure_ceiling("digits-cnn-keras", 2, 1, store=store, profile=prof,
                               out_dir=tmp_path, sampler=None)
    assert r["ok"] and r["failures"] == 0 and r["requests"] > 10
    assert set(r["served_by"]) == {"ceiling"}


@pytest.fixture
def fake_stack_settings(store):
    ports = [runner.free_port() for _ in range(7)]
    return StackSettings(stack_model_store=store, gateway_port=ports[0], onnxruntime_port=ports[1],
                         tflite_port=ports[2], tfserving_rest_port=ports[3],
                         tfserving_grpc_port=ports[4], torchserve_inference_port=ports[5],
                         torchserve_management_port=ports[6])


def test_bench_end_to_end_against_a_fake_gateway(store, tmp_path, fake_stack_settings,
                                                 monkeypatch):
    monkeypatch.setattr(monitor, "STATE_FILE", tmp_path / "absent.json")
    prof = Profile(name="tiny", models=("digits-cnn-torch",), runtimes=("tflite",), users=(1,),
                   repeats=1, warmup_s=0.3, window_s=1.0, ref_users=1,
                   open_models=("digits-cnn-torch",), open_users=2,
                   direct_models=("digits-cnn-torch",), direct_users=(1,),
                   capacity_models=("digits-cnn-torch",), capacity_max_steps=3,
                   capacity_min_requests=50, capacity_max_window_s=1.0,
                   capacity_warmup_s=0.2, capacity_targets_ms=(("digits-cnn-torch", 250.0),))
    with FakeOIPServer(store, "digits-cnn-torch") as srv:
        settings = fake_stack_settings.model_copy(update={"gateway_port": srv.port})
        path = runner.bench(prof, settings, tmp_path / "out")
    results = json.loads(path.read_text())
    kinds = [(r["via"], r["mode"]) for r in results["runs"]]
    n_steps = len(results["capacity"]["digits-cnn-torch@tflite"]["steps"])
    assert kinds == [("ceiling", "closed"), ("gateway", "closed"), ("gateway", "open")] + \
        [("gateway", "capacity")] * n_steps
    # A capacity step above the fake server's capacity may time out requests: that fails the step,
    # which is the search working; every other run is below saturation and clean.
    assert all(r["ok"] and r["failures"] == 0 for r in results["runs"] if r["mode"] != "capacity")
    # Open-loop runs are Poisson arrivals from this process (the load generator's CPU sampled).
    assert results["runs"][2]["arrivals"] == "poisson"
    # auto encoding: digits bodies are small, so JSON, recorded per run; nothing serves the
    # TFLite runtime's /metrics here, so the closed run has no server-side split (not a failure).
    assert results["encoding"] == "auto"
    assert [r["encoding"] for r in results["runs"][1:3]] == ["json", "json"]
    assert results["runs"][1]["server_time"] is None
    assert "loadgen" in results["runs"][2]["cpu"]["groups_pct"]
    # The capacity search: a generous explicit target (a fake server on a shared machine), the
    # range from the closed-loop peak, at most 3 steps; what deploy's plan reads is recorded.
    cap = results["capacity"]["digits-cnn-torch@tflite"]
    assert cap["target_ms"] == 250.0 and cap["target_basis"] == "set explicitly: 250 ms"
    assert 2 <= n_steps <= 3 and cap["status"] in ("found", "budget", "above-range")
    assert cap["hi"] == pytest.approx(1.5 * cap["closed_peak_rps"], rel=0.01)
    assert results["capacity_at_latency_target"]["digits-cnn-torch@tflite"]["rps"] \
        == cap["capacity_rps"]
    assert results["cpu_sets"]["mode"] in ("shared", "disjoint")
    # Nothing listens on the settings' TFLite port: the direct target is skipped, with the reason.
    (skip,) = results["skipped"]
    assert (skip["via"], skip["runtime"]) == ("direct", "tflite") and "Connect" in skip["reason"]
    assert results["runs"][2]["rate"] == results["open_rates"]["digits-cnn-torch"] > 0
    assert 0 < results["runs"][1]["ceiling_fraction"]
    assert results["tfserving"]["kind"] == "unknown"
    assert "gateway" in results["services"] and results["services"]["gateway"]["startup_s"] is None
    assert results["environment"]["packages"]["locust"]
    # The edge phase ran over the profile's model: the fake store's artifacts have no files.
    edge_rows = {r["key"]: r for r in results["edge"]["models"]["digits-cnn-torch"]["rows"]}
    assert set(edge_rows) == {"tflite", "onnx", "executorch"}
    assert all("does not exist" in r["measured"]["error"] for r in edge_rows.values())
    # A sparse bench (one model, no torch/keras pair) still makes a whole report.
    html = build_report(path)
    assert "<strong>" in html.read_text() and (path.parent / "report.md").exists()
    assert (path.parent / "plots" / "latency_digits-cnn-torch.png").exists()
    # The report opens with the model's ranking; only TFLite was measured, the rest say why not.
    md = (path.parent / "report.md").read_text()
    assert md.split("\n## ")[1].startswith("Capacity at a latency target")
    assert md.split("\n## ")[2].startswith("Your model: digits-cnn-torch")
    assert "## Load generator's share of the CPU" in md
    assert "**Recommendation: TFLite**" in md and "not in this bench's runtimes" in md


def test_bench_says_the_stack_is_not_up(tmp_path, fake_stack_settings):
    with pytest.raises(runner.BenchError, match="make up"):
        runner.bench(get_profile("smoke"), fake_stack_settings, tmp_path)
    env = {**runner.child_env(), "GATEWAY_PORT": str(fake_stack_settings.gateway_port)}
    out = subprocess.run([sys.executable, "-m", "loadtests", "bench", "--profile", "smoke",
                          "--out", str(tmp_path)], capture_output=True, text=True, env=env,
                         cwd=REPO_ROOT, timeout=60)
    assert out.returncode == 2
    assert "the stack is not up" in out.stderr and "make up" in out.stderr


def test_ui_serves_locust_web_ui_on_loopback(store):
    port = runner.free_port()
    env = {**runner.child_env(), "STACK_MODEL_STORE": str(store)}
    proc = subprocess.Popen([sys.executable, "-m", "loadtests", "ui", "--web-port", str(port)],
                            env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        import httpx

        deadline = time.monotonic() + 30
        while True:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.2)
        assert page.status_code == 200 and "locust" in page.text.lower()
    finally:
        runner.stop(proc)
