"""TFLite float32 with a resizable batch dimension, for ai-edge-litert."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exporters.targets import Exported
from exporters.workspace import Workspace, versions


def export(ws: Workspace, dest: Path) -> Exported:
    import tensorflow as tf

    with ws._step("TFLiteConverter.from_saved_model"):
        converter = tf.lite.TFLiteConverter.from_saved_model(str(ws.saved_model_dir))
        (dest / "model.tflite").write_bytes(converter.convert())
    head = "torch.onnx.export -> onnx2tf -> SavedModel" if ws.is_torch else "keras -> SavedModel"
    conv = versions("tensorflow", "ai-edge-litert")
    if ws.is_torch:
        conv |= versions("torch", "onnx2tf")
    return Exported("model.tflite", f"{head} -> TFLiteConverter.from_saved_model (float32)", conv)


def runner(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    runner_fn = interp.get_signature_runner("serving_default")
    sig = interp.get_signature_list()["serving_default"]
    in_name = sig["inputs"][0]

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        return runner_fn(**{in_name: x})

    return run
