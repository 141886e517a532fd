"""Small stand-ins for the real backends, speaking their wire protocols over a tiny store.

Models compute y = flatten(x) @ W in float32, so expected outputs are exact. Each fake is a
stdlib ThreadingHTTPServer on 127.0.0.1 with a `mode`: "ok", "error" (500 on inference) or
"hang" (accepts, never answers until stopped).
"""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from model_store.manifest import (
    Artifact,
    Manifest,
    Parity,
    Signature,
    Source,
    TensorSpec,
)
from services.common import codecs

# name -> (input spec shape, layout, parity failures by format)
MODELS: dict[str, tuple[list[int], str | None, set[str]]] = {
    "tiny-mlp": ([-1, 4], None, set()),
    "tiny-img": ([-1, 2, 2, 1], "NHWC", {"tflite"}),  # tflite failed parity: not routable
}
OUT = 3


def weights(name: str) -> np.ndarray:
    n_in = int(np.prod(MODELS[name][0][1:]))
    return np.random.default_rng(len(name)).standard_normal((n_in, OUT)).astype(np.float32)


def compute(name: str, x: np.ndarray) -> np.ndarray:
    return (x.reshape(x.shape[0], -1).astype(np.float32) @ weights(name)).astype(np.float32)


def make_store(root: Path) -> Path:
    """A model store with manifests and reference batches of 32 for the tiny models."""
    for name, (shape, layout, failed) in MODELS.items():
        d = root / name
        (d / "reference").mkdir(parents=True)
        x = np.random.default_rng(7).standard_normal([32, *shape[1:]]).astype(np.float32)
        np.save(d / "reference/inputs.npy", x)
        np.save(d / "reference/outputs.npy", compute(name, x))
        arts = {}
        for fmt, rt in (("torchserve", "torchserve"), ("savedmodel", "tfserving"),
                        ("onnx", "onnxruntime"), ("tflite", "tflite")):
            ok = fmt not in failed
            arts[fmt] = Artifact(
                format=fmt, version=1, path=f"{fmt}/1/model", bytes=1, sha256="0" * 64,
                route="fake", converters={}, export_seconds=0.0,
                parity=Parity(ok=ok, runtime=rt, batch_sizes=[1, 32], tolerance=1e-4,
                              max_abs_error=0.0 if ok else 0.5,
                              error=None if ok else "max abs error 0.5 > 1e-4"),
            )
        Manifest(
            name=name,
            source=Source(framework="pytorch", framework_version="0", architecture="linear",
                          weights="random-init"),
            signature=Signature(
                inputs=[TensorSpec(name="x", datatype="FP32", shape=shape, layout=layout)],
                outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1, OUT])],
            ),
            artifacts=arts,
        ).save(d)
    return root


class FakeBackend:
    def __init__(self, protocol: str, port: int = 0, served_by: str | None = None) -> None:
        self.protocol = protocol  # "oip" | "tfserving" | "torchserve"
        self.served_by = served_by
        self.mode = "ok"
        self.requests: list[tuple[str, str]] = []  # (method, path) seen
        self.stopped = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> "FakeBackend":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self._server.shutdown()
        self._server.server_close()

    # -- protocol handlers: (method, path, headers, body) -> (status, headers, body) ----------

    def handle(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, dict, bytes]:
        self.requests.append((method, path))
        infer = method == "POST" and not path.startswith("/v2/repository")
        if infer and self.mode == "hang":
            self.stopped.wait(60)
            return 500, {}, b""
        if infer and self.mode == "error":
            return 500, {}, orjson.dumps({"error": "fake backend exploded"})
        try:
            return getattr(self, f"_{self.protocol}")(method, path, headers, body)
        except codecs.CodecError as e:
            return 400, {}, orjson.dumps({"error": str(e)})

    def _oip(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, dict, bytes]:
        if path in ("/v2/health/live", "/v2/health/ready"):
            return 200, {}, b"{}"
        m = re.fullmatch(r"/v2/models/([^/]+)(/ready|/infer)?", path)
        if not m or m.group(1) not in MODELS:
            return 404, {}, orjson.dumps({"error": f"no route {path}"})
        name, what = m.groups()
        if what is None:
            return 200, {}, orjson.dumps({"name": name, "platform": "fake"})
        if what == "/ready":
            return 200, {}, b""
        hl = headers.get("Inference-Header-Content-Length")
        head, binary = codecs.split_binary_body(body, int(hl) if hl else None)
        doc = orjson.loads(head)
        (_, x), = codecs.decode_tensors(doc["inputs"], binary).items()
        out = {"y": compute(name, x)}
        params = doc.get("parameters") or {}
        want = {o["name"] for o in doc.get("outputs", []) if (o.get("parameters") or {}).get(
            "binary_data", params.get("binary_data_output", False))}
        if not doc.get("outputs") and params.get("binary_data_output"):
            want = {"y"}
        tensors, blob = codecs.encode_binary_tensors(out, want)
        head = orjson.dumps({"model_name": name, "outputs": tensors})
        extra = {"Inference-Header-Content-Length": str(len(head))} if blob else {}
        return 200, extra, head + blob

    def _tfserving(self, method: str, path: str, headers: Any, body: bytes):
        m = re.fullmatch(r"/v1/models/([^/:]+)(:predict|/metadata)?", path)
        if not m or m.group(1) not in MODELS:
            return 404, {}, orjson.dumps({"error": f"Servable not found for request: {path}"})
        name, what = m.groups()
        if what is None:
            return 200, {}, orjson.dumps({"model_version_status": [
                {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK"}}]})
        if what == "/metadata":
            return 200, {}, orjson.dumps({"model_spec": {"name": name}})
        dtypes = {"x": np.dtype("float32")}
        arrays, row = codecs.decode_tfserving_predict(orjson.loads(body), dtypes)
        out = {"y": compute(name, arrays["x"])}
        return 200, {}, orjson.dumps(codecs.encode_tfserving_predict(out, row))

    def _torchserve(self, method: str, path: str, headers: Any, body: bytes):
        if path == "/ping":
            return 200, {}, orjson.dumps({"status": "Healthy"})
        m = re.fullmatch(r"/(predictions|models)/([^/]+)", path)
        if not m or m.group(2) not in MODELS:
            return 404, {}, orjson.dumps({"code": 404, "type": "ModelNotFoundException",
                                          "message": f"Model not found: {path}"})
        what, name = m.groups()
        if what == "models":  # management API describe
            return 200, {}, orjson.dumps([{"modelName": name, "workers": [{"status": "READY"}]}])
        doc = orjson.loads(body)
        if "inputs" not in doc or any("binary_data_size" in str(t) for t in doc["inputs"]):
            return 400, {}, orjson.dumps({"code": 400, "message": "JSON tensors only"})
        (_, x), = codecs.decode_tensors(doc["inputs"]).items()
        out = codecs.encode_json_tensor("y", compute(name, x))
        return 200, {}, orjson.dumps({"model_name": name, "outputs": [out]})


def _make_handler(fake: FakeBackend) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else header + body writes meet delayed ACKs (40 ms)

        def _serve(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            status, headers, out = fake.handle(self.command, self.path, self.headers, body)
            if fake.stopped.is_set():
                return
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            if fake.served_by:
                self.send_header("X-Served-By", fake.served_by)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = _serve

        def log_message(self, *args: Any) -> None:
            pass

    return Handler
