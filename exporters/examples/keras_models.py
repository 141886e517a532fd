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


# The token transformer: the same layers and weights as torch_models.TokenTransformer (Dense kernels are
# the transposed nn.Linear weights), written with keras.ops so the graph stays plain matmul/softmax for
# SavedModel, TFLite and tf2onnx. Registered so that a saved .keras file reloads.
_PACKAGE = "servebench_examples"


def _linear(units: int, fan_in: int, **kwargs) -> keras.layers.Dense:
    """Dense initialised like torch's nn.Linear (kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)), and
    the same for the bias), so both twins start from the same distribution and train alike."""
    bound = fan_in**-0.5
    return keras.layers.Dense(
        units,
        kernel_initializer=keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform"),
        bias_initializer=keras.initializers.RandomUniform(-bound, bound),
        **kwargs,
    )


@keras.saving.register_keras_serializable(_PACKAGE)
class TokenAndPositionEmbedding(keras.layers.Layer):
    """Token embedding plus a learned position table, sliced to the runtime sequence length."""

    def __init__(self, vocab: int, max_len: int, d: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab, self.max_len, self.d = vocab, max_len, d
        init = keras.initializers.RandomNormal(stddev=1.0)  # torch's nn.Embedding default
        self.tokens = self.add_weight(shape=(vocab, d), initializer=init, name="tokens")
        self.positions = self.add_weight(shape=(max_len, d), initializer=init, name="positions")

    def call(self, input_ids):
        seq = keras.ops.shape(input_ids)[1]  # a tensor when the length is dynamic
        return keras.ops.take(self.tokens, input_ids, axis=0) + keras.ops.slice(self.positions, (0, 0), (seq, self.d))

    def get_config(self):
        return {**super().get_config(), "vocab": self.vocab, "max_len": self.max_len, "d": self.d}


@keras.saving.register_keras_serializable(_PACKAGE)
class PaddingBias(keras.layers.Layer):
    """attention_mask [b, s] (1 = token) -> additive key bias [b, 1, 1, s]: 0 or -1e9. Finite, not
    -inf: -inf turns fully masked rows into NaN and some converters reject it. expand_dims, not
    [:, None, None, :]: that becomes a StridedSlice with new_axis_mask, which TFLite lacks."""

    def call(self, attention_mask):
        m = keras.ops.cast(attention_mask, self.compute_dtype)
        return keras.ops.expand_dims((1.0 - m) * -1e9, (1, 2))


@keras.saving.register_keras_serializable(_PACKAGE)
class SelfAttention(keras.layers.Layer):
    def __init__(self, d: int, heads: int, **kwargs):
        super().__init__(**kwargs)
        self.d, self.heads, self.head_dim = d, heads, d // heads
        self.q, self.k, self.v, self.out = (_linear(d, d, name=n) for n in ("q", "k", "v", "out"))

    def build(self, input_shape):
        for dense in (self.q, self.k, self.v, self.out):
            dense.build((None, None, self.d))

    def call(self, inputs):
        x, bias = inputs
        ops = keras.ops
        b, s = ops.shape(x)[0], ops.shape(x)[1]

        def split(t):  # [b, s, d] -> [b, heads, s, head_dim]
            return ops.transpose(ops.reshape(t, (b, s, self.heads, self.head_dim)), (0, 2, 1, 3))

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * self.head_dim**-0.5 + bias
        h = ops.matmul(ops.softmax(scores, axis=-1), v)
        return self.out(ops.reshape(ops.transpose(h, (0, 2, 1, 3)), (b, s, self.d)))

    def get_config(self):
        return {**super().get_config(), "d": self.d, "heads": self.heads}


@keras.saving.register_keras_serializable(_PACKAGE)
class EncoderLayer(keras.layers.Layer):
    """Post-LN, with training-only dropout on each branch, as in torch_models.EncoderLayer."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.d, self.heads, self.ffn, self.dropout = d, heads, ffn, dropout
        self.drop = keras.layers.Dropout(dropout)
        self.attn = SelfAttention(d, heads, name="attn")
        self.norm1 = keras.layers.LayerNormalization(epsilon=1e-5, name="norm1")  # torch's default eps
        self.ffn1 = _linear(ffn, d, activation="relu", name="ffn1")  # ReLU: GELU varies by converter
        self.ffn2 = _linear(d, ffn, name="ffn2")
        self.norm2 = keras.layers.LayerNormalization(epsilon=1e-5, name="norm2")

    def build(self, input_shape):
        shape = (None, None, self.d)
        self.attn.build(shape)
        self.norm1.build(shape)
        self.ffn1.build(shape)
        self.ffn2.build((None, None, self.ffn))
        self.norm2.build(shape)

    def call(self, inputs, training=None):
        x, bias = inputs
        x = self.norm1(x + self.drop(self.attn([x, bias]), training=training))
        return self.norm2(x + self.drop(self.ffn2(self.ffn1(x)), training=training))

    def get_config(self):
        return {**super().get_config(), "d": self.d, "heads": self.heads, "ffn": self.ffn, "dropout": self.dropout}


@keras.saving.register_keras_serializable(_PACKAGE)
class MaskedMeanPooling(keras.layers.Layer):
    """Mean over real tokens only: sum(h * mask) / sum(mask)."""

    def call(self, inputs):
        x, attention_mask = inputs
        m = keras.ops.expand_dims(keras.ops.cast(attention_mask, x.dtype), -1)  # see PaddingBias
        return keras.ops.sum(x * m, axis=1) / keras.ops.maximum(keras.ops.sum(m, axis=1), 1.0)


def token_transformer(
    classes: int = 10, d: int = 32, heads: int = 2, ffn: int = 64, layers: int = 2, dropout: float = 0.1
) -> keras.Model:
    from exporters.examples.tokens import MAX_LEN, VOCAB_SIZE

    input_ids = keras.Input(shape=(None,), dtype="int64", name="input_ids")
    attention_mask = keras.Input(shape=(None,), dtype="int64", name="attention_mask")
    x = TokenAndPositionEmbedding(VOCAB_SIZE, MAX_LEN, d, name="embeddings")(input_ids)
    x = keras.layers.Dropout(dropout, name="embeddings_dropout")(x)
    bias = PaddingBias(name="padding_bias")(attention_mask)
    for i in range(layers):
        x = EncoderLayer(d, heads, ffn, dropout, name=f"layer{i}")([x, bias])
    logits = _linear(classes, d, name="logits")(MaskedMeanPooling(name="pool")([x, attention_mask]))
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    return keras.Model(inputs, logits, name="token_transformer")


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


def train_tokens(model: keras.Model, ids: np.ndarray, mask: np.ndarray, y: np.ndarray, epochs: int,
                 seed: int = 0) -> keras.Model:  # fmt: skip
    """As train(), for (input_ids, attention_mask) models, with torch_models.train_tokens's schedule
    (Adam 3e-3, per-step cosine decay to 0). Batches keep the arrays' padded length: per-batch lengths
    would retrace fit's graph for each new shape, and the mask makes padding irrelevant anyway."""
    keras.utils.set_random_seed(seed)
    steps = epochs * -(-len(y) // 32)
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(3e-3, steps)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit({"input_ids": ids, "attention_mask": mask}, y, batch_size=32, epochs=epochs, shuffle=True, verbose=0)
    return model


def accuracy_tokens(model: keras.Model, ids: np.ndarray, mask: np.ndarray, y: np.ndarray) -> float:
    logits = model({"input_ids": ids, "attention_mask": mask}, training=False)
    return float((np.asarray(logits).argmax(1) == y).mean())
