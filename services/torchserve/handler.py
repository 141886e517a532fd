"""The one TorchServe handler packaged into every .mar: Open Inference Protocol tensors in and out.

It runs inside TorchServe's Python worker with only the .mar's files: the exporter packs the
`contract` package (codec, manifest, datatypes) next to manifest.json, so initialize() puts the
model dir first on sys.path and decodes, validates and encodes with contract.codec, the codec of
every other server of the stack (in local mode the repository's copy is the same code). The model's
signature comes from manifest.json; the serialized file is TorchScript (`.pt`: positional inputs
in signature order, a tuple of outputs in signature order) or ONNX (`.onnx`, run by onnxruntime).

Request  {"id"?, "inputs": [{"name", "shape", "datatype", "data"}, ...], "outputs"?: [{"name"}]}
Response {"model_name", "model_version", "id"?, "outputs": [{"name", "shape", "datatype", "data"}]}
JSON only (non-finite floats are null); the binary extension is accepted in requests when
TorchServe passes the Inference-Header-Content-Length header on.

Batches: TorchServe hands the handler a list of requests. Each one is decoded and validated on its
own; an invalid one gets its own 4xx with {"error": "..."} (context.set_response_status per request
index). Valid requests are grouped by per-sample shapes (sequence lengths may differ), each group
concatenated along axis 0, run once and split back.

Entry point: the module-level `handle(data, context)` (TorchServe calls it with data=None to
initialize). `run_in_process(model_dir, bodies)` runs the same code outside TorchServe.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from types import SimpleNamespace
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)
BINARY_HEADER = "Inference-Header-Content-Length"


def _env_int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


def _threads() -> int:
    return _env_int("OMP_NUM_THREADS", 1)


class TensorHandler:
    def initialize(self, context: Any) -> None:
        model_dir = context.system_properties["model_dir"]
        if model_dir not in sys.path:
            sys.path.insert(0, model_dir)  # the .mar's copy of the contract package
        from contract import codec
        from contract.manifest import load_manifest

        self.codec = codec
        manifest = load_manifest(model_dir)
        self.signature = manifest.signature
        self.model_name = getattr(context, "model_name", None) or manifest.name
        art = manifest.artifacts.get("torchserve")
        self.version = str(art.version) if art else "1"
        path = os.path.join(model_dir, context.manifest["model"]["serializedFile"])
        self._run = _onnx(path, self.signature) if path.endswith(".onnx") else _torchscript(path)
        logger.info("loaded %s (%s) with %d intra-op thread(s)", self.model_name, path, _threads())

    # --- one request --------------------------------------------------------------------------

    def _decode(self, request: Any, header_len: int | None) -> tuple[Any, dict[str, np.ndarray], int]:
        """One TorchServe request -> (InferRequest, inputs in signature order, batch size);
        CodecError if invalid."""
        body = request.get("body", request.get("data")) if isinstance(request, dict) else request
        if isinstance(body, (dict, list)):  # TorchServe already parsed an application/json body
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        elif not isinstance(body, (bytes, bytearray, memoryview)):
            raise self.codec.CodecError("request has no body")
        req = self.codec.InferRequest.from_oip(bytes(body), header_len)
        size = req.validate(self.signature)
        return req, req.arrays(self.signature), size

    def _answer(self, req: Any, outputs: dict[str, np.ndarray]) -> bytes:
        answer = self.codec.InferResponse.from_arrays(self.model_name, outputs, self.version, req.id)
        body, _ = answer.select(req.output_names(self.signature)).to_oip()
        return body

    # --- a TorchServe batch -----------------------------------------------------------------------

    def handle(self, data: list, context: Any) -> list[bytes]:
        responses: list[bytes | None] = [None] * len(data)
        groups: dict[tuple, list[tuple[int, Any, dict[str, np.ndarray], int]]] = {}
        for i, request in enumerate(data):
            try:
                req, arrays, size = self._decode(request, _header_length(self.codec, context, i))
            except self.codec.CodecError as e:
                responses[i] = _error(context, i, e.status, e.message)
                continue
            # Only requests of equal per-sample shapes can be concatenated.
            key = tuple(a.shape[1:] for a in arrays.values())
            groups.setdefault(key, []).append((i, req, arrays, size))
        for group in groups.values():
            try:
                outputs = self._run_group([arrays for _, _, arrays, _ in group])
            except Exception as e:  # noqa: BLE001 - every request of the group gets the reason
                logger.exception("inference failed")
                for i, *_ in group:
                    responses[i] = _error(context, i, 500, f"inference failed: {type(e).__name__}: {e}")
                continue
            start = 0
            for i, req, _, size in group:
                rows = {k: v[start : start + size] for k, v in outputs.items()}
                start += size
                context.set_response_content_type(i, "application/json")
                responses[i] = self._answer(req, rows)
        return responses  # type: ignore[return-value]

    def _run_group(self, requests: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        names = self.signature.input_names()
        batch = [requests[0][n] if len(requests) == 1 else np.concatenate([r[n] for r in requests])
                 for n in names]  # fmt: skip
        # Runs of at most RUN_MAX_BATCH samples (stack.env), as on our other servers: the model's
        # working memory stays that of one such run, whatever the request's batch.
        step, total = _env_int("RUN_MAX_BATCH", 32), batch[0].shape[0]
        if total <= step:
            outputs = self._run(batch)
        else:
            parts = [self._run([a[i : i + step] for a in batch]) for i in range(0, total, step)]
            outputs = [np.concatenate([np.asarray(p[j]) for p in parts]) for j in range(len(parts[0]))]
        if len(outputs) != len(self.signature.outputs):
            raise RuntimeError(f"the model returned {len(outputs)} output(s), the manifest names "
                               f"{self.signature.output_names()}")  # fmt: skip
        out = {}
        for spec, arr in zip(self.signature.outputs, outputs):
            arr = np.asarray(arr)
            if arr.ndim == 0 or arr.shape[0] != total:
                raise RuntimeError(f"output {spec.name!r} has shape {list(arr.shape)}, batch {total} expected")
            out[spec.name] = arr.astype(spec.numpy_dtype, copy=False)
        return out


def _torchscript(path: str):
    import torch

    torch.set_num_threads(_threads())
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first parallel op
        pass
    module = torch.jit.load(path, map_location="cpu").eval()

    def run(arrays: list[np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            out = module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
        if not isinstance(out, (list, tuple)):
            out = [out]
        return [t.detach().cpu().numpy() for t in out]

    return run


def _onnx(path: str, signature):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = _threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Spinning threads burn a core while idle; on 2 shared cores that costs more than it saves.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    in_names, out_names = signature.input_names(), signature.output_names()

    def run(arrays: list[np.ndarray]) -> list[np.ndarray]:
        return session.run(out_names, dict(zip(in_names, arrays)))

    return run


def _header_length(codec, context: Any, idx: int) -> int | None:
    get = getattr(context, "get_request_header", None)
    return codec.header_length(get(idx, BINARY_HEADER)) if get else None


def _error(context: Any, idx: int, status: int, message: str) -> bytes:
    phrase = {400: "Bad Request", 413: "Payload Too Large", 500: "Internal Server Error"}
    context.set_response_status(status, phrase.get(status, "Error"), idx)
    context.set_response_content_type(idx, "application/json")
    return json.dumps({"error": message}).encode()


_service = TensorHandler()


def handle(data: list | None, context: Any) -> list[bytes] | None:
    """TorchServe's entry point (a function entry point: data is None once, to initialize)."""
    if data is None:
        _service.initialize(context)
        return None
    return _service.handle(data, context)


def _fake_context(model_dir: str, serialized_file: str) -> SimpleNamespace:
    statuses: dict[int, tuple[int, str]] = {}
    return SimpleNamespace(
        model_name=None,
        system_properties={"model_dir": model_dir, "gpu_id": None, "batch_size": None},
        manifest={"model": {"serializedFile": serialized_file}},
        statuses=statuses,
        set_response_status=lambda code=200, phrase="", idx=0: statuses.__setitem__(
            idx, (code, phrase)
        ),
        set_response_content_type=lambda idx, value: None,
    )


def run_in_process(
    model_dir: str, bodies: list[dict | bytes], serialized_file: str | None = None
) -> list[dict]:
    """Run `bodies` (OIP requests: dicts, or the JSON bytes a client sends) through the handler as
    one TorchServe batch, outside TorchServe. Bytes go in as they are (the exporter's parity check:
    re-encoding a MobileNetV2 batch of 32 with the json module took 15 s).

    model_dir holds the serialized file (model.pt or model.onnx) and manifest.json, as an unpacked
    .mar does. Returns one decoded response per body; an invalid body yields
    {"error": ..., "status": 4xx}: what TorchServe would send for it, plus the status.
    """
    if serialized_file is None:
        candidates = ("model.pt", "model.onnx")
        found = [f for f in candidates if os.path.exists(os.path.join(model_dir, f))]
        if not found:
            raise FileNotFoundError(f"{model_dir} has neither model.pt nor model.onnx")
        serialized_file = found[0]
    context = _fake_context(model_dir, serialized_file)
    handler = TensorHandler()
    caller_path = list(sys.path)
    try:
        handler.initialize(context)
        out = handler.handle([{"body": b if isinstance(b, bytes) else json.dumps(b).encode()} for b in bodies], context)
    finally:
        # initialize() puts model_dir first on sys.path, as TorchServe needs. The caller (an
        # exporter certifying a .mar, a test) keeps its own: processes it spawns later inherit
        # sys.path and would import the .mar's partial copy of contract instead of the package.
        sys.path[:] = caller_path
    results = [json.loads(r) for r in out]
    for i, (code, _) in context.statuses.items():
        results[i]["status"] = code
    return results
