"""PyTorch sources: an nn.Module in memory, a TorchScript file, or `package.module:factory` +
a state_dict file. A PyTorch model does not carry its input shape: the caller gives it."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import torch

from exporters.sources import SourceError, SourceModel, make_signature
from model_store.manifest import Source


def _as_outputs(result) -> list[np.ndarray]:
    if isinstance(result, torch.Tensor):
        return [result.detach().numpy()]
    if isinstance(result, (tuple, list)):
        return [r.detach().numpy() for r in result]
    if isinstance(result, dict):
        return [r.detach().numpy() for r in result.values()]
    raise SourceError(f"model returned {type(result).__name__}; expected a tensor, tuple or dict")


def from_module(
    name: str,
    module: torch.nn.Module,
    reference_inputs: np.ndarray,
    *,
    architecture: str,
    input_name: str = "input",
    output_names: list[str] | None = None,
    layout: str | None = None,
    weights: str = "trained",
    dataset: str | None = None,
    accuracy: float | None = None,
    labels: np.ndarray | None = None,
    note: str | None = None,
) -> SourceModel:
    module = module.eval()

    def predict(x: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return _as_outputs(module(torch.from_numpy(np.ascontiguousarray(x))))

    try:
        outputs = predict(reference_inputs[:1])
    except Exception as e:  # noqa: BLE001 - any failure here means the shape/dtype is wrong
        raise SourceError(
            f"model does not accept input of shape {list(reference_inputs.shape[1:])} "
            f"({reference_inputs.dtype}): {e}"
        ) from e
    signature = make_signature(input_name, list(reference_inputs.shape[1:]), reference_inputs.dtype,
                               outputs, output_names, layout)  # fmt: skip
    info = Source(
        framework="pytorch",
        framework_version=torch.__version__.split("+")[0],
        architecture=architecture,
        weights=weights,
        dataset=dataset,
        test_accuracy=accuracy,
        note=note,
    )
    return SourceModel(name, info, signature, reference_inputs, labels, predict, module)


def load_torchscript(path: Path) -> torch.nn.Module:
    if not Path(path).is_file():
        raise SourceError(f"TorchScript file not found: {path}")
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as e:  # noqa: BLE001
        raise SourceError(f"not a loadable TorchScript file: {path} ({e})") from e


def load_factory(spec: str, state_dict: Path | None) -> torch.nn.Module:
    """`package.module:factory` -> factory() with the state_dict loaded into it."""
    mod_name, _, attr = spec.partition(":")
    if not attr:
        raise SourceError(f"factory must look like package.module:function, got {spec!r}")
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise SourceError(f"cannot import factory {spec!r}: {e}") from e
    module = factory()
    if state_dict is not None:
        if not Path(state_dict).is_file():
            raise SourceError(f"state_dict file not found: {state_dict}")
        try:
            state = torch.load(str(state_dict), map_location="cpu", weights_only=True)
            module.load_state_dict(state)
        except Exception as e:  # noqa: BLE001
            raise SourceError(f"state_dict {state_dict} does not fit {spec}: {e}") from e
    return module
