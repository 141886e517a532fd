"""TensorFlow SavedModel in TF Serving's layout (<model>/savedmodel/<version>/saved_model.pb),
serving_default taking and returning the source model's tensor names."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from exporters.targets import Exported, Route
from exporters.workspace import Workspace, versions


def _export(ws: Workspace, dest: Path) -> Exported:
    shutil.copytree(ws.saved_model_dir, dest, dirs_exist_ok=True)
    conv = versions("torch", "onnx", "onnx2tf", "tensorflow") if ws.is_torch else versions("keras", "tensorflow")
    return Exported(".", conv, {"signature": "serving_default"})


ROUTES = [
    Route("torch.onnx.export -> onnx2tf (input layout kept) -> tf.saved_model.save", ("pytorch",), _export),
    Route("keras model -> tf.function signature -> keras.export.ExportArchive", ("keras",), _export),
]


def runner(path: Path, signature):
    import tensorflow as tf

    fn = tf.saved_model.load(str(path)).signatures["serving_default"]

    def run(x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in x.items()}).items()}

    return run
