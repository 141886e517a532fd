"""ONNX with dynamic batch (and the source's other dynamic dims), for ONNX Runtime."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from exporters.targets import Exported, Route
from exporters.workspace import Workspace, versions


def _copy(src: Path, dest: Path) -> None:
    shutil.copy(src, dest / "model.onnx")


def _torch(ws: Workspace, dest: Path) -> Exported:
    _copy(ws.onnx_path, dest)
    return Exported("model.onnx", versions("torch", "onnx"))


def _torch_dynamo(ws: Workspace, dest: Path) -> Exported:
    _copy(ws.onnx_dynamo_path, dest)
    return Exported("model.onnx", versions("torch", "onnx", "onnxscript"))


def _tf2onnx(ws: Workspace, dest: Path) -> Exported:
    _copy(ws.onnx_path, dest)
    return Exported("model.onnx", versions("tensorflow", "keras", "tf2onnx", "onnx"))


def _frozen(ws: Workspace, dest: Path) -> Exported:
    _copy(ws.onnx_frozen_path, dest)
    return Exported("model.onnx", versions("tensorflow", "keras", "tf2onnx", "onnx"))


def _keras(ws: Workspace, dest: Path) -> Exported:
    _copy(ws.keras_onnx_path, dest)
    return Exported("model.onnx", versions("keras", "tf2onnx", "onnx"))


ROUTES = [
    Route("torch.onnx.export (TorchScript-based, opset 17, dynamic axes)", ("pytorch",), _torch),
    Route("torch.onnx.export(dynamo=True) (torch.export-based, opset 18)", ("pytorch",), _torch_dynamo),
    Route("tf.function -> tf2onnx.convert.from_function (opset 17)", ("keras",), _tf2onnx),
    Route("tf.function -> frozen graph -> tf2onnx.convert.from_graph_def (opset 17)", ("keras",), _frozen),
    Route("keras model.export(format='onnx')", ("keras",), _keras),
]


def runner(path: Path, signature):
    import onnxruntime as ort

    from exporters.targets import cast_inputs

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    types = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32}
    wanted = {i.name: types[i.type] for i in session.get_inputs() if i.type in types}
    names = [o.name for o in session.get_outputs()]

    def run(x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(None, cast_inputs(x, wanted))))

    return run
