import numpy as np
import orjson
import pytest

from loadtests.payloads import (OutputCheck, Target, artifact_key, build_payload, certified_runtimes, check_response,
                                resolve_targets)
from contract.manifest import load_manifest, load_store


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
    np.testing.assert_array_equal(np.asarray(t["data"], dtype=np.float32), inputs["input"][3])
    assert payload.expectations[3].expected == int(outputs["logits"][3].argmax())
    assert payload.expectations[3].outputs == (OutputCheck("logits", "FP32", (1, 10)),)


def test_direct_paths_and_tfserving_body(store):
    m = load_manifest(store / "digits-cnn-torch")
    assert Target("direct", "m", "torchserve").path == "/predictions/m"
    assert Target("direct", "m", "tflite").path == "/v2/models/m/infer"
    p = build_payload(Target("direct", "digits-cnn-torch", "tfserving"), m, store, samples=2)
    assert p.target.path == "/v1/models/digits-cnn-torch:predict"
    assert len(p.bodies) == 2
    assert np.asarray(orjson.loads(p.bodies[0])["inputs"]["input"]).shape == (1, 64)


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
    assert check_response(p, 5, 200, orjson.dumps({"outputs": ref})) == (
        "TF Serving answer: output 'logits' has shape [10], batch 1 expected")
    assert check_response(p, 5, 200, orjson.dumps({"outputs": [ref + ref]})) == "shape [1, 20] != [1, 10]"
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


def test_multi_input_bodies_are_cropped_to_the_mask_length(token_store):
    m = load_manifest(token_store / "digits-transformer-torch")
    inputs, outputs, _ = m.load_reference(token_store)
    p = build_payload(Target("gateway", m.name, "onnxruntime"), m, token_store)
    lengths = set()
    for i, body in enumerate(p.bodies):
        doc = orjson.loads(body)
        ids, mask = doc["inputs"]
        n = int(inputs["attention_mask"][i].sum())
        assert (ids["name"], ids["datatype"], ids["shape"]) == ("input_ids", "INT64", [1, n])
        assert (mask["name"], mask["shape"]) == ("attention_mask", [1, n])
        assert ids["data"] == inputs["input_ids"][i, :n].tolist() and set(mask["data"]) == {1}
        exp = p.expectations[i]
        assert exp.outputs == (OutputCheck("logits", "FP32", (1, 10)), OutputCheck("length", "INT64", (1, 1)))
        assert exp.classify == "logits" and exp.expected == int(outputs["logits"][i].argmax())
        lengths.add(n)
    assert len(lengths) > 3  # variable-length requests
    tf = build_payload(Target("direct", m.name, "tfserving"), m, token_store, samples=1)
    assert set(orjson.loads(tf.bodies[0])["inputs"]) == {"input_ids", "attention_mask"}


def two_outputs(logits, length=1, logits_dtype="FP32", length_shape=(1, 1)):
    return orjson.dumps({"outputs": [
        {"name": "logits", "datatype": logits_dtype, "shape": [1, len(logits)], "data": list(map(float, logits))},
        {"name": "length", "datatype": "INT64", "shape": list(length_shape), "data": [length]}]})


def test_every_output_is_checked(token_store):
    m = load_manifest(token_store / "digits-transformer-keras")
    p = build_payload(Target("gateway", m.name, "tflite"), m, token_store, samples=2)
    ref = p.expectations[0].reference
    assert check_response(p, 0, 200, two_outputs(ref)) is None
    assert check_response(p, 0, 200, two_outputs(np.roll(ref, 1))) == "wrong class"
    assert check_response(p, 0, 200, two_outputs(ref, length_shape=(1,))) == "length: shape [1] != [1, 1]"
    assert check_response(p, 0, 200, two_outputs(ref, logits_dtype="FP64")) == "logits: datatype FP64 != FP32"
    only = orjson.dumps({"outputs": orjson.loads(two_outputs(ref))["outputs"][:1]})
    assert check_response(p, 0, 200, only) == "no output 'length'"
    # binary outputs are read too
    from contract.codec import InferResponse
    body, hl = InferResponse.from_arrays(m.name, {"logits": ref[None].astype(np.float32),
                                                  "length": np.array([[5]])}).to_oip({"logits"})
    assert check_response(p, 0, 200, body, None, hl) is None


def test_without_a_mask_dynamic_dims_cycle_through_lengths(tmp_path):
    from contract.manifest import Signature
    from tests.loadtests.fakes import make_token_model

    m = make_token_model(tmp_path, "seq-model", seq=8)
    m.signature = Signature(inputs=[m.signature.inputs[0]], outputs=m.signature.outputs)
    p = build_payload(Target("gateway", m.name, "onnxruntime"), m, tmp_path, samples=6)
    shapes = [orjson.loads(b)["inputs"][0]["shape"] for b in p.bodies]
    assert shapes == [[1, 8], [1, 4], [1, 2]] * 2
    assert [e.expected is not None for e in p.expectations] == [True, False, False] * 2


def test_quantized_variants_are_targets_of_their_own(store, tmp_path):
    """`--runtimes tflite:int8-static`: the variant through the gateway (or as <model>:<variant> on
    its server), only when its certificate passed; near-ties within twice its max abs error."""
    import shutil

    shutil.copytree(store, tmp_path / "s")
    m = load_store(tmp_path / "s")["digits-cnn-keras"]
    variant = m.artifacts["tflite"].model_copy(deep=True)
    variant.variant, variant.parity.tolerance, variant.parity.max_abs_error = "int8-static", None, 0.25
    m.artifacts["tflite:int8-static"] = variant
    m.save(tmp_path / "s" / "digits-cnn-keras")
    targets, manifests, notes = resolve_targets(tmp_path / "s", [], ["tflite:int8-static"], "gateway")
    assert [(t.model, t.runtime) for t in targets] == [("digits-cnn-keras", "tflite:int8-static")]
    assert len(notes) == 1 and notes[0].startswith(
        "digits-cnn-torch@tflite:int8-static: no tflite:int8-static artifact that passed parity")
    # the note lists what the model can be asked for instead, variants included
    has = notes[0].partition("(certified for this model: ")[2].rstrip(")").split(", ")
    assert "tflite" in has and "tflite:int8-static" not in has
    assert all(manifests["digits-cnn-torch"].passed(artifact_key(rt)) for rt in has)
    assert "tflite:int8-static" in certified_runtimes(manifests["digits-cnn-keras"])
    t = targets[0]
    assert t.path == "/v2/models/digits-cnn-keras@tflite:int8-static/infer" and t.server == "tflite"
    assert Target("direct", t.model, t.runtime).path == "/v2/models/digits-cnn-keras:int8-static/infer"
    p = build_payload(t, manifests["digits-cnn-keras"], tmp_path / "s")
    assert p.expectations[0].tolerance == 0.25
    # the source's scores of sample 0: a variant answering its runner-up is accepted within 2 x
    # the variant's max abs error of the top score, and refused beyond
    ref, top = p.expectations[0].reference, p.expectations[0].expected
    second, last = int(np.argsort(ref)[-2]), int(np.argmin(ref))
    gap = float(ref[top] - ref[second])
    assert ref[top] - ref[last] > gap + 0.01
    variant.parity.max_abs_error = gap / 2 + 0.005
    m.save(tmp_path / "s" / "digits-cnn-keras")
    p = build_payload(t, load_store(tmp_path / "s")["digits-cnn-keras"], tmp_path / "s")
    one_hot = lambda c: np.eye(len(ref))[c] * 10  # noqa: E731
    assert check_response(p, 0, 200, oip(one_hot(second)), served_by="tflite") is None
    assert check_response(p, 0, 200, oip(one_hot(last)), served_by="tflite") == "wrong class"
    assert check_response(p, 0, 200, oip(ref), served_by="onnxruntime") == "served by onnxruntime, not tflite:int8-static"
