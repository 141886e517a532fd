"""TFLite float32 with resizable dynamic dimensions, for ai-edge-litert. Builtin ops first; models
the builtins cannot express (e.g. LSTM/GRU over a dynamic sequence: TensorList ops) fall back to
TF Select ops, which need an interpreter with the Flex delegate (tensorflow's tf.lite.Interpreter)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exporters.targets import Exported, Route
from exporters.workspace import Workspace, versions


def _convert(ws: Workspace, dest: Path, select_ops: bool) -> Exported:
    import tensorflow as tf

    what = "TFLiteConverter.from_saved_model" + (" (TF Select ops)" if select_ops else "")
    saved = ws.saved_model_dir
    with ws.guard(what):
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        if select_ops:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
            converter._experimental_lower_tensor_list_ops = False
        (dest / "model.tflite").write_bytes(converter.convert())
    conv = versions("tensorflow", "ai-edge-litert") | (versions("torch", "onnx2tf") if ws.is_torch else {})
    extra = {"ops": "TFLITE_BUILTINS + SELECT_TF_OPS (needs the Flex delegate)"} if select_ops else {}
    return Exported("model.tflite", conv, extra)


def _builtins(ws: Workspace, dest: Path) -> Exported:
    return _convert(ws, dest, select_ops=False)


def _select(ws: Workspace, dest: Path) -> Exported:
    return _convert(ws, dest, select_ops=True)


ROUTES = [
    Route("SavedModel -> TFLiteConverter.from_saved_model (float32, builtin ops)", ("pytorch", "keras"), _builtins),
    Route("SavedModel -> TFLiteConverter (float32, builtins + TF Select ops)", ("pytorch", "keras"), _select),
]


def interpreter(path: Path, threads: int = 1):
    """(interpreter, label): ai-edge-litert's, or tensorflow's when the model needs Flex ops."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        interp = Interpreter(model_path=str(path), num_threads=threads)
        interp.allocate_tensors()
        return interp, "ai-edge-litert"
    except RuntimeError as e:
        if "Flex" not in str(e) and "Select TensorFlow op" not in str(e):
            raise
    import tensorflow as tf

    interp = tf.lite.Interpreter(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    return interp, "tf.lite.Interpreter (Flex delegate)"


def runner(path: Path, signature):
    from exporters.targets import cast_inputs

    interp, _ = interpreter(path)
    run_sig = interp.get_signature_runner("serving_default")
    details = run_sig.get_input_details()
    wanted = {k: d["dtype"] for k, d in details.items()}
    out_dtypes = {s.name: s.numpy_dtype for s in signature.outputs}

    def run(x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = run_sig(**cast_inputs(x, wanted))
        return {k: v.astype(out_dtypes.get(k, v.dtype), copy=False) for k, v in out.items()}

    return run
