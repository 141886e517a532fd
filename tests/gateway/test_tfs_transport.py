"""The gateway's gRPC transport to TF Serving (GATEWAY_TFSERVING_TRANSPORT=grpc).

Unit: TFServingBackend against an in-process grpc.aio PredictionService (no tensorflow): the
request it sends, and every failure mapped as the REST transport maps it.
Real: the TF Serving stand-in on free loopback ports with the store's Keras models (and a tiny
two-input, two-output model with INT64 or INT32 ids), a gateway per transport in front: answers
equal value for value, errors alike.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc
import httpx
import numpy as np
import pytest

from contract.codec import InferRequest, InferResponse, header_length
from contract.manifest import Signature, TensorSpec, load_store
from services.gateway.backends.base import Call
from services.gateway.backends.tfserving import TFServingBackend
from services.gateway.errors import (
    BackendFailed,
    BackendLost,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    ModelUnavailable,
)
from services.gateway.protos import load
from tests.conftest import free_port, free_ports, python_env
from tests.gateway.conftest import REPO, GatewayProcess

M = load()
PredictRequest, PredictResponse = M["tensorflow.serving.PredictRequest"], M["tensorflow.serving.PredictResponse"]


# --- unit: an in-process PredictionService --------------------------------------------------------

SIG = Signature(inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 2]),
                        TensorSpec(name="ids", datatype="INT32", shape=[-1])],
                outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1, 2]),
                         TensorSpec(name="n", datatype="INT64", shape=[-1])])  # fmt: skip


class _Model:  # the part of a Manifest the backend reads
    name, signature = "m", SIG


def _call(batch: int = 2) -> Call:
    arrays = {"x": np.arange(2 * batch, dtype=np.float32).reshape(batch, 2),
              "ids": np.arange(batch, dtype=np.int32)}  # fmt: skip
    return Call(_Model(), InferRequest.from_arrays(arrays, id="r7"), batch, request_id="req-1")  # type: ignore[arg-type]


async def _serve(handler: Callable) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    method = grpc.unary_unary_rpc_method_handler(
        handler, request_deserializer=PredictRequest.FromString,
        response_serializer=PredictResponse.SerializeToString)  # fmt: skip
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "tensorflow.serving.PredictionService", {"Predict": method})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


def _backend(port: int, timeout: float = 2.0) -> TFServingBackend:
    return TFServingBackend("tfserving", "http://127.0.0.1:1", grpc_target=f"127.0.0.1:{port}",
                            timeout=timeout, connect_timeout=0.5, max_connections=4,
                            probe_timeout=0.5)  # fmt: skip


def _run(handler: Callable | None, check: Callable[[TFServingBackend], Any], **kw) -> Any:
    async def main() -> Any:
        server, port = await _serve(handler) if handler else (None, free_port())
        backend = _backend(port, **kw)
        try:
            return await check(backend)
        finally:
            await backend.close()
            if server is not None:
                await server.stop(0)

    return asyncio.run(main())


def test_sends_tensor_content_and_reads_the_answer() -> None:
    seen: dict[str, Any] = {}

    async def predict(request, context):
        seen["request"], seen["md"] = request, dict(context.invocation_metadata())
        context.set_trailing_metadata((("x-served-by", "tfserving-standin"),))
        reply = PredictResponse()
        InferResponse.from_arrays("m", {"n": np.array([5, 6], np.int64),
                                        "y": np.ones((2, 2), np.float32)}).to_tensorproto(reply.outputs)
        return reply

    answer = _run(predict, lambda b: b.infer(_call()))
    req = seen["request"]
    assert req.model_spec.name == "m" and req.model_spec.signature_name == "serving_default"
    assert seen["md"]["x-request-id"] == "req-1"
    assert req.inputs["ids"].dtype == 3 and [d.size for d in req.inputs["ids"].tensor_shape.dim] == [2]
    assert np.frombuffer(req.inputs["x"].tensor_content, "<f4").tolist() == [0, 1, 2, 3]
    assert answer.served_by == "tfserving-standin" and answer.response.id == "r7"
    got = answer.response.arrays()
    assert list(got) == ["y", "n"] and got["n"].dtype == np.int64 and got["n"].tolist() == [5, 6]


@pytest.mark.parametrize("code,error,status", [
    (grpc.StatusCode.INVALID_ARGUMENT, BackendRejected, 400),
    (grpc.StatusCode.NOT_FOUND, BackendRejected, 404),
    (grpc.StatusCode.FAILED_PRECONDITION, BackendRejected, 400),
    (grpc.StatusCode.UNAVAILABLE, ModelUnavailable, 503),  # TF Serving: the model failed to load
    (grpc.StatusCode.INTERNAL, BackendFailed, 502),
    (grpc.StatusCode.UNKNOWN, BackendFailed, 502),
])  # fmt: skip
def test_a_status_the_server_answers_maps_as_its_http_status(code, error, status) -> None:
    async def predict(request, context):
        await context.abort(code, "input 'x': bad")

    with pytest.raises(error) as e:
        _run(predict, lambda b: b.infer(_call()))
    assert type(e.value) is error and e.value.status == status
    assert "input 'x': bad" in e.value.message


def test_refused_is_unavailable_and_names_the_address() -> None:
    with pytest.raises(BackendUnavailable) as e:
        _run(None, lambda b: b.infer(_call()))
    assert e.value.status == 503 and "127.0.0.1:" in e.value.message and "unreachable" in e.value.message


def test_no_http2_handshake_within_the_connect_timeout_is_unavailable() -> None:
    with socket.socket() as hang:  # accepts TCP, never speaks HTTP/2
        hang.bind(("127.0.0.1", 0))
        hang.listen()

        async def main():
            backend = _backend(hang.getsockname()[1], timeout=3)
            try:
                await backend.infer(_call())
            finally:
                await backend.close()

        with pytest.raises(BackendUnavailable, match="no connection within 0.5 s"):
            asyncio.run(main())


def test_deadline_is_a_timeout() -> None:
    async def predict(request, context):
        await asyncio.sleep(2)

    with pytest.raises(BackendTimeout) as e:
        _run(predict, lambda b: b.infer(_call()), timeout=0.3)
    assert e.value.status == 504


def test_connection_lost_mid_call_is_lost() -> None:
    """The server goes away under the call: BackendLost (retried once on the next candidate)."""
    async def main():
        server = None

        async def predict(request, context):
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(server.stop(0)))
            await asyncio.sleep(2)

        server, port = await _serve(predict)
        backend = _backend(port)
        try:
            await backend.infer(_call())
        finally:
            await backend.close()

    with pytest.raises(BackendLost):
        asyncio.run(main())


def test_an_unreadable_answer_is_the_backends_fault() -> None:
    async def predict(request, context):
        return PredictResponse()  # no outputs

    with pytest.raises(BackendFailed, match="unreadable answer: TF Serving answer has no output 'y'"):
        _run(predict, lambda b: b.infer(_call()))


def test_inputs_below_the_threshold_stay_on_rest() -> None:
    async def check(b: TFServingBackend) -> None:
        b.grpc_min_bytes = _call().req.tensor_bytes() + 1  # 2x2 FP32 + 2 INT32 = 24 bytes
        await b.infer(_call())

    with pytest.raises(BackendUnavailable, match="at http://127.0.0.1:1 "):
        _run(None, check)


def test_tf_serving_rest_api_requests_stay_on_rest() -> None:
    """A TF Serving REST body is forwarded as received: over REST even with gRPC configured."""
    call = _call()
    call.tfs_body = b'{"inputs": {"x": [[0, 1]], "ids": [0]}}'
    with pytest.raises(BackendUnavailable, match="at http://127.0.0.1:1 "):
        _run(None, lambda b: b.infer(call))


# --- real: the stand-in behind a gateway per transport --------------------------------------------

KERAS = ("digits-mlp-keras", "digits-cnn-keras", "digits-transformer-keras", "mobilenetv2-keras")
TINY = {"tiny-seq": "int64", "tiny-seq32": "int32"}  # two inputs (FP32, INT ids), two outputs
BUILD_TINY = """
import sys
from pathlib import Path
from tests.services import tiny_models as tm
store, name, ids = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
tm.export_savedmodel(store / name / "savedmodel" / "1", ids_dtype=ids)
sig = tm.SEQ_SIGNATURE.model_copy(deep=True)
sig.inputs[1].datatype = ids.upper()
x = tm.seq_inputs()
x["ids"] = x["ids"].astype(ids)
tm.save_model(store, name, sig, {"savedmodel": tm.artifact(store / name, "savedmodel", "savedmodel/1", "tensorflow")},
              x, tm.seq_outputs(x))
"""


@pytest.fixture(scope="module")
def tfs_store(real_store: Path, tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("tfs-transport-store")
    for m in KERAS:
        (store / m).symlink_to((real_store / m).resolve())
    for name, ids in TINY.items():
        out = subprocess.run([sys.executable, "-c", BUILD_TINY, str(store), name, ids], cwd=REPO,
                             env=python_env(), capture_output=True, text=True)  # tensorflow: not here
        assert out.returncode == 0, out.stderr[-3000:]
    return store


@pytest.fixture(scope="module")
def standin(tfs_store: Path, tmp_path_factory) -> Iterator[Any]:
    from tests.services.test_tfserving import StandIn

    s = StandIn(tfs_store, tmp_path_factory.mktemp("tfs-transport") / "run")
    yield s
    s.stop()


def _gateway(store: Path, log_dir: Path, transport: str, rest: int, grpc_port: int,
             **env: str) -> GatewayProcess:  # fmt: skip
    full = {"STACK_MODEL_STORE": str(store), "TFSERVING_HOST": "127.0.0.1",
            "TFSERVING_REST_PORT": str(rest), "TFSERVING_GRPC_PORT": str(grpc_port),
            "GATEWAY_RUNTIMES": "tfserving", "GATEWAY_DEFAULT_RUNTIME": "tfserving",
            "GATEWAY_TFSERVING_TRANSPORT": transport, "GATEWAY_BACKEND_TIMEOUTS": "{}",
            "GATEWAY_TFSERVING_GRPC_MIN_BYTES": "0",  # every request over the transport tested
            "GATEWAY_BREAKER_FAILURES": "1000", **env}  # fmt: skip
    return GatewayProcess(full, log_dir / f"gateway-{transport}.log")


@pytest.fixture(scope="module")
def gateways(standin, tfs_store: Path, tmp_path_factory) -> Iterator[dict[str, GatewayProcess]]:
    logs = tmp_path_factory.mktemp("tfs-transport-gw")
    g = {t: _gateway(tfs_store, logs, t, standin.rest, standin.grpc) for t in ("rest", "grpc")}
    for gw in g.values():
        gw.wait_ready(60)
    yield g
    for gw in g.values():
        gw.stop()


def _infer(gw: GatewayProcess, model: str, arrays: dict[str, np.ndarray]) -> httpx.Response:
    body, hl = InferRequest.from_arrays(arrays).to_oip(binary=True)
    with gw.client(timeout=60) as c:
        return c.post(f"/v2/models/{model}@tfserving/infer", content=body,
                      headers={"Inference-Header-Content-Length": str(hl)})


def _arrays(r: httpx.Response) -> dict[str, np.ndarray]:
    assert r.status_code == 200, r.text[:500]
    return InferResponse.from_oip(r.content, header_length(r.headers.get("inference-header-content-length"))).arrays()


@pytest.mark.parametrize("model", [*KERAS, *TINY])
def test_grpc_answers_equal_rest_value_for_value(gateways, tfs_store: Path, model: str) -> None:
    m = load_store(tfs_store)[model]
    x, y, _ = m.load_reference(tfs_store)
    for batch in (1, 3):
        arrays = {k: v[:batch] for k, v in x.items()}
        answers = {t: _infer(gw, model, arrays) for t, gw in gateways.items()}
        got = {t: _arrays(r) for t, r in answers.items()}
        assert list(got["grpc"]) == [s.name for s in m.signature.outputs]
        for name, want in got["rest"].items():
            assert got["grpc"][name].dtype == want.dtype, name
            np.testing.assert_array_equal(got["grpc"][name], want, err_msg=f"{model} {name}")
            np.testing.assert_allclose(want, y[name][:batch], atol=1e-4, rtol=0)
        assert {r.headers["x-served-by"] for r in answers.values()} == {"tfserving-standin"}


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_a_bad_request_is_400_naming_the_input(gateways, transport: str) -> None:
    x = {"features": np.zeros((1, 3, 4), np.float32), "ids": np.array([[1, 2, 10]], np.int64)}
    r = _infer(gateways[transport], "tiny-seq", x)
    assert r.status_code == 400 and "input 'ids': value 10 is outside" in r.json()["error"], r.text
    r = _infer(gateways[transport], "tiny-seq", {**x, "features": np.zeros((1, 3, 4))})  # FP64
    assert r.status_code == 400 and "'features'" in r.json()["error"], r.text


def test_what_tf_serving_refuses_is_400_with_its_message_on_both_transports(gateways) -> None:
    """Sequence lengths that disagree pass the signature (both dynamic) and TensorFlow refuses
    them: REST's 400 and gRPC's INVALID_ARGUMENT both reach the client as 400, same message."""
    x = {"features": np.zeros((1, 3, 4), np.float32), "ids": np.array([[1, 2]], np.int64)}
    out = {t: _infer(gw, "tiny-seq", x) for t, gw in gateways.items()}
    assert {t: r.status_code for t, r in out.items()} == {"rest": 400, "grpc": 400}
    assert out["rest"].json() == out["grpc"].json()
    assert "Incompatible shapes" in out["grpc"].json()["error"]


def test_grpc_port_down_is_503_naming_it_while_rest_is_up(standin, tfs_store: Path, tmp_path) -> None:
    """Inferences really go over gRPC: with only the stand-in's gRPC port wrong, the gateway is
    ready (health is REST) and an inference is 503 naming the gRPC address."""
    closed = free_port()
    gw = _gateway(tfs_store, tmp_path, "grpc", standin.rest, closed)
    try:
        gw.wait_ready(60)
        r = _infer(gw, "digits-mlp-keras", {"input": np.zeros((1, 64), np.float32)})
    finally:
        gw.stop()
    assert r.status_code == 503, r.text
    assert f"127.0.0.1:{closed}" in r.json()["error"] and "unreachable" in r.json()["error"]


def test_inputs_below_grpc_min_bytes_go_over_rest(standin, tfs_store: Path, tmp_path) -> None:
    """GATEWAY_TFSERVING_GRPC_MIN_BYTES: a digit (256 bytes) goes over REST, a MobileNetV2 image
    over gRPC (here closed: 503)."""
    gw = _gateway(tfs_store, tmp_path, "grpc", standin.rest, free_port(),
                  GATEWAY_TFSERVING_GRPC_MIN_BYTES="4096")
    try:
        gw.wait_ready(60)
        small = _infer(gw, "digits-mlp-keras", {"input": np.zeros((1, 64), np.float32)})
        large = _infer(gw, "mobilenetv2-keras", {"input": np.zeros((1, 224, 224, 3), np.float32)})
    finally:
        gw.stop()
    assert small.status_code == 200, small.text
    assert large.status_code == 503 and "unreachable" in large.json()["error"], large.text


def test_standin_down_is_503_on_both_transports(tfs_store: Path, tmp_path) -> None:
    rest, grpc_port = free_ports(2)
    out = {}
    for transport in ("rest", "grpc"):
        gw = _gateway(tfs_store, tmp_path, transport, rest, grpc_port)
        try:
            out[transport] = _infer(gw, "digits-mlp-keras", {"input": np.zeros((1, 64), np.float32)})
        finally:
            gw.stop()
    assert {t: r.status_code for t, r in out.items()} == {"rest": 503, "grpc": 503}, \
        {t: r.text for t, r in out.items()}


def test_deadline_is_504_on_both_transports(standin, tfs_store: Path, tmp_path) -> None:
    x = {"input": np.random.default_rng(0).random((32, 224, 224, 3), np.float32)}
    out = {}
    for transport in ("rest", "grpc"):
        gw = _gateway(tfs_store, tmp_path, transport, standin.rest, standin.grpc,
                      GATEWAY_BACKEND_TIMEOUTS='{"tfserving": 0.05}')
        try:
            out[transport] = _infer(gw, "mobilenetv2-keras", x)
        finally:
            gw.stop()
    for t, r in out.items():
        assert r.status_code == 504, (t, r.text)
        assert "did not answer within 0.05 s" in r.json()["error"], (t, r.text)
