"""A TorchServe .mar: TorchScript (PyTorch sources) or the ONNX artifact run by onnxruntime inside
TorchServe (Keras sources), with services/torchserve/handler.py and the model's manifest.json."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from exporters.targets import Exported
from exporters.workspace import ConversionError, Workspace, versions
from model_store.manifest import MANIFEST_NAME, Manifest
from services.common.codecs import encode_json_tensor

HANDLER = Path(__file__).resolve().parents[2] / "services" / "torchserve" / "handler.py"


def export(ws: Workspace, dest: Path) -> Exported:
    src = ws.source
    staging = ws.tmp / "mar-inputs"
    staging.mkdir(exist_ok=True)
    if ws.is_torch:
        serialized = shutil.copy(ws.torchscript_path, staging / "model.pt")
        route = "torch.jit.trace -> torch-model-archiver (TorchScript handler)"
        conv = versions("torch", "torch-model-archiver")
    else:
        serialized = shutil.copy(ws.onnx_path, staging / "model.onnx")
        route = "keras -> tf2onnx -> torch-model-archiver (onnxruntime handler)"
        conv = versions("tf2onnx", "onnxruntime", "torch-model-archiver")
    # The handler reads the signature from this manifest (without artifacts: they don't exist yet).
    Manifest(name=src.name, source=src.info, signature=src.signature).save(staging)
    cmd = [
        str(Path(sys.executable).with_name("torch-model-archiver")),
        "--model-name", src.name, "--version", "1",
        "--serialized-file", str(serialized), "--handler", str(HANDLER),
        "--extra-files", str(staging / MANIFEST_NAME),
        "--export-path", str(dest), "--force",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise ConversionError(f"torch-model-archiver failed: {(done.stderr or done.stdout).strip()[-300:]}")
    return Exported(f"{src.name}.mar", route, conv, {"handler": "services/torchserve/handler.py"})


def runner(path: Path):
    """Unpack the .mar and run it through the same handler code TorchServe runs."""
    from services.torchserve.handler import run_in_process

    unpacked = Path(tempfile.mkdtemp(prefix="mar-"))
    with zipfile.ZipFile(path) as z:
        z.extractall(unpacked)
    signature = json.loads((unpacked / MANIFEST_NAME).read_text())["signature"]
    in_name = signature["inputs"][0]["name"]

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        (reply,) = run_in_process(str(unpacked), [{"inputs": [encode_json_tensor(in_name, x)]}])
        if "error" in reply:
            raise RuntimeError(f"handler answered {reply.get('status')}: {reply['error']}")
        from services.common.codecs import decode_json_tensor

        return dict(decode_json_tensor(t) for t in reply["outputs"])

    return run
