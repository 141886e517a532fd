"""A tiny two-input, two-output sequence model in every source form the servers take, and schema-2
manifests for test stores. One numpy definition is the reference; the torch and TensorFlow
versions compute the same thing:

    features FP32 [batch, seq, 4], ids INT64 [batch, seq] (token ids in [0, VOCAB))
    h      = features + table[ids]
    pooled = mean(h, axis=1)        FP32 [batch, 4]
    scores = sum(h * w, axis=-1)    FP32 [batch, seq]
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from contract.manifest import (
    Artifact, Manifest, Parity, Signature, Source, TensorSpec, save_reference,
)  # fmt: skip

VOCAB, WIDTH, SEQ, BATCH = 10, 4, 16, 8
SEQ_SIGNATURE = Signature(
    inputs=[
        TensorSpec(name="features", datatype="FP32", shape=[-1, -1, WIDTH],
                   dims=["batch", "sequence", ""]),
        TensorSpec(name="ids", datatype="INT64", shape=[-1, -1], dims=["batch", "sequence"],
                   role="token_ids", value_range=(0, VOCAB)),
    ],
    outputs=[
        TensorSpec(name="pooled", datatype="FP32", shape=[-1, WIDTH]),
        TensorSpec(name="scores", datatype="FP32", shape=[-1, -1], dims=["batch", "sequence"]),
    ],
)  # fmt: skip


def weights() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return (rng.standard_normal((VOCAB, WIDTH)).astype(np.float32),
            rng.standard_normal(WIDTH).astype(np.float32))  # fmt: skip


def seq_inputs(batch: int = BATCH, seq: int = SEQ, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"features": rng.standard_normal((batch, seq, WIDTH)).astype(np.float32),
            "ids": rng.integers(0, VOCAB, (batch, seq)).astype(np.int64)}  # fmt: skip


def seq_outputs(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    table, w = weights()
    h = inputs["features"] + table[inputs["ids"]]
    return {"pooled": h.mean(axis=1), "scores": (h * w).sum(axis=-1)}


def torch_module():
    import torch

    table, w = weights()

    class Seq(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Parameter(torch.from_numpy(table))
            self.w = torch.nn.Parameter(torch.from_numpy(w))

        def forward(self, features, ids):
            h = features + self.table[ids]
            return h.mean(dim=1), (h * self.w).sum(dim=-1)

    return Seq().eval()


def export_onnx(path: Path) -> None:
    import torch

    x = seq_inputs(2, 5)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        torch_module(), (torch.from_numpy(x["features"]), torch.from_numpy(x["ids"])), str(path),
        input_names=["features", "ids"], output_names=["pooled", "scores"],
        dynamic_axes={"features": {0: "batch", 1: "seq"}, "ids": {0: "batch", 1: "seq"},
                      "pooled": {0: "batch"}, "scores": {0: "batch", 1: "seq"}},
        dynamo=False,
    )  # fmt: skip


def export_torchscript(path: Path) -> None:
    import torch

    x = seq_inputs(2, 5)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        traced = torch.jit.trace(torch_module(), (torch.from_numpy(x["features"]), torch.from_numpy(x["ids"])))
    traced.save(str(path))


def tf_module(ids_dtype: str = "int64"):
    """A tf.Module whose `serve` is the model; ids_dtype="int32" mimics a converter that narrowed
    the token ids (the TFLite server must cast)."""
    import tensorflow as tf

    table, w = weights()

    class Seq(tf.Module):
        def __init__(self):
            super().__init__()
            self.table, self.w = tf.Variable(table), tf.Variable(w)

        @tf.function(input_signature=[
            tf.TensorSpec([None, None, WIDTH], tf.float32, name="features"),
            tf.TensorSpec([None, None], getattr(tf, ids_dtype), name="ids"),
        ])  # fmt: skip
        def serve(self, features, ids):
            h = features + tf.gather(self.table, ids)
            return {"pooled": tf.reduce_mean(h, axis=1), "scores": tf.reduce_sum(h * self.w, axis=-1)}

    return Seq()


def export_savedmodel(path: Path, ids_dtype: str = "int64") -> None:
    import tensorflow as tf

    module = tf_module(ids_dtype)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


def export_tflite(path: Path, work: Path) -> None:
    """SavedModel (int32 ids) -> TFLite with its serving_default signature."""
    import tensorflow as tf

    export_savedmodel(work / "seq-savedmodel", ids_dtype="int32")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(work / "seq-savedmodel")).convert())


# --- test stores --------------------------------------------------------------------------------


def artifact(model_dir: Path, fmt: str, rel: str, runtime: str, **extra) -> Artifact:
    p = model_dir / rel
    data = p.read_bytes() if p.is_file() else b""
    return Artifact(
        format=fmt, version=1, path=rel, bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
        route="test", converters={}, export_seconds=0.0,
        parity=Parity(ok=True, runtime=runtime, batch_sizes=[1, 8], tolerance=1e-4), **extra,
    )  # fmt: skip


def save_model(store: Path, name: str, signature: Signature, artifacts: dict[str, Artifact],
               inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:  # fmt: skip
    d = store / name
    d.mkdir(parents=True, exist_ok=True)
    ref = save_reference(d, inputs, outputs, None)
    Manifest(
        name=name, reference=ref, signature=signature, artifacts=artifacts,
        source=Source(framework="pytorch", framework_version="test", architecture="tiny test model",
                      weights="random-init", note="built by tests/services"),
    ).save(d)  # fmt: skip
