"""AOTInductor adapter: one compiled `.pt2` package per model (torch._inductor.aoti_load_package),
N inputs in signature order, N outputs in signature order (the exporter's FlatModule)."""

from __future__ import annotations

import json

import numpy as np
import torch

from contract.codec import CodecError
from services.common.modelserver.runtime import ModelRuntime

DIM_RANGES = "dim_ranges"  # the artifact's extra key the exporter writes (exporters/targets/aotinductor.py)

_interop_set = False


class AOTInductorModel(ModelRuntime):
    platform = "aotinductor"
    artifact_format = "aotinductor"

    @classmethod
    def library_version(cls) -> str:
        return torch.__version__.split("+")[0]

    def load(self) -> None:
        global _interop_set
        # Inter-op threads can be set once per process, before any parallel work: the first model.
        if not _interop_set:
            torch.set_num_interop_threads(self.settings.runtime_inter_op_threads)
            _interop_set = True
        torch.set_num_threads(self.settings.runtime_intra_op_threads)
        self.model = torch._inductor.aoti_load_package(str(self.path))
        self._check_package()
        # {input: {dim name: [min, max or None]}}: sizes the compiled model takes.
        self.dim_ranges: dict[str, dict[str, list]] = json.loads(self.artifact.extra.get(DIM_RANGES) or "{}")

    def _check_package(self) -> None:
        """The exporter records the signature's input and output names in the package's metadata:
        a package built for another signature is a load error naming both."""
        meta = self.model.get_metadata()
        problems = []
        for what, specs in (("inputs", self.inputs), ("outputs", self.outputs)):
            want = ",".join(s.name for s in specs)
            if meta.get(what) not in (None, want):
                problems.append(f"the package's {what} are [{meta[what]}], the manifest names [{want}]")
        if problems:
            raise ValueError("the AOTInductor package does not match the manifest: " + "; ".join(problems))

    def check(self, inputs: dict[str, np.ndarray]) -> None:
        """The compiled model takes each dynamic dim within the range torch.export proved (a
        transformer's sequence up to its positions table): outside it, a 400 naming the range."""
        super().check(inputs)
        for s in self.inputs:
            for dim, (low, high) in self.dim_ranges.get(s.name, {}).items():
                if dim not in s.dims:
                    continue
                size = inputs[s.name].shape[s.dims.index(dim)]
                if size < low or (high is not None and size > high):
                    bound = f"{low}..{high}" if high is not None else f">= {low}"
                    raise CodecError(f"input {s.name!r} has {dim} {size}; this model takes {dim} {bound}")

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # OpenMP thread counts are per OS thread: predict() runs on the batcher's own thread (or
        # the event loop's), where load()'s setting does not apply.
        if torch.get_num_threads() != self.settings.runtime_intra_op_threads:
            torch.set_num_threads(self.settings.runtime_intra_op_threads)
        args = [torch.from_numpy(np.ascontiguousarray(inputs[s.name])) for s in self.inputs]
        with torch.inference_mode():
            out = self.model(*args)
        return {s.name: t.numpy().astype(s.numpy_dtype, copy=False) for s, t in zip(self.outputs, out)}

    def describe(self) -> str:
        return (
            f"intra_op_threads={self.settings.runtime_intra_op_threads} "
            f"inter_op_threads={self.settings.runtime_inter_op_threads}"
        )
