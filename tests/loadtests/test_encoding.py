"""The bench's tensor encoding: auto = binary tensor extension above BINARY_ABOVE bytes of JSON,
JSON below; json / binary forced; direct TF Serving / TorchServe keep their wire formats; every
run records what it sent."""

from dataclasses import replace

import numpy as np
import orjson
import pytest

from contract.codec import InferRequest
from contract.manifest import load_manifest
from loadtests import openloop, payloads, runner
from loadtests.scenarios import RunSpec
from tests.loadtests.fakes import FakeOIPServer, make_model

SPEC = RunSpec("gateway", "closed", "digits-cnn-torch", "onnxruntime", 1, 1)


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    """A model whose batch-1 JSON body is ~200 KB (10,000 floats), and a digits-sized one."""
    root = tmp_path_factory.mktemp("big_store")
    make_model(root, "wide", n_in=10_000)
    make_model(root, "digits-cnn-torch")
    return root


def _payload(store, model, encoding, via="gateway", runtime="onnxruntime", samples=4):
    target = payloads.Target(via, model, runtime)
    return payloads.build_payload(target, load_manifest(store / model), store, samples, encoding)


def _decoded(payload, i):
    req = InferRequest.from_oip(payload.bodies[i], payload.header_lens[i])
    return req.arrays(payload.signature)["input"]


def test_auto_sends_a_large_tensor_as_binary_and_a_small_one_as_json(big_store):
    wide = _payload(big_store, "wide", "auto")
    forced_json = _payload(big_store, "wide", "json")
    assert min(map(len, forced_json.bodies)) > payloads.BINARY_ABOVE  # the rule's premise
    assert wide.encoding == "binary" and all(wide.header_lens)
    assert wide.headers(0) == {"Inference-Header-Content-Length": str(wide.header_lens[0])}
    # Same samples, same numbers: only the wire form differs (and it is much smaller).
    for i in range(4):
        np.testing.assert_array_equal(_decoded(wide, i), _decoded(forced_json, i))
        assert len(wide.bodies[i]) < len(forced_json.bodies[i]) / 2
    small = _payload(big_store, "digits-cnn-torch", "auto")
    assert small.encoding == "json" and small.headers(0) == {}
    assert orjson.loads(small.bodies[0])["inputs"][0]["shape"] == [1, 64]


def test_explicit_encodings_are_honoured(big_store):
    binary = _payload(big_store, "digits-cnn-torch", "binary")
    assert binary.encoding == "binary" and all(binary.header_lens)
    json_ = _payload(big_store, "digits-cnn-torch", "json")
    np.testing.assert_array_equal(_decoded(binary, 1), _decoded(json_, 1))
    wide = _payload(big_store, "wide", "json")
    assert wide.encoding == "json" and wide.headers(0) == {}
    orjson.loads(wide.bodies[0])  # plain JSON, however large


def test_direct_tfserving_and_torchserve_keep_their_wire_formats(big_store):
    tfs = _payload(big_store, "wide", "binary", via="direct", runtime="tfserving")
    assert tfs.encoding == "tfserving-json" and tfs.headers(0) == {}
    assert "inputs" in orjson.loads(tfs.bodies[0])  # TF Serving's columnar JSON
    ts = _payload(big_store, "wide", "auto", via="direct", runtime="torchserve")
    assert ts.encoding == "json" and ts.headers(0) == {}  # TorchServe has no binary extension
    # Through the gateway the client sends binary even for TorchServe (the gateway converts).
    assert _payload(big_store, "wide", "auto", runtime="torchserve").encoding == "binary"


def test_an_unknown_encoding_is_refused_naming_the_choices(big_store):
    with pytest.raises(ValueError, match="unknown encoding 'xml': one of auto, json, binary"):
        _payload(big_store, "digits-cnn-torch", "xml")


def test_open_loop_bodies_are_the_payloads(big_store):
    p = _payload(big_store, "wide", "auto")
    bodies = openloop.encode_bodies(p)
    assert [(b.data, b.header_len) for b in bodies] == list(zip(p.bodies, p.header_lens))


def test_locust_and_open_loop_runs_send_and_record_the_encoding(store, tmp_path):
    with FakeOIPServer(store, "digits-cnn-torch") as srv:
        r = runner.run_locust(SPEC, host=srv.url, store=store, warmup=0.2, window=1.0,
                              out_dir=tmp_path, encoding="binary")
        assert r["ok"] and r["failures"] == 0 and r["encoding"] == "binary"
        assert srv.binary == srv.requests > 10  # every request, warm-up included
        before = srv.requests
        r = runner.run_locust(SPEC, host=srv.url, store=store, warmup=0.2, window=1.0,
                              out_dir=tmp_path)
        assert r["ok"] and r["encoding"] == "json"  # auto: a digits body is small
        assert srv.binary == before < srv.requests
        o = runner.run_open(replace(SPEC, mode="open", rate=50.0), host=srv.url, store=store,
                            manifest=load_manifest(store / SPEC.model), warmup=0.1, window=0.5,
                            out_dir=tmp_path, settings=runner.StackSettings(), encoding="binary")
    assert o["ok"] and o["failures"] == 0 and o["encoding"] == "binary"


def test_bench_refuses_an_unknown_encoding_before_measuring(tmp_path):
    with pytest.raises(ValueError, match="unknown encoding"):
        runner.bench(None, runner.StackSettings(), tmp_path, encoding="protobuf")
