"""TensorFlow SavedModel in TF Serving's layout (<model>/savedmodel/<version>/saved_model.pb),
serving_default taking and returning the source model's tensor names."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from exporters.targets import Exported
from exporters.workspace import Workspace, versions


def export(ws: Workspace, dest: Path) -> Exported:
    shutil.copytree(ws.saved_model_dir, dest, dirs_exist_ok=True)
    if ws.is_torch:
        route = "torch.onnx.export -> onnx2tf (input layout kept) -> tf.saved_model.save"
        conv = versions("torch", "onnx", "onnx2tf", "tensorflow")
    else:
        route = "keras model -> tf.function signature -> tf.saved_model.save"
        conv = versions("keras", "tensorflow")
    return Exported(".", route, conv, {"signature": "serving_default"})


def runner(path: Path):
    import tensorflow as tf

    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    in_name = next(iter(fn.structured_input_signature[1]))

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in fn(**{in_name: tf.constant(x)}).items()}

    return run
