"""ExecuTorch adapter: one loaded .pte "forward" method per model (XNNPACK delegate), run by the
Python bindings of ExecuTorch's C++ runtime.

- Inputs and outputs go by position, in the manifest's order (a .pte keeps no tensor names); load
  checks their number and datatypes against the program.
- Shapes: the program's memory is planned for each dimension's upper bound (manifest extra
  "max_shapes"). The batch bound is the artifact's fixed_shapes batch, which run() cuts requests
  into; a longer dynamic dim (e.g. a sequence) is refused with a 400 naming it: ExecuTorch itself
  only checks a tensor's total element count and would answer wrong numbers for it.
- Threads: XNNPACK's threadpool is process-wide (one thread per core by default); load sets it to
  settings.runtime_intra_op_threads.
"""

from __future__ import annotations

import json
import logging
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from contract.codec import CodecError
from services.common.modelserver.runtime import ModelRuntime

log = logging.getLogger(__name__)
INSTALL = "install it with `.venv/bin/pip install --no-deps -r requirements-edge.lock` (make install does)"
# c10::ScalarType codes (MethodMeta's TensorInfo.dtype()) of the datatypes a manifest can name.
SCALAR_TYPES = {0: "UINT8", 1: "INT8", 2: "INT16", 3: "INT32", 4: "INT64", 5: "FP16", 6: "FP32",
                7: "FP64", 11: "BOOL"}  # fmt: skip


def set_threads(threads: int) -> None:
    """The XNNPACK delegate's threadpool size (process-wide; its default is one per core)."""
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

    _unsafe_reset_threadpool(threads)


def load_method(path: Path, threads: int = 1):
    """The .pte's "forward" method, ready to execute (the exporter's parity runner uses it too)."""
    from executorch.runtime import Runtime

    set_threads(threads)
    method = Runtime.get().load_program(Path(path)).load_method("forward")
    if method is None:
        raise ValueError(f"{path} has no 'forward' method")
    return method


class ExecuTorchModel(ModelRuntime):
    platform = "executorch"
    artifact_format = "executorch"

    @classmethod
    def library_version(cls) -> str:
        try:
            return version("executorch")
        except PackageNotFoundError:
            return "not installed"

    def load(self) -> None:
        try:
            import executorch.runtime  # noqa: F401
        except ImportError as e:
            raise RuntimeError(f"executorch is not importable ({e}): {INSTALL}") from None
        self.threads = self.settings.runtime_intra_op_threads
        self.method = load_method(self.path, self.threads)
        self._check_program()
        bounds = json.loads(self.artifact.extra.get("max_shapes", "{}"))
        self.max_shapes: dict[str, list[int]] = {s.name: bounds.get(s.name, []) for s in self.inputs}

    def _check_program(self) -> None:
        """The program's inputs and outputs must be the manifest's (number, datatypes, ranks): a
        mismatch is a load error naming every difference."""
        meta = self.method.metadata
        problems = []
        if meta.num_inputs() != len(self.inputs) or meta.num_outputs() != len(self.outputs):
            problems.append(f"the program takes {meta.num_inputs()} input(s) and returns {meta.num_outputs()} "
                            f"output(s), the manifest names {len(self.inputs)} and {len(self.outputs)}")  # fmt: skip
        else:
            for kind, specs, info in (("input", self.inputs, meta.input_tensor_meta),
                                      ("output", self.outputs, meta.output_tensor_meta)):  # fmt: skip
                for i, s in enumerate(specs):
                    t = info(i)
                    have = SCALAR_TYPES.get(t.dtype(), f"scalar type {t.dtype()}")
                    if have != s.datatype or len(t.sizes()) != len(s.shape):
                        problems.append(f"{kind} {i} ({s.name!r}) is {have} of rank {len(t.sizes())} in the "
                                        f"program, {s.datatype} of rank {len(s.shape)} in the manifest")  # fmt: skip
        if problems:
            raise ValueError(f"{self.path} does not match the manifest: " + "; ".join(problems))

    def check(self, inputs: dict[str, np.ndarray]) -> None:
        super().check(inputs)
        for s in self.inputs:
            shape, bound = inputs[s.name].shape, self.max_shapes.get(s.name) or []
            for i, (got, top) in enumerate(zip(shape[1:], bound[1:]), start=1):
                if got > top:
                    what = s.dims[i] or f"dimension {i}"
                    raise CodecError(f"input {s.name!r} has {what} {got}; this ExecuTorch artifact takes at "
                                     f"most {top} (its memory is planned for that bound)")  # fmt: skip

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        feed = [torch.from_numpy(np.ascontiguousarray(inputs[s.name], s.numpy_dtype)) for s in self.inputs]
        got = self.method.execute(feed)  # outputs are copies: no aliasing across calls
        return {s.name: g.numpy().astype(s.numpy_dtype, copy=False) for s, g in zip(self.outputs, got)}

    def describe(self) -> str:
        return f"{self.artifact.extra.get('delegate', 'XNNPACK')} delegate, threadpool={self.threads}"
