"""The one TorchServe handler packaged into every .mar: OIP JSON tensors in, OIP JSON tensors out.

Self-contained on purpose: it runs inside TorchServe's Python worker with only the .mar's files, so
it imports nothing from this repository. The model's signature comes from the `manifest.json`
extra file (model_store/manifest.py format); the serialized file is TorchScript (`.pt`) or ONNX
(`.onnx`).

Request  {"inputs": [{"name", "shape", "datatype", "data"}]}
Response {"model_name": m, "outputs": [{"name", "shape", "datatype", "data"}]}

Batches: TorchServe hands the handler a list of requests. Each one is validated on its own; an
invalid request gets its own HTTP 400 with {"error": "..."} (context.set_response_status per
request index) while the valid ones are concatenated along axis 0, run once and split back.

Entry point: the module-level `handle(data, context)` (TorchServe calls it with data=None to
initialize). `run_in_process(model_dir, bodies)` runs the same code outside TorchServe.
"""

from __future__ import annotations

import json
import logging
import os
from types import SimpleNamespace
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

OIP_TO_NUMPY = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}  # fmt: skip
NUMPY_TO_OIP = {np.dtype(v): k for k, v in OIP_TO_NUMPY.items()}


def _threads() -> int:
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))
    except ValueError:
        return 1


class TensorHandler:
    def initialize(self, context: Any) -> None:
        model_dir = context.system_properties["model_dir"]
        with open(os.path.join(model_dir, "manifest.json")) as f:
            manifest = json.load(f)
        self.signature = manifest["signature"]
        self.model_name = getattr(context, "model_name", None) or manifest["name"]
        path = os.path.join(model_dir, context.manifest["model"]["serializedFile"])
        if path.endswith(".onnx"):
            self._load_onnx(path)
        else:
            self._load_torchscript(path)
        logger.info("loaded %s (%s) with %d intra-op thread(s)", self.model_name, path, _threads())

    def _load_torchscript(self, path: str) -> None:
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
            if isinstance(out, dict):
                out = [out[spec["name"]] for spec in self.signature["outputs"]]
            elif not isinstance(out, (list, tuple)):
                out = [out]
            return [t.detach().cpu().numpy() for t in out]

        self._run = run

    def _load_onnx(self, path: str) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = _threads()
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Spinning threads burn a core while idle; on 2 shared cores that costs more than it saves.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        out_names = [spec["name"] for spec in self.signature["outputs"]]
        in_names = [spec["name"] for spec in self.signature["inputs"]]

        def run(arrays: list[np.ndarray]) -> list[np.ndarray]:
            return session.run(out_names, dict(zip(in_names, arrays)))

        self._run = run

    # --- request validation ------------------------------------------------------------------

    def _decode(self, request: Any) -> list[np.ndarray]:
        """One TorchServe request -> the input arrays in signature order; ValueError if invalid."""
        body = request.get("body", request.get("data")) if isinstance(request, dict) else request
        if isinstance(body, (bytes, bytearray)):
            body = body.decode("utf-8", errors="replace")
        if isinstance(body, str):
            try:
                body = json.loads(body)
            except json.JSONDecodeError as e:
                raise ValueError(f"request body is not valid JSON: {e}") from None
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
            raise ValueError('request body must be a JSON object {"inputs": [tensor, ...]}')
        tensors = body["inputs"]
        specs = self.signature["inputs"]
        by_name: dict[str, Any] = {}
        for t in tensors:
            name = t.get("name") if isinstance(t, dict) else None
            if not isinstance(name, str):
                raise ValueError("each input must be an object with a string 'name'")
            if name in by_name:
                raise ValueError(f"input {name!r} appears twice")
            by_name[name] = t
        expected = [s["name"] for s in specs]
        if set(by_name) != set(expected):
            raise ValueError(f"inputs {sorted(by_name)} do not match the model's inputs {expected}")
        arrays = [self._decode_tensor(by_name[s["name"]], s) for s in specs]
        if len({a.shape[0] for a in arrays}) > 1:
            raise ValueError("all inputs must have the same batch size (first dimension)")
        return arrays

    @staticmethod
    def _decode_tensor(t: dict, spec: dict) -> np.ndarray:
        name, shape, datatype = spec["name"], t.get("shape"), t.get("datatype")
        if datatype != spec["datatype"]:
            raise ValueError(f"input {name!r}: datatype {datatype!r}, expected {spec['datatype']}")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise ValueError(f"input {name!r}: 'shape' must be a list of non-negative integers")
        want = spec["shape"]
        if len(shape) != len(want) or any(w not in (-1, d) for w, d in zip(want, shape)):
            raise ValueError(f"input {name!r}: shape {shape} does not match {want} (-1 = any)")
        if shape[0] < 1:
            raise ValueError(f"input {name!r}: the batch dimension must be at least 1")
        if "data" not in t:
            raise ValueError(f"input {name!r} has no 'data'")
        try:
            arr = np.asarray(t["data"], dtype=OIP_TO_NUMPY[datatype])
        except (ValueError, TypeError) as e:
            raise ValueError(f"input {name!r}: data is not {datatype}: {e}") from None
        count = int(np.prod(shape))
        if arr.size != count:
            raise ValueError(f"input {name!r}: shape {shape} needs {count} values, got {arr.size}")
        return arr.reshape(shape)

    # --- batch ----------------------------------------------------------------------------------

    def handle(self, data: list, context: Any) -> list[str]:
        responses: list[str | None] = [None] * len(data)
        valid: list[tuple[int, list[np.ndarray]]] = []
        for i, request in enumerate(data):
            try:
                valid.append((i, self._decode(request)))
            except ValueError as e:
                context.set_response_status(400, "Bad Request", i)
                context.set_response_content_type(i, "application/json")
                responses[i] = json.dumps({"error": str(e)})
        if valid:
            batch = [
                np.concatenate([arrays[k] for _, arrays in valid]) if len(valid) > 1
                else valid[0][1][k]
                for k in range(len(self.signature["inputs"]))
            ]  # fmt: skip
            outputs = self._run(batch)
            names = [spec["name"] for spec in self.signature["outputs"]]
            start = 0
            for i, arrays in valid:
                stop = start + arrays[0].shape[0]
                body = {
                    "model_name": self.model_name,
                    "outputs": [_encode(n, o[start:stop]) for n, o in zip(names, outputs)],
                }
                context.set_response_content_type(i, "application/json")
                responses[i] = json.dumps(body)
                start = stop
        return responses  # type: ignore[return-value]


def _encode(name: str, arr: np.ndarray) -> dict[str, Any]:
    arr = np.asarray(arr)
    return {
        "name": name,
        "shape": list(arr.shape),
        "datatype": NUMPY_TO_OIP.get(arr.dtype, "BYTES"),
        "data": arr.ravel().tolist(),
    }


_service = TensorHandler()


def handle(data: list | None, context: Any) -> list[str] | None:
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
    model_dir: str, bodies: list[dict], serialized_file: str | None = None
) -> list[dict]:
    """Run `bodies` (request dicts) through the handler as one TorchServe batch, outside TorchServe.

    model_dir holds the serialized file (model.pt or model.onnx) and manifest.json, as an unpacked
    .mar does. Returns one decoded response per body; an invalid body yields
    {"error": ..., "status": 400}: what TorchServe would send for it, plus the status.
    """
    if serialized_file is None:
        candidates = ("model.pt", "model.onnx")
        found = [f for f in candidates if os.path.exists(os.path.join(model_dir, f))]
        if not found:
            raise FileNotFoundError(f"{model_dir} has neither model.pt nor model.onnx")
        serialized_file = found[0]
    context = _fake_context(model_dir, serialized_file)
    handler = TensorHandler()
    handler.initialize(context)
    out = handler.handle([{"body": json.dumps(b).encode()} for b in bodies], context)
    results = [json.loads(r) for r in out]
    for i, (code, _) in context.statuses.items():
        results[i]["status"] = code
    return results
