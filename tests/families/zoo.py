"""Models of the families users bring, built from their own libraries with random weights and
small configs (nothing is downloaded): keras.applications, Hugging Face transformers, keras-hub,
recurrent nets and multi-input / multi-output models from both frameworks.

PyTorch models are `tests.families.zoo:<factory>` sources (as a user would give them); Keras
models are saved to .keras files by `save_keras`. FAMILIES says how each is exported."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SEED = 0
VOCAB = 100


@dataclass(frozen=True)
class Family:
    name: str  # model name in the store
    framework: str  # "pytorch" | "keras"
    builder: str  # function in this module
    args: tuple[str, ...] = ()  # extra `python -m exporters export` options
    tags: tuple[str, ...] = field(default=())


# --- PyTorch --------------------------------------------------------------------------------------


def _seed():
    import torch

    torch.manual_seed(SEED)


def hf_bert():
    """Hugging Face BertForSequenceClassification (ids + mask, int64; forward returns a ModelOutput)."""
    from transformers import BertConfig, BertForSequenceClassification

    _seed()
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=3)  # fmt: skip
    return BertForSequenceClassification(config).eval()


def hf_vit():
    """Hugging Face ViTForImageClassification (pixel_values NCHW; forward returns a ModelOutput)."""
    from transformers import ViTConfig, ViTForImageClassification

    _seed()
    config = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64, num_labels=5)  # fmt: skip
    return ViTForImageClassification(config).eval()


def _recurrent(cell: str):
    import torch
    from torch import nn

    class TextClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(VOCAB, 16)
            self.rnn = getattr(nn, cell)(16, 16, batch_first=True)
            self.head = nn.Linear(16, 3)

        def forward(self, input_ids):
            out, _ = self.rnn(self.embed(input_ids))
            return self.head(out[:, -1])

    _seed()
    del torch
    return TextClassifier().eval()


def torch_lstm():
    return _recurrent("LSTM")


def torch_gru():
    return _recurrent("GRU")


def _two_in_two_out(as_dict: bool):
    import torch
    from torch import nn

    class TwoInTwoOut(nn.Module):
        """An image and token ids in; class logits and a score out (tuple or dict)."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.embed = nn.Embedding(VOCAB, 8)
            self.classes = nn.Linear(4 * 64 + 8, 4)
            self.score = nn.Linear(4 * 64 + 8, 1)

        def forward(self, image, ids):
            h = torch.cat([torch.relu(self.conv(image)).flatten(1), self.embed(ids).mean(1)], dim=1)
            c, s = self.classes(h), torch.sigmoid(self.score(h))
            return {"class_logits": c, "score": s} if as_dict else (c, s)

    _seed()
    return TwoInTwoOut().eval()


def torch_multi_io():
    return _two_in_two_out(as_dict=False)


def torch_multi_io_dict():
    return _two_in_two_out(as_dict=True)


# --- Keras ----------------------------------------------------------------------------------------


def _kseed():
    import keras

    keras.utils.set_random_seed(SEED)


def _calibrated(model):
    """Random-init deep nets let activations vanish (EfficientNet's logits are ~1e-10): set the
    BatchNorm statistics from one batch of images, so outputs vary and parity means something."""
    import numpy as np

    from exporters.examples.keras_models import calibrate_batchnorm

    images = np.random.default_rng(1).random((32, *model.inputs[0].shape[1:]), dtype=np.float32)
    return calibrate_batchnorm(model, images)  # the distribution the exporter draws its inputs from


def keras_efficientnet():
    import keras

    _kseed()
    return _calibrated(keras.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3), classes=5,
                                                         classifier_activation=None))  # fmt: skip


def keras_mobilenetv3():
    import keras

    _kseed()
    return _calibrated(keras.applications.MobileNetV3Small(weights=None, input_shape=(32, 32, 3), classes=5,
                                                           classifier_activation=None))  # fmt: skip


def keras_resnet():
    import keras

    _kseed()
    return _calibrated(keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=5,
                                                   classifier_activation=None))  # fmt: skip


def keras_hub_bert():
    """keras-hub BertBackbone (token_ids, segment_ids, padding_mask) with a classification head."""
    import keras_hub

    _kseed()
    backbone = keras_hub.models.BertBackbone(vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=32,
                                             intermediate_dim=64, max_sequence_length=64)  # fmt: skip
    return keras_hub.models.BertTextClassifier(backbone, num_classes=3, preprocessor=None, activation=None)


def _keras_recurrent(layer: str):
    import keras

    _kseed()
    ids = keras.Input((None,), dtype="int64", name="input_ids")
    h = keras.layers.Embedding(VOCAB, 16)(ids)
    h = getattr(keras.layers, layer)(16)(h)
    return keras.Model(ids, keras.layers.Dense(3, name="logits")(h), name=f"text_{layer.lower()}")


def keras_lstm():
    return _keras_recurrent("LSTM")


def keras_gru():
    return _keras_recurrent("GRU")


def keras_multi_io():
    import keras

    _kseed()
    image = keras.Input((8, 8, 1), name="image")
    features = keras.Input((5,), name="features")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(image)
    h = keras.layers.Concatenate()([keras.layers.Flatten()(h), features])
    return keras.Model(
        {"image": image, "features": features},
        {"class_logits": keras.layers.Dense(4, name="class_logits")(h),
         "score": keras.layers.Dense(1, activation="sigmoid", name="score")(h)},
        name="two_in_two_out",
    )  # fmt: skip


SEQ = ("--input", "input_ids:int64:batch,sequence")
# Deep image nets accumulate float32 rounding differently per runtime (fused kernels): measured
# 1.1-1.5e-4 x |logits| on ResNet50 and MobileNetV3 (TFLite, tf2onnx); the user's --tolerance.
DEEP = ("--tolerance", "1e-3")
FAMILIES: tuple[Family, ...] = (
    Family("keras-efficientnetb0", "keras", "keras_efficientnet", DEEP, ("image",)),
    Family("keras-mobilenetv3small", "keras", "keras_mobilenetv3", DEEP, ("image",)),
    Family("keras-resnet50", "keras", "keras_resnet", DEEP, ("image",)),
    Family("keras-hub-bert", "keras", "keras_hub_bert", tags=("transformer",)),
    Family("keras-lstm", "keras", "keras_lstm", tags=("recurrent",)),
    Family("keras-gru", "keras", "keras_gru", tags=("recurrent",)),
    Family("keras-two-in-two-out", "keras", "keras_multi_io", tags=("multi-io",)),
    Family("hf-bert", "pytorch", "hf_bert", ("--input", "input_ids:int64:batch,sequence",
                                              "--input", "attention_mask:int64:batch,sequence"), ("transformer",)),
    Family("hf-vit", "pytorch", "hf_vit", ("--input", "pixel_values:float32:batch,3,32,32", "--layout", "NCHW"),
           ("image", "transformer")),
    Family("torch-lstm", "pytorch", "torch_lstm", SEQ, ("recurrent",)),
    Family("torch-gru", "pytorch", "torch_gru", SEQ, ("recurrent",)),
    Family("torch-two-in-two-out", "pytorch", "torch_multi_io",
           ("--input", "image:float32:batch,1,8,8", "--input", "ids:int64:batch,sequence"), ("multi-io",)),
    Family("torch-two-in-two-out-dict", "pytorch", "torch_multi_io_dict",
           ("--input", "image:float32:batch,1,8,8", "--input", "ids:int64:batch,sequence"), ("multi-io",)),
)  # fmt: skip


def source_of(family: Family, workdir: Path) -> str:
    """What the user would pass to `python -m exporters export`."""
    if family.framework == "pytorch":
        return f"tests.families.zoo:{family.builder}"
    path = Path(workdir) / f"{family.name}.keras"
    if not path.exists():
        globals()[family.builder]().save(path)
    return str(path)
