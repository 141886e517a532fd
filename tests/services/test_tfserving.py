"""TF Serving runtime: models.config generation and the stand-in's REST + gRPC APIs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from argparse import Namespace
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from google.protobuf import text_format

from contract.manifest import (
    Artifact, Manifest, Parity, Signature, Source, TensorSpec, load_store, save_reference,
)  # fmt: skip
from services.settings import REPO_ROOT, StackSettings
from services.tfserving.config import (
    BATCHING_FILE, allowed_batch_sizes, batching_parameters_text, write_models_config,
)
from tests import http_checks
from tests.conftest import free_port, stop_process_group
from tests.services import tiny_models as tm

TOL = 1e-4
NAME = "tiny-keras"
SEQ = "tiny-seq"  # two inputs (FP32 features, INT64 ids [-1, -1]), two outputs
STANDIN = "tfserving-standin"


# --- a tiny store: one Keras model exported as a SavedModel with the contract's names -----------


def build_tiny_store(store: Path) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)]
    )

    # model.export() names the output "output_0"; the contract wants "logits". Keras' own
    # ExportArchive, as the exporters use it: a Keras 3 model inside a plain tf.Module saves a
    # SavedModel that TF Serving's session cannot run (test_keras_in_a_tf_module_fails_as_in_tf_serving).
    root = store / NAME
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda input: {"logits": model(input)},
                         input_signature=[tf.TensorSpec([None, 4], tf.float32, name="input")])
    archive.write_out(str(root / "savedmodel" / "1"))
    x = np.random.RandomState(0).randn(32, 4).astype(np.float32)
    ref = save_reference(root, {"input": x}, {"logits": model(x).numpy()}, None)
    parity = Parity(ok=True, runtime="tensorflow", batch_sizes=[1, 32], tolerance=TOL)
    Manifest(
        name=NAME,
        reference=ref,
        source=Source(framework="keras", framework_version=keras.__version__,
                      architecture="mlp", weights="random-init"),  # fmt: skip
        signature=Signature(
            inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 4])],
            outputs=[TensorSpec(name="logits", datatype="FP32", shape=[-1, 3])],
        ),
        artifacts={"savedmodel": Artifact(
            format="savedmodel", version=1, path="savedmodel/1", bytes=0, sha256="",
            route="tf.saved_model.save", converters={}, export_seconds=0.0, parity=parity,
        )},
    ).save(root)  # fmt: skip
    tm.export_savedmodel(store / SEQ / "savedmodel" / "1")
    x = tm.seq_inputs()
    tm.save_model(store, SEQ, tm.SEQ_SIGNATURE,
                  {"savedmodel": tm.artifact(store / SEQ, "savedmodel", "savedmodel/1", "tensorflow")},
                  x, tm.seq_outputs(x))  # fmt: skip


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("tf_store")
    build_tiny_store(store)
    return store


class StandIn:
    def __init__(self, store: Path, run_dir: Path, env: dict[str, str] | None = None):
        self.rest, self.grpc = free_port(), free_port()
        run_dir.mkdir(parents=True)
        self.log_path = run_dir / "standin.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.tfserving", "--standin", "--host", "127.0.0.1",
             "--rest-port", str(self.rest), "--grpc-port", str(self.grpc),
             "--model-store", str(store), "--run-dir", str(run_dir)],
            cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.rest}"
        started = time.monotonic()
        while True:
            try:
                if httpx.get(f"{self.url}/v1/standin", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() - started > 180:
                self.stop()
                raise RuntimeError(f"stand-in did not start:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        self.ready_seconds = time.monotonic() - started

    def stop(self) -> None:
        stop_process_group(self.proc)
        self.log.close()


@pytest.fixture(scope="module")
def standin(tiny_store, tmp_path_factory):
    s = StandIn(tiny_store, tmp_path_factory.mktemp("tf_run") / "run")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def reference(tiny_store):
    m = load_store(tiny_store)[NAME]
    x, y, _ = m.load_reference(tiny_store)
    return x["input"], y["logits"]


# --- configuration files --------------------------------------------------------------------------


def test_models_config_for_the_container(tiny_store, tmp_path):
    from tensorflow_serving.config import model_server_config_pb2

    out = write_models_config(tiny_store, tmp_path / "models.config", "/models")
    config = text_format.Parse(out.read_text(), model_server_config_pb2.ModelServerConfig())
    entries = {e.name: e for e in config.model_config_list.config}
    assert set(entries) == {NAME, SEQ}
    entry = entries[NAME]
    assert entry.name == NAME and entry.model_platform == "tensorflow"
    assert entry.base_path == f"/models/{NAME}/savedmodel"
    assert list(entry.model_version_policy.specific.versions) == [1]


def test_models_config_local_paths_exist(tiny_store, tmp_path):
    from tensorflow_serving.config import model_server_config_pb2

    out = write_models_config(tiny_store, tmp_path / "m.config", str(tiny_store))
    config = text_format.Parse(out.read_text(), model_server_config_pb2.ModelServerConfig())
    assert (Path(config.model_config_list.config[0].base_path) / "1" / "saved_model.pb").is_file()


def test_batching_parameters_file_matches_stack_env():
    lines = [l for l in BATCHING_FILE.read_text().splitlines() if not l.startswith("#")]
    assert "\n".join(lines) + "\n" == batching_parameters_text(StackSettings())


def test_real_server_command(tiny_store, tmp_path):
    from services.tfserving.__main__ import real_server_command

    a = Namespace(grpc_port=8500, rest_port=8501, model_store=tiny_store)
    cmd = real_server_command("/usr/bin/tensorflow_model_server", a, tmp_path)
    assert "--port=8500" in cmd and "--rest_api_port=8501" in cmd and "--enable_batching" in cmd
    assert f"--model_config_file={tmp_path / 'models.config'}" in cmd
    assert str(tiny_store) in (tmp_path / "models.config").read_text()


# --- REST -----------------------------------------------------------------------------------------


def test_status(standin):
    expected = {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ], "served_by": STANDIN}  # fmt: skip
    for path in (f"/v1/models/{NAME}", f"/v1/models/{NAME}/versions/1"):
        r = httpx.get(standin.url + path)
        assert r.status_code == 200 and r.json() == expected
        assert r.headers["x-served-by"] == STANDIN


def test_metadata(standin):
    r = httpx.get(f"{standin.url}/v1/models/{NAME}/metadata")
    assert r.status_code == 200
    body = r.json()
    assert body["model_spec"] == {"name": NAME, "signature_name": "", "version": "1"}
    sig = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    assert sig["inputs"]["input"]["dtype"] == "DT_FLOAT"
    assert sig["inputs"]["input"]["tensor_shape"]["dim"] == [
        {"size": "-1", "name": ""}, {"size": "4", "name": ""}
    ]  # fmt: skip
    assert list(sig["outputs"]) == ["logits"] and body["served_by"] == STANDIN
    assert httpx.get(f"{standin.url}/v1/models/{NAME}/versions/1/metadata").json() == body


@pytest.mark.parametrize("batch", [1, 32])
def test_predict_row_and_columnar(standin, reference, batch):
    x, y = reference[0][:batch], reference[1][:batch]
    r = httpx.post(f"{standin.url}/v1/models/{NAME}:predict", json={"instances": x.tolist()})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.asarray(r.json()["predictions"]), y, atol=TOL)
    r = httpx.post(
        f"{standin.url}/v1/models/{NAME}/versions/1:predict",
        json={"signature_name": "serving_default", "inputs": {"input": x.tolist()}},
    )
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.asarray(r.json()["outputs"]), y, atol=TOL)
    r = httpx.post(f"{standin.url}/v1/models/{NAME}:predict",
                   json={"instances": [{"input": row} for row in x.tolist()]})  # fmt: skip
    np.testing.assert_allclose(np.asarray(r.json()["predictions"]), y, atol=TOL)


@pytest.mark.parametrize(
    "body, needle",
    [
        (b'{"instances": [[1, 2, 3', "JSON Parse error"),
        (b'[1, 2]', "object"),
        (b'{"foo": 1}', "instances"),
        (b'{"instances": [[1, 2, 3]]}', "shape"),
        (b'{"inputs": {"x": [[1, 2, 3, 4]]}}', "'x'"),
        (b'{"inputs": [["a", "b", "c", "d"]]}', "numbers"),
        (b'{"inputs": [[1, 2], [3, 4, 5, 6]]}', "input"),
        (b'{"inputs": [[1, null, 3, 4]]}', "numbers"),
        (b'{"signature_name": "nope", "inputs": [[1, 2, 3, 4]]}', "nope"),
    ],
)
def test_bad_input_is_400(standin, body, needle):
    r = httpx.post(f"{standin.url}/v1/models/{NAME}:predict", content=body)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]


def _seq(seq: int, rows: slice = slice(0, 3)) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(v[rows, :seq]) for k, v in tm.seq_inputs().items()}


@pytest.mark.parametrize("seq", [7, 16])
def test_predict_two_inputs(standin, seq):
    x = _seq(seq)
    want = tm.seq_outputs(x)
    url = f"{standin.url}/v1/models/{SEQ}:predict"
    r = httpx.post(url, json={"inputs": {k: v.tolist() for k, v in x.items()}})
    assert r.status_code == 200, r.text
    out = r.json()["outputs"]
    assert set(out) == {"pooled", "scores"}
    for k in want:
        np.testing.assert_allclose(np.asarray(out[k]), want[k], atol=TOL, err_msg=k)
    rows = [{k: v[i].tolist() for k, v in x.items()} for i in range(3)]
    r = httpx.post(url, json={"instances": rows})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 3
    np.testing.assert_allclose(np.asarray([p["scores"] for p in preds]), want["scores"], atol=TOL)


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"inputs": {"features": [[[0.0] * 4]]}}, "ids"),
        ({"inputs": {"features": [[[0.0] * 4]], "ids": [[1.5]]}}, "'ids'"),
        ({"instances": [{"features": [[0.0] * 4]}]}, "instance 0"),
        ({"instances": [[0.0] * 4]}, "name them"),
        ({"signature_name": "nope", "inputs": {"features": [[[0.0] * 4]], "ids": [[1]]}}, '"nope"'),
    ],
)
def test_two_input_bad_requests_are_400(standin, body, needle):
    r = httpx.post(f"{standin.url}/v1/models/{SEQ}:predict", json=body)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"], r.text


def test_unknown_model_or_version_is_404(standin):
    cases = {
        ("GET", "/v1/models/nope"): "Could not find any versions of model nope",
        ("GET", f"/v1/models/{NAME}/versions/7"): f"Could not find version 7 of model {NAME}",
        ("GET", "/v1/models/nope/metadata"): "Servable not found for request: Latest(nope)",
        ("POST", "/v1/models/nope:predict"): "Servable not found for request: Latest(nope)",
        ("POST", f"/v1/models/{NAME}/versions/7:predict"):
            f"Servable not found for request: Specific({NAME}, 7)",
    }  # fmt: skip
    for (method, path), message in cases.items():
        r = httpx.request(method, standin.url + path, json={"instances": [[1, 2, 3, 4]]})
        assert (r.status_code, r.json()) == (404, {"error": message}), path


def test_concurrent_requests_are_batched_correctly(standin, reference):
    x, y = reference

    def post(i: int) -> np.ndarray:
        r = httpx.post(f"{standin.url}/v1/models/{NAME}:predict",
                       json={"instances": x[i : i + 2].tolist()}, timeout=30)  # fmt: skip
        return np.asarray(r.json()["predictions"])

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(post, range(0, 32, 2)))
    np.testing.assert_allclose(np.concatenate(results), y, atol=TOL)
    metrics = httpx.get(f"{standin.url}/monitoring/prometheus/metrics").text
    assert f'modelserver_batch_size_count{{model="{NAME}:1"}}' in metrics


def test_malformed_path_is_400(standin):
    r = httpx.get(f"{standin.url}/v1/nonsense")
    assert r.status_code == 400 and r.json() == {"error": "Malformed request: GET /v1/nonsense"}


def test_connections_are_bounded(tiny_store, tmp_path):
    """The stack's HTTP bounds (tests/http_checks.py) hold on the stand-in's REST port too."""
    s = StandIn(tiny_store, tmp_path / "run", env=http_checks.BOUNDS_ENV)
    try:
        http_checks.check_all(s.url, s.rest, f"/v1/models/{NAME}:predict", "/v1/standin")
    finally:
        s.stop()


def test_labels_itself(standin):
    about = httpx.get(f"{standin.url}/v1/standin").json()
    assert about["served_by"] == STANDIN and about["models"] == {NAME: [1], SEQ: [1]}
    assert "tensorflow_model_server is not on PATH" in about["description"]
    r = httpx.post(f"{standin.url}/v1/models/{NAME}:predict", json={"instances": [[0, 0, 0, 0]]})
    assert r.headers["x-served-by"] == STANDIN
    log = standin.log_path.read_text()
    assert "TF Serving STAND-IN (tensorflow_model_server not on PATH)" in log


# --- gRPC with the real tensorflow-serving-api stubs ----------------------------------------------


@pytest.fixture(scope="module")
def stub(standin):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{standin.grpc}") as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _predict_request(name: str, x: np.ndarray):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs["input"].CopyFrom(tf.make_tensor_proto(x))
    return request


@pytest.mark.parametrize("batch", [1, 32])
def test_grpc_predict(stub, reference, batch):
    import tensorflow as tf

    x, y = reference[0][:batch], reference[1][:batch]
    response = stub.Predict(_predict_request(NAME, x), timeout=30)
    assert response.model_spec.name == NAME and response.model_spec.version.value == 1
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["logits"]), y, atol=TOL)


def test_grpc_two_inputs_int64(stub):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    for seq in (7, 16):
        x = _seq(seq)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = SEQ
        for k, v in x.items():
            request.inputs[k].CopyFrom(tf.make_tensor_proto(v))
        response = stub.Predict(request, timeout=30)
        for k, want in tm.seq_outputs(x).items():
            np.testing.assert_allclose(tf.make_ndarray(response.outputs[k]), want, atol=TOL)


def test_grpc_errors(stub, reference):
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(_predict_request("nope", reference[0][:1]), timeout=30)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(_predict_request(NAME, reference[0][:1].astype(np.float64)), timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_codec_time_is_observed_over_rest_and_grpc(stub, standin, reference):
    """The stand-in's decode/encode histograms (its batcher's "<name>:<version>" label), read the
    way the bench reads them: one of each per answered request on either transport, none for a
    body that does not parse."""
    from loadtests import server_metrics

    url = f"{standin.url}/monitoring/prometheus/metrics"

    def codec() -> tuple[float, float]:
        got = server_metrics.scrape(url, NAME)
        return got.get("decode", [0, 0])[1], got.get("encode", [0, 0])[1]

    before = codec()
    x = reference[0][:2]
    r = httpx.post(f"{standin.url}/v1/models/{NAME}:predict", json={"instances": x.tolist()})
    assert r.status_code == 200, r.text
    stub.Predict(_predict_request(NAME, x), timeout=30)
    bad = httpx.post(f"{standin.url}/v1/models/{NAME}:predict", content=b"{not json")
    assert bad.status_code == 400
    after = codec()
    assert (after[0] - before[0], after[1] - before[1]) == (2, 2)
    assert server_metrics.scrape(url, NAME)["inference"][1] >= 2  # same label as inference


def test_grpc_metadata_and_status(stub, standin):
    from tensorflow_serving.apis import (
        get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
    )  # fmt: skip

    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = NAME
    response = stub.GetModelMetadata(request, timeout=30)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(sig_map)
    assert list(sig_map.signature_def["serving_default"].inputs) == ["input"]
    with grpc.insecure_channel(f"127.0.0.1:{standin.grpc}") as channel:
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": NAME}), timeout=30
        )
    assert status.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE


# --- every model of the real store ----------------------------------------------------------------


@pytest.fixture(scope="module")
def real_standin(real_store, tmp_path_factory):
    assert any("savedmodel" in m.artifacts for m in load_store(real_store).values()), f"no SavedModel in {real_store}"
    s = StandIn(real_store, tmp_path_factory.mktemp("tf_real") / "run")
    yield s
    s.stop()


@pytest.mark.real_store
@pytest.mark.parametrize("batch", [1, 32])
def test_real_store_models(real_standin, real_store, batch):
    manifests = {n: m for n, m in load_store(real_store).items() if "savedmodel" in m.artifacts}
    assert set(httpx.get(f"{real_standin.url}/v1/standin").json()["models"]) == set(manifests)
    for name, m in manifests.items():
        x, y, _ = m.load_reference(real_store)
        r = httpx.post(f"{real_standin.url}/v1/models/{name}:predict",
                       json={"inputs": {k: v[:batch].tolist() for k, v in x.items()}},
                       timeout=120)  # fmt: skip
        assert r.status_code == 200, (name, r.text[:500])
        out = r.json()["outputs"]
        if len(y) == 1:
            out = {next(iter(y)): out}
        for k, v in y.items():
            got = np.asarray(out[k], dtype=v.dtype)
            np.testing.assert_allclose(got, v[:batch], atol=TOL, err_msg=f"{name} {k}")


def test_keras_in_a_tf_module_fails_as_in_tf_serving(tmp_path):
    """The stand-in runs SavedModels in a TF session as TF Serving does, so it fails where TF
    Serving fails: a Keras 3 model saved inside a plain tf.Module has its variables missing from
    the session (tensorflow/serving#2226, keras-team/keras#19274). The error is TF Serving's:
    FAILED_PRECONDITION (HTTP 400) naming the variable, not a bare 500."""
    import keras
    import tensorflow as tf

    from services.tfserving.config import SavedModelEntry
    from services.tfserving.models import Registry, ServingError

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])

    class Wrapper(tf.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="input")])
        def serve(self, input):
            return {"logits": self.m(input)}

    module = Wrapper(model)
    tf.saved_model.save(module, str(tmp_path / "1"), signatures={"serving_default": module.serve})
    registry = Registry.load([SavedModelEntry("wrapped", 1, tmp_path, "wrapped/savedmodel")])
    with pytest.raises(ServingError) as err:
        registry.get("wrapped").run("", {"input": np.ones((1, 4), np.float32)})
    assert err.value.code == "FAILED_PRECONDITION" and err.value.http_status == 400
    assert "Could not find variable" in err.value.message


# --- padding to allowed batch sizes (TF Serving's batching session) ---------------------------


class _RecordingServable:
    """Stands in for a Servable: records the batch sizes it ran, answers each row's sum."""

    name, version = "m", 1

    def __init__(self):
        self.ran: list[int] = []

    def run(self, signature, inputs):
        x = inputs["x"]
        self.ran.append(len(x))
        return {"y": x.reshape(len(x), -1).sum(axis=1), "tokens": inputs["t"] * 2}


@pytest.mark.parametrize("size, runs_as", [(1, 1), (3, 4), (5, 8), (8, 8), (12, 12)])
def test_formed_batches_are_padded_to_allowed_sizes(size, runs_as):
    from services.tfserving.predictor import _DefaultSignature

    servable = _RecordingServable()
    sig = _DefaultSignature(servable, allowed_batch_sizes(StackSettings(batch_max_size=8)))
    x = np.arange(size * 6, dtype=np.float32).reshape(size, 2, 3) + 1
    t = np.arange(size, dtype=np.int64).reshape(size, 1) + 7
    out = sig.predict({"x": x, "t": t})
    assert servable.ran == [runs_as]  # 12 > the largest allowed size: run as it is
    np.testing.assert_array_equal(out["y"], x.reshape(size, -1).sum(axis=1))
    np.testing.assert_array_equal(out["tokens"], t * 2)


def test_padding_repeats_the_first_row():
    from services.tfserving.predictor import pad_batch

    t = np.array([[5, 6], [7, 8], [9, 1]], dtype=np.int64)  # token ids: padding must stay valid
    padded, size = pad_batch({"t": t}, [1, 2, 4, 8])
    assert size == 3 and padded["t"].tolist() == [[5, 6], [7, 8], [9, 1], [5, 6]]


def test_allowed_batch_sizes_end_at_the_max():
    assert allowed_batch_sizes(StackSettings(batch_max_size=8)) == [1, 2, 4, 8]
    assert allowed_batch_sizes(StackSettings(batch_max_size=12)) == [1, 2, 4, 8, 12]
    assert allowed_batch_sizes(StackSettings(batch_max_size=1)) == [1]
