"""One module per serving format. Each has:

    export(ws: Workspace, dest: Path) -> Exported   write the artifact under dest (its version dir)
    runner(path: Path) -> Callable[[np.ndarray], dict[str, np.ndarray]]
                                                    run the artifact in its target runtime (parity)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType


@dataclass
class Exported:
    filename: str  # file or directory inside the version dir ("." for the dir itself)
    route: str
    converters: dict[str, str]
    extra: dict[str, str] = field(default_factory=dict)


def target(fmt: str) -> ModuleType:
    from exporters.targets import onnx, savedmodel, tflite, torchserve

    modules = {"onnx": onnx, "savedmodel": savedmodel, "tflite": tflite, "torchserve": torchserve}
    return modules[fmt]
