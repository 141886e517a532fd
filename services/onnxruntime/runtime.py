"""ONNX Runtime adapter: one InferenceSession per model."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from services.common.modelserver.runtime import ModelRuntime


class OnnxModel(ModelRuntime):
    platform = "onnxruntime"
    artifact_format = "onnx"

    @classmethod
    def library_version(cls) -> str:
        return ort.__version__

    def load(self) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.settings.runtime_intra_op_threads
        opts.inter_op_num_threads = self.settings.runtime_inter_op_threads
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Spinning threads burn the 2 cores the other servers need and worsen p99.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(self.path), opts, providers=["CPUExecutionProvider"]
        )
        have_in = {i.name for i in self.session.get_inputs()}
        have_out = {o.name for o in self.session.get_outputs()}
        want_in = {s.name for s in self.inputs}
        want_out = {s.name for s in self.outputs}
        if have_in != want_in or not want_out <= have_out:
            raise ValueError(
                f"the ONNX graph takes {sorted(have_in)} and returns {sorted(have_out)}; the "
                f"manifest says {sorted(want_in)} -> {sorted(want_out)}"
            )
        self._output_names = [s.name for s in self.outputs]

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._output_names, self.session.run(self._output_names, inputs)))

    def describe(self) -> str:
        return (
            f"intra_op_threads={self.settings.runtime_intra_op_threads} "
            f"inter_op_threads={self.settings.runtime_inter_op_threads} sequential, no spinning"
        )
