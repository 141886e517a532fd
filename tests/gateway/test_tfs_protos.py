"""The committed TF Serving descriptor set: equal to what the installed tensorflow-serving-api and
tensorflow produce, loadable without tensorflow, and beside tensorflow's own registrations."""

from __future__ import annotations

import json
import subprocess
import sys

from services.gateway.protos import DESCRIPTOR_SET
from services.gateway.protos.build import descriptor_set


def _run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_descriptor_set_matches_installed_tensorflow_serving_api():
    # Fails when the pinned tensorflow / tensorflow-serving-api change: rerun
    # `python -m services.gateway.protos.build` and commit services/gateway/protos/tfserving.binpb.
    assert DESCRIPTOR_SET.read_bytes() == descriptor_set()


def test_gateway_grpc_modules_do_not_import_tensorflow():
    got = _run("import sys, json\n"
               "import services.gateway.grpc_api, services.gateway.tfs_grpc\n"
               "from services.gateway.protos import load\n"
               "n = len(load())\n"
               "print(json.dumps({'n': n, 'tf': sorted(m for m in sys.modules"
               " if m.split('.')[0] in ('tensorflow', 'tensorflow_serving'))}))")
    assert got["n"] > 100 and got["tf"] == []


def test_loads_after_tensorflow_registered_the_same_files():
    got = _run("import json\n"
               "from tensorflow_serving.apis import predict_pb2, prediction_service_pb2\n"
               "from services.gateway.protos import load\n"
               "P = load()['tensorflow.serving.PredictRequest']\n"
               "r = predict_pb2.PredictRequest(); r.model_spec.name = 'm'\n"
               "r.inputs['x'].float_val.append(1.5)\n"
               "back = P.FromString(r.SerializeToString())\n"
               "print(json.dumps({'name': back.model_spec.name,"
               " 'v': list(back.inputs['x'].float_val), 'same': P is predict_pb2.PredictRequest}))")
    assert got["name"] == "m" and got["v"] == [1.5]
