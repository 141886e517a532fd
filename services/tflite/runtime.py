"""TFLite adapter: one LiteRT Interpreter per model, resized to each batch's shape."""

from __future__ import annotations

import threading
from importlib.metadata import version

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from services.common.modelserver.runtime import ModelRuntime


def _tensor_name(detail_name: str) -> str:
    """'serving_default_input:0' -> 'input' (converter naming without signatures)."""
    name = detail_name.split(":")[0]
    return name.removeprefix("serving_default_")


class TFLiteModel(ModelRuntime):
    platform = "tflite"
    artifact_format = "tflite"

    @classmethod
    def library_version(cls) -> str:
        return version("ai-edge-litert")

    def load(self) -> None:
        self.interpreter = Interpreter(
            model_path=str(self.path), num_threads=self.settings.runtime_intra_op_threads
        )
        self.interpreter.allocate_tensors()
        self._lock = threading.Lock()  # an Interpreter runs one invocation at a time
        self._in = self._indices(self.inputs, self.interpreter.get_input_details(), "input")
        self._out = self._indices(self.outputs, self.interpreter.get_output_details(), "output")
        self._shapes = {
            d["index"]: tuple(int(x) for x in d["shape"])
            for d in self.interpreter.get_input_details()
        }

    def _indices(self, specs, details, kind: str) -> dict[str, int]:
        """Manifest tensor name -> interpreter tensor index: by signature name, else by tensor
        name, else by position when there is one tensor."""
        wanted = [s.name for s in specs]
        signatures = self.interpreter.get_signature_list()
        if len(signatures) == 1:
            runner = self.interpreter.get_signature_runner()
            sig = runner.get_input_details() if kind == "input" else runner.get_output_details()
            if set(wanted) <= set(sig):
                return {n: int(sig[n]["index"]) for n in wanted}
        by_name = {_tensor_name(d["name"]): int(d["index"]) for d in details}
        if set(wanted) <= set(by_name):
            return {n: by_name[n] for n in wanted}
        if len(wanted) == len(details) == 1:
            return {wanted[0]: int(details[0]["index"])}
        raise ValueError(
            f"cannot match the manifest's {kind}s {wanted} to the model's "
            f"{sorted(by_name)} (signatures: {signatures})"
        )

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        interp = self.interpreter
        with self._lock:
            resized = False
            for name, index in self._in.items():
                shape = inputs[name].shape
                if self._shapes[index] != shape:
                    interp.resize_tensor_input(index, list(shape))
                    self._shapes[index] = shape
                    resized = True
            if resized:
                interp.allocate_tensors()
            for name, index in self._in.items():
                interp.set_tensor(index, inputs[name])
            interp.invoke()
            return {name: interp.get_tensor(index) for name, index in self._out.items()}

    def describe(self) -> str:
        return f"num_threads={self.settings.runtime_intra_op_threads}"
