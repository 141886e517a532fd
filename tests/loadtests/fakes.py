"""A tiny model store and a fake OIP server answering from its reference outputs."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from model_store.manifest import (
    FORMATS, Artifact, Manifest, Parity, Signature, Source, TensorSpec,
)

ARTIFACT_PATHS = {"onnx": "onnx/1/model.onnx", "tflite": "tflite/1/model.tflite",
                  "savedmodel": "savedmodel/1", "torchserve": "torchserve/1/m.mar"}


def make_model(store: Path, name: str, n_in: int = 64, n_out: int = 10, seed: int = 0,
               framework: str = "pytorch", sizes: dict[str, int] | None = None) -> Manifest:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((32, n_in)).astype(np.float32)
    w = rng.standard_normal((n_in, n_out)).astype(np.float32)
    y = x @ w
    root = store / name
    (root / "reference").mkdir(parents=True, exist_ok=True)
    np.save(root / "reference/inputs.npy", x)
    np.save(root / "reference/outputs.npy", y)
    np.save(root / "reference/labels.npy", y.argmax(1))
    sizes = sizes or {}
    manifest = Manifest(
        name=name,
        source=Source(framework=framework, framework_version="0", architecture=name.rsplit("-", 1)[0],
                      weights="trained", dataset="synthetic"),
        signature=Signature(inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, n_in])],
                            outputs=[TensorSpec(name="logits", datatype="FP32", shape=[-1, n_out])]),
        artifacts={
            fmt: Artifact(format=fmt, version=1, path=ARTIFACT_PATHS[fmt],
                          bytes=sizes.get(fmt, 1000 * (i + 1)), sha256="0" * 64, route="test",
                          converters={}, export_seconds=0.0,
                          parity=Parity(ok=True, runtime="numpy", batch_sizes=[1], tolerance=1e-4))
            for i, fmt in enumerate(FORMATS)
        },
    )
    manifest.reference.labels = "reference/labels.npy"
    manifest.save(root)
    return manifest


class FakeOIPServer:
    """Answers any POST carrying an OIP body with the reference output of the matching sample
    (or a wrong one when wrong=True), naming the runtime of `<model>@<runtime>` in X-Served-By."""

    def __init__(self, store: Path, model: str, wrong: bool = False):
        ref = store / model / "reference"
        self.inputs = np.load(ref / "inputs.npy")
        self.outputs = np.load(ref / "outputs.npy")
        self.wrong = wrong
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 1 << 16  # headers and body in one write: no delayed-ACK stalls
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def _send(self, code: int, doc: dict, served_by: str = "fake"):
                body = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Served-By", served_by)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._send(200, {"ready": True})

            def do_POST(self):
                doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests += 1
                x = np.asarray(doc["inputs"][0]["data"], dtype=np.float32)
                i = int(np.argmin(((server.inputs - x) ** 2).sum(1)))
                y = server.outputs[i]
                if server.wrong:
                    y = np.roll(y, 1)
                runtime = self.path.split("@")[1].split("/")[0] if "@" in self.path else "fake"
                self._send(200, {"model_name": model, "outputs": [
                    {"name": "logits", "shape": [1, len(y)], "datatype": "FP32",
                     "data": y.tolist()}]}, runtime)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FakeOIPServer":
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
