"""Train (or initialise) the example models and wrap them as export sources."""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterator

import numpy as np

from exporters.examples import data
from exporters.sources import SourceModel

log = logging.getLogger("exporters")

DIGITS = "scikit-learn digits (bundled), stratified 80/20 split, seed 0"
RANDOM_NOTE = (
    "RANDOM INITIALISATION (untrained, seed 0; BatchNorm statistics calibrated on seeded random "
    "images): for timing only, its predictions are meaningless"
)
HELD_OUT = "the first 32 samples of the held-out digits test split"
RANDOM_INPUTS = "seeded uniform random images in [0, 1)"
TOKENS = DIGITS + "; each image as 64 intensity tokens (ids 1-17), trailing blank tokens cropped"
HELD_OUT_TOKENS = "the first 32 sequences of the held-out digits test split (lengths 59-64, padded to 64)"
EPOCHS = {"mlp": 40, "cnn": 30, "transformer": 40}
EXAMPLES = (
    "digits-mlp-torch", "digits-mlp-keras", "digits-cnn-torch", "digits-cnn-keras",
    "mobilenetv2-torch", "mobilenetv2-keras", "digits-transformer-torch", "digits-transformer-keras",
)  # fmt: skip


def single_sample_ms(predict: Callable[[dict], object], x: dict[str, np.ndarray], runs: int = 20) -> float:
    """Median in-process latency of one sample in the source framework."""
    predict(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        predict(x)
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1000, 3)


def _timed_call(src: SourceModel) -> Callable[[dict], object]:
    """How each framework runs inference in production: torch eager under no_grad; Keras inside a
    tf.function (eager model(x) costs ~100 ms of Python overhead on MobileNetV2 here)."""
    if src.framework == "pytorch":
        return src.predict
    import tensorflow as tf

    from exporters.sources.keras import takes_dict

    names, as_dict = src.signature.input_names(), takes_dict(src.native)
    fn = tf.function(lambda *xs: src.native(dict(zip(names, xs)) if as_dict else xs[0] if len(xs) == 1 else list(xs),
                                            training=False))  # fmt: skip
    return lambda x: fn(*[tf.constant(x[n]) for n in names])


def _torch(name: str, digits: data.Digits) -> SourceModel:
    import torch

    from exporters.examples import torch_models as tm
    from exporters.sources import pytorch

    torch.manual_seed(data.SEED)
    arch = name.rsplit("-", 1)[0]
    if arch == "mobilenetv2":
        x = data.random_images((3, 224, 224))
        model = tm.calibrate_batchnorm(tm.mobilenet_v2(), data.random_images((3, 224, 224), seed=1))
        return pytorch.from_module(name, model, {"input": x}, architecture=arch, layout="NCHW", output_names=["logits"],
                                   weights="random-init", note=RANDOM_NOTE, inputs_note=RANDOM_INPUTS)  # fmt: skip
    kind = arch.split("-")[1]
    layout = "NCHW" if kind == "cnn" else None
    shape = (lambda a: digits.images(a, "NCHW")) if kind == "cnn" else (lambda a: a)
    model = tm.digits_cnn() if kind == "cnn" else tm.digits_mlp()
    tm.train(model, shape(digits.x_train), digits.y_train, EPOCHS[kind], data.SEED)
    acc = tm.accuracy(model, shape(digits.x_test), digits.y_test)
    ref = shape(digits.x_test[: data.REFERENCE_BATCH])
    return pytorch.from_module(name, model, {"input": ref}, architecture=arch, layout=layout, output_names=["logits"],
                               weights="trained", dataset=DIGITS, accuracy=acc,
                               labels=digits.y_test[: data.REFERENCE_BATCH], inputs_note=HELD_OUT)  # fmt: skip


def _keras(name: str, digits: data.Digits) -> SourceModel:
    import keras

    from exporters.examples import keras_models as km
    from exporters.sources import keras as keras_source

    keras.utils.set_random_seed(data.SEED)
    arch = name.rsplit("-", 1)[0]
    if arch == "mobilenetv2":
        x = data.random_images((224, 224, 3))
        model = km.calibrate_batchnorm(km.mobilenet_v2(), data.random_images((224, 224, 3), seed=1))
        return keras_source.from_model(name, model, {"input": x}, architecture=arch, specs=_named(model, "input"),
                                       output_names=["logits"], layout="NHWC", weights="random-init",
                                       note=RANDOM_NOTE, inputs_note=RANDOM_INPUTS)  # fmt: skip
    kind = arch.split("-")[1]
    layout = "NHWC" if kind == "cnn" else None
    shape = (lambda a: digits.images(a, "NHWC")) if kind == "cnn" else (lambda a: a)
    model = km.digits_cnn() if kind == "cnn" else km.digits_mlp()
    km.train(model, shape(digits.x_train), digits.y_train, EPOCHS[kind], data.SEED)
    acc = km.accuracy(model, shape(digits.x_test), digits.y_test)
    ref = shape(digits.x_test[: data.REFERENCE_BATCH])
    return keras_source.from_model(name, model, {"input": ref}, architecture=arch, specs=_named(model, "input"),
                                   layout=layout, output_names=["logits"], weights="trained", dataset=DIGITS,
                                   accuracy=acc, labels=digits.y_test[: data.REFERENCE_BATCH], inputs_note=HELD_OUT)  # fmt: skip


def _token_specs():
    """input_ids + attention_mask, int64 [batch, sequence]: the same signature in both frameworks."""
    from exporters.examples.tokens import VOCAB_SIZE
    from exporters.inputs import parse_input, with_roles

    specs = [parse_input("input_ids:int64:batch,sequence"), parse_input("attention_mask:int64:batch,sequence")]
    return with_roles(specs, VOCAB_SIZE)


def _transformer(name: str) -> SourceModel:
    """The token transformer pair: the same architecture in PyTorch and Keras, trained on digits read
    as token sequences (exporters/examples/tokens.py)."""
    from exporters.examples import tokens

    t = tokens.load_digit_tokens()
    n = data.REFERENCE_BATCH
    ref = {"input_ids": t.ids_test[:n], "attention_mask": t.mask_test[:n]}
    common = dict(architecture="digits-transformer", output_names=["logits"], weights="trained", dataset=TOKENS,
                  labels=t.y_test[:n], inputs_note=HELD_OUT_TOKENS)  # fmt: skip
    if name.endswith("-torch"):
        import torch

        from exporters.examples import torch_models as tm
        from exporters.sources import pytorch

        torch.manual_seed(data.SEED)
        model = tm.token_transformer()
        tm.train_tokens(model, t.ids_train, t.mask_train, t.y_train, EPOCHS["transformer"], data.SEED)
        acc = tm.accuracy_tokens(model, t.ids_test, t.mask_test, t.y_test)
        return pytorch.from_module(name, model, ref, input_specs=_token_specs(), accuracy=acc, **common)
    import keras

    from exporters.examples import keras_models as km
    from exporters.sources import keras as keras_source

    keras.utils.set_random_seed(data.SEED)
    model = km.token_transformer()
    km.train_tokens(model, t.ids_train, t.mask_train, t.y_train, EPOCHS["transformer"], data.SEED)
    acc = km.accuracy_tokens(model, t.ids_test, t.mask_test, t.y_test)
    return keras_source.from_model(name, model, ref, specs=_token_specs(), accuracy=acc, **common)


def _named(model, name: str):
    """The Keras model's input spec under the name every artifact of the example uses."""
    from exporters.sources.keras import input_specs

    return [s.model_copy(update={"name": name}) for s in input_specs(model)]


def check_names(names: tuple[str, ...]) -> None:
    unknown = set(names) - set(EXAMPLES)
    if unknown:
        raise ValueError(f"unknown example(s) {sorted(unknown)}; choose from {', '.join(EXAMPLES)}")


def sources(names: tuple[str, ...] = EXAMPLES) -> Iterator[SourceModel]:
    check_names(names)
    digits = data.load_digits()
    for name in names:
        start = time.perf_counter()
        log.info("[%s] building the source model", name)
        if "-transformer-" in name:
            src = _transformer(name)
        else:
            src = _torch(name, digits) if name.endswith("-torch") else _keras(name, digits)
        src.info.single_sample_ms = single_sample_ms(_timed_call(src), {k: v[:1] for k, v in src.reference_inputs.items()})
        acc = f", test accuracy {src.info.test_accuracy:.4f}" if src.info.test_accuracy is not None else ""
        log.info("[%s] ready in %.1f s%s, %s, single-sample %.2f ms in %s", name, time.perf_counter() - start,
                 acc, src.info.weights, src.info.single_sample_ms, src.framework)  # fmt: skip
        yield src
