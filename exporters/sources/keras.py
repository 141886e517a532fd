"""Keras / TensorFlow sources: a keras.Model in memory, a .keras file, or a SavedModel directory.
Their input signature is read from the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exporters.sources import SourceError, SourceModel, make_signature
from model_store.manifest import Source


def _info(architecture: str, **kw) -> Source:
    import keras

    return Source(framework="keras", framework_version=keras.__version__, architecture=architecture, **kw)


def from_model(
    name: str,
    model,
    reference_inputs: np.ndarray,
    *,
    architecture: str,
    input_name: str | None = None,
    output_names: list[str] | None = None,
    layout: str | None = None,
    weights: str = "trained",
    dataset: str | None = None,
    accuracy: float | None = None,
    labels: np.ndarray | None = None,
    note: str | None = None,
) -> SourceModel:
    if len(model.inputs) != 1:
        raise SourceError(f"model has {len(model.inputs)} inputs; only single-input models are supported")
    spec = model.inputs[0]

    def predict(x: np.ndarray) -> list[np.ndarray]:
        out = model(x, training=False)
        out = out if isinstance(out, (list, tuple)) else [out]
        return [np.asarray(o) for o in out]

    try:
        outputs = predict(reference_inputs[:1])
    except Exception as e:  # noqa: BLE001
        raise SourceError(f"model does not accept its reference input: {e}") from e
    in_name = input_name or spec.name.split(":")[0]
    sig = make_signature(in_name, list(spec.shape[1:]), spec.dtype, outputs, output_names, layout)
    info = _info(architecture, weights=weights, dataset=dataset, test_accuracy=accuracy, note=note)
    return SourceModel(name, info, sig, reference_inputs, labels, predict, model)


def load_keras_file(path: Path):
    import keras

    if not Path(path).is_file():
        raise SourceError(f"Keras model file not found: {path}")
    try:
        return keras.saving.load_model(str(path), compile=False)
    except Exception as e:  # noqa: BLE001
        raise SourceError(f"not a loadable Keras model: {path} ({e})") from e


def from_saved_model(name: str, path: Path, reference_inputs: np.ndarray | None, seed: int = 0) -> SourceModel:
    """A TensorFlow SavedModel directory: its serving_default signature is the source."""
    import tensorflow as tf

    if not (Path(path) / "saved_model.pb").is_file():
        raise SourceError(f"not a SavedModel directory (no saved_model.pb): {path}")
    try:
        loaded = tf.saved_model.load(str(path))
        fn = loaded.signatures["serving_default"]
    except Exception as e:  # noqa: BLE001
        raise SourceError(f"cannot load SavedModel {path}: {e}") from e
    inputs = fn.structured_input_signature[1]
    if len(inputs) != 1:
        raise SourceError(f"signature has {len(inputs)} inputs; only single-input models are supported")
    (in_name, in_spec), = inputs.items()
    if reference_inputs is None:
        shape = [d if d is not None else 1 for d in in_spec.shape[1:]]
        reference_inputs = np.random.default_rng(seed).random((32, *shape)).astype(in_spec.dtype.as_numpy_dtype)
    out_names = sorted(fn.structured_outputs)

    def predict(x: np.ndarray) -> list[np.ndarray]:
        res = fn(**{in_name: tf.constant(x)})
        return [res[n].numpy() for n in out_names]

    outputs = predict(reference_inputs[:1])
    sig = make_signature(in_name, list(in_spec.shape[1:]), in_spec.dtype.as_numpy_dtype, outputs, out_names, None)
    info = Source(framework="keras", framework_version=tf.__version__, architecture=Path(path).name,
                  weights="trained", note="TensorFlow SavedModel source")  # fmt: skip
    return SourceModel(name, info, sig, reference_inputs, None, predict, loaded)
