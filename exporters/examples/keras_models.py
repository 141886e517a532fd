"""Keras versions of the example architectures, layer for layer the same as torch_models.py."""

from __future__ import annotations

import keras
import numpy as np


def digits_mlp() -> keras.Model:
    return keras.Sequential(
        [keras.Input((64,), name="input"), keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10)],
        name="digits_mlp",
    )


def digits_cnn() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((8, 8, 1), name="input"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="digits_cnn",
    )


def mobilenet_v2() -> keras.Model:
    return keras.applications.MobileNetV2(
        input_shape=(224, 224, 3), weights=None, classes=1000, classifier_activation=None
    )


def calibrate_batchnorm(model: keras.Model, x: np.ndarray) -> keras.Model:
    """Set every BatchNormalization's moving statistics from one batch (see torch_models)."""
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in bns]
    for layer in bns:
        layer.momentum = 0.0  # moving = batch statistics after one training-mode call
    model(x, training=True)
    for layer, momentum in zip(bns, saved):
        layer.momentum = momentum
    return model


def train(model: keras.Model, x: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=32, epochs=epochs, shuffle=True, verbose=0)
    return model


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float((np.asarray(model(x, training=False)).argmax(1) == y).mean())
