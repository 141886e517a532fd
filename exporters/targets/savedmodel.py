"""TensorFlow SavedModel in TF Serving's layout (<model>/savedmodel/<version>/saved_model.pb),
serving_default taking and returning the source model's tensor names."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from exporters.targets import Exported, Route
from exporters.workspace import Workspace, versions


def _via(via: str):
    def export(ws: Workspace, dest: Path) -> Exported:
        shutil.copytree(ws.saved_model_dir(via), dest, dirs_exist_ok=True)
        conv = {"keras": versions("keras", "tensorflow"), "onnx2tf": versions("torch", "onnx", "onnx2tf", "tensorflow"),
                "translate": versions("torch", "onnx", "tensorflow")}[via]  # fmt: skip
        return Exported(".", conv, {"signature": "serving_default", "via": via})

    return export


ROUTES = [
    Route("certified ONNX -> onnx2tf (input layout kept) -> tf.saved_model.save", ("pytorch",), _via("onnx2tf")),
    Route("certified ONNX -> exporters/onnx_tf (node-by-node TF translation) -> tf.saved_model.save", ("pytorch",),
          _via("translate")),
    Route("keras model -> tf.function signature -> keras.export.ExportArchive", ("keras",), _via("keras")),
]  # fmt: skip


def runner(path: Path, signature):
    """serving_default run by the TF Serving stand-in's own Servable: the SavedModel loaded into a
    session by the TF1 loader (TF Serving's), its feeds and fetches through one session callable.
    A SavedModel that only works eagerly (a Keras 3 model inside a plain tf.Module: its variables
    are missing from the session, tensorflow/serving#2226) then fails its certificate here, not
    later in TF Serving."""
    from services.tfserving.models import DEFAULT_SIGNATURE, Servable

    servable = Servable(path.parent.name, 1, path)

    def run(x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return servable.run(DEFAULT_SIGNATURE, {k: np.asarray(v) for k, v in x.items()})

    return run
