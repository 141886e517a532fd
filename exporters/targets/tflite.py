"""TFLite float32 with resizable dynamic dimensions, for ai-edge-litert. Builtin ops first; models
the builtins cannot express (e.g. LSTM/GRU over a dynamic sequence: TensorList ops) fall back to
TF Select ops, which need an interpreter with the Flex delegate (tensorflow's tf.lite.Interpreter)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exporters.targets import Exported, Route
from exporters.workspace import Workspace, versions


def _convert(ws: Workspace, dest: Path, select_ops: bool = False, batch1: bool = False) -> Exported:
    import tensorflow as tf

    what = "TFLiteConverter.from_saved_model" + (" (TF Select ops)" if select_ops else "") + (" (batch 1)" if batch1 else "")
    saved = ws.first_saved_model(batch1)
    with ws.guard(what):
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        if select_ops:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
            converter._experimental_lower_tensor_list_ops = False
        (dest / "model.tflite").write_bytes(converter.convert())
    conv = versions("tensorflow", "ai-edge-litert") | (versions("torch", "onnx2tf") if ws.is_torch else {})
    extra = {"ops": "TFLITE_BUILTINS + SELECT_TF_OPS (needs the Flex delegate)"} if select_ops else {}
    fixed = {s.name: [1, *s.shape[1:]] for s in ws.sig.inputs} if batch1 else None
    return Exported("model.tflite", conv, extra, fixed_shapes=fixed)


def _builtins(ws: Workspace, dest: Path) -> Exported:
    return _convert(ws, dest, select_ops=False)


def _batch1(ws: Workspace, dest: Path) -> Exported:
    return _convert(ws, dest, batch1=True)


def _select(ws: Workspace, dest: Path) -> Exported:
    return _convert(ws, dest, select_ops=True)


ROUTES = [
    Route("SavedModel -> TFLiteConverter.from_saved_model (float32, builtin ops)", ("pytorch", "keras"), _builtins),
    # Recurrent layers over a dynamic sequence: their TensorList ops lower to builtins only with a
    # static batch; the server then runs a batch one sample at a time (fixed_shapes [1, ...]).
    Route("SavedModel with batch 1 -> TFLiteConverter (float32, builtin ops, dynamic sequence)", ("pytorch", "keras"), _batch1),
    # Needs an interpreter with the Flex delegate (this machine's tensorflow wheel has none).
    Route("SavedModel -> TFLiteConverter (float32, builtins + TF Select ops)", ("pytorch", "keras"), _select),
]


def needs_flex(path: Path) -> bool:
    """The model uses TF Select ops: their custom op codes are named Flex<Op> in the flatbuffer."""
    return b"Flex" in Path(path).read_bytes()


def interpreter(path: Path, threads: int = 1):
    """(interpreter, label): ai-edge-litert's, or tensorflow's (it links the Flex delegate) when the
    model needs TF Select ops, which ai-edge-litert cannot run."""
    if needs_flex(path):
        import tensorflow as tf

        interp = tf.lite.Interpreter(model_path=str(path), num_threads=threads)
        label = "tf.lite.Interpreter (Flex delegate)"
    else:
        from ai_edge_litert.interpreter import Interpreter

        interp, label = Interpreter(model_path=str(path), num_threads=threads), "ai-edge-litert"
    interp.allocate_tensors()
    return interp, label


def runner(path: Path, signature):
    from exporters.targets import cast_inputs

    interp, _ = interpreter(path)
    run_sig = interp.get_signature_runner("serving_default")
    details = run_sig.get_input_details()
    wanted = {k: d["dtype"] for k, d in details.items()}
    fixed_batch = any(int(d["shape_signature"][0]) == 1 for d in details.values() if len(d["shape_signature"]))
    out_dtypes = {s.name: s.numpy_dtype for s in signature.outputs}

    def run_one(x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = run_sig(**cast_inputs(x, wanted))
        return {k: v.astype(out_dtypes.get(k, v.dtype), copy=False) for k, v in out.items()}

    def run(x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(next(iter(x.values())))
        if not fixed_batch or n == 1:
            return run_one(x)
        parts = [run_one({k: v[i : i + 1] for k, v in x.items()}) for i in range(n)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    return run
