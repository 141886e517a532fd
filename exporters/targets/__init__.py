"""One module per serving format. Each has:

    ROUTES: list[Route]          export routes in the order they are tried (first success wins)
    runner(path, signature) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
                                 run the artifact in its target runtime (parity)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Callable


@dataclass
class Exported:
    filename: str  # file or directory inside the version dir ("." for the dir itself)
    converters: dict[str, str]
    extra: dict[str, str] = field(default_factory=dict)
    fixed_shapes: dict[str, list[int]] | None = None


@dataclass(frozen=True)
class Route:
    name: str  # recorded in the manifest, e.g. "torch.onnx.export -> onnx2tf -> SavedModel"
    frameworks: tuple[str, ...]  # source frameworks it applies to
    export: Callable  # (ws: Workspace, dest: Path) -> Exported


def target(fmt: str) -> ModuleType:
    from exporters.targets import aotinductor, executorch, onnx, savedmodel, tflite, torchserve

    modules = {"onnx": onnx, "savedmodel": savedmodel, "tflite": tflite, "torchserve": torchserve,
               "aotinductor": aotinductor, "executorch": executorch}  # fmt: skip
    return modules[fmt]


def routes(fmt: str, framework: str) -> list[Route]:
    fw = "keras" if framework == "tensorflow" else framework
    return [r for r in target(fmt).ROUTES if fw in r.frameworks]


def formats_for(framework: str, formats: tuple[str, ...]) -> tuple[str, ...]:
    """The formats that have a route from this source framework (ExecuTorch: PyTorch only)."""
    return tuple(f for f in formats if routes(f, framework))


def cast_inputs(x: dict, wanted: dict) -> dict:
    """Inputs cast to a runtime's own dtypes where a converter changed them (int64 -> int32)."""
    import numpy as np

    out = {}
    for k, v in x.items():
        d = wanted.get(k)
        if d is not None and v.dtype != d:
            if np.dtype(d).kind in "iu" and v.size and (v.min() < np.iinfo(d).min or v.max() > np.iinfo(d).max):
                raise ValueError(f"input {k!r}: values do not fit the artifact's {np.dtype(d)}")
            v = v.astype(d)
        out[k] = v
    return out


__all__ = ["Exported", "Path", "Route", "cast_inputs", "formats_for", "routes", "target"]
