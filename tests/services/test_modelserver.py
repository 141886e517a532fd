"""The ONNX Runtime and TFLite OIP v2 servers (one shared core), run as real subprocesses against a
tiny model store built here; plus a check of every model of the real store (fixture real_store)."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from model_store.manifest import (
    Artifact,
    Manifest,
    Parity,
    Signature,
    Source,
    TensorSpec,
    load_store,
)
from tests.conftest import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
RUNTIMES = {"onnxruntime": "onnx", "tflite": "tflite"}  # server -> artifact format
LINEAR = "tiny-linear"  # onnx + tflite: "input" [-1, 4] -> "logits" [-1, 3]
ADD = "tiny-add"  # onnx only: "a", "b" [-1, 2, 3] -> "sum", "prod" [-1, 2, 3]
BROKEN = "tiny-broken"  # onnx + tflite artifacts that are not models: fail to load
RUNTIMES_OF = {v: k for k, v in RUNTIMES.items()}


# --- the tiny model store -----------------------------------------------------------------------


def _onnx_model(path: Path, nodes, inputs, outputs, initializers=()) -> None:
    from onnx import TensorProto, helper, numpy_helper, save

    def info(name, shape):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *shape])

    graph = helper.make_graph(
        [helper.make_node(op, i, o) for op, i, o in nodes],
        "test",
        [info(n, s) for n, s in inputs],
        [info(n, s) for n, s in outputs],
        initializer=[numpy_helper.from_array(v, k) for k, v in initializers],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # what onnxruntime reads, whatever the onnx package writes by default
    path.parent.mkdir(parents=True, exist_ok=True)
    save(model, str(path))


def build_tflite(path: str, weights: str) -> None:
    """Dense(3) Keras model -> TFLite. Run in a subprocess: TensorFlow is slow to import."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import keras
    import tensorflow as tf

    w = np.load(weights)
    inp = keras.Input(shape=(4,), name="input")
    model = keras.Model(inp, keras.layers.Dense(3, name="logits")(inp))
    model.layers[-1].set_weights([w["W"], w["b"]])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())


def _artifact(model_dir: Path, fmt: str, route: str) -> Artifact:
    rel = f"{fmt}/1/model.{fmt}"
    data = (model_dir / rel).read_bytes()
    return Artifact(
        format=fmt, version=1, path=rel, bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
        route=route, converters={}, export_seconds=0.0,
        parity=Parity(ok=True, runtime=RUNTIMES_OF[fmt], batch_sizes=[1, 32], tolerance=1e-4,
                      max_abs_error=0.0),
    )


def _save(store: Path, name: str, sig: Signature, fmts: dict[str, str], inputs, outputs) -> None:
    d = store / name
    (d / "reference").mkdir(parents=True, exist_ok=True)
    np.save(d / "reference/inputs.npy", inputs)
    np.save(d / "reference/outputs.npy", outputs)
    Manifest(
        name=name,
        source=Source(framework="keras", framework_version="test", architecture="tiny test model",
                      weights="random-init", note="built by tests/services/test_modelserver.py"),
        signature=sig,
        artifacts={fmt: _artifact(d, fmt, route) for fmt, route in fmts.items()},
    ).save(d)


def _spec(name: str, shape: list[int]) -> TensorSpec:
    return TensorSpec(name=name, datatype="FP32", shape=shape)


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("model_store")
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    x = rng.standard_normal((32, 4)).astype(np.float32)

    d = store / LINEAR
    _onnx_model(d / "onnx/1/model.onnx", [("MatMul", ["input", "W"], ["xw"]),
                                          ("Add", ["xw", "b"], ["logits"])],
                [("input", [4])], [("logits", [3])], [("W", w), ("b", b)])
    np.savez(store / "weights.npz", W=w, b=b)
    built = subprocess.run(
        [sys.executable, "-c", "from tests.services.test_modelserver import build_tflite; "
         f"build_tflite({str(d / 'tflite/1/model.tflite')!r}, {str(store / 'weights.npz')!r})"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
    )
    assert built.returncode == 0, f"TFLite conversion failed:\n{built.stderr[-3000:]}"
    sig = Signature(inputs=[_spec("input", [-1, 4])], outputs=[_spec("logits", [-1, 3])])
    _save(store, LINEAR, sig, {"onnx": "onnx.helper", "tflite": "keras -> TFLiteConverter"},
          x, x @ w + b)

    d = store / ADD
    _onnx_model(d / "onnx/1/model.onnx",
                [("Add", ["a", "b"], ["sum"]), ("Mul", ["a", "b"], ["prod"])],
                [("a", [2, 3]), ("b", [2, 3])], [("sum", [2, 3]), ("prod", [2, 3])])
    sig = Signature(inputs=[_spec("a", [-1, 2, 3]), _spec("b", [-1, 2, 3])],
                    outputs=[_spec("sum", [-1, 2, 3]), _spec("prod", [-1, 2, 3])])
    a = rng.standard_normal((32, 2, 3)).astype(np.float32)
    _save(store, ADD, sig, {"onnx": "onnx.helper"}, a, a + a)

    d = store / BROKEN
    for fmt in RUNTIMES.values():
        (d / f"{fmt}/1").mkdir(parents=True)
        (d / f"{fmt}/1/model.{fmt}").write_bytes(b"not a model")
    _save(store, BROKEN, sig, {"onnx": "none", "tflite": "none"}, a, a)
    return store


# --- running a server ---------------------------------------------------------------------------


@dataclass
class Server:
    runtime: str
    port: int
    proc: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def run_server(runtime: str, store: Path, log_dir: Path, **env: str) -> Iterator[Server]:
    port = free_port()
    log = log_dir / f"{runtime}-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{runtime}", "--port", str(port),
             "--model-store", str(store)],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **env},
            stdout=out, stderr=subprocess.STDOUT,
        )
    server = Server(runtime, port, proc, log)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{runtime} exited with {proc.returncode}:\n{server.output()}")
        try:
            return httpx.get(f"{server.url}/v2/health/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(ready, f"{runtime} to become ready", timeout=120)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session", params=list(RUNTIMES))
def server(request, store, tmp_path_factory) -> Iterator[Server]:
    with run_server(request.param, store, tmp_path_factory.mktemp("logs")) as srv:
        yield srv


# --- client helpers -----------------------------------------------------------------------------


def json_request(inputs: dict[str, np.ndarray], **extra: Any) -> bytes:
    tensors = [
        {"name": k, "shape": list(v.shape), "datatype": "FP32", "data": v.ravel().tolist()}
        for k, v in inputs.items()
    ]
    return orjson.dumps({"inputs": tensors, **extra})


def infer(srv: Server, model: str, inputs: dict[str, np.ndarray], **extra: Any) -> dict:
    r = httpx.post(f"{srv.url}/v2/models/{model}/infer", content=json_request(inputs, **extra),
                   timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def outputs_of(body: dict) -> dict[str, np.ndarray]:
    return {
        o["name"]: np.asarray(o["data"], np.float32).reshape(o["shape"]) for o in body["outputs"]
    }


def metric(srv: Server, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    text = httpx.get(f"{srv.url}/metrics", timeout=10).text
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


def reference(store: Path, model: str) -> tuple[np.ndarray, np.ndarray]:
    x, y, _ = load_store(store)[model].load_reference(store)
    return x, y


# --- metadata and inference ---------------------------------------------------------------------


def test_server_metadata_and_health(server: Server) -> None:
    meta = httpx.get(f"{server.url}/v2").json()
    assert meta["name"] == server.runtime
    assert meta["version"]
    assert "binary_tensor_data" in meta["extensions"]
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


@pytest.mark.parametrize("path", ["", "/versions/1"])
def test_model_metadata(server: Server, path: str) -> None:
    r = httpx.get(f"{server.url}/v2/models/{LINEAR}{path}")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "name": LINEAR,
        "versions": ["1"],
        "platform": server.runtime,
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 3]}],
    }
    assert httpx.get(f"{server.url}/v2/models/{LINEAR}{path}/ready").json()["ready"] is True


def test_start_up_log(server: Server) -> None:
    log = server.output()
    assert f"loaded model {LINEAR} version 1 ({server.runtime}" in log
    assert f"on http://127.0.0.1:{server.port}" in log


@pytest.mark.parametrize("n", [1, 32])
def test_infer_matches_reference(server: Server, store: Path, n: int) -> None:
    x, y = reference(store, LINEAR)
    body = infer(server, LINEAR, {"input": x[:n]}, id=f"req-{n}")
    assert body["model_name"] == LINEAR
    assert body["model_version"] == "1"
    assert body["id"] == f"req-{n}"
    [out] = body["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("logits", "FP32", [n, 3])
    np.testing.assert_allclose(outputs_of(body)["logits"], y[:n], atol=1e-4)


def test_infer_versioned_path(server: Server, store: Path) -> None:
    x, y = reference(store, LINEAR)
    r = httpx.post(f"{server.url}/v2/models/{LINEAR}/versions/1/infer",
                   content=json_request({"input": x[:2]}))
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(outputs_of(r.json())["logits"], y[:2], atol=1e-4)


def test_binary_extension_raw(server: Server, store: Path) -> None:
    x, y = reference(store, LINEAR)
    header = orjson.dumps({
        "inputs": [{"name": "input", "shape": [5, 4], "datatype": "FP32",
                    "parameters": {"binary_data_size": 5 * 4 * 4}}],
        "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
    })
    r = httpx.post(f"{server.url}/v2/models/{LINEAR}/infer", content=header + x[:5].tobytes(),
                   headers={"Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    head = orjson.loads(r.content[:n])
    [out] = head["outputs"]
    assert out["shape"] == [5, 3] and out["parameters"]["binary_data_size"] == 5 * 3 * 4
    got = np.frombuffer(r.content[n:], np.float32).reshape(5, 3)
    np.testing.assert_allclose(got, y[:5], atol=1e-4)


def test_tritonclient(server: Server, store: Path) -> None:
    import tritonclient.http as tc

    x, y = reference(store, LINEAR)
    client = tc.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        assert client.is_server_ready() and client.is_model_ready(LINEAR)
        for binary in (True, False):
            inp = tc.InferInput("input", [7, 4], "FP32")
            inp.set_data_from_numpy(x[:7], binary_data=binary)
            result = client.infer(LINEAR, [inp], outputs=[
                tc.InferRequestedOutput("logits", binary_data=binary)])
            np.testing.assert_allclose(result.as_numpy("logits"), y[:7], atol=1e-4)
    finally:
        client.close()


def test_multi_input_and_output_selection(server: Server, store: Path) -> None:
    if server.runtime != "onnxruntime":
        return  # the two-input model has no TFLite artifact
    a, _ = reference(store, ADD)
    b = a[::-1].copy()
    body = infer(server, ADD, {"a": a[:3], "b": b[:3]}, outputs=[{"name": "prod"}])
    assert [o["name"] for o in body["outputs"]] == ["prod"]
    np.testing.assert_allclose(outputs_of(body)["prod"], a[:3] * b[:3], atol=1e-5)
    both = outputs_of(infer(server, ADD, {"b": b[:1], "a": a[:1]}))
    np.testing.assert_allclose(both["sum"], a[:1] + b[:1], atol=1e-5)


# --- bad requests -------------------------------------------------------------------------------

X1 = np.zeros((1, 4), np.float32)
A1 = np.zeros((1, 2, 3), np.float32)


def _tensor(name="input", shape=(1, 4), datatype="FP32", data=None) -> dict:
    return {"name": name, "shape": list(shape), "datatype": datatype,
            "data": [0.0] * int(np.prod(shape)) if data is None else data}


# (id, model, body, headers, status, words the error must contain, runtimes it applies to)
ERROR_CASES = [
    ("unknown-model", "nope", json_request({"input": X1}), {}, 404, ["unknown model 'nope'"], None),
    ("unknown-version", f"{LINEAR}/versions/7", json_request({"input": X1}), {}, 404,
     ["no version '7'"], None),
    ("onnx-only-model", ADD, json_request({"a": A1, "b": A1}), {}, 404, ["unknown model"],
     {"tflite"}),
    ("failed-to-load", BROKEN, json_request({"a": A1, "b": A1}), {}, 503, ["failed to load"], None),
    ("not-json", LINEAR, b"{nope", {}, 400, ["not valid JSON"], None),
    ("not-an-object", LINEAR, b"[1, 2]", {}, 400, ["'inputs'"], None),
    ("no-inputs", LINEAR, b"{}", {}, 400, ["'inputs'"], None),
    ("empty-inputs", LINEAR, b'{"inputs": []}', {}, 400, ["non-empty"], None),
    ("extra-input", LINEAR, orjson.dumps({"inputs": [_tensor(), _tensor("extra")]}), {}, 400,
     ["no input 'extra'"], None),
    ("wrong-input-name", LINEAR, orjson.dumps({"inputs": [_tensor("x")]}), {}, 400,
     ["no input 'x'"], None),
    ("missing-input", ADD, orjson.dumps({"inputs": [_tensor("a", (1, 2, 3))]}), {}, 400,
     ["'b'", "missing"], {"onnxruntime"}),
    ("wrong-datatype", LINEAR, orjson.dumps({"inputs": [_tensor(datatype="FP64")]}), {}, 400,
     ["datatype FP64", "FP32"], None),
    ("unknown-datatype", LINEAR, orjson.dumps({"inputs": [_tensor(datatype="FLOAT")]}), {}, 400,
     ["unsupported datatype 'FLOAT'"], None),
    ("wrong-shape", LINEAR, orjson.dumps({"inputs": [_tensor(shape=(1, 5))]}), {}, 400,
     ["shape [1, 5]", "[-1, 4]"], None),
    ("wrong-rank", LINEAR, orjson.dumps({"inputs": [_tensor(shape=(4,))]}), {}, 400,
     ["shape [4]"], None),
    ("empty-batch", LINEAR, orjson.dumps({"inputs": [_tensor(shape=(0, 4))]}), {}, 400,
     ["empty batch"], None),
    ("element-count", LINEAR, orjson.dumps({"inputs": [_tensor(shape=(2, 4), data=[1.0] * 4)]}),
     {}, 400, ["needs 8 elements", "has 4"], None),
    ("bad-shape-field", LINEAR, orjson.dumps({"inputs": [_tensor() | {"shape": "1x4"}]}), {}, 400,
     ["'shape'"], None),
    ("bool-in-shape", LINEAR, orjson.dumps({"inputs": [_tensor() | {"shape": [True, 4]}]}), {}, 400,
     ["'shape'"], None),
    ("input-twice", LINEAR, orjson.dumps({"inputs": [_tensor(), _tensor()]}), {}, 400,
     ["'input' appears twice"], None),
    ("not-numbers", LINEAR, orjson.dumps({"inputs": [_tensor(data=["a", "b", "c", "d"])]}), {},
     400, ["not FP32"], None),
    ("ragged-data", LINEAR, orjson.dumps({"inputs": [_tensor(data=[[1.0, 2.0], [3.0]])]}), {}, 400,
     ["not FP32"], None),
    ("overflowing-int", LINEAR, orjson.dumps({"inputs": [_tensor(datatype="UINT8",
                                                                 data=[300] * 4)]}),
     {}, 400, ["not UINT8"], None),
    ("batch-mismatch", ADD, orjson.dumps({"inputs": [_tensor("a", (1, 2, 3)),
                                                     _tensor("b", (2, 2, 3))]}), {}, 400,
     ["batch size"], {"onnxruntime"}),
    ("unknown-output", LINEAR, json_request({"input": X1}, outputs=[{"name": "nope"}]), {}, 400,
     ["no output 'nope'"], None),
    ("bad-id", LINEAR, json_request({"input": X1}, id=5), {}, 400, ["'id'"], None),
    ("binary-header-not-int", LINEAR, json_request({"input": X1}),
     {"Inference-Header-Content-Length": "ten"}, 400, ["not an integer"], None),
    ("binary-header-too-long", LINEAR, json_request({"input": X1}),
     {"Inference-Header-Content-Length": "100000"}, 400, ["outside the body"], None),
    ("binary-size-too-big", LINEAR, orjson.dumps({"inputs": [
        {"name": "input", "shape": [1, 4], "datatype": "FP32",
         "parameters": {"binary_data_size": 32}}]}), {}, 400, ["binary_data_size 32"], None),
]


@pytest.mark.parametrize(
    "model,body,headers,status,words,runtimes",
    [pytest.param(*c[1:], id=c[0]) for c in ERROR_CASES],
)
def test_bad_requests(server: Server, model, body, headers, status, words, runtimes) -> None:
    if runtimes is not None and server.runtime not in runtimes:
        return  # the case is about a model only the other server has
    r = httpx.post(f"{server.url}/v2/models/{model}/infer", content=body, headers=headers)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    for word in words:
        assert word in error, error


def test_unknown_routes_and_models_are_404(server: Server) -> None:
    for path in ["/v2/models/nope", "/v2/models/nope/ready", f"/v2/models/{LINEAR}/versions/2",
                 "/v2/nothing-here"]:
        r = httpx.get(server.url + path)
        assert r.status_code == 404 and r.json()["error"], path


# --- batching, metrics, shutdown ----------------------------------------------------------------


def _raw_request(port: int, path: str, body: bytes) -> tuple[socket.socket, bytes]:
    """Open a request and send all of it but the last byte: the server is then receiving it.
    Returns (socket, the missing byte)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode()
    sock.sendall(head + body[:-1])
    return sock, body[-1:]


def _finish(sock: socket.socket, rest: bytes) -> tuple[int, dict]:
    sock.sendall(rest)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), orjson.loads(body)


def test_batching_concatenates_and_splits(store: Path, tmp_path: Path) -> None:
    """One request held open (still being received) makes the batcher wait; 7 more queue up;
    completing the first fills a batch of 8 = BATCH_MAX_SIZE. The delay is long so that only the
    size limit can dispatch: deterministic, no timing involved."""
    x, y = reference(store, LINEAR)
    env = {"BATCH_MAX_SIZE": "8", "BATCH_MAX_DELAY_MS": "60000"}
    with run_server("onnxruntime", store, tmp_path, **env) as srv:
        path = f"/v2/models/{LINEAR}/infer"
        held, rest = _raw_request(srv.port, path, json_request({"input": x[:1]}, id="held"))
        wait_for(lambda: metric(srv, "modelserver_inflight_requests") == 1, "the held request")
        with ThreadPoolExecutor(7) as pool:
            futures = [pool.submit(infer, srv, LINEAR, {"input": x[i : i + 1]}, id=str(i))
                       for i in range(1, 8)]
            wait_for(lambda: metric(srv, "modelserver_queue_depth", model=LINEAR) == 7,
                     "7 queued requests")
            status, held_body = _finish(held, rest)
            bodies = [f.result() for f in futures]
        assert status == 200 and held_body["id"] == "held"
        np.testing.assert_allclose(outputs_of(held_body)["logits"], y[:1], atol=1e-4)
        for i, body in enumerate(bodies, start=1):  # each request got its own rows back
            assert body["id"] == str(i)
            np.testing.assert_allclose(outputs_of(body)["logits"], y[i : i + 1], atol=1e-4)
        assert metric(srv, "modelserver_batch_size_count", model=LINEAR) == 1
        assert metric(srv, "modelserver_batch_size_sum", model=LINEAR) == 8

        # Larger than the maximum: runs on its own, at once (nothing else is coming).
        body = infer(srv, LINEAR, {"input": x[:20]})
        np.testing.assert_allclose(outputs_of(body)["logits"], y[:20], atol=1e-4)
        assert metric(srv, "modelserver_batch_size_count", model=LINEAR) == 2
        assert metric(srv, "modelserver_batch_size_sum", model=LINEAR) == 28


def test_metrics(server: Server, store: Path) -> None:
    x, _ = reference(store, LINEAR)
    infer(server, LINEAR, {"input": x[:2]})
    httpx.post(f"{server.url}/v2/models/nope/infer", content=b"{}")
    text = httpx.get(f"{server.url}/metrics").text
    for name in ["modelserver_requests_total", "modelserver_request_duration_seconds_bucket",
                 "modelserver_batch_size_bucket", "modelserver_inference_duration_seconds_bucket",
                 "modelserver_queue_depth", "modelserver_inflight_requests",
                 "modelserver_model_info"]:
        assert name in text, name
    assert metric(server, "modelserver_requests_total", model=LINEAR, code="200") >= 1
    assert metric(server, "modelserver_requests_total", model="_unknown", code="404") >= 1
    assert metric(server, "modelserver_batch_size_count", model=LINEAR) >= 1


@pytest.mark.parametrize("runtime", list(RUNTIMES))
def test_graceful_shutdown(store: Path, tmp_path: Path, runtime: str) -> None:
    """SIGTERM while one request is being received and another waits in the batch queue: the
    server stops accepting connections, still answers both, and exits 0."""
    x, y = reference(store, LINEAR)
    env = {"BATCH_MAX_SIZE": "8", "BATCH_MAX_DELAY_MS": "60000"}
    with run_server(runtime, store, tmp_path, **env) as srv:
        held, rest = _raw_request(srv.port, f"/v2/models/{LINEAR}/infer",
                                  json_request({"input": x[:1]}))
        wait_for(lambda: metric(srv, "modelserver_inflight_requests") == 1, "the held request")
        queued: dict[str, Any] = {}
        t = threading.Thread(target=lambda: queued.update(
            body=infer(srv, LINEAR, {"input": x[1:3]})))
        t.start()
        wait_for(lambda: metric(srv, "modelserver_queue_depth", model=LINEAR) == 1,
                 "the queued request")

        srv.proc.send_signal(signal.SIGTERM)

        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
                return False
            except ConnectionRefusedError:
                return True

        wait_for(refused, "the server to stop accepting connections")
        status, body = _finish(held, rest)
        t.join(60)
        assert status == 200
        np.testing.assert_allclose(outputs_of(body)["logits"], y[:1], atol=1e-4)
        np.testing.assert_allclose(outputs_of(queued["body"])["logits"], y[1:3], atol=1e-4)
        assert srv.proc.wait(30) == 0, srv.output()
        assert "batch queues drained" in srv.output()


# --- the real model store -----------------------------------------------------------------------


@pytest.mark.real_store
@pytest.mark.parametrize("runtime", list(RUNTIMES))
def test_real_store_matches_reference(real_store: Path, runtime: str, tmp_path: Path) -> None:
    """Every model of the real store with an artifact for this runtime, at batch 1 and 32, against
    the source framework's reference outputs."""
    import tritonclient.http as tc

    fmt = RUNTIMES[runtime]
    manifests = [m for m in load_store(real_store).values() if fmt in m.artifacts]
    assert manifests, f"no {fmt} artifacts in {real_store}"
    with run_server(runtime, real_store, tmp_path) as srv:
        client = tc.InferenceServerClient(f"127.0.0.1:{srv.port}", network_timeout=120)
        try:
            for m in manifests:
                assert client.is_model_ready(m.name), f"{m.name}: not loaded\n{srv.output()}"
                x, ref, _ = m.load_reference(real_store)
                [spec], [out_spec] = m.signature.inputs, m.signature.outputs
                for n in (1, 32):
                    inp = tc.InferInput(spec.name, [n, *x.shape[1:]], spec.datatype)
                    inp.set_data_from_numpy(np.ascontiguousarray(x[:n]), binary_data=True)
                    got = client.infer(m.name, [inp], outputs=[
                        tc.InferRequestedOutput(out_spec.name, binary_data=True)
                    ]).as_numpy(out_spec.name)
                    assert got.shape == ref[:n].shape, f"{m.name} batch {n}"
                    if m.passed(fmt):  # a failed export parity check is recorded in the manifest
                        np.testing.assert_allclose(
                            got, ref[:n], atol=1e-4, rtol=1e-4,
                            err_msg=f"{m.name} ({fmt}) at batch {n}",
                        )
        finally:
            client.close()
