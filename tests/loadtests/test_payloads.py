import numpy as np
import orjson
import pytest

from loadtests.payloads import Target, build_payload, check_response, resolve_targets
from model_store.manifest import load_manifest, load_store


def oip(values, name="logits", datatype="FP32", shape=None):
    values = list(map(float, values))
    return orjson.dumps({"outputs": [{"name": name, "datatype": datatype,
                                      "shape": shape or [1, len(values)], "data": values}]})


@pytest.fixture
def payload(store):
    return build_payload(Target("gateway", "digits-cnn-torch", "onnxruntime"),
                         load_manifest(store / "digits-cnn-torch"), store)


def test_bodies_are_the_reference_samples_in_oip_json(store, payload):
    inputs, outputs, _ = load_manifest(store / "digits-cnn-torch").load_reference(store)
    assert len(payload.bodies) == len(payload.expectations) == 32
    assert payload.target.path == "/v2/models/digits-cnn-torch@onnxruntime/infer"
    doc = orjson.loads(payload.bodies[3])
    (t,) = doc["inputs"]
    assert (t["name"], t["shape"], t["datatype"]) == ("input", [1, 64], "FP32")
    np.testing.assert_array_equal(np.asarray(t["data"], dtype=np.float32), inputs[3])
    assert payload.expectations[3].expected == int(outputs[3].argmax())


def test_direct_paths_and_tfserving_body(store):
    m = load_manifest(store / "digits-cnn-torch")
    assert Target("direct", "m", "torchserve").path == "/predictions/m"
    assert Target("direct", "m", "tflite").path == "/v2/models/m/infer"
    p = build_payload(Target("direct", "digits-cnn-torch", "tfserving"), m, store, samples=2)
    assert p.target.path == "/v1/models/digits-cnn-torch:predict"
    assert len(p.bodies) == 2
    assert np.asarray(orjson.loads(p.bodies[0])["inputs"]).shape == (1, 64)


def test_right_answer_passes_and_wrong_class_fails(payload):
    ref = payload.expectations[0].reference
    assert check_response(payload, 0, 200, oip(ref), "onnxruntime") is None
    assert check_response(payload, 0, 200, oip(np.roll(ref, 1))) == "wrong class"


def test_near_tie_within_parity_tolerance_passes(payload):
    exp = payload.expectations[0]
    ref = exp.reference.copy()
    second = int(np.argsort(ref)[-2])
    ref[second] = ref[exp.expected] - exp.tolerance / 2  # a near-tie in the source's scores
    object.__setattr__(exp, "reference", ref)
    flipped = ref.copy()
    flipped[second] = ref[exp.expected] + exp.tolerance / 2
    assert check_response(payload, 0, 200, oip(flipped)) is None


@pytest.mark.parametrize("status,body,served_by,reason", [
    (0, None, None, "connection error"),
    (503, b'{"error": "x"}', None, "HTTP 503"),
    (200, b"not json", None, "response is not JSON"),
    (200, b"{}", None, "no outputs"),
    (200, oip(range(10), name="other"), None, "no output 'logits'"),
    (200, oip(range(10), datatype="FP64"), None, "datatype FP64 != FP32"),
    (200, oip(range(10), shape=[10]), None, "shape [10] != [1, 10]"),
    (200, oip(range(9), shape=[1, 10]), None, "9 values, expected 10"),
    (200, oip(range(10)), "tflite", "served by tflite, not onnxruntime"),
])
def test_bad_responses_are_failures(payload, status, body, served_by, reason):
    assert check_response(payload, 0, status, body, served_by) == reason


def test_tfserving_columnar_response(store):
    p = build_payload(Target("direct", "digits-cnn-torch", "tfserving"),
                      load_manifest(store / "digits-cnn-torch"), store)
    ref = p.expectations[5].reference.tolist()
    assert check_response(p, 5, 200, orjson.dumps({"outputs": [ref]})) is None
    assert check_response(p, 5, 200, orjson.dumps({"outputs": ref})) == "shape [10] != [1, 10]"
    assert check_response(p, 5, 200, orjson.dumps({"outputs": [np.roll(ref, 3).tolist()]})) == "wrong class"


def test_targets_skip_artifacts_that_failed_parity(store, tmp_path):
    import shutil

    shutil.copytree(store, tmp_path / "s")
    m = load_store(tmp_path / "s")["digits-cnn-keras"]
    m.artifacts["tflite"].parity.ok = False
    m.save(tmp_path / "s" / "digits-cnn-keras")
    targets, _, notes = resolve_targets(tmp_path / "s", [], ["tflite", "onnxruntime"], "gateway")
    names = {(t.model, t.runtime) for t in targets}
    assert ("digits-cnn-keras", "tflite") not in names
    assert ("digits-cnn-keras", "onnxruntime") in names and ("digits-cnn-torch", "tflite") in names
    assert any("digits-cnn-keras@tflite" in n for n in notes)
    _, _, notes = resolve_targets(tmp_path / "s", ["nope"], [], "gateway")
    assert notes == [f"nope: not in the model store {tmp_path / 's'}"]
