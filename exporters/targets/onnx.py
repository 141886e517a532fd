"""ONNX with a dynamic batch dimension, for ONNX Runtime."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from exporters.targets import Exported
from exporters.workspace import ONNX_OPSET, Workspace, versions


def export(ws: Workspace, dest: Path) -> Exported:
    shutil.copy(ws.onnx_path, dest / "model.onnx")
    if ws.is_torch:
        route = f"torch.onnx.export (TorchScript-based, opset {ONNX_OPSET}, dynamic batch)"
        conv = versions("torch", "onnx")
    else:
        route = f"tf.function -> tf2onnx.convert.from_function (opset {ONNX_OPSET})"
        conv = versions("tensorflow", "keras", "tf2onnx", "onnx")
    return Exported("model.onnx", route, conv)


def runner(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    out_names = [o.name for o in session.get_outputs()]

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(out_names, session.run(None, {name: x})))

    return run
