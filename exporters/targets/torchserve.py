"""A TorchServe .mar: TorchScript (PyTorch sources; ONNX as the fallback) or the ONNX artifact run by
onnxruntime inside TorchServe (Keras sources), with services/torchserve/handler.py, the model's
manifest.json and the contract package (the handler decodes requests with contract/codec.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from contract.manifest import Manifest
from exporters.errors import ConversionError
from exporters.targets import Exported, Route
from exporters.workspace import Workspace, versions

REPO = Path(__file__).resolve().parents[2]
HANDLER = REPO / "services" / "torchserve" / "handler.py"
CONTRACT_FILES = ("__init__.py", "datatypes.py", "codec.py", "manifest.py")


def _archive(ws: Workspace, dest: Path, serialized: Path, conv: dict[str, str]) -> Exported:
    src = ws.source
    extra = ws.tmp / f"mar-extra-{serialized.suffix[1:]}"
    shutil.rmtree(extra, ignore_errors=True)
    (extra / "contract").mkdir(parents=True)
    for f in CONTRACT_FILES:
        shutil.copy(REPO / "contract" / f, extra / "contract" / f)
    # The handler reads the signature from this manifest (without artifacts: they don't exist yet).
    Manifest(name=src.name, source=src.info, signature=src.signature).save(extra)
    cmd = [
        str(Path(sys.executable).with_name("torch-model-archiver")),
        "--model-name", src.name, "--version", "1",
        "--serialized-file", str(serialized), "--handler", str(HANDLER),
        "--extra-files", str(extra), "--export-path", str(dest), "--force",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise ConversionError(f"torch-model-archiver failed: {(done.stderr or done.stdout).strip()[-300:]}")
    return Exported(f"{src.name}.mar", conv | versions("torch-model-archiver"), {"handler": "services/torchserve/handler.py"})


def _copy(path: Path, ws: Workspace, name: str) -> Path:
    staging = ws.tmp / "mar-inputs"
    staging.mkdir(exist_ok=True)
    return Path(shutil.copy(path, staging / name))


def _torchscript(ws: Workspace, dest: Path) -> Exported:
    return _archive(ws, dest, _copy(ws.torchscript_path, ws, "model.pt"), versions("torch"))


def _onnx(ws: Workspace, dest: Path) -> Exported:
    conv = versions("torch", "onnxruntime") if ws.is_torch else versions("tf2onnx", "onnxruntime")
    return _archive(ws, dest, _copy(ws.best_onnx, ws, "model.onnx"), conv)


def _keras_onnx(ws: Workspace, dest: Path) -> Exported:
    return _archive(ws, dest, _copy(ws.keras_onnx_path, ws, "model.onnx"), versions("keras", "onnxruntime"))


ROUTES = [
    Route("torch.jit.trace -> torch-model-archiver (TorchScript handler)", ("pytorch",), _torchscript),
    Route("torch.onnx.export -> torch-model-archiver (onnxruntime handler)", ("pytorch",), _onnx),
    Route("keras -> tf2onnx -> torch-model-archiver (onnxruntime handler)", ("keras",), _onnx),
    Route("keras model.export(format='onnx') -> torch-model-archiver (onnxruntime handler)", ("keras",), _keras_onnx),
]


def runner(path: Path, signature):
    """Unpack the .mar and run it through the same handler code TorchServe runs."""
    from contract.codec import InferRequest, InferResponse
    from services.torchserve.handler import run_in_process

    unpacked = tempfile.TemporaryDirectory(prefix="mar-")  # removed once `run` is dropped
    with zipfile.ZipFile(path) as z:
        z.extractall(unpacked.name)

    def run(x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        body, _ = InferRequest.from_arrays(x).to_oip()
        (reply,) = run_in_process(unpacked.name, [body])  # the request bytes, as a client sends them
        if "error" in reply:
            raise RuntimeError(f"handler answered {reply.get('status')}: {reply['error']}")
        return InferResponse.from_oip(orjson_dumps(reply)).arrays()

    return run


def orjson_dumps(doc) -> bytes:
    import orjson

    return orjson.dumps(doc)
