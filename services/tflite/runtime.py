"""TFLite adapter: one LiteRT Interpreter per model, run through its "serving_default" signature.

- Names: manifest names map to the signature's (exactly, else by a converter's renaming, else by
  position when there is one tensor).
- Shapes: every input is resized to the request's shape (dynamic batch and sequence), unless the
  manifest's fixed_shapes pin it (the base class refuses other shapes with a 400).
- Datatypes: converters narrow some types (int64 token ids become int32): inputs are cast to the
  interpreter's type after a range check, outputs back to the manifest's datatype.
- Flex: a .tflite with TF Select ops cannot run on ai_edge_litert; tensorflow's tf.lite.Interpreter
  links the Flex delegate, so it is used instead (and the load log line says so).
"""

from __future__ import annotations

import logging
import threading
from importlib.metadata import version

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from contract.codec import CodecError
from services.common.modelserver.runtime import ModelRuntime

log = logging.getLogger(__name__)
SIGNATURE = "serving_default"
FLEX_ERRORS = ("Flex", "Select TensorFlow op", "Regular TensorFlow ops are not supported")


def _plain(name: str) -> str:
    """'serving_default_input_ids:0' -> 'input_ids' (names of converters without signatures)."""
    return name.split(":")[0].removeprefix(f"{SIGNATURE}_")


def match_names(wanted: list[str], have: list[str], kind: str) -> dict[str, str]:
    """Manifest name -> the interpreter's name for it; ValueError naming both lists if none fits."""
    if set(wanted) <= set(have):
        return {n: n for n in wanted}
    plain = {_plain(h): h for h in have}
    if set(wanted) <= set(plain):
        return {n: plain[n] for n in wanted}
    if len(wanted) == len(have) == 1:
        return {wanted[0]: have[0]}
    # tf.lite names unnamed outputs output_0, output_1, ... in the SavedModel's order.
    numbered = [f"output_{i}" for i in range(len(wanted))]
    if kind == "output" and set(numbered) == set(have):
        return dict(zip(wanted, numbered))
    raise ValueError(f"cannot match the manifest's {kind}s {wanted} to the model's {sorted(have)}")


class TFLiteModel(ModelRuntime):
    platform = "tflite"
    artifact_format = "tflite"

    @classmethod
    def library_version(cls) -> str:
        return version("ai-edge-litert")

    def load(self) -> None:
        self.engine = "ai_edge_litert"
        try:
            self.interpreter = self._open(Interpreter)
        except (RuntimeError, ValueError) as e:
            if not any(k in str(e) for k in FLEX_ERRORS):
                raise
            self.interpreter = self._open_with_flex()
        self._lock = threading.Lock()  # an Interpreter runs one invocation at a time
        if SIGNATURE in self.interpreter.get_signature_list():
            runner = self.interpreter.get_signature_runner(SIGNATURE)
            ins, outs = runner.get_input_details(), runner.get_output_details()
            self._runner = runner
        else:  # an old converter's flat model: tensors by name
            ins = {d["name"]: d for d in self.interpreter.get_input_details()}
            outs = {d["name"]: d for d in self.interpreter.get_output_details()}
            self._runner = None
        self._in = match_names([s.name for s in self.inputs], list(ins), "input")
        self._out = match_names([s.name for s in self.outputs], list(outs), "output")
        self._in_dtype = {n: np.dtype(ins[k]["dtype"]) for n, k in self._in.items()}
        self._in_index = {n: int(ins[k]["index"]) for n, k in self._in.items()}
        self._out_index = {n: int(outs[k]["index"]) for n, k in self._out.items()}

    def _open_with_flex(self):
        import tensorflow as tf  # slow to import: only for models that need it

        self.engine = f"tensorflow {tf.__version__} tf.lite.Interpreter (TF Select/Flex ops)"
        log.warning("model %s needs TF Select (Flex) ops that ai_edge_litert cannot run: "
                    "falling back to %s", self.name, self.engine)  # fmt: skip
        try:
            return self._open(tf.lite.Interpreter)
        except (RuntimeError, ValueError) as e:
            if not any(k in str(e) for k in FLEX_ERRORS):
                raise
            # Some tensorflow wheels (2.21 on Linux) ship no Flex delegate either.
            raise RuntimeError(
                f"the model needs TF Select (Flex) ops; neither ai_edge_litert nor {self.engine} "
                "can run them here (no Flex delegate linked). Re-export it with TFLite builtin "
                "ops only, or serve another format of it"
            ) from None

    def _open(self, cls):
        interp = cls(model_path=str(self.path), num_threads=self.settings.runtime_intra_op_threads)
        interp.allocate_tensors()  # where missing (Flex) ops are reported
        return interp

    def _cast_in(self, name: str, arr: np.ndarray) -> np.ndarray:
        """The request's array in the interpreter's dtype; a value it cannot hold is a 400."""
        dtype = self._in_dtype[name]
        if arr.dtype == dtype:
            return arr
        if dtype.kind in "iu" and arr.size:
            info = np.iinfo(dtype)
            lo, hi = arr.min(), arr.max()
            if lo < info.min or hi > info.max:
                raise CodecError(f"input {name!r}: value {lo if lo < info.min else hi} does not fit "
                                 f"the {dtype} this TFLite model takes")  # fmt: skip
        return arr.astype(dtype)

    def check(self, inputs: dict[str, np.ndarray]) -> None:
        super().check(inputs)
        for name, arr in inputs.items():
            self._cast_in(name, arr)  # range errors are the client's: 400 before batching

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {n: np.ascontiguousarray(self._cast_in(n, a)) for n, a in inputs.items()}
        with self._lock:
            if self._runner is not None:
                got = self._runner(**{self._in[n]: a for n, a in feed.items()})
                raw = {n: got[k] for n, k in self._out.items()}
            else:
                raw = self._invoke(feed)
        return {s.name: raw[s.name].astype(s.numpy_dtype, copy=False) for s in self.outputs}

    def _invoke(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        interp = self.interpreter
        for n, a in feed.items():
            interp.resize_tensor_input(self._in_index[n], list(a.shape), strict=False)
        interp.allocate_tensors()
        for n, a in feed.items():
            interp.set_tensor(self._in_index[n], a)
        interp.invoke()
        return {n: interp.get_tensor(i) for n, i in self._out_index.items()}

    def describe(self) -> str:
        return f"{self.engine}, num_threads={self.settings.runtime_intra_op_threads}"
