"""A user's own model -> SourceModel. The kind is told by the path:
.keras / .h5 file -> Keras; directory with saved_model.pb -> TF SavedModel;
.pt / .pth / .torchscript file -> TorchScript; `package.module:factory` (+ --state-dict) -> PyTorch.

Signature: read from Keras models and SavedModels; for PyTorch given as `--input NAME:DTYPE:DIMS`
(repeatable) or `--input-shape` (one float input). Reference inputs: `--sample-data` (.npz keyed by
input name, or .npy for a one-input model), else drawn to be meaningful (exporters/inputs.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contract.manifest import TensorSpec
from exporters import inputs as ref_inputs
from exporters.examples.build import single_sample_ms
from exporters.examples.data import REFERENCE_BATCH
from exporters.sources import Arrays, SourceError, SourceModel


def _parse_shape(text: str) -> list[int]:
    try:
        shape = [int(d) for d in text.replace("x", ",").split(",") if d.strip()]
    except ValueError:
        raise SourceError(f"--input-shape must be integers like 1,8,8 (without the batch), got {text!r}") from None
    if not shape or any(d <= 0 for d in shape):
        raise SourceError(f"--input-shape must be positive integers, got {text!r}")
    return shape


def _specs(model_specs: list[TensorSpec] | None, inputs: list[str], input_shape: str | None,
           input_name: str | None, dtype: str) -> list[TensorSpec] | None:  # fmt: skip
    """The signature the user gave, on top of what the model records (theirs wins by name)."""
    given = [ref_inputs.parse_input(t) for t in inputs]
    if input_shape:
        shape = _parse_shape(input_shape)
        if model_specs and len(model_specs) == 1 and not given:
            s = model_specs[0]
            if len(shape) != len(s.shape) - 1:
                raise SourceError(f"--input-shape {input_shape} has {len(shape)} dims, input {s.name!r} has {len(s.shape) - 1} (without batch)")
            given = [s.model_copy(update={"shape": [-1, *shape], "dims": ["batch"] + [""] * len(shape)})]
        elif not given:
            spec = ref_inputs.parse_input(f"{input_name or 'input'}:{dtype}:batch,{','.join(map(str, shape))}")
            given = [spec]
        else:
            raise SourceError("give either --input (any number of inputs) or --input-shape (one input), not both")
    if not model_specs:
        return given or None
    by_name = {s.name: s for s in given}
    unknown = set(by_name) - {s.name for s in model_specs}
    if unknown and not (len(given) == len(model_specs) == 1):
        raise SourceError(f"--input names {sorted(unknown)} are not inputs of the model; it takes {[s.name for s in model_specs]}")
    if len(given) == len(model_specs) == 1:
        return given
    return [by_name.get(s.name, s) for s in model_specs]


def _samples(sample_data: Path | None, specs: list[TensorSpec], vocab: int | None) -> tuple[list[TensorSpec], Arrays, str]:
    specs = ref_inputs.with_roles(specs, vocab) if sample_data is None else specs
    if sample_data is None:
        x, note = ref_inputs.draw(specs, REFERENCE_BATCH)
        return specs, x, note
    if not Path(sample_data).is_file():
        raise SourceError(f"--sample-data file not found: {sample_data}")
    try:
        loaded = np.load(sample_data)
        x = {k: loaded[k] for k in loaded.files} if hasattr(loaded, "files") else {specs[0].name: loaded}
    except Exception as e:  # noqa: BLE001
        raise SourceError(f"--sample-data is not a .npz (one array per input) or .npy file: {e}") from e
    missing = [s.name for s in specs if s.name not in x]
    if missing:
        raise SourceError(f"--sample-data has arrays {sorted(x)}; the model's inputs {missing} are missing")
    x = {s.name: x[s.name].astype(s.numpy_dtype, copy=False) for s in specs}
    return specs, x, f"user samples from {sample_data}"


def load_user_source(
    source: str,
    name: str,
    *,
    state_dict: Path | None = None,
    inputs: list[str] | None = None,
    input_shape: str | None = None,
    input_name: str | None = None,
    output_names: list[str] | None = None,
    dtype: str = "float32",
    sample_data: Path | None = None,
    vocab_size: int | None = None,
    weights: str = "unknown",
    layout: str | None = None,
) -> SourceModel:
    path = Path(source)
    inputs = inputs or []
    common = dict(output_names=output_names, layout=layout, weights=weights, note="user model")
    if path.suffix in (".keras", ".h5") or (path.is_dir() and (path / "saved_model.pb").exists()):
        from exporters.sources import keras as ks

        if path.is_dir():
            loaded, fn, model_specs = ks.saved_model_specs(path)
            specs, x, note = _samples(sample_data, _specs(model_specs, inputs, input_shape, input_name, dtype), vocab_size)
            src = ks.from_saved_model(name, path, loaded, fn, specs, x, weights=weights, inputs_note=note)
        else:
            model = ks.load_keras_file(path)
            specs = _specs(ks.input_specs(model), inputs, input_shape, input_name, dtype)
            specs, x, note = _samples(sample_data, specs, vocab_size or ks.vocab_size(model))
            src = ks.from_model(name, model, x, architecture=path.stem, specs=specs, inputs_note=note, **common)
    elif ":" in source or path.suffix in (".pt", ".pth", ".torchscript", ".ts"):
        from exporters.sources import pytorch

        specs = _specs(None, inputs, input_shape, input_name, dtype)
        if specs is None:
            raise SourceError(
                "a PyTorch model does not record its inputs: give --input NAME:DTYPE:DIMS for each "
                "(e.g. --input input_ids:int64:batch,seq --input attention_mask:int64:batch,seq) or "
                "--input-shape 3,224,224 for one float input"
            )
        module = pytorch.load_factory(source, state_dict) if ":" in source and not path.exists() else pytorch.load_torchscript(path)
        specs, x, note = _samples(sample_data, specs, vocab_size or pytorch.vocab_size(module))
        src = pytorch.from_module(name, module, x, architecture=path.stem if path.exists() else source,
                                  input_specs=specs, inputs_note=note, **common)  # fmt: skip
    elif not path.exists():
        raise SourceError(f"model file not found: {source}")
    else:
        raise SourceError(
            f"cannot tell the framework of {source}: expected .keras/.h5, a SavedModel directory, "
            ".pt/.pth TorchScript, or package.module:factory"
        )
    src.info.single_sample_ms = single_sample_ms(src.predict, {k: v[:1] for k, v in src.reference_inputs.items()})
    return src
