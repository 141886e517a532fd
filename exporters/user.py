"""A user's own model -> SourceModel. The kind is told by the path:
.keras / .h5 file -> Keras; directory with saved_model.pb -> TF SavedModel;
.pt / .pth / .torchscript file -> TorchScript; `package.module:factory` (+ --state-dict) -> PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exporters.examples.build import single_sample_ms
from exporters.examples.data import REFERENCE_BATCH, SEED
from exporters.sources import SourceError, SourceModel


def _parse_shape(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        shape = tuple(int(d) for d in text.replace("x", ",").split(",") if d.strip())
    except ValueError:
        raise SourceError(f"--input-shape must be integers like 1,8,8, got {text!r}") from None
    if not shape or any(d <= 0 for d in shape):
        raise SourceError(f"--input-shape must be positive integers, got {text!r}")
    return shape


def _samples(sample_data: Path | None, shape: tuple[int, ...] | None, dtype: str) -> np.ndarray | None:
    if sample_data is not None:
        if not Path(sample_data).is_file():
            raise SourceError(f"--sample-data file not found: {sample_data}")
        try:
            return np.load(sample_data)
        except Exception as e:  # noqa: BLE001
            raise SourceError(f"--sample-data is not a .npy array: {e}") from e
    if shape is None:
        return None
    return np.random.default_rng(SEED).random((REFERENCE_BATCH, *shape)).astype(dtype)


def load_user_source(
    source: str,
    name: str,
    *,
    state_dict: Path | None = None,
    input_shape: str | None = None,
    input_name: str | None = None,
    output_names: list[str] | None = None,
    dtype: str = "float32",
    sample_data: Path | None = None,
    layout: str | None = None,
) -> SourceModel:
    path = Path(source)
    note = "user model; parity inputs: " + (f"{sample_data}" if sample_data else "seeded uniform random")
    if path.suffix in (".keras", ".h5") or (path.is_dir() and (path / "saved_model.pb").exists()):
        from exporters.sources import keras as ks

        if path.is_dir():
            src = ks.from_saved_model(name, path, _samples(sample_data, None, dtype))
        else:
            model = ks.load_keras_file(path)
            shape = tuple(int(d) for d in model.inputs[0].shape[1:] if d is not None)
            if len(shape) != len(model.inputs[0].shape) - 1:
                shape = _parse_shape(input_shape)
                if shape is None:
                    raise SourceError("the model's input has unknown dimensions: give --input-shape")
            x = _samples(sample_data, shape, str(model.inputs[0].dtype))
            src = ks.from_model(name, model, x, architecture=path.stem, output_names=output_names,
                                input_name=input_name, layout=layout, note=note)  # fmt: skip
    elif ":" in source or path.suffix in (".pt", ".pth", ".torchscript", ".ts"):
        from exporters.sources import pytorch

        shape = _parse_shape(input_shape)
        x = _samples(sample_data, shape, dtype)
        if x is None:
            raise SourceError("a PyTorch model does not record its input shape: give --input-shape (or --sample-data)")
        module = pytorch.load_factory(source, state_dict) if ":" in source and not path.exists() else pytorch.load_torchscript(path)
        src = pytorch.from_module(name, module, x, architecture=path.stem if path.exists() else source,
                                  input_name=input_name or "input", output_names=output_names, layout=layout, note=note)  # fmt: skip
    elif not path.exists():
        raise SourceError(f"model file not found: {source}")
    else:
        raise SourceError(
            f"cannot tell the framework of {source}: expected .keras/.h5, a SavedModel directory, "
            ".pt/.pth TorchScript, or package.module:factory"
        )
    src.info.single_sample_ms = single_sample_ms(src.predict, src.reference_inputs[:1])
    return src
