"""PyTorch sources: an nn.Module in memory, a TorchScript file, or `package.module:factory` +
a state_dict file. A PyTorch model does not carry its input signature: the caller gives it
(--input NAME:DTYPE:DIMS, or example inputs)."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import numpy as np
import torch

from contract.manifest import Signature, Source, TensorSpec
from exporters.sources import Arrays, SourceError, SourceModel, check_unique, flatten_outputs, output_specs


class FlatModule(torch.nn.Module):
    """The source with positional tensor inputs in signature order and a flat tuple of outputs
    (flatten_outputs' order): what torch.jit.trace, torch.onnx.export and TorchServe take.
    Inputs go by keyword when the forward's parameters carry the signature's names (Hugging Face
    models: input_ids=..., attention_mask=...), else by position."""

    def __init__(self, module: torch.nn.Module, input_names: list[str]) -> None:
        super().__init__()
        self.module = module
        self.input_names = input_names
        try:
            params = inspect.signature(module.forward).parameters
        except (TypeError, ValueError):  # ScriptModule
            params = {}
        self.by_keyword = all(n in params for n in input_names) and len(input_names) > 1

    def forward(self, *args):
        out = self.module(**dict(zip(self.input_names, args))) if self.by_keyword else self.module(*args)
        return tuple(v for _, v in flatten_outputs(out))


def vocab_size(module: torch.nn.Module) -> int | None:
    """The first embedding's number of rows (token ids must be below it), if the model has one."""
    config = getattr(module, "config", None)
    if config is not None and getattr(config, "vocab_size", None):
        return int(config.vocab_size)
    for m in module.modules():
        if isinstance(m, torch.nn.Embedding):
            return int(m.num_embeddings)
    return None


def from_module(
    name: str,
    module: torch.nn.Module,
    reference_inputs: Arrays,
    *,
    architecture: str,
    input_specs: list[TensorSpec] | None = None,
    output_names: list[str] | None = None,
    layout: str | None = None,
    weights: str = "unknown",
    library: str | None = None,
    dataset: str | None = None,
    accuracy: float | None = None,
    labels: np.ndarray | None = None,
    note: str | None = None,
    inputs_note: str = "held-out samples",
) -> SourceModel:
    module = module.eval()
    names = list(reference_inputs)
    # eval() on the wrapper too: exporters restore the wrapper's mode (recursively) after export,
    # and a wrapper left in training mode would switch dropout on in the source afterwards.
    flat = FlatModule(module, names).eval()

    def predict(x: Arrays) -> list[np.ndarray]:
        with torch.no_grad():
            out = flat(*[torch.from_numpy(np.ascontiguousarray(x[n])) for n in names])
        return [o.detach().numpy() for o in out]

    try:
        outputs = predict({k: v[:2] for k, v in reference_inputs.items()})
    except Exception as e:  # noqa: BLE001 - any failure here means the inputs do not fit
        given = ", ".join(f"{k} {v.dtype}{list(v.shape[1:])}" for k, v in reference_inputs.items())
        raise SourceError(f"the model does not accept inputs {given} (per sample): {type(e).__name__}: {e}") from e
    pairs = [(n, np.asarray(o)) for (n, _), o in zip(flatten_outputs(_structure(flat, reference_inputs)), outputs)]
    specs = input_specs or [
        TensorSpec(name=n, datatype=_oip(a), shape=[-1, *a.shape[1:]]) for n, a in reference_inputs.items()
    ]
    if layout:
        specs = [s.model_copy(update={"layout": layout}) if s.layout is None and len(s.shape) == 4 else s for s in specs]
    sig = Signature(inputs=specs, outputs=output_specs(pairs, output_names))
    check_unique(sig.inputs, "input")
    check_unique(sig.outputs, "output")
    info = Source(framework="pytorch", framework_version=torch.__version__.split("+")[0], architecture=architecture,
                  weights=weights, library=library, dataset=dataset, test_accuracy=accuracy, note=note)  # fmt: skip
    # Exporters trace the flat wrapper; a TorchScript module is exported as it is (already flat,
    # positional), since torch.onnx.export cannot trace a Python module wrapping a ScriptModule.
    native = module if isinstance(module, torch.jit.ScriptModule) else flat
    return SourceModel(name, info, sig, reference_inputs, labels, predict, native, inputs_note)


def _structure(flat: FlatModule, x: Arrays):
    """The module's raw output on one sample (for the names flatten_outputs gives it)."""
    args = [torch.from_numpy(np.ascontiguousarray(v[:1])) for v in x.values()]
    with torch.no_grad():
        return flat.module(**dict(zip(flat.input_names, args))) if flat.by_keyword else flat.module(*args)


def _oip(a: np.ndarray) -> str:
    from contract.datatypes import oip_datatype

    return oip_datatype(a.dtype)


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
