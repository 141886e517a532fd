"""Keras / TensorFlow sources: a keras.Model in memory, a .keras file, or a SavedModel directory.
Their input signature (names, dtypes, shapes; dict inputs included) is read from the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contract.datatypes import DatatypeError, oip_datatype
from contract.manifest import Signature, Source, TensorSpec
from exporters.sources import Arrays, SourceError, SourceModel, check_unique, flatten_outputs, output_specs


def _dims(shape: list[int | None], integer: bool) -> tuple[list[int], list[str]]:
    dims = [-1 if d is None else int(d) for d in shape]
    names = ["batch"] + ["sequence" if integer and len(shape) == 2 and d is None else (f"d{i}" if d is None else "")
                         for i, d in enumerate(shape[1:], 1)]  # fmt: skip
    return [-1, *dims[1:]], names


def input_specs(model) -> list[TensorSpec]:
    """The model's inputs in call order (dict inputs by key)."""
    specs = []
    for t in model.inputs:
        name = t.name.split(":")[0]
        try:
            datatype = oip_datatype(np.dtype(t.dtype))
        except (TypeError, DatatypeError):
            raise SourceError(f"input {name!r} has dtype {t.dtype}, which no runtime here serves") from None
        shape, names = _dims(list(t.shape), datatype.startswith(("INT", "UINT")))
        specs.append(TensorSpec(name=name, datatype=datatype, shape=shape, dims=names))
    return specs


def takes_dict(model) -> bool:
    return isinstance(getattr(model, "input", None), dict)


def vocab_size(model) -> int | None:
    import keras

    for layer in _layers(model):
        if isinstance(layer, keras.layers.Embedding):
            return int(layer.input_dim)
    return None


def _layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _layers(layer)


def from_model(
    name: str,
    model,
    reference_inputs: Arrays,
    *,
    architecture: str,
    specs: list[TensorSpec] | None = None,
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
    import keras

    specs = specs or input_specs(model)
    names = [s.name for s in specs]
    as_dict = takes_dict(model)
    if layout:
        specs = [s.model_copy(update={"layout": layout}) if len(s.shape) == 4 else s for s in specs]

    def call(x: Arrays):
        args = {n: x[n] for n in names} if as_dict else [x[n] for n in names]
        return model(args if as_dict or len(names) > 1 else args[0], training=False)

    def predict(x: Arrays) -> list[np.ndarray]:
        return [np.asarray(keras.ops.convert_to_numpy(v)) for _, v in flatten_outputs(call(x))]

    try:
        pairs = [(n, np.asarray(keras.ops.convert_to_numpy(v))) for n, v in flatten_outputs(call({k: v[:2] for k, v in reference_inputs.items()}))]
    except Exception as e:  # noqa: BLE001
        raise SourceError(f"the model does not accept its reference inputs: {type(e).__name__}: {e}") from e
    if output_names is None and len(pairs) > 1 and not isinstance(model.outputs, dict):
        keras_names = list(getattr(model, "output_names", None) or [])
        if len(keras_names) == len(pairs) and all(n.startswith("output_") for n, _ in pairs):
            output_names = keras_names
    sig = Signature(inputs=specs, outputs=output_specs(pairs, output_names))
    check_unique(sig.inputs, "input")
    check_unique(sig.outputs, "output")
    info = Source(framework="keras", framework_version=keras.__version__, architecture=architecture, weights=weights,
                  library=library, dataset=dataset, test_accuracy=accuracy, note=note)  # fmt: skip
    return SourceModel(name, info, sig, reference_inputs, labels, predict, model, inputs_note)


def load_keras_file(path: Path):
    import keras

    if not Path(path).is_file():
        raise SourceError(f"Keras model file not found: {path}")
    try:
        return keras.saving.load_model(str(path), compile=False)
    except Exception as e:  # noqa: BLE001
        raise SourceError(f"not a loadable Keras model: {path} ({e})") from e


def saved_model_specs(path: Path):
    """(loaded, serving_default function, input specs) of a SavedModel directory."""
    import tensorflow as tf

    if not (Path(path) / "saved_model.pb").is_file():
        raise SourceError(f"not a SavedModel directory (no saved_model.pb): {path}")
    try:
        loaded = tf.saved_model.load(str(path))
        fn = loaded.signatures["serving_default"]
    except Exception as e:  # noqa: BLE001
        raise SourceError(f"cannot load SavedModel {path}: {e}") from e
    specs = []
    for in_name, t in fn.structured_input_signature[1].items():
        datatype = oip_datatype(np.dtype(t.dtype.as_numpy_dtype))
        shape, names = _dims(list(t.shape), datatype.startswith(("INT", "UINT")))
        specs.append(TensorSpec(name=in_name, datatype=datatype, shape=shape, dims=names))
    return loaded, fn, specs


def from_saved_model(name: str, path: Path, loaded, fn, specs: list[TensorSpec], reference_inputs: Arrays, *,
                     weights: str = "unknown", inputs_note: str = "held-out samples") -> SourceModel:  # fmt: skip
    """A TensorFlow SavedModel directory: its serving_default signature is the source."""
    import tensorflow as tf

    out_names = sorted(fn.structured_outputs)

    def predict(x: Arrays) -> list[np.ndarray]:
        res = fn(**{s.name: tf.constant(x[s.name]) for s in specs})
        return [res[n].numpy() for n in out_names]

    try:
        outputs = predict({k: v[:2] for k, v in reference_inputs.items()})
    except Exception as e:  # noqa: BLE001
        raise SourceError(f"the SavedModel does not accept its reference inputs: {type(e).__name__}: {e}") from e
    sig = Signature(inputs=specs, outputs=output_specs(list(zip(out_names, outputs)), None))
    info = Source(framework="tensorflow", framework_version=tf.__version__, architecture=Path(path).name,
                  weights=weights, note="TensorFlow SavedModel source")  # fmt: skip
    return SourceModel(name, info, sig, reference_inputs, None, predict, loaded, inputs_note)
