"""A tiny model store (schema 2) and a fake OIP server computing its models' outputs exactly.

- make_model: one input "input" FP32 [-1, n_in] -> "logits" FP32 [-1, n_out] = input @ W.
- make_token_model: "input_ids" INT64 [-1, -1] (token ids), "attention_mask" INT64 [-1, -1]
  (mask) -> "logits" FP32 [-1, n_out] = mean of E[token] over the real tokens, and "length"
  INT64 [-1, 1] = number of real tokens. Reference samples are padded to one length, so a
  request cropped to its mask length has the same answer (as with a real transformer).
The fake's parameters live beside the manifest in fake.npz.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import orjson

from contract.codec import CodecError, InferRequest, InferResponse, header_length
from contract.manifest import (
    Artifact, Manifest, Parity, Signature, Source, TensorSpec, load_manifest, save_reference,
)
from contract.runtimes import FORMATS

ARTIFACT_PATHS = {"onnx": "onnx/1/model.onnx", "tflite": "tflite/1/model.tflite",
                  "savedmodel": "savedmodel/1", "torchserve": "torchserve/1/m.mar",
                  "aotinductor": "aotinductor/1/model.pt2", "executorch": "executorch/1/model.pte"}


def compute(params: dict[str, np.ndarray], arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if "w" in params:
        return {"logits": (arrays["input"].astype(np.float32) @ params["w"]).astype(np.float32)}
    ids, mask = arrays["input_ids"], arrays["attention_mask"].astype(np.float32)
    emb = params["e"][ids] * mask[..., None]
    n = mask.sum(1, keepdims=True)
    return {"logits": (emb.sum(1) / np.maximum(n, 1)).astype(np.float32),
            "length": n.astype(np.int64)}  # fmt: skip


def _save(store: Path, name: str, framework: str, sig: Signature, params: dict,
          inputs: dict[str, np.ndarray], sizes: dict[str, int] | None) -> Manifest:  # fmt: skip
    root = store / name
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "fake.npz", **params)
    outputs = compute(params, inputs)
    ref = save_reference(root, inputs, outputs, outputs["logits"].argmax(1))
    sizes = sizes or {}
    manifest = Manifest(
        name=name,
        source=Source(framework=framework, framework_version="0", architecture=name.rsplit("-", 1)[0],
                      weights="trained", dataset="synthetic"),
        signature=sig,
        reference=ref,
        artifacts={
            fmt: Artifact(format=fmt, version=1, path=ARTIFACT_PATHS[fmt],
                          bytes=sizes.get(fmt, 1000 * (i + 1)), sha256="0" * 64, route="test",
                          converters={}, export_seconds=0.0,
                          parity=Parity(ok=True, runtime="numpy", batch_sizes=[1], tolerance=1e-4))
            for i, fmt in enumerate(FORMATS)
        },
    )
    manifest.save(root)
    return manifest


def make_model(store: Path, name: str, n_in: int = 64, n_out: int = 10, seed: int = 0,
               framework: str = "pytorch", sizes: dict[str, int] | None = None) -> Manifest:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((32, n_in)).astype(np.float32)
    w = rng.standard_normal((n_in, n_out)).astype(np.float32)
    sig = Signature(inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, n_in])],
                    outputs=[TensorSpec(name="logits", datatype="FP32", shape=[-1, n_out])])
    return _save(store, name, framework, sig, {"w": w}, {"input": x}, sizes)


def make_token_model(store: Path, name: str, seq: int = 12, vocab: int = 50, n_out: int = 10,
                     seed: int = 0, framework: str = "pytorch") -> Manifest:  # fmt: skip
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, seq + 1, size=32)
    lengths[0] = 5  # sample 0 is padded
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1, vocab, size=(32, seq)).astype(np.int64) * mask  # pad id 0
    dims = ["batch", "sequence"]
    sig = Signature(
        inputs=[TensorSpec(name="input_ids", datatype="INT64", shape=[-1, -1], dims=dims,
                           role="token_ids", value_range=(0, vocab)),
                TensorSpec(name="attention_mask", datatype="INT64", shape=[-1, -1], dims=dims,
                           role="mask", value_range=(0, 2))],
        outputs=[TensorSpec(name="logits", datatype="FP32", shape=[-1, n_out]),
                 TensorSpec(name="length", datatype="INT64", shape=[-1, 1])],
    )  # fmt: skip
    e = rng.standard_normal((vocab, n_out)).astype(np.float32)
    return _save(store, name, framework, sig, {"e": e}, {"input_ids": ids, "attention_mask": mask}, None)


class FakeOIPServer:
    """Answers any POST carrying an OIP body (any path) with the model's outputs computed from the
    request (the class output rolled by one when wrong=True), naming the runtime of
    `<model>@<runtime>` in X-Served-By. Records the shapes of every input it received."""

    def __init__(self, store: Path, model: str, wrong: bool = False):
        self.manifest = load_manifest(store / model)
        with np.load(store / model / "fake.npz") as f:
            self.params = dict(f)
        self.wrong = wrong
        self.requests = 0
        self.binary = 0  # requests sent in the binary tensor extension
        self.shapes: list[dict[str, list[int]]] = []
        server = self
        sig = self.manifest.signature

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 1 << 16  # headers and body in one write: no delayed-ACK stalls
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def _send(self, code: int, body: bytes, served_by: str = "fake", hl: int | None = None):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Served-By", served_by)
                if hl is not None:
                    self.send_header("Inference-Header-Content-Length", str(hl))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._send(200, b'{"ready": true}')

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                server.requests += 1
                server.binary += "Inference-Header-Content-Length" in self.headers
                try:
                    req = InferRequest.from_oip(body, header_length(
                        self.headers.get("Inference-Header-Content-Length")))
                    req.validate(sig)
                    arrays = req.arrays(sig)
                except CodecError as e:
                    return self._send(e.status, orjson.dumps({"error": e.message}))
                server.shapes.append({k: list(v.shape) for k, v in arrays.items()})
                out = compute(server.params, arrays)
                if server.wrong:
                    out["logits"] = np.roll(out["logits"], 1, axis=1)
                runtime = self.path.split("@")[1].split("/")[0] if "@" in self.path else "fake"
                answer = InferResponse.from_arrays(model, out, "1", req.id)
                data, hl = answer.select(req.output_names(sig)).to_oip(req.binary_outputs(sig))
                self._send(200, data, runtime, hl)

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
