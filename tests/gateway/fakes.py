"""Small stand-ins for the real backends, speaking their wire protocols over a tiny store.

Every fake decodes and encodes with contract/codec.py, as the real servers do, and computes its
outputs exactly (float32 matmuls, integer sums), so expected answers are exact:

- tiny-mlp   x FP32 [-1, 4] -> y FP32 [-1, 3]
- tiny-img   x FP32 [-1, 2, 2, 1] (NHWC) -> y FP32 [-1, 3]; its tflite artifact failed parity
- tiny-pair  x FP32 [-1, 4], ids INT64 [-1, -1] (batch, sequence; token ids in [0, 100))
             -> logits FP32 [-1, 3] = x @ W + 0.01 * sum(ids), total INT64 [-1, 1] = sum(ids)
- tiny-dead  x FP32 [-1, 4] -> y FP32 [-1, 3]; no artifact passed parity: never routable

Each fake is a stdlib ThreadingHTTPServer on 127.0.0.1 with a `mode`: "ok", "error" (500 on
inference), "worker-died" (TorchServe's 507), "hang" (accepts inferences, never answers them
until stopped), "drop" (closes the connection of an inference without a byte of answer, as a
killed server does), "cut" (sends the headers of an answer, then closes) or "freeze" (answers
nothing at all, probes included, as a SIGSTOPped server), and `unloaded`: models it answers
503 {"error": "model X failed to load: ..."} for, as our OIP servers do. Protocol "any" speaks
all three on one port, by path (/v2 OIP, /v1 TF Serving, else TorchServe): every KServe predictor
of a gateway behind one URL; `names` maps the names a predictor knows models by (TF Serving's:
the InferenceService's) to the store's.
"""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from contract.codec import CodecError, InferRequest, InferResponse, header_length
from contract.manifest import (
    Artifact,
    ExportFailure,
    Manifest,
    Parity,
    Signature,
    Source,
    TensorSpec,
    save_reference,
)

OUT = 3
FORMATS = (("torchserve", "torchserve"), ("savedmodel", "tfserving"), ("onnx", "onnxruntime"),
           ("tflite", "tflite"))  # fmt: skip
SEQ = 16  # sequence length of tiny-pair's reference batch

SIGNATURES: dict[str, Signature] = {
    "tiny-mlp": Signature(inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 4])],
                          outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1, OUT])]),
    "tiny-img": Signature(inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 2, 2, 1],
                                             layout="NHWC")],
                          outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1, OUT])]),
    "tiny-pair": Signature(
        inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 4]),
                TensorSpec(name="ids", datatype="INT64", shape=[-1, -1], dims=["batch", "sequence"],
                           role="token_ids", value_range=(0, 100))],
        outputs=[TensorSpec(name="logits", datatype="FP32", shape=[-1, OUT]),
                 TensorSpec(name="total", datatype="INT64", shape=[-1, 1])],
    ),
    "tiny-dead": Signature(inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 4])],
                           outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1, OUT])]),
}  # fmt: skip
FAILED_PARITY: dict[str, set[str]] = {
    "tiny-img": {"tflite"},
    "tiny-dead": {"torchserve", "savedmodel", "onnx"},  # and no tflite artifact at all
}
MODELS = tuple(SIGNATURES)


def weights(name: str) -> np.ndarray:
    n_in = int(np.prod(SIGNATURES[name].inputs[0].shape[1:]))
    return np.random.default_rng(len(name)).standard_normal((n_in, OUT)).astype(np.float32)


def compute(name: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    x = arrays["x"]
    y = (x.reshape(x.shape[0], -1).astype(np.float32) @ weights(name)).astype(np.float32)
    if name != "tiny-pair":
        return {"y": y}
    total = arrays["ids"].astype(np.int64).sum(axis=1, keepdims=True)
    return {"logits": (y + np.float32(0.01) * total.astype(np.float32)).astype(np.float32),
            "total": total}  # fmt: skip


def reference_inputs(name: str, batch: int = 32, seq: int = SEQ) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    sig = SIGNATURES[name]
    x = rng.standard_normal([batch, *sig.inputs[0].shape[1:]]).astype(np.float32)
    if name != "tiny-pair":
        return {"x": x}
    return {"x": x, "ids": rng.integers(0, 100, size=(batch, seq), dtype=np.int64)}


def make_store(root: Path) -> Path:
    """A model store (schema 2) with manifests and reference batches of 32."""
    for name, sig in SIGNATURES.items():
        d = root / name
        d.mkdir(parents=True)
        inputs = reference_inputs(name)
        ref = save_reference(d, inputs, compute(name, inputs), None)
        failed = FAILED_PARITY.get(name, set())
        arts, export_failed = {}, {}
        for fmt, rt in FORMATS:
            if name == "tiny-dead" and fmt == "tflite":
                export_failed[fmt] = ExportFailure(error="tflite: no route converts Erf")
                continue
            ok = fmt not in failed
            arts[fmt] = Artifact(
                format=fmt, version=1, path=f"{fmt}/1/model", bytes=1, sha256="0" * 64,
                route="fake", converters={}, export_seconds=0.0,
                parity=Parity(ok=ok, runtime=rt, batch_sizes=[1, 32], tolerance=1e-4,
                              max_abs_error=0.0 if ok else 0.5,
                              error=None if ok else "max abs error 0.5 > 1e-4"),
            )  # fmt: skip
        Manifest(
            name=name,
            source=Source(framework="pytorch", framework_version="0", architecture="linear",
                          weights="random-init"),
            signature=sig,
            reference=ref,
            artifacts=arts,
            failed=export_failed,
        ).save(d)
    return root


class _Server(ThreadingHTTPServer):
    # A real server's listen backlog, not socketserver's 5: a gateway's concurrent readiness
    # fan-out to one fake would otherwise see dropped SYNs (1 s connect timeouts).
    request_queue_size = 128


class FakeBackend:
    def __init__(self, protocol: str, port: int = 0, served_by: str | None = None) -> None:
        self.protocol = protocol  # "oip" | "tfserving" | "torchserve" | "any"
        self.names: dict[str, str] = {}  # its own name of a model -> the store's
        self.served_by = served_by
        self.mode = "ok"
        self.unloaded: set[str] = set()  # models that "failed to load" here: 503
        self.requests: list[tuple[str, str]] = []  # (method, path) seen
        self.bodies: list[tuple[str, dict[str, str], bytes]] = []  # inference requests seen
        self.stopped = threading.Event()
        self._server = _Server(("127.0.0.1", port), _make_handler(self))
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

    def last(self, path_part: str) -> tuple[dict[str, str], bytes]:
        """Headers and body of the last inference request whose path contains `path_part`."""
        return next((h, b) for p, h, b in reversed(self.bodies) if path_part in p)

    # -- protocol handlers: (method, path, headers, body) -> (status, headers, body) ----------

    def handle(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, dict, bytes]:
        self.requests.append((method, path))
        infer = method == "POST" and not path.startswith("/v2/repository")
        if infer:
            self.bodies.append((path, {k.lower(): v for k, v in headers.items()}, body))
            del self.bodies[:-50]
        if self.mode == "freeze" or (infer and self.mode == "drop"):
            while self.mode == "freeze" and not self.stopped.wait(0.05):
                pass
            if self.mode in ("freeze", "drop"):
                raise ConnectionAbortedError  # the handler closes without answering
        if infer and self.mode == "hang":
            self.stopped.wait(60)
            return 500, {}, b""
        if infer and self.mode == "error":
            return 500, {}, orjson.dumps({"error": "fake backend exploded"})
        if infer and self.mode == "worker-died":  # TorchServe, its worker lost mid-request
            return 507, {}, orjson.dumps({"code": 507, "type": "InternalServerException",
                                          "message": "Worker died."})
        protocol = self.protocol
        if protocol == "any":
            protocol = {"/v2": "oip", "/v1": "tfserving"}.get(path[:3], "torchserve")
        try:
            return getattr(self, f"_{protocol}")(method, path, headers, body)
        except CodecError as e:
            return e.status, {}, orjson.dumps({"error": e.message})

    def _compute(self, model: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's exact outputs; mode "skew": float outputs with their columns reversed (a
        wrong runtime: arg-max moves, for shadow traffic to catch)."""
        out = compute(model, arrays)
        if self.mode == "skew":
            out = {k: v[..., ::-1].copy() if v.dtype.kind == "f" else v for k, v in out.items()}
        return out

    def _model(self, name: str) -> str:
        return self.names.get(name, name)

    def _unloaded(self, name: str) -> tuple[int, dict, bytes]:
        return 503, {}, orjson.dumps({"error": f"model {name} failed to load: fake load error"})

    def _oip(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, dict, bytes]:
        if path in ("/v2/health/live", "/v2/health/ready"):
            return 200, {}, b"{}"
        m = re.fullmatch(r"/v2/models/([^/]+)(/ready|/infer)?", path)
        if not m or self._model(m.group(1)) not in SIGNATURES:
            return 404, {}, orjson.dumps({"error": f"no route {path}"})
        name, what = m.groups()
        if name in self.unloaded:
            return self._unloaded(name)
        if what is None:
            return 200, {}, orjson.dumps({"name": name, "platform": "fake"})
        if what == "/ready":
            return 200, {}, b""
        model = self._model(name)
        sig = SIGNATURES[model]
        req = InferRequest.from_oip(body, header_length(headers.get("Inference-Header-Content-Length")))
        req.validate(sig)
        answer = InferResponse.from_arrays(name, self._compute(model, req.arrays(sig)), "1", req.id)
        out, hl = answer.select(req.output_names(sig)).to_oip(req.binary_outputs(sig))
        return 200, ({} if hl is None else {"Inference-Header-Content-Length": str(hl)}), out

    def _tfserving(self, method: str, path: str, headers: Any, body: bytes):
        m = re.fullmatch(r"/v1/models/([^/:]+)(:predict|/metadata)?", path)
        if not m or self._model(m.group(1)) not in SIGNATURES:
            return 404, {}, orjson.dumps({"error": f"Servable not found for request: {path}"})
        name, what = m.groups()
        if what is None:
            return 200, {}, orjson.dumps({"model_version_status": [
                {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK"}}]})
        if what == "/metadata":
            return 200, {}, orjson.dumps({"model_spec": {"name": name}})
        if name in self.unloaded:
            return self._unloaded(name)
        model = self._model(name)
        sig = SIGNATURES[model]
        req, row = InferRequest.from_tfserving(body, sig)
        req.validate(sig)
        return 200, {}, InferResponse.from_arrays(name, self._compute(model, req.arrays(sig))).to_tfserving(row)

    def _torchserve(self, method: str, path: str, headers: Any, body: bytes):
        if path == "/ping":
            return 200, {}, orjson.dumps({"status": "Healthy"})
        m = re.fullmatch(r"/(predictions|models)/([^/]+)", path)
        if not m or self._model(m.group(2)) not in SIGNATURES:
            return 404, {}, orjson.dumps({"code": 404, "type": "ModelNotFoundException",
                                          "message": f"Model not found: {path}"})
        what, name = m.groups()
        if what == "models":  # management API describe
            return 200, {}, orjson.dumps([{"modelName": name, "workers": [{"status": "READY"}]}])
        if name in self.unloaded:
            return 503, {}, orjson.dumps({"code": 503, "message": f"Model {name} has no worker"})
        if headers.get("Inference-Header-Content-Length") or b"binary_data_size" in body:
            return 400, {}, orjson.dumps({"code": 400, "message": "JSON tensors only"})
        model = self._model(name)
        sig = SIGNATURES[model]
        req = InferRequest.from_oip(body)
        req.validate(sig)
        answer = InferResponse.from_arrays(name, self._compute(model, req.arrays(sig)), "1", req.id)
        return 200, {}, answer.select(req.output_names(sig)).to_oip()[0]


def _make_handler(fake: FakeBackend) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else header + body writes meet delayed ACKs (40 ms)

        def _serve(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            try:
                status, headers, out = fake.handle(self.command, self.path, self.headers, body)
            except ConnectionAbortedError:
                self.close_connection = True
                return
            if fake.mode == "cut" and self.command == "POST":  # killed between headers and body
                self.send_response(200)
                self.send_header("Content-Length", "227")
                self.end_headers()
                self.close_connection = True
                return
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
