"""ONNX Runtime adapter: one InferenceSession per model, N inputs and outputs by name."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from services.common.modelserver.runtime import ModelRuntime

# ONNX Runtime's type strings of the datatypes the manifest can name.
ORT_TYPES = {
    "tensor(float)": "FP32", "tensor(float16)": "FP16", "tensor(double)": "FP64",
    "tensor(int64)": "INT64", "tensor(int32)": "INT32", "tensor(int16)": "INT16",
    "tensor(int8)": "INT8", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64", "tensor(bool)": "BOOL",
}  # fmt: skip


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
        self._check_graph()
        self._output_names = [s.name for s in self.outputs]
        # After a batch larger than the adaptive batcher forms, hand the arena's extra chunks back
        # (ORT keeps its high-water mark otherwise: 168 -> 963 MB after one 4,096-row request).
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def _check_graph(self) -> None:
        """The graph's inputs must be the manifest's (names, datatypes, ranks) and its outputs
        include the manifest's: a mismatch is a load error naming every difference."""
        graph_in = {i.name: i for i in self.session.get_inputs()}
        graph_out = {o.name for o in self.session.get_outputs()}
        problems = []
        if set(graph_in) != {s.name for s in self.inputs}:
            problems.append(f"the graph takes inputs {sorted(graph_in)}, the manifest names "
                            f"{[s.name for s in self.inputs]}")  # fmt: skip
        for s in self.inputs:
            node = graph_in.get(s.name)
            if node is None:
                continue
            datatype = ORT_TYPES.get(node.type, node.type)
            if datatype != s.datatype:
                problems.append(f"input {s.name!r} is {datatype} in the graph, {s.datatype} in the manifest")
            if len(node.shape) != len(s.shape):
                problems.append(f"input {s.name!r} has rank {len(node.shape)} in the graph "
                                f"({node.shape}), the manifest's shape is {s.shape}")  # fmt: skip
        missing = [s.name for s in self.outputs if s.name not in graph_out]
        if missing:
            problems.append(f"the graph has no output(s) {missing} (it returns {sorted(graph_out)})")
        if problems:
            raise ValueError("the ONNX graph does not match the manifest: " + "; ".join(problems))

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = len(next(iter(inputs.values()))) if inputs else 0
        options = self._shrink if batch > self.settings.batch_max_size else None
        return dict(zip(self._output_names,
                        self.session.run(self._output_names, inputs, options)))

    def describe(self) -> str:
        return (
            f"intra_op_threads={self.settings.runtime_intra_op_threads} "
            f"inter_op_threads={self.settings.runtime_inter_op_threads} sequential, no spinning"
        )
